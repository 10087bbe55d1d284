"""
Members whose catalog is gone while their session lives (`sentinel.membership`).

A member's catalog and agent node are ephemeral nodes of its session, and
nothing of the agent's own deletes the catalog alone: a leave deletes its
agent node first, then its catalog (ZooKeeper applies one session's calls
in order), and a session's end takes both at once. So a catalog missing
from a listing while the session that held it still holds the member's
agent node was deleted behind its back (another client, by hand or in a
loop), and its member is alive and checking what it observes. Taken for a
leave, each deletion moved the member's instances away one settle time
later and back once it had written its catalog again: a client deleting
one agent's catalog every 100 ms (3--4 deletions a second landed) took
two agents over 300 instances from 0.2 ZooKeeper writes a second each
to 58 and 68, and from 1.2 requests a second to 450--530, some 60 log
lines a second each, moved nodes stale and instances unchecked
meanwhile (``/healthz`` 503). Kept, the others write nothing more (0.1
a second) and the member rewrites its catalog (about 4 writes a second).

Such a member is kept in the view with the catalog it last had, for as
long as that session holds its agent node, asked at each listing; while
one is kept the catalogs are listed again every `RECHECK` seconds, since
its session's end would fire no catalog watch (its catalog is gone
already). A leave or a session's end then moves it as before (at once:
its agent node is gone). An agent node held by another session (a
squatter's) keeps nothing. The member itself writes its catalog again
and says so in its own ``/healthz`` (the nodes deleted behind its back);
the others log it once per spell.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from twisted.logger import Logger

log = Logger()

# Seconds between listings while a member is kept: its session's end
# moves its instances at most this long after it is seen.
RECHECK = 1.0


class Uncatalogued:
    """The session that held each member's catalog, and the members kept."""

    def __init__(self) -> None:
        self._sessions: dict[str, int] = {}
        # The members kept after the last listing.
        self.kept: set[str] = set()

    def held(self, agent: str, session: int) -> None:
        """`agent`'s catalog was read held by `session` (its agent node's)."""
        self._sessions[agent] = session

    def candidates(
        self,
        listed_before: Collection[str],
        listed: Collection[str],
        left_out: Collection[str],
    ) -> list[str]:
        """
        The members of the last listing not `listed` now, with no catalog
        listed or with one gone before it was read, whose catalog's
        session is known: those to ask about. Those `left_out` for a
        reason (a squatter's catalog, one that cannot be read) are not.
        """
        return [
            agent
            for agent in listed_before
            if agent not in listed and agent not in left_out and agent in self._sessions
        ]

    def keep(
        self, agent_sessions: Mapping[str, int | None], listed: Collection[str]
    ) -> set[str]:
        """
        Of the members asked about (`agent_sessions`: the session holding
        each one's agent node), those to keep: held by their catalog's
        session. What is known of members neither `listed` nor kept goes.
        """
        kept = {
            agent
            for agent, session in agent_sessions.items()
            if session is not None and session == self._sessions.get(agent)
        }
        for agent in kept - self.kept:
            log.warn(
                "member {agent}'s catalog was deleted, while its session still "
                "holds its agent node: kept in the view as it was, until its "
                "catalog is back or its agent node goes",
                agent=agent,
            )
        self.kept = kept
        self._sessions = {
            agent: session
            for agent, session in self._sessions.items()
            if agent in kept or agent in listed
        }
        return kept

"""
Whether another holder of a node this agent must own is a predecessor on
its way out or a conflict: the rules, apart from the ZooKeeper calls that
feed them (the publisher's).

A node that should be ours can be held by another session for reasons
that look alike at first sight:

- an earlier process of this agent, crashed or stopping: its session ends
  within its own session timeout (which need not be ours) or its clean
  stop (under 5 s), and meanwhile it writes nothing;
- a live twin: another process with the same ``agent_id`` (or an agent
  watching the same name under the same root), which keeps writing: its
  agent node every heartbeat, its instance nodes on change and refresh;
- a squatter: a persistent node, which nothing will ever remove.

So another holder is a conflict:

1. at once when the node is persistent (``ephemeralOwner`` 0);
2. when its session still holds the node `session_timeout` (the one
   ZooKeeper granted us, not the one asked) + `CONFLICT_MARGIN` after we
   first saw it there and has written the node since (its ``mzxid``
   moved, or a watch said it changed): a live writer;
3. when its session still holds the node `SILENT_LIMIT` (or four session
   timeouts, if longer) after we first saw it there: three times the
   longest session ZooKeeper grants by default (40 s), so the published
   data has been wrong for too long, whoever holds it.

A crashed predecessor writes nothing, so rule 2 never calls a
crash-then-restart a conflict; rule 2 alone proves a live holder, so only
it makes the holder of this agent's own node a twin (`LIVE`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import attr

# Beyond our session timeout: ZooKeeper expires sessions on its ticks, a
# little late, and a predecessor's clean stop deletes its nodes within 5 s.
CONFLICT_MARGIN = 5.0
SILENT_LIMIT = 120.0
SILENT_LIMIT_SESSIONS = 4

PERSISTENT = "persistent"
LIVE = "live"
SILENT = "silent"


def ours(stat: Any, session: int | None) -> bool:
    """
    Whether `stat` (a node's ZnodeStat, or None when there is no node) shows
    an ephemeral node of `session`, the agent's session now: the one test
    of ownership, for instance, agent and discovery nodes alike. A process
    that reattached to its predecessor's session owns its nodes by it.
    """
    return stat is not None and session is not None and stat.ephemeralOwner == session


@attr.define
class Holding:
    """Another session's hold on a node we must own, as last seen."""

    session: int
    # The node's creation time, epoch seconds (ZooKeeper's clock).
    created: float
    # When we first saw this session hold it (our clock), and its mzxid then.
    first_seen: float
    mzxid: int
    written: bool = False
    # PERSISTENT, LIVE or SILENT once declared a conflict.
    conflict: str | None = None
    # A read of what the node says is in flight or answered
    # (`Holders._read_said`); cleared when the read failed, to ask again.
    said_asked: bool = False


def held_by(holding: Holding | None, stat: Any, now: float) -> Holding:
    """
    The hold `stat` (a ZnodeStat of the node) shows: `holding` carried on
    when the same session still holds the node, a new one otherwise.
    """
    session = int(stat.ephemeralOwner)
    if holding is None or holding.session != session:
        return Holding(session, stat.ctime / 1000.0, now, stat.mzxid)
    if stat.mzxid != holding.mzxid:
        holding.mzxid = stat.mzxid
        holding.written = True
    return holding


@attr.frozen
class OwnershipRules:
    """The three rules of the module docstring, for one session timeout."""

    session_timeout: float

    @property
    def live_after(self) -> float:
        """Seconds held, and written meanwhile, before a holder is live."""
        return self.session_timeout + CONFLICT_MARGIN

    @property
    def silent_after(self) -> float:
        """Seconds held before any holder is a conflict."""
        return max(SILENT_LIMIT, SILENT_LIMIT_SESSIONS * self.session_timeout)

    def verdict(self, holding: Holding, now: float) -> str | None:
        """PERSISTENT, LIVE or SILENT if `holding` is a conflict now, else None."""
        if holding.session == 0:
            return PERSISTENT
        held = now - holding.first_seen
        if holding.written and held >= self.live_after:
            return LIVE
        if held >= self.silent_after:
            return SILENT
        return None

    def next_decision(self, holding: Holding, now: float) -> float | None:
        """
        Seconds until the verdict may change with no news (the holder
        writing is news), or None if it cannot.
        """
        if holding.conflict in (PERSISTENT, LIVE):
            return None
        for threshold in (self.live_after, self.silent_after):
            remaining = holding.first_seen + threshold - now
            if remaining > 0:
                return remaining
        return None

    def describe(self, holding: Holding) -> str:
        """Who holds the node and why that matters, for logs and /healthz."""
        since = datetime.fromtimestamp(holding.created, UTC)
        created = since.strftime("%Y-%m-%dT%H:%M:%SZ")
        if holding.session == 0:
            return f"held by a persistent node since {created}"
        session = f"session {holding.session:#x}"
        if holding.conflict == LIVE:
            return f"held by live {session} (writing to it) since {created}"
        if holding.conflict == SILENT:
            return (
                f"held by {session} since {created}, "
                f"not expired after {self.silent_after:g} s"
            )
        return f"held by {session} since {created}, waiting for it to end"

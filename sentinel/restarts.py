"""
Which session holds a member's agent node and catalogs, asked together,
and the new processes found that way in members' names (DESIGN.md
section 8, "Restarts" and "Groups").

Each agent process writes its catalog under a token of its own
(`sentinel.membership`). A catalog of a token new to the listing in a
member's name, held by the session of its agent node, is a new process
holding that session (it reattached with a state_dir), from the zxid
that created the catalog: `on_restart` says so, and the opinions its
predecessors wrote there stop counting once it has had time to write
its own (`Opinions.restarted`). A member first seen says nothing: which
of its opinions its current process wrote is not known.

Asking costs an ``exists`` of each such member's agent node and of each
new catalog, `HOLDERS_IN_FLIGHT` at a time (`ask`). It is done beside
the listings, not in them: nothing in the view depends on it, and anyone
may create catalogs in a live member's name by the thousand (each a
token new to every member): 100,000 held every member's listing, and so
its view, about a minute, the group split meanwhile. One round of
questions at a time; the tokens new meanwhile wait for the next. A round
that fails is logged and not asked again: the next new process is.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, cast

from kazoo.protocol.states import ZnodeStat
from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger
from twisted.python.failure import Failure

from sentinel.catalog import catalog_node_name
from sentinel.zk import ZooKeeper

log = Logger()

# Existence reads (``exists``) in flight at once: which session holds a
# member's agent node or catalog. One at a time, each listing paid a
# round trip per member restarted and per catalog new in its name: a
# squatter's 10,000 one-part catalogs in a live member's name held a
# joining member's first view 6.5-8.6 s. A bound, for anyone may create
# catalogs there by the thousand.
HOLDERS_IN_FLIGHT = 64

Stats = dict[str, ZnodeStat | None]
# Per member, its catalogs as listed: (digest, token) -> number of parts.
Complete = Mapping[str, Mapping[tuple[str, str], int]]


async def ask(
    zk: ZooKeeper, paths: Collection[str], stats: Stats, ahead: bool = False
) -> int:
    """
    Put the stat (or None) of each of `paths` not in `stats` yet into it:
    one ``exists`` each, `HOLDERS_IN_FLIGHT` at a time (`ahead`: with the
    writes, as a membership listing's); how many were asked. The first
    failure is raised once every read has ended.
    """
    pending = [path for path in dict.fromkeys(paths) if path not in stats]
    for start in range(0, len(pending), HOLDERS_IN_FLIGHT):
        chunk = pending[start : start + HOLDERS_IN_FLIGHT]
        answers = await DeferredList(
            [zk.exists(path, ahead=ahead) for path in chunk], consumeErrors=True
        )
        for path, (ok, answer) in zip(chunk, answers, strict=True):
            if not ok:
                cast(Failure, answer).raiseException()
            stats[path] = answer
    return len(pending)


def owner(stat: ZnodeStat | None) -> int | None:
    """The session holding a node, or None if none does (or no node)."""
    return None if stat is None or not stat.ephemeralOwner else stat.ephemeralOwner


def first_part(catalogs: str, agent: str, digest: str, token: str, count: int) -> str:
    """The path of a catalog's first part, which every member asks about."""
    return f"{catalogs}/{catalog_node_name(agent, digest, token, 0, count)}"


class MemberRestarts:
    """New processes in members' names (see the module docstring)."""

    def __init__(
        self,
        zk: ZooKeeper,
        root: str,
        agent_id: str,
        on_restart: Callable[[str, int], None] | None,
    ) -> None:
        self._zk = zk
        self._root = root
        self._agent_id = agent_id
        self._on_restart = on_restart
        self.running = True
        # Each member's tokens at the last listing; the catalogs of new
        # tokens waiting to be asked about, by member; the round under way.
        self._tokens: dict[str, frozenset[str]] = {}
        self._waiting: dict[str, dict[tuple[str, str], int]] = {}
        self._asking: Deferred[None] | None = None
        self.asked = 0

    def listed(
        self, complete: Complete, concerned: Callable[[str], bool] | None = None
    ) -> set[str]:
        """
        A listing found the members' `complete` catalogs: ask about the
        new tokens of the members `concerned` says may share instances
        with this agent (all, without it), in the background (the others' opinions count
        for none of its instances: in a rolling deploy of 2,000 members
        of the per-host shape, these two reads for each member replaced
        were half of each agent's requests). The members with none
        listed any more, which it returns, are forgotten.
        """
        tokens = {
            agent: frozenset(token for _, token in found)
            for agent, found in complete.items()
            if agent != self._agent_id
        }
        known, self._tokens = self._tokens, tokens
        gone = set(known) - set(tokens)
        for agent in gone:
            self._waiting.pop(agent, None)
        for agent, now in tokens.items():
            new = now - known.get(agent, now)
            asked = concerned is None or concerned(agent)
            if new and self._on_restart is not None and asked:
                waiting = self._waiting.setdefault(agent, {})
                for (digest, token), count in complete[agent].items():
                    if token in new:
                        waiting[digest, token] = count
        self._ask_next()
        return gone

    def _ask_next(self) -> None:
        if self._asking is not None or not self._waiting or not self.running:
            return
        waiting, self._waiting = self._waiting, {}
        self._asking = Deferred.fromCoroutine(self._ask(waiting))
        self._asking.addErrback(self._failed)
        self._asking.addBoth(self._asked)

    async def _ask(self, waiting: Mapping[str, Mapping[tuple[str, str], int]]) -> None:
        stats: Stats = {}
        agents = {agent: f"{self._root}/agents/{agent}" for agent in waiting}
        self.asked += await ask(self._zk, agents.values(), stats)
        sessions = {agent: owner(stats[path]) for agent, path in agents.items()}
        catalogs = f"{self._root}/catalogs"
        paths = [
            (agent, first_part(catalogs, agent, digest, token, count))
            for agent, found in waiting.items()
            if sessions[agent] is not None
            for (digest, token), count in found.items()
        ]
        self.asked += await ask(self._zk, [path for _, path in paths], stats)
        held = []
        for agent, path in paths:
            stat = stats[path]
            if stat is not None and stat.ephemeralOwner == sessions[agent]:
                held.append((stat.czxid, agent))
        # The newest last: each call says from which zxid on the member's
        # process is its newest.
        for created, agent in sorted(held):
            if self.running and self._on_restart is not None:
                self._on_restart(agent, created)

    def _failed(self, failure: Failure) -> None:
        name = failure.type.__name__ if failure.type else "error"
        log.warn(
            "group membership: which process holds members' new catalogs "
            "not known ({error}); their previous processes' opinions count",
            error=name,
        )

    def _asked(self, _: Any) -> None:
        self._asking = None
        self._ask_next()

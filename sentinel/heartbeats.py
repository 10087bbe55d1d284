"""
Whether the members this agent relies on still heartbeat (DESIGN.md
sections 2.5 and 8): a member's agent node ``{root}/agents/{agent_id}``
is rewritten every ``zookeeper.heartbeat`` seconds while its process
works, and the session that holds it can outlive that work (a process
whose reactor is stuck while kazoo's threads keep the session alive, or
any client of an ACL-less ZooKeeper that wrote an agent node and a
catalog in an unused name once). Such a member stays in the group: the
instances whose primary it is are checked and published by nobody, and
nothing else says so. Before, two agents and such a member (30
instances, ``replicas = 1``) left 11 instance nodes unwritten, both
``/healthz`` 200 for as long as it stayed.

At each of this agent's heartbeats, the agent node of each member that
is the primary of an instance this agent knows is asked about (its stat
alone: one ``exists`` each, `HOLDERS_IN_FLIGHT` at a time), and the time
(this agent's clock) its last write was first seen is kept. One not
rewritten for `STALE_HEARTBEATS` of its heartbeats, plus one of ours
(the sampling), is reported: logged when it starts and ends, and named
in /healthz (`sentinel.group`) until it is written again or its member
goes. A member's heartbeat is not in the contract's agent node: it is
taken from the node's own history, the time between its creation and
its last write over the writes since (``(mtime - ctime) / version``),
never less than this agent's own; a node written fewer than twice is
judged by this agent's. A member that writes its agent node on time is
not told apart from one that checks: this says nothing of it. The cost
is one ``exists`` per such member and heartbeat: none in the per-host
shape with one replica (no member is the primary of another's
instances), one per other member in a central group.

It only reports: the assignment is every member's to compute from the
same view, and a member judged here (by this agent's clock and sampling)
and not by the others would be given two primaries.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Collection, Mapping
from typing import Any

from kazoo.protocol.states import ZnodeStat
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from sentinel.restarts import Stats, ask
from sentinel.sample import NAMED, others
from sentinel.zk import CONNECTED, ZooKeeper

log = Logger()

# Heartbeats a member's agent node may miss before it is reported: a
# rewrite delayed by a slow ZooKeeper or a busy agent is not a stuck one.
STALE_HEARTBEATS = 3


class MemberHeartbeats:
    """
    The members whose agent node has not been rewritten for longer than
    their heartbeats allow (see the module docstring): `stale`.
    """

    def __init__(
        self,
        reactor: Any,
        zk: ZooKeeper,
        root: str,
        heartbeat: float,
        relied_on: Callable[[], Mapping[str, int]],
    ) -> None:
        """
        @param heartbeat: this agent's own heartbeat, the step of the checks.
        @param relied_on: the members to check, each with the number of
            instances this agent knows whose primary it is.
        """
        self._reactor = reactor
        self._zk = zk
        self._root = root
        self.heartbeat = heartbeat
        self._relied_on = relied_on
        self._loop: LoopingCall | None = None
        self._round: Deferred[None] | None = None
        # Per member: the last write of its agent node seen (its mzxid),
        # when it was first seen, and the heartbeat it is judged by.
        self._seen: dict[str, tuple[int, float, float]] = {}
        # Per member reported: how long unwritten, its heartbeat, instances.
        self.stale: dict[str, tuple[float, float, int]] = {}
        self.asked = 0

    def start(self) -> None:
        """Check at every heartbeat, the first one heartbeat from now."""
        if self._loop is not None:
            return  # Started already: one loop.
        self._loop = LoopingCall(self._check)
        self._loop.clock = self._reactor
        self._loop.start(self.heartbeat, now=False)

    def stop(self) -> None:
        """Check no more; a round under way is cancelled."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._round is not None:
            self._round.cancel()

    def _check(self) -> None:
        if self._round is not None or self._zk.state != CONNECTED:
            return  # One round at a time; a lost connection says nothing.
        try:
            members = self._relied_on()
        except Exception:
            # A bug of ours: said, and tried again at the next heartbeat
            # (raised here, it would stop the LoopingCall for good).
            log.failure("group: the members relied on not computed")
            return
        self._round = Deferred.fromCoroutine(self._ask(members))
        self._round.addErrback(self._failed)
        self._round.addBoth(self._done)

    async def _ask(self, members: Mapping[str, int]) -> None:
        paths = {agent: f"{self._root}/agents/{agent}" for agent in members}
        stats: Stats = {}
        self.asked += await ask(self._zk, paths.values(), stats)
        now = self._reactor.seconds()
        seen = {}
        for agent, path in paths.items():
            stat = stats[path]
            if stat is None:
                continue  # Gone: its catalog goes too, or is left out.
            before = self._seen.get(agent)
            if before is not None and before[0] == stat.mzxid:
                seen[agent] = before
            else:
                seen[agent] = (stat.mzxid, now, self._heartbeat_of(stat))
        self._seen = seen
        stale = {}
        for agent, (_, since, heartbeat) in seen.items():
            unwritten = now - since
            if unwritten > STALE_HEARTBEATS * heartbeat + self.heartbeat:
                stale[agent] = (unwritten, heartbeat, members[agent])
        self._report(stale)

    def _heartbeat_of(self, stat: ZnodeStat) -> float:
        """A member's heartbeat from its node's history; at least ours."""
        version: int = stat.version
        if version < 2:
            return self.heartbeat
        between = (stat.mtime - stat.ctime) / 1000.0 / version
        return max(self.heartbeat, float(between))

    def _report(self, stale: dict[str, tuple[float, float, int]]) -> None:
        for agent in sorted(stale.keys() - self.stale.keys()):
            unwritten, heartbeat, primaries = stale[agent]
            log.error(
                "group: member {agent}'s agent node has not been rewritten for "
                "{unwritten:.0f} s (its heartbeat about {heartbeat:.0f} s); it is "
                "the primary of {primaries} instance(s) this agent knows, which "
                "may be checked and published by nobody",
                agent=agent,
                unwritten=unwritten,
                heartbeat=heartbeat,
                primaries=primaries,
            )
        for agent in sorted(self.stale.keys() - stale.keys()):
            log.info(
                "group: member {agent}'s agent node is rewritten again, or it left",
                agent=agent,
            )
        self.stale = stale

    def reason(self) -> str | None:
        """
        Why /healthz fails on this account: the first member by id, then
        the others (`sample.others`).
        """
        if not self.stale:
            return None
        agent, *rest = heapq.nsmallest(NAMED + 1, self.stale)
        unwritten, heartbeat, primaries = self.stale[agent]
        return (
            f"group: member {agent}'s agent node {self._root}/agents/{agent} "
            f"has not been rewritten for {unwritten:.0f} s (its heartbeat about "
            f"{heartbeat:.0f} s)"
            + others(rest, len(self.stale) - 1)
            + f": it is the primary of {primaries} instance(s) this agent knows,"
            " which may be checked and published by nobody"
        )

    def forget(self, agents: Collection[str]) -> None:
        """Members gone: nothing is kept by their ids."""
        for agent in agents:
            self._seen.pop(agent, None)
            self.stale.pop(agent, None)

    def _failed(self, failure: Failure) -> None:
        # Asked again at the next heartbeat; what was seen stands.
        name = failure.type.__name__ if failure.type else "error"
        log.debug("group: members' agent nodes not read ({error})", error=name)

    def _done(self, _: object) -> None:
        self._round = None

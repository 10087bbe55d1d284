"""
What the publisher says of itself: ZooKeeper's part of ``/debug/stats``,
and why ``/healthz`` fails on its account.

Anything that makes the published data wrong fails /healthz, with the
reason: ZooKeeper not connected (the data may be stale, and the writes
queued say how much; why the last connection attempt failed, as kazoo
said), or connected to a server that has answered nothing for a third of
the session timeout while requests wait (`ZooKeeper.not_answering`: the
connection is dropped at two thirds), a session on another ensemble than
the one published to (until a session is on it again, or it is taken for
the ensemble: `sentinel.ensemble`), a conflict, a node still
held by another session (its published status is stale until it is taken
over), a node whose writes have kept failing for `FAILING_AFTER` while
connected (its ACL changed behind our back: its published status is stale
too), nodes whose writes succeed but so late that readers see data older
than ``refresh`` (`sentinel.lateness`), a discovery member this agent
should hold (its instance up and ready, its node ours) and has held
none of for `FAILING_AFTER` while connected (readers do not find the
endpoint), a node
handed to another member that has not taken it over for
`takeover.HANDOFF_LIMIT` (this agent keeps it true meanwhile, but the
group is not as its members say: that member has trouble), this agent
halted by a twin, its session taken over by a newer process, this
agent's clock off ZooKeeper's (`sentinel.clockskew`), writes refused
for an operator's mistake, a chroot missing or an ACL that is not the
agents' (`sentinel.refusals`: at once, naming it), verdicts of
instances it observes that their primary (another member) leaves stale
while this agent's own checks are fresh (`Opinions.late_verdicts`),
verdicts this agent took over with their nodes and still carries,
having none of its own, past `roles.CARRIED_LIMIT` (`carried_long`),
opinions of another address or discovery than this agent's config gives
the instance (`Opinions.elsewhere`, `Opinions.unlike`: each primary
publishes its own), or, after a connection, instance nodes written
before and not yet again (until the first answers, an earlier session
may hold them, publishing what is no longer true: ZooKeeper restored
from an old snapshot), or, after a start that could not reattach, the
instance nodes that went with the previous process's session and are
not made again yet (`sentinel.unremade`: readers find them missing). The
first
node in conflict (or failing, or late) is named with its reason, then the
next ten by path and how many more there are (`sentinel.sample`).
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from itertools import islice
from typing import Any

from sentinel.clockskew import ClockSkew
from sentinel.guard import Guard
from sentinel.handoff import SessionHandoff
from sentinel.holders import Holders
from sentinel.lateness import Lateness
from sentinel.members import Members
from sentinel.nodes import Node, Nodes
from sentinel.openacls import OpenAcls
from sentinel.opinions import Opinions
from sentinel.refusals import Refusals
from sentinel.roles import GroupRoles
from sentinel.sample import NAMED, others
from sentinel.takeover import Takeovers
from sentinel.unconfirmed import Unconfirmed
from sentinel.unremade import Unremade
from sentinel.writes import FAILING_AFTER, Lifecycle, WriteQueue
from sentinel.zk import CONNECTED, LOST, ZooKeeper


class ZooKeeperReport:
    """The publisher's stats and health, read from its parts when asked."""

    def __init__(
        self,
        reactor: Any,
        zk: ZooKeeper,
        nodes: Nodes,
        queue: WriteQueue,
        holders: Holders,
        roles: GroupRoles,
        takeovers: Takeovers,
        members: Members,
        handoff: SessionHandoff | None,
        life: Lifecycle,
        opinions: Opinions,
        acls: OpenAcls | None,
        clock: ClockSkew,
        lateness: Lateness,
        guard: Guard,
        refusals: Refusals,
        unremade: Unremade,
    ) -> None:
        self._reactor = reactor
        self._zk = zk
        self._nodes = nodes
        self._queue = queue
        self._holders = holders
        self._roles = roles
        self._takeovers = takeovers
        self._members = members
        self._handoff = handoff
        self._life = life
        self._opinions = opinions
        self._acls = acls
        self._clock = clock
        self._lateness = lateness
        self._guard = guard
        self._refusals = refusals
        # When the connection was last lost (or never made yet), kept until
        # it is back: SUSPENDED, then LOST when the client is replaced or
        # the session expires, is one outage, not a new one.
        self._disconnected_since = None if zk.state == CONNECTED else zk.state_since
        # At the last connection, the instance nodes written before it:
        # those not written since are unconfirmed (`_unconfirmed`).
        # Only at a new session's connection: back on the same session,
        # the nodes are still ours (at 19,000 nodes their writes take some
        # 13 s, and a leader election would fail every agent's /healthz).
        self.unconfirmed = Unconfirmed(reactor, nodes)
        # After a restart that could not reattach: the instance nodes that
        # went with the previous process's session (`sentinel.unremade`).
        self.unremade = unremade
        self._session_id = zk.session_id
        # Since when each discovery member this agent should hold was
        # first seen held by none of it (`_unlisted`).
        self._unlisted_since: dict[Node, float] = {}

    def state_changed(self, state: str) -> None:
        """The bridge's state changed (a `ZooKeeper` state listener)."""
        if state != CONNECTED:
            self.unconfirmed.disconnected()
            if self._disconnected_since is None:
                self._disconnected_since = self._reactor.seconds()
            return
        self._disconnected_since = None
        session_id, self._session_id = self._session_id, self._zk.session_id
        if session_id is not None and session_id != self._zk.session_id:
            self.unconfirmed.connected()
        else:
            self.unconfirmed.disconnected()

    def stats(self) -> dict[str, Any]:
        """ZooKeeper's part of /debug/stats."""
        zk = self._zk
        queue = self._queue
        holders = self._holders
        stats = {
            "state": zk.state,
            "state_seconds": self._reactor.seconds() - zk.state_since,
            "session_id": None if zk.session_id is None else f"{zk.session_id:#x}",
            "writes_queued": queue.queued,
            "writes_in_flight": queue.in_flight,
            "writes_window": int(queue.window.size),
            "writes_by_kind": queue.by_kind(),
            "calls": zk.calls_waiting(),
            "calls_waiting_oldest": zk.calls_waiting_oldest(),
            "calls_time_spent": zk.time_spent.stats(),
            "writes_ok": queue.writes["ok"],
            "writes_skipped_unchanged": queue.unchanged,
            "writes_failed": queue.writes["error"],
            "writes_failing": len(queue.still_failing()),
            "waiting_takeover": sorted(holders.waiting),
            "conflicts": dict(holders.conflicts),
            "conflicts_started": holders.conflicts_started,
            "ownership_checks": holders.ownership_checks,
            "nodes_deleted_behind": self._guard.deleted,
            "nodes_written_over": self._guard.writes_over,
            "late_sets_after_takeover": self._guard.late_sets,
            "own_sets_applied_unanswered": self._guard.own_sets_applied,
            "guard_watches": self._guard.rearming.stats(),
            "session_timeout_requested": zk.requested_timeout,
            "session_timeout_granted": zk.granted_timeout,
            "connect_error": zk.connect_error,
            "client_replacements": zk.replacements,
            "kazoo_clients_alive": zk.clients_alive,
            "kazoo_clients_closing": zk.clients_closing,
            "calls_unanswered": zk.calls_unanswered,
            "connections_dropped": zk.drops,
            "calls_timed_out": zk.calls_timed_out,
            "calls_timed_out_unsent": zk.calls_timed_out_unsent,
            "calls_answered_after_timeout": zk.calls_answered_after_timeout,
            "calls_unsent_given_up": zk.calls_unsent_given_up,
            "last_error": queue.last_error,
            "handoff": None if self._handoff is None else self._handoff.stats(),
            **self._lateness.stats(),
            "clock": self._clock.stats(),
        }
        if self._roles.joined:
            takeovers = self._takeovers
            stats["group"] = {
                "takeovers": takeovers.takeovers,
                "made_anew": takeovers.made_anew,
                "takeovers_read_again": takeovers.read_again,
                "covered": self._roles.covered(),
                "handoffs": takeovers.handoffs,
                "handing_off": takeovers.handing_off,
                "watches": takeovers.rearming.stats(),
                "primary_of": self._roles.primaries,
                "unwritten": sorted(
                    n
                    for n, node in self._nodes.instances.items()
                    if node.takeover and not node.owned
                ),
            }
        discovery = self._members.stats()
        if discovery is not None:
            stats["discovery"] = discovery
        return stats

    def unhealthy_reason(self) -> str | None:
        """
        Why /healthz should fail on ZooKeeper's account, or None. While
        not connected, the time given is since the connection was lost,
        whatever states (suspended, lost, connecting) came since.
        """
        zk = self._zk
        life = self._life
        reasons = []
        if life.superseded:
            assert life.halted is not None
            return f"zookeeper: {life.halted}; not writing"
        if zk.state != CONNECTED:
            lost = self._disconnected_since
            since = self._reactor.seconds() - (zk.state_since if lost is None else lost)
            reasons.append(
                f"{_outage(zk)} for {since:.1f} s{_causes(zk)}: published status "
                f"may be stale ({self._queue.queued_said()})"
            )
        elif silent := zk.not_answering():
            reasons.append(
                f"zookeeper: {silent}: published status may be stale "
                f"({self._queue.queued_said()})"
            )
        if zk.foreign is not None:
            reasons.append(f"zookeeper: {zk.foreign}")
        if refused := self._refusals.unhealthy_reason(self._queue.still_failing()):
            reasons.append(f"zookeeper: {refused}")
        if life.halted is not None:
            reasons.append(f"zookeeper conflict: {life.halted}")
        else:
            # Each kind named: a conflict must not hide a node that waits.
            conflicts = self._holders.conflicts
            if conflicts:
                reasons.append(f"zookeeper conflict: {_first_of(conflicts)}")
            waiting = {
                path: holder
                for path, holder in self._holders.waiting.items()
                if path not in conflicts
            }
            if waiting:
                reasons.append(
                    f"zookeeper: {_first_of(waiting)}: its published status is stale"
                )
        late = self._takeovers.late() if self._roles.joined else None
        if late:
            reasons.append(
                f"zookeeper: {_first_of(late)}: kept and written by this "
                "agent meanwhile"
            )
        squatters = self._opinions.squatters
        if squatters:
            reasons.append(
                f"zookeeper: opinion {_first_of(squatters)}: left out of the verdict"
            )
        elsewhere = self._opinions.elsewhere
        if elsewhere:
            reasons.append(
                f"zookeeper: opinion {_first_of(elsewhere)}: the members' "
                "configs disagree on the address"
            )
        unlike = self._opinions.unlike
        if unlike:
            reasons.append(
                f"zookeeper: opinion {_first_of(unlike)}: the members' configs "
                "disagree on discovery, and the members readers find depend on "
                "which agent is primary"
            )
        absent = self._opinions.absent(self._roles.voting) if self._roles.joined else {}
        if absent:
            reasons.append(
                f"zookeeper: opinion {_first_of(absent)}: its observer is left "
                "out of the verdict until it writes it again"
            )
        behind = self._opinions.late_verdicts() if self._roles.joined else None
        if behind:
            reasons.append(f"zookeeper: {behind}")
        writers = self._opinions.behind.unhealthy_reason()
        if writers and self._roles.joined:
            reasons.append(f"group: {writers}")
        carried = self._roles.carried_long() if self._roles.joined else None
        if carried:
            reasons.append(f"zookeeper: {carried}")
        if self._acls is not None and (open_acl := self._acls.unhealthy_reason()):
            reasons.append(open_acl)
        if skewed := self._clock.unhealthy_reason():
            reasons.append(skewed)
        # Waiting to join a group again, nothing is written on purpose
        # (`sentinel.holdoff`): the group's reason says so, not these.
        writing = zk.state == CONNECTED and not self._queue.holding_off()
        # But the nodes it still writes meanwhile (`sentinel.unshared`) are
        # named when their writes keep failing, as any agent's would be.
        if zk.state == CONNECTED and (failing := self._failing()):
            reasons.append(f"zookeeper: {failing}: its published status is stale")
        if writing and (behind := self._lateness.unhealthy_reason()):
            reasons.append(behind)
        if deleted := self._guard.unhealthy_reason():
            reasons.append(deleted)
        if unarmed := self._unarmed():
            reasons.append(
                f"zookeeper: {_first_of(unarmed)}: a deletion or takeover of it "
                "may go unnoticed; asked again"
            )
        if writing and (unwritten := self._lateness.unwritten_reason()):
            reasons.append(unwritten)
        if writing and (unlisted := self._unlisted()):
            reasons.append(f"zookeeper: {unlisted}: readers do not find it")
        if said := self.unconfirmed.reason(self._unconfirmed() if writing else []):
            reasons.append(said)
        if writing and (gone := self.unremade.reason(self._unremade())):
            reasons.append(gone)
        return "; ".join(reasons) or None

    def _unarmed(self) -> dict[str, str]:
        """
        The watches of our nodes that no read could set for a while
        (`sentinel.rearming`): the guard's, and a group's takeovers'.
        """
        unarmed = self._guard.unarmed()
        if self._roles.joined:
            unarmed.update(self._takeovers.unarmed())
        return unarmed

    def look_unconfirmed(self) -> None:
        """
        Drop the unconfirmed nodes written since, and the nodes gone with
        the previous process's session made again since (each end is
        logged).
        """
        self._unconfirmed()
        self._unremade()

    def _failing_long(self) -> set[Node]:
        """The nodes whose writes have failed for `FAILING_AFTER` or more."""
        named_after = self._reactor.seconds() - FAILING_AFTER
        return {
            node
            for node, (since, _) in self._queue.failing.items()
            if since <= named_after
        }

    def _unremade(self) -> list[str]:
        # After a restart that could not reattach, the instance nodes gone
        # with the previous process's session and not made again, nor
        # held elsewhere nor failing for FAILING_AFTER (named on those
        # accounts, as for `_unconfirmed`).
        if not self.unremade.waiting:
            return []
        return self.unremade.look(self._failing_long())

    def _unconfirmed(self) -> list[Node]:
        # After a connection, the instance nodes written before it and not
        # since (`sentinel.unconfirmed`), nor known held elsewhere
        # (`waiting` says those) nor failing for FAILING_AFTER (`_failing`
        # names those): until the first answers, an earlier session's node
        # (ZooKeeper restored from an old snapshot) may publish what is no
        # longer true. One failing for less is still counted: back from a
        # pause past its session, the agent's first writes go on the dead
        # connection and fail, and /healthz, naming neither, said 200
        # while every node was missing until the new session's writes
        # were answered.
        if not self.unconfirmed.waiting:
            return []
        return self.unconfirmed.look(self._failing_long())

    def _unlisted(self) -> str | None:
        # The discovery members of instances up and ready, whose node this
        # agent publishes, that no member of ours lists, if for
        # FAILING_AFTER or more (as a failing node: one being created, or
        # taken over from a previous primary, is not named): an endpoint
        # missing for readers is published data gone wrong. Each is timed
        # from when the member this session held was found gone (or let
        # go), else from the first answer that found it so: timed from
        # the answer alone, a member dropped by a write and not made again
        # for 30 s was named by no /healthz asked every 10 s or less often.
        now = self._reactor.seconds()
        since = self._unlisted_since
        unlisted = self._members.unlisted()
        for node in [n for n in since if n not in unlisted]:
            del since[node]
        late = []
        for node, which in unlisted.items():
            member = node.member
            dropped = None if member is None else member.dropped_at
            first = since.setdefault(node, now if dropped is None else dropped)
            if now - first >= FAILING_AFTER:
                late.append((first, which))
        if not late:
            return None
        (first, which), *rest = heapq.nsmallest(NAMED + 1, late)
        return f"discovery member of {which} missing for {now - first:.0f} s" + (
            others((each for _, each in rest), len(late) - 1)
        )

    def _failing(self) -> str | None:
        # The node whose writes have failed longest, if for FAILING_AFTER or
        # more, then the next such (`sample.others`); while disconnected,
        # the writes waiting are already the reason.
        now = self._reactor.seconds()
        first = None
        count = 0
        named: list[str] = []
        queue = self._queue
        for node, (since, error) in queue.still_failing().items():
            if now - since < FAILING_AFTER:
                break  # Oldest first: the rest started failing later still.
            if queue.held_off(node):
                continue  # Not written on purpose (`sentinel.holdoff`).
            if first is None:
                first = (
                    f"{node.path} not written for {now - since:.0f} s"
                    f" ({error}{_now(node)})"
                )
            elif len(named) < NAMED:
                named.append(node.path)
            count += 1
        if first is None:
            return None
        return first + others(named, count - 1)


def _now(node: Node) -> str:
    # The last error may be old (a write lost with the connection, then
    # slow to come back: a look, thousands of writes queued): what
    # happens to the node now, while connected, is said too.
    if node.writing:
        return "; being written again"
    if node.queued:
        return "; waiting for a write slot"
    return ""


def _first_of(reasons: Mapping[str, str]) -> str:
    """The first node and its reason, then the others (`sample.others`)."""
    path = next(iter(reasons))
    return f"{path} {reasons[path]}" + others(
        islice(reasons, 1, None), len(reasons) - 1
    )


def _outage(zk: ZooKeeper) -> str:
    """
    What the bridge's state says of the session while not connected: a
    client replaced after a session timeout asks for the same session
    again (`ZooKeeper.resuming`), which only the ensemble can expire, and
    one without a quorum expires none: "lost" read as the session gone.
    """
    session = zk.resuming()
    if session is None:
        return f"zookeeper {zk.state}"
    state = "unreachable" if zk.state == LOST else zk.state
    return (
        f"zookeeper {state} (session {session:#x} not lost: asked for again, "
        "and only the ensemble expires it)"
    )


def _causes(zk: ZooKeeper) -> str:
    """
    Why the connection attempts fail: every server whose handshake failed
    in this outage, and how, then the last cause if it is another (the
    last cause alone named one frozen server, or one without a quorum, in
    turn).
    """
    named = [f"{s} {why}" for s, why in sorted(zk.handshakes_failed.items())]
    last = zk.connect_error
    if last is not None and last not in named:
        named.append(last)
    return f" ({'; '.join(named)})" if named else ""

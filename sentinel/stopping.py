"""
How this agent's publishing ends, in one of three ways, each bounded so
that SIGTERM ends the process within 5 s even with ZooKeeper unreachable
(the bounds sum to less than `STOP_BUDGET`):

- with a state_dir (`sentinel.handoff`), the session is left open for the
  next process, nodes and all, once the writes in flight and the state
  file's last write are done and the file read again
  (`STOP_DELETE_TIMEOUT` at most; the stop's own write of its last checks,
  a refresh of a file that holds the session already, is not waited
  for past that), if the file then holds the session; if
  it does not (its write failed: a disk full, say; or another agent
  sharing the state_dir overwrote it), the next process could not
  reattach and the nodes would stay stale until the session expired, so
  the stop deregisters as below, and says why;
- otherwise, or after `leave` (``SIGUSR2``), the nodes are deleted
  (`STOP_DELETE_TIMEOUT`; more than `STOP_DELETES` are left to the close,
  which deletes every ephemeral node of the session at once) and the
  session closed (`STOP_CLOSE_TIMEOUT`),
  and `leave` also removes the state file; in a group, the agent first
  leaves the group (its catalog and agent node deleted; first, the
  instance nodes handed over whose last status change is not written yet
  are written, `LEAVE_LAST_WRITES_WAIT` at most, so that no member takes
  over the status before it) and lets the writes in flight end
  (takeovers among them: no new one starts), then
  waits, `LEAVE_HANDOFF_WAIT` in all, for the other members to take over
  the instance nodes they will have (`sentinel.takeover`) and those
  instances' discovery members, and closes the session once they have,
  which deletes the rest at once (opinions; a delete each first would
  only take time from that wait). If they have not by then, and another
  member is listed, it waits for them on, to `STOP_BUDGET` less
  `LEAVE_CLOSE_RESERVE` (the close needs milliseconds while ZooKeeper
  answers), and closes the session if they are done by then: left open
  at the wait's end with one takeover still under way, the session and
  its opinions stayed for a session timeout after the exit (at 1,000
  instances, the last takeover 3.05 s after ``SIGUSR2``, the session
  ended 13.4 s after it). If they are still not done, the session
  is left open instead (`sentinel.zk.ZooKeeper.leave_open`), with the
  nodes handed over and this agent's opinions (every other node deleted
  first, `STOP_DELETES` at most, or the session is closed as before;
  the opinions, about one an instance with two replicas, would always
  be too many, and they count in no verdict: each primary counts its
  instance's observers in its own view, which lost this agent when it
  listed the leave): those nodes stay, as they were, until taken over (the
  members take each, with its discovery member, in one transaction from
  the live session) or until the session expires, a session timeout
  after the exit, as after a crash; unless no other member is listed by
  then (the whole group stopping at once: `_others_listed`), when the
  session is closed as before. Closed, each went missing until its new primary made
  it again: at a leave at 3,000 instances (three agents, ``replicas =
  2``) on a loaded 2-core machine the survivors' view came 0.2-2.2 s
  after the signal and their takeovers went through 200-300 a second
  each, and none to all of the 1,030 nodes went with the close, run to
  run; no bound within the 5 s stop covers that. A leave that failed
  (the connection lost), or a stop while the client is not connected,
  closes the session at once: no member can take anything over before
  it hears of the leave. A leave sent, the client connected, but not
  acknowledged within `LEAVE_ANSWER_WAIT` (ZooKeeper slow on a loaded
  machine, or frozen) leaves the session open at once, for the
  takeovers: ZooKeeper applies the leave when it gets to it, and the
  others then take the nodes over; a close sent behind it deleted them
  all with it instead, missing until made again (at 1,000 instances,
  three agents, ``replicas = 2``, load 21-31: every one of the 343
  handed, p50 6.6 s, up to 15 s). Cut off for good, the session expires
  either way;
- a newer process that took the session over has the nodes: nothing is
  touched (a session of this process's own, opened after its first was
  lost while a newer process took over, is closed by the publisher at
  once, and the stop lets that close end first, as below); after a twin
  (halted), the nodes still ours are deleted and the session closed, as
  without a state_dir.

Every bound counts from the stop signal, when one came (`signalled`),
not from this stop's start: a stop that begins late (the monitor's stop
before it, a busy reactor, the wait for a reattached session's first
round, `sentinel.roundstop`) has that much less to wait for its takeovers,
and its last steps are cut to end by `STOP_BUDGET` after the signal,
each given `STEP_FLOOR` at least. Counted from the publisher's stop, a
leave at 3,000 instances ended 5.13-5.43 s after the signal at a load
near 40, and 6.42 s at 19 (the publisher's stop began 2.28 s late).

A `leave` before the session the previous process left is attached (a
``SIGUSR2`` during start-up) first waits for it (`STOP_DELETE_TIMEOUT` at
most): the nodes are that session's, and closing it is what deletes them
at once; and the state file is removed only once its claim is written.

Any stop first lets the close of a stale session left by the previous
process end (`closing`, `STALE_CLOSE_WAIT` at most): connecting to close
it renewed the session, so a stop that cut the close kept the stale nodes
for another session timeout (measured: a SIGTERM during start-up left
them 10 s after the exit; now they go before it), and a crash loop whose
processes each lived briefly kept them for as long as it went on.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredList, gatherResults, succeed
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from sentinel.handoff import SessionHandoff
from sentinel.nodes import LOG_NAMESPACE, Node, Nodes
from sentinel.roles import GroupRoles
from sentinel.takeover import Takeovers
from sentinel.writer import NodeWriter
from sentinel.writes import WriteQueue
from sentinel.zk import CONNECTED, CONNECTING, ZooKeeper

log = Logger(namespace=LOG_NAMESPACE)

# How a bounded wait of a stop ended (`Stopping._ended_by`).
_DONE, _FAILED, _LATE = "done", "failed", "late"

# Every bound of a stop, in seconds. When ZooKeeper never answers, a
# group left waits for its leave to be acknowledged, then closes the
# session: 1.5 s (and after a `leave`, the state file's removal, a few
# milliseconds); a stop that deregisters outside a group (the nodes
# deleted, the session closed) 2.0 s. The longest stop is a leave
# acknowledged, its takeovers waited for, then a close left unanswered:
# 4.0 s. All stay within `STOP_BUDGET`, which leaves a second for the
# rest of the process's end (measured: 0.04 s; 0.3 s at load 30) before
# the 5 s that DESIGN.md promises. (These once summed to exactly 5.0 s,
# and a stop with ZooKeeper stopped took 5.04 s; until the leave's
# acknowledgement was waited for on its own, every stop with ZooKeeper
# frozen, alone too, took the 4 s.)
STOP_BUDGET = 4.0
# On a stop that leaves the group: seconds, from the signal, to wait for
# the new primaries to take this agent's nodes and members over; the
# wait ends as soon as they have (and the session is closed), or at this
# bound with the session left open for them (module docstring). They
# apply the leave as soon as they list it (its agent node went with its
# catalog: no settle time), take each node in one transaction, with its
# member where the verdict names it (`members.Members.along`; otherwise
# the member once a look at its service found the one it replaces): at 300
# instances and three agents, 1-3 s on a loaded machine; at 3,000, 2-6 s
# (the rest of them after the stop). At 1.5 s, the session was
# closed first at every stop (measured at load 16-55: 25-104 of the 106
# nodes moving went missing, for up to 1.5 s, and all 106 of their
# members, for up to 3.6 s, until the new primaries made them again).
LEAVE_HANDOFF_WAIT = 3.0
# On a stop that leaves the group: seconds the leave itself (the catalog
# and agent node deleted, which tell the others) may take to be answered.
# Until it is, no member can take anything over, so unanswered, the
# session is left open at once (module docstring) rather than the whole
# wait spent (a failed leave closes it): with
# ZooKeeper frozen, a stop took 4.03-4.12 s, alone or in a group, and
# with ZooKeeper stopped 3.03-3.13 s in a group (its calls failed at
# once, and the takeovers' were waited for). A failed delete is no
# acknowledgement either. (Measured while ZooKeeper answers: 0.02-0.06 s
# from the signal, three agents, 300 instances, load 4-8.)
LEAVE_ANSWER_WAIT = 0.5
# On a stop that leaves the group: seconds, before the leave, for the
# writes of the instance nodes handed over whose last status change is
# not written yet (`Stopping._write_last`): one round trip while
# ZooKeeper answers, taken from `LEAVE_HANDOFF_WAIT`; none when no such
# change waits.
LEAVE_LAST_WRITES_WAIT = 0.5
# On a stop that leaves the group: seconds of `STOP_BUDGET` kept for the
# close when the takeovers were not all done in `LEAVE_HANDOFF_WAIT`.
LEAVE_CLOSE_RESERVE = 0.25
# On a leave not acknowledged within `LEAVE_ANSWER_WAIT`: seconds between
# looks at whether kazoo has sent it yet (`Stopping._sent_by`).
LEAVE_SENT_EVERY = 0.05
# On a leave whose takeovers are not all done in its wait: seconds for the
# listing of the agent nodes that says whether any member is left to
# take them (`Stopping._others_listed`); one read, answered in
# milliseconds while ZooKeeper answers.
LEAVE_LISTING_WAIT = 0.25
# A clean stop deletes our nodes, then closes the session (or, handing the
# session over, lets the writes in flight end). Up to 64 deletes take a
# few milliseconds while ZooKeeper answers.
STOP_DELETE_TIMEOUT = 1.0
# Up to this many nodes are deleted one by one before the session is
# closed; more are left to the close, which deletes them all at once: at
# 10,000 instances the deletes held the stop past 5 s.
STOP_DELETES = 64
# The close is one request; unanswered, the session expires on its own.
STOP_CLOSE_TIMEOUT = 1.0
# Seconds a step of a stop gets at least, however late it begins (a
# reactor stalled past the whole budget): a close asked is usually
# answered in milliseconds, and deletes every node left at once.
STEP_FLOOR = 0.1
# After a leave, the state file's removal (once a write in flight ends):
# milliseconds on a local disk; on a hung mount, the file is left behind.
# A leave during start-up adds `STOP_DELETE_TIMEOUT` before the deletes,
# without a group: 3.5 s in all.
STOP_FORGET_TIMEOUT = 0.5
# A stale session's close in flight: a connection and one request. The
# process holds no session of its own meanwhile (its client starts once
# the close ended), so the rest of such a stop ends at once.
STALE_CLOSE_WAIT = 2.0


class Stopping:
    """The end of publishing (module docstring)."""

    def __init__(
        self,
        reactor: Any,
        zk: ZooKeeper,
        nodes: Nodes,
        queue: WriteQueue,
        writer: NodeWriter,
        roles: GroupRoles,
        takeovers: Takeovers,
        handoff: SessionHandoff | None,
    ) -> None:
        self._reactor = reactor
        self._zk = zk
        self._nodes = nodes
        self._queue = queue
        self._writer = writer
        self._roles = roles
        self._takeovers = takeovers
        self._handoff = handoff
        self.leaving = False
        # Fires once the stale session's close in flight ended, if one is.
        self._closing: Deferred[None] | None = None
        # When the stop signal came (the reactor's time), if one did, and
        # when this stop's bounds count from (module docstring).
        self._signalled: float | None = None
        self._began = 0.0

    def signalled(self, at: float) -> None:
        """
        The first stop signal came at `at`: the bounds count from then.
        Called from the signal handler: it stores a float, nothing else.
        """
        if self._signalled is None:
            self._signalled = at

    @property
    def signalled_at(self) -> float | None:
        """When the first stop signal came (the reactor's time), if one did."""
        return self._signalled

    def _bound(self, step: float, after: float = 0.0) -> float:
        """
        Seconds a step that may take `step` has, if the steps after it may
        take `after`: all end by `STOP_BUDGET` from the start of the stop
        (the signal), each with `STEP_FLOOR` at least.
        """
        left: float = self._began + STOP_BUDGET - after - self._reactor.seconds()
        return max(STEP_FLOOR, min(step, left))

    def _after_close(self) -> float:
        # After a leave's close, the state file's removal.
        return STOP_FORGET_TIMEOUT if self.leaving and self._handoff else 0.0

    def closing(self, closed: Deferred[None]) -> None:
        """
        A close is in flight (a stale session's, or this process's own
        when superseded), and `closed` fires once it ended: a stop waits
        for it first (module docstring).
        """
        ended: Deferred[None] = Deferred()
        self._closing = ended

        def done(result: object) -> object:
            self._closing = None
            ended.callback(None)
            return result

        closed.addBoth(done)

    def stop(self, halted: bool, superseded: bool) -> Deferred[None]:
        """
        End publishing, `halted` by a twin or a newer process, or
        `superseded` by a newer process; fires when done.
        """
        now = self._reactor.seconds()
        signalled = self._signalled
        self._began = now if signalled is None else min(signalled, now)
        closing = self._closing
        if closing is not None:
            closing.addTimeout(STALE_CLOSE_WAIT, self._reactor)
            closing.addErrback(lambda _: None)
            return closing.addCallback(lambda _: self._stop(halted, superseded))
        return self._stop(halted, superseded)

    def _stop(self, halted: bool, superseded: bool) -> Deferred[None]:
        if superseded:
            # The session is another process's now, and so are the nodes.
            return succeed(None)
        handoff = self._handoff
        if handoff is not None and not self.leaving and not halted:
            # A file found overwritten at a heartbeat is read again: the
            # process that wrote it (a double start's loser, exited as a
            # twin) may be gone since, and the file is then written again
            # (`SessionHandoff.verify`). Taken at the heartbeat's word, a
            # stop 3 s after the twin exited deleted every node.
            if (
                handoff.writing
                or handoff.blocked is None
                or handoff.overwritten is not None
            ):
                return self._hand_over(handoff)
            self._not_handed_over(handoff.blocked)
        if (
            self.leaving
            and handoff is not None
            and handoff.left is not None
            and self._zk.state != CONNECTED
        ):
            return self._attached(handoff).addCallback(lambda _: self._deregister())
        if self._roles.joined and not halted:
            if self._zk.state != CONNECTED or not self._handing_over():
                # Nobody hears of the leave, or nobody is to take anything
                # over (an agent alone): nothing to wait for.
                return self._deregister(one_by_one=False)
            wait = LEAVE_HANDOFF_WAIT
            if self.leaving and handoff is not None:
                # The state file's removal follows the close: in the budget.
                wait -= STOP_FORGET_TIMEOUT
            # From the signal: a stop begun late waits that much less.
            deadline = self._began + wait
            leave: Deferred[Any] = Deferred.fromCoroutine(self._leave_group(deadline))

            def failed(failure: Failure) -> None:
                log.failure("leaving the group", failure)

            leave.addErrback(failed)
            return leave.addCallback(self._after_leave)
        return self._deregister()

    def _handing_over(self) -> bool:
        """
        Whether another member will take over a node of ours (`successor`):
        otherwise (an agent alone, a group of one) the leave's waits, for
        the writes in flight and the takeovers, are for nobody: the close
        deletes every node at once. (Waited for, the writes in flight held
        a stop of an agent alone at 1,000 instances on a loaded machine
        until the end of that wait, 3 s after the signal, where the same
        stop took under 1 s with none in flight.)
        """
        return any(
            node.owned and not node.removed and self._roles.successor(name)
            for name, node in self._nodes.instances.items()
        )

    def _after_leave(self, left: tuple[list[Node], int, int] | None) -> Deferred[None]:
        """
        After the leave and its wait: the session is closed, which deletes
        at once what no member took over; unless the members are still
        taking over the nodes handed to them (`left`: those nodes, and how
        many are not taken yet; the leave was acknowledged), in which case
        it is left open for them (module docstring), once every other node
        of ours but its opinions is deleted. (`left` also says how many of
        those are instance nodes, and how many discovery members.)
        """
        if left is None:
            return self._deregister(one_by_one=False)
        handed, nodes_left, members_left = left
        kept = set(handed).union(self._nodes.opinions.values())
        stale = [
            node
            for node in self._nodes
            if (node.owned or node.member is not None)
            and not node.removed
            and node not in kept
        ]
        if len(stale) > STOP_DELETES:
            # Too many to delete in time: the close deletes them at once.
            return self._deregister(one_by_one=False)
        deletes = [Deferred.fromCoroutine(self._writer.delete_now(n)) for n in stale]
        d: Deferred[Any] = DeferredList(deletes, consumeErrors=True)
        d.addTimeout(
            self._bound(STOP_DELETE_TIMEOUT, self._after_close()), self._reactor
        )
        d.addBoth(lambda _: self._left_for_takeovers(nodes_left, members_left))
        if self.leaving and self._handoff is not None:
            handoff = self._handoff
            d.addCallback(lambda _: self._forget(handoff))
        return d.addCallback(lambda _: None)

    def _left_for_takeovers(self, nodes: int, members: int) -> None:
        session = self._zk.session_id
        self._zk.leave_open()
        log.info(
            "left the group; ZooKeeper session {session} left open, not "
            "closed, {waited} s after the signal: the other members have not "
            "taken {nodes} instance node(s) and {members} discovery member(s) "
            "over yet, which stay as they are until taken over, or for the "
            "session timeout ({timeout} s)",
            session="none" if session is None else f"{session:#x}",
            waited=round(self._reactor.seconds() - self._began, 2),
            nodes=nodes,
            members=members,
            timeout=self._zk.session_timeout,
        )

    def _attached(self, handoff: SessionHandoff) -> Deferred[None]:
        """
        Fires once the state file's claim is written and, if that started
        the client, once it is connected; or after `STOP_DELETE_TIMEOUT`.
        """
        connected: Deferred[None] = Deferred()

        def heard(state: str) -> None:
            if state == CONNECTED and not connected.called:
                connected.callback(None)

        self._zk.add_listener(heard)

        def claimed(_: object) -> Deferred[None] | None:
            return connected if self._zk.state == CONNECTING else None

        d: Deferred[Any] = handoff.wait_written().addCallback(claimed)
        d.addTimeout(STOP_DELETE_TIMEOUT, self._reactor)
        return d.addErrback(lambda _: None)

    def _deregister(self, one_by_one: bool = True) -> Deferred[None]:
        """Delete our nodes (bounded) if `one_by_one`, then close the session."""
        nodes = [
            node
            for node in self._nodes
            if (node.owned or node.member is not None) and not node.removed
        ]
        if len(nodes) > STOP_DELETES or not one_by_one:
            # Closing the session removes every one of them at once (they
            # are all ephemeral); a call each only delays that.
            nodes = []
        deletes = [Deferred.fromCoroutine(self._writer.delete_now(n)) for n in nodes]
        d: Deferred[Any] = DeferredList(deletes, consumeErrors=True)
        after = STOP_CLOSE_TIMEOUT + self._after_close()
        d.addTimeout(self._bound(STOP_DELETE_TIMEOUT, after), self._reactor)
        d.addBoth(
            lambda _: self._zk.stop(
                self._bound(STOP_CLOSE_TIMEOUT, self._after_close())
            )
        )
        if self.leaving and self._handoff is not None:
            handoff = self._handoff
            d.addCallback(lambda _: self._forget(handoff))
        return d.addCallback(lambda _: None)

    def _forget(self, handoff: SessionHandoff) -> Deferred[None]:
        """Remove the state file, within `STOP_FORGET_TIMEOUT`."""
        d = handoff.forget().addTimeout(self._bound(STOP_FORGET_TIMEOUT), self._reactor)
        return d.addErrback(
            lambda _: log.warn(
                "{path} not removed within {timeout} s",
                path=handoff.state_file.path,
                timeout=STOP_FORGET_TIMEOUT,
            )
        )

    async def _leave_group(self, deadline: float) -> tuple[list[Node], int, int] | None:
        """
        Leave the group first (catalog and agent node deleted), and let
        the writes in flight end, then wait for the other members to take
        over the nodes they will have; all by `deadline`. A takeover in
        flight when the stop began makes one more node ours: listed
        before it ended, it was not waited for, and went with the session
        (missing until its previous primary made it again).

        Each wait has its own timeout: a timeout on the whole coroutine
        would cancel the first wait, whose DeferredList takes the
        cancellation for a result, and the second would then wait for
        good (with ZooKeeper unreachable, the stop never ended).
        """
        await self._write_last(deadline)
        # The agent node first: ZooKeeper applies a session's calls in
        # order, so a member told of the leave by its catalogs' watch finds
        # the agent node gone too (a leave, applied at once), asked beside
        # its listing (`sentinel.membership`) or after it.
        leaving = [
            node for node in (self._nodes.agent, *self._nodes.catalog) if node.owned
        ]
        # Past every call waiting: behind a start-up's or a view change's
        # thousands, the leave came after `LEAVE_ANSWER_WAIT` (writer).
        deletes: list[Deferred[Any]] = [
            Deferred.fromCoroutine(self._writer.delete_leaving(node))
            for node in leaving
        ]
        asked = self._reactor.seconds()
        # Less, if the stop began late (counted from the signal).
        answered_by = min(deadline, asked + LEAVE_ANSWER_WAIT)
        told = gatherResults(deletes, consumeErrors=True)
        acknowledged = await self._ended_by(answered_by, told)
        paths = [node.path for node in leaving]
        if (
            acknowledged == _LATE
            and self._zk.state == CONNECTED
            and await self._sent_by(deadline, paths)
        ):
            # Sent and not refused, the connection up: ZooKeeper is slow (a
            # loaded machine), or frozen, and applies the leave, then the
            # takeovers, once it gets to them. Closed, every node handed
            # went with the close, missing until made again (at 1,000
            # instances, load 21-31: all 343, p50 6.6 s, up to 15 s, and
            # 344 endpoints unlisted).
            waiting, watched, handed = self._handed()
            log.warn(
                "leaving the group: not acknowledged by ZooKeeper within "
                "{timeout} s, though connected; leaving the session open for "
                "the other members to take its nodes over once ZooKeeper "
                "applies the leave, rather than closing it (which would "
                "delete them at once)",
                timeout=round(max(0.0, answered_by - asked), 2),
            )
            # The leave's own nodes are not deleted again meanwhile.
            return handed + leaving, len(waiting), len(watched)
        if acknowledged != _DONE:
            log.warn(
                "leaving the group: not acknowledged by ZooKeeper within "
                "{timeout} s; closing the session at once",
                timeout=round(max(0.0, answered_by - asked), 2),
            )
            return None
        if not await self._by(deadline, self._queue.ended()):
            return None
        waiting, watched, handed = self._handed()
        everything = waiting + watched
        if not everything:
            return None
        log.info(
            "left the group; waiting for {count} node(s) to be taken over",
            count=len(everything),
        )
        taken = self._takeovers.taken_over(everything)
        try:
            if await self._by(deadline, _following(taken)):
                self._all_taken(len(everything))
                return None
            if not await self._others_listed():
                # The whole group stopping at once: nobody will take them,
                # and left open they said what they said for a session
                # timeout after every process had gone (measured: 300
                # nodes 7.3 s past the exits of three agents stopped
                # together).
                return None
            # The rest of the budget but the close's: takeovers that end
            # in it still end in a closed session (`LEAVE_CLOSE_RESERVE`).
            late = self._began + STOP_BUDGET - LEAVE_CLOSE_RESERVE - self._after_close()
            if await self._by(late, _following(taken)):
                self._all_taken(len(everything))
                return None
        finally:
            if not taken.called:
                taken.cancel()
            taken.addErrback(lambda _: None)
        return (
            handed,
            sum(node.owned for node in waiting),
            sum(node.owned for node in watched),
        )

    def _all_taken(self, count: int) -> None:
        log.info(
            "left the group: the other members took all {count} node(s) "
            "over {seconds} s after the signal; closing the session",
            count=count,
            seconds=round(self._reactor.seconds() - self._began, 2),
        )

    async def _write_last(self, deadline: float) -> None:
        """
        Before the leave, write what this agent found last of the
        instances handed over: a status change decided while the node's
        previous write was in flight, or waiting for a slot, was dropped
        at the stop, and the node said the status before it from the
        leave to its takeover (carried over by the new primary until its
        own first check). Each is written once its write in flight ended,
        all within `LEAVE_LAST_WRITES_WAIT` (less by `deadline`); one not
        written by then is left as it is, and the leave goes on. Nothing
        is waited for when no such node is dirty (the usual stop).
        """
        unwritten = [
            node
            for name, node in self._nodes.instances.items()
            if node.owned
            and node.dirty
            and not node.removed
            and self._roles.successor(name)
        ]
        if not unwritten:
            return
        by = min(deadline, self._reactor.seconds() + LEAVE_LAST_WRITES_WAIT)
        if any(node.writing for node in unwritten):
            await self._ended_by(by, self._queue.ended())
        started = self._queue.write_last(unwritten)
        ended = await self._ended_by(by, self._queue.ended()) if started else _DONE
        written = sum(not (node.dirty or node.writing) for node in unwritten)
        log.info(
            "leaving the group: {written} of {count} instance node(s) whose "
            "last status was not written yet written first ({ended})",
            written=written,
            count=len(unwritten),
            ended=ended,
        )

    async def _sent_by(self, deadline: float, paths: list[str]) -> bool:
        """
        Whether the leave's deletes of `paths` have left this process, or
        that cannot be told, by `deadline` (looked at every
        `LEAVE_SENT_EVERY`): one still in kazoo's queue at the exit is
        lost (`sentinel.sessionclose`). Handed to kazoo at once (urgent),
        a delete may wait there behind the calls it was given before, its
        connection thread slow on a loaded machine.
        """
        while True:
            if self._zk.state != CONNECTED:
                return False
            if self._zk.deletes_sent(paths) is not False:
                return True
            if self._reactor.seconds() + LEAVE_SENT_EVERY > deadline:
                return False
            await deferLater(self._reactor, LEAVE_SENT_EVERY)

    def _handed(self) -> tuple[list[Node], list[Node], list[Node]]:
        """
        The instance nodes of ours another member will hold, and their
        discovery members, each watched as a node of its own path (which
        `Takeovers.taken_over` marks no longer ours once another session
        holds it); and the nodes themselves, instance nodes and members.
        """
        waiting = [
            node
            for name, node in self._nodes.instances.items()
            if node.owned and not node.removed and self._roles.successor(name)
        ]
        # Their members too: the new primary replaces each in one
        # transaction once it holds the instance's node; deleted first,
        # the endpoint went missing until then.
        members = [
            (member_node, member.path)
            for node in waiting
            if (member_node := self._nodes.members.get(node.name)) is not None
            and (member := member_node.member) is not None
            and member.path is not None
        ]
        handed = waiting + [node for node, _ in members]
        return waiting, [_owned(path) for _, path in members], handed

    async def _others_listed(self) -> bool:
        """
        Whether another member's agent node is listed now, or that is not
        known (no answer within `LEAVE_LISTING_WAIT`): the nodes handed
        over are left open only for a member that can still take them.
        The view is no help by then: it stopped following at the stop.
        """
        agents, _, own = self._nodes.agent.path.rpartition("/")
        listing = self._zk.get_children(agents)
        after = STOP_CLOSE_TIMEOUT + self._after_close()
        listing.addTimeout(self._bound(LEAVE_LISTING_WAIT, after), self._reactor)
        try:
            children = await listing
        except Exception:
            return True
        return any(child != own for child in children)

    async def _by(self, deadline: float, waited: Deferred[Any]) -> bool:
        """Wait for `waited` until `deadline` at most; whether it succeeded."""
        return await self._ended_by(deadline, waited) == _DONE

    async def _ended_by(self, deadline: float, waited: Deferred[Any]) -> str:
        """
        Wait for `waited` until `deadline` at most: `_DONE` if it succeeded
        by then, `_FAILED` if it failed, `_LATE` if it had not ended. (A
        DeferredList cancelled by its timeout fires with its items'
        failures, not a CancelledError: only the timeout says it was late.)
        """
        remaining = max(0.0, deadline - self._reactor.seconds())
        late = False

        def timed_out(result: object, timeout: float) -> None:
            nonlocal late
            late = True

        try:
            await waited.addTimeout(remaining, self._reactor, onTimeoutCancel=timed_out)
        except Exception:
            return _LATE if late else _FAILED
        return _LATE if late else _DONE

    def _hand_over(self, handoff: SessionHandoff) -> Deferred[None]:
        """
        Wait (bounded) for the node writes and the state file's write in
        flight, and read the file again (another agent sharing the
        state_dir may have overwritten it): the session is left open if
        the file then holds it; if not, the nodes are deleted and the
        session closed, without waiting for a group's takeovers (the
        whole stop stays within `STOP_BUDGET`).
        """
        # Once the node writes ended (half the bound at most), the file says
        # this process's last checks (`SessionHandoff.save_checks`): its
        # ``checked_at`` lags them by up to a quarter of the session
        # timeout, and before the first round is done it names what was
        # checked, which the next process's round counts.
        # The session is left only once the node writes ended too (the
        # whole bound at most): the file's write, soon over, ended the wait
        # while the last status changes were still on their way.
        saved: Deferred[Any] = self._queue.ended()
        saved.addTimeout(STOP_DELETE_TIMEOUT / 2, self._reactor)
        saved.addBoth(lambda _: handoff.save_checks())
        d: Deferred[Any] = DeferredList(
            [self._queue.ended(), saved, handoff.wait_written(), handoff.verify()],
            consumeErrors=True,
        )
        d.addTimeout(STOP_DELETE_TIMEOUT, self._reactor)

        def written(_: object) -> Deferred[None]:
            why = handoff.blocked
            # The stop's own write of its last checks, slow (a loaded disk
            # syncs the file and its directory), still leaves the file
            # holding the session: waited for, it deleted every node.
            if why is None and (not handoff.writing or handoff.only_refreshing):
                self._left_open(handoff)
                return succeed(None)
            self._not_handed_over(why or "the state file's write did not end in time")
            return self._deregister()

        return d.addBoth(written)

    def _left_open(self, handoff: SessionHandoff) -> None:
        # Stopped during start-up, the session claimed is not attached yet.
        session = self._zk.session_id or handoff.session_id
        self._zk.leave_open()
        log.info(
            "leaving ZooKeeper session {session} open for the next process "
            "({path}): the nodes stay until it reattaches, or for the "
            "session timeout ({timeout} s)",
            session="none" if session is None else f"{session:#x}",
            path=handoff.state_file.path,
            timeout=self._zk.session_timeout,
        )

    def _not_handed_over(self, why: str) -> None:
        log.warn(
            "not leaving the ZooKeeper session open for the next process: "
            "{why}; deleting this agent's nodes and closing the session "
            "instead, as without state_dir",
            why=why,
        )


def _following(waited: Deferred[None]) -> Deferred[None]:
    """
    A Deferred that fires once `waited` does: each of a stop's bounded
    waits cancels its own at its bound, and `waited` (and its watches)
    goes on for the next wait.
    """
    follower: Deferred[None] = Deferred()

    def fire(result: object) -> object:
        if not follower.called and not isinstance(result, Failure):
            follower.callback(None)
        return result

    waited.addBoth(fire)
    return follower


def _owned(path: str) -> Node:
    """A node of ours at `path`, for `Takeovers.taken_over` to watch."""
    node = Node(path, lambda: None)
    node.owned = True
    return node

"""The write queue alone, on a Clock, with writes that end as the test says."""

from __future__ import annotations

from kazoo.exceptions import ConnectionLoss
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from sentinel import window, writes
from sentinel.bugs import InternalErrors
from sentinel.discovery import Looking, Member
from sentinel.lookwaits import GATHER, LOG_EVERY
from sentinel.nodes import Node, Nodes
from sentinel.writes import (
    RESYNC_IN_FLIGHT,
    RETRY_DELAY,
    WRITES_IN_FLIGHT,
    WriteQueue,
)
from sentinel.zk import CONNECTED, SUSPENDED


class Running:
    """A publisher that runs (`writes.Lifecycle`)."""

    running = 1
    halted: str | None = None
    superseded = False


class Bridge:
    """
    What the queue asks of `sentinel.zk.ZooKeeper` (its state), and the
    writes: each held until the test ends it, or, while `refusing`, failed
    at once, as the bridge fails a call when not connected or once the
    session changed.
    """

    def __init__(self, clock: Clock) -> None:
        self.state = CONNECTED
        self.session_timeout = 10.0
        # What the bridge says of the answer being taken (`round_trip`).
        self.round_trip: float | None = None
        self.internal_errors = InternalErrors(clock)
        self.refusing = False
        self.held: list[Deferred[None]] = []
        # The path of each write started, in order.
        self.started: list[str] = []

    async def write(self, node: Node) -> None:
        self.started.append(node.path)
        if self.refusing:
            await fail(ConnectionLoss("the ZooKeeper session changed"))
        d: Deferred[None] = Deferred()
        self.held.append(d)
        await d

    def answer(self, round_trip: float | None = None) -> int:
        """
        End every write held now, successfully, ZooKeeper having taken
        `round_trip` to answer them, if known; return how many.
        """
        held, self.held = self.held, []
        self.round_trip = round_trip
        try:
            for d in held:
                d.callback(None)
        finally:
            self.round_trip = None
        return len(held)


class WriteQueueTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.bridge = Bridge(self.clock)
        self.nodes = Nodes(lambda node, event: None, "/sentinel/agents/a1", _data)
        self.queue = WriteQueue(
            self.clock,
            self.bridge,  # type: ignore[arg-type]
            self.nodes,
            Running(),
            write=self.bridge.write,
            held=lambda node, stat: None,
            owned=lambda node: None,
            retrying=lambda: None,
        )

    def instance(self, name: str) -> Node:
        node = self.nodes.new(f"/sentinel/instances/{name}", _data)
        self.nodes.instances[name] = node
        return node

    def member(self, name: str) -> Node:
        member = Member("/discovery/big", "member_", (name, "10.0.0.1", 6379, None))
        node = self.nodes.new("/discovery/big/member_", _data)
        node.member = member
        self.nodes.members[name] = node
        return node

    def test_synchronous_failures_neither_recurse_nor_strand(self) -> None:
        """
        Thousands of nodes waiting for a slot, whose writes then fail at
        once (the bridge fails a call synchronously when not connected or
        once the session changed), are each tried once, without nesting a
        call per node, and none is left waiting: the retry is scheduled,
        and writes them all once the bridge writes again.
        """
        count = 20_000
        self.queue.window.size = WRITES_IN_FLIGHT  # As on a fast link.
        nodes = [self.instance(f"i{i:05d}") for i in range(count)]
        for node in nodes:
            self.queue.mark(node)
        self.assertEqual(len(self.bridge.held), WRITES_IN_FLIGHT)
        self.bridge.refusing = True
        held, self.bridge.held = self.bridge.held, []
        for d in held:
            d.errback(ConnectionLoss("the ZooKeeper session changed"))
        self.assertEqual(len(self.bridge.started), count)
        self.assertEqual(self.queue.in_flight, 0)
        self.assertEqual([n for n in nodes if n.queued or not n.dirty], [])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(self.queue.writes, {"ok": 0, "error": count})

        self.bridge.refusing = False
        self.clock.advance(RETRY_DELAY)
        while self.bridge.answer():
            pass
        self.assertEqual(self.queue.writes, {"ok": count, "error": count})
        self.assertEqual(self.queue.queued, 0)
        self.assertEqual([n for n in nodes if n.written_at is None], [])

    def test_resync_writes_a_few_at_a_time(self) -> None:
        """
        A reconnection's resync writes every node with at most
        `RESYNC_IN_FLIGHT` in flight, whatever the window allows, and
        writes them all; once it is done, the window alone bounds them
        again (300 nodes marked go at once).
        """
        self.queue.window.size = WRITES_IN_FLIGHT  # As on a fast link.
        self.bridge.state = SUSPENDED
        nodes = [self.instance(f"i{i:03d}") for i in range(300)]
        for node in nodes:
            self.queue.mark(node)
        self.assertEqual(self.bridge.started, [])
        self.bridge.state = CONNECTED
        self.queue.resync()
        rounds = []
        while self.bridge.held:
            rounds.append(len(self.bridge.held))
            self.bridge.answer()
        self.assertEqual(max(rounds), RESYNC_IN_FLIGHT)
        self.assertEqual(sum(rounds), 300)
        self.assertEqual(self.queue.queued, 0)
        self.assertFalse(self.queue.resyncing)
        for node in nodes:
            self.queue.mark(node)
        self.assertEqual(len(self.bridge.held), 300)

    def test_resync_cut_short_ends_its_bound(self) -> None:
        """
        A resync cut short by a lost connection (its waiting nodes dropped,
        its writes failed) bounds nothing after: the writes made later
        have the whole window.
        """
        self.queue.window.size = WRITES_IN_FLIGHT
        nodes = [self.instance(f"i{i:03d}") for i in range(100)]
        self.bridge.state = SUSPENDED
        for node in nodes:
            self.queue.mark(node)
        self.bridge.state = CONNECTED
        self.queue.resync()
        self.assertTrue(self.queue.resyncing)
        self.bridge.state = SUSPENDED
        held, self.bridge.held = self.bridge.held, []
        for d in held:
            d.errback(ConnectionLoss("not connected to ZooKeeper"))
        self.assertFalse(self.queue.resyncing)
        self.bridge.state = CONNECTED
        self.clock.advance(RETRY_DELAY)
        self.assertEqual(len(self.bridge.held), 100)

    def test_a_failing_log_call_still_retries(self) -> None:
        """
        A bug in the bookkeeping of a failed write (here, the log call) is
        counted as an internal error, and the node is retried all the
        same; the nodes waiting for a slot are written.
        """
        self.patch(writes, "WRITES_IN_FLIGHT", 1)

        def broken(*args: object, **kwargs: object) -> None:
            raise RuntimeError("a broken log observer")

        self.patch(writes.log, "warn", broken)
        first, second = self.instance("i1"), self.instance("i2")
        self.queue.mark(first)
        self.queue.mark(second)
        self.bridge.held.pop().errback(ConnectionLoss("not connected to ZooKeeper"))
        self.assertEqual(self.bridge.internal_errors.count, 1)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.assertEqual(self.bridge.started, [first.path, second.path])
        self.bridge.answer()
        self.clock.advance(RETRY_DELAY)
        self.bridge.answer()
        self.assertEqual(self.queue.queued, 0)
        self.flushLoggedErrors(RuntimeError)

    def test_members_waiting_for_looks_logged_once_a_burst(self) -> None:
        """
        Members whose writes end waiting for a look at their services
        (`Looking`: ten under ten services, as after ``deleteall
        /sentinel`` in a group) make one line with their count, not a
        ``write failed`` line each; a second burst within `LOG_EVERY` is
        logged at the end of it, with its own count; none is logged after
        a stop. Each is still a failed write, retried.
        """
        self.queue.window.size = WRITES_IN_FLIGHT  # As on a fast link.
        members = [self.member(f"r{i}") for i in range(10)]
        for i, node in enumerate(members):
            assert node.member is not None
            node.member.parent = f"/discovery/r{i}"

        def looking() -> int:
            held, self.bridge.held = self.bridge.held, []
            for i, d in enumerate(held):
                d.errback(Looking(f"/discovery/r{i}", "the previous primary's member"))
            return len(held)

        def lines() -> list[str]:
            return [
                formatEvent(e)
                for e in events
                if e["log_namespace"] == "sentinel.publisher"
            ]

        with capturedLogs() as events:
            for node in members:
                self.queue.mark(node)
            self.assertEqual(looking(), 10)
            self.assertEqual(lines(), [])
            self.assertEqual(self.queue.writes["error"], 10)
            self.clock.advance(GATHER)
        self.assertEqual(len(lines()), 1, lines())
        self.assertIn("10 discovery member(s) under 10 service(s) waited", lines()[0])
        self.assertIn("/discovery/r0, for the previous primary's member", lines()[0])
        with capturedLogs() as events:
            self.assertEqual(looking(), 10)  # Retried, and waiting again.
            self.clock.advance(LOG_EVERY - 0.5)
            self.assertEqual(lines(), [])
            self.clock.advance(0.5)
            self.assertEqual(len(lines()), 1, lines())
            self.assertIn("10 discovery member(s) under 10 service(s)", lines()[0])
            self.assertEqual(looking(), 10)
            self.queue.cancel_retry()
            self.clock.advance(LOG_EVERY)
            self.assertEqual(len(lines()), 1)

    def test_how_late_a_node_is(self) -> None:
        """
        A node is due from its first change not yet written: a change made
        while it is written is due from then, a failed write leaves it due
        from before, and a write that succeeds says when its data was
        built (`sentinel.lateness`).
        """
        node = self.instance("a")
        self.clock.advance(10)
        self.queue.mark(node)
        self.assertTrue(node.writing)
        self.clock.advance(2)
        self.queue.mark(node)
        self.assertEqual(node.due_since, 12)
        self.clock.advance(1)
        self.bridge.answer()
        # Written as it was at 10; the change of 12 is being written.
        self.assertEqual(node.published_at, 10)
        self.assertTrue(node.writing)
        self.bridge.held.pop().errback(ConnectionLoss())
        self.assertEqual((node.published_at, node.due_since), (10, 12))
        self.clock.advance(RETRY_DELAY)
        self.clock.advance(1)
        self.bridge.answer()
        self.assertEqual((node.published_at, node.due_since), (13 + RETRY_DELAY, None))

    def test_agent_and_instance_nodes_before_members(self) -> None:
        """
        The agent node and instance nodes readers miss take the free write
        slots before discovery members waiting longer: after a reconnect,
        readers drop an instance whose node is missing, and a group drops
        an agent whose node is.
        """
        self.patch(writes, "WRITES_IN_FLIGHT", 2)
        first = [self.instance("i1"), self.instance("i2")]
        for node in first:
            self.queue.mark(node)
        members = [self.member(f"m{i}") for i in range(3)]
        for node in members:
            self.queue.mark(node)
        later = [self.nodes.agent, self.instance("i3")]
        for node in later:
            self.queue.mark(node)
        self.bridge.answer()
        self.assertEqual(
            self.bridge.started[2:4], [self.nodes.agent.path, later[1].path]
        )
        while self.bridge.answer():
            pass
        self.assertEqual(len(self.bridge.started), 7)

    def held(self, name: str) -> Node:
        """An instance node this agent has written, and so holds."""
        node = self.instance(name)
        self.queue.mark(node)
        self.bridge.answer()
        node.owned = True  # As `sentinel.writer` does once written.
        return node

    def slots_until_started(self, node: Node) -> int:
        """End the held writes one at a time until `node`'s write starts."""
        slots = 0
        while node.path not in self.bridge.started:
            self.bridge.held.pop(0).callback(None)
            slots += 1
        return slots

    def test_status_change_not_behind_members(self) -> None:
        """
        A rewrite of a node we hold (an instance we hold going down) queued
        behind 5,000 missing nodes and 5,000 members, all slots busy, is
        started within the next `SHARE_EVERY` (5) slots that free up: one
        in five is kept for rewrites while they wait. (It waited for all
        of them: 9,489 slots, seconds at a takeover.)
        """
        held = self.held("held")
        self.queue.window.size = WRITES_IN_FLIGHT  # As on a fast link.
        self.bridge.started.clear()
        for i in range(5_000):
            self.queue.mark(self.instance(f"i{i:04d}"))
        for i in range(5_000):
            self.queue.mark(self.member(f"m{i:04d}"))
        self.assertEqual(len(self.bridge.held), WRITES_IN_FLIGHT)
        self.queue.mark(held)  # Its status changed.
        self.assertLessEqual(self.slots_until_started(held), writes.SHARE_EVERY)

    def test_shares_while_all_wait(self) -> None:
        """
        While missing nodes, rewrites and members all wait, the missing
        nodes take 3 slots in 5, the rewrites 1 and the members 1; once
        the missing nodes are written, the rewrites take 4 in 5.
        """
        self.patch(writes, "WRITES_IN_FLIGHT", 1)
        rewrites = [self.held(f"h{i}") for i in range(40)]
        self.bridge.started.clear()
        first = self.instance("first")
        self.queue.mark(first)  # Takes the only slot.
        missing = [self.instance(f"i{i}") for i in range(30)]
        members = [self.member(f"m{i}") for i in range(20)]
        for node in missing + rewrites + members:
            self.queue.mark(node)
        for _ in range(75):
            self.bridge.answer()
        started = self.bridge.started[1:]

        def kinds(paths: list[str]) -> dict[str, int]:
            return {
                kind: sum(1 for p in paths if p.split("/")[-1][:1] == kind)
                for kind in ("i", "h", "m")
            }

        self.assertEqual(kinds(started[:50]), {"i": 30, "h": 10, "m": 10})
        self.assertEqual(kinds(started[50:75]), {"i": 0, "h": 20, "m": 5})

    def test_moving_members_with_the_missing_nodes(self) -> None:
        """
        A member that replaces the one an instance's previous primary
        holds (`Node.moving`: the node was taken over) waits with the
        nodes readers miss, in their order, not behind the members queued
        before it (one queued before it moved is taken out of their
        queue): that member goes with the previous primary's session, 10 s
        after a leave, while the members queued are refreshes of members
        already there.
        """
        self.patch(writes, "WRITES_IN_FLIGHT", 1)
        first = self.instance("first")
        self.queue.mark(first)  # Takes the only slot.
        refreshes = [self.member(f"r{i}") for i in range(20)]
        for node in refreshes:
            self.queue.mark(node)
        taken = self.instance("taken")
        self.queue.mark(taken)
        moving = self.member("moving")
        moving.path = "/discovery/big/member_moving"
        moving.moving = True
        self.queue.mark(moving)
        later = self.instance("later")
        self.queue.mark(later)
        queued_before = self.member("queued before")
        queued_before.path = "/discovery/big/member_queued_before"
        self.queue.mark(queued_before)
        queued_before.moving = True
        self.queue.hurry(queued_before)
        for _ in range(4):
            self.bridge.answer()
        self.assertEqual(
            self.bridge.started,
            [first.path, taken.path, moving.path, later.path, queued_before.path],
        )

    def test_checked_through_what_zookeeper_has(self) -> None:
        """
        The checks back the nodes up to the last one while every node is
        written; a node marked and not yet acknowledged holds that back to
        when it was marked, or, never written by this process, to `since`;
        a write acknowledged carries what checks found when it started,
        and the last one written says so (`on_caught_up`). The agent's
        node says nothing of an instance, and a node another session holds
        is not this session's: neither holds it back.
        """
        caught_up: list[None] = []
        self.queue.on_caught_up = lambda: caught_up.append(None)
        a, b = self.instance("a"), self.instance("b")
        self.clock.advance(100.0)
        self.queue.mark(a)
        self.queue.mark(self.nodes.agent)
        self.assertEqual(self.queue.checked_through(100.0, 50.0), 50.0)
        self.clock.advance(1.0)
        self.bridge.answer()
        self.assertEqual(caught_up, [None])
        self.assertEqual(self.queue.checked_through(101.0, 50.0), 101.0)
        self.clock.advance(1.0)
        self.queue.mark(a)
        self.queue.mark(self.nodes.agent)
        self.clock.advance(1.0)
        self.assertEqual(self.queue.checked_through(103.0, 50.0), 102.0)
        # Changed again while written (the write started at 102): ZooKeeper
        # lacks it from then on, until the next write.
        self.queue.mark(a)
        self.clock.advance(1.0)
        self.bridge.answer()
        self.assertEqual(self.queue.checked_through(104.0, 50.0), 102.0)
        self.assertEqual(len(caught_up), 1)
        self.bridge.answer()
        self.assertEqual(len(caught_up), 2)
        self.queue.mark(b)
        b.holding = object()  # type: ignore[assignment]
        self.assertEqual(self.queue.checked_through(104.0, 50.0), 104.0)
        self.assertEqual(self.queue.unwritten, {})

    def test_checked_through_after_a_failed_write(self) -> None:
        """
        A write that failed leaves the node lacking since it was marked,
        through the retries, until one is acknowledged.
        """
        a = self.instance("a")
        a.written_at = 5.0  # Written before, by this process.
        self.bridge.refusing = True
        self.clock.advance(10.0)
        self.queue.mark(a)
        for _ in range(5):
            self.clock.advance(RETRY_DELAY)
        self.assertEqual(self.queue.checked_through(15.0, 0.0), 10.0)
        self.bridge.refusing = False
        self.clock.advance(RETRY_DELAY)
        self.bridge.answer()
        self.assertEqual(self.queue.checked_through(16.0, 0.0), 16.0)

    def test_members_not_starved(self) -> None:
        """
        Members waiting for a slot get one in `SHARE_EVERY` while missing
        nodes keep changing (each queues again as it is written): first
        in line, the missing nodes never take every slot.
        """
        self.patch(writes, "WRITES_IN_FLIGHT", 1)
        busy = [self.instance("i1"), self.instance("i2")]
        for node in busy:
            self.queue.mark(node)
        member = self.member("m1")
        self.queue.mark(member)
        for _ in range(2 * writes.SHARE_EVERY):
            for node in busy:
                node.dirty = True  # Changed meanwhile: missing still.
            self.bridge.answer()
        self.assertIn(member.path, self.bridge.started)
        self.assertLessEqual(self.bridge.started.index(member.path), writes.SHARE_EVERY)

    def test_by_kind(self) -> None:
        """
        `by_kind` (/debug/stats) counts each node waiting for a slot and
        each being written by what its write is: a takeover (a node we are
        primary of and do not hold yet), another node readers miss, an
        opinion, a rewrite of a node we hold, a member.
        """
        self.patch(writes, "WRITES_IN_FLIGHT", 1)
        taken = self.instance("i1")
        taken.takeover = True
        held = self.instance("i2")
        held.owned = True
        new = self.instance("i3")
        opinion = self.nodes.new("/sentinel/opinions/i4/a1", _data)
        self.nodes.opinions["i4"] = opinion
        for node in (taken, held, new, opinion, self.member("m1")):
            self.queue.mark(node)
        self.assertEqual(
            self.queue.by_kind(),
            {
                "waiting": {
                    "takeovers": 0,
                    "missing": 1,
                    "opinions": 1,
                    "rewrites": 1,
                    "members": 1,
                },
                "writing": {
                    "takeovers": 1,
                    "missing": 0,
                    "opinions": 0,
                    "rewrites": 0,
                    "members": 0,
                },
            },
        )


class LinkBridge(Bridge):
    """
    A bridge over a link that carries one write each `per_write` seconds,
    in order: each write is answered once the writes before it and itself
    have gone through (a narrow link, and ZooKeeper answering at once).
    """

    def __init__(self, clock: Clock, per_write: float) -> None:
        super().__init__(clock)
        self.clock = clock
        self.per_write = per_write
        self.free_at = 0.0
        # The longest a write sent now would wait to go through: what a
        # ping sent at the same time waits.
        self.longest_queue = 0.0

    async def write(self, node: Node) -> None:
        self.started.append(node.path)
        now = self.clock.seconds()
        self.free_at = max(now, self.free_at) + self.per_write
        self.longest_queue = max(self.longest_queue, self.free_at - now)
        d: Deferred[None] = Deferred()
        self.clock.callLater(self.free_at - now, d.callback, None)
        await d


class WindowTests(SynchronousTestCase):
    """How many writes the queue keeps in flight (`sentinel.window`)."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000.0)

    def queue(self, bridge: Bridge) -> tuple[WriteQueue, Nodes]:
        nodes = Nodes(lambda node, event: None, "/sentinel/agents/a1", _data)
        queue = WriteQueue(
            self.clock,
            bridge,  # type: ignore[arg-type]
            nodes,
            Running(),
            write=bridge.write,
            held=lambda node, stat: None,
            owned=lambda node: None,
            retrying=lambda: None,
        )
        return queue, nodes

    def mark(self, queue: WriteQueue, nodes: Nodes, count: int) -> None:
        for i in range(count):
            node = nodes.new(f"/sentinel/instances/r{i:04d}", _data)
            nodes.instances[node.path] = node
            queue.mark(node)

    def test_narrow_link_answers_a_ping_in_time(self) -> None:
        """
        Over a link that carries 8.5 writes a second (24 kbit/s, 350
        bytes a write), 135 writes marked at once (150 instances going
        down) never queue on the link for as long as a ping is given
        (a third of the 6 s session timeout, less kazoo's jitter of up to
        0.4 s), so that a ping sent at any time is answered in time (sent
        all at once, the last waited 15.75 s and the session was lost).
        They are all written within 20 s: the link is kept busy.
        """
        bridge = LinkBridge(self.clock, 350 / 3000)
        bridge.session_timeout = 6.0
        queue, nodes = self.queue(bridge)
        self.mark(queue, nodes, 135)
        for _ in range(200):
            self.clock.advance(0.1)
        self.assertEqual(queue.writes["ok"], 135)
        self.assertLess(bridge.longest_queue, 6.0 / 3 - 0.4)

    def test_slow_answers_shrink_the_window(self) -> None:
        """
        Writes answered after 4 s with a 10 s session (more than its
        sixth, 1.67 s) shrink the window in proportion, once for all the
        writes answered together: the next writes are 8 * 1.67 / 4 = 3.
        """
        bridge = Bridge(self.clock)
        queue, nodes = self.queue(bridge)
        self.mark(queue, nodes, 100)
        self.assertEqual(len(bridge.held), window.INITIAL)
        self.clock.advance(4.0)
        bridge.answer()
        self.assertEqual(len(bridge.held), 3)

    def test_answers_taken_late_by_a_busy_agent_keep_the_window(self) -> None:
        """
        Writes that ZooKeeper answered in 0.01 s, taken by the agent 4 s
        after they started (its own CPU busy, or starved by other work
        on the machine), shrink nothing: they grow the window as fast
        answers do. Taken for a narrow link, a survivor's busy seconds
        after a member's crash shrank it from 149 to 1, and the crashed
        member's nodes were made again a few at a time, over 20 s. A
        link that took the 4 s itself still shrinks it (8 * 1.67 / 4).
        """
        for round_trip, then in ((0.01, 2 * window.INITIAL), (4.0, 3)):
            bridge = Bridge(self.clock)
            queue, nodes = self.queue(bridge)
            self.mark(queue, nodes, 100)
            self.assertEqual(len(bridge.held), window.INITIAL)
            self.clock.advance(4.0)
            bridge.answer(round_trip)
            self.assertEqual(len(bridge.held), then)

    def test_fast_answers_grow_the_window(self) -> None:
        """
        Writes answered at once while others wait double the window each
        round trip, up to `WRITES_IN_FLIGHT`: a fast link is used as
        before, within a few round trips.
        """
        bridge = Bridge(self.clock)
        queue, nodes = self.queue(bridge)
        self.mark(queue, nodes, 3000)
        rounds = []
        while bridge.held:
            rounds.append(len(bridge.held))
            bridge.answer()
        self.assertEqual(rounds[:7], [8, 16, 32, 64, 128, 256, 512])
        self.assertEqual(max(rounds), WRITES_IN_FLIGHT)
        self.assertEqual(queue.writes["ok"], 3000)

    def test_burst_after_a_pause_at_the_pace_of_a_lone_write(self) -> None:
        """
        A window grown on a fast link is cut, at the next burst after a
        pause, to what a write answered alone says the link carries in a
        sixth of the session timeout: the link narrowed while nothing was
        written (a lone write took 0.5 s: 1.67 / 0.5 = 3 writes).
        """
        bridge = Bridge(self.clock)
        queue, nodes = self.queue(bridge)
        queue.window.size = WRITES_IN_FLIGHT
        lone = nodes.new("/sentinel/instances/lone", _data)
        queue.mark(lone)
        self.clock.advance(0.5)
        bridge.answer()
        self.mark(queue, nodes, 300)
        self.assertEqual(len(bridge.held), 3)


def _data() -> bytes:
    return b"{}"

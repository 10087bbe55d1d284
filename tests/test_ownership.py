"""
Nodes held by another session: the rules that tell a predecessor on its
way out from a conflict, and the publisher living by them against an
in-memory ZooKeeper on a Clock (squatters, twins, crashed predecessors,
watches lost, ZooKeeper requests and log lines bounded).
"""

from __future__ import annotations

from kazoo.protocol.states import ZnodeStat
from twisted.logger import LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from sentinel.health import Transition
from sentinel.holders import RECHECK_MAX, RECHECK_MIN
from sentinel.instance import InstanceState
from sentinel.ownership import (
    CONFLICT_MARGIN,
    LIVE,
    PERSISTENT,
    SILENT,
    SILENT_LIMIT,
    Holding,
    OwnershipRules,
    held_by,
)
from tests.test_publisher import (
    AGENT_PATH,
    DOWN,
    HEARTBEAT,
    OTHER_SESSION,
    START,
    UP,
    PublisherHarness,
    path,
    published,
)

SESSION_TIMEOUT = 10.0
LIVE_AFTER = SESSION_TIMEOUT + CONFLICT_MARGIN
SINCE = "2023-11-14T22:13:20Z"


def stat(session: int, mzxid: int = 7, ctime: float = START) -> ZnodeStat:
    """A node's stat as ZooKeeper gives it (times in milliseconds)."""
    return ZnodeStat(5, mzxid, int(ctime * 1000), 0, 0, 0, 0, session, 2, 0, 0)


class RulesTests(SynchronousTestCase):
    """`OwnershipRules` and `held_by`, with our session timeout of 10 s."""

    rules = OwnershipRules(SESSION_TIMEOUT)

    def test_persistent_node_is_a_conflict_at_once(self) -> None:
        """A persistent node (ephemeralOwner 0) never expires: a conflict at once."""
        holding = held_by(None, stat(0), START)
        self.assertEqual(self.rules.verdict(holding, START), PERSISTENT)
        self.assertIsNone(
            self.rules.next_decision(Holding(0, 0, 0, 0, False, PERSISTENT), START)
        )

    def test_crashed_predecessor_never_a_conflict_before_the_limit(self) -> None:
        """
        A session that never writes (a crashed process, whose session
        timeout may be much longer than ours) is no conflict until the
        silent limit, however long past our session timeout.
        """
        holding = held_by(None, stat(OTHER_SESSION), START)
        for held in (0.0, LIVE_AFTER, 60.0, SILENT_LIMIT - 0.1):
            holding = held_by(holding, stat(OTHER_SESSION), START + held)
            self.assertIsNone(self.rules.verdict(holding, START + held), held)
        self.assertEqual(self.rules.verdict(holding, START + SILENT_LIMIT), SILENT)

    def test_writer_is_live_after_session_timeout_and_margin(self) -> None:
        """
        A session seen writing (its mzxid moved) is a live conflict once it
        has held the node our session timeout plus the margin, not before.
        """
        holding = held_by(None, stat(OTHER_SESSION, mzxid=7), START)
        holding = held_by(holding, stat(OTHER_SESSION, mzxid=9), START + 1)
        self.assertTrue(holding.written)
        self.assertIsNone(self.rules.verdict(holding, START + LIVE_AFTER - 0.1))
        self.assertEqual(self.rules.verdict(holding, START + LIVE_AFTER), LIVE)

    def test_another_session_starts_over(self) -> None:
        """Another session holding the node is a new holding, first seen now."""
        holding = held_by(None, stat(OTHER_SESSION, mzxid=7), START)
        holding = held_by(holding, stat(OTHER_SESSION, mzxid=8), START + 5)
        other = held_by(holding, stat(OTHER_SESSION + 1, mzxid=9), START + 20)
        self.assertIsNot(other, holding)
        self.assertEqual((other.first_seen, other.written), (START + 20, False))

    def test_next_decision(self) -> None:
        """The verdict can change on its own at the live and silent thresholds."""
        holding = held_by(None, stat(OTHER_SESSION), START)
        self.assertEqual(self.rules.next_decision(holding, START + 3), LIVE_AFTER - 3)
        self.assertEqual(
            self.rules.next_decision(holding, START + LIVE_AFTER),
            SILENT_LIMIT - LIVE_AFTER,
        )
        self.assertIsNone(self.rules.next_decision(holding, START + SILENT_LIMIT))

    def test_silent_limit_grows_with_long_sessions(self) -> None:
        """With a long session timeout, the silent limit is four of them."""
        self.assertEqual(OwnershipRules(60.0).silent_after, 240.0)
        self.assertEqual(OwnershipRules(2.0).silent_after, SILENT_LIMIT)

    def test_describe(self) -> None:
        """The reason names the holder, what it is and since when, in one line."""
        rules = self.rules
        persistent = held_by(None, stat(0), START)
        self.assertEqual(
            rules.describe(persistent), f"held by a persistent node since {SINCE}"
        )
        holding = held_by(None, stat(OTHER_SESSION), START)
        self.assertEqual(
            rules.describe(holding),
            f"held by session 0xdead since {SINCE}, waiting for it to end",
        )
        holding.conflict = LIVE
        self.assertEqual(
            rules.describe(holding),
            f"held by live session 0xdead (writing to it) since {SINCE}",
        )
        holding.conflict = SILENT
        self.assertEqual(
            rules.describe(holding),
            f"held by session 0xdead since {SINCE}, not expired after 120 s",
        )


class ConflictTests(PublisherHarness):
    """The publisher facing nodes held by other sessions."""

    def setUp(self) -> None:
        super().setUp()
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def lines(self, level: LogLevel) -> list[str]:
        """The publisher's log lines at `level`, formatted."""
        return [
            formatEvent(e)
            for e in self.events
            if e["log_level"] == level
            and e.get("log_namespace") == "sentinel.publisher"
        ]

    def calls_on(self, node: str) -> int:
        """ZooKeeper calls made about `node` so far."""
        return sum(n for (_, p), n in self.zk.calls_by_path.items() if p == node)

    def tick(self, seconds: int, *states: InstanceState) -> None:
        """Let `seconds` go by, a check of each state every second."""
        for _ in range(seconds):
            self.clock.advance(1)
            for state in states:
                self.check(state, UP)

    def wait(self, seconds: float) -> None:
        """Let `seconds` go by in steps of a second, as a reactor would."""
        for _ in range(int(seconds)):
            self.clock.advance(1)

    def next_question_in(self) -> float:
        """Seconds until the publisher's next scheduled re-check."""
        now = self.clock.seconds()
        return min(
            call.getTime() - now
            for call in self.clock.getDelayedCalls()
            if getattr(call.func, "__name__", "") == "_recheck_now"
        )

    def check_flapping(self, state: InstanceState, i: int) -> Transition | None:
        """Down for 5 s, up for 5 s: a change to write every 5 s."""
        return self.check(state, UP if i // 5 % 2 else DOWN)

    # Squatters

    def test_persistent_squatter(self) -> None:
        """
        A persistent node where an instance's node goes is a conflict at
        once: listed with its reason, named by /healthz's reason, logged
        once at error, never overwritten, asked about a few times a minute
        at most however often the instance changes, while the other nodes
        are written; once deleted it is ours within a second.
        """
        squatted = path("redis-a")
        self.zk.put(squatted, b'{"status": "up"}')
        self.start()
        a, b = self.instance("redis-a"), self.instance("redis-b")
        self.check(a, DOWN)
        self.check(b, UP)
        reason = f"held by a persistent node since {SINCE}"
        self.assertEqual(self.publisher.conflicts, {squatted: reason})
        self.assertEqual(
            self.publisher.unhealthy_reason(),
            f"zookeeper conflict: {squatted} {reason}",
        )
        [error] = self.lines(LogLevel.error)
        self.assertIn(f"ZooKeeper conflict: {squatted} {reason}", error)
        self.assertEqual(self.zk.document(path("redis-b")), published(b))

        first_minute = None
        for i in range(600):
            self.clock.advance(1)
            self.check_flapping(a, i)
            self.check(b, UP)
            if i == 59:
                first_minute = self.calls_on(squatted)
                last = first_minute
            if i % 60 == 59 and i > 59:
                # Backed off to one question per RECHECK_MAX.
                self.assertLessEqual(self.calls_on(squatted) - last, 60 / RECHECK_MAX)
                last = self.calls_on(squatted)
        # A create and an exists at once, then 1, 3, 7, 15, 31 s later.
        self.assertEqual(first_minute, 7)
        self.assertLessEqual(self.calls_on(squatted), 7 + 9 * 60 / RECHECK_MAX)
        self.assertEqual(self.zk.nodes[squatted].data, b'{"status": "up"}')
        self.assertEqual(len(self.lines(LogLevel.error)), 1)
        self.assertEqual(self.lines(LogLevel.warn), [])
        self.assertEqual(
            self.zk.document(AGENT_PATH)["heartbeat_at"], self.clock.seconds()
        )

        self.zk.remove(squatted)
        self.clock.advance(RECHECK_MIN)
        self.assertEqual(self.zk.owner(squatted), self.zk.session_id)
        self.assertEqual(self.zk.document(squatted), published(a))
        self.assertEqual(self.publisher.conflicts, {})
        self.assertIsNone(self.publisher.unhealthy_reason())
        [over] = [line for line in self.lines(LogLevel.info) if "conflict over" in line]
        self.assertIn(squatted, over)
        self.assertEqual(self.publisher.conflicts_started, 1)

    def test_many_squatters_named_by_a_sample(self) -> None:
        """
        30 persistent squatters: /healthz's conflict names the first with
        its reason, then the next ten by path and how many more, not the
        first alone and a count.
        """
        names = [f"redis-{i:02d}" for i in range(30)]
        for name in names:
            self.zk.put(path(name), b"{}")
        self.start()
        for name in names:
            self.check(self.instance(name), DOWN)
        first, *rest = list(self.publisher.conflicts)
        self.assertEqual(len(rest), 29)
        reason = self.publisher.conflicts[first]
        self.assertEqual(
            self.publisher.unhealthy_reason(),
            f"zookeeper conflict: {first} {reason} (and 29 more:"
            f" {', '.join(rest[:10])} and 19 more)",
        )

    def test_conflict_does_not_hide_a_waiting_node(self) -> None:
        """
        A persistent squatter on one node and a foreign session on another:
        /healthz names both, the conflict and the node that waits.
        """
        squatted, held = path("redis-a"), path("redis-b")
        self.zk.put(squatted, b"{}")
        self.zk.put(held, b"{}", owner=OTHER_SESSION)
        self.start()
        self.check(self.instance("redis-a"), UP)
        self.check(self.instance("redis-b"), UP)
        reason = self.publisher.unhealthy_reason() or ""
        self.assertIn(f"zookeeper conflict: {squatted} held by a persistent", reason)
        self.assertIn(f"zookeeper: {held} held by session 0xdead", reason)

    def test_deleted_squatter_taken_over_at_once(self) -> None:
        """
        A squatter deleted long after the last question is taken over in
        the same reactor turn as the watch's news.
        """
        squatted = path("redis-a")
        self.zk.put(squatted, b"{}")
        self.start()
        a = self.instance("redis-a")
        self.check(a, UP)
        self.wait(5)
        self.assertGreater(self.next_question_in(), 1)
        self.zk.remove(squatted)
        self.clock.advance(0)
        self.assertEqual(self.zk.owner(squatted), self.zk.session_id)

    def test_busy_squatter_costs_one_question_a_second(self) -> None:
        """
        A squatter that rewrites its node every 10 ms makes the watch fire
        each time it is set: it is set again at most once a second, and
        nothing more is logged.
        """
        squatted = path("redis-a")
        self.zk.put(squatted, b"{}")
        self.start()
        self.check(self.instance("redis-a"), UP)
        before = self.calls_on(squatted)
        for _ in range(6000):
            self.zk.put(squatted, b"{}")
            self.clock.advance(0.01)
        self.assertLessEqual(self.calls_on(squatted) - before, 61 / RECHECK_MIN)
        self.assertEqual(len(self.lines(LogLevel.error)), 1)
        self.assertEqual(self.lines(LogLevel.warn), [])

    def test_silent_holder_is_a_conflict_after_the_limit(self) -> None:
        """
        An ephemeral node held by a session that never writes and never
        ends is a conflict after the silent limit, not before; on the agent
        node too, which does not make it a twin.
        """
        self.zk.put(AGENT_PATH, b"{}", owner=OTHER_SESSION)
        self.zk.put(path("redis-a"), b"{}", owner=OTHER_SESSION)
        self.start()
        a = self.instance("redis-a")
        self.check(a, UP)
        self.tick(int(SILENT_LIMIT) - 1, a)
        self.assertEqual(self.publisher.conflicts, {})
        self.assertEqual(self.lines(LogLevel.error), [])
        self.tick(1, a)
        self.assertEqual(set(self.publisher.conflicts), {AGENT_PATH, path("redis-a")})
        self.assertIn("not expired after 120 s", self.publisher.conflicts[AGENT_PATH])
        self.assertEqual(len(self.lines(LogLevel.error)), 2)
        self.assertEqual(self.twins, [])
        self.assertIsNone(self.publisher.halted)

    # Twins

    def test_live_twin_on_an_instance_node(self) -> None:
        """
        Another live agent publishing the same instance name: waiting at
        first (not a conflict, /healthz says its status is stale), a
        conflict once it has held the node our session timeout plus the
        margin and written it meanwhile, logged once; this agent goes on.
        When its session ends, the node is ours within a second.
        """
        node = path("redis-a")
        self.zk.put(node, b"{}", owner=OTHER_SESSION)
        self.start()
        a = self.instance("redis-a")
        self.check(a, UP)
        reason = self.publisher.unhealthy_reason() or ""
        self.assertIn(f"zookeeper: {node} held by session 0xdead", reason)
        self.assertIn("waiting for it to end: its published status is stale", reason)
        declared = None
        for second in range(1, 121):
            if second % 10 == 0:
                self.zk.put(node, b"{}", owner=OTHER_SESSION)
            self.tick(1, a)
            if declared is None and self.publisher.conflicts:
                declared = second
        self.assertEqual(declared, LIVE_AFTER)
        self.assertEqual(
            self.publisher.conflicts,
            {node: f"held by live session 0xdead (writing to it) since {SINCE}"},
        )
        self.assertEqual(len(self.lines(LogLevel.error)), 1)
        self.assertEqual((self.twins, self.publisher.halted), ([], None))
        self.assertEqual(self.zk.owner(AGENT_PATH), self.zk.session_id)
        # A question per write of the holder, and per back-off, at most.
        self.assertLessEqual(self.calls_on(node), 2 + 12 + 6)

        self.zk.end_session(OTHER_SESSION)
        self.clock.advance(RECHECK_MIN)
        self.assertEqual(self.zk.owner(node), self.zk.session_id)
        self.assertIsNone(self.publisher.unhealthy_reason())

    def test_live_twin_on_the_agent_node(self) -> None:
        """
        Another live process with this agent's id, heartbeating its agent
        node every 10 s: within our session timeout plus the margin plus a
        heartbeat, the publisher stops writing anything, logs one error
        line naming the node, tells `on_twin` once, and sends nothing more;
        its instance nodes are never written.
        """
        self.zk.put(AGENT_PATH, b"{}", owner=OTHER_SESSION)
        self.zk.put(path("redis-a"), b"{}", owner=OTHER_SESSION)
        self.start()
        a = self.instance("redis-a")
        self.check(a, UP)
        second = 0
        while not self.twins and second < 60:
            second += 1
            if second % HEARTBEAT == 3:
                self.zk.put(AGENT_PATH, b"{}", owner=OTHER_SESSION)
            self.tick(1, a)
        self.assertLessEqual(second, LIVE_AFTER + HEARTBEAT)
        self.assertGreaterEqual(second, LIVE_AFTER)
        [line] = self.twins
        self.assertEqual(
            line,
            f"agent id 'agent-1' is in use by another live agent: {AGENT_PATH} "
            f"held by live session 0xdead (writing to it) since {SINCE}",
        )
        [error] = self.lines(LogLevel.error)
        self.assertIn(f"ZooKeeper conflict: {line}; stopping", error)
        self.assertEqual(
            self.publisher.unhealthy_reason(), f"zookeeper conflict: {line}"
        )

        calls = self.total_calls()
        b = self.instance("redis-b")
        for i in range(120):
            self.zk.put(AGENT_PATH, b"{}", owner=OTHER_SESSION)
            self.clock.advance(1)
            self.check_flapping(a, i)
            self.check(b, UP)
        self.assertEqual(self.total_calls(), calls)
        self.assertEqual(len(self.twins), 1)
        self.assertEqual(len(self.lines(LogLevel.error)), 1)
        self.assertEqual(self.zk.calls_by_path["set", path("redis-a")], 0)
        self.assertNotIn(path("redis-b"), self.zk.nodes)

    def test_twin_known_by_its_instance_writes(self) -> None:
        """
        A session that holds this agent's node and is seen writing one of
        its instance nodes is a live twin too, even before it heartbeats.
        """
        self.zk.put(AGENT_PATH, b"{}", owner=OTHER_SESSION)
        self.zk.put(path("redis-a"), b"{}", owner=OTHER_SESSION)
        self.start()
        a = self.instance("redis-a")
        self.check(a, UP)
        self.tick(5, a)
        self.zk.put(path("redis-a"), b'{"status": "down"}', owner=OTHER_SESSION)
        self.tick(int(LIVE_AFTER) - 5, a)
        self.assertEqual(len(self.twins), 1)
        self.assertIn(AGENT_PATH, self.twins[0])
        self.assertEqual(len(self.lines(LogLevel.error)), 1)

    def test_stopping_after_a_twin_deletes_only_our_nodes(self) -> None:
        """
        Stopped after finding a twin on its agent node, the publisher
        deletes the instance nodes it holds, and leaves the twin's node.
        """
        self.zk.put(AGENT_PATH, b"{}", owner=OTHER_SESSION)
        self.start()
        a = self.instance("redis-a")
        self.check(a, UP)
        self.assertEqual(self.zk.owner(path("redis-a")), self.zk.session_id)
        for second in range(1, 30):
            if second % 5 == 0:
                self.zk.put(AGENT_PATH, b"{}", owner=OTHER_SESSION)
            self.tick(1, a)
        self.assertEqual(len(self.twins), 1)
        self.successResultOf(self.publisher.stopService())
        self.assertNotIn(path("redis-a"), self.zk.nodes)
        self.assertEqual(self.zk.owner(AGENT_PATH), OTHER_SESSION)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    # Predecessors

    def test_crash_then_restart(self) -> None:
        """
        A crashed predecessor's nodes (its session lives 40 s, much longer
        than ours, and it never writes) are waited for, never called a
        conflict, asked about a few times only, and each is ours within a
        second of its session's end.
        """
        nodes = [AGENT_PATH, path("redis-a"), path("redis-b")]
        for node in nodes:
            self.zk.put(node, b"{}", owner=OTHER_SESSION)
        self.start()
        a, b = self.instance("redis-a"), self.instance("redis-b")
        for i in range(40):
            self.check_flapping(a, i)
            self.check(b, UP)
            self.assertEqual(self.publisher.conflicts, {})
            reason = self.publisher.unhealthy_reason() or ""
            self.assertNotIn("conflict", reason)
            self.assertIn("waiting for it to end", reason)
            self.clock.advance(1)
        self.assertEqual(self.lines(LogLevel.error), [])
        self.assertEqual(self.lines(LogLevel.warn), [])
        self.assertEqual(self.twins, [])
        for node in nodes:
            # A create, then a question at first sight and after 1, 3, 7,
            # 15 (the live threshold), 23 and 39 s.
            self.assertLessEqual(self.calls_on(node), 8, node)

        self.zk.end_session(OTHER_SESSION)
        self.clock.advance(RECHECK_MIN)
        for node in nodes:
            self.assertEqual(self.zk.owner(node), self.zk.session_id, node)
        self.assertEqual(self.zk.document(path("redis-a")), published(a))
        self.assertEqual(
            self.zk.document(AGENT_PATH)["instances"], ["redis-a", "redis-b"]
        )
        self.assertIsNone(self.publisher.unhealthy_reason())
        took = [
            line for line in self.lines(LogLevel.info) if "over from session" in line
        ]
        self.assertEqual(len(took), 3)

    def test_holder_replaced(self) -> None:
        """
        When the squatter goes and another session takes the node first,
        the conflict is over and the wait for the new holder starts afresh.
        """
        node = path("redis-a")
        self.zk.put(node, b"{}")
        self.start()
        self.check(self.instance("redis-a"), UP)
        self.assertEqual(len(self.publisher.conflicts), 1)
        self.zk.remove(node)
        self.zk.put(node, b"{}", owner=OTHER_SESSION)
        self.clock.advance(RECHECK_MIN)
        self.assertEqual(self.publisher.conflicts, {})
        self.assertEqual(self.publisher.waiting_takeover, [node])
        [over] = [line for line in self.lines(LogLevel.info) if "conflict over" in line]
        self.assertIn("now held by session 0xdead", over)

    def test_removed_instance_ends_its_conflict(self) -> None:
        """
        An instance removed while its node is squatted ends the conflict;
        the squatter's node is neither deleted nor asked about again.
        """
        node = path("redis-a")
        self.zk.put(node, b"{}")
        self.start()
        self.check(self.instance("redis-a"), UP)
        self.unwatch("redis-a")
        self.assertEqual(self.publisher.conflicts, {})
        self.assertEqual(self.publisher.waiting_takeover, [])
        self.assertIsNone(self.publisher.unhealthy_reason())
        calls = self.calls_on(node)
        self.clock.advance(RECHECK_MAX * 4)
        self.assertEqual(self.calls_on(node), calls)
        self.assertEqual(self.zk.calls_by_path["delete", node], 0)
        self.assertIn(node, self.zk.nodes)

    # Watches lost

    def test_watch_lost_over_reconnect(self) -> None:
        """
        A dropped connection loses the watches: the reconnection asks about
        the node again (watching it again) and keeps what it knew, so the
        conflict is not logged twice and the deletion is still noticed at
        once.
        """
        node = path("redis-a")
        self.zk.put(node, b"{}")
        self.start()
        self.check(self.instance("redis-a"), UP)
        self.wait(5)
        self.zk.suspend()
        self.assertEqual(self.zk.watches, {})
        self.wait(3)
        self.zk.connect()
        self.assertIn(node, self.zk.watches)
        self.assertEqual(len(self.lines(LogLevel.error)), 1)
        self.wait(5)
        self.assertGreater(self.next_question_in(), 1)
        self.zk.remove(node)
        self.clock.advance(0)
        self.assertEqual(self.zk.owner(node), self.zk.session_id)

    def test_watch_lost_silently(self) -> None:
        """
        A watch lost without a word: the deletion is noticed by the next
        re-check, within RECHECK_MAX.
        """
        node = path("redis-a")
        self.zk.put(node, b"{}")
        self.start()
        self.check(self.instance("redis-a"), UP)
        self.wait(122)
        self.assertGreater(self.next_question_in(), RECHECK_MIN)
        self.zk.lose_watches()
        self.zk.remove(node)
        self.clock.advance(RECHECK_MIN)
        self.assertNotIn(node, self.zk.nodes)
        self.clock.advance(RECHECK_MAX - RECHECK_MIN)
        self.assertEqual(self.zk.owner(node), self.zk.session_id)

    def test_clock_survives_reconnect(self) -> None:
        """
        A reconnection does not restart the wait for a writing holder: it
        is still a conflict our session timeout plus the margin after it
        was first seen.
        """
        node = path("redis-a")
        self.zk.put(node, b"{}", owner=OTHER_SESSION)
        self.start()
        a = self.instance("redis-a")
        self.check(a, UP)
        self.tick(4, a)
        self.zk.put(node, b"{}", owner=OTHER_SESSION)
        self.tick(4, a)
        self.zk.suspend()
        self.zk.connect()
        self.tick(int(LIVE_AFTER) - 8, a)
        self.assertEqual(list(self.publisher.conflicts), [node])

    def test_deletion_while_asking(self) -> None:
        """
        A watch that fires while a question about the node is in flight is
        not lost: when the answer says the node is still held (recreated
        meanwhile), it is asked about again within RECHECK_MIN, not after
        the back-off.
        """
        node = path("redis-a")
        self.zk.put(node, b"{}", owner=OTHER_SESSION)
        self.start()
        self.check(self.instance("redis-a"), UP)
        self.wait(60)
        self.zk.hang("exists")
        self.wait(self.next_question_in())
        # The question (the agent node's write watch may hang beside it).
        self.assertEqual([c.path for c in self.zk.held if c.path == node], [node])
        # The watch set by the previous question fires now.
        self.zk.remove(node)
        self.zk.put(node, b"{}", owner=OTHER_SESSION)
        self.zk.unhang()
        self.zk.release()
        self.assertEqual(self.publisher.waiting_takeover, [node])
        self.assertLessEqual(self.next_question_in(), RECHECK_MIN)

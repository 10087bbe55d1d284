"""
`/healthz` between a new session's connection and the end of the first
round of writes after it: an earlier session's nodes may publish what is
no longer true until each of ours is known written again (or held
elsewhere, which the holders report), so the publisher's health says so
meanwhile. Back on the same session, the nodes are still ours.
"""

from __future__ import annotations

from kazoo.exceptions import ConnectionLoss
from twisted.logger import LogEvent, formatEvent, globalLogPublisher

from sentinel.httpd import http_service
from sentinel.metrics import LoadedAtStart
from sentinel.unconfirmed import NAMED
from sentinel.writes import RESYNC_IN_FLIGHT, WRITES_IN_FLIGHT
from tests.fakes import make_monitor
from tests.httptest import agent_get
from tests.test_publisher import AGENT, DOWN, HEARTBEAT, UP, PublisherHarness, path


class ResyncHealthTests(PublisherHarness):
    """The publisher's health while its nodes are written again."""

    def test_unhealthy_until_nodes_written_again(self) -> None:
        """
        After a new session connects, /healthz fails while the instance
        nodes written before are not written again, and passes once they
        are.
        """
        self.start()
        for name in ("a", "b"):
            self.check(self.instance(name), UP)
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.clock.advance(1.0)
        self.zk.expire()
        self.zk.hold_answers("create", "exists", "get", "set")
        self.zk.connect()
        reason = self.publisher.unhealthy_reason() or ""
        self.assertIn("2 instance node(s) not written again since connecting", reason)
        while self.zk.release():
            pass
        self.assertEqual(self.zk.owner(path("a")), self.zk.session_id)
        self.assertIsNone(self.publisher.unhealthy_reason())

    def test_a_write_failed_before_the_new_session_is_unconfirmed(self) -> None:
        """
        Back from a pause past its session, the agent's first write goes
        on the dead connection and fails: that node, failing for less than
        `FAILING_AFTER` (so not named as failing yet), is as unconfirmed as
        the others until written again. Before, it was left out: with every
        node's write so failed, /healthz said 200 while the nodes were
        missing (20--60 ms with 50 instances and a real agent, until the
        new session's writes were answered: BENCHMARKS.rst).
        """
        self.start()
        a, b = self.instance("a"), self.instance("b")
        for state in (a, b):
            self.check(state, UP)
        self.clock.advance(1.0)
        self.zk.fail_next("set", ConnectionLoss(), times=2)
        for state in (a, b):
            self.check(state, DOWN)
        self.assertEqual(len(self.publisher._queue.failing), 2)
        self.zk.expire()
        self.zk.hold_answers("create", "exists", "get", "set")
        self.zk.connect()
        reason = self.publisher.unhealthy_reason() or ""
        self.assertIn("2 instance node(s) not written again since connecting", reason)
        while self.zk.release():
            pass
        self.assertEqual(self.zk.owner(path("a")), self.zk.session_id)
        self.assertIsNone(self.publisher.unhealthy_reason())

    def test_first_publication_not_unhealthy(self) -> None:
        """Nodes never written yet (a start) are no reason: nothing was published."""
        self.start()
        self.zk.hold_answers("create", "set")
        self.check(self.instance("a"), UP)
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.zk.release()

    def test_same_session_back_not_unhealthy(self) -> None:
        """
        Back on the same session after a short disconnection (a leader
        election), the nodes are still ours: /healthz does not fail while
        the resync writes them again.
        """
        self.start()
        for name in ("a", "b"):
            self.check(self.instance(name), UP)
        session = self.zk.session_id
        self.clock.advance(1.0)
        self.zk.suspend()
        self.zk.hold_answers("create", "exists", "get", "set")
        self.zk.connect()
        self.assertEqual(self.zk.session_id, session)
        self.assertIsNone(self.publisher.unhealthy_reason())
        while self.zk.release():
            pass


class ResyncPaceTests(PublisherHarness):
    """How many writes a resync keeps in flight (`sentinel.writes`)."""

    def resync_rounds(self, same_session: bool) -> list[int]:
        """
        The writes answered at each round trip of the resync of 100 up
        instance nodes, back on the same session or on a new one, with a
        window grown as on a fast link.
        """
        self.start()
        for i in range(100):
            self.check(self.instance(f"i{i:03d}"), UP)
        self.publisher._queue.window.size = WRITES_IN_FLIGHT
        self.clock.advance(1.0)
        if same_session:
            self.zk.suspend()
        else:
            self.zk.expire()
        self.zk.hold_answers("create", "exists", "get", "set")
        self.zk.connect()
        rounds = []
        while answered := self.zk.release("create", "exists", "get", "set"):
            rounds.append(answered)
        for i in range(100):
            self.assertEqual(self.zk.owner(path(f"i{i:03d}")), self.zk.session_id)
        return rounds

    def test_same_session_a_few_at_a_time(self) -> None:
        """
        Back on the same session (its nodes still there), the resync
        writes every node with at most `RESYNC_IN_FLIGHT` of its calls
        answered at once.
        """
        rounds = self.resync_rounds(same_session=True)
        self.assertLessEqual(max(rounds), RESYNC_IN_FLIGHT)

    def test_new_session_the_whole_window(self) -> None:
        """
        On a new session (every node missing for readers), the resync
        writes every node at once, as far as the window allows.
        """
        rounds = self.resync_rounds(same_session=False)
        self.assertGreaterEqual(rounds[0], 100)


class UnconfirmedNamedTests(PublisherHarness):
    """
    Which nodes are unconfirmed after a new session, not only how many:
    in the reason, in /healthz's ``unconfirmed``, and in one log line
    when the state starts and one when it ends.
    """

    # Out of order, so that the names said are sorted, not as published.
    names = [f"r{i:02d}" for i in (11, 3, 7, 0, 9, 1, 10, 5, 2, 8, 4, 6)]

    def unconfirmed_session(self) -> None:
        """Every instance published, then a new session with writes held."""
        self.start()
        for name in self.names:
            self.check(self.instance(name), UP)
        self.clock.advance(1.0)
        self.zk.expire()
        self.zk.hold_answers("create", "exists", "get", "set")
        self.zk.connect()

    def lines(self) -> list[str]:
        """The lines `sentinel.unconfirmed` logged so far."""
        return list(self.logged)

    def setUp(self) -> None:
        super().setUp()
        self.logged: list[str] = []

        def observer(event: LogEvent) -> None:
            if event.get("log_namespace") == "sentinel.unconfirmed":
                self.logged.append(formatEvent(event))

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)

    def test_reason_names_the_first_ten_sorted(self) -> None:
        """
        The reason names the first `NAMED` nodes by name, sorted, and how
        many more, on one line; before it gave the count alone.
        """
        self.unconfirmed_session()
        reason = self.publisher.unhealthy_reason() or ""
        first = ", ".join(f"r{i:02d}" for i in range(NAMED))
        self.assertIn(
            f"12 instance node(s) not written again since connecting ({first}"
            " and 2 more)",
            reason,
        )
        self.assertNotIn("\n", reason)
        while self.zk.release():
            pass

    def test_detail_names_them_until_written(self) -> None:
        """
        /healthz's ``unconfirmed`` says how many and the first `NAMED`
        names, sorted, as of the reason just given; none once all are
        written again.
        """
        self.unconfirmed_session()
        self.publisher.unhealthy_reason()
        self.assertEqual(
            self.publisher.unconfirmed_detail(),
            {"count": 12, "names": [f"r{i:02d}" for i in range(NAMED)]},
        )
        while self.zk.release():
            pass
        self.assertIsNone(self.publisher.unhealthy_reason())
        self.assertIsNone(self.publisher.unconfirmed_detail())

    def test_one_line_when_it_starts_and_one_when_it_ends(self) -> None:
        """
        One line at the connection naming them, none per answer, one when
        the last is written again.
        """
        self.unconfirmed_session()
        [started] = self.lines()
        self.assertIn("12 instance node(s)", started)
        self.assertIn("r00, r01", started)
        for _ in range(5):
            self.publisher.unhealthy_reason()
            self.clock.advance(0.1)
        self.assertEqual(len(self.lines()), 1)
        while self.zk.release():
            pass
        for _ in range(5):
            self.publisher.unhealthy_reason()
        [_, ended] = self.lines()
        self.assertIn("left unconfirmed", ended)

    def test_end_logged_without_anyone_asking(self) -> None:
        """
        With nobody asking /healthz (``--http none``), the end is still
        logged, at the agent node's next heartbeat.
        """
        self.unconfirmed_session()
        while self.zk.release():
            pass
        self.assertEqual(len(self.lines()), 1)
        self.clock.advance(HEARTBEAT)
        while self.zk.release():
            pass
        self.assertEqual(len(self.lines()), 2)

    def test_connection_lost_again_ends_it(self) -> None:
        """
        Lost again before they are written, the state ends with one line
        naming those left: the outage is the reason from then on.
        """
        self.unconfirmed_session()
        self.zk.suspend()
        [_, ended] = self.lines()
        self.assertIn("12 instance node(s) still unconfirmed", ended)
        self.assertIn("r00", ended)
        self.assertIsNone(self.publisher.unconfirmed_detail())


class HealthzAnswerTests(PublisherHarness):
    """The HTTP part's /healthz names the publisher's unconfirmed nodes."""

    def test_healthz_names_unconfirmed_nodes(self) -> None:
        """
        After a new session, with its writes held, /healthz is 503 with a
        reason naming the nodes and ``unconfirmed`` listing them; once
        they are written again, 200 without ``unconfirmed``.
        """
        monitor, _, _, _ = make_monitor([])
        server = http_service(
            "tcp:6060:interface=127.0.0.1",
            self.clock,
            monitor,
            agent_id=AGENT,
            reload=LoadedAtStart(0.0),
            zookeeper=self.publisher,
            gc_objects=lambda: 0,
        )
        # The loop's own reason is not this test's.
        monitor.last_tick_at = self.clock.seconds()
        self.start()
        for name in ("c", "a", "b"):
            self.check(self.instance(name), UP)
        self.clock.advance(1.0)
        monitor.last_tick_at = self.clock.seconds()
        self.zk.expire()
        self.zk.hold_answers("create", "exists", "get", "set")
        self.zk.connect()
        code, body = agent_get(self, [server], "/healthz")
        self.assertEqual(code, 503)
        self.assertIn(
            "3 instance node(s) not written again since connecting (a, b, c)",
            " ".join(body["reasons"]),
        )
        self.assertEqual(body["unconfirmed"], {"count": 3, "names": ["a", "b", "c"]})
        while self.zk.release():
            pass
        code, body = agent_get(self, [server], "/healthz")
        self.assertEqual((code, body), (200, {"status": "ok"}))

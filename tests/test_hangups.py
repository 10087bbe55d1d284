"""
A kept connection the server closes as a check goes out on it (an idle
timeout of Redis's, or a proxy's, firing as the check arrives): the check
is sent again on a new connection when the once-a-second rule allows, and
the server is judged on that one (`sentinel.probe`).
"""

from __future__ import annotations

from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from sentinel.observation import Observation
from sentinel.protocol import PING
from tests.test_probe import Harness


class ClosedAsCheckWentOutTests(SynchronousTestCase):
    """A connection lost before a check's reply, on a kept connection."""

    def closed_at_next_check(self, h: Harness) -> object:
        """
        Connect with one answered check, then, a second later, lose the
        kept connection with the next check's PING sent on it; return that
        check's Deferred.
        """
        h.connect()
        h.on_time(1.0)
        d = h.check(scheduled=h.reactor.seconds())
        self.assertEqual(h.sent(), PING)
        h.protocol.connectionLost(Failure(ConnectionDone()))
        return d

    def test_sent_again_on_a_new_connection(self) -> None:
        """
        The check goes out again on a new connection at once, and the
        server's answer there is the check's: up. A loss so on a check
        due within a second of that connection's attempt fails at once,
        with no attempt (the once-a-second rule).
        """
        h = Harness()
        d = self.closed_at_next_check(h)
        self.assertNoResult(d)
        self.assertEqual(len(h.reactor.tcpClients), 2)
        h.accept()
        self.assertEqual(h.sent(), PING)
        h.reactor.advance(0.003)
        h.reply(b"+PONG\r\n")
        observation = self.successResultOf(d)
        assert observation is not None
        self.assertEqual((observation.ok, observation.ready), (True, True))
        self.assertAlmostEqual(observation.latency_ms or 0, 3.0, places=3)
        h.on_time(0.5)
        d = h.check(scheduled=h.reactor.seconds())
        h.sent()
        h.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            self.successResultOf(d), Observation(ok=False, error="connection lost")
        )
        self.assertEqual(len(h.reactor.tcpClients), 2)

    def test_closed_again_fails(self) -> None:
        """
        A server that closes the new connection too before answering fails
        the check, after that one attempt.
        """
        h = Harness()
        d = self.closed_at_next_check(h)
        h.accept()
        h.sent()
        h.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            self.successResultOf(d), Observation(ok=False, error="connection lost")
        )
        self.assertEqual(len(h.reactor.tcpClients), 2)

    def test_refused_again_fails(self) -> None:
        """A server gone (its new connection refused) fails the check so."""
        h = Harness()
        d = self.closed_at_next_check(h)
        h.refuse()
        self.assertEqual(
            self.successResultOf(d), Observation(ok=False, error="connection refused")
        )

    def test_deadline_while_connecting_again(self) -> None:
        """
        The check's deadline while the new connection is on its way, the
        agent on time: a timeout of the connect, as for any check that
        connects; the attempt goes on, its connection kept.
        """
        h = Harness()
        d = self.closed_at_next_check(h)
        h.on_time(0.96)  # The harness's timeout is 1 s.
        d.cancel()
        self.assertEqual(
            self.successResultOf(d), Observation(ok=False, error="timeout (connect)")
        )
        h.accept()
        self.assertTrue(h.probe.connected)  # Kept for the next check.

    def test_deadline_after_connecting_again(self) -> None:
        """
        The deadline with the new connection's PING unanswered, the agent
        on time: a timeout of PING, and the new connection goes.
        """
        h = Harness()
        d = self.closed_at_next_check(h)
        h.accept()
        h.on_time(0.96)  # The harness's timeout is 1 s.
        d.cancel()
        self.assertEqual(
            self.successResultOf(d), Observation(ok=False, error="timeout (ping)")
        )
        self.assertFalse(h.probe.connected)

    def test_sent_again_waiting_in_line_owes_nothing(self) -> None:
        """
        The check sent again waits in line for the pacer (the agent short
        of CPU, another instance holding the one place): it says nothing,
        and so do the checks after it, past the owed bound too. The PING
        the close crossed is not owed: the server owes the one sent again,
        once the agent gets to send it.
        """
        h = Harness(slots=1, owed_after=3.5)
        h.connect()
        h.on_time(1.0)
        d = h.check(scheduled=h.reactor.seconds())
        h.sent()
        self.successResultOf(h.pacer.acquire())  # Another instance's place.
        h.protocol.connectionLost(Failure(ConnectionDone()))
        for _ in range(6):
            h.on_time(0.96)
            d.cancel()
            self.assertIsNone(self.successResultOf(d))
            h.on_time(0.04)
            d = h.check(scheduled=h.reactor.seconds())
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(len(h.reactor.tcpClients), 1)

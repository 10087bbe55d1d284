"""
A reply owed too long is the server's, however late the agent ran: the
checks that would say nothing for the agent's own lateness (a PING timed
out across a stall, a connect inconclusive) fail once the server has
owed a reply for over `owed_after` seconds, and any reply, one to a check
already ended too, clears the debt; with nothing on the wire (the
connection holding the command dropped, none made since), the debt stops
growing once the next check is due (`sentinel.probe`).
"""

from __future__ import annotations

from socket import MSG_PEEK

from twisted.trial.unittest import SynchronousTestCase

from sentinel.health import DOWN
from sentinel.observation import Observation
from sentinel.probe import owed_after, owed_error
from sentinel.protocol import PING, auth_command
from tests.test_probe import Harness
from tests.test_runqueue import TIMEOUT, starved_monitor

# The detection bound at the defaults: interval 1 s, fall 3, timeout 0.5 s.
BOUND = owed_after(1.0, 3, 0.5)
OWED = owed_error(BOUND)


class ArrivedUnread:
    """
    A socket whose server's replies came in while the agent stalled, not
    yet read when the check's deadline fires (`RedisClientProtocol.unread`).
    """

    def __init__(self, data: bytes) -> None:
        self.data = data

    def recv(self, size: int, flags: int) -> bytes:
        assert flags & MSG_PEEK, "only looked at, never read"
        return self.data[:size]


def stalled_checks(
    case: SynchronousTestCase,
    h: Harness,
    seconds: float,
    answer: bool = False,
    unread: bool = False,
) -> list[tuple[float, Observation | None]]:
    """
    A check a second for `seconds`, each cancelled at its deadline after
    a stall of the agent (one turn of 0.6 s), while another instance's
    attempt keeps the pacer's heartbeat going; a new connection is
    completed as the kernel completes one to a stopped server, and, if
    `answer`, the server answers everything sent once the check has
    ended (its replies late); if `unread`, its replies are in the socket
    during the stall, and the agent has not read them when the deadline
    fires. Each check's time and result.
    """
    results = []
    end = h.reactor.seconds() + seconds
    while h.reactor.seconds() < end:
        clients = len(h.reactor.tcpClients)
        d = h.check()
        if len(h.reactor.tcpClients) > clients:
            h.accept()
        if unread and h.transport is not None:
            h.transport.socket = ArrivedUnread(b"+PONG\r\n")  # type: ignore[attr-defined]
        h.reactor.advance(0.6)  # One turn of 0.6 s: the agent stalled.
        d.cancel()
        results.append((h.reactor.seconds(), case.successResultOf(d)))
        if answer and h.transport is not None:
            for _ in range(h.sent().count(PING)):
                h.reply(b"+PONG\r\n")
        h.on_time(0.4)
    return results


class OwedTests(SynchronousTestCase):
    """The bound on the agent's excuses, on a probe with a stalled agent."""

    def stalled(self, password: str | None = None) -> Harness:
        """A probe whose server may owe a reply for 3.5 s."""
        return Harness(password=password, owed_after=BOUND)

    def dropped_with_no_place(
        self,
    ) -> tuple[Harness, list[tuple[float, Observation | None]]]:
        """
        A probe whose server goes unanswered through two stalled checks,
        its connection dropped (two checks behind) with nothing in it,
        while other instances' connects hold every place (and keep the
        pacer's heartbeat going, so the agent's lateness is measured); the
        probe and those checks' times and results.
        """
        h = Harness(slots=2, owed_after=BOUND)
        h.connect()
        h.on_time(0.02)
        self.successResultOf(h.pacer.acquire())
        self.successResultOf(h.pacer.acquire())
        results = stalled_checks(self, h, 2.0)
        self.assertEqual(len(h.reactor.tcpClients), 1)
        self.assertFalse(h.probe.connected)
        return h, results

    def test_frozen_server_fails_once_owed_past_the_bound(self) -> None:
        """
        A server that stops answering a kept connection, checked by an
        agent that stalls through every check: each check says nothing
        while the oldest PING unanswered is at most 3.5 s old, and from
        then on every check fails, saying why. (Before: every check said
        nothing, for ever.)
        """
        h = self.stalled()
        h.connect()
        h.on_time(0.02)
        self.successResultOf(h.pacer.acquire())  # Another instance connects.
        frozen_at = h.reactor.seconds()
        results = stalled_checks(self, h, 10.0)
        for at, observation in results:
            if at - frozen_at <= BOUND:
                self.assertIsNone(observation)
        failed = [(at, o) for at, o in results if o is not None]
        self.assertTrue(failed)
        self.assertLessEqual(failed[0][0] - frozen_at, BOUND + 1.0)
        for at, observation in results:
            if at >= failed[0][0]:
                self.assertEqual(observation, Observation(ok=False, error=OWED))

    def test_late_replies_clear_the_debt(self) -> None:
        """
        A healthy server on the same stalled agent answers every PING just
        after its deadline: the late replies, read and dropped, are
        answers, and its checks say nothing for 20 s, none failing. Once
        it stops answering, its checks fail within the bound of the
        oldest PING it left unanswered. (Before: never.)
        """
        h = self.stalled()
        h.connect()
        h.on_time(0.02)
        self.successResultOf(h.pacer.acquire())  # Another instance connects.
        results = stalled_checks(self, h, 20.0, answer=True)
        self.assertEqual([o for _, o in results], [None] * len(results))
        frozen_at = h.reactor.seconds()
        results = stalled_checks(self, h, 6.0)
        failed = [at for at, o in results if o is not None]
        self.assertTrue(failed)
        self.assertLessEqual(failed[0] - frozen_at, BOUND + 1.0)

    def test_replies_unread_when_dropped_clear_the_debt(self) -> None:
        """
        A healthy server on the same stalled agent answers every PING during
        the stall, its replies still in the socket when the deadline fires
        (the reactor runs overdue timers before it polls): the connection,
        two checks behind, is dropped for the agent's lateness, and the
        replies it held unread are answers. Its checks say nothing for 20
        s, none failing. (Before: the debt outlived the drop, and the
        checks failed with a reply owed past the bound from 4 s on: a
        loaded agent published healthy slices down.)
        """
        h = self.stalled()
        h.connect()
        h.on_time(0.02)
        self.successResultOf(h.pacer.acquire())  # Another instance connects.
        results = stalled_checks(self, h, 20.0, unread=True)
        self.assertGreater(len(h.reactor.tcpClients), 2)  # Dropped, again.
        self.assertEqual([o for _, o in results], [None] * len(results))

    def test_no_debt_grows_while_the_agent_holds_no_connection(self) -> None:
        """
        A healthy server on a stalled agent, starved too: its replies come
        only after the connection, two checks behind, was dropped for the
        agent's lateness (nothing in the socket then), and the agent, still
        connecting as fast as it can, gets no place for a new connection
        for 8 s. With nothing sent to it, the server owes nothing more: the
        checks in the meantime say nothing, and once it is connected again
        and answers, none has failed. (Before: from 3.5 s after its last
        PING, with no command on the wire, every check failed with the
        owed timeout, and a loaded agent published healthy instances down.)
        """
        h, results = self.dropped_with_no_place()
        results += stalled_checks(self, h, 8.0)
        self.assertEqual(len(h.reactor.tcpClients), 1)  # Never got a place.
        self.assertEqual([o for _, o in results], [None] * len(results))
        h.pacer.release()  # A place: the attempt in line connects.
        h.on_time(0.02)
        self.assertEqual(len(h.reactor.tcpClients), 2)
        d = h.check()
        h.accept()
        h.reply(b"+PONG\r\n")
        self.assertTrue(self.successResultOf(d).ok)

    def test_debt_on_a_dropped_connection_counts_again_once_sent_more(
        self,
    ) -> None:
        """
        A frozen server whose connection the stalled agent drops (two checks
        behind) and then cannot replace for 5 s: the checks meanwhile say
        nothing, and once connected again (the kernel completes it), the
        time its first connection held a PING unanswered counts with the
        new one's: its checks fail once the two together pass the bound,
        not a whole bound after the reconnect.
        """
        h, results = self.dropped_with_no_place()
        results += stalled_checks(self, h, 5.0)
        self.assertEqual([o for _, o in results], [None] * len(results))
        h.pacer.release()
        h.on_time(0.02)
        reconnected_at = h.reactor.seconds()
        results = stalled_checks(self, h, 6.0)
        failed = [at for at, o in results if o is not None]
        self.assertTrue(failed)
        self.assertLess(failed[0] - reconnected_at, BOUND)
        self.assertEqual(results[-1][1], Observation(ok=False, error=OWED))

    def test_reply_unread_after_a_stall_past_the_bound_clears_it(self) -> None:
        """
        A healthy server answers a PING at once, and the agent stalls in
        one turn for longer than the bound (3.6 s): when the check's
        deadline is judged, the reply is in the socket, unread. The server
        answered: the check says nothing (the agent's own stall), the
        connection is kept, and the next check, its reply read, is up.
        (Before: the check failed with the owed timeout, and an agent
        whose histories went stale in such a stall published a slice of
        healthy instances down at once: 17 to 225 in runs of
        tests.test_http_load at load 15-16.)
        """
        h = self.stalled()
        h.connect()
        h.on_time(0.02)
        self.successResultOf(h.pacer.acquire())  # Another instance connects.
        d = h.check()
        assert h.transport is not None
        h.transport.socket = ArrivedUnread(b"+PONG\r\n")  # type: ignore[attr-defined]
        h.reactor.advance(BOUND + 0.1)  # One turn past the bound.
        d.cancel()
        self.assertIsNone(self.successResultOf(d))
        self.assertTrue(h.probe.connected)
        h.reply(b"+PONG\r\n")  # Read, at last, and dropped.
        h.on_time(0.02)
        d = h.check()
        h.reply(b"+PONG\r\n")
        self.assertTrue(self.successResultOf(d).ok)

    def test_auth_unanswered_fails_once_owed_past_the_bound(self) -> None:
        """
        A server stopped before its first check: the kernel completes the
        agent's connects, AUTH goes unanswered, and every attempt times out
        across a stall of the agent (inconclusive). Once AUTH has been owed
        for over the bound, the checks fail. (Before: all said nothing.)
        """
        h = self.stalled(password="secret")
        self.successResultOf(h.pacer.acquire())  # Another instance connects.
        started_at = h.reactor.seconds()
        results = stalled_checks(self, h, 8.0)
        assert h.transport is not None
        self.assertIn(auth_command("secret", None), h.transport.value())
        failed = [(at, o) for at, o in results if o is not None]
        self.assertTrue(failed)
        self.assertGreater(failed[0][0] - started_at, BOUND)
        self.assertLessEqual(failed[0][0] - started_at, BOUND + 2.0)
        self.assertEqual(failed[-1][1], Observation(ok=False, error=OWED))


class OwedOnStarvedMonitorTests(SynchronousTestCase):
    """The monitor puts off no timeout owed past the bound."""

    def test_owed_timeout_decides_a_first_check_while_starved(self) -> None:
        """
        A first check failed by a reply owed past the bound decides down at
        once, however long the agent waited for a CPU: the server had more
        than the detection bound of the agent's time. (Before: put off.)
        """
        monitor, clock, probe, starvation = starved_monitor(self)
        monitor.stopService()
        probe.hang = False
        probe.result = Observation(ok=False, error=OWED)
        starvation.waited += 5.0
        clock.advance(TIMEOUT)
        monitor.startService()
        self.assertEqual(monitor.states["a"].health.status, DOWN)
        self.assertEqual(monitor.starved_first_checks, 0)

"""
A PING timeout behind the agent's own PINGs: a server that answered,
since it was sent, an older one of the agent's, and none as new, was
working through the agent's queue ahead of it (`sentinel.answers`).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sentinel.answers import KEEP, Answers
from sentinel.observation import Observation
from sentinel.probe import RedisProbe
from tests.test_handshakes import Server, ended

ENDPOINT = ("127.0.0.1", 6379, "localhost")
TIMEOUT = Observation(ok=False, error="timeout (ping)")


class AnswersTests(SynchronousTestCase):
    """The newest PING answered per address, forgotten after `KEEP` seconds."""

    def test_behind_own(self) -> None:
        """
        An address is behind a PING when it answered, after it was sent and
        recently, an older one, and none as new.
        """
        clock = Clock()
        answers = Answers(clock)
        self.assertFalse(answers.behind_own(ENDPOINT, 1.0, 0.25))
        clock.advance(1.5)
        answers.answered(ENDPOINT, 0.9, 1.5)
        self.assertTrue(answers.behind_own(ENDPOINT, 1.0, 0.25))
        self.assertFalse(answers.behind_own(ENDPOINT, 0.9, 0.25))  # Answered.
        self.assertFalse(answers.behind_own(ENDPOINT, 1.6, 0.25))  # Sent after.
        self.assertFalse(
            answers.behind_own(("127.0.0.1", 6380, "localhost"), 1.0, 0.25)
        )
        clock.advance(0.3)
        self.assertFalse(answers.behind_own(ENDPOINT, 1.0, 0.25))  # Not recent.

    def test_older_answer_does_not_replace_newer(self) -> None:
        """An answer to an older PING, come late, keeps the newest one."""
        clock = Clock()
        answers = Answers(clock)
        clock.advance(2.0)
        answers.answered(ENDPOINT, 1.5, 2.0)
        answers.answered(ENDPOINT, 1.0, 2.0)
        self.assertFalse(answers.behind_own(ENDPOINT, 1.2, 0.25))

    def test_old_addresses_forgotten(self) -> None:
        """
        An address without an answer for `KEEP` seconds is forgotten at a
        later answer: one entry per address in use, at most.
        """
        clock = Clock()
        answers = Answers(clock)
        for port in range(100):
            answers.answered(("127.0.0.1", port, "localhost"), 0.0, 0.0)
        clock.advance(KEEP + 1.0)
        now = clock.seconds()
        answers.answered(ENDPOINT, now - 0.1, now)
        self.assertEqual(len(answers), 1)


def connected(server: Server, tls: bool = True) -> list[object]:
    """
    Connect each probe of `server` in turn, its first PING answered: their
    protocols. With `tls`, their answers are recorded, as a TLS
    instance's are (the in-memory server speaks no TLS).
    """
    protocols = []
    for index, probe in enumerate(server.probes):
        if tls:
            probe._answers = server.pacer.answers
        server.on_time(0.1)  # A token for the next attempt.
        d = probe.check(False)
        protocol = server.accept(index)
        protocol.dataReceived(b"+PONG\r\n")
        assert d.called
        protocols.append(protocol)
    server.on_time(1.0)
    return protocols


def pinged_in_turn(
    server: Server, first: RedisProbe, second: RedisProbe
) -> tuple[Deferred[Observation | None], Deferred[Observation | None]]:
    """`first`'s PING, then 20 ms later `second`'s: their checks."""
    d_first = first.check(False)
    server.on_time(0.02)
    return d_first, second.check(False)


class BehindOwnPingsTests(SynchronousTestCase):
    """
    A TLS PING unanswered at the deadline while its server answered an older
    PING of the agent's, and none as new, is inconclusive once; otherwise it
    fails as ever.
    """

    def test_ping_behind_own_pings(self) -> None:
        """
        A PING unanswered at its deadline, its server having just answered
        another instance's PING sent before it, ends its check with None
        and keeps the connection; the next one, unanswered again with no
        answer on it between, fails.
        """
        server = Server(2, password=None)
        older, waiting = connected(server)
        first, late = server.probes
        for expected in ([None], [TIMEOUT]):
            d_older, d = pinged_in_turn(server, first, late)
            server.on_time(0.9)
            older.dataReceived(b"+PONG\r\n")  # Answered late, yet before this.
            self.assertTrue(self.successResultOf(d_older).ok)  # type: ignore[union-attr]
            server.on_time(0.1)
            self.assertEqual(ended(d), expected)
            server.on_time(0.88)
        self.assertFalse(late.connected)

    def test_answered_between_excuses_again(self) -> None:
        """
        A PING answered between two excused ones lets the second be
        excused too: the bound is on excuses in a row, not per connection.
        """
        server = Server(2, password=None)
        older, waiting = connected(server)
        first, late = server.probes
        for answered_between in (True, False):
            d_older, d = pinged_in_turn(server, first, late)
            server.on_time(0.9)
            older.dataReceived(b"+PONG\r\n")
            server.on_time(0.1)
            self.assertEqual(ended(d), [None])
            server.on_time(0.88)
            if answered_between:
                waiting.dataReceived(b"+PONG\r\n")  # The forgotten reply.
                d = late.check(False)
                waiting.dataReceived(b"+PONG\r\n")
                self.assertTrue(self.successResultOf(d).ok)  # type: ignore[union-attr]
                server.on_time(1.0)

    def test_newer_ping_answered_fails(self) -> None:
        """
        A PING unanswered while its server answered one sent after it has
        been passed by: its timeout fails, as ever.
        """
        server = Server(2, password=None)
        older, newer = connected(server)
        first, late = server.probes
        d, d_newer = pinged_in_turn(server, late, first)
        server.on_time(0.9)
        older.dataReceived(b"+PONG\r\n")
        self.assertTrue(self.successResultOf(d_newer).ok)  # type: ignore[union-attr]
        server.on_time(0.1)
        self.assertEqual(ended(d), [TIMEOUT])

    def test_no_answer_since_fails(self) -> None:
        """
        A server that answered nothing since the PING was sent (hung, or
        stopped) fails it, as ever; so does one whose last answer came more
        than a quarter of the timeout before the deadline.
        """
        for answer_after in (None, 0.5):
            server = Server(2, password=None)
            older, waiting = connected(server)
            first, late = server.probes
            d_older, d = pinged_in_turn(server, first, late)
            if answer_after is not None:
                server.on_time(answer_after)
                older.dataReceived(b"+PONG\r\n")
                server.on_time(1.0 - answer_after)
            else:
                server.on_time(1.0)
            self.assertEqual(ended(d), [TIMEOUT])

    def test_plain_pings_prove_nothing(self) -> None:
        """
        Without TLS no answer is recorded: a plain PING costs the server
        little, and the plain check path nothing more. Its timeout fails.
        """
        server = Server(2, password=None)
        older, waiting = connected(server, tls=False)
        first, late = server.probes
        d_older, d = pinged_in_turn(server, first, late)
        server.on_time(0.9)
        older.dataReceived(b"+PONG\r\n")
        server.on_time(0.1)
        self.assertEqual(ended(d), [TIMEOUT])

"""
The bounded Redis protocol: only replies asked for, only small ones, on
in-memory transports; and its fast paths, on a real TCP connection to a real
redis-server.
"""

from __future__ import annotations

from typing import Any

import txredisapi
from twisted.internet import reactor as _reactor
from twisted.internet import tcp
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sentinel.protocol import (
    INFO_REPLICATION,
    MAX_BULK,
    MAX_LINE,
    PING,
    ConnectionFactory,
    ProtocolError,
    RedisClientProtocol,
    describe_reply,
)
from tests.polling import wait_for
from tests.servers import LOOPBACK, RedisServer

reactor: Any = _reactor


class Replies:
    """A ReplyTo that keeps what it is given."""

    def __init__(self) -> None:
        self.replies: list[object] = []

    def callback(self, reply: object) -> None:
        self.replies.append(reply)


class Connection:
    """A protocol on a StringTransport, with what it told its owner."""

    def __init__(self) -> None:
        self.violations: list[str] = []
        self.lost = 0
        factory = ConnectionFactory(self._lost, self._violated)
        self.protocol = factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        # Every line the parser is handed, to prove when it stops.
        self.lines: list[str] = []
        parse = self.protocol.lineReceived

        def counted(line: str) -> bool:
            self.lines.append(line)
            return parse(line)

        self.protocol.lineReceived = counted  # type: ignore[method-assign]

    def _lost(self, protocol: RedisClientProtocol) -> None:
        self.lost += 1

    def _violated(self, protocol: RedisClientProtocol, reason: str) -> None:
        self.violations.append(reason)

    def ask(self, command: bytes = PING) -> Replies:
        replies = Replies()
        self.protocol.send_to(command, replies)
        return replies

    def receive(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    @property
    def dropped(self) -> bool:
        return bool(self.transport.disconnecting)

    @property
    def buffered(self) -> int:
        """Bytes the parser holds: its line buffer and its bulk buffer."""
        line = self.protocol.clearLineBuffer()
        self.protocol._LineReceiver__buffer = line
        return len(line) + len(self.protocol.bulk_buffer)


class AskedForTests(SynchronousTestCase):
    """A reply is accepted only while a command of ours waits for it."""

    def assertViolation(self, c: Connection, reason: str) -> None:
        self.assertEqual(c.violations, [reason])
        self.assertTrue(c.dropped)
        self.assertEqual(c.buffered, 0)

    def test_one_reply_per_command(self) -> None:
        """Each command gets its own reply, in order, and nothing is dropped."""
        c = Connection()
        first, second = c.ask(), c.ask(INFO_REPLICATION)
        c.receive(b"+PONG\r\n$11\r\nrole:master\r\n")
        self.assertEqual(first.replies, ["PONG"])
        self.assertEqual(second.replies, [b"role:master"])
        self.assertEqual(c.violations, [])
        self.assertFalse(c.dropped)

    def test_reply_before_any_command(self) -> None:
        """A server that speaks first breaks the protocol."""
        c = Connection()
        c.receive(b"+PONG\r\n")
        self.assertViolation(c, "unexpected reply: '+PONG'")

    def test_second_reply_in_the_same_read(self) -> None:
        """
        A second reply to one command, read with the first: the first is
        the command's, the second a violation, and nothing after it is
        parsed.
        """
        c = Connection()
        replies = c.ask()
        c.receive(b"+PONG\r\n+PONG\r\n+PONG\r\n")
        self.assertEqual(replies.replies, ["PONG"])
        self.assertViolation(c, "unexpected reply: '+PONG'")
        self.assertEqual(len(c.lines), 2)

    def test_second_reply_later(self) -> None:
        """A reply arriving after the last command was answered is a violation."""
        c = Connection()
        replies = c.ask()
        c.receive(b"+PONG\r\n")
        self.assertEqual(c.violations, [])
        c.receive(b"+PONG\r\n")
        self.assertEqual(replies.replies, ["PONG"])
        self.assertViolation(c, "unexpected reply: '+PONG'")

    def test_flood_parses_one_line_past_the_reply(self) -> None:
        """
        A read full of replies nobody asked for: the parser stops at the
        first one and releases the rest at once (abortConnection alone would
        not stop LineReceiver's loop over its buffer).
        """
        c = Connection()
        replies = c.ask()
        c.receive(b"+PONG\r\n" * 10_000)
        self.assertEqual(replies.replies, ["PONG"])
        self.assertViolation(c, "unexpected reply: '+PONG'")
        self.assertEqual(len(c.lines), 2)

    def test_nothing_is_read_once_dropped(self) -> None:
        """After a violation, later data is ignored: no reply, no growth."""
        c = Connection()
        c.receive(b"-ERR hello\r\n")
        replies = c.ask()
        for _ in range(100):
            c.receive(b"+PONG\r\n+PONG")
        self.assertEqual(replies.replies, [])
        self.assertViolation(c, "unexpected reply: '-ERR hello'")

    def test_bytes_after_a_bulk_are_judged_at_once(self) -> None:
        """
        What follows a bulk in the same read is parsed at once (txredisapi
        would defer it to a later reactor turn): a stale reply there is a
        violation right away.
        """
        c = Connection()
        replies = c.ask(INFO_REPLICATION)
        c.receive(b"$3\r\nabc\r\n+PONG\r\n")
        self.assertEqual(replies.replies, [b"abc"])
        self.assertViolation(c, "unexpected reply: '+PONG'")

    def test_multi_bulk_is_never_a_reply(self) -> None:
        """
        No command we send has a multi-bulk reply: one fails the command
        waiting with the violation, without trusting its count.
        """
        c = Connection()
        replies = c.ask()
        c.receive(b"*1000000000\r\n$4\r\nPONG\r\n")
        self.assertViolation(c, "unexpected reply: '*1000000000'")
        [error] = replies.replies
        assert isinstance(error, ProtocolError)
        self.assertEqual(str(error), "unexpected reply: '*1000000000'")

    def test_not_resp2(self) -> None:
        """RESP3 types, unknown types and empty lines are not replies."""
        for data in [
            b"_\r\n",
            b"%1\r\n",
            b">2\r\n",
            b"HTTP/1.1 400\r\n",
            b"\r\n",
            b"$-2\r\n",
            b"$abc\r\n",
            b":12x\r\n",
        ]:
            c = Connection()
            replies = c.ask()
            c.receive(data)
            self.assertEqual(len(c.violations), 1, data)
            self.assertTrue(c.violations[0].startswith("not a Redis reply"), data)
            self.assertIsInstance(replies.replies[0], ProtocolError)
            self.assertTrue(c.dropped)

    def test_undecodable_line(self) -> None:
        """Bytes that are not UTF-8 in a status line are not a reply."""
        c = Connection()
        c.ask()
        c.receive(b"+\xff\xfe\r\n")
        self.assertViolation(c, "not a Redis reply: undecodable bytes")

    def test_only_the_first_violation_counts(self) -> None:
        """A dropped connection reports one violation, not one per line."""
        c = Connection()
        c.protocol.reject("first")
        c.protocol.reject("second")
        self.assertEqual(c.violations, ["first"])

    def test_lost_connection_fails_waiting_commands(self) -> None:
        """A lost connection fails every command waiting and tells the owner."""
        c = Connection()
        replies = c.ask()
        c.protocol.connectionLost(Failure(ConnectionError()))
        [error] = replies.replies
        self.assertIsInstance(error, txredisapi.ConnectionError)
        self.assertEqual(c.lost, 1)


class CapTests(SynchronousTestCase):
    """No reply is longer than a small cap; memory stays bounded."""

    def test_status_line_cap(self) -> None:
        """A status or error line up to MAX_LINE is read; a longer one is not."""
        c = Connection()
        replies = c.ask()
        text = "x" * (MAX_LINE - 1)
        c.receive(b"-" + text.encode() + b"\r\n")
        [error] = replies.replies
        self.assertEqual(str(error), text)
        c.ask()
        c.receive(b"+" + b"y" * MAX_LINE + b"\r\n")
        self.assertEqual(c.violations, [f"reply too long: {MAX_LINE + 1} bytes"])
        self.assertTrue(c.dropped)

    def test_endless_line(self) -> None:
        """
        Bytes without an end of line, a read at a time: refused once past
        MAX_LINE, and nothing more is buffered, however much follows.
        """
        c = Connection()
        c.ask()
        for _ in range(1000):
            c.receive(b"x" * 4096)
        self.assertEqual(c.violations, [f"reply too long: {2 * 4096} bytes"])
        self.assertTrue(c.dropped)
        self.assertEqual(c.buffered, 0)

    def test_bulk_cap(self) -> None:
        """A bulk of MAX_BULK bytes is read, in pieces; one byte more is not."""
        c = Connection()
        replies = c.ask(INFO_REPLICATION)
        data = b"r" * MAX_BULK
        c.receive(b"$%d\r\n" % MAX_BULK)
        for start in range(0, MAX_BULK, 4096):
            c.receive(data[start : start + 4096])
        c.receive(b"\r\n")
        self.assertEqual(replies.replies, [data])
        self.assertEqual(c.buffered, 0)
        replies = c.ask(INFO_REPLICATION)
        c.receive(b"$%d\r\n" % (MAX_BULK + 1))
        self.assertEqual(c.violations, [f"reply too long: {MAX_BULK + 1} bytes"])
        [error] = replies.replies
        self.assertIsInstance(error, ProtocolError)

    def test_huge_bulk_refused_before_buffering(self) -> None:
        """
        ``$1000000000`` is refused when its length is read: none of what
        follows is buffered, in that read or later ones.
        """
        c = Connection()
        replies = c.ask()
        c.receive(b"$1000000000\r\n" + b"x" * 4000)
        for _ in range(1000):
            c.receive(b"x" * 4096)
        self.assertEqual(c.violations, ["reply too long: 1000000000 bytes"])
        self.assertIsInstance(replies.replies[0], ProtocolError)
        self.assertEqual(c.buffered, 0)
        self.assertTrue(c.dropped)

    def test_null_bulk(self) -> None:
        """``$-1`` is a null bulk, handed on as None."""
        c = Connection()
        replies = c.ask(INFO_REPLICATION)
        c.receive(b"$-1\r\n")
        self.assertEqual(replies.replies, [None])
        self.assertEqual(c.violations, [])

    def test_describe_reply(self) -> None:
        """Unexpected replies are described by kind, briefly."""
        self.assertEqual(describe_reply("OK"), "'OK'")
        self.assertEqual(describe_reply(b"x" * 100), "a bulk of 100 bytes")
        self.assertEqual(describe_reply(None), "a null bulk")
        self.assertEqual(describe_reply("z" * 100), repr("z" * 40))


class FastPathTests(TestCase):
    """
    The fast paths run on a real TCP connection: commands written straight
    to the socket, ``+PONG`` handed on without the line parser. They touch
    private internals of Twisted and txredisapi; an upgrade that silently
    disables them fails here.
    """

    async def test_fast_paths_taken_on_real_tcp(self) -> None:
        """
        100 PINGs, each sent once the previous reply is in, to a real
        redis-server: every PING goes out without Twisted's buffered write,
        and every PONG reaches its waiter without LineReceiver's parser.
        """
        server = RedisServer().start()
        self.addCleanup(server.stop)
        parsed: list[bytes] = []
        parse = txredisapi.LineReceiver.dataReceived

        def counted(self: Any, data: bytes, unpause: bool = False) -> Any:
            parsed.append(data)
            return parse(self, data, unpause)

        self.patch(txredisapi.LineReceiver, "dataReceived", counted)
        lost: list[RedisClientProtocol] = []
        factory = ConnectionFactory(lost.append, lambda p, reason: self.fail(reason))
        endpoint = TCP4ClientEndpoint(reactor, LOOPBACK, server.port)
        protocol: RedisClientProtocol = await endpoint.connect(factory)
        self.addCleanup(protocol.drop)
        transport = protocol.transport
        self.assertIs(type(transport), tcp.Client)
        buffered_writes: list[bytes] = []
        write = transport.write

        def counted_write(data: bytes) -> None:
            buffered_writes.append(data)
            write(data)

        transport.write = counted_write
        pongs = Replies()
        total = 100

        class Next:
            def callback(self, reply: object) -> None:
                pongs.callback(reply)
                if len(pongs.replies) < total:
                    protocol.send_to(PING, self)

        protocol.send_to(PING, Next())
        await wait_for(reactor, lambda: len(pongs.replies) == total, 10.0, "PONGs")
        self.assertEqual(pongs.replies, ["PONG"] * total)
        self.assertEqual(buffered_writes, [])
        self.assertEqual(parsed, [])
        self.assertEqual(lost, [])

"""
The bounded Redis protocol: only replies asked for, only small ones, on
in-memory transports; and its fast paths, on a real TCP connection to a real
redis-server.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import txredisapi
from twisted.internet import reactor as _reactor
from twisted.internet import tcp
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from sentinel.certificates import parse_certificates
from sentinel.config import RedisInstance
from sentinel.dispatch import lean_dispatch
from sentinel.protocol import (
    HELLO,
    HELLO_LIMIT,
    INFO_REPLICATION,
    MAX_BULK,
    MAX_ERROR_TEXT,
    MAX_LINE,
    MAX_LISTED_REPLICAS,
    PING,
    ArrayLimit,
    BadInfo,
    ConnectionFactory,
    NotADataServer,
    ProtocolError,
    RedisClientProtocol,
    describe_reply,
    encode_reply,
    exists_command,
    parse_hello_role,
    parse_listed_replica,
    parse_replication,
)
from sentinel.tls import client_tls
from tests.certs import make_certificates
from tests.polling import wait_for
from tests.servers import LOOPBACK, RedisServer

reactor: Any = _reactor


class Replies:
    """A ReplyTo that keeps what it is given."""

    def __init__(self) -> None:
        self.replies: list[object] = []

    def callback(self, reply: object) -> None:
        self.replies.append(reply)


class ArrayReplies(Replies):
    """A ReplyTo that accepts a multi-bulk reply within a limit."""

    def __init__(self, limit: ArrayLimit = HELLO_LIMIT) -> None:
        super().__init__()
        self.array_limit = limit


# What Redis 7.0 answers to HELLO on a master, byte for byte.
HELLO_REPLY = (
    b"*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n"
    b"$5\r\nproto\r\n:2\r\n$2\r\nid\r\n:3\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n"
    b"$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"
)


class CountingProtocol(RedisClientProtocol):
    """
    The protocol, keeping every line its parser is handed, to prove when it
    stops. A subclass, not a method set on a RedisClientProtocol: CPython
    keeps the names of a class's instance attributes, 30 at most, for the
    whole process, and once a test's name fills them, every later instance
    of the class holds a larger dictionary (`FootprintTests` in
    ``tests/test_probe.py`` would measure it).
    """

    lines: list[str]

    def lineReceived(self, line: str) -> bool:
        self.lines.append(line)
        return super().lineReceived(line)


class Connection:
    """A protocol on a StringTransport, with what it told its owner."""

    def __init__(self) -> None:
        self.violations: list[str] = []
        self.lost = 0
        factory = ConnectionFactory(self._lost, self._violated)
        # As factory.buildProtocol, with the counting protocol.
        self.protocol = CountingProtocol()
        self.protocol.factory = factory
        self.lines: list[str] = []
        self.protocol.lines = self.lines
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def _lost(self, protocol: RedisClientProtocol) -> None:
        self.lost += 1

    def _violated(self, protocol: RedisClientProtocol, reason: str) -> None:
        self.violations.append(reason)

    def ask(self, command: bytes = PING) -> Replies:
        replies = Replies()
        self.protocol.send_to(command, replies)
        return replies

    def ask_all(self, commands: bytes, *waiters: Replies) -> None:
        self.protocol.send_pipeline(commands, waiters)

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

    def test_part_of_a_line_nobody_asked_for(self) -> None:
        """
        Part of a line that no command waits for (after the last reply, in
        its read or later; found by the fuzzer) is a violation when it
        comes, not the start of the next check's reply.
        """
        for reads in ([b"+PONG\r\n\x00\x00\x00"], [b"+PONG\r\n", b"\x00\x00\x00"]):
            c = Connection()
            replies = c.ask()
            for data in reads:
                c.receive(data)
            self.assertEqual(replies.replies, ["PONG"])
            self.assertViolation(c, "unexpected reply: '\\x00\\x00\\x00'")
        c = Connection()
        c.receive(b"+PO")
        self.assertViolation(c, "unexpected reply: '+PO'")

    def test_line_ended_by_lf_alone(self) -> None:
        """
        A reply line ended by LF alone fails the command waiting at once,
        naming it, and drops the connection: it waited for a CRLF until its
        deadline. A line split over reads, its CR in one and its LF in the
        next, is no such line.
        """
        for reads in ([b"+PONG\n"], [b"+PO", b"NG\n"], [b"+PONG\r\n+PONG\n"]):
            c = Connection()
            first = c.ask()
            second = c.ask() if len(reads[0]) > 7 else None
            for data in reads:
                c.receive(data)
            reason = "not a Redis reply: a line ended by LF alone, not CRLF: '+PONG'"
            self.assertViolation(c, reason)
            [error] = (second or first).replies
            assert isinstance(error, ProtocolError)
            self.assertEqual(str(error), reason)
        c = Connection()
        replies = c.ask()
        c.receive(b"+PONG\r")
        c.receive(b"\n")
        self.assertEqual(replies.replies, ["PONG"])
        self.assertEqual(c.violations, [])

    def test_line_ended_by_lf_alone_quotes_no_argument(self) -> None:
        """
        The start of a line ended by LF alone is quoted up to its first
        quotation mark, as an answer to AUTH is shown: the rest may repeat
        the password.
        """
        c = Connection()
        c.ask()
        c.receive(b"-ERR unknown command 'AUTH', with args: 'hunter2'\n")
        self.assertViolation(
            c,
            "not a Redis reply: a line ended by LF alone, not CRLF: "
            "'-ERR unknown command ...'",
        )

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
            # Lengths int() would take: a sign, spaces, another script's digit.
            b"$+4\r\n",
            b"$ 4 \r\n",
            b"$1_0\r\n",
            "$\u0664\r\n".encode(),
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


class ForgetTests(SynchronousTestCase):
    """Replies nobody wants any more are read in step and dropped."""

    def test_forgotten_replies_read_and_dropped(self) -> None:
        """
        Forgotten, the replies of a pipeline (HELLO's array among them) go
        to nobody, the connection stays in step, and the reply of a command
        sent afterwards goes to its own waiter.
        """
        c = Connection()
        first, hello, info = Replies(), ArrayReplies(), Replies()
        c.ask_all(PING + HELLO + INFO_REPLICATION, first, hello, info)
        self.assertTrue(c.protocol.forget_replies())
        later = c.ask()
        c.receive(b"+PONG\r\n" + HELLO_REPLY + b"$11\r\nrole:master\r\n")
        self.assertEqual((first.replies, hello.replies, info.replies), ([], [], []))
        self.assertEqual(later.replies, [])
        c.receive(b"+PONG\r\n")
        self.assertEqual(later.replies, ["PONG"])
        self.assertEqual(c.violations, [])
        self.assertFalse(c.dropped)

    def test_pong_inside_a_forgotten_array(self) -> None:
        """
        ``+PONG`` read alone while HELLO's forgotten array is half read is
        one of its elements, not the reply of the next command waiting:
        the array's end is read in step, and no exception escapes the
        parser (it raised AssertionError).
        """
        c = Connection()
        c.ask_all(PING + HELLO, Replies(), ArrayReplies())
        self.assertTrue(c.protocol.forget_replies())
        later = c.ask()
        for data in (b"+PONG\r\n", b"*2\r\n", b"+PONG\r\n", b"$4\r\nrole\r\n"):
            c.receive(data)
        self.assertEqual(later.replies, [])
        c.receive(b"+PONG\r\n")
        self.assertEqual(later.replies, ["PONG"])
        self.assertEqual(c.violations, [])
        self.assertFalse(c.dropped)

    def test_queued_inside_an_array(self) -> None:
        """
        ``+QUEUED`` inside an array (txredisapi hands it on as a reply of
        its own, wherever it is) leaves the rest of the array out of step:
        a violation, not an exception from the parser.
        """
        c = Connection()
        c.ask_all(PING + HELLO, Replies(), ArrayReplies())
        self.assertTrue(c.protocol.forget_replies())
        later = c.ask()
        c.receive(b"+PONG\r\n*2\r\n+QUEUED\r\n$4\r\nrole\r\n")
        self.assertEqual(c.violations, ["unexpected reply: '$4'"])
        [error] = later.replies
        self.assertIsInstance(error, ProtocolError)
        self.assertTrue(c.dropped)

    def test_once_until_they_come(self) -> None:
        """
        While forgotten replies are still out, nothing more is forgotten
        (False); once they are in, the next may be.
        """
        c = Connection()
        c.ask()
        self.assertTrue(c.protocol.forget_replies())
        later = c.ask()
        self.assertFalse(c.protocol.forget_replies())
        c.receive(b"+PONG\r\n")
        self.assertTrue(c.protocol.forget_replies())
        c.receive(b"+PONG\r\n")
        self.assertEqual(later.replies, [])
        self.assertEqual(c.violations, [])


class UnreadTests(SynchronousTestCase):
    """
    What the server sent and the agent has not read yet is seen without
    reading it, on a real socket (`RedisClientProtocol.unread`).
    """

    def connected(self) -> tuple[Connection, socket.socket]:
        """A connection whose transport's socket is one end of a real pair."""
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        c = Connection()
        c.transport.socket = ours  # type: ignore[attr-defined]
        return c, theirs

    def test_reply_in_the_socket_seen_and_left_there(self) -> None:
        """
        Nothing sent: nothing unread. A reply sent: unread, and still all
        there to be read afterwards (only peeked at).
        """
        c, theirs = self.connected()
        self.assertFalse(c.protocol.unread())
        theirs.sendall(b"+PONG\r\n")
        self.assertTrue(c.protocol.unread())
        self.assertTrue(c.protocol.unread())
        ours = c.transport.socket  # type: ignore[attr-defined]
        self.assertEqual(ours.recv(64), b"+PONG\r\n")
        self.assertFalse(c.protocol.unread())

    def test_close_is_no_reply(self) -> None:
        """A server that closed the connection sent nothing to read."""
        c, theirs = self.connected()
        theirs.close()
        self.assertFalse(c.protocol.unread())

    def test_dropped_connection_reads_nothing(self) -> None:
        """Once dropped, a connection has nothing unread, its socket aside."""
        c, theirs = self.connected()
        theirs.sendall(b"+PONG\r\n")
        c.protocol.drop()
        self.assertFalse(c.protocol.unread())

    def test_no_socket_nothing_unread(self) -> None:
        """A transport without a socket (in memory) has nothing unread."""
        self.assertFalse(Connection().protocol.unread())


class CapTests(SynchronousTestCase):
    """No reply is longer than a small cap; memory stays bounded."""

    def test_status_line_cap(self) -> None:
        """
        A status or error line up to MAX_LINE is read (an error's text cut
        to MAX_ERROR_TEXT); a longer one is not.
        """
        c = Connection()
        replies = c.ask()
        text = "x" * (MAX_LINE - 1)
        c.receive(b"-" + text.encode() + b"\r\n")
        [error] = replies.replies
        self.assertEqual(str(error), "x" * (MAX_ERROR_TEXT - 3) + "...")
        self.assertFalse(c.dropped)
        c.ask()
        c.receive(b"+" + b"y" * MAX_LINE + b"\r\n")
        self.assertEqual(c.violations, [f"reply too long: {MAX_LINE + 1} bytes"])
        self.assertTrue(c.dropped)

    def test_error_text_printable(self) -> None:
        """
        An error's text, bound for the log, ZooKeeper and the page, has
        the characters a terminal acts on escaped; the connection stays.
        """
        c = Connection()
        replies = c.ask()
        c.receive(b"-ERR \x1b]0;owned\x07 \xe2\x80\xaeevil\tend\r\n")
        [error] = replies.replies
        self.assertEqual(str(error), "ERR \\x1b]0;owned\\x07 \\u202eevil\\tend")
        self.assertFalse(c.dropped)
        replies = c.ask()
        c.receive(b"-LOADING Redis is loading the dataset in memory\r\n")
        [error] = replies.replies
        self.assertEqual(str(error), "LOADING Redis is loading the dataset in memory")

    def test_integer_reply_not_resp(self) -> None:
        """
        An integer reply is ASCII digits, signed, at most 64 bits: any other
        is not RESP (txredisapi's int() would take a sign, spaces,
        underscores and other scripts' digits, and quote what it cannot
        read whole, controls and all, into the error), as a reply or an
        element of an array. The violation quotes its start, escaped.
        """
        for line in (
            b":P\x01\x00ONG\r",  # Found by the fuzzer.
            b":\x1b[2J\x1b[31mred" + b"A" * 3000,
            b": 12",
            b":+5",
            b":1_0",
            ":\u0663".encode(),
            b":" + b"9" * 20,
            b":",
        ):
            c = Connection()
            replies = c.ask(exists_command("drain"))
            c.receive(line + b"\r\n")
            [reason] = c.violations
            self.assertEqual(reason, f"not a Redis reply: {line.decode()[:40]!r}")
            self.assertTrue(reason.isprintable())
            self.assertIsInstance(replies.replies[0], ProtocolError)
            self.assertTrue(c.dropped)
            c = Connection()
            array = ArrayReplies()
            c.ask_all(HELLO, array)
            c.receive(b"*2\r\n$2\r\nid\r\n" + line + b"\r\n")
            self.assertEqual(len(c.violations), 1)
            self.assertIsInstance(array.replies[0], ProtocolError)
        c = Connection()
        for line, number in (
            (b":0", 0),
            (b":-1", -1),
            (b":9223372036854775807", 2**63 - 1),
            (b":-9223372036854775808", -(2**63)),
        ):
            replies = c.ask(exists_command("drain"))
            c.receive(line + b"\r\n")
            self.assertEqual(replies.replies, [number])
        self.assertEqual(c.violations, [])

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

    def test_length_past_int64_is_not_quoted_whole(self) -> None:
        """
        A bulk length of more digits than a signed 64-bit number has is
        no Redis reply, and its violation quotes 40 characters of
        it: before, ``$`` and 4,000 nines became a 4 KB "reply too long"
        in the log, the instance's node and the page (the cap on an
        error's text is 512).
        """
        for line in (b"$" + b"9" * 4000, b"$" + b"9" * 20):
            c = Connection()
            c.ask()
            c.receive(line + b"\r\n")
            [reason] = c.violations
            self.assertEqual(reason, f"not a Redis reply: {line.decode()[:40]!r}")
            self.assertTrue(c.dropped)
            # The same inside HELLO's array.
            c = Connection()
            c.ask_all(HELLO, ArrayReplies())
            c.receive(b"*2\r\n" + line + b"\r\n")
            self.assertEqual(c.violations, [reason])
        # The longest that is one, still refused for its size.
        c = Connection()
        c.ask()
        c.receive(b"$" + b"9" * 19 + b"\r\n")
        self.assertEqual(c.violations, [f"reply too long: {'9' * 19} bytes"])

    def test_bulk_not_ended_by_crlf(self) -> None:
        """
        The two bytes after a bulk's announced length must be its CRLF
        (txredisapi drops them unread), whether they come with it or later.
        """
        for reads in ([b"$4\r\nroleXX"], [b"$4\r\nrole\r", b"X"]):
            c = Connection()
            replies = c.ask(INFO_REPLICATION)
            for data in reads:
                c.receive(data)
            self.assertEqual(
                c.violations, ["not a Redis reply: a bulk not ended by CRLF"]
            )
            self.assertIsInstance(replies.replies[0], ProtocolError)
            self.assertTrue(c.dropped)
        c = Connection()
        replies = c.ask(INFO_REPLICATION)
        c.receive(b"$4\r\nrole\r")
        c.receive(b"\n")
        self.assertEqual(replies.replies, [b"role"])
        self.assertEqual(c.violations, [])

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


class ArrayTests(SynchronousTestCase):
    """
    A multi-bulk reply is read only where the command waiting asked for
    one, within its limit of elements, bytes and depth.
    """

    def test_hello_reply_read(self) -> None:
        """HELLO's reply, read by the parser, is its flat map, bulks as bytes."""
        c = Connection()
        replies = ArrayReplies()
        c.ask_all(HELLO, replies)
        c.receive(HELLO_REPLY)
        [reply] = replies.replies
        assert isinstance(reply, list)
        self.assertEqual(len(reply), 14)
        self.assertEqual(parse_hello_role(reply), "master")
        self.assertEqual(c.violations, [])

    def test_hello_of_a_sentinel(self) -> None:
        """
        HELLO's mode ``sentinel`` (a Redis Sentinel, which names no role)
        raises NotADataServer; a cluster node's names its role.
        """
        sentinel = [b"server", b"redis", b"proto", 2, b"mode", b"sentinel"]
        sentinel += [b"modules", []]
        error = self.assertRaises(NotADataServer, parse_hello_role, sentinel)
        self.assertEqual(str(error), "a Redis Sentinel, not a data server")
        node = [b"server", b"redis", b"mode", b"cluster", b"role", b"replica"]
        self.assertEqual(parse_hello_role(node), "slave")

    def test_array_only_where_asked(self) -> None:
        """
        In a pipeline, the array goes to the waiter that allows it; the same
        array where a waiter without a limit stands breaks the protocol.
        """
        c = Connection()
        pong, hello = Replies(), ArrayReplies()
        c.ask_all(PING + HELLO, pong, hello)
        c.receive(b"+PONG\r\n" + HELLO_REPLY)
        self.assertEqual(pong.replies, ["PONG"])
        self.assertEqual(len(hello.replies), 1)
        c = Connection()
        hello, pong = ArrayReplies(), Replies()
        c.ask_all(HELLO + PING, hello, pong)
        c.receive(b"+PONG\r\n" + HELLO_REPLY)
        self.assertEqual(c.violations, ["unexpected reply: '*14'"])
        self.assertTrue(c.dropped)

    def test_element_cap(self) -> None:
        """
        An array announcing more elements than the limit is refused when its
        count is read, and so is one whose nested arrays add up to more.
        """
        c = Connection()
        c.ask_all(HELLO, ArrayReplies())
        c.receive(b"*1000000000\r\n")
        self.assertEqual(c.violations, ["reply too long: over 128 elements"])
        self.assertEqual(c.buffered, 0)
        c = Connection()
        c.ask_all(HELLO, ArrayReplies(ArrayLimit(elements=10, size=8192, depth=4)))
        c.receive(b"*2\r\n*4\r\n:1\r\n:2\r\n:3\r\n:4\r\n*5\r\n")
        self.assertEqual(c.violations, ["reply too long: over 10 elements"])

    def test_byte_cap(self) -> None:
        """
        Bulks inside an array count against its byte budget, refused when
        the bulk's length is read: no array holds more than its limit.
        """
        c = Connection()
        replies = ArrayReplies()
        c.ask_all(HELLO, replies)
        c.receive(b"*3\r\n$4000\r\n" + b"x" * 4000 + b"\r\n$4000\r\n")
        self.assertEqual(c.violations, [])
        c.receive(b"y" * 4000 + b"\r\n$1000\r\n")
        self.assertEqual(c.violations, ["reply too long: over 8192 bytes"])
        self.assertIsInstance(replies.replies[0], ProtocolError)
        self.assertEqual(c.buffered, 0)

    def test_status_lines_count_too(self) -> None:
        """Status, error and integer elements count against the byte budget."""
        c = Connection()
        c.ask_all(HELLO, ArrayReplies(ArrayLimit(elements=128, size=100, depth=4)))
        c.receive(b"*100\r\n" + b"+" + b"z" * 60 + b"\r\n" + b":12345678\r\n" * 3)
        self.assertEqual(c.violations, ["reply too long: over 100 bytes"])

    def test_depth_cap(self) -> None:
        """Arrays nested deeper than the limit break the protocol."""
        c = Connection()
        c.ask_all(HELLO, ArrayReplies())
        c.receive(b"*1\r\n*1\r\n*1\r\n*1\r\n")
        self.assertEqual(c.violations, [])
        c.receive(b"*1\r\n")
        self.assertEqual(c.violations, ["reply too long: arrays nested 5 deep"])

    def test_nested_and_null_elements(self) -> None:
        """Nested, empty and null arrays and null bulks are read as txredisapi does."""
        c = Connection()
        replies = ArrayReplies()
        c.ask_all(HELLO, replies)
        c.receive(b"*4\r\n*2\r\n$1\r\na\r\n:1\r\n*0\r\n*-1\r\n$-1\r\n")
        self.assertEqual(replies.replies, [[[b"a", 1], [], None, None]])
        self.assertEqual(c.violations, [])

    def test_bad_counts_inside(self) -> None:
        """A count that is not a number, inside an array, is not a Redis reply."""
        for line in (b"$x\r\n", b"*-5\r\n", b"$-3\r\n"):
            c = Connection()
            c.ask_all(HELLO, ArrayReplies())
            c.receive(b"*2\r\n" + line)
            self.assertEqual(len(c.violations), 1, line)
            self.assertTrue(c.violations[0].startswith("not a Redis reply"), line)

    def test_array_after_array(self) -> None:
        """A second array nobody asked for, after HELLO's, is a violation."""
        c = Connection()
        c.ask_all(HELLO, ArrayReplies())
        c.receive(HELLO_REPLY + b"*0\r\n")
        self.assertEqual(c.violations, ["unexpected reply: '*0'"])


class Repeats(Replies):
    """A ReplyTo that also counts the times it was told replies repeated."""

    def __init__(self) -> None:
        super().__init__()
        self.repeats = 0

    def repeated(self) -> None:
        self.repeats += 1


class KnownReplyTests(SynchronousTestCase):
    """Replies remembered by their bytes skip the parser, and only then."""

    def pipeline(self, c: Connection, first: Repeats) -> tuple[Replies, ArrayReplies]:
        waiters = (Replies(), ArrayReplies())
        c.ask_all(PING + exists_command("drain") + HELLO, first, *waiters)
        return waiters

    def test_repeat_skips_the_parser(self) -> None:
        """
        The same bytes, while the same commands wait, are not parsed: the
        first waiter is told they repeated, once, and the others nothing;
        other bytes are parsed and handed on as usual.
        """
        c = Connection()
        data = b"+PONG\r\n:0\r\n" + HELLO_REPLY
        first = Repeats()
        drain, hello = self.pipeline(c, first)
        c.receive(data)
        replies = [first.replies[0], drain.replies[0], hello.replies[0]]
        c.protocol.remember(replies, first)
        parsed = len(c.lines)
        for repeat in range(1, 4):
            drain, hello = self.pipeline(c, first)
            c.receive(data)
            self.assertEqual(first.repeats, repeat)
        self.assertEqual(len(c.lines), parsed)
        self.assertEqual(
            (len(first.replies), drain.replies, hello.replies), (1, [], [])
        )
        self.assertEqual(c.protocol.replyQueue.waiting, [])
        drain, hello = self.pipeline(c, first)
        c.receive(b"+PONG\r\n:1\r\n" + HELLO_REPLY)
        self.assertGreater(len(c.lines), parsed)
        self.assertEqual((first.repeats, drain.replies), (3, [1]))
        self.assertEqual(c.violations, [])

    def test_repeat_then_the_rest_parsed(self) -> None:
        """
        A read that starts with remembered bytes, while more commands wait
        than remembered (INFO after the pipeline), hands the repeat on in
        one call and reads only what follows, for the next waiter (a whole
        bulk, without the line parser); what follows with nobody waiting
        for it breaks the protocol.
        """
        c = Connection()
        data = b"+PONG\r\n:0\r\n" + HELLO_REPLY
        first = Repeats()
        drain, hello = self.pipeline(c, first)
        c.receive(data)
        c.protocol.remember([first.replies[0], 0, hello.replies[0]], first)
        parsed = len(c.lines)
        drain, hello = self.pipeline(c, first)
        info = c.ask(INFO_REPLICATION)
        c.receive(data + b"$16\r\nrole:master\r\nx:1\r\n")
        self.assertEqual(first.repeats, 1)
        self.assertEqual((drain.replies, hello.replies), ([], []))
        self.assertEqual(info.replies, [b"role:master\r\nx:1"])
        self.assertEqual(c.lines[parsed:], [])
        self.assertEqual(c.protocol.replyQueue.waiting, [])
        self.pipeline(c, first)
        c.receive(data + b"+PONG\r\n")
        self.assertEqual(first.repeats, 2)
        self.assertEqual(c.violations, ["unexpected reply: '+PONG'"])

    def test_repeat_needs_the_same_waiters(self) -> None:
        """
        Remembered bytes read while other commands wait, or fewer, go
        through the parser: a reply nobody asked for is refused.
        """
        c = Connection()
        data = b"+PONG\r\n:0\r\n"
        first, second = Repeats(), Replies()
        c.ask_all(PING + exists_command("drain"), first, second)
        c.receive(data)
        c.protocol.remember(first.replies + second.replies, first)
        other, again = Repeats(), Replies()
        c.ask_all(PING + exists_command("drain"), other, again)
        c.receive(data)
        self.assertEqual((other.replies, again.replies), (["PONG"], [0]))
        only = c.ask()
        c.receive(data)
        self.assertEqual(only.replies, ["PONG"])
        self.assertEqual(c.violations, ["unexpected reply: ':0'"])
        self.assertEqual(first.repeats + other.repeats, 0)

    def test_repeat_needs_an_idle_parser(self) -> None:
        """Bytes equal to remembered ones, read mid-reply, are parsed as data."""
        c = Connection()
        first = Repeats()
        waiters = (first, ArrayReplies())
        c.ask_all(PING + HELLO, *waiters)
        c.receive(b"+PONG\r\n*2\r\n")
        c.protocol.factory.known = (b":0\r\n:1\r\n", 2, waiters[1])
        c.receive(b":0\r\n:1\r\n")
        self.assertEqual(waiters[1].replies, [[0, 1]])

    def test_errors_are_not_remembered(self) -> None:
        """Replies whose bytes cannot be told back are not remembered."""
        c = Connection()
        first = Repeats()
        c.protocol.remember(["PONG", 0], first)
        c.protocol.remember(["PONG", ProtocolError("x")], first)
        self.assertIsNone(c.protocol.factory.known)
        c.protocol.remember(["PONG", 0], first)
        self.assertEqual(c.protocol.factory.known, (b"+PONG\r\n:0\r\n", 2, first))

    def test_encode_reads_back(self) -> None:
        """Whatever encode_reply encodes, the parser reads back as it was."""
        for reply in ["OK", 0, -7, b"", b"a\r\nb", None, [b"x", [1, []], None]]:
            encoded = encode_reply(reply)
            assert encoded is not None
            c = Connection()
            replies = ArrayReplies()
            c.ask_all(HELLO, replies)
            c.receive(encoded)
            self.assertEqual(replies.replies, [reply], encoded)
        for unknown in ["QUEUED", "a\nb", True, ValueError("x"), 1.5]:
            self.assertIsNone(encode_reply(unknown))


class WholeBulkTests(SynchronousTestCase):
    """
    A bulk read whole and alone (INFO's reply) reaches its waiter without
    the line parser, exactly as the parser would hand it on.
    """

    def test_whole_bulk_skips_the_parser(self) -> None:
        """
        A whole bulk in one read, while its command waits, is handed on as
        bytes with no line parsed and nothing buffered; the parser is idle
        for the next reply.
        """
        c = Connection()
        for body in (b"# Replication\r\nrole:master\r\n", b"", b"$4\r\nrole"):
            info = c.ask(INFO_REPLICATION)
            c.receive(b"$%d\r\n%s\r\n" % (len(body), body))
            self.assertEqual(info.replies, [body])
        self.assertEqual(c.lines, [])
        self.assertEqual(c.buffered, 0)
        pong = c.ask()
        c.receive(b"+PONG\r\n")
        self.assertEqual(pong.replies, ["PONG"])
        self.assertEqual(c.violations, [])

    def test_same_outcome_as_the_parser(self) -> None:
        """
        Bulks well formed or not, whole in one read, or with their first
        byte read apart (then the line parser reads them): the same replies
        and the same violations.
        """
        bulks = [
            b"$4\r\nrole\r\n",
            b"$004\r\nrole\r\n",
            b"$0\r\n\r\n",
            b"$-1\r\n",
            b"$4\r\nroleXX",
            b"$4\r\nrole\r\n+PONG\r\n",
            b"$5\r\nrole\r\n",
            b"$+4\r\nrole\r\n",
            b"$ 4\r\nrole\r\n",
            b"$\r\n\r\n",
            b"$%d\r\n" % (MAX_BULK + 1) + b"x" * 8 + b"\r\n",
        ]
        for data in bulks:
            outcomes = []
            for reads in ([data], [data[:1], data[1:]]):
                c = Connection()
                info = c.ask(INFO_REPLICATION)
                for read in reads:
                    c.receive(read)
                replies = [
                    f"error: {r}" if isinstance(r, Exception) else r
                    for r in info.replies
                ]
                outcomes.append((replies, c.violations, c.dropped))
            self.assertEqual(outcomes[0], outcomes[1], data)

    def test_nobody_waiting(self) -> None:
        """A whole bulk nobody asked for still breaks the protocol."""
        c = Connection()
        c.receive(b"$4\r\nrole\r\n")
        self.assertEqual(c.violations, ["unexpected reply: '$4'"])
        self.assertTrue(c.dropped)


class ParseTests(SynchronousTestCase):
    """What INFO replication and HELLO say, read defensively."""

    def test_common_values_shared(self) -> None:
        """
        What every instance's health keeps is shared where it is the same:
        a master listing no replica is one Replication, and the role and
        link status of replicas are one string each, however many INFO
        replies are read.
        """
        master = b"# Replication\r\nrole:master\r\nconnected_slaves:0\r\n"
        self.assertIs(parse_replication(master), parse_replication(master))
        self.assertEqual(parse_replication(master).role, "master")
        replica = (
            b"role:slave\r\nmaster_host:10.0.0.1\r\nmaster_port:6379\r\n"
            b"master_link_status:up\r\n"
        )
        first, second = parse_replication(replica), parse_replication(replica)
        self.assertEqual(
            (first.role, first.master_port, first.master_link_status),
            ("slave", 6379, "up"),
        )
        self.assertIs(first.role, second.role)
        self.assertIs(first.master_link_status, second.master_link_status)
        listing = master + b"slave0:ip=10.0.0.2,port=6380,state=online\r\n"
        self.assertEqual(parse_replication(listing).replicas, (("10.0.0.2", 6380),))

    def test_replicas_listed(self) -> None:
        """
        A master's slaveN lines give each replica's address once; lines that
        are not host and port are dropped.
        """
        info = (
            b"# Replication\r\nrole:master\r\nconnected_slaves:6\r\n"
            b"slave0:ip=10.0.0.6,port=6379,state=online,offset=1,lag=0\r\n"
            b"slave1:ip=::1,port=6380,state=wait_bgsave,offset=0,lag=0\r\n"
            b"slave2:ip=10.0.0.6,port=6379,state=online,offset=1,lag=0\r\n"
            b"slave3:ip=../../etc,port=1,state=online\r\n"
            b"slave4:ip=10.0.0.7,port=99999\r\n"
            b"slave5:ip=10.0.0.8\r\n"
            b"slavex:ip=10.0.0.9,port=1\r\n"
            b"master_repl_offset:1\r\n"
        )
        replication = parse_replication(info)
        self.assertEqual(replication.role, "master")
        self.assertEqual(replication.replicas, (("10.0.0.6", 6379), ("::1", 6380)))

    def test_listed_replicas_bounded(self) -> None:
        """However many lines a master lists, at most MAX_LISTED_REPLICAS are kept."""
        info = b"role:master\r\n" + b"".join(
            b"slave%d:ip=10.0.%d.%d,port=6379\r\n" % (i, i // 256, i % 256)
            for i in range(1000)
        )
        self.assertEqual(len(parse_replication(info).replicas), MAX_LISTED_REPLICAS)

    def test_only_the_first_replica_lines_read(self) -> None:
        """
        Only the first MAX_LISTED_REPLICAS slaveN lines are read (Redis
        writes one per replica), whatever they name: a reply of thousands
        of lines naming one replica is not read to its end.
        """
        info = b"role:master\r\n" + b"".join(
            b"slave%d:ip=10.0.0.1,port=6379\r\n" % i for i in range(MAX_LISTED_REPLICAS)
        )
        later = b"slave999:ip=10.0.0.2,port=6379\r\n"
        self.assertEqual(
            parse_replication(info + later).replicas, (("10.0.0.1", 6379),)
        )

    def test_only_the_first_replica_fields_read(self) -> None:
        """
        Of a slaveN line only the first 8 fields are read (Redis writes
        five, ip and port first): a line of 60,000 commas is not split
        whole, and a port after them is not read.
        """
        many = "ip=10.0.0.1,port=6379" + ",x" * 60_000
        self.assertEqual(parse_listed_replica(many), ("10.0.0.1", 6379))
        late_port = "ip=10.0.0.1" + ",x" * 7 + ",port=6379"
        self.assertIsNone(parse_listed_replica(late_port))

    def test_listed_replica_inet_aton_forms(self) -> None:
        """
        An IPv4 address listed in a form inet_aton reads (as every client
        through glibc connects to it) is given as the dotted address; a host
        name is left as it is.
        """
        for written, address in [
            ("127.1", "127.0.0.1"),
            ("2130706433", "127.0.0.1"),
            ("0x7f.0.0.1", "127.0.0.1"),
            ("10.0.0.05", "10.0.0.5"),
            ("010.0.0.1", "8.0.0.1"),
            ("0", "0.0.0.0"),
            ("localhost", "localhost"),
            ("1.example", "1.example"),
            ("::ffff:127.0.0.1", "127.0.0.1"),
        ]:
            self.assertEqual(
                parse_listed_replica(f"ip={written},port=6379,state=online"),
                (address, 6379),
                written,
            )

    def test_replicas_do_not_change_the_role(self) -> None:
        """Two replies with the same role fields are equal, whatever they list."""
        one = parse_replication(b"role:master\r\nslave0:ip=a,port=1\r\n")
        two = parse_replication(b"role:master\r\n")
        self.assertEqual(one, two)

    def test_role_fields_no_redis_writes(self) -> None:
        """
        Role fields no Redis writes raise BadInfo, naming the field and its
        value, printable and cut: a role other than master or slave, a port
        that is not 1--65535 in ASCII digits (a superscript digit, 5,000
        digits, which int() refuses), a master host that is no host name,
        a link status other than up or down. Absent fields are None.
        """
        replica = b"role:slave\r\nmaster_host:10.0.0.1\r\nmaster_port:6379\r\n"
        bad = [
            (b"role:<script>\x1b[2J\r\n", "role '<script>\\x1b[2J'"),
            (b"role:sentinel\r\n", "role 'sentinel'"),
            (replica + b"master_port:\xc2\xb2\r\n", "master_port '\xb2'"),
            (replica + b"master_port:" + b"9" * 5000 + b"\r\n", "master_port '999"),
            (replica + b"master_port:99999\r\n", "master_port '99999'"),
            (replica + b"master_port:0\r\n", "master_port '0'"),
            (replica + b"master_port:-1\r\n", "master_port '-1'"),
            (replica + b"master_host:" + b"h" * 60000 + b"\r\n", "master_host 'hhh"),
            (replica + b"master_host:a\x00b\r\n", "master_host 'a\\x00b'"),
            (replica + b"master_link_status:sideways\r\n", "master_link_status"),
        ]
        for info, text in bad:
            error = self.assertRaises(BadInfo, parse_replication, info)
            self.assertIn(text, str(error), info[:80])
            self.assertLess(len(str(error)), 100)
        ipv6 = parse_replication(b"role:slave\r\nmaster_host:::1\r\nmaster_port:1\r\n")
        self.assertEqual((ipv6.master_host, ipv6.master_port), ("::1", 1))
        bare = parse_replication(b"role:slave\r\n")
        self.assertEqual((bare.master_host, bare.master_port), (None, None))
        self.assertIsNone(parse_replication(b"# Replication\r\n").role)

    def test_hello_role(self) -> None:
        """HELLO's role, in INFO's words; None when it names none we know."""
        self.assertEqual(parse_hello_role([b"role", b"replica"]), "slave")
        self.assertEqual(parse_hello_role([b"role", b"master"]), "master")
        self.assertIsNone(parse_hello_role([b"role", b"sentinel"]))
        self.assertIsNone(parse_hello_role([b"server", b"redis", b"role"]))
        self.assertIsNone(parse_hello_role([]))
        # Not a bulk: nothing Redis writes, so no role (INFO says).
        self.assertIsNone(parse_hello_role([b"role", []]))
        self.assertIsNone(parse_hello_role([b"role", [b"master"]]))
        self.assertIsNone(parse_hello_role([b"role", 1]))

    def test_exists_command(self) -> None:
        """EXISTS with a key, as RESP bytes (UTF-8, binary safe)."""
        self.assertEqual(
            exists_command("dr\u00e4in"),
            b"*2\r\n$6\r\nEXISTS\r\n$6\r\ndr\xc3\xa4in\r\n",
        )


class FootprintTests(SynchronousTestCase):
    """A kept connection's protocol stays small: one is kept per instance."""

    def test_attribute_names_stay_shared(self) -> None:
        """
        After replies of every kind (a status line, an integer, HELLO's
        multi-bulk, INFO's bulk), the protocol has stored at most 29
        attributes of its own: CPython 3.11 shares the attribute names of a
        class's instances up to 29, and gives each instance a dictionary of
        its own from the 30th (1.3 KB more per instance, measured).
        """
        factory = ConnectionFactory(lambda p: None, lambda p, reason: None)
        protocol = factory.buildProtocol(None)
        protocol.makeConnection(StringTransport())
        waiters = (Replies(), Replies(), ArrayReplies(), Replies())
        commands = PING + exists_command("drain") + HELLO + INFO_REPLICATION
        protocol.send_pipeline(commands, waiters)
        protocol.dataReceived(
            b"+PONG\r\n:0\r\n" + HELLO_REPLY + b"$11\r\nrole:master\r\n"
        )
        self.assertEqual(
            [w.replies[0] for w in (waiters[0], waiters[1], waiters[3])],
            ["PONG", 0, b"role:master"],
        )
        self.assertLessEqual(len(vars(protocol)), 29, sorted(vars(protocol)))


class FastPathTests(TestCase):
    """
    The fast paths run on a real TCP connection: commands written straight
    to the socket, ``+PONG`` handed on without the line parser. They touch
    private internals of Twisted and txredisapi; an upgrade that silently
    disables them fails here.
    """

    def parser_reads(self) -> list[bytes]:
        """What LineReceiver's parser is handed from now on, read by read."""
        parsed: list[bytes] = []
        parse = txredisapi.LineReceiver.dataReceived

        def counted(self: Any, data: bytes, unpause: bool = False) -> Any:
            parsed.append(data)
            return parse(self, data, unpause)

        self.patch(txredisapi.LineReceiver, "dataReceived", counted)
        return parsed

    def tls_server(self) -> Any:
        """A real redis-server over TLS, and a TLS endpoint to it."""
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        certs = make_certificates(directory)
        server = RedisServer(tls=certs).start()
        self.addCleanup(server.stop)
        instance = RedisInstance(
            "r",
            LOOPBACK,
            server.port,
            tls=True,
            ca_file=certs.ca_file,
            ca_certificates=parse_certificates(Path(certs.ca_file).read_bytes()),
        )
        return wrapClientTLS(
            client_tls(instance), TCP4ClientEndpoint(reactor, LOOPBACK, server.port)
        )

    async def test_fast_paths_taken_on_real_tcp(self) -> None:
        """
        100 PINGs, each sent once the previous reply is in, to a real
        redis-server: every PING goes out without Twisted's buffered write,
        and every PONG is read by the lean dispatch and reaches its waiter
        without the transport's doRead or LineReceiver's parser.
        """
        server = RedisServer().start()
        self.addCleanup(server.stop)
        parsed = self.parser_reads()
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

        # Read by the lean dispatch itself, as in the agent: never through
        # the transport's doRead.
        self.assertTrue(lean_dispatch(reactor))
        self.addCleanup(delattr, reactor, "doIteration")
        twisted_reads: list[None] = []
        do_read = transport.doRead

        def counted_read() -> Any:
            twisted_reads.append(None)
            return do_read()

        transport.doRead = counted_read
        protocol.send_to(PING, Next())
        await wait_for(reactor, lambda: len(pongs.replies) == total, 10.0, "PONGs")
        self.assertEqual(pongs.replies, ["PONG"] * total)
        self.assertEqual(buffered_writes, [])
        self.assertEqual(twisted_reads, [])
        self.assertEqual(parsed, [])
        self.assertEqual(lost, [])
        # Once lost, the transport no longer holds the protocol.
        protocol.drop()
        await wait_for(reactor, lambda: lost == [protocol], 10.0, "the loss")
        self.assertNotIn("_sentinel_direct_read", vars(transport))

    async def test_tls_command_sent_at_once(self) -> None:
        """
        Over TLS, a command is encrypted and sent to the socket when it is
        written, as a plain one is, not a reactor turn later (Twisted's TLS
        transport gathers small writes) and then at the poll after (its TCP
        transport's buffered write): a check's deadline runs from its
        launch, and a stall of the agent in between left Redis no time.
        """
        factory = ConnectionFactory(lambda p: None, lambda p, reason: self.fail(reason))
        protocol: RedisClientProtocol = await self.tls_server().connect(factory)
        self.addCleanup(protocol.drop)
        await protocol.when_secure()
        lower = protocol.transport.transport
        self.assertIs(type(lower), tcp.Client)
        handed: list[bytes] = []
        write = lower.write

        def counted_write(data: bytes) -> None:
            handed.append(data)
            write(data)

        lower.write = counted_write
        reply = protocol.send(PING)
        # Encrypted and handed to TCP now, and sent: nothing left to write.
        self.assertEqual(len(handed), 1)
        self.assertEqual((lower.dataBuffer, lower._tempDataBuffer), (b"", []))
        self.assertNotIn(lower, reactor.getWriters())
        self.assertEqual(await reply, "PONG")

    async def test_reply_unread_seen_over_tcp_and_tls(self) -> None:
        """
        PING's reply, in the socket while the reactor does not read it, is
        seen unread on a real TCP connection and through a TLS one (whose
        transport hands `socket` on to TCP's), and is still read whole once
        the reactor reads again: only peeked at.
        """
        plain = RedisServer().start()
        self.addCleanup(plain.stop)
        endpoints = [
            TCP4ClientEndpoint(reactor, LOOPBACK, plain.port),
            self.tls_server(),
        ]
        for endpoint in endpoints:
            factory = ConnectionFactory(
                lambda p: None, lambda p, reason: self.fail(reason)
            )
            protocol: RedisClientProtocol = await endpoint.connect(factory)
            self.addCleanup(protocol.drop)
            if endpoint is not endpoints[0]:
                await protocol.when_secure()
            lower = getattr(protocol.transport, "transport", protocol.transport)
            self.assertIs(type(lower), tcp.Client)
            self.assertFalse(protocol.unread())
            lower.stopReading()
            reply = protocol.send(PING)
            await wait_for(reactor, protocol.unread, 10.0, "the reply, unread")
            lower.startReading()
            self.assertEqual(await reply, "PONG")
            self.assertFalse(protocol.unread())

    async def test_info_reply_skips_the_parser(self) -> None:
        """
        INFO replication sent to a real redis-server, 20 times, each once
        the previous reply is in: every reply, read whole, reaches its
        waiter as the bulk's bytes without LineReceiver's parser.
        """
        server = RedisServer().start()
        self.addCleanup(server.stop)
        parsed = self.parser_reads()
        factory = ConnectionFactory(lambda p: None, lambda p, reason: self.fail(reason))
        endpoint = TCP4ClientEndpoint(reactor, LOOPBACK, server.port)
        protocol: RedisClientProtocol = await endpoint.connect(factory)
        self.addCleanup(protocol.drop)
        infos = Replies()
        total = 20

        class Next:
            def callback(self, reply: object) -> None:
                infos.callback(reply)
                if len(infos.replies) < total:
                    protocol.send_to(INFO_REPLICATION, self)

        protocol.send_to(INFO_REPLICATION, Next())
        await wait_for(reactor, lambda: len(infos.replies) == total, 10.0, "INFOs")
        self.assertEqual(
            {parse_replication(reply).role for reply in infos.replies}, {"master"}
        )
        # Any reply the kernel split in two is parsed.
        self.assertLess(len(parsed), 3)

    async def test_pipeline_repeats_skip_the_parser(self) -> None:
        """
        PING, EXISTS and HELLO pipelined to a real redis-server, 100 times,
        each once the previous replies are in: the first replies are parsed
        and remembered, and the others are known repeats, without the
        parser, in one write each.
        """
        server = RedisServer().start()
        self.addCleanup(server.stop)
        # Each round the parser reads starts with PING's reply.
        parsed: list[str] = []
        parse = txredisapi.BaseRedisProtocol.lineReceived

        def counted(self: Any, line: str) -> Any:
            if line == "+PONG":
                parsed.append(line)
            return parse(self, line)

        self.patch(txredisapi.BaseRedisProtocol, "lineReceived", counted)
        factory = ConnectionFactory(lambda p: None, lambda p, reason: self.fail(reason))
        endpoint = TCP4ClientEndpoint(reactor, LOOPBACK, server.port)
        protocol: RedisClientProtocol = await endpoint.connect(factory)
        self.addCleanup(protocol.drop)
        commands = PING + exists_command("drain") + HELLO
        rounds: list[list[object]] = []
        total = 100

        class Gather(Replies):
            def callback(self, reply: object) -> None:
                super().callback(reply)
                if len(self.replies) < 3:
                    return
                rounds.append(self.replies)
                protocol.remember(self.replies, self)
                self.replies = []
                if len(rounds) < total:
                    send()

            def repeated(self) -> None:
                rounds.append(rounds[-1])
                if len(rounds) < total:
                    send()

        gather = Gather()
        hello = ArrayReplies()
        hello.callback = gather.callback  # type: ignore[method-assign]

        def send() -> None:
            protocol.send_pipeline(commands, (gather, gather, hello))

        send()
        await wait_for(reactor, lambda: len(rounds) == total, 10.0, "replies")
        self.assertEqual({(r[0], r[1], parse_hello_role(r[2])) for r in rounds},
                         {("PONG", 0, "master")})  # fmt: skip
        # The first round is parsed, and any round the kernel split in two.
        self.assertLess(len(parsed), 5)
        self.assertGreaterEqual(len(parsed), 1)

"""
The Redis protocol of a health check: txredisapi's reply parser, bounded,
driven with prebuilt commands.

A reply is accepted only when a command of ours waits for it, and only when
it is small. Anything else breaks the protocol: bytes that arrive while no
command waits (before the first command, after the last reply, a second
reply to one command), a multi-bulk reply where the command waiting did not
ask for one (only HELLO does, within its `ArrayLimit`: elements, bytes and
depth, judged line by line before txredisapi buffers anything), a status or
error line longer than `MAX_LINE`, a bulk announced longer than `MAX_BULK`
(refused when its ``$N`` line is read, before any of it is buffered), or
anything that is not RESP2. A violation drops the connection at
once, parsing nothing more of what was already received, tells the
connection's owner why, and fails the commands waiting with `ProtocolError`.
So memory per connection stays bounded whatever the server sends, where
txredisapi alone queues every reply nobody waits for and trusts every
announced length (DESIGN.md section 7). An error reply's text, which goes
on to the log, ZooKeeper and the page, is kept printable: characters a
terminal would act on are escaped, and it is cut to `MAX_ERROR_TEXT`.

A check pipelines its commands (PING, then EXISTS of the drain key and
HELLO for the role, when asked for, and INFO replication when wanted) in one
write, and their replies come in order, one per waiter. A connection
remembers the bytes of the last replies its owner asked it to (`remember`):
a read that repeats them exactly, while the same commands wait and nothing
is half read, is not parsed at all; the first waiter is told the replies
repeated, in one call, as a lone ``+PONG`` is handed on. The replies of an
unchanged instance are the same bytes check after check, so this is the
common case; the parser runs when something changed, and for what follows
the repeated bytes in the same read (INFO's reply, which changes).

Every touch of a private internal of txredisapi or of Twisted's connections
is in this module, each with its reason, but for the reads: a plain TCP
connection is read by the reactor's lean dispatch itself, straight into
``dataReceived`` (`sentinel.dispatch.read_directly`), as its commands are
written straight to the socket here. A TLS connection's commands are
encrypted and sent when written too: Twisted's TLS transport holds small
writes until the next reactor turn, and its TCP transport the ciphertext
until the poll after, while the check's deadline runs.
``tests/test_protocol.py`` checks on a real TCP connection, and a real TLS
one, that the fast paths are still taken, so that an upgrade which silently
disables one is caught.
"""

from __future__ import annotations

from collections.abc import Callable
from errno import ENOTCONN
from socket import MSG_DONTWAIT, MSG_PEEK, SO_ERROR, SOL_SOCKET, inet_aton, inet_ntoa
from typing import Any, Protocol

import attr
import txredisapi
from twisted.internet import error as neterror
from twisted.internet import tcp
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IAddress, IHandshakeListener
from twisted.internet.protocol import Factory
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from sentinel.checks import canonical_address, host_problem, printable, short_decimal
from sentinel.dispatch import read_directly, stop_reading_directly
from sentinel.echoes import before_quotes
from sentinel.observation import Replication
from sentinel.tls import describe_tls_loss

PING = b"*1\r\n$4\r\nPING\r\n"
INFO_REPLICATION = b"*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n"
# HELLO without arguments (Redis 6.2 and later) changes nothing and answers
# the server's properties, its role among them. Every user may run it (it is
# flagged no-auth: ACL rules do not apply), where ROLE is an @admin command.
HELLO = b"*1\r\n$5\r\nHELLO\r\n"
PONG_REPLY = b"+PONG\r\n"

# A status or error line: a PING reply is 7 bytes, Redis's longest error
# texts a few hundred.
MAX_LINE = 4096
# The most of an error reply's text kept (`sentinel.checks.printable`).
MAX_ERROR_TEXT = 512
# A bulk: INFO replication has a line of about 80 bytes per replica, so a
# master with 800 replicas fits.
MAX_BULK = 64 * 1024
# The longest ``$N`` line, CRLF included, that `_whole_bulk` reads: N up
# to MAX_BULK, with a leading zero or two.
_BULK_HEADER = 10
# Replies are small: Twisted's default 64 KiB read buffer is allocated per
# read.
READ_BUFFER = 4096
# The replicas read from one INFO replication: more than any master has, and
# fewer than the 64 KiB bulk can list. Redis writes one slaveN line per
# replica: only the first this many lines are read.
MAX_LISTED_REPLICAS = 256
# The fields of a slaveN line read: Redis writes five (ip, port, state,
# offset, lag), ip and port first.
_REPLICA_FIELDS = 8


@attr.frozen
class ArrayLimit:
    """
    The largest multi-bulk reply a command may have: its elements (nested
    ones included), the bytes of all its lines and bulks, and its depth.
    """

    elements: int
    size: int
    depth: int


# HELLO's reply: 14 elements, about 150 bytes, and a map per loaded module
# (8 elements and an array of its arguments, 4 deep).
HELLO_LIMIT = ArrayLimit(elements=128, size=8192, depth=4)

_REPLY_TYPES = frozenset("+-:$*")
# The digits of the longest integer reply (a signed 64-bit number).
_INT64_DIGITS = 19


class ProtocolError(txredisapi.RedisError):  # type: ignore[misc]
    """The server broke the protocol; the message says how."""


# An error reply (``-ERR ...``), as txredisapi hands it on.
ResponseError: type[Exception] = txredisapi.ResponseError
# What each command still waiting gets when its connection is lost: its
# text is `CLOSED`, or what a TLS alert said.
ConnectionLost: type[Exception] = txredisapi.ConnectionError
CLOSED = "connection lost"
# ... when a socket error lost it (ECONNRESET above all; Twisted keeps no
# errno), not the server's orderly close nor the agent's own abort.
RESET = "connection reset"


def lost_text(why: Failure) -> str:
    """
    What each waiting command is told of a connection lost with `why`:
    `RESET` for a socket error, else `CLOSED`.
    """
    return RESET if type(why.value) is neterror.ConnectionLost else CLOSED


# What Redis writes as it turns a new connection away, before it closes
# it: full (maxclients), or in protected mode.
_TURNED_AWAY = ("ERR max number of clients", "DENIED")


def turned_away(reply: object) -> bool:
    """
    Whether `reply` is the error Redis writes at accept when it turns the
    connection away (``-ERR max number of clients reached``, ``-DENIED
    ...``): the first reply read, whatever was sent, and the connection's
    last.
    """
    return isinstance(reply, ResponseError) and str(reply).startswith(_TURNED_AWAY)


def auth_command(password: str, username: str | None) -> bytes:
    """The RESP bytes of AUTH, with an ACL user name if there is one."""
    args = ["AUTH"] + ([username] if username else []) + [password]
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode("utf-8")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def exists_command(key: str) -> bytes:
    """The RESP bytes of ``EXISTS key``."""
    data = key.encode("utf-8")
    return b"*2\r\n$6\r\nEXISTS\r\n$%d\r\n%s\r\n" % (len(data), data)


class BadInfo(ValueError):
    """An ``INFO replication`` reply whose role fields no Redis writes."""


def parse_replication(info: bytes) -> Replication:
    """
    Pick the role fields out of an ``INFO replication`` reply, and the
    addresses of the replicas its ``slaveN:`` lines list (see
    `parse_listed_replica`; each once, from the first `MAX_LISTED_REPLICAS`
    lines: a reply within the cap on replies built of thousands of lines
    naming one replica cost 4 ms of CPU a read, read whole).
    Role fields no Redis writes (a role other than master or slave, a port
    outside 1--65535, a master host that is no host name or IP address, a
    link status other than up or down) raise `BadInfo`: they would be
    published, and a replica's master address is connected to.
    """
    fields: dict[str, str] = {}
    listed: dict[tuple[str, int], None] = {}
    replica_lines = 0
    for line in info.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key.startswith("slave") and key[5:].isdigit():
            replica_lines += 1
            if replica_lines <= MAX_LISTED_REPLICAS:
                address = parse_listed_replica(value)
                if address is not None:
                    listed[address] = None
        else:
            fields[key] = value.strip()
    role = _known_value(fields, "role", _ROLES)
    replicas = tuple(listed)
    if role != "slave":
        if role == "master" and not replicas:
            return _LONE_MASTER
        return Replication(role=role, replicas=replicas)
    host = fields.get("master_host")
    if host is not None and host_problem(host) is not None:
        raise _bad_field("master_host", host)
    port = fields.get("master_port")
    number = None if port is None else tcp_port(port)
    if port is not None and number is None:
        raise _bad_field("master_port", port)
    return Replication(
        role=role,
        master_host=host,
        master_port=number,
        master_link_status=_known_value(fields, "master_link_status", _LINKS),
        replicas=replicas,
    )


# Every instance's health keeps the last INFO it read: the common values are
# one object for all of them, not a string each (and a master that lists no
# replica, one Replication), 140 bytes per instance.
_ROLES = {value: value for value in ("master", "slave")}
_LINKS = {value: value for value in ("up", "down")}
_LONE_MASTER = Replication(role="master")
# The most of a bad field's value an error keeps.
_BAD_VALUE_TEXT = 64


def _known_value(fields: dict[str, str], key: str, known: dict[str, str]) -> str | None:
    value = fields.get(key)
    if value is None:
        return None
    shared = known.get(value)
    if shared is None:
        raise _bad_field(key, value)
    return shared


def _bad_field(key: str, value: str) -> BadInfo:
    return BadInfo(f"{key} '{printable(value, _BAD_VALUE_TEXT)}'")


def tcp_port(text: str) -> int | None:
    """The TCP port (1--65535) `text` writes in ASCII digits, or None."""
    if not short_decimal(text, 5):
        return None
    number = int(text)
    return number if 1 <= number <= 65535 else None


def parse_listed_replica(value: str) -> tuple[str, int] | None:
    """
    The address of one ``slaveN:ip=...,port=...,state=...`` line, or None
    unless ``ip`` is a host name or IP address and ``port`` a TCP port (what
    a master lists is not trusted: it names what we connect to). An IP
    address is given in its one form (`canonical_address`): written
    otherwise (``::FFFF:10.0.0.5``, ``0:0::1``), the master's own address or
    a configured instance's would be taken for another, and watched and
    published again under a second name. So is an IPv4 address in the
    forms of ``inet_aton`` (``127.1``, ``2130706433``, ``0x7f.0.0.1``,
    ``10.0.0.05``, ``0``): every client through glibc connects to the
    address they write, no name server has such a name, and looked up as
    a name, each was published down, ``no such name``.
    """
    # The first fields only: a line of 60,000 commas cost 6 ms, split whole.
    parts = value.strip().split(",", _REPLICA_FIELDS)[:_REPLICA_FIELDS]
    fields = dict(part.partition("=")[::2] for part in parts)
    host = fields.get("ip", "")
    if host_problem(host) is not None:
        return None
    port = tcp_port(fields.get("port", ""))
    return None if port is None else (canonical_address(inet_aton_form(host)), port)


def inet_aton_form(host: str) -> str:
    """
    The dotted IPv4 address that `host` writes as ``inet_aton`` reads it
    (``127.1``, ``2130706433``, ``0x7f.0.0.1``, octal ``010.0.0.1``), or
    `host` as it is.
    """
    if ":" in host or not host[-1:].isalnum():
        return host
    try:
        return inet_ntoa(inet_aton(host))
    except OSError:
        return host


class NotADataServer(ValueError):
    """A server that answers PING and HELLO but holds no data."""


def parse_hello_role(reply: list[Any]) -> str | None:
    """
    The role in a HELLO reply (a flat map in RESP2), as INFO names it
    (``master`` or ``slave``), or None if it names none of them. A reply
    whose mode is ``sentinel`` raises `NotADataServer`: a Redis Sentinel
    (on the configured port by mistake, say) answers PING and HELLO, names
    no role, answers INFO replication with nothing, and knows no data
    command.
    """
    role = None
    for index in range(0, len(reply) - 1, 2):
        key = reply[index]
        if key == b"role":
            value = reply[index + 1]
            # A bulk, in any reply Redis writes; anything else names none.
            role = _HELLO_ROLES.get(value) if type(value) is bytes else None
        elif key == b"mode" and reply[index + 1] == b"sentinel":
            raise NotADataServer("a Redis Sentinel, not a data server")
    return role


_HELLO_ROLES: dict[object, str] = {
    b"master": "master",
    b"replica": "slave",
    b"slave": "slave",
}


def encode_reply(reply: object) -> bytes | None:
    """
    The RESP2 bytes that the parser reads back as `reply`, or None for a
    reply whose bytes it cannot tell (an error reply: txredisapi drops its
    ``ERR`` prefix; ``QUEUED``: txredisapi counts it).
    """
    if isinstance(reply, bytes):
        return b"$%d\r\n%s\r\n" % (len(reply), reply)
    if isinstance(reply, bool):
        return None
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if isinstance(reply, str):
        if reply == "QUEUED" or "\r" in reply or "\n" in reply:
            return None
        return b"+%s\r\n" % reply.encode("utf-8")
    if reply is None:
        return b"$-1\r\n"
    if isinstance(reply, list):
        parts = [b"*%d\r\n" % len(reply)]
        for element in reply:
            encoded = encode_reply(element)
            if encoded is None:
                return None
            parts.append(encoded)
        return b"".join(parts)
    return None


# The most of a line's start quoted in an error about it.
_QUOTED_START = 40


def lone_lf(line: bytes) -> str:
    """
    The violation of a line that ends with LF alone, not CRLF, quoting its
    start: up to its first quotation mark, as an answer to AUTH is shown
    (`sentinel.echoes`: what follows may quote the password), and cut.
    """
    text = line[: _QUOTED_START + 1].decode("utf-8", "replace")
    start = before_quotes(text)
    if len(start) < len(text):
        start += "..."
    return (
        "not a Redis reply: a line ended by LF alone, not CRLF: "
        f"{printable(start, _QUOTED_START)!r}"
    )


def describe_reply(reply: object) -> str:
    """A short text for a reply that was not the one expected."""
    if isinstance(reply, bytes):
        return f"a bulk of {len(reply)} bytes"
    if reply is None:
        return "a null bulk"
    return repr(str(reply)[:40])


class ReplyTo(Protocol):
    """
    What can wait in txredisapi's reply queue instead of a Deferred: the
    queue only ever calls ``callback(reply)`` on what waits in it. One with
    an ``array_limit`` (an `ArrayLimit`) accepts a multi-bulk reply that
    fits it; without one, a multi-bulk reply breaks the protocol.
    """

    def callback(self, reply: object) -> None:
        """
        Take one reply: a status line (str), a bulk (bytes, or None), an
        integer, or an exception (an error reply, `ProtocolError`, or
        ``txredisapi.ConnectionError`` when the connection is lost).
        """


class RepeatedReplyTo(ReplyTo, Protocol):
    """A ReplyTo told in one call that the replies it waits for repeated."""

    def repeated(self) -> None:
        """
        The replies to this waiter's commands (it waits first among them)
        are those remembered with it (`RedisClientProtocol.remember`).
        """


def _nobody() -> None:
    pass


class _Forgotten:
    """
    Stands in the reply queue for a waiter whose reply nobody wants any
    more: the reply is read, keeping the connection in step, and dropped,
    `heard` told that the server sent one (a lost connection is none). It
    allows what the waiter it replaced allowed.
    """

    __slots__ = ("array_limit", "heard")

    def __init__(
        self, array_limit: ArrayLimit | None, heard: Callable[[], None]
    ) -> None:
        self.array_limit = array_limit
        self.heard = heard

    def callback(self, reply: object) -> None:
        if type(reply) is not ConnectionLost:
            self.heard()


class ConnectionFactory(Factory):
    """
    Builds the one protocol of a connection attempt, without log noise, and
    holds whom that protocol tells when its connection is lost and when the
    server breaks the protocol (with the reason).
    """

    noisy = False

    def __init__(
        self,
        on_lost: Callable[[RedisClientProtocol], None],
        on_violation: Callable[[RedisClientProtocol, str], None],
    ) -> None:
        self.on_lost = on_lost
        self.on_violation = on_violation
        # The protocol's own state, kept here (see RedisClientProtocol):
        # the bytes of the replies it remembers, how many replies they are
        # and whom to tell when they repeat, what the multi-bulk reply being
        # read may still hold, the parser's mode, and the TLS handshake's
        # state.
        self.known: tuple[bytes, int, RepeatedReplyTo] | None = None
        self.array_elements = 0
        self.array_bytes = 0
        self.line_mode = 1
        self.secure = False
        self.securing: Deferred[RedisClientProtocol] | None = None

    def buildProtocol(self, addr: IAddress | None) -> RedisClientProtocol:
        protocol = RedisClientProtocol()
        protocol.factory = self
        return protocol


def _no_transaction() -> tuple[()]:
    return ()


# Only ever cleared (when a connection is lost), never added to: no scripts.
_NO_SCRIPTS: set[str] = set()


@implementer(IHandshakeListener)
class RedisClientProtocol(txredisapi.BaseRedisProtocol):  # type: ignore[misc]
    """
    txredisapi's reply parser, bounded (see the module docstring), driven
    with prebuilt commands. The owner hears when the connection is lost or
    the server broke the protocol and, over TLS, when the handshake is done
    or why it failed.

    Replies come as txredisapi parses them, except that a bulk stays bytes
    (no charset): a status line (str) read where a bulk is due, such as a
    stale ``+PONG`` read as INFO's reply, is told apart from one.

    One is kept per instance, so it stores no attribute of its own beside
    the 29 that txredisapi and Twisted set: CPython 3.11 shares the
    attribute names among all instances of a class only while an instance
    has at most 29; the 30th gives every instance a dictionary of its own
    (1.3 KB more here, measured). What it needs per connection is kept on
    its factory: the reply parser's mode (`line_mode`, which txredisapi
    sets on the first bulk reply), the TLS handshake state, and the replies
    it remembers. A dropped connection is marked by clearing ``connected``,
    which Twisted already sets.
    """

    factory: ConnectionFactory
    connected: int
    # LineReceiver's limit: a longer status or error line breaks the protocol
    # (lineLengthExceeded); a bulk is read in raw mode and capped apart.
    MAX_LENGTH = MAX_LINE

    @property
    def line_mode(self) -> int:
        """LineReceiver's mode (1: lines, 0: a bulk), kept on the factory."""
        return self.factory.line_mode

    @line_mode.setter
    def line_mode(self, mode: int) -> None:
        self.factory.line_mode = mode

    def __init__(self) -> None:
        super().__init__(charset=None, convertNumbers=False)
        # For transactions, pipelines and scripts, which a health check never
        # uses, txredisapi makes two functions, a set and three lists per
        # protocol: about 700 bytes an instance. Shared empty ones stand in
        # (immutable where txredisapi would only add to them).
        self.unwatch_cc = self.commit_cc = _no_transaction
        self.script_hashes = _NO_SCRIPTS
        self.post_proc = self.pipelined_commands = self.pipelined_replies = ()

    def connectionMade(self) -> Any:
        transport = self.transport
        if type(transport) is tcp.Client:
            # Read by the lean dispatch itself, straight into dataReceived;
            # and Twisted's read size, an undocumented attribute of its TCP
            # transport, for when Twisted reads it (a TLS transport reads
            # through its own).
            read_directly(transport, READ_BUFFER, self.dataReceived)
            transport.bufferSize = READ_BUFFER
        return super().connectionMade()

    # TLS

    def when_secure(self) -> Deferred[RedisClientProtocol]:
        """
        Fire with this protocol once the TLS handshake is done, or fail with
        the reason the connection was lost before (a certificate that does
        not verify, say). Cancelling it drops the connection.
        """
        factory = self.factory
        if factory.secure:
            return succeed(self)

        def cancel(_: Deferred[RedisClientProtocol]) -> None:
            factory.securing = None
            self.drop()

        securing: Deferred[RedisClientProtocol] = Deferred(cancel)
        factory.securing = securing
        return securing

    def handshakeCompleted(self) -> None:
        factory = self.factory
        factory.secure = True
        securing, factory.securing = factory.securing, None
        if securing is not None:
            securing.callback(self)

    # Sending

    def send(self, command: bytes) -> Deferred[Any]:
        """Write a prebuilt command; the Deferred fires with its reply."""
        reply: Deferred[Any] = self.replyQueue.get()
        self._write(command)
        return reply

    def send_to(self, command: bytes, waiter: ReplyTo) -> None:
        """
        Write a prebuilt command; its reply goes to `waiter`, which stands in
        txredisapi's reply queue (a DeferredQueue, whose ``waiting`` list
        only ever has ``callback`` called on its entries) instead of a
        Deferred: no Deferred per command.
        """
        self.replyQueue.waiting.append(waiter)
        self._write(command)

    def send_pipeline(self, commands: bytes, waiters: tuple[ReplyTo, ...]) -> None:
        """
        Write prebuilt commands in one write; the reply to each goes to its
        waiter, in order (see `send_to`).
        """
        self.replyQueue.waiting.extend(waiters)
        self._write(commands)

    def forget_replies(self, heard: Callable[[], None] = _nobody) -> bool:
        """
        The replies to every command sent so far are read when they come,
        in step, and dropped (`heard` called for each that the server
        sent): the connection serves on once they are in.
        Once only: False, and nothing forgotten, while replies forgotten
        before have not all come (a server that leaves two checks in a row
        unanswered, the caller drops the connection).
        """
        waiting = self.replyQueue.waiting
        if waiting and type(waiting[0]) is _Forgotten:
            return False
        waiting[:] = [
            _Forgotten(getattr(waiter, "array_limit", None), heard)
            for waiter in waiting
        ]
        return True

    def remember(self, replies: list[object], waiter: RepeatedReplyTo) -> None:
        """
        `replies` (one per command, in order, `waiter` waiting for the
        first) were just read: a read that starts with their bytes, while
        `waiter` waits first and at least as many commands wait, calls
        `waiter.repeated()` for those bytes instead of parsing them, and
        parses the rest (see the module docstring). The waiters after
        `waiter` must be those that waited after it when `replies` were
        read. Replies whose bytes cannot be told (`encode_reply`) are not
        remembered.
        """
        # Their bytes and count are kept, not the replies: HELLO's is a
        # list of about a dozen bulks, 700 bytes an instance.
        factory = self.factory
        factory.known = None
        parts = []
        for reply in replies:
            encoded = encode_reply(reply)
            if encoded is None:
                return
            parts.append(encoded)
        factory.known = (b"".join(parts), len(parts), waiter)

    def _write(self, command: bytes) -> None:
        transport = self.transport
        # Fast path: straight to the socket when Twisted's buffers are empty
        # (``dataBuffer``, and ``_tempDataBuffer``, private to its TCP
        # transport): one system call, where transport.write costs a round
        # trip through the reactor (register for writability, write,
        # unregister). Plain TCP only: a TLS transport wraps the socket (and
        # hands attribute lookups on to it), so writing there would bypass
        # TLS.
        if (
            type(transport) is tcp.Client
            and not transport.dataBuffer
            and not transport._tempDataBuffer
            and not transport.disconnecting
        ):
            try:
                sent = transport.socket.send(command)
            except OSError:
                sent = 0  # The buffered write below meets the error too.
            if sent < len(command):
                transport.write(command[sent:])
        elif type(transport) is BufferingTLSTransport:
            # TLS: Twisted's transport holds a small write until a turn of
            # the reactor later, and its TCP transport the ciphertext until
            # the poll after, while the check's deadline runs from its
            # launch: a stall of the agent in between (a long turn, the
            # process descheduled) left Redis no time at all, and whole
            # slices of healthy instances timed out. Encrypted and sent now,
            # as a plain command is; a send that fails is met again by the
            # reactor's own doWrite, which drops the connection.
            TLSMemoryBIOProtocol.write(transport, command)
            lower: Any = transport.transport
            if (
                type(lower) is tcp.Client
                and lower._tempDataBuffer
                and not lower.disconnecting
            ):
                lower.doWrite()
        else:
            transport.write(command)

    # Receiving

    def dataReceived(self, data: bytes, unpause: bool = False) -> None:
        # Fast path: the common reply, handed to the command waiting without
        # the line parser, when nothing half read is buffered (the line
        # buffer, private to txredisapi's LineReceiver, is empty), no bulk
        # is being read and no multi-bulk reply (HELLO's) half assembled:
        # there, ``+PONG`` is one of its elements.
        if (
            data == PONG_REPLY
            and self.replyQueue.waiting
            and not self._LineReceiver__buffer
            and self.line_mode
            and self.multi_bulk.pending is None
        ):
            self.replyQueue.waiting.pop(0).callback("PONG")
            return
        if not self.connected:
            return  # Dropped: nothing more is read.
        factory = self.factory
        known = factory.known
        if known is not None and data.startswith(known[0]):
            waiting = self.replyQueue.waiting
            count = known[1]
            if (
                waiting
                and waiting[0] is known[2]
                and len(waiting) >= count
                and not self._LineReceiver__buffer
                and factory.line_mode  # (the property's value, without the call)
                and self.multi_bulk.pending is None
            ):
                # These bytes were read before, from the same parser state,
                # as the replies of the same commands: they are again. What
                # follows them (INFO's reply, sent in the same write) is
                # parsed, for the commands still waiting.
                del waiting[:count]
                known[2].repeated()
                data = data[len(known[0]) :]
                if not data:
                    return
                if not self.connected:
                    return  # Dropped: nothing more is read.
        if data[:1] == b"$" and not unpause and self._whole_bulk(data):
            return
        try:
            super().dataReceived(data, unpause)
        except UnicodeDecodeError:
            # LineReceiver decodes each line before lineReceived sees it.
            self.reject("not a Redis reply: undecodable bytes")
            return
        if not self.connected:
            return
        # Part of a line, kept until its CRLF comes (the parser found none
        # after it): only here, never on the common path, is it judged.
        rest = self._LineReceiver__buffer
        if not rest:
            return
        if not self.replyQueue.waiting:
            # Part of a line that no command waits for breaks the protocol
            # when it comes, as a whole line does (`lineReceived`): kept
            # until its line ended, it was read as the start of the next
            # check's reply.
            text = rest[:40].decode("utf-8", "replace")
            self.reject(f"unexpected reply: {text!r}")
            return
        lf = rest.find(b"\n")
        if lf != -1 and rest[lf - 1 : lf] != b"\r":
            # A line ended by LF alone (``+PONG\n``) is no RESP line: kept
            # for a CRLF that never comes, it failed the check only at its
            # deadline, as "timeout".
            self.reject(lone_lf(rest[:lf]))

    def _whole_bulk(self, data: bytes) -> bool:
        # INFO's reply, read whole and alone while nothing else is being
        # parsed (every tenth check, after the repeated PING and HELLO):
        # handed to the command waiting as the parser would hand it, without
        # the dozen calls of its way through raw mode (the line, its length,
        # raw mode, the bulk, its conversion, the reply, line mode again).
        # Only a bulk that the parser would accept as it is, with nothing
        # after it; anything else (a bulk split over reads, followed by more,
        # too long, malformed) is the parser's, which judges it.
        end = data.find(b"\r\n", 1, _BULK_HEADER)
        if end < 0:
            return False
        header = data[1:end]
        if not header.isdigit():  # ASCII digits (bytes), as `_length` asks.
            return False
        length = int(header)
        waiting = self.replyQueue.waiting
        if (
            length > MAX_BULK
            or len(data) != end + length + 4
            or data[-2:] != b"\r\n"
            or not waiting
            or self._LineReceiver__buffer
            or not self.factory.line_mode  # (the property's value, without the call)
            or self.paused
            or self.multi_bulk.pending is not None
            or self.transport.disconnecting
        ):
            return False
        # txredisapi hands a bulk on unconverted (no charset, numbers left
        # as they are: `__init__`).
        waiting.pop(0).callback(data[end + 2 : -2])
        return True

    def lineReceived(self, line: str) -> bool:
        # Every line read in line mode starts a reply or an element of the
        # multi-bulk reply being read: judge it before txredisapi buffers or
        # queues anything.
        kind = line[:1]
        if kind not in _REPLY_TYPES:
            self.reject(f"not a Redis reply: {line[:40]!r}")
        elif not self.replyQueue.waiting:
            self.reject(f"unexpected reply: {line[:40]!r}")
        elif self.multi_bulk.pending is not None:
            if self._element_fits(kind, line) and (
                kind != ":" or self._integer_fits(line)
            ):
                super().lineReceived(line)
        elif kind == "*":
            if self._array_fits(line):
                super().lineReceived(line)
        elif kind == "-":
            super().lineReceived(printable(line, 1 + MAX_ERROR_TEXT))
        elif kind == ":":
            if self._integer_fits(line):
                super().lineReceived(line)
        elif kind != "$" or self._bulk_fits(line):
            super().lineReceived(line)
        # True stops LineReceiver's loop over what it has buffered: after a
        # violation, or when a reply's owner dropped the connection.
        return not self.connected

    def _length(self, line: str) -> int | None:
        # The count of a ``$N`` or ``*N`` line, or None (a violation) if it
        # is not one: ASCII digits, or -1 (int() would also take a sign,
        # spaces, underscores and other scripts' digits). No more digits
        # than a signed 64-bit number's, as for an integer reply: a count
        # is quoted in "reply too long", and 4,000 nines were 4 KB there.
        text = line[1:]
        if not (short_decimal(text, _INT64_DIGITS) or text == "-1"):
            self.reject(f"not a Redis reply: {line[:40]!r}")
            return None
        return int(text)

    def _integer_fits(self, line: str) -> bool:
        # An integer reply is a signed 64-bit number in ASCII digits. Else
        # txredisapi's int() would take a sign, spaces, underscores and
        # other scripts' digits, and what it cannot read would become an
        # error quoting the whole line, controls and all, into the log,
        # ZooKeeper and the page.
        text = line[1:]
        digits = text[1:] if text[:1] == "-" else text
        if short_decimal(digits, _INT64_DIGITS):
            return True
        self.reject(f"not a Redis reply: {line[:40]!r}")
        return False

    def _bulk_fits(self, line: str) -> bool:
        length = self._length(line)
        if length is None:
            return False
        if length > MAX_BULK:
            self.reject(f"reply too long: {length} bytes")
            return False
        return True

    def _array_limit(self) -> ArrayLimit | None:
        # Only the command waiting for this reply may allow an array.
        limit: ArrayLimit | None = getattr(
            self.replyQueue.waiting[0], "array_limit", None
        )
        return limit

    def _array_fits(self, line: str) -> bool:
        # A multi-bulk reply starts: only where asked for, within its limit.
        limit = self._array_limit()
        if limit is None:
            self.reject(f"unexpected reply: {line[:40]!r}")
            return False
        count = self._length(line)
        if count is None:
            return False
        factory = self.factory
        factory.array_elements = limit.elements - max(count, 0)
        factory.array_bytes = limit.size - len(line) - 2
        return self._within(limit)

    def _element_fits(self, kind: str, line: str) -> bool:
        # One more element of the multi-bulk reply being read. Its waiter
        # was handed a reply before the array was complete (txredisapi
        # hands ``+QUEUED`` on wherever it is): the rest is not in step.
        limit = self._array_limit()
        if limit is None:
            self.reject(f"unexpected reply: {line[:40]!r}")
            return False
        factory = self.factory
        factory.array_bytes -= len(line) + 2
        if kind == "$" or kind == "*":
            count = self._length(line)
            if count is None:
                return False
            if kind == "$":
                factory.array_bytes -= max(count, 0) + 2
            else:
                factory.array_elements -= max(count, 0)
                depth, outer = 2, self.multi_bulk.parent
                while outer is not None:
                    depth, outer = depth + 1, outer.parent
                if depth > limit.depth:
                    self.reject(f"reply too long: arrays nested {depth} deep")
                    return False
        return self._within(limit)

    def _within(self, limit: ArrayLimit) -> bool:
        factory = self.factory
        if factory.array_elements < 0:
            self.reject(f"reply too long: over {limit.elements} elements")
            return False
        if factory.array_bytes < 0:
            self.reject(f"reply too long: over {limit.size} bytes")
            return False
        return True

    def lineLengthExceeded(self, line: bytes) -> None:
        self.reject(f"reply too long: {len(line)} bytes")

    def rawDataReceived(self, data: bytes) -> None:
        # txredisapi's, but for the CRLF that ends a bulk, which it drops
        # unread: anything else there is not RESP.
        if self.bulk_length:
            data, rest = data[: self.bulk_length], data[self.bulk_length :]
            self.bulk_length -= len(data)
        else:
            rest = b""
        buffer = self.bulk_buffer
        buffer.extend(data)
        if self.bulk_length == 0:
            if buffer[-2:] != b"\r\n":
                self.reject("not a Redis reply: a bulk not ended by CRLF")
                return
            bulk = bytes(buffer[:-2])
            del buffer[:]
            self.bulkDataReceived(bulk)
            self.setLineMode(extra=rest)

    def setLineMode(self, extra: bytes = b"") -> None:
        # After a bulk, txredisapi hands what followed it in the same read
        # back to dataReceived through the reactor, pausing the transport
        # meanwhile (which sets an attribute on the protocol). Parse it now:
        # unless a command still waits, it is a violation, seen at once.
        self.line_mode = 1
        if extra and self.connected:
            self.dataReceived(extra)

    def replyReceived(self, reply: object) -> None:
        # txredisapi's queue would keep a reply nobody waits for, without
        # bound; lineReceived refuses one before it is read, this is the
        # last guard.
        waiting = self.replyQueue.waiting
        if isinstance(reply, txredisapi.InvalidResponse):
            self.reject(f"not a Redis reply: {reply}")  # ":x", say.
        elif waiting:
            waiting.pop(0).callback(reply)
        else:
            self.reject("unexpected reply")

    # Ending

    def reject(self, reason: str) -> None:
        """
        The server broke the protocol: drop the connection, tell the owner
        why, and fail every command waiting with `ProtocolError`. Only the
        first violation of a connection counts.
        """
        if not self.connected:
            return
        self.drop()
        self.factory.on_violation(self, reason)
        error = ProtocolError(reason)
        waiting = self.replyQueue.waiting
        while waiting:
            waiting.pop(0).callback(error)

    def unread(self) -> bool:
        """
        Whether the server has sent bytes that are still in the socket, not
        yet read: looked at without reading or waiting (``MSG_PEEK``), for
        a connection about to be dropped unread. After a stall the reactor
        runs its overdue timers before it polls, so a check's deadline can
        fire with the reply in the socket; those bytes are the server's
        process answering (a TLS record too), never the kernel's. A
        connection closed by the server (nothing to peek but its end), or
        reset, has nothing unread.
        """
        # A TLS transport hands attribute lookups on to its TCP transport.
        handle = getattr(self.transport, "socket", None) if self.connected else None
        if handle is None:
            return False
        try:
            return bool(handle.recv(1, MSG_PEEK | MSG_DONTWAIT))
        except OSError:  # Nothing there (EAGAIN), or the socket failed.
            return False

    def drop(self) -> None:
        """
        Close the connection at once; nothing more of what it received is
        read, not even what is already buffered (abortConnection does not
        stop LineReceiver's loop over its buffer). The commands waiting fail
        when the loss is reported.
        """
        if not self.connected:
            return
        # Twisted sets `connected` and txredisapi clears it on loss: cleared
        # now, it stops the parser (dataReceived, lineReceived).
        self.connected = 0
        self.clearLineBuffer()
        del self.bulk_buffer[:]
        self.transport.abortConnection()

    def connectionLost(self, why: Failure) -> None:
        factory = self.factory
        securing = factory.securing
        if securing is not None:
            factory.securing = None
            securing.errback(why)
        stop_reading_directly(self.transport)
        self.factory.on_lost(self)
        # A server that refuses our client certificate says so in an alert
        # after the handshake (TLS 1.3): what waits fails with its reason.
        error = describe_tls_loss(why) or lost_text(why)
        while self.replyQueue.waiting:
            self.replyReceived(ConnectionLost(error))
        super().connectionLost(why)
        # A lost connection is freed as soon as nothing refers to it, not
        # by the cyclic collector: see `_break_cycles`.
        factory.known = None
        _break_cycles(self.transport)


# The share of a connect's bound its SYN must have been out, unanswered,
# for its timeout to be `Unanswered` (the probe's fair share of a check).
UNANSWERED_SHARE = 0.9


class Unanswered(neterror.TimeoutError):
    """
    A TCP connect timed out with the kernel still waiting for the address's
    answer (no SYN-ACK, no reset) after `UNANSWERED_SHARE` of its bound
    since the SYN went: the kernel did the waiting, so the agent's own
    lateness took nothing from it (`sentinel.probe` judges such a timeout
    as one on time). A connect completed, or failed, but not yet read by
    a late agent is a plain timeout, judged as ever.
    """


def _in_progress(transport: tcp.Client) -> bool:
    """Whether the kernel still has `transport`'s connect in progress."""
    handle = getattr(transport, "socket", None)
    if handle is None:
        return False
    try:
        if handle.getsockopt(SOL_SOCKET, SO_ERROR):
            return False  # Failed (refused, unreachable): an answer.
        handle.getpeername()
    except OSError as e:
        return e.errno == ENOTCONN
    return False  # Connected, not yet read by the agent.


def _break_cycles(transport: object, connector: Any = None) -> None:
    """
    Undo the reference cycles Twisted leaves between a lost TCP connection
    (`tcp.Client`), its `tcp.Connector` (which keeps its last transport) and
    the endpoint's wrapping factory (which keeps its connector, to cancel
    the attempt while it connects). Left, they keep the protocol and all
    that hangs off it until a full collection: with every connection
    renewed each `reconnect_every` (60 s), hundreds of dead connections
    waited a few minutes at a time in the oldest generation, the agent's
    heap swung by 2 MB at 200 instances, and a burst landing on a high
    swing (ZooKeeper's return) raised RSS for good. Over TLS the TCP
    transport is the one under the TLS protocol (the TLS layer keeps
    cycles of its own: a TLS connection still waits for the collector).
    Both attributes are used only while connecting, and a lost connection
    never connects again (a new attempt makes a new connector).

    A failed attempt (refused, timed out, cancelled: `ConnectAttempt`)
    builds no protocol and leaves the same connector and factory, and a
    transport that keeps its bound ``doConnect`` as ``doRead`` and
    ``doWrite`` (Twisted removes them only once connected) but has
    dropped its connector: that one is given as `connector`.
    """
    lower = getattr(transport, "transport", transport)
    if type(lower) is not tcp.Client:
        return
    if connector is None:
        connector = lower.connector
    else:
        for name in ("doRead", "doWrite"):
            vars(lower).pop(name, None)
    connector.transport = None
    wrapping = connector.factory
    if getattr(wrapping, "_connector", None) is connector:
        wrapping._connector = None


class ConnectAttempt:
    """
    The reactor as one connection attempt's endpoint sees it: it keeps the
    connector and transport the endpoint makes, which the endpoint keeps
    to itself, so that `failed` can free them (`_break_cycles`). Left to
    the collector, at 200 instances on a refused port, they took the gc
    objects from 70,500 to 85,300 between collections and RSS up 2.3 MiB
    in 3 minutes (70,500 to 73,400 and 0.4 MiB freed so).
    """

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._connector: Any = None
        self._transport: object = None
        # When the connect was sent (Twisted sends it a turn after the
        # call), for `_timed_out`.
        self._sent_at: float | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

    def connectTCP(self, *args: Any, **kwargs: Any) -> Any:
        """
        The reactor's, keeping what it makes; its timeout is `_timed_out`,
        which looks at the socket before it gives up.
        """
        connector = self._reactor.connectTCP(*args, **kwargs)
        self._connector = connector
        self._transport = getattr(connector, "transport", None)
        timer = getattr(connector, "timeoutID", None)
        if type(self._transport) is tcp.Client and timer is not None:
            timer.cancel()
            connector.timeoutID = self._reactor.callLater(
                connector.timeout, self._timed_out, self._transport
            )
            # Due with the transport's own call that sends the connect,
            # and run in the same turn.
            self._reactor.callLater(0, self._sent)
        return connector

    def _sent(self) -> None:
        self._sent_at = self._reactor.seconds()

    def _timed_out(self, transport: tcp.Client) -> None:
        # The connector's timer, as Twisted's: the attempt fails with a
        # timeout unless it connected. A SYN the kernel still has in
        # progress after the fair share of the bound was unanswered for
        # that long whatever the agent's own lateness (`Unanswered`).
        timeout = self._connector.timeout if self._connector is not None else None
        sent = self._sent_at
        error: Exception = neterror.TimeoutError()
        if (
            timeout is not None
            and sent is not None
            and self._reactor.seconds() - sent >= UNANSWERED_SHARE * timeout
            and _in_progress(transport)
        ):
            error = Unanswered()
        transport.failIfNotConnected(error)

    def failed(self, failure: Failure) -> Failure:
        """
        An errback for the endpoint's Deferred: the attempt's cycles are
        broken in the next turn, once it is over (a cancelled attempt is
        stopped only after its Deferred's errbacks ran); `failure` goes on.
        Only a real TCP attempt has them (not one of a test's reactor).
        """
        if type(self._transport) is tcp.Client:
            self._reactor.callLater(0, _break_cycles, self._transport, self._connector)
        self._connector = self._transport = None
        return failure

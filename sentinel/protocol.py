"""
The Redis protocol of a health check: txredisapi's reply parser, bounded,
driven with prebuilt commands.

A reply is accepted only when a command of ours waits for it, and only when
it is small. Anything else breaks the protocol: bytes that arrive while no
command waits (before the first command, after the last reply, a second
reply to one command), a multi-bulk reply (no command we send has one), a
status or error line longer than `MAX_LINE`, a bulk announced longer than
`MAX_BULK` (refused when its ``$N`` line is read, before any of it is
buffered), or anything that is not RESP2. A violation drops the connection at
once, parsing nothing more of what was already received, tells the
connection's owner why, and fails the commands waiting with `ProtocolError`.
So memory per connection stays bounded whatever the server sends, where
txredisapi alone queues every reply nobody waits for and trusts every
announced length (DESIGN.md section 7).

Every touch of a private internal of txredisapi or Twisted is in this module,
each with its reason. ``tests/test_protocol.py`` checks on a real TCP
connection that the fast paths are still taken, so that an upgrade which
silently disables one is caught.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import txredisapi
from twisted.internet import tcp
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IAddress, IHandshakeListener
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure
from zope.interface import implementer

from sentinel.observation import Replication
from sentinel.tls import describe_tls_loss

PING = b"*1\r\n$4\r\nPING\r\n"
INFO_REPLICATION = b"*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n"
PONG_REPLY = b"+PONG\r\n"

# A status or error line: a PING reply is 7 bytes, Redis's longest error
# texts a few hundred.
MAX_LINE = 4096
# A bulk: INFO replication has a line of about 80 bytes per replica, so a
# master with 800 replicas fits.
MAX_BULK = 64 * 1024
# Replies are small: Twisted's default 64 KiB read buffer is allocated per
# read.
READ_BUFFER = 4096

_REPLY_TYPES = frozenset("+-:$*")


class ProtocolError(txredisapi.RedisError):  # type: ignore[misc]
    """The server broke the protocol; the message says how."""


# An error reply (``-ERR ...``), as txredisapi hands it on.
ResponseError: type[Exception] = txredisapi.ResponseError


def auth_command(password: str, username: str | None) -> bytes:
    """The RESP bytes of AUTH, with an ACL user name if there is one."""
    args = ["AUTH"] + ([username] if username else []) + [password]
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode("utf-8")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def parse_replication(info: bytes) -> Replication:
    """Pick the role fields out of an ``INFO replication`` reply."""
    fields: dict[str, str] = {}
    for line in info.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    role = fields.get("role")
    if role != "slave":
        return Replication(role=role)
    port = fields.get("master_port", "")
    return Replication(
        role=role,
        master_host=fields.get("master_host"),
        master_port=int(port) if port.isdigit() else None,
        master_link_status=fields.get("master_link_status"),
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
    queue only ever calls ``callback(reply)`` on what waits in it.
    """

    def callback(self, reply: object) -> None:
        """
        Take one reply: a status line (str), a bulk (bytes, or None), an
        integer, or an exception (an error reply, `ProtocolError`, or
        ``txredisapi.ConnectionError`` when the connection is lost).
        """


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

    One is kept per instance, so it adds no attribute of its own to the 30
    that txredisapi and Twisted set: up to 30, Python shares the attribute
    names among all instances of the class; one more, and every instance
    carries a dictionary of its own (about 1.5 KB here). What it needs per
    connection is reached through its factory, the TLS handshake state is a
    class default until a handshake sets it, and a dropped connection is
    marked by clearing ``connected``, which Twisted already sets.
    """

    factory: ConnectionFactory
    connected: int
    # LineReceiver's limit: a longer status or error line breaks the protocol
    # (lineLengthExceeded); a bulk is read in raw mode and capped apart.
    MAX_LENGTH = MAX_LINE
    _secure = False
    _securing: Deferred[RedisClientProtocol] | None = None

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
            # Twisted's read size, an undocumented attribute of its TCP
            # transport (a TLS transport reads through its own).
            transport.bufferSize = READ_BUFFER
        return super().connectionMade()

    # TLS

    def when_secure(self) -> Deferred[RedisClientProtocol]:
        """
        Fire with this protocol once the TLS handshake is done, or fail with
        the reason the connection was lost before (a certificate that does
        not verify, say). Cancelling it drops the connection.
        """
        if self._secure:
            return succeed(self)

        def cancel(_: Deferred[RedisClientProtocol]) -> None:
            self._securing = None
            self.drop()

        self._securing = Deferred(cancel)
        return self._securing

    def handshakeCompleted(self) -> None:
        self._secure = True
        securing, self._securing = self._securing, None
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
        else:
            transport.write(command)

    # Receiving

    def dataReceived(self, data: bytes, unpause: bool = False) -> None:
        # Fast path: the common reply, handed to the command waiting without
        # the line parser, when nothing half read is buffered (the line
        # buffer, private to txredisapi's LineReceiver, is empty) and no bulk
        # is being read. No multi-bulk reply is ever accepted, so none is
        # half assembled.
        if (
            data == PONG_REPLY
            and self.replyQueue.waiting
            and not self._LineReceiver__buffer
            and self.line_mode
        ):
            self.replyQueue.waiting.pop(0).callback("PONG")
            return
        if not self.connected:
            return  # Dropped: nothing more is read.
        try:
            super().dataReceived(data, unpause)
        except UnicodeDecodeError:
            # LineReceiver decodes each line before lineReceived sees it.
            self.reject("not a Redis reply: undecodable bytes")

    def lineReceived(self, line: str) -> bool:
        # Every line read in line mode starts a reply (no multi-bulk is ever
        # accepted): judge it before txredisapi buffers or queues anything.
        kind = line[:1]
        if kind not in _REPLY_TYPES:
            self.reject(f"not a Redis reply: {line[:40]!r}")
        elif kind == "*" or not self.replyQueue.waiting:
            self.reject(f"unexpected reply: {line[:40]!r}")
        elif kind != "$" or self._bulk_fits(line):
            super().lineReceived(line)
        # True stops LineReceiver's loop over what it has buffered: after a
        # violation, or when a reply's owner dropped the connection.
        return not self.connected

    def _bulk_fits(self, line: str) -> bool:
        try:
            length = int(line[1:])
        except ValueError:
            length = -2
        if length < -1:
            self.reject(f"not a Redis reply: {line[:40]!r}")
            return False
        if length > MAX_BULK:
            self.reject(f"reply too long: {length} bytes")
            return False
        return True

    def lineLengthExceeded(self, line: bytes) -> None:
        self.reject(f"reply too long: {len(line)} bytes")

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
        securing = self._securing
        if securing is not None:
            self._securing = None
            securing.errback(why)
        self.factory.on_lost(self)
        # A server that refuses our client certificate says so in an alert
        # after the handshake (TLS 1.3): what waits fails with its reason.
        error = describe_tls_loss(why) or "connection lost"
        while self.replyQueue.waiting:
            self.replyReceived(txredisapi.ConnectionError(error))
        super().connectionLost(why)

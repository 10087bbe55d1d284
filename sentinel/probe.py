"""
One Redis check at a time per instance, over one kept connection.

The connection is txredisapi's protocol, connected by us rather than through
``txredisapi.Connection`` (which reconnects forever with no handle to stop it,
DESIGN.md section 4). A connection attempt is owned by the probe, not by the
check that started it: a check whose deadline passes while connecting fails,
but a connection that completes afterwards is kept for the next check. Any
timeout, lost connection or unreadable reply drops the connection; a later
check connects again, at most once per `RECONNECT_INTERVAL` (as Redis
Sentinel does), and checks in between fail at once with the last error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import txredisapi
from twisted.internet import error as neterror
from twisted.internet import tcp
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredSemaphore,
    TimeoutError,
    succeed,
)
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from sentinel.config import RedisInstance
from sentinel.observation import Observation, Replication
from sentinel.resolve import Resolver
from sentinel.tls import TLSSetupError, client_tls, describe_tls_failure

log = Logger()

RECONNECT_INTERVAL = 1.0
READ_BUFFER = 4096

PING = b"*1\r\n$4\r\nPING\r\n"
INFO_REPLICATION = b"*2\r\n$4\r\nINFO\r\n$11\r\nreplication\r\n"

# Replies to PING that Redis Sentinel counts as "alive" without being ready.
_ALIVE_NOT_READY = ("LOADING", "MASTERDOWN")


class ProtocolError(txredisapi.RedisError):  # type: ignore[misc]
    """The server sent something that is not a Redis reply."""


class _ConnectFailed(Exception):
    """A connection attempt failed; the message is the observation's error."""


def parse_replication(info: str) -> Replication:
    """Pick the role fields out of an ``INFO replication`` reply."""
    fields: dict[str, str] = {}
    for line in info.splitlines():
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


def auth_command(password: str, username: str | None) -> bytes:
    """The RESP bytes of AUTH, with an ACL user name if there is one."""
    args = ["AUTH"] + ([username] if username else []) + [password]
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg.encode("utf-8")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def describe_failure(failure: Failure) -> str:
    """A short, stable error text for a failed connection or command."""
    if failure.check(neterror.ConnectionRefusedError):
        return "connection refused"
    if failure.check(TimeoutError, neterror.TimeoutError):
        return "timeout (connect)"
    if failure.check(neterror.DNSLookupError, _ConnectFailed):
        return failure.getErrorMessage()
    if failure.check(neterror.ConnectionLost, neterror.ConnectionDone):
        return "connection lost"
    if failure.check(neterror.NoRouteError):
        return "no route to host"
    reason = failure.getErrorMessage()
    name = failure.type.__name__ if failure.type is not None else "error"
    return f"{name}: {reason}" if reason else name


class ReplyTo(Protocol):
    """
    What can wait in txredisapi's reply queue instead of a Deferred: the
    queue only ever calls ``callback(reply)`` on what waits in it.
    """

    def callback(self, reply: object) -> None:
        """Take one reply (an exception if the command failed)."""


def _no_transaction() -> tuple[()]:
    return ()


# Only ever cleared (when a connection is lost), never added to: no scripts.
_NO_SCRIPTS: set[str] = set()


@implementer(IHandshakeListener)
class RedisClientProtocol(txredisapi.BaseRedisProtocol):  # type: ignore[misc]
    """
    txredisapi's reply parser, driven with prebuilt commands.

    It adds what a health check needs: anything that is not a Redis reply
    fails the waiting command and drops the connection (txredisapi ignores
    unknown reply types, which would leave the check hanging), the owner
    hears when the connection is lost, and over TLS, when the handshake is
    done or why it failed.

    One is kept per instance, so it adds no attribute of its own to the 30
    that txredisapi and Twisted set: up to 30, Python shares the attribute
    names among all instances of the class; one more, and every instance
    carries a dictionary of its own (about 1.5 KB here). What it needs per
    connection is reached through its factory, and the TLS handshake state
    is a class default until a handshake sets it.
    """

    factory: _ProbeFactory
    _secure = False
    _securing: Deferred[RedisClientProtocol] | None = None

    def __init__(self) -> None:
        super().__init__(charset="utf-8", errors="replace", convertNumbers=False)
        # For transactions, pipelines and scripts, which a health check never
        # uses, txredisapi makes two functions, a set and three lists per
        # protocol: about 700 bytes an instance. Shared empty ones stand in
        # (immutable where txredisapi would only add to them).
        self.unwatch_cc = self.commit_cc = _no_transaction
        self.script_hashes = _NO_SCRIPTS
        self.post_proc = self.pipelined_commands = self.pipelined_replies = ()

    @property
    def callLater(self) -> Callable[..., IDelayedCall]:
        """txredisapi schedules on the global reactor; use ours."""
        return self.factory.clock.callLater

    def connectionMade(self) -> Any:
        transport = self.transport
        if type(transport) is tcp.Client:
            # Replies are a few bytes (INFO replication, a few hundred):
            # Twisted's default 64 KiB read buffer is allocated per read.
            transport.bufferSize = READ_BUFFER
        return super().connectionMade()

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
            self.transport.abortConnection()

        self._securing = Deferred(cancel)
        return self._securing

    def handshakeCompleted(self) -> None:
        self._secure = True
        securing, self._securing = self._securing, None
        if securing is not None:
            securing.callback(self)

    def send(self, command: bytes) -> Deferred[Any]:
        """Write a prebuilt command; the Deferred fires with its reply."""
        reply: Deferred[Any] = self.replyQueue.get()
        self._write(command)
        return reply

    def send_to(self, command: bytes, waiter: ReplyTo) -> None:
        """
        Write a prebuilt command; its reply (an exception if it failed) goes
        to `waiter`, which stands in the reply queue instead of a Deferred.
        """
        self.replyQueue.waiting.append(waiter)
        self._write(command)

    def _write(self, command: bytes) -> None:
        transport = self.transport
        # Straight to the socket when Twisted's buffer is empty: one system
        # call, where transport.write costs a round trip through the reactor
        # (register for writability, write, unregister). Plain TCP only: a
        # TLS transport wraps the socket (and hands attribute lookups on to
        # it), so writing there would bypass TLS.
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

    def dataReceived(self, data: bytes, unpause: bool = False) -> Any:
        # The common reply, handled without the line parser: nothing half
        # read is buffered, and no multi-bulk reply is being assembled.
        if (
            data == b"+PONG\r\n"
            and self.replyQueue.waiting
            and not self._LineReceiver__buffer
            and self.line_mode
            and not self.paused
            and not self.multi_bulk.pending
        ):
            self.replyQueue.waiting.pop(0).callback("PONG")
            return None
        try:
            return super().dataReceived(data, unpause)
        except Exception as e:
            self._protocol_error(f"unreadable reply ({type(e).__name__})")
            return None

    def lineReceived(self, line: str) -> Any:
        if line and line[0] not in "+-:$*":
            return self._protocol_error(f"not a Redis reply: {line[:40]!r}")
        return super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._protocol_error("reply line too long")

    def _protocol_error(self, reason: str) -> bool:
        if self.replyQueue.waiting:
            self.replyReceived(ProtocolError(reason))
        self.transport.abortConnection()
        return True

    def connectionLost(self, why: Failure) -> None:
        securing = self._securing
        if securing is not None:
            self._securing = None
            securing.errback(why)
        self.factory.on_lost(self)
        while self.replyQueue.waiting:
            self.replyReceived(txredisapi.ConnectionError("connection lost"))
        super().connectionLost(why)


class _ProbeFactory(Factory):
    """
    Builds the one protocol of a connection attempt, without log noise, and
    holds what that protocol needs: the clock, and whom to tell of its loss.
    """

    noisy = False

    def __init__(
        self, clock: IReactorTime, on_lost: Callable[[RedisClientProtocol], None]
    ) -> None:
        self.clock = clock
        self.on_lost = on_lost

    def buildProtocol(self, addr: IAddress | None) -> RedisClientProtocol:
        protocol = RedisClientProtocol()
        protocol.factory = self
        return protocol


class _PingReplies:
    """
    Hands one connection's PING replies to its probe: made once per
    connection, where a Deferred per check would be made thousands of
    times a second.
    """

    __slots__ = ("_probe", "_protocol")

    def __init__(self, probe: RedisProbe, protocol: RedisClientProtocol) -> None:
        self._probe = probe
        self._protocol = protocol

    def callback(self, reply: object) -> None:
        try:
            self._probe._pinged(self._protocol, reply)
        except Exception:
            # A bug of ours: the check fails with it rather than time out.
            self._probe._reply_failed(Failure(), None)


class RedisProbe:
    """
    Checks one Redis instance: PING, and INFO replication when asked.

    `check` returns a Deferred that fires with an `Observation`, or with
    None when the agent never got to look (still queued for a connection
    slot when the check was cancelled). It never fails. The caller owns the
    deadline: it cancels the Deferred when the check is overdue, and the
    probe turns that into a timeout observation and drops the connection.
    """

    def __init__(
        self,
        instance: RedisInstance,
        reactor: Any,
        connect_slots: DeferredSemaphore,
        connect_timeout: float,
        resolver: Resolver,
    ) -> None:
        self.instance = instance
        self._reactor = reactor
        self._slots = connect_slots
        self._connect_timeout = connect_timeout
        self._resolver = resolver
        # The CA file is read once, here; a problem with it fails every
        # check of this instance at once, saying why.
        self._tls: IOpenSSLClientConnectionCreator | None = None
        self._tls_error: str | None = None
        if instance.tls:
            try:
                self._tls = client_tls(instance)
            except TLSSetupError as e:
                self._tls_error = str(e)
        self._auth = (
            auth_command(instance.password, instance.username)
            if instance.password is not None
            else None
        )
        self.stage = "connect"
        self._protocol: RedisClientProtocol | None = None
        self._attempt: Deferred[RedisClientProtocol] | None = None
        self._queued = False
        self._waiters: list[Deferred[RedisClientProtocol]] = []
        self._last_attempt_at = float("-inf")
        self._last_error = "not connected"
        self._closed = False
        # The check in flight on the connection (PING or INFO), if any.
        self._check: Deferred[Observation | None] | None = None
        self._check_protocol: RedisClientProtocol | None = None
        self._want_info = False
        self._sent_at = 0.0
        # Where the kept connection's PING replies go.
        self._ping_replies: _PingReplies | None = None

    @property
    def connected(self) -> bool:
        """Whether a usable connection is kept."""
        return self._protocol is not None

    def check(self, want_info: bool) -> Deferred[Observation | None]:
        """Check the instance once; see the class docstring."""
        protocol = self._protocol
        if protocol is not None:
            return self._ping(protocol, want_info)
        if self._tls_error is not None:
            self.stage = "connect"
            return succeed(Observation(ok=False, error=self._tls_error))
        if self._attempt is None:
            now = self._reactor.seconds()
            if now - self._last_attempt_at < RECONNECT_INTERVAL:
                self.stage = "connect"
                return succeed(Observation(ok=False, error=self._last_error))
            self._start_attempt(now)
            if self._attempt is None:
                # The attempt ended at once (it failed before any I/O).
                if self._protocol is not None:
                    return self._ping(self._protocol, want_info)
                return succeed(Observation(ok=False, error=self._last_error))
        waiter: Deferred[Any] = Deferred(self._waiters.remove)
        self._waiters.append(waiter)
        waiter.addCallbacks(self._ping, self._connect_failed, callbackArgs=(want_info,))
        return waiter

    def close(self) -> None:
        """Stop for good: cancel any attempt and check, drop the connection."""
        self._closed = True
        if self._attempt is not None:
            self._attempt.cancel()
        if self._check is not None:
            self._check.cancel()
        self._drop()

    # Connecting

    def _start_attempt(self, now: float) -> None:
        self._last_attempt_at = now
        self.stage = "connect"
        self._queued = True
        attempt: Deferred[Any] = self._slots.acquire()
        self._attempt = attempt
        attempt.addCallback(self._open)
        attempt.addBoth(self._attempt_done)

    def _open(self, _: object) -> Deferred[RedisClientProtocol]:
        self._queued = False
        d: Deferred[Any] = self._resolver.resolve(self.instance.host)
        d.addCallback(self._connect)
        if self._auth is not None:
            d.addCallback(self._authenticate)
        d.addBoth(self._release_slot)
        return d.addTimeout(self._connect_timeout, self._reactor)

    def _release_slot(self, result: object) -> object:
        self._slots.release()
        return result

    def _connect(self, address: str) -> Deferred[RedisClientProtocol]:
        endpoint_type = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
        endpoint: IStreamClientEndpoint = endpoint_type(
            self._reactor, address, self.instance.port, timeout=self._connect_timeout
        )
        if self._tls is not None:
            endpoint = wrapClientTLS(self._tls, endpoint, self._reactor)
        factory = _ProbeFactory(self._reactor, self._lost)
        d: Deferred[Any] = endpoint.connect(factory)
        if self._tls is not None:
            d.addCallback(self._handshake)
        return d

    def _handshake(self, protocol: RedisClientProtocol) -> Deferred[Any]:
        # The endpoint fires once TCP is connected; wait for the handshake so
        # that a certificate that does not verify fails the attempt, saying so.
        self.stage = "tls"

        def failed(failure: Failure) -> Failure:
            error = describe_tls_failure(failure, self.instance)
            if error is None:
                return failure
            raise _ConnectFailed(error)

        return protocol.when_secure().addErrback(failed)

    def _authenticate(self, protocol: RedisClientProtocol) -> Deferred[Any]:
        self.stage = "auth"
        assert self._auth is not None
        d = protocol.send(self._auth)

        def authenticated(reply: object) -> RedisClientProtocol:
            if reply == "OK":
                return protocol
            protocol.transport.abortConnection()
            raise _ConnectFailed(f"auth failed: {reply}")

        def abandoned(failure: Failure) -> Failure:
            protocol.transport.abortConnection()
            return failure

        return d.addCallbacks(authenticated, abandoned)

    def _attempt_done(self, result: RedisClientProtocol | Failure) -> None:
        self._attempt = None
        self._queued = False
        waiters, self._waiters = self._waiters, []
        if isinstance(result, Failure):
            self._last_error = (
                f"timeout ({self.stage})"
                if result.check(TimeoutError, neterror.ConnectingCancelledError)
                else describe_failure(result)
            )
            for waiter in waiters:
                waiter.errback(_ConnectFailed(self._last_error))
            return
        if self._closed:
            result.transport.abortConnection()
            return
        self._protocol = result
        self._ping_replies = _PingReplies(self, result)
        for waiter in waiters:
            waiter.callback(result)

    def _lost(self, protocol: RedisClientProtocol) -> None:
        if self._protocol is protocol:
            self._protocol = None
            self._ping_replies = None
            self._last_error = "connection lost"

    def _drop(self) -> None:
        protocol, self._protocol = self._protocol, None
        self._ping_replies = None  # Nothing of a dead connection is kept.
        if protocol is not None:
            protocol.transport.abortConnection()

    # Checking

    def _ping(
        self, protocol: RedisClientProtocol, want_info: bool
    ) -> Deferred[Observation | None]:
        # The hot path, thousands a second: one Deferred (the check's own,
        # which the caller cancels at its deadline), and the reply handed
        # straight to _pinged by the connection's ReplyTo.
        self.stage = "ping"
        self._want_info = want_info
        self._sent_at = self._reactor.seconds()
        check: Deferred[Observation | None] = Deferred(self._cancel_check)
        self._check = check
        self._check_protocol = protocol
        replies = self._ping_replies
        assert replies is not None  # Set with the kept connection.
        protocol.send_to(PING, replies)
        return check

    def _pinged(self, protocol: RedisClientProtocol, reply: object) -> None:
        check = self._check
        if check is None or protocol is not self._check_protocol:
            return  # The check it answers has ended (it timed out).
        latency_ms = (self._reactor.seconds() - self._sent_at) * 1000.0
        if reply == "PONG":
            ready = True
        elif isinstance(reply, txredisapi.ResponseError) and str(reply).startswith(
            _ALIVE_NOT_READY
        ):
            ready = False
        else:
            self._end_check(self._bad_reply(reply, protocol, "PING"))
            return
        if not self._want_info:
            self._check = self._check_protocol = None
            check.callback(Observation(True, ready, latency_ms))
            return
        self.stage = "info"
        protocol.send(INFO_REPLICATION).addCallback(
            self._informed, check, ready, latency_ms
        ).addErrback(self._reply_failed, check)

    def _informed(
        self,
        reply: object,
        check: Deferred[Observation | None],
        ready: bool,
        latency_ms: float,
    ) -> None:
        if self._check is not check:
            return  # It timed out while INFO was on its way.
        if isinstance(reply, str):
            observation = Observation(
                ok=True,
                ready=ready,
                latency_ms=latency_ms,
                replication=parse_replication(reply),
            )
        else:
            # PING was answered, so the instance is alive; say why the role
            # is unknown (an ACL user without INFO, say) instead of failing it.
            observation = Observation(
                ok=True,
                ready=ready,
                latency_ms=latency_ms,
                error=f"INFO replication: {reply}",
                replication=Replication(role=None),
            )
        self._end_check(observation)

    def _cancel_check(self, check: Deferred[Observation | None]) -> None:
        # The caller's deadline passed: a timeout, and the connection goes
        # (a late reply would be read as the next check's).
        if self._check is check:
            protocol = self._check_protocol
            self._check = self._check_protocol = None
            self._last_error = f"timeout ({self.stage})"
            if protocol is not None:
                self._drop_if(protocol)
        check.callback(Observation(ok=False, error=f"timeout ({self.stage})"))

    def _reply_failed(
        self, failure: Failure, check: Deferred[Observation | None] | None
    ) -> None:
        # Handling a reply raised: hand the failure to the check, whose
        # errback (the monitor's) logs it and records an internal error.
        if check is None:
            check = self._check
        if check is not None and self._check is check:
            self._check = self._check_protocol = None
            check.errback(failure)
        else:
            log.failure(
                "handling a reply from {instance} failed",
                failure,
                instance=self.instance.name,
            )

    def _end_check(self, observation: Observation) -> None:
        check, self._check = self._check, None
        self._check_protocol = None
        if check is not None:
            check.callback(observation)

    def _bad_reply(
        self, reply: object, protocol: RedisClientProtocol, command: str
    ) -> Observation:
        if isinstance(reply, txredisapi.ResponseError) and not isinstance(
            reply, ProtocolError
        ):
            # A well-formed error reply keeps the connection in step.
            error = str(reply)
        elif isinstance(reply, Exception):
            self._drop_if(protocol)
            error = str(reply)
        else:
            self._drop_if(protocol)
            error = f"unexpected reply to {command}: {str(reply)[:40]!r}"
        self._last_error = error
        return Observation(ok=False, error=error)

    def _connect_failed(self, failure: Failure) -> Observation | None:
        if failure.check(CancelledError):
            if self._queued:
                return None  # Never got a connection slot: never looked.
            error = f"timeout ({self.stage})"
        else:
            error = describe_failure(failure)
        self._last_error = error
        return Observation(ok=False, error=error)

    def _drop_if(self, protocol: RedisClientProtocol) -> None:
        if self._protocol is protocol:
            self._drop()
        else:
            protocol.transport.abortConnection()

"""
What a check sends on one connection, and who takes each reply
(`sentinel.probe`).

The commands of a check are prebuilt bytes, shared by every instance
without a drain key, and written at once; the waiters that take their
replies are made once per connection and hand each reply straight to the
probe (`ReplyHandler`), where a Deferred per reply would be made thousands
of times a second. A waiter that finds a bug of ours hands it to the
probe's check rather than let it time out.
"""

from __future__ import annotations

from typing import Protocol

from twisted.python.failure import Failure

from sentinel.protocol import (
    HELLO,
    HELLO_LIMIT,
    INFO_REPLICATION,
    PING,
    RedisClientProtocol,
    ReplyTo,
)


class ReplyHandler(Protocol):
    """The probe's side: what each waiter hands it."""

    def pinged(self, protocol: RedisClientProtocol, reply: object) -> None:
        """PING's reply, when PING was sent alone."""

    def answered(
        self, protocol: RedisClientProtocol, sent: CheckReplies, replies: list[object]
    ) -> None:
        """The pipeline's replies, in order; `sent` says what was sent."""

    def repeated(self, protocol: RedisClientProtocol) -> None:
        """The pipeline's replies, the same bytes as the last parsed."""

    def info_replied(self, protocol: RedisClientProtocol, reply: object) -> None:
        """INFO replication's reply."""

    def reply_failed(self, failure: Failure) -> None:
        """Handling a reply raised (a bug of ours)."""


class CheckReplies:
    """
    Hands one connection's check replies to its probe: made once per
    connection, where a Deferred per check would be made thousands of times
    a second. With PING alone, each reply goes on as it comes; with a
    pipeline, the replies are gathered and go on together, or, when the
    connection read the same bytes as last time, in one call that says so.
    INFO's reply, when it was sent too, goes to its own `InfoReply`.
    """

    __slots__ = ("_probe", "_protocol", "hello", "_size", "_replies")

    def __init__(
        self,
        probe: ReplyHandler,
        protocol: RedisClientProtocol,
        drain: bool,
        hello: bool,
    ) -> None:
        self._probe = probe
        self._protocol = protocol
        # What was sent, even once the connection is lost: kept as flags,
        # not as the `Pipelines` that holds this (a cycle would leave each
        # lost connection to the cyclic collector).
        self.hello = hello
        self._size = 1 + drain + hello
        self._replies: list[object] = []

    @property
    def drain(self) -> bool:
        """Whether EXISTS of the drain key was sent after PING."""
        return self._size - self.hello > 1

    def callback(self, reply: object) -> None:
        try:
            if self._size == 1:
                self._probe.pinged(self._protocol, reply)
                return
            replies = self._replies
            replies.append(reply)
            if len(replies) == self._size:
                self._replies = []
                self._probe.answered(self._protocol, self, replies)
        except Exception:
            # A bug of ours: the check fails with it rather than time out.
            self._probe.reply_failed(Failure())

    def unanswered(self) -> bool:
        """Whether no reply of the pipeline in flight is in yet."""
        return not self._replies

    def awaiting_hello_only(self) -> bool:
        """Whether every reply is in but HELLO's (the last, when sent)."""
        return self.hello and len(self._replies) == self._size - 1

    def repeated(self) -> None:
        try:
            self._probe.repeated(self._protocol)
        except Exception:
            self._probe.reply_failed(Failure())


class _ArrayReply:
    """A waiter that accepts HELLO's multi-bulk reply and hands it on."""

    __slots__ = ("_replies",)
    array_limit = HELLO_LIMIT

    def __init__(self, replies: CheckReplies) -> None:
        self._replies = replies

    def callback(self, reply: object) -> None:
        self._replies.callback(reply)


class InfoReply:
    """A waiter for INFO replication's reply, handed to its probe."""

    __slots__ = ("_probe", "_protocol")

    def __init__(self, probe: ReplyHandler, protocol: RedisClientProtocol) -> None:
        self._probe = probe
        self._protocol = protocol

    def callback(self, reply: object) -> None:
        try:
            self._probe.info_replied(self._protocol, reply)
        except Exception:
            self._probe.reply_failed(Failure())


def _commands(drain: bytes | None, hello: bool) -> tuple[bytes, bytes]:
    """
    The bytes of a check's pipeline, without INFO and with it: the same
    objects for every instance without a drain key.
    """
    if drain is None:
        return _SHARED_COMMANDS[hello]
    plain = PING + drain + HELLO if hello else PING + drain
    return plain, plain + INFO_REPLICATION


_SHARED_COMMANDS = {
    hello: (plain, plain + INFO_REPLICATION)
    for hello, plain in ((False, PING), (True, PING + HELLO))
}


class Pipelines:
    """
    What a check sends on one connection: PING, then EXISTS of the drain
    key and HELLO, each if asked for (`commands`), and INFO replication
    after them when it is wanted (`info_commands`), in one write, with who
    waits for each reply, in order. Both share their waiters, so that
    replies repeated from the last check are known as such either way
    (`sentinel.protocol`).
    """

    __slots__ = (
        "drain",
        "hello",
        "replies",
        "commands",
        "waiters",
        "info_commands",
        "info_waiters",
    )

    def __init__(
        self,
        probe: ReplyHandler,
        protocol: RedisClientProtocol,
        drain: bytes | None,
        hello: bool,
    ) -> None:
        self.drain = drain is not None
        self.hello = hello
        replies = CheckReplies(probe, protocol, drain is not None, hello)
        self.replies = replies
        waiters: list[ReplyTo] = [replies]
        if drain is not None:
            waiters.append(replies)
        if hello:
            waiters.append(_ArrayReply(replies))
        self.commands, self.info_commands = _commands(drain, hello)
        self.waiters = tuple(waiters)
        self.info_waiters = (*waiters, InfoReply(probe, protocol))

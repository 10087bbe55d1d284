"""
A stand-in for kazoo's `KazooClient`, for testing the bridge
(`sentinel.zk.ZooKeeper`) on a Clock, and a Clock whose `callFromThread`
queues calls as the reactor does.

The test plays kazoo's threads: `change_state` calls the state listeners
as kazoo's connection thread would, `answer` sets a call's result as its
worker thread would, and `fire` calls the watches set on a path as its
callback thread would. The bridge's `stop`/`close` of a client really run
on a thread of its own; `closed` says when they have.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from kazoo.loggingsupport import BLATHER
from kazoo.protocol.serialization import CloseInstance
from kazoo.protocol.states import KeeperState, WatchedEvent
from twisted.internet.task import Clock

# kazoo's own state behind each state it tells, by default.
_CLIENT_STATES = {
    "CONNECTED": KeeperState.CONNECTED,
    "SUSPENDED": KeeperState.CONNECTING,
    "LOST": KeeperState.EXPIRED_SESSION,
}


class HandOverClock(Clock):
    """
    A Clock with the reactor's `callFromThread`: calls from any thread are
    queued, and run on the test's thread by `run_handed_over`.
    """

    def __init__(self) -> None:
        super().__init__()
        self._handed_over: queue.SimpleQueue[tuple[Callable[..., Any], Any, Any]] = (
            queue.SimpleQueue()
        )

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._handed_over.put((f, args, kwargs))

    def run_handed_over(self, wait: float = 0.0) -> int:
        """
        Run the calls handed over so far; with `wait`, wait up to that many
        seconds for a first one (from a thread still running). Returns how
        many ran.
        """
        ran = 0
        try:
            if wait:
                f, args, kwargs = self._handed_over.get(timeout=wait)
                f(*args, **kwargs)
                ran += 1
            while True:
                f, args, kwargs = self._handed_over.get_nowait()
                f(*args, **kwargs)
                ran += 1
        except queue.Empty:
            return ran


class FakeAsyncResult:
    """kazoo's IAsyncResult: a value or an exception, and rawlink callbacks."""

    def __init__(self) -> None:
        self.value: Any = None
        self.exception: BaseException | None = None
        self._ready = False
        self._callbacks: list[Callable[[FakeAsyncResult], None]] = []

    def rawlink(self, callback: Callable[[FakeAsyncResult], None]) -> None:
        self._callbacks.append(callback)
        if self._ready:
            callback(self)

    def successful(self) -> bool:
        return self._ready and self.exception is None

    def settle(self, value: Any = None, exception: BaseException | None = None) -> None:
        self.value, self.exception, self._ready = value, exception, True
        for callback in self._callbacks:
            callback(self)


class FakeKazooClient:
    """What the bridge uses of a KazooClient, driven by the test."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        # The last transaction id the client has seen (kazoo's own).
        self.last_zxid = 0
        self.listeners: list[Callable[[Any], None]] = []
        self.started = False
        # As KazooClient.connected: between CONNECTED and the next change.
        self.connected = False
        self.client_id: tuple[int, bytes] | None = None
        # As KazooClient.client_state: kazoo's own state, read by the
        # bridge's listener when told.
        self.client_state: Any = KeeperState.CONNECTING
        # (method, path, result) of every call, in order.
        self.calls: list[tuple[str, str, FakeAsyncResult]] = []
        self.watches: list[tuple[str, Callable[[WatchedEvent], None]]] = []
        self.stopped_on: threading.Thread | None = None
        self.closed_on: threading.Thread | None = None
        self.closed = threading.Event()
        # Set to make `close` block until released (a hung close).
        self.close_blocks: threading.Event | None = None
        # As kazoo's own: set by `stop`, which queues the session's close
        # in the requests not sent yet, until `send_queued` sends them.
        self._stopped = threading.Event()
        self._queue: deque[tuple[Any, Any]] = deque()

    # The KazooClient API the bridge calls

    def add_listener(self, listener: Callable[[Any], None]) -> None:
        self.listeners.append(listener)

    def start_async(self) -> None:
        self.started = True

    def stop(self) -> None:
        self._stopped.set()
        self._queue.append((CloseInstance, None))
        self.stopped_on = threading.current_thread()

    def send_queued(self) -> None:
        """Send the requests queued, as kazoo's connection thread does."""
        self._queue.clear()

    def close(self) -> None:
        if self.close_blocks is not None:
            self.close_blocks.wait(10.0)
        self.closed_on = threading.current_thread()
        self.closed.set()

    def exists_async(
        self, path: str, watch: Callable[[WatchedEvent], None] | None = None
    ) -> FakeAsyncResult:
        if watch is not None:
            self.watches.append((path, watch))
        return self._call("exists", path)

    def get_async(self, path: str) -> FakeAsyncResult:
        return self._call("get", path)

    def get_children_async(
        self,
        path: str,
        watch: Callable[[WatchedEvent], None] | None = None,
        include_data: bool = False,
    ) -> FakeAsyncResult:
        if watch is not None:
            self.watches.append((path, watch))
        return self._call("get_children", path)

    def set_async(self, path: str, value: bytes, version: int = -1) -> FakeAsyncResult:
        return self._call("set", path)

    def create_async(self, path: str, value: bytes, **options: Any) -> FakeAsyncResult:
        return self._call("create", path)

    def delete_async(self, path: str, version: int = -1) -> FakeAsyncResult:
        return self._call("delete", path)

    def transaction(self) -> FakeTransaction:
        return FakeTransaction(self)

    # kazoo's threads, played by the test

    def change_state(
        self, state: Any, session: int = 0x42, client_state: Any = None
    ) -> None:
        """
        The connection thread's news: CONNECTED, SUSPENDED or LOST (by
        default, a LOST of a session expired; `client_state` says another
        cause, as kazoo's `KeeperState`).
        """
        self.client_id = (session, b"password") if state == "CONNECTED" else None
        self.connected = state == "CONNECTED"
        self.client_state = client_state or _CLIENT_STATES.get(state)
        for listener in list(self.listeners):
            listener(state)

    def session_created(self, granted_ms: int, session: int = 0x42) -> None:
        """
        The connection thread's record of a session, as kazoo 2.11 logs it
        on the client's `logger` before saying CONNECTED: the session
        timeout ZooKeeper granted, in milliseconds (what
        `test_zookeeper.SessionTimeoutTests` checks on a real one).
        """
        self.settings["logger"].log(
            BLATHER,
            "Session created, session_id: %r session_passwd: %s\n"
            "    negotiated session timeout: %s\n"
            "    connect timeout: %s\n"
            "    read timeout: %s",
            session,
            "70617373776f7264",
            granted_ms,
            granted_ms,
            granted_ms * 2.0 / 3.0,
        )

    def ping_answered(self) -> None:
        """The connection thread's record of a ping answered (kazoo 2.11's)."""
        self.settings["logger"].log(BLATHER, "Received Ping")

    def warn(self, message: str, *args: Any) -> None:
        """A warning of the connection thread (a failed attempt's cause)."""
        self.settings["logger"].warning(message, *args)

    def answer(self, index: int, value: Any = None, exception: Any = None) -> None:
        """The worker thread's answer to the `index`th call."""
        self.calls[index][2].settle(value, exception)

    def fire(self, path: str, kind: str) -> None:
        """The callback thread runs the watches set on `path`, once."""
        watches = [w for p, w in self.watches if p == path]
        self.watches = [(p, w) for p, w in self.watches if p != path]
        for watch in watches:
            watch(WatchedEvent(kind, KeeperState.CONNECTED, path))

    def _call(self, method: str, path: str) -> FakeAsyncResult:
        result = FakeAsyncResult()
        self.calls.append((method, path, result))
        return result


class FakeTransaction:
    """
    A kazoo transaction of sets and creates: committed, a call on the paths
    it writes (a create's marked with a +).
    """

    def __init__(self, client: FakeKazooClient) -> None:
        self.client = client
        self.paths: list[str] = []

    def set_data(self, path: str, value: bytes, version: int = -1) -> None:
        self.paths.append(path)

    def create(self, path: str, value: bytes, **options: Any) -> None:
        self.paths.append(f"+{path}")

    def commit_async(self) -> FakeAsyncResult:
        return self.client._call("commit", " ".join(self.paths))


class FakeKazooFactory:
    """The bridge's `client_factory`: makes fake clients, keeps them in order."""

    def __init__(self) -> None:
        self.clients: list[FakeKazooClient] = []

    def __call__(self, **settings: Any) -> FakeKazooClient:
        client = FakeKazooClient(**settings)
        self.clients.append(client)
        return client

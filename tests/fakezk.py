"""
An in-memory ZooKeeper with the public API of `sentinel.zk.ZooKeeper`.

Nodes have data, a version, an ephemeral owner (0: persistent), creation
and modification times and transaction ids, and calls answer with what
ZooKeeper would answer, kazoo's exceptions included. The test drives the
session by hand (`connect`, `suspend`, `expire`), changes the server behind
the client's back (`put`, `remove`, `end_session`), and can make calls hang
(`hang`/`release`) or fail (`fail_next`); every call is counted per kind and
per path. As through the real bridge, every call ends: a held call times
out after `call_timeout` on the Clock, fails with ``ConnectionLoss`` when
the connection drops, and a call made while disconnected waits for the
connection (kazoo queues it) or its timeout.

Watches set by `exists(path, watch)` fire once, at the node's next
creation, change or deletion by anyone, as ZooKeeper's do; a dropped
connection or an ended session fires each with an event of type NONE and
forgets them, as kazoo does, and `lose_watches` forgets them silently. They
fire synchronously, where the bridge hands them over a little later.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from kazoo.exceptions import (
    BadVersionError,
    ConnectionClosedError,
    ConnectionLoss,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
)
from kazoo.protocol.states import EventType, KeeperState, WatchedEvent, ZnodeStat
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock

from sentinel.zk import CONNECTED, CONNECTING, LOST, STOPPED, SUSPENDED

CALL_KINDS = ("create", "set", "get", "exists", "delete")


Watcher = Callable[[WatchedEvent], None]


class _Znode:
    __slots__ = ("data", "version", "owner", "czxid", "mzxid", "ctime", "mtime")

    def __init__(self, data: bytes, owner: int, zxid: int, millis: int) -> None:
        self.data = data
        self.version = 0
        self.owner = owner
        self.czxid = self.mzxid = zxid
        self.ctime = self.mtime = millis

    def stat(self) -> ZnodeStat:
        return ZnodeStat(
            self.czxid,
            self.mzxid,
            self.ctime,
            self.mtime,
            self.version,
            0,
            0,
            self.owner,
            len(self.data),
            0,
            0,
        )


class _Call:
    """A call not answered yet: what it is, and how to answer it."""

    def __init__(self, kind: str, path: str, run: Callable[[], Any]) -> None:
        self.kind = kind
        self.path = path
        self.run = run
        self.deferred: Deferred[Any] = Deferred()

    def answer(self, error: Exception | None = None) -> None:
        if self.deferred.called:
            return
        if error is not None:
            self.deferred.errback(error)
            return
        try:
            result = self.run()
        except Exception as e:
            self.deferred.errback(e)
        else:
            self.deferred.callback(result)


class FakeZooKeeper:
    """ZooKeeper in a dict, one session at a time, on a Clock."""

    def __init__(self, clock: Clock, call_timeout: float = 5.0) -> None:
        self._clock = clock
        self.call_timeout = call_timeout
        self.hosts = "fake:2181"
        self.session_timeout = 10.0
        self.acl = None
        self.state = STOPPED
        self.state_since = clock.seconds()
        self.last_error: str | None = None
        self.replacements = 0
        self.nodes: dict[str, _Znode] = {}
        self.watches: dict[str, set[Watcher]] = {}
        self._zxid = 0
        self._session: int | None = None
        self._next_session = 0x1000
        self._listeners: list[Callable[[str], None]] = []
        self.started = 0
        self.stopped_with: list[float] = []
        # Controls and counters.
        self.calls: Counter[str] = Counter()
        self.calls_by_path: Counter[tuple[str, str]] = Counter()
        # (kind, path) of every call, and ("stop", "") for stop, in order.
        self.history: list[tuple[str, str]] = []
        self.hanging: set[str] = set()
        self.held: list[_Call] = []
        self.max_held = 0
        self._unsent: list[_Call] = []
        self._failures: list[tuple[str, str | None, Exception]] = []

    # The API of sentinel.zk.ZooKeeper

    def add_listener(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)

    def start(self) -> None:
        self.started += 1
        self._set_state(CONNECTING)

    def stop(self, timeout: float) -> Deferred[None]:
        """Close the session; with "stop" hanging, give up after `timeout`."""
        self.stopped_with.append(timeout)
        self.history.append(("stop", ""))
        self._drop_watches(KeeperState.CLOSED)
        self._set_state(STOPPED)
        self._fail_outstanding(ConnectionClosedError("stopped"))
        if "stop" in self.hanging:
            # The real bridge stops waiting for the close after `timeout`
            # and leaves the session to expire: our nodes stay until then.
            done: Deferred[None] = Deferred()
            self._clock.callLater(timeout, done.callback, None)
            return done
        self._end_session()
        return succeed(None)

    @property
    def session_id(self) -> int | None:
        return self._session if self.state == CONNECTED else None

    @property
    def client_id(self) -> tuple[int, bytes] | None:
        return None if self._session is None else (self._session, b"")

    def create(self, path: str, data: bytes, ephemeral: bool = True) -> Deferred[str]:
        return self._call("create", path, lambda: self._create(path, data, ephemeral))

    def set(self, path: str, data: bytes, version: int = -1) -> Deferred[Any]:
        return self._call("set", path, lambda: self._set(path, data, version))

    def get(self, path: str) -> Deferred[tuple[bytes, Any]]:
        return self._call("get", path, lambda: self._get(path))

    def exists(self, path: str, watch: Watcher | None = None) -> Deferred[Any]:
        return self._call("exists", path, lambda: self._exists(path, watch))

    def delete(self, path: str, version: int = -1) -> Deferred[None]:
        return self._call("delete", path, lambda: self._delete(path, version))

    # The session, driven by the test

    def connect(self) -> None:
        """Connected: to the old session if it lives, else to a new one."""
        if self._session is None:
            self._session = self._next_session
            self._next_session += 1
        self._set_state(CONNECTED)
        unsent, self._unsent = self._unsent, []
        for call in unsent:
            self._send(call)

    def suspend(self) -> None:
        """The connection dropped; the session lives on in the server."""
        self._drop_watches(KeeperState.CONNECTING)
        self._set_state(SUSPENDED)
        self._fail_outstanding(ConnectionLoss("connection dropped"))

    def expire(self) -> None:
        """The server ended our session: its ephemeral nodes are gone."""
        self._end_session()
        self._drop_watches(KeeperState.EXPIRED_SESSION)
        self._fail_outstanding(ConnectionLoss("session expired"))
        self._set_state(LOST)

    # The server, changed behind the client's back (not counted)

    def put(self, path: str, data: bytes, owner: int = 0) -> None:
        """
        A node created or written by someone else (`owner`: their session,
        or 0 for a persistent node).
        """
        node = self.nodes.get(path)
        if node is None or node.owner != owner:
            self.nodes[path] = _Znode(data, owner, self._next_zxid(), self._millis())
            self._fire(path, EventType.CREATED if node is None else EventType.CHANGED)
            return
        node.data = data
        self._modified(node)
        self._fire(path, EventType.CHANGED)

    def remove(self, path: str) -> None:
        """Someone else deletes the node."""
        del self.nodes[path]
        self._fire(path, EventType.DELETED)

    def end_session(self, owner: int) -> None:
        """Another client's session ends: its ephemeral nodes go."""
        for path in [p for p, n in self.nodes.items() if n.owner == owner]:
            self.remove(path)

    def lose_watches(self) -> None:
        """Forget every watch without telling anyone (as a lost watch is)."""
        self.watches.clear()

    def document(self, path: str) -> Any:
        """A node's data, decoded from JSON."""
        return json.loads(self.nodes[path].data)

    def owner(self, path: str) -> int:
        return self.nodes[path].owner

    # Controls

    def hang(self, *kinds: str) -> None:
        """Leave calls of these kinds (default: every kind) unanswered."""
        self.hanging.update(kinds or CALL_KINDS)

    def unhang(self) -> None:
        """Answer new calls again (held ones stay held until released)."""
        self.hanging.clear()

    def release(self, *kinds: str, error: Exception | None = None) -> int:
        """
        Answer the calls held now (of these kinds, default all), oldest
        first, with `error` if given; return how many.
        """
        chosen = [c for c in self.held if not kinds or c.kind in kinds]
        self.held = [c for c in self.held if c not in chosen]
        for call in chosen:
            call.answer(error)
        return len(chosen)

    def fail_next(
        self, kind: str, error: Exception, path: str | None = None, times: int = 1
    ) -> None:
        """The next `times` calls of `kind` (on `path`) fail with `error`."""
        self._failures.extend([(kind, path, error)] * times)

    def writes(self, path: str) -> int:
        """Creates and sets sent for `path`."""
        return self.calls_by_path["create", path] + self.calls_by_path["set", path]

    # Inside

    def _next_zxid(self) -> int:
        self._zxid += 1
        return self._zxid

    def _millis(self) -> int:
        return int(self._clock.seconds() * 1000)

    def _modified(self, node: _Znode) -> None:
        node.version += 1
        node.mzxid = self._next_zxid()
        node.mtime = self._millis()

    def _fire(self, path: str, kind: str) -> None:
        for watch in self.watches.pop(path, set()):
            watch(WatchedEvent(kind, KeeperState.CONNECTED, path))

    def _drop_watches(self, state: str) -> None:
        watches = [w for ws in self.watches.values() for w in ws]
        self.watches.clear()
        for watch in watches:
            watch(WatchedEvent(EventType.NONE, state, None))

    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        self.state = state
        self.state_since = self._clock.seconds()
        for listener in list(self._listeners):
            listener(state)

    def _end_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            self.end_session(session)

    def _fail_outstanding(self, error: Exception) -> None:
        outstanding, self.held = self.held, []
        if self.state == STOPPED:
            outstanding += self._unsent
            self._unsent = []
        for call in outstanding:
            call.answer(error)

    def _call(self, kind: str, path: str, run: Callable[[], Any]) -> Deferred[Any]:
        self.calls[kind] += 1
        self.calls_by_path[kind, path] += 1
        self.history.append((kind, path))
        if self.state == STOPPED:
            return fail(ConnectionClosedError("not started"))
        for i, (failing, failing_path, error) in enumerate(self._failures):
            if failing == kind and failing_path in (None, path):
                del self._failures[i]
                return fail(error)
        call = _Call(kind, path, run)
        if self.state == CONNECTED:
            self._send(call)
        else:
            self._unsent.append(call)
        if not call.deferred.called:
            # The bridge's timeout; a timed-out call is never answered.
            call.deferred.addTimeout(self.call_timeout, self._clock)
            call.deferred.addErrback(self._forget, call)
        return call.deferred

    def _send(self, call: _Call) -> None:
        if call.kind in self.hanging:
            self.held.append(call)
            self.max_held = max(self.max_held, len(self.held))
        else:
            call.answer()

    def _forget(self, failure: Any, call: _Call) -> Any:
        for calls in (self.held, self._unsent):
            if call in calls:
                calls.remove(call)
        return failure

    def _create(self, path: str, data: bytes, ephemeral: bool) -> str:
        if path in self.nodes:
            raise NodeExistsError()
        # makepath=True, as the bridge passes: missing parents, persistent.
        parent = path.rsplit("/", 1)[0]
        while parent and parent not in self.nodes:
            self.nodes[parent] = _Znode(b"", 0, self._next_zxid(), self._millis())
            parent = parent.rsplit("/", 1)[0]
        assert self._session is not None
        owner = self._session if ephemeral else 0
        self.nodes[path] = _Znode(data, owner, self._next_zxid(), self._millis())
        self._fire(path, EventType.CREATED)
        return path

    def _node(self, path: str, version: int) -> _Znode:
        node = self.nodes.get(path)
        if node is None:
            raise NoNodeError()
        if version != -1 and version != node.version:
            raise BadVersionError()
        return node

    def _set(self, path: str, data: bytes, version: int) -> ZnodeStat:
        node = self._node(path, version)
        node.data = data
        self._modified(node)
        self._fire(path, EventType.CHANGED)
        return node.stat()

    def _get(self, path: str) -> tuple[bytes, ZnodeStat]:
        node = self._node(path, -1)
        return node.data, node.stat()

    def _exists(self, path: str, watch: Watcher | None) -> ZnodeStat | None:
        if watch is not None:
            self.watches.setdefault(path, set()).add(watch)
        node = self.nodes.get(path)
        return None if node is None else node.stat()

    def _delete(self, path: str, version: int) -> None:
        self._node(path, version)
        if any(p.startswith(path + "/") for p in self.nodes):
            raise NotEmptyError()
        self.remove(path)

"""
An in-memory ZooKeeper with the public API of `sentinel.zk.ZooKeeper`.

A `FakeZooKeeperServer` holds the nodes and the sessions; each
`FakeZooKeeper` is one client of it (one agent process), and
`FakeZooKeeper(clock)` makes a server of its own. Nodes have data, a
version, an ephemeral owner (0: persistent), creation and modification
times and transaction ids; sequential nodes get the parent's 10-digit
counter. Calls answer with what ZooKeeper would answer, kazoo's exceptions
included.

Sessions live in the server, as in ZooKeeper: a client started with
``client_id=(session, password)`` reattaches to that session on `connect`
if it lives (the client that held it loses its connection, as the server
closes it), and gets a new one if it expired (LOST, then CONNECTED);
`leave_open` stops using the session without closing it, and
`server.drop(client)` then ends its connection as a process exit would.
The test drives each client's session by hand (`connect`, `suspend`,
`expire`), changes the server behind the clients' backs (`put`, `remove`,
`end_session`), and can make calls hang (`hang`/`release`), be done
with their answers held (`hold_answers`), or fail (`fail_next`); every
call is counted per kind and per path. As through the real bridge, every
call ends: a held call times out after `call_timeout` on the Clock, fails
with ``ConnectionLoss`` when the connection drops, and a call made while
disconnected waits for the connection (kazoo queues it) or its timeout.

Watches set by `exists(path, watch)` or `get(path, watch)` fire once, at
the node's next creation, change or deletion by anyone, and those set by
`get_children(path, watch)` at the next creation or deletion of a child
or of the node itself, as ZooKeeper's do; `replace` (a delete and a
create in one transaction) fires the deletion only, and no reader sees
the node missing; a dropped connection or an ended session fires each
with an event of type NONE and forgets them, as kazoo does, and
`lose_watches` forgets them silently. They fire synchronously, where the
bridge hands them over a little later.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kazoo.exceptions import (
    BadVersionError,
    ConnectionClosedError,
    ConnectionLoss,
    NoAuthError,
    NoChildrenForEphemeralsError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
)
from kazoo.protocol.paths import normpath
from kazoo.protocol.states import EventType, KeeperState, WatchedEvent, ZnodeStat
from kazoo.security import ACL, ANYONE_ID_UNSAFE, OPEN_ACL_UNSAFE, Permissions
from twisted.internet.defer import Deferred, TimeoutError, fail, succeed
from twisted.internet.task import Clock, deferLater

from sentinel.bugs import InternalErrors
from sentinel.spent import TimeSpent
from sentinel.zk import (
    CONNECTED,
    CONNECTING,
    LOST,
    SLOW_WRITE,
    STOPPED,
    SUSPENDED,
    MemberMove,
    MemberRefused,
)

# The kinds that write (`writes_slow_at`).
_WRITE_KINDS = frozenset({"create", "set", "delete", "replace"})

CALL_KINDS = (
    "create", "set", "get", "exists", "delete", "get_children", "replace",
    "get_acls",
)  # fmt: skip


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


class FakeZooKeeperServer:
    """The nodes and the sessions, shared by the clients (processes)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.nodes: dict[str, _Znode] = {}
        # Live sessions and their passwords; the client whose connection
        # holds each one now (none while disconnected).
        self.sessions: dict[int, bytes] = {}
        self.holders: dict[int, FakeZooKeeper] = {}
        self.clients: list[FakeZooKeeper] = []
        self._zxid = 0
        # Set while a transaction applies: every change it makes has its
        # one zxid, as ZooKeeper gives a multi.
        self._transaction_zxid: int | None = None
        self._next_session = 0x1000
        # Per parent: its children's sequence counter (ZooKeeper's cversion).
        self._sequences: Counter[str] = Counter()
        # Each node's ACL, where a test set one (else the ACL of the client
        # asking: its own, or world:anyone:cdrwa, kazoo's default). A create
        # under a node whose ACL the test set, that grants create to neither
        # anyone nor the client's digest identity, is refused (NoAuthError).
        self.acls: dict[str, list[ACL]] = {}

    # Sessions

    def open_session(self) -> int:
        session = self._next_session
        self._next_session += 1
        self.sessions[session] = f"pw-{session:x}".encode()
        return session

    def end_session(self, session: int) -> None:
        """
        The session ends (closed or expired): its ephemeral nodes go, all
        of them before any watch fires, as ZooKeeper deletes them in one
        transaction (a watcher that asks about another of them then finds
        it gone, as it would).
        """
        self.sessions.pop(session, None)
        holder = self.holders.pop(session, None)
        # Its client hears of the expiry, not of its own nodes' deletion.
        if holder is not None:
            holder._session_ended()
        gone = [p for p, n in self.nodes.items() if n.owner == session]
        for path in gone:
            del self.nodes[path]
            self._sequences[_parent(path)] += 1
        for path in gone:
            self.fire(path, EventType.DELETED)

    def wipe(self) -> None:
        """
        Stopped, its data deleted, started again: no node, no session, and
        every sequence counter from 0 again (names made before come again).
        Its clients are cut off, and told of nothing else.
        """
        for client in list(self.holders.values()):
            client.suspend()
        self.nodes.clear()
        self.sessions.clear()
        self.holders.clear()
        self._sequences.clear()
        self._zxid = 0

    def delete_trees(self, *roots: str) -> None:
        """
        ``deleteall`` of each of `roots` by another client: every node
        under them and the roots themselves deleted, whoever holds them,
        before any watch fires (zkCli sends the deletes in batches, each
        a multi; here one, for the members cannot make a node between).
        """
        gone = [
            p
            for p in self.nodes
            if any(p == root or p.startswith(f"{root}/") for root in roots)
        ]
        for path in gone:
            del self.nodes[path]
            self._sequences[_parent(path)] += 1
        for path in sorted(gone, key=lambda p: -p.count("/")):
            self.fire(path, EventType.DELETED)

    def drop(self, client: FakeZooKeeper) -> None:
        """
        The client's connection ends without a close (its process exited):
        its session lives on until it expires or another client takes it.
        """
        for session, holder in list(self.holders.items()):
            if holder is client:
                del self.holders[session]

    # Nodes

    def next_zxid(self) -> int:
        if self._transaction_zxid is not None:
            return self._transaction_zxid
        self._zxid += 1
        return self._zxid

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """The changes made within, one transaction: one zxid for them all."""
        self._transaction_zxid = self.next_zxid()
        try:
            yield
        finally:
            self._transaction_zxid = None

    def millis(self) -> int:
        return int(self._clock.seconds() * 1000)

    def new_node(self, path: str, data: bytes, owner: int) -> _Znode:
        node = _Znode(data, owner, self.next_zxid(), self.millis())
        self.nodes[path] = node
        self._sequences[_parent(path)] += 1
        return node

    def put(self, path: str, data: bytes, owner: int = 0) -> None:
        """A node created or written by someone else (0: persistent)."""
        node = self.nodes.get(path)
        if node is None or node.owner != owner:
            self.new_node(path, data, owner)
            self.fire(path, EventType.CREATED if node is None else EventType.CHANGED)
            return
        node.data = data
        self.modified(node)
        self.fire(path, EventType.CHANGED)

    def remove(self, path: str) -> None:
        """Someone else deletes the node."""
        del self.nodes[path]
        self._sequences[_parent(path)] += 1
        self.fire(path, EventType.DELETED)

    def modified(self, node: _Znode) -> None:
        node.version += 1
        node.mzxid = self.next_zxid()
        node.mtime = self.millis()

    def sequence(self, parent: str) -> int:
        return self._sequences[parent]

    def stat_of(self, path: str) -> ZnodeStat | None:
        """A node's stat, its children's count and version (cversion) in it."""
        node = self.nodes.get(path)
        if node is None:
            return None
        return node.stat()._replace(
            cversion=self._sequences[path], numChildren=len(self.children(path))
        )

    def children(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        return sorted(
            p[len(prefix) :]
            for p in self.nodes
            if p.startswith(prefix) and "/" not in p[len(prefix) :]
        )

    def fire(self, path: str, kind: str) -> None:
        for client in list(self.clients):
            client._fire(path, kind)
            if kind == EventType.DELETED:
                # As ZooKeeper's: a node's children watch fires at its deletion.
                client._fire_deleted(path)
            if kind in (EventType.CREATED, EventType.DELETED):
                client._fire_children(_parent(path))


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0]


class _Call:
    """A call not answered yet: what it is, and how to answer it."""

    def __init__(
        self, kind: str, path: str, run: Callable[[], Any], made: float = 0.0
    ) -> None:
        self.kind = kind
        # When it was made (asked of the bridge).
        self.made = made
        self.path = path
        self.run = run
        self.deferred: Deferred[Any] = Deferred()
        # What the server did, for a call done at once and answered later.
        self.outcome: tuple[Any, Exception | None] | None = None

    def apply(self) -> None:
        """Do it on the server now; `answer` tells the client later."""
        try:
            self.outcome = (self.run(), None)
        except Exception as e:
            self.outcome = (None, e)

    def answer(self, error: Exception | None = None) -> None:
        if self.deferred.called:
            return
        if error is not None:
            self.deferred.errback(error)
            return
        if self.outcome is None:
            self.apply()
        assert self.outcome is not None
        result, failed = self.outcome
        if failed is not None:
            self.deferred.errback(failed)
        else:
            self.deferred.callback(result)


class FakeZooKeeper:
    """One client of a ZooKeeper in a dict, one session at a time, on a Clock."""

    def __init__(
        self,
        clock: Clock,
        call_timeout: float = 5.0,
        server: FakeZooKeeperServer | None = None,
    ) -> None:
        self._clock = clock
        self.server = server if server is not None else FakeZooKeeperServer(clock)
        self.server.clients.append(self)
        self.call_timeout = call_timeout
        self.hosts = "fake:2181"
        self.session_timeout = 10.0
        # Sessions closed by `close_session`, and how long each close takes
        # (a connection to the session, then the close).
        self.closed_sessions: list[int] = []
        self.close_delay = 0.0
        self.requested_timeout = 10.0
        self.granted_timeout: float | None = None
        self.connect_error: str | None = None
        # The servers whose handshake failed in this outage (set by the
        # test), and the session a client not connected asks for again.
        self.handshakes_failed: dict[str, str] = {}
        self.resuming_session: int | None = None
        self.foreign: str | None = None
        # What `not_answering` says (set by the test), and the connections
        # dropped so.
        self.silence: str | None = None
        self.drops = 0
        # Calls timed out; a timed-out call is never answered here.
        self.calls_timed_out = 0
        self.calls_timed_out_unsent = 0
        self.calls_answered_after_timeout = 0
        self.calls_unsent_given_up = 0
        # The bridge's own measure of the answer being taken: unknown here.
        self.round_trip: float | None = None
        self.acl = None
        self.state = STOPPED
        self.state_since = clock.seconds()
        self.last_error: str | None = None
        self.replacements = 0
        # The bridge's clients in memory and closing, and its calls in
        # kazoo's hands (/debug/stats): one client, none of either.
        self.clients_alive = 1
        self.clients_closing = 0
        # Told when a replaced client is closed (none is, here).
        self.replaced_closed: Callable[[float], object] | None = None
        self.calls_unanswered = 0
        self.internal_errors = InternalErrors(clock)
        self.watches: dict[str, set[Watcher]] = {}
        # Watches on a node's children (get_children), by the node's path.
        self.child_watches: dict[str, set[Watcher]] = {}
        self._session: int | None = None
        self._password = b""
        self._listeners: list[Callable[[str], None]] = []
        self.started = 0
        self.started_with: list[tuple[int, bytes] | None] = []
        self.stopped_with: list[float] = []
        # Set by leave_open: the session is no longer this client's to use.
        self.left_open = False
        # Controls and counters.
        self.calls: Counter[str] = Counter()
        self.calls_by_path: Counter[tuple[str, str]] = Counter()
        # (kind, path) of every call, and ("stop", "") for stop, in order.
        self.history: list[tuple[str, str]] = []
        self.hanging: set[str] = set()
        # The paths of the deletes asked as urgent, in order.
        self.urgent: list[str] = []
        # Paths whose deletes have not left this process yet (kazoo's
        # queue), as `deletes_sent` says; None: it cannot tell.
        self.unsent: set[str] | None = set()
        self.ahead: list[str] = []
        # The paths read as changed (a watch fired with a change), in order.
        self.changed: list[str] = []
        # And read as `awaited` (a verdict waits for them).
        self.awaited: list[str] = []
        # The paths of the exists asked in the background, in order.
        self.background_exists: list[str] = []
        # Kinds whose calls the server does at once, but whose answers are
        # held like those of hanging calls (lost with the connection).
        self.unanswered: set[str] = set()
        self.held: list[_Call] = []
        # When a write was last found slow (`writes_slow_at`).
        self._writes_slow_at = -math.inf
        self.max_held = 0
        self._unsent: list[_Call] = []
        self._failures: list[tuple[str, str | None, Exception]] = []

    @property
    def nodes(self) -> dict[str, _Znode]:
        """The server's nodes, by path."""
        return self.server.nodes

    # The API of sentinel.zk.ZooKeeper

    def resuming(self) -> int | None:
        """The session asked for again while not connected (set by the test)."""
        return None if self.state == CONNECTED else self.resuming_session

    def add_listener(self, listener: Callable[[str], None]) -> None:
        self._listeners.append(listener)

    def start(self, client_id: tuple[int, bytes] | None = None) -> None:
        self.started += 1
        self.started_with.append(client_id)
        if client_id is not None:
            self._session, self._password = client_id
        self._set_state(CONNECTING)

    def close_from_thread(self, timeout: float) -> None:
        """The stop backstop's close (`sentinel.backstop`): nothing to close."""

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
        session, self._session = self._session, None
        if session is not None and self.server.sessions.get(session) == self._password:
            self.server.end_session(session)
        return succeed(None)

    def close_session(
        self, client_id: tuple[int, bytes], timeout: float
    ) -> Deferred[None]:
        """
        Close the session `client_id` if it lives (its nodes go), after
        `close_delay` on the Clock.
        """

        def close() -> None:
            self.closed_sessions.append(client_id[0])
            session, password = client_id
            if self.server.sessions.get(session) == password:
                self.server.end_session(session)

        if not self.close_delay:
            close()
            return succeed(None)
        return deferLater(self._clock, self.close_delay, close)

    def deletes_sent(self, paths: Any) -> bool | None:
        """Whether no delete of `paths` is in `unsent` (None: unknown)."""
        if self.unsent is None:
            return None
        return not self.unsent.intersection(paths)

    def leave_open(self) -> None:
        """Stop using the session; it lives on in the server."""
        self.history.append(("leave_open", ""))
        self.left_open = True
        self._drop_watches(KeeperState.CLOSED)
        self._set_state(STOPPED)
        self._fail_outstanding(ConnectionClosedError("left open"))

    def calls_waiting(self) -> dict[str, int]:
        """The bridge's calls by kind: none waits here (calls end as run)."""
        return {
            "in_flight": 0,
            "writes": 0,
            "changed": 0,
            "awaited": 0,
            "reads": 0,
            "background": 0,
        }

    def writes_slow_at(self) -> float:
        """
        As the bridge's: when a write was last found slow (timed out, or
        held or unsent `SLOW_WRITE` or more, now), -inf if never.
        """
        now = self._clock.seconds()
        if any(
            c.kind in _WRITE_KINDS and now - c.made >= SLOW_WRITE
            for c in (*self.held, *self._unsent)
        ):
            self._writes_slow_at = now
        return self._writes_slow_at

    def calls_waiting_oldest(self) -> dict[str, float]:
        """None waits here."""
        return {}

    @property
    def time_spent(self) -> TimeSpent:
        """Nothing timed here: calls end as run."""
        return TimeSpent(())

    def not_answering(self) -> str | None:
        return self.silence if self.state == CONNECTED else None

    @property
    def session_id(self) -> int | None:
        return self._session if self.state == CONNECTED else None

    @property
    def client_id(self) -> tuple[int, bytes] | None:
        if self._session is None or self.left_open:
            return None
        return self._session, self._password

    def create(
        self, path: str, data: bytes, ephemeral: bool = True, sequence: bool = False
    ) -> Deferred[str]:
        return self._call(
            "create", path, lambda: self._create(path, data, ephemeral, sequence)
        )

    def set(self, path: str, data: bytes, version: int = -1) -> Deferred[Any]:
        return self._call("set", path, lambda: self._set(path, data, version))

    # `background`, `ahead`, `changed` and `awaited` order the real bridge's
    # queue (tested there); calls here are answered as the test says. The
    # paths read `ahead`, those read as `changed`, those read as `awaited`,
    # and those of the exists asked in the background, are noted, in order.
    def get(
        self,
        path: str,
        watch: Watcher | None = None,
        background: bool = False,
        ahead: bool = False,
        changed: bool = False,
        awaited: bool = False,
    ) -> Deferred[tuple[bytes, Any]]:
        if ahead:
            self.ahead.append(path)
        if changed:
            self.changed.append(path)
        if awaited:
            self.awaited.append(path)
        return self._call("get", path, lambda: self._get(path, watch))

    def exists(
        self,
        path: str,
        watch: Watcher | None = None,
        background: bool = False,
        awaited: bool = False,
        ahead: bool = False,
    ) -> Deferred[Any]:
        if background:
            self.background_exists.append(path)
        if awaited:
            self.awaited.append(path)
        if ahead:
            self.ahead.append(path)
        return self._call("exists", path, lambda: self._exists(path, watch))

    def get_acls(self, path: str) -> Deferred[tuple[list[ACL], ZnodeStat]]:
        return self._call("get_acls", path, lambda: self._get_acls(path))

    def delete(
        self, path: str, version: int = -1, urgent: bool = False
    ) -> Deferred[None]:
        if urgent:
            self.urgent.append(path)
        return self._call("delete", path, lambda: self._delete(path, version))

    def get_children(
        self,
        path: str,
        watch: Watcher | None = None,
        background: bool = False,
        awaited: bool = False,
    ) -> Deferred[list[str]]:
        if awaited:
            self.awaited.append(path)
        return self._call("get_children", path, lambda: self._children(path, watch))

    def children_and_stat(
        self, path: str, watch: Watcher, ahead: bool = False
    ) -> Deferred[tuple[list[str], ZnodeStat]]:
        if ahead:
            self.ahead.append(path)

        def run() -> tuple[list[str], ZnodeStat]:
            children = self._children(path, watch)
            return children, self.server.stat_of(path)

        return self._call("get_children", path, run)

    def replace(
        self, path: str, version: int, data: bytes, sequential: str | None = None
    ) -> Deferred[str]:
        return self._call(
            "replace", path, lambda: self._replace(path, version, data, sequential)
        )

    def replace_with_member(
        self, path: str, version: int, data: bytes, member: MemberMove
    ) -> Deferred[str]:
        return self._call(
            "replace",
            path,
            lambda: self._replace_with_member(path, version, data, member),
        )

    # The session, driven by the test

    def connect(self) -> None:
        """
        Connected: to our session if it lives (taking it from the client
        that holds it, which loses its connection), else, after LOST if we
        had one, to a new session.
        """
        if self.left_open:
            return
        server = self.server
        session = self._session
        if session is not None and server.sessions.get(session) != self._password:
            # Expired, or never ours: kazoo hears SessionExpired, then gets
            # a new session.
            self._session = session = None
            self._set_state(LOST)
        if session is None:
            session = server.open_session()
            self._session, self._password = session, server.sessions[session]
        holder = server.holders.get(session)
        if holder is not None and holder is not self:
            holder.suspend()
        server.holders[session] = self
        self._set_state(CONNECTED)
        unsent, self._unsent = self._unsent, []
        for call in unsent:
            self._send(call)

    def suspend(self) -> None:
        """The connection dropped; the session lives on in the server."""
        if self._session is not None and self.server.holders.get(self._session) is self:
            del self.server.holders[self._session]
        self._drop_watches(KeeperState.CONNECTING)
        self._set_state(SUSPENDED)
        self._fail_outstanding(ConnectionLoss("connection dropped"))

    def replace_client(self) -> None:
        """
        The client is replaced by a new one (`ZooKeeper` does so after a
        session timeout cut off): the next `connect` opens a new session,
        while the server keeps the old one, and its nodes, until it expires.
        """
        self.suspend()
        self.replacements += 1
        self._session = None

    def expire(self) -> None:
        """The server ended our session: its ephemeral nodes are gone."""
        session = self._session
        if session is not None:
            self.server.end_session(session)
        self._session_ended()

    def _session_ended(self) -> None:
        self._session = None
        if self.left_open or self.state == STOPPED:
            return
        self._drop_watches(KeeperState.EXPIRED_SESSION)
        self._fail_outstanding(ConnectionLoss("session expired"))
        self._set_state(LOST)

    # The server, changed behind the client's back (not counted)

    def put(self, path: str, data: bytes, owner: int = 0) -> None:
        """
        A node created or written by someone else (`owner`: their session,
        or 0 for a persistent node).
        """
        self.server.put(path, data, owner)

    def remove(self, path: str) -> None:
        """Someone else deletes the node."""
        self.server.remove(path)

    def end_session(self, owner: int) -> None:
        """Another client's session ends: its ephemeral nodes go."""
        self.server.end_session(owner)

    def lose_watches(self) -> None:
        """Forget every watch without telling anyone (as a lost watch is)."""
        self.watches.clear()
        self.child_watches.clear()

    def document(self, path: str) -> Any:
        """A node's data, decoded from JSON."""
        return json.loads(self.nodes[path].data)

    def owner(self, path: str) -> int:
        return self.nodes[path].owner

    def children(self, path: str) -> list[str]:
        """A node's children's names, sorted (not counted)."""
        return self.server.children(path)

    # Controls

    def hang(self, *kinds: str) -> None:
        """Leave calls of these kinds (default: every kind) unanswered."""
        self.hanging.update(kinds or CALL_KINDS)

    def unhang(self) -> None:
        """Answer new calls again (held ones stay held until released)."""
        self.hanging.clear()
        self.unanswered.clear()

    def hold_answers(self, *kinds: str) -> None:
        """
        Calls of these kinds are done on the server at once, and their
        answers held until released (a request that reached the server,
        its answer still on its way).
        """
        self.unanswered.update(kinds)

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

    def forget_failures(self) -> None:
        """The calls `fail_next` set to fail succeed again."""
        self._failures.clear()

    def writes(self, path: str) -> int:
        """Creates and sets sent for `path`."""
        return self.calls_by_path["create", path] + self.calls_by_path["set", path]

    # Inside

    def _fire(self, path: str, kind: str) -> None:
        for watch in self.watches.pop(path, set()):
            watch(WatchedEvent(kind, KeeperState.CONNECTED, path))

    def _fire_deleted(self, path: str) -> None:
        for watch in self.child_watches.pop(path, set()):
            watch(WatchedEvent(EventType.DELETED, KeeperState.CONNECTED, path))

    def _fire_children(self, path: str) -> None:
        for watch in self.child_watches.pop(path, set()):
            watch(WatchedEvent(EventType.CHILD, KeeperState.CONNECTED, path))

    def _drop_watches(self, state: str) -> None:
        watches = [w for ws in self.watches.values() for w in ws]
        watches += [w for ws in self.child_watches.values() for w in ws]
        self.watches.clear()
        self.child_watches.clear()
        for watch in watches:
            watch(WatchedEvent(EventType.NONE, state, None))

    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        self.state = state
        self.state_since = self._clock.seconds()
        for listener in list(self._listeners):
            listener(state)

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
        try:
            # kazoo refuses a path with a "." or ".." segment before sending.
            normpath(path)
        except ValueError as e:
            return fail(e)
        for i, (failing, failing_path, error) in enumerate(self._failures):
            if failing == kind and failing_path in (None, path):
                del self._failures[i]
                return fail(error)
        call = _Call(kind, path, run, self._clock.seconds())
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
        if call.kind in self.hanging or call.kind in self.unanswered:
            if call.kind in self.unanswered:
                call.apply()
            self.held.append(call)
            self.max_held = max(self.max_held, len(self.held))
        else:
            call.answer()

    def _forget(self, failure: Any, call: _Call) -> Any:
        self.calls_timed_out += bool(failure.check(TimeoutError))
        if failure.check(TimeoutError) and call.kind in _WRITE_KINDS:
            self._writes_slow_at = self._clock.seconds()
        for calls in (self.held, self._unsent):
            if call in calls:
                calls.remove(call)
        return failure

    def _create(self, path: str, data: bytes, ephemeral: bool, sequence: bool) -> str:
        server = self.server
        parent = _parent(path)
        if sequence:
            path = f"{path}{server.sequence(parent):010d}"
        if path in self.nodes:
            raise NodeExistsError()
        # makepath=True, as the bridge passes: missing parents, persistent,
        # each created (and its watches fired) before its children, as
        # kazoo does.
        missing = []
        while parent and parent not in self.nodes:
            missing.append(parent)
            parent = _parent(parent)
        if parent and not self._may_create_under(parent):
            raise NoAuthError()
        if parent and self.nodes[parent].owner:
            # ZooKeeper lets an ephemeral node have no children (kazoo,
            # making the missing parents, meets it at the first of them).
            raise NoChildrenForEphemeralsError()
        for made in reversed(missing):
            server.new_node(made, b"", 0)
            server.fire(made, EventType.CREATED)
        assert self._session is not None
        server.new_node(path, data, self._session if ephemeral else 0)
        server.fire(path, EventType.CREATED)
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
        self.server.modified(node)
        self.server.fire(path, EventType.CHANGED)
        return node.stat()

    def _get(self, path: str, watch: Watcher | None) -> tuple[bytes, ZnodeStat]:
        node = self._node(path, -1)
        if watch is not None:
            self.watches.setdefault(path, set()).add(watch)
        return node.data, node.stat()

    def _replace(
        self, path: str, version: int, data: bytes, sequential: str | None
    ) -> str:
        # One transaction: a watcher hears the deletion, nobody sees a gap.
        self._node(path, version)
        server = self.server
        assert self._session is not None
        del server.nodes[path]
        created = path
        if sequential is not None:
            created = f"{sequential}{server.sequence(_parent(sequential)):010d}"
        server.new_node(created, data, self._session)
        server.fire(path, EventType.DELETED)
        if sequential is not None:
            server.fire(created, EventType.CREATED)
        return created

    def _replace_with_member(
        self, path: str, version: int, data: bytes, member: MemberMove
    ) -> str:
        # One transaction: all of it applied, or none.
        self._node(path, version)
        try:
            self._node(member.replaced, member.version)
        except (BadVersionError, NoNodeError) as e:
            raise MemberRefused(e) from None
        with self.server.transaction():
            self._replace(path, version, data, None)
            return self._replace(
                member.replaced, member.version, member.data, member.prefix
            )

    def _get_acls(self, path: str) -> tuple[list[ACL], ZnodeStat]:
        node = self._node(path, -1)
        return self.server.acls.get(path, self.acl or OPEN_ACL_UNSAFE), node.stat()

    def _may_create_under(self, path: str) -> bool:
        acls = self.server.acls.get(path)
        return acls is None or self._admitted(acls)

    def _admitted(self, acls: list[ACL]) -> bool:
        """Whether `acls` let this client create: anyone, or its identity."""
        ours = {(acl.id.scheme, acl.id.id) for acl in self.acl or ()}
        return any(
            acl.perms & Permissions.CREATE
            and (acl.id == ANYONE_ID_UNSAFE or (acl.id.scheme, acl.id.id) in ours)
            for acl in acls
        )

    def _exists(self, path: str, watch: Watcher | None) -> ZnodeStat | None:
        if watch is not None:
            self.watches.setdefault(path, set()).add(watch)
        return self.server.stat_of(path)

    def _delete(self, path: str, version: int) -> None:
        self._node(path, version)
        if any(p.startswith(path + "/") for p in self.nodes):
            raise NotEmptyError()
        self.server.remove(path)

    def _children(self, path: str, watch: Watcher | None = None) -> list[str]:
        if path not in self.nodes:
            raise NoNodeError()
        if watch is not None:
            self.child_watches.setdefault(path, set()).add(watch)
        return self.server.children(path)


class ChrootedZooKeeper(FakeZooKeeper):
    """
    A client whose ``hosts`` end with the chroot `chroot`: its nodes are
    those of the fake, seen through that chroot, and `above` holds the
    nodes at and above the chroot, as ZooKeeper names them, with their
    ACLs (a test sets them). While the chroot is missing, every create
    fails with ``NoNodeError`` and ``exists`` finds nothing, as through a
    chroot'd kazoo client; `create_past_chroot` makes the nodes of `above`.
    """

    def __init__(self, clock: Clock, chroot: str) -> None:
        super().__init__(clock)
        self.hosts = f"fake:2181{chroot}"
        self.chroot = chroot
        self.above: dict[str, list[ACL]] = {}

    def create_past_chroot(self, path: str) -> Deferred[str]:
        return self._call("create_past_chroot", path, lambda: self._make_above(path))

    def _make_above(self, path: str) -> str:
        if path in self.above:
            raise NodeExistsError()
        parent = path.rsplit("/", 1)[0] or "/"
        if parent != "/" and parent not in self.above:
            raise NoNodeError()
        if parent != "/" and not self._admitted(self.above[parent]):
            raise NoAuthError()
        self.above[path] = list(self.acl or OPEN_ACL_UNSAFE)
        return path

    def _exists(self, path: str, watch: Watcher | None) -> ZnodeStat | None:
        if self.chroot not in self.above:
            return None
        if path == "/":
            return ZnodeStat(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        return super()._exists(path, watch)

    def _create(self, path: str, data: bytes, ephemeral: bool, sequence: bool) -> str:
        if self.chroot not in self.above:
            raise NoNodeError()
        return super()._create(path, data, ephemeral, sequence)

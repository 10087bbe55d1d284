"""
The kazoo bridge (`sentinel.zk.ZooKeeper`) on a Clock, with a fake kazoo
client: what crosses from kazoo's threads to the reactor's and when, the
client's replacement after a session timeout disconnected, and what an
old client still says afterwards being dropped.
"""

from __future__ import annotations

import builtins
import gc
import math
import select
import socket
import threading
import time
import weakref
from functools import partial
from typing import Any

from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    BadVersionError,
    ConnectionClosedError,
    ConnectionLoss,
    NodeExistsError,
    NoNodeError,
    RolledBackError,
    RuntimeInconsistency,
)
from kazoo.handlers.threading import SequentialThreadingHandler
from kazoo.protocol.serialization import Delete
from kazoo.protocol.states import EventType, KeeperState, WatchedEvent
from kazoo.retry import KazooRetry
from twisted.internet.defer import Deferred, TimeoutError
from twisted.logger import LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from sentinel import zknames
from sentinel.calltimeouts import JUDGED_LATE
from sentinel.ensemble import ACCEPT_AFTER, CONFIG_PATH, REREAD_EVERY, members
from sentinel.sessionclose import deletes_sent
from sentinel.srvr import ServerSays, parse_srvr
from sentinel.zk import (
    AWAITED_IN_FLIGHT,
    BACKGROUND_IN_FLIGHT,
    CALLS_IN_FLIGHT,
    CHANGED_IN_FLIGHT,
    CONNECTED,
    CONNECTING,
    LOST,
    REPLACE_SPREAD,
    REPLACED_CLOSE_WAIT,
    SILENCE_JUDGED_LATE,
    SLOW_WRITE,
    STOPPED,
    SUSPENDED,
    THREADS_EVERY,
    THREADS_EVERY_AT_LEAST,
    WAIT_LIMIT,
    WRITE_BATCH,
    WRITE_BATCH_BYTES,
    ZooKeeper,
    _ConnectHandler,
)
from tests.fakekazoo import FakeKazooClient, FakeKazooFactory, HandOverClock

SESSION_TIMEOUT = 4.0
CALL_TIMEOUT = 5.0
# Bounds the wait for the bridge's closing thread (it returns at once).
THREAD_WAIT = 5.0
PATH = "/sentinel/instances/a"


def no_spread() -> float:
    """Replacements exactly a session timeout after the disconnection."""
    return 0.0


# The session timeout, and the most a connect to a black hole may take when
# bounded by its share of it (four hosts: 0.5 s) rather than by all of it.
CONNECT_SESSION_TIMEOUT = 2.0
CONNECT_BOUND = 1.5


def bridge_warnings(case: SynchronousTestCase) -> list[str]:
    """The bridge's warnings logged from now on (during `case`), formatted."""
    lines: list[str] = []

    def observe(event: LogEvent) -> None:
        if event.get("log_namespace") == "sentinel.zk" and event.get("log_level") in (
            LogLevel.warn,
            LogLevel.error,
        ):
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    case.addCleanup(globalLogPublisher.removeObserver, observe)
    return lines


class BridgeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = HandOverClock()
        self.factory = FakeKazooFactory()
        self.zk = ZooKeeper(
            self.clock,
            "127.0.0.1:2181",
            SESSION_TIMEOUT,
            auth="user:secret",
            call_timeout=CALL_TIMEOUT,
            client_factory=self.factory,
            spread=no_spread,
        )
        self.states: list[str] = []
        self.zk.add_listener(self.states.append)
        self.events: list[WatchedEvent] = []

    def client(self, index: int = -1) -> FakeKazooClient:
        return self.factory.clients[index]

    def connect(self, client: FakeKazooClient) -> None:
        client.change_state(KazooState.CONNECTED)
        self.clock.run_handed_over()

    def assert_closed_on_own_thread(self, client: FakeKazooClient) -> None:
        self.assertTrue(client.closed.wait(THREAD_WAIT))
        self.assertIsNotNone(client.stopped_on)
        self.assertIsNot(client.stopped_on, threading.main_thread())
        self.assertIs(client.closed_on, client.stopped_on)

    def test_start(self) -> None:
        """
        `start` makes one client with the session timeout, a retry that
        never gives up nor waits more than 1 s (and its jitter) between
        attempts, as ZooKeeper's Java client, and the credentials, and
        starts it without waiting.
        """
        self.zk.start()
        [client] = self.factory.clients
        self.assertTrue(client.started)
        settings = client.settings
        self.assertEqual(settings["hosts"], "127.0.0.1:2181")
        self.assertEqual(settings["timeout"], SESSION_TIMEOUT)
        self.assertEqual(settings["auth_data"], [("digest", "user:secret")])
        retry = settings["connection_retry"]
        self.assertIsInstance(retry, KazooRetry)
        self.assertEqual((retry.max_tries, retry.max_delay), (-1, 1))
        self.assertEqual(self.zk.state, CONNECTING)

    def test_state_handed_over(self) -> None:
        """
        kazoo's state changes reach the listeners only on the reactor's
        thread (through callFromThread), then with the session's id.
        """
        self.zk.start()
        self.client().change_state(KazooState.CONNECTED, session=0x1234)
        self.assertEqual(self.zk.state, CONNECTING)
        self.assertEqual(self.clock.run_handed_over(), 1)
        self.assertEqual(self.zk.state, CONNECTED)
        self.assertEqual(self.zk.session_id, 0x1234)
        self.assertEqual(self.states, [CONNECTING, CONNECTED])

    def test_reconnect_within_session_timeout_keeps_the_client(self) -> None:
        """A client back before the session timeout is kept."""
        self.zk.start()
        self.connect(self.client())
        self.client().change_state(KazooState.SUSPENDED)
        self.clock.run_handed_over()
        self.clock.advance(SESSION_TIMEOUT - 0.1)
        self.connect(self.client())
        self.clock.advance(SESSION_TIMEOUT * 10)
        self.assertEqual(len(self.factory.clients), 1)
        self.assertEqual(self.zk.replacements, 0)
        self.assertEqual(self.states, [CONNECTING, CONNECTED, SUSPENDED, CONNECTED])

    def test_replaced_after_session_timeout_disconnected(self) -> None:
        """
        A client disconnected for the session timeout is replaced: a new
        one starts, the old one is stopped and closed on a thread of its
        own, listeners hear LOST, and whatever the old client still hands
        over (a reconnection, a watch, a state) is dropped.
        """
        self.zk.start()
        old = self.client()
        self.connect(old)
        watched = self.zk.exists(PATH, watch=self.events.append)
        old.answer(0, value=None)
        self.clock.run_handed_over()
        self.assertIsNone(self.successResultOf(watched))
        old.change_state(KazooState.SUSPENDED)
        self.clock.run_handed_over()

        self.clock.advance(SESSION_TIMEOUT - 0.01)
        self.assertEqual(len(self.factory.clients), 1)
        self.clock.advance(0.01)
        self.assertEqual(len(self.factory.clients), 2)
        new = self.client()
        self.assertEqual(self.zk.replacements, 1)
        self.assertEqual(self.zk.state, LOST)
        self.assert_closed_on_own_thread(old)
        self.clock.run_handed_over(wait=THREAD_WAIT)
        self.assertTrue(new.started)

        old.change_state(KazooState.CONNECTED)
        old.fire(PATH, EventType.DELETED)
        self.clock.run_handed_over()
        self.assertEqual(self.zk.state, LOST)
        self.assertEqual(self.events, [])

        self.connect(new)
        self.assertEqual(self.zk.state, CONNECTED)
        unanswered = self.zk.exists(PATH, watch=self.events.append)
        new.fire(PATH, EventType.DELETED)
        self.assertEqual(self.events, [])
        self.clock.run_handed_over()
        self.assertEqual([e.type for e in self.events], [EventType.DELETED])
        self.clock.advance(SESSION_TIMEOUT * 10)
        self.assertEqual(len(self.factory.clients), 2)
        # Its timer ran late (one step of the Clock): judged that much on.
        self.clock.advance(JUDGED_LATE)
        self.failureResultOf(unanswered, TimeoutError)
        self.assertEqual(self.states[-3:], [SUSPENDED, LOST, CONNECTED])

    def replace_with_close_held(self) -> tuple[FakeKazooClient, threading.Event]:
        """
        A connected client cut off for the session timeout and replaced,
        its close held until the returned event is set.
        """
        self.zk.start()
        old = self.client()
        self.connect(old)
        old.change_state(KazooState.SUSPENDED)
        self.clock.run_handed_over()
        held = old.close_blocks = threading.Event()
        self.addCleanup(held.set)
        self.clock.advance(SESSION_TIMEOUT)
        self.assertEqual(len(self.factory.clients), 2)
        return old, held

    def test_replacement_starts_once_the_old_client_is_closed(self) -> None:
        """
        A replacement client starts only once the client it replaces is
        stopped and closed (its threads ended, so that the new ones take
        their memory), on the same session and listeners as ever.
        """
        old, held = self.replace_with_close_held()
        new = self.client()
        self.clock.advance(REPLACED_CLOSE_WAIT - 0.01)
        self.clock.run_handed_over()
        self.assertFalse(new.started)
        self.assertIsNone(old.closed_on)
        held.set()
        self.assert_closed_on_own_thread(old)
        self.assertEqual(self.clock.run_handed_over(wait=THREAD_WAIT), 1)
        self.assertTrue(new.started)
        self.connect(new)
        self.assertEqual(self.states[-3:], [SUSPENDED, LOST, CONNECTED])

    def test_replacement_starts_anyway_when_the_close_hangs(self) -> None:
        """
        A replaced client whose close hangs (a kazoo thread blocked) holds
        its replacement back `REPLACED_CLOSE_WAIT` at most; its close,
        ending later, starts nothing again.
        """
        old, held = self.replace_with_close_held()
        new = self.client()
        self.clock.advance(REPLACED_CLOSE_WAIT - 0.01)
        self.assertFalse(new.started)
        self.clock.advance(0.01)
        self.assertTrue(new.started)
        new.started = False
        held.set()
        self.assert_closed_on_own_thread(old)
        self.assertEqual(self.clock.run_handed_over(wait=THREAD_WAIT), 1)
        self.assertFalse(new.started)
        self.connect(new)
        self.assertEqual(self.zk.state, CONNECTED)

    def test_stop_while_a_replacement_waits(self) -> None:
        """
        A stop while a replacement waits for the old client's close never
        starts the replacement: it is closed unstarted.
        """
        old, held = self.replace_with_close_held()
        new = self.client()
        stopped = self.zk.stop(CALL_TIMEOUT)
        self.assert_closed_on_own_thread(new)
        held.set()
        self.assert_closed_on_own_thread(old)
        # Each close says it is done: the two may come in one run or two.
        ran = self.clock.run_handed_over(wait=THREAD_WAIT)
        if ran < 2:
            ran += self.clock.run_handed_over(wait=THREAD_WAIT)
        self.assertEqual(ran, 2)
        self.clock.advance(REPLACED_CLOSE_WAIT)
        self.assertFalse(new.started)
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(len(self.factory.clients), 2)

    def test_replaced_clients_counted_until_closed_and_freed(self) -> None:
        """
        /debug/stats counts the clients still closing and those still in
        memory: a replaced client is closing until its close ends, and
        alive until nothing holds it; the bridge keeps none of them, so
        that after three outages one client is left, the current one.
        """
        old, held = self.replace_with_close_held()
        self.assertEqual((self.zk.clients_closing, self.zk.clients_alive), (1, 2))
        held.set()
        self.assert_closed_on_own_thread(old)
        self.clock.run_handed_over(wait=THREAD_WAIT)
        self.assertEqual(self.zk.clients_closing, 0)
        for _ in range(2):
            self.client().change_state(KazooState.SUSPENDED)
            self.clock.run_handed_over()
            self.clock.advance(SESSION_TIMEOUT)
            self.assert_closed_on_own_thread(self.client(-2))
            self.clock.run_handed_over(wait=THREAD_WAIT)
        self.assertEqual((self.zk.clients_closing, self.zk.clients_alive), (0, 4))
        del old, held
        del self.factory.clients[:-1]
        gc.collect()
        self.assertEqual(self.zk.clients_alive, 1)

    def test_replaced_client_told_once_closed_and_let_go(self) -> None:
        """
        Once a replaced client's close has ended, `replaced_closed` is told
        on the reactor thread when that client was made, and nothing of the
        bridge's or its closing thread's holds the client then, even with
        that thread still running: a collection there frees it. A stop's
        close tells nothing.
        """
        self.clock.advance(7.0)
        told: list[tuple[float, bool]] = []
        old, held = self.replace_with_close_held()
        gone, closed = weakref.ref(old), old.closed
        hand_over = self.clock.callFromThread
        ending = threading.Event()
        self.addCleanup(ending.set)

        def from_thread(f: Any, *args: Any, **kwargs: Any) -> None:
            hand_over(f, *args, **kwargs)
            if f == self.zk._closed:
                # The closing thread has not ended when the reactor's runs.
                ending.wait(THREAD_WAIT)

        self.patch(self.clock, "callFromThread", from_thread)

        def replaced_closed(made_at: float) -> None:
            gc.collect()
            told.append((made_at, gone() is None))

        self.zk.replaced_closed = replaced_closed
        del old, self.factory.clients[0]
        held.set()
        self.assertTrue(closed.wait(THREAD_WAIT))
        self.assertEqual(told, [])
        self.clock.run_handed_over(wait=THREAD_WAIT)
        self.assertEqual(told, [(7.0, True)])
        ending.set()
        self.connect(self.client())
        self.zk.stop(CALL_TIMEOUT)
        self.assert_closed_on_own_thread(self.client())
        self.clock.run_handed_over(wait=THREAD_WAIT)
        self.assertEqual(told, [(7.0, True)])

    def test_replacement_resumes_the_session(self) -> None:
        """
        A client replaced while its session may still live (suspended, not
        told it expired) hands the session's id and password to the new
        client, which gets it back from a server that kept it: the same
        session, connected again. A session kazoo was told expired is not
        asked for (`test_replacement_is_a_new_session`).
        """
        self.zk.start()
        old = self.client()
        old.change_state(KazooState.CONNECTED, session=0x42)
        self.clock.run_handed_over()
        old.change_state(KazooState.SUSPENDED)
        self.clock.run_handed_over()
        self.clock.advance(SESSION_TIMEOUT)
        new = self.client()
        self.assertIsNot(new, old)
        self.assertEqual(new.settings["client_id"], (0x42, b"password"))
        self.assertEqual(self.zk.state, LOST)
        new.change_state(KazooState.CONNECTED, session=0x42)
        self.clock.run_handed_over()
        self.assertEqual(self.zk.session_id, 0x42)
        self.assertEqual(self.states[-3:], [SUSPENDED, LOST, CONNECTED])

    def test_replaced_again_while_unreachable(self) -> None:
        """
        While ZooKeeper stays unreachable, the client is replaced once per
        session timeout, and each replaced client is closed.
        """
        self.zk.start()
        self.connect(self.client())
        self.client().change_state(KazooState.LOST)
        self.clock.run_handed_over()
        for _ in range(3):
            self.clock.advance(SESSION_TIMEOUT)
        self.assertEqual(len(self.factory.clients), 4)
        self.assertEqual(self.zk.replacements, 3)
        for client in self.factory.clients[:-1]:
            self.assert_closed_on_own_thread(client)
        self.assertFalse(self.client().closed.is_set())

    def test_replacement_spread_over_a_share_of_the_session_timeout(self) -> None:
        """
        Each replacement waits the session timeout and a drawn share of
        `REPLACE_SPREAD` of it (agents cut off by one outage come back
        apart, not all at once): drawn anew each time, never shorter than
        the session timeout, at most that share longer.
        """
        draws = iter([0.5, 0.999, 0.0, 0.0])
        clients = FakeKazooFactory()
        zk = ZooKeeper(
            self.clock,
            "127.0.0.1:2181",
            SESSION_TIMEOUT,
            client_factory=clients,
            spread=lambda: next(draws),
        )
        zk.start()
        clients.clients[-1].change_state(KazooState.CONNECTED)
        self.clock.run_handed_over()
        clients.clients[-1].change_state(KazooState.LOST)
        self.clock.run_handed_over()
        waits = []
        for _ in range(3):
            waited = 0.0
            made = len(clients.clients)
            while len(clients.clients) == made:
                self.clock.advance(0.01)
                waited += 0.01
            waits.append(round(waited / SESSION_TIMEOUT, 2))
        self.assertEqual(waits, [1 + REPLACE_SPREAD / 2, 1 + REPLACE_SPREAD, 1.0])

    def test_replacement_spread_drawn_at_random_by_default(self) -> None:
        """Bridges made alike, cut off alike, do not replace in step."""
        factories = [FakeKazooFactory() for _ in range(8)]
        bridges = [
            ZooKeeper(self.clock, "127.0.0.1:2181", SESSION_TIMEOUT, client_factory=f)
            for f in factories
        ]
        for bridge, factory in zip(bridges, factories, strict=True):
            bridge.start()
            factory.clients[-1].change_state(KazooState.CONNECTED)
            self.clock.run_handed_over()
            factory.clients[-1].change_state(KazooState.LOST)
        self.clock.run_handed_over()
        self.clock.advance(SESSION_TIMEOUT)
        replaced_at: dict[int, float] = {}
        for step in range(1, int(SESSION_TIMEOUT * REPLACE_SPREAD * 100) + 2):
            self.clock.advance(0.01)
            for index, factory in enumerate(factories):
                if len(factory.clients) > 1:
                    replaced_at.setdefault(index, step / 100)
        self.assertEqual(len(replaced_at), len(bridges))
        self.assertGreater(len(set(replaced_at.values())), 1)

    def test_replacements_logged_once_an_outage(self) -> None:
        """
        The replacements of one outage are logged once, at the first (one
        each session timeout was 360 lines an hour), and summed up once
        connected again: how many, since when. The next outage logs its
        first again.
        """
        lines: list[tuple[LogLevel, str]] = []

        def observe(event: LogEvent) -> None:
            if "replaced" in (text := formatEvent(event)) or "replacing" in text:
                lines.append((event["log_level"], text))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.zk.start()
        self.connect(self.client())
        for outage in range(2):
            self.client().change_state(KazooState.LOST)
            self.clock.run_handed_over()
            for _ in range(3):
                self.clock.advance(SESSION_TIMEOUT)
            self.assertEqual(len(lines), 2 * outage + 1)
            self.connect(self.client())
        self.assertEqual(self.zk.replacements, 6)
        self.assertEqual(
            [level for level, _ in lines], [LogLevel.warn, LogLevel.info] * 2
        )
        self.assertIn("replacing the client, again every", lines[0][1])
        self.assertIn(
            f"replaced 3 time(s), the first {2 * SESSION_TIMEOUT:.0f} s ago",
            lines[1][1],
        )

    def test_replaced_while_connect_unanswered_names_it(self) -> None:
        """
        A client replaced while its connect is still unanswered (one server
        listed, whose packets are dropped: the connect has the whole session
        timeout) says so as the outage's cause, in place of the cause of the
        connection lost before; its replacement's own failures come after.
        """
        self.zk.start()
        self.connect(self.client())
        self.client().warn("Connection dropped: %s", "outstanding heartbeat ping")
        self.client().change_state(KazooState.SUSPENDED)
        self.clock.run_handed_over()
        handler = self.client().settings["handler"]
        handler.connecting = ("127.0.0.1", 2181)
        self.clock.advance(SESSION_TIMEOUT)
        self.assertEqual(len(self.factory.clients), 2)
        self.assertEqual(
            self.zk.connect_error, "connect to 127.0.0.1:2181 not answered"
        )
        self.client().warn("Connection dropped: %s", "socket connection broken")
        self.clock.run_handed_over()
        self.assertEqual(
            self.zk.connect_error, "Connection dropped: socket connection broken"
        )

    def test_failed_handshakes_named_by_server(self) -> None:
        """
        In an outage, an attempt that failed after its TCP connect is
        named by the server that accepted it, and what that means: one
        that closes at the handshake runs but serves no client (a server
        without a quorum), one that never answers it is frozen. Each server
        is kept until connected again; the connection's own first drop is
        not such an attempt. A client replaced after the session timeout
        still asks for the session: it is not known lost (`resuming`).
        """
        self.zk.start()
        self.connect(self.client())
        session = self.zk.session_id
        self.client().warn("Connection dropped: %s", "socket connection broken")
        self.client().change_state(KazooState.SUSPENDED)
        self.clock.run_handed_over()
        self.assertEqual(
            self.zk.connect_error, "Connection dropped: socket connection broken"
        )
        self.assertEqual(self.zk.resuming(), session)
        handler = self.client().settings["handler"]
        handler.connected_to = ("127.0.0.1", 2181)
        self.client().warn("Connection dropped: %s", "socket connection broken")
        handler.connected_to = ("127.0.0.1", 2182)
        self.client().warn("Connection time-out: %s", "socket time-out during read")
        self.clock.run_handed_over()
        self.assertEqual(
            sorted(self.zk.handshakes_failed),
            ["127.0.0.1:2181", "127.0.0.1:2182"],
        )
        self.assertIn(
            "runs but will not serve", self.zk.handshakes_failed["127.0.0.1:2181"]
        )
        self.assertIn("never answered the handshake", self.zk.connect_error or "")
        self.assertTrue((self.zk.connect_error or "").startswith("127.0.0.1:2182 "))
        self.clock.advance(SESSION_TIMEOUT)
        self.assertEqual(len(self.factory.clients), 2)
        self.assertEqual(self.zk.state, LOST)
        self.assertEqual(self.zk.resuming(), session)
        self.assertEqual(len(self.zk.handshakes_failed), 2)
        self.connect(self.client())
        self.assertEqual(self.zk.handshakes_failed, {})
        self.assertIsNone(self.zk.resuming())

    def test_replaced_with_no_connect_under_way_keeps_cause(self) -> None:
        """
        A client replaced between its connects keeps the cause kazoo gave
        for the last one.
        """
        self.zk.start()
        self.connect(self.client())
        self.client().warn("Connection dropped: %s", "socket connection broken")
        self.client().change_state(KazooState.SUSPENDED)
        self.clock.run_handed_over()
        self.clock.advance(SESSION_TIMEOUT)
        self.assertEqual(len(self.factory.clients), 2)
        self.assertEqual(
            self.zk.connect_error, "Connection dropped: socket connection broken"
        )

    def warnings(self) -> list[str]:
        """The bridge's warnings logged from now on, formatted."""
        return bridge_warnings(self)

    def test_granted_longer_timeout_keeps_the_client(self) -> None:
        """
        Granted a longer session timeout than asked (ZooKeeper's
        minSessionTimeout), the bridge counts with it: a client cut off for
        the timeout asked is kept (its session is alive), and replaced only
        after the one granted. One warning says so, not one per connection.
        """
        warnings = self.warnings()
        self.zk.start()
        self.assertEqual(self.zk.session_timeout, SESSION_TIMEOUT)
        client = self.client()
        client.session_created(20_000)
        self.connect(client)
        self.assertEqual(self.zk.granted_timeout, 20.0)
        self.assertEqual(self.zk.session_timeout, 20.0)
        self.assertEqual(self.zk.requested_timeout, SESSION_TIMEOUT)
        [warning] = warnings
        self.assertIn("granted a session timeout of 20.0 s, longer than", warning)
        self.assertIn("the 4.0 s asked", warning)
        self.assertIn("minSessionTimeout", warning)

        client.change_state(KazooState.SUSPENDED)
        self.clock.run_handed_over()
        self.clock.advance(SESSION_TIMEOUT * 2)
        client.session_created(20_000)
        self.connect(client)
        self.assertEqual(len(self.factory.clients), 1)
        client.change_state(KazooState.SUSPENDED)
        self.clock.run_handed_over()
        self.clock.advance(20.0 - 0.01)
        self.assertEqual(len(self.factory.clients), 1)
        self.clock.advance(0.01)
        self.assertEqual(len(self.factory.clients), 2)
        self.assertEqual(len(warnings), 2)
        self.assertIn("unreachable for the 20.0 s session timeout", warnings[1])

    def test_granted_shorter_timeout_replaces_sooner(self) -> None:
        """
        Granted a shorter session timeout than asked (ZooKeeper's
        maxSessionTimeout), the bridge replaces a client cut off for that
        long, not for the timeout asked; the warning says which bound.
        """
        warnings = self.warnings()
        self.zk.start()
        client = self.client()
        client.session_created(1_000)
        self.connect(client)
        self.assertEqual(self.zk.session_timeout, 1.0)
        self.assertIn("shorter than the 4.0 s asked", warnings[0])
        self.assertIn("maxSessionTimeout", warnings[0])
        client.change_state(KazooState.SUSPENDED)
        self.clock.run_handed_over()
        self.clock.advance(1.0)
        self.assertEqual(len(self.factory.clients), 2)

    def test_granted_as_asked_not_logged(self) -> None:
        """A session timeout granted as asked logs nothing."""
        warnings = self.warnings()
        self.zk.start()
        self.client().session_created(int(SESSION_TIMEOUT * 1000))
        self.connect(self.client())
        self.assertEqual(self.zk.granted_timeout, SESSION_TIMEOUT)
        self.assertEqual(warnings, [])

    def test_replaced_clients_grant_dropped(self) -> None:
        """
        What a replaced client's connection still says (a grant, a failure)
        is dropped; the last grant stays the estimate for the new client
        until it connects.
        """
        self.zk.start()
        old = self.client()
        old.session_created(2_000)
        self.connect(old)
        old.change_state(KazooState.LOST)
        self.clock.run_handed_over()
        self.clock.advance(2.0)
        self.assertEqual(len(self.factory.clients), 2)
        old.session_created(30_000)
        old.warn("Connection dropped: %s", "socket connection broken")
        self.clock.run_handed_over()
        self.assertEqual(self.zk.session_timeout, 2.0)
        self.assertIsNone(self.zk.connect_error)

    def test_connect_failure_cause_kept_and_logged_once(self) -> None:
        """
        Why a connection attempt failed (kazoo's warning) is kept while not
        connected and logged once per outage, not at every attempt; the
        warning that names no cause is left out, and a connection clears it.
        """
        warnings = self.warnings()
        self.zk.start()
        client = self.client()
        for _ in range(3):
            client.warn("Connection dropped: %s", "socket connection broken")
            client.warn("Transition to CONNECTING")
        self.clock.run_handed_over()
        self.assertEqual(
            self.zk.connect_error, "Connection dropped: socket connection broken"
        )
        client.warn(
            "Connection dropped: %s", "socket connection error: Connection refused"
        )
        self.clock.run_handed_over()
        self.assertEqual(
            self.zk.connect_error,
            "Connection dropped: socket connection error: Connection refused",
        )
        [warning] = warnings
        self.assertIn(
            "ZooKeeper connection failed: Connection dropped: socket", warning
        )
        # The servers it tried, named. (Before: not, so a wrong port in the
        # config file read as ZooKeeper refusing.)
        self.assertIn(f"(zookeeper.hosts {self.zk.hosts}; retrying;", warning)

        self.connect(client)
        self.assertIsNone(self.zk.connect_error)
        client.warn("Connection dropped: %s", "socket connection broken")
        client.change_state(KazooState.SUSPENDED)
        self.clock.run_handed_over()
        self.assertEqual(
            self.zk.connect_error, "Connection dropped: socket connection broken"
        )
        self.assertEqual(len(warnings), 2)

    def test_slow_round_trip_named_with_the_failure(self) -> None:
        """
        A connection that fails after its quickest answer took a third of
        the session timeout or more (4 s: 1.5 s) names that answer with
        the failure: kazoo drops a connection whose ping takes that long,
        and only a longer session timeout helps. Quicker answers add
        nothing, nor does a connection that answered nothing.
        """
        self.zk.start()
        client = self.client()
        for took, named in ((1.5, True), (1.0, False), (None, False)):
            self.connect(client)
            if took is not None:
                answered = self.zk.get(PATH)
                self.clock.advance(took)
                client.answer(len(client.calls) - 1, value=(b"data", None))
                self.clock.run_handed_over()
                self.successResultOf(answered)
            client.warn("Connection dropped: %s", "outstanding heartbeat ping")
            client.change_state(KazooState.SUSPENDED)
            self.clock.run_handed_over()
            error = self.zk.connect_error
            self.assertIsNotNone(error)
            assert error is not None
            self.assertTrue(error.startswith("Connection dropped: outstanding"))
            self.assertEqual(
                "the quickest answer on that connection took 1.5 s, a third "
                "of the 4 s session timeout or more" in error,
                named,
            )

    def test_call_result_handed_over(self) -> None:
        """
        A call's answer, set on kazoo's thread, fires its Deferred on the
        reactor's thread; a call never answered fails after the call
        timeout, and its late answer is dropped.
        """
        self.zk.start()
        self.connect(self.client())
        answered = self.zk.get(PATH)
        client = self.client()
        client.answer(0, value=(b"data", None))
        self.assertNoResult(answered)
        self.clock.run_handed_over()
        self.assertEqual(self.successResultOf(answered), (b"data", None))

        hanging = self.zk.get(PATH)
        self.clock.advance(CALL_TIMEOUT)
        self.failureResultOf(hanging, TimeoutError)
        client.answer(1, value=(b"late", None))
        self.clock.run_handed_over()

    def test_timed_out_calls_counted_with_their_answers(self) -> None:
        """
        Calls failed by the call timeout are counted, and those whose
        answer kazoo hands over afterwards all the same are counted again
        (`calls_answered_after_timeout`); one that timed out waiting for
        room, never sent, has no answer to come.
        """
        self.zk.start()
        client = self.client()
        self.connect(client)
        calls = [self.zk.exists(f"{PATH}{i}") for i in range(CALLS_IN_FLIGHT + 2)]
        self.clock.advance(CALL_TIMEOUT)
        for call in calls[:CALLS_IN_FLIGHT]:
            self.failureResultOf(call, TimeoutError)
        self.assertEqual(self.zk.calls_timed_out, CALLS_IN_FLIGHT)
        client.answer(0, value=None)
        client.answer(1, value=None)
        self.clock.run_handed_over()
        self.assertEqual(self.zk.calls_answered_after_timeout, 2)
        # The two that waited were sent then, each with its call timeout.
        self.assertEqual(len(client.calls), CALLS_IN_FLIGHT + 2)
        client.answer(CALLS_IN_FLIGHT, value=None)
        self.clock.run_handed_over()
        self.assertIsNone(self.successResultOf(calls[CALLS_IN_FLIGHT]))
        self.clock.advance(CALL_TIMEOUT)
        self.failureResultOf(calls[-1], TimeoutError)
        self.assertEqual(
            (
                self.zk.calls_timed_out,
                self.zk.calls_answered_after_timeout,
                self.zk.calls_timed_out_unsent,
            ),
            (CALLS_IN_FLIGHT + 1, 2, 0),
        )

    def test_answered_while_the_agent_stalled_not_timed_out(self) -> None:
        """
        The agent stalls past the call timeout of a read and of a set in
        flight, both answered by ZooKeeper meanwhile: it wakes with their
        timers due and the answers still being handed over by kazoo's
        thread. Both calls end with their answers, none timed out; one
        never answered still fails, `JUDGED_LATE` after the stall.
        """
        client = self.connected()
        read = self.zk.get(PATH)
        written = self.zk.set(f"{PATH}w", b"data")
        self.clock.advance(0)
        unanswered = self.zk.exists(f"{PATH}u")
        self.clock.advance(CALL_TIMEOUT + 2.0)
        client.answer(0, value=(b"data", None))
        client.answer(1, value="stat")
        self.clock.run_handed_over()
        self.assertEqual(self.successResultOf(read), (b"data", None))
        self.assertEqual(self.successResultOf(written), "stat")
        self.assertNoResult(unanswered)
        self.clock.advance(JUDGED_LATE)
        self.failureResultOf(unanswered, TimeoutError)
        self.assertEqual(
            (self.zk.calls_timed_out, self.zk.calls_answered_after_timeout), (1, 0)
        )

    def test_round_trip_left_out_the_reactors_delay(self) -> None:
        """
        While an answer's callbacks run, `round_trip` says how long
        ZooKeeper took to give it: from the call's hand-over to kazoo
        until kazoo's thread heard it (0.2 s), without the time the
        reactor thread, busy, took to get to it (3 s more); None once
        they have run, and for a call whose answer the reactor was quick
        to take, that answer's own.
        """
        self.zk.start()
        client = self.client()
        self.connect(client)
        seen: list[float | None] = []
        for index, (heard, taken) in enumerate(((0.2, 3.0), (0.5, 0.0))):
            answered = self.zk.get(PATH)
            answered.addCallback(lambda _: seen.append(self.zk.round_trip))
            self.clock.advance(heard)
            client.answer(index, value=(b"data", None))
            self.clock.advance(taken)
            self.clock.run_handed_over()
            self.successResultOf(answered)
            self.assertIsNone(self.zk.round_trip)
        self.assertEqual(seen, [0.2, 0.5])

    def test_call_while_not_connected_fails_at_once(self) -> None:
        """
        A call made while kazoo is not connected (before the first
        connection, or suspended) fails at once with ConnectionLoss and is
        not handed to kazoo, which would queue it; once connected again,
        calls go through.
        """
        self.zk.start()
        client = self.client()
        self.failureResultOf(self.zk.get(PATH), ConnectionLoss)
        self.connect(client)
        client.change_state(KazooState.SUSPENDED)
        self.failureResultOf(self.zk.exists(PATH), ConnectionLoss)
        self.assertEqual(client.calls, [])
        self.connect(client)
        self.assertNoResult(self.zk.exists(PATH))
        self.assertEqual([c[0] for c in client.calls], ["exists"])

    def test_calls_in_flight_bounded(self) -> None:
        """
        At most CALLS_IN_FLIGHT calls are in kazoo's hands at once (kazoo's
        wake-up socket would block the reactor thread); the others wait, in
        order, each handed over as an answer comes back. One that waited
        past its bound is never handed over, and a new client (the old one
        replaced) fails those waiting while it is not connected.
        """
        self.zk.start()
        client = self.client()
        self.connect(client)
        calls = [self.zk.exists(f"{PATH}{i}") for i in range(CALLS_IN_FLIGHT + 3)]
        self.assertEqual(len(client.calls), CALLS_IN_FLIGHT)
        client.answer(0, value=None)
        self.clock.run_handed_over()
        self.assertIsNone(self.successResultOf(calls[0]))
        self.assertEqual(
            [c[1] for c in client.calls[CALLS_IN_FLIGHT:]], [f"{PATH}{CALLS_IN_FLIGHT}"]
        )
        self.clock.advance(CALL_TIMEOUT)
        self.clock.advance(CALL_TIMEOUT * (WAIT_LIMIT - 1))
        for late in calls[1:]:
            self.failureResultOf(late, TimeoutError)
        client.answer(1, value=None)
        self.clock.run_handed_over()
        self.assertEqual(len(client.calls), CALLS_IN_FLIGHT + 1)

        waiting = [self.zk.exists(f"{PATH}w{i}") for i in range(CALLS_IN_FLIGHT)]
        self.assertEqual(len(client.calls), CALLS_IN_FLIGHT + 2)
        client.change_state(KazooState.LOST)
        self.clock.run_handed_over()
        self.clock.advance(SESSION_TIMEOUT)
        self.assertEqual(len(self.factory.clients), 2)
        for call in waiting[1:]:
            self.failureResultOf(call, ConnectionLoss)

    def test_writes_wait_ahead_of_reads(self) -> None:
        """
        Writes waiting for room are handed over before reads that waited
        longer (a new primary's thousands of reads must not hold back the
        creates of nodes readers miss); each kind stays in order.
        """
        client = self.connected()
        for i in range(CALLS_IN_FLIGHT):
            self.zk.exists(f"{PATH}{i}")
        for i in range(2):
            self.zk.exists(f"{PATH}r{i}")
        for i in range(2):
            self.zk.set(f"{PATH}w{i}", b"{}")
            self.clock.advance(0)  # Sent at the end of the turn.
        self.assertEqual(len(client.calls), CALLS_IN_FLIGHT)
        self.assertEqual(
            self.handed_over_as_room_comes(client, 4),
            [
                ("set", f"{PATH}w0"),
                ("set", f"{PATH}w1"),
                ("exists", f"{PATH}r0"),
                ("exists", f"{PATH}r1"),
            ],
        )

    def test_calls_waiting_by_kind(self) -> None:
        """
        `calls_waiting` (/debug/stats) says how many calls are in kazoo's
        hands and how many of each kind wait for room here.
        """
        client = self.connected()
        for i in range(CALLS_IN_FLIGHT + 2):
            self.zk.exists(f"{PATH}{i}")
        self.zk.get(f"{PATH}b0", background=True)
        self.zk.get(f"{PATH}c0", changed=True)
        self.zk.get(f"{PATH}a0", awaited=True)
        self.zk.set(f"{PATH}w0", b"{}")
        self.clock.advance(0)  # Sent at the end of the turn.
        self.assertEqual(len(client.calls), CALLS_IN_FLIGHT)
        self.assertEqual(
            self.zk.calls_waiting(),
            {
                "in_flight": CALLS_IN_FLIGHT,
                "writes": 1,
                "changed": 1,
                "awaited": 1,
                "reads": 2,
                "background": 1,
            },
        )

    def test_call_timeout_counts_from_its_sending(self) -> None:
        """
        A call that waited for room gets its whole call timeout once it is
        handed to kazoo: behind a view change's thousands of reads, one
        that waited most of its timeout is not failed unsent, nor soon
        after it is sent, and is answered. Before, its timeout counted
        from when it was asked, and it failed before ZooKeeper was asked
        (471 of a survivor's 593 calls timed out at a leave, 1,000
        instances).
        """
        client = self.connected()
        self.fill_calls_in_flight()
        waited = self.zk.get(f"{PATH}r")
        self.clock.advance(CALL_TIMEOUT - 0.5)
        client.answer(0, value=None)
        self.clock.run_handed_over()
        self.assertEqual(client.calls[-1][:2], ("get", f"{PATH}r"))
        # On time past the moment it was asked a call timeout ago, then on
        # to just before its call timeout from its sending.
        self.clock.advance(0.5)
        self.clock.advance(CALL_TIMEOUT - 1.0)
        self.assertNoResult(waited)
        client.answer(CALLS_IN_FLIGHT, value=(b"{}", None))
        self.clock.run_handed_over()
        self.assertEqual(self.successResultOf(waited), (b"{}", None))
        self.assertEqual(self.zk.calls_timed_out_unsent, 0)

    def fill_calls_in_flight(self) -> None:
        """`CALLS_IN_FLIGHT` calls in kazoo's hands, to time out unanswered."""
        for i in range(CALLS_IN_FLIGHT):
            self.zk.exists(f"{PATH}{i}").addErrback(lambda f: f.trap(TimeoutError))

    def test_waiting_for_room_is_bounded(self) -> None:
        """
        A call that finds no room waits at most `WAIT_LIMIT` call timeouts:
        then it fails with TimeoutError, counted as never sent, and is not
        handed over when room comes.
        """
        client = self.connected()
        self.fill_calls_in_flight()
        waiting = self.zk.exists(f"{PATH}r", background=True)
        self.clock.advance(CALL_TIMEOUT * WAIT_LIMIT - 0.5)
        self.assertNoResult(waiting)
        self.clock.advance(0.5)
        self.failureResultOf(waiting, TimeoutError)
        self.assertEqual(self.zk.calls_timed_out_unsent, 1)
        client.answer(0, value=None)
        self.clock.run_handed_over()
        self.assertEqual(len(client.calls), CALLS_IN_FLIGHT)

    def test_changed_reads_wait_ahead_of_reads(self) -> None:
        """
        A read of a changed node (its watch fired: an observer changed its
        opinion) waits behind the writes and ahead of the other reads,
        background or not, that waited longer; a read a verdict waits for
        (`awaited`: the first read of a new observer's opinion at a view
        change, behind whose background reads it held its verdict back for
        seconds) waits behind those and ahead of the ordinary reads.
        """
        client = self.connected()
        for i in range(CALLS_IN_FLIGHT):
            self.zk.exists(f"{PATH}{i}")
        self.zk.get(f"{PATH}b", background=True)
        self.zk.exists(f"{PATH}r")
        self.zk.exists(f"{PATH}e", awaited=True)
        self.zk.get(f"{PATH}a", awaited=True)
        self.zk.get(f"{PATH}c", changed=True)
        self.zk.set(f"{PATH}w", b"{}")
        self.assertEqual(
            self.handed_over_as_room_comes(client, 6),
            [
                ("set", f"{PATH}w"),
                ("get", f"{PATH}c"),
                ("exists", f"{PATH}e"),
                ("get", f"{PATH}a"),
                ("exists", f"{PATH}r"),
                ("get", f"{PATH}b"),
            ],
        )

    def handed_over_as_room_comes(
        self, client: FakeKazooClient, count: int
    ) -> list[tuple[str, str]]:
        """
        Once this turn's writes are sent, the first `count` calls in
        kazoo's hands answered one by one: the (kind, path) of each call
        handed over after the first `CALLS_IN_FLIGHT`, in order.
        """
        self.clock.advance(0)  # Writes are sent at the end of the turn.
        for answered in range(count):
            client.answer(answered, value=None)
            self.clock.run_handed_over()
        return [(c[0], c[1]) for c in client.calls[CALLS_IN_FLIGHT:]]

    def test_changed_reads_bounded_in_flight(self) -> None:
        """
        At most CHANGED_IN_FLIGHT reads of changed nodes are in kazoo's
        hands at once (a client rewriting nodes in a loop), and an ordinary
        read asked behind more of them still goes at once.
        """
        self.assert_bounded_in_flight(CHANGED_IN_FLIGHT, changed=True)

    def assert_bounded_in_flight(self, bound: int, **kind: bool) -> None:
        """
        Reads of one `kind` asked past `bound`: `bound` of them are in
        kazoo's hands, an ordinary read asked behind them goes at once,
        and the next of them goes once one is answered.
        """
        client = self.connected()
        for i in range(bound + 2):
            self.zk.get(f"{PATH}k{i}", **kind)
        self.assertEqual(len(client.calls), bound)
        self.zk.exists("/sentinel/agents")
        self.assertEqual(client.calls[-1][1], "/sentinel/agents")
        client.answer(0, value=(b"{}", None))
        self.clock.run_handed_over()
        self.assertEqual(client.calls[-1][1], f"{PATH}k{bound}")

    def test_awaited_reads_bounded_in_flight(self) -> None:
        """
        At most AWAITED_IN_FLIGHT awaited reads are in kazoo's hands at
        once (a view change asks thousands), and an ordinary read asked
        behind more of them (the membership's) still goes at once.
        """
        self.assert_bounded_in_flight(AWAITED_IN_FLIGHT, awaited=True)

    def test_awaited_reads_take_most_of_the_room(self) -> None:
        """
        A view change's awaited reads take up to three quarters of the
        calls in kazoo's hands (96 of 128), and the ordinary reads the
        rest: an answered ordinary read's room goes to the next ordinary
        read, an awaited one's to the next awaited read. Before, 32: the
        awaited reads waited 3.3--3.7 s for room, ZooKeeper answering each
        in 0.23--0.26 s, and the verdicts waited for them.
        """
        client = self.connected()
        for i in range(200):
            self.zk.get(f"{PATH}a{i}", awaited=True)
        self.assertEqual(len(client.calls), 96)
        for i in range(40):
            self.zk.exists(f"{PATH}r{i}")
        self.assertEqual(len(client.calls), CALLS_IN_FLIGHT)
        client.answer(96, value=None)
        self.clock.run_handed_over()
        self.assertEqual(client.calls[-1][1], f"{PATH}r32")
        client.answer(0, value=(b"{}", None))
        self.clock.run_handed_over()
        self.assertEqual(client.calls[-1][1], f"{PATH}a96")

    def test_oldest_call_waiting_by_kind(self) -> None:
        """
        `calls_waiting_oldest` (/debug/stats) says how long the oldest call
        of each kind waiting for room has waited; a kind with none waiting
        is left out.
        """
        self.connected()
        for i in range(CALLS_IN_FLIGHT + 1):
            self.zk.exists(f"{PATH}{i}")
        self.clock.advance(0.5)
        self.zk.get(f"{PATH}b0", background=True)
        self.clock.advance(0.25)
        self.assertEqual(
            self.zk.calls_waiting_oldest(), {"reads": 0.75, "background": 0.25}
        )

    def test_writes_slow_at(self) -> None:
        """
        `writes_slow_at` says when a write of this agent's was last found
        slow (`sentinel.behind`): never while writes are answered within
        `SLOW_WRITE`, however slow a read; now while one has been out that
        long, and the time of its answer once answered.
        """
        client = self.connected()
        self.zk.set(f"{PATH}w0", b"{}")
        self.clock.advance(0)
        self.clock.advance(SLOW_WRITE / 2)
        client.answer(0, value="stat")
        self.clock.run_handed_over()
        self.zk.get(PATH)
        self.clock.advance(SLOW_WRITE)
        client.answer(1, value=(b"{}", None))
        self.clock.run_handed_over()
        self.assertEqual(self.zk.writes_slow_at(), -math.inf)
        self.zk.set(f"{PATH}w1", b"{}")
        self.clock.advance(0)
        self.clock.advance(SLOW_WRITE)
        found = self.clock.seconds()
        self.assertEqual(self.zk.writes_slow_at(), found)
        self.clock.advance(0.25)
        client.answer(2, value="stat")
        self.clock.run_handed_over()
        self.clock.advance(10.0)
        self.assertEqual(self.zk.writes_slow_at(), found + 0.25)

    def test_write_timed_out_unsent_is_slow(self) -> None:
        """
        A write that timed out waiting here for room, never sent, was
        slow when it timed out, even asked of `writes_slow_at` only once
        the calls ahead of it are answered and it is gone.
        """
        client = self.connected()
        for i in range(CALLS_IN_FLIGHT):
            self.zk.exists(f"{PATH}r{i}")
        written = self.zk.set(f"{PATH}w0", b"{}")
        self.clock.advance(0)
        self.clock.advance(CALL_TIMEOUT * WAIT_LIMIT)
        self.failureResultOf(written, TimeoutError)
        timed_out = self.clock.seconds()
        for i in range(CALLS_IN_FLIGHT):
            client.answer(i, value=None)
        self.clock.run_handed_over()
        self.clock.advance(10.0)
        self.assertEqual(self.zk.writes_slow_at(), timed_out)

    def test_time_spent_by_kind(self) -> None:
        """
        `time_spent` (/debug/stats ``calls_time_spent``) sums, by kind, how
        long calls waited here for room, and how long ZooKeeper took to
        answer them once handed to kazoo: an awaited read past the bound
        waited for the first one's answer, 0.5 s.
        """
        client = self.connected()
        for i in range(AWAITED_IN_FLIGHT + 1):
            self.zk.get(f"{PATH}k{i}", awaited=True)
        self.clock.advance(0.5)
        client.answer(0, value=(b"{}", None))
        self.clock.run_handed_over()
        spent = self.zk.time_spent.stats()["awaited"]
        self.assertEqual(
            (spent["sent"], spent["waited_seconds"], spent["answered"]),
            (AWAITED_IN_FLIGHT + 1, 0.5, 1),
        )
        self.assertEqual(spent["zookeeper_seconds"], 0.5)

    def test_background_reads_wait_behind_reads(self) -> None:
        """
        Reads asked as background (a group's opinions, thousands at a
        member's crash) are handed over after every other waiting call, so
        that the membership read the crash also fires is not held up.
        """
        client = self.connected()
        for i in range(CALLS_IN_FLIGHT):
            self.zk.exists(f"{PATH}{i}")
        self.zk.get(f"{PATH}b0", background=True)
        self.zk.exists(f"{PATH}b1", watch=self.events.append, background=True)
        self.zk.exists("/sentinel/catalogs")
        self.zk.set(f"{PATH}w", b"{}")
        self.assertEqual(
            self.handed_over_as_room_comes(client, 4),
            [
                ("set", f"{PATH}w"),
                ("exists", "/sentinel/catalogs"),
                ("get", f"{PATH}b0"),
                ("exists", f"{PATH}b1"),
            ],
        )

    def test_reads_ahead_wait_with_the_writes(self) -> None:
        """
        A read asked as ahead (a takeover's) waits with the writes, in
        order with them, ahead of the reads that waited longer, and is
        answered as any read is.
        """
        client = self.connected()
        for i in range(CALLS_IN_FLIGHT):
            self.zk.exists(f"{PATH}{i}")
        self.zk.exists(f"{PATH}r")
        read = self.zk.get(f"{PATH}t", ahead=True)
        self.zk.set(f"{PATH}w", b"{}")
        self.clock.advance(0)  # Sent at the end of the turn.
        for answered in range(3):
            client.answer(answered, value=None)
            self.clock.run_handed_over()
        self.assertEqual(
            [(c[0], c[1]) for c in client.calls[CALLS_IN_FLIGHT:]],
            [("get", f"{PATH}t"), ("set", f"{PATH}w"), ("exists", f"{PATH}r")],
        )
        client.answer(CALLS_IN_FLIGHT, value=(b"{}", None))
        self.clock.run_handed_over()
        self.assertEqual(self.successResultOf(read), (b"{}", None))

    def test_membership_reads_ahead_wait_with_the_writes(self) -> None:
        """
        A membership listing (children and stat) and the ``exists`` it
        waits for, asked ahead, go with the writes, ahead of the reads a
        new session's view change asks first (opinions a verdict waits
        for, changed nodes, ordinary and background reads): behind them a
        listing took 7--16 s after a wipe at 1,000 instances.
        """
        client = self.connected()
        for i in range(CALLS_IN_FLIGHT):
            self.zk.exists(f"{PATH}{i}")
        self.zk.get(f"{PATH}b", background=True)
        self.zk.exists(f"{PATH}r")
        self.zk.get(f"{PATH}a", awaited=True)
        self.zk.get(f"{PATH}c", changed=True)
        self.zk.children_and_stat("/sentinel/catalogs", lambda _: None, ahead=True)
        self.zk.exists("/sentinel/agents/x", ahead=True)
        self.assertEqual(
            self.handed_over_as_room_comes(client, 2),
            [
                ("get_children", "/sentinel/catalogs"),
                ("exists", "/sentinel/agents/x"),
            ],
        )

    def test_urgent_delete_goes_past_every_call_waiting(self) -> None:
        """
        A delete asked as urgent (a stop's leave of its group) is handed to
        kazoo at once, past the writes and reads waiting for room and past
        the bound; the calls waiting still follow in order, and the bound
        holds for them. (Behind a start-up's thousands of calls, the leave
        was answered after the 0.5 s a stop waits for it.)
        """
        client = self.connected()
        for i in range(CALLS_IN_FLIGHT):
            self.zk.exists(f"{PATH}{i}")
        self.zk.exists(f"{PATH}r")
        self.zk.set(f"{PATH}w", b"{}")
        self.clock.advance(0)  # Sent at the end of the turn.
        leave = self.zk.delete("/sentinel/agents/a", 3, urgent=True)
        self.assertEqual(len(client.calls), CALLS_IN_FLIGHT + 1)
        self.assertEqual(client.calls[-1][:2], ("delete", "/sentinel/agents/a"))
        client.answer(CALLS_IN_FLIGHT)
        self.clock.run_handed_over()
        self.assertIsNone(self.successResultOf(leave))
        for answered in range(2):
            client.answer(answered, value=None)
            self.clock.run_handed_over()
        self.assertEqual(
            [(c[0], c[1]) for c in client.calls[CALLS_IN_FLIGHT + 1 :]],
            [("set", f"{PATH}w"), ("exists", f"{PATH}r")],
        )

    def test_background_reads_bounded_in_flight(self) -> None:
        """
        At most BACKGROUND_IN_FLIGHT background reads are in kazoo's hands
        at once, so that a read or write asked after thousands of them is
        handed over at once, behind that many at most; the rest follow as
        answers come back.
        """
        client = self.connected()
        for i in range(BACKGROUND_IN_FLIGHT + 5):
            self.zk.exists(f"{PATH}b{i}", background=True)
        self.assertEqual(len(client.calls), BACKGROUND_IN_FLIGHT)
        self.zk.exists("/sentinel/catalogs")
        self.assertEqual(client.calls[-1][1], "/sentinel/catalogs")
        client.answer(0, value=None)
        self.clock.run_handed_over()
        self.assertEqual(client.calls[-1][1], f"{PATH}b{BACKGROUND_IN_FLIGHT}")
        self.assertEqual(len(client.calls), BACKGROUND_IN_FLIGHT + 2)

    def connected(self) -> FakeKazooClient:
        self.zk.start()
        client = self.client()
        self.connect(client)
        return client

    def test_writes_never_go_to_a_session_not_heard_of(self) -> None:
        """
        kazoo connects a new session on its own thread before the reactor
        hears of it: a set made then, and one made before and waiting for
        the end of the turn, fail with ConnectionLoss and are not sent (at
        the old session's version, a set could overwrite another agent's
        new node); once the new session is heard, writes go to it.
        """
        client = self.connected()
        waiting = self.zk.set(PATH, b"data", 3)
        delete = self.zk.delete(PATH, 3)
        # The new session, not handed over to the reactor yet.
        client.client_id = (0x43, b"password")
        made_now = self.zk.set(PATH, b"data", 3)
        self.failureResultOf(made_now, ConnectionLoss)
        self.clock.advance(0)
        self.failureResultOf(waiting, ConnectionLoss)
        self.assertEqual([c[0] for c in client.calls], ["delete"])
        self.assertNoResult(delete)  # Made, and sent, in the old session.
        client.change_state(KazooState.LOST)
        client.change_state(KazooState.CONNECTED, session=0x43)
        self.clock.run_handed_over()
        fresh = self.zk.set(PATH, b"data", 0)
        self.clock.advance(0)
        self.assertEqual([c[0] for c in client.calls], ["delete", "set"])
        client.answer(1, value="stat")
        self.clock.run_handed_over()
        self.assertEqual(self.successResultOf(fresh), "stat")

    def test_waiting_write_not_sent_in_a_new_session(self) -> None:
        """
        A write waiting for room when the session changes fails, rather
        than go to the new session.
        """
        client = self.connected()
        held = [self.zk.delete(f"{PATH}{i}") for i in range(CALLS_IN_FLIGHT)]
        late = self.zk.delete(PATH)
        self.assertEqual(len(client.calls), CALLS_IN_FLIGHT)
        client.change_state(KazooState.SUSPENDED)
        client.change_state(KazooState.CONNECTED, session=0x43)
        self.clock.run_handed_over()
        client.answer(0)
        self.clock.run_handed_over()
        self.failureResultOf(late, ConnectionLoss)
        self.assertEqual(len(client.calls), CALLS_IN_FLIGHT)
        self.assertTrue(held)

    def test_sets_of_a_turn_go_together(self) -> None:
        """
        Sets made in one turn of the reactor go to kazoo at its end, in one
        transaction; each fires with its own stat. A set alone goes alone.
        """
        client = self.connected()
        sets = [self.zk.set(f"{PATH}{i}", b"data", i) for i in range(3)]
        self.assertEqual(client.calls, [])
        self.clock.advance(0)
        self.assertEqual(
            [c[:2] for c in client.calls], [("commit", f"{PATH}0 {PATH}1 {PATH}2")]
        )
        client.answer(0, value=["stat0", "stat1", "stat2"])
        self.clock.run_handed_over()
        self.assertEqual(
            [self.successResultOf(d) for d in sets], ["stat0", "stat1", "stat2"]
        )
        alone = self.zk.set(PATH, b"data")
        self.clock.advance(0)
        self.assertEqual(client.calls[1][:2], ("set", PATH))
        client.answer(1, value="stat")
        self.clock.run_handed_over()
        self.assertEqual(self.successResultOf(alone), "stat")

    def test_write_given_up_while_waiting_for_room_not_sent(self) -> None:
        """
        Sets rolled back with a refused one are sent again in a call of
        their own, which waits for room while kazoo holds `CALLS_IN_FLIGHT`
        calls: once every set of it has timed out (their timeouts run from
        the sets, not from that call), it is never sent, and the room goes
        to the next call waiting.
        """
        client = self.connected()
        refused, rolled_back = (self.zk.set(f"{PATH}{i}", b"data", 1) for i in range(2))
        self.clock.advance(0)
        reads = [self.zk.exists(f"{PATH}r{i}") for i in range(CALLS_IN_FLIGHT - 1)]
        self.clock.advance(CALL_TIMEOUT - 1.0)
        client.answer(0, value=[BadVersionError(), RolledBackError()])
        self.clock.run_handed_over()
        self.failureResultOf(refused, BadVersionError)
        reads.append(self.zk.exists(f"{PATH}r"))
        self.clock.advance(0)
        waiting = self.zk.exists(f"{PATH}w")
        self.assertEqual(len(client.calls), CALLS_IN_FLIGHT + 1)
        self.clock.advance(1.0)
        self.failureResultOf(rolled_back, TimeoutError)
        client.answer(len(client.calls) - 1, value=None)
        self.clock.run_handed_over()
        self.assertEqual(client.calls[-1][:2], ("exists", f"{PATH}w"))
        self.assertNotIn("set", [call[0] for call in client.calls])
        self.assertNoResult(waiting)
        self.assertEqual(self.zk.calls_unsent_given_up, 1)
        for read in reads[:-1]:
            self.failureResultOf(read, TimeoutError)
        self.assertIsNone(self.successResultOf(reads[-1]))

    def test_refused_set_fails_alone(self) -> None:
        """
        A set refused in a transaction fails with its own refusal; the sets
        only rolled back with it are sent again, at the end of the turn, and
        fire with their stats.
        """
        client = self.connected()
        first, refused, last = (self.zk.set(f"{PATH}{i}", b"data", 1) for i in range(3))
        self.clock.advance(0)
        client.answer(
            0, value=[RolledBackError(), BadVersionError(), RuntimeInconsistency()]
        )
        self.clock.run_handed_over()
        self.failureResultOf(refused, BadVersionError)
        self.assertNoResult(first)
        self.assertNoResult(last)
        self.clock.advance(0)
        self.assertEqual(client.calls[1][:2], ("commit", f"{PATH}0 {PATH}2"))
        client.answer(1, value=["stat0", "stat2"])
        self.clock.run_handed_over()
        self.assertEqual(
            (self.successResultOf(first), self.successResultOf(last)),
            ("stat0", "stat2"),
        )

    def test_refused_one_by_one(self) -> None:
        """
        Creates refused one after another (nodes another session holds):
        those never looked at go again together once, then alone, so that
        each costs at most three sends rather than a transaction per refusal.
        """
        client = self.connected()
        creates = [self.zk.create(f"{PATH}{i}", b"data") for i in range(4)]
        self.clock.advance(0)
        self.assertEqual(
            client.calls[0][:2], ("commit", f"+{PATH}0 +{PATH}1 +{PATH}2 +{PATH}3")
        )
        client.answer(0, value=[NodeExistsError()] + [RuntimeInconsistency()] * 3)
        self.clock.run_handed_over()
        self.failureResultOf(creates[0], NodeExistsError)
        self.clock.advance(0)
        self.assertEqual(client.calls[1][:2], ("commit", f"+{PATH}1 +{PATH}2 +{PATH}3"))
        client.answer(1, value=[NodeExistsError()] + [RuntimeInconsistency()] * 2)
        self.clock.run_handed_over()
        self.failureResultOf(creates[1], NodeExistsError)
        self.clock.advance(0)
        self.assertEqual(
            [c[:2] for c in client.calls[2:]],
            [("create", f"{PATH}2"), ("create", f"{PATH}3")],
        )
        client.answer(2, exception=NodeExistsError())
        client.answer(3, value=f"{PATH}3")
        self.clock.run_handed_over()
        self.failureResultOf(creates[2], NodeExistsError)
        self.assertEqual(self.successResultOf(creates[3]), f"{PATH}3")

    def test_creates_go_with_sets(self) -> None:
        """
        Creates of ephemeral nodes go in the same transaction as the sets;
        a create refused there for want of its parent is sent alone (kazoo
        then makes the parents), and the writes rolled back with it again.
        A sequential create goes alone at once.
        """
        client = self.connected()
        created = self.zk.create(PATH, b"data")
        orphan = self.zk.create("/new/parent/node", b"data")
        updated = self.zk.set(f"{PATH}2", b"data", 3)
        self.clock.advance(0)
        self.assertEqual(
            [c[:2] for c in client.calls],
            [("commit", f"+{PATH} +/new/parent/node {PATH}2")],
        )
        client.answer(
            0, value=[RolledBackError(), NoNodeError(), RuntimeInconsistency()]
        )
        self.clock.run_handed_over()
        self.assertEqual(client.calls[1][:2], ("create", "/new/parent/node"))
        self.clock.advance(0)
        self.assertEqual(client.calls[2][:2], ("commit", f"+{PATH} {PATH}2"))
        client.answer(1, value="/new/parent/node")
        client.answer(2, value=[PATH, "stat"])
        self.clock.run_handed_over()
        self.assertEqual(
            [self.successResultOf(d) for d in (created, orphan, updated)],
            [PATH, "/new/parent/node", "stat"],
        )
        self.zk.create(f"{PATH}-member-", b"data", sequence=True)
        self.assertEqual(client.calls[3][:2], ("create", f"{PATH}-member-"))

    def test_sets_batched_within_bounds(self) -> None:
        """
        A transaction holds at most WRITE_BATCH sets and WRITE_BATCH_BYTES of
        data: more go in the next one, each within the same turn.
        """
        client = self.connected()
        for i in range(WRITE_BATCH + 1):
            self.zk.set(f"{PATH}{i}", b"data")
        big = b"x" * (WRITE_BATCH_BYTES // 2 + 1)
        for i in range(2):
            self.zk.set(f"{PATH}big{i}", big)
        self.clock.advance(0)
        self.assertEqual(
            [(c[0], len(c[1].split())) for c in client.calls],
            [("commit", WRITE_BATCH), ("commit", 2), ("set", 1)],
        )

    def test_refusal_freed_without_a_collection(self) -> None:
        """
        ZooKeeper's refusal reaches the caller without its traceback, so
        kazoo's cycle (``create_async`` raises it in the frame that holds
        its result, then stores it there) is freed by reference counting,
        not at the next full collection; another exception keeps its
        traceback.
        """
        gc.disable()
        self.addCleanup(gc.enable)
        client = self.connected()

        class Completion:
            """What kazoo's frame holds: the result the error is stored in."""

            error: BaseException | None = None

        def refused(error: BaseException) -> tuple[BaseException, weakref.ref[Any]]:
            completion = Completion()
            try:
                raise error
            except BaseException as raised:
                completion.error = raised
                return raised, weakref.ref(completion)

        refusal, completion = refused(NoNodeError())
        bug, bug_completion = refused(TypeError("kazoo's own bug"))
        answers = [self.zk.get(PATH), self.zk.get(PATH)]
        self.clock.advance(0)
        client.answer(0, exception=refusal)
        client.answer(1, exception=bug)
        self.clock.run_handed_over()
        self.failureResultOf(answers[0], NoNodeError)
        self.failureResultOf(answers[1], TypeError)
        self.assertIsNone(refusal.__traceback__)
        self.assertIsNone(completion())
        self.assertIsNotNone(bug.__traceback__)
        self.assertIsNotNone(bug_completion())
        bug.__traceback__ = None

    def test_sets_fail_together(self) -> None:
        """
        A transaction that fails as a whole (the connection lost) fails
        every set in it with that error; one that never comes back times
        them out with the bridge's call timeout.
        """
        client = self.connected()
        lost = [self.zk.set(f"{PATH}{i}", b"data") for i in range(2)]
        self.clock.advance(0)
        client.answer(0, exception=ConnectionLoss())
        self.clock.run_handed_over()
        for d in lost:
            self.failureResultOf(d, ConnectionLoss)
        hanging = [self.zk.set(f"{PATH}{i}", b"data") for i in range(2)]
        self.clock.advance(0)
        self.clock.advance(CALL_TIMEOUT)
        for d in hanging:
            self.failureResultOf(d, TimeoutError)
        client.answer(1, value=["late", "late"])
        self.clock.run_handed_over()

    def test_set_while_not_connected_or_stopped(self) -> None:
        """
        A set made while kazoo is not connected fails at once; those still
        waiting for the end of the turn when the bridge stops fail then, and
        nothing is sent.
        """
        self.zk.start()
        client = self.client()
        self.failureResultOf(self.zk.set(PATH, b"data"), ConnectionLoss)
        self.connect(client)
        waiting = self.zk.set(PATH, b"data")
        self.zk.stop(1.0)
        self.failureResultOf(waiting, ConnectionClosedError)
        self.clock.advance(0)
        self.assertEqual(client.calls, [])

    def test_watching_again_registers_once(self) -> None:
        """
        Watching a path again with the same watcher hands kazoo an equal
        callback, so kazoo's set of watches for the path holds one.
        """
        self.zk.start()
        self.connect(self.client())
        for _ in range(3):
            self.zk.exists(PATH, watch=self.events.append)
        callbacks = {w for _, w in self.client().watches}
        self.assertEqual(len(callbacks), 1)

    def test_watch_event_none_handed_over(self) -> None:
        """kazoo's NONE events (watches dropped with the connection) are passed on."""
        self.zk.start()
        self.connect(self.client())
        self.zk.exists(PATH, watch=self.events.append)
        self.client().fire(PATH, EventType.NONE)
        self.clock.run_handed_over()
        self.assertEqual([e.type for e in self.events], [EventType.NONE])

    def test_listener_bug_counted_others_told(self) -> None:
        """
        A state listener that raises is an internal error (/healthz fails,
        naming it) and the listeners after it are told all the same; a
        watcher that raises is counted too.
        """

        def broken(state: str) -> None:
            raise OverflowError("date value out of range")

        told: list[str] = []
        self.zk.add_listener(broken)
        self.zk.add_listener(told.append)
        self.zk.start()
        self.connect(self.client())
        self.assertEqual(told, [CONNECTING, CONNECTED])
        errors = self.zk.internal_errors
        self.assertEqual(errors.count, 2)
        self.assertIn(
            f"a ZooKeeper state listener, told {CONNECTED}: date value out of range",
            errors.unhealthy_reason() or "",
        )

        def broken_watcher(event: WatchedEvent) -> None:
            raise KeyError("watcher")

        self.zk.exists(PATH, watch=broken_watcher)
        self.client().fire(PATH, EventType.DELETED)
        self.clock.run_handed_over()
        self.assertEqual(errors.count, 3)
        self.assertIn(f"a ZooKeeper watcher of {PATH}", errors.last or "")
        self.assertEqual(len(self.flushLoggedErrors(OverflowError, KeyError)), 1)

    def test_stop_closes_on_own_thread(self) -> None:
        """
        `stop` closes the session on a thread of its own and fires once it
        is closed; the stopped client's news is dropped.
        """
        self.zk.start()
        client = self.client()
        self.connect(client)
        stopped = self.zk.stop(2.0)
        self.assertEqual(self.zk.state, STOPPED)
        self.assertEqual(self.clock.run_handed_over(wait=THREAD_WAIT), 1)
        self.assertIsNone(self.successResultOf(stopped))
        self.assert_closed_on_own_thread(client)
        client.change_state(KazooState.CONNECTED)
        self.clock.run_handed_over()
        self.assertEqual(self.zk.state, STOPPED)

    def bridge_infos(self) -> list[str]:
        """The bridge's info lines logged from now on, formatted."""
        infos: list[str] = []
        observe = partial(_formatted_at, LogLevel.info, infos)
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        return infos

    def test_stop_says_the_session_closed_once_it_is(self) -> None:
        """
        `stop` says it is closing the session, by its id, and that it is
        closed once ZooKeeper answered, not "ZooKeeper stopped" as the
        close begins (which a leave that then left the session open also
        said).
        """
        infos = self.bridge_infos()
        self.zk.start()
        client = self.client()
        self.connect(client)
        [session] = [self.zk.session_id]
        assert session is not None
        stopped = self.zk.stop(2.0)
        self.assertEqual(infos[-1], f"ZooKeeper session {session:#x} closing")
        self.assertEqual(self.clock.run_handed_over(wait=THREAD_WAIT), 1)
        self.successResultOf(stopped)
        self.assertEqual(
            infos[-1], f"ZooKeeper session {session:#x} closed after 0.0 s"
        )
        self.assertNotIn("ZooKeeper stopped", infos)

    def test_stop_before_any_session_says_so(self) -> None:
        """
        `stop` of a client that never connected says it closes a client
        with no session yet, not a session named "none" (which read, to an
        operator whose ZooKeeper was unreachable, like a session id).
        """
        infos = self.bridge_infos()
        self.zk.start()
        self.client()
        self.assertIsNone(self.zk.session_id)
        stopped = self.zk.stop(2.0)
        self.assertEqual(infos[-1], "ZooKeeper client (no session yet) closing")
        self.assertEqual(self.clock.run_handed_over(wait=THREAD_WAIT), 1)
        self.successResultOf(stopped)
        self.assertEqual(
            infos[-1], "ZooKeeper client (no session yet) closed after 0.0 s"
        )
        self.assertFalse([line for line in infos if "none" in line])

    def test_leave_open_says_the_session_was_left_open(self) -> None:
        """
        `leave_open` says the session was left open, by its id: nothing
        says it stopped or closed.
        """
        infos = self.bridge_infos()
        self.zk.start()
        client = self.client()
        self.connect(client)
        session = self.zk.session_id
        assert session is not None
        self.zk.leave_open()
        self.assertEqual(self.zk.state, STOPPED)
        self.assertEqual(
            infos[-1], f"ZooKeeper session {session:#x} left open, not closed"
        )
        self.assertFalse([line for line in infos if line.endswith("closing")])
        self.assertNotIn("ZooKeeper stopped", infos)

    def test_stop_bounded_when_close_hangs(self) -> None:
        """A close that hangs is given up after the stop's timeout."""
        self.zk.start()
        client = self.client()
        client.close_blocks = threading.Event()
        self.addCleanup(client.close_blocks.set)
        self.connect(client)
        stopped = self.zk.stop(2.0)
        self.clock.advance(1.99)
        self.assertNoResult(stopped)
        self.clock.advance(0.01)
        self.assertIsNone(self.successResultOf(stopped))
        client.close_blocks.set()
        self.assertTrue(client.closed.wait(THREAD_WAIT))
        self.clock.run_handed_over(wait=THREAD_WAIT)

    def hung_close(self, connected: bool = True) -> FakeKazooClient:
        """
        A client, connected unless told otherwise, whose close hangs, once
        `stop` has asked it.
        """
        self.zk.start()
        client = self.client()
        client.close_blocks = threading.Event()
        self.addCleanup(self.clock.run_handed_over)
        self.addCleanup(client.closed.wait, THREAD_WAIT)
        self.addCleanup(client.close_blocks.set)
        if connected:
            self.connect(client)
        return client

    def test_close_sent_but_unanswered_is_not_left_to_expire(self) -> None:
        """
        A close that went out but was not answered within the stop's bound
        (ZooKeeper answers once it has deleted every node of the session)
        is said as sent, at info, not as a session left to expire.
        """
        warnings = bridge_warnings(self)
        infos: list[str] = []
        observe = partial(_formatted_at, LogLevel.info, infos)
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        client = self.hung_close()
        stopped = self.zk.stop(1.0)
        self.assertTrue(client._stopped.wait(THREAD_WAIT))
        client.send_queued()
        self.clock.advance(1.0)
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(warnings, [])
        self.assertIn(
            "ZooKeeper session close sent, not answered within 1.0 s: its nodes "
            "go as ZooKeeper applies it (thousands take it a while), or with the "
            "session's expiry (4.0 s) if the close never reaches it",
            infos,
        )

    def test_close_not_sent_is_left_to_expire(self) -> None:
        """A close still waiting to be sent at the bound is a warning."""
        warnings = bridge_warnings(self)
        client = self.hung_close()
        stopped = self.zk.stop(1.0)
        self.assertTrue(client._stopped.wait(THREAD_WAIT))
        self.clock.advance(1.0)
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(
            warnings,
            [
                "ZooKeeper session not closed in time (the close not sent); left "
                "to expire: its nodes stay for the session timeout (4.0 s)"
            ],
        )

    def test_no_session_yet_is_not_left_to_expire(self) -> None:
        """
        A client stopped before it ever had a session (a ZooKeeper that
        accepts and never answers), whose stop does not end within the
        bound, is said to leave nothing behind, at info: there is no
        session to expire and no node of ours.
        """
        warnings = bridge_warnings(self)
        infos: list[str] = []
        observe = partial(_formatted_at, LogLevel.info, infos)
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        client = self.hung_close(connected=False)
        stopped = self.zk.stop(1.0)
        self.assertTrue(client._stopped.wait(THREAD_WAIT))
        self.clock.advance(1.0)
        self.assertIsNone(self.successResultOf(stopped))
        self.assertEqual(warnings, [])
        self.assertEqual(
            infos[-2:],
            [
                "ZooKeeper client (no session yet) closing",
                "ZooKeeper client (no session yet) not stopped within 1.0 s: it "
                "never had a session, so it wrote no node and leaves none behind",
            ],
        )


def _formatted_at(level: LogLevel, lines: list[str], event: LogEvent) -> None:
    if event.get("log_namespace") == "sentinel.zk" and event["log_level"] == level:
        lines.append(formatEvent(event))


def connected_bridge(
    clock: HandOverClock,
    factory: FakeKazooFactory,
    session_timeout: float = SESSION_TIMEOUT,
    **options: Any,
) -> tuple[ZooKeeper, FakeKazooClient]:
    """A bridge started and connected on session 0x42, and its client."""
    zk = ZooKeeper(
        clock,
        "127.0.0.1:2181",
        session_timeout,
        client_factory=factory,
        spread=no_spread,
        **options,
    )
    zk.start()
    client = factory.clients[-1]
    client.change_state(KazooState.CONNECTED, session=0x42)
    clock.run_handed_over()
    return zk, client


class KazooThreadTests(SynchronousTestCase):
    """
    kazoo's threads: a connection loop that ended on its own, a thread that
    ended, a worker that blocked; each replaces the client at once on the
    same session, counted as an internal error.
    """

    def setUp(self) -> None:
        self.clock = HandOverClock()
        self.factory = FakeKazooFactory()
        self.zk, self.old = connected_bridge(self.clock, self.factory)

    def start_workers(self) -> _ConnectHandler:
        """kazoo's worker threads of the client, really running."""
        handler: _ConnectHandler = self.old.settings["handler"]
        handler.start()
        self.addCleanup(handler.stop)
        return handler

    def look(self, probes: int = 2) -> None:
        """The next look at the threads, and `probes` probes run back."""
        self.clock.advance(SESSION_TIMEOUT * THREADS_EVERY)
        # One wait may run every probe back: a wait per probe then waited
        # out THREAD_WAIT for none, 5 s a look.
        ran = 0
        while ran < probes and (more := self.clock.run_handed_over(wait=THREAD_WAIT)):
            ran += more
        self.assertEqual(ran, probes)

    def assert_replaced_on_same_session(self, why: str) -> None:
        self.assertEqual(len(self.factory.clients), 2)
        new = self.factory.clients[-1]
        self.assertEqual(new.settings["client_id"], (0x42, b"password"))
        self.assertTrue(self.old.closed.wait(THREAD_WAIT))
        self.assertEqual(self.zk.replacements, 1)
        self.assertEqual(self.zk.state, LOST)
        self.assertIn(why, self.zk.internal_errors.unhealthy_reason() or "")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        new.change_state(KazooState.CONNECTED, session=0x42)
        self.clock.run_handed_over()
        self.assertEqual(self.zk.session_id, 0x42)

    def test_connection_loop_ended_replaced_at_once(self) -> None:
        """
        A LOST that kazoo says because its connection loop ended (its
        thread died of an exception) replaces the client at once, asking
        for the same session, which the server still holds.
        """
        self.old.change_state(KazooState.LOST, client_state=KeeperState.CLOSED)
        self.clock.run_handed_over()
        self.assert_replaced_on_same_session("kazoo's connection loop ended")

    def test_ended_thread_replaces_client(self) -> None:
        """A thread kazoo spawned that has ended is seen at the next look."""
        handler = self.start_workers()
        handler.spawn(lambda: None).join(THREAD_WAIT)
        self.clock.advance(SESSION_TIMEOUT * THREADS_EVERY - 0.01)
        self.assertEqual(len(self.factory.clients), 1)
        self.clock.advance(0.01)
        self.assert_replaced_on_same_session("1 of kazoo's threads ended")

    def test_blocked_worker_replaces_client(self) -> None:
        """
        A worker that does not run the probe put on its queue by the next
        look (blocked in a call that never returns) replaces the client.
        """
        handler = self.start_workers()
        blocked = threading.Event()
        self.addCleanup(blocked.set)
        handler.completion_queue.put(partial(blocked.wait, THREAD_WAIT * 2))
        self.look(probes=1)
        self.assertEqual(len(self.factory.clients), 1)
        self.clock.advance(SESSION_TIMEOUT * THREADS_EVERY)
        self.assert_replaced_on_same_session("kazoo's completion worker ran nothing")

    def test_working_threads_keep_the_client(self) -> None:
        """Workers that run their probes keep the client, look after look."""
        self.start_workers()
        for _ in range(10):
            self.look()
        self.assertEqual(len(self.factory.clients), 1)
        self.assertEqual(self.zk.internal_errors.count, 0)

    def test_short_session_looks_a_second_apart(self) -> None:
        """
        Asked for a session timeout below ZooKeeper's minimum (0.2 s, and
        nothing granted yet), the bridge looks at the threads a second
        apart, not every 67 ms: workers whose probes come back 0.9 s late
        (a loaded machine) keep the client, and a blocked worker is still
        found at the second look. (Every 67 ms, a probe not back within
        that replaced the client and counted an internal error.)
        """
        clock = HandOverClock()
        factory = FakeKazooFactory()
        zk, old = connected_bridge(clock, factory, session_timeout=0.2)
        handler: _ConnectHandler = old.settings["handler"]
        handler.start()
        self.addCleanup(handler.stop)

        def probes_back(count: int) -> None:
            ran = 0
            while ran < count:
                ran += clock.run_handed_over(wait=THREAD_WAIT)
            self.assertEqual(ran, count)

        clock.advance(THREADS_EVERY_AT_LEAST)
        for _ in range(3):
            clock.advance(THREADS_EVERY_AT_LEAST - 0.1)
            self.assertEqual(len(factory.clients), 1)
            probes_back(2)
            clock.advance(0.1)
        self.assertEqual(len(factory.clients), 1)
        self.assertEqual(zk.internal_errors.count, 0)
        clock.advance(THREADS_EVERY_AT_LEAST - 0.1)
        probes_back(2)
        blocked = threading.Event()
        self.addCleanup(blocked.set)
        handler.completion_queue.put(partial(blocked.wait, THREAD_WAIT * 2))
        clock.advance(0.1)
        clock.advance(THREADS_EVERY_AT_LEAST - 0.1)
        probes_back(1)
        self.assertEqual(len(factory.clients), 1)
        clock.advance(0.1)
        self.assertEqual(len(factory.clients), 2)
        self.assertEqual(zk.replacements, 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_stopped_bridge_looks_no_more(self) -> None:
        """Once stopped, the bridge neither looks at threads nor probes."""
        handler = self.start_workers()
        stopped = self.zk.stop(2.0)
        self.clock.run_handed_over(wait=THREAD_WAIT)
        self.successResultOf(stopped)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertTrue(handler.completion_queue.empty())


class SessionHandOverTests(SynchronousTestCase):
    """A session reattached at start, and one left open for the next process."""

    def setUp(self) -> None:
        self.clock = HandOverClock()
        self.factory = FakeKazooFactory()
        self.zk = ZooKeeper(
            self.clock,
            "127.0.0.1:2181",
            SESSION_TIMEOUT,
            client_factory=self.factory,
            spread=no_spread,
        )
        self.states: list[str] = []
        self.zk.add_listener(self.states.append)

    def test_reattach_with_client_id(self) -> None:
        """`start(client_id)` hands the session's id and password to kazoo."""
        self.zk.start(client_id=(0x42, b"password"))
        [client] = self.factory.clients
        self.assertEqual(client.settings["client_id"], (0x42, b"password"))
        client.change_state(KazooState.CONNECTED, session=0x42)
        self.clock.run_handed_over()
        self.assertEqual(self.zk.client_id, (0x42, b"password"))

    def test_close_session(self) -> None:
        """
        `close_session` reattaches a client of its own to the session and
        closes it (stop and close, off the reactor thread); the bridge's
        own client is neither started nor told.
        """
        closed = self.zk.close_session((0x42, b"password"), SESSION_TIMEOUT)
        [client] = self.factory.clients
        self.assertEqual(client.settings["client_id"], (0x42, b"password"))
        self.assertNoResult(closed)
        client.change_state(KazooState.CONNECTED, session=0x42)
        self.clock.run_handed_over()
        self.assertTrue(client.closed.wait(THREAD_WAIT))
        ended: list[object] = []
        closed.addBoth(ended.append)
        while not ended:
            self.assertTrue(self.clock.run_handed_over(wait=THREAD_WAIT))
        self.assertEqual(ended, [None])
        self.assertIsNotNone(client.stopped_on)
        self.assertEqual((self.zk.state, self.states), (STOPPED, []))

    def test_close_session_bounded(self) -> None:
        """
        A session that cannot be reached within the timeout is left to
        expire: the client is closed all the same, and the call ends.
        """
        closed = self.zk.close_session((0x42, b"password"), SESSION_TIMEOUT)
        [client] = self.factory.clients
        self.clock.advance(SESSION_TIMEOUT)
        self.assertTrue(client.closed.wait(THREAD_WAIT))
        ended: list[object] = []
        closed.addBoth(ended.append)
        while not ended:
            self.assertTrue(self.clock.run_handed_over(wait=THREAD_WAIT))
        self.assertEqual(ended, [None])

    def test_replacement_is_a_new_session(self) -> None:
        """
        A client replaced after the session timeout starts without the
        handed-over session (it expired meanwhile), and the replaced one is
        kept from reconnecting.
        """
        self.zk.start(client_id=(0x42, b"password"))
        first = self.factory.clients[0]
        first.change_state(KazooState.LOST)
        self.clock.run_handed_over()
        self.clock.advance(SESSION_TIMEOUT)
        replacement = self.factory.clients[1]
        self.assertIsNone(replacement.settings["client_id"])
        self.assertTrue(first.settings["connection_retry"].interrupt())
        self.assertFalse(replacement.settings["connection_retry"].interrupt())
        self.assertTrue(first.closed.wait(THREAD_WAIT))

    def test_leave_open(self) -> None:
        """
        `leave_open` neither stops nor closes the client (its session, and
        the nodes, stay for the next process), ends its reconnections,
        stops hearing it, and never replaces it.
        """
        self.zk.start()
        client = self.factory.clients[0]
        client.change_state(KazooState.CONNECTED)
        self.clock.run_handed_over()
        retry = client.settings["connection_retry"]
        self.assertFalse(retry.interrupt())
        self.zk.leave_open()
        self.assertTrue(retry.interrupt())
        self.assertEqual(self.zk.state, STOPPED)
        self.assertIsNone(self.zk.client_id)
        client.change_state(KazooState.SUSPENDED)
        self.clock.run_handed_over()
        self.clock.advance(SESSION_TIMEOUT * 10)
        self.assertEqual(self.states, [CONNECTING, CONNECTED, STOPPED])
        self.assertEqual(len(self.factory.clients), 1)
        self.assertIsNone(client.stopped_on)
        self.assertFalse(client.closed.is_set())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_sequential_create(self) -> None:
        """`create(sequence=True)` asks kazoo for a sequential node."""
        calls: list[dict[str, object]] = []
        self.zk.start()
        client = self.factory.clients[0]
        client.change_state(KazooState.CONNECTED)
        self.clock.run_handed_over()

        def create_async(path: str, data: bytes, **options: object) -> object:
            calls.append(options)
            return client._call("create", path)

        client.create_async = create_async  # type: ignore[method-assign]
        self.zk.create("/d/s/member_", b"{}", sequence=True)
        self.assertEqual(
            calls,
            [{"acl": None, "ephemeral": True, "sequence": True, "makepath": True}],
        )


class ConnectTimeoutTests(SynchronousTestCase):
    """kazoo's TCP connects, as the bridge bounds them."""

    def black_hole(self) -> tuple[str, int]:
        """
        A loopback address that drops SYNs (a firewalled server's): a
        listener that never accepts, its backlog full.
        """
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address: tuple[str, int] = listener.getsockname()
        for _ in range(8):
            filler = socket.socket()
            self.addCleanup(filler.close)
            filler.setblocking(False)
            try:
                filler.connect(address)
            except BlockingIOError:
                pass
        return address

    def test_connect_bounded_by_share_of_session_timeout(self) -> None:
        """
        Each connect kazoo makes (with the arguments kazoo 2.11 passes) is
        given the session timeout divided by the number of hosts listed, not
        all of it: an address that drops SYNs costs that share, and the
        timeout names the address (kazoo logs its strerror).
        """
        host, port = self.black_hole()
        factory = FakeKazooFactory()
        hosts = f"{host}:{port},127.0.0.1:2,127.0.0.1:3,localhost:4/chroot"
        zk = ZooKeeper(
            HandOverClock(), hosts, CONNECT_SESSION_TIMEOUT, client_factory=factory
        )
        zk.start()
        handler = factory.clients[0].settings["handler"]
        started = time.monotonic()
        with self.assertRaises(builtins.TimeoutError) as raised:
            handler.create_connection(
                address=(host, port),
                hostname=host,
                timeout=CONNECT_SESSION_TIMEOUT,
                use_ssl=False,
            )
        self.assertLess(time.monotonic() - started, CONNECT_BOUND)
        self.assertEqual(
            raised.exception.strerror,
            f"connect to {host}:{port} timed out after 0.5 s",
        )

    def test_connect_under_way_known(self) -> None:
        """
        While kazoo's connect is under way, the handler says where it goes
        (`connecting`); once it has failed, none is.
        """
        factory = FakeKazooFactory()
        zk = ZooKeeper(HandOverClock(), "127.0.0.1:2", 4.0, client_factory=factory)
        zk.start()
        handler = factory.clients[0].settings["handler"]
        during: list[object] = []

        def connect(*args: object, **kwargs: object) -> socket.socket:
            during.append(handler.connecting)
            raise builtins.TimeoutError()

        self.patch(SequentialThreadingHandler, "create_connection", connect)
        with self.assertRaises(builtins.TimeoutError):
            handler.create_connection(
                address=("127.0.0.1", 2), hostname="127.0.0.1", timeout=4.0
            )
        self.assertEqual(during, [("127.0.0.1", 2)])
        self.assertIsNone(handler.connecting)

    def test_a_name_that_never_resolves_holds_no_round(self) -> None:
        """
        kazoo's round over the listed servers does not wait on a name
        whose DNS server never answers beyond `zknames.LOOKUP_WAIT`: the
        other servers are tried, where kazoo's own lookup held its
        connection thread (20 s here) before trying any.
        """
        released = threading.Event()
        self.addCleanup(released.set)

        def getaddrinfo(host: str, port: int, *args: Any) -> list[Any]:
            if host == "zk-hung.example.com":
                released.wait(CONNECT_BOUND * 4)
                raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure")
            return [(socket.AF_INET, 0, 0, "", (host, port))]

        self.patch(socket, "getaddrinfo", getaddrinfo)
        self.patch(zknames, "LOOKUP_WAIT", 0.05)
        clients: list[KazooClient] = []

        def factory(**settings: Any) -> KazooClient:
            client = KazooClient(**settings)
            client.start_async = lambda: None
            clients.append(client)
            return client

        zk = ZooKeeper(
            HandOverClock(),
            "zk-hung.example.com:2181,127.0.0.1:2182",
            4.0,
            client_factory=factory,
        )
        zk.start()
        started = time.monotonic()
        expanded = clients[0]._connection._expand_client_hosts()
        self.assertLess(time.monotonic() - started, CONNECT_BOUND)
        self.assertEqual(expanded, [("127.0.0.1", "127.0.0.1", 2182)])


# Asked, and granted longer: the bridge judges a silent server by the
# granted timeout (a third: 3 s, two thirds: 6 s).
SILENT_ASKED = 6.0
SILENT_GRANTED_MS = 9000


class SilentServerTests(SynchronousTestCase):
    """
    A connected server that answers nothing while calls wait (a frozen
    process, a host gone without a reset): kazoo takes each request sent for
    a ping, so only the bridge notices.
    """

    def setUp(self) -> None:
        self.clock = HandOverClock()
        self.factory = FakeKazooFactory()
        # The ZooKeeper server's socket, never answering.
        self.listener = socket.socket()
        self.addCleanup(self.listener.close)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.host, self.port = self.listener.getsockname()
        self.server = f"{self.host}:{self.port}"
        self.pending: list[Deferred[object]] = []

    def bridge(self, hosts: str) -> ZooKeeper:
        zk = ZooKeeper(self.clock, hosts, SILENT_ASKED, client_factory=self.factory)
        zk.start()
        return zk

    def connect(self) -> tuple[socket.socket, socket.socket]:
        """
        kazoo's connect to the server through the bridge's handler, its
        session granted, then CONNECTED; the client's socket and the
        server's end of it.
        """
        client = self.factory.clients[-1]
        connection = self.open()
        peer, _ = self.listener.accept()
        self.addCleanup(peer.close)
        client.session_created(SILENT_GRANTED_MS)
        client.change_state(KazooState.CONNECTED)
        self.clock.run_handed_over()
        return connection, peer

    def open(self) -> socket.socket:
        """A connect of kazoo's to the server (with kazoo 2.11's arguments)."""
        handler = self.factory.clients[-1].settings["handler"]
        connection: socket.socket = handler.create_connection(
            address=(self.host, self.port),
            hostname=self.host,
            timeout=SILENT_ASKED,
            use_ssl=False,
        )
        self.addCleanup(connection.close)
        return connection

    def write_each_second(self, zk: ZooKeeper, seconds: float) -> None:
        """A write every second for `seconds` (an agent with many instances)."""
        for _ in range(int(seconds)):
            self.pending.append(zk.set(PATH, b"{}").addErrback(lambda _: None))
            self.clock.advance(0)  # Sent at the end of the turn.
            self.clock.advance(1.0)

    def test_replaced_client_connection_shut_first(self) -> None:
        """
        A client replaced after the session timeout without a connection
        has its last connection shut first: kazoo's connection thread, held
        in a read by a server that sends a byte at a time (a handshake's
        reply never whole), wakes at once and ends, rather than outliving
        the close with its socket at every replacement.
        """
        self.bridge(self.server)
        connection, peer = self.connect()
        peer.settimeout(THREAD_WAIT)
        client = self.factory.clients[-1]
        client.change_state(KazooState.SUSPENDED)
        self.clock.run_handed_over()
        self.clock.advance(SILENT_GRANTED_MS / 1000 * (1 + REPLACE_SPREAD))
        self.assertEqual(len(self.factory.clients), 2)
        self.assertEqual(peer.recv(1), b"")
        self.assertEqual(connection.recv(1), b"")

    def test_named_then_dropped(self) -> None:
        """
        While the agent writes every second and the server answers nothing,
        from a third of the granted session timeout the bridge names the
        server; at two thirds it logs so and shuts its connection down,
        which the kazoo thread's select sees at once (readable, at its
        end). The cause kept while reconnecting is the silence, not kazoo's
        broken connection; kazoo's next connect passes that server over,
        once, and the session is the same once connected again.
        """
        zk = self.bridge(f"{self.server},127.0.0.1:1")
        connection, peer = self.connect()
        warnings = bridge_warnings(self)
        session = zk.session_id
        self.write_each_second(zk, 2)
        self.pending.append(zk.set(PATH, b"{}").addErrback(lambda _: None))
        self.clock.advance(0.99)
        self.assertIsNone(zk.not_answering())
        self.clock.advance(0.01)
        self.assertEqual(
            zk.not_answering(),
            f"ZooKeeper at {self.server} has answered nothing for 3.0 s, 3 "
            "request(s) waiting: its connection is dropped at 6.0 s (2/3 of "
            "the 9 s session timeout) for another listed server, on the same "
            "session",
        )
        self.write_each_second(zk, 2)
        self.clock.advance(0.99)
        self.assertEqual(select.select([connection], [], [], 0)[0], [])
        self.assertEqual((zk.drops, warnings), (0, []))

        self.clock.advance(0.01)
        self.assertEqual(zk.drops, 1)
        [warning] = warnings
        self.assertIn(f"ZooKeeper at {self.server} has answered nothing", warning)
        self.assertEqual(select.select([connection], [], [], 0)[0], [connection])
        self.assertEqual(connection.recv(1), b"")
        self.assertEqual(peer.recv(1), b"")

        client = self.factory.clients[0]
        client.warn("Connection dropped: %s", "socket connection broken")
        client.change_state(KazooState.SUSPENDED)
        for index in range(len(client.calls)):
            client.answer(index, exception=ConnectionLoss())
        self.clock.run_handed_over()
        self.assertEqual(zk.connect_error, f"{self.server} answered nothing for 6.0 s")
        self.assertIsNone(zk.not_answering())
        self.assertEqual(len(warnings), 1)

        with self.assertRaises(ConnectionAbortedError) as raised:
            self.open()
        self.assertEqual(
            raised.exception.strerror,
            f"{self.server} passed over once: it stopped answering",
        )
        self.connect()
        self.assertEqual(zk.session_id, session)
        self.assertIsNone(zk.not_answering())
        self.assertEqual((zk.replacements, len(self.factory.clients)), (0, 1))

    def write_at(self, zk: ZooKeeper, when: float) -> None:
        """One write, sent at `when` on the clock."""
        self.clock.advance(when - self.clock.seconds())
        self.pending.append(zk.set(PATH, b"{}").addErrback(lambda _: None))
        self.clock.advance(0)

    def test_dropped_by_what_was_last_heard(self) -> None:
        """
        A write sent just before kazoo's next ping (which the write then
        replaces) to a server silent since the connection is named once it
        has waited a third of the session timeout, and dropped then, as
        nothing has been heard for two thirds, not two thirds after the
        write. Pings answered until the write put the drop off until two
        thirds after the last of them.
        """
        zk = self.bridge(self.server)
        self.connect()
        self.write_at(zk, 3.25)
        self.clock.advance(2.99)
        self.assertEqual((zk.not_answering(), zk.drops), (None, 0))
        self.clock.advance(0.01)
        self.assertEqual(zk.drops, 1)

        self.factory.clients[0].change_state(KazooState.SUSPENDED)
        self.clock.run_handed_over()
        self.connect()
        client = self.factory.clients[0]
        connected = self.clock.seconds()
        for ping in (1, 2, 3):
            self.clock.advance(connected + ping - self.clock.seconds())
            client.ping_answered()
            self.clock.run_handed_over()
        self.write_at(zk, connected + 3.25)
        self.clock.advance(3)
        self.assertIn("has answered nothing for 3.2 s", zk.not_answering() or "")
        self.clock.advance(2.74)
        self.assertEqual(zk.drops, 1)
        self.clock.advance(0.01)
        self.assertEqual(zk.drops, 2)

    def test_answering_server_kept(self) -> None:
        """
        A server that answers is never judged, however long one call has
        waited, nor is a connection with nothing to answer (kazoo pings
        that one itself).
        """
        zk = self.bridge(f"{self.server},127.0.0.1:1")
        connection, _ = self.connect()
        client = self.factory.clients[0]
        self.pending.append(zk.get(PATH).addErrback(lambda _: None))
        for index in range(1, 30):
            self.write_each_second(zk, 1)
            client.answer(index)
            self.clock.run_handed_over()
            self.assertIsNone(zk.not_answering())
        client.answer(0)
        self.clock.run_handed_over()
        self.clock.advance(60)
        self.assertIsNone(zk.not_answering())
        self.assertEqual(zk.drops, 0)
        self.assertEqual(select.select([connection], [], [], 0)[0], [])

    def test_stalled_agent_judges_again_before_dropping(self) -> None:
        """
        A judgement that runs more than `SILENCE_JUDGED_LATE` late (the
        agent itself stalled: SIGSTOP, a CPU quota) is made again that long
        after, not acted on: the answers that came while the agent slept
        are handed over by kazoo's thread meanwhile, and a server that
        answered is kept; one still silent then is dropped.
        """
        zk = self.bridge(self.server)
        self.connect()
        client = self.factory.clients[0]
        self.write_at(zk, 1.0)
        # The whole agent stalls from 1 s to 10 s (past two thirds, 6 s).
        self.clock.advance(9.0)
        self.assertEqual(zk.drops, 0)
        client.answer(0)
        self.clock.run_handed_over()
        self.clock.advance(SILENCE_JUDGED_LATE)
        self.assertEqual(zk.drops, 0)

        self.write_at(zk, 20.0)
        self.clock.advance(9.0)
        self.assertEqual(zk.drops, 0)
        self.clock.advance(SILENCE_JUDGED_LATE)
        self.assertEqual(zk.drops, 1)

    def test_agent_late_at_every_judgement_still_drops(self) -> None:
        """
        A judgement put off because it ran late is not put off again at
        its next run, however late that runs (an agent starved at every
        timer): a server that answers nothing is still dropped, as a
        call's timeout still fails.
        """
        zk = self.bridge(self.server)
        self.connect()
        self.write_at(zk, 1.0)
        # Every timer runs 2 s late: the first judgement at 10 s, the one
        # it puts off 2 s past its time.
        self.clock.advance(9.0)
        self.assertEqual(zk.drops, 0)
        self.clock.advance(SILENCE_JUDGED_LATE + 2.0)
        self.assertEqual(zk.drops, 1)

    def test_step_back_counted_from_now(self) -> None:
        """
        After the wall clock steps back (the bridge's times are wall-clock
        times, and `sentinel.clocksteps` moves only scheduled calls), a
        silence is counted from the first judgement after the step, not
        from times an hour ahead: a silent server is still named within
        two thirds of the session timeout, and dropped within a whole one.
        """
        zk = self.bridge(self.server)
        self.connect()
        self.clock.advance(3600)
        self.factory.clients[0].ping_answered()
        self.clock.run_handed_over()
        self.write_at(zk, self.clock.seconds())
        # The step back, and the scheduled calls moved by it, as
        # `sentinel.clocksteps` does.
        self.clock.rightNow -= 3600
        for call in self.clock.getDelayedCalls():
            call.time -= 3600
        self.clock.advance(3.0)
        self.assertIsNone(zk.not_answering())
        self.clock.advance(3.0)
        self.assertIn("has answered nothing for 3.0 s", zk.not_answering() or "")
        self.clock.advance(2.99)
        self.assertEqual(zk.drops, 0)
        self.clock.advance(0.01)
        self.assertEqual(zk.drops, 1)

    def test_only_server_dropped_and_tried_again(self) -> None:
        """
        The only server listed, silent, is named and dropped too (kazoo
        goes SUSPENDED, and the client is replaced after the session
        timeout as for any outage), and its next connect is not passed
        over: there is nowhere else to go.
        """
        zk = self.bridge(self.server)
        connection, _ = self.connect()
        self.write_each_second(zk, 3)
        self.assertIn(
            "(2/3 of the 9 s session timeout) and made again (no other server "
            "listed), on the same session",
            zk.not_answering() or "",
        )
        self.write_each_second(zk, 3)
        self.assertEqual(zk.drops, 1)
        self.assertEqual(connection.recv(1), b"")
        self.open()


# The members /zookeeper/config lists on the agent's ensemble, and on a
# stray one-server cluster.
ENSEMBLE = (
    b"server.1=127.0.0.1:2888:3888:participant\n"
    b"server.2=127.0.0.2:2888:3888:participant\n"
    b"server.3=127.0.0.3:2888:3888:participant\nversion=100000000"
)
STRAY = b"server.1=127.0.0.1:4888:5888:participant\nversion=0"
# The same ensemble migrated to other hosts, a server at a time.
MIGRATED = (
    b"server.4=10.0.0.4:2888:3888:participant;0.0.0.0:2181\n"
    b"server.5=10.0.0.5:2888:3888:participant;0.0.0.0:2181\n"
    b"server.6=10.0.0.6:2888:3888:participant;0.0.0.0:2181\nversion=100000009"
)


class EnsembleCheckTests(SynchronousTestCase):
    """Each new session checked to be on the ensemble first heard."""

    def setUp(self) -> None:
        self.clock = HandOverClock()
        self.factory = FakeKazooFactory()
        self.zk = ZooKeeper(
            self.clock,
            "127.0.0.1:2181,127.0.0.1:2182,127.0.0.1:2183",
            SESSION_TIMEOUT,
            client_factory=self.factory,
            check_ensemble=True,
            spread=no_spread,
        )
        self.states: list[str] = []
        self.zk.add_listener(self.states.append)

    def connect(
        self, client: FakeKazooClient, session: int, port: int, config: bytes
    ) -> None:
        """
        `client` connects to 127.0.0.1:`port` (as kazoo, through the
        bridge's handler) with `session`, and that server's config answers.
        """
        client.settings["handler"].connected_to = ("127.0.0.1", port)
        client.change_state(KazooState.CONNECTED, session=session)
        self.clock.run_handed_over()
        [index] = [
            i for i, call in enumerate(client.calls) if call[:2] == ("get", CONFIG_PATH)
        ][-1:]
        client.answer(index, value=(config, None))
        self.clock.run_handed_over()

    def expire(self, client: FakeKazooClient) -> None:
        """kazoo hears the session expired."""
        client.change_state(KazooState.LOST)
        self.clock.run_handed_over()

    def test_another_ensemble_named_and_left(self) -> None:
        """
        A new session on a server whose config lists none of the members
        first heard (a stray cluster on a listed port) fails /healthz's
        ZooKeeper part naming the server, is logged, and is left: a new
        client asks for the last session found on the ensemble, on the
        other listed servers, and so does a client replaced meanwhile (the
        stray would say the session expired). Back on that session, the
        reason goes, and a client replaced later has every server again.
        """
        warnings = bridge_warnings(self)
        self.zk.start()
        first = self.factory.clients[0]
        self.connect(first, 0x42, 2181, ENSEMBLE)
        self.assertIsNone(self.zk.foreign)
        self.expire(first)
        self.connect(first, 0x43, 2182, STRAY)
        foreign = self.zk.foreign or ""
        self.assertIn("ZooKeeper at 127.0.0.1:2182 is another ensemble", foreign)
        self.assertIn("lists 1 member(s), none of the 3", foreign)
        self.assertEqual([foreign], warnings)
        self.assertEqual(len(self.factory.clients), 2)
        moved = self.factory.clients[1]
        self.assertEqual(moved.settings["hosts"], "127.0.0.1:2181,127.0.0.1:2183")
        self.assertEqual(moved.settings["client_id"], (0x42, b"password"))
        self.assertEqual(self.zk.state, LOST)
        self.assertTrue(first.closed.wait(THREAD_WAIT))

        self.clock.advance(SESSION_TIMEOUT)
        again = self.factory.clients[2]
        self.assertEqual(again.settings["hosts"], "127.0.0.1:2181,127.0.0.1:2183")
        self.assertEqual(again.settings["client_id"], (0x42, b"password"))
        again.settings["handler"].connected_to = ("127.0.0.1", 2183)
        again.change_state(KazooState.CONNECTED, session=0x42)
        self.clock.run_handed_over()
        self.assertIsNone(self.zk.foreign)
        self.assertEqual(self.states[-2:], [LOST, CONNECTED])

        again.change_state(KazooState.SUSPENDED)
        self.clock.run_handed_over()
        self.clock.advance(SESSION_TIMEOUT)
        self.assertEqual(self.factory.clients[3].settings["hosts"], self.zk.hosts)

    def test_emptied_ensemble_used(self) -> None:
        """
        A new session on a server of the ensemble that came back empty
        (the same members listed) is used: nothing said, nothing left.
        """
        self.zk.start()
        client = self.factory.clients[0]
        self.connect(client, 0x42, 2181, ENSEMBLE)
        self.expire(client)
        self.connect(client, 0x43, 2182, ENSEMBLE)
        self.assertIsNone(self.zk.foreign)
        self.assertEqual(len(self.factory.clients), 1)
        self.assertEqual(self.zk.state, CONNECTED)

    def test_standalone_ensemble_never_judged(self) -> None:
        """
        An ensemble whose config lists no members (a standalone server) is
        nothing to compare with: every session is used.
        """
        self.zk.start()
        client = self.factory.clients[0]
        self.connect(client, 0x42, 2181, b"")
        self.expire(client)
        self.connect(client, 0x43, 2182, STRAY)
        self.assertIsNone(self.zk.foreign)
        self.assertEqual(len(self.factory.clients), 1)

    def configs_read(self, client: FakeKazooClient) -> list[int]:
        """The indexes of `client`'s reads of the members."""
        return [
            i for i, call in enumerate(client.calls) if call[:2] == ("get", CONFIG_PATH)
        ]

    def test_members_compared_by_id_and_quorum_address(self) -> None:
        """
        A member is its id and quorum address: a role, a client address or
        an election port changed is the same member; the same id on
        another quorum port (a test cluster on the same host) is not.
        """
        reworded = (
            b"server.1=127.0.0.1:2888:3999:observer;0.0.0.0:2181\n"
            b"server.9=10.0.0.9:2888:3888:participant;2181\nversion=100000001"
        )
        self.assertEqual(
            members(reworded) & members(ENSEMBLE), {("1", "127.0.0.1:2888")}
        )
        self.assertFalse(members(STRAY) & members(ENSEMBLE))

    def test_reconfiguration_during_a_session_followed(self) -> None:
        """
        The members are read again at each connection on the ensemble's
        session and every `REREAD_EVERY` seconds: an ensemble migrated a
        server at a time while the agent kept its session is still the
        ensemble at the next new session.
        """
        self.zk.start()
        client = self.factory.clients[0]
        self.connect(client, 0x42, 2181, ENSEMBLE)
        steps = [
            ENSEMBLE.replace(b"server.1=127.0.0.1", b"server.4=10.0.0.4"),
            MIGRATED.replace(b"server.6=10.0.0.6", b"server.3=127.0.0.3"),
        ]
        for config in steps:
            self.clock.advance(REREAD_EVERY)
            client.answer(self.configs_read(client)[-1], value=(config, None))
            self.clock.run_handed_over()
        # At a reconnection (same session), the last step.
        client.change_state(KazooState.SUSPENDED)
        self.clock.run_handed_over()
        client.change_state(KazooState.CONNECTED, session=0x42)
        self.clock.run_handed_over()
        client.answer(self.configs_read(client)[-1], value=(MIGRATED, None))
        self.clock.run_handed_over()
        self.expire(client)
        self.connect(client, 0x43, 2182, MIGRATED)
        self.assertIsNone(self.zk.foreign)
        self.assertEqual(len(self.factory.clients), 1)

    def test_every_server_foreign_left_once_a_pause_then_taken(self) -> None:
        """
        Every listed server looking like another ensemble (the whole
        ensemble replaced at once): each is left at most once a session
        timeout, with one warning; the last is stayed on, and after
        `ACCEPT_AFTER` session timeouts taken for the ensemble, with one
        more warning, and published to.
        """
        warnings = bridge_warnings(self)
        self.zk.start()
        first = self.factory.clients[0]
        self.connect(first, 0x42, 2181, ENSEMBLE)
        self.expire(first)
        self.connect(first, 0x43, 2182, STRAY)
        self.assertEqual(len(self.factory.clients), 2)
        second = self.factory.clients[1]
        self.connect(second, 0x44, 2183, STRAY)
        self.assertEqual(len(self.factory.clients), 2)
        self.assertIn(
            "moving to another listed server (at most once a 4 s session",
            self.zk.foreign or "",
        )
        self.clock.advance(SESSION_TIMEOUT)
        third = self.factory.clients[2]
        self.assertEqual(third.settings["hosts"], "127.0.0.1:2181")
        self.connect(third, 0x45, 2181, STRAY)
        self.assertIn("no other listed server to try", self.zk.foreign or "")
        for _ in range(ACCEPT_AFTER * 4):
            self.clock.advance(SESSION_TIMEOUT / 4)
        self.assertEqual(len(self.factory.clients), 3)
        self.assertIsNone(self.zk.foreign)
        self.assertEqual(self.zk.state, CONNECTED)
        self.assertEqual(len(warnings), 2)
        self.assertIn("taking the one at 127.0.0.1:2181", warnings[1])
        # Taken: its members are the ensemble's from now on.
        self.expire(third)
        self.connect(third, 0x46, 2181, STRAY)
        self.assertIsNone(self.zk.foreign)

    def test_stray_on_the_only_address_stayed_on(self) -> None:
        """
        One address listed (a VIP, a DNS name): a stray there is not left
        (a new client would reach it again, at once), however often it
        makes new sessions; one warning, and it is taken after
        `ACCEPT_AFTER` session timeouts.
        """
        zk = ZooKeeper(
            self.clock,
            "zk.example:2181",
            SESSION_TIMEOUT,
            client_factory=self.factory,
            check_ensemble=True,
            spread=no_spread,
        )
        warnings = bridge_warnings(self)
        zk.start()
        client = self.factory.clients[0]

        def connect(session: int, config: bytes) -> None:
            client.settings["handler"].connected_to = ("zk.example", 2181)
            client.change_state(KazooState.CONNECTED, session=session)
            self.clock.run_handed_over()
            client.answer(self.configs_read(client)[-1], value=(config, None))
            self.clock.run_handed_over()

        connect(0x42, ENSEMBLE)
        for session in range(0x43, 0x43 + 20):
            self.expire(client)
            connect(session, STRAY)
        self.assertEqual(len(self.factory.clients), 1)
        self.assertEqual(len(warnings), 1)
        self.assertIn("no other listed server to try", zk.foreign or "")
        self.clock.advance(ACCEPT_AFTER * SESSION_TIMEOUT)
        self.assertIsNone(zk.foreign)
        self.assertEqual(len(warnings), 2)
        self.assertEqual(len(self.factory.clients), 1)


class DeletesSentTests(SynchronousTestCase):
    """`deletes_sent` on a real kazoo client's queue of requests to send."""

    def test_delete_waiting_in_kazoos_queue_is_not_sent(self) -> None:
        """
        A delete of a path given, still in kazoo's queue (chroot before
        its path), is not sent; other requests there do not count, and
        once kazoo took it out (written to its connection) it is. A
        client without that queue cannot tell.
        """
        client = KazooClient(hosts="127.0.0.1:2181/app")
        agent = "/sentinel/agents/a"
        self.assertIs(deletes_sent(client, [agent]), True)
        client._queue.append((Delete(f"/app{agent}", 3), None))
        client._queue.append((Delete("/app/sentinel/instances/r1", 1), None))
        self.assertIs(deletes_sent(client, ["/sentinel/catalogs/a.1"]), True)
        self.assertIs(deletes_sent(client, ["/sentinel/catalogs/a.1", agent]), False)
        client._queue.popleft()
        self.assertIs(deletes_sent(client, [agent]), True)
        self.assertIsNone(deletes_sent(object(), [agent]))


class RefusedByAnEmptyServerTests(SynchronousTestCase):
    """
    A server that closes the handshake in an outage is asked why
    (`sentinel.srvr`): serving below the client's last transaction, it
    lost them, and the client is replaced at once.
    """

    def setUp(self) -> None:
        self.clock = HandOverClock()
        self.factory = FakeKazooFactory()
        self.asked: list[tuple[str, int]] = []
        self.answers: list[Deferred[ServerSays]] = []
        self.zk, self.old = connected_bridge(
            self.clock, self.factory, ask_server=self.ask
        )
        self.old.last_zxid = 0x100000123
        self.old.change_state(KazooState.SUSPENDED)
        self.clock.run_handed_over()

    def ask(self, host: str, port: int) -> Deferred[ServerSays]:
        self.asked.append((host, port))
        self.answers.append(Deferred())
        return self.answers[-1]

    def refused(self) -> None:
        """The old client's handshake closed by 127.0.0.1:2181."""
        self.old.settings["handler"].connected_to = ("127.0.0.1", 2181)
        self.old.warn("Connection dropped: %s", "socket connection broken")
        self.clock.run_handed_over()

    def test_replaced_at_once_by_a_server_behind(self) -> None:
        """
        Serving at a transaction id below the client's last: replaced at
        once, asking for the old session (which that server says expired,
        and kazoo opens a new one), not a session timeout later. One
        question at a time, whatever kazoo retries meanwhile.
        """
        self.clock.advance(1.0)
        self.refused()
        self.refused()
        self.assertEqual(self.asked, [("127.0.0.1", 2181)])
        self.answers[0].callback(ServerSays("standalone", 0x2A))
        self.assertEqual(len(self.factory.clients), 2)
        self.assertEqual(self.factory.clients[-1].settings["client_id"][0], 0x42)
        self.assertEqual(self.zk.replaced_behind, 1)
        self.assertEqual(self.zk.replacements, 1)
        self.clock.advance(SESSION_TIMEOUT - 1.0)
        self.assertEqual(len(self.factory.clients), 2)

    def test_kept_when_the_server_is_not_behind(self) -> None:
        """
        Without a quorum, at or past the client's transaction id, or not
        answering: left to the session timeout, as before.
        """
        for says in (
            ServerSays(None, None),
            ServerSays("standalone", 0x100000123),
            ServerSays("follower", 0x200000000),
        ):
            self.refused()
            self.answers[-1].callback(says)
        self.refused()
        self.answers[-1].errback(TimeoutError())
        self.assertEqual(len(self.asked), 4)
        self.assertEqual(len(self.factory.clients), 1)
        self.clock.advance(SESSION_TIMEOUT)
        self.assertEqual(len(self.factory.clients), 2)
        self.assertEqual(self.zk.replaced_behind, 0)

    def test_bug_in_judging_an_answer_shown(self) -> None:
        """
        A bug of ours in judging the answer is counted and logged as one
        (``/healthz`` then fails), not dropped with the unanswered
        questions; the next refusal is asked again.
        """
        self.refused()
        self.answers[0].callback("not what srvr says")  # type: ignore[arg-type]
        self.assertEqual(self.zk.internal_errors.count, 1)
        self.assertEqual(len(self.flushLoggedErrors(AttributeError)), 1)
        self.refused()
        self.assertEqual(len(self.asked), 2)

    def test_answer_after_connecting_changes_nothing(self) -> None:
        """Connected again meanwhile: the answer is of no use."""
        self.refused()
        self.old.change_state(KazooState.CONNECTED, session=0x42)
        self.clock.run_handed_over()
        self.answers[0].callback(ServerSays("standalone", 0))
        self.assertEqual(len(self.factory.clients), 1)


class ParseSrvrTests(SynchronousTestCase):
    """`parse_srvr` reads a ``srvr`` answer."""

    def test_serving(self) -> None:
        """A standalone server's answer: its mode and zxid."""
        says = parse_srvr(
            b"Zookeeper version: 3.8.0\nLatency min/avg/max: 0/0.0/0\n"
            b"Zxid: 0x1000000a3\nMode: standalone\nNode count: 5\n"
        )
        self.assertEqual(says, ServerSays("standalone", 0x1000000A3))
        self.assertTrue(says.serving)

    def test_not_serving(self) -> None:
        """Without a quorum, or refused by the whitelist: not serving."""
        for answer in (
            b"This ZooKeeper instance is not currently serving requests\n",
            b"srvr is not executed because it is not in the whitelist.\n",
            b"Zxid: nonsense\nMode: standalone\n",
        ):
            self.assertFalse(parse_srvr(answer).serving)

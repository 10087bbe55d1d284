"""
The lean dispatch of ready sockets (`sentinel.dispatch`) on a real epoll
reactor, built for the test and never run: it still takes effect, reads,
writes and disconnects as Twisted's own, and logs what escapes; and the
look after each poll on the other reactors twistd offers.
"""

from __future__ import annotations

import asyncio
import select
import socket
import struct
from typing import Any

from twisted.internet import (
    asyncioreactor,
    epollreactor,
    pollreactor,
    selectreactor,
)
from twisted.internet.abstract import FileDescriptor
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.main import CONNECTION_LOST
from twisted.internet.task import Clock
from twisted.python import log as legacy_log
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from sentinel import dispatch
from sentinel.dispatch import lean_dispatch, read_directly, stop_reading_directly


class Reader(FileDescriptor):
    """One end of a socket pair, reading what arrives."""

    def __init__(self, reactor: Any, sock: socket.socket, fail: bool = False) -> None:
        super().__init__(reactor)
        self.socket = sock
        self.fail = fail
        self.read: list[bytes] = []
        self.lost: list[Failure] = []

    def fileno(self) -> int:
        return self.socket.fileno()

    def doRead(self) -> Any:
        data = self.socket.recv(4096)
        if self.fail:
            raise ZeroDivisionError("a bug while reading")
        if not data:
            return ConnectionDone()
        self.read.append(data)
        return None

    def writeSomeData(self, data: bytes) -> int | BaseException:
        # As Twisted's TCP transport: a failed send is the connection lost.
        try:
            return self.socket.send(data) if data else 0
        except OSError:
            return CONNECTION_LOST

    def connectionLost(self, reason: Failure) -> None:
        self.lost.append(reason)
        super().connectionLost(reason)


class LeanDispatchTests(SynchronousTestCase):
    """`lean_dispatch` on an EPollReactor of the test's own."""

    def setUp(self) -> None:
        self.reactor = epollreactor.EPollReactor()
        self.addCleanup(self.close_reactor)
        self.wrapped: list[object] = []
        original = legacy_log.callWithLogger

        def counted(logger: object, func: Any, *args: Any, **kw: Any) -> Any:
            self.wrapped.append(logger)
            return original(logger, func, *args, **kw)

        self.patch(legacy_log, "callWithLogger", counted)

    def close_reactor(self) -> None:
        # The socket pairs close themselves (their cleanups run first).
        self.reactor._poller.close()
        waker = self.reactor.waker
        if waker is not None:
            waker.connectionLost(None)

    def pair(self, fail: bool = False) -> tuple[Reader, socket.socket]:
        ours, theirs = socket.socketpair()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        ours.setblocking(False)
        reader = Reader(self.reactor, ours, fail)
        self.reactor.addReader(reader)
        return reader, theirs

    def test_installed_and_taken(self) -> None:
        """
        Installed on Twisted's epoll reactor, each ready socket is read once
        per iteration, and never through the legacy log context (the
        reactor's own dispatch goes through it: the check below that fails
        if an upgrade renames what the lean one relies on).
        """
        reader, theirs = self.pair()
        theirs.send(b"+PONG\r\n")
        self.reactor.doIteration(1.0)
        self.assertEqual(reader.read, [b"+PONG\r\n"])
        self.assertIn(reader, self.wrapped)
        self.wrapped.clear()
        self.assertTrue(lean_dispatch(self.reactor))
        theirs.send(b"+PONG\r\n")
        self.reactor.doIteration(1.0)
        self.assertEqual(reader.read, [b"+PONG\r\n"] * 2)
        self.assertEqual(self.wrapped, [])

    def test_disconnects_as_twisted_does(self) -> None:
        """A socket closed by its peer is disconnected and told why."""
        self.assertTrue(lean_dispatch(self.reactor))
        reader, theirs = self.pair()
        theirs.close()
        self.reactor.doIteration(1.0)
        self.assertEqual(len(reader.lost), 1)
        reader.lost[0].trap(ConnectionDone)
        self.assertNotIn(reader, self.reactor.getReaders())

    def test_application_error_logged_and_disconnected(self) -> None:
        """
        An exception while reading is logged and drops that socket, as
        Twisted's dispatch does; the other ready sockets are read all the
        same.
        """
        self.assertTrue(lean_dispatch(self.reactor))
        broken, theirs = self.pair(fail=True)
        healthy, other = self.pair()
        theirs.send(b"x")
        other.send(b"+PONG\r\n")
        self.reactor.doIteration(1.0)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(len(broken.lost), 1)
        self.assertEqual(healthy.read, [b"+PONG\r\n"])

    def test_error_outside_the_reader_logged(self) -> None:
        """What escapes the per-socket handling is logged, and the loop goes on."""
        events: list[dict[str, Any]] = []
        self.patch(dispatch, "log", dispatch.Logger(observer=events.append))

        def broken(selectable: object, fd: int, event: int) -> None:
            raise ZeroDivisionError("a bug in the reactor")

        self.patch(self.reactor, "_doReadOrWrite", broken)
        self.assertTrue(lean_dispatch(self.reactor))
        first, theirs = self.pair()
        second, other = self.pair()
        theirs.send(b"x")
        other.send(b"y")
        self.reactor.doIteration(1.0)
        self.assertEqual(len(events), 2)
        self.assertEqual({e["log_failure"].type for e in events}, {ZeroDivisionError})

    def test_after_poll(self) -> None:
        """
        `after_poll` runs after each poll, before the ready sockets are
        read (and so before any timer); what it raises is logged, and the
        sockets are read all the same.
        """
        reader, theirs = self.pair()
        seen: list[list[bytes]] = []

        def after() -> None:
            seen.append(list(reader.read))
            raise ZeroDivisionError("a bug after the poll")

        self.assertTrue(lean_dispatch(self.reactor, after))
        theirs.send(b"+PONG\r\n")
        self.reactor.doIteration(1.0)
        self.assertEqual(seen, [[]])
        self.assertEqual(reader.read, [b"+PONG\r\n"])
        self.reactor.doIteration(0.0)
        self.assertEqual(len(seen), 2)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)

    def test_longest_wait(self) -> None:
        """
        With `longest_wait`, a poll waits no longer than that, however far
        the reactor's next timer, or with none; without it, as asked.
        """
        waits: list[float] = []

        class Poller:
            def poll(self, timeout: float, most: int) -> list[tuple[int, int]]:
                waits.append(timeout)
                return []

        self.patch(self.reactor, "_poller", Poller())
        self.assertTrue(lean_dispatch(self.reactor, longest_wait=1.0))
        for asked in (3600.0, None, 0.25):
            self.reactor.doIteration(asked)
        self.assertEqual(waits, [1.0, 1.0, 0.25])
        self.assertTrue(lean_dispatch(self.reactor))
        self.reactor.doIteration(3600.0)
        self.reactor.doIteration(None)
        self.assertEqual(waits[3:], [3600.0, -1])

    def tcp_pair(self) -> tuple[Reader, socket.socket]:
        # A real TCP connection on loopback: it can be reset.
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        ours = socket.create_connection(listener.getsockname())
        theirs, _ = listener.accept()
        self.addCleanup(ours.close)
        self.addCleanup(theirs.close)
        ours.setblocking(False)
        reader = Reader(self.reactor, ours)
        self.reactor.addReader(reader)
        return reader, theirs

    def test_read_directly(self) -> None:
        """
        A descriptor read directly has its bytes handed to the function
        given, without its doRead (nor the legacy log context); stopped, it
        is read by doRead again.
        """
        self.assertTrue(lean_dispatch(self.reactor))
        reader, theirs = self.pair()
        received: list[bytes] = []
        read_directly(reader, 4096, received.append)
        theirs.send(b"+PONG\r\n")
        self.reactor.doIteration(1.0)
        self.assertEqual(received, [b"+PONG\r\n"])
        self.assertEqual(reader.read, [])
        self.assertEqual(self.wrapped, [])
        stop_reading_directly(reader)
        theirs.send(b"+PONG\r\n")
        self.reactor.doIteration(1.0)
        self.assertEqual(received, [b"+PONG\r\n"])
        self.assertEqual(reader.read, [b"+PONG\r\n"])

    def test_read_directly_in_pieces(self) -> None:
        """A read takes at most the size given; the rest comes at the next turn."""
        self.assertTrue(lean_dispatch(self.reactor))
        reader, theirs = self.pair()
        received: list[bytes] = []
        read_directly(reader, 4, received.append)
        theirs.send(b"+PONG\r\n")
        self.reactor.doIteration(1.0)
        self.reactor.doIteration(1.0)
        self.assertEqual(received, [b"+PON", b"G\r\n"])

    def test_read_directly_closed(self) -> None:
        """A descriptor read directly and closed by its peer is disconnected, done."""
        self.assertTrue(lean_dispatch(self.reactor))
        reader, theirs = self.pair()
        received: list[bytes] = []
        read_directly(reader, 4096, received.append)
        theirs.close()
        self.reactor.doIteration(1.0)
        self.assertEqual(received, [])
        self.assertEqual(len(reader.lost), 1)
        reader.lost[0].trap(ConnectionDone)
        self.assertNotIn(reader, self.reactor.getReaders())

    def poll_says(self, reader: Reader, event: int) -> None:
        # The next polls report `event` for `reader`, whatever the socket.
        real = self.reactor._poller

        class Poller:
            def poll(self, timeout: float, most: int) -> list[tuple[int, int]]:
                return [(reader.fileno(), event)]

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

        self.patch(self.reactor, "_poller", Poller())
        self.assertTrue(lean_dispatch(self.reactor))

    def test_read_directly_reset(self) -> None:
        """
        A connection found reset when it is read directly is disconnected
        as lost, not done. (A reset seen by the poll itself is an error
        event, which Twisted's own path handles.)
        """
        reader, theirs = self.tcp_pair()
        received: list[bytes] = []
        read_directly(reader, 4096, received.append)
        # Closing with a zero linger sends a reset.
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        theirs.close()
        self.poll_says(reader, select.EPOLLIN)
        self.reactor.doIteration(0.0)
        self.assertEqual(received, [])
        self.assertEqual(len(reader.lost), 1)
        reader.lost[0].trap(ConnectionLost)
        self.assertNotIsInstance(reader.lost[0].value, ConnectionDone)

    def test_reset_found_by_a_write_reads_what_was_left(self) -> None:
        """
        A connection read directly whose write finds it reset has what the
        peer wrote before the reset read first (a Redis that is full writes
        its reason and closes), then is disconnected as lost.
        """
        reader, theirs = self.tcp_pair()
        received: list[bytes] = []
        read_directly(reader, 4096, received.append)
        theirs.send(b"-ERR max number of clients reached\r\n")
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        theirs.close()
        reader.connected = 1
        reader.write(b"*1\r\n$4\r\nPING\r\n")
        # Writable only, as when the connect completed this same turn.
        self.poll_says(reader, select.EPOLLOUT)
        self.reactor.doIteration(0.0)
        self.assertEqual(received, [b"-ERR max number of clients reached\r\n"])
        self.assertEqual(len(reader.lost), 1)
        reader.lost[0].trap(ConnectionLost)

    def test_read_once_more_is_one_read(self) -> None:
        """
        That last read is one read, its bugs logged; a loss found by a read
        (nothing left), or of a connection not read directly, reads nothing.
        """
        self.assertTrue(lean_dispatch(self.reactor))
        disconnect = self.reactor._disconnectSelectable
        reader, theirs = self.pair()
        received: list[bytes] = []
        read_directly(reader, 4, received.append)
        theirs.send(b"+PONG\r\n")
        disconnect(reader, ConnectionLost(), True)
        self.assertEqual(received, [])
        disconnect(reader, ConnectionLost(), False)
        self.assertEqual(received, [b"+PON"])
        broken, other = self.pair()

        def fail(data: bytes) -> None:
            raise ZeroDivisionError("a bug while reading")

        read_directly(broken, 4096, fail)
        other.send(b"x")
        disconnect(broken, ConnectionLost(), False)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(len(broken.lost), 1)
        plain, third = self.pair()
        third.send(b"x")
        disconnect(plain, ConnectionLost(), False)
        self.assertEqual((plain.read, len(plain.lost)), ([], 1))

    def test_read_directly_nothing_ready(self) -> None:
        """A readable event with nothing to read (spurious) changes nothing."""
        reader, theirs = self.pair()
        received: list[bytes] = []
        read_directly(reader, 4096, received.append)
        self.poll_says(reader, select.EPOLLIN)
        self.reactor.doIteration(0.0)
        self.assertEqual(received, [])
        self.assertEqual(reader.lost, [])
        self.assertIn(reader, self.reactor.getReaders())

    def test_read_directly_error_logged_and_disconnected(self) -> None:
        """
        An exception from the function given is logged and drops that
        descriptor, with the exception as the reason; the other ready
        descriptors are read all the same.
        """
        self.assertTrue(lean_dispatch(self.reactor))
        broken, theirs = self.pair()
        healthy, other = self.pair()

        def fail(data: bytes) -> None:
            raise ZeroDivisionError("a bug while reading")

        read_directly(broken, 4096, fail)
        received: list[bytes] = []
        read_directly(healthy, 4096, received.append)
        theirs.send(b"x")
        other.send(b"+PONG\r\n")
        self.reactor.doIteration(1.0)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(len(broken.lost), 1)
        broken.lost[0].trap(ZeroDivisionError)
        self.assertNotIn(broken, self.reactor.getReaders())
        self.assertEqual(received, [b"+PONG\r\n"])

    def test_read_directly_but_writable(self) -> None:
        """
        A descriptor read directly that is also writable this turn is
        handled by Twisted's own path, which reads it with doRead.
        """
        reader, theirs = self.pair()
        received: list[bytes] = []
        read_directly(reader, 4096, received.append)
        theirs.send(b"+PONG\r\n")
        self.poll_says(reader, select.EPOLLIN | select.EPOLLOUT)
        self.reactor.doIteration(0.0)
        self.assertEqual(received, [])
        self.assertEqual(reader.read, [b"+PONG\r\n"])

    def test_other_reactors_untouched(self) -> None:
        """A reactor of another kind keeps its own dispatch."""
        clock = Clock()
        self.assertFalse(lean_dispatch(clock))
        self.assertFalse(hasattr(clock, "doIteration"))


class ProcessPolicyTests(SynchronousTestCase):
    """The agent run by twistd dispatches the lean way."""

    def test_installed_at_start(self) -> None:
        """Starting the process policy on an epoll reactor installs it."""
        from sentinel.process import ProcessPolicy

        reactor = epollreactor.EPollReactor()
        self.addCleanup(reactor._poller.close)
        policy = ProcessPolicy(reactor, 1)
        self.assertFalse(policy.lean_dispatch)
        policy.startService()
        policy.stopService()
        self.assertTrue(policy.lean_dispatch)
        self.assertIsNot(reactor.doIteration, reactor.doPoll)

    def test_clock_watched_after_each_poll(self) -> None:
        """Given the agent's clock watch, the policy has it look after each poll."""
        from sentinel.clocksteps import ClockSteps
        from sentinel.process import ProcessPolicy

        reactor = epollreactor.EPollReactor()
        self.addCleanup(reactor._poller.close)
        policy = ProcessPolicy(reactor, 1)
        looks: list[None] = []
        steps = ClockSteps(reactor, list)
        self.patch(steps, "look", lambda: looks.append(None))
        policy.clock_steps = steps
        policy.startService()
        policy.stopService()
        reactor.doIteration(0.0)
        reactor.doIteration(0.0)
        self.assertEqual(len(looks), 2)


class AfterEachPollTests(SynchronousTestCase):
    """
    `after_each_poll` on the other reactors twistd offers (poll, select,
    asyncio), each built for the test and never run.
    """

    def reactor(self, kind: type[Any], *args: Any) -> Any:
        reactor = kind(*args)

        def close() -> None:
            reactor.removeAll()
            waker = reactor.waker
            if waker is not None:
                waker.connectionLost(None)

        self.addCleanup(close)
        return reactor

    def test_after_the_reads(self) -> None:
        """
        On the poll and select reactors, `after_poll` runs after each
        poll, once that turn's ready sockets are read (and before any
        timer: mainLoop runs them before its next poll); what it raises is
        logged, and the next turn polls all the same.
        """
        for kind in (pollreactor.PollReactor, selectreactor.SelectReactor):
            reactor = self.reactor(kind)
            ours, theirs = socket.socketpair()
            self.addCleanup(ours.close)
            self.addCleanup(theirs.close)
            ours.setblocking(False)
            reader = Reader(reactor, ours)
            reactor.addReader(reader)
            seen: list[list[bytes]] = []

            def after(reader: Reader = reader, seen: list[list[bytes]] = seen) -> None:
                seen.append(list(reader.read))
                raise ZeroDivisionError("a bug after the poll")

            self.assertTrue(dispatch.after_each_poll(reactor, after, 1.0))
            theirs.send(b"+PONG\r\n")
            reactor.doIteration(3600.0)
            reactor.doIteration(0.0)
            self.assertEqual(seen, [[b"+PONG\r\n"]] * 2)
            self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)

    def test_longest_wait(self) -> None:
        """A poll waits no longer than `longest_wait`, or with no timer at all."""
        reactor = self.reactor(pollreactor.PollReactor)
        waits: list[float | None] = []
        reactor.doIteration = waits.append
        self.assertTrue(dispatch.after_each_poll(reactor, lambda: None, 1.0))
        for asked in (3600.0, None, 0.25):
            reactor.doIteration(asked)
        self.assertEqual(waits, [1.0, 1.0, 0.25])

    def test_asyncio(self) -> None:
        """
        On the asyncio reactor, `after_poll` runs before each run of the
        reactor's timers, and every `longest_wait` seconds of the event
        loop's own (monotonic) clock, timers due or not.
        """
        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        reactor = self.reactor(asyncioreactor.AsyncioSelectorReactor, loop)
        now = [loop.time()]
        self.patch(loop, "time", lambda: now[0])
        events: list[str] = []
        self.assertTrue(
            dispatch.after_each_poll(reactor, lambda: events.append("look"), 1.0)
        )
        reactor.callLater(0, events.append, "timer")

        def turn() -> None:
            loop.call_soon(loop.stop)
            loop.run_forever()

        turn()
        self.assertEqual(events, ["look", "timer"])
        now[0] += 0.5
        turn()
        self.assertEqual(events, ["look", "timer"])
        now[0] += 0.5
        turn()
        self.assertEqual(events, ["look", "timer", "look"])

    def test_other_reactors_untouched(self) -> None:
        """A reactor it does not know is left as it is: False."""
        clock = Clock()
        self.assertFalse(dispatch.after_each_poll(clock, lambda: None, 1.0))
        self.assertFalse(hasattr(clock, "doIteration"))

    def test_process_policy_watches_the_clock(self) -> None:
        """
        Given the agent's clock watch, the process policy has it look after
        each poll on a reactor without the lean dispatch.
        """
        from sentinel.clocksteps import ClockSteps
        from sentinel.process import ProcessPolicy

        reactor = self.reactor(pollreactor.PollReactor)
        policy = ProcessPolicy(reactor, 1)
        looks: list[None] = []
        steps = ClockSteps(reactor, list)
        self.patch(steps, "look", lambda: looks.append(None))
        policy.clock_steps = steps
        policy.startService()
        policy.stopService()
        self.assertFalse(policy.lean_dispatch)
        reactor.doIteration(0.0)
        reactor.doIteration(0.0)
        self.assertEqual(len(looks), 2)

"""
The signals that stop the agent (`sentinel.shutdown`): SIGUSR2's leave, and
a stop signal during a stop, logged once and ignored.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger, LogLevel
from twisted.trial.unittest import SynchronousTestCase

from sentinel import shutdown
from sentinel.shutdown import LEAVE_SIGNAL, StopSignals, stop


class _Reactor:
    """What StopSignals uses of a reactor; stop() as the real one's."""

    running = True

    def __init__(self) -> None:
        self.stops = 0
        self.handed_over: list[tuple[Callable[..., object], tuple[Any, ...]]] = []
        self.when_running: list[Callable[[], object]] = []
        self.triggers: list[tuple[str, str, Callable[[], object]]] = []

    def callFromThread(self, f: Callable[..., object], *args: Any) -> None:
        self.handed_over.append((f, args))

    def callWhenRunning(self, f: Callable[[], object]) -> None:
        self.when_running.append(f)

    def addSystemEventTrigger(
        self, phase: str, event: str, f: Callable[[], object]
    ) -> None:
        self.triggers.append((phase, event, f))

    def run_handed_over(self) -> None:
        handed_over, self.handed_over = self.handed_over, []
        for f, args in handed_over:
            f(*args)

    def start_running(self) -> None:
        for f in self.when_running:
            f()

    def shut_down(self) -> None:
        for phase, event, f in self.triggers:
            if (phase, event) == ("before", "shutdown"):
                f()

    def stop(self) -> None:
        if self.stops:
            raise ReactorNotRunning("Can't stop reactor that isn't running.")
        self.stops += 1


class _Signals:
    """signal.signal and signal.getsignal over a dict."""

    def __init__(self) -> None:
        self.handlers: dict[int, Any] = {}

    def signal(self, signum: int, handler: Any) -> Any:
        previous = self.handlers.get(signum, signal.SIG_DFL)
        self.handlers[signum] = handler
        return previous

    def getsignal(self, signum: int) -> Any:
        return self.handlers.get(signum, signal.SIG_DFL)

    def deliver(self, signum: int) -> None:
        self.handlers[signum](signum, None)


class StopSignalsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.patch(shutdown, "log", Logger(observer=self.events.append))
        self.reactor = _Reactor()
        self.signals = _Signals()
        self.reactor_stops: list[int] = []

        def reactor_handler(signum: int, frame: FrameType | None) -> None:
            # Twisted's sigTerm/sigInt: note the signal, stop from the
            # reactor's thread (which raises if a stop is on its way).
            self.reactor_stops.append(signum)
            self.reactor.callFromThread(self.reactor.stop)

        self.reactor_handler = reactor_handler
        self.signals.handlers[signal.SIGTERM] = reactor_handler
        self.signals.handlers[signal.SIGINT] = reactor_handler
        self.left: list[bool] = []
        self.service = StopSignals(
            self.reactor,
            lambda: self.left.append(True),
            setsignal=self.signals.signal,
            getsignal=self.signals.getsignal,
        )
        self.service.startService()
        self.reactor.start_running()

    def already_stopping(self) -> list[dict[str, Any]]:
        return [e for e in self.events if "already stopping" in e["log_format"]]

    def test_repeated_sigterm_logged_once_and_ignored(self) -> None:
        """
        A second and third SIGTERM (and a SIGINT) during a stop reach
        neither the reactor's handler nor reactor.stop(): one line at info
        says the agent is already stopping. (Before, the reactor's handler
        stopped a stopping reactor: a critical line with a traceback.)
        """
        for signum in (signal.SIGTERM, signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
            self.signals.deliver(signum)
            self.reactor.run_handed_over()
        self.assertEqual(self.reactor_stops, [signal.SIGTERM])
        self.assertEqual(self.reactor.stops, 1)
        [line] = self.already_stopping()
        self.assertEqual(line["log_level"], LogLevel.info)
        self.assertEqual(line["signal"], "SIGTERM")

    def test_leave_during_a_stop_ignored(self) -> None:
        """SIGUSR2 after SIGTERM: the stop goes on as it began, no leave."""
        self.signals.deliver(signal.SIGTERM)
        self.signals.deliver(LEAVE_SIGNAL)
        self.reactor.run_handed_over()
        self.assertEqual((self.left, self.reactor.stops), ([], 1))
        self.assertEqual(len(self.already_stopping()), 1)

    def test_sigterm_during_a_leave_ignored(self) -> None:
        """
        SIGTERM after SIGUSR2: ignored, so the exit status stays the
        leave's 0 (the reactor's handler would have made it 143).
        """
        self.signals.deliver(LEAVE_SIGNAL)
        self.reactor.run_handed_over()
        self.signals.deliver(signal.SIGTERM)
        self.reactor.run_handed_over()
        self.assertEqual((self.left, self.reactor.stops), ([True], 1))
        self.assertEqual(self.reactor_stops, [])
        self.assertEqual(len(self.already_stopping()), 1)

    def test_stop_started_elsewhere(self) -> None:
        """A stop begun by anything else (a twin found): SIGTERM ignored too."""
        stop(self.reactor)
        self.reactor.shut_down()
        self.signals.deliver(signal.SIGTERM)
        self.reactor.run_handed_over()
        self.assertEqual((self.reactor_stops, self.reactor.stops), ([], 1))

    def test_stop_twice(self) -> None:
        """stop() on a reactor already stopping does nothing, and raises nothing."""
        stop(self.reactor)
        stop(self.reactor)
        self.assertEqual(self.reactor.stops, 1)

    def test_uninstall(self) -> None:
        """
        The handlers stay through the stop (a default action restored
        then would end it early); uninstall() gives each signal its
        handler from before.
        """
        self.service.stopService()
        self.assertEqual(self.signals.handlers[LEAVE_SIGNAL], self.service._received)
        self.service.uninstall()
        self.assertEqual(
            self.signals.handlers,
            {
                signal.SIGTERM: self.reactor_handler,
                signal.SIGINT: self.reactor_handler,
                LEAVE_SIGNAL: signal.SIG_DFL,
            },
        )

    def test_without_zookeeper(self) -> None:
        """Without ZooKeeper, SIGUSR2 is a plain stop."""
        StopSignals(self.reactor, None).leave()
        self.assertEqual(self.reactor.stops, 1)


class LeaveSignalTests(SynchronousTestCase):
    """SIGUSR2 for real: deregister at once, then stop."""

    def test_signal(self) -> None:
        """
        SIGUSR2 is handed to the reactor's thread, makes the publisher's
        stop deregister, and stops the reactor.
        """
        reactor = _Reactor()
        left: list[bool] = []
        service = StopSignals(reactor, lambda: left.append(True))
        service.startService()
        self.addCleanup(service.uninstall)
        os.kill(os.getpid(), LEAVE_SIGNAL)
        self.assertEqual((left, reactor.stops), ([], 0))
        reactor.run_handed_over()
        self.assertEqual((left, reactor.stops), ([True], 1))
        service.uninstall()
        self.assertEqual(signal.getsignal(LEAVE_SIGNAL), signal.SIG_DFL)

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
from sentinel.signals import StartSignals


class _Reactor:
    """What StopSignals uses of a reactor; stop() as the real one's."""

    running = True

    def __init__(self) -> None:
        self.now = 100.0
        self.stops = 0
        self.handed_over: list[tuple[Callable[..., object], tuple[Any, ...]]] = []
        self.when_running: list[Callable[[], object]] = []
        self.triggers: list[tuple[str, str, Callable[[], object]]] = []

    def seconds(self) -> float:
        return self.now

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

    def shut_down(self, phase: str = "before") -> None:
        for when, event, f in self.triggers:
            if (when, event) == (phase, "shutdown"):
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
        self.signalled: list[float] = []
        self.exits: list[int] = []
        self.service = StopSignals(
            self.reactor,
            lambda: self.left.append(True),
            setsignal=self.signals.signal,
            getsignal=self.signals.getsignal,
            signalled=self.signalled.append,
            exit_with=self.exits.append,
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

    def test_first_signal_time_told_from_the_handler(self) -> None:
        """
        The handler tells the time of the first stop signal at once, before
        the reactor runs anything handed over (the stop's bounds count from
        it); a later one, of any kind, tells nothing.
        """
        self.signals.deliver(signal.SIGTERM)
        self.assertEqual(self.signalled, [100.0])
        self.reactor.now = 103.0
        self.signals.deliver(signal.SIGINT)
        self.signals.deliver(LEAVE_SIGNAL)
        self.reactor.run_handed_over()
        self.assertEqual(self.signalled, [100.0])

    def test_leave_signal_time_told(self) -> None:
        """SIGUSR2's time is told too: a leave is a stop."""
        self.reactor.now = 42.0
        self.signals.deliver(LEAVE_SIGNAL)
        self.assertEqual(self.signalled, [42.0])

    def test_leave_ends_the_process_once_the_reactor_stopped(self) -> None:
        """
        After a leave, the process ends with status 0 as soon as the
        reactor has stopped and twistd is done (an exit handler), as
        SIGTERM's ends by its signal raised again: not after Python has
        torn down every object of the agent (at 3,000 instances in a
        group, a leave that ended 5.37 s after its signal, its backstop
        silent).
        """
        self.signals.deliver(LEAVE_SIGNAL)
        self.reactor.run_handed_over()
        self.reactor.shut_down()
        self.assertEqual(self.exits, [])
        self.reactor.shut_down("after")
        self.assertEqual(self.exits, [0])

    def test_sigterm_ends_as_twistd_makes_it_end(self) -> None:
        """
        SIGTERM's stop leaves its end to twistd, which raises the signal
        again (status 143): no exit handler of ours.
        """
        self.signals.deliver(signal.SIGTERM)
        self.reactor.run_handed_over()
        self.reactor.run_handed_over()
        self.reactor.shut_down()
        self.reactor.shut_down("after")
        self.assertEqual((self.reactor.stops, self.exits), (1, []))

    def test_leave_during_a_stop_ignored(self) -> None:
        """SIGUSR2 after SIGTERM: the stop goes on as it began, no leave."""
        self.signals.deliver(signal.SIGTERM)
        self.signals.deliver(LEAVE_SIGNAL)
        self.reactor.run_handed_over()
        self.reactor.run_handed_over()  # The reactor's handler stops it.
        self.assertEqual((self.left, self.reactor.stops), ([], 1))
        self.assertEqual(len(self.already_stopping()), 1)

    def test_reactor_handler_run_on_the_reactor_thread(self) -> None:
        """
        SIGTERM's handler only hands over: the reactor's own handler (which
        logs "Received SIGTERM") runs on the reactor's thread. Run within
        the signal handler, its log line waited for good on the log
        output's lock when the signal came while the main thread held it
        (a line being logged): the agent never stopped (7 of 520 starts
        stopped at the moment of their first log lines).
        """
        self.signals.deliver(signal.SIGTERM)
        self.assertEqual(self.reactor_stops, [])
        self.reactor.run_handed_over()
        self.assertEqual(self.reactor_stops, [signal.SIGTERM])
        self.reactor.run_handed_over()
        self.assertEqual(self.reactor.stops, 1)

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

    def test_backstop_told_and_its_signal_raised_again(self) -> None:
        """
        The first stop signal wakes the backstop (`sentinel.backstop`),
        SIGUSR2 too, once; once the backstop finds the stop late, the stop
        signal it sends is raised again by its default action from the
        handler, not ignored as another during a stop.
        """
        told: list[tuple[str, int]] = []

        class Backstop:
            overdue = False

            def signalled(self, signum: int) -> None:
                told.append(("signalled", signum))

            def raise_again(self, signum: int) -> None:
                told.append(("raised", signum))

        backstop = Backstop()
        self.service.uninstall()
        service = StopSignals(
            self.reactor,
            None,
            setsignal=self.signals.signal,
            getsignal=self.signals.getsignal,
            backstop=backstop,  # type: ignore[arg-type]
        )
        service.startService()
        self.reactor.start_running()
        self.signals.deliver(signal.SIGTERM)
        self.signals.deliver(signal.SIGTERM)
        self.signals.deliver(LEAVE_SIGNAL)
        self.assertEqual(told, [("signalled", signal.SIGTERM)])
        backstop.overdue = True
        self.signals.deliver(signal.SIGTERM)
        self.assertEqual(told[-1], ("raised", signal.SIGTERM))
        leaving = StopSignals(
            self.reactor,
            None,
            setsignal=_Signals().signal,
            getsignal=_Signals().getsignal,
            backstop=Backstop(),  # type: ignore[arg-type]
        )
        leaving.startService()
        leaving._received(LEAVE_SIGNAL, None)
        self.assertEqual(told[-1], ("signalled", LEAVE_SIGNAL))

    def test_without_zookeeper(self) -> None:
        """Without ZooKeeper, SIGUSR2 is a plain stop."""
        StopSignals(self.reactor, None).leave()
        self.assertEqual(self.reactor.stops, 1)


class EarlySignalsTests(SynchronousTestCase):
    """Stop signals that came while the agent started, acted on once it runs."""

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.patch(shutdown, "log", Logger(observer=self.events.append))
        self.reactor = _Reactor()
        self.signals = _Signals()
        self.signals.handlers[signal.SIGINT] = signal.default_int_handler
        self.start = StartSignals(self.signals.signal, self.signals.getsignal)
        self.start.install()
        self.reactor_stops: list[int] = []
        self.left: list[bool] = []
        self.service = StopSignals(
            self.reactor,
            lambda: self.left.append(True),
            self.start,
            setsignal=self.signals.signal,
            getsignal=self.signals.getsignal,
        )

    def reactor_handler(self, signum: int, frame: FrameType | None) -> None:
        self.reactor_stops.append(signum)
        self.reactor.callFromThread(self.reactor.stop)

    def run_reactor(self) -> None:
        """
        As the reactor starts: the triggers before startup, then its own
        handlers installed (SIGINT's only over Python's), then running.
        """
        for phase, event, f in self.reactor.triggers:
            if (phase, event) == ("before", "startup"):
                f()
        if self.signals.getsignal(signal.SIGINT) is signal.default_int_handler:
            self.signals.handlers[signal.SIGINT] = self.reactor_handler
        self.signals.handlers[signal.SIGTERM] = self.reactor_handler
        self.reactor.start_running()
        self.reactor.run_handed_over()

    def lines(self) -> list[str]:
        return [e["log_format"].format(**e) for e in self.events]

    def test_sigusr2_leaves_once_running(self) -> None:
        """
        A SIGUSR2 that came while the agent started makes it leave once
        the reactor runs, as one sent then: the publisher deregisters and
        the reactor stops. (It ended the agent, status -12, nodes and state
        file kept.)
        """
        self.signals.deliver(LEAVE_SIGNAL)
        self.service.startService()
        self.assertEqual((self.left, self.reactor.stops), ([], 0))
        self.run_reactor()
        self.assertEqual((self.left, self.reactor.stops), ([True], 1))
        self.assertEqual(self.reactor_stops, [])
        self.assertIn("SIGUSR2 during start-up", self.lines())

    def test_sigint_and_sigterm_stop_as_the_reactor_would(self) -> None:
        """
        A SIGINT (or SIGTERM) that came while the agent started goes to
        the reactor's handler once it runs (twistd then re-raises it: the
        exit status says so), with no traceback; the reactor took SIGINT,
        which it does only from Python's handler. (SIGINT raised
        KeyboardInterrupt wherever start-up was.)
        """
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.signals.deliver(signum)
        self.service.startService()
        self.run_reactor()
        self.reactor.run_handed_over()
        self.assertEqual(self.reactor_stops, [signal.SIGTERM])
        self.reactor.run_handed_over()
        self.assertEqual(self.reactor.stops, 1)
        self.assertEqual(
            self.lines()[0:1], ["SIGTERM during start-up: stopping now"], self.lines()
        )
        self.assertEqual(
            self.signals.handlers[signal.SIGINT], self.service._stop_received
        )

    def test_nothing_noted(self) -> None:
        """Nothing noted, nothing happens: the agent runs."""
        self.service.startService()
        self.run_reactor()
        self.assertEqual((self.left, self.reactor.stops), ([], 0))


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

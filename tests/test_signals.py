"""
Signals that would otherwise end the agent without a word
(`sentinel.signals`): a SIGHUP or SIGUSR1 while it starts, SIGUSR1 while it
runs, SIGHUP without a config file; and twistd's own SIGUSR1 left alone.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

import attr
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from sentinel import reload as reload_module
from sentinel import signals
from sentinel.reload import ConfigReloader
from sentinel.signals import WHY_NO_CONFIG, WHY_USR1, StartSignals, UnusedSignals
from sentinel.tap import Options
from tests.fakes import make_monitor
from tests.test_reload import BASE, FakeThreads, instance
from tests.test_shutdown import _Signals


class _Reactor(Clock):
    """A Clock whose callFromThread runs at once (as the reactor's turn would)."""

    def callFromThread(self, f: Any, *args: Any) -> None:
        f(*args)


def twistd_rotate(signum: int, frame: FrameType | None) -> None:
    """Stands for the handler twistd installs to reopen its log file."""


class StartSignalsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.signals = _Signals()
        self.start = StartSignals(self.signals.signal, self.signals.getsignal)

    def test_noted_not_fatal(self) -> None:
        """
        Once installed, SIGHUP and SIGUSR1 are counted, no longer at their
        default action (which ended the process, status -1, no log line).
        """
        self.start.install()
        for signum in (signal.SIGHUP, signal.SIGHUP, signal.SIGUSR1):
            self.signals.deliver(signum)
        self.assertEqual(self.start.take(signal.SIGHUP), 2)
        self.assertEqual(self.start.take(signal.SIGHUP), 0)
        self.assertEqual(self.start.take(signal.SIGUSR1), 1)

    def test_handler_of_someone_else_kept(self) -> None:
        """A signal that already has a handler keeps it."""
        self.signals.handlers[signal.SIGUSR1] = twistd_rotate
        self.start.install()
        self.assertIs(self.signals.handlers[signal.SIGUSR1], twistd_rotate)
        self.assertTrue(self.start.holds(signal.SIGHUP))

    def test_sigint_noted_and_given_back(self) -> None:
        """
        SIGINT, at Python's handler (KeyboardInterrupt, a traceback) or
        inherited ignored (an agent started with ``&`` from a script), is
        noted too, and given Python's handler back, never the ignored
        disposition: the reactor takes SIGINT only from that handler, so
        ``kill -INT`` stops the agent whatever it inherited (inherited
        ignored, it did nothing).
        """
        for inherited in (signal.default_int_handler, signal.SIG_IGN):
            self.signals.handlers[signal.SIGINT] = inherited
            start = StartSignals(self.signals.signal, self.signals.getsignal)
            start.install()
            self.signals.deliver(signal.SIGINT)
            self.assertEqual(start.take(signal.SIGINT), 1)
            start.release(signal.SIGINT)
            self.assertIs(
                self.signals.handlers[signal.SIGINT], signal.default_int_handler
            )

    def test_other_signals_inherited_ignored_kept(self) -> None:
        """
        Another signal inherited ignored stays ignored (``nohup``'s SIGHUP
        is the operator's choice); only SIGINT, a stop signal, is taken.
        """
        self.signals.handlers[signal.SIGHUP] = signal.SIG_IGN
        self.start.install()
        self.assertIs(self.signals.handlers[signal.SIGHUP], signal.SIG_IGN)

    def test_sighup_installed_last(self) -> None:
        """
        By the time SIGHUP has a handler, every other signal noted has
        ours: a process that handles SIGHUP is safe from a SIGINT. (SIGHUP
        came first and SIGINT last: a SIGINT sent once SIGHUP was handled
        could still raise KeyboardInterrupt, a traceback.)
        """
        self.signals.handlers[signal.SIGINT] = signal.default_int_handler
        others = [signum for signum in StartSignals.SIGNALS if signum != signal.SIGHUP]
        when_sighup: list[list[Any]] = []

        def setsignal(signum: int, handler: Any) -> Any:
            if signum == signal.SIGHUP:
                when_sighup.append([self.signals.getsignal(other) for other in others])
            return self.signals.signal(signum, handler)

        start = StartSignals(setsignal, self.signals.getsignal)
        start.install()
        self.assertEqual(when_sighup, [[start.noted] * len(others)])

    def test_release(self) -> None:
        """
        release() gives SIGUSR1 its default action back, so that twistd,
        which takes it only then, can reopen its log file on it.
        """
        self.start.install()
        self.start.release(signal.SIGUSR1)
        self.assertEqual(self.signals.handlers[signal.SIGUSR1], signal.SIG_DFL)
        self.signals.handlers[signal.SIGUSR1] = twistd_rotate
        self.start.release(signal.SIGUSR1)
        self.assertIs(self.signals.handlers[signal.SIGUSR1], twistd_rotate)


class UnusedSignalsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.signals = _Signals()
        self.events: list[dict[str, Any]] = []
        self.patch(signals, "log", Logger(observer=self.events.append))
        self.start = StartSignals(self.signals.signal, self.signals.getsignal)
        self.start.install()

    def service(self, *unused: tuple[int, str]) -> UnusedSignals:
        service = UnusedSignals(
            _Reactor(),
            unused,
            self.start,
            self.signals.signal,
            self.signals.getsignal,
        )
        service.startService()
        return service

    def lines(self) -> list[str]:
        return [e["log_format"].format(**e) for e in self.events if "log_format" in e]

    def test_sigusr1_ignored_and_logged(self) -> None:
        """SIGUSR1 while running: ignored, one line at info each, saying why."""
        service = self.service((signal.SIGUSR1, WHY_USR1))
        self.signals.deliver(signal.SIGUSR1)
        self.signals.deliver(signal.SIGUSR1)
        self.assertEqual(service.ignored, {signal.SIGUSR1: 2})
        self.assertEqual(self.lines(), [f"SIGUSR1 ignored: {WHY_USR1}"] * 2)

    def test_early_ones_logged(self) -> None:
        """Those noted while the agent started are logged when it starts."""
        self.signals.deliver(signal.SIGUSR1)
        self.service((signal.SIGUSR1, WHY_USR1))
        self.assertEqual(
            self.lines(), [f"SIGUSR1 (1 during start-up) ignored: {WHY_USR1}"]
        )

    def test_twistd_log_rotation_left_alone(self) -> None:
        """
        Where twistd took SIGUSR1 to reopen its log file (--logfile), its
        handler stays.
        """
        self.start.release(signal.SIGUSR1)
        self.signals.handlers[signal.SIGUSR1] = twistd_rotate
        service = self.service((signal.SIGUSR1, WHY_USR1))
        self.assertIs(self.signals.handlers[signal.SIGUSR1], twistd_rotate)
        self.assertEqual(service.ignored, {})

    def test_sighup_without_config(self) -> None:
        """Without --config, SIGHUP is ignored the same way."""
        self.service((signal.SIGHUP, WHY_NO_CONFIG))
        self.signals.deliver(signal.SIGHUP)
        self.assertEqual(self.lines(), [f"SIGHUP ignored: {WHY_NO_CONFIG}"])


class EarlyReloadTests(SynchronousTestCase):
    def test_sighup_during_start_up_reloads_once_started(self) -> None:
        """
        A SIGHUP noted while the agent started makes one reload when the
        reloader starts: the file may have changed after it was read.
        """
        monitor, clock, _, _ = make_monitor([])
        for known in BASE.instances:
            monitor.add_instance(known)
        events: list[dict[str, Any]] = []
        self.patch(reload_module, "log", Logger(observer=events.append))
        fake = _Signals()
        start = StartSignals(fake.signal, fake.getsignal)
        start.install()
        fake.deliver(signal.SIGHUP)
        fake.deliver(signal.SIGHUP)
        threads = FakeThreads()
        newer = attr.evolve(BASE, instances=(instance("z", 7100),))
        reloader = ConfigReloader(
            clock,
            lambda: newer,
            monitor,
            BASE,
            lambda n: None,
            install_signal=False,
            run_in_thread=threads,
            start_signals=start,
        )
        reloader.startService()
        threads.finish()
        self.assertEqual((reloader.reloads, reloader.config), (1, newer))
        self.assertTrue(
            [e for e in events if "during start-up" in e.get("log_format", "")]
        )
        self.assertEqual(start.take(signal.SIGHUP), 0)


class OptionsTests(SynchronousTestCase):
    def test_installed_from_post_options_only(self) -> None:
        """
        twistd's option handling installs the start-up handlers once the
        options are valid, not for --help.
        """
        fake = _Signals()
        start = StartSignals(fake.signal, fake.getsignal)
        with self.assertRaises(SystemExit):
            Options(Clock(), start).parseOptions(["--help"])
        self.assertEqual(fake.handlers, {})
        Options(Clock(), start).parseOptions(["--redis", "127.0.0.1:6379"])
        self.assertEqual(set(fake.handlers), set(StartSignals.SIGNALS), fake.handlers)

"""
The stop's backstop (`sentinel.backstop`): a stop the reactor thread gets
to late still ends the process within 5 s of the signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

from twisted.trial.unittest import SynchronousTestCase, TestCase

from sentinel.backstop import (
    BACKSTOP_AFTER,
    BACKSTOP_CLOSE,
    BACKSTOP_GRACE,
    LEAVE_SIGNAL,
    StopBackstop,
)


class _Thread:
    """The backstop's thread and what it does, run by hand."""

    def __init__(self, keeps: bool = False, with_zookeeper: bool = True) -> None:
        self.now = 100.0
        self.done: list[tuple[Any, ...]] = []
        self.keeps = keeps
        self.targets: list[Callable[[], None]] = []
        self.backstop = StopBackstop(
            self.close if with_zookeeper else None,
            self.keeps_session,
            start_thread=self.targets.append,
            monotonic=lambda: self.now,
            sleep=self.sleep,
            kill=lambda pid, signum: self.done.append(("kill", pid, signum)),
            setsignal=lambda signum, handler: self.done.append(
                ("signal", signum, handler)
            ),
            exit=lambda status: self.done.append(("exit", status)),
            say=lambda line: self.done.append(("say", line)),
        )
        self.backstop.startService()

    def close(self, timeout: float) -> None:
        self.done.append(("close", timeout))

    def keeps_session(self, leaving: bool) -> bool:
        self.done.append(("keeps?", leaving))
        return self.keeps

    def sleep(self, seconds: float) -> None:
        self.done.append(("sleep", round(seconds, 3)))
        self.now += seconds

    def run(self) -> None:
        [target] = self.targets
        target()


class BackstopTests(SynchronousTestCase):
    def test_late_stop_closes_the_session_and_raises_the_signal(self) -> None:
        """
        A SIGTERM whose stop has not ended the process `BACKSTOP_AFTER` s
        after it (the thread woke 0.5 s late: the rest of the wait) closes
        the session from the backstop's thread, then has the main thread
        raise SIGTERM again by its default action (status 143); should
        that not end the process, it exits 143 itself.
        """
        thread = _Thread()
        thread.backstop.signalled(signal.SIGTERM)
        thread.backstop.signalled(signal.SIGINT)  # Only the first counts.
        thread.now += 0.5
        self.assertFalse(thread.backstop.overdue)
        thread.run()
        self.assertTrue(thread.backstop.overdue)
        self.assertEqual(
            thread.done,
            [
                ("sleep", BACKSTOP_AFTER - 0.5),
                ("keeps?", False),
                (
                    "say",
                    f"sentinel: the stop has not ended the process {BACKSTOP_AFTER}"
                    " s after SIGTERM: ending it now, closing the ZooKeeper session",
                ),
                ("close", BACKSTOP_CLOSE),
                ("kill", os.getpid(), signal.SIGTERM),
                ("sleep", BACKSTOP_GRACE),
                ("exit", 128 + signal.SIGTERM),
            ],
        )
        thread.done.clear()
        thread.backstop.raise_again(signal.SIGTERM)
        self.assertEqual(
            thread.done,
            [
                ("signal", signal.SIGTERM, signal.SIG_DFL),
                ("kill", os.getpid(), signal.SIGTERM),
            ],
        )

    def test_session_kept_for_the_next_process(self) -> None:
        """
        A session the stop leaves open (a state_dir's hand-over) is not
        closed by the backstop either: the nodes wait for the next
        process, as after a crash. Without ZooKeeper nothing is closed.
        """
        thread = _Thread(keeps=True)
        thread.backstop.signalled(signal.SIGTERM)
        thread.run()
        self.assertNotIn(("close", BACKSTOP_CLOSE), thread.done)
        self.assertIn(("kill", os.getpid(), signal.SIGTERM), thread.done)
        alone = _Thread(with_zookeeper=False)
        alone.backstop.signalled(signal.SIGINT)
        alone.run()
        self.assertEqual(alone.done[0], ("sleep", BACKSTOP_AFTER))
        self.assertEqual(alone.done[2], ("kill", os.getpid(), signal.SIGINT))

    def test_late_leave_closes_and_exits_0(self) -> None:
        """
        A late leave (SIGUSR2) closes the session, state_dir or not (the
        deliberate deregistration), and exits 0 as its stop does.
        """
        thread = _Thread()
        thread.backstop.signalled(LEAVE_SIGNAL)
        thread.run()
        self.assertEqual(
            thread.done,
            [
                ("sleep", BACKSTOP_AFTER),
                ("keeps?", True),
                (
                    "say",
                    f"sentinel: the stop has not ended the process {BACKSTOP_AFTER}"
                    " s after SIGUSR2: ending it now, closing the ZooKeeper session",
                ),
                ("close", BACKSTOP_CLOSE),
                ("exit", 0),
            ],
        )


# A reactor whose thread is held for 30 s (a turn of Python, as a loaded
# agent's is), StopSignals and the backstop as the agent has them.
_HELD = textwrap.dedent(
    """
    import sys, time
    from twisted.internet import reactor
    from sentinel.backstop import StopBackstop
    from sentinel.shutdown import StopSignals

    services = [StopSignals(reactor, None)]
    if sys.argv[1] == "backstop":
        services.append(StopBackstop(None, lambda leaving: False))
        services[0] = StopSignals(reactor, None, backstop=services[1])
    for service in services:
        service.startService()

    def held():
        print("held", flush=True)
        until = time.monotonic() + 30
        while time.monotonic() < until:
            pass

    reactor.callWhenRunning(reactor.callLater, 0.1, held)
    reactor.run()
    """
)


class HeldReactorTests(TestCase):
    def stopped_after(self, mode: str) -> tuple[float, int | None]:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        child = subprocess.Popen(
            [sys.executable, "-c", _HELD, mode],
            stdout=subprocess.PIPE,
            env=env,
        )
        self.addCleanup(child.wait)
        self.addCleanup(child.kill)
        assert child.stdout is not None
        self.assertEqual(child.stdout.readline(), b"held\n")
        child.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        try:
            status: int | None = child.wait(BACKSTOP_AFTER + 1.5)
        except subprocess.TimeoutExpired:
            status = None
        return time.monotonic() - sent, status

    def test_sigterm_ends_a_held_reactor_within_5_s(self) -> None:
        """
        A real process whose reactor thread is held for 30 s by Python
        work gets SIGTERM: with the backstop it dies by SIGTERM (status
        143) within 5 s. (Without it, it ran the 30 s: checked by hand,
        mode ``none``; not here, to keep the suite short.)
        """
        took, status = self.stopped_after("backstop")
        self.assertEqual(status, -signal.SIGTERM)
        self.assertLess(took, 5.0)
        self.assertGreater(took, BACKSTOP_AFTER - 0.1)

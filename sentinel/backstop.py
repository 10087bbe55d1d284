"""
The stop's backstop: the process ends within 5 s of a stop signal
(DESIGN.md section 5), however late the reactor thread gets to the stop.

Each step of a stop is bounded, counted from the signal
(`sentinel.stopping`), but the stop begins only once the reactor thread
has finished the turn the signal came in and the turn after it. At
thousands of instances on a loaded machine that was measured at up to
5 s (a group member at 3,000 instances, load 15-20: its stop began 5 s
after the SIGTERM, and the process exited at 6.40 s); a bug that holds
the reactor thread would hold the stop for good. So the first stop signal
also wakes a thread of our own (`StopBackstop`, started with the agent and
idle until then), which, if the process still runs `BACKSTOP_AFTER`
seconds after the signal, ends it as the stop would have:

- the ZooKeeper session is closed from that thread (`BACKSTOP_CLOSE` at
  most; kazoo's calls are thread-safe), which deletes every ephemeral node
  of this agent at once: an agent gone leaves no node up for a session
  timeout; but a session the stop leaves open (a SIGTERM with a state_dir,
  `sentinel.handoff`; or one a newer process took over) stays open, as
  after a crash: the nodes wait for the next process or the expiry;
- then the signal is raised again with its default action by the main
  thread, which runs Python's signal handlers between any two bytecodes
  of a turn however long (`raise_again`): the process ends as twistd
  makes it end after a stop (SIGTERM: status 143, a clean stop to init
  systems);
- one line on standard error says so first (not in the log: its writer
  may be the reactor thread's, late too);
- if the main thread does not get to it (held in a call of C) within
  `BACKSTOP_GRACE`, ``os._exit(128 + signal)``.

A late leave (``SIGUSR2``, `LEAVE_SIGNAL`) closes the
session whatever the state_dir (the deliberate deregistration) and exits
0, as its stop does; the state file is left (a next process finds its
session closed and opens another).

A stop that ends in time ends the process first (the thread is a daemon):
the backstop acts only on a stop already past its own bounds
(`sentinel.stopping.STOP_BUDGET`) and the rest of the process's end.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service

# Deregister now: delete the nodes, close the session, exit 0
# (`sentinel.shutdown`).
LEAVE_SIGNAL = signal.SIGUSR2

# Seconds from the stop signal to the backstop: past the stop's budget
# (4.0 s) and the rest of the process's end (0.04 s measured; 0.3 s at a
# load of 30), and early enough for its own steps to end before 5 s.
BACKSTOP_AFTER = 4.5
# The session's close asked from the backstop's thread: one request, and a
# connection thread to end.
BACKSTOP_CLOSE = 0.25
# For the main thread to raise the signal again before `os._exit`.
BACKSTOP_GRACE = 0.15


def _stderr(line: str) -> None:
    # Not the log: its writer may be held by the reactor thread, late.
    try:
        os.write(2, (line + "\n").encode())
    except OSError:
        pass


def _daemon(target: Callable[[], None]) -> None:
    threading.Thread(target=target, name="stop-backstop", daemon=True).start()


class StopBackstop(Service):
    """
    The process ended `BACKSTOP_AFTER` s after a stop signal (module
    docstring). `close_session` closes the ZooKeeper session from this
    thread within the seconds given (None without ZooKeeper);
    `keeps_session` says, from this thread, whether the stop leaves the
    session open, for a leave (True) or not.
    """

    def __init__(
        self,
        close_session: Callable[[float], None] | None,
        keeps_session: Callable[[bool], bool],
        *,
        start_thread: Callable[[Callable[[], None]], None] = _daemon,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        kill: Callable[[int, int], None] = os.kill,
        setsignal: Callable[[int, Any], Any] = signal.signal,
        exit: Callable[[int], None] = os._exit,
        say: Callable[[str], None] = _stderr,
    ) -> None:
        self._close_session = close_session
        self._keeps_session = keeps_session
        self._start_thread = start_thread
        self._monotonic = monotonic
        self._sleep = sleep
        self._kill = kill
        self._setsignal = setsignal
        self._exit = exit
        self._say = say
        self._woken = threading.Event()
        self._signalled_at = 0.0
        self._signum: int | None = None
        # Set by the backstop's thread once it ends the process.
        self.overdue = False

    def startService(self) -> None:
        super().startService()
        self._start_thread(self._watch)

    def signalled(self, signum: int) -> None:
        """
        The first stop signal, `signum`, came now. Called from its handler
        on the main thread: two values stored and an event set, no more.
        """
        if self._signum is None:
            self._signalled_at = self._monotonic()
            self._signum = signum
            self._woken.set()

    def raise_again(self, signum: int) -> None:
        """From a stop signal's handler once `overdue`: end by its default."""
        self._setsignal(signum, signal.SIG_DFL)
        self._kill(os.getpid(), signum)

    def _watch(self) -> None:
        self._woken.wait()
        signum = self._signum
        assert signum is not None
        left = self._signalled_at + BACKSTOP_AFTER - self._monotonic()
        if left > 0:
            self._sleep(left)
        # Still running: the stop is late.
        leaving = signum == LEAVE_SIGNAL
        closing = self._close_session is not None and not self._keeps_session(leaving)
        self._say(
            f"sentinel: the stop has not ended the process {BACKSTOP_AFTER} s after "
            f"{signal.Signals(signum).name}: ending it now"
            + (", closing the ZooKeeper session" if closing else "")
        )
        if closing:
            assert self._close_session is not None
            self._close_session(BACKSTOP_CLOSE)
        if leaving:
            self._exit(0)
            return
        self.overdue = True
        self._kill(os.getpid(), signum)
        self._sleep(BACKSTOP_GRACE)
        self._exit(128 + signum)

"""
Stopping the agent for good, with an exit status that says why, and the
signal that deregisters it at once.

twistd has no way to set the exit status: once the reactor has stopped it
removes its pid file, stops logging and returns, and the process exits 0
(or re-raises the signal that stopped it: 143 for SIGTERM, which init
systems take for a clean stop). So a fatal condition found while running
(a live twin holding this agent's node) stops the reactor, which stops
every service as SIGTERM does (nodes deleted, session closed), and an
``atexit`` handler, the last code Python runs after twistd is done, ends
the process with the status. The only handler it skips, ``logging``'s
(registered when kazoo imports it), has nothing to flush: kazoo's records
go to Twisted's log as they come.

With a state_dir, SIGTERM leaves the ZooKeeper session, and so every
node, to the next process (`sentinel.handoff`). ``SIGUSR2`` is the
deliberate leave: the agent deletes its nodes, closes its session, removes
its state file and exits with status 0 (init systems do not restart a
clean exit); without a state_dir it is a stop like SIGTERM's, status 0.
Each stop signal is acted on once: one during a stop is logged once and
ignored (`StopSignals`).

A leave's process ends as SIGTERM's does, as soon as twistd is done:
twistd ends a SIGTERM stop by raising the signal again, before Python's
own end, but returns after a leave, and Python then tears down every
object of the agent (thousands of connections, probes and nodes), with
no other thread let run: not the backstop's (`sentinel.backstop`),
whose line never came when a group's leave at 3,000 instances ended
5.37 s after its signal. That teardown took 0.2 s after the last exit
handler at 3,000 instances alone (load 16), more the more objects and
the busier the machine. So once the reactor has stopped after a leave,
an ``atexit`` handler ends the process with status 0 (`_exit`), the
lines queued for standard output written first
(`sentinel.output.finish`). One that came while the agent started
(`sentinel.signals.StartSignals` noted it) is acted on once the reactor
runs, as one sent then.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

from twisted.application.service import Service
from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger

from sentinel.backstop import LEAVE_SIGNAL as LEAVE_SIGNAL
from sentinel.backstop import StopBackstop
from sentinel.output import finish
from sentinel.signals import StartSignals

log = Logger()

# The exit status when another live agent uses this agent's id: the
# configuration is wrong (sysexits' EX_CONFIG), and restarting will not fix
# it (contrib/sentinel.service lists it in RestartPreventExitStatus=).
EXIT_TWIN = 78


# The signals that stop the agent: twistd's reactor stops on these two.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop(reactor: Any) -> None:
    """Stop the reactor (twistd then exits with status 0), unless stopping."""
    if reactor.running:
        try:
            reactor.stop()
        except ReactorNotRunning:
            pass  # A stop is on its way already.


def stop_with_status(reactor: Any, status: int) -> None:
    """Stop the reactor; once twistd has finished, exit with `status`."""
    exit_when_done(status)
    stop(reactor)


def exit_when_done(status: int) -> None:
    """Once twistd has finished, exit with `status` (module docstring)."""
    atexit.register(_exit, status)


class StopSignals(Service):
    """
    The signals that stop the agent, each acted on once.

    `LEAVE_SIGNAL` makes the publisher deregister at its stop (`leave`,
    None without ZooKeeper), then stops the agent. SIGTERM and SIGINT are
    the reactor's (twistd re-raises the one that stopped it, for the exit
    status); a second one during the stop made the reactor's handler stop
    a reactor already stopping, logged as critical with a traceback. So
    once the reactor's handlers are in place, each is wrapped: the first
    stop signal goes on to it, and any stop signal during a stop (ours,
    SIGUSR2's, or one a twin or a newer process started) is logged once at
    info and ignored. The handlers stay through the stop (a restored
    default action would end it early) until the process ends.

    Those `start` noted while the agent started are handled the same way
    once the reactor runs (a leave first: it is the deliberate one). Just
    before, SIGTERM and SIGINT get their handlers before `start`'s back:
    the reactor takes SIGINT only from Python's own handler.

    The first stop signal's time is told to `signalled`, from the handler
    itself (a float stored, nothing else): the stop's bounds count from
    the signal, not from the publisher's stop, which came 0.35 s after it
    at a load of 17 (the monitor stopped first, 2,000 checks) and 2.3 s
    after it at 19 (the reactor busy when the signal came): the 4 s of
    the publisher's stop then ended 6.4 s after the signal.
    """

    def __init__(
        self,
        reactor: Any,
        leave: Callable[[], None] | None,
        start: StartSignals | None = None,
        setsignal: Callable[[int, Any], Any] = signal.signal,
        getsignal: Callable[[int], Any] = signal.getsignal,
        signalled: Callable[[float], None] = lambda at: None,
        backstop: StopBackstop | None = None,
        exit_with: Callable[[int], None] = exit_when_done,
    ) -> None:
        self._reactor = reactor
        self._exit_with = exit_with
        # Whether a leave was acted on: its process ends at once after the
        # reactor has stopped (module docstring).
        self.left = False
        self._backstop = backstop
        self._leave = leave
        self._start = start
        self._signalled = signalled
        self._setsignal = setsignal
        self._getsignal = getsignal
        # Each signal handled and its handler before ours.
        self._previous: dict[int, Any] = {}
        self.stopping = False
        self._told = False

    def startService(self) -> None:
        super().startService()
        self._previous[LEAVE_SIGNAL] = self._setsignal(LEAVE_SIGNAL, self._received)
        if self._start is not None:
            self._reactor.addSystemEventTrigger(
                "before", "startup", self._give_back_stop_signals
            )
        self._reactor.callWhenRunning(self._wrap_stop_signals)
        self._reactor.addSystemEventTrigger("before", "shutdown", self._shutting_down)
        self._reactor.addSystemEventTrigger("after", "shutdown", self._shut_down)

    def uninstall(self) -> None:
        """Give every signal handled back its handler before ours (tests)."""
        for signum, previous in self._previous.items():
            self._setsignal(signum, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()

    def _give_back_stop_signals(self) -> None:
        # Just before the reactor installs its handlers.
        assert self._start is not None
        for signum in STOP_SIGNALS:
            self._start.release(signum)

    def _wrap_stop_signals(self) -> None:
        for signum in STOP_SIGNALS:
            previous = self._getsignal(signum)
            if callable(previous) and previous is not signal.default_int_handler:
                self._previous[signum] = previous
                self._setsignal(signum, self._stop_received)
        start = self._start
        if start is None:
            return
        if start.take(LEAVE_SIGNAL):
            log.info("SIGUSR2 during start-up")
            self.leave()
        for signum in STOP_SIGNALS:
            if start.take(signum):
                log.info(
                    "{signal} during start-up: stopping now",
                    signal=signal.Signals(signum).name,
                )
                self._stop(signum)

    def _shutting_down(self) -> None:
        self.stopping = True

    def _shut_down(self) -> None:
        # The reactor has stopped: after a leave, nothing is left to do but
        # twistd's own end.
        if self.left:
            self._exit_with(0)

    # Signal handlers: only hand over to the reactor's thread, or pass on.

    def _received(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            self._signalled(self._reactor.seconds())
            self._back(signum)
        self._reactor.callFromThread(self.leave)

    def _back(self, signum: int) -> None:
        # The first stop signal: the backstop's time counts from it.
        if self._backstop is not None:
            self._backstop.signalled(signum)

    def _stop_received(self, signum: int, frame: FrameType | None) -> None:
        if self._backstop is not None and self._backstop.overdue:
            # The backstop's own signal: the stop is late, end now.
            self._backstop.raise_again(signum)
            return
        if self.stopping:
            self._reactor.callFromThread(self._already_stopping, signum)
            return
        self.stopping = True
        self._signalled(self._reactor.seconds())
        self._back(signum)
        # Not in this handler: the reactor's logs ("Received SIGTERM"), and a
        # log line written from a signal handler waits for good on the log
        # output's lock if the code the signal interrupted holds it.
        self._reactor.callFromThread(self._previous[signum], signum, None)

    def _stop(self, signum: int) -> None:
        """Stop for `signum` now, as its handler does."""
        if signum in self._previous:
            self._stop_received(signum, None)
        elif self.stopping:
            self._already_stopping(signum)
        else:
            self.stopping = True
            self._signalled(self._reactor.seconds())
            self._back(signum)
            stop(self._reactor)

    def leave(self) -> None:
        """Deregister now and stop the agent."""
        if self.stopping:
            self._already_stopping(LEAVE_SIGNAL)
            return
        self.stopping = True
        self.left = True
        log.info(
            "SIGUSR2: leaving: deleting this agent's nodes (in a group, "
            "once the other members took them over), closing its ZooKeeper "
            "session (or leaving it open for their takeovers) and removing "
            "its state file"
        )
        if self._leave is not None:
            self._leave()
        stop(self._reactor)

    def _already_stopping(self, signum: int) -> None:
        if self._told:
            return
        self._told = True
        log.info(
            "{signal}: already stopping; ignored (this line is not repeated)",
            signal=signal.Signals(signum).name,
        )


def _exit(status: int) -> None:
    # Python's end would have let the lines queued be written.
    finish()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)

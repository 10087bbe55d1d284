"""
Signals that would otherwise end the agent without a word, or not as it
should end: those that come while it starts, and those it has no use for.

Python leaves SIGHUP, SIGUSR1, SIGUSR2 and SIGTERM at their default action,
which ends the process, and SIGINT raises KeyboardInterrupt. The agent's
own handlers (`sentinel.reload`'s SIGHUP, `sentinel.shutdown`'s SIGUSR2,
the reactor's SIGTERM and SIGINT) exist once its services start, about
0.5 s after its options are read; a signal sent before ended the agent
with no stop and no log line (``systemctl reload`` just after a start:
status -1; SIGUSR2, the deliberate leave: status -12, its nodes and state
file kept, and the init system restarted it to reattach to them), or with
a KeyboardInterrupt traceback for SIGINT. SIGUSR1, which many log
rotations send, ended it at any time. So:

- SIGINT inherited ignored (a background job of a script:
  ``sentinel-agent ... &``) is taken all the same: Twisted keeps an
  ignored SIGINT, and ``kill -INT`` did nothing.
- `StartSignals` is installed as soon as sentinel's own code runs for an
  agent that will start: the first thing ``sentinel-agent`` does, and
  ``twistd sentinel``'s `postOptions` (never for ``--help`` or
  ``--version``). It notes each of those signals until the agent's
  handlers take over, which then act on those noted: the reloader loads
  the config again for a SIGHUP (the file may have changed after it was
  read at start), and `sentinel.shutdown.StopSignals` leaves for a
  SIGUSR2 and stops for a SIGTERM or SIGINT, once the reactor runs, as it
  would for one sent then. Before that point only Python and Twisted are
  loading (the first second or so under twistd) and the default action
  stands.
- twistd reopens its log file on SIGUSR1 when it logs to one
  (``--logfile``), if it finds SIGUSR1 at its default action when it starts
  logging, just after `makeService`: so `makeService` gives SIGUSR1 back
  (`StartSignals.release`), and `UnusedSignals`, at the agent's start,
  takes it only where twistd did not: ignored, one line each time.
- Without ``--config`` there is nothing to reload: SIGHUP is ignored the
  same way.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from twisted.application.service import Service
from twisted.logger import Logger

log = Logger()

# What `UnusedSignals` says of each signal it ignores.
WHY_USR1 = (
    "the agent has no use for it (twistd reopens its log file on SIGUSR1 "
    "only when logging to one, with --logfile)"
)
WHY_NO_CONFIG = "there is no --config file to reload"


class StartSignals:
    """
    The signals that come while the agent starts, noted, not acted on (see
    the module docstring).
    """

    # SIGHUP last: a process with a handler for SIGHUP (its SigCgt in
    # /proc) has ours for every one of them, SIGINT included, whose
    # default handler is Python's from its start and so is no sign.
    SIGNALS = (
        signal.SIGINT,
        signal.SIGTERM,
        signal.SIGUSR2,
        signal.SIGUSR1,
        signal.SIGHUP,
    )

    def __init__(
        self,
        setsignal: Callable[[int, Any], Any] = signal.signal,
        getsignal: Callable[[int], Any] = signal.getsignal,
    ) -> None:
        self._setsignal = setsignal
        self._getsignal = getsignal
        # Each signal noted, and its handler before ours.
        self._installed: dict[int, Any] = {}
        # How many of each signal came while noted and not yet taken.
        self._received: dict[int, int] = {}

    def install(self) -> None:
        """
        Note `SIGNALS` from now on, where at Python's default action, and
        SIGINT inherited ignored too.
        """
        for signum in self.SIGNALS:
            previous = self._getsignal(signum)
            if signum in self._installed:
                continue
            if signum == signal.SIGINT and previous == signal.SIG_IGN:
                # A script's background job (`sentinel-agent &`) inherits
                # SIGINT ignored, and the reactor takes SIGINT only from
                # Python's handler: `kill -INT` then did nothing. SIGINT
                # stops the agent whatever it inherited, so ours is
                # followed by Python's handler, as at an ordinary start.
                self._setsignal(signum, self.noted)
                self._installed[signum] = signal.default_int_handler
            elif previous in (signal.SIG_DFL, signal.default_int_handler, None):
                self._setsignal(signum, self.noted)
                self._installed[signum] = previous

    def noted(self, signum: int, frame: FrameType | None) -> None:
        """The handler: a count, nothing else (the reactor may not run yet)."""
        self._received[signum] = self._received.get(signum, 0) + 1

    def holds(self, signum: int) -> bool:
        """Whether `signum`'s handler is still ours."""
        return bool(self._getsignal(signum) == self.noted)

    def release(self, signum: int) -> None:
        """Give `signum` its handler before ours back, if ours has it."""
        if self.holds(signum):
            previous = self._installed.pop(signum)
            self._setsignal(signum, signal.SIG_DFL if previous is None else previous)

    def uninstall(self) -> None:
        """Give every signal noted its handler before ours back (tests)."""
        for signum in list(self._installed):
            self.release(signum)

    def take(self, signum: int) -> int:
        """How many `signum` came since installed (or last taken)."""
        return self._received.pop(signum, 0)


# This process's: installed by the entry points, read by the services.
START_SIGNALS = StartSignals()


class UnusedSignals(Service):
    """
    Signals the agent has no use for, at their default action (or still
    noted by `StartSignals`) when it starts: ignored, with one log line
    each time one comes, as are those noted while it started. The
    handlers stay through the stop, until the process ends.
    """

    def __init__(
        self,
        reactor: Any,
        unused: Iterable[tuple[int, str]],
        start: StartSignals | None = None,
        setsignal: Callable[[int, Any], Any] = signal.signal,
        getsignal: Callable[[int], Any] = signal.getsignal,
    ) -> None:
        """@param unused: each signal, and why the agent does not use it."""
        self._reactor = reactor
        self._why = dict(unused)
        self._start = start
        self._setsignal = setsignal
        self._getsignal = getsignal
        self.ignored: dict[int, int] = {}

    def startService(self) -> None:
        super().startService()
        for signum in self._why:
            current = self._getsignal(signum)
            ours = self._start is not None and self._start.holds(signum)
            if current in (signal.SIG_DFL, None) or ours:
                self._setsignal(signum, self._received)
            if self._start is not None and (early := self._start.take(signum)):
                self._ignore(signum, early, f" ({early} during start-up)")

    def _received(self, signum: int, frame: FrameType | None) -> None:
        # A signal handler: hand over to the reactor's thread.
        self._reactor.callFromThread(self._ignore, signum, 1, "")

    def _ignore(self, signum: int, count: int, early: str) -> None:
        self.ignored[signum] = self.ignored.get(signum, 0) + count
        log.info(
            "{signal}{early} ignored: {why}",
            signal=signal.Signals(signum).name,
            count=count,
            early=early,
            why=self._why[signum],
        )

"""
Signals that would otherwise end the agent without a word: a SIGHUP that
comes while it starts, and the signals it has no use for.

Python leaves SIGHUP and SIGUSR1 at their default action, which ends the
process: no log line, no stop, its nodes left until the session expires.
The agent's own SIGHUP handler (`sentinel.reload`) exists once its
services start, about 0.5 s after its options are read; a SIGHUP sent
before (``systemctl reload`` just after a start) ended the agent, status
-1 and an empty log. SIGUSR1, which many log rotations send, ended it at
any time. So:

- `StartSignals` is installed as soon as sentinel's own code runs for an
  agent that will start: the first thing ``sentinel-agent`` does, and
  ``twistd sentinel``'s `postOptions` (never for ``--help`` or
  ``--version``). It notes each SIGHUP and SIGUSR1 until the agent's
  handlers take over; the reloader, once started, loads the config again
  for a SIGHUP noted (the file may have changed after it was read at
  start). Before that point only Python and Twisted are loading (the
  first second or so under twistd) and the default action stands.
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
    SIGHUP and SIGUSR1 noted, not acted on, while the agent starts (see
    the module docstring).
    """

    SIGNALS = (signal.SIGHUP, signal.SIGUSR1)

    def __init__(
        self,
        setsignal: Callable[[int, Any], Any] = signal.signal,
        getsignal: Callable[[int], Any] = signal.getsignal,
    ) -> None:
        self._setsignal = setsignal
        self._getsignal = getsignal
        self._installed: set[int] = set()
        # How many of each signal came while noted and not yet taken.
        self._received: dict[int, int] = {}

    def install(self) -> None:
        """Note SIGHUP and SIGUSR1 from now on, where at their default action."""
        for signum in self.SIGNALS:
            if signum not in self._installed and self._getsignal(signum) in (
                signal.SIG_DFL,
                None,
            ):
                self._setsignal(signum, self.noted)
                self._installed.add(signum)

    def noted(self, signum: int, frame: FrameType | None) -> None:
        """The handler: a count, nothing else (the reactor may not run yet)."""
        self._received[signum] = self._received.get(signum, 0) + 1

    def holds(self, signum: int) -> bool:
        """Whether `signum`'s handler is still ours."""
        return bool(self._getsignal(signum) == self.noted)

    def release(self, signum: int) -> None:
        """Give `signum` its default action back, if our handler has it."""
        if self.holds(signum):
            self._setsignal(signum, signal.SIG_DFL)
            self._installed.discard(signum)

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

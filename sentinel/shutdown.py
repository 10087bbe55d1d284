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
from twisted.logger import Logger

log = Logger()

# The exit status when another live agent uses this agent's id: the
# configuration is wrong (sysexits' EX_CONFIG), and restarting will not fix
# it (contrib/sentinel.service lists it in RestartPreventExitStatus=).
EXIT_TWIN = 78


# Deregister now: delete the nodes, close the session, exit 0.
LEAVE_SIGNAL = signal.SIGUSR2


def stop(reactor: Any) -> None:
    """Stop the reactor (twistd then exits with status 0)."""
    if reactor.running:
        reactor.stop()


def stop_with_status(reactor: Any, status: int) -> None:
    """Stop the reactor; once twistd has finished, exit with `status`."""
    atexit.register(_exit, status)
    stop(reactor)


class LeaveOnSignal(Service):
    """
    `LEAVE_SIGNAL` makes the publisher deregister at its stop (`leave`,
    None without ZooKeeper), then stops the agent.
    """

    def __init__(self, reactor: Any, leave: Callable[[], None] | None) -> None:
        self._reactor = reactor
        self._leave = leave
        self._previous: Any = None

    def startService(self) -> None:
        super().startService()
        self._previous = signal.signal(LEAVE_SIGNAL, self._received)

    def stopService(self) -> None:
        super().stopService()
        signal.signal(LEAVE_SIGNAL, self._previous or signal.SIG_DFL)

    def _received(self, signum: int, frame: FrameType | None) -> None:
        # A signal handler: hand over to the reactor's thread, nothing else.
        self._reactor.callFromThread(self.leave)

    def leave(self) -> None:
        """Deregister now and stop the agent."""
        log.info(
            "SIGUSR2: leaving: deleting this agent's nodes, closing its "
            "ZooKeeper session and removing its state file"
        )
        if self._leave is not None:
            self._leave()
        stop(self._reactor)


def _exit(status: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)

"""
Stopping the agent for good, with an exit status that says it failed.

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
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import Any

# The exit status when another live agent uses this agent's id: the
# configuration is wrong (sysexits' EX_CONFIG), and restarting will not fix
# it (contrib/sentinel.service lists it in RestartPreventExitStatus=).
EXIT_TWIN = 78


def stop_with_status(reactor: Any, status: int) -> None:
    """Stop the reactor; once twistd has finished, exit with `status`."""
    atexit.register(_exit, status)
    if reactor.running:
        reactor.stop()


def _exit(status: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)

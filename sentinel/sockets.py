"""
Connection attempts that found no socket to connect with: the agent's own
shortage, never a verdict on Redis.

A connect makes a socket first. With the process out of file descriptors
(EMFILE: its open-file limit; ENFILE: the system's) or the kernel out of
memory for a socket (ENOBUFS, ENOMEM), Twisted fails the attempt before
anything reaches the network, with ``ConnectBindError``. With every local
port in use towards that address (EADDRNOTAVAIL: thousands of connections,
or as many sockets in TIME_WAIT), ``connect`` itself fails at once, with a
plain ``ConnectError``. A name lookup that could not open its UDP socket
fails as a `sentinel.resolve.CannotResolve` that names the shortage.
Judged as a failed connect, a healthy instance whose connection had
dropped was published down for as long as the shortage lasted (measured:
19 s, ``connect: too many open files``, Redis fine). So such a check is
inconclusive, as one the agent was too late to judge (`sentinel.probe`):
it counts neither up nor down. Each is counted here (``sockets`` in
``/debug/stats``), and ``/healthz`` fails while they happen, saying how
many in how long. That clears by itself: once an attempt got a socket
after the last one that found none, and `HOLD` seconds passed without
another.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from twisted.internet.error import ConnectBindError, ConnectError
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

# What each error that leaves a connect without a socket says of the agent.
SHORTAGES = {
    errno.EMFILE: "out of file descriptors",
    errno.ENFILE: "out of file descriptors",
    errno.ENOBUFS: "out of memory for sockets",
    errno.ENOMEM: "out of memory for sockets",
    errno.EADDRNOTAVAIL: "out of local ports",
}
# Seconds /healthz keeps failing after the last attempt that found no
# socket, even if one got a socket since: a shortage at the edge of the
# limit would otherwise turn it on and off with every attempt.
HOLD = 10.0


def shortage_of(failure: Failure) -> int | None:
    """The errno of `failure` if it is a connect or a lookup that found no socket."""
    if not failure.check(ConnectError):
        # A lookup that found no socket to ask with (`sentinel.resolve`).
        code = getattr(failure.value, "shortage", None)
        return code if code in SHORTAGES else None
    code = getattr(failure.value, "osError", None)
    if failure.check(ConnectBindError):
        return code if code in SHORTAGES else None
    # A connect that had its socket: only a local port may have been short.
    return code if code == errno.EADDRNOTAVAIL else None


class SocketShortage:
    """The attempts that found no socket (module docstring)."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self.count = 0
        # The shortage going on, if any: since when, how many attempts it
        # cost, its last errno and when, and whether an attempt got a
        # socket after that.
        self._since: float | None = None
        self._recent = 0
        self._code = 0
        self._last_at = 0.0
        self._opened_since = False

    def ended(self, result: object) -> bool:
        """
        A connection attempt ended with `result` (a connection, or a
        `Failure`): whether it found no socket (counted, then).
        """
        if isinstance(result, Failure):
            code = shortage_of(result)
            if code is not None:
                self._lacked(code)
                return True
            if not result.check(ConnectError):
                return False  # Ended before a socket was asked for.
        self._opened_since = True
        return False

    def _lacked(self, code: int) -> None:
        now = self._clock.seconds()
        if not self._lasting(now):
            self._since = now
            self._recent = 0
        self.count += 1
        self._recent += 1
        self._code = code
        self._last_at = now
        self._opened_since = False

    def _lasting(self, now: float) -> bool:
        return self._since is not None and (
            not self._opened_since or now - self._last_at < HOLD
        )

    def unhealthy_reason(self) -> str | None:
        """``/healthz``'s reason while attempts find no socket, else None."""
        now = self._clock.seconds()
        if not self._lasting(now):
            return None
        assert self._since is not None
        return (
            f"{SHORTAGES[self._code]} ({self._recent} check(s) could not start a "
            f"connection in the last {max(1.0, now - self._since):.0f} s: "
            f"{os.strerror(self._code).lower()})"
        )

    def stats(self) -> dict[str, Any]:
        """``sockets`` in ``/debug/stats``."""
        return {
            "checks_without_socket": self.count,
            "last_error": os.strerror(self._code).lower() if self._code else None,
            "shortage_now": self.unhealthy_reason() is not None,
        }

"""
The epoll reactor's dispatch of ready sockets, without the legacy log
context around each one.

For every ready descriptor, Twisted's ``EPollReactor.doPoll`` goes through
``log.callWithLogger``: it asks the descriptor's ``logPrefix()``, builds a
dictionary, pushes it on a thread-local context stack (``callWithContext``,
three calls deep) and pops it again, all so that a legacy ``log.msg`` made
while the socket is read names its connection. The agent reads one socket
per check, thousands a second, and logs through ``twisted.logger``, which
never reads that context: measured at 3,000 instances, the wrappers were
about a tenth of the agent's CPU.

`lean_dispatch` replaces ``doIteration`` on the running epoll reactor with
the same poll and the same per-descriptor call (``_doReadOrWrite``, which
reads, writes and disconnects exactly as before, and logs what the
application raises), only without the context: an error that escapes it is
logged here, with the descriptor, as ``callWithLogger`` would. A legacy
``log.msg`` made while a socket is read no longer carries that socket's
prefix as its ``system``.

This is the only place the agent touches the reactor's private state
(``_poller``, ``_selectables``, ``_doReadOrWrite``), and only on the reactor
class it was written against: any other reactor is left as it is.
``tests/test_dispatch.py`` checks on a real epoll reactor that the
replacement still takes effect, so that an upgrade which renames what it
relies on is caught.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

log = Logger()


def lean_dispatch(
    reactor: Any,
    after_poll: Callable[[], None] | None = None,
    longest_wait: float | None = None,
) -> bool:
    """
    Dispatch `reactor`'s ready descriptors without the legacy log context
    (module docstring); True if it was installed. Only an
    ``EPollReactor`` with the attributes relied on is changed.
    `after_poll` is called after each poll, before the ready descriptors
    are handled and before the reactor runs any timer
    (`sentinel.clocksteps`); a poll waits at most `longest_wait` seconds,
    if given, however far the next timer is.
    """
    try:
        from twisted.internet.epollreactor import EPollReactor
    except ImportError:  # No epoll on this platform.
        return False
    if type(reactor) is not EPollReactor or not all(
        hasattr(reactor, name)
        for name in ("_poller", "_selectables", "_doReadOrWrite", "doIteration")
    ):
        return False
    poll = reactor._poller.poll
    selectables = reactor._selectables
    handle = reactor._doReadOrWrite

    def do_poll(timeout: float | None) -> None:
        # EPollReactor.doPoll, each descriptor handled without callWithLogger.
        if longest_wait is not None and (timeout is None or timeout > longest_wait):
            timeout = longest_wait
        if timeout is None:
            timeout = -1  # Wait indefinitely.
        try:
            events = poll(timeout, len(selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        if after_poll is not None:
            try:
                after_poll()
            except Exception:
                log.failure("after a poll")
        for fd, event in events:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            try:
                handle(selectable, fd, event)
            except Exception:
                log.failure("handling {descriptor} failed", descriptor=selectable)

    # An instance attribute: mainLoop looks doIteration up at every turn.
    reactor.doIteration = do_poll  # type: ignore[method-assign]
    return True

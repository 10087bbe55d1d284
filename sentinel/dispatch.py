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

A connection may also ask to be read directly (`read_directly`): a socket
that is only readable is then read here, and its bytes go straight to the
protocol's ``dataReceived``, without the four calls Twisted makes for every
read (``_doReadOrWrite``, ``doRead``, ``_dataReceived``, and the endpoint's
wrapper protocol, each only handing on). Its end is Twisted's: an error of
the socket, its close, or an exception from ``dataReceived`` disconnects it
as ``_doReadOrWrite`` would, with the same reason. The Redis connections
ask for it (`sentinel.protocol`): they read one reply per check, thousands
a second, and the four calls were about 5 % of the agent's instructions
per check.

A connection read directly whose write finds it reset or closed (Twisted's
``doWrite`` failing with ``ECONNRESET`` or ``EPIPE``) is read once more
before the loss is reported: what the peer wrote before it closed is still
in the socket, and Twisted would drop it unread. A Redis that is full
writes ``-ERR max number of clients reached`` at accept and closes; when
the connect completes in the same turn as that close, the check written
at once meets the reset, and Twisted's ``doWrite`` after ``doConnect``
(an empty send) reported the loss with the error unread: the check failed
with ``connection lost`` instead of the server's reason.

This is the only place the agent touches the reactor's private state
(``_poller``, ``_selectables``, ``_doReadOrWrite``,
``_disconnectSelectable``, which it replaces for that last read), and only
on the reactor class it was written against: any other reactor is left as
it is, and reads every connection its own way.
``tests/test_dispatch.py`` checks on a real epoll reactor that the
replacement still takes effect, so that an upgrade which renames what it
relies on is caught.

The other reactors twistd offers (``--reactor=poll|select|asyncio``) get
only the look after each poll that the lean dispatch makes
(`after_each_poll`, for `sentinel.clocksteps`): through ``doIteration``
on those Twisted's ``mainLoop`` drives, and through the asyncio reactor's
``_asyncioEventloop`` and ``_onTimer``, which the same tests check.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from select import EPOLLIN
from typing import Any

from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.logger import Logger

log = Logger()

# The attribute, on a transport read directly, that holds how to read it.
_DIRECT = "_sentinel_direct_read"


def read_directly(
    transport: Any, size: int, data_received: Callable[[bytes], object]
) -> None:
    """
    Have the lean dispatch read `transport` (Twisted's TCP transport) itself,
    at most `size` bytes at a time, and hand what it reads to
    `data_received` (module docstring). Harmless where the lean dispatch is
    not installed: the reactor reads the transport its own way.
    """
    setattr(transport, _DIRECT, (transport.socket.recv, size, data_received))


def stop_reading_directly(transport: Any) -> None:
    """
    Forget `read_directly` for `transport`, once its connection is lost
    (what it holds would keep the protocol and the transport in a cycle).
    """
    attributes = getattr(transport, "__dict__", None)
    if attributes is not None:
        attributes.pop(_DIRECT, None)


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
        for name in (
            "_poller",
            "_selectables",
            "_doReadOrWrite",
            "_disconnectSelectable",
            "doIteration",
        )
    ):
        return False
    poll = reactor._poller.poll
    selectables = reactor._selectables
    handle = reactor._doReadOrWrite
    # The class's own, however often this is installed.
    disconnect = EPollReactor._disconnectSelectable.__get__(reactor)

    def read_then_disconnect(selectable: Any, why: BaseException, isRead: bool) -> None:
        # Twisted's _doReadOrWrite disconnects through this. A write that
        # failed may leave the peer's last words unread (module docstring).
        if not isRead:
            direct = getattr(selectable, _DIRECT, None)
            if direct is not None:
                _read_once_more(selectable, direct)
        disconnect(selectable, why, isRead)

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
            if event == EPOLLIN:
                direct = getattr(selectable, _DIRECT, None)
                if direct is not None:
                    # What _doReadOrWrite, doRead and _dataReceived do for a
                    # readable TCP connection, inline: thousands a second.
                    recv, size, data_received = direct
                    why: BaseException
                    try:
                        data = recv(size)
                    except OSError as e:
                        if e.errno == errno.EAGAIN:
                            continue
                        why = CONNECTION_LOST
                    else:
                        if data:
                            try:
                                data_received(data)
                                continue
                            except Exception as e:
                                log.failure(
                                    "reading {descriptor} failed", descriptor=selectable
                                )
                                why = e
                        else:
                            why = CONNECTION_DONE
                    try:
                        disconnect(selectable, why, True)
                    except Exception:
                        log.failure(
                            "handling {descriptor} failed", descriptor=selectable
                        )
                    continue
            try:
                handle(selectable, fd, event)
            except Exception:
                log.failure("handling {descriptor} failed", descriptor=selectable)

    # Instance attributes: mainLoop looks doIteration up at every turn, and
    # _doReadOrWrite _disconnectSelectable at every disconnection.
    reactor.doIteration = do_poll  # type: ignore[method-assign]
    reactor._disconnectSelectable = read_then_disconnect  # type: ignore[method-assign,assignment]
    return True


def after_each_poll(
    reactor: Any, after_poll: Callable[[], None], longest_wait: float
) -> bool:
    """
    Call `after_poll` after each poll of a reactor `lean_dispatch` does not
    serve, before it runs any timer, and have a poll wait at most
    `longest_wait` seconds; True if it could be installed.

    A reactor driven by Twisted's ``mainLoop`` (``poll``, ``select``)
    polls and reads the ready sockets in one ``doIteration``:
    `after_poll` runs after that turn's reads rather than before them. The
    asyncio reactor runs its timers from a callback of the event loop,
    which the loop times by the monotonic clock: `after_poll` runs before
    each of them, and every `longest_wait` seconds of that clock besides,
    on the loop (after a step back of the wall clock, the timers'
    callback is as far away as the step). Any other reactor is left as it
    is: False.
    """
    loop = getattr(reactor, "_asyncioEventloop", None)
    if loop is not None and hasattr(reactor, "_onTimer"):
        return _after_asyncio_timers(reactor, loop, after_poll, longest_wait)
    iteration = getattr(reactor, "doIteration", None)
    if iteration is None or not hasattr(reactor, "mainLoop"):
        return False

    def do_iteration(timeout: float | None) -> None:
        if timeout is None or timeout > longest_wait:
            timeout = longest_wait
        iteration(timeout)
        _call_after_poll(after_poll)

    # An instance attribute: mainLoop looks doIteration up at every turn.
    reactor.doIteration = do_iteration
    return True


def _after_asyncio_timers(
    reactor: Any, loop: Any, after_poll: Callable[[], None], longest_wait: float
) -> bool:
    # `after_each_poll` for Twisted's asyncio reactor.
    on_timer = reactor._onTimer

    def timers_due() -> None:
        _call_after_poll(after_poll)
        on_timer()

    def every_while() -> None:
        _call_after_poll(after_poll)
        loop.call_later(longest_wait, every_while)

    # The reactor schedules its timers' callback by this attribute's name.
    reactor._onTimer = timers_due
    loop.call_later(longest_wait, every_while)
    return True


def _call_after_poll(after_poll: Callable[[], None]) -> None:
    try:
        after_poll()
    except Exception:
        log.failure("after a poll")


def _read_once_more(
    selectable: Any,
    direct: tuple[Callable[[int], bytes], int, Callable[[bytes], object]],
) -> None:
    """
    Hand what `selectable` (read directly) still holds to its protocol: one
    read, as a readable event would have had, before its loss is reported.
    """
    recv, size, data_received = direct
    try:
        data = recv(size)
    except OSError:
        return  # Nothing was left, or the socket is gone.
    if data:
        try:
            data_received(data)
        except Exception:
            log.failure("reading {descriptor} failed", descriptor=selectable)

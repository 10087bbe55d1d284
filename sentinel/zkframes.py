"""
What kazoo reads from ZooKeeper, fenced: a frame has a length within
`FRAME_LIMIT`, and a reply kazoo cannot make sense of drops the
connection instead of ending kazoo's connection thread.

kazoo trusts the bytes. Its connection reads a 4-byte signed length and
then that many bytes (``ConnectionHandler._read``), gathering every chunk
until the whole frame is there, each wait for a chunk bounded but not the
whole: a "ZooKeeper" (a wrong port, a proxy gone bad) that sent a length
of 2**31-1 and then bytes as fast as it could took the agent to 3.9--4.1
GB of RSS in 10 s, and one of 100 MB to 260 MB at each connection (the
frame, then its copy joined). ZooKeeper's own Java client refuses a
length outside 0 to ``jute.maxbuffer`` (by default 1 MiB) as out of range
and drops the connection; this has two limits:

- until the session is established (kazoo's ``_invoke``: the reply to
  its connect request, and to an authentication), at most
  `HANDSHAKE_FRAME_LIMIT`, 1 MiB: those replies take tens of bytes, and
  a peer not yet shown to be ZooKeeper (a wrong port) is the likeliest
  to send nonsense;
- after, at most `FRAME_LIMIT`, 128 MiB. A listing is the largest answer
  the agent asks for, and ZooKeeper sends it whole, however long: 100,000
  instances (the most DESIGN.md reckons with) of names at the 1,024 bytes
  a znode name may take are a listing of ``{root}/instances`` of about
  103 MB, and anyone may add children there. At 16 MiB, as first set, a
  squatter's 17,500 children of 1,000-byte names (17.5 MB) dropped the
  agent's connection at each listing, in a loop: 98 drops in 40 s,
  ``/healthz`` 503 throughout, the instance nodes stale.

A negative length, or one shorter than a reply's header, made kazoo
parse too few bytes (``struct.error``); a reply whose xid is not the one
awaited (a reply sent twice) raised ``RuntimeError``, one nobody asked
for ``IndexError``. kazoo's connection loop logs any such exception and
raises it again, which ends its connection thread: `sentinel.zk` then
replaces the client, up to a third of the session timeout later (its
look at kazoo's threads), and counts a bug. Turned into kazoo's own
``ConnectionDropped`` where it reads a reply (``_read_socket``), such a
reply is what it is, a connection that went wrong: kazoo says why, and
reconnects on the same session at once, its threads alive. So is one
read in the handshake (``_invoke``: the reply to an authentication).

This is the only place the agent wraps kazoo's private reading
(``_read``, ``_read_socket``, ``_invoke`` on the client's
``_connection``), per
client, never kazoo's classes; `sentinel.zknames` replaces its name
lookup the same way. ``tests/test_zkframes.py`` checks that the kazoo
installed still has both, called as this expects, so that an upgrade
which renames or reshapes them is caught.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kazoo.exceptions import ConnectionDropped, KazooException

# What one frame from ZooKeeper may be, once the session is established and
# before (module docstring).
FRAME_LIMIT = 128 * 2**20
HANDSHAKE_FRAME_LIMIT = 2**20


def fence_reads(connection: Any) -> None:
    """
    Fence kazoo's ``ConnectionHandler`` `connection` (a client's
    ``_connection``): frame lengths outside 0 to `FRAME_LIMIT` (to
    `HANDSHAKE_FRAME_LIMIT` before a session), and replies it cannot
    parse, drop the connection (module docstring).
    """
    read: Callable[[int, float], bytes] = connection._read
    invoke: Callable[..., Any] = connection._invoke
    timeout_exception: type[BaseException] = connection.handler.timeout_exception
    # Whether kazoo is in `_invoke`, which it calls only before the session
    # is established; kazoo's connection thread alone reads and sets it.
    handshake = [False]

    def capped(length: int, timeout: float) -> bytes:
        most, when = (
            (HANDSHAKE_FRAME_LIMIT, " before a session")
            if handshake[0]
            else (FRAME_LIMIT, "")
        )
        if not 0 <= length <= most:
            raise ConnectionDropped(
                f"ZooKeeper sent a frame length of {length:,} bytes"
                f" (at most {most:,}{when})"
            )
        return read(length, timeout)

    def invoking(*args: Any, **kwargs: Any) -> Any:
        handshake[0] = True
        try:
            return invoke(*args, **kwargs)
        finally:
            handshake[0] = False

    def sensible(reads: Callable[..., Any]) -> Callable[..., Any]:
        def reading(*args: Any, **kwargs: Any) -> Any:
            try:
                return reads(*args, **kwargs)
            except (KazooException, OSError, timeout_exception):
                # kazoo's own ends of a connection, which it handles.
                raise
            except Exception as e:
                raise ConnectionDropped(
                    f"ZooKeeper sent a reply that makes no sense"
                    f" ({type(e).__name__}: {e})"
                ) from e

        return reading

    connection._read = capped
    connection._read_socket = sensible(connection._read_socket)
    connection._invoke = sensible(invoking)

"""
Creates on a chroot'd kazoo client at paths as ZooKeeper names them,
past the chroot: how the agent makes a missing chroot (`sentinel.chroot`).

kazoo puts a client's chroot before every path it is given, ``/`` included,
so that nothing above the chroot can be reached from that client: its
``ensure_path("/")`` makes a chroot of one level (``/app``) and fails with
``NoNodeError`` under a deeper one (``/a/b``, with ``/a`` missing). The
chroot exists only in the client: ZooKeeper itself takes every path as
absolute. So `Unrooted.create_async` hands kazoo's own request object,
with the path as given, to the client's request queue, the way kazoo's
``create_async`` does once it has prefixed the path.

That queue (``_call``) is kazoo's private API, used here alone. It is
used rather than a second client without the chroot, a session of its
own opened and closed for each chroot made: that client's threads (a
connection thread, a worker, a closing thread) take malloc arenas and
stacks the agent keeps (`sentinel.zk`), its connection and its session
come and go in the agent's log as the agent's own would, and its calls
are not ordered, bounded or timed out with the agent's. On the agent's
own session, a create is one more call of the bridge, timed out and
ordered as the others, made with the session's own identity: what the
chroot's ACL names. Should kazoo move that queue, `create_async` fails
at once (``AttributeError``, which the bridge hands back as a call's
failure): it is logged, and ``/healthz`` names the chroot missing and
the error, as it named the chroot before the agent made it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kazoo.protocol.serialization import Create
from kazoo.security import OPEN_ACL_UNSAFE


class Unrooted:
    """A chroot'd kazoo client's creates, at paths past its chroot."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def create_async(self, path: str, acl: Sequence[Any] | None) -> Any:
        """
        Create the persistent node `path` (as ZooKeeper names it), empty,
        with `acl` (kazoo's default, open, if None); an ``IAsyncResult``
        that gives the path, as kazoo's own ``create_async``.
        """
        client = self._client
        result = client.handler.async_result()
        request = Create(path, b"", list(acl or OPEN_ACL_UNSAFE), 0)
        client._call(request, result)
        return result

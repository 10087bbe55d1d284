"""
Endpoint strings as Twisted splits them, and the lock link of a ``unix:``
listen that failed.

Twisted's UNIX port takes ``{path}.lock`` (a symbolic link naming the
PID that listens) before it binds the socket, and lets it go only when a
port that listened stops: a bind that fails (a path over the 108 bytes a
socket address holds, a directory where the agent may make the link but
not the socket) leaves the link behind, naming a process that is gone.
The next start takes a stale link over, unless its PID has since been
given to another live process: that start is then refused ("Cannot
acquire lock") until someone removes the link by hand. So the agent
removes the link it made (`release_lock`) when its listen fails, and
only that one: a link naming any other PID is another process's.
"""

from __future__ import annotations

import os
from collections.abc import Callable

# A prefix that wraps another endpoint (the PROXY protocol's header first).
HAPROXY = "haproxy"


def endpoint_args(description: str) -> tuple[list[str], dict[str, str]]:
    """
    Twisted's own split of an endpoint string, escapes and all, past any
    ``haproxy:`` prefix: the endpoint it wraps (``haproxy:ssl:...``) reads
    the same files and binds the same port as it does alone.
    """
    from twisted.internet import endpoints

    parse: Callable[[str], tuple[list[str], dict[str, str]]] = endpoints._parse
    args, named = parse(description)
    while args and args[0].lower() == HAPROXY:
        args = args[1:]
    return args, named


def unix_socket(description: str) -> tuple[str, bool] | None:
    """
    The path of a ``unix:`` endpoint's socket, as given, and whether it
    takes a lock file (Twisted's default); None for another endpoint.
    """
    args, named = endpoint_args(description)
    if not args or args[0].lower() != "unix":
        return None
    # Twisted's arguments, in its order (its parser took them already).
    path = named.get("address", args[1] if len(args) > 1 else "")
    locks = named.get("lockfile", args[4] if len(args) > 4 else "1")
    return path, bool(int(locks))


def release_lock(description: str, pid: int) -> None:
    """
    Remove the lock link of `description`'s socket (a ``unix:`` endpoint
    whose listen failed) if it names `pid`, this process: Twisted made it
    and left it. Anything else there, or nothing, is left as it is.
    """
    try:
        socket = unix_socket(description)
    except ValueError:
        return  # Not an endpoint Twisted could have listened on.
    if socket is None or not socket[1]:
        return
    lock = socket[0] + ".lock"
    try:
        if os.readlink(lock) == str(pid):
            os.remove(lock)
    except OSError:
        pass  # No link, not a link, or not ours to remove: left alone.

"""
Whether a new ZooKeeper session landed on the ensemble the agent publishes
to, or on another one answering at a listed address (a test cluster, a
server reinstalled and started on its own).

Such a server takes the agent at its next new session: it declares the
ensemble's session expired (or, empty, accepts a replaced client), and
the agent published everything there with ``/healthz`` 200 while the real
ensemble lost every node (31.6 s in the attacker's run, for as long as the
agent stayed there). After each new session the bridge (`sentinel.zk`)
reads ``/zookeeper/config``, which on ZooKeeper 3.5 and later lists the
ensemble's members (``server.N=host:quorum:election...`` lines), each
compared by its id and quorum address (``N``, ``host:quorum``): a role, a
client address or the line's wording may change. The first members heard
are the ensemble's, and they are read again at each connection on the
ensemble's session and every `REREAD_EVERY` seconds, so a reconfiguration
(a server replaced at a time) is followed. A later session on a server
listing none of them, or none at all (standalone), is on another
ensemble. A server of the same ensemble that came back empty lists the
same members (they come from its configuration, not its data) and is used
as before.

Another ensemble is left for the other listed servers, at most once per
session timeout, and never when no listed server is left to try (one
address: a VIP, a DNS name). If every listed server has looked like
another ensemble for `ACCEPT_AFTER` session timeouts (the whole ensemble
replaced at once), the one found is taken for the ensemble, with a
warning, and published to.

It does not catch a stray reached before any member of the ensemble was
heard (its members are then the ones compared with, and the ensemble's
servers are the ones left, until the above takes them back), a stray
behind a chroot (the node is outside it, and is not read), nor one when
the agent's ensemble is itself a standalone server (nothing to compare).
"""

from __future__ import annotations

# Where ZooKeeper (3.5 and later) lists the ensemble's members.
CONFIG_PATH = "/zookeeper/config"


# How often the members are read again while on the ensemble.
REREAD_EVERY = 300.0

# Session timeouts every listed server may look like another ensemble
# before the one found is taken for the ensemble.
ACCEPT_AFTER = 3


def members(config: bytes) -> frozenset[tuple[str, str]]:
    """
    The members of a ``/zookeeper/config``: (id, ``host:quorum-port``) of
    each ``server.N=host:quorum:election[:role][;client]`` line.
    """
    found = set()
    for line in config.decode("utf-8", "replace").splitlines():
        key, _, spec = line.strip().partition("=")
        if not key.startswith("server.") or not spec:
            continue
        address = spec.split(";", 1)[0]
        # host:quorum:election[:role]; an IPv6 host is in brackets.
        if address.startswith("["):
            host, _, rest = address[1:].partition("]")
            port = rest[1:].split(":", 1)[0]
        else:
            host, port = (address.split(":") + [""])[:2]
        found.add((key[len("server.") :], f"{host}:{port}"))
    return frozenset(found)


def foreign(
    known: frozenset[tuple[str, str]], heard: frozenset[tuple[str, str]]
) -> bool:
    """
    Whether a server whose config lists `heard` is of another ensemble than
    the one whose members are `known` (module docstring).
    """
    return bool(known) and not known & heard

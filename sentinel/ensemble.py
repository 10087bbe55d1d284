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
ensemble's members (``server.N=...`` lines). The first members heard are
the ensemble's; a later session on a server listing none of them, or none
at all (standalone), is on another ensemble. A server of the same ensemble
that came back empty lists the same members (they come from its
configuration, not its data) and is used as before; a reconfiguration
that keeps any member is followed.

It does not catch a stray reached before any member of the ensemble was
heard (its members are then the ones compared with, and the ensemble's
servers are the ones left), a stray behind a chroot (the node is outside
it, and is not read), nor one when the agent's ensemble is itself a
standalone server (nothing to compare).
"""

from __future__ import annotations

# Where ZooKeeper (3.5 and later) lists the ensemble's members.
CONFIG_PATH = "/zookeeper/config"


def members(config: bytes) -> frozenset[str]:
    """The ``server.N=...`` lines of a ``/zookeeper/config``: its members."""
    lines = config.decode("utf-8", "replace").splitlines()
    return frozenset(line.strip() for line in lines if line.startswith("server."))


def foreign(known: frozenset[str], heard: frozenset[str]) -> bool:
    """
    Whether a server whose config lists `heard` is of another ensemble than
    the one whose members are `known` (module docstring).
    """
    return bool(known) and not known & heard

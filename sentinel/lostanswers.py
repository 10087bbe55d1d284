"""
Sets of ours whose answer never came: ZooKeeper may have applied them.

A set that ends without ZooKeeper's answer (the bridge's call timeout, a
connection lost, a call cancelled) is not known to be refused: the
request may have reached ZooKeeper, which applied it all the same. Its
node's version then moved one past the one we set at, and the retry, at
the version we knew, is refused as if another client had written the
node: the agent named its own instance node in /healthz as written by
another client, and wrote it "over" (`tests.test_guard`; a group's
agent did so once at a load of 10, with no other client writing).

So each such set is remembered with its node (the version it was sent
at and its data), and a set refused at a version other than ours reads
the node: ours still, one version past one of those sets, with that
set's very data, and it is our own write, applied; the node's version
is taken from it and our newest data set again, with nothing named.
Anything else (another version, other data) is another client's write,
named and written over as before (`sentinel.guard`). A client that
writes our exact bytes at the very version our lost set would have made
is not told apart, and wrote nothing readers would not have read anyway.

Bounded: a set at a version below the node's, as last answered, can
never apply (a version only grows), so it is forgotten as soon as one
is answered, and every one is when our session makes the node anew
(ZooKeeper does a session's requests in order); at most `KEPT` are kept
per node (a set retried every second while ZooKeeper answers nothing):
the newest, each retry sent at the same version as the one before, so
that the one ZooKeeper applied, if any did, is among them.
"""

from __future__ import annotations

from typing import Any

from sentinel.nodes import Node

# Sets whose answer was lost kept per node, at most (module docstring).
KEPT = 8


def unanswered(node: Node, version: int, data: bytes) -> None:
    """A set of `node` at `version` with `data` ended with no answer."""
    node.unanswered = (*node.unanswered[-(KEPT - 1) :], (version, data))


def answered(node: Node, version: int) -> None:
    """
    ZooKeeper said `node` is at `version` (a set's answer, an adoption):
    the sets sent below it can no longer apply.
    """
    if node.unanswered:
        node.unanswered = tuple(s for s in node.unanswered if s[0] >= version)


def made(node: Node) -> None:
    """
    `node` made anew by our session (created, taken over: its versions
    start again at 0): a set we sent before was applied or refused before
    it, ZooKeeper doing a session's requests in order.
    """
    node.unanswered = ()


def own_set_applied(node: Node, stored: bytes, stat: Any) -> bool:
    """
    Whether `node`, found with `stored` at `stat`, is at what one of our
    unanswered sets would have made of it (module docstring).
    """
    return any(
        stat.version == version + 1 and stored == data
        for version, data in node.unanswered
    )

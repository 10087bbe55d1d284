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

So each such set is remembered with its node (the version it was sent at
and a digest of its data: `remembered_set`, for the instance, agent and catalog
nodes (`sentinel.writer`) and the discovery members
(`sentinel.discovery`, whose role changes are sets)), and a set refused
at a version other than ours reads the node (`applied_stat`): ours
still, one version past one of those sets, with that set's very data
(its digest), and it is our own write, applied; the node's version is taken from it
and our newest data set again, with nothing named. Anything else
(another version, other data) is another client's write, named and
written over as before (`sentinel.guard`). A client that writes our
exact bytes at the very version our lost set would have made is not told
apart, and wrote nothing readers would not have read anyway.

Bounded: a set at a version below the node's, as last answered, can
never apply (a version only grows), so it is forgotten as soon as one
is answered, and every one is when our session makes the node anew
(ZooKeeper does a session's requests in order); at most `KEPT` are kept
per node (a set retried every second while ZooKeeper answers nothing):
the newest, each retry sent at the same version as the one before, so
that the one ZooKeeper applied, if any did, is among them. A set is kept
as its version and a `DIGEST_BYTES` digest of its data, never the data:
kept whole, a ZooKeeper that applies sets and answers none (broken, or
hostile) held 8 copies of every node's document, a catalog part's up
to 512 KiB each (measured with `benchmarks/lostsets.py`: 14.3 MB at
3,000 instance nodes of 500 bytes, 4.2 MB per catalog part; with
digests, 2.8 MB and 392 bytes: at most 936 bytes a node, whatever the
size of its data).
A digest of 16 bytes (BLAKE2b) tells our data from another client's
as surely as the data would.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from kazoo.exceptions import BadVersionError, NoNodeError
from twisted.internet.defer import Deferred

from sentinel.ownership import ours
from sentinel.zk import ZooKeeper

# Sets whose answer was lost kept per node, at most (module docstring).
KEPT = 8
# Bytes of the digest kept of each such set's data (module docstring).
DIGEST_BYTES = 16


class Written(Protocol):
    """What we write a node through: an instance's node, a discovery member."""

    # Each set of it that ended with no answer: its version, its data's
    # digest (`digest`).
    unanswered: tuple[tuple[int, bytes], ...]


async def remembered_set(
    zk: ZooKeeper,
    counted: Callable[[str, Deferred[Any]], Awaitable[Any]],
    written: Written,
    path: str,
    data: bytes,
    version: int,
) -> Any:
    """
    Set the node at `path` (`counted`): its new stat; a set that ends
    with no answer is remembered with `written`.
    """
    try:
        stat = await counted("set", zk.set(path, data, version))
    except (BadVersionError, NoNodeError):
        raise  # Refused: ZooKeeper did not apply it.
    except Exception:
        unanswered(written, version, data)
        raise
    answered(written, stat.version)
    return stat


def unanswered(written: Written, version: int, data: bytes) -> None:
    """A set of `written` at `version` with `data` ended with no answer."""
    kept = (version, digest(data))
    written.unanswered = (*written.unanswered[-(KEPT - 1) :], kept)


def digest(data: bytes) -> bytes:
    """What is kept of a set's data (module docstring)."""
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest()


def answered(written: Written, version: int) -> None:
    """
    ZooKeeper said the node is at `version` (a set's answer, an adoption):
    the sets sent below it can no longer apply.
    """
    if written.unanswered:
        written.unanswered = tuple(
            sent for sent in written.unanswered if sent[0] >= version
        )


def made(written: Written) -> None:
    """
    The node made anew by our session (created, taken over: its versions
    start again at 0): a set we sent before was applied or refused before
    it, ZooKeeper doing a session's requests in order.
    """
    written.unanswered = ()


def own_set_applied(written: Written, stored: bytes, stat: Any) -> bool:
    """
    Whether the node, found with `stored` at `stat`, is at what one of our
    unanswered sets would have made of it (module docstring).
    """
    if not written.unanswered:
        return False
    found = digest(stored)
    return any(
        stat.version == version + 1 and found == kept
        for version, kept in written.unanswered
    )


async def applied_stat(zk: ZooKeeper, path: str, written: Written) -> Any:
    """
    The stat of the node at `path`, read now, if it is our session's, at
    what an unanswered set of `written` made of it (that version then
    counts as answered); else None.
    """
    try:
        stored, stat = await zk.get(path)
    except NoNodeError:
        return None
    if ours(stat, zk.session_id) and own_set_applied(written, stored, stat):
        answered(written, stat.version)
        return stat
    return None

"""
The instance node a discovery member was handed over with, watched while
the member waits for the new primary's to replace it (`Discovery.outlived`).

The new primary replaces the member only with one of its own, and it makes
none for an instance it finds down or not ready: the member kept for it
then listed a dead (or loading) endpoint until `takeover.MEMBER_HANDOFF_LIMIT`,
30 s, while proxies reading the service sent clients there. So the node is
read once at the handover with a watch, and again at each of its changes
while the member waits (a status, ``ready`` or role change, or a refresh:
a few within the limit); a document saying the instance is not in
discovery (not up, or not ready: `documents.previous_presence`) ends the
wait at once. The node missing ends nothing here (the takeover's rules
keep the member then, `Takeovers._release_member`); it is watched for its
creation instead, as a cover's. A read that fails is made again every
`REREAD` s while the member waits. Nothing is read in steady state.
"""

from __future__ import annotations

from collections.abc import Callable

from kazoo.exceptions import KazooException, NoNodeError
from kazoo.protocol.states import EventType, WatchedEvent
from twisted.internet.defer import CancelledError, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from sentinel.documents import previous_presence, previous_verdict
from sentinel.zk import ZooKeeper

# Seconds before a failed read of the node is made again (a timeout, a
# lost connection), as the member's periodic look (`HANDED_OVER_CHECK`).
REREAD = 3.0


def says_undiscoverable(data: bytes) -> bool:
    """
    Whether an instance node's `data` says its instance has no member:
    an agent's document saying down, or up and not ready. Anything else
    (garbage, another writer's) says nothing.
    """
    document = previous_verdict(data)
    return document is not None and not previous_presence(document)[0]


def watch_handed_node(
    zk: ZooKeeper,
    clock: IReactorTime,
    path: str,
    waiting: Callable[[], bool],
    undiscoverable: Callable[[], None],
) -> None:
    """
    Watch the node at `path` while `waiting()`: `undiscoverable()` is
    called once it says its instance is out of discovery.
    """

    def bug(failure: Failure) -> None:
        zk.internal_errors.record("watching a handed node", path, failure)

    def read(changed: bool = False) -> None:
        if not waiting():
            return
        d = zk.get(path, watch=fired, changed=changed)
        d.addCallbacks(answered, failed)
        d.addErrback(bug)

    def answered(result: tuple[bytes, object]) -> None:
        if waiting() and says_undiscoverable(result[0]):
            undiscoverable()

    def failed(failure: Failure) -> None:
        if failure.check(NoNodeError):
            # Gone: nothing to judge until it is made again.
            d = zk.exists(path, watch=fired)
            d.addCallbacks(lambda stat: None if stat is None else read(), failed)
            d.addErrback(bug)
        elif failure.check(KazooException, TimeoutError, CancelledError):
            if waiting():
                clock.callLater(REREAD, read)
        else:
            failure.raiseException()  # A bug: recorded (`bug`).

    def fired(event: WatchedEvent) -> None:
        # NONE: kazoo dropped its watches (a lost connection); read again,
        # which arms a new one.
        read(changed=event.type != EventType.NONE)

    read()

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

One watcher serves each path, whatever waits on it: ZooKeeper cannot
take a watch back, so one armed on a node that never changes again (gone
for good: an instance removed, a discovered replica replaced) stays in
the client and the server for the session's life. A watcher of its own
per wait left one more at each member handed over while its node was
missing (100 handovers, 101 watches), none ever fired; one equal
watcher a path is armed once, as a cover's is (`covers._Made`).
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


class HandedNodes:
    """
    The instance nodes handed-over members wait on (see the module
    docstring): each read with a watch, by one watcher a path, while any
    member waits on it.
    """

    def __init__(self, zk: ZooKeeper, clock: IReactorTime) -> None:
        self._zk = zk
        self._clock = clock
        # What waits on each path: whether it still waits, and what ends it.
        self._waits: dict[str, list[tuple[Callable[[], bool], Callable[[], None]]]] = {}
        # Each path's watcher while it is armed or waited on: the same one
        # armed again adds nothing.
        self._watchers: dict[str, _Changed] = {}

    def watch(
        self, path: str, waiting: Callable[[], bool], undiscoverable: Callable[[], None]
    ) -> None:
        """
        Watch the node at `path` while `waiting()`: `undiscoverable()` is
        called once it says its instance is out of discovery.
        """
        self._waits.setdefault(path, []).append((waiting, undiscoverable))
        self._read(path)

    def _still_waiting(self, path: str) -> bool:
        """Whether anything waits on `path` (those done are forgotten)."""
        waits = [w for w in self._waits.get(path, ()) if w[0]()]
        if waits:
            self._waits[path] = waits
            return True
        self._waits.pop(path, None)
        watcher = self._watchers.get(path)
        if watcher is not None and not watcher.armed:
            del self._watchers[path]
        return False

    def _watcher(self, path: str) -> _Changed:
        watcher = self._watchers.get(path)
        if watcher is None:
            watcher = self._watchers[path] = _Changed(self, path)
        watcher.armed = True
        return watcher

    def _read(self, path: str, changed: bool = False) -> None:
        if not self._still_waiting(path):
            return
        zk = self._zk

        def bug(failure: Failure) -> None:
            zk.internal_errors.record("watching a handed node", path, failure)

        def answered(result: tuple[bytes, object]) -> None:
            if says_undiscoverable(result[0]):
                for waiting, undiscoverable in list(self._waits.get(path, ())):
                    if waiting():
                        undiscoverable()
            self._still_waiting(path)

        def failed(failure: Failure) -> None:
            if failure.check(NoNodeError):
                # Gone: nothing to judge until it is made again.
                d = zk.exists(path, watch=self._watcher(path))
                d.addCallbacks(
                    lambda stat: None if stat is None else self._read(path), failed
                )
                d.addErrback(bug)
            elif failure.check(KazooException, TimeoutError, CancelledError):
                # Armed or not, it is unknown: kept no longer than the wait.
                self._unarmed(path)
                if self._still_waiting(path):
                    self._clock.callLater(REREAD, self._read, path)
            else:
                failure.raiseException()  # A bug: recorded (`bug`).

        d = zk.get(path, watch=self._watcher(path), changed=changed)
        d.addCallbacks(answered, failed)
        d.addErrback(bug)

    def _unarmed(self, path: str) -> None:
        watcher = self._watchers.get(path)
        if watcher is not None:
            watcher.armed = False

    def fired(self, path: str, event: WatchedEvent) -> None:
        """`path`'s watch fired: read it again if anything waits on it."""
        self._unarmed(path)
        # NONE: kazoo dropped its watches (a lost connection); read again,
        # which arms a new one.
        self._read(path, changed=event.type != EventType.NONE)


class _Changed:
    """
    The watch of one handed node: the same object for its path while it
    is kept (`HandedNodes._watchers`), so arming it again adds nothing.
    """

    __slots__ = ("nodes", "path", "armed")

    def __init__(self, nodes: HandedNodes, path: str) -> None:
        self.nodes = nodes
        self.path = path
        self.armed = False

    def __call__(self, event: WatchedEvent) -> None:
        self.nodes.fired(self.path, event)

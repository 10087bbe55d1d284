"""
Whether the instances a waiting member leaves to a member not back yet
have a node (`sentinel.holdoff`, `sentinel.unshared`; docs/groups.rst,
"Sessions that keep ending").

A member waiting to join its group again publishes the instances no
other listed member knows that it is the primary of in the view it keeps
(`sentinel.unshared`). Those that view gives to another member had
nobody to publish them if that member died, or forgot them by a reload,
and the wait ended at once then (`Group._unshared_changed`). But two
members behind one path to ZooKeeper (one rack, one zone) lose their
sessions together: each, back, finds the other unlisted, since it waits
too and a waiting member writes no catalog, while it publishes its part
of the instances the two alone know. Judged dead, the other ended the
wait at every cut: the member whose path still flapped joined, took its
share back from the others and lost it again at the next cut, the very
moves a wait is there to spare (the group fakes' two members flapping
together: the wait ended 20 s early at each end of the sessions).

So an instance whose primary in the kept view is a member not listed
since this agent's new session began is judged by its node: the wait
ends if one is missing at a check (`zk.exists`), the first a session
timeout and the client replacements' spread after it was found so (the
other member's time to come back, as `Membership.rejoin` waits for the
members of its last view), then one every such time while it waits (a
member that waits too and dies has no listing to say so). A member that
was listed again and then left, or that forgot the instance, ends the
wait at once, as before. What it costs: nothing in a group whose members
do not wait; one ``exists`` per such instance per check while waiting,
asked in the background (behind the agent's other reads): at 3,000
such instances and the default session timeout, 250 requests a second
on average, in bursts of 0.5--0.8 s (BENCHMARKS.rst).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from sentinel.catalog import Catalog

log = Logger()


class Unpublished:
    """
    The members listed since this agent's new session (`back`), and the
    checks of the nodes of instances left to the others (module
    docstring).
    """

    def __init__(
        self,
        reactor: IReactorTime,
        exists: Callable[[str], Deferred[Any]],
        path_of: Callable[[str], str],
        every: Callable[[], float],
        missing: Callable[[list[str]], None],
    ) -> None:
        """
        @param exists: a node's stat, or None (`ZooKeeperClient.exists`).
        @param path_of: the path of an instance's node.
        @param every: seconds from an instance found so to its first check,
            and between two checks.
        @param missing: told of the instances a check found with no node.
        """
        self._reactor = reactor
        self._exists = exists
        self._path_of = path_of
        self._every = every
        self._missing = missing
        self.back: set[str] = set()
        self._names: list[str] = []
        self._call: IDelayedCall | None = None
        self._checking = False
        self.checks = 0

    def new_session(self) -> None:
        """This agent's new session began: nobody is back in it yet."""
        self.back = set()
        self.stop()

    def listed(self, members: Mapping[str, Catalog]) -> None:
        """A listing of the new session: its members are back."""
        self.back.update(members)

    def watch(self, names: Iterable[str]) -> None:
        """
        The instances left to a member not back (none: the wait is over,
        or nothing is so): checked from now on, a check due `every` s
        from the first found so.
        """
        self._names = sorted(names)
        if not self._names:
            self.stop()
        elif self._call is None and not self._checking:
            self._call = self._reactor.callLater(self._every(), self._check)

    def stop(self) -> None:
        """No more checks (the wait is over, or the agent stops)."""
        self._names = []
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _check(self) -> None:
        self._call = None
        names = self._names
        if not names:
            return
        self._checking = True
        self.checks += 1
        # maybeDeferred: a read that raises (a bad path, a bug) fails like
        # one that errs, rather than leaving `_checking` set for good.
        reads = [maybeDeferred(self._read, name) for name in names]

        def judged(results: list[tuple[bool, Any]]) -> None:
            # A read that failed (a connection lost) says nothing: the
            # next check asks again. Nor does one of an instance no longer
            # watched since it was sent: a reload removed it (and its
            # other member deleted its node), or the wait ended.
            watched = set(self._names)
            gone = [
                n
                for n, (ok, stat) in zip(names, results, strict=True)
                if ok and stat is None and n in watched
            ]
            if gone:
                self._missing(gone)

        checked = DeferredList(reads, consumeErrors=True).addCallback(judged)
        checked.addErrback(
            lambda failure: log.failure("checking the nodes left to others", failure)
        )
        # Whatever `missing` raised, the checks go on while names are left.
        checked.addBoth(self._checked)

    def _read(self, name: str) -> Deferred[Any]:
        return self._exists(self._path_of(name))

    def _checked(self, _: object) -> None:
        self._checking = False
        if self._names and self._call is None:
            self._call = self._reactor.callLater(self._every(), self._check)

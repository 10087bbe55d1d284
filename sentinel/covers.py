"""
Who makes an instance node that stays missing while its primary is a
listed member slow to write it (DESIGN.md section 8: readers never see a
node missing at a move, and a dead agent's nodes come back within a
second of its session's end).

A primary listed in the view is the only writer of its nodes, and
nothing moves while it stays listed. But a live primary may be unable
to write for many seconds: behind a path to ZooKeeper that holds bytes
for seconds, its session ended and its nodes with it, while it came back
listed within the settle time, and wrote them again over the same path
6 s and more later (readers missed them up to 9.4 s); throttled, as the
new primary of a leaver's share, it made those nodes 21.6 s after the
leaver's close took them (BENCHMARKS.rst, "One member's path to
ZooKeeper slow, flapping or throttled").

So a secondary observer covers for it, by one rule every member applies
alike from what it reads in ZooKeeper: an instance node this agent
found missing as a secondary (a reading of the verdict, which its watch
asks for at the next check after the node goes, `sentinel.opinions`),
and still missing `rank` graces later (`COVER_GRACE`; rank 1 for the
first secondary, 2 for the next: a second one makes it only if the
first did not), is made by this agent, where missing only (a create,
never a takeover: `Node.standing_in`, as for an absent member,
`sentinel.standins`), as its primary would, from the opinions of its
observers. Once made (or found made by another session), the cover ends
and this agent keeps the node for the primary as any previous primary
keeps one for the next (`sentinel.takeover`): writing its verdict, and
letting it go once the primary takes it over in one transaction, as
any move does. Two members never contest a node: each makes it only
where missing, and only the primary takes one back.

A node its primary holds but has not written for a bound is taken over
the same way, in one transaction, as any new primary takes one
(`behind`, `sentinel.behind`: the verdict has not said this agent's
opinion for that long). A member of an
older version never covers; its nodes are covered by newer ones, and
it takes them over as it takes over any node it finds made.

While this agent covers a node, and then keeps it for the primary, the
verdicts it writes leave that member's opinions out, as a silent
observer's are (`GroupRoles.verdict_of`): the cover is this agent's
evidence that the member cannot write, so its opinions say what it
found before, and counted they held a quorum of 2 out of reach with two
replicas (an instance dead during the cover published up and listed
until the member wrote again). The observers that can write count as
ever; the member counts again once it has taken back every node this
agent covered for it.

With discovery, a primary slow to write may still hold the instance's
member (its node deleted by another client, its session alive): the
cover's member replaces the one the node named when this agent last
found it, in one transaction (`Takeovers.stood_in`, as a takeover
does), so that readers never find the endpoint listed twice; one gone
with its session is made anew. The primary, taking the node back, makes
its own in the place of the cover's (`Members.write`).

What it costs: no request in steady state (the readings are the ones
an observer makes already: one ``get`` an instance a refresh, and one
after each write its watch hears of); per missing node, one ``exists``
at the reading that found it so (watching it: made within the grace, by
anyone, it is not covered, though gone again by the grace's end), one
per secondary whose turn comes, and one create (with discovery, the
member the node named is read as the cover begins, `Takeovers.coming`,
as for any new primary, and replaced in place of a create); at most one
cover of a node a grace per member, however often it goes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attr
from kazoo.protocol.states import EventType, WatchedEvent
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

# Seconds an instance node may stay missing, past the reading that found
# it so, before its first secondary makes it: its primary, if it writes,
# makes it within about a second of its going (a crashed member's
# survivors too, `benchmarks/group.py writes`); the k-th secondary waits
# k graces.
COVER_GRACE = 2.0
# Seconds between two looks at the nodes being covered: made, or another
# session's (then the cover ends).
COVER_LOOK = 0.5
# Seconds after which a cover ends whatever happened (this agent's own
# writes failing): the next reading that finds the node missing starts
# another.
COVER_LIMIT = 30.0


def covering(observers: tuple[str, ...], agent: str) -> tuple[str, ...]:
    """
    `observers` (primary first) with `agent` first, if it is one of the
    others: the order by which it publishes while it covers.
    """
    if agent not in observers[1:]:
        return observers
    return (agent, *(a for a in observers if a != agent))


class Covers:
    """
    The instance nodes this agent covers for their slow primaries (see the
    module docstring), and those it will ask about again.
    """

    def __init__(
        self,
        reactor: Any,
        exists: Callable[..., Deferred[Any]],
        rank: Callable[[str], int | None],
        apply: Callable[[set[str]], None],
        settled: Callable[[str], bool],
        path_of: Callable[[str], str],
        grace: float = COVER_GRACE,
        made: Callable[[str], None] = lambda name: None,
        after: Callable[[], float] = lambda: 0.0,
    ) -> None:
        """
        @param exists: a node's stat, or None if it is missing; with
            ``watch=``, told of its next change (its creation).
        @param rank: this agent's place among an instance's observers (1
            for its first secondary), or None when it may not cover it
            (not a secondary of a listed primary, or not a member now).
        @param apply: told of the instances whose cover began or ended,
            to publish them as their roles now say.
        @param settled: whether an instance's node is made (ours) or held
            by another session: the cover ends.
        @param path_of: an instance's node path.
        @param made: told of an instance whose node, found missing, was
            made since (its verdict is to be read again).
        @param after: the bound of `behind`, for the log.
        """
        self._reactor = reactor
        self._exists = exists
        self._rank = rank
        self._apply = apply
        self._settled = settled
        self._path_of = path_of
        self._grace = grace
        self._made = made
        self._after = after
        self._running = True
        # The instances to ask about again, by their timers.
        self._due: dict[str, IDelayedCall] = {}
        # The instances covered, and since when; and those of them whose
        # node its primary holds, taken over rather than made (`behind`).
        self._covering: dict[str, float] = {}
        self._taking: set[str] = set()
        self._look_call: IDelayedCall | None = None
        # Covers begun, for /debug/stats and the log.
        self.covered = 0
        # Covers begun since the log last said so, and the first one's
        # path: one line a look (`_look`), not one a node, for a slow
        # primary's whole share (1,000 nodes and more) goes at once.
        self._unlogged = 0
        self._first_unlogged = ""
        # Likewise for the nodes taken over (`behind`).
        self.taken = 0
        self._untold = 0
        self._first_untold = ""

    def covering(self, name: str) -> bool:
        """Whether this agent covers `name`'s node now."""
        return name in self._covering

    def missing(self, name: str) -> None:
        """A reading as a secondary found `name`'s node missing."""
        if not self._running or name in self._due or name in self._covering:
            return
        rank = self._rank(name)
        if rank is None:
            return
        # At least a grace from this reading: a node covers begin at most
        # once a grace, however often it goes.
        self._due[name] = self._reactor.callLater(rank * self._grace, self._ask, name)
        # Watched from now: a node made within the grace is not a slow
        # primary's, however soon it goes again. Another client deleting
        # the nodes of a primary that writes, in a loop, had the look at
        # the grace's end find each missing, and every one covered.
        path = self._path_of(name)
        d = self._exists(path, watch=_Made(self, name))
        d.addCallbacks(
            lambda stat: None if stat is None else self.present(name), _ignored
        )
        d.addErrback(lambda f: log.failure("watching {path} failed", f, path=path))

    def taking(self, name: str) -> bool:
        """Whether this agent covers `name`'s node by taking it over."""
        return name in self._taking

    def behind(self, name: str, stat: Any) -> None:
        """
        A reading as a secondary found `name`'s node, at `stat`, not
        saying this agent's opinion for the bound (`sentinel.behind`):
        its primary holds it but cannot write it. Still so `rank` graces
        later (nobody wrote it meanwhile: the primary, or a secondary
        before this one), this agent takes it over in one transaction,
        and keeps it for the primary as any cover's node.
        """
        if not self._running or name in self._due or name in self._covering:
            return
        rank = self._rank(name)
        if rank is None:
            return
        self._due[name] = self._reactor.callLater(
            rank * self._grace, self._ask, name, stat.mzxid
        )

    def present(self, name: str) -> None:
        """A reading found `name`'s node there: no cover is due."""
        call = self._due.pop(name, None)
        if call is not None and call.active():
            call.cancel()

    def stop(self) -> None:
        """Ask nothing more, and cancel what waits (the group stops)."""
        self._running = False
        self._log_begun()
        for call in [*self._due.values(), self._look_call]:
            if call is not None and call.active():
                call.cancel()
        self._due.clear()
        self._taking.clear()
        self._look_call = None

    def _ask(self, name: str, mzxid: int | None = None) -> None:
        """
        Ask about `name`'s node at the end of its wait: still missing (or
        with `mzxid`, still as read then: `behind`), it is covered.
        """
        del self._due[name]
        if self._rank(name) is None:
            return
        path = self._path_of(name)

        def answered(stat: Any) -> None:
            still = stat is None if mzxid is None else _unwritten(stat, mzxid)
            if (
                still
                and self._running
                and name not in self._covering
                and self._rank(name) is not None
            ):
                if mzxid is not None:
                    self._taking.add(name)
                self._begin(name, path)

        d = self._exists(path)
        # A failed reading (timed out, the connection dropped) covers
        # nothing: the next reading that finds the node missing (or its
        # verdict behind, a bound later) asks again.
        d.addCallbacks(answered, _ignored)
        d.addErrback(lambda f: log.failure("covering {path} failed", f, path=path))

    def _begin(self, name: str, path: str) -> None:
        self._covering[name] = self._reactor.seconds()
        self.covered += 1
        if name in self._taking:
            self.taken += 1
            if not self._untold:
                self._first_untold = path
            self._untold += 1
        else:
            if not self._unlogged:
                self._first_unlogged = path
            self._unlogged += 1
        # The look first: whatever `apply` raises, the cover ends by one.
        if self._look_call is None:
            self._look_call = self._reactor.callLater(COVER_LOOK, self._look)
        self._apply({name})

    def _look(self) -> None:
        """End the covers whose node is made, or no longer ours to make."""
        self._look_call = None
        try:
            self._log_begun()
            now = self._reactor.seconds()
            ended = {
                name
                for name, since in self._covering.items()
                if self._settled(name)
                or self._rank(name) is None
                or now - since >= COVER_LIMIT
            }
            for name in ended:
                del self._covering[name]
                self._taking.discard(name)
            if ended:
                self._apply(ended)
        finally:
            # A bug in judging or applying one look must not leave the
            # covers begun for good, this agent writing nodes it is not
            # the primary of: looked at again (the reactor logs what it
            # raised, once a look).
            if self._covering and self._running:
                self._look_call = self._reactor.callLater(COVER_LOOK, self._look)

    def _log_begun(self) -> None:
        """Say the covers begun since the last look, in a line a kind."""
        if self._untold:
            log.warn(
                "group: {count} verdict(s) held by their listed primary have not"
                " said this agent's opinion for {after:g} s or more (the first"
                " {path}): their primary cannot write them; this agent takes"
                " them over and keeps them until their primary takes them back",
                count=self._untold,
                after=self._after(),
                path=self._first_untold,
            )
            self._untold = 0
        if not self._unlogged:
            return
        log.info(
            "group: {count} instance node(s) missing for {grace:g} s or more"
            " while their primary is listed (the first {path}): this agent"
            " makes them where they are missing and keeps them until their"
            " primary takes them over",
            count=self._unlogged,
            grace=self._grace,
            path=self._first_unlogged,
        )
        self._unlogged = 0


@attr.frozen
class _Made:
    """
    The watch of a node found missing while a cover of it is due: its
    creation ends the wait. Equal for the same instance, so that watching
    it again before it fires adds nothing (`sentinel.zk`).
    """

    covers: Covers
    name: str

    def __call__(self, event: WatchedEvent) -> None:
        if event.type == EventType.CREATED:
            self.covers.present(self.name)
            self.covers._made(self.name)


def _unwritten(stat: Any, mzxid: int) -> bool:
    """Whether a node is there, not written since the write `mzxid` made."""
    return stat is not None and stat.mzxid == mzxid


def _ignored(failure: Failure) -> None:
    return None

"""
Host names to addresses, without threads, so that no name can starve another.

The reactor's resolver runs getaddrinfo in its thread pool, whose queue has
no bound: behind names whose name server never answers, a good name waited
20 s and more (issue 9). Here (with `sentinel.lookup` doing one lookup):

- One lookup per name at a time, shared by everyone who asks for it. Each
  asker has its own deadline: cancelling its Deferred drops only that
  asker; the lookup goes on to its own bound (`bound`, by default
  `lookup_bound` of the check timeout), and its answer serves the next one.
- Answers are kept for their TTL, at least `MIN_TTL` (many instances on one
  name ask at most once a second) and at most `MAX_TTL` (an address that
  moved is seen within five minutes, whatever the TTL said); hosts-file
  answers for a second. Failures (no such name, no address, no answer in
  time, refused...) are kept `FAILURE_TTL` seconds, then asked again.
- At most `MAX_LOOKUPS` lookups in flight: each holds a UDP socket (a file
  descriptor, out of the agent's reserve), and they would otherwise grow
  with the number of dead names. Names whose last lookup failed wait
  behind every other name and hold at most `MAX_LATER_LOOKUPS` slots, so
  dead names known as such, however many, never delay a new or working
  name. Dead names not known yet (at start, or added together) are found
  out `MAX_LOOKUPS` at a time: a first lookup still unanswered after
  `GIVE_WAY_AFTER` gives its slot to a name waiting for one and is asked
  again later, behind. A good name asked with N unknown dead names thus
  waits at most about N / MAX_LOOKUPS * GIVE_WAY_AFTER (12: not at all;
  200: about 6 s, once).
- `retain` (on reload) and `forget` drop the cache of names nobody wants
  any more, and cancel their lookups.
- A name `watch`ed (an instance connected through it) is looked up again
  in the background when its answer's TTL is up, `REFRESH_FLOOR` seconds
  apart at least, and `REFRESH_RATE` such lookups a second at most, all
  names together (19,000 names of TTL 1 s: 100 a second, each name every
  190 s, not 19,000 a second). Its watchers are told every answer, with
  the addresses of the answer before it added: an address that left the
  answer is gone only once it is out of two answers in a row (a name
  server that answers a rotating subset of a larger set moves nobody at
  each TTL; a failover costs one more lookup, asked `REFRESH_CONFIRM`
  after an answer that changed). A lookup asked before the TTL was up (a
  refresh, or `fresh_since`) that fails leaves the answer to serve on
  until then; none is asked while a lookup would wait for a slot.

Literal addresses are returned at once. IPv4 is preferred: a name's IPv6
addresses come after its IPv4 ones (`sentinel.lookup`). `addresses` gives
every address of the answer (`sentinel.addresses` tries them in turn),
`resolve` the first.
A failure is a `CannotResolve` (a `DNSLookupError`) whose message is
``cannot resolve NAME: REASON``. A lookup that could not open a socket
to ask with (the agent out of file descriptors) says nothing of the
name: it is not kept, and its error names the shortage
(`CannotResolve.shortage`), which makes the check inconclusive, as a
connect without a socket is (`sentinel.sockets`).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, Protocol

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.error import CannotListenError, ConnectError, DNSLookupError
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from sentinel.config import DNSConfig
from sentinel.lookup import Answer, LookupFailed, NameLookup, describe_failure
from sentinel.resolvconf import is_address
from sentinel.sockets import SHORTAGES, shortage_of

log = Logger()

MIN_TTL = 1.0
MAX_TTL = 300.0
FAILURE_TTL = 5.0
MAX_LOOKUPS = 16
MAX_LATER_LOOKUPS = 8
GIVE_WAY_AFTER = 0.5
# A watched name's background lookups: one every REFRESH_FLOOR seconds
# at most (its TTL permitting), REFRESH_CONFIRM after an answer that
# changed, and REFRESH_RATE a second at most, all names together.
REFRESH_FLOOR = 5.0
REFRESH_CONFIRM = 1.0
REFRESH_RATE = 100.0

# Told each answer of a watched name (`Resolver.watch`).
Watcher = Callable[[tuple[str, ...]], None]


def lookup_bound(check_timeout: float) -> float:
    """
    How long one lookup may take when ``[dns] timeout`` is not given: two
    check timeouts, and at least 2 s (a query is sent again after 1 s
    without an answer). Longer than a check may wait, on purpose: a slow
    name server's answer still arrives, and serves the next check.
    """
    return max(2.0, 2 * check_timeout)


class NameSource(Protocol):
    """Where answers come from (`sentinel.lookup.NameLookup`)."""

    def local(self, name: str) -> Answer | None:
        """
        An answer known without asking anyone, or None; `LookupFailed` if
        what is known says the name has no usable address.
        """

    def lookup(self, name: str) -> Deferred[Answer]:
        """Ask the name servers; cancelling it stops asking."""

    def stop(self) -> None:
        """Release what the source holds."""


class CannotResolve(DNSLookupError):
    """
    A name without an address; its text is ``cannot resolve NAME: REASON``.
    `shortage` is the errno when the lookup found no socket to ask with;
    `forgotten` is true when the name was dropped (`Resolver.forget`,
    `retain`, `stop`) before its lookup answered. Neither says anything
    of the name.
    """

    shortage: int | None = None
    forgotten = False

    def __str__(self) -> str:
        return str(self.args[0])


class _Cached(NamedTuple):
    addresses: tuple[str, ...] | None
    error: str
    expires: float
    fetched: float


class _Running(NamedTuple):
    lookup: Deferred[Answer]
    later: bool
    # When it may give way to a name asked for the first time (if it is one).
    give_way_at: float | None


class Resolver(Service):
    """
    Resolves host names to their addresses; see the module docstring. As
    a service, it cancels every lookup and timer when the agent stops.
    """

    def __init__(
        self,
        reactor: Any,
        source: NameSource | None = None,
        bound: float = lookup_bound(0.5),
    ) -> None:
        self._reactor = reactor
        self.bound = bound
        self._source = source or NameLookup(reactor, DNSConfig(), bound)
        self._cache: dict[str, _Cached] = {}
        self._failing: set[str] = set()
        # Every name with a lookup queued or in flight, and who waits for it.
        self._waiters: dict[str, list[Deferred[tuple[str, ...]]]] = {}
        self._queued: deque[str] = deque()
        self._queued_later: deque[str] = deque()
        self._running: dict[str, _Running] = {}
        self._giving_way: set[str] = set()
        self._running_later = 0
        self._dispatching = False
        self._stopped = False
        # Watched names, who watches each, and when each is looked up
        # again (a heap of those times, entries moved since left in it);
        # the background lookups that may start now, and when that was.
        self._watchers: dict[str, set[Watcher]] = {}
        self._refresh_at: dict[str, float] = {}
        self._refreshes: list[tuple[float, str]] = []
        self._refresh_timer: IDelayedCall | None = None
        self._refresh_room = REFRESH_RATE
        self._refresh_counted_at = reactor.seconds()

    @classmethod
    def from_config(
        cls, reactor: Any, config: DNSConfig, check_timeout: float
    ) -> Resolver:
        """The agent's resolver, from its ``[dns]`` table and check timeout."""
        bound = config.timeout or lookup_bound(check_timeout)
        return cls(reactor, NameLookup(reactor, config, bound), bound)

    def resolve(self, host: str) -> Deferred[str]:
        """
        An address for `host` (the first of `addresses`). Cancel the
        Deferred to stop waiting; the lookup itself goes on to its bound.
        """
        return self.addresses(host).addCallback(_first)

    def addresses(
        self, host: str, fresh_since: float | None = None
    ) -> Deferred[tuple[str, ...]]:
        """
        Every address of `host` (at least one, in the answer's order, at
        most `sentinel.addresses.MAX_ADDRESSES`). Cancel the Deferred to
        stop waiting; the lookup itself goes on to its bound. With
        `fresh_since`, an answer fetched before then is asked again (and
        serves on, within its TTL, if that lookup fails), unless every
        lookup slot is taken or names wait for one: an early lookup never
        queues (thousands of instances reconnecting at once take their
        answers within their TTL, as before).
        """
        if is_address(host):
            return succeed((host,))
        name = host.lower()
        cached = self._cache.get(name)
        if (
            cached is not None
            and cached.expires > self._reactor.seconds()
            and (
                fresh_since is None
                or cached.fetched >= fresh_since
                or (name not in self._waiters and self._busy())
            )
        ):
            if cached.addresses is None:
                return fail(CannotResolve(cached.error))
            return succeed(cached.addresses)
        if self._stopped:
            return fail(CannotResolve(f"cannot resolve {name}: the agent is stopping"))
        waiters = self._waiters.get(name)
        if waiters is None:
            try:
                local = self._source.local(name)
            except LookupFailed as e:
                return fail(self._failed(name, str(e)))
            if local is not None:
                self._remember(name, local)
                return succeed(local.addresses)
            waiters = self._waiters[name] = []
            queue = self._queued_later if name in self._failing else self._queued
            queue.append(name)
        waiter: Deferred[tuple[str, ...]] = Deferred(
            lambda d: _discard(self._waiters, name, d)
        )
        waiters.append(waiter)
        self._dispatch()
        return waiter

    def _busy(self) -> bool:
        """Whether a lookup started now would wait for a slot."""
        return (
            len(self._running) >= MAX_LOOKUPS
            or bool(self._queued)
            or bool(self._queued_later)
        )

    def watch(self, host: str, watcher: Watcher) -> None:
        """
        Look `host` up again in the background while watched, and tell
        `watcher` every answer, the previous one's addresses added (the
        module docstring). A literal address is not watched.
        """
        if is_address(host):
            return
        name = host.lower()
        watchers = self._watchers.get(name)
        if watchers is None:
            watchers = self._watchers[name] = set()
        watchers.add(watcher)
        if name not in self._refresh_at:
            cached = self._cache.get(name)
            now = self._reactor.seconds()
            due = now
            if cached is not None:
                due = max(cached.expires, cached.fetched + REFRESH_FLOOR)
            self._refresh_later(name, due - now)

    def unwatch(self, host: str, watcher: Watcher) -> None:
        """Stop telling `watcher`; a name nobody watches is not refreshed."""
        name = host.lower()
        watchers = self._watchers.get(name)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._watchers[name]
                self._refresh_at.pop(name, None)

    def retain(self, hosts: Iterable[str]) -> None:
        """Forget every name but `hosts` (call it with the configured hosts)."""
        wanted = {host.lower() for host in hosts}
        known = set(self._cache) | set(self._waiters) | self._failing
        self._forget(known - wanted, "nobody needs it any more")

    def forget(self, host: str) -> None:
        """
        Drop what is known about `host` and cancel its lookup; whoever still
        waits for it fails.
        """
        self._forget({host.lower()}, "nobody needs it any more")

    def stop(self) -> None:
        """Cancel every lookup; later calls fail at once."""
        self._stopped = True
        if self._refresh_timer is not None and self._refresh_timer.active():
            self._refresh_timer.cancel()
        self._refresh_timer = None
        self._forget(set(self._waiters), "the agent is stopping")
        self._source.stop()

    def stopService(self) -> None:
        """Stop with the agent: see `stop`."""
        super().stopService()
        self.stop()

    def stats(self) -> dict[str, int]:
        """Counters for /debug/stats: lookups in flight, queued, names kept."""
        return {
            "lookups_in_flight": len(self._running),
            "lookups_queued": len(self._queued) + len(self._queued_later),
            "names_cached": len(self._cache),
            "names_failing": len(self._failing),
        }

    def _forget(self, names: set[str], why: str) -> None:
        # Unqueue them all before cancelling any: a cancelled lookup frees
        # its slot for the next queued name, which must not be one of these.
        self._queued = deque(n for n in self._queued if n not in names)
        self._queued_later = deque(n for n in self._queued_later if n not in names)
        told = []
        for name in names:
            self._cache.pop(name, None)
            self._failing.discard(name)
            waiters = self._waiters.pop(name, None)
            if waiters is not None:
                told.append((name, waiters))
        for name, _ in told:
            running = self._running.get(name)
            if running is not None:
                running.lookup.cancel()
        for name, waiters in told:
            error = CannotResolve(f"cannot resolve {name}: {why}")
            error.forgotten = True
            for waiter in waiters:
                waiter.errback(error)

    def _dispatch(self) -> None:
        # A lookup that ends at once dispatches again; this loop takes over.
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while True:
                if len(self._running) >= MAX_LOOKUPS:
                    if not (self._queued and self._give_way()):
                        break
                if self._queued:
                    self._start(self._queued.popleft(), later=False)
                elif self._queued_later and self._running_later < MAX_LATER_LOOKUPS:
                    self._start(self._queued_later.popleft(), later=True)
                else:
                    break
        finally:
            self._dispatching = False

    def _give_way(self) -> bool:
        """
        Make room for a name asked for the first time: a first lookup still
        unanswered after GIVE_WAY_AFTER (most likely a name server that will
        never answer) is cancelled and asked again later, behind.
        """
        now = self._reactor.seconds()
        overdue = [
            name
            for name, running in self._running.items()
            if running.give_way_at is not None and running.give_way_at <= now
        ]
        if not overdue:
            return False
        self._giving_way.add(overdue[0])
        self._running[overdue[0]].lookup.cancel()
        return True

    def _start(self, name: str, later: bool) -> None:
        self._running_later += later
        try:
            lookup = self._source.lookup(name)
        except Exception:
            lookup = fail()
        give_way_at = None
        if not later:
            give_way_at = self._reactor.seconds() + GIVE_WAY_AFTER
            # Then a name waiting for a slot may take this one's.
            timer = self._reactor.callLater(GIVE_WAY_AFTER, self._dispatch)
            lookup.addBoth(_cancelling, timer)
        self._running[name] = _Running(lookup, later, give_way_at)
        lookup.addTimeout(self.bound, self._reactor)
        lookup.addBoth(self._finished, name, later)

    def _finished(self, result: Answer | Failure, name: str, later: bool) -> None:
        del self._running[name]
        self._running_later -= later
        if name in self._giving_way:
            self._giving_way.discard(name)
            self._queued_later.append(name)
            self._dispatch()
            return
        waiters = self._waiters.pop(name, None)
        if waiters is None:
            # Forgotten while in flight: nothing to keep, nobody to tell.
            self._dispatch()
            return
        kept = self._cache.get(name)
        if (
            isinstance(result, Failure)
            and kept is not None
            and kept.addresses is not None
            and kept.expires > self._reactor.seconds()
        ):
            # Asked before the answer's TTL was up (a refresh, a reconnect
            # that wanted a fresh one): the answer serves on until then.
            self._reason(result)  # Logs what nobody expected.
            self._refresh_later(name, REFRESH_FLOOR)
            for waiter in waiters:
                waiter.callback(kept.addresses)
        elif isinstance(result, Failure):
            shortage = _socket_shortage(result)
            if shortage is None:
                error = self._failed(name, self._reason(result))
            else:
                # The agent's shortage, not the name's: nothing is kept.
                error = CannotResolve(f"cannot resolve {name}: {self._reason(result)}")
                error.shortage = shortage
            for waiter in waiters:
                waiter.errback(error)
        else:
            self._remember(name, result)
            for waiter in waiters:
                waiter.callback(result.addresses)
        self._dispatch()

    def _failed(self, name: str, reason: str) -> CannotResolve:
        # Kept for FAILURE_TTL, so that a name that fails is not asked again
        # at every check.
        error = CannotResolve(f"cannot resolve {name}: {reason}")
        now = self._reactor.seconds()
        self._cache[name] = _Cached(None, str(error), now + FAILURE_TTL, now)
        self._failing.add(name)
        self._refresh_later(name, max(FAILURE_TTL, REFRESH_FLOOR))
        return error

    def _remember(self, name: str, answer: Answer) -> None:
        ttl = min(max(answer.ttl, MIN_TTL), MAX_TTL)
        self._failing.discard(name)
        now = self._reactor.seconds()
        before = self._cache.get(name)
        self._cache[name] = _Cached(answer.addresses, "", now + ttl, now)
        watchers = self._watchers.get(name)
        if not watchers:
            return
        last = () if before is None or before.addresses is None else before.addresses
        changed = set(last) != set(answer.addresses)
        self._refresh_later(
            name, REFRESH_CONFIRM if changed else max(ttl, REFRESH_FLOOR)
        )
        held = answer.addresses + tuple(a for a in last if a not in answer.addresses)
        for watcher in list(watchers):
            watcher(held)

    def _refresh_later(self, name: str, delay: float) -> None:
        # A watched name's next background lookup, `delay` from now.
        if name not in self._watchers:
            return
        due = self._reactor.seconds() + delay
        self._refresh_at[name] = due
        heapq.heappush(self._refreshes, (due, name))
        self._arm_refreshes()

    def _arm_refreshes(self) -> None:
        # One timer, for the first refresh due or room for one, whichever
        # is later.
        if not self._refreshes or self._stopped:
            return
        now = self._reactor.seconds()
        # Out of room: a whole 1/REFRESH_RATE s (a share of it could round
        # to no time at all, and the timer fire again at once).
        wait = self._refreshes[0][0] - now
        if self._refresh_room < 1:
            wait = max(wait, 1 / REFRESH_RATE)
        timer = self._refresh_timer
        if timer is not None and timer.active():
            if timer.getTime() <= now + wait:
                return
            timer.cancel()
        self._refresh_timer = self._reactor.callLater(max(wait, 0.0), self._refresh_due)

    def _refresh_due(self) -> None:
        # Every refresh due, as far as the rate leaves room; never raises
        # (a timer's function: nothing would arm the next).
        self._refresh_timer = None
        now = self._reactor.seconds()
        room = self._refresh_room + (now - self._refresh_counted_at) * REFRESH_RATE
        self._refresh_room = min(REFRESH_RATE, room)
        self._refresh_counted_at = now
        while self._refreshes and self._refreshes[0][0] <= now:
            due, name = self._refreshes[0]
            if self._refresh_at.get(name) != due:
                heapq.heappop(self._refreshes)  # Moved since, or unwatched.
                continue
            if self._refresh_room < 1:
                break
            heapq.heappop(self._refreshes)
            del self._refresh_at[name]
            self._refresh_room -= 1
            try:
                self._refresh(name, now)
            except Exception:
                log.failure("looking {name} up again failed", name=name)
        self._arm_refreshes()

    def _refresh(self, name: str, now: float) -> None:
        # Asked again after the floor if this lookup ends keeping nothing
        # (the agent short of sockets); an answer or failure kept sets the
        # next time itself.
        self._refresh_later(name, REFRESH_FLOOR)
        self.addresses(name, fresh_since=now).addErrback(_ignored)

    def _reason(self, failure: Failure) -> str:
        reason = describe_failure(failure, self.bound)
        if reason is None:
            if failure.check(CancelledError):
                return "lookup cancelled"
            log.failure("looking up a name failed unexpectedly", failure)
            return "lookup failed (see the log)"
        return reason


def _socket_shortage(failure: Failure) -> int | None:
    """The errno of a lookup that found no socket to ask with, else None."""
    if failure.check(ConnectError):
        # A truncated answer's TCP connect (`sentinel.lookup`).
        return shortage_of(failure)
    error = failure.value
    if failure.check(CannotListenError):
        error = getattr(error, "socketError", None)
    elif not failure.check(OSError):
        return None
    code = getattr(error, "errno", None)
    return code if code in SHORTAGES else None


def _cancelling(result: object, timer: IDelayedCall) -> object:
    if timer.active():
        timer.cancel()
    return result


def _ignored(failure: Failure) -> None:
    # A background lookup's failure: kept in the cache, or the agent's own
    # shortage, and said by the next connect that meets it.
    return None


def _first(addresses: tuple[str, ...]) -> str:
    return addresses[0]


def _discard(
    waiters: dict[str, list[Deferred[tuple[str, ...]]]], name: str, d: object
) -> None:
    """Drop one waiter (its own deadline passed); the lookup goes on."""
    waiting = waiters.get(name)
    if waiting is not None and d in waiting:
        waiting.remove(d)

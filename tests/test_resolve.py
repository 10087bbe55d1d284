"""
Name lookups: the shared, bounded, cached `Resolver` over a fake source, and
`NameLookup` over twisted.names' real client driven in memory.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import (
    CannotListenError,
    ConnectBindError,
    ConnectionDone,
    ConnectionRefusedError,
    DNSLookupError,
    InvalidAddressError,
    NotConnectingError,
)
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.names import dns, error
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from sentinel import lookup as lookup_module
from sentinel.addresses import MAX_ADDRESSES
from sentinel.config import DNSConfig
from sentinel.dnsclient import NameServers
from sentinel.files import MAX_HOSTS_BYTES
from sentinel.lookup import (
    MAX_CNAMES,
    Answer,
    HostsFile,
    LookupFailed,
    NameLookup,
    search_hosts,
)
from sentinel.resolve import (
    FAILURE_TTL,
    GIVE_WAY_AFTER,
    MAX_LATER_LOOKUPS,
    MAX_LOOKUPS,
    MAX_TTL,
    MIN_TTL,
    REFRESH_CONFIRM,
    REFRESH_FLOOR,
    REFRESH_RATE,
    CannotResolve,
    Resolver,
    lookup_bound,
)

BOUND = 2.0


class FakeSource:
    """A `NameSource` whose lookups end when the test says so."""

    def __init__(self) -> None:
        self.hosts: dict[str, Answer] = {}
        self.blocked: dict[str, str] = {}
        self.asked: list[str] = []
        self.pending: dict[str, Deferred[Answer]] = {}
        self.cancelled: list[str] = []
        self.stopped = False

    def local(self, name: str) -> Answer | None:
        if name in self.blocked:
            raise LookupFailed(self.blocked[name])
        return self.hosts.get(name)

    def lookup(self, name: str) -> Deferred[Answer]:
        self.asked.append(name)
        d: Deferred[Answer] = Deferred(lambda _: self.cancelled.append(name))
        self.pending[name] = d
        return d

    def stop(self) -> None:
        self.stopped = True

    def answer(self, name: str, address: str = "192.0.2.1", ttl: float = 60) -> None:
        self.pending.pop(name).callback(Answer(address, ttl))

    def fail(self, name: str, reason: Exception) -> None:
        self.pending.pop(name).errback(reason)

    @property
    def in_flight(self) -> list[str]:
        return [name for name, d in self.pending.items() if not d.called]


class ResolverTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.source = FakeSource()
        self.resolver = Resolver(self.clock, self.source, BOUND)

    def lookup_error(self, d: Deferred[str]) -> str:
        return str(self.failureResultOf(d, DNSLookupError).value)


class SharingTests(ResolverTestCase):
    def test_literal_addresses_at_once(self) -> None:
        """IPv4 and IPv6 addresses are returned as they are, nothing asked."""
        self.assertEqual(
            self.successResultOf(self.resolver.resolve("10.0.0.5")), "10.0.0.5"
        )
        self.assertEqual(self.successResultOf(self.resolver.resolve("::1")), "::1")
        self.assertEqual(self.source.asked, [])

    def test_one_lookup_shared(self) -> None:
        """Everyone asking for a name (any case) waits on one lookup."""
        first = self.resolver.resolve("redis.example")
        second = self.resolver.resolve("Redis.Example")
        self.assertNoResult(first)
        self.assertEqual(self.source.asked, ["redis.example"])
        self.source.answer("redis.example", "192.0.2.7")
        self.assertEqual(self.successResultOf(first), "192.0.2.7")
        self.assertEqual(self.successResultOf(second), "192.0.2.7")

    def test_every_address_shared_and_kept(self) -> None:
        """
        `addresses` gives every address of the answer, in order, to each
        waiter and from the cache; `resolve` the first; a literal address
        is one address.
        """
        first = self.resolver.addresses("redis.example")
        self.pending_answer("redis.example", ("192.0.2.7", "192.0.2.8"))
        self.assertEqual(self.successResultOf(first), ("192.0.2.7", "192.0.2.8"))
        self.assertEqual(
            self.successResultOf(self.resolver.addresses("redis.example")),
            ("192.0.2.7", "192.0.2.8"),
        )
        self.assertEqual(
            self.successResultOf(self.resolver.resolve("redis.example")), "192.0.2.7"
        )
        self.assertEqual(self.successResultOf(self.resolver.addresses("::1")), ("::1",))
        self.assertEqual(self.source.asked, ["redis.example"])

    def pending_answer(self, name: str, addresses: tuple[str, ...]) -> None:
        self.source.pending.pop(name).callback(Answer(addresses[0], 60, addresses[1:]))

    def test_cancelling_a_waiter_leaves_the_lookup(self) -> None:
        """
        A waiter whose own deadline passed is dropped; the lookup goes on,
        others still get its answer, and a later asker joins it.
        """
        first = self.resolver.resolve("redis.example")
        second = self.resolver.resolve("redis.example")
        first.cancel()
        self.failureResultOf(first, CancelledError)
        second.cancel()
        self.failureResultOf(second, CancelledError)
        third = self.resolver.resolve("redis.example")
        self.assertEqual(self.source.cancelled, [])
        self.assertEqual(self.source.asked, ["redis.example"])
        self.source.answer("redis.example")
        self.assertEqual(self.successResultOf(third), "192.0.2.1")

    def test_answer_without_waiters_is_kept(self) -> None:
        """Everyone gave up: the answer still serves the next asker at once."""
        waiter = self.resolver.resolve("redis.example")
        waiter.cancel()
        self.failureResultOf(waiter, CancelledError)
        self.source.answer("redis.example")
        self.assertEqual(
            self.successResultOf(self.resolver.resolve("redis.example")), "192.0.2.1"
        )
        self.assertEqual(len(self.source.asked), 1)

    def test_hosts_file_answers_take_no_slot(self) -> None:
        """A hosts-file name resolves at once even with every slot taken."""
        for i in range(MAX_LOOKUPS + 5):
            self.resolver.resolve(f"dead{i}.example")
        self.source.hosts["localhost"] = Answer("127.0.0.1", 1.0)
        self.assertEqual(
            self.successResultOf(self.resolver.resolve("localhost")), "127.0.0.1"
        )

    def test_blocked_locally(self) -> None:
        """
        A name the hosts file says has no usable address fails at once,
        without asking the name servers, and the failure is kept a while.
        """
        self.source.blocked["ads.example"] = "the hosts file maps it to 0.0.0.0"
        d = self.resolver.resolve("ads.example")
        self.assertEqual(
            self.lookup_error(d),
            "cannot resolve ads.example: the hosts file maps it to 0.0.0.0",
        )
        del self.source.blocked["ads.example"]
        self.lookup_error(self.resolver.resolve("ads.example"))
        self.assertEqual(self.source.asked, [])


class CacheTests(ResolverTestCase):
    def resolved(self, ttl: float) -> None:
        d = self.resolver.resolve("redis.example")
        self.source.answer("redis.example", ttl=ttl)
        self.successResultOf(d)

    def asks_after(self, seconds: float) -> bool:
        """Whether resolving again `seconds` later starts a lookup."""
        asked = len(self.source.asked)
        self.clock.advance(seconds)
        self.resolver.resolve("redis.example")
        return len(self.source.asked) > asked

    def test_answer_kept_for_its_ttl(self) -> None:
        """An answer is reused until its TTL, then asked again."""
        self.resolved(30)
        self.assertFalse(self.asks_after(29.9))
        self.assertTrue(self.asks_after(0.2))

    def test_ttl_floor(self) -> None:
        """A TTL of 0 is kept MIN_TTL seconds: many instances, one lookup."""
        self.resolved(0)
        self.assertFalse(self.asks_after(MIN_TTL - 0.1))
        self.assertTrue(self.asks_after(0.2))

    def test_ttl_ceiling(self) -> None:
        """A day's TTL is kept only MAX_TTL seconds."""
        self.resolved(86400)
        self.assertFalse(self.asks_after(MAX_TTL - 1))
        self.assertTrue(self.asks_after(2))

    def test_failure_remembered_briefly(self) -> None:
        """
        A failure fails the next askers at once, with the same text, for
        FAILURE_TTL seconds; then the name is asked again.
        """
        d = self.resolver.resolve("gone.example")
        self.source.fail("gone.example", LookupFailed("no such name"))
        self.assertEqual(
            self.lookup_error(d), "cannot resolve gone.example: no such name"
        )
        self.clock.advance(FAILURE_TTL - 0.1)
        again = self.resolver.resolve("gone.example")
        self.assertEqual(
            self.lookup_error(again), "cannot resolve gone.example: no such name"
        )
        self.assertEqual(self.source.asked, ["gone.example"])
        self.clock.advance(0.2)
        self.assertNoResult(self.resolver.resolve("gone.example"))
        self.assertEqual(self.source.asked, ["gone.example"] * 2)


class BoundTests(ResolverTestCase):
    def test_lookup_bounded(self) -> None:
        """
        A name server that never answers: the lookup is cancelled at its
        bound and its waiters told so in words.
        """
        d = self.resolver.resolve("black.example")
        self.clock.advance(BOUND - 0.01)
        self.assertNoResult(d)
        self.clock.advance(0.02)
        self.assertEqual(
            self.lookup_error(d),
            "cannot resolve black.example: no answer from name servers within 2 s",
        )
        self.assertEqual(self.source.cancelled, ["black.example"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_error_texts(self) -> None:
        """Name server errors read as a few words, never a repr."""
        cases = [
            (LookupFailed("no address"), "no address"),
            (error.DNSNameError(dns.Message()), "no such name"),
            (error.DNSQueryRefusedError(dns.Message()), "refused by the name server"),
            (error.DNSServerError(dns.Message()), "name server failure (SERVFAIL)"),
            (error.DNSQueryTimeoutError(7), "no answer from name servers within 2 s"),
            (
                CannotListenError("", 0, OSError(errno.EMFILE, "Too many open files")),
                "cannot open a socket: Too many open files",
            ),
        ]
        for i, (raised, reason) in enumerate(cases):
            name = f"n{i}.example"
            d = self.resolver.resolve(name)
            self.source.fail(name, raised)
            self.assertEqual(self.lookup_error(d), f"cannot resolve {name}: {reason}")

    def test_no_socket_is_the_agents_shortage(self) -> None:
        """
        A lookup that could not open its socket (out of file descriptors)
        names the shortage in its error and is not kept: the next asker
        asks again at once.
        """
        d = self.resolver.resolve("short.example")
        self.source.fail(
            "short.example",
            CannotListenError("", 0, OSError(errno.EMFILE, "Too many open files")),
        )
        failure = self.failureResultOf(d, CannotResolve)
        self.assertEqual(failure.value.shortage, errno.EMFILE)
        self.resolver.resolve("short.example")
        self.assertEqual(self.source.asked, ["short.example", "short.example"])

    def test_no_socket_for_tcp_is_the_agents_shortage(self) -> None:
        """
        So is a truncated answer's TCP connect that found no socket: the
        agent's shortage, not kept as the name's failure.
        """
        d = self.resolver.resolve("short.example")
        self.source.fail(
            "short.example", ConnectBindError(errno.EMFILE, "Too many open files")
        )
        failure = self.failureResultOf(d, CannotResolve)
        self.assertEqual(failure.value.shortage, errno.EMFILE)
        self.assertEqual(
            str(failure.value),
            "cannot resolve short.example: answer truncated over UDP, and TCP "
            "to the name server failed: too many open files",
        )
        self.resolver.resolve("short.example")
        self.assertEqual(self.source.asked, ["short.example", "short.example"])

    def test_unexpected_error_logged(self) -> None:
        """A bug in a lookup fails it in words, and is logged."""
        d = self.resolver.resolve("bug.example")
        self.source.fail("bug.example", ZeroDivisionError())
        self.assertEqual(
            self.lookup_error(d),
            "cannot resolve bug.example: lookup failed (see the log)",
        )
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_source_raising(self) -> None:
        """A source that raises instead of failing its Deferred is a failure too."""

        def raising(name: str) -> Deferred[Answer]:
            raise ZeroDivisionError()

        self.source.lookup = raising  # type: ignore[method-assign]
        d = self.resolver.resolve("bug.example")
        self.lookup_error(d)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(self.resolver.stats()["lookups_in_flight"], 0)


class FairnessTests(ResolverTestCase):
    def test_lookups_in_flight_bounded(self) -> None:
        """At most MAX_LOOKUPS at once; each one that ends lets the next go."""
        for i in range(MAX_LOOKUPS * 3):
            self.resolver.resolve(f"n{i}.example")
        self.assertEqual(len(self.source.in_flight), MAX_LOOKUPS)
        self.source.answer("n0.example")
        self.assertEqual(len(self.source.in_flight), MAX_LOOKUPS)
        self.assertEqual(self.source.asked[-1], f"n{MAX_LOOKUPS}.example")

    def test_dead_names_cannot_delay_a_good_one(self) -> None:
        """
        However many names never get an answer, asked again and again as
        probes do, a new name's lookup starts at once, and dead names never
        hold more than MAX_LATER_LOOKUPS slots once known to fail (200
        names new at once take 200 / MAX_LOOKUPS bounds to get there).
        """
        dead = [f"dead{i}.example" for i in range(200)]
        most_failing = 0
        for second in range(60):
            for name in dead:
                self.resolver.resolve(name).addErrback(lambda _: None)
            if second >= 30:
                most_failing = max(most_failing, len(self.source.in_flight))
            self.clock.advance(1.0)
        self.assertLessEqual(most_failing, MAX_LATER_LOOKUPS)
        good = self.resolver.resolve("good.example")
        self.assertEqual(self.source.asked[-1], "good.example")
        self.source.answer("good.example")
        self.assertEqual(self.successResultOf(good), "192.0.2.1")

    def test_unanswered_first_lookup_gives_way(self) -> None:
        """
        Every slot held by first lookups nobody answers: after
        GIVE_WAY_AFTER the oldest gives its slot to a name waiting for one,
        keeps its waiters, and is asked again later, to its full bound.
        """
        waiting = self.resolver.resolve("dead0.example")
        for i in range(1, MAX_LOOKUPS):
            self.resolver.resolve(f"dead{i}.example").addErrback(lambda _: None)
        good = self.resolver.resolve("good.example")
        self.assertNotIn("good.example", self.source.asked)
        self.clock.advance(GIVE_WAY_AFTER)
        self.assertEqual(self.source.cancelled[0], "dead0.example")
        self.source.answer("good.example")
        self.assertEqual(self.successResultOf(good), "192.0.2.1")
        self.assertNoResult(waiting)
        self.assertEqual(self.source.asked[-1], "dead0.example")
        self.clock.advance(BOUND)
        self.assertIn("no answer from name servers", self.lookup_error(waiting))

    def test_many_new_dead_names_at_once(self) -> None:
        """
        200 names nobody answers, asked at once before a good one: the good
        one is asked within 200 / MAX_LOOKUPS * GIVE_WAY_AFTER seconds.
        """
        for i in range(200):
            self.resolver.resolve(f"dead{i}.example").addErrback(lambda _: None)
        good = self.resolver.resolve("good.example")
        waited = 0.0
        while "good.example" not in self.source.asked:
            self.clock.advance(0.1)
            waited += 0.1
        self.assertLessEqual(waited, 200 / MAX_LOOKUPS * GIVE_WAY_AFTER + 0.5)
        self.source.answer("good.example")
        self.successResultOf(good)
        self.assertLessEqual(len(self.source.in_flight), MAX_LOOKUPS)

    def test_dead_names_asked_at_a_bounded_rate(self) -> None:
        """A dead name asked every second is looked up once per bound + FAILURE_TTL."""
        for _ in range(70):
            self.resolver.resolve("dead.example").addErrback(lambda _: None)
            self.clock.advance(1.0)
        self.assertLessEqual(
            self.source.asked.count("dead.example"), 70 / (BOUND + FAILURE_TTL) + 1
        )

    def test_waiting_state_bounded(self) -> None:
        """
        200 seconds of 100 names asked every second, half never answered:
        no waiter, lookup or timer outlives its bound.
        """
        for _ in range(200):
            for i in range(100):
                d = self.resolver.resolve(f"n{i}.example")
                self.clock.callLater(1.0, d.cancel)
                d.addErrback(lambda _: None)
            for name in self.source.in_flight:
                if int(name[1:].split(".")[0]) % 2 == 0:
                    self.source.answer(name, ttl=5)
            self.clock.advance(1.0)
        self.assertLessEqual(sum(map(len, self.resolver._waiters.values())), 100)
        self.assertLessEqual(len(self.clock.getDelayedCalls()), 100 + MAX_LOOKUPS)
        self.assertLessEqual(self.resolver.stats()["names_cached"], 100)


class RefreshTests(ResolverTestCase):
    """A watched name is looked up again in the background (module docstring)."""

    def setUp(self) -> None:
        super().setUp()
        self.told: list[tuple[str, ...]] = []

    def watched(self, name: str = "redis.example", ttl: float = 30) -> None:
        """`name` answered 192.0.2.1 with `ttl`, then watched."""
        d = self.resolver.addresses(name)
        self.source.answer(name, ttl=ttl)
        self.successResultOf(d)
        self.resolver.watch(name, self.told.append)

    def test_looked_up_again_when_the_ttl_is_up(self) -> None:
        """
        Nobody asking, a watched name is asked again when its TTL is up,
        and its watcher told the answer; an answer unchanged is asked
        again a TTL later.
        """
        self.watched(ttl=30)
        self.clock.advance(29.9)
        self.assertEqual(self.source.in_flight, [])
        self.clock.advance(0.2)
        self.assertEqual(self.source.in_flight, ["redis.example"])
        self.source.answer("redis.example", ttl=30)
        self.assertEqual(self.told, [("192.0.2.1",)])
        self.clock.advance(29.9)
        self.assertEqual(self.source.in_flight, [])
        self.clock.advance(0.2)
        self.assertEqual(self.source.in_flight, ["redis.example"])

    def test_floor(self) -> None:
        """A TTL of 0 is asked again after REFRESH_FLOOR, not every second."""
        self.watched(ttl=0)
        self.clock.advance(REFRESH_FLOOR - 0.1)
        self.assertEqual(self.source.in_flight, [])
        self.clock.advance(0.2)
        self.assertEqual(self.source.in_flight, ["redis.example"])

    def test_move_told_once_out_of_two_answers(self) -> None:
        """
        An answer without the old address is told with the old one added;
        the name is asked again REFRESH_CONFIRM later, and an answer
        without it again is told alone. A connect meanwhile gets the newest.
        """
        self.watched(ttl=30)
        self.clock.advance(30.1)
        self.source.answer("redis.example", "192.0.2.2", ttl=30)
        self.assertEqual(self.told, [("192.0.2.2", "192.0.2.1")])
        self.assertEqual(
            self.successResultOf(self.resolver.addresses("redis.example")),
            ("192.0.2.2",),
        )
        self.clock.advance(REFRESH_CONFIRM + 0.1)
        self.source.answer("redis.example", "192.0.2.2", ttl=30)
        self.assertEqual(self.told[-1], ("192.0.2.2",))

    def test_rotating_answers_never_lose_an_address(self) -> None:
        """
        A name server that answers each address in turn never has one out
        of two answers in a row: no watcher is told an answer without the
        address it connected to.
        """
        self.watched(ttl=0)
        for i in range(20):
            self.clock.advance(REFRESH_FLOOR + 0.1)
            self.source.answer("redis.example", f"192.0.2.{2 - i % 2}", ttl=0)
        self.assertEqual(len(self.told), 20)
        self.assertTrue(all("192.0.2.1" in told for told in self.told))

    def test_rate_bound(self) -> None:
        """
        Thousands of watched names of TTL 0 are asked again REFRESH_RATE a
        second at most, all together, and each in turn.
        """
        names = [f"n{i}.example" for i in range(2000)]
        for name in names:
            self.watched(name, ttl=0)
        asked = len(self.source.asked)
        for _ in range(100):
            self.clock.advance(0.1)
            for name in self.source.in_flight:
                self.source.answer(name, ttl=0)
        # 10 s: the floor's 5 s, then 5 s at the rate (its 1 s of room).
        refreshed = self.source.asked[asked:]
        self.assertLessEqual(len(refreshed), REFRESH_RATE * 6)
        self.assertGreaterEqual(len(refreshed), REFRESH_RATE * 5)
        self.assertEqual(len(set(refreshed)), len(refreshed))

    def test_failed_refresh_keeps_the_answer(self) -> None:
        """
        A refresh that fails before the TTL is up (asked again after an
        answer that changed) leaves the answer, which connects get.
        """
        self.watched(ttl=30)
        self.clock.advance(30.1)
        self.source.answer("redis.example", "192.0.2.2", ttl=30)
        self.clock.advance(REFRESH_CONFIRM + 0.1)
        self.source.fail("redis.example", error.DNSServerError())
        self.assertEqual(
            self.successResultOf(self.resolver.addresses("redis.example")),
            ("192.0.2.2",),
        )

    def test_fresh_since(self) -> None:
        """
        An answer fetched before `fresh_since` is asked again, and serves
        that asker if the lookup fails within its TTL; one fetched since
        is given at once.
        """
        self.watched(ttl=30)
        self.clock.advance(2)
        now = self.clock.seconds()
        fresh = self.resolver.addresses("redis.example", now - 1)
        self.assertEqual(self.source.in_flight, ["redis.example"])
        self.source.fail("redis.example", error.DNSServerError())
        self.assertEqual(self.successResultOf(fresh), ("192.0.2.1",))
        d = self.resolver.addresses("redis.example", now - 3)
        self.assertEqual(self.successResultOf(d), ("192.0.2.1",))

    def test_fresh_since_never_queues(self) -> None:
        """
        While every lookup slot is taken, an answer within its TTL serves
        an asker with `fresh_since` at once: an early lookup never waits
        in line (thousands of instances reconnecting at once).
        """
        self.watched(ttl=30)
        self.clock.advance(2)
        for i in range(MAX_LOOKUPS):
            self.resolver.addresses(f"busy{i}.example")
        d = self.resolver.addresses("redis.example", self.clock.seconds() - 1)
        self.assertEqual(self.successResultOf(d), ("192.0.2.1",))
        self.assertNotIn("redis.example", self.source.in_flight)

    def test_unwatched_name_not_refreshed(self) -> None:
        """Once nobody watches a name, it is not asked again by itself."""
        self.watched(ttl=30)
        self.resolver.unwatch("redis.example", self.told.append)
        self.clock.advance(300)
        self.assertEqual(self.source.in_flight, [])

    def test_stop_ends_refreshes(self) -> None:
        """Stopping cancels the refresh timer: nothing is left waiting."""
        self.watched(ttl=30)
        self.resolver.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class RetainTests(ResolverTestCase):
    def test_retain_forgets_the_rest(self) -> None:
        """
        Names not retained lose their cache and their lookups (in flight:
        cancelled; queued: never started); retained names keep theirs.
        Whoever waited for a forgotten name fails with `forgotten` set
        (no answer about the name, `sentinel.topology`); a failed lookup
        has it unset.
        """
        kept = self.resolver.resolve("kept.example")
        self.source.answer("kept.example")
        self.successResultOf(kept)
        for i in range(MAX_LOOKUPS + 4):
            self.resolver.resolve(f"old{i}.example").addErrback(lambda _: None)
        waiting = self.resolver.resolve("old0.example")
        self.resolver.retain(["Kept.example", "new.example"])
        forgotten = self.failureResultOf(waiting, CannotResolve).value
        self.assertTrue(forgotten.forgotten)
        self.assertEqual(
            str(forgotten), "cannot resolve old0.example: nobody needs it any more"
        )
        failed = self.resolver.resolve("gone.example")
        self.source.fail("gone.example", LookupFailed("no such name"))
        self.assertFalse(self.failureResultOf(failed, CannotResolve).value.forgotten)
        self.assertEqual(len(self.source.cancelled), MAX_LOOKUPS)
        self.assertEqual(self.resolver.stats()["lookups_queued"], 0)
        asked = len(self.source.asked)
        self.successResultOf(self.resolver.resolve("kept.example"))
        self.assertNoResult(self.resolver.resolve("new.example"))
        self.assertEqual(self.source.asked[asked:], ["new.example"])
        self.assertEqual(
            sorted(call.getTime() for call in self.clock.getDelayedCalls()),
            [GIVE_WAY_AFTER, BOUND],
        )

    def test_forget_one(self) -> None:
        """A forgotten name is asked again, its old failure gone."""
        d = self.resolver.resolve("gone.example")
        self.source.fail("gone.example", LookupFailed("no such name"))
        self.lookup_error(d)
        self.resolver.forget("gone.example")
        self.assertNoResult(self.resolver.resolve("gone.example"))
        self.assertEqual(self.source.asked, ["gone.example"] * 2)

    def test_stop(self) -> None:
        """Stopping cancels every lookup; later asks fail at once."""
        waiting = self.resolver.resolve("redis.example")
        self.resolver.stop()
        self.assertIn("the agent is stopping", self.lookup_error(waiting))
        self.assertEqual(self.source.cancelled, ["redis.example"])
        self.assertTrue(self.source.stopped)
        self.lookup_error(self.resolver.resolve("other.example"))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ConfigTests(SynchronousTestCase):
    def test_bound(self) -> None:
        """The bound is [dns] timeout, else two check timeouts, at least 2 s."""
        self.assertEqual(lookup_bound(0.5), 2.0)
        self.assertEqual(lookup_bound(3.0), 6.0)
        clock = Clock()
        self.assertEqual(Resolver.from_config(clock, DNSConfig(), 3.0).bound, 6.0)
        self.assertEqual(
            Resolver.from_config(clock, DNSConfig(timeout=0.7), 3.0).bound, 0.7
        )

    def test_no_file_read_for_addresses(self) -> None:
        """An agent that only knows addresses reads no resolv.conf or hosts file."""
        resolver = Resolver.from_config(
            Clock(),
            DNSConfig(resolv_conf="/nonexistent", hosts_file="/nonexistent"),
            0.5,
        )
        self.successResultOf(resolver.resolve("127.0.0.1"))
        resolver.stop()


# NameLookup over twisted.names' client, its sockets in memory.


class FakeUDPPort:
    """What listenUDP returns: records what is sent, and whether it closed."""

    def __init__(self, protocol: Any, unreachable: bool = False) -> None:
        self.protocol = protocol
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.closed = False
        self.unreachable = unreachable
        protocol.makeConnection(self)

    def write(self, data: bytes, address: tuple[str, int]) -> None:
        if not (isIPAddress(address[0]) or isIPv6Address(address[0])):
            # As twisted's UDP port does.
            raise InvalidAddressError(address[0], "write() only accepts IP addresses")
        if self.unreachable:
            raise OSError(errno.ENETUNREACH, os.strerror(errno.ENETUNREACH))
        self.sent.append((data, address))

    def stopListening(self) -> None:
        self.closed = True

    def query(self, index: int = -1) -> dns.Message:
        message = dns.Message()
        message.fromStr(self.sent[index][0])
        return message

    def reply(
        self,
        rCode: int = dns.OK,
        answers: tuple[dns.RRHeader, ...] = (),
        truncated: bool = False,
        index: int | None = None,
        record_type: int | None = None,
    ) -> None:
        """
        Answer the `index`th query sent on this socket, or the last that
        asks for `record_type` (by default the type of the last record of
        `answers`, or A): a name's A and AAAA queries share one socket.
        """
        if index is None:
            if record_type is None:
                last = answers[-1].type if answers else dns.A
                record_type = last if last in (dns.A, dns.AAAA) else dns.A
            asking = [
                i
                for i in range(len(self.sent))
                if self.query(i).queries[0].type == record_type
            ]
            index = asking[-1] if asking else -1
        query = self.query(index)
        response = dns.Message(query.id, answer=1, rCode=rCode, trunc=truncated)
        response.queries = query.queries
        response.answers = list(answers)
        self.protocol.datagramReceived(response.toStr(), self.sent[index][1])


class FakeConnector:
    """What connectTCP returns: connects, or fails, when the test says."""

    def __init__(self, factory: Any, timeout: float) -> None:
        self.factory = factory
        self.timeout = timeout
        self.state = "connecting"
        self.transport: StringTransport | None = None
        self.protocol: Any = None

    def stopConnecting(self) -> None:
        if self.state != "connecting":
            raise NotConnectingError()
        self.state = "stopped"

    def connect(self) -> StringTransport:
        """The connection is made."""
        self.state = "connected"
        self.protocol = self.factory.buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        return self.transport

    def fail(self, reason: Exception) -> None:
        """The connect fails."""
        self.state = "disconnected"
        self.factory.clientConnectionFailed(self, Failure(reason))

    def query(self) -> dns.Message:
        """The query sent over the connection."""
        assert self.transport is not None
        data = self.transport.value()
        message = dns.Message()
        message.fromStr(data[2:])
        return message

    def send(self, message: bytes) -> None:
        """A DNS message from the name server (its length first)."""
        self.protocol.dataReceived(len(message).to_bytes(2, "big") + message)

    def reply(self, answers: tuple[dns.RRHeader, ...] = (), **fields: Any) -> None:
        """Answer the query sent over the connection."""
        query = self.query()
        response = dns.Message(fields.pop("id", query.id), answer=1, **fields)
        response.queries = query.queries
        response.answers = list(answers)
        self.send(response.toStr())

    def closed(self) -> bool:
        """Whether the query's connection, or its attempt, was ended."""
        if self.transport is None:
            return self.state != "connecting"
        return bool(self.transport.disconnecting)


class UDPClock(Clock):
    """A clock with in-memory UDP sockets, or none at all (EMFILE)."""

    def __init__(self) -> None:
        super().__init__()
        self.ports: list[FakeUDPPort] = []
        self.out_of_files = False
        self.unreachable = False
        self.tcp_connects: list[tuple[str, int]] = []
        self.connectors: list[FakeConnector] = []

    def listenUDP(
        self, port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192
    ) -> FakeUDPPort:
        if self.out_of_files:
            raise CannotListenError(
                interface, port, OSError(errno.EMFILE, "Too many open files")
            )
        self.ports.append(FakeUDPPort(protocol, self.unreachable))
        return self.ports[-1]

    def connectTCP(
        self, host: str, port: int, factory: Any, timeout: float = 30, *args: Any
    ) -> FakeConnector:
        self.tcp_connects.append((host, port))
        self.connectors.append(FakeConnector(factory, timeout))
        return self.connectors[-1]

    def open_ports(self) -> list[FakeUDPPort]:
        return [p for p in self.ports if not p.closed]


def a(name: str, address: str, ttl: int = 60) -> dns.RRHeader:
    return dns.RRHeader(name, dns.A, dns.IN, ttl, dns.Record_A(address, ttl))


def aaaa(name: str, address: str, ttl: int = 60) -> dns.RRHeader:
    return dns.RRHeader(name, dns.AAAA, dns.IN, ttl, dns.Record_AAAA(address, ttl))


def cname(name: str, target: str, ttl: int = 60) -> dns.RRHeader:
    return dns.RRHeader(name, dns.CNAME, dns.IN, ttl, dns.Record_CNAME(target, ttl))


class NameLookupTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = UDPClock()
        self.hosts = self.mktemp()
        with open(self.hosts, "w") as f:
            f.write("127.0.0.1 localhost\n::1 six.example\n")
        servers = NameServers(
            [("192.0.2.53", 53)], lookup_module.tries(BOUND), self.reactor
        )
        self.lookup = NameLookup(
            self.reactor,
            DNSConfig(hosts_file=self.hosts),
            BOUND,
            servers=servers,
            search=(),
        )

    def asked(self) -> list[tuple[str, int]]:
        """Every (name, type) queried, in order."""
        return [
            (q.name.name.decode(), q.type)
            for port in self.reactor.ports
            for i in range(len(port.sent))
            for q in port.query(i).queries
        ]

    def last(self) -> FakeUDPPort:
        return self.reactor.ports[-1]

    def reply(self, **kwargs: Any) -> None:
        """
        Answer the last A query as `kwargs` say, and its AAAA query with no
        record (a name of IPv4 only), unless the first answer ended both.
        """
        port = self.last()
        port.reply(**kwargs)
        if not port.closed:
            port.reply(record_type=dns.AAAA)

    def reason(self, d: Deferred[Answer]) -> str | None:
        failure = self.failureResultOf(d)
        return lookup_module.describe_failure(failure, BOUND)

    def test_ipv4(self) -> None:
        """
        An A answer (and an AAAA one without a record): its addresses in
        order, the least TTL; A and AAAA asked together, from one socket,
        closed.
        """
        d = self.lookup.lookup("redis.example")
        self.reply(
            answers=(
                a("redis.example", "192.0.2.1", 30),
                a("redis.example", "192.0.2.2"),
            )
        )
        self.assertEqual(
            self.successResultOf(d), Answer("192.0.2.1", 30, ("192.0.2.2",))
        )
        self.assertEqual(
            self.asked(), [("redis.example", dns.A), ("redis.example", dns.AAAA)]
        )
        self.assertEqual(len(self.reactor.ports), 1)
        self.assertEqual(self.reactor.open_ports(), [])

    def test_many_addresses_capped(self) -> None:
        """
        An answer of 600 A records keeps the first MAX_ADDRESSES, in order
        (no connect tries more: `sentinel.addresses`), and drops an
        address that names no host (0.0.0.0) among them.
        """
        d = self.lookup.lookup("redis.example")
        records = [a("redis.example", "0.0.0.0")]
        records += [
            a("redis.example", f"10.0.{i // 250}.{i % 250 + 1}") for i in range(600)
        ]
        self.reply(answers=tuple(records))
        answer = self.successResultOf(d)
        self.assertEqual(answer.addresses, ("10.0.0.1", "10.0.0.2", "10.0.0.3"))
        self.assertEqual(MAX_ADDRESSES, 4)

    def test_unspecified_answer_refused(self) -> None:
        """
        A name server answering 0.0.0.0 or :: (a filtering server's answer
        for a blocked name) gives no address: connecting to it would reach
        this host, and its Redis would be checked under the name.
        """
        d = self.lookup.lookup("ads.example")
        self.reply(answers=(a("ads.example", "0.0.0.0"),))
        self.assertEqual(
            self.reason(d),
            "the name server answered 0.0.0.0, which names no host (a blocked name?)",
        )
        d = self.lookup.lookup("ads6.example")
        self.last().reply()
        self.last().reply(answers=(aaaa("ads6.example", "::"),))
        self.assertEqual(
            self.reason(d),
            "the name server answered ::, which names no host (a blocked name?)",
        )

    def test_mapped_unspecified_answer_refused(self) -> None:
        """
        An AAAA answer of 0.0.0.0 mapped into IPv6 (``::ffff:0.0.0.0``, a
        fuzzed answer) gives no address either: connecting to it reaches
        this host as 0.0.0.0 does. A mapped address that names a host is
        still the answer.
        """
        for address in ("::ffff:0.0.0.0", "::ffff:0:0"):
            d = self.lookup.lookup("ads6.example")
            self.last().reply()
            self.last().reply(answers=(aaaa("ads6.example", address),))
            self.assertEqual(
                self.reason(d),
                "the name server answered ::ffff:0.0.0.0, which names no host "
                "(a blocked name?)",
            )
        d = self.lookup.lookup("mapped.example")
        self.last().reply()
        self.last().reply(answers=(aaaa("mapped.example", "::ffff:192.0.2.1"),))
        self.assertEqual(self.successResultOf(d).address, "::ffff:192.0.2.1")

    def test_group_address_answer_refused(self) -> None:
        """
        A name server answering a multicast or broadcast address (a
        hostile or broken one) gives no address: it names no one host, and
        a connect to it would fail with "no route to host", pointing at the
        network rather than at the answer. A unicast answer is still the
        answer.
        """
        for record, address in (
            (a, "224.0.0.1"),
            (a, "239.255.255.250"),
            (a, "255.255.255.255"),
            (aaaa, "ff02::1"),
            (aaaa, "::ffff:224.0.0.1"),
        ):
            d = self.lookup.lookup("group.example")
            if record is aaaa:
                self.last().reply()
            self.last().reply(answers=(record("group.example", address),))
            self.assertEqual(
                self.reason(d),
                f"the name server answered {address}, which names no one host",
            )
        d = self.lookup.lookup("unicast.example")
        self.reply(answers=(a("unicast.example", "192.0.2.7"),))
        self.assertEqual(self.successResultOf(d).address, "192.0.2.7")

    def test_ipv6_only_when_no_ipv4(self) -> None:
        """No A record: the AAAA answer's address is used."""
        d = self.lookup.lookup("redis.example")
        self.last().reply()
        self.assertNoResult(d)
        self.last().reply(answers=(aaaa("redis.example", "2001:db8::1"),))
        self.assertEqual(self.successResultOf(d), Answer("2001:db8::1", 60))

    def test_ipv6_after_ipv4(self) -> None:
        """
        A dual-stack name: its IPv6 addresses are kept after its IPv4 ones
        (a connect tries them in turn, IPv4 preferred), whichever answer
        came first, with the shorter TTL. Before, AAAA was not asked of a
        name with an A record: one whose IPv4 addresses were all dead was
        down for good, where redis-py and Go's dialer reach it at IPv6.
        """
        for first, second in ((dns.A, dns.AAAA), (dns.AAAA, dns.A)):
            d = self.lookup.lookup("dual.example")
            records = {
                dns.A: (a("dual.example", "192.0.2.1", 30),),
                dns.AAAA: (aaaa("dual.example", "2001:db8::1", 20),),
            }
            self.last().reply(answers=records[first])
            self.assertNoResult(d)
            self.last().reply(answers=records[second])
            self.assertEqual(
                self.successResultOf(d), Answer("192.0.2.1", 20, ("2001:db8::1",))
            )
            self.assertEqual(self.reactor.open_ports(), [])
            self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_family_share_of_the_cap(self) -> None:
        """
        An answer of 600 A records and one AAAA keeps 3 IPv4 addresses and
        the IPv6 one: with the other family present, one family keeps
        MAX_ADDRESSES - 1 at most, so that the AAAA is still tried. One of
        each family with more of the other: 1 and 3.
        """
        d = self.lookup.lookup("many.example")
        self.last().reply(
            answers=tuple(
                a("many.example", f"10.0.{i // 250}.{i % 250 + 1}") for i in range(600)
            )
        )
        self.last().reply(answers=(aaaa("many.example", "2001:db8::1"),))
        self.assertEqual(
            self.successResultOf(d).addresses,
            ("10.0.0.1", "10.0.0.2", "10.0.0.3", "2001:db8::1"),
        )
        d = self.lookup.lookup("many6.example")
        self.last().reply(answers=(a("many6.example", "192.0.2.1"),))
        self.last().reply(
            answers=tuple(aaaa("many6.example", f"2001:db8::{i}") for i in range(1, 9))
        )
        self.assertEqual(
            self.successResultOf(d).addresses,
            ("192.0.2.1", "2001:db8::1", "2001:db8::2", "2001:db8::3"),
        )

    def test_aaaa_never_answered(self) -> None:
        """
        A name server that drops AAAA queries (a broken middlebox): the A
        answer waits for it RESOLUTION_DELAY (50 ms) at most, never the
        query's bound (glibc stalls 5 s); the AAAA query is ended, and the
        answer kept PARTIAL_TTL at most (as a failure), so that the next
        lookup asks both again soon.
        """
        d = self.lookup.lookup("redis.example")
        self.last().reply(answers=(a("redis.example", "192.0.2.1", 60),))
        self.reactor.advance(lookup_module.RESOLUTION_DELAY - 0.001)
        self.assertNoResult(d)
        self.reactor.advance(0.001)
        self.assertEqual(
            self.successResultOf(d), Answer("192.0.2.1", lookup_module.PARTIAL_TTL)
        )
        self.assertEqual(lookup_module.PARTIAL_TTL, FAILURE_TTL)
        self.assertEqual(self.reactor.open_ports(), [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        # A late AAAA answer is dropped, unsaid.
        self.last().reply(answers=(aaaa("redis.example", "2001:db8::1"),))

    def test_one_family_fails(self) -> None:
        """
        A failed query (SERVFAIL, refused, no answer) with an address in the
        other answer fails nothing: that address is the answer, kept
        PARTIAL_TTL at most. With no address in the other, the A query's
        failure is the lookup's.
        """
        d = self.lookup.lookup("six.example")
        self.last().reply(rCode=dns.ESERVER)
        self.assertNoResult(d)
        self.last().reply(answers=(aaaa("six.example", "2001:db8::1"),))
        self.assertEqual(
            self.successResultOf(d),
            Answer("2001:db8::1", lookup_module.PARTIAL_TTL),
        )
        d = self.lookup.lookup("four.example")
        self.last().reply(record_type=dns.AAAA, rCode=dns.EREFUSED)
        self.last().reply(answers=(a("four.example", "192.0.2.1"),))
        self.assertEqual(self.successResultOf(d).address, "192.0.2.1")
        d = self.lookup.lookup("none.example")
        self.last().reply(rCode=dns.EREFUSED)
        self.last().reply(record_type=dns.AAAA)
        self.assertEqual(self.reason(d), "refused by the name server")
        d = self.lookup.lookup("none6.example")
        self.last().reply()
        self.reactor.advance(BOUND)
        self.assertEqual(self.reason(d), "no answer from name servers within 2 s")

    def test_no_such_name(self) -> None:
        """
        NXDOMAIN in either answer: 'no such name' once the other answers
        without an address, or RESOLUTION_DELAY (50 ms) after, never the
        other query's bound; the other query is ended with it (its socket
        closed), whatever it answers later.
        """
        for record_type in (dns.A, dns.AAAA):
            d = self.lookup.lookup("gone.example")
            self.last().reply(record_type=record_type, rCode=dns.ENAME)
            self.assertNoResult(d)
            self.reactor.advance(lookup_module.RESOLUTION_DELAY)
            self.assertEqual(self.reason(d), "no such name")
            self.assertEqual(self.reactor.open_ports(), [])
            self.assertEqual(self.reactor.getDelayedCalls(), [])
        d = self.lookup.lookup("gone.example")
        self.last().reply(rCode=dns.ENAME)
        self.last().reply(record_type=dns.AAAA)
        self.assertEqual(self.reason(d), "no such name")
        self.assertEqual(len(self.asked()), 6)

    def test_no_such_name_of_one_family(self) -> None:
        """
        A name server that says NXDOMAIN to the AAAA query of a name with A
        records (RFC 4074 lists such servers): the A answer is the answer,
        as glibc has it, kept PARTIAL_TTL at most; before, the name was no
        such name.
        """
        d = self.lookup.lookup("old.example")
        self.last().reply(answers=(a("old.example", "192.0.2.1", 60),))
        self.last().reply(record_type=dns.AAAA, rCode=dns.ENAME)
        self.assertEqual(
            self.successResultOf(d), Answer("192.0.2.1", lookup_module.PARTIAL_TTL)
        )
        d = self.lookup.lookup("old6.example")
        self.last().reply(rCode=dns.ENAME)
        self.last().reply(answers=(aaaa("old6.example", "2001:db8::1", 60),))
        self.assertEqual(self.successResultOf(d).address, "2001:db8::1")

    def test_no_address(self) -> None:
        """The name exists with neither A nor AAAA: 'no address'."""
        d = self.lookup.lookup("mail.example")
        self.reply()
        self.assertEqual(self.reason(d), "no address")

    def test_cname_followed(self) -> None:
        """CNAMEs are followed in the answer; records of other names are ignored."""
        d = self.lookup.lookup("redis.example")
        self.reply(
            answers=(
                a("evil.example", "203.0.113.66"),
                cname("redis.example", "real.example", 300),
                a("real.example", "192.0.2.9", 40),
            )
        )
        self.assertEqual(self.successResultOf(d), Answer("192.0.2.9", 40))

    def test_cname_loop(self) -> None:
        """A CNAME loop ends, and is said to be one."""
        d = self.lookup.lookup("loop.example")
        self.reply(
            answers=(
                cname("loop.example", "pool.example"),
                cname("pool.example", "loop.example"),
            )
        )
        self.assertEqual(self.reason(d), "its CNAMEs loop")

    def test_cname_chain_too_long(self) -> None:
        """
        A chain of more CNAMEs than are followed is said to be one, not
        'no address'; one just within the bound is followed.
        """
        for length, expected in ((MAX_CNAMES, None), (MAX_CNAMES + 1, "more")):
            name = f"chain{length}.example"
            chain = [f"c{i}.{name}" for i in range(length)]
            d = self.lookup.lookup(name)
            self.reply(
                answers=(
                    *(
                        cname(n, t)
                        for n, t in zip([name, *chain[:-1]], chain, strict=True)
                    ),
                    a(chain[-1], "192.0.2.7"),
                )
            )
            if expected is None:
                self.assertEqual(self.successResultOf(d).address, "192.0.2.7")
            else:
                self.assertEqual(
                    self.reason(d), f"more than {MAX_CNAMES} CNAMEs in a row"
                )

    def test_search_list(self) -> None:
        """
        A name without a dot is tried with each search domain first; one
        with a dot as given first; a trailing dot turns the list off.
        """
        self.lookup = NameLookup(
            self.reactor,
            DNSConfig(hosts_file=self.hosts),
            BOUND,
            servers=self.lookup._servers,
            search=["a.example", "b.example"],
        )
        d = self.lookup.lookup("redis")
        self.reply(rCode=dns.ENAME)
        self.reply(answers=(a("redis.b.example", "192.0.2.3"),))
        self.assertEqual(self.successResultOf(d).address, "192.0.2.3")
        self.assertEqual(
            [name for name, t in self.asked() if t == dns.A],
            ["redis.a.example", "redis.b.example"],
        )
        del self.reactor.ports[:]
        d = self.lookup.lookup("redis.x")
        self.reply(rCode=dns.ENAME)
        self.reply(answers=(a("redis.x.a.example", "192.0.2.4"),))
        self.successResultOf(d)
        d = self.lookup.lookup("redis.")
        self.reply(rCode=dns.ENAME)
        self.assertEqual(self.reason(d), "no such name")
        self.assertEqual(
            [name for name, t in self.asked() if t == dns.A],
            ["redis.x", "redis.x.a.example", "redis"],
        )

    def test_truncated_with_an_address(self) -> None:
        """
        A truncated answer that holds an address for the name is used as
        far as it goes: no TCP.
        """
        d = self.lookup.lookup("many.example")
        self.reply(answers=(a("many.example", "192.0.2.1"),), truncated=True)
        self.assertEqual(self.successResultOf(d).address, "192.0.2.1")
        self.assertEqual(self.reactor.tcp_connects, [])

    def truncated(self, name: str) -> tuple[Deferred[Answer], FakeConnector]:
        """A lookup of `name` answered over UDP with TC and no record."""
        d = self.lookup.lookup(name)
        self.reply(truncated=True)
        self.assertEqual(self.reactor.open_ports(), [])
        self.assertEqual(self.reactor.tcp_connects, [("192.0.2.53", 53)])
        [connector] = self.reactor.connectors
        return d, connector

    def assert_all_ended(self, connector: FakeConnector) -> None:
        """No socket, no connection, no timer left."""
        self.assertTrue(connector.closed())
        self.assertEqual(self.reactor.open_ports(), [])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_truncated_asked_over_tcp(self) -> None:
        """
        A truncated answer without an address (a name server that
        truncates on purpose) is asked again over TCP, of the name server
        that sent it, as glibc does; the connection ends with the answer.
        Before, the name was never resolved ("answer too large for UDP").
        """
        d, connector = self.truncated("huge.example")
        self.assertEqual(connector.timeout, BOUND)
        connector.connect()
        query = connector.query()
        self.assertEqual(query.queries, [dns.Query("huge.example", dns.A, dns.IN)])
        self.assertTrue(query.recDes)
        connector.reply(answers=(a("huge.example", "192.0.2.7", 30),))
        self.assertEqual(self.successResultOf(d), Answer("192.0.2.7", 30))
        self.assert_all_ended(connector)

    def test_truncated_cname_chain_asked_over_tcp(self) -> None:
        """A truncated answer whose CNAME chain stops short: over TCP."""
        d = self.lookup.lookup("alias.example")
        self.reply(answers=(cname("alias.example", "far.example"),), truncated=True)
        [connector] = self.reactor.connectors
        connector.connect()
        connector.reply(
            answers=(
                cname("alias.example", "far.example"),
                a("far.example", "192.0.2.8"),
            )
        )
        self.assertEqual(self.successResultOf(d).address, "192.0.2.8")

    def test_tcp_within_the_bound(self) -> None:
        """
        A name server that accepts over TCP and never answers (or
        trickles): the lookup fails at its bound, counted from its start,
        and the connection is aborted.
        """
        self.reactor.advance(0.5)
        d = self.lookup.lookup("stall.example")
        self.reactor.advance(0.5)
        self.reply(truncated=True)
        [connector] = self.reactor.connectors
        self.assertEqual(connector.timeout, BOUND - 0.5)
        connector.connect()
        connector.protocol.dataReceived(b"\x00")  # Half a length, no more.
        self.reactor.advance(BOUND - 0.5 - 0.001)
        self.assertNoResult(d)
        self.reactor.advance(0.001)
        self.assertEqual(self.reason(d), "no answer from name servers within 2 s")
        self.assert_all_ended(connector)

    def test_tcp_connect_timeout(self) -> None:
        """A TCP connect that never completes ends at the bound, stopped."""
        d, connector = self.truncated("stall.example")
        self.reactor.advance(BOUND)
        self.assertEqual(self.reason(d), "no answer from name servers within 2 s")
        self.assertEqual(connector.state, "stopped")
        self.assert_all_ended(connector)

    def test_tcp_refused(self) -> None:
        """TCP refused: said so, with what the UDP answer was."""
        d, connector = self.truncated("huge.example")
        connector.fail(ConnectionRefusedError(111, "Connection refused"))
        self.assertEqual(
            self.reason(d),
            "answer truncated over UDP, and TCP to the name server failed: "
            "connection refused",
        )
        self.assert_all_ended(connector)

    def test_tcp_closed_without_answer(self) -> None:
        """The name server closes TCP without an answer: said so."""
        d, connector = self.truncated("huge.example")
        connector.connect()
        connector.protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(
            self.reason(d),
            "answer truncated over UDP, and the name server closed TCP "
            "without answering",
        )
        self.assert_all_ended(connector)

    def test_tcp_first_message_ends_it(self) -> None:
        """
        The first message over TCP ends the connection, whatever it is: an
        answer under another id, or bytes that are no DNS message (a name
        server that floods costs one message read).
        """
        d, connector = self.truncated("huge.example")
        connector.connect()
        query = connector.query()
        connector.reply(answers=(a("huge.example", "192.0.2.7"),), id=query.id ^ 1)
        self.assertEqual(self.reason(d), "the name server answered another question")
        self.assert_all_ended(connector)
        self.reactor.advance(FAILURE_TTL)
        self.reactor.connectors.clear()
        d = self.lookup.lookup("garbage.example")
        self.reply(truncated=True)
        [connector] = self.reactor.connectors
        connector.connect()
        connector.send(b"\xff" * 5)
        self.assertEqual(
            self.reason(d), "answer truncated over UDP, and no DNS message over TCP"
        )
        self.assert_all_ended(connector)

    def test_cancel_ends_tcp(self) -> None:
        """Cancelling the lookup (its bound, or forget) ends the TCP query."""
        d, connector = self.truncated("huge.example")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(connector.state, "stopped")
        self.assert_all_ended(connector)
        self.reactor.connectors.clear()
        self.reactor.tcp_connects.clear()
        d, connector = self.truncated("huge2.example")
        connector.connect()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assert_all_ended(connector)

    def test_invalid_name(self) -> None:
        """A name the DNS cannot carry fails without a query."""
        d = self.lookup.lookup("x" * 64 + ".example")
        self.assertEqual(self.reason(d), "not a valid DNS name")
        self.assertEqual(self.reactor.ports, [])

    def test_refused(self) -> None:
        """REFUSED reads as such."""
        d = self.lookup.lookup("redis.example")
        self.reply(rCode=dns.EREFUSED)
        self.assertEqual(self.reason(d), "refused by the name server")

    def test_retries_on_one_socket(self) -> None:
        """
        Unanswered, the A and AAAA queries are sent again each second on
        their one socket, until the bound; then the socket is closed.
        """
        d = self.lookup.lookup("black.example")
        self.reactor.advance(1.0)
        self.assertEqual(len(self.reactor.ports), 1)
        self.assertEqual(len(self.last().sent), 4)
        self.assertEqual(len(self.reactor.open_ports()), 1)
        self.reactor.advance(1.0)
        self.assertEqual(self.reactor.open_ports(), [])
        self.assertEqual(self.reason(d), "no answer from name servers within 2 s")

    def test_quiet_protocols(self) -> None:
        """
        The datagram protocol of each try is not noisy: it writes no
        'Starting protocol' and 'Stopping protocol' lines.
        """
        lookup = NameLookup(
            self.reactor,
            DNSConfig(nameservers=(("192.0.2.53", 53),), hosts_file=self.hosts),
            BOUND,
        )
        d = lookup.lookup("black.example")
        self.reactor.advance(1.0)
        # Both tries of A and AAAA on one socket (sentinel.dnsclient).
        self.assertEqual(len(self.reactor.ports), 1)
        self.assertEqual(len(self.reactor.ports[0].sent), 4)
        self.assertEqual([p.protocol.noisy for p in self.reactor.ports], [0])
        self.reactor.advance(1.0)
        self.failureResultOf(d)

    def test_cancel_closes_the_socket(self) -> None:
        """Cancelling a lookup (its bound, or forget) closes its socket."""
        d = self.lookup.lookup("black.example")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.reactor.open_ports(), [])

    def test_out_of_files_not_stuck(self) -> None:
        """
        No socket to be had (EMFILE): the lookup fails saying so, and the
        next lookup of the name asks again (twisted's lookupAddress would
        wait forever).
        """
        self.reactor.out_of_files = True
        d = self.lookup.lookup("redis.example")
        self.assertEqual(self.reason(d), "cannot open a socket: Too many open files")
        self.reactor.out_of_files = False
        d = self.lookup.lookup("redis.example")
        self.reply(answers=(a("redis.example", "192.0.2.1"),))
        self.successResultOf(d)

    def test_send_fails(self) -> None:
        """A query that cannot be sent fails with the system's words."""
        self.reactor.unreachable = True
        d = self.lookup.lookup("redis.example")
        self.assertEqual(self.reason(d), "Network is unreachable")

    def resolv_conf(self, text: str) -> tuple[str, NameLookup]:
        """A resolv.conf holding `text`, and a NameLookup reading it."""
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        config = DNSConfig(resolv_conf=path, hosts_file=self.hosts)
        return path, NameLookup(self.reactor, config, BOUND)

    def server_asked(self, lookup: NameLookup) -> tuple[str, int]:
        """The name server a lookup asks, a minute later (it is answered)."""
        self.reactor.advance(60.0)
        d = lookup.lookup("redis.example")
        server = self.last().sent[-1][1]
        self.reply(answers=(a("redis.example", "192.0.2.8"),))
        self.successResultOf(d)
        return server

    def test_resolv_conf(self) -> None:
        """
        resolv.conf gives the name servers and the search list, read at the
        first lookup; nothing runs between lookups.
        """
        path, lookup = self.resolv_conf(
            "nameserver 192.0.2.54\nsearch a.example\noptions ndots:5\n"
        )
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        d = lookup.lookup("redis")
        self.assertEqual(self.last().sent[-1][1], ("192.0.2.54", 53))
        self.reply(answers=(a("redis.a.example", "192.0.2.8"),))
        self.assertEqual(self.successResultOf(d).address, "192.0.2.8")
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_resolv_conf_refused_at_runtime(self) -> None:
        """
        A resolv.conf that turns bad at runtime (here: over the size
        limit, 8 MiB) is not read: lookups go on with the last good name
        servers; one that changes well is followed.
        """
        path, lookup = self.resolv_conf("nameserver 192.0.2.54\n")
        self.assertEqual(self.server_asked(lookup), ("192.0.2.54", 53))
        with open(path + ".new", "w") as f:
            f.write("nameserver 192.0.2.99\n#")
            f.truncate(MAX_HOSTS_BYTES + 1)
        os.replace(path + ".new", path)
        self.assertEqual(self.server_asked(lookup), ("192.0.2.54", 53))
        with open(path + ".new", "w") as f:
            f.write("nameserver 192.0.2.55\n")
        os.replace(path + ".new", path)
        self.assertEqual(self.server_asked(lookup), ("192.0.2.55", 53))

    def test_resolv_conf_nameserver_not_an_address(self) -> None:
        """
        A resolv.conf nameserver that is not an IP address is left out
        (said once): the next one is asked; with none left, 127.0.0.1.
        """
        path, lookup = self.resolv_conf(
            "nameserver dns.example\nnameserver 192.0.2.54\n"
        )
        self.assertEqual(self.server_asked(lookup), ("192.0.2.54", 53))
        with open(path, "w") as f:
            f.write("nameserver dns.example\n")
        self.assertEqual(self.server_asked(lookup), ("127.0.0.1", 53))

    def test_name_server_not_an_address(self) -> None:
        """
        A name server that is not an address (if one got through) fails
        the lookup in words, not as an unexpected error.
        """
        lookup = NameLookup(
            self.reactor,
            DNSConfig(hosts_file=self.hosts),
            BOUND,
            servers=NameServers([("dns.example", 53)], (1.0,), self.reactor),
        )
        d = lookup.lookup("redis.example")
        self.assertEqual(self.reason(d), "name server dns.example is not an IP address")

    def test_resolv_conf_search_list_capped(self) -> None:
        """
        A search list of 5,000 domains: an unknown name costs 7 queries
        (6 domains and the name), not 5,001; a candidate too long for the
        DNS is not asked.
        """
        domains = " ".join(f"d{i}.example" for i in range(5000))
        _, lookup = self.resolv_conf(f"nameserver 192.0.2.54\nsearch {domains}\n")
        d = lookup.lookup("nx")
        for _ in range(7):
            self.reply(rCode=dns.ENAME)
        self.assertEqual(self.reason(d), "no such name")
        self.assertEqual(len(self.reactor.ports), 7)
        _, lookup = self.resolv_conf(f"search {'d' * 60}.{'e' * 60}.{'f' * 60}\n")
        d = lookup.lookup("x" * 63 + ".example")
        self.reply(rCode=dns.ENAME)
        self.assertEqual(self.reason(d), "no such name")
        self.assertEqual(len(self.reactor.ports), 8)

    def test_resolv_conf_unreadable(self) -> None:
        """A resolv.conf that cannot be read fails lookups, saying why."""
        path, lookup = self.resolv_conf("")
        os.unlink(path)
        os.mkdir(path)
        d = lookup.lookup("redis.example")
        self.assertEqual(self.reason(d), f"cannot read {path}: Is a directory")

    def test_hosts_file(self) -> None:
        """The hosts file answers locally, IPv4 first, any case."""
        self.assertEqual(self.lookup.local("LocalHost").address, "127.0.0.1")  # type: ignore[union-attr]
        self.assertEqual(self.lookup.local("six.example").address, "::1")  # type: ignore[union-attr]

    def test_hosts_file_every_address(self) -> None:
        """
        A name on several lines of the hosts file: its IPv4 addresses first,
        then its IPv6 ones, each in the file's order.
        """
        with open(self.hosts, "a") as f:
            f.write("::2 both.example\n10.0.0.1 both.example\n10.0.0.2 both.example\n")
        self.reactor.advance(2)
        answer = self.lookup.local("both.example")
        assert answer is not None
        self.assertEqual(answer.addresses, ("10.0.0.1", "10.0.0.2", "::2"))
        self.assertIsNone(self.lookup.local("redis.example"))

    def test_hosts_file_blocked_name(self) -> None:
        """
        A name the hosts file maps to the unspecified address alone fails
        (glibc would answer it without the DNS); beside a usable address,
        that address is the answer.
        """
        with open(self.hosts, "a") as f:
            f.write("0.0.0.0 ads.example\n:: ads.example\n::ffff:0.0.0.0 ads.example\n")
            f.write("0.0.0.0 both.example\n192.0.2.9 both.example\n")
        self.reactor.advance(lookup_module.HOSTS_CHECK_SECONDS)
        with self.assertRaises(LookupFailed) as raised:
            self.lookup.local("ads.example")
        self.assertEqual(
            str(raised.exception),
            "the hosts file maps it to 0.0.0.0, which names no host (a blocked name?)",
        )
        self.assertEqual(self.lookup.local("both.example"), Answer("192.0.2.9", 1.0))

    def test_hosts_file_odd_address(self) -> None:
        """
        An address Twisted takes and Python's ipaddress does not (an empty
        IPv6 scope) is no blocked name: it is the answer, as before.
        """
        with open(self.hosts, "a") as f:
            f.write("::1% odd.example\n")
        self.reactor.advance(lookup_module.HOSTS_CHECK_SECONDS)
        self.assertEqual(self.lookup.local("odd.example"), Answer("::1%", 1.0))

    def test_tries(self) -> None:
        """A query is sent again every second within the bound."""
        self.assertEqual(lookup_module.tries(2.0), (1.0, 1.0))
        self.assertEqual(lookup_module.tries(0.5), (0.5,))
        self.assertEqual(lookup_module.tries(2.5), (1.0, 1.0, 1.0))

    def test_tries_bounded(self) -> None:
        """
        However long the bound (any finite one), there are at most
        MAX_TRIES tries, spread evenly, lasting at least the bound.
        """
        self.assertEqual(lookup_module.tries(60.0), (1.0,) * 60)
        for bound in (61.0, 3e7, 1e308):
            timeouts = lookup_module.tries(bound)
            self.assertEqual(len(timeouts), lookup_module.MAX_TRIES)
            self.assertEqual(len(set(timeouts)), 1)
            self.assertGreaterEqual(sum(timeouts), bound * (1 - 1e-9))


class HostsFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.path = self.mktemp()

    def write(self, text: str) -> None:
        with open(self.path, "w") as f:
            f.write(text)

    def test_search(self) -> None:
        """hosts(5): comments, aliases, IPv6; whole names only; junk skipped."""
        text = (
            "# localhost comment\n127.0.0.1 localhost loopback # localhost2\n"
            "::1 localhost\nnot-an-address localhost\n10.0.0.1\n"
            "\ufffd localhost\n10.0.0.2 mylocalhost localhost.example\n"
            "10.0.0.3\tlocalhost"
        )
        self.assertEqual(
            search_hosts(text, "localhost"), ["127.0.0.1", "::1", "10.0.0.3"]
        )
        self.assertEqual(search_hosts(text, "loopback"), ["127.0.0.1"])
        self.assertEqual(search_hosts(text, "localhost2"), [])

    def test_any_case(self) -> None:
        """Names match in any case."""
        self.write("10.0.0.1 Redis.Example\n")
        hosts = HostsFile(self.path, self.clock)
        self.assertEqual(hosts.addresses("REDIS.example"), ["10.0.0.1"])

    def test_read_again_when_changed(self) -> None:
        """A change is seen once a second has passed, not before."""
        self.write("10.0.0.1 redis\n")
        hosts = HostsFile(self.path, self.clock)
        self.assertEqual(hosts.addresses("redis"), ["10.0.0.1"])
        self.write("10.0.0.2 redis other\n")
        self.assertEqual(hosts.addresses("redis"), ["10.0.0.1"])
        self.clock.advance(1.0)
        self.assertEqual(hosts.addresses("redis."), ["10.0.0.2"])

    def test_missing_file(self) -> None:
        """No file: no entries."""
        self.assertEqual(HostsFile(self.path, self.clock).addresses("redis"), [])

    def test_fifo_not_opened(self) -> None:
        """A FIFO in its place is not opened (it would block the reactor)."""
        os.mkfifo(self.path)
        self.assertEqual(HostsFile(self.path, self.clock).addresses("redis"), [])

    def test_too_large(self) -> None:
        """A file beyond MAX_HOSTS_BYTES is ignored, not read into memory."""
        self.patch(lookup_module, "MAX_HOSTS_BYTES", 10)
        self.write("10.0.0.1 redis\n")
        self.assertEqual(HostsFile(self.path, self.clock).addresses("redis"), [])

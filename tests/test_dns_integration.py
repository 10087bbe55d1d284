"""
The resolver on the real reactor against a real (fake) name server on a
loopback UDP port: black holes, NXDOMAIN, REFUSED, CNAME and IPv6 answers.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import DNSLookupError
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from sentinel import resolve
from sentinel.config import DNSConfig
from sentinel.resolve import Resolver
from tests.fakedns import FakeNameServer
from tests.polling import pause, wait_for

reactor: Any = _reactor

BOUND = 1.0
# Failures are remembered this long here (5 s in the agent), to keep it short.
FAILURE_TTL = 1.0


class ResolverAgainstNameServerTests(TestCase):
    def setUp(self) -> None:
        self.patch(resolve, "FAILURE_TTL", FAILURE_TTL)
        self.names = FakeNameServer(reactor).start()
        self.addCleanup(self.names.stop)
        self.names.addresses["good.test"] = ["127.0.0.1"]
        self.names.black_hole.update(f"dead{i}.test" for i in range(12))
        hosts = self.mktemp()
        open(hosts, "w").close()
        config = DNSConfig(
            nameservers=(self.names.address,), hosts_file=hosts, timeout=BOUND
        )
        self.resolver = Resolver.from_config(reactor, config, 0.25)
        self.addCleanup(self.settle)

    async def settle(self) -> None:
        self.resolver.stop()
        # twisted.names' own timer for a cancelled query's try ends BOUND
        # after it was sent, at the latest.
        await wait_for(reactor, self.quiet, BOUND + 1, "twisted.names' timers")

    def quiet(self) -> bool:
        return not [
            call
            for call in reactor.getDelayedCalls()
            if "names" in getattr(call.func, "__module__", "")
            or "_clearFailed" in repr(call.func)
        ]

    async def timed(self, d: Deferred[str]) -> tuple[float, str]:
        """How long `d` took, and its address or error text."""
        started = reactor.seconds()
        try:
            result = await d
        except DNSLookupError as e:
            result = str(e)
        return reactor.seconds() - started, result

    def ask_dead(self) -> None:
        for i in range(12):
            self.resolver.resolve(f"dead{i}.test").addErrback(lambda _: None)

    async def test_black_holes_do_not_delay_a_good_name(self) -> None:
        """
        Twelve names whose server never answers, asked with a good one and
        again and again after: the good name answers at once, both times.
        """
        self.ask_dead()
        took, address = await self.timed(self.resolver.resolve("good.test"))
        self.assertEqual(address, "127.0.0.1")
        self.assertLess(took, BOUND)
        self.names.addresses["new.test"] = ["127.0.0.2"]
        for _ in range(int((BOUND + FAILURE_TTL) / 0.2) + 1):
            self.ask_dead()
            await pause(reactor, 0.2)
        took, address = await self.timed(self.resolver.resolve("new.test"))
        self.assertEqual(address, "127.0.0.2")
        self.assertLess(took, BOUND)

    async def test_black_hole_asked_at_a_bounded_rate(self) -> None:
        """
        A dead name asked ten times a second reaches its name server once
        per lookup bound plus FAILURE_TTL, not once per ask.
        """
        started = reactor.seconds()
        while reactor.seconds() - started < 2.5:
            self.resolver.resolve("dead0.test").addErrback(lambda _: None)
            await pause(reactor, 0.1)
        elapsed = reactor.seconds() - started
        # Two queries per lookup (A and AAAA, together): the bound is one try.
        self.assertLessEqual(
            self.names.queries["dead0.test"],
            2 * (1 + elapsed // (BOUND + FAILURE_TTL)),
        )
        _, error = await self.timed(self.resolver.resolve("dead0.test"))
        self.assertEqual(
            error, "cannot resolve dead0.test: no answer from name servers within 1 s"
        )

    async def test_no_such_name_at_once(self) -> None:
        """NXDOMAIN fails at once, in words."""
        took, error = await self.timed(self.resolver.resolve("nx.test"))
        self.assertEqual(error, "cannot resolve nx.test: no such name")
        self.assertLess(took, BOUND)

    async def test_refused_cname_and_ipv6(self) -> None:
        """REFUSED reads as such; a CNAME is followed; IPv6 when only that."""
        self.names.refused.add("closed.test")
        self.names.aliases["alias.test"] = "good.test"
        self.names.addresses["six.test"] = ["::1"]
        self.assertEqual(
            (await self.timed(self.resolver.resolve("closed.test")))[1],
            "cannot resolve closed.test: refused by the name server",
        )
        self.assertEqual(await self.resolver.resolve("alias.test"), "127.0.0.1")
        self.assertEqual(await self.resolver.resolve("six.test"), "::1")
        self.assertEqual(self.names.queries["six.test"], 2)

    async def test_quiet_sockets(self) -> None:
        """
        A socket per try, opened and closed, writes no log line (Twisted
        wrote four per try); the lookup's answer and error are as before.
        """
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        self.assertEqual(await self.resolver.resolve("good.test"), "127.0.0.1")
        _, error = await self.timed(self.resolver.resolve("dead0.test"))
        self.assertIn("no answer from name servers", error)
        await self.settle()
        self.assertEqual([formatEvent(event) for event in events], [])

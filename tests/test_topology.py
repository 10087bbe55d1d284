"""
Replica discovery on a Clock with fake probes: what a master's INFO adds
and removes, the grace period, every hostile or confused listing, and
reloads.
"""

from __future__ import annotations

import errno
from typing import Any

import attr
from twisted.internet.defer import Deferred, succeed
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from sentinel import topology as topology_module
from sentinel.churn import FLAP_WINDOW, LOG_WINDOW, LOGGED_PER_WINDOW
from sentinel.config import Config, RedisInstance
from sentinel.observation import Replication
from sentinel.protocol import parse_replication
from sentinel.resolve import CannotResolve, Resolver
from sentinel.topology import (
    MAX_NAME_LOOKUPS,
    MAX_PER_MASTER,
    Topology,
    replica_instance,
    replica_name,
)
from tests.fakes import FAILED, make_monitor
from tests.test_resolve import FakeSource

MASTER = RedisInstance(
    "m",
    "10.0.0.5",
    6379,
    username="u",
    password="secret",
    tls=True,
    drain_key="drain:{port}",
    discover_replicas=True,
)
R1 = ("10.0.0.6", 6379)
R2 = ("10.0.0.7", 6380)


def listing(*addresses: tuple[str, int]) -> Replication:
    """A master's INFO replication listing `addresses`."""
    return Replication(role="master", replicas=tuple(addresses))


class FakeNames:
    """
    Listed host names looked up: each lookup waits until `answer` (or
    answers at once from `known`); what was forgotten is kept in order.
    """

    def __init__(self) -> None:
        self.known: dict[str, tuple[str, ...]] = {}
        self.waiting: dict[str, list[Deferred[tuple[str, ...]]]] = {}
        self.asked: list[str] = []
        self.forgotten: list[str] = []

    def addresses(self, host: str) -> Deferred[tuple[str, ...]]:
        self.asked.append(host)
        if host in self.known:
            return succeed(self.known[host])
        waiter: Deferred[tuple[str, ...]] = Deferred()
        self.waiting.setdefault(host, []).append(waiter)
        return waiter

    def answer(self, host: str, *addresses: str) -> None:
        """`host`'s lookups answer `addresses` (none: the lookup fails)."""
        for waiter in self.waiting.pop(host, []):
            if addresses:
                waiter.callback(addresses)
            else:
                waiter.errback(CannotResolve(f"cannot resolve {host}: no such name"))
        if addresses:
            self.known[host] = addresses

    def forget(self, host: str) -> None:
        self.forgotten.append(host)
        self.known.pop(host, None)
        forgotten = CannotResolve(f"cannot resolve {host}: forgotten")
        forgotten.forgotten = True
        for waiter in self.waiting.pop(host, []):
            waiter.errback(forgotten)


class Fleet:
    """A monitor watching the configured instances, and its topology."""

    def __init__(
        self,
        *instances: RedisInstance,
        grace: float = 60.0,
        room: int = 10_000,
        source: FakeSource | None = None,
    ) -> None:
        """
        With `source`, listed names are looked up by a real `Resolver` on
        the fleet's clock, asking `source`; else by `FakeNames`.
        """
        self.monitor, self.clock, self.probes, self.publisher = make_monitor([])
        self.room = room
        self.names = FakeNames()
        names: Any = self.names
        if source is not None:
            names = self.resolver = Resolver(self.clock, source, 2.0)
        self.topology = Topology(self.monitor, lambda count: count <= self.room, names)
        self.config = Config(instances=(), agent_id="a", replica_grace=grace)
        self.reload(*instances)

    def reload(self, *instances: RedisInstance, grace: float | None = None) -> None:
        """Apply a config with `instances`, as the reloader does."""
        before = {i.name: i for i in self.config.instances}
        after = {i.name: i for i in instances}
        for name in before.keys() - after.keys():
            self.monitor.remove_instance(name)
        for name, instance in after.items():
            if name not in before:
                self.monitor.add_instance(instance)
            elif before[name] != instance:
                self.monitor.replace_instance(instance)
        values: dict[str, Any] = {"instances": tuple(instances)}
        if grace is not None:
            values["replica_grace"] = grace
        self.config = attr.evolve(self.config, **values)
        self.topology.configure(self.config)

    def lists(self, *addresses: tuple[str, int], master: str = "m") -> None:
        """`master` answers INFO listing `addresses`, now."""
        self.topology.observed(
            self.monitor.states[master], listing(*addresses), self.clock.seconds()
        )

    def discovered(self) -> list[str]:
        return sorted(n for n, s in self.monitor.states.items() if s.discovered)


class DiscoveryTests(SynchronousTestCase):
    """What a discoverer lists is watched, and goes after the grace period."""

    def test_listed_replicas_watched(self) -> None:
        """
        Each replica listed is watched under the master's name and its
        address, with the master's credentials, TLS and drain key, marked
        as discovered, discovering nothing itself.
        """
        fleet = Fleet(MASTER)
        fleet.lists(R1, ("::1", 6380))
        self.assertEqual(fleet.discovered(), ["m@10.0.0.6:6379", "m@[::1]:6380"])
        instance = fleet.monitor.states["m@10.0.0.6:6379"].instance
        self.assertEqual(
            instance,
            attr.evolve(
                MASTER,
                name="m@10.0.0.6:6379",
                host="10.0.0.6",
                port=6379,
                discover_replicas=False,
                discovered_by="m",
            ),
        )
        self.assertEqual(instance.password, "secret")
        self.assertEqual(fleet.topology.stats()["discovered"], 2)
        self.assertEqual(fleet.topology.watched, 2)

    def test_checked_and_published_like_others(self) -> None:
        """Through the monitor's loop: the master's INFO adds, and they are checked."""
        fleet = Fleet(MASTER)
        fleet.monitor.startService()
        fleet.probes["m"].replication = listing(R1)
        fleet.clock.advance(1.0)
        self.assertEqual(fleet.discovered(), [])  # Only the first check read INFO.
        for _ in range(9):
            fleet.clock.advance(1.0)
        self.assertEqual(fleet.discovered(), ["m@10.0.0.6:6379"])
        fleet.clock.advance(1.0)
        self.assertGreaterEqual(fleet.probes["m@10.0.0.6:6379"].checks, 1)
        published = {name for name, _ in fleet.publisher.published}
        self.assertIn("m@10.0.0.6:6379", published)

    def test_grace_period(self) -> None:
        """
        A replica no longer listed stays for the grace period, then goes
        (its node with it); one listed again meanwhile stays.
        """
        fleet = Fleet(MASTER, grace=60.0)
        fleet.lists(R1, R2)
        fleet.clock.advance(30.0)
        fleet.lists(R2)
        fleet.clock.advance(30.0)
        fleet.lists(R2)
        self.assertEqual(len(fleet.discovered()), 2)
        fleet.clock.advance(0.1)
        fleet.lists(R2)
        self.assertEqual(fleet.discovered(), ["m@10.0.0.7:6380"])
        self.assertEqual(fleet.publisher.removed, ["m@10.0.0.6:6379"])
        for _ in range(10):
            fleet.clock.advance(50.0)
            fleet.lists(R2, *([R1] if fleet.clock.seconds() % 100 else []))
        self.assertEqual(len(fleet.discovered()), 2)
        self.assertEqual(fleet.publisher.removed, ["m@10.0.0.6:6379"])

    def test_master_down_keeps_its_replicas(self) -> None:
        """
        While the master answers no INFO, nothing says its replicas are
        gone: they stay, however long.
        """
        fleet = Fleet(MASTER, grace=5.0)
        fleet.monitor.startService()
        fleet.probes["m"].replication = listing(R1)
        for _ in range(10):
            fleet.clock.advance(1.0)
        fleet.probes["m"].result = FAILED
        for _ in range(300):
            fleet.clock.advance(1.0)
        self.assertEqual(fleet.monitor.states["m"].health.status, "down")
        self.assertEqual(fleet.discovered(), ["m@10.0.0.6:6379"])

    def test_removed_elsewhere_is_added_again(self) -> None:
        """
        A replica the monitor stopped watching for another reason (the group
        moved its master to another agent) is forgotten here too: listed
        again, it is watched again.
        """
        fleet = Fleet(MASTER)
        fleet.lists(R1)
        fleet.monitor.remove_instance("m@10.0.0.6:6379")
        self.assertEqual(fleet.topology.watched, 0)
        fleet.lists(R1)
        self.assertEqual(fleet.discovered(), ["m@10.0.0.6:6379"])

    def test_only_discoverers_discover(self) -> None:
        """
        An instance without discover_replicas, and a discovered replica
        listing its own replicas (a chain), add nothing.
        """
        plain = attr.evolve(MASTER, name="p", host="10.0.1.1", discover_replicas=False)
        fleet = Fleet(MASTER, plain)
        fleet.lists(R1, master="p")
        self.assertEqual(fleet.discovered(), [])
        fleet.lists(R1)
        fleet.lists(R2, master="m@10.0.0.6:6379")
        self.assertEqual(fleet.discovered(), ["m@10.0.0.6:6379"])


class FailoverTests(SynchronousTestCase):
    """A failover is followed: the group is whatever its master now lists."""

    def failed_over(self) -> Fleet:
        """
        m found R1 and R2, then ``FAILOVER TO`` R1: m is a replica of R1,
        which lists m; R2, left in place, is chained through m.
        """
        fleet = Fleet(MASTER, grace=5.0)
        fleet.monitor.startService()
        fleet.probes["m"].replication = listing(R1, R2)
        for _ in range(10):
            fleet.clock.advance(1.0)
        self.assertEqual(fleet.discovered(), ["m@10.0.0.6:6379", "m@10.0.0.7:6380"])
        fleet.probes["m"].replication = Replication(
            role="slave", master_host=R1[0], master_port=R1[1], replicas=(R2,)
        )
        fleet.probes["m@10.0.0.6:6379"].replication = listing(("10.0.0.5", 6379))
        fleet.probes["m@10.0.0.7:6380"].replication = Replication(
            role="slave", master_host="10.0.0.5", master_port=6379
        )
        return fleet

    def test_failover_keeps_the_group(self) -> None:
        """
        The new master, and the replica chained through the discoverer,
        stay however long the new topology lasts.
        """
        fleet = self.failed_over()
        for _ in range(300):
            fleet.clock.advance(1.0)
        self.assertEqual(fleet.discovered(), ["m@10.0.0.6:6379", "m@10.0.0.7:6380"])
        self.assertEqual(fleet.publisher.removed, [])

    def test_new_master_lists_the_group(self) -> None:
        """
        The new master's INFO adds a replica it lists, and removes one that
        neither it nor the discoverer lists for the grace period; it never
        lists itself, and is never removed.
        """
        fleet = self.failed_over()
        fleet.clock.advance(20.0)
        r3 = ("10.0.0.8", 6381)
        fleet.probes["m"].replication = Replication(
            role="slave", master_host=R1[0], master_port=R1[1]
        )
        fleet.probes["m@10.0.0.6:6379"].replication = listing(("10.0.0.5", 6379), r3)
        for _ in range(30):
            fleet.clock.advance(1.0)
        self.assertEqual(fleet.discovered(), ["m@10.0.0.6:6379", "m@10.0.0.8:6381"])
        self.assertEqual(fleet.publisher.removed, ["m@10.0.0.7:6380"])
        self.assertEqual(fleet.topology.stats()["refused"], 0)

    def test_refusal_logged_once_after_failover(self) -> None:
        """
        What the new master lists and is not watched (a configured
        instance) is logged once, not again at each INFO of the
        discoverer, which then lists nothing.
        """
        configured = RedisInstance("c", "10.0.0.9", 6379)
        fleet = Fleet(MASTER, configured, grace=5.0)
        fleet.monitor.startService()
        fleet.probes["m"].replication = listing(R1)
        for _ in range(10):
            fleet.clock.advance(1.0)
        fleet.probes["m"].replication = Replication(
            role="slave", master_host=R1[0], master_port=R1[1]
        )
        fleet.probes["m@10.0.0.6:6379"].replication = listing(
            ("10.0.0.5", 6379), ("10.0.0.9", 6379)
        )
        with capturedLogs() as events:
            for _ in range(300):
                fleet.clock.advance(1.0)
        lines = [formatEvent(e) for e in events if "not watched" in formatEvent(e)]
        self.assertEqual(
            lines,
            [
                "m lists 1 replica(s) not watched, such as 10.0.0.9:6379"
                " (a configured instance)"
            ],
        )
        self.assertEqual(fleet.discovered(), ["m@10.0.0.6:6379"])

    def test_discoverer_as_replica_removes_nothing(self) -> None:
        """
        While the discoverer answers INFO as a replica of an instance it
        did not find, or without a role, none of its replicas go.
        """
        fleet = Fleet(MASTER, grace=5.0)
        fleet.lists(R1, R2)
        for replication in [
            Replication(role="slave", master_host="10.9.9.9", master_port=6379),
            Replication(role=None, error="INFO replication: ERR unknown command"),
        ]:
            fleet.clock.advance(100.0)
            fleet.topology.observed(
                fleet.monitor.states["m"], replication, fleet.clock.seconds()
            )
        self.assertEqual(len(fleet.discovered()), 2)

    def test_a_master_not_named_leads_nothing(self) -> None:
        """
        A found replica that reports master but that the discoverer, still
        a master, does not replicate from adds nothing, and goes once the
        discoverer has not listed it for the grace period.
        """
        fleet = Fleet(MASTER, grace=5.0)
        fleet.lists(R1)
        fleet.clock.advance(10.0)
        fleet.lists(R2, master="m@10.0.0.6:6379")
        self.assertEqual(fleet.discovered(), ["m@10.0.0.6:6379"])
        fleet.lists()
        self.assertEqual(fleet.discovered(), [])


class HostileMasterTests(SynchronousTestCase):
    """What a hostile or confused master lists is not all watched."""

    def setUp(self) -> None:
        self.warnings: list[dict[str, Any]] = []
        self.patch(
            topology_module.log, "warn", lambda f, **kw: self.warnings.append(kw)
        )

    def test_itself_duplicates_and_configured(self) -> None:
        """
        The master's own address, an address listed twice, and a configured
        instance's address are not added (the configured one is watched).
        """
        other = RedisInstance("other", "10.0.0.9", 7000)
        fleet = Fleet(MASTER, other)
        fleet.lists(("10.0.0.5", 6379), R1, R1, ("10.0.0.9", 7000))
        self.assertEqual(fleet.discovered(), ["m@10.0.0.6:6379"])
        self.assertEqual(len(fleet.monitor.states), 3)
        self.assertEqual(fleet.topology.stats()["refused"], 2)

    def test_addresses_that_name_no_one_host(self) -> None:
        """
        A listed address that names no one host is not added, and the
        warning says why: an unspecified one (0.0.0.0, ::, or 0.0.0.0
        mapped into IPv6, as a replica with ``replica-announce-ip 0.0.0.0``
        is listed), which Linux connects to the agent's own host, so that
        whatever Redis listens there would be published as the master's
        replica; a multicast or broadcast one, no replica's.
        """
        fleet = Fleet(MASTER)
        fleet.lists(
            ("0.0.0.0", 6379),
            ("::", 6379),
            ("::ffff:0.0.0.0", 6379),
            ("224.0.0.1", 6379),
            ("255.255.255.255", 6379),
            ("ff02::1", 6379),
            R1,
        )
        self.assertEqual(fleet.discovered(), ["m@10.0.0.6:6379"])
        self.assertEqual(fleet.topology.stats()["refused"], 6)
        self.assertEqual(
            [(w["host"], w["reason"]) for w in self.warnings],
            [
                (
                    "0.0.0.0",
                    "no host's address: a connect to it reaches the agent's own"
                    " host (the replica's replica-announce-ip?)",
                )
            ],
        )
        Fleet(MASTER).lists(("224.0.0.1", 6379))
        self.assertEqual(
            self.warnings[-1]["reason"], "a multicast or broadcast address"
        )

    def test_addresses_written_otherwise(self) -> None:
        """
        An IP address the master writes in another form than the one
        watched (IPv4 mapped into IPv6, which a connect reaches over IPv4;
        IPv6 in upper case or not compressed) is the same address: the
        master's own, a configured instance's (configured in any form) and
        a replica already watched are not watched again under a second
        name; a new replica is watched under its address's one form.
        """
        v6 = RedisInstance("v6", "0:0:0:0:0:0:0:1", 7001)
        other = RedisInstance("other", "10.0.0.9", 7000)
        fleet = Fleet(MASTER, other, v6)
        fleet.lists(R1)
        lines = [
            "ip=::ffff:10.0.0.5,port=6379",
            "ip=0:0:0:0:0:FFFF:a00:5,port=6379",
            "ip=::FFFF:10.0.0.9,port=7000",
            "ip=::1,port=7001",
            "ip=::ffff:10.0.0.6,port=6379",
            "ip=FD00:0:0::7,port=6380",
        ]
        info = "role:master\r\n" + "".join(
            f"slave{i}:{line},state=online,offset=1,lag=0\r\n"
            for i, line in enumerate(lines)
        )
        fleet.topology.observed(
            fleet.monitor.states["m"],
            parse_replication(info.encode()),
            fleet.clock.seconds(),
        )
        self.assertEqual(fleet.discovered(), ["m@10.0.0.6:6379", "m@[fd00::7]:6380"])
        # The master's two forms are one address: it, other and v6.
        self.assertEqual(fleet.topology.stats()["refused"], 3)

    def test_listed_host_names_judged_as_resolved(self) -> None:
        """
        A host name the master lists (a replica's replica-announce-ip may be
        one) is judged by the addresses it resolves to: one that resolves
        to the master's own address, a configured instance's or a replica's
        watched already is refused; until its lookup answers it is neither
        added nor refused; one that resolves to a new address, or to none,
        is watched under its name. Literal addresses are judged first.
        """
        other = RedisInstance("other", "10.0.0.9", 7000)
        fleet = Fleet(MASTER, other)
        names = fleet.names
        names.known.update(
            {
                "localhost": ("10.0.0.5",),
                "db.example": ("::ffff:10.0.0.9",),
                "r1.example": (R1[0],),
            }
        )
        listed = (
            ("localhost", 6379),
            ("db.example", 7000),
            ("r1.example", R1[1]),
            ("new.example", 7001),
            ("gone.example", 7002),
            R1,
        )
        fleet.lists(*listed)
        self.assertEqual(fleet.discovered(), ["m@10.0.0.6:6379"])
        self.assertEqual(
            [(w["count"], w["host"], w["reason"]) for w in self.warnings],
            [(3, "localhost", "its own address, as 10.0.0.5")],
        )
        self.assertEqual(fleet.topology.stats()["refused"], 3)
        names.answer("new.example", "10.0.0.8")
        names.answer("gone.example")
        fleet.lists(*listed)
        self.assertEqual(
            fleet.discovered(),
            ["m@10.0.0.6:6379", "m@gone.example:7002", "m@new.example:7001"],
        )
        self.assertEqual(fleet.topology.stats()["refused"], 3)

    def test_listed_host_name_lookups_bounded(self) -> None:
        """
        At most MAX_NAME_LOOKUPS lookups of listed names are in flight,
        whatever the masters list at each INFO; none is cancelled, and the
        answers for names no master lists any more are forgotten (in the
        resolver's cache too) at the next INFO, unless an instance watched
        has that host.
        """
        fleet = Fleet(MASTER)
        for round_ in range(3):
            fleet.lists(*[(f"r{i}-{round_}.example", 6379) for i in range(200)])
        self.assertEqual(len(fleet.names.asked), MAX_NAME_LOOKUPS)
        self.assertEqual(fleet.discovered(), [])
        for host in list(fleet.names.waiting):
            fleet.names.answer(host)
        fleet.lists(("r0-0.example", 6379))
        self.assertEqual(fleet.discovered(), ["m@r0-0.example:6379"])
        self.assertEqual(len(fleet.names.forgotten), MAX_NAME_LOOKUPS - 1)
        self.assertNotIn("r0-0.example", fleet.names.forgotten)
        fleet.names.answer("r0-0.example")
        fleet.lists()
        self.assertNotIn("r0-0.example", fleet.names.forgotten)

    def test_listed_name_forgotten_in_flight_waits(self) -> None:
        """
        A listed host name whose lookup the resolver dropped before it
        answered (a reload's `retain` keeps only the watched instances'
        hosts) is not taken for a name that resolves to nothing: it waits,
        and is judged by its next answer (here the master's own address:
        refused). Before, it was added at the next INFO, and the master
        watched and published a second time, as m@redis-m.example:6379.
        """
        source = FakeSource()
        fleet = Fleet(MASTER, source=source)
        listed = ("redis-m.example", 6379)
        fleet.lists(listed)
        self.assertEqual(source.in_flight, ["redis-m.example"])
        fleet.resolver.retain(["10.0.0.5"])
        fleet.lists(listed)
        self.assertEqual(fleet.discovered(), [])
        source.answer("redis-m.example", "10.0.0.5")
        fleet.lists(listed)
        self.assertEqual(fleet.discovered(), [])
        self.assertEqual(
            [w["reason"] for w in self.warnings], ["its own address, as 10.0.0.5"]
        )

    def test_listed_name_judged_again_by_each_answer(self) -> None:
        """
        A listed host name watched as it resolved to none (its name
        server not answering in time, or not knowing it yet) is judged
        again by each answer after: once it resolves to the master's own
        address, or to a replica watched already by its address, it goes
        (logged), and is refused as a new one would be. Before, it was
        watched for as long as it was listed, that Redis published twice.
        """
        fleet = Fleet(MASTER)
        names = fleet.names
        listed = (("redis-m.example", 6379), ("r1.example", R1[1]), R1)
        fleet.lists(*listed)
        names.answer("redis-m.example")
        names.answer("r1.example")
        fleet.lists(*listed)
        self.assertEqual(
            fleet.discovered(),
            ["m@10.0.0.6:6379", "m@r1.example:6379", "m@redis-m.example:6379"],
        )
        names.answer("redis-m.example", "10.0.0.5")
        names.answer("r1.example", R1[0])
        with capturedLogs() as events:
            fleet.lists(*listed)
        self.assertEqual(fleet.discovered(), ["m@10.0.0.6:6379"])
        self.assertEqual(
            sorted(formatEvent(e) for e in events if "removed" in formatEvent(e)),
            [
                "m@r1.example:6379: removed, already watched as m@10.0.0.6:6379,"
                " as 10.0.0.6",
                "m@redis-m.example:6379: removed, its own address, as 10.0.0.5",
            ],
        )
        self.assertEqual(fleet.topology.stats()["refused"], 2)

    def test_listed_name_lookup_without_a_socket_waits(self) -> None:
        """
        A listed host name whose lookup found no socket to ask with (the
        agent out of file descriptors: `CannotResolve.shortage`) says
        nothing of the name: it waits for an answer, as it would for a
        lookup in flight, and is not watched as a name resolving to none.
        """
        source = FakeSource()
        fleet = Fleet(MASTER, source=source)
        listed = ("redis-m.example", 6379)
        fleet.lists(listed)
        source.fail("redis-m.example", OSError(errno.EMFILE, "Too many open files"))
        fleet.lists(listed)
        self.assertEqual(fleet.discovered(), [])
        source.answer("redis-m.example", "10.0.0.5")
        fleet.lists(listed)
        self.assertEqual(fleet.discovered(), [])

    def test_configured_by_host_name(self) -> None:
        """
        A configured instance named by host name has the address its host
        resolved to as well (a master lists its replicas by IP): until its
        first check has resolved it, what the master lists is neither added
        nor refused; once resolved, that address is refused. The master's
        own resolved address is its own.
        """
        named = RedisInstance("b", "redis-b.example", 6379)
        fleet = Fleet(attr.evolve(MASTER, host="redis-m.example"), named)
        fleet.probes["m"].address = "10.0.0.5"
        fleet.lists(R1, ("10.0.0.5", 6379))
        # Only the master's own address is judged (refused) so far.
        self.assertEqual(
            (fleet.discovered(), fleet.topology.stats()["refused"]), ([], 1)
        )
        fleet.probes["b"].address = R1[0]
        fleet.lists(R1, ("10.0.0.5", 6379), R2)
        self.assertEqual(fleet.discovered(), ["m@10.0.0.7:6380"])
        self.assertEqual(fleet.topology.stats()["refused"], 2)

    def test_host_name_resolved_after_its_address_was_added(self) -> None:
        """
        A replica added while the configured instance named by host name
        could not be resolved (its first check failed) goes at the first
        INFO after the resolution is seen (within ALIASES_TTL).
        """
        named = RedisInstance("b", "redis-b.example", 6379)
        fleet = Fleet(MASTER, named)
        fleet.monitor.states["b"].health.observe(FAILED, fleet.clock.seconds())
        fleet.lists(R1)
        self.assertEqual(fleet.discovered(), ["m@10.0.0.6:6379"])
        fleet.probes["b"].address = R1[0]
        fleet.lists(R1)
        self.assertEqual(fleet.discovered(), ["m@10.0.0.6:6379"])
        fleet.clock.advance(topology_module.ALIASES_TTL)
        fleet.lists(R1)
        self.assertEqual(fleet.discovered(), [])
        self.assertEqual(fleet.publisher.removed, ["m@10.0.0.6:6379"])
        self.assertEqual(sorted(fleet.monitor.states), ["b", "m"])

    def test_name_taken_by_a_configured_instance(self) -> None:
        """A configured instance already named like the replica keeps its name."""
        squatter = RedisInstance("m@10.0.0.6:6379", "10.0.2.2", 1)
        fleet = Fleet(MASTER, squatter)
        fleet.lists(R1)
        self.assertEqual(fleet.discovered(), [])
        self.assertEqual(fleet.monitor.states["m@10.0.0.6:6379"].instance, squatter)

    def test_two_masters_list_one_replica(self) -> None:
        """The first master to list an address has it; the other does not."""
        second = attr.evolve(MASTER, name="n", host="10.0.0.8")
        fleet = Fleet(MASTER, second)
        fleet.lists(R1)
        fleet.lists(R1, master="n")
        self.assertEqual(fleet.discovered(), ["m@10.0.0.6:6379"])

    def test_bound_per_master(self) -> None:
        """Hundreds listed: MAX_PER_MASTER watched, the rest refused, logged once."""
        fleet = Fleet(MASTER)
        many = [(f"10.1.{i // 256}.{i % 256}", 6379) for i in range(256)]
        fleet.lists(*many)
        self.assertEqual(len(fleet.discovered()), MAX_PER_MASTER)
        self.assertEqual(len(self.warnings), 1)
        self.assertEqual(self.warnings[0]["count"], 256 - MAX_PER_MASTER)
        fleet.lists(*many)
        self.assertEqual(len(self.warnings), 1)

    def test_bound_in_all_and_open_files(self) -> None:
        """
        Past MAX_DISCOVERED in all, or when the open-file limit has no room
        left, nothing more is added.
        """
        self.patch(topology_module, "MAX_DISCOVERED", 3)
        second = attr.evolve(MASTER, name="n", host="10.0.0.8")
        fleet = Fleet(MASTER, second)
        fleet.lists(R1, R2)
        fleet.lists(("10.0.3.1", 1), ("10.0.3.2", 1), master="n")
        self.assertEqual(len(fleet.discovered()), 3)
        self.patch(topology_module, "MAX_DISCOVERED", 100)
        fleet.room = len(fleet.monitor.states)
        fleet.lists(("10.0.3.1", 1), ("10.0.3.2", 1), master="n")
        self.assertEqual(len(fleet.discovered()), 3)
        self.assertIn("open-file", str(self.warnings[-1]["reason"]))

    def test_flapping_master_adds_nothing_more(self) -> None:
        """
        A master listing a different set at every INFO adds at most
        MAX_PER_MASTER before its replicas that came and went show it
        flapping, then nothing more however long it goes on (/debug/stats
        names it); once its list is stable for FLAP_WINDOW, what it lists
        is watched again.
        """
        fleet = Fleet(MASTER, grace=60.0)
        for round_ in range(100):
            fleet.clock.advance(10.0)
            fleet.lists(*[(f"10.2.{round_}.{i}", 1) for i in range(50)])
            self.assertLessEqual(len(fleet.discovered()), MAX_PER_MASTER)
        stats = fleet.topology.stats()
        self.assertEqual(
            (stats["added"], stats["removed"], stats["flapping"]),
            (MAX_PER_MASTER, MAX_PER_MASTER, ["m"]),
        )
        self.assertEqual(fleet.discovered(), [])
        for _ in range(round(FLAP_WINDOW / 10.0)):
            fleet.clock.advance(10.0)
            fleet.lists(R1, R2)
        self.assertEqual(fleet.discovered(), [])
        fleet.clock.advance(10.0)
        fleet.lists(R1, R2)
        self.assertEqual(fleet.discovered(), ["m@10.0.0.6:6379", "m@10.0.0.7:6380"])
        self.assertEqual(fleet.topology.stats()["flapping"], [])

    def test_replicas_that_stayed_are_no_flapping(self) -> None:
        """
        Replicas listed for longer than FLAP_WINDOW and then gone (a
        failover, a scale-in) do not make their master flapping: new ones
        are added at once.
        """
        fleet = Fleet(MASTER, grace=5.0)
        many = [(f"10.3.0.{i}", 1) for i in range(MAX_PER_MASTER)]
        for _ in range(round(FLAP_WINDOW) + 1):
            fleet.lists(*many)
            fleet.clock.advance(1.0)
        for _ in range(10):
            fleet.lists()
            fleet.clock.advance(1.0)
        self.assertEqual(fleet.topology.stats()["removed"], MAX_PER_MASTER)
        fleet.lists(R1)
        self.assertEqual(fleet.discovered(), ["m@10.0.0.6:6379"])
        self.assertEqual(fleet.topology.stats()["flapping"], [])

    def test_log_lines_bounded(self) -> None:
        """
        However fast a master's list changes, its additions, removals and
        refusals log at most LOGGED_PER_WINDOW lines each a LOG_WINDOW, the
        rest summed up in one line.
        """
        fleet = Fleet(MASTER, grace=1.0)
        with capturedLogs() as events:
            for round_ in range(600):
                fleet.clock.advance(1.0)
                fleet.lists(*[(f"10.4.{round_ % 250}.{i}", 1) for i in range(30)])
        lines = [formatEvent(e) for e in events]
        minutes = fleet.clock.seconds() / LOG_WINDOW
        self.assertLessEqual(len(lines), (3 * LOGGED_PER_WINDOW + 2) * minutes)
        summaries = [line for line in lines if "not logged one by one" in line]
        self.assertIn("more replica(s) added", summaries[0])


class ReloadTests(SynchronousTestCase):
    """The config says who discovers; configured instances always win."""

    def test_reload_keeps_them(self) -> None:
        """A reload that keeps discovery keeps the replicas, state and all."""
        fleet = Fleet(MASTER)
        fleet.lists(R1)
        state = fleet.monitor.states["m@10.0.0.6:6379"]
        fleet.reload(MASTER, RedisInstance("new", "10.0.9.9", 1), grace=5.0)
        self.assertIs(fleet.monitor.states["m@10.0.0.6:6379"], state)
        self.assertEqual(fleet.topology.grace, 5.0)

    def test_discovery_off_or_master_gone(self) -> None:
        """Turning discovery off, or removing the master, removes its replicas."""
        fleet = Fleet(MASTER)
        fleet.lists(R1)
        fleet.reload(attr.evolve(MASTER, discover_replicas=False))
        self.assertEqual(fleet.discovered(), [])
        self.assertEqual(fleet.publisher.removed, ["m@10.0.0.6:6379"])
        fleet.reload(MASTER)
        fleet.lists(R1)
        fleet.reload()
        self.assertEqual(fleet.monitor.states, {})

    def test_changed_master_changes_its_replicas(self) -> None:
        """New credentials on the master reach its replicas (fresh checks)."""
        fleet = Fleet(MASTER)
        fleet.lists(R1, R2)
        fleet.reload(attr.evolve(MASTER, password="new"))
        for name in fleet.discovered():
            self.assertEqual(fleet.monitor.states[name].instance.password, "new")
        self.assertEqual(len(fleet.discovered()), 2)

    def test_configured_address_or_name_wins(self) -> None:
        """
        A reload configuring a discovered replica's address removes the
        discovered one; one configuring its name takes it over.
        """
        fleet = Fleet(MASTER)
        fleet.lists(R1, R2)
        same_address = RedisInstance("r1", *R1)
        same_name = RedisInstance("m@10.0.0.7:6380", "10.0.0.7", 6380)
        fleet.reload(MASTER, same_address, same_name)
        self.assertEqual(fleet.discovered(), [])
        self.assertEqual(sorted(fleet.monitor.states), ["m", "m@10.0.0.7:6380", "r1"])
        fleet.lists(R1, R2)
        self.assertEqual(fleet.discovered(), [])
        self.assertEqual(fleet.publisher.removed, ["m@10.0.0.6:6379"])


class NameTests(SynchronousTestCase):
    def test_names(self) -> None:
        """Names are znode-safe: the master's, @, the address (IPv6 bracketed)."""
        self.assertEqual(replica_name("cache-1", "10.0.0.6", 1), "cache-1@10.0.0.6:1")
        self.assertEqual(replica_name("c", "fe80::1", 2), "c@[fe80::1]:2")
        self.assertEqual(replica_instance(MASTER, "h", 3).discovered_by, "m")

"""The composition root: the services built, and what they are wired to."""

from __future__ import annotations

import gc
import resource
from typing import Any, cast

import attr
from twisted.application.service import IServiceCollection
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from sentinel import agent
from sentinel.config import Config, RedisInstance, ZooKeeperConfig
from sentinel.monitor import Monitor
from sentinel.pacing import ConnectPacer
from sentinel.probe import FAIR_SHARE, LATE_SHARE, MIN_CONNECT_TIMEOUT, RedisProbe
from sentinel.process import SETTLE_ROUNDS, ProcessPolicy
from sentinel.reload import ConfigReloader
from sentinel.resolve import Resolver
from tests.fakezk import FakeZooKeeper
from tests.httptest import agent_get


def config(**kw: Any) -> Config:
    instances = (RedisInstance("a", "127.0.0.1", 6379),)
    return Config(instances=instances, agent_id="me", **kw)


class ServicesTests(SynchronousTestCase):
    """What make_agent builds."""

    def test_without_zookeeper(self) -> None:
        """
        Resolver, connection pacer, monitor, the freshness watch and HTTP;
        no publisher.
        """
        top = agent.make_agent(config(), None, MemoryReactorClock())
        names = [s.name for s in top]
        self.assertEqual(names[:4], ["resolver", "connects", "monitor", "freshness"])
        self.assertNotIn("publisher", names)
        self.assertEqual(len(names), 5)

    def test_with_zookeeper_stops_after_monitor(self) -> None:
        """The publisher comes first, so that it is stopped last."""
        with_zookeeper = config(
            zookeeper=ZooKeeperConfig(hosts="127.0.0.1:2181"), http="none"
        )
        top = agent.make_agent(with_zookeeper, None, MemoryReactorClock())
        self.assertEqual(
            [s.name for s in top],
            ["resolver", "connects", "publisher", "monitor", "freshness"],
        )

    def test_no_instance_warned(self) -> None:
        """
        An agent built with no instance says so at warn, what to give
        (a reload, with a config file to reload), and is built all the
        same; one with instances says nothing of the kind.
        """
        empty = attr.evolve(config(http="none"), instances=())
        for built, reload, what in (
            (config(http="none"), None, None),
            (empty, None, "pass --redis"),
            (empty, lambda: empty, "reload it (SIGHUP)"),
        ):
            with capturedLogs() as events:
                top = agent.make_agent(built, reload, MemoryReactorClock())
            warned = [formatEvent(e) for e in events if e["log_level"] >= LogLevel.warn]
            self.assertIn("monitor", [s.name for s in top])
            if what is None:
                self.assertEqual(warned, [])
            else:
                [line] = warned
                self.assertIn("no Redis instance to watch", line)
                self.assertIn(what, line)

    def test_process_policy_first(self) -> None:
        """
        The process policy given comes first, so that the open-file limit is
        raised before anything listens, and it hears each round of the loop.
        """
        reactor = MemoryReactorClock()
        process = ProcessPolicy(reactor, 1)
        rounds: list[int] = []
        self.patch(process, "watched_for", lambda n, connecting: rounds.append(n))
        top = agent.make_agent(config(http="none"), None, reactor, process=process)
        self.assertIs(list(top)[0], process)
        monitor = cast(Monitor, IServiceCollection(top).getServiceNamed("monitor"))
        monitor.startService()
        reactor.advance(1.0)
        monitor.stopService()
        self.assertEqual(rounds, [1, 2])

    def test_replaced_zookeeper_client_told_to_the_policy(self) -> None:
        """
        With ZooKeeper, a replaced client's close is told to the process
        policy, which collects it if it was frozen (`ProcessPolicy.dropped`);
        without a policy, nobody is told.
        """
        reactor = MemoryReactorClock()
        fake = FakeZooKeeper(reactor)
        self.patch(agent, "ZooKeeper", lambda *args, **kwargs: fake)
        with_zk = config(zookeeper=ZooKeeperConfig(hosts="127.0.0.1:2181"), http="none")
        process = ProcessPolicy(reactor, 1)
        agent.make_agent(with_zk, None, reactor, process=process)
        self.assertEqual(fake.replaced_closed, process.dropped)
        fake.replaced_closed = None
        agent.make_agent(with_zk, None, reactor)
        self.assertIsNone(fake.replaced_closed)


class ProcessUntouchedTests(SynchronousTestCase):
    """An agent built and run without a process policy leaves the process be."""

    def test_no_limit_or_collector_change(self) -> None:
        """
        Built, started and run past every settle round, an agent without a
        process policy never sets a resource limit nor freezes, thaws or
        runs the garbage collector.
        """
        calls: list[str] = []
        self.patch(resource, "setrlimit", lambda *a: calls.append("setrlimit"))
        for name in ("freeze", "unfreeze", "collect"):
            self.patch(gc, name, lambda *a, name=name: calls.append(name))
        reactor = MemoryReactorClock()
        top = agent.make_agent(config(), None, reactor)
        top.startService()
        for _ in range(SETTLE_ROUNDS + 1):
            reactor.advance(1.0)
        top.stopService()
        self.assertEqual(calls, [])


class HealthWiringTests(SynchronousTestCase):
    """Every periodic task's restarts reach /healthz and /debug/stats."""

    def get(self, top: Any, path: str) -> tuple[int, Any]:
        return agent_get(self, top, path)

    def test_restarted_loop_fails_healthz(self) -> None:
        """
        After the check loop fails and restarts, /healthz is 503 naming it,
        and /debug/stats counts the restart.
        """
        reactor = MemoryReactorClock()
        top = agent.make_agent(config(), None, reactor)
        monitor = cast(Monitor, IServiceCollection(top).getServiceNamed("monitor"))
        top.startService()
        self.addCleanup(top.stopService)
        self.assertEqual(self.get(top, "/healthz")[0], 200)

        def broken(elapsed: int) -> None:
            raise RuntimeError("tick bug")

        self.patch(monitor, "tick", lambda scheduled_at=None: broken(1))
        reactor.advance(1.0)
        self.flushLoggedErrors(RuntimeError)
        code, body = self.get(top, "/healthz")
        self.assertEqual(code, 503)
        [reason] = body["reasons"]
        self.assertIn("the check loop task failed and was restarted", reason)
        self.assertIn("tick bug", reason)
        stats = self.get(top, "/debug/stats")[1]
        self.assertEqual(stats["tasks"]["check loop"]["restarts"], 1)


class HelloOffWiringTests(SynchronousTestCase):
    """The probes' count of HELLO switched off reaches /debug/stats."""

    def test_count_in_debug_stats(self) -> None:
        """
        /debug/stats counts the instances checked without HELLO, one count
        shared by every probe; /instances says when HELLO is tried again.
        """
        reactor = MemoryReactorClock()
        top = agent.make_agent(config(), None, reactor)
        monitor = cast(Monitor, IServiceCollection(top).getServiceNamed("monitor"))
        top.startService()
        self.addCleanup(top.stopService)
        self.assertEqual(
            agent_get(self, top, "/debug/stats")[1]["hello_off"], {"instances": 0}
        )
        probe = monitor.states["a"].probe
        self.assertIsNone(agent_get(self, top, "/instances/a")[1]["hello_off_until"])
        probe._hello_count.count += 1  # type: ignore[attr-defined]
        self.assertEqual(
            agent_get(self, top, "/debug/stats")[1]["hello_off"], {"instances": 1}
        )


class OwedBoundTests(SynchronousTestCase):
    """The bound on a reply owed follows the settings in force."""

    def test_reload_moves_the_owed_bound(self) -> None:
        """
        A probe's bound on a reply owed is interval x fall + timeout of
        the settings in force: 3.5 s at the defaults, 10.5 s once a reload
        sets fall 10, for a probe made before the reload too. (Before:
        the bound of the config the agent started with, for good.)
        """
        first = config(http="none")
        second = attr.evolve(first, fall=10)
        top = agent.make_agent(first, lambda: second, MemoryReactorClock())
        services = IServiceCollection(top)
        monitor = cast(Monitor, services.getServiceNamed("monitor"))
        probe = cast(RedisProbe, monitor.states["a"].probe)
        self.assertEqual(probe.owed_bound, 3.5)
        cast(ConfigReloader, services.getServiceNamed("reloader")).apply(second)
        self.assertEqual(probe.owed_bound, 10.5)


class RetimeTests(SynchronousTestCase):
    """What the probes and the pacer derive from the timeout follows a reload."""

    def test_reload_of_the_timeout_reaches_probes_and_pacer(self) -> None:
        """
        A reload from timeout 0.5 s to 2 s: a probe made before it, and one
        made for an instance the same reload adds, bound a connect at 2 s
        and excuse a check for 0.5 s of the agent's lateness, and the
        connect pacer tolerates a heartbeat late by its share of 2 s.
        (Before: the start's 1 s, 0.125 s and share of 0.5 s, for good,
        new probes included, while the checks' deadlines moved to 2 s.)
        """
        first = config(http="none", timeout=0.5)
        second = attr.evolve(
            first,
            timeout=2.0,
            interval=2.0,
            instances=(*first.instances, RedisInstance("b", "127.0.0.1", 6380)),
        )
        top = agent.make_agent(first, lambda: second, MemoryReactorClock())
        services = IServiceCollection(top)
        monitor = cast(Monitor, services.getServiceNamed("monitor"))
        pacer = cast(ConnectPacer, services.getServiceNamed("connects"))
        before = cast(RedisProbe, monitor.states["a"].probe)
        lag_target = pacer.lag_target
        self.assertEqual(before._connect_timeout, MIN_CONNECT_TIMEOUT)
        cast(ConfigReloader, services.getServiceNamed("reloader")).apply(second)
        added = cast(RedisProbe, monitor.states["b"].probe)
        for probe in (before, added):
            self.assertEqual(probe._connect_timeout, 2.0)
            self.assertEqual(probe._late_limit, LATE_SHARE * 2.0)
            self.assertEqual(probe._fair_time, FAIR_SHARE * 2.0)
        self.assertEqual(pacer.lag_target, lag_target * 4)


class ResolverWiringTests(SynchronousTestCase):
    """The resolver follows the config and stops with the agent."""

    def test_reload_retains_configured_names(self) -> None:
        """
        A reload that drops an instance makes the resolver forget its host
        name (no more lookups for it); stopping the agent stops every lookup.
        """
        reactor = MemoryReactorClock()
        first = Config(
            instances=(
                RedisInstance("a", "a.example", 6379),
                RedisInstance("b", "b.example", 6379),
            ),
            agent_id="me",
            http="none",
        )
        second = Config(instances=first.instances[:1], agent_id="me", http="none")
        top = agent.make_agent(first, lambda: second, reactor)
        services = IServiceCollection(top)
        resolver = cast(Resolver, services.getServiceNamed("resolver"))
        retained: list[set[str]] = []
        self.patch(resolver, "retain", lambda hosts: retained.append(set(hosts)))
        reloader = cast(ConfigReloader, services.getServiceNamed("reloader"))
        reloader.apply(second)
        self.assertEqual(retained, [{"a.example"}])

        resolver.startService()
        top.stopService()
        failure = self.failureResultOf(resolver.resolve("c.example"))
        self.assertIn("the agent is stopping", failure.getErrorMessage())


class ListingWarningTests(SynchronousTestCase):
    """The listings readers take are estimated at load and at each reload."""

    def test_estimated_at_load_and_reload(self) -> None:
        """
        With ZooKeeper, the agent warns of listings too long for readers
        (`sentinel.readers`) from the config it starts with, and again from
        each config a reload applies.
        """
        seen: list[list[str]] = []
        self.patch(
            agent,
            "warn_of_long_listings",
            lambda zookeeper, instances: seen.append([i.name for i in instances]),
        )
        first = config(zookeeper=ZooKeeperConfig(hosts="127.0.0.1:2181"), http="none")
        added = RedisInstance("b", "127.0.0.1", 6380)
        second = attr.evolve(first, instances=(*first.instances, added))
        top = agent.make_agent(first, lambda: second, MemoryReactorClock())
        self.assertEqual(seen, [["a"]])
        services = IServiceCollection(top)
        cast(ConfigReloader, services.getServiceNamed("reloader")).apply(second)
        self.assertEqual(seen, [["a"], ["a", "b"]])


class AgentNodeReloadTests(SynchronousTestCase):
    """The agent node says the config a reload applied at once."""

    def test_reload_rewrites_the_agent_node(self) -> None:
        """
        A reload from interval 1 s to 2 s rewrites the agent node with
        ``"interval": 2.0`` at once, not at the next heartbeat (before:
        1.0 for up to ``zookeeper.heartbeat``, 10 s by default and up to a
        day, while the agent ticked every 2 s).
        """
        reactor = MemoryReactorClock()
        fake = FakeZooKeeper(reactor)
        self.patch(agent, "ZooKeeper", lambda *args, **kwargs: fake)
        first = config(zookeeper=ZooKeeperConfig(hosts="127.0.0.1:2181"), http="none")
        second = attr.evolve(first, interval=2.0, timeout=1.0)
        top = agent.make_agent(first, lambda: second, reactor)
        services = IServiceCollection(top)
        publisher = services.getServiceNamed("publisher")
        publisher.startService()
        fake.connect()
        path = "/sentinel/agents/me"
        self.assertEqual(fake.document(path)["interval"], 1.0)
        reactor.advance(1.0)
        cast(ConfigReloader, services.getServiceNamed("reloader")).apply(second)
        reactor.advance(0)
        self.assertEqual(fake.document(path)["interval"], 2.0)
        self.assertEqual(fake.document(path)["heartbeat_at"], reactor.seconds())

"""The composition root: the open-file limit and the services built."""

from __future__ import annotations

import gc
import resource
import weakref

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from sentinel import agent
from sentinel.config import Config, RedisInstance, ZooKeeperConfig


class FdLimitTests(SynchronousTestCase):
    """The soft limit is raised; a config that cannot fit is refused."""

    def setUp(self) -> None:
        self.set_to: list[tuple[int, int]] = []
        self.patch(resource, "getrlimit", lambda _: (1024, 4096))
        self.patch(resource, "setrlimit", lambda _, v: self.set_to.append(v))

    def test_raised_to_hard_limit(self) -> None:
        """The soft limit goes up to the hard limit."""
        self.assertEqual(agent.raise_fd_limit(3000), 4096)
        self.assertEqual(self.set_to, [(4096, 4096)])

    def test_refused_when_it_cannot_fit(self) -> None:
        """More instances than descriptors: one clear line, no traceback."""
        with self.assertRaises(SystemExit) as caught:
            agent.raise_fd_limit(5000)
        message = str(caught.exception.code)
        self.assertIn("5000 instances need about 5064 open files", message)
        self.assertIn("limit is 4096", message)
        self.assertNotIn("\n", message)


class ServicesTests(SynchronousTestCase):
    """What make_agent builds."""

    def config(self, **kw: object) -> Config:
        instances = (RedisInstance("a", "127.0.0.1", 6379),)
        return Config(instances=instances, agent_id="me", **kw)  # type: ignore[arg-type]

    def test_without_zookeeper(self) -> None:
        """Monitor and HTTP; no publisher."""
        top = agent.make_agent(self.config(), None, MemoryReactorClock(), False)
        names = [s.name for s in top]
        self.assertIn("monitor", names)
        self.assertNotIn("publisher", names)
        self.assertEqual(len(names), 2)

    def test_with_zookeeper_stops_after_monitor(self) -> None:
        """The publisher comes first, so that it is stopped last."""
        config = self.config(
            zookeeper=ZooKeeperConfig(hosts="127.0.0.1:2181"), http="none"
        )
        top = agent.make_agent(config, None, MemoryReactorClock(), False)
        self.assertEqual([s.name for s in top], ["publisher", "monitor"])


class _Node:
    """A container that can be part of a reference cycle."""

    other: object = None


class GarbageCollectorTests(SynchronousTestCase):
    """Freezing start-up objects never keeps garbage for good."""

    def tearDown(self) -> None:
        gc.unfreeze()

    def test_refreeze_frees_garbage_frozen_alive(self) -> None:
        """
        A cycle frozen while in use and dropped afterwards (a connection
        lost, say) survives collections while frozen; the next refreeze
        collects it.
        """
        first, second = _Node(), _Node()
        first.other, second.other = second, first
        gone = weakref.ref(first)
        gc.freeze()
        del first, second
        gc.collect()
        self.assertIsNotNone(gone())
        self.assertGreaterEqual(agent.refreeze_gc(), 2)
        self.assertIsNone(gone())
        self.assertGreater(gc.get_freeze_count(), 0)

    def test_refreeze_runs_periodically(self) -> None:
        """With freezing on, a timer refreezes every GC_REFREEZE_INTERVAL."""
        calls: list[int] = []
        self.patch(agent, "_refreeze_periodically", lambda: calls.append(1))
        reactor = MemoryReactorClock()
        config = Config(
            instances=(RedisInstance("a", "127.0.0.1", 6379),),
            agent_id="me",
            http="none",
        )
        top = agent.make_agent(config, None, reactor, freeze_gc=True)
        top.startService()
        self.assertEqual(len(calls), 1)  # At start, before any connection.
        reactor.advance(agent.GC_REFREEZE_INTERVAL - 1)
        self.assertEqual(len(calls), 1)
        reactor.advance(1)
        reactor.advance(agent.GC_REFREEZE_INTERVAL)
        self.assertEqual(len(calls), 3)
        top.stopService()

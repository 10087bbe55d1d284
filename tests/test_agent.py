"""The composition root: the open-file limit and the services built."""

from __future__ import annotations

import resource

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

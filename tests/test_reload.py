"""SIGHUP reload on a Clock: add, remove, change, keep, refuse."""

from __future__ import annotations

import attr
from twisted.trial.unittest import SynchronousTestCase

from sentinel.config import Config, ConfigError, RedisInstance
from sentinel.reload import ConfigReloader
from tests.fakes import make_monitor


def instance(name: str, port: int, **kw: object) -> RedisInstance:
    return RedisInstance(name, "127.0.0.1", port, **kw)  # type: ignore[arg-type]


BASE = Config(
    instances=(instance("a", 7000), instance("b", 7001), instance("c", 7002)),
    agent_id="agent-1",
)


class ReloadTests(SynchronousTestCase):
    """What a reload changes, and what it keeps."""

    def setUp(self) -> None:
        self.monitor, self.clock, self.probes, self.publisher = make_monitor([])
        for i in BASE.instances:
            self.monitor.add_instance(i)
        self.next: Config | Exception = BASE
        self.capacity: list[int] = []
        self.reloader = ConfigReloader(
            self.clock,
            self.load,
            self.monitor,
            BASE,
            self.capacity.append,
            install_signal=False,
        )
        self.monitor.startService()
        self.clock.advance(1.0)

    def load(self) -> Config:
        if isinstance(self.next, Exception):
            raise self.next
        return self.next

    def test_add_remove_change_keep(self) -> None:
        """
        Added instances are checked from the next tick, removed ones are
        closed and unpublished, changed ones restart from a fresh state, and
        unchanged ones keep their state, counters and probe.
        """
        kept_state = self.monitor.states["a"]
        changed_probe = self.probes["b"]
        self.next = attr.evolve(
            BASE,
            instances=(instance("a", 7000), instance("b", 7999), instance("d", 7003)),
        )
        self.reloader.reload()
        self.assertEqual(sorted(self.monitor.states), ["a", "b", "d"])
        self.assertIs(self.monitor.states["a"], kept_state)
        self.assertEqual(kept_state.health.checks, 2)
        self.assertTrue(self.probes["c"].closed)
        self.assertEqual(self.publisher.removed, ["c"])
        self.assertTrue(changed_probe.closed)
        self.assertEqual(self.monitor.states["b"].instance.port, 7999)
        self.assertEqual(self.monitor.states["b"].health.checks, 0)
        self.clock.advance(1.0)
        self.assertEqual(self.monitor.states["d"].health.status, "up")
        self.assertEqual(self.monitor.states["b"].health.checks, 1)
        self.assertEqual(kept_state.health.checks, 3)
        self.assertEqual(self.capacity, [3])

    def test_auth_change_is_a_change(self) -> None:
        """A new password restarts the instance with a new connection."""
        old_probe = self.probes["a"]
        self.next = attr.evolve(
            BASE,
            instances=(instance("a", 7000, password="s3"), *BASE.instances[1:]),
        )
        self.reloader.reload()
        self.assertTrue(old_probe.closed)
        self.assertIsNot(self.probes["a"], old_probe)

    def test_global_settings_next_tick(self) -> None:
        """
        A new interval, rise and fall apply from the next tick on; the new
        interval is spread over its slices (20 at 2 s), each instance in one.
        """
        self.next = attr.evolve(BASE, interval=2.0, timeout=1.0, rise=5, fall=7)
        self.reloader.reload()
        self.assertEqual(self.monitor.states["a"].health.fall, 7)
        self.assertEqual(self.monitor.settings.slices, 20)
        checks = self.probes["a"].checks
        self.clock.advance(0.1)
        self.assertEqual(self.probes["a"].checks, checks + 1)
        self.clock.advance(1.9)
        self.assertEqual(self.probes["a"].checks, checks + 1)
        self.clock.advance(0.1)
        self.assertEqual(self.probes["a"].checks, checks + 2)

    def test_invalid_file_keeps_running_config(self) -> None:
        """An invalid file is logged with its reason; nothing changes."""
        self.next = ConfigError("interval: 'x' is not a number")
        self.reloader.reload()
        self.assertEqual(sorted(self.monitor.states), ["a", "b", "c"])
        self.assertEqual(self.reloader.last_error, "interval: 'x' is not a number")
        self.assertIs(self.reloader.config, BASE)

    def test_too_many_instances_refused(self) -> None:
        """A config whose instances cannot fit in the fd limit is refused."""

        def refuse(count: int) -> None:
            raise SystemExit(f"sentinel: {count} instances need more files")

        self.reloader._check_capacity = refuse
        self.next = attr.evolve(BASE, instances=(instance("z", 1),))
        self.reloader.reload()
        self.assertIn("a", self.monitor.states)
        self.assertIn("instances need more files", self.reloader.last_error or "")

    def test_restart_only_settings_kept(self) -> None:
        """http, agent_id and zookeeper changes are logged, not applied."""
        self.next = attr.evolve(BASE, agent_id="other", http="none")
        self.reloader.reload()
        self.assertEqual(self.reloader.config.agent_id, "agent-1")
        self.assertEqual(self.monitor.settings.agent_id, "agent-1")

"""
SIGHUP reload on a Clock: add, remove, change, keep, refuse; loads run off
the reactor thread, one at a time, within a deadline.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from typing import Any

import attr
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from sentinel import reload as reload_module
from sentinel.config import (
    Config,
    ConfigError,
    RedisInstance,
    ZooKeeperConfig,
    load_config,
)
from sentinel.reload import LOAD_DEADLINE, LOAD_SPACING, ConfigReloader, in_own_thread
from tests.fakes import make_monitor


def instance(name: str, port: int, **kw: object) -> RedisInstance:
    return RedisInstance(name, "127.0.0.1", port, **kw)  # type: ignore[arg-type]


BASE = Config(
    instances=(instance("a", 7000), instance("b", 7001), instance("c", 7002)),
    agent_id="agent-1",
)


class FakeThreads:
    """
    Stands in for the reloader's thread: each load waits here until the
    test runs it, as a load on a thread would until it ends.
    """

    def __init__(self) -> None:
        self.waiting: list[tuple[Callable[[], Config], Deferred[Config]]] = []
        self.started = 0

    def __call__(self, work: Callable[[], Config]) -> Deferred[Config]:
        self.started += 1
        d: Deferred[Config] = Deferred()
        self.waiting.append((work, d))
        return d

    def finish(self) -> None:
        """The oldest load runs now and its result reaches the reactor."""
        work, d = self.waiting.pop(0)
        try:
            result = work()
        except Exception:
            d.errback(Failure())
        else:
            d.callback(result)


class ReloadTestCase(SynchronousTestCase):
    """A reloader over a monitor on a Clock, its loads run by FakeThreads."""

    def setUp(self) -> None:
        self.monitor, self.clock, self.probes, self.publisher = make_monitor([])
        for i in BASE.instances:
            self.monitor.add_instance(i)
        self.next: Config | Exception = BASE
        self.loads = 0
        self.capacity: list[int] = []
        self.threads = FakeThreads()
        self.applied: list[Config] = []
        self.clock.advance(1000.0)
        self.events: list[dict[str, Any]] = []
        self.patch(reload_module, "log", Logger(observer=self.events.append))
        self.reloader = self.started_reloader(BASE)
        self.monitor.startService()
        self.clock.advance(1.0)

    def started_reloader(self, config: Config) -> ConfigReloader:
        """A reloader of the monitor's, started with `config`, started."""
        reloader = ConfigReloader(
            self.clock,
            self.load,
            self.monitor,
            config,
            self.capacity.append,
            install_signal=False,
            run_in_thread=self.threads,
            on_applied=self.applied.append,
            internal_errors=self.monitor.internal_errors,
        )
        reloader.startService()
        return reloader

    def load(self) -> Config:
        self.loads += 1
        if isinstance(self.next, Exception):
            raise self.next
        return self.next

    def reload(self) -> None:
        """
        SIGHUP, and the load ends at once (once its turn came, if it is
        within LOAD_SPACING of the last).
        """
        self.reloader.reload()
        if not self.threads.waiting:
            self.clock.advance(LOAD_SPACING)
        self.threads.finish()

    def levels(self, text: str) -> list[LogLevel]:
        """The level of each event whose format contains `text`."""
        return [e["log_level"] for e in self.events if text in e["log_format"]]


class ReloadTests(ReloadTestCase):
    """What a reload changes, and what it keeps."""

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
        self.reload()
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
        self.reload()
        self.assertTrue(old_probe.closed)
        self.assertIsNot(self.probes["a"], old_probe)

    def test_relabel_in_place(self) -> None:
        """
        New labels or a new service alone keep the instance's state,
        counters and connection: the publisher is told to rewrite its
        member, and the log counts it apart from the changed ones.
        """
        kept_state = self.monitor.states["a"]
        probe = self.probes["a"]
        relabelled = instance("a", 7000, labels=(("zone", "z9"),), service="s")
        self.next = attr.evolve(BASE, instances=(relabelled, *BASE.instances[1:]))
        self.reload()
        self.assertIs(self.monitor.states["a"], kept_state)
        self.assertIs(kept_state.instance, relabelled)
        self.assertFalse(probe.closed)
        self.assertIs(self.probes["a"], probe)
        self.assertEqual(kept_state.health.checks, 2)
        self.assertEqual(self.publisher.relabelled, ["a"])
        self.assertEqual(self.publisher.removed, [])
        [event] = [e for e in self.events if "reloaded:" in e["log_format"]]
        self.assertEqual(
            (event["changed"], event["kept"], event["relabelled"]), (0, 2, 1)
        )
        self.assertEqual(self.reloader.config.instances[0], relabelled)
        self.clock.advance(1.0)
        self.assertEqual(kept_state.health.checks, 3)

    def test_relabel_with_new_address_is_a_change(self) -> None:
        """New labels with a new port: a change, checked from scratch."""
        old_probe = self.probes["a"]
        moved = instance("a", 7999, labels=(("zone", "z9"),))
        self.next = attr.evolve(BASE, instances=(moved, *BASE.instances[1:]))
        self.reload()
        self.assertTrue(old_probe.closed)
        self.assertEqual(self.publisher.relabelled, [])
        self.assertEqual(self.monitor.states["a"].health.checks, 0)

    def test_global_settings_next_tick(self) -> None:
        """
        A new interval, rise and fall apply from the next tick on; the new
        interval is cut into 20 slices at most (at 2 s), here one: three
        instances are too few to spread, checked together one new
        interval after the reload, then every 2 s.
        """
        self.next = attr.evolve(BASE, interval=2.0, timeout=1.0, rise=5, fall=7)
        self.reload()
        self.assertEqual(self.monitor.states["a"].health.fall, 7)
        self.assertEqual(self.monitor.settings.slices, 20)
        checks = [self.probes[name].checks for name in "abc"]
        self.clock.advance(1.9)
        self.assertEqual([self.probes[name].checks for name in "abc"], checks)
        self.clock.advance(0.1)
        self.assertEqual(
            [self.probes[name].checks for name in "abc"], [n + 1 for n in checks]
        )
        self.clock.advance(2.0)
        self.assertEqual(
            [self.probes[name].checks for name in "abc"], [n + 2 for n in checks]
        )

    def test_instances_across_a_cut_keep_their_pace(self) -> None:
        """
        A reload that adds instances across a multiple of 10 (100 to 130,
        so 10 slices to 13) mid-round cuts the interval again as the next
        round starts, as instances added otherwise: the 100 kept are
        checked at most an interval (and a step of the Clock) apart, and
        never twice within half of one. Cut at once by the reload's
        settings, mid-round, their checks were up to 1.72 s apart.
        """
        hundred = tuple(instance(f"r{i}", 8000 + i) for i in range(100))
        self.next = attr.evolve(BASE, instances=hundred)
        self.reload()
        self.clock.pump([0.01] * 300)
        self.clock.advance(1000.0 - self.clock.seconds() % 1.0 + 0.35)
        self.next = attr.evolve(
            BASE,
            instances=(*hundred, *(instance(f"n{i}", 9000 + i) for i in range(30))),
        )
        self.reloader.reload()
        self.threads.finish()
        start = self.clock.seconds()
        self.clock.pump([0.01] * 400)
        self.assertAlmostEqual(self.monitor.loop.step, 1 / 13)
        for kept in hundred:
            times = [t for t in self.probes[kept.name].scheduled if t is not None]
            times = [t for t in times if t >= start - 1.0]
            gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
            self.assertLessEqual(max(gaps), 1.01 + 1e-9, kept.name)
            self.assertGreater(min(gaps), 0.5, kept.name)

    def test_global_settings_named_in_log(self) -> None:
        """
        The reload's log line names each global setting it changed, with
        its old and new values, and says when none changed.
        """
        self.next = attr.evolve(BASE, interval=3.0, timeout=2.0)
        self.reload()
        self.next = attr.evolve(BASE, interval=3.0, timeout=2.0, rise=4)
        self.reload()
        self.reload()
        said = [e["settings"] for e in self.events if "reloaded:" in e["log_format"]]
        self.assertEqual(
            said,
            [
                "interval 1.0 -> 3.0, timeout 0.5 -> 2.0",
                "rise 2 -> 4",
                "no global setting changed",
            ],
        )

    def test_redis_replacing_the_file_said_at_each_reload(self) -> None:
        """
        Each reload says, as the start does, how many of the file's
        [[redis]] instances C{--redis} replaced, and is silent without
        C{--redis}; the count is no global setting changed.
        """
        self.next = attr.evolve(BASE, replaced_instances=3)
        self.reload()
        self.next = BASE
        self.reload()
        said = [
            (e["given"], e["replaced"])
            for e in self.events
            if "--redis" in e["log_format"]
        ]
        self.assertEqual(said, [(len(BASE.instances), 3)])
        settings = [
            e["settings"] for e in self.events if "reloaded:" in e["log_format"]
        ]
        self.assertEqual(settings, ["no global setting changed"] * 2)

    def test_no_instance_left_warned(self) -> None:
        """
        A reload that leaves no instance applies (every instance stops)
        and warns that the agent checks nothing, as a start does; the
        reload back to instances does not.
        """
        self.next = attr.evolve(BASE, instances=())
        self.reload()
        self.assertEqual(self.monitor.states, {})
        self.next = BASE
        self.reload()
        self.assertEqual(self.levels("no Redis instance to watch"), [LogLevel.warn])

    def test_invalid_file_keeps_running_config(self) -> None:
        """An invalid file is logged at error with its reason; nothing changes."""
        self.next = ConfigError("interval: 'x' is not a number")
        self.reload()
        self.assertEqual(sorted(self.monitor.states), ["a", "b", "c"])
        self.assertEqual(self.reloader.last_error, "interval: 'x' is not a number")
        self.assertIs(self.reloader.config, BASE)
        self.assertEqual(self.levels("reload refused"), [LogLevel.error])

    def test_unexpected_error_refused(self) -> None:
        """A bug while loading is logged with its traceback and refused."""
        self.next = KeyError("bug")
        self.reload()
        self.assertIs(self.reloader.config, BASE)
        self.assertEqual(self.reloader.last_error, "KeyError('bug')")
        self.assertEqual(self.levels("loading the config"), [LogLevel.critical])

    def test_too_many_instances_refused(self) -> None:
        """A config whose instances cannot fit in the fd limit is refused."""

        def refuse(count: int) -> None:
            raise SystemExit(f"sentinel: {count} instances need more files")

        self.reloader._check_capacity = refuse
        self.next = attr.evolve(BASE, instances=(instance("z", 1),))
        self.reload()
        self.assertIn("a", self.monitor.states)
        self.assertIn("instances need more files", self.reloader.last_error or "")

    def test_restart_only_settings_kept(self) -> None:
        """http, agent_id, zookeeper and dns changes are logged, not applied."""
        dns = attr.evolve(BASE.dns, nameservers=(("127.0.0.1", 5353),))
        self.next = attr.evolve(BASE, agent_id="other", http="none", dns=dns)
        self.reload()
        self.assertEqual(self.reloader.config.agent_id, "agent-1")
        self.assertEqual(self.reloader.config.dns, BASE.dns)
        self.assertEqual(self.levels("takes a restart"), [LogLevel.warn])
        self.assertEqual(len(self.reloader.restart_pending), 3)

    def test_restart_only_changes_named(self) -> None:
        """
        Each restart-only setting a reload changes is named key by key with
        its running and its new value (zookeeper.replicas, not the whole
        table), never the auth_file's password; it stays pending at each
        reload until the file gives the values the agent started with.
        """
        zookeeper = ZooKeeperConfig(hosts="zk:2181", auth="u:s3cret1")
        started = attr.evolve(BASE, zookeeper=zookeeper)
        self.reloader.stopService()
        self.reloader = self.started_reloader(started)
        self.next = attr.evolve(
            started,
            zookeeper=attr.evolve(
                zookeeper, replicas=2, root="/other", auth="u:s3cret2"
            ),
        )
        self.reload()
        self.assertEqual(
            self.reloader.restart_pending,
            [
                "zookeeper.root '/sentinel' -> '/other'",
                "zookeeper.auth_file's identity",
                "zookeeper.replicas 1 -> 2",
            ],
        )
        [event] = [e for e in self.events if "takes a restart" in e["log_format"]]
        text = formatEvent(event)
        self.assertIn("zookeeper.replicas 1 -> 2", text)
        self.assertNotIn("s3cret", text)
        self.assertEqual(self.reloader.config.zookeeper, zookeeper)
        self.next = started
        self.reload()
        self.assertEqual(self.reloader.restart_pending, [])

    def test_restart_only_value_added_or_removed_named(self) -> None:
        """
        A restart-only value that is no table (``state_dir``), set or
        unset by the file, is named with its values, as a change of it
        is; only a table (``[zookeeper]``) added or removed is named as
        one. The line reads as one sentence.
        """
        self.next = attr.evolve(BASE, state_dir="/var/lib/sentinel")
        self.reload()
        self.assertEqual(
            self.reloader.restart_pending, ["state_dir None -> '/var/lib/sentinel'"]
        )
        self.next = attr.evolve(
            BASE, zookeeper=ZooKeeperConfig(hosts="zk:2181"), state_dir=None
        )
        self.reload()
        self.assertEqual(self.reloader.restart_pending, ["[zookeeper] added"])
        [*_, event] = [e for e in self.events if "takes a restart" in e["log_format"]]
        self.assertEqual(
            formatEvent(event),
            "reload: [zookeeper] added: this takes a restart, and until then the "
            "agent runs with the values it started with",
        )

    def test_applied_config_is_told(self) -> None:
        """
        Whoever must follow the instances (the resolver) hears of each
        applied config; a refused one is not told, and a hook that raises
        is logged without undoing the reload.
        """
        self.next = attr.evolve(BASE, instances=(instance("d", 7003),))
        self.reload()
        self.assertEqual(self.applied, [self.reloader.config])
        self.next = ConfigError("interval: 'x' is not a number")
        self.reload()
        self.assertEqual(len(self.applied), 1)

        def broken(config: Config) -> None:
            raise RuntimeError("boom")

        self.reloader._on_applied = broken
        self.next = BASE
        self.reload()
        self.assertEqual(sorted(self.monitor.states), ["a", "b", "c"])
        self.assertEqual(self.levels("after the reload"), [LogLevel.critical])


class WholeOrNothingTests(ReloadTestCase):
    """A reload is applied whole, refused whole, or its baseline is what runs."""

    def test_settings_refused_before_anything_changes(self) -> None:
        """
        A config whose loop settings cannot be built (an interval of 1e308
        overflows the slices, had the checks let it through) is refused in
        one line before any instance is removed: the running config stays,
        and the bug fails /healthz.
        """
        self.next = attr.evolve(BASE, interval=1e308, instances=(instance("a", 7000),))
        self.reload()
        self.assertEqual(sorted(self.monitor.states), ["a", "b", "c"])
        self.assertEqual(self.publisher.removed, [])
        self.assertIs(self.reloader.config, BASE)
        self.assertFalse(self.reloader.last_reload_ok)
        self.assertIn("OverflowError", self.reloader.last_error or "")
        self.assertEqual(self.levels("reload refused"), [LogLevel.error])
        self.assertEqual(self.monitor.internal_errors.count, 1)
        self.assertIsNotNone(self.monitor.internal_errors.unhealthy_reason())
        self.assertEqual(len(self.flushLoggedErrors(OverflowError)), 1)

    def fail_to_add(self, name: str) -> None:
        """From now on, adding instance `name` to the monitor raises."""
        factory = self.monitor._probe_factory

        def refuse(given: RedisInstance) -> Any:
            if given.name == name:
                raise RuntimeError(f"cannot watch {name}")
            return factory(given)

        self.monitor._probe_factory = refuse

    def test_failed_midway_baseline_is_what_runs(self) -> None:
        """
        A reload that fails midway (a bug) leaves what runs as the next
        reload's baseline: an instance it removed comes back and one it
        added goes at the next reload; the failure is an internal error
        (/healthz fails) and says so in one line.
        """
        self.reloader.config = BASE
        self.fail_to_add("e")
        self.next = attr.evolve(
            BASE, instances=(instance("a", 7000), instance("d", 7003), instance("e", 1))
        )
        self.reload()
        self.assertEqual(sorted(self.monitor.states), ["a", "d"])
        self.assertEqual(
            sorted(i.name for i in self.reloader.config.instances), ["a", "d"]
        )
        self.assertFalse(self.reloader.last_reload_ok)
        self.assertIn("cannot watch e", self.reloader.last_error or "")
        self.assertEqual(self.levels("reload failed midway"), [LogLevel.error])
        self.assertEqual(self.monitor.internal_errors.count, 1)
        self.assertIsNotNone(self.monitor.internal_errors.unhealthy_reason())
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(self.applied, [self.reloader.config])
        self.next = BASE
        self.reload()
        self.assertEqual(sorted(self.monitor.states), ["a", "b", "c"])
        self.assertEqual(self.publisher.removed, ["b", "c", "d"])
        self.assertTrue(self.reloader.last_reload_ok)


class StatusTests(ReloadTestCase):
    """last_reload_ok and last_reload_at, for the metrics."""

    def test_start(self) -> None:
        """At start, the config the agent started with counts as loaded then."""
        self.assertTrue(self.reloader.last_reload_ok)
        self.assertEqual(self.reloader.last_reload_at, 1000.0)
        self.assertEqual((self.reloader.reloads, self.reloader.last_error), (0, None))

    def test_refused_then_applied(self) -> None:
        """
        A refused reload turns last_reload_ok false and leaves
        last_reload_at; an applied one turns it true at the time applied,
        logged at info.
        """
        self.next = ConfigError("interval: 'x' is not a number")
        self.clock.advance(5.0)
        self.reload()
        self.assertFalse(self.reloader.last_reload_ok)
        self.assertEqual(self.reloader.last_reload_at, 1000.0)
        self.next = BASE
        self.clock.advance(5.0)
        self.reload()
        self.assertTrue(self.reloader.last_reload_ok)
        self.assertEqual(self.reloader.last_reload_at, 1011.0)
        self.assertEqual((self.reloader.reloads, self.reloader.last_error), (1, None))
        self.assertEqual(self.levels("reloaded:"), [LogLevel.info])


class OffTheReactorTests(ReloadTestCase):
    """Loads run elsewhere; their results are applied here, one at a time."""

    def test_load_runs_on_the_thread(self) -> None:
        """
        SIGHUP only starts the load: the reactor goes on (ticks, checks)
        while it runs, and the result is applied when it arrives.
        """
        self.next = attr.evolve(BASE, instances=(instance("a", 7000),))
        self.reloader.reload()
        self.assertEqual((self.threads.started, self.loads), (1, 0))
        checks = self.probes["b"].checks
        self.clock.pump([1.0] * 3)
        self.assertEqual(self.probes["b"].checks, checks + 3)
        self.threads.finish()
        self.assertEqual(sorted(self.monitor.states), ["a"])

    def test_stuck_load_refused_without_stacking(self) -> None:
        """
        A load that has not ended within LOAD_DEADLINE is refused and the
        checks go on; SIGHUPs meanwhile start no thread but one more load
        after it; its late result is dropped, not applied.
        """
        self.reloader.reload()
        checks = self.probes["a"].checks
        self.clock.pump([1.0] * int(LOAD_DEADLINE))
        self.assertFalse(self.reloader.last_reload_ok)
        self.assertEqual(
            self.reloader.last_error,
            "the config was not loaded within 60 s; a new load waits for this "
            "one to end",
        )
        for _ in range(3):
            self.reloader.reload()
        self.assertEqual(self.threads.started, 1)
        self.assertEqual(self.probes["a"].checks, checks + int(LOAD_DEADLINE))
        self.next = attr.evolve(BASE, instances=())
        self.threads.finish()
        self.assertEqual(sorted(self.monitor.states), ["a", "b", "c"])
        self.assertEqual(self.threads.started, 2)
        self.threads.finish()
        self.assertEqual(sorted(self.monitor.states), [])
        self.assertTrue(self.reloader.last_reload_ok)

    def test_sighups_during_a_load_coalesce(self) -> None:
        """
        Several SIGHUPs during a load make one more load, not several, and
        say so once.
        """
        self.reloader.reload()
        self.reloader.reload()
        self.reloader.reload()
        self.threads.finish()
        self.clock.advance(LOAD_SPACING)
        self.threads.finish()
        self.assertEqual((self.threads.started, self.threads.waiting), (2, []))
        self.assertEqual(self.reloader.reloads, 2)
        self.assertEqual(len(self.levels("has not ended")), 1)

    def test_storm_loads_once_a_second(self) -> None:
        """
        SIGHUP sent 200 times a second for 30 s, each load ending at once,
        starts a load once every LOAD_SPACING at most (it started one per
        SIGHUP), and the last SIGHUP is followed by a load that reads the
        file after it.
        """
        self.next = attr.evolve(BASE, instances=(instance("a", 7000),))
        for _ in range(30 * 200):
            self.reloader.reload()
            while self.threads.waiting:
                self.threads.finish()
            self.clock.advance(1 / 200)
        loads_in_storm = self.threads.started
        self.assertLessEqual(loads_in_storm, 31)
        self.assertEqual(self.threads.started, self.reloader.reloads)
        # The last SIGHUP, just before the storm ended, named this config.
        self.next = BASE
        self.reloader.reload()
        self.clock.advance(LOAD_SPACING)
        self.threads.finish()
        self.assertEqual(sorted(self.monitor.states), ["a", "b", "c"])

    def test_first_sighup_after_a_quiet_second_loads_at_once(self) -> None:
        """A SIGHUP LOAD_SPACING or more after the last load starts one at once."""
        self.reload()
        self.clock.advance(LOAD_SPACING)
        self.reloader.reload()
        self.assertEqual(self.threads.started, 2)

    def test_clock_stepped_back_delays_a_load_one_spacing_at_most(self) -> None:
        """A wall clock stepped back an hour puts the next load off LOAD_SPACING."""
        self.reload()
        self.clock.rightNow -= 3600.0
        self.reloader.reload()
        self.assertEqual(self.threads.started, 1)
        self.clock.advance(LOAD_SPACING)
        self.assertEqual(self.threads.started, 2)

    def test_stop_while_a_load_waits_its_turn(self) -> None:
        """Stopping cancels a load waiting for LOAD_SPACING; none starts."""
        self.reload()
        self.reloader.reload()
        self.reloader.stopService()
        self.clock.advance(LOAD_SPACING)
        self.assertEqual(self.threads.started, 1)

    def test_stop_during_a_load(self) -> None:
        """
        Stopping the agent ends a running load's Deferred at once; its
        result is never applied and no further load starts.
        """
        self.reloader.reload()
        self.reloader.reload()
        [(_, loading)] = self.threads.waiting
        self.reloader.stopService()
        self.assertTrue(loading.called)
        self.threads.finish()
        self.assertEqual(self.threads.started, 1)
        self.assertEqual(self.reloader.reloads, 0)
        self.clock.advance(LOAD_DEADLINE)
        self.assertTrue(self.reloader.last_reload_ok)

    def test_real_files(self) -> None:
        """
        A reload of a config naming a FIFO password file is refused at
        once, naming the field and the path.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        os.mkfifo(os.path.join(directory, "pw"))
        path = os.path.join(directory, "sentinel.toml")
        with open(path, "w") as f:
            f.write('[[redis]]\nhost = "h"\nport = 1\npassword_file = "pw"\n')
        self.reloader._load = lambda: load_config(path, {}, "agent-1")
        self.reload()
        self.assertEqual(
            self.reloader.last_error,
            f"redis[0].password_file: cannot read {directory}/pw: not a regular "
            "file (a FIFO)",
        )


class ThreadReactor:
    """Hands calls from other threads to the test's thread, in order."""

    def __init__(self) -> None:
        self.calls: queue.SimpleQueue[tuple[Callable[..., object], tuple[Any]]]
        self.calls = queue.SimpleQueue()

    def callFromThread(self, f: Callable[..., object], *args: Any) -> None:
        self.calls.put((f, args))

    def run_one(self) -> None:
        f, args = self.calls.get(timeout=5.0)
        f(*args)


class InOwnThreadTests(SynchronousTestCase):
    """in_own_thread: work on a thread of its own, results on the reactor's."""

    def test_result_on_reactor_thread(self) -> None:
        """
        The work runs on another thread; the call returns before it ends,
        and its result fires the Deferred through callFromThread.
        """
        reactor = ThreadReactor()
        release = threading.Event()
        ran_on: list[int] = []

        def work() -> str:
            ran_on.append(threading.get_ident())
            release.wait(5.0)
            return "loaded"

        d = in_own_thread(reactor, work)
        self.assertNoResult(d)
        release.set()
        reactor.run_one()
        self.assertEqual(self.successResultOf(d), "loaded")
        self.assertNotEqual(ran_on, [threading.get_ident()])

    def test_failure(self) -> None:
        """An exception in the work fails the Deferred with it."""
        reactor = ThreadReactor()

        def work() -> str:
            raise ConfigError("bad")

        d = in_own_thread(reactor, work)
        reactor.run_one()
        self.assertEqual(self.failureResultOf(d, ConfigError).getErrorMessage(), "bad")

    def test_cancel_drops_late_result(self) -> None:
        """A cancelled Deferred ends at once; the late result is dropped."""
        reactor = ThreadReactor()
        release = threading.Event()
        d = in_own_thread(reactor, lambda: release.wait(5.0))
        outcomes: list[object] = []
        d.addBoth(outcomes.append)
        d.cancel()
        release.set()
        reactor.run_one()
        [outcome] = outcomes
        assert isinstance(outcome, Failure)
        self.assertTrue(outcome.check(CancelledError))

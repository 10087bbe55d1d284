"""The tick loop on a Clock: isolation, deadlines, overruns, bounds."""

from __future__ import annotations

from typing import Any

import attr
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sentinel.bugs import LOG_INTERVAL, RECENT
from sentinel.clocksteps import ClockSteps
from sentinel.config import RedisInstance
from sentinel.health import DOWN, UP
from sentinel.instance import InstanceState
from sentinel.monitor import ROLE_SETTLE, STOP_CLOSES_PER_TURN, Monitor
from sentinel.observation import Observation, Replication
from tests.fakes import FAILED, OK, FakeProbe, make_monitor


class IsolationTests(SynchronousTestCase):
    """One instance's failure never touches the others or the loop."""

    def test_raising_probe_does_not_stop_others(self) -> None:
        """
        A probe that raises synchronously is marked down and counted as an
        internal error (logged once, not once a check), while the other
        instances keep being checked on every tick.
        """
        monitor, clock, probes, _ = make_monitor(["a", "b", "c"])
        probes["b"].raises = RuntimeError("boom")
        monitor.startService()
        for _ in range(5):
            clock.advance(1.0)
        self.assertEqual(monitor.ticks, 6)
        self.assertEqual(probes["a"].checks, 6)
        self.assertEqual(probes["c"].checks, 6)
        self.assertEqual(probes["b"].checks, 6)
        health = monitor.states["b"].health
        self.assertEqual(health.status, "down")
        self.assertEqual(health.error, "internal error: boom")
        self.assertEqual(monitor.states["a"].health.status, "up")
        self.assertEqual(monitor.internal_errors.count, 6)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_bug_in_publisher_does_not_stop_loop(self) -> None:
        """An exception from the publisher is counted and logged; checks go on."""
        monitor, clock, probes, publisher = make_monitor(["a"])

        def broken(state: object, transition: object) -> None:
            raise ValueError("publisher bug")

        publisher.publish = broken  # type: ignore[method-assign]
        monitor.startService()
        clock.advance(1.0)
        clock.advance(1.0)
        self.assertEqual(probes["a"].checks, 3)
        self.assertEqual(monitor.internal_errors.count, 3)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_failing_deferred_is_recorded(self) -> None:
        """
        A check whose Deferred fails instead of giving an observation (a
        probe bug) is logged, recorded as an internal error, and ends.
        """
        monitor, clock, probes, _ = make_monitor(["a", "b"])
        probes["a"].fails = ZeroDivisionError("probe bug")
        monitor.startService()
        clock.advance(1.0)
        self.assertEqual(monitor.states["a"].health.error, "internal error: probe bug")
        self.assertEqual(monitor.states["b"].health.status, "up")
        self.assertEqual(len(monitor.tracker), 0)
        self.assertEqual(monitor.internal_errors.count, 2)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_internal_errors_fail_health_and_log_sparingly(self) -> None:
        """
        An instance whose every check meets a bug of ours: /healthz fails,
        naming it, while one was met in the last RECENT seconds; a
        traceback is logged at most once per LOG_INTERVAL, the next saying
        how many were not; /debug/stats counts them all.
        """
        monitor, clock, probes, _ = make_monitor(["a", "b"])
        probes["a"].raises = RuntimeError("parser bug")
        errors = monitor.internal_errors
        self.assertIsNone(errors.unhealthy_reason())
        monitor.startService()
        reason = errors.unhealthy_reason()
        assert reason is not None
        self.assertIn("starting the check of a: parser bug", reason)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        for _ in range(int(LOG_INTERVAL)):
            clock.advance(1.0)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(errors.stats()["count"], int(LOG_INTERVAL) + 1)
        probes["a"].raises = None
        clock.advance(RECENT + 1.0)
        self.assertIsNone(errors.unhealthy_reason())
        self.assertEqual(errors.stats()["last"], "starting the check of a: parser bug")
        self.assertEqual(self.flushLoggedErrors(RuntimeError), [])

    def test_loop_restarted_when_it_stops(self) -> None:
        """
        If the LoopingCall ever fails, it is restarted on the next interval,
        logged at critical, and counted.
        """
        monitor, clock, probes, _ = make_monitor(["a"])
        monitor.startService()
        original = monitor.tracker.add

        def broken(pending: object) -> None:
            raise KeyError("tracker bug")

        monitor.tracker.add = broken  # type: ignore[method-assign]
        clock.advance(1.0)
        self.assertEqual(monitor.loop.restarts, 1)
        self.assertIn("tracker bug", monitor.loop.last_error or "")
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        monitor.tracker.add = original  # type: ignore[method-assign]
        clock.advance(1.0)
        clock.advance(1.0)
        self.assertEqual(monitor.ticks, 4)
        self.assertEqual(probes["a"].checks, 4)


class DeadlineTests(SynchronousTestCase):
    """Every check ends within its timeout."""

    def test_hung_check_times_out(self) -> None:
        """
        A check that never answers is cancelled at the timeout, not before,
        and recorded as a timeout.
        """
        monitor, clock, probes, _ = make_monitor(["a"], interval=1.0, timeout=0.5)
        probe = probes["a"]
        probe.hang = True
        monitor.startService()
        self.assertEqual(len(monitor.tracker), 1)
        clock.advance(0.49)
        self.assertEqual(len(monitor.tracker), 1)
        clock.advance(0.01)
        self.assertEqual(len(monitor.tracker), 0)
        self.assertEqual(probe.cancelled, 1)
        health = monitor.states["a"].health
        self.assertEqual(health.error, "timeout (ping)")
        self.assertEqual(health.failures, 1)

    def test_agents_own_pause_given_back(self) -> None:
        """
        A pause the agent made itself (a full collection) is given back to
        the checks in flight: a hung check times out that much later.
        """
        monitor, clock, probes, _ = make_monitor(["a"], interval=5.0, timeout=0.5)
        probe = probes["a"]
        probe.hang = True
        monitor.startService()
        clock.rightNow += 0.25
        monitor.agent_paused(0.25)
        clock.advance(0.49)
        self.assertEqual(probe.cancelled, 0)
        clock.advance(0.01)
        self.assertEqual(probe.cancelled, 1)

    def test_agents_own_pause_not_caught_up_at_once(self) -> None:
        """
        The slices due during the agent's own pause (a collection at a
        round's start, as `sentinel.process` makes it) are launched after
        it one step apart, as they would have been, not all in the turn
        after it; none is skipped.
        """
        pause = 1.5

        def collect(rounds: int) -> None:
            if rounds == 3:
                clock.rightNow += pause
                monitor.agent_paused(pause)

        names = [f"r{i}" for i in range(8)]
        monitor, clock, probes, _ = make_monitor(
            names, interval=1.0, slices=4, on_round=collect
        )
        monitor.startService()
        clock.pump([0.25] * 8)
        self.assertEqual(clock.seconds(), 2.0 + pause)
        before = {name: probe.checks for name, probe in probes.items()}
        clock.advance(0.25)
        launched = sum(probe.checks for probe in probes.values()) - sum(before.values())
        self.assertEqual(launched, 2)
        clock.pump([0.25] * 3)
        self.assertEqual(
            {name: probe.checks - before[name] for name, probe in probes.items()},
            dict.fromkeys(names, 1),
        )

    def test_agents_own_pause_keeps_histories(self) -> None:
        """
        The histories get the agent's own pause back too: after one longer
        than `stale_after`, a failed check is one of `fall`, not a status
        decided anew on it; a server that stopped during the pause is
        down `fall` checks after it.
        """
        pause = 2.5

        def collect(rounds: int) -> None:
            if rounds == 4:
                clock.rightNow += pause
                monitor.agent_paused(pause)
                probes["a"].result = FAILED

        monitor, clock, probes, _ = make_monitor(
            ["a"], interval=0.5, timeout=0.4, on_round=collect
        )
        health = monitor.states["a"].health
        monitor.startService()
        clock.pump([0.5] * 3)
        self.assertEqual(clock.seconds(), 1.5 + pause)
        self.assertGreater(pause, health.stale_after)
        clock.pump([0.5] * 2)
        self.assertEqual((health.status, health.failures), (UP, 2))
        clock.advance(0.5)
        self.assertEqual(health.status, DOWN)
        self.assertEqual(clock.seconds(), 1.5 + pause + 3 * 0.5)

    def test_timeout_equal_to_interval(self) -> None:
        """
        With timeout equal to the interval, a hung instance's check is still
        in flight at each tick (an overrun); it is timed out and checked
        again at once, not an interval later.
        """
        monitor, clock, probes, _ = make_monitor(["a"], interval=1.0, timeout=1.0)
        probes["a"].hang = True
        monitor.startService()
        for _ in range(3):
            clock.advance(1.0)
        self.assertEqual(monitor.overruns, 3)
        self.assertEqual(probes["a"].checks, 4)
        self.assertEqual(probes["a"].cancelled, 3)
        self.assertEqual(monitor.states["a"].health.failures, 3)

    def test_overrun_waits_for_deadline(self) -> None:
        """
        A tick that finds a check in flight before its deadline (the clock
        jumped, or the agent stalled) counts an overrun and checks that
        instance again only once the deadline has passed.
        """
        monitor, clock, probes, _ = make_monitor(["a"], interval=1.0, timeout=0.5)
        probes["a"].hang = True
        monitor.startService()
        clock.advance(0.2)
        monitor.tick()
        self.assertEqual(monitor.overruns, 1)
        self.assertEqual(probes["a"].checks, 1)
        clock.advance(0.29)
        self.assertEqual(probes["a"].checks, 1)
        clock.advance(0.01)
        self.assertEqual(probes["a"].cancelled, 1)
        self.assertEqual(probes["a"].checks, 2)

    def test_pending_bounded_over_many_ticks(self) -> None:
        """
        Over 1,000 ticks of never-answering probes, pending checks never
        exceed the number of instances, delayed calls stay bounded, and
        every check ends.
        """
        names = [f"r{i}" for i in range(20)]
        monitor, clock, probes, _ = make_monitor(names, interval=0.05, timeout=0.05)
        for probe in probes.values():
            probe.hang = True
        monitor.startService()
        most_pending = most_calls = 0
        for _ in range(1000):
            clock.advance(0.05)
            most_pending = max(most_pending, len(monitor.tracker))
            most_calls = max(most_calls, len(clock.getDelayedCalls()))
            clock.advance(0)
        self.assertLessEqual(most_pending, len(names))
        self.assertLessEqual(most_calls, 4)
        total_checks = sum(p.checks for p in probes.values())
        total_cancelled = sum(p.cancelled for p in probes.values())
        self.assertGreater(total_checks, 500 * len(names))
        self.assertEqual(total_checks - total_cancelled, len(monitor.tracker))

    def test_stop_cancels_pending(self) -> None:
        """Stopping cancels every pending check and closes every probe."""
        monitor, clock, probes, publisher = make_monitor(["a", "b"])
        for probe in probes.values():
            probe.hang = True
        monitor.startService()
        self.assertEqual(len(monitor.tracker), 2)
        monitor.stopService()
        self.assertEqual(len(monitor.tracker), 0)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertTrue(all(p.closed for p in probes.values()))
        self.assertTrue(all(p.cancelled == 1 for p in probes.values()))
        # Cancelled checks are not recorded as failures after the stop.
        self.assertEqual(monitor.states["a"].health.checks, 0)

    def test_stop_closes_a_slice_a_turn(self) -> None:
        """
        The stop stops the loop at once, then cancels the checks in flight
        and closes the probes `STOP_CLOSES_PER_TURN` a reactor turn: the
        services stopped in the same turn (the publisher's leave) do not
        wait behind thousands of closes. It fires once every check is
        cancelled and every probe closed, and nothing cancelled is
        recorded; a probe whose instance was removed meanwhile was closed
        by its removal, and is skipped.
        """
        count = 2 * STOP_CLOSES_PER_TURN + 100
        names = [f"r{i}" for i in range(count)]
        monitor, clock, probes, publisher = make_monitor(names)
        for probe in probes.values():
            probe.hang = True
        monitor.startService()
        self.assertEqual(len(monitor.tracker), count)
        stopped = monitor.stopService()
        self.assertNoResult(stopped)
        cancelled = sum(p.cancelled for p in probes.values())
        self.assertEqual(cancelled, STOP_CLOSES_PER_TURN)
        self.assertFalse(any(p.closed for p in probes.values()))
        # The rest in the next turn, which calls for the one after.
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        monitor.remove_instance("r0")
        clock.advance(0)
        self.successResultOf(stopped)
        self.assertEqual(len(monitor.tracker), 0)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertTrue(all(p.closed for p in probes.values()))
        self.assertTrue(all(p.cancelled == 1 for p in probes.values()))
        self.assertEqual(sum(s.health.checks for s in monitor.states.values()), 0)

    def test_stop_goes_on_past_a_close_that_raises(self) -> None:
        """
        A probe whose close raises (a bug of ours) is logged, and the stop
        still closes every other probe and fires: the services' stop waits
        for it.
        """
        names = [f"r{i}" for i in range(STOP_CLOSES_PER_TURN + 10)]
        monitor, clock, probes, _ = make_monitor(names)
        monitor.startService()
        clock.advance(1.0)

        def broken() -> None:
            raise RuntimeError("close failed")

        probes["r3"].close = broken  # type: ignore[method-assign]
        stopped = monitor.stopService()
        clock.advance(0)
        clock.advance(0)
        self.successResultOf(stopped)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertTrue(all(p.closed for n, p in probes.items() if n != "r3"))

    def test_not_looked_is_not_a_failure(self) -> None:
        """A check the agent never got to run (None) changes nothing."""
        monitor, clock, probes, _ = make_monitor(["a"])
        probes["a"].result = None
        monitor.startService()
        clock.advance(1.0)
        health = monitor.states["a"].health
        self.assertEqual(health.checks, 0)
        self.assertIsNone(health.status)
        self.assertEqual(len(monitor.tracker), 0)


class InfoScheduleTests(SynchronousTestCase):
    """INFO replication is read every info_every checks and while not up."""

    def test_info_every(self) -> None:
        monitor, clock, probes, _ = make_monitor(["a"], info_every=5)
        monitor.startService()
        for _ in range(10):
            clock.advance(1.0)
        # First check (not yet up), then every fifth check.
        self.assertEqual(probes["a"].checks, 11)
        self.assertEqual(probes["a"].info_requests, 3)
        self.assertEqual(monitor.states["a"].health.replication.role, "master")

    def test_info_while_down(self) -> None:
        """
        While an instance is down every check asks for INFO, so that the
        role is fresh at the moment it comes back up.
        """
        monitor, clock, probes, _ = make_monitor(["a"], info_every=100, rise=2)
        probes["a"].result = FAILED
        monitor.startService()
        clock.advance(1.0)
        self.assertEqual(probes["a"].info_requests, 2)
        probes["a"].result = Observation(ok=True, ready=True)
        clock.advance(1.0)
        clock.advance(1.0)
        health = monitor.states["a"].health
        self.assertEqual(health.status, "up")
        self.assertEqual(health.replication.role, "master")


class MembershipTests(SynchronousTestCase):
    """Instances can be added and removed while running."""

    def test_remove_instance(self) -> None:
        """Removing cancels its check, closes its probe, tells the publisher."""
        monitor, clock, probes, publisher = make_monitor(["a", "b"])
        probes["a"].hang = True
        monitor.startService()
        monitor.remove_instance("a")
        self.assertEqual(probes["a"].cancelled, 1)
        self.assertTrue(probes["a"].closed)
        self.assertEqual(publisher.removed, ["a"])
        self.assertNotIn("a", monitor.tracker)
        clock.advance(1.0)
        self.assertEqual(probes["a"].checks, 1)
        self.assertEqual(probes["b"].checks, 2)

    def test_replace_during_check_tracks_the_new_check(self) -> None:
        """
        Replacing an instance whose check hangs cancels that check; the new
        state's check is the one in /pending, and its deadline still holds.
        """
        monitor, clock, probes, _ = make_monitor(["a"])
        probes["a"].hang = True
        monitor.startService()
        old = probes["a"]
        monitor.replace_instance(RedisInstance("a", "127.0.0.1", 7100))
        self.assertEqual(old.cancelled, 1)
        self.assertNotIn("a", monitor.tracker)
        probes["a"].hang = True
        clock.advance(1.0)
        [tracked] = list(monitor.tracker)
        self.assertIs(tracked, monitor.states["a"])
        self.assertIsNotNone(tracked.check)
        clock.advance(0.5)
        self.assertEqual(len(monitor.tracker), 0)
        self.assertEqual(probes["a"].cancelled, 1)
        self.assertEqual(monitor.states["a"].health.error, "timeout (ping)")


class UpCountTests(SynchronousTestCase):
    """The monitor keeps the count of instances up as statuses change."""

    def recount(self, monitor: Monitor) -> int:
        states = monitor.states.values()
        return sum(1 for state in states if state.health.status == UP)

    def test_count_follows_changes_removals_and_replacements(self) -> None:
        """
        Up, down, back up, removed while up, replaced while up, added: the
        kept count equals a recount after each step.
        """
        monitor, clock, probes, _ = make_monitor(["a", "b", "c"], fall=1, rise=1)
        monitor.startService()
        self.assertEqual((monitor.instances_up, self.recount(monitor)), (3, 3))
        probes["a"].result = FAILED
        clock.advance(1.0)
        self.assertEqual((monitor.instances_up, self.recount(monitor)), (2, 2))
        probes["a"].result = OK
        clock.advance(1.0)
        self.assertEqual((monitor.instances_up, self.recount(monitor)), (3, 3))
        monitor.remove_instance("b")
        self.assertEqual((monitor.instances_up, self.recount(monitor)), (2, 2))
        monitor.replace_instance(RedisInstance("c", "127.0.0.1", 7200))
        self.assertEqual((monitor.instances_up, self.recount(monitor)), (1, 1))
        monitor.add_instance(RedisInstance("d", "127.0.0.1", 7300))
        clock.advance(1.0)
        self.assertEqual((monitor.instances_up, self.recount(monitor)), (3, 3))


class StallTests(SynchronousTestCase):
    """
    The loop stalled (the agent frozen, or the machine suspended): its first
    check decides anew. A step of the wall clock is no stall: no check was
    missed. The three are told apart as `ClockSteps` tells them, by a
    monotonic clock (stops in a suspend) and a boot clock (does not).
    """

    def setUp(self) -> None:
        self.monitor, self.clock, self.probes, self.publisher = make_monitor(
            ["a", "b"], fall=3
        )
        self.monotonic = self.boot = 0.0
        self.steps = ClockSteps(
            self.clock,
            lambda: [self.monitor.loop],
            self.clock.seconds,
            lambda: self.monotonic,
            lambda: self.boot,
        )
        self.steps.moved = self.monitor.clock_stepped
        self.monitor.startService()
        self.addCleanup(self.monitor.stopService)

    def elapse(
        self, seconds: float, wall_step: float = 0.0, suspended: float = 0.0
    ) -> None:
        """
        `seconds` of the agent's running time pass, the machine is
        suspended `suspended` seconds and the wall clock steps `wall_step`;
        then, as the reactor does, the look and the timers due.
        """
        self.monotonic += seconds
        self.boot += seconds + suspended
        self.clock.rightNow += seconds + suspended + wall_step
        self.steps.look()
        self.clock.advance(0)

    def fail_a_after(self, seconds: float = 0.0, suspended: float = 0.0) -> None:
        """`b` fails within the rhythm, then `a` fails after a gap."""
        self.probes["b"].result = FAILED
        self.elapse(1.0)
        self.assertEqual(self.monitor.states["b"].health.status, UP)
        self.probes["a"].result = FAILED
        self.elapse(seconds, suspended=suspended)
        self.elapse(1.0)

    def test_first_failure_after_a_stall_is_down(self) -> None:
        """
        An instance up before a stall of 10 intervals and failing after it
        is down at the first check (fall is 3), counted and published so;
        within the interval's own rhythm, one failure changes nothing.
        """
        self.fail_a_after(seconds=10.0)
        self.assertEqual(self.steps.steps, 0)
        self.assertEqual(self.monitor.states["a"].health.status, DOWN)
        self.assertEqual(self.monitor.instances_up, 0)
        transitions = [t for n, t in self.publisher.published if n == "a" and t]
        self.assertEqual(transitions[-1].new_status, DOWN)
        self.assertTrue(transitions[-1].anew)

    def test_first_failure_after_a_suspend_is_down(self) -> None:
        """
        A suspend of 10 intervals is a stall too, though the wall clock
        seems to step: the first failure after it is down.
        """
        self.fail_a_after(suspended=10.0)
        self.assertEqual(self.steps.steps, 1)
        self.assertEqual(self.monitor.states["a"].health.status, DOWN)

    def test_wall_clock_step_forward_is_no_gap(self) -> None:
        """
        The wall clock steps 10 s forward (an NTP step): no check was
        missed, every history stays current, and one failure after it is
        one of `fall`.
        """
        self.elapse(1.0)
        self.elapse(0.0, wall_step=10.0)
        now = self.clock.seconds()
        self.assertTrue(self.monitor.states["a"].health.current(now))
        self.fail_a_after()
        self.assertEqual(self.steps.steps, 1)
        self.assertEqual(self.monitor.states["a"].health.status, UP)

    def test_wall_clock_step_moves_since_when_unjudged(self) -> None:
        """
        A step of the wall clock moves since when each instance is watched
        and unjudged with it: an instance never judged is not unjudged
        for longer for a step alone, nor one whose checks said nothing.
        """
        self.probes["b"].result = None
        self.monitor.add_instance(RedisInstance("c", "127.0.0.1", 7100))
        self.probes["c"].result = None
        self.elapse(1.0)
        self.elapse(1.0)
        b, c = self.monitor.states["b"], self.monitor.states["c"]
        before = (b.unjudged_since, c.unjudged_since)
        self.elapse(0.0, wall_step=600.0)
        self.assertEqual(self.steps.steps, 1)
        self.assertEqual(
            (b.unjudged_since, c.unjudged_since),
            tuple(t + 600.0 for t in before if t is not None),
        )

    def test_stall_after_a_step_back_is_a_gap(self) -> None:
        """
        Stepped back an hour, the histories' deadlines step back too: a
        stall of 10 intervals after it is a gap, not an hour's grace.
        """
        self.elapse(1.0)
        self.elapse(0.0, wall_step=-3600.0)
        self.assertTrue(self.monitor.states["a"].health.current(self.clock.seconds()))
        self.probes["a"].result = FAILED
        self.elapse(10.0)
        self.assertEqual(self.monitor.states["a"].health.status, DOWN)


class ReloadStaleTests(SynchronousTestCase):
    """A reload that shortens the interval makes no history stale."""

    def test_shorter_interval_is_no_gap(self) -> None:
        """
        interval 10 s -> 1 s: the last check, 9 s ago, was on schedule;
        one failure after the reload is one of `fall` (3), and the history
        is current until then.
        """
        monitor, clock, probes, _ = make_monitor(
            ["a"], interval=10.0, timeout=0.5, fall=3
        )
        monitor.startService()
        self.addCleanup(monitor.stopService)
        clock.advance(10.0)
        clock.advance(9.0)
        health = monitor.states["a"].health
        monitor.update_settings(attr.evolve(monitor.settings, interval=1.0))
        self.assertTrue(health.current(clock.seconds()))
        probes["a"].result = FAILED
        clock.advance(1.0)
        self.assertEqual(health.status, UP)
        self.assertEqual(health.stale_after, 4.0)

    def test_new_timeout_handed_to_each_probe_and_listener(self) -> None:
        """
        A reload that changes the timeout hands it to every probe, and
        the new settings to each settings listener; one that leaves the
        timeout alone retimes no probe.
        """
        monitor, _, probes, _ = make_monitor(["a", "b"], interval=1.0, timeout=0.5)
        heard: list[float] = []
        monitor.add_settings_listener(lambda settings: heard.append(settings.timeout))
        monitor.update_settings(attr.evolve(monitor.settings, rise=3))
        self.assertEqual([probes["a"].timeouts, probes["b"].timeouts], [[], []])
        monitor.update_settings(attr.evolve(monitor.settings, timeout=0.8))
        self.assertEqual([probes["a"].timeouts, probes["b"].timeouts], [[0.8], [0.8]])
        self.assertEqual(heard, [0.5, 0.8])


class ListenerTests(SynchronousTestCase):
    """Listeners hear every recorded check, and cannot break the loop."""

    def test_listener_hears_checks_with_duration(self) -> None:
        """Each check reaches listeners with its transition and duration."""
        monitor, clock, probes, _ = make_monitor(["a"], timeout=0.5)
        heard: list[tuple[str, bool, bool, float]] = []
        monitor.add_listener(
            lambda state, obs, transition, duration: heard.append(
                (state.name, obs.ok, transition is not None, duration)
            )
        )
        probes["a"].hang = True
        monitor.startService()
        clock.advance(0.5)
        self.assertEqual(heard, [("a", False, True, 0.5)])

    def test_broken_listener_is_logged(self) -> None:
        """A listener that raises is counted and logged; the check is still recorded."""
        monitor, clock, probes, _ = make_monitor(["a"])

        def broken(*args: object) -> None:
            raise OSError("listener bug")

        monitor.add_listener(broken)
        monitor.startService()
        clock.advance(1.0)
        self.assertEqual(monitor.states["a"].health.checks, 2)
        self.assertEqual(monitor.internal_errors.count, 2)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


class TickCompletionTests(SynchronousTestCase):
    """Each tick's time from the tick to its last answer is kept."""

    def test_completion_is_the_slowest_check(self) -> None:
        """The slowest check of a tick (a timeout here) is its completion."""
        monitor, clock, probes, _ = make_monitor(["a", "b"], timeout=0.5)
        monitor.startService()
        clock.pump([0.5, 0.5])
        probes["b"].hang = True
        clock.pump([0.5, 0.5, 0.5])
        self.assertEqual(list(monitor.tick_completions), [0.0, 0.0, 0.5])


class SliceTests(SynchronousTestCase):
    """Instances are spread over the interval's slices, each checked once."""

    def test_spread_and_each_once_per_interval(self) -> None:
        """
        With 4 slices, 8 instances go 2 per slice, a quarter interval apart,
        and each is checked once per interval; ticks count whole rounds.
        """
        names = [f"r{i}" for i in range(8)]
        monitor, clock, probes, _ = make_monitor(names, interval=1.0, slices=4)
        monitor.startService()
        self.assertEqual(sum(p.checks for p in probes.values()), 2)
        clock.advance(0.25)
        self.assertEqual(sum(p.checks for p in probes.values()), 4)
        clock.pump([0.25] * 6)
        self.assertEqual({p.checks for p in probes.values()}, {2})
        self.assertEqual(monitor.ticks, 2)

    def test_stall_runs_missed_slices(self) -> None:
        """After a stall, the slices that were due all run: none is skipped."""
        names = [f"r{i}" for i in range(4)]
        monitor, clock, probes, _ = make_monitor(names, interval=1.0, slices=4)
        monitor.startService()
        clock.advance(0.9)
        self.assertEqual({p.checks for p in probes.values()}, {1})

    def test_checks_told_when_due(self) -> None:
        """
        Each check is told the time its slice was due, not when the agent
        got to it: a late tick, and the slices a stall made run late, each
        say their own slot of the schedule.
        """
        names = [f"r{i}" for i in range(4)]
        monitor, clock, probes, _ = make_monitor(names, interval=1.0, slices=4)
        clock.advance(10.0)
        monitor.startService()
        clock.advance(0.26)
        clock.advance(0.6)
        self.assertEqual(
            [probes[name].scheduled for name in names],
            [[10.0], [10.25], [10.5], [10.75]],
        )

    def test_relaunched_check_told_when_due(self) -> None:
        """
        A check relaunched after an overrun (timeout == interval, each tick
        run late) is told the slot its tick was due for, as a check launched
        by the tick is, not the time the agent relaunched it.
        """
        monitor, clock, probes, _ = make_monitor(["a"], interval=1.0, timeout=1.0)
        probes["a"].hang = True
        monitor.startService()
        for _ in range(3):
            clock.advance(1.0)
            clock.advance(0.3)  # The agent ran late on this turn.
            clock.advance(0.0)
        self.assertEqual(monitor.overruns, 3)
        self.assertEqual(probes["a"].scheduled, [0.0, 1.0, 2.0, 3.0])

    def test_carried_instances_launched_last(self) -> None:
        """
        While `Monitor.launch_last` names instances (those previous
        processes checked since the state file's ``checked_at``), each slice
        launches the others first, each part in the slice's order, so that
        they take the first connection attempts; once it names none, the
        slice's own order again.
        """
        names = [f"r{i}" for i in range(8)]
        monitor, clock, probes, _ = make_monitor(names, interval=1.0, slices=2)
        order: list[str] = []
        for name, probe in probes.items():
            check = probe.check

            def launched(*args: Any, name: str = name, check: Any = check) -> Any:
                order.append(name)
                return check(*args)

            probe.check = launched  # type: ignore[method-assign]
        carried: set[str] = {"r0", "r2", "r3"}
        monitor.launch_last = lambda: carried
        monitor.startService()
        clock.advance(0.5)
        self.assertEqual(order, ["r4", "r6", "r0", "r2", "r1", "r5", "r7", "r3"])
        del order[:]
        carried.clear()
        clock.pump([0.5, 0.5])
        self.assertEqual(order, ["r0", "r2", "r4", "r6", "r1", "r3", "r5", "r7"])

    def test_few_instances_launched_together(self) -> None:
        """
        Fewer than `slice_instances` instances a slice take fewer slices:
        five instances at 20 slices of at least 10 are one launch a
        second, all checked together, and the loop wakes once a second.
        """
        names = [f"r{i}" for i in range(5)]
        monitor, clock, probes, _ = make_monitor(
            names, interval=1.0, slices=20, slice_instances=10
        )
        monitor.startService()
        self.assertEqual(monitor.loop.step, 1.0)
        clock.pump([0.05] * 20)
        self.assertEqual({p.scheduled[-1] for p in probes.values()}, {1.0})
        self.assertEqual({p.checks for p in probes.values()}, {2})

    def test_many_instances_keep_every_slice(self) -> None:
        """25 instances of at least 10 a slice take 3 slices; 500, all 20."""
        for count, step in ((25, 1 / 3), (500, 1 / 20)):
            monitor, _, _, _ = make_monitor(
                [f"r{i}" for i in range(count)], slices=20, slice_instances=10
            )
            self.assertAlmostEqual(monitor.loop.step, step)

    def test_recut_while_running_delays_no_check(self) -> None:
        """
        Instances added and removed while the loop runs, across multiples
        of `slice_instances`: the interval is cut again as a round starts,
        and no instance waits longer than one interval between two checks
        (the detection bound), before, during and after, but for the
        loop's own lateness (here up to a step of the Clock, 13 ms).
        """
        names = [f"r{i}" for i in range(9)]
        monitor, clock, probes, _ = make_monitor(
            names, interval=1.0, slices=20, slice_instances=2
        )
        monitor.startService()
        steps = [0.01] * 100
        clock.pump(steps)
        for i in range(9, 30):
            monitor.add_instance(RedisInstance(f"r{i}", "127.0.0.1", 7000 + i))
            clock.pump([0.013] * 17)
        clock.pump(steps)
        self.assertAlmostEqual(monitor.loop.step, 1 / 15)
        for i in range(0, 27):
            monitor.remove_instance(f"r{i}")
            clock.pump([0.011] * 23)
        clock.pump(steps)
        self.assertAlmostEqual(monitor.loop.step, 1 / 2)
        gaps = [
            later - earlier
            for probe in probes.values()
            for earlier, later in zip(
                probe.scheduled, probe.scheduled[1:], strict=False
            )
            if earlier is not None and later is not None
        ]
        self.assertLessEqual(max(gaps), 1.013 + 1e-9)
        self.assertEqual(monitor.overruns, 0)

    def test_recut_spreads_instances_added_at_once(self) -> None:
        """
        Hundreds of instances added at once while the loop runs (a group's
        moves at start, a reload) are spread over the new cut's slices, not
        all launched together in the slice their old cut put them in: one
        instance and 399 added, then 20 launches of 20 a second, every
        instance checked once in each, the first one at most an interval
        (and a step of the Clock) after its last check.
        """
        monitor, clock, probes, _ = make_monitor(
            ["r0"], interval=1.0, slices=20, slice_instances=10
        )
        monitor.startService()
        clock.pump([0.01] * 150)
        for i in range(1, 400):
            monitor.add_instance(RedisInstance(f"r{i}", "127.0.0.1", 7000 + i))
        clock.pump([0.01] * 150)
        before = {name: probe.checks for name, probe in probes.items()}
        launches: dict[float, int] = {}
        for _ in range(100):
            clock.advance(0.01)
            for name, probe in probes.items():
                if probe.checks > before[name]:
                    launches[clock.seconds()] = launches.get(clock.seconds(), 0) + 1
                    before[name] = probe.checks
        self.assertEqual(sorted(launches.values()), [20] * 20)
        scheduled = [t for t in probes["r0"].scheduled if t is not None]
        gaps = [
            later - earlier
            for earlier, later in zip(scheduled, scheduled[1:], strict=False)
        ]
        self.assertLessEqual(max(gaps), 1.01 + 1e-9)

    def test_recut_after_stall_launches_slices_due(self) -> None:
        """
        A cut made as a round starts late (the agent stalled 0.7 s over
        the round's start) launches at once the new slices whose time went
        by, each at the time it was due, as a stall without a cut does:
        started from the stall's end, every slice of the round waited the
        stall again (a gap of 1.64 s between two checks of an instance at
        the end of the round). No gap is over the interval and the new
        step, and no instance is checked twice in the round.
        """
        names = [f"r{i}" for i in range(100)]
        monitor, clock, probes, _ = make_monitor(
            names, interval=1.0, slices=20, slice_instances=10
        )
        monitor.startService()
        clock.pump([0.01] * 305)
        for i in range(90, 100):
            monitor.remove_instance(f"r{i}")
        clock.pump([0.01] * 90)
        clock.advance(0.7)
        clock.pump([0.01] * 400)
        self.assertAlmostEqual(monitor.loop.step, 1 / 9)
        for name in names[:90]:
            scheduled = [t for t in probes[name].scheduled if t is not None]
            gaps = [b - a for a, b in zip(scheduled, scheduled[1:], strict=False)]
            self.assertLessEqual(max(gaps), 1 + 1 / 9 + 1e-9, name)
            self.assertEqual(len([t for t in scheduled if 4.0 <= t < 5.0]), 1)

    def test_recut_is_no_stall(self) -> None:
        """
        Cut from one slice to two, the round's first launch comes one old
        step (1 s) after the last, not a stall of the agent's own (which
        would excuse checks of Redis), though the new step is 0.5 s.
        """
        names = [f"r{i}" for i in range(10)]
        monitor, clock, probes, _ = make_monitor(
            names, interval=1.0, slices=20, slice_instances=10
        )
        monitor.startService()
        clock.pump([0.1] * 15)
        monitor.add_instance(RedisInstance("r10", "127.0.0.1", 7010))
        clock.pump([0.1] * 20)
        self.assertEqual(monitor.loop.step, 0.5)
        self.assertEqual(monitor.own_stalls.since(0.0), 0.0)

    def test_removal_keeps_slices_even(self) -> None:
        """A removed instance leaves its slice; a new one takes the next."""
        monitor, clock, probes, _ = make_monitor(["a", "b"], slices=2)
        monitor.remove_instance("a")
        monitor.add_instance(RedisInstance("c", "127.0.0.1", 7100))
        monitor.startService()
        self.assertEqual((probes["b"].checks, probes["c"].checks), (0, 1))
        clock.advance(0.5)
        self.assertEqual((probes["b"].checks, probes["c"].checks), (1, 1))


class InfoCadenceTests(SynchronousTestCase):
    """
    INFO replication every `info_every` checks, and on every check while
    the role may be moving (as Redis Sentinel does).
    """

    def info_per_check(self, probe: FakeProbe, clock: Clock, checks: int) -> int:
        """How many of the next `checks` checks (one per second) read INFO."""
        before = probe.info_requests
        for _ in range(checks):
            clock.advance(1.0)
        return probe.info_requests - before

    def test_steady_instance(self) -> None:
        """An instance that stays as it is reads INFO every info_every checks."""
        monitor, clock, probes, _ = make_monitor(["a"], info_every=10)
        monitor.startService()
        self.assertEqual(self.info_per_check(probes["a"], clock, 100), 10)

    def test_after_a_role_change(self) -> None:
        """
        For ROLE_SETTLE seconds after the role changed, every check reads
        INFO; then every info_every checks again.
        """
        monitor, clock, probes, _ = make_monitor(["a"], info_every=10)
        probe = probes["a"]
        monitor.startService()
        self.info_per_check(probe, clock, 5)
        probe.replication = Replication("slave", "10.0.0.1", 6379, "up")
        self.info_per_check(probe, clock, 10)
        changed_at = monitor.states["a"].health.role_changed_at
        self.assertGreater(changed_at, 0)
        settle = int(ROLE_SETTLE) - int(clock.seconds() - changed_at)
        self.assertEqual(self.info_per_check(probe, clock, settle - 1), settle - 1)
        self.assertLessEqual(self.info_per_check(probe, clock, 20), 3)

    def test_replica_link_down(self) -> None:
        """A replica whose link to its master is not up reads INFO every check."""
        monitor, clock, probes, _ = make_monitor(["r"], info_every=10)
        probe = probes["r"]
        probe.replication = Replication("slave", "10.0.0.1", 6379, "down")
        monitor.startService()
        self.assertEqual(self.info_per_check(probe, clock, 20), 20)
        probe.replication = Replication("slave", "10.0.0.1", 6379, "up")
        self.info_per_check(probe, clock, 1)
        self.assertEqual(self.info_per_check(probe, clock, 20), 2)

    def test_master_down(self) -> None:
        """
        A replica whose master is watched here too reads INFO every check
        while that master is down, and no longer once it is back.
        """
        monitor, clock, probes, _ = make_monitor(["m", "r"], info_every=10, fall=1)
        replica = probes["r"]
        replica.replication = Replication("slave", "127.0.0.1", 7000, "up")
        monitor.startService()
        self.info_per_check(replica, clock, 2)
        self.assertEqual(self.info_per_check(replica, clock, 20), 2)
        probes["m"].result = FAILED
        self.info_per_check(replica, clock, 1)
        self.assertEqual(self.info_per_check(replica, clock, 20), 20)
        probes["m"].result = OK
        self.info_per_check(replica, clock, 3)
        self.assertLessEqual(self.info_per_check(replica, clock, 20), 2)

    def test_removed_master_is_not_down(self) -> None:
        """A master no longer watched says nothing about its replicas."""
        monitor, clock, probes, _ = make_monitor(["m", "r"], info_every=10, fall=1)
        replica = probes["r"]
        replica.replication = Replication("slave", "127.0.0.1", 7000, "up")
        probes["m"].result = FAILED
        monitor.startService()
        self.info_per_check(replica, clock, 2)
        monitor.remove_instance("m")
        self.assertEqual(self.info_per_check(replica, clock, 20), 2)

    def test_info_listeners(self) -> None:
        """
        INFO listeners hear of every INFO read, and only those; one that
        raises is counted and logged, and the others and the loop go on.
        """
        monitor, clock, probes, _ = make_monitor(["a"], info_every=5)
        heard: list[tuple[str, Replication, float]] = []

        def broken(state: InstanceState, replication: Replication, now: float) -> None:
            raise ValueError("listener bug")

        monitor.add_info_listener(broken)
        monitor.add_info_listener(lambda s, r, now: heard.append((s.name, r, now)))
        monitor.startService()
        self.info_per_check(probes["a"], clock, 10)
        self.assertEqual(len(heard), 3)
        self.assertEqual(heard[0], ("a", Replication(role="master"), 0.0))
        self.assertEqual(monitor.internal_errors.count, 3)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class DiscoveredInstanceTests(SynchronousTestCase):
    """A configured instance wins a name over a discovered one."""

    def test_configured_takes_the_name(self) -> None:
        """
        Adding a configured instance under a discovered one's name replaces
        it (a fresh probe and state); the other way round is refused, as is
        a configured name twice.
        """
        monitor, clock, probes, publisher = make_monitor([])
        found = RedisInstance("x", "10.0.0.6", 6379, discovered_by="m")
        monitor.add_instance(found)
        first = monitor.states["x"]
        self.assertTrue(first.discovered)
        monitor.add_instance(RedisInstance("x", "10.0.0.9", 6379))
        self.assertFalse(monitor.states["x"].discovered)
        self.assertTrue(probes["x"] is not first.probe and first.probe.closed)  # type: ignore[attr-defined]
        self.assertRaises(ValueError, monitor.add_instance, found)
        self.assertRaises(ValueError, monitor.add_instance, RedisInstance("x", "h", 1))
        self.assertEqual(publisher.removed, [])


class UnjudgedSinceTests(SynchronousTestCase):
    """Since when an instance has gone without a judgement (`unjudged_since`)."""

    def test_from_watched_then_from_the_first_silent_check(self) -> None:
        """
        Never judged: since it was watched. Judged: none. Its checks then
        saying nothing: since the first of them (not the latest), while
        ``checked_at`` stays the last judgement's time; judged again: none,
        and a later silence counts from its own first check.
        """
        monitor, clock, probes, _ = make_monitor([])
        clock.advance(100.0)
        monitor.add_instance(RedisInstance("a", "127.0.0.1", 7000))
        state = monitor.states["a"]
        probes["a"].result = None
        monitor.startService()
        self.addCleanup(monitor.stopService)
        clock.advance(1.0)
        self.assertEqual(state.unjudged_since, 100.0)
        probes["a"].result = OK
        clock.advance(1.0)
        self.assertIsNone(state.unjudged_since)
        probes["a"].result = None
        clock.advance(1.0)
        clock.advance(1.0)
        self.assertEqual(state.unjudged_since, 103.0)
        self.assertEqual(state.health.checked_at, 102.0)
        probes["a"].result = OK
        clock.advance(1.0)
        self.assertIsNone(state.unjudged_since)
        probes["a"].result = None
        clock.advance(1.0)
        self.assertEqual(state.unjudged_since, 106.0)

"""Periodic tasks on a Clock: they run, fail, restart and report."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel
from twisted.trial.unittest import SynchronousTestCase

from sentinel import timer
from sentinel.timer import RESTART_REPORT_SECONDS, RestartingTimer


class Task:
    """A periodic function that records its calls and fails on demand."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.counts: list[int] = []
        self.failing: Exception | None = None
        self.result: Any = None

    def run(self, clock: Clock) -> object:
        self.calls.append(clock.seconds())
        if self.failing is not None:
            raise self.failing
        return self.result


class TimerTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.task = Task()
        self.events: list[dict[str, Any]] = []
        self.patch(timer, "log", Logger(observer=self.events.append))

    def timer(self, step: float = 1.0) -> RestartingTimer:
        return RestartingTimer(
            "demo", step, self.clock, lambda: self.task.run(self.clock)
        )


class ScheduleTests(TimerTestCase):
    """Like TimerService: a call at start, then one every step."""

    def test_calls_every_step(self) -> None:
        """The first call is at start, the next ones a step apart."""
        demo = self.timer(step=2.0)
        demo.startService()
        self.clock.pump([1.0] * 5)
        self.assertEqual(self.task.calls, [0.0, 2.0, 4.0])

    def test_stop(self) -> None:
        """After stopService no call is made, and its Deferred has fired."""
        demo = self.timer()
        demo.startService()
        self.successResultOf(demo.stopService())
        self.clock.advance(5.0)
        self.assertEqual(self.task.calls, [0.0])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_with_count(self) -> None:
        """A counting timer is told how many steps a stall swallowed."""
        counts: list[int] = []
        demo = RestartingTimer.with_count("demo", 1.0, self.clock, counts.append)
        demo.startService()
        self.clock.advance(1.0)
        self.clock.advance(3.0)
        self.assertEqual(counts, [1, 1, 3])

    def test_due(self) -> None:
        """
        While a counting timer's function runs, `due` is the time its call
        was scheduled for, however late it runs (after a stall too), and
        after a change of step; between calls it is None.
        """
        dues: list[tuple[int, float | None]] = []
        demo = RestartingTimer.with_count(
            "demo", 1.0, self.clock, lambda count: dues.append((count, demo.due))
        )
        self.clock.advance(100.0)
        demo.startService()
        self.clock.advance(1.03)
        self.clock.advance(1.0)
        self.clock.advance(2.5)
        demo.change_step(0.5)
        self.clock.advance(0.52)
        self.assertEqual(
            dues,
            [(1, 100.0), (1, 101.0), (1, 102.0), (2, 104.0), (1, 105.03)],
        )
        self.assertIsNone(demo.due)

    def test_due_rounds_apart(self) -> None:
        """
        Calls a whole number of steps apart are due that much apart, to
        the last bit: twenty steps of 0.05 s are a full second.
        """
        dues: list[float | None] = []
        demo = RestartingTimer.with_count(
            "demo", 0.05, self.clock, lambda count: dues.append(demo.due)
        )
        self.clock.advance(1_764_700_000.123)
        demo.startService()
        self.clock.pump([0.05] * 60)
        late = [
            k
            for k in range(len(dues) - 20)
            if (dues[k + 20] or 0.0) < (dues[k] or 0.0) + 1.0
        ]
        self.assertEqual(late, [])

    def test_change_step(self) -> None:
        """A new step applies from now: the next call is one new step away."""
        demo = self.timer(step=1.0)
        demo.startService()
        self.clock.advance(0.5)
        demo.change_step(3.0)
        self.clock.pump([0.5] * 13)
        self.assertEqual(self.task.calls, [0.0, 3.5, 6.5])


class RestartTests(TimerTestCase):
    """A failure never stops the task for good."""

    def test_exception_restarts_next_step(self) -> None:
        """
        A function that raises is logged at critical level with the task's
        name, counted, and called again one step later, then every step.
        """
        demo = self.timer()
        demo.startService()
        self.task.failing = RuntimeError("boom")
        self.clock.advance(1.0)
        self.task.failing = None
        self.clock.pump([1.0] * 3)
        self.assertEqual(self.task.calls, [0.0, 1.0, 2.0, 3.0, 4.0])
        self.assertEqual((demo.restarts, demo.last_error), (1, "boom"))
        [event] = self.events
        self.assertEqual(event["log_level"], LogLevel.critical)
        self.assertEqual(event["task"], "demo")
        self.assertEqual(event["log_failure"].value.args, ("boom",))

    def test_failure_at_start(self) -> None:
        """A function that fails on the very first call still runs again."""
        self.task.failing = ValueError("not yet")
        demo = self.timer()
        demo.startService()
        self.task.failing = None
        self.clock.pump([1.0] * 2)
        self.assertEqual(self.task.calls, [0.0, 1.0, 2.0])
        self.assertEqual(demo.restarts, 1)

    def test_failed_deferred_restarts(self) -> None:
        """A returned Deferred that fails restarts the task as a raise does."""
        demo = self.timer()
        self.task.result = fail(KeyError("gone"))
        demo.startService()
        self.task.result = None
        self.clock.advance(1.0)
        self.assertEqual(self.task.calls, [0.0, 1.0])
        self.assertEqual(demo.restarts, 1)

    def test_failure_after_stop_restarts_nothing(self) -> None:
        """A call still in progress at stop that fails later starts nothing."""
        pending: Deferred[None] = Deferred()
        self.task.result = pending
        demo = self.timer()
        demo.startService()
        stopped = demo.stopService()
        self.assertNoResult(stopped)
        pending.errback(RuntimeError("late"))
        self.successResultOf(stopped)
        self.clock.advance(5.0)
        self.assertEqual(self.task.calls, [0.0])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class HealthTests(TimerTestCase):
    """What /healthz says about a task, and for how long."""

    def test_healthy_until_failure(self) -> None:
        """A task that never failed gives no reason."""
        demo = self.timer()
        demo.startService()
        self.clock.pump([1.0] * 10)
        self.assertIsNone(demo.unhealthy_reason())

    def test_reason_for_a_bounded_time(self) -> None:
        """
        After a restart the reason names the task, the restarts and the
        error for RESTART_REPORT_SECONDS, then goes; the count stays.
        """
        demo = self.timer()
        demo.startService()
        self.task.failing = RuntimeError("boom")
        self.clock.advance(1.0)
        self.task.failing = None
        self.clock.advance(RESTART_REPORT_SECONDS)
        self.assertEqual(
            demo.unhealthy_reason(),
            "the demo task failed and was restarted (1 time(s), "
            "the last 300 s ago): boom",
        )
        self.clock.advance(1.0)
        self.assertIsNone(demo.unhealthy_reason())
        self.assertEqual(demo.stats(), {"restarts": 1, "last_error": "boom"})

    def test_failing_every_run_stays_unhealthy(self) -> None:
        """
        A slow task that fails at every run (two steps longer than the
        report time) keeps a reason without a gap.
        """
        demo = self.timer(step=RESTART_REPORT_SECONDS)
        self.task.failing = RuntimeError("always")
        demo.startService()
        for _ in range(30):
            self.clock.advance(RESTART_REPORT_SECONDS / 10)
            self.assertIsNotNone(demo.unhealthy_reason())
        self.assertEqual(demo.restarts, 4)

    def test_not_running_when_restart_fails(self) -> None:
        """A restart that cannot be scheduled leaves a reason for good."""
        demo = self.timer()
        demo.startService()
        self.task.failing = RuntimeError("boom")

        def refuse(*args: object, **kwargs: object) -> Any:
            raise OSError("no timers left")

        self.patch(self.clock, "callLater", refuse)
        self.clock.advance(1.0)
        self.assertEqual(demo.unhealthy_reason(), "the demo task is not running")
        self.assertEqual(len(self.events), 2)

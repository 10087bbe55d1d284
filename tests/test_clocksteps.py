"""
Steps of the wall clock (`sentinel.clocksteps`), on a Clock whose time is
stepped by hand and a monotonic clock of the test's own.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sentinel import clocksteps
from sentinel.clocksteps import ClockSteps
from sentinel.timer import RestartingTimer


class ClockStepTests(SynchronousTestCase):
    """A check loop and a deadline, through steps of the wall clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000.0)
        self.monotonic = 50.0
        self.ticks: list[int] = []
        self.loop = RestartingTimer.with_count(
            "check loop", 1.0, self.clock, self.ticks.append
        )
        self.loop.startService()
        self.addCleanup(self.loop.stopService)
        self.boot = 70.0
        self.steps = ClockSteps(
            self.clock,
            lambda: [self.loop],
            self.clock.seconds,
            lambda: self.monotonic,
            lambda: self.boot,
        )
        self.moved: list[float] = []
        self.steps.moved = self.moved.append
        self.warned: list[dict[str, Any]] = []
        self.patch(clocksteps.log, "warn", lambda _, **kw: self.warned.append(kw))

    def elapse(
        self, seconds: float, wall_step: float = 0.0, suspended: float = 0.0
    ) -> None:
        """
        `seconds` of real time pass, the machine is suspended `suspended`
        seconds, and the wall clock also steps `wall_step`; then, as the
        reactor does, the poll returns (the look) and the timers due run.
        """
        self.monotonic += seconds
        self.boot += seconds + suspended
        self.clock.rightNow += seconds + suspended + wall_step
        self.steps.look()
        self.clock.advance(0)

    def test_step_back(self) -> None:
        """
        The wall clock steps back an hour: the loop ticks on, once a
        second, and the step is logged and counted.
        """
        self.elapse(1.0)
        self.assertEqual(self.ticks, [1, 1])
        self.elapse(0.5, wall_step=-3600.0)
        for _ in range(3):
            self.elapse(1.0)
        self.assertEqual(self.ticks, [1, 1, 1, 1, 1])
        self.assertEqual(self.steps.steps, 1)
        self.assertAlmostEqual(self.steps.last_step or 0.0, -3600.0)
        self.assertEqual(
            (self.warned[0]["direction"], self.warned[0]["timers"]), ("back", 1)
        )

    def test_without_the_watch_the_loop_stops(self) -> None:
        """
        What the watch prevents: stepped back, the loop's timer is an hour
        away, and even once it fires the loop counts no interval.
        """
        self.steps.look = lambda: None  # type: ignore[method-assign]
        self.elapse(0.5, wall_step=-3600.0)
        for _ in range(10):
            self.elapse(1.0)
        self.assertEqual(self.ticks, [1])

    def test_step_forward(self) -> None:
        """
        The wall clock steps forward ten minutes: a deadline half a second
        away still fires half a second later, not at once, and the loop
        ticks on with a count of one.
        """
        fired: list[float] = []
        self.clock.callLater(0.5, lambda: fired.append(self.monotonic))
        self.elapse(0.2, wall_step=600.0)
        self.assertEqual(fired, [])
        self.elapse(0.3)
        self.assertEqual(fired, [50.5])
        self.elapse(1.0)
        self.elapse(1.0)
        self.assertEqual(self.ticks, [1, 1, 1])
        self.assertEqual(self.warned[0]["direction"], "forward")

    def test_drift_is_no_step(self) -> None:
        """The clocks drifting apart by less than STEP_THRESHOLD: nothing moves."""
        self.elapse(1.0, wall_step=clocksteps.STEP_THRESHOLD / 2)
        self.assertEqual(self.steps.stats()["steps"], 0)
        self.assertEqual(self.warned, [])

    def test_step_moves_the_deadlines(self) -> None:
        """A step, either way, is passed to `moved` whole."""
        self.elapse(1.0, wall_step=600.0)
        self.elapse(1.0, wall_step=-30.0)
        self.assertEqual([round(step) for step in self.moved], [600, -30])

    def test_suspend_moves_no_deadline(self) -> None:
        """
        A suspend of ten minutes looks like a step forward, and moves the
        scheduled calls; but it is a real gap, and `moved` gets none of it.
        Part of a step that coincides with one is still moved.
        """
        self.elapse(1.0, suspended=600.0)
        self.assertEqual(self.steps.steps, 1)
        self.assertEqual(self.warned[0]["suspended"], 600.0)
        self.elapse(1.0, suspended=600.0, wall_step=30.0)
        self.assertEqual([round(step) for step in self.moved], [0, 30])

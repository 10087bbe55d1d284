"""The deadline sweep on a Clock: one deadline per launch, judged after I/O."""

from __future__ import annotations

from typing import Any

from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from sentinel.deadlines import DeadlineSweep
from tests.fakes import ReactorTurns


class Launch:
    """One instance's check, as the monitor keeps it on the instance's state."""

    def __init__(self, clock: ReactorTurns) -> None:
        self._clock = clock
        self.check: Deferred[Any] | None = None
        self.started_at = 0.0
        self.ended_at = -1.0
        self.cancelled = 0

    def start(self) -> Launch:
        self.check = Deferred(lambda d: self._cancelled())
        self.check.addErrback(lambda f: None)  # A timeout is data, not an error.
        self.check.addBoth(lambda _: self._ended())
        self.started_at = self._clock.seconds()
        return self

    def answer(self) -> None:
        assert self.check is not None
        self.check.callback(None)

    def _cancelled(self) -> None:
        self.cancelled += 1

    def _ended(self) -> None:
        self.check = None
        self.ended_at = self._clock.seconds()


class SweepTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = ReactorTurns()
        self.completions: list[float] = []
        self.sweep = DeadlineSweep(self.clock, self.completions.append)

    def launches(self, count: int) -> list[Launch]:
        return [Launch(self.clock).start() for _ in range(count)]


class ExpireTests(SweepTestCase):
    """The checks of one launch share one deadline."""

    def test_cancelled_one_turn_after_deadline(self) -> None:
        """
        A check still in flight at its deadline is cancelled one reactor
        turn later, not by the deadline's own timer, and not before.
        """
        [hung] = self.launches(1)
        self.sweep.expire([hung], 0.0, 0.5)
        self.clock.advance(0.49)
        self.clock.advance(0.01)
        self.assertEqual(hung.cancelled, 0)
        self.clock.advance(0)
        self.assertEqual(hung.cancelled, 1)
        self.assertEqual(self.completions, [0.5])

    def test_reply_read_after_stall_is_not_a_timeout(self) -> None:
        """
        A reply that has already arrived when the deadline's timer fires
        (the agent stalled; its socket is read in the same turn, after the
        timers) ends the check before it is judged.
        """
        late, answered = self.launches(2)
        self.sweep.expire([late, answered], 0.0, 0.5)
        self.clock.advance(0.6)
        answered.answer()
        self.clock.advance(0)
        self.assertEqual((late.cancelled, answered.cancelled), (1, 0))
        self.assertEqual(self.completions, [0.6])

    def test_long_stall_waits_for_the_servers(self) -> None:
        """
        A deadline whose timer fires more than a quarter of the timeout
        late (the whole machine stalled, Redis too) is judged a quarter of
        the timeout later: a reply that arrives in that time counts.
        """
        late, answered = self.launches(2)
        self.sweep.expire([late, answered], 0.0, 0.5)
        self.clock.advance(2.0)
        self.clock.advance(0)
        self.assertEqual((late.cancelled, answered.cancelled), (0, 0))
        self.clock.advance(0.1)
        answered.answer()
        self.clock.advance(0.025)
        self.assertEqual((late.cancelled, answered.cancelled), (1, 0))
        self.assertEqual(self.completions, [2.125])

    def test_agents_own_pause_given_back(self) -> None:
        """
        A pause the agent made itself (a full collection) moves every
        pending deadline that much later: a reply read in the time given
        back counts, and a check still unanswered at its moved deadline
        is judged then, one turn later.
        """
        late, answered = self.launches(2)
        self.sweep.expire([late, answered], 0.0, 0.5)
        self.clock.advance(0.25)
        self.clock.rightNow += 2.0  # The collection: no timer ran.
        self.sweep.postpone(2.0)
        self.clock.advance(0.125)
        answered.answer()
        self.clock.advance(0.0625)
        self.clock.advance(0)
        self.assertEqual((late.cancelled, answered.cancelled), (0, 0))
        self.clock.advance(0.0625)
        self.assertEqual(late.cancelled, 0)  # After the reads of this turn.
        self.clock.advance(0)
        self.assertEqual((late.cancelled, answered.cancelled), (1, 0))
        self.assertEqual(self.completions, [2.5])

    def test_completion_is_the_last_to_end(self) -> None:
        """A launch's completion is when its last check ended."""
        first, second = self.launches(2)
        self.sweep.expire([first, second], 0.0, 0.5)
        self.clock.advance(0.1)
        first.answer()
        self.clock.advance(0.2)
        second.answer()
        self.clock.pump([0.2, 0])
        [completion] = self.completions
        self.assertAlmostEqual(completion, 0.3)
        self.assertEqual(len(self.sweep), 0)

    def test_nothing_in_flight_completes_at_once(self) -> None:
        """A launch whose checks all ended at once completes in 0 s, no timer."""
        self.sweep.expire([], 0.0, 0.5)
        self.assertEqual(self.completions, [0.0])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_checked_again_since_is_left_alone(self) -> None:
        """A state launched again since keeps the deadline of its new check."""
        [state] = self.launches(1)
        self.sweep.expire([state], 0.0, 0.5)
        self.clock.advance(0.2)
        state.answer()
        state.start()
        self.clock.pump([0.3, 0])
        self.assertEqual(state.cancelled, 0)
        self.assertEqual(self.completions, [])

    def test_stop_cancels_every_timer(self) -> None:
        """stop() leaves no delayed call behind."""
        self.sweep.expire(self.launches(3), 0.0, 0.5)
        self.assertEqual(len(self.sweep), 1)
        self.sweep.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])


class TimerBookkeepingTests(SweepTestCase):
    """What the sweep keeps of its timers costs little per launch."""

    def test_launches_do_not_each_ask_every_timer(self) -> None:
        """
        With the timers of about 20 launches pending at any time (a slice
        every 0.05 s, a timeout of 1 s), the sweep asks a timer whether it
        is still active fewer than 8 times a launch, not at every launch
        of every timer pending (about 40 a launch); and every launch's
        check is still cancelled at its deadline.
        """
        asked = []
        active = DelayedCall.active

        def counted(call: DelayedCall) -> bool:
            asked.append(call)
            return active(call)

        self.patch(DelayedCall, "active", counted)
        launches = []
        for _ in range(400):
            launches += self.launches(1)
            self.sweep.expire(launches[-1:], self.clock.seconds(), 1.0)
            self.clock.pump([0.05, 0])
        self.clock.pump([0.05, 0] * 25)
        self.assertLess(len(asked), 8 * 400)
        self.assertEqual({launch.cancelled for launch in launches}, {1})
        self.assertEqual(len(self.completions), 400)
        self.assertEqual(len(self.sweep), 0)


class OverdueTests(SweepTestCase):
    """Checks still in flight at a tick (overruns) wait for their deadline."""

    def test_waits_for_the_last_deadline(self) -> None:
        """
        `then` runs once the latest deadline among the states has been
        judged, with every state whose check is over, overdue ones cancelled.
        """
        early = Launch(self.clock).start()
        self.clock.advance(0.2)
        late = Launch(self.clock).start()
        self.clock.advance(0.1)
        ready: list[list[Launch]] = []
        self.sweep.when_overdue([early, late], 0.5, ready.append)
        self.clock.advance(0.4)
        self.assertEqual(ready, [])
        self.clock.pump([0, 0])
        self.assertEqual(ready, [[early, late]])
        self.assertEqual((early.cancelled, late.cancelled), (1, 1))

    def test_younger_check_is_left_out(self) -> None:
        """A state checked again since its deadline was set is not cancelled."""
        [state] = self.launches(1)
        ready: list[list[Launch]] = []
        self.sweep.when_overdue([state], 0.5, ready.append)
        self.clock.advance(0.1)
        state.answer()
        self.clock.advance(0.3)
        state.start()
        self.clock.pump([0.1, 0])
        self.assertEqual(ready, [[]])
        self.assertEqual(state.cancelled, 0)

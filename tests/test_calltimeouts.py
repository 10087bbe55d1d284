"""
`sentinel.calltimeouts`: a call's timeout on a Clock, judged on time and
after a stall of the agent, never later than its bound.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sentinel.calltimeouts import JUDGED_LATE, time_out

TIMEOUT = 5.0
# A stall of the agent: its timers run this late.
STALL = 2.0


class TimeOutTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.timed_out: list[None] = []
        self.d: Deferred[str] = time_out(
            Deferred(), TIMEOUT, self.clock, lambda: self.timed_out.append(None)
        )

    def test_on_time_fails_at_the_timeout(self) -> None:
        """A timer on time fails the call at the timeout, and says so."""
        self.clock.advance(TIMEOUT - 0.01)
        self.assertNoResult(self.d)
        self.clock.advance(0.01)
        self.failureResultOf(self.d, TimeoutError)
        self.assertEqual(len(self.timed_out), 1)

    def test_late_timer_waits_for_answers(self) -> None:
        """
        A timer that runs more than `JUDGED_LATE` late (the agent stalled)
        does not fail the call: an answer that comes meanwhile fires it,
        and the timer is gone.
        """
        self.clock.advance(TIMEOUT + STALL)
        self.assertNoResult(self.d)
        self.d.callback("answer")
        self.assertEqual(self.successResultOf(self.d), "answer")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.timed_out, [])

    def test_late_timer_still_fails_within_the_bound(self) -> None:
        """
        With no answer, a call whose timer ran late fails `JUDGED_LATE`
        after it ran, and a judgement that runs late itself fails it at
        once rather than waiting again.
        """
        self.clock.advance(TIMEOUT + STALL)
        self.clock.advance(JUDGED_LATE - 0.01)
        self.assertNoResult(self.d)
        self.clock.advance(0.01)
        self.failureResultOf(self.d, TimeoutError)

        d: Deferred[str] = time_out(Deferred(), TIMEOUT, self.clock)
        self.clock.advance(TIMEOUT + STALL)
        self.clock.advance(JUDGED_LATE + STALL)
        self.failureResultOf(d, TimeoutError)

    def test_cancelled_by_its_caller_is_not_a_timeout(self) -> None:
        """A call its caller cancels fails with CancelledError, untimed."""
        self.d.cancel()
        self.failureResultOf(self.d, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.timed_out, [])

"""Tests for sentinel.reconnects: the policy's times across clock steps."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sentinel.reconnects import MAX_BACKOFF, PROBATION, Reconnects


class ClockStepTests(SynchronousTestCase):
    """
    A step back of the wall clock, which moves none of the policy's times,
    delays nothing by more than the policy's own spacing.
    """

    def test_backoff_after_step_back(self) -> None:
        """
        An attempt backed off after a violation may start at once after a
        step back of an hour; before the step it waits out its back-off.
        """
        reconnects = Reconnects()
        for _ in range(10):  # The back-off at its longest.
            reconnects.violated(7200.0, "unexpected reply")
        self.assertFalse(reconnects.may_attempt(7200.0 + MAX_BACKOFF - 1, 7215.0))
        self.assertTrue(reconnects.may_attempt(3601.0, 3601.0))

    def test_probation_after_step_back(self) -> None:
        """
        A connection on probation is trusted again after a step back of an
        hour once the probation could have ended, not an hour later.
        """
        reconnects = Reconnects()
        reconnects.violated(7200.0, "unexpected reply")
        reconnects.connected(7201.0)
        self.assertEqual(
            reconnects.distrust(7201.0 + PROBATION - 1), "unexpected reply"
        )
        self.assertIsNone(reconnects.distrust(3602.0))

    def test_no_probation_yet(self) -> None:
        """Before a connection after the violation, answers never count."""
        reconnects = Reconnects()
        reconnects.violated(7200.0, "unexpected reply")
        self.assertEqual(reconnects.distrust(3602.0), "unexpected reply")

"""
Tests for L{sentinel.descriptors}: a renewal takes a second descriptor
only while one is to spare.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sentinel.descriptors import RECOUNT, SpareDescriptors


class SpareDescriptorsTests(SynchronousTestCase):
    """Descriptors counted now and then, taken one per renewal between."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000.0)
        self.open = 1000
        self.counts = 0

    def count(self) -> int:
        self.counts += 1
        return self.open

    def spare(self, limit: float = 1128.0) -> SpareDescriptors:
        return SpareDescriptors(self.clock, self.count, keep=96, limit=lambda: limit)

    def test_takes_what_is_left_beyond_keep(self) -> None:
        """
        With 1,000 open, a limit of 1,128 and 96 kept free, 32 renewals may
        start until the next count, and the 33rd is refused and counted.
        """
        spare = self.spare()
        self.assertEqual([spare.take() for _ in range(33)], [True] * 32 + [False])
        self.assertEqual((spare.refused, self.counts), (1, 1))

    def test_counted_again_after_recount(self) -> None:
        """
        A count is used for RECOUNT seconds; the next sees the descriptors
        the renewals hold, and those they gave back.
        """
        spare = self.spare()
        for _ in range(32):
            spare.take()
        self.open = 1032
        self.clock.advance(RECOUNT)
        self.assertFalse(spare.take())
        self.open = 1010
        self.clock.advance(RECOUNT)
        self.assertTrue(spare.take())
        self.assertEqual(self.counts, 3)

    def test_clock_stepped_back_counts_again(self) -> None:
        """A count from the future (the wall clock stepped back) is not kept."""
        spare = self.spare()
        spare.take()
        self.clock.rightNow -= 3600.0
        spare.take()
        self.assertEqual(self.counts, 2)

    def test_uncountable_refuses_nothing(self) -> None:
        """Uncounted descriptors, or no limit: no renewal is refused."""
        unknown = SpareDescriptors(self.clock, lambda: None, keep=96)
        self.assertTrue(all(unknown.take() for _ in range(10_000)))
        unlimited = self.spare(limit=float("inf"))
        self.assertTrue(all(unlimited.take() for _ in range(10_000)))
        self.assertEqual(unknown.refused + unlimited.refused, 0)

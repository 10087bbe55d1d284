"""Instances spread round robin over the interval's slices."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sentinel.slices import MAX_SLICES, Slices, slices_for, slices_needed


class SlicesForTests(SynchronousTestCase):
    """How many slices an interval is cut into."""

    def test_about_fifty_milliseconds_apart(self) -> None:
        """Slices are about 50 ms apart, at least one, at most MAX_SLICES."""
        self.assertEqual(
            [slices_for(s) for s in (0.01, 0.1, 0.5, 1.0, 60.0)],
            [1, 2, 10, MAX_SLICES, MAX_SLICES],
        )

    def test_at_least_per_slice(self) -> None:
        """
        Fewer slices for fewer instances, `per_slice` to a slice, at least
        one, at most `most`; a `per_slice` of 0 asks for `most` always.
        """
        self.assertEqual(
            [slices_needed(20, n, 10) for n in (0, 1, 10, 11, 50, 199, 200, 5000)],
            [1, 1, 1, 2, 5, 20, 20, 20],
        )
        self.assertEqual(slices_needed(20, 1, 0), 20)


class SlicesTests(SynchronousTestCase):
    """Membership and the order of launches."""

    def test_round_robin_and_rounds(self) -> None:
        """Members go to slices in turn; `next` cycles through the slices."""
        slices: Slices[str] = Slices(3)
        for name in "abcd":
            slices.add(name)
        launched = [slices.next() for _ in range(4)]
        self.assertEqual(
            launched, [(0, ["a", "d"]), (1, ["b"]), (2, ["c"]), (0, ["a", "d"])]
        )

    def test_removal_keeps_slices_even(self) -> None:
        """A removed member leaves its slice; the next added takes the next slot."""
        slices: Slices[str] = Slices(2)
        slices.add("a")
        slices.add("b")
        slices.remove("a")
        slices.add("c")
        self.assertEqual((slices.slot_of("b"), slices.slot_of("c")), (1, 0))

    def test_resize_assigns_again(self) -> None:
        """Resizing spreads every member again, in the order they were added."""
        slices: Slices[str] = Slices(1)
        for name in "abc":
            slices.add(name)
        slices.next()
        slices.resize(2)
        self.assertEqual(len(slices), 2)
        self.assertEqual(
            [slices.next() for _ in range(2)], [(0, ["a", "c"]), (1, ["b"])]
        )

    def test_resize_keeping_phase(self) -> None:
        """
        Cut again between two rounds, each member goes to the slice at its
        own's place in the round or before it, and the next launch is the
        first slice's.
        """
        slices: Slices[str] = Slices(4)
        for name in "abcdefgh":
            slices.add(name)
        slices.next()
        slices.resize(2, keep_phase=True)
        self.assertEqual(
            [slices.next() for _ in range(2)],
            [(0, ["a", "b", "e", "f"]), (1, ["c", "d", "g", "h"])],
        )
        slices.resize(3, keep_phase=True)
        self.assertEqual(
            [slices.slot_of(name) for name in "abcdefgh"], [0, 0, 1, 1, 0, 0, 1, 1]
        )

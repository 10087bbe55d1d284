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
        Cut again between two rounds, each member launched goes to a slice
        at its own's place in the round or before it, the slices filled
        evenly from the first, and the next launch is the first slice's.
        """
        slices: Slices[str] = Slices(4)
        for name in "abcdefgh":
            slices.add(name)
        for _ in range(4):
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

    def test_resize_spreads_members_not_launched(self) -> None:
        """
        A cut grown between two rounds spreads the members not launched
        since they were added over every slice (they have no place in the
        round to keep), and fills the earliest slices with the members
        launched, none later than its own: one slice cut into four, the
        two launched stay first, and 12 new ones make every slice 3 or 4.
        """
        slices: Slices[str] = Slices(1)
        slices.add("a")
        slices.add("b")
        slices.next()
        for i in range(12):
            slices.add(f"n{i}")
        slices.resize(4, keep_phase=True)
        self.assertEqual([slices.slot_of(name) for name in "ab"], [0, 0])
        sizes = [len(slices.next()[1]) for _ in range(4)]
        self.assertEqual((sum(sizes), max(sizes)), (14, 4))

    def test_resize_spreads_members_launched(self) -> None:
        """
        Members launched in the late slices of a grown cut are spread over
        the slices up to their own place, not kept together in one: 24
        added to four slices of 2 as the third is next, launched in the
        third and fourth, then cut into 16: every slice holds 2, each
        member launched at its own place or before it.
        """
        slices: Slices[str] = Slices(4)
        for i in range(8):
            slices.add(f"m{i}")
        slices.next()
        slices.next()
        for i in range(8, 32):
            slices.add(f"m{i}")
        slices.next()
        slices.next()
        old = {f"m{i}": slices.slot_of(f"m{i}") for i in range(32)}
        slices.resize(16, keep_phase=True)
        self.assertEqual([len(slices.next()[1]) for _ in range(16)], [2] * 16)
        first = {f"m{i}" for i in range(8)}
        launched = [name for name, slot in old.items() if slot >= 2 or name in first]
        self.assertTrue(all(slices.slot_of(name) <= old[name] * 4 for name in launched))

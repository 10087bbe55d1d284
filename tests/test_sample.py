"""Tests for `sentinel.sample`: many items named in one reason, bounded."""

from __future__ import annotations

from collections.abc import Iterator

from twisted.trial.unittest import SynchronousTestCase

from sentinel.sample import CUT, NAMED, others, sample


class SampleTests(SynchronousTestCase):
    """The first `NAMED`, each cut at `CUT` characters, and how many more."""

    def test_few_all_named(self) -> None:
        """No more than `NAMED`: each named, in order, and no count after."""
        self.assertEqual(sample(["a", "b", "c"], 3), "a, b, c")
        names = [f"n{i}" for i in range(NAMED)]
        self.assertEqual(sample(names, NAMED), ", ".join(names))

    def test_ten_thousand_stay_short(self) -> None:
        """
        10,000 items of 200 characters each: the first ten named, each cut
        to `CUT` characters, then how many more; under 700 characters.
        """
        names = [f"/sentinel/instances/{i:05d}-" + "x" * 180 for i in range(10_000)]
        said = sample(names, len(names))
        self.assertTrue(said.endswith(" and 9990 more"), said)
        shown = said.removesuffix(" and 9990 more").split(", ")
        self.assertEqual(shown, [n[: CUT - 3] + "..." for n in names[:NAMED]])
        self.assertLess(len(said), 700)

    def test_reads_only_what_it_names(self) -> None:
        """Of an iterator, only the first `NAMED` items are read."""
        read: list[int] = []

        def items() -> Iterator[str]:
            for i in range(100_000):
                read.append(i)
                yield f"n{i}"

        self.assertTrue(sample(items(), 100_000).endswith(" and 99990 more"))
        self.assertEqual(len(read), NAMED)

    def test_unprintable_escaped(self) -> None:
        """
        A name another client chose, with a terminal escape and a newline,
        is named escaped: a reason stays one line an operator can read.
        """
        self.assertEqual(sample(["a\x1b[2J\nb"], 1), "a\\x1b[2J\\nb")

    def test_others(self) -> None:
        """
        After a first item said in full: nothing without others, else
        their count and a sample of them, in parentheses.
        """
        self.assertEqual(others([], 0), "")
        self.assertEqual(others(["/b", "/c"], 2), " (and 2 more: /b, /c)")
        many = (f"/n{i}" for i in range(1, 10_000))
        said = others(many, 9_999)
        self.assertTrue(said.startswith(" (and 9999 more: /n1, /n2, "), said)
        self.assertTrue(said.endswith(", /n10 and 9989 more)"), said)

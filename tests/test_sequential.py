"""Tests for sentinel.sequential: ZooKeeper's sequential names read back."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sentinel.sequential import creation_order, split_sequential


class SplitTests(SynchronousTestCase):
    def test_positive_counter(self) -> None:
        """Ten digits after a prefix ending in "_" are the counter."""
        self.assertEqual(split_sequential("member_0000000042"), ("member_", 42))
        self.assertEqual(split_sequential("a_b_0000000001"), ("a_b_", 1))

    def test_wrapped_counter(self) -> None:
        """
        Once the parent's counter passed 2**31-1, ZooKeeper writes it
        negative with ``%010d``: a minus sign and ten digits, then nine as
        it comes back towards zero; each is read as the counter.
        """
        self.assertEqual(split_sequential("member_-2147483648"), ("member_", -(2**31)))
        self.assertEqual(split_sequential("member_-1000000000"), ("member_", -(10**9)))
        self.assertEqual(split_sequential("member_-999999999"), ("member_", -999999999))
        self.assertEqual(split_sequential("member_-000000001"), ("member_", -1))
        self.assertEqual(split_sequential("cache-3_-000000005"), ("cache-3_", -5))

    def test_not_sequential(self) -> None:
        """
        A name that ZooKeeper's counter does not end, or whose prefix does
        not end in "_", is none of ours.
        """
        for name in [
            "member_123",
            "member0000000001",
            "member_0000000001x",
            "member_-2147483649",
            "member_-0001",
            "member_--00000001",
            "member_000000000\u0663",
            "member_+000000001",
            "_0000000001x",
            "",
        ]:
            self.assertIsNone(split_sequential(name), name)


class OrderTests(SynchronousTestCase):
    def test_wrapped_counters_are_newer(self) -> None:
        """
        Counters sort in the order ZooKeeper gave them: positive ones
        first, then those given after the wrap, from -2**31 up.
        """
        given = [0, 1, 2**31 - 1, -(2**31), -5, -1]
        self.assertEqual(sorted(reversed(given), key=creation_order), given)

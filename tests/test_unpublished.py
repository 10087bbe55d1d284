"""
`sentinel.unpublished.Unpublished`: its checks go on whatever a check's
reads or its `missing` callback raise (DESIGN.md §2.1).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sentinel.unpublished import Unpublished

EVERY = 5.0


class ChecksGoOnTests(SynchronousTestCase):
    """A check that raised still schedules the next one, and says why once."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.reads: list[str] = []
        self.told: list[list[str]] = []
        self.raise_in_exists = 0
        self.raise_in_missing = 0

    def exists(self, path: str) -> Deferred[Any]:
        self.reads.append(path)
        if self.raise_in_exists:
            self.raise_in_exists -= 1
            raise KeyError(path)
        return succeed(None)

    def missing(self, names: list[str]) -> None:
        self.told.append(names)
        if self.raise_in_missing:
            self.raise_in_missing -= 1
            raise KeyError(names[0])

    def unpublished(self) -> Unpublished:
        checks = Unpublished(
            self.clock,
            self.exists,
            lambda name: "/i/" + name,
            lambda: EVERY,
            self.missing,
        )
        checks.watch(["redis-a"])
        return checks

    def test_missing_that_raises_does_not_end_the_checks(self) -> None:
        """
        The callback told of missing nodes raises: the failure is logged
        once and the next check still comes `every` s later.
        """
        self.raise_in_missing = 1
        checks = self.unpublished()
        self.clock.advance(EVERY)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.clock.advance(EVERY)
        self.assertEqual(checks.checks, 2)
        self.assertEqual(self.told, [["redis-a"], ["redis-a"]])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_read_that_raises_does_not_leave_it_checking(self) -> None:
        """
        A read raising at once (a bug, a bad path) fails like a read that
        errs: logged nowhere as a missing node, and the checks go on.
        """
        self.raise_in_exists = 1
        checks = self.unpublished()
        self.clock.advance(EVERY)
        self.assertEqual(self.told, [])
        self.clock.advance(EVERY)
        self.assertEqual(checks.checks, 2)
        self.assertEqual(self.told, [["redis-a"]])
        # Stopped, nothing is left scheduled.
        checks.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

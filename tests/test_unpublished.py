"""
The checks of the nodes a waiting member leaves to a member not back yet
(`sentinel.unpublished`): what a check tells, and that the checks go on
whatever its reads or its `missing` callback raise (DESIGN.md §2.1).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sentinel.unpublished import Unpublished

EVERY = 12.0


class CheckTests(SynchronousTestCase):
    """One `Unpublished` whose reads are answered by hand."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.reads: dict[str, Deferred[Any]] = {}
        self.missing: list[list[str]] = []

        def exists(path: str) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            self.reads[path] = d
            return d

        self.unpublished = Unpublished(
            self.clock,
            exists,
            lambda name: f"/i/{name}",
            lambda: EVERY,
            self.missing.append,
        )

    def check_sent(self, names: list[str]) -> None:
        """A check of `names` is sent `EVERY` s after they are found so."""
        self.unpublished.watch(names)
        self.clock.advance(EVERY)
        self.assertEqual(sorted(self.reads), [f"/i/{n}" for n in sorted(names)])

    def test_a_missing_node_is_told(self) -> None:
        """A node a check finds missing is told, and the checks go on."""
        self.check_sent(["x", "y"])
        self.reads.pop("/i/x").callback(None)
        self.reads.pop("/i/y").callback(object())
        self.assertEqual(self.missing, [["x"]])
        self.clock.advance(EVERY)
        self.assertEqual(sorted(self.reads), ["/i/x", "/i/y"])

    def test_an_instance_no_longer_watched_says_nothing(self) -> None:
        """
        A reload removes ``x`` while its read is out, and the other member
        deletes its node: the answer, missing, is no longer this wait's
        concern (it would end the wait for an instance the agent no longer
        knows); ``y``, still watched, is told.
        """
        self.check_sent(["x", "y"])
        self.unpublished.watch(["y"])
        self.reads.pop("/i/x").callback(None)
        self.reads.pop("/i/y").callback(None)
        self.assertEqual(self.missing, [["y"]])

    def test_a_check_answered_after_the_wait_says_nothing(self) -> None:
        """
        The wait ends (or a new session begins) while a check is out: its
        answer ends nothing, and no further check is sent.
        """
        self.check_sent(["x"])
        self.unpublished.new_session()
        self.reads.pop("/i/x").callback(None)
        self.assertEqual(self.missing, [])
        self.clock.advance(EVERY)
        self.assertEqual(self.reads, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])


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

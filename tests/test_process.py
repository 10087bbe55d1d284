"""The process policy: the open-file limit and the garbage collector."""

from __future__ import annotations

import gc
import resource
import weakref

from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from sentinel import process, timer
from sentinel.process import (
    DROPPED_COLLECTION_GAP,
    FD_RESERVE,
    GC_REFREEZE_INTERVAL,
    HOUSEKEEPING_INTERVAL,
    MAX_UNCOLLECTED_ROUNDS,
    SETTLE_ROUNDS,
    ProcessPolicy,
    check_fd_capacity,
    raise_fd_limit,
)


class FakeLimits:
    """An open-file limit that `resource` reads and sets, in memory."""

    def __init__(self, test: SynchronousTestCase, soft: int, hard: int) -> None:
        self.limits = (soft, hard)
        self.set_to: list[tuple[int, int]] = []
        test.patch(resource, "getrlimit", lambda _: self.limits)
        test.patch(resource, "setrlimit", self.set)

    def set(self, which: int, limits: tuple[int, int]) -> None:
        self.set_to.append(limits)
        self.limits = limits


class FdLimitTests(SynchronousTestCase):
    """The soft limit is raised at start; a config that cannot fit is refused."""

    def test_raised_to_hard_limit(self) -> None:
        """The soft limit goes up to the hard limit."""
        limits = FakeLimits(self, 1024, 4096)
        self.assertEqual(raise_fd_limit(), 4096)
        self.assertEqual(limits.set_to, [(4096, 4096)])

    def test_refused_when_it_cannot_fit(self) -> None:
        """More instances than descriptors: one clear line, no traceback."""
        FakeLimits(self, 4096, 4096)
        with self.assertRaises(SystemExit) as caught:
            check_fd_capacity(5000)
        message = str(caught.exception.code)
        needed = 5000 + FD_RESERVE
        self.assertIn(f"5000 instances need about {needed} open files", message)
        self.assertIn("limit is 4096", message)
        self.assertNotIn("\n", message)

    def test_built_checks_hard_limit_only(self) -> None:
        """
        Building the policy refuses what even the hard limit cannot hold,
        and accepts what it can, without changing any limit.
        """
        limits = FakeLimits(self, 1024, 4096)
        self.assertRaises(SystemExit, ProcessPolicy, Clock(), 5000)
        ProcessPolicy(Clock(), 3000)
        self.assertEqual(limits.set_to, [])

    def test_privileged_start_raises_then_checks(self) -> None:
        """
        Only privilegedStartService (twistd's, before anything listens)
        raises the soft limit, then checks the instances fit it.
        """
        limits = FakeLimits(self, 1024, 4096)
        policy = ProcessPolicy(Clock(), 3000)
        policy.privilegedStartService()
        self.assertEqual(limits.set_to, [(4096, 4096)])
        policy.check_capacity(4096 - FD_RESERVE)
        self.assertRaises(SystemExit, policy.check_capacity, 4097 - FD_RESERVE)

    def test_refused_at_start_when_raising_fails(self) -> None:
        """A soft limit that cannot be raised refuses the config at start."""
        limits = FakeLimits(self, 1024, 4096)

        def refuse(which: int, limits: tuple[int, int]) -> None:
            raise ValueError("not allowed")

        self.patch(resource, "setrlimit", refuse)
        policy = ProcessPolicy(Clock(), 3000)
        self.assertRaises(SystemExit, policy.privilegedStartService)
        self.assertEqual(limits.limits, (1024, 4096))


class _Node:
    """A container that can be part of a reference cycle."""

    other: object = None


class RefreezeTests(SynchronousTestCase):
    """Freezing start-up objects never keeps garbage for good."""

    def tearDown(self) -> None:
        gc.unfreeze()

    def test_refreeze_frees_garbage_frozen_alive(self) -> None:
        """
        A cycle frozen while in use and dropped afterwards (a connection
        lost, say) survives collections while frozen; the next refreeze
        collects it.
        """
        first, second = _Node(), _Node()
        first.other, second.other = second, first
        gone = weakref.ref(first)
        gc.freeze()
        del first, second
        gc.collect()
        self.assertIsNotNone(gone())
        self.assertGreaterEqual(process.refreeze_gc(), 2)
        self.assertIsNone(gone())
        self.assertGreater(gc.get_freeze_count(), 0)

    def test_dropped_frozen_client_collected(self) -> None:
        """
        A cycle made before a freeze (a ZooKeeper client made at start) and
        dropped afterwards (replaced and closed) survives the collector's
        own collections; said dropped, it is collected at once.
        """
        clock = Clock()
        policy = ProcessPolicy(clock, 1, monotonic=clock.seconds)
        first, second = _Node(), _Node()
        first.other, second.other = second, first
        gone = weakref.ref(first)
        policy.startService()
        self.addCleanup(policy.stopService)
        clock.pump([HOUSEKEEPING_INTERVAL] * 6)
        del first, second
        gc.collect()
        self.assertIsNotNone(gone())
        policy.dropped(0.0)
        self.assertIsNone(gone())


process_count_gc_objects = process.count_gc_objects


class HousekeepingTests(SynchronousTestCase):
    """The policy's timer refreezes, counts, and settles after changes."""

    def setUp(self) -> None:
        self.refreezes = 0
        self.objects = 1000
        self.patch(process, "refreeze_gc", self.refreeze)
        self.patch(process, "count_gc_objects", lambda frozen=None: self.objects)
        self.clock = Clock()
        self.policy = ProcessPolicy(self.clock, 1, monotonic=self.clock.seconds)

    def refreeze(self) -> int:
        self.refreezes += 1
        return 0

    def test_refreeze_at_start_and_periodically(self) -> None:
        """At start, then every GC_REFREEZE_INTERVAL, not more often."""
        self.policy.startService()
        self.assertEqual(self.refreezes, 1)
        self.clock.pump([HOUSEKEEPING_INTERVAL] * 59)
        self.assertEqual(self.clock.seconds(), GC_REFREEZE_INTERVAL - 10)
        self.assertEqual(self.refreezes, 1)
        self.clock.pump([HOUSEKEEPING_INTERVAL] * 61)
        self.assertEqual(self.refreezes, 3)

    def test_collection_time_given_back(self) -> None:
        """
        Each full collection tells `paused` how long it held the reactor,
        at start and periodically.
        """
        paused: list[float] = []
        self.policy.paused = paused.append

        def slow_refreeze() -> int:
            self.clock.advance(1.5)  # (No timer of the policy is due.)
            return self.refreeze()

        self.patch(process, "refreeze_gc", slow_refreeze)
        self.policy.startService()
        self.clock.pump([HOUSEKEEPING_INTERVAL] * 60)
        self.assertEqual(self.refreezes, 2)
        self.assertEqual(paused, [1.5, 1.5])

    def test_collections_reported(self) -> None:
        """
        ``gc`` in /debug/stats counts the full collections and the seconds
        they held the reactor, and says whether one is due once the
        watched instances settle: due from start and after each change,
        not once the settled rounds collected.
        """
        held = iter([0.25, 1.75])

        def slow_refreeze() -> int:
            self.clock.advance(next(held))  # (No timer of the policy is due.)
            return self.refreeze()

        self.patch(process, "refreeze_gc", slow_refreeze)
        self.policy.startService()
        self.addCleanup(self.policy.stopService)
        self.assertEqual(
            self.policy.stats(),
            {
                "full_collections": 1,
                "paused_seconds": 0.25,
                "last_paused_seconds": 0.25,
                "collection_due": True,
            },
        )
        for rounds in range(1, SETTLE_ROUNDS + 1):
            self.policy.watched_for(rounds)
        self.assertEqual(
            self.policy.stats(),
            {
                "full_collections": 2,
                "paused_seconds": 2.0,
                "last_paused_seconds": 1.75,
                "collection_due": False,
            },
        )
        self.policy.watched_for(1)
        self.assertTrue(self.policy.stats()["collection_due"])

    def test_wall_step_during_collection_no_pause(self) -> None:
        """
        A step of the wall clock during a collection is not taken for its
        pause, which the monotonic clock times: an hour's step would have
        held every check in flight for an hour.
        """
        monotonic = [0.0]
        policy = ProcessPolicy(self.clock, 1, monotonic=lambda: monotonic[0])
        paused: list[float] = []
        policy.paused = paused.append

        def stepped_refreeze() -> int:
            monotonic[0] += 0.25
            self.clock.advance(3600.25)
            return self.refreeze()

        self.patch(process, "refreeze_gc", stepped_refreeze)
        policy.startService()
        self.addCleanup(policy.stopService)
        self.assertEqual(paused, [0.25])

    def test_settle_rounds(self) -> None:
        """
        Every round before the 30th after a change, and after it while
        connections wait to start, freezes the collector without
        collecting; the first round after that collects and freezes, later
        rounds do nothing, a change starts over, and a settle starts the
        period again.
        """
        freezes: list[int] = []
        self.patch(gc, "freeze", lambda: freezes.append(1))
        self.policy.startService()
        self.clock.pump([HOUSEKEEPING_INTERVAL] * 30)
        for rounds in range(1, 40):
            self.policy.watched_for(rounds, connecting=rounds < 35)
        self.assertEqual(len(freezes), 34)
        self.assertEqual(self.refreezes, 1 + 1)
        for rounds in range(1, 32):
            self.policy.watched_for(rounds)
        self.assertEqual(len(freezes), 34 + 29)
        self.assertEqual(self.refreezes, 1 + 2)
        self.clock.pump([HOUSEKEEPING_INTERVAL] * 59)
        self.assertEqual(self.refreezes, 3)
        self.clock.advance(HOUSEKEEPING_INTERVAL)
        self.assertEqual(self.refreezes, 4)

    def test_storm_of_changes_collects_anyway(self) -> None:
        """
        Changes every few rounds (a storm of reloads) never let the rounds
        settle, yet everything is collected after MAX_UNCOLLECTED_ROUNDS
        rounds frozen without a collection, and again as many later: the
        garbage of every change is not frozen for good.
        """
        freezes: list[int] = []
        self.patch(gc, "freeze", lambda: freezes.append(1))
        self.policy.startService()
        started = self.refreezes
        for _ in range(3 * MAX_UNCOLLECTED_ROUNDS // 5):
            for rounds in range(1, 6):
                self.policy.watched_for(rounds)
        self.assertEqual(self.refreezes, started + 3)
        self.assertEqual(len(freezes), 3 * (MAX_UNCOLLECTED_ROUNDS - 1))

    def test_object_count_kept_current(self) -> None:
        """
        gc_objects is the count of the last housekeeping run: reading it
        walks nothing, and it is at most HOUSEKEEPING_INTERVAL old.
        """
        self.policy.startService()
        self.assertEqual(self.policy.gc_objects(), 1000)
        self.objects = 2000
        self.assertEqual(self.policy.gc_objects(), 1000)
        self.clock.advance(HOUSEKEEPING_INTERVAL)
        self.assertEqual(self.policy.gc_objects(), 2000)

    def test_frozen_counted_once_per_freeze(self) -> None:
        """
        The frozen objects, whose count walks every one of them, are
        counted once after each freeze, not at every housekeeping run.
        """
        self.patch(process, "count_gc_objects", process_count_gc_objects)
        walks: list[int] = []
        self.patch(gc, "get_freeze_count", lambda: walks.append(1) or 500)
        self.patch(gc, "freeze", lambda: None)
        self.policy.startService()
        self.clock.pump([HOUSEKEEPING_INTERVAL] * 5)
        self.assertEqual(len(walks), 1)
        self.assertGreaterEqual(self.policy.gc_objects(), 500)
        self.policy.watched_for(1)
        self.clock.pump([HOUSEKEEPING_INTERVAL] * 5)
        self.assertEqual(len(walks), 2)

    def test_failure_restarts_housekeeping(self) -> None:
        """
        A housekeeping run that raises is logged and counted, and the next
        one runs a period later: the count is kept current again.
        """
        events: list[dict[str, object]] = []
        self.patch(timer, "log", Logger(observer=events.append))
        self.policy.startService()

        def broken(frozen: int | None = None) -> int:
            raise MemoryError("no room to count")

        self.patch(process, "count_gc_objects", broken)
        self.clock.advance(HOUSEKEEPING_INTERVAL)
        self.assertEqual(self.policy.housekeeping.restarts, 1)
        self.assertEqual(events[0]["task"], "gc housekeeping")
        self.patch(process, "count_gc_objects", lambda frozen=None: 3000)
        self.clock.advance(HOUSEKEEPING_INTERVAL)
        self.assertEqual(self.policy.gc_objects(), 3000)

    def test_dropped_frozen_collected_at_once(self) -> None:
        """
        A replaced ZooKeeper client made before the last freeze and said
        dropped is collected at once, even just after another full
        collection (the settling rounds'); once only.
        """
        self.policy.startService()
        self.clock.advance(HOUSEKEEPING_INTERVAL)
        for rounds in range(1, SETTLE_ROUNDS + 1):
            self.policy.watched_for(rounds)
        self.assertEqual(self.refreezes, 2)
        self.clock.advance(1)
        self.policy.dropped(0.0)
        self.assertEqual(self.refreezes, 3)
        self.clock.pump([HOUSEKEEPING_INTERVAL] * 12)
        self.assertEqual(self.refreezes, 3)

    def test_dropped_after_the_last_freeze_left_to_the_collector(self) -> None:
        """
        A client made after the last freeze (a settling round's, here) is
        within the collector's reach: said dropped, it costs no full
        collection, neither at once nor later.
        """
        self.policy.startService()
        self.clock.advance(HOUSEKEEPING_INTERVAL)
        self.policy.watched_for(1)
        self.clock.pump([HOUSEKEEPING_INTERVAL] * 6)
        self.policy.dropped(HOUSEKEEPING_INTERVAL + 1)
        self.clock.pump([HOUSEKEEPING_INTERVAL] * 12)
        self.assertEqual(self.refreezes, 1)

    def test_dropped_frozen_by_a_settling_round(self) -> None:
        """
        A settling round's freeze (no collection) counts as a freeze: a
        client made before it and dropped is collected.
        """
        self.policy.startService()
        self.clock.pump([HOUSEKEEPING_INTERVAL] * 6)
        made_at = self.clock.seconds()
        self.clock.advance(1)
        self.policy.watched_for(1)
        self.policy.dropped(made_at)
        self.assertEqual(self.refreezes, 2)

    def test_dropped_within_the_gap_waits_for_it(self) -> None:
        """
        Within `DROPPED_COLLECTION_GAP` of the last collection made for a
        dropped client (the replacements of a long outage, one every
        session timeout, each made before the collection of the last), a
        dropped frozen client waits: collected at the first housekeeping
        run after the gap, once for all those dropped meanwhile.
        """
        self.policy.startService()
        self.clock.advance(HOUSEKEEPING_INTERVAL)
        self.policy.dropped(0.0)
        self.assertEqual(self.refreezes, 2)
        self.clock.advance(1)
        self.policy.dropped(HOUSEKEEPING_INTERVAL)
        self.policy.dropped(HOUSEKEEPING_INTERVAL)
        self.assertEqual(self.refreezes, 2)
        self.clock.pump([HOUSEKEEPING_INTERVAL] * 5)
        self.assertLess(
            self.clock.seconds(), HOUSEKEEPING_INTERVAL + DROPPED_COLLECTION_GAP
        )
        self.assertEqual(self.refreezes, 2)
        self.clock.advance(HOUSEKEEPING_INTERVAL)
        self.assertEqual(self.refreezes, 3)
        self.clock.pump([HOUSEKEEPING_INTERVAL] * 12)
        self.assertEqual(self.refreezes, 3)

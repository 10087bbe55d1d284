"""
The connection pacer on a Clock: the cap, the rate and its adaptation to the
agent's lateness, the queue, and the lateness record the probes consult.
"""

from __future__ import annotations

from twisted.internet.defer import CancelledError
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sentinel.pacing import (
    BEAT,
    BURST,
    CONGESTED_BEATS,
    HAND_ON,
    INITIAL_RATE,
    MIN_RATE,
    ConnectPacer,
)

TIMEOUT = 0.5


def pacer(max_in_flight: int = 200) -> tuple[ConnectPacer, Clock]:
    clock = Clock()
    return ConnectPacer(clock, max_in_flight, TIMEOUT), clock


class GrantTests(SynchronousTestCase):
    """Who may start, when, and in which order."""

    def test_first_attempt_starts_at_once(self) -> None:
        """With a token and a free slot, an attempt starts in the caller's call."""
        p, clock = pacer()
        clock.advance(3.0)
        self.assertTrue(p.has_room())
        self.assertEqual(self.successResultOf(p.acquire()), 3.0)
        self.assertEqual(p.in_flight, 1)
        p.release()
        self.assertEqual(p.in_flight, 0)

    def test_cap_queues_in_order(self) -> None:
        """
        Past `max_in_flight`, attempts wait in the order asked; each release
        starts the next one, and nothing is started past the cap.
        """
        p, clock = pacer(max_in_flight=1)
        self.successResultOf(p.acquire())
        clock.advance(1.0)  # Tokens enough for all of them.
        first, second = p.acquire(), p.acquire()
        self.assertNoResult(first)
        self.assertEqual(p.waiting, 2)
        p.release()
        self.assertEqual(self.successResultOf(first), 1.0)
        self.assertNoResult(second)
        p.release()
        self.successResultOf(second)
        self.assertEqual((p.in_flight, p.waiting), (1, 0))

    def test_cancel_leaves_the_queue(self) -> None:
        """A cancelled wait fails with CancelledError and holds no place."""
        p, _ = pacer(max_in_flight=1)
        self.successResultOf(p.acquire())
        waiting = p.acquire()
        waiting.cancel()
        self.failureResultOf(waiting, CancelledError)
        self.assertEqual(p.waiting, 0)
        p.release()
        self.assertEqual(p.in_flight, 0)

    def test_unused_start_goes_down_the_line(self) -> None:
        """
        A start granted from the queue and not used gives its slot and its
        token back to the grant under way: the next in line starts in the
        same call.
        """
        p, clock = pacer()
        self.successResultOf(p.acquire())  # The only token.
        waiters = [p.acquire() for _ in range(3)]
        clock.advance(0.01)  # Two more: 200 a second.
        waiters[0].addCallback(lambda _: p.unused())
        p.release()
        for waiter in waiters:
            self.successResultOf(waiter)
        self.assertEqual((p.in_flight, p.waiting), (2, 0))
        self.assertEqual(p.stats()["connects_started"], 3)

    def test_unused_handed_on_a_beat_at_a_time(self) -> None:
        """
        Starts given up are handed on `HAND_ON` at a time: the rest of the
        line, and those behind it, at the next heartbeat.
        """
        p, clock = pacer(max_in_flight=1)
        p.rate = 20 * HAND_ON / BURST  # Tokens enough for all of them.
        clock.advance(1.0)
        self.successResultOf(p.acquire())
        given_up = [p.acquire() for _ in range(HAND_ON + 10)]
        for waiter in given_up:
            waiter.addCallback(lambda _: p.unused())
        last = p.acquire()
        p.release()
        self.assertEqual(p.waiting, 11)
        clock.advance(BEAT)
        self.assertEqual(p.waiting, 0)
        self.successResultOf(last)
        self.assertEqual(p.in_flight, 1)

    def test_rate_bounds_starts(self) -> None:
        """
        However many slots are free, attempts start at the rate: a burst of
        requests at one instant starts a slice's worth, the rest are turned
        away (counted), and the tokens come back with time.
        """
        p, clock = pacer()
        clock.advance(10.0)
        started = sum(1 for _ in range(1000) if p.has_room() and p.acquire())
        self.assertLessEqual(started, INITIAL_RATE * 0.05 + 1)
        self.assertGreater(p.turned_away, 0)
        for _ in range(started):
            p.release()
        clock.advance(0.05)
        self.assertTrue(p.has_room())

    def test_queued_wait_started_by_the_heartbeat(self) -> None:
        """With no token, a queued attempt starts at a later heartbeat."""
        p, clock = pacer()
        for _ in range(20):
            if p.has_room():
                p.acquire()
        waiting = p.acquire()
        self.assertNoResult(waiting)
        clock.pump([BEAT] * 5)
        self.successResultOf(waiting)


class AdaptTests(SynchronousTestCase):
    """The rate follows the agent's lateness."""

    def demand(self, p: ConnectPacer) -> None:
        while p.has_room():
            p.acquire()
            p.release()

    def test_slow_start_with_demand(self) -> None:
        """On time and with checks turned away, the rate grows fast."""
        p, clock = pacer()
        for _ in range(10):
            self.demand(p)
            clock.advance(BEAT)
        self.assertGreater(p.rate, 2 * INITIAL_RATE)
        self.assertTrue(p.slow_start)

    def test_no_growth_without_demand(self) -> None:
        """An idle pacer's rate stays where it was, and its heartbeat stops."""
        p, clock = pacer()
        self.successResultOf(p.acquire())
        p.release()
        clock.pump([BEAT] * 100)
        self.assertEqual(p.rate, INITIAL_RATE)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_one_late_beat_does_not_cut(self) -> None:
        """A single long turn (a collection, say) leaves the rate alone."""
        p, clock = pacer()
        self.demand(p)
        clock.advance(BEAT + 0.3)
        self.assertEqual(p.cuts, 0)
        self.assertGreater(p.lateness_since(0.0), 0.25)

    def test_sustained_lateness_halves_the_rate(self) -> None:
        """
        Late at every beat for CONGESTED_BEATS beats, the rate is halved
        (once per hold, not once per beat), slow start ends, and it never
        goes below MIN_RATE.
        """
        p, clock = pacer()
        for _ in range(CONGESTED_BEATS):
            self.demand(p)
            clock.advance(BEAT + p.lag_target + 0.01)
        self.assertEqual(p.cuts, 1)
        self.assertEqual(p.rate, INITIAL_RATE / 2)
        self.assertFalse(p.slow_start)
        for _ in range(200):
            self.demand(p)
            clock.advance(BEAT + p.lag_target + 0.01)
        self.assertEqual(p.rate, MIN_RATE)


class LatenessTests(SynchronousTestCase):
    """What the probes ask: how late the agent ran since a given time."""

    def test_on_time_is_zero(self) -> None:
        """Beats on time add nothing; with nothing connecting, nothing is known."""
        p, clock = pacer()
        self.assertEqual(p.lateness_since(0.0), 0.0)
        self.successResultOf(p.acquire())
        clock.pump([BEAT] * 10)
        self.assertAlmostEqual(p.lateness_since(0.0), 0.0)

    def test_sum_since(self) -> None:
        """Only the lateness after the time asked counts."""
        p, clock = pacer()
        self.successResultOf(p.acquire())
        clock.advance(BEAT + 0.2)  # 0.2 s late, at t=0.22.
        clock.advance(BEAT + 0.1)  # 0.1 s late, at t=0.34.
        self.assertAlmostEqual(p.lateness_since(0.0), 0.3)
        self.assertAlmostEqual(p.lateness_since(0.25), 0.1)
        self.assertEqual(p.lateness_since(1.0), 0.0)

    def test_beat_still_due_counts(self) -> None:
        """
        A beat still due counts as late as it is now: a reactor stuck
        reading a backlog of ready sockets fires no timer, and what it
        judges first after them sees how late it ran, though no beat has
        said so yet; once the beat fires, its lateness counts once.
        """
        p, clock = pacer()
        self.successResultOf(p.acquire())
        clock.advance(BEAT)  # On time, at t=0.02.
        clock.rightNow += BEAT + 0.6  # Past the next beat, unfired.
        self.assertAlmostEqual(p.lateness_since(0.02), 0.6)
        self.assertAlmostEqual(p.lateness_since(0.5), 0.6)
        clock.advance(0)
        self.assertAlmostEqual(p.lateness_since(0.02), 0.6)

    def test_longest_stall_since(self) -> None:
        """
        The longest single beat's lateness after the time asked, not the
        sum: many beats a few ms late each are a busy reactor that still
        serves every connection within a few ms; one beat still due counts
        as late as it is now.
        """
        p, clock = pacer()
        self.successResultOf(p.acquire())
        clock.advance(BEAT + 0.2)  # 0.2 s late, at t=0.22.
        for _ in range(30):
            clock.advance(BEAT + 0.01)  # 0.01 s late each, to t=1.12.
        self.assertGreater(p.lateness_since(0.25), 0.25)
        self.assertAlmostEqual(p.longest_stall_since(0.25), 0.01)
        self.assertAlmostEqual(p.longest_stall_since(0.0), 0.2)
        clock.rightNow += BEAT + 0.15  # Past the next beat, unfired.
        self.assertAlmostEqual(p.longest_stall_since(0.25), 0.15)

    def test_history_bounded(self) -> None:
        """The record keeps HISTORY seconds of beats, however long it runs."""
        p, clock = pacer()
        self.successResultOf(p.acquire())
        clock.pump([BEAT] * 5000)
        self.assertLessEqual(len(p._samples), 10.0 / BEAT + 2)

    def test_stop_cancels_the_heartbeat(self) -> None:
        """Stopped, the pacer leaves no timer behind."""
        p, clock = pacer()
        p.startService()
        self.successResultOf(p.acquire())
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        p.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])
        p.release()
        self.assertEqual(clock.getDelayedCalls(), [])


class CongestionTests(SynchronousTestCase):
    """An agent past its capacity connects no new instance."""

    def test_new_instances_wait_known_ones_do_not(self) -> None:
        """
        While every recent beat was late, a new instance finds no room,
        but an attempt waiting in line (an instance connected before)
        still starts at the rate; once a beat is on time, new ones may
        start again.
        """
        p, clock = pacer(max_in_flight=1)
        self.successResultOf(p.acquire())
        waiting = p.acquire()
        for _ in range(CONGESTED_BEATS):
            clock.advance(BEAT + p.lag_target + 0.01)
        self.assertFalse(p.has_room())
        p.release()
        self.successResultOf(waiting)
        p.release()
        self.assertFalse(p.has_room())
        clock.advance(BEAT)
        self.assertTrue(p.has_room())

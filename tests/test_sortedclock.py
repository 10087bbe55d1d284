"""
`tests.fakes.SortedClock`, the Clock of the group tests' fleets: it runs
the same calls in the same order as Twisted's Clock.
"""

from __future__ import annotations

import random

from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tests.fakes import SortedClock


def schedule(clock: Clock, seed: int) -> list[int]:
    """
    Calls scheduled at few distinct times (so many fall at the same time),
    some scheduling more as they run, some reset, delayed or cancelled, the
    clock advanced in uneven steps; the order in which the calls ran.
    """
    draw = random.Random(seed)
    ran: list[int] = []
    pending: list[IDelayedCall] = []

    def call(n: int) -> None:
        ran.append(n)
        if draw.random() < 0.3:
            pending.append(clock.callLater(draw.choice([0, 0.5, 1]), call, n + 1000))

    for n in range(300):
        pending.append(clock.callLater(draw.choice([0, 0.5, 1, 2, 3]), call, n))
        if draw.random() < 0.2:
            live = [c for c in pending if c.active()]
            if live:
                chosen = draw.choice(live)
                action = draw.choice(["reset", "delay", "cancel"])
                if action == "reset":
                    chosen.reset(draw.choice([0, 0.5, 2]))
                elif action == "delay":
                    chosen.delay(draw.choice([0.5, 1]))
                else:
                    chosen.cancel()
        if n % 25 == 0:
            clock.advance(draw.choice([0, 0.5, 1]))
    for _ in range(20):
        clock.advance(0.5)
    return ran


class SortedClockTests(SynchronousTestCase):
    """The order Clock runs calls in, kept without sorting them all."""

    def test_same_order_as_clock(self) -> None:
        """
        Over many schedules with calls at equal times, calls scheduled
        while others run, and calls reset, delayed and cancelled, a
        SortedClock runs exactly the calls Clock runs, in Clock's order.
        """
        for seed in range(20):
            expected = schedule(Clock(), seed)
            self.assertEqual(schedule(SortedClock(), seed), expected, seed)
            self.assertGreater(len(expected), 300)

    def test_pending_calls_in_order(self) -> None:
        """Its pending calls are listed by time, as Clock lists them."""
        clock, plain = SortedClock(), Clock()
        for c in (clock, plain):
            for delay in (3, 1, 2, 1, 0):
                c.callLater(delay, lambda: None)
            c.getDelayedCalls()[-1].reset(0.5)
            c.callLater(1, lambda: None)
        self.assertEqual(
            [c.getTime() for c in clock.getDelayedCalls()],
            [c.getTime() for c in plain.getDelayedCalls()],
        )

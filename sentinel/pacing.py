"""
Connection attempts paced to the agent's own CPU, and a record of how late
the agent ran while they were in flight.

A cap on attempts in flight does not bound their cost: on a LAN a connect
completes in the next reactor turn, so 200 slots can turn over thousands of
times a second, and at start-up thousands of instances connect at once. The
agent then runs late on its own CPU, connects and first PINGs miss their
deadlines, the timed-out connections are dropped and opened again: a
livelock (DESIGN.md section 4; measured at 10,000 instances: not all up
after 120 s, 44,600 failed checks). So attempts start at a rate as well as
within a cap, and the rate follows the agent's own lateness (AIMD, as TCP
finds a link's capacity):

- While attempts are queued or in flight, or checks were turned away in
  the last `DEMAND_SECONDS`, a heartbeat runs every `BEAT` seconds and
  measures how late it fires: the reactor's lateness, which is what
  connecting costs the checks of every instance. In steady state it does
  not run.
- Late at every beat for `CONGESTED_BEATS` beats by more than the rate's
  target (`LAG_TARGET` of the check timeout), the agent is short of CPU:
  the rate is halved (at most once per `DECREASE_HOLD`), and no attempt
  starts until a beat is on time again: an agent past its capacity (its
  checks alone taking the CPU it gets) connects no more instances, which
  stay unknown rather than overload it into failing the checks of those it
  has. One late beat is not enough: a single long turn (a collection, a
  large HTTP answer) or the machine's scheduler giving the core to another
  process would otherwise keep the rate at its floor. On time with attempts waiting, the
  rate doubles every `SLOW_START` seconds until the first halving, then
  grows by `RATE_STEP` a second.
- An attempt with a token and a free slot starts at once, in the caller's
  call: a single reconnect in steady state waits for nothing. A check asks
  `has_room` before it starts one: when there is none, the instance is not
  looked at this time and nothing is queued or allocated for it (19,000
  queued attempts cost about 60,000 Deferreds, whose making, with the
  collections it set off, stalled the first round for 2 s). The instances
  still to connect are the queue: each round's checks take the tokens of
  that round, and those connected no longer ask. Only an attempt that had
  to resolve a name first, and found no room once it had, waits in line.

The lateness is also kept as a running sum (`lateness_since`): a probe asks
it how late the agent ran while its check waited for a connection, and a
check the agent itself could not serve in time is inconclusive, not a
failure of Redis (`sentinel.probe`). So is an attempt that found no socket
(out of file descriptors), which the probes tell the pacer's `sockets`
(`sentinel.sockets`). A single request on a connection made (a PING and its
reply) is judged by the longest stall instead (`longest_stall_since`): one
write waits for one turn at most, and the deadline reads what came in
first, so the sum of a busy reactor's few ms a beat, which a view change's
connects keep measured for seconds, says nothing of it.

An address whose attempts time out (a stopped server's full backlog) gets
one attempt at a time, the other instances on it starting none (`stalls`,
`sentinel.stalls`): it would otherwise take every place. Attempts in line
since before it stalled give their place up when their turn comes
(`unused`).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from sentinel.answers import Answers
from sentinel.descriptors import SpareDescriptors
from sentinel.handshakes import Handshakes
from sentinel.sockets import SocketShortage
from sentinel.stalls import StalledAddresses

# Seconds between heartbeats while there is connecting to do.
BEAT = 0.02
# The heartbeat may be this late, as a fraction of the check timeout, at
# every one of CONGESTED_BEATS beats in a row before the rate is cut: a
# connect and its first PING and INFO take a few turns, each this long.
LAG_TARGET = 0.2
CONGESTED_BEATS = 5
# Connects per second: where the rate starts, and its bounds.
INITIAL_RATE = 200.0
MIN_RATE = 100.0
MAX_RATE = 20_000.0
# Until the first cut, the rate doubles this often; after it, it grows by
# RATE_STEP connects per second, each second.
SLOW_START = 0.1
RATE_STEP = 500.0
# One stall cuts the rate once: lateness keeps showing for a few beats.
DECREASE_HOLD = 0.2
# Seconds of lateness history kept for `lateness_since`.
HISTORY = 10.0
# Tokens saved up at most, in seconds of the rate: what a slice's launch,
# 50 ms after the one before, may start at once.
BURST = 0.05
# The heartbeat goes on this long after a check was turned away.
DEMAND_SECONDS = 1.0
# Starts given up (`unused`) handed on to the next in line, at most, from
# one heartbeat to the next: thousands in line for a stalled address would
# otherwise go in one long turn of the reactor (80-150 ms measured for
# 2,800 under load), and at the rate they would take seconds.
HAND_ON = 200


class ConnectPacer(Service):
    """
    Grants connection attempts: at most `max_in_flight` at once, started at
    a rate that follows the agent's lateness (module docstring), in the
    order asked. Stopping it stops the heartbeat; the attempts queued belong
    to their probes, which cancel them when they close.
    """

    def __init__(
        self,
        clock: IReactorTime,
        max_in_flight: int,
        timeout: float,
        descriptors: SpareDescriptors | None = None,
    ):
        """
        @param timeout: the check timeout; the lateness tolerated is a
            fraction of it.
        @param descriptors: whether a renewal may take a second descriptor
            (none refused unless given).
        """
        self._clock = clock
        self.max_in_flight = max_in_flight
        self.retime(timeout)
        self.rate = INITIAL_RATE
        self.slow_start = True
        self.in_flight = 0
        self._waiting: deque[Deferred[float]] = deque()
        self._tokens = 1.0
        self._refilled_at = clock.seconds()
        self._cut_at = -DECREASE_HOLD
        self._demand_at = -DEMAND_SECONDS
        self._beat: IDelayedCall | None = None
        self._stopped = False
        self._beat_due = 0.0
        self._handed_on = 0
        # The running sum of heartbeat lateness, sampled at each beat.
        self.lateness = 0.0
        self._samples: deque[tuple[float, float]] = deque()
        self._recent: deque[float] = deque(maxlen=CONGESTED_BEATS)
        # The sum as of the newest sample dropped from the history.
        self._forgotten = 0.0
        # For /debug/stats.
        self.granted = 0
        self.turned_away = 0
        self.max_waiting = 0
        self.cuts = 0
        self.max_lateness = 0.0
        # The attempts that found no socket, the addresses whose attempts
        # time out, when each address last completed a handshake, and the
        # newest PING each answered, shared by every probe.
        self.sockets = SocketShortage(clock)
        self.stalls = StalledAddresses()
        self.handshakes = Handshakes(clock)
        self.answers = Answers(clock)
        self.descriptors = descriptors or SpareDescriptors(clock)

    def retime(self, timeout: float) -> None:
        """Take the check timeout `timeout` (at start, and from a reload)."""
        self.lag_target = LAG_TARGET * timeout

    @property
    def waiting(self) -> int:
        """Attempts queued for a start."""
        return len(self._waiting)

    def has_room(self) -> bool:
        """
        Whether an attempt asked for now would start at once; if not, the
        caller is expected not to ask (and is counted as turned away).
        """
        self._refill()
        if not self._waiting and self._may_start():
            return True
        self.turned_away += 1
        self._demand_at = self._clock.seconds()
        self._keep_beating()
        return False

    def acquire(self) -> Deferred[float]:
        """
        A Deferred that fires with the time the attempt may start (at once
        if it may start now). Cancelling it gives up the place in the queue;
        once fired, `release` must follow when the attempt ends.
        """
        self._refill()
        if not self._waiting and self._may_start():
            return self._grant_now()
        waiter: Deferred[float] = Deferred(self._waiting.remove)
        self._waiting.append(waiter)
        self.max_waiting = max(self.max_waiting, len(self._waiting))
        self._keep_beating()
        return waiter

    def release(self) -> None:
        """An attempt granted earlier has ended (whatever its outcome)."""
        self.in_flight -= 1
        self._grant_waiting()

    def unused(self) -> None:
        """
        A start granted from the queue was not used (its attempt was given
        up first): its slot and token go to the next in line. Unlike
        `release`, it grants nothing itself: the grant that led here goes
        on down the queue, `HAND_ON` of them at most until the next
        heartbeat.
        """
        self.in_flight -= 1
        self.granted -= 1
        self._tokens += 1.0
        self._handed_on += 1

    def lateness_since(self, since: float) -> float:
        """
        Seconds the heartbeat ran late, summed, from `since` to now: how
        much of that time the agent itself was too busy to serve its
        connections (0 while nothing was being connected). A beat still
        due counts as late as it is now: a reactor that spends seconds
        reading a backlog of ready sockets fires no timer meanwhile, and
        what it judges first after them may come before the beat.
        """
        overdue = 0.0
        if self._beat is not None:
            overdue = max(0.0, self._clock.seconds() - self._beat_due)
        samples = self._samples
        index = bisect_right(samples, (since, math.inf))
        if index == len(samples):
            return overdue
        before = samples[index - 1][1] if index else self._forgotten
        return self.lateness - before + overdue

    def longest_stall_since(self, since: float) -> float:
        """
        The longest the heartbeat ran late at once from `since` to now: the
        longest single turn in which the agent served none of its
        connections (0 while nothing was being connected). One write sent
        at `since` went out after that turn at the latest, and a reply in
        by the deadline is read before the deadline is judged
        (`sentinel.deadlines`): what the agent's own lateness took from one
        request and its reply is this, not the sum (`lateness_since`), which
        counts every beat's few ms of a busy but responsive reactor. A beat
        sees a stall to within `BEAT`; one still due counts as late as it is
        now, as in `lateness_since`.
        """
        longest = 0.0
        if self._beat is not None:
            longest = max(0.0, self._clock.seconds() - self._beat_due)
        samples = self._samples
        index = bisect_right(samples, (since, math.inf))
        before = samples[index - 1][1] if index else self._forgotten
        for at_index in range(index, len(samples)):
            total = samples[at_index][1]
            longest = max(longest, total - before)
            before = total
        return longest

    def stopService(self) -> None:
        super().stopService()
        self._stopped = True
        if self._beat is not None and self._beat.active():
            self._beat.cancel()
        self._beat = None

    def stats(self) -> dict[str, Any]:
        """For /debug/stats: the queue, the slots, the rate."""
        return {
            "connects_in_flight": self.in_flight,
            "connects_queued": len(self._waiting),
            "connects_queued_max": self.max_waiting,
            "connects_started": self.granted,
            "checks_turned_away": self.turned_away,
            "connect_rate_per_second": round(self.rate, 1),
            "slow_start": self.slow_start,
            "rate_cuts": self.cuts,
            "max_lateness_seconds": round(self.max_lateness, 4),
            "renewals_without_descriptor": self.descriptors.refused,
            **self.stalls.stats(),
        }

    # Granting

    def _may_start(self, queued: bool = False) -> bool:
        # Congestion stops new instances only: one that waits in line was
        # connected before, and its status must not go unchecked for long.
        return (
            self.in_flight < self.max_in_flight
            and self._tokens >= 1.0
            and (queued or not self._congested())
        )

    def _congested(self) -> bool:
        recent = self._recent
        return len(recent) == CONGESTED_BEATS and min(recent) > self.lag_target

    def _grant_now(self) -> Deferred[float]:
        d: Deferred[float] = Deferred()
        self._take()
        d.callback(self._clock.seconds())
        self._keep_beating()
        return d

    def _take(self) -> None:
        self._tokens -= 1.0
        self.in_flight += 1
        self.granted += 1

    def _grant_waiting(self) -> None:
        self._refill()
        now = self._clock.seconds()
        while (
            self._waiting and self._may_start(queued=True) and self._handed_on < HAND_ON
        ):
            waiter = self._waiting.popleft()
            self._take()
            waiter.callback(now)

    def _refill(self) -> None:
        # A beat's worth of tokens at most: a quiet spell does not bank a
        # burst of thousands.
        now = self._clock.seconds()
        burst = max(1.0, self.rate * BURST)
        elapsed = max(0.0, now - self._refilled_at)
        self._tokens = min(burst, self._tokens + elapsed * self.rate)
        self._refilled_at = now

    # The heartbeat

    def _keep_beating(self) -> None:
        if self._beat is None and not self._stopped:
            self._beat_due = self._clock.seconds() + BEAT
            self._beat = self._clock.callLater(BEAT, self._heartbeat)

    def _heartbeat(self) -> None:
        self._beat = None
        now = self._clock.seconds()
        late = max(0.0, now - self._beat_due)
        self.lateness += late
        self.max_lateness = max(self.max_lateness, late)
        self._record(now)
        self._adapt(now, late)
        self._handed_on = 0
        self._grant_waiting()
        if self._waiting or self.in_flight or self._demanded(now):
            self._keep_beating()
        else:
            self._recent.clear()  # Idle: the next beats start afresh.

    def _demanded(self, now: float) -> bool:
        return now - self._demand_at < DEMAND_SECONDS

    def _record(self, now: float) -> None:
        samples = self._samples
        samples.append((now, self.lateness))
        while samples[0][0] < now - HISTORY:
            self._forgotten = samples.popleft()[1]

    def _adapt(self, now: float, late: float) -> None:
        recent = self._recent
        recent.append(late)
        if late > self.lag_target:
            if self._congested() and now - self._cut_at >= DECREASE_HOLD:
                self.rate = max(MIN_RATE, self.rate / 2)
                self.slow_start = False
                self._cut_at = now
                self.cuts += 1
            return
        if not self._waiting and not self._demanded(now):
            return  # No demand: the rate says nothing about capacity.
        step = now - self._beat_due + BEAT
        if self.slow_start:
            self.rate = min(MAX_RATE, self.rate * 2 ** (step / SLOW_START))
        else:
            self.rate = min(MAX_RATE, self.rate + RATE_STEP * step)

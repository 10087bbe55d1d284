"""
How long the operating system kept the reactor thread waiting for a CPU.

The agent's other measures of its own lateness are the reactor's: how late
its timers fire (`sentinel.pacing`, `sentinel.deadlines`). They see one
long turn, but not a process the machine's scheduler gives a small share
of a core: pinned with six busy loops, an agent gets a seventh of it, in
slices of a few ms, each turn on time give or take a slice, and a check's
half second holds 70 ms of its CPU. A first check then decides on that
(DESIGN.md section 5: no rise/fall on a first check), and a timeout there
published a healthy instance down on the agent's own CPU (sections 2.6
and 8).

Linux counts, per thread, the time it was runnable but waiting on a run
queue (``/proc/thread-self/schedstat``, its second field, in ns; kept
by the kernel's ``sched_info``, always on in the distributions' kernels).
Read on the reactor thread, the growth of that count over a check's time
is exactly the CPU the machine owed the agent and did not give it,
whatever the turns looked like. `RunQueueWait` samples it at each slice's
launch (20 a second: one ``pread`` of an open descriptor, about 30 µs
on a loaded machine) and keeps `HISTORY` seconds of samples, and
`waited_since` says how long the thread waited from a time to now. Where
the count cannot be read (another system, no ``/proc``), it is 0: the
rule that uses it decides as before.

The rule (`sentinel.monitor`): a check that would decide a status
directly (a first check, or the first after a stale history) and fails
by a timeout, while the thread waited for a CPU more than `STARVED_SHARE`
of the check timeout over the check's time (and at least the timeout
before its end), says nothing: the instance stays unknown, is checked
again at its next turn, and ``/instances`` (``unjudged_reason``) and
``/healthz`` (past the unjudged bound, `sentinel.freshness`) say why. A
refused connection or an error reply decides at once as ever, and so
does a timeout while the agent got its CPU; checks after the first go
through rise/fall, which one starved check does not move. The share is
the one the reactor's own lateness is allowed (`sentinel.probe`'s
``LATE_SHARE``).

Fewer than `fall` such timeouts in a row are put off, though: the
`fall`-th with no check recorded between (no answer, no other failure)
decides, starved or not, as `fall` starved timeouts of a decided
instance do. Put off without a bound, a frozen server's instances on a
starved agent were never decided: a history gone stale (its checks held
back behind the stalled address, `sentinel.stalls`) kept saying up, and
so did a verdict taken over in a group, while every check of them timed
out on a short CPU; at 1,000 instances, 13 busy loops beside the agent,
100 frozen names were published down up to 13.9 s after the freeze with
``/healthz`` 200 meanwhile (BENCHMARKS.rst, a frozen server on a starved
agent). A healthy server answers one of `fall` checks an interval apart
unless the agent is too starved to read a reply for that long, the same
bound rise/fall already keeps. While a status is published up and its
timeouts are put off, ``/healthz`` says so (`sentinel.freshness`).
"""

from __future__ import annotations

import os
from bisect import bisect_right
from collections import deque
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime

# Seconds of samples kept: longer than any check (a timeout is at most an
# interval, and a connect's own bound is a few seconds).
HISTORY = 10.0

# The share of the check timeout the thread may wait for a CPU over a
# check's time before a timeout of that check says nothing of Redis.
STARVED_SHARE = 0.25

SCHEDSTAT = "/proc/thread-self/schedstat"


class _SchedStat:
    """Reads the calling thread's run-queue wait, in seconds (None if it cannot)."""

    def __init__(self, path: str = SCHEDSTAT) -> None:
        self._path = path
        self._fd: int | None = None
        self._absent = False

    def __call__(self) -> float | None:
        if self._absent:
            return None
        if self._fd is None:
            try:
                # Opened by the first caller, the reactor thread: the file
                # is that thread's for as long as it stays open.
                self._fd = os.open(self._path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                self._absent = True
                return None
            except OSError:
                return None  # Out of descriptors: the next sample tries again.
        try:
            fields = os.pread(self._fd, 128, 0).split()
            return int(fields[1]) / 1e9
        except (OSError, IndexError, ValueError):
            return None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class RunQueueWait:
    """The reactor thread's wait for a CPU, sampled (module docstring)."""

    def __init__(
        self,
        clock: IReactorTime,
        read: Callable[[], float | None] | None = None,
    ) -> None:
        """
        @param read: the thread's run-queue wait so far in seconds, or None
            if it cannot be read now (the calling thread's schedstat if not
            given; called on the reactor thread only).
        """
        self._clock = clock
        self._schedstat: _SchedStat | None = None
        if read is None:
            read = self._schedstat = _SchedStat()
        self._read = read
        self._samples: deque[tuple[float, float]] = deque()

    def sample(self) -> None:
        """Note the wait so far, now (at each slice's launch)."""
        waited = self._read()
        if waited is None:
            return
        now = self._clock.seconds()
        samples = self._samples
        samples.append((now, waited))
        while samples[0][0] < now - HISTORY:
            samples.popleft()

    def waited_since(self, since: float) -> float:
        """
        Seconds the reactor thread waited for a CPU from `since` to now: from
        the last sample at or before `since` (the first kept, if none is),
        so a little more rather than less; 0 if it cannot be read.
        """
        samples = self._samples
        waited = self._read()
        if waited is None or not samples:
            return 0.0
        index = bisect_right(samples, (since, float("inf")))
        return max(0.0, waited - samples[max(0, index - 1)][1])

    def starved_since(self, since: float, timeout: float) -> float | None:
        """
        The seconds waited for a CPU from `since` to now, if over
        `STARVED_SHARE` of `timeout` (the agent's CPU was short), else None.
        """
        waited = self.waited_since(since)
        return waited if waited > STARVED_SHARE * timeout else None

    def close(self) -> None:
        """Close the descriptor read, if any (at the stop)."""
        if self._schedstat is not None:
            self._schedstat.close()

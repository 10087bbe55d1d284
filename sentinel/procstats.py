"""
Figures about this process that stay cheap at thousands of connections.

Counting open descriptors by listing ``/proc/self/fd`` (what psutil and
prometheus_client's process collector do) costs about 15 ms at 10,000 of
them, on the reactor thread, at every scrape and every ``/debug/stats``;
since Linux 6.2, the size of that directory is the count, for one
``stat``. (The garbage collector's object count, as costly, is kept by
`sentinel.process`.)

Threads are counted by what they are for (`threads_by_name`): one more
thread of a kind at each ZooKeeper outage is what nerve's users saw of a
client closed with ``close`` rather than ``close!``.

Reading ``/proc`` needs a descriptor, which a process out of them cannot
open: what cannot be read is left out (None in ``/debug/stats``, no
sample in ``/metrics``), never an error of the whole answer, which is
when these figures matter most.

psutil's handle on a process is made for one pid. The agent is made
before twistd forks its daemon (``twistd sentinel`` without ``-n``), so a
handle made then named the parent, which exits: ``/debug/stats``
answered 500 and ``/metrics`` broke off (``NoSuchProcess``) in every
daemon. `own_process` gives the handle of the process asking, made again
after a fork. Made so, it is made at its first use in the process, which
may come when it is out of descriptors (psutil reads ``/proc/PID/stat``
to make it): then there is none (None), and what needs one is left out
as above, while the descriptor count, a ``stat`` on Linux 6.2 and later,
needs none. Raised, it was an error of the whole ``/debug/stats`` and
``/metrics`` answer, and of the check whose renewal asked for the count.
"""

from __future__ import annotations

import math
import os
import re
import resource
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psutil
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

_own: psutil.Process | None = None


def own_process() -> psutil.Process | None:
    """
    psutil's handle on this process, whatever process made it before a
    fork, or None if it cannot be made now (module docstring).
    """
    global _own
    pid = os.getpid()
    if _own is None or _own.pid != pid:
        try:
            _own = psutil.Process(pid)
        except OSError:
            return None
    return _own


def open_fds(process: psutil.Process | None) -> int | None:
    """
    This process's open file descriptors (`process` is this process, or
    None if there is no handle on it), or None if they cannot be counted
    (module docstring).
    """
    try:
        count = os.stat("/proc/self/fd").st_size
    except OSError:
        count = 0
    if count:
        return count
    # Before Linux 6.2 the directory's size is 0: list it.
    if process is None:
        return None
    try:
        return int(process.num_fds())
    except OSError:
        return None


# The numbers Python and Twisted put in a thread's name ("Thread-7
# (_thread_worker)", "PoolThread-twisted.internet.reactor-2").
_THREAD_NUMBER = re.compile(r"-\d+")


def threads_by_name() -> dict[str, int]:
    """
    This process's Python threads, counted by name without the numbers
    that tell threads of one kind apart (kazoo's workers: ``Thread
    (_thread_worker)``); a few dozen at most, cheap to list.
    """
    names = Counter(_THREAD_NUMBER.sub("", t.name) for t in threading.enumerate())
    return dict(sorted(names.items()))


def rss_bytes(process: psutil.Process | None) -> int | None:
    """This process's resident memory, or None if it cannot be read."""
    if process is None:
        return None
    try:
        return int(process.memory_info().rss)
    except OSError:
        return None


class ProcessMetrics:
    """
    The standard ``process_*`` families (as prometheus_client's process
    collector names them), with the cheap descriptor count.
    """

    def __init__(self, process: psutil.Process | None = None) -> None:
        """`process`: one to read instead of this one (tests)."""
        self._process = process

    def collect(self) -> Iterator[Metric]:
        """Read now, on each scrape."""
        process = self._process or own_process()
        if process is not None:  # None: out of descriptors, as below.
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    memory = process.memory_info()
                    started = process.create_time()
            except OSError:
                pass  # Out of descriptors (module docstring): the rest only.
            else:
                yield from self._usage(times, memory, started)
        fds = open_fds(process)
        if fds is not None:
            yield GaugeMetricFamily(
                "process_open_fds", "Number of open file descriptors.", value=fds
            )
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        yield GaugeMetricFamily(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            value=math.inf if limit == resource.RLIM_INFINITY else limit,
        )

    def _usage(self, times: Any, memory: Any, started: float) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            value=times.user + times.system,
        )
        yield GaugeMetricFamily(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            value=memory.rss,
        )
        yield GaugeMetricFamily(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            value=memory.vms,
        )
        yield GaugeMetricFamily(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            value=started,
        )

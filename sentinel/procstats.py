"""
Figures about this process that stay cheap at thousands of connections.

Counting open descriptors by listing ``/proc/self/fd`` (what psutil and
prometheus_client's process collector do) costs about 15 ms at 10,000 of
them, on the reactor thread, at every scrape and every ``/debug/stats``;
since Linux 6.2, the size of that directory is the count, for one
``stat``. (The garbage collector's object count, as costly, is kept by
`sentinel.process`.)
"""

from __future__ import annotations

import math
import os
import resource
from collections.abc import Iterator

import psutil
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)


def open_fds(process: psutil.Process) -> int:
    """This process's open file descriptors (`process` is this process)."""
    try:
        count = os.stat("/proc/self/fd").st_size
    except OSError:
        count = 0
    # Before Linux 6.2 the directory's size is 0: list it.
    return count or int(process.num_fds())


class ProcessMetrics:
    """
    The standard ``process_*`` families (as prometheus_client's process
    collector names them), with the cheap descriptor count.
    """

    def __init__(self, process: psutil.Process | None = None) -> None:
        self._process = process or psutil.Process()

    def collect(self) -> Iterator[Metric]:
        """Read now, on each scrape."""
        process = self._process
        with process.oneshot():
            times = process.cpu_times()
            memory = process.memory_info()
            started = process.create_time()
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
        yield GaugeMetricFamily(
            "process_open_fds",
            "Number of open file descriptors.",
            value=open_fds(process),
        )
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        yield GaugeMetricFamily(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            value=math.inf if limit == resource.RLIM_INFINITY else limit,
        )

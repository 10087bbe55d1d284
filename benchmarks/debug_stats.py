"""
What one ``GET /debug/stats`` costs at 19,000 instances, in this process.

A monitor of N instances on a Clock (fake probes: no Redis, every instance
up after two ticks), this process holding as many open files as an agent
watching them would (one per instance, /dev/null), and the HTTP app on a
real site over an in-memory connection: the wall time of whole requests
(parse, route, read every counter, JSON), min and median of many. Then,
in the same process state, the two walks the answer did before it took the
gc object count from a timer and counted descriptors with one stat:
``len(gc.get_objects())`` and psutil's ``num_fds()``. The instances up
are kept by the monitor as statuses change: no request pays for a count.

    PYTHONPATH=. .venv/bin/python benchmarks/debug_stats.py [--instances 19000]
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import time
from collections.abc import Callable

import psutil
from common import load_average, machine, table

from sentinel.httpd import StatusSite
from sentinel.process import count_gc_objects
from sentinel.web import StatusApp
from tests.fakes import make_monitor
from tests.httptest import Connection, responses


def timed(function: Callable[[], object], repeat: int) -> list[float]:
    """Wall time of each of `repeat` calls."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    """Build the agent's app, hold the files, time the answers."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=19_000)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    print(machine(), f"load average {load_average()}", flush=True)
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    files = [
        os.open(os.devnull, os.O_RDONLY) for _ in range(min(args.instances, soft - 200))
    ]
    monitor, clock, _, _ = make_monitor([f"r{i}" for i in range(args.instances)])
    monitor.startService()
    clock.advance(1.0)
    clock.advance(1.0)
    gc.collect()
    gc.freeze()
    counted = count_gc_objects()
    app = StatusApp(
        monitor=monitor, reactor=clock, agent_id="bench", gc_objects=lambda: counted
    )
    site = StatusSite(app.resource(), clock)

    def request() -> None:
        client = Connection(site)
        client.request("/debug/stats")
        [(code, _, _)] = responses(client.output())
        assert code == 200
        client.lose()

    request()
    answers = timed(request, args.repeat)
    first_after_tick = []
    for _ in range(10):
        clock.advance(1.0)
        first_after_tick += timed(request, 1)
    process = psutil.Process()
    walks = timed(lambda: len(gc.get_objects()) + gc.get_freeze_count(), 20)
    listings = timed(process.num_fds, 20)
    for fd in files:
        os.close(fd)

    def ms(values: list[float]) -> str:
        return (
            f"min {min(values) * 1000:.2f} ms, "
            f"median {statistics.median(values) * 1000:.2f} ms"
        )

    print(
        table(
            [
                ("GET /debug/stats, whole request", ms(answers)),
                ("the same, first after a tick", ms(first_after_tick)),
                ("before: len(gc.get_objects())", ms(walks)),
                ("before: psutil num_fds()", ms(listings)),
                ("objects tracked, open files", f"{counted:,}, {len(files):,}"),
            ],
            f"/debug/stats at {args.instances} instances",
        )
    )
    print(f"load average {load_average()} (the machine is shared)")


if __name__ == "__main__":
    main()

"""
Renders of the HTTP app in this process, for `viewer.py`: a monitor of N
instances on a Clock (fake probes, every instance up, 60 checks of history
each), its app, and a few renders of ``/``, ``/instances`` and ``/metrics``
through StubTreq. Prints, as JSON, the CPU per render (this process's CPU
time, client parsing included) and the longest the reactor was held in one
go, in wall time and in CPU time (which other processes on the machine do
not inflate): the whole render for an app that renders at once; for one
that renders in slices, the longest turn (its slices turned by hand, each
timed) or the synchronous part of the request.

It imports ``sentinel`` and ``tests`` from the path it is given (the code to
measure), not from this checkout: it imports nothing of ``benchmarks``.

    PYTHONPATH=TREE python benchmarks/renders.py INSTANCES RENDERS
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from typing import Any

ROUTES = ("/", "/instances", "/metrics")


class _TimedTurns:
    """A slicer scheduler whose turns run by hand, each one timed."""

    def __init__(self) -> None:
        from twisted.internet.task import Clock

        self.clock = Clock()
        self.longest = 0.0
        self.longest_cpu = 0.0

    def __call__(self, work: Any) -> Any:
        return self.clock.callLater(1, work)

    def run(self) -> bool:
        """One turn, if one is waiting; whether one was."""
        if not self.clock.getDelayedCalls():
            return False
        started, cpu = time.perf_counter(), time.thread_time()
        self.clock.advance(1)
        self.longest = max(self.longest, time.perf_counter() - started)
        self.longest_cpu = max(self.longest_cpu, time.thread_time() - cpu)
        return True


def render_costs(instances: int, renders: int) -> dict[str, Any]:
    """
    Build the app of the code on our path and time its renders (see the
    module docstring); works with the app before and after slicing.
    """
    from treq.testing import StubTreq

    from sentinel.history import CheckHistory
    from sentinel.metrics import AgentMetrics
    from sentinel.web import StatusApp
    from tests.fakes import make_monitor

    monitor, clock, _, _ = make_monitor([f"r{i:05d}" for i in range(instances)])
    history = CheckHistory()
    monitor.add_listener(history.record)
    monitor.startService()
    for _ in range(60):
        clock.advance(1.0)
    gc.collect()
    gc.freeze()
    turns = _TimedTurns()
    try:
        from sentinel.metrics import LoadedAtStart
        from sentinel.streaming import Slicer

        app = StatusApp(
            monitor=monitor,
            reactor=clock,
            agent_id="bench",
            gc_objects=lambda: 0,
            metrics=AgentMetrics(monitor, LoadedAtStart(0.0)),
            history=history,
            slicer=Slicer(clock, scheduler=turns),
        )
        resource = app.resource()
    except ImportError:
        app = StatusApp(monitor, clock, metrics=AgentMetrics(monitor).registry)
        app.show_on_page(history)
        resource = app.app.resource()
    treq = StubTreq(resource)
    result: dict[str, Any] = {}
    for path in ROUTES:
        cpus, holds, hold_cpus = [], [], []
        for _ in range(renders + 1):
            bodies: list[bytes] = []
            turns.longest = turns.longest_cpu = 0.0
            cpu, started = time.process_time(), time.perf_counter()
            thread = time.thread_time()
            answer = treq.get("http://agent" + path)
            answer.addCallback(lambda response: response.content())
            answer.addCallback(bodies.append)
            treq.flush()
            synchronous = time.perf_counter() - started
            synchronous_cpu = time.thread_time() - thread
            while not bodies and turns.run():
                treq.flush()
            if not bodies:
                raise RuntimeError(f"{path}: no answer")
            cpus.append(time.process_time() - cpu)
            holds.append(max(synchronous, turns.longest))
            hold_cpus.append(max(synchronous_cpu, turns.longest_cpu))
            size = len(bodies[0])
        # The first render pays for imports and caches.
        result[path] = {
            "cpu": statistics.median(cpus[1:]),
            "hold": max(holds[1:]),
            "hold_cpu": max(hold_cpus[1:]),
            "bytes": size,
        }
    return result


def main() -> None:
    """The command line: two counts, the JSON figures on standard output."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("instances", type=int, help="instances in the monitor")
    parser.add_argument("renders", type=int, help="renders of each route")
    options = parser.parse_args()
    print(json.dumps(render_costs(options.instances, options.renders)))


if __name__ == "__main__":
    main()

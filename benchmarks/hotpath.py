"""
What the monitor's own code costs per check: the hot path of `tick` and of
the answer (`_observed`, the health, the hand-off), with nothing else.

In process, on a `Clock`, with probes whose check is a bare pending
Deferred (what the real probe returns) that the script fires itself: no
sockets, no Redis, no reactor. N instances, one slice per interval; each
round ticks once, answers every check, then lets the deadline sweep run.
It prints the CPU time (process time, so a shared machine's other load
counts less than in wall time) per check of the launch (`tick`) and of the
answer, best and median over the repeats, with gc frozen as the agent has
it after start-up.

    PYTHONPATH=. .venv/bin/python benchmarks/hotpath.py [--instances 3000]

To compare two checkouts, run it with each one as PYTHONPATH, in turns, in
the same session (it also runs on checkouts whose `Settings` still took an
agent id).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Any

import attr
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from sentinel.config import RedisInstance
from sentinel.monitor import Monitor, NullPublisher, Settings
from sentinel.tracker import PendingTracker

try:
    from sentinel.observation import Observation
except ImportError:  # Before Observation had a module of its own.
    from sentinel.probe import Observation  # type: ignore[no-redef]

ANSWER = Observation(ok=True, ready=True, latency_ms=0.3)


class AnsweringProbe:
    """A check is a pending Deferred, answered when the script says so."""

    __slots__ = ("stage", "pending")

    def __init__(self, instance: RedisInstance) -> None:
        self.stage = "ping"
        self.pending: Deferred[Any] | None = None

    def check(self, want_info: bool) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending = d
        return d

    def answer(self) -> None:
        d, self.pending = self.pending, None
        if d is not None:
            d.callback(ANSWER)

    def close(self) -> None:
        pass


def make_monitor(instances: int) -> tuple[Monitor, Clock, list[AnsweringProbe]]:
    clock = Clock()
    probes: list[AnsweringProbe] = []

    def factory(instance: RedisInstance) -> AnsweringProbe:
        probes.append(AnsweringProbe(instance))
        return probes[-1]

    values: dict[str, Any] = dict(
        interval=1.0, timeout=0.5, rise=2, fall=3, info_every=10, slices=1
    )
    if "agent_id" in attr.fields_dict(Settings):
        values["agent_id"] = "bench"
    settings = Settings(**values)
    monitor = Monitor(clock, settings, factory, NullPublisher(), PendingTracker())
    for i in range(instances):
        monitor.add_instance(RedisInstance(f"r{i}", "127.0.0.1", 7000 + i))
    return monitor, clock, probes


def run(instances: int, rounds: int) -> tuple[float, float]:
    """CPU seconds per check of the launches and of the answers."""
    monitor, clock, probes = make_monitor(instances)
    monitor.startService()  # The first round: connects and first transitions.
    for probe in probes:
        probe.answer()
    clock.advance(1.0)
    for probe in probes:
        probe.answer()
    gc.collect()
    gc.freeze()
    launch = answer = 0.0
    for _ in range(rounds):
        clock.advance(0.5)  # The previous round's deadline sweep.
        started = time.process_time()
        clock.advance(0.5)  # The tick: one launch per instance.
        launched = time.process_time()
        for probe in probes:
            probe.answer()
        answered = time.process_time()
        launch += launched - started
        answer += answered - launched
    monitor.stopService()
    gc.unfreeze()
    checks = instances * rounds
    assert monitor.checks >= checks, (monitor.checks, checks)
    return launch / checks, answer / checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    launches, answers = [], []
    for _ in range(args.repeats):
        launch, answer = run(args.instances, args.rounds)
        launches.append(launch * 1e6)
        answers.append(answer * 1e6)
    for label, samples in (("tick", launches), ("answer", answers)):
        print(
            f"{label:6}  best {min(samples):6.2f} us/check  "
            f"median {statistics.median(samples):6.2f} us/check"
        )
    total = [a + b for a, b in zip(launches, answers, strict=True)]
    print(
        f"both    best {min(total):6.2f} us/check  "
        f"median {statistics.median(total):6.2f} us/check"
    )


if __name__ == "__main__":
    main()

"""
What `ZooKeeperPublisher.publish` costs on its fast path: an instance up
and still up, its node written, no refresh due: nothing to write.

In process, on a `Clock`, against the in-memory ZooKeeper of the tests
(`tests.fakezk`): N instances are checked up and their nodes written, then
`publish(state, None)` is called for each, round after round, as the
monitor calls it after every check. Three shapes: the publisher alone
(section 5), in a group of one with ``replicas = 1`` (what an agent with
ZooKeeper runs), and as the primary of a group with ``replicas = 2``
(where each call also weighs the verdict). It prints the CPU time per call
(process time, so a shared machine's other load counts less than in wall
time), best and median over the repeats, with gc frozen as the agent has it
after start-up.

    PYTHONPATH=. .venv/bin/python benchmarks/publish.py [--instances 3000]

To compare two checkouts, run it with each one as PYTHONPATH, in turns, in
the same session.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Any

from twisted.internet.task import Clock

from sentinel.config import RedisInstance
from sentinel.documents import agent_document
from sentinel.health import InstanceHealth
from sentinel.instance import InstanceState
from sentinel.observation import Observation
from sentinel.publisher import ZooKeeperPublisher
from tests.fakes import FakeProbe
from tests.fakezk import FakeZooKeeper

try:
    from sentinel.catalog import Catalog
except ImportError:  # Before catalogs had a module of their own.
    from sentinel.documents import Catalog  # type: ignore[attr-defined,no-redef]

AGENT = "bench"
OTHER = "other"
UP = Observation(ok=True, ready=True, latency_ms=0.3)
SHAPES = ("alone", "group-1", "group-2")


def make_publisher(
    shape: str, instances: int
) -> tuple[ZooKeeperPublisher, Clock, list[InstanceState]]:
    """A connected publisher whose instances are up and written."""
    clock = Clock()
    clock.advance(1_700_000_000.0)
    zk = FakeZooKeeper(clock)
    publisher = ZooKeeperPublisher(
        clock,
        zk,
        "/sentinel",
        AGENT,
        30.0,
        10.0,
        lambda: agent_document(AGENT, 0.0, clock.seconds(), 1.0, []),
    )
    states = []
    for i in range(instances):
        instance = RedisInstance(f"r{i}", "127.0.0.1", 7000 + i)
        states.append(
            InstanceState(instance, FakeProbe(instance), InstanceHealth(rise=1, fall=1))
        )
    if shape != "alone":
        replicas = 1 if shape == "group-1" else 2
        names = frozenset(s.name for s in states)
        # The roles returned (or, in checkouts before they had a class of
        # their own, the publisher) take the assignment.
        roles = publisher.join_group(
            Catalog(names, replicas, 1),
            replicas,
            lambda name: False,
            (lambda: None, lambda: None),
        )
        observers = (AGENT,) if replicas == 1 else (AGENT, OTHER)
        for state in states:
            (roles or publisher).assign(state.name, observers, state.instance)
    publisher.startService()
    zk.connect()
    for state in states:
        transition = state.health.observe(UP, clock.seconds())
        publisher.publish(state, transition)
    clock.advance(0.1)
    assert publisher.writes_queued == 0, publisher.writes_queued
    return publisher, clock, states


def run(shape: str, instances: int, rounds: int) -> float:
    """CPU seconds per `publish` call on the fast path."""
    publisher, clock, states = make_publisher(shape, instances)
    publish = publisher.publish
    writes: Any = dict(publisher.writes)
    gc.collect()
    gc.freeze()
    started = time.process_time()
    for _ in range(rounds):
        for state in states:
            publish(state, None)
    spent = time.process_time() - started
    gc.unfreeze()
    assert dict(publisher.writes) == writes, "the fast path wrote something"
    assert publisher.writes_queued == 0
    return spent / (instances * rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shape", choices=SHAPES, action="append")
    args = parser.parse_args()
    for shape in args.shape or SHAPES:
        samples = [
            run(shape, args.instances, args.rounds) * 1e9 for _ in range(args.repeats)
        ]
        print(
            f"{shape:8}  best {min(samples):6.0f} ns/call  "
            f"median {statistics.median(samples):6.0f} ns/call"
        )


if __name__ == "__main__":
    main()

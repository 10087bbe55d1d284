"""
How the check loop's slices hold when instances come across a multiple
of 10 (``sentinel/slices.py``), as a Redis server sees the PINGs.

One redis-server serves every instance (distinct names, one connection
each); ``redis-cli MONITOR`` timestamps every ``PING`` it receives. Two
scenes, each with a real ``twistd -n sentinel`` at a 1 s interval:

- ``reload``: one agent of ``--before`` instances is sent SIGHUP with a
  config of ``--after``, mid-round; of the instances it watched before,
  the largest and smallest gap between two PINGs of one connection over
  ``--window`` s around the reload (a gap over the interval is a check
  late, one far under it a check twice in a round);
- ``group``: ``--agents`` agents share ``--instances`` instances as a
  group (``replicas = 1``, a real ZooKeeper): once it has settled, the
  PINGs a second and the largest burst (PINGs less than 3 ms apart),
  where 20 launches a second of a few each are what the slices are for.

    .venv/bin/python benchmarks/recuts.py [--before 100] [--after 130]
        [--agents 2] [--instances 400] [--window 5] [--settle 20]
        [--checkout LABEL=PATH ...] [--runs 1]
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (  # noqa: E402
    Agent,
    Instance,
    add_checkout_option,
    agent_config,
    load_average,
    machine,
    rows_in_turns,
    start_redis_servers,
    start_zookeeper,
    table,
)

_PING = re.compile(r'([\d.]+) \[\d+ ([\d.:]+)\] "PING"')
# PINGs closer than this belong to one launch.
BURST_GAP = 0.003


def monitor(port: int, workdir: Path) -> tuple[subprocess.Popen[bytes], Path]:
    """
    ``redis-cli MONITOR`` of the redis-server on `port`, into a file of
    `workdir`: into a pipe read at the end, it stopped at the pipe's 64 KiB
    (a 4 s window of 400 instances came back with its first 1.8 s).
    """
    path = workdir / f"monitor-{port}.txt"
    with path.open("wb") as out:
        process = subprocess.Popen(
            ["redis-cli", "-p", str(port), "monitor"], stdout=out
        )
    return process, path


def lines_of(watching: tuple[subprocess.Popen[bytes], Path]) -> list[str]:
    """Stop a `monitor` and return its lines."""
    process, path = watching
    process.terminate()
    process.wait(timeout=10)
    return path.read_text(errors="replace").splitlines()


def pings(lines: list[str]) -> dict[str, list[float]]:
    """The times of each connection's PINGs, by its client address."""
    times: dict[str, list[float]] = defaultdict(list)
    for line in lines:
        match = _PING.match(line)
        if match is not None:
            times[match.group(2)].append(float(match.group(1)))
    return times


def reload_scene(
    args: argparse.Namespace, checkout: Path, port: int, workdir: Path
) -> str:
    """One agent sent SIGHUP from ``--before`` to ``--after`` instances."""

    def config(count: int) -> str:
        return agent_config(
            [Instance(f"r{i}", port) for i in range(count)], agent_id="recuts"
        )

    agent = Agent(workdir, config(args.before), label="reload", pythonpath=checkout)
    try:
        agent.wait_ready()
        agent.wait_ticks(3, timeout=30.0)
        watching = monitor(port, workdir)
        try:
            # Mid-round, with a round of PINGs before the reload.
            time.sleep(2.35)
            agent.config_path.write_text(config(args.after))
            reloaded_at = time.time()
            agent.child.process.send_signal(signal.SIGHUP)
            time.sleep(args.window)
        finally:
            lines = lines_of(watching)
        kept = [
            times for times in pings(lines).values() if times[0] < reloaded_at - 1.0
        ]
        gaps = [b - a for times in kept for a, b in zip(times, times[1:], strict=False)]
        return (
            f"{len(kept)} kept: gap max {max(gaps):.3f} s, min {min(gaps):.3f} s;"
            f" over 1.1 s {sum(g > 1.1 for g in gaps)}, under 0.5 s"
            f" {sum(g < 0.5 for g in gaps)}; load {load_average()}"
        )
    finally:
        agent.stop()


def group_scene(
    args: argparse.Namespace,
    checkout: Path,
    port: int,
    hosts: str,
    workdir: Path,
    number: int,
) -> str:
    """``--agents`` agents sharing ``--instances`` instances, settled."""
    instances = [Instance(f"r{i}", port) for i in range(args.instances)]
    agents = []
    try:
        for a in range(args.agents):
            config = agent_config(
                instances,
                zookeeper=hosts,
                zk_root=f"/recuts-{checkout.name}-{number}",
                agent_id=f"a{a}",
                zk_settings={"replicas": 1},
            )
            agents.append(
                Agent(workdir, config, label=f"group-a{a}", pythonpath=checkout)
            )
        for agent in agents:
            agent.wait_ready()
        time.sleep(args.settle)
        watching = monitor(port, workdir)
        try:
            time.sleep(args.window)
        finally:
            lines = lines_of(watching)
    finally:
        for agent in agents:
            agent.stop()
    times = sorted(t for ts in pings(lines).values() for t in ts)
    bursts, size = [], 1
    for a, b in zip(times, times[1:], strict=False):
        if b - a < BURST_GAP:
            size += 1
        else:
            bursts.append(size)
            size = 1
    bursts.append(size)
    return (
        f"PINGs/s {len(times) / args.window:.0f},"
        f" launches/s {len(bursts) / args.window:.1f},"
        f" largest {max(bursts)}; load {load_average()}"
    )


def run(
    args: argparse.Namespace, label: str, checkout: Path, number: int
) -> list[tuple[str, str]]:
    """Both scenes for one checkout."""
    rows = []
    with ExitStack() as started, tempfile.TemporaryDirectory() as tmp:
        extra = ["--maxclients", str(4 * max(args.after, args.instances))]
        port = start_redis_servers(1, started, extra_args=extra)[0].port
        row = reload_scene(args, checkout, port, Path(tmp))
        rows.append((f"{label} reload {args.before} -> {args.after}", row))
        print(*rows[-1], sep="  ", flush=True)
        zookeeper, client = start_zookeeper(started)
        client.stop()
        row = group_scene(args, checkout, port, zookeeper.hosts, Path(tmp), number)
        rows.append((f"{label} group {args.agents} x {args.instances}", row))
        print(*rows[-1], sep="  ", flush=True)
    return rows


def main() -> int:
    """Run the scenes and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=int, default=100)
    parser.add_argument("--after", type=int, default=130)
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--instances", type=int, default=400)
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--settle", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=1)
    add_checkout_option(parser)
    args = parser.parse_args()
    print(machine(), flush=True)
    rows = rows_in_turns(parser, args, run)
    print(table(rows, "Slices cut again as instances come"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

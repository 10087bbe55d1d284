"""
What a hostile Redis server costs the agent: its RSS over time, and what a
user sees, against each mode of ``tests/hostile.py``.

For each mode, one agent (default settings: 1 s interval, 0.5 s timeout)
watches one hostile instance and one healthy redis-server for ``--duration``
seconds. It prints the agent's RSS when the hostile instance is first
checked, at most over the run and at its end, the healthy instance's checks
and failures, and the hostile instance's ``/instances/<name>`` at the end.
An agent whose RSS passes ``--rss-limit`` is stopped at once, and the time
it took is printed (to measure a version without bounds, run with that
version first on ``PYTHONPATH``, as an absolute path: the agent is started
in a directory of its own, with the environment of this script).

With ``--copies N``, N hostile instances of the mode (each its own
listener), and the agent's CPU over the run and the reactor's lateness
(``/debug/stats``) are printed too.

    .venv/bin/python benchmarks/hostile.py [--duration 30] [--modes flood,...] \\
        [--copies 1]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    Agent,
    Instance,
    RedisServer,
    agent_config,
    load_average,
    machine,
    stop_on_sigterm,
)

from tests.hostile import MODES
from tests.servers import HostileServers

MIB = 2**20


def parse_args() -> argparse.Namespace:
    """The options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--duration", type=float, default=30.0, help="seconds per mode (30)")
    add("--modes", default=",".join(MODES), help="comma-separated (all)")
    add("--rss-limit", type=int, default=2048, help="MiB; stop the agent past it")
    add("--copies", type=int, default=1, help="hostile instances per mode (1)")
    args = parser.parse_args()
    args.modes = args.modes.split(",")
    if not set(args.modes) <= set(MODES):
        parser.error(f"--modes takes {', '.join(MODES)}")
    return args


def run_mode(workdir: Path, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """One agent against one hostile server of `mode` and a healthy one."""
    with ExitStack() as started:
        healthy = RedisServer().start()
        started.callback(healthy.stop)
        hostile = HostileServers([(mode, False)] * args.copies)
        started.callback(hostile.stop)
        names = [mode] + [f"{mode}{i}" for i in range(1, args.copies)]
        config = agent_config(
            [Instance("healthy", healthy.port)]
            + [Instance(n, port) for n, port in zip(names, hostile.ports, strict=True)]
        )
        agent = Agent(workdir, config, label=mode)
        started.callback(agent.stop)
        agent.wait_ready()
        while not agent.get(f"/instances/{mode}")["checks"]:
            time.sleep(0.05)
        row: dict[str, Any] = {"mode": mode, "rss_start": agent.rss_bytes()}
        cpu_start = agent.cpu_seconds()
        row["rss_most"] = row["rss_start"]
        began = time.monotonic()
        while (elapsed := time.monotonic() - began) < args.duration:
            rss = agent.rss_bytes()
            row["rss_most"] = max(row["rss_most"], rss)
            if rss > args.rss_limit * MIB:
                row["stopped_after"] = elapsed
                break
            time.sleep(0.1)
        row["rss_end"] = agent.rss_bytes()
        row["cpu"] = agent.cpu_seconds() - cpu_start
        row["stats"] = agent.get("/debug/stats")
        row["document"] = agent.get(f"/instances/{mode}")
        row["healthy"] = agent.get("/instances/healthy")
        return row


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The figures, one paragraph per mode."""
    lines = [machine(), f"load average at the end: {load_average()}", ""]
    for row in rows:
        stopped = (
            f", stopped at the RSS limit after {row['stopped_after']:.1f} s"
            if "stopped_after" in row
            else ""
        )
        healthy, stats = row["healthy"], row["stats"]
        lines += [
            f"{row['mode']}: RSS {row['rss_start'] / MIB:.1f} MiB at the first"
            f" check, at most {row['rss_most'] / MIB:.1f} MiB, "
            f"{row['rss_end'] / MIB:.1f} MiB after {args.duration:g} s{stopped};"
            f" healthy instance: {healthy['checks']} checks, "
            f"{healthy['failures']} failed",
            f"    {args.copies} hostile: CPU {row['cpu']:.2f} s, tick lag max "
            f"{stats['startup']['tick_lag_max_seconds']} s, lateness max "
            f"{stats['startup']['max_lateness_seconds']} s, tick completion max "
            f"{stats['tick_completion_seconds']['max']:.3f} s, overruns "
            f"{stats['overruns']}",
            "    " + json.dumps(row["document"]),
            "",
        ]
    return "\n".join(lines)


def main() -> int:
    """Run every mode, print the figures, stop everything started."""
    args = parse_args()
    stop_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-hostile-"))
    try:
        rows = [run_mode(workdir, mode, args) for mode in args.modes]
    except BaseException:
        print(f"logs kept in {workdir}", file=sys.stderr)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    print(report(rows, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

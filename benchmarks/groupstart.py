"""
What /healthz says while a group starts and its instance nodes are not
all written yet (docs/groups.rst).

``--agents`` real ``twistd -n sentinel`` agents that all know the same
``--instances`` instances (``--replicas``), on 4 shared redis-servers,
started at once against a real ZooKeeper. Every ``--every`` s until
``--duration`` s: how many instance nodes ZooKeeper has, and each
agent's /healthz. A sample where nodes are missing and every agent says
200 is one where no agent told the truth about it. ``--stopped F``
takes the CPU from the agents as a loaded machine does, without loading
it: each is stopped (SIGSTOP) F of every second, for the first
``--starve-for`` s.

    .venv/bin/python benchmarks/groupstart.py [--agents 3] [--instances 3000]
        [--replicas 2] [--duration 40] [--stopped 0] [--starve-for 30]
        [--checkout LABEL=PATH]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (  # noqa: E402
    Agent,
    Instance,
    add_checkout_option,
    agent_config,
    checkouts_of,
    commit_of,
    load_average,
    machine,
    open_files_for,
    start_redis_servers,
    start_zookeeper,
    stop_on_sigterm,
    table,
)
from perhost import health  # noqa: E402

ROOT = "/sentinel"


def starve(pids: list[int], stopped: float, until: float) -> None:
    """Stop `pids` `stopped` of every second until `until`, then let them go."""
    try:
        while time.monotonic() < until:
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            time.sleep(stopped)
            for pid in pids:
                os.kill(pid, signal.SIGCONT)
            time.sleep(1.0 - stopped)
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass


def run(args: argparse.Namespace, label: str, checkout: Path) -> list[tuple[str, str]]:
    with ExitStack() as started, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        zookeeper, client = start_zookeeper(started)
        servers = start_redis_servers(4, started)
        instances = [
            Instance(f"r{i:05d}", servers[i % len(servers)].port)
            for i in range(args.instances)
        ]
        load_at_start = load_average()
        agents = []
        for a in range(args.agents):
            config = agent_config(
                instances,
                zookeeper=zookeeper.hosts,
                zk_root=ROOT,
                agent_id=f"agent-{a}",
                zk_settings={"replicas": args.replicas},
            )
            agent = Agent(
                workdir,
                config,
                label=f"agent-{a}",
                pythonpath=checkout,
                open_files=open_files_for(args.instances),
            )
            started.callback(agent.stop)
            agents.append(agent)
        t0 = time.monotonic()
        starver = threading.Thread(
            target=starve,
            args=([agent.pid for agent in agents], args.stopped, t0 + args.starve_for),
            daemon=True,
        )
        if args.stopped > 0:
            starver.start()
        samples = missing_samples = lies = 0
        all_written_at: float | None = None
        last_lie = ""
        while time.monotonic() - t0 < args.duration:
            at = time.monotonic() - t0
            stat = client.exists(f"{ROOT}/instances")
            nodes = 0 if stat is None else stat.numChildren
            answers = [health(agent) for agent in agents]
            samples += 1
            if nodes < args.instances:
                missing_samples += 1
                if all('"status": "ok"' in answer for answer in answers):
                    lies += 1
                    last_lie = f"{args.instances - nodes} missing at {at:.1f} s"
                    if args.show:
                        print(f"{at:.1f} s, {nodes} nodes: {answers[0][:400]}")
            elif all_written_at is None:
                all_written_at = at
            time.sleep(args.every)
        if args.stopped > 0:
            starver.join(timeout=10)
        # Nodes a secondary made because their primary had not written
        # them yet (`sentinel.covers`): each costs a create and a takeover.
        covered = [
            agent.get("/debug/stats")["zookeeper"]["group"].get("covered", "--")
            for agent in agents
        ]
        written = "never" if all_written_at is None else f"{all_written_at:.1f} s"
        return [
            (f"{label}: code", commit_of(checkout)),
            (
                f"{label}: load average at start / end",
                f"{load_at_start} / {load_average()}",
            ),
            (f"{label}: every instance node written after", written),
            (
                f"{label}: samples with nodes missing / with every /healthz 200",
                f"{missing_samples} / {lies} of {samples} ({last_lie})",
            ),
            (f"{label}: covers begun, each agent", " / ".join(map(str, covered))),
        ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--instances", type=int, default=3000)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--duration", type=float, default=40.0)
    parser.add_argument("--every", type=float, default=0.25)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--stopped", type=float, default=0.0)
    parser.add_argument("--starve-for", type=float, default=30.0)
    parser.add_argument("--show", action="store_true", help="print each such 200")
    add_checkout_option(parser)
    args = parser.parse_args()
    checkouts = checkouts_of(parser, args.checkout)
    stop_on_sigterm()
    rows: list[tuple[str, str]] = []
    for _ in range(args.rounds):
        for label, checkout in checkouts:
            rows += run(args, label, checkout)
            print(table(rows[-5:], label), flush=True)
    title = (
        f"groupstart: {args.agents} agents, {args.instances:,} instances,"
        f" replicas {args.replicas} ({machine()})"
    )
    print(table(rows, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())

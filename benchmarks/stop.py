"""
How long a clean stop takes at scale (DESIGN.md section 5: within 5 s of
SIGTERM, even with ZooKeeper unreachable).

An agent (``twistd -n sentinel``, no state_dir) watches N instances over a
few real redis-servers, all up, and publishes their nodes to a ZooKeeper of
its own. Once every instance node is there, the agent gets SIGTERM, either
with ZooKeeper up, or after ZooKeeper was killed under it (``gone``: the
agent logs that it is unreachable first). Printed for each case: the time
from SIGTERM until the process ended, its exit status, and, with ZooKeeper
up, the instance nodes left one second after the exit.

    .venv/bin/python benchmarks/stop.py [--instances 10000] [--interval 2]
        [--cases up,gone]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from common import (
    Agent,
    Instance,
    agent_config,
    load_average,
    machine,
    open_files_for,
    start_redis_servers,
    start_zookeeper,
    stop_on_sigterm,
    table,
    wait_until,
)
from kazoo.client import KazooClient

ROOT = "/sentinel"
POLL = 0.02


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--instances", type=int, default=10_000, help="N (10000)")
    add("--servers", type=int, default=4, help="redis-servers (4)")
    add("--interval", type=float, default=2.0, help="agent's, s (2)")
    add("--cases", default="up,gone", help="up, gone, or both (up,gone)")
    add("--publish-limit", type=float, default=180.0, help="s to publish all")
    return parser.parse_args()


def instance_nodes(client: KazooClient) -> int:
    path = f"{ROOT}/instances"
    return len(client.get_children(path)) if client.exists(path) else 0


def stop_case(
    args: argparse.Namespace, ports: list[int], case: str
) -> list[tuple[str, str]]:
    """One agent published, then SIGTERM as `case` says; its rows."""
    with ExitStack() as started:
        zookeeper, client = start_zookeeper(started)
        n = args.instances
        instances = [Instance(f"r{i}", ports[i % len(ports)]) for i in range(n)]
        config = agent_config(
            instances,
            zookeeper=zookeeper.hosts,
            interval=args.interval,
            timeout=args.interval / 2,
        )
        workdir = Path(tempfile.mkdtemp(prefix=f"sentinel-stop-{case}-"))
        started.callback(shutil.rmtree, workdir, ignore_errors=True)
        agent = Agent(workdir, config, open_files=open_files_for(n))
        started.callback(agent.stop)
        agent.wait_ready()
        took = wait_until(
            lambda: instance_nodes(client) >= n, args.publish_limit, "published"
        )
        rows = [(f"{case}: all {n:,} nodes published after", f"{took:.1f} s")]
        if case == "gone":
            client.stop()
            zookeeper.stop()
            wait_until(
                lambda: (
                    "ZooKeeper unreachable" in agent.log.read_text(errors="replace")
                ),
                30.0,
                "the agent to find ZooKeeper gone",
            )
        child = agent.child.process
        child.send_signal(signal.SIGTERM)
        ended = wait_until(lambda: child.poll() is not None, 60.0, "the agent to end")
        status = child.returncode
        rows.append((f"{case}: SIGTERM to exit", f"{ended:.2f} s (status {status})"))
        if case == "up":
            time.sleep(1.0)
            rows.append(
                (f"{case}: instance nodes left 1 s later", str(instance_nodes(client)))
            )
        return rows


def main() -> int:
    args = parse_args()
    stop_on_sigterm()
    rows = [("machine", machine()), ("load average at start", load_average())]
    with ExitStack() as started:
        servers = start_redis_servers(args.servers, started)
        ports = [s.port for s in servers]
        for case in args.cases.split(","):
            rows += stop_case(args, ports, case)
            print(f"{case} done", file=sys.stderr, flush=True)
    rows.append(("load average at the end", load_average()))
    print(table(rows, f"Clean stop (benchmarks/stop.py, {args.instances:,} instances)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

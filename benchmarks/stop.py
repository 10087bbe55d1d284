"""
How long a clean stop takes at scale (DESIGN.md section 5: within 5 s of
SIGTERM, even with ZooKeeper unreachable).

An agent (``twistd -n sentinel``, no state_dir) watches N instances over a
few real redis-servers, all up, and publishes their nodes to a ZooKeeper of
its own. Once every instance node is there, the agent gets SIGTERM, either
with ZooKeeper up, or after ZooKeeper was killed under it (``gone``: the
agent logs that it is unreachable first). Printed for each case: the time
from SIGTERM until the process ended, its exit status, and, with ZooKeeper
up, the instance nodes left one second after the exit. ``--state-dirs
no,yes`` runs each case without and with a ``state_dir`` (its SIGTERM
leaves the session open: the nodes stay for the next process);
``--checkout``/``--runs`` run each version's agent in turns, and
``--keep-logs`` copies each agent's log. ``--crowd N`` starts N busy
loops ``--crowd-for`` s before the signal and pins them and the agent to
one CPU (the agent then gets a 1/(N+1) share of it, as on a machine
loaded by others), until the agent has ended.

    .venv/bin/python benchmarks/stop.py [--instances 10000] [--interval 2]
        [--cases up,gone] [--state-dirs no] [--runs 1]
        [--checkout LABEL=PATH ...] [--keep-logs DIR] [--crowd N]
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
    add_checkout_option,
    agent_config,
    crowd,
    load_average,
    machine,
    open_files_for,
    rows_in_turns,
    start_redis_servers,
    start_zookeeper,
    stop_on_sigterm,
    table,
    wait_until,
)
from kazoo.client import KazooClient

ROOT = "/sentinel"
POLL = 0.02


def parse_args() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--instances", type=int, default=10_000, help="N (10000)")
    add("--servers", type=int, default=4, help="redis-servers (4)")
    add("--interval", type=float, default=2.0, help="agent's, s (2)")
    add("--cases", default="up,gone", help="up, gone, or both (up,gone)")
    add("--publish-limit", type=float, default=180.0, help="s to publish all")
    add("--state-dirs", default="no", help="no, yes, or both (no)")
    add("--runs", type=int, default=1, help="runs of each checkout (1)")
    add("--keep-logs", metavar="DIR", help="copy the agents' logs there")
    add("--crowd", type=int, default=0, help="busy loops beside the agent (0)")
    add("--crowd-for", type=float, default=5.0, help="s crowded before the signal")
    add_checkout_option(parser)
    return parser


def instance_nodes(client: KazooClient) -> int:
    path = f"{ROOT}/instances"
    return len(client.get_children(path)) if client.exists(path) else 0


def stop_case(
    args: argparse.Namespace,
    ports: list[int],
    case: str,
    state_dir: bool,
    version: tuple[str, Path],
    number: int,
) -> list[tuple[str, str]]:
    """One agent of `version` published, then SIGTERM as `case` says; its rows."""
    label, checkout = version
    name = f"{label} #{number + 1}, {case}, {'state_dir' if state_dir else 'none'}"
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
        if state_dir:
            config = f'state_dir = "{workdir / "state"}"\n' + config
        agent = Agent(
            workdir,
            config,
            label=f"{label}-{number}-{case}-{int(state_dir)}",
            pythonpath=checkout,
            open_files=open_files_for(n),
        )
        if args.keep_logs:
            kept = Path(args.keep_logs)
            kept.mkdir(parents=True, exist_ok=True)
            started.callback(shutil.copy, agent.log, kept / agent.log.name)
        started.callback(agent.stop)
        agent.wait_ready()
        took = wait_until(
            lambda: instance_nodes(client) >= n, args.publish_limit, "published"
        )
        rows = [(f"{name}: all {n:,} nodes published after", f"{took:.1f} s")]
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
        if args.crowd:
            crowd(started, agent.pid, args.crowd)
            time.sleep(args.crowd_for)
        load = load_average()
        print(f"{name}: SIGTERM at {time.time():.3f}", file=sys.stderr, flush=True)
        child.send_signal(signal.SIGTERM)
        ended = wait_until(lambda: child.poll() is not None, 60.0, "the agent to end")
        status = child.returncode
        rows.append(
            (
                f"{name}: SIGTERM to exit",
                f"{ended:.2f} s (status {status}), load {load}",
            )
        )
        if case == "up":
            time.sleep(1.0)
            rows.append(
                (f"{name}: instance nodes left 1 s later", str(instance_nodes(client)))
            )
        return rows


def main() -> int:
    parser = parse_args()
    args = parser.parse_args()
    stop_on_sigterm()
    rows = [("machine", machine()), ("load average at start", load_average())]
    with ExitStack() as started:
        servers = start_redis_servers(args.servers, started)
        ports = [s.port for s in servers]

        def run(
            args: argparse.Namespace, label: str, checkout: Path, number: int
        ) -> list[tuple[str, str]]:
            rows = []
            for state_dir in (s == "yes" for s in args.state_dirs.split(",")):
                for case in args.cases.split(","):
                    version = (label, checkout)
                    rows += stop_case(args, ports, case, state_dir, version, number)
                    print(f"{rows[-1]}", file=sys.stderr, flush=True)
            return rows

        rows += rows_in_turns(parser, args, run)
    rows.append(("load average at the end", load_average()))
    print(table(rows, f"Clean stop (benchmarks/stop.py, {args.instances:,} instances)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

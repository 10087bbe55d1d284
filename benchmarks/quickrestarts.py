"""
Quick ``SIGTERM`` restarts in a row, as a reader of ZooKeeper sees them.

An agent (``twistd -n sentinel``, a state_dir) watches N instances over a
few real redis-servers, all up, and publishes their nodes and a serverset
member each. Once all are published, it is restarted ``--restarts`` times
in a row: ``SIGTERM``, wait for the exit, start a new process on the same
config, wait until its HTTP app answers, then ``--delay`` seconds (0: at
once), and again. A reader polls every node every 20 ms, as a proxy that
treats a missing node as gone would (`tests.gaps`). For each run:

- how many instance nodes went missing at some point, and the longest gap;
- how many kept their ``since`` (all were up all along);
- how many processes reattached, and how many sessions were closed as
  unchecked for too long;
- each stop's time, from the signal to the process's exit (p50 and max).

``--checkout before=PATH`` (repeatable) runs another tree's agent, in
turns with the others.

    .venv/bin/python benchmarks/quickrestarts.py [--instances 50] [--delay 0.3]
"""

from __future__ import annotations

import argparse
import json
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
    ZooKeeperServer,
    add_checkout_option,
    agent_config,
    load_average,
    machine,
    percentile,
    rows_in_turns,
    start_redis_servers,
    start_zookeeper,
    table,
    wait_until,
)
from kazoo.client import KazooClient

from tests.gaps import NodeWatch

AGENT_ID = "bench"


def parse_args() -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The options; the defaults are the finder's measurement."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--instances", type=int, default=50, help="instances (50)")
    add("--servers", type=int, default=5, help="redis-servers they share (5)")
    add("--restarts", type=int, default=10, help="restarts in a row (10)")
    add("--delay", type=float, default=0.3, help="s after HTTP answers (0.3)")
    add("--runs", type=int, default=1, help="runs of each checkout (1)")
    add("--session-timeout", type=float, default=10.0, help="seconds (10)")
    add("--keep-logs", action="store_true", help="keep the agents' logs")
    add_checkout_option(parser)
    return parser, parser.parse_args()


def config(
    args: argparse.Namespace, hosts: str, ports: list[int], label: str, state: Path
) -> str:
    """The agent's TOML: a state_dir, members under one service."""
    instances = [
        Instance(f"r{i}", ports[i % len(ports)]) for i in range(args.instances)
    ]
    text = agent_config(
        instances,
        zookeeper=hosts,
        zk_root=f"/quick-{label}",
        agent_id=AGENT_ID,
        zk_settings={
            "session_timeout": args.session_timeout,
            "discovery": "serverset",
            "discovery_root": f"/members-{label}",
        },
        service="cache",
    )
    return f'state_dir = "{state}"\n' + text


def sinces(client: KazooClient, root: str, count: int) -> dict[str, float | None]:
    """Each instance node's ``since`` (None if missing)."""
    found: dict[str, float | None] = {}
    for i in range(count):
        node = f"{root}/instances/r{i}"
        try:
            found[node] = json.loads(client.get(node)[0])["since"]
        except Exception:
            found[node] = None
    return found


def run_once(
    args: argparse.Namespace,
    servers: tuple[ZooKeeperServer, KazooClient, list[int]],
    workdir: Path,
    label: str,
    checkout: Path,
) -> list[tuple[str, str]]:
    """One loop of restarts with `checkout`'s agent; its rows."""
    zookeeper, client, ports = servers
    root = f"/quick-{label}"
    parent = f"/members-{label}/cache"
    text = config(args, zookeeper.hosts, ports, label, workdir / f"state-{label}")
    load_before = load_average()
    stops: list[float] = []
    with ExitStack() as running:
        agent = Agent(workdir, text, f"{label}-0", pythonpath=checkout)
        running.callback(lambda: agent.stop())
        agent.wait_ready()
        nodes = [f"{root}/instances/r{i}" for i in range(args.instances)]
        wait_until(
            lambda: (
                client.exists(parent) is not None
                and len(client.get_children(parent)) >= args.instances
                and all(client.exists(n) for n in nodes)
            ),
            120.0,
            "the first agent's nodes",
        )
        time.sleep(2.0)
        before = sinces(client, root, args.instances)
        watch = NodeWatch(zookeeper.hosts, nodes, {parent: args.instances}).start()
        running.callback(watch.stop)
        for restart in range(1, args.restarts + 1):
            signalled = time.monotonic()
            agent.child.process.send_signal(signal.SIGTERM)
            agent.child.process.wait(10.0)
            stops.append(time.monotonic() - signalled)
            agent = Agent(workdir, text, f"{label}-{restart}", pythonpath=checkout)
            agent.wait_ready()
            time.sleep(args.delay)
        # The last process lives on: nodes gone late count too.
        time.sleep(args.session_timeout * 1.5 + 3.0)
        after = sinces(client, root, args.instances)
        gaps = [watch.longest_gap(n) for n in nodes]
        logs = "".join(
            p.read_text(errors="replace") for p in workdir.glob(f"{label}-*.log")
        )
        agent.child.process.send_signal(signal.SIGUSR2)
        agent.child.process.wait(10.0)
    missing = [g for g in gaps if g > 0]
    kept = sum(1 for n in nodes if before[n] is not None and before[n] == after[n])
    return [
        (f"{label}: load before / after", f"{load_before} / {load_average()}"),
        (
            f"{label}: instance nodes ever missing, longest gap",
            f"{len(missing)} of {args.instances}, {max(gaps):.2f} s",
        ),
        (f"{label}: since kept", f"{kept} of {args.instances}"),
        (
            f"{label}: reattached / sessions closed as unchecked",
            f"{logs.count('reattached to ZooKeeper session')} / "
            f"{logs.count('not reattaching to ZooKeeper session')}",
        ),
        (
            f"{label}: stop time p50 / max",
            f"{percentile(stops, 50):.2f} / {max(stops):.2f} s",
        ),
    ]


def main() -> int:
    """Run the loops in turns, print the table, stop everything started."""
    parser, args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-quickrestarts-"))
    rows = [
        ("machine", machine()),
        (
            "settings",
            f"{args.instances} instances over {args.servers} redis-servers, "
            f"{args.restarts} SIGTERM restarts in a row, each {args.delay:g} s "
            f"after the new process's HTTP app answered, session timeout "
            f"{args.session_timeout:g} s, reader every 20 ms",
        ),
    ]
    try:
        with ExitStack() as started:
            ports = [s.port for s in start_redis_servers(args.servers, started)]
            zookeeper, client = start_zookeeper(started)

            def run(
                args: argparse.Namespace, label: str, path: Path, number: int
            ) -> list[tuple[str, str]]:
                servers = (zookeeper, client, ports)
                rows = run_once(args, servers, workdir, f"{label}{number}", path)
                print(f"{label} run {number} done", file=sys.stderr, flush=True)
                return rows

            rows += rows_in_turns(parser, args, run)
    finally:
        if args.keep_logs:
            print(f"logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table(rows, "Quick restarts in a row, as a reader of ZooKeeper sees them"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""
A rack going down in a group: how soon each verdict says so.

Three agents ``a0``--``a2`` (``twistd -n sentinel``, ``--replicas``,
default 2) share ``--instances`` instances over 10 real redis-servers.
Once every instance node says ``up`` and 10 s more have passed, half the
servers are SIGSTOPped at once (a rack cut off): every observer's
opinions of their instances change together, and each primary waits
for the other observers' before it writes a verdict. The instance nodes
are read every 50 ms for 30 s. Printed, for each run: how many of the
stopped servers' instances were published down, and when (p50, p99,
max), the instances of the running servers published down (false
downs: there must be none), and each agent's ``/healthz`` at the end
(a reason says why a verdict is missing: checks the agent could not
make, say).

    .venv/bin/python benchmarks/rack.py [--instances 1000] [--runs 2]
        [--checkout before=../before --checkout after=.]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    LOOPBACK,
    Agent,
    Instance,
    add_checkout_option,
    agent_config,
    load_average,
    machine,
    percentile,
    rows_in_turns,
    start_redis_servers,
    start_zookeeper,
    table,
)
from kazoo.client import KazooClient

SERVERS = 10
AGENTS = 3
# Seconds the stopped servers' instances have to be published down.
WATCHED = 30.0


def statuses(client: KazooClient) -> dict[str, str]:
    """Every instance node's status, by name (those unreadable left out)."""
    found = {}
    try:
        names = client.get_children("/sentinel/instances")
    except Exception:
        return found
    for name in names:
        try:
            found[name] = json.loads(client.get(f"/sentinel/instances/{name}")[0])[
                "status"
            ]
        except Exception:
            pass
    return found


def healthz(agent: Agent) -> str:
    """``/healthz``: ok, or its reasons."""
    url = f"http://{LOOPBACK}:{agent.http_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return str(json.loads(answer.read())["status"])
    except urllib.error.HTTPError as e:
        return "; ".join(json.loads(e.read()).get("reasons", []))


def run(args: argparse.Namespace, label: str, checkout: Path, number: int) -> Any:
    n = args.instances
    with ExitStack() as started:
        servers = start_redis_servers(SERVERS, started)
        zk, client = start_zookeeper(started)
        workdir = Path(tempfile.mkdtemp(prefix="sentinel-rack-"))
        started.callback(shutil.rmtree, workdir, ignore_errors=True)
        instances = [Instance(f"r{i}", servers[i % SERVERS].port) for i in range(n)]
        agents = []
        for i in range(AGENTS):
            config = agent_config(
                instances,
                zookeeper=zk.hosts,
                agent_id=f"a{i}",
                zk_settings={"replicas": args.replicas},
            )
            agent = Agent(workdir, config, label=f"a{i}", pythonpath=checkout)
            started.callback(agent.stop)
            agents.append(agent)
        for agent in agents:
            agent.wait_ready()
        start = time.monotonic()
        while not (
            len(found := statuses(client)) == n
            and all(s == "up" for s in found.values())
        ):
            if time.monotonic() - start > 120:
                raise SystemExit("rack: the instances were not all up in 120 s")
            time.sleep(0.5)
        time.sleep(10)
        stopped = {f"r{i}" for i in range(n) if i % SERVERS < SERVERS // 2}
        for server in servers[: SERVERS // 2]:
            os.kill(server.pid, signal.SIGSTOP)
        started.callback(
            lambda: [os.kill(s.pid, signal.SIGCONT) for s in servers[: SERVERS // 2]]
        )
        cut = time.monotonic()
        down: dict[str, float] = {}
        false_downs: set[str] = set()
        while len(down) < len(stopped) and time.monotonic() - cut < WATCHED:
            now = time.monotonic() - cut
            for name, status in statuses(client).items():
                if status == "down":
                    if name in stopped:
                        down.setdefault(name, now)
                    else:
                        false_downs.add(name)
            time.sleep(0.05)
        load = load_average()
        health = [f"a{i}: {healthz(agent)}" for i, agent in enumerate(agents)]
    times = sorted(down.values())
    summary = (
        f"{len(times)}/{len(stopped)} down"
        + (
            f"; p50 {percentile(times, 50):.2f}, p99 {percentile(times, 99):.2f},"
            f" max {times[-1]:.2f} s"
            if times
            else ""
        )
        + f"; false downs {len(false_downs)}"
        + (f" ({', '.join(sorted(false_downs)[:5])})" if false_downs else "")
        + f"; load {load}"
    )
    return [(f"{label} #{number + 1}", summary)] + [
        (f"  /healthz {line.split(':')[0]}", line.split(": ", 1)[1]) for line in health
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1000, help="N (1000)")
    parser.add_argument("--replicas", type=int, default=2, help="R (2)")
    parser.add_argument("--runs", type=int, default=2, help="of each checkout (2)")
    add_checkout_option(parser)
    args = parser.parse_args()
    rows = [("machine", machine()), *rows_in_turns(parser, args, run)]
    print(table(rows, f"A rack down: {args.instances:,} instances, 3 agents"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""
A Redis, or a proxy in front of many, that changes what the agent
publishes at every check: how many ZooKeeper writes it makes the agent
send (DESIGN.md sections 2.5 and 7).

For each ``--modes`` (``tests/hostile.py``: ``loading``, ``roleflip``,
``wandering``, ``jitter``; ``steady`` is a real redis-server, the
baseline), one
agent (``twistd -n sentinel``, 1 s interval, default refresh 30 s)
watches ``--instances`` instances behind that server (``--listeners``
ports of one process) and ``--healthy`` instances on a real
redis-server, publishing to a ZooKeeper of its own (with ``--agents`` and
``--replicas``, a group of agents sharing them: figures are their sums).
Once every instance node is written and ``--settle`` seconds have
passed, over ``--window`` seconds: the writes the agent made per second
(its ``/metrics``, read at the window's ends), its CPU and RSS, the
healthy instances' checks and failures, ``overruns`` (late ticks),
``/healthz`` each second (code and reasons), ``/debug/stats``'s
``flapping``, if it has one, the changes of status (down and up) of the
instances behind that server, and the warning lines of the agents' logs
that say an instance is down or flapping.

    .venv/bin/python benchmarks/flapping.py [--modes steady,loading]
        [--instances 1000] [--window 30] [--checkout before=../old]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import urllib.error
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    Agent,
    Instance,
    add_checkout_option,
    agent_config,
    checkouts_of,
    commit_of,
    load_average,
    open_files_for,
    start_redis_servers,
    start_zookeeper,
    stop_on_sigterm,
    table,
    wait_until,
)
from zkwrites import writes_made

from tests.servers import HostileServers

ROOT = "/sentinel"
MODES = ("steady", "loading", "roleflip", "wandering", "jitter")
MIB = 2**20


def parse_args() -> argparse.Namespace:
    """The options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--modes", default=",".join(MODES), help="comma-separated (all)")
    add("--instances", type=int, default=1000, help="behind the server (1000)")
    add("--healthy", type=int, default=50, help="on a real redis-server (50)")
    add("--listeners", type=int, default=4, help="ports of the server (4)")
    add("--agents", type=int, default=1, help="agents of one group (1)")
    add("--replicas", type=int, default=1, help="zookeeper.replicas (1)")
    add("--settle", type=float, default=10.0, help="s after all published (10)")
    add("--window", type=float, default=30.0, help="s measured (30)")
    add("--publish-limit", type=float, default=120.0, help="s to publish all")
    add_checkout_option(parser)
    args = parser.parse_args()
    args.modes = args.modes.split(",")
    if not set(args.modes) <= set(MODES):
        parser.error(f"--modes takes {', '.join(MODES)}")
    args.checkouts = checkouts_of(parser, args.checkout)
    return args


def run(
    args: argparse.Namespace, mode: str, label: str, checkout: Path, healthy_port: int
) -> list[tuple[str, str]]:
    """The agents of `checkout` against a server of `mode`: their rows."""
    with ExitStack() as started:
        if mode == "steady":
            ports = [healthy_port]
        else:
            hostile = HostileServers([(mode, False)] * args.listeners)
            started.callback(hostile.stop)
            ports = hostile.ports
        zookeeper, client = start_zookeeper(started)
        n = args.instances
        instances = [Instance(f"f{i}", ports[i % len(ports)]) for i in range(n)]
        instances += [Instance(f"h{i}", healthy_port) for i in range(args.healthy)]
        workdir = Path(tempfile.mkdtemp(prefix=f"sentinel-flapping-{mode}-"))
        # Removed once the agents, registered after, have stopped.
        started.callback(shutil.rmtree, workdir, ignore_errors=True)
        agents = []
        for number in range(args.agents):
            config = agent_config(
                instances,
                zookeeper=zookeeper.hosts,
                zk_root=ROOT,
                agent_id=f"{label}{number}",
                zk_settings={"replicas": args.replicas},
            )
            agent = Agent(
                workdir,
                config,
                f"{label}{number}",
                checkout,
                open_files=open_files_for(len(instances)),
            )
            started.callback(agent.stop)
            agents.append(agent)
        for agent in agents:
            agent.wait_ready()
        path = f"{ROOT}/instances"
        wait_until(
            lambda: (
                client.exists(path) is not None
                and len(client.get_children(path)) >= len(instances)
            ),
            args.publish_limit,
            "every instance node written",
            0.5,
        )
        time.sleep(args.settle)

        def healthy_counts() -> tuple[int, int]:
            # Each agent lists the instances it observes.
            checks = failed = 0
            for agent in agents:
                for name, state in agent.instances().items():
                    if name.startswith("h"):
                        checks += state["checks"]
                        failed += state["failures"]
            return checks, failed

        def total(read: Callable[[Agent], float]) -> float:
            return sum(read(agent) for agent in agents)

        def overruns(agent: Agent) -> float:
            return float(agent.get("/debug/stats")["overruns"])

        def hostile_statuses() -> dict[str, str]:
            return {
                name: state["status"]
                for agent in agents
                for name, state in agent.instances().items()
                if name.startswith("f")
            }

        def log_sizes() -> list[int]:
            return [agent.log.stat().st_size for agent in agents]

        logged_from = log_sizes()
        writes_before = total(writes_made)
        overruns_before = total(overruns)
        checks_before, failed_before = healthy_counts()
        cpu_before = total(Agent.cpu_seconds)
        healthz: Counter[str] = Counter()
        rss_most = 0
        flapping: dict[str, Any] = {}
        statuses = hostile_statuses()
        status_changes = 0
        began = time.monotonic()
        while time.monotonic() - began < args.window:
            now = hostile_statuses()
            status_changes += sum(now[n] != s for n, s in statuses.items() if n in now)
            statuses = now
            for agent in agents:
                try:
                    agent.get("/healthz", timeout=5.0)
                    healthz["200"] += 1
                except urllib.error.HTTPError as error:
                    answer = json.loads(error.read())
                    healthz[f"503 {'; '.join(answer.get('reasons', []))[:200]}"] += 1
                except OSError:
                    healthz["no answer within 5 s"] += 1
                stats = agent.get("/debug/stats")
                if "flapping" in stats:
                    flapping[agent.log.stem] = stats["flapping"]
                rss_most = max(rss_most, agent.rss_bytes())
            time.sleep(1.0)
        elapsed = time.monotonic() - began
        logged: Counter[str] = Counter()
        for agent, start in zip(agents, logged_from, strict=True):
            with open(agent.log, "rb") as f:
                f.seek(start)
                for line in f.read().decode("utf-8", "replace").splitlines():
                    if " is down (was up)" in line and "#warn]" in line:
                        logged["down"] += 1
                    elif "flapping" in line and "changed its status" in line:
                        logged["flapping"] += 1
        cpu = total(Agent.cpu_seconds) - cpu_before
        writes = total(writes_made) - writes_before
        checks, failed = healthy_counts()
        sample = agents[0].get("/instances/f0")
        shape = "" if args.agents == 1 else f", {args.agents} agents, R {args.replicas}"
        rows = [
            (f"{mode}, {label} ({commit_of(checkout)}){shape}", ""),
            ("  ZooKeeper writes per s", f"{writes / elapsed:.1f}"),
            ("  steady state (instances / 30 s)", f"{len(instances) / 30:.1f}"),
            ("  CPU", f"{100 * cpu / elapsed:.0f} % of a core"),
            ("  RSS at most", f"{rss_most / MIB:.0f} MiB"),
            ("  healthy: checks, failed", f"{checks - checks_before}, "
             f"{failed - failed_before}"),
            ("  overruns", f"{total(overruns) - overruns_before:.0f}"),
            (f"  status changes seen ({args.instances} behind the server)",
             f"{status_changes} (read each second)"),
            ("  warnings: down, flapping",
             f"{logged['down']}, {logged['flapping']}"),
            ("  f0", f"{sample['status']} ready={sample['ready']} "
             f"role={sample['role']}"),
        ]  # fmt: skip
        rows += [(f"  /healthz x{count}", key) for key, count in healthz.items()]
        for name, figures in flapping.items():
            rows.append((f"  {name}: flapping", json.dumps(figures)[:200]))
        print(f"{mode} {label} done", file=sys.stderr, flush=True)
        return rows


def main() -> int:
    """Run every mode with every checkout, interleaved; print the figures."""
    args = parse_args()
    stop_on_sigterm()
    rows = [("load average at start", load_average())]
    with ExitStack() as started:
        (healthy,) = start_redis_servers(1, started)
        for mode in args.modes:
            for label, checkout in args.checkouts:
                rows += run(args, mode, label, checkout, healthy.port)
                rows.append(("  load average", load_average()))
    title = (
        f"ZooKeeper writes against servers that change at every check "
        f"(benchmarks/flapping.py, {args.instances:,} instances, "
        f"{args.window:g} s window)"
    )
    print(table(rows, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())

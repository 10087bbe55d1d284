"""
What publishing to ZooKeeper costs the agent, beyond its checks.

An agent (``twistd -n sentinel``) watches N instances over a few real
redis-servers, all up, and publishes them to a ZooKeeper of its own (a new
one for each run). Printed for each run: how long after start every
instance node was in ZooKeeper, then, over a window of whole refresh
periods (every unchanged node is written again each ``zookeeper.refresh``,
30 s by default), the agent's CPU per instance-second, the writes it made
per second (from its ``/metrics``, read at the window's ends only: a render
costs CPU), and its peak second. The same agent without ZooKeeper gives the
checks' own cost, so that what publishing adds per write is

    (CPU per second with ZooKeeper - without) / writes per second.

With ``--checkout LABEL=PATH`` (repeatable), each checkout's agent is run
with ZooKeeper, in turns, on the same redis-servers, then this checkout's
without (the checks' cost is not what is compared).

    .venv/bin/python benchmarks/zkwrites.py [--instances 3000]
        [--checkout before=../old --checkout after=.]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import psutil
from common import (
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
    wait_until,
)

ROOT = "/sentinel"
REFRESH = 30.0
# After every node is written and every instance up, before the window.
SETTLE = 5.0
_WRITES = re.compile(r'^sentinel_zk_writes_total\{op="\w+",result="ok"\} (\S+)$', re.M)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--instances", type=int, default=3000, help="N (3000)")
    add("--servers", type=int, default=4, help="redis-servers (4)")
    add("--periods", type=int, default=2, help="refresh periods in the window (2)")
    add("--publish-limit", type=float, default=300.0, help="s to publish all")
    add_checkout_option(parser)
    args = parser.parse_args()
    if args.instances < 1 or args.servers < 1 or args.periods < 1:
        parser.error("--instances, --servers and --periods must be positive")
    args.this = Path(__file__).resolve().parent.parent
    args.checkouts = checkouts_of(parser, args.checkout)
    return args


def writes_made(agent: Agent) -> float:
    """Every write the agent made (creates, sets, deletes), from /metrics."""
    url = f"http://127.0.0.1:{agent.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    return sum(float(count) for count in _WRITES.findall(text))


def run(
    args: argparse.Namespace, label: str, checkout: Path, ports: list[int], zk: bool
) -> dict[str, float]:
    """One agent of `checkout`, with a ZooKeeper of its own if `zk`: figures."""
    with ExitStack() as started:
        n = args.instances
        instances = [Instance(f"r{i}", ports[i % len(ports)]) for i in range(n)]
        hosts = None
        if zk:
            zookeeper, client = start_zookeeper(started)
            hosts = zookeeper.hosts
        workdir = Path(tempfile.mkdtemp(prefix=f"sentinel-zkwrites-{label}-"))
        config = agent_config(instances, zookeeper=hosts)
        agent = Agent(workdir, config, label, checkout, open_files=open_files_for(n))
        started.callback(agent.stop)
        agent.wait_ready()
        figures: dict[str, float] = {}

        def published() -> bool:
            if agent.get("/debug/stats")["instances_up"] < n:
                return False
            path = f"{ROOT}/instances"
            return not zk or (
                client.exists(path) is not None and len(client.get_children(path)) >= n
            )

        figures["published"] = wait_until(published, args.publish_limit, "all up", 0.5)
        time.sleep(SETTLE)
        process = psutil.Process(agent.pid)
        window = args.periods * REFRESH
        writes_before = writes_made(agent) if zk else 0.0
        checks_before = agent.get("/debug/stats")["checks"]
        cpu_start = sum(process.cpu_times()[:2])
        last, peak = cpu_start, 0.0
        started_at = time.monotonic()
        while time.monotonic() - started_at < window:
            time.sleep(1.0)
            now = sum(process.cpu_times()[:2])
            peak, last = max(peak, now - last), now
        elapsed = time.monotonic() - started_at
        figures["cpu_per_s"] = (last - cpu_start) / elapsed
        figures["peak"] = peak
        figures["checks_per_s"] = (
            agent.get("/debug/stats")["checks"] - checks_before
        ) / elapsed
        figures["writes_per_s"] = (
            (writes_made(agent) - writes_before) / elapsed if zk else 0.0
        )
        print(f"{label} done", file=sys.stderr, flush=True)
        return figures


def main() -> int:
    args = parse_args()
    stop_on_sigterm()
    n = args.instances
    rows = [("machine", machine()), ("load average at start", load_average())]
    results = {}
    with ExitStack() as started:
        servers = start_redis_servers(args.servers, started)
        ports = [s.port for s in servers]
        for label, checkout in args.checkouts:
            results[label] = run(args, label, checkout, ports, zk=True)
        alone = run(args, "no ZooKeeper", args.this, ports, zk=False)
    rows.append(
        (
            "no ZooKeeper (this checkout)",
            f"{1e6 * alone['cpu_per_s'] / n:.1f} µs per instance-s, "
            f"peak second {100 * alone['peak']:.0f} % of a core",
        )
    )
    for label, checkout in args.checkouts:
        r = results[label]
        added = r["cpu_per_s"] - alone["cpu_per_s"]
        per_write = 1e6 * added / r["writes_per_s"] if r["writes_per_s"] else 0.0
        rows += [
            (f"{label} ({commit_of(checkout)})", ""),
            ("  every node written after start", f"{r['published']:.1f} s"),
            ("  CPU per instance-s", f"{1e6 * r['cpu_per_s'] / n:.1f} µs"),
            ("  writes per s (window)", f"{r['writes_per_s']:.0f}"),
            ("  added by ZooKeeper per write", f"{per_write:.0f} µs"),
            ("  peak second", f"{100 * r['peak']:.0f} % of a core"),
        ]
    rows.append(("load average at the end", load_average()))
    title = (
        f"ZooKeeper writes (benchmarks/zkwrites.py, {n:,} instances, "
        f"{args.periods} refresh periods)"
    )
    print(table(rows, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())

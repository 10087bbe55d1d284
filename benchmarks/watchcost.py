"""
What watching instance nodes for other clients' writes costs in steady
state (`sentinel.writewatch`): ZooKeeper requests a second and the
agent's CPU, one agent alone.

One ``twistd -n sentinel`` agent (default refresh 30 s and heartbeat 10 s,
interval 1 s) watches ``--instances`` instances over ``--servers`` real
redis-servers, all up, on a ZooKeeper of its own. Once every instance node
is written, ``--settle`` seconds pass (the first refresh of the nodes, all
made at about the same time, lands in them), then for ``--window``
seconds (a refresh period, so that every node's refresh is in it):
ZooKeeper's ``mntr`` ``zk_packets_received`` (every request, pings too)
and the agent's CPU seconds, each as a rate; and what a set, a read, a
ping are of it cannot be told from ``mntr``, so the watch's own reads
are not counted apart.

    .venv/bin/python benchmarks/watchcost.py --instances 3000 \\
        --checkout before=../before --checkout after=.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

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

ROOT = "/watchcost"


def main() -> None:
    """Parse the options, run each checkout in turn, print a table each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=3000)
    parser.add_argument("--servers", type=int, default=6)
    parser.add_argument("--settle", type=float, default=35.0)
    parser.add_argument("--window", type=float, default=30.0)
    add_checkout_option(parser)
    options = parser.parse_args()
    stop_on_sigterm()
    for label, checkout in checkouts_of(parser, options.checkout):
        rows = one_run(options, checkout)
        title = (
            f"{label} ({commit_of(checkout)}): {options.instances} instances,"
            f" load {load_average()}"
        )
        print(table(rows, title), flush=True)


def packets(zookeeper: object) -> int:
    """ZooKeeper's count of requests received so far (``mntr``)."""
    answer = zookeeper.four_letter_word("mntr").decode()  # type: ignore[attr-defined]
    for line in answer.splitlines():
        key, _, value = line.partition("\t")
        if key == "zk_packets_received":
            return int(value)
    raise RuntimeError(f"no zk_packets_received in mntr: {answer[:200]!r}")


def one_run(options: argparse.Namespace, checkout: Path) -> list[tuple[str, str]]:
    """One agent, its steady state measured (module docstring)."""
    with ExitStack() as started, tempfile.TemporaryDirectory() as scratch:
        zookeeper, reader = start_zookeeper(started)
        servers = start_redis_servers(options.servers, started)
        instances = [
            Instance(f"cache-{i}", servers[i % len(servers)].port)
            for i in range(options.instances)
        ]
        agent = Agent(
            Path(scratch),
            agent_config(instances, zookeeper=zookeeper.hosts, zk_root=ROOT),
            pythonpath=checkout,
            open_files=open_files_for(options.instances),
        )
        started.callback(agent.stop)
        agent.wait_ready(timeout=120.0)
        began = time.monotonic()
        wait_until(
            lambda: (
                reader.exists(f"{ROOT}/instances") is not None
                and len(reader.get_children(f"{ROOT}/instances")) == options.instances
            ),
            180.0,
            "every instance node written",
            poll=0.5,
        )
        published = time.monotonic() - began
        time.sleep(options.settle)
        first, cpu = packets(zookeeper), agent.cpu_seconds()
        time.sleep(options.window)
        requests = (packets(zookeeper) - first) / options.window
        cpu_share = (agent.cpu_seconds() - cpu) / options.window
        stats = agent.get("/debug/stats")
        return [
            ("every node written after", f"{published:.1f} s"),
            ("ZooKeeper requests/s (mntr)", f"{requests:,.1f}"),
            ("agent CPU", f"{cpu_share * 100:.1f} %"),
            ("instances up", f"{stats.get('instances_up', '?')}"),
            ("window", f"{options.window:g} s after {options.settle:g} s settled"),
        ]


if __name__ == "__main__":
    main()

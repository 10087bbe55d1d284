"""
What ``/healthz`` names when a squatter holds many of an agent's nodes and
crowds its instances node (DESIGN.md section 2.5), read with ``curl``.

One agent (``twistd -n sentinel``, ``--instances`` instances on one real
redis-server, its own real ZooKeeper). Before it starts, a squatter
(kazoo, its own session) creates a persistent node at every instance's
path (each a conflict) and ``--strangers`` persistent children of
``{root}/instances`` of no instance (more than the 1,000 crowding
allows). ``/healthz`` is then read with ``curl`` every second until its
reasons hold both the conflict and the crowding (two looks, 30 s apart),
or for ``--for`` seconds; printed: each reason cut at ``--width``
characters, with its length, and whether it names a second node.

    .venv/bin/python benchmarks/healthznames.py [--instances 30]
        [--strangers 1500] [--for 100] [--checkout before=TREE]
        [--checkout after=.]
"""

from __future__ import annotations

import argparse
import json
import subprocess
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
    start_redis_servers,
    start_zookeeper,
)

ROOT = "/sentinel"


def squat(client: object, names: list[str], strangers: int) -> None:
    """Persistent nodes at every instance's path, and `strangers` others."""
    paths = [f"{ROOT}/instances/{name}" for name in names]
    paths += [f"{ROOT}/instances/stranger-{i:05d}" for i in range(strangers)]
    client.ensure_path(f"{ROOT}/instances")  # type: ignore[attr-defined]
    for start in range(0, len(paths), 1000):
        transaction = client.transaction()  # type: ignore[attr-defined]
        for path in paths[start : start + 1000]:
            transaction.create(path, b'{"status": "up"}')
        transaction.commit()


def curl_healthz(port: int) -> list[str]:
    """/healthz's reasons, read with curl (none when it answers 200)."""
    body = subprocess.run(
        ["curl", "-s", "--max-time", "10", f"http://127.0.0.1:{port}/healthz"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    try:
        reasons: list[str] = json.loads(body).get("reasons", [])
    except ValueError:
        return []
    return reasons


def one_run(options: argparse.Namespace, label: str, checkout: Path) -> None:
    with ExitStack() as started, tempfile.TemporaryDirectory() as workdir:
        [server] = start_redis_servers(1, started)
        zookeeper, client = start_zookeeper(started)
        names = [f"r{i:02d}" for i in range(options.instances)]
        squat(client, names, options.strangers)
        config = agent_config(
            [Instance(name, server.port) for name in names],
            zookeeper=zookeeper.hosts,
            zk_root=ROOT,
        )
        agent = Agent(Path(workdir), config, pythonpath=checkout)
        started.callback(agent.stop)
        agent.wait_ready()
        began = time.monotonic()
        reasons: list[str] = []
        while time.monotonic() - began < options.seconds:
            reasons = curl_healthz(agent.http_port)
            kinds = [r for r in reasons if "conflict" in r or "children" in r]
            if len(kinds) >= 2:
                break
            time.sleep(1.0)
        took = time.monotonic() - began
        print(
            f"{label} ({commit_of(checkout)}): after {took:.0f} s, load"
            f" {load_average()}, {len(reasons)} reason(s):"
        )
        for reason in reasons:
            cut = reason if len(reason) <= options.width else reason[: options.width]
            second = "r01" in reason or "stranger-00001" in reason
            print(f"  [{len(reason)} chars, names a second: {second}] {cut}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--instances", type=int, default=30)
    parser.add_argument("--strangers", type=int, default=1500)
    parser.add_argument("--for", dest="seconds", type=float, default=100.0)
    parser.add_argument("--width", type=int, default=2000)
    add_checkout_option(parser)
    options = parser.parse_args()
    for label, checkout in checkouts_of(parser, options.checkout):
        one_run(options, label, checkout)


if __name__ == "__main__":
    main()

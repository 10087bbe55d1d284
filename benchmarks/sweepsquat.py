"""
A restart's sweep behind a squatter's nodes (DESIGN.md sections 2.5 and 8).

An agent (``twistd -n sentinel``, a ``state_dir``) watches ``--instances``
instances on a real redis-server and publishes them to a real ZooKeeper.
Once every instance node is written, a squatter (kazoo, its own session)
creates ``--nodes`` ephemeral children of ``{root}/instances``, named
with ``--name-bytes`` bytes each (a listing of 100,000 names of 200
bytes is about 20 MB), in transactions of at most 1,000 (and 500 KB);
the agent is stopped (SIGTERM: the session kept) and started again on
the same ``state_dir`` with the last ``--removed`` instances removed
from its config. The new process reattaches and
sweeps: the removed instances' nodes are its own now, and must go
(ZooKeeper lists children in no order: each is found somewhere among the
squatter's). Printed, for each ``--checkout``: how long after the new
process's start the last of the removed instances' nodes was still
published, and the previous process's catalog (the sweep's last step);
the new process's CPU, RSS and ZooKeeper requests (``cons``) until
then, its checks failed, each ``/healthz`` answer (polled every 0.2 s),
and its log lines of a ZooKeeper frame refused as too long.

    .venv/bin/python benchmarks/sweepsquat.py [--nodes 100000] \\
        [--name-bytes 12] [--instances 20] [--removed 10] \\
        [--checkout before=PATH --checkout after=.]
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from common import (
    LOOPBACK,
    Agent,
    Instance,
    add_checkout_option,
    agent_config,
    checkouts_of,
    commit_of,
    load_average,
    start_redis_servers,
    start_zookeeper,
    stop_on_sigterm,
    wait_until,
)
from kazoo.client import KazooClient
from squat import squatter_client

BATCH = 1000


def healthz(agent: Agent) -> tuple[int, str]:
    """/healthz's status code and its reasons, shortened."""
    url = f"http://{LOOPBACK}:{agent.http_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, ""
    except urllib.error.HTTPError as e:
        return e.code, "; ".join(json.loads(e.read()).get("reasons", []))[:160]
    except OSError:
        return 0, "no answer"


def requests_of(zookeeper_hosts: str, session: int) -> int:
    """ZooKeeper's count of requests received from `session` (``cons``)."""
    host, port = zookeeper_hosts.split(",")[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as connection:
        connection.sendall(b"cons")
        text = b""
        while chunk := connection.recv(65536):
            text += chunk
    for line in text.decode().splitlines():
        if f"sid=0x{session:x}" in line and "recved=" in line:
            return int(line.split("recved=")[1].split(",")[0])
    return 0


def run(
    args: argparse.Namespace,
    label: str,
    checkout: Path,
    hosts: str,
    client: KazooClient,
    port: int,
) -> list[str]:
    """One restart behind the squatter's nodes; the lines to print."""
    root = f"/sweepsquat-{label}-{int(time.time())}"
    workdir = Path(tempfile.mkdtemp(prefix=f"sentinel-sweepsquat-{label}-"))
    state_dir = workdir / "state"
    instances = [Instance(f"cache-{i}", port) for i in range(args.instances)]
    kept = instances[: -args.removed]
    removed = [f"{root}/instances/{i.name}" for i in instances[-args.removed :]]

    def still_published() -> bool:
        return any(client.exists(path) for path in removed)

    def config(watched: list[Instance]) -> str:
        text = agent_config(watched, zookeeper=hosts, zk_root=root, agent_id="a")
        return f'state_dir = "{state_dir}"\n' + text

    with ExitStack() as started:
        first = Agent(workdir, config(instances), label="first", pythonpath=checkout)
        started.callback(first.stop)
        first.wait_ready()
        wait_until(
            lambda: all(client.exists(f"{root}/instances/{i.name}") for i in instances),
            60,
            "every instance node written",
        )
        squatter = squatter_client(started, hosts)
        began = time.monotonic()
        # A transaction within ZooKeeper's 1 MB on a request (jute.maxbuffer).
        batch = max(1, min(BATCH, 500_000 // args.name_bytes))
        for start in range(0, args.nodes, batch):
            transaction = squatter.transaction()
            for i in range(start, min(start + batch, args.nodes)):
                name = f"squat-{i}-".ljust(args.name_bytes, "x")
                transaction.create(f"{root}/instances/{name}", b"{}", ephemeral=True)
            transaction.commit()
        squatted = time.monotonic() - began
        catalogs = [
            f"{root}/catalogs/{name}"
            for name in client.get_children(f"{root}/catalogs")
        ]
        first.stop()
        load = load_average()
        restarted = time.monotonic()
        second = Agent(workdir, config(kept), label="second", pythonpath=checkout)
        started.callback(second.stop)
        second.wait_ready()
        cpu_start = second.cpu_seconds()
        answers: Counter[tuple[int, str]] = Counter()
        rss_most = 0

        def watched_while(published: Callable[[], bool]) -> float:
            # Polls /healthz and RSS until `published` is false, or the
            # limit; the seconds since the restart.
            nonlocal rss_most
            while published() and time.monotonic() - restarted < args.limit:
                answers[healthz(second)] += 1
                rss_most = max(rss_most, second.rss_bytes())
                time.sleep(0.2)
            return time.monotonic() - restarted

        published = watched_while(still_published)
        swept = watched_while(lambda: any(client.exists(p) for p in catalogs))
        cpu = second.cpu_seconds() - cpu_start
        stat = client.exists(f"{root}/agents/a")
        session = stat.ephemeralOwner if stat else 0
        requests = requests_of(hosts, session)
        watched = second.instances()
        checks = sum(i["checks"] for i in watched.values())
        failures = sum(i["failures"] for i in watched.values())
        gone = "gone" if not still_published() else f"still there at {args.limit:g} s"
        drops = second.log.read_text(errors="replace").count("frame length")
        lines = [
            f"{label} ({commit_of(checkout)}), load {load}: {args.nodes} squatted"
            f" in {squatted:.1f} s",
            f"    removed instances' nodes {gone} {published:.1f} s after the"
            f" restart, its previous catalog {swept:.1f} s after; CPU {cpu:.2f} s,"
            f" RSS at most {rss_most / 2**20:.0f} MiB,"
            f" {requests} ZooKeeper requests from its session",
            f"    checks {checks}, failed {failures}; /healthz {dict(answers)};"
            f" {drops} log lines of a frame too long",
        ]
        return lines


def main() -> None:
    """Run each checkout in turn; print its lines."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=100_000)
    parser.add_argument("--name-bytes", type=int, default=12)
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--removed", type=int, default=10)
    parser.add_argument("--limit", type=float, default=240.0)
    add_checkout_option(parser)
    args = parser.parse_args()
    stop_on_sigterm()
    with ExitStack() as started:
        zookeeper, client = start_zookeeper(started)
        (redis,) = start_redis_servers(1, started)
        for label, checkout in checkouts_of(parser, args.checkout):
            lines = run(args, label, checkout, zookeeper.hosts, client, redis.port)
            print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()

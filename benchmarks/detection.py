"""
How long from a fault to ``down``, and from the repair back to ``up``.

A few instances, each on a redis-server of its own, and a real ZooKeeper.
Each round picks a random instance, waits a random fraction of the interval
(a random phase relative to the agent's tick), then SIGSTOPs or SIGKILLs its
server. It times the fault to ``down``:

- in ``/instances/<name>``, polled every 5 ms (the time the answer arrived);
- the agent's own decision, the document's ``since`` (same wall clock);
- in ZooKeeper, through a kazoo data watch on the instance's node (the time
  the watch delivered the new data).

Then it repairs the fault (SIGCONT, or a restart on the same port once the
server is ready again) and times the way back to ``up`` the same way. It
prints p50/p99/max against the bound ``interval * fall + timeout`` for
``down`` (``interval * rise + timeout`` is shown beside ``up`` for scale),
and the publish delay: ZooKeeper's time minus the HTTP time, and minus the
decision.

With ``--healthy N``, the agent also watches N healthy instances (``h0`` to
``hN-1``, over ``--healthy-servers`` redis-servers that nothing touches),
so that the faults are timed while the agent is busy; at the end it prints
how many of those failed a check or were not up (every one is false).

    .venv/bin/python benchmarks/detection.py [--rounds 20] [--seed 1] [--healthy 3000]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import threading
import time
import urllib.error
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    Agent,
    Instance,
    RedisServer,
    ZooKeeperServer,
    agent_config,
    load_average,
    machine,
    ms_summary,
    start_redis_servers,
    stop_on_sigterm,
    table,
)
from kazoo.client import KazooClient
from kazoo.recipe.watchers import DataWatch

POLL = 0.005
ZK_ROOT = "/bench-detection"


def parse_args() -> argparse.Namespace:
    """The options, with issue 5's defaults."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--instances", type=int, default=6, help="instances, one server each (6)")
    add("--rounds", type=int, default=20, help="faults injected (20)")
    add("--interval", type=float, default=1.0, help="tick, seconds (1.0)")
    add("--timeout", type=float, default=0.5, help="check timeout, seconds (0.5)")
    add("--rise", type=int, default=2, help="successes to go up (2)")
    add("--fall", type=int, default=3, help="failures to go down (3)")
    add(
        "--faults",
        default="stop,kill",
        help="comma-separated: stop (SIGSTOP/SIGCONT), kill (SIGKILL/restart)",
    )
    add("--seed", type=int, default=None, help="random seed (default: random)")
    add("--healthy", type=int, default=0, help="healthy instances alongside (0)")
    add("--healthy-servers", type=int, default=4, help="their redis-servers (4)")
    args = parser.parse_args()
    args.faults = args.faults.split(",")
    if not set(args.faults) <= {"stop", "kill"} or args.rounds < 1:
        parser.error("--faults takes stop and/or kill; --rounds must be positive")
    return args


class ZooKeeperWatch:
    """
    Each instance node's status as ZooKeeper delivers it, with the wall-clock
    time of every change (data watches fire on kazoo's thread).
    """

    def __init__(self, client: KazooClient, names: list[str]) -> None:
        self._lock = threading.Lock()
        self.changes: dict[str, list[tuple[float, str | None]]] = {n: [] for n in names}
        for name in names:
            DataWatch(client, f"{ZK_ROOT}/instances/{name}", self._watcher(name))

    def _watcher(self, name: str) -> Callable[[bytes | None, Any], None]:
        def changed(data: bytes | None, stat: Any) -> None:
            now = time.time()
            status = None if data is None else json.loads(data)["status"]
            with self._lock:
                changes = self.changes[name]
                if not changes or changes[-1][1] != status:
                    changes.append((now, status))

        return changed

    def status(self, name: str) -> str | None:
        """The latest status seen."""
        with self._lock:
            changes = self.changes[name]
            return changes[-1][1] if changes else None

    def became(self, name: str, status: str, after: float) -> float | None:
        """When the node first showed ``status`` after ``after``, if it has."""
        with self._lock:
            for at, seen in self.changes[name]:
                if at >= after and seen == status:
                    return at
        return None


def wait_http(agent: Agent, name: str, status: str, deadline: float) -> dict | None:
    """Poll /instances/<name> every 5 ms until ``status``; its arrival time too."""
    while time.monotonic() < deadline:
        asked = time.monotonic()
        try:
            doc = agent.get(f"/instances/{name}", timeout=2.0)
        except (OSError, urllib.error.URLError):
            doc = None
        if doc is not None and doc["status"] == status:
            doc["_seen_at"] = time.time()
            return doc
        time.sleep(max(0.0, POLL - (time.monotonic() - asked)))
    return None


def wait_zk(
    zk: ZooKeeperWatch, name: str, status: str, after: float, deadline: float
) -> float | None:
    """Wait (polling our own record, 5 ms) for ZooKeeper to show ``status``."""
    while True:
        at = zk.became(name, status, after)
        if at is not None or time.monotonic() >= deadline:
            return at
        time.sleep(POLL)


def wait_all(agent: Agent, zk: ZooKeeperWatch, names: list[str], limit: float) -> None:
    """Wait until every instance is up, in HTTP and in ZooKeeper."""
    # One small answer per faulted instance: the whole /instances of
    # thousands, every 50 ms, would load the agent being timed.
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if all(zk.status(n) == "up" for n in names) and all(
            agent.get(f"/instances/{n}")["status"] == "up" for n in names
        ):
            return
        time.sleep(0.05)
    raise RuntimeError(f"not every instance was up within {limit:g} s")


def wait_healthy(agent: Agent, names: list[str], limit: float) -> None:
    """Wait until the untouched instances are all up (the agent's start-up)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        docs = agent.instances()
        if all(docs.get(n, {}).get("status") == "up" for n in names):
            return
        time.sleep(0.5)
    raise RuntimeError(f"the healthy instances were not all up within {limit:g} s")


def run_round(
    rng: random.Random,
    agent: Agent,
    zk: ZooKeeperWatch,
    servers: dict[str, RedisServer],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One fault and its repair; the times, in seconds, None where missed."""
    name = rng.choice(sorted(servers))
    server = servers[name]
    fault = rng.choice(args.faults)
    limit = 3 * (args.interval * max(args.fall, args.rise) + args.timeout) + 5
    time.sleep(rng.uniform(0, args.interval))
    checked_at = agent.get(f"/instances/{name}")["checked_at"]
    faulted = time.time()
    if fault == "stop":
        server.pause()
    else:
        server.kill()
    row: dict[str, Any] = {
        "name": name,
        "fault": fault,
        # How far into its tick the fault fell (the last check's reply came
        # within a millisecond or so of the tick).
        "phase": (faulted - checked_at) % args.interval,
    }
    row.update(wait_status(agent, zk, name, "down", faulted, limit))
    if fault == "stop":
        server.resume()
    else:
        server.start()
    row.update(wait_status(agent, zk, name, "up", time.time(), limit))
    return row


def wait_status(
    agent: Agent,
    zk: ZooKeeperWatch,
    name: str,
    status: str,
    since: float,
    limit: float,
) -> dict[str, Any]:
    """
    Wait for ``status`` in /instances and in ZooKeeper; the times from
    ``since`` (the fault or the repair) as ``<status>_http``, ``_decided``,
    ``_zk`` and ``_publish``, None where missed.
    """
    deadline = time.monotonic() + limit
    doc = wait_http(agent, name, status, deadline)
    zk_at = wait_zk(zk, name, status, since, deadline)
    return {
        f"{status}_http": None if doc is None else doc["_seen_at"] - since,
        f"{status}_decided": None if doc is None else doc["since"] - since,
        f"{status}_zk": None if zk_at is None else zk_at - since,
        f"{status}_publish": _delay(zk_at, doc),
    }


def _delay(zk_at: float | None, doc: dict | None) -> tuple[float, float] | None:
    """ZooKeeper's time minus the HTTP time, and minus the decision."""
    if zk_at is None or doc is None:
        return None
    return (zk_at - doc["_seen_at"], zk_at - doc["since"])


def healthy_failures(agent: Agent, names: list[str]) -> tuple[int, int]:
    """Of the untouched instances: failed checks in all, and how many not up."""
    docs = agent.instances()
    failed = sum(docs[n]["failures"] for n in names)
    not_up = sum(1 for n in names if docs[n]["status"] != "up")
    return failed, not_up


def report(
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    healthy: tuple[int, int] | None,
    load_start: str,
) -> str:
    """The printed table."""
    down_bound = args.interval * args.fall + args.timeout
    up_bound = args.interval * args.rise + args.timeout
    out = [
        ("machine", machine()),
        ("load average at the start / end", f"{load_start} / {load_average()}"),
        (
            "setup",
            f"{args.instances} instances faulted, {args.healthy} healthy "
            f"alongside, {len(rows)} rounds ({args.faults}), "
            f"interval {args.interval:g} s, timeout {args.timeout:g} s, "
            f"fall {args.fall}, rise {args.rise}",
        ),
        ("bound for down (interval*fall + timeout)", f"{1000 * down_bound:.0f} ms"),
    ]
    for kind in ("stop", "kill", None):
        chosen = [r for r in rows if kind is None or r["fault"] == kind]
        if not chosen:
            continue
        label = "all" if kind is None else f"{kind} ({len(chosen)})"
        over = sum(
            1
            for r in chosen
            if r["down_http"] is None or r["down_http"] > down_bound + 0.05
        )
        out += [
            (
                f"{label}: down in /instances p50/p99/max",
                f"{ms_summary([r['down_http'] for r in chosen])}; "
                f"{over} over bound + 50 ms",
            ),
            (
                f"{label}: down decided (since) p50/p99/max",
                ms_summary([r["down_decided"] for r in chosen]),
            ),
            (
                f"{label}: down in ZooKeeper p50/p99/max",
                ms_summary([r["down_zk"] for r in chosen]),
            ),
            (
                f"{label}: up in /instances p50/p99/max",
                f"{ms_summary([r['up_http'] for r in chosen])} "
                f"(interval*rise + timeout = {1000 * up_bound:.0f} ms)",
            ),
            (
                f"{label}: up in ZooKeeper p50/p99/max",
                ms_summary([r["up_zk"] for r in chosen]),
            ),
        ]
    delays = [r[k] for r in rows for k in ("down_publish", "up_publish")]
    out += [
        (
            "publish delay ZooKeeper - HTTP p50/p99/max",
            ms_summary([d and d[0] for d in delays]),
        ),
        (
            "publish delay ZooKeeper - decision p50/p99/max",
            ms_summary([d and d[1] for d in delays]),
        ),
    ]
    if healthy is not None:
        out.append(
            (
                f"the {args.healthy} healthy: failed checks, not up at the end",
                f"{healthy[0]}, {healthy[1]}",
            )
        )
    return table(out, "detection")


def main() -> int:
    """Run the rounds, print the table, stop everything started."""
    args = parse_args()
    stop_on_sigterm()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-detection-"))
    rows: list[dict[str, Any]] = []
    healthy = [f"h{i}" for i in range(args.healthy)]
    load_start = load_average()
    try:
        with ExitStack() as started:
            redis = start_redis_servers(args.instances, started)
            servers = {f"d{i}": s for i, s in enumerate(redis)}
            instances = [Instance(n, s.port) for n, s in servers.items()]
            if healthy:
                shared = start_redis_servers(args.healthy_servers, started)
                instances += [
                    Instance(n, shared[i % len(shared)].port)
                    for i, n in enumerate(healthy)
                ]
            zookeeper = ZooKeeperServer()
            started.callback(zookeeper.close)
            zookeeper.start()
            config = agent_config(
                instances,
                interval=args.interval,
                timeout=args.timeout,
                rise=args.rise,
                fall=args.fall,
                zookeeper=zookeeper.hosts,
                zk_root=ZK_ROOT,
            )
            agent = Agent(workdir, config, open_files=len(instances) + 1024)
            started.callback(agent.stop)
            client = KazooClient(hosts=zookeeper.hosts, timeout=10.0)
            client.start(timeout=10.0)
            started.callback(client.close)
            started.callback(client.stop)
            agent.wait_ready()
            if healthy:
                wait_healthy(agent, healthy, 120.0)
                baseline = healthy_failures(agent, healthy)
            watch = ZooKeeperWatch(client, sorted(servers))
            limit = 10 * (args.interval * max(args.fall, args.rise) + args.timeout)
            for number in range(1, args.rounds + 1):
                wait_all(agent, watch, sorted(servers), limit)
                row = run_round(rng, agent, watch, servers, args)
                rows.append(row)
                print(_progress(number, row), file=sys.stderr, flush=True)
            end = None
            if healthy:
                failed, not_up = healthy_failures(agent, healthy)
                end = (failed - baseline[0], not_up)
    except BaseException:
        print(f"logs kept in {workdir}", file=sys.stderr)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    print(f"seed {seed}", file=sys.stderr)
    print(report(args, rows, end, load_start))
    return 0


def _progress(number: int, row: dict[str, Any]) -> str:
    def ms(value: float | None) -> str:
        return "missed" if value is None else f"{1000 * value:.0f} ms"

    return (
        f"round {number}: {row['fault']} {row['name']} at phase "
        f"{row['phase']:.2f}: down {ms(row['down_http'])} "
        f"(zk {ms(row['down_zk'])}), up {ms(row['up_http'])} "
        f"(zk {ms(row['up_zk'])})"
    )


if __name__ == "__main__":
    sys.exit(main())

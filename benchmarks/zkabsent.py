"""
A group member started without ZooKeeper, and a group started with it
(docs/groups.rst, "Starting without ZooKeeper").

``absent``: one real ``twistd -n sentinel`` agent knowing ``--instances``
instances on one redis-server, started while its ZooKeeper is refused (a
port bound and not listening), stopped (a real ZooKeeper under SIGSTOP:
it accepts and never answers) or unresolvable (a ``.invalid`` name).
Printed: seconds from the spawn to its HTTP answering and to every
instance checked in /instances, and what /healthz says then.

``group``: ``--agents`` agents knowing the same ``--instances``
instances (replicas 1), started at once against a running ZooKeeper.
Printed: the Redis connections each opened in its first ``--watch``
seconds (distinct local ports, sampled every 50 ms), against the
instances it observes once the view is applied: more is a burst.

``return``: the same group started while its ZooKeeper is stopped
(SIGSTOP), resumed after ``--outage`` seconds. Printed: the Redis
connections each agent holds at most meanwhile, the seconds from the
resume until every agent holds only its share, and the instance nodes
written meanwhile by an agent other than their primary at the end
(samples every 50 ms for ``--watch`` seconds after the resume); the
``group`` scene counts those too.

``restart``: one agent with a ``state_dir`` publishes every instance
alone and is killed (SIGKILL, its session left live); ZooKeeper is
stopped (SIGSTOP) at once, and the agent started again on the same
``state_dir`` beside a second agent joining the group, both checking
provisionally; ZooKeeper is resumed ``--outage`` seconds later (keep it
under the session timeout, 10 s, with the start: the session must
outlive it). The new process reattaches to its session, whose nodes
are its own, and the first view gives the joining agent about half of
them. Printed: the instance nodes ever missing in ``--watch`` seconds
after the resume (every node read every 20 ms) and the longest time
one was, and who writes them at the end.

    .venv/bin/python benchmarks/zkabsent.py [absent|group|return|restart|both]
        [--instances 20] [--agents 3] [--watch 6] [--outage 12] [--runs 1]
        [--checkout LABEL=PATH]
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
import urllib.error
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil
from kazoo.client import KazooClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (  # noqa: E402
    LOOPBACK,
    Agent,
    Instance,
    ZooKeeperServer,
    add_checkout_option,
    agent_config,
    load_average,
    machine,
    rows_in_turns,
    start_redis_servers,
    start_zookeeper,
    table,
    wait_until,
)

MODES = ("refused", "stopped", "unresolvable")
# Seconds an agent is given to have checked every instance.
CHECKED_WITHIN = 30.0


def absent_zookeeper(mode: str, started: ExitStack) -> str:
    """The ``zookeeper.hosts`` of a ZooKeeper that never answers, as `mode`."""
    if mode == "refused":
        held = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        started.callback(held.close)
        held.bind((LOOPBACK, 0))
        return f"{LOOPBACK}:{held.getsockname()[1]}"
    if mode == "stopped":
        zookeeper, client = start_zookeeper(started)
        client.stop()
        zookeeper.pause()
        started.callback(zookeeper.resume)
        return zookeeper.hosts
    return "zookeeper.invalid:2181"


def first_check(agent: Agent, names: int) -> tuple[float | None, float | None, str]:
    """
    Seconds from now to the agent's HTTP answering and to every instance
    checked, and its /healthz reasons then.
    """
    t0 = time.monotonic()
    answered: float | None = None
    while time.monotonic() - t0 < CHECKED_WITHIN:
        try:
            listed = agent.get("/instances", timeout=5.0)["instances"]
        except (OSError, ValueError):
            time.sleep(0.05)
            continue
        if answered is None:
            answered = time.monotonic() - t0
        if len(listed) == names and all(i["status"] for i in listed):
            health = healthz(agent)
            return answered, time.monotonic() - t0, health
        time.sleep(0.05)
    return answered, None, healthz(agent)


def healthz(agent: Agent) -> str:
    """The group's reason in /healthz (read from its 503 body), shortened."""
    try:
        body: Any = agent.get("/healthz", timeout=5.0)
    except urllib.error.HTTPError as error:
        body = json.loads(error.read())
    except (OSError, ValueError) as error:
        return str(error)
    reasons = [r for r in body.get("reasons", []) if r.startswith("group:")]
    return (reasons[0] if reasons else "no group reason")[:110]


def run_absent(
    args: argparse.Namespace, label: str, checkout: Path, number: int
) -> list[tuple[str, str]]:
    """One agent per ZooKeeper that never answers: time to its first checks."""
    rows = []
    for mode in MODES:
        with ExitStack() as started, tempfile.TemporaryDirectory() as tmp:
            server = start_redis_servers(1, started)[0]
            instances = [
                Instance(f"r{i:03d}", server.port) for i in range(args.instances)
            ]
            hosts = absent_zookeeper(mode, started)
            load = load_average()
            agent = Agent(
                Path(tmp),
                agent_config(instances, zookeeper=hosts, agent_id="alone"),
                pythonpath=checkout,
            )
            started.callback(agent.stop)
            answered, checked, health = first_check(agent, args.instances)
            rows.append(
                (
                    f"{label} run {number + 1}, ZooKeeper {mode} (load {load})",
                    f"HTTP {seconds(answered)}, all checked {seconds(checked)}",
                )
            )
            rows.append((f"{label} {mode}: /healthz then", health))
    return rows


def start_group(
    args: argparse.Namespace,
    started: ExitStack,
    workdir: Path,
    checkout: Path,
    instances: list[Instance],
    hosts: str,
) -> list[Agent]:
    """``--agents`` agents knowing `instances`, started at once."""
    agents = []
    for a in range(args.agents):
        config = agent_config(instances, zookeeper=hosts, agent_id=f"g{a}")
        agent = Agent(workdir, config, label=f"g{a}", pythonpath=checkout)
        started.callback(agent.stop)
        agents.append(agent)
    return agents


def run_group(
    args: argparse.Namespace, label: str, checkout: Path, number: int
) -> list[tuple[str, str]]:
    """Agents started together, ZooKeeper up: connections each opened."""
    with ExitStack() as started, tempfile.TemporaryDirectory() as tmp:
        zookeeper, client = start_zookeeper(started)
        server = start_redis_servers(1, started)[0]
        instances = [Instance(f"r{i:03d}", server.port) for i in range(args.instances)]
        load = load_average()
        agents = start_group(
            args, started, Path(tmp), checkout, instances, zookeeper.hosts
        )
        opened: list[set[int]] = [set() for _ in agents]
        writers = Writers(client)
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.watch:
            for ports, agent in zip(opened, agents, strict=True):
                ports.update(redis_ports(agent.process, server.port))
            writers.sample()
            time.sleep(0.05)
        observed = [len(agent.instances()) for agent in agents]
        return [
            (
                f"{label} run {number + 1}, {args.agents} agents x "
                f"{args.instances} known (load {load})",
                "opened "
                + ", ".join(str(len(p)) for p in opened)
                + f" in {args.watch:g} s; observe "
                + ", ".join(map(str, observed))
                + f"; nodes written by a non-primary: {writers.by_others()}",
            )
        ]


def run_return(
    args: argparse.Namespace, label: str, checkout: Path, number: int
) -> list[tuple[str, str]]:
    """Agents started together, ZooKeeper stopped, then resumed."""
    with ExitStack() as started, tempfile.TemporaryDirectory() as tmp:
        zookeeper, client = start_zookeeper(started)
        server = start_redis_servers(1, started)[0]
        instances = [Instance(f"r{i:03d}", server.port) for i in range(args.instances)]
        # Its session would not outlive the outage: read with a new one.
        client.stop()
        zookeeper.pause()
        started.callback(zookeeper.resume)
        load = load_average()
        agents = start_group(
            args, started, Path(tmp), checkout, instances, zookeeper.hosts
        )
        held = [0] * len(agents)
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.outage:
            for index, agent in enumerate(agents):
                held[index] = max(
                    held[index], len(redis_ports(agent.process, server.port))
                )
            time.sleep(0.05)
        writers = resumed_reader(zookeeper, started)
        resumed = time.monotonic()
        shares_at: float | None = None
        while time.monotonic() - resumed < args.watch:
            writers.sample()
            counts = [len(redis_ports(agent.process, server.port)) for agent in agents]
            if shares_at is None and sum(counts) == args.instances:
                shares_at = time.monotonic() - resumed
            time.sleep(0.05)
        return [
            (
                f"{label} run {number + 1}, {args.agents} agents x "
                f"{args.instances}, ZooKeeper stopped {args.outage:g} s (load {load})",
                "held at most "
                + ", ".join(map(str, held))
                + f"; shares only {seconds(shares_at)} after the resume;"
                f" nodes written by a non-primary: {writers.by_others()}",
            )
        ]


def run_restart(
    args: argparse.Namespace, label: str, checkout: Path, number: int
) -> list[tuple[str, str]]:
    """A restart on an inherited session, ZooKeeper stopped, a member joining."""
    with ExitStack() as started, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        zookeeper, client = start_zookeeper(started)
        server = start_redis_servers(1, started)[0]
        instances = [Instance(f"r{i:03d}", server.port) for i in range(args.instances)]
        state_dir = workdir / "state"
        state_dir.mkdir(mode=0o700)
        config = agent_config(
            instances, zookeeper=zookeeper.hosts, agent_id="g0"
        ).replace('agent_id = "g0"', f'agent_id = "g0"\nstate_dir = "{state_dir}"')
        first = Agent(workdir, config, label="g0-first", pythonpath=checkout)
        started.callback(first.stop)
        wait_until(
            lambda: len(Writers(client).nodes()) == args.instances,
            CHECKED_WITHIN,
            "the first process's nodes",
        )
        load = load_average()
        first.child.kill()
        client.stop()
        zookeeper.pause()
        started.callback(zookeeper.resume)
        paused = time.monotonic()
        again = Agent(workdir, config, label="g0-again", pythonpath=checkout)
        started.callback(again.stop)
        joining = agent_config(instances, zookeeper=zookeeper.hosts, agent_id="g1")
        joiner = Agent(workdir, joining, label="g1", pythonpath=checkout)
        started.callback(joiner.stop)
        time.sleep(max(0.0, args.outage - (time.monotonic() - paused)))
        reader = resumed_reader(zookeeper, started)
        resumed = time.monotonic()
        missing: dict[str, list[float]] = {}
        while time.monotonic() - resumed < args.watch:
            present = reader.nodes()
            for instance in instances:
                if instance.name not in present:
                    missing.setdefault(instance.name, []).append(time.monotonic())
            time.sleep(0.02)
        longest = max((m[-1] - m[0] for m in missing.values()), default=0.0)
        writers = Counter(reader.writer(name) for name in reader.nodes())
        written = ", ".join(
            f"{agent} {count}" for agent, count in sorted(writers.items())
        )
        return [
            (
                f"{label} run {number + 1}, {args.instances} instances, ZooKeeper"
                f" stopped {args.outage:g} s (load {load})",
                f"nodes ever missing {len(missing)} (longest {longest:.2f} s);"
                f" written by {written}",
            )
        ]


def resumed_reader(zookeeper: ZooKeeperServer, started: ExitStack) -> Writers:
    """
    `zookeeper` resumed, and read with a new session (the script's first
    would not outlive the outage); `started` closes it.
    """
    zookeeper.resume()
    client = KazooClient(hosts=zookeeper.hosts, timeout=10.0)
    client.start(timeout=10.0)
    started.callback(client.close)
    started.callback(client.stop)
    return Writers(client)


class Writers:
    """Which agents each instance node has named as its writer so far."""

    def __init__(self, client: KazooClient) -> None:
        self.client = client
        self.seen: dict[str, set[str]] = {}

    def nodes(self) -> list[str]:
        """The instance nodes there now."""
        path = "/sentinel/instances"
        return self.client.get_children(path) if self.client.exists(path) else []

    def sample(self) -> None:
        """Read every instance node once."""
        for name in self.nodes():
            self.seen.setdefault(name, set()).add(self.writer(name))

    def writer(self, name: str) -> str:
        data = self.client.get(f"/sentinel/instances/{name}")[0]
        return str(json.loads(data)["agent"])

    def by_others(self) -> str:
        """How many nodes an agent other than their last writer wrote."""
        final = {name: self.writer(name) for name in self.seen}
        wrong = sum(1 for name, seen in self.seen.items() if seen - {final[name]})
        return f"{wrong} of {len(final)}"


def redis_ports(process: psutil.Process, port: int) -> set[int]:
    """The local ports of `process`'s connections to the Redis on `port`."""
    try:
        connections = process.net_connections(kind="tcp")
    except psutil.Error:
        return set()
    return {c.laddr.port for c in connections if c.raddr and c.raddr.port == port}


def seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "scene",
        nargs="?",
        default="both",
        choices=("absent", "group", "return", "restart", "both"),
    )
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--watch", type=float, default=6.0)
    parser.add_argument("--outage", type=float, default=12.0)
    parser.add_argument("--runs", type=int, default=1)
    add_checkout_option(parser)
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    if args.scene in ("absent", "both"):
        rows += rows_in_turns(parser, args, run_absent)
    if args.scene in ("group", "both"):
        rows += rows_in_turns(parser, args, run_group)
    if args.scene == "return":
        rows += rows_in_turns(parser, args, run_return)
    if args.scene == "restart":
        rows += rows_in_turns(parser, args, run_restart)
    print(machine())
    print(
        table(rows, f"A group member started without ZooKeeper (load {load_average()})")
    )


if __name__ == "__main__":
    main()

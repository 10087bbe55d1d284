"""
How soon an instance node's verdict names its discovery member.

Three ``twistd -n sentinel`` agents share ``--instances`` names on a few
real redis-servers, ``zookeeper.replicas`` 2, ``zookeeper.discovery =
"nerve"`` (each instance its own service). A reader polls every
``--poll`` s each service's members (their ctime) and each instance
node (its ``member`` field and mtime), and for each member made, takes
the lag from its ctime to the mtime of the first version of its node
read that names it (`Members._named` promises "at once, not at the
node's refresh"). With each instance its own service, it also times
the spans in which a node names anything but the member its holder's
session has under that service. Three phases, ``--watch`` s each: the
group's start (``--stagger`` s watched between the agents' starts, so
that b and c take nodes over from a), after a ``kill -9`` of agent c
(takeovers), after a SIGHUP of agent a. ``--service cache`` puts every
member under one service, as ``tests/test_group_integration.py`` does.

    .venv/bin/python benchmarks/membername.py [--instances 30] [--watch 45] \\
        [--stagger 8] [--service cache] \\
        [--checkout before=../main-tree --checkout after=.]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from common import (
    Agent,
    Instance,
    add_checkout_option,
    agent_config,
    load_average,
    percentile,
    rows_in_turns,
    start_redis_servers,
    start_zookeeper,
)
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

ROOT = "/sentinel"
DISCOVERY = "/discovery"


class Reader:
    """Each member's ctime, and when its node first named it."""

    def __init__(
        self, client: KazooClient, names: list[str], services: list[str]
    ) -> None:
        self.client = client
        self.names = names
        self.services = services
        # member path -> (ctime s, phase)
        self.made: dict[str, tuple[float, str]] = {}
        # member path -> mtime s of the first node version read naming it
        self.named: dict[str, float] = {}
        self.phase = "start"
        # Per-instance services only: since when each node has named
        # something other than the member its holder's session has under
        # the instance's service, and the spans that ended (phase, s).
        self.wrong_since: dict[str, float] = {}
        self.wrong_spans: list[tuple[str, float]] = []

    def poll(self) -> None:
        """One reading of every service and every instance node."""
        client = self.client
        listings = {
            s: client.get_children_async(f"{DISCOVERY}/{s}") for s in self.services
        }
        nodes = {n: client.get_async(f"{ROOT}/instances/{n}") for n in self.names}
        stats = []
        for service, listing in listings.items():
            try:
                children = listing.get(timeout=10.0)
            except NoNodeError:
                continue
            for child in children:
                path = f"{DISCOVERY}/{service}/{child}"
                stats.append((service, path, client.exists_async(path)))
        # service -> {owner session: member path}
        held: dict[str, dict[int, str]] = {}
        for service, path, answer in stats:
            stat = answer.get(timeout=10.0)
            if stat is None:
                continue
            held.setdefault(service, {})[stat.ephemeralOwner] = path
            if path not in self.made:
                self.made[path] = (stat.ctime / 1000.0, self.phase)
        now = time.time()
        for name, answer in nodes.items():
            try:
                data, stat = answer.get(timeout=10.0)
            except NoNodeError:
                continue
            member = json.loads(data).get("member")
            if member is not None and member not in self.named:
                self.named[member] = stat.mtime / 1000.0
            if len(self.services) != len(self.names):
                continue
            own = held.get(name, {}).get(stat.ephemeralOwner)
            if own is not None and member != own:
                self.wrong_since.setdefault(name, now)
            elif name in self.wrong_since:
                began = self.wrong_since.pop(name)
                self.wrong_spans.append((self.phase, now - began))

    def rows(self, phase: str, now: float) -> list[tuple[str, str]]:
        """p50/max of the lags of the members made in `phase`."""
        lags = []
        unnamed = []
        for path, (ctime, made_in) in self.made.items():
            if made_in != phase:
                continue
            if path in self.named:
                lags.append(max(0.0, self.named[path] - ctime))
            else:
                unnamed.append(now - ctime)
        if not lags:
            figures = "none named"
        else:
            figures = (
                f"p50 {percentile(lags, 50):.2f} s, max {max(lags):.2f} s,"
                f" {sum(lag > 1.0 for lag in lags)} over 1 s"
            )
        return [
            (f"  {phase}: members made / named", f"{len(lags) + len(unnamed)}"
             f" / {len(lags)}"),
            (f"  {phase}: ctime to named", figures),
            (f"  {phase}: never named (ages)", ", ".join(
                f"{a:.0f}" for a in sorted(unnamed)) or "0"),
            (f"  {phase}: node not naming its holder's member",
             _spans([s for p, s in self.wrong_spans if p == phase])),
        ]  # fmt: skip


def _spans(spans: list[float]) -> str:
    """How many spans, and the longest."""
    if not spans:
        return "0"
    return f"{len(spans)} spans, longest {max(spans):.2f} s"


def one_run(
    args: argparse.Namespace, label: str, checkout: Path, number: int
) -> list[tuple[str, str]]:
    """Servers, agents, the three phases; the reader's lags."""
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as started:
        workdir = Path(tmp)
        servers = start_redis_servers(3, started)
        zookeeper, client = start_zookeeper(started)
        instances = [
            Instance(f"r{i:04d}", servers[i % len(servers)].port)
            for i in range(args.instances)
        ]
        names = [i.name for i in instances]
        settings: dict[str, float | int | str] = {
            "replicas": 2,
            "session_timeout": args.session_timeout,
            "discovery": "nerve",
            "discovery_root": DISCOVERY,
        }
        services = [args.service] if args.service else names
        reader = Reader(client, names, services)

        def watch(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                reader.poll()
                time.sleep(args.poll)

        agents = []
        load_start = load_average()
        for agent_id in "abc":
            text = agent_config(
                instances, zookeeper=zookeeper.hosts, zk_root=ROOT,
                agent_id=agent_id, zk_settings=settings, service=args.service,
            )  # fmt: skip
            agent = Agent(workdir, text, f"{agent_id}-{number}", pythonpath=checkout)
            started.callback(agent.stop)
            agents.append(agent)
            if args.stagger:
                agent.wait_ready()
                watch(args.stagger)
        for agent in agents:
            agent.wait_ready()
        watch(args.watch)
        reader.phase = "kill -9 c"
        os.kill(agents[2].pid, signal.SIGKILL)
        watch(args.watch)
        reader.phase = "SIGHUP a"
        os.kill(agents[0].pid, signal.SIGHUP)
        watch(args.watch)
        now = time.time()
        # Spans still open at the end count to the end.
        reader.wrong_spans += [
            (reader.phase, now - began) for began in reader.wrong_since.values()
        ]
        rows.append((f"{label} run {number + 1}", f"load {load_start} / "
                     f"{load_average()}"))  # fmt: skip
        for phase in ("start", "kill -9 c", "SIGHUP a"):
            rows += reader.rows(phase, now)
        for agent in agents:
            agent.stop()
    return rows


def main() -> None:
    """Parse the options, run each checkout ``--runs`` times, print the rows."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=30)
    parser.add_argument("--watch", type=float, default=45.0)
    parser.add_argument("--poll", type=float, default=0.1)
    parser.add_argument("--session-timeout", type=float, default=6.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--service", help="one discovery service for all")
    parser.add_argument(
        "--stagger",
        type=float,
        default=0.0,
        help="seconds watched between the agents' starts",
    )
    add_checkout_option(parser)
    args = parser.parse_args()
    for name, value in rows_in_turns(parser, args, one_run):
        print(f"{name:40} {value}")


if __name__ == "__main__":
    main()

"""
What the per-host shape costs ZooKeeper (DESIGN.md sections 7 and 8): one
agent per Redis host, thousands of them in one group, every one of them
reading the group's membership.

Real ``twistd -n sentinel`` agents (``--agents``, ``--instances`` each,
distinct names, one replica) on a few shared redis-servers, and
``--members`` simulated members: one kazoo session of this script makes,
for each, an agent node and a one-part catalog under ``{root}/catalogs``
as an agent does (a member's catalog and agent node held by one session
is all a reader asks of it). What each real agent costs ZooKeeper is
read from ZooKeeper's side of its connection: the bytes ZooKeeper sent it
(``ss``: the agent socket's ``bytes_received``) and the requests it sent
(``cons``: ``recved``), in three phases:

- steady: ``--steady`` s with nothing changing;
- one join and one leave: a simulated member made, then deleted, the
  bytes and requests each costs every agent (``--settle-wait`` s each);
- a rolling deploy: the simulated members replaced in turn,
  ``--batch`` at a time, ``--rate`` members a second, for ``--deploy``
  s: each replacement is a leave (agent node and catalog deleted) and a
  join (both made again, a new token), as a process without a
  state_dir; ``--shape session`` replaces only the catalog (a new token
  in the same session, the old one deleted after), as a process
  reattaching with its state_dir.

Figures are per real agent (median and max) and, plainly as an
extrapolation, times 2,000 agents: what the ensemble would send if each
of 2,000 agents paid what one of these paid.

    .venv/bin/python benchmarks/perhost.py [--agents 50] [--instances 10]
        [--members 2000] [--servers 4] [--steady 20] [--deploy 30]
        [--rate 15] [--batch 1] [--shape fresh|session]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (  # noqa: E402
    Agent,
    Instance,
    agent_config,
    load_average,
    machine,
    process_cpu_seconds,
    start_redis_servers,
    start_zookeeper,
    stop_on_sigterm,
    table,
)
from kazoo.client import KazooClient  # noqa: E402

from sentinel.catalog import Catalog, catalog_node_name, catalog_parts  # noqa: E402
from tests.servers import ZooKeeperServer  # noqa: E402

ROOT = "/sentinel"
EXTRAPOLATED_AGENTS = 2000


class ManyClientsZooKeeper(ZooKeeperServer):
    """ZooKeeper taking any number of connections from the loopback address."""

    def _more_config(self) -> str:
        return "maxClientCnxns=0\n"


class Simulated:
    """Members made by this script's one session, as agents make theirs."""

    def __init__(self, client: KazooClient, instances: int) -> None:
        self.client = client
        self.instances = instances
        self.tokens: dict[str, str] = {}
        self.made = 0

    def _catalog(self, agent: str, token: str) -> list[tuple[str, bytes]]:
        names = frozenset(f"{agent}-{i}" for i in range(self.instances))
        digest, parts = catalog_parts(Catalog(names, 1, 1))
        return [
            (
                f"{ROOT}/catalogs/"
                + catalog_node_name(agent, digest, token, index, len(parts)),
                part,
            )
            for index, part in enumerate(parts)
        ]

    def _agent_node(self, agent: str) -> tuple[str, bytes]:
        now = time.time()
        document = {
            "agent": agent,
            "pid": os.getpid(),
            "version": "sim",
            "started_at": now,
            "heartbeat_at": now,
            "interval": 1.0,
            "instances": [f"{agent}-{i}" for i in range(self.instances)],
        }
        return f"{ROOT}/agents/{agent}", json.dumps(document).encode()

    def join(self, agents: list[str]) -> None:
        """Make each member's agent node and catalog (a new token)."""
        waits = []
        for agent in agents:
            self.made += 1
            token = f"{self.made:08x}"
            self.tokens[agent] = token
            path, data = self._agent_node(agent)
            waits.append(self.client.create_async(path, data, ephemeral=True))
            for path, data in self._catalog(agent, token):
                waits.append(self.client.create_async(path, data, ephemeral=True))
        for wait in waits:
            wait.get(timeout=30)

    def leave(self, agents: list[str]) -> None:
        """Delete each member's catalog and agent node."""
        waits = []
        for agent in agents:
            token = self.tokens.pop(agent)
            for path, _ in self._catalog(agent, token):
                waits.append(self.client.delete_async(path))
            waits.append(self.client.delete_async(f"{ROOT}/agents/{agent}"))
        for wait in waits:
            wait.get(timeout=30)

    def reattach(self, agents: list[str]) -> None:
        """Each member's catalog under a new token, the old one deleted after."""
        waits = []
        old = []
        for agent in agents:
            old += self._catalog(agent, self.tokens[agent])
            self.made += 1
            self.tokens[agent] = f"{self.made:08x}"
            for path, data in self._catalog(agent, self.tokens[agent]):
                waits.append(self.client.create_async(path, data, ephemeral=True))
        for wait in waits:
            wait.get(timeout=30)
        for wait in [self.client.delete_async(path) for path, _ in old]:
            wait.get(timeout=30)


class Meter:
    """What ZooKeeper sent each agent's connection, and the requests it got."""

    def __init__(self, zookeeper: ZooKeeperServer, agents: list[Agent]) -> None:
        self.zookeeper = zookeeper
        self.pids = {agent.pid: agent for agent in agents}

    def sample(self) -> dict[int, tuple[int, int]]:
        """Per agent PID: (bytes ZooKeeper sent it, requests it sent)."""
        port = self.zookeeper.port
        out = subprocess.run(
            ["ss", "-tinpH", "state", "established", "dport", f"= :{port}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        by_port: dict[int, tuple[int, int]] = {}
        lines = out.splitlines()
        for head, info in zip(lines[::2], lines[1::2], strict=False):
            pid = re.search(r"pid=(\d+)", head)
            local = re.search(r"127\.0\.0\.1:(\d+)\s", head)
            received = re.search(r"bytes_received:(\d+)", info)
            if pid and local and received and int(pid[1]) in self.pids:
                by_port[int(local[1])] = (int(pid[1]), int(received[1]))
        cons = self.zookeeper.four_letter_word("cons", timeout=5.0).decode()
        requests = {
            int(m[1]): int(m[2])
            for m in re.finditer(r"/127\.0\.0\.1:(\d+)\[\d+\]\(.*?recved=(\d+)", cons)
        }
        return {
            pid: (received, requests.get(port, 0))
            for port, (pid, received) in by_port.items()
        }


def per_agent(
    before: dict[int, tuple[int, int]],
    after: dict[int, tuple[int, int]],
    seconds: float | None,
) -> tuple[list[float], list[float]]:
    """Each agent's bytes and requests between two samples (a second, if timed)."""
    scale = 1.0 / seconds if seconds else 1.0
    pids = sorted(set(before) & set(after))
    sent = [(after[p][0] - before[p][0]) * scale for p in pids]
    asked = [(after[p][1] - before[p][1]) * scale for p in pids]
    return sent, asked


def _figure(values: list[float], unit: str, per: str) -> str:
    if not values:
        return "no agent measured"
    mid, top = median(values), max(values)
    total = mid * EXTRAPOLATED_AGENTS
    return (
        f"{_size(mid, unit)}{per} median, {_size(top, unit)}{per} max;"
        f" x {EXTRAPOLATED_AGENTS:,}: {_size(total, unit)}{per}"
    )


def _size(value: float, unit: str) -> str:
    if unit != "B":
        return f"{value:,.1f}"
    for scale, name in ((1e9, "GB"), (1e6, "MB"), (1e3, "KB")):
        if value >= scale:
            return f"{value / scale:.2f} {name}"
    return f"{value:.0f} B"


def wait_members(agent: Agent, members: set[str], limit: float) -> float:
    """Seconds until the agent's view holds `members`; fails after `limit`."""
    started = time.monotonic()
    while True:
        try:
            seen = agent.get("/group?limit=1", timeout=10.0)["size"]
        except OSError:
            seen = -1
        if seen == len(members):
            return time.monotonic() - started
        if time.monotonic() - started > limit:
            view = agent.get(f"/group?limit={len(members) + 100}", timeout=30.0)
            missing = members - {m["agent"] for m in view["members"]}
            raise RuntimeError(
                f"{agent.log.stem}: {seen} members seen, not {len(members)}, in"
                f" {limit:g} s, missing {sorted(missing)[:5]}; /healthz:"
                f" {health(agent)}"
            )
        time.sleep(0.2)


def health(agent: Agent) -> str:
    """What the agent's /healthz says, whatever its status."""
    url = f"http://127.0.0.1:{agent.http_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=10.0) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as e:
        return str(e.read().decode())
    except OSError as e:
        return str(e)


def start_fleet(
    args: argparse.Namespace,
    started: ExitStack,
    workdir: Path,
    pythonpath: Path | None = None,
) -> tuple[ZooKeeperServer, KazooClient, Simulated, list[str], list[Agent]]:
    """
    ZooKeeper, the redis-servers, the ``--members`` simulated members
    (their names), and the ``--agents`` real agents, started at once;
    ``started`` stops them all.
    """
    zookeeper, client = start_zookeeper(started, ManyClientsZooKeeper())
    for path in (f"{ROOT}/agents", f"{ROOT}/catalogs"):
        client.ensure_path(path)
    servers = start_redis_servers(args.servers, started)
    simulated = Simulated(client, args.instances)
    names = [f"sim-{i:05d}" for i in range(args.members)]
    for start in range(0, len(names), 500):
        simulated.join(names[start : start + 500])
    agents: list[Agent] = []
    for a in range(args.agents):
        instances = [
            Instance(f"host-{a:04d}-{i}", servers[(a + i) % len(servers)].port)
            for i in range(args.instances)
        ]
        config = agent_config(
            instances,
            zookeeper=zookeeper.hosts,
            zk_root=ROOT,
            agent_id=f"host-{a:04d}",
        )
        agent = Agent(workdir, config, label=f"a{a:04d}", pythonpath=pythonpath)
        started.callback(agent.stop)
        agents.append(agent)
    return zookeeper, client, simulated, names, agents


def run(args: argparse.Namespace) -> None:
    with ExitStack() as started, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        zookeeper, _, simulated, names, agents = start_fleet(args, started, workdir)
        for agent in agents:
            agent.wait_ready(timeout=120.0)
        members = set(names) | {f"host-{a:04d}" for a in range(args.agents)}
        for agent in agents:
            wait_members(agent, members, 180.0)
        time.sleep(args.settle_wait)
        meter = Meter(zookeeper, agents)
        pids = [agent.pid for agent in agents]
        zk_pid = zookeeper.pid
        rows: list[tuple[str, str]] = [("load average at start", load_average())]

        def window(label: str, seconds: float, work: Any = None) -> None:
            before, t0 = meter.sample(), time.time()
            cpu0, zk0 = process_cpu_seconds(pids), process_cpu_seconds([zk_pid])
            if work is not None:
                work()
            else:
                time.sleep(seconds)
            taken = time.time() - t0
            after = meter.sample()
            cpu1, zk1 = process_cpu_seconds(pids), process_cpu_seconds([zk_pid])
            timed = None if work is not None and seconds == 0 else taken
            sent, asked = per_agent(before, after, timed)
            per = "/s" if timed else ""
            rows.append((f"{label}: bytes to each agent", _figure(sent, "B", per)))
            rows.append((f"{label}: requests of each agent", _figure(asked, "", per)))
            rows.append(
                (
                    f"{label}: CPU of each agent",
                    f"{100 * (cpu1 - cpu0) / taken / len(pids):.2f} % of a core"
                    f" over {taken:.1f} s (load {load_average()})",
                )
            )
            rows.append(
                (f"{label}: CPU of ZooKeeper", f"{100 * (zk1 - zk0) / taken:.1f} %")
            )

        window("steady", args.steady)

        def join() -> None:
            simulated.join(["sim-joining"])
            time.sleep(args.settle_wait)

        def leave() -> None:
            simulated.leave(["sim-joining"])
            time.sleep(args.settle_wait)

        window("one join", 0, join)
        window("one leave", 0, leave)

        replaced: list[float] = []

        def deploy() -> None:
            order = list(names)
            deadline = time.monotonic() + args.deploy
            next_at = time.monotonic()
            while order and time.monotonic() < deadline:
                batch, order = order[: args.batch], order[args.batch :]
                if args.shape == "session":
                    simulated.reattach(batch)
                else:
                    simulated.leave(batch)
                    simulated.join(batch)
                replaced.append(time.monotonic())
                next_at += len(batch) / args.rate
                time.sleep(max(0.0, next_at - time.monotonic()))

        window(f"rolling deploy ({args.shape})", args.deploy, deploy)
        rows.append(
            (
                "members replaced in the deploy",
                f"{len(replaced) * args.batch} in {args.deploy:g} s",
            )
        )
        rows.append(("load average at end", load_average()))
        wait_members(agents[0], members, 60.0)
        title = (
            f"perhost: {args.agents} agents x {args.instances} instances,"
            f" {args.members} simulated members, deploy {args.rate}/s"
            f" in batches of {args.batch} ({machine()})"
        )
        print(table(rows, title))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--steady", type=float, default=20.0)
    parser.add_argument("--deploy", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=15.0)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--settle-wait", type=float, default=3.0)
    parser.add_argument("--shape", choices=("fresh", "session"), default="fresh")
    args = parser.parse_args()
    stop_on_sigterm()
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

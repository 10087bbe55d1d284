"""
A discovery member kept for a new primary while its instance goes down.

``--agents`` agents (``twistd -n sentinel``, ``replicas = --replicas``,
``zookeeper.discovery = "serverset"`` or ``--form nerve``, each instance
its own service; rise 2, fall 3 or ``--fall``, at 1 s) share
``--instances`` instances over ``--servers`` real redis-servers. Once
every node says up and every endpoint is listed, one more agent joins and
takes its share over; as its agent node appears (or at its first
takeover, ``--kill-at takeover``), ``--kill`` servers are killed
(``SIGKILL``, or ``SIGSTOP`` with ``--signal stop``), so that the
instances moving to it go down around their move. ``--padding N`` other
endpoints' members in each service make the new primary's look for the
member it replaces last seconds, as at a service of thousands. A reader
reads every instance node and counts every service's members every
``--poll`` s (20 ms) for ``--after`` s. Printed, for each of ``--runs``
runs of each ``--checkout`` (interleaved, the same scene each time), for
the killed instances that moved (their node written by two agents) and
for those that stayed with their primary (the plain case: its member
goes with its verdict): the seconds their endpoint was still listed after
their node first said down (p50 / max), and how many of them over 0.5 s.

    .venv/bin/python benchmarks/keptdown.py --checkout before=PATH \\
        --checkout after=. [--fall 1 --padding 3000 --kill-at takeover] \\
        [--form nerve] [--signal stop] [--runs 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    Agent,
    Instance,
    add_checkout_option,
    agent_config,
    load_average,
    rows_in_turns,
    start_redis_servers,
    start_zookeeper,
    table,
    wait_until,
)
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from leave import summary

ROOT = "/keptdown"
DISCOVERY = "/discovery"
JOINER = "joiner"

# (seconds since the reader began, what was read)
History = list[tuple[float, Any]]


class Reader:
    """Every `poll` s: each instance node's status and writer, each service's list."""

    def __init__(self, hosts: str, names: list[str], poll: float, padding: int) -> None:
        self.names = names
        self.padding = padding
        self.poll_every = poll
        self.client = KazooClient(hosts=hosts, timeout=10.0)
        self.client.start(timeout=10.0)
        self.nodes: dict[str, History] = {n: [] for n in names}
        self.listed: dict[str, History] = {n: [] for n in names}
        self.began = time.monotonic()
        self.polls = 0
        self.last_poll = 0.0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def now(self) -> float:
        return time.monotonic() - self.began

    def run(self) -> None:
        while not self.stopping.wait(self.poll_every):
            try:
                self.poll()
            except Exception:
                pass  # ZooKeeper slow: nothing seen, nothing counted.

    def poll(self) -> None:
        client = self.client
        nodes = [(n, client.get_async(f"{ROOT}/instances/{n}")) for n in self.names]
        # A service's count of children, less the padding: no listing of
        # thousands of names 50 times a second.
        lists = [(n, client.exists_async(f"{DISCOVERY}/{n}")) for n in self.names]
        now = self.now()
        for name, read in nodes:
            try:
                document = json.loads(read.get(timeout=2.0)[0])
                value: Any = (document.get("status"), document.get("agent"))
            except NoNodeError:
                value = None
            self._record(self.nodes[name], now, value)
        for name, listing in lists:
            stat = listing.get(timeout=2.0)
            count = 0 if stat is None else stat.numChildren - self.padding
            self._record(self.listed[name], now, count)
        self.polls += 1
        self.last_poll = now

    @staticmethod
    def _record(history: History, now: float, value: Any) -> None:
        if not history or history[-1][1] != value:
            history.append((now, value))

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10.0)
        self.client.stop()
        self.client.close()


def pad(client: KazooClient, names: list[str], padding: int) -> None:
    """
    `padding` other endpoints' serverset members (persistent, no agent's)
    under each service: a new primary's look at it reads each, seconds in
    all, as at a service of thousands of members.
    """
    for name in names:
        data = json.dumps(
            {"serviceEndpoint": {"host": "127.0.0.2", "port": 1}, "status": "ALIVE"}
        ).encode()
        creates = [
            client.create_async(f"{DISCOVERY}/{name}/member_{9_000_000_000 + i}", data)
            for i in range(padding)
        ]
        for create in creates:
            create.get(timeout=60.0)


def listed_after_down(reader: Reader, name: str, since: float) -> float | None:
    """
    Seconds the endpoint of `name` was still listed after its node first
    said down (after `since`); None if it never said down.
    """
    down = next(
        (t for t, v in reader.nodes[name] if t >= since and v and v[0] == "down"),
        None,
    )
    if down is None:
        return None
    listed = reader.listed[name]
    last = 0.0
    for i, (_, count) in enumerate(listed):
        if count:
            ends = listed[i + 1][0] if i + 1 < len(listed) else reader.last_poll
            last = max(last, ends)
    return max(0.0, last - down)


def run(
    args: argparse.Namespace, label: str, version: Path, number: int
) -> list[tuple[str, str]]:
    """One group, one member joining as servers die; a row per figure."""
    with ExitStack() as started, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        servers = start_redis_servers(args.servers, started)
        zookeeper, client = start_zookeeper(started)
        instances = [
            Instance(f"r{i}", servers[i % len(servers)].port)
            for i in range(args.instances)
        ]
        names = [i.name for i in instances]
        settings = {"replicas": args.replicas, "discovery": args.form}

        def config(agent_id: str) -> str:
            return agent_config(
                instances,
                zookeeper=zookeeper.hosts,
                zk_root=ROOT,
                agent_id=agent_id,
                zk_settings=settings,
                fall=args.fall,
            )

        agents = []
        for n in range(args.agents):
            agent = Agent(workdir, config(f"agent-{n}"), f"agent-{n}", version)
            started.callback(agent.stop)
            agents.append(agent)
        for agent in agents:
            agent.wait_ready()

        def steady() -> bool:
            nodes = [client.get_async(f"{ROOT}/instances/{n}") for n in names]
            lists = [client.exists_async(f"{DISCOVERY}/{n}") for n in names]
            try:
                up = all(json.loads(r.get()[0])["status"] == "up" for r in nodes)
                stats = [r.get() for r in lists]
                return up and all(s is not None and s.numChildren == 1 for s in stats)
            except NoNodeError:
                return False

        wait_until(steady, 120.0, "every node up, every endpoint listed once")
        pad(client, names, args.padding)
        time.sleep(args.warmup)
        load = load_average()
        reader = Reader(zookeeper.hosts, names, args.poll, args.padding)
        started.callback(reader.stop)
        joiner = Agent(workdir, config(JOINER), JOINER, version)
        started.callback(joiner.stop)
        wait_until(
            lambda: client.exists(f"{ROOT}/agents/{JOINER}") is not None,
            60.0,
            "the joining agent's node",
            poll=0.01,
        )
        if args.kill_at == "takeover":

            def taken() -> bool:
                return any(
                    h and h[-1][1] is not None and h[-1][1][1] == JOINER
                    for h in reader.nodes.values()
                )

            wait_until(taken, 60.0, "a node taken over", poll=0.005)
        killed_at = reader.now()
        for server in servers[: args.kill]:
            if args.signal == "stop":
                server.pause()
                started.callback(server.resume)
            else:
                server.kill()
        ports = {server.port for server in servers[: args.kill]}
        killed = [i.name for i in instances if i.port in ports]
        time.sleep(args.after)
        reader.stop()
        load_after = load_average()
        if args.keep_logs:
            for agent in [*agents, joiner]:
                target = Path(args.keep_logs) / f"keptdown-{label}-{number}-"
                Path(str(target) + agent.log.name).write_bytes(agent.log.read_bytes())

        def moved(name: str) -> bool:
            # Written by two primaries while read: taken over (by the
            # joiner, or by an observer promoted as the group changed).
            return len({v[1] for _, v in reader.nodes[name] if v is not None}) > 1

        prefix = f"{label} run {number}"
        rows = [(f"{prefix}: load average", f"{load} -> {load_after}")]
        for what, group in (
            ("moved", [n for n in killed if moved(n)]),
            ("stayed", [n for n in killed if not moved(n)]),
        ):
            times = [listed_after_down(reader, n, killed_at) for n in group]
            known = [t for t in times if t is not None]
            never = len(times) - len(known)
            rows.append(
                (
                    f"{prefix}: killed, {what}, listed after down",
                    summary(known)
                    + f"; {len([t for t in known if t > 0.5])} over 0.5 s"
                    + (f", {never} never down" if never else ""),
                )
            )
        rows.append(
            (f"{prefix}: polls a second", f"{reader.polls / max(args.after, 1):.1f}")
        )
        return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add_checkout_option(parser)
    add("--agents", type=int, default=2, help="members before the join (2)")
    add("--instances", type=int, default=12)
    add("--servers", type=int, default=3)
    add("--kill", type=int, default=3, help="servers killed as it joins (3)")
    add("--kill-at", choices=("join", "takeover"), default="join")
    add("--signal", choices=("kill", "stop"), default="kill")
    add("--form", choices=("serverset", "nerve"), default="serverset")
    add("--replicas", type=int, default=1, help="zookeeper.replicas (1)")
    add("--fall", type=int, default=3, help="the agents' fall (3)")
    add("--padding", type=int, default=0, help="other members in each service")
    add("--poll", type=float, default=0.02, help="s between reads (0.02)")
    add("--warmup", type=float, default=3.0)
    add("--after", type=float, default=40.0, help="s watched after the join (40)")
    add("--runs", type=int, default=2)
    add("--keep-logs", metavar="DIR", help="copy the agents' logs there")
    args = parser.parse_args()
    rows = rows_in_turns(parser, args, run)
    title = (
        f"keptdown: {args.agents} agents + 1 joining, R = {args.replicas}, "
        f"{args.form}, {args.instances} instances on {args.servers} servers, "
        f"{args.kill} {'killed' if args.signal == 'kill' else 'stopped'} at the join"
    )
    print(table(rows, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())

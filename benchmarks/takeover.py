"""
A member joining a group, as a reader of ZooKeeper sees the instances it
takes over or comes to observe (DESIGN.md sections 2.6 and 8: a takeover is
no news of an instance, and one agent's own trouble never publishes a
healthy one down).

``--agents`` agents (``twistd -n sentinel``, ``replicas = 1`` or
``--replicas``, with ``--quorum``; rise 2 and fall 3 at 1 s) share
``--instances`` instances over ``--servers`` real redis-servers, all up.
Once every node says up, a reader reads every instance node every 50 ms
(its status and the agent that wrote it), and one more agent joins and
takes its share over. Its own trouble, at the takeover:

- ``--load N``: the joining agent pinned to one core (``taskset``) with N
  busy loops pinned there too, from before its start to the end;
- ``--blip S``: every redis-server frozen (SIGSTOP) for S s once the
  joining agent holds its first node: shorter than ``fall`` intervals, a
  blip that the instances' current primaries never publish (the
  instances that stay are the control).

``--kill K`` kills K redis-servers (SIGKILL) as the joining agent's node
appears, before any takeover: their instances must go down, those moved
within ``fall`` checks of the new primary. Printed, for each of ``--runs``
runs of each ``--checkout`` (interleaved, the same scene each time):

- the instances moved to the joining agent, and those of them whose node
  said down at least once though their server was never killed (healthy
  instances published down), and likewise of those that stayed; with
  ``--replicas`` above 1, those that stayed split into the ones the joiner
  came to observe (its opinion is one of the verdict's) and the rest;
- with ``--kill``, the seconds from the kill to the node saying down, for
  moved and stayed instances of the killed servers (p50 / max);
- with ``--replicas`` above 1, the instances one of whose documents said
  a status its ``observers``, ``quorum`` and ``uncounted`` contradict
  (`contradicts`), and those one of whose documents named an opinion
  ``uncounted``.

    .venv/bin/python benchmarks/takeover.py --checkout before=PATH
        --checkout after=. [--load 3] [--blip 1.2] [--kill 1] [--runs 3]
        [--replicas 2 --quorum 1]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import leave
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
from kazoo.exceptions import NoNodeError
from leave import summary

ROOT = "/takeover"
JOINER = "joiner"


class Reader(leave.Reader):
    """
    ``leave.py``'s reader, every `POLL` s, keeping what each instance node
    says (its status, the agent that wrote it, and whether the joining
    agent is among its observers) rather than who holds it, under `root`.
    """

    root = ROOT

    def poll(self) -> None:
        reads = [
            (n, self.client.get_async(f"{self.root}/instances/{n}")) for n in self.names
        ]
        now = self.now()
        for name, read in reads:
            try:
                data, _ = read.get(timeout=2.0)
                document = json.loads(data)
                value: Any = (
                    document.get("status"),
                    document.get("agent"),
                    JOINER in (document.get("observers") or {}),
                    contradicts(document),
                    bool(document.get("uncounted")),
                )
            except NoNodeError:
                value = None
            history = self.nodes[name]
            if not history or history[-1][1] != value:
                history.append((now, value))
        self.polls += 1


def contradicts(document: dict[str, Any]) -> bool:
    """
    Whether a schema-2 document's status is not what its ``observers``,
    ``quorum`` and ``uncounted`` (missing: none) say to a reader: down
    exactly when the down opinions it counted reach its quorum.
    """
    observers = document.get("observers")
    if not isinstance(observers, dict):
        return False
    uncounted = document.get("uncounted") or []
    counted = [a for a, s in observers.items() if s == "down" and a not in uncounted]
    return (document.get("status") == "down") != (
        len(counted) >= document.get("quorum", 1)
    )


def documents_row(prefix: str, reader: Reader, since: float) -> tuple[str, str]:
    """
    The instances one of whose documents read since `since` contradicted
    its observers (`contradicts`), and those one of which named an
    opinion ``uncounted``.
    """

    def said(name: str, field: int) -> bool:
        return any(
            t >= since and v is not None and v[field] for t, v in reader.nodes[name]
        )

    contradicting = [n for n in reader.names if said(n, 3)]
    uncounting = [n for n in reader.names if said(n, 4)]
    return (
        f"{prefix}: status contradicts observers",
        f"{len(contradicting)} instances; {len(uncounting)} said an opinion uncounted",
    )


def busy_loops(count: int, cpu: int, started: ExitStack) -> None:
    """`count` processes spinning on core `cpu`, each stopped by PID."""
    for _ in range(count):
        spinner = subprocess.Popen(
            ["taskset", "-c", str(cpu), sys.executable, "-c", "while True: pass"]
        )
        started.callback(_end, spinner)


def _end(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait(10.0)


@dataclass
class Group:
    """A group started by `start_group`, every node up, its reader reading."""

    servers: list[Any]
    instances: list[Instance]
    client: Any
    agents: list[Agent]
    reader: Reader
    # The config of an agent of the group, by its id.
    config: Callable[[str], str]
    load: str

    @property
    def names(self) -> list[str]:
        return [i.name for i in self.instances]


def start_group(
    args: argparse.Namespace,
    version: Path,
    started: ExitStack,
    workdir: Path,
    root: str,
    reader: type[Reader],
    settings: dict[str, int],
) -> Group:
    """
    ``args.agents`` agents of `version` under `root` (``zookeeper``
    `settings`, ``args.timeout``) sharing ``args.instances`` instances
    over ``args.servers`` redis-servers, all stopped by `started`; once
    every node says up and ``args.warmup`` s more, a `reader` reading.
    """
    servers = start_redis_servers(args.servers, started)
    zookeeper, client = start_zookeeper(started)
    instances = [
        Instance(f"r{i}", servers[i % len(servers)].port) for i in range(args.instances)
    ]
    names = [i.name for i in instances]

    def config(agent_id: str) -> str:
        return agent_config(
            instances,
            timeout=args.timeout,
            zookeeper=zookeeper.hosts,
            zk_root=root,
            agent_id=agent_id,
            zk_settings=settings,
        )

    agents = []
    for n in range(args.agents):
        agent = Agent(workdir, config(f"agent-{n}"), f"agent-{n}", version)
        started.callback(agent.stop)
        agents.append(agent)
    for agent in agents:
        agent.wait_ready()

    def all_up() -> bool:
        reads = [client.get_async(f"{root}/instances/{n}") for n in names]
        try:
            return all(json.loads(r.get()[0])["status"] == "up" for r in reads)
        except NoNodeError:
            return False

    wait_until(all_up, 120.0, "every node up")
    time.sleep(args.warmup)
    reading = reader(zookeeper.hosts, names)
    started.callback(reading.stop)
    time.sleep(1.0)
    return Group(servers, instances, client, agents, reading, config, load_average())


def run(
    args: argparse.Namespace, label: str, version: Path, number: int
) -> list[tuple[str, str]]:
    """One group, one member joining; a row per figure."""
    with ExitStack() as started, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        settings = {"replicas": args.replicas}
        if args.quorum is not None:
            settings["quorum"] = args.quorum
        scene = start_group(args, version, started, workdir, ROOT, Reader, settings)
        servers, instances, names = scene.servers, scene.instances, scene.names
        client, reader, config, load = (
            scene.client,
            scene.reader,
            scene.config,
            scene.load,
        )
        wrapper: list[str] = []
        if args.load:
            wrapper = ["taskset", "-c", str(args.cpu)]
            busy_loops(args.load, args.cpu, started)
        joined_at = reader.now()
        joiner = Agent(workdir, config(JOINER), JOINER, version, wrapper=wrapper)
        started.callback(joiner.stop)
        joiner.wait_ready()
        killed: set[str] = set()
        killed_at = 0.0
        if args.kill:
            wait_until(
                lambda: client.exists(f"{ROOT}/agents/{JOINER}") is not None,
                60.0,
                "the joining agent's node",
                poll=0.01,
            )
            killed_at = reader.now()
            for server in servers[: args.kill]:
                server.kill()
            ports = {server.port for server in servers[: args.kill]}
            killed = {i.name for i in instances if i.port in ports}
        if args.blip:

            def holds_one() -> bool:
                return any(
                    h and h[-1][1] is not None and h[-1][1][1] == JOINER
                    for h in reader.nodes.values()
                )

            wait_until(holds_one, 60.0, "a node taken over", poll=0.01)
            for server in servers[args.kill :]:
                server.pause()
            time.sleep(args.blip)
            for server in servers[args.kill :]:
                server.resume()
        time.sleep(args.after)
        until = reader.now()
        reader.stop()
        load_after = load_average()
        if args.keep_logs:
            for agent in [*scene.agents, joiner]:
                target = Path(args.keep_logs) / f"takeover-{label}-{number}-"
                Path(str(target) + agent.log.name).write_bytes(agent.log.read_bytes())

        def moved(name: str) -> bool:
            return any(v is not None and v[1] == JOINER for _, v in reader.nodes[name])

        def down_at(name: str) -> float | None:
            return next(
                (
                    t
                    for t, v in reader.nodes[name]
                    if t >= joined_at and v is not None and v[0] == "down"
                ),
                None,
            )

        def observed(name: str) -> bool:
            return any(v is not None and v[2] for _, v in reader.nodes[name])

        went = [n for n in names if moved(n)]
        stayed = [n for n in names if not moved(n)]
        healthy_down = [n for n in went if n not in killed and down_at(n) is not None]
        control_down = [n for n in stayed if n not in killed and down_at(n) is not None]
        watched = [n for n in stayed if n not in killed and observed(n)]
        watched_down = [n for n in watched if n in control_down]
        missing = [
            n for n in names if any(v is None for t, v in reader.nodes[n] if t >= 0)
        ]
        rows = [
            (f"{label} run {number}: load average", f"{load} -> {load_after}"),
            (
                f"{label} run {number}: moved to the joiner",
                f"{len(went)} of {len(names)}",
            ),
            (
                f"{label} run {number}: healthy, published down",
                f"{len(healthy_down)} of {len([n for n in went if n not in killed])}"
                f" moved, {len(control_down)} of "
                f"{len([n for n in stayed if n not in killed])} stayed",
            ),
            (f"{label} run {number}: node ever missing", str(len(missing))),
        ]
        if args.replicas > 1:
            rows.append(documents_row(f"{label} run {number}", reader, joined_at))
        if args.replicas > 1:
            rows.insert(
                3,
                (
                    f"{label} run {number}: healthy, observed, down",
                    f"{len(watched_down)} of {len(watched)} stayed that the "
                    "joiner observes",
                ),
            )
        if args.kill:
            for what, group in (("moved", went), ("stayed", stayed)):
                times = [
                    t - killed_at
                    for n in group
                    if n in killed and (t := down_at(n)) is not None
                ]
                never = len([n for n in group if n in killed]) - len(times)
                rows.append(
                    (
                        f"{label} run {number}: killed, {what}, kill to down",
                        summary(times) + (f", {never} never down" if never else ""),
                    )
                )
        rows.append(
            (
                f"{label} run {number}: polls a second",
                f"{reader.polls / max(until, 1e-9):.1f}",
            )
        )
        return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add_checkout_option(parser)
    add("--agents", type=int, default=2, help="members before the join (2)")
    add("--instances", type=int, default=300)
    add("--servers", type=int, default=6)
    add("--timeout", type=float, default=0.5, help="the agents' timeout (0.5)")
    add("--replicas", type=int, default=1, help="zookeeper.replicas (1)")
    add("--quorum", type=int, default=None, help="zookeeper.quorum (its default)")
    add("--load", type=int, default=0, help="busy loops on the joiner's core")
    add("--cpu", type=int, default=1, help="the core of --load (1)")
    add("--blip", type=float, default=0.0, help="s every server is frozen")
    add("--kill", type=int, default=0, help="servers killed as it joins")
    add("--warmup", type=float, default=3.0)
    add("--after", type=float, default=10.0, help="s watched after the join (10)")
    add("--runs", type=int, default=2)
    add("--keep-logs", metavar="DIR", help="copy the agents' logs there")
    args = parser.parse_args()
    rows = rows_in_turns(parser, args, run)
    title = (
        f"takeover: {args.agents} agents + 1 joining, R = {args.replicas}, "
        + (f"quorum {args.quorum}, " if args.quorum is not None else "")
        + f"{args.instances} instances on {args.servers} servers"
        + (f", {args.load} busy loops on its core" if args.load else "")
        + (f", servers frozen {args.blip:g} s" if args.blip else "")
        + (f", {args.kill} server(s) killed" if args.kill else "")
    )
    print(table(rows, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())

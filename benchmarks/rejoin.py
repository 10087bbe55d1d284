"""
A member of a group back from a pause longer than its session timeout, as
a reader of ZooKeeper sees it (DESIGN.md section 8: the primary is the
only writer of an instance's node).

Three agents (``twistd -n sentinel``, ``g1``..``g3``, ``replicas = 2``,
serverset discovery, one service per instance) share ``--instances``
instances over ``--servers`` real redis-servers, all up. Once every node
and member is there, a reader polls every instance node (the session
holding it and the agent its data names) and every instance's discovery
members (the sessions holding them) as often as it can, every 50 ms at
most, and ``g1`` is stopped (SIGSTOP) for ``--pause`` s, longer than the
session timeout: ZooKeeper expires its session, the others take its
instances over. Then SIGCONT, and the reader goes on ``--after`` s.
Printed, for each of ``--runs`` runs of each ``--checkout`` (in turns),
counted from the SIGCONT:

- instance nodes that changed holder more than once (written by two
  agents' sessions in turn: a fight; one move is one change), and the
  changes of holder altogether;
- instances whose members changed more than once (a member deleted and
  made again, or two primaries' in turn), and those with none listed at
  some poll, or two;
- instance nodes whose data named a primary again after another (the
  verdict's writer flipping), and nodes that said down (every server is
  up: any down is false);
- when the last change was seen (p50 and max over the nodes that
  changed): how long until each settled;
- the lines of the others' logs after the SIGCONT that say a node was
  deleted behind their back or is held by another session.

    .venv/bin/python benchmarks/rejoin.py --checkout before=PATH
        --checkout after=. [--instances 300] [--servers 3] [--pause 12]
        [--session-timeout 4] [--after 15] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from itertools import pairwise
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import leave  # noqa: E402
from common import (  # noqa: E402
    Agent,
    Instance,
    add_checkout_option,
    load_average,
    machine,
    rows_in_turns,
    start_redis_servers,
    start_zookeeper,
    table,
    wait_until,
)
from kazoo.exceptions import NoNodeError  # noqa: E402

ROOT = "/rejoin"
DISCOVERY = "/rejoin-discovery"
AGENTS = ("g1", "g2", "g3")
History = leave.History


def config(
    args: argparse.Namespace, hosts: str, instances: list[Instance], agent: str
) -> str:
    """The agent's TOML: every instance, replicas 2, serverset members."""
    lines = [
        f'agent_id = "{agent}"',
        "interval = 1.0",
        "timeout = 0.5",
        "",
        "[zookeeper]",
        f'hosts = "{hosts}"',
        f'root = "{ROOT}"',
        "replicas = 2",
        f"session_timeout = {args.session_timeout!r}",
        'discovery = "serverset"',
        f'discovery_root = "{DISCOVERY}"',
        "",
    ]
    for instance in instances:
        lines += [
            "[[redis]]",
            f'name = "{instance.name}"',
            'host = "127.0.0.1"',
            f"port = {instance.port}",
            "",
        ]
    return "\n".join(lines)


class Reader(leave.Reader):
    """
    ``leave.py``'s reader, every `leave.POLL` s at most, keeping for each
    instance what its node says (the session holding it, the agent its
    data names, its status) and the sessions holding its members (one
    service per instance), under this script's paths.
    """

    def poll(self) -> None:
        client = self.client
        reads = [(n, client.get_async(f"{ROOT}/instances/{n}")) for n in self.names]
        lists = [(n, client.get_children_async(f"{DISCOVERY}/{n}")) for n in self.names]
        now = self.now()
        for name, read in reads:
            try:
                data, stat = read.get(timeout=5.0)
                document = json.loads(data)
                value: Any = (
                    stat.ephemeralOwner,
                    document.get("agent"),
                    document.get("status"),
                )
            except NoNodeError:
                value = None
            changed(self.nodes[name], now, value)
        for name, listing in lists:
            try:
                children = listing.get(timeout=5.0)
            except NoNodeError:
                children = []
            paths = [f"{DISCOVERY}/{name}/{c}" for c in children]
            asks = [(p, client.exists_async(p)) for p in paths if p not in self.owners]
            for path, ask in asks:
                stat = ask.get(timeout=5.0)
                self.owners[path] = stat.ephemeralOwner if stat else 0
            held = tuple(sorted(self.owners.get(p, 0) for p in paths))
            changed(self.members[name], now, held)
        self.polls += 1


def changed(history: History, now: float, value: Any) -> None:
    """Keep `value` seen at `now` if it is not the last one kept."""
    if not history or history[-1][1] != value:
        history.append((now, value))


def after(history: History, since: float) -> History:
    """The changes seen after `since`, with the value before them first."""
    before = [entry for entry in history if entry[0] < since][-1:]
    return before + [entry for entry in history if entry[0] >= since]


def flips(values: list[Any], key: Callable[[Any], Any]) -> int:
    """How many times `key(value)` came back to one it had before."""
    seen: list[Any] = []
    count = 0
    for value in values:
        k = key(value)
        if seen and seen[-1] == k:
            continue
        if k in seen:
            count += 1
        seen.append(k)
    return count


def spread(seconds: list[float]) -> str:
    if not seconds:
        return "none"
    ordered = sorted(seconds)
    return f"p50 {ordered[len(ordered) // 2]:.2f} s, max {ordered[-1]:.2f} s"


def run(
    args: argparse.Namespace, label: str, checkout: Path, number: int
) -> list[tuple[str, str]]:
    """One group, g1 paused past its session timeout; a row per figure."""
    with (
        ExitStack() as started,
        tempfile.TemporaryDirectory(prefix="rejoin-bench-") as tmp,
    ):
        workdir = Path(tmp)
        servers = start_redis_servers(args.servers, started)
        zookeeper, client = start_zookeeper(started)
        instances = [
            Instance(f"r{i}", servers[i % len(servers)].port)
            for i in range(args.instances)
        ]
        names = [i.name for i in instances]
        agents = {}
        for agent_id in AGENTS:
            agent = Agent(
                workdir,
                config(args, zookeeper.hosts, instances, agent_id),
                agent_id,
                checkout,
                open_files=args.instances * 2 + 512,
            )
            started.callback(agent.stop)
            agents[agent_id] = agent
        for agent in agents.values():
            agent.wait_ready()

        def settled() -> bool:
            try:
                up = 0
                for name in names:
                    data, _ = client.get(f"{ROOT}/instances/{name}")
                    up += json.loads(data).get("status") == "up"
                    if not client.get_children(f"{DISCOVERY}/{name}"):
                        return False
                return up == len(names)
            except NoNodeError:
                return False

        wait_until(settled, 120.0, "every instance up, with its member", poll=1.0)
        time.sleep(args.warmup)
        reader = Reader(zookeeper.hosts, names)
        started.callback(reader.stop)
        time.sleep(2.0)
        g1 = agents["g1"]
        load_at_stop = load_average()
        os.kill(g1.pid, signal.SIGSTOP)
        time.sleep(args.pause)
        os.kill(g1.pid, signal.SIGCONT)
        resumed = reader.now()
        logs_at = {a: agents[a].log.stat().st_size for a in ("g2", "g3")}
        time.sleep(args.after)
        load_at_end = load_average()
        reader.stop()
        polls_per_s = reader.polls / reader.now()
        fights = changes = member_churn = member_wrong = agent_flips = downs = 0
        settle_nodes: list[float] = []
        settle_members: list[float] = []
        for name in names:
            nodes = after(reader.nodes[name], resumed)
            holders = [value[0] if value else None for _, value in nodes]
            moves = sum(1 for a, b in pairwise(holders) if a != b)
            changes += moves
            fights += moves > 1
            agent_flips += (
                flips([value for _, value in nodes if value], lambda v: v[1]) > 0
            )
            downs += any(value and value[2] == "down" for _, value in nodes)
            if len(nodes) > 1:
                settle_nodes.append(nodes[-1][0] - resumed)
            members = after(reader.members[name], resumed)
            member_churn += len(members) > 2
            member_wrong += any(len(value) != 1 for _, value in members[1:])
            if len(members) > 1:
                settle_members.append(members[-1][0] - resumed)
        if args.keep_logs is not None:
            kept = Path(args.keep_logs, f"{label}-{number + 1}")
            kept.mkdir(parents=True, exist_ok=True)
            for agent_id, agent in agents.items():
                (kept / f"{agent_id}.log").write_bytes(agent.log.read_bytes())
            (kept / "resumed").write_text(f"{resumed}\n")
            churned = {
                name: (reader.nodes[name], reader.members[name])
                for name in names
                if len(after(reader.members[name], resumed)) > 2
            }
            (kept / "churned.txt").write_text(
                "".join(f"{n} {h!r}\n" for n, h in churned.items())
            )
        fought_lines = 0
        for agent_id, size in logs_at.items():
            with agents[agent_id].log.open("rb") as log:
                log.seek(size)
                text = log.read().decode("utf-8", "replace")
            fought_lines += sum(
                1
                for line in text.splitlines()
                if "behind the agent's back" in line
                or "waiting for it to end" in line
                or ", waiting" in line
            )
        tag = f"{label} #{number + 1}"
        return [
            (f"{tag} load at stop / end", f"{load_at_stop} / {load_at_end}"),
            (f"{tag} reader polls a second", f"{polls_per_s:.1f}"),
            (
                f"{tag} nodes held by two agents in turn",
                f"{fights} ({changes} changes of holder)",
            ),
            (f"{tag} nodes whose writer flipped back", str(agent_flips)),
            (f"{tag} nodes that said down", str(downs)),
            (f"{tag} members changed more than once", str(member_churn)),
            (f"{tag} instances with 0 or 2 members at a poll", str(member_wrong)),
            (f"{tag} nodes settled after", spread(settle_nodes)),
            (f"{tag} members settled after", spread(settle_members)),
            (f"{tag} others' log lines of a fight", str(fought_lines)),
        ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--servers", type=int, default=3)
    parser.add_argument("--pause", type=float, default=12.0)
    parser.add_argument("--session-timeout", type=float, default=4.0)
    parser.add_argument("--after", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the agents' logs")
    add_checkout_option(parser)
    args = parser.parse_args()
    print(machine())
    rows = rows_in_turns(parser, args, run)
    print(table(rows, "a member back from a pause past its session timeout"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

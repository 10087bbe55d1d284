"""
A group of agents of two versions at steady state (docs/operations.rst).

Three ``twistd -n sentinel`` agents share ``--instances`` names on real
redis-servers (healthy throughout), ``zookeeper.replicas`` 2,
``zookeeper.quorum`` ``--quorum``, serverset discovery (``--form nerve``:
each instance its own nerve service). ``--agent ID=PATH`` runs agent a,
b or c from another checkout (an older version's export): the same
group with 0, 1 or 2 agents of it. Once every node and endpoint is
there once, ZooKeeper's transactions (its zxid, ``srvr``) are counted
over ``--window`` s, each instance node's and member's writes with
them, and a reader polls every ``--poll`` s for instance nodes missing,
statuses not ``up``, and endpoints listed twice or by none.

    .venv/bin/python benchmarks/mixedsteady.py [--instances 60] \\
        [--quorum 1] [--window 30] [--agent a=../old --agent b=../old]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from common import (
    Agent,
    Instance,
    add_agent_checkout_option,
    add_checkout_option,
    agent_checkout,
    agent_config,
    load_average,
    rows_in_turns,
    start_redis_servers,
    start_zookeeper,
    table,
)
from coverdup import DISCOVERY, endpoints
from group import zxid
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

ROOT = "/sentinel"


def statuses(client: KazooClient, names: list[str]) -> dict[str, tuple[str, int]]:
    """Each present instance node's status and version (its writes)."""
    asked = {n: client.get_async(f"{ROOT}/instances/{n}") for n in names}
    found = {}
    for name, answer in asked.items():
        try:
            data, stat = answer.get(timeout=10.0)
        except NoNodeError:
            continue
        found[name] = (json.loads(data).get("status", "?"), stat.version)
    return found


def one_run(
    args: argparse.Namespace, label: str, checkout: Path, number: int
) -> list[tuple[str, str]]:
    """Servers, the three agents, the steady window; the reader's counts."""
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as started:
        workdir = Path(tmp)
        servers = start_redis_servers(4, started)
        zookeeper, client = start_zookeeper(started)
        instances = [
            Instance(f"r{i:04d}", servers[i % len(servers)].port)
            for i in range(args.instances)
        ]
        names = [i.name for i in instances]
        settings: dict[str, float | int | str] = {
            "replicas": 2,
            "quorum": args.quorum,
            "session_timeout": 10.0,
            "discovery": args.form,
            "discovery_root": DISCOVERY,
        }
        agents = []
        for agent_id in ("a", "b", "c"):
            text = agent_config(
                instances, zookeeper=zookeeper.hosts, zk_root=ROOT,
                agent_id=agent_id, zk_settings=settings,
            )  # fmt: skip
            agent = Agent(
                workdir,
                text,
                f"{agent_id}-{number}",
                pythonpath=agent_checkout(args, agent_id, checkout),
            )
            started.callback(agent.stop)
            agent.wait_ready()
            agents.append(agent)
        expected = {
            n: f"127.0.0.1:{i.port}" for n, i in zip(names, instances, strict=True)
        }

        def steady() -> bool:
            listed = endpoints(client, names)
            up = statuses(client, names)
            return all(listed[n] == [expected[n]] for n in names) and all(
                up.get(n, ("", 0))[0] == "up" for n in names
            )

        deadline = time.monotonic() + 120.0
        while not steady():
            if time.monotonic() > deadline:
                raise RuntimeError("the group never listed each endpoint once")
            time.sleep(0.5)
        time.sleep(args.settle)
        load_start = load_average()
        first = zxid(zookeeper)
        versions_before = statuses(client, names)
        owners_before: dict[str, list[int]] = {}
        endpoints(client, names, owners_before)
        missing = not_up = twice = unlisted = polls = 0
        end = time.monotonic() + args.window
        while time.monotonic() < end:
            now = statuses(client, names)
            listed = endpoints(client, names)
            polls += 1
            missing += sum(n not in now for n in names)
            not_up += sum(now[n][0] != "up" for n in now)
            twice += sum(len(listed[n]) > len(set(listed[n])) for n in names)
            unlisted += sum(not listed[n] for n in names)
            time.sleep(args.poll)
        last = zxid(zookeeper)
        versions_after = statuses(client, names)
        owners_after: dict[str, list[int]] = {}
        endpoints(client, names, owners_after)
        rewritten = sum(
            versions_after.get(n, ("", -1))[1] != versions_before.get(n, ("", -1))[1]
            for n in names
        )
        members_moved = sum(owners_after[n] != owners_before[n] for n in names)
        load_end = load_average()
        for agent in agents:
            agent.stop()
    mix = ", ".join(
        f"{a}={'other' if agent_checkout(args, a, checkout) != checkout else label}"
        for a in "abc"
    )
    return [
        (f"{label} run {number + 1}: agents", mix),
        ("  ZooKeeper transactions per second", f"{(last - first) / args.window:.2f}"),
        ("  instance nodes rewritten in the window", f"{rewritten} of {len(names)}"),
        ("  endpoints whose member changed", str(members_moved)),
        ("  node-polls missing / not up", f"{missing} / {not_up}"),
        ("  service-polls twice / unlisted", f"{twice} / {unlisted}"),
        ("  polls", str(polls)),
        ("  load (start / end)", f"{load_start} / {load_end}"),
    ]


def main() -> None:
    """Parse the options, run each checkout ``--runs`` times, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=60)
    parser.add_argument("--quorum", type=int, default=1)
    parser.add_argument("--form", choices=("serverset", "nerve"), default="serverset")
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--poll", type=float, default=0.2)
    parser.add_argument("--runs", type=int, default=1)
    add_checkout_option(parser)
    add_agent_checkout_option(parser)
    args = parser.parse_args()
    rows = rows_in_turns(parser, args, one_run)
    print(table(rows, "a group of two versions at steady state"))


if __name__ == "__main__":
    main()

"""
``deleteall`` of a group's root and of its discovery root together, as an
operator might, while the agents run: how soon each endpoint is listed
again, whether any is listed twice, and whether the instance nodes move
between the agents (their sessions live on: nothing should move).

One ZooKeeper, two redis-servers holding N instances (a discovery
service each), three agents (``replicas = 2``, nerve or serverset
members, a ``state_dir`` each). Once every service lists a member,
``--rounds`` rounds, ``--gap`` s apart, each deleting both roots at once
from two threads, leaves first, level by level with the deletes of a
level sent together, again while the agents make nodes under them (as
``zkCli``'s ``deleteall``, which is not atomic); then ``--after`` s more.
A poller reads every service's members (and who holds each) and every
instance node (holder, status, ready) every 20 ms. Reported per run:

- unlisted: endpoints whose instance node was there, up and ready, while
  its service listed no member, for more than 1 s (count, longest);
- twice: services a poll found with two members or more (count, longest);
- moves back: an instance node's holder going back to one that held it
  before (A, B, A), counted over the instances;
- read down: instances a poll found published down (must be 0);

with the load average after each run.

    .venv/bin/python benchmarks/deleteall.py [--instances 60] [--rounds 3]
        [--runs 1] [--form nerve] [--checkout before=PATH --checkout after=.]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections import defaultdict
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
from kazoo.exceptions import NoNodeError, NotEmptyError

POLL = 0.02
ROOTS = ("/sentinel", "/discovery")
# An endpoint unlisted for longer than this while its node is up counts.
UNLISTED_AFTER = 1.0

# A poll: per instance, its service's members (each "name@holder") or None
# (no service node), and its node's (holder, status, ready) or None.
Poll = tuple[float, dict[str, list[str] | None], dict[str, tuple[Any, ...] | None]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gap", type=float, default=3.0)
    parser.add_argument("--after", type=float, default=35.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--form", choices=("nerve", "serverset"), default="nerve")
    add_checkout_option(parser)
    args = parser.parse_args()
    print(table(rows_in_turns(parser, args, run), "both roots deleted"))


def run(
    args: argparse.Namespace, label: str, code: Path, number: int
) -> list[tuple[str, str]]:
    # The directory outlives the agents, which write their state files
    # until they stop.
    with tempfile.TemporaryDirectory() as directory, ExitStack() as started:
        work = Path(directory)
        zookeeper, client = start_zookeeper(started)
        redis = start_redis_servers(2, started)
        instances = [
            Instance(f"r{i:04d}", redis[i % 2].port) for i in range(args.instances)
        ]
        for k in range(3):
            config = agent_config(
                instances,
                zookeeper=zookeeper.hosts,
                agent_id=f"a{k}",
                zk_settings={"replicas": 2},
            )
            config = config.replace(
                "[zookeeper]", f'state_dir = "{work}/state{k}"\n[zookeeper]'
            ).replace("[zookeeper]", f'[zookeeper]\ndiscovery = "{args.form}"')
            agent = Agent(work, config, label=f"a{k}", pythonpath=code)
            started.callback(agent.stop)
            agent.wait_ready()
        names = [i.name for i in instances]

        def listed() -> bool:
            try:
                return all(client.get_children(f"/discovery/{n}") for n in names)
            except NoNodeError:
                return False

        wait_until(listed, 120, "every member listed at start", 0.2)
        time.sleep(3)
        agents = {
            client.exists(f"/sentinel/agents/a{k}").ephemeralOwner: f"a{k}"
            for k in range(3)
        }
        polls: list[Poll] = []
        stop = threading.Event()
        poller = threading.Thread(
            target=poll, args=(client, names, agents, polls, stop)
        )
        poller.start()
        try:
            time.sleep(1.0)
            began = time.monotonic()
            for _ in range(args.rounds):
                deleters = [
                    threading.Thread(target=delete_all, args=(client, root))
                    for root in ROOTS
                ]
                for deleter in deleters:
                    deleter.start()
                for deleter in deleters:
                    deleter.join()
                time.sleep(args.gap)
            time.sleep(args.after)
        finally:
            stop.set()
            poller.join()
        load = load_average()
    return [(f"{label} run {number + 1}", summary(polls, began) + f", load {load}")]


def delete_all(client: KazooClient, root: str) -> None:
    """Delete `root` and all below it, leaves first, over again until gone."""
    for _ in range(100):
        levels, frontier = [], [root]
        while frontier:
            levels.append(frontier)
            listings = [(p, client.get_children_async(p)) for p in frontier]
            frontier = []
            for path, listing in listings:
                try:
                    frontier += [f"{path}/{c}" for c in listing.get(timeout=10)]
                except NoNodeError:
                    pass
        for level in reversed(levels):
            for delete in [client.delete_async(p) for p in level]:
                try:
                    delete.get(timeout=10)
                except (NotEmptyError, NoNodeError):
                    pass
        if client.exists(root) is None:
            return


def poll(
    client: KazooClient,
    names: list[str],
    agents: dict[int, str],
    polls: list[Poll],
    stop: threading.Event,
) -> None:
    """Every `POLL` s: each service's members and each instance node."""
    holders: dict[str, str] = {}
    while not stop.is_set():
        at = time.monotonic()
        children = {n: client.get_children_async(f"/discovery/{n}") for n in names}
        nodes = {n: client.get_async(f"/sentinel/instances/{n}") for n in names}
        services: dict[str, list[str] | None] = {}
        unknown = {}
        for name, listing in children.items():
            try:
                kids = listing.get(timeout=5)
            except NoNodeError:
                services[name] = None
                continue
            services[name] = kids
            for kid in kids:
                path = f"/discovery/{name}/{kid}"
                if path not in holders:
                    unknown[path] = client.exists_async(path)
        published: dict[str, tuple[Any, ...] | None] = {}
        for name, read in nodes.items():
            try:
                data, stat = read.get(timeout=5)
            except NoNodeError:
                published[name] = None
                continue
            document = json.loads(data)
            published[name] = (
                agents.get(stat.ephemeralOwner, stat.ephemeralOwner),
                document.get("status"),
                document.get("ready"),
            )
        for path, asked in unknown.items():
            try:
                stat = asked.get(timeout=5)
            except NoNodeError:
                stat = None
            holders[path] = (
                "gone"
                if stat is None
                else agents.get(stat.ephemeralOwner, hex(stat.ephemeralOwner))
            )
        members: dict[str, list[str] | None] = {}
        for name, kids in services.items():
            if kids is None:
                members[name] = None
                continue
            members[name] = sorted(
                f"{k}@{holders.get(f'/discovery/{name}/{k}')}" for k in kids
            )
            # Sequence numbers start again under a service made anew.
            for path in [p for p in holders if p.startswith(f"/discovery/{name}/")]:
                if path.rsplit("/", 1)[1] not in kids:
                    del holders[path]
        polls.append((at, members, published))
        time.sleep(max(0.0, POLL - (time.monotonic() - at)))


def summary(polls: list[Poll], since: float) -> str:
    """The run's figures from its polls from `since` (the first round) on."""
    if not polls:
        return "no poll"
    unlisted_since: dict[str, float] = {}
    unlisted: dict[str, float] = defaultdict(float)
    twice_since: dict[str, float] = {}
    twice: dict[str, float] = defaultdict(float)
    # Each node's holders in turn, those before the first round included.
    held: dict[str, list[str]] = defaultdict(list)
    down = set()
    for at, members, published in polls:
        for name, node in published.items():
            if node is not None and held[name][-1:] != [node[0]]:
                held[name].append(node[0])
        if at < since:
            continue
        for name, node in published.items():
            listing = members.get(name)
            up = node is not None and node[1] == "up" and node[2] is True
            if node is not None and node[1] == "down":
                down.add(name)
            if up and not listing:
                unlisted_since.setdefault(name, at)
            elif name in unlisted_since:
                began = unlisted_since.pop(name)
                unlisted[name] = max(unlisted[name], at - began)
            if listing is not None and len(listing) > 1:
                twice_since.setdefault(name, at)
            elif name in twice_since:
                began = twice_since.pop(name)
                twice[name] = max(twice[name], at - began)
    end = polls[-1][0]
    for name, began in unlisted_since.items():
        unlisted[name] = max(unlisted[name], end - began)
    for name, began in twice_since.items():
        twice[name] = max(twice[name], end - began)
    late = {n: s for n, s in unlisted.items() if s > UNLISTED_AFTER}
    backs = {
        name: sum(1 for i in range(2, len(h)) if h[i] == h[i - 2])
        for name, h in held.items()
    }
    return (
        f"unlisted >{UNLISTED_AFTER:g} s: {len(late)}"
        f" (longest {max(unlisted.values(), default=0.0):.2f} s),"
        f" twice: {len(twice)} (longest {max(twice.values(), default=0.0):.2f} s),"
        f" moves back: {sum(backs.values())} in"
        f" {sum(1 for b in backs.values() if b)} instances,"
        f" read down: {len(down)}"
    )


if __name__ == "__main__":
    main()

"""
A restart with ``state_dir`` whose config moved the agent to another
``zookeeper.root`` (or another chroot in ``zookeeper.hosts``): how long
the nodes the old process left at the old place stay there.

A ZooKeeper of the script's own, one redis-server holding N instances,
one agent (``state_dir``, nerve discovery) at the old place; once every
instance node is up, ``SIGTERM`` (with ``state_dir`` the session is left
open for the next process), then a new process with the same
``state_dir`` at the new place. Reported: the seconds from the new
process's start until no node of the old session is left at the old
place, until every instance node is at the new one, and what the new
process's ``/debug/stats`` says of the state file, with the load.

    .venv/bin/python benchmarks/rootmove.py [--move root|chroot]
        [--instances 60] [--checkout before=PATH --checkout after=.]
"""

from __future__ import annotations

import argparse
import shutil
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
    rows_in_turns,
    start_redis_servers,
    start_zookeeper,
    table,
    wait_until,
)
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

# (chroot, root) before and after, for each --move.
PLACES = {
    "root": (("", "/old"), ("", "/new")),
    "chroot": (("/c1", "/sentinel"), ("/c2", "/sentinel")),
}
GONE_WITHIN = 40.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--move", choices=sorted(PLACES), default="root")
    parser.add_argument("--instances", type=int, default=60)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--logs", type=Path, help="a directory to copy the logs to")
    add_checkout_option(parser)
    args = parser.parse_args()
    print(table(rows_in_turns(parser, args, run), f"{args.move} moved at a restart"))


def run(
    args: argparse.Namespace, label: str, code: Path, number: int
) -> list[tuple[str, str]]:
    with tempfile.TemporaryDirectory() as directory, ExitStack() as started:
        work = Path(directory)
        zookeeper, client = start_zookeeper(started)
        (redis,) = start_redis_servers(1, started)
        instances = [Instance(f"r{i:04d}", redis.port) for i in range(args.instances)]
        (old_chroot, old_root), (new_chroot, new_root) = PLACES[args.move]

        def agent(chroot: str, root: str, k: int) -> Agent:
            config = agent_config(
                instances,
                zookeeper=f"{zookeeper.hosts}{chroot}",
                zk_root=root,
                agent_id="a0",
                zk_settings={"discovery": "nerve"},
            ).replace("[zookeeper]", f'state_dir = "{work}/state"\n[zookeeper]')
            started_agent = Agent(work, config, label=f"a0-{k}", pythonpath=code)
            started.callback(started_agent.stop)
            return started_agent

        def count(client: KazooClient, path: str) -> int:
            try:
                return len(client.get_children(path))
            except NoNodeError:
                return 0

        old = f"{old_chroot}{old_root}"
        new = f"{new_chroot}{new_root}"
        first = agent(old_chroot, old_root, 1)
        first.wait_ready()
        wait_until(
            lambda: count(client, f"{old}/instances") == len(instances),
            120,
            "every node at the old place",
        )
        parent = f"{old_chroot}/discovery/{instances[0].name}"
        wait_until(lambda: count(client, parent) > 0, 60, "a member at the old place")
        session = client.exists(f"{old}/agents/a0").ephemeralOwner
        # A session's ephemeral nodes go together when it is closed or
        # expires: a few of them tell.
        watched = [
            f"{old}/agents/a0",
            f"{old}/instances/{instances[0].name}",
            *(f"{parent}/{child}" for child in client.get_children(parent)),
        ]
        first.stop()
        began = time.monotonic()
        second = agent(new_chroot, new_root, 2)

        def old_gone() -> bool:
            """None of the old session's nodes is left."""
            return all(client.exists(path) is None for path in watched)

        try:
            wait_until(old_gone, GONE_WITHIN, "old nodes gone")
            gone = f"{time.monotonic() - began:.2f} s"
        except RuntimeError:
            gone = f"not within {GONE_WITHIN:g} s"
        wait_until(
            lambda: count(client, f"{new}/instances") == len(instances),
            60,
            "every node at the new place",
        )
        written = time.monotonic() - began
        handoff = second.get("/debug/stats")["zookeeper"]["handoff"]
        if args.logs is not None:
            args.logs.mkdir(parents=True, exist_ok=True)
            for k, each in enumerate((first, second)):
                shutil.copy(each.log, args.logs / f"{label}-{number + 1}-{k}.log")
        return [
            (
                f"{label} run {number + 1}",
                f"old session {session:#x}: its nodes at {old} gone {gone} after"
                f" the new start; every node at {new} {written:.2f} s after"
                f" (load {load_average()})",
            ),
            (
                f"{label} run {number + 1}: why not reattached",
                str(handoff.get("not_reattached_because")),
            ),
        ]


if __name__ == "__main__":
    main()

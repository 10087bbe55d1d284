"""
A double start: two agents started at once on one config and state_dir
(two units, or an init system and a supervisor), and the restart after
it (DESIGN.md section 8, "Restarts"; docs/operations.rst, "Restarts").

One ZooKeeper, a few real redis-servers, ``--instances`` instances. For
each of ``--runs`` runs of each ``--checkout`` (in turns), on a fresh
state_dir: A and B (``twistd -n sentinel``) are started at once; once
one has exited, or after ``--wait`` s, and once every instance node says
up, the survivor is stopped with SIGTERM and a new process started at
once, while a reader polls every node every 20 ms (`tests.gaps`).
Printed per run:

- which exited first, with what status, how long after both started
  (their start-up included), and whether both still ran at ``--wait``;
- whether the state file named the survivor before its SIGTERM (else
  that stop deregisters: its handoff was lost);
- at the restart: the longest time an instance node or the agent node
  was missing, and whether the new process reattached.

    .venv/bin/python benchmarks/doublestart.py --checkout before=PATH
        --checkout after=. [--instances 20] [--runs 3] [--wait 30]
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
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
    machine,
    rows_in_turns,
    start_redis_servers,
    start_zookeeper,
    table,
    wait_until,
)
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from superseded import file_pid

from tests.gaps import NodeWatch

AGENT_ID = "bench"
SESSION_TIMEOUT = 10.0


def parse_args() -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--instances", type=int, default=20, help="instances (20)")
    add("--servers", type=int, default=4, help="redis-servers they share (4)")
    add("--runs", type=int, default=3, help="runs of each checkout (3)")
    add("--wait", type=float, default=30.0, help="seconds for one to exit (30)")
    add_checkout_option(parser)
    return parser, parser.parse_args()


def all_up(client: KazooClient, root: str, count: int) -> bool:
    """Whether every instance node is there and says up."""
    try:
        return all(
            json.loads(client.get(f"{root}/instances/r{i}")[0])["status"] == "up"
            for i in range(count)
        )
    except NoNodeError:
        return False


def main() -> int:
    """Run every checkout in turns, print the table, stop everything started."""
    parser, args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-doublestart-"))
    with ExitStack() as started:
        ports = [s.port for s in start_redis_servers(args.servers, started)]
        zookeeper, client = start_zookeeper(started)

        def run(
            args: argparse.Namespace, label: str, checkout: Path, number: int
        ) -> list[tuple[str, str]]:
            tried = f"{label}-{number}"
            root, state_dir = f"/double-{tried}", workdir / f"state-{tried}"
            instances = [
                Instance(f"r{i}", ports[i % len(ports)]) for i in range(args.instances)
            ]
            text = f'state_dir = "{state_dir}"\n' + agent_config(
                instances,
                zookeeper=zookeeper.hosts,
                zk_root=root,
                agent_id=AGENT_ID,
                zk_settings={"session_timeout": SESSION_TIMEOUT},
            )
            with ExitStack() as running:
                began = time.monotonic()
                pair = [
                    Agent(workdir, text, f"{tried}-{n}", pythonpath=checkout)
                    for n in "ab"
                ]
                for agent in pair:
                    running.callback(agent.stop)
                while all(a.child.running for a in pair):
                    if time.monotonic() - began > args.wait:
                        break
                    time.sleep(0.05)
                took = time.monotonic() - began
                gone = [a for a in pair if not a.child.running]
                first = (
                    f"{'ab'[pair.index(gone[0])]} exit {gone[0].child.process.wait()}"
                    f" after {took:.1f} s"
                    if gone
                    else f"both still ran after {args.wait:g} s"
                )
                survivor = next(a for a in pair if a.child.running)
                wait_until(lambda: all_up(client, root, args.instances), 60.0, "all up")
                time.sleep(3.0)
                named = file_pid(state_dir) == survivor.pid
                nodes = [f"{root}/agents/{AGENT_ID}"] + [
                    f"{root}/instances/r{i}" for i in range(args.instances)
                ]
                watch = NodeWatch(zookeeper.hosts, nodes).start()
                running.callback(watch.stop)
                survivor.child.process.send_signal(signal.SIGTERM)
                survivor.child.process.wait(10.0)
                after = Agent(workdir, text, f"{tried}-c", pythonpath=checkout)
                running.callback(after.stop)
                after.wait_ready()
                wait_until(lambda: all_up(client, root, args.instances), 60.0, "up")
                time.sleep(2.0)
                reattached = "reattached to" in after.log.read_text()
                missing = max(watch.longest_gap(n) for n in nodes[1:])
                agent_missing = watch.longest_gap(nodes[0])
                for agent in [*pair, after]:
                    if agent.child.running:
                        agent.child.process.send_signal(signal.SIGUSR2)
                        agent.child.process.wait(20.0)
            return [
                (f"{tried}: load average", load_average()),
                (f"{tried}: first exit", first),
                (f"{tried}: file named the survivor", str(named)),
                (
                    f"{tried}: restart: instance / agent node missing, reattached",
                    f"{missing:.2f} s / {agent_missing:.2f} s, {reattached}",
                ),
            ]

        rows = [("machine", machine()), ("load average at start", load_average())]
        rows += rows_in_turns(parser, args, run)
    print(table(rows, "double start on one state_dir"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

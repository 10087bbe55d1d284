"""
What a reader of ZooKeeper sees while the agent restarts (issue 10).

An agent (``twistd -n sentinel``) watches N instances over a few real
redis-servers, all up, and publishes their nodes, its agent node and a
serverset member each (one service). A reader polls ZooKeeper every 20 ms,
as a proxy that treats a missing node as gone would (`tests.gaps`). The
agent is stopped, with SIGTERM (a clean restart) or SIGKILL (a crash), and
a new one started at once on the same config, with and without a
state_dir. For each case and run:

- the longest time any instance node, the agent node, or any of the
  members (fewer than N under the service) was missing;
- the most members the service held at once (2 N: every endpoint listed
  twice);
- the time from the signal until every instance node and the agent node
  carry the new process's data (rewritten, and the agent node naming its
  pid).

    .venv/bin/python benchmarks/restart.py [--instances 50] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from common import (
    Agent,
    Instance,
    ZooKeeperServer,
    agent_config,
    load_average,
    machine,
    start_redis_servers,
    start_zookeeper,
    stop_on_sigterm,
    table,
    wait_until,
)
from kazoo.client import KazooClient

from tests.gaps import NodeWatch

AGENT_ID = "bench"
POLL = 0.05
SIGNALS = {"sigterm": signal.SIGTERM, "kill": signal.SIGKILL}


def parse_args() -> argparse.Namespace:
    """The options; the defaults are issue 10's measurement."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--instances", type=int, default=50, help="instances (50)")
    add("--servers", type=int, default=5, help="redis-servers they share (5)")
    add("--runs", type=int, default=3, help="runs of each case (3)")
    add("--session-timeout", type=float, default=10.0, help="seconds (10)")
    add("--cases", default="sigterm,kill", help="sigterm and/or kill")
    add("--keep-logs", action="store_true", help="keep the agents' logs")
    return parser.parse_args()


@dataclass
class Outcome:
    """One restart, as the reader saw it."""

    instance_gap: float
    agent_gap: float
    members_gap: float
    most_members: int
    rewritten_after: float | None


def config(
    args: argparse.Namespace,
    hosts: str,
    ports: list[int],
    root: str,
    service: str,
    state_dir: Path | None,
) -> str:
    """The agent's TOML: instances over the servers, members under one service."""
    instances = [
        Instance(f"r{i}", ports[i % len(ports)]) for i in range(args.instances)
    ]
    text = agent_config(instances, zookeeper=hosts, zk_root=root, agent_id=AGENT_ID)
    text = text.replace(
        f'root = "{root}"\n',
        f'root = "{root}"\nsession_timeout = {args.session_timeout!r}\n'
        f'discovery = "serverset"\ndiscovery_root = "{service}"\n',
    )
    text = text.replace("[[redis]]\n", '[[redis]]\nservice = "cache"\n')
    if state_dir is not None:
        text = f'state_dir = "{state_dir}"\n' + text
    return text


def published(client: KazooClient, root: str, parent: str, count: int) -> bool:
    """Whether every node and member is there."""
    if not client.exists(parent) or len(client.get_children(parent)) < count:
        return False
    if not client.exists(f"{root}/agents/{AGENT_ID}"):
        return False
    return len(client.get_children(f"{root}/instances")) >= count


def agent_pid(client: KazooClient, root: str) -> int | None:
    """The pid the agent node names, if it is there."""
    path = f"{root}/agents/{AGENT_ID}"
    if client.exists(path) is None:
        return None
    return int(json.loads(client.get(path)[0])["pid"])


def restart(
    args: argparse.Namespace,
    zookeeper: ZooKeeperServer,
    client: KazooClient,
    ports: list[int],
    workdir: Path,
    run: int,
    case: str,
    with_state: bool,
) -> Outcome:
    """One restart: start, publish, signal, start again, watch."""
    label = f"{case}-{'state' if with_state else 'none'}-{run}"
    root, service = f"/restart-{label}", f"/members-{label}"
    parent = f"{service}/cache"
    state_dir = workdir / f"state-{label}" if with_state else None
    text = config(args, zookeeper.hosts, ports, root, service, state_dir)
    with ExitStack() as running:
        first = Agent(workdir, text, f"{label}-first")
        running.callback(first.stop)
        first.wait_ready()
        wait_until(
            lambda: published(client, root, parent, args.instances),
            60.0,
            "the first agent's nodes",
        )
        nodes = [f"{root}/agents/{AGENT_ID}"] + [
            f"{root}/instances/r{i}" for i in range(args.instances)
        ]
        watch = NodeWatch(zookeeper.hosts, nodes, {parent: args.instances}).start()
        running.callback(watch.stop)
        time.sleep(1.0)
        signalled = time.monotonic()
        first.child.process.send_signal(SIGNALS[case])
        first.child.process.wait(10.0)
        watch.mark()
        second = Agent(workdir, text, f"{label}-second")
        running.callback(second.stop)

        def new_data() -> bool:
            rewritten = all(watch.rewritten_at(n) is not None for n in nodes)
            return rewritten and agent_pid(client, root) == second.pid

        rewritten_after: float | None = None
        try:
            wait_until(new_data, args.session_timeout + 60.0, "the new process's data")
            rewritten_after = time.monotonic() - signalled
        except RuntimeError:
            pass
        instance_gap = max(watch.longest_gap(n) for n in nodes[1:])
        outcome = Outcome(
            instance_gap=instance_gap,
            agent_gap=watch.longest_gap(nodes[0]),
            members_gap=watch.longest_gap(parent),
            most_members=watch.most_members(parent),
            rewritten_after=rewritten_after,
        )
        # Leave at once (or stop cleanly), so that the next case starts clean.
        sig = signal.SIGUSR2 if with_state else signal.SIGTERM
        second.child.process.send_signal(sig)
        second.child.process.wait(10.0)
    return outcome


def _series(values: list[float | None], unit: str = "s") -> str:
    shown = ["never" if v is None else f"{v:.2f}" for v in values]
    return " / ".join(shown) + (f" {unit}" if unit else "")


def main() -> int:
    """Run every case and run, print the table, stop everything started."""
    args = parse_args()
    stop_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-restart-"))
    rows = [
        ("machine", machine()),
        ("load average at start", load_average()),
        (
            "settings",
            f"{args.instances} instances over {args.servers} redis-servers, "
            f"session timeout {args.session_timeout:g} s, reader every 20 ms, "
            f"{args.runs} runs each (figures run by run)",
        ),
    ]
    try:
        with ExitStack() as started:
            servers = start_redis_servers(args.servers, started)
            zookeeper, client = start_zookeeper(started)
            ports = [s.port for s in servers]
            for case in args.cases.split(","):
                for state in (False, True):
                    name = f"{case}, {'with' if state else 'without'} state_dir"
                    outcomes = [
                        restart(
                            args, zookeeper, client, ports, workdir, run, case, state
                        )
                        for run in range(args.runs)
                    ]
                    rows += [
                        (
                            f"{name}: longest gap, instance node",
                            _series([o.instance_gap for o in outcomes]),
                        ),
                        (
                            f"{name}: longest gap, agent node",
                            _series([o.agent_gap for o in outcomes]),
                        ),
                        (
                            f"{name}: longest gap, a member",
                            _series([o.members_gap for o in outcomes]),
                        ),
                        (
                            f"{name}: most members at once",
                            " / ".join(str(o.most_members) for o in outcomes),
                        ),
                        (
                            f"{name}: new data everywhere after the signal",
                            _series([o.rewritten_after for o in outcomes]),
                        ),
                    ]
                    print(f"{name} done", file=sys.stderr, flush=True)
            rows.append(("load average at the end", load_average()))
    finally:
        if args.keep_logs:
            print(f"logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table(rows, "Restarts, as a reader of ZooKeeper sees them"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

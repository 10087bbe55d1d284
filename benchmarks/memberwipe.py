"""
An operator's ``deleteall`` of the discovery root, and a client deleting
discovery members in a loop, under a group on a real ensemble: how soon
every member is listed again, and what each agent logs.

A three-server ZooKeeper ensemble (`tests.servers.ZooKeeperEnsemble`), two
redis-servers holding N instances, three agents (``replicas = 2``,
serverset discovery, a ``state_dir`` each). Once every service lists a
member, ``/discovery`` is deleted recursively ``--rounds`` times, 2 s
apart (retried while the agents make members again under it: ZooKeeper's
recursive delete is not atomic); then a client deletes every member it
lists, over and over, for 10 s. Reported: how long each delete took and
how soon after it every member was listed again, how many deletes the
loop made, and each agent's log lines and warnings over it all (those
that say a member was made again apart), with the load average.

    .venv/bin/python benchmarks/memberwipe.py [--instances 300] [--rounds 3]
        [--checkout before=PATH --checkout after=.]
"""

from __future__ import annotations

import argparse
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
    table,
    wait_until,
)
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError, NotEmptyError

from tests.servers import ZooKeeperEnsemble

LOOP_SECONDS = 10.0
REPAIRED = "by another ZooKeeper client"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=1)
    add_checkout_option(parser)
    args = parser.parse_args()
    print(table(rows_in_turns(parser, args, run), "discovery root deleted"))


def run(
    args: argparse.Namespace, label: str, code: Path, number: int
) -> list[tuple[str, str]]:
    rows = []
    with ExitStack() as started, tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        ensemble = ZooKeeperEnsemble()
        started.callback(ensemble.close)
        ensemble.start()
        redis = start_redis_servers(2, started)
        instances = [
            Instance(f"r{i:04d}", redis[i % 2].port) for i in range(args.instances)
        ]
        agents = []
        for k in range(3):
            config = agent_config(
                instances,
                zookeeper=ensemble.hosts,
                agent_id=f"a{k}",
                zk_settings={"replicas": 2, "heartbeat": 3},
            )
            config = config.replace(
                "[zookeeper]", f'state_dir = "{work}/state{k}"\n[zookeeper]'
            ).replace("[zookeeper]", '[zookeeper]\ndiscovery = "serverset"')
            agent = Agent(work, config, label=f"a{k}", pythonpath=code)
            started.callback(agent.stop)
            agents.append(agent)
        for agent in agents:
            agent.wait_ready()
        client = KazooClient(hosts=ensemble.hosts, timeout=10.0)
        client.start(timeout=10.0)
        started.callback(client.close)
        started.callback(client.stop)

        def listed() -> bool:
            try:
                return all(
                    client.get_children(f"/discovery/{i.name}") for i in instances
                )
            except NoNodeError:
                return False

        wait_until(listed, 120, "every member listed at start", 0.2)
        time.sleep(3)
        marks = [
            len(agent.log.read_text(errors="replace").splitlines()) for agent in agents
        ]
        run_label = f"{label} run {number + 1}"
        for round_ in range(args.rounds):
            began = time.monotonic()
            for _ in range(50):
                try:
                    client.delete("/discovery", recursive=True)
                    break
                except (NotEmptyError, NoNodeError):
                    pass
            deleted = time.monotonic()
            back = wait_until(listed, 60, "every member listed again", 0.05)
            rows.append(
                (
                    f"{run_label}: deleteall #{round_ + 1}",
                    f"delete took {deleted - began:.2f} s, every member listed"
                    f" {back:.2f} s after it (load {load_average()})",
                )
            )
            time.sleep(2)
        began, deletes = time.monotonic(), 0
        while time.monotonic() - began < LOOP_SECONDS:
            for instance in instances:
                parent = f"/discovery/{instance.name}"
                try:
                    for child in client.get_children(parent):
                        client.delete(f"{parent}/{child}")
                        deletes += 1
                except NoNodeError:
                    pass
            time.sleep(0.05)
        back = wait_until(listed, 60, "every member listed after the loop", 0.05)
        rows.append(
            (
                f"{run_label}: deleting loop",
                f"{deletes} deletes in {LOOP_SECONDS:g} s, every member listed"
                f" {back:.2f} s after (load {load_average()})",
            )
        )
        time.sleep(2)
        for k, agent in enumerate(agents):
            lines = agent.log.read_text(errors="replace").splitlines()[marks[k] :]
            warnings = sum("#warn]" in line for line in lines)
            repaired = sum(REPAIRED in line for line in lines)
            tracebacks = sum("Traceback" in line for line in lines)
            rows.append(
                (
                    f"{run_label}: a{k} log",
                    f"{len(lines)} lines, {warnings} warnings ({repaired} of"
                    f" members made again), {tracebacks} tracebacks",
                )
            )
    return rows


if __name__ == "__main__":
    main()

"""
Sets whose answers came while the agent was stalled: its own writes, or
another client's?

One agent (``twistd -n sentinel``, ``--instances`` instances on one real
redis-server, ``zookeeper.refresh`` 1 s so that sets of instance nodes
are always in flight) is left alone until every node is written, then
``--rounds`` times: ZooKeeper is SIGSTOPped for ``--zk-frozen`` s (5:
the sets sent meanwhile wait; less than the 2/3 of the session timeout
after which kazoo and the agent drop a connection that answers
nothing), then, as it goes on, the agent is SIGSTOPped for
``--agent-frozen`` s (6: less than the session timeout, which ZooKeeper
would expire): it wakes past the call timeout (10 s, the session
timeout) of the sets sent as ZooKeeper froze, with their answers,
which ZooKeeper gave as it went on, unread in kazoo's hands; the
overdue timeouts run first. No other client writes anything. Longer
ZooKeeper freezes made kazoo drop the connection at the wake, most
rounds (its ping unanswered), and the resync that follows asks about
every node again: no set refused, nothing named, before as after.

Printed for each run: the rounds in which ``/healthz`` (asked
``--settle`` s after the agent woke) named a write of another client,
the agent's log lines saying so, ``nodes_written_over`` and
``own_sets_applied_unanswered`` from ``/debug/stats``, the connections
the agent made (a dropped connection makes it ask about every node
again: no set refused then), and the load.

    .venv/bin/python benchmarks/lostanswers.py [--rounds 3] [--runs 1]
        [--checkout before=../before --checkout after=.]
"""

from __future__ import annotations

import argparse
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
from rack import healthz

NAMED = "written by another client"


def run(
    args: argparse.Namespace, label: str, checkout: Path, number: int
) -> list[tuple[str, str]]:
    with ExitStack() as started, tempfile.TemporaryDirectory() as scratch:
        [redis] = start_redis_servers(1, started)
        zookeeper, client = start_zookeeper(started)
        instances = [Instance(f"r{i}", redis.port) for i in range(args.instances)]
        config = agent_config(
            instances, zookeeper=zookeeper.hosts, zk_settings={"refresh": 1.0}
        )
        agent = Agent(Path(scratch), config, label="a", pythonpath=checkout)
        started.callback(agent.stop)
        agent.wait_ready()
        wait_until(
            lambda: (
                client.exists("/sentinel/instances") is not None
                and len(client.get_children("/sentinel/instances")) == args.instances
            ),
            60.0,
            "every instance node written",
        )
        time.sleep(3.0)
        named = 0
        for _ in range(args.rounds):
            zookeeper.pause()
            time.sleep(args.zk_frozen)
            zookeeper.resume()
            agent.child.pause()
            time.sleep(args.agent_frozen)
            agent.child.resume()
            time.sleep(args.settle)
            named += NAMED in healthz(agent)
            time.sleep(args.settle)
        stats = agent.get("/debug/stats")["zookeeper"]
        log = agent.log.read_text()
        load = load_average()
    return [
        (
            f"{label} #{number + 1}",
            f"/healthz named a write over in {named} of {args.rounds} rounds;"
            f" {log.count('was written by another ZooKeeper client')} log lines;"
            f" nodes_written_over {stats['nodes_written_over']};"
            f" own_sets_applied_unanswered"
            f" {stats.get('own_sets_applied_unanswered', '-')};"
            f" connections {log.count('ZooKeeper connected')}; load {load}",
        )
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add_checkout_option(parser)
    add("--instances", type=int, default=30)
    add("--rounds", type=int, default=3)
    add("--zk-frozen", type=float, default=5.0, help="s (5)")
    add("--agent-frozen", type=float, default=6.0, help="s (6)")
    add("--settle", type=float, default=4.0, help="s (4)")
    add("--runs", type=int, default=1)
    args = parser.parse_args()
    rows = [("machine", machine()), *rows_in_turns(parser, args, run)]
    title = (
        f"ZooKeeper frozen {args.zk_frozen:g} s, then the agent"
        f" {args.agent_frozen:g} s, {args.rounds} times: {args.instances}"
        " instances, refresh 1 s"
    )
    print(table(rows, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())

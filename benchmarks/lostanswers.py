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

``--mode calls`` asks what the stall does to the calls themselves: the
agent asks a session timeout of ``--session-timeout`` s (5: its call
timeout is the same) and ZooKeeper grants ``--granted`` s (12: its
least), so that the agent, SIGSTOPped 7 s, sleeps past the call timeout
of the sets it sent as ZooKeeper froze (2 s, 300 instances) and still
within its session. Printed: the calls failed by their timeout
(``calls_timed_out``) and those of them whose answer came all the same
(``calls_answered_after_timeout``), the writes' calls never sent, their
callers gone (``calls_unsent_given_up``), the writes failed, the agent's log
lines saying a write failed, and the answers of ``/healthz``, asked
every 0.5 s from the wake for ``--settle`` s twice, that were not ok.

    .venv/bin/python benchmarks/lostanswers.py [--mode sets|calls]
        [--rounds 3] [--runs 1]
        [--checkout before=../before --checkout after=.]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from common import (
    Agent,
    Instance,
    ZooKeeperServer,
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
# What each mode changes of the defaults (module docstring).
MODES = {
    "sets": {},
    "calls": {
        "instances": 300,
        "session_timeout": 5.0,
        "granted": 12.0,
        "zk_frozen": 2.0,
        "agent_frozen": 7.0,
    },
}


def run(
    args: argparse.Namespace, label: str, checkout: Path, number: int
) -> list[tuple[str, str]]:
    with ExitStack() as started, tempfile.TemporaryDirectory() as scratch:
        [redis] = start_redis_servers(1, started)
        server = ZooKeeperServer()
        if args.granted is not None:
            server.min_session_timeout_ms = int(args.granted * 1000)
        zookeeper, client = start_zookeeper(started, server)
        instances = [Instance(f"r{i}", redis.port) for i in range(args.instances)]
        settings = {"refresh": 1.0}
        if args.session_timeout is not None:
            settings["session_timeout"] = args.session_timeout
        config = agent_config(
            instances, zookeeper=zookeeper.hosts, zk_settings=settings
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
        named = asked = 0
        failing: list[str] = []
        for _ in range(args.rounds):
            zookeeper.pause()
            time.sleep(args.zk_frozen)
            zookeeper.resume()
            agent.child.pause()
            time.sleep(args.agent_frozen)
            agent.child.resume()
            if args.mode == "calls":
                answers = healthz_every(agent, 0.5, 2 * args.settle)
                asked += len(answers)
                failing += [answer for answer in answers if answer != "ok"]
            else:
                time.sleep(args.settle)
                named += NAMED in healthz(agent)
                time.sleep(args.settle)
        stats = agent.get("/debug/stats")["zookeeper"]
        log = agent.log.read_text()
        load = load_average()
    if args.mode == "calls":
        outcome = (
            f"calls_timed_out {stats.get('calls_timed_out', '-')};"
            f" calls_answered_after_timeout"
            f" {stats.get('calls_answered_after_timeout', '-')};"
            f" calls_unsent_given_up {stats.get('calls_unsent_given_up', '-')};"
            f" writes_failed {stats['writes_failed']};"
            f" {log.count('ZooKeeper write failed')} log lines;"
            f" /healthz not ok {len(failing)} of {asked}"
            + "".join(
                f" ({count}: {reason})"
                for reason, count in sorted(Counter(map(kind, failing)).items())
            )
        )
    else:
        outcome = (
            f"/healthz named a write over in {named} of {args.rounds} rounds;"
            f" {log.count('was written by another ZooKeeper client')} log lines;"
            f" nodes_written_over {stats['nodes_written_over']}"
        )
    return [
        (
            f"{label} #{number + 1}",
            f"{outcome}; own_sets_applied_unanswered"
            f" {stats.get('own_sets_applied_unanswered', '-')};"
            f" connections {log.count('ZooKeeper connected')}; load {load}",
        )
    ]


def kind(reason: str) -> str:
    """A reason /healthz gave, without what changes from one answer to the next."""
    return reason.split(" (")[0].split(": /")[0]


def healthz_every(agent: Agent, every: float, seconds: float) -> list[str]:
    """``/healthz``'s answers, asked every `every` s for `seconds`."""
    answers = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        answers.append(healthz(agent))
        time.sleep(every)
    return answers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add_checkout_option(parser)
    add("--mode", choices=sorted(MODES), default="sets")
    add("--instances", type=int, default=30)
    add("--rounds", type=int, default=3)
    add("--zk-frozen", type=float, default=5.0, help="s (5)")
    add("--agent-frozen", type=float, default=6.0, help="s (6)")
    add("--settle", type=float, default=4.0, help="s (4)")
    add("--session-timeout", type=float, help="s asked (the agent's default)")
    add("--granted", type=float, help="s ZooKeeper grants at least")
    add("--runs", type=int, default=1)
    args = parser.parse_args()
    # A mode's defaults, unless given on the command line.
    given = parser.parse_args([])
    for key, value in MODES[args.mode].items():
        if getattr(args, key) == getattr(given, key):
            setattr(args, key, value)
    rows = [("machine", machine()), *rows_in_turns(parser, args, run)]
    granted = "" if args.granted is None else f", granted {args.granted:g} s"
    asked = (
        ""
        if args.session_timeout is None
        else f", session timeout {args.session_timeout:g} s"
    )
    title = (
        f"ZooKeeper frozen {args.zk_frozen:g} s, then the agent"
        f" {args.agent_frozen:g} s, {args.rounds} times: {args.instances}"
        f" instances, refresh 1 s{asked}{granted}"
    )
    print(table(rows, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())

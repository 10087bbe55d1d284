"""
An agent back from a pause past its session timeout, after a newer process
took its state_dir over, and the restart of that newer process after it
(DESIGN.md section 8, "Restarts").

One real redis-server, one ZooKeeper (``--session-timeout`` asked), and
agents (``twistd -n sentinel``, one agent id, one ``state_dir``, no group)
over ``--instances`` instances, each with a serverset member. For each of
``--runs`` runs of each ``--checkout`` (in turns):

1. A starts and publishes every node; it is stopped (SIGSTOP);
2. once its session has expired (the session timeout and 2 s), B starts
   on the same config and state_dir: it finds A's session expired, opens
   its own and writes the state file naming itself;
3. once B's agent node names B, A is resumed (SIGCONT), ``--pause`` s
   after its SIGSTOP;
4. ``--settle`` s after the SIGCONT (a deploy of B while A is on its way
   out), B is stopped (SIGTERM) and C started at once, while a reader
   polls every node every 20 ms (`tests.gaps`).

Printed: whether A still ran at B's SIGTERM and whose pid the state file
named then, B's log lines saying the file no longer holds its session,
whether C reattached, the longest time an instance node, the agent node
or a member was missing at the B to C restart, and A's exit status and
how long it ran after the SIGCONT.

    .venv/bin/python benchmarks/superseded.py --checkout before=PATH
        --checkout after=. [--instances 20] [--session-timeout 4]
        [--pause 10] [--runs 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import restart
from common import (
    Agent,
    ZooKeeperServer,
    add_checkout_option,
    load_average,
    machine,
    rows_in_turns,
    start_redis_servers,
    start_zookeeper,
    table,
    wait_until,
)
from kazoo.client import KazooClient

from tests.gaps import NodeWatch

OVERWRITTEN = "no longer holds this process's ZooKeeper session"
REATTACHED = "reattached to ZooKeeper session "
NEW_SESSION = "new ZooKeeper session "


def parse_args() -> argparse.Namespace:
    """The options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--instances", type=int, default=20, help="instances (20)")
    add("--session-timeout", type=float, default=4.0, help="seconds asked (4)")
    add("--pause", type=float, default=10.0, help="A's SIGSTOP, seconds (10)")
    add("--settle", type=float, default=3.0, help="SIGCONT to B's SIGTERM (3)")
    add("--runs", type=int, default=2, help="runs of each checkout (2)")
    add("--keep-logs", action="store_true", help="keep the agents' logs")
    add_checkout_option(parser)
    args = parser.parse_args()
    args.parser = parser
    return args


def file_pid(state_dir: Path) -> int | None:
    """The pid the state file names, if any."""
    try:
        document = json.loads((state_dir / "zookeeper-session.json").read_bytes())
    except (OSError, ValueError):
        return None
    return int(document["owner"]["pid"])


def lines_with(log: Path, text: str) -> list[str]:
    """The lines of `log` that contain `text`."""
    return [line for line in log.read_text().splitlines() if text in line]


def new_sessions(log: Path) -> set[str]:
    """The sessions a process's log says it opened at start."""
    return {
        line.split(NEW_SESSION, 1)[1].split(";")[0]
        for line in lines_with(log, NEW_SESSION)
    }


def one_run(
    args: argparse.Namespace,
    zookeeper: ZooKeeperServer,
    client: KazooClient,
    port: int,
    workdir: Path,
    label: str,
    checkout: Path,
) -> list[tuple[str, str]]:
    """A paused, B started, A resumed; then B restarted as C."""
    root, service = f"/superseded-{label}", f"/members-{label}"
    parent = f"{service}/cache"
    state_dir = workdir / f"state-{label}"
    text = restart.config(args, zookeeper.hosts, [port], root, service, state_dir)
    nodes = [f"{root}/agents/{restart.AGENT_ID}"] + [
        f"{root}/instances/r{i}" for i in range(args.instances)
    ]

    def published(pid: int) -> bool:
        every = restart.published(client, root, parent, args.instances)
        return every and restart.agent_pid(client, root) == pid

    with ExitStack() as running:
        a = Agent(workdir, text, f"{label}-a", pythonpath=checkout)
        running.callback(a.stop)
        a.wait_ready()
        wait_until(lambda: published(a.pid), 60.0, "A's nodes")
        a.child.process.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        running.callback(lambda: a.child.process.send_signal(signal.SIGCONT))
        time.sleep(args.session_timeout + 2.0)
        b = Agent(workdir, text, f"{label}-b", pythonpath=checkout)
        running.callback(b.stop)
        b.wait_ready()
        wait_until(lambda: published(b.pid), 60.0, "B's nodes")
        time.sleep(max(0.0, args.pause - (time.monotonic() - stopped)))
        a.child.process.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        a_ended: list[float] = []
        threading.Thread(
            target=lambda: (a.child.process.wait(), a_ended.append(time.monotonic())),
            daemon=True,
        ).start()
        time.sleep(args.settle)
        holder = file_pid(state_dir)
        holder_name = {a.pid: "A", b.pid: "B"}.get(holder or 0, str(holder))
        a_running = "running" if a.child.running else "gone"
        watch = NodeWatch(zookeeper.hosts, nodes, {parent: args.instances}).start()
        running.callback(watch.stop)
        time.sleep(1.0)
        watch.mark()
        b.child.process.send_signal(signal.SIGTERM)
        b.child.process.wait(20.0)
        c = Agent(workdir, text, f"{label}-c", pythonpath=checkout)
        running.callback(c.stop)
        c.wait_ready()
        try:
            wait_until(lambda: published(c.pid), 60.0, "C's nodes")
        except RuntimeError:
            pass
        time.sleep(1.0)
        overwritten = lines_with(b.log, OVERWRITTEN)
        reattached = "no"
        for line in lines_with(c.log, REATTACHED):
            session = line.split(REATTACHED, 1)[1].split()[0]
            whose = "B's" if session in new_sessions(b.log) else "not B's"
            reattached = f"yes, to {whose} session {session}"
        instance_gap = max(watch.longest_gap(n) for n in nodes[1:])
        missing = sum(1 for n in nodes[1:] if watch.longest_gap(n) > 0)
        agent_gap, member_gap = watch.longest_gap(nodes[0]), watch.longest_gap(parent)
        try:
            a_status: int | str = a.child.process.wait(60.0)
        except Exception:
            a_status = "still running after 60 s"
        a_ran = (a_ended[0] if a_ended else time.monotonic()) - resumed
        c.child.process.send_signal(signal.SIGUSR2)
        c.child.process.wait(20.0)
    return [
        (f"{label}: load average", load_average()),
        (f"{label}: A after SIGCONT", f"exit {a_status} after {a_ran:.1f} s"),
        (
            f"{label}: at B's SIGTERM, A / the file names",
            f"{a_running} / {holder_name}",
        ),
        (f"{label}: B's 'no longer holds' lines", str(len(overwritten))),
        (f"{label}: C reattached", reattached),
        (
            f"{label}: B to C, instance nodes missing",
            f"{missing} of {args.instances}, longest {instance_gap:.2f} s",
        ),
        (
            f"{label}: B to C, agent node / a member missing",
            f"{agent_gap:.2f} s / {member_gap:.2f} s",
        ),
    ]


def main() -> int:
    """Run each checkout in turns, print the table, stop everything started."""
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-superseded-"))
    rows = [("machine", machine()), ("load average at start", load_average())]
    try:
        with ExitStack() as started:
            [server] = start_redis_servers(1, started)
            zookeeper, client = start_zookeeper(started)

            def run(
                args: argparse.Namespace, label: str, checkout: Path, number: int
            ) -> list[tuple[str, str]]:
                return one_run(
                    args,
                    zookeeper,
                    client,
                    server.port,
                    workdir,
                    f"{label}-{number}",
                    checkout,
                )

            rows += rows_in_turns(args.parser, args, run)
            rows.append(("load average at the end", load_average()))
    finally:
        if args.keep_logs:
            print(f"logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table(rows, "A paused process back after a newer one took over"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

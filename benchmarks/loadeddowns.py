"""
Healthy instances on a loaded agent: is any published down?

One agent (``twistd -n sentinel``, ``--interval`` 0.5 s, ``--timeout``
0.4 s, rise 2, fall 3, as ``tests/test_http_load.py``: the bound on a
reply owed is 1.9 s) publishes ``--instances`` names over ``--servers``
redis-servers to a ZooKeeper of the script's own. Once every instance
node says up, ``--busy`` busy loops (started and stopped by PID, not
pinned: they share the machine's cores with the agent and the
redis-servers alike) and ``--clients`` HTTP clients looping over ``/``
and ``/instances`` load the machine for ``--watch`` s, and a while after
(``SETTLE``) every node is still read. With ``--stopped S``, the agent
is also SIGSTOPped S s of every ``--period`` s meanwhile (bursts, as
``benchmarks/starvedfrozen.py --starve stop``), for a time drawn
between ``--stopped`` and ``--stopped-max`` s if that is given; with
``--host H`` the redis-servers are stopped with it, as a paused virtual
machine stops the host's processes, and each resumes up to H s after the
agent (a paused host's processes are scheduled again in any order).
``--reconnect-every`` sets the agent's ``reconnect_every`` (renewals
connect across the stalls). Every instance is healthy, so
none may ever be published down, at any load (DESIGN.md section 2.6).

Every second the script reads every instance node. Printed, for each of
``--runs`` runs of each ``--checkout`` (in turns):

- the healthy names ever published down (nodes read ``down``), the
  agent's log lines saying one went down, by the error they give, and
  the statuses one check decided down (its summaries: one down for less
  than the second between two reads is there);
- the agent's own lateness lines (the first checks put off, instances
  left unchecked, decided anew after a gap);
- the HTTP answers the clients had, and the load average before and
  after.

    .venv/bin/python benchmarks/loadeddowns.py --checkout before=PATH
        --checkout after=. [--busy 4] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import signal
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import psutil
from common import (
    Agent,
    Instance,
    add_checkout_option,
    agent_config,
    load_average,
    open_files_for,
    rows_in_turns,
    start_redis_servers,
    start_zookeeper,
    table,
)
from starvedfrozen import _starve_by_stops, _statuses, _wait_all_up

# Seconds the nodes are still read after the load ends: a status decided
# late is published late.
SETTLE = 5.0
PATHS = ("/", "/instances")
# The agent's log lines that say an instance went down, and why.
DOWN_LINE = re.compile(r"(\S+) is down \(was [^)]*\)(?:: (.*))?$")
# The agent's log lines about its own lateness.
# The agent's summaries of statuses one check decided (`sentinel.firstchecks`):
# a down published for less than the second between two reads is in them.
DECIDED_LINE = re.compile(r"decided .*: \d+ up, (\d+) down")
LATE_LINE = re.compile(r"unchecked|after a gap|put off|starved|ran late|own stall")


def _loop_http(port: int, done: threading.Event, answers: Counter[str]) -> None:
    # GET each path in turn until `done`; count the answers by status.
    while not done.is_set():
        for path in PATHS:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}{path}", timeout=10.0
                ) as response:
                    response.read()
                    answers[str(response.status)] += 1
            except Exception as error:
                answers[type(error).__name__] += 1


def _stop_in_bursts(
    agent: Agent, servers: list[int], args: argparse.Namespace, done: threading.Event
) -> None:
    # SIGSTOP the agent `stopped` s (up to `stopped_max` s, drawn at random
    # each time) of every `period` s until `done`; with `host`, the
    # redis-servers too, as a paused virtual machine stops them all, and
    # they resume up to `host` s after the agent (its processes are
    # scheduled again in any order).
    if not args.stopped_max and not args.host:
        _starve_by_stops(agent, args, done)
        return
    while not done.is_set():
        stopped = random.uniform(args.stopped, max(args.stopped, args.stopped_max))
        os.kill(agent.pid, signal.SIGSTOP)
        for pid in servers if args.host else ():
            os.kill(pid, signal.SIGSTOP)
        done.wait(stopped)
        os.kill(agent.pid, signal.SIGCONT)
        if args.host:
            time.sleep(random.uniform(0.0, args.host))
            for pid in servers:
                os.kill(pid, signal.SIGCONT)
        done.wait(args.period - max(args.stopped, args.stopped_max))


def _error_kind(error: str | None) -> str:
    # An error without the figures that differ from line to line.
    return re.sub(r"[\d.]+", "N", error or "(none)")[:80]


def run(
    args: argparse.Namespace, label: str, tree: Path, number: int
) -> list[tuple[str, str]]:
    """One run of the agent of `tree`; its rows."""
    run_label = f"{label} run {number}"
    workdir = Path(tempfile.mkdtemp(prefix="loadeddowns-"))
    answers: Counter[str] = Counter()
    with ExitStack() as started:
        zookeeper, client = start_zookeeper(started)
        servers = start_redis_servers(args.servers, started)
        instances = [
            Instance(f"r{i:04d}", servers[i % args.servers].port)
            for i in range(args.instances)
        ]
        names = [i.name for i in instances]
        config = agent_config(
            instances,
            interval=args.interval,
            timeout=args.timeout,
            zookeeper=zookeeper.hosts,
        )
        if args.reconnect_every:
            # A top-level key: before the tables.
            config = f"reconnect_every = {args.reconnect_every!r}\n{config}"
        agent = Agent(
            workdir,
            config,
            label=label,
            pythonpath=tree,
            open_files=open_files_for(args.instances),
        )
        started.callback(agent.stop)
        agent.wait_ready()
        _wait_all_up(client, names, run_label)
        load_before = load_average()
        logged_before = len(agent.log.read_text().splitlines())
        for _ in range(args.busy):
            busy = psutil.Popen(["python3", "-c", "while True: pass"])
            started.callback(busy.wait)
            started.callback(busy.kill)
        done = threading.Event()
        for _ in range(args.clients):
            thread = threading.Thread(
                target=_loop_http, args=(agent.http_port, done, answers), daemon=True
            )
            thread.start()
            started.callback(thread.join)
        started.callback(done.set)  # Before the joins: they wait for it.
        if args.stopped:
            stopper = threading.Thread(
                target=_stop_in_bursts,
                args=(agent, [s.pid for s in servers], args, done),
                daemon=True,
            )
            stopper.start()
            started.callback(lambda: os.kill(agent.pid, signal.SIGCONT))
            for server in servers:
                started.callback(os.kill, server.pid, signal.SIGCONT)
            started.callback(stopper.join)
            started.callback(done.set)
        loaded_at = time.monotonic()
        healthy_down: set[str] = set()
        load_peak = 0.0
        while time.monotonic() - loaded_at < args.watch + SETTLE:
            if time.monotonic() - loaded_at >= args.watch:
                done.set()
            for name, status in _statuses(client, names).items():
                if status == "down":
                    healthy_down.add(name)
            load_peak = max(load_peak, float(load_average()))
            time.sleep(1.0)
        done.set()
        load_after = load_average()
        logged = agent.log.read_text().splitlines()[logged_before:]
    downs: Counter[str] = Counter()
    for line in logged:
        found = DOWN_LINE.search(line)
        if found is not None:
            downs[_error_kind(found.group(2))] += 1
    late = sum(1 for line in logged if LATE_LINE.search(line))
    decided_down = sum(
        int(found.group(1))
        for found in map(DECIDED_LINE.search, logged)
        if found is not None
    )
    rows = [
        (f"{run_label}: healthy ever published down", f"{len(healthy_down)}"),
        (
            f"{run_label}: 'is down' lines by error",
            ", ".join(f"{n} {kind}" for kind, n in downs.most_common()) or "0",
        ),
        (f"{run_label}: decided down by one check (log)", str(decided_down)),
        (f"{run_label}: lateness lines in the log", str(late)),
        (f"{run_label}: HTTP answers", str(dict(answers))),
        (
            f"{run_label}: load before / peak / after",
            f"{load_before} / {load_peak:.2f} / {load_after}",
        ),
    ]
    if args.keep_logs:
        rows.append((f"{run_label}: log", str(agent.log)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_checkout_option(parser)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--timeout", type=float, default=0.4)
    parser.add_argument("--busy", type=int, default=4)
    parser.add_argument("--clients", type=int, default=15)
    parser.add_argument("--watch", type=float, default=40.0)
    parser.add_argument("--stopped", type=float, default=0.0)
    parser.add_argument("--stopped-max", type=float, default=0.0)
    parser.add_argument("--period", type=float, default=0.4)
    parser.add_argument("--reconnect-every", type=float, default=0.0)
    parser.add_argument("--host", type=float, default=0.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    if args.instances < 1 or args.servers < 1 or args.busy < 0 or args.clients < 0:
        parser.error("--instances, --servers: 1 or more; --busy, --clients: 0 or more")
    if args.stopped and not 0 < max(args.stopped, args.stopped_max) < args.period:
        parser.error("--stopped (and --stopped-max) must be above 0 and below --period")
    rows = rows_in_turns(parser, args, run)
    print(table(rows, "a loaded agent, healthy instances"))


if __name__ == "__main__":
    main()

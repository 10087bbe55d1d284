"""
First checks on an agent short of CPU: healthy instances published down,
and a hung server's instances found down.

``--instances`` names over ``--servers`` redis-servers; with ``--stopped``
the last server is stopped (SIGSTOP) before the agent starts, and its
names are the hung ones. One agent (``twistd -n sentinel``, 1 s interval,
0.5 s timeout, no ZooKeeper) is pinned with ``--busy`` busy loops to one
CPU from its start (it gets 1/(busy + 1) of it), and ``/instances`` is
read every second for ``--watch`` s. Printed, for each of ``--runs`` runs
of each ``--checkout`` (in turns):

- the healthy names decided down by their first check, by error (the
  agent's log: ``down (was unknown)``);
- the checks put off because they timed out while the agent waited for
  a CPU (``/debug/stats`` ``startup.first_checks_starved``; none before
  the rule) and the inconclusive checks;
- the healthy names up at the end; the hung names first read down
  (seconds from the agent's start, p50 and max: ``/instances`` is read
  once a second and takes seconds itself on a starved agent, so these are
  coarse, alike for each build), their statuses at the end, and whether
  the stopped server was still stopped then (a run whose server was
  continued by something else says so, and its hung figures mean
  nothing);
- the load average before and after.

    .venv/bin/python benchmarks/starvedstart.py --checkout before=PATH
        --checkout after=. [--busy 13] [--stopped] [--runs 2]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from common import (
    Agent,
    Instance,
    add_checkout_option,
    agent_config,
    crowd,
    load_average,
    ms_summary,
    rows_in_turns,
    start_redis_servers,
    table,
)

_FIRST_DOWN = re.compile(r"(\S+) is down \(was unknown\): (.*)")


def _state(pid: int) -> str:
    # A process's state letter (T: stopped).
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def run(
    args: argparse.Namespace, label: str, tree: Path, number: int
) -> list[tuple[str, str]]:
    """One start of the agent of `tree`; its rows."""
    run_label = f"{label} run {number}"
    workdir = Path(tempfile.mkdtemp(prefix="starvedstart-"))
    load_before = load_average()
    with ExitStack() as started:
        servers = start_redis_servers(args.servers, started)
        instances = [
            Instance(f"r{i}", servers[i % args.servers].port)
            for i in range(args.instances)
        ]
        last = args.servers - 1
        hung = (
            {f"r{i}" for i in range(args.instances) if i % args.servers == last}
            if args.stopped
            else set()
        )
        pid = servers[last].pid
        if args.stopped:
            os.kill(pid, signal.SIGSTOP)
            started.callback(os.kill, pid, signal.SIGCONT)
        start = time.monotonic()
        agent = Agent(workdir, agent_config(instances), label, pythonpath=tree)
        started.callback(agent.stop)
        crowd(started, agent.pid, args.busy)
        agent.wait_ready()
        down_at: dict[str, float] = {}
        while time.monotonic() - start < args.watch:
            seen = agent.instances()
            now = time.monotonic() - start
            for name in hung - down_at.keys():
                if seen[name].get("status") == "down":
                    down_at[name] = now
            time.sleep(1.0)
        startup = agent.get("/debug/stats")["startup"]
        seen = agent.instances()
        still_stopped = _state(pid) == "T" if args.stopped else None
    downs = Counter(
        error
        for name, error in _FIRST_DOWN.findall(agent.log.read_text())
        if name not in hung
    )
    healthy_up = sum(
        1 for name, doc in seen.items() if name not in hung and doc["status"] == "up"
    )
    rows = [
        (
            f"{run_label}: healthy down at first check",
            f"{sum(downs.values())} {dict(downs) or ''}".strip(),
        ),
        (
            f"{run_label}: put off (CPU) / inconclusive",
            f"{startup.get('first_checks_starved', '-')} / "
            f"{startup['inconclusive_checks']}",
        ),
        (
            f"{run_label}: healthy up at the end",
            f"{healthy_up} of {len(seen) - len(hung)}",
        ),
    ]
    if hung:
        times = list(down_at.values())
        statuses = Counter(str(seen[name]["status"]) for name in hung)
        rows += [
            (
                f"{run_label}: hung first read down",
                f"{len(times)} of {len(hung)}, {ms_summary(times)} from the start",
            ),
            (
                f"{run_label}: hung at the end",
                f"{dict(statuses)}; server still stopped: {still_stopped}",
            ),
        ]
    rows.append((f"{run_label}: load", f"{load_before} -> {load_average()}"))
    shutil.rmtree(workdir, ignore_errors=True)
    return rows


def main() -> int:
    """Run in turns, print the table, stop everything started."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--instances", type=int, default=1000, help="names (1000)")
    add("--servers", type=int, default=10, help="redis-servers (10)")
    add("--busy", type=int, default=13, help="busy loops on the agent's CPU (13)")
    add("--stopped", action="store_true", help="SIGSTOP the last server first")
    add("--watch", type=float, default=25.0, help="seconds watched (25)")
    add("--runs", type=int, default=1, help="runs of each checkout (1)")
    add_checkout_option(parser)
    args = parser.parse_args()
    rows = rows_in_turns(parser, args, run)
    print(table(rows, f"first checks at 1/{args.busy + 1} of a CPU"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

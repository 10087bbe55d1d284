"""
What a small agent costs when nothing happens: the per-host shape (DESIGN.md
section 7), one agent per Redis host with a few tens of instances, whose
fixed costs are paid once per host, thousands of times over a fleet.

A real ``twistd -n sentinel`` with default settings and ``--counts``
instances (distinct names on ``--servers`` shared redis-servers, all
healthy), with a real ZooKeeper and without one, one agent at a time.
After ``--warmup`` s, over ``--duration`` s of steady state:

- CPU, user and system, as a share of one core; RSS, threads and open
  descriptors at the end;
- wake-ups a second: how often the kernel put a thread of the agent on a
  CPU (``/proc/PID/task/TID/schedstat``'s third field, the timeslices
  run), of the reactor thread and of all threads;
- the timers the reactor holds (``/debug/stats``' ``delayed_calls``, the
  most seen) and the check loop's rounds and launches a second;
- the requests the agent sent ZooKeeper a second (ZooKeeper's ``cons``:
  ``recved`` of the agent's connection).

``--strace S`` adds, after the window, ``strace -c -f`` of the agent for
S s: its system calls a second, the most made first (strace slows the
agent: these are counts, not a cost).

    .venv/bin/python benchmarks/idle.py [--counts 0,1,10,50] [--servers 2]
        [--zookeeper on,off] [--warmup 15] [--duration 60] [--strace 0]
        [--checkout LABEL=PATH ...] [--runs 1]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    Agent,
    Instance,
    add_checkout_option,
    agent_config,
    check_choices,
    load_average,
    machine,
    rows_in_turns,
    start_redis_servers,
    start_zookeeper,
    table,
)
from tests.servers import ZooKeeperServer  # noqa: E402

# Seconds between two looks at /debug/stats within the window.
SAMPLE_EVERY = 5.0
# System calls shown from strace, the most made first.
SYSCALLS_SHOWN = 6


def wakeups(pid: int) -> tuple[int, int]:
    """Timeslices run so far by the reactor thread (the PID's) and by all."""
    main = total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            slices = int((task / "schedstat").read_text().split()[2])
        except (OSError, IndexError, ValueError):
            continue  # A thread that ended meanwhile.
        total += slices
        if task.name == str(pid):
            main = slices
    return main, total


def zookeeper_requests(zookeeper: ZooKeeperServer | None, pid: int) -> int | None:
    """The requests ZooKeeper has received on the agent's connection(s)."""
    if zookeeper is None:
        return None
    ports = {
        c.laddr.port
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.raddr and c.raddr.port == zookeeper.port
    }
    cons = zookeeper.four_letter_word("cons", timeout=5.0).decode()
    return sum(
        int(m.group(2))
        for m in re.finditer(r"/127\.0\.0\.1:(\d+)\[\d+\]\(.*?recved=(\d+)", cons)
        if int(m.group(1)) in ports
    )


def syscalls(pid: int, seconds: float) -> str:
    """The agent's system calls a second over `seconds` s, by strace."""
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        subprocess.run(
            ["timeout", "-s", "INT", str(seconds), "strace", "-c", "-f", "-q"]
            + ["-o", out.name, "-p", str(pid)],
            capture_output=True,
            timeout=seconds + 30,
        )
        counts = []
        for line in out.read().splitlines():
            fields = line.split()
            if len(fields) >= 5 and fields[3].isdigit() and fields[-1] != "total":
                counts.append((int(fields[3]), fields[-1]))
    counts.sort(reverse=True)
    return ", ".join(
        f"{name} {count / seconds:.0f}" for count, name in counts[:SYSCALLS_SHOWN]
    )


def measure(
    args: argparse.Namespace,
    label: str,
    checkout: Path,
    count: int,
    zookeeper: ZooKeeperServer | None,
    ports: list[int],
    workdir: Path,
) -> list[tuple[str, str]]:
    """One agent of `count` instances, alone: its window's rows."""
    instances = [Instance(f"r{i}", ports[i % len(ports)]) for i in range(count)]
    name = f"{label}-{count}-{'zk' if zookeeper else 'nozk'}"
    config = agent_config(
        instances,
        zookeeper=None if zookeeper is None else zookeeper.hosts,
        zk_root=f"/idle-{name}",
        agent_id=name,
    )
    agent = Agent(workdir, config, label=name, pythonpath=checkout)
    try:
        agent.wait_ready()
        time.sleep(args.warmup)
        pid = agent.pid
        cpu0, main0, all0 = agent.cpu_times(), *wakeups(pid)
        zk0 = zookeeper_requests(zookeeper, pid)
        stats0 = agent.get("/debug/stats")
        started = time.monotonic()
        timers = stats0["delayed_calls"]
        while time.monotonic() - started < args.duration:
            time.sleep(min(SAMPLE_EVERY, args.duration - (time.monotonic() - started)))
            timers = max(timers, agent.get("/debug/stats")["delayed_calls"])
        stats: dict[str, Any] = agent.get("/debug/stats")
        elapsed = time.monotonic() - started
        cpu1, main1, all1 = agent.cpu_times(), *wakeups(pid)
        zk1 = zookeeper_requests(zookeeper, pid)
        user, system = (
            (b - a) / elapsed * 100 for a, b in zip(cpu0, cpu1, strict=True)
        )
        process = psutil.Process(pid)
        rounds = (stats["ticks"] - stats0["ticks"]) / elapsed
        row = (
            f"CPU {user + system:.2f} % ({user:.2f} user, {system:.2f} sys),"
            f" RSS {agent.rss_bytes() / 2**20:.1f} MiB,"
            f" threads {process.num_threads()}, fds {process.num_fds()};"
            f" wake-ups/s reactor {(main1 - main0) / elapsed:.1f},"
            f" all {(all1 - all0) / elapsed:.1f};"
            f" timers {timers}; rounds/s {rounds:.2f};"
            f" checks failed {stats['failures']}"
        )
        if zk0 is not None and zk1 is not None:
            row += f"; ZooKeeper requests/s {(zk1 - zk0) / elapsed:.2f}"
        row += f"; load {load_average()}"
        rows = [(f"{label} N={count} {'with' if zookeeper else 'no'} ZooKeeper", row)]
        if args.strace:
            rows.append(("  system calls/s", syscalls(pid, args.strace)))
        return rows
    finally:
        agent.stop()


def run(
    args: argparse.Namespace, label: str, checkout: Path, number: int
) -> list[tuple[str, str]]:
    """Every count, with and without ZooKeeper, for one checkout."""
    rows: list[tuple[str, str]] = []
    with ExitStack() as started, tempfile.TemporaryDirectory() as tmp:
        ports = [s.port for s in start_redis_servers(args.servers, started)]
        zookeeper = None
        if "on" in args.zookeeper.split(","):
            zookeeper, client = start_zookeeper(started)
            client.stop()
        for mode in args.zookeeper.split(","):
            for count in args.counts:
                server = zookeeper if mode == "on" else None
                measured = measure(
                    args, label, checkout, count, server, ports, Path(tmp)
                )
                for row in measured:
                    print(*row, sep="  ", flush=True)
                rows += measured
    return rows


def main() -> int:
    """Run the windows and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--counts",
        type=lambda s: [int(n) for n in s.split(",")],
        default=[0, 1, 10, 50],
        help="instances of each agent, comma-separated",
    )
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--zookeeper", default="on,off", help="on, off or both")
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--strace", type=float, default=0.0)
    parser.add_argument("--runs", type=int, default=1)
    add_checkout_option(parser)
    args = parser.parse_args()
    check_choices(parser, "--zookeeper", args.zookeeper, ["on", "off"])
    print(machine(), flush=True)
    rows = rows_in_turns(parser, args, run)
    print(table(rows, "A small agent's fixed costs"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

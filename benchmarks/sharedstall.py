"""
Instances that share one stalled address, as a reader of ZooKeeper sees
them: how long until each is published down, and whether a healthy one
ever is.

One redis-server is stopped (SIGSTOP) before the agent starts, its
listen backlog one connection long (``tcp-backlog 1``): a hung host
whose backlog the first connects fill, every later connect to it timing
out. One agent (``twistd -n sentinel``, 1 s interval, 0.5 s timeout,
fall 3, rise 2) with a ZooKeeper of its own watches one instance there
and ``--healthy`` instances on a running redis-server. Once that one is
published down and its address stalled (one connect to it at a time),
``--hung`` more instances on the hung server (distinct names, as several
Redis databases on one server are) are added to the config, and SIGHUP
sent ``sentinel.settling.QUIET`` + 0.5 s (2.5 s) later, the file then
still long enough to be read at once; their nodes and the healthy ones'
are watched for ``--duration`` s from the reload applied (``/debug/stats``
counting the added instances, polled every 20 ms; how long after the
SIGHUP is printed). With ``--at-start``, every hung instance is in the config from the
start instead (all meet the hung server before its address stalls).
Printed, for each of ``--runs`` runs of each ``--checkout``
(interleaved):

- the seconds from the reload applied (or the agent's first answer) to each
  added hung instance's node saying down (p50 / max, how many within
  interval x fall + timeout), and how many never did;
- the healthy instances whose node ever said down;
- ``/healthz`` at the end, and the load average.

    .venv/bin/python benchmarks/sharedstall.py --checkout before=PATH
        --checkout after=. [--hung 20 --healthy 300] [--runs 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

from common import (
    Agent,
    Instance,
    RedisServer,
    add_checkout_option,
    agent_config,
    load_average,
    rows_in_turns,
    start_zookeeper,
    table,
)
from detection import ZK_ROOT, ZooKeeperWatch
from rack import healthz

from sentinel.settling import QUIET

INTERVAL = 1.0
TIMEOUT = 0.5
FALL = 3
# A hung instance's bound for down: interval * fall + timeout.
BOUND = INTERVAL * FALL + TIMEOUT


def run(args: argparse.Namespace, label: str, checkout: Path, number: int) -> Any:
    """One agent of `checkout` against the hung server; its rows."""
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-sharedstall-"))
    with ExitStack() as started:
        healthy_server = RedisServer().start()
        started.callback(healthy_server.stop)
        hung_server = RedisServer(extra_args=["--tcp-backlog", "1"]).start()
        started.callback(hung_server.stop)
        hung_server.pause()
        zookeeper, client = start_zookeeper(started)
        hung = [f"hung{i}" for i in range(args.hung)]
        healthy = [f"h{i}" for i in range(args.healthy)]
        zk = ZooKeeperWatch(client, ["first", *hung, *healthy])
        config = partial(
            agent_config,
            interval=INTERVAL,
            timeout=TIMEOUT,
            fall=FALL,
            zookeeper=zookeeper.hosts,
            zk_root=ZK_ROOT,
        )
        first = [Instance("first", hung_server.port)]
        added = [Instance(n, hung_server.port) for n in hung]
        beside = [Instance(n, healthy_server.port) for n in healthy]
        agent = Agent(
            workdir,
            config((added if args.at_start else first) + beside),
            label=f"{label}{number}",
            pythonpath=checkout,
            open_files=len(added) + len(beside) + 1025,
        )
        started.callback(agent.stop)
        agent.wait_ready()
        began = time.time()
        applied = "at the start"
        if not args.at_start:
            while (
                zk.status("first") != "down"
                or not agent.get("/debug/stats")["startup"]["stalled_addresses"]
            ):
                if time.time() - began > args.duration:
                    raise RuntimeError("the hung server's address never stalled")
                time.sleep(0.05)
            # Written QUIET s before the signal: a reload reads the file once
            # it has kept still that long (sentinel.settling), a wait the
            # bound does not count; the clock starts at the reload applied.
            agent.config_path.write_text(config(first + added + beside))
            time.sleep(QUIET + 0.5)
            signalled = time.time()
            os.kill(agent.pid, signal.SIGHUP)
            wanted = 1 + len(added) + len(beside)
            while agent.get("/debug/stats")["instances"] < wanted:
                if time.time() - signalled > args.duration:
                    raise RuntimeError("the reload was never applied")
                time.sleep(0.02)
            began = time.time()
            applied = f"{began - signalled:.2f} s after the SIGHUP"
        time.sleep(args.duration)
        health = healthz(agent)
        load = load_average()
        downs = [zk.became(n, "down", 0.0) for n in hung]
        times = sorted(at - began for at in downs if at is not None)
        false = [n for n in healthy if any(s == "down" for _, s in zk.changes[n])]
        never = len(hung) - len(times)
        within = sum(1 for t in times if t <= BOUND)
        shown = (
            f"p50 {times[len(times) // 2]:.1f} s, max {times[-1]:.1f} s, "
            f"{within} within {BOUND:g} s"
            if times
            else "none"
        )
        rows = [
            (
                f"{label} run {number + 1}: hung published down",
                f"{len(times)} of {len(hung)} ({shown}); never within "
                f"{args.duration:g} s: {never}",
            ),
            (f"{label} run {number + 1}: reload applied", applied),
            (f"{label} run {number + 1}: healthy not up", str(len(false))),
            (f"{label} run {number + 1}: /healthz at the end", health),
            (f"{label} run {number + 1}: load", load),
        ]
    shutil.rmtree(workdir, ignore_errors=True)
    return rows


def main() -> int:
    """Run in turns, print the table, stop everything started."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--hung", type=int, default=20, help="instances on the hung server (20)")
    add("--healthy", type=int, default=300, help="instances beside them (300)")
    add("--duration", type=float, default=45.0, help="seconds watched (45)")
    add("--runs", type=int, default=1, help="runs of each checkout (1)")
    add("--at-start", action="store_true", help="hung ones configured from the start")
    add_checkout_option(parser)
    args = parser.parse_args()
    rows = rows_in_turns(parser, args, run)
    print(table(rows, f"shared stall (bound interval*fall + timeout {BOUND:g} s)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

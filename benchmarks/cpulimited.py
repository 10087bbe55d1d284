"""
HTTP clients against an agent held to part of a core: do checks fail?

One agent (``twistd -n sentinel``, interval 0.5 s, timeout 0.4 s, as
``tests/test_http_load.py``) watches ``--instances`` names over
``--servers`` redis-servers. Once every instance is up, the agent is put
in a cgroup (v1 cpu controller, so run as root) holding it to ``--quota``
of one core (0: none), or pinned with ``--crowd`` busy loops on one CPU
(a 1/(crowd + 1) share of it, the busy loops started and killed by PID),
then checks are counted (``/debug/stats``) over ``--watch``
s without HTTP clients, ``--watch`` s with ``--clients`` clients looping
over ``/`` and ``/instances``, and ``--watch`` s without again. Printed
per window: checks, failed checks, overruns (checks still in flight at
their next turn), the clients' answers, the agent's CPU
share, and the load average. The redis-servers stay outside the cgroup.

    .venv/bin/python benchmarks/cpulimited.py [--quota 0.5] [--crowd 0]
        [--clients 15]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    Agent,
    Instance,
    agent_config,
    crowd,
    load_average,
    open_files_for,
    start_redis_servers,
    wait_until,
)

CGROUP_ROOT = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 100_000
PATHS = ("/", "/instances")


class CpuLimit:
    """A cgroup v1 cpu group holding its processes to a share of one core."""

    def __init__(self, name: str, share: float) -> None:
        self.path = CGROUP_ROOT / name
        self.path.mkdir()
        (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (self.path / "cpu.cfs_quota_us").write_text(str(int(share * PERIOD_US)))

    def add(self, pid: int) -> None:
        """Move `pid` (every thread of it) into the group."""
        (self.path / "cgroup.procs").write_text(str(pid))

    def remove(self) -> None:
        """Move whatever is left back to the root group, then remove the group."""
        for pid in (self.path / "cgroup.procs").read_text().split():
            try:
                (CGROUP_ROOT / "cgroup.procs").write_text(pid)
            except OSError:
                pass  # Gone meanwhile.
        self.path.rmdir()


def _loop_http(port: int, done: threading.Event, answers: Counter[str]) -> None:
    # GET each path in turn until `done`; count the answers by status.
    while not done.is_set():
        for path in PATHS:
            try:
                url = f"http://127.0.0.1:{port}{path}"
                with urllib.request.urlopen(url, timeout=60.0) as response:
                    response.read()
                    answers[str(response.status)] += 1
            except Exception as error:
                answers[type(error).__name__] += 1


def window(agent: Agent, seconds: float, clients: int) -> dict[str, Any]:
    """Checks and failures over `seconds`, with `clients` looping meanwhile."""
    before = agent.get("/debug/stats", timeout=60.0)
    cpu = agent.cpu_seconds()
    started = time.monotonic()
    done = threading.Event()
    answers: Counter[str] = Counter()
    threads = [
        threading.Thread(target=_loop_http, args=(agent.http_port, done, answers))
        for _ in range(clients)
    ]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    done.set()
    for thread in threads:
        thread.join(120.0)
    after = agent.get("/debug/stats", timeout=60.0)
    took = time.monotonic() - started
    return {
        "seconds": round(took, 1),
        "checks": after["checks"] - before["checks"],
        "failures": after["failures"] - before["failures"],
        "overruns": after["overruns"] - before["overruns"],
        "answers": dict(answers),
        "cpu_share": round((agent.cpu_seconds() - cpu) / took, 2),
        "held_slices": after["http"].get("held_slices", 0)
        - before["http"].get("held_slices", 0),
        "load": load_average(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1500)
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--clients", type=int, default=15)
    parser.add_argument("--quota", type=float, default=0.5)
    parser.add_argument("--crowd", type=int, default=0)
    parser.add_argument("--watch", type=float, default=10.0)
    args = parser.parse_args()
    with ExitStack() as started, tempfile.TemporaryDirectory() as workdir:
        servers = start_redis_servers(args.servers, started)
        instances = [
            Instance(f"r{i:05d}", servers[i % len(servers)].port)
            for i in range(args.instances)
        ]
        config = agent_config(instances, interval=0.5, timeout=0.4)
        agent = Agent(Path(workdir), config, open_files=open_files_for(args.instances))
        started.callback(agent.stop)
        agent.wait_ready()
        wait_until(
            lambda: agent.get("/debug/stats")["instances_up"] == args.instances,
            120.0,
            "every instance up",
            0.5,
        )
        time.sleep(20.0)  # The agent's collection once connections settle.
        if args.quota:
            limit = CpuLimit(f"cpulimited-{os.getpid()}", args.quota)
            started.callback(limit.remove)
            limit.add(agent.pid)
        if args.crowd:
            crowd(started, agent.pid, args.crowd)
        time.sleep(2.0)
        for label, clients in (("quiet", 0), ("clients", args.clients), ("quiet", 0)):
            print(label, window(agent, args.watch, clients), flush=True)


if __name__ == "__main__":
    main()

"""
Descriptors at the open-file limit: an agent's first wave of renewals.

One agent (``twistd -n sentinel``, defaults: renewals every 45--60 s)
watches N instances over 4 real redis-servers with its open-file limit at
the least it accepts (N + 128, ``sentinel.process.FD_RESERVE``), and no
HTTP client but this script's last question. Its open descriptors are
counted every 5 ms for ``--seconds`` (past the first renewals); printed:
the steady count (at 15 s), the most and when, and the checks that found
no socket (``/debug/stats``: ``sockets``).

    .venv/bin/python benchmarks/renewals.py [--instances 3000] [--seconds 100]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from common import (
    Agent,
    Instance,
    agent_config,
    load_average,
    machine,
    start_redis_servers,
    stop_on_sigterm,
    table,
)

FD_RESERVE = 128


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=3000, help="N (3000)")
    parser.add_argument("--seconds", type=float, default=100.0, help="watched (100)")
    args = parser.parse_args()
    stop_on_sigterm()
    n = args.instances
    with ExitStack() as started:
        ports = [s.port for s in start_redis_servers(4, started)]
        workdir = Path(tempfile.mkdtemp(prefix="sentinel-renewals-"))
        started.callback(shutil.rmtree, workdir, ignore_errors=True)
        instances = [Instance(f"r{i}", ports[i % len(ports)]) for i in range(n)]
        agent = Agent(workdir, agent_config(instances), open_files=n + FD_RESERVE)
        started.callback(agent.stop)
        agent.wait_ready()
        descriptors = f"/proc/{agent.pid}/fd"
        start = time.monotonic()
        steady = peak = 0
        peak_at = 0.0
        while (elapsed := time.monotonic() - start) < args.seconds:
            count = len(os.listdir(descriptors))
            if count > peak:
                peak, peak_at = count, elapsed
            if not steady and elapsed > 15:
                steady = count
            time.sleep(0.005)
        stats = agent.get("/debug/stats")
    sockets = stats.get("sockets") or {}
    rows = [
        ("machine", machine()),
        ("open-file limit", f"{n + FD_RESERVE:,}"),
        ("descriptors steady, most", f"{steady:,}, {peak:,} (at {peak_at:.0f} s)"),
        ("checks without a socket", f"{sockets.get('checks_without_socket', 0):,}"),
        ("checks failed", f"{stats['failures']:,}"),
        ("load average", load_average()),
    ]
    print(table(rows, f"Renewals at the open-file limit ({n:,} instances)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""
Instructions per check: the agent's own work, counted rather than timed.

CPU time per check moves by several per cent from run to run on a shared
machine (caches, the scheduler, the other servers), more than most changes
to the check path. valgrind's callgrind counts the instructions the agent
executes instead: the same for the same code and load, whatever else runs.
The agent (``twistd -n sentinel``, under callgrind with instrumentation off
until the window) watches N instances over two real redis-servers, with a
timeout long enough for valgrind's slowdown; once every instance is up,
instructions are counted over the window and divided by the checks made
in it. User-space instructions only: the kernel's share of a check (its
send and receive) is not counted.

With ``--checkout LABEL=PATH`` (repeatable), each checkout's agent is
counted in turn, on the same servers.

    .venv/bin/python benchmarks/instructions.py [--instances 300]
        [--checkout before=../old --checkout after=.] [--keep]

Each agent's work dir (config, log, callgrind's output) is removed once it
is counted, however the run ends, unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from common import (
    Instance,
    add_checkout_option,
    agent_config,
    checkouts_of,
    commit_of,
    free_port,
    machine,
    start_redis_servers,
    stop_on_sigterm,
    table,
    wait_until,
)

SETTLE = 5.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--instances", type=int, default=300, help="N (300)")
    add("--window", type=float, default=20.0, help="counted, s (20)")
    add("--start-limit", type=float, default=300.0, help="s for all to be up")
    add("--keep", action="store_true", help="keep the work dirs (log, callgrind)")
    add_checkout_option(parser)
    args = parser.parse_args()
    if args.instances < 1 or args.window <= 0:
        parser.error("--instances and --window must be positive")
    args.checkouts = checkouts_of(parser, args.checkout)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        parser.error("needs valgrind (Debian's valgrind package)")
    return args


def callgrind_control(*arguments: str) -> None:
    """Tell the running callgrind what to do (on, off, dump)."""
    subprocess.run(["callgrind_control", *arguments], check=True, capture_output=True)


def count(
    args: argparse.Namespace, label: str, checkout: Path, ports: list[int]
) -> tuple[float, int]:
    """The instructions per check of `checkout`'s agent, and the checks."""
    with ExitStack() as started:
        workdir = Path(tempfile.mkdtemp(prefix=f"sentinel-instructions-{label}-"))
        if args.keep:
            print(f"{label}: work dir kept: {workdir}", file=sys.stderr)
        else:
            started.callback(shutil.rmtree, workdir, ignore_errors=True)
        n = args.instances
        instances = [Instance(f"r{i}", ports[i % len(ports)]) for i in range(n)]
        config = workdir / "agent.toml"
        config.write_text(agent_config(instances, timeout=0.9))
        port = free_port()
        out = workdir / "callgrind.out"
        twistd = Path(sys.executable).with_name("twistd")
        command = [
            "valgrind", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            sys.executable, str(twistd), "-n", "--pidfile=", "sentinel",
            "--config", str(config), "--http", f"tcp:{port}:interface=127.0.0.1",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(checkout)}
        with open(workdir / "agent.log", "wb") as log:
            child = subprocess.Popen(
                command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
            )

        def stop() -> None:
            child.terminate()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

        started.callback(stop)
        url = f"http://127.0.0.1:{port}/debug/stats"

        def stats() -> dict[str, int]:
            with urllib.request.urlopen(url, timeout=30) as response:
                answer: dict[str, int] = json.loads(response.read())
                return answer

        def all_up() -> bool:
            try:
                return stats()["instances_up"] >= n
            except OSError:
                return False

        wait_until(all_up, args.start_limit, "every instance up", 1.0)
        time.sleep(SETTLE)
        pid = str(child.pid)
        callgrind_control("-i", "on", pid)
        checks_before = stats()["checks"]
        time.sleep(args.window)
        checks = stats()["checks"] - checks_before
        callgrind_control("-d", pid)
        callgrind_control("-i", "off", pid)
        dumps = sorted(workdir.glob("callgrind.out*"), key=os.path.getmtime)
        counted = 0
        for line in dumps[-1].read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                counted = int(line.split()[1])
        print(f"{label} done", file=sys.stderr, flush=True)
        return counted / max(checks, 1), checks


def main() -> int:
    args = parse_args()
    stop_on_sigterm()
    rows = [("machine", machine())]
    with ExitStack() as started:
        ports = [s.port for s in start_redis_servers(2, started)]
        for label, checkout in args.checkouts:
            per_check, checks = count(args, label, checkout, ports)
            rows.append(
                (
                    f"{label} ({commit_of(checkout)})",
                    f"{per_check:,.0f} instructions per check ({checks:,} checks)",
                )
            )
    title = (
        f"Instructions per check (benchmarks/instructions.py, "
        f"{args.instances:,} instances, {args.window:g} s)"
    )
    print(table(rows, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())

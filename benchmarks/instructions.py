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
counted in turn, on the same servers. With ``--floor``, so is the CPython
floor (``benchmarks/floor.py``, **2, the floor** in BENCHMARKS.rst): the
bare loop, then the loop with a Deferred a check, over the same N
connections, its instructions divided by the replies it read in the window:
how far the agent's check is from the least a checker in CPython does, in
instructions rather than time.

    .venv/bin/python benchmarks/instructions.py [--instances 300]
        [--checkout before=../old --checkout after=.] [--floor] [--keep]

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
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from common import (
    Instance,
    add_checkout_option,
    agent_config,
    checkouts_of,
    commit_of,
    free_port,
    load_average,
    machine,
    start_redis_servers,
    stop_on_sigterm,
    table,
    wait_until,
)

SETTLE = 5.0

# Instructions per check, checks counted, sends seen, load average.
Counted = tuple[float, int, int, str]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--instances", type=int, default=300, help="N (300)")
    add("--window", type=float, default=20.0, help="counted, s (20)")
    add("--start-limit", type=float, default=300.0, help="s for all to be up")
    add("--keep", action="store_true", help="keep the work dirs (log, callgrind)")
    add("--floor", action="store_true", help="count floor.py's loops too")
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


def read_dump(path: Path) -> tuple[int, int]:
    """
    The instructions a callgrind dump counted, and the calls it saw of
    the socket module's ``send`` (0 if its symbols are not there).
    """
    names: dict[str, str] = {}
    instructions = sends = 0
    called = ""
    for line in path.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            instructions = int(line.split()[1])
        elif line.startswith("cfn="):
            # "cfn=(id) name" names the id the first time, "cfn=(id)" after.
            ident, _, name = line[4:].partition(" ")
            if name:
                names[ident] = name
            called = names.get(ident, "")
        elif line.startswith("calls=") and called == "sock_send":
            sends += int(line[6:].split()[0])
        elif line.startswith("fn="):
            ident, _, name = line[3:].partition(" ")
            if name:
                names[ident] = name
    return instructions, sends


def counted_window(
    command: list[str],
    env: dict[str, str],
    workdir: Path,
    args: argparse.Namespace,
    ready: Callable[[], bool],
    done: Callable[[], int],
) -> Counted:
    """
    Run `command` under callgrind in `workdir` until `ready`, then count its
    instructions over the window: per check, the checks done in the window
    by `done` (a running count read just before the window's start and
    end), the checks by the sends callgrind saw, and the load average
    at the window's end.

    Each check is one send (its commands in one write; the floor's too),
    and the sends are counted within the window itself: the checks a
    process's own count gives can be off by a few per cent from the
    instructions' window, the process being slow and bursty under
    valgrind. Per send, where callgrind saw them; else per check counted.
    """
    out = workdir / "callgrind.out"
    valgrind = [
        "valgrind", "--tool=callgrind", "--instr-atstart=no",
        f"--callgrind-out-file={out}",
    ]  # fmt: skip
    with ExitStack() as started, open(workdir / "child.log", "wb") as log:
        child = subprocess.Popen(
            valgrind + command,
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def stop() -> None:
            child.terminate()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

        started.callback(stop)
        wait_until(ready, args.start_limit, "ready to count", 1.0)
        time.sleep(SETTLE)
        pid = str(child.pid)
        # The count read just before each callgrind_control: both ends of
        # the window lag it by the same time.
        before = done()
        callgrind_control("-i", "on", pid)
        time.sleep(args.window)
        units = done() - before
        callgrind_control("-d", pid)
        callgrind_control("-i", "off", pid)
        dumps = sorted(workdir.glob("callgrind.out*"), key=os.path.getmtime)
        instructions, sends = read_dump(dumps[-1])
        per_check = instructions / max(sends or units, 1)
        return per_check, units, sends, load_average()


def work_dir(args: argparse.Namespace, label: str, started: ExitStack) -> Path:
    """A fresh work dir, removed when `started` closes unless ``--keep``."""
    workdir = Path(tempfile.mkdtemp(prefix=f"sentinel-instructions-{label}-"))
    if args.keep:
        print(f"{label}: work dir kept: {workdir}", file=sys.stderr)
    else:
        started.callback(shutil.rmtree, workdir, ignore_errors=True)
    return workdir


def count(
    args: argparse.Namespace, label: str, checkout: Path, ports: list[int]
) -> Counted:
    """
    The instructions per check of `checkout`'s agent, the checks it counted,
    the sends and the load (`counted_window`).
    """
    with ExitStack() as started:
        workdir = work_dir(args, label, started)
        n = args.instances
        instances = [Instance(f"r{i}", ports[i % len(ports)]) for i in range(n)]
        config = workdir / "agent.toml"
        config.write_text(agent_config(instances, timeout=0.9))
        port = free_port()
        twistd = Path(sys.executable).with_name("twistd")
        command = [
            sys.executable, str(twistd), "-n", "--pidfile=", "sentinel",
            "--config", str(config), "--http", f"tcp:{port}:interface=127.0.0.1",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(checkout)}
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

        counted = counted_window(
            command, env, workdir, args, all_up, lambda: stats()["checks"]
        )
        print(f"{label} done", file=sys.stderr, flush=True)
        return counted


def count_floor(args: argparse.Namespace, deferred: bool, ports: list[int]) -> Counted:
    """
    The instructions per check of ``floor.py`` (with a Deferred a check if
    `deferred`) over N connections to `ports`, its replies, its sends and
    the load.
    """
    label = "floor-deferred" if deferred else "floor"
    with ExitStack() as started:
        workdir = work_dir(args, label, started)
        count_file = workdir / "replies"
        every = ",".join(str(ports[i % len(ports)]) for i in range(args.instances))
        command = [
            sys.executable, str(Path(__file__).with_name("floor.py")),
            "--ports", every, "--count-file", str(count_file),
        ]  # fmt: skip
        if deferred:
            command.append("--deferred")
        # floor.py imports the agent's command bytes: this checkout's.
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}

        def replies() -> int:
            # floor.py writes its count once a second: read as it changes,
            # so that the window's two ends lag the count alike.
            last = count_file.read_text()
            wait_until(lambda: count_file.read_text() != last, 5.0, "a count")
            return int(count_file.read_text().split()[0])

        counted = counted_window(
            command, env, workdir, args, count_file.exists, replies
        )
        print(f"{label} done", file=sys.stderr, flush=True)
        return counted


def main() -> int:
    args = parse_args()
    stop_on_sigterm()
    rows = [("machine", machine())]
    with ExitStack() as started:
        ports = [s.port for s in start_redis_servers(2, started)]
        counted: list[tuple[str, Counted]] = [
            (f"{label} ({commit_of(checkout)})", count(args, label, checkout, ports))
            for label, checkout in args.checkouts
        ]
        if args.floor:
            counted += [
                (
                    f"floor: {'a Deferred a check' if deferred else 'the bare loop'}",
                    count_floor(args, deferred, ports),
                )
                for deferred in (False, True)
            ]
    for label, (per_check, checks, sends, load) in counted:
        rows.append(
            (
                label,
                f"{per_check:,.0f} instructions per check ({sends:,} sends,"
                f" {checks:,} checks counted; load {load})",
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

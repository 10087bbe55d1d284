"""
Restarts of a daemon (``twistd`` without ``-n``, ``--pidfile`` and
``--logfile``) with a ``state_dir``, driven as an init script does, and
read from ZooKeeper every 30 ms.

Two scenes, for each ``--checkout``:

- ``deploy``: an old daemon starts while ZooKeeper is unreachable (a
  refused port), so it records no session; ``--age`` seconds later (past
  `sentinel.startlock.STARTING_WINDOW`) a new daemon is started on the
  same ``state_dir`` with a pidfile of its own, as a deploy that starts
  the new process before stopping the old. Printed: the pid the lock
  names and the daemon's, and the new daemon's exit status and line.
- ``restarts``: a real ZooKeeper, ``--instances`` instances on one
  redis-server. A daemon is started; started again while it runs (its
  pidfile names a live process); stopped with SIGTERM through its pidfile
  and started; killed with SIGKILL (a stale pidfile) and started; stopped,
  started with a log file it cannot write (its directory missing), and
  started again. Printed: each start's exit
  status and first line, whether each start reattached, the pid the state
  file names against the daemon's, and the instance nodes missing meanwhile.

    .venv/bin/python benchmarks/daemons.py [--checkout LABEL=PATH ...]
        [--scenes deploy,restarts] [--age 33] [--instances 10]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from common import (
    LOOPBACK,
    Instance,
    add_checkout_option,
    agent_config,
    check_choices,
    checkouts_of,
    commit_of,
    free_port,
    load_average,
    start_redis_servers,
    start_zookeeper,
    table,
    wait_until,
)
from kazoo.client import KazooClient

SCENES = ("deploy", "restarts")
POLL = 0.03


class Reader(threading.Thread):
    """Reads every instance node every `POLL` seconds; the longest absence."""

    def __init__(self, client: KazooClient, paths: list[str]) -> None:
        super().__init__(daemon=True)
        self.client, self.paths = client, paths
        self.missing_since: dict[str, float] = {}
        self.longest = 0.0
        self.polls = 0
        self.ended = threading.Event()

    def run(self) -> None:
        while not self.ended.is_set():
            now = time.monotonic()
            for path in self.paths:
                there = self.client.exists(path) is not None
                since = self.missing_since.get(path)
                if not there and since is None:
                    self.missing_since[path] = now
                elif there and since is not None:
                    self.longest = max(self.longest, now - since)
                    del self.missing_since[path]
            self.polls += 1
            time.sleep(POLL)

    def end(self) -> str:
        self.ended.set()
        self.join(5)
        now = time.monotonic()
        longest = max([self.longest, *(now - s for s in self.missing_since.values())])
        return f"longest missing {longest:.2f} s ({self.polls} polls)"


class Daemons:
    """twistd daemons of one checkout in `work`, each with its own pidfile."""

    def __init__(self, checkout: Path, work: Path, config: str) -> None:
        self.checkout, self.work = checkout, work
        self.config = work / "agent.toml"
        self.config.write_text(config)
        self.started: list[int] = []

    def start(self, label: str, log: Path | None = None) -> tuple[int, str]:
        """twistd's exit status and first line of output (the parent's)."""
        twistd = Path(sys.executable).with_name("twistd")
        done = subprocess.run(
            [
                str(twistd), f"--pidfile={self.pidfile(label)}",
                f"--logfile={log or self.log(label)}",
                "sentinel", "--config", str(self.config), "--http", "none",
            ],
            env={**os.environ, "PYTHONPATH": str(self.checkout)},
            cwd=self.work, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        pid = self.pid(label)
        if pid is not None and pid not in self.started:
            self.started.append(pid)
        lines = (done.stdout + done.stderr).strip().splitlines()
        return done.returncode, lines[0] if lines else ""

    def pidfile(self, label: str) -> Path:
        return self.work / f"{label}.pid"

    def log(self, label: str) -> Path:
        return self.work / f"{label}.log"

    def pid(self, label: str) -> int | None:
        try:
            return int(self.pidfile(label).read_text())
        except (OSError, ValueError):
            return None

    def reattached(self, label: str) -> str:
        """The handoff's last line in `label`'s log: reattached or why not."""
        for line in reversed(self.log(label).read_text().splitlines()):
            if "reattached" in line and "sentinel.handoff" in line:
                return line.split("] ", 1)[1][:70]
        return "(no line)"

    def end(self, pid: int, how: int = signal.SIGTERM) -> None:
        os.kill(pid, how)
        wait_until(lambda: not os.path.exists(f"/proc/{pid}"), 15, f"pid {pid} ends")

    def kill_all(self) -> None:
        for pid in self.started:
            if os.path.exists(f"/proc/{pid}"):
                os.kill(pid, signal.SIGKILL)


def daemons_in(
    started: ExitStack, checkout: Path, work: Path, names: list[str], zookeeper: str
) -> Daemons:
    """
    Daemons of `checkout` in `work` (state_dir ``work/state``), watching
    `names` on one redis-server; `started` stops the server and kills
    every daemon still running.
    """
    redis = start_redis_servers(1, started)[0]
    config = f'state_dir = "{work / "state"}"\n' + agent_config(
        [Instance(name, redis.port) for name in names], zookeeper=zookeeper
    )
    daemons = Daemons(checkout, work, config)
    started.callback(daemons.kill_all)
    return daemons


def lock_pid(state_dir: Path) -> str:
    try:
        return (state_dir / "start.lock").read_text().strip()
    except OSError:
        return "-"


def deploy(
    checkout: Path, label: str, args: argparse.Namespace, started: ExitStack, work: Path
) -> list[tuple[str, str]]:
    state_dir = work / "state"
    unreachable = f"{LOOPBACK}:{free_port()}"
    daemons = daemons_in(started, checkout, work, ["r0"], unreachable)
    status, _ = daemons.start("old")
    old = daemons.pid("old")
    wait_until(lambda: lock_pid(state_dir) not in ("-", ""), 30, "the lock")
    rows = [
        (f"{label} deploy: old daemon", f"status {status}, pid {old}"),
        (f"{label} deploy: the lock names", f"pid {lock_pid(state_dir)}"),
    ]
    time.sleep(args.age)
    status, line = daemons.start("new")
    rows.append(
        (f"{label} deploy: new daemon after {args.age:g} s", f"status {status}")
    )
    if line:
        rows.append((f"{label} deploy: its line", line[:110]))
    return rows


def restarts(
    checkout: Path, label: str, args: argparse.Namespace, started: ExitStack, work: Path
) -> list[tuple[str, str]]:
    state_dir = work / "state"
    zookeeper, client = start_zookeeper(started)
    names = [f"r{i}" for i in range(args.instances)]
    daemons = daemons_in(started, checkout, work, names, zookeeper.hosts)
    rows = []

    def row(what: str, value: str) -> None:
        rows.append((f"{label} {what}", value))

    def owner() -> str:
        state = json.loads((state_dir / "zookeeper-session.json").read_text())
        return f"pid {state['owner']['pid']}"

    daemons.start("d1")
    paths = [f"/sentinel/instances/{name}" for name in names]
    wait_until(lambda: all(client.exists(p) for p in paths), 60, "the nodes")
    time.sleep(1)
    reader = Reader(client, paths)
    reader.start()
    row("daemon", f"pid {daemons.pid('d1')}; the state file names {owner()}")
    status, line = daemons.start("d1")
    row("started again while it runs", f"status {status}: {line[:60]}")
    daemons.end(daemons.pid("d1") or 0)
    row("SIGTERM: pidfile left", str(daemons.pidfile("d1").exists()))
    status, _ = daemons.start("d2")
    time.sleep(3)
    row("started after SIGTERM", f"status {status}; {daemons.reattached('d2')}")
    row("  the state file names", f"{owner()} (daemon {daemons.pid('d2')})")
    daemons.end(daemons.pid("d2") or 0, signal.SIGKILL)
    status, line = daemons.start("d2")
    time.sleep(3)
    row("started after SIGKILL", f"status {status}: {line[:40]}")
    row("  reattached", daemons.reattached("d2"))
    daemons.end(daemons.pid("d2") or 0)
    status, line = daemons.start("d3", work / "missing" / "twistd.log")
    row("started, log not writable", f"status {status}: {line[:70]}")
    daemons.start("d4")
    time.sleep(3)
    row("started again", daemons.reattached("d4"))
    row("instance nodes, read every 30 ms", reader.end())
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_checkout_option(parser)
    parser.add_argument("--scenes", default=",".join(SCENES))
    parser.add_argument("--age", type=float, default=33.0)
    parser.add_argument("--instances", type=int, default=10)
    args = parser.parse_args()
    check_choices(parser, "--scenes", args.scenes, SCENES)
    rows = []
    for label, checkout in checkouts_of(parser, args.checkout):
        rows.append((f"version {label}", commit_of(checkout)))
        for scene in args.scenes.split(","):
            run = {"deploy": deploy, "restarts": restarts}[scene]
            with ExitStack() as started, tempfile.TemporaryDirectory() as scratch:
                rows += run(checkout, label, args, started, Path(scratch))
    rows.append(("load average (1 min) at the end", load_average()))
    print(table(rows, "Daemons restarted with a state_dir"))


if __name__ == "__main__":
    main()

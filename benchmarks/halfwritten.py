"""
A ``SIGHUP`` that comes while the config file is written in place (README
"Running", on reloads): what the agent applies, and what readers of
ZooKeeper see of the instances meanwhile.

One ``twistd -n sentinel`` agent watches ``--instances`` instances over
three redis-servers and publishes to a ZooKeeper of the script's own. Its
file, left alone for a minute first, is then written in place as ``cat >
sentinel.toml`` would, in one of two scenes:

``empty``: the file is truncated, ``SIGHUP`` is sent, and the file is
written back whole ``--pause`` s later.

``prefix``: the file's first two thirds of ``[[redis]]`` tables are
written, ``SIGHUP`` is sent 0.3 s later, and the rest of the file follows
``--pause`` s after the prefix.

A reader polls ``{root}/instances`` every 20 ms for ``--watch`` s from the
signal: the fewest instance nodes seen, how long any was missing, the
instances ``/instances`` lists at the end, the reload lines of the log,
and the seconds from the file's last write to the reload applied after
it.

    .venv/bin/python benchmarks/halfwritten.py prefix \\
        --checkout before=../before --checkout after=. [--runs 2]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from common import (
    Agent,
    Instance,
    add_checkout_option,
    agent_config,
    load_average,
    rows_in_turns,
    start_redis_servers,
    start_zookeeper,
    table,
    wait_until,
)
from kazoo.client import KazooClient

ROOT = "/halfwritten"

Rows = list[tuple[str, str]]


def node_counts(client: KazooClient, seconds: float) -> list[tuple[float, int]]:
    """(monotonic time, instance nodes) every 20 ms for `seconds`."""
    seen = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        seen.append((time.monotonic(), len(client.get_children(f"{ROOT}/instances"))))
        time.sleep(0.02)
    return seen


def write_in_place(path: Path, parts: list[str], pause: float) -> float:
    """Write `parts` into `path` in place, `pause` s apart; the last write's time."""
    with open(path, "w") as f:
        for number, part in enumerate(parts):
            if number:
                time.sleep(pause)
            f.write(part)
            f.flush()
    return time.monotonic()


def run(args: argparse.Namespace, label: str, checkout: Path, number: int) -> Rows:
    """One scene on one checkout's agent."""
    with (
        ExitStack() as started,
        tempfile.TemporaryDirectory(prefix="sentinel-halfwritten-") as workdir,
    ):
        servers = start_redis_servers(3, started)
        zookeeper, client = start_zookeeper(started)
        instances = [
            Instance(f"cache-{i}", servers[i % 3].port) for i in range(args.instances)
        ]
        text = agent_config(instances, zookeeper=zookeeper.hosts, zk_root=ROOT)
        agent = Agent(Path(workdir), text, pythonpath=checkout)
        started.callback(agent.stop)
        agent.wait_ready()
        wait_until(
            lambda: (
                client.exists(f"{ROOT}/instances") is not None
                and len(client.get_children(f"{ROOT}/instances")) == args.instances
            ),
            60.0,
            "every instance node",
        )
        a_minute_ago = time.time() - 60
        os.utime(agent.config_path, (a_minute_ago, a_minute_ago))
        if args.scene == "empty":
            parts = ["", text]
        else:
            cut = [i for i in range(len(text)) if text.startswith("[[redis]]", i)]
            at = cut[2 * len(cut) // 3]
            parts = [text[:at], text[at:]]
        writing: list[float] = []
        writer = threading.Thread(
            target=lambda: writing.append(
                write_in_place(agent.config_path, parts, args.pause)
            )
        )
        writer.start()
        time.sleep(0.3 if args.scene == "prefix" else 0.05)
        os.kill(agent.pid, signal.SIGHUP)
        sent = time.monotonic()
        seen = node_counts(client, args.watch)
        writer.join()
        missing = [t for t, n in seen if n < args.instances]
        listed = len(agent.instances())
        log = agent.log.read_text(errors="replace").splitlines()
        reloads = [line.split("] ", 1)[1] for line in log if "sentinel.reload#" in line]
        applied = [line for line in log if "reloaded:" in line]
        run_label = f"{label} run {number + 1}"
        fewest = min(n for _, n in seen)
        gap = f"{missing[-1] - missing[0] + 0.02:.2f} s" if missing else "never"
        rows = [
            (f"{run_label}: fewest instance nodes", str(fewest)),
            (f"{run_label}: some node missing for", gap),
            (f"{run_label}: /instances at the end", str(listed)),
            (f"{run_label}: last write after SIGHUP", f"{writing[0] - sent:.2f} s"),
        ]
        rows += [(f"{run_label}: log", line[:150]) for line in reloads]
        rows.append((f"{run_label}: reloads applied", str(len(applied))))
        rows.append((f"{run_label}: load", load_average()))
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scene", choices=["empty", "prefix"])
    parser.add_argument("--instances", type=int, default=30)
    parser.add_argument("--pause", type=float, default=1.5)
    parser.add_argument("--watch", type=float, default=8.0)
    parser.add_argument("--runs", type=int, default=1)
    add_checkout_option(parser)
    args = parser.parse_args()
    rows = rows_in_turns(parser, args, run)
    print(table(rows, f"halfwritten {args.scene}: {args.instances} instances"))


if __name__ == "__main__":
    sys.exit(main())

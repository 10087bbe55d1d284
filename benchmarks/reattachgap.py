"""
A restart that could not reattach: what readers of ZooKeeper and
``/healthz`` say between the new session and the new process's writes.

A real ``twistd -n sentinel`` with a ``state_dir``, real redis-servers and
a ZooKeeper of the script's own, all on 127.0.0.1. The agent is
SIGTERMed (its session left open for the next process), the script waits
until ZooKeeper expires that session and its instance nodes go, then
starts the agent again on the same ``state_dir``: its reattach fails, it
opens a new session, and the nodes are missing until its first writes.
From the start, the script polls ZooKeeper (the instance nodes there) and
``/healthz`` in turn every ``--poll`` seconds (0.03) and prints, per run,
how long nodes were missing after ``/healthz`` first answered, how long of
that ``/healthz`` said 200, and the reasons it gave::

    PYTHONPATH=. .venv/bin/python benchmarks/reattachgap.py [--runs 3] \
        [--instances 6] [--session-timeout 4] [--checkout before=PATH ...]

Bounded: every wait has a deadline; every process started is stopped by
PID at the end.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import time
import urllib.error
from contextlib import ExitStack
from pathlib import Path

from common import (
    Agent,
    Instance,
    add_checkout_option,
    agent_config,
    checkouts_of,
    load_average,
    start_redis_servers,
    start_zookeeper,
    stop_on_sigterm,
    wait_until,
)
from kazoo.client import KazooClient

ROOT = "/sentinel"
INSTANCES = f"{ROOT}/instances"


def present(client: KazooClient) -> int:
    """How many instance nodes ZooKeeper has now."""
    return len(client.get_children(INSTANCES)) if client.exists(INSTANCES) else 0


def healthz(agent: Agent) -> tuple[int | None, list[str]]:
    """/healthz's code and reasons; None while it does not answer."""
    try:
        code, body = agent.healthz(timeout=1.0)
    except (OSError, urllib.error.URLError, ValueError):
        return None, []
    return code, list(body.get("reasons", []))


def run(args: argparse.Namespace, workdir: Path, checkout: Path) -> str:
    """One restart past the session's expiry; a line of figures."""
    with ExitStack() as started:
        zookeeper, client = start_zookeeper(started)
        servers = start_redis_servers(args.instances, started)
        instances = [Instance(f"r{k:02d}", s.port) for k, s in enumerate(servers)]
        state = workdir / "state"
        state.mkdir()
        config = f'state_dir = "{state}"\n' + agent_config(
            instances,
            zookeeper=zookeeper.hosts,
            zk_root=ROOT,
            zk_settings={"session_timeout": args.session_timeout},
        )

        def start() -> Agent:
            agent = Agent(workdir, config, pythonpath=checkout)
            started.callback(agent.stop)
            return agent

        first = start()
        first.wait_ready()
        wait_until(lambda: present(client) == args.instances, 60, "every node")
        first.stop()
        # The session left open expires with its nodes.
        wait_until(lambda: present(client) == 0, 60, "the session's expiry", 0.02)
        agent = start()
        answered: float | None = None
        whole: float | None = None
        ok_missing = 0.0
        reasons: list[str] = []
        last = time.monotonic()
        deadline = last + 30.0
        while time.monotonic() < deadline:
            count = present(client)
            code, said = healthz(agent)
            now = time.monotonic()
            if code is not None and answered is None:
                answered = now
            if answered is not None and count < args.instances:
                if code == 200:
                    ok_missing += now - last
                for reason in said:
                    kind = reason.split(":", 2)[:2]
                    if not any(r.split(":", 2)[:2] == kind for r in reasons):
                        reasons.append(reason)
            if answered is not None and count == args.instances and whole is None:
                whole = now
            if whole is not None and code == 200:
                break
            last = now
            time.sleep(args.poll)
        gap = None if answered is None or whole is None else whole - answered
        said = "\n    ".join(r[:160] for r in reasons) or "(none)"
        return (
            f"nodes missing {gap if gap is None else round(gap, 2)} s after "
            f"/healthz first answered, /healthz 200 for {ok_missing:.2f} s of it "
            f"(load {load_average()}); reasons while missing:\n    {said}"
        )


def main() -> None:
    """Parse options and run each restart in turn."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--instances", type=int, default=6)
    parser.add_argument("--session-timeout", type=float, default=4.0)
    parser.add_argument("--poll", type=float, default=0.03, help="seconds (0.03)")
    add_checkout_option(parser)
    args = parser.parse_args()
    checkouts = checkouts_of(parser, args.checkout)
    stop_on_sigterm()
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)
    workdir = Path(tempfile.mkdtemp(prefix="reattachgap-"))
    try:
        for label, checkout in checkouts:
            for index in range(args.runs):
                run_dir = workdir / label / str(index)
                run_dir.mkdir(parents=True)
                print(f"[{label}] run {index}: {run(args, run_dir, checkout)}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

"""
An operator's ``deleteall`` of the chroot in ``zookeeper.hosts`` under
live agents, once and in a loop: how soon every instance node and every
discovery member is back, and what ``/healthz`` says meanwhile.

A ZooKeeper of the script's own, one redis-server holding N instances,
and either one agent or a group of three (``replicas = 2``), each with
``--zookeeper 127.0.0.1:PORT/app``, nerve discovery and a ``state_dir``.
Once every instance node is up and every service lists a member, the
chroot ``/app`` is deleted recursively ``--rounds`` times, 3 s apart
(retried while the agents make nodes again under it: ZooKeeper's
recursive delete is not atomic); then a client deletes it every 100 ms
for 10 s. Reported: how long after each delete (after the loop's last)
every node and member was back, the ``/healthz`` answers seen while it
was gone and 3 s after it was back, and each agent's log lines and
tracebacks, with the load average.

    .venv/bin/python benchmarks/chrootwipe.py [--agents 1|3] [--instances 60]
        [--rounds 1] [--checkout before=PATH --checkout after=.]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from common import (
    LOOPBACK,
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
from kazoo.exceptions import NoNodeError, NotEmptyError

LOOP_SECONDS = 10.0
LOOP_EVERY = 0.1
BACK_WITHIN = 30.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chroot", default="/app")
    parser.add_argument(
        "--delete", help="the path deleted: the chroot or above it (default: it)"
    )
    parser.add_argument("--agents", type=int, choices=(1, 3), default=1)
    parser.add_argument("--instances", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--logs", type=Path, help="a directory to copy the logs to")
    add_checkout_option(parser)
    args = parser.parse_args()
    title = f"{args.delete or args.chroot} deleted, chroot {args.chroot}"
    print(table(rows_in_turns(parser, args, run), title))
    for reason, count in REASONS.most_common(8):
        print(f"503 x{count}: {reason}")


REASONS: Counter[str] = Counter()


def healthz(agent: Agent) -> str:
    """
    GET /healthz: its status code, or "none" when it does not answer; a
    503's reasons are counted in `REASONS`.
    """
    url = f"http://{LOOPBACK}:{agent.http_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return str(response.status)
    except urllib.error.HTTPError as e:
        body = json.loads(e.read())
        for reason in body.get("reasons", []):
            REASONS[re.sub(r"[0-9]+", "N", reason)[:120]] += 1
        return str(e.code)
    except OSError:
        return "none"


def seconds_until(condition: Callable[[], bool]) -> str:
    """How long until `condition` held, polled; "not within ..." if never."""
    try:
        took = wait_until(condition, BACK_WITHIN, "back", 0.05)
    except RuntimeError:
        return f"not within {BACK_WITHIN:g} s"
    return f"{took:.2f} s"


def delete_chroot(client: KazooClient, path: str) -> None:
    """Delete `path` and all under it, as ``zkCli.sh deleteall``."""
    for _ in range(50):
        try:
            client.delete(path, recursive=True)
            return
        except NotEmptyError:
            continue
        except NoNodeError:
            return


def run(
    args: argparse.Namespace, label: str, code: Path, number: int
) -> list[tuple[str, str]]:
    rows = []
    with tempfile.TemporaryDirectory() as directory, ExitStack() as started:
        work, chroot = Path(directory), args.chroot
        deleted = args.delete or chroot
        zookeeper, client = start_zookeeper(started)
        (redis,) = start_redis_servers(1, started)
        instances = [Instance(f"r{i:04d}", redis.port) for i in range(args.instances)]
        settings = {"heartbeat": 3, "discovery": "nerve"}
        if args.agents > 1:
            settings["replicas"] = 2
        agents = []
        for k in range(args.agents):
            config = agent_config(
                instances,
                zookeeper=f"{zookeeper.hosts}{chroot}",
                agent_id=f"a{k}",
                zk_settings=settings,
            ).replace("[zookeeper]", f'state_dir = "{work}/state{k}"\n[zookeeper]')
            agent = Agent(work, config, label=f"a{k}", pythonpath=code)
            started.callback(agent.stop)
            agents.append(agent)
        for agent in agents:
            agent.wait_ready()

        def present() -> tuple[int, int, int]:
            """Instance nodes, services with a member, agent nodes."""
            found = []
            for path in ("sentinel/instances", "sentinel/agents"):
                try:
                    found.append(len(client.get_children(f"{chroot}/{path}")))
                except NoNodeError:
                    found.append(0)
            listed = 0
            for instance in instances:
                try:
                    listed += bool(
                        client.get_children(f"{chroot}/discovery/{instance.name}")
                    )
                except NoNodeError:
                    pass
            return found[0], listed, found[1]

        def back() -> bool:
            return present() == (len(instances), len(instances), len(agents))

        def seconds_until_back() -> str:
            took = seconds_until(back)
            if took.startswith("not"):
                nodes, members, agent_nodes = present()
                took += (
                    f" ({nodes} instance nodes, {members} services listed,"
                    f" {agent_nodes} agent nodes)"
                )
            return took

        def healthy() -> str:
            """Seconds until every agent's /healthz is 200."""
            return seconds_until(lambda: all(healthz(a) == "200" for a in agents))

        def answers(until: float) -> str:
            seen: Counter[str] = Counter()
            while time.monotonic() < until:
                for agent in agents:
                    seen[healthz(agent)] += 1
                time.sleep(0.2)
            return ", ".join(f"{code} x{n}" for code, n in sorted(seen.items()))

        wait_until(back, 120, "every node and member at start", 0.2)
        time.sleep(3)
        marks = [len(a.log.read_text(errors="replace").splitlines()) for a in agents]
        run_label = f"{label} run {number + 1}"
        for round_ in range(args.rounds):
            delete_chroot(client, deleted)
            gone = healthz(agents[0])
            took = seconds_until_back()
            after = answers(time.monotonic() + 3)
            ok = healthy()
            rows.append(
                (
                    f"{run_label}: deleteall #{round_ + 1}",
                    f"back {took} after; /healthz of a0 just after: {gone};"
                    f" 3 s after back: {after}; all 200 {ok} after that"
                    f" (load {load_average()})",
                )
            )
        began, deletes, seen = time.monotonic(), 0, Counter[str]()
        while time.monotonic() - began < LOOP_SECONDS:
            delete_chroot(client, deleted)
            deletes += 1
            for agent in agents:
                seen[healthz(agent)] += 1
            time.sleep(LOOP_EVERY)
        took = seconds_until_back()
        after = answers(time.monotonic() + 3)
        ok = healthy()
        during = ", ".join(f"{code} x{n}" for code, n in sorted(seen.items()))
        rows.append(
            (
                f"{run_label}: deleting loop",
                f"{deletes} deletes in {LOOP_SECONDS:g} s, /healthz during: {during};"
                f" back {took} after; 3 s after back: {after}; all 200 {ok}"
                f" after that (load {load_average()})",
            )
        )
        for k, agent in enumerate(agents):
            lines = agent.log.read_text(errors="replace").splitlines()[marks[k] :]
            made = sum("created the chroot" in line for line in lines)
            tracebacks = sum("Traceback" in line for line in lines)
            if args.logs is not None:
                args.logs.mkdir(parents=True, exist_ok=True)
                shutil.copy(agent.log, args.logs / f"{label}-{number + 1}-a{k}.log")
            rows.append(
                (
                    f"{run_label}: a{k} log",
                    f"{len(lines)} lines, {made} saying the chroot was made,"
                    f" {tracebacks} tracebacks",
                )
            )
    return rows


if __name__ == "__main__":
    main()

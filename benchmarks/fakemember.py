"""
A fake member in ZooKeeper, as a live group and its readers see it
(DESIGN.md section 2.5).

Two agents ``a`` and ``b`` (``twistd -n sentinel``, ``--replicas``,
refresh and heartbeat every ``--refresh`` seconds) share ``--instances``
instances over two real redis-servers. Once both publish every
instance, a client of the same ZooKeeper (kazoo, its own session, no
ACLs) writes a catalog in the name ``evil`` listing every instance, as
an agent's publisher would (``--agent-node``: and an agent node, written
once: ``ephemeral`` or ``persistent``), and then nothing else: a member
that never checks (``--before``: before the agents start, as an agent
started or restarted later finds it). ``--churn P``: the fake member
(catalog and ephemeral agent node) is deleted and written again every P/2
seconds from then on, a member that joins and leaves in a loop, each
time with a fresh agent node; ``--fakes N``: N fake members at once,
written and deleted together in one transaction each. After
``--settle`` seconds, one of the two redis-servers is stopped
(SIGSTOP), and a reader polls
``{root}/instances`` for ``--watch`` seconds. Printed:

- how many instances ``a`` and ``b`` observe, and the members they see;
- what the reader sees at the end: nodes missing, nodes whose data is
  older than three refresh periods (stale), and instances on the stopped
  server that the nodes still say are up;
- the ``/healthz`` answers of ``a`` and ``b`` (each reason once, its
  figures as N), and the first other than 200 of each, as it was;
- each agent's view changes, instances moved and ZooKeeper writes a
  second over the watch, and its CPU.

    .venv/bin/python benchmarks/fakemember.py [--checkout this=.]
        [--replicas 1] [--agent-node none|ephemeral|persistent] [--before]
        [--churn 1.0] [--fakes 1]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    Instance,
    add_checkout_option,
    checkouts_of,
    commit_of,
    load_average,
    start_redis_servers,
    start_zookeeper,
    stop_on_sigterm,
    table,
    wait_until,
)
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from meddle import writes
from squat import healthz, members, start_agent

from sentinel.catalog import Catalog, catalog_node_name, catalog_parts

ROOT = "/fake"


def main() -> None:
    """Parse the options, run each checkout `--runs` times, print tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=30)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument(
        "--agent-node", choices=("none", "ephemeral", "persistent"), default="none"
    )
    parser.add_argument("--refresh", type=float, default=3.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--watch", type=float, default=30.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--before",
        action="store_true",
        help="the fake member is there before the agents start",
    )
    parser.add_argument(
        "--churn",
        type=float,
        default=0.0,
        help="seconds of each join and leave cycle of the fake member (0: none)",
    )
    parser.add_argument(
        "--fakes", type=int, default=1, help="fake members (evil0, evil1...)"
    )
    add_checkout_option(parser)
    options = parser.parse_args()
    if options.churn:
        options.agent_node = "ephemeral"
    stop_on_sigterm()
    for label, checkout in checkouts_of(parser, options.checkout):
        for run in range(options.runs):
            rows = one_run(options, checkout)
            title = (
                f"{label} ({commit_of(checkout)}), run {run + 1}: a fake member,"
                f" replicas {options.replicas}, agent node {options.agent_node},"
                f" load {load_average()}"
            )
            print(table(rows, title), flush=True)


def fake_member(
    client: KazooClient,
    names: list[str],
    replicas: int,
    agent_node: str,
    fakes: int = 1,
) -> None:
    """Write the catalog listing `names` (and agent node) of each fake member."""
    catalog = Catalog(frozenset(names), replicas, replicas // 2 + 1)
    digest, parts = catalog_parts(catalog)
    creates = client.transaction()
    now = time.time()
    for fake in fake_ids(fakes):
        for index, part in enumerate(parts):
            name = catalog_node_name(fake, digest, "f00d", index, len(parts))
            creates.create(f"{ROOT}/catalogs/{name}", part, ephemeral=True)
        if agent_node != "none":
            said = {
                "agent": fake,
                "pid": 1,
                "version": "0",
                "started_at": now,
                "heartbeat_at": now,
                "interval": 1.0,
                "instances": names,
            }
            creates.create(
                f"{ROOT}/agents/{fake}",
                json.dumps(said).encode(),
                ephemeral=agent_node == "ephemeral",
            )
    creates.commit()


def fake_ids(fakes: int) -> list[str]:
    """The ids of `fakes` fake members: ``evil``, or ``evil0``... for more."""
    return ["evil"] if fakes == 1 else [f"evil{i}" for i in range(fakes)]


def churn(
    client: KazooClient,
    names: list[str],
    options: argparse.Namespace,
    stop: threading.Event,
) -> None:
    """The fake members leaving and joining again every --churn / 2 s."""
    present = True
    while not stop.wait(options.churn / 2):
        if present:
            gone = client.transaction()
            for fake in fake_ids(options.fakes):
                gone.delete(f"{ROOT}/agents/{fake}")
            for name in client.get_children(f"{ROOT}/catalogs"):
                if name.startswith("evil"):
                    gone.delete(f"{ROOT}/catalogs/{name}")
            gone.commit()
        else:
            fake_member(client, names, options.replicas, "ephemeral", options.fakes)
        present = not present


def published(reader: KazooClient, names: list[str]) -> dict[str, Any]:
    """Each instance node's data (None if missing or unreadable) and mtime."""
    seen: dict[str, Any] = {}
    for name in names:
        try:
            data, stat = reader.get(f"{ROOT}/instances/{name}")
            seen[name] = (json.loads(data), stat.mtime / 1000.0)
        except (NoNodeError, ValueError):
            seen[name] = None
    return seen


def one_run(options: argparse.Namespace, checkout: Path) -> list[tuple[str, str]]:
    """One group, one fake member, one Redis stopped: the module docstring."""
    with ExitStack() as started, tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        zookeeper, reader = start_zookeeper(started)
        for directory in ("catalogs", "agents", "instances"):
            reader.ensure_path(f"{ROOT}/{directory}")
        servers = start_redis_servers(2, started)
        instances = [
            Instance(f"cache-{i}", servers[i % 2].port)
            for i in range(options.instances)
        ]
        names = [i.name for i in instances]
        settings = {
            "replicas": options.replicas,
            "refresh": options.refresh,
            "heartbeat": options.refresh,
        }
        evil = KazooClient(hosts=zookeeper.hosts, timeout=30.0)
        evil.start(timeout=10.0)
        started.callback(evil.close)
        started.callback(evil.stop)
        if options.before:
            fake_member(
                evil, names, options.replicas, options.agent_node, options.fakes
            )
        agents = [
            start_agent(
                started,
                workdir,
                zookeeper.hosts,
                instances,
                agent_id,
                checkout,
                settings=settings,
                root=ROOT,
            )  # fmt: skip
            for agent_id in ("a", "b")
        ]
        a, b = agents
        # Three members with the fake one counted, two without.
        wait_until(lambda: min(members(a), members(b)) >= 2, 30.0, "the group")
        time.sleep(2.0)
        if not options.before:
            wait_until(
                lambda: None not in published(reader, names).values(),
                30.0,
                "every instance published",
            )
            fake_member(
                evil, names, options.replicas, options.agent_node, options.fakes
            )
        if options.churn:
            stop_churn = threading.Event()
            churner = threading.Thread(
                target=churn,
                args=(evil, names, options, stop_churn),
            )
            churner.start()
            started.callback(churner.join)
            started.callback(stop_churn.set)
        time.sleep(options.settle)
        stopped = servers[1]
        os.kill(stopped.pid, signal.SIGSTOP)
        started.callback(os.kill, stopped.pid, signal.SIGCONT)
        on_stopped = {i.name for i in instances if i.port == stopped.port}
        answers: dict[str, dict[str, int]] = {"a": {}, "b": {}}
        # The first answer other than 200 of each, as it was, and when.
        first: dict[str, str] = {}
        groups = {label: agent.get("/group") for agent, label in ((a, "a"), (b, "b"))}
        written_before = {label: writes(agent) for agent, label in ((a, "a"), (b, "b"))}
        cpu = {label: agent.cpu_seconds() for agent, label in ((a, "a"), (b, "b"))}
        watched = time.monotonic()
        deadline = time.monotonic() + options.watch
        while time.monotonic() < deadline:
            for agent, label in ((a, "a"), (b, "b")):
                code, body = healthz(agent)
                if code != 200 and label not in first:
                    at = time.monotonic() - watched
                    first[label] = f"after {at:.1f} s: {body[:400]}"
                # Figures (ages, counts) vary from answer to answer.
                said = re.sub(r"[0-9.]+", "N", body[:400])
                key = str(code) if code == 200 else f"{code} {said}"
                answers[label][key] = answers[label].get(key, 0) + 1
            time.sleep(0.5)
        spent = time.monotonic() - watched
        now = time.time()
        seen = published(reader, names)
        missing = sorted(n for n, v in seen.items() if v is None)
        stale = sorted(
            n
            for n, v in seen.items()
            if v is not None and now - v[1] > 3 * options.refresh
        )
        wrong = sorted(
            n
            for n in on_stopped
            if seen[n] is not None and seen[n][0].get("status") == "up"
        )
        rows = []
        for agent, label in ((a, "a"), (b, "b")):
            group = agent.get("/group")
            rows.append(
                (
                    f"{label}: members, observed",
                    f"{group['size']}, {len(agent.get('/instances')['instances'])}",
                )
            )
            written = (writes(agent) - written_before[label]) / spent
            rows.append(
                (
                    f"{label}: view changes, moved, writes/s, CPU",
                    f"{group['view_changes'] - groups[label]['view_changes']},"
                    f" {group['moved'] - groups[label]['moved']}, {written:.1f},"
                    f" {(agent.cpu_seconds() - cpu[label]) / spent:.0%}",
                )
            )
        rows += [
            ("nodes missing", f"{len(missing)} {missing[:4]}"),
            ("nodes stale (> 3 refresh)", f"{len(stale)} {stale[:4]}"),
            (
                "stopped Redis published up",
                f"{len(wrong)} of {len(on_stopped)} {wrong[:4]}",
            ),
        ]
        for label in ("a", "b"):
            for key, count in answers[label].items():
                rows.append((f"{label}'s /healthz x{count}", key))
            if label in first:
                rows.append((f"{label}'s first not 200", first[label]))
        return rows


if __name__ == "__main__":
    main()

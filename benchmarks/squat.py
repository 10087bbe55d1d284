"""
A squatter in ZooKeeper, as a live group sees it (DESIGN.md section 2.5).

Two agents ``a`` and ``b`` (``twistd -n sentinel``, replicas 2) share
``--instances`` instances over real redis-servers. Once both see the
group, a squatter (kazoo, its own session) creates ``--nodes`` nodes in
transactions of 1,000, then a third agent ``c`` starts; printed, for
each of ``--runs`` runs:

- how long the squatter's writes took, and each agent's CPU and RSS
  over the run;
- how long after its start ``c`` saw the group of three, and ``b``
  saw ``c`` join;
- ZooKeeper's packets received meanwhile (``mntr``), the agents' most
  late checks (``/debug/stats`` ``overruns``), and every ``/healthz``
  answer other than 200 that ``b`` gave, polled every 0.2 s.

``--kind catalogs`` (the default): complete one-part catalogs in ``a``'s
name, under tokens of their own, their digests sorting before ``a``'s
own, held by the squatter's session. ``--kind agents``: children of
``{root}/agents``; ``--kind opinions``: opinions under one instance;
``--kind members``: nodes of no agent's under ``{root}/catalogs``.

``--kind clock`` runs another scene: ``a``'s clock 30 s behind
(libfaketime), ``b``'s right, heartbeats every second; once ``a``'s
/healthz blames its clock, the squatter writes ``--nodes`` agent nodes
whose ``heartbeat_at`` is ``a``'s wrong time, and ``a``'s /healthz is
polled for 10 s: how many answers were 200 (its clock taken to be
right, ZooKeeper's off) and how many 503.

``--kind churn`` runs a third scene: ``a`` and ``b`` (replicas 2) with
``--nodes`` squatted opinions under ``cache-0``; then both agents'
opinions of ``cache-0`` are deleted (its primary finds one missing and
lists the opinions, with a watch) while the squatter creates and deletes
a node there every 10 ms for 30 s (every firing of that watch would be
another listing of them all): each agent's CPU, RSS, overruns and
``/healthz`` answers other than 200, polled every 100 rounds of the churn.

    .venv/bin/python benchmarks/squat.py [--checkout this=.] [--nodes 10000]
        [--kind catalogs] [--runs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
import urllib.error
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    Agent,
    Instance,
    add_checkout_option,
    agent_config,
    checkouts_of,
    commit_of,
    libfaketime,
    load_average,
    start_redis_servers,
    start_zookeeper,
    stop_on_sigterm,
    table,
    wait_until,
)
from kazoo.client import KazooClient

ROOT = "/squat"
BATCH = 1000


def main() -> None:
    """Parse the options, run each checkout `--runs` times, print tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument(
        "--kind",
        choices=("catalogs", "agents", "opinions", "members", "clock", "churn"),
        default="catalogs",
    )  # fmt: skip
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--deadline", type=float, default=120.0)
    add_checkout_option(parser)
    options = parser.parse_args()
    stop_on_sigterm()
    for label, checkout in checkouts_of(parser, options.checkout):
        for run in range(options.runs):
            run_once = {"clock": clock_run, "churn": churn_run}.get(
                options.kind, one_run
            )
            rows = run_once(options, checkout)
            title = (
                f"{label} ({commit_of(checkout)}), run {run + 1}: {options.nodes:,}"
                f" squatter {options.kind}, load {load_average()}"
            )
            print(table(rows, title), flush=True)


def squatter_client(started: ExitStack, hosts: str) -> KazooClient:
    """The squatter's kazoo client, its own session, stopped with `started`."""
    squatter = KazooClient(hosts=hosts, timeout=30.0)
    squatter.start(timeout=10.0)
    started.callback(squatter.close)
    started.callback(squatter.stop)
    return squatter


def squat(client: KazooClient, kind: str, nodes: int) -> None:
    """Create `nodes` nodes of `kind` on the squatter's session."""
    for start in range(0, nodes, BATCH):
        transaction = client.transaction()
        for i in range(start, min(start + BATCH, nodes)):
            if kind == "catalogs":
                # Digests sorting first, a token each: one-part catalogs.
                path = f"{ROOT}/catalogs/a.{i:016x}.s{i}.0.1"
            elif kind == "agents":
                path = f"{ROOT}/agents/squatter-{i}"
            elif kind == "opinions":
                path = f"{ROOT}/opinions/cache-0/squatter-{i}"
            else:
                path = f"{ROOT}/catalogs/squatter-{i}"
            transaction.create(path, b"{}", ephemeral=True)
        results = transaction.commit()
        errors = [r for r in results if isinstance(r, Exception)]
        if errors:
            raise RuntimeError(f"the squatter's transaction failed: {errors[0]!r}")


def members(agent: Agent) -> int:
    """How many members `agent` sees (0 while it does not answer)."""
    try:
        return int(agent.get("/group", timeout=2.0)["size"])
    except Exception:
        return 0


def one_run(options: argparse.Namespace, checkout: Path) -> list[tuple[str, str]]:
    """One group, one squatter, one join: the figures of the module docstring."""
    with ExitStack() as started, tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        zookeeper, reader = start_zookeeper(started)
        reader.ensure_path(f"{ROOT}/opinions/cache-0")
        reader.ensure_path(f"{ROOT}/catalogs")
        reader.ensure_path(f"{ROOT}/agents")
        servers = start_redis_servers(2, started)
        instances = [
            Instance(f"cache-{i}", servers[i % 2].port)
            for i in range(options.instances)
        ]

        def start(agent_id: str) -> Agent:
            return start_agent(
                started, workdir, zookeeper.hosts, instances, agent_id, checkout
            )

        a, b = start("a"), start("b")
        wait_until(lambda: members(a) == members(b) == 2, 30.0, "a group of two")
        time.sleep(2.0)
        squatter = squatter_client(started, zookeeper.hosts)
        bad: list[str] = []
        polling = threading.Event()

        def poll() -> None:
            while not polling.is_set():
                try:
                    b.get("/healthz", timeout=2.0)
                except Exception as e:  # 503 and the like
                    body = getattr(e, "read", lambda: b"")()
                    bad.append(body.decode("utf-8", "replace")[:300] or repr(e))
                time.sleep(0.2)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        received = packets_received(zookeeper)
        cpu = {agent: agent.cpu_seconds() for agent in (a, b)}
        began = time.monotonic()
        squat(squatter, options.kind, options.nodes)
        squatted = time.monotonic() - began
        c = start("c")
        c_saw, b_saw = views_of_three([c, b], options.deadline)
        time.sleep(1.0)
        polling.set()
        poller.join(5.0)
        stats: dict[Agent, dict[str, Any]] = {x: x.get("/debug/stats") for x in (a, b)}
        rows = [
            ("squatter's writes", f"{squatted:.2f} s"),
            ("c saw three members", f"{c_saw:.2f} s after its start"),
            ("b saw c", f"{b_saw:.2f} s after c's start"),
            (
                "ZooKeeper packets received",
                f"{packets_received(zookeeper) - received:,}",
            ),
        ]
        for agent, label in ((a, "a"), (b, "b")):
            rows.append(
                (
                    f"{label}: CPU, RSS, overruns",
                    f"{agent.cpu_seconds() - cpu[agent]:.2f} s, "
                    f"{agent.rss_bytes() / 2**20:.0f} MiB, {stats[agent]['overruns']}",
                )
            )
        rows.append(("b's /healthz not 200", f"{len(bad)} answers"))
        for reason in dict.fromkeys(bad):
            rows.append(("  said", reason))
        return rows


def start_agent(
    started: ExitStack,
    workdir: Path,
    hosts: str,
    instances: list[Instance],
    agent_id: str,
    checkout: Path,
    settings: dict[str, float | int] | None = None,
    faked: bool = False,
    root: str = ROOT,
) -> Agent:
    """
    An agent of the group on `root` (replicas 2 unless `settings` say
    otherwise), answering; `faked`: its clock 30 s behind (libfaketime).
    """
    saved = dict(os.environ)
    if faked:
        os.environ.update(
            LD_PRELOAD=libfaketime(),
            FAKETIME="-30",
            FAKETIME_DONT_FAKE_MONOTONIC="1",
        )
    try:
        agent = Agent(
            workdir,
            agent_config(
                instances,
                zookeeper=hosts,
                zk_root=root,
                agent_id=agent_id,
                zk_settings=settings or {"replicas": 2},
            ),
            label=agent_id,
            pythonpath=checkout,
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)
    started.callback(agent.stop)
    agent.wait_ready()
    return agent


def healthz(agent: Agent) -> tuple[int, str]:
    """``agent``'s /healthz: the status code and the body."""
    try:
        return 200, json.dumps(agent.get("/healthz", timeout=2.0))
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")
    except OSError as e:
        return 0, repr(e)


def clock_run(options: argparse.Namespace, checkout: Path) -> list[tuple[str, str]]:
    """A wrong clock, and a squatter's agent nodes that agree with it."""
    with ExitStack() as started, tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        zookeeper, reader = start_zookeeper(started)
        servers = start_redis_servers(2, started)
        instances = [
            Instance(f"cache-{i}", servers[i % 2].port)
            for i in range(options.instances)
        ]

        def start(agent_id: str, faked: bool) -> Agent:
            return start_agent(
                started, workdir, zookeeper.hosts, instances, agent_id, checkout,
                settings={"replicas": 2, "heartbeat": 1.0}, faked=faked,
            )  # fmt: skip

        a, b = start("a", True), start("b", False)
        wait_until(lambda: members(a) == members(b) == 2, 30.0, "a group of two")
        blamed = wait_until(
            lambda: "behind ZooKeeper's" in healthz(a)[1], 30.0, "a's clock blamed"
        )
        squatter = squatter_client(started, zookeeper.hosts)
        said = json.dumps({"agent": "squatter", "heartbeat_at": time.time() - 30.0})
        for i in range(options.nodes):
            squatter.create(
                f"{ROOT}/agents/squatter-{i}", said.encode(), ephemeral=True
            )
        answers: dict[int, int] = {}
        reasons = set()
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            code, body = healthz(a)
            answers[code] = answers.get(code, 0) + 1
            if code != 200:
                reasons.add(body[:300])
            time.sleep(0.2)
        rows = [
            ("a's clock blamed", f"{blamed:.1f} s after the group formed"),
            ("a's /healthz in 10 s after", f"{answers}"),
        ]
        rows += [("  said", reason) for reason in sorted(reasons)[:2]]
        return rows


def churn_run(options: argparse.Namespace, checkout: Path) -> list[tuple[str, str]]:
    """Squatted opinions, the agents' own deleted, and a churn beside them."""
    with ExitStack() as started, tempfile.TemporaryDirectory() as scratch:
        zookeeper, reader = start_zookeeper(started)
        for parent in ("opinions/cache-0", "catalogs", "agents"):
            reader.ensure_path(f"{ROOT}/{parent}")
        servers = start_redis_servers(1, started)
        instances = [
            Instance(f"cache-{i}", servers[0].port) for i in range(options.instances)
        ]
        a, b = (
            start_agent(started, Path(scratch), zookeeper.hosts, instances, x, checkout)
            for x in "ab"
        )
        wait_until(lambda: members(a) == members(b) == 2, 30.0, "a group of two")
        time.sleep(2.0)
        squatter = squatter_client(started, zookeeper.hosts)
        squat(squatter, "opinions", options.nodes)
        cpu = {agent: agent.cpu_seconds() for agent in (a, b)}
        for agent_id in "ab":
            squatter.delete(f"{ROOT}/opinions/cache-0/{agent_id}")
        operations = 0
        bad = {a: 0, b: 0}
        end = time.monotonic() + 30.0
        while time.monotonic() < end:
            created = squatter.create(f"{ROOT}/opinions/cache-0/churn", ephemeral=True)
            squatter.delete(created)
            operations += 2
            if operations % 200 == 0:
                for agent in (a, b):
                    bad[agent] += healthz(agent)[0] != 200
            time.sleep(0.01)
        rows = [("squatter's operations in 30 s", f"{operations:,}")]
        for agent, label in ((a, "a"), (b, "b")):
            stats = agent.get("/debug/stats")
            rows.append(
                (
                    f"{label}: CPU, RSS, overruns, /healthz not 200",
                    f"{agent.cpu_seconds() - cpu[agent]:.2f} s, "
                    f"{agent.rss_bytes() / 2**20:.0f} MiB, {stats['overruns']}, "
                    f"{bad[agent]}",
                )
            )
        agents = [
            name
            for name in reader.get_children(f"{ROOT}/opinions/cache-0")
            if not name.startswith("squatter")
        ]
        rows.append(("agents' opinions of cache-0 at the end", ", ".join(agents)))
        return rows


def views_of_three(agents: list[Agent], deadline: float) -> list[float]:
    """Seconds until each of `agents` sees three members, polled together."""
    began = time.monotonic()
    saw: dict[int, float] = {}
    while len(saw) < len(agents):
        if time.monotonic() - began > deadline:
            raise RuntimeError(f"a view of three: not within {deadline:g} s")
        for i, agent in enumerate(agents):
            if i not in saw and members(agent) == 3:
                saw[i] = time.monotonic() - began
        time.sleep(0.05)
    return [saw[i] for i in range(len(agents))]


def packets_received(zookeeper: Any) -> int:
    """ZooKeeper's ``zk_packets_received`` so far."""
    for line in zookeeper.four_letter_word("mntr").decode().splitlines():
        key, _, value = line.partition("\t")
        if key == "zk_packets_received":
            return int(value)
    return 0


if __name__ == "__main__":
    main()

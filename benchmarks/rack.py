"""
A rack going down: how soon each instance is published down.

``--agents`` agents ``a0``... (``twistd -n sentinel``, ``--replicas`` R;
3 agents and R = 2 by default, a group; ``--agents 1 --replicas 1`` is
one agent alone) share ``--instances`` instances over ``--servers`` real
redis-servers. Once every instance node says ``up`` and 10 s more have
passed, ``--faulted`` of the servers (half by default) fail at once, a
rack cut off: SIGSTOP (a hung host: its listen backlog still accepts,
then nothing answers) or SIGKILL (a dead one: connects are refused at
once), in turn as ``--faults`` lists them (``stop``; ``stop,kill``
alternates). A data watch on every instance node gives, for each faulted
server's instance, ZooKeeper's own time of the write that said ``down``
(the node's mtime) and the agent's decision (the document's ``since``),
both from the moment of the fault, for 30 s. Printed, for each run and
each kind of fault: how many were published down, how many within the
detection bound ``interval * fall + timeout`` + 50 ms (3.55 s: the bound
of a single fault, ``benchmarks/detection.py``), and when (p50, p99,
max); the instances of the running servers published down (false downs:
there must be none); and for each agent at the end its ``/healthz`` (a
reason says why a status is missing: checks the agent could not make,
say), the connect attempts queued at most, checks turned away, connects
spared to stalled addresses and the connect rate's cuts, and the checks
it could not judge (inconclusive: the agent itself ran late, so its
check said nothing) while the rack was down.

In a group (R > 1) each down verdict is split into its stages, read
from ZooKeeper once the rack is down: each observer's detection (its
down opinion's ``checked_at``: its ``fall``-th failure in a row), the
write of that opinion (the opinion node's mtime after its
``checked_at``), and the primary's hearing of the later opinion and its
verdict write (the verdict node's mtime after the later opinion's).
With quorum 2 of 2 the verdict waits for the later observer, so one
observer a tick late makes the verdict a tick late.

    .venv/bin/python benchmarks/rack.py [--instances 1000] [--runs 2]
        [--agents 3] [--replicas 2] [--servers 10] [--faulted 5]
        [--faults stop,kill] [--checkout before=../before --checkout after=.]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    LOOPBACK,
    Agent,
    Instance,
    add_checkout_option,
    agent_config,
    load_average,
    machine,
    open_files_for,
    percentile,
    rows_in_turns,
    start_redis_servers,
    start_zookeeper,
    table,
)
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from kazoo.recipe.watchers import DataWatch

# Seconds the faulted servers' instances have to be published down.
WATCHED = 30.0
# The single-fault detection bound at the defaults (interval 1 s, fall 3,
# timeout 0.5 s) plus the 50 ms issue 15 allows for publishing.
BOUND = 1.0 * 3 + 0.5 + 0.05
SIGNALS = {"stop": signal.SIGSTOP, "kill": signal.SIGKILL}
# /debug/stats counters shown for each agent.
COUNTERS = (
    "connects_queued_max",
    "checks_turned_away",
    "connects_spared",
    "rate_cuts",
)
# And counted from the fault on.
INCONCLUSIVE = "inconclusive_checks"


class Downs:
    """
    For each instance node, ZooKeeper's time (mtime, epoch seconds) and the
    agent's decision (``since``) of its first ``down`` since `watch_from`
    (data watches fire on kazoo's thread).
    """

    def __init__(
        self, client: KazooClient, names: list[str], root: str = "/sentinel"
    ) -> None:
        self._lock = threading.Lock()
        self._from = float("inf")
        self.down: dict[str, tuple[float, float]] = {}
        self.up: set[str] = set()
        for name in names:
            DataWatch(client, f"{root}/instances/{name}", self._watcher(name))

    def _watcher(self, name: str) -> Callable[[bytes | None, Any], None]:
        def changed(data: bytes | None, stat: Any) -> None:
            if data is None:
                return
            document = json.loads(data)
            with self._lock:
                if document["status"] == "up":
                    self.up.add(name)
                elif stat.mtime / 1000 >= self._from and name not in self.down:
                    self.down[name] = (stat.mtime / 1000, float(document["since"]))

        return changed

    def watch_from(self, at: float) -> None:
        """Count the downs written from `at` (epoch seconds) on."""
        with self._lock:
            self._from = at

    def seen(self) -> tuple[int, dict[str, tuple[float, float]]]:
        """How many nodes said up at some point, and the downs so far."""
        with self._lock:
            return len(self.up), dict(self.down)


def healthz(agent: Agent) -> str:
    """``/healthz``: ok, or its reasons."""
    url = f"http://{LOOPBACK}:{agent.http_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return str(json.loads(answer.read())["status"])
    except urllib.error.HTTPError as e:
        return "; ".join(json.loads(e.read()).get("reasons", []))
    except OSError as e:
        return f"no answer: {e}"


def startup_stats(agent: Agent) -> dict[str, Any]:
    """The agent's connect and check counters (``/debug/stats``, ``startup``)."""
    try:
        stats = agent.get("/debug/stats")
    except (OSError, ValueError) as e:
        return {"error": f"no /debug/stats: {e}"}
    return dict(stats.get("startup", stats))


def counters(before: dict[str, Any], after: dict[str, Any]) -> str:
    """The counters at the end, and the checks not judged since the fault."""
    if "error" in after:
        return str(after["error"])
    shown = ", ".join(f"{key} {after.get(key)}" for key in COUNTERS)
    try:
        since = int(after[INCONCLUSIVE]) - int(before[INCONCLUSIVE])
    except (KeyError, TypeError, ValueError):
        return shown
    return f"{shown}; {since} checks inconclusive since the fault"


def stages(client: KazooClient, names: list[str], cut: float) -> list[tuple[str, str]]:
    """
    The stages of the down verdicts of `names` (module docstring), from
    the opinion and instance nodes as they are now, seconds from `cut`.
    """
    detected: list[float] = []
    later: list[float] = []
    gaps: list[float] = []
    written: list[float] = []
    heard: list[float] = []
    for name in names:
        try:
            data, stat = client.get(f"/sentinel/instances/{name}")
            agents = client.get_children(f"/sentinel/opinions/{name}")
            opinions = []
            for agent_id in agents:
                said, said_stat = client.get(f"/sentinel/opinions/{name}/{agent_id}")
                opinions.append((json.loads(said), said_stat.mtime / 1000))
        except NoNodeError:
            continue
        if json.loads(data).get("status") != "down":
            continue
        downs = [
            (float(opinion["checked_at"]) - cut, mtime - cut)
            for opinion, mtime in opinions
            if opinion.get("status") == "down" and opinion.get("checked_at")
        ]
        if not downs:
            continue
        detected += [found for found, _ in downs]
        later.append(max(found for found, _ in downs))
        gaps.append(max(f for f, _ in downs) - min(f for f, _ in downs))
        written += [mtime - found for found, mtime in downs]
        heard.append(stat.mtime / 1000 - cut - max(mtime for _, mtime in downs))
    over = sum(1 for t in detected if t > BOUND)
    return [
        (
            "  observers",
            f"{len(detected)} down opinions, {over} detected after"
            f" {BOUND:.2f} s; detected {timing(detected)}",
        ),
        (
            "  the later one",
            f"detected {timing(later)}; after the earlier {timing(gaps)}",
        ),
        ("  opinion written", f"after its check {timing(written)}"),
        ("  verdict written", f"after the later opinion's write {timing(heard)}"),
    ]


def timing(times: list[float]) -> str:
    """p50, p99 and max of `times`, in seconds."""
    if not times:
        return "none"
    times = sorted(times)
    return (
        f"p50 {percentile(times, 50):.2f}, p99 {percentile(times, 99):.2f},"
        f" max {times[-1]:.2f} s"
    )


def run(args: argparse.Namespace, label: str, checkout: Path, number: int) -> Any:
    n = args.instances
    faults = [SIGNALS[kind] for kind in args.faults.split(",")]
    with ExitStack() as started:
        servers = start_redis_servers(args.servers, started)
        zk, client = start_zookeeper(started)
        workdir = Path(tempfile.mkdtemp(prefix="sentinel-rack-"))
        started.callback(shutil.rmtree, workdir, ignore_errors=True)
        instances = [
            Instance(f"r{i}", servers[i % args.servers].port) for i in range(n)
        ]
        agents = []
        for i in range(args.agents):
            config = agent_config(
                instances,
                zookeeper=zk.hosts,
                agent_id=f"a{i}",
                zk_settings={"replicas": args.replicas},
            )
            agent = Agent(
                workdir,
                config,
                label=f"a{i}",
                pythonpath=checkout,
                open_files=open_files_for(n),
            )
            started.callback(agent.stop)
            agents.append(agent)
        for agent in agents:
            agent.wait_ready()
        start = time.monotonic()
        while not client.exists("/sentinel/instances") or (
            len(client.get_children("/sentinel/instances")) < n
        ):
            if time.monotonic() - start > 120:
                raise SystemExit("rack: the instance nodes not all there in 120 s")
            time.sleep(0.5)
        downs = Downs(client, [instance.name for instance in instances])
        while downs.seen()[0] < n:
            if time.monotonic() - start > 120:
                raise SystemExit("rack: the instances were not all up in 120 s")
            time.sleep(0.5)
        time.sleep(10)
        before = [startup_stats(agent) for agent in agents]
        kind_of = {index: faults[index % len(faults)] for index in range(args.faulted)}
        faulted = {
            f"r{i}": kind_of[i % args.servers]
            for i in range(n)
            if i % args.servers in kind_of
        }
        stopped = [servers[i] for i, kind in kind_of.items() if kind == signal.SIGSTOP]
        started.callback(lambda: [os.kill(s.pid, signal.SIGCONT) for s in stopped])
        cut = time.time()
        downs.watch_from(cut)
        for index, kind in kind_of.items():
            os.kill(servers[index].pid, kind)
        while time.time() - cut < WATCHED:
            if len(set(downs.seen()[1]) & set(faulted)) == len(faulted):
                break
            time.sleep(0.1)
        down = downs.seen()[1]
        load = load_average()
        health = [
            (f"a{i}", healthz(agent), counters(before[i], startup_stats(agent)))
            for i, agent in enumerate(agents)
        ]
        split = [] if args.replicas < 2 else stages(client, sorted(faulted), cut)
    false_downs = sorted(set(down) - set(faulted))
    rows = [
        (
            f"{label} #{number + 1}",
            f"false downs {len(false_downs)}"
            + (f" ({', '.join(false_downs[:5])})" if false_downs else "")
            + f"; load {load}",
        )
    ]
    for kind in sorted(set(kind_of.values()), key=lambda k: k.name):
        names = [name for name, k in faulted.items() if k == kind]
        published = [down[name][0] - cut for name in names if name in down]
        decided = [down[name][1] - cut for name in names if name in down]
        within = sum(1 for t in published if t <= BOUND)
        rows += [
            (
                f"  {kind.name}",
                f"{len(published)}/{len(names)} down, {within} within"
                f" {BOUND:.2f} s; published {timing(published)};"
                f" decided {timing(decided)}",
            )
        ]
    rows += split
    for name, status, shown in health:
        rows += [(f"  /healthz {name}", status), (f"  {name}", shown)]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1000, help="N (1000)")
    parser.add_argument("--agents", type=int, default=3, help="(3)")
    parser.add_argument("--replicas", type=int, default=2, help="R (2)")
    parser.add_argument("--servers", type=int, default=10, help="redis-servers (10)")
    parser.add_argument(
        "--faulted", type=int, default=None, help="servers that fail (half)"
    )
    parser.add_argument(
        "--faults",
        default="stop",
        help="comma-separated, in turn over the faulted servers: stop, kill (stop)",
    )
    parser.add_argument("--runs", type=int, default=2, help="of each checkout (2)")
    add_checkout_option(parser)
    args = parser.parse_args()
    if args.faulted is None:
        args.faulted = args.servers // 2
    if not 0 < args.faulted <= args.servers:
        parser.error(f"--faulted: not between 1 and --servers: {args.faulted}")
    if not set(args.faults.split(",")) <= set(SIGNALS):
        parser.error(f"--faults: not a list of stop, kill: {args.faults!r}")
    if not 0 < args.replicas <= args.agents:
        parser.error(f"--replicas: not between 1 and --agents: {args.replicas}")
    rows = [("machine", machine()), *rows_in_turns(parser, args, run)]
    title = (
        f"A rack down: {args.instances:,} instances, {args.faulted} of"
        f" {args.servers} servers ({args.faults}), {args.agents} agent(s),"
        f" R = {args.replicas}"
    )
    print(table(rows, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""
Repeated ZooKeeper outages: does anything grow per outage?

nerve's users saw two more threads at each ZooKeeper outage (its client
closed with ``close``, not ``close!``). This script puts real agents
(``twistd -n sentinel``, a state_dir, serverset discovery) through
``--outages`` outages of each kind in turn, on a ZooKeeper of its own:

- ``sigstop``: ZooKeeper paused (``SIGSTOP``) for ``--outage`` seconds,
  longer than the session timeout, then resumed: the agent replaces its
  client, and the server expires or keeps the session as it finds it;
- ``restart``: ZooKeeper stopped and started again, its data kept;
- ``wipe``: ZooKeeper stopped, its data removed, started empty: a new
  session, every node made again.

After each outage it waits until every instance's node is in ZooKeeper,
up, and (with one agent) every instance a discovery member again, then
``--settle`` seconds, then samples each agent: threads
(``/proc/PID/task``), open fds, RSS and its anonymous part by mapping
(glibc's main heap, its arenas for other threads, the rest: pymalloc's
arenas among them), and from ``/debug/stats`` gc objects,
delayed calls, pending checks, the bridge's calls in kazoo's hands and
waiting, and where the agent shows them, its live kazoo clients and its
threads by name. ``--group`` runs three agents with ``replicas = 2``
instead of one. For each series it prints the step from the start to the
first outage of each kind, and the slope per outage from then on with its
standard error: a step paid once is a lazily built object, a slope is a
leak (a slope needs 3 outages of a kind, its error 4; with fewer it
says so). ``--checkout LABEL=PATH`` (repeatable) runs each checkout's agent
in turn, the same scene each.

    .venv/bin/python benchmarks/outages.py [--instances 1000] [--outages 20]
        [--group] [--checkout before=../before --checkout after=.]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    Agent,
    Instance,
    ZooKeeperServer,
    add_checkout_option,
    agent_config,
    check_choices,
    checkouts_of,
    commit_of,
    load_average,
    machine,
    open_files_for,
    start_redis_servers,
    stop_on_sigterm,
)
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

ZK_ROOT = "/bench-outages"
DISCOVERY_ROOT = "/bench-outages-discovery"
SERVICE = "cache"
KINDS = ("sigstop", "restart", "wipe")
# Every node back within this, after an outage (a new session's resync of
# a thousand nodes takes a few seconds on a loaded machine).
BACK_WITHIN = 90.0
# What each sample holds, per agent, and how it is shown.
SERIES = (
    ("threads", "threads", 1.0, ".0f"),
    ("fds", "open fds", 1.0, ".0f"),
    ("rss", "RSS (MiB)", 1 / 2**20, ".2f"),
    ("heap", "main heap (MiB)", 1 / 2**20, ".2f"),
    ("thread_arenas", "thread arenas (MiB)", 1 / 2**20, ".2f"),
    ("other_anon", "other anonymous (MiB)", 1 / 2**20, ".2f"),
    ("gc_objects", "gc objects", 1.0, ".0f"),
    ("delayed_calls", "delayed calls", 1.0, ".0f"),
    ("pending_checks", "pending checks", 1.0, ".0f"),
    ("bridge_calls", "bridge calls", 1.0, ".0f"),
    ("kazoo_clients", "kazoo clients", 1.0, ".0f"),
)


def parse_args() -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--instances", type=int, default=1000, help="instances (1000)")
    add("--servers", type=int, default=4, help="redis-servers they are on (4)")
    add("--outages", type=int, default=20, help="outages of each kind (20)")
    add("--kinds", default=",".join(KINDS), help="which, in turn (all)")
    add("--outage", type=float, default=3.0, help="seconds each lasts (3)")
    add("--session-timeout", type=float, default=2.0, help="asked (2)")
    add("--settle", type=float, default=3.0, help="seconds before a sample (3)")
    add("--group", action="store_true", help="three agents, replicas 2")
    add_checkout_option(parser)
    args = parser.parse_args()
    check_choices(parser, "--kinds", args.kinds, KINDS)
    if args.outage <= args.session_timeout:
        parser.error("--outage must be longer than --session-timeout")
    if args.outages < 3 or args.instances < 1:
        parser.error("--outages must be 3 or more, --instances 1 or more")
    return parser, args


def proc_threads(pid: int) -> int:
    """The process's threads, as the kernel counts them."""
    return len(os.listdir(f"/proc/{pid}/task"))


def proc_fds(pid: int) -> int:
    """The process's open file descriptors."""
    return len(os.listdir(f"/proc/{pid}/fd"))


# glibc's arenas for threads other than the main one are reserved this
# size and aligned to it (HEAP_MAX_SIZE on 64-bit).
THREAD_ARENA_SIZE = 64 << 20


def resident_by_kind(pid: int) -> dict[str, int]:
    """
    The process's resident anonymous bytes by where they are: glibc's main
    heap (``[heap]``), its arenas for other threads (kazoo's: anonymous,
    aligned to `THREAD_ARENA_SIZE`), and every other anonymous mapping
    (pymalloc's arenas, large blocks, stacks), from ``/proc/PID/smaps``.
    """
    kinds = {"heap": 0, "thread_arenas": 0, "other_anon": 0}
    kind: str | None = None
    with open(f"/proc/{pid}/smaps") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and not fields[0].endswith(":"):
                start = int(fields[0].split("-")[0], 16)
                name = fields[5] if len(fields) > 5 else ""
                kind = (
                    "heap" if name == "[heap]"
                    else None if name
                    else "thread_arenas" if start % THREAD_ARENA_SIZE == 0
                    else "other_anon"
                )  # fmt: skip
            elif fields[0] == "Rss:" and kind is not None:
                kinds[kind] += int(fields[1]) * 1024
    return kinds


def sample(agent: Agent) -> dict[str, Any]:
    """One agent's figures now (`SERIES`), and its threads by name."""
    stats = agent.get("/debug/stats", timeout=10.0)
    zk = stats.get("zookeeper") or {}
    calls = zk.get("calls") or {}
    return {
        "threads": proc_threads(agent.pid),
        "fds": proc_fds(agent.pid),
        "rss": agent.rss_bytes(),
        **resident_by_kind(agent.pid),
        "gc_objects": stats["gc_objects"],
        "delayed_calls": stats["delayed_calls"],
        "pending_checks": stats["pending_checks"],
        # In kazoo's hands, and waiting here for room, of every kind.
        "bridge_calls": sum(calls.values()) + zk.get("calls_unanswered", 0),
        # Shown by agents that count them; None otherwise.
        "kazoo_clients": zk.get("kazoo_clients_alive"),
        "thread_names": stats.get("threads"),
        "replacements": zk.get("client_replacements"),
    }


def nodes_back(hosts: str, names: Sequence[str], discovery: bool) -> str | None:
    """
    None if every instance's node is in ZooKeeper, up, and (`discovery`)
    each a member of the service; else what is missing. A client of its
    own each time: after a wipe, one that saw the old data is refused.
    """
    client = KazooClient(hosts=hosts, timeout=10.0)
    try:
        client.start(timeout=5.0)
    except Exception as e:
        return f"reader not connected: {e!r}"
    try:
        path = f"{ZK_ROOT}/instances"
        present = set(client.get_children(path)) if client.exists(path) else set()
        missing = [n for n in names if n not in present]
        if missing:
            return f"{len(missing)} instance node(s) missing"
        results = [client.get_async(f"{path}/{n}") for n in names]
        not_up = 0
        for result in results:
            try:
                data = result.get()[0]
            except NoNodeError:  # Gone since listed: an expiry applied.
                data = b"{}"
            not_up += json.loads(data).get("status") != "up"
        if not_up:
            return f"{not_up} instance node(s) not up"
        if discovery:
            service = f"{DISCOVERY_ROOT}/{SERVICE}"
            members = client.get_children(service) if client.exists(service) else []
            if len(members) != len(names):
                return f"{len(members)} discovery member(s) of {len(names)}"
        return None
    finally:
        client.stop()
        client.close()


def outage(kind: str, zookeeper: ZooKeeperServer, seconds: float) -> None:
    """One outage of `kind` (module docstring); ZooKeeper serves again after."""
    if kind == "sigstop":
        pid = zookeeper.pid
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)
        return
    zookeeper.stop()
    if kind == "wipe":
        zookeeper.wipe()
    time.sleep(seconds)
    zookeeper.start()


def wait_back(
    hosts: str, names: Sequence[str], discovery: bool, agents: Sequence[Agent]
) -> float:
    """
    Seconds until every node is back (`nodes_back`); fails after
    `BACK_WITHIN`, saying what the agents' ZooKeeper clients say.
    """
    started = time.monotonic()
    while True:
        why = nodes_back(hosts, names, discovery)
        if why is None:
            return time.monotonic() - started
        if time.monotonic() - started > BACK_WITHIN:
            said = []
            for agent in agents:
                zk = agent.get("/debug/stats", timeout=10.0).get("zookeeper") or {}
                said.append(f"{zk.get('state')} ({zk.get('connect_error')})")
            raise RuntimeError(
                f"not back within {BACK_WITHIN:g} s: {why}; the agents' "
                f"ZooKeeper: {', '.join(said)}"
                + "".join(agent.child.log_tail(40) for agent in agents)
            )
        time.sleep(0.5)


def run(
    args: argparse.Namespace, label: str, checkout: Path
) -> tuple[list[tuple[str, int, list[dict[str, Any]]]], list[float]]:
    """
    One checkout's agents through every outage: the samples, as (kind,
    outage number, one per agent; number 0 is before the first), and the
    seconds each outage took to be back.
    """
    with tempfile.TemporaryDirectory(prefix="outages-") as tmp, ExitStack() as started:
        workdir = Path(tmp)
        servers = start_redis_servers(args.servers, started)
        zookeeper = ZooKeeperServer()
        started.callback(zookeeper.close)
        zookeeper.start()
        instances = [
            Instance(f"c{i}", servers[i % len(servers)].port)
            for i in range(args.instances)
        ]
        names = [i.name for i in instances]
        settings: dict[str, Any] = {"session_timeout": args.session_timeout}
        if args.group:
            settings["replicas"] = 2
        else:
            settings["discovery"] = "serverset"
            settings["discovery_root"] = DISCOVERY_ROOT
        agents = []
        for n in range(3 if args.group else 1):
            state = workdir / f"state-{n}"
            state.mkdir()
            text = agent_config(
                instances, zookeeper=zookeeper.hosts, zk_root=ZK_ROOT,
                agent_id=f"{label}-{n}", zk_settings=settings, service=SERVICE,
            )  # fmt: skip
            agent = Agent(
                workdir, f'state_dir = "{state}"\n{text}', f"agent-{n}", checkout,
                open_files=open_files_for(args.instances),
            )  # fmt: skip
            started.callback(agent.stop)
            agents.append(agent)
        for agent in agents:
            agent.wait_ready()
        discovery = not args.group
        wait_back(zookeeper.hosts, names, discovery, agents)
        time.sleep(args.settle)
        samples = [("start", 0, [sample(a) for a in agents])]
        back_times = []
        for kind in args.kinds.split(","):
            for number in range(1, args.outages + 1):
                outage(kind, zookeeper, args.outage)
                took = wait_back(zookeeper.hosts, names, discovery, agents)
                back_times.append(took)
                time.sleep(args.settle)
                samples.append((kind, number, [sample(a) for a in agents]))
                first = samples[-1][2][0]
                print(
                    f"{label} {kind} {number}: back in {took:.1f} s, threads "
                    f"{first['threads']}, fds {first['fds']}, RSS "
                    f"{first['rss'] / 2**20:.2f} MiB, gc {first['gc_objects']}, "
                    f"clients {first['kazoo_clients']}, load {load_average()}",
                    file=sys.stderr,
                    flush=True,
                )
        for agent in agents:
            agent.stop()
        return samples, back_times


def fit(points: Sequence[tuple[float, float]]) -> tuple[float | None, float | None]:
    """
    Slope and its standard error, least squares: no slope with fewer than
    two points, no error with fewer than three.
    """
    n = len(points)
    if n < 2:
        return None, None
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx
    if n < 3:
        return slope, None
    residual = sum((y - my - slope * (x - mx)) ** 2 for x, y in points)
    return slope, (residual / (n - 2) / sxx) ** 0.5


def per_outage(points: Sequence[tuple[float, float]]) -> str:
    """The slope per outage as printed, or why there is none."""
    slope, error = fit(points)
    if slope is None:
        return f"no slope: {len(points)} outage(s) after the first, 2 needed"
    if error is None:
        return f"then {slope:+.3g}/outage, no error from 2 points"
    return f"then {slope:+.3g} ± {error:.2g}/outage"


def report(
    label: str,
    samples: list[tuple[str, int, list[dict[str, Any]]]],
    back: list[float],
    agents: int,
) -> list[str]:
    """The per-kind table of one checkout: first step, then slope per outage."""
    lines = []
    kinds = [k for k in dict.fromkeys(kind for kind, _, _ in samples) if k != "start"]
    for n in range(agents):
        lines.append(f"{label}, agent {n}:")
        previous = samples[0][2][n]
        for kind in kinds:
            runs = [(num, s[n]) for k, num, s in samples if k == kind]
            cells = []
            for key, name, scale, form in SERIES:
                if any(s[key] is None for _, s in runs) or previous[key] is None:
                    continue
                step = (runs[0][1][key] - previous[key]) * scale
                then = per_outage([(num, s[key] * scale) for num, s in runs[1:]])
                cells.append(
                    f"{name} {runs[0][1][key] * scale:{form}} -> "
                    f"{runs[-1][1][key] * scale:{form}} (first {step:+{form}}, {then})"
                )
            lines.append(f"  {kind}: " + "; ".join(cells))
            previous = runs[-1][1]
        names = samples[-1][2][n]["thread_names"]
        if names is not None:
            lines.append(f"  threads at the end, by name: {names}")
        lines.append(f"  client replacements: {samples[-1][2][n]['replacements']}")
    if back:
        ordered = sorted(back)
        lines.append(
            f"{label}: back in ZooKeeper after each outage: p50 "
            f"{ordered[len(ordered) // 2]:.1f} s, max {ordered[-1]:.1f} s"
        )
    return lines


def main() -> int:
    """Run each checkout through the outages in turn; print the tables."""
    parser, args = parse_args()
    stop_on_sigterm()
    # The readers' clients say each refused connection.
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)
    checkouts = checkouts_of(parser, args.checkout)
    print(machine())
    print(
        f"{'a group of 3, replicas 2' if args.group else 'one agent'}, "
        f"{args.instances} instances, {args.outages} outages of each of "
        f"{args.kinds}, {args.outage:g} s each, session timeout "
        f"{args.session_timeout:g} s, settle {args.settle:g} s"
    )
    for label, path in checkouts:
        print(f"{label}: {commit_of(path)}, load {load_average()} at the start")
        samples, back = run(args, label, path)
        print("\n".join(report(label, samples, back, 3 if args.group else 1)))
        print(f"{label}: load {load_average()} at the end", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

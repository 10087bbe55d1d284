"""
What a group costs (README "Running a group").

``cost`` (no servers; the fake ZooKeeper of the tests, on a Clock, and the
real modules):

- the assignment: computing every instance's observers, and a join and a
  leave, in the two shapes: (a) one agent per Redis host, thousands of
  agents with 50 instances each, seen from one of them; (b) a central
  group of tens of agents that all know 100,000 instances;
- the membership: the listing every member reads at a change (bytes), and
  a catalog of 100,000 names: its size compressed, and the CPU to build
  and to read it back;
- ZooKeeper's writes per second at steady state, 3 agents x 3,000
  instances, 2 replicas (every write counted, over a window of simulated
  time after the group settled).

``cpu`` (real ZooKeeper, redis-servers and ``twistd`` agents): CPU per
check of one agent with N instances, then of two agents sharing 2N
(one replica), each alone on the machine's cores for the window.

    .venv/bin/python benchmarks/group.py cost
    .venv/bin/python benchmarks/group.py cpu [--instances 3000] [--duration 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (  # noqa: E402
    Agent,
    Instance,
    agent_config,
    machine,
    process_cpu_seconds,
    start_redis_servers,
    table,
)

from sentinel.assignment import Assignment  # noqa: E402
from sentinel.catalog import (  # noqa: E402
    Catalog,
    catalog_node_name,
    catalog_parts,
    decode_catalog,
)
from tests.servers import ZooKeeperServer  # noqa: E402


def cpu_of(work: Any) -> tuple[float, Any]:
    started = time.process_time()
    result = work()
    return time.process_time() - started, result


def assignment_costs(
    agents: int, known: int, shared: bool, replicas: int
) -> list[tuple[str, str]]:
    """One member's costs: first computation, a join, a leave."""
    names = [f"host-{i // 50:05d}.example.net:{6379 + i % 50}" for i in range(known)]
    me = "agent-00000"
    if shared:
        catalog = frozenset(names)
        members = {f"agent-{i:05d}": catalog for i in range(agents)}
    else:
        # Each agent knows its own host's instances; ours are `names`.
        members = {
            f"agent-{i:05d}": frozenset(
                f"host-{i:05d}.other.net:{6379 + j}" for j in range(50)
            )
            for i in range(agents)
        }
        members[me] = frozenset(names)
    assignment = Assignment(replicas)
    first, _ = cpu_of(lambda: (assignment.set_known(names), assignment.update(members)))
    joined = dict(members)
    joined["agent-new"] = members[me] if shared else frozenset(names[:10])
    join, moved_in = cpu_of(lambda: assignment.update(joined))
    left = dict(joined)
    del left["agent-00001" if shared else "agent-new"]
    leave, moved_out = cpu_of(lambda: assignment.update(left))
    shape = f"{agents} agents, {known:,} known, R={replicas}"
    return [
        (f"{shape}: first assignment", f"{first * 1000:.1f} ms CPU"),
        (f"{shape}: a join", f"{join * 1000:.1f} ms CPU, {len(moved_in)} moved"),
        (f"{shape}: a leave", f"{leave * 1000:.1f} ms CPU, {len(moved_out)} moved"),
    ]


def catalog_costs() -> list[tuple[str, str]]:
    names = frozenset(f"cache-{i:06d}.prod.example.com:6379" for i in range(100_000))
    build, (digest, parts) = cpu_of(lambda: catalog_parts(Catalog(names, 3, 2)))
    read, _ = cpu_of(lambda: decode_catalog(digest, parts))
    listing = sum(
        len(catalog_node_name(f"redis-host-{i:05d}", digest, "0123abcd", 0, 1)) + 4
        for i in range(2000)
    )
    return [
        (
            "catalog of 100,000 names",
            f"{sum(len(p) for p in parts):,} bytes in {len(parts)} part(s) "
            f"(JSON {len(Catalog(names, 3, 2).encode()):,})",
        ),
        ("  built / read back", f"{build * 1000:.0f} / {read * 1000:.0f} ms CPU"),
        ("listing read at a change, 2,000 agents", f"{listing:,} bytes per member"),
    ]


def steady_writes(
    instances: int, replicas: int, window: float
) -> list[tuple[str, str]]:
    from tests.groupfakes import Fleet

    names = [f"r{i:05d}" for i in range(instances)]
    fleet = Fleet()
    for agent in ("a", "b", "c"):
        fleet.add(agent, names, replicas=replicas).start()
    fleet.run(45.0, step=0.25)
    clients = [m.zk for m in fleet.members.values()]
    writes = ("create", "set", "delete", "replace")

    def count() -> int:
        return sum(c.calls[w] for c in clients for w in writes)

    before = count()
    cpu, _ = cpu_of(lambda: fleet.run(window, step=0.25))
    rate = (count() - before) / window
    return [
        (
            f"3 agents x {instances:,} instances, R={replicas}: writes",
            f"{rate:.0f}/s (refresh 30 s: {instances / 30:.0f}/s of verdicts, "
            f"heartbeats 0.3/s)",
        ),
        ("  simulated", f"{window:g} s in {cpu:.0f} s of CPU"),
    ]


def cost(args: argparse.Namespace) -> None:
    rows: list[tuple[str, str]] = []
    rows += assignment_costs(2000, 50, shared=False, replicas=1)
    rows += assignment_costs(20, 100_000, shared=True, replicas=3)
    rows += catalog_costs()
    rows += steady_writes(3000, 2, args.window)
    print(table(rows, "group costs (benchmarks/group.py cost)"))


def run_agents(
    workdir: Path,
    zookeeper: str,
    groups: list[list[Instance]],
    args: argparse.Namespace,
    label: str,
) -> dict[str, float]:
    agents = []
    try:
        for index, instances in enumerate(groups):
            config = agent_config(
                instances,
                interval=1.0,
                timeout=0.5,
                zookeeper=zookeeper,
                zk_root=f"/bench-{label}",
                agent_id=f"{label}-{index}",
            )
            agents.append(Agent(workdir, config, f"{label}-{index}"))
        for agent in agents:
            agent.wait_ready()
        time.sleep(args.warmup)
        before = [a.get("/debug/stats")["checks"] for a in agents]
        cpu0 = process_cpu_seconds(a.pid for a in agents)
        time.sleep(args.duration)
        cpu1 = process_cpu_seconds(a.pid for a in agents)
        stats = [a.get("/debug/stats") for a in agents]
        checks = sum(s["checks"] for s in stats) - sum(before)
        shares = [a.get("/group")["observing"] for a in agents]
        failures = sum(s["failures"] for s in stats)
    finally:
        for agent in agents:
            agent.stop()
    return {
        "cpu": cpu1 - cpu0,
        "checks": checks,
        "per_check_us": (cpu1 - cpu0) / checks * 1e6 if checks else float("nan"),
        "shares": json.dumps(shares),
        "failures": failures,
    }


def cpu(args: argparse.Namespace) -> None:
    with ExitStack() as started, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        zookeeper = ZooKeeperServer().start()
        started.callback(zookeeper.stop)
        servers = start_redis_servers(4, started)
        ports = [s.port for s in servers]
        n = args.instances
        one = [Instance(f"r{i}", ports[i % len(ports)]) for i in range(n)]
        both = [Instance(f"r{i}", ports[i % len(ports)]) for i in range(2 * n)]
        alone = run_agents(workdir, zookeeper.hosts, [one], args, "alone")
        shared = run_agents(workdir, zookeeper.hosts, [both, both], args, "shared")
    ratio = shared["per_check_us"] / alone["per_check_us"]
    print(machine())
    print(
        table(
            [
                (f"1 agent, {n:,} instances", _line(alone)),
                (f"2 agents sharing {2 * n:,} (R=1)", _line(shared)),
                ("CPU per check, shared / alone", f"{ratio:.3f}"),
            ],
            f"CPU per check (benchmarks/group.py cpu, {args.duration:g} s window)",
        )
    )


def _line(result: dict[str, Any]) -> str:
    return (
        f"{result['per_check_us']:.1f} us/check ({result['checks']:,} checks, "
        f"{result['cpu']:.1f} s CPU, shares {result['shares']}, "
        f"{result['failures']} failed)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    sub = parser.add_subparsers(dest="what", required=True)
    costs = sub.add_parser("cost")
    costs.add_argument("--window", type=float, default=60.0)
    cpus = sub.add_parser("cpu")
    cpus.add_argument("--instances", type=int, default=3000)
    cpus.add_argument("--duration", type=float, default=30.0)
    cpus.add_argument("--warmup", type=float, default=20.0)
    args = parser.parse_args()
    if args.what == "cost":
        cost(args)
    else:
        cpu(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

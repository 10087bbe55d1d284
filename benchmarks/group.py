"""
What a group costs (docs/groups.rst).

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

``cpu`` (real ZooKeeper, 4 redis-servers and ``twistd`` agents): CPU per
check of one agent with N instances, then of two agents sharing 2N (one
replica), each alone on the machine's cores for the window, which starts
``--warmup`` s after every instance is up. Failed checks are those of the
window; the load average is read at its start and end. ``--interval``
lowers the checks due (3 s: 3,000 a second for 9,000 instances).

``writes`` (the same servers): three agents that all know N instances,
``replicas = 2``, interval 1 s. ZooKeeper's transactions per second (its
zxid) in a steady window, then after ``kill -9`` of one agent: until its
session timeout, until every instance node is a survivor's again (read
with data watches), ``--settle`` s more, and a steady window again; with
the time from the kill until every node is a survivor's, the survivors'
creates (a takeover's transaction counts as one) answered and refused
meanwhile, the requests ZooKeeper received from them (``cons``), and any
instance published down (every server is healthy: any
down is false). ``--tree`` runs another checkout's agents (code before a
change, say) under this script.

    .venv/bin/python benchmarks/group.py cost
    .venv/bin/python benchmarks/group.py cpu [--instances 3000] [--duration 30]
        [--warmup 20] [--interval 1] [--timeout 0.5]
    .venv/bin/python benchmarks/group.py writes [--instances 3000]
        [--window 60] [--settle 10] [--session-timeout 4] [--tree PATH]
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from contextlib import ExitStack
from itertools import pairwise
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (  # noqa: E402
    LOOPBACK,
    Agent,
    Instance,
    agent_config,
    load_average,
    machine,
    open_files_for,
    percentile,
    process_cpu_seconds,
    start_redis_servers,
    stop_on_sigterm,
    table,
)
from kazoo.client import KazooClient  # noqa: E402
from kazoo.recipe.watchers import DataWatch  # noqa: E402

from sentinel.assignment import Assignment  # noqa: E402
from sentinel.catalog import (  # noqa: E402
    Catalog,
    catalog_node_name,
    catalog_parts,
    decode_catalog,
)
from sentinel.settings import setting  # noqa: E402
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


def wait_all_up(agents: list[Agent], expected: int, limit: float) -> str:
    """
    Wait (at most `limit` s) until the agents observe `expected` instances
    in all (instances x replicas), every one of them up; say how it went.
    """
    started = time.monotonic()
    while True:
        stats = [a.get("/debug/stats", timeout=30.0) for a in agents]
        observed = sum(s["instances"] for s in stats)
        up = sum(s["instances_up"] for s in stats)
        waited = time.monotonic() - started
        if observed == expected and up == expected:
            return f"all {expected:,} up after {waited:.0f} s"
        if waited > limit:
            return (
                f"NOT all up after {limit:g} s: {up:,} up of {observed:,} "
                f"observed, {expected:,} expected"
            )
        time.sleep(0.5)


def start_agents(
    running: ExitStack,
    workdir: Path,
    configs: list[tuple[str, str, int]],
    tree: Path | None = None,
) -> list[Agent]:
    """
    One agent per (label, config, instances configured), each stopped by
    `running`, with an open-file limit that fits its instances, of the
    checkout `tree` (default: this one); return once every one answers.
    """
    agents = []
    for label, config, instances in configs:
        agent = Agent(
            workdir, config, label, tree, open_files=open_files_for(instances)
        )
        running.callback(agent.stop)
        agents.append(agent)
    for agent in agents:
        agent.wait_ready()
    return agents


def run_agents(
    workdir: Path,
    zookeeper: str,
    groups: list[list[Instance]],
    args: argparse.Namespace,
    label: str,
) -> dict[str, Any]:
    """One window of CPU and checks of an agent per group of instances."""
    expected = len({i.name for group in groups for i in group})  # R = 1
    configs = [
        (
            f"{label}-{index}",
            agent_config(
                instances,
                interval=args.interval,
                timeout=args.timeout,
                zookeeper=zookeeper,
                zk_root=f"/bench-{label}",
                agent_id=f"{label}-{index}",
            ),
            len(instances),
        )
        for index, instances in enumerate(groups)
    ]
    with ExitStack() as running:
        agents = start_agents(running, workdir, configs)
        all_up = wait_all_up(agents, expected, args.up_limit)
        time.sleep(args.warmup)
        load_start = load_average()
        before = [a.get("/debug/stats", timeout=30.0) for a in agents]
        cpu0 = process_cpu_seconds(a.pid for a in agents)
        time.sleep(args.duration)
        cpu1 = process_cpu_seconds(a.pid for a in agents)
        after = [a.get("/debug/stats", timeout=30.0) for a in agents]
        load_end = load_average()
        shares = [a.get("/group", timeout=30.0)["observing"] for a in agents]
    checks = sum(s["checks"] for s in after) - sum(s["checks"] for s in before)
    return {
        "cpu": cpu1 - cpu0,
        "checks": checks,
        "due": expected / args.interval * args.duration,
        "per_check_us": (cpu1 - cpu0) / checks * 1e6 if checks else float("nan"),
        "shares": json.dumps(shares),
        "failures": sum(s["failures"] for s in after)
        - sum(s["failures"] for s in before),
        "up_at_end": sum(s["instances_up"] for s in after),
        "expected": expected,
        "all_up": all_up,
        "load": f"{load_start} -> {load_end}",
    }


def cpu(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as started:
        workdir = Path(tmp)
        zookeeper = ZooKeeperServer().start()
        started.callback(zookeeper.close)
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
                ("", _context(alone)),
                (f"2 agents sharing {2 * n:,} (R=1)", _line(shared)),
                ("", _context(shared)),
                ("CPU per check, shared / alone", f"{ratio:.3f}"),
            ],
            f"CPU per check (benchmarks/group.py cpu, interval {args.interval:g} s, "
            f"timeout {args.timeout:g} s, {args.duration:g} s window "
            f"after {args.warmup:g} s)",
        )
    )


def _line(result: dict[str, Any]) -> str:
    return (
        f"{result['per_check_us']:.1f} us/check ({result['checks']:,} checks "
        f"of {result['due']:,.0f} due, {result['cpu']:.1f} s CPU, "
        f"shares {result['shares']}, {result['failures']} failed in the window)"
    )


def _context(result: dict[str, Any]) -> str:
    return (
        f"start: {result['all_up']}; at the window's end "
        f"{result['up_at_end']:,} of {result['expected']:,} up; "
        f"load average {result['load']}"
    )


def zxid(zookeeper: ZooKeeperServer) -> int:
    """
    ZooKeeper's last transaction id (``srvr``): every create, set, delete
    and session creation or expiry adds one. A standalone server keeps its
    epoch (the high 32 bits), so differences count transactions.
    """
    for line in zookeeper.four_letter_word("srvr").decode().splitlines():
        if line.startswith("Zxid:"):
            return int(line.split(":", 1)[1].strip(), 16)
    raise RuntimeError("ZooKeeper's srvr answer has no Zxid line")


class InstanceNodes:
    """
    Every ``{root}/instances/{name}`` as readers see it, kept current by one
    kazoo data watch per node (its callbacks run on kazoo's thread): the
    downs published and, after `expect_takeover`, when each node of a dead
    agent went missing and when a survivor wrote it. Watches can lag behind
    under load, so the takeover is timed by ZooKeeper's own clock (the
    node's mtime, same machine); a down shorter than one watch round trip
    could be missed.
    """

    def __init__(self, hosts: str, root: str, names: list[str]) -> None:
        self.client = KazooClient(hosts=hosts, timeout=30.0)
        self.client.start(timeout=10.0)
        self.downs: list[tuple[str, str | None]] = []
        self.writer: dict[str, str | None] = {}
        self.dead_nodes: frozenset[str] = frozenset()
        self.survivors: frozenset[str] = frozenset()
        self.missing_seen: dict[str, float] = {}
        self.taken_at: dict[str, float] = {}
        for name in names:
            DataWatch(
                self.client,
                f"{root}/instances/{name}",
                functools.partial(self._changed, name),
            )

    def expect_takeover(self, dead: str, survivors: set[str]) -> int:
        """
        From now on, time the takeover of the nodes `dead` writes by
        `survivors`; return how many nodes it writes.
        """
        self.survivors = frozenset(survivors)
        self.dead_nodes = frozenset(
            name for name, writer in list(self.writer.items()) if writer == dead
        )
        return len(self.dead_nodes)

    def taken_over(self) -> int:
        """How many of the dead agent's nodes a survivor has written."""
        return len(self.taken_at)

    def _changed(self, name: str, data: bytes | None, stat: Any, event: Any) -> None:
        if data is None:
            self.writer[name] = None
            if name in self.dead_nodes:
                self.missing_seen.setdefault(name, time.time())
            return
        try:
            document = json.loads(data)
            writer, status = document.get("agent"), document.get("status")
        except (ValueError, AttributeError):
            writer, status = "unreadable", None
        self.writer[name] = writer
        if status == "down":
            self.downs.append((name, writer))
        if name in self.dead_nodes and writer in self.survivors:
            self.taken_at.setdefault(name, stat.mtime / 1000)

    def close(self) -> None:
        """Stop the client (bounded by kazoo's own timeouts)."""
        self.client.stop()
        self.client.close()


def writes(args: argparse.Namespace) -> None:
    n = args.instances
    root = "/bench-writes"
    names = [f"r{i}" for i in range(n)]
    ids = [f"writes-{index}" for index in range(3)]
    settings = {"replicas": 2, "session_timeout": args.session_timeout}
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as started:
        zookeeper = ZooKeeperServer().start()
        started.callback(zookeeper.close)
        ports = [s.port for s in start_redis_servers(4, started)]
        instances = [
            Instance(name, ports[i % len(ports)]) for i, name in enumerate(names)
        ]
        configs = [
            (
                agent_id,
                agent_config(
                    instances,
                    zookeeper=zookeeper.hosts,
                    zk_root=root,
                    agent_id=agent_id,
                    zk_settings=settings,
                ),
                n,
            )
            for agent_id in ids
        ]
        agents = start_agents(started, Path(tmp), configs, args.tree)
        rows.append(("start", wait_all_up(agents, 2 * n, args.up_limit)))
        nodes = InstanceNodes(zookeeper.hosts, root, names)
        started.callback(nodes.close)
        time.sleep(args.settle)
        marks = [("steady", time.monotonic(), zxid(zookeeper), load_average())]

        def mark(label: str) -> None:
            marks.append((label, time.monotonic(), zxid(zookeeper), load_average()))

        time.sleep(args.window)
        mark(f"kill -9 of {ids[0]}, next {args.session_timeout:g} s")
        downs_before = len(nodes.downs)
        victim, survivors = agents[0], set(ids[1:])
        dead_nodes = nodes.expect_takeover(ids[0], survivors)
        killed_at = time.monotonic()
        killed_wall = time.time()
        creates_before = _creates(agents[1:])
        reader = nodes.client.client_id[0]
        requests_before = _requests(zookeeper, reader)
        victim.child.kill()
        time.sleep(args.session_timeout)
        mark("then until every node is a survivor's")
        deadline = killed_at + args.session_timeout + args.recovery_limit
        while nodes.taken_over() < dead_nodes and time.monotonic() < deadline:
            time.sleep(0.05)
        creates = _creates(agents[1:])
        requests = _requests(zookeeper, reader)
        mark(f"the {args.settle:g} s after that")
        time.sleep(args.settle)
        mark("steady again")
        time.sleep(args.window)
        mark("end")
        stats = _stats_of(agents[1:])
    rows += _write_rows(marks)
    rows += _takeover_rows(nodes, dead_nodes, killed_wall, args.session_timeout)
    rows.append(
        (
            "  survivors' creates until then",
            "/metrics not answered"
            if creates is None or creates_before is None
            else f"{creates['ok'] - creates_before['ok']:,} answered, "
            f"{creates['error'] - creates_before['error']:,} refused "
            "(opinions of the new observers among them)",
        )
    )
    rows.append(
        (
            "  survivors' requests until then",
            f"{_requests_since(requests_before, requests):,} (ZooKeeper's cons: "
            "packets received; a transaction is one)",
        )
    )
    rows += [
        (
            "published down (all servers healthy)",
            f"{downs_before} before the kill, {len(nodes.downs) - downs_before} after",
        ),
        (
            "survivors at the end",
            ", ".join(
                "/debug/stats not answered within 30 s"
                if s is None
                else f"{s['instances_up']:,} of {s['instances']:,} observed up"
                for s in stats
            ),
        ),
    ]
    refresh = setting("zookeeper.refresh").default
    print(machine())
    print(
        table(
            rows,
            f"ZooKeeper writes (benchmarks/group.py writes, 3 agents x {n:,} "
            f"instances, R=2, interval 1 s, verdicts refreshed every "
            f"{refresh:g} s: {n / refresh:.0f}/s)",
        )
    )


def _stats_of(agents: list[Agent]) -> list[dict[str, Any] | None]:
    """
    Each agent's /debug/stats, or None if it did not answer within 30 s:
    on a machine loaded by other work, a survivor too starved to answer
    lost the whole run's figures.
    """
    stats: list[dict[str, Any] | None] = []
    for agent in agents:
        try:
            stats.append(agent.get("/debug/stats", timeout=30.0))
        except OSError:
            stats.append(None)
    return stats


_RECEIVED = re.compile(r"recved=(\d+),sent=\d+,sid=(0x[0-9a-f]+)")


def _requests(zookeeper: ZooKeeperServer, reader: int) -> dict[int, int]:
    """
    The packets ZooKeeper received on each connection but the reader's
    session's (``cons``), by session: the agents' requests and pings.
    """
    answer = zookeeper.four_letter_word("cons", timeout=5.0).decode()
    received = {
        int(session, 16): int(count) for count, session in _RECEIVED.findall(answer)
    }
    received.pop(reader, None)
    return received


def _requests_since(before: dict[int, int], after: dict[int, int]) -> int:
    """
    The packets received since `before` on the connections open at
    `after` (the survivors'; the killed agent's closed with its session).
    """
    return sum(count - before.get(session, 0) for session, count in after.items())


_CREATES = re.compile(
    r'^sentinel_zk_writes_total\{op="create",result="(ok|error)"\} ([0-9.e+]+)$',
    re.MULTILINE,
)


def _creates(agents: list[Agent]) -> Counter[str] | None:
    """
    The creates of `agents` (``sentinel_zk_writes``: a takeover's
    transaction counts as one) by outcome, from /metrics; None if one did
    not answer within 30 s.
    """
    total: Counter[str] = Counter()
    for agent in agents:
        url = f"http://{LOOPBACK}:{agent.http_port}/metrics"
        try:
            with urllib.request.urlopen(url, timeout=30.0) as response:
                text = response.read().decode()
        except OSError:
            return None
        for result, value in _CREATES.findall(text):
            total[result] += int(float(value))
    return total


def _takeover_rows(
    nodes: InstanceNodes, dead_nodes: int, killed_at: float, session_timeout: float
) -> list[tuple[str, str]]:
    """When the dead agent's nodes went missing and came back (wall clock)."""
    taken = list(nodes.taken_at.values())
    missing = nodes.missing_seen
    expired = min(missing.values(), default=None)
    back = [nodes.taken_at[n] - expired for n in missing if n in nodes.taken_at]
    return [
        (
            "every node a survivor's again",
            f"{max(taken) - killed_at:.2f} s after the kill (session timeout "
            f"{session_timeout:g} s; {dead_nodes:,} nodes were the dead agent's)"
            if len(taken) == dead_nodes
            else f"NOT reached: {len(taken):,} of {dead_nodes:,} taken over",
        ),
        (
            "  first of them seen missing",
            "none"
            if expired is None
            else f"{expired - killed_at:.2f} s after the kill; {len(missing):,} "
            f"missing, written again {_spread(back)} later (p50 / max)",
        ),
    ]


def _spread(seconds: list[float]) -> str:
    if not seconds:
        return "-"
    return f"{percentile(seconds, 50):.2f} / {max(seconds):.2f} s"


def _write_rows(marks: list[tuple[str, float, int, str]]) -> list[tuple[str, str]]:
    """Writes per second between consecutive marks, with their load average."""
    rows = []
    for (label, start, first, load_start), (_, end, last, load_end) in pairwise(marks):
        seconds = end - start
        rows.append(
            (
                f"{label}: writes",
                f"{(last - first) / seconds:.0f}/s ({last - first:,} in "
                f"{seconds:.1f} s; load average {load_start} -> {load_end})",
            )
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    sub = parser.add_subparsers(dest="what", required=True)
    costs = sub.add_parser("cost")
    costs.add_argument("--window", type=float, default=60.0)
    cpus = sub.add_parser("cpu")
    cpus.add_argument("--instances", type=int, default=3000, help="N (3000)")
    cpus.add_argument("--duration", type=float, default=30.0, help="window, s (30)")
    cpus.add_argument("--warmup", type=float, default=20.0, help="after all up (20)")
    cpus.add_argument("--interval", type=float, default=1.0, help="agents' (1)")
    cpus.add_argument("--timeout", type=float, default=0.5, help="agents' (0.5)")
    written = sub.add_parser("writes")
    written.add_argument("--instances", type=int, default=3000, help="N (3000)")
    written.add_argument(
        "--window",
        type=float,
        default=60.0,
        help="steady windows, s (60: a multiple of zookeeper.refresh)",
    )
    written.add_argument("--settle", type=float, default=10.0, help="s (10)")
    written.add_argument(
        "--session-timeout", type=float, default=4.0, help="agents', s (4)"
    )
    written.add_argument(
        "--recovery-limit",
        type=float,
        default=60.0,
        help="longest wait for the takeover after the session timeout, s (60)",
    )
    written.add_argument(
        "--tree",
        type=Path,
        default=None,
        help="a checkout whose agents to run (default: this one)",
    )
    for command in (cpus, written):
        command.add_argument(
            "--up-limit",
            type=float,
            default=300.0,
            help="longest wait for every instance up after start, s (300)",
        )
    args = parser.parse_args()
    for option in ("instances", "interval", "timeout", "session_timeout"):
        if getattr(args, option, 1) <= 0:
            flag = "--" + option.replace("_", "-")
            parser.error(f"{flag} must be positive, not {getattr(args, option)}")
    stop_on_sigterm()
    {"cost": cost, "cpu": cpu, "writes": writes}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

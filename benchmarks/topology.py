"""
Role changes as a user sees them, and what the topology's checks cost.

``roles``: a master, one replica, a real ZooKeeper and the agent at its
defaults (interval 1 s, timeout 0.5 s). Each round waits a random fraction
of the interval, sends ``REPLICAOF NO ONE`` to the replica with
``redis-cli``, and times the ZooKeeper node saying ``role: master`` (a kazoo
data watch: the time the watch delivered it); then ``REPLICAOF`` the master
again, and times ``role: slave``. It prints p50/p99/max of both against the
issue's bound (interval + timeout + ZooKeeper's latency: 2 s). An instance
publishes at most ``sentinel.flapping.LIMIT`` (10) changes of role a
``WINDOW`` (60 s), the rest waiting for room, so the changes are paced
within it: one is asked for only once the change 10 before it is 61 s old
(5 rounds back to back, then a wait; the seconds waited are printed).
``--unpaced`` runs the rounds back to back, from the sixth on timing that
wait instead.

``cost``: N instances over a few redis-servers (as ``capacity.py``), one
agent per variant, in turns: checks per CPU-second of the agent and the
redis-servers' CPU per check, over a window after a warm-up. The variants
are what a check sends: PING alone (``role_signal = false``), PING and
HELLO (the default), and PING, EXISTS and HELLO (with a ``drain_key``).

``path``: the check path alone, in process: real probes and their protocol
on in-memory transports (no sockets, no kernel, no Redis), each check's
replies fed as one read, as Redis sends them. It prints the CPU time
(process time: a shared machine's other load counts little) per check of
each variant, best and median of the repeats, with gc frozen as the agent
has it.

    .venv/bin/python benchmarks/topology.py roles [--rounds 10] [--unpaced]
    .venv/bin/python benchmarks/topology.py cost [--instances 3000]
    .venv/bin/python benchmarks/topology.py path [--instances 3000]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    LOOPBACK,
    Agent,
    Instance,
    RedisServer,
    ZooKeeperServer,
    agent_config,
    load_average,
    machine,
    ms_summary,
    process_cpu_seconds,
    start_redis_servers,
    stop_on_sigterm,
    table,
)
from kazoo.client import KazooClient
from kazoo.recipe.watchers import DataWatch

from sentinel.flapping import LIMIT, WINDOW

ZK_ROOT = "/bench-topology"
# Seconds past a published change's WINDOW before a paced change is asked.
PACE_MARGIN = 1.0
VARIANTS = {
    "PING": "role_signal = false\n",
    "PING+HELLO": "",
    "PING+EXISTS+HELLO": 'drain_key = "drain:{port}"\n',
}


def redis_cli(port: int, *args: str) -> None:
    """One command, as an operator sends it."""
    subprocess.run(
        ["redis-cli", "-h", LOOPBACK, "-p", str(port), *args],
        capture_output=True,
        timeout=10,
        check=True,
    )


class RoleWatch:
    """The roles a node showed, with the wall-clock time of each change."""

    def __init__(self, client: KazooClient, path: str) -> None:
        self._lock = threading.Lock()
        self.changes: list[tuple[float, str | None]] = []
        DataWatch(client, path, self._changed)

    def _changed(self, data: bytes | None, stat: Any) -> None:
        now = time.time()
        role = None if data is None else json.loads(data)["role"]
        with self._lock:
            if not self.changes or self.changes[-1][1] != role:
                self.changes.append((now, role))

    def became(self, role: str, after: float, limit: float) -> float | None:
        """Seconds from `after` to the node showing `role`; None if not in `limit`."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            with self._lock:
                for at, seen in self.changes:
                    if at >= after and seen == role:
                        return at - after
            time.sleep(0.002)
        return None


def wait_for_room(published: list[float], now: float) -> float:
    """
    Seconds from `now` until a change may be asked for and published at
    once, after changes published at `published` (the oldest first): at
    most LIMIT within a WINDOW (`sentinel.flapping`), with a margin.
    """
    if len(published) < LIMIT:
        return 0.0
    return max(0.0, published[-LIMIT] + WINDOW + PACE_MARGIN - now)


def roles(args: argparse.Namespace) -> str:
    """Promotion and demotion times, as the ``roles`` table."""
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-topology-"))
    promotions: list[float | None] = []
    demotions: list[float | None] = []
    try:
        with ExitStack() as started:
            master = RedisServer(extra_args=["--repl-diskless-sync-delay", "0"])
            started.callback(master.stop)
            master.start()
            replica = RedisServer(
                extra_args=["--replicaof", LOOPBACK, str(master.port)]
            )
            started.callback(replica.stop)
            replica.start()
            zookeeper = ZooKeeperServer()
            started.callback(zookeeper.close)
            zookeeper.start()
            config = agent_config(
                [Instance("master", master.port), Instance("replica", replica.port)],
                zookeeper=zookeeper.hosts,
                zk_root=ZK_ROOT,
            )
            agent = Agent(workdir, config)
            started.callback(agent.stop)
            client = KazooClient(hosts=zookeeper.hosts, timeout=10.0)
            client.start(timeout=10.0)
            started.callback(client.close)
            started.callback(client.stop)
            agent.wait_ready()
            watch = RoleWatch(client, f"{ZK_ROOT}/instances/replica")
            if watch.became("slave", 0.0, 30.0) is None:
                raise RuntimeError("the replica was not published as a slave")
            rng = random.Random(args.seed)
            # When each change was published (or its 10 s given up), and
            # the seconds waited for room.
            published: list[float] = []
            paced = [0.0]

            def change(role: str, *command: str) -> float | None:
                # A change beyond the limit would wait for room in the
                # agent, not measure its path (unless --unpaced).
                if not args.unpaced:
                    room = wait_for_room(published, time.time())
                    paced[0] += room
                    time.sleep(room)
                time.sleep(1.0 + rng.uniform(0, 1.0))
                asked = time.time()
                redis_cli(replica.port, *command)
                took = watch.became(role, asked, 10.0)
                published.append(asked + (10.0 if took is None else took))
                return took

            for number in range(1, args.rounds + 1):
                promotions.append(change("master", "REPLICAOF", "NO", "ONE"))
                demotions.append(
                    change("slave", "REPLICAOF", LOOPBACK, str(master.port))
                )
                print(
                    f"round {number}: promotion {promotions[-1]}, "
                    f"demotion {demotions[-1]}",
                    file=sys.stderr,
                )
    except BaseException:
        print(f"logs kept in {workdir}", file=sys.stderr)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    rows = [
        ("machine", machine()),
        ("load average at the end", load_average()),
        ("setup", f"{args.rounds} rounds, interval 1 s, timeout 0.5 s (defaults)"),
        (
            f"paced: at most {LIMIT} changes a {WINDOW:g} s",
            "no (--unpaced: changes beyond wait, as designed)"
            if args.unpaced
            else f"yes, {paced[0]:.0f} s waited for room",
        ),
        ("bound (interval + timeout + ZooKeeper)", "2000 ms"),
        ("promotion to ZooKeeper p50/p99/max", ms_summary(promotions)),
        ("demotion to ZooKeeper p50/p99/max", ms_summary(demotions)),
    ]
    return table(rows, "roles")


def cost(args: argparse.Namespace) -> str:
    """Checks per CPU-second of each variant, in turns, as the ``cost`` table."""
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-topology-cost-"))
    results: dict[str, list[tuple[float, float, int]]] = {v: [] for v in VARIANTS}
    loads: list[str] = []
    try:
        with ExitStack() as started:
            servers = start_redis_servers(args.servers, started)
            pids = [s.pid for s in servers]
            instances = [
                Instance(f"r{i}", servers[i % len(servers)].port)
                for i in range(args.instances)
            ]
            for turn in range(args.turns):
                for variant, extra in VARIANTS.items():
                    config = extra + agent_config(instances)
                    results[variant].append(
                        _measure(workdir, config, pids, args, f"{variant}-{turn}")
                    )
                    loads.append(load_average())
                    print(f"{variant}: {results[variant][-1]}", file=sys.stderr)
    except BaseException:
        print(f"logs kept in {workdir}", file=sys.stderr)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    base = statistics.median(r[0] for r in results["PING"])
    rows = [
        ("machine", machine()),
        ("load average after each run", ", ".join(loads)),
        (
            "setup",
            f"{args.instances} instances on {args.servers} redis-servers, "
            f"{args.turns} turns of {args.duration:g} s windows",
        ),
    ]
    for variant, runs in results.items():
        rate = statistics.median(r[0] for r in runs)
        per_check = [1e6 / r[0] for r in runs]
        servers_per_check = statistics.median(r[1] for r in runs)
        rows.append(
            (
                f"{variant}: checks per CPU-s (median)",
                f"{rate:,.0f} ({', '.join(f'{r[0]:,.0f}' for r in runs)}); "
                f"{statistics.median(per_check):.1f} µs/check, "
                f"{1e6 / rate - 1e6 / base:+.1f} µs vs PING; "
                f"redis-servers {servers_per_check:.1f} µs/check; "
                f"failed checks {sum(r[2] for r in runs)}",
            )
        )
    return table(rows, "cost")


def _measure(
    workdir: Path, config: str, pids: list[int], args: argparse.Namespace, label: str
) -> tuple[float, float, int]:
    """Checks per agent CPU-second, servers' µs per check, failed checks."""
    agent = Agent(workdir, config, label)
    try:
        agent.wait_ready(120.0)
        time.sleep(args.warmup)
        before = agent.get("/debug/stats")
        cpu0, servers0 = agent.cpu_seconds(), process_cpu_seconds(pids)
        time.sleep(args.duration)
        after = agent.get("/debug/stats")
        cpu1, servers1 = agent.cpu_seconds(), process_cpu_seconds(pids)
    finally:
        agent.stop()
    checks = after["checks"] - before["checks"]
    return (
        checks / (cpu1 - cpu0),
        1e6 * (servers1 - servers0) / max(checks, 1),
        after["failures"] - before["failures"],
    )


HELLO_REPLY = (
    b"*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n"
    b"$5\r\nproto\r\n:2\r\n$2\r\nid\r\n:3\r\n$4\r\nmode\r\n$10\r\nstandalone\r\n"
    b"$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"
)
INFO_REPLY = b"$26\r\n# Replication\r\nrole:master\r\n"
PATH_VARIANTS: dict[str, tuple[dict[str, Any], bytes]] = {
    "PING": ({"role_signal": False}, b"+PONG\r\n"),
    "PING+HELLO": ({}, b"+PONG\r\n" + HELLO_REPLY),
    "PING+EXISTS+HELLO": ({"drain": True}, b"+PONG\r\n:0\r\n" + HELLO_REPLY),
}


def path(args: argparse.Namespace) -> str:
    """CPU per check of the probe and protocol, per variant, as the ``path`` table."""
    import gc

    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import MemoryReactorClock, StringTransport

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from sentinel.config import RedisInstance
    from sentinel.pacing import ConnectPacer
    from sentinel.probe import RedisProbe

    class Resolved:
        def resolve(self, host: str) -> Any:
            from twisted.internet.defer import succeed

            return succeed(host)

    def connect_paced(reactor: MemoryReactorClock, probe: RedisProbe) -> None:
        # The connect pacer starts attempts at a rate (sentinel.pacing):
        # time passes, and a check turned away is asked again, until this
        # probe's attempt has started.
        attempts = len(reactor.tcpClients)
        check = probe.check(True)
        for _ in range(10_000):
            if len(reactor.tcpClients) > attempts:
                return
            reactor.advance(0.01)
            if check.called:
                check = probe.check(True)
        raise RuntimeError("the pacer never let the probe connect")

    def run(options: dict[str, Any], reply: bytes) -> float:
        reactor = MemoryReactorClock()
        slots = ConnectPacer(reactor, args.instances, 1.0)
        probes, protocols = [], []
        for i in range(args.instances):
            instance = RedisInstance(
                f"r{i}",
                "127.0.0.1",
                7000,
                drain_key="d" if options.get("drain") else None,
            )
            probe = RedisProbe(
                instance, reactor, slots, 1.0, Resolved(),  # type: ignore[arg-type]
                role_signal=options.get("role_signal", True),
            )  # fmt: skip
            connect_paced(reactor, probe)
            factory = reactor.tcpClients[-1][2]
            protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 7000))
            protocol.makeConnection(StringTransport())
            protocol.dataReceived(reply)
            if probe.stage == "info":
                protocol.dataReceived(INFO_REPLY)
            probes.append(probe)
            protocols.append(protocol)
        pairs = list(zip(probes, protocols, strict=True))
        gc.collect()
        gc.freeze()
        spent = 0.0
        for _ in range(args.rounds):
            started = time.process_time()
            for probe, protocol in pairs:
                probe.check(False)
                protocol.dataReceived(reply)
            spent += time.process_time() - started
            for _, protocol in pairs:
                protocol.transport.clear()
        gc.unfreeze()
        for probe in probes:
            probe.close()
        return spent / (args.instances * args.rounds)

    samples: dict[str, list[float]] = {v: [] for v in PATH_VARIANTS}
    for _ in range(args.repeats):
        for variant, (options, reply) in PATH_VARIANTS.items():
            samples[variant].append(1e6 * run(options, reply))
    base = statistics.median(samples["PING"])
    rows = [
        ("machine", machine()),
        ("load average at the end", load_average()),
        (
            "setup",
            f"{args.instances} probes, {args.rounds} rounds, {args.repeats} repeats "
            "in turns; a check is probe.check and one read of its replies",
        ),
    ]
    for variant, values in samples.items():
        median = statistics.median(values)
        rows.append(
            (
                f"{variant}: µs per check best / median",
                f"{min(values):.2f} / {median:.2f} ({median - base:+.2f} vs PING)",
            )
        )
    return table(rows, "check path")


def main() -> int:
    """Run one measurement, print its table, stop everything started."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    timing = commands.add_parser("roles", help="promotion and demotion times")
    timing.add_argument("--rounds", type=int, default=10)
    timing.add_argument("--seed", type=int, default=None)
    timing.add_argument(
        "--unpaced", action="store_true", help="rounds back to back, beyond the limit"
    )
    spend = commands.add_parser("cost", help="CPU per check of each variant")
    spend.add_argument("--instances", type=int, default=3000)
    spend.add_argument("--servers", type=int, default=4)
    spend.add_argument("--warmup", type=float, default=10.0)
    spend.add_argument("--duration", type=float, default=30.0)
    spend.add_argument("--turns", type=int, default=2)
    inner = commands.add_parser("path", help="CPU per check of the check path")
    inner.add_argument("--instances", type=int, default=3000)
    inner.add_argument("--rounds", type=int, default=50)
    inner.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    stop_on_sigterm()
    commands_run = {"roles": roles, "cost": cost, "path": path}
    print(commands_run[args.command](args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

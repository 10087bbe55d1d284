"""
Planned failovers and client pauses, as a reader of ZooKeeper sees them.

A master and two replicas (real redis-servers), a real ZooKeeper, the agent
(``twistd -n sentinel``, discovery in ``--form`` nerve or serverset, every
instance in one service) and, for ``sentinel``, a real
``redis-server --sentinel`` watching the master. Three observers poll side
by side: the truth (``ROLE`` asked of each server every 10 ms), the reader
(each ``{root}/instances/*`` node and each discovery member every
``--poll`` s) and, with Sentinel, ``SENTINEL get-master-addr-by-name``.

Kinds (``--kinds``), each on servers of its own, ``--runs`` times:

- ``failover-to``: ``FAILOVER TO host port`` on the master (Redis 6.2+);
- ``swap``: ``REPLICAOF NO ONE`` on a replica, then ``REPLICAOF`` it on
  the old master and the other replica, as an operator types them;
- ``sentinel``: ``SENTINEL FAILOVER mymaster``;
- ``pause-write`` / ``pause-all``: ``CLIENT PAUSE ms WRITE`` / ``ALL`` on
  the master, ``--pauses`` seconds each in turn;
- ``sleep``: ``DEBUG SLEEP`` on the master, ``--pauses`` seconds in turn;
- ``restart``: ``SHUTDOWN SAVE`` of the master, started again at once,
  ``LOADING`` its keys for about 4 s.

For each it prints: how long after a server's role really changed the
reader saw it (p50/max over the runs), the longest time with two master
nodes up or with none (in the truth, in the instance nodes and, with nerve,
among the members labelled ``role: master``), how long the master's
member was out of discovery, and what status, ``ready`` and errors the
master's node showed meanwhile. Run from the repository root::

    .venv/bin/python benchmarks/failovers.py [--form nerve] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    LOOPBACK,
    Agent,
    ChildProcess,
    Instance,
    RedisServer,
    ZooKeeperServer,
    agent_config,
    free_port,
    load_average,
    machine,
    percentile,
    stop_on_sigterm,
    table,
)
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError

NAMES = ("a", "b", "c")
SERVICE = "cache"
DISCOVERY = "/disc-failovers"
KINDS = (
    "failover-to", "swap", "sentinel", "pause-write", "pause-all", "sleep",
    "restart",
)  # fmt: skip
# ``restart``: keys the master loads, and µs each (Redis's key-load-delay).
KEYS, KEY_LOAD_DELAY = 100_000, 40
# Seconds each run is watched after its command (a pause: after its end).
SETTLE = 6.0
# Sentinel turns the old master into a replica 8 s or more after it saw
# it still a master (SENTINEL_PUBLISH_PERIOD * 4), on its next INFO.
SENTINEL_SETTLE = 25.0

# (time, {name: role or None}) from the truth; (time, {name: node}, members).
Sample = tuple[float, dict[str, Any]]


def command(port: int, *args: str, timeout: float = 10.0) -> str:
    """One command, as an operator sends it with redis-cli."""
    return subprocess.run(
        ["redis-cli", "-h", LOOPBACK, "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    ).stdout.strip()


class Poller(threading.Thread):
    """Calls `look` every `every` s until stopped, keeping (time, result)."""

    def __init__(self, look: Callable[[], dict[str, Any]], every: float) -> None:
        super().__init__(daemon=True)
        self.look, self.every = look, every
        self.samples: list[Sample] = []
        self.skipped = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            try:
                result = self.look()
            except KazooException:
                # The reader's own client reconnecting (ConnectionLoss at
                # a scene's end): that sample is skipped, not a traceback.
                self.skipped += 1
            else:
                self.samples.append((time.time(), result))
            self.stopped.wait(self.every)

    def stop(self) -> None:
        """Stop, and wait for a look in progress (before its client stops)."""
        self.stopped.set()
        self.join(10.0)

    def between(self, start: float, end: float) -> list[Sample]:
        """The samples taken from `start` to `end`."""
        return [s for s in list(self.samples) if start <= s[0] <= end]


class Truth:
    """Each server's role from ``ROLE`` on a connection of its own."""

    def __init__(self, ports: dict[str, int]) -> None:
        self.ports = ports
        self.sockets: dict[str, socket.socket | None] = dict.fromkeys(ports)

    def look(self) -> dict[str, Any]:
        """{name: "master" | "slave" | None (no answer within 50 ms)}."""
        return {name: self._role(name) for name in self.ports}

    def _role(self, name: str) -> str | None:
        try:
            sock = self.sockets[name]
            if sock is None:
                sock = socket.create_connection((LOOPBACK, self.ports[name]), 0.05)
                self.sockets[name] = sock
            sock.sendall(b"ROLE\r\n")
            reply = sock.recv(4096)
        except OSError:
            # A paused server answers late: read on a new connection next time.
            self.close(name)
            return None
        for role in ("master", "slave"):
            if f"${len(role)}\r\n{role}".encode() in reply:
                return role
        return None

    def close(self, name: str) -> None:
        """Drop one server's connection."""
        sock, self.sockets[name] = self.sockets[name], None
        if sock is not None:
            sock.close()


class Reader:
    """What a reader of ZooKeeper sees: instance nodes and members."""

    def __init__(self, client: KazooClient, root: str) -> None:
        self.client, self.root = client, root

    def look(self) -> dict[str, Any]:
        """{"nodes": {name: document}, "members": [(port, role label)]}."""
        nodes = {}
        for name in NAMES:
            try:
                nodes[name] = json.loads(
                    self.client.get(f"{self.root}/instances/{name}")[0]
                )
            except NoNodeError:
                pass
        members = []
        parent = f"{DISCOVERY}/{SERVICE}"
        try:
            children = self.client.get_children(parent)
        except NoNodeError:
            children = []
        for child in children:
            try:
                document = json.loads(self.client.get(f"{parent}/{child}")[0])
            except NoNodeError:
                continue
            endpoint = document.get("serviceEndpoint", document)
            role = document.get("labels", {}).get("role")
            members.append((endpoint["port"], role))
        return {"nodes": nodes, "members": sorted(members)}


class Sentinel:
    """``redis-server --sentinel`` watching `master` as ``mymaster``."""

    def __init__(self, workdir: Path, master: RedisServer) -> None:
        self.port = free_port()
        conf = workdir / "sentinel.conf"
        conf.write_text(
            f"port {self.port}\nbind {LOOPBACK}\ndaemonize no\ndir {workdir}\n"
            f"sentinel monitor mymaster {LOOPBACK} {master.port} 1\n"
            "sentinel down-after-milliseconds mymaster 5000\n"
            "sentinel failover-timeout mymaster 10000\n"
        )
        self.child = ChildProcess(
            ["redis-server", str(conf), "--sentinel"], log=workdir / "sentinel.log"
        )

    def look(self) -> dict[str, Any]:
        """{"master": port Sentinel names, or None}."""
        try:
            out = command(
                self.port, "SENTINEL", "get-master-addr-by-name", "mymaster", timeout=1
            ).split()
            return {"master": int(out[1])}
        except (subprocess.SubprocessError, IndexError, ValueError):
            return {"master": None}

    def replicas_known(self) -> int:
        """How many replicas Sentinel lists."""
        out = command(self.port, "SENTINEL", "replicas", "mymaster")
        return out.splitlines().count("name")


def spans(samples: list[Sample], bad: Callable[[dict[str, Any]], bool]) -> float:
    """The longest stretch, in s, over which `bad` held of consecutive samples."""
    longest, began = 0.0, None
    for at, seen in samples:
        if bad(seen):
            began = at if began is None else began
            longest = max(longest, at - began)
        else:
            began = None
    return longest


def up_masters(seen: dict[str, Any]) -> int:
    """Instance nodes up with role master."""
    return sum(
        1
        for n in seen["nodes"].values()
        if n["status"] == "up" and n["role"] == "master"
    )


def member_masters(seen: dict[str, Any]) -> int:
    """Discovery members labelled role master."""
    return sum(1 for _, role in seen["members"] if role == "master")


class Setup:
    """The servers, the agent and the observers of one kind's runs."""

    def __init__(
        self, args: argparse.Namespace, kind: str, zookeeper: ZooKeeperServer,
        workdir: Path, started: ExitStack,
    ) -> None:  # fmt: skip
        self.servers = {}
        for name in NAMES:
            # DEBUG is refused unless enabled (Redis 7).
            extra = ["--repl-diskless-sync-delay", "0", "--enable-debug-command", "yes"]
            if kind == "restart":
                # Answering while loading every 1 KB read, as it does a large
                # dataset's every 2 MB.
                extra += [
                    "--key-load-delay", str(KEY_LOAD_DELAY),
                    "--loading-process-events-interval-bytes", "1024",
                ]  # fmt: skip
            if name != "a":
                extra += ["--replicaof", LOOPBACK, str(self.servers["a"].port)]
            server = RedisServer(extra_args=extra)
            started.callback(server.stop)
            self.servers[name] = server.start()
        self.ports = {name: s.port for name, s in self.servers.items()}
        self.names = {port: name for name, port in self.ports.items()}
        root = f"/failovers-{kind}"
        config = agent_config(
            [Instance(name, port) for name, port in self.ports.items()],
            interval=args.interval,
            timeout=args.timeout,
            zookeeper=zookeeper.hosts,
            zk_root=root,
            zk_settings={"discovery": args.form, "discovery_root": DISCOVERY},
            service=SERVICE,
        )
        agent = Agent(workdir, config, label=f"agent-{kind}")
        started.callback(agent.stop)
        self.agent = agent
        client = KazooClient(hosts=zookeeper.hosts, timeout=10.0)
        client.start(timeout=10.0)
        started.callback(client.stop)
        self.sentinel = None
        if kind == "sentinel":
            self.sentinel = Sentinel(workdir, self.servers["a"])
            started.callback(self.sentinel.child.stop)
        if kind == "restart":
            command(self.ports["a"], "DEBUG", "POPULATE", str(KEYS))
        agent.wait_ready()
        self.truth = Poller(Truth(self.ports).look, 0.01)
        self.reader = Poller(Reader(client, root).look, args.poll)
        self.pollers = [self.truth, self.reader]
        if self.sentinel is not None:
            self.pollers.append(Poller(self.sentinel.look, 0.02))
        for poller in self.pollers:
            poller.start()
            started.callback(poller.stop)
        self.wait_settled(30.0)
        if self.sentinel is not None:
            deadline = time.monotonic() + 30
            while self.sentinel.replicas_known() < 2 and time.monotonic() < deadline:
                time.sleep(0.5)

    def master(self) -> str:
        """The one server that says it is the master now (waits for one)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            roles = self.truth.samples[-1][1]
            masters = [name for name, role in roles.items() if role == "master"]
            if len(masters) == 1 and None not in roles.values():
                return masters[0]
            time.sleep(0.05)
        raise RuntimeError(f"not one master for 30 s: {roles}")

    def wait_settled(self, limit: float) -> None:
        """Until the reader sees every node up, one master, each member listed."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.reader.samples and self.truth.samples:
                seen = self.reader.samples[-1][1]
                roles = self.truth.samples[-1][1]
                nodes = seen["nodes"]
                if (
                    len(nodes) == 3
                    and all(n["status"] == "up" and n["ready"] for n in nodes.values())
                    and all(nodes[k]["role"] == r for k, r in roles.items())
                    and len(seen["members"]) == 3
                ):
                    return
            time.sleep(0.1)
        raise RuntimeError(f"not settled in {limit:g} s: {self.reader.samples[-1]}")


def act(kind: str, setup: Setup, pause: float) -> tuple[str, str]:
    """Run one planned event of `kind`; (old master, new master) by name."""
    old = setup.master()
    port = setup.ports[old]
    others = [n for n in NAMES if n != old]
    new = others[0]
    if kind == "failover-to":
        command(port, "FAILOVER", "TO", LOOPBACK, str(setup.ports[new]))
    elif kind == "swap":
        command(setup.ports[new], "REPLICAOF", "NO", "ONE")
        for name in (old, others[1]):
            command(setup.ports[name], "REPLICAOF", LOOPBACK, str(setup.ports[new]))
    elif kind == "sentinel":
        assert setup.sentinel is not None
        command(setup.sentinel.port, "SENTINEL", "FAILOVER", "mymaster")
        new = "?"
    elif kind in ("pause-write", "pause-all"):
        mode = kind.split("-")[1].upper()
        command(port, "CLIENT", "PAUSE", str(int(pause * 1000)), mode)
        new = old
    elif kind == "restart":
        # Saved, then loaded again at KEY_LOAD_DELAY a key: LOADING a while.
        server = setup.servers[old]
        command(port, "SHUTDOWN", "SAVE")
        server.child.process.wait(timeout=30)
        server.start()
        new = old
    else:
        # DEBUG SLEEP blocks redis-cli too: don't wait for it here.
        subprocess.Popen(
            ["redis-cli", "-h", LOOPBACK, "-p", str(port), "DEBUG", "SLEEP",
             str(pause)], stdout=subprocess.DEVNULL,
        )  # fmt: skip
        new = old
    return old, new


def tidy(setup: Setup) -> None:
    """
    Every replica of the new master directly (FAILOVER leaves a chain);
    with Sentinel, wait until it has turned the old master into a replica.
    """
    if setup.sentinel is not None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if list(setup.truth.samples[-1][1].values()).count("master") == 1:
                return
            time.sleep(0.1)
        raise RuntimeError("Sentinel left two masters for 60 s")
    master = setup.master()
    for name in NAMES:
        if name != master:
            roles = command(setup.ports[name], "ROLE").split()
            if roles[0] != "slave" or roles[2] != str(setup.ports[master]):
                command(
                    setup.ports[name], "REPLICAOF", LOOPBACK, str(setup.ports[master])
                )


def measure(
    kind: str, setup: Setup, asked: float, end: float, old: str
) -> dict[str, Any]:
    """The figures of one run, from the samples of its window."""
    truth = setup.truth.between(asked - 0.5, end)
    seen = setup.reader.between(asked - 0.5, end)
    # The roles before, from a sample where every server answered.
    before = next(roles for _, roles in truth if None not in roles.values())
    lags = []
    for name in NAMES:
        changed = next(
            (at for at, roles in truth if roles[name] not in (None, before[name])),
            None,
        )
        if changed is None:
            continue
        role = next(r[name] for at, r in truth if at >= changed)
        shown = next(
            (at for at, s in seen if at >= changed and
             s["nodes"].get(name, {}).get("role") == role),
            None,
        )  # fmt: skip
        lags.append(None if shown is None else shown - changed)
    # A server that does not answer (paused) says no role: not counted.
    truth_view = [(at, {"n": sum(r == "master" for r in roles.values())})
                  for at, roles in truth if None not in roles.values()]  # fmt: skip
    old_port = setup.ports[old]
    result: dict[str, Any] = {
        "lags": lags,
        "truth two": spans(truth_view, lambda s: s["n"] >= 2),
        "truth none": spans(truth_view, lambda s: s["n"] == 0),
        "zk two": spans(seen, lambda s: up_masters(s) >= 2),
        "zk none": spans(seen, lambda s: up_masters(s) == 0),
        "old member out": spans(
            seen, lambda s: all(p != old_port for p, _ in s["members"])
        ),
        "old node": sorted({
            (s["nodes"][old]["status"], s["nodes"][old]["ready"],
             s["nodes"][old]["role"], s["nodes"][old]["error"])
            for _, s in seen if old in s["nodes"]
        }, key=str),
    }  # fmt: skip
    trace, last = [], None
    for at, s in seen:
        node = s["nodes"].get(old)
        state = node and (node["status"], node["ready"], node["role"], node["error"])
        if state != last:
            trace.append((round(at - asked, 3), state))
            last = state
    result["trace"] = trace
    if any(s["members"] and s["members"][0][1] is not None for _, s in seen):
        result["members two"] = spans(seen, lambda s: member_masters(s) >= 2)
        result["members none"] = spans(seen, lambda s: member_masters(s) == 0)
    if setup.sentinel is not None:
        polled = setup.pollers[2].between(asked - 0.5, end)
        moved = next(
            (at for at, s in polled if s["master"] not in (None, old_port)), None
        )
        promoted = next(
            (at for at, roles in truth
             if any(r == "master" and n != old for n, r in roles.items())),
            None,
        )  # fmt: skip
        result["sentinel after truth"] = (
            None if moved is None or promoted is None else moved - promoted
        )
    return result


def run_kind(
    args: argparse.Namespace, kind: str, zookeeper: ZooKeeperServer, workdir: Path
) -> list[tuple[str, dict[str, Any]]]:
    """Every run of one kind, on servers of its own."""
    results = []
    pauses = args.pauses if kind in ("pause-write", "pause-all", "sleep") else [0.0]
    with ExitStack() as started:
        setup = Setup(args, kind, zookeeper, workdir, started)
        for pause in pauses:
            for number in range(args.runs):
                time.sleep(1.0 + (number * 0.37) % 1.0)
                asked = time.time()
                old, _ = act(kind, setup, pause)
                time.sleep(pause + (SENTINEL_SETTLE if kind == "sentinel" else SETTLE))
                result = measure(kind, setup, asked, time.time(), old)
                label = f"{kind} {pause:g} s" if pause else kind
                print(f"{label} run {number + 1}: {result}", file=sys.stderr)
                results.append((label, result))
                tidy(setup)
                setup.wait_settled(30.0)
        skipped = setup.reader.skipped
        print(f"{kind}: reader samples skipped (no answer) {skipped}", file=sys.stderr)
    return results


def ms(values: Sequence[float | None]) -> str:
    """p50 / max in ms, and how many were not seen."""
    seen = [v for v in values if v is not None]
    missed = len(values) - len(seen)
    if not seen:
        return f"none seen ({missed})" if missed else "-"
    text = f"{1000 * percentile(seen, 50):.0f} / {1000 * max(seen):.0f}"
    return text + (f" ({missed} not seen)" if missed else "")


def summary(results: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, str]]:
    """One block of rows per kind (and pause length)."""
    rows = []
    labels = list(dict.fromkeys(label for label, _ in results))
    for label in labels:
        runs = [r for lab, r in results if lab == label]
        rows.append((f"[{label}] runs", str(len(runs))))
        lags = [lag for r in runs for lag in r["lags"]]
        if lags:
            rows.append(("  role change -> node, p50 / max ms", ms(lags)))
        for key in ("truth two", "truth none", "zk two", "zk none",
                    "members two", "members none", "old member out"):  # fmt: skip
            values = [r[key] for r in runs if key in r]
            if values:
                rows.append((f"  {key}, max ms", f"{1000 * max(values):.0f}"))
        if "sentinel after truth" in runs[0]:
            rows.append(("  Sentinel names it after the truth, p50 / max ms",
                         ms([r["sentinel after truth"] for r in runs])))  # fmt: skip
        down = sum(any(st and st[0] == "down" for _, st in r["trace"]) for r in runs)
        unready = sum(any(st and not st[1] for _, st in r["trace"]) for r in runs)
        rows.append(("  old master published down / not ready, runs",
                     f"{down} / {unready} of {len(runs)}"))  # fmt: skip
        states = sorted({str(s) for r in runs for s in r["old node"]})
        rows.append(("  old master's node showed", "; ".join(states)))
    return rows


def main() -> None:
    """Parse the options, run every kind, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--form", choices=("nerve", "serverset"), default="nerve")
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--timeout", type=float, default=0.5)
    parser.add_argument("--poll", type=float, default=0.025)
    parser.add_argument(
        "--pauses", type=lambda s: [float(x) for x in s.split(",")], default=[2.0, 5.0]
    )
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    stop_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-failovers-"))
    results = []
    try:
        with ExitStack() as started:
            zookeeper = ZooKeeperServer()
            started.callback(zookeeper.close)
            zookeeper.start()
            for kind in kinds:
                results += run_kind(args, kind, zookeeper, workdir)
    except BaseException:
        print(f"logs kept in {workdir}", file=sys.stderr)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    rows = [
        ("machine", machine()),
        ("load average at the end", load_average()),
        ("setup", f"interval {args.interval:g} s, timeout {args.timeout:g} s, "
                  f"{args.form}, reader every {1000 * args.poll:.0f} ms"),
        *summary(results),
    ]  # fmt: skip
    print(table(rows, "failovers"))


if __name__ == "__main__":
    main()

"""
What the benchmarks share: the agent as a ``twistd -n sentinel`` child
process with a generated TOML config, its HTTP JSON, its CPU time and RSS
(psutil), percentiles, a server that accepts and never answers, and the
machine's description for BENCHMARKS.rst.

The real servers and the process handling come from ``tests/servers.py``;
everything runs on 127.0.0.1 and everything started is stopped by PID.
Scripts, not tests (``tests/test_benchscripts.py`` imports a few, for the
arithmetic of their figures). Run them from the repository root with the
venv's Python, e.g. ``.venv/bin/python benchmarks/capacity.py``;
``benchmarks/soak.py`` also needs ``pip install matplotlib``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import selectors
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
from kazoo.client import KazooClient

REPOSITORY = Path(__file__).resolve().parent.parent
# The process helpers live with the tests.
sys.path.insert(0, str(REPOSITORY))

from tests.servers import (  # noqa: E402
    LOOPBACK,
    ChildProcess,
    RedisServer,
    ZooKeeperServer,
    free_port,
)

__all__ = [
    "LOOPBACK",
    "Agent",
    "ChildProcess",
    "Instance",
    "RedisServer",
    "ZooKeeperServer",
    "free_port",
]

AGENT_START_TIMEOUT = 60.0

# Descriptors an agent needs beyond one per instance, with room to spare
# (the agent's own reserve is sentinel.process.FD_RESERVE).
OPEN_FILES_MARGIN = 256


@dataclass(frozen=True)
class Instance:
    """One ``[[redis]]`` table of the generated config."""

    name: str
    port: int


class Stopped(Exception):
    """SIGTERM arrived: unwind, so that every ``finally`` stops its children."""


def stop_on_sigterm() -> None:
    """Turn SIGTERM into `Stopped` (SIGINT already is KeyboardInterrupt)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Stopped(signum)

    signal.signal(signal.SIGTERM, handler)


def agent_config(
    instances: Sequence[Instance],
    *,
    interval: float = 1.0,
    timeout: float = 0.5,
    rise: int = 2,
    fall: int = 3,
    zookeeper: str | None = None,
    zk_root: str = "/sentinel",
    agent_id: str = "bench",
    zk_settings: Mapping[str, float | int | str] | None = None,
    service: str | None = None,
) -> str:
    """
    The TOML text of an agent config watching ``instances``; `zk_settings`
    adds keys to its ``[zookeeper]`` table (``{"replicas": 2}``), and
    `service` names every instance's discovery service (by default each
    its own).
    """
    lines = [
        f'agent_id = "{agent_id}"',
        f"interval = {interval!r}",
        f"timeout = {timeout!r}",
        f"rise = {rise}",
        f"fall = {fall}",
        "",
    ]
    if zookeeper is not None:
        lines += ["[zookeeper]", f'hosts = "{zookeeper}"', f'root = "{zk_root}"']
        lines += [f"{key} = {value!r}" for key, value in (zk_settings or {}).items()]
        lines.append("")
    for instance in instances:
        lines += [
            "[[redis]]",
            f'name = "{instance.name}"',
            f'host = "{LOOPBACK}"',
            f"port = {instance.port}",
            *([] if service is None else [f'service = "{service}"']),
            "",
        ]
    return "\n".join(lines)


class Agent:
    """
    ``twistd -n sentinel`` with a generated config in ``workdir``, its HTTP
    app on a free loopback port, its log in ``workdir/<label>.log``.
    """

    def __init__(
        self,
        workdir: Path,
        config: str,
        label: str = "agent",
        pythonpath: Path | None = None,
        *,
        open_files: int | None = None,
        wrapper: Sequence[str] = (),
        python: Path | None = None,
        twistd_options: Sequence[str] = (),
    ) -> None:
        """
        `pythonpath`: a tree of the code to run instead of this checkout's.
        `python`: the interpreter of a virtualenv to run it with (its
        ``twistd``) instead of this script's (another Python, or PyPy).
        `open_files`: the child's open-file limits, soft and hard, set
        through ``prlimit``, so that thousands of instances fit without
        raising the machine's or this script's. `wrapper`: a command that
        execs the rest of the command line (the PID stays the agent's).
        `twistd_options`: twistd's own, before ``sentinel`` (``--logger``).
        """
        self.workdir = workdir
        self.http_port = free_port()
        self.config_path = workdir / f"{label}.toml"
        self.config_path.write_text(config)
        self.log = workdir / f"{label}.log"
        twistd = Path(python or sys.executable).with_name("twistd")
        # prlimit execs the agent: the PID is the agent's.
        limit = [] if open_files is None else [
            "prlimit", f"--nofile={open_files}:{open_files}", "--",
        ]  # fmt: skip
        self.child = ChildProcess(
            [
                *wrapper,
                *limit,
                str(twistd), "-n", "--pidfile=", *twistd_options, "sentinel",
                "--config", str(self.config_path),
                "--http", f"tcp:{self.http_port}:interface={LOOPBACK}",
            ],
            log=self.log,
            cwd=workdir,
            own_session=True,
            env=None if pythonpath is None else {
                **os.environ, "PYTHONPATH": str(pythonpath)
            },
        )  # fmt: skip
        self.process = psutil.Process(self.child.pid)

    @property
    def pid(self) -> int:
        """The agent's process id."""
        return self.child.pid

    def get(self, path: str, timeout: float = 10.0) -> Any:
        """GET ``path`` from the agent's HTTP app and decode its JSON."""
        url = f"http://{LOOPBACK}:{self.http_port}{path}"
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read())

    def healthz(self, timeout: float = 10.0) -> tuple[int, Any]:
        """/healthz's status code and JSON, 503 included."""
        url = f"http://{LOOPBACK}:{self.http_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def wait_ready(self, timeout: float = AGENT_START_TIMEOUT) -> dict[str, Any]:
        """Wait until /debug/stats answers (at most ``timeout`` s); return it."""
        deadline = time.monotonic() + timeout
        while True:
            if not self.child.running:
                raise RuntimeError(
                    f"the agent exited with {self.child.process.wait()}"
                    f"{self.child.log_tail()}"
                )
            try:
                stats: dict[str, Any] = self.get("/debug/stats", timeout=2.0)
                return stats
            except (OSError, urllib.error.URLError, ValueError):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the agent did not answer in {timeout:g} s"
                        f"{self.child.log_tail()}"
                    ) from None
                time.sleep(0.1)

    def wait_ticks(self, ticks: int, timeout: float) -> dict[str, Any]:
        """Wait until the agent has ticked ``ticks`` times; return /debug/stats."""
        deadline = time.monotonic() + timeout
        while True:
            stats: dict[str, Any] = self.get("/debug/stats")
            if stats["ticks"] >= ticks or time.monotonic() > deadline:
                return stats
            time.sleep(0.1)

    def instances(self) -> dict[str, dict[str, Any]]:
        """/instances, keyed by name."""
        return {i["name"]: i for i in self.get("/instances", timeout=30.0)["instances"]}

    def cpu_seconds(self) -> float:
        """User + system CPU time of the agent process so far."""
        user, system = self.cpu_times()
        return user + system

    def cpu_times(self) -> tuple[float, float]:
        """User and system CPU time of the agent process so far."""
        times = self.process.cpu_times()
        return float(times.user), float(times.system)

    def rss_bytes(self) -> int:
        """The agent's resident set size now."""
        return int(self.process.memory_info().rss)

    def stop(self) -> None:
        """SIGTERM, bounded wait, SIGKILL; safe to repeat."""
        self.child.stop()


def crowd(started: ExitStack, pid: int, loops: int) -> None:
    """
    `loops` busy loops and the process `pid` (each of its threads) on one
    CPU, until `started` ends: the process then gets a 1/(loops + 1)
    share of it, as on a machine loaded by others.
    """
    cpu = sorted(os.sched_getaffinity(0))[0]
    for _ in range(loops):
        busy = psutil.Popen([sys.executable, "-c", "while True: pass"])
        started.callback(busy.wait)
        started.callback(busy.kill)
        busy.cpu_affinity([cpu])
    agent = psutil.Process(pid)
    agent.cpu_affinity([cpu])
    for thread in agent.threads():
        os.sched_setaffinity(thread.id, [cpu])


def open_files_for(instances: int) -> int | None:
    """
    `Agent`'s ``open_files`` for an agent configured with `instances`: None
    when they fit this process's hard limit (the agent raises its soft
    limit to it), otherwise one per instance plus a margin.
    """
    needed = instances + OPEN_FILES_MARGIN
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return None if hard == resource.RLIM_INFINITY or needed <= hard else needed


def process_cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time of these processes (not their children)."""
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def percentile(samples: Sequence[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0-100); NaN without samples."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def ms_summary(values: Sequence[float | None]) -> str:
    """p50 / p99 / max in ms of the values seen, and how many were missed (None)."""
    seen = [v for v in values if v is not None]
    missed = len(values) - len(seen)
    if not seen:
        return f"all {missed} missed"
    text = " / ".join(
        f"{1000 * v:.0f}"
        for v in (percentile(seen, 50), percentile(seen, 99), max(seen))
    )
    return text + " ms" + (f" ({missed} missed)" if missed else "")


def start_redis_servers(
    count: int, started: ExitStack, extra_args: Sequence[str] = ()
) -> list[RedisServer]:
    """Start ``count`` redis-servers; ``started`` stops each one by PID."""
    servers = []
    for _ in range(count):
        server = RedisServer(extra_args=extra_args)
        started.callback(server.stop)
        servers.append(server.start())
    return servers


def start_zookeeper(
    started: ExitStack, zookeeper: ZooKeeperServer | None = None
) -> tuple[ZooKeeperServer, KazooClient]:
    """
    A ZooKeeper of the script's own (`zookeeper`, if given, not started
    yet) and a kazoo client reading it; ``started`` stops the client, then
    the server by PID.
    """
    zookeeper = zookeeper or ZooKeeperServer()
    started.callback(zookeeper.close)
    zookeeper.start()
    client = KazooClient(hosts=zookeeper.hosts, timeout=10.0)
    client.start(timeout=10.0)
    started.callback(client.close)
    started.callback(client.stop)
    return zookeeper, client


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, poll: float = 0.05
) -> float:
    """Poll `condition` until true; the seconds it took. Fails after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{what}: not within {timeout:g} s")
        time.sleep(poll)
    return time.monotonic() - started


def load_average() -> str:
    """The machine's 1-minute load average: other work shares the cores."""
    return f"{os.getloadavg()[0]:.2f}"


def libfaketime(threaded: bool = False) -> str:
    """
    Where libfaketime's preload library is, for a process whose clock a
    benchmark sets wrong; a one-line exit when it is not installed.

    Debian installs it under the architecture's library directory
    (``MULTIARCH``, as Python itself was built for); ``threaded`` asks for
    the build that a process with threads (a JVM) needs.
    """
    name = "libfaketimeMT.so.1" if threaded else "libfaketime.so.1"
    multiarch = sysconfig.get_config_var("MULTIARCH") or ""
    for directory in (Path("/usr/lib", multiarch), Path("/usr/lib")):
        if (directory / "faketime" / name).is_file():
            return str(directory / "faketime" / name)
    raise SystemExit(f"{name} not found: install libfaketime (Debian's package)")


def table(rows: Sequence[tuple[str, str]], title: str) -> str:
    """Two columns, aligned: what was measured and its value."""
    width = max(len(name) for name, _ in rows)
    lines = [title, "=" * len(title)]
    lines += [f"{name.ljust(width)}  {value}" for name, value in rows]
    return "\n".join(lines)


def machine() -> str:
    """Cores, CPU model, Python, Twisted and txredisapi versions, git commit."""
    from importlib.metadata import version

    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    redis = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, timeout=10
    ).stdout.split()
    redis_version = next((w[2:] for w in redis if w.startswith("v=")), "?")
    return (
        f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}, "
        f"Twisted {version('twisted')}, txredisapi {version('txredisapi')}, "
        f"Redis {redis_version}, commit {commit_of(REPOSITORY)}"
    )


def add_checkout_option(parser: argparse.ArgumentParser) -> None:
    """``--checkout LABEL=PATH``, repeatable: whose agent a script runs."""
    parser.add_argument(
        "--checkout",
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help="a checkout whose agent to run (repeatable; default: this one)",
    )


def checkouts_of(
    parser: argparse.ArgumentParser, specs: Sequence[str]
) -> list[tuple[str, Path]]:
    """The (label, path) of each ``--checkout``; this one when none is given."""
    this = Path(__file__).resolve().parent.parent
    checkouts = []
    for spec in specs or [f"this={this}"]:
        label, sep, path = spec.partition("=")
        if not sep or not Path(path, "sentinel").is_dir():
            parser.error(f"--checkout: not LABEL=PATH of a checkout: {spec!r}")
        checkouts.append((label, Path(path).resolve()))
    return checkouts


def add_agent_checkout_option(parser: argparse.ArgumentParser) -> None:
    """``--agent ID=PATH``, repeatable: one agent of a checkout of its own."""
    parser.add_argument(
        "--agent",
        action="append",
        default=[],
        metavar="ID=PATH",
        help="run agent ID from the checkout PATH whatever --checkout says"
        " (repeatable: old and new versions in one group)",
    )


def agent_checkout(args: argparse.Namespace, agent_id: str, checkout: Path) -> Path:
    """The checkout agent `agent_id` runs: its ``--agent``'s, or `checkout`."""
    for spec in args.agent:
        name, sep, path = spec.partition("=")
        if not sep or not Path(path, "sentinel").is_dir():
            raise SystemExit(f"--agent: not ID=PATH of a checkout: {spec!r}")
        if name == agent_id:
            return Path(path).resolve()
    return checkout


def check_choices(
    parser: argparse.ArgumentParser, option: str, value: str, known: Sequence[str]
) -> None:
    """Fail with a usage error if comma-separated `value` names any not `known`."""
    unknown = set(value.split(",")) - set(known)
    if unknown:
        parser.error(f"{option}: unknown {sorted(unknown)}")


def rows_in_turns(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace, str, Path, int], list[tuple[str, str]]],
) -> list[tuple[str, str]]:
    """
    The version of each ``--checkout``, then `run`'s rows for each of
    ``--runs`` runs of each checkout, in turns (the same scene each time,
    so that the machine's load falls on each alike); SIGTERM unwinds it
    (`stop_on_sigterm`), each run's ``finally`` stopping its children.
    """
    checkouts = checkouts_of(parser, args.checkout)
    stop_on_sigterm()
    rows = [(f"version {label}", commit_of(path)) for label, path in checkouts]
    for number in range(args.runs):
        for label, path in checkouts:
            rows += run(args, label, path, number)
    return rows


def commit_of(checkout: Path) -> str:
    """The short commit of a checkout, and whether its sentinel/ has changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=checkout,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "sentinel"],
            cwd=checkout,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + (" + uncommitted changes in sentinel/" if dirty else "")


def serve_never_answering(ports: Sequence[int], lifetime: float) -> None:
    """
    Accept on every port and never answer: read and drop what arrives,
    close when the peer does. Ends after ``lifetime`` seconds at most.
    """
    selector = selectors.DefaultSelector()
    for port in ports:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, port))
        listener.listen(1024)
        listener.setblocking(False)
        selector.register(listener, selectors.EVENT_READ, "listen")
    deadline = time.monotonic() + lifetime
    while (remaining := deadline - time.monotonic()) > 0:
        for key, _ in selector.select(min(remaining, 1.0)):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if key.data == "listen":
                try:
                    conn, _ = sock.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                selector.register(conn, selectors.EVENT_READ, "conn")
                continue
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                selector.unregister(sock)
                sock.close()


def start_never_answering(
    ports: Sequence[int], lifetime: float, log: Path
) -> ChildProcess:
    """
    `serve_never_answering` in a child process of its own (so the agent's
    CPU and the benchmark's are not shared with it); returns once every port
    accepts connections.
    """
    child = ChildProcess(
        [
            sys.executable, __file__, "never-answering",
            "--lifetime", str(lifetime),
            *map(str, ports),
        ],
        log=log,
    )  # fmt: skip
    deadline = time.monotonic() + 10.0
    for port in ports:
        while True:
            try:
                socket.create_connection((LOOPBACK, port), 1.0).close()
                break
            except OSError:
                if not child.running or time.monotonic() > deadline:
                    child.kill()
                    raise RuntimeError(
                        f"never-answering server did not start{child.log_tail()}"
                    ) from None
                time.sleep(0.05)
    return child


def _main() -> None:
    parser = argparse.ArgumentParser(description="helper servers for benchmarks")
    commands = parser.add_subparsers(dest="command", required=True)
    hang = commands.add_parser("never-answering", help="accept, never answer")
    hang.add_argument("--lifetime", type=float, default=3600.0)
    hang.add_argument("ports", type=int, nargs="+")
    args = parser.parse_args()
    serve_never_answering(args.ports, args.lifetime)


if __name__ == "__main__":
    _main()

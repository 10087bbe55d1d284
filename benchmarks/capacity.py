"""
What watching an instance costs the agent, against Redis Sentinel on the
same masters and the same layout, and against the C client.

For each size N (``--instances 1000,3000``), a 1 s interval, a 0.5 s timeout,
everything healthy, every window after a warm-up that the agent needs to
settle (its collector is settled after 30 rounds):

- **Equal layout**: N redis-servers, one per master, at ``--hz 1`` (thousands
  of idle servers at the default ``hz 10`` would take the machine for their
  own timers). The agent watches them (``r0``..``rN-1``) and Redis Sentinel
  watches the same N (``sentinel monitor mI``): the agent alone, Sentinel
  alone, then both in the same window. Each one's CPU (user + system, from
  psutil) per monitored instance-second, and the ratio ours / Sentinel, so
  that both pay the same kernel and the same wake-ups of their servers, and
  the third window the same machine's load. Also the redis-servers' CPU per
  instance-second that each one adds to their idle cost (measured first,
  nobody watching), and how many masters Sentinel did not flag plain
  ``master`` at the end. Sentinel does more per instance than a PING: INFO
  every 10 s, a hello PUBLISH every 2 s, and a second (pub/sub) connection
  that reads every hello. The comparison is on what the user gets: an
  instance watched for a second.
- **Shared layout** (the layout of issue 5): N instances over ``--servers``
  (4) redis-servers at the same ``--hz``, each instance its own connection. Checks per
  CPU-second of the agent, tick completion from ``/debug/stats``, overruns,
  false downs, RSS per instance (the agent's RSS with N instances minus the
  same agent's with none, over N, before and after one ``/instances``), and
  the redis-servers' CPU per check. With the equal layout's figure, the
  layout's own effect on the agent's CPU per check.
- **redis-benchmark** ``-t ping -c 50 -P 1`` against one server, its own CPU
  time (getrusage of the reaped child): the C client's PINGs per CPU-second,
  the cost of a request and a reply through the kernel with nothing else.
- **The CPython floor** (``benchmarks/floor.py``), on the equal layout's
  servers: a bare epoll loop that sends the agent's common check (``PING``
  and ``HELLO``) to each of the N masters every interval and reads the
  replies, then the same with one Deferred per check; its CPU per
  instance-second, measured as the agent's. What any checker in this
  language pays before it does anything with a reply.

Every window also reports the machine's idle share over the window and the
1-minute load average at its end: other work on the machine shows there.
CPU times come from the kernel's clock ticks (10 ms), so windows shorter
than the defaults or a few hundred instances give coarse figures, and the
agent's fixed costs per second (HTTP app, housekeeping) weigh on small N.

With ``--checkout LABEL=PATH`` (repeatable), the agent's phases run once per
checkout, in turns, that checkout first on the agent's ``PYTHONPATH``: a
before and an after in one session, on the same servers. ``--python
LABEL=PYTHON`` runs that checkout's agent with the ``twistd`` beside
another virtualenv's interpreter (PyPy's, say); one checkout may be given
twice under two labels, one per interpreter. Everything runs
on 127.0.0.1; every server is stopped by PID at the end (Ctrl-C or SIGTERM
included; a second one is ignored while stopping). Each table is printed
as soon as it is measured; progress goes to stderr. The open-file limits
are raised as needed: this script's soft limit to its hard one, and the
agent's and Sentinel's through ``prlimit``.

    .venv/bin/python benchmarks/capacity.py [--instances 1000,3000]
        [--checkout before=../old --checkout after=.]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
from common import (
    LOOPBACK,
    Agent,
    ChildProcess,
    Instance,
    RedisServer,
    Stopped,
    add_checkout_option,
    agent_config,
    checkouts_of,
    commit_of,
    free_port,
    load_average,
    machine,
    table,
)

# Open files the agent and Sentinel need beyond one (two) per instance.
OPEN_FILES_MARGIN = 512


def parse_args() -> argparse.Namespace:
    """The options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--instances", default="1000,3000", help="comma-separated sizes")
    add("--servers", type=int, default=4, help="shared layout: servers (4)")
    add("--hz", type=int, default=1, help="equal layout: the servers' hz (1)")
    add("--interval", type=float, default=1.0, help="tick, seconds (1.0)")
    add("--timeout", type=float, default=0.5, help="check timeout, seconds (0.5)")
    add("--warmup", type=float, default=35.0, help="agent warm-up, s (35)")
    add("--sentinel-warmup", type=float, default=15.0, help="Sentinel's, s (15)")
    add("--duration", type=float, default=30.0, help="each window, s (30)")
    add("--startup-timeout", type=float, default=120.0, help="agent start, s")
    add("--bench-requests", type=int, default=200_000, help="redis-benchmark -n")
    add("--bench-clients", type=int, default=50, help="redis-benchmark -c (50)")
    add("--skip-equal", action="store_true", help="no equal layout, no Sentinel")
    add("--skip-shared", action="store_true", help="no shared layout")
    add("--skip-references", action="store_true", help="no redis-benchmark, no floor")
    add_checkout_option(parser)
    add(
        "--python",
        action="append",
        default=[],
        metavar="LABEL=PYTHON",
        help="the interpreter of a virtualenv to run checkout LABEL's agent with "
        "(repeatable; default: this script's), e.g. PyPy's",
    )
    args = parser.parse_args()
    try:
        args.sizes = [int(n) for n in args.instances.split(",")]
    except ValueError:
        parser.error(f"--instances: not a list of numbers: {args.instances!r}")
    if min(args.sizes) < 1 or args.servers < 1 or args.duration <= 0:
        parser.error("--instances, --servers and --duration must be positive")
    args.checkouts = checkouts_of(parser, args.checkout)
    args.pythons = pythons_of(parser, args.python, [c[0] for c in args.checkouts])
    return args


def pythons_of(
    parser: argparse.ArgumentParser, specs: Sequence[str], labels: Sequence[str]
) -> dict[str, Path]:
    """The interpreter of each ``--python``, by its checkout's label."""
    pythons = {}
    for spec in specs:
        label, sep, path = spec.partition("=")
        if not sep or label not in labels:
            parser.error(f"--python: not LABEL=PYTHON of a --checkout: {spec!r}")
        if not Path(path).with_name("twistd").is_file():
            parser.error(f"--python: no twistd beside {path!r}")
        pythons[label] = Path(path).absolute()
    return pythons


# Servers


def start_many(count: int, hz: int, started: ExitStack) -> list[RedisServer]:
    """
    Start `count` redis-servers at ``hz`` on distinct ports, eight at a time;
    `started` stops them all by PID (SIGTERM to every one first, then each
    is waited for). An interrupt cancels the starts not begun yet.
    """
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    servers = [RedisServer(port=port, extra_args=["--hz", str(hz)]) for port in ports]
    started.callback(stop_all, servers)

    def start(server: RedisServer) -> None:
        try:
            server.start()
        except RuntimeError:
            # Another process took the port meanwhile: once more, elsewhere.
            server.port = free_port()
            server.start()

    pool = ThreadPoolExecutor(8)
    try:
        for done in pool.map(start, servers):
            assert done is None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return servers


def stop_all(servers: Sequence[RedisServer]) -> None:
    """Stop every server: all asked at once, then each waited for."""
    for server in servers:
        if server.running:
            try:
                os.kill(server.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for server in servers:
        server.stop()


def raise_own_open_files() -> None:
    """Thousands of servers started at once: this script's soft limit to the hard."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# The agent


def open_files_for(size: int) -> int | None:
    """The agent's open-file limit when the inherited one is too low."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    needed = size + OPEN_FILES_MARGIN
    return None if needed <= soft else needed


def start_agent(
    workdir: Path, label: str, checkout: Path, ports: Sequence[int], size: int,
    args: argparse.Namespace, python: Path | None,
) -> Agent:  # fmt: skip
    """
    The agent of `checkout` watching `size` instances over `ports`, run by
    `python`'s ``twistd`` if given.
    """
    instances = [Instance(f"r{i}", ports[i % len(ports)]) for i in range(size)]
    config = agent_config(instances, interval=args.interval, timeout=args.timeout)
    return Agent(
        workdir, config, label, checkout, open_files=open_files_for(size),
        python=python,
    )  # fmt: skip


def wait_all_up(agent: Agent, warmup: float) -> float | None:
    """
    Spend the warm-up, asking /debug/stats every 0.5 s whether every
    instance is up yet; return how long after the HTTP app answered they
    all were (None: never).
    """
    started = time.monotonic()
    all_up = None
    while (elapsed := time.monotonic() - started) < warmup:
        if all_up is None:
            stats = agent.get("/debug/stats")
            if stats["instances_up"] == stats["instances"]:
                all_up = elapsed
        time.sleep(max(0.0, min(0.5, warmup - (time.monotonic() - started))))
    return all_up


# What a window says about the machine, and what the agent's counters add.
WINDOW_FIELDS = ("wall", "machine_idle", "load")
AGENT_FIELDS = (
    *WINDOW_FIELDS, "checks", "failed", "overruns", "up_at_end", "all_up",
)  # fmt: skip


class Window:
    """
    CPU of some processes over a window, the machine's idle share and
    load average, and the agent's counters.
    """

    def __init__(self, agent: Agent | None, pids: Sequence[int]) -> None:
        self.agent = agent
        self.pids = list(pids)
        self.before = self._read()

    def _read(self) -> dict[str, Any]:
        # /debug/stats first, then the CPU: the window pays for one small
        # answer of ours, and for nothing else.
        stats = self.agent.get("/debug/stats") if self.agent is not None else None
        times = {}
        for pid in self.pids:
            t = psutil.Process(pid).cpu_times()
            times[pid] = (t.user, t.system)
        machine_times = psutil.cpu_times()
        idle = machine_times.idle + getattr(machine_times, "iowait", 0.0)
        return {"stats": stats, "times": times, "idle": idle, "at": time.monotonic()}

    def end(self) -> dict[str, Any]:
        """What happened since the window started."""
        after = self._read()
        before = self.before
        wall = after["at"] - before["at"]
        cpu = {
            pid: (after["times"][pid][0] - before["times"][pid][0])
            + (after["times"][pid][1] - before["times"][pid][1])
            for pid in self.pids
        }
        system = {
            pid: after["times"][pid][1] - before["times"][pid][1] for pid in self.pids
        }
        cores = psutil.cpu_count() or 1
        result: dict[str, Any] = {
            "wall": wall,
            "cpu": cpu,
            "system": system,
            # Whether anything else took the machine during the window.
            "machine_idle": (after["idle"] - before["idle"]) / (wall * cores),
            "load": load_average(),
        }
        if self.agent is not None:
            s0, s1 = before["stats"], after["stats"]
            result.update(
                checks=s1["checks"] - s0["checks"],
                failed=s1["failures"] - s0["failures"],
                overruns=s1["overruns"] - s0["overruns"],
                up_at_end=s1["instances_up"],
                tick_completion=s1["tick_completion_seconds"],
            )
        return result


@contextmanager
def running_agent(
    workdir: Path, name: str, checkout: Path, ports: Sequence[int], size: int,
    args: argparse.Namespace, python: Path | None,
) -> Iterator[Agent]:  # fmt: skip
    """The agent of `checkout` on `size` instances, answering; stopped after."""
    agent = start_agent(workdir, name, checkout, ports, size, args, python)
    try:
        agent.wait_ready(args.startup_timeout)
        yield agent
    finally:
        agent.stop()


def settled_window(
    agent: Agent, pids: Sequence[int], args: argparse.Namespace
) -> dict[str, Any]:
    """The warm-up, then a window over the agent and `pids`."""
    all_up = wait_all_up(agent, args.warmup)
    window = Window(agent, [agent.pid, *pids])
    time.sleep(args.duration)
    return {**window.end(), "all_up": all_up}


def measure_shared(
    workdir: Path, label: str, checkout: Path, size: int, ports: list[int],
    server_pids: list[int], rss0: int, args: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    """The agent on `size` instances over a few shared servers."""
    name = f"{label}-shared-{size}"
    python = args.pythons.get(label)
    with running_agent(workdir, name, checkout, ports, size, args, python) as agent:
        result = settled_window(agent, server_pids, args)
        # Rendering thousands of instances raises the allocator's high-water
        # mark, which it keeps: RSS before and after one /instances.
        rss = agent.rss_bytes()
        instances = agent.instances()
        rss_after_render = agent.rss_bytes()
    result.update(
        agent_cpu=result["cpu"][agent.pid],
        agent_system=result["system"][agent.pid],
        servers_cpu=sum(result["cpu"][pid] for pid in server_pids),
        not_up=sorted(n for n, i in instances.items() if i["status"] != "up"),
        rss_per_instance=(rss - rss0) / size,
        rss_per_instance_rendered=(rss_after_render - rss0) / size,
    )
    return result


def baseline_rss(
    workdir: Path, checkout: Path, args: argparse.Namespace, python: Path | None
) -> int:
    """The RSS of the same agent watching nothing, once it has settled."""
    agent = Agent(workdir, agent_config([]), "empty", checkout, python=python)
    try:
        agent.wait_ready(args.startup_timeout)
        # The agent freezes its start-up objects out of gc in its first rounds.
        agent.wait_ticks(5, timeout=10 * args.interval)
        return agent.rss_bytes()
    finally:
        agent.stop()


# Sentinel


class Sentinel:
    """``redis-server --sentinel`` monitoring every server as a master."""

    def __init__(self, workdir: Path, servers: Sequence[RedisServer], label: str):
        self.port = free_port()
        conf = workdir / f"{label}.conf"
        conf.write_text(
            f"port {self.port}\nbind {LOOPBACK}\ndaemonize no\ndir {workdir}\n"
            + "".join(
                f"sentinel monitor m{i} {LOOPBACK} {server.port} 2\n"
                for i, server in enumerate(servers)
            )
        )
        limit = len(servers) * 2 + OPEN_FILES_MARGIN
        self.child = ChildProcess(
            ["prlimit", f"--nofile={limit}:{limit}", "--",
             "redis-server", str(conf), "--sentinel"],
            log=workdir / f"{label}.log",
        )  # fmt: skip

    @property
    def pid(self) -> int:
        """Sentinel's process id (prlimit execs it)."""
        return self.child.pid

    def masters(self) -> list[str]:
        """Each master's flags, from ``SENTINEL MASTERS`` (redis-cli's raw output)."""
        out = subprocess.run(
            ["redis-cli", "-h", LOOPBACK, "-p", str(self.port), "sentinel", "masters"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.splitlines()
        return [out[i + 1] for i, line in enumerate(out[:-1]) if line == "flags"]

    def check_running(self) -> None:
        """Raise if Sentinel has exited."""
        if not self.child.running:
            raise RuntimeError(f"Sentinel exited{self.child.log_tail()}")

    def stop(self) -> None:
        """SIGTERM, bounded wait, SIGKILL."""
        self.child.stop()


def sentinel_result(sentinel: Sentinel, window: dict[str, Any]) -> dict[str, Any]:
    """Sentinel's CPU in `window`, and how many of its masters look healthy now."""
    flags = sentinel.masters()
    return {
        "cpu": window["cpu"][sentinel.pid],
        "system": window["system"][sentinel.pid],
        "masters": len(flags),
        # "master" alone; anything else (s_down, disconnected...) is a miss.
        "not_ok": sum(1 for f in flags if f != "master"),
    }


def measure_equal(workdir: Path, size: int, args: argparse.Namespace) -> dict[str, Any]:
    """
    The agent and Sentinel on `size` masters, one server each: the servers
    alone, each checkout's agent alone, Sentinel alone, then Sentinel with
    each agent in turn. The servers and Sentinel are stopped on the way out.
    """
    with ExitStack() as started:
        print(f"starting {size} redis-servers at hz {args.hz}", file=sys.stderr)
        servers = start_many(size, args.hz, started)
        ports = [s.port for s in servers]
        pids = [s.pid for s in servers]
        out: dict[str, Any] = {"alone": {}, "both": {}}

        def servers_cpu(window: dict[str, Any]) -> float:
            return float(sum(window["cpu"][pid] for pid in pids))

        def agent_part(window: dict[str, Any], pid: int) -> dict[str, Any]:
            return {
                **{k: window[k] for k in AGENT_FIELDS},
                "tick_completion": window["tick_completion"],
                "cpu": window["cpu"][pid],
                "system": window["system"][pid],
                "servers_cpu": servers_cpu(window),
            }

        # The servers' own cost, with nobody watching: what each watcher adds.
        idle = Window(None, pids)
        time.sleep(min(args.duration, 10.0))
        window = idle.end()
        out["idle_servers_cpu_per_second"] = servers_cpu(window) / window["wall"]

        for label, checkout in args.checkouts:
            print(f"equal layout, {size}: {label} alone", file=sys.stderr)
            name = f"{label}-equal-{size}"
            python = args.pythons.get(label)
            with running_agent(
                workdir, name, checkout, ports, size, args, python
            ) as agent:
                window = settled_window(agent, pids, args)
            out["alone"][label] = agent_part(window, agent.pid)

        if not args.skip_references:
            for deferred in (False, True):
                kind = "deferred" if deferred else "bare"
                print(f"equal layout, {size}: the floor ({kind})", file=sys.stderr)
                out.setdefault("floor", {})[kind] = measure_floor(
                    workdir, ports, pids, deferred, args
                )

        print(f"equal layout, {size}: Sentinel alone", file=sys.stderr)
        sentinel = Sentinel(workdir, servers, f"sentinel-{size}")
        started.callback(sentinel.stop)
        time.sleep(args.sentinel_warmup)
        sentinel.check_running()
        w = Window(None, [sentinel.pid, *pids])
        time.sleep(args.duration)
        window = w.end()
        out["sentinel_alone"] = {
            **sentinel_result(sentinel, window),
            **{k: window[k] for k in WINDOW_FIELDS},
            "servers_cpu": servers_cpu(window),
        }

        for label, checkout in args.checkouts:
            print(f"equal layout, {size}: {label} and Sentinel", file=sys.stderr)
            name = f"{label}-both-{size}"
            python = args.pythons.get(label)
            with running_agent(
                workdir, name, checkout, ports, size, args, python
            ) as agent:
                window = settled_window(agent, [sentinel.pid, *pids], args)
            sentinel.check_running()
            out["both"][label] = {
                **agent_part(window, agent.pid),
                "sentinel": sentinel_result(sentinel, window),
            }
    return out


# The CPython floor

FLOOR_WARMUP = 5.0


def measure_floor(
    workdir: Path, ports: Sequence[int], server_pids: Sequence[int],
    deferred: bool, args: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    """``floor.py`` on `ports` (one instance each), a window after a warm-up."""
    kind = "deferred" if deferred else "bare"
    count_file = workdir / f"floor-{kind}-{len(ports)}.count"
    argv = [
        sys.executable, str(Path(__file__).with_name("floor.py")),
        "--ports", ",".join(map(str, ports)), "--count-file", str(count_file),
        "--interval", str(args.interval),
    ] + (["--deferred"] if deferred else [])  # fmt: skip
    child = ChildProcess(argv, log=workdir / f"floor-{kind}-{len(ports)}.log")
    try:
        deadline = time.monotonic() + args.startup_timeout
        while not count_file.exists():
            if not child.running or time.monotonic() > deadline:
                raise RuntimeError(f"floor.py did not start{child.log_tail()}")
            time.sleep(0.2)
        time.sleep(FLOOR_WARMUP)

        def counts() -> tuple[int, int]:
            replies, differed = count_file.read_text().split()
            return int(replies), int(differed)

        replies0, differed0 = counts()
        window = Window(None, [child.pid, *server_pids])
        time.sleep(args.duration)
        result = window.end()
        replies1, differed1 = counts()
        if not child.running:
            raise RuntimeError(f"floor.py exited{child.log_tail()}")
    finally:
        child.stop()
    return {
        **{k: result[k] for k in WINDOW_FIELDS},
        "cpu": result["cpu"][child.pid],
        "system": result["system"][child.pid],
        # The count file is written once a second: a second's worth of slack.
        "replies": replies1 - replies0,
        "differed": differed1 - differed0,
    }


# redis-benchmark


def measure_redis_benchmark(port: int, args: argparse.Namespace) -> dict[str, Any]:
    """redis-benchmark's PINGs and its own CPU time (it is our only child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    argv = [
        "redis-benchmark", "-h", LOOPBACK, "-p", str(port),
        "-t", "ping", "-n", str(args.bench_requests),
        "-c", str(args.bench_clients), "-P", "1", "-q",
    ]  # fmt: skip
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=max(120.0, args.bench_requests / 1000),
        check=True,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # -q prints "PING_INLINE: 91743.12 requests per second, p50=..." per test.
    rates = re.findall(r"(PING_\w+): ([\d.]+) requests per second", done.stdout)
    return {"pings": args.bench_requests * len(rates), "cpu": cpu}


# Report


def _us(value: float) -> str:
    return f"{1e6 * value:.1f} µs"


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{1000 * seconds:.0f} ms"


def _machine(w: dict[str, Any]) -> str:
    return f"machine idle {100 * w['machine_idle']:.0f} %, load {w['load']}"


def _added(w: dict[str, Any], idle: float, size: int) -> str:
    """What a watcher adds to the servers' CPU, per instance-second."""
    return _us((w["servers_cpu"] - idle * w["wall"]) / (size * w["wall"]))


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.3f}" if theirs else "n/a (Sentinel used no CPU)"


def report_equal(size: int, equal: dict[str, Any]) -> str:
    """The equal layout's table for one size."""
    idle = equal["idle_servers_cpu_per_second"]
    s = equal["sentinel_alone"]
    s_per = s["cpu"] / (size * s["wall"])
    rows = [
        ("setup", f"{size} masters, one redis-server each"),
        ("idle servers' CPU", f"{100 * idle:.1f} % of a core, nobody watching"),
        (
            "Sentinel alone: CPU per instance-s",
            f"{_us(s_per)} ({s['cpu']:.2f} s, system {s['system']:.2f} s, over "
            f"{s['wall']:.0f} s; {s['masters']} masters, {s['not_ok']} not ok; "
            f"{_machine(s)})",
        ),
        ("Sentinel alone: servers' CPU added", f"{_added(s, idle, size)} per inst-s"),
    ]
    for label, a in equal["alone"].items():
        per = a["cpu"] / (size * a["wall"])
        rows += [
            (
                f"{label} alone: CPU per instance-s",
                f"{_us(per)} ({a['cpu']:.2f} s, system {a['system']:.2f} s; "
                f"{a['checks']} checks, {a['failed']} failed, "
                f"{a['overruns']} overruns, {a['up_at_end']} up; tick p99 "
                f"{_ms(a['tick_completion']['p99'])}; {_machine(a)})",
            ),
            (
                f"{label} alone: servers' CPU added",
                f"{_added(a, idle, size)} per inst-s",
            ),
            (f"{label} / Sentinel, each alone", _ratio(per, s_per)),
        ]
    for kind, f in equal.get("floor", {}).items():
        per = f["cpu"] / (size * f["wall"])
        what = "bare loop" if kind == "bare" else "loop, a Deferred a check"
        rows += [
            (
                f"floor ({what}): CPU per instance-s",
                f"{_us(per)} ({f['cpu']:.2f} s, system {f['system']:.2f} s; "
                f"{f['replies']} replies, {f['differed']} differed; {_machine(f)})",
            ),
            (f"floor ({what}) / Sentinel", _ratio(per, s_per)),
        ]
    for label, b in equal["both"].items():
        per = b["cpu"] / (size * b["wall"])
        sb = b["sentinel"]
        sb_per = sb["cpu"] / (size * b["wall"])
        rows += [
            (
                f"{label} and Sentinel together",
                f"ours {_us(per)}, Sentinel {_us(sb_per)} per instance-s "
                f"({b['checks']} checks, {b['failed']} failed; Sentinel "
                f"{sb['not_ok']} not ok; {_machine(b)})",
            ),
            (f"{label} / Sentinel, same window", _ratio(per, sb_per)),
        ]
    return table(rows, f"equal layout, {size:,} instances")


def report_shared(size: int, label: str, r: dict[str, Any], servers: int) -> str:
    """The shared layout's table for one size and checkout."""
    tc = r["tick_completion"]
    per_cpu = r["checks"] / r["agent_cpu"] if r["agent_cpu"] else float("nan")
    rows = [
        ("setup", f"{size} instances on {servers} redis-servers"),
        ("the machine in the window", _machine(r)),
        (
            "all up after start",
            "not within the warm-up" if r["all_up"] is None
            else f"{r['all_up']:.1f} s after the HTTP app answered",
        ),
        (
            "agent CPU in window",
            f"{r['agent_cpu']:.2f} s over {r['wall']:.0f} s (system "
            f"{r['agent_system']:.2f} s)",
        ),
        ("checks per CPU-second", f"{per_cpu:,.0f} ({r['checks']} checks)"),
        (
            "tick completion p50 / p99 / max",
            f"{_ms(tc['p50'])} / {_ms(tc['p99'])} / {_ms(tc['max'])}",
        ),
        ("overruns, failed checks", f"{r['overruns']}, {r['failed']}"),
        ("instances not up at the end", f"{len(r['not_up'])}"),
        (
            "RSS per instance",
            f"{r['rss_per_instance'] / 1024:.1f} KiB "
            f"({r['rss_per_instance_rendered'] / 1024:.1f} KiB once /instances "
            "has been rendered)",
        ),
        (
            "redis-servers' CPU per check",
            _us(r["servers_cpu"] / max(r["checks"], 1)),
        ),
    ]  # fmt: skip
    return table(rows, f"shared layout, {size:,} instances, {label}")


def report_layout(size: int, label: str, shared: dict[str, Any], equal: Any) -> str:
    """The layout's own effect on the agent's CPU per check, and the servers'."""
    a = equal["alone"][label]
    per_shared = shared["agent_cpu"] / shared["checks"]
    per_equal = a["cpu"] / a["checks"]
    servers_shared = shared["servers_cpu"] / shared["checks"]
    servers_added = a["servers_cpu"] - equal["idle_servers_cpu_per_second"] * a["wall"]
    servers_equal = servers_added / a["checks"]
    return table(
        [
            (
                "shared servers",
                f"agent {_us(per_shared)} a check, servers {_us(servers_shared)}",
            ),
            (
                "one server per instance",
                f"agent {_us(per_equal)} a check, servers {_us(servers_equal)} "
                "(over their idle cost)",
            ),
            ("agent, one per instance / shared", f"{per_equal / per_shared:.2f}"),
        ],
        f"layout effect, {size:,} instances, {label}",
    )


def unwind_on_signals() -> None:
    """
    SIGINT and SIGTERM unwind the script once (every ``finally`` and
    ExitStack stops what it started); a second one is ignored, so that it
    cannot cut the stopping short and leave servers running.
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Stopped(signum)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def say(text: str) -> None:
    """One result, printed as soon as it is known: a full run takes a while."""
    print(f"{text}\n", flush=True)


def main() -> int:
    """Run every size, print the tables, stop everything started."""
    args = parse_args()
    unwind_on_signals()
    raise_own_open_files()
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-capacity-"))
    checkouts = "".join(
        f"\nagent {label}: {path.name} at {commit_of(path)}"
        + (f", run by {args.pythons[label]}" if label in args.pythons else "")
        for label, path in args.checkouts
    )
    say(f"machine: {machine()}{checkouts}\nload average at the start: {load_average()}")
    try:
        with ExitStack() as started:
            shared_servers = start_many(args.servers, args.hz, started)
            ports = [s.port for s in shared_servers]
            pids = [s.pid for s in shared_servers]
            rss0 = {
                label: baseline_rss(workdir, checkout, args, args.pythons.get(label))
                for label, checkout in args.checkouts
            }
            for size in args.sizes:
                shared: dict[str, dict[str, Any]] = {}
                for label, checkout in [] if args.skip_shared else args.checkouts:
                    print(f"shared layout, {size}: {label}", file=sys.stderr)
                    shared[label] = measure_shared(
                        workdir, label, checkout, size, ports, pids,
                        rss0[label], args,
                    )  # fmt: skip
                    say(report_shared(size, label, shared[label], args.servers))
                if not args.skip_equal:
                    equal = measure_equal(workdir, size, args)
                    say(report_equal(size, equal))
                    for label in shared:
                        say(report_layout(size, label, shared[label], equal))
            if not args.skip_references:
                bench = measure_redis_benchmark(ports[0], args)
                rate = bench["pings"] / bench["cpu"]
                rows = [
                    ("PINGs per CPU-second", f"{rate:,.0f}"),
                    ("CPU per PING", _us(1 / rate)),
                ]
                say(table(rows, f"redis-benchmark -c {args.bench_clients} -P 1"))
    except Stopped:
        print(f"interrupted; everything started is stopped; logs in {workdir}",
              file=sys.stderr)  # fmt: skip
        return 130
    except BaseException:
        print(f"logs kept in {workdir}", file=sys.stderr)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    say(f"load average at the end: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""
What HTTP clients cost the agent: the code of a git revision (``--before``)
against this checkout, one after the other in one run.

Renders, in a process of their own for each code (``render``): a monitor
of N instances on a Clock (fake probes, every instance up, 60 checks of
history each), its HTTP app, and a few renders of ``/``, ``/instances`` and
``/metrics`` through StubTreq: CPU per render (the process's CPU time,
client parsing included, the same for both), and the longest the reactor
was held in one go: the whole render before, the longest turn after (the
app's slices turned by hand, each timed, and the synchronous part of the
request).

Agents (``twistd -n sentinel``), for each code in turn, watching N
instances spread over a few real redis-servers (1 s interval, 0.5 s
timeout), once settled:

- a viewer: ``/`` asked every 2 s (what the page's refresh does) for a
  window, between two idle windows of the same length (no request but
  the rate's own): the agent's CPU above the mean idle rate, in % of one
  core (and how far the two idle rates differ: the noise), and its RSS
  per instance after it, against the same code watching nothing;
- then per route, a few renders one after the other: the agent's CPU per
  render above the idle rate, and how long the reactor was held, as a
  probe process asking ``/healthz`` in a loop during the renders waited
  (a check's reply waits as long); the agent's own slowest slice; and the
  RSS per instance after them (large answers raise the allocator's
  high-water mark, which stays);
- checks that failed and tick completion p99 meanwhile, and the instances
  up at the start and at the end.

An agent that does not answer in time is reported as such, with its log's
tail. Everything runs on 127.0.0.1; the agents, the redis-servers and this
script share the machine's cores (and here, other people's work too):
compare the two columns of one run, not runs.

    .venv/bin/python benchmarks/viewer.py [--instances 10000] [--before e6b8391]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from contextlib import ExitStack
from io import BytesIO
from pathlib import Path
from typing import Any

from common import (
    LOOPBACK,
    REPOSITORY,
    Agent,
    Instance,
    agent_config,
    load_average,
    machine,
    percentile,
    start_redis_servers,
    stop_on_sigterm,
    table,
)

ROUTES = ("/", "/instances", "/metrics")


def parse_args() -> argparse.Namespace:
    """The options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--instances", type=int, default=10_000, help="instances (10000)")
    add("--servers", type=int, default=4, help="redis-servers they share (4)")
    add("--before", default="e6b8391", help="the revision to compare (e6b8391)")
    add("--renders", type=int, default=5, help="renders per route (5)")
    add("--idle", type=float, default=30.0, help="each idle window, s (30)")
    add("--viewer", type=float, default=30.0, help="viewer window, s (30)")
    add("--startup-timeout", type=float, default=120.0, help="wait for up, s")
    add("--workdir", type=Path, default=None, help="keep configs and logs here")
    add("--no-agents", action="store_true", help="only the renders in process")
    add(
        "--no-before-agent",
        action="store_true",
        help="run the agent of this checkout only (before's renders still run)",
    )
    return parser.parse_args()


def export(revision: str, into: Path) -> Path:
    """The tree of `revision` (sentinel/, tests/, twisted/plugins/) in `into`."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision, "sentinel", "tests", "twisted"],
        cwd=REPOSITORY,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


# Renders in process


def render_in(tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    """`renders.py` on the code in `tree`, in a process of its own."""
    done = subprocess.run(
        [
            sys.executable, str(Path(__file__).with_name("renders.py")),
            str(args.instances), str(args.renders),
        ],
        env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


# Agents


def _probe(port: int, stopping: Any, results: Any) -> None:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=30)
    waits = []
    while not stopping.is_set():
        started = time.perf_counter()
        connection.request("GET", "/healthz")
        connection.getresponse().read()
        waits.append(time.perf_counter() - started)
        time.sleep(0.002)
    connection.close()
    results.send(waits)


class Prober:
    """
    Asks /healthz in a loop on one kept-alive connection, from a process of
    its own (in a thread, it would wait for this one's GIL as well), and
    keeps each wait.
    """

    def __init__(self, port: int) -> None:
        self._stopping = multiprocessing.Event()
        self._results, sender = multiprocessing.Pipe(duplex=False)
        self._process = multiprocessing.Process(
            target=_probe, args=(port, self._stopping, sender), daemon=True
        )
        self._process.start()

    def stop(self) -> list[float]:
        """Stop asking; every wait measured."""
        self._stopping.set()
        waits: list[float] = self._results.recv()
        self._process.join(60)
        return waits


def get(port: int, path: str) -> bytes:
    """One GET on a connection of its own; the body."""
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=120)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path}: {response.status} {body[:200]!r}")
        return body
    finally:
        connection.close()


def wait_settled(agent: Agent, timeout: float) -> tuple[float, int]:
    """
    Wait until at least 99 % of the instances are up, past the rounds at
    which the agent freezes its start-up objects, or at most `timeout`
    seconds (a busy machine may never get there); return how long it took
    and how many were up.
    """
    started = time.monotonic()
    while True:
        stats = agent.get("/debug/stats", timeout=30)
        took = time.monotonic() - started
        settled = stats["ticks"] > 12
        if settled and stats["instances_up"] >= 0.99 * stats["instances"]:
            return took, stats["instances_up"]
        if settled and took > timeout:
            return took, stats["instances_up"]
        time.sleep(1.0)


def measure(agent: Agent, args: argparse.Namespace) -> dict[str, Any]:
    """Everything the docstring lists, for one agent."""
    took, up = wait_settled(agent, args.startup_timeout)
    result: dict[str, Any] = {"up_after": took, "up_at_start": up}
    first = agent.get("/debug/stats")

    def rate(window: float, action: Any = None) -> float:
        # The agent's CPU per second over `window`, asking `/` every 2 s
        # (what the page does) when `action` is set.
        cpu0, t0 = agent.cpu_seconds(), time.monotonic()
        while time.monotonic() - t0 < window:
            if action is not None:
                action()
            time.sleep(max(0.0, min(2.0, window - (time.monotonic() - t0))))
        return (agent.cpu_seconds() - cpu0) / (time.monotonic() - t0)

    # The viewer between two idle windows of its own length, so that a
    # drift of the idle rate (the collector settling, the machine's other
    # load) is averaged out rather than counted as the viewer's; its RSS
    # before any other route is rendered (their large answers raise the
    # allocator's high-water mark, which stays).
    idle_before = rate(args.idle)
    get(agent.http_port, "/")  # The first render pays for imports.
    viewer_rate = rate(args.viewer, lambda: get(agent.http_port, "/"))
    idle_after = rate(args.idle)
    idle_rate = (idle_before + idle_after) / 2
    result["idle_cpu"] = idle_rate
    result["idle_drift"] = idle_after - idle_before
    result["viewer_cpu"] = viewer_rate - idle_rate
    result["rss_viewer"] = agent.rss_bytes()
    for path in ROUTES:
        get(agent.http_port, path)  # The first render pays for imports.
        prober = Prober(agent.http_port)
        time.sleep(0.5)
        walls = []
        cpu0, t0 = agent.cpu_seconds(), time.monotonic()
        for _ in range(args.renders):
            started = time.monotonic()
            size = len(get(agent.http_port, path))
            walls.append(time.monotonic() - started)
        cpu1, t1 = agent.cpu_seconds(), time.monotonic()
        waits = prober.stop()
        result[path] = {
            "cpu": ((cpu1 - cpu0) - idle_rate * (t1 - t0)) / args.renders,
            "wall": sorted(walls)[len(walls) // 2],
            "bytes": size,
            "hold_max": max(waits),
            "hold_p99": percentile(waits, 99),
        }
    stats = agent.get("/debug/stats")
    result["slowest_slice"] = stats.get("http", {}).get("slowest_slice_seconds")
    result["rss_routes"] = agent.rss_bytes()
    last = agent.get("/debug/stats")
    result["failures"] = last["failures"] - first["failures"]
    result["tick_p99"] = last["tick_completion_seconds"]["p99"]
    result["up_at_end"] = last["instances_up"]
    return result


def baseline_rss(workdir: Path, tree: Path, label: str) -> int:
    """The RSS of the same code watching nothing, settled."""
    agent = Agent(workdir, agent_config([]), label, pythonpath=tree)
    try:
        agent.wait_ready()
        agent.wait_ticks(12, timeout=60)
        return agent.rss_bytes()
    finally:
        agent.stop()


def run(
    workdir: Path, tree: Path, label: str, ports: list[int], args: argparse.Namespace
) -> dict[str, Any]:
    """Measure an agent of the code in `tree`, or say why it could not be."""
    empty = baseline_rss(workdir, tree, f"{label}-empty")
    instances = [
        Instance(f"r{i}", ports[i % len(ports)]) for i in range(args.instances)
    ]
    agent = Agent(workdir, agent_config(instances), label, pythonpath=tree)
    try:
        agent.wait_ready(args.startup_timeout)
        result = measure(agent, args)
    except (OSError, RuntimeError, http.client.HTTPException) as e:
        return {"error": f"{e!r}{agent.child.log_tail()}"}
    finally:
        agent.stop()
    result["rss_per_instance"] = (result["rss_viewer"] - empty) / args.instances
    result["rss_routes_per_instance"] = (result["rss_routes"] - empty) / args.instances
    return result


def report(
    renders: dict[str, dict[str, Any]],
    agents: dict[str, dict[str, Any]],
    args: argparse.Namespace,
) -> str:
    """The figures, before and after side by side."""

    def ms(value: float) -> str:
        return f"{value * 1000:.1f} ms"

    def percent(value: float) -> str:
        return f"{value * 100:.1f} %"

    def pair(show: Any, results: dict[str, dict[str, Any]], *keys: str) -> str:
        shown = []
        for label in ("before", "after"):
            value: Any = results.get(label, {})
            for key in keys:
                value = value.get(key) if isinstance(value, dict) else None
            shown.append("-" if value is None else show(value))
        return "  |  ".join(shown)

    rows = [("", f"before ({args.before})  |  after")]
    for path in ROUTES:
        rows += [
            (f"{path} longest hold (in process)", pair(ms, renders, path, "hold")),
            (f"{path} its CPU (in process)", pair(ms, renders, path, "hold_cpu")),
            (f"{path} CPU per render (in process)", pair(ms, renders, path, "cpu")),
            (f"{path} bytes", pair("{:,}".format, renders, path, "bytes")),
        ]
    for path in ROUTES:
        rows += [
            (f"{path} longest probe wait (agent)", pair(ms, agents, path, "hold_max")),
            (f"{path} CPU per render (agent)", pair(ms, agents, path, "cpu")),
        ]
    rows += [
        ("slowest slice (agent's own)", pair(ms, agents, "slowest_slice")),
        ("viewer: CPU above idle, of a core", pair(percent, agents, "viewer_cpu")),
        ("idle CPU, of a core", pair(percent, agents, "idle_cpu")),
        ("idle CPU after - before", pair(percent, agents, "idle_drift")),
        (
            "RSS per instance, page open",
            pair(lambda v: f"{v / 1024:.1f} KiB", agents, "rss_per_instance"),
        ),
        (
            "RSS per instance, after the routes",
            pair(lambda v: f"{v / 1024:.1f} KiB", agents, "rss_routes_per_instance"),
        ),
        ("failed checks meanwhile", pair(str, agents, "failures")),
        ("tick completion p99", pair(ms, agents, "tick_p99")),
        ("up at start", pair(str, agents, "up_at_start")),
        ("up at end", pair(str, agents, "up_at_end")),
    ]
    lines = [table(rows, f"HTTP at {args.instances} instances")]
    for label, result in agents.items():
        if "error" in result:
            lines.append(f"{label} agent: {result['error']}")
    return "\n".join(lines)


def main() -> None:
    """Renders before and after, then agents before and after; the table."""
    args = parse_args()
    stop_on_sigterm()
    print(machine(), f"load average {load_average()}", flush=True)
    with ExitStack() as started, tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        trees = {"before": export(args.before, workdir / "before"), "after": REPOSITORY}
        renders = {label: render_in(tree, args) for label, tree in trees.items()}
        print("renders:", renders, flush=True)
        agents: dict[str, dict[str, Any]] = {}
        if not args.no_agents:
            servers = start_redis_servers(args.servers, started)
            ports = [server.port for server in servers]
            for label, tree in trees.items():
                if label == "before" and args.no_before_agent:
                    continue
                agents[label] = run(workdir, tree, label, ports, args)
                print(f"{label}:", agents[label], flush=True)
    print(report(renders, agents, args))
    print(f"load average {load_average()} (the machine is shared)")


if __name__ == "__main__":
    main()

"""
The original leak, at scale: does anything grow while the world misbehaves?

N instances in four groups: healthy (real redis-servers), hung (a server
that accepts and never answers, in a small process of its own), refusing
(free ports nobody listens on) and flapping (redis-servers this script
pauses and resumes every few seconds), publishing to a real ZooKeeper that
is stopped for a while in the middle and started again. Every second it
samples the agent's /debug/stats (pending checks, delayed calls, open fds,
RSS, gc objects, ticks, overruns) and its CPU time into a CSV; at the end it
draws every series over time into a PNG (matplotlib, Agg) and prints each
one's growth per hour (the slope of a linear fit after the warm-up), the
false downs among the healthy instances (healthy ones whose ``failures``
grew), and whether ZooKeeper caught up after the outage. ``--outages 3``
stops ZooKeeper three times, evenly spread, and prints RSS just before each
outage and at the end: a step that comes back at each outage is kept
memory, one that does not is the allocator's high-water mark.

Needs matplotlib: ``pip install matplotlib``.

    .venv/bin/python benchmarks/soak.py [--minutes 10] [--instances 300]
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    Agent,
    Instance,
    ZooKeeperServer,
    agent_config,
    free_port,
    load_average,
    machine,
    start_never_answering,
    start_redis_servers,
    stop_on_sigterm,
    table,
)

ZK_ROOT = "/bench-soak"
# Sampled from /debug/stats, in this order; then what we add.
STATS = (
    "pending_checks",
    "delayed_calls",
    "open_fds",
    "rss_bytes",
    "gc_objects",
    "ticks",
    "overruns",
)
COLUMNS = ("seconds", *STATS, "cpu_seconds", "zookeeper_running")
# Fewer samples than this give no slope.
MIN_FIT_SAMPLES = 30
# The settling time after ZooKeeper is back before the second fit.
AFTER_OUTAGE = 30.0
# What is plotted and fitted: column, label, scale.
SERIES = (
    ("pending_checks", "pending checks", 1.0),
    ("delayed_calls", "reactor delayed calls", 1.0),
    ("open_fds", "open fds", 1.0),
    ("rss_bytes", "RSS (MiB)", 1 / 2**20),
    ("gc_objects", "gc objects", 1.0),
)


def parse_args() -> argparse.Namespace:
    """The options, with issue 5's defaults."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--instances", type=int, default=300, help="instances in all (300)")
    add("--hung", type=int, default=30, help="of which hung (30)")
    add("--refusing", type=int, default=30, help="of which refusing (30)")
    add("--flapping", type=int, default=30, help="of which flapping (30)")
    add("--minutes", type=float, default=10.0, help="sampled time (10)")
    add("--warmup", type=float, default=60.0, help="seconds not fitted (60)")
    add("--healthy-servers", type=int, default=4, help="redis-servers (4)")
    add("--flapping-servers", type=int, default=3, help="redis-servers (3)")
    add("--flap-period", type=float, default=10.0, help="paused half of it (10)")
    add("--zk-outage", type=float, default=15.0, help="seconds, each (15)")
    add("--outages", type=int, default=1, help="ZooKeeper outages, spread (1)")
    add("--interval", type=float, default=1.0, help="tick, seconds (1.0)")
    add("--timeout", type=float, default=0.5, help="check timeout, seconds (0.5)")
    add("--csv", type=Path, default=Path("soak.csv"), help="samples (soak.csv)")
    add("--png", type=Path, default=Path("soak.png"), help="plot (soak.png)")
    args = parser.parse_args()
    healthy = args.instances - args.hung - args.refusing - args.flapping
    if healthy < 1 or min(args.hung, args.refusing, args.flapping) < 0:
        parser.error("--hung, --refusing and --flapping leave no healthy instance")
    if args.minutes * 60 <= args.warmup:
        parser.error("--minutes must be longer than --warmup")
    args.healthy = healthy
    return args


def spread(prefix: str, count: int, ports: list[int]) -> list[Instance]:
    """``count`` instances named prefix0.. over ``ports`` in turn."""
    return [Instance(f"{prefix}{i}", ports[i % len(ports)]) for i in range(count)]


class Flapper:
    """Pauses each server for half of every period, their phases staggered."""

    def __init__(self, servers: list[Any], period: float, start: float) -> None:
        self.servers = servers
        self.period = period
        self.start = start
        self.paused = [False] * len(servers)

    def step(self, now: float) -> None:
        """Pause or resume whichever servers' half-period has turned."""
        for i, server in enumerate(self.servers):
            offset = i * self.period / len(self.servers)
            want = ((now - self.start - offset) % self.period) < self.period / 2
            if want != self.paused[i]:
                server.pause() if want else server.resume()
                self.paused[i] = want

    def resume_all(self) -> None:
        """Leave every server running."""
        for i, server in enumerate(self.servers):
            if self.paused[i] and server.running:
                server.resume()
            self.paused[i] = False


def sample_loop(
    agent: Agent,
    zookeeper: ZooKeeperServer,
    flapper: Flapper,
    args: argparse.Namespace,
    writer: Any,
) -> list[dict[str, float]]:
    """One sample a second for ``--minutes``; the outages spread evenly."""
    total = args.minutes * 60
    # (start, end) of each outage, centred on total * k / (outages + 1).
    outages = [
        (middle - args.zk_outage / 2, middle + args.zk_outage / 2)
        for k in range(1, args.outages + 1)
        for middle in [total * k / (args.outages + 1)]
    ]
    zk_running = True
    outage_end = 0.0
    rows = []
    jitter = random.Random(0)
    started = time.monotonic()
    for second in range(int(total) + 1):
        now = time.monotonic()
        elapsed = now - started
        if elapsed > total + 30:
            break
        flapper.step(now)
        due = [(a, b) for a, b in outages if a <= elapsed < b]
        if zk_running and due:
            outage_end = due[0][1]
            zookeeper.stop()
            zk_running = False
            print(f"{elapsed:.0f} s: ZooKeeper stopped", file=sys.stderr)
        elif not zk_running and elapsed >= outage_end:
            zookeeper.start()
            zk_running = True
            print(
                f"{time.monotonic() - started:.0f} s: ZooKeeper started",
                file=sys.stderr,
            )
        stats = agent.get("/debug/stats", timeout=5.0)
        row = {
            "seconds": round(time.monotonic() - started, 3),
            **{key: stats[key] for key in STATS},
            "cpu_seconds": round(agent.cpu_seconds(), 3),
            "zookeeper_running": int(zk_running),
        }
        writer.writerow(row)
        rows.append(row)
        if second % 60 == 0:
            print(
                f"{row['seconds']:.0f} s: pending {row['pending_checks']}, "
                f"fds {row['open_fds']}, RSS {row['rss_bytes'] / 2**20:.1f} MiB, "
                f"gc objects {row['gc_objects']}",
                file=sys.stderr,
                flush=True,
            )
        # A random moment in the next second: the agent's counters swing
        # within each tick, and a fixed phase that drifts would fake a trend.
        next_at = started + second + 1 + jitter.uniform(0.0, 0.5)
        time.sleep(max(0.0, next_at - time.monotonic()))
    return rows


def growth(rows: list[dict[str, float]], since: float) -> dict[str, dict[str, float]]:
    """Per series from ``since`` on: min, max, mean and slope per hour."""
    import numpy

    fitted = [r for r in rows if r["seconds"] >= since]
    t = numpy.array([r["seconds"] for r in fitted])
    out = {}
    for key, _, scale in SERIES:
        y = numpy.array([r[key] * scale for r in fitted])
        enough = len(t) >= MIN_FIT_SAMPLES
        slope = error = float("nan")
        if enough:
            coefficients, covariance = numpy.polyfit(t, y, 1, cov=True)
            slope, error = coefficients[0], covariance[0][0] ** 0.5
        out[key] = {
            "min": float(y.min()) if enough else float("nan"),
            "max": float(y.max()) if enough else float("nan"),
            "mean": float(y.mean()) if enough else float("nan"),
            "per_hour": float(slope * 3600),
            # One standard error of the slope: noise over a short run.
            "error_per_hour": float(error * 3600),
        }
    return out


def outage_spans(rows: list[dict[str, float]]) -> list[tuple[float, float]]:
    """The first and last sample of each run of samples with ZooKeeper stopped."""
    spans: list[tuple[float, float]] = []
    previous: dict[str, float] | None = None
    for row in rows:
        if not row["zookeeper_running"]:
            if previous is None or previous["zookeeper_running"]:
                spans.append((row["seconds"], row["seconds"]))
            else:
                spans[-1] = (spans[-1][0], row["seconds"])
        previous = row
    return spans


def rss_steps(rows: list[dict[str, float]]) -> str:
    """RSS (MiB) at the last sample before each outage, and at the end."""
    before = [
        previous
        for previous, row in zip(rows, rows[1:], strict=False)
        if previous["zookeeper_running"] and not row["zookeeper_running"]
    ]
    return ", ".join(
        f"{r['rss_bytes'] / 2**20:.2f} at {r['seconds']:.0f} s"
        for r in [*before, rows[-1]]
    )


def outage_end(rows: list[dict[str, float]]) -> float | None:
    """When ZooKeeper was running again after the outage (None: no outage)."""
    stopped = [i for i, r in enumerate(rows) if not r["zookeeper_running"]]
    if not stopped or stopped[-1] + 1 >= len(rows):
        return None
    return rows[stopped[-1] + 1]["seconds"]


def plot(rows: list[dict[str, float]], args: argparse.Namespace) -> None:
    """Every series over time, the warm-up and the outage shaded, into --png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["seconds"] for r in rows]
    cpu = [0.0] + [
        100 * (b["cpu_seconds"] - a["cpu_seconds"]) / (b["seconds"] - a["seconds"])
        for a, b in zip(rows, rows[1:], strict=False)
    ]
    panels = [
        (label, [r[key] * scale for r in rows]) for key, label, scale in SERIES
    ] + [("agent CPU (% of a core)", cpu)]
    fig, axes = plt.subplots(len(panels), 1, sharex=True, figsize=(7, 9), dpi=72)
    spans = outage_spans(rows)
    for ax, (label, values) in zip(axes, panels, strict=True):
        ax.plot(t, values, linewidth=0.8)
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.axvspan(0, args.warmup, color="0.9")
        for first, last in spans:
            ax.axvspan(first, last, color="orange", alpha=0.3)
        ax.grid(True, linewidth=0.3)
    axes[-1].set_xlabel("seconds (grey: warm-up, orange: ZooKeeper stopped)")
    fig.suptitle(
        f"soak: {args.instances} instances ({args.healthy} healthy, {args.hung} "
        f"hung, {args.refusing} refusing, {args.flapping} flapping)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(args.png)
    plt.close(fig)


def zookeeper_matches(
    hosts: str, docs: dict[str, dict[str, Any]], names: list[str]
) -> tuple[int, int]:
    """How many of ``names`` ZooKeeper shows with the agent's status."""
    from kazoo.client import KazooClient

    client = KazooClient(hosts=hosts, timeout=10.0)
    client.start(timeout=10.0)
    try:
        same = 0
        for name in names:
            path = f"{ZK_ROOT}/instances/{name}"
            if client.exists(path) is None:
                continue
            data, _ = client.get(path)
            same += json.loads(data)["status"] == docs[name]["status"]
        return same, len(names)
    finally:
        client.stop()
        client.close()


def report(
    args: argparse.Namespace,
    rows: list[dict[str, float]],
    fits: dict[str, dict[str, float]],
    false_downs: list[str],
    groups: dict[str, list[str]],
    end: dict[str, dict[str, Any]],
    zk_match: tuple[int, int],
) -> str:
    """The printed table."""
    fitted = [r for r in rows if r["seconds"] >= args.warmup]
    out = [
        ("machine", machine()),
        ("load average at the end", load_average()),
        (
            "setup",
            f"{args.instances} instances: {args.healthy} healthy, {args.hung} hung, "
            f"{args.refusing} refusing, {args.flapping} flapping "
            f"(period {args.flap_period:g} s); ZooKeeper stopped "
            f"{args.zk_outage:g} s, {args.outages} time(s)",
        ),
        ("RSS before each outage, at the end (MiB)", rss_steps(rows)),
        (
            "sampled",
            f"{rows[-1]['seconds']:.0f} s, {len(rows)} samples; fitted after "
            f"{args.warmup:g} s ({len(fitted)} samples)",
        ),
    ]
    back = outage_end(rows)
    late = growth(rows, back + AFTER_OUTAGE) if back is not None else None
    if late is not None and back is not None:
        out.append(
            (
                "second fit",
                f"from {back + AFTER_OUTAGE:.0f} s ({AFTER_OUTAGE:g} s after "
                "ZooKeeper was back): a step at the outage is not a trend",
            )
        )
    units = {"rss_bytes": " MiB"}
    for key, label, _ in SERIES:
        fit = fits[key]
        unit = units.get(key, "")
        second = "" if late is None else f"; after the outage {_rate(late[key], unit)}"
        out.append(
            (
                f"{label.split(' (')[0]} growth per hour",
                f"{_rate(fit, unit)}{second} (after warm-up: min "
                f"{fit['min']:,.1f}, mean {fit['mean']:,.1f}, max "
                f"{fit['max']:,.1f}{unit})",
            )
        )
    cpu = (rows[-1]["cpu_seconds"] - fitted[0]["cpu_seconds"]) / (
        rows[-1]["seconds"] - fitted[0]["seconds"]
    )
    out += [
        ("agent CPU after warm-up", f"{100 * cpu:.1f} % of one core"),
        (
            "ticks / overruns",
            f"{rows[-1]['ticks']:.0f} / {rows[-1]['overruns']:.0f} (overruns "
            f"after warm-up {rows[-1]['overruns'] - fitted[0]['overruns']:.0f})",
        ),
        (
            "false downs among healthy",
            f"{len(false_downs)}"
            + (f" (e.g. {', '.join(false_downs[:5])})" if false_downs else ""),
        ),
    ]
    for group, names in groups.items():
        up = sum(1 for n in names if end[n]["status"] == "up")
        out.append((f"{group} up at the end", f"{up} of {len(names)}"))
    out.append(
        (
            "ZooKeeper agrees at the end (non-flapping)",
            f"{zk_match[0]} of {zk_match[1]}",
        )
    )
    return table(out, "soak")


def _rate(fit: dict[str, float], unit: str) -> str:
    return f"{fit['per_hour']:+,.2f} ± {fit['error_per_hour']:,.2f}{unit}/h"


def main() -> int:
    """Run the soak, write the CSV and PNG, print the table."""
    args = parse_args()
    try:
        # Needed only at the end: said now, not after the whole window.
        import matplotlib  # noqa: F401
        import numpy  # noqa: F401
    except ImportError as e:
        print(f"soak.py: {e}: pip install matplotlib", file=sys.stderr)
        return 2
    stop_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-soak-"))
    lifetime = args.minutes * 60 + 600
    try:
        with ExitStack() as started:
            healthy = start_redis_servers(args.healthy_servers, started)
            flapping = start_redis_servers(args.flapping_servers, started)
            hung_ports = [free_port(), free_port()]
            hung = start_never_answering(hung_ports, lifetime, workdir / "hung.log")
            started.callback(hung.stop)
            refusing_ports = [free_port() for _ in range(3)]
            zookeeper = ZooKeeperServer()
            started.callback(zookeeper.close)
            zookeeper.start()
            groups_instances = {
                "healthy": spread("h", args.healthy, [s.port for s in healthy]),
                "hung": spread("hung", args.hung, hung_ports),
                "refusing": spread("ref", args.refusing, refusing_ports),
                "flapping": spread("flap", args.flapping, [s.port for s in flapping]),
            }
            groups = {g: [i.name for i in v] for g, v in groups_instances.items()}
            config = agent_config(
                [i for v in groups_instances.values() for i in v],
                interval=args.interval,
                timeout=args.timeout,
                zookeeper=zookeeper.hosts,
                zk_root=ZK_ROOT,
            )
            agent = Agent(workdir, config)
            started.callback(agent.stop)
            agent.wait_ready()
            baseline = wait_healthy_up(agent, groups["healthy"], limit=60.0)
            flapper = Flapper(flapping, args.flap_period, time.monotonic())
            started.callback(flapper.resume_all)
            with open(args.csv, "w", newline="") as out:
                writer = csv.DictWriter(out, COLUMNS)
                writer.writeheader()
                rows = sample_loop(agent, zookeeper, flapper, args, writer)
            flapper.resume_all()
            end = agent.instances()
            steady = groups["healthy"] + groups["hung"] + groups["refusing"]
            zk_match = zookeeper_matches(zookeeper.hosts, end, steady)
    except BaseException:
        print(f"logs kept in {workdir}", file=sys.stderr)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    false_downs = [
        n
        for n in groups["healthy"]
        if end[n]["failures"] > baseline[n]["failures"] or end[n]["status"] != "up"
    ]
    fits = growth(rows, args.warmup)
    plot(rows, args)
    print(report(args, rows, fits, false_downs, groups, end, zk_match))
    print(f"samples in {args.csv}, plot in {args.png}")
    return 0


def wait_healthy_up(
    agent: Agent, names: list[str], limit: float
) -> dict[str, dict[str, Any]]:
    """Wait until every healthy instance is up; return /instances then."""
    deadline = time.monotonic() + limit
    while True:
        docs = agent.instances()
        # An instance is listed once the agent watches it: in a group (any
        # agent with ZooKeeper), after the first view has settled.
        if all(docs.get(n, {}).get("status") == "up" for n in names):
            return docs
        if time.monotonic() > deadline:
            raise RuntimeError(f"healthy instances not all up in {limit:g} s")
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())

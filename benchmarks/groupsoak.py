"""
The original leak, in a group: does anything grow in the members that
stay while another member restarts, crashes and leaves, over and over?

Three agents share one fleet with ``zookeeper.replicas = 2``, each with a
state_dir of its own: healthy instances (real redis-servers), flapping
ones (redis-servers this script pauses and resumes, as ``soak.py`` does)
and refusing ones (free ports nobody listens on). Two members stay up the
whole run; the third goes through a cycle of ways to end, one every
``--cycle`` seconds, and is started again each time:

- ``SIGTERM``: it leaves its session to the next process (the state_dir);
- ``kill -9``: the next process reattaches to the session it left;
- ``SIGUSR2``: it leaves the group for good, and a new process joins anew
  a few seconds later;
- ``kill -9``, and nothing until its session has expired: its nodes are
  taken over by the members that stay.

ZooKeeper is stopped for a while in the middle of the run, as in
``soak.py``. Every second the script samples both staying members'
``/debug/stats`` (pending checks, delayed calls, open fds, RSS, gc
objects) into a CSV, and at the end draws them into a PNG and prints each
one's growth per hour after the warm-up (the slope of a linear fit), as
``soak.py`` does. Each sample also splits the member's resident
anonymous memory by mapping (glibc's main heap, its arenas for kazoo's
threads, the rest: pymalloc's arenas among them, as ``outages.py``
does), and the report adds each rise of RSS between two samples to what
was going on then (the third member's last way to end, ZooKeeper
stopped or back within `AFTER_OUTAGE`): a leak paid per restart, crash
or leave shows as rises under that phase, each time it comes round. A
reader watches every healthy instance's node in ZooKeeper throughout (a
data watch each, as a proxy would) and counts the times one was
published down, and the times one went missing and for how long, by what
the third member was doing then.

Needs matplotlib: ``pip install matplotlib``.

    .venv/bin/python benchmarks/groupsoak.py [--minutes 10] [--instances 300]
"""

from __future__ import annotations

import argparse
import csv
import functools
import itertools
import json
import logging
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
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
    percentile,
    start_redis_servers,
    stop_on_sigterm,
    table,
)
from kazoo.client import KazooClient
from kazoo.recipe.watchers import DataWatch
from outages import resident_by_kind
from soak import SERIES, STATS, Flapper, growth, outage_end, spread

ZK_ROOT = "/bench-groupsoak"
STAYING = ("stay-a", "stay-b")
CYCLING = "cycling"
# The third member's ways to end, in turn; what it waits before starting
# again: at once, or past its session's expiry.
CYCLE = (
    ("SIGTERM, handed over", signal.SIGTERM, 0.0),
    ("kill -9, reattached", signal.SIGKILL, 0.0),
    ("SIGUSR2 leave, joined anew", signal.SIGUSR2, 2.0),
    ("kill -9, session expired", signal.SIGKILL, None),
)
# A second fit starts this long after ZooKeeper is back.
AFTER_OUTAGE = 30.0
# Resident memory by mapping, per sample (`resident_by_kind`).
MAPPINGS = ("heap", "thread_arenas", "other_anon")
# A rise of RSS between two samples of at least this (a page) is counted:
# the steps seen at 7dea109 were of 4 KiB to 0.1 MiB.
STEP = 4 << 10


def parse_args() -> argparse.Namespace:
    """The options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--instances", type=int, default=300, help="instances in all (300)")
    add("--refusing", type=int, default=30, help="of which refusing (30)")
    add("--flapping", type=int, default=30, help="of which flapping (30)")
    add("--minutes", type=float, default=10.0, help="sampled time (10)")
    add("--warmup", type=float, default=60.0, help="seconds not fitted (60)")
    add("--cycle", type=float, default=30.0, help="seconds between ends (30)")
    add("--session-timeout", type=float, default=6.0, help="agents', s (6)")
    add("--zk-outage", type=float, default=15.0, help="seconds, mid-run (15)")
    add("--flap-period", type=float, default=10.0, help="paused half of it (10)")
    add("--csv", type=Path, default=Path("groupsoak.csv"), help="(groupsoak.csv)")
    add("--png", type=Path, default=Path("groupsoak.png"), help="(groupsoak.png)")
    args = parser.parse_args()
    args.healthy = args.instances - args.refusing - args.flapping
    if args.healthy < 1 or min(args.refusing, args.flapping) < 0:
        parser.error("--refusing and --flapping leave no healthy instance")
    if args.minutes * 60 <= args.warmup:
        parser.error("--minutes must be longer than --warmup")
    if args.cycle <= args.session_timeout + 5:
        parser.error("--cycle must be longer than --session-timeout + 5")
    return args


class Reader:
    """
    Every healthy instance's node as a reader sees it (a data watch each,
    its callbacks on kazoo's thread): the downs, and each time one went
    missing, for how long, under which of the third member's `phase`.
    """

    def __init__(self, hosts: str, names: list[str]) -> None:
        self.client = KazooClient(hosts=hosts, timeout=30.0)
        self.client.start(timeout=10.0)
        self.phase = "start"
        self.lock = threading.Lock()
        self.downs: list[tuple[str, str]] = []
        self.gone: dict[str, tuple[float, str]] = {}
        self.missing: list[tuple[str, float]] = []
        for name in names:
            DataWatch(
                self.client,
                f"{ZK_ROOT}/instances/{name}",
                functools.partial(self._changed, name),
            )

    def _changed(self, name: str, data: bytes | None, stat: Any, event: Any) -> None:
        now = time.monotonic()
        with self.lock:
            if data is None:
                if event is not None:  # Not the first reading: it went.
                    self.gone.setdefault(name, (now, self.phase))
                return
            went = self.gone.pop(name, None)
            if went is not None:
                self.missing.append((went[1], now - went[0]))
            try:
                status = json.loads(data).get("status")
            except (ValueError, AttributeError):
                status = "unreadable"
            if status != "up":
                self.downs.append((name, self.phase))

    def close(self) -> None:
        """Stop the client."""
        self.client.stop()
        self.client.close()


class Cycler:
    """The third member, ended and started again in turn (`CYCLE`)."""

    def __init__(
        self, start: Callable[[int], Agent], reader: Reader, timeout: float
    ) -> None:
        self.start = start
        self.reader = reader
        self.timeout = timeout
        self.count = 0
        self.agent = start(0)
        self.restart_at: float | None = None
        self.exits: list[tuple[str, int | None, float]] = []

    def end(self) -> None:
        """End the running process the next way of the cycle."""
        label, signum, wait = CYCLE[self.count % len(CYCLE)]
        self.reader.phase = label
        child = self.agent.child
        began = time.monotonic()
        child.process.send_signal(signum)
        try:
            code = child.process.wait(10.0)
        except Exception:
            child.stop()
            code = None
        self.exits.append((label, code, time.monotonic() - began))
        pause = self.timeout + 2.0 if wait is None else wait
        self.restart_at = time.monotonic() + pause

    def step(self, now: float) -> None:
        """Start the next process once its time has come."""
        if self.restart_at is not None and now >= self.restart_at:
            self.restart_at = None
            self.count += 1
            self.agent = self.start(self.count)

    def stop(self) -> None:
        """Stop the process running now."""
        self.agent.stop()


def phase_now(
    cycler_phase: str, zk_running: bool, back_at: float | None, now: float
) -> str:
    """What a sample's changes are put down to: the outage, or the third member."""
    if not zk_running:
        return "ZooKeeper stopped"
    if back_at is not None and now < back_at + AFTER_OUTAGE:
        return "ZooKeeper back"
    return cycler_phase


def rises_by_phase(
    rows: list[dict[str, Any]], since: float
) -> dict[str, tuple[int, float, dict[str, float]]]:
    """
    After `since`, each rise of RSS of `STEP` or more between two samples,
    by the phase of the later sample: how many, their sum, and the change
    of each mapping (`MAPPINGS`) over those same samples.
    """
    out: dict[str, tuple[int, float, dict[str, float]]] = {}
    for before, after in itertools.pairwise(rows):
        rise = after["rss_bytes"] - before["rss_bytes"]
        if after["seconds"] < since or rise < STEP:
            continue
        count, total, kinds = out.get(after["phase"], (0, 0.0, {}))
        for kind in MAPPINGS:
            kinds[kind] = kinds.get(kind, 0.0) + after[kind] - before[kind]
        out[after["phase"]] = (count + 1, total + rise, kinds)
    return out


def sample_loop(
    staying: list[Agent],
    cycler: Cycler,
    zookeeper: ZooKeeperServer,
    flapper: Flapper,
    args: argparse.Namespace,
    writer: Any,
) -> list[list[dict[str, Any]]]:
    """One sample a second of each staying member for ``--minutes``."""
    total = args.minutes * 60
    outage_start = total / 2 - args.zk_outage / 2
    outage_end_at = outage_start + args.zk_outage
    zk_running = True
    back_at: float | None = None
    rows: list[list[dict[str, Any]]] = [[] for _ in staying]
    started = time.monotonic()
    next_end = started + args.cycle
    for second in range(int(total) + 1):
        now = time.monotonic()
        elapsed = now - started
        if elapsed > total + 30:
            break
        flapper.step(now)
        cycler.step(now)
        if now >= next_end and cycler.restart_at is None:
            cycler.end()
            next_end = now + args.cycle
        if zk_running and outage_start <= elapsed < outage_end_at:
            zookeeper.stop()
            zk_running = False
            print(f"{elapsed:.0f} s: ZooKeeper stopped", file=sys.stderr)
        elif not zk_running and elapsed >= outage_end_at:
            zookeeper.start()
            zk_running = True
            back_at = now
            print(f"{elapsed:.0f} s: ZooKeeper started", file=sys.stderr)
        for index, agent in enumerate(staying):
            stats = agent.get("/debug/stats", timeout=5.0)
            row = {
                "agent": index,
                "seconds": round(time.monotonic() - started, 3),
                **{key: stats[key] for key in STATS},
                **resident_by_kind(agent.pid),
                "cpu_seconds": round(agent.cpu_seconds(), 3),
                "zookeeper_running": int(zk_running),
                "phase": phase_now(cycler.reader.phase, zk_running, back_at, now),
            }
            writer.writerow(row)
            rows[index].append(row)
        if second % 60 == 0:
            print(
                f"{elapsed:.0f} s: {cycler.count} restarts; RSS "
                + ", ".join(f"{r[-1]['rss_bytes'] / 2**20:.1f}" for r in rows)
                + " MiB; gc objects "
                + ", ".join(f"{r[-1]['gc_objects']}" for r in rows),
                file=sys.stderr,
                flush=True,
            )
        time.sleep(max(0.0, started + second + 1 - time.monotonic()))
    return rows


def plot(rows: list[list[dict[str, Any]]], args: argparse.Namespace) -> None:
    """Each series of each staying member over time into --png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(SERIES), 1, sharex=True, figsize=(7, 8), dpi=72)
    for ax, (key, label, scale) in zip(axes, SERIES, strict=True):
        for name, agent_rows in zip(STAYING, rows, strict=True):
            t = [r["seconds"] for r in agent_rows]
            ax.plot(t, [r[key] * scale for r in agent_rows], linewidth=0.8, label=name)
        down = [r["seconds"] for r in rows[0] if not r["zookeeper_running"]]
        ax.axvspan(0, args.warmup, color="0.9")
        if down:
            ax.axvspan(min(down), max(down), color="orange", alpha=0.3)
        ax.set_ylabel(label, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, linewidth=0.3)
    axes[0].legend(fontsize=7)
    axes[-1].set_xlabel("seconds (grey: warm-up, orange: ZooKeeper stopped)")
    fig.suptitle(
        f"group soak: 2 members staying, 1 ending every {args.cycle:g} s "
        f"({args.instances} instances, replicas 2)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(args.png)
    plt.close(fig)


def report(
    args: argparse.Namespace,
    rows: list[list[dict[str, Any]]],
    reader: Reader,
    cycler: Cycler,
    ends: list[dict[str, dict[str, Any]]],
    healthy: list[str],
) -> str:
    """The printed table."""
    out = [
        ("machine", machine()),
        ("load average at the end", load_average()),
        (
            "setup",
            f"{args.instances} instances ({args.healthy} healthy, {args.flapping} "
            f"flapping, {args.refusing} refusing), replicas 2; ZooKeeper stopped "
            f"{args.zk_outage:g} s mid-run; session timeout {args.session_timeout:g} s",
        ),
        ("restarts of the third member", f"{cycler.count}"),
    ]
    for label, _, _ in CYCLE:
        exits = [(code, took) for name, code, took in cycler.exits if name == label]
        if exits:
            codes = sorted({str(code) for code, _ in exits})
            out.append(
                (
                    f"  {label}",
                    f"{len(exits)} times; exit {', '.join(codes)}; within "
                    f"{max(took for _, took in exits):.2f} s",
                )
            )
    for name, agent_rows in zip(STAYING, rows, strict=True):
        fits = growth(agent_rows, args.warmup)
        back = outage_end(agent_rows)
        late = growth(agent_rows, back + AFTER_OUTAGE) if back is not None else None
        for key, label, _ in SERIES:
            unit = " MiB" if key == "rss_bytes" else ""
            fit = fits[key]
            second = ""
            if late is not None:
                second = f"; after the outage {late[key]['per_hour']:+,.2f}{unit}/h"
            out.append(
                (
                    f"{name}: {label.split(' (')[0]} per hour",
                    f"{fit['per_hour']:+,.2f} ± {fit['error_per_hour']:,.2f}{unit}/h"
                    f"{second} (mean {fit['mean']:,.1f}{unit})",
                )
            )
        first = next(r for r in agent_rows if r["seconds"] >= args.warmup)
        out.append(
            (
                f"{name}: heap, thread arenas, other anon",
                ", ".join(
                    f"{first[k] / 2**20:.2f} to {agent_rows[-1][k] / 2**20:.2f}"
                    for k in MAPPINGS
                )
                + " MiB",
            )
        )
        for phase, (count, total, kinds) in sorted(
            rises_by_phase(agent_rows, args.warmup).items()
        ):
            out.append(
                (
                    f"{name}: RSS rises while {phase}",
                    f"{count}, {total / 2**20:+.2f} MiB (heap "
                    + ", thread arenas ".join(
                        f"{kinds[k] / 2**20:+.2f}" for k in MAPPINGS[:2]
                    )
                    + f", other {kinds['other_anon'] / 2**20:+.2f})",
                )
            )
        cpu = (agent_rows[-1]["cpu_seconds"] - agent_rows[0]["cpu_seconds"]) / (
            agent_rows[-1]["seconds"] - agent_rows[0]["seconds"]
        )
        overruns = agent_rows[-1]["overruns"] - agent_rows[0]["overruns"]
        out.append(
            (f"{name}: CPU, overruns", f"{100 * cpu:.1f} % of a core, {overruns:.0f}")
        )
    with reader.lock:
        downs = list(reader.downs)
        missing = list(reader.missing)
    out.append(
        (
            "healthy published not up",
            f"{len(downs)}"
            + (f" (e.g. {downs[0][0]} while {downs[0][1]})" if downs else ""),
        )
    )
    for label in ["start"] + [label for label, _, _ in CYCLE]:
        durations = [d for phase, d in missing if phase == label]
        if durations:
            out.append(
                (
                    f"healthy missing while {label}",
                    f"{len(durations)} times, p50 {percentile(durations, 50):.2f} "
                    f"s, max {max(durations):.2f} s",
                )
            )
    # Each instance has two observers among three members: one at least
    # of the two staying ones.
    up = sum(
        1 for n in healthy if any(e.get(n, {}).get("status") == "up" for e in ends)
    )
    out.append(("healthy up at a staying member at the end", f"{up} of {len(healthy)}"))
    return table(out, "group soak")


def main() -> int:
    """Run the group soak, write the CSV and PNG, print the table."""
    args = parse_args()
    try:
        import matplotlib  # noqa: F401
        import numpy  # noqa: F401
    except ImportError as e:
        print(f"groupsoak.py: {e}: pip install matplotlib", file=sys.stderr)
        return 2
    stop_on_sigterm()
    # The reader's client says each drop of its connection (the outage).
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as started:
        workdir = Path(tmp)
        healthy_servers = start_redis_servers(4, started)
        flapping = start_redis_servers(2, started)
        zookeeper = ZooKeeperServer()
        started.callback(zookeeper.close)
        zookeeper.start()
        instances: list[Instance] = [
            *spread("h", args.healthy, [s.port for s in healthy_servers]),
            *spread("flap", args.flapping, [s.port for s in flapping]),
            *spread("ref", args.refusing, [free_port() for _ in range(3)]),
        ]
        healthy = [i.name for i in instances[: args.healthy]]
        settings = {"replicas": 2, "session_timeout": args.session_timeout}

        def start(agent_id: str, label: str) -> Agent:
            state = workdir / f"{agent_id}-state"
            state.mkdir(exist_ok=True)
            text = agent_config(
                instances, zookeeper=zookeeper.hosts, zk_root=ZK_ROOT,
                agent_id=agent_id, zk_settings=settings,
            )  # fmt: skip
            agent = Agent(workdir, f'state_dir = "{state}"\n{text}', label)
            started.callback(agent.stop)
            agent.wait_ready()
            return agent

        staying = [start(agent_id, agent_id) for agent_id in STAYING]
        reader = Reader(zookeeper.hosts, healthy)
        started.callback(reader.close)
        cycler = Cycler(
            lambda n: start(CYCLING, f"{CYCLING}-{n}"), reader, args.session_timeout
        )
        started.callback(cycler.stop)
        wait_up(staying, healthy, 60.0)
        reader.phase = "steady"
        flapper = Flapper(flapping, args.flap_period, time.monotonic())
        started.callback(flapper.resume_all)
        with open(args.csv, "w", newline="") as out:
            writer = csv.DictWriter(out, ["agent", "seconds", *STATS, *MAPPINGS,
                                          "cpu_seconds", "zookeeper_running",
                                          "phase"])  # fmt: skip
            writer.writeheader()
            rows = sample_loop(staying, cycler, zookeeper, flapper, args, writer)
        flapper.resume_all()
        ends = [agent.instances() for agent in staying]
    plot(rows, args)
    print(report(args, rows, reader, cycler, ends, healthy))
    print(f"samples in {args.csv}, plot in {args.png}")
    return 0


def wait_up(agents: list[Agent], names: list[str], limit: float) -> None:
    """Wait until each of `names` is up at one of `agents` at least."""
    deadline = time.monotonic() + limit
    while True:
        seen: dict[str, str] = {}
        for agent in agents:
            for name, doc in agent.instances().items():
                if doc.get("status") == "up":
                    seen[name] = "up"
        if all(seen.get(n) == "up" for n in names):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"healthy instances not all up in {limit:g} s")
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())

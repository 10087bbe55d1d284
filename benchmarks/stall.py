"""
Every member of a group stalled at once, as a reader of ZooKeeper sees the
instances afterwards (DESIGN.md section 8; docs/groups.rst, "Opinions"
and "Verdicts"): back, each member's first check decides anew, so every
opinion is unsettled while each node's verdict is still fresh and up.

``--agents`` agents (``twistd -n sentinel``, ``--replicas`` and
``--quorum``; rise 2 and fall 3 at 1 s, refresh 30 s) share
``--instances`` instances over ``--servers`` real redis-servers, all up.
Once every node says up, a reader reads every instance node every 50 ms,
and every agent is stopped (SIGSTOP) for ``--stall`` s and up to 2 s
more, to resume as the flapping server below is frozen: longer than the
4 s their histories last, shorter than their 10 s sessions (a VM paused,
the shared host starved). Meanwhile the first redis-server is killed
(SIGKILL), and the second starts failing every other check, frozen 1.5 s
and running 0.5 s in turn until the end (with a 0.5 s timeout, one check
in two fails: its opinions never settle). The other servers are the
control. Printed, for each of ``--runs`` runs of each ``--checkout``
(interleaved):

- the seconds from the agents' resumption to each node of the killed and
  of the flapping server saying down (p50 / max, and how many never did
  within ``--after`` s);
- the healthy instances published down;
- the instances one of whose documents said a status its ``observers``,
  ``quorum`` and ``uncounted`` contradict, and those one of whose
  documents named an opinion ``uncounted``.

    .venv/bin/python benchmarks/stall.py --checkout before=PATH
        --checkout after=. [--replicas 3 --quorum 2] [--runs 2]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import takeover
from common import (
    add_checkout_option,
    load_average,
    rows_in_turns,
    table,
)
from leave import summary

ROOT = "/stall"
# The flapping server: frozen, then running, so that of checks 1 s apart
# with a 0.5 s timeout one in two fails, with 0.5 s to spare either way.
FROZEN = 1.5
RUNNING = 0.5


class Reader(takeover.Reader):
    """``takeover.py``'s reader, under this scene's root."""

    root = ROOT


def flap(server: Any, stop: threading.Event, paused: Callable[[], None]) -> None:
    """
    Freeze and resume `server` in turn until `stop`, leaving it running;
    `paused` is called each time it has just been frozen.
    """
    try:
        while True:
            server.pause()
            paused()
            if stop.wait(FROZEN):
                return
            server.resume()
            if stop.wait(RUNNING):
                return
    finally:
        server.resume()


def run(
    args: argparse.Namespace, label: str, version: Path, number: int
) -> list[tuple[str, str]]:
    """One group, stalled once; a row per figure."""
    with ExitStack() as started, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        settings = {"replicas": args.replicas, "quorum": args.quorum}
        scene = takeover.start_group(
            args, version, started, workdir, ROOT, Reader, settings
        )
        servers, instances = scene.servers, scene.instances
        agents, reader, load = scene.agents, scene.reader, scene.load

        def resume_all() -> None:
            for agent in agents:
                os.kill(agent.pid, signal.SIGCONT)

        # Stopped after this: a stopped agent would not hear SIGTERM.
        started.callback(resume_all)
        for agent in agents:
            os.kill(agent.pid, signal.SIGSTOP)
        servers[0].kill()
        # The agents resume just as the flapping server is frozen: their
        # first checks fail there, and so does one in two after (resumed
        # at a random phase, a first check that succeeds makes an up
        # opinion, which its hysteresis keeps up: no scene at all).
        due, resumed = threading.Event(), threading.Event()
        resumed_at = 0.0

        def paused() -> None:
            nonlocal resumed_at
            if due.is_set() and not resumed.is_set():
                resumed_at = reader.now()
                resume_all()
                resumed.set()

        stop = threading.Event()
        flapping = threading.Thread(target=flap, args=(servers[1], stop, paused))
        flapping.start()
        started.callback(flapping.join, 10.0)
        started.callback(stop.set)
        time.sleep(args.stall)
        due.set()
        resumed.wait(FROZEN + RUNNING + 1.0)
        time.sleep(args.after)
        stop.set()
        reader.stop()
        load_after = load_average()

        def down_after(name: str) -> float | None:
            return next(
                (
                    t - resumed_at
                    for t, v in reader.nodes[name]
                    if t >= resumed_at and v is not None and v[0] == "down"
                ),
                None,
            )

        rows = [(f"{label} run {number}: load average", f"{load} -> {load_after}")]
        for what, port in (("killed", servers[0].port), ("flapping", servers[1].port)):
            group = [i.name for i in instances if i.port == port]
            times = [t for n in group if (t := down_after(n)) is not None]
            never = len(group) - len(times)
            rows.append(
                (
                    f"{label} run {number}: {what}, resumed to down",
                    summary(times) + (f", {never} never down" if never else ""),
                )
            )
        healthy = [
            i.name
            for i in instances
            if i.port not in (servers[0].port, servers[1].port)
        ]
        healthy_down = [n for n in healthy if down_after(n) is not None]
        rows.append(
            (
                f"{label} run {number}: healthy, published down",
                f"{len(healthy_down)} of {len(healthy)}",
            )
        )
        rows.append(takeover.documents_row(f"{label} run {number}", reader, resumed_at))
        return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add_checkout_option(parser)
    add("--agents", type=int, default=3, help="members (3)")
    add("--instances", type=int, default=60)
    add("--servers", type=int, default=4, help="at least 3 (4)")
    add("--replicas", type=int, default=3, help="zookeeper.replicas (3)")
    add("--quorum", type=int, default=2, help="zookeeper.quorum (2)")
    add("--stall", type=float, default=5.0, help="s every agent is stopped (5+)")
    add("--timeout", type=float, default=0.5, help="the agents' timeout (0.5)")
    add("--warmup", type=float, default=3.0)
    add("--after", type=float, default=40.0, help="s watched after (40)")
    add("--runs", type=int, default=2)
    args = parser.parse_args()
    if args.servers < 3:
        parser.error("--servers: at least 3 (killed, flapping, control)")
    rows = rows_in_turns(parser, args, run)
    title = (
        f"stall: {args.agents} agents stopped {args.stall:g}+ s, R = "
        f"{args.replicas}, quorum {args.quorum}, {args.instances} instances on "
        f"{args.servers} servers, one killed and one failing every other check"
    )
    print(table(rows, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())

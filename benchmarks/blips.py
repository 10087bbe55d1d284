"""
What readers of ZooKeeper see of an up instance's ``error`` around a blip:
a Redis stopped (SIGSTOP) for less than ``fall`` checks, and the writes
that costs.

One agent (``twistd -n sentinel``; interval 1 s, timeout 0.5 s, rise 2,
fall 3, ``zookeeper.refresh`` `--refresh`) watches `--instances` real
redis-servers that stay up throughout (with `--replicas` R, a group of R
agents that all observe every instance: the nodes are verdicts); a
reader polls their instance nodes every 20 ms. Three phases per
checkout:

- ``steady``: no blip;
- ``every 10 s``: each server stopped 0.8 s every 10 s (one failed check,
  at a phase of its own);
- ``at refresh``: each server in turn stopped from 0.4 s before the check
  that writes its node's refresh until 0.6 s after it (that check times
  out), `--aligned` times;
- ``stalls`` (with `--stall` S): each server in turn stopped S s (fewer
  than `--fall` checks, more than the refresh: a blip that outlasts the
  refresh), one every `--seconds` / instances s.

For each: the node's writes per minute per instance (from its version),
how often and how long a node said ``up`` with an error (from the first
poll that saw it to the first that did not), and whether any said down.

    .venv/bin/python benchmarks/blips.py --checkout before=OTHER_TREE \\
        --checkout after=. [--refresh 3] [--seconds 60] [--aligned 6] \
        [--replicas 2] [--fall 10 --stall 8]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from common import (
    Agent,
    Instance,
    RedisServer,
    add_checkout_option,
    agent_config,
    load_average,
    machine,
    rows_in_turns,
    start_redis_servers,
    start_zookeeper,
    table,
    wait_until,
)
from kazoo.client import KazooClient

POLL = 0.02
ROOT = "/sentinel"
BLIP_EVERY = 10.0
BLIP = 0.8


def parse_args() -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--instances", type=int, default=3, help="redis-servers (3)")
    add("--refresh", type=float, default=3.0, help="zookeeper.refresh (3 s)")
    add("--seconds", type=float, default=60.0, help="each timed phase (60 s)")
    add("--aligned", type=int, default=6, help="blips at a refresh (6)")
    add("--runs", type=int, default=1, help="runs of each checkout (1)")
    add("--fall", type=int, default=3, help="the agents' fall (3)")
    add(
        "--stall",
        type=float,
        default=0.0,
        help="add the stalls phase: each server stopped this long, in turn (0)",
    )
    add(
        "--replicas",
        type=int,
        default=1,
        help="agents, each observing every instance (1); above 1 the nodes "
        "are a group's verdicts",
    )
    add_checkout_option(parser)
    return parser, parser.parse_args()


class Reader:
    """Polls instance nodes on a thread of its own, every `POLL` seconds."""

    def __init__(self, client: KazooClient, paths: Sequence[str]) -> None:
        self._client = client
        self._paths = list(paths)
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        # Per path: since when it says up with an error, if it does.
        self._erring: dict[str, float | None] = dict.fromkeys(self._paths)
        self.spells: list[float] = []
        self.downs = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Reader:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(10.0)

    def take(self) -> tuple[list[float], int]:
        """The spells ended since the last take, and the downs seen."""
        with self._lock:
            spells, downs = self.spells, self.downs
            self.spells, self.downs = [], 0
        return spells, downs

    def _run(self) -> None:
        while not self._stopping.wait(POLL):
            asked = [(p, self._client.get_async(p)) for p in self._paths]
            for path, result in asked:
                try:
                    data, _ = result.get(timeout=2.0)
                except Exception:  # noqa: BLE001 - missing, or lost: next poll
                    continue
                document = json.loads(data)
                now = time.monotonic()
                with self._lock:
                    if document["status"] != "up":
                        self.downs += 1
                    since = self._erring[path]
                    if document["status"] == "up" and document["error"]:
                        if since is None:
                            self._erring[path] = now
                    elif since is not None:
                        self.spells.append(now - since)
                        self._erring[path] = None


def versions(client: KazooClient, paths: Sequence[str]) -> int:
    """The sum of the nodes' versions: their writes so far."""
    return sum(client.get(p)[1].version for p in paths)


def blip_every(servers: Sequence[RedisServer], seconds: float) -> None:
    """
    Stop each server `BLIP` s every `BLIP_EVERY` s for `seconds`, the
    servers' blips spread evenly (never two at once).
    """
    started = time.time()
    spacing = BLIP_EVERY / len(servers)
    blips = sorted(
        (started + spacing * (index + 0.5) + BLIP_EVERY * turn, index)
        for index in range(len(servers))
        for turn in range(math.floor(seconds / BLIP_EVERY))
    )
    for at, index in blips:
        time.sleep(max(0.0, at - time.time()))
        servers[index].pause()
        time.sleep(BLIP)
        servers[index].resume()


def blip_at_refresh(
    client: KazooClient,
    servers: Sequence[RedisServer],
    paths: Sequence[str],
    times: int,
    refresh: float,
) -> None:
    """
    `times` blips, each server in turn, each over the check that writes
    the node's next refresh: that check comes the refresh's whole number of
    intervals (of 1 s) after the ``checked_at`` the node's last write said.
    """
    for number in range(times):
        server, path = servers[number % len(servers)], paths[number % len(paths)]
        version = client.get(path)[1].version

        def written(path: str = path, version: int = version) -> bool:
            return bool(client.get(path)[1].version > version)

        wait_until(written, 60.0, "a write")
        checked_at = json.loads(client.get(path)[0])["checked_at"]
        due = checked_at + max(1, math.floor(refresh))
        time.sleep(max(0.0, due - 0.4 - time.time()))
        server.pause()
        time.sleep(max(0.0, due + 0.6 - time.time()))
        server.resume()
        time.sleep(2.0)


def stall_each(servers: Sequence[RedisServer], stall: float, seconds: float) -> None:
    """Stop each server in turn for `stall` s, one start every `seconds` / n."""
    spacing = seconds / len(servers)
    started = time.time()
    for index, server in enumerate(servers):
        time.sleep(max(0.0, started + spacing * index - time.time()))
        server.pause()
        time.sleep(stall)
        server.resume()
    time.sleep(max(0.0, started + seconds - time.time()))


def run(
    args: argparse.Namespace, label: str, checkout: Path, number: int
) -> list[tuple[str, str]]:
    """One checkout's three phases; its rows."""
    shape = "" if args.replicas == 1 else f", {args.replicas} agents and replicas"
    rows = [(f"{label} (run {number + 1}), refresh {args.refresh:g} s{shape}", "")]
    with ExitStack() as started, tempfile.TemporaryDirectory() as work:
        servers = start_redis_servers(args.instances, started)
        zookeeper, client = start_zookeeper(started)
        instances = [Instance(f"b{i}", s.port) for i, s in enumerate(servers)]
        settings: dict[str, float | int | str] = {"refresh": args.refresh}
        if args.replicas > 1:
            settings["replicas"] = args.replicas
        agents = []
        for number in range(args.replicas):
            config = agent_config(
                instances,
                fall=args.fall,
                zookeeper=zookeeper.hosts,
                zk_root=ROOT,
                agent_id=f"bench{number}",
                zk_settings=settings,
            )
            agent = Agent(Path(work), config, f"agent{number}", pythonpath=checkout)
            started.callback(agent.stop)
            agents.append(agent)
        for agent in agents:
            agent.wait_ready()
        paths = [f"{ROOT}/instances/{i.name}" for i in instances]
        wait_until(lambda: all(client.exists(p) for p in paths), 30.0, "nodes")
        time.sleep(2 * args.refresh)
        reader = Reader(client, paths).start()
        started.callback(reader.stop)
        phases = (
            ("steady", lambda: time.sleep(args.seconds)),
            (f"every {BLIP_EVERY:g} s", lambda: blip_every(servers, args.seconds)),
            (
                "at refresh",
                lambda: blip_at_refresh(
                    client, servers, paths, args.aligned, args.refresh
                ),
            ),
        )
        if args.stall > 0:
            phases += (
                (
                    f"stalls of {args.stall:g} s",
                    lambda: stall_each(servers, args.stall, args.seconds),
                ),
            )
        for name, phase in phases:
            reader.take()
            before, began = versions(client, paths), time.monotonic()
            phase()
            # Let a spell under way end (or show it never does).
            time.sleep(args.refresh + 1.0)
            elapsed = time.monotonic() - began
            writes = versions(client, paths) - before
            spells, downs = reader.take()
            rows += [
                (f"  {name}: writes per min per instance",
                 f"{60 * writes / elapsed / len(paths):.1f}"),
                (f"  {name}: up with an error", _spells(spells)),
                (f"  {name}: polls said down", str(downs)),
            ]  # fmt: skip
        overruns = sum(a.get("/debug/stats")["overruns"] for a in agents)
        rows.append(("  overruns", str(overruns)))
        rows.append(("  load average", load_average()))
    return rows


def _spells(spells: Sequence[float]) -> str:
    if not spells:
        return "never"
    return (
        f"{len(spells)} times, median {statistics.median(spells):.2f} s, "
        f"longest {max(spells):.2f} s, {sum(spells):.1f} s in all"
    )


def main() -> int:
    """Run each checkout in turn; print the figures."""
    parser, args = parse_args()
    rows = [("load average at start", load_average()), ("machine", machine())]
    rows += rows_in_turns(parser, args, run)
    print(table(rows, "An up node's error around a blip (benchmarks/blips.py)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

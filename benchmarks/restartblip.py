"""
A restart with ``state_dir`` while every Redis blips, as a reader of
ZooKeeper sees it (DESIGN.md sections 2.6 and 8: a restart is no news of
an instance, and one agent's own trouble never publishes a healthy one
down).

One agent (``twistd -n sentinel``, rise 2 and fall 3 at 1 s, a
``state_dir``) watches ``--instances`` instances over ``--servers`` real
redis-servers, all up. Once every node says up, a reader reads every
instance node every 50 ms (its status and the pid of the process that
wrote it, from the agent node), the agent is stopped with SIGTERM (its
session is kept for the next process), every redis-server is frozen
(SIGSTOP), the next process is started on the same config, and the
servers go on (SIGCONT) ``--blip`` s after its HTTP app answers: its first
checks fail, fewer than ``fall`` of them in a row.

``--kill K`` kills K redis-servers (SIGKILL) at the stop instead of
freezing them: their instances must go down, within ``fall`` checks of the
new process. Printed, for each of ``--runs`` runs of each ``--checkout``
(interleaved, the same scene each time):

- the instances whose node said down at least once after the stop though
  their server was never killed (healthy instances published down), and
  the nodes ever missing;
- with ``--kill``, the seconds from the new process's HTTP app answering
  (its checks start with it) to the node saying down (p50 / max), and
  how many never did.

    .venv/bin/python benchmarks/restartblip.py --checkout before=PATH
        --checkout after=. [--blip 1.5] [--kill 1] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import takeover
from common import (
    Agent,
    Instance,
    add_checkout_option,
    agent_config,
    load_average,
    rows_in_turns,
    start_redis_servers,
    start_zookeeper,
    table,
    wait_until,
)
from kazoo.exceptions import NoNodeError
from leave import summary

ROOT = "/restartblip"
AGENT_ID = "bench"


class Reader(takeover.Reader):
    """``takeover.py``'s reader, on this script's root."""

    root = ROOT


def run(
    args: argparse.Namespace, label: str, version: Path, number: int
) -> list[tuple[str, str]]:
    """One agent restarted during a blip; a row per figure."""
    with ExitStack() as started, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        servers = start_redis_servers(args.servers, started)
        zookeeper, client = start_zookeeper(started)
        instances = [
            Instance(f"r{i}", servers[i % len(servers)].port)
            for i in range(args.instances)
        ]
        names = [i.name for i in instances]
        text = f'state_dir = "{workdir / "state"}"\n' + agent_config(
            instances,
            timeout=args.timeout,
            zookeeper=zookeeper.hosts,
            zk_root=ROOT,
            agent_id=AGENT_ID,
            zk_settings={"session_timeout": 10.0},
        )
        first = Agent(workdir, text, "first", version)
        started.callback(first.stop)
        first.wait_ready()

        def all_up() -> bool:
            reads = [client.get_async(f"{ROOT}/instances/{n}") for n in names]
            try:
                return all(json_status(r.get()[0]) == "up" for r in reads)
            except NoNodeError:
                return False

        wait_until(all_up, 120.0, "every node up")
        time.sleep(args.warmup)
        reader = Reader(zookeeper.hosts, names)
        started.callback(reader.stop)
        time.sleep(1.0)
        load = load_average()
        first.child.stop()
        stopped_at = reader.now()
        killed = set()
        for server in servers[: args.kill]:
            server.kill()
            killed |= {i.name for i in instances if i.port == server.port}
        frozen = servers[args.kill :]
        if args.blip:
            for server in frozen:
                server.pause()
        second = Agent(workdir, text, "second", version)
        started.callback(second.stop)
        second.wait_ready()
        # Its checks start with its HTTP app: the zero of the bound.
        ready_at = reader.now()
        if args.blip:
            time.sleep(args.blip)
            for server in frozen:
                server.resume()
        time.sleep(args.after)
        reader.stop()
        load_after = load_average()
        if args.keep_logs:
            for agent in (first, second):
                target = Path(args.keep_logs) / f"restartblip-{label}-{number}-"
                Path(str(target) + agent.log.name).write_bytes(agent.log.read_bytes())

        def down_at(name: str) -> float | None:
            return next(
                (
                    t
                    for t, v in reader.nodes[name]
                    if t >= stopped_at and v is not None and v[0] == "down"
                ),
                None,
            )

        healthy = [n for n in names if n not in killed]
        healthy_down = [n for n in healthy if down_at(n) is not None]
        missing = [
            n
            for n in names
            if any(v is None for t, v in reader.nodes[n] if t >= stopped_at)
        ]
        rows = [
            (f"{label} run {number}: load average", f"{load} -> {load_after}"),
            (
                f"{label} run {number}: healthy, published down",
                f"{len(healthy_down)} of {len(healthy)}",
            ),
            (f"{label} run {number}: node ever missing", str(len(missing))),
        ]
        if args.kill:
            times = [t - ready_at for n in killed if (t := down_at(n)) is not None]
            never = len(killed) - len(times)
            rows.append(
                (
                    f"{label} run {number}: killed, ready to down",
                    summary(times) + (f", {never} never down" if never else ""),
                )
            )
        return rows


def json_status(data: bytes) -> str | None:
    """The status an instance node says."""
    status = json.loads(data).get("status")
    return status if isinstance(status, str) else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add_checkout_option(parser)
    add("--instances", type=int, default=100)
    add("--servers", type=int, default=4)
    add("--timeout", type=float, default=0.5, help="the agent's timeout (0.5)")
    add("--blip", type=float, default=1.5, help="s frozen after the start (1.5)")
    add("--kill", type=int, default=0, help="servers killed at the stop")
    add("--warmup", type=float, default=3.0)
    add("--after", type=float, default=8.0, help="s watched after the blip (8)")
    add("--runs", type=int, default=2)
    add("--keep-logs", metavar="DIR", help="copy the agents' logs there")
    args = parser.parse_args()
    rows = rows_in_turns(parser, args, run)
    title = (
        f"restart with state_dir: {args.instances} instances on "
        f"{args.servers} servers"
        + (f", servers frozen {args.blip:g} s from the start" if args.blip else "")
        + (f", {args.kill} server(s) killed" if args.kill else "")
    )
    print(table(rows, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""
How long a crash loop keeps a dead Redis published up, or a live one
published down (the state file's ``checked_at``, `sentinel.handoff`).

An agent (``twistd -n sentinel``, a state_dir) watches N instances on a
live redis-server and N on another; once all are up, the second server is
killed with the agent, and a supervisor loop starts the agent again and
kills it (SIGKILL) a chosen delay after its first check (``/debug/stats``), over
and over. ZooKeeper is reached through a proxy that delays each direction
(a link a few milliseconds or more away: the write window lets 8 writes go
at first). A reader polls every instance node directly every 0.2 s, as a
proxy would. For each run:

- how long after the kill an instance of the dead server was last seen
  ``up``, and the oldest ``checked_at`` such a node said;
- how many processes reattached to the session, and how many closed it as
  unchecked for too long.

With ``--clock-back S`` the loop's processes run S seconds behind the first
one (libfaketime: a clock stepped back between two processes). With
``--group``, a second agent (no state_dir) runs beside it throughout, both
with ``zookeeper.replicas = 2``: the looping member's opinions and the
verdicts it is the primary of are what can hold a dead Redis up.

With ``--revive N``, the mirror: the second server is stopped instead
(its port refuses: each process's round completes), the loop starts once
its instances are published down, and the server is started again on its
port when the loop's process N is. The reader then times how long after
that an instance of it was last seen ``down``, the oldest ``checked_at``
such a node said, and the newest, after the restart (a check that found
it alive, renewing a ``down``).

    .venv/bin/python benchmarks/crashloop.py [--instances 100] [--zk-delay 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    Agent,
    Instance,
    agent_config,
    libfaketime,
    load_average,
    machine,
    start_redis_servers,
    start_zookeeper,
    stop_on_sigterm,
    table,
    wait_until,
)
from kazoo.client import KazooClient

ROOT = "/sentinel"


def parse_args() -> argparse.Namespace:
    """The options; the defaults are the slow link's measurement."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--instances", type=int, default=100, help="instances per server (100)")
    add("--zk-delay", type=float, default=0.05, help="seconds each way (0.05)")
    add("--delay", type=float, default=0.3, help="kill after the first check (0.3)")
    add("--cycles", type=int, default=14, help="processes in the loop (14)")
    add("--tail", type=float, default=20.0, help="seconds watched after it (20)")
    add("--clock-back", type=float, default=0.0, help="the loop's clock behind (0)")
    add("--runs", type=int, default=2, help="runs (2)")
    add("--group", action="store_true", help="a stable second agent, replicas 2")
    add("--revive", type=int, help="stop the server, start it at this process")
    return parser.parse_args()


class DelayingProxy:
    """A TCP proxy to `port` delaying every chunk `delay` s each way, in order."""

    def __init__(self, port: int, delay: float) -> None:
        self.target, self.delay = port, delay
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), daemon=True).start()
        ready.wait(10.0)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._accepted, "127.0.0.1", 0)
        )
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _accepted(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            upstream = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pipe(reader, upstream[1]),
            self._pipe(upstream[0], writer),
            return_exceptions=True,
        )

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await chunks.get()
                await asyncio.sleep(max(0.0, due - self.loop.time()))
                if not data:
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()

        sending = asyncio.ensure_future(send())
        try:
            while data := await reader.read(65536):
                chunks.put_nowait((self.loop.time() + self.delay, data))
        finally:
            chunks.put_nowait((0.0, b""))
            await sending

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)


class WrongStatusWatch:
    """
    Polls every instance node of the second server: those still said
    `wrong` (``up`` when it died, ``down`` once it lives again) from
    `since` (epoch seconds; None: not yet) on.
    """

    def __init__(self, client: KazooClient, wrong: str, since: float | None) -> None:
        self.client, self.wrong, self.since = client, wrong, since
        self.last_seen: float | None = None
        self.oldest = 0.0
        # The newest checked_at of one still said `wrong`, after `since`.
        self.renewed: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        parent = f"{ROOT}/instances"
        while not self._stop.is_set():
            names = [n for n in self.client.get_children(parent) if n[0] == "d"]
            asked = [self.client.get_async(f"{parent}/{n}") for n in names]
            now, since = time.time(), self.since
            for answer in asked:
                try:
                    document: dict[str, Any] = json.loads(answer.get(timeout=5)[0])
                except Exception:
                    continue  # Gone meanwhile.
                if since is not None and document["status"] == self.wrong:
                    age = now - document["checked_at"]
                    self.last_seen = now - since
                    self.oldest = max(self.oldest, age)
                    after = document["checked_at"] - since
                    if after > 0 and (self.renewed is None or after > self.renewed):
                        self.renewed = after
            time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10.0)


def first_check(agent: Agent, timeout: float = 60.0) -> None:
    """
    Wait until the agent has recorded its first check (or exits), as its
    ``/debug/stats`` counts them: a reattached process logs no line for a
    first check that agrees with the node it took over, nor for one that
    contradicts it short of ``fall`` (docs/operations.rst, "A restart's
    first checks"), so no log line marks it.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and agent.child.running:
        try:
            if agent.get("/debug/stats", timeout=2.0)["checks"] > 0:
                return
        except (OSError, ValueError):
            pass  # its HTTP app is not listening yet
        time.sleep(0.02)
    raise RuntimeError(f"no check in {timeout:g} s{agent.child.log_tail()}")


def run_once(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """One loop on servers of its own; what the reader saw, and the logs'."""
    with ExitStack() as started:
        zookeeper, client = start_zookeeper(started)
        live, dead = start_redis_servers(2, started)
        proxy = DelayingProxy(zookeeper.port, args.zk_delay)
        started.callback(proxy.close)
        instances = [Instance(f"l{i:03d}", live.port) for i in range(args.instances)]
        instances += [Instance(f"d{i:03d}", dead.port) for i in range(args.instances)]
        group = {"replicas": 2} if args.group else None
        hosts = f"127.0.0.1:{proxy.port}"
        text = f'state_dir = "{workdir}/state"\n' + agent_config(
            instances, zookeeper=hosts, zk_settings=group
        )
        first = Agent(workdir, text, "first")
        started.callback(first.stop)
        if args.group:
            stable = agent_config(
                instances, zookeeper=hosts, agent_id="stable", zk_settings=group
            )
            started.callback(Agent(workdir, stable, "stable").stop)

        def all_up(dead_down: bool = False) -> bool:
            parent = f"{ROOT}/instances"
            if not client.exists(parent):
                return False
            names = client.get_children(parent)
            return len(names) == 2 * args.instances and all(
                json.loads(client.get(f"{parent}/{n}")[0])["status"]
                == ("down" if dead_down and n[0] == "d" else "up")
                for n in names
            )

        wait_until(all_up, 120.0, "every instance up")
        time.sleep(2.0)
        if args.revive is None:
            dead.kill()
            watch = WrongStatusWatch(client, "up", time.time())
        else:
            dead.stop()
            wait_until(lambda: all_up(True), 60.0, "the stopped server's down")
            time.sleep(2.0)
            watch = WrongStatusWatch(client, "down", None)
        first.child.kill()
        environment = dict(os.environ)
        if args.clock_back:
            os.environ.update(
                LD_PRELOAD=libfaketime(),
                FAKETIME=f"-{args.clock_back:g}",
                FAKETIME_DONT_FAKE_MONOTONIC="1",
            )
        try:
            for cycle in range(args.cycles):
                if cycle == args.revive:
                    dead.start()
                    watch.since = time.time()
                agent = Agent(workdir, text, f"loop-{cycle}")
                started.callback(agent.child.kill)
                first_check(agent)
                time.sleep(args.delay)
                agent.child.kill()
        finally:
            os.environ.clear()
            os.environ.update(environment)
        time.sleep(args.tail)
        watch.stop()
        logs = "".join(p.read_text(errors="replace") for p in workdir.glob("*.log"))
        return {
            "last_seen": watch.last_seen,
            "oldest": watch.oldest,
            "renewed": watch.renewed,
            "reattached": logs.count("reattached to ZooKeeper session"),
            "closed": logs.count("not reattaching to ZooKeeper session"),
        }


def main() -> int:
    """Run the loops, print the table, stop everything started."""
    args = parse_args()
    if args.clock_back:
        libfaketime()  # a one-line exit now, not after the servers started
    stop_on_sigterm()
    rows = [
        ("machine", machine()),
        ("load average at start", load_average()),
        (
            "settings",
            f"{args.instances} live + {args.instances} dead instances, ZooKeeper "
            f"{args.zk_delay * 1000:g} ms away each way, {args.cycles} processes "
            f"each killed {args.delay:g} s after their first check"
            + (f", their clock {args.clock_back:g} s behind" if args.clock_back else "")
            + (", beside a stable agent (replicas 2)" if args.group else "")
            + (
                ""
                if args.revive is None
                else f", the server stopped, and started at process {args.revive}"
            ),
        ),
    ]
    outcomes = []
    for run in range(args.runs):
        workdir = Path(tempfile.mkdtemp(prefix="sentinel-crashloop-"))
        try:
            outcomes.append(run_once(args, workdir))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        print(f"run {run} done", file=sys.stderr, flush=True)

    def series(key: str, unit: str = " s") -> str:
        values = [o[key] for o in outcomes]
        shown = [
            "never"
            if v is None
            else f"{v:.1f}{unit}"
            if isinstance(v, float)
            else str(v)
            for v in values
        ]
        return " / ".join(shown)

    if args.revive is None:
        rows += [
            ("a dead instance last seen up, after the kill", series("last_seen")),
            ("oldest checked_at of a dead instance up", series("oldest")),
        ]
    else:
        rows += [
            ("a live instance last seen down, after its start", series("last_seen")),
            ("oldest checked_at of a live instance down", series("oldest")),
            ("newest checked_at of one down, after its start", series("renewed")),
        ]
    rows += [
        ("processes that reattached", series("reattached")),
        ("sessions closed as unchecked", series("closed")),
        ("load average at the end", load_average()),
    ]
    print(table(rows, "A crash loop, as a reader of ZooKeeper sees it"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

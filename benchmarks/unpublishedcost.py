"""
What a waiting member's checks of the nodes it leaves to a member not
back cost (`sentinel.unpublished`): one ``exists`` per such instance,
every session timeout and its spread, while the wait lasts.

A real ZooKeeper holds ``--instances`` instance nodes; the agent's own
client (`sentinel.zk.ZooKeeper`) runs `Unpublished` over them, checking
every ``--every`` s for ``--checks`` checks. Printed: each check's
duration and its reads per second, ZooKeeper's requests per second
averaged over the checks (the server's ``mntr`` packet count), and the
latency of an ordinary read (a guard's first watch, a discovery read)
asked at the start of each check, behind its reads (``--background``:
the checks' reads asked in the background, behind the ordinary ones)::

    .venv/bin/python benchmarks/unpublishedcost.py --instances 3000
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time
from contextlib import ExitStack
from typing import Any

from common import load_average, machine, start_zookeeper, table
from twisted.internet import defer, task
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, DeferredList

from sentinel.unpublished import Unpublished
from sentinel.zk import CONNECTED, ZooKeeper

ROOT = "/sentinel"
reactor: Any = _reactor


def packets_received(host: str, port: int) -> int:
    """ZooKeeper's count of requests received (four-letter ``mntr``)."""
    with socket.create_connection((host, port), timeout=5.0) as conn:
        conn.sendall(b"mntr")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    for line in data.decode().splitlines():
        key, _, value = line.partition("\t")
        if key == "zk_packets_received":
            return int(value)
    raise RuntimeError("no zk_packets_received in mntr")


async def measure(reactor: Any, args: argparse.Namespace, hosts: str) -> list[str]:
    """Run the checks; one line per check."""
    zk = ZooKeeper(reactor, hosts, 10.0)
    zk.start()
    while zk.state != CONNECTED:
        await task.deferLater(reactor, 0.05, lambda: None)
    names = [f"i{i:05d}" for i in range(args.instances)]
    lines = []
    took_each: list[float] = []
    # The reads of the check under way, all asked in one turn.
    reads: list[Deferred[Any]] = []

    def exists(path: str) -> Deferred[Any]:
        d = zk.exists(path, background=args.background)
        reads.append(d)
        return d

    unpublished = Unpublished(
        reactor,
        exists,
        lambda name: f"{ROOT}/instances/{name}",
        lambda: args.every,
        lambda gone: lines.append(f"missing: {len(gone)}"),
    )
    host, port = hosts.split(":")
    before = packets_received(host, int(port))
    started = time.monotonic()
    unpublished.watch(names)
    for _ in range(args.checks):
        while not reads:
            await task.deferLater(reactor, 0.005, lambda: None)
        t0 = time.monotonic()
        check = DeferredList(list(reads), consumeErrors=True)
        reads.clear()
        await zk.exists(f"{ROOT}/instances/{names[-1]}")
        ordinary = time.monotonic() - t0
        await check
        took = time.monotonic() - t0
        took_each.append(took)
        lines.append(
            f"{took:.2f} s ({args.instances / took:.0f} reads/s),"
            f" an ordinary read behind them {ordinary * 1000:.0f} ms,"
            f" load {load_average()}"
        )
    elapsed = time.monotonic() - started
    after = packets_received(host, int(port))
    unpublished.stop()
    await zk.stop(5.0)
    lines.append(
        f"ZooKeeper: {(after - before) / elapsed:.0f} requests/s over"
        f" {elapsed:.0f} s ({after - before} requests);"
        f" check p50 {statistics.median(took_each):.2f} s"
    )
    return lines


def main() -> None:
    """Parse, start ZooKeeper, make the nodes, measure, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=3000)
    parser.add_argument("--every", type=float, default=12.0)
    parser.add_argument("--checks", type=int, default=4)
    parser.add_argument(
        "--background", action="store_true", help="the checks' reads in the background"
    )
    args = parser.parse_args()
    print(machine())
    with ExitStack() as started:
        zookeeper, client = start_zookeeper(started)
        client.ensure_path(f"{ROOT}/instances")
        for start in range(0, args.instances, 500):
            tx = client.transaction()
            for i in range(start, min(start + 500, args.instances)):
                tx.create(f"{ROOT}/instances/i{i:05d}", b"{}")
            tx.commit()
        rows: list[str] = []

        done = defer.ensureDeferred(measure(reactor, args, zookeeper.hosts))
        done.addCallback(rows.extend)
        done.addErrback(lambda failure: rows.append(failure.getTraceback()))
        done.addBoth(lambda _: reactor.stop())
        reactor.run()
        print(
            table(
                [(f"check {i + 1}", line) for i, line in enumerate(rows[:-1])]
                + [("in all", rows[-1])],
                f"{args.instances} exists every {args.every:g} s",
            )
        )


if __name__ == "__main__":
    main()

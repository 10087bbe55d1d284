"""
A name that moves to another address, as a DNS failover moves it
(ElastiCache, Azure Cache, a Consul-served name): one agent watching one
instance by host name, ``fall`` 2, its name server (`hostiledns.NameServer`)
answering 127.0.0.21 until the move, then 127.0.0.22; a real redis-server
on each address, one port.

- ``alive``: at the move, the redis-server at .21 becomes a replica of
  the one at .22 (``REPLICAOF``: an old primary demoted, still running);
- ``dies``: at the move, the redis-server at .21 is killed (SIGKILL: its
  connections reset, new ones refused);
- ``stops``: at the move, the redis-server at .21 is stopped (SIGSTOP: a
  host gone silent; its kernel still completes connects into the backlog).

It samples the agent's ``/instances/moving`` (the data it publishes, and
the address it checks) every 0.1 s from the move on, and prints for each
case and checkout: the seconds from the move until the instance was
checked at .22 and published ``up`` with .22's role (``master``); the
seconds it was published with .21's role (``slave``) meanwhile; the checks
that failed; the ``down`` published (samples, and lines in the log); the
lookups the name server answered.

    .venv/bin/python benchmarks/readdress.py [--cases alive,dies] [--ttl 5] \\
        [--reconnect-every 60] [--runs 1] \\
        [--checkout before=PATH --checkout after=PATH]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    LOOPBACK,
    Agent,
    add_checkout_option,
    checkouts_of,
    commit_of,
    free_port,
    load_average,
    machine,
    stop_on_sigterm,
)
from hostiledns import NameServer
from twisted.names import dns

from tests.servers import RedisServer

CASES = ("alive", "dies", "stops")
OLD, NEW = "127.0.0.21", "127.0.0.22"
NAME = "moving.readdress.test"
# Seconds the agent checks the old address before the move, and at most
# after it; the new state must hold this long to count as reached.
SETTLE = 6.0
HOLD = 3.0


class MovingName(NameServer):
    """`NameServer` answering one A record, `address`, with `ttl`."""

    def __init__(self, ttl: int) -> None:
        self.address = OLD
        self.ttl = ttl
        super().__init__("plain", 0.0)

    def answers(self, data: bytes, over_udp: bool) -> list[bytes]:
        """One A record of the address now, none to AAAA."""
        query = dns.Message()
        try:
            query.fromStr(data)
        except (EOFError, ValueError):
            return []
        if not query.queries:
            return []
        question = query.queries[0]
        reply = dns.Message(id=query.id, answer=1, recDes=query.recDes, recAv=1)
        reply.queries = [question]
        if question.type == dns.A:
            record = dns.Record_A(self.address, self.ttl)
            reply.answers = [
                dns.RRHeader(question.name.name, dns.A, dns.IN, self.ttl, record)
            ]
            self.names[self.address] += 1
        return [reply.toStr()]


def command(server: RedisServer, host: str, *words: str) -> bytes:
    """One command to `server` at `host`, its reply's first line."""
    with socket.create_connection((host, server.port), timeout=5) as s:
        s.sendall(
            b"*%d\r\n" % len(words)
            + b"".join(b"$%d\r\n%s\r\n" % (len(w), w.encode()) for w in words)
        )
        return s.recv(4096).split(b"\r\n", 1)[0]


def config_text(args: argparse.Namespace, port: int, dns_port: int) -> str:
    """The agent's config: the one instance by name, ``fall`` 2."""
    return "\n".join(
        [
            'agent_id = "readdress"',
            "interval = 1.0",
            "timeout = 0.5",
            "rise = 2",
            f"fall = {args.fall}",
            f"reconnect_every = {args.reconnect_every}",
            "",
            "[dns]",
            f'nameservers = ["{LOOPBACK}:{dns_port}"]',
            f'hosts_file = "{args.hosts_file}"',
            "",
            "[[redis]]",
            'name = "moving"',
            f'host = "{NAME}"',
            f"port = {port}",
            "",
        ]
    )


def run_case(
    workdir: Path, case: str, checkout: tuple[str, Path], args: argparse.Namespace
) -> dict[str, Any]:
    """One agent of `checkout` through one move."""
    with ExitStack() as started:
        port = free_port()
        old, new = (
            RedisServer(port=port, extra_args=["--bind", host]) for host in (OLD, NEW)
        )
        for server in (old, new):
            started.callback(server.stop)
            server.start()
        names = MovingName(args.ttl)
        started.callback(names.stop)
        label, path = checkout
        agent = Agent(
            workdir,
            config_text(args, port, names.port),
            label=f"{case}-{label}",
            pythonpath=path,
        )
        started.callback(agent.stop)
        agent.wait_ready()
        time.sleep(SETTLE)
        before = agent.get("/instances/moving")
        asked_before = sum(names.names.values())
        # The move: the answer changes, and the old server goes, at once.
        names.address = NEW
        if case == "alive":
            command(old, OLD, "REPLICAOF", NEW, str(port))
        elif case == "dies":
            old.kill()
        else:
            old.pause()
            started.callback(old.resume)
        moved = time.monotonic()
        reached = old_role_seconds = None
        down_samples = samples = 0
        old_role = 0.0
        last = moved
        while time.monotonic() - moved < args.window:
            time.sleep(0.1)
            now = time.monotonic()
            seen = agent.get("/instances/moving")
            samples += 1
            if seen.get("status") == "down":
                down_samples += 1
            if seen.get("role") == "slave":
                old_role += now - last
            last = now
            good = (
                seen.get("address") == NEW
                and seen.get("status") == "up"
                and seen.get("role") == "master"
            )
            if not good:
                reached = None
            elif reached is None:
                reached = now - moved
            elif now - moved - reached >= HOLD:
                break
        old_role_seconds = old_role
        after = agent.get("/instances/moving")
        log = agent.log.read_text()
        return {
            "case": f"{case} at {label}",
            "load": load_average(),
            "reached": reached,
            "old_role": old_role_seconds,
            "failed": after["failures"] - before["failures"],
            "checks": after["checks"] - before["checks"],
            "down_samples": down_samples,
            "samples": samples,
            "downs_logged": log.count(" is down (was up)"),
            "moves_logged": log.count(" now resolves to "),
            "lookups": sum(names.names.values()) - asked_before,
            "error": after.get("error"),
        }


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The figures, one paragraph per case and checkout."""
    lines = [
        machine(),
        f"TTL {args.ttl} s, fall {args.fall}, reconnect_every"
        f" {args.reconnect_every:g} s, window {args.window:g} s;"
        f" checkouts: {', '.join(f'{lb} {commit_of(p)}' for lb, p in args.checkouts)}",
        "",
    ]
    for row in rows:
        reached = row["reached"]
        lines += [
            f"{row['case']} (load {row['load']}):",
            "  at the new address, up, its role: "
            + ("not within the window" if reached is None else f"{reached:.1f} s")
            + f" after the move; old role published {row['old_role']:.1f} s",
            f"  checks failed {row['failed']} of {row['checks']}; down in"
            f" {row['down_samples']} of {row['samples']} samples,"
            f" {row['downs_logged']} down line(s) in the log;"
            f" move lines {row['moves_logged']}; lookups {row['lookups']}",
            f"  error at the end: {row['error']}",
            "",
        ]
    return "\n".join(lines)


def main() -> int:
    """Parse the options, run each case with each checkout, print."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--cases", default=",".join(CASES), help="comma-separated (all)")
    add("--ttl", type=int, default=5, help="the answer's TTL, seconds (5)")
    add("--fall", type=int, default=2, help="the agent's fall (2)")
    add("--reconnect-every", type=float, default=60.0, help="seconds (60)")
    add("--window", type=float, default=75.0, help="seconds after the move (75)")
    add("--runs", type=int, default=1, help="runs of each case (1)")
    add_checkout_option(parser)
    args = parser.parse_args()
    args.checkouts = checkouts_of(parser, args.checkout)
    args.cases = args.cases.split(",")
    if not set(args.cases) <= set(CASES):
        parser.error(f"--cases takes {', '.join(CASES)}")
    stop_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-readdress-"))
    args.hosts_file = workdir / "hosts"
    args.hosts_file.write_text("")
    try:
        rows = [
            run_case(workdir, case, checkout, args)
            for _ in range(args.runs)
            for case in args.cases
            for checkout in args.checkouts
        ]
    except BaseException:
        print(f"logs kept in {workdir}", file=sys.stderr)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    print(report(rows, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

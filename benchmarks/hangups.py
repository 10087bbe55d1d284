"""
Redis servers that hang up after every reply, beside healthy ones: which
of them the agent publishes down, and whether the servers or the agent
were slow.

``tests/hostile.py``'s ``hangup`` mode answers a check's commands and
closes the connection ``--after`` seconds after its last reply (a proxy
with a short idle timeout): every check connects again, as the
once-a-second rule allows at a 1 s interval. Each scene runs one agent
(1 s interval, 0.5 s timeout, rise 2, fall 3) on ``--hangups`` such
listeners (plain or TLS, served by ``--processes`` server processes, so
that one process's own scheduling is not the agent's fault) and
``--healthy`` instances on four redis-servers, for ``--duration``
seconds. Meanwhile this script checks a sample of the listeners itself
(``--sample`` a second: connect, PING, read; over TLS too), so that a
server's own slowness is measured apart from the agent's. It prints, per
scene, the hang-ups down at the end and ever down, their failed checks
and errors, the healthy instances' failed checks, the agent's CPU and
open fds, the pacer's rate cuts, and the sample's PING times::

    .venv/bin/python benchmarks/hangups.py --kinds plain,tls --after 0,0.05,0.3 \\
        [--hangups 300] [--healthy 300] [--checkout before=PATH ...] [--runs 1] \\
        [--keep]

With ``--keep`` the agents' logs are kept (their directory is printed).
"""

from __future__ import annotations

import argparse
import random
import shutil
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import psutil
from common import (
    LOOPBACK,
    Agent,
    Instance,
    add_checkout_option,
    agent_config,
    check_choices,
    load_average,
    machine,
    percentile,
    rows_in_turns,
    start_redis_servers,
    table,
)

from tests.certs import CertificateFiles, make_certificates
from tests.servers import HostileServers

KINDS = ("plain", "tls")
# The agent's timeout: a sampled PING slower than this the agent would
# have timed out too.
TIMEOUT = 0.5


def parse_args() -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--kinds", default="plain,tls", help="plain,tls (both)")
    add("--after", default="0,0.05,0.3", help="seconds to a hang-up, comma-separated")
    add("--hangups", type=int, default=300, help="hang-up listeners (300)")
    add("--healthy", type=int, default=300, help="healthy instances (300)")
    add("--processes", type=int, default=4, help="server processes (4)")
    add("--duration", type=float, default=20.0, help="seconds per scene (20)")
    add("--sample", type=int, default=20, help="listeners pinged a second (20)")
    add("--runs", type=int, default=1, help="runs of each checkout (1)")
    add("--keep", action="store_true", help="keep the agents' logs")
    add_checkout_option(parser)
    args = parser.parse_args()
    check_choices(parser, "--kinds", args.kinds, KINDS)
    args.kinds = args.kinds.split(",")
    args.after = [float(a) for a in args.after.split(",")]
    return parser, args


class Sampler(threading.Thread):
    """
    Pings `sample` random listeners of `ports` a second, each on a new
    connection as the agent's checks do, and keeps each PING's time from
    the connect to ``+PONG`` (None when none came within 2 s).
    """

    def __init__(self, ports: list[int], sample: int, tls: ssl.SSLContext | None):
        super().__init__(daemon=True)
        self.ports, self.sample, self.tls = ports, sample, tls
        self.times: list[float | None] = []
        self.stopping = threading.Event()

    def ping(self, port: int) -> float | None:
        began = time.monotonic()
        try:
            with socket.create_connection((LOOPBACK, port), timeout=2.0) as raw:
                sock = (
                    raw
                    if self.tls is None
                    else self.tls.wrap_socket(raw, server_hostname="localhost")
                )
                sock.sendall(b"*1\r\n$4\r\nPING\r\n")
                if not sock.recv(64).startswith(b"+PONG"):
                    return None
        except OSError:
            return None
        return time.monotonic() - began

    def run(self) -> None:
        while not self.stopping.wait(1.0):
            for port in random.sample(self.ports, min(self.sample, len(self.ports))):
                self.times.append(self.ping(port))


def scene(
    args: argparse.Namespace,
    workdir: Path,
    certs: CertificateFiles,
    kind: str,
    after: float,
    checkout: Path,
    label: str,
) -> list[tuple[str, str]]:
    """One agent of `checkout` on the hang-ups of `kind` closing `after` s."""
    tls = kind == "tls"
    with ExitStack() as started:
        healthy = start_redis_servers(4, started)
        share = -(-args.hangups // args.processes)
        servers = []
        for first in range(0, args.hangups, share):
            count = min(share, args.hangups - first)
            server = HostileServers(
                [("hangup", tls)] * count,
                certs,
                options=["--hangup-after", str(after)],
            )
            started.callback(server.stop)
            servers.append(server)
        ports = [port for server in servers for port in server.ports]
        tables = [
            f'[[redis]]\nname = "hangup{n}"\nhost = "{LOOPBACK}"\nport = {port}\n'
            + (f'tls = true\nca_file = "{certs.ca_file}"\n' if tls else "")
            for n, port in enumerate(ports)
        ]
        config = agent_config(
            [
                Instance(f"healthy{n}", healthy[n % len(healthy)].port)
                for n in range(args.healthy)
            ]
        )
        agent = Agent(
            workdir,
            config + "\n" + "\n".join(tables),
            label=f"{label}-{kind}-{after:g}",
            pythonpath=checkout,
        )
        started.callback(agent.stop)
        agent.wait_ready()
        context = None
        if tls:
            context = ssl.create_default_context(cafile=certs.ca_file)
        sampler = Sampler(ports, args.sample, context)
        sampler.start()
        started.callback(sampler.stopping.set)
        cpu_start = agent.cpu_seconds()
        servers_cpu = [psutil.Process(s.child.pid) for s in servers]
        servers_start = sum(sum(p.cpu_times()[:2]) for p in servers_cpu)
        ever_down: set[str] = set()
        fds = 0
        began = time.monotonic()
        while time.monotonic() - began < args.duration:
            time.sleep(1.0)
            for name, row in agent.instances().items():
                if name.startswith("hangup") and row["status"] == "down":
                    ever_down.add(name)
            fds = max(fds, agent.process.num_fds())
        cpu = agent.cpu_seconds() - cpu_start
        servers_used = sum(sum(p.cpu_times()[:2]) for p in servers_cpu) - servers_start
        sampler.stopping.set()
        sampler.join()
        rows = agent.instances()
        stats = agent.get("/debug/stats")
        load = load_average()
    hangups = [r for n, r in rows.items() if n.startswith("hangup")]
    well = [r for n, r in rows.items() if n.startswith("healthy")]
    errors = Counter(r["error"] for r in hangups if r["error"])
    seen = [t for t in sampler.times if t is not None]
    slow = sum(1 for t in sampler.times if t is None or t > TIMEOUT)
    name = f"{label} {kind} after {after:g} s"
    return [
        (f"{name}: load", load),
        (
            f"{name}: hang-ups down at the end, ever",
            f"{sum(r['status'] == 'down' for r in hangups)},"
            f" {len(ever_down)} of {len(hangups)}",
        ),
        (
            f"{name}: hang-ups' failed checks",
            f"{sum(r['failures'] for r in hangups)} of"
            f" {sum(r['checks'] for r in hangups)}",
        ),
        (f"{name}: their errors at the end", str(dict(errors.most_common(4)))),
        (
            f"{name}: healthy failed checks",
            f"{sum(r['failures'] for r in well)} of {sum(r['checks'] for r in well)}",
        ),
        (
            f"{name}: agent CPU, fds at most, rate cuts",
            f"{cpu:.1f} s, {fds}, {stats['startup']['rate_cuts']}",
        ),
        (
            f"{name}: servers' CPU; sampled PINGs p50/p99, over {TIMEOUT} s",
            f"{servers_used:.1f} s; "
            + (
                f"{1000 * percentile(seen, 50):.0f} / {1000 * percentile(seen, 99):.0f}"
                f" ms, {slow} of {len(sampler.times)}"
                if seen
                else f"none of {len(sampler.times)} answered"
            ),
        ),
    ]


def main() -> int:
    """Every scene of every checkout, in turns; the figures as a table."""
    parser, args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-hangups-"))
    certs = make_certificates(workdir)

    def run(
        args: argparse.Namespace, label: str, path: Path, number: int
    ) -> list[tuple[str, str]]:
        rows = []
        for kind in args.kinds:
            for after in args.after:
                rows += scene(args, workdir, certs, kind, after, path, label)
        return rows

    try:
        rows = rows_in_turns(parser, args, run)
    except BaseException:
        print(f"logs kept in {workdir}", file=sys.stderr)
        raise
    if args.keep:
        print(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(machine())
    print(table(rows, "Hang-ups after every reply"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""
What a hostile name server costs the agent, and what a user sees: one agent
watching ``--named`` instances configured by host name (looked up from a
name server of this script's, ``[dns] nameservers``) and ``--plain``
instances configured by address, all on one real redis-server.

The name server answers every A query of the named instances in one of
these modes (AAAA queries get an empty answer):

- ``many``: 1,000 A records, the first 127.0.0.1; over UDP cut to what fits
  in 512 bytes with the TC bit set, in full over TCP (a resolver that
  follows TC asks again over TCP);
- ``hugeudp``: the same 1,000 records in one 16 KB UDP answer, not cut;
- ``tconly``: over UDP, TC set and no record; over TCP, one A record;
- ``tcpstall``: over UDP, TC set and no record; over TCP, the query read
  and never answered, the connection held open;
- ``chain``: a chain of 100 CNAMEs, then the A record;
- ``loop``: two CNAMEs naming each other;
- ``ttl0``: one A record, TTL 0;
- ``wrongid``: the answer under another query id;
- ``wrongquestion``: the query's id, but the question and the A record of
  another name;
- ``twice``: every answer sent twice;
- ``slow``: every answer ``--delay`` seconds after its query (1.9 s: just
  under the 2 s lookup bound);
- ``nonlocal``: A 224.0.0.1, a multicast address: not loopback, and a TCP
  connect to it fails in the kernel without a packet leaving the host;
- ``rotate``: one A record, TTL 0, another address at every query of a
  name (127.0.0.1, 127.0.0.2 in turn: the redis-server listens on both);
- ``rotatedead``: the same, every other answer 127.0.0.3, where nothing
  listens (a connect is refused);
- ``refusedfirst``: 127.0.0.3 (refused), then 127.0.0.1 (the redis-server);
- ``allrefused``: 127.0.0.3 and 127.0.0.4, both refused;
- ``manyrefused``: 600 A records in 127.1.0.0/16, all refused (over UDP
  cut to what fits, TC set);
- ``aaaadead``: A 127.0.0.1, and to an AAAA query ::1, where nothing
  listens (a host whose IPv6 is broken);
- ``deadfirst``: 127.0.0.5, a host that is down (a listener on the
  redis-server's port that never accepts, its backlog full: SYNs go
  unanswered), then 127.0.0.1 (the redis-server);
- ``alldead``: 127.0.0.5 and 127.0.0.6, both down so;
- ``v4refused6live``: A 127.0.0.3 and 127.0.0.4 (both refused), AAAA ::1,
  where the redis-server also listens (a dual-stack host whose IPv4 is
  gone);
- ``v4dead6live``: A 127.0.0.5 and 127.0.0.6 (both down, as in
  ``alldead``), AAAA ::1 (the redis-server);
- ``aaaadropped``: A 127.0.0.1, AAAA queries never answered (a middlebox
  that drops them);
- ``pointerloop``: the query's id and question, and one A record
  (127.0.0.1) whose owner name is a compression pointer to itself.

``--watch`` samples the named instances' statuses every 0.25 s from when
the agent first answers HTTP: how many samples said ``down``, and when
every one was ``up`` first (the modes with a live address) or ``down``
(``alldead``). ``--freeze-at`` stops the redis-server (SIGSTOP) that many
seconds into the run, and the watch says when every named instance was
down after it (the detection bound is ``interval`` x ``fall`` +
``timeout``: 3.5 s here).

``--connects`` counts the agent's TCP connects by address (``strace``
attached to it for the run; it slows the agent), to see how many each
check of a name with several addresses costs.

``--reconnect-every`` sets the agent's ``reconnect_every`` (the rotating
modes move an instance at a connect only: a renewal, or a reconnect
after a failure).

For each mode it prints the agent's RSS (most), CPU over the run, the
reactor's lateness (``/debug/stats``), the plain instances' checks and
failures (they must all be on time), the named instances' statuses and
errors, ``/healthz``, and what the name server was asked (UDP queries, TCP
connections).

    .venv/bin/python benchmarks/hostiledns.py [--modes many,slow] \\
        [--named 100] [--plain 20] [--duration 30] [--delay 1.9] \\
        [--checkout before=PATH --checkout after=PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    LOOPBACK,
    Agent,
    RedisServer,
    add_checkout_option,
    checkouts_of,
    commit_of,
    free_port,
    load_average,
    machine,
    stop_on_sigterm,
)
from twisted.names import dns

from tests.servers import black_hole

MODES = (
    "many",
    "hugeudp",
    "tconly",
    "tcpstall",
    "chain",
    "loop",
    "ttl0",
    "wrongid",
    "wrongquestion",
    "twice",
    "slow",
    "nonlocal",
    "rotate",
    "rotatedead",
    "refusedfirst",
    "allrefused",
    "manyrefused",
    "aaaadead",
    "deadfirst",
    "alldead",
    "v4refused6live",
    "v4dead6live",
    "aaaadropped",
    "pointerloop",
)
# The addresses each rotating mode answers in turn, per name.
ROTATIONS = {
    "rotate": ("127.0.0.1", "127.0.0.2"),
    "rotatedead": ("127.0.0.1", "127.0.0.3"),
}
# The addresses the redis-server listens on.
REDIS_BIND = ("127.0.0.1", "127.0.0.2")
# Modes whose AAAA answer is ::1, and where the redis-server listens there.
LIVE_IPV6 = ("v4refused6live", "v4dead6live")
# Hosts that are down: on the redis-server's port, SYNs go unanswered.
DEAD_HOSTS = ("127.0.0.5", "127.0.0.6")
DOMAIN = "hostile.test"
UDP_LIMIT = 512
MIB = 2**20


def records_for(mode: str, name: bytes, asked: int = 0) -> list[dns.RRHeader]:
    """
    The answer section `mode` gives an A query for `name`, asked `asked`
    times before.
    """

    def a(owner: bytes, address: str, ttl: int = 60) -> dns.RRHeader:
        return dns.RRHeader(owner, dns.A, dns.IN, ttl, dns.Record_A(address, ttl))

    def cname(owner: bytes, target: bytes) -> dns.RRHeader:
        return dns.RRHeader(owner, dns.CNAME, dns.IN, 60, dns.Record_CNAME(target, 60))

    if mode in ("many", "hugeudp"):
        return [a(name, "127.0.0.1")] + [
            a(name, f"127.0.{i // 250 + 1}.{i % 250 + 1}") for i in range(999)
        ]
    if mode == "chain":
        links = [name] + [b"c%d.%s" % (i, name) for i in range(100)]
        return [cname(x, y) for x, y in zip(links, links[1:], strict=False)] + [
            a(links[-1], "127.0.0.1")
        ]
    if mode == "loop":
        other = b"loop." + name
        return [cname(name, other), cname(other, name)]
    if mode == "ttl0":
        return [a(name, "127.0.0.1", ttl=0)]
    if mode == "nonlocal":
        return [a(name, "224.0.0.1")]
    if mode == "refusedfirst":
        return [a(name, "127.0.0.3"), a(name, "127.0.0.1")]
    if mode == "allrefused":
        return [a(name, "127.0.0.3"), a(name, "127.0.0.4")]
    if mode == "deadfirst":
        return [a(name, DEAD_HOSTS[0]), a(name, "127.0.0.1")]
    if mode in ("alldead", "v4dead6live"):
        return [a(name, host) for host in DEAD_HOSTS]
    if mode == "v4refused6live":
        return [a(name, "127.0.0.3"), a(name, "127.0.0.4")]
    if mode == "manyrefused":
        return [a(name, f"127.1.{i // 250}.{i % 250 + 1}") for i in range(600)]
    if mode in ROTATIONS:
        addresses = ROTATIONS[mode]
        return [a(name, addresses[asked % len(addresses)], ttl=0)]
    return [a(name, "127.0.0.1")]


def pointer_loop(reply: dns.Message) -> bytes:
    """
    `reply` without its answers, then one A record (127.0.0.1) whose owner
    name is a compression pointer to itself.
    """
    reply.answers = []
    head = bytearray(reply.toStr())
    head[6:8] = (1).to_bytes(2, "big")  # ANCOUNT
    offset = len(head)
    owner = (0xC000 | offset).to_bytes(2, "big")
    record = owner + struct.pack("!HHIH", dns.A, dns.IN, 60, 4) + bytes([127, 0, 0, 1])
    return bytes(head) + record


class NameServer:
    """The hostile name server, UDP and TCP on one loopback port, in a thread."""

    def __init__(self, mode: str, delay: float) -> None:
        self.mode = mode
        self.delay = delay
        self.udp_queries = 0
        self.tcp_connections = 0
        self.tcp_open = 0
        self.tcp_open_most = 0
        self.names: Counter[str] = Counter()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(started,), daemon=True, name="hostile-dns"
        )
        self._thread.start()
        started.wait(10)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._listen())
        started.set()
        self._loop.run_forever()

    async def _listen(self) -> None:
        server = self

        class UDP(asyncio.DatagramProtocol):
            def connection_made(self, transport: Any) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, address: Any) -> None:
                server.udp_queries += 1
                if server.mode == "aaaadropped" and _asks(data, dns.AAAA):
                    return
                for answer in server.answers(data, over_udp=True):
                    if server.mode == "slow":
                        server._loop.call_later(
                            server.delay, self.transport.sendto, answer, address
                        )
                    else:
                        self.transport.sendto(answer, address)

        async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
            server.tcp_connections += 1
            server.tcp_open += 1
            server.tcp_open_most = max(server.tcp_open_most, server.tcp_open)
            try:
                size = int.from_bytes(await reader.readexactly(2), "big")
                query = await reader.readexactly(size)
                if server.mode == "tcpstall":
                    # Held until the agent closes it.
                    await reader.read()
                for answer in server.answers(query, over_udp=False):
                    writer.write(len(answer).to_bytes(2, "big") + answer)
                await writer.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                server.tcp_open -= 1
                writer.close()

        while True:
            self.port = free_port()
            try:
                self._tcp = await asyncio.start_server(tcp, LOOPBACK, self.port)
            except OSError:
                continue
            try:
                self._udp, _ = await self._loop.create_datagram_endpoint(
                    UDP, local_addr=(LOOPBACK, self.port)
                )
            except OSError:
                self._tcp.close()
                continue
            return

    def answers(self, data: bytes, over_udp: bool) -> list[bytes]:
        """What the mode sends back for the query `data`."""
        query = dns.Message()
        try:
            query.fromStr(data)
        except (EOFError, ValueError):
            return []
        if not query.queries:
            return []
        question = query.queries[0]
        name = question.name.name.decode("ascii", "replace")
        reply = dns.Message(id=query.id, answer=1, recDes=query.recDes, recAv=1)
        reply.queries = [question]
        if question.type == dns.A:
            reply.answers = records_for(self.mode, question.name.name, self.names[name])
        elif question.type == dns.AAAA and self.mode in ("aaaadead", *LIVE_IPV6):
            record = dns.Record_AAAA("::1", 60)
            reply.answers = [
                dns.RRHeader(question.name.name, dns.AAAA, dns.IN, 60, record)
            ]
        self.names[name] += 1
        if self.mode == "wrongid":
            reply.id = (query.id + 1) % 65536
        elif self.mode == "wrongquestion":
            other = b"other." + question.name.name
            reply.queries = [dns.Query(other, question.type, dns.IN)]
            reply.answers = records_for("plain", other) if reply.answers else []
        elif self.mode in ("tconly", "tcpstall") and over_udp:
            reply.answers = []
            reply.trunc = 1
        if over_udp and self.mode != "hugeudp":
            encoded = reply.toStr()
            while len(encoded) > UDP_LIMIT:
                # Cut as a name server does: whole records, TC set.
                reply.answers = reply.answers[: len(reply.answers) * 3 // 4]
                reply.trunc = 1
                encoded = reply.toStr()
        encoded = reply.toStr()
        if self.mode == "pointerloop" and question.type == dns.A:
            encoded = pointer_loop(reply)
        return [encoded, encoded] if self.mode == "twice" else [encoded]

    def stop(self) -> None:
        """Stop serving and end the thread."""

        def close() -> None:
            self._udp.close()
            self._tcp.close()
            self._loop.stop()

        self._loop.call_soon_threadsafe(close)
        self._thread.join(10)


def _asks(data: bytes, record_type: int) -> bool:
    """Whether the query `data` asks for `record_type`."""
    query = dns.Message()
    try:
        query.fromStr(data)
    except (EOFError, ValueError):
        return False
    return any(question.type == record_type for question in query.queries)


def config_text(args: argparse.Namespace, redis_port: int, dns_port: int) -> str:
    """The agent's config: named and plain instances on one redis-server."""
    lines = [
        'agent_id = "hostiledns"',
        "interval = 1.0",
        "timeout = 0.5",
        *(
            [f"reconnect_every = {args.reconnect_every}"]
            if args.reconnect_every
            else []
        ),
        "",
        "[dns]",
        f'nameservers = ["{LOOPBACK}:{dns_port}"]',
        f'hosts_file = "{args.hosts_file}"',
        "",
    ]
    hosts = [(f"named{i}", f"n{i}.{DOMAIN}") for i in range(args.named)]
    hosts += [(f"plain{i}", LOOPBACK) for i in range(args.plain)]
    for name, host in hosts:
        lines += [
            "[[redis]]",
            f'name = "{name}"',
            f'host = "{host}"',
            f"port = {redis_port}",
            "",
        ]
    return "\n".join(lines)


def run_mode(
    workdir: Path, mode: str, checkout: tuple[str, Path], args: argparse.Namespace
) -> dict[str, Any]:
    """One agent of `checkout` against the name server in `mode`."""
    with ExitStack() as started:
        bind = [*REDIS_BIND, "::1"] if mode in LIVE_IPV6 else REDIS_BIND
        redis = RedisServer(extra_args=["--bind", *bind]).start()
        started.callback(redis.stop)
        names = NameServer(mode, args.delay)
        started.callback(names.stop)
        if mode in ("deadfirst", "alldead", "v4dead6live"):
            for host in DEAD_HOSTS:
                black_hole(host, redis.port, started.callback)
        label, path = checkout
        agent = Agent(
            workdir,
            config_text(args, redis.port, names.port),
            label=f"{mode}-{label}",
            pythonpath=path,
        )
        started.callback(agent.stop)
        agent.wait_ready()
        watch = Watch(agent) if args.watch else None
        traced = workdir / f"{mode}-{label}.connects"
        if args.connects:
            tracer = subprocess.Popen(
                ["strace", "-qq", "-p", str(agent.pid), "-e", "trace=connect",
                 "-o", str(traced)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            started.callback(_stop_tracer, tracer)
        cpu_start = agent.cpu_seconds()
        rss_most = agent.rss_bytes()
        fds_most = agent.process.num_fds()
        began = time.monotonic()
        while time.monotonic() - began < args.duration:
            rss_most = max(rss_most, agent.rss_bytes())
            if watch is not None:
                if args.freeze_at is not None and watch.frozen_at is None:
                    if time.monotonic() - began >= args.freeze_at:
                        redis.pause()
                        watch.frozen_at = time.monotonic() - began
                watch.sample(began)
            time.sleep(0.25 if watch is not None else 0.5)
            fds_most = max(fds_most, agent.process.num_fds())
        cpu = agent.cpu_seconds() - cpu_start
        connects: Counter[str] = Counter()
        if args.connects:
            _stop_tracer(tracer)  # Its file complete before it is read.
            connects = _connects(traced, redis.port)
        stats = agent.get("/debug/stats")
        instances = agent.instances()
        status_code, health = agent.healthz()
        named = [v for k, v in instances.items() if k.startswith("named")]
        plain = [v for k, v in instances.items() if k.startswith("plain")]
        return {
            "mode": f"{mode} at {label}",
            "load": load_average(),
            "rss_most": rss_most,
            "fds_most": fds_most,
            "moves_logged": agent.log.read_text().count(" now resolves to "),
            "downs_logged": agent.log.read_text().count(" is down (was up)"),
            "named_checks": sum(i["checks"] for i in named),
            "named_failures": sum(i["failures"] for i in named),
            "cpu": cpu,
            "stats": stats,
            "named_status": Counter(i.get("status") for i in named),
            "named_errors": Counter(
                re.sub(r"n\d+\." + DOMAIN, "NAME", str(i.get("error")))[:90]
                for i in named
            ),
            "plain_checks": sum(i["checks"] for i in plain),
            "plain_failures": sum(i["failures"] for i in plain),
            "healthz": (status_code, health.get("reasons")),
            "udp_queries": names.udp_queries,
            "tcp_connections": names.tcp_connections,
            "tcp_open_most": names.tcp_open_most,
            "names_asked": len(names.names),
            "named_addresses": Counter(str(i.get("address")) for i in named),
            "connects": connects,
            "watch": watch,
        }


class Watch:
    """The named instances' statuses, sampled from the agent's start."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.samples = 0
        # Samples in which one named instance or more said down; the
        # named instances down at once, at most.
        self.down_samples = 0
        self.down_most = 0
        # Seconds into the run when every named one was first up, down;
        # when the redis-server was frozen, and every one down since.
        self.all_up: float | None = None
        self.all_down: float | None = None
        self.frozen_at: float | None = None
        self.down_since_frozen: float | None = None

    def sample(self, began: float) -> None:
        """One look at /instances."""
        statuses = [
            i.get("status")
            for name, i in self.agent.instances().items()
            if name.startswith("named")
        ]
        at = time.monotonic() - began
        self.samples += 1
        downs = statuses.count("down")
        if downs:
            self.down_samples += 1
            self.down_most = max(self.down_most, downs)
        if statuses and downs == len(statuses) and self.all_down is None:
            self.all_down = at
        if statuses and statuses.count("up") == len(statuses) and self.all_up is None:
            self.all_up = at
        if (
            self.frozen_at is not None
            and self.down_since_frozen is None
            and statuses
            and downs == len(statuses)
        ):
            self.down_since_frozen = at - self.frozen_at

    def summary(self) -> str:
        """What the samples saw."""

        def when(at: float | None) -> str:
            return "never" if at is None else f"{at:.2f} s"

        frozen = (
            ""
            if self.frozen_at is None
            else f"; frozen at {self.frozen_at:.2f} s, all down"
            f" {when(self.down_since_frozen)} after"
        )
        return (
            f"{self.samples} samples, {self.down_samples} with a named one down"
            f" ({self.down_most} at most); all up at {when(self.all_up)},"
            f" all down at {when(self.all_down)}{frozen}"
        )


def _stop_tracer(tracer: subprocess.Popen[bytes]) -> None:
    """Detach strace from the agent (by its PID), bounded."""
    tracer.terminate()
    try:
        tracer.wait(10)
    except subprocess.TimeoutExpired:
        tracer.kill()
        tracer.wait()


def _connects(traced: Path, port: int) -> Counter[str]:
    """
    The agent's connects to the redis-server's port, by address: each
    ``connect`` that starts one (EINPROGRESS; the one that completes it,
    or finds it refused, is the same connect).
    """
    if not traced.exists():
        return Counter()
    found = re.findall(
        rf'sin6?_port=htons\({port}\).*?inet_(?:addr\("|pton\(AF_INET6, ")'
        r'([^"]+)".*EINPROGRESS',
        traced.read_text(),
    )
    return Counter(found)


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """The figures, one paragraph per mode."""
    lines = [
        machine(),
        *(f"{label}: {commit_of(path)}" for label, path in args.checkouts),
        f"{args.named} named, {args.plain} plain instances, "
        f"{args.duration:g} s per mode",
        "",
    ]
    for row in rows:
        stats = row["stats"]
        startup = stats["startup"]
        lines += [
            f"{row['mode']} (load {row['load']}): RSS at most "
            f"{row['rss_most'] / MIB:.1f} MiB, CPU {row['cpu']:.2f} s, "
            f"tick lag max {startup['tick_lag_max_seconds']} s, lateness max "
            f"{startup['max_lateness_seconds']} s, tick completion max "
            f"{stats['tick_completion_seconds']['max']:.3f} s, "
            f"overruns {stats['overruns']}, open fds {stats['open_fds']} "
            f"(at most {row['fds_most']})",
            f"    plain: {row['plain_checks']} checks, {row['plain_failures']} failed;"
            f" named: {dict(row['named_status'])}, {row['named_checks']} checks,"
            f" {row['named_failures']} failed, {row['downs_logged']} went down,"
            f" {row['moves_logged']} move lines logged; dns {stats['dns']}",
            f"    name server: {row['udp_queries']} UDP queries, "
            f"{row['tcp_connections']} TCP connections "
            f"(at most {row['tcp_open_most']} open at once), "
            f"{row['names_asked']} names; /healthz {row['healthz']}",
        ]
        lines += [f"    {n} x {error}" for error, n in row["named_errors"].items()]
        lines.append(f"    named at: {dict(row['named_addresses'])}")
        if row["watch"] is not None:
            lines.append(f"    watched: {row['watch'].summary()}")
        if args.connects:
            connects = row["connects"]
            by_prefix = Counter(".".join(a.split(".")[:2]) for a in connects)
            lines.append(
                f"    connects: {sum(connects.values())} to {len(connects)} "
                f"addresses ({dict(connects.most_common(4))}; by /16: "
                f"{dict(by_prefix)}), {sum(connects.values()) / args.duration:.1f}/s"
            )
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    """Run every mode, print the figures, stop everything started."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--modes", default=",".join(MODES), help="comma-separated (all)")
    add("--named", type=int, default=100, help="instances by host name (100)")
    add("--plain", type=int, default=20, help="instances by address (20)")
    add("--duration", type=float, default=30.0, help="seconds per mode (30)")
    add("--delay", type=float, default=1.9, help="seconds, for slow (1.9)")
    add("--reconnect-every", type=float, help="the agent's reconnect_every")
    add("--connects", action="store_true", help="count connects (strace)")
    add("--watch", action="store_true", help="sample the named statuses")
    add("--freeze-at", type=float, help="SIGSTOP redis this many s in (--watch)")
    add_checkout_option(parser)
    args = parser.parse_args()
    args.checkouts = checkouts_of(parser, args.checkout)
    args.modes = args.modes.split(",")
    if not set(args.modes) <= set(MODES):
        parser.error(f"--modes takes {', '.join(MODES)}")
    stop_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-hostiledns-"))
    args.hosts_file = workdir / "hosts"
    args.hosts_file.write_text("")
    try:
        # Each checkout in turn for each mode, so that the load falls alike.
        rows = [
            run_mode(workdir, mode, checkout, args)
            for mode in args.modes
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

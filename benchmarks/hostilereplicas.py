"""
Hostile masters for replica discovery (``discover_replicas = true``): what
they cost one agent, and what it publishes.

One agent (interval 1 s, ``info_every = 1``) watches ``--healthy`` real
redis-server instances and one hostile fake master with discovery on,
publishing to a ZooKeeper of the script's own, for ``--duration`` seconds.
The fake speaks just enough RESP (PING, INFO, AUTH) and, by ``--mode``:

- ``rotate``: a master listing 200 replicas at fresh loopback ports at
  every INFO (nothing listens there: each is refused);
- ``answering``: a master listing 200 replicas at fixed ports, each of which
  the fake serves as a replica of it: the agent watches them (at most its
  cap) and publishes them;
- ``pingpong``: a failover played at every INFO: the master and its first
  replica swap roles (each naming the other its master) at every answer,
  and whichever says master lists 200 replicas at fresh ports;
- ``nohost``: a master listing replicas at addresses that name no one
  host (`NO_HOST`: the unspecified ones, which Linux connects to this
  host, and multicast and broadcast ones), each at the port of the real
  redis-server the healthy instances are on: a Redis whose replica says
  ``replica-announce-ip 0.0.0.0`` lists it so too. Printed at the end:
  each instance watched in the fake master's name, as ``/instances``
  gives it;
- ``aliases``: a master listing its own address and the real
  redis-server's in other forms (`ALIASES`: mapped into IPv6, which a
  connect reaches over IPv4, in upper case, not compressed), as
  ``nohost`` prints them;
- ``names``: a master listing its own address and the real
  redis-server's as a host name (`NAMES`: ``localhost``, which a real
  replica's ``replica-announce-ip`` may say) and in the forms
  ``inet_aton`` reads (``127.1``, ``2130706433``, ``0x7f.0.0.1``, and
  ``0``: 0.0.0.0), as ``nohost`` prints them;
- ``manynames``: a master listing `LISTED` host names at every INFO, new
  ones each time (each is looked up before it is judged: what that costs);
- ``latename``: a master listing one replica, itself, by a host name
  (`LATE_NAME`) that the agent cannot resolve at first (not in its hosts
  file, and its name server silent), then can: a third of the way
  through, the name goes into the agent's hosts file
  (``[dns] hosts_file``) as 127.0.0.1. Printed every 5 s: each instance
  watched in the fake master's name, and its status.

The agent's name server (``[dns] nameservers``) is a UDP socket of the
script's on loopback that never answers: a listed name not in the hosts
file waits for its lookup's bound, and no query leaves the host.

Printed every 5 s and at the end: the agent's RSS, open files, the
discovery and name lookup counters of ``/debug/stats``, the healthy
instances' checks and failures, ``/healthz``, and how many instance
nodes ZooKeeper holds.

    .venv/bin/python benchmarks/hostilereplicas.py --mode rotate \\
        [--healthy 20] [--duration 60]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
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
    ChildProcess,
    Instance,
    agent_config,
    load_average,
    start_redis_servers,
    start_zookeeper,
)

LISTED = 200
# What ``nohost`` lists: the addresses `sentinel.lookup.names_no_host`
# refuses in a name server's answer.
NO_HOST = (
    "0.0.0.0",
    "::",
    "::ffff:0.0.0.0",
    "224.0.0.1",
    "255.255.255.255",
    "ff02::1",
)


def info_reply(lines: list[str]) -> bytes:
    """An INFO replication bulk reply holding `lines`."""
    body = ("# Replication\r\n" + "\r\n".join(lines) + "\r\n").encode()
    return b"$%d\r\n%s\r\n" % (len(body), body)


# What ``aliases`` lists: 127.0.0.1 in other forms, each at the fake
# master's own port, then at the real redis-server's.
ALIASES = ("::ffff:127.0.0.1", "0:0:0:0:0:FFFF:7f00:1", "::FFFF:127.0.0.1")
# What ``names`` lists: 127.0.0.1 (and 0.0.0.0) as glibc reads them, each at
# the fake master's own port, then at the real redis-server's.
NAMES = ("localhost", "127.1", "2130706433", "0x7f.0.0.1", "0")
# What ``latename`` lists, at the fake master's own port.
LATE_NAME = "redis-m.test"


def master_info(ports: list[int], hosts: tuple[str, ...] = (LOOPBACK,)) -> bytes:
    """
    A master's INFO replication listing replicas at `ports`, at each of
    `hosts` in turn.
    """
    lines = ["role:master", f"connected_slaves:{len(ports)}"]
    lines += [
        f"slave{i}:ip={hosts[i % len(hosts)]},port={port},state=online,offset=1,lag=0"
        for i, port in enumerate(ports)
    ]
    return info_reply(lines)


def replica_info(master_port: int) -> bytes:
    """A replica's INFO replication naming a master at `master_port`."""
    return info_reply(
        [
            "role:slave",
            f"master_host:{LOOPBACK}",
            f"master_port:{master_port}",
            "master_link_status:up",
            "connected_slaves:0",
        ]
    )


def fresh_ports() -> list[int]:
    """`LISTED` loopback ports, chosen anew."""
    return random.sample(range(20000, 60000), LISTED)


async def serve(mode: str, master: socket.socket, extra: list[socket.socket]) -> None:
    """Serve the fake master on `master` (and, by mode, the rest on `extra`)."""
    master_port = master.getsockname()[1]
    ports = [s.getsockname()[1] for s in extra]
    answers = itertools.count()

    def info_for(port: int) -> bytes:
        if mode.startswith("nohost="):
            return master_info([int(mode[7:])] * len(NO_HOST), NO_HOST)
        for prefix, hosts in (("aliases=", ALIASES), ("names=", NAMES)):
            if mode.startswith(prefix):
                other = int(mode[len(prefix) :])
                listed = [master_port] * len(hosts) + [other] * len(hosts)
                return master_info(listed, hosts)
        if mode == "rotate":
            return master_info(fresh_ports())
        if mode == "latename":
            return master_info([master_port], (LATE_NAME,))
        if mode == "manynames":
            round_ = next(answers)
            hosts = tuple(f"r{i}-{round_}.invalid" for i in range(LISTED))
            return master_info([6379] * LISTED, hosts)
        if mode == "answering":
            return (
                master_info(ports) if port == master_port else replica_info(master_port)
            )
        # pingpong: the master and the first replica swap at every answer.
        turn = next(answers) % 2
        first = ports[0]
        listing = [first] + fresh_ports() if port == master_port else fresh_ports()
        if (port == master_port) == (turn == 0):
            return master_info(listing)
        return replica_info(first if port == master_port else master_port)

    def handler(port: int) -> Any:
        async def handle(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            try:
                while True:
                    line = await reader.readline()
                    if not line:
                        return
                    args = []
                    if line.startswith(b"*"):
                        for _ in range(int(line[1:])):
                            header = await reader.readline()
                            args.append(
                                (await reader.readexactly(int(header[1:]) + 2))[:-2]
                            )
                    else:
                        args = line.split()
                    name = args[0].upper() if args else b""
                    if name == b"PING":
                        writer.write(b"+PONG\r\n")
                    elif name == b"INFO":
                        writer.write(info_for(port))
                    elif name == b"AUTH":
                        writer.write(b"+OK\r\n")
                    else:
                        writer.write(b"-ERR unknown command\r\n")
                    await writer.drain()
            except (ConnectionError, asyncio.IncompleteReadError, ValueError):
                return
            finally:
                writer.close()

        return handle

    servers = [
        await asyncio.start_server(handler(s.getsockname()[1]), sock=s)
        for s in [master, *extra]
    ]
    await asyncio.gather(*(s.serve_forever() for s in servers))


def listener() -> socket.socket:
    """A listening socket on a free loopback port."""
    s = socket.socket()
    s.bind((LOOPBACK, 0))
    s.listen(64)
    return s


def fake_main(mode: str, fds: list[int]) -> None:
    """The fake's process: serve the inherited listeners until killed."""
    socks = [socket.socket(fileno=fd) for fd in fds]
    asyncio.run(serve(mode, socks[0], socks[1:]))


def nodes_under(client: Any, path: str) -> int:
    """How many children `path` has in ZooKeeper (0 if it is absent)."""
    return len(client.get_children(path)) if client.exists(path) else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--mode",
        choices=(
            "rotate",
            "answering",
            "pingpong",
            "nohost",
            "aliases",
            "names",
            "manynames",
            "latename",
        ),
        required=True,
    )
    parser.add_argument("--healthy", type=int, default=20)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--grace", type=float, default=60.0)
    parser.add_argument("--fake", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fake:
        fake_main(args.fake[0], [int(fd) for fd in args.fake[1:]])
        return
    with ExitStack() as started, tempfile.TemporaryDirectory() as tmp:
        zookeeper, client = start_zookeeper(started)
        redis = start_redis_servers(1, started)[0]
        listing = args.mode in ("nohost", "aliases", "names")
        count = LISTED + 1 if args.mode in ("answering", "pingpong") else 1
        served = f"{args.mode}={redis.port}" if listing else args.mode
        socks = [listener() for _ in range(count)]
        fds = [s.fileno() for s in socks]
        fake = ChildProcess(
            [sys.executable, __file__, "--mode", args.mode, "--fake", served,
             *map(str, fds)],
            log=Path(tmp) / "fake.log",
            pass_fds=fds,
        )  # fmt: skip
        started.callback(fake.stop)
        healthy = [Instance(f"ok-{i}", redis.port) for i in range(args.healthy)]
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind((LOOPBACK, 0))
        started.callback(silent.close)
        config = agent_config(healthy, zookeeper=zookeeper.hosts)
        config += f'\n[dns]\nnameservers = ["{LOOPBACK}:{silent.getsockname()[1]}"]\n'
        hosts = Path(tmp) / "hosts"
        if args.mode == "latename":
            hosts.write_text(f"{LOOPBACK} localhost\n")
            config += f'hosts_file = "{hosts}"\n'
        config += (
            f'\n[[redis]]\nname = "evil"\nhost = "{LOOPBACK}"\n'
            f"port = {socks[0].getsockname()[1]}\ndiscover_replicas = true\n"
        )
        config = config.replace(
            "fall = 3\n", f"fall = 3\ninfo_every = 1\nreplica_grace = {args.grace}\n", 1
        )
        agent = Agent(Path(tmp), config)
        started.callback(agent.stop)
        agent.wait_ready()
        agent.wait_ticks(3, 30.0)
        began = time.monotonic()
        print(f"mode {args.mode}, load {load_average()}")
        while True:
            elapsed = time.monotonic() - began
            stats = agent.get("/debug/stats")
            listed = agent.get("/instances?limit=10000", timeout=30.0)["instances"]
            ok = [agent.get(f"/instances/ok-{i}") for i in range(args.healthy)]
            code, health = agent.healthz()
            print(
                f"{elapsed:5.1f} s  RSS {agent.rss_bytes() / 2**20:.0f} MiB  "
                f"fds {agent.process.num_fds()}  discovery {stats.get('discovery')}  "
                f"dns {stats.get('dns')}  "
                f"watched {len(listed)}  ok checks "
                f"{sum(i.get('checks', 0) for i in ok)} failures "
                f"{sum(i.get('failures', 0) for i in ok)}  /healthz {code} "
                f"{'' if code == 200 else health}  zk instances "
                f"{nodes_under(client, '/sentinel/instances')}  load {load_average()}",
                flush=True,
            )
            if args.mode == "latename":
                for found in listed:
                    if found.get("discovered_by") == "evil":
                        print(f"        {found['name']} {found['status']}", flush=True)
                if elapsed >= args.duration / 3 and LATE_NAME not in hosts.read_text():
                    with hosts.open("a") as file:
                        file.write(f"{LOOPBACK} {LATE_NAME}\n")
                    print(f"        {LATE_NAME} written in the hosts file", flush=True)
            if elapsed >= args.duration:
                break
            time.sleep(5)
        for found in listed:
            if found.get("discovered_by") == "evil":
                print(
                    f"{found['name']:28} {found['status']:5} role {found.get('role')}"
                    f"  error {found.get('error')!r}"
                )
        print((Path(tmp) / "agent.log").read_text()[-3000:])


if __name__ == "__main__":
    main()

"""
Hostile bytes, counts and names in a live group's ZooKeeper nodes, as
readers and the agents see them (DESIGN.md section 2.5).

Three agents ``a``, ``b`` and ``c`` (``twistd -n sentinel``, replicas 2,
serverset discovery, default refresh and heartbeat) share ``--instances``
instances over two real redis-servers. Once every node is written, a
client of the same ZooKeeper (kazoo, its own session, no ACLs) runs each
``--attacks`` in turn for ``--for`` seconds, writing its data again every
second (the agents write theirs back):

- ``deep``: ``[`` 100,000 deep into ``{root}/agents/b``, an opinion of
  ``cache-0``, the instance node ``cache-1``, a discovery member, and a
  fake member's agent node and catalog;
- ``shapes``: wrong-shaped JSON there (a list, strings for numbers,
  ``NaN``, ``1e400``, an integer of 100,000 digits);
- ``huge``: 1,000,000 bytes of valid-looking JSON there;
- ``bomb``: ``--bombs`` catalogs in fake members' names, each a part of
  about 1 MB that inflates to 1 GB;
- ``livebomb``: a live fake member (its agent node and catalog held by
  the attacker's session, so that the agents read it) whose catalog is,
  in turn, a part that inflates to 1 GB, 64 MB of zeros under a
  matching digest, one name repeated to 64 MB, and 2,000,000 short
  sorted names (22 MB; written once), a new token every second;
- ``many``: ``--children`` children under an instance's opinions,
  ``{root}/instances``, ``{root}/catalogs`` and the discovery service;
- ``names``: children named ``.``-free but hostile (very long, unicode,
  the catalog separator ``.``, control characters) in the same places.

Sampled every 0.5 s meanwhile: each agent's ``/healthz`` (code, reasons),
``/debug/stats`` (RSS, delayed calls, pending checks) and how long it
took to answer (a reactor stall shows there); a reader counts instance
nodes missing or unparseable. Printed per attack: max RSS, max delayed
calls and pending checks, max answer time, the /healthz reasons seen,
the reader's counts, and the log lines and tracebacks each agent wrote.

    .venv/bin/python benchmarks/poison.py [--attacks deep,bomb] [--for 10]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    Agent,
    Instance,
    load_average,
    start_redis_servers,
    start_zookeeper,
    stop_on_sigterm,
    table,
    wait_until,
)
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NodeExistsError
from squat import members, start_agent

ROOT = "/poison"
DISCOVERY = "/poisondisc"
ATTACKS = ("deep", "shapes", "huge", "bomb", "livebomb", "many", "names")


def main() -> None:
    """Parse the options, run the attacks, print one table each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--instances", type=int, default=30)
    parser.add_argument("--for", dest="duration", type=float, default=10.0)
    parser.add_argument("--children", type=int, default=5000)
    parser.add_argument("--bombs", type=int, default=20)
    parser.add_argument("--keep", help="a directory for the logs, kept")
    options = parser.parse_args()
    stop_on_sigterm()
    run(options, [a for a in options.attacks.split(",") if a])


def payloads(kind: str) -> list[bytes]:
    """The data one attack writes, in turn, into each node it targets."""
    if kind == "deep":
        return [
            b"[" * 100_000 + b"]" * 100_000,
            b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        ]
    if kind == "shapes":
        return [
            b"[1, 2, 3]",
            b'"up"',
            b'{"status": "up", "since": "x", "checked_at": NaN, "observers": [1],'
            b' "instances": "abc", "heartbeat_at": 1e400, "port": "6379"}',
            b'{"status": "down", "checked_at": ' + b"9" * 100_000 + b"}",
            b'{"status": "up", "since": Infinity, "checked_at": -Infinity,'
            b' "agent": "a", "observers": {"a": 1e400}}',
        ]
    if kind == "huge":
        filler = "x" * 999_000
        return [json.dumps({"status": "up", "agent": "a", "error": filler}).encode()]
    raise ValueError(kind)


def bomb() -> bytes:
    """About 1 MB that inflates to 1 GB of zeros."""
    packer = zlib.compressobj(9)
    block = bytes(1 << 20)
    return b"".join(packer.compress(block) for _ in range(1024)) + packer.flush()


def live_bombs() -> list[tuple[str, str, list[bytes]]]:
    """
    The live member's catalogs: (what, digest, parts), each as big as a
    catalog may be once inflated (`MAX_CATALOG_BYTES`, 64 MB) or over.
    """
    limit = 64 * 1024 * 1024
    head = b'{"replicas":2,"quorum":2,"instances":['
    zeros = bytes(limit - 16)
    repeats = (limit - len(head) - 2) // 4
    repeated = head + b",".join([b'"a"'] * repeats) + b"]}"
    count = 2_000_000
    names = head + b",".join(b'"%08x"' % i for i in range(count)) + b"]}"
    bombs = [("1 GB of zeros", "0123456789abcdef", [bomb()])]
    for what, encoded in (
        ("64 MB of zeros", zeros),
        (f'"a" {repeats:,} times', repeated),
        (f"{count:,} names", names),
    ):
        packed = zlib.compress(encoded, 9)
        parts = [packed[i : i + 512 * 1024] for i in range(0, len(packed), 512 * 1024)]
        digest = hashlib.blake2b(encoded, digest_size=8).hexdigest()
        bombs.append((what, digest, parts))
    return bombs


def peak_rss(agent: Agent) -> int:
    """The agent's highest resident set size so far (VmHWM), in bytes."""
    status = Path(f"/proc/{agent.process.pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status)[1]) * 1024  # type: ignore[index]


class Sampler:
    """Samples each agent's /healthz and /debug/stats, and a reader's view."""

    def __init__(self, agents: dict[str, Agent], client: KazooClient, names: list[str]):
        self.agents = agents
        self.client = client
        self.names = names
        self.stopping = threading.Event()
        self.reset()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        """Start a new window of figures."""
        self.rss = {label: 0 for label in self.agents}
        self.delayed = {label: 0 for label in self.agents}
        self.pending = {label: 0 for label in self.agents}
        self.slowest = {label: 0.0 for label in self.agents}
        # When the window began, and when each agent's slowest answer did.
        self.began = time.monotonic()
        self.slowest_at = {label: 0.0 for label in self.agents}
        self.reasons: dict[str, dict[str, int]] = {label: {} for label in self.agents}
        self.reads = self.missing = self.unparseable = 0

    def _run(self) -> None:
        while not self.stopping.is_set():
            for label, agent in self.agents.items():
                began = time.monotonic()
                try:
                    stats = agent.get("/debug/stats", timeout=10.0)
                    self.rss[label] = max(self.rss[label], stats["rss_bytes"])
                    self.delayed[label] = max(
                        self.delayed[label], stats["delayed_calls"]
                    )
                    self.pending[label] = max(
                        self.pending[label], stats["pending_checks"]
                    )
                    key = "200"
                    try:
                        agent.get("/healthz", timeout=10.0)
                    except OSError as e:
                        body = getattr(e, "read", lambda: b"")().decode(
                            "utf-8", "replace"
                        )
                        key = re.sub(r"[0-9.]+", "N", body[:200]) or repr(e)
                except (OSError, ValueError) as e:
                    key = f"no answer: {e!r}"[:100]
                took = time.monotonic() - began
                if took > self.slowest[label]:
                    self.slowest[label] = took
                    self.slowest_at[label] = began - self.began
                self.reasons[label][key] = self.reasons[label].get(key, 0) + 1
            for name in self.names:
                self.reads += 1
                try:
                    data, _ = self.client.get(f"{ROOT}/instances/{name}")
                except KazooException:
                    self.missing += 1
                    continue
                try:
                    if not isinstance(json.loads(data).get("status"), str):
                        raise ValueError(name)
                except (ValueError, AttributeError, RecursionError):
                    self.unparseable += 1
            time.sleep(0.5)


def put(client: KazooClient, path: str, data: bytes) -> None:
    """Write `data` at `path`, creating it (persistent) if missing."""
    try:
        try:
            client.create(path, data, makepath=True)
        except NodeExistsError:
            client.set(path, data)
    except KazooException:
        pass


def targets(client: KazooClient) -> list[str]:
    """The nodes a data attack writes: real ones of the group, and fakes."""
    members = client.get_children(f"{DISCOVERY}/cache-2")
    return [
        f"{ROOT}/agents/b",
        *[
            f"{ROOT}/opinions/cache-0/{x}"
            for x in client.get_children(f"{ROOT}/opinions/cache-0")
        ],
        f"{ROOT}/instances/cache-1",
        *[f"{DISCOVERY}/cache-2/{m}" for m in members[:1]],
        f"{ROOT}/agents/fake",
        f"{ROOT}/catalogs/fake.0123456789abcdef.t1.0.1",
    ]


def attack(
    client: KazooClient,
    kind: str,
    options: argparse.Namespace,
    alive: Callable[[], bool],
) -> str:
    """Run one attack for its duration (while ZooKeeper is `alive`); what it did."""
    began = time.monotonic()
    if kind in ("deep", "shapes", "huge"):
        data, nodes, rounds = payloads(kind), targets(client), 0
        while time.monotonic() - began < options.duration and alive():
            for path in nodes:
                put(client, path, data[rounds % len(data)])
            rounds += 1
            time.sleep(1.0)
        return f"{rounds} rounds over {len(nodes)} nodes"
    if kind == "bomb":
        packed = bomb()
        for i in range(options.bombs):
            put(client, f"{ROOT}/agents/bomb{i}", b"{}")
            put(client, f"{ROOT}/catalogs/bomb{i}.{i:016x}.t{i}.0.1", packed)
        time.sleep(max(0.0, options.duration - (time.monotonic() - began)))
        return f"{options.bombs} catalogs of {len(packed):,} bytes"
    if kind == "livebomb":
        return live_bomb(client, options, alive, options.packed)
    parents = [
        f"{ROOT}/opinions/cache-0",
        f"{ROOT}/instances",
        f"{ROOT}/catalogs",
        f"{DISCOVERY}/cache-2",
    ]
    if kind == "many":
        # 45 bytes a name: 30,000 make a listing over 1 MiB (jute.maxbuffer).
        names = [f"x{i:044d}" for i in range(options.children)]
    else:
        names = [
            "n" * 1000, "é☃\u202e", "a.b.c.d.e", "a.0123456789abcdef.t.0.1",
            "..x", "\x01\x7f", " ", "member_0000000001x", "cache-3_0000000001",
        ]  # fmt: skip
    results = []
    for parent in parents:
        for name in names:
            results.append(client.create_async(f"{parent}/{name}", b"{}"))
    for result in results:
        try:
            result.get(timeout=30.0)
        except KazooException:
            pass
    time.sleep(max(0.0, options.duration - (time.monotonic() - began)))
    return f"{len(results):,} children created"


def live_bomb(
    client: KazooClient,
    options: argparse.Namespace,
    alive: Callable[[], bool],
    bombs: list[tuple[str, str, list[bytes]]],
) -> str:
    """
    A live fake member whose catalog is each of `bombs` (`live_bombs`) in
    turn, under a new token every second; its nodes deleted at the end.
    """
    began = time.monotonic()
    client.create(f"{ROOT}/agents/live", b"{}", ephemeral=True)
    written: list[str] = []
    rounds = 0
    while time.monotonic() - began < options.duration and alive():
        # The names' parts only once: 4.3 MB every few seconds took the
        # tests' ZooKeeper (-Xmx256m) to OutOfMemoryError.
        turn = rounds if rounds < len(bombs) else rounds % (len(bombs) - 1)
        _, digest, parts = bombs[turn]
        for path in written:
            client.delete_async(path)
        written = [
            f"{ROOT}/catalogs/live.{digest}.t{rounds}.{i}.{len(parts)}"
            for i in range(len(parts))
        ]
        for path, part in zip(written, parts, strict=True):
            client.create(path, part, ephemeral=True)
        rounds += 1
        time.sleep(1.0)
    for path in [*written, f"{ROOT}/agents/live"]:
        client.delete(path)
    sizes = ", ".join(f"{what} in {sum(map(len, parts)):,} bytes"
                      for what, _, parts in bombs)  # fmt: skip
    return f"{rounds} catalogs of a live member in turn: {sizes}"


def cleanup(client: KazooClient) -> None:
    """Remove what the attacks left, so that the next starts from a group at rest."""
    for parent in (f"{ROOT}/opinions/cache-0", f"{ROOT}/instances", f"{ROOT}/catalogs",
                   f"{DISCOVERY}/cache-2", f"{ROOT}/agents"):  # fmt: skip
        results = []
        for child in client.get_children(parent):
            path = f"{parent}/{child}"
            if client.exists(path).ephemeralOwner == 0:
                results.append(client.delete_async(path))
        for result in results:
            try:
                result.get(timeout=30.0)
            except KazooException:
                pass


def run(options: argparse.Namespace, attacks: list[str]) -> None:
    """Start the group, run each attack, print its table."""
    if options.keep:
        Path(options.keep).mkdir(parents=True, exist_ok=True)
    checkout = Path(__file__).resolve().parent.parent
    with ExitStack() as started, tempfile.TemporaryDirectory() as scratch:
        workdir = Path(options.keep or scratch)
        zookeeper, reader = start_zookeeper(started)
        if options.keep:
            # Run before the server's directory goes (callbacks run last first).
            started.callback(shutil.copy, zookeeper.log, workdir / "zookeeper.log")
        servers = start_redis_servers(2, started)
        instances = [
            Instance(f"cache-{i}", servers[i % 2].port)
            for i in range(options.instances)
        ]
        names = [i.name for i in instances]
        settings: dict[str, Any] = {
            "replicas": 2, "discovery": "serverset", "discovery_root": DISCOVERY,
        }  # fmt: skip
        agents = {
            label: start_agent(
                started,
                workdir,
                zookeeper.hosts,
                instances,
                label,
                checkout,
                settings=settings,
                root=ROOT,
            )  # fmt: skip
            for label in ("a", "b", "c")
        }
        wait_until(lambda: min(map(members, agents.values())) == 3, 60.0, "a group")
        wait_until(
            lambda: all(reader.exists(f"{ROOT}/instances/{n}") for n in names),
            60.0,
            "every instance node",
        )
        wait_until(
            lambda: (
                bool(reader.exists(f"{DISCOVERY}/cache-2"))
                and bool(reader.get_children(f"{DISCOVERY}/cache-2"))
            ),
            60.0,
            "a discovery member",
        )
        # Packed before anything is sampled: it took 78.5 s of this
        # process at load 22 (joins of 64 MB holding the GIL), and, inside
        # the window, slowed the sampler's own answers and diluted the
        # agents' CPU over it.
        options.packed = []
        if "livebomb" in attacks:
            packing = time.monotonic()
            options.packed = live_bombs()
            print(f"bombs packed in {time.monotonic() - packing:.1f} s", flush=True)
        sampler = Sampler(agents, reader, names)
        meddler = KazooClient(hosts=zookeeper.hosts, timeout=30.0)
        meddler.start(timeout=10.0)
        started.callback(meddler.close)
        started.callback(meddler.stop)
        logged = {
            label: agent.log.read_text(errors="replace")
            for label, agent in agents.items()
        }
        try:
            for kind in attacks:
                sampler.reset()
                load = load_average()
                cpu = {label: agent.cpu_seconds() for label, agent in agents.items()}
                overruns = {label: a.get("/debug/stats")["overruns"]
                            for label, a in agents.items()}  # fmt: skip
                began = time.monotonic()
                done = attack(meddler, kind, options, lambda: zookeeper.running)
                took = time.monotonic() - began
                rows = [("attack", done), ("load before", load)]
                if not zookeeper.running:
                    log = zookeeper.log.read_text(errors="replace")
                    rows.append(("ZooKeeper exited", log[-600:]))
                for label, agent in agents.items():
                    log = agent.log.read_text(errors="replace")
                    new = log[len(logged[label]) :]
                    logged[label] = log
                    rows += [
                        (f"{label}: max RSS, peak so far",
                         f"{sampler.rss[label] / 2**20:.0f} MB,"
                         f" {peak_rss(agent) / 2**20:.0f} MB"),
                        (f"{label}: overruns",
                         agent.get("/debug/stats")["overruns"] - overruns[label]),
                        (f"{label}: CPU", f"{(agent.cpu_seconds() - cpu[label]) / took:.0%}"),  # noqa: E501
                        (f"{label}: max delayed, pending",
                         f"{sampler.delayed[label]}, {sampler.pending[label]}"),
                        (f"{label}: slowest answer",
                         f"{sampler.slowest[label]:.2f} s, asked"
                         f" {sampler.slowest_at[label]:.1f} s into the window"),
                        (f"{label}: log lines, tracebacks",
                         f"{new.count(chr(10))}, {new.count('Traceback')}"),
                    ]  # fmt: skip
                    for key, count in sampler.reasons[label].items():
                        rows.append((f"{label}: /healthz x{count}", key[:160]))
                    said: dict[str, int] = {}
                    for line in new.splitlines():
                        # Each message once, its figures and names as N.
                        key = re.sub(r"[0-9.]+", "N", line.partition("] ")[2])[:120]
                        said[key] = said.get(key, 0) + 1
                    for key, count in said.items():
                        rows.append((f"{label}: log x{count}", key))
                rows += [
                    ("reader: reads", f"{sampler.reads:,}"),
                    (
                        "  missing, unparseable",
                        f"{sampler.missing:,}, {sampler.unparseable:,}",
                    ),
                ]
                print(
                    table(rows, f"--attack {kind}, load {load_average()}"), flush=True
                )
                if not zookeeper.running:
                    break
                cleanup(meddler)
                time.sleep(3.0)
        finally:
            sampler.stopping.set()
            sampler.thread.join(15.0)


if __name__ == "__main__":
    main()

"""
Hostile peers, round 24: the bytes between the agent and ZooKeeper.

One ``twistd -n sentinel`` agent watches ``--instances`` names on a few
real redis-servers and publishes to a real ZooKeeper, through a
fault-injecting TCP path of this script's own on loopback (`FaultyPath`):
the agent's ``--zookeeper`` is the path's port, and the path either
forwards to a target (ZooKeeper, or, for an operator's typo, a
redis-server or an HTTP server), reading ZooKeeper's replies frame by
frame so that it can spoil one, or plays a "ZooKeeper" of its own.

Each scene starts healthy (forwarding to ZooKeeper, the view complete),
then spoils the path for ``--fault`` seconds (the connection in use is
cut, so that the agent's next one meets the fault), then heals it.
Meanwhile ``/debug/stats`` is sampled every 0.5 s (RSS, open files,
ticks), ``/healthz`` and ``/instances`` too, and ZooKeeper is read
directly every 0.25 s for the agent's instance nodes. Printed per scene:
the largest RSS and open files, whether checking went on (ticks and
``checked_at`` moving), the path's accepts per second (most in one
second, and in all), the ``/healthz`` reasons while spoiled, the seconds
from the heal until every node is there, the agent's and fresh, and the
longest time any node was missing.

    .venv/bin/python benchmarks/zkwire.py [--instances 100] [--fault 12] \\
        [--scene bigframe --scene stall ...]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from common import (
    LOOPBACK,
    Agent,
    Instance,
    agent_config,
    load_average,
    machine,
    start_redis_servers,
    start_zookeeper,
    stop_on_sigterm,
)
from kazoo.exceptions import NoNodeError

ROOT = "/zkwire"
SESSION_TIMEOUT = 6.0
CHUNK = b"\xa5" * 65536

# What a new connection meets while the path is spoiled (`FaultyPath`).
FAKES = {
    "garbage": "answers the handshake with 256 random bytes, then holds",
    "bigframe": "a frame length of 2**31-1, then bytes as fast as it can",
    "frame100m": "a frame length of 100 MB, then bytes as fast as it can",
    "negative": "a frame length of -5, then holds",
    "acceptclose": "accepts and closes at once",
    "chargen": "an endless stream from the start",
    "drip": "a frame length of 40, then a byte a second",
    "redis": "forwards to a redis-server (--zookeeper typo)",
    "http": "forwards to an HTTP server (--zookeeper typo)",
    "stall": "forwards agent to ZooKeeper only: the replies held",
}
# One reply spoiled, through the path to the real ZooKeeper.
SPOILS = {
    "corrupt": "flips 4 bytes in one reply's body",
    "truncate": "sends half of one reply and holds the rest",
    "duplicate": "sends one reply twice",
    "midnegative": "a frame length of -5 between two replies",
    "resetlisting": "resets the connection in the middle of a listing",
}


def _frame(upstream: socket.socket) -> bytes | None:
    """One length-prefixed frame from `upstream`, None at its end."""
    head = _exactly(upstream, 4)
    if head is None:
        return None
    (length,) = struct.unpack("!i", head)
    body = _exactly(upstream, max(length, 0))
    return None if body is None else head + body


def _exactly(sock: socket.socket, size: int) -> bytes | None:
    parts, left = [], size
    while left:
        try:
            chunk = sock.recv(min(left, 1 << 20))
        except OSError:
            return None
        if not chunk:
            return None
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


class FaultyPath:
    """A TCP path to `target` that can be spoiled (module docstring)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.zookeeper = target
        self.target = target
        self.fake: str | None = None
        self.spoil: str | None = None
        self.spoiled = 0
        self.accepts: list[float] = []
        self.healed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((LOOPBACK, 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def set(self, fake: str | None = None, spoil: str | None = None) -> None:
        """Spoil new connections (`fake`) or the next reply (`spoil`); cut."""
        self.healed.clear()
        self.fake, self.spoil = fake, spoil
        self.cut()

    def heal(self) -> None:
        """Forward to ZooKeeper again, and cut what is held."""
        self.fake = self.spoil = None
        self.healed.set()
        self.cut()

    def cut(self) -> None:
        """Reset every connection the path holds."""
        sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _reset(sock)

    def close(self) -> None:
        """Stop accepting and cut."""
        self._closed = True
        self._listener.close()
        self.heal()

    def _accept(self) -> None:
        while not self._closed:
            try:
                agent, _ = self._listener.accept()
            except OSError:
                return
            self.accepts.append(time.monotonic())
            self._sockets.append(agent)
            threading.Thread(target=self._serve, args=(agent,), daemon=True).start()

    def _serve(self, agent: socket.socket) -> None:
        fake = self.fake
        try:
            if fake is None or fake in ("redis", "http", "stall"):
                self._forward(agent, fake)
            elif fake == "acceptclose":
                agent.close()
            else:
                self._play(agent, fake)
        except OSError:
            pass
        finally:
            _reset(agent)

    def _play(self, agent: socket.socket, fake: str) -> None:
        agent.recv(4096)  # The handshake's request.
        if fake == "garbage":
            agent.sendall(random.randbytes(256))
        elif fake == "negative":
            agent.sendall(struct.pack("!i", -5))
        elif fake in ("bigframe", "frame100m"):
            length = 2**31 - 1 if fake == "bigframe" else 100 * 10**6
            agent.sendall(struct.pack("!i", length))
        if fake in ("bigframe", "frame100m", "chargen"):
            while not self.healed.is_set():
                agent.sendall(CHUNK)
        if fake == "drip":
            agent.sendall(struct.pack("!i", 40))
            while not self.healed.wait(1.0):
                agent.sendall(b"\x00")
        self.healed.wait()

    def _forward(self, agent: socket.socket, fake: str | None) -> None:
        target = {"redis": self.redis, "http": self.http}.get(
            fake or "", self.zookeeper
        )
        upstream = socket.create_connection(target)
        self._sockets.append(upstream)
        threading.Thread(target=_copy, args=(agent, upstream), daemon=True).start()
        if fake == "stall":
            self.healed.wait()
            return
        if fake is not None:
            _copy(upstream, agent)
            return
        replies = 0
        while (frame := _frame(upstream)) is not None:
            replies += 1
            # The first reply is the handshake's: spoil those after it.
            spoil = self.spoil if replies > 1 else None
            if spoil == "resetlisting" and len(frame) < 1000:
                spoil = None
            if spoil is None:
                agent.sendall(frame)
                continue
            self.spoil = None
            self.spoiled += 1
            half = len(frame) // 2
            if spoil == "corrupt":
                at = 4 + 16 + (len(frame) - 20) // 2
                frame = (
                    frame[:at]
                    + bytes(b ^ 0xFF for b in frame[at : at + 4])
                    + frame[at + 4 :]
                )
                agent.sendall(frame)
            elif spoil == "duplicate":
                agent.sendall(frame + frame)
            elif spoil == "midnegative":
                agent.sendall(struct.pack("!i", -5) + frame)
            elif spoil == "truncate":
                agent.sendall(frame[:half])
                self.healed.wait()
                return
            elif spoil == "resetlisting":
                agent.sendall(frame[:half])
                return

    redis: tuple[str, int] = (LOOPBACK, 0)
    http: tuple[str, int] = (LOOPBACK, 0)


def _copy(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    _reset(sink)


def _reset(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass


class _NotFound(BaseHTTPRequestHandler):
    """An HTTP server that answers anything 400 (and reads what it is sent)."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def view_right(zk: Any, names: list[str], fresh: float) -> tuple[bool, set[str]]:
    """
    Whether every node is there, the agent's, checked since `fresh`; and
    which are missing.
    """
    try:
        present = set(zk.get_children(f"{ROOT}/instances"))
    except NoNodeError:
        present = set()
    missing = set(names) - present
    if missing:
        return False, missing
    for name in names:
        try:
            data, _ = zk.get(f"{ROOT}/instances/{name}")
        except NoNodeError:
            return False, {name}
        doc = json.loads(data)
        if doc.get("agent") != "bench" or doc.get("checked_at", 0) < fresh:
            return False, missing
    return True, missing


def scene(
    agent: Agent, path: FaultyPath, zk: Any, names: list[str], name: str, fault: float
) -> dict[str, Any]:
    """One scene (module docstring): its figures."""
    samples: list[dict[str, Any]] = []
    reasons: dict[str, int] = {}
    missing_since: dict[str, float] = {}
    # When the path healed, and the longest a node was missing after it.
    healed_at: list[float | None] = [None]
    after_heal = [0.0]
    longest_missing = 0.0
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.5):
            try:
                stats = agent.get("/debug/stats", timeout=5)
                code, body = agent.healthz()
                checked = max(
                    (i.get("checked_at") or 0)
                    for i in agent.get("/instances?limit=5", timeout=5)["instances"]
                )
            except Exception as e:  # noqa: BLE001 — a sample missed is a figure too.
                samples.append({"error": str(e)})
                continue
            stats.update(
                code=code,
                checked=checked,
                at=time.monotonic(),
                threads=agent.process.num_threads(),
            )
            samples.append(stats)
            if code != 200 and not path.healed.is_set():
                for reason in body.get("reasons", []):
                    # The same reason at another moment: its seconds left out.
                    key = re.sub(r"\d+\.\d s", "N s", str(reason))[:400]
                    reasons[key] = reasons.get(key, 0) + 1

    def watch_nodes() -> None:
        nonlocal longest_missing
        while not stop.wait(0.25):
            try:
                present = set(zk.get_children(f"{ROOT}/instances"))
            except Exception:  # noqa: BLE001
                continue
            now = time.monotonic()
            for n in names:
                if n in present:
                    since = missing_since.pop(n, None)
                    if since is not None:
                        longest_missing = max(longest_missing, now - since)
                        if path.healed.is_set() and healed_at[0] is not None:
                            after_heal[0] = max(
                                after_heal[0], now - max(since, healed_at[0])
                            )
                else:
                    missing_since.setdefault(n, now)

    threads = [threading.Thread(target=f, daemon=True) for f in (sample, watch_nodes)]
    for t in threads:
        t.start()
    time.sleep(2)
    accepts_before = len(path.accepts)
    spoiled_at = time.monotonic()
    if name in FAKES:
        path.set(fake=name)
    else:
        path.set(spoil=name)
        if name == "resetlisting":
            path.cut()  # A reconnect re-reads the listings.
    time.sleep(fault)
    healed = healed_at[0] = time.monotonic()
    accepts = [a for a in path.accepts[accepts_before:] if a < healed]
    path.heal()
    # A node re-created from the last check before the heal is fresh too.
    fresh = time.time() - 2.0
    right_after = None
    while time.monotonic() - healed < 60:
        ok, _ = view_right(zk, names, fresh)
        if ok:
            right_after = time.monotonic() - healed
            break
        time.sleep(0.1)
    time.sleep(1)
    stop.set()
    for t in threads:
        t.join()
    now = time.monotonic()
    for since in missing_since.values():
        longest_missing = max(longest_missing, now - since)
        after_heal[0] = max(after_heal[0], now - max(since, healed))
    during = [s for s in samples if "ticks" in s and spoiled_at <= s["at"] <= healed]
    per_second: dict[int, int] = {}
    for a in accepts:
        per_second[int(a - spoiled_at)] = per_second.get(int(a - spoiled_at), 0) + 1
    good = [s for s in samples if "ticks" in s]
    return {
        "scene": name,
        "rss_mb_max": max((s["rss_bytes"] for s in good), default=0) / 2**20,
        "fds_max": max((s["open_fds"] for s in good), default=0),
        "ticks_during": (during[-1]["ticks"] - during[0]["ticks"]) if during else None,
        "checked_moved": bool(during) and during[-1]["checked"] > during[0]["checked"],
        "samples_missed": len(samples) - len(good),
        "accepts": len(accepts),
        "accepts_max_per_s": max(per_second.values(), default=0),
        "healthz_503_during": sum(s["code"] != 200 for s in during),
        "healthz_samples_during": len(during),
        "reasons": sorted(reasons.items(), key=lambda kv: -kv[1])[:3],
        "view_right_after_s": right_after,
        "longest_missing_s": round(longest_missing, 2),
        "missing_after_heal_s": round(after_heal[0], 2),
        "spoiled": path.spoiled,
        "threads_max": max((s["threads"] for s in good), default=0),
        "threads_after": agent.process.num_threads(),
        "load": load_average(),
    }


def main() -> None:
    """Run the scenes and print one JSON line each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--fault", type=float, default=12.0)
    parser.add_argument("--scene", action="append", choices=[*FAKES, *SPOILS])
    parser.add_argument("--pythonpath", type=Path, default=None)
    args = parser.parse_args()
    stop_on_sigterm()
    print(machine())
    with ExitStack() as started, TemporaryDirectory() as workdir:
        redis = start_redis_servers(4, started)
        zookeeper, zk = start_zookeeper(started)
        http = ThreadingHTTPServer((LOOPBACK, 0), _NotFound)
        threading.Thread(target=http.serve_forever, daemon=True).start()
        started.callback(http.shutdown)
        path = FaultyPath((LOOPBACK, zookeeper.port))
        path.redis = (LOOPBACK, redis[0].port)
        path.http = (LOOPBACK, http.server_address[1])
        started.callback(path.close)
        instances = [
            Instance(f"r{i:04d}", redis[i % len(redis)].port)
            for i in range(args.instances)
        ]
        names = [i.name for i in instances]
        config = agent_config(
            instances,
            zookeeper=f"{LOOPBACK}:{path.port}",
            zk_root=ROOT,
            zk_settings={"session_timeout": SESSION_TIMEOUT},
        )
        agent = Agent(Path(workdir), config, pythonpath=args.pythonpath)
        started.callback(agent.stop)
        agent.wait_ready()
        fresh = time.time()
        deadline = time.monotonic() + 60
        while not view_right(zk, names, fresh)[0]:
            if time.monotonic() > deadline:
                raise RuntimeError("the first view was not complete in 60 s")
            time.sleep(0.2)
        for name in args.scene or [*FAKES, *SPOILS]:
            if not agent.child.running:
                print(json.dumps({"scene": name, "agent": "exited"}), flush=True)
                break
            print(
                json.dumps(scene(agent, path, zk, names, name, args.fault)), flush=True
            )


_: Callable[..., Any] = main

if __name__ == "__main__":
    main()

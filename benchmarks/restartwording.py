"""
A real Redis restarted, killed or full while checks are in flight: how
often a check's error says "not Redis? a TLS port without tls = true?"
(`probe.NOT_REDIS_CLOSE`), meant for a wrong service on the port.

One ``twistd -n sentinel`` (no ZooKeeper) watches one plain redis-server
every ``--interval`` s (timeout ``--timeout``); ``/instances`` is read
every 50 ms and each check's error kept (a check is told by its count).
Each scene runs ``--rounds`` times:

- ``kill``: SIGKILL, then started again on its port at once;
- ``freeze-kill``: SIGSTOP for ``--frozen`` s (checks time out, and the
  agent's fresh connections wait in the listen backlog), then SIGKILL
  (a supervisor's liveness probe ending a hung Redis), started again;
- ``shutdown``: ``SHUTDOWN NOSAVE``, started again;
- ``client-kill``: ``CLIENT KILL TYPE normal`` (every client's connection);
- ``maxclients``: ``--maxclients 2``, the agent's connection killed and
  both slots taken by other clients for ``--frozen`` s (the agent's
  checks on new connections turned away).

Without ``PYTHONPATH``, the agent runs the code the virtualenv imports;
with it, that tree's.

Printed per scene: the checks that failed, how many of them said
"not Redis?", and the distinct errors with their counts.

    .venv/bin/python benchmarks/restartwording.py [--rounds 10] \\
        [--scene freeze-kill ...]
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from common import (
    LOOPBACK,
    Agent,
    Instance,
    RedisServer,
    agent_config,
    load_average,
    stop_on_sigterm,
)

NOT_REDIS = "not Redis?"


def command(port: int, *words: str) -> bytes:
    """Send one command to the Redis on `port`; its first reply bytes."""
    with socket.create_connection((LOOPBACK, port), timeout=5) as connection:
        parts = [f"*{len(words)}\r\n".encode()]
        for word in words:
            parts.append(f"${len(word)}\r\n{word}\r\n".encode())
        connection.sendall(b"".join(parts))
        try:
            return connection.recv(4096)
        except OSError:
            return b""


class Errors:
    """Each check's error, read from ``/instances`` in a thread."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self.seen: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                (watched,) = self._agent.instances().values()
            except (OSError, ValueError):
                continue
            error = watched.get("error")
            if error:
                self.seen.setdefault(watched["failures"], error)
            time.sleep(0.05)

    def since(self, before: int) -> Counter[str]:
        """The errors of the checks failed after `before` failures."""
        return Counter(e for n, e in list(self.seen.items()) if n > before)

    def failures(self) -> int:
        """Failures counted so far."""
        return max(self.seen, default=0)

    def stop(self) -> None:
        """End the polling thread."""
        self._stop.set()
        self._thread.join(5)


def main() -> None:
    """Run each scene; print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--timeout", type=float, default=0.3)
    parser.add_argument("--frozen", type=float, default=1.5)
    parser.add_argument("--scene", action="append", help="only these (repeat)")
    args = parser.parse_args()
    stop_on_sigterm()
    print(f"load {load_average()}", flush=True)
    with ExitStack() as started:
        redis = RedisServer()
        started.callback(redis.stop)
        redis.start()
        full = RedisServer(extra_args=["--maxclients", "2"])
        started.callback(full.stop)
        full.start()

        def restart(stop: Callable[[], None]) -> Callable[[], None]:
            def scene() -> None:
                stop()
                redis.start()

            return scene

        def freeze_kill() -> None:
            redis.pause()
            time.sleep(args.frozen)
            redis.kill()
            redis.start()

        def shutdown() -> None:
            command(redis.port, "SHUTDOWN", "NOSAVE")
            redis.kill()  # Reaped (it exited), whatever it did.
            redis.start()

        def client_kill() -> None:
            command(redis.port, "CLIENT", "KILL", "TYPE", "normal")

        def hold_slots() -> None:
            with socket.create_connection((LOOPBACK, full.port)) as admin:
                admin.sendall(b"CLIENT KILL TYPE normal SKIPME yes\r\n")
                admin.recv(4096)
                with socket.create_connection((LOOPBACK, full.port)):
                    time.sleep(args.frozen)

        scenes: list[tuple[str, int, Callable[[], None]]] = [
            ("kill", redis.port, restart(redis.kill)),
            ("freeze-kill", redis.port, freeze_kill),
            ("shutdown", redis.port, shutdown),
            ("client-kill", redis.port, client_kill),
            ("maxclients", full.port, hold_slots),
        ]
        for name, port, scene in scenes:
            if args.scene and name not in args.scene:
                continue
            workdir = Path(tempfile.mkdtemp(prefix=f"sentinel-wording-{name}-"))
            config = agent_config(
                [Instance("r", port)], interval=args.interval, timeout=args.timeout
            )
            agent = Agent(workdir, config, label=name)
            started.callback(agent.stop)
            agent.wait_ready()
            time.sleep(2 * args.interval)
            errors = Errors(agent)
            started.callback(errors.stop)
            before = errors.failures()
            for _ in range(args.rounds):
                scene()
                time.sleep(4 * args.interval)
            seen = errors.since(before)
            errors.stop()
            agent.stop()
            failed = sum(seen.values())
            misleading = sum(n for e, n in seen.items() if NOT_REDIS in e)
            print(
                f"{name}: {args.rounds} rounds, load {load_average()}: {failed}"
                f" checks failed, {misleading} said {NOT_REDIS!r}",
                flush=True,
            )
            for error, count in seen.most_common(6):
                print(f"    {count} x {error[:150]}", flush=True)


if __name__ == "__main__":
    main()

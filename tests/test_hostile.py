"""
A real ``twistd -n sentinel`` agent against hostile Redis servers
(``tests/hostile.py``, in a process of their own) and a healthy real
redis-server: each hostile instance is down with a clear error within the
fall bound and stays down, the agent's memory and counters do not grow, and
the healthy instance never misses a check.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import psutil
import treq
from twisted.internet import reactor as _reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from tests.certs import make_certificates
from tests.polling import START_BOUND, pause, wait_for, wait_listening
from tests.servers import (
    LOOPBACK,
    ChildProcess,
    HostileServers,
    RedisServer,
)
from tests.test_twistd import TWISTD, environment

reactor: Any = _reactor

INTERVAL = 0.25
# Longer than the other twistd tests' 0.1 s: the first check connects to a
# Python server that shares a loaded machine.
TIMEOUT = 0.25
FALL = 3
# Scheduling slack on top of the fall bound, for a loaded machine.
SLACK = 0.5
# How long the agent is watched once every hostile instance is down.
WINDOW = 8.0
# Generous: without bounds, a flood grew the agent by 100 MB a second.
RSS_GROWTH = 30 * 2**20

# Name, mode, over TLS, and how the error starts.
HOSTILE = [
    ("flood", "flood", False, "unexpected reply"),
    ("flood-tls", "flood", True, "unexpected reply"),
    ("duplicate", "duplicate", False, "unexpected reply"),
    ("hugebulk", "hugebulk", False, "reply too long: 1000000000 bytes"),
    ("endless", "endless", False, "reply too long: "),
    ("unsolicited", "unsolicited", False, "unexpected reply"),
]


class HostileServerTests(TestCase):
    """Floods, double answers, huge and endless replies, unasked replies."""

    async def start_agent(self, config: Path) -> tuple[ChildProcess, str]:
        """The agent of `config`, and its URL once it listens."""
        agent = ChildProcess(
            [
                TWISTD, "-n", "--pidfile=", "sentinel",
                "--config", str(config),
                "--http", f"tcp:0:interface={LOOPBACK}",
            ],
            log=config.with_suffix(".log"),
            env=environment(),
            cwd=config.parent,
        )  # fmt: skip
        self.addCleanup(agent.stop)
        port = await wait_listening(reactor, agent.pid, agent.why_ended)
        return agent, f"http://{LOOPBACK}:{port}"

    async def get_json(self, url: str) -> Any:
        pool = HTTPConnectionPool(reactor, persistent=False)
        response = await treq.get(url, timeout=2, pool=pool)
        return json.loads(await response.content())

    async def test_hostile_servers(self) -> None:
        """
        Each hostile instance is down within interval * fall + timeout of
        its first check, with the error saying what the server did, and
        stays down for the whole window; meanwhile the agent's RSS grows
        by less than 30 MB, its descriptors, timers, pending checks and
        gc objects do not grow, and the healthy instance has no failure.
        """
        directory = Path(self.mktemp()).absolute()
        directory.mkdir(parents=True)
        certs = make_certificates(directory)
        hostile = HostileServers([(m, tls) for _, m, tls, _ in HOSTILE], tls=certs)
        self.addCleanup(hostile.stop)
        healthy = RedisServer().start()
        self.addCleanup(healthy.stop)
        tables = [("healthy", healthy.port, "")] + [
            (
                name,
                port,
                f'tls = true\nca_file = "{certs.ca_file}"\n' if tls else "",
            )
            for (name, _, tls, _), port in zip(HOSTILE, hostile.ports, strict=True)
        ]

        def write_config(tables: list[tuple[str, int, str]]) -> None:
            config.write_text(
                f"interval = {INTERVAL}\ntimeout = {TIMEOUT}\nfall = {FALL}\n"
                + "".join(
                    f'[[redis]]\nname = "{name}"\nhost = "{LOOPBACK}"\n'
                    f"port = {port}\n{extra}"
                    for name, port, extra in tables
                )
            )

        # The hostile instances are added once the agent runs (SIGHUP), so
        # that its own start-up is not what their first checks measure.
        config = directory / "sentinel.toml"
        write_config(tables[:1])
        agent, base = await self.start_agent(config)
        first_checked: dict[str, float] = {}
        # When each hostile instance was first seen down with its error.
        convicted: dict[str, float] = {}
        latest: dict[str, dict[str, Any]] = {}
        expected = {name: error for name, _, _, error in HOSTILE}

        async def poll() -> None:
            if not agent.running:
                self.fail(f"twistd exited:{agent.log_tail()}")
            try:
                body = await self.get_json(f"{base}/instances")
            except Exception:
                return  # Not serving yet.
            for instance in body["instances"]:
                name = instance["name"]
                latest[name] = instance
                if instance["checks"] and name not in first_checked:
                    # The first check's time, whichever check this is.
                    first_checked[name] = (
                        instance["checked_at"] - (instance["checks"] - 1) * INTERVAL
                    )
                if (
                    name in expected
                    and name not in convicted
                    and instance["status"] == "down"
                    and instance["error"].startswith(expected[name])
                ):
                    convicted[name] = reactor.seconds()

        def settled() -> bool:
            return len(latest) == len(tables) and convicted.keys() == expected.keys()

        started = reactor.seconds()
        while latest.get("healthy", {}).get("status") != "up":
            if reactor.seconds() - started > START_BOUND:
                self.fail(f"the healthy instance is not up: {latest}")
            await poll()
            await pause(reactor, 0.05)
        write_config(tables)
        os.kill(agent.pid, signal.SIGHUP)
        started = reactor.seconds()
        while not settled():
            if reactor.seconds() - started > 10.0:
                self.fail(f"not every hostile instance down, saying why: {latest}")
            await poll()
            await pause(reactor, 0.05)
        bound = INTERVAL * FALL + TIMEOUT + SLACK
        for name in expected:
            took = convicted[name] - first_checked[name]
            self.assertLessEqual(took, bound, f"{name}: {latest[name]}")

        process = psutil.Process(agent.pid)
        before = await self.get_json(f"{base}/debug/stats")
        rss_before = process.memory_info().rss
        rss_most = rss_before
        healthy_checks = latest["healthy"]["checks"]

        async def watched() -> bool:
            nonlocal rss_most
            rss_most = max(rss_most, process.memory_info().rss)
            await poll()
            for name in expected:
                self.assertEqual(latest[name]["status"], "down", latest[name])
            return False

        window_end = reactor.seconds() + WINDOW
        while reactor.seconds() < window_end:
            await watched()
            await pause(reactor, 0.25)
        after = await self.get_json(f"{base}/debug/stats")
        growth = rss_most - rss_before
        self.assertLess(growth, RSS_GROWTH, f"RSS grew by {growth} bytes")
        self.assertEqual(latest["healthy"]["status"], "up")
        self.assertEqual(latest["healthy"]["failures"], 0)
        self.assertGreater(latest["healthy"]["checks"], healthy_checks + 20)
        self.assertLessEqual(after["pending_checks"], len(tables))
        self.assertLessEqual(after["open_fds"], before["open_fds"] + 5)
        self.assertLessEqual(after["delayed_calls"], before["delayed_calls"] + 10)
        self.assertLess(after["gc_objects"], before["gc_objects"] * 1.1)
        await wait_for(reactor, lambda: True, 1.0, "a turn")
        # The figures, for whoever reads the test log.
        print(
            f"\nagent RSS {rss_before / 2**20:.1f} MiB at window start, "
            f"at most {rss_most / 2**20:.1f} MiB over {WINDOW:g} s; "
            f"fds {before['open_fds']} -> {after['open_fds']}, gc objects "
            f"{before['gc_objects']} -> {after['gc_objects']}"
        )

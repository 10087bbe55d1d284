"""
The agent as a user runs it: ``twistd -n sentinel ...`` in a child process,
against a real redis-server, read over HTTP, stopped with SIGTERM.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import treq
from kazoo.client import KazooClient
from twisted.internet import reactor as _reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from tests.polling import wait_for
from tests.servers import RedisServer, free_port, shared_zookeeper

reactor: Any = _reactor

REPO = Path(__file__).resolve().parent.parent
TWISTD = str(Path(sys.executable).with_name("twistd"))


def environment() -> dict[str, str]:
    """The child sees this checkout first, as `make test` does."""
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO),
    }


class TwistdTests(TestCase):
    """Start, watch over HTTP, SIGKILL a Redis, SIGTERM the agent."""

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        directory = Path(self.mktemp())
        directory.mkdir()
        log = (directory / "twistd.log").open("wb")
        self.addCleanup(log.close)
        child = subprocess.Popen(
            [TWISTD, "-n", "sentinel", *args],
            cwd=directory,
            env=environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def kill() -> None:
            if child.poll() is None:
                child.kill()
                child.wait()

        self.addCleanup(kill)
        self.log_path = directory / "twistd.log"
        return child

    async def get_json(self, url: str) -> Any:
        pool = HTTPConnectionPool(reactor, persistent=False)
        response = await treq.get(url, timeout=2, pool=pool)
        return json.loads(await response.content())

    async def test_run_and_sigterm(self) -> None:
        """
        The agent serves /instances and /pending, reports a killed Redis
        down, and on SIGTERM stops within 5 s with status 143 (SIGTERM
        re-raised, a clean stop to init systems).
        """
        server = RedisServer().start()
        self.addCleanup(server.stop)
        http = free_port()
        child = self.spawn(
            "--redis", f"main=127.0.0.1:{server.port}",
            "--interval", "0.2", "--timeout", "0.1",
            "--http", f"tcp:{http}:interface=127.0.0.1",
        )  # fmt: skip
        base = f"http://127.0.0.1:{http}"
        state: dict[str, Any] = {}

        async def poll_status() -> Any:
            try:
                body = await self.get_json(f"{base}/instances/main")
            except Exception:
                return None
            state["main"] = body
            return body["status"]

        async def until(status: str, timeout: float) -> None:
            started = reactor.seconds()
            while await poll_status() != status:
                if child.poll() is not None:
                    self.fail(f"twistd exited: {self.log_path.read_text()}")
                if reactor.seconds() - started > timeout:
                    self.fail(f"main not {status} within {timeout} s: {state}")
                await wait_for(reactor, lambda: True, 1.0, "a turn", step=0.05)

        await until("up", 15.0)
        pending = await self.get_json(f"{base}/pending")
        self.assertLessEqual(pending["count"], 1)
        server.kill()
        await until("down", 3.0)
        self.assertIn(state["main"]["error"], ("connection lost", "connection refused"))

        child.send_signal(signal.SIGTERM)
        took = await wait_for(
            reactor, lambda: child.poll() is not None, 5.0, "twistd to exit"
        )
        self.assertLess(took, 5.0)
        self.assertEqual(child.returncode, -signal.SIGTERM, self.log_path.read_text())
        self.assertNotIn("Traceback", self.log_path.read_text())

    async def test_sighup_reload(self) -> None:
        """
        Editing the config file and sending SIGHUP adds and removes
        instances in /instances and in ZooKeeper without a restart; an
        invalid file is refused and the running config stays.
        """
        zookeeper = shared_zookeeper()
        first, second = RedisServer().start(), RedisServer().start()
        self.addCleanup(first.stop)
        self.addCleanup(second.stop)
        http = free_port()
        config = Path(self.mktemp()).absolute()
        root = "/reload-test"

        def write(*servers: tuple[str, RedisServer], extra: str = "") -> None:
            tables = "".join(
                f'[[redis]]\nname = "{name}"\nhost = "127.0.0.1"\nport = {s.port}\n'
                for name, s in servers
            )
            config.write_text(
                f"interval = 0.2\ntimeout = 0.1\n{extra}\n"
                f'[zookeeper]\nhosts = "{zookeeper.hosts}"\nroot = "{root}"\n'
                f"{tables}"
            )

        write(("first", first))
        child = self.spawn(
            "--config", str(config), "--http", f"tcp:{http}:interface=127.0.0.1"
        )
        base = f"http://127.0.0.1:{http}"
        kazoo = KazooClient(hosts=zookeeper.hosts, timeout=5)
        kazoo.start(timeout=5)
        self.addCleanup(kazoo.close)
        self.addCleanup(kazoo.stop)

        async def names() -> list[str]:
            try:
                body = await self.get_json(f"{base}/instances")
            except Exception:
                return []
            return [i["name"] for i in body["instances"] if i["status"] == "up"]

        def published() -> list[str]:
            path = f"{root}/instances"
            return sorted(kazoo.get_children(path)) if kazoo.exists(path) else []

        async def until(expected: list[str], timeout: float) -> None:
            started = reactor.seconds()
            while (await names(), published()) != (expected, expected):
                if child.poll() is not None:
                    self.fail(f"twistd exited: {self.log_path.read_text()}")
                if reactor.seconds() - started > timeout:
                    self.fail(f"not {expected}: {await names()}, {published()}")
                await wait_for(reactor, lambda: True, 1.0, "a turn", step=0.05)

        await until(["first"], 15.0)
        write(("second", second))
        child.send_signal(signal.SIGHUP)
        await until(["second"], 5.0)
        config.write_text("interval = 'every now and then'\n")
        child.send_signal(signal.SIGHUP)
        await wait_for(
            reactor,
            lambda: "reload refused" in self.log_path.read_text(),
            5.0,
            "the refusal logged",
        )
        await until(["second"], 2.0)
        child.send_signal(signal.SIGTERM)
        await wait_for(reactor, lambda: child.poll() is not None, 5.0, "exit")
        self.assertEqual(published(), [])

    def test_bad_input_is_one_line(self) -> None:
        """An invalid option value ends with one line, exit 1, no traceback."""
        result = subprocess.run(
            [TWISTD, "-n", "sentinel", "--interval", "1", "--timeout", "2"],
            env=environment(),
            capture_output=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, b"")
        lines = result.stderr.decode().strip().splitlines()
        self.assertEqual(
            lines, ["sentinel: --timeout: 2.0 is greater than --interval 1.0"]
        )

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
from twisted.internet import reactor as _reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from tests.polling import wait_for
from tests.servers import RedisServer, free_port

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

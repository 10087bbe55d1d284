"""
``sentinel-agent``, the installed command: the agent without Twisted's
plugin cache, run as a user would run it.
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
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool

from sentinel.cli import AGENT_SYNOPSIS, _split_log_options
from tests.polling import START_BOUND, pause, wait_for, wait_listening
from tests.servers import RedisServer
from tests.test_twistd import environment

reactor: Any = _reactor

AGENT = Path(sys.executable).with_name("sentinel-agent")


class LogOptionTests(SynchronousTestCase):
    """The two options of ours are taken out; the rest go to twistd sentinel."""

    def test_defaults(self) -> None:
        """Without them: text, no level, every argument kept in order."""
        self.assertEqual(
            _split_log_options(["--redis", "a=h:1", "--interval=2"]),
            ("text", None, ["--redis", "a=h:1", "--interval=2"]),
        )

    def test_both_forms(self) -> None:
        """``--opt value`` and ``--opt=value`` both work, anywhere."""
        self.assertEqual(
            _split_log_options(["--log-format=json", "--x", "--log-level", "warn"]),
            ("json", "warn", ["--x"]),
        )

    def test_bad_values_are_one_line(self) -> None:
        """
        An unknown format or level, or a missing value, ends with one line
        naming the option.
        """
        for argv, expected in [
            (["--log-format", "xml"], "--log-format: 'xml' is not one of text, json"),
            (["--log-level"], "--log-level: a value is required"),
            # Named as given: before, ``SENTINEL_LOG_LEVEL: 'loud' ...``.
            (
                ["--log-level=loud"],
                "--log-level: 'loud' is not a log level"
                " (debug, info, warn, error, critical)",
            ),
        ]:
            with self.assertRaises(SystemExit) as raised:
                _split_log_options(argv)
            self.assertEqual(str(raised.exception.code), f"sentinel: {expected}")


class CommandTests(TestCase):
    """The console script installed with the package."""

    def setUp(self) -> None:
        if not AGENT.exists():
            self.fail(f"{AGENT} is missing: reinstall the package (make venv)")

    def run_agent(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [str(AGENT), *args], env=environment(), capture_output=True, timeout=60
        )

    def test_bad_input_is_one_line(self) -> None:
        """Invalid options end as under twistd: one line, exit 1."""
        result = self.run_agent("--interval", "1", "--timeout", "2")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            result.stderr.decode().strip().splitlines(),
            ["sentinel: --timeout: 2.0 is greater than --interval 1.0"],
        )

    def test_twistd_option(self) -> None:
        """
        An option of twistd's own (``sentinel-agent -n``) is named as
        twistd's, which this command does not take, with the command that
        does. (Before: only ``option -n not recognized``.)
        """
        result = self.run_agent("-n", "--redis", "a=127.0.0.1:1")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(
            result.stderr.decode().strip().splitlines(),
            [
                "sentinel: option -n not recognized: -n is twistd's own option,"
                " which sentinel-agent does not take (it runs twistd --nodaemon"
                " --pidfile= sentinel): run twistd -n ... sentinel ... for it"
            ],
        )

    def test_help_is_this_command_s(self) -> None:
        """
        ``sentinel-agent --help`` names this command and its own two
        options, then every option of ``twistd sentinel``. (Before, it
        began ``Usage: twistd [options] sentinel [options]`` and never
        mentioned ``--log-format`` or ``--log-level``.)
        """
        result = self.run_agent("--help")
        self.assertEqual(result.returncode, 0, result.stderr)
        text = result.stdout.decode()
        self.assertEqual(text.splitlines()[0], AGENT_SYNOPSIS)
        words = " ".join(text.split())
        self.assertIn("--config=", words)
        self.assertIn("--log-format text (the default) or json", words)
        self.assertIn("--log-level debug, info", words)
        self.assertNotIn("twistd", words)

    async def test_runs_the_agent(self) -> None:
        """
        ``sentinel-agent`` runs the agent in the foreground with JSON logs at
        the chosen level (twistd's own info lines are dropped at ``warn``):
        a real Redis is up over HTTP, and SIGTERM ends it with status 143.
        """
        server = RedisServer().start()
        self.addCleanup(server.stop)
        directory = Path(self.mktemp())
        directory.mkdir()
        log_path = directory / "agent.log"
        argv = [
            str(AGENT),
            "--log-format", "json", "--log-level", "warn",
            "--redis", f"main=127.0.0.1:{server.port}",
            "--interval", "0.2", "--timeout", "0.1",
            "--http", "tcp:0:interface=127.0.0.1",
        ]  # fmt: skip
        with log_path.open("wb") as log:
            child = subprocess.Popen(
                argv,
                cwd=directory,
                env=environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.addCleanup(lambda: child.poll() is None and child.kill())
        http = await wait_listening(
            reactor,
            child.pid,
            lambda: None if child.poll() is None else log_path.read_text(),
        )
        status: dict[str, Any] = {}

        async def up() -> bool:
            pool = HTTPConnectionPool(reactor, persistent=False)
            try:
                response = await treq.get(
                    f"http://127.0.0.1:{http}/instances/main", timeout=2, pool=pool
                )
                status.update(json.loads(await response.content()))
            except Exception:
                return False
            return status.get("status") == "up"

        started = reactor.seconds()
        while not await up():
            self.assertIsNone(child.poll(), log_path.read_text())
            self.assertLess(reactor.seconds() - started, START_BOUND, status)
            await pause(reactor, 0.1)
        child.send_signal(signal.SIGTERM)
        await wait_for(reactor, lambda: child.poll() is not None, 5.0, "the exit")
        self.assertEqual(child.returncode, -signal.SIGTERM)
        lines = [json.loads(line) for line in log_path.read_text().splitlines()]
        self.assertEqual([line for line in lines if line["level"] == "info"], [])


class ReaderGoneTests(SynchronousTestCase):
    """
    A command's answer to a reader that has left (``sentinel-agent --help |
    head``, a pager quit early) ends quietly with exit status 0. (Before:
    a 22-line ``BrokenPipeError`` traceback and status 1 with
    ``PYTHONUNBUFFERED`` set, as containers often have it; without it,
    ``Exception ignored ... BrokenPipeError`` and status 120.)
    """

    def run_to_closed_pipe(
        self, argv: list[str], unbuffered: bool
    ) -> subprocess.CompletedProcess[bytes]:
        read, write = os.pipe()
        # No reader from the start: every write fails with EPIPE, as the
        # writes after `head` has left do.
        os.close(read)
        env = environment()
        env.pop("PYTHONUNBUFFERED", None)
        if unbuffered:
            env["PYTHONUNBUFFERED"] = "1"
        try:
            return subprocess.run(
                argv, stdout=write, stderr=subprocess.PIPE, env=env, timeout=60
            )
        finally:
            os.close(write)

    def test_help_and_version(self) -> None:
        """
        ``sentinel-agent --help`` and ``--version``, ``twistd sentinel
        --help`` and ``sentinel-status --help``, buffered or not, to a pipe
        with no reader: no error on standard error, exit status 0.
        """
        twistd = str(AGENT.with_name("twistd"))
        status = str(AGENT.with_name("sentinel-status"))
        for argv in [
            [str(AGENT), "--help"],
            [str(AGENT), "--version"],
            [twistd, "sentinel", "--help"],
            [twistd, "sentinel", "--version"],
            [status, "--help"],
        ]:
            for unbuffered in (False, True):
                with self.subTest(argv=argv[1:], unbuffered=unbuffered):
                    result = self.run_to_closed_pipe(argv, unbuffered)
                    self.assertEqual(
                        (result.returncode, result.stderr.decode()), (0, "")
                    )

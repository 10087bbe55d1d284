"""
HTTP clients against a real agent watching real redis-servers: clients
looping over the biggest answers, idle connections, more connections than
the agent takes, and all of them under a low open-file limit. Checks go on
unharmed; HTTP is what gets refused, and connections idle for long make
room for new ones.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from sentinel import agent, httpd
from sentinel.config import Config, RedisInstance
from sentinel.httpd import MAX_CONNECTIONS
from sentinel.process import FD_RESERVE
from tests.polling import START_BOUND, pause, wait_for
from tests.servers import LOOPBACK, RedisServer, free_port, raise_priority
from tests.test_twistd import HTTP_ANY_PORT, TwistdTestCase, reactor

log = Logger()

LOOPING_CLIENTS = 15
LOOP_SECONDS = 10.0
PATHS = ("/", "/instances", "/metrics")
KEPT_ALIVE = b"GET /healthz HTTP/1.1\r\nHost: agent\r\n\r\n"
# What the agent logs at each collection and freeze (`sentinel.process`).
SETTLED = "objects frozen out of the garbage collector"
# Seconds the checks took to be back in step after that collection at load
# 17 (instances left unchecked for 2 s or more, logged 2 s and 4 s after).
AFTER_SETTLING = 5.0
# `sentinel.firstchecks`' summary, when it counts any instance down.
SOME_DECIDED_DOWN = re.compile(r"decided .*: \d+ up, [1-9]\d* down")


def redis_tables(servers: list[RedisServer], count: int) -> str:
    """``[[redis]]`` tables for `count` instances spread over `servers`."""
    return "".join(
        f'[[redis]]\nname = "r{i:04d}"\nhost = "{LOOPBACK}"\n'
        f"port = {servers[i % len(servers)].port}\n"
        for i in range(count)
    )


def published_down(log_text: str) -> list[str]:
    """
    The lines of an agent's log that say an instance went down, alone or
    summed up among those decided by one check (`sentinel.firstchecks`).
    """
    return [
        line
        for line in log_text.splitlines()
        if " is down (was " in line or SOME_DECIDED_DOWN.search(line)
    ]


class OneAnswer(Protocol):
    """
    Asks for `path` once and reads the answer to the end, keeping only
    whether it was a whole 200 (cheap enough for clients that loop).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.head = b""
        self.tail = b""
        self.done: Deferred[None] = Deferred()

    @property
    def whole(self) -> bool:
        """A 200, chunked to its last chunk."""
        return self.head.startswith(b"HTTP/1.1 200 ") and self.tail == b"0\r\n\r\n"

    def connectionMade(self) -> None:
        self.transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: agent\r\n"
            "Connection: close\r\n\r\n".encode()
        )

    def dataReceived(self, data: bytes) -> None:
        if len(self.head) < 16:
            self.head += data[:16]
        self.tail = (self.tail + data)[-5:]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.done.callback(None)


class IdleClient(Protocol):
    """
    A connection that sends nothing (or, kept alive, one request first:
    `ask`, answered when `answered` fires); `lost` fires when the server
    closes it.
    """

    def __init__(self, ask: bytes = b"") -> None:
        self.lost: Deferred[float] = Deferred()
        self.answered: Deferred[None] = Deferred()
        self.ask = ask
        self.received = b""
        # When data last came: a poll for it notices late on a busy machine.
        self.received_at: float | None = None

    def connectionMade(self) -> None:
        if self.ask:
            self.transport.write(self.ask)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self.received_at = reactor.seconds()
        head, sep, body = self.received.partition(b"\r\n\r\n")
        length = [
            int(line.split(b":", 1)[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        ]
        # An answer of a length given, or chunked (its last chunk).
        whole = len(body) >= length[0] if length else body.endswith(b"0\r\n\r\n")
        if sep and whole and not self.answered.called:
            self.answered.callback(None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(reactor.seconds())


async def idle_clients(port: int, count: int, ask: bytes = b"") -> list[IdleClient]:
    """
    `count` connections to the agent's HTTP port, each sending nothing,
    or `ask` and then nothing once answered (kept alive).
    """
    endpoint = TCP4ClientEndpoint(reactor, LOOPBACK, port, timeout=5)
    clients = [IdleClient(ask) for _ in range(count)]
    for client in clients:
        await connectProtocol(endpoint, client)
        if ask:
            await client.answered
    return clients


class LoadTests(TwistdTestCase):
    """A real ``twistd -n sentinel`` agent and real redis-servers."""

    def servers(self, count: int) -> list[RedisServer]:
        started = []
        for _ in range(count):
            server = RedisServer().start()
            self.addCleanup(server.stop)
            started.append(server)
        return started

    def config(self, text: str) -> str:
        path = Path(self.mktemp()).absolute()
        path.write_text(text)
        return str(path)

    async def until_all_up(self, base: str, child: Any, count: int) -> Any:
        """Wait (at most 60 s) until every instance is up; return /debug/stats."""
        started = reactor.seconds()
        stats: Any = {}
        while reactor.seconds() - started < 60.0:
            if child.poll() is not None:
                self.fail(f"twistd exited: {self.log_path.read_text()}")
            try:
                stats = await self.stats(base)
                if stats["instances_up"] == count and stats["ticks"] > 5:
                    return stats
            except Exception:
                pass
            await pause(reactor, 0.2)
        self.fail(f"not all {count} instances up within 60 s: {stats}")

    async def quiet_failures(self, base: str) -> int:
        """The checks failed in LOOP_SECONDS / 2 without any HTTP client."""
        before = await self.stats(base)
        await pause(reactor, LOOP_SECONDS / 2)
        after = await self.stats(base)
        return int(after["failures"] - before["failures"])

    async def test_looping_clients_cost_no_check(self) -> None:
        """
        1,500 instances on four redis-servers, checked every 0.5 s (timeout
        0.4 s, so that each slice's completion is measured); fifteen
        clients loop over /, /instances and /metrics for 10 s (before
        slicing, such clients made healthy checks time out): no more checks
        fail than in as long without clients, half just before and half
        just after (on a quiet machine, none), and every answer is a whole
        200. The agent and its servers run at a raised priority (where the
        test may raise it), so that other processes' load is not measured.
        """
        count = 1500
        servers = self.servers(4)
        path = self.config(
            f"interval = 0.5\ntimeout = 0.4\n{redis_tables(servers, count)}"
        )
        child = self.spawn("--config", path, "--http", HTTP_ANY_PORT)
        # What is measured is whether the agent's HTTP costs its checks,
        # which only an agent with a CPU to spare can show: at load 16
        # (busy loops and a suite beside), the clients' rounds took 97 s
        # instead of 10, the agent's checks falling 2 s behind by turns
        # (370 failed, none in the quiet windows). So the agent and its
        # redis-servers run ahead of the machine's other processes.
        raised = all(raise_priority(p) for p in (child.pid, *(s.pid for s in servers)))
        http = await self.http_port(child)
        base = f"http://127.0.0.1:{http}"
        await self.until_all_up(base, child, count)
        # The agent's own collection once its connections settle (a full
        # one, then frozen: `sentinel.process`) comes 15-35 s after its
        # start, so within the windows measured here unless waited for. At
        # load 20 it fell in one window or the other in two runs of two,
        # and that window alone had failures: 330 without clients, then 298
        # with them. It is the agent's start-up, not HTTP's cost, so it is
        # waited for (its log line, the second after the start's freeze),
        # and so are its after-effects: at load 17 the checks of 1,280
        # instances were 2 s behind at once just after it, and the first
        # quiet window, started then, failed 494 checks (14 with clients).
        await wait_for(
            reactor,
            lambda: self.log_path.read_text().count(SETTLED) >= 2,
            START_BOUND,
            "the collection once connections settled",
            0.2,
        )
        await pause(reactor, AFTER_SETTLING)
        # The machine is shared: its load can starve the agent and the
        # redis-servers whatever HTTP does (at load 23, 75 of 38,461
        # checks failed with the clients, as many as without). Only more
        # failures than without clients, in the same run, are theirs.
        quiet = await self.quiet_failures(base)
        before = await self.stats(base)
        answers: Counter[str] = Counter()
        whole: Counter[str] = Counter()
        until = reactor.seconds() + LOOP_SECONDS
        endpoint = TCP4ClientEndpoint(reactor, LOOPBACK, http, timeout=5)

        async def loop() -> None:
            while reactor.seconds() < until:
                for path in PATHS:
                    answer = await connectProtocol(endpoint, OneAnswer(path))
                    await answer.done
                    answers[path] += 1
                    whole[path] += answer.whole

        started = time.monotonic()
        await gatherResults(
            [Deferred.fromCoroutine(loop()) for _ in range(LOOPING_CLIENTS)]
        )
        took = time.monotonic() - started
        after = await self.stats(base)
        self.assertEqual(whole, answers)
        listed = (await self.get_json(f"{base}/instances"))["instances"]
        self.assertEqual(len(listed), count)
        quiet += await self.quiet_failures(base)
        figures = {
            "seconds": round(took, 1),
            "answers": dict(answers),
            "checks": after["checks"] - before["checks"],
            "failures": after["failures"] - before["failures"],
            "failures_without_clients": quiet,
            "overruns": after["overruns"] - before["overruns"],
            "tick_completion_seconds": after["tick_completion_seconds"],
            "slowest_slice_seconds": after["http"]["slowest_slice_seconds"],
            "priority_raised": raised,
        }
        log.info("looping clients: {figures}", figures=figures)
        # Per second of each: the clients' window ends when each client's
        # last round does, 10 s on a quiet machine, and 13 s at load 7, 31
        # s in full-suite runs, where the quiet windows stay 10 s in all
        # (at load 7, 150 failures in the clients' 13.4 s against 75 in
        # the quiet 10 s). On a quiet machine, none as ever.
        self.assertLessEqual(
            figures["failures"], quiet * max(1.0, took / LOOP_SECONDS), figures
        )
        self.assertEqual(after["instances_up"], count, figures)
        self.assertGreaterEqual(min(answers.values()), LOOPING_CLIENTS, figures)
        # Every instance is healthy, so none is ever published down, at
        # any load: a run at load 11-20 passed with 26 published down (a
        # reply read as owed for the agent's own lateness), all up again
        # by the end, and up to 267 in the runs that failed.
        self.assertEqual(published_down(self.log_path.read_text()), [], figures)

    # Trial's default is 120 s. At load 13-31 on two cores the agent,
    # starved, took longer than that to render one round of the fifteen
    # clients' answers (two runs of six timed out); the wait ends with the
    # rounds on a quiet machine (about 30 s in all).
    test_looping_clients_cost_no_check.timeout = 360  # type: ignore[attr-defined]

    async def test_over_the_cap_and_the_open_file_limit(self) -> None:
        """
        Under an open-file limit the instances just fit (the agent counts
        its HTTP connections in its reserve), clients kept alive after one
        answer each take every HTTP connection the agent allows and twenty
        more, sending nothing, come one after another: the first takes the
        place of the client kept alive longest, each of the others the
        place of the one before it, which has sent nothing; no check
        fails, and nothing says "Too many open files". A client asking
        ``/healthz`` then is answered in full at once, in the place of the
        last of the twenty; the clients kept alive after the first stay.
        """
        limit = 512
        count = limit - FD_RESERVE
        servers = self.servers(2)
        path = self.config(
            f"interval = 0.5\ntimeout = 0.4\n{redis_tables(servers, count)}"
        )
        child = self.spawn(
            "--config", path, "--http", HTTP_ANY_PORT, open_files=(limit, limit)
        )
        http = await self.http_port(child)
        base = f"http://127.0.0.1:{http}"
        before = await self.until_all_up(base, child, count)
        # The one used by until_all_up may still be closing.
        await pause(reactor, 0.2)
        held = await idle_clients(http, MAX_CONNECTIONS, KEPT_ALIVE)
        answers = [c.received for c in held]
        # One after another, each once the place it took was freed: sent
        # at once, a burst the agent accepts in one turn closes at most
        # MAX_CLOSING to make room and refuses the rest (by design), which
        # is not what this test is about.
        extra: list[IdleClient] = []
        for _ in range(20):
            extra += await idle_clients(http, 1)
            freed = (held[0] if len(extra) == 1 else extra[-2]).lost
            await wait_for(
                reactor, lambda f=freed: f.called, 5.0, "the place taken freed"
            )
        closed = await gatherResults([c.lost for c in extra[:-1]])
        self.assertEqual(len(closed), 19)
        self.assertTrue(held[0].lost.called)
        self.assertFalse(extra[-1].lost.called)

        answer = OneAnswer("/healthz")
        endpoint = TCP4ClientEndpoint(reactor, LOOPBACK, http, timeout=5)
        await connectProtocol(endpoint, answer)
        await answer.done
        self.assertTrue(answer.whole, answer.head)
        await wait_for(
            reactor, lambda: extra[-1].lost.called, 5.0, "the last of the twenty"
        )
        self.assertFalse([c for c in held[1:] if c.lost.called])
        self.assertEqual([c.received for c in held], answers)
        self.assertTrue(all(c.received == b"" for c in extra))
        for client in held[1:]:
            client.transport.loseConnection()
        await gatherResults([c.lost for c in held[1:]])
        after = await self.stats(base)
        self.assertEqual(after["http"]["evicted_connections"], 21)
        self.assertEqual(after["failures"] - before["failures"], 0)
        self.assertEqual(after["instances_up"], count)
        self.assertNotIn("Too many open files", self.log_path.read_text())


class IdleTimeoutTests(TestCase):
    """An agent built in this process, its idle timeout lowered."""

    async def test_idle_connections_closed(self) -> None:
        """
        A connection that sends nothing, and one idle after its answer, are
        both closed by the agent once the idle timeout has passed: the
        second's counted from its request, not from its connection.
        """
        idle = 0.5
        self.patch(httpd, "IDLE_TIMEOUT", idle)
        server = RedisServer().start()
        self.addCleanup(server.stop)
        http = free_port()
        config = Config(
            instances=(RedisInstance("a", LOOPBACK, server.port),),
            agent_id="me",
            http=f"tcp:{http}:interface={LOOPBACK}",
        )
        top = agent.make_agent(config, None, reactor)
        top.privilegedStartService()
        top.startService()
        self.addCleanup(top.stopService)
        [answered] = await idle_clients(http, 1)
        # Idle a while before its request: a timer that the request did not
        # restart closes it that much sooner after it.
        await pause(reactor, idle / 2)
        [silent] = await idle_clients(http, 1)
        asked = reactor.seconds()
        answered.transport.write(b"GET /healthz HTTP/1.1\r\nHost: agent\r\n\r\n")
        await wait_for(
            reactor, lambda: answered.received.endswith(b"0\r\n\r\n"), 5.0, "answer"
        )
        answered_at = answered.received_at
        assert answered_at is not None
        closed_at = await silent.lost
        self.assertLess(closed_at - answered_at, 1.0)
        closed_at = await answered.lost
        # From the request: the agent read it, and restarted the timer
        # once it answered, no sooner than this process sent it. Not from
        # the answer's arrival, which this process, sharing the reactor
        # with the agent, reads as late as a busy machine runs it (0.40 s
        # to the close at load 30).
        self.assertGreaterEqual(closed_at - asked, idle * 0.9)

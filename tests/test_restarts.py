"""
Restarts as a user makes them: ``twistd -n sentinel`` agents with a
state_dir, real redis-servers and the shared real ZooKeeper, while a reader
polls ZooKeeper every 20 ms (`tests.gaps.NodeWatch`) as a proxy would.

- a rolling restart (SIGTERM, start) and ``kill -9`` then a start: no node
  (instance, agent, discovery member) is ever missing, and every one is
  rewritten by the new process; an instance that went down meanwhile is
  published down within ``fall`` checks of the new process's first;
- a stop with no successor: the nodes go with the session;
- SIGUSR2: the nodes go at once, the state file with them;
- a state file others can read: one line, exit 1; a foreign one: not
  reattached, and the agent says why;
- two processes on one state_dir: the newer wins, the older exits 0;
- discovery members, one per instance, across a reconnect and a session
  expiry, present exactly while up.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import attr
import treq
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from twisted.internet import reactor as _reactor
from twisted.logger import Logger
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from sentinel.session import STATE_FILE, encode_state
from sentinel.sharing import ALONE_AFTER
from tests.gaps import NodeWatch
from tests.polling import START_BOUND, pause, wait_for
from tests.servers import (
    LOOPBACK,
    ChildProcess,
    RedisServer,
    listening_port,
    shared_zookeeper,
)
from tests.test_conflicts import wait_async
from tests.test_session import STORED
from tests.test_twistd import TWISTD, environment

reactor: Any = _reactor
log = Logger()

INTERVAL = 0.2
TIMEOUT = 0.1
FALL = 3
# Long enough for a new process to start on a loaded machine before the
# session expires, save where the expiry is what is measured. 8 s was a
# guess at twistd's start: at load 21 a ``kill -9`` then start found the
# session expired, and every node was missing for 1.6-3.2 s (as the
# agent's rule says it must be: the test, not the agent, was wrong). The
# bound the suite gives any twistd child to start, as for the groups'
# restarts (`tests.test_group_integration.RESTART_SESSION`): no test here
# waits for this session to end.
SESSION_TIMEOUT = START_BOUND
SHORT_SESSION_TIMEOUT = 2.0
# Seconds after the exit by which a session of SHORT_SESSION_TIMEOUT left
# by a stop without successor has taken its nodes with it.
EXPIRED_WITHIN = 9.0
HEARTBEAT = 1.0
NAMES = ("r0", "r1", "r2")
# Scheduling slack on a machine shared with other test runs.
SLACK = 1.0
# How long a test waits for what it then measures, or for what no bound
# is promised: only its patience. Far over the seconds a busy machine
# delays an agent's write and this process's poll, far under the
# ``zookeeper.refresh`` (30 s) that would rewrite a node left wrong.
PATIENCE = 15.0


class Agent:
    """One ``twistd -n sentinel`` run of the test's config, with its own log."""

    def __init__(self, case: RestartTestCase, run: int) -> None:
        self._http: int | None = None
        self.log = case.directory / f"run-{run}.log"
        self.child = ChildProcess(
            [
                TWISTD, "-n", "--pidfile=", "sentinel",
                "--config", str(case.config),
                "--http", f"tcp:0:interface={LOOPBACK}",
            ],
            log=self.log,
            env=environment(),
            cwd=case.directory,
        )  # fmt: skip
        self.started = time.time()
        case.addCleanup(self.child.kill)

    @property
    def pid(self) -> int:
        return self.child.pid

    @property
    def http(self) -> int:
        """The agent's HTTP port, once it listens (`listening_port`)."""
        if self._http is None:
            self._http = listening_port(self.child)
        return self._http

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    async def get(self, path: str) -> tuple[int, Any]:
        """GET `path`: its status code and decoded JSON."""
        pool = HTTPConnectionPool(reactor, persistent=False)
        response = await treq.get(
            f"http://{LOOPBACK}:{self.http}{path}", timeout=2, pool=pool
        )
        return response.code, json.loads(await response.content())

    async def stats(self) -> Any:
        """/debug/stats, once it answers (within the start-up bound)."""
        found: list[Any] = []

        async def answered() -> bool:
            if not self.child.running:
                raise AssertionError(f"the agent exited: {self.text()}")
            try:
                found.append((await self.get("/debug/stats"))[1])
            except Exception:
                return False
            return True

        await wait_async(answered, START_BOUND, "/debug/stats")
        return found[-1]

    async def exited(self, timeout: float = 5.0) -> int:
        """The process's status, once it exited (within `timeout`)."""
        await wait_for(reactor, lambda: not self.child.running, timeout, "exit", 0.02)
        return self.child.process.wait()


def take_connection(
    hosts: str, client_id: tuple[int, bytes], close: bool = False
) -> None:
    """
    Connect to ZooKeeper with a session's id and password (a raw
    ConnectRequest: kazoo always closes its session), then drop the
    connection, or with `close` end the session. Either way its holder loses
    its connection; it reconnects to the same session, or finds it expired.
    """
    host, _, port = hosts.partition(":")
    session, password = client_id
    request = struct.pack(
        f">iqiqi{len(password)}s?", 0, 0, int(SESSION_TIMEOUT * 1000), session,
        len(password), password, False,
    )  # fmt: skip
    with socket.create_connection((host, int(port)), timeout=5.0) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        length = struct.unpack(">i", _read(sock, 4))[0]
        _, timeout_ms = struct.unpack(">ii", _read(sock, length)[:8])
        if timeout_ms <= 0:
            raise AssertionError("the session had expired")
        if close:
            # A CloseSession request (type -11), and its reply.
            sock.sendall(struct.pack(">iii", 8, 1, -11))
            length = struct.unpack(">i", _read(sock, 4))[0]
            _read(sock, length)


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise AssertionError("ZooKeeper closed the connection")
        data += chunk
    return data


class RestartTestCase(TestCase):
    """Three redis-servers, a config with a state_dir, and a node watch."""

    def setUp(self) -> None:
        self.zookeeper = shared_zookeeper()
        name = self._testMethodName
        self.root = f"/restart-{name}"
        self.discovery = f"/members-{name}"
        self.directory = Path(self.mktemp()).absolute()
        self.directory.mkdir(parents=True)
        self.state_dir = self.directory / "state"
        self.servers = {n: RedisServer().start() for n in NAMES}
        for server in self.servers.values():
            self.addCleanup(server.stop)
        self.config = self.directory / "sentinel.toml"
        self.write_config(SESSION_TIMEOUT)
        self.kazoo = KazooClient(hosts=self.zookeeper.hosts, timeout=10.0)
        self.kazoo.start(timeout=10.0)
        self.addCleanup(self.kazoo.close)
        self.addCleanup(self.kazoo.stop)
        self.runs = 0

    def write_config(self, session_timeout: float) -> None:
        tables = "".join(
            f'[[redis]]\nname = "{n}"\nhost = "{LOOPBACK}"\nport = {s.port}\n'
            for n, s in self.servers.items()
        )
        self.config.write_text(
            f'agent_id = "restarts"\ninterval = {INTERVAL}\ntimeout = {TIMEOUT}\n'
            f'fall = {FALL}\nstate_dir = "{self.state_dir}"\n'
            f'[zookeeper]\nhosts = "{self.zookeeper.hosts}"\nroot = "{self.root}"\n'
            f"session_timeout = {session_timeout}\nheartbeat = {HEARTBEAT}\n"
            f'discovery = "serverset"\ndiscovery_root = "{self.discovery}"\n'
            f"{tables}"
        )

    def agent(self) -> Agent:
        self.runs += 1
        return Agent(self, self.runs)

    def instance_path(self, name: str) -> str:
        return f"{self.root}/instances/{name}"

    @property
    def agent_path(self) -> str:
        return f"{self.root}/agents/restarts"

    def parent(self, name: str) -> str:
        return f"{self.discovery}/{name}"

    def nodes(self) -> list[str]:
        return [self.agent_path, *(self.instance_path(n) for n in NAMES)]

    def document(self, path: str) -> tuple[dict[str, Any], Any] | None:
        try:
            data, stat = self.kazoo.get(path)
        except NoNodeError:
            # Not asked whether it exists first: it could go in between.
            return None
        return json.loads(data), stat

    def since(self, name: str) -> float | None:
        """The ``since`` of an instance's node, or None without a node."""
        document = self.document(self.instance_path(name))
        return None if document is None else document[0]["since"]

    def status(self, name: str) -> str | None:
        """The ``status`` of an instance's node, or None without a node."""
        document = self.document(self.instance_path(name))
        return None if document is None else document[0]["status"]

    async def started_at(self, agent: Agent) -> float:
        """
        The ``started_at`` of the agent node once `agent` wrote it: when
        that process started, in its own clock.
        """
        found: list[float] = []

        def written() -> bool:
            owner = self.document(self.agent_path)
            if owner is not None and owner[0]["pid"] == agent.pid:
                found.append(owner[0]["started_at"])
            return bool(found)

        await wait_for(reactor, written, PATIENCE, "the agent node rewritten", 0.05)
        return found[0]

    async def first_checked(self, after: float, names: tuple[str, ...]) -> float:
        """
        The earliest ``checked_at`` of `names`' nodes once each is written
        with one later than `after`: a new process's first check, in its
        own clock (it rewrites each node with its first observation).
        """
        checked: dict[str, float] = {}

        def written() -> bool:
            for name in names:
                document = self.document(self.instance_path(name))
                if name not in checked and document is not None:
                    if document[0]["checked_at"] > after:
                        checked[name] = document[0]["checked_at"]
            return len(checked) == len(names)

        await wait_for(reactor, written, PATIENCE, "first checks published", 0.02)
        return min(checked.values())

    def members(self, name: str) -> list[str]:
        parent = self.parent(name)
        return self.kazoo.get_children(parent) if self.kazoo.exists(parent) else []

    async def published(self, agent: Agent, down: tuple[str, ...] = ()) -> int:
        """Wait until `agent` published every node, and a member per up instance."""

        def done() -> bool:
            owner = self.document(self.agent_path)
            if owner is None or owner[0]["pid"] != agent.pid:
                return False
            for name in NAMES:
                node = self.document(self.instance_path(name))
                status = "down" if name in down else "up"
                if node is None or node[0]["status"] != status:
                    return False
                if len(self.members(name)) != (0 if name in down else 1):
                    return False
            return True

        await wait_for(reactor, done, START_BOUND, "every node published", 0.05)
        session = self.kazoo.exists(self.agent_path).ephemeralOwner
        return int(session)

    def watch(self, *, skip: tuple[str, ...] = ()) -> NodeWatch:
        """Watch every node, and the members of the instances not in `skip`."""
        parents = {self.parent(n): 1 for n in NAMES if n not in skip}
        watch = NodeWatch(self.zookeeper.hosts, self.nodes(), parents).start()
        self.addCleanup(watch.stop)
        return watch

    async def rewritten(self, watch: NodeWatch, agent: Agent) -> None:
        """Wait until the new process rewrote every node (its own data)."""

        def done() -> bool:
            if not all(watch.rewritten_at(n) is not None for n in watch.nodes):
                return False
            owner = self.document(self.agent_path)
            return owner is not None and owner[0]["pid"] == agent.pid

        await wait_for(reactor, done, START_BOUND, "every node rewritten", 0.05)

    def figure(self, what: str, value: float) -> None:
        """Record a measured figure in the test log (_trial_temp/test.log)."""
        log.info("measured: {what}: {value:.3f}", what=what, value=value)


class RestartTests(RestartTestCase):
    """The new process takes the session over; readers see nothing go."""

    async def restart(self, how: signal.Signals) -> None:
        first = self.agent()
        session = await self.published(first)
        since = {n: self.since(n) for n in NAMES}
        watch = self.watch()
        first.child.process.send_signal(how)
        status = await first.exited()
        self.assertEqual(status, -how)
        watch.mark()
        second = self.agent()
        await self.rewritten(watch, second)
        self.figure(
            f"{how.name}: rewritten after the start, s", time.time() - second.started
        )
        self.assertEqual(watch.gaps(), {})
        self.assertGreater(watch.polls, 20)
        for name in NAMES:
            self.assertEqual(watch.most_members(self.parent(name)), 1, name)
            document, stat = self.document(self.instance_path(name)) or ({}, None)
            self.assertGreater(document["checked_at"], second.started)
            # Up all along: up since the first process found it so.
            self.assertEqual(document["since"], since[name])
            self.assertEqual(stat.ephemeralOwner, session)
        stats = await second.stats()
        handoff = stats["zookeeper"]["handoff"]
        self.assertEqual(
            (handoff["reattached"], handoff["left_by_pid"]), (True, first.pid)
        )
        self.assertIn("reattached to ZooKeeper session", second.text())
        self.assertNotIn("Traceback", first.text() + second.text())
        # /healthz says so too (issue 10), where a rolling restart waits.
        code, body = await second.get("/healthz")
        self.assertEqual(code, 200)
        self.assertEqual(
            body["session"], {"reattached": True, "not_reattached_because": None}
        )

    async def test_sigterm_then_start(self) -> None:
        """
        A rolling restart: SIGTERM (exit 143), then a new process on the
        same state_dir. No node is missing at any 20 ms poll; each is
        rewritten by the new process, on the same session, and keeps its
        ``since`` (a restart is not a change of status).
        """
        await self.restart(signal.SIGTERM)

    async def test_kill_then_start(self) -> None:
        """``kill -9`` then a start: the same, from the state file alone."""
        await self.restart(signal.SIGKILL)

    async def test_down_while_stopped(self) -> None:
        """
        An instance that went down while no agent ran is published down
        within ``fall`` checks of the new process's first (its member gone
        then), not left up as the node said.
        """
        first = self.agent()
        await self.published(first)
        first.child.kill()
        watch = self.watch(skip=("r2",))
        self.servers["r2"].kill()
        second = self.agent()
        await second.stats()
        took = await wait_for(
            reactor,
            lambda: self.status("r2") == "down",
            PATIENCE,
            "r2 published down",
            0.02,
        )
        self.figure("down while stopped: published after /debug/stats answered", took)
        # The bound is the agent's, in its own clock: from its first checks
        # (the ``checked_at`` it rewrote r0 and r1 with) to when it decided
        # r2 down (the node's ``since``), not from when this process, as
        # starved as the agent on a busy machine, got /debug/stats to when
        # it got to read ZooKeeper (1.00 s of the 1.7 at load 5.8).
        started = await self.started_at(second)
        first = await self.first_checked(started, ("r0", "r1"))
        since = self.since("r2") or 0.0
        self.figure(
            "down while stopped: decided after the process started, s", since - started
        )
        self.figure(
            "down while stopped: decided after its first check, s", since - first
        )
        self.assertGreater(since, first)
        self.assertLessEqual(since - first, INTERVAL * FALL + TIMEOUT + SLACK)
        # Members wait for the reattach's sweep, which waits until the
        # session is known to be this process's alone.
        await wait_for(
            reactor,
            lambda: self.members("r2") == [],
            1.0 + ALONE_AFTER,
            "r2's member gone",
        )
        self.assertEqual(watch.gaps(), {})

    async def test_stop_without_successor(self) -> None:
        """With nobody to take the session, the nodes go when it expires."""
        self.write_config(SHORT_SESSION_TIMEOUT)
        first = self.agent()
        await self.published(first)
        first.child.process.send_signal(signal.SIGTERM)
        self.assertEqual(await first.exited(), -signal.SIGTERM)
        exited = reactor.seconds()
        self.assertIsNotNone(self.kazoo.exists(self.instance_path("r0")))
        took = await wait_for(
            reactor,
            lambda: (
                not any(self.kazoo.exists(n) for n in self.nodes())
                and not any(self.members(n) for n in NAMES)
            ),
            EXPIRED_WITHIN,
            "the nodes gone with the session",
            0.02,
        )
        self.figure("stop without successor: nodes gone after the exit, s", took)
        self.assertLess(reactor.seconds() - exited, EXPIRED_WITHIN)

    async def test_sigusr2_leaves(self) -> None:
        """SIGUSR2: the nodes and members go at once, and so does the state file."""
        first = self.agent()
        await self.published(first)
        first.child.process.send_signal(signal.SIGUSR2)
        self.assertEqual(await first.exited(), 0)
        self.assertEqual([n for n in self.nodes() if self.kazoo.exists(n)], [])
        self.assertEqual([n for n in NAMES if self.members(n)], [])
        self.assertFalse((self.state_dir / STATE_FILE).exists())
        self.assertIn("SIGUSR2: leaving", first.text())

    async def test_overlapping_processes(self) -> None:
        """
        A second process on the same state_dir while the first runs: it
        takes the session over, the first notices, stops writing and exits
        0, and readers see no node missing.
        """
        first = self.agent()
        session = await self.published(first)
        watch = self.watch()
        second = self.agent()
        self.assertEqual(await first.exited(START_BOUND), 0)
        self.assertIn("was taken over by a newer process", first.text())
        await self.published(second)
        self.assertEqual(self.kazoo.exists(self.agent_path).ephemeralOwner, session)
        await pause(reactor, 1.0)
        self.assertEqual(watch.gaps(), {})
        self.assertTrue(second.child.running)
        code, body = await second.get("/healthz")
        self.assertEqual(code, 200, body)
        self.assertNotIn("Traceback", first.text() + second.text())


class StateFileTests(RestartTestCase):
    """State files the agent refuses, or does not reattach to."""

    def test_readable_by_others(self) -> None:
        """A state file others can read: one line, exit 1, nothing started."""
        self.state_dir.mkdir(mode=0o700)
        path = self.state_dir / STATE_FILE
        path.write_bytes(encode_state(STORED))
        path.chmod(0o644)
        result = subprocess.run(
            [TWISTD, "-n", "--pidfile=", "sentinel", "--config", str(self.config),
             "--http", "none"],
            env=environment(),
            capture_output=True,
            timeout=60,
        )  # fmt: skip
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr.decode()),
            (
                1,
                b"",
                f"sentinel: state_dir: {path} is readable or writable by other "
                f"users (mode 0644): it holds the session's password; remove it, "
                f"or chmod 600 it\n",
            ),
        )

    def test_double_start_loser_exits(self) -> None:
        """
        A process started while another one holds the state_dir's lock
        and has recorded no session (a double start: both starting) exits
        at once with one line and status 78, publishing nothing and
        leaving the state_dir as it was. Before, it opened a session of
        its own, wrote it over the other's state file, and ran on until
        the twin rule judged the other live (16.5 s in a real double
        start).
        """
        self.state_dir.mkdir(mode=0o700)
        lock = self.state_dir / "start.lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # The holder named in the lock file is a process just started (one
        # running for over `startlock.STARTING_WINDOW` is an older process,
        # not a double start): not this test's, which may have run longer.
        holder = subprocess.Popen(["sleep", "120"])
        self.addCleanup(holder.wait)
        self.addCleanup(holder.kill)
        os.write(fd, f"{holder.pid}\n".encode())
        result = subprocess.run(
            [TWISTD, "-n", "--pidfile=", "sentinel", "--config", str(self.config),
             "--http", "none"],
            env=environment(),
            capture_output=True,
            timeout=START_BOUND,
        )  # fmt: skip
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr.decode()),
            (
                78,
                b"",
                f"sentinel: state_dir: another process (pid {holder.pid}) is "
                f"starting on {self.state_dir} (it holds {lock}) and has "
                f"recorded no ZooKeeper session yet: a double start; exiting, "
                f"and leaving it alone\n",
            ),
        )
        self.assertEqual(sorted(p.name for p in self.state_dir.iterdir()), [lock.name])
        self.assertIsNone(self.kazoo.exists(self.root))

    async def test_another_agent_id_refused(self) -> None:
        """
        A process started with another agent_id on the state_dir of an
        agent that runs (its session recorded) exits at once with one line
        and status 78, and that agent runs on, its state file its own.
        Before, the second went on beside it with a session of its own and
        wrote its state file over the first's, which then logged a
        state-file error until its stop.
        """
        first = self.agent()
        state = self.state_dir / STATE_FILE

        def recorded() -> bool:
            try:
                return bool(json.loads(state.read_bytes())["owner"]["pid"] == first.pid)
            except (OSError, ValueError, KeyError):
                return False

        await wait_for(reactor, recorded, START_BOUND, "the first's session", 0.05)
        result = subprocess.run(
            [TWISTD, "-n", "--pidfile=", "sentinel", "--config", str(self.config),
             "--http", "none", "--agent-id", "renamed"],
            env=environment(),
            capture_output=True,
            timeout=START_BOUND,
        )  # fmt: skip
        lock = self.state_dir / "start.lock"
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr.decode()),
            (
                78,
                b"",
                f"sentinel: state_dir: {self.state_dir} is agent id 'restarts''s, "
                f"whose process (pid {first.pid}) runs and holds {lock}: a "
                f"state_dir is one agent's; exiting, and leaving it alone (to "
                f"rename that agent, stop it first; else give this one its own "
                f"state_dir)\n",
            ),
        )
        self.assertTrue(recorded())
        self.assertTrue(first.child.running)
        self.assertNotIn("no longer holds", first.text())
        os.kill(first.pid, signal.SIGTERM)
        self.assertEqual(await first.exited(), -signal.SIGTERM)

    async def test_foreign_state_file(self) -> None:
        """
        A state file for another ZooKeeper root is not reattached: the
        agent starts a session of its own, says why (and that the session
        it names, its process gone, is closed), and replaces the file.
        """
        self.state_dir.mkdir(mode=0o700)
        path = self.state_dir / STATE_FILE
        # The process that left the file: gone (reaped).
        leaver = subprocess.Popen(["true"])
        leaver.wait()
        left = attr.evolve(STORED, owner=attr.evolve(STORED.owner, pid=leaver.pid))
        path.write_bytes(encode_state(left))
        path.chmod(0o600)
        agent = self.agent()
        await self.published(agent)
        handoff = (await agent.stats())["zookeeper"]["handoff"]
        self.assertIs(handoff["reattached"], False)
        self.assertEqual(
            handoff["not_reattached_because"],
            f"{path}: for another root ('/sentinel'): its session is closed",
        )
        self.assertIn("not reattached", agent.text())
        stored = json.loads(path.read_bytes())
        self.assertEqual(
            (stored["hosts"], stored["root"]), (self.zookeeper.hosts, self.root)
        )


class DiscoveryTests(RestartTestCase):
    """Members, one per instance, through what a session goes through."""

    async def test_members_follow_the_instance(self) -> None:
        """
        A member goes when its instance is down and comes back when it is
        up; a reconnect keeps it; a session expiry replaces it; never two.
        """
        agent = self.agent()
        await self.published(agent)
        watch = self.watch(skip=("r0",))
        paused = self.servers["r0"]
        stopped = time.time()
        paused.pause()
        self.addCleanup(paused.resume)
        took = await wait_for(
            reactor,
            lambda: self.members("r0") == [] and self.status("r0") == "down",
            PATIENCE,
            "r0's member gone and r0 published down",
            0.02,
        )
        self.figure("member gone after SIGSTOP, s", took)
        # The bound is the agent's: when it decided, in its own clock (the
        # node's ``since``), not when this process, as starved as the agent
        # on a busy machine, got to read ZooKeeper.
        since = self.since("r0") or 0.0
        self.assertGreater(since, stopped)
        self.figure("down decided after SIGSTOP, s", since - stopped)
        self.assertLessEqual(since - stopped, INTERVAL * FALL + TIMEOUT + SLACK)
        paused.resume()
        await wait_for(
            reactor,
            lambda: len(self.members("r0")) == 1,
            PATIENCE,
            "r0's member back",
        )

        # A reconnect: someone takes the connection, the agent takes it back.
        stats = await agent.stats()
        session = int(stats["zookeeper"]["session_id"], 16)
        state = json.loads((self.state_dir / STATE_FILE).read_bytes())
        password = base64.b64decode(state["password"])
        before = {n: self.members(n) for n in NAMES}
        take_connection(self.zookeeper.hosts, (session, password))
        await pause(reactor, 1.0)
        await self.published(agent)
        self.assertEqual({n: self.members(n) for n in NAMES}, before)
        self.assertIn("ZooKeeper suspended", agent.text())
        self.assertEqual(watch.gaps(), {})

        # An expiry: the session is closed under it; new members, one each.
        take_connection(self.zookeeper.hosts, (session, password), close=True)
        await wait_for(
            reactor,
            lambda: (
                self.kazoo.exists(self.agent_path) is not None
                and self.kazoo.exists(self.agent_path).ephemeralOwner != session
            ),
            START_BOUND,
            "a new session",
            0.05,
        )
        await self.published(agent)
        self.assertNotEqual(self.kazoo.exists(self.agent_path).ephemeralOwner, session)
        for name in NAMES:
            self.assertEqual(len(self.members(name)), 1, name)
        for name in ("r1", "r2"):
            self.assertEqual(watch.most_members(self.parent(name)), 1, name)


class CarriedChecksTests(RestartTestCase):
    """The state file's ``covered``, as a real process reads and writes it."""

    async def reattach_with(self, covered: object) -> tuple[Agent, Agent]:
        """
        A process publishes every node and stops (SIGTERM); its state file
        is given `covered`; a second process reattaches and stops (SIGTERM)
        once it rewrote every node. No node is ever missing.
        """
        first = self.agent()
        await self.published(first)
        watch = self.watch()
        first.child.process.send_signal(signal.SIGTERM)
        self.assertEqual(await first.exited(), -signal.SIGTERM)
        path = self.state_dir / STATE_FILE
        document = json.loads(path.read_bytes())
        self.assertNotIn("covered", document)
        document["covered"] = covered
        path.write_text(json.dumps(document))
        watch.mark()
        second = self.agent()
        await self.rewritten(watch, second)
        second.child.process.send_signal(signal.SIGTERM)
        self.assertEqual(await second.exited(), -signal.SIGTERM)
        self.assertEqual(watch.gaps(), {})
        stored = json.loads(path.read_bytes())
        # Its round done, the file says its checks, and names none.
        self.assertNotIn("covered", stored)
        self.assertGreater(stored["checked_at"], second.started)
        self.assertIn("reattached to ZooKeeper session", second.text())
        self.assertNotIn("Traceback", first.text() + second.text())
        return first, second

    async def test_carried_checks_count(self) -> None:
        """
        The instances the file names as checked since its ``checked_at``
        count in the next process's first round (its log says how many
        the file names).
        """
        _, second = await self.reattach_with("r0/r1/not-watched")
        self.assertIn("names 3 instance(s) checked since", second.text())

    async def test_covered_not_understood(self) -> None:
        """
        A ``covered`` of another type carries nothing, and the file is
        reattached by all the same.
        """
        _, second = await self.reattach_with(["r0", "r1", "r2"])
        self.assertNotIn("checked since", second.text())

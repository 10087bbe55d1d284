"""
The agent publishing to a real ZooKeeper, on the real reactor: the documented
layout and ACLs, detection published within its bound, and recovery from
every way a ZooKeeper session ends (outage, wiped server, forced expiry,
another owner) without the checks ever stopping or threads piling up.

The tests read ZooKeeper through a kazoo client of their own; each read is a
short blocking call with a timeout. Every test works under a root of its
own on the shared ZooKeeper, and restores the server after disturbing it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, cast

from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError, NoNodeError, NotEmptyError
from kazoo.protocol.states import ZnodeStat
from kazoo.retry import KazooRetry
from kazoo.security import (
    ACL,
    OPEN_ACL_UNSAFE,
    READ_ACL_UNSAFE,
    make_acl,
    make_digest_acl,
)
from twisted.application.service import MultiService
from twisted.internet import reactor as _reactor
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from sentinel.agent import make_agent
from sentinel.config import Config, RedisInstance, ZooKeeperConfig
from sentinel.monitor import Monitor
from sentinel.publisher import ZooKeeperPublisher
from sentinel.writes import FAILING_AFTER
from sentinel.zk import CONNECTED, ZooKeeper
from tests.contract import AGENT_FIELDS, INSTANCE_FIELDS
from tests.polling import pause, wait_for
from tests.servers import (
    LOOPBACK,
    RedisServer,
    ZooKeeperServer,
    refusing_port,
    shared_zookeeper,
)

reactor: Any = _reactor
log = Logger()

AGENT_ID = "zk-test-agent"
INTERVAL = 0.2
TIMEOUT = 0.1
FALL = 3
RISE = 2
# The server's minSessionTimeout is two ticks (1 s); 2 s keeps outages short
# while leaving kazoo time to notice a dead connection (2/3 of it).
SESSION_TIMEOUT = 2.0
HEARTBEAT = 1.0
REFRESH = 5.0
# The publisher's own slack between a status change and its write.
PUBLISH_SLACK = 0.1
# Scheduling slack for a loaded CI machine.
SLACK = 0.4
READ_TIMEOUT = 2.0
# After ZooKeeper comes back: the restarted server keeps the old session
# (and its nodes) until the session times out; the replaced client gets it
# back, or, were it gone, the publisher's next retry (1 s) takes the nodes
# over; plus kazoo's reconnect and the JVM.
RESYNC_BOUND = SESSION_TIMEOUT + 6.0

Node = tuple[dict[str, Any], ZnodeStat]


class Reader:
    """
    The test's own view of ZooKeeper: a separate kazoo client whose every
    call blocks for at most `READ_TIMEOUT`.
    """

    def __init__(self, hosts: str, auth: str | None = None) -> None:
        self.client = KazooClient(
            hosts=hosts,
            timeout=10.0,
            connection_retry=KazooRetry(max_tries=-1, max_delay=0.5),
            auth_data=[("digest", auth)] if auth else None,
        )
        self.client.start(timeout=5.0)

    def node(self, path: str) -> Node | None:
        """The node's JSON data and stat, or None if it does not exist."""
        try:
            data, stat = self.client.get_async(path).get(timeout=READ_TIMEOUT)
        except NoNodeError:
            return None
        return json.loads(data), stat

    def children(self, path: str) -> list[str]:
        """The node's children, or [] if it does not exist."""
        try:
            children = self.client.get_children_async(path).get(timeout=READ_TIMEOUT)
        except NoNodeError:
            return []
        return sorted(children)

    def exists(self, path: str) -> bool:
        """Whether the node exists."""
        stat = self.client.exists_async(path).get(timeout=READ_TIMEOUT)
        return stat is not None

    def acls(self, path: str) -> set[tuple[int, str, str]]:
        """The node's ACL as (perms, scheme, id) triples."""
        acls, _ = self.client.get_acls_async(path).get(timeout=READ_TIMEOUT)
        return _acl_set(acls)

    def close(self) -> None:
        """End the session (bounded by kazoo's own close timeout)."""
        self.client.stop()
        self.client.close()


def _acl_set(acls: list[ACL]) -> set[tuple[int, str, str]]:
    return {(a.perms, a.id.scheme, a.id.id) for a in acls}


class Agent:
    """An agent running in this process, and the parts the tests look at."""

    def __init__(self, top: MultiService, root: str) -> None:
        self.top = top
        self.root = root
        self.monitor = cast(Monitor, top.getServiceNamed("monitor"))
        self.publisher = cast(ZooKeeperPublisher, top.getServiceNamed("publisher"))

    def instance_path(self, name: str) -> str:
        return f"{self.root}/instances/{name}"

    @property
    def agent_path(self) -> str:
        return f"{self.root}/agents/{AGENT_ID}"

    @property
    def session_id(self) -> int | None:
        return self.publisher.zk.session_id

    def status(self, name: str) -> str | None:
        return self.monitor.states[name].health.status


class ZooKeeperTestCase(TestCase):
    """Agents against the shared ZooKeeper, each test under its own root."""

    def setUp(self) -> None:
        self.zookeeper: ZooKeeperServer = shared_zookeeper()
        self.root = f"/t-{self._testMethodName}"

    def redis(self) -> RedisServer:
        server = RedisServer().start()
        self.addCleanup(server.stop)
        return server

    def reader(self, auth: str | None = None, hosts: str | None = None) -> Reader:
        reader = Reader(hosts or self.zookeeper.hosts, auth)
        self.addCleanup(reader.close)
        return reader

    def start_agent(
        self,
        servers: dict[str, RedisServer],
        auth: str | None = None,
        hosts: str | None = None,
    ) -> Agent:
        config = Config(
            instances=tuple(
                RedisInstance(name, LOOPBACK, server.port)
                for name, server in servers.items()
            ),
            agent_id=AGENT_ID,
            interval=INTERVAL,
            timeout=TIMEOUT,
            rise=RISE,
            fall=FALL,
            http="none",
            zookeeper=ZooKeeperConfig(
                hosts=hosts or self.zookeeper.hosts,
                root=self.root,
                session_timeout=SESSION_TIMEOUT,
                refresh=REFRESH,
                heartbeat=HEARTBEAT,
                auth=auth,
            ),
        )
        top = make_agent(config, None, reactor)
        top.startService()
        self.addCleanup(lambda: top.stopService() if top.running else None)
        return Agent(top, self.root)

    def disturb_zookeeper(self) -> ZooKeeperServer:
        """The shared server, restored (running, answering) after the test."""
        # Registered after the agent's own cleanup, so it runs first: the
        # agent then stops against a working server.
        self.addCleanup(self.zookeeper.restore)
        return self.zookeeper

    async def wait_node(
        self,
        reader: Reader,
        path: str,
        condition: Callable[[dict[str, Any], ZnodeStat], bool],
        timeout: float,
        what: str,
        step: float = 0.02,
    ) -> tuple[float, Node]:
        """
        Poll `path` until it exists and `condition(data, stat)` holds;
        return how long that took and the node. A read that fails (the
        reader reconnecting) counts as not yet.
        """
        seen: list[Any] = [None]

        def check() -> bool:
            try:
                node = reader.node(path)
            except Exception as e:
                seen[0] = e
                return False
            seen[0] = node
            return node is not None and condition(*node)

        try:
            took = await wait_for(reactor, check, timeout, what, step)
        except AssertionError as e:
            raise AssertionError(f"{e}; last read: {seen[0]!r}") from None
        return took, cast(Node, seen[0])

    async def wait_published(
        self, agent: Agent, reader: Reader, statuses: dict[str, str], timeout: float
    ) -> float:
        """
        Wait until every instance node and the agent node are written by the
        agent's current session, the instances with `statuses`; return how
        long that took.
        """
        started = reactor.seconds()

        def ours(data: dict[str, Any], stat: ZnodeStat) -> bool:
            return bool(stat.ephemeralOwner == agent.session_id)

        def ours_with(status: str) -> Callable[[dict[str, Any], ZnodeStat], bool]:
            return lambda d, s: ours(d, s) and d["status"] == status

        for name, status in statuses.items():
            remaining = timeout - (reactor.seconds() - started)
            await self.wait_node(
                reader,
                agent.instance_path(name),
                ours_with(status),
                remaining,
                f"{name} published {status} by session {agent.session_id}",
            )
        remaining = timeout - (reactor.seconds() - started)
        await self.wait_node(
            reader,
            agent.agent_path,
            lambda d, s: ours(d, s) and d["instances"] == sorted(statuses),
            remaining,
            "agent node published",
        )
        return float(reactor.seconds() - started)

    def figure(self, what: str, seconds: float) -> None:
        """Record a measured time in the test log (_trial_temp/test.log)."""
        log.info("measured: {what}: {seconds:.3f} s", what=what, seconds=seconds)


class LayoutTests(ZooKeeperTestCase):
    """What the agent writes, and who owns it."""

    async def test_documented_nodes(self) -> None:
        """
        Each instance node and the agent node carry exactly the fields of
        DESIGN.md section 5, with their documented types and values, and
        are ephemeral nodes of the agent's own session.
        """
        one, two = self.redis(), self.redis()
        agent = self.start_agent({"one": one, "two": two})
        reader = self.reader()
        await self.wait_published(agent, reader, {"one": "up", "two": "up"}, 3.0)
        session = agent.session_id
        self.assertIsNotNone(session)
        self.assertEqual(reader.children(f"{self.root}/instances"), ["one", "two"])
        self.assertEqual(reader.children(f"{self.root}/agents"), [AGENT_ID])

        for name, server in (("one", one), ("two", two)):
            node = reader.node(agent.instance_path(name))
            assert node is not None
            data, stat = node
            self.assertEqual(set(data), INSTANCE_FIELDS)
            self.assertEqual(stat.ephemeralOwner, session)
            self.assertEqual(
                (data["name"], data["host"], data["port"]),
                (name, LOOPBACK, server.port),
            )
            self.assertEqual(data["status"], "up")
            self.assertIs(data["ready"], True)
            self.assertEqual(data["role"], "master")
            self.assertIsNone(data["master_host"])
            self.assertIsNone(data["master_port"])
            self.assertIsNone(data["master_link_status"])
            self.assertIsInstance(data["latency_ms"], float)
            self.assertIsInstance(data["since"], float)
            self.assertIsInstance(data["checked_at"], float)
            self.assertLessEqual(data["since"], data["checked_at"])
            self.assertLess(abs(data["checked_at"] - time.time()), 5.0)
            self.assertIsNone(data["error"])
            self.assertEqual(data["agent"], AGENT_ID)
            self.assertEqual(data["schema"], 1)

        node = reader.node(agent.agent_path)
        assert node is not None
        data, stat = node
        self.assertEqual(set(data), AGENT_FIELDS)
        self.assertEqual(stat.ephemeralOwner, session)
        self.assertEqual(data["agent"], AGENT_ID)
        self.assertIsInstance(data["pid"], int)
        self.assertIsInstance(data["version"], str)
        self.assertIsInstance(data["started_at"], float)
        self.assertGreaterEqual(data["heartbeat_at"], data["started_at"])
        self.assertEqual(data["interval"], INTERVAL)
        self.assertEqual(data["instances"], ["one", "two"])
        # The heartbeat rewrites the agent node.
        await self.wait_node(
            reader,
            agent.agent_path,
            lambda d, s: d["heartbeat_at"] > data["heartbeat_at"],
            HEARTBEAT + 1.0,
            "agent node heartbeat",
        )

    async def test_sigstopped_redis_published_down(self) -> None:
        """
        A SIGSTOPped Redis shows down in ZooKeeper within interval*fall +
        timeout, plus the publisher's slack; the other instance stays up.
        """
        paused, other = self.redis(), self.redis()
        agent = self.start_agent({"paused": paused, "other": other})
        reader = self.reader()
        await self.wait_published(agent, reader, {"paused": "up", "other": "up"}, 3.0)
        paused.pause()
        self.addCleanup(paused.resume)
        bound = INTERVAL * FALL + TIMEOUT + PUBLISH_SLACK + SLACK
        took, (data, _) = await self.wait_node(
            reader,
            agent.instance_path("paused"),
            lambda d, s: d["status"] == "down",
            bound + 2.0,
            "paused published down",
            step=0.01,
        )
        self.figure("SIGSTOP to down in ZooKeeper", took)
        self.assertLessEqual(
            took, bound, f"down in ZooKeeper after {took:.3f} s (bound {bound} s)"
        )
        self.assertTrue(data["error"].startswith("timeout"), data["error"])
        other_node = reader.node(agent.instance_path("other"))
        assert other_node is not None
        self.assertEqual(other_node[0]["status"], "up")


class OutageTests(ZooKeeperTestCase):
    """ZooKeeper goes away; everything is published again when it returns."""

    async def test_outage_longer_than_session(self) -> None:
        """
        ZooKeeper stopped for longer than the session timeout and restarted
        with its data: checks go on throughout, /healthz's ZooKeeper reason
        is set during the outage, and afterwards every node is written again
        by the agent's current session, with the current state, including
        a Redis killed during the outage. The server kept the session, and
        the client that replaced the one cut off gets it back: the nodes
        stay the session's own, with no wait for an old session's end.
        """
        stays, dies = self.redis(), self.redis()
        agent = self.start_agent({"stays": stays, "dies": dies})
        reader = self.reader()
        await self.wait_published(agent, reader, {"stays": "up", "dies": "up"}, 3.0)
        reader.close()
        old_session = agent.session_id
        monitor, publisher = agent.monitor, agent.publisher
        ticks = monitor.ticks
        checks = monitor.states["stays"].health.checks
        replacements = publisher.zk.replacements

        zookeeper = self.disturb_zookeeper()
        zookeeper.stop()
        stopped_at = reactor.seconds()
        await wait_for(
            reactor,
            lambda: publisher.unhealthy_reason() is not None,
            SESSION_TIMEOUT + SLACK,
            "unhealthy while ZooKeeper is stopped",
        )
        dies.kill()
        await wait_for(
            reactor,
            lambda: agent.status("dies") == "down",
            INTERVAL * FALL + TIMEOUT + 1.0 + SLACK,
            "dies down while ZooKeeper is stopped",
        )
        await wait_for(
            reactor,
            lambda: publisher.zk.replacements > replacements,
            SESSION_TIMEOUT + 1.0 + SLACK,
            "client replaced during the outage",
        )
        reason = publisher.unhealthy_reason()
        self.assertIsNotNone(reason)
        self.assertIn("zookeeper", reason or "")
        outage = reactor.seconds() - stopped_at
        self.assertGreater(outage, SESSION_TIMEOUT)
        # The loop kept its pace (allowing for a slow machine), and the
        # healthy instance was checked and stayed up.
        self.assertGreaterEqual(monitor.ticks - ticks, int(outage / INTERVAL * 0.6))
        self.assertGreater(monitor.states["stays"].health.checks, checks)
        self.assertEqual(agent.status("stays"), "up")

        # The agent runs while ZooKeeper starts, and the reader (a blocking
        # start of its own) is made once the agent is back: the server
        # gives the session it kept one session timeout from its start.
        await zookeeper.start_beside()
        started_at = reactor.seconds()
        await wait_for(
            reactor,
            lambda: publisher.zk.state == CONNECTED,
            RESYNC_BOUND,
            "connected again",
        )
        reader = self.reader()
        await self.wait_published(
            agent, reader, {"stays": "up", "dies": "down"}, RESYNC_BOUND
        )
        resync = reactor.seconds() - started_at
        self.figure("resync after ZooKeeper restart (same data)", resync)
        self.assertEqual(agent.session_id, old_session)
        self.assertEqual(publisher.stats()["waiting_takeover"], [])
        await wait_for(
            reactor,
            lambda: publisher.unhealthy_reason() is None,
            RESYNC_BOUND,
            "healthy again on the session kept",
        )
        self.assertGreater(monitor.states["stays"].health.checks, checks)

    async def test_wiped_zookeeper(self) -> None:
        """
        ZooKeeper stopped, wiped and restarted empty, shortly: kazoo's client
        has seen newer transactions than the empty server and would stay
        suspended; the agent asks the server that refuses it (``srvr``),
        finds it behind, replaces the client at once rather than after
        the session timeout, and writes every node again, with the
        current state.
        """
        stays, dies = self.redis(), self.redis()
        agent = self.start_agent({"stays": stays, "dies": dies})
        reader = self.reader()
        await self.wait_published(agent, reader, {"stays": "up", "dies": "up"}, 3.0)
        before = reader.node(agent.instance_path("stays"))
        assert before is not None
        # The reader has seen newer transactions too: it would be refused.
        reader.close()
        publisher = agent.publisher
        replacements = publisher.zk.replacements

        zookeeper = self.disturb_zookeeper()
        zookeeper.stop()
        dies.kill()
        zookeeper.wipe()
        zookeeper.start()
        started_at = reactor.seconds()
        reader = self.reader()
        await self.wait_published(
            agent, reader, {"stays": "up", "dies": "down"}, SESSION_TIMEOUT + 4.0
        )
        resync = reactor.seconds() - started_at
        self.figure("resync after ZooKeeper restart (wiped)", resync)
        after = reader.node(agent.instance_path("stays"))
        assert after is not None
        # Created anew, by a new session: the wiped server knew none. (Not
        # compared by transaction id: how many transactions came before the
        # first write or after the wipe depends on what ran before.)
        self.assertNotEqual(after[1].ephemeralOwner, before[1].ephemeralOwner)
        self.assertGreater(publisher.zk.replacements, replacements)
        self.assertEqual(publisher.zk.replaced_behind, 1)
        # The reader may see a write before the agent hears it confirmed.
        await wait_for(
            reactor,
            lambda: publisher.unhealthy_reason() is None,
            RESYNC_BOUND,
            "healthy once its writes are confirmed",
        )

    async def test_forced_session_expiry(self) -> None:
        """
        When the server ends the agent's session (another client takes the
        session over with its id and password, then closes it), the agent
        gets a new session and writes every node again on it.
        """
        server = self.redis()
        agent = self.start_agent({"r": server})
        reader = self.reader()
        await self.wait_published(agent, reader, {"r": "up"}, 3.0)
        old_session = agent.session_id
        for _ in range(3):
            client_id = agent.publisher.zk.client_id
            assert client_id is not None
            thief = KazooClient(
                hosts=self.zookeeper.hosts, timeout=SESSION_TIMEOUT, client_id=client_id
            )
            thief.start(timeout=5.0)
            thief.stop()
            thief.close()
            try:
                await wait_for(
                    reactor,
                    lambda: agent.session_id not in (None, old_session),
                    2.0,
                    "a new session",
                )
                break
            except AssertionError:
                # The agent's client won the session back before it was
                # closed; try again.
                continue
        took = await self.wait_published(agent, reader, {"r": "up"}, 3.0)
        self.figure("nodes re-created after forced expiry", took)
        self.assertNotIn(agent.session_id, (None, old_session))

    async def test_takeover(self) -> None:
        """
        An instance node held by another live session is left alone (the
        publisher says it waits to take it over) until that session ends,
        then the agent writes it on its own session.
        """
        server = self.redis()
        path = f"{self.root}/instances/r"
        other = Reader(self.zookeeper.hosts)
        self.addCleanup(other.close)
        other.client.create(path, b'{"old": true}', ephemeral=True, makepath=True)
        other_session = other.client.client_id[0]
        agent = self.start_agent({"r": server})
        reader = self.reader()
        await wait_for(
            reactor,
            lambda: agent.publisher.stats()["waiting_takeover"] == [path],
            3.0,
            "waiting to take over",
            step=0.005,
        )
        # A few retries later the node is still the other session's.
        await pause(reactor, 2.5)
        node = reader.node(path)
        assert node is not None
        self.assertEqual(node[0], {"old": True})
        self.assertEqual(node[1].ephemeralOwner, other_session)
        # Meanwhile the agent node, which nobody else holds, is written.
        await self.wait_node(
            reader,
            agent.agent_path,
            lambda d, s: s.ephemeralOwner == agent.session_id,
            1.0,
            "agent node written",
        )

        other.close()
        took = await self.wait_published(agent, reader, {"r": "up"}, 3.0)
        self.figure("takeover after the other session closed", took)
        # The reader can see the node before the agent has the create's
        # answer (kazoo hands it to the reactor thread): soon after, then.
        await wait_for(
            reactor,
            lambda: agent.publisher.stats()["waiting_takeover"] == [],
            1.0,
            "no node waiting to be taken over",
        )


class SecurityAndPathTests(ZooKeeperTestCase):
    """Digest ACLs and chroots."""

    async def test_digest_acl(self) -> None:
        """
        With digest auth, the agent's nodes carry world:read plus the
        agent's identity:all, and so do the parents it creates (ZooKeeper
        checks a delete against the parent's ACL). A client without those
        credentials can read the nodes but neither set nor delete them.
        """
        server = self.redis()
        agent = self.start_agent({"r": server}, auth="user:pw")
        owner = self.reader(auth="user:pw")
        await self.wait_published(agent, owner, {"r": "up"}, 3.0)
        expected = _acl_set([*READ_ACL_UNSAFE, make_digest_acl("user", "pw", all=True)])
        paths = [agent.instance_path("r"), agent.agent_path]
        for path in [*paths, f"{self.root}/instances", f"{self.root}/agents"]:
            self.assertEqual(owner.acls(path), expected, path)

        for auth in (None, "user:wrong", "intruder:pw"):
            stranger = self.reader(auth=auth)
            for path in paths:
                node = stranger.node(path)
                assert node is not None
                self.assertEqual(node[0]["agent"], AGENT_ID)
                with self.assertRaises(NoAuthError, msg=f"set {path} as {auth}"):
                    stranger.client.set_async(path, b"{}").get(timeout=READ_TIMEOUT)
                with self.assertRaises(NoAuthError, msg=f"delete {path} as {auth}"):
                    stranger.client.delete_async(path).get(timeout=READ_TIMEOUT)
        node = owner.node(agent.instance_path("r"))
        assert node is not None
        self.assertEqual(node[1].ephemeralOwner, agent.session_id)

    async def test_node_made_read_only_fails_health(self) -> None:
        """
        An instance node whose ACL someone makes read-only cannot be
        written: once its writes have failed for FAILING_AFTER, health fails
        naming the node and the error (ZooKeeper still says up while the
        instance is down); given its rights back, it is written and health
        is back.
        """
        server = self.redis()
        agent = self.start_agent({"r": server})
        reader = self.reader()
        await self.wait_published(agent, reader, {"r": "up"}, 3.0)
        path = agent.instance_path("r")
        read_only = [make_acl("world", "anyone", read=True, admin=True)]
        reader.client.set_acls_async(path, read_only).get(timeout=READ_TIMEOUT)
        server.pause()
        self.addCleanup(server.resume)

        def reason() -> str:
            return agent.publisher.unhealthy_reason() or ""

        bound = INTERVAL * FALL + TIMEOUT + FAILING_AFTER + 2.0
        await wait_for(reactor, lambda: "not written" in reason(), bound, "unhealthy")
        self.assertIn(f"zookeeper: {path} not written for", reason())
        # "(NoAuthError)", or "(NoAuthError; being written again)" when the
        # reason is read while a retry of the write is in flight.
        self.assertRegex(
            reason(), r"\(NoAuthError(; being written again)?\): its published"
        )
        self.assertIn("its published status is stale", reason())
        self.assertEqual(agent.status("r"), "down")
        node = reader.node(path)
        assert node is not None
        self.assertEqual(node[0]["status"], "up")

        reader.client.set_acls_async(path, OPEN_ACL_UNSAFE).get(timeout=READ_TIMEOUT)
        await self.wait_node(
            reader, path, lambda d, s: d["status"] == "down", 3.0, "written down"
        )
        await wait_for(reactor, lambda: not reason(), 3.0, "healthy again")

    async def test_chroot(self) -> None:
        """A chroot suffix in hosts puts the nodes under it: /app{root}."""
        server = self.redis()
        chroot = f"/app-{self._testMethodName}"
        agent = self.start_agent({"r": server}, hosts=self.zookeeper.hosts + chroot)
        inside = self.reader(hosts=self.zookeeper.hosts + chroot)
        await self.wait_published(agent, inside, {"r": "up"}, 3.0)
        outside = self.reader()
        self.assertTrue(outside.exists(f"{chroot}{self.root}/instances/r"))
        self.assertTrue(outside.exists(f"{chroot}{self.root}/agents/{AGENT_ID}"))
        self.assertFalse(outside.exists(self.root))

    async def published_in_chroot(
        self, chroot: str, auth: str | None = None
    ) -> tuple[Agent, Reader]:
        """An agent published up under `chroot`; a reader outside it."""
        server = self.redis()
        hosts = self.zookeeper.hosts + chroot
        agent = self.start_agent({"r": server}, auth=auth, hosts=hosts)
        inside = self.reader(auth=auth, hosts=hosts)
        await self.wait_published(agent, inside, {"r": "up"}, 3.0)
        # ZooKeeper shows a digest's hash to that identity alone.
        return agent, self.reader(auth=auth)

    async def test_deep_chroot_made(self) -> None:
        """
        A chroot of two levels missing on ZooKeeper is made (kazoo alone
        makes one level only): the nodes appear under it, its levels are
        persistent and open without auth_file, and health is ok.
        """
        chroot = f"/c-{self._testMethodName}/b"
        agent, outside = await self.published_in_chroot(chroot)
        self.assertTrue(outside.exists(f"{chroot}{self.root}/instances/r"))
        for level in (chroot.rsplit("/", 1)[0], chroot):
            stat = outside.client.exists_async(level).get(timeout=READ_TIMEOUT)
            self.assertIsNotNone(stat, level)
            self.assertEqual(stat.ephemeralOwner, 0, level)
            self.assertEqual(outside.acls(level), _acl_set(OPEN_ACL_UNSAFE), level)
        await wait_for(
            reactor, lambda: agent.publisher.unhealthy_reason() is None, 3.0, "ok"
        )

    async def test_deep_chroot_made_with_acl(self) -> None:
        """
        With auth_file, each level of the chroot made gets the ACL of the
        agent's other persistent nodes: world:read and the identity:all.
        """
        chroot = f"/c-{self._testMethodName}/b"
        _, outside = await self.published_in_chroot(chroot, auth="user:pw")
        expected = _acl_set([*READ_ACL_UNSAFE, make_digest_acl("user", "pw", all=True)])
        for level in (chroot.rsplit("/", 1)[0], chroot, f"{chroot}{self.root}"):
            self.assertEqual(outside.acls(level), expected, level)

    async def test_deep_chroot_deleted_made_again(self) -> None:
        """
        ``deleteall`` of a deep chroot's top level while the agent runs:
        every level is made again, in the same session, with the nodes'
        ACL, and the nodes are written again under it (before, nothing
        was written until the next session).
        """
        top = f"/c-{self._testMethodName}"
        chroot = f"{top}/b"
        agent, outside = await self.published_in_chroot(chroot, auth="user:pw")
        session = agent.session_id
        # As zkCli.sh's deleteall: kazoo's recursive delete (blocking, so
        # off the reactor thread), again while the agent makes nodes
        # under it meanwhile.
        for _ in range(50):
            try:
                await deferToThread(outside.client.delete, top, recursive=True)
                break
            except NotEmptyError:
                continue
        inside = self.reader(auth="user:pw", hosts=self.zookeeper.hosts + chroot)
        await self.wait_published(agent, inside, {"r": "up"}, 5.0)
        self.assertEqual(agent.session_id, session)
        expected = _acl_set([*READ_ACL_UNSAFE, make_digest_acl("user", "pw", all=True)])
        for level in (top, chroot):
            self.assertEqual(outside.acls(level), expected, level)


class SilentServerTests(ZooKeeperTestCase):
    """A frozen ZooKeeper while the agent writes more often than kazoo pings."""

    async def test_frozen_server_left_while_writing(self) -> None:
        """
        With ZooKeeper frozen (SIGSTOP) and a write every 0.1 s (kazoo, which
        takes each request for a ping, sends none), the bridge names the
        server from a third of the session timeout and drops the connection
        at two thirds: kazoo is suspended, where it stayed connected through
        the whole freeze. Once the server runs again, it is connected again.
        """
        zk = ZooKeeper(reactor, self.zookeeper.hosts, SESSION_TIMEOUT)
        zk.start()
        self.addCleanup(zk.stop, 5.0)
        await wait_for(reactor, lambda: zk.state == CONNECTED, 10.0, "connected")
        path = f"{self.root}/node"
        await zk.create(path, b"{}")
        zookeeper = self.disturb_zookeeper()
        zookeeper.pause()
        frozen = reactor.seconds()
        named = None
        while (
            zk.state == CONNECTED and reactor.seconds() - frozen < 2 * SESSION_TIMEOUT
        ):
            zk.set(path, b"{}").addErrback(lambda _: None)
            if named is None and zk.not_answering() is not None:
                named = reactor.seconds() - frozen
            await pause(reactor, 0.1)
        took = reactor.seconds() - frozen
        self.figure("frozen ZooKeeper named", named or -1.0)
        self.figure("frozen ZooKeeper's connection dropped", took)
        self.assertNotEqual(zk.state, CONNECTED)
        self.assertEqual(zk.drops, 1)
        assert named is not None
        self.assertLess(named, SESSION_TIMEOUT / 3 + 2 * SLACK)
        self.assertLess(took, SESSION_TIMEOUT * 2 / 3 + 2 * SLACK)
        zookeeper.resume()
        await wait_for(
            reactor, lambda: zk.state == CONNECTED, RESYNC_BOUND, "connected again"
        )


class StopTests(ZooKeeperTestCase):
    """A clean stop removes what the agent published, and is bounded."""

    async def test_clean_stop_removes_nodes(self) -> None:
        """stopService deletes every node of the agent, within 2 s."""
        one, two = self.redis(), self.redis()
        agent = self.start_agent({"one": one, "two": two})
        reader = self.reader()
        await self.wait_published(agent, reader, {"one": "up", "two": "up"}, 3.0)
        started = reactor.seconds()
        await agent.top.stopService()
        took = reactor.seconds() - started
        self.figure("clean stop", took)
        self.assertLess(took, 2.0)
        self.assertEqual(reader.children(f"{self.root}/instances"), [])
        self.assertEqual(reader.children(f"{self.root}/agents"), [])

    async def test_stop_with_zookeeper_paused(self) -> None:
        """
        With ZooKeeper frozen (SIGSTOP), stopService still completes in
        under 5 s; once ZooKeeper runs again, the agent's nodes go (closed
        or expired session) without anything left running here.
        """
        server = self.redis()
        agent = self.start_agent({"r": server})
        reader = self.reader()
        await self.wait_published(agent, reader, {"r": "up"}, 3.0)
        zookeeper = self.disturb_zookeeper()
        zookeeper.pause()
        started = reactor.seconds()
        await agent.top.stopService()
        took = reactor.seconds() - started
        self.figure("stop with ZooKeeper paused", took)
        self.assertLess(took, 5.0)
        zookeeper.resume()
        await wait_for(
            reactor,
            lambda: not reader.children(f"{self.root}/instances"),
            SESSION_TIMEOUT + 3.0,
            "instance node gone after ZooKeeper resumed",
            step=0.05,
        )


class ThreadTests(ZooKeeperTestCase):
    """Replaced kazoo clients leave no threads behind."""

    async def outage_replacing_twice(
        self, agent: Agent, zookeeper: ZooKeeperServer
    ) -> None:
        """Stop ZooKeeper until the client is replaced twice, then resync."""
        zk = agent.publisher.zk
        wanted = zk.replacements + 2
        zookeeper.stop()
        await wait_for(
            reactor,
            lambda: zk.replacements >= wanted,
            2 * SESSION_TIMEOUT + 1.0 + SLACK,
            "client replaced twice during the outage",
        )
        zookeeper.start()
        reader = Reader(zookeeper.hosts)
        try:
            await self.wait_published(agent, reader, {"r": "up"}, RESYNC_BOUND)
        finally:
            reader.close()

    async def test_no_thread_leak_after_replacements(self) -> None:
        """
        After two outages that each replace the kazoo client, the live
        threads come back to what they were before: the threads of every
        replaced client end.
        """
        server = self.redis()
        agent = self.start_agent({"r": server})
        reader = self.reader()
        await self.wait_published(agent, reader, {"r": "up"}, 3.0)
        reader.close()
        baseline = set(threading.enumerate())
        count = threading.active_count()
        zookeeper = self.disturb_zookeeper()
        await self.outage_replacing_twice(agent, zookeeper)
        await self.outage_replacing_twice(agent, zookeeper)

        # The client now in use is a new one, with threads of its own: as
        # many as the one it replaced.
        def back_to_baseline() -> bool:
            return threading.active_count() <= count

        try:
            await wait_for(reactor, back_to_baseline, 5.0, "threads back to baseline")
        except AssertionError:
            new = [t.name for t in threading.enumerate() if t not in baseline]
            self.fail(f"{threading.active_count()} threads, {count} before; new: {new}")


class SessionTimeoutTests(ZooKeeperTestCase):
    """
    What the bridge learns from kazoo of each connection on a real
    ZooKeeper (whose minSessionTimeout is 1 s and maxSessionTimeout 60 s):
    kazoo only logs these, so a kazoo that logs them otherwise fails here.
    """

    def bridge(self, hosts: str, session_timeout: float) -> ZooKeeper:
        zk = ZooKeeper(reactor, hosts, session_timeout)
        zk.start()
        self.addCleanup(zk.stop, 5.0)
        return zk

    async def test_granted_timeout_known_once_connected(self) -> None:
        """
        Asked below ZooKeeper's minSessionTimeout, above its
        maxSessionTimeout, or between, the bridge counts with the session
        timeout ZooKeeper granted as soon as it is connected.
        """
        asked = (0.2, 100.0, 3.0)
        bridges = [self.bridge(self.zookeeper.hosts, timeout) for timeout in asked]
        await wait_for(
            reactor,
            lambda: all(zk.state == CONNECTED for zk in bridges),
            10.0,
            "connected",
        )
        self.assertEqual(
            [(zk.granted_timeout, zk.session_timeout) for zk in bridges],
            [(1.0, 1.0), (60.0, 60.0), (3.0, 3.0)],
        )

    async def test_answered_pings_heard(self) -> None:
        """
        An idle connection's pings, answered, are heard: the time since the
        server was last heard stays under half the session timeout (kazoo
        pings every third, less a jitter), so that a call made after a
        quiet while is judged from the last ping, not from the connection.
        """
        zk = self.bridge(self.zookeeper.hosts, SESSION_TIMEOUT)
        await wait_for(reactor, lambda: zk.state == CONNECTED, 10.0, "connected")
        await pause(reactor, 2 * SESSION_TIMEOUT)
        self.assertLess(reactor.seconds() - zk.last_heard, SESSION_TIMEOUT / 2)

    async def test_refused_connection_named(self) -> None:
        """A refused connection attempt is kept as kazoo names it."""
        port = refusing_port(self.addCleanup)
        zk = self.bridge(f"{LOOPBACK}:{port}", SESSION_TIMEOUT)
        await wait_for(
            reactor, lambda: zk.connect_error is not None, 10.0, "a cause kept"
        )
        self.assertEqual(
            zk.connect_error,
            "Connection dropped: socket connection error: Connection refused",
        )

"""
The agent back from its own pause (`sentinel.resumes`): ``/healthz`` fails
until its ZooKeeper session is heard from again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import treq
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from twisted.application.service import IServiceCollection
from twisted.internet import reactor as _reactor
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool

from sentinel import agent
from sentinel.config import ZooKeeperConfig
from sentinel.monitor import Monitor
from sentinel.ownstalls import OwnStalls
from sentinel.resumes import PAUSE_AT, Resumes
from sentinel.zk import CONNECTED, LOST
from tests.fakezk import FakeZooKeeper
from tests.httptest import agent_get
from tests.polling import START_BOUND
from tests.polling import pause as sleep
from tests.servers import LOOPBACK, refusing_port, shared_zookeeper
from tests.test_agent import config
from tests.test_conflicts import AgentProcess, wait_async
from tests.test_twistd import HTTP_BOUND

reactor: Any = _reactor

INTERVAL = 1.0


def connected(case: SynchronousTestCase) -> tuple[Resumes, FakeZooKeeper, Clock]:
    """`Resumes` over a fake ZooKeeper, connected, at an interval of 1 s."""
    clock = Clock()
    clock.advance(100.0)
    zk = FakeZooKeeper(clock)
    zk.connect()
    case.assertEqual(zk.state, CONNECTED)
    clock.advance(10.0)
    return Resumes(clock, cast(Any, zk), "/sentinel", lambda: INTERVAL), zk, clock


def pause(clock: Clock, resumes: Resumes, seconds: float) -> None:
    """The agent stopped for `seconds`, found so by its loop as it resumes."""
    began = clock.seconds()
    clock.advance(seconds)
    resumes.stalled(began, clock.seconds())


def two_pauses(case: SynchronousTestCase) -> tuple[Resumes, FakeZooKeeper]:
    """Pauses of 5 s, then 7 s, the read sent after the first held."""
    resumes, zk, clock = connected(case)
    # The first read outlives the second pause.
    zk.call_timeout = 30.0
    zk.hold_answers("exists")
    pause(clock, resumes, 5.0)
    clock.advance(1.0)
    pause(clock, resumes, 7.0)
    return resumes, zk


class ResumesTests(SynchronousTestCase):
    """A pause of the agent, and word from ZooKeeper after it."""

    def test_short_stalls_say_nothing(self) -> None:
        """
        A stall of up to `PAUSE_AT` intervals (a collection, a late turn)
        fails nothing and asks ZooKeeper nothing.
        """
        resumes, zk, clock = connected(self)
        pause(clock, resumes, PAUSE_AT * INTERVAL)
        self.assertIsNone(resumes.unhealthy_reason())
        self.assertEqual(zk.calls["exists"], 0)

    def test_unhealthy_until_an_answer_after_the_pause(self) -> None:
        """
        After a pause of 6 s, ``/healthz`` fails naming it while the read
        sent at once waits for its answer, and passes once it is answered.
        """
        resumes, zk, clock = connected(self)
        zk.hold_answers("exists")
        pause(clock, resumes, 6.0)
        self.assertEqual(zk.calls["exists"], 1)
        reason = resumes.unhealthy_reason()
        assert reason is not None
        self.assertIn("paused 6.0 s", reason)
        self.assertIn("session not heard from since", reason)
        # Asked again only once the first read has ended.
        self.assertEqual(zk.calls["exists"], 1)
        zk.release("exists")
        self.assertIsNone(resumes.unhealthy_reason())
        self.assertEqual(resumes.stats(), {"pauses": 1, "unconfirmed": False})

    def test_answer_to_a_read_before_a_later_pause(self) -> None:
        """
        A read sent after one pause and answered after a second confirms
        only the first: the second needs a read of its own.
        """
        resumes, zk = two_pauses(self)
        zk.release("exists")
        reason = resumes.unhealthy_reason()
        assert reason is not None
        self.assertIn("paused 7.0 s", reason)
        self.assertEqual(zk.calls["exists"], 2)
        zk.release("exists")
        self.assertIsNone(resumes.unhealthy_reason())

    def test_a_later_pause_asked_for_without_healthz(self) -> None:
        """
        A second pause while the first pause's read is out: once that read
        is answered, the second's is sent at once, not at the next
        ``/healthz`` (whose answer would be 503 with the session heard
        from, and 200 only at the one after), and its answer confirms it.
        """
        resumes, zk = two_pauses(self)
        self.assertEqual(zk.calls["exists"], 1)
        zk.release("exists")
        self.assertEqual(zk.calls["exists"], 2)
        zk.release("exists")
        self.assertEqual(resumes.stats(), {"pauses": 2, "unconfirmed": False})
        self.assertIsNone(resumes.unhealthy_reason())

    def test_session_ended_meanwhile(self) -> None:
        """
        A pause past the session: the read fails with the connection, and
        ``/healthz`` fails until a connection made after the pause (here a
        new session); a read sent while not connected is not sent.
        """
        resumes, zk, clock = connected(self)
        zk.hang("exists")
        pause(clock, resumes, 25.0)
        zk.expire()
        self.assertEqual(zk.state, LOST)
        self.assertIsNotNone(resumes.unhealthy_reason())
        self.assertEqual(zk.calls["exists"], 1)
        clock.advance(1.0)
        zk.unhang()
        zk.connect()
        self.assertEqual(zk.state, CONNECTED)
        self.assertIsNone(resumes.unhealthy_reason())

    def test_failed_read_asked_again(self) -> None:
        """
        A read that failed (timed out while connected) is sent again at
        the next ``/healthz``, whose answer confirms the session.
        """
        resumes, zk, clock = connected(self)
        zk.hang("exists")
        pause(clock, resumes, 6.0)
        clock.advance(zk.call_timeout)
        zk.unhang()
        self.assertIsNotNone(resumes.unhealthy_reason())
        self.assertEqual(zk.calls["exists"], 2)
        self.assertIsNone(resumes.unhealthy_reason())

    def test_own_stalls_tell_each_stall(self) -> None:
        """`OwnStalls.noticed` hears each stall as the loop finds it."""
        stalls = OwnStalls()
        heard: list[tuple[float, float]] = []
        stalls.noticed = lambda began, ended: heard.append((began, ended))
        stalls.launched(0.0, 0.05)
        stalls.launched(0.05, 0.05)
        self.assertEqual(heard, [])
        stalls.launched(3.1, 0.05)
        self.assertEqual(heard, [(0.1, 3.1)])


class AgentWiringTests(SynchronousTestCase):
    """An agent with ZooKeeper answers /healthz after its own pause."""

    def test_healthz_after_a_pause(self) -> None:
        """
        Stopped 6 s with ZooKeeper's answers held, the agent's first
        ``/healthz`` after it is 503 naming the pause, though the loop has
        ticked and the state still says connected; the answer clears it.
        """
        reactor = MemoryReactorClock()
        fake = FakeZooKeeper(reactor)
        self.patch(agent, "ZooKeeper", lambda *args, **kwargs: fake)
        top = agent.make_agent(
            config(zookeeper=ZooKeeperConfig(hosts="127.0.0.1:2181")), None, reactor
        )
        monitor = cast(Monitor, IServiceCollection(top).getServiceNamed("monitor"))
        top.startService()
        self.addCleanup(top.stopService)
        fake.connect()
        reactor.advance(1.0)
        code, body = agent_get(self, top, "/healthz")
        self.assertNotIn("paused", str(body))
        fake.hold_answers("exists")
        reactor.advance(6.0)
        self.assertEqual(monitor.last_tick_at, reactor.seconds())
        self.assertEqual(fake.state, CONNECTED)
        code, body = agent_get(self, top, "/healthz")
        self.assertEqual(code, 503)
        self.assertIn("the agent was paused", str(body["reasons"]))
        fake.release("exists")
        code, body = agent_get(self, top, "/healthz")
        self.assertNotIn("paused", str(body))
        stats = agent_get(self, top, "/debug/stats")[1]
        self.assertEqual(stats["resumes"]["pauses"], 1)


class PausedAgentTests(TestCase):
    """A real agent SIGSTOPped past its session, asked as a load balancer asks."""

    async def test_probe_sent_during_the_pause(self) -> None:
        """
        A ``twistd -n sentinel`` agent (interval 1 s, its instances on a
        refusing port) stopped 4 s, past its 2 s session and short of its
        7 s freshness bound: the ``/healthz`` request sent during the pause
        is answered 503 naming the pause, whatever the ZooKeeper client's
        thread has found by then (before, the agent's answer depended on
        that thread winning the race: 200 at the first answer in one of
        three runs at 50 instances, every node deleted), and once the nodes
        are written again on a new session, 200.
        """
        zookeeper = shared_zookeeper()
        root = f"/resumes-{self._testMethodName}"
        kazoo = KazooClient(hosts=zookeeper.hosts, timeout=10.0)
        kazoo.start(timeout=10.0)
        self.addCleanup(kazoo.close)
        self.addCleanup(kazoo.stop)
        names = ["r1", "r2", "r3"]
        port = refusing_port(self.addCleanup)
        agent = AgentProcess(
            Path(self.mktemp()),
            "--zookeeper", f"{zookeeper.hosts}{root}",
            "--zk-session-timeout", "2",
            *(f"--redis={name}={LOOPBACK}:{port}" for name in names),
        )  # fmt: skip
        self.addCleanup(agent.child.stop)
        await agent.listening()

        def published() -> bool:
            try:
                found = kazoo.get_children(f"{root}/sentinel/instances")
            except NoNodeError:
                return False
            return sorted(found) == names

        async def settled() -> bool:
            return published() and (await agent.get("/healthz"))[0] == 200

        await wait_async(settled, START_BOUND, "nodes published and /healthz 200")
        agent.child.pause()
        await sleep(reactor, 3.0)
        pool = HTTPConnectionPool(reactor, persistent=False)
        asked = treq.get(
            f"http://{LOOPBACK}:{agent.http}/healthz", timeout=HTTP_BOUND, pool=pool
        )
        await sleep(reactor, 1.0)
        self.assertFalse(published())
        agent.child.resume()
        response = await asked
        body = json.loads(await response.content())
        self.assertEqual(response.code, 503, body)
        self.assertIn("the agent was paused", " ".join(body["reasons"]))
        await wait_async(settled, START_BOUND, "nodes written again and /healthz 200")

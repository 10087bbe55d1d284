"""
A group of agents in one process, on one Clock, sharing one in-memory
ZooKeeper: each member is a real publisher, monitor and group over a
client of its own (`tests.fakezk`), with a `FakeProbe` per instance whose
answer the test sets per member (one member may see an instance down
while the others see it up).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from sentinel.config import RedisInstance, ZooKeeperConfig
from sentinel.documents import agent_document
from sentinel.group import Group
from sentinel.handoff import SessionHandoff
from sentinel.monitor import Monitor, Settings
from sentinel.observation import Observation
from sentinel.publisher import ZooKeeperPublisher
from sentinel.tracker import PendingTracker
from tests.fakes import FakeProbe, SortedClock
from tests.fakezk import FakeZooKeeper, FakeZooKeeperServer
from tests.test_publisher import DOWN, HEARTBEAT, INTERVAL, REFRESH, ROOT, START, UP

# The publisher tests' settings and answers, reused.
__all__ = ["DISCOVERY", "DOWN", "INTERVAL", "ROOT", "UP", "Fleet", "Member"]

# Where members publish discovery nodes, when they do.
DISCOVERY = "/discovery"


def instance(name: str, discover_replicas: bool = False) -> RedisInstance:
    return RedisInstance(name, "10.0.0.1", 6379, discover_replicas=discover_replicas)


class Member:
    """One agent of the group: publisher, monitor and group, not started."""

    def __init__(
        self,
        clock: Clock,
        server: FakeZooKeeperServer,
        agent_id: str,
        names: list[str],
        replicas: int = 1,
        quorum: int | None = None,
        discovery: tuple[str, str] | None = None,
        discover_replicas: bool = False,
        handoff: SessionHandoff | None = None,
        refresh: float = REFRESH,
        rise: int = 1,
        fall: int = 1,
        watch_writes: bool = True,
    ) -> None:
        self.clock = clock
        self.agent_id = agent_id
        self.zk = FakeZooKeeper(clock, server=server)
        # What this member's checks of each instance answer.
        self.sees: dict[str, Observation] = {}
        self.probes: dict[str, FakeProbe] = {}

        def probe_for(redis: RedisInstance) -> FakeProbe:
            probe = FakeProbe(redis)
            probe.result = self.sees.get(redis.name, UP)
            self.probes[redis.name] = probe
            return probe

        def document() -> dict[str, Any]:
            return agent_document(
                agent_id,
                START,
                clock.seconds(),
                INTERVAL,
                self.publisher.listed_instances(self.group.known),
            )

        self.publisher = ZooKeeperPublisher(
            clock,
            self.zk,
            ROOT,
            agent_id,
            refresh,
            HEARTBEAT,
            document,
            discovery=discovery,
            handoff=handoff,
            watch_writes=watch_writes,
        )
        settings = Settings(
            interval=INTERVAL, timeout=0.5, rise=rise, fall=fall, info_every=1000
        )
        self.monitor = Monitor(
            clock, settings, probe_for, self.publisher, PendingTracker()
        )
        zookeeper = ZooKeeperConfig(
            hosts="fake:2181", root=ROOT, replicas=replicas, quorum_setting=quorum
        )
        self.group = Group(
            clock,
            self.publisher,
            self.monitor,
            zookeeper,
            agent_id,
            tuple(instance(n, discover_replicas) for n in names),
        )

    def start(self) -> Member:
        self.publisher.startService()
        self.monitor.startService()
        self.zk.connect()
        return self

    def stop(self) -> Deferred[None]:
        self.monitor.stopService()
        return self.publisher.stopService()

    def crash(self) -> None:
        """
        A ``kill -9`` as the others see it once its session has expired:
        no more checks, its ephemeral nodes gone, nothing more written.
        """
        self.monitor.stopService()
        self.publisher.zk.expire()
        self.publisher.stopService()

    def see(self, name: str, observation: Observation) -> None:
        """From now on this member's checks of `name` answer `observation`."""
        self.sees[name] = observation
        probe = self.probes.get(name)
        if probe is not None:
            probe.result = observation

    @property
    def watched(self) -> set[str]:
        return set(self.monitor.states)


class Fleet:
    """The members sharing one fake ZooKeeper and one Clock."""

    def __init__(self) -> None:
        self.clock = SortedClock()
        self.clock.advance(START)
        self.server = FakeZooKeeperServer(self.clock)
        self.members: dict[str, Member] = {}
        # A reader's client, for looking at nodes.
        self.reader = FakeZooKeeper(self.clock, server=self.server)

    def add(self, agent_id: str, names: list[str], **kw: Any) -> Member:
        member = Member(self.clock, self.server, agent_id, names, **kw)
        self.members[agent_id] = member
        return member

    def run(self, seconds: float, step: float = 0.05) -> None:
        """Let time pass in small steps (checks, settles, retries)."""
        for _ in range(round(seconds / step)):
            self.clock.advance(step)

    def cut_off(self, member: Member) -> None:
        """`member` cut off until its session expired (the others took over)."""
        session = member.zk.session_id
        assert session is not None
        member.zk.suspend()
        self.run(1.0)
        self.server.end_session(session)
        self.run(3.0)

    def expire(self, member: Member) -> None:
        """`member` cut off until its session expired, then back."""
        self.cut_off(member)
        member.zk.connect()

    def node(self, name: str) -> dict[str, Any] | None:
        found = self.server.nodes.get(f"{ROOT}/instances/{name}")
        return None if found is None else json.loads(found.data)

    def owner_of(self, name: str) -> int | None:
        found = self.server.nodes.get(f"{ROOT}/instances/{name}")
        return None if found is None else found.owner

    def members_of(self, service: str) -> list[str]:
        """The discovery members of `service` (under DISCOVERY)."""
        parent = f"{DISCOVERY}/{service}"
        if parent not in self.server.nodes:
            return []
        return self.server.children(parent)

    def session_of(self, agent_id: str) -> int | None:
        return self.members[agent_id].zk.session_id

"""
The ZooKeeper session handed from one process to the next through the
state file: processes are publishers on a shared in-memory ZooKeeper, with
a real state file in a directory of the test's own, written synchronously.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable
from functools import partial
from typing import Any

import attr
from kazoo.exceptions import ConnectionLoss
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from sentinel import handoff as handoff_module
from sentinel import sharing as sharing_module
from sentinel import stopping as stopping_module
from sentinel.catalog import Catalog
from sentinel.config import RedisInstance
from sentinel.documents import agent_document, serverset_member
from sentinel.handoff import EXPIRED, NOT_CLAIMED, UNREACHABLE, SessionHandoff
from sentinel.health import InstanceHealth
from sentinel.instance import InstanceState
from sentinel.observation import Replication
from sentinel.privatefiles import NotRead
from sentinel.probe import Observation
from sentinel.publisher import ZooKeeperPublisher
from sentinel.session import (
    MAX_STATE_BYTES,
    STATE_FILE,
    Owner,
    SessionPurpose,
    StateFile,
    StoredSession,
    encode_state,
    left_in,
    state_path,
)
from sentinel.sharing import ALONE_AFTER
from sentinel.stopping import (
    STALE_CLOSE_WAIT,
    STOP_CLOSE_TIMEOUT,
    STOP_DELETE_TIMEOUT,
)
from sentinel.sweep import SWEEP_READS
from tests.fakes import FakeProbe
from tests.fakezk import CALL_KINDS, FakeZooKeeper, FakeZooKeeperServer
from tests.test_publisher import (
    AGENT,
    AGENT_PATH,
    DOWN,
    HEARTBEAT,
    ROOT,
    START,
    UP,
    path,
)

DISCOVERY = "/discovery"
PURPOSE = SessionPurpose("fake:2181", ROOT, AGENT)


class SyncWorker:
    """`FileWorker`'s interface, running each call at once (or failing it)."""

    def __init__(self) -> None:
        self.failing: Exception | None = None
        self.calls: list[str] = []
        # While holding, the calls wait (as on a thread) until released.
        self.held: list[tuple[Callable[[], Any], Deferred[Any]]] | None = None

    def run(self, what: str, call: Callable[[], Any]) -> Deferred[Any]:
        self.calls.append(
            what.split()[0] + (" " + what.split()[1] if " of " in what else "")
        )
        if self.failing is not None:
            return fail(self.failing)
        if self.held is not None:
            d: Deferred[Any] = Deferred()
            self.held.append((call, d))
            return d
        return maybeDeferred(call)

    def release(self) -> None:
        """Run the calls held, in order; from now on, run each at once."""
        held, self.held = self.held or [], None
        for call, d in held:
            maybeDeferred(call).chainDeferred(d)


class Process:
    """One agent process: its ZooKeeper client, state file and publisher."""

    def __init__(
        self,
        case: HandoffTestCase,
        instances: dict[str, RedisInstance],
        left: StoredSession | str | None = None,
        directory: str | None = None,
        agent_id: str = AGENT,
        discovery: tuple[str, str] | None = ("serverset", DISCOVERY),
        running: Callable[[int], bool] | None = None,
        session_timeout: float = 10.0,
        granted: float | None = None,
        root: str = ROOT,
        hosts: str = PURPOSE.hosts,
    ) -> None:
        """
        @param session_timeout: the session timeout asked for.
        @param granted: the one ZooKeeper grants (None: not known).
        """
        self.case = case
        self.agent_id = agent_id
        purpose = attr.evolve(PURPOSE, agent_id=agent_id, root=root, hosts=hosts)
        clock = case.clock
        self.zk = FakeZooKeeper(clock, server=case.server)
        self.zk.hosts = PURPOSE.hosts
        self.zk.requested_timeout = session_timeout
        self.zk.granted_timeout = granted
        self.worker = SyncWorker()
        directory = directory or case.directory
        state_file = StateFile(directory, self.worker)  # type: ignore[arg-type]
        if left is None:
            left = left_in(directory, purpose)
        self.handoff = SessionHandoff(
            clock,
            state_file,
            purpose,
            left,
            running=running,
            session_timeout=session_timeout,
        )
        self.states = {
            name: InstanceState(instance, FakeProbe(instance), InstanceHealth(1, 1))
            for name, instance in instances.items()
        }
        # As the agent does: the instances the monitor checks.
        self.handoff.observed = lambda: self.states
        self.superseded: list[str] = []
        self.twins: list[str] = []
        self.publisher = ZooKeeperPublisher(
            clock,
            self.zk,
            root,
            agent_id,
            30.0,
            10.0,
            self.document,
            on_twin=self.twins.append,
            watched=lambda: {n: s.instance for n, s in self.states.items()},
            discovery=discovery,
            handoff=self.handoff,
            on_superseded=self.superseded.append,
        )

    def document(self) -> dict[str, Any]:
        clock = self.case.clock
        return agent_document(
            self.agent_id, START, clock.seconds(), 1.0, sorted(self.states)
        )

    def start(self, connect: bool = True, alone: bool = True) -> None:
        """
        Start, connected unless told not to; then, on a reattach and unless
        told not to, let the session be found ours alone
        (`sentinel.sharing`), which its sweep waits for.
        """
        self.publisher.startService()
        if connect:
            self.zk.connect()
            if alone and self.handoff.left is not None:
                self.case.clock.advance(ALONE_AFTER)

    def check(self, name: str, observation: Observation) -> None:
        state = self.states[name]
        transition = state.health.observe(observation, self.case.clock.seconds())
        self.publisher.publish(state, transition)

    def fails_up(self, name: str) -> None:
        """
        Go on from the ``up`` the node of `name` says (``fall`` 3, as a
        restart does, `InstanceHealth.inherit`), then fail one check of it.
        """
        health = self.states[name].health
        health.configure(2, 3, 1.0)
        said = self.zk.document(path(name))
        role = Replication(role=said["role"])
        now = self.case.clock.seconds()
        health.inherit("up", True, role, now, said["checked_at"])
        self.check(name, DOWN)

    def stop(self) -> None:
        """SIGTERM, then the process exits (its connection drops)."""
        d = self.publisher.stopService()
        self.case.clock.advance(STOP_DELETE_TIMEOUT)
        self.case.successResultOf(d)
        self.case.server.drop(self.zk)


class HandoffTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(START)
        self.server = FakeZooKeeperServer(self.clock)
        self.directory = os.path.abspath(self.mktemp())
        os.mkdir(self.directory, 0o700)
        self.instances = {
            name: RedisInstance(name, "10.0.0.1", port)
            for name, port in (("a", 6379), ("b", 6380))
        }

    def process(
        self, instances: dict[str, RedisInstance] | None = None, **more: Any
    ) -> Process:
        return Process(self, self.instances if instances is None else instances, **more)

    def stored(self) -> dict[str, Any]:
        with open(os.path.join(self.directory, STATE_FILE), "rb") as f:
            document: dict[str, Any] = json.loads(f.read())
        return document

    def members(self, service: str) -> list[str]:
        parent = f"{DISCOVERY}/{service}"
        return self.server.children(parent) if parent in self.server.nodes else []

    def running(self, **more: Any) -> Process:
        """A process that published a and b up, with their members."""
        first = self.process(**more)
        first.start()
        first.check("a", UP)
        first.check("b", UP)
        return first

    def killed(self) -> int:
        """
        A process that published a and b up, killed 16 s ago (its client
        sends nothing more): its session, left open.
        """
        first = self.running()
        session = first.zk.session_id
        assert session is not None
        first.zk.leave_open()
        self.server.drop(first.zk)
        self.clock.advance(16.0)
        return session


class RestartTests(HandoffTestCase):
    """SIGTERM, then a new process on the same state_dir."""

    def test_nodes_kept_and_rewritten_at_first_check(self) -> None:
        """
        The new process reattaches: every node stays, owned by the same
        session; each instance node is rewritten by its first check and not
        before, the agent node at once, and nothing is created again.
        """
        first = self.running()
        session = first.zk.session_id
        self.assertEqual(self.stored()["session_id"], f"{session:#x}")
        first.stop()
        nodes = [path("a"), path("b"), AGENT_PATH]
        for node in nodes:
            self.assertEqual(self.server.nodes[node].owner, session)
        [member_a, member_b] = [
            f"{DISCOVERY}/{name}/member_0000000000" for name in ("a", "b")
        ]
        self.assertIn(member_a, self.server.nodes)

        self.clock.advance(2)
        second = self.process()
        second.start()
        restarted = self.clock.seconds()
        self.assertEqual(
            second.zk.started_with, [(session, f"pw-{session:x}".encode())]
        )
        self.assertEqual(second.zk.session_id, session)
        self.assertTrue(second.handoff.reattached)
        self.assertEqual(self.stored()["owner"]["pid"], os.getpid())
        self.assertEqual(second.zk.writes(path("a")), 0)
        self.assertEqual(second.zk.writes(AGENT_PATH), 1)
        self.assertEqual(self.server.nodes[path("a")].owner, session)

        second.check("a", DOWN)
        document = second.zk.document(path("a"))
        self.assertEqual(
            (document["status"], document["checked_at"]), ("down", restarted)
        )
        self.assertEqual(self.members("a"), [])
        self.assertEqual(second.zk.writes(path("b")), 0)
        self.assertIn(member_b, self.server.nodes)
        second.check("b", UP)
        self.assertEqual(second.zk.document(path("b"))["checked_at"], restarted)
        # b was up before the restart and still is: up since the first
        # process found it so; a went down, now.
        self.assertEqual(second.zk.document(path("b"))["since"], START)
        self.assertEqual(second.states["b"].health.since, START)
        self.assertEqual(second.zk.document(path("a"))["since"], restarted)
        self.assertEqual(self.members("b"), ["member_0000000000"])
        self.assertEqual(second.zk.calls["create"], 0)
        self.assertEqual(second.publisher.stats()["waiting_takeover"], [])
        self.assertIsNone(second.publisher.unhealthy_reason())

    def test_since_kept_only_from_a_node_of_ours_that_says_so(self) -> None:
        """
        The inherited node's ``since`` is kept only when the node is ours
        and says the status found now: a node that is not an instance
        document, or says another status, gives the time of this check.
        """
        first = self.running()
        session = first.zk.session_id
        first.stop()
        for stored in (b"\xff not json", b"[1]", b'{"status": "up", "since": "x"}'):
            self.server.put(path("b"), stored, owner=session)
            second = self.process()
            second.start()
            self.clock.advance(1)
            second.check("b", UP)
            self.assertEqual(
                second.zk.document(path("b"))["since"], self.clock.seconds(), stored
            )
            second.stop()
        self.server.put(path("b"), b'{"status": "down", "since": 5.0}', owner=session)
        second = self.process()
        second.start()
        second.check("b", UP)
        self.assertEqual(second.zk.document(path("b"))["since"], self.clock.seconds())

    def test_first_check_before_connected(self) -> None:
        """A check made before the reattach is written at it, not before."""
        self.running().stop()
        second = self.process()
        second.start(connect=False)
        second.check("a", DOWN)
        self.assertEqual(second.zk.calls["create"] + second.zk.calls["set"], 0)
        second.zk.connect()
        self.clock.advance(ALONE_AFTER)
        self.assertEqual(second.zk.document(path("a"))["status"], "down")
        self.assertEqual(self.members("a"), [])

    def test_removed_instance_loses_its_nodes_at_once(self) -> None:
        """
        An instance removed from the config between the processes loses its
        node and member at the reattach, before any check, once the session
        is known to be this process's alone: ALONE_AFTER seconds connected
        after its agent node was written.
        """
        self.running().stop()
        second = self.process({"a": self.instances["a"]})
        second.start(alone=False)
        self.clock.advance(ALONE_AFTER - 0.1)
        self.assertIn(path("b"), self.server.nodes)
        self.assertEqual(self.members("b"), ["member_0000000000"])
        self.clock.advance(0.1)
        self.assertNotIn(path("b"), self.server.nodes)
        self.assertEqual(self.members("b"), [])
        self.assertIn(path("a"), self.server.nodes)
        self.assertEqual(self.members("a"), ["member_0000000000"])
        self.assertEqual(second.publisher.swept, 1)

    def test_bug_in_the_handoff_skips_no_resync(self) -> None:
        """
        A bug in the state file's side of a new connection (a time no date
        could show raised there) is an internal error, and the resync goes
        on as for an inherited session: the node of an instance removed
        meanwhile is swept, the agent node is written and each check is
        published, rather than nothing written at all.
        """
        self.running().stop()
        second = self.process({"a": self.instances["a"]})

        def broken(*args: object) -> bool:
            raise OverflowError("date value out of range")

        second.handoff.connected = broken  # type: ignore[method-assign]
        second.start()
        errors = second.zk.internal_errors
        self.assertEqual(errors.count, 1)
        self.assertIn("telling the state file", errors.unhealthy_reason() or "")
        self.assertEqual(len(self.flushLoggedErrors(OverflowError)), 1)
        self.assertGreater(second.zk.writes(AGENT_PATH), 0)
        self.assertNotIn(path("b"), self.server.nodes)
        self.assertEqual(self.members("b"), [])
        second.check("a", DOWN)
        self.assertEqual(second.zk.document(path("a"))["status"], "down")

    def test_bug_in_the_handoff_of_a_new_session(self) -> None:
        """
        On a new session, taken for an inherited one after such a bug,
        nothing is swept and every node is created all the same.
        """
        first = self.process(left="no state file")

        def broken(*args: object) -> bool:
            raise OverflowError("date value out of range")

        first.handoff.connected = broken  # type: ignore[method-assign]
        first.start()
        first.check("a", UP)
        first.check("b", DOWN)
        self.assertEqual(first.zk.document(path("a"))["status"], "up")
        self.assertEqual(first.zk.document(path("b"))["status"], "down")
        self.assertIn(AGENT_PATH, self.server.nodes)
        self.assertEqual(len(self.flushLoggedErrors(OverflowError)), 1)

    def test_removed_before_its_first_check(self) -> None:
        """
        An instance a reload removes before this process checked it loses
        the node and member the previous process left for it.
        """
        self.running().stop()
        second = self.process()
        second.start()
        del second.states["b"]
        second.publisher.remove("b")
        self.assertNotIn(path("b"), self.server.nodes)
        self.assertEqual(self.members("b"), [])
        self.assertIn(path("a"), self.server.nodes)
        self.assertEqual(second.publisher.writes_queued, 0)

    def test_member_under_a_changed_service(self) -> None:
        """A member under the old service of an instance goes at the reattach."""
        self.running().stop()
        moved = RedisInstance("b", "10.0.0.1", 6380, service="cache")
        second = self.process({"a": self.instances["a"], "b": moved})
        second.start()
        self.assertEqual(self.members("b"), [])
        second.check("b", UP)
        self.assertEqual(self.members("cache"), ["member_0000000000"])

    def test_members_go_when_discovery_is_turned_off(self) -> None:
        """
        A process started with discovery turned off deletes the members its
        predecessor left on the session it reattached to: nobody would
        update or delete them while the session lived on, a dead Redis
        staying listed ``ALIVE``.
        """
        first = self.running()
        other = f"{DISCOVERY}/a/member_0000000007"
        self.server.put(other, b"{}", 0x9999)
        first.stop()
        second = self.process(discovery=None)
        second.start()
        self.assertEqual(self.members("a"), ["member_0000000007"])
        self.assertEqual(self.members("b"), [])
        self.assertIn(path("a"), self.server.nodes)

    def test_duplicate_members_cleaned(self) -> None:
        """Two members of one instance (a lost create's twin) become one."""
        first = self.running()
        member = json.dumps(serverset_member(self.instances["a"])).encode()
        self.server.put(
            f"{DISCOVERY}/a/member_0000000001", member, first.zk.session_id or 0
        )
        first.stop()
        second = self.process()
        second.start()
        second.check("a", UP)
        self.assertEqual(self.members("a"), ["member_0000000000"])

    def test_instances_on_one_endpoint_share_out_their_members(self) -> None:
        """
        Two instances on one endpoint in one service each keep one of the
        members the previous process left, and none is created.
        """
        same = {
            name: RedisInstance(name, "10.0.0.1", 6379, service="cache")
            for name in ("a", "b")
        }
        first = self.process(same)
        first.start()
        first.check("a", UP)
        first.check("b", UP)
        first.stop()
        second = self.process(same)
        second.start()
        second.check("a", UP)
        second.check("b", UP)
        self.assertEqual(len(self.members("cache")), 2)
        self.assertEqual(second.zk.calls["create"], 0)
        second.check("a", DOWN)
        self.assertEqual(len(self.members("cache")), 1)

    def test_members_wait_for_the_sweep(self) -> None:
        """
        While the sweep of the reattached session is in flight, a member
        waits, and is then kept rather than created twice.
        """
        self.running().stop()
        second = self.process()
        second.zk.hang("get_children")
        second.start()
        second.check("a", UP)
        self.assertEqual(self.members("a"), ["member_0000000000"])
        second.zk.unhang()
        second.zk.release()
        self.assertEqual(self.members("a"), ["member_0000000000"])
        self.assertEqual(second.zk.calls["create"], 0)

    def test_members_wait_for_their_own_sweep_only(self) -> None:
        """
        Members wait for the previous process's members to be found, not
        for the ``exists`` of every child of {root}/instances no instance
        here has (anyone may add thousands): an instance found down
        meanwhile loses its member at once.
        """
        self.running().stop()
        second = self.process()
        squat = f"{ROOT}/instances/squat"
        self.server.put(squat, b"x", 0x9999)
        exists = second.zk.exists
        unanswered: Deferred[Any] = Deferred()

        def slow_exists(path: str, *args: Any, **kwargs: Any) -> Deferred[Any]:
            return unanswered if path == squat else exists(path, *args, **kwargs)

        second.zk.exists = slow_exists  # type: ignore[method-assign]
        second.start()
        second.check("a", DOWN)
        self.assertEqual(self.members("a"), [])
        unanswered.callback(None)

    def test_sweep_asks_many_children_at_once(self) -> None:
        """
        The children of {root}/instances that no instance here has are
        asked about `SWEEP_READS` at a time, not one at a time: anyone may
        add thousands there, and the node of an instance removed from the
        config stayed published behind them (a minute and a half at
        100,000, each ``exists`` a round trip).
        """
        self.running().stop()
        squats = [f"{ROOT}/instances/squat{i:04}" for i in range(2 * SWEEP_READS)]
        for squat in squats:
            self.server.put(squat, b"x", 0x9999)
        second = self.process({"a": self.instances["a"]})
        exists = second.zk.exists
        asked: dict[str, Deferred[Any]] = {}

        def held_exists(path: str, *args: Any, **kwargs: Any) -> Deferred[Any]:
            if not path.startswith(f"{ROOT}/instances/"):
                return exists(path, *args, **kwargs)
            asked[path] = Deferred()
            return asked[path].addCallback(lambda _: exists(path, *args, **kwargs))

        second.zk.exists = held_exists  # type: ignore[method-assign]
        second.start()
        self.assertEqual(len(asked), SWEEP_READS)
        while unanswered := [d for d in asked.values() if not d.called]:
            for d in unanswered:
                d.callback(None)
        self.assertNotIn(path("b"), self.server.nodes)
        self.assertTrue(all(squat in self.server.nodes for squat in squats))

    def test_failed_sweep_retried(self) -> None:
        """A sweep that fails is retried; members wait for it meanwhile."""
        self.running().stop()
        second = self.process({"a": self.instances["a"]})
        second.zk.fail_next("get_children", ConnectionLoss(), f"{ROOT}/instances")
        second.start()
        second.check("a", UP)
        self.assertIn(path("b"), self.server.nodes)
        self.clock.advance(1.0)
        self.assertNotIn(path("b"), self.server.nodes)
        self.assertEqual(self.members("a"), ["member_0000000000"])
        self.assertEqual(second.zk.calls["create"], 0)

    def test_expired_session(self) -> None:
        """
        A session that expired before the start gives way to a new one;
        the state file records it, and the stats say why.
        """
        first = self.running()
        old = first.zk.session_id or 0
        first.stop()
        self.server.end_session(old)
        second = self.process()
        second.start()
        self.assertNotEqual(second.zk.session_id, old)
        self.assertFalse(second.handoff.reattached)
        stats = second.publisher.stats()["handoff"]
        self.assertEqual(
            (stats["reattached"], stats["not_reattached_because"]), (False, EXPIRED)
        )
        self.assertEqual(self.stored()["session_id"], f"{second.zk.session_id:#x}")
        self.assertEqual(self.stored()["discovery_parents"], [])
        second.check("a", UP)
        self.assertEqual(self.stored()["discovery_parents"], [f"{DISCOVERY}/a"])

    def test_expired_on_other_servers(self) -> None:
        """
        A session refused as expired by ZooKeeper servers the state file
        does not list may live on another ensemble: the reason says both
        lists. Before, it said "the session had expired" alone, after a
        move to a new ensemble while the nodes stayed on the old one.
        """
        first = self.running()
        old = first.zk.session_id or 0
        first.stop()
        self.server.end_session(old)
        second = self.process(hosts="new:2181")
        second.start()
        self.assertFalse(second.handoff.reattached)
        self.assertEqual(
            second.publisher.stats()["handoff"]["not_reattached_because"],
            f"{EXPIRED}, or ZooKeeper at 'new:2181' does not know it: the state "
            f"file's was for 'fake:2181' (another ensemble? there, its nodes "
            f"stay until it expires)",
        )

    def test_unreachable_at_start(self) -> None:
        """A client replaced before connecting says ZooKeeper was unreachable."""
        self.running().stop()
        second = self.process()
        second.start(connect=False)
        second.zk.replacements = 1
        second.zk._session = None
        second.zk.connect()
        self.assertEqual(second.handoff.why_not, UNREACHABLE)

    def test_no_state_file(self) -> None:
        """A first start says there was no state file, and writes one."""
        first = self.process()
        first.start()
        stats = first.publisher.stats()["handoff"]
        self.assertIs(stats["reattached"], False)
        self.assertEqual(
            stats["not_reattached_because"],
            f"{self.directory}/{STATE_FILE}: no state file",
        )
        self.assertEqual(self.stored()["session_id"], f"{first.zk.session_id:#x}")

    def test_session_detail_says_whether_reattached(self) -> None:
        """
        /healthz's ``session``: nothing before the first session, then
        whether it was reattached and, on a new one, why not.
        """
        first = self.process()
        self.assertIsNone(first.handoff.session_detail())
        first.start()
        self.assertEqual(
            first.handoff.session_detail(),
            {
                "reattached": False,
                "not_reattached_because": f"{self.directory}/{STATE_FILE}: "
                "no state file",
            },
        )
        first.check("a", UP)
        first.stop()
        second = self.process()
        second.start()
        self.assertEqual(
            second.handoff.session_detail(),
            {"reattached": True, "not_reattached_because": None},
        )

    def test_unwritable_state_file_means_no_reattach(self) -> None:
        """
        If the claim cannot be written, the process does not reattach: an
        older process would never learn it lost the session.
        """
        first = self.running()
        old = first.zk.session_id
        first.stop()
        second = self.process()
        second.worker.failing = OSError(28, "No space left on device")
        second.start()
        self.assertNotEqual(second.zk.session_id, old)
        self.assertEqual(second.zk.started_with, [None])
        why = second.handoff.why_not or ""
        self.assertTrue(why.startswith(NOT_CLAIMED), why)
        self.flushLoggedErrors()

    def test_unwritable_state_file_closes_a_gone_process_session(self) -> None:
        """
        If the claim cannot be written (a state_dir full at the restart)
        and the process that left the session is gone, the session is
        closed, its nodes with it, and a new one's first check writes
        them: before, they stayed unchecked until it expired, this process
        waiting for them (503 for 9.3 s, measured).
        """
        first = self.running()
        old = first.zk.session_id
        first.stop()
        second = self.process(running=lambda pid: False)
        second.worker.failing = OSError(28, "No space left on device")
        second.start()
        self.assertEqual(second.zk.closed_sessions, [old])
        self.assertNotIn(old, self.server.sessions)
        self.assertNotIn(path("a"), self.server.nodes)
        second.check("a", DOWN)
        self.assertEqual(second.zk.document(path("a"))["status"], "down")
        self.flushLoggedErrors()

    def test_unwritable_state_file_leaves_a_running_process_session(self) -> None:
        """
        A session whose process still runs is not closed when the claim
        cannot be written: that process still checks its nodes.
        """
        first = self.running()
        old = first.zk.session_id
        second = self.process(running=lambda pid: True)
        second.worker.failing = OSError(28, "No space left on device")
        second.start()
        self.assertEqual(second.zk.closed_sessions, [])
        self.assertIn(old, self.server.sessions)
        self.assertIn(path("a"), self.server.nodes)
        self.flushLoggedErrors()

    def test_record_parent_before_the_member(self) -> None:
        """A member is created only once its parent is in the state file."""
        first = self.process()
        first.start()
        first.check("a", UP)
        self.assertEqual(self.stored()["discovery_parents"], [f"{DISCOVERY}/a"])
        history = first.zk.history
        create = history.index(("create", f"{DISCOVERY}/a/member_"))
        self.assertGreater(create, 0)
        self.assertEqual(first.worker.calls[-1], "a write")

    def test_parents_follow_the_config(self) -> None:
        """
        The state file lists the parents the session may hold members
        under, not every service an instance was ever moved to; the next
        process finds no member of ours under the parents left out.
        """
        first = self.running()
        services = [f"s{i}" for i in range(20)]
        for service in services:
            moved = RedisInstance("b", "10.0.0.1", 6380, service=service)
            first.states["b"] = InstanceState(
                moved, FakeProbe(moved), InstanceHealth(1, 1)
            )
            first.check("b", UP)
        listed = set(self.stored()["discovery_parents"])
        self.assertLessEqual(len(listed), 3)
        self.assertLessEqual(
            {f"{DISCOVERY}/a", f"{DISCOVERY}/s19"},
            listed,
        )
        first.stop()
        second = self.process(
            {name: state.instance for name, state in first.states.items()}
        )
        second.start()
        second.check("a", UP)
        second.check("b", UP)
        self.assertEqual(
            {s: self.members(s) for s in ["a", "b", *services] if self.members(s)},
            {"a": ["member_0000000000"], "s19": ["member_0000000000"]},
        )

    def test_parent_kept_while_its_member_may_be_there(self) -> None:
        """
        A parent stays listed while the member of ours under it is not
        known deleted (its delete hangs): a restart then would look there.
        Once deleted, it leaves the list at the next parent recorded.
        """
        first = self.running()
        first.zk.hang("delete")
        for service in ["s0", "s1"]:
            moved = RedisInstance("b", "10.0.0.1", 6380, service=service)
            first.states["b"] = InstanceState(
                moved, FakeProbe(moved), InstanceHealth(1, 1)
            )
            first.check("b", UP)
        self.assertEqual(self.members("b"), ["member_0000000000"])
        self.assertEqual(
            sorted(self.stored()["discovery_parents"]),
            [f"{DISCOVERY}/{s}" for s in ["a", "b", "s0", "s1"]],
        )
        first.zk.unhang()
        first.zk.release()
        moved = RedisInstance("b", "10.0.0.1", 6380, service="s2")
        first.states["b"] = InstanceState(moved, FakeProbe(moved), InstanceHealth(1, 1))
        first.check("b", UP)
        self.assertEqual(
            sorted(self.stored()["discovery_parents"]),
            [f"{DISCOVERY}/{s}" for s in ["a", "s2"]],
        )

    def test_parents_in_use_asked_once_per_write(self) -> None:
        """
        Parents recorded while a write is in flight (services coming up at
        start) go into the next write together, which asks once which of
        the others the session still uses, and leaves out the rest: asked
        at each parent, 2,000 services cost about a second of the
        reactor's time.
        """
        first = self.running()
        services = [f"{DISCOVERY}/s{i}" for i in range(100)]
        asked: list[None] = []

        def in_use() -> set[str]:
            asked.append(None)
            return {f"{DISCOVERY}/a", *services}

        first.worker.held = []
        recorded = [first.handoff.record_parent(p, in_use) for p in services]
        first.worker.release()
        for d in recorded:
            self.successResultOf(d)
        self.assertEqual(len(asked), 2)
        self.assertEqual(
            self.stored()["discovery_parents"], [f"{DISCOVERY}/a", *services]
        )


class DaemonTests(HandoffTestCase):
    """The agent made in one process and run in another (twistd's fork)."""

    def forked(self, pid: int) -> None:
        """From now on this process is `pid`, as a daemon is after twistd's fork."""
        self.patch(os, "getpid", lambda: pid)

    def test_state_file_names_the_daemon(self) -> None:
        """
        Made before twistd's fork, run after it: the state file names the
        process that runs, on a new session and on one it reattached to.
        Before, it named the parent that made the agent and exited.
        """
        first = self.process()
        self.forked(4242)
        first.start()
        first.check("a", UP)
        self.assertEqual(self.stored()["owner"]["pid"], 4242)
        token = self.stored()["owner"]["token"]
        first.stop()

        second = self.process()
        self.forked(4343)
        second.start()
        self.assertTrue(second.handoff.reattached)
        self.assertEqual(
            self.stored()["owner"], {"pid": 4343, "token": second.handoff.owner.token}
        )
        self.assertNotEqual(second.handoff.owner.token, token)

    def test_chosen_owner_kept(self) -> None:
        """An owner the caller chose is the one written, whatever the pid."""
        owner = Owner(7, "0123456789abcdef")
        handoff = SessionHandoff(
            self.clock,
            StateFile(self.directory, SyncWorker()),  # type: ignore[arg-type]
            PURPOSE,
            "no state file",
            owner=owner,
        )
        self.forked(4242)
        handoff.started()
        self.assertEqual(handoff.owner, owner)


class UncheckedSessionTests(HandoffTestCase):
    """Processes killed before their first check (a crash loop)."""

    def crash_loop(
        self,
        each: Callable[[Process], None],
        clock_back: float = 0.0,
        a_first: Observation = UP,
    ) -> Process:
        """
        A process publishes a and b (a as `a_first` says), then is killed
        (and the clock goes back `clock_back` s); then a process starts
        every 3 s, reattaches,
        does `each` and is killed, the file saying the first one's checks
        all along (the clock gone back: the next one's start), until one
        finds the session unchecked for over 1.5 session timeouts: that
        one, which closed it.
        """
        first = self.running()
        first.check("a", a_first)
        session = first.zk.session_id
        self.server.drop(first.zk)
        self.clock.rightNow -= clock_back
        written = self.clock.seconds() + (3.0 if clock_back else 0.0)
        while True:
            self.clock.advance(3.0)
            process = self.process()
            process.start(alone=False)
            if process.zk.closed_sessions:
                break
            self.assertLess(self.clock.seconds() - written, 18.0)
            self.assertEqual(process.zk.session_id, session)
            each(process)
            self.assertEqual(self.stored()["checked_at"], written)
            self.server.drop(process.zk)
        self.assertEqual(process.zk.closed_sessions, [session])
        self.assertGreater(self.clock.seconds() - written, 15.0)
        return process

    def test_crash_loop_ends_the_session_unchecked_too_long(self) -> None:
        """
        A process killed before its first check leaves the session as
        checked as it found it: the next processes reattach while its
        instances were checked within 1.5 times the session timeout; past
        it, the next one closes the session (its nodes go at once, a dead Redis
        is no longer published up) and opens a new one, which its first
        check writes.
        """
        first = self.running()
        checked = self.clock.seconds()
        session = first.zk.session_id
        self.server.drop(first.zk)
        while True:
            self.clock.advance(1.2)
            process = self.process()
            process.start(alone=False)
            if self.clock.seconds() - checked > 15.0:
                break
            self.assertEqual(process.zk.session_id, session)
            self.assertEqual(self.stored()["checked_at"], checked)
            self.server.drop(process.zk)
        self.assertEqual(process.zk.closed_sessions, [session])
        self.assertNotIn(session, self.server.sessions)
        self.assertNotEqual(process.zk.session_id, session)
        self.assertFalse(process.handoff.reattached)
        self.assertIn("no process checked its instances", process.handoff.why_not)
        self.assertNotIn(path("a"), self.server.nodes)
        self.assertEqual(self.stored()["session_id"], f"{process.zk.session_id:#x}")
        self.assertEqual(self.stored()["checked_at"], self.clock.seconds())
        process.check("a", DOWN)
        self.assertEqual(process.zk.document(path("a"))["status"], "down")

    def test_crash_loop_of_failures_fewer_than_fall(self) -> None:
        """
        A crash loop whose processes each go on from the ``up`` a's node
        says (a restart is no news, `InstanceHealth.inherit`), fail one
        check of a (``fall`` is 3), check b and die: a's failures renew
        neither its node's ``checked_at`` nor the file's, so the session is
        closed 1.5 session timeouts after a's last success, and a is
        published down. Before, each process wrote a ``up`` with its
        failure's time and the file said the round checked: every process
        reattached, and a stayed up for as long as the loop went on.
        """
        process = self.crash_loop(partial(self.contradicts_a, "up", DOWN))
        self.assertNotIn(path("a"), self.server.nodes)
        process.check("a", DOWN)
        self.assertEqual(process.zk.document(path("a"))["status"], "down")

    def test_crash_loop_of_successes_fewer_than_rise(self) -> None:
        """
        The mirror: a published ``down``, and a crash loop whose processes
        each go on from it, succeed one check of a (``rise`` is 2: a Redis
        back from a SIGSTOP) and die: a's successes renew neither its
        node's ``checked_at`` nor the file's, so the session is closed 1.5
        session timeouts after a's last failure, and a is published up.
        Before, each process wrote a ``down`` with its success's time and
        the file said the round checked: a live Redis stayed published
        down, freshly checked, for as long as the loop went on.
        """
        process = self.crash_loop(partial(self.contradicts_a, "down", UP), a_first=DOWN)
        self.assertNotIn(path("a"), self.server.nodes)
        process.check("a", UP)
        self.assertEqual(process.zk.document(path("a"))["status"], "up")

    def contradicts_a(self, status: str, found: Observation, process: Process) -> None:
        """
        One process of a crash loop: it goes on from the `status` a's node
        says (rise 2, fall 3), checks a once, finding the contrary
        (`found`), and b; a's node still says `status`, checked by the
        first process (at START).
        """
        health = process.states["a"].health
        health.configure(2, 3, 1.0)
        said = process.zk.document(path("a"))
        role = Replication(role=said["role"])
        ready = said["ready"]
        health.inherit(status, ready, role, self.clock.seconds(), said["checked_at"])
        process.check("a", found)
        process.check("b", UP)
        self.clock.advance(0.3)
        document = process.zk.document(path("a"))
        self.assertEqual((document["status"], document["checked_at"]), (status, START))

    def test_crash_loop_of_checks_never_written(self) -> None:
        """
        A crash loop whose processes each check, but die before ZooKeeper
        has what they found (a slow link, a node down they never wrote):
        the file says checks back the nodes only as far as ZooKeeper has
        them, so the session is closed as if nobody had checked, 1.5
        session timeouts after the last check written, and the dead Redis
        is no longer published up. Before, each check renewed the file:
        every process reattached, and ``a`` stayed up for good.
        """

        def unwritten(process: Process) -> None:
            process.zk.hang("create", "set")
            process.check("a", DOWN)
            self.assertEqual(
                json.loads(self.server.nodes[path("a")].data)["status"], "up"
            )

        process = self.crash_loop(unwritten)
        self.assertNotIn(path("a"), self.server.nodes)
        process.check("a", DOWN)
        self.assertEqual(process.zk.document(path("a"))["status"], "down")

    def test_file_says_checked_once_written(self) -> None:
        """
        A check whose write ZooKeeper has not acknowledged yet leaves the
        file as far back as the previous process's checks; once every node
        is written, the file says the check's time at once, without waiting
        for the next refresh.
        """
        first = self.running()
        before = self.clock.seconds()
        first.stop()
        self.clock.advance(5.0)
        second = self.process()
        second.start()
        second.zk.hold_answers("create", "set")
        second.check("a", DOWN)
        second.check("b", UP)
        checked = self.clock.seconds()
        self.assertEqual(self.stored()["checked_at"], before)
        self.clock.advance(0.2)
        self.assertTrue(second.zk.release())
        self.assertEqual(self.stored()["checked_at"], checked)

    def test_crash_loop_checking_some_instances(self) -> None:
        """
        A crash loop whose processes each check ``a`` only (checks are
        spread over the interval, and each is killed before it reaches
        ``b``): a session inherited is backed by checks only once each
        instance was checked once, so it is closed 1.5 session timeouts
        after the last process that did, and ``b``, dead meanwhile, is no
        longer published up. Before, the check of ``a`` renewed the file
        for ``b`` too, and every process reattached.
        """
        self.crash_loop(lambda process: process.check("a", UP))
        self.assertNotIn(path("b"), self.server.nodes)

    def test_first_round_not_written_at_every_write(self) -> None:
        """
        Before the first round is done, ZooKeeper catching up after each
        tick's writes does not write the file again (it would say no
        more): only the refresh does, every quarter of the session timeout.
        """
        self.running().stop()
        second = self.process()
        second.start()
        writes = second.handoff.writes
        for tick in range(10):
            self.clock.advance(1.0)
            second.check("a", DOWN if tick % 2 else UP)
        self.assertLessEqual(second.handoff.writes - writes, 4)

    def test_clock_back_between_two_processes(self) -> None:
        """
        The clock went back an hour between two processes: the file's
        checks, in this clock's future, count from the start of the first
        process after the step, not until the clock catches up. Before, a
        crash loop whose checks never reached ZooKeeper reattached for the
        whole hour.
        """

        def unwritten(process: Process) -> None:
            process.zk.hang("create", "set")
            process.check("a", DOWN)

        self.crash_loop(unwritten, clock_back=3600.0)

    def test_clock_back_while_running(self) -> None:
        """
        The clock went back an hour while a process ran: its checks are
        written in the file by the clock as it is now, at the next refresh.
        """
        first = self.running()
        self.clock.rightNow -= 3600.0
        first.check("a", UP)
        first.check("b", UP)
        self.assertEqual(self.stored()["checked_at"], self.clock.seconds())

    def test_first_round_done_says_so_at_once(self) -> None:
        """
        On a session inherited, the file says the checks' time as soon as
        every instance was checked once and written, not a refresh later.
        """
        self.running().stop()
        self.clock.advance(3.0)
        second = self.process()
        second.start()
        second.check("a", UP)
        self.clock.advance(0.5)
        second.check("b", UP)
        self.assertEqual(self.stored()["checked_at"], self.clock.seconds())

    def test_stop_lets_the_close_of_a_stale_session_end(self) -> None:
        """
        A process stopped while it closes a stale session (a crash loop's
        processes each live briefly) lets the close end first: the stale
        nodes go, and no new session is opened. Cut, the close had renewed
        the session by connecting to it, and its nodes stayed, unchecked,
        for another session timeout.
        """
        session = self.killed()
        process = self.process()
        process.zk.close_delay = 0.5
        process.start(connect=False)
        stopped = process.publisher.stopService()
        self.assertNoResult(stopped)
        self.clock.advance(0.5)
        self.successResultOf(stopped)
        self.assertEqual(process.zk.closed_sessions, [session])
        self.assertNotIn(path("a"), self.server.nodes)
        self.assertEqual(process.zk.started, 0)
        self.flushLoggedErrors()

    def test_stop_waits_for_a_stale_close_within_bounds(self) -> None:
        """
        A stale session's close that does not end (ZooKeeper unreachable)
        holds a stop `STALE_CLOSE_WAIT` at most.
        """
        self.killed()
        process = self.process()
        process.zk.close_delay = 60.0
        process.start(connect=False)
        stopped = process.publisher.stopService()
        self.clock.advance(STALE_CLOSE_WAIT - 0.1)
        self.assertNoResult(stopped)
        self.clock.advance(0.1)
        self.successResultOf(stopped)
        # The close ending later is no matter.
        self.clock.advance(60.0)
        self.assertEqual(process.zk.started, 0)
        self.flushLoggedErrors()

    def test_new_session_stopped_before_its_first_check_is_closed(self) -> None:
        """
        The process that closed the stale session and opened a new one is
        stopped before its first check: the new session holds only its
        agent node, no instance node, so it is closed, not handed on (in
        a group, its agent node would keep it a member, primary of
        instances nobody checks, until the session expired).
        """
        self.killed()
        process = self.process()
        process.start(alone=False)
        self.assertFalse(process.handoff.reattached)
        session = process.zk.session_id
        self.assertIn(f"{ROOT}/agents/{AGENT}", self.server.nodes)
        self.assertIn("checked no instance", process.handoff.blocked or "")
        process.stop()
        self.assertNotIn(("leave_open", ""), process.zk.history)
        self.assertNotIn(session, self.server.sessions)
        self.assertNotIn(f"{ROOT}/agents/{AGENT}", self.server.nodes)
        self.flushLoggedErrors()
        last = self.process()
        last.start(alone=False)
        last.check("a", DOWN)
        self.assertEqual(last.zk.document(path("a"))["status"], "down")

    def test_new_session_checked_is_handed_on(self) -> None:
        """
        Once the process that opened a session checked an instance, its
        stop hands the session on, as any restart does.
        """
        first = self.process()
        first.start()
        self.assertIsNotNone(first.handoff.blocked)
        first.check("a", UP)
        self.assertIsNone(first.handoff.blocked)
        session = first.zk.session_id
        first.stop()
        self.assertIn(("leave_open", ""), first.zk.history)
        second = self.process()
        second.start()
        self.assertEqual(second.zk.session_id, session)
        self.assertTrue(second.handoff.reattached)

    def test_restart_late_in_the_session_reattaches(self) -> None:
        """
        A stop whose file says checks ran up to a quarter of the session
        timeout before it (the refresh's lag), then a start 9 s later,
        within the session timeout of 10 s: the session lives, and the next
        process reattaches to it.
        """
        first = self.running()
        session = first.zk.session_id
        for _ in range(2):
            self.clock.advance(1.2)
            first.check("a", UP)
            first.check("b", UP)
        self.assertGreater(self.clock.seconds() - self.stored()["checked_at"], 2.0)
        first.stop()
        self.clock.advance(9.0)
        self.assertIn(session, self.server.sessions)
        second = self.process()
        second.start()
        self.assertTrue(second.handoff.reattached)
        self.assertEqual(second.zk.session_id, session)

    def test_failed_refresh_not_tried_at_every_check(self) -> None:
        """
        A refresh of the file that fails (a disk full) is not tried again
        at the next check, nor at the thousand after it in the same
        quarter of the session timeout: the heartbeat's retry is for that.
        """
        first = self.running()
        self.clock.advance(5)
        first.worker.failing = OSError(28, "No space left on device")
        before = len(first.worker.calls)
        for _ in range(1000):
            first.check("a", UP)
        self.assertEqual(len(first.worker.calls) - before, 1)
        self.clock.advance(2.6)
        first.check("a", UP)
        self.assertEqual(len(first.worker.calls) - before, 2)

    def test_checks_keep_the_file_current(self) -> None:
        """
        A process that checks writes the time of its checks in the state
        file every quarter of the session timeout, not at each check: after
        a long run and a crash, the next process reattaches.
        """
        first = self.running()
        session = first.zk.session_id
        writes = first.handoff.writes
        for _ in range(60):
            self.clock.advance(1)
            first.check("a", UP)
        self.assertEqual(first.handoff.writes - writes, 20)
        self.assertGreaterEqual(self.stored()["checked_at"], self.clock.seconds() - 3)
        self.server.drop(first.zk)
        self.clock.advance(5)
        second = self.process()
        second.start()
        self.assertEqual(second.zk.session_id, session)
        self.assertTrue(second.handoff.reattached)

    def test_judged_by_the_timeout_granted_longer(self) -> None:
        """
        Asked 2 s and granted 20 (ZooKeeper's minimum bounds it), the
        session lives 20 s after its holder's end: a process started 10 s
        after the last check reattaches to it, its nodes kept. Judged by
        the 2 s asked, it was closed, alive, its nodes gone at once.
        """
        first = self.running(session_timeout=2.0, granted=20.0)
        session = first.zk.session_id
        first.zk.leave_open()
        self.server.drop(first.zk)
        self.clock.advance(10.0)
        second = self.process(session_timeout=2.0, granted=20.0)
        second.start()
        self.assertEqual(second.zk.closed_sessions, [])
        self.assertTrue(second.handoff.reattached)
        self.assertEqual(second.zk.session_id, session)
        self.assertIn(path("a"), self.server.nodes)

    def test_judged_by_the_timeout_granted_shorter(self) -> None:
        """
        Asked 30 s and granted 4 (ZooKeeper's maximum bounds it): a crash
        loop's processes, each killed before its first check, reattach
        while the session was checked within 1.5 times 4 s, and the first
        one started later closes it. Judged by the 30 s asked, the loop
        kept it, unchecked, for 45 s.
        """
        first = self.running(session_timeout=30.0, granted=4.0)
        checked = self.clock.seconds()
        session = first.zk.session_id
        self.server.drop(first.zk)
        while True:
            self.assertLess(self.clock.seconds() - checked, 7.0)
            self.clock.advance(1.2)
            process = self.process(session_timeout=30.0, granted=4.0)
            process.start(alone=False)
            if process.zk.closed_sessions:
                break
            self.assertEqual(process.zk.session_id, session)
            self.server.drop(process.zk)
        self.assertEqual(process.zk.closed_sessions, [session])
        self.assertGreater(self.clock.seconds() - checked, 6.0)
        self.assertNotIn(path("a"), self.server.nodes)

    def test_judged_by_the_timeout_asked_without_a_granted_one(self) -> None:
        """
        A file that does not say what ZooKeeper granted (an older
        version's) is judged by the session timeout asked, as before.
        """
        first = self.running()
        session = first.zk.session_id
        document = self.stored()
        self.assertIsNone(document.pop("session_timeout", None))
        with open(state_path(self.directory), "wb") as f:
            f.write(json.dumps(document).encode())
        self.server.drop(first.zk)
        self.clock.advance(14.0)
        second = self.process()
        second.start()
        self.assertTrue(second.handoff.reattached)
        self.server.drop(second.zk)
        self.clock.advance(2.0)
        third = self.process()
        third.start()
        self.assertEqual(third.zk.closed_sessions, [session])
        self.assertFalse(third.handoff.reattached)

    def test_reattached_session_says_what_it_was_granted(self) -> None:
        """
        A process that reattaches is granted its own session timeout for
        the session: the file says that one from then on.
        """
        self.running(granted=4.0).stop()
        second = self.process(granted=6.0)
        second.start()
        self.assertTrue(second.handoff.reattached)
        self.assertEqual(self.stored()["session_timeout"], 6.0)

    def test_refresh_never_overwrites_a_newer_claim(self) -> None:
        """
        A refresh of the checks' time replaces only this process's own
        file: a newer process that claimed the session keeps its claim.
        """
        first = self.running()
        newer = StoredSession(
            PURPOSE,
            first.zk.session_id or 0,
            f"pw-{first.zk.session_id:x}".encode(),
            Owner(1, "newer"),
            self.clock.seconds(),
        )
        with open(state_path(self.directory), "wb") as f:
            f.write(encode_state(newer))
        self.clock.advance(5)
        first.check("a", UP)
        self.assertEqual(self.stored()["owner"], {"pid": 1, "token": "newer"})
        self.assertIsNone(first.handoff.last_error)


class RenamedAgentTests(HandoffTestCase):
    """
    A new process with another agent_id, root or chroot and the same
    state_dir.
    """

    def restarted(self, **more: Any) -> Process:
        """
        A process that published a and b, stopped (its session left open),
        and a new one started with `more`, whose start closed that session
        and took its nodes with it.
        """
        first = self.running()
        session = first.zk.session_id
        first.stop()
        self.assertIn(AGENT_PATH, self.server.nodes)
        second = self.process(**more)
        second.start()
        self.assertEqual(second.zk.closed_sessions, [session])
        self.assertNotIn(session, self.server.sessions)
        self.assertNotIn(AGENT_PATH, self.server.nodes)
        self.assertNotIn(path("a"), self.server.nodes)
        self.assertNotEqual(second.zk.session_id, session)
        return second

    def test_predecessor_session_closed(self) -> None:
        """
        The session the agent left under its former agent id is closed at
        start, once the process that left it is gone: its agent node goes
        at once (no dead agent stays a member), as do its instance nodes,
        which the new session writes at their first check; the file then
        holds the new session, under the new agent id.
        """
        renamed = self.restarted(agent_id="renamed")
        self.assertIn(f"left by agent id {AGENT!r}", renamed.handoff.why_not or "")
        self.assertEqual(
            (self.stored()["agent_id"], self.stored()["session_id"]),
            ("renamed", f"{renamed.zk.session_id:#x}"),
        )
        renamed.check("a", DOWN)
        self.assertEqual(renamed.zk.document(path("a"))["agent"], "renamed")

    def test_session_left_at_another_root_closed(self) -> None:
        """
        The session the agent left for another root (zookeeper.root
        changed between two processes) is closed at start, once the
        process that left it is gone: its nodes at the old root go at
        once rather than stay there, unchecked, until it expires; the
        new process writes its own at the new root.
        """
        moved = self.restarted(root="/moved")
        self.assertIn(
            f"for another root ({ROOT!r}): its session is closed",
            moved.handoff.why_not or "",
        )
        moved.check("a", DOWN)
        self.assertEqual(
            json.loads(self.server.nodes["/moved/instances/a"].data)["status"],
            "down",
        )
        self.assertEqual(self.stored()["root"], "/moved")

    def test_session_of_a_running_agent_left_alone(self) -> None:
        """
        A session left under another agent id by a process that still runs
        (two agents on one state_dir) is neither closed nor reattached to.
        """
        first = self.running()
        session = first.zk.session_id or 0
        running = StoredSession(
            PURPOSE,
            session,
            f"pw-{session:x}".encode(),
            Owner(os.getppid(), "running"),
            self.clock.seconds(),
        )
        with open(state_path(self.directory), "wb") as f:
            f.write(encode_state(running))
        other = self.process(agent_id="other")
        other.start()
        self.assertEqual(other.zk.closed_sessions, [])
        self.assertIn(session, self.server.sessions)
        self.assertIn(AGENT_PATH, self.server.nodes)
        self.assertNotEqual(other.zk.session_id, session)
        self.assertIn("still runs", other.handoff.why_not or "")


class OtherVersionTests(HandoffTestCase):
    """State files of other versions of the agent (an upgrade, a downgrade)."""

    def rewrite(self, **fields: Any) -> None:
        """The state file as another version would have left it."""
        document = {**self.stored(), **fields}
        for key in [k for k, v in fields.items() if v is None]:
            del document[key]
        with open(state_path(self.directory), "wb") as f:
            f.write(json.dumps(document).encode())

    def test_older_file_reattached(self) -> None:
        """
        A file without the fields later versions added (``checked_at``,
        ``session_timeout``: an older version's) is reattached to, its
        nodes kept.
        """
        first = self.running()
        session = first.zk.session_id
        first.stop()
        self.rewrite(checked_at=None, session_timeout=None)
        second = self.process()
        second.start()
        self.assertTrue(second.handoff.reattached)
        self.assertEqual(second.zk.session_id, session)
        self.assertEqual(second.zk.closed_sessions, [])
        self.assertIn(path("a"), self.server.nodes)

    def test_newer_file_session_closed(self) -> None:
        """
        A file of a format this version does not know (a newer version's,
        at a downgrade), naming this agent's session, is not reattached by:
        once the process that left it is gone, its session is closed, so
        that its nodes go at once rather than stay, unchecked, until it
        expires; a new session writes them again at their first check, and
        the file holds it, in this version's format.
        """
        first = self.running()
        session = first.zk.session_id
        first.stop()
        self.rewrite(version=2, discovery_parents=None)
        second = self.process(running=lambda pid: False)
        second.start()
        self.assertEqual(second.zk.closed_sessions, [session])
        self.assertNotIn(session, self.server.sessions)
        self.assertNotIn(path("a"), self.server.nodes)
        self.assertEqual(self.members("a"), [])
        self.assertNotEqual(second.zk.session_id, session)
        self.assertFalse(second.handoff.reattached)
        self.assertIn("version 2 is not 1", second.handoff.why_not or "")
        self.assertEqual(
            (self.stored()["version"], self.stored()["session_id"]),
            (1, f"{second.zk.session_id:#x}"),
        )
        second.check("a", UP)
        self.assertEqual(second.zk.document(path("a"))["status"], "up")

    def test_newer_file_of_a_running_process_left_alone(self) -> None:
        """
        A newer version's file whose process still runs (two on one
        state_dir, the newer started first) is neither closed nor
        reattached by.
        """
        first = self.running()
        session = first.zk.session_id
        self.rewrite(version=2)
        second = self.process(running=lambda pid: True)
        second.start()
        self.assertEqual(second.zk.closed_sessions, [])
        self.assertIn(session, self.server.sessions)
        self.assertIn(path("a"), self.server.nodes)
        self.assertNotEqual(second.zk.session_id, session)
        self.assertIn("still runs", second.handoff.why_not or "")


class StopTests(HandoffTestCase):
    """What a stop does with a state_dir: leave, or on purpose, deregister."""

    def test_stop_leaves_the_session(self) -> None:
        """SIGTERM deletes nothing and closes nothing: the session is left open."""
        first = self.running()
        d = first.publisher.stopService()
        self.successResultOf(d)
        self.assertEqual(first.zk.history[-1], ("leave_open", ""))
        self.assertEqual(first.zk.calls["delete"], 0)
        self.assertIn(first.zk.session_id or first.zk._session, self.server.sessions)

    def test_stop_waits_for_writes_in_flight(self) -> None:
        """The writes in flight end before the session is left (bounded)."""
        first = self.running()
        first.zk.hang("set")
        first.check("a", DOWN)
        d = first.publisher.stopService()
        self.assertNoResult(d)
        first.zk.release()
        self.successResultOf(d)
        self.assertEqual(first.zk.document(path("a"))["status"], "down")
        second = self.running()
        second.zk.hang("set")
        second.check("a", DOWN)
        d = second.publisher.stopService()
        self.clock.advance(STOP_DELETE_TIMEOUT)
        self.successResultOf(d)

    def test_nobody_reattaches(self) -> None:
        """Without a successor the nodes go when the session expires."""
        first = self.running()
        session = first.zk._session or 0
        first.stop()
        self.server.end_session(session)
        self.assertEqual(self.server.children(f"{ROOT}/instances"), [])
        self.assertEqual(self.members("a"), [])

    def test_leave(self) -> None:
        """
        After leave(), a stop deletes the nodes, closes the session and
        removes the state file.
        """
        first = self.running()
        session = first.zk.session_id
        first.publisher.leave()
        self.successResultOf(first.publisher.stopService())
        for node in (path("a"), path("b"), AGENT_PATH):
            self.assertNotIn(node, self.server.nodes)
        self.assertEqual(self.members("a"), [])
        self.assertNotIn(session, self.server.sessions)
        self.assertFalse(os.path.exists(os.path.join(self.directory, STATE_FILE)))
        self.assertEqual(
            left_in(self.directory, PURPOSE),
            f"{self.directory}/{STATE_FILE}: no state file",
        )

    def test_stop_during_start_up_names_the_session_left_open(self) -> None:
        """
        A stop before the claimed session is attached leaves it open, and
        the log line names it (it said ``session none``, as if nothing
        were handed over).
        """
        first = self.running()
        session = first.zk.session_id
        first.stop()
        second = self.process()
        second.start(connect=False)
        events: list[dict[str, Any]] = []
        self.patch(stopping_module, "log", Logger(observer=events.append))
        d = second.publisher.stopService()
        self.clock.advance(STOP_DELETE_TIMEOUT)
        self.successResultOf(d)
        self.assertIn(session, self.server.sessions)
        lines = [e["log_format"].format(**e) for e in events]
        self.assertIn(f"leaving ZooKeeper session {session:#x} open", lines[-1])

    def test_leave_during_start_up(self) -> None:
        """
        A leave while the next process starts (a SIGUSR2 noted during its
        start-up), its claim of the state file still being written and its
        session not attached yet: the stop waits for both, then closes the
        session, so that the nodes the previous process left go at once,
        and removes the state file after its claim. (It closed nothing and
        raced the claim: the nodes stayed until the session expired, and
        the state file stayed.)
        """
        first = self.running()
        session = first.zk.session_id
        first.stop()
        second = self.process()
        second.worker.held = []
        second.start(connect=False)
        second.publisher.leave()
        d = second.publisher.stopService()
        self.assertNoResult(d)
        second.worker.release()
        assert session is not None
        self.assertEqual(
            second.zk.started_with, [(session, f"pw-{session:x}".encode())]
        )
        second.zk.connect()
        self.successResultOf(d)
        self.assertNotIn(session, self.server.sessions)
        for node in (path("a"), path("b"), AGENT_PATH):
            self.assertNotIn(node, self.server.nodes)
        self.assertFalse(os.path.exists(os.path.join(self.directory, STATE_FILE)))

    def test_leave_during_start_up_bounded(self) -> None:
        """
        With ZooKeeper unreachable, that wait ends after
        STOP_DELETE_TIMEOUT; the session is left to expire.
        """
        first = self.running()
        first.stop()
        second = self.process()
        second.start(connect=False)
        second.publisher.leave()
        d = second.publisher.stopService()
        self.assertNoResult(d)
        self.clock.advance(STOP_DELETE_TIMEOUT)
        self.successResultOf(d)
        self.assertFalse(os.path.exists(os.path.join(self.directory, STATE_FILE)))

    def test_never_written_state_file_means_a_deregistering_stop(self) -> None:
        """
        A state file never written (the disk full from the start) holds no
        session for the next process: the stop deletes the nodes and
        closes the session at once, says why, and /debug/stats and
        /healthz said beforehand that no handoff would happen.
        """
        first = self.process()
        first.worker.failing = OSError(28, "No space left on device")
        first.start()
        first.check("a", UP)
        session = first.zk.session_id
        stats = first.publisher.stats()["handoff"]
        self.assertIs(stats["handoff_possible"], False)
        self.assertIn("No space left on device", stats["handoff_blocked_because"])
        self.assertIn("a stop deletes", first.handoff.health_detail() or "")
        self.successResultOf(first.publisher.stopService())
        self.assertNotIn(("leave_open", ""), first.zk.history)
        self.assertEqual(first.zk.history[-1], ("stop", ""))
        self.assertNotIn(path("a"), self.server.nodes)
        self.assertNotIn(AGENT_PATH, self.server.nodes)
        self.assertNotIn(session, self.server.sessions)
        self.flushLoggedErrors()

    def test_failed_write_of_a_new_session_means_a_deregistering_stop(self) -> None:
        """
        The file held the first session, but the write of the next one (after
        an expiry) failed: the file no longer holds the session we hold, so
        the stop deregisters too.
        """
        first = self.running()
        self.assertIs(first.publisher.stats()["handoff"]["handoff_possible"], True)
        self.assertIsNone(first.handoff.health_detail())
        first.worker.failing = OSError(28, "No space left on device")
        first.zk.expire()
        first.zk.connect()
        session = first.zk.session_id
        self.assertNotEqual(self.stored()["session_id"], f"{session:#x}")
        first.check("a", UP)
        self.successResultOf(first.publisher.stopService())
        self.assertNotIn(("leave_open", ""), first.zk.history)
        self.assertNotIn(path("a"), self.server.nodes)
        self.assertNotIn(session, self.server.sessions)
        self.flushLoggedErrors()

    def test_failed_write_retried_at_the_heartbeat(self) -> None:
        """
        A write that failed is tried again at the next heartbeat: once it
        works, the file holds the session, /healthz has nothing to say,
        and the stop leaves the session open for the next process.
        """
        first = self.running()
        first.worker.failing = OSError(24, "Too many open files")
        first.zk.expire()
        first.zk.connect()
        session = first.zk.session_id
        self.assertIsNotNone(first.handoff.health_detail())
        first.worker.failing = None
        self.clock.advance(first.publisher.heartbeat)
        self.assertEqual(self.stored()["session_id"], f"{session:#x}")
        self.assertIsNone(first.handoff.health_detail())
        first.check("a", UP)
        self.successResultOf(first.publisher.stopService())
        self.assertEqual(first.zk.history[-1], ("leave_open", ""))
        self.assertIn(path("a"), self.server.nodes)
        self.flushLoggedErrors()

    def stop_during_a_write(
        self,
    ) -> tuple[Process, Deferred[None], list[Deferred[None]]]:
        """
        A running process, its session just replaced, stopped while the
        state file's writes of the new session wait in the list returned.
        """
        first = self.running()
        pending: list[Deferred[None]] = []
        run_now = first.worker.run

        def run(what: str, call: Callable[[], Any]) -> Deferred[Any]:
            if not what.startswith("a write"):
                return run_now(what, call)
            d: Deferred[None] = Deferred()
            pending.append(d)
            return d

        first.worker.run = run  # type: ignore[method-assign]
        first.zk.expire()
        first.zk.connect()
        d = first.publisher.stopService()
        self.assertNoResult(d)
        self.assertTrue(pending)
        return first, d, pending

    def test_write_in_flight_at_the_stop_works(self) -> None:
        """A write in flight at the stop that works: the session is left open."""
        first, d, pending = self.stop_during_a_write()
        while pending:
            pending.pop(0).callback(None)
        self.successResultOf(d)
        self.assertEqual(first.zk.history[-1], ("leave_open", ""))
        self.assertIn(path("a"), self.server.nodes)

    def test_write_in_flight_at_the_stop_fails(self) -> None:
        """A write in flight at the stop that fails: the stop deregisters."""
        first, d, pending = self.stop_during_a_write()
        while pending:
            pending.pop(0).errback(OSError(5, "Input/output error"))
        self.clock.advance(0)
        self.successResultOf(d)
        self.assertNotIn(("leave_open", ""), first.zk.history)
        self.assertNotIn(path("a"), self.server.nodes)
        self.flushLoggedErrors()

    def test_write_in_flight_at_the_stop_hangs(self) -> None:
        """
        A write that never ends, with ZooKeeper answering nothing: the stop
        waits for it, then deletes, then closes, each bounded.
        """
        first, d, pending = self.stop_during_a_write()
        first.zk.hang(*CALL_KINDS, "stop")
        for step in (STOP_DELETE_TIMEOUT, STOP_DELETE_TIMEOUT, STOP_CLOSE_TIMEOUT):
            self.assertNoResult(d)
            self.clock.advance(step)
        self.successResultOf(d)
        self.assertNotIn(("leave_open", ""), first.zk.history)


class OverlapTests(HandoffTestCase):
    """Two processes on one state_dir at once: the newer wins."""

    def test_older_process_superseded(self) -> None:
        """
        The newer process claims the file, then reattaches; the older loses
        its connection, reads the file, stops writing and leaves the nodes
        alone, even when stopped; it is no twin of the newer.
        """
        older = self.running()
        session = older.zk.session_id
        newer = self.process()
        newer.start()
        self.assertEqual(newer.zk.session_id, session)
        self.assertEqual(len(older.superseded), 1)
        self.assertIn(
            f"ZooKeeper session {session:#x} was taken over by a newer process",
            older.superseded[0],
        )
        self.assertEqual(older.zk.history[-1], ("leave_open", ""))
        reason = older.publisher.unhealthy_reason() or ""
        self.assertIn("taken over by a newer process", reason)
        calls = sum(older.zk.calls.values())
        older.check("a", DOWN)
        self.clock.advance(60)
        self.successResultOf(older.publisher.stopService())
        self.assertEqual(sum(older.zk.calls.values()), calls)
        newer.check("a", UP)
        self.assertEqual(newer.zk.document(path("a"))["status"], "up")
        self.assertEqual(self.members("a"), ["member_0000000000"])
        self.assertEqual(newer.publisher.stats()["conflicts_started"], 0)
        self.assertIsNone(newer.publisher.unhealthy_reason())

    def test_newer_version_takeover_learnt(self) -> None:
        """
        A newer version's process that took the session over, its state
        file in a format this version does not know, is learnt of from the
        session and holder the file still names: this process stops
        using the session rather than take it back at each reconnection.
        """
        older = self.running()
        session = older.zk.session_id
        document = {
            **self.stored(),
            "version": 2,
            "owner": {"pid": os.getppid(), "token": "newer"},
        }
        with open(state_path(self.directory), "wb") as f:
            f.write(json.dumps(document).encode())
        self.assertIs(self.successResultOf(older.handoff.superseded_now()), True)
        self.assertEqual(len(older.superseded), 1)
        self.assertIn(
            f"ZooKeeper session {session:#x} was taken over by a newer process",
            older.superseded[0],
        )

    def resumed_after_a_newer_session(self) -> tuple[Process, Process, int]:
        """
        The older process paused (SIGSTOP) past its session timeout; a
        newer one (pid 4242) started meanwhile, found the session expired
        and opened its own; then the older one resumed, on a new session
        of its own. Each takes the other's pid to run. Returns both and
        the older one's session lost.
        """
        older = self.process(running=lambda pid: pid == 4242)
        older.start()
        older.check("a", UP)
        older.check("b", UP)
        lost = older.zk.session_id or 0
        older.zk.suspend()
        self.server.end_session(lost)
        newer = self.process(running=lambda pid: pid == os.getpid())
        newer.handoff.owner = Owner(4242, "0123456789abcdef")
        newer.start()
        newer.check("a", UP)
        newer.check("b", UP)
        self.assertFalse(newer.handoff.reattached)
        older.zk.connect()
        return older, newer, lost

    def test_older_process_back_on_a_new_session_superseded(self) -> None:
        """
        An older process back from a pause past its session timeout, after
        a newer process on the same state_dir opened a session of its own,
        leaves the state file naming the newer one and stops as superseded,
        touching nothing. Before, it wrote its new session in the file: the
        newer process found its handoff gone ("a stop now deletes this
        agent's nodes") and its stop deleted every node, while the older
        one stopped as a twin only once it found the agent node held.
        """
        older, newer, lost = self.resumed_after_a_newer_session()
        session = newer.zk.session_id or 0
        self.assertEqual(self.stored()["owner"]["token"], "0123456789abcdef")
        self.assertEqual(self.stored()["session_id"], f"{session:#x}")
        [line] = older.superseded
        self.assertIn(
            f"ZooKeeper session {lost:#x} was lost, and a newer process (pid "
            f"4242) using the same state_dir ({self.directory}) holds session "
            f"{session:#x} now",
            line,
        )
        self.assertEqual((older.twins, newer.twins, newer.superseded), ([], [], []))
        own = older.zk.session_id
        self.assertNotIn(own, [lost, session])
        self.assertEqual(
            [p for p, n in self.server.nodes.items() if n.owner == own], []
        )
        self.clock.advance(HEARTBEAT)
        newer.check("a", UP)
        self.successResultOf(older.publisher.stopService())
        self.assertEqual(self.stored()["owner"]["token"], "0123456789abcdef")
        self.assertIsNone(newer.handoff.overwritten)
        self.assertIsNone(newer.handoff.blocked)
        newer.stop()
        self.assertIn(("leave_open", ""), newer.zk.history)
        third = self.process()
        third.start()
        self.assertEqual(third.zk.session_id, session)
        self.assertIs(third.handoff.reattached, True)

    def test_older_process_back_on_a_new_session_closes_it(self) -> None:
        """
        The older process, superseded while on a session of its own (opened
        once its first expired), closes that session at once: whatever it
        made in it goes with it, and nothing of the newer process's is
        touched. Before, it was left open, to expire a session timeout
        after the exit.
        """
        older, newer, lost = self.resumed_after_a_newer_session()
        self.assertIn(("stop", ""), older.zk.history)
        self.assertNotIn(("leave_open", ""), older.zk.history)
        session = newer.zk.session_id
        # The older one's first session expired; its second is closed.
        self.assertEqual(list(self.server.sessions), [session])
        self.assertEqual(newer.zk.owner(path("a")), session)
        self.assertEqual(newer.zk.owner(path("b")), session)
        members = [f"{DISCOVERY}/{s}/{m}" for s in "ab" for m in self.members(s)]
        owners = [self.server.nodes[m].owner for m in members]
        self.assertEqual(owners, [session, session])
        d = older.publisher.stopService()
        self.successResultOf(d)
        self.assertEqual(self.stored()["owner"]["token"], "0123456789abcdef")

    def double_start(self) -> tuple[Process, Process]:
        """
        Two processes started at once on one state_dir, each on a new
        session: the first made the agent node, the second wrote the state
        file last, waited for the nodes and found them a live twin's. The
        winner takes the loser's pid to run (it is on its way out).
        """
        winner = self.process(running=lambda pid: True)
        loser = self.process()
        winner.start()
        loser.start()
        for name in ("a", "b"):
            winner.check(name, UP)
            loser.check(name, UP)
        self.assertEqual(self.stored()["owner"]["token"], loser.handoff.owner.token)
        for _ in range(20):
            self.clock.advance(1.0)
            if loser.twins:
                break
        self.assertEqual(len(loser.twins), 1)
        loser.stop()
        return winner, loser

    def test_double_start_winner_back_on_a_new_session_goes_on(self) -> None:
        """
        The winner of a double start that loses its session while the
        loser, which exited as a twin, still runs is not superseded: the
        session the state file names does not hold this agent's node, so
        it writes its new session over the file and publishes again.
        Before, it took the loser for a newer process and stopped too:
        nobody published.
        """
        winner, loser = self.double_start()
        lost = winner.zk.session_id
        winner.zk.suspend()
        self.server.end_session(lost or 0)
        winner.zk.connect()
        self.assertEqual(winner.superseded, [])
        session = winner.zk.session_id
        self.assertNotIn(session, [None, lost])
        self.assertEqual(self.stored()["session_id"], f"{session:#x}")
        self.assertEqual(self.stored()["owner"]["token"], winner.handoff.owner.token)
        winner.check("a", DOWN)
        winner.check("b", UP)
        self.assertEqual(winner.zk.document(path("a"))["status"], "down")
        self.assertEqual(winner.zk.owner(path("b")), session)
        self.assertEqual(winner.zk.owner(f"{ROOT}/agents/{AGENT}"), session)
        self.assertIsNone(winner.handoff.blocked)

    def test_disconnection_of_the_holder_is_no_takeover(self) -> None:
        """A process that merely lost its connection reconnects as before."""
        first = self.running()
        first.zk.suspend()
        first.zk.connect()
        self.assertEqual(first.superseded, [])
        first.check("a", DOWN)
        self.assertEqual(first.zk.document(path("a"))["status"], "down")

    def test_unreadable_file_is_no_takeover(self) -> None:
        """Not knowing (an unreadable file) is not being superseded."""
        first = self.running()
        os.unlink(os.path.join(self.directory, STATE_FILE))
        first.zk.suspend()
        first.zk.connect()
        self.assertEqual(first.superseded, [])


def _no() -> None:
    """Following the membership, as a group would: nothing here."""


class CopiedStateFileTests(HandoffTestCase):
    """
    A second process with a copy of the state file (a cloned image, a
    restored backup) on a state_dir of its own: two processes, one session.
    """

    def clone(self, instances: dict[str, RedisInstance] | None = None) -> Process:
        """A process started on a copy of the running process's state file."""
        directory = os.path.abspath(self.mktemp())
        os.mkdir(directory, 0o700)
        copy = os.path.join(directory, STATE_FILE)
        with open(os.path.join(self.directory, STATE_FILE), "rb") as f:
            data = f.read()
        with open(os.open(copy, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(data)
        clone = self.process(instances, directory=directory)
        clone.start(alone=False)
        return clone

    def test_the_copy_is_refused_and_stops_as_a_twin(self) -> None:
        """
        The process that wrote the session's agent node first refuses the
        copy when its reconnection finds the copy's token there, and keeps
        the session; the copy finds itself refused at its next connection
        and stops as a twin does (one line, on_twin), leaving the session
        open and its nodes alone: no fight.
        """
        first = self.running()
        session = first.zk.session_id
        clone = self.clone()
        self.assertEqual(clone.zk.session_id, session)
        self.assertEqual(first.zk.state, "suspended")
        first.zk.connect()
        refused = first.zk.document(AGENT_PATH)["refused"]
        self.assertEqual(refused, [clone.handoff.owner.token])
        clone.zk.connect()
        [line] = clone.twins
        self.assertIn(
            f"session {session:#x} is in use by another live process "
            f"(pid {os.getpid()}) of agent id 'agent-1', which refused this one",
            line,
        )
        self.assertIn("is a copy of its state file", line)
        self.assertEqual(clone.zk.history[-1], ("leave_open", ""))
        self.assertEqual(first.twins, [])
        self.assertEqual(first.superseded, [])
        first.zk.connect()
        # The copy's pid was in our agent node meanwhile (`on_forged`).
        self.assertIn(
            f"(the last {AGENT_PATH})", first.publisher.unhealthy_reason() or ""
        )
        first.check("a", DOWN)
        self.assertEqual(first.zk.document(path("a"))["status"], "down")
        self.assertEqual(
            first.zk.document(AGENT_PATH)["token"], first.handoff.owner.token
        )
        calls = sum(clone.zk.calls.values())
        self.successResultOf(clone.publisher.stopService())
        self.assertEqual(sum(clone.zk.calls.values()), calls)
        self.assertIn(session, self.server.sessions)
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def joined(self, process: Process) -> None:
        """`process` publishes a catalog, as a group's member does."""
        catalog = Catalog(frozenset(process.states), 1, 1)
        process.publisher.join_group(catalog, 1, lambda name: False, (_no, _no))
        self.clock.advance(1.0)

    def test_the_copy_of_a_group_member_is_refused_too(self) -> None:
        """
        With catalogs published (every agent with ZooKeeper is a group's
        member), the copy is still refused and stops: the older process's
        catalog is in the session.
        """
        first = self.running()
        self.joined(first)
        clone = self.clone()
        first.zk.connect()
        self.joined(first)
        clone.zk.connect()
        self.assertEqual(len(clone.twins), 1)
        self.assertEqual(first.twins, [])

    def test_a_refusal_written_by_another_client_is_no_stop(self) -> None:
        """
        Another client writing this process's token into the agent node's
        ``refused`` (it is there for anyone to read) does not stop it at
        its next connection: no other process's catalog is in the
        session. The node is written again, and /healthz names the write.
        Before, the process stopped as a refused copy (status 78).
        """
        first = self.running()
        self.joined(first)
        session = first.zk.session_id
        token = first.handoff.owner.token
        forged = {**first.zk.document(AGENT_PATH), "token": "f00d", "pid": 666}
        forged["refused"] = [token]
        self.server.put(AGENT_PATH, json.dumps(forged).encode(), session)
        first.zk.suspend()
        first.zk.connect()
        self.clock.advance(1.0)
        self.assertEqual(first.twins, [])
        self.assertEqual(first.zk.document(AGENT_PATH)["token"], token)
        reason = first.publisher.unhealthy_reason() or ""
        self.assertIn(f"(the last {AGENT_PATH})", reason)
        self.assertEqual(first.superseded, [])
        self.assertNotIn(("leave_open", ""), first.zk.history)

    def sharing_log(self) -> list[dict[str, Any]]:
        """What `sentinel.sharing` logs from now on (its `log`, patched)."""
        events: list[dict[str, Any]] = []
        self.patch(sharing_module, "log", Logger(observer=events.append))
        return events

    def token_written_in(self, process: Process, token: str) -> None:
        """
        Another client writes `token` (and pid 666) into the agent node of
        `process`, in its session, refusing nobody; then a blip of
        ZooKeeper: the process reads the node at its reconnection.
        """
        session = process.zk.session_id
        assert session is not None
        forged = {**process.zk.document(AGENT_PATH), "token": token, "pid": 666}
        self.server.put(AGENT_PATH, json.dumps(forged).encode(), session)
        process.zk.suspend()
        process.zk.connect()
        self.clock.advance(1.0)

    def test_another_token_written_by_another_client_is_no_copy(self) -> None:
        """
        Another client writing a token of a process's form into the agent
        node (refusing nobody) is not logged as a copy of the state file:
        no other process's catalog is in the session, so the line says it
        is another client's write or a copy that has published nothing
        yet; the token is refused (it names no one), the process goes on,
        and /healthz names the write. Before, one error line blamed a copy
        of the state file and /healthz said nothing.
        """
        first = self.running()
        self.joined(first)
        events = self.sharing_log()
        token = first.handoff.owner.token
        self.token_written_in(first, "f00df00df00df00d")
        [line] = map(formatEvent, events)
        self.assertIn("names another process (pid 666)", line)
        self.assertIn("another ZooKeeper client wrote it, or a copy of", line)
        self.assertNotIn("is also used by another process", line)
        self.assertEqual(first.zk.document(AGENT_PATH)["token"], token)
        self.assertEqual(first.zk.document(AGENT_PATH)["refused"], ["f00df00df00df00d"])
        reason = first.publisher.unhealthy_reason() or ""
        self.assertIn(f"(the last {AGENT_PATH})", reason)
        self.assertEqual((first.twins, first.superseded), ([], []))
        self.assertIsNone(first.publisher.halted)

    def test_a_token_of_no_process_is_not_written_back(self) -> None:
        """
        A token of a form no process's has (here 300 KB of it) is another
        client's write for sure: said so, named in /healthz, and not
        refused, so never written into our agent node (two such, half a
        megabyte each, made it larger than ZooKeeper takes). Before, it
        was refused, written back, and logged as a copy of the state file.
        """
        first = self.running()
        self.joined(first)
        events = self.sharing_log()
        self.token_written_in(first, "x" * 300_000)
        [line] = map(formatEvent, events)
        self.assertIn("by a token no process of this agent makes", line)
        self.assertIn("another ZooKeeper client wrote it, not a copy", line)
        self.assertEqual(first.zk.document(AGENT_PATH)["refused"], [])
        self.assertEqual(
            first.zk.document(AGENT_PATH)["token"], first.handoff.owner.token
        )
        reason = first.publisher.unhealthy_reason() or ""
        self.assertIn(f"(the last {AGENT_PATH})", reason)
        self.assertEqual((first.twins, first.superseded), ([], []))

    def test_a_copy_with_a_catalog_is_named_a_conflict(self) -> None:
        """
        A copy whose catalog is in the session when the older process
        reads its token is a copy for sure: the error line says so, the
        copy is refused and stops, and /healthz names the agent node
        written meanwhile (before: nothing).
        """
        first = self.running()
        self.joined(first)
        clone = self.clone()
        self.joined(clone)
        events = self.sharing_log()
        first.zk.connect()
        self.clock.advance(1.0)
        [line] = map(formatEvent, events)
        self.assertIn(
            f"session {first.zk.session_id:#x} is also used by another process",
            line,
        )
        self.assertIn(
            f"(the last {AGENT_PATH})", first.publisher.unhealthy_reason() or ""
        )
        clone.zk.connect()
        self.clock.advance(1.0)
        self.assertEqual(len(clone.twins), 1)
        self.assertEqual(first.twins, [])

    def test_a_refusal_by_no_process_token_is_no_stop(self) -> None:
        """
        A refusal of this process in the agent node by a token of a form
        no process's has is another client's write, even before this
        process publishes a catalog (nothing else to tell a copy by then):
        it goes on, and /healthz names the write. Before, it stopped as a
        refused copy.
        """
        first = self.running()
        session = first.zk.session_id
        forged = {**first.zk.document(AGENT_PATH), "token": "evil", "pid": 666}
        forged["refused"] = [first.handoff.owner.token]
        self.server.put(AGENT_PATH, json.dumps(forged).encode(), session)
        first.zk.suspend()
        first.zk.connect()
        self.clock.advance(1.0)
        self.assertEqual((first.twins, first.superseded), ([], []))
        reason = first.publisher.unhealthy_reason() or ""
        self.assertIn(f"(the last {AGENT_PATH})", reason)

    def test_agent_node_written_over_with_our_token_is_named(self) -> None:
        """
        With a state_dir, another client's write over our agent node that
        keeps our token (pid 666), found at the next heartbeat's set, is
        named: no other process has our token. Before, it was written
        over, named nowhere, unless a reconnection read it first.
        """
        first = self.running()
        self.joined(first)
        session = first.zk.session_id
        forged = {**first.zk.document(AGENT_PATH), "pid": 666}
        self.server.put(AGENT_PATH, json.dumps(forged).encode(), session)
        self.clock.advance(HEARTBEAT)
        self.assertNotEqual(first.zk.document(AGENT_PATH)["pid"], 666)
        reason = first.publisher.unhealthy_reason() or ""
        self.assertIn(f"(the last {AGENT_PATH})", reason)
        self.assertEqual((first.twins, first.superseded), ([], []))

    def test_agent_node_written_over_with_another_token_at_a_heartbeat(
        self,
    ) -> None:
        """
        Another process's token found at the heartbeat's set (no
        reconnection) is judged as at a connection: refused, the line says
        what is known, /healthz names the write. Before, the heartbeat
        wrote ours over it, and nothing was said.
        """
        first = self.running()
        self.joined(first)
        events = self.sharing_log()
        session = first.zk.session_id
        forged = {**first.zk.document(AGENT_PATH), "token": "f00df00df00df00d"}
        self.server.put(AGENT_PATH, json.dumps(forged).encode(), session)
        self.clock.advance(HEARTBEAT)
        self.clock.advance(1.0)
        [line] = map(formatEvent, events)
        self.assertIn("another ZooKeeper client wrote it, or a copy of", line)
        document = first.zk.document(AGENT_PATH)
        self.assertEqual(document["token"], first.handoff.owner.token)
        self.assertEqual(document["refused"], ["f00df00df00df00d"])
        reason = first.publisher.unhealthy_reason() or ""
        self.assertIn(f"(the last {AGENT_PATH})", reason)

    def successor(self) -> tuple[Process, int, str]:
        """
        A process started on the state_dir of one that stopped: it, its
        session (the stopped one's), and the stopped one's token.
        """
        first = self.running()
        session = first.zk.session_id or 0
        predecessor = first.handoff.owner.token
        first.stop()
        second = self.process()
        second.start()
        return second, session, predecessor

    def test_tokens_written_in_a_loop_log_a_line_a_minute(self) -> None:
        """
        A client writing a new token into the agent node before every
        heartbeat for 10 minutes: each is found and refused (never more
        than REFUSED_KEPT kept), /healthz names the writes throughout, and
        the log says so once a minute, with the count since: 10 lines.
        Before, a line each: 60.
        """
        first = self.running()
        self.joined(first)
        events = self.sharing_log()
        session = first.zk.session_id
        for i in range(60):
            said = {**first.zk.document(AGENT_PATH), "token": f"{i:016x}"}
            self.server.put(AGENT_PATH, json.dumps(said).encode(), session)
            self.clock.advance(HEARTBEAT)
            reason = first.publisher.unhealthy_reason() or ""
            self.assertIn(f"(the last {AGENT_PATH})", reason)
        lines = [formatEvent(e) for e in events]
        self.assertEqual(len(lines), 10)
        self.assertIn("(5 more since the last such line)", lines[1])
        self.assertEqual(len(first.zk.document(AGENT_PATH)["refused"]), 8)
        self.assertEqual(first.twins, [])

    def test_a_predecessor_writing_at_our_heartbeat_is_not_named(self) -> None:
        """
        The process whose session this one took at start writes the agent
        node with its own token on its way out: found at our heartbeat's
        set, it is written over, and named nowhere.
        """
        second, session, predecessor = self.successor()
        self.clock.advance(ALONE_AFTER)
        said = {**second.zk.document(AGENT_PATH), "token": predecessor}
        self.server.put(AGENT_PATH, json.dumps(said).encode(), owner=session)
        self.clock.advance(HEARTBEAT)
        self.assertEqual(
            second.zk.document(AGENT_PATH)["token"], second.handoff.owner.token
        )
        self.assertEqual(second.zk.document(AGENT_PATH)["refused"], [])
        self.assertIsNone(second.publisher.unhealthy_reason())
        self.assertEqual(second.twins, [])

    def test_a_copy_sweeps_nothing_before_the_session_is_its_alone(self) -> None:
        """
        A copy that knows fewer instances does not delete the other
        process's nodes of the rest at its reattach: its sweep waits until
        the session has been its alone for ALONE_AFTER seconds, and the
        other process takes the connection back before that.
        """
        first = self.running()
        clone = self.clone({"a": self.instances["a"]})
        self.clock.advance(ALONE_AFTER / 2)
        first.zk.connect()
        self.clock.advance(ALONE_AFTER)
        clone.zk.connect()
        self.clock.advance(ALONE_AFTER * 2)
        self.assertEqual(len(clone.twins), 1)
        self.assertEqual(clone.publisher.swept, 0)
        first.zk.connect()
        self.clock.advance(ALONE_AFTER * 2)
        self.assertIn(path("b"), self.server.nodes)
        self.assertEqual(self.members("b"), ["member_0000000000"])

    def test_a_predecessor_still_writing_is_no_copy(self) -> None:
        """
        The process whose session this one took at start (same state_dir)
        may write once more before it reads the state file and stops:
        its token in the agent node is not refused, and nothing stops.
        """
        second, session, predecessor = self.successor()
        self.server.put(
            AGENT_PATH, json.dumps({"token": predecessor}).encode(), owner=session
        )
        second.zk.suspend()
        second.zk.connect()
        self.clock.advance(ALONE_AFTER)
        self.assertEqual(second.twins, [])
        self.assertEqual(second.zk.document(AGENT_PATH)["refused"], [])
        self.assertEqual(
            second.zk.document(AGENT_PATH)["token"], second.handoff.owner.token
        )


class LeftoverFileTests(HandoffTestCase):
    """
    A state file that holds no live process's session of this agent id:
    the loser of a double start's, or none (removed).
    """

    def setUp(self) -> None:
        super().setUp()
        self.alive = {4242}

    def running(self) -> Process:
        first = self.process(running=lambda pid: pid in self.alive)
        first.start()
        first.check("a", UP)
        first.check("b", UP)
        return first

    def double_start(self) -> None:
        """The other process of a double start writes its new session."""
        other = StoredSession(
            PURPOSE, 0x7777, b"theirs", Owner(4242, "their-token"), START
        )
        with open(state_path(self.directory), "wb") as f:
            f.write(encode_state(other))

    def assert_handed_over(self, first: Process) -> None:
        """A stop now leaves the session open, the file holding it."""
        session = first.zk.session_id or 0
        first.stop()
        self.assertIn(("leave_open", ""), first.zk.history)
        self.assertEqual(self.stored()["session_id"], f"{session:#x}")
        self.assertEqual(self.stored()["owner"]["token"], first.handoff.owner.token)

    def test_written_again_once_the_twin_is_gone(self) -> None:
        """
        The file a double start's loser wrote last stands while that
        process runs; once it is gone (it exits as a twin), the next
        heartbeat writes this process's session in it again, and a stop
        hands over. Before, every stop deregistered until the end.
        """
        first = self.running()
        self.double_start()
        self.clock.advance(10.0)
        self.assertIs(first.publisher.stats()["handoff"]["handoff_possible"], False)
        self.assertEqual(self.stored()["session_id"], "0x7777")
        self.alive.clear()
        self.clock.advance(10.0)
        self.assertIsNone(first.handoff.overwritten)
        self.assertIs(first.publisher.stats()["handoff"]["handoff_possible"], True)
        self.assert_handed_over(first)

    def test_stop_writes_it_again(self) -> None:
        """A stop that finds the twin's file, its process gone, hands over."""
        first = self.running()
        self.double_start()
        self.alive.clear()
        self.assert_handed_over(first)

    def test_stop_after_the_twin_is_gone_writes_it_again(self) -> None:
        """
        A stop that comes after the twin exited, though the last heartbeat
        found the file naming it while it ran, reads the file again and
        hands over. Before, the stop took the heartbeat's verdict: it
        deleted every node and closed the session (measured: a restart 3 s
        after the twin exited left 20 of 20 nodes missing for 2.3 s).
        """
        first = self.running()
        self.double_start()
        self.clock.advance(10.0)
        self.assertIsNotNone(first.handoff.overwritten)
        self.alive.clear()
        self.assert_handed_over(first)

    def test_removed_file_written_again(self) -> None:
        """A state file removed while the agent runs is written again."""
        first = self.running()
        os.unlink(state_path(self.directory))
        self.clock.advance(10.0)
        self.assert_handed_over(first)

    def test_corrupt_file_written_again(self) -> None:
        """
        A state file made corrupt while the agent runs (truncated, or not
        JSON: no version writes such a file, so it names nobody) is
        written again at the next heartbeat, and a stop hands over. It was
        taken for another agent's: the stop deregistered (a restart then
        left both instance nodes missing for 5.5 s).
        """
        for data in (b"", b'{"format": "sentinel zook'):
            first = self.running()
            with open(state_path(self.directory), "wb") as f:
                f.write(data)
            self.clock.advance(10.0)
            self.assertIsNone(first.handoff.overwritten)
            self.assert_handed_over(first)
            self.flushLoggedErrors()

    def test_oversized_file_written_again(self) -> None:
        """
        A state file grown past the size the agent reads while it runs (a
        sparse 1 GB file put in its place, say) names nobody either, for
        no version writes one over that size: it is written again at the
        next heartbeat, and a stop hands over. It was taken for another
        agent's ("Another agent sharing this state_dir?"): the handoff was
        lost for as long as the process ran, and a restart deregistered.
        """
        first = self.running()
        with open(state_path(self.directory), "wb") as f:
            f.truncate(MAX_STATE_BYTES + 1)
        self.clock.advance(10.0)
        self.assertIsNone(first.handoff.overwritten)
        self.assertLess(os.path.getsize(state_path(self.directory)), 4096)
        self.assert_handed_over(first)

    def test_removed_state_dir_made_again(self) -> None:
        """A state_dir removed while the agent runs is made again (0700)."""
        first = self.running()
        shutil.rmtree(self.directory)
        self.clock.advance(10.0)
        self.assertEqual(stat.S_IMODE(os.stat(self.directory).st_mode), 0o700)
        self.assert_handed_over(first)

    def test_state_dir_replaced_by_a_file(self) -> None:
        """
        A state_dir replaced by a file while the agent runs is named as
        such, once: no handoff is possible, and the error says the
        directory is not one and what to do, not that another agent
        shares it (it said "Another agent sharing this state_dir?").
        """
        first = self.running()
        events: list[dict[str, Any]] = []
        self.patch(handoff_module, "log", Logger(observer=events.append))
        shutil.rmtree(self.directory)
        with open(self.directory, "w") as f:
            f.write("not a directory")
        self.clock.advance(10.0)
        self.clock.advance(10.0)
        stats = first.publisher.stats()["handoff"]
        self.assertIs(stats["handoff_possible"], False)
        self.assertIn("is not a directory", stats["handoff_blocked_because"])
        lines = [e["log_format"].format(**e) for e in events]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn(f"{self.directory} is not a directory", lines[0])
        self.assertIn("Mend it, or set another state_dir", lines[0])
        self.assertNotIn("Another agent", lines[0])
        os.unlink(self.directory)


class SharedStateDirTests(HandoffTestCase):
    """Two agents with different agent ids on one state_dir (a copied config)."""

    def overwrite(self) -> None:
        """The other agent, started on our state_dir, writes its session there."""
        other = StoredSession(
            SessionPurpose(PURPOSE.hosts, ROOT, "agent-2"),
            0x7777,
            b"theirs",
            Owner(4242, "their-token"),
            self.clock.seconds(),
        )
        with open(state_path(self.directory), "wb") as f:
            f.write(encode_state(other))

    def test_overwritten_file_found_at_the_heartbeat(self) -> None:
        """
        The file overwritten by another agent is found at the next
        heartbeat: /debug/stats says no handoff is possible and why,
        /healthz says so (still 200), and the file is not written back
        (the other agent's own handoff stays possible).
        """
        first = self.running()
        writes = first.handoff.writes
        self.overwrite()
        self.assertTrue(first.publisher.stats()["handoff"]["handoff_possible"])
        self.clock.advance(10.0)
        stats = first.publisher.stats()["handoff"]
        self.assertIs(stats["handoff_possible"], False)
        self.assertEqual(
            stats["handoff_blocked_because"],
            "the state file no longer holds it (for another agent id ('agent-2'))",
        )
        self.assertIn("a stop deletes", first.handoff.health_detail() or "")
        self.assertIsNone(first.publisher.unhealthy_reason())
        self.clock.advance(10.0)
        self.assertEqual(first.handoff.writes, writes)
        self.assertEqual(self.stored()["agent_id"], "agent-2")

    def test_read_error_is_no_verdict(self) -> None:
        """
        A read of the file that fails (out of file descriptors) says nothing
        of what it holds: the handoff stays possible, one warning says what
        happened (not another agent), once until a read works again; and a
        stop then still leaves the session open. (It was taken for an
        overwrite: an error line blaming another agent, every time, and a
        stop would have deregistered.)
        """
        first = self.running()
        events: list[dict[str, Any]] = []
        self.patch(handoff_module, "log", Logger(observer=events.append))
        first.worker.failing = NotRead("Too many open files")
        self.clock.advance(10.0)
        self.clock.advance(10.0)
        stats = first.publisher.stats()["handoff"]
        self.assertIs(stats["handoff_possible"], True)
        self.assertEqual(stats["state_file_read_error"], "Too many open files")
        self.assertIsNone(first.handoff.health_detail())
        lines = [e["log_format"].format(**e) for e in events]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("could not be read", lines[0])
        self.assertIn("Too many open files", lines[0])
        self.assertNotIn("Another agent", lines[0])
        first.worker.failing = None
        self.clock.advance(10.0)
        self.assertIsNone(first.publisher.stats()["handoff"]["state_file_read_error"])
        self.assertIn("read again", events[-1]["log_format"])
        first.worker.failing = NotRead("Too many open files")
        first.stop()
        self.assertIn(("leave_open", ""), first.zk.history)

    def test_read_error_keeps_an_overwrite(self) -> None:
        """A failed read after an overwrite was found changes nothing."""
        first = self.running()
        self.overwrite()
        self.clock.advance(10.0)
        first.worker.failing = NotRead("Too many open files")
        self.clock.advance(10.0)
        self.assertIs(first.publisher.stats()["handoff"]["handoff_possible"], False)
        self.assertIsNotNone(first.handoff.overwritten)

    def test_stop_reads_the_file_again_and_deregisters(self) -> None:
        """
        A stop right after another agent overwrote the file (no heartbeat
        since) reads it again, and deletes the nodes and closes the
        session rather than leave them to a process that cannot reattach.
        """
        first = self.running()
        session = first.zk.session_id
        self.overwrite()
        d = first.publisher.stopService()
        self.successResultOf(d)
        self.assertNotIn(("leave_open", ""), first.zk.history)
        self.assertEqual(first.zk.history[-1], ("stop", ""))
        self.assertNotIn(path("a"), self.server.nodes)
        self.assertNotIn(AGENT_PATH, self.server.nodes)
        self.assertNotIn(session, self.server.sessions)

    def test_file_still_ours_is_handed_over(self) -> None:
        """Read again at the stop and still ours, the session is left open."""
        first = self.running()
        session = first.zk.session_id
        self.clock.advance(10.0)
        first.stop()
        self.assertIn(("leave_open", ""), first.zk.history)
        self.assertIn(session, self.server.sessions)
        self.assertIsNone(first.handoff.overwritten)

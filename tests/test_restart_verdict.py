"""
The next process's first checks of the instances whose nodes it
reattached to, with a state_dir (DESIGN.md sections 2.6 and 8), on a
Clock: a fresh verdict its previous process left is where its rise/fall
starts, so that a restart is no news of the instance; a stale one, or a
new session, leaves its first check to decide.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sentinel.health import InstanceHealth
from sentinel.membership import SETTLE
from sentinel.sharing import ALONE_AFTER
from sentinel.stopping import STOP_DELETE_TIMEOUT
from tests.groupfakes import DISCOVERY, DOWN, INTERVAL, ROOT, UP, Fleet, Member
from tests.test_group import handoffs
from tests.test_publisher import REFRESH

NAMES = [f"r{i:02d}" for i in range(24)]
RISE = 2
FALL = 3
STEP = 0.05
SERVERSET = ("serverset", DISCOVERY)


class Scene:
    """
    Agent "a" (with `others` more members, one replica) publishes
    `NAMES`, each as `a_sees`, with a state_dir and serverset members,
    long enough for its verdicts to settle; then it is stopped (SIGTERM)
    and its next process started on the same state_dir, whose checks
    answer `then_sees`. Every node's status and every instance's member
    count are recorded at each step.
    """

    def __init__(
        self,
        case: SynchronousTestCase,
        a_sees: Any,
        then_sees: Any,
        state_dir: bool = True,
        others: int = 0,
        replicas: int = 1,
        quorum: int | None = None,
    ) -> None:
        fleet = self.fleet = Fleet()
        self.replicas, self.quorum = replicas, quorum
        handoff = handoffs(fleet, os.path.abspath(case.mktemp()))
        self.handoff = handoff if state_dir else lambda: None
        members = [self.add("a", a_sees)]
        members += [self.add(other, a_sees) for other in "bcd"[:others]]
        for member in members:
            member.start()
        fleet.run(SETTLE_SECONDS + (SETTLE if others else 0.0))
        a = members[0]
        self.share = sorted(
            n for n in NAMES if (fleet.node(n) or {}).get("agent") == "a"
        )
        case.assertTrue(self.share)
        self.session = a.zk.session_id
        self.said = {n: fleet.node(n) or {} for n in self.share}
        stopped = a.stop()
        fleet.run(STOP_DELETE_TIMEOUT)
        case.successResultOf(stopped)
        fleet.server.drop(a.zk)
        self.statuses: dict[str, list[str | None]] = {n: [] for n in self.share}
        self.listed: dict[str, list[int]] = {n: [] for n in self.share}
        # Every ``checked_at`` each node said.
        self.checked: dict[str, set[float | None]] = {n: set() for n in self.share}
        self.first_check: dict[str, float] = {}
        self.stopped_at = fleet.clock.seconds()
        self.again = self.add("a", then_sees)

    def add(self, agent_id: str, sees: Any) -> Member:
        member = self.fleet.add(
            agent_id,
            NAMES,
            handoff=self.handoff() if agent_id == "a" else None,
            discovery=SERVERSET,
            rise=RISE,
            fall=FALL,
            replicas=self.replicas,
            quorum=self.quorum,
        )
        for name in NAMES:
            member.see(name, sees)
        return member

    def run(self, seconds: float, then_sees: Any = None) -> None:
        """
        Start the next process if it is not, and let `seconds` pass,
        recording; with `then_sees`, its checks answer that from its
        second check of each instance on.
        """
        fleet, again = self.fleet, self.again
        if not again.monitor.running:
            again.start()
        for _ in range(round(seconds / STEP)):
            fleet.clock.advance(STEP)
            for name, probe in again.probes.items():
                if probe.checks and name not in self.first_check:
                    self.first_check[name] = fleet.clock.seconds()
                    if then_sees is not None:
                        again.see(name, then_sees)
            for name in self.share:
                document = fleet.node(name) or {}
                self.statuses[name].append(document.get("status"))
                self.checked[name].add(document.get("checked_at"))
                self.listed[name].append(len(fleet.members_of(name)))

    def changed_at(self, name: str, status: str) -> float | None:
        """When `name`'s node first said `status` after the stop."""
        for step, said in enumerate(self.statuses[name]):
            if said == status:
                return self.stopped_at + (step + 1) * STEP
        return None


# Long enough for a's first checks and members to settle.
SETTLE_SECONDS = (RISE + 2) * INTERVAL + ALONE_AFTER


class ReattachedVerdictTests(SynchronousTestCase):
    """A fresh verdict reattached to is where the next process's rise/fall starts."""

    def assert_changed_at_check(self, scene: Scene, status: str, check: int) -> None:
        """Each node of a's share says `status` from its `check`-th check on."""
        expected = (check - 1) * INTERVAL
        for name in scene.share:
            changed_at = scene.changed_at(name, status)
            assert changed_at is not None, name
            after_first = changed_at - scene.first_check[name]
            self.assertGreaterEqual(after_first, expected - STEP, name)
            self.assertLessEqual(after_first, expected + STEP, name)

    def assert_nothing_down(self, scene: Scene) -> None:
        """No node of a's share said down nor went missing, no member went."""
        for name in scene.share:
            self.assertEqual(set(scene.statuses[name]), {"up"}, name)
            self.assertEqual(set(scene.listed[name]), {1}, name)

    def test_one_failed_first_check_publishes_nothing_down(self) -> None:
        """
        Every instance up; a restarts on its state_dir, reattaches, and the
        first check of each fails (its own trouble: the next finds it up).
        No node ever says down, no member goes, and each node is rewritten
        by the next process (on the same session), up, its ``checked_at``
        never that failed check's (no evidence that it is up), and written
        again by the success after it, which ends the blip its error was
        (`Node.blip_over`): ``checked_at`` that success's, no error.
        """
        scene = Scene(self, a_sees=UP, then_sees=DOWN)
        scene.run(ALONE_AFTER + 4 * INTERVAL, then_sees=UP)
        again = scene.again
        self.assertEqual(again.zk.session_id, scene.session)
        self.assertEqual(set(scene.first_check), set(scene.share))
        self.assert_nothing_down(scene)
        for name in scene.share:
            document = scene.fleet.node(name) or {}
            failed = scene.first_check[name]
            self.assertFalse(
                [c for c in scene.checked[name] if c and abs(c - failed) <= STEP],
                name,
            )
            self.assertGreater(document["checked_at"], failed, name)
            self.assertIsNone(document["error"], name)
            # A restart is no change of status: the since stays.
            self.assertEqual(document["since"], scene.said[name]["since"], name)
            self.assertEqual(again.monitor.states[name].health.status, "up")
        self.assertEqual(again.monitor.instances_up, len(scene.share))

    def test_in_a_group_too(self) -> None:
        """
        The same with a member of a group of three (one replica): its
        share, reattached to, says up throughout.
        """
        scene = Scene(self, a_sees=UP, then_sees=DOWN, others=2)
        scene.run(ALONE_AFTER + 4 * INTERVAL, then_sees=UP)
        self.assertEqual(set(scene.first_check), set(scene.share))
        self.assert_nothing_down(scene)

    def test_two_replicas_quorum_one(self) -> None:
        """
        The same in a group of three with two replicas and quorum 1: the
        next process's first failed check is an unsettled opinion, and
        the verdict it reattached to, fresh and up, stands.
        """
        scene = Scene(self, UP, DOWN, others=2, replicas=2, quorum=1)
        scene.run(ALONE_AFTER + 4 * INTERVAL, then_sees=UP)
        self.assertEqual(set(scene.first_check) & set(scene.share), set(scene.share))
        self.assert_nothing_down(scene)

    def test_dead_instance_down_within_fall_checks(self) -> None:
        """
        The bound on detection: an instance that died across the restart
        (every check of the next process fails) says up, as the verdict
        reattached to did, until the next process's `fall`-th check, and
        down from then: within (fall - 1) intervals of its first check.
        """
        scene = Scene(self, a_sees=UP, then_sees=DOWN)
        scene.run(ALONE_AFTER + (FALL + 2) * INTERVAL)
        self.assert_changed_at_check(scene, "down", FALL)
        for name in scene.share:
            self.assertEqual(scene.listed[name][-1], 0, name)

    def test_down_stays_down_until_rise(self) -> None:
        """
        Every instance down before the restart, up after it: each node says
        down until the next process's `rise`-th success, not after its first.
        """
        scene = Scene(self, a_sees=DOWN, then_sees=UP)
        scene.run(ALONE_AFTER + (RISE + 2) * INTERVAL)
        self.assert_changed_at_check(scene, "up", RISE)

    def test_stale_verdict_first_check_decides(self) -> None:
        """
        A node whose ``checked_at`` is older than `refresh` plus the
        health's `stale_after` (its writer had stopped checking) is no
        evidence of now: the next process's first failed check publishes
        it down, as a node made anew.
        """
        scene = Scene(self, a_sees=UP, then_sees=DOWN)
        stale_after = InstanceHealth(RISE, FALL, INTERVAL).stale_after
        server = scene.fleet.server
        for name in scene.share:
            node = server.nodes[f"{ROOT}/instances/{name}"]
            document = json.loads(node.data)
            document["checked_at"] -= REFRESH + stale_after + 1.0
            server.put(node_path(name), json.dumps(document).encode(), node.owner)
        scene.run(ALONE_AFTER + 2 * INTERVAL, then_sees=UP)
        for name in scene.share:
            self.assertIsNotNone(scene.changed_at(name, "down"), name)

    def test_without_state_dir_first_check_decides(self) -> None:
        """
        Without a state_dir the stop deletes the nodes and the next process
        opens a new session: nothing to go on from, its first failed check
        publishes each instance down, as before.
        """
        scene = Scene(self, a_sees=UP, then_sees=DOWN, state_dir=False)
        scene.run(2 * INTERVAL, then_sees=UP)
        self.assertNotEqual(scene.again.zk.session_id, scene.session)
        for name in scene.share:
            self.assertIsNotNone(scene.changed_at(name, "down"), name)


def node_path(name: str) -> str:
    return f"{ROOT}/instances/{name}"

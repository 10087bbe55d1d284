"""
A new primary's first checks of the instances it takes over (DESIGN.md
sections 2.6 and 8), with one replica, on a Clock: a fresh previous
verdict is where its rise/fall starts, so that a takeover is no news of
the instance; a stale or missing one leaves its first check to decide.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sentinel.health import InstanceHealth
from sentinel.membership import SETTLE
from tests.groupfakes import DOWN, INTERVAL, ROOT, UP, Fleet, Member
from tests.test_publisher import REFRESH

NAMES = [f"r{i:02d}" for i in range(30)]
RISE = 2
FALL = 3
# A previous agent's session, alive, that checks nothing (a squatter's).
OTHER_SESSION = 0xBEEF
STEP = 0.05


class Scene:
    """
    Member "a" (or the members `before`) with `NAMES`, each as `a_sees`,
    long enough for its verdicts to settle; then "d" joins, whose checks
    answer `d_sees`.
    Every node's status is recorded at each step, and each instance's
    first check by d.
    """

    def __init__(
        self,
        a_sees: Any,
        d_sees: Any,
        replicas: int = 1,
        quorum: int | None = None,
        before: tuple[str, ...] = ("a",),
    ) -> None:
        """`before`: the members there before d, each seeing `a_sees`."""
        fleet = self.fleet = Fleet()
        settings: dict[str, Any] = dict(
            replicas=replicas, quorum=quorum, rise=RISE, fall=FALL
        )
        for agent in before:
            member = fleet.add(agent, NAMES, **settings)
            for name in NAMES:
                member.see(name, a_sees)
            member.start()
        fleet.run(RISE * INTERVAL + 1.0)
        self.d = fleet.add("d", NAMES, **settings)
        for name in NAMES:
            self.d.see(name, d_sees)
        self.statuses: dict[str, list[tuple[float, str | None]]] = {
            n: [(fleet.clock.seconds(), self.status(n))] for n in NAMES
        }
        self.first_check: dict[str, float] = {}
        self.d.start()

    def status(self, name: str) -> str | None:
        document = self.fleet.node(name)
        return None if document is None else document["status"]

    def run(self, seconds: float, d_sees_after_first: Any = None) -> None:
        """
        Let `seconds` pass, recording; with `d_sees_after_first`, d's
        checks answer that from its second check of each instance on.
        """
        fleet = self.fleet
        for _ in range(round(seconds / STEP)):
            fleet.clock.advance(STEP)
            now = fleet.clock.seconds()
            for name, probe in self.d.probes.items():
                if probe.checks and name not in self.first_check:
                    self.first_check[name] = now
                    if d_sees_after_first is not None:
                        self.d.see(name, d_sees_after_first)
            for name in NAMES:
                status = self.status(name)
                if self.statuses[name][-1][1] != status:
                    self.statuses[name].append((now, status))

    def moved(self) -> list[str]:
        """The instances whose primary is d now."""
        group = self.d.group
        return [n for n in NAMES if group.observers(n)[:1] == ("d",)]

    def changed_to(self, name: str, status: str) -> float | None:
        """When `name`'s node first said `status` since d joined."""
        return next((t for t, s in self.statuses[name] if s == status), None)


class FreshVerdictTests(SynchronousTestCase):
    """A fresh verdict taken over is where the new primary's rise/fall starts."""

    def assert_changed_at_check(self, scene: Scene, status: str, check: int) -> None:
        """Each node d took over says `status` from d's `check`-th check on."""
        moved = scene.moved()
        self.assertTrue(moved)
        expected = (check - 1) * INTERVAL
        for name in moved:
            changed_at = scene.changed_to(name, status)
            assert changed_at is not None, name
            after_first = changed_at - scene.first_check[name]
            self.assertGreaterEqual(after_first, expected - STEP, name)
            self.assertLessEqual(after_first, expected + STEP, name)
            document = scene.fleet.node(name) or {}
            self.assertEqual((document["agent"], document["status"]), ("d", status))

    def test_one_failed_first_check_publishes_nothing_down(self) -> None:
        """
        Every instance up under "a"; "d" joins, takes its share over, and
        the first check of each fails (its own trouble: the next check
        finds it up). No node ever says down; each is d's, up.
        """
        scene = Scene(a_sees=UP, d_sees=DOWN)
        scene.run(SETTLE + 4 * INTERVAL, d_sees_after_first=UP)
        moved = scene.moved()
        self.assertTrue(moved)
        self.assertEqual(set(scene.first_check), set(moved))
        for name in NAMES:
            self.assertIsNone(scene.changed_to(name, "down"), name)
            self.assertNotIn(None, [s for _, s in scene.statuses[name]], name)
        for name in moved:
            document = scene.fleet.node(name) or {}
            self.assertEqual((document["agent"], document["status"]), ("d", "up"))

    def test_dead_instance_down_within_fall_checks(self) -> None:
        """
        The bound on detection: an instance that died as it moved (d finds
        it dead at every check; a saw it up to the last) says up, as the
        verdict taken over did, until d's `fall`-th failed check, and down
        from then: within (fall - 1) intervals of d's first check.
        """
        scene = Scene(a_sees=UP, d_sees=DOWN)
        scene.run(SETTLE + (FALL + 2) * INTERVAL)
        self.assert_changed_at_check(scene, "down", FALL)

    def test_down_stays_down_until_rise(self) -> None:
        """
        Every instance down under "a"; d finds each up: its node says down
        until d's `rise`-th success, not after its first.
        """
        scene = Scene(a_sees=DOWN, d_sees=UP)
        scene.run(SETTLE + (RISE + 2) * INTERVAL)
        self.assert_changed_at_check(scene, "up", RISE)

    def test_since_kept(self) -> None:
        """A handover is no change of status: the ``since`` a said stays."""
        scene = Scene(a_sees=UP, d_sees=DOWN)
        said = {n: (scene.fleet.node(n) or {})["since"] for n in NAMES}
        scene.run(SETTLE + 2 * INTERVAL, d_sees_after_first=UP)
        for name in scene.moved():
            document = scene.fleet.node(name) or {}
            self.assertEqual(document["agent"], "d")
            self.assertEqual(document["since"], said[name], name)

    def test_first_check_before_the_takeover(self) -> None:
        """
        d checks before its read of the node comes back (its first check
        failed, and decided down): the verdict it then reads, up, is the
        status again, since one check makes no fall; the node never says
        down, and the monitor counts the instance up.
        """
        scene = Scene(a_sees=UP, d_sees=DOWN)
        scene.d.zk.hang("get")
        scene.run(SETTLE + INTERVAL + 0.5, d_sees_after_first=UP)
        moved = scene.moved()
        self.assertEqual(set(scene.first_check), set(moved))
        for name in moved:
            self.assertEqual(scene.d.monitor.states[name].health.status, "down")
        scene.d.zk.unhang()
        scene.d.zk.release("get")
        scene.run(0.2)
        for name in moved:
            self.assertEqual(scene.d.monitor.states[name].health.status, "up")
        self.assertEqual(scene.d.monitor.instances_up, len(moved))
        scene.run(3 * INTERVAL)
        for name in NAMES:
            self.assertIsNone(scene.changed_to(name, "down"), name)
        for name in moved:
            document = scene.fleet.node(name) or {}
            self.assertEqual((document["agent"], document["status"]), ("d", "up"))


class LeaveTests(SynchronousTestCase):
    """A member leaving: the one that takes its share over goes on likewise."""

    def test_one_failed_first_check_publishes_nothing_down(self) -> None:
        """
        "a" and "d" share every instance, up; d stops for good (it leaves
        the group and hands its nodes over), and a's first check of each
        instance it takes fails: no node ever says down, and each is a's.
        """
        scene = Scene(a_sees=UP, d_sees=UP)
        scene.run(SETTLE + 2 * INTERVAL)
        share = scene.moved()
        self.assertTrue(share)
        a = scene.fleet.members["a"]
        for name in share:
            a.see(name, DOWN)
        # Its probes of them from before d joined: new ones come with them.
        old = {name: a.probes[name] for name in share}
        stopped = scene.d.stop()
        for _ in range(round((SETTLE + 4 * INTERVAL) / STEP)):
            scene.run(STEP)
            for name in share:
                if a.probes[name] is not old[name] and a.probes[name].checks:
                    a.see(name, UP)
        self.successResultOf(stopped)
        for name in share:
            self.assertIsNot(a.probes[name], old[name])
            self.assertGreater(a.probes[name].checks, 1)
            self.assertEqual(
                [s for _, s in scene.statuses[name] if s != "up"], [], name
            )
            self.assertEqual((scene.fleet.node(name) or {})["agent"], "a")


class TwoReplicasTests(SynchronousTestCase):
    """
    With two replicas and the default quorum (2), the verdict comes from
    the observers' opinions, and none is inherited: a joining member's
    first failed check is one down opinion, which the quorum outvotes.
    """

    def test_one_failed_first_check_publishes_nothing_down(self) -> None:
        """
        Every instance up under "a"; "d" joins (an observer of each, the
        primary of some), and its first check of each fails: no node ever
        says down.
        """
        scene = Scene(a_sees=UP, d_sees=DOWN, replicas=2)
        scene.run(SETTLE + 4 * INTERVAL, d_sees_after_first=UP)
        self.assertTrue(scene.moved())
        self.assertEqual(set(scene.first_check), set(NAMES))
        for name in NAMES:
            self.assertIsNone(scene.changed_to(name, "down"), name)
        for name in scene.moved():
            self.assertEqual((scene.fleet.node(name) or {})["agent"], "d")


class LoneTakeoverTests(SynchronousTestCase):
    """
    A lone member's node held by another session that says up (a previous
    agent's), the instance failing d's first check: fresh, the node stays
    up; stale or missing, the first check decides, as before.
    """

    def take_over(self, checked_ago: float | None) -> str | None:
        """
        The node of r00 says up, checked `checked_ago` s ago (None: no
        node); d, alone, finds r00 down once, then up. The status its node
        says after d's first check.
        """
        fleet = Fleet()
        path = f"{ROOT}/instances/r00"
        if checked_ago is not None:
            now = fleet.clock.seconds()
            document = {
                "name": "r00",
                "host": "10.0.0.1",
                "port": 6379,
                "status": "up",
                "ready": True,
                "role": "master",
                "since": now - 100.0,
                "checked_at": now - checked_ago,
                "error": None,
                "agent": "gone",
                "schema": 1,
            }
            fleet.server.put(path, json.dumps(document).encode(), OTHER_SESSION)
        d: Member = fleet.add("d", ["r00"], rise=RISE, fall=FALL)
        d.see("r00", DOWN)
        d.start()
        for _ in range(round((SETTLE + 2 * INTERVAL) / STEP)):
            fleet.clock.advance(STEP)
            if d.probes.get("r00") and d.probes["r00"].checks:
                break
        d.see("r00", UP)
        fleet.run(0.5)
        document = fleet.node("r00") or {}
        self.assertEqual(document.get("agent"), "d")
        return document.get("status")

    def stale_after(self) -> float:
        return InstanceHealth(RISE, FALL, INTERVAL).stale_after

    def test_fresh_verdict_stays(self) -> None:
        """
        Checked within `refresh` + `stale_after` (a live primary's node
        at its oldest, just before its refresh): still up.
        """
        self.assertEqual(self.take_over(REFRESH), "up")

    def test_stale_verdict_first_check_decides(self) -> None:
        """
        Checked longer ago than `refresh` + `stale_after` (its writer
        stopped checking): the first check decides, down.
        """
        self.assertEqual(self.take_over(REFRESH + self.stale_after() + 1.0), "down")

    def test_no_node_first_check_decides(self) -> None:
        """No node to take over: the first check decides, down."""
        self.assertEqual(self.take_over(None), "down")

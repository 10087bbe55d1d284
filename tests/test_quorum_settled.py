"""
A joining observer's first checks in a group with more than one replica
(DESIGN.md sections 2.6 and 8), on a Clock: its opinion, decided directly
by its first check, is not settled until `fall` failures (or `rise`
successes) confirm it, and an unsettled down opinion is left out of the
quorum while the node's verdict is fresh and up. With quorum 1, one
observer's first failed check otherwise published every instance it
observes down.
"""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from sentinel.membership import SETTLE
from sentinel.verdict import Opinion, decide, parse_opinion
from tests.groupfakes import DOWN, INTERVAL, ROOT, UP, Fleet
from tests.test_takeover_verdict import FALL, NAMES, RISE, STEP, Scene


def joining(d_sees: object = DOWN) -> Scene:
    """a and b, two replicas, quorum 1, every instance up; d joins."""
    return Scene(a_sees=UP, d_sees=d_sees, replicas=2, quorum=1, before=("a", "b"))


def observed_by_d(scene: Scene) -> tuple[list[str], list[str]]:
    """The instances d observes: as their primary, and as the other observer."""
    group = scene.d.group
    observed = [n for n in NAMES if "d" in group.observers(n)]
    primary = [n for n in observed if group.observers(n)[0] == "d"]
    return primary, [n for n in observed if n not in primary]


class JoiningObserverTests(SynchronousTestCase):
    """A joining observer's first failed check is no down verdict."""

    def test_one_failed_first_check_publishes_nothing_down(self) -> None:
        """
        Two replicas, quorum 1; d joins and the first check of each
        instance it observes fails (its own trouble: the next finds it
        up). No node ever says down, whether d is its primary or not.
        """
        scene = joining()
        scene.run(SETTLE + 4 * INTERVAL, d_sees_after_first=UP)
        primary, secondary = observed_by_d(scene)
        self.assertTrue(primary)
        self.assertTrue(secondary)
        self.assertEqual(set(scene.first_check), set(primary + secondary))
        for name in NAMES:
            self.assertIsNone(scene.changed_to(name, "down"), name)
            self.assertEqual((scene.fleet.node(name) or {}).get("status"), "up")

    def test_dead_instance_down_within_fall_checks(self) -> None:
        """
        The bound on detection: d finds every instance it observes dead
        at each check (the others up, for the quorum of 1 to decide):
        each says down from d's `fall`-th failed check, when its opinion
        settles, within (fall - 1) intervals of its first; the rest stay
        up.
        """
        scene = joining()
        scene.run(SETTLE + (FALL + 2) * INTERVAL)
        primary, secondary = observed_by_d(scene)
        expected = (FALL - 1) * INTERVAL
        for name in primary + secondary:
            changed_at = scene.changed_to(name, "down")
            assert changed_at is not None, name
            after_first = changed_at - scene.first_check[name]
            self.assertGreaterEqual(after_first, expected - STEP, name)
            self.assertLessEqual(after_first, expected + STEP, name)
        for name in set(NAMES) - set(primary + secondary):
            self.assertIsNone(scene.changed_to(name, "down"), name)

    def test_settling_is_one_more_write(self) -> None:
        """
        d's opinion of an instance it finds dead says ``settled`` false
        from its first check, and true from its `fall`-th: written once
        more for it, and not again while nothing changes.
        """
        scene = joining()
        scene.run(SETTLE + INTERVAL)
        name = sorted(scene.first_check)[0]
        path = f"{ROOT}/opinions/{name}/d"
        first = scene.fleet.server.nodes[path]
        self.assertFalse(json.loads(first.data)["settled"])
        version = first.version
        scene.run((FALL + 3) * INTERVAL)
        settled = scene.fleet.server.nodes[path]
        self.assertTrue(json.loads(settled.data)["settled"])
        self.assertEqual(settled.version, version + 1)


class OlderAgentTests(SynchronousTestCase):
    """An opinion that says nothing of ``settled`` counts as settled."""

    def opinion(self, **fields: object) -> Opinion:
        document = {"status": "down", "checked_at": 100.0, **fields}
        opinion = parse_opinion(json.dumps(document).encode())
        assert opinion is not None
        return opinion

    def test_without_the_field_counts(self) -> None:
        """
        Against a fresh up verdict, quorum 1: a down opinion without the
        field (an agent from before it) makes the verdict down, one that
        says ``settled`` false does not, one that says true does.
        """
        up = Opinion(status="up", checked_at=100.0)

        def status(said: Opinion) -> str | None:
            verdict = decide(("a", "d"), {"a": up, "d": said}, 1, standing=up)
            return None if verdict is None else verdict.status

        self.assertTrue(self.opinion().settled)
        self.assertEqual(status(self.opinion()), "down")
        self.assertEqual(status(self.opinion(settled=False)), "up")
        self.assertEqual(status(self.opinion(settled=True)), "down")

    def test_unsettled_counts_without_a_fresh_up_verdict(self) -> None:
        """No standing verdict, or a down one: an unsettled down counts."""
        up = Opinion(status="up", checked_at=100.0)
        unsettled = self.opinion(settled=False)
        for standing in (None, self.opinion()):
            verdict = decide(
                ("a", "d"), {"a": up, "d": unsettled}, 1, standing=standing
            )
            assert verdict is not None
            self.assertEqual(verdict.status, "down", standing)


class FirstStartTests(SynchronousTestCase):
    """With no verdict to go on, first checks decide as before."""

    def test_group_first_start_unchanged(self) -> None:
        """
        Three members start together, two replicas, quorum 1, and each
        finds every instance down: no node has a verdict yet, so the
        first checks' down opinions count, and every node says down
        before any member's `rise`-th check, not at its `fall`-th.
        """
        fleet = Fleet()
        members = []
        for agent in ("a", "b", "d"):
            member = fleet.add(agent, NAMES, replicas=2, quorum=1, rise=RISE, fall=FALL)
            for name in NAMES:
                member.see(name, DOWN)
            members.append(member.start())
        for _ in range(round((SETTLE + FALL * INTERVAL) / STEP)):
            fleet.clock.advance(STEP)
            if all(fleet.node(name) is not None for name in NAMES):
                break
        checks = max(p.checks for m in members for p in m.probes.values())
        self.assertLess(checks, FALL)
        for name in NAMES:
            self.assertEqual((fleet.node(name) or {}).get("status"), "down", name)


class GroupStall:
    """
    Members a, b and c, `replicas` and `quorum`, every instance up long
    enough for its verdicts to settle; then every member stalls at once
    for longer than its histories last (a VM paused, the shared host
    starved: their ZooKeeper sessions live on) and, back, checks every
    instance as `pattern` says, one letter a check (F fails, S succeeds),
    over and over with `cycle`, else the last letter for good. Every
    observer's opinion is then decided anew by its first check, unsettled,
    while each node's verdict is fresh and up. Every node's document is
    recorded at each step, and each instance's first check after the stall.
    """

    def __init__(
        self, pattern: str, replicas: int, quorum: int, cycle: bool = False
    ) -> None:
        fleet = self.fleet = Fleet()
        self.members = [
            fleet.add(
                agent, NAMES, replicas=replicas, quorum=quorum, rise=RISE, fall=FALL
            )
            for agent in "abc"
        ]
        for member in self.members:
            member.start()
        fleet.run(SETTLE + (RISE + 2) * INTERVAL)
        stale_after = (max(RISE, FALL) + 1) * INTERVAL
        for member in self.members:
            member.monitor.stopService()
        fleet.run(stale_after + INTERVAL)
        self.answers = [UP if letter == "S" else DOWN for letter in pattern]
        self.cycle = cycle
        self.checks = {
            (m.agent_id, name): p.checks
            for m in self.members
            for name, p in m.probes.items()
        }
        self.first_check: dict[str, float] = {}
        self.answer()
        for member in self.members:
            member.monitor.startService()
        self.documents: dict[str, list[tuple[float, dict[str, object]]]] = {
            name: [] for name in NAMES
        }

    def answer(self) -> None:
        """Each probe answers as the pattern says for its next check."""
        for member in self.members:
            for name, probe in member.probes.items():
                done = probe.checks - self.checks[(member.agent_id, name)]
                if done and name not in self.first_check:
                    self.first_check[name] = self.fleet.clock.seconds()
                last = len(self.answers) - 1
                probe.result = self.answers[
                    done % len(self.answers) if self.cycle else min(done, last)
                ]

    def run(self, seconds: float) -> None:
        """Let `seconds` pass, recording every node's document as it changes."""
        self.answer()
        for _ in range(round(seconds / STEP)):
            self.fleet.clock.advance(STEP)
            self.answer()
            now = self.fleet.clock.seconds()
            for name in NAMES:
                document = self.fleet.node(name) or {}
                said = self.documents[name]
                if not said or said[-1][1] != document:
                    said.append((now, document))

    def down_after_first_check(self, name: str) -> float | None:
        """How long after its first check `name`'s node first said down."""
        first = self.first_check[name]
        return next(
            (t - first for t, d in self.documents[name] if d.get("status") == "down"),
            None,
        )


class AllUnsettledTests(SynchronousTestCase):
    """
    Every observer's opinion unsettled and down, the verdict fresh and up:
    the node says what is heard, and a failure every observer finds is
    published down within `fall` intervals of the first check.
    """

    def assert_readable(self, stall: GroupStall) -> None:
        """
        Each document says which down opinions it left out: its status is
        down exactly when the down ones it counted reach its quorum.
        """
        for name in NAMES:
            for at, document in stall.documents[name]:
                if not document:
                    continue
                observers = document["observers"]
                # Absent when the count left nobody out.
                uncounted = document.get("uncounted", [])
                counted = [
                    a
                    for a, s in observers.items()
                    if s == "down" and a not in uncounted
                ]
                self.assertEqual(
                    document["status"] == "down",
                    len(counted) >= document["quorum"],
                    (name, at, document),
                )

    def test_dead_instance_down_at_the_fall_th_check(self) -> None:
        """
        Every check fails after the stall (the Redis died meanwhile), three
        replicas, quorum 2: each node says up while every opinion is
        unsettled, naming them all ``uncounted``, and down from the
        members' `fall`-th check, (fall - 1) intervals after the first.
        """
        stall = GroupStall("F", replicas=3, quorum=2)
        stall.run((FALL + 2) * INTERVAL)
        self.assert_readable(stall)
        for name in NAMES:
            after = stall.down_after_first_check(name)
            assert after is not None, name
            self.assertGreaterEqual(after, (FALL - 1) * INTERVAL, name)
            self.assertLessEqual(after, (FALL - 1) * INTERVAL + STEP, name)
            held = [d for _, d in stall.documents[name] if d and d["status"] == "up"][
                -1
            ]
            self.assertEqual(set(held["observers"].values()), {"down"}, name)
            self.assertEqual(set(held["uncounted"]), {"a", "b", "c"}, name)

    def test_flapping_instance_down_within_fall_intervals(self) -> None:
        """
        After the stall every other check fails, so that no opinion ever
        settles: each node says down within `fall` intervals of the first
        check (before, it said up, unwritten, until its verdict went
        stale, 20 to 34 s later, past the refresh its readers judge it
        by), with two replicas and quorum 1 as with three and quorum 2.
        """
        for replicas, quorum in ((2, 1), (3, 2)):
            stall = GroupStall("FS", replicas, quorum, cycle=True)
            stall.run((FALL + 3) * INTERVAL)
            self.assert_readable(stall)
            for name in NAMES:
                after = stall.down_after_first_check(name)
                assert after is not None, (replicas, name)
                self.assertLessEqual(after, FALL * INTERVAL + STEP, (replicas, name))
                self.assertGreaterEqual(after, (FALL - 1) * INTERVAL, (replicas, name))

    def test_blip_publishes_nothing_down(self) -> None:
        """
        The two checks after the stall fail, the rest succeed (a blip
        shorter than `fall` checks, every member's): no node says down,
        two replicas and quorum 1 as three and quorum 2, and each says
        up, all counted, once the opinions settle: with no ``uncounted``
        field, the schema-2 fields DESIGN.md lists and no more.
        """
        for replicas, quorum in ((2, 1), (3, 2)):
            stall = GroupStall("FFS", replicas, quorum)
            stall.run((FALL + RISE + 3) * INTERVAL)
            self.assert_readable(stall)
            for name in NAMES:
                self.assertIsNone(stall.down_after_first_check(name), (replicas, name))
                document = stall.documents[name][-1][1]
                self.assertEqual(
                    (document["status"], "uncounted" in document), ("up", False), name
                )


class StandingVerdictTests(SynchronousTestCase):
    """The verdict `decide` gives when only left-out opinions say anything."""

    def test_standing_fields_and_the_error_found(self) -> None:
        """
        Every opinion down and unsettled, a fresh up verdict standing:
        the verdict is up with the standing verdict's ready and role, the
        primary's error, and every observer ``uncounted``; without a
        standing verdict, the same opinions make it down.
        """
        standing = Opinion(status="up", ready=True, role="master", checked_at=90.0)
        opinions = {
            "a": Opinion(
                status="down", error="refused", checked_at=100.0, settled=False
            ),
            "d": Opinion(
                status="down", error="timeout", checked_at=101.0, settled=False
            ),
        }
        verdict = decide(("a", "d"), opinions, 2, standing=standing)
        assert verdict is not None
        self.assertEqual(
            (verdict.status, verdict.source.ready, verdict.source.role),
            ("up", True, "master"),
        )
        self.assertEqual(verdict.source.error, "refused")
        self.assertEqual(verdict.uncounted, ("a", "d"))
        self.assertEqual(verdict.checked_at, 101.0)
        counted = decide(("a", "d"), opinions, 2)
        assert counted is not None
        self.assertEqual((counted.status, counted.uncounted), ("down", ()))

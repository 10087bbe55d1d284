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
            verdict = decide(("a", "d"), {"a": up, "d": said}, 1, standing="up")
            return None if verdict is None else verdict.status

        self.assertTrue(self.opinion().settled)
        self.assertEqual(status(self.opinion()), "down")
        self.assertEqual(status(self.opinion(settled=False)), "up")
        self.assertEqual(status(self.opinion(settled=True)), "down")

    def test_unsettled_counts_without_a_fresh_up_verdict(self) -> None:
        """No standing verdict, or a down one: an unsettled down counts."""
        up = Opinion(status="up", checked_at=100.0)
        unsettled = self.opinion(settled=False)
        for standing in (None, "down"):
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

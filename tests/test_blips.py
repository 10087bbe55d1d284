"""
A node written during a blip (checks that contradict its status, fewer
than ``fall`` or ``rise``) is written again at the next check that bears
the status out, and only then: its ``error`` is never the blip's for
longer than an interval after the blip is over.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sentinel.config import RedisInstance
from sentinel.health import InstanceHealth
from sentinel.instance import InstanceState
from sentinel.observation import Observation
from tests.fakes import FakeProbe
from tests.groupfakes import ROOT, Fleet
from tests.test_publisher import (
    INTERVAL,
    REFRESH,
    START,
    UP,
    PublisherHarness,
    path,
)

TIMEOUT = Observation(ok=False, error="timeout (ping)")
REFUSED = Observation(ok=False, error="connection refused")


class InstanceNodeBlipTests(PublisherHarness):
    """An instance node (schema 1) written during a blip."""

    def watch(
        self, name: str = "redis-a", rise: int = 2, fall: int = 3
    ) -> InstanceState:
        """An instance checked every interval, ``rise`` 2 and ``fall`` 3."""
        redis = RedisInstance(name, "10.0.0.1", 6379)
        health = InstanceHealth(rise=rise, fall=fall, interval=INTERVAL)
        state = InstanceState(redis, FakeProbe(redis), health)
        self.watched[name] = state
        return state

    def checks(
        self, state: InstanceState, answers: dict[int, Observation], checks: int
    ) -> tuple[list[int], list[tuple[str, str | None]]]:
        """
        `checks` + 1 checks an interval apart, each `UP` unless `answers`
        says otherwise at its index; which wrote the node, and what the
        node said after each (status, error).
        """
        self.start()
        node = path(state.name)
        written, said = [], []
        for index in range(checks + 1):
            before = self.zk.writes(node)
            self.check(state, answers.get(index, UP))
            if self.zk.writes(node) > before:
                written.append(index)
            document = self.zk.document(node)
            said.append((document["status"], document["error"]))
            self.clock.advance(INTERVAL)
        return written, said

    def test_blip_at_refresh_cleared_by_next_success(self) -> None:
        """
        The check that writes the refresh fails (one timeout, ``fall`` 3:
        still up): the node says ``up`` with that error, and the next
        check, a success, writes it again without it. Before, the node
        said the timeout for a whole refresh (30 s) of successes.
        """
        state = self.watch()
        written, said = self.checks(state, {30: TIMEOUT}, 40)
        self.assertEqual(written, [0, 30, 31])
        self.assertEqual(said[30], ("up", "timeout (ping)"))
        self.assertEqual(said[31], ("up", None))
        document = self.zk.document(path("redis-a"))
        self.assertEqual(document["latency_ms"], UP.latency_ms)
        self.assertEqual(document["checked_at"], START + 31 * INTERVAL)

    def test_longer_blip_cleared_once_over(self) -> None:
        """
        A blip of two failures (``fall`` 3) caught by the refresh: the
        node keeps the first failure's error while the blip lasts (a
        write per failed check would double the writes of a server that
        fails often), and is written again by the success that ends it.
        """
        state = self.watch()
        written, said = self.checks(state, {30: TIMEOUT, 31: REFUSED}, 40)
        self.assertEqual(written, [0, 30, 32])
        self.assertEqual(said[31], ("up", "timeout (ping)"))
        self.assertEqual(said[32], ("up", None))

    def test_blip_no_write_caught_costs_nothing(self) -> None:
        """
        Blips that no write caught (every tenth check fails, none of them
        the refresh's) write nothing more: the node is written at its
        first check and at each refresh, as in steady state.
        """
        state = self.watch()
        blips = {i: TIMEOUT for i in range(5, 91, 10)}
        written, said = self.checks(state, blips, 90)
        self.assertEqual(written, [0, 30, 60, 90])
        self.assertTrue(all(s == ("up", None) for s in said))

    def test_steady_state_unchanged(self) -> None:
        """With every check a success, the node is written every refresh only."""
        state = self.watch()
        written, _ = self.checks(state, {}, 90)
        self.assertEqual(written, [0, 30, 60, 90])

    def test_blip_caught_costs_one_write(self) -> None:
        """
        A blip every ten checks, one of them at the refresh: one write
        more (the success after it), and the next refresh counts from that
        write (it falls between two blips).
        """
        state = self.watch()
        blips = {i: TIMEOUT for i in range(10, 91, 10)}
        written, said = self.checks(state, blips, 90)
        self.assertEqual(written, [0, 30, 31, 61])
        self.assertEqual(said[31], ("up", None))

    def test_down_node_written_in_a_partial_rise(self) -> None:
        """
        The mirror: a ``down`` node whose refresh is written by a success
        (one, ``rise`` 2: still down) says no error; the next failure
        writes it again with the error that keeps it down.
        """
        state = self.watch()
        answers = {i: REFUSED for i in range(41)}
        answers[30] = UP
        written, said = self.checks(state, answers, 40)
        self.assertEqual(written, [0, 30, 31])
        self.assertEqual(said[30], ("down", None))
        self.assertEqual(said[31], ("down", "connection refused"))

    def test_blip_longer_than_the_refresh_written_once(self) -> None:
        """
        A blip that outlasts the refresh (``fall`` 40: 39 failures of an
        up instance) is written by the refresh it meets, once, and again
        by the success that ends it: the checks in between leave the
        node's ``checked_at`` where it was, so there is nothing newer to
        say. Before, the refresh counted from that ``checked_at`` and was
        due again at every check from ``refresh`` past it on.
        """
        state = self.watch(fall=40)
        blip = {i: TIMEOUT for i in range(10, 49)}
        written, said = self.checks(state, blip, 60)
        self.assertEqual(written, [0, 30, 49])
        self.assertEqual(said[48], ("up", "timeout (ping)"))
        self.assertEqual(said[49], ("up", None))

    def test_partial_rise_longer_than_the_refresh_written_once(self) -> None:
        """
        The mirror: a ``down`` instance answering 39 checks in a row
        (``rise`` 40) is written by the refresh those checks meet and by
        the failure after them, not at every check of the stretch.
        """
        state = self.watch(rise=40)
        answers = {i: REFUSED for i in range(61)}
        answers.update({i: UP for i in range(10, 49)})
        written, said = self.checks(state, answers, 60)
        self.assertEqual(written, [0, 30, 49])
        self.assertEqual(said[48], ("down", None))
        self.assertEqual(said[49], ("down", "connection refused"))


class GroupBlipTests(SynchronousTestCase):
    """A group's verdict (schema 2) and opinions written during a blip."""

    def fleet(self, fall: int = 3) -> Fleet:
        """Two members observing ``x`` (``rise`` 2, ``fall`` 3), settled."""
        fleet = Fleet()
        for agent in ("a", "b"):
            fleet.add(agent, ["x"], replicas=2, rise=2, fall=fall).start()
        fleet.run(3.0)
        return fleet

    def test_verdict_refresh_in_the_primarys_blip(self) -> None:
        """
        The primary's check that writes the verdict's refresh fails once:
        the verdict says ``up`` with its error, and the primary's next
        success writes it again without it, within an interval. Before, it
        said the error until the next refresh (30 s).
        """
        fleet = self.fleet()
        primary = fleet.members[(fleet.node("x") or {})["agent"]]
        fleet.run(REFRESH)
        refreshed = (fleet.node("x") or {})["checked_at"]
        fleet.run(refreshed + REFRESH - INTERVAL / 2 - fleet.clock.seconds())
        primary.see("x", TIMEOUT)
        fleet.run(INTERVAL)
        document = fleet.node("x") or {}
        self.assertEqual(
            (document["status"], document["error"]), ("up", "timeout (ping)")
        )
        primary.see("x", UP)
        fleet.run(INTERVAL)
        document = fleet.node("x") or {}
        self.assertEqual((document["status"], document["error"]), ("up", None))

    def test_opinion_written_in_a_blip(self) -> None:
        """
        An observer's opinion written during its blip (its connection to
        ZooKeeper lost and back: every node written again) says the error;
        its next success writes it again without it. Opinions are written
        on change alone: before, it said the error for good.
        """
        fleet = self.fleet()
        primary = (fleet.node("x") or {})["agent"]
        other = "b" if primary == "a" else "a"
        member = fleet.members[other]
        opinion = f"/sentinel/opinions/x/{other}"
        member.see("x", TIMEOUT)
        fleet.run(INTERVAL)
        member.zk.suspend()
        fleet.run(0.2)
        member.zk.connect()
        fleet.run(0.3)
        self.assertEqual(fleet.reader.document(opinion)["error"], "timeout (ping)")
        member.see("x", UP)
        fleet.run(INTERVAL)
        self.assertIsNone(fleet.reader.document(opinion)["error"])
        self.assertEqual(fleet.reader.document(opinion)["status"], "up")

    def test_verdict_from_another_observers_blip(self) -> None:
        """
        The verdict takes its error from another observer's opinion (the
        primary sees the instance down, one down opinion of the two
        needed: up), written during that observer's blip; once the
        observer's checks succeed again it writes its opinion again, and
        the primary writes the verdict again on hearing it, within a
        couple of intervals. Before, the verdict said the blip's error
        until its next refresh.
        """
        fleet = Fleet()
        fleet.add("a", ["x"], replicas=2, rise=2, fall=3).start()
        fleet.add("b", ["x"], replicas=2, rise=2, fall=3).start()
        fleet.run(3.0)
        primary = (fleet.node("x") or {})["agent"]
        other = "b" if primary == "a" else "a"
        # The other observer's blip outlasts a refresh of the verdict: its
        # ``fall`` is a reload away from any value.
        member = fleet.members[other]
        member.monitor.states["x"].health.configure(2, 1000, INTERVAL)
        fleet.members[primary].see("x", REFUSED)
        fleet.run(4 * INTERVAL)
        self.assertEqual((fleet.node("x") or {})["status"], "up")
        member.see("x", TIMEOUT)
        fleet.run(INTERVAL)
        member.zk.suspend()
        fleet.run(0.2)
        member.zk.connect()
        fleet.run(REFRESH + 2 * INTERVAL)
        document = fleet.node("x") or {}
        self.assertEqual(
            (document["status"], document["error"]), ("up", "timeout (ping)")
        )
        member.see("x", UP)
        fleet.run(2 * INTERVAL)
        document = fleet.node("x") or {}
        self.assertEqual((document["status"], document["error"]), ("up", None))

    def test_verdict_in_a_blip_longer_than_the_refresh(self) -> None:
        """
        The primary's blip outlasts the verdict's refresh (``fall`` 40: 39
        timeouts): the verdict is written by the refresh it meets and by
        the success that ends it, about twice in the 40 s, not at every
        check from ``refresh`` past its ``checked_at`` on.
        """
        fleet = self.fleet(fall=40)
        primary = fleet.members[(fleet.node("x") or {})["agent"]]
        verdict = f"{ROOT}/instances/x"
        before = primary.zk.writes(verdict)
        primary.see("x", TIMEOUT)
        fleet.run(39 * INTERVAL)
        primary.see("x", UP)
        fleet.run(INTERVAL)
        self.assertLessEqual(primary.zk.writes(verdict) - before, 3)
        document = fleet.node("x") or {}
        self.assertEqual((document["status"], document["error"]), ("up", None))

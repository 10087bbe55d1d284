"""
A group member whose own sessions keep ending waits before it joins
again (`sentinel.holdoff`): one end costs nothing, a second within the
window holds it out of the group, writing nothing, for a wait that
doubles with each further end; a long session forgets them, a lone
agent never waits, a connection that stays up long enough without a
break ends the wait early, and a stop ends the wait.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sentinel.holdoff import (
    FIRST_WAIT,
    LONGEST_WAIT,
    PROOF,
    WINDOW,
    HoldOff,
    proof_after,
    wait_after,
)
from sentinel.listing import PageQuery
from sentinel.membership import SETTLE
from sentinel.zk import CONNECTED
from tests.groupfakes import ROOT, Fleet, Member

NAMES = [f"r{i:02d}" for i in range(30)]
# The fake client's session timeout (`tests.fakezk`): a proof of `PROOF`.
SESSION_TIMEOUT = 10.0


class WaitTests(SynchronousTestCase):
    """The wait itself, on a Clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.over: list[float] = []
        self.holdoff = HoldOff(
            self.clock,
            lambda: self.over.append(self.clock.seconds()),
            lambda: SESSION_TIMEOUT,
        )

    def ends(self, count: int) -> float:
        """`count` ends in a row, at once; the wait of the last."""
        wait = 0.0
        for _ in range(count):
            wait = self.holdoff.session_ended()
        return wait

    def test_waits_double_up_to_the_longest(self) -> None:
        """No wait after one end; then `FIRST_WAIT`, doubling, capped."""
        self.assertEqual(wait_after(1), 0.0)
        self.assertEqual(wait_after(2), FIRST_WAIT)
        self.assertEqual(wait_after(3), 2 * FIRST_WAIT)
        self.assertEqual(wait_after(40), LONGEST_WAIT)

    def test_one_end_costs_nothing(self) -> None:
        """A first end waits for nothing and leaves no call behind."""
        self.assertEqual(self.holdoff.session_ended(), 0.0)
        self.assertFalse(self.holdoff.holding)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_second_end_within_the_window_waits(self) -> None:
        """A second end within the window waits, and its end is told."""
        self.holdoff.session_ended()
        self.clock.advance(WINDOW - 1)
        self.assertEqual(self.holdoff.session_ended(), FIRST_WAIT)
        self.assertTrue(self.holdoff.holding)
        self.assertIn("ended 2 times in a row", self.holdoff.reason() or "")
        self.clock.advance(FIRST_WAIT)
        self.assertFalse(self.holdoff.holding)
        self.assertEqual(self.over, [self.clock.seconds()])
        self.assertIsNone(self.holdoff.reason())

    def test_forgotten_after_a_session_that_lasted_the_window(self) -> None:
        """Ends before a session that lasted the window count no more."""
        self.holdoff.session_ended()
        self.holdoff.session_ended()
        self.clock.advance(FIRST_WAIT)
        self.clock.advance(WINDOW)
        self.assertEqual(self.holdoff.ends(), 0)
        self.assertEqual(self.holdoff.session_ended(), 0.0)

    def test_an_end_during_the_wait_doubles_it(self) -> None:
        """The session of a wait ending too counts: the next wait is longer."""
        self.holdoff.session_ended()
        self.holdoff.session_ended()
        self.clock.advance(1)
        self.assertEqual(self.holdoff.session_ended(), 2 * FIRST_WAIT)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_proof_grows_with_the_session_timeout(self) -> None:
        """`PROOF` at least, and six session timeouts past that."""
        self.assertEqual(proof_after(SESSION_TIMEOUT), PROOF)
        self.assertEqual(proof_after(1.0), PROOF)
        self.assertEqual(proof_after(30.0), 180.0)

    def test_connected_through_the_proof_ends_the_wait(self) -> None:
        """
        A long wait ends once the connection stayed up `PROOF` s without a
        break, by `release` (counted), its time left told; no call is left.
        """
        self.assertEqual(self.ends(7), LONGEST_WAIT)
        self.holdoff.connection(True)
        self.assertIn(
            f"joins again after {PROOF:.0f} s connected without a break (0 s so"
            f" far), or in {LONGEST_WAIT:.0f} s",
            self.holdoff.reason() or "",
        )
        self.clock.advance(PROOF - 1)
        self.assertTrue(self.holdoff.holding)
        self.assertIn("(59 s so far)", self.holdoff.reason() or "")
        self.clock.advance(1)
        self.assertFalse(self.holdoff.holding)
        self.assertEqual(self.over, [PROOF])
        self.assertEqual(self.holdoff.released, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.holdoff.ends(), 7)

    def test_a_break_starts_the_proof_again(self) -> None:
        """
        A break (suspended, lost) stops the proof, the next connection
        starts it from nothing, and so does an end during the wait.
        """
        self.ends(7)
        self.clock.advance(PROOF / 6)
        self.holdoff.connection(False)
        self.assertIn("(not connected now)", self.holdoff.reason() or "")
        self.clock.advance(30)
        self.holdoff.connection(True)
        self.clock.advance(PROOF - 1)
        self.assertTrue(self.holdoff.holding)
        self.holdoff.session_ended()
        self.clock.advance(PROOF - 1)
        self.assertTrue(self.holdoff.holding)
        self.clock.advance(1)
        self.assertFalse(self.holdoff.holding)
        self.assertEqual(self.over, [PROOF / 6 + 30 + PROOF - 1 + PROOF])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_path_up_long_between_breaks_proves_longer(self) -> None:
        """
        A path cut once every 90 s (each cut ending the session) is up 80
        s between two cuts: the proof is three times the longest such
        stretch in the row of ends (240 s), not `PROOF`, so a 160 s wait
        is not ended early before the next cut, nor said to be; a row
        forgotten (a session that lasted `WINDOW`) forgets the stretches
        too.
        """
        self.ends(1)
        for _ in range(5):
            self.holdoff.connection(True)
            self.clock.advance(80.0)
            self.holdoff.connection(False)
            self.clock.advance(10.0)
            self.holdoff.session_ended()
        self.assertEqual(self.holdoff.proof(), 3 * 80.0)
        self.holdoff.connection(True)
        self.clock.advance(80.0)
        self.assertTrue(self.holdoff.holding)
        self.assertEqual(self.holdoff.released, 0)
        self.assertNotIn("connected without a break", self.holdoff.reason() or "")
        self.clock.advance(LONGEST_WAIT)
        self.clock.advance(WINDOW)
        self.assertEqual(self.holdoff.ends(), 0)
        self.assertEqual(self.holdoff.proof(), PROOF)

    def test_a_short_wait_ends_by_its_time(self) -> None:
        """A wait shorter than the proof ends by its time, with no proof call."""
        self.ends(2)
        self.holdoff.connection(True)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(FIRST_WAIT)
        self.assertEqual(self.over, [FIRST_WAIT])
        self.assertEqual(self.holdoff.released, 0)

    def test_stop_during_the_proof_cancels_everything(self) -> None:
        """A stop while connected in a long wait leaves no call, tells no end."""
        self.ends(7)
        self.holdoff.connection(True)
        self.clock.advance(PROOF / 2)
        self.holdoff.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.holdoff.connection(True)
        self.clock.advance(LONGEST_WAIT)
        self.assertEqual(self.over, [])

    def test_stop_cancels_the_wait(self) -> None:
        """A stop during a wait leaves no call, and tells no end."""
        self.holdoff.session_ended()
        self.holdoff.session_ended()
        self.holdoff.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(LONGEST_WAIT)
        self.assertEqual(self.over, [])


class GroupTests(SynchronousTestCase):
    """Three members, two replicas; ``a``'s sessions end."""

    def setUp(self) -> None:
        self.fleet = Fleet()
        for agent in ("a", "b", "c"):
            self.fleet.add(agent, NAMES, replicas=2).start()
        self.fleet.run(3.0)
        self.a = self.fleet.members["a"]
        self.assertTrue(self.share())

    def share(self) -> set[str]:
        """The instances whose node ``a``'s session holds."""
        session = self.a.zk.session_id
        return {n for n in NAMES if self.fleet.owner_of(n) == session}

    def expire(self, member: Member) -> None:
        """`member` cut off until its session expired, then back."""
        self.fleet.expire(member)

    def held(self, member: Member) -> list[str]:
        """Every node `member`'s session holds."""
        session = member.zk.session_id
        return [p for p, n in self.fleet.server.nodes.items() if n.owner == session]

    def test_one_end_joins_at_once(self) -> None:
        """After one end ``a`` is listed again and takes its share back."""
        self.expire(self.a)
        self.fleet.run(3.0)
        self.assertFalse(self.a.group.holdoff.holding)
        self.assertTrue(self.share())

    def test_second_end_holds_it_out_of_the_group(self) -> None:
        """
        A second end within the window: for `FIRST_WAIT` ``a`` writes
        nothing in its new session (no catalog, agent node, instance node
        or opinion), the others keep it out of their views and publish
        its share, /healthz, /metrics and /group name the wait; then it
        joins and takes its share back.
        """
        self.expire(self.a)
        self.fleet.run(10.0)
        self.expire(self.a)
        for _ in range(round((FIRST_WAIT - 0.5) / 0.5)):
            self.fleet.run(0.5)
            self.assertEqual(self.held(self.a), [])
            for other in ("b", "c"):
                view = self.fleet.members[other].group.membership.view
                self.assertNotIn("a", view)
        for name in NAMES:
            self.assertIsNotNone(self.fleet.node(name))
        reason = self.a.group.unhealthy_reason() or ""
        self.assertIn("ended 2 times in a row", reason)
        self.assertIn("path to ZooKeeper", reason)
        self.assertNotIn("not listed in the group again", reason)
        # One line says it: not the writes it holds back on purpose.
        self.assertEqual(reason.count("; "), 0, reason)
        self.assertIsNone(self.a.publisher.unhealthy_reason())
        head = b"".join(self.a.group.report_slices(PageQuery(10)))
        self.assertIn(b'"session_ends": 2', head)
        self.fleet.run(1.0 + 3.0)
        self.assertFalse(self.a.group.holdoff.holding)
        self.assertIn(f"{ROOT}/agents/a", self.held(self.a))
        self.assertTrue(self.share())
        self.assertIsNone(self.a.group.holdoff.reason())

    def test_lone_agent_never_waits(self) -> None:
        """A member alone in its view writes again at once, end after end."""
        fleet = Fleet()
        alone = fleet.add("z", NAMES, replicas=2).start()
        fleet.run(3.0)
        self.fleet = fleet
        for _ in range(3):
            self.expire(alone)
            fleet.run(2.0)
            self.assertFalse(alone.group.holdoff.holding)
            self.assertIn(f"{ROOT}/agents/z", self.held(alone))

    def test_released_when_no_other_member_is_listed(self) -> None:
        """
        Waiting, ``a`` joins at once when a listing finds no other member
        that knows its instances (both crashed): nobody else publishes.
        """
        self.expire(self.a)
        self.fleet.run(10.0)
        self.expire(self.a)
        self.fleet.run(1.0)
        self.assertTrue(self.a.group.holdoff.holding)
        self.fleet.members["b"].crash()
        self.fleet.members["c"].crash()
        self.fleet.run(2 * SETTLE + 1.0)
        self.assertFalse(self.a.group.holdoff.holding)
        self.assertEqual(self.a.group.holdoff.released, 1)
        self.assertTrue(self.share())
        # The rest once the wait for the last view's members is over.
        self.fleet.run(self.a.zk.session_timeout * 2)
        self.assertEqual(self.share(), set(NAMES))

    def test_joins_once_its_connection_has_proven_itself(self) -> None:
        """
        After five ends in a row (an 80 s wait), ``a`` connected without
        a break joins `PROOF` s after its last session began, its /healthz
        saying what ends the wait early; a break in between (its session
        living on) starts the proof again.
        """
        self.expire(self.a)
        self.fleet.run(10.0)
        for _ in range(4):
            self.expire(self.a)
        self.assertEqual(self.a.group.holdoff.remaining(), 8 * FIRST_WAIT)
        reason = self.a.group.unhealthy_reason() or ""
        self.assertIn(f"joins again after {PROOF:.0f} s connected", reason)
        self.fleet.run(10.0)
        self.a.zk.suspend()
        self.fleet.run(1.0)
        self.a.zk.connect()
        self.assertEqual(self.a.zk.state, CONNECTED)
        self.fleet.run(PROOF - 1.0)
        self.assertTrue(self.a.group.holdoff.holding)
        self.assertEqual(self.held(self.a), [])
        self.fleet.run(1.0 + 3.0)
        self.assertFalse(self.a.group.holdoff.holding)
        self.assertEqual(self.a.group.holdoff.released, 1)
        self.assertIn(f"{ROOT}/agents/a", self.held(self.a))
        self.assertTrue(self.share())

    def test_joins_with_no_view_behind_told(self) -> None:
        """
        The view, kept on purpose through a wait, is not told behind
        ZooKeeper for the wait's length as the member joins again: at no
        step from the end of an 80 s wait (released by the proof) until
        it is listed does /healthz name a view behind.
        """
        self.expire(self.a)
        self.fleet.run(10.0)
        for _ in range(4):
            self.expire(self.a)
        told = []
        for _ in range(round((PROOF + 10.0) / 0.05)):
            self.fleet.clock.advance(0.05)
            reason = self.a.group.unhealthy_reason() or ""
            if "behind ZooKeeper" in reason:
                told.append(reason)
        self.assertEqual(self.a.group.holdoff.released, 1)
        self.assertEqual(told, [])

    def test_stop_during_the_wait(self) -> None:
        """A stop during the wait ends it: the stop completes, no call is left."""
        self.expire(self.a)
        self.fleet.run(10.0)
        self.expire(self.a)
        self.fleet.run(1.0)
        self.assertTrue(self.a.group.holdoff.holding)
        stopped = self.a.stop()
        self.fleet.run(5.0)
        self.successResultOf(stopped)
        self.assertFalse(self.a.group.holdoff.holding)
        self.fleet.run(FIRST_WAIT)
        self.assertEqual(self.held(self.a), [])

"""Rise/fall hysteresis and what a transition carries."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sentinel.health import DOWN, UP, InstanceHealth
from sentinel.observation import Observation, Replication

OK = Observation(ok=True, ready=True, latency_ms=1.0)
BAD = Observation(ok=False, error="timeout (ping)")
MASTER = Observation(ok=True, ready=True, replication=Replication(role="master"))


class RiseFallTests(SynchronousTestCase):
    """The first observation decides; later ones need rise/fall in a row."""

    def test_first_observation_sets_status(self) -> None:
        """No hysteresis on the very first check, either way."""
        for observation, status in ((OK, UP), (BAD, DOWN)):
            health = InstanceHealth(rise=2, fall=3)
            transition = health.observe(observation, 100.0)
            assert transition is not None
            self.assertEqual(
                (transition.old_status, transition.new_status), (None, status)
            )
            self.assertEqual(health.since, 100.0)

    def test_fall(self) -> None:
        """`fall` failures in a row take an up instance down, not fewer."""
        health = InstanceHealth(rise=2, fall=3)
        health.observe(OK, 0.0)
        self.assertIsNone(health.observe(BAD, 1.0))
        self.assertIsNone(health.observe(BAD, 2.0))
        self.assertEqual(health.status, UP)
        transition = health.observe(BAD, 3.0)
        assert transition is not None
        self.assertEqual(transition.new_status, DOWN)
        self.assertEqual(health.since, 3.0)
        self.assertEqual(health.error, "timeout (ping)")

    def test_interrupted_fall(self) -> None:
        """A success between failures resets the count."""
        health = InstanceHealth(rise=2, fall=2)
        health.observe(OK, 0.0)
        for observation in (BAD, OK, BAD, OK, BAD):
            self.assertIsNone(health.observe(observation, 1.0))
        self.assertEqual(health.status, UP)
        self.assertEqual((health.checks, health.failures), (6, 3))

    def test_rise(self) -> None:
        """`rise` successes in a row bring a down instance up."""
        health = InstanceHealth(rise=2, fall=3)
        health.observe(BAD, 0.0)
        self.assertIsNone(health.observe(OK, 1.0))
        transition = health.observe(OK, 2.0)
        assert transition is not None
        self.assertEqual((transition.old_status, transition.new_status), (DOWN, UP))
        self.assertEqual(health.consecutive_successes, 2)

    def test_ready_change_is_a_transition(self) -> None:
        """An up instance that starts LOADING changes `ready` at once."""
        health = InstanceHealth(rise=2, fall=3)
        health.observe(OK, 0.0)
        transition = health.observe(Observation(ok=True, ready=False), 1.0)
        assert transition is not None
        self.assertFalse(transition.status_changed)
        self.assertFalse(health.ready)

    def test_role_change_and_cleared_when_down(self) -> None:
        """A new role is a transition; going down clears the role."""
        health = InstanceHealth(rise=1, fall=1)
        health.observe(MASTER, 0.0)
        self.assertEqual(health.replication.role, "master")
        replica = Observation(
            ok=True,
            ready=True,
            replication=Replication("slave", "10.0.0.1", 6379, "up"),
        )
        self.assertIsNotNone(health.observe(replica, 1.0))
        self.assertEqual(health.replication.master_port, 6379)
        self.assertIsNone(health.observe(OK, 2.0))
        self.assertEqual(health.replication.role, "slave")
        health.observe(BAD, 3.0)
        self.assertEqual((health.status, health.replication.role), (DOWN, None))
        self.assertFalse(health.ready)


class RoleErrorTests(SynchronousTestCase):
    """Why the last INFO left the role unknown is shown with that role."""

    def test_kept_until_info_reads_a_role(self) -> None:
        """
        An INFO refused (an ACL user without INFO) leaves the role unknown,
        its error part of every later check's `error`, joined to the
        check's own, until an INFO reads a role; a change of that error is
        a transition, the same one again is not; going down clears it.
        """
        refused = Replication(role=None, error="INFO replication: NOPERM")
        health = InstanceHealth(rise=1, fall=2)
        health.observe(MASTER, 0.0)
        transition = health.observe(
            Observation(ok=True, ready=True, replication=refused), 1.0
        )
        self.assertIsNotNone(transition)
        self.assertEqual(
            (health.replication.role, health.error), (None, "INFO replication: NOPERM")
        )
        self.assertIsNone(health.observe(OK, 2.0))
        self.assertEqual(health.error, "INFO replication: NOPERM")
        self.assertIsNone(health.observe(BAD, 3.0))
        self.assertEqual(health.error, "timeout (ping); INFO replication: NOPERM")
        self.assertIsNone(
            health.observe(Observation(ok=True, ready=True, replication=refused), 4.0)
        )
        health.observe(Observation(True, False, 1.0, "LOADING"), 5.0)
        self.assertEqual(health.error, "LOADING; INFO replication: NOPERM")
        unanswered = Replication(role=None, error="INFO replication: no reply")
        self.assertIsNotNone(
            health.observe(
                Observation(ok=True, ready=True, replication=unanswered), 6.0
            )
        )
        self.assertEqual(health.error, "INFO replication: no reply")
        self.assertIsNotNone(health.observe(MASTER, 7.0))
        self.assertEqual((health.replication.role, health.error), ("master", None))
        health.observe(Observation(ok=True, ready=True, replication=refused), 8.0)
        health.observe(BAD, 9.0)
        health.observe(BAD, 10.0)
        self.assertEqual((health.status, health.error), (DOWN, "timeout (ping)"))


class RepeatedInfoTests(SynchronousTestCase):
    """An INFO that reads the role it read last time changes nothing."""

    def test_same_role_read_again(self) -> None:
        """
        A replica up, its INFO read again (an equal role, parsed anew each
        time): no transition, one more success in a row, the latest
        latency, and the role and its link as they were; a changed link is
        a transition again.
        """

        def replica(link: str) -> Replication:
            return Replication(
                role="slave",
                master_host="10.0.0.1",
                master_port=6379,
                master_link_status=link,
            )

        health = InstanceHealth(rise=2, fall=3)
        health.observe(Observation(True, True, 1.0, None, replica("up")), 0.0)
        for k in range(1, 4):
            again = Observation(True, True, 2.0 + k, None, replica("up"))
            self.assertIsNone(health.observe(again, float(k)))
        self.assertEqual(
            (health.consecutive_successes, health.latency_ms, health.checked_at),
            (4, 5.0, 3.0),
        )
        self.assertEqual(health.replication, replica("up"))
        self.assertIsNone(health.error)
        down = Observation(True, True, 1.0, None, replica("down"))
        self.assertIsNotNone(health.observe(down, 4.0))
        self.assertEqual(health.replication.master_link_status, "down")


class DrainTests(SynchronousTestCase):
    """A drained instance is up and not ready, and says it is draining."""

    def test_draining_on_and_off(self) -> None:
        """
        The drain key coming and going is a transition each time (ready
        changes), the instance staying up; `draining` follows it.
        """
        health = InstanceHealth(rise=2, fall=3)
        health.observe(OK, 0.0)
        draining = Observation(True, False, 1.0, "draining", None, True)
        transition = health.observe(draining, 1.0)
        assert transition is not None
        self.assertFalse(transition.status_changed)
        self.assertEqual(
            (health.status, health.ready, health.draining, health.error),
            (UP, False, True, "draining"),
        )
        self.assertIsNone(health.observe(draining, 2.0))
        self.assertIsNotNone(health.observe(OK, 3.0))
        self.assertEqual(
            (health.ready, health.draining, health.error), (True, False, None)
        )

    def test_draining_while_not_ready(self) -> None:
        """
        The drain key found while the instance is already not ready (it is
        loading) is kept, though nothing published changes.
        """
        health = InstanceHealth(rise=2, fall=3)
        health.observe(Observation(True, False, 1.0), 0.0)
        self.assertIsNone(
            health.observe(Observation(True, False, 1.0, "draining", None, True), 1.0)
        )
        self.assertTrue(health.draining)

    def test_down_is_not_draining(self) -> None:
        """Going down clears `draining`: nothing known is stale."""
        health = InstanceHealth(rise=1, fall=1)
        health.observe(Observation(True, False, 1.0, "draining", None, True), 0.0)
        health.observe(BAD, 1.0)
        self.assertFalse(health.draining)


class RoleChangeTests(SynchronousTestCase):
    """When one known role follows another, the health says when."""

    def test_role_changed_at(self) -> None:
        """
        From master to slave is a change, stamped; from unknown to a role
        (the first INFO, or after being down) is not.
        """
        health = InstanceHealth(rise=1, fall=1)
        health.observe(MASTER, 5.0)
        self.assertEqual(health.role_changed_at, float("-inf"))
        replica = Observation(
            ok=True, ready=True, replication=Replication("slave", "h", 1, "down")
        )
        health.observe(replica, 7.0)
        self.assertEqual(health.role_changed_at, 7.0)
        health.observe(BAD, 8.0)
        health.observe(MASTER, 9.0)
        self.assertEqual(health.role_changed_at, 7.0)


class KeepSinceTests(SynchronousTestCase):
    """What the previous process published of a status it did not change."""

    def test_kept_for_the_status_found_first(self) -> None:
        """The same status, decided once, earlier: up since then."""
        health = InstanceHealth(rise=2, fall=2)
        health.observe(OK, 100.0)
        health.keep_since(UP, 40.0)
        self.assertEqual(health.since, 40.0)

    def test_kept_when_later(self) -> None:
        """
        The same status, decided once, since a time after the first check
        but not after the last: what readers saw, kept.
        """
        health = InstanceHealth(rise=2, fall=2)
        health.observe(OK, 100.0)
        health.observe(OK, 101.0)
        health.keep_since(UP, 100.5)
        self.assertEqual(health.since, 100.5)

    def test_later_change_of_the_node_never_dated_back(self) -> None:
        """
        The node said a change later than this process found its own
        status: the same status since then is kept, though this process
        changed it more than once; another status dates from the last
        check, never from before the change readers saw.
        """
        health = InstanceHealth(rise=1, fall=1)
        health.observe(OK, 100.0)
        health.observe(BAD, 101.0)
        health.observe(OK, 102.0)
        health.observe(OK, 110.0)
        health.keep_since(UP, 105.0)
        self.assertEqual(health.since, 105.0)
        health = InstanceHealth(rise=1, fall=1)
        health.observe(OK, 100.0)
        health.observe(OK, 110.0)
        health.keep_since(DOWN, 40.0)
        self.assertEqual(health.since, 100.0)
        health.keep_since(DOWN, 105.0)
        self.assertEqual(health.since, 110.0)

    def test_kept_for_a_status_decided_anew(self) -> None:
        """
        A status decided anew after a stale history (the agent frozen)
        counts as decided directly, as a first observation does: an
        earlier ``since`` of the same status is kept. The change of status
        happened in the gap, where another agent published it.
        """
        health = InstanceHealth(rise=2, fall=3, interval=1.0)
        health.observe(OK, 0.0)
        health.observe(OK, 1.0)
        health.observe(BAD, 10.0)
        health.keep_since(DOWN, 5.0)
        self.assertEqual((health.status, health.since), (DOWN, 5.0))

    def test_not_kept_otherwise(self) -> None:
        """
        Another status, a time after the last check (a clock ahead of
        ours), or a status this process already changed once more: the
        time this process decided it stays.
        """
        health = InstanceHealth(rise=1, fall=1)
        health.observe(OK, 100.0)
        health.keep_since(DOWN, 40.0)
        health.keep_since(UP, 120.0)
        health.keep_since(UP, 0.0)
        self.assertEqual(health.since, 100.0)
        health.observe(BAD, 101.0)
        health.observe(OK, 102.0)
        health.keep_since(UP, 40.0)
        self.assertEqual(health.since, 102.0)


class StaleHistoryTests(SynchronousTestCase):
    """
    A history with no check for longer than the hysteresis takes is no
    evidence of now: the next check decides the status directly.
    """

    def test_stale_after_the_longer_count_and_an_interval(self) -> None:
        """`(max(rise, fall) + 1) × interval`; never without an interval."""
        self.assertEqual(InstanceHealth(rise=2, fall=3, interval=0.5).stale_after, 2.0)
        self.assertEqual(InstanceHealth(rise=5, fall=3, interval=1.0).stale_after, 6.0)
        health = InstanceHealth(rise=2, fall=3)
        health.observe(OK, 0.0)
        self.assertTrue(health.current(1e9))

    def test_current_until_stale(self) -> None:
        """Current from the first check on, until `stale_after` goes by."""
        health = InstanceHealth(rise=2, fall=3, interval=1.0)
        self.assertFalse(health.current(0.0))
        health.observe(OK, 10.0)
        self.assertTrue(health.current(14.0))
        self.assertFalse(health.current(14.1))

    def test_first_failure_after_a_gap_takes_it_down(self) -> None:
        """
        An up instance checked again after a gap (the agent frozen) and
        failing is down at once, not after `fall` failures: the successes
        before the gap say nothing of now.
        """
        health = InstanceHealth(rise=2, fall=3, interval=1.0)
        health.observe(OK, 0.0)
        health.observe(OK, 1.0)
        transition = health.observe(BAD, 7.0)
        assert transition is not None
        self.assertEqual(
            (transition.status_changed, transition.old_status, transition.new_status),
            (True, UP, DOWN),
        )
        self.assertTrue(transition.anew)
        self.assertEqual((health.status, health.since), (DOWN, 7.0))
        self.assertEqual(health.consecutive_failures, 1)

    def test_first_success_after_a_gap_brings_it_up(self) -> None:
        """Likewise a down instance, on one success after a gap."""
        health = InstanceHealth(rise=2, fall=3, interval=1.0)
        health.observe(BAD, 0.0)
        transition = health.observe(OK, 5.5)
        assert transition is not None
        self.assertEqual(transition.new_status, UP)
        self.assertEqual(health.consecutive_successes, 1)

    def test_same_status_after_a_gap_is_written_again(self) -> None:
        """
        The status found again after a gap is a transition too (each
        publisher writes it anew), but no change: its since stays.
        """
        health = InstanceHealth(rise=2, fall=3, interval=1.0)
        health.observe(OK, 0.0)
        transition = health.observe(OK, 10.0)
        assert transition is not None
        self.assertEqual((transition.status_changed, transition.anew), (False, True))
        self.assertEqual((health.status, health.since), (UP, 0.0))

    def test_shorter_interval_keeps_the_last_deadline(self) -> None:
        """
        New settings (a reload: interval 10 s -> 1 s) leave the last check
        the deadline of the schedule it ran under; the next check gets the
        new one.
        """
        health = InstanceHealth(rise=2, fall=3, interval=10.0)
        health.observe(OK, 0.0)
        health.configure(2, 3, 1.0)
        self.assertTrue(health.current(9.0))
        self.assertIsNone(health.observe(BAD, 9.0))
        self.assertEqual(health.status, UP)
        self.assertTrue(health.current(13.0))
        self.assertFalse(health.current(13.1))

    def test_longer_interval_gives_the_last_check_the_new_deadline(self) -> None:
        """
        New settings that space the checks further apart (a reload:
        interval 1 s -> 20 s, or a larger fall) give the last check the
        deadline of the new schedule: the next check, on that schedule,
        counts in a row, and one failure does not take the instance down.
        """
        health = InstanceHealth(rise=2, fall=3, interval=1.0)
        health.observe(OK, 0.0)
        health.observe(OK, 1.0)
        health.configure(2, 3, 20.0)
        self.assertTrue(health.current(21.0))
        self.assertIsNone(health.observe(BAD, 21.0))
        self.assertEqual(health.status, UP)
        longer_fall = InstanceHealth(rise=2, fall=3, interval=1.0)
        longer_fall.observe(OK, 0.0)
        longer_fall.configure(2, 10, 1.0)
        self.assertTrue(longer_fall.current(11.0))
        self.assertFalse(longer_fall.current(11.1))

    def test_clock_step_moves_the_deadline(self) -> None:
        """A step of the wall clock moves the deadline by as much."""
        health = InstanceHealth(rise=2, fall=3, interval=1.0)
        health.observe(OK, 0.0)
        health.clock_stepped(10.0)
        self.assertTrue(health.current(14.0))
        self.assertIsNone(health.observe(BAD, 11.0))
        self.assertEqual(health.status, UP)
        health.clock_stepped(-100.0)
        self.assertFalse(health.current(-84.0))

    def test_hysteresis_within_the_limit(self) -> None:
        """A check within `stale_after` of the last one counts in a row."""
        health = InstanceHealth(rise=2, fall=3, interval=1.0)
        health.observe(OK, 0.0)
        self.assertIsNone(health.observe(BAD, 4.0))
        self.assertEqual(health.status, UP)


class InheritTests(SynchronousTestCase):
    """
    A previous primary's fresh verdict is where rise/fall starts, whether
    it comes before this agent's first check or after a few of them.
    """

    ROLE = Replication(role="master")

    def assert_moved_by_the_last(
        self, health: InstanceHealth, observation: Observation, times: list[float]
    ) -> None:
        """`observation` at each of `times` changes the status at the last alone."""
        before = health.status
        for at in times[:-1]:
            self.assertIsNone(health.observe(observation, at))
            self.assertEqual(health.status, before)
        transition = health.observe(observation, times[-1])
        assert transition is not None
        self.assertEqual(transition.new_status, UP if observation.ok else DOWN)

    def test_before_any_check_up_needs_fall(self) -> None:
        """Inherited up: `fall` - 1 failures keep it up, the `fall`-th not."""
        health = InstanceHealth(rise=2, fall=3, interval=1.0)
        transition = health.inherit(UP, True, self.ROLE, 100.0)
        assert transition is not None
        self.assertEqual((transition.old_status, transition.new_status), (None, UP))
        self.assertEqual((health.ready, health.replication.role), (True, "master"))
        self.assert_moved_by_the_last(health, BAD, [101.0, 102.0, 103.0])

    def test_before_any_check_down_needs_rise(self) -> None:
        """Inherited down: one success keeps it down, the `rise`-th not."""
        health = InstanceHealth(rise=2, fall=3, interval=1.0)
        health.inherit(DOWN, True, self.ROLE, 100.0)
        self.assertEqual((health.ready, health.replication.role), (False, None))
        self.assert_moved_by_the_last(health, OK, [101.0, 102.0])

    def test_after_fewer_checks_than_fall(self) -> None:
        """
        Down by one failed check of its own (decided directly), up
        inherited: up again, with that failure counted towards `fall`.
        """
        health = InstanceHealth(rise=2, fall=3, interval=1.0)
        health.observe(BAD, 100.0)
        transition = health.inherit(UP, True, self.ROLE, 100.5)
        assert transition is not None
        self.assertEqual((transition.old_status, transition.new_status), (DOWN, UP))
        self.assertEqual((health.since, health.changes), (100.5, 1))
        self.assert_moved_by_the_last(health, BAD, [101.0, 102.0])

    def test_own_checks_that_agree_or_suffice_stay(self) -> None:
        """
        Checks of its own that say the same, that are as many as the
        hysteresis would need, or whose history went stale, are kept.
        """
        agreeing = InstanceHealth(rise=2, fall=3, interval=1.0)
        agreeing.observe(OK, 100.0)
        self.assertIsNone(agreeing.inherit(UP, False, self.ROLE, 100.5))
        self.assertTrue(agreeing.ready)
        enough = InstanceHealth(rise=2, fall=3, interval=1.0)
        for at in (100.0, 101.0, 102.0):
            enough.observe(BAD, at)
        self.assertIsNone(enough.inherit(UP, True, self.ROLE, 102.5))
        self.assertEqual(enough.status, DOWN)
        stale = InstanceHealth(rise=2, fall=3, interval=1.0)
        stale.observe(BAD, 100.0)
        self.assertIsNone(stale.inherit(UP, True, self.ROLE, 100.0 + 5.0))
        self.assertEqual(stale.status, DOWN)

    def test_inherited_lapses_without_checks(self) -> None:
        """No check within `stale_after` of it: the next one decides anew."""
        health = InstanceHealth(rise=2, fall=3, interval=1.0)
        health.inherit(UP, True, self.ROLE, 100.0)
        self.assertFalse(health.current(100.0 + health.stale_after + 0.1))
        transition = health.observe(BAD, 100.0 + health.stale_after + 0.1)
        assert transition is not None
        self.assertEqual(transition.new_status, DOWN)

    def assert_contrary_checks_renew_nothing(
        self, status: str, backing: Observation, contrary: Observation
    ) -> None:
        """
        `status` decided by `backing` at 100, then two `contrary` checks
        (fewer than the three that would move it): the node's
        ``checked_at`` stays 100 and the instance is unbacked since then;
        a `backing` check ends that, and so do three `contrary` ones,
        which move the status.
        """
        health = InstanceHealth(rise=3, fall=3, interval=1.0)
        health.observe(backing, 100.0)
        health.observe(contrary, 101.0)
        health.observe(contrary, 102.0)
        self.assertEqual((health.status, health.checked_at), (status, 102.0))
        self.assertEqual(health.published_checked_at, 100.0)
        self.assertEqual(health.unbacked_since, 100.0)
        health.observe(backing, 103.0)
        self.assertEqual(health.published_checked_at, 103.0)
        self.assertIsNone(health.unbacked_since)
        for at in (104.0, 105.0, 106.0):
            health.observe(contrary, at)
        self.assertNotEqual(health.status, status)
        self.assertEqual(health.published_checked_at, 106.0)
        self.assertIsNone(health.unbacked_since)

    def test_failures_short_of_fall_renew_no_checked_at(self) -> None:
        """
        Up, then failures fewer than `fall`: the node's ``checked_at`` stays
        the last success's (they are no evidence that it is up), and the
        instance is unbacked since then; a success or the fall ends that.
        """
        self.assert_contrary_checks_renew_nothing(UP, OK, BAD)

    def test_successes_short_of_rise_renew_no_checked_at(self) -> None:
        """
        The mirror: down, then successes fewer than `rise`: ``checked_at``
        stays the last failure's (they are no evidence that it is down),
        and the instance is unbacked since then; a failure or the rise
        ends that.
        """
        self.assert_contrary_checks_renew_nothing(DOWN, BAD, OK)

    def assert_inherited_dates_from_the_previous_check(
        self, status: str, contrary: Observation
    ) -> None:
        """
        `status` inherited from a node checked at 95 (a restart), then a
        `contrary` check of this process's own, before or after the
        inherit: the node goes on saying 95, not that check's time, and
        the instance is unbacked since 95 (the state file says no later).
        """
        before = InstanceHealth(rise=2, fall=3, interval=1.0)
        before.inherit(status, status == UP, self.ROLE, 100.0, 95.0)
        before.observe(contrary, 100.5)
        after = InstanceHealth(rise=2, fall=3, interval=1.0)
        after.observe(contrary, 100.0)
        after.inherit(status, status == UP, self.ROLE, 100.5, 95.0)
        for health in (before, after):
            self.assertEqual(health.status, status)
            self.assertEqual(health.published_checked_at, 95.0)
            self.assertEqual(health.unbacked_since, 95.0)

    def test_inherited_up_dates_from_the_previous_check(self) -> None:
        """
        Up inherited from a node checked at 95 (a restart), then a failure
        of this process's own, before or after the inherit: the node goes
        on saying 95, not the failure's time.
        """
        self.assert_inherited_dates_from_the_previous_check(UP, BAD)

    def test_inherited_down_dates_from_the_previous_check(self) -> None:
        """
        The mirror: down inherited from a node checked at 95, then a
        success of this process's own, before or after the inherit: the
        node goes on saying 95, not the success's time.
        """
        self.assert_inherited_dates_from_the_previous_check(DOWN, OK)


class SettledTests(SynchronousTestCase):
    """
    A status decided directly is settled once the hysteresis confirms it;
    one it moved is settled at once.
    """

    def assert_settles_at(self, observation: Observation, count: int) -> None:
        """A first `observation` decides; the `count`-th in a row settles it."""
        health = InstanceHealth(rise=2, fall=3, interval=1.0)
        for at in range(count - 1):
            health.observe(observation, float(at))
            self.assertFalse(health.settled, at)
        health.observe(observation, float(count - 1))
        self.assertTrue(health.settled)

    def test_first_down_settles_at_the_fall_th_failure(self) -> None:
        """Down by a first failure: unsettled until `fall` failures in a row."""
        self.assert_settles_at(BAD, 3)

    def test_interrupted_failures_stay_unsettled(self) -> None:
        """A success between failures (fewer than `rise`) starts the count again."""
        health = InstanceHealth(rise=2, fall=3, interval=1.0)
        for at, observation in enumerate([BAD, BAD, OK, BAD, BAD]):
            health.observe(observation, float(at))
        self.assertEqual(health.status, DOWN)
        self.assertFalse(health.settled)

    def test_first_up_settles_at_the_rise_th_success(self) -> None:
        """Up by a first success: settled at the `rise`-th success."""
        self.assert_settles_at(OK, 2)

    def test_moved_by_the_hysteresis_is_settled(self) -> None:
        """Up, then down by `fall` failures: settled from that change on."""
        health = InstanceHealth(rise=1, fall=2, interval=1.0)
        health.observe(OK, 0.0)
        health.observe(BAD, 1.0)
        transition = health.observe(BAD, 2.0)
        assert transition is not None
        self.assertTrue(health.settled)
        self.assertEqual(health.changes, 2)

    def test_decided_anew_after_a_gap_is_not_settled(self) -> None:
        """A failure after a stale history decides directly: not settled."""
        health = InstanceHealth(rise=1, fall=2, interval=1.0)
        health.observe(OK, 0.0)
        health.observe(OK, 1.0)
        self.assertTrue(health.settled)
        health.observe(BAD, 1.0 + health.stale_after + 0.1)
        self.assertEqual(health.status, DOWN)
        self.assertFalse(health.settled)

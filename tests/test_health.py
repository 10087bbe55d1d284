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

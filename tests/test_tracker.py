"""The pending list: every check in flight, once, until it ends."""

from __future__ import annotations

import json

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sentinel.listing import pending_slices
from sentinel.tracker import PendingTracker


class _InFlight:
    """An instance's state with its check in flight."""

    def __init__(self, name: str, started_at: float) -> None:
        self.name = name
        self.started_at = started_at
        self.stage = "ping"
        self.check = None


class TrackerTests(SynchronousTestCase):
    def test_each_state_once(self) -> None:
        """A state added twice is tracked once, and ends once."""
        tracker = PendingTracker()
        state = _InFlight("r1", 0.0)
        tracker.add(state)
        tracker.add(state)
        self.assertEqual(list(tracker), [state])
        tracker.discard(state)
        self.assertEqual(len(tracker), 0)

    def test_discard_only_that_state(self) -> None:
        """
        Two states of the same name (an instance replaced while its check
        was in flight) are both tracked; discarding takes out the state
        given, and only it; a state not tracked is no error.
        """
        tracker = PendingTracker()
        old, new = _InFlight("r1", 0.0), _InFlight("r1", 1.0)
        tracker.add(old)
        tracker.add(new)
        tracker.discard(old)
        self.assertEqual(list(tracker), [new])
        tracker.discard(new)
        tracker.discard(new)
        self.assertEqual((len(tracker), list(tracker)), (0, []))

    def test_listed_by_age_then_name(self) -> None:
        """
        The pending list is oldest first and, among checks launched
        together (a slice's), by name, whatever order they were added in.
        """
        tracker = PendingTracker()
        for name, started_at in [("r3", 5.0), ("r2", 5.0), ("r9", 4.0), ("r1", 5.0)]:
            tracker.add(_InFlight(name, started_at))
        report = tracker.report(6.0)
        self.assertEqual(
            [check["instance"] for check in report["checks"]], ["r9", "r1", "r2", "r3"]
        )
        self.assertEqual(report["oldest_seconds"], 2.0)
        clock = Clock()
        clock.advance(6.0)
        body = b"".join(pending_slices(tracker, clock))
        self.assertLess(body.index(b'"r9"'), body.index(b'"r1"'))
        self.assertLess(body.index(b'"r1"'), body.index(b'"r2"'))
        self.assertLess(body.index(b'"r2"'), body.index(b'"r3"'))

    def test_stages_are_the_contracts(self) -> None:
        """
        GET /pending names only DESIGN.md's stages (connect, auth, ping,
        info): a check in its TLS handshake is listed as connect, in the
        report and in the body the route renders. Before, "tls", which a
        reader of the contract does not know.
        """
        tracker = PendingTracker()
        stages = {"c": "connect", "t": "tls", "a": "auth", "p": "ping", "i": "info"}
        for name, stage in stages.items():
            state = _InFlight(name, 1.0)
            state.stage = stage
            tracker.add(state)
        expected = {**stages, "t": "connect"}
        report = tracker.report(2.0)
        self.assertEqual(
            {check["instance"]: check["stage"] for check in report["checks"]},
            expected,
        )
        clock = Clock()
        clock.advance(2.0)
        body = json.loads(b"".join(pending_slices(tracker, clock)))
        self.assertEqual(
            {check["instance"]: check["stage"] for check in body["checks"]},
            expected,
        )

"""The group's log lines (`sentinel.group`), on a Clock (`tests.groupfakes`)."""

from __future__ import annotations

from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from tests.groupfakes import Fleet, instance

NAMES = [f"r{i:02d}" for i in range(13)]


class ViewLogTests(SynchronousTestCase):
    """The line that says how a view of the group moved the instances."""

    def test_reload_logged_once_applied(self) -> None:
        """
        A reload that adds one instance and removes another logs the
        group's line once both are applied: two instances changed
        observers, and the agent observes as many as before.
        """
        fleet = Fleet()
        alone = fleet.add("a", NAMES).start()
        fleet.run(2.0)
        with capturedLogs() as events:
            alone.group.change_instances([NAMES[0]], [], [instance("new")])
        lines = [
            formatEvent(e) for e in events if e["log_namespace"] == "sentinel.group"
        ]
        self.assertEqual(
            lines,
            [
                "group: 1 member(s); 2 instance(s) changed observers, "
                "this agent observes 13"
            ],
        )
        self.assertEqual(alone.watched, set(NAMES[1:]) | {"new"})

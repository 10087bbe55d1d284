"""JSON log lines for log shippers."""

from __future__ import annotations

import io
import json

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from sentinel.logs import JSONLinesObserver


class JSONLinesTests(SynchronousTestCase):
    """One flat JSON object per event."""

    def test_fields(self) -> None:
        """Time, level, namespace, message and the event's simple fields."""
        out = io.StringIO()
        log = Logger(namespace="sentinel.monitor", observer=JSONLinesObserver(out))
        log.info("{instance} is {to}", instance="cache-1", to="down", obj=object())
        record = json.loads(out.getvalue())
        self.assertEqual(record["message"], "cache-1 is down")
        self.assertEqual(record["level"], "info")
        self.assertEqual(record["namespace"], "sentinel.monitor")
        self.assertEqual((record["instance"], record["to"]), ("cache-1", "down"))
        self.assertNotIn("obj", record)
        self.assertTrue(record["time"].endswith("+00:00"))
        self.assertEqual(out.getvalue().count("\n"), 1)

    def test_failure_traceback(self) -> None:
        """A logged failure carries its traceback as one JSON string."""
        out = io.StringIO()
        log = Logger(namespace="x", observer=JSONLinesObserver(out))
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            log.failure("boom")
        record = json.loads(out.getvalue())
        self.assertEqual(record["level"], "critical")
        self.assertIn("ZeroDivisionError", record["traceback"])

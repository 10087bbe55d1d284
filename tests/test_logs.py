"""Log output: JSON lines for log shippers, and the level filter."""

from __future__ import annotations

import io
import json

from twisted.logger import Logger, LogLevel
from twisted.trial.unittest import SynchronousTestCase

from sentinel.logs import LEVEL_VARIABLE, JSONLinesObserver, filtered, level_from


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


class LevelTests(SynchronousTestCase):
    """``SENTINEL_LOG_LEVEL`` chooses the lowest level shown."""

    def test_default_hides_debug(self) -> None:
        """Without the variable, info and above are shown, debug is not."""
        out = io.StringIO()
        observer = filtered(JSONLinesObserver(out), level_from({}))
        log = Logger(namespace="x", observer=observer)
        log.debug("housekeeping")
        log.info("shown")
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        self.assertEqual([line["message"] for line in lines], ["shown"])

    def test_named_levels(self) -> None:
        """Each level name (and ``warning``, in any case) is accepted."""
        self.assertEqual(level_from({LEVEL_VARIABLE: "debug"}), LogLevel.debug)
        self.assertEqual(level_from({LEVEL_VARIABLE: " Warning "}), LogLevel.warn)
        self.assertEqual(level_from({LEVEL_VARIABLE: "error"}), LogLevel.error)

    def test_warn_hides_info(self) -> None:
        """At ``warn``, an info line is dropped and a warning kept."""
        out = io.StringIO()
        observer = filtered(JSONLinesObserver(out), LogLevel.warn)
        log = Logger(namespace="x", observer=observer)
        log.info("routine")
        log.warn("{instance} is down", instance="a")
        self.assertEqual(json.loads(out.getvalue())["message"], "a is down")

    def test_unknown_level_is_one_line(self) -> None:
        """A name that is not a level ends with one line naming it."""
        with self.assertRaises(SystemExit) as raised:
            level_from({LEVEL_VARIABLE: "chatty"})
        message = str(raised.exception.code)
        self.assertIn("SENTINEL_LOG_LEVEL: 'chatty' is not a log level", message)
        self.assertEqual(len(message.splitlines()), 1)

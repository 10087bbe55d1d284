"""
JSON log output for log shippers:

    twistd -n --logger=sentinel.logs.json_observer sentinel ...

writes one flat JSON object per line to standard output: ``time`` (ISO
8601, UTC), ``level``, ``namespace``, ``message`` (the formatted text) and
the event's own simple fields (``instance``, ``to``, ``error``, ...).
Twisted's own ``jsonFileLogObserver`` writes its internal event format
(nested level objects, flattened-field tables), which shippers parse badly.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import ILogObserver, LogEvent, formatEvent
from zope.interface import implementer

_SIMPLE = (str, int, float, bool, type(None))


@implementer(ILogObserver)
class JSONLinesObserver:
    """Writes each event as one JSON line."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def __call__(self, event: LogEvent) -> None:
        level = event.get("log_level")
        record: dict[str, Any] = {
            "time": datetime.fromtimestamp(event.get("log_time", 0), UTC).isoformat(),
            "level": getattr(level, "name", "info"),
            "namespace": event.get("log_namespace"),
            "message": formatEvent(event),
        }
        failure = event.get("log_failure")
        if failure is not None:
            record["traceback"] = failure.getTraceback()
        for key, value in event.items():
            if not key.startswith("log_") and isinstance(value, _SIMPLE):
                record.setdefault(key, value)
        self._out.write(json.dumps(record) + "\n")
        self._out.flush()


def json_observer() -> ILogObserver:
    """A log observer factory for twistd's ``--logger`` option."""
    return JSONLinesObserver(sys.stdout)

"""
Log output: text or JSON lines, filtered by level.

    twistd -n --logger=sentinel.logs.json_observer sentinel ...
    twistd -n --logger=sentinel.logs.text_observer sentinel ...

Both write to standard output (never waiting for it: `sentinel.output`)
and drop events below ``SENTINEL_LOG_LEVEL``
(``debug``, ``info``, ``warn``, ``error`` or ``critical``; default
``info``), so periodic housekeeping, logged at debug, stays out of the way
unless asked for. twistd's own default observer shows every level.

The JSON observer writes one flat object per line for log shippers:
``time`` (ISO 8601, UTC), ``level``, ``namespace``, ``message`` (the
formatted text) and the event's own simple fields (``instance``, ``to``,
``error``, ...). Twisted's own ``jsonFileLogObserver`` writes its internal
event format (nested level objects, flattened-field tables), which shippers
parse badly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    InvalidLogLevelError,
    LogEvent,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    textFileLogObserver,
)
from zope.interface import implementer

from sentinel.output import standard_output

LEVEL_VARIABLE = "SENTINEL_LOG_LEVEL"
DEFAULT_LEVEL: LogLevel = LogLevel.info

_SIMPLE = (str, int, float, bool, type(None))


def json_line(event: LogEvent) -> str:
    """`event` as one JSON line (the module docstring says which fields)."""
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
    return json.dumps(record) + "\n"


@implementer(ILogObserver)
class JSONLinesObserver:
    """Writes each event as one JSON line."""

    def __init__(self, out: IO[str]) -> None:
        self._out = out

    def __call__(self, event: LogEvent) -> None:
        self._out.write(json_line(event))
        self._out.flush()


def level_from(environ: Mapping[str, str]) -> LogLevel:
    """
    The lowest level to show, from ``SENTINEL_LOG_LEVEL`` in `environ`.

    @raise SystemExit: with one line, for a name that is not a level.
    """
    return level_named(environ.get(LEVEL_VARIABLE, ""), LEVEL_VARIABLE)


def level_named(text: str, label: str) -> LogLevel:
    """
    The level `text` names (the default if blank; ``warning`` is
    ``warn``), as given in `label`.

    @raise SystemExit: with one line naming `label`, for a name that is
        not a level.
    """
    name = text.strip().lower()
    if not name:
        return DEFAULT_LEVEL
    if name == "warning":
        name = "warn"
    try:
        level: LogLevel = LogLevel.levelWithName(name)
    except InvalidLogLevelError:
        names = ", ".join(level.name for level in LogLevel.iterconstants())
        raise SystemExit(
            f"sentinel: {label}: {name!r} is not a log level ({names})"
        ) from None
    return level


def filtered(observer: ILogObserver, level: LogLevel) -> ILogObserver:
    """`observer`, shown only events at `level` or above."""
    return FilteringLogObserver(
        observer, [LogLevelFilterPredicate(defaultLogLevel=level)]
    )


def json_observer() -> ILogObserver:
    """JSON lines on standard output (a factory for twistd's ``--logger``)."""
    out = standard_output(json_line)
    return filtered(JSONLinesObserver(out), level_from(os.environ))


def text_observer() -> ILogObserver:
    """twistd's text lines on standard output, filtered by level."""
    out = standard_output()
    return filtered(textFileLogObserver(out), level_from(os.environ))

"""
What ``leave.py --trace-out PREFIX`` recorded, as one timeline per instance.

For each traced instance (a few of the frozen redis-server's): every write
of its verdict node and of each observer's opinion, from 3 s before the
freeze on, in seconds from the freeze: when the reader saw it, ZooKeeper's
mtime, whose it is, and what it said (an opinion's status, whether it was
``settled`` and when its check was; a verdict's status, primary,
observers, ``uncounted`` and ``checked_at``/``since``). Run as::

    .venv/bin/python benchmarks/leavetrace.py PREFIX-0.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from typing import Any

# Seconds before the freeze from which writes are shown.
SHOWN_FROM = -3.0


def line(event: dict[str, Any], cut: float) -> str:
    """One write (or a node gone), as the timeline shows it."""
    parts = event["path"].split("/")
    whose = parts[-1] if parts[2] == "opinions" else "VERDICT"
    seen = event["at"] - cut
    data = event.get("data")
    if data is None:
        return f"  seen {seen:6.2f}                {whose:8s} gone"
    if not isinstance(data, dict):
        return f"  seen {seen:6.2f}                {whose:8s} {data}"

    def at(field: str) -> str:
        value = data.get(field)
        return "-" if not isinstance(value, (int, float)) else f"{value - cut:.2f}"

    if whose == "VERDICT":
        said = (
            f"{data.get('status')} by {data.get('agent')} "
            f"observers={data.get('observers')} uncounted={data.get('uncounted')} "
            f"checked {at('checked_at')} since {at('since')}"
        )
    else:
        said = (
            f"{data.get('status')} settled={data.get('settled')} "
            f"checked {at('checked_at')}"
        )
    return f"  seen {seen:6.2f} mtime {event['mtime'] - cut:6.2f} {whose:8s} {said}"


def main() -> int:
    document = json.loads(open(sys.argv[1]).read())
    cut = document["cut"][0]
    by_instance: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in document["events"]:
        by_instance[event["path"].split("/")[3]].append(event)
    for name, events in sorted(by_instance.items()):
        print(name)
        for event in sorted(events, key=lambda e: e["at"]):
            if event["at"] - cut >= SHOWN_FROM:
                print(line(event, cut))
    return 0


if __name__ == "__main__":
    sys.exit(main())

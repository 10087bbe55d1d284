"""
What ``leave.py --trace-out PREFIX`` recorded, as one timeline per instance.

For each traced instance (a few of the frozen redis-server's): every write
of its verdict node and of each observer's opinion, from 3 s before the
freeze on, in seconds from the freeze: when the reader saw it, ZooKeeper's
mtime, whose it is, and what it said (an opinion's status, whether it was
``settled`` and when its check was; a verdict's status, primary,
observers, ``uncounted`` and ``checked_at``/``since``). Then, for each
change of an observer's opinion in that time, how long until a verdict
of another agent (its primary) named it (ZooKeeper's mtimes): how late
the primary read the changed opinion, p50 and max, and how many no
verdict ever named. Run as::

    .venv/bin/python benchmarks/leavetrace.py PREFIX-0.json

With ``leave.py --trace-all`` (every instance's verdict node traced), also
the view change itself, from the signal: for each instance the leaver was
the primary of ("took") or an observer of ("observers changed"), when the
first verdict of its new view was written (by a survivor, naming no
leaver, every observer's opinion said: not null), and the verdicts
written meanwhile that carried the previous primary's (written by a
survivor, still naming the leaver among their observers): until when,
and for how long each node said it (from its first such write to the
survivor's own verdict).
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


def heard_after(events: list[dict[str, Any]], cut: float) -> list[float | None]:
    """
    For each change of an observer's opinion from `SHOWN_FROM` on, seconds
    from its write until the first verdict written that names it, by
    another agent (its primary read it), or None if none named it.
    """
    writes = sorted(
        (e for e in events if isinstance(e.get("data"), dict)),
        key=lambda e: e["mtime"],
    )
    said: dict[str, Any] = {}
    delays: list[float | None] = []
    for event in writes:
        parts = event["path"].split("/")
        if parts[2] != "opinions":
            continue
        agent, status = parts[-1], event["data"].get("status")
        if said.get(agent, status) != status and event["mtime"] - cut >= SHOWN_FROM:
            verdict = next(
                (
                    v
                    for v in writes
                    if v["path"].split("/")[2] != "opinions"
                    and v["mtime"] >= event["mtime"]
                    and (v["data"].get("observers") or {}).get(agent) == status
                ),
                None,
            )
            if verdict is None:
                delays.append(None)
            elif verdict["data"].get("agent") != agent:
                # Its primary's own opinion is no read: left out.
                delays.append(verdict["mtime"] - event["mtime"])
        said[agent] = status
    return delays


def quantiles(values: list[float]) -> str:
    """p50, p90, p99 and max of `values`, or a dash."""
    if not values:
        return "-"
    ordered = sorted(values)

    def at(share: float) -> float:
        return ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    return f"{at(0.5):.2f} / {at(0.9):.2f} / {at(0.99):.2f} / {ordered[-1]:.2f}"


def rewrites(document: dict[str, Any]) -> str:
    """
    The verdict writes seen from the signal on, and of those the ones
    that set exactly what the node held: the next version of the same
    session's node, with the same data. A data watch reads the node after
    each event, so writes close together are seen as one (counted by
    their versions, when the previous one was seen).
    """
    signal = document.get("signal")
    if signal is None:
        return "verdict writes: no signal"
    by_path: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in document["events"]:
        parts = event["path"].split("/")
        if parts[2] == "instances" and "version" in event:
            by_path[event["path"]].append(event)
    seen = alike = 0
    for events in by_path.values():
        events.sort(key=lambda e: (e["mtime"], e["version"]))
        for before, event in zip(events, events[1:], strict=False):
            if event["mtime"] < signal:
                continue
            if event["owner"] == before["owner"]:
                seen += max(1, event["version"] - before["version"])
            else:
                seen += 1
            if (
                event["owner"] == before["owner"]
                and event["version"] == before["version"] + 1
                and event["data"] == before["data"]
            ):
                alike += 1
    return (
        f"verdict writes from the signal on: {seen} seen, {alike} of them "
        "setting exactly what the node held"
    )


def view_change(document: dict[str, Any], leaver: str = "agent-0") -> list[str]:
    """
    The view change's verdicts, from the signal (module docstring): by
    kind of move, how many, when the first verdict of the new view was
    written (p50 / p90 / max), how many had none, and the carried ones.
    """
    signal = document.get("signal")
    if signal is None:
        return []
    verdicts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in document["events"]:
        parts = event["path"].split("/")
        if parts[2] == "instances" and isinstance(event.get("data"), dict):
            verdicts[parts[3]].append(event)
    found: dict[str, tuple[list[float], int, list[float], int, int]] = {}
    # How long each node said a carried verdict, and how many still did.
    lasted: list[float] = []
    unreplaced = 0
    for writes in verdicts.values():
        writes.sort(key=lambda e: e["mtime"])
        before = [e for e in writes if e["mtime"] < signal]
        if not before:
            continue
        last = before[-1]["data"]
        observers = last.get("observers") or {}
        if last.get("agent") == leaver:
            kind = "took"
            if any(a != leaver for a in observers):
                kind += " (an observer before)"
        elif leaver in observers:
            kind = "observers changed"
        else:
            continue
        firsts, never, carried, carrying, said = found.setdefault(
            kind, ([], 0, [], 0, 0)
        )
        after = [e for e in writes if e["mtime"] >= signal]
        new = next(
            (
                e
                for e in after
                if e["data"].get("agent") != leaver
                and leaver not in (e["data"].get("observers") or {})
                and None not in (e["data"].get("observers") or {}).values()
            ),
            None,
        )
        if new is None:
            never += 1
        else:
            firsts.append(new["mtime"] - signal)
        held = [
            e
            for e in after
            if e["data"].get("agent") != leaver
            and leaver in (e["data"].get("observers") or {})
        ]
        if held:
            carried.append(held[-1]["mtime"] - signal)
            carrying += 1
            said += all(e["data"].get("carried_from") == leaver for e in held)
            own = next(
                (
                    e
                    for e in after
                    if e["mtime"] > held[0]["mtime"]
                    and e["data"].get("agent") != leaver
                    and leaver not in (e["data"].get("observers") or {})
                ),
                None,
            )
            if own is None:
                unreplaced += 1
            else:
                lasted.append(own["mtime"] - held[0]["mtime"])
        found[kind] = (firsts, never, carried, carrying, said)
    lines = ["view change, from the signal (s): first verdict of the new view"]
    for kind, (firsts, never, carried, carrying, said) in sorted(found.items()):
        lines.append(
            f"  {kind}: {len(firsts) + never} instances; first of the new view "
            f"p50/p90/p99/max {quantiles(firsts)}, none {never}; carried by a "
            f"survivor: {carrying} (saying carried_from: {said}), its last "
            f"carried write p50/p90/p99/max {quantiles(carried)}"
        )
    lines.append(
        "  carried, from the first such write to the survivor's own: "
        f"p50/p90/p99/max {quantiles(lasted)}; still carried at the end: {unreplaced}"
    )
    return lines


def main() -> int:
    document = json.loads(open(sys.argv[1]).read())
    cut = document["cut"][0]
    by_instance: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in document["events"]:
        by_instance[event["path"].split("/")[3]].append(event)
    delays: list[float | None] = []
    for name, events in sorted(by_instance.items()):
        if not any(e["path"].split("/")[2] == "opinions" for e in events):
            continue  # Its verdict alone (--trace-all): in the summary.
        print(name)
        for event in sorted(events, key=lambda e: e["at"]):
            if event["at"] - cut >= SHOWN_FROM:
                print(line(event, cut))
        delays += heard_after(events, cut)
    heard = sorted(d for d in delays if d is not None)
    if heard:
        print(
            f"opinion changes named by a verdict: {len(heard)}, p50 "
            f"{heard[len(heard) // 2]:.2f} s, max {heard[-1]:.2f} s after their write;"
            f" never named: {len(delays) - len(heard)}"
        )
    else:
        print(f"opinion changes named by a verdict: none of {len(delays)}")
    for summary in view_change(document):
        print(summary)
    print(rewrites(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())

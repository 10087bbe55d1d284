"""
The HTML status page behind ``GET /``: data in, one HTML string out.

It renders the same documents as ``/instances`` (plus each instance's recent
checks from `sentinel.history`) so the page and the JSON never disagree. It
is self-contained (inline CSS and SVG, no script, no external assets) so it
works offline and behind any proxy, refreshes itself, and is sorted on the
server through ``?sort=``. Every value that came from outside (names, hosts,
errors) is escaped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from html import escape
from typing import Any
from urllib.parse import quote

import attr

from sentinel.history import SIZE, Point

REFRESH_SECONDS = 2

# Row classes, one per state; CSS colours them.
UP = "up"
NOT_READY = "notready"
DOWN = "down"
UNKNOWN = "unknown"

_LABELS = {UP: "up", NOT_READY: "not ready", DOWN: "down", UNKNOWN: "unknown"}
# Down first, then not ready, then not yet decided, then up.
_RANK = {DOWN: 0, NOT_READY: 1, UNKNOWN: 2, UP: 3}

# Sparkline geometry, in pixels: one slot per remembered check.
SPARK_WIDTH = 180
SPARK_HEIGHT = 26
_PAD = 3
# Latencies below this fill no more than the whole height: sub-millisecond
# jitter on a healthy instance should look flat, not alarming.
_SCALE_FLOOR_MS = 1.0


@attr.frozen
class Header:
    """What the page says about the agent itself."""

    agent_id: str
    pending: int
    ticks: int
    overruns: int
    interval: float


def state_class(doc: Mapping[str, Any]) -> str:
    """The row class of an instance document: up, notready, down or unknown."""
    status = doc.get("status")
    if status == "down":
        return DOWN
    if status == "up":
        return UP if doc.get("ready") else NOT_READY
    return UNKNOWN


def _by_status(doc: Mapping[str, Any]) -> tuple[int, str]:
    return (_RANK[state_class(doc)], str(doc["name"]))


def _by_name(doc: Mapping[str, Any]) -> tuple[int, str]:
    return (0, str(doc["name"]))


def _by_latency(doc: Mapping[str, Any]) -> tuple[int, float, str]:
    latency = doc.get("latency_ms")
    if latency is None:
        return (1, 0.0, str(doc["name"]))
    return (0, -float(latency), str(doc["name"]))


SORTS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "status": _by_status,
    "name": _by_name,
    "latency": _by_latency,
}
DEFAULT_SORT = "status"


def sort_instances(
    docs: Sequence[Mapping[str, Any]], sort: str
) -> list[Mapping[str, Any]]:
    """
    Order instance documents for the page: ``status`` (the default, also for
    an unknown value) puts down first, then not ready, then by name; ``name``
    by name; ``latency`` slowest first.
    """
    return sorted(docs, key=SORTS.get(sort, SORTS[DEFAULT_SORT]))


# Small formatters


def ago(seconds: float) -> str:
    """A duration as people say it: ``12s ago``, ``3m ago``, ``5h ago``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{int(seconds)}s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)}m ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h ago"
    return f"{int(seconds // 86400)}d ago"


def absolute(epoch: float) -> str:
    """An epoch time as UTC, to the second."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def milliseconds(value: float | None) -> str:
    """A latency with the precision that matters at its size."""
    if value is None:
        return "—"
    if value < 10:
        return f"{value:.2f} ms"
    if value < 100:
        return f"{value:.1f} ms"
    return f"{value:.0f} ms"


def _e(value: object) -> str:
    return escape(str(value), quote=True)


# The sparkline


def sparkline(points: Sequence[Point], size: int = SIZE) -> str:
    """
    An inline SVG of recent latencies, newest at the right: a line through
    the successful checks (broken where checks failed) and a red tick for
    each failed one. Its title gives the numbers.
    """
    step = SPARK_WIDTH / size
    points = points[-size:]
    first_slot = size - len(points)
    latencies = [p[0] for p in points if p[1] and p[0] is not None]
    scale = max([_SCALE_FLOOR_MS, *latencies])
    span = SPARK_HEIGHT - 2 * _PAD
    path: list[str] = []
    ticks: list[str] = []
    drawing = False
    for i, (latency, ok) in enumerate(points):
        x = (first_slot + i + 0.5) * step
        if not ok or latency is None:
            if not ok:
                ticks.append(
                    f'<line class="fail" x1="{x:.1f}" y1="1" '
                    f'x2="{x:.1f}" y2="{SPARK_HEIGHT - 1}"/>'
                )
            drawing = False
            continue
        y = SPARK_HEIGHT - _PAD - latency / scale * span
        path.append(f"{'L' if drawing else 'M'}{x:.1f},{y:.1f}")
        drawing = True
    failed = len(points) - len([p for p in points if p[1]])
    if latencies:
        ordered = sorted(latencies)
        title = (
            f"last {len(points)} checks, {failed} failed; latency min "
            f"{milliseconds(ordered[0])}, median "
            f"{milliseconds(ordered[len(ordered) // 2])}, max "
            f"{milliseconds(ordered[-1])}"
        )
    else:
        title = f"last {len(points)} checks, {failed} failed"
    line = f'<path class="lat" d="{"".join(path)}"/>' if path else ""
    return (
        f'<svg class="spark" width="{SPARK_WIDTH}" height="{SPARK_HEIGHT}" '
        f'viewBox="0 0 {SPARK_WIDTH} {SPARK_HEIGHT}" role="img">'
        f"<title>{_e(title)}</title>"
        f'<line class="base" x1="0" y1="{SPARK_HEIGHT - _PAD}" '
        f'x2="{SPARK_WIDTH}" y2="{SPARK_HEIGHT - _PAD}"/>'
        f"{''.join(ticks)}{line}</svg>"
    )


# The page


def _row(doc: Mapping[str, Any], points: Sequence[Point], now: float) -> str:
    state = state_class(doc)
    name = str(doc["name"])
    counts = (
        f"{doc.get('consecutive_successes', 0)} ok / "
        f"{doc.get('consecutive_failures', 0)} failed in a row; "
        f"{doc.get('failures', 0)} of {doc.get('checks', 0)} checks failed"
    )
    role = doc.get("role") or ""
    if role == "slave" and doc.get("master_host"):
        link = doc.get("master_link_status") or "?"
        role_cell = (
            f"{_e(role)} <small>of {_e(doc['master_host'])}:"
            f"{_e(doc.get('master_port'))} (link {_e(link)})</small>"
        )
    else:
        role_cell = _e(role) if role else '<span class="none">—</span>'
    since = doc.get("since")
    if since is None:
        since_cell = '<td class="since"><span class="none">—</span></td>'
    else:
        since_cell = (
            f'<td class="since" title="{_e(absolute(since))}">'
            f"{_e(ago(now - since))}</td>"
        )
    error = doc.get("error")
    error_cell = (
        f'<td class="error" title="{_e(error)}">{_e(error)}</td>'
        if error
        else '<td class="error"></td>'
    )
    return (
        f'<tr class="{state}" data-name="{_e(name)}">'
        f'<td class="name"><a href="/instances/{_e(quote(name, safe=""))}">'
        f"{_e(name)}</a></td>"
        f'<td class="addr">{_e(doc.get("host"))}:{_e(doc.get("port"))}</td>'
        f'<td class="status"><span class="pill" title="{_e(counts)}">'
        f"{_LABELS[state]}</span></td>"
        f'<td class="role">{role_cell}</td>'
        f'<td class="num">{_e(milliseconds(doc.get("latency_ms")))}</td>'
        f'<td class="spark">{sparkline(points)}</td>'
        f"{since_cell}{error_cell}</tr>"
    )


def _zookeeper(stats: Mapping[str, Any] | None) -> str:
    if stats is None:
        return '<span class="fact">ZooKeeper: <b>not configured</b></span>'
    state = str(stats.get("state", "unknown"))
    colour = {"connected": UP, "connecting": NOT_READY, "suspended": NOT_READY}.get(
        state, DOWN
    )
    queued = stats.get("writes_queued", 0)
    text = (
        f'<span class="fact">ZooKeeper: <span class="badge {colour}">{_e(state)}'
        f"</span> · {_e(queued)} write{'' if queued == 1 else 's'} queued"
    )
    if stats.get("last_error") and state != "connected":
        text += f' <span class="error">({_e(stats["last_error"])})</span>'
    return text + "</span>"


def _sort_link(label: str, sort: str, current: str) -> str:
    mark = " ▾" if sort == current else ""
    css = ' class="sorted"' if sort == current else ""
    return f'<a href="/?sort={sort}"{css}>{label}{mark}</a>'


def render_page(
    header: Header,
    instances: Sequence[Mapping[str, Any]],
    history: Callable[[str], Sequence[Point]],
    zookeeper: Mapping[str, Any] | None,
    now: float,
    sort: str = DEFAULT_SORT,
) -> str:
    """
    The whole page: `instances` are ``/instances`` documents, `history`
    gives an instance's recent checks by name, `zookeeper` the publisher's
    stats (None without ZooKeeper), `now` the epoch time of rendering.
    """
    if sort not in SORTS:
        sort = DEFAULT_SORT
    ordered = sort_instances(instances, sort)
    counts = {UP: 0, NOT_READY: 0, DOWN: 0, UNKNOWN: 0}
    for doc in instances:
        counts[state_class(doc)] += 1
    summary = " · ".join(
        f'<span class="count {state}">{counts[state]} {_LABELS[state]}</span>'
        for state in (UP, NOT_READY, DOWN, UNKNOWN)
        if counts[state] or state in (UP, DOWN)
    )
    rows = "\n".join(_row(doc, history(str(doc["name"])), now) for doc in ordered)
    if not rows:
        rows = '<tr><td colspan="8" class="none">No instances are watched.</td></tr>'
    facts = (
        f'<span class="fact">{len(instances)} instance'
        f"{'' if len(instances) == 1 else 's'}: {summary}</span>"
        f'<span class="fact"><a href="/pending">pending checks: '
        f"{header.pending}</a></span>"
        f'<span class="fact">ticks {header.ticks} · overruns '
        f"{header.overruns} · every {header.interval:g} s</span>"
        f"{_zookeeper(zookeeper)}"
    )
    return _PAGE.format(
        refresh=REFRESH_SECONDS,
        agent=_e(header.agent_id),
        facts=facts,
        name=_sort_link("name", "name", sort),
        status=_sort_link("status", "status", sort),
        latency=_sort_link("latency", "latency", sort),
        size=SIZE,
        rows=rows,
        updated=_e(absolute(now)),
    )


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{refresh}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sentinel · {agent}</title>
<style>
:root {{ --up: #1f9d55; --notready: #d89b00; --down: #d64545;
  --unknown: #9aa0a6; --ink: #1d2330; --muted: #6b7280; --line: #e5e7eb; }}
body {{ font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--ink); background: #f5f6f8; margin: 0; padding: 16px 20px; }}
a {{ color: #2f5fb3; text-decoration: none; }}
a:hover {{ text-decoration: underline; }}
header {{ display: flex; flex-wrap: wrap; align-items: baseline; gap: 6px 18px;
  margin-bottom: 12px; }}
h1 {{ font-size: 20px; margin: 0 8px 0 0; }}
h1 .agent {{ font-weight: normal; color: var(--muted); }}
.fact {{ white-space: nowrap; }}
.count.up {{ color: var(--up); }} .count.notready {{ color: var(--notready); }}
.count.down {{ color: var(--down); }} .count.unknown {{ color: var(--muted); }}
.count {{ font-weight: 600; }}
.badge {{ padding: 1px 7px; border-radius: 9px; color: #fff; font-weight: 600; }}
.badge.up {{ background: var(--up); }}
.badge.notready {{ background: var(--notready); }}
.badge.down {{ background: var(--down); }}
table {{ border-collapse: collapse; width: 100%; background: #fff;
  box-shadow: 0 1px 2px rgba(0,0,0,.08); border-radius: 6px; }}
th, td {{ padding: 5px 10px; text-align: left; border-bottom: 1px solid var(--line);
  vertical-align: middle; }}
th {{ font-size: 12px; text-transform: uppercase; letter-spacing: .04em;
  color: var(--muted); background: #fafbfc; }}
th a {{ color: inherit; }} th a.sorted {{ color: var(--ink); }}
tr:hover td {{ background: #f9fafb; }}
td.name {{ font-weight: 600; border-left: 4px solid var(--unknown); }}
tr.up td.name {{ border-left-color: var(--up); }}
tr.notready td.name {{ border-left-color: var(--notready); }}
tr.down td.name {{ border-left-color: var(--down); }}
td.addr, td.num {{ font-family: ui-monospace, Menlo, Consolas, monospace;
  font-size: 13px; }}
td.num {{ text-align: right; white-space: nowrap; }}
.pill {{ display: inline-block; min-width: 64px; text-align: center;
  padding: 1px 8px; border-radius: 10px; color: #fff; font-weight: 600;
  background: var(--unknown); }}
tr.up .pill {{ background: var(--up); }}
tr.notready .pill {{ background: var(--notready); color: #1d2330; }}
tr.down .pill {{ background: var(--down); }}
td.spark {{ padding-top: 2px; padding-bottom: 0; }}
svg.spark .lat {{ fill: none; stroke: #3b6fd8; stroke-width: 1.5;
  stroke-linejoin: round; stroke-linecap: round; }}
svg.spark .base {{ stroke: var(--line); stroke-width: 1; }}
svg.spark .fail {{ stroke: var(--down); stroke-width: 2; }}
td.since {{ white-space: nowrap; color: var(--muted); }}
td.error {{ color: var(--down); max-width: 320px; overflow: hidden;
  text-overflow: ellipsis; white-space: nowrap; }}
.none {{ color: var(--muted); }}
footer {{ margin-top: 10px; color: var(--muted); font-size: 12px; }}
</style></head>
<body>
<header><h1>sentinel <span class="agent">{agent}</span></h1>{facts}</header>
<table>
<thead><tr><th>{name}</th><th>address</th><th>{status}</th><th>role</th>
<th>{latency}</th><th>last {size} checks</th><th>since</th><th>last error</th></tr>
</thead>
<tbody>
{rows}
</tbody></table>
<footer>Updated {updated}; refreshes every {refresh} s. JSON:
<a href="/instances">/instances</a> · <a href="/pending">/pending</a> ·
<a href="/healthz">/healthz</a> · <a href="/debug/stats">/debug/stats</a></footer>
</body></html>
"""

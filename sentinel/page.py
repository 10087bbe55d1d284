"""
The HTML status page behind ``GET /``: problems first, a page at a time.

Above the rows: the agent, how many instances are in each state (each
linked to its ``/instances?status=`` list), pending checks, ticks and
ZooKeeper. Then `sentinel.overview.PAGE_ROWS` rows at most, down, not
ready and unknown instances before the up ones in every order, with links
to the other pages. Each row shows the same document as ``/instances``
(and the instance's recent checks from `sentinel.history`), so the page and
the JSON never disagree, and is keyed by the instance's name
(``data-name``). The page is self-contained (inline CSS, SVG and a small script, nothing
loaded from elsewhere), works offline and behind any proxy, and refreshes
itself: a script fetches it again and changes only the rows and parts that
changed, and without scripts the browser reloads it.

Everything is built as twisted.web.template tags, so every value that came
from outside (names, hosts, errors) is text, never markup, and serialized
by `sentinel.markup`. The frame (everything but the rows) is one piece, the
rows another, so that the web layer writes the rows in slices.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

import attr
from twisted.web.template import Tag, tags

from sentinel.history import SIZE, Point
from sentinel.markup import ROWS, Node, frame, html
from sentinel.overview import (
    DEFAULT_SORT,
    DOWN,
    LABELS,
    NOT_READY,
    PAGE_ROWS,
    STATES,
    UNKNOWN,
    UP,
    state_class,
)

REFRESH_SECONDS = 2
# About 70 µs a row: 1.5 ms a slice.
ROWS_PER_SLICE = 20
DOCTYPE = b"<!DOCTYPE html>\n"

# The ``?status=`` of /instances that lists the instances of a row class.
_STATUS_FILTER = {UP: "up", NOT_READY: "up", DOWN: "down", UNKNOWN: "unknown"}

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


@attr.frozen
class Paging:
    """Which page this is, of how many, in which order."""

    sort: str = DEFAULT_SORT
    page: int = 1
    pages: int = 1

    def link(self, page: int | None = None, sort: str | None = None) -> str:
        """The page's own URL, for another page number or order."""
        query = {"sort": sort or self.sort, "page": str(page or self.page)}
        if query["sort"] == DEFAULT_SORT:
            del query["sort"]
        if query["page"] == "1":
            del query["page"]
        return "/" + ("?" + urlencode(query) if query else "")


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


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


# The sparkline


def _slots(size: int) -> tuple[str, ...]:
    """The x coordinate of each of `size` slots, formatted once."""
    slots = _SLOTS.get(size)
    if slots is None:
        step = SPARK_WIDTH / size
        slots = _SLOTS[size] = tuple(f"{(i + 0.5) * step:.1f}" for i in range(size))
    return slots


_SLOTS: dict[int, tuple[str, ...]] = {}


def sparkline(points: Sequence[Point], size: int = SIZE) -> Tag:
    """
    An inline SVG of recent latencies, newest at the right: a line through
    the successful checks (broken where checks failed) and a red tick for
    each failed one. Its title gives the numbers.
    """
    points = points[-size:]
    latencies = [p[0] for p in points if p[1] and p[0] is not None]
    bottom = SPARK_HEIGHT - _PAD
    height = (SPARK_HEIGHT - 2 * _PAD) / max([_SCALE_FLOOR_MS, *latencies])
    line: list[str] = []
    fails: list[str] = []
    move = "M"
    for x, (latency, ok) in zip(
        _slots(size)[size - len(points) :], points, strict=True
    ):
        if ok and latency is not None:
            line.append(f"{move}{x},{bottom - latency * height:.1f}")
            move = "L"
        else:
            if not ok:
                fails.append(f"M{x},1V{SPARK_HEIGHT - 1}")
            move = "M"
    title = f"last {len(points)} checks, {len(fails)} failed"
    if latencies:
        latencies.sort()
        title += (
            f"; latency min {milliseconds(latencies[0])}, median "
            f"{milliseconds(latencies[len(latencies) // 2])}, max "
            f"{milliseconds(latencies[-1])}"
        )
    paths = [_BASELINE]
    if fails:
        paths.append(Tag("path", {"class": "fail", "d": "".join(fails)}))
    if line:
        paths.append(Tag("path", {"class": "lat", "d": "".join(line)}))
    return Tag("svg", dict(_SVG), [Tag("title", children=[title]), *paths])


_SVG: dict[str | bytes, Node] = {
    "class": "spark",
    "width": str(SPARK_WIDTH),
    "height": str(SPARK_HEIGHT),
    "viewBox": f"0 0 {SPARK_WIDTH} {SPARK_HEIGHT}",
    "role": "img",
}
# Never changed once built: every sparkline shares it.
_BASELINE = Tag(
    "path",
    {"class": "base", "d": f"M0,{SPARK_HEIGHT - _PAD}H{SPARK_WIDTH}"},
)


# Rows


# A row is built with `Tag(name, attributes, children)` rather than
# ``tags.td(...)``: the same tree at half the cost, a row being the one part
# of the page made thousands of times.


def _cell(css: str, *children: Node, **attributes: str) -> Tag:
    cell: dict[str | bytes, Node] = {"class": css}
    cell.update(attributes)
    return Tag("td", cell, list(children))


_NONE = Tag("span", {"class": "none"}, ["—"])


def _role(doc: Mapping[str, Any]) -> Node:
    role = _role_said(doc)
    if doc.get("hello_off_until") is None:
        return role
    # HELLO went unanswered and is off: the role is INFO's, read each check.
    return [role, " ", Tag("small", children=["HELLO off"])]


def _role_said(doc: Mapping[str, Any]) -> Node:
    role = doc.get("role")
    if not role:
        return _NONE
    if role == "slave" and doc.get("master_host"):
        link = doc.get("master_link_status") or "?"
        where = f"{doc['master_host']}:{doc.get('master_port')}"
        return [str(role), " ", Tag("small", children=[f"of {where} (link {link})"])]
    return str(role)


def row(doc: Mapping[str, Any], points: Sequence[Point], now: float) -> Tag:
    """One instance's row, from its ``/instances`` document."""
    state = state_class(doc.get("status"), bool(doc.get("ready")))
    name = str(doc["name"])
    counts = (
        f"{doc.get('consecutive_successes', 0)} ok / "
        f"{doc.get('consecutive_failures', 0)} failed in a row; "
        f"{doc.get('failures', 0)} of {doc.get('checks', 0)} checks failed"
    )
    since = doc.get("since")
    if since is None:
        since_cell = _cell("since", _NONE)
    else:
        since_cell = _cell("since", ago(now - since), title=absolute(since))
    error = doc.get("error")
    unjudged_since = doc.get("unjudged_since")
    if error:
        error_cell = _cell("error", str(error), title=str(error))
    elif unjudged_since is not None:
        # Its checks say nothing lately (`sentinel.freshness`): for how
        # long and why, where an error would be.
        why = doc.get("unjudged_reason") or "unknown"
        said = f"unjudged since {ago(now - unjudged_since)}: {why}"
        error_cell = _cell("error unjudged", said, title=said)
    else:
        error_cell = _cell("error")
    link: Any = Tag("a", {"href": "/instances/" + quote(name, safe="")}, [name])
    discovered_by = doc.get("discovered_by")
    if discovered_by:
        # Found from its master's INFO, not configured: say from which.
        link = [link, " ", Tag("small", children=[f"via {discovered_by}"])]
    pill = Tag("span", {"class": "pill", "title": counts}, [LABELS[state]])
    return Tag(
        "tr",
        {"class": state, "data-name": name},
        [
            _cell("name", link),
            _cell("addr", f"{doc.get('host')}:{doc.get('port')}"),
            _cell("status", pill),
            _cell("role", _role(doc)),
            _cell("num", milliseconds(doc.get("latency_ms"))),
            _cell("spark", sparkline(points)),
            since_cell,
            error_cell,
        ],
    )


def rows(
    docs: Sequence[Mapping[str, Any]],
    history: Callable[[str], Sequence[Point]],
    now: float,
) -> bytes:
    """The rows of `docs` (``/instances`` documents), in their order, as HTML."""
    return html([[row(doc, history(str(doc["name"])), now), "\n"] for doc in docs])


NO_ROWS = html(
    tags.tr(tags.td("No instances are watched.", colspan="8", class_="none"))
)


# The frame


def _zookeeper(stats: Mapping[str, Any] | None) -> Tag:
    if stats is None:
        return tags.span("ZooKeeper: ", tags.b("not configured"), class_="fact")
    state = str(stats.get("state", "unknown"))
    colour = {"connected": UP, "connecting": NOT_READY, "suspended": NOT_READY}.get(
        state, DOWN
    )
    queued = int(stats.get("writes_queued", 0))
    # Nodes whose writes keep failing while connected: their status is stale.
    failing = int(stats.get("writes_failing", 0))
    error: Node = []
    if stats.get("last_error") and (state != "connected" or failing):
        error = [" ", tags.span(f"({stats['last_error']})", class_="error")]
    return tags.span(
        "ZooKeeper: ",
        tags.span(state, class_=f"badge {colour}"),
        f" · {_plural(queued, 'write')} queued",
        [" · ", tags.span(f"{failing} failing", class_="error")] if failing else [],
        error,
        class_="fact",
    )


def _group(stats: Mapping[str, Any] | None) -> Node:
    """The agent's group, when it has one: members and this agent's share."""
    group = None if stats is None else stats.get("group_summary")
    if not group:
        return []
    return tags.span(
        tags.a("group", href="/group"),
        f": {_plural(int(group['members']), 'agent')} · observing "
        f"{group['observing']} of {group['known']} · primary of {group['primary']}",
        # Before the first view it checks everything and publishes nothing.
        " · provisional: publishing none" if group.get("provisional") else "",
        class_="fact",
    )


def _counts(counts: Mapping[str, int]) -> Tag:
    total = sum(counts.values())
    shown = [s for s in (UP, NOT_READY, DOWN, UNKNOWN) if counts[s] or s in (UP, DOWN)]
    parts: list[Node] = []
    for state in shown:
        if parts:
            parts.append(" · ")
        text = f"{counts[state]} {LABELS[state]}"
        link = f"/instances?status={_STATUS_FILTER[state]}"
        parts.append(tags.a(text, href=link, class_=f"count {state}"))
    return tags.span(f"{_plural(total, 'instance')}: ", parts, class_="fact")


def _sort_link(label: str, sort: str, paging: Paging) -> Tag:
    if sort == paging.sort:
        return tags.a(f"{label} ▾", href=paging.link(1, sort), class_="sorted")
    return tags.a(label, href=paging.link(1, sort))


def _pages(paging: Paging, counts: Mapping[str, int]) -> Node:
    if paging.pages == 1:
        return []
    total = sum(counts.values())
    first = (paging.page - 1) * PAGE_ROWS + 1
    last = min(total, paging.page * PAGE_ROWS)
    problems = total - counts[UP]
    links: list[Node] = [f"rows {first}–{last} of {total}"]
    if problems > PAGE_ROWS:
        links.append(f" (the {_plural(problems, 'problem')} first)")
    if paging.page > 1:
        links += [" · ", tags.a("← first", href=paging.link(1))]
        links += [" · ", tags.a("previous", href=paging.link(paging.page - 1))]
    links.append(f" · page {paging.page} of {paging.pages}")
    if paging.page < paging.pages:
        links += [" · ", tags.a("next →", href=paging.link(paging.page + 1))]
        links += [" · ", tags.a("last", href=paging.link(paging.pages))]
    return tags.nav(links, class_="pages")


def page_frame(
    header: Header,
    counts: Mapping[str, int],
    paging: Paging,
    zookeeper: Mapping[str, Any] | None,
    now: float,
) -> tuple[bytes, bytes]:
    """
    The page around its rows, cut where they go: `counts` of instances by
    row class, `zookeeper` the publisher's stats (None without ZooKeeper),
    `now` the epoch time of rendering.
    """
    if set(counts) != set(STATES):
        raise ValueError(f"counts of {sorted(counts)}, not of {sorted(STATES)}")
    facts = [
        _counts(counts),
        tags.span(
            tags.a(f"pending checks: {header.pending}", href="/pending"), class_="fact"
        ),
        tags.span(
            f"ticks {header.ticks} · overruns {header.overruns} · "
            f"every {header.interval:g} s",
            class_="fact",
        ),
        _zookeeper(zookeeper),
        _group(zookeeper),
    ]
    pages = _pages(paging, counts)
    page = tags.html(
        tags.head(
            tags.meta(charset="utf-8"),
            # Without scripts, the browser reloads the page; with them, the
            # script below updates it in place.
            tags.noscript(
                tags.meta(content=str(REFRESH_SECONDS), **{"http-equiv": "refresh"})
            ),
            tags.meta(name="viewport", content="width=device-width, initial-scale=1"),
            tags.title(f"sentinel · {header.agent_id}"),
            tags.style(_CSS),
        ),
        tags.body(
            tags.header(
                tags.h1("sentinel ", tags.span(header.agent_id, class_="agent")), facts
            ),
            pages,
            tags.table(
                tags.thead(
                    tags.tr(
                        tags.th(_sort_link("name", "name", paging)),
                        tags.th("address"),
                        tags.th(_sort_link("status", "status", paging)),
                        tags.th("role"),
                        tags.th(_sort_link("latency", "latency", paging)),
                        tags.th(f"last {SIZE} checks"),
                        tags.th("since"),
                        tags.th("last error"),
                    )
                ),
                tags.tbody("\n", ROWS),
            ),
            pages,
            tags.footer(
                f"Updated {absolute(now)}; refreshes every {REFRESH_SECONDS} s. JSON: ",
                tags.a("/instances", href="/instances"),
                " · ",
                tags.a("/pending", href="/pending"),
                " · ",
                tags.a("/healthz", href="/healthz"),
                " · ",
                tags.a("/debug/stats", href="/debug/stats"),
            ),
            tags.script(_SCRIPT),
        ),
        lang="en",
    )
    before, after = frame(page)
    return DOCTYPE + before, after + b"\n"


# Every REFRESH_SECONDS, fetch the page again and change only what changed:
# the header, the paging links and the footer when they differ, and the
# rows keyed by name (a row that did not change keeps its element, so the
# page does not flicker or lose a hover). Written without the characters
# that HTML text escapes (less than, greater than, ampersand): the script
# is text of the page's tags like any other. A failed update marks the page
# stale rather than leaving old figures unmarked.
_SCRIPT = """
(function () {
  var every = REFRESH_MS;
  var parts = "header, nav.pages, thead, footer";
  function rows(tbody) {
    var byName = {};
    Array.prototype.forEach.call(tbody.children, function (row) {
      byName[row.getAttribute("data-name")] = row;
    });
    return byName;
  }
  function show(fresh) {
    var olds = document.querySelectorAll(parts);
    var news = fresh.querySelectorAll(parts);
    if (olds.length !== news.length) {
      document.body.replaceWith(fresh.body);
      return;
    }
    Array.prototype.forEach.call(olds, function (old, i) {
      if (!old.isEqualNode(news[i])) old.replaceWith(news[i]);
    });
    var tbody = document.querySelector("tbody");
    var kept = rows(tbody);
    var wanted = Array.prototype.map.call(
      fresh.querySelector("tbody").children,
      function (row) {
        var before = kept[row.getAttribute("data-name")];
        return before !== undefined ? (before.isEqualNode(row) ? before : row) : row;
      }
    );
    tbody.replaceChildren.apply(tbody, wanted);
  }
  function update() {
    fetch(location.href, {cache: "no-store"}).then(function (response) {
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.text();
    }).then(function (text) {
      show(new DOMParser().parseFromString(text, "text/html"));
      document.body.classList.remove("stale");
    }).catch(function () {
      document.body.classList.add("stale");
    }).then(function () {
      setTimeout(update, every);
    });
  }
  setTimeout(update, every);
})();
""".replace("REFRESH_MS", str(REFRESH_SECONDS * 1000))

_CSS = """
:root { --up: #1f9d55; --notready: #d89b00; --down: #d64545;
  --unknown: #9aa0a6; --ink: #1d2330; --muted: #6b7280; --line: #e5e7eb; }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--ink); background: #f5f6f8; margin: 0; padding: 16px 20px; }
a { color: #2f5fb3; text-decoration: none; }
a:hover { text-decoration: underline; }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: 6px 18px;
  margin-bottom: 12px; }
h1 { font-size: 20px; margin: 0 8px 0 0; }
h1 .agent { font-weight: normal; color: var(--muted); }
.fact { white-space: nowrap; }
.count.up { color: var(--up); } .count.notready { color: var(--notready); }
.count.down { color: var(--down); } .count.unknown { color: var(--muted); }
.count { font-weight: 600; }
.badge { padding: 1px 7px; border-radius: 9px; color: #fff; font-weight: 600; }
.badge.up { background: var(--up); }
.badge.notready { background: var(--notready); }
.badge.down { background: var(--down); }
table { border-collapse: collapse; width: 100%; background: #fff;
  box-shadow: 0 1px 2px rgba(0,0,0,.08); border-radius: 6px; }
th, td { padding: 5px 10px; text-align: left; border-bottom: 1px solid var(--line);
  vertical-align: middle; }
th { font-size: 12px; text-transform: uppercase; letter-spacing: .04em;
  color: var(--muted); background: #fafbfc; }
th a { color: inherit; } th a.sorted { color: var(--ink); }
tr:hover td { background: #f9fafb; }
td.name { font-weight: 600; border-left: 4px solid var(--unknown); }
tr.up td.name { border-left-color: var(--up); }
tr.notready td.name { border-left-color: var(--notready); }
tr.down td.name { border-left-color: var(--down); }
td.addr, td.num { font-family: ui-monospace, Menlo, Consolas, monospace;
  font-size: 13px; }
td.num { text-align: right; white-space: nowrap; }
.pill { display: inline-block; min-width: 64px; text-align: center;
  padding: 1px 8px; border-radius: 10px; color: #fff; font-weight: 600;
  background: var(--unknown); }
tr.up .pill { background: var(--up); }
tr.notready .pill { background: var(--notready); color: #1d2330; }
tr.down .pill { background: var(--down); }
td.spark { padding-top: 2px; padding-bottom: 0; }
svg.spark .lat { fill: none; stroke: #3b6fd8; stroke-width: 1.5;
  stroke-linejoin: round; stroke-linecap: round; }
svg.spark .base { stroke: var(--line); stroke-width: 1; }
svg.spark .fail { stroke: var(--down); stroke-width: 2; }
td.since { white-space: nowrap; color: var(--muted); }
td.error.unjudged { color: var(--muted); }
td.error { color: var(--down); max-width: 320px; overflow: hidden;
  text-overflow: ellipsis; white-space: nowrap; }
.none { color: var(--muted); }
footer { margin-top: 10px; color: var(--muted); font-size: 12px; }
.count a, a.count { text-decoration: none; }
nav.pages { margin: 8px 0; color: var(--muted); }
body.stale header::after { content: "not updating: the agent does not answer";
  color: #fff; background: var(--down); padding: 1px 8px; border-radius: 9px;
  font-weight: 600; }
"""

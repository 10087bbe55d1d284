"""
The embedded HTTP app: what the agent is doing right now.

`/pending` comes first: the checks in flight and their ages. `/debug/stats`
holds the counters a leak would move. Everything is read live from the
monitor when asked; nothing is cached but what would cost the checks
(see `sentinel.procstats`).

No answer may hold the reactor for long: checks wait while it does. Those
that grow with the instances (`/instances`, `/pending`, `/metrics`, the
page) are rendered in slices by `sentinel.streaming`, one slice per
reactor turn, and written as fast as the client reads them; the others
cost the same at ten instances as at ten thousand.

Every answer is JSON but the page and ``/metrics``, errors included: a
path no route takes is a 404, a method none takes a 405 with ``Allow``,
each with ``{"error": ...}`` (werkzeug would write HTML).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

import attr
import psutil
from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from sentinel import page
from sentinel.checks import short_decimal
from sentinel.documents import instance_report
from sentinel.exposition import FORMATS, exposition, overlong
from sentinel.history import CheckHistory
from sentinel.instance import InstanceState
from sentinel.listing import (
    MEMBERS_PER_PAGE,
    BadRequest,
    InstanceQuery,
    NameIndex,
    PageQuery,
    instance_slices,
    pending_slices,
    quoted,
)
from sentinel.metrics import AgentMetrics
from sentinel.monitor import Monitor
from sentinel.overview import DEFAULT_SORT, SORTS, overview_slices
from sentinel.procstats import open_fds, own_process, rss_bytes, threads_by_name
from sentinel.streaming import Slicer, Slices


class GroupView(Protocol):
    """What the app shows of the agent's group (`sentinel.group.Group`)."""

    def report_slices(self, query: PageQuery) -> Slices:
        """``GET /group``, one page of its members."""

    def summary(self) -> dict[str, int]:
        """The status page's line."""

    def instance_view(self, name: str) -> dict[str, Any]:
        """What ``/instances`` adds for one instance."""


# A health check beyond the loop's own: returns a reason to be unhealthy, or None.
HealthCheck = Callable[[], "str | None"]
# More of /debug/stats: a name and what to show under it.
StatsSource = Callable[[], Any]

JSON = b"application/json"
HTML = b"text/html; charset=utf-8"


def _headers(request: IRequest, content_type: bytes, code: int = 200) -> None:
    request.setResponseCode(code)
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"cache-control", b"no-store")


def _json(request: IRequest, body: object, code: int = 200) -> bytes:
    _headers(request, JSON, code)
    return json.dumps(body, indent=1).encode("utf-8") + b"\n"


def error_body(message: str) -> bytes:
    """``{"error": message}``, as every JSON error of the agent is written."""
    return json.dumps({"error": message}, indent=1).encode("utf-8") + b"\n"


def json_error(request: IRequest, code: int, message: str) -> bytes:
    """An error answer: `code` set on `request`, and its JSON body."""
    _headers(request, JSON, code)
    return error_body(message)


def _no_points(name: str) -> Sequence[Any]:
    return ()


@attr.frozen(kw_only=True)
class StatusApp:
    """
    The Klein app, complete once built: the `monitor` it reads, the
    `reactor` (for time), the `agent_id` it reports as, the agent's
    `metrics` (no ``/metrics`` without), the checks' `history`
    (sparklines), ZooKeeper's stats for the page, more `health_checks` for
    ``/healthz`` and `stats_sources` for ``/debug/stats``, `health_details`
    shown in ``/healthz``'s answer (unless None), `gc_objects`
    (the number of objects the garbage collector tracks, kept current
    elsewhere: counting walks them all), and the `slicer` that runs its
    long answers.
    """

    app: ClassVar[Klein] = Klein()
    # One path per answer: werkzeug would answer a path with doubled
    # slashes (/instances//a) with a redirect to the path merged, to the
    # host the Host header names.
    app.url_map.merge_slashes = False

    monitor: Monitor
    reactor: IReactorTime
    agent_id: str
    gc_objects: Callable[[], int]
    metrics: AgentMetrics | None = None
    history: CheckHistory | None = None
    zookeeper_stats: StatsSource | None = None
    health_checks: Sequence[HealthCheck] = ()
    stats_sources: Mapping[str, StatsSource] = attr.Factory(dict)
    group: GroupView | None = None
    # More of /healthz's answer: each shown under its name unless None.
    health_details: Mapping[str, StatsSource] = attr.Factory(dict)
    slicer: Slicer = attr.Factory(lambda self: Slicer(self.reactor), takes_self=True)
    # None: this process, whichever it is once twistd has forked
    # (`sentinel.procstats.own_process`).
    process: psutil.Process | None = None
    names: NameIndex = attr.field(factory=NameIndex, init=False)

    def resource(self) -> Any:
        """The app as a Twisted web resource."""
        return self.app.resource()

    @app.route("/pending", methods=["GET"])
    def pending(self, request: IRequest) -> Deferred[None]:
        """Every check in flight, oldest first."""
        _headers(request, JSON)
        slices = pending_slices(self.monitor.tracker, self.reactor)
        return self.slicer.stream(request, slices)

    @app.route("/instances", methods=["GET"])
    def instances(self, request: IRequest) -> Deferred[None] | bytes:
        """Watched instances, as published plus check counters, by name."""
        try:
            query = InstanceQuery.from_args(request.args)
        except BadRequest as e:
            return json_error(request, 400, str(e))
        _headers(request, JSON)
        states = self.monitor.states
        names = self.names.sorted(states)
        body = instance_slices(states, names, query, self._document)
        return self.slicer.stream(request, body)

    @app.route("/instances/<name>", methods=["GET"])
    def instance(self, request: IRequest, name: str) -> bytes:
        """One instance, or a 404 JSON error."""
        state = self.monitor.states.get(name)
        if state is None:
            return json_error(request, 404, f"unknown instance {quoted(name)}")
        return _json(request, self._document(state))

    @app.route("/group", methods=["GET"])
    def group_report(self, request: IRequest) -> Deferred[None] | bytes:
        """
        The group this agent is part of (404 without ZooKeeper), with a
        page of its members: ``?limit=N`` (default `MEMBERS_PER_PAGE`)
        and ``?after=ID``.
        """
        if self.group is None:
            return json_error(request, 404, "no group: ZooKeeper is not configured")
        try:
            query = PageQuery.from_args(request.args, MEMBERS_PER_PAGE)
        except BadRequest as e:
            return json_error(request, 400, str(e))
        _headers(request, JSON)
        return self.slicer.stream(request, self.group.report_slices(query))

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request: IRequest) -> bytes:
        """200 when the loop ticks and the checks given say ok; else 503."""
        reasons = self.unhealthy_reasons()
        # After the reasons: a detail may name what a reason just counted
        # (``unconfirmed``), as of the same look.
        details = {}
        for name, source in self.health_details.items():
            detail = source()
            if detail is not None:
                details[name] = detail
        if reasons:
            body = {"status": "unhealthy", "reasons": reasons, **details}
            return _json(request, body, 503)
        return _json(request, {"status": "ok", **details})

    @app.route("/metrics", methods=["GET"])
    def metrics_text(self, request: IRequest) -> Deferred[None] | bytes:
        """
        Prometheus text or OpenMetrics, gzipped if asked; 404 without
        metrics, 400 when ``Accept`` or ``Accept-Encoding`` is too long to
        read, 406 when ``Accept`` refuses every format.
        """
        if self.metrics is None:
            _headers(request, b"text/plain; charset=utf-8", 404)
            return b"no metrics in this agent\n"
        accept = _header(request, b"accept")
        accept_encoding = _header(request, b"accept-encoding")
        request.setHeader(b"vary", b"Accept, Accept-Encoding")
        error = overlong(accept, accept_encoding)
        if error is not None:
            return json_error(request, 400, error)
        answer = exposition(self.metrics, accept, accept_encoding)
        if answer is None:
            formats = "; ".join(f"{f.media_type} {f.version}" for f in FORMATS)
            error = f"the Accept header refuses every format there is: {formats}"
            return json_error(request, 406, error)
        _headers(request, answer.content_type.encode("ascii"))
        if answer.gzip:
            request.setHeader(b"content-encoding", b"gzip")
        return self.slicer.stream(request, answer.body)

    @app.route("/debug/stats", methods=["GET"])
    def stats(self, request: IRequest) -> bytes:
        """The runtime counters a leak would move."""
        return _json(request, self.runtime_stats())

    @app.route("/", methods=["GET"])
    def index(self, request: IRequest) -> Deferred[None]:
        """
        The HTML status page (`sentinel.page`): ``?sort=`` one of
        `sentinel.overview.SORTS`, ``?page=`` a page number; a person's typo
        shows the first page in the default order rather than an error.
        """
        _headers(request, HTML)
        sort = _argument(request, b"sort")
        if sort not in SORTS:
            sort = DEFAULT_SORT
        number = _argument(request, b"page")
        wanted = int(number) if short_decimal(number, 9) else 1
        return self.slicer.stream(request, self._page(sort, wanted))

    @app.handle_errors(HTTPException)
    def routing_error(self, request: IRequest, failure: Failure) -> bytes:
        """
        No route for the path (404, naming the paths there are) or for the
        method (405, with ``Allow``): a JSON error, where werkzeug writes
        an HTML page.
        """
        error = failure.value
        assert isinstance(error, HTTPException)  # The only errors handled here.
        code = error.code or 500
        if isinstance(error, MethodNotAllowed):
            allowed = ", ".join(sorted(error.valid_methods or ()))
            request.setHeader(b"allow", allowed.encode("ascii"))
            return json_error(request, code, f"method not allowed (allowed: {allowed})")
        if isinstance(error, NotFound):
            paths = ", ".join(sorted(r.rule for r in self.app.url_map.iter_rules()))
            return json_error(request, code, f"no such path (paths: {paths})")
        return json_error(request, code, error.name)

    # Data

    def _document(self, state: InstanceState) -> dict[str, Any]:
        changes = state.published_changes
        unjudged_since = state.unjudged_since
        report = instance_report(
            state.instance,
            state.health,
            self.agent_id,
            state.probe.hello_off_until,
            None if changes is None else changes.held_since,
            unjudged_since,
            None if unjudged_since is None else state.why_unjudged,
            self.monitor.flapping.status_flapping_since(state, self.reactor.seconds()),
            state.probe.address if state.probe.connected else None,
        )
        if self.group is not None:
            report.update(self.group.instance_view(state.name))
        return report

    def _page(self, sort: str, wanted: int) -> Slices:
        monitor = self.monitor
        states = monitor.states
        history = self.history
        if history is not None:
            history.prune(states)
            yield b""
        now = self.reactor.seconds()
        header = page.Header(
            agent_id=self.agent_id,
            pending=len(monitor.tracker),
            ticks=monitor.ticks,
            overruns=monitor.overruns,
            interval=monitor.settings.interval,
        )
        zookeeper = None if self.zookeeper_stats is None else self.zookeeper_stats()
        if zookeeper is not None and self.group is not None:
            zookeeper = {**zookeeper, "group_summary": self.group.summary()}
        overview = yield from overview_slices(states, self.names.sorted(states), sort)
        paging = page.Paging(sort, max(1, min(wanted, overview.pages)), overview.pages)
        before, after = page.page_frame(header, overview.counts, paging, zookeeper, now)
        yield before
        shown = overview.page(paging.page)
        if not shown:
            yield page.NO_ROWS
        points = history.points if history is not None else _no_points
        for start in range(0, len(shown), page.ROWS_PER_SLICE):
            docs = [
                self._document(state)
                for name in shown[start : start + page.ROWS_PER_SLICE]
                if (state := states.get(name)) is not None
            ]
            yield page.rows(docs, points, now)
        yield after

    def unhealthy_reasons(self) -> list[str]:
        """Why the agent is unhealthy; empty when it is fine."""
        monitor = self.monitor
        now = self.reactor.seconds()
        reasons = []
        limit = 2 * monitor.settings.interval
        last = monitor.last_tick_at
        if last is None or now - last > limit:
            since = "never" if last is None else f"{now - last:.1f} s ago"
            reasons.append(f"the check loop last ticked {since} (limit {limit:g} s)")
        for check in self.health_checks:
            reason = check()
            if reason:
                reasons.append(reason)
        return reasons

    def runtime_stats(self) -> dict[str, Any]:
        """
        Pending checks, delayed calls, fds, RSS, gc objects, threads by
        name, ticks; checks, failures and instances up (kept by the monitor
        as statuses change), read without walking every object or rendering
        every instance.
        """
        monitor = self.monitor
        now = self.reactor.seconds()
        return {
            "pending_checks": len(monitor.tracker),
            "delayed_calls": len(self.reactor.getDelayedCalls()),
            "open_fds": open_fds(self.process or own_process()),
            "rss_bytes": rss_bytes(self.process or own_process()),
            "gc_objects": self.gc_objects(),
            "threads": threads_by_name(),
            "ticks": monitor.ticks,
            "overruns": monitor.overruns,
            "checks": monitor.checks,
            "failures": monitor.failures,
            "instances": len(monitor.states),
            "instances_up": monitor.instances_up,
            "uptime_seconds": (
                0.0 if monitor.started_at is None else now - monitor.started_at
            ),
            "tick_completion_seconds": _quantiles(monitor.tick_completions),
            **{name: source() for name, source in self.stats_sources.items()},
        }


def _argument(request: IRequest, name: bytes) -> str:
    values: list[bytes] = request.args.get(name) or [b""]
    return values[0].decode("utf-8", "replace")


def _header(request: IRequest, name: bytes) -> str:
    value = request.getHeader(name)
    return "" if value is None else value.decode("latin-1")


def _quantiles(samples: Iterable[float]) -> dict[str, Any]:
    """p50, p99 and max of recent samples (None when there are none)."""
    ordered = sorted(samples)
    if not ordered:
        return {"p50": None, "p99": None, "max": None, "samples": 0}

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "p50": at(0.5),
        "p99": at(0.99),
        "max": ordered[-1],
        "samples": len(ordered),
    }

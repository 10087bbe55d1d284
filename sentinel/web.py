"""
The embedded HTTP app: what the agent is doing right now.

`/pending` comes first: the checks in flight and their ages. `/debug/stats`
holds the counters a leak would move. Everything is read live from the
monitor; nothing here is cached.
"""

from __future__ import annotations

import gc
import html
import json
from collections.abc import Callable
from typing import Any

import psutil
from klein import Klein
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from sentinel.monitor import Monitor

# A health check beyond the loop's own: returns a reason to be unhealthy, or None.
HealthCheck = Callable[[], "str | None"]
# More of /debug/stats: a name and what to show under it.
StatsSource = Callable[[], Any]


def _json(request: IRequest, body: object, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body, indent=1).encode("utf-8") + b"\n"


class StatusApp:
    """The Klein app; its routes read the monitor and the reactor live."""

    app = Klein()

    def __init__(
        self,
        monitor: Monitor,
        reactor: IReactorTime,
        health_checks: list[HealthCheck] | None = None,
    ) -> None:
        self._monitor = monitor
        self._reactor = reactor
        self._health_checks = list(health_checks or [])
        self._stats_sources: dict[str, StatsSource] = {}
        self._process = psutil.Process()

    def add_health_check(self, check: HealthCheck) -> None:
        """Make /healthz also depend on `check`."""
        self._health_checks.append(check)

    def add_stats(self, name: str, source: StatsSource) -> None:
        """Show `source()` under `name` in /debug/stats."""
        self._stats_sources[name] = source

    @app.route("/pending", methods=["GET"])
    def pending(self, request: IRequest) -> bytes:
        """Every check in flight, oldest first."""
        return _json(request, self._monitor.tracker.report(self._reactor.seconds()))

    @app.route("/instances", methods=["GET"])
    def instances(self, request: IRequest) -> bytes:
        """Every watched instance, as published plus check counters."""
        states = sorted(self._monitor.states)
        return _json(request, {"instances": [self._instance(n) for n in states]})

    @app.route("/instances/<string:name>", methods=["GET"])
    def instance(self, request: IRequest, name: str) -> bytes:
        """One instance, or a 404 JSON error."""
        if name not in self._monitor.states:
            return _json(request, {"error": f"unknown instance {name!r}"}, 404)
        return _json(request, self._instance(name))

    @app.route("/healthz", methods=["GET"])
    def healthz(self, request: IRequest) -> bytes:
        """200 when the loop ticks and the checks given say ok; else 503."""
        reasons = self.unhealthy_reasons()
        if reasons:
            return _json(request, {"status": "unhealthy", "reasons": reasons}, 503)
        return _json(request, {"status": "ok"})

    @app.route("/debug/stats", methods=["GET"])
    def stats(self, request: IRequest) -> bytes:
        """The runtime counters a leak would move."""
        return _json(request, self.runtime_stats())

    @app.route("/", methods=["GET"])
    def index(self, request: IRequest) -> bytes:
        """A plain HTML overview."""
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        rows = []
        for name in sorted(self._monitor.states):
            doc = self._instance(name)
            cells = [
                doc["name"],
                f"{doc['host']}:{doc['port']}",
                doc["status"] or "unknown",
                "yes" if doc["ready"] else "no",
                doc["role"] or "",
                "" if doc["latency_ms"] is None else f"{doc['latency_ms']:.2f} ms",
                doc["error"] or "",
            ]
            row = "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
            rows.append(f'<tr class="{html.escape(str(doc["status"]))}">{row}</tr>')
        pending = len(self._monitor.tracker)
        page = _PAGE.format(pending=pending, rows="\n".join(rows))
        return page.encode("utf-8")

    # Data

    def _instance(self, name: str) -> dict[str, Any]:
        state = self._monitor.states[name]
        return {
            **state.document(self._monitor.settings.agent_id),
            **state.health.counters(),
        }

    def unhealthy_reasons(self) -> list[str]:
        """Why the agent is unhealthy; empty when it is fine."""
        monitor = self._monitor
        now = self._reactor.seconds()
        reasons = []
        limit = 2 * monitor.settings.interval
        last = monitor.last_tick_at
        if last is None or now - last > limit:
            since = "never" if last is None else f"{now - last:.1f} s ago"
            reasons.append(f"the check loop last ticked {since} (limit {limit:g} s)")
        if monitor.loop_restarts:
            reasons.append(
                f"the check loop stopped and was restarted {monitor.loop_restarts} "
                f"time(s); last error: {monitor.last_loop_error}"
            )
        for check in self._health_checks:
            reason = check()
            if reason:
                reasons.append(reason)
        return reasons

    def runtime_stats(self) -> dict[str, Any]:
        """Pending checks, delayed calls, fds, RSS, gc objects, ticks."""
        monitor = self._monitor
        now = self._reactor.seconds()
        return {
            "pending_checks": len(monitor.tracker),
            "delayed_calls": len(self._reactor.getDelayedCalls()),
            "open_fds": self._process.num_fds(),
            "rss_bytes": self._process.memory_info().rss,
            "gc_objects": len(gc.get_objects()) + gc.get_freeze_count(),
            "ticks": monitor.ticks,
            "overruns": monitor.overruns,
            "uptime_seconds": (
                0.0 if monitor.started_at is None else now - monitor.started_at
            ),
            **{name: source() for name, source in self._stats_sources.items()},
        }


_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>sentinel</title>
<meta http-equiv="refresh" content="2">
<style>
body {{ font-family: sans-serif; margin: 1em; }}
table {{ border-collapse: collapse; }}
td, th {{ padding: 0.2em 0.8em; border-bottom: 1px solid #ddd; text-align: left; }}
tr.up td:nth-child(3) {{ color: #080; font-weight: bold; }}
tr.down td:nth-child(3) {{ color: #c00; font-weight: bold; }}
</style></head>
<body><h1>sentinel</h1>
<p>Pending checks: {pending}. JSON: <a href="/instances">/instances</a>,
<a href="/pending">/pending</a>, <a href="/healthz">/healthz</a>,
<a href="/debug/stats">/debug/stats</a>.</p>
<table><tr><th>name</th><th>address</th><th>status</th><th>ready</th>
<th>role</th><th>latency</th><th>error</th></tr>
{rows}
</table></body></html>
"""

"""
The embedded HTTP app: what the agent is doing right now.

`/pending` comes first: the checks in flight and their ages. `/debug/stats`
holds the counters a leak would move. Everything is read live from the
monitor; nothing here is cached.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import psutil
from klein import Klein
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest

from sentinel import page
from sentinel.documents import instance_report
from sentinel.health import UP
from sentinel.history import CheckHistory
from sentinel.monitor import Monitor
from sentinel.process import count_gc_objects

# A health check beyond the loop's own: returns a reason to be unhealthy, or None.
HealthCheck = Callable[[], "str | None"]
# More of /debug/stats: a name and what to show under it.
StatsSource = Callable[[], Any]
# What generate_latest writes: the Prometheus text format 0.0.4 (recent
# prometheus_client calls it CONTENT_TYPE_PLAIN_0_0_4; its
# CONTENT_TYPE_LATEST now names version 1.0.0, which not every scraper knows).
METRICS_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


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
        metrics: CollectorRegistry | None = None,
        *,
        agent_id: str,
        gc_objects: Callable[[], int] = count_gc_objects,
    ) -> None:
        self._monitor = monitor
        self._agent_id = agent_id
        self._gc_objects = gc_objects
        self._metrics = metrics
        self._reactor = reactor
        self._health_checks = list(health_checks or [])
        self._stats_sources: dict[str, StatsSource] = {}
        self._process = psutil.Process()
        self._history: CheckHistory | None = None
        self._zookeeper_stats: StatsSource | None = None

    def add_health_check(self, check: HealthCheck) -> None:
        """Make /healthz also depend on `check`."""
        self._health_checks.append(check)

    def show_on_page(
        self,
        history: CheckHistory | None = None,
        zookeeper_stats: StatsSource | None = None,
    ) -> None:
        """Give the / page each instance's recent checks and ZooKeeper's state."""
        if history is not None:
            self._history = history
        if zookeeper_stats is not None:
            self._zookeeper_stats = zookeeper_stats

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

    @app.route("/metrics", methods=["GET"])
    def metrics(self, request: IRequest) -> bytes:
        """The Prometheus text format of the registry given, or a 404."""
        request.setHeader(b"cache-control", b"no-store")
        if self._metrics is None:
            request.setResponseCode(404)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"no metrics in this agent\n"
        request.setHeader(b"content-type", METRICS_CONTENT_TYPE)
        return generate_latest(self._metrics)

    @app.route("/debug/stats", methods=["GET"])
    def stats(self, request: IRequest) -> bytes:
        """The runtime counters a leak would move."""
        return _json(request, self.runtime_stats())

    @app.route("/", methods=["GET"])
    def index(self, request: IRequest) -> bytes:
        """The HTML status page (`sentinel.page`), ordered by ``?sort=``."""
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        monitor = self._monitor
        history = self._history
        if history is not None:
            history.prune(monitor.states)
        sort = request.args.get(b"sort", [b""])[0].decode("utf-8", "replace")
        header = page.Header(
            agent_id=self._agent_id,
            pending=len(monitor.tracker),
            ticks=monitor.ticks,
            overruns=monitor.overruns,
            interval=monitor.settings.interval,
        )
        zookeeper = None if self._zookeeper_stats is None else self._zookeeper_stats()
        body = page.render_page(
            header,
            [self._instance(name) for name in monitor.states],
            history.points if history is not None else lambda name: (),
            zookeeper,
            self._reactor.seconds(),
            sort,
        )
        return body.encode("utf-8")

    # Data

    def _instance(self, name: str) -> dict[str, Any]:
        state = self._monitor.states[name]
        return instance_report(state.instance, state.health, self._agent_id)

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
        for check in self._health_checks:
            reason = check()
            if reason:
                reasons.append(reason)
        return reasons

    def runtime_stats(self) -> dict[str, Any]:
        """
        Pending checks, delayed calls, fds, RSS, gc objects, ticks; checks,
        failures and instances up, counted without rendering every instance.
        """
        monitor = self._monitor
        now = self._reactor.seconds()
        return {
            "pending_checks": len(monitor.tracker),
            "delayed_calls": len(self._reactor.getDelayedCalls()),
            "open_fds": self._process.num_fds(),
            "rss_bytes": self._process.memory_info().rss,
            "gc_objects": self._gc_objects(),
            "ticks": monitor.ticks,
            "overruns": monitor.overruns,
            "checks": monitor.checks,
            "failures": monitor.failures,
            "instances": len(monitor.states),
            "instances_up": sum(
                1 for state in monitor.states.values() if state.health.status == UP
            ),
            "uptime_seconds": (
                0.0 if monitor.started_at is None else now - monitor.started_at
            ),
            "tick_completion_seconds": _quantiles(monitor.tick_completions),
            **{name: source() for name, source in self._stats_sources.items()},
        }


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

"""
Prometheus metrics for ``GET /metrics``, named as redis_exporter names its
own (``sentinel_`` prefix, snake_case, unit suffixes).

Per-instance gauges are read from the monitor when scraped, so they cost
nothing per check, and a removed instance's series go with it. The counters
and the histogram of check durations are counted per check by a monitor
listener, which runs thousands of times a second: it adds to plain integers
(a ``prometheus_client`` counter and histogram cost about six times as
much), and the collector turns them into metric families at scrape time.
Label values are instance names, roles and fixed words, never errors, so
the number of series grows with the instances, not with the checks.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from sentinel.health import DOWN, UP, Transition
from sentinel.instance import InstanceState
from sentinel.monitor import Monitor
from sentinel.observation import Observation
from sentinel.publisher import WRITE_OPS, ZooKeeperPublisher
from sentinel.zk import CONNECTED

# Upper bounds of the check-duration buckets, in seconds: a PING on a LAN
# takes a fraction of a millisecond, a timed-out check up to the timeout.
DURATION_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)
_BUCKET_LABELS = [floatToGoString(b) for b in DURATION_BUCKETS] + ["+Inf"]

CHECK_RESULTS = ("ok", "timeout", "error")


class AgentMetrics:
    """One agent's metrics, in a registry of its own (`registry`)."""

    def __init__(
        self, monitor: Monitor, zookeeper: ZooKeeperPublisher | None = None
    ) -> None:
        self._monitor = monitor
        self._zookeeper = zookeeper
        self.checks = dict.fromkeys(CHECK_RESULTS, 0)
        self.transitions = dict.fromkeys((UP, DOWN), 0)
        # One count per bucket (not cumulative) and a last one for +Inf.
        self._bucket_counts = [0] * (len(DURATION_BUCKETS) + 1)
        self._duration_sum = 0.0
        monitor.add_listener(self._checked)
        self.registry = CollectorRegistry()
        self.registry.register(self)
        ProcessCollector(registry=self.registry)

    def _checked(
        self,
        state: InstanceState,
        observation: Observation,
        transition: Transition | None,
        duration: float,
    ) -> None:
        # Runs for every check: keep it to a few additions.
        if observation.ok:
            self.checks["ok"] += 1
        elif (observation.error or "").startswith("timeout"):
            self.checks["timeout"] += 1
        else:
            self.checks["error"] += 1
        self._bucket_counts[bisect_left(DURATION_BUCKETS, duration)] += 1
        self._duration_sum += duration
        # The first decision about an instance is not a change of status.
        if (
            transition is not None
            and transition.status_changed
            and transition.old_status is not None
        ):
            self.transitions[transition.new_status] += 1

    def collect(self) -> Iterator[Metric]:
        """Every family, read now (called by the registry on each scrape)."""
        yield from self._instances()
        yield from self._loop()
        if self._zookeeper is not None:
            yield from self._zk(self._zookeeper)

    def _instances(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "sentinel_instance_up",
            "1 if the instance is up (after rise/fall), else 0.",
            labels=["instance"],
        )
        ready = GaugeMetricFamily(
            "sentinel_instance_ready",
            "1 if the instance is up and ready (not LOADING or MASTERDOWN).",
            labels=["instance"],
        )
        role = GaugeMetricFamily(
            "sentinel_instance_role",
            "1, labelled with the instance's role (master or slave); absent "
            "while unknown.",
            labels=["instance", "role"],
        )
        latency = GaugeMetricFamily(
            "sentinel_instance_latency_seconds",
            "The last check's PING latency; absent when it failed.",
            labels=["instance"],
        )
        for name, state in self._monitor.states.items():
            health = state.health
            labels = [name]
            up.add_metric(labels, 1.0 if health.status == UP else 0.0)
            ready.add_metric(labels, 1.0 if health.ready else 0.0)
            current = health.replication.role
            if current is not None:
                role.add_metric([name, current], 1.0)
            if health.latency_ms is not None:
                latency.add_metric(labels, health.latency_ms / 1000.0)
        return iter((up, ready, role, latency))

    def _loop(self) -> Iterator[Metric]:
        monitor = self._monitor
        checks = CounterMetricFamily(
            "sentinel_checks",
            "Checks ended, by result (ok includes LOADING and MASTERDOWN).",
            labels=["result"],
        )
        for result, count in self.checks.items():
            checks.add_metric([result], count)
        transitions = CounterMetricFamily(
            "sentinel_transitions",
            "Changes of an instance's status, by the new status.",
            labels=["to"],
        )
        for status, count in self.transitions.items():
            transitions.add_metric([status], count)
        cumulative = 0
        buckets = []
        for label, count in zip(_BUCKET_LABELS, self._bucket_counts, strict=True):
            cumulative += count
            buckets.append((label, float(cumulative)))
        duration = HistogramMetricFamily(
            "sentinel_check_duration_seconds",
            "Time from a check's launch to its result, timeouts included.",
            buckets=buckets,
            sum_value=self._duration_sum,
        )
        return iter(
            (
                checks,
                transitions,
                duration,
                GaugeMetricFamily(
                    "sentinel_pending_checks",
                    "Checks in flight now.",
                    value=len(monitor.tracker),
                ),
                CounterMetricFamily(
                    "sentinel_tick_overruns",
                    "Times a tick found an instance's previous check still in flight.",
                    value=monitor.overruns,
                ),
                GaugeMetricFamily(
                    "sentinel_tick_lag_seconds",
                    "How late the last tick started, beyond the interval.",
                    value=monitor.tick_lag,
                ),
            )
        )

    def _zk(self, zookeeper: ZooKeeperPublisher) -> Iterator[Metric]:
        writes = CounterMetricFamily(
            "sentinel_zk_writes",
            "ZooKeeper create/set/delete calls, by outcome (an error includes "
            "expected ones, such as a create that finds the node existing).",
            labels=["op", "result"],
        )
        calls = zookeeper.write_calls
        for op in WRITE_OPS:
            for result in ("ok", "error"):
                writes.add_metric([op, result], calls[op, result])
        return iter(
            (
                GaugeMetricFamily(
                    "sentinel_zk_connected",
                    "1 while connected to ZooKeeper, else 0.",
                    value=1.0 if zookeeper.zk.state == CONNECTED else 0.0,
                ),
                writes,
            )
        )

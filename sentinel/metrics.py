"""
Prometheus metrics for ``GET /metrics``, named as redis_exporter names its
own (``sentinel_`` prefix, snake_case, unit suffixes).

Per-instance gauges are read from the monitor when scraped, so they cost
nothing per check, and a removed instance's series go with it. They are
labelled ``name`` and ``addr`` (``HOST:PORT``), never ``instance``, which
Prometheus sets on every target it scrapes (it would rename ours
``exported_instance``). At 10,000 instances they are 60,000 lines, written
by `AgentMetrics.instance_slices` a slice of instances at a time (see
`sentinel.streaming`) as text that is the same in the Prometheus and the
OpenMetrics formats (gauges only; help texts without quotes, backslashes
or line breaks). The agent's own families go through prometheus_client's
encoders (`AgentMetrics.registry`).

The counters and the histogram of check durations are counted per check by
a monitor listener, which runs thousands of times a second: it adds to
plain integers (a ``prometheus_client`` counter and histogram cost about six
times as much), and the collector turns them into metric families at
scrape time. Label values are instance names, addresses, roles and fixed
words, never errors, so the number of series grows with the instances, not
with the checks.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Protocol

import attr
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from sentinel import __version__
from sentinel.config import RedisInstance
from sentinel.guard import TAKEN_OVER_GRACE
from sentinel.health import DOWN, UP, Transition
from sentinel.instance import InstanceState
from sentinel.monitor import Monitor
from sentinel.observation import Observation
from sentinel.output import LogOutput
from sentinel.procstats import ProcessMetrics
from sentinel.publisher import ZooKeeperPublisher
from sentinel.streaming import Slices
from sentinel.writes import WRITE_OPS
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

# Instances whose lines of one family are written per slice: about 45 KB
# of text, 1-2 ms to write and compress.
INSTANCES_PER_SLICE = 500


class ReloadOutcome(Protocol):
    """
    How the last load of the config file went (`sentinel.reload`'s
    reloader): whether it was applied, and when the running config was
    loaded (start-up counts as a load).
    """

    @property
    def last_reload_ok(self) -> bool:
        """False while the last reload is refused (the config before runs)."""

    @property
    def last_reload_at(self) -> float:
        """Epoch seconds of the last successful load."""

    @property
    def restart_pending(self) -> Sequence[str]:
        """The restart-only settings the file applied last changes."""


@attr.frozen
class LoadedAtStart:
    """The outcome without a reloader: the config was loaded at start."""

    last_reload_at: float
    last_reload_ok: bool = True
    restart_pending: Sequence[str] = ()


class AgentMetrics:
    """
    One agent's metrics: its own families in a registry of its own
    (`registry`), the per-instance ones from `instance_slices`.
    """

    def __init__(
        self,
        monitor: Monitor,
        reload: ReloadOutcome,
        zookeeper: ZooKeeperPublisher | None = None,
        version: str = __version__,
        unhealthy_reasons: Callable[[], Sequence[str]] | None = None,
        verdict: Callable[[str], str | None] | None = None,
    ) -> None:
        """
        `verdict` says the status this agent publishes for an instance
        (`sentinel.group.Group.verdict_status`), None where it publishes
        none; without it, each instance's own status is.
        """
        self._monitor = monitor
        self._reload = reload
        self._zookeeper = zookeeper
        self._unhealthy_reasons = unhealthy_reasons
        self._version = version
        self._labels = _LabelCache()
        self._families = (*INSTANCE_FAMILIES, _verdict_family(verdict))
        self.checks = dict.fromkeys(CHECK_RESULTS, 0)
        self.transitions = dict.fromkeys((UP, DOWN), 0)
        # One count per bucket (not cumulative) and a last one for +Inf.
        self._bucket_counts = [0] * (len(DURATION_BUCKETS) + 1)
        self._duration_sum = 0.0
        monitor.add_listener(self._checked)
        self.registry = CollectorRegistry()
        self.registry.register(self)
        self.registry.register(ProcessMetrics())

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
        """The agent's own families, read now (the registry calls it)."""
        yield InfoMetricFamily(
            "sentinel_build", "The running version.", value={"version": self._version}
        )
        if self._unhealthy_reasons is not None:
            yield GaugeMetricFamily(
                "sentinel_healthy",
                "1 while GET /healthz answers 200, else 0 (it says why).",
                value=0.0 if self._unhealthy_reasons() else 1.0,
            )
        yield from self._loop()
        yield from self._config()
        if self._zookeeper is not None:
            yield from self._zk(self._zookeeper)

    def instance_slices(self) -> Slices:
        """The per-instance families as text, a slice at a time."""
        states = self._monitor.states
        names = list(states)
        self._labels.prune(states)
        for family in self._families:
            yield family.header
            for start in range(0, len(names), INSTANCES_PER_SLICE):
                batch = names[start : start + INSTANCES_PER_SLICE]
                yield family.lines(states, batch, self._labels)

    def _config(self) -> Iterator[Metric]:
        reload = self._reload
        yield GaugeMetricFamily(
            "sentinel_config_last_reload_successful",
            "1 if the last load of the config file was applied, 0 if it was "
            "refused (the config loaded before still runs).",
            value=1.0 if reload.last_reload_ok else 0.0,
        )
        yield GaugeMetricFamily(
            "sentinel_config_last_reload_success_timestamp_seconds",
            "When the running config was loaded (start-up counts).",
            value=reload.last_reload_at,
        )
        yield GaugeMetricFamily(
            "sentinel_config_restart_pending",
            "Settings that only a restart applies (zookeeper, agent_id, http, "
            "dns, state_dir...) that the config file applied last changes: "
            "until a restart, the agent runs with those it started with.",
            value=float(len(reload.restart_pending)),
        )

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
                    "sentinel_internal_errors",
                    "Bugs of ours met while checking (the checks count as failed).",
                    value=monitor.internal_errors.count,
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
                GaugeMetricFamily(
                    "sentinel_zk_conflicts",
                    "Nodes this agent must own held by someone else now (a "
                    "persistent squatter or another live agent).",
                    value=len(zookeeper.conflicts),
                ),
                CounterMetricFamily(
                    "sentinel_zk_conflicts_started",
                    "Conflicts that began since start.",
                    value=zookeeper.conflicts_started,
                ),
                CounterMetricFamily(
                    "sentinel_zk_nodes_deleted_behind",
                    "Nodes of this agent deleted by another ZooKeeper client "
                    "and written again since start.",
                    value=zookeeper.deleted_behind,
                ),
                CounterMetricFamily(
                    "sentinel_zk_nodes_written_over",
                    "Writes by another ZooKeeper client found on nodes of "
                    "this agent, reported and written over since start.",
                    value=zookeeper.written_over,
                ),
                CounterMetricFamily(
                    "sentinel_zk_late_sets_after_takeover",
                    "Sets of a previous primary found on nodes within "
                    f"{TAKEN_OVER_GRACE:g} s of this agent's takeover of them, "
                    "their data in its name, written over and not reported, "
                    "since start.",
                    value=zookeeper.late_sets,
                ),
                GaugeMetricFamily(
                    "sentinel_zk_failing_nodes",
                    "Nodes whose writes have failed since their last success "
                    "(retried every second; their published data is stale).",
                    value=zookeeper.writes_failing,
                ),
                GaugeMetricFamily(
                    "sentinel_zk_waiting_takeover",
                    "Nodes this agent waits to take over: held by another "
                    "session (an earlier one of its own, or a conflict).",
                    value=len(zookeeper.waiting_takeover),
                ),
            )
        )


class LogOutputMetrics:
    """The log lines standard output lost (`sentinel.output`), for /metrics."""

    def __init__(self, output: LogOutput) -> None:
        self._output = output

    def collect(self) -> Iterator[Metric]:
        """Read now, on each scrape."""
        yield CounterMetricFamily(
            "sentinel_log_lines_dropped",
            "Log lines dropped because standard output was blocked (a pipe "
            "nobody reads) while the queue in front of it was full.",
            value=self._output.dropped,
        )


# The per-instance families


def addr(host: str, port: int) -> str:
    """``HOST:PORT``, an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def label_value(text: str) -> str:
    """A label value escaped as both text formats want it."""
    if "\\" in text or '"' in text or "\n" in text:
        return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return text


class _LabelCache:
    """Each instance's ``name="..",addr=".."``, built once per instance."""

    def __init__(self) -> None:
        self._labels: dict[str, tuple[RedisInstance, str]] = {}

    def get(self, state: InstanceState) -> str:
        """The label pairs of `state` (built again if its config changed)."""
        instance = state.instance
        cached = self._labels.get(state.name)
        if cached is not None and cached[0] is instance:
            return cached[1]
        labels = (
            f'name="{label_value(instance.name)}",'
            f'addr="{label_value(addr(instance.host, instance.port))}"'
        )
        self._labels[state.name] = (instance, labels)
        return labels

    def prune(self, states: Mapping[str, object]) -> None:
        """Forget the instances no longer watched."""
        if len(self._labels) > len(states):
            self._labels = {n: v for n, v in self._labels.items() if n in states}


# A family's sample of one instance: more label pairs (``,role=".."``) and
# the value as text, or None for no sample.
Sample = Callable[[InstanceState], "tuple[str, str] | None"]


@attr.frozen
class InstanceFamily:
    """A gauge with at most one sample per instance."""

    name: str
    help: str
    sample: Sample

    @property
    def header(self) -> bytes:
        """The HELP and TYPE lines."""
        return f"# HELP {self.name} {self.help}\n# TYPE {self.name} gauge\n".encode()

    def lines(
        self,
        states: Mapping[str, InstanceState],
        names: Sequence[str],
        labels: _LabelCache,
    ) -> bytes:
        """The samples of the instances in `names` still in `states`."""
        out = []
        family, sample = self.name, self.sample
        for name in names:
            state = states.get(name)
            if state is None:
                continue
            found = sample(state)
            if found is not None:
                more, value = found
                out.append(f"{family}{{{labels.get(state)}{more}}} {value}\n")
        return "".join(out).encode("utf-8")


_ONE = ("", "1.0")
_ZERO = ("", "0.0")


def _up(state: InstanceState) -> tuple[str, str]:
    return _ONE if state.health.status == UP else _ZERO


def _ready(state: InstanceState) -> tuple[str, str]:
    return _ONE if state.health.ready else _ZERO


def _role(state: InstanceState) -> tuple[str, str] | None:
    role = state.health.replication.role
    return None if role is None else (f',role="{label_value(role)}"', "1.0")


def _latency(state: InstanceState) -> tuple[str, str] | None:
    latency = state.health.latency_ms
    return None if latency is None else ("", floatToGoString(latency / 1000.0))


def _master_link_up(state: InstanceState) -> tuple[str, str] | None:
    replication = state.health.replication
    if replication.role != "slave":
        return None
    return _ONE if replication.master_link_status == "up" else _ZERO


def _last_change(state: InstanceState) -> tuple[str, str] | None:
    since = state.health.since
    return None if since is None else ("", floatToGoString(since))


def _unjudged_since(state: InstanceState) -> tuple[str, str] | None:
    since = state.unjudged_since
    return None if since is None else ("", floatToGoString(since))


def _draining(state: InstanceState) -> tuple[str, str]:
    return _ONE if state.health.draining else _ZERO


def _discovered(state: InstanceState) -> tuple[str, str] | None:
    master = state.instance.discovered_by
    return None if master is None else (f',master="{label_value(master)}"', "1.0")


INSTANCE_FAMILIES = (
    InstanceFamily(
        "sentinel_instance_up",
        "1 if the instance is up (after rise/fall), else 0.",
        _up,
    ),
    InstanceFamily(
        "sentinel_instance_ready",
        "1 if the instance is up and ready (not LOADING or MASTERDOWN).",
        _ready,
    ),
    InstanceFamily(
        "sentinel_instance_role",
        "1, labelled with the instance's role (master or slave); absent while unknown.",
        _role,
    ),
    InstanceFamily(
        "sentinel_instance_latency_seconds",
        "The last check's PING latency; absent when it failed.",
        _latency,
    ),
    InstanceFamily(
        "sentinel_instance_master_link_up",
        "For a replica, 1 while its link to its master is up (INFO "
        "master_link_status), else 0; absent for a master.",
        _master_link_up,
    ),
    InstanceFamily(
        "sentinel_instance_last_change_timestamp_seconds",
        "When the instance's status last changed (its since); absent until decided.",
        _last_change,
    ),
    InstanceFamily(
        "sentinel_instance_unjudged_since_timestamp_seconds",
        "Since when the agent has not judged the instance: since it was "
        "watched if it never did, or since the first of its checks that "
        "said nothing (the agent too late to look, or its connect in line "
        "or held back) after its last judgement; absent while its latest "
        "check judged it.",
        _unjudged_since,
    ),
    InstanceFamily(
        "sentinel_instance_draining",
        "1 while the instance's drain key exists (up, not ready, not discovered).",
        _draining,
    ),
    InstanceFamily(
        "sentinel_instance_discovered",
        "1 for a replica found from its master's INFO, labelled with that "
        "master's name; absent for a configured instance.",
        _discovered,
    ),
)


def _verdict_family(verdict: Callable[[str], str | None] | None) -> InstanceFamily:
    # In a group, each observer's `sentinel_instance_up` is its own opinion:
    # an alert on it fired for a healthy instance when one agent's own
    # network failed, while the verdict, which ZooKeeper's readers get,
    # stayed up. This is the series to alert on: one per instance, from
    # the agent that publishes it.
    def sample(state: InstanceState) -> tuple[str, str] | None:
        status = state.health.status if verdict is None else verdict(state.name)
        if status is None:
            return None
        return _ONE if status == UP else _ZERO

    return InstanceFamily(
        "sentinel_instance_verdict_up",
        "1 if the status this agent publishes for the instance (in a group, "
        "its verdict, from its primary) is up, else 0; absent where another "
        "agent publishes it, and until decided.",
        sample,
    )

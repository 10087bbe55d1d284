"""GET /metrics: the Prometheus text, parsed, against known states."""

from __future__ import annotations

from kazoo.exceptions import ConnectionLoss
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from sentinel import agent
from sentinel.config import Config, RedisInstance
from sentinel.documents import agent_document
from sentinel.health import InstanceHealth
from sentinel.instance import InstanceState
from sentinel.metrics import DURATION_BUCKETS, AgentMetrics
from sentinel.observation import Observation, Replication
from sentinel.publisher import ZooKeeperPublisher
from sentinel.web import StatusApp
from tests.fakes import FAILED, FakeProbe, make_monitor
from tests.fakezk import FakeZooKeeper

Series = dict[tuple[str, ...], float]

LOADING = Observation(ok=True, ready=False, latency_ms=1.5)
SLAVE = Observation(
    ok=True,
    ready=True,
    latency_ms=2.0,
    replication=Replication(role="slave", master_host="10.0.0.9", master_port=6379),
)


def parse(text: str) -> dict[str, Series]:
    """
    Every sample by its name, then by its label values in the order of
    the label names sorted (``("a", "master")`` for instance, role).
    """
    samples: dict[str, Series] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = tuple(sample.labels[k] for k in sorted(sample.labels))
            series = samples.setdefault(sample.name, {})
            if key in series:
                raise AssertionError(f"duplicate series {sample.name}{key}")
            series[key] = sample.value
    return samples


class ScrapeTestCase(SynchronousTestCase):
    """Scrapes a StatusApp in memory through StubTreq."""

    def scrape_response(self, app: StatusApp) -> tuple[int, list[str], str]:
        treq = StubTreq(app.app.resource())
        response = self.successResultOf(treq.get("http://agent/metrics"))
        body = self.successResultOf(response.content())
        types = response.headers.getRawHeaders("content-type")
        return response.code, types, body.decode("utf-8")


class InstanceMetricsTests(ScrapeTestCase):
    """Per-instance gauges and the check counters, from a monitor on a Clock."""

    def setUp(self) -> None:
        self.monitor, self.clock, self.probes, _ = make_monitor(
            ["a", "b", "c", "d"], rise=2, fall=3
        )
        self.metrics = AgentMetrics(self.monitor)
        self.app = StatusApp(
            self.monitor, self.clock, metrics=self.metrics.registry, agent_id="me"
        )
        self.probes["d"].result = FAILED
        self.monitor.startService()
        self.addCleanup(self.monitor.stopService)

    def scrape(self) -> dict[str, Series]:
        code, _, body = self.scrape_response(self.app)
        self.assertEqual(code, 200)
        return parse(body)

    def tick(self, times: int = 1) -> None:
        """Let `times` ticks run, one interval apart."""
        for _ in range(times):
            self.clock.advance(1.0)

    def test_content_type(self) -> None:
        """/metrics answers 200 in the Prometheus text format 0.0.4."""
        code, types, _ = self.scrape_response(self.app)
        self.assertEqual(code, 200)
        self.assertEqual(types, ["text/plain; version=0.0.4; charset=utf-8"])
        self.assertEqual(types, [CONTENT_TYPE_PLAIN_0_0_4])

    def test_without_registry_404(self) -> None:
        """A StatusApp given no registry answers /metrics with a 404."""
        code, _, _ = self.scrape_response(
            StatusApp(self.monitor, self.clock, agent_id="me")
        )
        self.assertEqual(code, 404)

    def test_instance_gauges(self) -> None:
        """
        up, ready, role and latency are exactly each instance's state: a
        master, one LOADING (up, not ready), a slave, and a down one (no
        role, no latency).
        """
        self.probes["b"].result = LOADING
        self.probes["c"].result = SLAVE
        self.clock.advance(1.0)
        metrics = self.scrape()
        self.assertEqual(
            metrics["sentinel_instance_up"],
            {("a",): 1.0, ("b",): 1.0, ("c",): 1.0, ("d",): 0.0},
        )
        self.assertEqual(
            metrics["sentinel_instance_ready"],
            {("a",): 1.0, ("b",): 0.0, ("c",): 1.0, ("d",): 0.0},
        )
        self.assertEqual(
            metrics["sentinel_instance_role"],
            {
                ("a", "master"): 1.0,
                # LOADING had no INFO: the role read before stays.
                ("b", "master"): 1.0,
                ("c", "slave"): 1.0,
            },
        )
        self.assertEqual(
            metrics["sentinel_instance_latency_seconds"],
            {("a",): 0.0005, ("b",): 0.0015, ("c",): 0.002},
        )

    def test_role_unknown_when_down(self) -> None:
        """An instance that goes down loses its role and latency series."""
        self.probes["a"].result = FAILED
        self.tick(3)
        metrics = self.scrape()
        self.assertEqual(metrics["sentinel_instance_up"][("a",)], 0.0)
        roles = metrics["sentinel_instance_role"]
        self.assertEqual({key[0] for key in roles}, {"b", "c"})
        self.assertNotIn(("a",), metrics["sentinel_instance_latency_seconds"])

    def test_removed_instance_disappears(self) -> None:
        """Every series of a removed instance is gone from the next scrape."""
        self.monitor.remove_instance("a")
        for name, series in self.scrape().items():
            for key in series:
                self.assertNotIn("a", key, name)
        self.assertEqual(
            self.scrape()["sentinel_instance_up"],
            {("b",): 1.0, ("c",): 1.0, ("d",): 0.0},
        )

    def test_checks_by_result_and_histogram(self) -> None:
        """
        ok, timeout and error checks are counted apart; the histogram
        counts every check once, in the bucket of its duration.
        """
        self.probes["b"].hang = True
        self.probes["c"].fails = RuntimeError("bug")
        self.clock.advance(1.0)
        self.clock.advance(0.5)
        self.clock.advance(0.0)
        self.flushLoggedErrors(RuntimeError)
        metrics = self.scrape()
        # Tick 1: a, b, c ok, d error; tick 2: a ok, b timeout, c and d error.
        checks = metrics["sentinel_checks_total"]
        self.assertEqual(checks, {("ok",): 4.0, ("timeout",): 1.0, ("error",): 3.0})
        count = metrics["sentinel_check_duration_seconds_count"][()]
        self.assertEqual(count, sum(checks.values()))
        self.assertEqual(metrics["sentinel_check_duration_seconds_sum"][()], 0.5)
        buckets = metrics["sentinel_check_duration_seconds_bucket"]
        self.assertEqual(len(buckets), len(DURATION_BUCKETS) + 1)
        self.assertEqual(buckets[("0.0001",)], 7.0)
        self.assertEqual(buckets[("0.25",)], 7.0)
        self.assertEqual(buckets[("0.5",)], 8.0)
        self.assertEqual(buckets[("+Inf",)], 8.0)

    def test_transitions(self) -> None:
        """
        A change of status counts once under its new status; an instance's
        first decision does not count.
        """
        metrics = self.scrape()
        self.assertEqual(
            metrics["sentinel_transitions_total"], {("up",): 0.0, ("down",): 0.0}
        )
        self.probes["a"].result = FAILED
        self.tick(3)
        self.assertEqual(
            self.scrape()["sentinel_transitions_total"], {("up",): 0.0, ("down",): 1.0}
        )
        self.probes["a"].result = Observation(ok=True, ready=True, latency_ms=0.5)
        self.probes["d"].result = Observation(ok=True, ready=True, latency_ms=0.5)
        self.tick(2)
        self.assertEqual(
            self.scrape()["sentinel_transitions_total"], {("up",): 2.0, ("down",): 1.0}
        )

    def test_loop_gauges(self) -> None:
        """Pending checks and tick lag read the monitor as it is."""
        self.probes["b"].hang = True
        self.clock.advance(1.0)
        metrics = self.scrape()
        self.assertEqual(metrics["sentinel_pending_checks"], {(): 1.0})
        self.assertEqual(metrics["sentinel_tick_lag_seconds"], {(): 0.0})
        self.assertEqual(metrics["sentinel_tick_overruns_total"], {(): 0.0})
        # A stalled reactor: the next tick runs 1.5 s late.
        self.clock.advance(2.5)
        self.assertEqual(self.scrape()["sentinel_tick_lag_seconds"], {(): 1.5})

    def test_overruns(self) -> None:
        """A tick that finds a check still in flight counts one overrun."""
        monitor, clock, probes, _ = make_monitor(["x"], interval=1.0, timeout=1.0)
        probes["x"].hang = True
        app = StatusApp(
            monitor, clock, metrics=AgentMetrics(monitor).registry, agent_id="me"
        )
        monitor.startService()
        self.addCleanup(monitor.stopService)
        clock.advance(1.0)
        _, _, body = self.scrape_response(app)
        self.assertEqual(parse(body)["sentinel_tick_overruns_total"], {(): 1.0})

    def test_process_collector_and_no_zookeeper(self) -> None:
        """The process collector is there; ZooKeeper metrics are not, without it."""
        metrics = self.scrape()
        self.assertIn("process_resident_memory_bytes", metrics)
        self.assertIn("process_open_fds", metrics)
        self.assertFalse([name for name in metrics if name.startswith("sentinel_zk")])

    def test_registries_are_separate(self) -> None:
        """A second agent's metrics do not see the first one's checks."""
        other, _, _, _ = make_monitor(["x"])
        other_app = StatusApp(
            other, self.clock, metrics=AgentMetrics(other).registry, agent_id="me"
        )
        _, _, body = self.scrape_response(other_app)
        metrics = parse(body)
        self.assertEqual(metrics["sentinel_instance_up"], {("x",): 0.0})
        self.assertEqual(sum(metrics["sentinel_checks_total"].values()), 0.0)


class ZooKeeperMetricsTests(ScrapeTestCase):
    """sentinel_zk_connected and sentinel_zk_writes_total, on the fake ZooKeeper."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000.0)
        self.zk = FakeZooKeeper(self.clock)

        def document() -> dict[str, object]:
            return agent_document("me", 1000.0, self.clock.seconds(), 1.0, [])

        self.publisher = ZooKeeperPublisher(
            self.clock, self.zk, "/sentinel", "me", 30.0, 10.0, document
        )
        self.monitor, _, _, _ = make_monitor([])
        metrics = AgentMetrics(self.monitor, self.publisher)
        self.app = StatusApp(
            self.monitor, self.clock, metrics=metrics.registry, agent_id="me"
        )
        self.state = InstanceState(
            RedisInstance("r", "10.0.0.1", 6379),
            FakeProbe(RedisInstance("r", "10.0.0.1", 6379)),
            InstanceHealth(rise=1, fall=1),
        )

    def scrape(self) -> dict[str, Series]:
        _, _, body = self.scrape_response(self.app)
        return parse(body)

    def writes(self) -> Series:
        return self.scrape()["sentinel_zk_writes_total"]

    def publish(self, observation: Observation) -> None:
        transition = self.state.health.observe(observation, self.clock.seconds())
        self.publisher.publish(self.state, transition)

    def test_connected(self) -> None:
        """0 until connected, 1 while connected, 0 again when suspended."""
        self.publisher.startService()
        self.assertEqual(self.scrape()["sentinel_zk_connected"], {(): 0.0})
        self.zk.connect()
        self.assertEqual(self.scrape()["sentinel_zk_connected"], {(): 1.0})
        self.zk.suspend()
        self.assertEqual(self.scrape()["sentinel_zk_connected"], {(): 0.0})

    def test_writes_by_op_and_result(self) -> None:
        """Each create, set and delete call is counted once by its outcome."""
        zero = {
            (op, result): 0.0
            for op in ("create", "set", "delete")
            for result in ("ok", "error")
        }
        self.assertEqual(self.writes(), zero)
        self.publisher.startService()
        self.zk.connect()
        # The agent node is created.
        self.assertEqual(self.writes(), {**zero, ("create", "ok"): 1.0})
        self.zk.fail_next("create", ConnectionLoss())
        self.publish(Observation(ok=True, ready=True, latency_ms=0.5))
        self.assertEqual(self.writes()[("create", "error")], 1.0)
        # The retry creates the instance node, and the agent node is set.
        self.clock.advance(1.0)
        self.publish(FAILED)
        self.publisher.remove("r")
        self.assertEqual(
            self.writes(),
            {
                **zero,
                ("create", "ok"): 2.0,
                ("create", "error"): 1.0,
                ("set", "ok"): 3.0,
                ("delete", "ok"): 1.0,
            },
        )
        self.assertNotIn("/sentinel/instances/r", self.zk.nodes)


class AgentWiringTests(ScrapeTestCase):
    """make_agent serves /metrics from its own registry."""

    def test_agent_serves_metrics(self) -> None:
        """The HTTP site of a built agent answers /metrics for its instances."""
        config = Config(
            instances=(RedisInstance("a", "127.0.0.1", 6379),), agent_id="me"
        )
        top = agent.make_agent(config, None, MemoryReactorClock())
        sites = [getattr(s, "factory", None) for s in top]
        site = next(s for s in sites if s is not None)
        treq = StubTreq(site.resource)
        response = self.successResultOf(treq.get("http://agent/metrics"))
        metrics = parse(self.successResultOf(response.content()).decode("utf-8"))
        self.assertEqual(metrics["sentinel_instance_up"], {("a",): 0.0})
        self.assertIn("sentinel_checks_total", metrics)

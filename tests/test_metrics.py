"""
GET /metrics: both text formats, parsed by prometheus_client's own parsers,
against known states; gzip; slices.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from typing import Any

import attr
from kazoo.exceptions import ConnectionLoss, NoAuthError
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.openmetrics import parser as openmetrics_parser
from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from sentinel import __version__, agent
from sentinel.config import Config, RedisInstance
from sentinel.documents import agent_document
from sentinel.exposition import MAX_PREFERENCE_BYTES
from sentinel.guard import TAKEN_OVER_GRACE
from sentinel.health import InstanceHealth
from sentinel.httpd import HTTPServer, StatusSite
from sentinel.instance import InstanceState
from sentinel.metrics import (
    DURATION_BUCKETS,
    INSTANCES_PER_SLICE,
    AgentMetrics,
    LoadedAtStart,
)
from sentinel.observation import Observation, Replication
from sentinel.publisher import ZooKeeperPublisher
from sentinel.web import StatusApp
from tests.fakes import FAILED, FakeProbe, make_monitor
from tests.fakezk import FakeZooKeeper
from tests.httptest import (
    Connection,
    Turns,
    fetch,
    responses,
    run_until_answered,
    status_app,
)

Series = dict[tuple[str, ...], float]

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
OPENMETRICS_TYPES = [OPENMETRICS + "; escaping=underscores"]
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0;q=0.5,"
    "text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)

LOADING = Observation(ok=True, ready=False, latency_ms=1.5)
SLAVE = Observation(
    ok=True,
    ready=True,
    latency_ms=2.0,
    replication=Replication(
        role="slave",
        master_host="10.0.0.9",
        master_port=6379,
        master_link_status="down",
    ),
)


def parse(text: str, openmetrics: bool = False) -> dict[str, Series]:
    """
    Every sample by its name, then by its label values in the order of
    the label names sorted, ``addr`` left out (``("a", "master")`` for
    name, role), parsed by prometheus_client's parser of that format.
    """
    parser = (
        openmetrics_parser.text_string_to_metric_families
        if openmetrics
        else text_string_to_metric_families
    )
    samples: dict[str, Series] = {}
    for family in parser(text):
        for sample in family.samples:
            if "instance" in sample.labels:
                raise AssertionError(f"{sample.name} has an instance label")
            key = tuple(sample.labels[k] for k in sorted(sample.labels) if k != "addr")
            series = samples.setdefault(sample.name, {})
            if key in series:
                raise AssertionError(f"duplicate series {sample.name}{key}")
            series[key] = sample.value
    return samples


@attr.define
class Reloads:
    """A reloader's outcome, set by hand."""

    last_reload_ok: bool = True
    last_reload_at: float = 900.0
    restart_pending: Sequence[str] = ()


class ScrapeTestCase(SynchronousTestCase):
    """Scrapes a StatusApp in memory through StubTreq."""

    turns: Turns

    def scrape_response(
        self, app: StatusApp, **headers: str
    ) -> tuple[int, dict[bytes, list[bytes]], bytes]:
        sent = {k.replace("_", "-"): v for k, v in headers.items()}
        return fetch(StubTreq(app.resource()), self.turns, "/metrics", headers=sent)


class InstanceMetricsTests(ScrapeTestCase):
    """Per-instance gauges and the check counters, from a monitor on a Clock."""

    def setUp(self) -> None:
        self.reloads = Reloads()
        self.monitor, self.clock, self.probes, _ = make_monitor(
            ["a", "b", "c", "d"], rise=2, fall=3
        )
        self.clock.advance(1000.0)
        self.metrics = AgentMetrics(self.monitor, self.reloads)
        self.turns = Turns()
        self.app = StatusApp(
            monitor=self.monitor,
            reactor=self.clock,
            agent_id="me",
            gc_objects=lambda: 0,
            metrics=self.metrics,
            slicer=self.turns.slicer(self.clock),
        )
        self.probes["d"].result = FAILED
        self.monitor.startService()
        self.addCleanup(self.monitor.stopService)

    def scrape(self, openmetrics: bool = False) -> dict[str, Series]:
        accept = {"accept": OPENMETRICS} if openmetrics else {}
        code, _, body = self.scrape_response(self.app, **accept)
        self.assertEqual(code, 200)
        text = body.decode("utf-8")
        if openmetrics:
            self.assertTrue(text.endswith("\n# EOF\n"))
            self.assertEqual(text.count("# EOF"), 1)
        return parse(text, openmetrics)

    def tick(self, times: int = 1) -> None:
        """Let `times` ticks run, one interval apart."""
        for _ in range(times):
            self.clock.advance(1.0)

    def test_content_types(self) -> None:
        """
        The Prometheus text format 0.0.4 by default; OpenMetrics when the
        scraper prefers it (as Prometheus does); text 1.0.0 when asked.
        """
        code, headers, _ = self.scrape_response(self.app)
        self.assertEqual(code, 200)
        self.assertEqual(headers[b"Content-Type"], [CONTENT_TYPE_PLAIN_0_0_4.encode()])
        _, headers, body = self.scrape_response(self.app, accept=PROMETHEUS_ACCEPT)
        self.assertEqual(
            headers[b"Content-Type"], [t.encode() for t in OPENMETRICS_TYPES]
        )
        self.assertTrue(body.endswith(b"\n# EOF\n"))
        _, headers, _ = self.scrape_response(
            self.app, accept="text/plain;version=1.0.0"
        )
        self.assertEqual(
            headers[b"Content-Type"],
            [b"text/plain; version=1.0.0; charset=utf-8; escaping=underscores"],
        )

    def test_draining_and_discovered(self) -> None:
        """
        A drained instance is 1 in sentinel_instance_draining (0 otherwise);
        a replica found from a master is in sentinel_instance_discovered
        with that master's name, and a configured instance is not there.
        """
        self.probes["b"].result = Observation(
            ok=True, ready=False, latency_ms=0.5, error="draining", draining=True
        )
        self.monitor.add_instance(
            RedisInstance("a@10.0.0.9:6380", "10.0.0.9", 6380, discovered_by="a")
        )
        self.tick(3)
        for openmetrics in (False, True):
            metrics = self.scrape(openmetrics)
            self.assertEqual(metrics["sentinel_instance_draining"][("b",)], 1.0)
            self.assertEqual(metrics["sentinel_instance_draining"][("a",)], 0.0)
            self.assertEqual(
                metrics["sentinel_instance_discovered"],
                {("a", "a@10.0.0.9:6380"): 1.0},
            )

    def test_unjudged_since(self) -> None:
        """
        An instance whose checks say nothing has its
        sentinel_instance_unjudged_since_timestamp_seconds (since the first
        of them after its last judgement); one judged has none.
        """
        self.tick()
        self.probes["b"].result = None
        self.tick(3)
        for openmetrics in (False, True):
            metrics = self.scrape(openmetrics)
            self.assertEqual(
                metrics["sentinel_instance_unjudged_since_timestamp_seconds"],
                {("b",): 1002.0},
            )

    def test_nonsense_accept(self) -> None:
        """An Accept header prometheus_client cannot read gets the 0.0.4 text."""
        for accept in (
            "application/openmetrics-text; version=abc",
            "text/plain; version=x.y",
            ";;;,,,=",
        ):
            code, headers, body = self.scrape_response(self.app, accept=accept)
            self.assertEqual(code, 200)
            self.assertEqual(
                headers[b"Content-Type"], [CONTENT_TYPE_PLAIN_0_0_4.encode()]
            )
            self.assertIn("sentinel_instance_up", parse(body.decode()))

    def test_q_values(self) -> None:
        """
        ``Accept`` is read with its q-values: q=0 refuses a format, the
        highest q wins wherever it is listed, and an OpenMetrics or text
        version the agent does not write is never chosen nor echoed.
        """
        text_1 = "text/plain; version=1.0.0; charset=utf-8; escaping=underscores"
        for accept, content_type in (
            ("application/openmetrics-text;q=0", CONTENT_TYPE_PLAIN_0_0_4),
            (
                "text/plain;q=1, application/openmetrics-text;q=0.0000001",
                CONTENT_TYPE_PLAIN_0_0_4,
            ),
            (
                "text/plain;version=1.0.0;q=0.1, application/openmetrics-text;q=0.9",
                OPENMETRICS_TYPES[0],
            ),
            (
                "text/plain;q=0, application/openmetrics-text;q=0.1",
                OPENMETRICS_TYPES[0],
            ),
            ("text/plain;version=0.0.4;q=0, text/plain", text_1),
            ("text/plain;version=1.0.0, */*", text_1),
            ("application/openmetrics-text;version=9.9.9", CONTENT_TYPE_PLAIN_0_0_4),
            (
                "application/openmetrics-text;version=9.9.9,"
                "application/openmetrics-text;version=1.0.0;q=0.5",
                OPENMETRICS_TYPES[0],
            ),
            ("application/openmetrics-text;q=nan", CONTENT_TYPE_PLAIN_0_0_4),
        ):
            code, headers, body = self.scrape_response(self.app, accept=accept)
            self.assertEqual(
                (code, headers[b"Content-Type"]), (200, [content_type.encode()]), accept
            )
            self.assertEqual(body.endswith(b"# EOF\n"), "openmetrics" in content_type)

    def test_every_format_refused(self) -> None:
        """An ``Accept`` that refuses every format is a JSON 406 saying so."""
        for accept in ("*/*;q=0", "text/*;q=0, application/openmetrics-text;q=0"):
            code, headers, body = self.scrape_response(self.app, accept=accept)
            self.assertEqual(code, 406)
            self.assertEqual(headers[b"Content-Type"], [b"application/json"])
            self.assertEqual(headers[b"Vary"], [b"Accept, Accept-Encoding"])
            self.assertEqual(
                json.loads(body),
                {
                    "error": "the Accept header refuses every format there is:"
                    " text/plain 0.0.4; text/plain 1.0.0;"
                    " application/openmetrics-text 1.0.0"
                },
            )

    def test_overlong_preferences_refused(self) -> None:
        """
        An ``Accept`` or ``Accept-Encoding`` header over
        MAX_PREFERENCE_BYTES is a JSON 400 naming it, not read (each range
        costs the reactor); one of that length is read.
        """
        ranges = ",".join(["a/b;q=0.1"] * 200)
        longest = ranges[: MAX_PREFERENCE_BYTES - 4] + ",*/*"
        client = Connection(StatusSite(self.app.resource(), self.clock))
        for name in ("Accept", "Accept-Encoding"):
            client.request("/metrics", extra=f"{name}: {longest}\r\n")
            client.request("/metrics", extra=f"{name}: {longest}x\r\n")
        run_until_answered(self.clock, self.turns)
        answers = responses(client.output())
        self.assertEqual([code for code, _, _ in answers], [200, 400, 200, 400])
        for name, (_, headers, body) in zip(
            ("Accept", "Accept-Encoding"), answers[1::2], strict=True
        ):
            self.assertEqual(headers["content-type"], "application/json")
            self.assertEqual(
                json.loads(body),
                {
                    "error": f"the {name} header is {MAX_PREFERENCE_BYTES + 1}"
                    f" bytes long, over {MAX_PREFERENCE_BYTES}"
                },
            )

    def test_gzip_q_values(self) -> None:
        """
        gzip only with a q over 0 and not under identity's: q=0, ``*;q=0``,
        an invalid q or identity preferred give the plain text.
        """
        cases = (
            ("gzip", True),
            ("gzip;q=0.5", True),
            ("*", True),
            ("gzip;q=0", False),
            ("*;q=0", False),
            ("gzip;q=0, *", False),
            ("gzip;q=1e309", False),
            ("gzip;q=0.5, identity", False),
        )
        client = Connection(StatusSite(self.app.resource(), self.clock))
        for accept_encoding, _ in cases:
            client.request("/metrics", extra=f"Accept-Encoding: {accept_encoding}\r\n")
        run_until_answered(self.clock, self.turns)
        answers = responses(client.output())
        for (accept_encoding, gzipped), (_, headers, body) in zip(
            cases, answers, strict=True
        ):
            self.assertEqual(body.startswith(b"\x1f\x8b"), gzipped, accept_encoding)
            self.assertEqual("content-encoding" in headers, gzipped, accept_encoding)

    def test_both_formats_say_the_same(self) -> None:
        """Every sample of one format is in the other, with the same value."""
        self.probes["c"].result = SLAVE
        self.tick()
        text, openmetrics = self.scrape(), self.scrape(openmetrics=True)
        for name in ("sentinel_instance_up", "sentinel_instance_role"):
            self.assertEqual(text[name], openmetrics[name])
        self.assertEqual(
            text["sentinel_checks_total"], openmetrics["sentinel_checks_total"]
        )
        self.assertEqual(
            text["sentinel_build_info"], {(__version__,): 1.0}, "the 0.0.4 gauge"
        )
        self.assertEqual(openmetrics["sentinel_build_info"], {(__version__,): 1.0})

    def test_gzip(self) -> None:
        """Asked for gzip, the body is gzipped and says so; else it is not."""
        site = StatusSite(self.app.resource(), self.clock)
        client = Connection(site)
        client.request("/metrics")
        client.request("/metrics", extra="Accept-Encoding: gzip, deflate\r\n")
        client.request(
            "/metrics", extra=f"Accept-Encoding: gzip\r\nAccept: {OPENMETRICS}\r\n"
        )
        run_until_answered(self.clock, self.turns)
        plain, zipped, openmetrics = responses(client.output())
        self.assertNotIn("content-encoding", plain[1])
        self.assertEqual(zipped[1]["content-encoding"], "gzip")
        unzipped = parse(gzip.decompress(zipped[2]).decode())
        for name, series in parse(plain[2].decode()).items():
            if name.startswith("sentinel_"):  # process_* move between scrapes
                self.assertEqual(unzipped[name], series, name)
        self.assertEqual(openmetrics[1]["content-encoding"], "gzip")
        self.assertTrue(gzip.decompress(openmetrics[2]).endswith(b"\n# EOF\n"))

    def test_without_metrics_404(self) -> None:
        """A StatusApp given no metrics answers /metrics with a 404."""
        app, _, _, _, self.turns = status_app(["a"])
        code, _, _ = self.scrape_response(app)
        self.assertEqual(code, 404)

    def test_instance_gauges(self) -> None:
        """
        up, ready, role, latency, master link and last change are exactly
        each instance's state: a master, one LOADING (up, not ready), a
        replica whose link is down, and a down one (no role, no latency).
        """
        self.probes["b"].result = LOADING
        self.probes["c"].result = SLAVE
        self.tick()
        for openmetrics in (False, True):
            metrics = self.scrape(openmetrics)
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
            self.assertEqual(metrics["sentinel_instance_master_link_up"], {("c",): 0.0})
            self.assertEqual(
                metrics["sentinel_instance_last_change_timestamp_seconds"],
                {("a",): 1000.0, ("b",): 1000.0, ("c",): 1000.0, ("d",): 1000.0},
            )

    def test_verdict_without_a_group(self) -> None:
        """
        Without a group, ``sentinel_instance_verdict_up`` is each
        instance's own status, and absent until it is decided.
        """
        self.tick()
        self.monitor.add_instance(RedisInstance("e", "127.0.0.1", 7005))
        for openmetrics in (False, True):
            self.assertEqual(
                self.scrape(openmetrics)["sentinel_instance_verdict_up"],
                {("a",): 1.0, ("b",): 1.0, ("c",): 1.0, ("d",): 0.0},
            )

    def test_verdict_from_the_group(self) -> None:
        """
        With a group, ``sentinel_instance_verdict_up`` says the status the
        agent publishes (its verdict), not its own opinion, and nothing
        for an instance another agent publishes: one agent's own trouble
        is not an alert on the healthy instance.
        """
        verdicts = {"a": "up", "b": "down", "d": "up"}
        metrics = AgentMetrics(self.monitor, self.reloads, verdict=verdicts.get)
        self.app = attr.evolve(self.app, metrics=metrics)
        self.tick()
        scraped = self.scrape()
        self.assertEqual(
            scraped["sentinel_instance_verdict_up"],
            {("a",): 1.0, ("b",): 0.0, ("d",): 1.0},
        )
        self.assertEqual(scraped["sentinel_instance_up"][("d",)], 0.0)

    def test_master_link_up(self) -> None:
        """A replica whose master_link_status is up shows 1."""
        assert SLAVE.replication is not None
        linked = attr.evolve(SLAVE.replication, master_link_status="up")
        self.probes["c"].result = SLAVE._replace(replication=linked)
        self.tick()
        self.assertEqual(
            self.scrape()["sentinel_instance_master_link_up"], {("c",): 1.0}
        )

    def test_name_and_addr_labels(self) -> None:
        """
        Each series is labelled name and addr (HOST:PORT, an IPv6 host in
        brackets); names with quotes, backslashes and non-ASCII come back
        whole from both parsers.
        """
        odd = 'we"ird\\name é'
        self.monitor.add_instance(RedisInstance(odd, "::1", 6380))
        self.tick()
        for openmetrics in (False, True):
            accept = {"accept": OPENMETRICS} if openmetrics else {}
            _, _, body = self.scrape_response(self.app, **accept)
            parser = (
                openmetrics_parser.text_string_to_metric_families
                if openmetrics
                else text_string_to_metric_families
            )
            [up] = [
                f for f in parser(body.decode()) if f.name == "sentinel_instance_up"
            ]
            labels = {s.labels["name"]: s.labels for s in up.samples}
            self.assertEqual(labels["a"], {"name": "a", "addr": "127.0.0.1:7000"})
            self.assertEqual(labels[odd], {"name": odd, "addr": "[::1]:6380"})

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
        for openmetrics in (False, True):
            metrics = self.scrape(openmetrics)
            # Tick 1: a, b, c ok, d error; tick 2: a ok, b timeout, c, d error.
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

    def test_config_reload(self) -> None:
        """The reloader's outcome: 1 and its time; 0 once a reload is refused."""
        metrics = self.scrape(openmetrics=True)
        self.assertEqual(metrics["sentinel_config_last_reload_successful"], {(): 1.0})
        self.assertEqual(
            metrics["sentinel_config_last_reload_success_timestamp_seconds"],
            {(): 900.0},
        )
        self.reloads.last_reload_ok = False
        self.assertEqual(
            self.scrape()["sentinel_config_last_reload_successful"], {(): 0.0}
        )

    def test_restart_pending(self) -> None:
        """
        How many restart-only settings the file applied last changes: an
        operator who changed zookeeper.replicas and sent SIGHUP sees that
        it waits for a restart.
        """
        self.assertEqual(self.scrape()["sentinel_config_restart_pending"], {(): 0.0})
        self.reloads.restart_pending = ("zookeeper.replicas 1 -> 2",)
        self.assertEqual(self.scrape()["sentinel_config_restart_pending"], {(): 1.0})

    def test_process_metrics_and_no_zookeeper(self) -> None:
        """The process_* families are there; ZooKeeper's are not, without it."""
        for openmetrics in (False, True):
            metrics = self.scrape(openmetrics)
            for name in (
                "process_resident_memory_bytes",
                "process_virtual_memory_bytes",
                "process_start_time_seconds",
                "process_open_fds",
                "process_max_fds",
                "process_cpu_seconds_total",
            ):
                self.assertIn(name, metrics)
            self.assertGreater(metrics["process_open_fds"][()], 0)
            self.assertFalse([n for n in metrics if n.startswith("sentinel_zk")])

    def test_registries_are_separate(self) -> None:
        """A second agent's metrics do not see the first one's checks."""
        other, clock, _, _ = make_monitor(["x"])
        other_app = StatusApp(
            monitor=other,
            reactor=clock,
            agent_id="me",
            gc_objects=lambda: 0,
            metrics=AgentMetrics(other, LoadedAtStart(0.0)),
            slicer=self.turns.slicer(clock),
        )
        _, _, body = self.scrape_response(other_app)
        metrics = parse(body.decode())
        self.assertEqual(metrics["sentinel_instance_up"], {("x",): 0.0})
        self.assertEqual(sum(metrics["sentinel_checks_total"].values()), 0.0)


class SliceTests(SynchronousTestCase):
    """A scrape of many instances is written a slice per turn."""

    def test_lines_per_turn(self) -> None:
        """
        With 2.5 slices' worth of instances, no turn writes more than
        INSTANCES_PER_SLICE lines of one family, and the whole scrape
        parses in both formats.
        """
        count = INSTANCES_PER_SLICE * 5 // 2
        app, monitor, clock, _, turns = status_app([f"r{i}" for i in range(count)])
        app = attr.evolve(app, metrics=AgentMetrics(monitor, LoadedAtStart(0.0)))
        monitor.startService()
        site = StatusSite(app.resource(), clock)
        for accept in ("", f"Accept: {OPENMETRICS}\r\n"):
            client = Connection(site)
            client.request("/metrics", extra=accept)
            written = 0
            while turns.waiting:
                turns.run()
                now = client.output().count(b"\nsentinel_instance_")
                self.assertLessEqual(now - written, INSTANCES_PER_SLICE)
                written = now
            # Masters all, configured all: no master link or discovered
            # series (up, ready, role, latency, last change, draining,
            # verdict).
            self.assertEqual(written, count * 7)
            [(code, _, body)] = responses(client.output())
            metrics = parse(body.decode(), openmetrics=bool(accept))
            self.assertEqual(len(metrics["sentinel_instance_up"]), count)


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
        metrics = AgentMetrics(self.monitor, LoadedAtStart(0.0), self.publisher)
        self.turns = Turns()
        self.app = StatusApp(
            monitor=self.monitor,
            reactor=self.clock,
            agent_id="me",
            gc_objects=lambda: 0,
            metrics=metrics,
            slicer=self.turns.slicer(self.clock),
        )
        self.state = InstanceState(
            RedisInstance("r", "10.0.0.1", 6379),
            FakeProbe(RedisInstance("r", "10.0.0.1", 6379)),
            InstanceHealth(rise=1, fall=1),
        )

    def scrape(self) -> dict[str, Series]:
        _, _, body = self.scrape_response(self.app, accept=OPENMETRICS)
        return parse(body.decode(), openmetrics=True)

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


def http_site(top: Any) -> StatusSite:
    """The status site of the HTTP server among an agent's services."""
    services = list(top)
    while services:
        service = services.pop()
        if isinstance(service, HTTPServer):
            site: StatusSite = service.factory.wrappedFactory
            return site
        services.extend(getattr(service, "services", []))
    raise AssertionError("no HTTP server")


class AgentWiringTests(SynchronousTestCase):
    """make_agent serves /metrics from its own registry."""

    def test_agent_serves_metrics(self) -> None:
        """The HTTP site of a built agent answers /metrics for its instances."""
        config = Config(
            instances=(RedisInstance("a", "127.0.0.1", 6379),), agent_id="me"
        )
        reactor = MemoryReactorClock()
        top = agent.make_agent(config, None, reactor)
        client = Connection(http_site(top))
        client.request("/metrics")
        for _ in range(100):
            reactor.advance(0)
        [(code, _, body)] = responses(client.output())
        self.assertEqual(code, 200)
        metrics = parse(body.decode("utf-8"))
        self.assertEqual(metrics["sentinel_instance_up"], {("a",): 0.0})
        self.assertIn("sentinel_checks_total", metrics)
        self.assertEqual(metrics["sentinel_config_last_reload_successful"], {(): 1.0})


class ConflictMetricsTests(ZooKeeperMetricsTests):
    """The conflict gauges and counter, on the fake ZooKeeper."""

    def test_persistent_squatter(self) -> None:
        """
        A persistent node on an instance's path is one conflict now and one
        begun; once it is deleted and taken over, none now, one begun.
        """
        self.publisher.startService()
        self.zk.connect()
        self.zk.put("/sentinel/instances/r", b'{"status": "up"}')
        self.publish(Observation(ok=True, ready=True, latency_ms=0.5))
        metrics = self.scrape()
        self.assertEqual(metrics["sentinel_zk_conflicts"], {(): 1.0})
        self.assertEqual(metrics["sentinel_zk_conflicts_started_total"], {(): 1.0})
        self.assertEqual(metrics["sentinel_zk_waiting_takeover"], {(): 1.0})
        self.zk.remove("/sentinel/instances/r")
        for _ in range(3):
            self.clock.advance(1.0)
        metrics = self.scrape()
        self.assertEqual(metrics["sentinel_zk_conflicts"], {(): 0.0})
        self.assertEqual(metrics["sentinel_zk_conflicts_started_total"], {(): 1.0})
        self.assertEqual(metrics["sentinel_zk_waiting_takeover"], {(): 0.0})
        self.assertEqual(self.zk.owner("/sentinel/instances/r"), self.zk.session_id)
        self.flushLoggedErrors()

    def test_failing_nodes(self) -> None:
        """A node whose writes fail counts as failing until one succeeds."""
        self.publisher.startService()
        self.zk.connect()
        self.zk.fail_next(
            "create", NoAuthError(), path="/sentinel/instances/r", times=2
        )
        self.publish(Observation(ok=True, ready=True, latency_ms=0.5))
        self.assertEqual(self.scrape()["sentinel_zk_failing_nodes"], {(): 1.0})
        self.clock.advance(1.0)
        self.assertEqual(self.scrape()["sentinel_zk_failing_nodes"], {(): 1.0})
        self.clock.advance(1.0)
        self.assertEqual(self.scrape()["sentinel_zk_failing_nodes"], {(): 0.0})


class WrittenOverMetricsTests(ZooKeeperMetricsTests):
    """Writes over our nodes by other clients, counted where they can be read."""

    def forge(self) -> None:
        """
        Another client writes ``up`` over the node (our session keeps it),
        in the name of agent ``b``.
        """
        self.zk.put(
            "/sentinel/instances/r",
            b'{"status": "up", "agent": "b"}',
            self.zk.session_id,
        )

    def counts(self) -> tuple[float, float, int, int]:
        metrics = self.scrape()
        stats = self.publisher.stats()
        return (
            metrics["sentinel_zk_late_sets_after_takeover_total"][()],
            metrics["sentinel_zk_nodes_written_over_total"][()],
            stats["late_sets_after_takeover"],
            stats["nodes_written_over"],
        )

    def test_late_sets_and_writes_over(self) -> None:
        """
        A set over a node within TAKEN_OVER_GRACE of our takeover of it
        from agent ``b``, in ``b``'s name, is a late set, in /metrics and
        /debug/stats; one past the grace is a write over it, counted apart.
        """
        self.publisher.startService()
        self.zk.connect()
        self.publish(Observation(ok=True, ready=True, latency_ms=0.5))
        self.publish(FAILED)
        self.assertEqual(self.counts(), (0.0, 0.0, 0, 0))
        node = self.publisher._nodes.instances["r"]
        node.taken_at = self.clock.seconds()
        node.taken_from_agent = "b"
        self.forge()
        self.clock.advance(TAKEN_OVER_GRACE - 1.0)
        self.publish(Observation(ok=True, ready=True, latency_ms=0.5))
        self.assertEqual(self.counts(), (1.0, 0.0, 1, 0))
        self.clock.advance(1.0)
        self.forge()
        self.publish(FAILED)
        self.assertEqual(self.counts(), (1.0, 1.0, 1, 1))
        self.assertEqual(self.zk.document("/sentinel/instances/r")["status"], "down")


class HealthyMetricTests(SynchronousTestCase):
    """sentinel_healthy follows GET /healthz."""

    def test_follows_healthz(self) -> None:
        """1 while /healthz would answer 200, 0 as soon as it gives a reason."""
        reasons: list[str] = []
        app, monitor, _, _, turns = status_app(["a"])
        metrics = AgentMetrics(
            monitor, LoadedAtStart(0.0), unhealthy_reasons=lambda: reasons
        )
        app = attr.evolve(app, metrics=metrics)

        def healthy() -> Series:
            _, _, body = fetch(StubTreq(app.resource()), turns, "/metrics")
            return parse(body.decode())["sentinel_healthy"]

        self.assertEqual(healthy(), {(): 1.0})
        reasons.append("the check loop last ticked never")
        self.assertEqual(healthy(), {(): 0.0})

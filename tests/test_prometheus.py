"""
A real Prometheus (Debian's) scraping a real ``twistd -n sentinel`` agent
and discovering Redis servers through the agent's serverset or nerve nodes
in a real ZooKeeper, as an operator who already runs Prometheus would set it up;
and the alert rules and dashboard in ``contrib/`` checked against what the
agent exports.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import treq
from kazoo.client import KazooClient
from twisted.internet import reactor as _reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from tests.polling import START_BOUND, wait_for
from tests.prometheus import PrometheusServer
from tests.servers import LOOPBACK, RedisServer, shared_zookeeper
from tests.test_conflicts import AgentProcess

reactor: Any = _reactor

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "contrib" / "prometheus" / "sentinel.rules.yml"
EXAMPLE = REPO / "contrib" / "prometheus" / "prometheus.yml"
DASHBOARD = REPO / "contrib" / "grafana" / "sentinel-dashboard.json"

INTERVAL, TIMEOUT, FALL = 0.2, 0.1, 3
# Twistd's start, then Prometheus's first scrapes (every second) and discovery.
SCRAPED_BOUND = START_BOUND + 5.0
# Detection, the member's removal, Prometheus's next look at ZooKeeper.
GONE_BOUND = INTERVAL * FALL + TIMEOUT + 5.0

# A metric name in a PromQL expression of ours.
METRIC_NAME = re.compile(r"\bsentinel_[a-z_]+")
# The suffixes Prometheus adds to a family's samples.
SAMPLE_SUFFIX = re.compile(r"_(total|bucket|sum|count|created|info)$")


def exported_families(text: str) -> set[str]:
    """The family names in a ``/metrics`` answer (its ``# TYPE`` lines)."""
    return {
        line.split()[2]
        for line in text.splitlines()
        if line.startswith("# TYPE ") and len(line.split()) > 2
    }


class PrometheusTests(TestCase):
    """What Prometheus sees of an agent and of its discovery nodes."""

    def discovered_fleet(
        self, count: int, form: str, discovery: str, prefix: str
    ) -> tuple[list[RedisServer], AgentProcess]:
        """
        `count` redis-servers, named `prefix` and their index, watched by
        one agent that publishes them in discovery `form` under
        `discovery`/cache (labelled by zone for nerve), with the service
        path made beforehand.
        """
        zookeeper = shared_zookeeper()
        servers = [RedisServer().start() for _ in range(count)]
        for server in servers:
            self.addCleanup(server.stop)
        config = Path(self.mktemp()).absolute()
        config.write_text(
            f"interval = {INTERVAL}\ntimeout = {TIMEOUT}\nfall = {FALL}\nrise = 2\n"
            f'[zookeeper]\nhosts = "{zookeeper.hosts}"\nroot = "/prom-test-{form}"\n'
            f'discovery = "{form}"\ndiscovery_root = "{discovery}"\n'
            + "".join(
                f'[[redis]]\nname = "{prefix}{i}"\nhost = "{LOOPBACK}"\n'
                f'port = {server.port}\nservice = "cache"\n'
                f'labels = {{ zone = "z{i}" }}\n'
                for i, server in enumerate(servers)
            )
        )
        agent = AgentProcess(Path(self.mktemp()), "--config", str(config))
        self.addCleanup(agent.child.stop)
        # A path that did not exist when Prometheus started was seen about
        # 10 s later here (its ZooKeeper discovery retries slowly): make it
        # exist first, as it does in a running fleet.
        kazoo = KazooClient(hosts=zookeeper.hosts, timeout=5)
        kazoo.start(timeout=5)
        self.addCleanup(kazoo.close)
        self.addCleanup(kazoo.stop)
        kazoo.ensure_path(f"{discovery}/cache")
        return servers, agent

    async def test_scraped_and_discovered(self) -> None:
        """
        Prometheus scrapes the agent's series labelled ``name`` and
        ``addr`` (its own ``instance`` label untouched, no
        ``exported_instance``), discovers exactly the up instances from the
        serverset members, drops a SIGSTOPped one from its targets, and
        the contrib rule for a down instance fires for it alone.
        """
        zookeeper = shared_zookeeper()
        discovery = "/prom-discovery"
        servers, agent = self.discovered_fleet(3, "serverset", discovery, "r")
        # Prometheus is told the agent's port: the one it listens on.
        await agent.listening()
        prometheus = PrometheusServer(
            {
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {
                        "job_name": "sentinel",
                        "static_configs": [{"targets": [f"{LOOPBACK}:{agent.http}"]}],
                    },
                    {
                        "job_name": "redis",
                        "serverset_sd_configs": [
                            {
                                "servers": [zookeeper.hosts],
                                "paths": [f"{discovery}/cache"],
                                "timeout": "5s",
                            }
                        ],
                    },
                ],
            }
        ).start()
        self.addCleanup(prometheus.stop)
        addresses = {f"{LOOPBACK}:{server.port}" for server in servers}

        def up_series() -> dict[str, dict[str, Any]]:
            return {
                series["metric"]["name"]: series
                for series in prometheus.query("sentinel_instance_up == 1")
            }

        def discovered() -> set[str]:
            return {
                target["labels"]["instance"]
                for target in prometheus.targets()
                if target["labels"].get("job") == "redis"
            }

        await wait_for(
            reactor,
            lambda: len(up_series()) == 3 and discovered() == addresses,
            SCRAPED_BOUND,
            "three instances scraped up and discovered",
            step=0.2,
        )
        for name, series in up_series().items():
            labels = series["metric"]
            self.assertEqual(labels["instance"], f"{LOOPBACK}:{agent.http}")
            self.assertEqual(labels["job"], "sentinel")
            self.assertIn(labels["addr"], addresses, name)
        self.assertEqual(
            prometheus.query('{__name__=~"sentinel_.+", exported_instance!=""}'), []
        )
        build = prometheus.query("sentinel_build_info")
        self.assertEqual(len(build), 1)

        stopped = servers[1]
        stopped.pause()
        self.addCleanup(stopped.restore)
        await wait_for(
            reactor,
            lambda: discovered() == addresses - {f"{LOOPBACK}:{stopped.port}"},
            GONE_BOUND,
            "the stopped instance gone from Prometheus's targets",
            step=0.1,
        )
        await wait_for(
            reactor,
            lambda: set(up_series()) == {"r0", "r2"},
            GONE_BOUND,
            "the stopped instance scraped down",
            step=0.2,
        )

        def alerting() -> set[str]:
            alerts = prometheus.api("alerts")["alerts"]
            return {
                alert["labels"].get("name", "")
                for alert in alerts
                if alert["labels"]["alertname"] == "RedisInstanceDown"
            }

        await wait_for(
            reactor, lambda: alerting() == {"r1"}, 5.0, "the rule for r1", step=0.2
        )

        # Everything contrib/ refers to is exported by a real agent.
        pool = HTTPConnectionPool(reactor, persistent=False)
        response = await treq.get(
            f"http://{LOOPBACK}:{agent.http}/metrics", timeout=5, pool=pool
        )
        text = (await response.content()).decode("utf-8")
        exported = exported_families(text)
        referred = set(METRIC_NAME.findall(RULES.read_text()))
        for panel in json.loads(DASHBOARD.read_text())["panels"]:
            for target in panel["targets"]:
                referred.update(METRIC_NAME.findall(target["expr"]))
        for name in sorted(referred):
            with self.subTest(metric=name):
                family = SAMPLE_SUFFIX.sub("", name)
                self.assertTrue(
                    family in exported or name in exported,
                    f"{name}, named in contrib/, is not exported",
                )

    async def test_nerve_members_discovered(self) -> None:
        """
        Prometheus's ``nerve_sd_configs`` reads the agent's nerve members as
        they are: a target per up instance, its ``name`` as
        ``__meta_nerve_endpoint_name``; a SIGSTOPped instance leaves the
        targets.
        """
        zookeeper = shared_zookeeper()
        discovery = "/prom-nerve"
        servers, _ = self.discovered_fleet(2, "nerve", discovery, "n")
        prometheus = PrometheusServer(
            {
                "scrape_configs": [
                    {
                        "job_name": "redis",
                        "nerve_sd_configs": [
                            {
                                "servers": [zookeeper.hosts],
                                "paths": [f"{discovery}/cache"],
                                "timeout": "5s",
                            }
                        ],
                    },
                ],
            }
        ).start()
        self.addCleanup(prometheus.stop)
        named = {
            f"{LOOPBACK}:{server.port}": f"n{i}" for i, server in enumerate(servers)
        }

        def discovered() -> dict[str, str]:
            return {
                target["labels"]["instance"]: target["discoveredLabels"].get(
                    "__meta_nerve_endpoint_name", ""
                )
                for target in prometheus.targets()
            }

        await wait_for(
            reactor,
            lambda: discovered() == named,
            SCRAPED_BOUND,
            "both instances discovered by name",
            step=0.2,
        )
        stopped = servers[0]
        stopped.pause()
        self.addCleanup(stopped.restore)
        await wait_for(
            reactor,
            lambda: discovered() == {f"{LOOPBACK}:{servers[1].port}": "n1"},
            GONE_BOUND,
            "the stopped instance gone from Prometheus's targets",
            step=0.1,
        )


def _series(metric: str, agent: str, name: str, values: str) -> str:
    """One input series of a ``promtool test rules`` file."""
    labels = f'job="sentinel", instance="{agent}", name="{name}", addr="{name}:6379"'
    return f"      - series: '{metric}{{{labels}}}'\n        values: '{values}'\n"


def _not_ready_series() -> str:
    """
    r1 on a single agent (a); in a group, r2 and r3 on three observers,
    g1 their primary: r2 up and not ready for all three, r3 down by the
    verdict (g1 and g3 see it down) though g2 sees it up and not ready.
    """
    views = {
        # (agent, name): (verdict_up or None where not primary, up, ready)
        ("a", "r1"): ("1", "1", "0"),
        ("g1", "r2"): ("1", "1", "0"),
        ("g2", "r2"): (None, "1", "0"),
        ("g3", "r2"): (None, "1", "0"),
        ("g1", "r3"): ("0", "0", "0"),
        ("g2", "r3"): (None, "1", "0"),
        ("g3", "r3"): (None, "0", "0"),
    }
    text = ""
    for (agent, name), (verdict, up, ready) in views.items():
        if verdict is not None:
            text += _series(
                "sentinel_instance_verdict_up", agent, name, f"{verdict}x20"
            )
        text += _series("sentinel_instance_up", agent, name, f"{up}x20")
        text += _series("sentinel_instance_ready", agent, name, f"{ready}x20")
    return text


def _not_ready_alert(agent: str, name: str) -> str:
    """One RedisInstanceNotReady alert expected, with its annotations."""
    return (
        f"          - exp_labels: {{severity: warning, job: sentinel, "
        f"instance: {agent}, name: {name}, addr: '{name}:6379'}}\n"
        f"            exp_annotations:\n"
        f"              summary: 'Redis {name} is alive but not ready'\n"
        f"              description: '{name} ({name}:6379) answers LOADING or "
        f"MASTERDOWN, or is drained, and has not been ready for 5 minutes.'\n"
    )


NOT_READY_TESTS = (
    "rule_files: [RULES]\n"
    "evaluation_interval: 1m\n"
    "tests:\n"
    "  - interval: 1m\n"
    "    input_series:\n" + _not_ready_series() + "    alert_rule_test:\n"
    "      - eval_time: 10m\n"
    "        alertname: RedisInstanceNotReady\n"
    "        exp_alerts:\n" + _not_ready_alert("a", "r1") + _not_ready_alert("g1", "r2")
)


class PromtoolTests(TestCase):
    """The contrib files pass Prometheus's own checks."""

    def promtool(self, *args: str) -> subprocess.CompletedProcess[str]:
        promtool = shutil.which("promtool")
        if promtool is None:
            self.fail("promtool is missing: make test installs Debian's prometheus")
        return subprocess.run(
            [promtool, *args], capture_output=True, text=True, timeout=60
        )

    def test_rules(self) -> None:
        """``promtool check rules`` accepts the alert rules."""
        result = self.promtool("check", "rules", str(RULES))
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_not_ready_alert_single_and_group(self) -> None:
        """
        ``promtool test rules``: RedisInstanceNotReady fires once per
        instance up and not ready, for a single agent and in a group,
        where only the instance's primary exports the published status
        (``sentinel_instance_verdict_up``); never for an observer's own
        view alone. On each observer's ``up and ready == 0``, it fired
        once per observer (r2: three alerts), and for an instance whose
        verdict is down (r3) from an observer that saw it up.
        """
        ready_tests = Path(self.mktemp() + ".yml")
        ready_tests.write_text(NOT_READY_TESTS.replace("RULES", str(RULES)))
        result = self.promtool("test", "rules", str(ready_tests))
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

    def test_example_config(self) -> None:
        """``promtool check config`` accepts the example configuration."""
        result = self.promtool("check", "config", str(EXAMPLE))
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

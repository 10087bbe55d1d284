"""Every HTTP route, in memory through StubTreq."""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.trial.unittest import SynchronousTestCase

from sentinel.web import StatusApp
from tests.contract import INSTANCE_COUNTERS, INSTANCE_FIELDS
from tests.fakes import make_monitor


class RouteTests(SynchronousTestCase):
    """The JSON shapes of DESIGN.md section 5."""

    def setUp(self) -> None:
        self.monitor, self.clock, self.probes, _ = make_monitor(["a", "b"])
        self.probes["b"].hang = True
        self.clock.advance(1000.0)
        self.monitor.startService()
        self.app = StatusApp(self.monitor, self.clock, agent_id="agent-1")
        self.treq = StubTreq(self.app.app.resource())

    def get(self, path: str) -> tuple[int, Any]:
        response = self.successResultOf(self.treq.get("http://agent" + path))
        body = self.successResultOf(response.content())
        if response.headers.getRawHeaders("content-type") == ["application/json"]:
            return response.code, json.loads(body)
        return response.code, body.decode("utf-8")

    def test_pending(self) -> None:
        """/pending lists the hung check with stage and age."""
        self.clock.advance(0.25)
        code, body = self.get("/pending")
        self.assertEqual(code, 200)
        self.assertEqual(body["count"], 1)
        self.assertEqual(body["oldest_seconds"], 0.25)
        self.assertEqual(
            body["checks"], [{"instance": "b", "stage": "ping", "age_seconds": 0.25}]
        )

    def test_instances(self) -> None:
        """/instances has the published fields plus counters, for each."""
        code, body = self.get("/instances")
        self.assertEqual(code, 200)
        self.assertEqual([i["name"] for i in body["instances"]], ["a", "b"])
        for instance in body["instances"]:
            self.assertEqual(set(instance), INSTANCE_FIELDS | INSTANCE_COUNTERS)
        a = body["instances"][0]
        self.assertEqual((a["status"], a["ready"], a["agent"]), ("up", True, "agent-1"))
        self.assertEqual(a["schema"], 1)
        self.assertEqual(a["since"], 1000.0)

    def test_one_instance_and_404(self) -> None:
        """/instances/<name> gives one; an unknown name is a JSON 404."""
        code, body = self.get("/instances/a")
        self.assertEqual((code, body["name"]), (200, "a"))
        code, body = self.get("/instances/nope")
        self.assertEqual(code, 404)
        self.assertEqual(body, {"error": "unknown instance 'nope'"})

    def test_healthz(self) -> None:
        """Healthy while ticking; 503 with a reason when the loop stalls."""
        self.assertEqual(self.get("/healthz"), (200, {"status": "ok"}))
        self.monitor.stopService()
        self.clock.advance(2.5)
        code, body = self.get("/healthz")
        self.assertEqual(code, 503)
        self.assertIn("last ticked 2.5 s ago", body["reasons"][0])

    def test_healthz_extra_checks(self) -> None:
        """Checks added by other parts (ZooKeeper) make it unhealthy."""
        self.app.add_health_check(lambda: "zookeeper: suspended")
        code, body = self.get("/healthz")
        self.assertEqual((code, body["reasons"]), (503, ["zookeeper: suspended"]))

    def test_debug_stats(self) -> None:
        """/debug/stats has exactly the documented counters."""
        self.clock.pump([0.5, 0.5])
        code, body = self.get("/debug/stats")
        self.assertEqual(code, 200)
        self.assertEqual(
            set(body),
            {
                "pending_checks",
                "delayed_calls",
                "open_fds",
                "rss_bytes",
                "gc_objects",
                "ticks",
                "overruns",
                "uptime_seconds",
                "checks",
                "failures",
                "instances",
                "instances_up",
                "tick_completion_seconds",
            },
        )
        self.assertEqual((body["pending_checks"], body["ticks"]), (1, 2))
        # a's two answers and b's first check, timed out; b's second hangs.
        self.assertEqual(body["checks"], 3)
        self.assertEqual(body["failures"], 1)
        self.assertEqual((body["instances"], body["instances_up"]), (2, 1))
        # "a" answered at once on the first tick; "b" hangs and is timed out.
        completion = body["tick_completion_seconds"]
        self.assertEqual((completion["samples"], completion["max"]), (1, 0.5))
        self.assertEqual(body["uptime_seconds"], 1.0)
        self.assertGreater(body["open_fds"], 0)
        self.assertGreater(body["rss_bytes"], 1 << 20)

    def test_index(self) -> None:
        """/ is an HTML page with a row per instance."""
        code, body = self.get("/")
        self.assertEqual(code, 200)
        self.assertIn('<tr class="up" data-name="a">', body)
        self.assertIn("pending checks: 1", body)

"""Every HTTP route, in memory through StubTreq, and the query of /instances."""

from __future__ import annotations

import gc
import json
import threading
from typing import Any
from urllib.parse import quote

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sentinel.config import RedisInstance
from sentinel.listing import (
    DOCUMENTS_PER_SLICE,
    NAMES_PER_SLICE,
    BadRequest,
    InstanceQuery,
    instance_slices,
    pending_slices,
)
from sentinel.tracker import PendingTracker
from tests.contract import DEBUG_STATS_FIELDS, INSTANCE_COUNTERS, INSTANCE_FIELDS
from tests.fakes import FAILED
from tests.httptest import fetch, fetch_json, status_app


class _Check:
    """A check in flight, as the pending list holds it."""

    def __init__(self, name: str, started_at: float) -> None:
        self.name = name
        self.started_at = started_at
        self.stage = "connect"
        self.check = None


class PendingListTests(SynchronousTestCase):
    """The body of /pending, rendered a turn or more after the request."""

    def test_ages_read_with_the_list(self) -> None:
        """
        Ages are taken when the list is read: a check launched between the
        request and the first slice is 0 s old, never less.
        """
        clock = Clock()
        clock.advance(1000.0)
        tracker = PendingTracker()
        body = pending_slices(tracker, clock)
        clock.advance(0.5)
        tracker.add(_Check("late", clock.seconds()))
        document = json.loads(b"".join(body))
        self.assertEqual(document["oldest_seconds"], 0.0)
        self.assertEqual(
            document["checks"],
            [{"instance": "late", "stage": "connect", "age_seconds": 0.0}],
        )


class RouteTests(SynchronousTestCase):
    """The JSON shapes of DESIGN.md section 5."""

    def setUp(self) -> None:
        self.app, self.monitor, self.clock, self.probes, self.turns = status_app(
            ["a", "b"],
            health_checks=(lambda: None,),
            stats_sources={"extra": lambda: {"x": 1}},
        )
        self.probes["b"].hang = True
        self.monitor.startService()
        self.treq = StubTreq(self.app.resource())

    def get(self, path: str) -> tuple[int, Any]:
        return fetch_json(self.treq, self.turns, path)

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

    def test_pending_empty(self) -> None:
        """Nothing in flight: a count of 0, no oldest, no checks."""
        self.probes["b"].in_flight.cancel()  # type: ignore[union-attr]
        code, body = self.get("/pending")
        self.assertEqual(
            (code, body), (200, {"count": 0, "oldest_seconds": None, "checks": []})
        )

    def test_instances(self) -> None:
        """/instances has the published fields plus counters, for each."""
        code, body = self.get("/instances")
        self.assertEqual(code, 200)
        self.assertEqual(list(body), ["instances"])
        self.assertEqual([i["name"] for i in body["instances"]], ["a", "b"])
        for instance in body["instances"]:
            self.assertEqual(set(instance), INSTANCE_FIELDS | INSTANCE_COUNTERS)
        a = body["instances"][0]
        self.assertEqual((a["status"], a["ready"], a["agent"]), ("up", True, "agent-1"))
        self.assertEqual(a["schema"], 1)
        self.assertEqual(a["since"], 1000.0)

    def test_connected_address(self) -> None:
        """
        /instances names the address of the connection kept (of a host
        name's addresses, the one that connected), null without one.
        """
        self.probes["a"].address = "10.0.0.8"
        self.probes["a"].connected = True
        self.probes["b"].address = "10.0.0.9"
        self.assertEqual(self.get("/instances/a")[1]["address"], "10.0.0.8")
        self.assertIsNone(self.get("/instances/b")[1]["address"])

    def test_unjudged_said(self) -> None:
        """
        An instance whose checks say nothing (the agent did not get to look)
        says since when and why in /instances, ``checked_at`` staying the
        time of its last judgement; one judged says null for both. Before,
        nothing told the two apart but an ageing ``checked_at``.
        """
        self.probes["a"].result = None
        self.probes["a"].why_unjudged = "its connect waits in line"
        self.clock.advance(1.0)
        self.clock.advance(1.0)
        code, body = self.get("/instances/a")
        self.assertEqual(code, 200)
        self.assertEqual(
            (body["checked_at"], body["unjudged_since"], body["unjudged_reason"]),
            (1000.0, 1001.0, "its connect waits in line"),
        )
        self.probes["a"].result = self.probes["b"].result
        self.probes["b"].hang = False
        self.clock.advance(1.0)
        body = self.get("/instances/a")[1]
        self.assertEqual(
            (body["checked_at"], body["unjudged_since"], body["unjudged_reason"]),
            (1003.0, None, None),
        )

    def test_one_instance_and_404(self) -> None:
        """/instances/<name> gives one; an unknown name is a JSON 404."""
        code, body = self.get("/instances/a")
        self.assertEqual((code, body["name"]), (200, "a"))
        code, body = self.get("/instances/nope")
        self.assertEqual(code, 404)
        self.assertEqual(body, {"error": "unknown instance 'nope'"})
        code, body = self.get("/instances/" + "n" * 15_000)
        self.assertEqual(code, 404)
        cut = repr("n" * 40) + "..."
        self.assertEqual(body, {"error": f"unknown instance {cut}"})

    def test_odd_names(self) -> None:
        """Names with spaces, quotes, ?, #, % and non-ASCII are found, quoted."""
        for name in ['a b?#%"<é>', "x%2Fy", "名前"]:
            self.monitor.add_instance(RedisInstance(name, "127.0.0.1", 7999))
            code, body = self.get("/instances/" + quote(name, safe=""))
            self.assertEqual((code, body["name"]), (200, name))

    def test_healthz(self) -> None:
        """Healthy while ticking; 503 with a reason when the loop stalls."""
        self.assertEqual(self.get("/healthz"), (200, {"status": "ok"}))
        self.monitor.stopService()
        self.clock.advance(2.5)
        code, body = self.get("/healthz")
        self.assertEqual(code, 503)
        self.assertIn("last ticked 2.5 s ago", body["reasons"][0])

    def test_healthz_extra_checks(self) -> None:
        """Checks given to the app (ZooKeeper's) make it unhealthy."""
        app, monitor, _, _, turns = status_app(
            ["a"], health_checks=(lambda: "zookeeper: suspended",)
        )
        monitor.startService()
        code, body = fetch_json(StubTreq(app.resource()), turns, "/healthz")
        self.assertEqual((code, body["reasons"]), (503, ["zookeeper: suspended"]))

    def test_debug_stats(self) -> None:
        """/debug/stats has exactly the documented counters, and the extras."""
        self.clock.pump([0.5, 0.5])
        code, body = self.get("/debug/stats")
        self.assertEqual(code, 200)
        self.assertEqual(set(body), DEBUG_STATS_FIELDS | {"extra"})
        self.assertEqual(body["extra"], {"x": 1})
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

    def test_debug_stats_counts_threads_by_name(self) -> None:
        """
        /debug/stats counts this process's threads by what they are for,
        the numbers that tell threads of one kind apart left out: one more
        of a kind at each ZooKeeper outage would show as a count growing.
        """
        release = threading.Event()
        self.addCleanup(release.set)
        started = [
            threading.Thread(target=release.wait, name=f"outage-close-{n}", daemon=True)
            for n in (7, 12)
        ]
        for thread in started:
            thread.start()
        code, body = self.get("/debug/stats")
        self.assertEqual(code, 200)
        self.assertEqual(body["threads"]["outage-close"], 2)
        self.assertEqual(body["threads"]["MainThread"], 1)
        self.assertEqual(sum(body["threads"].values()), threading.active_count())

    def test_debug_stats_does_not_walk_the_gc(self) -> None:
        """
        gc_objects is the collaborator's value: /debug/stats never walks
        every object (that took 12-33 ms at 19,000 instances).
        """

        def walked() -> list[Any]:
            raise AssertionError("gc.get_objects() called")

        self.patch(gc, "get_objects", walked)
        code, body = self.get("/debug/stats")
        self.assertEqual((code, body["gc_objects"]), (200, 1234))

    def test_instances_up_follows_ticks(self) -> None:
        """instances_up follows the instances' statuses."""
        self.probes["a"].result = FAILED
        self.assertEqual(self.get("/debug/stats")[1]["instances_up"], 1)
        for _ in range(3):
            self.clock.advance(1.0)
        self.assertEqual(self.get("/debug/stats")[1]["instances_up"], 0)

    def test_index(self) -> None:
        """/ is an HTML page with a row per instance."""
        code, headers, body = fetch(self.treq, self.turns, "/")
        self.assertEqual(code, 200)
        self.assertEqual(headers[b"Content-Type"], [b"text/html; charset=utf-8"])
        self.assertIn(b'<tr class="up" data-name="a">', body)
        self.assertIn(b"pending checks: 1", body)

    def test_other_methods(self) -> None:
        """
        POST, DELETE, PUT and OPTIONS are refused with 405, a JSON error and
        ``Allow``, on the page and /metrics too; nothing is rendered.
        """
        for method in ("POST", "DELETE", "PUT", "OPTIONS"):
            for path in ("/", "/instances", "/instances/a", "/metrics"):
                code, headers, body = fetch(self.treq, self.turns, path, method=method)
                self.assertEqual(code, 405, (method, path))
                self.assertEqual(headers[b"Content-Type"], [b"application/json"])
                self.assertEqual(headers[b"Allow"], [b"GET, HEAD"])
                self.assertEqual(
                    json.loads(body),
                    {"error": "method not allowed (allowed: GET, HEAD)"},
                )
        self.assertFalse(self.turns.waiting)

    def test_unknown_paths(self) -> None:
        """
        A path no route takes is a JSON 404 naming the paths there are,
        whatever it holds (an empty or slashed name, markup); a doubled
        slash is not merged (werkzeug redirected /instances//a).
        """
        paths = (
            "/, /debug/stats, /group, /healthz, /instances, /instances/<name>,"
            " /metrics, /pending"
        )
        for path in (
            "/nope",
            "/instances/",
            "/instances//",
            "/instances/%2F",
            "/instances//a",
            "/instances/a/b",
            "/healthz/",
            "/instances/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        ):
            code, body = self.get(path)
            self.assertEqual(
                (code, body), (404, {"error": f"no such path (paths: {paths})"}), path
            )


class QueryTests(SynchronousTestCase):
    """``/instances?status=&limit=&after=``: filters, pages, refusals."""

    def setUp(self) -> None:
        names = [f"r{i:02d}" for i in range(10)]
        self.app, self.monitor, self.clock, self.probes, self.turns = status_app(names)
        for name in ("r03", "r05", "r08"):
            self.probes[name].result = FAILED
        self.probes["r07"].hang = True
        self.monitor.startService()
        self.treq = StubTreq(self.app.resource())

    def names(self, query: str) -> tuple[list[str], Any]:
        code, body = fetch_json(self.treq, self.turns, "/instances?" + query)
        self.assertEqual(code, 200)
        return [i["name"] for i in body["instances"]], body.get("next", "absent")

    def refused(self, query: str) -> str:
        code, headers, body = fetch(self.treq, self.turns, "/instances?" + query)
        self.assertEqual(code, 400, query)
        self.assertEqual(headers[b"Content-Type"], [b"application/json"])
        error: str = json.loads(body)["error"]
        self.assertNotIn("\n", error)
        return error

    def test_filters(self) -> None:
        """status=down, up, unknown list only those, by name."""
        self.assertEqual(self.names("status=down"), (["r03", "r05", "r08"], "absent"))
        self.assertEqual(self.names("status=unknown"), (["r07"], "absent"))
        up = ["r00", "r01", "r02", "r04", "r06", "r09"]
        self.assertEqual(self.names("status=up"), (up, "absent"))

    def test_pages(self) -> None:
        """limit and after page through by name; next is null at the end."""
        self.assertEqual(self.names("limit=4"), (["r00", "r01", "r02", "r03"], "r03"))
        self.assertEqual(
            self.names("limit=4&after=r03"), (["r04", "r05", "r06", "r07"], "r07")
        )
        self.assertEqual(self.names("limit=4&after=r07"), (["r08", "r09"], None))
        self.assertEqual(self.names("limit=2&after=r08"), (["r09"], None))
        self.assertEqual(self.names("limit=2&after=r09"), ([], None))
        # A name not watched (or gone) pages from where it would be.
        self.assertEqual(self.names("limit=1&after=r035"), (["r04"], "r04"))
        self.assertEqual(self.names("after=r08"), (["r08", "r09"][1:], "absent"))

    def test_pages_with_a_filter(self) -> None:
        """
        A filtered page holds `limit` matching instances; next is null when
        none matches after them.
        """
        self.assertEqual(self.names("status=down&limit=2"), (["r03", "r05"], "r05"))
        self.assertEqual(self.names("status=down&limit=2&after=r05"), (["r08"], None))
        self.assertEqual(
            self.names("status=down&limit=3"), (["r03", "r05", "r08"], None)
        )

    def test_huge_limit(self) -> None:
        """A limit beyond the instances gives them all."""
        self.assertEqual(len(self.names("limit=1000000")[0]), 10)

    def test_refusals(self) -> None:
        """Each bad query is a 400 whose one-line error names what is wrong."""
        self.assertEqual(
            self.refused("status=sideways"),
            "status: 'sideways' is not one of up, down, unknown",
        )
        for value in ("0", "-1", "abc", "1e3", "", "10000000", "9" * 400, "٣"):
            self.assertIn("limit: ", self.refused("limit=" + value))
        self.assertEqual(
            self.refused("bogus=1"),
            "unknown parameter 'bogus' (known: status, limit, after)",
        )
        self.assertEqual(
            self.refused("status=up&status=down"), "parameter 'status' is given 2 times"
        )
        self.assertIn("parameter 'after' is not UTF-8", self.refused("after=%ff"))
        many = "&".join(f"p{i}=1" for i in range(500))
        self.assertIn("unknown parameter", self.refused(many))
        self.assertFalse(self.turns.waiting)

    def test_refusals_quote_40_characters(self) -> None:
        """
        A 400 quotes at most 40 characters of what the client sent, then
        ``...``: a status or a parameter's name of 15,000 characters (a
        request line nearly at its 16 KiB limit) was quoted whole.
        """
        long = "x" * 15_000
        cut = repr("x" * 40) + "..."
        self.assertEqual(
            self.refused("status=" + long),
            f"status: {cut} is not one of up, down, unknown",
        )
        self.assertEqual(
            self.refused(long + "=1"),
            f"unknown parameter {cut} (known: status, limit, after)",
        )
        self.assertEqual(
            self.refused("limit=" + "9" * 400),
            f"limit: {repr('9' * 40)}... is not a whole number from 1 to 1000000",
        )
        not_utf8 = repr(b"\xff" * 40) + "..."
        self.assertIn(f"is not UTF-8: {not_utf8}", self.refused("after=" + "%ff" * 50))

    def test_from_args(self) -> None:
        """The parsed query, as the route sees it."""
        query = InstanceQuery.from_args(
            {b"status": [b"down"], b"limit": [b"5"], b"after": ["é".encode()]}
        )
        self.assertEqual(query, InstanceQuery(status="down", limit=5, after="é"))
        self.assertEqual(InstanceQuery.from_args({}), InstanceQuery())
        self.assertRaises(BadRequest, InstanceQuery.from_args, {b"limit": [b"0"]})


class _CountingStates(dict[str, Any]):
    """The monitor's states, counting lookups."""

    looked_up = 0

    def get(self, key: Any, default: Any = None) -> Any:
        self.looked_up += 1
        return super().get(key, default)


class SliceTests(SynchronousTestCase):
    """No slice of /instances does more than its share."""

    def test_each_slice_is_bounded(self) -> None:
        """
        Every next() of the body renders at most DOCUMENTS_PER_SLICE
        documents and looks at most at NAMES_PER_SLICE names, with or
        without a filter that leaves most out.
        """
        count = 2 * NAMES_PER_SLICE + 7
        names = [f"r{i:05d}" for i in range(count)]
        app, monitor, _, probes, _ = status_app(names)
        probes["r00100"].result = FAILED
        probes[names[-1]].result = FAILED
        monitor.startService()
        states = _CountingStates(monitor.states)
        rendered: list[int] = []
        for query in (InstanceQuery(), InstanceQuery(status="down")):
            body = instance_slices(states, sorted(states), query, app._document)
            pieces = []
            for piece in body:
                documents = piece.count(b'"schema"')
                self.assertLessEqual(documents, DOCUMENTS_PER_SLICE)
                self.assertLessEqual(states.looked_up, NAMES_PER_SLICE)
                states.looked_up = 0
                rendered.append(documents)
                pieces.append(piece)
            listed = json.loads(b"".join(pieces))["instances"]
            self.assertEqual(len(listed), count if query.status is None else 2)
        self.assertEqual(sum(rendered), count + 2)

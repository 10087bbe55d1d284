"""
The HTML status page: the renderer as a pure function, ``GET /`` in memory
through StubTreq, and the real page in a real headless Chromium against a
real ``twistd -n sentinel``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, BinaryIO

import treq
from treq.testing import StubTreq
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase
from twisted.web.client import HTTPConnectionPool

from sentinel.config import RedisInstance
from sentinel.history import CheckHistory
from sentinel.observation import Observation
from sentinel.page import (
    Header,
    ago,
    render_page,
    sort_instances,
    sparkline,
    state_class,
)
from sentinel.web import StatusApp
from tests.fakes import FAILED, make_monitor
from tests.polling import pause
from tests.servers import RedisServer, free_port
from tests.test_twistd import TWISTD, environment

reactor: Any = _reactor

HEADER = Header(agent_id="agent-1", pending=2, ticks=10, overruns=1, interval=1.0)
SCRIPT = "<script>alert(1)</script>"


def doc(name: str, status: str | None, ready: bool = False, **extra: Any) -> Any:
    """An /instances document with the fields the page reads."""
    return {
        "name": name,
        "host": "10.0.0.1",
        "port": 6379,
        "status": status,
        "ready": ready,
        "role": None,
        "latency_ms": None,
        "since": None,
        "error": None,
        **extra,
    }


class _Rows(HTMLParser):
    """Collects each instance row's name and class, in page order."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "tr" and "data-name" in found:
            self.rows.append((found["data-name"] or "", found.get("class") or ""))


def rows(page: str) -> list[tuple[str, str]]:
    """(name, class) of every instance row of a rendered page, in order."""
    parser = _Rows()
    parser.feed(page)
    return parser.rows


def path_points(svg: str) -> list[str]:
    """The coordinates the latency line goes through."""
    match = re.search(r'<path class="lat" d="([^"]*)"', svg)
    return re.findall(r"[ML][\d.]+,[\d.]+", match.group(1)) if match else []


class HistoryTests(SynchronousTestCase):
    """The ring of recent checks kept by a monitor listener."""

    def test_records_latency_and_failures_in_a_bounded_ring(self) -> None:
        """Each check appends one point; the ring keeps only the last `size`."""
        monitor, clock, probes, _ = make_monitor(["a"])
        history = CheckHistory(size=5)
        monitor.add_listener(history.record)
        monitor.startService()
        clock.advance(1.0)
        probes["a"].result = FAILED
        for _ in range(5):
            clock.advance(1.0)
        self.assertEqual(history.points("a"), ((None, False),) * 5)
        probes["a"].result = Observation(ok=True, ready=True, latency_ms=2.5)
        # Until it is up again, the fake answers each (INFO) check in 0.5 ms.
        for _ in range(3):
            clock.advance(1.0)
        self.assertEqual(history.points("a")[-3:], ((0.5, True),) * 2 + ((2.5, True),))
        self.assertEqual(len(history.points("a")), 5)

    def test_forget_and_prune(self) -> None:
        """Removed instances' rings go, by name or by pruning to a set."""
        monitor, clock, _, _ = make_monitor(["a", "b", "c"])
        history = CheckHistory()
        monitor.add_listener(history.record)
        monitor.startService()
        self.assertEqual(len(history), 3)
        history.forget("a")
        history.forget("nope")
        history.prune({"b"})
        self.assertEqual((len(history), history.points("c")), (1, ()))
        self.assertEqual(len(history.points("b")), 1)


class RendererTests(SynchronousTestCase):
    """`render_page` and its parts, data in and HTML out."""

    def test_state_classes(self) -> None:
        """up+ready, up+not ready, down and undecided get their own class."""
        self.assertEqual(state_class(doc("a", "up", ready=True)), "up")
        self.assertEqual(state_class(doc("a", "up", ready=False)), "notready")
        self.assertEqual(state_class(doc("a", "down")), "down")
        self.assertEqual(state_class(doc("a", None)), "unknown")

    def test_sort_orders(self) -> None:
        """
        By status (the default, also for nonsense): down, not ready,
        unknown, up, each by name; by name; by latency, slowest first.
        """
        docs = [
            doc("a", "up", True, latency_ms=0.3),
            doc("b", "down"),
            doc("c", "up", False, latency_ms=9.0),
            doc("d", None),
            doc("e", "down"),
            doc("f", "up", True, latency_ms=4.0),
        ]

        def names(sort: str) -> str:
            return "".join(d["name"] for d in sort_instances(docs, sort))

        self.assertEqual(names("status"), "becdaf")
        self.assertEqual(names("bogus"), "becdaf")
        self.assertEqual(names("name"), "abcdef")
        self.assertEqual(names("latency"), "cfabde")

    def test_rows_in_order_with_classes_and_sort_links(self) -> None:
        """One row per instance in the asked order; headers link to sorts."""
        docs = [doc("a", "up", True), doc("b", "down"), doc("c", "up", False)]
        page = render_page(HEADER, docs, lambda name: (), None, 0.0)
        self.assertEqual(rows(page), [("b", "down"), ("c", "notready"), ("a", "up")])
        page = render_page(HEADER, docs, lambda name: (), None, 0.0, sort="name")
        self.assertEqual([r[0] for r in rows(page)], ["a", "b", "c"])
        for sort in ("name", "status", "latency"):
            self.assertIn(f'href="/?sort={sort}"', page)
        self.assertIn('<a href="/?sort=name" class="sorted">', page)
        self.assertNotIn("<script", page)

    def test_header(self) -> None:
        """Agent id, pending count linked to /pending, ticks, overruns, refresh."""
        page = render_page(HEADER, [doc("a", "down")], lambda name: (), None, 0.0)
        self.assertIn('<span class="agent">agent-1</span>', page)
        self.assertIn('<a href="/pending">pending checks: 2</a>', page)
        self.assertIn("ticks 10 · overruns 1", page)
        self.assertIn('<meta http-equiv="refresh" content="2">', page)
        self.assertIn("ZooKeeper: <b>not configured</b>", page)
        self.assertIn('<span class="count down">1 down</span>', page)

    def test_zookeeper_state(self) -> None:
        """ZooKeeper's state is coloured, with writes queued; errors when not ok."""
        stats = {"state": "connected", "writes_queued": 0, "last_error": "old"}
        page = render_page(HEADER, [], lambda name: (), stats, 0.0)
        self.assertIn('<span class="badge up">connected</span> · 0 writes queued', page)
        self.assertNotIn("old", page)
        stats = {"state": "suspended", "writes_queued": 1, "last_error": SCRIPT}
        page = render_page(HEADER, [], lambda name: (), stats, 0.0)
        self.assertIn('<span class="badge notready">suspended</span>', page)
        self.assertIn("1 write queued", page)
        self.assertNotIn(SCRIPT, page)
        stats = {"state": "lost", "writes_queued": 7, "last_error": None}
        page = render_page(HEADER, [], lambda name: (), stats, 0.0)
        self.assertIn('<span class="badge down">lost</span> · 7 writes queued', page)

    def test_since_relative_and_absolute(self) -> None:
        """`since` reads "3m ago", with the UTC time in the title."""
        docs = [doc("a", "up", True, since=1_700_000_000.0)]
        page = render_page(HEADER, docs, lambda name: (), None, 1_700_000_200.0)
        self.assertIn(
            '<td class="since" title="2023-11-14 22:13:20 UTC">3m ago</td>', page
        )
        self.assertEqual(
            [ago(5), ago(59.9), ago(60), ago(7200), ago(90000)],
            ["5s ago", "59s ago", "1m ago", "2h ago", "1d ago"],
        )

    def test_sparkline_points_and_failure_marks(self) -> None:
        """
        One line point per successful check, newest at the right, broken at
        failures, and one red tick per failed check.
        """
        points = [(1.0, True), (2.0, True), (None, False), (None, False), (4.0, True)]
        svg = sparkline(points, size=60)
        coordinates = path_points(svg)
        self.assertEqual(len(coordinates), 3)
        self.assertEqual([c[0] for c in coordinates], ["M", "L", "M"])
        self.assertEqual(svg.count('class="fail"'), 2)
        self.assertEqual(coordinates[-1], "M178.5,3.0")  # the top of the last slot
        self.assertIn("last 5 checks, 2 failed", svg)
        self.assertIn("max 4.00 ms", svg)

    def test_sparkline_empty_and_all_failed(self) -> None:
        """No checks: just the baseline; all failed: only red ticks."""
        self.assertEqual(path_points(sparkline([])), [])
        svg = sparkline([(None, False)] * 4)
        self.assertEqual((path_points(svg), svg.count('class="fail"')), ([], 4))

    def test_escaping(self) -> None:
        """Names, hosts, roles and errors from outside never become markup."""
        docs = [
            doc(
                SCRIPT,
                "down",
                host='"><img src=x onerror=alert(1)>',
                error=f"bad reply: {SCRIPT}",
                since=0.0,
            ),
            doc("s", "up", True, role="slave", master_host=SCRIPT, master_port=1),
        ]
        page = render_page(HEADER, docs, lambda name: (), None, 10.0)
        self.assertNotIn("<script", page)
        self.assertNotIn("<img", page)
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt;", page)
        self.assertIn('title="bad reply: &lt;script&gt;', page)
        self.assertIn('href="/instances/%3Cscript%3Ealert%281%29%3C%2Fscript%3E"', page)
        self.assertEqual([r[0] for r in rows(page)], [SCRIPT, "s"])


class IndexRouteTests(SynchronousTestCase):
    """``GET /`` through StubTreq, from a monitor on a Clock."""

    def setUp(self) -> None:
        names = ["ready", "loading", "refused"]
        self.monitor, self.clock, self.probes, _ = make_monitor(names)
        self.probes["loading"].result = Observation(ok=True, latency_ms=3.0)
        self.probes["refused"].result = FAILED
        self.clock.advance(1_700_000_000.0)
        self.history = CheckHistory()
        self.monitor.add_listener(self.history.record)
        self.app = StatusApp(self.monitor, self.clock, agent_id="agent-1")
        self.app.show_on_page(self.history)
        self.treq = StubTreq(self.app.app.resource())
        self.monitor.startService()
        # The first check asks for INFO, which the fake answers "ready".
        self.clock.advance(1.0)

    def get(self, path: str) -> str:
        response = self.successResultOf(self.treq.get("http://agent" + path))
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders("content-type"), ["text/html; charset=utf-8"]
        )
        body: bytes = self.successResultOf(response.content())
        return body.decode("utf-8")

    def test_rows_and_sorting(self) -> None:
        """
        Down first, then not ready, then undecided, then up; ?sort=name
        sorts by name; the page is the /instances data.
        """
        self.monitor.add_instance(RedisInstance("new", "127.0.0.1", 7010))
        self.probes["new"].hang = True
        page = self.get("/")
        self.assertEqual(
            rows(page),
            [
                ("refused", "down"),
                ("loading", "notready"),
                ("new", "unknown"),
                ("ready", "up"),
            ],
        )
        self.assertIn("connection refused", page)
        self.assertIn("0.50 ms", page)
        self.clock.advance(1.0)
        page = self.get("/?sort=name")
        self.assertEqual(
            [r[0] for r in rows(page)], ["loading", "new", "ready", "refused"]
        )
        self.assertIn('<a href="/pending">pending checks: 1</a>', page)

    def test_sparklines(self) -> None:
        """Each row's sparkline has a point per good check, a tick per failure."""
        for _ in range(8):
            self.clock.advance(1.0)
        page = self.get("/?sort=name")
        svgs = dict(
            zip(
                [r[0] for r in rows(page)],
                re.findall(r"<svg.*?</svg>", page),
                strict=True,
            )
        )
        self.assertEqual(len(path_points(svgs["ready"])), 10)
        self.assertEqual(svgs["ready"].count('class="fail"'), 0)
        self.assertEqual(len(path_points(svgs["refused"])), 0)
        self.assertEqual(svgs["refused"].count('class="fail"'), 10)
        self.assertEqual(len(path_points(svgs["loading"])), 10)

    def test_since_and_zookeeper(self) -> None:
        """Since reads "3m ago"; ZooKeeper stats given to the page are shown."""
        self.app.show_on_page(
            zookeeper_stats=lambda: {"state": "suspended", "writes_queued": 3}
        )
        self.clock.advance(179.0)
        page = self.get("/")
        self.assertIn('title="2023-11-14 22:13:20 UTC">3m ago</td>', page)
        self.assertIn('<span class="badge notready">suspended</span>', page)
        self.assertIn("3 writes queued", page)

    def test_removed_instance_is_forgotten(self) -> None:
        """An instance no longer watched leaves the page and the history."""
        self.monitor.remove_instance("refused")
        page = self.get("/")
        self.assertNotIn("refused", [r[0] for r in rows(page)])
        self.assertEqual(self.history.points("refused"), ())
        self.assertEqual(len(self.history), 2)

    def test_hostile_name_and_error_escaped(self) -> None:
        """A name and an error containing <script> are shown, not run."""
        self.monitor.add_instance(RedisInstance(SCRIPT, "127.0.0.1", 7999))
        self.clock.advance(1.0)
        self.probes[SCRIPT].result = Observation(ok=False, error=f"-ERR {SCRIPT}")
        self.clock.advance(1.0)
        page = self.get("/")
        self.assertNotIn("<script", page)
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt;</a>", page)
        self.assertIn("-ERR &lt;script&gt;alert(1)&lt;/script&gt;</td>", page)
        self.assertIn((SCRIPT, "up"), rows(page))


# The real browser


BROWSER_TIMEOUT = 60.0
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


class _Collect(ProcessProtocol):
    """
    Collects a child's output (or writes it all to `log`); `ended` fires
    with (stdout, stderr, exit status).
    """

    def __init__(self, log: BinaryIO | None = None) -> None:
        self.log = log
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.ended: Deferred[tuple[bytes, bytes, int | None]] = Deferred()

    def outReceived(self, data: bytes) -> None:
        if self.log is not None:
            self.log.write(data)
        else:
            self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        if self.log is not None:
            self.log.write(data)
        else:
            self.err.append(data)

    def processEnded(self, reason: Failure) -> None:
        code = 0 if reason.check(ProcessDone) else getattr(reason.value, "exitCode", 1)
        self.ended.callback((b"".join(self.out), b"".join(self.err), code))


async def run_bounded(
    argv: list[str], env: dict[str, str], timeout: float
) -> tuple[bytes, bytes, int | None]:
    """Run `argv` with the reactor running; SIGKILL it after `timeout` s."""
    protocol = _Collect()
    process = reactor.spawnProcess(protocol, argv[0], argv, env=env)
    killer = reactor.callLater(timeout, process.signalProcess, "KILL")
    try:
        return await protocol.ended
    finally:
        if killer.active():
            killer.cancel()


class BrowserTests(TestCase):
    """The page as a person sees it: real Chromium, real agent, real Redis."""

    async def test_page_in_chromium(self) -> None:
        """
        Headless Chromium loads / from ``twistd -n sentinel`` watching a
        live redis-server and a refused port, and its DOM has both rows,
        coloured up and down, each with a sparkline.
        """
        chromium = shutil.which("chromium")
        if chromium is None:
            if os.environ.get("CI"):
                self.fail("chromium is not installed (make system-deps installs it)")
            raise SkipTest("chromium is not installed (make system-deps installs it)")
        server = RedisServer().start()
        self.addCleanup(server.stop)
        http = free_port()
        directory = Path(self.mktemp())
        directory.mkdir()
        base = f"http://127.0.0.1:{http}"
        log_path = directory / "twistd.log"
        env = environment()
        agent = await self.start_agent(
            [
                TWISTD, "-n", "sentinel",
                "--redis", f"live=127.0.0.1:{server.port}",
                "--redis", f"refused=127.0.0.1:{free_port()}",
                "--interval", "0.2", "--timeout", "0.1",
                "--http", f"tcp:{http}:interface=127.0.0.1",
            ],
            directory, env, log_path,
        )  # fmt: skip
        await self.until_decided(base, agent, log_path)

        out, err, code = await run_bounded(
            [
                chromium, *CHROMIUM_FLAGS,
                f"--user-data-dir={directory / 'chromium'}",
                "--dump-dom", f"{base}/",
            ],
            {**os.environ, "HOME": str(directory)},
            BROWSER_TIMEOUT,
        )  # fmt: skip
        self.assertEqual(code, 0, err.decode("utf-8", "replace")[-2000:])
        dom = out.decode("utf-8")
        self.assertEqual(rows(dom), [("refused", "down"), ("live", "up")])
        self.assertEqual(dom.count('<svg class="spark"'), 2)
        self.assertIn("connection refused", dom)

    async def start_agent(
        self, argv: list[str], directory: Path, env: dict[str, str], log_path: Path
    ) -> Any:
        """Start twistd; it is killed by PID at cleanup if still running."""
        log = log_path.open("wb")
        self.addCleanup(log.close)
        protocol = _Collect(log)
        process = reactor.spawnProcess(
            protocol, argv[0], argv, env=env, path=str(directory)
        )

        async def stop() -> None:
            if not protocol.ended.called:
                process.signalProcess("KILL")
                await protocol.ended

        self.addCleanup(lambda: Deferred.fromCoroutine(stop()))
        return protocol

    async def until_decided(self, base: str, agent: Any, log_path: Path) -> None:
        """Wait (at most 15 s) until /instances shows every instance decided."""
        pool = HTTPConnectionPool(reactor, persistent=False)
        started = reactor.seconds()
        seen: Any = None
        while reactor.seconds() - started < 15.0:
            if agent.ended.called:
                self.fail(f"twistd exited: {log_path.read_text()}")
            try:
                response = await treq.get(f"{base}/instances", timeout=2, pool=pool)
                seen = json.loads(await response.content())
                statuses = [i["status"] for i in seen["instances"]]
                if len(statuses) == 2 and None not in statuses:
                    return
            except Exception:
                pass
            await pause(reactor, 0.05)
        self.fail(f"instances not decided within 15 s: {seen}")

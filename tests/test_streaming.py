"""
Long answers in slices, over a real site and a real HTTP channel in
memory: one slice per reactor turn whoever asked, backpressure from a
client that does not read, and nothing rendered for a client gone.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sentinel.httpd import StatusSite
from sentinel.listing import DOCUMENTS_PER_SLICE
from sentinel.streaming import MIN_READ_RATE, STALL_TIMEOUT
from sentinel.web import StatusApp
from tests.httptest import Connection, responses, run_until_answered, status_app

INSTANCES = 1000


def documents(raw: bytes) -> int:
    """How many instance documents `raw` holds (one per line)."""
    return raw.count(b'"schema": 1')


class StreamTests(SynchronousTestCase):
    """/instances at 1,000 instances, turn by turn."""

    def setUp(self) -> None:
        names = [f"r{i:04d}" for i in range(INSTANCES)]
        self.app, self.monitor, self.clock, self.probes, self.turns = status_app(names)
        self.monitor.startService()
        self.site = StatusSite(self.app.resource(), self.clock)
        self.slicer = self.app.slicer

    def connect(self, port: int = 40000) -> Connection:
        return Connection(self.site, port)

    def run_until_idle(self, turns: int = 1000) -> int:
        """Run turns while the slicer has work; return how many ran."""
        ran = 0
        while self.turns.waiting and ran < turns:
            self.turns.run()
            ran += 1
        return ran

    def test_one_slice_per_turn_whoever_asks(self) -> None:
        """
        Three clients ask for /instances at once: each reactor turn renders
        one slice of one answer (at most DOCUMENTS_PER_SLICE documents in
        all), and every answer ends complete.
        """
        clients = [self.connect(40000 + i) for i in range(3)]
        for client in clients:
            client.request("/instances")
        written = [0, 0, 0]
        turns = 0
        while self.turns.waiting:
            self.turns.run()
            turns += 1
            now = [documents(client.output()) for client in clients]
            self.assertLessEqual(
                sum(now) - sum(written), DOCUMENTS_PER_SLICE, f"turn {turns}"
            )
            written = now
        slices = -(-INSTANCES // DOCUMENTS_PER_SLICE) + 2
        self.assertGreaterEqual(turns, 3 * slices - 2)
        for client in clients:
            [(code, _, body)] = responses(client.output())
            self.assertEqual(code, 200)
            self.assertEqual(len(json.loads(body)["instances"]), INSTANCES)
        self.assertEqual(self.slicer.streams, 0)

    def test_client_that_does_not_read(self) -> None:
        """
        While the client's socket is full (the transport pauses the
        channel), nothing more is rendered; when it reads, the rest comes.
        """
        client = self.connect()
        client.request("/instances")
        self.turns.run()
        self.turns.run()
        before = documents(client.output())
        self.assertGreater(before, 0)
        client.transport.producer.pauseProducing()
        for _ in range(20):
            self.turns.run()
        self.assertEqual(documents(client.output()), before)
        self.assertFalse(self.turns.waiting)
        client.transport.producer.resumeProducing()
        self.run_until_idle()
        [(code, _, body)] = responses(client.output())
        self.assertEqual(len(json.loads(body)["instances"]), INSTANCES)

    def test_stalled_client_dropped(self) -> None:
        """
        A client that reads nothing is disconnected once its answer has
        waited on it STALL_TIMEOUT plus a second per MIN_READ_RATE bytes
        written, its answer stopped and counted as stalled.
        """
        client = self.connect()
        client.request("/instances")
        self.turns.run()
        client.transport.producer.pauseProducing()
        allowed = STALL_TIMEOUT + len(client.output()) / MIN_READ_RATE
        self.clock.advance(allowed - 0.5)
        self.assertTrue(client.open)
        self.clock.advance(1)
        self.assertFalse(client.open)
        self.assertEqual(self.slicer.stats()["stalled_clients_dropped"], 1)
        self.assertEqual(self.slicer.streams, 0)
        self.assertFalse(self.turns.waiting)
        self.assertEqual(responses(client.output()), [])

    def test_bursty_reader_keeps_its_answer(self) -> None:
        """
        A client that takes what its buffers hold, reads nothing for longer
        than STALL_TIMEOUT (a scraper paused by its GC, a laptop asleep),
        then reads the rest at once, gets its whole answer: it is not slow
        on average, and its pause cost no more than its buffers.
        """
        client = self.connect()
        client.request("/instances")
        pause = STALL_TIMEOUT + 10
        while len(client.output()) < 2 * (pause - STALL_TIMEOUT) * MIN_READ_RATE:
            self.turns.run()
        client.transport.producer.pauseProducing()
        self.clock.advance(pause)
        self.assertTrue(client.open)
        client.transport.producer.resumeProducing()
        self.run_until_idle()
        [(code, _, body)] = responses(client.output())
        self.assertEqual(len(json.loads(body)["instances"]), INSTANCES)
        stats = self.slicer.stats()
        self.assertEqual(
            (stats["slow_clients_dropped"], stats["stalled_clients_dropped"]), (0, 0)
        )

    def test_slow_reader_dropped(self) -> None:
        """
        A client that reads a little now and then, never leaving its answer
        waiting STALL_TIMEOUT at a stretch but reading it at half
        MIN_READ_RATE, is dropped once the answer has waited on it
        STALL_TIMEOUT plus a second per MIN_READ_RATE bytes written, in
        all: its answer stopped, counted apart from stalled clients.
        """
        client = self.connect()
        client.request("/instances")
        waited = 0.0
        for _ in range(20):
            before = len(client.output())
            self.turns.run()
            written = len(client.output())
            client.transport.producer.pauseProducing()
            # What is left before the answer has waited too long; the head
            # and the chunks' framing make `written` at most 0.1 s early.
            left = STALL_TIMEOUT + written / MIN_READ_RATE - waited
            wait = 2 * (written - before) / MIN_READ_RATE
            self.assertLess(wait, STALL_TIMEOUT / 2)
            if wait >= left:
                break
            self.clock.advance(wait)
            waited += wait
            client.transport.producer.resumeProducing()
        else:
            self.fail("never left waiting too long")
        self.assertGreater(waited, STALL_TIMEOUT)
        self.clock.advance(left - 0.5)
        self.assertTrue(client.open)
        self.clock.advance(1)
        self.assertFalse(client.open)
        stats = self.slicer.stats()
        self.assertEqual(
            (stats["slow_clients_dropped"], stats["stalled_clients_dropped"]), (1, 0)
        )
        self.assertEqual(self.slicer.streams, 0)
        self.assertFalse(self.turns.waiting)
        self.assertEqual(responses(client.output()), [])

    def test_reader_at_the_rate_keeps_its_answer(self) -> None:
        """
        A client reading a little faster than MIN_READ_RATE gets its whole
        answer, though it leaves it waiting longer than STALL_TIMEOUT in
        all; the time the agent takes to render does not count.
        """
        client = self.connect()
        client.request("/instances")
        waited = 0.0
        while self.turns.waiting:
            # The agent is slow to render: its time is not the client's.
            self.clock.advance(STALL_TIMEOUT / 2)
            before = len(client.output())
            self.turns.run()
            client.transport.producer.pauseProducing()
            wait = 0.9 * (len(client.output()) - before) / MIN_READ_RATE
            self.clock.advance(wait)
            waited += wait
            client.transport.producer.resumeProducing()
        self.assertGreater(waited, STALL_TIMEOUT * 1.5)
        [(code, _, body)] = responses(client.output())
        self.assertEqual(len(json.loads(body)["instances"]), INSTANCES)
        self.assertEqual(self.slicer.stats()["slow_clients_dropped"], 0)

    def test_client_gone_mid_answer(self) -> None:
        """A client that goes away stops its answer at once: no more slices."""
        client = self.connect()
        client.request("/instances")
        self.turns.run()
        self.turns.run()
        client.lose()
        self.assertFalse(self.turns.waiting)
        self.assertEqual(self.slicer.streams, 0)
        self.assertEqual(self.run_until_idle(), 0)

    def test_head_renders_nothing(self) -> None:
        """HEAD answers with headers only, and schedules no slice."""
        client = self.connect()
        for path in ("/", "/instances", "/metrics", "/pending"):
            client.request(path, method="HEAD")
        self.assertFalse(self.turns.waiting)
        raw = client.output()
        self.assertEqual(raw.count(b"HTTP/1.1 "), 4)
        self.assertNotIn(b'"schema"', raw)

    def test_pipelined_requests(self) -> None:
        """Requests sent together are answered in order, each complete."""
        client = self.connect()
        client.request("/healthz")
        client.request("/instances?limit=2")
        client.request("/instances/r0003")
        run_until_answered(self.clock, self.turns)
        answers = responses(client.output())
        self.assertEqual([code for code, _, _ in answers], [200, 200, 200])
        self.assertEqual(json.loads(answers[0][2]), {"status": "ok"})
        self.assertEqual(json.loads(answers[1][2])["next"], "r0001")
        self.assertEqual(json.loads(answers[2][2])["name"], "r0003")

    def test_bug_while_rendering(self) -> None:
        """
        A slice that raises is logged, and the connection aborted: the
        client never sees a complete-looking answer.
        """
        rendered = []

        def document(app: Any, state: Any) -> Any:
            if len(rendered) == 300:
                raise RuntimeError("bug")
            rendered.append(state.name)
            return {"name": state.name}

        self.patch(StatusApp, "_document", document)
        client = self.connect()
        client.request("/instances")
        self.run_until_idle()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertFalse(client.open)
        self.assertEqual(responses(client.output()), [])
        self.assertEqual(self.slicer.streams, 0)

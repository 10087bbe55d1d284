"""Log output on standard output: a full pipe never blocks the caller."""

from __future__ import annotations

import fcntl
import json
import os
import select
import threading
import time
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sentinel.logs import json_line
from sentinel.metrics import LogOutputMetrics
from sentinel.output import LogOutput, LogStream

# Seconds a test waits, at most, for the writing thread: a bound on a
# failure, never a pause (each wait ends as soon as its event happens).
BOUND = 10.0


class PipeTestCase(SynchronousTestCase):
    """A real pipe: its read end non-blocking, its write end full."""

    def setUp(self) -> None:
        self.read_end, self.write_end = os.pipe()
        self.outputs: list[LogOutput] = []
        # Cleaned up in the reverse order: the read end closed first, a
        # write still blocked fails (EPIPE), and nothing is left to write
        # when the write end's number is free for another test's use.
        self.addCleanup(os.close, self.write_end)
        self.addCleanup(self.drained)
        self.addCleanup(os.close, self.read_end)
        os.set_blocking(self.read_end, False)
        # The smallest pipe Linux makes (one page), filled: as a pipe that
        # nobody reads ends up.
        fcntl.fcntl(self.write_end, fcntl.F_SETPIPE_SZ, 4096)
        os.set_blocking(self.write_end, False)
        self.filler = 0
        try:
            while True:
                self.filler += os.write(self.write_end, b"x" * 4096)
        except BlockingIOError:
            pass
        os.set_blocking(self.write_end, True)

    def output(self, **kwargs: Any) -> LogOutput:
        """A started output on the pipe."""
        output = LogOutput(self.write_end, **kwargs)
        output.start()
        self.outputs.append(output)
        return output

    def drained(self) -> None:
        for output in self.outputs:
            self.assertTrue(output.drain(BOUND))

    def read_until(self, text: bytes) -> bytes:
        """What the pipe holds (past the filler), read until `text` came."""
        data = b""
        deadline = time.monotonic() + BOUND
        while text not in data[self.filler :]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.fail(f"{text!r} not written within {BOUND} s: {data[-300:]!r}")
            select.select([self.read_end], [], [], remaining)
            try:
                data += os.read(self.read_end, 1 << 16)
            except BlockingIOError:
                pass
        data, self.filler = data[self.filler :], max(0, self.filler - len(data))
        return data


class FullPipeTests(PipeTestCase):
    def test_full_pipe_does_not_block_the_caller(self) -> None:
        """
        With the pipe full, writes return at once: lines are queued up to
        the limit, the rest dropped and counted. (Without the queue, the
        first write would wait for a reader: the helper thread would not
        finish within the bound.)
        """
        clock = [100.0]
        output = self.output(limit=1000, clock=lambda: clock[0])
        results: list[bool] = []
        finished = threading.Event()

        def log() -> None:
            for i in range(100):
                results.append(output.write(b"%0100d" % i))
            finished.set()

        threading.Thread(target=log, daemon=True).start()
        self.assertTrue(finished.wait(BOUND), "the writes blocked")
        # 1000 bytes held (queued or being written to the full pipe): ten
        # lines of 100 bytes; the 90 after them dropped.
        self.assertEqual(results, [True] * 10 + [False] * 90)
        self.assertEqual(output.dropped, 90)
        stats = output.stats()
        self.assertEqual((stats["lines_dropped"], stats["bytes_queued"]), (90, 1000))

        # Someone reads at last, 12.5 s on: the lines kept are written,
        # then one line says how many were dropped and for how long output
        # was blocked; then the lines that come next.
        clock[0] = 112.5
        text = self.read_until(b"?)\n").decode()
        kept = "".join(f"{i:0100d}" for i in range(10))
        self.assertTrue(text.startswith(kept), text[:200])
        notice = text[len(kept) :]
        self.assertIn(
            "90 log line(s) dropped: standard output was blocked for 12.5 s", notice
        )
        self.assertIn("[sentinel.output#warn]", notice)
        self.assertTrue(output.write(b"after\n"))
        self.assertEqual(self.read_until(b"after\n"), b"after\n")
        self.assertTrue(output.drain(BOUND))
        self.assertEqual(output.stats()["bytes_queued"], 0)

    def test_notice_in_the_observer_format(self) -> None:
        """The notice is written as the observer writes its lines (JSON here)."""
        output = self.output(limit=10)
        output.format_notice = json_line
        stream = LogStream(output, self.write_end)
        stream.write("0123456789")
        stream.write("dropped")
        stream.flush()  # Never waits.
        record = json.loads(self.read_until(b"}\n")[10:])
        self.assertEqual(record["level"], "warn")
        self.assertEqual(record["dropped"], 1)
        self.assertIn("1 log line(s) dropped", record["message"])

    def test_ending_waits_within_its_budget(self) -> None:
        """
        Once the process is ending, a write waits for its line, within the
        budget: with the pipe still full, the budget is spent once, and
        later writes return at once.
        """
        output = self.output()
        output.ending(0.05)
        started = time.monotonic()
        output.write(b"last words\n")
        output.write(b"more\n")
        self.assertFalse(output.finish())
        waited = time.monotonic() - started
        self.assertGreaterEqual(waited, 0.05)
        self.assertLess(waited, BOUND)


class OutputTests(SynchronousTestCase):
    def test_ending_writes_before_returning(self) -> None:
        """
        Once the process is ending, each write returns once its line is
        written (a signal ending the process next loses nothing).
        """
        read_end, write_end = os.pipe()
        self.addCleanup(os.close, read_end)
        self.addCleanup(os.close, write_end)
        output = LogOutput(write_end)
        output.start()
        output.ending(BOUND)
        output.write(b"Server Shut Down.\n")
        os.set_blocking(read_end, False)
        self.assertEqual(os.read(read_end, 100), b"Server Shut Down.\n")

    def test_closed_output(self) -> None:
        """Lines written to an output closed for good are counted as dropped."""
        read_end, write_end = os.pipe()
        os.close(read_end)
        self.addCleanup(os.close, write_end)
        output = LogOutput(write_end)
        output.start()
        output.write(b"one\n")
        output.write(b"two\n")
        self.assertTrue(output.drain(BOUND))
        self.assertEqual(output.dropped, 2)
        self.assertEqual(output.stats()["error"], "Broken pipe")

    def test_stream(self) -> None:
        """The stream queues UTF-8 and says where it writes."""
        read_end, write_end = os.pipe()
        self.addCleanup(os.close, read_end)
        self.addCleanup(os.close, write_end)
        output = LogOutput(write_end)
        output.start()
        stream = LogStream(output, write_end)
        self.assertEqual(stream.write("café\n"), 5)
        self.assertEqual(stream.write(""), 0)
        self.assertEqual((stream.fileno(), stream.encoding), (write_end, "utf-8"))
        self.assertFalse(stream.isatty())
        self.assertTrue(output.drain(BOUND))
        self.assertEqual(os.read(read_end, 100), "café\n".encode())

    def test_line_logged_while_a_line_is_queued(self) -> None:
        """
        A line written on a thread that is already writing one (a signal
        handler that logs, run by Python between two steps of the write it
        interrupted) is queued too, and neither waits: on a lock that its
        own thread holds, the handler waited for good (SIGTERM then never
        stopped the agent).
        """
        output = LogOutput(-1)  # Never started: the lines stay queued.
        notify = output._changed.notify_all
        inner: list[bool] = []
        interruptions: list[bool] = []

        def interrupted() -> None:
            notify()
            if not interruptions:  # Once: the handler's own write is not.
                interruptions.append(True)
                inner.append(output.write(b"Received SIGTERM\n"))

        output._changed.notify_all = interrupted  # type: ignore[method-assign]
        outer: list[bool] = []
        writer = threading.Thread(
            target=lambda: outer.append(output.write(b"r1 is up\n")), daemon=True
        )
        writer.start()
        writer.join(BOUND)
        self.assertFalse(writer.is_alive(), "the nested write never returned")
        self.assertEqual((outer, inner), ([True], [True]))
        self.assertEqual(output.stats()["bytes_queued"], 26)

    def test_dropped_lines_in_metrics(self) -> None:
        """/metrics counts the lines dropped."""
        output = LogOutput(-1, limit=5)  # Never started: nothing is written.
        self.assertTrue(output.write(b"12345"))
        self.assertFalse(output.write(b"6"))
        [family] = LogOutputMetrics(output).collect()
        self.assertEqual(family.name, "sentinel_log_lines_dropped")
        self.assertEqual([sample.value for sample in family.samples], [1.0])

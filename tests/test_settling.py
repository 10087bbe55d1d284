"""
Tests for L{sentinel.settling}: a reload reads the config file only once
it has kept still, never half written.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from twisted.trial.unittest import SynchronousTestCase

from sentinel.checks import ConfigError
from sentinel.settling import GIVE_UP_AFTER, QUIET, read_settled


class FakeTime:
    """
    A wall and a monotonic clock that move only when slept on, and
    writes of a file due at given monotonic times, made as they come.
    """

    def __init__(self, wall: float) -> None:
        self.offset = 0.0
        self.start_wall = wall
        self.slept: list[float] = []
        self.writes: list[tuple[float, Callable[[], None]]] = []

    def time(self) -> float:
        return self.start_wall + self.offset

    def monotonic(self) -> float:
        return self.offset

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.offset += seconds
        due = [w for w in self.writes if w[0] <= self.offset]
        self.writes = [w for w in self.writes if w[0] > self.offset]
        for _, write in due:
            write()


class ReadSettledTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())
        self.clock = FakeTime(time.time())
        self.loads: list[bytes] = []

    def write(self, data: bytes, at_wall: float | None = None) -> None:
        """Write `data` to the file, stamped with the fake wall clock."""
        with open(self.path, "wb") as f:
            f.write(data)
        stamp = self.clock.time() if at_wall is None else at_wall
        os.utime(self.path, ns=(int(stamp * 1e9), int(stamp * 1e9)))

    def write_later(self, at: float, data: bytes) -> None:
        """Write `data` once the clock reaches `at`, stamped `at`."""
        stamp = self.clock.start_wall + at
        self.clock.writes.append((at, lambda: self.write(data, at_wall=stamp)))

    def load(self) -> bytes:
        with open(self.path, "rb") as f:
            data = f.read()
        self.loads.append(data)
        return data

    def read(self) -> bytes:
        return read_settled(
            self.path,
            self.load,
            os.stat,
            wall=self.clock.time,
            monotonic=self.clock.monotonic,
            sleep=self.clock.sleep,
        )

    def test_file_left_alone_loads_at_once(self) -> None:
        """A file last written a minute ago is loaded at once, once."""
        self.write(b"whole", at_wall=self.clock.time() - 60)
        self.assertEqual(self.read(), b"whole")
        self.assertEqual((self.loads, self.clock.slept), ([b"whole"], []))

    def test_file_being_written_loaded_whole(self) -> None:
        """
        A file caught between two writes of its writer (a prefix now, the
        rest 0.5 s later) is loaded once whole, `QUIET` seconds after
        the last write, never as the prefix.
        """
        self.write(b"prefix")
        self.write_later(0.5, b"prefix and the rest")
        self.assertEqual(self.read(), b"prefix and the rest")
        self.assertEqual(self.loads, [b"prefix and the rest"])
        self.assertAlmostEqual(self.clock.offset, 0.5 + QUIET)

    def test_changed_while_loaded_loads_again(self) -> None:
        """A file written again while it was loaded is loaded again."""
        self.write(b"old", at_wall=self.clock.time() - 60)

        def load() -> bytes:
            data = self.load()
            if len(self.loads) == 1:
                self.write(b"newer")
            return data

        result = read_settled(
            self.path,
            load,
            os.stat,
            wall=self.clock.time,
            monotonic=self.clock.monotonic,
            sleep=self.clock.sleep,
        )
        self.assertEqual((result, self.loads), (b"newer", [b"old", b"newer"]))

    def test_stamped_in_the_future_watched_by_the_monotonic_clock(self) -> None:
        """
        A file stamped an hour ahead (the wall clock stepped back since)
        is loaded once it kept still for `QUIET` seconds, not an hour.
        """
        self.write(b"whole", at_wall=self.clock.time() + 3600)
        self.assertEqual(self.read(), b"whole")
        self.assertAlmostEqual(self.clock.offset, QUIET)

    def test_never_still_refused(self) -> None:
        """
        A file written every half second is refused after
        `GIVE_UP_AFTER` seconds with one line, and never loaded.
        """
        self.write(b"0")
        for i in range(1, 40):
            self.write_later(i / 2, str(i).encode())
        error = self.assertRaises(ConfigError, self.read)
        self.assertEqual(
            str(error),
            f"config file {self.path}: still being written: it changed within "
            f"{QUIET:g} s of every look for {GIVE_UP_AFTER:g} s",
        )
        self.assertEqual(self.loads, [])
        self.assertLessEqual(self.clock.offset, GIVE_UP_AFTER + QUIET)

    def test_missing_file_left_to_the_load(self) -> None:
        """A file that cannot be looked at is loaded at once: its load says why."""
        self.assertRaises(FileNotFoundError, self.read)
        self.assertEqual(self.clock.slept, [])

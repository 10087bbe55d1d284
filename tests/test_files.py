"""
Tests for L{sentinel.files}: only regular files of bounded size are read,
and a read that hangs is an error after its deadline, holding one thread.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sentinel import files
from sentinel.files import FileReader, Unreadable, read_regular_file, size_text

LIMIT = 1024
# The read deadline of the tests that hang a read. Reads that answer must
# answer within it too, through a thread handoff: the 0.05 s it was failed
# a read that answered at once (test_no_second_thread_while_hung at load
# 26 on two cores). A second is far above any handoff, and costs only the
# hung reads' wait.
DEADLINE = 1.0


class FileKindTests(SynchronousTestCase):
    """What read_regular_file reads and what it refuses, and why."""

    def setUp(self) -> None:
        self.directory = Path(self.mktemp()).absolute()
        self.directory.mkdir(parents=True)

    def path(self, name: str) -> str:
        return str(self.directory / name)

    def assertRefused(self, path: str, reason: str) -> None:
        """Reading `path` fails at once with `reason`."""
        started = time.monotonic()
        error = self.assertRaises(Unreadable, read_regular_file, path, LIMIT)
        self.assertEqual(str(error), reason)
        self.assertLess(time.monotonic() - started, 1.0)

    def test_regular_file(self) -> None:
        """A regular file up to the limit is read whole, NUL bytes and all."""
        path = self.path("f")
        Path(path).write_bytes(b"a\0b" + b"x" * (LIMIT - 3))
        self.assertEqual(read_regular_file(path, LIMIT), b"a\0b" + b"x" * (LIMIT - 3))
        Path(path).write_bytes(b"")
        self.assertEqual(read_regular_file(path, LIMIT), b"")

    def test_fifo(self) -> None:
        """
        A FIFO is refused without being opened: open() would wait for a
        writer that never comes.
        """
        path = self.path("fifo")
        os.mkfifo(path)
        self.assertRefused(path, "not a regular file (a FIFO)")

    def test_devices(self) -> None:
        """Devices are refused: /dev/zero never ends, /dev/null is no file."""
        self.assertRefused("/dev/zero", "not a regular file (a character device)")
        self.assertRefused("/dev/null", "not a regular file (a character device)")

    def test_symlinks(self) -> None:
        """A symbolic link is judged by what it points to."""
        to_zero, to_fifo, to_file = (self.path(n) for n in ("z", "p", "f"))
        os.symlink("/dev/zero", to_zero)
        os.mkfifo(self.path("fifo"))
        os.symlink(self.path("fifo"), to_fifo)
        Path(self.path("target")).write_bytes(b"ok")
        os.symlink(self.path("target"), to_file)
        self.assertRefused(to_zero, "not a regular file (a character device)")
        self.assertRefused(to_fifo, "not a regular file (a FIFO)")
        self.assertEqual(read_regular_file(to_file, LIMIT), b"ok")

    def test_directory_and_missing(self) -> None:
        """A directory and a missing file say so, as the system says it."""
        self.assertRefused(str(self.directory), "Is a directory")
        self.assertRefused(self.path("missing"), "No such file or directory")
        self.assertRefused(self.path("missing/x"), "No such file or directory")

    def test_oversized_sparse_file(self) -> None:
        """
        A file above the limit is refused before any byte is read (a sparse
        file of 1 TiB costs nothing to make and would fill memory).
        """
        path = self.path("sparse")
        with open(path, "wb") as f:
            f.truncate(1 << 40)
        self.assertRefused(path, "larger than 1 KiB")
        with open(path, "wb") as f:
            f.truncate(LIMIT + 1)
        self.assertRefused(path, "larger than 1 KiB")

    def test_replaced_by_fifo_after_stat(self) -> None:
        """
        A path that was a regular file when looked at and is a FIFO when
        opened is refused, not waited on: it is opened non-blocking and
        checked again on the descriptor.
        """
        regular = self.path("regular")
        Path(regular).write_bytes(b"x")
        fifo = self.path("fifo")
        os.mkfifo(fifo)
        real_stat = os.stat

        class RacingOS:
            def __getattr__(self, name: str) -> Any:
                return getattr(os, name)

            def stat(self, path: str) -> os.stat_result:
                return real_stat(regular if path == fifo else path)

        self.patch(files, "os", RacingOS())
        reader = FileReader(deadline=5.0)
        with reader.batch() as read:
            error = self.assertRaises(Unreadable, read, fifo, LIMIT)
        self.assertEqual(str(error), "not a regular file (a FIFO)")

    def test_grows_while_read(self) -> None:
        """
        A file that grows past the limit while read is refused after
        limit + 1 bytes; one that changes within the limit is refused as
        changed, never taken half old, half new.
        """
        path = self.path("growing")
        Path(path).write_bytes(b"x" * 10)
        real_read = files._read_at_most

        def growing(fd: int, size: int) -> bytes:
            with open(path, "ab") as f:
                f.write(b"y" * self.growth)
            return real_read(fd, size)

        self.patch(files, "_read_at_most", growing)
        self.growth = LIMIT
        self.assertRefused(path, "larger than 1 KiB")
        Path(path).write_bytes(b"x" * 10)
        self.growth = 5
        self.assertRefused(path, "changed while being read")

    def test_size_text(self) -> None:
        """Limits read as people write them."""
        self.assertEqual(
            [size_text(n) for n in (1024, 64 << 10, 16 << 20, 1000)],
            ["1 KiB", "64 KiB", "16 MiB", "1000 bytes"],
        )


class HangingFiles:
    """A read_file whose reads of `hanging` block until released."""

    def __init__(self, hanging: str) -> None:
        self.hanging = hanging
        self.release = threading.Event()
        self.calls: list[str] = []

    def __call__(self, path: str, limit: int) -> bytes:
        self.calls.append(path)
        if path == self.hanging:
            self.release.wait(10.0)
        return path.encode()


def alive_readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sentinel-read"]


class DeadlineTests(SynchronousTestCase):
    """A read that hangs ends in an error after the deadline; threads stay bounded."""

    def setUp(self) -> None:
        self.files = HangingFiles("/hung/pw")
        self.addCleanup(self.files.release.set)
        self.reader = FileReader(deadline=DEADLINE, read_file=self.files)

    def test_hung_read_fails_after_deadline(self) -> None:
        """The caller gets an error naming the cause, not a hang."""
        started = time.monotonic()
        with self.reader.batch() as read:
            self.assertEqual(read("/ok", LIMIT), b"/ok")
            error = self.assertRaises(Unreadable, read, "/hung/pw", LIMIT)
        self.assertEqual(str(error), "no answer within 1 s (a hung mount?)")
        # The hung read would block for 10 s.
        self.assertLess(time.monotonic() - started, 5.0)

    def test_no_second_thread_while_hung(self) -> None:
        """
        While a read that overran has not ended, every read is refused at
        once, in this batch and the next, without starting a thread; once
        it ends, reads work again.
        """
        with self.reader.batch() as read:
            self.assertRaises(Unreadable, read, "/hung/pw", LIMIT)
            error = self.assertRaises(Unreadable, read, "/ok", LIMIT)
        self.assertTrue(
            str(error).startswith("an earlier read of /hung/pw has not ended after")
        )
        threads = len(alive_readers())
        for _ in range(3):
            with self.reader.batch() as read:
                self.assertRaises(Unreadable, read, "/ok", LIMIT)
        self.assertEqual(self.files.calls, ["/hung/pw"])
        self.assertLessEqual(len(alive_readers()), threads)
        self.files.release.set()
        for thread in alive_readers():
            thread.join(5.0)
        with self.reader.batch() as read:
            self.assertEqual(read("/ok", LIMIT), b"/ok")

    def test_hung_look_fails_after_deadline(self) -> None:
        """
        A look at a file (its status) on a hung mount is an error after
        the deadline, as a read is, and a read meanwhile is refused at
        once; a look while a read hangs is refused at once too.
        """

        def stat(path: str) -> os.stat_result:
            if path == "/hung/sentinel.toml":
                self.files.release.wait(10.0)
            return os.stat(__file__)

        reader = FileReader(deadline=DEADLINE, read_file=self.files, stat=stat)
        started = time.monotonic()
        self.assertEqual(reader.look("/ok").st_size, os.stat(__file__).st_size)
        error = self.assertRaises(Unreadable, reader.look, "/hung/sentinel.toml")
        self.assertEqual(str(error), "no answer within 1 s (a hung mount?)")
        self.assertLess(time.monotonic() - started, 5.0)
        with reader.batch() as read:
            self.assertRaises(Unreadable, read, "/ok", LIMIT)
        self.files.release.set()
        for thread in threading.enumerate():
            if thread.name == "sentinel-look":
                thread.join(5.0)
        hanging = HangingFiles("/hung/pw")
        self.addCleanup(hanging.release.set)
        reader = FileReader(deadline=DEADLINE, read_file=hanging)
        with reader.batch() as read:
            self.assertRaises(Unreadable, read, "/hung/pw", LIMIT)
        error = self.assertRaises(Unreadable, reader.look, "/ok")
        self.assertTrue(
            str(error).startswith("an earlier read of /hung/pw has not ended after")
        )

    def test_batch_thread_ends_with_the_batch(self) -> None:
        """
        One thread serves a whole batch, and it ends when the batch does,
        so none is alive when twistd forks into the background.
        """
        before = set(alive_readers())
        with self.reader.batch() as read:
            for n in range(100):
                read(f"/f{n}", LIMIT)
            [thread] = set(alive_readers()) - before
        thread.join(5.0)
        self.assertFalse(thread.is_alive())

    def test_failure_is_an_answer(self) -> None:
        """An unexpected error in a read is reported by name, not a hang."""

        def broken(path: str, limit: int) -> bytes:
            raise MemoryError()

        reader = FileReader(deadline=5.0, read_file=broken)
        with reader.batch() as read:
            error = self.assertRaises(Unreadable, read, "/x", LIMIT)
        self.assertEqual(str(error), "MemoryError")

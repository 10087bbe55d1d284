"""
Reading the files a configuration names (the config file itself, password
and auth files, CA bundles) so that no file can hang the reader or fill
its memory.

``open()`` of a FIFO waits for a writer, ``/dev/zero`` never ends, and
``stat()``, ``open()`` or ``read()`` on a hung network mount wait as long
as the mount is hung. So a path is read only if it is a regular file of at
most a given size: checked with ``stat()`` before opening (a device or a
FIFO is never opened, a symbolic link is judged by what it points to), and
again with ``fstat()`` on the descriptor, which is opened with
``O_NONBLOCK`` in case the path became a FIFO in between. At most
``limit + 1`` bytes are read, so a file that grows while read is refused
rather than followed, and one that changed while read is refused rather
than taken half old, half new.

Every read runs on a thread of the batch's own and the caller waits at
most `READ_DEADLINE` for it: a hung mount is an error after the deadline,
not a hang. The thread of a read that overran stays in its system call
until the mount answers; until then the `FileReader` refuses every other
read at once, so a hung mount holds one thread, never more. A batch's
thread ends with the batch (no thread is left behind to confuse twistd's
fork into the background). `WatchedFile` is the exception: local system
files (hosts, resolv.conf) looked at while the agent runs, read with the
same checks on the caller's thread.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from queue import SimpleQueue
from typing import Any

# Seconds a read may take. A local file answers in microseconds, a network
# mount in milliseconds; a read still waiting after this is on a hung mount.
READ_DEADLINE = 5.0

# Sizes are capped well above any real file, so that a wrong path costs a
# bounded amount of memory. A config file with a [[redis]] table per
# instance is about 200 bytes per instance: 20,000 instances are 4 MB, and
# parse in about 1 s of CPU here; 16 MiB is 80,000 instances.
MAX_CONFIG_BYTES = 16 * 1024 * 1024
# A password or user:password: Redis and ZooKeeper take long ones, but not
# this long.
MAX_SECRET_BYTES = 64 * 1024
# A PEM bundle: the system's bundle of about 140 CAs is about 220 KB.
MAX_CA_BYTES = 4 * 1024 * 1024
# A hosts(5) file: a 50,000-line blocklist is about 1.6 MB.
MAX_HOSTS_BYTES = 8 * 1024 * 1024

_CHUNK = 64 * 1024

_KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


class Unreadable(Exception):
    """A file that cannot or must not be read; the message says why, never
    what the file holds."""


class TooLarge(Unreadable):
    """
    A file over the size its reader takes: what none of the agent's own
    writes makes (a write over the limit fails), so it holds nothing the
    agent wrote.
    """


def size_text(size: int) -> str:
    """`size` bytes for a person: ``64 KiB``, ``16 MiB``."""
    for unit, name in ((1 << 20, "MiB"), (1 << 10, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} bytes"


def _check(status: os.stat_result, limit: int) -> None:
    mode = status.st_mode
    if stat.S_ISDIR(mode):
        raise Unreadable(os.strerror(errno.EISDIR))
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "not a plain file")
        raise Unreadable(f"not a regular file ({kind})")
    if status.st_size > limit:
        raise TooLarge(f"larger than {size_text(limit)}")


def _read_at_most(fd: int, size: int) -> bytes:
    chunks = []
    left = size
    while left > 0:
        chunk = os.read(fd, min(left, _CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_regular_file(path: str, limit: int) -> bytes:
    """
    What the regular file at `path` holds, at most `limit` bytes. This
    blocks for as long as the file system does: run it on a thread with a
    deadline (`FileReader`).

    @raise Unreadable: if `path` cannot be read, is no regular file, holds
        more than `limit` bytes, or changed while it was read.
    """
    try:
        _check(os.stat(path), limit)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise Unreadable(e.strerror or str(e)) from None
    try:
        before = os.fstat(fd)
        _check(before, limit)
        data = _read_at_most(fd, limit + 1)
        after = os.fstat(fd)
    except OSError as e:
        raise Unreadable(e.strerror or str(e)) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise TooLarge(f"larger than {size_text(limit)}")
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise Unreadable("changed while being read")
    return data


class WatchedFile:
    """
    A local system file (the hosts file, resolv.conf) read again when it
    changes, through `read_regular_file`, on the caller's thread: it is
    looked at (one ``stat``) at most once every `every` seconds, and read
    only when its inode, mtime or size moved. A file missing from the start
    reads as empty (the system's may be missing).
    """

    def __init__(self, path: str, limit: int, clock: Any, every: float) -> None:
        self.path = path
        self._limit = limit
        self._clock = clock
        self._every = every
        self._checked_at = float("-inf")
        # What the file was when last looked at (None: missing), or
        # _NEVER before the first look.
        self._signature: tuple[int, int, int] | None | object = _NEVER

    def changed(self) -> bytes | None:
        """
        What the file holds if it changed since the last call, else None
        (and None until `every` seconds have passed since the last look).

        @raise Unreadable: once per change that leaves the file unreadable
            or refused (gone, a FIFO, a device, too large...); None after
            that until it changes again.
        """
        now = self._clock.seconds()
        if now - self._checked_at < self._every:
            return None
        self._checked_at = now
        first = self._signature is _NEVER
        try:
            status = os.stat(self.path)
        except OSError as e:
            signature = None
            if first and e.errno == errno.ENOENT:
                self._signature = None
                return b""
            problem = e.strerror or str(e)
        else:
            signature = (status.st_ino, status.st_mtime_ns, status.st_size)
        if signature == self._signature:
            return None
        self._signature = signature
        if signature is None:
            raise Unreadable(problem)
        return read_regular_file(self.path, self._limit)


_NEVER = object()


class _Read:
    """One read handed to a batch's thread, and its outcome."""

    def __init__(self, path: str, limit: int, started: float) -> None:
        self.path = path
        self.limit = limit
        self.started = started
        self.done = threading.Event()
        self.data = b""
        self.error: Unreadable | None = None

    def run(self, read_file: Callable[[str, int], bytes]) -> None:
        try:
            self.data = read_file(self.path, self.limit)
        except Unreadable as e:
            self.error = e
        except Exception as e:
            # MemoryError, or a bug: still an answer, never a hang.
            self.error = Unreadable(type(e).__name__)

    def outcome(self) -> bytes:
        if self.error is not None:
            raise self.error
        return self.data


class _Look(_Read):
    """One ``stat()`` handed to a thread: `status` once done."""

    status: os.stat_result

    def __init__(
        self, path: str, started: float, stat: Callable[[str], os.stat_result]
    ) -> None:
        super().__init__(path, 0, started)
        self._stat = stat

    def run(self, read_file: Callable[[str, int], bytes]) -> None:
        try:
            self.status = self._stat(self.path)
        except OSError as e:
            self.error = Unreadable(e.strerror or str(e))
        except Exception as e:
            self.error = Unreadable(type(e).__name__)


class FileReader:
    """
    Reads files within a deadline, one batch (one load of the
    configuration) at a time; while a read that overran its deadline has
    not ended, every read is refused at once (see the module docstring).
    One per agent, so that this holds across reloads.
    """

    def __init__(
        self,
        deadline: float = READ_DEADLINE,
        read_file: Callable[[str, int], bytes] = read_regular_file,
        monotonic: Callable[[], float] = time.monotonic,
        stat: Callable[[str], os.stat_result] = os.stat,
    ) -> None:
        self._deadline = deadline
        self._read_file = read_file
        self._stat = stat
        self._monotonic = monotonic
        self._lock = threading.Lock()
        # The read that overran its deadline and has not ended, if any.
        self._hung: _Read | None = None

    @contextmanager
    def batch(self) -> Iterator[Callable[[str, int], bytes]]:
        """
        A function that reads (path, limit) into bytes, or raises
        `Unreadable`; its thread is started by the first read and ends when
        the ``with`` block does (or, if a read hangs, when that read ends).
        """
        requests: SimpleQueue[_Read | None] = SimpleQueue()
        started = False

        def read(path: str, limit: int) -> bytes:
            nonlocal started
            self._refuse_while_hung()
            request = _Read(path, limit, self._monotonic())
            if not started:
                threading.Thread(
                    target=self._serve,
                    args=(requests,),
                    name="sentinel-read",
                    daemon=True,
                ).start()
                started = True
            requests.put(request)
            return self._wait(request)

        try:
            yield read
        finally:
            if started:
                requests.put(None)

    def look(self, path: str) -> os.stat_result:
        """
        ``stat()`` of `path` (a symbolic link judged by what it points
        to), on a thread of its own, within the deadline, and refused at
        once while a read hangs, as a read is.

        @raise Unreadable: if `path` cannot be looked at, or did not
            answer within the deadline.
        """
        self._refuse_while_hung()
        request = _Look(path, self._monotonic(), self._stat)
        requests: SimpleQueue[_Read | None] = SimpleQueue()
        requests.put(request)
        requests.put(None)
        threading.Thread(
            target=self._serve, args=(requests,), name="sentinel-look", daemon=True
        ).start()
        self._wait(request)
        return request.status

    def _refuse_while_hung(self) -> None:
        with self._lock:
            hung = self._hung
        if hung is not None:
            waited = self._monotonic() - hung.started
            raise Unreadable(
                f"an earlier read of {hung.path} has not ended after {waited:.0f} s"
            )

    def _wait(self, request: _Read) -> bytes:
        if not request.done.wait(self._deadline):
            with self._lock:
                if not request.done.is_set():
                    self._hung = request
                    raise Unreadable(
                        f"no answer within {self._deadline:g} s (a hung mount?)"
                    )
        return request.outcome()

    def _serve(self, requests: SimpleQueue[_Read | None]) -> None:
        """The batch's thread: read what is asked, until told to stop."""
        while (request := requests.get()) is not None:
            request.run(self._read_file)
            with self._lock:
                request.done.set()
                if self._hung is request:
                    self._hung = None

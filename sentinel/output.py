"""
Log lines on standard output that never hold up the thread that logs.

Standard output is often a pipe (a container runtime, a shell's ``| tee``,
a supervisor), and a pipe that nobody reads fills (64 KiB on Linux); a
write to it then waits until someone reads. The log observers wrote on the
thread that logged, mostly the reactor's, so a full pipe froze the agent:
measured with 600 instances, 300 of them on a Redis then killed, no check
and no ZooKeeper write for as long as the pipe stayed full (90 dead
instances stayed published up; kazoo's own thread kept the session
alive), ``/healthz`` unanswered, and SIGTERM unheard until the pipe
drained.

So every line for standard output goes to the process's `LogOutput`: a
queue of at most `MAX_QUEUED` bytes, written out by one daemon thread.
Logging a line only appends it to the queue; a line that does not fit is
dropped and counted (``log_output`` in ``/debug/stats``,
``sentinel_log_lines_dropped_total`` in ``/metrics``), and once the write
that was blocked ends, one line says how many were dropped and for how
long output was blocked.

- The thread writes to the file descriptor with `os.write`, not through
  ``sys.stdout``: blocked inside a ``BufferedWriter``, it would hold the
  writer's lock, and the interpreter's last flush at exit would wait on it
  for good.
- The descriptor stays blocking: ``O_NONBLOCK`` belongs to the file
  description, which the shell or terminal that started the agent shares.
- Once the process is ending (`LogOutput.ending`, when the reactor has
  stopped), each line waits to be written, `EXIT_WAIT` in all: twistd ends
  a process stopped by SIGTERM by raising it again, which runs no exit
  handler, and its last lines would be lost in the queue.
- `install` (called by `sentinel.tap.makeService` when twistd runs in the
  foreground) puts a `LogStream` on the queue in ``sys.stdout``; twistd
  makes its default observer on ``sys.stdout`` after `makeService`, so
  that one writes to the queue as `sentinel.logs`' observers do.
"""

from __future__ import annotations

import atexit
import errno
import io
import os
import select
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import IO, Any, cast

from twisted.logger import LogEvent, LogLevel, formatEventAsClassicLogText

# Bytes queued at most (a line is about 150): a few seconds of the busiest
# logging, and a bound on what a stuck output holds in memory.
MAX_QUEUED = 1 << 20
# Seconds the lines may wait, in all, to be written once the process is
# ending: a stuck output must not hold up a stop, which has 5 s in all and
# spends 4 at most (sentinel.stopping).
EXIT_WAIT = 0.5

NOTICE = (
    "{dropped} log line(s) dropped: standard output was blocked for "
    "{blocked_seconds:.1f} s (is anything reading it?)"
)


def text_notice(event: LogEvent) -> str:
    """The notice as twistd's text observer writes a line."""
    return formatEventAsClassicLogText(event) or ""


class LogOutput:
    """
    A bounded queue of lines and the thread that writes them to a file
    descriptor (module docstring). Lines may come from any thread.
    """

    def __init__(
        self,
        fd: int,
        limit: int = MAX_QUEUED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        @param clock: seconds, for how long output was blocked (the
            notice's time is the wall clock's).
        """
        self._fd = fd
        self._limit = limit
        self._clock = clock
        # How the notice of dropped lines is written: as the observer
        # writing here writes its lines (`sentinel.logs`).
        self.format_notice: Callable[[LogEvent], str] = text_notice
        # Reentrant: Python runs a signal handler on the main thread between
        # two steps of whatever it interrupted, a write here included, and a
        # handler that logs then writes again on the thread holding the lock
        # (with a plain lock, it waited for good: the agent ignored SIGTERM).
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._lines: deque[bytes] = deque()
        # Bytes held: queued, and being written.
        self._held = 0
        # When the write in progress started (None between writes); lines
        # dropped since it started, and since when output was blocked.
        self._writing_since: float | None = None
        self._dropping = 0
        self._blocked_since = 0.0
        self.dropped = 0
        self.error: str | None = None
        # Once the process is ending: the seconds writes may still wait.
        self._exit_budget: float | None = None

    def start(self) -> None:
        """Start the writing thread (a daemon: it never holds up an exit)."""
        threading.Thread(target=self._run, name="sentinel-output", daemon=True).start()

    def write(self, line: bytes) -> bool:
        """Queue `line`, never waiting; False if it was dropped (no room)."""
        with self._lock:
            if self._held + len(line) > self._limit:
                if not self._dropping:
                    since = self._writing_since
                    self._blocked_since = self._clock() if since is None else since
                self._dropping += 1
                self.dropped += 1
                return False
            self._lines.append(line)
            self._held += len(line)
            self._changed.notify_all()
            if self._exit_budget:
                self._wait_written()
            return True

    def ending(self, budget: float = EXIT_WAIT) -> None:
        """
        The process is ending: from now on each write waits until its line
        is written, for `budget` seconds in all (`finish` included). twistd
        ends a process that SIGTERM stopped by raising SIGTERM again, which
        runs no exit handler: its last lines are written before that, or
        dropped once the budget is spent.
        """
        with self._lock:
            if self._exit_budget is None:
                self._exit_budget = budget

    def finish(self) -> bool:
        """At exit: wait for the lines queued, within the budget of `ending`."""
        self.ending()
        with self._lock:
            return self._wait_written()

    def drain(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for every line queued to be written."""
        with self._lock:
            return self._changed.wait_for(lambda: not self._held, timeout)

    def stats(self) -> dict[str, Any]:
        """``log_output`` in /debug/stats."""
        with self._lock:
            since = self._writing_since
            return {
                "lines_dropped": self.dropped,
                "bytes_queued": self._held,
                "writing_for_seconds": (
                    0.0 if since is None else round(self._clock() - since, 3)
                ),
                "error": self.error,
            }

    def _wait_written(self) -> bool:
        # With the lock held: wait for every line queued, within the exit
        # budget, and take the time waited from it.
        budget = self._exit_budget or 0.0
        started = time.monotonic()
        written = self._changed.wait_for(lambda: not self._held, budget)
        self._exit_budget = max(0.0, budget - (time.monotonic() - started))
        return written

    # The writing thread

    def _run(self) -> None:
        while True:
            with self._lock:
                self._changed.wait_for(lambda: bool(self._lines))
                count = len(self._lines)
                chunk = b"".join(self._lines)
                self._lines.clear()
                self._writing_since = self._clock()
            written = self._write_all(chunk)
            with self._lock:
                self._held -= len(chunk)
                self._writing_since = None
                if not written:
                    self.dropped += count
                dropped, self._dropping = self._dropping, 0
                if dropped:
                    # After the lines queued before the drops, before
                    # those that come next.
                    notice = self._notice(dropped, self._clock() - self._blocked_since)
                    self._lines.append(notice)
                    self._held += len(notice)
                self._changed.notify_all()

    def _notice(self, dropped: int, blocked: float) -> bytes:
        event: LogEvent = {
            "log_format": NOTICE,
            "log_level": LogLevel.warn,
            "log_namespace": __name__,
            "log_time": time.time(),
            "dropped": dropped,
            "blocked_seconds": round(blocked, 3),
        }
        return self.format_notice(event).encode("utf-8", "backslashreplace")

    def _write_all(self, data: bytes) -> bool:
        """Write all of `data`, waiting as long as it takes; False on an error."""
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._fd, view) :]
            except BlockingIOError:
                # Someone else made the description non-blocking: wait here.
                waiting = select.poll()
                waiting.register(self._fd, select.POLLOUT)
                waiting.poll()
            except OSError as e:
                # Closed for good (EPIPE, EBADF): what is left is lost.
                self.error = e.strerror or errno.errorcode.get(e.errno or 0, str(e))
                return False
        return True


class LogStream(io.TextIOBase):
    """A text stream that queues each write on a `LogOutput`."""

    def __init__(self, output: LogOutput, fd: int) -> None:
        super().__init__()
        self.output = output
        self._fd = fd

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text:
            self.output.write(text.encode("utf-8", "backslashreplace"))
        return len(text)

    def fileno(self) -> int:
        return self._fd

    def isatty(self) -> bool:
        return os.isatty(self._fd)


# This process's, once installed.
_stream: LogStream | None = None


def install() -> LogOutput | None:
    """
    This process's standard output, from now on through a `LogOutput`
    (module docstring): made once, and put in ``sys.stdout`` as a
    `LogStream`. None if standard output is no file.
    """
    global _stream
    if _stream is not None:
        return _stream.output
    stdout = sys.stdout
    try:
        fd = stdout.fileno()
        stdout.flush()
    except (AttributeError, OSError, ValueError):
        return None
    if fd < 0:
        return None  # twistd's LoggingFile, say: logging has begun.
    output = LogOutput(fd)
    output.start()
    atexit.register(finish)
    _stream = sys.stdout = LogStream(output, fd)
    return output


def standard_output(
    format_notice: Callable[[LogEvent], str] = text_notice,
) -> IO[str]:
    """
    Where a log observer for standard output writes (`install`'s stream),
    and how it formats a line (for the notice of lines dropped).
    """
    output = install()
    if output is None:
        return sys.stdout
    output.format_notice = format_notice
    return cast(IO[str], _stream)


def finish() -> None:
    """At exit: let the lines queued be written (`LogOutput.finish`)."""
    if _stream is not None:
        _stream.output.finish()


def print_or_drop(text: str) -> None:
    """
    Print `text` and a line break on standard output at once: a command's
    answer (``--help``, ``--version``, ``sentinel-status``'s rows). A
    reader that has left (``sentinel-agent --help | head``) is no error:
    what it did not take is dropped (`drop_unread`).
    """
    try:
        print(text, flush=True)
    except BrokenPipeError:
        drop_unread()


def flush_or_drop() -> None:
    """Flush standard output; what a reader that has left did not take is dropped."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        drop_unread()


def drop_unread() -> None:
    """
    Point standard output at ``/dev/null`` once its reader has left, as the
    ``signal`` module's documentation advises: otherwise Python's last
    flush at exit fails again, says ``Exception ignored ...
    BrokenPipeError`` and makes the exit status 120.
    """
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # No file of its own: nothing flushes to the pipe at exit.
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)

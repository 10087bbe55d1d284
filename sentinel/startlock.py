"""
One process starting on a ``state_dir`` at a time (DESIGN.md section 8,
"Restarts"): a double start has one winner, and the other process exits
at once, with one line, having touched nothing.

Every agent process with a state_dir holds an exclusive ``flock`` on
``{state_dir}/start.lock`` for as long as it runs, and writes its pid in
it; the kernel drops the lock at any exit, ``kill -9`` included, so a
crash never leaves it behind. A process that finds it held asks the
state file, read after the lock:

- if the file names the holder (its pid) as the session's holder, the
  holder has run long enough to record its session: it is the older
  process of a deploy that starts the new process before stopping the
  old. This one goes on and takes the session over (`sentinel.handoff`),
  as before, and takes the lock once the older one has exited (a thread
  waits for it, `Waiting`);
- if the holder started more than `STARTING_WINDOW` ago, it is not
  starting: an older process that could not record a session (ZooKeeper
  unreachable since its start, a state file it cannot write). This one
  goes on as before the lock (the twin rule settles two live agents of
  one id), says so, and takes the lock once the older one has exited.
  Refused, the new process of a deploy that starts it before stopping
  the old one exited with status 78 (not restarted by the unit) while
  ZooKeeper was away, and the deploy then stopped the old one: no agent
  left;
- if the file names the holder as the holder of a session of another
  agent id, another agent runs on this state_dir, which is one agent's:
  this process exits with one line and status 78 before it connects to
  anything. Before, it went on beside that agent with a session of its
  own and wrote its state file over that agent's, which then logged a
  state-file error until its stop (and deregistered at it). An agent
  renamed (a new ``agent_id``) starts once the old name's process has
  stopped, and closes the session it left (`sentinel.handoff`); at a
  deploy that starts the new process before stopping the old, a rename
  is refused (the old process is not this agent's older self);
- otherwise the holder is starting too and has no session of its own in
  the file yet: a double start (two units on one state_dir, an init
  system and a supervisor both starting the agent). This process exits
  with one line and status 78 (``EX_CONFIG``, a twin's: the unit does not
  restart it) before it connects to anything.

Before, both went on. When both found no session to reattach to, each
opened one, the second's state file write took the first's handoff, and
the one whose agent node was second waited for the other's session to
end until the twin rule judged it live (the holder's session timeout
plus 5 s): measured with 20 instances, session timeout 10 s, the loser
exited after 16.5 s (status 78), and meanwhile the winner logged that
its state file was another agent's, so a ``SIGTERM`` then would have
deregistered every node. When one of them had recorded its session
first, the other took it over (as at a deploy), and the first exited
after 4.7--8.2 s, both connected in turn to one session.

A lock that cannot be had for another reason (a read-only or full
``state_dir``, out of descriptors) is not a reason to stop: the agent
runs as before, without it, and says so once. The lock file is opened
within the start's read deadline (a hung mount is an error, not a hang).
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from collections.abc import Callable

import attr
import psutil
from twisted.logger import Logger

from sentinel.config import Config
from sentinel.files import FileReader, Unreadable
from sentinel.privatefiles import StateFileRefused, prepare_directory
from sentinel.session import StoredSession, read_at_start

log = Logger()

LOCK_FILE = "start.lock"
# Seconds since its start within which a holder that recorded no session
# is taken for a process starting too (a double start); an older one is
# not (module docstring). A process records its session within a second
# or two of its start while ZooKeeper answers.
STARTING_WINDOW = 30.0
# The holder's pid, as written: a line of digits.
_MOST_READ = 64
# What the reader's function answers when this process took the lock
# (else the lock file's bytes after `_HELD_BY`).
_TAKEN = b""
_HELD_BY = b"held:"

# The lock files this process holds: the descriptor of each, kept open
# for the process's life (the lock ends with it).
_held: dict[str, int] = {}
# The lock files this process waits for (`Waiting`), until it holds them.
_waiting: set[str] = set()
_held_guard = threading.Lock()


def lock_path(directory: str) -> str:
    """The lock file of the state_dir `directory`."""
    return os.path.join(directory, LOCK_FILE)


@attr.frozen
class HeldBy:
    """The lock is another process's: its pid, if the file says one."""

    pid: int | None


def take(directory: str, reader: FileReader | None = None) -> HeldBy | str | None:
    """
    Take the state_dir's lock for this process's life: None once taken,
    `HeldBy` if another process holds it, or why it could not be had
    (the agent runs without it). Before the reactor runs, within
    `reader`'s deadline.

    @raise StateFileRefused: if the state_dir must not be used.
    """
    reader = reader or FileReader(read_file=_lock)
    answer = read_at_start(reader, lock_path(directory), _MOST_READ)
    if isinstance(answer, str):
        return answer
    if answer == _TAKEN:
        return None
    text = answer[len(_HELD_BY) :].decode("ascii", "replace").strip()
    pid = int(text) if text.isdigit() and len(text) < 20 else None
    if pid == os.getpid():
        return None
    return HeldBy(pid)


def take_start_lock(config: Config) -> HeldBy | str | None:
    """
    `take` for the agent's state_dir; None without one (or without
    ZooKeeper, where it holds no session). Before the reactor runs.

    @raise StateFileRefused: if the state_dir must not be used.
    """
    if config.state_dir is None or config.zookeeper is None:
        return None
    return take(config.state_dir)


def _lock(path: str, limit: int) -> bytes:
    """
    On the reader's thread: lock `path` (made if missing, mode 0600) and
    write this pid in it; `_TAKEN`, or `_HELD_BY` and what the holder
    wrote there.
    """
    with _held_guard:
        if path in _held:
            return _TAKEN
    prepare_directory(os.path.dirname(path))
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise StateFileRefused(f"{path} is a symbolic link") from None
        raise Unreadable(e.strerror or str(e)) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            return _HELD_BY + os.pread(fd, limit, 0)
        except OSError:
            return _HELD_BY
        finally:
            os.close(fd)
    except OSError as e:
        os.close(fd)
        raise Unreadable(e.strerror or str(e)) from None
    _hold(path, fd)
    return _TAKEN


def _hold(path: str, fd: int) -> None:
    """Keep `fd` (locked) open for the process's life, naming this pid."""
    with _held_guard:
        _held[path] = fd
        _waiting.discard(path)
    _name_this_process(fd)


def _name_this_process(fd: int) -> None:
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    except OSError:
        # The pid is only said in the other process's line: the lock holds.
        pass


def _after_fork() -> None:
    """
    In the child of a fork: twistd without ``-n`` makes the agent, and so
    takes the lock, in a parent that forks and exits once the daemon runs.
    The lock stays held (the daemon has its descriptor), but it named the
    parent: a deploy's new process took the running daemon for one
    starting and exited as a double start (status 78), and the deploy then
    stopped the old one. So each lock held names this process, and each
    lock waited for is waited for here, where the parent's thread does not
    run (without it, the daemon never held the lock).
    """
    global _held_guard
    # Only this thread runs here: whatever held the guard at the fork is gone.
    _held_guard = threading.Lock()
    for fd in _held.values():
        _name_this_process(fd)
    for path in list(_waiting):
        Waiting(os.path.dirname(path))


os.register_at_fork(after_in_child=_after_fork)


def release(directory: str) -> None:
    """Let go of the state_dir's lock, if this process holds it (tests)."""
    with _held_guard:
        fd = _held.pop(lock_path(directory), None)
    if fd is not None:
        os.close(fd)


def holds(directory: str) -> bool:
    """Whether this process holds the state_dir's lock."""
    with _held_guard:
        return lock_path(directory) in _held


class Waiting:
    """
    A thread that waits for the lock (held by an older process that this
    one takes over from) and holds it once that process has exited; a
    daemon thread, so that it never holds this process's exit.
    """

    def __init__(self, directory: str) -> None:
        self.path = lock_path(directory)
        with _held_guard:
            _waiting.add(self.path)
        self.thread = threading.Thread(
            target=self._wait, name="sentinel-start-lock", daemon=True
        )
        self.thread.start()

    def _wait(self) -> None:
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            os.close(fd)
            return
        _hold(self.path, fd)


def _running_for(pid: int) -> float | None:
    """Seconds since process `pid` started, None if that cannot be told."""
    try:
        started: float = psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None
    return time.time() - started


def double_start(
    directory: str,
    held: HeldBy | str | None,
    left: StoredSession | str | None,
    agent_id: str,
    running_for: Callable[[int], float | None] = _running_for,
) -> str | None:
    """
    The line to exit with when another process is starting on the
    state_dir `directory`, or runs there as another agent (module
    docstring), else None; `held` is what `take` found, `left` the state
    file read after it, `agent_id` this agent's, `running_for` how long a
    process has run.
    """
    if held is None:
        return None
    if isinstance(held, str):
        log.warn(
            "could not take the state_dir's lock ({why}): a double start "
            "would not be refused",
            why=held,
        )
        return None
    if held.pid is not None and isinstance(left, StoredSession):
        if left.owner.pid == held.pid and left.purpose.agent_id != agent_id:
            return (
                f"sentinel: state_dir: {directory} is agent id "
                f"{left.purpose.agent_id!r}'s, whose process (pid {held.pid}) "
                f"runs and holds {lock_path(directory)}: a state_dir is one "
                f"agent's; exiting, and leaving it alone (to rename that "
                f"agent, stop it first; else give this one its own state_dir)"
            )
        if left.owner.pid == held.pid:
            # An older process that recorded its session: taken over.
            Waiting(directory)
            return None
    if held.pid is not None:
        age = running_for(held.pid)
        if age is not None and age > STARTING_WINDOW:
            log.warn(
                "process {pid} holds the state_dir's lock and has run for {age}"
                " s without recording a ZooKeeper session: an older process,"
                " not a double start; going on (two live agents of one id"
                " are settled by the twin rule)",
                pid=held.pid,
                age=round(age),
            )
            Waiting(directory)
            return None
    who = "another process" if held.pid is None else f"another process (pid {held.pid})"
    return (
        f"sentinel: state_dir: {who} is starting on {directory} (it holds "
        f"{lock_path(directory)}) and has recorded no ZooKeeper session yet: "
        f"a double start; exiting, and leaving it alone"
    )

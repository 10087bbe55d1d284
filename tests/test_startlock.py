"""
The state_dir's start lock (`sentinel.startlock`): one process starting
on a state_dir at a time; a double start's loser is told so in one line,
an older process that recorded its session is taken over from as before.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
from collections.abc import Callable

import attr
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from sentinel import startlock
from sentinel.privatefiles import StateFileRefused
from sentinel.startlock import HeldBy, double_start, lock_path, take
from tests.test_session import STORED

OTHER_PID = STORED.owner.pid
# This process's agent id: the one the stored session is for.
AGENT = STORED.purpose.agent_id


def _starting(pid: int) -> float:
    """A holder that started a moment ago."""
    return 1.0


class StartLockTests(SynchronousTestCase):
    """Taking the lock, and what a lock held by another process says."""

    def setUp(self) -> None:
        self.directory = os.path.join(tempfile.mkdtemp(prefix="startlock-"), "state")
        self.addCleanup(startlock.release, self.directory)

    def hold_elsewhere(self, pid: bytes = f"{OTHER_PID}\n".encode()) -> int:
        """Lock the file through another open file, as another process does."""
        os.mkdir(self.directory, 0o700)
        fd = os.open(lock_path(self.directory), os.O_RDWR | os.O_CREAT, 0o600)
        self.addCleanup(os.close, fd)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, pid)
        return fd

    def assert_taken_once_let_go(self, fd: int) -> None:
        """The other holder lets go of the lock: this process holds it then."""
        fcntl.flock(fd, fcntl.LOCK_UN)
        for thread in threading.enumerate():
            if thread.name == "sentinel-start-lock":
                thread.join(5.0)
        self.assertTrue(startlock.holds(self.directory))

    def test_taken_and_kept(self) -> None:
        """
        A free lock is taken, names this pid, and is kept: asked again,
        this process holds it, and it makes the state_dir (mode 0700).
        """
        self.assertIsNone(take(self.directory))
        self.assertTrue(startlock.holds(self.directory))
        with open(lock_path(self.directory)) as f:
            self.assertEqual(f.read(), f"{os.getpid()}\n")
        self.assertEqual(os.stat(self.directory).st_mode & 0o777, 0o700)
        self.assertIsNone(take(self.directory))

    def test_held_by_another(self) -> None:
        """A lock another process holds names its pid, and is not taken."""
        self.hold_elsewhere()
        self.assertEqual(take(self.directory), HeldBy(OTHER_PID))
        self.assertFalse(startlock.holds(self.directory))

    def test_held_saying_nothing(self) -> None:
        """A holder that has not written its pid yet is still a holder."""
        self.hold_elsewhere(b"")
        self.assertEqual(take(self.directory), HeldBy(None))

    def test_symbolic_link_refused(self) -> None:
        """A lock file that is a symbolic link is refused, as the state file is."""
        os.mkdir(self.directory, 0o700)
        os.symlink("/dev/null", lock_path(self.directory))
        self.assertRaises(StateFileRefused, take, self.directory)

    def test_double_start_refused(self) -> None:
        """
        A holder that has recorded no session (no state file, or one of
        a process gone) is starting too: one line names it and the lock.
        """
        gone = attr.evolve(STORED, owner=attr.evolve(STORED.owner, pid=1))
        for left in ("no state file", gone):
            line = double_start(
                self.directory, HeldBy(OTHER_PID), left, AGENT, _starting
            )
            self.assertEqual(
                line,
                f"sentinel: state_dir: another process (pid {OTHER_PID}) is "
                f"starting on {self.directory} (it holds "
                f"{lock_path(self.directory)}) and has recorded no ZooKeeper "
                f"session yet: a double start; exiting, and leaving it alone",
            )
        line = double_start(self.directory, HeldBy(None), None, AGENT)
        assert line is not None
        self.assertIn("another process is starting", line)
        unknown = double_start(
            self.directory, HeldBy(OTHER_PID), None, AGENT, lambda _: None
        )
        self.assertIsNotNone(unknown)

    def test_older_process_without_session_not_refused(self) -> None:
        """
        A holder that recorded no session but started over
        `STARTING_WINDOW` ago is an older process (ZooKeeper away since
        its start): this one goes on, says so, and takes the lock once
        that one has let go of it. Refused, a deploy that starts the new
        process before stopping the old left no agent.
        """
        fd = self.hold_elsewhere()
        ages = []

        def running_for(pid: int) -> float:
            ages.append(pid)
            return startlock.STARTING_WINDOW + 1

        with capturedLogs() as events:
            line = double_start(
                self.directory, HeldBy(OTHER_PID), None, AGENT, running_for
            )
        self.assertIsNone(line)
        self.assertEqual(ages, [OTHER_PID])
        self.assertEqual([e["log_level"] for e in events], [LogLevel.warn])
        self.assertIn("an older process", formatEvent(events[0]))
        self.assert_taken_once_let_go(fd)

    def test_older_process_taken_over(self) -> None:
        """
        A holder the state file names recorded its session: an older
        process at a deploy, taken over as before; the lock is this
        process's once that one has let go of it.
        """
        fd = self.hold_elsewhere()
        self.assertIsNone(
            double_start(self.directory, HeldBy(OTHER_PID), STORED, AGENT)
        )
        self.assertFalse(startlock.holds(self.directory))
        self.assert_taken_once_let_go(fd)

    def test_running_agent_of_another_id_refused(self) -> None:
        """
        A holder the state file names recorded its session under another
        agent id: another agent runs on this state_dir, which is one
        agent's. One line names it, and this process exits, leaving it
        alone (before, it went on beside it with a session of its own,
        and wrote its state file over that agent's, which then logged
        state-file errors until its stop).
        """
        self.hold_elsewhere()
        line = double_start(self.directory, HeldBy(OTHER_PID), STORED, "renamed")
        self.assertEqual(
            line,
            f"sentinel: state_dir: {self.directory} is agent id {AGENT!r}'s, "
            f"whose process (pid {OTHER_PID}) runs and holds "
            f"{lock_path(self.directory)}: a state_dir is one agent's; "
            f"exiting, and leaving it alone (to rename that agent, stop it "
            f"first; else give this one its own state_dir)",
        )
        self.assertFalse(
            any(t.name == "sentinel-start-lock" for t in threading.enumerate())
        )

    def test_no_lock_to_be_had(self) -> None:
        """A lock that cannot be had is said once; the agent starts without it."""
        with capturedLogs() as events:
            self.assertIsNone(double_start(self.directory, "read-only", None, AGENT))
        self.assertEqual([e["log_level"] for e in events], [LogLevel.warn])

    def in_child(self, check: Callable[[], bool]) -> None:
        """
        Fork, as twistd does to run a daemon, and assert that `check`
        holds in the child (it exits at once, with its answer).
        """
        pid = os.fork()
        if pid == 0:
            try:
                code = 0 if check() else 1
            except BaseException:
                code = 2
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        self.child = pid

    def test_daemon_named(self) -> None:
        """
        A lock taken before a fork (twistd's daemon is the child, and the
        parent exits) names the child. Before, it named the parent, gone:
        a deploy's next process took the daemon for one starting and
        exited as a double start.
        """
        self.assertIsNone(take(self.directory))
        self.in_child(lambda: True)
        with open(lock_path(self.directory)) as f:
            self.assertEqual(f.read(), f"{self.child}\n")

    def test_daemon_waits(self) -> None:
        """
        A lock waited for before a fork is waited for in the child, where
        the parent's thread does not run: else the daemon never held it.
        """
        fd = self.hold_elsewhere()
        self.assertIsNone(
            double_start(self.directory, HeldBy(OTHER_PID), STORED, AGENT)
        )
        self.in_child(
            lambda: any(t.name == "sentinel-start-lock" for t in threading.enumerate())
        )
        self.assert_taken_once_let_go(fd)

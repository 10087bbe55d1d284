"""
Files only this process's user may read: the ZooKeeper session's state
file holds a password, and whoever reads it can take the session and its
nodes (DESIGN.md section 8, "Restarts").

So the directory must be the user's and writable by nobody else, and the
file a regular file (never followed if it is a symbolic link), the user's
and readable by nobody else: anything else is `StateFileRefused`, whose
message is one line. A directory that is a symbolic link is followed (a
link to another disk is a common layout) and what it points to checked,
unless the link is another user's than the agent's or root's: that user
could point it elsewhere at any time, as one who may write to the
directory could swap the file. So, as OpenSSH's ``StrictModes`` does for
``~/.ssh``, every directory above it, as written and as its links
resolve, must be root's or the user's and writable by nobody else, unless
its sticky bit is set (``/tmp``: there only an entry's owner may move
it), and a link on the way must be root's or the user's: otherwise its
owner, or whoever may write beside it, could move the state_dir away and
put another in its place. A file read is bounded (`Unreadable` past its
limit).
Writes are atomic: a temporary file in the same directory, fsync, rename,
fsync of the directory; readers see the old file or the new one, after a
crash too.

These calls block for as long as the file system does. After start they
run on a thread each, within a deadline (`FileWorker`), never on the
reactor thread: a hung mount is an error after the deadline, and holds
one thread, never more.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail

from sentinel.files import READ_DEADLINE, TooLarge, Unreadable, size_text

# The modes that would let another user read the password or replace it.
_OTHERS = stat.S_IRWXG | stat.S_IRWXO
_DIRECTORY_OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH

_T = TypeVar("_T")


class StateFileRefused(Unreadable):
    """
    A state_dir or state file the agent must not use (another user could
    read or replace the session's password); the message is one line.
    """


class NotRead(Unreadable):
    """
    A file that could not be read now (the system's error, out of file
    descriptors say, or no answer within the deadline): nothing is known
    of what it holds.
    """


class NoStateFile(Unreadable):
    """There is no file (yet, or any more)."""

    def __init__(self) -> None:
        super().__init__("no state file")


def prepare_directory(directory: str) -> None:
    """
    Create `directory` (mode 0700) if it is missing; check that it is a
    directory of this user's that nobody else may write to.

    @raise StateFileRefused: if it is not, or if another user could move
        it away (module docstring).
    """
    _check_parents(directory)
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise StateFileRefused(f"cannot create {directory}: {e.strerror}") from None
    try:
        link = os.lstat(directory)
        status = os.stat(directory)
    except OSError as e:
        raise StateFileRefused(f"{directory}: {e.strerror}") from None
    if not stat.S_ISDIR(status.st_mode):
        raise StateFileRefused(f"{directory} is not a directory")
    if stat.S_ISLNK(link.st_mode) and link.st_uid not in (0, os.geteuid()):
        raise StateFileRefused(
            f"{directory} is a symbolic link owned by uid {link.st_uid}, "
            f"neither the agent's user nor root: it could be pointed elsewhere"
        )
    _check_owner(directory, status)
    if status.st_mode & _DIRECTORY_OTHERS_WRITE:
        raise StateFileRefused(
            f"{directory} is writable by other users (mode "
            f"{stat.S_IMODE(status.st_mode):04o}): they could replace the "
            f"session file"
        )


def _check_parents(directory: str) -> None:
    """
    Refuse `directory` if another user could move it, or a directory above
    it, away and put their own in its place (module docstring). One that
    cannot be looked at is left to the checks of `directory` itself (a
    missing parent: its creation says so).
    """
    uid = os.geteuid()
    written = os.path.abspath(directory)
    seen: set[str] = set()
    for path in (written, os.path.realpath(directory)):
        parent = path
        while parent != "/":
            child, parent = parent, os.path.dirname(parent)
            if path is written and child != written:
                _check_link(directory, child, uid)
            if parent in seen:
                continue
            seen.add(parent)
            try:
                status = os.stat(parent)
            except OSError:
                continue
            above = f"{parent}, above the state_dir {directory},"
            if status.st_uid not in (0, uid):
                raise StateFileRefused(
                    f"{above} belongs to uid {status.st_uid}, neither the agent's "
                    f"user nor root: it could put another state_dir in its place"
                )
            if status.st_mode & _DIRECTORY_OTHERS_WRITE and not (
                status.st_mode & stat.S_ISVTX
            ):
                raise StateFileRefused(
                    f"{above} is writable by other users and not sticky (mode "
                    f"{stat.S_IMODE(status.st_mode):04o}): they could put another "
                    f"state_dir in its place"
                )


def _check_link(directory: str, path: str, uid: int) -> None:
    """A symbolic link above `directory` must be root's or the user's."""
    try:
        status = os.lstat(path)
    except OSError:
        return
    if stat.S_ISLNK(status.st_mode) and status.st_uid not in (0, uid):
        raise StateFileRefused(
            f"{path}, above the state_dir {directory}, is a symbolic link owned "
            f"by uid {status.st_uid}, neither the agent's user nor root: it "
            f"could be pointed elsewhere"
        )


def _check_owner(path: str, status: os.stat_result) -> None:
    uid = os.geteuid()
    if status.st_uid != uid:
        raise StateFileRefused(
            f"{path} belongs to uid {status.st_uid}, not to the agent's user "
            f"(uid {uid})"
        )


def read_private_file(path: str, limit: int) -> bytes:
    """
    What the file at `path` holds, once its directory and the file itself
    are checked as the module docstring says. This blocks for as
    long as the file system does: run it within a deadline.

    @raise StateFileRefused: if the directory or the file must not be used.
    @raise NotRead: if the system failed to read it.
    @raise NoStateFile: if it is missing.
    @raise TooLarge: if it is too large.
    """
    prepare_directory(os.path.dirname(path))
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise NoStateFile() from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise StateFileRefused(f"{path} is a symbolic link") from None
        raise NotRead(e.strerror or str(e)) from None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise StateFileRefused(f"{path} is not a regular file")
        _check_owner(path, status)
        if status.st_mode & _OTHERS:
            raise StateFileRefused(
                f"{path} is readable or writable by other users (mode "
                f"{stat.S_IMODE(status.st_mode):04o}): it holds the session's "
                f"password; remove it, or chmod 600 it"
            )
        if status.st_size > limit:
            raise TooLarge(f"larger than {size_text(limit)}")
        data = os.read(fd, limit + 1)
    except OSError as e:
        raise NotRead(e.strerror or str(e)) from None
    finally:
        os.close(fd)
    if len(data) > limit:
        raise TooLarge(f"larger than {size_text(limit)}")
    return data


def write_private_file(path: str, data: bytes) -> None:
    """
    Replace the file at `path` with `data`, atomically: readers see the old
    file or the new one, after a crash too. Mode 0600.
    """
    directory = os.path.dirname(path)
    try:
        fd, temporary = tempfile.mkstemp(
            dir=directory, prefix=f".{os.path.basename(path)}."
        )
    except OSError as e:
        # Said without the temporary file's name, new at each try: a write
        # tried again and again (a read-only file system) is the same
        # error, logged once, not once per try (25 lines a minute).
        raise OSError(e.errno, e.strerror) from None
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    _sync_directory(directory)


def remove_private_file(path: str) -> None:
    """Remove the file at `path`, if it is there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return
    _sync_directory(os.path.dirname(path))


def _sync_directory(directory: str) -> None:
    # The rename or unlink is durable once the directory is.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileWorker:
    """
    Runs blocking calls on a thread each, one Deferred per call, within a
    deadline. A call that overran holds its thread until the file system
    answers; until then other calls are refused at once, so that a hung
    mount holds one thread, never more.
    """

    def __init__(self, reactor: Any, deadline: float = READ_DEADLINE) -> None:
        self._reactor = reactor
        self.deadline = deadline
        # What overran, and since when (reactor time), until it ends.
        self._stuck: tuple[str, float] | None = None

    def run(self, what: str, call: Callable[[], _T]) -> Deferred[_T]:
        """`call()` on a thread of its own; `what` names it in errors."""
        reactor = self._reactor
        if self._stuck is not None:
            stuck, since = self._stuck
            waited = reactor.seconds() - since
            return fail(NotRead(f"{stuck} has not ended after {waited:.0f} s"))
        done: Deferred[_T] = Deferred()
        started = reactor.seconds()
        finished = False

        def ended(outcome: Any, failed: bool) -> None:
            nonlocal finished
            finished = True
            if self._stuck is not None and self._stuck[0] == what:
                self._stuck = None
            if done.called:
                return
            if failed:
                done.errback(outcome)
            else:
                done.callback(outcome)

        def work() -> None:
            try:
                result: Any = call()
            except BaseException as e:
                reactor.callFromThread(ended, e, True)
            else:
                reactor.callFromThread(ended, result, False)

        def overran(failure: Any) -> Any:
            if not finished:
                self._stuck = (what, started)
            return failure

        threading.Thread(target=work, name="sentinel-state", daemon=True).start()
        done.addTimeout(self.deadline, reactor)
        done.addErrback(overran)
        return done

"""
The state file: the ZooKeeper session one process leaves to the next
(DESIGN.md section 8, "Restarts").

With ``state_dir``, the agent keeps its session's id and password in
``{state_dir}/zookeeper-session.json``, so that the next process reattaches
to the session, to which the ephemeral nodes belong, instead of opening a
new one. The file also says what the session is for (ZooKeeper hosts, root,
agent id), which process holds it (pid and a random token: an older
process whose session was taken reads it to learn that it was
superseded), the discovery parents under which the session may hold
members (the next process looks there for members of instances removed
meanwhile), until when the session's nodes were backed by checks
(``checked_at``: a session nobody checked for long is not kept alive,
`sentinel.handoff`), and the session timeout ZooKeeper granted
(``session_timeout``: the one that rule counts in, which may not be the
one asked for), and, while no process has checked every instance since
``checked_at``, those checked since (``covered``, `sentinel.coverage`).
A file a clean stop wrote with its last checks says ``"checked_at_exact":
true``: its ``checked_at`` does not lag them (`sentinel.handoff`). Absent
(an older version's file, or one written while running), it may lag; an
older version ignores the field, as it does any key it does not read.

Whoever holds the password can take the session, and with it the nodes:
the file is one only the agent's user may read (`sentinel.privatefiles`:
anything else is `StateFileRefused`, one line at start and exit status 1),
written atomically. A file that is merely unusable (missing, truncated,
not JSON, too large, for another chroot, root or agent id) is
`Unreadable`: the agent opens a new session, says why, and overwrites the
file; one for another root, chroot or agent id still names the session
its previous process left, which is closed if that process is gone
(`sentinel.handoff`). The ZooKeeper servers are not compared: one ensemble is listed in
many ways (a server added, ``localhost`` for ``127.0.0.1``), and trying to
reattach is safe, for an ensemble that does not know the session refuses
it as expired, and the agent then opens a new one. It is read before the
reactor runs, within a deadline; after start every read and write runs on
a thread of its own within a deadline (`privatefiles.FileWorker`), never
on the reactor thread.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable
from typing import Any

import attr
from twisted.internet.defer import Deferred

from sentinel.checks import chroot_of, finite
from sentinel.config import Config
from sentinel.coverage import decode_covered, encode_covered
from sentinel.files import MAX_CONFIG_BYTES, FileReader, Unreadable, size_text
from sentinel.privatefiles import (
    FileWorker,
    StateFileRefused,
    read_private_file,
    remove_private_file,
    write_private_file,
)

STATE_FILE = "zookeeper-session.json"
# The file is about 300 bytes, plus the discovery parents' paths: one
# each for up to as many services as instances, each instance its own by
# default (2,000 came to 88 KB). As large as the config may be, that lists
# them; a write over it fails, for the next process would not read it.
MAX_STATE_BYTES = MAX_CONFIG_BYTES
_FORMAT = "sentinel zookeeper session"
# Random bytes in each process's token (in hex): the agent node names it,
# and any other form there is no process's (`sentinel.sharing`).
TOKEN_BYTES = 8
_VERSION = 1
# The last second of year 9999, the last a date has: the file's time is
# logged as one, and a later one (1e300, or a time in milliseconds, 1e12)
# raised inside the ZooKeeper listener that resyncs the nodes.
_LAST_WRITTEN_AT = 253402300799.0
# ZooKeeper grants a session timeout in milliseconds, a Java int.
_LONGEST_SESSION_TIMEOUT = (2**31 - 1) / 1000


class Corrupt(Unreadable):
    """
    A state file that is not JSON (truncated, or corrupt): it names no
    session nor process, whatever version wrote it (every version writes
    JSON, atomically).
    """


class NotHeld(Exception):
    """The state file no longer names this process as the session's holder."""


class HeldByAnother(Exception):
    """
    The state file names another process that runs as a session's holder
    (`held`): a newer process on this state_dir, which a write would rob
    of its handoff.
    """

    def __init__(self, held: StoredSession) -> None:
        super().__init__(f"it names pid {held.owner.pid}, which runs")
        self.held = held


@attr.frozen
class SessionPurpose:
    """What a session publishes for: an ensemble, a root, an agent id."""

    hosts: str
    root: str
    agent_id: str


@attr.frozen
class Owner:
    """The process holding the session: its pid, and a token of its own."""

    pid: int
    token: str

    @classmethod
    def this_process(cls) -> Owner:
        """This process, with a fresh random token (pids are reused)."""
        return cls(os.getpid(), os.urandom(TOKEN_BYTES).hex())


def is_process_token(token: str) -> bool:
    """
    Whether `token` has the form of every process's (`Owner.this_process`):
    only such a token, in an agent node, can be another process's.
    """
    return len(token) == 2 * TOKEN_BYTES and all(c in "0123456789abcdef" for c in token)


@attr.frozen
class StoredSession:
    """What the state file holds."""

    purpose: SessionPurpose
    session_id: int
    password: bytes = attr.field(repr=False)
    owner: Owner
    written_at: float
    # Where the session may hold discovery members.
    discovery_parents: tuple[str, ...] = ()
    # Epoch seconds up to which a process holding the session checked its
    # instances (at first, the session's start): None in a file from a
    # version that did not say.
    checked_at: float | None = None
    # The session timeout ZooKeeper granted the process holding the
    # session, in seconds: None in a file from a version that did not say.
    session_timeout: float | None = None
    # Why the file is not one to reattach by, though it names this
    # session for this agent (another version's format): None if it is.
    unusable: str | None = None
    # The instances checked since ``checked_at`` whose checks ZooKeeper
    # holds, while no process has checked them all since (`sentinel.coverage`):
    # empty in a file that does not say, or says it in a way not understood.
    covered: frozenset[str] = frozenset()
    # Whether ``checked_at`` is the last check's own time (a stop wrote
    # it), not one that may lag it by a refresh's interval.
    checked_at_exact: bool = False

    @property
    def client_id(self) -> tuple[int, bytes]:
        """(session id, password), as kazoo takes them."""
        return self.session_id, self.password


# The file's bytes.


def encode_state(stored: StoredSession) -> bytes:
    """The state file's bytes for `stored`."""
    document = {
        "format": _FORMAT,
        "version": _VERSION,
        "hosts": stored.purpose.hosts,
        "root": stored.purpose.root,
        "agent_id": stored.purpose.agent_id,
        "session_id": f"{stored.session_id:#x}",
        "password": base64.b64encode(stored.password).decode("ascii"),
        "owner": {"pid": stored.owner.pid, "token": stored.owner.token},
        "written_at": stored.written_at,
        "discovery_parents": list(stored.discovery_parents),
        "checked_at": stored.checked_at,
        "session_timeout": stored.session_timeout,
    }
    if stored.covered:
        document["covered"] = encode_covered(stored.covered)
    if stored.checked_at_exact:
        document["checked_at_exact"] = True
    return json.dumps(document, indent=1).encode("utf-8") + b"\n"


def decode_state(
    data: bytes, purpose: SessionPurpose, any_agent_id: bool = False
) -> StoredSession:
    """
    The session in `data`, if it is one for `purpose` (`any_agent_id`: of
    any agent id).

    @raise Unreadable: saying why it is not (never quoting the password).
    """
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise Corrupt("not JSON (truncated or corrupt)") from None
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        raise Unreadable("not a sentinel state file")
    if document.get("version") != _VERSION:
        raise Unreadable(f"version {_show(document.get('version'))} is not {_VERSION}")
    stored = StoredSession(
        purpose=SessionPurpose(
            _field(document, "hosts", str),
            _field(document, "root", str),
            _field(document, "agent_id", str),
        ),
        session_id=_session_id(document),
        password=_password(document),
        owner=_owner(document),
        written_at=_written_at(document),
        discovery_parents=_parents(document),
        checked_at=_checked_at(document),
        session_timeout=_session_timeout(document),
        covered=decode_covered(document.get("covered")),
        # Anything but true: it may lag, as an older version's file may.
        checked_at_exact=document.get("checked_at_exact") is True,
    )
    theirs = stored.purpose
    if chroot_of(theirs.hosts) != chroot_of(purpose.hosts):
        raise Unreadable(f"for another ZooKeeper chroot ({theirs.hosts!r})")
    if theirs.root != purpose.root:
        raise Unreadable(f"for another root ({theirs.root!r})")
    if theirs.agent_id != purpose.agent_id and not any_agent_id:
        raise Unreadable(f"for another agent id ({theirs.agent_id!r})")
    return stored


def closable_state(
    data: bytes, purpose: SessionPurpose, why: str, elsewhere: bool = False
) -> StoredSession | None:
    """
    The session a state file that `decode_state` refused (`why`) still
    names for `purpose`, with the pid that left it, or None if it names
    none this version can tell: another version's file (a format version
    this one does not know, a field it writes otherwise) is not reattached
    by, but its session is this agent's, and is closed rather than left
    to expire with its nodes (`sentinel.handoff`). With `elsewhere` (the
    file found at start), a session left for another root or chroot, or
    agent id, is named too: the state_dir's previous process left it
    (its config changed since), and its nodes, at the old place, are
    closed with it rather than left there, unchecked, until it expires.
    """
    try:
        document = json.loads(data)
        if not isinstance(document, dict) or document.get("format") != _FORMAT:
            return None
        theirs = SessionPurpose(
            _field(document, "hosts", str),
            _field(document, "root", str),
            _field(document, "agent_id", str),
        )
        if not elsewhere and (
            theirs.agent_id != purpose.agent_id
            or theirs.root != purpose.root
            or chroot_of(theirs.hosts) != chroot_of(purpose.hosts)
        ):
            return None
        return StoredSession(
            purpose=theirs,
            session_id=_session_id(document),
            password=_password(document),
            owner=_owner(document),
            written_at=0.0,
            unusable=why,
        )
    except (ValueError, RecursionError, Unreadable):
        return None


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _field(document: dict[str, Any], key: str, kind: Any) -> Any:
    value = document.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise Unreadable(f"{key} is missing or invalid")
    return value


def _written_at(document: dict[str, Any]) -> float:
    written_at = finite(document.get("written_at"))
    if written_at is None or not 0 <= written_at <= _LAST_WRITTEN_AT:
        raise Unreadable("written_at is missing or invalid")
    return written_at


def _checked_at(document: dict[str, Any]) -> float | None:
    if document.get("checked_at") is None:
        return None
    checked_at = finite(document["checked_at"])
    if checked_at is None or not 0 <= checked_at <= _LAST_WRITTEN_AT:
        raise Unreadable("checked_at is invalid")
    return checked_at


def _session_timeout(document: dict[str, Any]) -> float | None:
    if document.get("session_timeout") is None:
        return None
    timeout = finite(document["session_timeout"])
    if timeout is None or not 0 < timeout <= _LONGEST_SESSION_TIMEOUT:
        raise Unreadable("session_timeout is invalid")
    return timeout


def _session_id(document: dict[str, Any]) -> int:
    try:
        session = int(_field(document, "session_id", str), 16)
    except ValueError:
        raise Unreadable("session_id is missing or invalid") from None
    if not 0 < session < 1 << 64:
        raise Unreadable("session_id is missing or invalid")
    return session


def _password(document: dict[str, Any]) -> bytes:
    try:
        password = base64.b64decode(_field(document, "password", str), validate=True)
    except (ValueError, binascii.Error):
        raise Unreadable("password is missing or invalid") from None
    if not password:
        raise Unreadable("password is missing or invalid")
    return password


def _owner(document: dict[str, Any]) -> Owner:
    owner = _field(document, "owner", dict)
    pid = _field(owner, "pid", int)
    # A pid_t: os.kill raised OverflowError past it (a traceback at start),
    # and took 0 and -1 for process groups, which always "run".
    if not 0 < pid < 1 << 31:
        raise Unreadable("pid is missing or invalid")
    return Owner(pid, _field(owner, "token", str))


def _parents(document: dict[str, Any]) -> tuple[str, ...]:
    parents = _field(document, "discovery_parents", list)
    if not all(isinstance(p, str) and p.startswith("/") for p in parents):
        raise Unreadable("discovery_parents is invalid")
    return tuple(parents)


# Where it is, and reading it at start.


def state_path(directory: str) -> str:
    """The state file in `directory`."""
    return os.path.join(directory, STATE_FILE)


def read_at_start(reader: FileReader, path: str, limit: int) -> bytes | str:
    """
    What `reader` reads of `path` (at most `limit` bytes) within its
    deadline, before the reactor runs; or why it could not, prefixed
    with the path.

    @raise StateFileRefused: if the directory or file must not be used.
    """
    try:
        with reader.batch() as read:
            return read(path, limit)
    except StateFileRefused:
        raise
    except Unreadable as e:
        return f"{path}: {e}"


def left_in(
    directory: str, purpose: SessionPurpose, reader: FileReader | None = None
) -> StoredSession | str:
    """
    The session left in `directory` for `purpose`, or why there is none to
    reattach to; read before the reactor runs, within `reader`'s deadline
    (a hung mount is an error after it). A session left by this state_dir's
    agent under another agent id is one too: it is this agent's
    predecessor's (`sentinel.handoff` decides what becomes of it); so is
    one left for another root or chroot, marked unusable (`closable_state`:
    closed if its process is gone, never reattached).

    @raise StateFileRefused: if the directory or file must not be used.
    """
    path = state_path(directory)
    reader = reader or FileReader(read_file=read_private_file)
    data = read_at_start(reader, path, MAX_STATE_BYTES)
    if isinstance(data, str):
        return data
    try:
        return decode_state(data, purpose, any_agent_id=True)
    except Unreadable as e:
        why = f"{path}: {e}"
        return closable_state(data, purpose, why, elsewhere=True) or why


def session_purpose(config: Config) -> SessionPurpose:
    """What the agent's ZooKeeper session is for (its state file says it)."""
    zk_config = config.zookeeper
    assert zk_config is not None
    return SessionPurpose(zk_config.hosts, zk_config.root, config.agent_id)


def session_left(config: Config) -> StoredSession | str | None:
    """
    The ZooKeeper session the previous process left in ``state_dir`` (or
    why there is none to reattach to), None without a state_dir. This
    reads a file: call it before the reactor runs.

    @raise StateFileRefused: if the state_dir or its file must not be used
        (the message is one line).
    """
    if config.state_dir is None or config.zookeeper is None:
        return None
    return left_in(config.state_dir, session_purpose(config))


class StateFile:
    """The state file of one directory, read and written off the reactor."""

    def __init__(self, directory: str, worker: FileWorker) -> None:
        self.directory = directory
        self.path = state_path(directory)
        self._worker = worker

    def read(self, purpose: SessionPurpose) -> Deferred[StoredSession]:
        """
        The session the file holds for `purpose` (or `Unreadable`); in
        another version's file, the session and holder it still names
        (`closable_state`): a newer version's process that took the
        session over, at a deploy that starts it before this one stops, is
        learnt of as any newer process is, not fought for the session.
        """
        return self._worker.run(f"a read of {self.path}", lambda: self._held(purpose))

    def _held(self, purpose: SessionPurpose) -> StoredSession:
        """What `read` fires with, read on the worker's thread."""
        data = read_private_file(self.path, MAX_STATE_BYTES)
        try:
            return decode_state(data, purpose)
        except Unreadable as e:
            named = closable_state(data, purpose, str(e))
            if named is None:
                raise
            return named

    def write(
        self,
        stored: StoredSession,
        holder: Owner | None = None,
        running: Callable[[int], bool] | None = None,
    ) -> Deferred[None]:
        """
        Replace the file with `stored`, atomically; with `holder`, only if
        the file still names `holder` as the holder of the same session
        (else `NotHeld`, and the file is left as it is); with `running`,
        only if the file names no process other than `stored`'s for which
        `running(pid)` is true (else `HeldByAnother`, the file left as it
        is: a file that names none, or cannot be read, is replaced).
        """
        data = encode_state(stored)

        def write() -> None:
            if len(data) > MAX_STATE_BYTES:
                raise ValueError(
                    f"{len(data)} bytes, over the {size_text(MAX_STATE_BYTES)} "
                    f"the next process would read"
                )
            if holder is not None:
                try:
                    held = read_private_file(self.path, MAX_STATE_BYTES)
                    current = decode_state(held, stored.purpose)
                except Unreadable as e:
                    raise NotHeld(str(e)) from None
                if current.client_id != stored.client_id or current.owner != holder:
                    raise NotHeld(f"it names pid {current.owner.pid}")
            if running is not None:
                try:
                    named = self._held(stored.purpose)
                except Unreadable:
                    named = None
                if (
                    named is not None
                    and named.owner != stored.owner
                    and running(named.owner.pid)
                ):
                    raise HeldByAnother(named)
            write_private_file(self.path, data)

        return self._worker.run(f"a write of {self.path}", write)

    def remove(self) -> Deferred[None]:
        """Remove the file (the session was closed on purpose)."""
        return self._worker.run(
            f"removing {self.path}", lambda: remove_private_file(self.path)
        )

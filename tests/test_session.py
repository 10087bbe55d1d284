"""
The state file (`sentinel.session`): what it holds, what the agent refuses
to use and what it merely does not reattach to, atomic writes, and reads and
writes off the reactor thread within a deadline.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
import threading

import attr
from twisted.internet.defer import TimeoutError
from twisted.trial.unittest import SynchronousTestCase

from sentinel import privatefiles
from sentinel.coverage import MAX_COVERED
from sentinel.files import FileReader, Unreadable
from sentinel.privatefiles import (
    FileWorker,
    NotRead,
    StateFileRefused,
    prepare_directory,
    read_private_file,
    write_private_file,
)
from sentinel.session import (
    MAX_STATE_BYTES,
    STATE_FILE,
    Owner,
    SessionPurpose,
    StateFile,
    StoredSession,
    decode_state,
    encode_state,
    left_in,
)
from tests.fakekazoo import HandOverClock

PURPOSE = SessionPurpose("zk1:2181,zk2:2181", "/sentinel", "host-1")
PASSWORD = b"\x00\x01secret-password\xff"
STORED = StoredSession(
    PURPOSE,
    0x100004B2E8E0001,
    PASSWORD,
    Owner(4242, "0123456789abcdef"),
    1_800_000_000.5,
    ("/discovery/cache", "/discovery/sessions"),
)


class EncodingTests(SynchronousTestCase):
    """The file's JSON, and every way it can be unusable."""

    def test_round_trip(self) -> None:
        """What is written is read back, for the same purpose."""
        self.assertEqual(decode_state(encode_state(STORED), PURPOSE), STORED)

    def test_written_at_within_dates(self) -> None:
        """A time up to the last second of year 9999 is read as it is."""
        for written_at in (0.0, 253402300799.0):
            stored = attr.evolve(STORED, written_at=written_at)
            self.assertEqual(decode_state(encode_state(stored), PURPOSE), stored)

    def test_checked_at(self) -> None:
        """
        The time of the last checks is read as written; a file that does
        not say (an older version's) reads as None.
        """
        stored = attr.evolve(STORED, checked_at=1_800_000_100.25)
        self.assertEqual(decode_state(encode_state(stored), PURPOSE), stored)
        document = json.loads(encode_state(stored))
        del document["checked_at"]
        self.assertIsNone(
            decode_state(json.dumps(document).encode(), PURPOSE).checked_at
        )

    def test_session_timeout(self) -> None:
        """
        The session timeout ZooKeeper granted is read as written; a file
        that does not say (an older version's) reads as None.
        """
        stored = attr.evolve(STORED, session_timeout=4.0)
        self.assertEqual(decode_state(encode_state(stored), PURPOSE), stored)
        document = json.loads(encode_state(stored))
        del document["session_timeout"]
        self.assertIsNone(
            decode_state(json.dumps(document).encode(), PURPOSE).session_timeout
        )

    def test_covered(self) -> None:
        """
        The instances checked since ``checked_at`` are read as written, one
        string; a file without them says none, and so does one whose value
        is not understood (another type, more names than any agent
        watches): the file is read all the same, and nothing is carried.
        """
        stored = attr.evolve(STORED, covered=frozenset({"r1", "r0", "cache.2"}))
        document = json.loads(encode_state(stored))
        self.assertEqual(document["covered"], "cache.2/r0/r1")
        self.assertEqual(decode_state(encode_state(stored), PURPOSE), stored)
        self.assertNotIn("covered", json.loads(encode_state(STORED)))
        for value in (
            None,
            ["r0", "r1"],
            {"r0": True},
            7,
            "",
            "/" * MAX_COVERED,
            "r/" * MAX_COVERED,
        ):
            document["covered"] = value
            read = decode_state(json.dumps(document).encode(), PURPOSE)
            self.assertEqual(
                (read.covered, read.session_id), (frozenset(), 0x100004B2E8E0001)
            )
        document["covered"] = "//r0//r0/"
        read = decode_state(json.dumps(document).encode(), PURPOSE)
        self.assertEqual(read.covered, {"r0"})

    def test_checked_at_exact(self) -> None:
        """
        ``checked_at_exact`` is written only when true and read as
        written; a file without it, or with anything but true, says its
        ``checked_at`` may lag, and is read all the same. A key the reader
        does not know is ignored, as the versions before this field do.
        """
        self.assertNotIn("checked_at_exact", json.loads(encode_state(STORED)))
        exact = attr.evolve(STORED, checked_at_exact=True)
        document = json.loads(encode_state(exact))
        self.assertIs(document["checked_at_exact"], True)
        self.assertEqual(decode_state(encode_state(exact), PURPOSE), exact)
        for value in (1, "true", None, False, {}):
            document["checked_at_exact"] = value
            read = decode_state(json.dumps(document).encode(), PURPOSE)
            self.assertEqual(read, STORED)
        document["stopped_by"] = {"a later": "field"}
        self.assertEqual(decode_state(json.dumps(document).encode(), PURPOSE), STORED)

    def test_hosts_spelled_otherwise(self) -> None:
        """
        The same ensemble listed otherwise (a server added or left out, a
        name for an address, the servers in another order, a chroot with a
        trailing slash) is the same ensemble: the session is reattached to
        (an ensemble that does not know it refuses it as expired).
        """
        for hosts in (
            "zk1:2181",
            "zk1:2181,zk2:2181,zk3:2181",
            "zk2:2181,zk1:2181",
            "localhost:2181",
            "10.0.0.9:2181",
        ):
            purpose = attr.evolve(PURPOSE, hosts=hosts)
            self.assertEqual(decode_state(encode_state(STORED), purpose), STORED)
        chrooted = attr.evolve(STORED, purpose=attr.evolve(PURPOSE, hosts="zk1/app"))
        purpose = attr.evolve(PURPOSE, hosts="localhost:2181/app/")
        self.assertEqual(decode_state(encode_state(chrooted), purpose), chrooted)

    def test_password_not_in_repr(self) -> None:
        """A StoredSession never shows its password in logs or errors."""
        self.assertNotIn("secret", repr(STORED))

    def test_unusable(self) -> None:
        """
        Truncated, corrupt or foreign contents are `Unreadable`, with a
        reason that names the problem and never quotes the password.
        """
        good = json.loads(encode_state(STORED))

        def changed(**fields: object) -> bytes:
            return json.dumps({**good, **fields}).encode()

        cases = {
            encode_state(STORED)[:50]: "not JSON (truncated or corrupt)",
            b"": "not JSON (truncated or corrupt)",
            b"\xff\xfe": "not JSON (truncated or corrupt)",
            b"[1, 2]": "not a sentinel state file",
            b'{"session_id": "0x1"}': "not a sentinel state file",
            b"[" * 100_000: "not JSON (truncated or corrupt)",
            changed(version=2): "version 2 is not 1",
            changed(session_id="zz"): "session_id is missing or invalid",
            changed(session_id="0x0"): "session_id is missing or invalid",
            changed(session_id=17): "session_id is missing or invalid",
            changed(password="not base64!"): "password is missing or invalid",
            changed(password=""): "password is missing or invalid",
            changed(owner={"pid": "1", "token": "t"}): "pid is missing or invalid",
            # Out of a pid's range: os.kill raised OverflowError at start
            # (a traceback), or, for 0 and -1, signalled a process group.
            changed(owner={"pid": 10**23, "token": "t"}): "pid is missing or invalid",
            changed(owner={"pid": 1 << 31, "token": "t"}): "pid is missing or invalid",
            changed(owner={"pid": 0, "token": "t"}): "pid is missing or invalid",
            changed(owner={"pid": -1, "token": "t"}): "pid is missing or invalid",
            changed(owner=None): "owner is missing or invalid",
            changed(written_at=True): "written_at is missing or invalid",
            changed(written_at=float("nan")): "written_at is missing or invalid",
            changed(written_at=10**4000): "written_at is missing or invalid",
            # Past year 9999: no date shows it (it broke the resync).
            changed(written_at=1e300): "written_at is missing or invalid",
            changed(written_at=1e12): "written_at is missing or invalid",
            changed(written_at=-1.0): "written_at is missing or invalid",
            changed(discovery_parents=["relative"]): "discovery_parents is invalid",
            changed(checked_at="now"): "checked_at is invalid",
            changed(checked_at=1e300): "checked_at is invalid",
            changed(session_timeout="10"): "session_timeout is invalid",
            changed(session_timeout=0): "session_timeout is invalid",
            changed(session_timeout=-4.0): "session_timeout is invalid",
            # Past what ZooKeeper grants (milliseconds in a Java int).
            changed(session_timeout=1e300): "session_timeout is invalid",
            changed(hosts="zk1:2181/app"): (
                "for another ZooKeeper chroot ('zk1:2181/app')"
            ),
            changed(root="/other"): "for another root ('/other')",
            changed(agent_id="host-2"): "for another agent id ('host-2')",
        }
        for data, reason in cases.items():
            error = self.assertRaises(Unreadable, decode_state, data, PURPOSE)
            self.assertEqual(str(error), reason, data[:60])
            self.assertNotIn("secret", str(error))


class FileTestCase(SynchronousTestCase):
    """A state_dir of the test's own."""

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.mkdir(self.directory, 0o700)
        self.path = os.path.join(self.directory, STATE_FILE)

    def write(self, data: bytes, mode: int = 0o600) -> None:
        with open(self.path, "wb") as f:
            f.write(data)
        os.chmod(self.path, mode)

    def refused(self, expected: str) -> None:
        error = self.assertRaises(
            StateFileRefused, read_private_file, self.path, MAX_STATE_BYTES
        )
        self.assertEqual(str(error), expected)


class ReadTests(FileTestCase):
    """What the agent refuses to use, and what it reads."""

    def test_reads_its_own_file(self) -> None:
        """A file of the agent's user, mode 0600, is read."""
        self.write(encode_state(STORED))
        data = read_private_file(self.path, MAX_STATE_BYTES)
        self.assertEqual(decode_state(data, PURPOSE), STORED)

    def test_missing(self) -> None:
        """No file: nothing to reattach to (a first start), no refusal."""
        error = self.assertRaises(
            Unreadable, read_private_file, self.path, MAX_STATE_BYTES
        )
        self.assertNotIsInstance(error, StateFileRefused)
        self.assertEqual(str(error), "no state file")

    def test_readable_by_others(self) -> None:
        """A file that group or others may read or write is refused."""
        for mode in (0o644, 0o640, 0o604, 0o620, 0o602):
            self.write(encode_state(STORED), mode)
            self.refused(
                f"{self.path} is readable or writable by other users (mode "
                f"{mode:04o}): it holds the session's password; remove it, or "
                f"chmod 600 it"
            )

    def test_symbolic_link(self) -> None:
        """A symbolic link is never followed, even to a good file."""
        target = os.path.join(self.directory, "elsewhere")
        with open(target, "wb") as f:
            f.write(encode_state(STORED))
        os.chmod(target, 0o600)
        os.symlink(target, self.path)
        self.refused(f"{self.path} is a symbolic link")

    def test_not_a_regular_file(self) -> None:
        """A FIFO (which would block a reader) or a directory is refused."""
        os.mkfifo(self.path, 0o600)
        self.refused(f"{self.path} is not a regular file")
        os.unlink(self.path)
        os.mkdir(self.path, 0o700)
        self.refused(f"{self.path} is not a regular file")

    def test_another_users_file(self) -> None:
        """A file of another user is refused (it chose our session)."""
        if os.geteuid() != 0:
            raise self.skipTest("only root can give a file away")
        self.write(encode_state(STORED))
        os.chown(self.path, 4321, -1)
        self.refused(
            f"{self.path} belongs to uid 4321, not to the agent's user (uid 0)"
        )

    def test_system_error(self) -> None:
        """
        A read the system fails (out of file descriptors) is `NotRead`:
        nothing is known of the file, unlike one missing or too large.
        """
        self.write(encode_state(STORED))

        def out_of_descriptors(*args: object) -> int:
            raise OSError(errno.EMFILE, "Too many open files")

        self.patch(privatefiles.os, "open", out_of_descriptors)
        error = self.assertRaises(
            NotRead, read_private_file, self.path, MAX_STATE_BYTES
        )
        self.assertEqual(str(error), "Too many open files")

    def test_too_large(self) -> None:
        """A file over the limit is not read, nor refused: not reattached."""
        self.write(b" " * (MAX_STATE_BYTES + 1))
        error = self.assertRaises(
            Unreadable, read_private_file, self.path, MAX_STATE_BYTES
        )
        self.assertNotIsInstance(error, StateFileRefused)
        self.assertEqual(str(error), "larger than 16 MiB")


class DirectoryTests(FileTestCase):
    """The state_dir: made if missing, refused if others may write to it."""

    def test_created_private(self) -> None:
        """A missing state_dir is created, mode 0700."""
        directory = os.path.join(self.directory, "new")
        prepare_directory(directory)
        self.assertEqual(stat.S_IMODE(os.stat(directory).st_mode), 0o700)

    def test_missing_parent(self) -> None:
        """Only the last level is created: a typo in the parent is an error."""
        directory = os.path.join(self.directory, "no", "such")
        error = self.assertRaises(StateFileRefused, prepare_directory, directory)
        self.assertEqual(
            str(error), f"cannot create {directory}: No such file or directory"
        )

    def test_writable_by_others(self) -> None:
        """Others could swap the file: refused, even with the sticky bit."""
        for mode in (0o777, 0o770, 0o1777, 0o720):
            os.chmod(self.directory, mode)
            error = self.assertRaises(
                StateFileRefused, prepare_directory, self.directory
            )
            self.assertEqual(
                str(error),
                f"{self.directory} is writable by other users (mode {mode:04o}): "
                f"they could replace the session file",
            )
        os.chmod(self.directory, 0o755)
        prepare_directory(self.directory)

    def test_not_a_directory(self) -> None:
        """A state_dir that is a file is refused."""
        self.write(b"")
        error = self.assertRaises(StateFileRefused, prepare_directory, self.path)
        self.assertEqual(str(error), f"{self.path} is not a directory")

    def test_another_users_directory(self) -> None:
        """A directory of another user is refused."""
        if os.geteuid() != 0:
            raise self.skipTest("only root can give a directory away")
        os.chown(self.directory, 4321, -1)
        error = self.assertRaises(StateFileRefused, prepare_directory, self.directory)
        self.assertEqual(
            str(error),
            f"{self.directory} belongs to uid 4321, not to the agent's user (uid 0)",
        )

    def test_symbolic_link_followed(self) -> None:
        """
        A state_dir that is a symbolic link (to a larger disk, say) is
        followed, and what it points to is checked.
        """
        link = os.path.abspath(self.mktemp())
        os.symlink(self.directory, link)
        prepare_directory(link)
        os.chmod(self.directory, 0o777)
        self.assertRaises(StateFileRefused, prepare_directory, link)

    def test_another_users_symbolic_link(self) -> None:
        """
        A state_dir that is a symbolic link of another user's (made in
        ``/tmp`` before the agent's first start, say) is refused: that user
        could point it at any directory of the agent's user.
        """
        if os.geteuid() != 0:
            raise self.skipTest("only root can give a link away")
        link = os.path.abspath(self.mktemp())
        os.symlink(self.directory, link)
        os.lchown(link, 4321, -1)
        error = self.assertRaises(StateFileRefused, prepare_directory, link)
        self.assertEqual(
            str(error),
            f"{link} is a symbolic link owned by uid 4321, neither the agent's "
            f"user nor root: it could be pointed elsewhere",
        )

    def test_checked_before_the_file(self) -> None:
        """Reading the file checks its directory first."""
        self.write(encode_state(STORED))
        os.chmod(self.directory, 0o777)
        self.assertRaises(
            StateFileRefused, read_private_file, self.path, MAX_STATE_BYTES
        )


class ParentTests(FileTestCase):
    """
    The directories above the state_dir: nobody but root and the agent's
    user may move it away and put another in its place.
    """

    def setUp(self) -> None:
        super().setUp()
        # A state_dir one level down: its parent is the test's to change.
        self.parent = self.directory
        self.state_dir = os.path.join(self.parent, "state")

    def test_parent_writable_by_others(self) -> None:
        """
        A parent others may write to, without the sticky bit, is refused
        (they could rename the state_dir away and make their own there),
        before the state_dir is made in it; group-writable alike.
        """
        for mode in (0o777, 0o775, 0o730):
            os.chmod(self.parent, mode)
            error = self.assertRaises(
                StateFileRefused, prepare_directory, self.state_dir
            )
            self.assertEqual(
                str(error),
                f"{self.parent}, above the state_dir {self.state_dir}, is writable "
                f"by other users and not sticky (mode {mode:04o}): they could put "
                f"another state_dir in its place",
            )
            self.assertFalse(os.path.exists(self.state_dir))

    def test_ancestor_writable_by_others(self) -> None:
        """Any directory above counts, not only the parent."""
        os.chmod(self.parent, 0o777)
        state_dir = os.path.join(self.parent, "deeper", "state")
        os.mkdir(os.path.dirname(state_dir), 0o700)
        error = self.assertRaises(StateFileRefused, prepare_directory, state_dir)
        self.assertIn(f"{self.parent}, above the state_dir {state_dir},", str(error))

    def test_sticky_parent(self) -> None:
        """
        A sticky parent others may write to (``/tmp``) is safe: only the
        owner of an entry may move it.
        """
        os.chmod(self.parent, 0o1777)
        prepare_directory(self.state_dir)
        self.assertTrue(os.path.isdir(self.state_dir))

    def test_parent_of_another_user(self) -> None:
        """A parent owned by another user (not root) is refused."""
        if os.geteuid() != 0:
            raise self.skipTest("only root can give a directory away")
        os.chown(self.parent, 4321, -1)
        error = self.assertRaises(StateFileRefused, prepare_directory, self.state_dir)
        self.assertEqual(
            str(error),
            f"{self.parent}, above the state_dir {self.state_dir}, belongs to uid "
            f"4321, neither the agent's user nor root: it could put another "
            f"state_dir in its place",
        )

    def test_link_target_under_a_writable_parent(self) -> None:
        """
        A state_dir that is a link is judged where it leads too: a target
        whose parent others may write to is refused.
        """
        target_parent = os.path.join(self.parent, "disk")
        os.mkdir(target_parent, 0o777)
        os.chmod(target_parent, 0o777)
        target = os.path.join(target_parent, "state")
        os.mkdir(target, 0o700)
        link = os.path.join(self.parent, "link")
        os.symlink(target, link)
        error = self.assertRaises(StateFileRefused, prepare_directory, link)
        self.assertIn(f"{target_parent}, above the state_dir {link},", str(error))

    def test_another_users_link_above(self) -> None:
        """
        A link on the way to the state_dir, owned by another user (in a
        sticky ``/tmp``, its owner may replace it), is refused.
        """
        if os.geteuid() != 0:
            raise self.skipTest("only root can give a link away")
        real = os.path.join(self.parent, "real")
        os.mkdir(real, 0o755)
        link = os.path.join(self.parent, "link")
        os.symlink(real, link)
        os.lchown(link, 4321, -1)
        state_dir = os.path.join(link, "state")
        error = self.assertRaises(StateFileRefused, prepare_directory, state_dir)
        self.assertEqual(
            str(error),
            f"{link}, above the state_dir {state_dir}, is a symbolic link owned "
            f"by uid 4321, neither the agent's user nor root: it could be "
            f"pointed elsewhere",
        )

    def test_systemd_dynamic_user_layout(self) -> None:
        """
        systemd's ``StateDirectory=`` with ``DynamicUser=``: a link of
        root's, ``/var/lib/sentinel``, to ``private/sentinel``, under a
        ``/var/lib/private`` of root's, mode 0700: accepted.
        """
        lib = os.path.join(self.parent, "var", "lib")
        os.makedirs(lib, 0o755)
        private = os.path.join(lib, "private")
        os.mkdir(private, 0o700)
        os.mkdir(os.path.join(private, "sentinel"), 0o700)
        state_dir = os.path.join(lib, "sentinel")
        os.symlink("private/sentinel", state_dir)
        prepare_directory(state_dir)
        write_private_file(os.path.join(state_dir, STATE_FILE), encode_state(STORED))
        self.assertEqual(left_in(state_dir, PURPOSE), STORED)


class WriteTests(FileTestCase):
    """Writes are atomic, private, and never follow a link."""

    def test_private_and_complete(self) -> None:
        """The file is written whole, mode 0600, nothing left beside it."""
        write_private_file(self.path, encode_state(STORED))
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertEqual(os.listdir(self.directory), [STATE_FILE])
        with open(self.path, "rb") as f:
            self.assertEqual(decode_state(f.read(), PURPOSE), STORED)

    def test_replaces_a_link_not_its_target(self) -> None:
        """A symbolic link at the path is replaced; what it pointed to is not."""
        target = os.path.join(self.directory, "target")
        with open(target, "wb") as f:
            f.write(b"precious")
        os.symlink(target, self.path)
        write_private_file(self.path, b"new")
        self.assertFalse(os.path.islink(self.path))
        with open(target, "rb") as f:
            self.assertEqual(f.read(), b"precious")

    def test_failed_write_leaves_the_old_file(self) -> None:
        """A write that fails leaves the previous file whole, and no temporary."""
        write_private_file(self.path, b"old")

        def full(source: str, target: str) -> None:
            raise OSError(28, "No space left on device")

        self.patch(os, "replace", full)
        self.assertRaises(OSError, write_private_file, self.path, b"new")
        self.assertEqual(os.listdir(self.directory), [STATE_FILE])
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"old")

    def test_failed_write_names_no_temporary_file(self) -> None:
        """
        A temporary file that cannot be made (a read-only file system) is
        an error without its name, which is new at each try: the same
        failure, tried again, reads the same (and is logged once).
        """

        def read_only(**kw: object) -> tuple[int, str]:
            raise OSError(30, "Read-only file system", f"{self.path}.x1y2z3")

        self.patch(tempfile, "mkstemp", read_only)
        error = self.assertRaises(OSError, write_private_file, self.path, b"new")
        self.assertEqual(str(error), "[Errno 30] Read-only file system")


class LeftInTests(FileTestCase):
    """What start-up finds: a session, or why there is none."""

    def test_session(self) -> None:
        """A good file gives its session."""
        write_private_file(self.path, encode_state(STORED))
        self.assertEqual(left_in(self.directory, PURPOSE), STORED)

    def test_session_of_another_agent_id(self) -> None:
        """
        A file left under another agent id gives its session too: the
        agent's own, before it was renamed (`sentinel.handoff` decides).
        """
        write_private_file(self.path, encode_state(STORED))
        renamed = attr.evolve(PURPOSE, agent_id="host-1-renamed")
        self.assertEqual(left_in(self.directory, renamed), STORED)

    def test_reasons(self) -> None:
        """An unusable file gives the path and why, for the log and stats."""
        self.assertEqual(
            left_in(self.directory, PURPOSE), f"{self.path}: no state file"
        )
        write_private_file(self.path, b'{"format"')
        self.assertEqual(
            left_in(self.directory, PURPOSE),
            f"{self.path}: not JSON (truncated or corrupt)",
        )

    def test_session_left_elsewhere(self) -> None:
        """
        A file for another root or chroot still gives the session it names,
        marked unusable with the reason: the previous process's, whose
        nodes are at the old place (`sentinel.handoff` closes it if that
        process is gone).
        """
        write_private_file(self.path, encode_state(STORED))
        for other, why in (
            (attr.evolve(PURPOSE, root="/other"), "for another root ('/sentinel')"),
            (
                attr.evolve(PURPOSE, hosts="zk1:2181/app", agent_id="renamed"),
                "for another ZooKeeper chroot ('zk1:2181,zk2:2181')",
            ),
        ):
            left = left_in(self.directory, other)
            assert isinstance(left, StoredSession), left
            self.assertEqual(left.client_id, STORED.client_id)
            self.assertEqual(left.owner, STORED.owner)
            self.assertEqual(left.unusable, f"{self.path}: {why}")

    def test_another_versions_file_names_its_session(self) -> None:
        """
        A file this version cannot wholly read (another version's format)
        still gives the session it names for this agent, marked unusable
        with the reason: `sentinel.handoff` closes it rather than let its
        nodes live on until it expires.
        """
        newer = {**json.loads(encode_state(STORED)), "version": 2}
        del newer["discovery_parents"]
        write_private_file(self.path, json.dumps(newer).encode())
        left = left_in(self.directory, PURPOSE)
        assert isinstance(left, StoredSession)
        self.assertEqual(left.client_id, STORED.client_id)
        self.assertEqual(left.owner, STORED.owner)
        self.assertEqual(left.unusable, f"{self.path}: version 2 is not 1")

    def test_another_versions_file_of_another_agent(self) -> None:
        """
        Another version's file for another agent id, root or chroot gives
        its session too (the state_dir's previous process left it), marked
        unusable; one without a session this version can read gives only
        the reason.
        """
        good = {**json.loads(encode_state(STORED)), "version": 2}
        for fields in (
            {"agent_id": "host-2"},
            {"root": "/other"},
            {"hosts": "zk1:2181/app"},
        ):
            write_private_file(self.path, json.dumps({**good, **fields}).encode())
            left = left_in(self.directory, PURPOSE)
            assert isinstance(left, StoredSession), fields
            self.assertEqual(left.client_id, STORED.client_id)
            self.assertEqual(left.unusable, f"{self.path}: version 2 is not 1")
        for fields in (
            {"session_id": 17},
            {"password": None},
            {"owner": {"pid": 0}},
            {"format": "something else"},
        ):
            write_private_file(self.path, json.dumps({**good, **fields}).encode())
            self.assertIsInstance(left_in(self.directory, PURPOSE), str, fields)

    def test_refusal_raised(self) -> None:
        """A file others can read is a refusal, not a reason."""
        self.write(encode_state(STORED), 0o644)
        self.assertRaises(StateFileRefused, left_in, self.directory, PURPOSE)

    def test_hung_mount(self) -> None:
        """A read that never answers is a reason after the deadline, not a hang."""
        release = threading.Event()
        self.addCleanup(release.set)

        def hang(path: str, limit: int) -> bytes:
            release.wait(10)
            return b""

        reader = FileReader(deadline=0.05, read_file=hang)
        self.assertEqual(
            left_in(self.directory, PURPOSE, reader),
            f"{self.path}: no answer within 0.05 s (a hung mount?)",
        )


class WorkerTests(SynchronousTestCase):
    """Blocking calls off the reactor thread, each within a deadline."""

    def setUp(self) -> None:
        self.clock = HandOverClock()
        self.worker = FileWorker(self.clock, deadline=2.0)

    def test_result_handed_over(self) -> None:
        """A call's result comes back on the reactor's thread."""
        d = self.worker.run("a read", lambda: threading.current_thread().name)
        self.assertNoResult(d)
        self.clock.run_handed_over(wait=5.0)
        self.assertEqual(self.successResultOf(d), "sentinel-state")

    def test_error_handed_over(self) -> None:
        """A call's exception is the Deferred's failure."""

        def refuse() -> None:
            raise StateFileRefused("no")

        d = self.worker.run("a read", refuse)
        self.clock.run_handed_over(wait=5.0)
        self.assertEqual(
            self.failureResultOf(d, StateFileRefused).getErrorMessage(), "no"
        )

    def test_overrun_refuses_the_next_until_it_ends(self) -> None:
        """
        A call still running after the deadline fails with a timeout; until
        it ends, other calls fail at once (one stuck thread at most); after,
        they run again.
        """
        release = threading.Event()
        self.addCleanup(release.set)
        stuck = self.worker.run("a write of /x", lambda: release.wait(10))
        self.clock.advance(2.0)
        self.failureResultOf(stuck, TimeoutError)
        self.clock.advance(3.0)
        refused = self.failureResultOf(self.worker.run("a read", lambda: 1))
        self.assertEqual(
            refused.getErrorMessage(), "a write of /x has not ended after 5 s"
        )
        self.assertTrue(refused.check(NotRead))
        release.set()
        self.clock.run_handed_over(wait=5.0)
        d = self.worker.run("a read", lambda: 1)
        self.clock.run_handed_over(wait=5.0)
        self.assertEqual(self.successResultOf(d), 1)


class StateFileTests(FileTestCase):
    """The state file through the worker, as the agent uses it."""

    def test_parents_of_thousands_of_services(self) -> None:
        """
        A session holding members in thousands of services (each instance
        in its own, the default) is written and read back: at 2,000 such
        instances the file was 88 KB, refused as over 64 KiB, and no
        restart could reattach.
        """
        parents = tuple(
            f"/discovery/cache-{i:05d}.prod.example.com" for i in range(20_000)
        )
        stored = attr.evolve(STORED, discovery_parents=parents)
        clock = HandOverClock()
        state_file = StateFile(self.directory, FileWorker(clock))
        written = state_file.write(stored)
        clock.run_handed_over(wait=5.0)
        self.successResultOf(written)
        read = state_file.read(PURPOSE)
        clock.run_handed_over(wait=5.0)
        self.assertEqual(self.successResultOf(read), stored)

    def test_no_file_the_next_process_would_refuse(self) -> None:
        """
        A file larger than the next process would read is not written: the
        write fails saying so, and the file stays as it was.
        """
        clock = HandOverClock()
        state_file = StateFile(self.directory, FileWorker(clock))
        state_file.write(STORED)
        clock.run_handed_over(wait=5.0)
        huge = attr.evolve(STORED, discovery_parents=("/" + "x" * MAX_STATE_BYTES,))
        written = state_file.write(huge)
        clock.run_handed_over(wait=5.0)
        failure = self.failureResultOf(written, ValueError)
        self.assertIn("over the 16 MiB", failure.getErrorMessage())
        read = state_file.read(PURPOSE)
        clock.run_handed_over(wait=5.0)
        self.assertEqual(self.successResultOf(read), STORED)

    def test_write_read_remove(self) -> None:
        """What is written is read back; once removed, there is no state file."""
        clock = HandOverClock()
        state_file = StateFile(self.directory, FileWorker(clock))
        written = state_file.write(STORED)
        clock.run_handed_over(wait=5.0)
        self.successResultOf(written)
        read = state_file.read(PURPOSE)
        clock.run_handed_over(wait=5.0)
        self.assertEqual(self.successResultOf(read), STORED)
        removed = state_file.remove()
        clock.run_handed_over(wait=5.0)
        self.successResultOf(removed)
        again = state_file.read(PURPOSE)
        clock.run_handed_over(wait=5.0)
        self.assertEqual(
            self.failureResultOf(again, Unreadable).getErrorMessage(), "no state file"
        )

"""
A hung mount for tests: a FUSE file system whose server never answers, so
that ``stat()``, ``open()`` and ``read()`` of any path below it wait, as on
a network mount whose server went away. It needs root (mount) and
``/dev/fuse``; `HungMount.start` skips the test where they are missing.
`HungMount.release` aborts the connection: the waiting calls fail with
ENOTCONN, and the mount goes.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile

from twisted.trial.unittest import SkipTest

_MNT_DETACH = 2
_MS_NOSUID = 2
_MS_NODEV = 4


class HungMount:
    """A directory where every file system call waits until `release`."""

    def __init__(self) -> None:
        # Outside the test's temporary directory, so that removing that
        # never walks into the mount.
        self.path = tempfile.mkdtemp(prefix="sentinel-hung-")
        self._fuse: int | None = None
        self._libc = ctypes.CDLL(None, use_errno=True)

    def start(self) -> HungMount:
        """Mount; the kernel's first request is never answered."""
        try:
            fuse = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            os.rmdir(self.path)
            raise SkipTest(f"no hung mount here: /dev/fuse: {e.strerror}") from None
        options = (
            f"fd={fuse},rootmode=40000,user_id={os.getuid()},group_id={os.getgid()}"
        )
        flags = _MS_NOSUID | _MS_NODEV
        if self._libc.mount(
            b"sentinel-hung", self.path.encode(), b"fuse", flags, options.encode()
        ):
            reason = os.strerror(ctypes.get_errno())
            os.close(fuse)
            os.rmdir(self.path)
            raise SkipTest(f"no hung mount here: mount: {reason}")
        self._fuse = fuse
        return self

    def release(self) -> None:
        """Abort the connection (waiting calls fail) and unmount."""
        if self._fuse is None:
            return
        os.close(self._fuse)
        self._fuse = None
        self._libc.umount2(self.path.encode(), _MNT_DETACH)
        shutil.rmtree(self.path, ignore_errors=True)

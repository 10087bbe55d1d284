"""
A reload reads the config file only once nothing has written it for a
moment: a file caught while it is written is never applied half written.

A file written in place (``cat > sentinel.toml``, ``cp``, ``scp`` onto
it, an editor that saves in place) holds a prefix of the new config
until its writer is done, and a prefix cut after a whole ``[[redis]]``
table is a valid config that lacks the instances after it. A ``SIGHUP``
in that moment (a tool that sends one as soon as the file changes, or a
reload run before the write ends) applied it: the missing instances
stopped and their nodes were deleted, and stayed so once the file was
whole, until the next reload. `read_settled` waits until the file (its
inode, size and modification time) has been still for `QUIET` seconds
before it loads, and loads again if the file changed meanwhile. Still is
judged by the file's modification time against the wall clock, which
stamps it, so that a file last written long ago loads at once; a time
in the future (the clock stepped back since) is not trusted, and the file
is then watched for `QUIET` seconds of the monotonic clock. A file that
never keeps still for `GIVE_UP_AFTER` seconds is refused, the running
config staying.

This runs on the reloader's own thread (`sentinel.reload`), never on the
reactor thread, as it sleeps; each look at the file (``stat()``) is the
`sentinel.files.FileReader`'s, within its deadline: a config file on a
hung mount is refused after the deadline, as its read would be.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

from sentinel.checks import error
from sentinel.files import Unreadable

# Seconds a config file must have been left alone before a reload reads
# it: a local writer (cp, cat, an editor) is done in milliseconds, but a
# writer can be descheduled for a second on a loaded machine, or stall on
# its network (scp). A writer that pauses for longer can still be caught.
QUIET = 2.0
# Seconds after which a file that keeps changing is refused: well within
# the load's own deadline.
GIVE_UP_AFTER = 10.0

_T = TypeVar("_T")
_Signature = tuple[int, int, int]


def read_settled(
    path: str,
    load: Callable[[], _T],
    look: Callable[[str], os.stat_result],
    *,
    wall: Callable[[], float] | None = None,
    monotonic: Callable[[], float] | None = None,
    sleep: Callable[[float], object] | None = None,
) -> _T:
    """
    `load` (which reads the file at `path`) once the file has kept still
    for `QUIET` seconds, and again if it changed while loaded; `look`
    gives the file's status (`sentinel.files.FileReader.look`). The
    clocks and `sleep` are the `time` module's unless given.

    @raise ConfigError: if the file did not keep still within
        `GIVE_UP_AFTER` seconds; a file that cannot be looked at is left
        to `load` to refuse, with its own reason.
    """
    wall = wall or time.time
    monotonic = monotonic or time.monotonic
    sleep = sleep or time.sleep
    started = monotonic()
    while True:
        settled = _still(path, look, started, wall, monotonic, sleep)
        loaded = load()
        if settled is None or _signature(path, look) == settled:
            return loaded


def _still(
    path: str,
    look: Callable[[str], os.stat_result],
    started: float,
    wall: Callable[[], float],
    monotonic: Callable[[], float],
    sleep: Callable[[float], object],
) -> _Signature | None:
    """The file's signature once it has kept still for `QUIET` seconds."""
    seen: _Signature | None = None
    seen_at = started
    while True:
        signature = _signature(path, look)
        if signature is None:
            return None
        now = monotonic()
        if signature != seen:
            seen, seen_at = signature, now
        watched = now - seen_at
        age = wall() - signature[2] / 1e9
        # Stamped in the future (the clock stepped back since): not trusted.
        still_for = watched if age < 0 else max(watched, age)
        if still_for >= QUIET:
            return signature
        if now - started >= GIVE_UP_AFTER:
            raise error(
                f"config file {path}: still being written: it changed within "
                f"{QUIET:g} s of every look for {GIVE_UP_AFTER:g} s"
            )
        sleep(QUIET - still_for)


def _signature(path: str, look: Callable[[str], os.stat_result]) -> _Signature | None:
    try:
        status = look(path)
    except (OSError, Unreadable):
        return None
    return (status.st_ino, status.st_size, status.st_mtime_ns)

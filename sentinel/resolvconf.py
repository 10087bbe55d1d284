"""
resolv.conf, as far as `sentinel.lookup` uses it: its name servers and
search list, read again when it changes.

twisted.names' client read it with a plain ``open()`` on the reactor thread
(at the first lookup, then once a minute when its mtime moved) and all its
lines into a list: replaced at runtime by a FIFO, the agent froze (HTTP,
checks and SIGTERM with it); by a link to ``/dev/zero``, it grew by 250 MB/s.
Here it is read as the hosts file is (`sentinel.files.WatchedFile`): a FIFO,
a device or a file over 8 MiB is refused without being opened or read, and
a file that turns bad keeps the last good configuration, said once in the
log. Only a file missing from the start reads as empty (name server
127.0.0.1, as glibc does).
"""

from __future__ import annotations

from typing import Any

import attr
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.logger import Logger

from sentinel.files import MAX_HOSTS_BYTES, Unreadable, WatchedFile

log = Logger()

# How often the file is looked at (one stat), when lookups happen.
CHECK_SECONDS = 1.0
# As glibc, when there is no nameserver line.
DEFAULT_NAMESERVER = ("127.0.0.1", 53)


def is_address(host: str) -> bool:
    """Whether `host` is an IPv4 or IPv6 address already, not a name."""
    return isIPAddress(host) or isIPv6Address(host)


@attr.frozen
class ResolvConf:
    """What a lookup takes from resolv.conf, and what it left out (why)."""

    nameservers: tuple[tuple[str, int], ...]
    search: tuple[str, ...]
    left_out: tuple[str, ...] = ()


def parse_resolv_conf(data: bytes) -> ResolvConf:
    """
    resolver(5): ``nameserver`` lines (always port 53), and the last
    ``search`` or ``domain`` line; everything else is not read. A name
    server that is not an IP address is left out (glibc skips it too):
    twisted.names would fail every query to it with InvalidAddressError.
    """
    nameservers = []
    search: tuple[str, ...] = ()
    left_out = []
    for line in data.splitlines():
        fields = line.decode("ascii", "replace").split()
        if not fields:
            continue
        keyword, values = fields[0], fields[1:]
        if keyword == "nameserver" and values:
            if is_address(values[0]):
                nameservers.append((values[0], 53))
            else:
                left_out.append(f"nameserver {values[0]!r}: not an IP address")
        elif keyword in ("search", "domain"):
            search = tuple(values)
    return ResolvConf(
        tuple(nameservers) or (DEFAULT_NAMESERVER,), search, tuple(left_out)
    )


class ResolvConfFile:
    """resolv.conf, read again when it changes; the last good one kept."""

    def __init__(self, path: str, clock: Any) -> None:
        self._file = WatchedFile(path, MAX_HOSTS_BYTES, clock, CHECK_SECONDS)
        self._conf: ResolvConf | None = None
        # Why there is no configuration yet.
        self._problem = ""

    @property
    def path(self) -> str:
        """The file's path."""
        return self._file.path

    def current(self) -> ResolvConf:
        """
        The configuration from the file as it was last read well.

        @raise Unreadable: if it has never been read well.
        """
        try:
            data = self._file.changed()
        except Unreadable as e:
            self._refused(str(e))
            data = None
        if data is not None:
            self._conf = parse_resolv_conf(data)
            # Said once per change of the file, as it is read once.
            for what in self._conf.left_out:
                log.warn(
                    "resolv.conf {path}: {what}; left out", path=self.path, what=what
                )
        if self._conf is None:
            raise Unreadable(self._problem)
        return self._conf

    def _refused(self, problem: str) -> None:
        # Said once per change of the file (WatchedFile raises once).
        if self._conf is None:
            self._problem = problem
            log.warn(
                "resolv.conf {path} cannot be read, lookups fail until it can: "
                "{problem}",
                path=self.path,
                problem=problem,
            )
        else:
            log.warn(
                "resolv.conf {path} refused, its last good content stays: {problem}",
                path=self.path,
                problem=problem,
            )

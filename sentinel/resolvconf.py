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

from sentinel.checks import MAX_HOST_NAME, labels_fit
from sentinel.files import MAX_HOSTS_BYTES, Unreadable, WatchedFile

log = Logger()

# How often the file is looked at (one stat), when lookups happen.
CHECK_SECONDS = 1.0
# As glibc, when there is no nameserver line.
DEFAULT_NAMESERVER = ("127.0.0.1", 53)
# The name servers glibc asks (MAXNS).
MAX_NAMESERVERS = 3
# The search list historic glibc kept (MAXDNSRCH; the line in 256 bytes).
MAX_SEARCH_DOMAINS = 6
MAX_SEARCH_CHARACTERS = 256


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
    ``search`` or ``domain`` line; everything else is not read. Kept as
    glibc keeps them (`MAX_NAMESERVERS`, `MAX_SEARCH_DOMAINS`,
    `MAX_SEARCH_CHARACTERS`), and without what twisted.names cannot send: a
    name server that is not an IP address (every query to it failed with
    InvalidAddressError), a search domain the DNS cannot carry.
    """
    nameservers = []
    not_addresses = []
    search: list[str] = []
    for line in data.splitlines():
        fields = line.decode("ascii", "replace").split()
        if not fields:
            continue
        keyword, values = fields[0], fields[1:]
        if keyword == "nameserver" and values:
            if is_address(values[0]):
                nameservers.append((values[0], 53))
            else:
                not_addresses.append(values[0])
        elif keyword in ("search", "domain"):
            search = values
    left_out = []
    if not_addresses:
        left_out.append(_some(not_addresses, "nameserver", "not an IP address"))
    if len(nameservers) > MAX_NAMESERVERS:
        left_out.append(
            f"{len(nameservers)} nameservers: only the first {MAX_NAMESERVERS} "
            f"are asked, as glibc does"
        )
    kept_search = _kept_search(search, left_out)
    return ResolvConf(
        tuple(nameservers[:MAX_NAMESERVERS]) or (DEFAULT_NAMESERVER,),
        kept_search,
        tuple(left_out),
    )


def _kept_search(domains: list[str], left_out: list[str]) -> tuple[str, ...]:
    """
    The search list as historic glibc kept it: its first 6 domains, within
    256 characters. Each domain costs a query or two for every name not
    found: 5,000 domains cost 10,002 queries in 12 s for one unknown name.
    """
    valid = [d for d in domains if d.isascii() and name_problem(d) is None]
    if len(valid) < len(domains):
        invalid = [d for d in domains if d not in valid]
        left_out.append(_some(invalid, "search domain", "not a valid DNS name"))
    kept: list[str] = []
    size = 0
    for domain in valid:
        # glibc kept each domain with its terminating NUL in 256 bytes.
        size += len(domain) + 1
        if len(kept) == MAX_SEARCH_DOMAINS or size > MAX_SEARCH_CHARACTERS:
            left_out.append(
                f"search list of {len(valid)} domains: only its first "
                f"{len(kept)} are kept (at most {MAX_SEARCH_DOMAINS} domains "
                f"in {MAX_SEARCH_CHARACTERS} characters, as glibc)"
            )
            break
        kept.append(domain)
    return tuple(kept)


def _some(values: list[str], what: str, why: str) -> str:
    """One line for many values: the first, and how many more."""
    more = f" (and {len(values) - 1} more)" if len(values) > 1 else ""
    return f"{what} {values[0][:100]!r}{more} left out: {why}"


def name_problem(name: str) -> str | None:
    """Why the DNS cannot carry `name` (RFC 1035 section 2.3.4), or None."""
    bare = name.rstrip(".")
    if len(bare) > MAX_HOST_NAME or not labels_fit(bare):
        return "not a valid DNS name"
    return None


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
                log.warn("resolv.conf {path}: {what}", path=self.path, what=what)
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

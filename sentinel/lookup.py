"""
One lookup of one host name, without threads: the hosts file, then the name
servers through twisted.names. `sentinel.resolve` shares, bounds, caches and
schedules these lookups.

What glibc's getaddrinfo does, as far as a health agent needs it:

- The hosts file first. twisted.names' hosts resolver reads and splits the
  whole file on every lookup, on the reactor thread (measured: 30 us for a
  3-line file, 76 ms for a 50,000-line blocklist); splitting it all once
  into an index took 124-232 ms. Here it is read when it changes (checked
  at most once a second, with one `stat`; 5 ms for that blocklist), and
  each name is found with a string search that splits only the lines
  holding it, once per change (under 1 ms per name there, 0.6 us after).
  It is read as configured files are (`sentinel.files.WatchedFile`): a
  FIFO or ``/dev/zero`` in its place would block or fill memory. Both
  files are local system files: the ``stat`` that looks for a change (at
  most once a second each, when lookups happen) runs on the reactor
  thread, and would wait as long as a hung mount does.
- Then the name servers of resolv.conf (`sentinel.resolvconf`: read when
  it changes, the last good one kept; only ``nameserver`` lines, always
  port 53, and 127.0.0.1 when there is none), or those of
  ``[dns] nameservers``. Its ``search``/``domain`` list is
  applied as glibc does with its default ``ndots:1``: a name without a dot
  is tried with each suffix first, any other name as given first; a
  trailing dot turns the list off. ``options`` (ndots, timeout, attempts,
  rotate) are not read: `sentinel.resolve` bounds each lookup instead.
- An A and an AAAA query, sent together from one socket, as glibc's
  (AF_UNSPEC) are; CNAMEs are followed within each answer (at most
  `MAX_CNAMES`), records for other names are ignored. The addresses of
  both are kept, each family in its answer's order, IPv4 first (it stays
  preferred), `MAX_ADDRESSES` at most, of which at most
  `MAX_ADDRESSES` - 1 of one family when the other has any: a connect
  tries them in turn (`sentinel.addresses`), and a dual-stack host whose
  IPv4 addresses are all dead (or 600 of them) is reached at its IPv6
  one, as redis-py and Go's dialer reach it. Before, AAAA was asked only
  of a name without an A record, and such a name was down for good. How
  the two answers are waited for, and what one failed costs: see
  `_BothFamilies`.

Each query goes through `sentinel.dnsclient.NameServers`, which keeps it
quiet, and sends all its tries from one UDP socket (the name's A and AAAA
queries share it), closed when both end, so that an answer to an earlier
try still counts. Not
``lookupAddress``: when opening the socket fails (EMFILE), it raises
instead of failing its Deferred and leaves the query marked in flight, so
that every later lookup of that name waits forever (seen with twisted
26.10); and it asks a truncated answer again over TCP with a connection
attempt of up to 30 s, which a broken or hostile name server can
multiply.

A truncated answer (TC set) is used as far as it goes when it holds an
address for the name (an address list for a Redis host fits in UDP, and
a TCP connection per lookup would cost more). When it holds none (a
name server that truncates on purpose, sends TC with no record, or cut a
CNAME chain before its address), the query is asked again over TCP of
the name server that sent it, as glibc does, within what is left of the
lookup's bound (`NameServers.query_tcp`). Before, such a name was never
resolved: its instances stayed down, ``answer too large for UDP``.
"""

from __future__ import annotations

import ipaddress
import math
import os
import socket
from collections.abc import Sequence
from typing import Any

import attr
from twisted.internet.abstract import isIPAddress
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.error import (
    CannotListenError,
    ConnectError,
    ConnectionClosed,
    InvalidAddressError,
)
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.names import dns, error
from twisted.python.failure import Failure

from sentinel.addresses import MAX_ADDRESSES
from sentinel.config import DNSConfig
from sentinel.dnsclient import (
    AnotherQuestion,
    NameServers,
    QuerySockets,
    TCPAnswerUnreadable,
)
from sentinel.files import MAX_HOSTS_BYTES, Unreadable, WatchedFile
from sentinel.resolvconf import ResolvConf, ResolvConfFile, is_address, name_problem

log = Logger()

HOSTS_CHECK_SECONDS = 1.0
MAX_CNAMES = 8
# How long a try waits for its answer before the query is sent again (to the
# next name server, if there are several).
RETRY_SECONDS = 1.0
# Tries of one query at most: a minute of them, one a second.
MAX_TRIES = 60
# How long the first of a name's A and AAAA answers to hold an address
# waits for the other (`_BothFamilies`), and how long an answer missing
# one family because its query failed or was given up is kept: as a failed
# lookup is (`sentinel.resolve.FAILURE_TTL`).
RESOLUTION_DELAY = 0.05
PARTIAL_TTL = 5.0


@attr.frozen
class Answer:
    """
    An address for a name, and how long it may be reused (seconds); the
    answer's other addresses after it (`sentinel.addresses`).
    """

    address: str
    ttl: float
    others: tuple[str, ...] = ()

    @property
    def addresses(self) -> tuple[str, ...]:
        """Every address of the answer, in its order."""
        return (self.address, *self.others)


class LookupFailed(Exception):
    """The name has no address; the message says why, in a few words."""


def names_no_host(address: str) -> bool:
    """
    Whether `address` names no one host: the unspecified one (0.0.0.0,
    ::), which a hosts file or a filtering name server gives a blocked
    name, or a multicast or broadcast one, which a hostile or broken name
    server may give. Connecting to the unspecified one reaches this host:
    the agent would check its own Redis under another instance's name, and
    publish that. So does 0.0.0.0 mapped into IPv6 (``::ffff:0.0.0.0``),
    which Python does not call unspecified. A group address is no
    instance's either (its connect fails with "no route to host", a reason
    that points at the network, not at the answer).
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        # One Twisted takes for an address but Python does not ("::1%",
        # an empty scope): whatever it is, not one of those.
        return False
    return any(
        one.is_unspecified or one.is_multicast or one == _BROADCAST
        for one in _forms(ip)
    )


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def _forms(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[Any]:
    """`ip`, and the IPv4 address mapped into it, if it is one."""
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return [ip] if mapped is None else [ip, mapped]


def is_unspecified(address: str) -> bool:
    """
    Whether `address` (an IP address) is an unspecified one (0.0.0.0, ::,
    ::ffff:0.0.0.0), which names no host.
    """
    return any(one.is_unspecified for one in _forms(ipaddress.ip_address(address)))


def _blocked(source: str, address: str) -> LookupFailed:
    """Why `address` (one that `names_no_host`) is no answer."""
    if is_unspecified(address):
        return LookupFailed(
            f"{source} {address}, which names no host (a blocked name?)"
        )
    return LookupFailed(f"{source} {address}, which names no one host")


def search_hosts(text: str, name: str) -> list[str]:
    """
    The addresses of `name` (lower case) in the lower-cased text of a
    hosts(5) file, in order. Only the lines that hold the name are split.
    """
    addresses = []
    start = 0
    while (found := text.find(name, start)) >= 0:
        line_start = text.rfind("\n", 0, found) + 1
        line_end = text.find("\n", found)
        if line_end < 0:
            line_end = len(text)
        fields = text[line_start:line_end].split("#", 1)[0].split()
        if name in fields[1:] and is_address(fields[0]):
            addresses.append(fields[0])
        start = line_end + 1
    return addresses


class HostsFile:
    """A hosts(5) file, read again when it changes."""

    def __init__(self, path: str, clock: Any) -> None:
        self._file = WatchedFile(path, MAX_HOSTS_BYTES, clock, HOSTS_CHECK_SECONDS)
        self._text = ""
        # What was found for each name asked since the file last changed.
        self._found: dict[str, list[str]] = {}

    def addresses(self, name: str) -> list[str]:
        """The file's addresses for `name` (any case, trailing dot or not)."""
        self._refresh()
        key = name.lower().rstrip(".")
        found = self._found.get(key)
        if found is None:
            found = self._found[key] = search_hosts(self._text, key)
        return found

    def _refresh(self) -> None:
        try:
            data = self._file.changed()
        except Unreadable as e:
            # Said once per change of the file, not at every check.
            log.warn(
                "hosts file {path} ignored: cannot read it: {problem}",
                path=self._file.path,
                problem=e,
            )
            data = b""
        if data is not None:
            # Names in the config are ASCII: other bytes can match none of them.
            self._text = data.decode("ascii", "replace").lower()
            self._found = {}


def tries(bound: float) -> tuple[float, ...]:
    """
    Per-try timeouts for twisted.names that last at least `bound` seconds:
    one a second, or `MAX_TRIES` evenly spread over a longer bound, so that
    what they cost does not grow with the bound (a tuple of one entry per
    second took 531 MB for a bound of 3e7 s, and could not be made for 1e308).
    """
    each = max(min(RETRY_SECONDS, bound), bound / MAX_TRIES)
    return (each,) * min(MAX_TRIES, max(1, math.ceil(bound / each)))


class NameLookup:
    """
    Looks names up: `local` in the hosts file, `lookup` from the name
    servers. Nothing here bounds or shares lookups; `sentinel.resolve` does.
    """

    def __init__(
        self,
        reactor: Any,
        config: DNSConfig,
        bound: float,
        servers: NameServers | None = None,
        search: Sequence[str] | None = None,
    ) -> None:
        self._reactor = reactor
        self._config = config
        self._bound = bound
        self._hosts = HostsFile(config.hosts_file, reactor)
        self._servers = servers
        self._search = None if search is None else tuple(search)
        self._resolv_conf = None
        if servers is None and not config.nameservers:
            self._resolv_conf = ResolvConfFile(config.resolv_conf, reactor)
        # The resolv.conf content the name servers were last set from.
        self._applied: ResolvConf | None = None

    def local(self, name: str) -> Answer | None:
        """
        An answer from the hosts file, IPv4 first, or None.

        @raise LookupFailed: the file gives the name only the unspecified
            address (a blocked name), as glibc would answer without the DNS.
        """
        addresses = self._hosts.addresses(name)
        if not addresses:
            return None
        usable = [a for a in addresses if not names_no_host(a)]
        if not usable:
            raise _blocked("the hosts file maps it to", addresses[0])
        ipv4 = [a for a in usable if isIPAddress(a)]
        ordered = [*ipv4, *(a for a in usable if not isIPAddress(a))]
        return _answer(ordered, HOSTS_CHECK_SECONDS)

    def lookup(self, name: str) -> Deferred[Answer]:
        """
        An address from the name servers. Fails with `LookupFailed`, or with
        what twisted.names raised (see `describe_failure`). Cancelling it
        closes the socket of the query in flight.
        """
        return Deferred.fromCoroutine(self._lookup(name))

    def stop(self) -> None:
        """Nothing to release: nothing runs between lookups."""

    async def _lookup(self, name: str) -> Answer:
        problem = name_problem(name)
        if problem is not None:
            raise LookupFailed(problem)
        deadline = self._reactor.seconds() + self._bound
        servers, search = self._where()
        found_name = False
        for candidate in self._candidates(name, search):
            try:
                answer = await self._addresses(servers, candidate, deadline)
            except error.DNSNameError:
                continue
            if answer is not None:
                return answer
            found_name = True
        raise LookupFailed("no address" if found_name else "no such name")

    async def _addresses(
        self, servers: NameServers, name: str, deadline: float
    ) -> Answer | None:
        # A and AAAA asked together, from one socket (`sentinel.dnsclient`),
        # as glibc does; each answer read as it comes (`_BothFamilies`).
        sockets = servers.sockets()
        asked = [
            Deferred.fromCoroutine(
                self._family(servers, sockets, name, record_type, deadline)
            )
            for record_type in (dns.A, dns.AAAA)
        ]
        try:
            return await _BothFamilies(self._reactor, *asked).result
        finally:
            for d in asked:
                d.cancel()

    async def _family(
        self,
        servers: NameServers,
        sockets: QuerySockets,
        name: str,
        record_type: int,
        deadline: float,
    ) -> Answer | None:
        """The answer to one question (A or AAAA), over TCP if truncated."""
        queries = [dns.Query(name, record_type, dns.IN)]
        message, server = await servers.ask(queries, sockets=sockets)
        answer = _checked_answer(servers, name, message, record_type)
        if answer is None and message.trunc:
            # Asked again over TCP, as glibc does (module docstring).
            left = deadline - self._reactor.seconds()
            if left <= 0:
                raise TimeoutError(queries)
            message = await servers.query_tcp(server, queries, left)
            answer = _checked_answer(servers, name, message, record_type)
        return answer

    def _where(self) -> tuple[NameServers, tuple[str, ...]]:
        """The name servers to ask, and the search list."""
        nameservers = self._config.nameservers
        search = self._search or ()
        if self._resolv_conf is not None:
            try:
                conf = self._resolv_conf.current()
            except Unreadable as e:
                raise LookupFailed(
                    f"cannot read {self._resolv_conf.path}: {e}"
                ) from None
            nameservers = conf.nameservers
            if self._search is None:
                search = conf.search
            if self._servers is not None and conf is not self._applied:
                self._servers.servers = list(nameservers)
            self._applied = conf
        if self._servers is None:
            # Made at the first lookup, so that an agent that only knows
            # addresses (and unit tests) reads no resolv.conf.
            self._servers = NameServers(
                list(nameservers), tries(self._bound), self._reactor
            )
        return self._servers, search

    @staticmethod
    def _candidates(name: str, search: tuple[str, ...]) -> list[str]:
        if name.endswith("."):
            return [name[:-1]]
        # A name and a domain the DNS can each carry may be too long together.
        suffixed = [
            candidate
            for domain in search
            if name_problem(candidate := f"{name}.{domain.rstrip('.')}") is None
        ]
        if "." in name:
            return [name, *suffixed]
        return [*suffixed, name]


def _checked_answer(
    servers: NameServers, name: str, message: dns.Message, record_type: int
) -> Answer | None:
    """
    The answer `message` gives for `name`, or None.

    @raise LookupFailed: its address names no host (`names_no_host`), or
        its CNAMEs loop (`extract_answer`).
    @raise error.DNSNameError: and the other errors of its response code.
    """
    if message.rCode != dns.OK:
        raise servers.exceptionForCode(message.rCode)(message)
    answer = extract_answer(name, message.answers, record_type)
    if answer is None:
        return None
    usable = [a for a in answer.addresses if not names_no_host(a)]
    if not usable:
        raise _blocked("the name server answered", answer.address)
    return _answer(usable, answer.ttl)


def _answer(addresses: Sequence[str], ttl: float) -> Answer:
    """
    An answer of `addresses` (at least one), each once, IPv4 first,
    `MAX_ADDRESSES` at most (no connect tries more: `sentinel.addresses`),
    of which one family holds at most `MAX_ADDRESSES` - 1 when the other
    has any: an answer of 600 A records and one AAAA keeps the AAAA, and
    a dual-stack host whose IPv4 addresses are all gone is still reached
    at its IPv6 one (the module docstring).
    """
    unique = list(dict.fromkeys(addresses))
    ipv4 = [address for address in unique if isIPAddress(address)]
    ipv6 = [address for address in unique if not isIPAddress(address)]
    if ipv4 and ipv6:
        ipv4 = ipv4[: MAX_ADDRESSES - 1]
    kept = [*ipv4, *ipv6][:MAX_ADDRESSES]
    return Answer(kept[0], ttl, tuple(kept[1:]))


class _Pending:
    """A query of `_BothFamilies` not answered yet."""


_PENDING = _Pending()


class _BothFamilies:
    """
    A name's A and AAAA answers, made one (`result`): the addresses of
    both, IPv4 first, the shorter TTL.

    - The first answer that holds an address waits for the other
      `RESOLUTION_DELAY` at most (RFC 8305's Resolution Delay: an AAAA
      answer usually follows its A one by a few milliseconds), never the
      other query's own bound: a name server that drops AAAA queries (a
      broken middlebox; glibc stalls 5 s on it) delays no A answer more.
      What comes later is dropped (its query cancelled), and the answer
      is kept `PARTIAL_TTL` at most, as a failure is: the next lookup asks
      both again soon.
    - A query that fails (no answer in time, SERVFAIL, refused...) while
      the other gives an address fails nothing: the answer is the other's,
      kept `PARTIAL_TTL` at most. When neither gives an address, the A
      query's failure is the lookup's (the AAAA's if A only had none).
    - NXDOMAIN in one answer waits for the other `RESOLUTION_DELAY` at
      most, as an answer does: an address in the other is the answer (kept
      `PARTIAL_TTL` at most), as glibc has it, for name servers that say
      NXDOMAIN to an AAAA query of a name with A records (RFC 4074 lists
      them); else the name is no such name.
    - A blocked address or a CNAME loop in either answer ends both at once:
      the answer is hostile or broken, whatever the other says.
    """

    def __init__(
        self,
        clock: Any,
        ipv4: Deferred[Answer | None],
        ipv6: Deferred[Answer | None],
    ) -> None:
        self._clock = clock
        self._asked = (ipv4, ipv6)
        self._results: list[Answer | None | Failure | _Pending] = [_PENDING] * 2
        self._grace: IDelayedCall | None = None
        self.result: Deferred[Answer | None] = Deferred(lambda _: self._end())
        for index, asked in enumerate(self._asked):
            asked.addBoth(self._arrived, index)

    def _arrived(self, result: Answer | None | Failure, index: int) -> None:
        if self.result.called:
            return  # Cancelled once the lookup had its answer.
        self._results[index] = result
        if isinstance(result, Failure) and result.check(LookupFailed):
            self._finish(result)
        elif not isinstance(self._results[1 - index], _Pending):
            self._finish(self._combined())
        elif self._grace is None and (
            isinstance(result, Answer)
            or (isinstance(result, Failure) and result.check(error.DNSNameError))
        ):
            self._grace = self._clock.callLater(
                RESOLUTION_DELAY, lambda: self._finish(self._combined())
            )

    def _combined(self) -> Answer | None | Failure:
        answers = [one for one in self._results if isinstance(one, Answer)]
        if not answers:
            failures = [one for one in self._results if isinstance(one, Failure)]
            # No such name, said of either family, is said of the name.
            failures.sort(key=lambda one: not one.check(error.DNSNameError))
            return failures[0] if failures else None
        ttl = min(answer.ttl for answer in answers)
        if any(isinstance(one, Failure | _Pending) for one in self._results):
            ttl = min(ttl, PARTIAL_TTL)
        return _answer([a for answer in answers for a in answer.addresses], ttl)

    def _finish(self, result: Answer | None | Failure) -> None:
        if self.result.called:
            return
        if self._grace is not None and self._grace.active():
            self._grace.cancel()
        self._grace = None
        if isinstance(result, Failure):
            self.result.errback(result)
        else:
            self.result.callback(result)
        self._end()

    def _end(self) -> None:
        # Answered or cancelled: no timer, no query left.
        if self._grace is not None and self._grace.active():
            self._grace.cancel()
        self._grace = None
        for asked in self._asked:
            asked.cancel()


def extract_answer(
    name: str, records: Sequence[dns.RRHeader], record_type: int
) -> Answer | None:
    """
    The addresses of `record_type` for `name` in `records`, in order,
    following CNAMEs; its TTL is the least along the way. None if there is
    none.

    @raise LookupFailed: the CNAMEs loop, or are more than `MAX_CNAMES` in
        a row (said so: "no address" sent operators looking for a missing
        record).
    """
    wanted = dns.Name(name)
    seen = {wanted}
    ttl = float("inf")
    for _ in range(MAX_CNAMES + 1):
        alias = None
        found = []
        for record in records:
            if record.name != wanted or record.cls != dns.IN:
                continue
            if record.type == record_type:
                found.append(record)
            elif record.type == dns.CNAME:
                alias = record
        if found:
            least = min(ttl, *(record.ttl for record in found))
            # Only those a connect may try are read (an answer may hold
            # thousands over TCP).
            addresses = tuple(
                _address(record.payload) for record in found[:MAX_ADDRESSES]
            )
            return Answer(addresses[0], least, addresses[1:])
        if alias is None:
            return None
        ttl = min(ttl, alias.ttl)
        target: Any = alias.payload
        wanted = target.name
        if wanted in seen:
            raise LookupFailed("its CNAMEs loop")
        seen.add(wanted)
    raise LookupFailed(f"more than {MAX_CNAMES} CNAMEs in a row")


def _address(payload: Any) -> str:
    if isinstance(payload, dns.Record_A):
        return str(payload.dottedQuad())
    return socket.inet_ntop(socket.AF_INET6, payload.address)


_RCODE_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (error.DNSNameError, "no such name"),
    (error.DNSQueryRefusedError, "refused by the name server"),
    (error.DNSServerError, "name server failure (SERVFAIL)"),
    (error.DNSFormatError, "the name server could not read the query (FORMERR)"),
    (error.DNSNotImplementedError, "not implemented by the name server (NOTIMP)"),
    (error.DNSUnknownError, "unknown error from the name server"),
)


def _connect_reason(e: ConnectError) -> str:
    """What a failed connect says, in its own (the system's) words."""
    if e.args and e.args[0]:
        return str(e.args[0]).lower()
    if isinstance(e.osError, int):
        return os.strerror(e.osError).lower()
    return str(e.MESSAGE).lower()


def describe_failure(failure: Failure, bound: float) -> str | None:
    """
    A few words for why a lookup failed, or None for a failure nobody
    expected (a bug: the caller logs it).
    """
    if failure.check(LookupFailed):
        return str(failure.value)
    if failure.check(TimeoutError, error.DNSQueryTimeoutError):
        return f"no answer from name servers within {bound:g} s"
    if failure.check(AnotherQuestion):
        return "the name server answered another question"
    if isinstance(failure.value, ConnectError):
        # Only a truncated answer's second query connects (over TCP).
        return (
            "answer truncated over UDP, and TCP to the name server failed: "
            + _connect_reason(failure.value)
        )
    if failure.check(ConnectionClosed):
        return (
            "answer truncated over UDP, and the name server closed TCP "
            "without answering"
        )
    if failure.check(TCPAnswerUnreadable):
        return "answer truncated over UDP, and no DNS message over TCP"
    for kind, reason in _RCODE_REASONS:
        if failure.check(kind):
            return reason
    if failure.check(CannotListenError):
        socket_error = getattr(failure.value, "socketError", None)
        why = getattr(socket_error, "strerror", None) or str(socket_error)
        return f"cannot open a socket: {why}"
    if failure.check(InvalidAddressError):
        # Sending the query failed: a name server that is not an address
        # (resolv.conf's are left out; this says so if one gets through).
        address = getattr(failure.value, "address", "?")
        return f"name server {address} is not an IP address"
    if failure.check(OSError):
        # Sending the query failed (no route to the name server, ...).
        return getattr(failure.value, "strerror", None) or str(failure.value)
    return None

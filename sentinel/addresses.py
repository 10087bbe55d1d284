"""
The addresses of one host name that a connection attempt tries in turn.

A name may have several addresses (round-robin A records, a hosts file
line per address family). Redis clients try them in turn: redis-py's
``socket.create_connection`` and Go's dialer (redis_exporter) go through
what ``getaddrinfo`` returned until one connects. The agent connected to
the first only, and published ``down`` (``connection refused``) a Redis
every client reached through the next one. So one connection attempt
(one pacer place, one connect timeout, one turn of the once-a-second rule,
`sentinel.reconnects`) tries the next address when one fails fast:

- refused, no route to the host or its network, the address family
  unusable here (IPv6 on a host without it), reset during the connect:
  the address answered, at once, that nothing is there for us. A
  timeout moves on to nothing: it has spent the attempt's time, which
  counts against the check's one timeout, as a connect always has. Nor
  does a connect that found no socket (the agent's own shortage,
  `sentinel.sockets`), or anything after TCP connected (TLS, AUTH: the
  server itself answered).
- at most `MAX_ADDRESSES` of them, which is all an answer keeps
  (`sentinel.lookup`): a hostile or careless answer of 600 addresses, all
  refusing, cost 600 connects a second for one instance, each a socket
  and a descriptor. Four cover a dual-stack name with two addresses of
  each family (one family keeps three at most when the other has any,
  so that its IPv6 address is tried: `sentinel.lookup`), or a small
  pool of proxies; Go, which tries them all, gives each at most its
  share of the deadline.
- the address that connected last first, as long as the answer still
  holds it (a name server that rotates its records moves no connection),
  then the others in the answer's order, from there round to it.

A connect timeout does not move on within the attempt, but the next
attempt starts at the address after the one that timed out (`after`),
as redis-py and Go would have gone on to it: a name whose first address
is a host that is down (its SYNs unanswered) and whose second is live
is reached by the second attempt, and kept there. A timeout at one of
a name's addresses before its probe ever connected, with an address of
the answer not tried yet, says nothing (`sentinel.probe`): the agent is
still looking for the address that answers, as a client's one connect
would, and a first check sets the status directly.

When every address tried fails so, the error names each (`all_failed`),
and a timeout at an address moved on to names those before it; a name
with one address fails as before, with that address's error.
"""

from __future__ import annotations

import errno
from collections.abc import Sequence

from twisted.internet import error as neterror
from twisted.python.failure import Failure

from sentinel.sockets import shortage_of

MAX_ADDRESSES = 4

# What a failed connect(2) says of the address alone, at once.
_FAST_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.EAFNOSUPPORT,
    }
)


def in_turn(addresses: Sequence[str], first: str | None) -> tuple[str, ...]:
    """
    The addresses to try, in order: `first` (the one that connected last,
    or the one after the last that timed out) first if `addresses` still
    holds it, then the others, from there round to it; `MAX_ADDRESSES` at
    most.
    """
    unique = list(dict.fromkeys(addresses))
    if first is None or first not in unique:
        return tuple(unique[:MAX_ADDRESSES])
    at = unique.index(first)
    if at >= MAX_ADDRESSES:
        return (first, *unique[: MAX_ADDRESSES - 1])
    capped = unique[:MAX_ADDRESSES]
    return tuple(capped[at:] + capped[:at])


def after(candidates: Sequence[str], address: str) -> str | None:
    """
    Where the next attempt starts once one timed out at `address`: the
    address after it in `candidates` (round to the first), or None if
    there is no other.
    """
    if len(candidates) < 2 or address not in candidates:
        return None
    return candidates[(candidates.index(address) + 1) % len(candidates)]


def moves_on(failure: Failure) -> bool:
    """Whether a connect that failed with `failure` tries the next address."""
    if shortage_of(failure) is not None:
        return False
    if failure.check(neterror.ConnectionRefusedError, neterror.NoRouteError):
        return True
    if failure.check(neterror.ConnectError):
        code = getattr(failure.value, "osError", None)
        return code in _FAST_ERRNOS
    return False


class AddressesFailed(neterror.ConnectError):
    """Every address of the name failed fast; its text names each."""

    def __str__(self) -> str:
        return str(self.args[0])


def all_failed(tried: Sequence[tuple[str, str]]) -> AddressesFailed:
    """
    The failure of an attempt whose every address (`tried`: address,
    error) failed fast: ``connection refused at 127.0.0.2, 127.0.0.3``,
    each error once, with its addresses in the order tried.
    """
    by_error: dict[str, list[str]] = {}
    for address, error in tried:
        by_error.setdefault(error, []).append(address)
    return AddressesFailed(
        string="; ".join(
            f"{error} at {', '.join(where)}" for error, where in by_error.items()
        )
    )

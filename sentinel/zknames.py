"""
The names listed in ``zookeeper.hosts``, resolved for kazoo without holding
its connection thread.

kazoo looks every listed name up (``getaddrinfo``, which blocks) on its
connection thread before each round over the list, and at each new client.
One name whose DNS server never answers held every connect, to the other
servers too, for as long as the system's resolver tried (20 s here: a 5 s
timeout, two attempts, A and AAAA): with three live servers and such a
name listed, start-up waited 10 s longer, and a kill of the agent's
server cost the session (lost after 10 s, not back after 25 s).

So `ListedNames` replaces kazoo's lookup (`expand`, kazoo's
``_expand_client_hosts``): each name is looked up on a thread of its own,
at most one lookup per name at a time, and a round waits for them at most
`LOOKUP_WAIT` seconds in all, and only for names never answered before.
It then goes on with what it has: the addresses of the lookups answered,
and for the others what their last answer said, renewed in the background
for the next round (a DNS outage does not stop reconnects to servers
known, and a name that does not answer costs a reconnect nothing), or,
never answered, nothing this round (the warning names it, as kazoo's for
a name that does not resolve). A lookup that answers late is kept for the
next round. Addresses written as such
are never looked up. The names are shared by the clients of one bridge, so
a replaced client starts with what the last one learnt.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

# Seconds a round over the listed servers waits for names to resolve, in
# all: a fraction of any session timeout, and more than a resolver that
# answers takes.
LOOKUP_WAIT = 1.0

# (host as listed, port): one entry of ``zookeeper.hosts``.
Listed = tuple[str, int]
Lookup = Callable[..., Sequence[Any]]


class ListedNames:
    """Each listed name's last addresses and its lookup under way."""

    def __init__(
        self,
        lookup: Lookup | None = None,
        wait: float | None = None,
        start: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        """
        `lookup` is ``getaddrinfo``'s (by default, it); `wait` is
        `LOOKUP_WAIT`'s; `start` runs a lookup, by default on a daemon
        thread of its own.
        """
        self._lookup: Lookup = lookup or socket.getaddrinfo
        self._wait = LOOKUP_WAIT if wait is None else wait
        self._start = start or _on_a_thread
        self._lock = threading.Lock()
        # Per name: the addresses its last answer gave (None: it failed,
        # with the error said), and its lookup under way, if one is.
        self._known: dict[Listed, list[tuple[str, int]] | None] = {}
        self._errors: dict[Listed, str] = {}
        self._pending: dict[Listed, threading.Event] = {}

    def expand(self, client: Any) -> list[tuple[str, str, int]]:
        """
        kazoo's ``_expand_client_hosts`` for `client`: (host as listed,
        address, port) of each listed server, shuffled if kazoo would.
        """
        deadline = time.monotonic() + self._wait
        lookups = [(listed, self._look_up(listed)) for listed in client.hosts]
        found = []
        for (host, port), (done, first) in lookups:
            if done is None:
                found.append((host, host, port))
                continue
            if first:
                done.wait(max(deadline - time.monotonic(), 0.0))
            with self._lock:
                addresses = self._known.get((host, port))
                error = self._errors.get((host, port))
            if addresses is None:
                if error:
                    client.logger.warning("Cannot resolve %s: %s", host, error)
                else:
                    client.logger.warning(
                        "Cannot resolve %s within %g s: left out of this round",
                        host,
                        self._wait,
                    )
                continue
            found += [(host, address, port) for address, port in addresses]
        if client.randomize_hosts:
            random.shuffle(found)
        return found

    def _look_up(self, listed: Listed) -> tuple[threading.Event | None, bool]:
        """
        The lookup of `listed` under way, and whether it is its first (None
        for an address, which needs none).
        """
        host = listed[0].strip("[]")
        try:
            ipaddress.ip_address(host)
            return None, False
        except ValueError:
            pass
        with self._lock:
            done = self._pending.get(listed)
            if done is not None:
                return done, False
            done = self._pending[listed] = threading.Event()
            first = listed not in self._known
        self._start(partial(self._resolve, listed, done))
        return done, first

    def _resolve(self, listed: Listed, done: threading.Event) -> None:
        host, port = listed
        addresses: list[tuple[str, int]] | None = None
        error = ""
        try:
            infos = self._lookup(host.strip(), port, 0, 0, socket.IPPROTO_TCP)
            addresses = [(info[4][0], info[4][1]) for info in infos]
        except OSError as e:
            error = str(e)
        with self._lock:
            self._known[listed] = addresses
            self._errors[listed] = error
            del self._pending[listed]
        done.set()


def _on_a_thread(lookup: Callable[[], None]) -> None:
    threading.Thread(target=lookup, name="zookeeper-lookup", daemon=True).start()

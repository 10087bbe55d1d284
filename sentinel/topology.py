"""
Replica discovery: the replicas a master lists in INFO replication, watched
like configured instances (as Redis Sentinel finds them).

A configured instance with ``discover_replicas = true`` is a discoverer:
every INFO replication it answers (every ``info_every`` checks, and more
often while its role moves: `sentinel.monitor`) lists its replicas
(``slaveN:ip=...,port=...``). Each one listed is watched under the name
``{master}@{host}:{port}`` (an IPv6 host in brackets), with the master's
credentials, TLS settings and drain key, marked as discovered by it, and
published like any other instance. One that the master has not listed for
the grace period (``replica_grace``) is removed; that is judged at each INFO
the master answers as a master, so while the master does not answer, or
answers as a replica, its replicas stay (they still serve, and their own
checks say how they are). A failover is followed as Redis Sentinel follows
it: once the discoverer is a replica of one of the replicas it found, and
that one reports master, that one's INFO lists the group (with what the
discoverer lists, replicas chained through it) and judges the grace
period; it is never removed while it leads. Otherwise discovered replicas
discover nothing: a replica that names another master is shown as it says,
never followed.

What a master lists names what the agent connects to, so it is not trusted.
`sentinel.protocol` keeps only well-formed addresses, each once, at most
`MAX_LISTED_REPLICAS` of them. Here, an address that names no one host (an
unspecified one, which reaches this host, or a multicast or broadcast one:
`sentinel.lookup.names_no_host`), one that is the master's own,
that a configured instance or another master's replica already has, or whose
name is taken, is not added (a configured instance has both the address it
is configured with and the one its host name resolved to: a master lists
its replicas by IP, and one Redis watched under two names would be published
twice). A listed host name is judged by what it resolves to, as that one
address would be (a replica's ``replica-announce-ip`` is any string:
``localhost`` names the master's own Redis or a configured instance's as
well as 127.0.0.1 does): it waits, neither added nor refused, until its
lookup (`sentinel.resolve`, at most `MAX_NAME_LOOKUPS` in flight) has
answered, and one that resolves to nothing is watched, and down with
why. Literal addresses are judged first. At most `MAX_PER_MASTER` replicas per master
and `MAX_DISCOVERED` in all are watched, and none beyond what the open-file
limit has room for. So a hostile or confused master costs at most
`MAX_PER_MASTER` connections, and addresses that flap in and out of its list
within the grace period cost nothing more than staying. A master whose list
keeps changing is flapping (`sentinel.churn`): the new addresses it lists
wait until its list is stable, and its additions and removals are logged
one by one only up to a budget.

The config says which instances discover (`configure`, at start and after
each reload): a discoverer removed, or with discovery turned off, takes its
replicas with it; a changed one's replicas follow its credentials and TLS
settings; a configured instance always wins a name or an address over a
discovered one (the monitor gives it a discovered instance's name).

Whatever removes a replica (this module, a reload, the group moving its
master to another agent), the monitor tells every removal listener, and
this module forgets it: one that its master lists again is added again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import attr
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from sentinel.checks import canonical_address
from sentinel.churn import FLAP_WINDOW, Churn
from sentinel.config import Config, RedisInstance
from sentinel.instance import InstanceState
from sentinel.lookup import is_unspecified, names_no_host
from sentinel.monitor import Monitor
from sentinel.observation import Replication
from sentinel.resolvconf import is_address
from sentinel.resolve import CannotResolve

log = Logger()


class NameAnswers(Protocol):
    """Where listed host names are looked up: `sentinel.resolve.Resolver`."""

    def addresses(self, host: str) -> Deferred[tuple[str, ...]]:
        """Every address of `host`."""

    def forget(self, host: str) -> None:
        """Drop what is known about `host`."""


# Replicas watched for one master: more than any sane topology has.
MAX_PER_MASTER = 64
# Replicas watched in all, whatever the masters list.
MAX_DISCOVERED = 4096
# A listed address that cannot be judged yet: neither added nor refused.
_NOT_YET = "not yet"
# Listed host names looked up at once, whatever the masters list: half the
# resolver's slots (`sentinel.resolve.MAX_LOOKUPS`) at most, so configured
# names are never queued behind them for long.
MAX_NAME_LOOKUPS = 8
# Seconds the addresses configured instances' hosts resolved to are reused
# before they are gathered again (only while a master lists replicas).
ALIASES_TTL = 1.0


def replica_name(master: str, host: str, port: int) -> str:
    """The name a replica of `master` at `host`:`port` is watched under."""
    return f"{master}@[{host}]:{port}" if ":" in host else f"{master}@{host}:{port}"


def _no_host(host: str) -> str:
    # Why a listed address that names no one host (`names_no_host`) is not
    # watched. A real Redis lists 0.0.0.0 for a replica announcing it, and
    # Linux connects 0.0.0.0 to this host: whatever Redis listens here on
    # that port (the master itself, another instance) would be published
    # as the master's replica, at an address that sends its readers to
    # their own host. A group address is no replica's: a down node for it
    # says nothing true.
    if is_unspecified(host):
        return (
            "no host's address: a connect to it reaches the agent's own host"
            " (the replica's replica-announce-ip?)"
        )
    return "a multicast or broadcast address"


def replica_instance(master: RedisInstance, host: str, port: int) -> RedisInstance:
    """
    A replica of `master` at `host`:`port`, as watched: the master's
    credentials, TLS settings (its server name too, when it has one) and
    drain key; no discovery of its own.
    """
    return attr.evolve(
        master,
        name=replica_name(master.name, host, port),
        host=host,
        port=port,
        discover_replicas=False,
        discovered_by=master.name,
    )


class _Found:
    """One discovered replica: its master, its address, when added and last listed."""

    __slots__ = ("master", "address", "added_at", "listed_at")

    def __init__(self, master: str, address: tuple[str, int], listed_at: float):
        self.master = master
        self.address = address
        self.added_at = self.listed_at = listed_at


class Topology:
    """
    Adds and removes the replicas that discoverers list (see the module
    docstring); the monitor tells it of every INFO read (`observed`) and of
    every instance it no longer watches (`unwatched`).
    """

    def __init__(
        self,
        monitor: Monitor,
        fits: Callable[[int], bool],
        names: NameAnswers | None = None,
    ) -> None:
        """
        @param fits: whether the open-file limit has room for that many
            watched instances.
        @param names: where listed host names are looked up; without it,
            a host name is judged as it is written.
        """
        self._monitor = monitor
        self._fits = fits
        self._names = names
        # The addresses each host name listed now resolved to when last
        # asked (() for none), the names whose lookup runs, and the names
        # each master's last INFO listed (only those are kept).
        self._answers: dict[str, tuple[str, ...]] = {}
        self._asking: set[str] = set()
        self._named_by: dict[str, frozenset[str]] = {}
        self.grace = 60.0
        self._discoverers: frozenset[str] = frozenset()
        self._configured: frozenset[tuple[str, int]] = frozenset()
        # The addresses configured instances named by host name connect to
        # (`Probe.address`), gathered at most every ALIASES_TTL seconds.
        self._aliases: frozenset[tuple[str, int]] = frozenset()
        self._aliases_at = -math.inf
        # The replicas discovered, by name; their names by address; and the
        # names of each master's.
        self._found: dict[str, _Found] = {}
        self._by_address: dict[tuple[str, int], str] = {}
        self._by_master: dict[str, set[str]] = {}
        # Per master, what its last INFO listed that was not added, and why:
        # a refusal is logged when it first appears, not at every INFO.
        self._refused: dict[str, dict[tuple[str, int], str]] = {}
        # Per discoverer, how its list comes and goes (`sentinel.churn`).
        self._churn: dict[str, Churn] = {}
        self.added = 0
        self.removed = 0
        monitor.add_info_listener(self.observed)
        monitor.add_removal_listener(self.unwatched)

    def configure(self, config: Config) -> None:
        """Take the discoverers and the grace period of `config` (see above)."""
        self.grace = config.replica_grace
        masters = {i.name: i for i in config.instances if i.discover_replicas}
        self._discoverers = frozenset(masters)
        self._configured = frozenset(
            (canonical_address(i.host), i.port) for i in config.instances
        )
        for gone in set(self._refused) - set(masters):
            del self._refused[gone]
        for gone in set(self._named_by) - set(masters):
            self._keep_names(gone, ())
        states = self._monitor.states
        for name, found in list(self._found.items()):
            state = states.get(name)
            if state is None or state.instance.discovered_by != found.master:
                self._forget(name)  # A configured instance took its name.
                continue
            discoverer = masters.get(found.master)
            if discoverer is None:
                self._remove(name, "its master no longer discovers replicas")
            elif found.address in self._configured:
                self._remove(name, "a configured instance has its address")
            else:
                wanted = replica_instance(discoverer, *found.address)
                if state.instance != wanted:
                    self._monitor.replace_instance(wanted)
        for gone in set(self._churn) - set(masters):
            del self._churn[gone]

    def observed(
        self, state: InstanceState, replication: Replication, now: float
    ) -> None:
        """
        An INFO listener: what the master of a discoverer's group lists
        adds and removes its replicas (see `_leader_of`).
        """
        instance = state.instance
        if instance.discover_replicas and instance.name in self._discoverers:
            if self._led(instance.name, replication):
                return  # Its master's INFO lists the group, and its own list.
            # A replica's listing (a chain through it) adds, and keeps what
            # it lists; only a master's says which of its replicas went.
            self._listed(
                state,
                instance,
                replication.replicas,
                replication.role == "master",
                now,
            )
            return
        discoverer = self._leader_of(state, replication)
        if discoverer is None:
            return
        own = _addresses(discoverer)
        chained = discoverer.health.replication.replicas
        addresses = dict.fromkeys(
            a for a in (*replication.replicas, *chained) if a not in own
        )
        self._found[state.name].listed_at = now
        self._listed(state, discoverer.instance, tuple(addresses), True, now)

    def _led(self, discoverer: str, replication: Replication) -> bool:
        # Whether the discoverer, answering `replication`, replicates from a
        # replica it found that reports master: the group's master then.
        host, port = replication.master_host, replication.master_port
        if replication.role != "slave" or host is None or port is None:
            return False
        name = self._by_address.get((canonical_address(host), port))
        if name is None or self._found[name].master != discoverer:
            return False
        state = self._monitor.states.get(name)
        return state is not None and state.health.replication.role == "master"

    def _leader_of(
        self, state: InstanceState, replication: Replication
    ) -> InstanceState | None:
        # The discoverer whose group `state` is the master of, after a
        # failover: a replica it found that reports master, and that the
        # discoverer, now a replica, names as its master. As Redis Sentinel
        # follows the promoted replica, the group is then what that one
        # lists, and what the discoverer lists (replicas chained through it,
        # which FAILOVER leaves in place).
        master = state.instance.discovered_by
        if replication.role != "master" or master not in self._discoverers:
            return None
        found = self._found.get(state.name)
        discoverer = self._monitor.states.get(master)
        if found is None or found.master != master or discoverer is None:
            return None
        its = discoverer.health.replication
        if its.role != "slave" or its.master_host is None:
            return None
        if (canonical_address(its.master_host), its.master_port) != found.address:
            return None
        return discoverer

    def _listed(
        self,
        lister: InstanceState,
        master: RedisInstance,
        addresses: tuple[tuple[str, int], ...],
        judged: bool,
        now: float,
    ) -> None:
        # `lister` listed `addresses` as replicas of `master`'s group: each
        # is added or kept; with `judged`, those of the group not listed for
        # the grace period go (the lister itself never: it is the master).
        mine = self._by_master.get(master.name, set())
        churn = self._churn_of(master.name, now)
        churn.listed(self._settled(master.name, addresses, mine), now)
        listed = {lister.name} & mine
        refused: dict[tuple[str, int], str] = {}
        # Literal addresses first: a name is refused for one of theirs.
        for address in sorted(addresses, key=lambda a: not is_address(a[0])):
            name = replica_name(master.name, *address)
            found = self._found.get(name)
            if found is not None and found.master == master.name:
                if self._configured_at(address, now):
                    # A configured instance named by host name resolved to
                    # it after it was added (a reload added it): one Redis,
                    # one name.
                    self._remove(name, "a configured instance has its address")
                    mine = self._by_master.get(master.name, set())
                    continue
                why = self._named_taken(lister, address, now)
                if why is None or why == _NOT_YET:
                    found.listed_at = now
                    listed.add(name)
                    continue
                # Judged now as a new one, refused for the same reason.
                self._remove(name, why)
                mine = self._by_master.get(master.name, set())
            reason = self._refusal(lister, name, address, len(mine), churn, now)
            if reason == _NOT_YET:
                continue
            if reason is not None:
                refused[address] = reason
                continue
            self._add(master, address, now)
            mine = self._by_master[master.name]
            listed.add(name)
        self._log_refusals(master.name, refused)
        self._keep_names(master.name, addresses)
        if not judged:
            return
        for name in sorted(mine - listed):
            found = self._found[name]
            if now - found.listed_at > self.grace:
                self._remove(
                    name,
                    f"not listed by {lister.name} for over {self.grace:g} s",
                    now,
                )

    @property
    def watched(self) -> int:
        """How many discovered replicas are watched now."""
        return len(self._found)

    def unwatched(self, name: str) -> None:
        """A removal listener: the monitor no longer watches `name`."""
        if name in self._found:
            self._forget(name)

    def stats(self) -> dict[str, Any]:
        """
        For /debug/stats: replicas watched, added and removed, refused now,
        and the masters flapping now (`sentinel.churn`).
        """
        return {
            "discovered": self.watched,
            "added": self.added,
            "removed": self.removed,
            "refused": sum(len(r) for r in self._refused.values()),
            "flapping": sorted(m for m, c in self._churn.items() if c.flapping),
        }

    def _churn_of(self, master: str, now: float) -> Churn:
        churn = self._churn.get(master)
        if churn is None:
            churn = self._churn[master] = Churn(master, now)
        return churn

    def _settled(
        self, master: str, addresses: tuple[tuple[str, int], ...], mine: set[str]
    ) -> bool:
        # Whether every address listed is watched as the master's replica or
        # was judged at its INFO before (`sentinel.churn`).
        before = self._refused.get(master, {})
        return all(
            address in before or replica_name(master, *address) in mine
            for address in addresses
        )

    def _refusal(
        self,
        state: InstanceState,
        name: str,
        address: tuple[str, int],
        count: int,
        churn: Churn,
        now: float,
    ) -> str | None:
        # Why a listed address is not added, or None.
        reason = self._taken(state, address, now)
        if reason is not None:
            return reason
        if name in self._monitor.states:
            return f"the name {name} is taken"
        if count >= MAX_PER_MASTER:
            return f"over {MAX_PER_MASTER} replicas for one master"
        if churn.flapping:
            return f"its list is not stable for {FLAP_WINDOW:g} s yet"
        if len(self._found) >= MAX_DISCOVERED:
            return f"over {MAX_DISCOVERED} discovered replicas in all"
        if not self._fits(len(self._monitor.states) + 1):
            return "no room within the open-file limit"
        return self._named_taken(state, address, now)

    def _named_taken(
        self, state: InstanceState, address: tuple[str, int], now: float
    ) -> str | None:
        # Why a listed host name is no new replica's by its last answer (an
        # address of it is `_taken`; `_NOT_YET` before any), or None; asked
        # again at each INFO. A name watched is judged too: one watched as
        # it resolved to none (its name server late, or not knowing it
        # yet) that resolves to the master's own address after was watched
        # for good, and that Redis published twice.
        if is_address(address[0]):
            return None
        resolved = self._resolved(address[0])
        if resolved is None:
            return _NOT_YET
        for one in resolved:
            reason = self._taken(state, (canonical_address(one), address[1]), now)
            if reason is not None:
                return reason if reason == _NOT_YET else f"{reason}, as {one}"
        return None

    def _taken(
        self, state: InstanceState, address: tuple[str, int], now: float
    ) -> str | None:
        # Why `address` is no new replica's: the lister's, no host's, or an
        # instance's watched already; or None.
        if address in _addresses(state):
            return "its own address"
        if names_no_host(address[0]):
            return _no_host(address[0])
        configured = self._configured_at(address, now)
        if configured is None:
            return _NOT_YET
        if configured:
            return "a configured instance"
        other = self._by_address.get(address)
        if other is not None:
            return f"already watched as {other}"
        return None

    def _resolved(self, host: str) -> tuple[str, ...] | None:
        # The addresses the listed host name `host` resolves to (() for
        # none), or None until its lookup answers. It is asked again at each
        # INFO (the resolver's cache answers within the TTL), with at most
        # MAX_NAME_LOOKUPS in flight; the last answer judges meanwhile.
        if self._names is None:
            return ()
        if host not in self._asking and len(self._asking) < MAX_NAME_LOOKUPS:
            self._asking.add(host)
            asked = self._names.addresses(host)
            asked.addCallbacks(
                self._answered,
                self._unanswered,
                callbackArgs=(host,),
                errbackArgs=(host,),
            )
        return self._answers.get(host)

    def _answered(self, found: tuple[str, ...], host: str) -> None:
        self._asking.discard(host)
        self._answers[host] = found

    def _unanswered(self, failure: Failure, host: str) -> None:
        # A name with no address resolves to none. A lookup dropped before
        # it answered (a reload's `retain` keeps only watched instances'
        # hosts) or that found no socket to ask with says nothing of the
        # name: it waits for the next, as it would in flight. Before, either
        # was taken for no address, and the name was watched for good,
        # whatever it resolved to after (the master's own address, say).
        error = failure.value
        if isinstance(error, CannotResolve) and (error.forgotten or error.shortage):
            self._asking.discard(host)
            return
        self._answered((), host)

    def _keep_names(self, master: str, addresses: tuple[tuple[str, int], ...]) -> None:
        # Only the answers for the host names some master lists now are
        # kept, and only those names (and those of instances watched) in
        # the resolver's cache: names listed once each cost nothing after.
        # A lookup in flight is never cancelled (cancelling 64 a second
        # grew the RSS 1.2 MiB a second and stalled the loop): its answer
        # goes at the next INFO.
        names = frozenset(h for h, _ in addresses if not is_address(h))
        if names:
            self._named_by[master] = names
        else:
            self._named_by.pop(master, None)
        kept = frozenset().union(*self._named_by.values())
        gone = set(self._answers) - kept
        if not gone:
            return
        watched = {h.lower() for h in watched_hosts(self._monitor.states.values())}
        for host in gone:
            del self._answers[host]
            if self._names is not None and host.lower() not in watched:
                self._names.forget(host)

    def _configured_at(self, address: tuple[str, int], now: float) -> bool | None:
        # Whether a configured instance has this address: as configured, or
        # as its host name resolved (a master lists its replicas by IP); None
        # while a configured instance named by host name is in its first
        # check, unresolved yet: it may be this address.
        if address in self._configured:
            return True
        if now - self._aliases_at >= ALIASES_TTL:
            aliases = set()
            for state in self._monitor.states.values():
                instance, resolved = state.instance, state.probe.address
                host = instance.host
                if instance.discovered_by is not None or is_address(host):
                    continue
                if resolved is not None:
                    aliases.add((canonical_address(resolved), instance.port))
                elif state.health.checks == 0:
                    return None  # Gathered again at the next INFO.
            self._aliases = frozenset(aliases)
            self._aliases_at = now
        return address in self._aliases

    def _log_refusals(self, master: str, refused: dict[tuple[str, int], str]) -> None:
        before = self._refused.get(master, {})
        new = [a for a, reason in refused.items() if before.get(a) != reason]
        if new and self._churn[master].may_log("refused"):
            host, port = new[0]
            log.warn(
                "{master} lists {count} replica(s) not watched, such as "
                "{host}:{port} ({reason})",
                master=master,
                count=len(new),
                host=host,
                port=port,
                reason=refused[new[0]],
            )
        if refused:
            self._refused[master] = refused
        else:
            self._refused.pop(master, None)

    def _add(self, master: RedisInstance, address: tuple[str, int], now: float) -> None:
        instance = replica_instance(master, *address)
        self._monitor.add_instance(instance)
        self._found[instance.name] = _Found(master.name, address, now)
        self._by_address[address] = instance.name
        self._by_master.setdefault(master.name, set()).add(instance.name)
        self.added += 1
        if self._churn[master.name].may_log("added"):
            log.info(
                "{instance}: a replica of {master}, watched from now on",
                instance=instance.name,
                master=master.name,
            )

    def _remove(self, name: str, why: str, now: float | None = None) -> None:
        # `now` when the master no longer lists it: it may have come and gone.
        found = self._found[name]
        churn = self._churn.get(found.master)
        if churn is not None and now is not None:
            churn.removed(found.listed_at - found.added_at, now)
        state = self._monitor.states.get(name)
        if state is not None and state.discovered:
            self._monitor.remove_instance(name)  # Which forgets it (`unwatched`).
        if name in self._found:
            self._forget(name)
        self.removed += 1
        if churn is None or churn.may_log("removed"):
            log.info("{instance}: removed, {why}", instance=name, why=why)

    def _forget(self, name: str) -> None:
        found = self._found.pop(name)
        if self._by_address.get(found.address) == name:
            del self._by_address[found.address]
        names = self._by_master.get(found.master)
        if names is not None:
            names.discard(name)
            if not names:
                del self._by_master[found.master]


def _addresses(state: InstanceState) -> tuple[tuple[str | None, int], ...]:
    # An instance's addresses: as configured, and as its host resolved, each
    # in the form a listed address has (`parse_listed_replica`).
    instance, resolved = state.instance, state.probe.address
    return (
        (canonical_address(instance.host), instance.port),
        (None if resolved is None else canonical_address(resolved), instance.port),
    )


def watched_hosts(states: Iterable[InstanceState]) -> list[str]:
    """The host of every watched instance, discovered ones included."""
    return [state.instance.host for state in states]

"""
Which agents of a group observe each instance (DESIGN.md section 8,
"Groups"): the R live agents that know it with the highest rendezvous
weight of (agent id, instance name), the first of them its primary.

Every agent computes the same answer from the same membership, with no
coordinator: a weight depends only on the two names. It must be the same
in every process, so it is no `hash()` (salted per process): each name is
hashed once with BLAKE2b to 64 bits, and a pair's weight is SplitMix64's
finalizer of the two hashes XORed, a bijection that spreads any change of
either over every bit.

A change of membership is applied incrementally, so that its cost follows
what it moves rather than the fleet: a joining agent is weighed against
the current R-th observer of each instance it knows (one weight each); a
leaving agent's instances, and only those, are weighed again among their
remaining candidates. Candidates are found through the distinct catalogs
(agents with the same instance list share one entry), so a central group
of tens of agents that all know the same 100,000 names costs one set
lookup per name, and a thousand single-host agents cost nothing for the
names they do not share. ``benchmarks/group.py`` has the figures.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

_MASK = (1 << 64) - 1

# One observer: its weight for the instance, and its id.
Ranked = tuple[int, str]


def name_hash(text: str) -> int:
    """64 bits of BLAKE2b of `text`: the same in every process."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def weight(agent_hash: int, instance_hash: int) -> int:
    """The rendezvous weight of an agent for an instance, from their hashes."""
    x = agent_hash ^ instance_hash
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def ranks_below(agent: str, other: str, instance: str) -> bool:
    """Whether `agent` ranks below `other` in `instance`'s rendezvous order."""
    name = name_hash(instance)
    return weight(name_hash(agent), name) < weight(name_hash(other), name)


class Assignment:
    """
    The observers of every instance this agent knows, given each live
    member's catalog (the names it knows); `update` and `set_known` return
    the names whose observers changed.
    """

    def __init__(self, replicas: int) -> None:
        self.replicas = replicas
        # The names this agent knows, with their hashes.
        self._known: dict[str, int] = {}
        self._catalogs: dict[str, frozenset[str]] = {}
        self._agent_hashes: dict[str, int] = {}
        # Distinct catalogs and the members holding each.
        self._groups: dict[frozenset[str], list[str]] = {}
        # Each known name's observers, best first.
        self._top: dict[str, tuple[Ranked, ...]] = {}

    @property
    def members(self) -> Mapping[str, frozenset[str]]:
        """The live members and their catalogs, as last given."""
        return self._catalogs

    def observers(self, name: str) -> tuple[str, ...]:
        """The observers of a known instance, primary first; () if unknown."""
        return tuple(agent for _, agent in self._top.get(name, ()))

    def primary(self, name: str) -> str | None:
        """The instance's primary, or None if nobody observes it."""
        top = self._top.get(name)
        return top[0][1] if top else None

    def items(self) -> Iterable[tuple[str, tuple[Ranked, ...]]]:
        """Every known name and its ranked observers."""
        return self._top.items()

    def set_known(self, names: Iterable[str]) -> set[str]:
        """Know exactly `names`; return those whose observers changed."""
        wanted = set(names)
        changed = {name for name in self._known if name not in wanted}
        for name in changed:
            del self._known[name]
            self._top.pop(name, None)
        added = [name for name in wanted if name not in self._known]
        for name in added:
            self._known[name] = name_hash(name)
            top = self._rank(name)
            self._top[name] = top
            if top:
                changed.add(name)
        return changed

    def update(self, members: Mapping[str, frozenset[str]]) -> set[str]:
        """Take the live members' catalogs; return the names that moved."""
        old = self._catalogs
        gone = {a for a, c in old.items() if members.get(a) is not c}
        came = {a for a, c in members.items() if old.get(a) is not c}
        for agent in gone:
            self._drop(agent)
        for agent in came:
            self._add(agent, members[agent])
        if len(came) > self.replicas:
            # Many at once (the first view): weighing each name once among
            # all its candidates costs less than weighing agent by agent.
            return self._rank_all()
        # Each instance a leaving member observed, weighed again.
        again = set()
        if gone:
            for name, top in self._top.items():
                if any(agent in gone for _, agent in top):
                    again.add(name)
        changed = set()
        for name in again:
            top = self._rank(name)
            if top != self._top[name]:
                self._top[name] = top
                changed.add(name)
        for agent in came:
            changed |= self._weigh_joining(agent, again)
        return changed

    def _weigh_joining(self, agent: str, skip: set[str]) -> set[str]:
        """Put `agent` among the observers where it outweighs the R-th."""
        catalog, known = self._catalogs[agent], self._known
        agent_hash = self._agent_hashes[agent]
        names = catalog if len(catalog) < len(known) else known
        other = known if names is catalog else catalog
        replicas, tops = self.replicas, self._top
        changed = set()
        for name in names:
            if name not in other or name in skip:
                continue
            ranked = (weight(agent_hash, known[name]), agent)
            top = tops[name]
            if len(top) < replicas or ranked > top[-1]:
                tops[name] = tuple(sorted((*top, ranked), reverse=True)[:replicas])
                changed.add(name)
        return changed

    def _rank_all(self) -> set[str]:
        changed = set()
        tops = self._top
        for name in self._known:
            top = self._rank(name)
            if top != tops[name]:
                tops[name] = top
                changed.add(name)
        return changed

    def _rank(self, name: str) -> tuple[Ranked, ...]:
        # `weight` inlined: this runs for every name and candidate.
        instance_hash = self._known[name]
        hashes = self._agent_hashes
        ranked = []
        for catalog, agents in self._groups.items():
            if name in catalog:
                for agent in agents:
                    x = hashes[agent] ^ instance_hash
                    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
                    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
                    ranked.append((x ^ (x >> 31), agent))
        ranked.sort(reverse=True)
        return tuple(ranked[: self.replicas])

    def _add(self, agent: str, catalog: frozenset[str]) -> None:
        self._catalogs[agent] = catalog
        self._agent_hashes[agent] = name_hash(agent)
        self._groups.setdefault(catalog, []).append(agent)

    def _drop(self, agent: str) -> None:
        catalog = self._catalogs.pop(agent)
        del self._agent_hashes[agent]
        holders = self._groups[catalog]
        holders.remove(agent)
        if not holders:
            del self._groups[catalog]

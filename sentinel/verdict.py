"""
An instance's verdict from its observers' opinions (DESIGN.md section 8,
"Groups"): the rules, apart from the ZooKeeper calls that feed them.

Each observer publishes its own opinion (its rise/fall status, ready, role,
error, latency, when it checked). The primary decides:

- **down** when at least Q opinions are down, Q being `zookeeper.quorum`
  capped at the number of live observers that publish an opinion (so
  that a group reduced to one agent still reports what that agent sees,
  and an observer whose opinion stays missing, a member in a crash loop
  whose writes never land, or stays its previous process's, does not
  hold a dead Redis up);
- otherwise **up** when any opinion is up: one agent's own trouble (its
  network, its CPU) never publishes a healthy instance down;
- an unsettled down opinion (its observer's status decided directly by
  its first check, not yet confirmed by `fall` failures in a row) is
  left out of the down count while the verdict the node says is fresh
  and up (`standing`): a joining member's first check is no news of the
  instance, and with quorum 1 one failed first check otherwise published
  every instance it observes down. It counts once settled, at the
  observer's `fall`-th failure; with no fresh verdict (a group's first
  start, a node made anew) it counts at once. An opinion that does not
  say (an agent from before the field) is settled. The verdict names
  the observers left out (`uncounted`): its ``observers`` still say each
  one's status, and an up verdict beside a down opinion with quorum 1 is
  otherwise a contradiction to its readers;
- otherwise, when only such left-out opinions say anything, the standing
  verdict, up, with ready and role as it said them, and the error the
  left-out opinions found (as one agent's up, `fall` failures short,
  says its last check's error): it is written again at each change of
  the opinions and each refresh, so that its ``checked_at`` moves and
  its ``observers`` say what is heard now (before, no verdict was
  written until one settled, or for good while they flapped, until the
  verdict went stale: 34 s at the defaults, past the refresh readers
  judge a node stale by). How long it may stand so is the caller's
  (`Opinions._holds`: `fall` intervals);
- otherwise no verdict: too few opinions to say anything new, and the
  previous verdict stands (a new primary never writes a false down).

Ready, role and the replication fields come from an up observer, the
primary's own opinion first; a down verdict shows the primary's own error
if it sees the instance down, else the first down observer's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence, Set
from typing import Any

import attr

from sentinel.checks import finite, printable
from sentinel.health import DOWN, UP

# The fields of an opinion that make a verdict: a change of any of them is
# written at once, by the observer and then by the primary.
_DECISIVE = ("status", "ready", "role", "master_host", "master_port")


@attr.frozen
class Opinion:
    """One observer's view of one instance, as it publishes it."""

    status: str
    ready: bool = False
    role: str | None = None
    master_host: str | None = None
    master_port: int | None = None
    master_link_status: str | None = None
    latency_ms: float | None = None
    checked_at: float | None = None
    error: str | None = None
    # The address its observer checks (None: not said, by an agent from
    # before opinions said it).
    host: str | None = None
    port: int | None = None
    # What discovery its observer publishes of the instance
    # (`documents.discovery_digest`; None: not said).
    discovery: str | None = None
    # Whether its status rests on the hysteresis (`InstanceHealth.settled`).
    # Not decisive: settling changes no status, and its write is the
    # observer's own (`sentinel.opinions`).
    settled: bool = True

    def decisive(self) -> tuple[Any, ...]:
        """What a verdict takes from this opinion, save timings and errors."""
        return tuple(getattr(self, field) for field in _DECISIVE)


@attr.frozen
class Verdict:
    """The group's view of one instance: its status, and where it came from."""

    status: str
    # The opinion that ready, role, latency and error come from.
    source: Opinion
    # Each observer's status, primary first: "up", "down" or None.
    observers: tuple[tuple[str, str | None], ...]
    quorum: int
    # The newest check among the opinions that say its status (each
    # observer's clock; None if none says when): the document's
    # checked_at is never older (`Opinions._checked_at`).
    checked_at: float | None = None
    # The observers whose down opinion was left out of the count
    # (unsettled, against a fresh up verdict), primary first.
    uncounted: tuple[str, ...] = ()

    def decisive(self) -> tuple[Any, ...]:
        """What readers must see at once when it changes."""
        return (
            self.status,
            self.source.decisive(),
            self.observers,
            self.quorum,
            self.uncounted,
        )


def decide(
    observers: Sequence[str],
    opinions: Mapping[str, Opinion | None],
    quorum: int,
    silent: Set[str] = frozenset(),
    standing: Opinion | None = None,
) -> Verdict | None:
    """
    The verdict of `observers` (primary first) from their `opinions`, with
    `quorum` down opinions needed, capped at the observers not `silent`
    (those whose opinion has long been missing or unreadable); None when
    they say nothing yet. With `standing` up (the node's verdict, fresh),
    unsettled down opinions are not counted, and when nothing else is
    said, `standing` is the verdict.
    """
    counted = sum(1 for agent in observers if agent not in silent)
    needed = max(1, min(quorum, counted))
    said = [(agent, opinions.get(agent)) for agent in observers]
    statuses = tuple((agent, None if o is None else o.status) for agent, o in said)
    holding = standing is not None and standing.status == UP
    down: list[Opinion] = []
    left_out: list[tuple[str, Opinion]] = []
    for agent, o in said:
        if o is not None and o.status == DOWN:
            if o.settled or not holding:
                down.append(o)
            else:
                left_out.append((agent, o))
    uncounted = tuple(agent for agent, _ in left_out)
    up = [o for _, o in said if o is not None and o.status == UP]
    if len(down) >= needed:
        return Verdict(DOWN, down[0], statuses, needed, _newest_check(down), uncounted)
    if up:
        return Verdict(UP, up[0], statuses, needed, _newest_check(up), uncounted)
    if left_out:
        assert standing is not None
        found = [o for _, o in left_out]
        source = attr.evolve(standing, error=found[0].error)
        return Verdict(UP, source, statuses, needed, _newest_check(found), uncounted)
    return None


def _newest_check(opinions: Sequence[Opinion]) -> float | None:
    """The newest ``checked_at`` the opinions say, if any says one."""
    return max(
        (o.checked_at for o in opinions if o.checked_at is not None), default=None
    )


def parse_opinion(data: bytes) -> Opinion | None:
    """An opinion node's data, or None if it holds no opinion we can read."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    return opinion_in(document)


def opinion_in(document: Mapping[str, Any]) -> Opinion | None:
    """
    What a parsed opinion or instance document says of the instance, or
    None if it says no status we can read (anyone may write either).
    """
    status = document.get("status")
    if status not in (UP, DOWN):
        return None
    try:
        return Opinion(
            status=status,
            ready=document.get("ready") is True,
            role=_text(document.get("role")),
            master_host=_text(document.get("master_host")),
            master_port=_integer(document.get("master_port")),
            master_link_status=_text(document.get("master_link_status")),
            latency_ms=finite(document.get("latency_ms")),
            checked_at=finite(document.get("checked_at")),
            error=_text(document.get("error")),
            host=_text(document.get("host")),
            port=_integer(document.get("port")),
            discovery=_text(document.get("discovery")),
            settled=document.get("settled") is not False,
        )
    except (TypeError, ValueError):
        return None


def _text(value: object) -> str | None:
    # Another agent's text: published again, and logged.
    return printable(value, 1024) if isinstance(value, str) else None


def _integer(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None

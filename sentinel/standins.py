"""
Who publishes an instance whose primary is a member waited for and not
back (DESIGN.md section 8: a dead agent's instances are re-created within
a second of its session's end).

Back on a new session, a member keeps the members of its last view that
are not listed again in its view for a while (`Membership.rejoin`): after
a ZooKeeper wipe every member comes back on a new session, one after
another, and a view without the late ones would move their instances
away and back. But the wipe took every node: the instances whose primary
is one of them had no node and no writer until it came back, or until
the wait for it ended, 12 s at a session timeout of 10 s; a member that
died in the outage never comes back, and readers found its instances
missing all that time.

So while a member is absent (`Membership.absent`), each instance it is
the primary of is published by the next of its observers that is not
absent: the one that would be its primary in a view without it (the
rendezvous order of the rest is the same), which observes it already, so
that nothing starts or stops checking. It stands in for the primary only
where the node is missing (`Node.standing_in`: a create, never a
takeover): a node there was written by a session of the new ZooKeeper,
the absent member's own most likely (alive, and listed by the others
before this agent lists it), which publishes it as it should. When the
absent member is listed again its instances go back to it as any move
does: the stand-in keeps the node for it until it takes it over in one
transaction. When the wait for it ends, the view goes on without it,
and the stand-in is its instances' primary in that view already. An
instance none of whose observers is present (one replica) waits for its
primary, as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Set

from sentinel.assignment import Ranked


def stand_in_order(observers: tuple[str, ...], absent: Set[str]) -> tuple[str, ...]:
    """
    `observers` (primary first) with the first that is not `absent` put
    first, if the primary is absent and one is not; else as they are.
    """
    if not observers or observers[0] not in absent:
        return observers
    for index, agent in enumerate(observers):
        if agent not in absent:
            return (agent, *observers[:index], *observers[index + 1 :])
    return observers


def moved_by(
    ranked: Iterable[tuple[str, tuple[Ranked, ...]]], changed: Set[str]
) -> set[str]:
    """
    The names whose publisher may change when the members `changed` come
    or cease to be absent: those any of them observes.
    """
    if not changed:
        return set()
    return {name for name, top in ranked if any(a in changed for _, a in top)}

"""
What a member waiting before it joins its group again still publishes
(`sentinel.holdoff`; docs/groups.rst, "Sessions that keep ending"): the
instances it knows that no other listed member knows.

The wait is there because the others took this member's share over at
its session's end and publish it meanwhile. But an instance that only
this member knows has nobody else: its ephemeral nodes went with the
session, and readers take a missing node for a dead instance (DESIGN.md
section 8). Writing nothing for the whole wait (up to 5 minutes) made
those instances look dead to spare readers the takeovers of the shared
ones. So, while it waits, the member publishes these as a lone agent
would (instance node, discovery member, opinion), from its own checks,
and nothing else: no catalog and no agent node (the others would assign
it instances), nothing of an instance another member knows.

Which instances those are is read from what the member reads anyway: the
catalogs of each listing of the membership (`Membership.listed`; before
the first listing of the new session, the last of the old one). A wait
costs no extra read, and one pass over the listed catalogs a listing.
Only those it is the primary of in the view it keeps while it waits
(`Membership.rejoin`; its own catalog in it as its last reload left it)
have nodes here, found again at once after a reload of its own. One
that view gives to another member that no longer publishes it (it is
no longer listed: it died during the wait; or a reload of its dropped
the instance) had nobody to publish it until the wait ended, up to 5
minutes with /healthz naming nothing of it: the wait ends at once then
(`Group._unshared_changed`), as it does when no other member that
knows its instances is listed.
An instance another listed member knows (it joined, or learned of it by
a reload) is no longer written here: it is that member's, which takes
its node over as its primary; one that no listed member knows any more
is written from then on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sentinel.catalog import Catalog

# Instances named in /healthz's line and /group (the count says the rest).
NAMED = 5


def unshared_names(
    own: Iterable[str], agent_id: str, members: Mapping[str, Catalog]
) -> frozenset[str]:
    """The names of `own` that no member of `members` but `agent_id` knows."""
    left = set(own)
    for agent, catalog in members.items():
        if agent != agent_id and left:
            left.difference_update(catalog.names)
    return frozenset(left)


class Unshared:
    """
    The instances a waiting member publishes (see the module docstring):
    `names`, found again at each listing (`found`), none once the wait is
    over (`clear`).
    """

    def __init__(self, agent_id: str) -> None:
        self._agent_id = agent_id
        self.names: frozenset[str] = frozenset()

    def found(
        self, own: Iterable[str], members: Mapping[str, Catalog]
    ) -> frozenset[str]:
        """
        The instances of `own` no other of the listed `members` knows, kept;
        the names that came or went since the last listing.
        """
        names = unshared_names(own, self._agent_id, members)
        changed = names ^ self.names
        self.names = names
        return changed

    def clear(self) -> None:
        """The wait is over: the member writes everything again."""
        self.names = frozenset()

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def named(self) -> list[str]:
        """The first `NAMED` names, sorted."""
        return sorted(self.names)[:NAMED]

    def said(self) -> str:
        """What /healthz's line of the wait says it writes (one line)."""
        if not self.names:
            return "writes nothing"
        more = len(self.names) - NAMED
        others = f" and {more} more" if more > 0 else ""
        return (
            f"writes nothing but the nodes of the {len(self.names)} instance(s)"
            f" no other listed member knows ({', '.join(self.named())}{others})"
        )

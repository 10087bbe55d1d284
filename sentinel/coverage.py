"""
The instances checked since the state file's ``checked_at``, carried from
one process to the next while none has checked them all
(`sentinel.handoff`).

A session reattached to is backed by checks once every instance it
observes was checked (the first round). Before, that had to be one
process's round: quick ``SIGTERM`` restarts in a row at 1,000 instances,
each process stopped about 3 s after its start with about 150 instances
checked (their connections are opened at a pace, `sentinel.pacing`),
never completed one, the file kept the time of the last process that had,
and 1.5 session timeouts on the next start closed the session as stale:
every node missing for 12--27 s. Now the file names the instances checked
since its ``checked_at`` (``covered``), and the next process counts them as
checked in its own round; its checks go to the others first
(`Monitor.launch_last`), so that short processes in a row cover the fleet
between them rather than its first slices each.

It stays exact: an instance counts only for a check made after the file's
``checked_at`` (a file whose ``checked_at`` is unknown or in the future
carries nothing), whose result ZooKeeper holds (its nodes, instance and
opinion, are not waiting for a write) and which is evidence (it does not
contradict the published status, `sentinel.unbacked`). A crash loop whose
processes check nothing, or only some instances each, all the same ones,
is closed as stale as before.

One ``/``-separated string (instance names are znode names, without ``/``),
in order (the same names, the same file): 19,000 names of 20 characters
are about 400 KB. A write of it during a first round (at most every
quarter of the session timeout, and at the stop) costs the reactor about
11 ms at 19,000 names (the best of 20 at load 17--24 on 2 cores: 5 ms
the sort, 0.5 ms the join, 1 ms the JSON, 5 ms the filter of
`FirstRound.held`). A value not understood (not a string, more than
`MAX_COVERED` names) carries nothing; a name the process does not observe
counts for nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

# More names than any agent watches (one connection each): a larger value
# is no agent's, and is ignored rather than held in memory.
MAX_COVERED = 200_000
SEPARATOR = "/"


def encode_covered(names: Iterable[str]) -> str:
    """The state file's ``covered`` for `names`."""
    return SEPARATOR.join(sorted(names))


def decode_covered(value: object) -> frozenset[str]:
    """The names a state file's ``covered`` says, empty if not understood."""
    if not isinstance(value, str) or not value:
        return frozenset()
    if value.count(SEPARATOR) >= MAX_COVERED:
        return frozenset()
    return frozenset(name for name in value.split(SEPARATOR) if name)


class FirstRound:
    """
    On a session reattached to, the instances checked since the file's
    ``checked_at``: those the previous processes carried, and this one's.
    """

    def __init__(self, carried: Iterable[str] = ()) -> None:
        self.carried = frozenset(carried)
        self._covered = set(self.carried)

    @property
    def names(self) -> Collection[str]:
        """The instances checked since the file's ``checked_at``."""
        return self._covered

    def add(self, name: str) -> None:
        """This process checked instance `name`."""
        self._covered.add(name)

    def done(self, observed: Collection[str]) -> bool:
        """Whether every instance `observed` was checked (none observed: no)."""
        covered = self._covered
        # Counted first: a walk of every name at each check of the round
        # would take a time in the square of their number.
        if not observed or len(covered) < len(observed):
            return False
        if all(name in covered for name in observed):
            return True
        # Names not observed (carried from a file, or removed since) would
        # make each later check walk them all again: they count for nothing.
        self._covered = {name for name in covered if name in observed}
        return False

    def held(
        self, observed: Collection[str], backs: Callable[[str], bool] | None
    ) -> frozenset[str]:
        """
        The names the file may say: those `observed` (no other is known to
        be an instance; while none is, a group's first view not formed yet,
        every name, for nothing is known that would drop one) that `backs`
        accepts (all of them if None).
        """
        # The intersection first, in C: at 19,000 names the filter below is
        # the walk that costs (tens of ms at load 10, once per write).
        known = self._covered.intersection(observed) if observed else self._covered
        if backs is None:
            return frozenset(known)
        return frozenset(name for name in known if backs(name))

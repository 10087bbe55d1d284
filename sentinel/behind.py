"""
Verdicts that do not say this agent's own opinion, and since when: the
evidence that a listed primary holds an instance node but cannot write
it (`sentinel.covers` takes such a node over; DESIGN.md section 8).

A primary writes its verdict again at every change of an opinion's
status: the ``observers`` it names are part of what readers must see at
once (`Verdict.decisive`), and a change of status is never held back
(`sentinel.flapping`). It hears the change through its watch, reads the
opinion (at most `OPINION_READ_SPACING` later) and writes, about a
second in all. So when this agent, a secondary, reads a verdict that
names it with another status than its own opinion says, written and
acknowledged, and still does so `late_after` later, on the same holding
session, the primary has not written for that long what readers must
see at once: its path to ZooKeeper is bad (throttled, holding bytes)
while its session lives, so nothing else moves the node. An instance
that died under such a primary stayed published ``up`` for the whole
30 s of a watch (BENCHMARKS.rst, "A primary that holds its nodes but
cannot write them").

The bound is the longer of the session timeout and `LATE_FLOOR`: a
primary as silent on its connection for a session timeout would have
lost its session, and its nodes would have moved after that anyway (the
contract's crash); and a new primary may write the previous primary's
verdict, naming that one's observers, for up to ``2 x ABSENT_AFTER``
(10 s) before its own /healthz calls it unable to decide. A primary busy
for less than that keeps its nodes. The clock restarts when the node's
holding session changes (a takeover, a take-back): each holder has the
whole bound to write, so ownership moves at most once each way a bound.
The primary found so is **late**, here, until a verdict it wrote is
read saying this agent's opinion again (its take-back, say), it leaves
the group, or this agent no longer observes the instance it was found
late by (nothing could clear it then): the
verdicts this agent writes as a primary leave out its opinions
meanwhile, as a coverer's do (`GroupRoles.verdict_of`). They say what it
found before it could no longer write; counted, with ``replicas = 3`` and
``quorum = 3``, an instance that died stayed ``up`` on every node where
the late member observes it, whoever was the primary: only the member
covering for it left it out.

A verdict that does not name this agent, or names it ``null``, comes
from a primary whose view of the group is not this one's, or that has
not read this agent's opinion, or leaves it out on purpose (it covers
for this agent): late too, but only `VIEW_LAG` past the bound. A
throttled primary, reading behind its writes, went on counting the
opinion of a member gone 30 s before and never named its new secondary,
or named it ``null`` (not read): 13 of 26 nodes of a dead server stayed
``up`` when only a named status counted. A reading taken while this
agent's own opinion is not written as it stands is no evidence (this
agent's own path may be the slow one).

Nor is any reading while this agent's own writes are slow, nor one
before: the clock starts again after the last write of this agent's
found slow (`sentinel.zk.SLOW_WRITE`). An agent whose own writes hang
is the late member of its coverer's verdicts, which leave it out on
purpose and name it ``null`` (`GroupRoles.verdict_of`): its readings
of them, its own opinions long written, found that coverer late, and
once its writes went through it took over every node of its healthy
coverer's share, which took them back a second later (19 of 19 nodes,
`tests.test_covers`, "SlowMemberTests"); and it left the coverer out of
its own verdicts meanwhile, which made the coverer find it late again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from typing import Any

from sentinel.checks import printable
from sentinel.health import DOWN, UP

# Seconds at least a verdict may not say this agent's opinion: the
# longest a healthy new primary writes another's verdict, its observers
# included (`roles.CARRIED_LIMIT`, ``2 x ABSENT_AFTER``).
LATE_FLOOR = 10.0
# Late primaries named in /healthz.
LATE_NAMED = 5
# A verdict whose observers leave this agent out: its primary's view of
# the group is not this agent's. Seconds more it may be so, past the
# bound: a member's view may lag 14 s in a rolling deploy of 2,000
# members (docs/groups.rst, "Large groups"), and a primary whose path
# is healthy is not taken over for that.
VIEW_LAG = 15.0
UNNAMED = "unnamed"


def late_after(session_timeout: float) -> float:
    """Seconds a verdict may not say this agent's opinion (module docstring)."""
    return max(session_timeout, LATE_FLOOR)


def said_of(document: Mapping[str, Any] | None, agent: str) -> str | None:
    """
    The status a verdict document names `agent` with, if up or down;
    `UNNAMED` if its observers leave `agent` out or name it null.
    """
    observers = None if document is None else document.get("observers")
    if not isinstance(observers, dict):
        return None
    said = observers.get(agent)
    return said if said in (UP, DOWN) else UNNAMED


class BehindVerdicts:
    """
    For each instance this agent observes as a secondary, since when its
    readings found the verdict not saying this agent's opinion, on the
    same holding session (see the module docstring).
    """

    def __init__(
        self,
        after: Callable[[], float],
        writes_slow_at: Callable[[], float] = lambda: -math.inf,
        listed: Callable[[str], bool] = lambda agent: True,
    ) -> None:
        """
        @param after: the bound, in seconds (`late_after`).
        @param writes_slow_at: when a write of this agent's was last found
            slow (`sentinel.zk.ZooKeeper.writes_slow_at`).
        @param listed: whether an agent id is a member of the group's
            view: only a member is named late, so that the ``agent`` a
            document claims (anyone's, up to ZooKeeper's 1 MB) keeps no
            entry here.
        """
        self._after = after
        self._writes_slow_at = writes_slow_at
        self._listed = listed
        self._since: dict[str, tuple[str, int, float]] = {}
        # The primaries found late, and by which instance's verdict.
        self.late: dict[str, str] = {}

    def seen(
        self,
        name: str,
        mine: str | None,
        said: str | None,
        holder: int,
        writer: object,
        asked: float,
    ) -> float | None:
        """
        A reading of the verdict of `name`, asked at `asked`, found it
        held by session `holder`, written by `writer` (the ``agent`` it
        says) and naming this agent `said`, while its own opinion as
        written said `mine`: when the verdict is late if it stays so (at
        or before `asked`: late now, and its writer too), or None if it
        is not behind (and its writer, if it says this agent's opinion,
        not late any more).
        """
        if mine is None or said is None or mine == said:
            self._since.pop(name, None)
            if mine is not None and mine == said and isinstance(writer, str):
                self.late.pop(writer, None)
            return None
        known = self._since.get(name)
        slow = self._writes_slow_at()
        if known is None or known[:2] != (mine, holder) or known[2] < slow:
            known = self._since[name] = (mine, holder, max(asked, slow))
        late_at = known[2] + self._after() + (VIEW_LAG if said == UNNAMED else 0.0)
        if late_at <= asked and isinstance(writer, str) and self._listed(writer):
            self.late[writer] = name
        return late_at

    def bound(self) -> float:
        """The bound now, in seconds."""
        return self._after()

    def forget(self, name: str) -> None:
        """
        `name` is no longer observed here as another's: nor is a primary
        late here by its verdict alone (no reading of it could clear it).
        """
        self._since.pop(name, None)
        for agent in [a for a, found in self.late.items() if found == name]:
            del self.late[agent]

    def unhealthy_reason(self) -> str | None:
        """
        The primaries late here, for /healthz: how many, the first
        `LATE_NAMED` with an instance each; None if there are none.
        """
        if not self.late:
            return None
        named = sorted(self.late.items())
        said = ", ".join(
            f"{printable(agent, 64)} ({name})" for agent, name in named[:LATE_NAMED]
        )
        more = len(named) - LATE_NAMED
        return (
            f"{len(named)} primary member(s) whose verdicts have not said this "
            f"agent's opinion for {self._after():g} s or more: {said}"
            + (f" and {more} more" if more > 0 else "")
            + ": they cannot write; the verdicts this agent writes leave their "
            "opinions out until they write again"
        )

    def members_gone(self, agents: Collection[str]) -> None:
        """Members no longer listed: none of them is late here."""
        for agent in agents:
            self.late.pop(agent, None)

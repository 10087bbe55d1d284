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
A verdict that names this agent ``null`` (left out: a member with one
replica, a slow member) or does not name it is no evidence, nor is a
reading taken while this agent's own opinion is not written as it
stands (this agent's own path may be the slow one).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sentinel.health import DOWN, UP

# Seconds at least a verdict may not say this agent's opinion: the
# longest a healthy new primary writes another's verdict, its observers
# included (`roles.CARRIED_LIMIT`, ``2 x ABSENT_AFTER``).
LATE_FLOOR = 10.0


def late_after(session_timeout: float) -> float:
    """Seconds a verdict may not say this agent's opinion (module docstring)."""
    return max(session_timeout, LATE_FLOOR)


def said_of(document: Mapping[str, Any] | None, agent: str) -> str | None:
    """The status a verdict document names `agent` with, if up or down."""
    observers = None if document is None else document.get("observers")
    said = observers.get(agent) if isinstance(observers, dict) else None
    return said if said in (UP, DOWN) else None


class BehindVerdicts:
    """
    For each instance this agent observes as a secondary, since when its
    readings found the verdict not saying this agent's opinion, on the
    same holding session (see the module docstring).
    """

    def __init__(self, after: Callable[[], float]) -> None:
        """@param after: the bound, in seconds (`late_after`)."""
        self._after = after
        self._since: dict[str, tuple[str, int, float]] = {}

    def seen(
        self, name: str, mine: str | None, said: str | None, holder: int, asked: float
    ) -> float | None:
        """
        A reading of the verdict of `name`, asked at `asked`, found it
        held by session `holder` and naming this agent `said`, while its
        own opinion as written said `mine`: when the verdict is late if
        it stays so (at or before `asked`: late now), or None if it is
        not behind.
        """
        if mine is None or said is None or mine == said:
            self._since.pop(name, None)
            return None
        known = self._since.get(name)
        if known is None or known[:2] != (mine, holder):
            known = self._since[name] = (mine, holder, asked)
        return known[2] + self._after()

    def bound(self) -> float:
        """The bound now, in seconds."""
        return self._after()

    def forget(self, name: str) -> None:
        """`name` is no longer observed here as another's."""
        self._since.pop(name, None)

"""
Instances the agent no longer judges, or never has: published status it no
longer keeps fresh, and instances it has watched for long without a look.

A check the agent could not serve in time (start-up pacing, an agent
running late on its own CPU: see `sentinel.probe`) records nothing, so that
a healthy Redis is never published down for the agent's own trouble. An
agent that stays that late, though, would leave each instance it cannot
get to as it was last published, for as long as that lasts: silently
stale. So, once a second, the instances that have a status and whose last
recorded check is older than twice the detection bound (``interval *
fall + timeout``) are counted, and while there are any, ``/healthz`` fails
and says how many, since when, and which (the `NAMED` oldest: in a group,
the operator looks for them in the verdicts this agent writes), and why
the oldest's checks say nothing.

An instance never judged by this agent (no check of it recorded: at
start, added by ``SIGHUP``, its connect in line for the pacer or held
back behind another instance's at a stalled address, or a status
inherited in a group and never checked here) is unknown, not stale:
nothing this agent published of it says a time. It is *unjudged* once
watched for longer than `unjudged_after` (`UNJUDGED_AFTER`, 10 s, or the
stale bound if longer: a few ticks, within which DESIGN.md wants
thousands of healthy instances up from a cold start), and while any is,
``/healthz`` fails too, saying how many, for how long and why. The time
is each instance's own, from when it was watched: before, start-up's
report counted from the first ``/healthz`` answer that found instances
waiting, so an agent nobody had asked yet said 200 at its first answer
with 20 instances unjudged for 20 s, one of them 28.7 s without a status
under 200s, and a lumped count named neither them nor why (load 17.5:
BENCHMARKS.rst, unjudged instances).
Every instance's ``unjudged_since`` and reason are in ``/instances`` and
``/metrics`` from the first check that said nothing.

An instance whose status says up while its checks time out and are put
off because the agent waited for a CPU (`sentinel.runqueue`: a history
gone stale, or a verdict taken over, each decided by `fall` such
timeouts in a row) is *doubted*: what is published of it may be wrong
until then, and ``/healthz`` fails at once, naming it and saying why.
Before, such an instance said up with ``/healthz`` 200 until the stale
bound, 2 s past it at 1,000 instances on a starved agent (BENCHMARKS.rst,
a frozen server on a starved agent).

The scan reads every instance's state: about 1 ms per 10,000 instances,
once a second, and at a ``/healthz`` answer while the last scan found
any instance: an instance checked since is not reported a second longer.
Such a scan is one per `RESCAN_AFTER` at most: 3--5 ms at 19,000
instances all stale, which a client asking ``/healthz`` (or ``/metrics``)
in a loop repeated at every answer, on an agent already behind on its
checks.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping
from typing import Any

from twisted.internet.interfaces import IReactorTime

from sentinel.health import UP
from sentinel.instance import InstanceState
from sentinel.monitor import Settings
from sentinel.timer import RestartingTimer

# Seconds between scans.
STEP = 1.0
# Seconds from a scan before an answer that finds something scans again:
# at most ten scans a second more, whoever asks, and an instance checked
# since is reported 0.1 s longer at most.
RESCAN_AFTER = 0.1
# Stale or unjudged instances named in /healthz, the oldest first.
NAMED = 5
# Seconds an instance may be watched without a judgement at least, before
# /healthz fails (module docstring).
UNJUDGED_AFTER = 10.0


def stale_after(settings: Settings) -> float:
    """Seconds without a recorded check after which a status is stale."""
    return 2 * (settings.interval * settings.fall + settings.timeout)


def unjudged_after(settings: Settings) -> float:
    """Seconds watched without a judgement after which /healthz fails."""
    return max(UNJUDGED_AFTER, stale_after(settings))


class _Found:
    """The instances found past one bound by a scan, the oldest named."""

    def __init__(self, found: list[tuple[float, str]], now: float) -> None:
        oldest = heapq.nsmallest(NAMED, found)
        self.count = len(found)
        self.oldest_seconds = now - oldest[0][0] if oldest else None
        self.names = [name for _, name in oldest]

    def said(self, why: str | None) -> str:
        """The oldest's age and the names, with how many more and why."""
        more = self.count - len(self.names)
        return (
            f"the oldest {self.oldest_seconds or 0.0:.1f} s: "
            f"{', '.join(self.names)}"
            + (f" and {more} more" if more else "")
            + ("" if why is None else f"; {self.names[0]}: {why}")
        )


_NONE_FOUND = _Found([], 0.0)


class Freshness:
    """
    Counts the stale and unjudged instances once a second (`timer`, a
    service to run with the agent) and reports them (`unhealthy_reason`,
    `stats`).
    """

    def __init__(
        self,
        clock: IReactorTime,
        states: Callable[[], Mapping[str, InstanceState]],
        settings: Callable[[], Settings],
    ) -> None:
        self._clock = clock
        self._states = states
        self._settings = settings
        self._stale = _NONE_FOUND
        self._unjudged = _NONE_FOUND
        self._doubted = _NONE_FOUND
        self._scanned_at: float | None = None
        self.timer = RestartingTimer("freshness", STEP, clock, self.scan)

    @property
    def stale(self) -> int:
        """Instances with a status whose last recorded check is too old."""
        return self._stale.count

    @property
    def unjudged(self) -> int:
        """Instances watched too long without any recorded check."""
        return self._unjudged.count

    @property
    def doubted(self) -> int:
        """Instances said up whose timeouts are put off for the agent's CPU."""
        return self._doubted.count

    def scan(self) -> None:
        """Find the instances whose status is stale or missing now."""
        now = self._scanned_at = self._clock.seconds()
        settings = self._settings()
        stale_limit = now - stale_after(settings)
        unjudged_limit = now - unjudged_after(settings)
        stale: list[tuple[float, str]] = []
        unjudged: list[tuple[float, str]] = []
        doubted: list[tuple[float, str]] = []
        for state in self._states().values():
            health = state.health
            checked_at = health.checked_at
            if checked_at is None:
                if state.watched_since < unjudged_limit:
                    unjudged.append((state.watched_since, state.name))
            elif checked_at < stale_limit:
                stale.append((checked_at, state.name))
            if state.starved_timeouts and health.status == UP:
                doubted.append((state.unjudged_since or now, state.name))
        self._stale = _Found(stale, now)
        self._unjudged = _Found(unjudged, now)
        self._doubted = _Found(doubted, now)

    def _why(self, found: _Found) -> str | None:
        # Why the oldest found says nothing, read now (it may be gone).
        state = self._states().get(found.names[0]) if found.names else None
        return None if state is None else state.why_unjudged

    def unhealthy_reason(self) -> str | None:
        """Why /healthz fails on this account, or None."""
        found = self._stale.count or self._unjudged.count or self._doubted.count
        scanned_at = self._scanned_at
        if found and (
            scanned_at is None or self._clock.seconds() - scanned_at >= RESCAN_AFTER
        ):
            # Found by a scan up to `STEP` ago, and perhaps checked since:
            # scanned again, or /healthz stayed 503 that much longer with
            # every instance checked (0.7 s of 1 after a 25 s pause of the
            # agent's own: BENCHMARKS.rst). Only while something is found,
            # so a healthy agent's answers cost no scan; and not again
            # within `RESCAN_AFTER`, or each answer cost a scan of every
            # instance (3--5 ms at 19,000) to a client asking in a loop.
            self.scan()
        reasons = []
        settings = self._settings()
        stale, unjudged = self._stale, self._unjudged
        if stale.count:
            reasons.append(
                f"{stale.count} instance(s) not checked for over "
                f"{stale_after(settings):g} s ({stale.said(self._why(stale))}"
                "): the agent cannot keep up, and what it published of them "
                "may be stale"
            )
        if unjudged.count:
            reasons.append(
                f"{unjudged.count} instance(s) never judged in over "
                f"{unjudged_after(settings):g} s since watched "
                f"({unjudged.said(self._why(unjudged))}): "
                "nothing of theirs is published by this agent (their nodes "
                "missing for readers, or another's)"
            )
        doubted = self._doubted
        if doubted.count:
            reasons.append(
                f"{doubted.count} instance(s) said up whose checks time out, "
                f"put off while the agent waits for a CPU ("
                f"{doubted.said(self._why(doubted))}): what is published of "
                f"them may be wrong until {settings.fall} such timeouts in a "
                "row decide them"
            )
        return "; ".join(reasons) or None

    def stats(self) -> dict[str, Any]:
        """For /debug/stats."""
        settings = self._settings()
        return {
            "stale_instances": self._stale.count,
            "oldest_stale_seconds": self._stale.oldest_seconds,
            "stale_after_seconds": stale_after(settings),
            "unjudged_instances": self._unjudged.count,
            "oldest_unjudged_seconds": self._unjudged.oldest_seconds,
            "unjudged_after_seconds": unjudged_after(settings),
            "doubted_instances": self._doubted.count,
        }

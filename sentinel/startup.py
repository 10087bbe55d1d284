"""
What start-up is doing, for ``/debug/stats`` and ``/healthz``.

At start (and after a reload adds instances) thousands of connections may
be waiting for the pacer (`sentinel.pacing`), and instances stay unknown,
unpublished, until the agent has looked at them: an operator asking why an
instance is not in ZooKeeper yet sees here how many are still waiting, and
whether the agent runs late.

While instances wait so for `UNLOOKED_AFTER` or more, /healthz fails: their
nodes are not written (missing for readers, or another session's), and
in a group their opinions are missing from verdicts. Before, /healthz
said 200 (and ``starting``) however long that lasted: a group's start at
3,000 instances answered 200 on every agent while 2,936 instance nodes
were missing. The time counts from the first /healthz answer that found
some waiting (as for a discovery member missing, `sentinel.zkreport`):
the instances keep no time of their own, and /healthz never walks them.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IReactorTime

from sentinel.monitor import Monitor
from sentinel.pacing import ConnectPacer

# Seconds instances may wait for a first look before /healthz fails: a
# few ticks, within which DESIGN.md wants thousands of healthy instances
# up from a cold start (about 10 s for 3,000 on a loaded 2-core machine).
UNLOOKED_AFTER = 10.0


class StartupReport:
    """
    Reads the monitor and the pacer live; keeps only since when instances
    have waited for a first look.
    """

    def __init__(
        self, monitor: Monitor, pacer: ConnectPacer, clock: IReactorTime
    ) -> None:
        self._monitor = monitor
        self._pacer = pacer
        self._clock = clock
        self._waiting_since: float | None = None

    def unhealthy_reason(self) -> str | None:
        """
        Why /healthz fails on start-up's account: instances not looked at
        for `UNLOOKED_AFTER` or more (module docstring); else None.
        """
        waiting = self.not_looked_at()
        now = self._clock.seconds()
        if not waiting:
            self._waiting_since = None
            return None
        if self._waiting_since is None:
            self._waiting_since = now
        seconds = now - self._waiting_since
        if seconds < UNLOOKED_AFTER:
            return None
        return (
            f"starting: {waiting} instance(s) not looked at yet, for"
            f" {seconds:.0f} s: their nodes are not written (missing for"
            " readers, or another session's)"
        )

    def not_looked_at(self) -> int:
        """
        Instances with no recorded check yet (unknown, unpublished), from
        the monitor's counts: /healthz is asked at any rate.
        """
        monitor = self._monitor
        return len(monitor.states) - monitor.instances_decided

    def stats(self) -> dict[str, Any]:
        """``startup`` in /debug/stats: the instances waiting, the pacer, the lag."""
        monitor = self._monitor
        return {
            "instances_not_looked_at": self.not_looked_at(),
            "inconclusive_checks": monitor.inconclusive,
            "tick_lag_seconds": round(monitor.tick_lag, 4),
            "tick_lag_max_seconds": round(monitor.tick_lag_max, 4),
            **self._pacer.stats(),
        }

    def progress(self) -> dict[str, int] | None:
        """
        ``starting`` in /healthz: while instances wait for a first look or
        connections wait to start, how many; None once neither does.
        """
        waiting = self.not_looked_at()
        pacer = self._pacer
        if not waiting and not pacer.waiting:
            return None
        return {
            "instances_not_looked_at": waiting,
            "connects_queued": pacer.waiting,
            "connects_in_flight": pacer.in_flight,
        }

"""
What start-up is doing, for ``/debug/stats`` and ``/healthz``.

At start (and after a reload adds instances) thousands of connections may
be waiting for the pacer (`sentinel.pacing`), and instances stay unknown,
unpublished, until the agent has looked at them: an operator asking why an
instance is not in ZooKeeper yet sees here how many are still waiting, and
whether the agent runs late. ``/healthz`` says so under ``starting``, from
the monitor's counts (it never walks the instances); when instances have
waited too long, `sentinel.freshness` fails it, by each instance's own time.
"""

from __future__ import annotations

from typing import Any

from sentinel.monitor import Monitor
from sentinel.pacing import ConnectPacer


class StartupReport:
    """Reads the monitor and the pacer live."""

    def __init__(self, monitor: Monitor, pacer: ConnectPacer) -> None:
        self._monitor = monitor
        self._pacer = pacer

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
            "first_checks_starved": monitor.starved_first_checks,
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

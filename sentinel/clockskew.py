"""
This agent's wall clock against ZooKeeper's.

Every ``since`` and ``checked_at`` the agent publishes is a time of its own
wall clock, which readers compare with theirs, and a new primary compares
with its own (another agent's clock is taken when it is not ahead of ours).
ZooKeeper stamps each write with its own clock, a node's ``mtime``: each
write of the agent node (every heartbeat) tells how far apart the two
clocks are, to within the write's round trip, so a slow answer never
counts. A clock off by more than `SKEW_LIMIT`, either way, makes the
published data wrong: /healthz fails, with the figure. (An agent 30 s
behind, under libfaketime, wrote every ``checked_at`` 30 s older than its
write, and a node it took over had its ``since`` dated back 24 s, while
its /healthz said ok.)
"""

from __future__ import annotations

from typing import Any

# Seconds this agent's clock may be off ZooKeeper's: far more than NTP
# leaves between two hosts, and a sixth of the default refresh, by which
# readers judge a node stale.
SKEW_LIMIT = 5.0


class ClockSkew:
    """How far this agent's clock is from ZooKeeper's, as last measured."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        # Seconds this agent's clock is ahead of ZooKeeper's (negative:
        # behind), at the agent node's last write; None before one.
        self.offset: float | None = None

    def now(self) -> float:
        """This agent's clock now: when a write is sent."""
        return float(self._reactor.seconds())

    def written(self, stat: Any, sent: float) -> None:
        """The agent node, written at `sent` (`now`), was answered with `stat`."""
        answered = self.now()
        stamped = stat.mtime / 1000.0
        # ZooKeeper wrote it between the send and the answer: only a stamp
        # outside that window says the clocks differ, and by how much.
        self.offset = max(sent - stamped, 0.0) - max(stamped - answered, 0.0)

    def unhealthy_reason(self) -> str | None:
        """Why /healthz should fail on the clock's account, or None."""
        offset = self.offset
        if offset is None or abs(offset) <= SKEW_LIMIT:
            return None
        way = "ahead of" if offset > 0 else "behind"
        return (
            f"zookeeper: this agent's clock is {abs(offset):.1f} s {way} "
            "ZooKeeper's (the agent node's last write): every since and "
            "checked_at it publishes is off by as much"
        )

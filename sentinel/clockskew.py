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

ZooKeeper's clock is its leader's: the leader stamps every write of the
ensemble. A leader whose clock is off shows every agent the same offset,
though their clocks (and the times they publish) are right; so it did,
under libfaketime on the leader of a three-server ensemble, and every
agent's /healthz failed. So an offset past the limit is compared with the
other agents' (up to `OTHERS` of them, picked at random from
``{root}/agents``): each agent node says when its agent wrote it
(``heartbeat_at``) and ZooKeeper when it stamped it. Only nodes stamped
by the same leader as ours count, that is in the same epoch, the high 32
bits of the ``mzxid``: a node written before an election was stamped by
another clock. When most of those agree with this agent's clock (their
offsets within `SKEW_LIMIT` of ours), the odd clock is ZooKeeper's: the
agent is not blamed, and the log says so, once. In a group, only the
members in its view are picked (`members`): anyone may create nodes
under ``{root}/agents``, and five nodes a squatter wrote with this
agent's wrong clock, picked from a hundred, made the clock ZooKeeper's
fault, /healthz 200 while every time published was off. Otherwise (most agree
with ZooKeeper, or none is comparable: one agent alone, or none written
under this leader yet) the agent's clock is taken to be the one off, as
before. The comparison is made again at each heartbeat while the offset
stays past the limit and the agent is blamed; once ZooKeeper's clock is
found off, only when the leader (the epoch) or the offset changes. It
costs nothing while the offset is within the limit.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Collection
from typing import Any

from kazoo.exceptions import KazooException, NoNodeError
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.logger import Logger

from sentinel.checks import finite
from sentinel.zk import ZooKeeper

# Seconds this agent's clock may be off ZooKeeper's: far more than NTP
# leaves between two hosts, and a sixth of the default refresh, by which
# readers judge a node stale.
SKEW_LIMIT = 5.0

# The most other agents' nodes read at a heartbeat to tell whose clock is
# off: a few reads, whatever the size of the group.
OTHERS = 5

log = Logger()


class ClockSkew:
    """
    How far this agent's clock is from ZooKeeper's, as last measured, and
    whether the other agents' say the odd clock is ZooKeeper's. Without
    `zk`, nothing is compared (a test's clock alone).
    """

    def __init__(
        self,
        reactor: Any,
        zk: ZooKeeper | None = None,
        agent_path: str = "",
        pick: random.Random | None = None,
    ) -> None:
        self._reactor = reactor
        self._zk = zk
        self._agents, _, self._own = agent_path.rpartition("/")
        self._pick = pick or random.Random()
        # Seconds this agent's clock is ahead of ZooKeeper's (negative:
        # behind), at the agent node's last write; None before one.
        self.offset: float | None = None
        # The epoch of that write, and of the other agents' nodes compared
        # with it: (how many were comparable, how many agreed with ours).
        self._epoch = 0
        self.others: tuple[int, int] | None = None
        self._comparing = False
        # Our offset when `others` was counted.
        self._compared_offset: float | None = None
        self._zookeeper_off = False
        # In a group: the members in its view, the only agents compared.
        self.members: Callable[[], Collection[str]] | None = None

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
        epoch = stat.mzxid >> 32
        if epoch != self._epoch:
            self._epoch, self.others = epoch, None
        if abs(self.offset) <= SKEW_LIMIT:
            self.others = None
            self._judged()
        elif self._zk is not None and not self._comparing and not self._settled():
            # One comparison at a time; each ends with the bridge's calls.
            self._comparing = True
            comparing = Deferred.fromCoroutine(self._compare(self._zk))
            comparing.addErrback(
                lambda f: log.failure("comparing with other agents' clocks", f)
            )

    def _settled(self) -> bool:
        # ZooKeeper's clock found off under this leader, by about as much
        # as now: nothing to read again until the leader or the offset
        # changes (with a leader off, every agent would read at every
        # heartbeat otherwise).
        compared = self._compared_offset
        return (
            self.zookeeper_off()
            and compared is not None
            and self.offset is not None
            and abs(self.offset - compared) <= SKEW_LIMIT / 2
        )

    def zookeeper_off(self) -> bool:
        """Whether most other agents agree with this one: ZooKeeper's is off."""
        if self.others is None or self.offset is None:
            return False
        comparable, agreeing = self.others
        return abs(self.offset) > SKEW_LIMIT and 2 * agreeing > comparable

    def unhealthy_reason(self) -> str | None:
        """Why /healthz should fail on the clock's account, or None."""
        offset = self.offset
        if offset is None or abs(offset) <= SKEW_LIMIT or self.zookeeper_off():
            return None
        way = "ahead of" if offset > 0 else "behind"
        if self.others is None or not self.others[0]:
            compared = "no other agent's node stamped by the same leader to compare"
        else:
            comparable, agreeing = self.others
            compared = f"{comparable - agreeing} of {comparable} other agent(s) agree"
        return (
            f"zookeeper: this agent's clock is {abs(offset):.1f} s {way} "
            f"ZooKeeper's (the agent node's last write; {compared}): every "
            "since and checked_at it publishes is off by as much"
        )

    def stats(self) -> dict[str, Any]:
        """For /debug/stats: the offset, and the other agents compared."""
        comparable, agreeing = self.others or (0, 0)
        return {
            "offset_seconds": self.offset,
            "others_compared": comparable,
            "others_agreeing": agreeing,
            "zookeeper_clock_off": self.zookeeper_off(),
        }

    async def _compare(self, zk: ZooKeeper) -> None:
        try:
            if self.members is None:
                names = await zk.get_children(self._agents, background=True)
            else:
                names = sorted(self.members())
            others = [name for name in names if name != self._own]
            picked = self._pick.sample(others, min(OTHERS, len(others)))
            offsets = []
            for name in picked:
                offset = await self._offset_of(zk, f"{self._agents}/{name}")
                if offset is not None:
                    offsets.append(offset)
        except (KazooException, TimeoutError, CancelledError) as e:
            # Every call of the bridge ends: nothing is known, the next
            # heartbeat asks again.
            log.debug("other agents' clocks not read: {why}", why=e)
            return
        finally:
            self._comparing = False
        if self.offset is None:
            return
        ours = self._compared_offset = self.offset
        agreeing = sum(1 for offset in offsets if abs(offset - ours) <= SKEW_LIMIT)
        self.others = (len(offsets), agreeing)
        self._judged()

    async def _offset_of(self, zk: ZooKeeper, path: str) -> float | None:
        # Another agent's clock against ZooKeeper's at its node's last
        # write, if that was stamped by the leader that stamped ours.
        try:
            data, stat = await zk.get(path, background=True)
        except NoNodeError:
            return None
        if stat.mzxid >> 32 != self._epoch:
            return None
        try:
            said = json.loads(data)["heartbeat_at"]
        except (ValueError, TypeError, KeyError, RecursionError):
            # Not an agent node we can read (a squatter's, deeply nested).
            return None
        # A time, or nothing to compare: an integer too large for a float
        # raised OverflowError, which ended the whole comparison.
        written = finite(said)
        if written is None:
            return None
        return written - float(stat.mtime) / 1000.0

    def _judged(self) -> None:
        off = self.zookeeper_off()
        if off == self._zookeeper_off:
            return
        self._zookeeper_off = off
        if off and self.offset is not None and self.others is not None:
            way = "behind" if self.offset > 0 else "ahead of"
            log.warn(
                "ZooKeeper's clock (its leader's) is {seconds:.1f} s {way} this "
                "agent's, and {agreeing} of {comparable} other agent(s) agree "
                "with this agent's: ZooKeeper's stamps (mtime) are off, not "
                "the times agents publish",
                seconds=abs(self.offset),
                way=way,
                agreeing=self.others[1],
                comparable=self.others[0],
            )
        elif self.offset is not None and abs(self.offset) <= SKEW_LIMIT:
            log.info("ZooKeeper's clock agrees with this agent's again")

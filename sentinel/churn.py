"""
How fast a discoverer's replica list comes and goes, and what that may cost
(`sentinel.topology` asks; one `Churn` per discoverer).

Each replica a master lists is a connection, a ZooKeeper node created and
later deleted, and log lines. A master listing 30 new random addresses at
every INFO (info_every = 1, replica_grace = 5 s) kept the agent adding and
removing 10 replicas a second for as long as it ran: 2,394 added in 4
minutes, about 20 ZooKeeper writes and 30 log lines a second. Redis
Sentinel never removes a replica it was told of (until SENTINEL RESET); we
do, after the grace period, so a list that keeps changing must not be
followed at the rate it changes:

- A replica removed (not listed for the grace period) after it was listed
  for less than `FLAP_WINDOW` seconds came and went. When more than
  `FLAP_LIMIT` of one master's did within `FLAP_WINDOW`, the master is
  *flapping*: the new addresses it lists wait (refused, with the reason),
  while the replicas already watched stay as long as they are listed, as
  ever. A first listing, a scale-out or a failover adds replicas that stay:
  they never count.
- It is stable again after `FLAP_WINDOW` seconds in which every address it
  listed at each INFO was watched already or listed at its INFO before:
  then new addresses are added again, and the log says so.
- Additions, removals and refusals are logged a line each up to
  `LOGGED_PER_WINDOW` of each kind a master within `LOG_WINDOW` seconds;
  the rest are counted and said in one line at the master's first INFO
  after the window.

So a flapping master costs at most `MAX_PER_MASTER` additions and removals
before it is found out, then nothing more while it flaps, and at most 31
log lines a minute.
"""

from __future__ import annotations

from collections import deque

from twisted.logger import Logger

log = Logger()

# Replicas of one master that came and went within FLAP_WINDOW seconds,
# beyond which it is flapping.
FLAP_LIMIT = 8
# Seconds within which a replica added and removed came and went; a
# flapping master's list is stable once it settled for as long.
FLAP_WINDOW = 60.0
# Lines a master's additions, removals and refusals may each log one by
# one within LOG_WINDOW seconds.
LOGGED_PER_WINDOW = 10
LOG_WINDOW = 60.0

_KINDS = ("added", "removed", "refused")


class Churn:
    """One discoverer's replicas that came and went, and its log budget."""

    __slots__ = (
        "master",
        "flapping_since",
        "_gone_at",
        "_settled_from",
        "_log_from",
        "_logged",
        "_unlogged",
    )

    def __init__(self, master: str, now: float) -> None:
        self.master = master
        # When it started flapping, or None.
        self.flapping_since: float | None = None
        # When its replicas that came and went were removed (the latest).
        self._gone_at: deque[float] = deque(maxlen=FLAP_LIMIT + 1)
        # Since when every address it lists was known (while flapping).
        self._settled_from = now
        self._log_from = now
        # Changes logged and not logged one by one in this log window, by kind.
        self._logged = dict.fromkeys(_KINDS, 0)
        self._unlogged = dict.fromkeys(_KINDS, 0)

    @property
    def flapping(self) -> bool:
        """Whether the new addresses it lists wait."""
        return self.flapping_since is not None

    def removed(self, listed_for: float, now: float) -> None:
        """
        One of its replicas was removed after being listed for `listed_for`
        seconds: one that came and went may make the master flapping.
        """
        if listed_for >= FLAP_WINDOW or self.flapping:
            return
        gone = self._gone_at
        gone.append(now)
        if len(gone) > FLAP_LIMIT and now - gone[0] < FLAP_WINDOW:
            self.flapping_since = self._settled_from = now
            log.warn(
                "{master} lists replicas that come and go ({count} within "
                "{window:g} s): the new ones it lists are not watched until "
                "its list is stable for {window:g} s",
                master=self.master,
                count=len(gone),
                window=FLAP_WINDOW,
            )

    def listed(self, settled: bool, now: float) -> None:
        """
        At each INFO of the master: `settled` if every address it listed
        was watched already or listed at its INFO before. Ends the flapping
        after a stable window, and says what was not logged in the last
        log window.
        """
        if self.flapping:
            if not settled:
                self._settled_from = now
            elif now - self._settled_from >= FLAP_WINDOW:
                self.flapping_since = None
                self._gone_at.clear()
                log.info(
                    "{master}'s list of replicas has been stable for {window:g} s: "
                    "the new ones it lists are watched again",
                    master=self.master,
                    window=FLAP_WINDOW,
                )
        if now - self._log_from >= LOG_WINDOW:
            unlogged = self._unlogged
            if any(unlogged.values()):
                log.info(
                    "{master}: {added} more replica(s) added, {removed} removed and "
                    "{refused} refusal(s) in the last {seconds:.0f} s, not logged "
                    "one by one",
                    master=self.master,
                    seconds=now - self._log_from,
                    **unlogged,
                )
                self._unlogged = dict.fromkeys(_KINDS, 0)
            self._log_from = now
            self._logged = dict.fromkeys(_KINDS, 0)

    def may_log(self, kind: str) -> bool:
        """
        Whether a change of `kind` ("added", "removed" or "refused") gets a
        line of its own now; if not, it is counted for the summary.
        """
        if self._logged[kind] < LOGGED_PER_WINDOW:
            self._logged[kind] += 1
            return True
        self._unlogged[kind] += 1
        return False

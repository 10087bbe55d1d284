"""
How many writes may be in flight to ZooKeeper at once: as many as its link
answers within `TARGET` of the session timeout.

kazoo sends a ping after a third of the session timeout with nothing sent,
and drops the connection unless the ping is answered within another
third; the ping waits behind every byte sent before it. At 24 kbit/s, 135
writes sent at once (47 KB, at 64 a transaction) took 16 s to go through:
the ping went unanswered, the connection was dropped and the session
lost, and each new session's rewrite of every node lost it again, until
the link healed. So the window follows the time writes take to be
answered (their round trip): from their start to their end, but no
longer than ZooKeeper took to answer them, from the call's hand-over to
kazoo until kazoo's thread heard the answer, when the bridge knows it
(`sentinel.zk.ZooKeeper.round_trip`). The time the agent itself takes
to send a write or to take its answer is no narrower link: its own CPU
busy (a member's crash makes each survivor connect to a thousand
instances new to it, at 3,000 instances) or starved by other work on
the machine, every write seemed to take a second, the window shrank from
149 writes to 1, and the crashed member's nodes were made again a few at
a time, over 20 s instead of at once:

- a write answered later than `TARGET` shrinks it in proportion, once a
  round trip (the writes started before a shrink do not shrink it again):
  the writes ahead of a ping then take about `TARGET` to go through, half
  of what the ping is given;
- a write answered within half of `TARGET` while others wait for a slot
  grows it by one, so that it doubles each round trip (as TCP's slow
  start), up to its maximum (`sentinel.writes.WRITES_IN_FLIGHT`);
- a write started with none in flight (a burst after a pause, a new
  connection) finds the window cut to as many writes as went through in
  `TARGET` at the round trip of the last write answered alone: a link
  that narrowed while nothing was written is not flooded at the next
  burst.

It starts at `INITIAL`, before any write is timed. On a fast link a write
is answered in milliseconds, and the window reaches its maximum within a few
round trips of a burst's start. A write that fails is no sample, unless it
failed late (a timeout, a dropped connection), which shrinks the window.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime

# Share of the session timeout a write may take to be answered: half of
# the third kazoo gives a ping.
TARGET = 1 / 6
# Writes in flight at the start, before any is timed.
INITIAL = 8


class WriteWindow:
    """
    The writes that may be in flight (module docstring), at most
    `maximum`; `session_timeout` says the session's timeout in seconds,
    as granted.
    """

    def __init__(
        self,
        clock: IReactorTime,
        session_timeout: Callable[[], float],
        maximum: int,
        round_trip: Callable[[], float | None] = lambda: None,
    ) -> None:
        """
        @param round_trip: while a write's answer is taken, how long
            ZooKeeper took to give it, the agent's own delays left out
            (`sentinel.zk.ZooKeeper.round_trip`), if known.
        """
        self._clock = clock
        self._session_timeout = session_timeout
        self._maximum = maximum
        self._round_trip = round_trip
        self.size = float(min(INITIAL, maximum))
        # The round trip of the last write answered alone, if any.
        self.alone: float | None = None
        # When the window last shrank, and how many writes have started.
        self._shrunk_at = float("-inf")
        self._started = 0

    def room(self, in_flight: int) -> bool:
        """Whether another write may start, `in_flight` being in flight."""
        return in_flight < max(1, int(self.size))

    def start(self, in_flight: int) -> tuple[float, int, bool]:
        """
        A write starts, `in_flight` others being in flight; the token its
        end (`ended`) is given.
        """
        if in_flight == 0 and self.alone is not None and self.alone > 0:
            self.size = max(1.0, min(self.size, self._target() / self.alone))
        self._started += 1
        return self._clock.seconds(), self._started, in_flight == 0

    def ended(
        self, token: tuple[float, int, bool], answered: bool, waiting: bool
    ) -> None:
        """
        The write started with `token` ended: `answered` by ZooKeeper (not
        failed in the bridge or kazoo), with others `waiting` for a slot.
        """
        started_at, number, first = token
        took = self._clock.seconds() - started_at
        link = self._round_trip() if answered else None
        if link is not None:
            # The link's share only (module docstring).
            took = min(took, link)
        target = self._target()
        if took > target:
            if started_at >= self._shrunk_at:
                self._shrunk_at = self._clock.seconds()
                self.size = max(1.0, self.size * target / took)
        elif answered and waiting and took <= target / 2:
            self.size = min(float(self._maximum), self.size + 1)
        if answered and first and number == self._started:
            # No other write started meanwhile: this one went alone.
            self.alone = took

    def _target(self) -> float:
        return self._session_timeout() * TARGET

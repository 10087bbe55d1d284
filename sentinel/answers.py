"""
Addresses answering the agent's PINGs: the newest each answered, and when.

Many instances often share one server (a central agent watching the
names a few servers serve), and a slice sends each of them its PING in
the same turn; after a stall the agent launches the slices it missed, up
to a round, in one turn. The server answers those PINGs one after
another, in the order they came. Over TLS each costs it a decryption and
an encryption, and on a machine short of CPU the last in line waited past
its check's deadline, with the agent on time: with two agents side by
side, each watching the same 3,000 TLS instances on 3 redis-servers, both
short of CPU and stopped 40 times for 0.55 s, whole slices of healthy
instances timed out together, and 68-564 were published down a run.

A server that answered, since a PING was sent, one the agent sent before
it, and none sent at or after it, was working through the agent's own
PINGs queued ahead of it: such a timeout is inconclusive
(`sentinel.probe`), if the server answered within the last quarter of the
timeout (still at work on them, not stopped since).
A dead, hung or stopped server answers none, and is found as before; one
that answered a PING sent at or after this one has passed it by (this
connection's trouble, not the server's queue), and the timeout counts.

Only the newest PING answered per address is kept, and addresses without
an answer for `KEEP` seconds are forgotten: at most one entry per address
in use. TLS instances only: a plain PING costs the server little, and the
plain check path nothing more.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from sentinel.stalls import Address

# Seconds an answer is kept as evidence: more than a check's timeout at
# the defaults, and well beyond.
KEEP = 30.0


class Answers:
    """The newest PING each address answered: when sent, and when answered."""

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        # Per address, [sent, answered] of the newest PING answered.
        self._newest: dict[Address, list[float]] = {}
        self._pruned_at = clock.seconds()

    def __len__(self) -> int:
        return len(self._newest)

    def answered(self, address: Address, sent_at: float, now: float) -> None:
        """`address` answered, at `now`, a PING sent at `sent_at`."""
        newest = self._newest.get(address)
        if newest is None:
            self._newest[address] = [sent_at, now]
        elif sent_at >= newest[0]:
            newest[0] = sent_at
            newest[1] = now
        if now - self._pruned_at > KEEP:
            self._pruned_at = now
            self._newest = {
                known: times
                for known, times in self._newest.items()
                if now - times[1] <= KEEP
            }

    def behind_own(self, address: Address, sent_at: float, within: float) -> bool:
        """
        Whether `address` was working through the agent's PINGs queued
        ahead of one sent at `sent_at` (module docstring): it answered,
        after `sent_at` and in the last `within` seconds, one sent before
        it, and none sent at or after it.
        """
        newest = self._newest.get(address)
        if newest is None:
            return False
        sent, answered = newest
        return sent < sent_at < answered and answered > self._clock.seconds() - within

"""
A group member whose own sessions keep ending waits before it joins
again (DESIGN.md section 8, "Groups"; docs/groups.rst, "Sessions that
keep ending").

Each end of this agent's own ZooKeeper session (expired, or given up by
the client: not a clean leave, not a restart's handoff) takes every node
it made: the others make the ~100s of nodes it was primary of again
(missing 0.6-3.2 s for readers meanwhile), and back on a new session it
joins and takes them over again, a ZooKeeper write each. Behind a path
to ZooKeeper that is cut again and again, that was a third of the fleet
missing at every cut and 270-530 writes a minute for as long as it
lasted (BENCHMARKS.rst, "One member's path to ZooKeeper slow, flapping
or throttled").

So the second end within `WINDOW` of the one before (the session
between them lasted less) makes the member wait `FIRST_WAIT` before it
joins again, and each further one twice as long as the last, up to
`LONGEST_WAIT`; a first end waits for nothing, as before: one blip costs
nothing. A session that lasts `WINDOW` forgets the ends before it.
While it waits it is no member: it writes nothing in its new session
(no catalog, no agent node, no instance node, no opinion), and the
others, which took its share over at its session's end, keep it; but
the instances no other member knows, which nobody else would publish,
it publishes as a lone agent would (`sentinel.unshared`).

A wait ends early once the agent's connection to ZooKeeper has stayed
up without a break (no suspension, no loss) for `proof_after` the
session timeout: `PROOF` s at least, more than three times the longest
stretch between the cuts of the flaps measured (cuts of 2-8 s every
10-20 s, so at most 18 s up between two, and a cut is heard within
two-thirds of a session timeout), and `PROOF_TIMEOUTS` session timeouts
for slower paths: a cut must outlast the session timeout to end a
session, so a path whose cuts end sessions is up between them for a
span that grows with it. A path whose cuts come further apart is up
longer between them: the proof is also `PROOF_STRETCHES` times the
longest stretch the connection stayed up, then broke, since the row of
ends began (`HoldOff.proof`). Judged on 60 s alone, a path cut once
every 90 s was taken for healed before each cut: in the group for the
20-odd seconds before the next, its share moved out and back each time
(in the group fakes, 14 joins and 196 node moves in 20 minutes, against
5 and 77 with no proof). While the path still flaps the wait holds as
before; once it heals, the member is out for about `PROOF` s (three
times its longest stretch up, if longer), not for what is left of a
wait of up to `LONGEST_WAIT`. An end during a wait still counts, and
makes the next wait twice as long: the proof, not the wait, is what a
healed path waits for, so a longer wait costs a healed path nothing
more, and keeps one that still flaps out for longer.

Every member decides this alone, from its own sessions: what the others
read is the same, so members of any version agree. The group decides
who waits at all (`sentinel.group`): a member none of whose instances
another live member knows never waits, for nobody else would publish
them; nor, once a listing finds none of them listed (every member cut
off at once, say), or an instance of its with nobody left to publish it
(`sentinel.unshared`), does one that was waiting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

log = Logger()

# Seconds a session must last for the ends before it to be forgotten:
# longer than the longest wait, so that a path that stays cut for most
# of the time (the session living between waits only) is never taken
# for a sound one.
WINDOW = 600.0
# The wait after the second end within the window (about two of the
# group's settle times after a membership change, measured 2.7-11.6 s),
# doubled at each further end, up to the longest.
FIRST_WAIT = 10.0
LONGEST_WAIT = 300.0
# Seconds connected without a break that end a wait early, at least, and
# in session timeouts (the module docstring says why).
PROOF = 60.0
PROOF_TIMEOUTS = 6.0
# Times the longest stretch up between two breaks in the row of ends.
PROOF_STRETCHES = 3.0


def wait_after(ends: int) -> float:
    """The wait before joining again after `ends` ends in a row (0: none)."""
    if ends < 2:
        return 0.0
    return min(FIRST_WAIT * 2.0 ** (ends - 2), LONGEST_WAIT)


def proof_after(session_timeout: float) -> float:
    """Seconds connected without a break that end a wait early."""
    return max(PROOF, PROOF_TIMEOUTS * session_timeout)


class HoldOff:
    """
    The ends of this agent's own sessions, and the wait they call for
    (see the module docstring); `on_over` is called when a wait ends,
    by its time, by `connection` proving the path or by `release`, never
    after `stop`. `session_timeout` gives the session's timeout now.
    """

    def __init__(
        self,
        reactor: Any,
        on_over: Callable[[], None],
        session_timeout: Callable[[], float],
    ) -> None:
        self._reactor = reactor
        self._on_over = on_over
        self._session_timeout = session_timeout
        # Since when the connection has been up without a break (None
        # while it is not), and the call that ends the wait then.
        self._up_since: float | None = None
        self._proof_call: IDelayedCall | None = None
        # The longest stretch connected, then broken, in the row of ends.
        self._longest_up = 0.0
        # When each end in a row happened, and since when this agent has
        # taken part in the group on its current session (its start, or
        # the end of the last wait).
        self._ends: list[float] = []
        self._since = float(reactor.seconds())
        self._call: IDelayedCall | None = None
        self._until = 0.0
        # Waits begun, and cut short (`release`), since the start.
        self.waits = 0
        self.released = 0

    @property
    def holding(self) -> bool:
        """Whether this agent waits before joining again now."""
        return self._call is not None

    def remaining(self) -> float | None:
        """Seconds left of the wait under way, or None."""
        if self._call is None:
            return None
        return max(self._until - float(self._reactor.seconds()), 0.0)

    def ends(self) -> int:
        """The ends counted now: none once a session lasted `WINDOW`."""
        if self._call is None and self._lasted():
            self._forget()
        return len(self._ends)

    def _forget(self) -> None:
        self._ends.clear()
        self._longest_up = 0.0

    def _lasted(self) -> bool:
        return float(self._reactor.seconds()) - self._since >= WINDOW

    def session_ended(self) -> float:
        """
        This agent's session ended and a new one began: counted, and
        waited for as it calls for (`wait_after`). The wait, 0 for none.
        """
        now = float(self._reactor.seconds())
        if self._call is None and self._lasted():
            self._forget()
        self._ends.append(now)
        wait = wait_after(len(self._ends))
        self._cancel()
        if wait <= 0:
            self._since = now
            return 0.0
        self.waits += 1
        self._until = now + wait
        self._call = self._reactor.callLater(wait, self._over)
        # A new session is a new connection: its proof starts now.
        self._up_since = now
        self._prove()
        log.warn(
            "group: this agent's ZooKeeper session ended {ends} times in a row"
            " (each within {window:.0f} s of the one before); it waits"
            " {wait:.0f} s before it joins the group again, writing nothing"
            " meanwhile: check its path to ZooKeeper",
            ends=len(self._ends),
            window=WINDOW,
            wait=wait,
        )
        return wait

    def connection(self, up: bool) -> None:
        """
        The connection to ZooKeeper is `up` now (connected), or not
        (suspended, lost, connecting again): a break starts the proof
        again from the next connection.
        """
        if not up:
            since = self._up_since
            if since is not None and self._ends and not self._lasted():
                up_for = float(self._reactor.seconds()) - since
                self._longest_up = max(self._longest_up, up_for)
            self._up_since = None
            self._cancel_proof()
            return
        if self._up_since is None:
            self._up_since = float(self._reactor.seconds())
        self._prove()

    def _prove(self) -> None:
        """A wait under way ends once the connection has proven itself."""
        since = self._up_since
        if self._call is None or since is None or self._proof_call is not None:
            return
        at = since + self.proof()
        if at >= self._until:
            return
        delay = max(at - float(self._reactor.seconds()), 0.0)
        self._proof_call = self._reactor.callLater(delay, self._proven)

    def proof(self) -> float:
        """
        Seconds connected without a break that end a wait now: `proof_after`
        the session timeout, or `PROOF_STRETCHES` times the longest
        stretch up between breaks in the row of ends, if longer.
        """
        return max(
            proof_after(self._session_timeout()),
            PROOF_STRETCHES * self._longest_up,
        )

    def _proven(self) -> None:
        self._proof_call = None
        self.release(
            f"its connection to ZooKeeper stayed up"
            f" {self.proof():.0f} s without a break"
        )

    def release(self, why: str) -> None:
        """End the wait under way at once, if one is, saying `why`."""
        if self._call is None:
            return
        self.released += 1
        log.warn(
            "group: this agent joins the group again {left:.0f} s before the"
            " end of its wait: {why}",
            left=self.remaining(),
            why=why,
        )
        self._cancel()
        self._over()

    def reason(self, writes: str = "writes nothing") -> str | None:
        """
        The /healthz line while a wait is under way, else None; `writes`
        says what the agent writes meanwhile (`sentinel.unshared`).
        """
        left = self.remaining()
        if left is None:
            return None
        now = float(self._reactor.seconds())
        proof = self.proof()
        since = self._up_since
        early = ""
        # Named only while it may come first. One line: no "; " in it.
        if (now if since is None else since) + proof < self._until:
            so_far = (
                "not connected now" if since is None else f"{now - since:.0f} s so far"
            )
            early = f" after {proof:.0f} s connected without a break ({so_far}), or"
        return (
            f"group: this agent's ZooKeeper session ended {len(self._ends)} times"
            f" in a row, each within {WINDOW:.0f} s of the one before, so it is no"
            f" member and {writes}: it joins again{early} in {left:.0f} s"
            " (check its path to ZooKeeper)"
        )

    def stop(self) -> None:
        """No wait goes on, and none ends: the agent stops."""
        self._cancel()

    def _cancel(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        self._cancel_proof()

    def _cancel_proof(self) -> None:
        if self._proof_call is not None and self._proof_call.active():
            self._proof_call.cancel()
        self._proof_call = None

    def _over(self) -> None:
        self._call = None
        self._cancel_proof()
        self._since = float(self._reactor.seconds())
        self._on_over()

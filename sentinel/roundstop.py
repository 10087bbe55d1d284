"""
A clean stop on a session reattached to lets the first round end first.

A session inherited is backed by this process's checks only once it has
checked every instance it observes (`sentinel.handoff`): until then the
state file's ``checked_at`` stays where the previous process left it. The
checks are spread over the interval in slices, always from the first, so
processes each stopped soon after their start (a supervisor or an operator
restarting the agent again and again) each checked the same first slices
and never the others; 1.5 session timeouts after the last process that
checked them all, the next start closed the session as stale, and every
node went missing until the new session's checks wrote them again
(measured: 10 ``SIGTERM`` restarts in a row, each 0.3 s after the new
process's HTTP app answered, 50 instances: every node missing for 9-15 s,
``since`` reset). That rule is right for a crash loop that checks nothing,
and stays: only a clean stop that hands the session on waits.

So such a stop (``SIGTERM`` with a state_dir, the session to be left open
for the next process) first lets the round go on as it would have, its
slices at their pace (none launched early: a burst of thousands of checks
would wait on the agent's own CPU and count that wait as latency), until
the state file says its checks (every instance checked once, ZooKeeper
holding what they found, the file written:
`SessionHandoff.first_round_written`), then stops as before. A stop that
comes before the reattach itself (the HTTP app answers first: stopped at
once after it answered, each process of the loop above checked nothing)
waits for it too. The wait is bounded by what the rest can take, one
interval and one timeout (the round) and `REATTACH_TAKES`, and ends
`FIRST_ROUND_WAIT` after the signal at the latest: with the stop's own bounds
(`sentinel.stopping`, counted from the signal) the process still ends
within DESIGN.md's 5 s. A round not ended by then leaves the file's
``checked_at`` as it was, as before: the crash-loop rule judges it; the
stop's write of the file (`sentinel.stopping`) names the instances
checked since (`sentinel.coverage`), which the next process's round
counts (at 1,000 instances a round takes longer than the wait). A leave (``SIGUSR2``), a
twin, a process superseded by a newer one, a stop that deregisters (the
handoff blocked), a session of this process's own and a file that
already says its checks do not wait.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger

from sentinel.publisher import ZooKeeperPublisher

log = Logger()

# Seconds from the stop signal until which a stop waits for the first
# round at most. With the handoff's own wait after it (1 s at most) and the
# deregistration that may fall back to (cut to end by the stop's budget,
# 4 s from the signal), the stop ends before the backstop (4.5 s).
FIRST_ROUND_WAIT = 2.5
# Seconds allowed for the reattach itself, for a stop that comes before it:
# a connection and the session's renewal, under a second on a loaded
# machine (an agent's HTTP app answers before it).
REATTACH_TAKES = 1.0


def first_round_before_stop(
    reactor: Any, publisher: ZooKeeperPublisher, round_takes: float
) -> Deferred[None]:
    """
    Fires once the state file says the first round's checks on a session
    reattached to, or `round_takes` seconds and `REATTACH_TAKES` from now
    (and `FIRST_ROUND_WAIT` from the stop signal) at most; at once if this
    stop does not hand the session on or the file already says so.
    """
    handoff = publisher.handoff
    if handoff is None or publisher.superseded:
        return succeed(None)
    # While its claim is written the file does not hold the session yet,
    # and the stop hands it on once that write ended (`sentinel.stopping`).
    hands_on = publisher.keeps_session(False) or (
        handoff.claiming and publisher.halted is None and not publisher.leaving
    )
    if not hands_on:
        return succeed(None)
    ended = handoff.first_round_written()
    if ended.called:
        return ended
    now = reactor.seconds()
    signalled = publisher.signalled_at
    since_signal = 0.0 if signalled is None else max(0.0, now - signalled)
    bound = max(0.0, min(round_takes + REATTACH_TAKES, FIRST_ROUND_WAIT - since_signal))
    log.info(
        "stopping once every instance was checked once ({bound:.2f} s at most): "
        "the session is handed to the next process, and its nodes count as "
        "checked only then",
        bound=bound,
    )
    started = now
    ended.addTimeout(bound, reactor)

    def done(_: None) -> None:
        log.info(
            "every instance checked once, {seconds:.2f} s into the stop",
            seconds=reactor.seconds() - started,
        )

    def late(_: object) -> None:
        log.warn(
            "the first round did not end within {bound:.2f} s of the stop: "
            "the state file says the previous process's checks, and those "
            "made since (the next process's round counts them)",
            bound=bound,
        )

    return ended.addCallbacks(done, late)


class WaitingServices(MultiService):
    """
    The agent's services: a stop first waits for `before_stop` (each
    bounded by its own), then stops every child, as `MultiService` does.
    """

    def __init__(self) -> None:
        super().__init__()
        self.before_stop: list[Callable[[], Deferred[None]]] = []

    def stopService(self) -> Deferred[None]:
        waits = [wait() for wait in self.before_stop]
        waited: Deferred[Any] = gatherResults(waits, consumeErrors=True)
        waited.addErrback(lambda f: log.failure("before the stop", f))
        return waited.addCallback(lambda _: super(WaitingServices, self).stopService())

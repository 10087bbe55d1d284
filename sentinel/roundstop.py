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
every instance was checked once and the file's write that says so is
queued, then stops as before (the publisher's stop waits for that write).
The wait is bounded by what the rest of the round can take, one interval
and one timeout, and at most `FIRST_ROUND_WAIT`: with the stop's own
bounds (`sentinel.stopping`, counted from the signal) the process still
ends within DESIGN.md's 5 s. A round not ended by then leaves the file as
it was, as before: the crash-loop rule judges it. A leave (``SIGUSR2``),
a twin, a process superseded by a newer one, a stop that deregisters (the
handoff blocked), a session of this process's own and a round already
ended do not wait.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger

from sentinel.publisher import ZooKeeperPublisher

log = Logger()

# Seconds a stop waits for the first round at most: the default interval
# (1 s) and timeout (0.5 s). With the handoff's own wait (1 s at most) and
# the deregistration it may fall back to (cut to end by the stop's budget,
# 4 s from the signal), the stop ends before the backstop (4.5 s).
FIRST_ROUND_WAIT = 1.5


def first_round_before_stop(
    reactor: Any, publisher: ZooKeeperPublisher, round_takes: float
) -> Deferred[None]:
    """
    Fires once the first round on a session reattached to has ended, or
    `round_takes` seconds (at most `FIRST_ROUND_WAIT`) from now; at once if
    this stop does not hand the session on or the round already ended.
    """
    handoff = publisher.handoff
    if handoff is None or publisher.superseded or not publisher.keeps_session(False):
        return succeed(None)
    ended = handoff.first_round_written()
    if ended.called:
        return ended
    bound = min(round_takes, FIRST_ROUND_WAIT)
    log.info(
        "stopping once every instance was checked once ({bound:.2f} s at most): "
        "the session is handed to the next process, and its nodes count as "
        "checked only then",
        bound=bound,
    )
    started = reactor.seconds()
    ended.addTimeout(bound, reactor)

    def done(_: None) -> None:
        log.info(
            "every instance checked once, {seconds:.2f} s into the stop",
            seconds=reactor.seconds() - started,
        )

    def late(_: object) -> None:
        log.warn(
            "the first round did not end within {bound:.2f} s of the stop: "
            "the state file says the previous process's checks",
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

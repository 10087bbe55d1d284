"""
What the agent does to its own process: open files and the garbage collector.

This is process policy, so it is a service of its own, built by
``twistd``'s `sentinel.tap.makeService` and never by building an agent:
tests build many agents in one process, and none of them may change its
limits or its collector.

- One connection per instance: at start the open-file soft limit is raised
  to the hard limit, and a config whose instances cannot fit is refused
  with one line (a reload is checked the same way).
- Python's cyclic collector, once the connections are open, would scan
  them all on every full collection: at 3,000 instances with default gc
  settings, 40-65 % of checks timed out on healthy servers (DESIGN.md
  section 4), and none once frozen. Connections to thousands of instances
  take many rounds to open (they are paced, `sentinel.pacing`), so at
  every round after the watched instances change, for `SETTLE_ROUNDS`
  rounds and for as long as connections wait to start, the objects alive
  are frozen out of the collector without a collection (``gc.freeze`` only
  moves lists: free at any size); at the first round after that,
  everything is collected and frozen again (a full collection, about 0.7 s
  at 10,000 instances and 1.4 s at 19,000: a stall that, made while
  thousands still connect, leaves their checks inconclusive and cuts the
  pace of connecting). A change at every few rounds (a storm of reloads)
  would put that collection off for good while each round froze the
  garbage of the last change with the rest (RSS 141 to 352 MB in 30 s at
  3,000 instances, half of them swapped 3.6 times a second): after
  `MAX_UNCOLLECTED_ROUNDS` rounds frozen without one, everything is
  collected anyway, its pause given back to the checks in flight. Every
  `GC_REFREEZE_INTERVAL` the collector is thawed, run and frozen again
  (about 0.15 s of CPU at 3,000 instances): an object frozen while alive
  and dropped later, such as a lost connection, is freed within one period
  instead of being kept for the process's life.
- A ZooKeeper client replaced in an outage (`sentinel.zk`) was made at
  start and frozen with the rest: closed, it is garbage in cycles (kazoo's
  own, its connection and its client) that no collection reaches until
  the next refreeze, up to `GC_REFREEZE_INTERVAL` later. Meanwhile the new
  client and its resync of every node, once ZooKeeper is back, took fresh
  memory of Python's allocator beside it, kept for good (RSS stepped at
  the outage). So the bridge says when a replaced client's close has
  ended (`dropped`), and if a freeze came after it was made, everything
  is collected and frozen again at once, before ZooKeeper is back: at
  most once per `DROPPED_COLLECTION_GAP`, a client dropped sooner at the
  first housekeeping run after it (each replacement of a long outage
  would otherwise pause the reactor, every session timeout).
- The reactor dispatches each ready socket without Twisted's legacy log
  context (`sentinel.dispatch`): one socket is read per check. The wall
  clock is watched for steps after each poll (`sentinel.clocksteps`), on
  the epoll reactor by that dispatch, on the others twistd offers
  (``--reactor=poll|select|asyncio``) by `sentinel.dispatch.after_each_poll`.
- Each full collection's pause is given back to the checks (above), so a
  server that stopped during one is found down that much later: ``gc`` in
  ``/debug/stats`` says how many there were and how long they held the
  reactor (at load 25 on 2 cores, 0.8-2.0 s each for 73,000 objects, at
  the collection after a group's join), and whether one is still due once
  the watched instances settle, so that a late verdict can be told from a
  slow agent.
- The object count of ``/debug/stats`` is taken by the housekeeping timer,
  not per request: counting walks every object the collector tracks, and a
  client looping on that page would make the reactor walk them in a loop.
  The frozen ones are counted once after each freeze (walking them costs
  about 10 ms per million frozen objects, every 10 s): a frozen object
  freed since is still counted until the next freeze, at most
  `GC_REFREEZE_INTERVAL` later.
"""

from __future__ import annotations

import gc
import resource
import time
from collections.abc import Callable
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from sentinel.clocksteps import LOOK_INTERVAL, ClockSteps
from sentinel.descriptors import SpareDescriptors
from sentinel.dispatch import after_each_poll, lean_dispatch
from sentinel.httpd import MAX_CONNECTIONS
from sentinel.procstats import open_fds, own_process
from sentinel.resolve import MAX_LOOKUPS
from sentinel.timer import RestartingTimer

log = Logger()

# Descriptors beyond one per instance: ZooKeeper, logs, the resolver's
# sockets (sentinel.resolve.MAX_LOOKUPS), and every HTTP connection the
# agent accepts (sentinel.httpd.MAX_CONNECTIONS).
FD_RESERVE = 64 + MAX_CONNECTIONS

# Descriptors a renewal leaves free (`sentinel.descriptors`): room for
# every HTTP connection the agent accepts, every name lookup's socket
# (sentinel.resolve.MAX_LOOKUPS), and a few for ZooKeeper and an accept
# over the cap. The rest of FD_RESERVE is what renewals may hold.
RENEWAL_KEEP = MAX_CONNECTIONS + MAX_LOOKUPS + 16

# Rounds of the check loop after the watched instances change during which
# every round freezes without collecting; then (once no connection waits
# to start) everything is collected and frozen.
SETTLE_ROUNDS = 30

# Rounds frozen without a collection, whatever changes meanwhile, after
# which everything is collected and frozen anyway: at most one pause a
# minute (at the default interval) in a storm of reloads.
MAX_UNCOLLECTED_ROUNDS = 2 * SETTLE_ROUNDS

# Seconds between thawing, collecting and freezing again.
GC_REFREEZE_INTERVAL = 600.0

# Seconds at least between two full collections made for replaced
# ZooKeeper clients (module docstring): a pause of 0.7 s at 10,000
# instances at most once a minute, in the longest outage.
DROPPED_COLLECTION_GAP = 60.0

# Seconds between housekeeping runs: how fresh the object count is.
HOUSEKEEPING_INTERVAL = 10.0


def raise_fd_limit() -> int:
    """Raise the open-file soft limit to the hard limit; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def check_fd_capacity(instances: int, hard: bool = False) -> None:
    """
    Refuse with one line (SystemExit) `instances` that cannot fit the
    open-file soft limit, or with `hard`, even the hard limit.
    """
    soft_limit, hard_limit = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = hard_limit if hard else soft_limit
    needed = instances + FD_RESERVE
    if limit != resource.RLIM_INFINITY and needed > limit:
        raise SystemExit(
            f"sentinel: {instances} instances need about {needed} open files, "
            f"but the limit is {limit} (raise it: ulimit -n, or LimitNOFILE= "
            f"in the systemd unit)"
        )


def refreeze_gc() -> int:
    """
    Collect everything, frozen or not, then freeze what is left; return how
    many objects were collected.
    """
    gc.unfreeze()
    collected = gc.collect()
    gc.freeze()
    return collected


def count_gc_objects(frozen: int | None = None) -> int:
    """
    The objects the collector tracks, frozen ones included; `frozen`, when
    given, is how many are frozen (``gc.get_freeze_count`` walks every
    frozen object: about 10 ms per million).
    """
    if frozen is None:
        frozen = gc.get_freeze_count()
    return len(gc.get_objects()) + frozen


class ProcessPolicy(MultiService):
    """The open-file limit and the collector, for an agent run by twistd."""

    def __init__(
        self,
        clock: IReactorTime,
        instances: int,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """
        @param instances: how many instances the config watches at start.
        @param monotonic: times each full collection's pause: a step of the
            wall clock meanwhile is no pause (an hour's step would have held
            every check in flight for an hour).
        @raise SystemExit: (one line) when they cannot fit even the hard
            open-file limit: refused before twistd starts, with the process
            untouched.
        """
        check_fd_capacity(instances, hard=True)
        super().__init__()
        self._clock = clock
        self._monotonic = monotonic
        self._instances = instances
        self._refrozen_at: float | None = None
        # When objects were last frozen (by a refreeze or a settling round),
        # whether a replaced ZooKeeper client frozen since it was made is
        # garbage, waiting for a collection, and when the last collection
        # made for one was (`dropped`).
        self._frozen_at: float | None = None
        self._dropped_frozen = False
        self._dropped_collected_at: float | None = None
        self._settled = False
        # Rounds frozen without a collection since the last one.
        self._uncollected = 0
        self._gc_objects = 0
        # Full collections made, and the seconds they held the reactor.
        self._collections = 0
        self._paused_total = 0.0
        self._last_paused: float | None = None
        # How many objects are frozen, counted once after each freeze.
        self._frozen: int | None = None
        # Whether ready sockets are dispatched without the log context.
        self.lean_dispatch = False
        # Watches the wall clock after each poll, once given (the agent's).
        self.clock_steps: ClockSteps | None = None
        # Told how long each full collection held the reactor, once given
        # (the monitor's, whose checks in flight get that time back).
        self.paused: Callable[[float], object] | None = None
        self.housekeeping = RestartingTimer(
            "gc housekeeping", HOUSEKEEPING_INTERVAL, clock, self._housekeep
        )
        self.housekeeping.setServiceParent(self)

    def privilegedStartService(self) -> None:
        """
        Raise the open-file limit, or refuse the config with one line,
        before any service listens or connects.
        """
        raise_fd_limit()
        check_fd_capacity(self._instances)
        super().privilegedStartService()

    def startService(self) -> None:
        """
        Dispatch ready sockets the lean way (`sentinel.dispatch`), watching
        the wall clock after each poll (`sentinel.clocksteps`), then start.
        """
        # A reactor of another kind (twistd --reactor) dispatches as it
        # does, and is watched its own way.
        steps = self.clock_steps
        if steps is None:
            self.lean_dispatch = lean_dispatch(self._clock)
        else:
            self.lean_dispatch = lean_dispatch(self._clock, steps.look, LOOK_INTERVAL)
            if not self.lean_dispatch and not after_each_poll(
                self._clock, steps.look, LOOK_INTERVAL
            ):
                log.warn(
                    "steps of the wall clock are not watched on this reactor"
                    " ({reactor}): use epoll, poll, select or asyncio",
                    reactor=type(self._clock).__name__,
                )
        # psutil's handle on this process, made here, after twistd's fork
        # and while descriptors are to spare: made at its first use, it
        # could not be while the agent was out of them (`own_process`).
        own_process()
        super().startService()

    def spare_descriptors(self) -> SpareDescriptors:
        """What lets a renewal take a second descriptor, in this process."""
        # Made before twistd's fork: the process is the one counting.
        return SpareDescriptors(
            self._clock, count=lambda: open_fds(own_process()), keep=RENEWAL_KEEP
        )

    def check_capacity(self, instances: int) -> None:
        """Refuse with one line (SystemExit) a reload that cannot fit."""
        check_fd_capacity(instances)

    def watched_for(self, rounds: int, connecting: bool = False) -> None:
        """
        The check loop has watched the same instances for `rounds` rounds,
        and connections still wait to start if `connecting`: freeze what
        they made so far, and collect and freeze once they have settled.
        """
        if rounds == 1:
            self._settled = False
        if self._settled:
            return
        if rounds < SETTLE_ROUNDS or connecting:
            self._uncollected += 1
            if self._uncollected >= MAX_UNCOLLECTED_ROUNDS:
                self._refreeze()
                return
            gc.freeze()
            self._frozen = None
            self._frozen_at = self._clock.seconds()
        else:
            self._settled = True
            self._refreeze()

    def dropped(self, made_at: float) -> None:
        """
        What was made at `made_at` (the clock's seconds) is garbage now: a
        replaced ZooKeeper client, closed. If a freeze came after it was
        made, collect everything and freeze it again (module docstring):
        at once, or, within `DROPPED_COLLECTION_GAP` of the last collection
        made so, at the first housekeeping run after that.
        """
        frozen_at = self._frozen_at
        if frozen_at is None or made_at > frozen_at:
            # Never frozen: the collector's own rounds free it.
            return
        self._dropped_frozen = True
        if self._dropped_due():
            self._refreeze()

    def _dropped_due(self) -> bool:
        collected_at = self._dropped_collected_at
        return self._dropped_frozen and (
            collected_at is None
            or self._clock.seconds() - collected_at >= DROPPED_COLLECTION_GAP
        )

    def stats(self) -> dict[str, Any]:
        """
        ``gc`` in /debug/stats: the full collections made since start, the
        seconds they held the reactor in all and the last one, and whether
        one is still due once the watched instances settle.
        """
        last = self._last_paused
        return {
            "full_collections": self._collections,
            "paused_seconds": round(self._paused_total, 4),
            "last_paused_seconds": None if last is None else round(last, 4),
            "collection_due": not self._settled,
        }

    def gc_objects(self) -> int:
        """The collector's object count, as of the last housekeeping run."""
        return self._gc_objects

    def _housekeep(self) -> None:
        refrozen_at = self._refrozen_at
        if (
            refrozen_at is None
            or self._clock.seconds() - refrozen_at >= GC_REFREEZE_INTERVAL
            or self._dropped_due()
        ):
            self._refreeze()
        else:
            self._gc_objects = count_gc_objects(self._frozen_count())

    def _frozen_count(self) -> int:
        if self._frozen is None:
            self._frozen = gc.get_freeze_count()
        return self._frozen

    def _refreeze(self) -> None:
        began = self._monotonic()
        self._uncollected = 0
        if self._dropped_due():
            self._dropped_collected_at = self._clock.seconds()
        collected = refreeze_gc()
        paused = self._monotonic() - began
        self._refrozen_at = self._frozen_at = self._clock.seconds()
        self._dropped_frozen = False
        self._collections += 1
        self._paused_total += paused
        self._last_paused = paused
        if self.paused is not None:
            self.paused(paused)
        self._frozen = None
        self._gc_objects = count_gc_objects(self._frozen_count())
        # Housekeeping, several times after each start or reload, then every
        # 10 minutes: for who asks (--log-level debug), not for every log.
        log.debug(
            "{frozen} objects frozen out of the garbage collector "
            "({collected} collected in {paused:.3f} s)",
            frozen=self._frozen_count(),
            collected=collected,
            paused=paused,
        )

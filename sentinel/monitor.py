"""
The tick loop: one check per instance per tick, and nothing stops it.

Every check is a Deferred with its own deadline and errback. Checks launched
in the same tick share one deadline, so one timer per tick enforces them all
(DESIGN.md section 4 measured that cheaper than a timer per check). The
deadline is judged one reactor iteration late, after the sockets that are
already readable have been read, so that a stall of the agent itself is not
blamed on Redis. An instance whose check is still in flight is not checked
again (an overrun); an exception from one instance's check, or from our own
callbacks, is logged with the instance and touches nothing else.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

import attr
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from sentinel.config import RedisInstance
from sentinel.health import UP, InstanceHealth, Transition
from sentinel.probe import Observation
from sentinel.tracker import PendingTracker

log = Logger()

# How many recent ticks' completion times are kept for /debug/stats.
TICK_HISTORY = 600

# Ticks after start (and after a reload) at which on_settled is called:
# connections to thousands of instances take a few ticks to open.
_SETTLE_TICKS = frozenset({3, 10, 30})

# Float slack when a deadline falls exactly on a tick.
_EPSILON = 1e-6


class Probe(Protocol):
    """What the monitor needs of a probe (see `sentinel.probe.RedisProbe`)."""

    stage: str

    def check(self, want_info: bool) -> Deferred[Observation | None]: ...

    def close(self) -> None: ...


class Publisher(Protocol):
    """Where instance states go (ZooKeeper, or nowhere)."""

    def publish(self, state: InstanceState, transition: Transition | None) -> None:
        """Called after every check; `transition` is set when something changed."""

    def remove(self, name: str) -> None:
        """The instance is no longer watched."""


# Told of every recorded check: the state, the observation, the transition
# (or None) and the check's duration in seconds. Metrics and history listen.
RecordListener = Callable[
    ["InstanceState", Observation, "Transition | None", float], None
]


class NullPublisher:
    """Publishes nothing: the agent runs without ZooKeeper."""

    def publish(self, state: InstanceState, transition: Transition | None) -> None:
        pass

    def remove(self, name: str) -> None:
        pass


@attr.frozen
class Settings:
    """
    The loop's global settings. Every instance is checked once per
    `interval`; the instances are spread over `slices` launches evenly
    apart within it, so that thousands of checks do not leave at once and
    wait on the agent's own CPU (their latency would count that wait).
    """

    interval: float
    timeout: float
    rise: int
    fall: int
    info_every: int
    slices: int = 1


class InstanceState:
    """
    One watched instance: its config, probe and health, and its check in
    flight (what `PendingTracker` lists).
    """

    __slots__ = (
        "name",
        "instance",
        "probe",
        "health",
        "checks_since_info",
        "slot",
        "check",
        "started_at",
        "ended_at",
        "callback_args",
    )

    def __init__(self, instance: RedisInstance, probe: Probe, health: InstanceHealth):
        # The instance's unique name, read on every check.
        self.name = instance.name
        self.instance = instance
        self.probe = probe
        self.health = health
        self.checks_since_info = 0
        # Which of the interval's slices checks this instance.
        self.slot = 0
        # The check in flight (None between checks), when it started, and
        # when the last one ended (negative before any has).
        self.check: Deferred[Observation | None] | None = None
        self.started_at = 0.0
        self.ended_at = -1.0
        # The arguments of every check's callbacks, made once.
        self.callback_args = (self,)

    @property
    def stage(self) -> str:
        """Where the check in flight is (connect, tls, auth, ping, info)."""
        return self.probe.stage


class Monitor(Service):
    """Checks every instance each tick and hands the results on."""

    def __init__(
        self,
        clock: IReactorTime,
        settings: Settings,
        probe_factory: Callable[[RedisInstance], Probe],
        publisher: Publisher,
        tracker: PendingTracker,
        on_settled: Callable[[], None] | None = None,
    ) -> None:
        self._clock = clock
        self.settings = settings
        self._probe_factory = probe_factory
        self._publisher = publisher
        self.tracker = tracker
        self._on_settled = on_settled
        self._settle_at = _SETTLE_TICKS
        self.states: dict[str, InstanceState] = {}
        self._slices: list[list[InstanceState]] = [[] for _ in range(settings.slices)]
        self._next_slice = 0
        self._next_slot = 0
        self._round_at: float | None = None
        self._listeners: list[RecordListener] = []
        self._loop: LoopingCall | None = None
        self._deadlines: list[IDelayedCall] = []
        self.started_at: float | None = None
        self.ticks = 0
        self.overruns = 0
        # Checks recorded since start, and how many of them failed.
        self.checks = 0
        self.failures = 0
        self.last_tick_at: float | None = None
        self.tick_lag = 0.0
        self.loop_restarts = 0
        self.last_loop_error: str | None = None
        # Per tick, the time from the tick to its last answer (recent ticks).
        self.tick_completions: deque[float] = deque(maxlen=TICK_HISTORY)
        # Bound once: every check adds them to its Deferred.
        self._observed_callback = self._observed
        self._failed_errback = self._check_failed

    def add_listener(self, listener: RecordListener) -> None:
        """Call `listener` after every recorded check (see `RecordListener`)."""
        self._listeners.append(listener)

    # Instances

    def add_instance(self, instance: RedisInstance) -> None:
        """Start watching an instance from the next tick."""
        if instance.name in self.states:
            raise ValueError(f"instance {instance.name!r} is already watched")
        probe = self._probe_factory(instance)
        health = InstanceHealth(self.settings.rise, self.settings.fall)
        state = InstanceState(instance, probe, health)
        self.states[instance.name] = state
        self._assign_slot(state)

    def _assign_slot(self, state: InstanceState) -> None:
        # Round robin, so that slices stay even as instances come and go.
        state.slot = self._next_slot % len(self._slices)
        self._next_slot += 1
        self._slices[state.slot].append(state)

    def remove_instance(self, name: str) -> None:
        """Stop watching an instance: cancel its check, close, unpublish."""
        self._discard(name)
        self._publisher.remove(name)

    def replace_instance(self, instance: RedisInstance) -> None:
        """
        Watch a changed instance (address, auth, TLS) from scratch: a new
        connection and a fresh state, under the same name and node.
        """
        self._discard(instance.name)
        self.add_instance(instance)

    def _discard(self, name: str) -> None:
        state = self.states.pop(name)
        self._slices[state.slot].remove(state)
        if state.check is not None:
            state.check.cancel()
        state.probe.close()

    def update_settings(self, settings: Settings) -> None:
        """
        Apply new global settings from the next tick; instances keep their
        state, counters and connections.
        """
        old, self.settings = self.settings, settings
        for state in self.states.values():
            state.health.rise = settings.rise
            state.health.fall = settings.fall
        if settings.slices != old.slices:
            self._slices = [[] for _ in range(settings.slices)]
            self._next_slice = self._next_slot = 0
            for state in self.states.values():
                self._assign_slot(state)
        if (settings.interval, settings.slices) != (
            old.interval,
            old.slices,
        ) and self.running:
            if self._loop is not None and self._loop.running:
                self._loop.stop()
            self._start_loop(now=False)
        # New probes' objects live as long as the agent too.
        self._settle_at = frozenset(self.ticks + t for t in _SETTLE_TICKS)

    # Service

    def startService(self) -> None:
        super().startService()
        self.started_at = self._clock.seconds()
        self._start_loop(now=True)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        for call in self._deadlines:
            if call.active():
                call.cancel()
        self._deadlines = []
        for state in self.tracker:
            if state.check is not None:
                state.check.cancel()
        for state in self.states.values():
            state.probe.close()
        return None

    def _start_loop(self, now: bool) -> None:
        loop = LoopingCall.withCount(self._run_slices)
        loop.clock = self._clock
        self._loop = loop
        period = self.settings.interval / self.settings.slices
        loop.start(period, now=now).addErrback(self._loop_died)

    def _run_slices(self, elapsed: int) -> None:
        # After a stall LoopingCall reports the periods that went by: run
        # every slice they held (at most a round), so none is skipped.
        for _ in range(min(elapsed, self.settings.slices)):
            self.tick()

    def _loop_died(self, failure: Failure) -> None:
        self.loop_restarts += 1
        self.last_loop_error = failure.getErrorMessage() or repr(failure.value)
        log.failure(
            "tick loop stopped; restarting it (restart {restarts})",
            failure,
            level=LogLevel.critical,
            restarts=self.loop_restarts,
        )
        if self.running:
            self._start_loop(now=False)

    # The loop

    def tick(self) -> None:
        """
        Launch a check for every instance of the next slice whose last check
        has ended; `ticks` counts whole rounds of the slices.
        """
        now = self._clock.seconds()
        index = self._next_slice
        self._next_slice = (index + 1) % len(self._slices)
        if index == 0:
            if self._round_at is not None:
                late = now - self._round_at - self.settings.interval
                self.tick_lag = max(0.0, late)
            self._round_at = now
            self.ticks += 1
        self.last_tick_at = now
        timeout = self.settings.timeout
        due = []
        overrun = []
        last_deadline = now
        for state in list(self._slices[index]):
            if state.check is not None:
                # Still in flight (with timeout == interval its deadline falls
                # on this tick): check it again as soon as that deadline has
                # been judged, rather than skip it for a whole interval.
                self.overruns += 1
                overrun.append(state)
                last_deadline = max(last_deadline, state.started_at + timeout)
                continue
            due.append(state)
        self._start_checks(due, now)
        if overrun:
            self._deadlines.append(
                self._clock.callLater(
                    last_deadline - now, self._after_io, self._relaunch, overrun
                )
            )
        if index == 0 and self.ticks in self._settle_at and self._on_settled:
            self._on_settled()

    def _after_io(self, function: Callable[..., None], *args: object) -> None:
        # A deadline falls due in a timer, and Twisted runs timers before it
        # reads sockets that are already readable: judge one reactor turn
        # later, so that a stall of the agent itself is not blamed on Redis.
        self._prune_deadlines()
        self._deadlines.append(self._clock.callLater(0, function, *args))

    def _relaunch(self, overrun: list[InstanceState]) -> None:
        self._prune_deadlines()
        if not self.running:
            return
        now = self._clock.seconds()
        due = []
        for state in overrun:
            if self.states.get(state.name) is not state:
                continue
            check = state.check
            if check is not None:
                if now - state.started_at < self.settings.timeout - _EPSILON:
                    continue
                check.cancel()
            due.append(state)
        self._start_checks(due, now)

    def _start_checks(self, states: list[InstanceState], now: float) -> None:
        # Launch them all, then give those still in flight one deadline.
        in_flight = [state for state in states if self._launch(state, now)]
        if in_flight:
            self._deadlines.append(
                self._clock.callLater(
                    self.settings.timeout, self._after_io, self._expire, in_flight, now
                )
            )
        elif states:
            self.tick_completions.append(0.0)  # Every one ended at once.

    def _prune_deadlines(self) -> None:
        self._deadlines = [c for c in self._deadlines if c.active()]

    def _launch(self, state: InstanceState, now: float) -> bool:
        """Start a check of `state`; True if it is in flight now."""
        settings = self.settings
        want_info = (
            state.health.status != UP
            or state.checks_since_info + 1 >= settings.info_every
        )
        try:
            d = state.probe.check(want_info)
        except Exception:
            failure = Failure()
            log.failure("check of {instance} raised", failure, instance=state.name)
            self._record(state, _internal_error(failure), now, now)
            return False
        self.tracker.add(state)
        state.check = d
        state.started_at = now
        # One callback entry for both outcomes; _observed guards itself.
        args = state.callback_args
        d.addCallbacks(
            self._observed_callback,
            self._failed_errback,
            callbackArgs=args,
            errbackArgs=args,
        )
        return state.check is d

    def _expire(self, launched: list[InstanceState], started_at: float) -> None:
        # Every check launched at `started_at` that is still in flight is
        # overdue: cancel it (its errback turns that into a timeout). The
        # last of them to end gives the slice's completion time.
        self._prune_deadlines()
        last = -1.0
        for state in launched:
            if state.started_at != started_at:
                continue  # Checked again since (after an overrun).
            check = state.check
            if check is not None:
                check.cancel()
            if state.ended_at > last:
                last = state.ended_at
        if last >= 0.0:
            self.tick_completions.append(last - started_at)

    def _ended(self, state: InstanceState) -> float:
        now = self._clock.seconds()
        state.check = None
        state.ended_at = now
        self.tracker.discard(state)
        return now

    def _observed(self, observation: Observation | None, state: InstanceState) -> None:
        now = self._ended(state)
        if observation is None or self.states.get(state.name) is not state:
            return
        if not self.running:
            return
        try:
            self._record(state, observation, state.started_at, now)
        except Exception:
            # A bug of ours: the check has ended all the same.
            log.failure("recording the check of {instance} failed", instance=state.name)

    def _check_failed(self, failure: Failure, state: InstanceState) -> None:
        log.failure("check of {instance} failed", failure, instance=state.name)
        now = self._ended(state)
        if self.running and self.states.get(state.name) is state:
            self._record(state, _internal_error(failure), state.started_at, now)

    def _record(
        self,
        state: InstanceState,
        observation: Observation,
        started_at: float,
        now: float,
    ) -> None:
        self.checks += 1
        if not observation.ok:
            self.failures += 1
        health = state.health
        if observation.replication is not None:
            state.checks_since_info = 0
        else:
            state.checks_since_info += 1
        transition = health.observe(observation, now)
        if transition is not None:
            _log_transition(state, transition)
        try:
            self._publisher.publish(state, transition)
        except Exception:
            log.failure("publishing {instance} failed", instance=state.name)
        for listener in self._listeners:
            try:
                listener(state, observation, transition, now - started_at)
            except Exception:
                log.failure("check listener failed for {instance}", instance=state.name)


def _internal_error(failure: Failure) -> Observation:
    return Observation(ok=False, error=f"internal error: {failure.getErrorMessage()}")


def _log_transition(state: InstanceState, transition: Transition) -> None:
    health = state.health
    if transition.status_changed:
        log.info(
            "{instance} is {to} (was {previous}): {error}"
            if health.error
            else "{instance} is {to} (was {previous})",
            instance=state.name,
            to=transition.new_status,
            previous=transition.old_status or "unknown",
            error=health.error,
        )
    else:
        log.info(
            "{instance}: ready={ready} role={role}",
            instance=state.name,
            ready=health.ready,
            role=health.replication.role,
        )

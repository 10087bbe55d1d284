"""
The tick loop: one check per instance per tick, and nothing stops it.

Every check is a Deferred with its own deadline and errback. Checks launched
in the same tick share one deadline, judged after the sockets that are
already readable have been read (`sentinel.deadlines`), so that a stall of
the agent itself is not blamed on Redis. Instances are spread over the
interval's slices (`sentinel.slices`). An instance whose check is still in
flight is not checked again (an overrun); an exception from one instance's
check, or from our own callbacks, is a bug of ours: counted and logged
with the instance (`sentinel.bugs`), it touches nothing else; the loop
itself restarts if it ever fails (`sentinel.timer`).
A check that would decide a status directly and times out while the
operating system kept the agent waiting for a CPU says nothing
(`sentinel.runqueue`): the agent's own CPU is not Redis's failure; but
`fall` such timeouts in a row, with no answer between, are the server's,
as they are once a status is decided, and so is one of a server that owed
a reply for over the detection bound (`sentinel.probe.OWED_TIMEOUT`).
A pause the agent makes itself, a full collection of the garbage
collector (`sentinel.process`), is given back whole (`agent_paused`): to
the checks in flight (`sentinel.deadlines`), to the schedule, and to the
histories. The slices due during it are launched after it one step apart,
as they would have been, not all in the turn after it, as after a stall
the agent cannot measure: that put a whole round's launches and replies
in one reactor turn, at the CPU share of a loaded machine, where the
slices exist to spread them. The histories' deadlines (`sentinel.health`)
move with them: a collection held for longer than `stale_after` less an
interval would otherwise leave every history stale, and each instance's
next check alone would decide its status anew (at load 17-20, 1,280
instances at once after that collection; with it held 1.5 s in
`benchmarks/settlegc.py`, 450-1,500 of 1,500). A server that stopped during the pause is
still found down: `fall` failures after it, the pause later than the
detection bound.
Each recorded check goes to the health, then the publisher (a change only
as often as `sentinel.flapping` lets one instance publish them) and
listeners.

INFO replication is asked every `info_every` checks, and on every check
while the role may be moving, as Redis Sentinel does: while the instance is
not up, for `ROLE_SETTLE` seconds after its role changed, and while it is a
replica whose link to its master is not up or whose master (when watched
here too) is down. The probe adds its own reason: a role from HELLO that is
not the one of its last INFO. INFO replies also go to the INFO listeners
(replica discovery, `sentinel.topology`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Container, Mapping, Sequence
from functools import partial
from typing import Protocol

import attr
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from sentinel.bugs import InternalErrors
from sentinel.config import Config, RedisInstance
from sentinel.deadlines import DeadlineSweep
from sentinel.firstchecks import FirstChecks
from sentinel.flapping import Flapping
from sentinel.health import DOWN, UP, InstanceHealth, Transition
from sentinel.instance import InstanceState, Probe
from sentinel.observation import Observation, Replication
from sentinel.ownstalls import OwnStalls
from sentinel.probe import OWED_TIMEOUT
from sentinel.runqueue import RunQueueWait
from sentinel.slices import INSTANCES_PER_SLICE, Slices, slices_for, slices_needed
from sentinel.timer import RestartingTimer
from sentinel.tracker import InFlight, PendingTracker

log = Logger()

# How many recent slices' completion times are kept for /debug/stats.
TICK_HISTORY = 600

# At the stop, checks cancelled and probes closed a reactor turn; the rest
# in the turns after. The publisher stops in the same turn as the monitor
# (after it: `sentinel.agent`), and sends its leave only once the monitor's
# part of that turn is done: closing 2,000 probes at once took 43 ms there
# on a quiet machine, 0.16 s at 10,000, and at a load of 20 a multiple of
# it; 500 take about 8 ms, and the rest fill the turns in which the stop
# waits for ZooKeeper's answers.
STOP_CLOSES_PER_TURN = 500

# Seconds after a role change during which every check reads INFO: the new
# replica's link comes up (connect, sync, connected) within them.
ROLE_SETTLE = 60.0

# The keywords of every check's callback and errback: none, as a plain dict.
# Deferred's own default is a read-only mapping, which a call given it as
# ``**kwargs`` copies into a new dict, thousands of times a second; a dict is
# passed as it is (and never changed: each call gets its own copy).
_NO_KEYWORDS: dict[str, object] = {}


class Publisher(Protocol):
    """Where instance states go (ZooKeeper, or nowhere)."""

    def publish(self, state: InstanceState, transition: Transition | None) -> None:
        """Called after every check; `transition` is set when something changed."""

    def remove(self, name: str) -> None:
        """The instance is no longer watched."""

    def relabel(self, state: InstanceState) -> None:
        """The instance's discovery service or labels changed (a reload)."""


class Instances(Protocol):
    """
    What a reload changes: the monitor's instances, or, in a group, the
    instances the agent knows (`sentinel.group.Group`), which decides
    which of them the monitor checks.
    """

    def add_instance(self, instance: RedisInstance) -> None:
        """A new instance."""

    def remove_instance(self, name: str) -> None:
        """An instance removed."""

    def replace_instance(self, instance: RedisInstance) -> None:
        """A changed instance."""

    def relabel_instance(self, instance: RedisInstance) -> None:
        """An instance whose discovery service or labels alone changed."""

    def update_settings(self, settings: Settings) -> None:
        """New global settings."""

    def change_instances(
        self,
        removed: Sequence[str],
        changed: Sequence[RedisInstance],
        added: Sequence[RedisInstance],
    ) -> None:
        """A reload's changes, all at once."""

    def configured(self) -> Mapping[str, RedisInstance]:
        """The instances of the config it holds now, by name (none discovered)."""


# Told of every recorded check: the state, the observation, the transition
# (or None) and the check's duration in seconds. Metrics and history listen.
RecordListener = Callable[
    ["InstanceState", Observation, "Transition | None", float], None
]

# Told of every INFO replication read: the state, what INFO said, and when.
InfoListener = Callable[["InstanceState", Replication, float], None]

# Told of every instance no longer watched, by name: whatever kept
# something per instance drops it, or names come and go (replicas
# discovered from a master's INFO) and it grows for good.
RemovalListener = Callable[[str], None]


class NullPublisher:
    """Publishes nothing: the agent runs without ZooKeeper."""

    def publish(self, state: InstanceState, transition: Transition | None) -> None:
        pass

    def remove(self, name: str) -> None:
        pass

    def relabel(self, state: InstanceState) -> None:
        pass


@attr.frozen
class Settings:
    """
    The loop's global settings. Every instance is checked once per
    `interval`; the instances are spread over at most `slices` launches
    evenly apart within it, at least `slice_instances` instances to a
    slice where there are that few (`sentinel.slices`; 0: `slices`
    whatever their number).
    """

    interval: float
    timeout: float
    rise: int
    fall: int
    info_every: int
    slices: int = 1
    slice_instances: int = 0

    @classmethod
    def from_config(cls, config: Config) -> Settings:
        """The settings of `config` (at start and at each reload)."""
        return cls(
            interval=config.interval,
            timeout=config.timeout,
            rise=config.rise,
            fall=config.fall,
            info_every=config.info_every,
            slices=slices_for(config.interval),
            slice_instances=INSTANCES_PER_SLICE,
        )


class Monitor(Service):
    """Checks every instance each tick and hands the results on."""

    def __init__(
        self,
        clock: IReactorTime,
        settings: Settings,
        probe_factory: Callable[[RedisInstance], Probe],
        publisher: Publisher,
        tracker: PendingTracker,
        on_round: Callable[[int], object] | None = None,
        internal_errors: InternalErrors | None = None,
        run_queue: RunQueueWait | None = None,
    ) -> None:
        """
        @param on_round: called as each round of the slices starts, with the
            number of rounds since the watched instances last changed.
        @param internal_errors: where bugs of ours are counted (the agent's
            own, shared with ZooKeeper's side and the reloader).
        @param run_queue: the reactor thread's wait for a CPU, sampled at
            each slice's launch and closed at the stop (owned from here);
            None: no check is judged by it.
        """
        self._clock = clock
        self.settings = settings
        self._probe_factory = probe_factory
        self._publisher = publisher
        self.tracker = tracker
        self._on_round = on_round
        self._listeners: list[RecordListener] = []
        self._info_listeners: list[InfoListener] = []
        self._removal_listeners: list[RemovalListener] = []
        self._settings_listeners: list[Callable[[Settings], None]] = []
        self.states: dict[str, InstanceState] = {}
        # The watched instances by address, to find a replica's master.
        self._by_address: dict[tuple[str, int], InstanceState] = {}
        self._slices: Slices[InstanceState] = Slices(self._slices_wanted())
        # Whether the instances watched now want another cut, made as the
        # next round starts (`_fit_slices`).
        self._refit = False
        # The instances previous processes checked since the state file's
        # ``checked_at``, while this one's first round is not done
        # (`sentinel.coverage`): each slice launches the others first, so
        # that they take the first connection attempts.
        self.launch_last: Callable[[], Container[str]] | None = None
        # Per slice, the time from its launch to its last answer (recent ones).
        self.tick_completions: deque[float] = deque(maxlen=TICK_HISTORY)
        self._sweep = DeadlineSweep(clock, self.tick_completions.append)
        self.loop = RestartingTimer.with_count(
            "check loop",
            settings.interval / len(self._slices),
            clock,
            self._run_slices,
        )
        self.started_at: float | None = None
        self.last_tick_at: float | None = None
        self._round_at: float | None = None
        self._changed_at = 0
        self.ticks = 0
        self.tick_lag = 0.0
        self.tick_lag_max = 0.0
        self.overruns = 0
        # Checks recorded since start, and how many of them failed; checks
        # that ended without a look at Redis (the agent's own lateness).
        self.checks = 0
        self.failures = 0
        self.inconclusive = 0
        # Of those, timeouts that would have decided a status directly while
        # the agent waited for a CPU (`sentinel.runqueue`).
        self.starved_first_checks = 0
        self._run_queue = run_queue
        # The agent's own stalls, seen from the gaps between launches.
        self.own_stalls = OwnStalls()
        # Instances up now, and decided (up or down), kept as statuses
        # change: /debug/stats and /healthz read them at any rate, and a
        # recount is about 1-4 ms at 19,000 instances.
        self.instances_up = 0
        self.instances_decided = 0
        self.internal_errors = internal_errors or InternalErrors(clock)
        # Which changes are published now, and the instances whose wait.
        self.flapping = Flapping()
        # Statuses decided by one check, said in one line a second.
        self.first_checks = FirstChecks(clock)
        # Bound once: every check adds them to its Deferred.
        self._observed_callback = self._observed
        self._failed_errback = self._check_failed

    def add_listener(self, listener: RecordListener) -> None:
        """Call `listener` after every recorded check (see `RecordListener`)."""
        self._listeners.append(listener)

    def add_info_listener(self, listener: InfoListener) -> None:
        """Call `listener` after every check that read INFO replication."""
        self._info_listeners.append(listener)

    def add_removal_listener(self, listener: RemovalListener) -> None:
        """Call `listener` with the name of every instance no longer watched."""
        self._removal_listeners.append(listener)

    def add_settings_listener(self, listener: Callable[[Settings], None]) -> None:
        """Call `listener` with the new settings after each `update_settings`."""
        self._settings_listeners.append(listener)

    # Instances

    def add_instance(self, instance: RedisInstance) -> None:
        """
        Start watching an instance from the next tick. A configured instance
        takes the name (and node) of a discovered one; any other name
        already watched is an error.
        """
        existing = self.states.get(instance.name)
        if existing is not None:
            if instance.discovered_by is not None or not existing.discovered:
                raise ValueError(f"instance {instance.name!r} is already watched")
            self._discard(instance.name)
        probe = self._probe_factory(instance)
        settings = self.settings
        health = InstanceHealth(settings.rise, settings.fall, settings.interval)
        state = InstanceState(instance, probe, health, self._clock.seconds())
        self.states[instance.name] = state
        self._by_address.setdefault((instance.host, instance.port), state)
        self._slices.add(state)
        self._changed_at = self.ticks
        self._fit_slices()

    def remove_instance(self, name: str) -> None:
        """
        Stop watching an instance: cancel its check, close, unpublish, and
        tell the removal listeners.
        """
        self._discard(name)
        self._publisher.remove(name)
        self._tell_removed(name)

    def let_go(self, name: str) -> None:
        """
        Stop watching an instance this process never published (a group
        member's, checked provisionally before its first view): as
        `remove_instance`, but the publisher is not told to unpublish it,
        for its node, if any, is not this process's to delete (the caller
        tells the publisher what it must forget).
        """
        self._discard(name)
        self._tell_removed(name)

    def _tell_removed(self, name: str) -> None:
        for listener in self._removal_listeners:
            try:
                listener(name)
            except Exception:
                self.internal_errors.record("a removal listener", name, Failure())

    def replace_instance(self, instance: RedisInstance) -> None:
        """
        Watch a changed instance (address, auth, TLS) from scratch: a new
        connection and a fresh state, under the same name and node.
        """
        self._discard(instance.name)
        self.add_instance(instance)

    def relabel_instance(self, instance: RedisInstance) -> None:
        """
        Take an instance's new discovery service or labels, which its
        checks do not use: its state, counters and connection stay, and
        its discovery member is rewritten or moved.
        """
        state = self.states[instance.name]
        state.instance = instance
        self._publisher.relabel(state)

    def inherit(
        self,
        name: str,
        status: str,
        ready: bool,
        replication: Replication,
        checked_at: float | None = None,
    ) -> None:
        """
        Go on from the status an instance's previous primary published,
        fresh (`InstanceHealth.inherit`; `sentinel.group` decides when):
        its next check reads INFO, as a first one does, and a status that
        changed is published as after a check; `checked_at` is the
        previous verdict's check.
        """
        state = self.states.get(name)
        if state is None:
            return
        transition = state.health.inherit(
            status, ready, replication, self._clock.seconds(), checked_at
        )
        if transition is None:
            return
        self._count(transition)
        state.checks_since_info = self.settings.info_every
        if transition.old_status is None:
            # Never checked here: its node says that status already, and
            # the first check publishes what it makes of it.
            return
        log.info(
            "{instance} is {status} again, as its previous primary said: "
            "{checks} check(s) of this agent's own make no rise or fall of it",
            instance=name,
            status=status,
            checks=state.health.checks,
        )
        try:
            self._publisher.publish(state, transition)
        except Exception:
            self.internal_errors.record("publishing", name, Failure())

    def change_instances(
        self,
        removed: Sequence[str],
        changed: Sequence[RedisInstance],
        added: Sequence[RedisInstance],
    ) -> None:
        """A reload's changes: each removed, replaced or added in turn."""
        for name in removed:
            self.remove_instance(name)
        for instance in changed:
            self.replace_instance(instance)
        for instance in added:
            self.add_instance(instance)

    def configured(self) -> Mapping[str, RedisInstance]:
        """The instances it watches from the config: not discovered ones."""
        return {
            name: state.instance
            for name, state in self.states.items()
            if state.instance.discovered_by is None
        }

    def _discard(self, name: str) -> None:
        state = self.states.pop(name)
        self.flapping.forget(name)
        if state.health.status == UP:
            self.instances_up -= 1
        if state.health.status is not None:
            self.instances_decided -= 1
        address = (state.instance.host, state.instance.port)
        if self._by_address.get(address) is state:
            del self._by_address[address]
        self._slices.remove(state)
        if state.check is not None:
            state.check.cancel()
        state.probe.close()
        self._changed_at = self.ticks
        self._fit_slices()

    def update_settings(self, settings: Settings) -> None:
        """
        Apply new global settings from the next tick; instances keep their
        state, counters and connections.
        """
        old, self.settings = self.settings, settings
        retimed = settings.timeout != old.timeout
        for state in self.states.values():
            state.health.configure(settings.rise, settings.fall, settings.interval)
            if retimed:
                # What a probe derives from the timeout (a fair attempt, the
                # lateness that excuses a check, a connect's bound) follows
                # it: kept from the start, a timeout raised for a slow
                # network still cut connects at the old one.
                state.probe.retime(settings.timeout)
        if settings.interval != old.interval:
            self.loop.change_step(settings.interval / len(self._slices))
        # Cut again, if the instances or the slices allowed now want it, as
        # for instances added or removed: between two rounds, each instance
        # at its place in the round or earlier. A reload changes instances
        # first, then settings: cut at once here, mid-round, the slices of
        # every reload across a multiple of 10 instances were dealt out
        # again from the first, an instance's checks up to 1.87 s apart at
        # a 1 s interval and others checked twice in a round.
        self._fit_slices()
        for listener in self._settings_listeners:
            listener(settings)

    def _slices_wanted(self) -> int:
        settings = self.settings
        return slices_needed(
            settings.slices, len(self.states), settings.slice_instances
        )

    def _fit_slices(self) -> None:
        """
        Cut the interval for the instances watched now: at once while the
        loop does not run, else between two rounds (`_run_slices`), where
        every instance keeps its place in the round or an earlier one.
        """
        if self._slices_wanted() == len(self._slices):
            self._refit = False
        elif self.loop.running:
            self._refit = True
        else:
            self._slices.resize(self._slices_wanted())
            self.loop.change_step(self.settings.interval / len(self._slices))

    def clock_stepped(self, step: float) -> None:
        """
        The wall clock stepped by `step` seconds, and no check was missed
        for it (`sentinel.clocksteps`): each history's deadline moves with
        it, so that none is stale for a step alone, and so does since when
        each was watched, so that none is unjudged for a step alone; so do
        the agent's own stalls, so that a step is none.
        """
        self.own_stalls.clock_stepped(step)
        for state in self.states.values():
            state.health.clock_stepped(step)
            state.watched_since += step
            if state.silent_since is not None:
                state.silent_since += step

    def agent_paused(self, seconds: float) -> None:
        """
        The agent itself held the reactor for `seconds` (a full collection,
        `sentinel.process`): the checks in flight get that time back, so
        do the slices due meanwhile, and so does each instance's history
        (module docstring).
        """
        if seconds <= 0:
            return
        self._sweep.postpone(seconds)
        for state in self.states.values():
            state.health.postpone(seconds)
        # The next slice one step from now, the others after it in turn.
        self.loop.rebase()

    # Service

    def startService(self) -> None:
        super().startService()
        self.started_at = self._clock.seconds()
        self.own_stalls.restarted()
        self.loop.startService()

    def stopService(self) -> Deferred[None]:
        """
        Stop the loop, then cancel the checks in flight and close every
        probe, `STOP_CLOSES_PER_TURN` a reactor turn; fires once all are.
        """
        super().stopService()
        # Fired at once: the loop's function does not return a Deferred.
        self.loop.stopService()
        self._sweep.stop()
        self.first_checks.stop()
        if self._run_queue is not None:
            self._run_queue.close()
        in_flight = deque(state for state in self.tracker if state.check is not None)
        probes = deque(self.states.values())
        closed: Deferred[None] = Deferred()
        self._close_some(in_flight, probes, closed)
        return closed

    def _close_some(
        self,
        in_flight: deque[InFlight],
        probes: deque[InstanceState],
        closed: Deferred[None],
    ) -> None:
        # A check cancelled is recorded as nothing (the monitor is not
        # running); a probe whose instance was removed since is skipped:
        # its removal closed it.
        # One that raises (a bug of ours) is logged and the rest go on:
        # the stop waits for `closed`, which must fire.
        for _ in range(STOP_CLOSES_PER_TURN):
            try:
                if in_flight:
                    check = in_flight.popleft().check
                    if check is not None:
                        check.cancel()
                elif probes:
                    state = probes.popleft()
                    if self.states.get(state.name) is state:
                        state.probe.close()
                else:
                    closed.callback(None)
                    return
            except Exception:
                log.failure("closing a check or probe at the stop failed")
        self._clock.callLater(0, self._close_some, in_flight, probes, closed)

    def _run_slices(self, elapsed: int) -> None:
        if self._refit and self._slices.starts_round():
            # Cut again as a round starts: this slice, the first, now, the
            # others a new step apart. After a stall, the new slices whose
            # time went by with it now too, each at the time it was due, as
            # below: the round started from now would have had each slice
            # of it wait the stall again. The launch is timed by the old
            # step, which it followed.
            self._refit = False
            old = len(self._slices)
            self._slices.resize(self._slices_wanted(), keep_phase=True)
            step = self.settings.interval / len(self._slices)
            due = self.loop.due
            if due is not None:
                # The first slice's time: the loop's is the last period's.
                due -= (min(elapsed, old) - 1) * self.loop.step
            late = 0.0 if due is None else self._clock.seconds() - due
            for k in range(min(len(self._slices), 1 + int(late / step))):
                self.tick(None if due is None else due + k * step)
            self.loop.change_step(step)
            return
        # After a stall the loop reports the periods that went by: run every
        # slice they held (at most a round), so none is skipped, each at the
        # time it was due.
        runs = min(elapsed, len(self._slices))
        due = self.loop.due
        for k in range(runs):
            self.tick(None if due is None else due - (runs - 1 - k) * self.loop.step)

    # The loop

    def tick(self, scheduled_at: float | None = None) -> None:
        """
        Launch a check for every instance of the next slice whose last check
        has ended; `ticks` counts whole rounds of the slices. `scheduled_at` is
        the time the slice was scheduled for (now if not given): each check is
        judged by it where the spacing of checks matters (reconnecting, in
        `sentinel.reconnects`), so that the agent running late never makes
        checks on schedule look too close together.
        """
        now = self._clock.seconds()
        scheduled = now if scheduled_at is None else min(scheduled_at, now)
        index, members = self._slices.next()
        if index == 0:
            if self._round_at is not None:
                late = now - self._round_at - self.settings.interval
                self.tick_lag = max(0.0, late)
                self.tick_lag_max = max(self.tick_lag_max, self.tick_lag)
            self._round_at = now
            self.ticks += 1
        self.last_tick_at = now
        self.own_stalls.launched(now, self.loop.step)
        if self._run_queue is not None:
            self._run_queue.sample()
        due = []
        overrun = []
        last = None if self.launch_last is None else self.launch_last()
        if last:
            # Stable: each part in the slice's order.
            members = sorted(members, key=lambda state: state.name in last)
        for state in list(members):
            if state.check is not None:
                # Still in flight (with timeout == interval its deadline falls
                # on this tick): check it again as soon as that deadline has
                # been judged, rather than skip it for a whole interval.
                self.overruns += 1
                overrun.append(state)
                continue
            due.append(state)
        self._start_checks(due, now, scheduled)
        if overrun:
            # Relaunched with the slot they were due for, as the others were.
            relaunch = partial(self._relaunch, scheduled)
            self._sweep.when_overdue(overrun, self.settings.timeout, relaunch)
        if index == 0 and self._on_round is not None:
            self._on_round(self.ticks - self._changed_at)

    def _relaunch(self, scheduled: float, ended: list[InstanceState]) -> None:
        # Checks of the tick scheduled for `scheduled` that were still in
        # flight then: they may connect as if launched on time (the 1/s
        # rule is judged on due times, `sentinel.reconnects`).
        if not self.running:
            return
        states = self.states
        current = [state for state in ended if states.get(state.name) is state]
        self._start_checks(current, self._clock.seconds(), scheduled)

    def _start_checks(
        self, states: list[InstanceState], now: float, scheduled: float
    ) -> None:
        # Launch them all, then give those still in flight one deadline.
        if states:
            in_flight = [
                state for state in states if self._launch(state, now, scheduled)
            ]
            self._sweep.expire(in_flight, now, self.settings.timeout)

    def _launch(self, state: InstanceState, now: float, scheduled: float) -> bool:
        """
        Start a check of `state`, scheduled for `scheduled`; True if it is
        in flight now.
        """
        # The INFO cadence of the module docstring, cheapest tests first.
        health = state.health
        replication = health.replication
        want_info = (
            health.status != UP
            or state.checks_since_info + 1 >= self.settings.info_every
            or now - health.role_changed_at < ROLE_SETTLE
            or (
                replication.role == "slave"
                and (replication.master_link_status != "up" or self._master_down(state))
            )
        )
        try:
            d = state.probe.check(want_info, scheduled)
        except Exception:
            failure = Failure()
            self.internal_errors.record("starting the check", state.name, failure)
            self._record(state, _internal_error(failure), now, now)
            return False
        if d.called and d.result is None:
            # Not looked at (still waiting to connect): at start-up, most
            # instances for many rounds, so it costs nothing more.
            self._said_nothing(state, now)
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
            callbackKeywords=_NO_KEYWORDS,
            errbackArgs=args,
            errbackKeywords=_NO_KEYWORDS,
        )
        return state.check is d

    # The results

    def _master_down(self, state: InstanceState) -> bool:
        master = state.master
        return (
            master is not None
            and master.health.status == DOWN
            and self.states.get(master.name) is master
        )

    def _master_of(self, state: InstanceState) -> InstanceState | None:
        # A discovered replica's master is the one that listed it; another
        # replica's is the instance watched at the address it names.
        replication = state.health.replication
        if replication.role != "slave":
            return None
        if state.instance.discovered_by is not None:
            return self.states.get(state.instance.discovered_by)
        if replication.master_host is None or replication.master_port is None:
            return None
        return self._by_address.get((replication.master_host, replication.master_port))

    def _ended(self, state: InstanceState) -> float:
        now = self._clock.seconds()
        state.check = None
        state.ended_at = now
        self.tracker.discard(state)
        return now

    def _observed(self, observation: Observation | None, state: InstanceState) -> None:
        # As _ended, inline: this runs for every check.
        now = self._clock.seconds()
        state.check = None
        state.ended_at = now
        self.tracker.discard(state)
        if self.states.get(state.name) is not state or not self.running:
            return
        if observation is None:
            # The agent did not get to look: nothing is known, nothing changes.
            self._said_nothing(state, now)
            return
        if not observation.ok and self._starved(state, observation, now):
            return
        try:
            self._record(state, observation, state.started_at, now)
        except Exception:
            # A bug of ours: the check has ended all the same.
            self.internal_errors.record("recording the check", state.name, Failure())

    def _starved(
        self, state: InstanceState, observation: Observation, now: float
    ) -> bool:
        # Whether a failed check that would decide the status directly timed
        # out for the agent's own sake: its history made stale by the
        # agent's own stall (`sentinel.ownstalls`), or the agent waiting for
        # a CPU (`sentinel.runqueue`). Then it says nothing, and /instances
        # and /healthz say why.
        error = observation.error
        if error is None or not error.startswith("timeout"):
            return False
        health = state.health
        if health.status is not None and now <= health.stale_at:
            return False  # Rise/fall: one check does not move it.
        reason = self._stalled_reason(state, error, now)
        if reason is None:
            reason = self._cpu_short_reason(state, error, now)
        if reason is None:
            return False
        settings = self.settings
        if state.starved_timeouts + 1 >= settings.fall:
            # `fall` timeouts in a row with no answer between: the server's,
            # starved or not, as rise/fall counts them once decided.
            return False
        self.starved_first_checks += 1
        self._said_nothing(state, now)
        state.starved_timeouts += 1
        state.starved_reason = (
            f"{reason}, so it decides nothing and is checked again (put off"
            f" {state.starved_timeouts} time(s) in a row: timeout"
            f" {settings.fall} in a row decides)"
        )
        self.first_checks.starved(state.name)
        return True

    def _stalled_reason(
        self, state: InstanceState, error: str, now: float
    ) -> str | None:
        # Why the history of `state`, decided, is stale only for the
        # agent's own stalls since its last check: without them it would
        # be current, and its timeout one of `fall` (a reply owed over the
        # bound too: the stall is in that time). None if not so.
        health = state.health
        if health.status is None:
            return None
        last = health.stale_at - health.stale_after
        stalled = self.own_stalls.since(last)
        if not stalled or now - stalled > health.stale_at:
            return None
        return (
            f"the agent stalled: its check timed out ({error}) after the agent"
            f" itself stopped for {stalled:.2f} s since the last check, which"
            f" left its history stale"
        )

    def _cpu_short_reason(
        self, state: InstanceState, error: str, now: float
    ) -> str | None:
        # Why the check timed out while the agent waited for a CPU, or None.
        run_queue = self._run_queue
        if run_queue is None or error.startswith(OWED_TIMEOUT):
            return None  # Owed that long, the server's, however starved.
        timeout = self.settings.timeout
        waited = run_queue.starved_since(min(state.started_at, now - timeout), timeout)
        if waited is None:
            return None
        return (
            f"the agent's CPU was short: its check timed out ({error}) while"
            f" the agent waited {waited:.2f} s for a CPU"
        )

    def _said_nothing(self, state: InstanceState, now: float) -> None:
        # Counted, and the first such check since the last recorded one
        # dated: the instance is unjudged since then (`unjudged_since`).
        state.starved_reason = None
        self.inconclusive += 1
        silent_since = state.silent_since
        checked_at = state.health.checked_at
        if silent_since is None or (
            checked_at is not None and silent_since <= checked_at
        ):
            state.silent_since = now

    def _check_failed(self, failure: Failure, state: InstanceState) -> None:
        self.internal_errors.record("the check", state.name, failure)
        now = self._ended(state)
        if self.running and self.states.get(state.name) is state:
            self._record(state, _internal_error(failure), state.started_at, now)

    def _count(self, transition: Transition) -> None:
        """The instances up and decided, after `transition`."""
        if transition.status_changed:
            self.instances_up += (transition.new_status == UP) - (
                transition.old_status == UP
            )
            self.instances_decided += transition.old_status is None

    def _record(
        self,
        state: InstanceState,
        observation: Observation,
        started_at: float,
        now: float,
    ) -> None:
        self.checks += 1
        state.starved_timeouts = 0
        if not observation.ok:
            self.failures += 1
        health = state.health
        replication = observation.replication
        if replication is not None:
            state.checks_since_info = 0
        else:
            state.checks_since_info += 1
        status_since = health.since
        transition = health.observe(observation, now)
        published = transition
        changes = state.published_changes
        if transition is not None or (
            changes is not None and changes.held_since is not None
        ):
            published = self.flapping.publishable(state, transition, now, status_since)
        if transition is not None:
            self._count(transition)
        if transition is not None and (
            transition.anew or transition.old_status is None
        ):
            # Decided by this one check: summed up (`sentinel.firstchecks`),
            # a down one also said on its own, at debug, with its error.
            self.first_checks.decided(
                state.name, transition.new_status, transition.anew, health.stale_after
            )
            if transition.new_status == DOWN:
                _log_transition(state, transition, LogLevel.debug)
        elif transition is not None and transition.status_changed:
            # A flapping status is said once a spell (`sentinel.flapping`).
            flapping = self.flapping.status_flapping_since(state, now) is not None
            _log_transition(state, transition, LogLevel.debug if flapping else None)
        elif published is not None:
            # A change of ready or role is logged as published: one held
            # back is said once, by `sentinel.flapping`, not at every check.
            _log_transition(state, published)
        if transition is not None or replication is not None:
            state.master = self._master_of(state)
        try:
            self._publisher.publish(state, published)
        except Exception:
            self.internal_errors.record("publishing", state.name, Failure())
        for listener in self._listeners:
            try:
                listener(state, observation, transition, now - started_at)
            except Exception:
                self.internal_errors.record("a check listener", state.name, Failure())
        if replication is not None:
            for info_listener in self._info_listeners:
                try:
                    info_listener(state, replication, now)
                except Exception:
                    self.internal_errors.record(
                        "an INFO listener", state.name, Failure()
                    )


def _internal_error(failure: Failure) -> Observation:
    return Observation(ok=False, error=f"internal error: {failure.getErrorMessage()}")


def _log_transition(
    state: InstanceState, transition: Transition, level: LogLevel | None = None
) -> None:
    # Going down is what an operator must see (a warning, above the
    # default level of a quieter log); coming back up and role changes
    # are news, not trouble. A status decided by one check is logged at
    # `level` (debug), and summed up instead (`sentinel.firstchecks`).
    health = state.health
    if transition.status_changed:
        log.emit(
            level or (LogLevel.info if transition.new_status == UP else LogLevel.warn),
            "{instance} is {to} (was {previous}): {error}"
            if health.error
            else "{instance} is {to} (was {previous})",
            instance=state.name,
            to=transition.new_status,
            previous=transition.old_status or "unknown",
            error=health.error,
        )
    elif transition.anew:
        log.emit(
            level or LogLevel.info,
            "{instance} is {status} at its first check after a gap (the agent "
            "did not check it for {gap:.1f} s or more): decided anew",
            instance=state.name,
            status=transition.new_status,
            gap=health.stale_after,
        )
    else:
        log.info(
            "{instance}: ready={ready} role={role} ({error})"
            if health.error
            else "{instance}: ready={ready} role={role}",
            instance=state.name,
            ready=health.ready,
            role=health.replication.role,
            error=health.error,
        )

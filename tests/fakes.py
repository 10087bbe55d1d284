"""Test doubles for the monitor: probes, publishers and a clock driven by hand."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import Clock

from sentinel.config import RedisInstance
from sentinel.health import Transition
from sentinel.instance import InstanceState
from sentinel.monitor import Monitor, Settings
from sentinel.observation import Observation, Replication
from sentinel.runqueue import RunQueueWait
from sentinel.tracker import PendingTracker

OK = Observation(ok=True, ready=True, latency_ms=0.5)
OK_WITH_ROLE = Observation(
    ok=True, ready=True, latency_ms=0.5, replication=Replication(role="master")
)
FAILED = Observation(ok=False, error="connection refused")


class _MovedCall(DelayedCall):
    """
    A DelayedCall that says every change of its time to its clock: Twisted's
    says only those that bring it earlier (the reactor finds a call put off
    when its old time comes), though Clock orders by the time put off too.
    """

    def reset(self, secondsFromNow: float) -> None:
        super().reset(secondsFromNow)
        self.resetter(self)

    def delay(self, secondsLater: float) -> None:
        super().delay(secondsLater)
        self.resetter(self)


class SortedClock(Clock):
    """
    A Clock that puts each call it schedules in its place (a search and an
    insert) instead of sorting every pending call at each call scheduled
    and each call run, as Clock does: with thousands pending (a fleet of
    agents, `tests.groupfakes.Fleet`), those sorts were half of a test's
    time. The order is Clock's: by time, the first scheduled first among
    equal times; a call reset or delayed (`_MovedCall`) has them all sorted
    once, before the next is scheduled or run.
    """

    def __init__(self) -> None:
        super().__init__()
        self._moved = False

    def _sortCalls(self) -> None:
        if self._moved:
            self._moved = False
            super()._sortCalls()

    def _reset(self, call: DelayedCall) -> None:
        self._moved = True

    def callLater(
        self, delay: float, callable: Callable[..., object], *args: object, **kw: object
    ) -> IDelayedCall:
        call = _MovedCall(
            self.seconds() + delay,
            callable,
            args,
            kw,
            self.calls.remove,
            self._reset,
            self.seconds,
        )
        self._sortCalls()
        # After those of the same time, as Clock's stable sort puts it.
        bisect.insort_right(self.calls, call, key=DelayedCall.getTime)
        return call


class ReactorTurns(Clock):
    """
    A Clock whose `advance` is one reactor iteration: it runs only the
    timers due when it began, not those they schedule for now, so that a
    test can act between a timer and the socket reads of the same turn
    (Twisted runs expired timers first). `advance(0)` is the next turn.
    """

    def advance(self, amount: float) -> None:
        self.rightNow += amount
        due = sorted(
            (call for call in self.calls if call.getTime() <= self.rightNow),
            key=lambda call: call.getTime(),
        )
        for call in due:
            if call in self.calls:  # Not cancelled by an earlier one.
                self.calls.remove(call)
                call.called = 1
                call.func(*call.args, **call.kw)


class FakeProbe:
    """
    A probe whose checks answer with `result` at once, raise `raises`, or,
    with `hang`, stay pending until cancelled (then time out like the real
    probe does).
    """

    def __init__(self, instance: RedisInstance) -> None:
        self.instance = instance
        self.stage = "connect"
        self.address: str | None = None
        self.connected = False
        self.hello_off_until: float | None = None
        self.why_unjudged = "not checked yet"
        self.result: Observation | None = OK
        # What a check that reads INFO replication finds.
        self.replication = Replication(role="master")
        self.raises: Exception | None = None
        self.fails: Exception | None = None
        self.hang = False
        self.checks = 0
        self.info_requests = 0
        # When each check was due, as the monitor said.
        self.scheduled: list[float | None] = []
        self.in_flight: Deferred[Any] | None = None
        self.cancelled = 0
        self.closed = False
        # Each timeout a reload handed it (`retime`).
        self.timeouts: list[float] = []

    def retime(self, timeout: float) -> None:
        self.timeouts.append(timeout)

    def check(
        self, want_info: bool, scheduled: float | None = None
    ) -> Deferred[Observation | None]:
        self.checks += 1
        self.scheduled.append(scheduled)
        self.info_requests += want_info
        if self.raises is not None:
            raise self.raises
        if self.fails is not None:
            return fail(self.fails)
        if not self.hang:
            result = self.result
            if want_info and result is not None and result.ok:
                result = OK_WITH_ROLE._replace(replication=self.replication)
            return succeed(result)
        self.stage = "ping"
        d: Deferred[Any] = Deferred(self._cancelled)
        d.addErrback(lambda f: Observation(ok=False, error=f"timeout ({self.stage})"))
        self.in_flight = d
        return d

    def _cancelled(self, d: Deferred[Any]) -> None:
        self.cancelled += 1
        self.in_flight = None

    def close(self) -> None:
        self.closed = True


class RecordingPublisher:
    """Remembers every publish and removal."""

    def __init__(self) -> None:
        self.published: list[tuple[str, Transition | None]] = []
        self.removed: list[str] = []
        self.relabelled: list[str] = []

    def publish(self, state: InstanceState, transition: Transition | None) -> None:
        self.published.append((state.name, transition))

    def remove(self, name: str) -> None:
        self.removed.append(name)

    def relabel(self, state: InstanceState) -> None:
        self.relabelled.append(state.name)


def make_monitor(
    names: list[str],
    interval: float = 1.0,
    timeout: float = 0.5,
    rise: int = 2,
    fall: int = 3,
    info_every: int = 10,
    slices: int = 1,
    clock: Clock | None = None,
    run_queue: RunQueueWait | None = None,
    on_round: Callable[[int], None] | None = None,
    slice_instances: int = 0,
) -> tuple[Monitor, Clock, dict[str, FakeProbe], RecordingPublisher]:
    """
    A monitor on a Clock (`clock`, or a new one) with a `FakeProbe` per
    instance name, judging by `run_queue` if given, telling `on_round`
    each round's start.
    """
    clock = clock or Clock()
    probes: dict[str, FakeProbe] = {}

    def factory(instance: RedisInstance) -> FakeProbe:
        probes[instance.name] = FakeProbe(instance)
        return probes[instance.name]

    publisher = RecordingPublisher()
    settings = Settings(
        interval=interval,
        timeout=timeout,
        rise=rise,
        fall=fall,
        info_every=info_every,
        slices=slices,
        slice_instances=slice_instances,
    )
    monitor = Monitor(
        clock,
        settings,
        factory,
        publisher,
        PendingTracker(),
        on_round=on_round,
        run_queue=run_queue,
    )
    for i, name in enumerate(names):
        monitor.add_instance(RedisInstance(name, "127.0.0.1", 7000 + i))
    return monitor, clock, probes, publisher

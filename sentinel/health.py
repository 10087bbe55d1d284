"""
Per-instance rise/fall hysteresis and the instance's last known state.

The first observation sets the status directly; after that, `rise`
successes or `fall` failures in a row change it (as nerve and Kubernetes
probes do). Checks in a row are checks an interval apart: a history with
no check for longer than the hysteresis itself takes (`stale_after`: the
agent frozen, its session gone and others publishing meanwhile) is no
evidence of now. Until the next check it is not `current` (nothing is
published from it), and that check sets the status directly, as a first
one does; a member back from a freeze otherwise published a dead instance
up again, on one failure out of `fall`.

Each check sets the deadline (`stale_at`) by the schedule it ran under: a
reload that shortens the interval does not make a check on the old
schedule stale, and one that lengthens it moves the last check's deadline
to the new schedule, on which the next check comes. The deadline is on the
reactor's clock, the wall clock; a step of it, which misses no check, moves
the deadline with it (`clock_stepped`, from `sentinel.clocksteps`).

A status can also be inherited (`inherit`): the verdict an instance's
previous primary published, fresh, taken over with its node in a group.
A takeover is no news of the instance, so that verdict, not this agent's
first check, is where its rise/fall starts: one failed check (the new
primary busy connecting hundreds of instances at once, say) published a
healthy instance down, and readers dropped it until `rise` checks later.
A dead instance still goes down within `fall` checks of the new primary.

A status decided directly is not `settled` until the checks that
follow confirm it (`fall` failures, `rise` successes): in a group, an
observer's opinion says so, and an unsettled down one makes no down
verdict while the verdict is fresh and up (`sentinel.verdict`).

Role fields come from the last INFO replication and are cleared when the
instance goes down, so that nobody reads a stale role; when one known
role follows another, `role_changed_at` says when. Why that INFO left
the role unknown (refused, say) is kept with it and is part of `error` for
as long as the role it explains, so every check says the same until an INFO
reads a role (a change of it is a change of the role, worth publishing). An
instance whose drain key exists is `draining`: up, not ready, and not to be
discovered.
"""

from __future__ import annotations

import math

import attr

from sentinel.observation import Observation, Replication

UP = "up"
DOWN = "down"


@attr.frozen
class Transition:
    """A change of status, ready flag or role worth publishing at once."""

    status_changed: bool
    old_status: str | None
    new_status: str
    # Decided anew, after a gap in the checks (`InstanceHealth.stale_after`):
    # worth writing again even if nothing changed.
    anew: bool = False


_UNKNOWN_ROLE = Replication(role=None)


class InstanceHealth:
    """Everything observed about one instance, and its decided status."""

    # One per instance: slots, not a dictionary's worth of room per health.
    __slots__ = (
        "rise",
        "fall",
        "interval",
        "stale_after",
        "stale_at",
        "status",
        "ready",
        "replication",
        "latency_ms",
        "error",
        "since",
        "changes",
        "checked_at",
        "backed_at",
        "consecutive_successes",
        "consecutive_failures",
        "checks",
        "failures",
        "draining",
        "role_changed_at",
    )

    def __init__(self, rise: int, fall: int, interval: float | None = None) -> None:
        """
        @param interval: seconds between two checks of the instance; None
            if they come when they come, and no gap makes the history stale.
        """
        self.status: str | None = None
        self.ready = False
        self.replication = _UNKNOWN_ROLE
        self.latency_ms: float | None = None
        self.error: str | None = None
        self.since: float | None = None
        # How often the status was decided since it was last decided
        # directly: 1 after the first observation, and after one that
        # follows a stale history.
        self.changes = 0
        self.checked_at: float | None = None
        # When a check last found what the status says (a success while
        # up, a failure while down), or, for a status inherited, when the
        # previous process's last check did (`unbacked_since`).
        self.backed_at: float | None = None
        # When the history goes stale: `stale_after` past the last check.
        self.stale_at = math.inf
        self.consecutive_successes = 0
        self.consecutive_failures = 0
        self.checks = 0
        self.failures = 0
        # Whether the last check found the drain key (only while up).
        self.draining = False
        # When the role last changed from one known role to another.
        self.role_changed_at = -math.inf
        self.configure(rise, fall, interval)

    def configure(self, rise: int, fall: int, interval: float | None) -> None:
        """
        Take new settings, from the next check on. The last check keeps the
        deadline it was given (`stale_at`), or gets the new schedule's if
        that is later: the next check comes on the new schedule, and after
        a reload lengthening the interval from 1 s to 20 s, 238 of 300
        instances were otherwise decided anew on that one check, each a
        line saying the agent had missed their checks.

        `stale_after` is the seconds without a check after which the
        history is stale: one interval more than the longer of `rise` and
        `fall` checks take (the extra one for a check's own timeout and the
        slices' spread). Past it, had the agent been looking, its
        hysteresis would have decided anew.
        """
        self.rise = rise
        self.fall = fall
        self.interval = interval
        # Kept, not worked out at each check: thousands a second.
        self.stale_after = (
            math.inf if interval is None else (max(rise, fall) + 1) * interval
        )
        if self.checked_at is not None:
            self.stale_at = max(self.stale_at, self.checked_at + self.stale_after)

    def current(self, now: float) -> bool:
        """Whether there is a status, decided on checks that are not stale."""
        return self.status is not None and now <= self.stale_at

    @property
    def settled(self) -> bool:
        """
        Whether the status rests on the hysteresis: moved by it, or, if
        decided directly (a first check, one after a stale history, or
        inherited), confirmed since by `fall` failures or `rise`
        successes in a row. One check alone is not: the agent's own
        trouble (a connect timed out while it joins) fails it as well.
        """
        if self.changes > 1:
            return True
        if self.status == DOWN:
            return self.consecutive_failures >= self.fall
        return self.status == UP and self.consecutive_successes >= self.rise

    def clock_stepped(self, step: float) -> None:
        """
        The wall clock stepped by `step` seconds (signed), and no check was
        missed for it: the deadline moves with the clock.
        """
        self.stale_at += step

    def postpone(self, seconds: float) -> None:
        """
        The agent itself held the reactor for `seconds` (a full collection,
        `sentinel.process`): it did not look for that long, and its
        checks come that much later (`sentinel.monitor`), so the history's
        deadline moves as much. Had it been looking, its hysteresis would
        have needed as many checks as ever.
        """
        self.stale_at += seconds

    def keep_since(self, status: str, since: float) -> None:
        """
        Follow what the node said when this process got it: `status`
        since `since`, published by the previous process (on the session
        this one inherited) or by the instance's previous primary, and
        seen last by readers. Nothing is taken from a `since` after the
        last check (a clock ahead of ours).

        - The same status, decided directly (by this process's first
          observation, or anew after a stale history) and unchanged since,
          or since a time later than this process found it: `since` is
          kept (a restart or a new primary is not a change of status).
        - Another status, since a time later than this process found its
          own: the change readers see dates from the last check, not from
          before the one the node said.

        A member that checked an instance before it took its node over
        otherwise dated it back to its own first check, erasing a change
        its previous primary had published meanwhile.
        """
        checked_at = self.checked_at
        if checked_at is None or self.since is None or not 0 < since <= checked_at:
            return
        if status == self.status:
            if self.changes == 1 or since > self.since:
                self.since = since
        elif since > self.since:
            self.since = checked_at

    def inherit(
        self,
        status: str,
        ready: bool,
        replication: Replication,
        now: float,
        checked_at: float | None = None,
    ) -> Transition | None:
        """
        Take `status` (with `ready` and the role, if up) as the status
        this agent's own checks go on from: what the instance's previous
        primary decided, fresh (`sentinel.group` judges that). Return the
        `Transition` if the status changed.

        Before any check, the status is set as the previous verdict says,
        and the checks that follow move it by `rise` and `fall` only, as
        if this agent had been checking all along. After checks of its
        own that are fewer than the `fall` (or `rise`) that would have
        moved the previous verdict, their status, decided directly by the
        first of them, gives way to it: replayed from it, they change
        nothing. Checks of its own that agree, or that are that many, or
        a history gone stale (the next check decides anew) keep theirs.
        Either way the status is taken as decided directly (`changes`):
        the node's ``since`` stays (`keep_since`). A status taken dates
        from `checked_at`, the previous verdict's check, as far as
        `unbacked_since` goes: this process's checks that contradict it
        go on from it.
        """
        old_status = self.status
        if old_status is not None:
            needed = self.fall if status == UP else self.rise
            if old_status == status or self.checks >= needed or now > self.stale_at:
                return None
        else:
            # Lapses as a history of its own would, if no check follows.
            self.stale_at = now + self.stale_after
        self.status = status
        self.since = now
        self.changes = 1
        self.draining = False
        self.backed_at = checked_at
        if status == UP:
            self.ready = ready
            self.replication = replication
        else:
            self.ready = False
            self.replication = _UNKNOWN_ROLE
        return Transition(status_changed=True, old_status=old_status, new_status=status)

    @property
    def unbacked_since(self) -> float | None:
        """
        While the checks since the last one that found what the status
        says all found the contrary (failures while ``up``, fewer than
        `fall`; successes while ``down``, fewer than `rise`): when that
        last one was (for a status inherited, the previous process's,
        `inherit`); else None. Such checks are no evidence of the status:
        they renew neither the node's ``checked_at``
        (`published_checked_at`) nor the state file's (`sentinel.unbacked`).
        Before, each process of a crash loop failed fewer than `fall`
        checks of a killed Redis, went on from the ``up`` its node said,
        and wrote it ``up`` again with a fresh ``checked_at``: published
        up for as long as the loop went on; and, the mirror, a Redis
        started again stayed published ``down``, freshly checked, on
        fewer than `rise` successes in each process.
        """
        if self.status == UP:
            contrary = self.consecutive_failures
        elif self.status == DOWN:
            contrary = self.consecutive_successes
        else:
            return None
        return self.backed_at if contrary else None

    @property
    def published_checked_at(self) -> float | None:
        """The ``checked_at`` the node says: the last check that bore it out."""
        unbacked = self.unbacked_since
        return self.checked_at if unbacked is None else unbacked

    def observe(self, observation: Observation, now: float) -> Transition | None:
        """
        Take one check's outcome; return a `Transition` when the status,
        the ready flag or the role changed, or the status was decided anew
        after a stale history, else None.
        """
        anew = now > self.stale_at
        if anew:
            # No evidence of now in a row: start the counts again.
            self.consecutive_successes = 0
            self.consecutive_failures = 0
        elif (
            observation.ok
            and self.status == UP
            and observation.ready == self.ready
            and (
                observation.replication is None
                # INFO read the role it read last time (a master that lists
                # no replica: the same object): nothing to keep anew.
                or observation.replication is self.replication
                or observation.replication == self.replication
            )
            and observation.draining == self.draining
        ):
            # The common case, thousands a second: up, and still up.
            self.checks += 1
            self.checked_at = self.backed_at = now
            self.stale_at = now + self.stale_after
            self.latency_ms = observation.latency_ms
            role_error = self.replication.error
            self.error = (
                observation.error
                if role_error is None
                else _joined(observation.error, role_error)
            )
            self.consecutive_successes += 1
            self.consecutive_failures = 0
            return None
        self.checks += 1
        self.checked_at = now
        self.stale_at = now + self.stale_after
        self.latency_ms = observation.latency_ms
        if observation.ok:
            self.consecutive_successes += 1
            self.consecutive_failures = 0
        else:
            self.failures += 1
            self.consecutive_failures += 1
            self.consecutive_successes = 0

        old_status = self.status
        old_ready, old_replication = self.ready, self.replication
        if old_status is None or anew:
            new_status = UP if observation.ok else DOWN
        elif old_status == DOWN and self.consecutive_successes >= self.rise:
            new_status = UP
        elif old_status == UP and self.consecutive_failures >= self.fall:
            new_status = DOWN
        else:
            new_status = old_status

        if observation.ok == (new_status == UP):
            self.backed_at = now
        if new_status != old_status:
            self.status = new_status
            self.since = now
            self.changes += 1
        if anew:
            # Decided as a first observation is: whatever happened in the
            # gap, this process did not see it (`keep_since`).
            self.changes = 1
        if new_status == UP:
            if observation.ok:
                self.ready = observation.ready
                self.draining = observation.draining
                if observation.replication is not None:
                    self.replication = observation.replication
        else:
            self.ready = False
            self.draining = False
            self.replication = _UNKNOWN_ROLE
        self.error = _joined(observation.error, self.replication.error)
        role, old_role = self.replication.role, old_replication.role
        if role != old_role and role is not None and old_role is not None:
            self.role_changed_at = now

        if (
            anew
            or new_status != old_status
            or self.ready != old_ready
            or self.replication != old_replication
        ):
            return Transition(
                status_changed=new_status != old_status,
                old_status=old_status,
                new_status=new_status,
                anew=anew,
            )
        return None


def _joined(error: str | None, role_error: str | None) -> str | None:
    """A check's error and why the role is unknown, as one error."""
    if role_error is None:
        return error
    return role_error if error is None else f"{error}; {role_error}"

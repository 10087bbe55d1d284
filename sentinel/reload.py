"""
SIGHUP reloads the ``--config`` file, hitlessly (as nerve does); one
that came while the agent started (`sentinel.signals`) makes one reload
once this service starts.

Added instances are checked from the next tick; removed ones stop, their
connection closes and their node goes; changed ones (address, auth, TLS)
start again from a fresh state under the same node; unchanged ones keep
their state, counters and connection, and so do those whose discovery
service or labels alone changed (relabelled), their discovery member
rewritten or moved to the new service. Global settings apply from the next
tick. Command-line options still override the file. A file that does not
load is logged with its one-line reason and the running config stays.

A loaded config is applied whole or not at all: everything that can refuse
it (the file limit, the loop's settings) is worked out before anything
changes. Should applying it still fail midway, that is a bug of ours
(`sentinel.bugs`: ``/healthz`` fails): the reloader then takes what runs,
instance by instance, as the config the next reload is compared with, so
that an instance the failed reload removed comes back at the next one, and
one it added goes.

Loading (waiting for the config file to keep still, `sentinel.settling`;
reading the files, parsing, validating) runs on a thread of the
reloader's own, never on the reactor thread, and never in the reactor's
thread pool: a read stuck there would stall name resolution, and twistd's
exit joins that pool's threads. The loaded config is applied on the reactor
thread. One load runs at a time: a SIGHUP during a load is coalesced into
one more load when it ends, so a stuck load never stacks threads. Loads
start at most once every `LOAD_SPACING` seconds: a SIGHUP sooner after
the last load started waits for the rest of that second, with every other
SIGHUP meanwhile. A first SIGHUP after a quiet second loads at once, and
the last of a storm is always followed by a load that reads the file
after it; but a storm (SIGHUP sent in a loop, hundreds a second) no
longer applies configs back to back: alternating between two configs
that differ by 200 of 2,000 instances, it applied 3.4 a second, each
closing and opening 200 connections and nodes, and held a tick up to
2.5 s. Each file
read has its own deadline (`sentinel.files`); `LOAD_DEADLINE` is the
backstop for the whole load, after which the reload is refused and the
load's late result, if it ever comes, is dropped.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from functools import partial
from types import FrameType
from typing import Any, TypeVar

import attr
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from sentinel.bugs import InternalErrors
from sentinel.config import (
    Config,
    ConfigError,
    RedisInstance,
    tell_empty,
    tell_replaced,
)
from sentinel.monitor import Instances, Settings
from sentinel.signals import StartSignals

log = Logger()

# Settings that only a restart applies: the HTTP listener, the agent's
# identity, where and how it publishes, where it looks names up, where it
# keeps its ZooKeeper session, and what every probe sends and how long it
# keeps a connection.
_RESTART_ONLY = (
    "http",
    "agent_id",
    "zookeeper",
    "dns",
    "state_dir",
    "role_signal",
    "reconnect_every",
)
# A table's fields whose TOML key is another name.
_TOML_NAMES = {"quorum_setting": "quorum", "watch_writes_setting": "watch_writes"}

# Seconds a whole load may take: well above parsing the largest config
# file allowed (16 MiB, about 5 s of CPU here) on a busy agent, and above
# one file read's deadline.
LOAD_DEADLINE = 60.0

# Seconds from the start of one load to the start of the next, at least:
# a config's changes are applied once a second at most, whatever the rate
# of SIGHUPs.
LOAD_SPACING = 1.0

_T = TypeVar("_T")


def in_own_thread(reactor: Any, work: Callable[[], _T]) -> Deferred[_T]:
    """
    Run `work` on a new daemon thread; the Deferred fires on the reactor
    thread with its result or failure, when the thread ends. Cancelling the
    Deferred ends it at once and drops the late result.
    """
    done: Deferred[_T] = Deferred()

    def deliver(outcome: _T | Failure) -> None:
        if done.called:
            return
        if isinstance(outcome, Failure):
            done.errback(outcome)
        else:
            done.callback(outcome)

    def run() -> None:
        try:
            outcome: _T | Failure = work()
        except BaseException:
            outcome = Failure()
        reactor.callFromThread(deliver, outcome)

    threading.Thread(target=run, name="sentinel-config-load", daemon=True).start()
    return done


class ConfigReloader(Service):
    """
    Loads the config again on SIGHUP, off the reactor thread, and applies it
    to the running monitor (see the module docstring).

    `last_reload_ok` says whether the last load was applied (True from
    start, with the config the agent started with), `last_reload_at` when
    a config was last applied (epoch seconds; the start at first),
    `reloads` how many were applied and `last_error` why the last one was
    refused.
    """

    def __init__(
        self,
        reactor: Any,
        load: Callable[[], Config],
        monitor: Instances,
        config: Config,
        check_capacity: Callable[[int], object],
        install_signal: bool = True,
        run_in_thread: Callable[[Callable[[], Config]], Deferred[Config]] | None = None,
        on_applied: Callable[[Config], object] | None = None,
        start_signals: StartSignals | None = None,
        internal_errors: InternalErrors | None = None,
    ) -> None:
        """
        @param load: loads the config; blocks, so it runs on
            C{run_in_thread} (L{in_own_thread} by default).
        @param check_capacity: raises L{SystemExit} if the instances
            of a new config cannot fit in the open-file limit.
        @param on_applied: told of each config once it is applied (the
            resolver then forgets the names no instance uses any more).
        @param start_signals: what noted the SIGHUPs that came before this
            service started (`sentinel.signals`).
        @param internal_errors: where a reload that fails while applied
            is counted (the monitor's, so that ``/healthz`` shows it).
        """
        self._reactor = reactor
        self._load = load
        self._monitor = monitor
        self.config = config
        self._started_with = config
        # The restart-only settings the file applied last changes from
        # those the agent runs with, as ``key old -> new``.
        self.restart_pending: list[str] = []
        self._check_capacity = check_capacity
        self._on_applied = on_applied
        self._install_signal = install_signal
        self._start_signals = start_signals
        self._internal_errors = internal_errors or InternalErrors(reactor)
        self._run_in_thread = run_in_thread or partial(in_own_thread, reactor)
        self._previous_handler: Any = None
        self.reloads = 0
        self.last_error: str | None = None
        self.last_reload_ok = True
        self.last_reload_at: float = reactor.seconds()
        # The load running now, its deadline (None once overdue), and
        # whether a SIGHUP came during it.
        self._loading: Deferred[Config] | None = None
        self._load_started = 0.0
        self._deadline: IDelayedCall | None = None
        self._again = False
        # The load waiting for its turn (LOAD_SPACING), and when the next
        # one may start.
        self._paced: IDelayedCall | None = None
        self._next_load_at = 0.0

    def startService(self) -> None:
        super().startService()
        if self._install_signal:
            self._previous_handler = signal.signal(signal.SIGHUP, self._hangup)
        start = self._start_signals
        if start is not None and (early := start.take(signal.SIGHUP)):
            log.info(
                "SIGHUP during start-up: loading the config again, as it may "
                "have changed after it was read",
                count=early,
            )
            self.reload()

    def stopService(self) -> None:
        super().stopService()
        if self._install_signal:
            signal.signal(signal.SIGHUP, self._previous_handler or signal.SIG_DFL)
        self._again = False
        if self._paced is not None:
            self._paced.cancel()
            self._paced = None
        if self._loading is not None:
            self._loading.cancel()

    def _hangup(self, signum: int, frame: FrameType | None) -> None:
        # In a signal handler: only hand over to the reactor.
        self._reactor.callFromThread(self.reload)

    def reload(self) -> None:
        """
        Load the config again on a thread and apply it when loaded; keep the
        running config on error. During a load, ask for one more after it
        (said once per load); within `LOAD_SPACING` of the last load's
        start, load when that time is up.
        """
        if self._paced is not None:
            return  # The load waiting will read the file after this SIGHUP.
        if self._loading is not None:
            if not self._again:
                log.info(
                    "reload: the load started {seconds:.0f} s ago has not "
                    "ended; one more follows when it does",
                    seconds=self._reactor.seconds() - self._load_started,
                )
            self._again = True
            return
        self._again = False
        # Bounded: a wall clock stepped back must not put a load off.
        wait = min(self._next_load_at - self._reactor.seconds(), LOAD_SPACING)
        if wait > 0:
            self._paced = self._reactor.callLater(wait, self._paced_load)
            return
        self._start_load()

    def _paced_load(self) -> None:
        self._paced = None
        self._start_load()

    def _start_load(self) -> None:
        self._load_started = self._reactor.seconds()
        self._next_load_at = self._load_started + LOAD_SPACING
        self._deadline = self._reactor.callLater(LOAD_DEADLINE, self._overdue)
        loading = self._run_in_thread(self._load)
        self._loading = loading
        loading.addBoth(self._loaded)
        loading.addErrback(
            lambda failure: log.failure("applying a reload failed", failure)
        )

    def _overdue(self) -> None:
        self._deadline = None
        self._refused(
            f"the config was not loaded within {LOAD_DEADLINE:g} s; "
            "a new load waits for this one to end"
        )

    def _loaded(self, outcome: Config | Failure) -> None:
        self._loading = None
        deadline, self._deadline = self._deadline, None
        if deadline is not None:
            deadline.cancel()
        try:
            if not self.running:
                return
            if deadline is None:
                log.warn("reload: a load ended after its deadline; result dropped")
            else:
                self._use(outcome)
        finally:
            if self._again and self.running:
                self.reload()

    def _use(self, outcome: Config | Failure) -> None:
        if isinstance(outcome, Failure):
            if outcome.check(ConfigError):
                self._refused(outcome.getErrorMessage())
            else:
                log.failure("loading the config for a reload failed", outcome)
                self._refused(repr(outcome.value))
            return
        try:
            self._check_capacity(len(outcome.instances))
        except SystemExit as e:
            self._refused(str(e.code))
            return
        self.apply(outcome)

    def _refused(self, reason: str) -> None:
        self.last_error = reason
        self.last_reload_ok = False
        log.error("reload refused, the running config stays: {reason}", reason=reason)

    def apply(self, new: Config) -> None:
        """Apply `new` over the running config (see the module docstring)."""
        old, monitor = self.config, self._monitor
        pending = restart_only_changes(self._started_with, new)
        if pending:
            log.warn(
                "reload: {changes}: this takes a restart, and until then "
                "the agent runs with the values it started with",
                changes="; ".join(pending),
            )
        new = _keep_restart_only(new, old)
        try:
            settings = Settings.from_config(new)
        except Exception:
            # The config's checks should have refused it: a bug of ours.
            failure = Failure()
            self._internal_errors.record("applying a reload's settings", None, failure)
            self._refused(f"its settings cannot be applied: {failure.value!r}")
            return
        before = {i.name: i for i in old.instances}
        after = {i.name: i for i in new.instances}
        removed = [n for n in before if n not in after]
        added = [n for n in after if n not in before]
        differ = [n for n in after if n in before and after[n] != before[n]]
        relabelled = [n for n in differ if _relabelled(before[n], after[n])]
        changed = [n for n in differ if n not in relabelled]
        try:
            for name in relabelled:
                monitor.relabel_instance(after[name])
            monitor.change_instances(
                removed, [after[n] for n in changed], [after[n] for n in added]
            )
            monitor.update_settings(settings)
        except Exception:
            self._failed_midway(Failure())
            return
        self.config = new
        self.restart_pending = pending
        self.reloads += 1
        self.last_error = None
        self.last_reload_ok = True
        self.last_reload_at = self._reactor.seconds()
        settings_changed = _settings_changed(old, new)
        log.info(
            "reloaded: {added} added, {removed} removed, {changed} changed, "
            "{kept} unchanged, {relabelled} relabelled in place; {settings}",
            added=len(added),
            removed=len(removed),
            changed=len(changed),
            kept=len(after) - len(added) - len(differ),
            relabelled=len(relabelled),
            settings=", ".join(settings_changed) or "no global setting changed",
        )
        tell_replaced(log, new)
        tell_empty(log, new, reloadable=True)
        self._tell_applied(new)

    def _failed_midway(self, failure: Failure) -> None:
        """
        Applying a reload failed after it changed something: what runs is
        the config from now on (module docstring).
        """
        self._internal_errors.record("applying a reload", None, failure)
        running = self._monitor.configured()
        self.config = attr.evolve(self.config, instances=tuple(running.values()))
        self.last_error = f"applying it failed midway: {failure.value!r}"
        self.last_reload_ok = False
        log.error(
            "reload failed midway (a bug of ours); the agent runs {count} "
            "instance(s) now, and the next reload starts from them: {reason}",
            count=len(running),
            reason=self.last_error,
        )
        self._tell_applied(self.config)

    def _tell_applied(self, config: Config) -> None:
        if self._on_applied is not None:
            try:
                self._on_applied(config)
            except Exception:
                log.failure("after the reload")


def _relabelled(old: RedisInstance, new: RedisInstance) -> bool:
    """
    Whether `new` differs from `old` only in what discovery publishes of it
    (its service, its labels), which no check uses.
    """
    return attr.evolve(new, service=old.service, labels=old.labels) == old


def _settings_changed(old: Config, new: Config) -> list[str]:
    """
    Each global setting a reload applies that `new` changes, as ``key old
    -> new``: the instances are counted apart, and the restart-only
    settings are kept and warned of.
    """
    return [
        f"{field.name} {getattr(old, field.name)!r} -> {getattr(new, field.name)!r}"
        for field in attr.fields(Config)
        if field.name not in ("instances", "replaced_instances")
        and field.name not in _RESTART_ONLY
        and getattr(new, field.name) != getattr(old, field.name)
    ]


def restart_only_changes(running: Config, new: Config) -> list[str]:
    """
    Each restart-only setting `new` changes from `running`, as ``key old
    -> new``, a table's (``zookeeper``, ``dns``) key by key. The ZooKeeper
    identity read from ``auth_file`` is never shown.
    """
    changes = []
    for key in _RESTART_ONLY:
        before, after = getattr(running, key), getattr(new, key)
        if before == after:
            continue
        if not attr.has(type(before if before is not None else after)):
            changes.append(f"{key} {before!r} -> {after!r}")
            continue
        if before is None or after is None:
            changes.append(f"[{key}] {'added' if before is None else 'removed'}")
            continue
        for field in attr.fields(type(before)):
            was, now = getattr(before, field.name), getattr(after, field.name)
            if was == now:
                continue
            if field.name == "auth":
                changes.append(f"{key}.auth_file's identity")
            else:
                name = _TOML_NAMES.get(field.name, field.name)
                changes.append(f"{key}.{name} {was!r} -> {now!r}")
    return changes


def _keep_restart_only(new: Config, old: Config) -> Config:
    return attr.evolve(new, **{key: getattr(old, key) for key in _RESTART_ONLY})

"""
The composition root: turns a `Config` into the agent's running services.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Mapping
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from sentinel.backstop import StopBackstop
from sentinel.bugs import InternalErrors
from sentinel.clocksteps import ClockSteps
from sentinel.config import Config, RedisInstance, tell_empty, tell_replaced
from sentinel.documents import agent_document
from sentinel.freshness import Freshness
from sentinel.group import Group
from sentinel.handoff import SessionHandoff
from sentinel.httpd import http_service
from sentinel.metrics import LoadedAtStart
from sentinel.monitor import Instances, Monitor, NullPublisher, Publisher, Settings
from sentinel.output import LogOutput
from sentinel.pacing import ConnectPacer
from sentinel.privatefiles import FileWorker
from sentinel.probe import HelloOff, RedisProbe, owed_after
from sentinel.process import ProcessPolicy, check_fd_capacity, count_gc_objects
from sentinel.publisher import ZooKeeperPublisher
from sentinel.readers import warn_of_long_listings
from sentinel.reload import ConfigReloader
from sentinel.resolve import Resolver
from sentinel.resumes import Resumes
from sentinel.roundstop import WaitingServices, first_round_before_stop
from sentinel.runqueue import RunQueueWait
from sentinel.session import StateFile, StoredSession, session_left, session_purpose
from sentinel.shutdown import EXIT_TWIN, StopSignals, stop, stop_with_status
from sentinel.signals import WHY_NO_CONFIG, WHY_USR1, StartSignals, UnusedSignals
from sentinel.startup import StartupReport
from sentinel.timer import RestartingTimer
from sentinel.topology import Topology, watched_hosts
from sentinel.tracker import PendingTracker
from sentinel.web import StatsSource
from sentinel.zk import ZooKeeper

log = Logger()

# Connection attempts in flight at once (each holds a socket while it
# connects); how fast they start follows the agent's own CPU
# (`sentinel.pacing`).
CONNECTS_IN_FLIGHT = 200


def _make_publisher(
    config: Config,
    reactor: Any,
    agent_node: Callable[[], dict[str, Any]],
    watched: Callable[[], Mapping[str, RedisInstance]],
    left: StoredSession | str | None,
    internal_errors: InternalErrors,
) -> ZooKeeperPublisher:
    zk_config = config.zookeeper
    assert zk_config is not None
    zk = ZooKeeper(
        reactor,
        zk_config.hosts,
        zk_config.session_timeout,
        auth=zk_config.auth,
        call_timeout=max(zk_config.session_timeout, 5.0),
        internal_errors=internal_errors,
        check_ensemble=True,
    )
    handoff = None
    if config.state_dir is not None and left is not None:
        state_file = StateFile(config.state_dir, FileWorker(reactor))
        handoff = SessionHandoff(
            reactor,
            state_file,
            session_purpose(config),
            left,
            session_timeout=zk_config.session_timeout,
        )
    discovery = None
    if zk_config.discovery != "none":
        discovery = (zk_config.discovery, zk_config.discovery_root)
    return ZooKeeperPublisher(
        reactor,
        zk,
        zk_config.root,
        config.agent_id,
        zk_config.refresh,
        zk_config.heartbeat,
        agent_node,
        on_twin=lambda line: stop_with_status(reactor, EXIT_TWIN),
        watched=watched,
        discovery=discovery,
        handoff=handoff,
        watch_writes=zk_config.watch_writes,
        # Replaced by a newer process on purpose: a clean end, status 0.
        on_superseded=lambda line: stop(reactor),
    )


def make_agent(
    config: Config,
    reload: Callable[[], Config] | None,
    reactor: Any,
    *,
    process: ProcessPolicy | None = None,
    left: StoredSession | str | None = None,
    start_signals: StartSignals | None = None,
    log_output: LogOutput | None = None,
    http_label: str = "http",
) -> MultiService:
    """
    Build the agent's services from `config`: `process` when given (first,
    so that the open-file limit is checked before anything listens), the
    name resolver (``"resolver"``), the publisher (``"publisher"``, with
    ZooKeeper), the monitor (``"monitor"``), the config reloader
    (``"reloader"``, when `reload` loads the config file again) and the
    HTTP server. Without `process`, nothing changes the process's limits or
    its garbage collector, nor handles signals (tests build many agents in
    one process). With a state_dir, `left` is what `session_left` found
    (read here if not given). `start_signals` noted the signals that came
    while the process started (`sentinel.signals`). `log_output` is the
    process's standard output, when it goes through `sentinel.output`
    (its stats and metrics are shown). `http_label` names the HTTP
    endpoint's field in the line that says it cannot be listened on.
    """
    descriptors = None if process is None else process.spare_descriptors()
    pacer = ConnectPacer(reactor, CONNECTS_IN_FLIGHT, config.timeout, descriptors)
    resolver = Resolver.from_config(reactor, config.dns, config.timeout)
    hello_off = HelloOff()

    def owed_bound() -> float:
        # Of the settings in force: a reload changes them.
        settings = monitor.settings
        return owed_after(settings.interval, settings.fall, settings.timeout)

    def probe_for(instance: RedisInstance) -> RedisProbe:
        # The timeout in force: an instance a reload adds after one that
        # changed it takes the new one, as the others do (`retime`).
        return RedisProbe(
            instance,
            reactor,
            pacer,
            monitor.settings.timeout,
            resolver,
            role_signal=config.role_signal,
            hello_off=hello_off,
            reconnect_every=config.reconnect_every,
            owed_bound=owed_bound,
        )

    started_at = reactor.seconds()

    # Written at every heartbeat, from the monitor and group built below.
    def agent_node() -> dict[str, Any]:
        instances: list[str] | dict[str, Any] = sorted(monitor.states)
        if group is not None and zookeeper is not None:
            instances = zookeeper.listed_instances(group.known)
        return agent_document(
            config.agent_id,
            started_at,
            reactor.seconds(),
            monitor.settings.interval,
            instances,
        )

    top = WaitingServices()
    # Bugs of ours, wherever met: one count, one reason on /healthz.
    internal_errors = InternalErrors(reactor)
    tasks: list[RestartingTimer] = []
    stats_sources: dict[str, StatsSource] = {}
    if process is not None:
        process.setServiceParent(top)
        tasks.append(process.housekeeping)
        process.clock_steps = ClockSteps(reactor, lambda: tasks)
        stats_sources["clock"] = process.clock_steps.stats
        stats_sources["gc"] = process.stats
    # Before the probes' users, so stopped after them: their lookups and
    # connection attempts end with their own checks, and the rest when
    # these stop.
    resolver.setName("resolver")
    resolver.setServiceParent(top)
    pacer.setName("connects")
    pacer.setServiceParent(top)
    publisher: Publisher = NullPublisher()
    zookeeper = None
    if config.zookeeper is not None:
        warn_of_long_listings(config.zookeeper, config.instances)
        if left is None:
            left = session_left(config)
        zookeeper = _make_publisher(
            config,
            reactor,
            agent_node,
            # In a group, every instance known: the group decides which
            # nodes an inherited session keeps, not what is checked yet.
            lambda: (
                group.known
                if group is not None
                else {name: s.instance for name, s in monitor.states.items()}
            ),
            left,
            internal_errors,
        )
        # Added before the monitor, so stopped after it: the last states
        # are published, then the nodes deleted and the session closed, or
        # (with a state_dir) the session left open for the next process.
        zookeeper.setName("publisher")
        zookeeper.setServiceParent(top)
        publisher = zookeeper
        tasks.append(zookeeper.heartbeat_timer)
        if process is not None:
            # A replaced client frozen with the rest is collected before
            # ZooKeeper is back (`sentinel.process`).
            zookeeper.zk.replaced_closed = process.dropped

    def settle(rounds: int) -> None:
        assert process is not None
        process.watched_for(rounds, connecting=pacer.waiting > 0)

    monitor = Monitor(
        reactor,
        Settings.from_config(config),
        probe_for,
        publisher,
        PendingTracker(),
        on_round=None if process is None else settle,
        internal_errors=internal_errors,
        run_queue=RunQueueWait(reactor),
    )
    tasks.append(monitor.loop)
    monitor.add_settings_listener(lambda settings: pacer.retime(settings.timeout))
    if process is not None:
        assert process.clock_steps is not None
        process.clock_steps.moved = monitor.clock_stepped
        process.paused = monitor.agent_paused
        leave = None if zookeeper is None else zookeeper.leave
        backstop = StopBackstop(
            None if zookeeper is None else zookeeper.zk.close_from_thread,
            lambda leaving: zookeeper is not None and zookeeper.keeps_session(leaving),
        )
        backstop.setServiceParent(top)
        StopSignals(
            reactor,
            leave,
            start_signals,
            signalled=lambda at: None if zookeeper is None else zookeeper.signalled(at),
            backstop=backstop,
        ).setServiceParent(top)
        unused = [(signal.SIGUSR1, WHY_USR1)]
        if reload is None:
            unused.append((signal.SIGHUP, WHY_NO_CONFIG))
        UnusedSignals(reactor, unused, start_signals).setServiceParent(top)
    # With ZooKeeper the group says what this agent observes (sentinel.group);
    # without, it checks every instance it knows.
    group: Group | None = None
    known: Instances = monitor
    if zookeeper is not None and config.zookeeper is not None:
        group = Group(
            reactor,
            zookeeper,
            monitor,
            config.zookeeper,
            config.agent_id,
            config.instances,
        )
        known = group
    else:
        for instance in config.instances:
            monitor.add_instance(instance)
    if zookeeper is not None and zookeeper.handoff is not None:
        # A session inherited is backed by checks once each was checked.
        zookeeper.handoff.observed = lambda: monitor.states
        # The instances the previous processes checked go last.
        handoff = zookeeper.handoff
        monitor.launch_last = lambda: handoff.carried
        publishing = zookeeper

        def first_round() -> Deferred[None]:
            # Before the monitor stops: the rest of the round, at its pace.
            settings = monitor.settings
            return first_round_before_stop(
                reactor, publishing, settings.interval + settings.timeout
            )

        top.before_stop.append(first_round)
    monitor.setName("monitor")
    monitor.setServiceParent(top)
    freshness = Freshness(reactor, lambda: monitor.states, lambda: monitor.settings)
    # After a pause of its own, the agent's session is unconfirmed until
    # ZooKeeper is heard from again (sentinel.resumes).
    resumes = None
    if zookeeper is not None:
        resumes = Resumes(
            reactor, zookeeper.zk, zookeeper.root, lambda: monitor.settings.interval
        )
        monitor.own_stalls.noticed = resumes.stalled
        stats_sources["resumes"] = resumes.stats
    freshness.timer.setServiceParent(top)
    tasks.append(freshness.timer)
    check_capacity = check_fd_capacity if process is None else process.check_capacity

    def fits(instances: int) -> bool:
        try:
            check_capacity(instances)
        except SystemExit:
            return False
        return True

    topology = Topology(monitor, fits, resolver)
    topology.configure(config)

    def applied(new: Config) -> None:
        # Discovered replicas follow the config, then the resolver keeps
        # the names of every instance watched, discovered ones included.
        topology.configure(new)
        resolver.retain(watched_hosts(monitor.states.values()))
        if new.zookeeper is not None:
            warn_of_long_listings(new.zookeeper, new.instances)
        if zookeeper is not None:
            # Its interval is the new config's from now on.
            zookeeper.agent_node_changed()

    def reload_fits(instances: int) -> None:
        # The replicas discovered so far need their connections too.
        check_capacity(instances + topology.watched)

    if reload is not None:
        reloader = ConfigReloader(
            reactor,
            reload,
            known,
            config,
            reload_fits,
            on_applied=applied,
            start_signals=start_signals,
            internal_errors=internal_errors,
        )
        reloader.setName("reloader")
        reloader.setServiceParent(top)

    if config.http != "none":
        startup = StartupReport(monitor, pacer)
        http_service(
            config.http,
            reactor,
            monitor,
            agent_id=config.agent_id,
            reload=reloader if reload is not None else LoadedAtStart(started_at),
            zookeeper=zookeeper,
            gc_objects=count_gc_objects if process is None else process.gc_objects,
            health_checks=[
                *(task.unhealthy_reason for task in tasks),
                *([] if resumes is None else [resumes.unhealthy_reason]),
                freshness.unhealthy_reason,
                internal_errors.unhealthy_reason,
                pacer.sockets.unhealthy_reason,
            ],
            stats_sources={
                **stats_sources,
                "tasks": lambda: {task.name: task.stats() for task in tasks},
                "dns": resolver.stats,
                "discovery": topology.stats,
                "startup": startup.stats,
                "freshness": freshness.stats,
                "internal_errors": internal_errors.stats,
                "sockets": pacer.sockets.stats,
                "hello_off": hello_off.stats,
                "flapping": lambda: monitor.flapping.stats(reactor.seconds()),
            },
            group=group,
            health_details={
                "starting": startup.progress,
                **(
                    {
                        "handoff": zookeeper.handoff.health_detail,
                        "session": zookeeper.handoff.session_detail,
                    }
                    if zookeeper is not None and zookeeper.handoff is not None
                    else {}
                ),
            },
            log_output=log_output,
            label=http_label,
        ).setServiceParent(top)
    log.info(
        "watching {count} instance(s) every {interval} s, timeout {timeout} s",
        count=len(config.instances),
        interval=config.interval,
        timeout=config.timeout,
    )
    tell_replaced(log, config)
    tell_empty(log, config, reloadable=reload is not None)
    return top

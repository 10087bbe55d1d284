"""
The composition root: turns a `Config` into the agent's running services.
"""

from __future__ import annotations

import gc
import resource
from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.application.service import MultiService
from twisted.internet.defer import DeferredSemaphore
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger, LogLevel
from twisted.web.server import Site

from sentinel.config import Config, RedisInstance
from sentinel.documents import agent_document
from sentinel.history import CheckHistory
from sentinel.metrics import AgentMetrics
from sentinel.monitor import Monitor, NullPublisher, Publisher, Settings
from sentinel.probe import RedisProbe
from sentinel.publisher import ZooKeeperPublisher
from sentinel.reload import ConfigReloader
from sentinel.resolve import Resolver
from sentinel.shutdown import EXIT_TWIN, stop_with_status
from sentinel.timer import RestartingTimer
from sentinel.tracker import PendingTracker
from sentinel.web import StatusApp
from sentinel.zk import ZooKeeper

log = Logger()

# Connection attempts in flight at once: enough to connect thousands of
# instances within a few ticks, few enough that a mass reconnect cannot
# starve the checks of connected instances of CPU.
CONNECTS_IN_FLIGHT = 200

# Seconds between thawing, collecting and freezing again (see refreeze_gc):
# about 0.15 s of CPU at 3,000 instances.
GC_REFREEZE_INTERVAL = 600.0

# Descriptors beyond one per instance: ZooKeeper, HTTP clients, logs,
# the resolver's sockets (sentinel.resolve.MAX_LOOKUPS).
FD_RESERVE = 64


def raise_fd_limit(instances: int) -> int:
    """
    Raise the open-file soft limit to the hard limit; refuse with a clear
    line (SystemExit) when `instances` connections cannot fit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    needed = instances + FD_RESERVE
    if needed > soft:
        raise SystemExit(
            f"sentinel: {instances} instances need about {needed} open files, "
            f"but the limit is {soft} (raise it: ulimit -n, or LimitNOFILE= "
            f"in the systemd unit)"
        )
    return soft


def refreeze_gc() -> int:
    """
    Collect everything, frozen or not, then freeze what is left; return how
    many objects were collected.

    After start-up, the connections' objects live as long as the agent:
    frozen, the cyclic collector no longer scans them on every collection.
    But an object frozen while alive that later becomes cyclic garbage (a
    connection lost, a check in flight at the time) is never collected
    while frozen: thawing first frees it, so that garbage is bounded by one
    period, not kept for the process's life.
    """
    gc.unfreeze()
    collected = gc.collect()
    gc.freeze()
    return collected


def _refreeze(level: LogLevel) -> None:
    collected = refreeze_gc()
    log.emit(
        level,
        "{frozen} objects frozen out of the garbage collector ({collected} collected)",
        frozen=gc.get_freeze_count(),
        collected=collected,
    )


# A few ticks after start and reload, said at info; every
# GC_REFREEZE_INTERVAL, at debug.
_settled = partial(_refreeze, LogLevel.info)
_refreeze_periodically = partial(_refreeze, LogLevel.debug)


class HTTPService(StreamServerEndpointService):
    """The HTTP listener; a port that cannot be bound ends start-up in one line."""

    def __init__(self, description: str, reactor: Any, site: Site) -> None:
        super().__init__(serverFromString(reactor, description), site)
        self.description = description
        self._raiseSynchronously = True

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            raise SystemExit(
                f"sentinel: http: cannot listen on {self.description}: {e.socketError}"
            ) from None


class StatusSite(Site):
    """A Site that does not log every request: scrapes would drown the log."""

    noisy = False

    def log(self, request: object) -> None:
        pass


def _make_publisher(
    config: Config, reactor: Any, agent_node: Callable[[], dict[str, Any]]
) -> ZooKeeperPublisher:
    zk_config = config.zookeeper
    assert zk_config is not None
    zk = ZooKeeper(
        reactor,
        zk_config.hosts,
        zk_config.session_timeout,
        auth=zk_config.auth,
        call_timeout=max(zk_config.session_timeout, 5.0),
    )
    return ZooKeeperPublisher(
        reactor,
        zk,
        zk_config.root,
        config.agent_id,
        zk_config.refresh,
        zk_config.heartbeat,
        agent_node,
        on_twin=lambda line: stop_with_status(reactor, EXIT_TWIN),
    )


def make_agent(
    config: Config,
    reload: Callable[[], Config] | None,
    reactor: Any,
    freeze_gc: bool = True,
) -> MultiService:
    """
    Build the agent's services from `config`: the publisher (named
    ``"publisher"``, with ZooKeeper), the monitor (``"monitor"``), the
    config reloader (``"reloader"``, when `reload` loads the config file
    again) and the HTTP server. `freeze_gc` freezes start-up objects out of
    the cyclic collector after a few ticks, and thaws, collects and freezes
    again every `GC_REFREEZE_INTERVAL` (tests in one process turn it off).
    """
    raise_fd_limit(len(config.instances))
    slots = DeferredSemaphore(CONNECTS_IN_FLIGHT)
    resolver = Resolver.from_config(reactor, config.dns, config.timeout)
    connect_timeout = max(config.timeout, 1.0)

    def probe_for(instance: RedisInstance) -> RedisProbe:
        return RedisProbe(instance, reactor, slots, connect_timeout, resolver)

    started_at = reactor.seconds()

    # Written at every heartbeat, from the monitor built below.
    def agent_node() -> dict[str, Any]:
        return agent_document(
            config.agent_id,
            started_at,
            reactor.seconds(),
            monitor.settings.interval,
            sorted(monitor.states),
        )

    top = MultiService()
    tasks: list[RestartingTimer] = []
    publisher: Publisher = NullPublisher()
    zookeeper = None
    if config.zookeeper is not None:
        zookeeper = _make_publisher(config, reactor, agent_node)
        # Added before the monitor, so stopped after it: the last states
        # are published, then the nodes deleted and the session closed.
        zookeeper.setName("publisher")
        zookeeper.setServiceParent(top)
        publisher = zookeeper
    monitor = Monitor(
        reactor,
        Settings.from_config(config),
        probe_for,
        publisher,
        PendingTracker(),
        on_settled=_settled if freeze_gc else None,
    )
    tasks.append(monitor.loop)
    for instance in config.instances:
        monitor.add_instance(instance)
    monitor.setName("monitor")
    monitor.setServiceParent(top)
    if freeze_gc:
        refreeze = TimerService(GC_REFREEZE_INTERVAL, _refreeze_periodically)
        refreeze.clock = reactor
        refreeze.setServiceParent(top)
    if reload is not None:
        reloader = ConfigReloader(reactor, reload, monitor, config, raise_fd_limit)
        reloader.setName("reloader")
        reloader.setServiceParent(top)

    if config.http != "none":
        metrics = AgentMetrics(monitor, zookeeper)
        status = StatusApp(
            monitor,
            reactor,
            [task.unhealthy_reason for task in tasks],
            metrics=metrics.registry,
            agent_id=config.agent_id,
        )
        history = CheckHistory()
        monitor.add_listener(history.record)
        status.show_on_page(history, None if zookeeper is None else zookeeper.stats)
        status.add_stats("tasks", lambda: {task.name: task.stats() for task in tasks})
        if zookeeper is not None:
            status.add_health_check(zookeeper.unhealthy_reason)
            status.add_stats("zookeeper", zookeeper.stats)
        site = StatusSite(status.app.resource())
        HTTPService(config.http, reactor, site).setServiceParent(top)
    log.info(
        "watching {count} instance(s) every {interval} s, timeout {timeout} s",
        count=len(config.instances),
        interval=config.interval,
        timeout=config.timeout,
    )
    return top

"""
The HTTP server around the app: what an HTTP client may cost the agent.

- An idle connection is closed after `IDLE_TIMEOUT`, set here rather than
  left to Twisted's default (12 hours in older releases); an answer whose
  client stops reading is dropped after as long (`sentinel.streaming`),
  since Twisted suspends the idle timeout while an answer is written.
- At most `MAX_CONNECTIONS` at once. Every connection is an open file, like
  every Redis connection: the agent counts them in its open-file reserve
  (`sentinel.agent.FD_RESERVE`), and closes a connection beyond them as soon
  as it is accepted, so that HTTP clients, however many, are refused before
  a check is. 64: a Prometheus or two (one kept-alive connection each), a
  few people with the page open (a browser opens up to 6), scripts and
  health probes, with room to spare; 64 descriptors and, with every client
  reading nothing, a few MB of buffers.
- No route reads a request body: one is never spooled to disk, and one
  longer than `MAX_BODY_BYTES` closes the connection.
- No access log: scrapes would drown the agent's log.

`http_service` is the one call the composition root makes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from io import BytesIO
from typing import Any

from twisted.application import strports
from twisted.application.service import MultiService
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.web.server import Request, Site

from sentinel.group import Group, GroupMetrics
from sentinel.history import CheckHistory
from sentinel.metrics import AgentMetrics, ReloadOutcome
from sentinel.monitor import Monitor
from sentinel.publisher import ZooKeeperPublisher
from sentinel.streaming import Slicer
from sentinel.web import HealthCheck, StatsSource, StatusApp

log = Logger()

IDLE_TIMEOUT = 60.0
MAX_CONNECTIONS = 64
MAX_BODY_BYTES = 64 * 1024
# Seconds between two log lines about refused connections.
REFUSED_LOG_INTERVAL = 60.0


class BoundedRequest(Request):
    """A request whose body is kept in memory, and only up to `MAX_BODY_BYTES`."""

    body_length = 0

    def gotLength(self, length: int | None) -> None:
        # Twisted spools a body of unknown or large length to a temporary
        # file: an open file and disk space per request.
        self.content = BytesIO()
        if length is not None and length > MAX_BODY_BYTES:
            self._too_long()

    def handleContentChunk(self, data: bytes) -> None:
        self.body_length += len(data)
        if self.body_length > MAX_BODY_BYTES:
            self._too_long()
            return
        super().handleContentChunk(data)

    def _too_long(self) -> None:
        log.info(
            "an HTTP request body over {limit} bytes: connection closed",
            limit=MAX_BODY_BYTES,
        )
        transport: Any = self.channel.transport
        transport.abortConnection()


class StatusSite(Site):
    """The app's site: idle connections time out, no access log."""

    noisy = False
    requestFactory = BoundedRequest

    def __init__(self, resource: Any, reactor: IReactorTime) -> None:
        super().__init__(resource, timeout=IDLE_TIMEOUT, reactor=reactor)

    def log(self, request: object) -> None:
        pass


class ConnectionLimit(WrappingFactory):
    """
    At most `limit` connections to the wrapped factory at once; one more is
    closed as it is accepted (it never gets an HTTP answer, and holds a
    descriptor for no longer than the accept).
    """

    noisy = False

    def __init__(self, factory: Site, limit: int, clock: IReactorTime) -> None:
        super().__init__(factory)
        self.limit = limit
        self.refused = 0
        self._clock = clock
        self._logged_at: float | None = None

    def buildProtocol(self, addr: IAddress | None) -> ProtocolWrapper | None:  # type: ignore[override]
        if len(self.protocols) < self.limit:
            return super().buildProtocol(addr)
        self.refused += 1
        now = self._clock.seconds()
        if self._logged_at is None or now - self._logged_at >= REFUSED_LOG_INTERVAL:
            self._logged_at = now
            log.warn(
                "HTTP connection from {peer} refused: {open} open, the most "
                "allowed ({refused} refused so far)",
                peer=str(addr),
                open=len(self.protocols),
                refused=self.refused,
            )
        return None

    def stats(self) -> dict[str, int]:
        """Open and refused connections, for ``/debug/stats``."""
        return {
            "connections": len(self.protocols),
            "max_connections": self.limit,
            "refused_connections": self.refused,
        }


class HTTPServer(MultiService):
    """
    The listener (`strports.service`): a port that cannot be bound ends
    start-up with one line and a non-zero status.
    """

    def __init__(self, description: str, factory: ConnectionLimit, reactor: Any):
        super().__init__()
        self.description = description
        self.factory = factory
        strports.service(description, factory, reactor=reactor).setServiceParent(self)

    def privilegedStartService(self) -> None:
        try:
            super().privilegedStartService()
        except CannotListenError as e:
            raise SystemExit(
                f"sentinel: http: cannot listen on {self.description}: {e.socketError}"
            ) from None


def http_service(
    description: str,
    reactor: Any,
    monitor: Monitor,
    *,
    agent_id: str,
    reload: ReloadOutcome,
    zookeeper: ZooKeeperPublisher | None,
    gc_objects: Callable[[], int],
    health_checks: Sequence[HealthCheck] = (),
    stats_sources: Mapping[str, StatsSource] | None = None,
    group: Group | None = None,
    health_details: Mapping[str, StatsSource] | None = None,
) -> HTTPServer:
    """
    The agent's HTTP part, listening on `description` (a strports string):
    the app with its metrics, check history and ZooKeeper's health and
    stats, the `health_checks`, `stats_sources` and `health_details` of
    the rest of the agent, and its `group` (``/group``, its health and
    metrics; see `sentinel.web.StatusApp`).
    """
    history = CheckHistory()
    monitor.add_listener(history.record)
    slicer = Slicer(reactor)

    def http_stats() -> dict[str, Any]:
        # `factory` wraps the app's site, so it comes after the app.
        return {**factory.stats(), **slicer.stats()}

    stats: dict[str, StatsSource] = {**(stats_sources or {}), "http": http_stats}
    checks = list(health_checks)
    if zookeeper is not None:
        stats["zookeeper"] = zookeeper.stats
        checks.append(zookeeper.unhealthy_reason)
    if group is not None:
        checks.append(group.unhealthy_reason)
    app = StatusApp(
        monitor=monitor,
        reactor=reactor,
        agent_id=agent_id,
        gc_objects=gc_objects,
        metrics=AgentMetrics(
            monitor,
            reload,
            zookeeper,
            # The app is made just below; the gauge asks it at each scrape.
            unhealthy_reasons=lambda: app.unhealthy_reasons(),
        ),
        history=history,
        zookeeper_stats=None if zookeeper is None else zookeeper.stats,
        health_checks=checks,
        stats_sources=stats,
        health_details=health_details or {},
        slicer=slicer,
        group=group,
    )
    if group is not None and app.metrics is not None:
        app.metrics.registry.register(GroupMetrics(group))
    factory = ConnectionLimit(
        StatusSite(app.resource(), reactor), MAX_CONNECTIONS, reactor
    )
    return HTTPServer(description, factory, reactor)

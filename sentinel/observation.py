"""
What one check of a Redis instance observed: the values the probe hands to
health, history, metrics and the monitor.

Kept apart from the probe so that those modules read them without loading
the Redis protocol, Twisted's endpoints or OpenSSL.
"""

from __future__ import annotations

from typing import NamedTuple

import attr


@attr.frozen
class Replication:
    """
    What ``INFO replication`` said about an instance's role, and the
    addresses (host, port) of the replicas it listed; or, with `error`, why
    the role is unknown (INFO refused or unanswered, say). The replicas are
    not part of the role: two Replications with the same role fields and
    error are equal.
    """

    role: str | None
    master_host: str | None = None
    master_port: int | None = None
    master_link_status: str | None = None
    replicas: tuple[tuple[str, int], ...] = attr.field(default=(), eq=False)
    error: str | None = None


class Observation(NamedTuple):
    """
    The outcome of one check. A NamedTuple rather than an attrs class: one is
    made per check, thousands a second, and a tuple is the cheapest to make.
    """

    ok: bool
    ready: bool = False
    latency_ms: float | None = None
    error: str | None = None
    # Present only when this check read INFO replication.
    replication: Replication | None = None
    # The drain key exists: alive, but not to be used (ready is false).
    draining: bool = False

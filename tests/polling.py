"""Waiting on a real reactor for a condition, always with a bound."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

from tests.servers import listening_tcp_ports

# How long a ``twistd -n sentinel`` child may take to start (its imports,
# the plugin cache, its first bind) before a test calls it broken. No test
# measures it, and a wait on it ends as soon as the agent answers, so it
# costs nothing but a failing test's time. On a 2-core machine shared
# with other runs the agent answered HTTP 1.1-5 s after its spawn at load
# 19, and 12-21 s at load 73-89, where the 10, 15, 20 and 30 s bounds it
# replaces failed eight tests of one run of the suite.
START_BOUND = 60.0


class ConditionTimeout(AssertionError):
    """The condition did not become true within the bound."""


async def wait_for(
    reactor: Any,
    condition: Callable[[], object],
    timeout: float,
    what: str,
    step: float = 0.01,
    state: Callable[[], str] | None = None,
) -> float:
    """
    Poll `condition` every `step` seconds until it is true; return how long
    that took, or fail with `what` after `timeout` seconds (and what
    `state` says of how far it got: a flaky failure must say why).
    """
    started = reactor.seconds()
    while True:
        if condition():
            return float(reactor.seconds() - started)
        if reactor.seconds() - started > timeout:
            reached = f" ({state()})" if state is not None else ""
            raise ConditionTimeout(f"{what}: not within {timeout} s{reached}")
        await deferLater(reactor, step, lambda: None)


async def wait_listening(
    reactor: Any,
    pid: int,
    gone: Callable[[], str | None],
    timeout: float = START_BOUND,
) -> int:
    """
    The TCP port process `pid` (an agent run with ``--http tcp:0:...``)
    listens on, once it does, as the kernel says: its log may be twistd's
    own file (``--logfile``) or a pipe nobody reads. `gone` says why the
    agent ended (its status, its log), or None while it runs: an agent
    that ends first fails the wait at once, as one that does not listen
    within `timeout` does.

    A port found free and given to the agent is anyone's until it binds
    it, seconds later for twistd under load (of 3,000 found free so at
    load 25, 75 could not be bound 5 s on): the agent then exits 1,
    "cannot listen". Port 0 is the kernel's pick as the agent binds.
    """
    ports: set[int] = set()

    def listens() -> bool:
        why = gone()
        if why is not None:
            raise AssertionError(f"the agent ended before it listened: {why}")
        try:
            ports.update(listening_tcp_ports(pid))
        except OSError:  # Ended meanwhile: `gone` says so next.
            pass
        return bool(ports)

    await wait_for(reactor, listens, timeout, "the agent listening", 0.05)
    [port] = ports
    return port


def pause(reactor: Any, seconds: float) -> Deferred[None]:
    """Let the reactor run for `seconds` (for bounded observation windows)."""
    return deferLater(reactor, seconds, lambda: None)

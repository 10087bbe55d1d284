"""Waiting on a real reactor for a condition, always with a bound."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater

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


def pause(reactor: Any, seconds: float) -> Deferred[None]:
    """Let the reactor run for `seconds` (for bounded observation windows)."""
    return deferLater(reactor, seconds, lambda: None)

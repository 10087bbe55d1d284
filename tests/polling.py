"""Waiting on a real reactor for a condition, always with a bound."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater


class ConditionTimeout(AssertionError):
    """The condition did not become true within the bound."""


async def wait_for(
    reactor: Any,
    condition: Callable[[], object],
    timeout: float,
    what: str,
    step: float = 0.01,
) -> float:
    """
    Poll `condition` every `step` seconds until it is true; return how long
    that took, or fail with `what` after `timeout` seconds.
    """
    started = reactor.seconds()
    while True:
        if condition():
            return float(reactor.seconds() - started)
        if reactor.seconds() - started > timeout:
            raise ConditionTimeout(f"{what}: not within {timeout} s")
        await deferLater(reactor, step, lambda: None)


def pause(reactor: Any, seconds: float) -> Deferred[None]:
    """Let the reactor run for `seconds` (for bounded observation windows)."""
    return deferLater(reactor, seconds, lambda: None)

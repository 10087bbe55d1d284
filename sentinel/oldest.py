"""
The oldest few of many, named in one line of a /healthz reason: bounded
whatever their count (a view change makes thousands at once), and saying
how many more there are.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

Found = TypeVar("Found", bound=tuple[Any, ...])


def oldest_named(
    found: Sequence[Found], limit: int, say: Callable[[Found], str]
) -> str:
    """
    The `limit` smallest of `found` (tuples, their time first: the oldest
    first), each as `say` says it, comma-separated, and how many more.
    """
    named = heapq.nsmallest(limit, found)
    more = len(found) - len(named)
    return ", ".join(say(each) for each in named) + (
        f" and {more} more" if more else ""
    )

"""
ZooKeeper's sequential node names read back: the prefix, and the counter
ZooKeeper appends to it.

ZooKeeper names a sequential node by its prefix and the parent's counter,
written ``%010d``: ten digits while the counter is positive
(``member_0000000042``), but a signed 32-bit counter wraps after
2\N{SUPERSCRIPT THREE}\N{SUPERSCRIPT ONE}-1 creations under one parent,
and the names go on as ``member_-2147483648`` (eleven characters) up to
``member_-000000001``. A discovery service whose members come and go on
every restart and flap of thousands of instances gets there in time;
read as ten digits, its members after the wrap were no members of ours,
and never swept or replaced. Every place that picks our members out of a
listing reads their names here.
"""

from __future__ import annotations

import re

# A prefix ending in "_", as ours do, then the counter: ten digits, or a
# minus sign and nine or ten (ASCII digits only: re.ASCII).
_NAME = re.compile(r"(.*_)([0-9]{10}|-[0-9]{9,10})", re.ASCII | re.DOTALL)
_LOWEST = -(2**31)
# The most characters ZooKeeper appends: ten digits, or, after the wrap,
# a minus sign and ten (``-2147483648``).
LONGEST_COUNTER = len(str(_LOWEST))


def split_sequential(name: str) -> tuple[str, int] | None:
    """
    The prefix and the counter of a sequential node's `name`, or None if it
    is no such name.
    """
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    counter = int(match[2])
    return None if counter < _LOWEST else (match[1], counter)


def creation_order(counter: int) -> tuple[bool, int]:
    """
    A sort key of counters, oldest first: the wrapped (negative) ones came
    after every positive one.
    """
    return counter < 0, counter

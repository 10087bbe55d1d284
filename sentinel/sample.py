"""
Many items named in one line of a ``/healthz`` or ``/group`` reason: a
bounded sample, the same shape in every reason.

A reason that counted its items but named one (``/sentinel/instances/a
held by ... (and 9,999 more)``) sent an operator to ``zkCli.sh`` for the
rest. Each now names the first `NAMED`, each made printable and cut at
`CUT` characters (paths and ids come from other clients of ZooKeeper:
any length, any characters), then how many more: at most about 700
characters whatever the count, and only the first `NAMED` are read from
what is named (`sample`). A reason that says the first in full, with its
own detail, names the others after it (`others`). `sentinel.unconfirmed`
had this shape first.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice

from sentinel.checks import printable

# Items named in one reason, at most.
NAMED = 10
# Characters of one item named, at most (``...`` ending one cut).
CUT = 64


def sample(items: Iterable[str], count: int) -> str:
    """
    The first `NAMED` of `items` (`count` in all), each cut at `CUT`
    characters, comma-separated, then `` and N more`` for the rest.
    """
    shown = [printable(item, CUT) for item in islice(items, NAMED)]
    more = count - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def others(items: Iterable[str], count: int) -> str:
    """
    After a first item said in full: `` (and N more: a, b, ...)``, the
    `count` others sampled as `sample` does; '' when there are none.
    """
    if count <= 0:
        return ""
    return f" (and {count} more: {sample(items, count)})"

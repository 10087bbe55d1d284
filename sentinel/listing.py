"""
The JSON answers that grow with the instances, ``/instances`` and
``/pending``, as slices (see `sentinel.streaming`), the query that
filters and pages ``/instances``, and the one that pages ``/group``.

Instances are listed in name order (Python's order of strings, code point
by code point), so that ``after=NAME`` pages through them: a page holds
the names after NAME, whether or not NAME is still watched. The sorted
names are kept and sorted again only when the set of names changes
(sorting 10,000 names costs about 3 ms; checking that they did not change,
0.2 ms). Each answer renders from the names as they were when it started;
an instance removed meanwhile is left out, one added is in the next answer.

One document costs about 8-20 µs (build and ``json.dumps``, one per line,
no indentation: indenting makes ``json`` use its Python encoder, three
times slower), so a slice renders at most `DOCUMENTS_PER_SLICE` of them, and
looks at most at `NAMES_PER_SLICE` names when a filter leaves most of them
out.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any

import attr
from twisted.internet.interfaces import IReactorTime

from sentinel.checks import short_decimal
from sentinel.health import DOWN, UP
from sentinel.instance import InstanceState
from sentinel.streaming import Slices
from sentinel.tracker import PendingTracker, listed_stage

# At most about 2 ms of rendering, or 0.5 ms of looking at names, a slice.
DOCUMENTS_PER_SLICE = 100
NAMES_PER_SLICE = 2500

# `status=` values: the decided status, or not decided yet.
UNKNOWN = "unknown"
STATUSES = (UP, DOWN, UNKNOWN)
QUERY_PARAMETERS = ("status", "limit", "after")
PAGE_PARAMETERS = ("limit", "after")
# Members on a page of ``GET /group`` unless ``?limit=`` says otherwise:
# about 190 KB with 60-character agent ids.
MEMBERS_PER_PAGE = 1000
# More than any fleet one agent can watch; a bound, so that a typo of a
# hundred digits is refused rather than taken.
MAX_LIMIT = 1_000_000
# Characters of a client's text an error quotes: a request line may be
# 16 KiB, and an error quoting it whole was as long.
QUOTED = 40


class BadRequest(ValueError):
    """A query the agent refuses: its message is one line naming the parameter."""


def quoted(text: str | bytes) -> str:
    """
    A client's `text` as an error quotes it: the repr of its first
    `QUOTED` characters, then ``...`` when it is longer.
    """
    return repr(text[:QUOTED]) + ("..." if len(text) > QUOTED else "")


@attr.frozen
class InstanceQuery:
    """
    What ``/instances`` lists: the instances with this `status` (all when
    None), at most `limit` of them (all when None), named after `after`.
    """

    status: str | None = None
    limit: int | None = None
    after: str | None = None

    @classmethod
    def from_args(cls, args: Mapping[bytes, Sequence[bytes]]) -> InstanceQuery:
        """The query of a request's arguments; `BadRequest` names what is wrong."""
        values = _values(args, QUERY_PARAMETERS)
        status = values.get("status")
        if status is not None and status not in STATUSES:
            raise BadRequest(
                f"status: {quoted(status)} is not one of {', '.join(STATUSES)}"
            )
        limit = values.get("limit")
        return cls(
            status=status,
            limit=None if limit is None else _limit(limit),
            after=values.get("after"),
        )

    def matches(self, state: InstanceState) -> bool:
        """Whether the instance passes the `status` filter."""
        if self.status is None:
            return True
        return (state.health.status or UNKNOWN) == self.status


@attr.frozen
class PageQuery:
    """
    A page of a list in name order (``GET /group``'s members): at most
    `limit` entries, named after `after`.
    """

    limit: int
    after: str | None = None

    @classmethod
    def from_args(
        cls, args: Mapping[bytes, Sequence[bytes]], default_limit: int
    ) -> PageQuery:
        """
        The page a request's arguments ask for (`default_limit` entries
        unless ``limit`` says); `BadRequest` names what is wrong.
        """
        values = _values(args, PAGE_PARAMETERS)
        limit = values.get("limit")
        return cls(
            limit=default_limit if limit is None else _limit(limit),
            after=values.get("after"),
        )


def _values(
    args: Mapping[bytes, Sequence[bytes]], known: Sequence[str]
) -> dict[str, str]:
    """Each parameter's one value; `BadRequest` names an unknown or repeated one."""
    values: dict[str, str] = {}
    for raw_name, raw_values in args.items():
        name = _text("a parameter name", raw_name)
        if name not in known:
            known_names = ", ".join(known)
            raise BadRequest(f"unknown parameter {quoted(name)} (known: {known_names})")
        if len(raw_values) != 1:
            raise BadRequest(f"parameter {name!r} is given {len(raw_values)} times")
        values[name] = _text(f"parameter {name!r}", raw_values[0])
    return values


def _text(what: str, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{what} is not UTF-8: {quoted(value)}") from None


def _limit(text: str) -> int:
    if short_decimal(text, 7):
        value = int(text)
        if 1 <= value <= MAX_LIMIT:
            return value
    raise BadRequest(
        f"limit: {quoted(text)} is not a whole number from 1 to {MAX_LIMIT}"
    )


class NameIndex:
    """The watched instances' names in order, sorted again only on a change."""

    def __init__(self) -> None:
        self._names: list[str] = []
        self._sorted: list[str] = []

    def sorted(self, states: Mapping[str, object]) -> Sequence[str]:
        """The names of `states`, sorted; do not change the list returned."""
        names = list(states)
        if names != self._names:
            self._names = names
            self._sorted = sorted(names)
        return self._sorted


def instance_slices(
    states: Mapping[str, InstanceState],
    names: Sequence[str],
    query: InstanceQuery,
    document: Callable[[InstanceState], dict[str, Any]],
) -> Slices:
    """
    The body of ``GET /instances``: ``{"instances": [...]}``, one document
    per line, and with a `limit`, ``"next"``: the name to ask for after,
    or null when no more instances match.
    """
    yield b'{"instances": [\n'
    index = 0 if query.after is None else bisect_right(names, query.after)
    left = query.limit
    separator = b""
    last: str | None = None
    more = False
    while index < len(names) and not more:
        rendered: list[str] = []
        end = min(len(names), index + NAMES_PER_SLICE)
        while index < end and len(rendered) < DOCUMENTS_PER_SLICE:
            name = names[index]
            index += 1
            state = states.get(name)
            if state is None or not query.matches(state):
                continue
            if left == 0:
                more = True
                break
            rendered.append(json.dumps(document(state)))
            last = name
            if left is not None:
                left -= 1
        if rendered:
            yield separator + ",\n".join(rendered).encode("utf-8")
            separator = b",\n"
        else:
            yield b""
    if query.limit is None:
        yield b"\n]}\n"
    else:
        yield b'\n], "next": %s}\n' % json.dumps(last if more else None).encode()


def pending_slices(tracker: PendingTracker, clock: IReactorTime) -> Slices:
    """
    The body of ``GET /pending``: every check in flight when its first
    slice is rendered, oldest first, with its stage and age at that moment.
    The time is read with the list: rendering starts a reactor turn or more
    after the request, and a check launched in between had a negative age.
    """
    now = clock.seconds()
    # By age, then by name: a slice's checks start at the same time.
    checks = sorted(
        (
            (state.started_at, state.name, listed_stage(state.stage))
            for state in tracker
        ),
        key=itemgetter(0, 1),
    )
    oldest = None if not checks else now - checks[0][0]
    yield b'{"count": %d, "oldest_seconds": %s, "checks": [\n' % (
        len(checks),
        json.dumps(oldest).encode(),
    )
    for start in range(0, len(checks), DOCUMENTS_PER_SLICE):
        rendered = ",\n".join(
            json.dumps({"instance": name, "stage": stage, "age_seconds": now - at})
            for at, name, stage in checks[start : start + DOCUMENTS_PER_SLICE]
        )
        yield (b",\n" if start else b"") + rendered.encode("utf-8")
    yield b"\n]}\n"

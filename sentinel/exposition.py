"""
The body of ``GET /metrics``, in the format and encoding the scraper asks
for, read as HTTP reads ``Accept`` and ``Accept-Encoding`` (werkzeug parses
them; an invalid ``q`` drops its entry):

- three formats: the Prometheus text format 0.0.4 (the default), text
  1.0.0 and OpenMetrics 1.0.0. A range with another ``version`` names none
  of them, so that no version is answered but these.
- ``q=0`` refuses a format; among the others the highest ``q`` wins, a
  format no range names counting least (the header is a preference: a
  scraper that names only formats the agent lacks gets the default); ties
  go to the more specific range, then to the order above. Every format
  refused: no answer (406).
- gzip when ``Accept-Encoding`` gives it a ``q`` over 0 and not under
  ``identity``'s.
- Either header longer than `MAX_PREFERENCE_BYTES` is refused
  (`overlong`) rather than read.

prometheus_client's `choose_encoder`, given the one range chosen, makes
the encoder and the content type (and reads its ``escaping``): given the
whole header, it takes the first range it knows whatever its ``q``, and
echoes any version of OpenMetrics asked for.

The agent's own families are written by prometheus_client's encoder for
that format; the per-instance families follow, in slices, as the same text
in every format (see `sentinel.metrics`); OpenMetrics ends with ``# EOF``,
after them. Compressing costs about 4 ms per MB at level 1, and shrinks
this text about thirteen times.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable

import attr
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from werkzeug.http import parse_accept_header, parse_options_header

from sentinel.metrics import AgentMetrics
from sentinel.streaming import Slices

OPENMETRICS = "application/openmetrics-text"
_EOF = b"# EOF\n"
_GZIP_LEVEL = 1
# zlib's window size for a gzip header and trailer.
_GZIP_WINDOW = 16 + zlib.MAX_WBITS
# The longest Accept or Accept-Encoding header read (Prometheus sends
# about 330 bytes): each range is parsed and matched against every
# format, and a 14 KB Accept (1,400 ranges, within the 16 KB head Twisted
# takes) cost 20-60 ms of the reactor's time a scrape, where 60
# connections looping on it kept the agent at a full core.
MAX_PREFERENCE_BYTES = 1024
# An escaping scheme's name as prometheus_client reads it (it takes any
# other as "underscores"): passed on only if it cannot end the range.
_ESCAPING = re.compile(r"[a-z0-9-]+")


@attr.frozen
class Format:
    """One format the agent writes: its media type and version."""

    media_type: str
    version: str

    def matches(self, media_range: str, version: str | None) -> bool:
        """Whether a range (lower case) and its version, if any, name this."""
        kind, _, subtype = self.media_type.partition("/")
        wanted_kind, _, wanted_subtype = media_range.partition("/")
        if media_range == "*/*":
            return True
        if wanted_kind != kind:
            return False
        if wanted_subtype == "*":
            return True
        return wanted_subtype == subtype and version in (None, self.version)


TEXT_0_0_4 = Format("text/plain", "0.0.4")
TEXT_1_0_0 = Format("text/plain", "1.0.0")
OPENMETRICS_1_0_0 = Format(OPENMETRICS, "1.0.0")
# In the order ties go (module docstring): first the format every scraper reads.
FORMATS = (TEXT_0_0_4, TEXT_1_0_0, OPENMETRICS_1_0_0)


@attr.frozen
class Exposition:
    """What to answer a scrape: its content type, encoding and body."""

    content_type: str
    gzip: bool
    body: Slices


# One range of an Accept header: its media range (lower case), parameters, q.
Range = tuple[str, dict[str, str], float]


def choose_format(accept: str) -> tuple[Format, str] | None:
    """
    The format to answer an ``Accept`` header with, and the range to ask
    `choose_encoder` for it; None when the header refuses every format.
    """
    ranges: list[Range] = [
        (media_range.lower(), options, quality)
        for item, quality in parse_accept_header(accept)
        for media_range, options in [parse_options_header(item)]
    ]
    candidates: list[tuple[tuple[float, int, int], Format, dict[str, str]]] = []
    for order, candidate in enumerate(FORMATS):
        named = _most_specific(candidate, ranges)
        if named is None:
            # Named by no range: after every format named.
            candidates.append(((0.0, -1, -order), candidate, {}))
        elif named[0] > 0:
            quality, specificity, options = named
            candidates.append(((quality, specificity, -order), candidate, options))
    if not candidates:
        return None
    _, chosen, options = max(candidates, key=lambda c: c[0])
    wanted = f"{chosen.media_type}; version={chosen.version}"
    escaping = options.get("escaping", "")
    if _ESCAPING.fullmatch(escaping):
        wanted += f"; escaping={escaping}"
    return chosen, wanted


def _most_specific(
    candidate: Format, ranges: list[Range]
) -> tuple[float, int, dict[str, str]] | None:
    """
    The q, specificity and parameters of the most specific range naming
    `candidate` (its q is the one that applies), or None.
    """
    found = None
    for media_range, options, quality in ranges:
        if not candidate.matches(media_range, options.get("version")):
            continue
        # */* 0, text/* 1, text/plain 2, with a version 3.
        specificity = (media_range != "*/*") + (not media_range.endswith("/*"))
        specificity += "version" in options
        if found is None or specificity > found[1]:
            found = (quality, specificity, options)
    return found


def gzip_wanted(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` header prefers gzip (module docstring)."""
    codings = parse_accept_header(accept_encoding)
    gzip = codings.quality("gzip")
    return gzip > 0 and gzip >= codings.quality("identity")


def overlong(accept: str, accept_encoding: str) -> str | None:
    """
    Why a scrape's ``Accept`` or ``Accept-Encoding`` header is not read
    (longer than `MAX_PREFERENCE_BYTES`), or None.
    """
    for name, value in (("Accept", accept), ("Accept-Encoding", accept_encoding)):
        if len(value) > MAX_PREFERENCE_BYTES:
            return (
                f"the {name} header is {len(value)} bytes long, over "
                f"{MAX_PREFERENCE_BYTES}"
            )
    return None


def exposition(
    metrics: AgentMetrics, accept: str, accept_encoding: str
) -> Exposition | None:
    """
    The answer to a scrape that sent these ``Accept`` headers; None when
    ``Accept`` refuses every format.
    """
    chosen = choose_format(accept)
    if chosen is None:
        return None
    fmt, wanted = chosen
    encoder, content_type = choose_encoder(wanted)
    body = _body(metrics, encoder, fmt is OPENMETRICS_1_0_0)
    if gzip_wanted(accept_encoding):
        return Exposition(content_type, True, _gzipped(body))
    return Exposition(content_type, False, body)


def _body(
    metrics: AgentMetrics, encoder: Callable[[Collector], bytes], openmetrics: bool
) -> Slices:
    own = encoder(metrics.registry)
    yield own.removesuffix(_EOF) if openmetrics else own
    yield from metrics.instance_slices()
    if openmetrics:
        yield _EOF


def _gzipped(body: Slices) -> Slices:
    compressor = zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, _GZIP_WINDOW)
    for chunk in body:
        yield compressor.compress(chunk)
    yield compressor.flush()

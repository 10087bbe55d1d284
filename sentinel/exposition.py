"""
The body of ``GET /metrics``, in the format and encoding the scraper asks
for: the Prometheus text format 0.0.4 unless its ``Accept`` prefers another
that prometheus_client knows (OpenMetrics, text 1.0.0; its `choose_encoder`
decides), gzipped when its ``Accept-Encoding`` allows.

The agent's own families are written by prometheus_client's encoder for
that format; the per-instance families follow, in slices, as the same text
in every format (see `sentinel.metrics`); OpenMetrics ends with ``# EOF``,
after them. Compressing costs about 4 ms per MB at level 1, and shrinks
this text about thirteen times.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

import attr
from prometheus_client.exposition import (
    CONTENT_TYPE_PLAIN_0_0_4,
    choose_encoder,
    generate_latest,
    gzip_accepted,
)
from prometheus_client.registry import Collector

from sentinel.metrics import AgentMetrics
from sentinel.streaming import Slices

OPENMETRICS = "application/openmetrics-text"
_EOF = b"# EOF\n"
_GZIP_LEVEL = 1
# zlib's window size for a gzip header and trailer.
_GZIP_WINDOW = 16 + zlib.MAX_WBITS


@attr.frozen
class Exposition:
    """What to answer a scrape: its content type, encoding and body."""

    content_type: str
    gzip: bool
    body: Slices


def exposition(metrics: AgentMetrics, accept: str, accept_encoding: str) -> Exposition:
    """The answer to a scrape that sent these ``Accept`` headers."""
    try:
        encoder, content_type = choose_encoder(accept)
    except (TypeError, ValueError):
        # A version that is not a number: the format every scraper reads.
        encoder, content_type = generate_latest, CONTENT_TYPE_PLAIN_0_0_4
    openmetrics = content_type.startswith(OPENMETRICS)
    body = _body(metrics, encoder, openmetrics)
    if gzip_accepted(accept_encoding):
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

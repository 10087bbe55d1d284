"""
A group member's catalog (DESIGN.md section 8, "Groups"): the instance
names an agent can check, with its replicas and quorum, as the other
members read it under ``{root}/catalogs``.

A catalog is JSON, compressed, and cut into parts of at most
`CATALOG_PART_BYTES`, one node each, within ZooKeeper's default 1 MB limit
(``jute.maxbuffer``) on one node's data: 100,000 names are one node of
about 250 KB. Each part's node is named after its agent, the catalog's
digest (equal catalogs, equal digests: agents with one list share one
read), the writing process's token, and the part's index and count, so
that a reader knows from a listing alone which catalogs are complete.
Reading one back is bounded (`MAX_CATALOG_BYTES` once decompressed) and
checked against its digest: a catalog that cannot be read is `BadCatalog`,
never a crash or a guess.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from collections.abc import Generator, Sequence
from json.decoder import scanstring  # type: ignore[attr-defined]

import attr

from sentinel.checks import short_decimal, znode_name_problem

# A catalog is compressed and cut into parts of at most this size: within
# ZooKeeper's default 1 MB limit (jute.maxbuffer) on one node's data.
CATALOG_PART_BYTES = 512 * 1024
# What a catalog may hold once decompressed: 100,000 names of 255 bytes
# would be 26 MB; anything larger is refused, not buffered.
MAX_CATALOG_BYTES = 64 * 1024 * 1024
# Names parsed in one slice of a catalog's decoding: about 5 ms. A catalog
# longer than LARGE_CATALOG_CHARS also has its text joined and decoded in
# a slice of its own, and its names frozen in another (about 10 ms a MB).
NAMES_PER_SLICE = 10_000
LARGE_CATALOG_CHARS = 1_000_000
# Bytes inflated (and digested) in one slice of a part's reading: about
# 3 ms. A part of 64 KB may inflate to the whole `MAX_CATALOG_BYTES`, and
# inflating that in one call held the reactor 0.1-0.16 s, quiet.
INFLATE_SLICE_BYTES = 1024 * 1024


@attr.frozen
class Catalog:
    """The instance names an agent can check, and its replicas and quorum."""

    names: frozenset[str]
    replicas: int
    quorum: int

    def encode(self) -> bytes:
        """The catalog's bytes before compression (its digest is theirs)."""
        document = {
            "replicas": self.replicas,
            "quorum": self.quorum,
            "instances": sorted(self.names),
        }
        return json.dumps(document, separators=(",", ":")).encode("utf-8")


def catalog_digest(encoded: bytes) -> str:
    """16 hex digits naming a catalog's content: equal catalogs, equal digests."""
    return hashlib.blake2b(encoded, digest_size=8).hexdigest()


def catalog_parts(catalog: Catalog) -> tuple[str, list[bytes]]:
    """
    The catalog's digest and its compressed bytes cut into parts of at
    most `CATALOG_PART_BYTES`, each one node's data.
    """
    encoded = catalog.encode()
    packed = zlib.compress(encoded, 6)
    parts = [
        packed[i : i + CATALOG_PART_BYTES]
        for i in range(0, max(len(packed), 1), CATALOG_PART_BYTES)
    ]
    return catalog_digest(encoded), parts


def catalog_node_name(
    agent_id: str, digest: str, token: str, index: int, count: int
) -> str:
    """The name of one part of an agent's catalog under ``{root}/catalogs``."""
    return f"{agent_id}.{digest}.{token}.{index}.{count}"


@attr.frozen
class CatalogPart:
    """What a catalog node's name says: whose, which catalog, which part."""

    agent_id: str
    digest: str
    token: str
    index: int
    count: int


def parse_catalog_node_name(name: str) -> CatalogPart | None:
    """The parts of a catalog node's name, or None if it is not one."""
    fields = name.rsplit(".", 4)
    if len(fields) != 5:
        return None
    agent_id, digest, token, index, count = fields
    if not (short_decimal(index, 9) and short_decimal(count, 9)):
        # A child's name is anyone's: one int() refused ("²", 5,000
        # digits) failed every member's listing while the node stayed.
        return None
    if znode_name_problem(agent_id) is not None:
        # No agent's id ("." from "..digest.token.0.1"): its agent node's
        # path, {root}/agents/., raised ValueError in kazoo, which failed
        # every member's listing when the id had two catalogs.
        return None
    part = CatalogPart(agent_id, digest, token, int(index), int(count))
    if not 0 <= part.index < part.count <= MAX_CATALOG_BYTES // CATALOG_PART_BYTES + 1:
        return None
    return part


class BadCatalog(Exception):
    """A catalog that cannot be read back; the message says why."""


class TooManyNames(BadCatalog):
    """A catalog with more names than its reader has room for."""


def decode_catalog(digest: str, parts: Sequence[bytes]) -> Catalog:
    """
    The catalog in `parts` (in order), checked against its `digest`, all
    at once (`CatalogDecoder` decodes it a slice at a time).

    @raise BadCatalog: if it is corrupt, too large or not a catalog.
    """
    decoder = CatalogDecoder(digest)
    for part in parts:
        decoder.feed(part)
    steps = decoder.decode()
    while (catalog := decode_slice(steps)) is None:
        pass
    return catalog


def decode_slice(steps: Generator[None, None, Catalog]) -> Catalog | None:
    """
    Decode the next slice of `CatalogDecoder.decode`'s `steps`: None while
    more follow, then the catalog.

    @raise BadCatalog: if it is corrupt, too large or not a catalog.
    """
    try:
        next(steps)
    except StopIteration as done:
        catalog: Catalog = done.value
        return catalog
    return None


class CatalogDecoder:
    """
    A catalog decoded as its parts arrive, in order, then a slice at a
    time. Each part is decompressed and digested when fed, so that a
    corrupt or oversized catalog is refused at its first bad part, before
    the rest is read (a member's 20 parts of garbage were 18 MB fetched
    and held before the first was looked at), `INFLATE_SLICE_BYTES` at a
    time (`inflate`). Its names are then parsed `NAMES_PER_SLICE` at a
    time (`decode`): in one call, a valid catalog of 800,000 names held
    every member's reactor 3.5-6 s. Past `max_names` names (the room
    its reader has, repeats counted) it is refused (`TooManyNames`) as
    it is inflated, before any name is parsed: 64 MB of 6 million short
    names, a catalog anyone in a live session can write, were a set of
    them all before being refused.
    """

    def __init__(self, digest: str, max_names: int | None = None) -> None:
        self._digest = digest
        self._max_names = max_names
        self._inflate = zlib.decompressobj()
        self._hash = hashlib.blake2b(digest_size=8)
        # One buffer, not a list of slices: freed, 64 slices of 1 MiB
        # stayed in the heap (RSS 40 MB higher after a bomb), and joining
        # them took another copy.
        self._inflated = bytearray()
        self._separators = 0
        self._size = 0

    def feed(self, part: bytes) -> None:
        """
        Take the next part, all at once (`inflate` takes it in slices).

        @raise BadCatalog: if it is not compressed data, or takes the
            catalog over `MAX_CATALOG_BYTES`.
        """
        for _ in self.inflate(part):
            pass

    def inflate(self, part: bytes) -> Generator[None, None, None]:
        """
        Take the next part, `INFLATE_SLICE_BYTES` of its inflated bytes at
        a time: a generator that yields between slices.

        @raise BadCatalog: if it is not compressed data, or takes the
            catalog over `MAX_CATALOG_BYTES`.
        """
        while True:
            try:
                chunk = self._inflate.decompress(part, INFLATE_SLICE_BYTES)
            except zlib.error as e:
                raise BadCatalog(f"not compressed data: {e}") from None
            self._size += len(chunk)
            if self._size > MAX_CATALOG_BYTES:
                raise BadCatalog(f"larger than {MAX_CATALOG_BYTES} bytes")
            self._hash.update(chunk)
            # Names are counted as they come (each after the first follows
            # '","', which no name holds: its quotes are escaped), so that
            # too many are refused before any is parsed: parsed, a million
            # names of 8 bytes left the agent's RSS 60 MB higher.
            start = max(0, len(self._inflated) - 2)
            self._inflated += chunk
            self._separators += self._inflated.count(b'","', start)
            if self._max_names is not None and self._separators >= self._max_names:
                raise TooManyNames(f"more than {self._max_names} names")
            # A full slice may leave inflated bytes inside zlib even once
            # every input byte is taken: ask again until one comes short.
            part = self._inflate.unconsumed_tail
            if len(chunk) < INFLATE_SLICE_BYTES and not part:
                return
            yield

    def decode(self) -> Generator[None, None, Catalog]:
        """
        Once every part was fed: the catalog, parsed a slice at a time (a
        generator that yields between slices and returns the catalog).
        Only `Catalog.encode`'s layout is read: no other writer exists,
        and a general JSON parser takes the whole document in one call.

        @raise BadCatalog: if it is corrupt, too large or not a catalog.
        """
        self.feed(b"")
        if not self._inflate.eof:
            raise BadCatalog("truncated")
        if self._hash.hexdigest() != self._digest:
            raise BadCatalog("its content does not match its digest")
        encoded, self._inflated = self._inflated, bytearray()
        try:
            text = encoded.decode("utf-8")
        except UnicodeDecodeError:
            raise BadCatalog("not a catalog document") from None
        del encoded
        head = _HEAD.match(text)
        # Names, each followed by a comma but the last, then the end.
        end = len(text) - 2
        index = head.end() if head is not None else end
        if head is None or text[end:] != "]}":
            raise BadCatalog("not a catalog document")
        if index < end and text[end - 1] != '"':
            raise BadCatalog("not a catalog document")  # A comma last, say.
        names: set[str] = set()
        large = len(text) > LARGE_CATALOG_CHARS
        while index < end:
            if names or large:
                yield  # The next slice in another call.
            for _ in range(NAMES_PER_SLICE):
                if text[index] != '"':
                    raise BadCatalog("not a catalog document")
                try:
                    name, index = scanstring(text, index + 1)
                except ValueError:
                    raise BadCatalog("not a catalog document") from None
                names.add(name)
                if index == end:
                    break
                if text[index] != ",":
                    raise BadCatalog("not a catalog document")
                index += 1
        if large:
            yield
        replicas, quorum = int(head["replicas"]), int(head["quorum"])
        return Catalog(frozenset(names), replicas, quorum)


# The start of a catalog as `Catalog.encode` writes it, up to its first name.
_HEAD = re.compile(
    r'\{"replicas":(?P<replicas>-?\d{1,9}),"quorum":(?P<quorum>-?\d{1,9}),"instances":\['
)

"""Rendezvous assignment, verdict rules, catalogs and their settings."""

from __future__ import annotations

import random
import zlib

from twisted.trial.unittest import SynchronousTestCase

from sentinel import catalog as catalog_module
from sentinel.assignment import Assignment, name_hash
from sentinel.catalog import (
    MAX_CATALOG_BYTES,
    BadCatalog,
    Catalog,
    CatalogDecoder,
    TooManyNames,
    catalog_digest,
    catalog_node_name,
    catalog_parts,
    decode_catalog,
    decode_slice,
    parse_catalog_node_name,
)
from sentinel.config import load_config
from sentinel.verdict import Opinion, decide, parse_opinion

NAMES = [f"redis-{i:04d}" for i in range(2000)]


def fresh(replicas: int, members: dict[str, frozenset[str]]) -> Assignment:
    assignment = Assignment(replicas)
    assignment.set_known(NAMES)
    assignment.update(members)
    return assignment


class AssignmentTests(SynchronousTestCase):
    """Who observes what."""

    def test_hash_is_the_same_everywhere(self) -> None:
        """A name's hash is BLAKE2b's, not Python's salted hash()."""
        import hashlib

        digest = hashlib.blake2b(b"agent-a", digest_size=8).digest()
        self.assertEqual(name_hash("agent-a"), int.from_bytes(digest, "big"))
        self.assertNotEqual(name_hash("x"), name_hash("y"))

    def test_balanced(self) -> None:
        """Four agents knowing 2,000 names: each is primary of about a quarter."""
        catalog = frozenset(NAMES)
        assignment = fresh(1, {a: catalog for a in "abcd"})
        counts = {a: 0 for a in "abcd"}
        for name in NAMES:
            counts[assignment.primary(name) or ""] += 1
        for agent, count in counts.items():
            self.assertLess(abs(count - 500), 100, (agent, counts))

    def test_incremental_equals_from_scratch(self) -> None:
        """
        Joins, leaves and catalog changes applied one by one give exactly
        what a computation from scratch gives, and return the names whose
        observers changed, and only those.
        """
        rng = random.Random(7)
        catalogs = {
            a: frozenset(rng.sample(NAMES, rng.randrange(200, 2000))) for a in "abcdefg"
        }
        for replicas in (1, 2, 3):
            members = {a: catalogs[a] for a in "abc"}
            assignment = fresh(replicas, members)
            for step in range(30):
                agent = rng.choice("abcdefg")
                if agent in members and rng.random() < 0.5:
                    del members[agent]
                else:
                    members[agent] = frozenset(rng.sample(NAMES, 500))
                before = {n: assignment.observers(n) for n in NAMES}
                changed = assignment.update(dict(members))
                expected = fresh(replicas, dict(members))
                for name in NAMES:
                    self.assertEqual(
                        assignment.observers(name),
                        expected.observers(name),
                        (replicas, step, name),
                    )
                moved = {n for n in NAMES if before[n] != assignment.observers(n)}
                self.assertEqual(changed, moved, (replicas, step))

    def test_join_moves_about_its_share(self) -> None:
        """A fifth agent joining moves about a fifth of the primaries, to it."""
        catalog = frozenset(NAMES)
        members = {a: catalog for a in "abcd"}
        assignment = fresh(1, members)
        before = {n: assignment.primary(n) for n in NAMES}
        changed = assignment.update({**members, "e": catalog})
        self.assertTrue(all(assignment.primary(n) == "e" for n in changed))
        self.assertLess(abs(len(changed) - 400), 80)
        self.assertEqual(
            {n for n in NAMES if before[n] != assignment.primary(n)}, changed
        )

    def test_only_those_who_know(self) -> None:
        """An instance is only observed by agents that know it."""
        assignment = fresh(
            3, {"a": frozenset(NAMES), "b": frozenset(NAMES[:10]), "c": frozenset()}
        )
        self.assertEqual(set(assignment.observers(NAMES[0])), {"a", "b"})
        self.assertEqual(assignment.observers(NAMES[100]), ("a",))


def opinion(status: str, ready: bool = True, role: str | None = "master") -> Opinion:
    return Opinion(status=status, ready=ready, role=role if status == "up" else None)


class VerdictTests(SynchronousTestCase):
    """DESIGN section 8's rules."""

    def test_quorum_down(self) -> None:
        """Q opinions down make it down; fewer, with one up, leave it up."""
        observers = ("a", "b", "c")
        up, down = opinion("up"), opinion("down")
        verdict = decide(observers, {"a": down, "b": down, "c": up}, 2)
        assert verdict is not None
        self.assertEqual(verdict.status, "down")
        verdict = decide(observers, {"a": down, "b": up, "c": up}, 2)
        assert verdict is not None
        self.assertEqual(verdict.status, "up")
        self.assertEqual(verdict.observers, (("a", "down"), ("b", "up"), ("c", "up")))

    def test_no_false_down_without_quorum(self) -> None:
        """One down and no other opinion yet: no verdict (the previous stays)."""
        self.assertIsNone(decide(("a", "b", "c"), {"a": opinion("down")}, 2))

    def test_quorum_capped_at_live_observers(self) -> None:
        """Alone, an observer's down is the verdict (Q capped at 1)."""
        verdict = decide(("a",), {"a": opinion("down")}, 2)
        assert verdict is not None
        self.assertEqual((verdict.status, verdict.quorum), ("down", 1))

    def test_silent_observers_not_counted(self) -> None:
        """
        Observers long silent (no opinion for a while) are kept in
        ``observers`` but not counted in the quorum's cap: with three, two
        silent, the one down is the verdict; with one silent, two downs
        are still needed.
        """
        down = {"a": opinion("down")}
        verdict = decide(("a", "b", "c"), down, 2, {"b", "c"})
        assert verdict is not None
        self.assertEqual((verdict.status, verdict.quorum), ("down", 1))
        self.assertEqual(verdict.observers, (("a", "down"), ("b", None), ("c", None)))
        self.assertIsNone(decide(("a", "b", "c"), down, 2, {"c"}))

    def test_ready_and_role_from_an_up_observer_own_first(self) -> None:
        """The primary's own up opinion gives ready and role."""
        verdict = decide(
            ("a", "b"),
            {"a": opinion("up", ready=False), "b": opinion("up", role="slave")},
            1,
        )
        assert verdict is not None
        self.assertEqual((verdict.source.ready, verdict.source.role), (False, "master"))

    def test_hostile_opinions(self) -> None:
        """Opinions that are not ours to read are no opinion."""
        for data in (b"", b"[]", b'{"status": "sideways"}', b"{" * 100000, b"\xff"):
            self.assertIsNone(parse_opinion(data))
        parsed = parse_opinion(b'{"status": "up", "ready": true, "role": 5}')
        assert parsed is not None
        self.assertEqual((parsed.status, parsed.ready, parsed.role), ("up", True, None))
        # Texts are another agent's, published again and logged: printable.
        parsed = parse_opinion(b'{"status": "down", "error": "a\\u001b[2Jb"}')
        assert parsed is not None
        self.assertEqual(parsed.error, "a\\x1b[2Jb")
        # Numbers that are not finite, or too large for a float, are none
        # (a verdict written from them would not be JSON to strict readers).
        for number in (b"NaN", b"Infinity", b"-1e999", b"9" * 4000):
            data = b'{"status": "down", "latency_ms": %s, "checked_at": %s}'
            parsed = parse_opinion(data % (number, number))
            assert parsed is not None
            self.assertEqual(
                (parsed.status, parsed.latency_ms, parsed.checked_at),
                ("down", None, None),
            )


class CatalogTests(SynchronousTestCase):
    """Catalogs: bounded, checked, named."""

    def test_round_trip_and_size(self) -> None:
        """100,000 names fit one node compressed, and read back as they were."""
        names = frozenset(
            f"cache-{i:06d}.prod.example.com:6379" for i in range(100_000)
        )
        digest, parts = catalog_parts(Catalog(names, 3, 2))
        self.assertEqual(len(parts), 1)
        self.assertLess(len(parts[0]), 512 * 1024)
        self.assertEqual(decode_catalog(digest, parts), Catalog(names, 3, 2))

    def test_bad_catalogs_refused(self) -> None:
        """A wrong digest, garbage, truncation or a bomb: refused, bounded."""
        digest, parts = catalog_parts(Catalog(frozenset({"a"}), 1, 1))
        bomb = zlib.compress(b"0" * (MAX_CATALOG_BYTES + 10))
        for name, args in {
            "digest": ("0" * 16, parts),
            "garbage": (digest, [b"not zlib"]),
            "truncated": (digest, [parts[0][:-4]]),
            "bomb": (digest, [bomb]),
        }.items():
            with self.assertRaises(BadCatalog, msg=name):
                decode_catalog(*args)

    def test_decoded_in_slices(self) -> None:
        """
        A catalog's names are parsed NAMES_PER_SLICE at a time: a catalog
        of 25,000 takes three calls or more, and reads back as written.
        """
        names = frozenset(f"cache-{i:06d}.prod.example.com:6379" for i in range(25_000))
        digest, parts = catalog_parts(Catalog(names, 3, 2))
        decoder = CatalogDecoder(digest)
        for part in parts:
            decoder.feed(part)
        steps = decoder.decode()
        calls = 1
        while True:
            try:
                next(steps)
            except StopIteration as done:
                self.assertEqual(done.value, Catalog(names, 3, 2))
                break
            calls += 1
        self.assertGreaterEqual(calls, 3)
        empty = Catalog(frozenset(), 1, 1)
        self.assertEqual(decode_catalog(*catalog_parts(empty)), empty)

    def test_inflated_in_slices(self) -> None:
        """
        A part is inflated INFLATE_SLICE_BYTES at a time, a slice per
        step of `inflate`, and reads back as written; a bomb is refused
        after at most one slice past MAX_CATALOG_BYTES.
        """
        self.patch(catalog_module, "INFLATE_SLICE_BYTES", 1000)
        names = frozenset(f"cache-{i:06d}" for i in range(1000))
        digest, parts = catalog_parts(Catalog(names, 3, 2))
        decoder = CatalogDecoder(digest)
        steps = sum(1 for part in parts for _ in decoder.inflate(part))
        encoded = Catalog(names, 3, 2).encode()
        self.assertGreaterEqual(steps, len(encoded) // 1000 - 1)
        self.assertEqual(decode_catalog(digest, parts), Catalog(names, 3, 2))
        self.patch(catalog_module, "MAX_CATALOG_BYTES", 50_000)
        bomb = zlib.compress(bytes(1_000_000), 9)
        inflating = CatalogDecoder("0" * 16).inflate(bomb)
        steps = 0
        with self.assertRaises(BadCatalog):
            for _ in inflating:
                steps += 1
        self.assertEqual(steps, 50)

    def test_names_beyond_room_refused(self) -> None:
        """
        A catalog with more names than its reader has room for, repeated
        names counted too, is refused as it is inflated, before any name
        is parsed; one with as many as there is room for reads back.
        """
        self.patch(catalog_module, "INFLATE_SLICE_BYTES", 1000)
        names = frozenset(f"cache-{i:06d}" for i in range(25_000))
        digest, parts = catalog_parts(Catalog(names, 3, 2))
        decoder = CatalogDecoder(digest, max_names=10)
        inflating = decoder.inflate(parts[0])
        slices = 0
        with self.assertRaises(TooManyNames):
            for _ in inflating:
                slices += 1
        # Refused in the first slice, which holds the 11th name.
        self.assertEqual(slices, 0)
        encoded = b'{"replicas":1,"quorum":1,"instances":[' + b'"a",' * 30 + b'"a"]}'
        decoder = CatalogDecoder(catalog_digest(encoded), max_names=10)
        with self.assertRaises(TooManyNames):
            decoder.feed(zlib.compress(encoded))
        decoder = CatalogDecoder(digest, max_names=25_000)
        for part in parts:
            decoder.feed(part)
        steps = decoder.decode()
        while (catalog := decode_slice(steps)) is None:
            pass
        self.assertEqual(catalog.names, names)

    def test_other_layouts_refused(self) -> None:
        """
        Only the layout the agents write is read: anything else is no
        catalog, even as valid JSON with the right digest.
        """
        for document in (
            '{"replicas":1,"quorum":1,"instances":["a",]}',
            '{"replicas":1,"quorum":1,"instances":["a",0]}',
            '{"replicas":1,"quorum":1,"instances":["a""b"]}',
            '{"replicas":1,"quorum":1,"instances":["a"]',
            '{"replicas":1,"quorum":1,"instances":["a"]}\n',
            '{"replicas": 1, "quorum": 1, "instances": ["a"]}',
            '{"quorum":1,"replicas":1,"instances":["a"]}',
            '{"replicas":1.5,"quorum":1,"instances":["a"]}',
            '{"replicas":1,"quorum":1,"instances":["a\x01"]}',
            '{"replicas":1,"quorum":1,"instances":["a]}',
        ):
            encoded = document.encode()
            packed = zlib.compress(encoded)
            with self.assertRaises(BadCatalog, msg=document):
                decode_catalog(catalog_digest(encoded), [packed])
        encoded = b'{"replicas":1,"quorum":1,"instances":["\xff"]}'
        with self.assertRaises(BadCatalog):
            decode_catalog(catalog_digest(encoded), [zlib.compress(encoded)])

    def test_node_names(self) -> None:
        """Agent ids may hold dots; other names are no catalog part."""
        name = catalog_node_name("host.example.net", "00ff", "ab12", 1, 3)
        part = parse_catalog_node_name(name)
        assert part is not None
        self.assertEqual(
            (part.agent_id, part.index, part.count), ("host.example.net", 1, 3)
        )
        for other in ("x", "a.b.c.d", "a.b.c.3.2", "a.b.c.x.1", ".d.t.0.1"):
            self.assertIsNone(parse_catalog_node_name(other), other)

    def test_node_names_of_other_digits(self) -> None:
        """
        A name whose index or count is no plain number (a digit that is not
        ASCII, more digits than int() reads) is no catalog part, not an error.
        """
        for other in ("a.d.t.0.\u00b2", "a.d.t.\u00b9.2", "a.d.t.0." + "9" * 5000):
            self.assertIsNone(parse_catalog_node_name(other), other[:20])

    def test_node_names_of_no_agent_id(self) -> None:
        """
        A name whose agent id no agent can have (".", "..", a control
        character) is no catalog part: that id names no agent node.
        """
        for other in ("..d.t.0.1", "...d.t.0.1", "a\x7f.d.t.0.1"):
            self.assertIsNone(parse_catalog_node_name(other), other)


class SettingsTests(SynchronousTestCase):
    """zookeeper.replicas and zookeeper.quorum."""

    def load(self, body: str) -> object:
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(f'[zookeeper]\nhosts = "127.0.0.1:2181"\n{body}\n')
        return load_config(path, {}, "host")

    def test_defaults(self) -> None:
        """One replica; quorum a majority of the replicas."""
        for replicas, quorum in ((1, 1), (2, 2), (3, 2), (5, 3)):
            config = self.load(f"replicas = {replicas}")
            zookeeper = config.zookeeper  # type: ignore[attr-defined]
            self.assertEqual((zookeeper.replicas, zookeeper.quorum), (replicas, quorum))

    def test_errors(self) -> None:
        """R < 1, Q < 1, Q > R: one line naming the field and the value."""
        from sentinel.checks import ConfigError

        for body, line in (
            ("replicas = 0", "zookeeper.replicas: 0 is less than 1"),
            ("quorum = 0", "zookeeper.quorum: 0 is less than 1"),
            (
                "replicas = 2\nquorum = 3",
                "zookeeper.quorum: 3 is greater than zookeeper.replicas 2",
            ),
        ):
            with self.assertRaises(ConfigError) as caught:
                self.load(body)
            self.assertEqual(str(caught.exception), line)

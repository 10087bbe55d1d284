"""
The reader of ZooKeeper, sentinel-status (python -m sentinel.status): its
rows, its exit status, its settings from the agent's config, and its bounds
in time against a real ZooKeeper and one that never answers.
"""

from __future__ import annotations

import io
import json
import os
import socket
import time
from contextlib import redirect_stderr, redirect_stdout

import attr
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from kazoo.security import OPEN_ACL_UNSAFE, make_digest_acl
from twisted.trial.unittest import SynchronousTestCase

from sentinel import settings as settings_module
from sentinel import status as status_module
from sentinel.config import ZooKeeperConfig
from sentinel.status import (
    CLOSE_TIMEOUT,
    DOWN,
    MAX_CELL,
    MISNAMED,
    OK,
    READS_IN_FLIGHT,
    SHOWN_OBSERVERS,
    UNKNOWN,
    Unreadable,
    annotate,
    build_parser,
    format_table,
    main,
    read_instances,
    verdict,
    zookeeper_settings,
)
from tests.servers import LOOPBACK, shared_zookeeper
from tests.test_config import ConfigTestCase

NOW = 1_700_000_000.0


def document(name: str, checked_ago: float, **fields: object) -> dict[str, object]:
    return {
        "name": name,
        "status": "up",
        "ready": True,
        "role": "master",
        "latency_ms": 0.42,
        "since": NOW - 3600,
        "checked_at": NOW - checked_ago,
        "agent": "host-1",
        **fields,
    }


class _Answer:
    """A kazoo async result, settled: `value`, or `value` raised."""

    def __init__(self, value: object) -> None:
        self.value = value

    def get(self, timeout: float) -> object:
        if isinstance(self.value, Exception):
            raise self.value
        return self.value


class StoredNodes:
    """The reads `read_instances` makes, of nodes in a dict, answered at once."""

    def __init__(self, nodes: dict[str, bytes]) -> None:
        self.nodes = nodes

    def get_children_async(self, path: str) -> _Answer:
        prefix = path + "/"
        return _Answer([p[len(prefix) :] for p in self.nodes if p.startswith(prefix)])

    def get_async(self, path: str) -> _Answer:
        if path not in self.nodes:
            return _Answer(NoNodeError())
        return _Answer((self.nodes[path], None))


class FakeTime:
    """`time` for `sentinel.status`: a monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return NOW + self.now


class SlowNodes(StoredNodes):
    """Stored nodes, each read costing `cost` seconds of `clock` to send."""

    def __init__(self, nodes: dict[str, bytes], clock: FakeTime, cost: float) -> None:
        super().__init__(nodes)
        self.clock = clock
        self.cost = cost
        self.sent = 0

    def get_async(self, path: str) -> _Answer:
        self.clock.now += self.cost
        self.sent += 1
        return super().get_async(path)


def run_main(*argv: str) -> tuple[int, str, str]:
    """main(argv): its exit status, standard output and standard error."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


class FormatTests(SynchronousTestCase):
    """Rows, ages and the stale flag."""

    def test_stale_after_three_refreshes(self) -> None:
        """A row is stale once checked_at is older than 3 x refresh."""
        rows = annotate([document("a", 89.0), document("b", 91.0)], NOW, 30.0)
        self.assertEqual([r["stale"] for r in rows], [False, True])
        self.assertEqual(rows[0]["age_seconds"], 89.0)

    def test_missing_checked_at_is_stale(self) -> None:
        """A node without checked_at cannot be trusted."""
        rows = annotate([{"name": "x"}], NOW, 30.0)
        self.assertTrue(rows[0]["stale"])

    def test_table(self) -> None:
        """One aligned row per instance, with STALE where it applies."""
        rows = annotate(
            [
                document("a", 5.0),
                document("b", 200.0, status="down", role=None),
                {"name": "c", "missing": True},
            ],
            NOW,
            30.0,
        )
        lines = format_table(rows, NOW).splitlines()
        self.assertEqual(
            lines[0].split(),
            ["name", "status", "ready", "role", "latency", "since", "agent", "age"],
        )
        self.assertEqual(
            lines[1].split(),
            ["a", "up", "yes", "master", "0.42ms", "60m", "host-1", "5s"],
        )
        self.assertEqual(
            lines[2].split(),
            ["b", "down", "yes", "-", "0.42ms", "60m", "host-1", "3m", "STALE"],
        )
        self.assertEqual(
            lines[3].split(), ["c", "missing", "no", "-", "-", "-", "-", "-"]
        )

    def test_uncounted_observers(self) -> None:
        """
        A group's verdict shows each observer's opinion with those its
        quorum left out marked (uncounted), even behind long agent ids;
        --json's rows say which downs were counted, so that "up" beside two
        downs at quorum 2 reads as the count it is. Rows without observers
        (replicas = 1) get neither a column nor the field.
        """
        long_id = "sentinel-prod-use1-az2-host17.example.net"
        rows = annotate(
            [
                document(
                    "g",
                    1.0,
                    agent=long_id,
                    schema=2,
                    observers={long_id: "up", "b" * 30: "down", "c" * 30: "down"},
                    quorum=2,
                    uncounted=["c" * 30],
                ),
                document(
                    "h",
                    1.0,
                    status="down",
                    schema=2,
                    observers={"a": "down", "b": "down", "c": None},
                    quorum=2,
                    uncounted=[],
                ),
                # An agent from before the field, and data that is no list.
                document("i", 1.0, schema=2, observers={"a": "down"}, quorum=2),
                document("j", 1.0, observers={"a": "down"}, uncounted="a"),
            ],
            NOW,
            30.0,
        )
        self.assertEqual(
            [r["counted_down"] for r in rows], [["b" * 30], ["a", "b"], ["a"], ["a"]]
        )
        lines = format_table(rows, NOW).splitlines()
        self.assertEqual(lines[0].split()[-2:], ["observers", "quorum"])
        self.assertEqual(
            lines[1].split()[-4:],
            [f"{long_id}:up", f"{'b' * 30}:down", f"{'c' * 30}:down(uncounted)", "2"],
        )
        self.assertEqual(lines[2].split()[-4:], ["a:down", "b:down", "c:?", "2"])
        self.assertEqual(lines[4].split()[-2:], ["a:down", "-"])
        self.assertEqual("\n".join(lines).count("(uncounted)"), 1)
        plain = annotate([document("a", 1.0)], NOW, 30.0)
        self.assertNotIn("counted_down", plain[0])
        self.assertNotIn("observers", format_table(plain, NOW))

    def test_many_observers_are_cut(self) -> None:
        """
        A node listing thousands of observers shows a few and how many
        more, each observer cut to MAX_CELL: no row grows with the list.
        """
        observers = {f"{i:070d}": "down" for i in range(5000)}
        rows = annotate([document("a", 1.0, observers=observers)], NOW, 30.0)
        lines = format_table(rows, NOW).splitlines()
        self.assertLess(len(lines[1]), 20 * MAX_CELL)
        self.assertEqual(lines[1].split()[-2], f"+{5000 - SHOWN_OBSERVERS}")
        self.assertEqual(len(rows[0]["counted_down"]), 5000)

    def test_numbers_that_tell_no_age(self) -> None:
        """
        A checked_at that is not a finite number (NaN, an integer too
        large for a float), or more than three refreshes ahead of this
        clock, cannot show that an agent refreshes: stale.
        """
        rows = annotate(
            [
                document("nan", 0.0, checked_at=float("nan")),
                document("inf", 0.0, checked_at=float("inf")),
                document("huge", 0.0, checked_at=10**4000),
                document("ahead", -91.0),
                document("slightly-ahead", -5.0),
            ],
            NOW,
            30.0,
        )
        self.assertEqual([r["stale"] for r in rows], [True, True, True, True, False])
        self.assertEqual(
            [r["age_seconds"] for r in rows], [None, None, None, -91.0, -5.0]
        )
        lines = format_table(rows, NOW).splitlines()
        self.assertEqual(lines[4].split()[-2:], ["-91s", "STALE"])
        self.assertEqual(lines[5].split()[-1], "-5s")

    def test_hostile_values(self) -> None:
        """
        Values from ZooKeeper reach the terminal escaped and cut short:
        no control character, no row wider than the columns allow.
        """
        rows = annotate(
            [
                document(
                    "evil\x1b[31m\r\nfake",
                    0.0,
                    status="up" * 100_000,
                    agent="\u202ehost",
                    latency_ms=float("nan"),
                    since=10**4000,
                    observers={"b\x07": "up"},
                    quorum=[1] * 1000,
                )
            ],
            NOW,
            30.0,
        )
        table = format_table(rows, NOW)
        lines = table.splitlines()
        self.assertEqual(len(lines), 2)
        self.assertTrue(all(c.isprintable() for c in table.replace("\n", "")))
        self.assertLess(len(lines[1]), 20 * MAX_CELL)
        cells = lines[1].split()
        self.assertEqual(cells[0], "evil\\x1b[31m\\r\\nfake")
        self.assertEqual(cells[1], "up" * 30 + "u...")
        self.assertEqual(cells[4:7], ["-", "-", "\\u202ehost"])
        self.assertEqual(cells[8], "b\\x07:up")
        code, why = verdict(rows, "/sentinel")
        self.assertEqual((code, why), (DOWN, "not up: evil\\x1b[31m\\r\\nfake"))

    def test_only_true_is_ready(self) -> None:
        """
        The ready column says yes only for JSON true: a string "no", a 1 or
        a list from a node's data are no.
        """
        rows = annotate(
            [
                document("a", 1.0),
                document("b", 1.0, ready="no"),
                document("c", 1.0, ready=1),
                document("d", 1.0, ready=[False]),
            ],
            NOW,
            30.0,
        )
        lines = format_table(rows, NOW).splitlines()
        self.assertEqual(
            [line.split()[2] for line in lines[1:]], ["yes", "no", "no", "no"]
        )

    def test_numbers_are_cut(self) -> None:
        """
        A number is cut to MAX_CELL characters like any value: a latency of
        1e308 ms (309 digits) widens no row.
        """
        rows = annotate(
            [document("a", 1.0), document("huge", 1.0, latency_ms=1e308)], NOW, 30.0
        )
        lines = format_table(rows, NOW).splitlines()
        latency = lines[2].split()[4]
        self.assertEqual(latency, f"{1e308:.2f}"[: MAX_CELL - 3] + "...")
        self.assertLess(max(len(line) for line in lines), 2 * MAX_CELL)

    def test_rows_named_by_their_node(self) -> None:
        """
        A row is named by its node, not by its data; data naming another
        instance (a squatter's) is flagged MISNAMED and kept as
        name_in_data, and makes the status UNKNOWN; data naming none is not
        flagged.
        """
        now = time.time()
        nodes = {
            "/h/instances/cache-1": document("cache-1", 1.0, checked_at=now),
            "/h/instances/cache-2": document("cache-2", 1.0, checked_at=now),
            "/h/instances/squat": document("cache-2", 1.0, checked_at=now),
            "/h/instances/nameless": {"status": "up", "checked_at": now},
        }
        client = StoredNodes({p: json.dumps(d).encode() for p, d in nodes.items()})
        documents = read_instances(client, "/h", time.monotonic() + 5)
        rows = annotate(documents, now, 30.0)
        self.assertEqual(
            [(r["name"], r.get("name_in_data")) for r in rows],
            [
                ("cache-1", None),
                ("cache-2", None),
                ("nameless", None),
                ("squat", "cache-2"),
            ],
        )
        lines = format_table(rows, now).splitlines()
        self.assertEqual(lines[4].split()[:3], ["squat", MISNAMED, "up"])
        self.assertEqual([line.count(MISNAMED) for line in lines], [0, 0, 0, 0, 1])
        self.assertEqual(
            verdict(rows, "/h"), (UNKNOWN, "data naming another instance: squat")
        )


class DeadlineTests(SynchronousTestCase):
    """A listing too long to read by the deadline."""

    def test_reads_stop_at_the_deadline(self) -> None:
        """
        Reads are sent only until the deadline, not all at once: 5,000
        nodes whose reads take 1 ms each to send, in 1 s, end after about
        1,000 sent, saying how many of them were read and within what time.
        """
        clock = FakeTime()
        self.patch(status_module, "time", clock)
        nodes = {
            f"/h/instances/n{i:04d}": json.dumps(document(f"n{i:04d}", 0.0)).encode()
            for i in range(5000)
        }
        client = SlowNodes(nodes, clock, 0.001)
        error = self.assertRaises(
            Unreadable, read_instances, client, "/h", 1.0, (), 1.0
        )
        self.assertLessEqual(client.sent, 1001)
        self.assertEqual(
            str(error),
            f"read {client.sent} of 5000 nodes under /h/instances within 1 s: "
            "ZooKeeper answers, but more time (--timeout) is needed",
        )

    def test_all_read_in_time(self) -> None:
        """More nodes than are read at once, all read in time: every row."""
        clock = FakeTime()
        self.patch(status_module, "time", clock)
        count = 3 * READS_IN_FLIGHT + 1
        nodes = {
            f"/h/instances/n{i:04d}": json.dumps(document(f"n{i:04d}", 0.0)).encode()
            for i in range(count)
        }
        client = SlowNodes(nodes, clock, 0.0001)
        documents = read_instances(client, "/h", 1.0)
        self.assertEqual(len(documents), count)
        self.assertEqual(client.sent, count)


class VerdictTests(SynchronousTestCase):
    """The exit status: 0 all up, 1 some not up, 2 when the data cannot be trusted."""

    def verdict(self, *documents: dict[str, object]) -> tuple[int, str | None]:
        return verdict(annotate(list(documents), NOW, 30.0), "/sentinel")

    def test_all_up(self) -> None:
        """Every row up (ready or not) is OK, with no reason."""
        self.assertEqual(
            self.verdict(document("a", 1.0), document("b", 1.0, ready=False)),
            (OK, None),
        )

    def test_down(self) -> None:
        """A row down, or not decided yet, is DOWN, naming the rows."""
        self.assertEqual(
            self.verdict(
                document("a", 1.0),
                document("b", 1.0, status="down"),
                document("c", 1.0, status=None),
            ),
            (DOWN, "not up: b, c"),
        )

    def test_many_names_are_cut(self) -> None:
        """The reason stays one short line however many rows are down."""
        rows = [document(f"r{i}", 1.0, status="down") for i in range(100)]
        self.assertEqual(
            self.verdict(*rows), (DOWN, "not up: r0, r1, r2, r3, r4 and 95 more")
        )

    def test_unknown_beats_down(self) -> None:
        """
        A stale or unreadable row is UNKNOWN even when another is down:
        nothing can be said of what it shows.
        """
        self.assertEqual(
            self.verdict(
                document("a", 1.0, status="down"),
                document("b", 100.0),
                {"name": "c", "error": "unreadable node data"},
            ),
            (UNKNOWN, "stale or unreadable: b, c"),
        )

    def test_nothing_to_show(self) -> None:
        """No instance node at all is UNKNOWN (a wrong root, or no agent)."""
        self.assertEqual(
            self.verdict(), (UNKNOWN, "no instances under /sentinel/instances")
        )

    def test_missing_name(self) -> None:
        """A name asked for without a node is UNKNOWN."""
        self.assertEqual(
            self.verdict(document("a", 1.0), {"name": "b", "missing": True}),
            (UNKNOWN, "no node for b"),
        )


class SettingsTests(ConfigTestCase):
    """Where to read: the agent's config, options over it, one-line errors."""

    def settings(self, *argv: str) -> ZooKeeperConfig:
        return zookeeper_settings(build_parser().parse_args(list(argv)))

    def assertRefused(self, expected: str, *argv: str) -> None:
        """main(argv) exits 2 with `expected` as one line on stderr, nothing else."""
        code, out, err = run_main(*argv)
        self.assertEqual(
            (code, out, err), (UNKNOWN, "", f"sentinel-status: {expected}\n")
        )

    def test_defaults_from_table(self) -> None:
        """The root and refresh default to the agent's own defaults."""
        zookeeper = self.settings("--zookeeper", "z:1")
        self.assertEqual(
            (zookeeper.hosts, zookeeper.root, zookeeper.refresh, zookeeper.auth),
            ("z:1", "/sentinel", 30.0, None),
        )

    def test_table_drives_defaults(self) -> None:
        """A default changed in the table is the command's default too."""
        by_key = dict(settings_module._BY_KEY)
        for key, value in (("zookeeper.root", "/other"), ("zookeeper.refresh", 5.0)):
            by_key[key] = attr.evolve(by_key[key], default=value)
        self.patch(settings_module, "_BY_KEY", by_key)
        zookeeper = self.settings("--zookeeper", "z:1")
        self.assertEqual((zookeeper.root, zookeeper.refresh), ("/other", 5.0))
        self.assertIn(
            "(default: /other)", " ".join(build_parser().format_help().split())
        )

    def test_from_config(self) -> None:
        """
        --config gives hosts, root, refresh and auth from the agent's file
        (relative paths from the file); the rest of the file is not read:
        its password files may be the agent's alone.
        """
        self.write("zk-auth", "reader:secret\n")
        path = self.write(
            "sentinel.toml",
            '[zookeeper]\nhosts = "zk1:2181/app"\nroot = "/health"\nrefresh = 5\n'
            'auth_file = "zk-auth"\n\n'
            '[[redis]]\nhost = "h"\nport = 1\npassword_file = "/nonexistent"\n',
        )
        zookeeper = self.settings("--config", path)
        self.assertEqual(
            (
                zookeeper.hosts,
                zookeeper.root,
                zookeeper.refresh,
                zookeeper.auth_file,
                zookeeper.auth,
            ),
            (
                "zk1:2181/app",
                "/health",
                5.0,
                os.path.join(self.directory, "zk-auth"),
                "reader:secret",
            ),
        )

    def test_options_override_config(self) -> None:
        """--zookeeper, --zk-root and --refresh beat the file."""
        path = self.write(
            "sentinel.toml",
            '[zookeeper]\nhosts = "zk1:2181"\nroot = "/a"\nrefresh = 5\n',
        )
        zookeeper = self.settings(
            "--config", path, "--zookeeper", "zk2:2181", "--zk-root", "/b",
            "--refresh", "7",
        )  # fmt: skip
        self.assertEqual(
            (zookeeper.hosts, zookeeper.root, zookeeper.refresh),
            ("zk2:2181", "/b", 7.0),
        )

    def test_errors(self) -> None:
        """
        Every invalid input is one line naming the field and the value, and
        exit status 2, before anything is connected to.
        """
        missing = os.path.join(self.directory, "missing.toml")
        # Both ways named: before, only "--zookeeper is required".
        self.assertRefused(
            "no ZooKeeper hosts: give --zookeeper HOSTS, or --config with the"
            " agent's config file"
        )
        self.assertRefused(
            f"config file {missing}: cannot read: No such file or directory",
            "--config", missing,
        )  # fmt: skip
        no_zk = self.write("no-zk.toml", "interval = 1\n")
        self.assertRefused(
            f"no ZooKeeper hosts: config file {no_zk} has no zookeeper.hosts; "
            "give --zookeeper",
            "--config", no_zk,
        )  # fmt: skip
        bad = self.write("bad.toml", '[zookeeper]\nhosts = "zk1:"\n')
        self.assertRefused(
            "zookeeper.hosts: 'zk1:' is not HOST[:PORT][,HOST[:PORT]...][/CHROOT]"
            " at 'zk1:'",
            "--config", bad,
        )  # fmt: skip
        self.assertRefused(
            "--zk-root: 'x' is not an absolute znode path: does not start with '/'",
            "--zookeeper", "z:1", "--zk-root", "x",
        )  # fmt: skip
        self.assertRefused(
            "--refresh: 0.0 is not greater than 0",
            "--zookeeper",
            "z:1",
            "--refresh",
            "0",
        )
        self.assertRefused(
            "--refresh: inf is not a finite number",
            "--zookeeper", "z:1", "--refresh", "inf",
        )  # fmt: skip
        self.assertRefused(
            "--refresh: 1000000000.0 is more than 86400 s",
            "--zookeeper", "z:1", "--refresh", "1e9",
        )  # fmt: skip
        self.assertRefused(
            "--refresh: 1e-320 is less than 0.1 s",
            "--zookeeper", "z:1", "--refresh", "1e-320",
        )  # fmt: skip
        self.assertRefused(
            "--timeout: nan is not a finite number",
            "--zookeeper", "z:1", "--timeout", "nan",
        )  # fmt: skip
        self.assertRefused(
            "argument --refresh: invalid float value: 'soon'",
            "--zookeeper", "z:1", "--refresh", "soon",
        )  # fmt: skip
        self.assertRefused("unrecognized arguments: --zk", "--zk", "z:1")

    def test_auth_file_errors(self) -> None:
        """An auth file that cannot be used is the agent's one line."""
        path = self.write(
            "sentinel.toml", '[zookeeper]\nhosts = "z:1"\nauth_file = "auth"\n'
        )
        auth = os.path.join(self.directory, "auth")
        self.assertRefused(
            f"zookeeper.auth_file: cannot read {auth}: No such file or directory",
            "--config", path,
        )  # fmt: skip
        self.write("auth", "no-colon\n")
        self.assertRefused(
            f"zookeeper.auth_file: {auth} does not hold user:password", "--config", path
        )


class SilentZooKeeperTests(SynchronousTestCase):
    """A ZooKeeper port that accepts connections and never answers."""

    def test_bounded(self) -> None:
        """
        The command gives up after --timeout (and a bounded close), with one
        line and exit status 2: it never waits for ZooKeeper's own timeouts.
        """
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind((LOOPBACK, 0))
        # The kernel completes connections into the backlog: nobody answers.
        listener.listen(8)
        port = listener.getsockname()[1]
        started = time.monotonic()
        code, out, err = run_main(
            "--zookeeper", f"{LOOPBACK}:{port}", "--timeout", "0.5"
        )
        elapsed = time.monotonic() - started
        self.assertEqual(
            (code, out, err),
            (
                UNKNOWN,
                "",
                f"sentinel-status: cannot reach {LOOPBACK}:{port} within 0.5 s\n",
            ),
        )
        self.assertLess(elapsed, 0.5 + CLOSE_TIMEOUT + 1.0)

    def test_refused(self) -> None:
        """A port where nothing listens: the same, within the timeout."""
        listener = socket.socket()
        listener.bind((LOOPBACK, 0))
        port = listener.getsockname()[1]
        listener.close()
        code, _, err = run_main("--zookeeper", f"{LOOPBACK}:{port}", "--timeout", "0.3")
        self.assertEqual(code, UNKNOWN)
        self.assertEqual(len(err.splitlines()), 1)
        self.assertIn(f"cannot reach {LOOPBACK}:{port}", err)


class ZooKeeperTests(SynchronousTestCase):
    """Against a real ZooKeeper, nodes written here."""

    def setUp(self) -> None:
        self.zookeeper = shared_zookeeper()
        self.client = KazooClient(hosts=self.zookeeper.hosts, timeout=5)
        self.client.start(timeout=5)
        self.addCleanup(self.client.close)
        self.addCleanup(self.client.stop)
        self.root = "/status-test"
        self.client.delete(self.root, recursive=True)
        self.addCleanup(self.client.delete, self.root, recursive=True)

    def put(self, name: str, data: bytes) -> None:
        self.client.create(f"{self.root}/instances/{name}", data, makepath=True)

    def put_document(self, name: str, **fields: object) -> None:
        fields.setdefault("checked_at", time.time())
        self.put(name, json.dumps(document(name, 0.0, **fields)).encode())

    def status(self, *argv: str) -> tuple[int, str, str]:
        return run_main(
            "--zookeeper", self.zookeeper.hosts, "--zk-root", self.root, *argv
        )

    def test_exit_status(self) -> None:
        """0 while every instance is up, 1 once one is down, naming it."""
        self.put_document("a")
        self.put_document("b")
        code, out, err = self.status()
        self.assertEqual((code, err), (OK, ""))
        self.assertEqual(
            [line.split()[0] for line in out.splitlines()], ["name", "a", "b"]
        )
        self.client.set(
            f"{self.root}/instances/b",
            json.dumps(
                document("b", 0.0, status="down", checked_at=time.time())
            ).encode(),
        )
        code, out, err = self.status()
        self.assertEqual((code, err), (DOWN, "sentinel-status: not up: b\n"))

    def test_json(self) -> None:
        """
        --json prints every node with age, stale flag and the exit status;
        unreadable data and a node years old make it 2.
        """
        self.put_document("r1", checked_at=NOW)
        self.put("broken", b"\xff")
        code, out, err = self.status("--json")
        self.assertEqual(code, UNKNOWN)
        answer = json.loads(out)
        self.assertEqual(answer["status"], UNKNOWN)
        rows = answer["instances"]
        self.assertEqual([r["name"] for r in rows], ["broken", "r1"])
        self.assertEqual(rows[0]["error"], "unreadable node data")
        self.assertTrue(rows[1]["stale"])
        self.assertEqual(err, "sentinel-status: stale or unreadable: broken, r1\n")

    def test_hostile_nodes(self) -> None:
        """
        Node data nested too deep to parse, or with a number too long for
        Python to read, is an unreadable row (2), not a traceback.
        """
        self.put_document("a")
        self.put("deep", b"[" * 100_000 + b"]" * 100_000)
        self.put("long", b'{"checked_at": ' + b"9" * 5000 + b"}")
        code, out, err = self.status()
        self.assertEqual(code, UNKNOWN)
        self.assertEqual(
            [line.split()[:2] for line in out.splitlines()[1:]],
            [["a", "up"], ["deep", "unknown"], ["long", "unknown"]],
        )
        self.assertEqual(err, "sentinel-status: stale or unreadable: deep, long\n")

    def test_squatter(self) -> None:
        """
        A node whose data names another instance, with a latency of 1e308,
        is its own row, flagged, no wider than the others allow (2).
        """
        self.put_document("cache-1")
        self.put_document("cache-2")
        squatter = document("cache-2", 0.0, checked_at=time.time(), latency_ms=1e308)
        self.put("squat", json.dumps(squatter).encode())
        code, out, err = self.status()
        lines = out.splitlines()
        self.assertEqual(
            [line.split()[0] for line in lines], ["name", "cache-1", "cache-2", "squat"]
        )
        self.assertEqual(lines[3].split()[1], MISNAMED)
        self.assertLess(max(len(line) for line in lines), 2 * MAX_CELL)
        self.assertEqual(
            (code, err),
            (UNKNOWN, "sentinel-status: data naming another instance: squat\n"),
        )

    def test_names(self) -> None:
        """Names given show only those rows; a name without a node is 2."""
        self.put_document("a")
        self.put_document("b", status="down")
        code, out, _ = self.status("a")
        self.assertEqual(code, OK)
        self.assertEqual([line.split()[0] for line in out.splitlines()], ["name", "a"])
        code, out, err = self.status("a", "gone")
        self.assertEqual((code, err), (UNKNOWN, "sentinel-status: no node for gone\n"))
        self.assertIn("missing", out)

    def test_empty_root(self) -> None:
        """A root without instances is 2: a typo in --zk-root must not pass."""
        code, out, err = run_main(
            "--zookeeper", self.zookeeper.hosts, "--zk-root", "/nothing-here"
        )
        self.assertEqual(
            (code, out, err),
            (
                UNKNOWN,
                "",
                "sentinel-status: no instances under /nothing-here/instances\n",
            ),
        )

    def test_auth(self) -> None:
        """
        With --config naming an auth_file, the command authenticates: it
        reads a root only that identity may read; without, it cannot (2).
        """
        acl = [make_digest_acl("reader", "secret", all=True)]
        self.put_document("a")
        # As that identity, so as to give the node back to all at the end.
        self.client.add_auth("digest", "reader:secret")
        self.client.set_acls(f"{self.root}/instances", acl)
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        with open(os.path.join(directory, "auth"), "w") as f:
            f.write("reader:secret\n")
        config = os.path.join(directory, "sentinel.toml")
        with open(config, "w") as f:
            f.write(
                f'[zookeeper]\nhosts = "{self.zookeeper.hosts}"\n'
                f'root = "{self.root}"\nauth_file = "auth"\n'
            )
        self.addCleanup(self.client.set_acls, f"{self.root}/instances", OPEN_ACL_UNSAFE)
        self.assertEqual(run_main("--config", config)[0], OK)
        code, _, err = self.status()
        self.assertEqual(
            (code, err),
            (UNKNOWN, f"sentinel-status: reading {self.root}/instances: NoAuthError\n"),
        )

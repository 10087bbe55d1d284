"""The human reader of ZooKeeper: python -m sentinel.status."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stderr, redirect_stdout

import attr
from kazoo.client import KazooClient
from twisted.trial.unittest import SynchronousTestCase

from sentinel import settings as settings_module
from sentinel.status import annotate, build_parser, format_table, main
from tests.servers import shared_zookeeper

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
            [document("a", 5.0), document("b", 200.0, status="down", role=None)],
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


class ParserTests(SynchronousTestCase):
    """The command's defaults are the agent's, from the settings table."""

    def test_defaults_from_table(self) -> None:
        """--zk-root and --refresh default to the agent's own defaults."""
        args = build_parser().parse_args(["--zookeeper", "z:1"])
        self.assertEqual((args.zk_root, args.refresh), ("/sentinel", 30.0))

    def test_table_drives_defaults(self) -> None:
        """A default changed in the table is the command's default too."""
        settings = dict(settings_module._BY_KEY)
        for key, value in (("zookeeper.root", "/other"), ("zookeeper.refresh", 5.0)):
            settings[key] = attr.evolve(settings[key], default=value)
        self.patch(settings_module, "_BY_KEY", settings)
        parser = build_parser()
        args = parser.parse_args(["--zookeeper", "z:1"])
        self.assertEqual((args.zk_root, args.refresh), ("/other", 5.0))
        self.assertIn("(default: /other)", " ".join(parser.format_help().split()))


class ZooKeeperTests(SynchronousTestCase):
    """Against a real ZooKeeper."""

    def setUp(self) -> None:
        self.zookeeper = shared_zookeeper()
        self.client = KazooClient(hosts=self.zookeeper.hosts, timeout=5)
        self.client.start(timeout=5)
        self.addCleanup(self.client.close)
        self.addCleanup(self.client.stop)
        self.root = "/status-test"
        self.client.delete(self.root, recursive=True)
        self.client.create(
            f"{self.root}/instances/r1",
            json.dumps(document("r1", 1.0)).encode(),
            makepath=True,
        )
        self.client.create(f"{self.root}/instances/broken", b"\xff", makepath=True)

    def run_main(self, *argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = main(list(argv))
        return code, out.getvalue(), err.getvalue()

    def test_json(self) -> None:
        """--json prints every node with age and stale flag."""
        code, out, _ = self.run_main(
            "--zookeeper", self.zookeeper.hosts, "--zk-root", self.root, "--json"
        )
        self.assertEqual(code, 0)
        rows = json.loads(out)["instances"]
        self.assertEqual([r["name"] for r in rows], ["broken", "r1"])
        self.assertEqual(rows[0]["error"], "unreadable node data")
        self.assertTrue(rows[1]["stale"])  # checked_at is years ago

    def test_table_and_empty_root(self) -> None:
        """A table by default; an empty root says so."""
        code, out, _ = self.run_main(
            "--zookeeper", self.zookeeper.hosts, "--zk-root", self.root
        )
        self.assertEqual(code, 0)
        self.assertIn("r1", out)
        code, out, _ = self.run_main(
            "--zookeeper", self.zookeeper.hosts, "--zk-root", "/nothing-here"
        )
        self.assertEqual(
            (code, out.strip()), (0, "no instances under /nothing-here/instances")
        )

    def test_unreachable(self) -> None:
        """An unreachable ZooKeeper is one line on stderr and exit 1."""
        code, out, err = self.run_main("--zookeeper", "127.0.0.1:1", "--timeout", "0.5")
        self.assertEqual(code, 1)
        self.assertEqual(len(err.strip().splitlines()), 1)
        self.assertIn("cannot reach 127.0.0.1:1", err)

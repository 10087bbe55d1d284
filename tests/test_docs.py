"""
The documents a user reads: README.rst (also the package's description on
the index), the reference under docs/ and BENCHMARKS.rst are valid
reStructuredText, so that they render as written; what README's first
screens promise holds.
"""

from __future__ import annotations

import ast
import io
import re
from pathlib import Path

import docutils.core
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from sentinel import agent
from sentinel.config import (
    Config,
    ConfigError,
    RedisInstance,
    ZooKeeperConfig,
    load_config,
)
from sentinel.settings import SETTINGS, Setting
from tests.fakezk import FakeZooKeeper
from tests.httptest import agent_get

REPO = Path(__file__).resolve().parent.parent

# The reference README.rst links to, one document each.
DOCS = ("checks.rst", "zookeeper.rst", "operations.rst", "groups.rst", "http.rst")


class RestructuredTextTests(SynchronousTestCase):
    """Every warning docutils gives is a place that renders otherwise."""

    def test_valid(self) -> None:
        """README.rst, BENCHMARKS.rst and each docs/ file parse without a warning."""
        docs = sorted(path.name for path in (REPO / "docs").glob("*.rst"))
        self.assertEqual(sorted(set(DOCS) - set(docs)), [])
        for name in ("README.rst", "BENCHMARKS.rst", *(f"docs/{d}" for d in docs)):
            with self.subTest(document=name):
                warnings = io.StringIO()
                docutils.core.publish_doctree(
                    (REPO / name).read_text(encoding="utf-8"),
                    source_path=name,
                    settings_overrides={
                        "report_level": 2,
                        "halt_level": 5,
                        "warning_stream": warnings,
                    },
                )
                self.assertEqual(warnings.getvalue(), "")


class LinkTests(SynchronousTestCase):
    """The README and the reference link to each other by relative paths."""

    def test_targets_exist(self) -> None:
        """
        Each relative link of README.rst and of each docs/ file names a
        file that exists, and README.rst links to every docs/ file.
        """
        readme = (REPO / "README.rst").read_text(encoding="utf-8")
        documents = [REPO / "README.rst", *(REPO / "docs").glob("*.rst")]
        checked = 0
        for path in documents:
            text = path.read_text(encoding="utf-8")
            for target in re.findall(r"<([^<>:\s]+\.rst)>`_", text):
                with self.subTest(document=path.name, target=target):
                    self.assertTrue((path.parent / target).is_file())
                    checked += 1
        for name in DOCS:
            self.assertIn(f"<docs/{name}>`_", readme)
        self.assertGreaterEqual(checked, 2 * len(DOCS))


class LayoutTests(SynchronousTestCase):
    """README's Layout says what each module of ``sentinel/`` is for."""

    def test_every_module_has_a_row(self) -> None:
        """
        Every module of ``sentinel/`` has a row in the Layout table, and
        every row names a module that exists. (Before: 28 modules, among
        them ``chroot.py``, ``sharing.py`` and ``writewatch.py``, had none.)
        """
        readme = (REPO / "README.rst").read_text(encoding="utf-8")
        layout = readme.split("\nLayout\n------\n", 1)[1].split("\nTesting\n", 1)[0]
        rows = set(re.findall(r"^``([a-z_]+\.py)``", layout, re.MULTILINE))
        modules = {
            path.name
            for path in (REPO / "sentinel").glob("*.py")
            if path.name != "__init__.py"
        }
        self.assertEqual(sorted(modules - rows), [])
        self.assertEqual(sorted(rows - modules), [])


class AtAGlanceTests(SynchronousTestCase):
    """README's "At a glance" says what the code does."""

    def test_defaults_are_the_code_s(self) -> None:
        """
        Each key and option in its settings table is the settings table's,
        each key that has an option shows it (before: ``rise``, ``fall``,
        ``zookeeper.hosts`` and ``zookeeper.root`` showed none, under a
        header that says "(option)"), and each default it writes out is
        the code's default.
        """
        readme = (REPO / "README.rst").read_text(encoding="utf-8")
        glance = readme.split("\nAt a glance\n-----------\n", 1)[1]
        glance = glance.split("\n\nSignals", 1)[0]
        by_key = {s.key: s for s in SETTINGS}
        checked = 0
        for line in glance.splitlines():
            if not line.startswith("``"):
                continue
            name, default = re.split(r"\s{2,}", line)[:2]
            keys = [k.strip("[]") for k in re.findall(r"``([a-z_.\[\]]+)``", name)]
            option = re.search(r"\(``(--[a-z-]+)``\)", name)
            shown_option = None if option is None else option.group(1)
            # The header says "(option)": a key that has one shows it.
            self.assertEqual(shown_option, by_key[keys[0]].option, keys[0])
            defaults = re.findall(r"``([^`]+)``", default)
            for key, shown in zip(keys, defaults, strict=False):
                with self.subTest(key=key):
                    self.assertEqual(shown.strip('"'), str(by_key[key].default))
                    checked += 1
        self.assertEqual(checked, 7)


class QuotedOptionErrorTests(SynchronousTestCase):
    """The one-line errors the documents quote for an option are the code's."""

    def test_quoted_lines_are_the_code_s(self) -> None:
        """
        Each ``sentinel: --OPTION: VALUE ...`` line that README.rst or a
        docs/ file quotes, for an option of the settings table whose value
        is checked at load, is exactly what loading that value says. (A
        walk from the README found ``--zk-root /`` refused as "not an
        absolute znode path: ends with '/'", which ``/`` is not; it is
        quoted now with what the code says.) ``--http`` is checked when
        the agent listens, not at load, and is left out.
        """
        text = " ".join(
            (REPO / name).read_text(encoding="utf-8")
            for name in ("README.rst", *(f"docs/{d}" for d in DOCS))
        )
        text = re.sub(r"\s+", " ", text)
        by_option = {s.option: s for s in SETTINGS if s.option and not s.repeatable}
        checked = []
        for line in re.findall(r"``sentinel: (--[a-z-]+: [^`]*)``", text):
            option, _, rest = line.partition(": ")
            value = re.match(r"('[^']*'|-?[0-9.]+) ", rest)
            if option not in by_option or option == "--http" or value is None:
                continue
            shown = value.group(1)
            typed = ast.literal_eval(shown) if shown.startswith("'") else shown
            entry = by_option[option]

            def load(entry: Setting = entry, typed: str = typed) -> Config:
                overrides = {entry.key: entry.parse_option(entry.option or "", typed)}
                if entry.key.startswith("zookeeper.") and entry.option != "--zookeeper":
                    overrides["zookeeper.hosts"] = "z:1"
                return load_config(None, overrides, "host-1")

            with self.subTest(line=line):
                error = self.assertRaises(ConfigError, load)
                self.assertEqual(str(error), line)
                checked.append(option)
        self.assertIn("--zk-root", checked)
        self.assertGreaterEqual(len(checked), 4)


class DebugStatsRowTests(SynchronousTestCase):
    """docs/http.rst's HTTP table says what ``GET /debug/stats`` answers with."""

    def test_every_key_named(self) -> None:
        """
        Each key of an agent's ``/debug/stats`` (with ZooKeeper, so that
        its part is there) is named in the table's ``/debug/stats`` row.
        (Before: ``dns``, ``freshness``, ``hello_off``, ``internal_errors``
        and ``sockets`` were named only in sections far from it; so were
        ``clock`` and ``log_output``, which only the process's own policy
        and log output add, and this agent has neither.)
        """
        reactor = MemoryReactorClock()
        fake = FakeZooKeeper(reactor)
        self.patch(agent, "ZooKeeper", lambda *args, **kwargs: fake)
        config = Config(
            instances=(RedisInstance("a", "127.0.0.1", 6379),),
            agent_id="me",
            zookeeper=ZooKeeperConfig(hosts="127.0.0.1:2181"),
        )
        top = agent.make_agent(config, None, reactor)
        top.startService()
        self.addCleanup(top.stopService)
        fake.connect()
        reactor.advance(1.0)
        code, stats = agent_get(self, top, "/debug/stats")
        self.assertEqual(code, 200)
        reference = (REPO / "docs" / "http.rst").read_text(encoding="utf-8")
        http = reference.split("\nHTTP\n----\n", 1)[1]
        row = http.split("``GET /debug/stats``", 1)[1].split("``GET /metrics``", 1)[0]
        named = set(re.findall(r"``([a-z_]+)``", row))
        self.assertEqual(sorted(set(stats) - named), [])


def _titles(text: str) -> set[str]:
    """The section titles of a reStructuredText document, without markup."""
    lines = text.splitlines()
    return {
        lines[i - 1].strip().replace("``", "")
        for i in range(1, len(lines))
        if lines[i]
        and set(lines[i]) <= set("=-~^")
        and len(lines[i]) >= len(lines[i - 1].strip()) > 0
    }


def _names_a_title(reference: str, titles: set[str]) -> bool:
    """
    Whether `reference`, or the words at its end (it may follow prose, as
    in "but see Handover"), is a title of `titles`, a title's start before
    its parenthesis, or titles joined by "and".
    """

    def title(words: str) -> bool:
        return words in titles or any(t.startswith(f"{words} (") for t in titles)

    words = reference.replace("``", "").split()
    for start in range(len(words)):
        tail = " ".join(words[start:])
        if title(tail) or all(title(part) for part in tail.split(" and ")):
            return True
    return False


class SectionReferenceTests(SynchronousTestCase):
    """
    A section named in another document is a title of that document: the
    reference was cut into README.rst and five files under docs/, and a
    name that crossed files no longer leads anywhere.
    """

    def test_named_sections_exist(self) -> None:
        """
        Each "TITLE in docs/FILE.rst" or "TITLE in README.rst" of README.rst
        and the docs/ files names a section of that file, and each
        BENCHMARKS.rst, "TITLE" the start of one of BENCHMARKS.rst's.
        (Before: docs/groups.rst sent its reader to "Signals in
        README.rst's At a glance", a table, for the stop's bounds, which
        are in Stopping, and the other signals.)
        """
        documents = ["README.rst", *(f"docs/{name}" for name in DOCS)]
        titles = {
            name: _titles((REPO / name).read_text(encoding="utf-8"))
            for name in (*documents, "BENCHMARKS.rst")
        }
        checked = 0
        for name in documents:
            text = " ".join((REPO / name).read_text(encoding="utf-8").split())
            for match in re.finditer(
                r"([A-Z][\w ,'`-]*?) in (?:``)?((?:docs/[a-z]+|README)\.rst)", text
            ):
                reference, target = match.groups()
                with self.subTest(document=name, reference=reference, target=target):
                    self.assertTrue(_names_a_title(reference, titles[target]))
                    checked += 1
            for quoted in re.findall(r"BENCHMARKS\.rst``?,? \"([^\"]+)\"", text):
                with self.subTest(document=name, benchmark=quoted):
                    self.assertTrue(
                        any(t.startswith(quoted) for t in titles["BENCHMARKS.rst"])
                    )
                    checked += 1
        self.assertGreaterEqual(checked, 40)

    def test_no_section_of_a_file_not_shipped(self) -> None:
        """
        No document points into a design file the repository does not
        hold, by its name or by a numbered section. (Before:
        docs/groups.rst said "exactly as in section 5" and "the fields
        DESIGN.md lists".)
        """
        # "RFC 9112 section 3.2" is not ours.
        ours = re.compile(r"DESIGN\.md|(?<!\d )\bsection \d+\b")
        for name in ("README.rst", *(f"docs/{d}" for d in DOCS)):
            text = " ".join((REPO / name).read_text(encoding="utf-8").split())
            with self.subTest(document=name):
                self.assertEqual(ours.findall(text), [])

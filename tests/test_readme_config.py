"""
Each TOML example in README.rst and in the reference under docs/ loads
through the real config loader, as an operator who copies it would load it,
and the defaults its comments state are the code's.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import docutils.core
import docutils.nodes
from twisted.trial.unittest import SynchronousTestCase

from sentinel.settings import SETTINGS
from tests.test_example_config import load_in_etc, temporary_etc

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.rst"

_DEFAULT_SAID = re.compile(r"#.*\bdefault:? (.+)$")


def toml_examples(text: str) -> list[tuple[int, str]]:
    """
    The line and text of each literal block of the reStructuredText `text`
    that is a TOML document with at least one key (a shell session, a log
    line or a JSON document is not).
    """
    tree = docutils.core.publish_doctree(text, settings_overrides={"report_level": 5})
    examples = []
    for block in tree.findall(docutils.nodes.literal_block):
        source = block.astext()
        try:
            document = tomllib.loads(source)
        except tomllib.TOMLDecodeError:
            continue
        if document:
            examples.append((block.line or 0, source))
    return examples


def setting_lines(source: str) -> dict[str, str]:
    """Each line of the TOML `source` that sets a key, by the dotted key."""
    lines = {}
    table = ""
    for line in source.splitlines():
        header = re.match(r"\[\[?([a-z_]+)\]\]?", line)
        if header is not None:
            table = header.group(1)
        elif (key := re.match(r"([a-z_]+)\s*=", line)) is not None:
            lines[f"{table}.{key.group(1)}" if table else key.group(1)] = line
    return lines


def documents() -> list[Path]:
    """README.rst, then each document of the reference under docs/."""
    return [README, *sorted((REPO / "docs").glob("*.rst"))]


class ReadmeConfigTests(SynchronousTestCase):
    """
    The examples of the README and of docs/, with the /etc files they name
    in a temporary /etc.
    """

    def setUp(self) -> None:
        self.found = {
            path.relative_to(REPO).as_posix(): toml_examples(
                path.read_text(encoding="utf-8")
            )
            for path in documents()
        }
        self.examples = [
            (f"{name}:{line}", source)
            for name, examples in self.found.items()
            for line, source in examples
        ]
        self.etc = temporary_etc(self, "\n".join(s for _, s in self.examples))

    def test_found(self) -> None:
        """
        The examples are found: Running's in the README, Running a group's
        in docs/groups.rst.
        """
        self.assertGreaterEqual(len(self.found["README.rst"]), 1)
        self.assertGreaterEqual(len(self.found["docs/groups.rst"]), 1)

    def test_loads(self) -> None:
        """Each TOML example of the README and docs/, as it is, loads and validates."""
        for line, source in self.examples:
            with self.subTest(line=line):
                load_in_etc(self.etc, source)

    def test_defaults_said(self) -> None:
        """
        In each example, a key outside ``[[redis]]`` that has a default is
        set to it, or its comment names the default, as the code has it.
        """
        by_key = {s.key: s for s in SETTINGS}
        checked = 0
        for line, source in self.examples:
            for key, text in setting_lines(source).items():
                setting = by_key.get(key)
                if setting is None:
                    continue
                value = tomllib.loads(text.split("#")[0])[key.rpartition(".")[2]]
                said = _DEFAULT_SAID.search(text)
                if setting.default in (None, ()) or value == setting.default:
                    continue
                self.assertIsNotNone(said, f"line {line}: {key}: default not said")
                assert said is not None
                shown = re.match(r'"?([^",;()\s]+)', said.group(1))
                self.assertEqual(
                    shown and shown.group(1), str(setting.default), f"line {line}"
                )
                checked += 1
        self.assertGreaterEqual(checked, 2)

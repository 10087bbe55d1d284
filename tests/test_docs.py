"""
The documents a user reads: README.rst (also the package's description on
the index) and BENCHMARKS.rst are valid reStructuredText, so that they
render as written.
"""

from __future__ import annotations

import io
from pathlib import Path

import docutils.core
from twisted.trial.unittest import SynchronousTestCase

REPO = Path(__file__).resolve().parent.parent


class RestructuredTextTests(SynchronousTestCase):
    """Every warning docutils gives is a place that renders otherwise."""

    def test_valid(self) -> None:
        """README.rst and BENCHMARKS.rst parse without a warning."""
        for name in ("README.rst", "BENCHMARKS.rst"):
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

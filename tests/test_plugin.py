"""
The twistd dropin itself: found by Twisted's plugin system, named
``sentinel``, and making the agent from `sentinel.tap`.
"""

from __future__ import annotations

import subprocess
import sys

from twisted import plugins
from twisted.application.service import IServiceMaker, MultiService
from twisted.plugin import IPlugin, getPlugins
from twisted.plugins import sentinel_plugin
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from sentinel import tap
from sentinel.process import ProcessPolicy
from sentinel.signals import START_SIGNALS
from tests.test_twistd import environment


def sentinel_maker() -> IServiceMaker:
    [maker] = [p for p in getPlugins(IServiceMaker, plugins) if p.tapname == "sentinel"]
    return maker


class DropinTests(SynchronousTestCase):
    """``twisted/plugins/sentinel_plugin.py``, as twistd finds and uses it."""

    def test_found_by_getPlugins(self) -> None:
        """Exactly one IServiceMaker plugin is named sentinel; it is an IPlugin."""
        maker = sentinel_maker()
        self.assertTrue(verifyObject(IServiceMaker, maker))
        self.assertTrue(IPlugin.providedBy(maker))
        self.assertTrue(maker.description)

    def test_options_are_the_tap_options(self) -> None:
        """`twistd sentinel` parses its options with sentinel.tap.Options."""
        self.assertIs(sentinel_maker().options, tap.Options)

    def test_makes_the_agent_with_its_process_policy(self) -> None:
        """
        The plugin's service is the agent's, the process policy first;
        built, not started, so this test changes nothing in its process.
        """
        options = sentinel_maker().options()
        # The options note the signals of this process (SIGTERM, SIGINT...)
        # as twistd's do: given back after the test.
        self.addCleanup(START_SIGNALS.uninstall)
        options.parseOptions(
            ["--redis", "127.0.0.1:6379", "--http", "none", "--agent-id", "me"]
        )
        service = sentinel_maker().makeService(options)
        self.assertIsInstance(service, MultiService)
        assert isinstance(service, MultiService)
        first = list(service)[0]
        self.assertIsInstance(first, ProcessPolicy)
        self.assertFalse(service.running)

    def test_imports_nothing_heavy(self) -> None:
        """
        Importing the dropin does not install a reactor, so that
        ``twistd --reactor=...`` can still choose one.
        """
        probe = (
            "import sys, twisted.plugins.sentinel_plugin as p; "
            "print('twisted.internet.reactor' in sys.modules, "
            "'sentinel.agent' in sys.modules, p.__file__)"
        )
        result = subprocess.run(
            [sys.executable, "-c", probe],
            env=environment(),
            capture_output=True,
            timeout=60,
            text=True,
        )
        reactor, agent, path = result.stdout.split()
        self.assertEqual((reactor, agent), ("False", "False"), result.stderr)
        self.assertEqual(path, sentinel_plugin.__file__)

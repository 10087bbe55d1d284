"""The settings of the topology: discover_replicas, drain_key, replica_grace."""

from __future__ import annotations

from sentinel.checks import MAX_KEY_BYTES
from sentinel.config import RedisInstance
from tests.test_config import ConfigTestCase

REDIS = '[[redis]]\nname = "a"\nhost = "h"\nport = 1\n'


class TopologySettingsTests(ConfigTestCase):
    """Defaults, values, and one-line errors naming the field."""

    def test_defaults(self) -> None:
        """No discovery, no drain key, a 60 s grace."""
        config = self.load(REDIS)
        self.assertEqual(config.replica_grace, 60.0)
        self.assertTrue(config.role_signal)
        self.assertEqual(config.instances, (RedisInstance("a", "h", 1),))
        instance = config.instances[0]
        self.assertEqual(
            (instance.discover_replicas, instance.drain_key, instance.discovered_by),
            (False, None, None),
        )

    def test_values(self) -> None:
        """discover_replicas per instance; drain_key global or its own."""
        config = self.load(
            'drain_key = "drain:{port}"\nreplica_grace = 2.5\nrole_signal = false\n'
            + REDIS
            + "discover_replicas = true\n"
            + '[[redis]]\nname = "b"\nhost = "h"\nport = 2\ndrain_key = "own"\n',
            overrides={},
        )
        a, b = config.instances
        self.assertEqual(config.replica_grace, 2.5)
        self.assertFalse(config.role_signal)
        self.assertEqual((a.discover_replicas, a.drain_key), (True, "drain:{port}"))
        self.assertEqual((b.discover_replicas, b.drain_key), (False, "own"))

    def test_global_drain_key_for_command_line_instances(self) -> None:
        """--redis instances take the file's drain_key too."""
        config = self.load('drain_key = "d"\n', overrides={"redis": ["h:1"]})
        self.assertEqual(config.instances[0].drain_key, "d")

    def test_errors(self) -> None:
        """Each bad value is refused in one line naming the field."""
        self.assertConfigError(
            "redis[0].discover_replicas: 'yes' is not a boolean (true or false)",
            REDIS + 'discover_replicas = "yes"\n',
        )
        self.assertConfigError("drain_key: '' is empty", 'drain_key = ""\n')
        self.assertConfigError(
            "redis[0].drain_key: 1 is not a string", REDIS + "drain_key = 1\n"
        )
        long_key = "k" * (MAX_KEY_BYTES + 1)
        self.assertConfigError(
            f"drain_key: '{'k' * 56}... is longer than {MAX_KEY_BYTES} bytes",
            f'drain_key = "{long_key}"\n',
        )
        self.assertConfigError(
            "replica_grace: 0 is not greater than 0", "replica_grace = 0\n"
        )
        self.assertConfigError(
            "role_signal: 1 is not a boolean (true or false)", "role_signal = 1\n"
        )
        self.assertConfigError(
            "replica_grace: 'long' is not a number", 'replica_grace = "long"\n'
        )

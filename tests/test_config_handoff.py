"""
The settings of issues 10 and 13: ``state_dir`` (where the ZooKeeper session
is kept for the next process), ``zookeeper.discovery`` and
``discovery_root``, and each instance's ``service`` and ``labels``;
validated in one line.
"""

from __future__ import annotations

import os

from sentinel.config import RedisInstance
from tests.test_config import ConfigTestCase

ZOOKEEPER = '[zookeeper]\nhosts = "zk:2181"\n'
REDIS = '[[redis]]\nname = "cache"\nhost = "10.0.0.5"\nport = 6379\n'


class StateDirTests(ConfigTestCase):
    def test_default_none(self) -> None:
        """Without state_dir, nothing is kept for the next process."""
        self.assertIsNone(self.load(ZOOKEEPER).state_dir)

    def test_relative_to_the_file(self) -> None:
        """A relative state_dir in the file is relative to the file."""
        config = self.load('state_dir = "state"\n' + ZOOKEEPER)
        self.assertEqual(config.state_dir, os.path.join(self.directory, "state"))

    def test_option_relative_to_the_working_directory(self) -> None:
        """--state-dir is made absolute from the working directory."""
        config = self.load(ZOOKEEPER, overrides={"state_dir": "here"})
        self.assertEqual(config.state_dir, os.path.abspath("here"))

    def test_needs_zookeeper(self) -> None:
        """A state_dir without ZooKeeper is an error naming the option."""
        self.assertConfigError(
            "--state-dir: given but no zookeeper hosts are configured",
            overrides={"state_dir": "/var/lib/sentinel"},
        )
        self.assertConfigError(
            "state_dir: given but no zookeeper hosts are configured",
            'state_dir = "/var/lib/sentinel"\n',
        )

    def test_invalid(self) -> None:
        """A state_dir that is no file name is one line."""
        self.assertConfigError(
            "state_dir: 3 is not a string", "state_dir = 3\n" + ZOOKEEPER
        )
        self.assertConfigError("state_dir: '' is empty", 'state_dir = ""\n' + ZOOKEEPER)


class DiscoveryTests(ConfigTestCase):
    def test_defaults(self) -> None:
        """No discovery members by default; their root is /discovery."""
        zookeeper = self.load(ZOOKEEPER).zookeeper
        assert zookeeper is not None
        self.assertEqual(
            (zookeeper.discovery, zookeeper.discovery_root), ("none", "/discovery")
        )

    def test_forms(self) -> None:
        """serverset and nerve are the forms readers know."""
        for form in ("serverset", "nerve", "none"):
            zookeeper = self.load(
                ZOOKEEPER + f'discovery = "{form}"\ndiscovery_root = "/sd/redis"\n'
            ).zookeeper
            assert zookeeper is not None
            self.assertEqual(
                (zookeeper.discovery, zookeeper.discovery_root), (form, "/sd/redis")
            )

    def test_errors(self) -> None:
        """Each bad value is one line naming the key and the value."""
        own = "which holds the agents' own nodes"
        for line, expected in (
            ('discovery = "finagle"',
             "discovery: 'finagle' is not serverset, nerve or none"),
            ("discovery = true", "discovery: true is not a string"),
            ('discovery_root = "discovery"',
             "discovery_root: 'discovery' is not an absolute znode path: "
             "does not start with '/'"),
            ('discovery_root = "/a//b"',
             "discovery_root: '/a//b' is not an absolute znode path: "
             "segment '': empty"),
            ('discovery_root = "/sentinel/instances"',
             "discovery_root: '/sentinel/instances' is inside "
             f"/sentinel/instances, {own}"),
            ('discovery_root = "/sentinel/agents/x"',
             "discovery_root: '/sentinel/agents/x' is inside "
             f"/sentinel/agents, {own}"),
        ):  # fmt: skip
            self.assertConfigError(f"zookeeper.{expected}", ZOOKEEPER + line + "\n")

    def test_inside_every_directory_of_the_group(self) -> None:
        """
        Inside any directory the group's agents keep nodes in (opinions and
        catalogs as much as instances and agents) is refused: a nerve
        reader takes an opinion, which names a host and port, for a member.
        """
        for kind in ("opinions", "catalogs"):
            self.assertConfigError(
                f"zookeeper.discovery_root: '/sentinel/{kind}/sd' is inside "
                f"/sentinel/{kind}, which holds the agents' own nodes",
                ZOOKEEPER + f'discovery_root = "/sentinel/{kind}/sd"\n',
            )

    def test_service_folder_on_the_group(self) -> None:
        """
        With discovery on, a service whose folder is one of the group's
        directories, the root itself or above it is refused, naming the
        service and its instance; with discovery off no member is written,
        and nothing is refused.
        """
        for group, root, service, clash in (
            ("/sentinel", "/sentinel", "opinions",
             "/sentinel/opinions, which holds the agents' own nodes"),
            ("/sd/sentinel", "/sd", "sentinel",
             "/sd/sentinel, which holds zookeeper.root /sd/sentinel"),
            ("/sd/redis/group", "/sd", "redis",
             "/sd/redis, which holds zookeeper.root /sd/redis/group"),
        ):  # fmt: skip
            text = (
                ZOOKEEPER
                + f'root = "{group}"\n'
                + f'discovery = "nerve"\ndiscovery_root = "{root}"\n'
                + REDIS
                + f'service = "{service}"\n'
            )
            self.assertConfigError(
                f"zookeeper.discovery_root: {root!r} puts the discovery service "
                f"{service!r} (redis 'cache') at {clash}",
                text,
            )
            self.load(text.replace('"nerve"', '"none"'))

    def test_service_folder_beside_the_group(self) -> None:
        """Services beside the group's directories, under its root, are fine."""
        config = self.load(
            ZOOKEEPER
            + 'discovery = "serverset"\ndiscovery_root = "/sentinel"\n'
            + REDIS
        )
        assert config.zookeeper is not None
        self.assertEqual(config.zookeeper.discovery_root, "/sentinel")

    def test_discovery_root_beside_the_root(self) -> None:
        """Under the agents' root, but outside their own nodes, is fine."""
        zookeeper = self.load(
            ZOOKEEPER + 'discovery_root = "/sentinel/discovery"\n'
        ).zookeeper
        assert zookeeper is not None
        self.assertEqual(zookeeper.discovery_root, "/sentinel/discovery")

    def test_without_zookeeper(self) -> None:
        """A discovery key without ZooKeeper hosts is refused like the others."""
        self.assertConfigError(
            "zookeeper.discovery: given but no zookeeper hosts are configured",
            '[zookeeper]\ndiscovery = "nerve"\n',
        )


class InstanceDiscoveryTests(ConfigTestCase):
    def test_defaults(self) -> None:
        """An instance's service is its name, and it has no labels."""
        [instance] = self.load(REDIS).instances
        self.assertEqual((instance.service, instance.labels), (None, ()))
        self.assertEqual(instance.discovery_service, "cache")

    def test_service_and_labels(self) -> None:
        """service names the member's parent; labels are kept sorted."""
        [instance] = self.load(
            REDIS + 'service = "sessions"\nlabels = {zone = "b", tier = "hot"}\n'
        ).instances
        self.assertEqual(
            instance,
            RedisInstance(
                "cache",
                "10.0.0.5",
                6379,
                service="sessions",
                labels=(("tier", "hot"), ("zone", "b")),
            ),
        )
        self.assertEqual(instance.discovery_service, "sessions")

    def test_errors(self) -> None:
        """Each bad value is one line naming the key and the value."""
        for line, expected in (
            ('service = "a/b"',
             "service: 'a/b' is not a valid znode name: contains '/'"),
            ('service = ".."',
             "service: '..' is not a valid znode name: '.' and '..' are reserved"),
            ("service = 1", "service: 1 is not a string"),
            ('labels = "zone=b"', "labels: 'zone=b' is not a table of strings"),
            ("labels = {zone = 1}", "labels.zone: 1 is not a string"),
            ('labels = {zone = ["b"]}', "labels.zone: ['b'] is not a string"),
            ('labels = {"" = "b"}', "labels: a table (keys: '') has an empty key"),
            ('labels = {role = "master"}',
             "labels.role: 'master' is reserved: it is the instance's role"),
        ):  # fmt: skip
            self.assertConfigError(f"redis[0].{expected}", REDIS + line + "\n")

    def test_labels_bounded(self) -> None:
        """Labels larger than 8 KiB are refused: every member carries them."""
        big = "x" * 9000
        self.assertConfigError(
            "redis[0].labels: a table (keys: 'big') is larger than 8 KiB",
            REDIS + f'labels = {{big = "{big}"}}\n',
        )

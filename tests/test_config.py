"""
Tests for L{sentinel.config}: loading, merging and one-line validation errors.
"""

from __future__ import annotations

import os
import threading
import time
import tomllib
from collections.abc import Mapping, Sequence

import attr
from cryptography import x509
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from sentinel import settings as settings_module
from sentinel.checks import show
from sentinel.config import (
    Config,
    ConfigError,
    RedisInstance,
    ZooKeeperConfig,
    load_config,
    parse_redis_address,
    tell_empty,
    tell_replaced,
)
from sentinel.files import (
    MAX_CA_BYTES,
    MAX_CONFIG_BYTES,
    MAX_SECRET_BYTES,
    FileReader,
    read_regular_file,
    size_text,
)
from sentinel.settings import OPTION_NAMES, REDIS_SETTINGS, SETTINGS, setting
from tests.certs import ca_certificate_pem, client_certificate_pem

SECRET = "hunter2-secret"


class ConfigTestCase(SynchronousTestCase):
    """Helpers: files in a fresh directory, and one-line error checks."""

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)

    def write(self, name: str, text: str) -> str:
        """Write C{text} to C{name} in the test directory; return its path."""
        path = os.path.join(self.directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def load(
        self,
        toml: str | None = None,
        overrides: Mapping[str, object] | None = None,
        agent_id: str = "host-1",
    ) -> Config:
        path = None if toml is None else self.write("sentinel.toml", toml)
        return load_config(path, overrides or {}, agent_id)

    def assertConfigError(
        self,
        expected: str,
        toml: str | None = None,
        overrides: Mapping[str, object] | None = None,
        agent_id: str = "host-1",
    ) -> str:
        """Loading fails with exactly C{expected}, on one line, with no secret."""
        error = self.assertRaises(ConfigError, self.load, toml, overrides, agent_id)
        message = str(error)
        self.assertEqual(message, expected)
        self.assertNotIn("\n", message)
        self.assertNotIn(SECRET, message)
        return message

    def assertConfigErrors(self, cases: Sequence[tuple[str, str]]) -> None:
        """Loading each (TOML, expected) of C{cases} fails with exactly that line."""
        for toml, expected in cases:
            self.assertConfigError(expected, toml)


class DefaultsTests(ConfigTestCase):
    def test_defaults(self) -> None:
        """With no file and no options, every value is DESIGN §5's default."""
        config = self.load()
        self.assertEqual(
            config,
            Config(
                instances=(),
                agent_id="host-1",
                interval=1.0,
                timeout=0.5,
                rise=2,
                fall=3,
                http="tcp:6060:interface=127.0.0.1",
                info_every=10,
                zookeeper=None,
            ),
        )

    def test_zookeeper_defaults(self) -> None:
        """Given only hosts, the ZooKeeper settings take their defaults."""
        config = self.load(overrides={"zookeeper.hosts": "zk:2181"})
        self.assertEqual(
            config.zookeeper,
            ZooKeeperConfig(
                hosts="zk:2181",
                root="/sentinel",
                session_timeout=10.0,
                refresh=30.0,
                heartbeat=10.0,
            ),
        )

    def test_watch_writes(self) -> None:
        """
        ``zookeeper.watch_writes`` is on unless set false (without
        ``auth_file``); anything but a boolean is one line naming it.
        """
        hosts = '[zookeeper]\nhosts = "zk:2181"\n'
        zookeeper = self.load(hosts).zookeeper
        self.assertTrue(zookeeper is not None and zookeeper.watch_writes)
        zookeeper = self.load(hosts + "watch_writes = false\n").zookeeper
        self.assertTrue(zookeeper is not None and not zookeeper.watch_writes)
        self.assertConfigError(
            "zookeeper.watch_writes: 'no' is not a boolean (true or false)",
            hosts + 'watch_writes = "no"\n',
        )

    def test_zero_instances(self) -> None:
        """A file without [[redis]] is valid: the agent runs idle."""
        self.assertEqual(self.load("interval = 2\n").instances, ())
        self.assertEqual(self.load("redis = []\n").instances, ())

    def test_http_none(self) -> None:
        """C{none} (any case) disables HTTP and is stored as C{"none"}."""
        self.assertEqual(self.load(overrides={"http": "none"}).http, "none")
        self.assertEqual(self.load('http = "NONE"\n').http, "none")

    def test_unknown_override_key(self) -> None:
        """An override key that is no option is a programming error."""
        self.assertRaises(ValueError, self.load, None, {"intervall": 1.0})


class FullFileTests(ConfigTestCase):
    def test_full_example(self) -> None:
        """
        A file using every key of DESIGN §5 loads into the expected Config;
        relative file names are relative to the config file, secrets are read.
        """
        self.write("zk-auth", "sentinel:zk-" + SECRET + "\n")
        self.write("cache.pw", SECRET + "\n")
        ca_pem = ca_certificate_pem()
        self.write("ca.pem", ca_pem)
        config = self.load(
            """\
agent_id = "agent-7"
interval = 2
timeout = 1.5
rise = 3
fall = 4
http = "tcp:8080"
info_every = 5

[zookeeper]
hosts = "zk1:2181,zk2:2181/app"
root = "/redis/health"
session_timeout = 15
refresh = 60
heartbeat = 20.5
auth_file = "zk-auth"

[[redis]]
name = "cache"
host = "10.0.0.5"
port = 6379
password_file = "cache.pw"
username = "monitor"

[[redis]]
host = "::1"
port = 6380
tls = true
ca_file = "ca.pem"
server_name = "redis.internal"
"""
        )
        d = self.directory
        self.assertEqual(
            config,
            Config(
                instances=(
                    RedisInstance(
                        name="cache",
                        host="10.0.0.5",
                        port=6379,
                        username="monitor",
                        password_file=os.path.join(d, "cache.pw"),
                        password=SECRET,
                    ),
                    RedisInstance(
                        name="[::1]:6380",
                        host="::1",
                        port=6380,
                        tls=True,
                        ca_file=os.path.join(d, "ca.pem"),
                        server_name="redis.internal",
                        ca_certificates=tuple(
                            x509.load_pem_x509_certificates(ca_pem.encode())
                        ),
                    ),
                ),
                agent_id="agent-7",
                interval=2.0,
                timeout=1.5,
                rise=3,
                fall=4,
                http="tcp:8080",
                info_every=5,
                zookeeper=ZooKeeperConfig(
                    hosts="zk1:2181,zk2:2181/app",
                    root="/redis/health",
                    session_timeout=15.0,
                    refresh=60.0,
                    heartbeat=20.5,
                    auth_file=os.path.join(d, "zk-auth"),
                    auth="sentinel:zk-" + SECRET,
                ),
            ),
        )
        self.assertIsInstance(config.interval, float)
        self.assertNotIn(SECRET, repr(config))


class OverrideTests(ConfigTestCase):
    def test_command_line_beats_file(self) -> None:
        """A given option replaces the file's value; others keep the file's."""
        config = self.load(
            "interval = 5\ntimeout = 2\n", {"interval": 3.0, "agent_id": "cli"}
        )
        self.assertEqual(
            (config.interval, config.timeout, config.agent_id), (3.0, 2.0, "cli")
        )

    def test_redis_replaces_file_list(self) -> None:
        """C{--redis} replaces the file's [[redis]] list, it does not extend it."""
        config = self.load(
            '[[redis]]\nhost = "file"\nport = 1\n',
            {"redis": ["a=cli:2", "cli:3"]},
        )
        self.assertEqual(
            config.instances,
            (
                RedisInstance(name="a", host="cli", port=2),
                RedisInstance(name="cli:3", host="cli", port=3),
            ),
        )

    def test_redis_replacing_counted(self) -> None:
        """
        How many of the file's [[redis]] instances C{--redis} replaced is
        kept for the log (0 for a file that lists none); None without a
        file or without C{--redis}.
        """
        two = '[[redis]]\nhost = "f"\nport = 1\n[[redis]]\nhost = "f"\nport = 2\n'
        cli = {"redis": ["cli:3"]}
        self.assertEqual(self.load(two, cli).replaced_instances, 2)
        self.assertEqual(self.load("rise = 3\n", cli).replaced_instances, 0)
        self.assertIsNone(self.load(two).replaced_instances)
        self.assertIsNone(self.load(None, cli).replaced_instances)

    def test_replaced_file_instances_still_checked(self) -> None:
        """
        A file whose [[redis]] instances are invalid is refused with the
        usual one line even when C{--redis} replaces them: the next start
        without C{--redis} would refuse it.
        """
        cli = {"redis": ["cli:3"]}
        self.assertConfigError(
            "redis[0].port: 'sixty' is not an integer",
            '[[redis]]\nhost = "f"\nport = "sixty"\n',
            cli,
        )
        self.assertConfigError(
            "redis: duplicate instance name 'f:1'",
            '[[redis]]\nhost = "f"\nport = 1\n[[redis]]\nhost = "f"\nport = 1\n',
            cli,
        )

    def test_no_instance_warned(self) -> None:
        """
        A config without instances is warned of, in one line that says
        what to give (with a config file to reload, or without); one with
        instances is not.
        """
        events: list[dict[str, object]] = []
        logger = Logger(observer=events.append)
        tell_empty(logger, self.load(), reloadable=False)
        tell_empty(logger, self.load(), reloadable=True)
        tell_empty(logger, self.load("", {"redis": ["a:2"]}), reloadable=False)
        self.assertEqual(
            [(e["log_level"], formatEvent(e)) for e in events],
            [
                (
                    LogLevel.warn,
                    "no Redis instance to watch: the agent checks nothing; pass "
                    "--redis [NAME=]HOST:PORT (repeatable), or --config with a "
                    "file of [[redis]] tables",
                ),
                (
                    LogLevel.warn,
                    "no Redis instance to watch: the agent checks nothing; add "
                    "[[redis]] tables to the config file and reload it (SIGHUP)",
                ),
            ],
        )

    def test_redis_replacing_said(self) -> None:
        """
        One line says how many of the file's instances the command line's
        replaced; nothing is said without C{--redis}, nor when the file has
        no [[redis]] to replace.
        """
        config = self.load('[[redis]]\nhost = "f"\nport = 1\n', {"redis": ["a:2"]})
        events: list[dict[str, object]] = []
        tell_replaced(Logger(observer=events.append), config)
        tell_replaced(Logger(observer=events.append), self.load())
        tell_replaced(
            Logger(observer=events.append), self.load("rise = 3\n", {"redis": ["a:2"]})
        )
        [event] = events
        self.assertEqual(
            formatEvent(event),
            "--redis: the command line's 1 instance(s) replace the config "
            "file's 1 [[redis]] instance(s), which are validated but not watched",
        )

    def test_zookeeper_hosts_from_command_line(self) -> None:
        """C{--zookeeper} supplies the hosts for the file's [zookeeper] table."""
        config = self.load(
            '[zookeeper]\nroot = "/r"\n',
            {"zookeeper.hosts": "zk:2181", "zookeeper.session_timeout": 4.0},
        )
        self.assertEqual(
            config.zookeeper,
            ZooKeeperConfig(hosts="zk:2181", root="/r", session_timeout=4.0),
        )

    def test_zk_root_without_hosts(self) -> None:
        """C{--zk-root} without any ZooKeeper hosts is an error."""
        self.assertConfigError(
            "--zk-root: given but no zookeeper hosts are configured",
            overrides={"zookeeper.root": "/x"},
        )
        self.assertConfigError(
            "--zk-session-timeout: given but no zookeeper hosts are configured",
            overrides={"zookeeper.session_timeout": 3.0},
        )

    def test_file_zookeeper_setting_without_hosts(self) -> None:
        """A [zookeeper] setting without hosts is an error, not ignored."""
        self.assertConfigError(
            "zookeeper.refresh: given but no zookeeper hosts are configured",
            "[zookeeper]\nrefresh = 5\n",
        )

    def test_option_label_in_errors(self) -> None:
        """An error in an option's value names the option, not the TOML key."""
        self.assertConfigError(
            "--interval: 0.0 is not greater than 0", overrides={"interval": 0.0}
        )
        self.assertConfigError(
            "--timeout: 2.0 is greater than --interval 1.0",
            overrides={"interval": 1.0, "timeout": 2.0},
        )


class NumberTests(ConfigTestCase):
    def test_not_a_number(self) -> None:
        """Strings and booleans are not numbers."""
        self.assertConfigError("interval: 'fast' is not a number", 'interval = "fast"')
        self.assertConfigError("interval: true is not a number", "interval = true")
        self.assertConfigError(
            "zookeeper.heartbeat: [1] is not a number",
            '[zookeeper]\nhosts = "z:1"\nheartbeat = [1]\n',
        )

    def test_int_for_float(self) -> None:
        """Integers are accepted for float fields and stored as floats."""
        config = self.load("interval = 3\ntimeout = 1\n")
        self.assertEqual((config.interval, config.timeout), (3.0, 1.0))
        self.assertIsInstance(config.timeout, float)

    def test_not_positive(self) -> None:
        """Periods and timeouts must be greater than 0 and finite."""
        self.assertConfigError("interval: 0 is not greater than 0", "interval = 0")
        self.assertConfigError(
            "interval: -1.5 is not greater than 0", "interval = -1.5"
        )
        self.assertConfigError("interval: inf is not a finite number", "interval = inf")
        self.assertConfigError("timeout: nan is not a finite number", "timeout = nan")
        # An integer too large for a float, which TOML gives as it is.
        self.assertConfigError(
            "interval: " + "9" * 57 + "... is not a finite number",
            "interval = " + "9" * 400,
        )
        self.assertConfigError("timeout: 0.0 is not greater than 0", "timeout = 0.0")
        for key in ("session_timeout", "refresh", "heartbeat"):
            self.assertConfigError(
                f"zookeeper.{key}: 0 is not greater than 0",
                f'[zookeeper]\nhosts = "z:1"\n{key} = 0\n',
            )

    def test_times_bounded(self) -> None:
        """
        Every time in the config has a floor and a ceiling, each refused in
        one line naming the field and the value: a denormal interval or
        timeout overflowed the check loop (it restarted 67,000 times in
        3.5 s), a nanosecond heartbeat wrote to ZooKeeper as fast as it
        answered, and an interval of 1e308 overflowed the slices.
        """
        zookeeper = '[zookeeper]\nhosts = "z:1"\n'
        self.assertConfigErrors(
            [
                (
                    "interval = 1e-320\ntimeout = 1e-320\n",
                    "interval: 1e-320 is less than 0.01 s",
                ),
                ("interval = 1e308\n", "interval: 1e+308 is more than 86400 s"),
                ("timeout = 1e-320\n", "timeout: 1e-320 is less than 0.001 s"),
                (
                    "interval = 3e7\ntimeout = 3e7\n",
                    "interval: 30000000.0 is more than 86400 s",
                ),
                (
                    "replica_grace = 1e-320\n",
                    "replica_grace: 1e-320 is less than 0.1 s",
                ),
                (
                    "replica_grace = 1e308\n",
                    "replica_grace: 1e+308 is more than 86400 s",
                ),
                (
                    "reconnect_every = 0.5\n",
                    "reconnect_every: 0.5 is less than 1 s",
                ),
                (
                    "reconnect_every = 1e308\n",
                    "reconnect_every: 1e+308 is more than 86400 s",
                ),
                (
                    zookeeper + "heartbeat = 1e-9\n",
                    "zookeeper.heartbeat: 1e-09 is less than 0.1 s",
                ),
                (
                    zookeeper + "refresh = 0.05\n",
                    "zookeeper.refresh: 0.05 is less than 0.1 s",
                ),
                (
                    zookeeper + "refresh = 1e9\n",
                    "zookeeper.refresh: 1000000000.0 is more than 86400 s",
                ),
                (
                    zookeeper + "session_timeout = 0.5\n",
                    "zookeeper.session_timeout: 0.5 is less than 1 s",
                ),
                (
                    zookeeper + "session_timeout = 1e9\n",
                    "zookeeper.session_timeout: 1000000000.0 is more than 3600 s",
                ),
                (
                    "[dns]\ntimeout = 1e-320\n",
                    "dns.timeout: 1e-320 is less than 0.01 s",
                ),
                (
                    "[dns]\ntimeout = 3e7\n",
                    "dns.timeout: 30000000.0 is more than 3600 s",
                ),
            ]
        )
        self.assertConfigError(
            "--interval: 1e-09 is less than 0.01 s",
            overrides={"interval": 1e-9, "timeout": 1e-9},
        )

    def test_reconnect_every(self) -> None:
        """A connection is kept 60 s at most by default; the file may say otherwise."""
        self.assertEqual(self.load("").reconnect_every, 60.0)
        self.assertEqual(self.load("reconnect_every = 1\n").reconnect_every, 1.0)
        self.assertEqual(
            self.load("reconnect_every = 86400\n").reconnect_every, 86400.0
        )

    def test_times_at_bounds(self) -> None:
        """The bounds themselves are allowed; ZooKeeper's 2 s sessions too."""
        config = self.load(
            "interval = 0.01\ntimeout = 0.001\nreplica_grace = 86400\n"
            '[zookeeper]\nhosts = "z:1"\nsession_timeout = 2\nrefresh = 1\n'
            "heartbeat = 86400\n[dns]\ntimeout = 3600\n"
        )
        assert config.zookeeper is not None
        self.assertEqual(
            (
                config.interval,
                config.timeout,
                config.replica_grace,
                config.zookeeper.session_timeout,
                config.zookeeper.refresh,
                config.zookeeper.heartbeat,
                config.dns.timeout,
            ),
            (0.01, 0.001, 86400.0, 2.0, 1.0, 86400.0, 3600.0),
        )
        config = self.load("interval = 86400\ntimeout = 86400\n")
        self.assertEqual((config.interval, config.timeout), (86400.0, 86400.0))
        config = self.load('[zookeeper]\nhosts = "z:1"\nsession_timeout = 3600\n')
        assert config.zookeeper is not None
        self.assertEqual(config.zookeeper.session_timeout, 3600.0)

    def test_timeout_greater_than_interval(self) -> None:
        """A timeout above the interval is refused, naming both."""
        self.assertConfigError(
            "timeout: 0.7 is greater than interval 0.5",
            "interval = 0.5\ntimeout = 0.7\n",
        )

    def test_timeout_equal_to_interval(self) -> None:
        """A timeout equal to the interval is allowed."""
        self.assertEqual(self.load("interval = 0.5\ntimeout = 0.5\n").timeout, 0.5)

    def test_default_timeout_shortened_to_interval(self) -> None:
        """
        An interval shorter than the default timeout, the timeout not
        given, is valid: each check is then allowed the interval, from the
        command line or the file.
        """
        self.assertEqual(self.load(overrides={"interval": 0.2}).timeout, 0.2)
        self.assertEqual(self.load("interval = 0.1\n").timeout, 0.1)
        self.assertEqual(self.load("interval = 0.7\n").timeout, 0.5)

    def test_given_timeout_greater_than_short_interval(self) -> None:
        """A timeout given above a short interval is still refused."""
        self.assertConfigError(
            "timeout: 0.5 is greater than --interval 0.2",
            "timeout = 0.5\n",
            overrides={"interval": 0.2},
        )

    def test_counts(self) -> None:
        """rise, fall and info_every are integers of at least 1."""
        self.assertConfigError("rise: 2.5 is not an integer", "rise = 2.5")
        self.assertConfigError("rise: true is not an integer", "rise = true")
        self.assertConfigError("rise: 0 is less than 1", "rise = 0")
        self.assertConfigError("fall: -1 is less than 1", "fall = -1")
        self.assertConfigError("info_every: 0 is less than 1", "info_every = 0")
        self.assertConfigError("--fall: 0 is less than 1", overrides={"fall": 0})

    def test_counts_bounded(self) -> None:
        """
        rise and fall are at most 1,000 (a huge fall kept a dead instance up
        for good), info_every at most 10,000, replicas and quorum at most 100.
        """
        zookeeper = '[zookeeper]\nhosts = "z:1"\n'
        self.assertConfigErrors(
            [
                (
                    "rise = 9223372036854775807\n",
                    "rise: 9223372036854775807 is more than 1000",
                ),
                ("fall = 1001\n", "fall: 1001 is more than 1000"),
                ("info_every = 10001\n", "info_every: 10001 is more than 10000"),
                (
                    zookeeper + "replicas = 101\n",
                    "zookeeper.replicas: 101 is more than 100",
                ),
                (
                    zookeeper + "quorum = 101\n",
                    "zookeeper.quorum: 101 is more than 100",
                ),
            ]
        )
        self.assertConfigError(
            "--rise: 1001 is more than 1000", overrides={"rise": 1001}
        )
        config = self.load(
            "rise = 1000\nfall = 1000\ninfo_every = 10000\n"
            + zookeeper
            + "replicas = 100\nquorum = 100\n"
        )
        assert config.zookeeper is not None
        self.assertEqual(
            (config.rise, config.fall, config.info_every, config.zookeeper.replicas),
            (1000, 1000, 10000, 100),
        )


class NameTests(ConfigTestCase):
    def test_agent_id(self) -> None:
        """The agent id must be a valid znode name."""
        self.assertConfigError(
            "agent_id: 'a/b' is not a valid znode name: contains '/'",
            'agent_id = "a/b"',
        )
        self.assertConfigError(
            "--agent-id: '..' is not a valid znode name: '.' and '..' are reserved",
            overrides={"agent_id": ".."},
        )
        self.assertConfigError(
            "--agent-id: '' is not a valid znode name: empty",
            overrides={"agent_id": ""},
        )
        self.assertConfigError(
            "agent_id: 'a\\nb' is not a valid znode name: contains a control character",
            'agent_id = "a\\nb"',
        )

    def test_znode_names_and_paths_bounded(self) -> None:
        """
        A name or path that ZooKeeper would take as a request over its
        buffer (which drops the session for every node) is refused: names
        over 1,024 bytes in UTF-8, paths over 4,096.
        """
        name = "é" * 512  # 1,024 bytes
        config = self.load(f'[[redis]]\nname = "{name}"\nhost = "h"\nport = 1\n')
        self.assertEqual(config.instances[0].name, name)
        self.assertConfigError(
            f"redis[0].name: {show(name + 'x')} is not a valid znode name: "
            "longer than 1024 bytes",
            f'[[redis]]\nname = "{name}x"\nhost = "h"\nport = 1\n',
        )
        self.assertConfigError(
            f"--agent-id: {show('a' * 1025)} is not a valid znode name: "
            "longer than 1024 bytes",
            overrides={"agent_id": "a" * 1025},
        )
        root = "/" + "/".join(["r" * 1000] * 5)
        self.assertConfigError(
            f"zookeeper.root: {show(root)} is not an absolute znode path: "
            "longer than 4096 bytes",
            f'[zookeeper]\nhosts = "z:1"\nroot = "{root}"\n',
        )

    def test_characters_zookeeper_refuses(self) -> None:
        """
        A name with a character ZooKeeper refuses in a path (past U+FFFF,
        such as an emoji, or from U+FFF0 on) is refused at load, naming
        it, as is one that is not printable: otherwise the agent ran with
        its node refused at every write. Other letters are taken.
        """
        config = self.load('[[redis]]\nname = "é-日本-ß"\nhost = "h"\nport = 1\n')
        self.assertEqual(config.instances[0].name, "é-日本-ß")
        self.assertConfigError(
            "redis[0].name: 'a🙂' is not a valid znode name: "
            "contains U+1F642, which ZooKeeper refuses in a path",
            '[[redis]]\nname = "a🙂"\nhost = "h"\nport = 1\n',
        )
        self.assertConfigError(
            "--agent-id: 'a\ufffd' is not a valid znode name: "
            "contains U+FFFD, which ZooKeeper refuses in a path",
            overrides={"agent_id": "a\ufffd"},
        )
        self.assertConfigError(
            "redis[0].service: 'c\\xa0d' is not a valid znode name: "
            "contains U+00A0, which is not printable",
            '[[redis]]\nname = "a"\nhost = "h"\nport = 1\nservice = "c\\u00a0d"\n',
        )
        self.assertConfigError(
            "zookeeper.root: '/s/𝔵' is not an absolute znode path: segment "
            "'𝔵': contains U+1D535, which ZooKeeper refuses in a path",
            '[zookeeper]\nhosts = "z:1"\nroot = "/s/𝔵"\n',
        )

    def test_bad_default_agent_id(self) -> None:
        """A host name that is no valid znode name says where it came from."""
        self.assertConfigError(
            "agent_id (the host name): '.' is not a valid znode name: "
            "'.' and '..' are reserved",
            agent_id=".",
        )

    def test_instance_names(self) -> None:
        """Instance names, given or defaulted, must be valid znode names."""
        self.assertConfigError(
            "redis[0].name: 'a/b' is not a valid znode name: contains '/'",
            '[[redis]]\nname = "a/b"\nhost = "h"\nport = 1\n',
        )
        self.assertConfigError(
            "--redis: 'a/b=h:1': name 'a/b' is not a valid znode name: contains '/'",
            overrides={"redis": ["a/b=h:1"]},
        )
        self.assertConfigError(
            "--redis: '=h:1': name '' is not a valid znode name: empty",
            overrides={"redis": ["=h:1"]},
        )

    def test_duplicate_names(self) -> None:
        """Two instances with the same name, given or defaulted, are refused."""
        self.assertConfigError(
            "redis: duplicate instance name 'a'",
            '[[redis]]\nname = "a"\nhost = "h"\nport = 1\n'
            '[[redis]]\nname = "a"\nhost = "h"\nport = 2\n',
        )
        self.assertConfigError(
            "redis: duplicate instance name 'h:1'",
            '[[redis]]\nhost = "h"\nport = 1\n[[redis]]\nhost = "h"\nport = 1\n',
        )
        self.assertConfigError(
            "--redis: duplicate instance name 'a'",
            overrides={"redis": ["a=h:1", "a=h:2"]},
        )


class RedisTableTests(ConfigTestCase):
    def test_ipv6_host(self) -> None:
        """An IPv6 host is stored bare and its default name is bracketed."""
        for host in ("::1", "[::1]"):
            config = self.load(f'[[redis]]\nhost = "{host}"\nport = 6379\n')
            self.assertEqual(
                config.instances, (RedisInstance("[::1]:6379", "::1", 6379),)
            )

    def test_port(self) -> None:
        """The port is an integer in 1-65535."""
        self.assertConfigError(
            "redis[2].port: 70000 is not a port (1-65535)",
            '[[redis]]\nhost = "a"\nport = 1\n'
            '[[redis]]\nhost = "b"\nport = 2\n'
            '[[redis]]\nhost = "c"\nport = 70000\n',
        )
        self.assertConfigError(
            "redis[0].port: 0 is not a port (1-65535)",
            '[[redis]]\nhost = "a"\nport = 0\n',
        )
        self.assertConfigError(
            "redis[0].port: '6379' is not an integer",
            '[[redis]]\nhost = "a"\nport = "6379"\n',
        )
        self.assertConfigError(
            "redis[0].port: true is not an integer",
            '[[redis]]\nhost = "a"\nport = true\n',
        )

    def test_host(self) -> None:
        """The host is a non-empty host name or IP address."""
        self.assertConfigError(
            "redis[0].host: '' is empty", '[[redis]]\nhost = ""\nport = 1\n'
        )
        self.assertConfigError(
            "redis[0].host: 'a b' is not a host name or IP address",
            '[[redis]]\nhost = "a b"\nport = 1\n',
        )
        self.assertConfigError(
            "redis[0].host: '::g' is not an IPv6 address",
            '[[redis]]\nhost = "::g"\nport = 1\n',
        )
        # DNS carries at most 253 characters; a name of that length is taken.
        longest = ".".join(["a" * 63] * 3 + ["b" * 61])
        self.assertEqual(self.load(f'[[redis]]\nhost = "{longest}"\nport = 1\n')
                         .instances[0].host, longest)  # fmt: skip
        self.assertConfigError(
            "redis[0].host: " + show("x" + longest) + " is longer than 253 characters",
            f'[[redis]]\nhost = "x{longest}"\nport = 1\n',
        )
        self.assertConfigError(
            "redis[0].host: 5 is not a string", "[[redis]]\nhost = 5\nport = 1\n"
        )

    def test_host_labels(self) -> None:
        """
        A host name's labels are as the DNS carries them: none empty, none
        over 63 characters, none beginning or ending with '-'; a trailing
        dot (a fully qualified name) is taken.
        """
        for host in ("a..b", ".", ".a", "a" * 64 + ".example"):
            self.assertConfigError(
                f"redis[0].host: {show(host)} is not a host name or IP address "
                "(an empty or too long label)",
                f'[[redis]]\nhost = "{host}"\nport = 1\n',
            )
        for host in ("-a", "a-.example", "a.-b"):
            self.assertConfigError(
                f"redis[0].host: {show(host)} is not a host name or IP address "
                "(a label begins or ends with '-')",
                f'[[redis]]\nhost = "{host}"\nport = 1\n',
            )
        for host in ("redis.example.", "redis-1.example", "_redis.example"):
            config = self.load(f'[[redis]]\nhost = "{host}"\nport = 1\n')
            self.assertEqual(config.instances[0].host, host)

    def test_missing(self) -> None:
        """host and port are required."""
        self.assertConfigError("redis[0].host: missing", "[[redis]]\nport = 1\n")
        self.assertConfigError("redis[0].port: missing", '[[redis]]\nhost = "h"\n')

    def test_port_in_host(self) -> None:
        """
        A missing port that ``host`` holds, as ``--redis HOST:PORT`` writes
        it, is named with the two keys it means. (Before: ``redis[0].port:
        missing`` alone, the port in plain sight.) An IPv6 address without
        brackets holds no port.
        """
        self.assertConfigError(
            "redis[0].port: missing (host '10.0.0.5:6379' holds it:"
            " host = '10.0.0.5' and port = 6379)",
            '[[redis]]\nhost = "10.0.0.5:6379"\n',
        )
        self.assertConfigError(
            "redis[0].port: missing (host '[::1]:6380' holds it:"
            " host = '::1' and port = 6380)",
            '[[redis]]\nhost = "[::1]:6380"\n',
        )
        self.assertConfigError("redis[0].port: missing", '[[redis]]\nhost = "::1"\n')

    def test_not_tables(self) -> None:
        """redis must be an array of tables, zookeeper a table."""
        self.assertConfigError(
            "redis: 'h:1' is not an array of tables ([[redis]])", 'redis = "h:1"'
        )
        self.assertConfigError(
            "redis[0]: 'h:1' is not a table ([[redis]])", 'redis = ["h:1"]'
        )
        self.assertConfigError(
            "zookeeper: 'z:1' is not a table ([zookeeper])", 'zookeeper = "z:1"'
        )

    def test_table_shown_by_its_keys(self) -> None:
        """
        A table where another value belongs is named by its keys, never
        its values: ``[redis]`` written for ``[[redis]]`` may hold a
        password given by mistake. (Before: the whole table, the password
        included.)
        """
        self.assertConfigError(
            "redis: a table (keys: 'host', 'password') is not an array of"
            " tables ([[redis]])",
            '[redis]\nhost = "h"\npassword = "hunter2"\n',
        )
        self.assertConfigError(
            "redis[1]: 1 is not a table ([[redis]])",
            'redis = [{host = "h", port = 1}, 1, {password = "hunter2"}]',
        )
        self.assertConfigError(
            "interval: [true, 'x', a table (keys: 'password')] is not a number",
            'interval = [true, "x", {password = "hunter2"}]',
        )

    def test_unknown_keys(self) -> None:
        """
        Unknown keys anywhere are errors, so typos are not ignored; one is
        named with the known key it is closest to, if one is close.
        (Before: the unknown key alone.)
        """
        self.assertConfigError(
            "unknown key 'intervall' in config file (did you mean interval?)",
            "intervall = 1",
        )
        self.assertConfigError(
            "unknown key 'hots' in [zookeeper] (did you mean hosts?)",
            '[zookeeper]\nhots = "z:1"\n',
        )
        self.assertConfigError(
            "unknown key 'prot' in redis[0] (did you mean port?)",
            '[[redis]]\nhost = "h"\nprot = 1\n',
        )
        self.assertConfigError(
            "unknown key 'pasword' in redis[0]",
            f'[[redis]]\nhost = "h"\nport = 1\npasword = "{SECRET}"\n',
        )

    def test_keys_in_the_wrong_place(self) -> None:
        """
        A top-level key written after a table's line, which TOML puts in
        that table (a key added at the end of the file), says it belongs at
        the top level; a table's key at the top level names its table.
        (Before: ``unknown key 'state_dir' in redis[0]``, though
        ``state_dir`` is a key, and the file's last lines said so.)
        """
        self.assertConfigError(
            "unknown key 'state_dir' in redis[0]: state_dir belongs at the top"
            " level, before the first [table] line (TOML puts every key after"
            " such a line in that table)",
            '[[redis]]\nhost = "h"\nport = 1\nstate_dir = "/var/lib/sentinel"\n',
        )
        self.assertConfigError(
            "unknown key 'interval' in [zookeeper]: interval belongs at the top"
            " level, before the first [table] line (TOML puts every key after"
            " such a line in that table)",
            '[zookeeper]\nhosts = "z:1"\ninterval = 2\n',
        )
        self.assertConfigError(
            "unknown key 'hosts' in config file: hosts belongs in [zookeeper]",
            'hosts = "z:1"\n',
        )
        self.assertConfigError(
            "unknown key 'host' in config file: host belongs in [[redis]]",
            'host = "h"\nport = 1\n',
        )

    def test_empty_key_belongs_nowhere(self) -> None:
        """
        An empty key (TOML allows ``"" = 1``) is named as unknown, with no
        table it would belong in. (Before: ``belongs in [reconnect_every]``,
        the last top-level setting's name taken for a table.)
        """
        self.assertConfigError("unknown key '' in config file", '"" = 1\n')

    def test_tls(self) -> None:
        """tls is a boolean; ca_file and server_name need it; ca_file is read."""
        self.assertConfigError(
            "redis[0].tls: 'yes' is not a boolean (true or false)",
            '[[redis]]\nhost = "h"\nport = 1\ntls = "yes"\n',
        )
        self.assertConfigError(
            "redis[0].ca_file: '/ca.pem' is given but tls is not true",
            '[[redis]]\nhost = "h"\nport = 1\nca_file = "/ca.pem"\n',
        )
        self.assertConfigError(
            "redis[0].server_name: 'r' is given but tls is not true",
            '[[redis]]\nhost = "h"\nport = 1\ntls = false\nserver_name = "r"\n',
        )
        missing = os.path.join(self.directory, "missing.pem")
        self.assertConfigError(
            f"redis[0].ca_file: cannot read {missing}: No such file or directory",
            '[[redis]]\nhost = "h"\nport = 1\ntls = true\nca_file = "missing.pem"\n',
        )

    def test_server_name_is_a_host_name(self) -> None:
        """
        server_name (or the host it defaults to, with tls) is one TLS can
        check a certificate against, refused in one line otherwise: each of
        these started, then failed every check for good.
        """
        head = '[[redis]]\nhost = "h"\nport = 1\ntls = true\nserver_name = '
        long = "a" * 300
        self.assertConfigErrors(
            [
                (
                    head + '"bad name with spaces"\n',
                    "redis[0].server_name: 'bad name with spaces' is not a valid "
                    "host name: Codepoint U+0020 at position 4 of 'bad name with "
                    "spaces' not allowed",
                ),
                (
                    head + '"a..b"\n',
                    "redis[0].server_name: 'a..b' is not a valid host name: "
                    "Empty Label",
                ),
                (
                    head + f'"{long}"\n',
                    f"redis[0].server_name: '{long[:56]}... is not a valid host "
                    "name: Domain too long",
                ),
                (
                    head + '"xn--zz"\n',
                    "redis[0].server_name: 'xn--zz' is not a valid host name: "
                    "Invalid A-label",
                ),
                (
                    head + '"\\u0000"\n',
                    "redis[0].server_name: '\\x00' is not a valid host name: "
                    "Codepoint U+0000 at position 1 of '\\x00' not allowed",
                ),
                (
                    '[[redis]]\nhost = "a_b"\nport = 1\ntls = true\n',
                    "redis[0].host (the TLS server name): 'a_b' is not a valid "
                    "host name: Codepoint U+005F at position 2 of 'a_b' not allowed",
                ),
            ]
        )
        for name in ("redis.example.net", "10.0.0.1", "::1", "müller.de", "h."):
            config = self.load(head + f'"{name}"\n')
            self.assertEqual(config.instances[0].server_name, name)
        # Without tls the host is no server name: a_b stays a host.
        self.assertEqual(
            self.load('[[redis]]\nhost = "a_b"\nport = 1\n').instances[0].host, "a_b"
        )

    def test_ca_file_must_hold_a_certificate(self) -> None:
        """
        ca_file is parsed at load time: a file without a valid PEM
        certificate is an error then, not a failed check later; a bundle
        of several certificates loads.
        """
        for name, content in [
            ("empty.pem", ""),
            ("truncated.pem", "-----BEGIN CERTIFICATE-----\n"),
            (
                "key.pem",
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            ),
        ]:
            path = self.write(name, content)
            self.assertConfigError(
                f"redis[0].ca_file: {path} holds no valid PEM certificate",
                f'[[redis]]\nhost = "h"\nport = 1\ntls = true\nca_file = "{name}"\n',
            )
        bundle = self.write("bundle.pem", ca_certificate_pem() + ca_certificate_pem())
        config = self.load(
            '[[redis]]\nhost = "h"\nport = 1\ntls = true\nca_file = "bundle.pem"\n'
        )
        self.assertEqual(config.instances[0].ca_file, bundle)
        self.assertEqual(len(config.instances[0].ca_certificates), 2)

    def test_tls_without_ca_file(self) -> None:
        """tls alone verifies against the system's certificates: no ca_file."""
        config = self.load('[[redis]]\nhost = "h"\nport = 1\ntls = true\n')
        self.assertEqual(config.instances, (RedisInstance("h:1", "h", 1, tls=True),))


class SecretTests(ConfigTestCase):
    def redis(self, extra: str) -> str:
        return f'[[redis]]\nhost = "h"\nport = 1\n{extra}\n'

    def test_password_file(self) -> None:
        """
        The password is read at load time with one trailing newline removed,
        and never shown in the repr.
        """
        path = self.write("pw", SECRET + "\r\n")
        config = self.load(self.redis(f'password_file = "{path}"'))
        [instance] = config.instances
        self.assertEqual(instance.password, SECRET)
        self.assertEqual(instance.password_file, path)
        self.assertNotIn(SECRET, repr(config))
        self.assertNotIn(SECRET, repr(instance))

    def test_one_line(self) -> None:
        """
        A secret is one line: a second line (even an empty one) is refused,
        and so is a control character such as NUL, without showing the
        secret; spaces and tabs are part of it.
        """
        path = os.path.join(self.directory, "pw")
        for content in (SECRET + "\n\n", SECRET + "\nmore", "\n" + SECRET):
            self.write("pw", content)
            self.assertConfigError(
                f"redis[0].password_file: {path} holds more than one line",
                self.redis('password_file = "pw"'),
            )
        for content in (SECRET + "\0", "\x1b" + SECRET, SECRET + "\x7f"):
            self.write("pw", content)
            self.assertConfigError(
                f"redis[0].password_file: {path} holds a control character",
                self.redis('password_file = "pw"'),
            )
        self.write("pw", f" {SECRET}\t \n")
        [instance] = self.load(self.redis('password_file = "pw"')).instances
        self.assertEqual(instance.password, f" {SECRET}\t ")

    def test_password_file_unreadable(self) -> None:
        """A missing or unreadable password file names the file and the reason."""
        missing = os.path.join(self.directory, "missing")
        self.assertConfigError(
            f"redis[0].password_file: cannot read {missing}: No such file or directory",
            self.redis('password_file = "missing"'),
        )
        self.assertConfigError(
            f"redis[0].password_file: cannot read {self.directory}: Is a directory",
            self.redis(f'password_file = "{self.directory}"'),
        )

    def test_password_file_permission_denied(self) -> None:
        """A password file we may not read says so."""
        if os.geteuid() == 0:
            raise self.skipTest("root reads files whatever their mode")
        path = self.write("pw", SECRET)
        os.chmod(path, 0)
        self.assertConfigError(
            f"redis[0].password_file: cannot read {path}: Permission denied",
            self.redis('password_file = "pw"'),
        )

    def test_password_file_empty(self) -> None:
        """An empty password file (or a lone newline) is an error."""
        for content in ("", "\n"):
            path = self.write("pw", content)
            self.assertConfigError(
                f"redis[0].password_file: {path} is empty",
                self.redis('password_file = "pw"'),
            )

    def test_password_file_not_utf8(self) -> None:
        """A password file that is not UTF-8 is refused without its bytes."""
        path = os.path.join(self.directory, "pw")
        with open(path, "wb") as f:
            f.write(SECRET.encode() + b"\xff")
        self.assertConfigError(
            f"redis[0].password_file: cannot read {path}: not UTF-8 text",
            self.redis('password_file = "pw"'),
        )

    def test_username_needs_password_file(self) -> None:
        """A username without a password file is refused."""
        self.assertConfigError(
            "redis[0].username: 'bob' is given without password_file",
            self.redis('username = "bob"'),
        )

    def zookeeper(self, auth: str) -> str:
        self.write("auth", auth)
        return '[zookeeper]\nhosts = "z:1"\nauth_file = "auth"\n'

    def test_auth_file(self) -> None:
        """The auth file holds user:password; the password may contain ':'."""
        config = self.load(self.zookeeper(f"user:{SECRET}:x\n"))
        assert config.zookeeper is not None
        self.assertEqual(config.zookeeper.auth, f"user:{SECRET}:x")
        self.assertNotIn(SECRET, repr(config))

    def test_watch_writes_off_with_auth_file(self) -> None:
        """
        With ``auth_file`` (the nodes' ACL lets no other client write them)
        instance nodes are not watched for others' writes unless
        ``watch_writes`` says so: the watch would cost a read per write and
        guard nothing.
        """
        zookeeper = self.load(self.zookeeper("sentinel:secret\n")).zookeeper
        self.assertTrue(zookeeper is not None and not zookeeper.watch_writes)
        zookeeper = self.load(
            self.zookeeper("sentinel:secret\n") + "watch_writes = true\n"
        ).zookeeper
        self.assertTrue(zookeeper is not None and zookeeper.watch_writes)

    def test_auth_file_invalid(self) -> None:
        """An auth file not holding user:password is refused, secret unshown."""
        path = os.path.join(self.directory, "auth")
        for content in (SECRET, f":{SECRET}", f"{SECRET}:"):
            self.assertConfigError(
                f"zookeeper.auth_file: {path} does not hold user:password",
                self.zookeeper(content),
            )
        self.assertConfigError(
            f"zookeeper.auth_file: {path} holds more than one line",
            self.zookeeper(f"u:{SECRET}\nmore"),
        )
        self.assertConfigError(
            f"zookeeper.auth_file: {path} is empty", self.zookeeper("")
        )


class ZooKeeperTests(ConfigTestCase):
    def zk(self, hosts: str = "z:2181", root: str | None = None) -> Config:
        overrides = {"zookeeper.hosts": hosts}
        if root is not None:
            overrides["zookeeper.root"] = root
        return self.load(overrides=overrides)

    def test_valid_hosts(self) -> None:
        """Several hosts, IPv6 hosts and a chroot are accepted as given."""
        for hosts in ("h1:2181,h2:2181", "h1:2181/app/x", "[::1]:2181,10.0.0.1:1"):
            config = self.zk(hosts)
            assert config.zookeeper is not None
            self.assertEqual(config.zookeeper.hosts, hosts)

    def test_hosts_without_ports(self) -> None:
        """
        A server without its port is on 2181, as ZooKeeper's own client
        takes it, and spaces around a server are dropped: the hosts are
        written back as HOST:PORT, the chroot kept.
        """
        cases = {
            "zk1,zk2,zk3": "zk1:2181,zk2:2181,zk3:2181",
            "zk1:2181, zk2:2182 ,zk3/app": "zk1:2181,zk2:2182,zk3:2181/app",
            "[::1],10.0.0.1": "[::1]:2181,10.0.0.1:2181",
        }
        for given, written in cases.items():
            config = self.zk(given)
            assert config.zookeeper is not None
            self.assertEqual(config.zookeeper.hosts, written)

    def test_invalid_hosts(self) -> None:
        """Malformed hosts name the option, the value and what is wrong."""
        shape = "is not HOST[:PORT][,HOST[:PORT]...][/CHROOT] at"
        cases = [
            ("h1:", f"{shape} 'h1:'"),
            ("h1:x", f"{shape} 'h1:x'"),
            ("[h1]", f"{shape} '[h1]'"),
            ("::1", f"{shape} '::1'"),
            ("h 1", f"{shape} 'h 1'"),
            ("h1:2181,", f"{shape} ''"),
            ("/app", f"{shape} ''"),
            ("h1:99999", "has port 99999, not in 1-65535"),
            ("h1:2181/", "has an invalid chroot: ends with '/'"),
            ("h1:2181/a//b", "has an invalid chroot: segment '': empty"),
        ]
        for hosts, why in cases:
            self.assertConfigError(
                f"--zookeeper: {hosts!r} {why}", overrides={"zookeeper.hosts": hosts}
            )
        self.assertConfigError(
            "zookeeper.hosts: '' is empty", '[zookeeper]\nhosts = ""\n'
        )

    def test_chroot_before_the_last_server(self) -> None:
        """
        A chroot written after each server (``zk1:2181/app,zk2:2181/app``)
        is refused, with the hosts written as meant: ZooKeeper's client
        takes everything after the first ``/`` for the chroot, so such a
        value connected to the first server only and published under
        ``/app,zk2:2181/app``, a chroot the agent made, where no reader of
        ``/app`` looks. A comma in a chroot that names no server is a
        znode name's, and kept.
        """
        why = "has a chroot before its last server; the chroot goes once, at the end"
        cases = {
            "zk1:2181/app,zk2:2181/app": "zk1:2181,zk2:2181/app",
            "zk1/app,zk2": "zk1:2181,zk2:2181/app",
            "zk1:2181/a/b, zk2:2182/a/b ,[::1]:1/a/b": "zk1:2181,zk2:2182,[::1]:1/a/b",
        }
        for hosts, meant in cases.items():
            self.assertConfigError(
                f"--zookeeper: {hosts!r} {why} ({meant})",
                overrides={"zookeeper.hosts": hosts},
            )
        config = self.zk("zk1:2181/a,b c")
        assert config.zookeeper is not None
        self.assertEqual(config.zookeeper.hosts, "zk1:2181/a,b c")

    def test_root(self) -> None:
        """The root is an absolute znode path without a trailing or empty part."""
        cases = [
            ("sentinel", "does not start with '/'"),
            ("/sentinel/", "ends with '/'"),
            ("/a//b", "segment '': empty"),
            ("/a/../b", "segment '..': '.' and '..' are reserved"),
        ]
        for root, why in cases:
            self.assertConfigError(
                f"--zk-root: {root!r} is not an absolute znode path: {why}",
                overrides={"zookeeper.hosts": "z:1", "zookeeper.root": root},
            )
        config = self.zk(root="/a/b")
        assert config.zookeeper is not None
        self.assertEqual(config.zookeeper.root, "/a/b")

    def test_root_slash(self) -> None:
        """
        A root or discovery root of ``/`` is refused as what it is,
        ZooKeeper's top node, not as a path that is not absolute (it is
        one): the line says to name a node under it, and where a chroot
        goes instead.
        """
        why = (
            "is ZooKeeper's top node: name a node under it (a chroot goes at"
            " the end of the ZooKeeper hosts: HOSTS/CHROOT)"
        )
        self.assertConfigError(
            f"--zk-root: '/' {why}",
            overrides={"zookeeper.hosts": "z:1", "zookeeper.root": "/"},
        )
        self.assertConfigError(
            f"zookeeper.discovery_root: '/' {why}",
            '[zookeeper]\nhosts = "z:1"\ndiscovery_root = "/"\n',
        )

    def test_zookeeper_subtree_refused(self) -> None:
        """
        A root, a discovery root or a chroot in /zookeeper, ZooKeeper's own
        subtree (as ZooKeeper sees it, under the chroot), is refused in one
        line; a name that only begins alike, or /zookeeper under a chroot,
        is not.
        """
        reserved = "in /zookeeper, which ZooKeeper keeps for itself"
        for root in ("/zookeeper", "/zookeeper/quota", "/zookeeper/sentinel"):
            self.assertConfigError(
                f"--zk-root: {root!r} is {reserved}",
                overrides={"zookeeper.hosts": "z:1", "zookeeper.root": root},
            )
        self.assertConfigError(
            f"zookeeper.discovery_root: '/zookeeper/config' is {reserved}",
            '[zookeeper]\nhosts = "z:1"\ndiscovery_root = "/zookeeper/config"\n',
        )
        self.assertConfigError(
            f"--zookeeper: 'z:1/zookeeper' has its chroot {reserved}",
            overrides={"zookeeper.hosts": "z:1/zookeeper"},
        )
        for hosts, root in (("z:1", "/zookeepers"), ("z:1/app", "/zookeeper")):
            config = self.zk(hosts, root)
            assert config.zookeeper is not None
            self.assertEqual(config.zookeeper.root, root)


class FileTests(ConfigTestCase):
    def test_missing_file(self) -> None:
        """A config file that cannot be read names the file and the reason."""
        error = self.assertRaises(ConfigError, load_config, "/x/y.toml", {}, "h")
        self.assertEqual(
            str(error), "config file /x/y.toml: cannot read: No such file or directory"
        )

    def test_invalid_toml(self) -> None:
        """Invalid TOML names the file and the parser's line and column."""
        message = self.assertConfigError(
            f"config file {self.directory}/sentinel.toml: invalid TOML: "
            "Expected '=' after a key in a key/value pair (at line 3, column 6)",
            "interval = 1\n\nrise 2\n",
        )
        self.assertIn("line 3", message)

    def test_byte_order_mark(self) -> None:
        """
        A file that starts with a UTF-8 byte-order mark (as Notepad and
        PowerShell's ``-Encoding UTF8`` save it) is refused saying so;
        before, ``Invalid statement (at line 1, column 1)`` named nothing
        one could see in an editor.
        """
        path = os.path.join(self.directory, "bom.toml")
        with open(path, "wb") as f:
            f.write(b"\xef\xbb\xbfinterval = 1\n")
        error = self.assertRaises(ConfigError, load_config, path, {}, "h")
        self.assertEqual(
            str(error),
            f"config file {path}: invalid TOML: starts with a byte-order mark"
            " (U+FEFF), which TOML does not allow: save it as UTF-8 without one",
        )

    def test_not_utf8(self) -> None:
        """A file that is not UTF-8 is invalid TOML, said on one line."""
        path = os.path.join(self.directory, "bad.toml")
        with open(path, "wb") as f:
            f.write(b'agent_id = "\xff"\n')
        error = self.assertRaises(ConfigError, load_config, path, {}, "h")
        self.assertEqual(
            str(error), f"config file {path}: invalid TOML: not UTF-8 text"
        )


class FileKindTests(ConfigTestCase):
    """
    Every file the configuration names is read only if it is a regular file
    of bounded size: anything else is refused at once, naming the field and
    the path, never waited on or read without end.
    """

    def refused(self, limit: int) -> list[tuple[str, str]]:
        """(path, reason) of each kind of file that must not be read."""
        fifo = os.path.join(self.directory, "fifo")
        os.mkfifo(fifo)
        to_zero = os.path.join(self.directory, "to-zero")
        os.symlink("/dev/zero", to_zero)
        sparse = os.path.join(self.directory, "sparse")
        with open(sparse, "wb") as f:
            f.truncate(limit + 1)
        device = "not a regular file (a character device)"
        return [
            (fifo, "not a regular file (a FIFO)"),
            ("/dev/zero", device),
            (to_zero, device),
            (self.directory, "Is a directory"),
            (sparse, f"larger than {size_text(limit)}"),
        ]

    def assertAllRefused(self, limit: int, expected: str, toml: str) -> None:
        """
        For each kind of file, loading fails at once with `expected`
        (formatted with the path and the reason).
        """
        started = time.monotonic()
        for path, reason in self.refused(limit):
            self.assertConfigError(
                expected.format(path=path, reason=reason), toml.format(path=path)
            )
        self.assertLess(time.monotonic() - started, 5.0)

    def test_password_file(self) -> None:
        """password_file: a FIFO, a device, a link to one, a directory, too big."""
        self.assertAllRefused(
            MAX_SECRET_BYTES,
            "redis[0].password_file: cannot read {path}: {reason}",
            '[[redis]]\nhost = "h"\nport = 1\npassword_file = "{path}"\n',
        )

    def test_auth_file(self) -> None:
        """zookeeper.auth_file: the same kinds, refused the same way."""
        self.assertAllRefused(
            MAX_SECRET_BYTES,
            "zookeeper.auth_file: cannot read {path}: {reason}",
            '[zookeeper]\nhosts = "z:1"\nauth_file = "{path}"\n',
        )

    def test_ca_file(self) -> None:
        """ca_file: the same kinds, with a limit that fits any real bundle."""
        self.assertAllRefused(
            MAX_CA_BYTES,
            "redis[0].ca_file: cannot read {path}: {reason}",
            '[[redis]]\nhost = "h"\nport = 1\ntls = true\nca_file = "{path}"\n',
        )

    def test_cert_file(self) -> None:
        """cert_file: the same kinds, with a CA bundle's limit (it holds a chain)."""
        self.assertAllRefused(
            MAX_CA_BYTES,
            "redis[0].cert_file: cannot read {path}: {reason}",
            '[[redis]]\nhost = "h"\nport = 1\ntls = true\ncert_file = "{path}"\n'
            'key_file = "k"\n',
        )

    def test_key_file(self) -> None:
        """key_file: the same kinds, with a secret's limit."""
        pem, _ = client_certificate_pem()
        self.write("client.pem", pem)
        self.assertAllRefused(
            MAX_SECRET_BYTES,
            "redis[0].key_file: cannot read {path}: {reason}",
            '[[redis]]\nhost = "h"\nport = 1\ntls = true\n'
            'cert_file = "client.pem"\nkey_file = "{path}"\n',
        )

    def test_config_file(self) -> None:
        """The config file itself: the same kinds, with a limit of 16 MiB."""
        for path, reason in self.refused(MAX_CONFIG_BYTES):
            error = self.assertRaises(ConfigError, load_config, path, {}, "h")
            self.assertEqual(str(error), f"config file {path}: cannot read: {reason}")

    def test_nul_in_file_name(self) -> None:
        """A file name with a NUL character is refused as a value."""
        self.assertConfigError(
            "redis[0].password_file: 'a\\x00b' is not a file name: it contains "
            "a NUL character",
            '[[redis]]\nhost = "h"\nport = 1\npassword_file = "a\\u0000b"\n',
        )


class HostileTOMLTests(ConfigTestCase):
    """Whatever the parser makes of a file, the result is one line."""

    def test_deep_nesting(self) -> None:
        """
        Nesting deep enough to exhaust the parser's recursion (tomllib
        raises RecursionError, not TOMLDecodeError) is one line.
        """
        path = os.path.join(self.directory, "sentinel.toml")
        for depth in (1000, 100_000):
            for toml in (
                "a = " + "[" * depth + "]" * depth,
                "a = " + "{b = " * depth + "1" + "}" * depth,
            ):
                self.assertConfigError(
                    f"config file {path}: invalid TOML: nested too deeply", toml
                )

    def test_number_too_long(self) -> None:
        """
        An integer of more digits than Python converts (tomllib raises a
        plain ValueError) is one line.
        """
        path = os.path.join(self.directory, "sentinel.toml")
        self.assertConfigError(
            f"config file {path}: invalid TOML: a number too long",
            "interval = " + "9" * 5000,
        )

    def test_nested_value(self) -> None:
        """A nested value the parser accepts is shown cut short, on one line."""
        message = self.assertConfigError(
            "interval: " + "[" * 57 + "... is not a number",
            "interval = " + "[" * 300 + "]" * 300,
        )
        self.assertLess(len(message), 100)

    def test_nul_bytes(self) -> None:
        """NUL bytes in the file are invalid TOML, said with the position."""
        path = os.path.join(self.directory, "sentinel.toml")
        self.assertConfigError(
            f"config file {path}: invalid TOML: Expected newline or end of "
            "document after a statement (at line 1, column 13)",
            "interval = 1\0\n",
        )

    def test_any_parser_failure(self) -> None:
        """
        Any other failure of the parser (MemoryError, a bug) is one line
        naming the error, never quoting the file.
        """

        def fail(text: str) -> object:
            raise MemoryError(SECRET)

        self.patch(tomllib, "loads", fail)
        path = os.path.join(self.directory, "sentinel.toml")
        self.assertConfigError(
            f"config file {path}: invalid TOML: MemoryError", "interval = 1\n"
        )

    def test_empty_file(self) -> None:
        """An empty file is a valid configuration: every default."""
        self.assertEqual(self.load(""), self.load())


class ReadTests(ConfigTestCase):
    """How load_config reads the files it names."""

    def test_shared_files_read_once(self) -> None:
        """
        Thousands of instances sharing a password file and a CA bundle
        cost one read of each, and one parse of the bundle.
        """
        self.write("pw", SECRET + "\n")
        self.write("ca.pem", ca_certificate_pem())
        reads: list[str] = []

        def counting(path: str, limit: int) -> bytes:
            reads.append(os.path.basename(path))
            return read_regular_file(path, limit)

        tables = "".join(
            f'[[redis]]\nhost = "h"\nport = {port}\npassword_file = "pw"\n'
            f'tls = true\nca_file = "ca.pem"\n'
            for port in range(1, 2001)
        )
        config = self.load_with(FileReader(read_file=counting), tables)
        self.assertEqual(sorted(reads), ["ca.pem", "pw", "sentinel.toml"])
        self.assertEqual(len(config.instances), 2000)
        first, last = config.instances[0], config.instances[-1]
        self.assertIs(first.ca_certificates, last.ca_certificates)
        self.assertEqual(last.password, SECRET)

    def load_with(self, reader: FileReader, toml: str) -> Config:
        path = self.write("sentinel.toml", toml)
        return load_config(path, {}, "h", reader)

    def test_hung_read(self) -> None:
        """
        A file on a hung mount is an error after the read deadline, naming
        the field and the path, not a hang.
        """
        release = threading.Event()
        self.addCleanup(release.set)
        hung = os.path.join(self.directory, "hung-pw")

        def hanging(path: str, limit: int) -> bytes:
            if path == hung:
                release.wait(10.0)
            return read_regular_file(path, limit)

        started = time.monotonic()
        # The configuration file itself is read within the deadline too,
        # through a thread handoff: 0.05 s is no bound for that on a
        # loaded machine (tests/test_files.py, DEADLINE).
        error = self.assertRaises(
            ConfigError,
            self.load_with,
            FileReader(deadline=1.0, read_file=hanging),
            '[[redis]]\nhost = "h"\nport = 1\npassword_file = "hung-pw"\n',
        )
        self.assertEqual(
            str(error),
            f"redis[0].password_file: cannot read {hung}: no answer within "
            "1 s (a hung mount?)",
        )
        # The hung read would block for 10 s.
        self.assertLess(time.monotonic() - started, 5.0)

    def test_hung_config_file(self) -> None:
        """The config file on a hung mount is named the same way."""
        release = threading.Event()
        self.addCleanup(release.set)

        def hanging(path: str, limit: int) -> bytes:
            release.wait(10.0)
            return b""

        reader = FileReader(deadline=0.05, read_file=hanging)
        error = self.assertRaises(
            ConfigError, load_config, "/nfs/s.toml", {}, "h", reader
        )
        self.assertEqual(
            str(error),
            "config file /nfs/s.toml: cannot read: no answer within 0.05 s "
            "(a hung mount?)",
        )


class SettingsTableTests(SynchronousTestCase):
    """The one table of settings holds DESIGN section 5's options and keys."""

    def test_options(self) -> None:
        """Each command-line option overrides the TOML key DESIGN gives it."""
        self.assertEqual(
            dict(OPTION_NAMES),
            {
                "redis": "--redis",
                "zookeeper.hosts": "--zookeeper",
                "zookeeper.root": "--zk-root",
                "zookeeper.session_timeout": "--zk-session-timeout",
                "interval": "--interval",
                "timeout": "--timeout",
                "rise": "--rise",
                "fall": "--fall",
                "http": "--http",
                "agent_id": "--agent-id",
                "state_dir": "--state-dir",
            },
        )

    def test_keys(self) -> None:
        """Every TOML key of DESIGN section 5 is in the table, and no other."""
        self.assertEqual(
            sorted(s.key for s in SETTINGS),
            sorted(
                [
                    "redis", "interval", "timeout", "rise", "fall", "http",
                    "agent_id", "info_every", "role_signal", "drain_key",
                    "replica_grace", "reconnect_every", "state_dir",
                    "zookeeper.hosts",
                    "zookeeper.root", "zookeeper.session_timeout",
                    "zookeeper.refresh", "zookeeper.heartbeat",
                    "zookeeper.watch_writes", "zookeeper.auth_file",
                    "zookeeper.discovery",
                    "zookeeper.discovery_root", "zookeeper.replicas",
                    "zookeeper.quorum",
                    "dns.resolv_conf", "dns.nameservers", "dns.hosts_file",
                    "dns.timeout",
                ]
            ),
        )  # fmt: skip
        self.assertEqual(
            [s.key for s in REDIS_SETTINGS],
            [
                "name", "host", "port", "password_file", "username", "tls",
                "ca_file", "server_name", "cert_file", "key_file", "service",
                "labels", "discover_replicas", "drain_key",
            ],
        )  # fmt: skip

    def test_usage(self) -> None:
        """The help text shows the default as twistd does, or none."""
        self.assertEqual(
            setting("zookeeper.root").usage, "Base znode path. [default: /sentinel]"
        )
        self.assertEqual(
            setting("agent_id").usage,
            "Name of this agent's znode. [default: the host name]",
        )
        self.assertNotIn("default", setting("zookeeper.hosts").usage)

    def test_table_default_is_used(self) -> None:
        """load_config takes a default from the table, not from elsewhere."""
        rise = attr.evolve(setting("rise"), default=9)
        by_key = {**settings_module._BY_KEY, "rise": rise}
        self.patch(settings_module, "_BY_KEY", by_key)
        self.assertEqual(load_config(None, {}, "h").rise, 9)


class ParseRedisAddressTests(SynchronousTestCase):
    def test_forms(self) -> None:
        """HOST:PORT, NAME=HOST:PORT and bracketed IPv6 are split."""
        self.assertEqual(parse_redis_address("h:6379"), (None, "h", 6379))
        self.assertEqual(parse_redis_address("a=h:1"), ("a", "h", 1))
        self.assertEqual(parse_redis_address("a:b=h:1"), ("a:b", "h", 1))
        self.assertEqual(parse_redis_address("[::1]:6379"), (None, "::1", 6379))
        self.assertEqual(parse_redis_address("v6=[fe80::1]:1"), ("v6", "fe80::1", 1))

    def test_default_name_ipv6(self) -> None:
        """An IPv6 instance given by address is named [ADDRESS]:PORT."""
        config = load_config(None, {"redis": ["[::1]:6379"]}, "h")
        self.assertEqual(config.instances, (RedisInstance("[::1]:6379", "::1", 6379),))

    def test_bad_forms(self) -> None:
        """Anything else names --redis and the text given."""
        for text in (
            "foo",
            "foo:",
            ":6379",
            "h:abc",
            "::1:6379",
            "[::1]6379",
            "[host]:1",
            "a=",
            "h:-1",
            "a b:1",
        ):
            error = self.assertRaises(ConfigError, parse_redis_address, text)
            self.assertEqual(
                str(error), f"--redis: {text!r} is not HOST:PORT or NAME=HOST:PORT"
            )

    def test_port_range(self) -> None:
        """A port outside 1-65535 is named."""
        error = self.assertRaises(ConfigError, parse_redis_address, "h:70000")
        self.assertEqual(
            str(error), "--redis: 'h:70000': 70000 is not a port (1-65535)"
        )
        error = self.assertRaises(ConfigError, parse_redis_address, "h:0")
        self.assertEqual(str(error), "--redis: 'h:0': 0 is not a port (1-65535)")

"""
``contrib/sentinel.toml``, the example configuration, kept honest: it names
every key of the settings table, it loads and validates once the files it
names exist, each key it leaves commented out is valid when uncommented, and
the values it calls defaults are the defaults; the example Prometheus
configuration looks for its instances where it publishes them.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from sentinel.config import Config, load_config
from sentinel.settings import REDIS_SETTINGS, SETTINGS
from tests.certs import ca_certificate_pem, client_certificate_pem

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"
EXAMPLE = CONTRIB / "sentinel.toml"
PROMETHEUS = CONTRIB / "prometheus" / "prometheus.yml"

_TABLE = re.compile(r"\[\[?([a-z_]+)\]\]?")
_KEY = re.compile(r"(#\s*)?([a-z_]+)\s*=")
_ETC_PATH = re.compile(r'"(/etc/[^"]+)"')


def example_keys(text: str) -> set[str]:
    """
    Every key the example names, set or commented out, dotted as in the
    settings table (``zookeeper.root``, ``redis.port``), and its tables.
    """
    keys = set()
    table = ""
    for line in text.splitlines():
        header = _TABLE.match(line)
        if header is not None:
            table = header.group(1)
            keys.add(table)
            continue
        key = _KEY.match(line)
        if key is not None:
            keys.add(f"{table}.{key.group(2)}" if table else key.group(2))
    return keys


def expected_keys() -> set[str]:
    """Every key the settings table knows, and each table's name."""
    keys = {s.key for s in SETTINGS}
    keys |= {s.key.partition(".")[0] for s in SETTINGS if "." in s.key}
    keys |= {f"redis.{s.key}" for s in REDIS_SETTINGS}
    return keys


def temporary_etc(case: SynchronousTestCase, text: str) -> Path:
    """
    A temporary directory standing for /etc, holding each file under /etc
    that the example configuration `text` names, with valid contents.
    """
    etc = Path(case.mktemp()).absolute()
    client_cert, client_key = client_certificate_pem()
    contents = {
        "sentinel/zk-auth": "sentinel:zk-secret\n",
        "sentinel/cache-1.pass": "cache-secret\n",
        "sentinel/sessions.pass": "sessions-secret\n",
        "sentinel/ca.pem": ca_certificate_pem(),
        "sentinel/client.pem": client_cert,
        "sentinel/client.key": client_key,
        "resolv.conf": "nameserver 127.0.0.1\nsearch example.net\n",
        "hosts": "127.0.0.1 localhost\n",
    }
    for name in set(_ETC_PATH.findall(text)):
        relative = name.removeprefix("/etc/")
        case.assertIn(relative, contents, f"{name}: no test content for it")
        path = etc / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(contents[relative])
    return etc


def load_in_etc(etc: Path, text: str) -> Config:
    """The configuration `text`, its /etc paths moved to `etc`, loaded."""
    path = etc / "sentinel" / "sentinel.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_ETC_PATH.sub(lambda m: f'"{etc}{m[1][4:]}"', text))
    return load_config(str(path), {}, "host-1")


class ExampleConfigTests(SynchronousTestCase):
    """
    The example, with the files it names made in a temporary /etc; and
    ``contrib/prometheus/prometheus.yml`` against it: an operator who turns
    on serverset discovery in the one gets targets from the other.
    """

    def setUp(self) -> None:
        self.text = EXAMPLE.read_text()
        self.etc = temporary_etc(self, self.text)

    def load(self, text: str) -> Config:
        """`text` with its /etc paths in the temporary /etc, loaded."""
        return load_in_etc(self.etc, text)

    def test_every_key(self) -> None:
        """Every key of the settings table is in the example, and no other."""
        self.assertEqual(example_keys(self.text), expected_keys())

    def test_loads(self) -> None:
        """As it is, the example loads and validates."""
        config = self.load(self.text)
        self.assertEqual([i.name for i in config.instances], ["cache-1", "sessions"])
        sessions = config.instances[1]
        self.assertIsNotNone(sessions.client_certificate)
        self.assertEqual(sessions.password, "sessions-secret")
        assert config.zookeeper is not None
        self.assertEqual(config.zookeeper.auth, "sentinel:zk-secret")

    def test_commented_keys_are_valid(self) -> None:
        """Each key commented out, uncommented alone, loads and validates too."""
        lines = self.text.splitlines(keepends=True)
        commented = [
            index
            for index, line in enumerate(lines)
            if (match := _KEY.match(line)) is not None and match.group(1)
        ]
        self.assertTrue(commented)
        for index in commented:
            uncommented = [*lines]
            uncommented[index] = lines[index].lstrip("# ")
            self.load("".join(uncommented))

    def test_defaults_are_the_defaults(self) -> None:
        """
        Every key outside [[redis]] that is set and has a default is set to
        its default, as the example says.
        """
        document = tomllib.loads(self.text)
        checked = 0
        for setting in SETTINGS:
            table, _, key = setting.key.rpartition(".")
            value = document.get(table, {}).get(key) if table else document.get(key)
            if value is None or setting.default is None:
                continue
            self.assertEqual(value, setting.default, setting.key)
            checked += 1
        self.assertGreater(checked, 5)

    def test_discovery_paths(self) -> None:
        """
        Each path the Prometheus example watches is where the example
        config's instances publish their serverset members: the chroot,
        then ``discovery_root``, then each service. (Before, it watched
        ``/discovery/cache``: no chroot, and a service no instance has,
        so Prometheus found no Redis target at all.)
        """
        config = self.load(
            self.text.replace('discovery = "none"', 'discovery = "serverset"')
        )
        zookeeper = config.zookeeper
        assert zookeeper is not None
        self.assertEqual(zookeeper.discovery, "serverset")
        _, slash, chroot = zookeeper.hosts.partition("/")
        published = {
            f"{slash}{chroot}{zookeeper.discovery_root}/{instance.discovery_service}"
            for instance in config.instances
        }
        paths, _ = serverset_discovery(PROMETHEUS.read_text())
        self.assertEqual(sorted(paths), sorted(published))

    def test_service_label(self) -> None:
        """
        The relabelling names each member's service, with the regex anchored
        at both ends as Prometheus anchors it (before, a member under a
        chroot got no ``service`` label).
        """
        paths, regex = serverset_discovery(PROMETHEUS.read_text())
        for path in paths:
            member = re.fullmatch(regex, f"{path}/member_0000000001")
            self.assertIsNotNone(member, path)
            assert member is not None
            self.assertEqual(member.group(1), path.rpartition("/")[2])


def serverset_discovery(text: str) -> tuple[list[str], str]:
    """
    The ``paths`` of the ``serverset_sd_configs`` in the Prometheus example
    `text`, and the regex that takes a member's path to its ``service``
    label. (A reading of our own file's flow lists, not a YAML parser: no
    YAML library is a dependency.)
    """
    paths = re.search(r"^\s*paths: \[(.*)\]$", text, re.MULTILINE)
    service = re.search(
        r"source_labels: \[__meta_serverset_path\]\n\s*regex: \"([^\"]+)\"", text
    )
    assert paths is not None and service is not None, "no serverset discovery"
    return re.findall(r'"([^"]+)"', paths.group(1)), service.group(1)

"""The ``[dns]`` table: where names are looked up, validated in one line."""

from __future__ import annotations

import os

from sentinel.config import DNSConfig
from tests.test_config import ConfigTestCase


class DNSTableTests(ConfigTestCase):
    def test_defaults(self) -> None:
        """Without [dns]: the system's files, the bound from the check timeout."""
        self.assertEqual(self.load().dns, DNSConfig())
        self.assertEqual(
            DNSConfig(),
            DNSConfig("/etc/resolv.conf", (), "/etc/hosts", None),
        )

    def test_every_key(self) -> None:
        """Name servers with or without ports, IPv6 too; paths relative to the file."""
        self.write("hosts", "")
        config = self.load(
            "[dns]\n"
            'nameservers = ["127.0.0.1:5353", "10.0.0.1", "::1", "[::1]:5300"]\n'
            'hosts_file = "hosts"\n'
            "timeout = 1.5\n"
        )
        self.assertEqual(
            config.dns,
            DNSConfig(
                nameservers=(
                    ("127.0.0.1", 5353),
                    ("10.0.0.1", 53),
                    ("::1", 53),
                    ("::1", 5300),
                ),
                hosts_file=os.path.join(self.directory, "hosts"),
                timeout=1.5,
            ),
        )

    def test_resolv_conf(self) -> None:
        """Another resolv.conf may be named."""
        path = self.write("resolv.conf", "nameserver 127.0.0.1\n")
        config = self.load('[dns]\nresolv_conf = "resolv.conf"\n')
        self.assertEqual(config.dns.resolv_conf, path)

    def test_errors(self) -> None:
        """Each bad value is one line naming the key and the value."""
        self.write("resolv.conf", "")
        cases = [
            ("[dns]\nport = 53\n", "unknown key 'port' in [dns]"),
            ("dns = 5\n", "dns: 5 is not a table ([dns])"),
            (
                '[dns]\nnameservers = "127.0.0.1"\n',
                "dns.nameservers: '127.0.0.1' is not an array of strings",
            ),
            (
                '[dns]\nnameservers = ["ns1.example:53"]\n',
                "dns.nameservers[0]: 'ns1.example:53' is not ADDRESS, "
                "ADDRESS:PORT or [IPV6]:PORT",
            ),
            (
                '[dns]\nnameservers = ["127.0.0.1:0"]\n',
                "dns.nameservers[0]: '127.0.0.1:0' has port 0, not in 1-65535",
            ),
            ("[dns]\nnameservers = [53]\n", "dns.nameservers[0]: 53 is not a string"),
            (
                '[dns]\nhosts_file = "missing"\n',
                f"dns.hosts_file: cannot read {self.directory}/missing: "
                "No such file or directory",
            ),
            (
                '[dns]\nresolv_conf = "."\n',
                f"dns.resolv_conf: cannot read {self.directory}/.: Is a directory",
            ),
            (
                '[dns]\nresolv_conf = "resolv.conf"\nnameservers = ["127.0.0.1"]\n',
                "dns.resolv_conf: given with dns.nameservers, which replace it",
            ),
            ("[dns]\ntimeout = 0\n", "dns.timeout: 0 is not greater than 0"),
        ]
        for toml, expected in cases:
            self.assertConfigError(expected, toml)

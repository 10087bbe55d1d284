"""resolv.conf: parsed as resolver(5) says, read safely, the last good one kept."""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from sentinel import resolvconf
from sentinel.files import Unreadable
from sentinel.resolvconf import (
    DEFAULT_NAMESERVER,
    ResolvConf,
    ResolvConfFile,
    parse_resolv_conf,
)


class ParseTests(SynchronousTestCase):
    def test_nameservers_and_search(self) -> None:
        """
        nameserver lines in order, port 53; the last search or domain line
        wins; options, comments and unknown keywords are not read.
        """
        conf = parse_resolv_conf(
            b"# nameserver 192.0.2.1\nnameserver 192.0.2.53\n"
            b"domain a.example\nnameserver\t2001:db8::53\nsearch b.example c.example\n"
            b"options ndots:5\nnameserverx 192.0.2.9\nnameserver\n"
        )
        self.assertEqual(
            conf,
            ResolvConf(
                (("192.0.2.53", 53), ("2001:db8::53", 53)),
                ("b.example", "c.example"),
            ),
        )

    def test_nameserver_not_an_address(self) -> None:
        """A nameserver that is not an IP address is left out, saying why."""
        conf = parse_resolv_conf(b"nameserver dns.example\nnameserver ::1\n")
        self.assertEqual(conf.nameservers, (("::1", 53),))
        self.assertEqual(
            conf.left_out, ("nameserver 'dns.example' left out: not an IP address",)
        )
        conf = parse_resolv_conf(b"nameserver dns.example\n")
        self.assertEqual(conf.nameservers, (DEFAULT_NAMESERVER,))

    def test_search_list_kept_as_glibc(self) -> None:
        """
        The search list keeps its first 6 domains, within 256 characters,
        saying once what was cut.
        """
        domains = " ".join(f"d{i}.example" for i in range(5000))
        conf = parse_resolv_conf(f"search {domains}\n".encode())
        self.assertEqual(conf.search, tuple(f"d{i}.example" for i in range(6)))
        [note] = conf.left_out
        self.assertIn("search list of 5000 domains: only its first 6 are kept", note)
        long = ["a" * 60 + f".{i}.example" for i in range(5)]
        conf = parse_resolv_conf(("search " + " ".join(long)).encode())
        # 4 x 71 characters (each with its NUL) do not fit in 256.
        self.assertEqual(conf.search, tuple(long[:3]))

    def test_search_domain_not_a_dns_name(self) -> None:
        """A search domain the DNS cannot carry is left out, said in one line."""
        bad = "x" * 64 + ".example"
        conf = parse_resolv_conf(f"search {bad} a.example {bad}2\n".encode())
        self.assertEqual(conf.search, ("a.example",))
        self.assertEqual(len(conf.left_out), 1)
        self.assertIn("(and 1 more) left out: not a valid DNS name", conf.left_out[0])

    def test_nameservers_kept_as_glibc(self) -> None:
        """The first 3 name servers are asked, as glibc does; many bad ones
        are said in one line."""
        text = "".join(f"nameserver 192.0.2.{i}\nnameserver n{i}\n" for i in range(9))
        conf = parse_resolv_conf(text.encode())
        self.assertEqual(
            conf.nameservers, tuple((f"192.0.2.{i}", 53) for i in range(3))
        )
        self.assertEqual(
            conf.left_out,
            (
                "nameserver 'n0' (and 8 more) left out: not an IP address",
                "9 nameservers: only the first 3 are asked, as glibc does",
            ),
        )

    def test_no_nameserver(self) -> None:
        """Without a nameserver line, 127.0.0.1 is asked, as glibc does."""
        self.assertEqual(parse_resolv_conf(b"").nameservers, (DEFAULT_NAMESERVER,))


class ResolvConfFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.path = self.mktemp()
        self.events: list[dict[str, Any]] = []
        self.patch(resolvconf, "log", Logger(observer=self.events.append))

    def write(self, text: str) -> None:
        with open(self.path, "w") as f:
            f.write(text)

    def replace_with(self, make: Any) -> None:
        """Put what `make(path)` creates in place of the file, atomically."""
        new = self.path + ".new"
        make(new)
        os.replace(new, self.path)
        self.clock.advance(resolvconf.CHECK_SECONDS)

    def logged(self) -> list[str]:
        return [formatEvent(event) for event in self.events]

    def kept_through(self, make: Any) -> None:
        self.write("nameserver 192.0.2.53\n")
        conf = ResolvConfFile(self.path, self.clock)
        self.assertEqual(conf.current().nameservers, (("192.0.2.53", 53),))
        self.replace_with(make)
        for _ in range(3):
            self.assertEqual(conf.current().nameservers, (("192.0.2.53", 53),))
            self.clock.advance(resolvconf.CHECK_SECONDS)
        [line] = self.logged()
        self.assertIn(f"resolv.conf {self.path} refused", line)
        self.assertIn("last good content stays", line)

    def test_read_again_when_changed(self) -> None:
        """A change is seen once CHECK_SECONDS have passed, not before."""
        self.write("nameserver 192.0.2.53\n")
        conf = ResolvConfFile(self.path, self.clock)
        self.assertEqual(conf.current().nameservers, (("192.0.2.53", 53),))
        self.write("nameserver 192.0.2.54\nsearch a.example\n")
        self.assertEqual(conf.current().nameservers, (("192.0.2.53", 53),))
        self.clock.advance(resolvconf.CHECK_SECONDS)
        self.assertEqual(
            conf.current(), ResolvConf((("192.0.2.54", 53),), ("a.example",))
        )

    def test_fifo_keeps_the_last_good(self) -> None:
        """
        Replaced by a FIFO at runtime, the file is not opened (that would
        block the reactor); the last good content stays, said once.
        """
        self.kept_through(os.mkfifo)

    def test_device_keeps_the_last_good(self) -> None:
        """
        Replaced by a link to /dev/zero, nothing is read (it never ends);
        the last good content stays, said once.
        """
        self.kept_through(lambda path: os.symlink("/dev/zero", path))

    def test_too_large_keeps_the_last_good(self) -> None:
        """Grown over the limit, it is not read; the last good content stays."""
        self.patch(resolvconf, "MAX_HOSTS_BYTES", 100)

        def large(path: str) -> None:
            with open(path, "w") as f:
                f.write("nameserver 192.0.2.99\n" + "#" * 100 + "\n")

        self.kept_through(large)

    def test_good_again(self) -> None:
        """A file that turns good again is read again."""
        self.kept_through(os.mkfifo)
        self.replace_with(lambda path: open(path, "w").write("nameserver 192.0.2.54\n"))
        self.assertEqual(conf_of(self.path, self.clock), (("192.0.2.54", 53),))

    def test_left_out_said_once(self) -> None:
        """What is left out is said once per change of the file."""
        self.write("nameserver dns.example\n")
        conf = ResolvConfFile(self.path, self.clock)
        for _ in range(3):
            conf.current()
            self.clock.advance(resolvconf.CHECK_SECONDS)
        [line] = self.logged()
        self.assertIn("nameserver 'dns.example' left out: not an IP address", line)

    def test_missing_from_the_start(self) -> None:
        """A file missing from the start reads as empty: 127.0.0.1."""
        conf = ResolvConfFile(self.path, self.clock)
        self.assertEqual(conf.current().nameservers, (DEFAULT_NAMESERVER,))
        self.assertEqual(self.logged(), [])

    def test_never_readable(self) -> None:
        """
        Never read well, every lookup fails saying why; it is said once in
        the log.
        """
        os.mkfifo(self.path)
        conf = ResolvConfFile(self.path, self.clock)
        for _ in range(3):
            e = self.assertRaises(Unreadable, conf.current)
            self.assertEqual(str(e), "not a regular file (a FIFO)")
            self.clock.advance(resolvconf.CHECK_SECONDS)
        [line] = self.logged()
        self.assertIn("lookups fail until it can", line)


def conf_of(path: str, clock: Clock) -> tuple[tuple[str, int], ...]:
    return ResolvConfFile(path, clock).current().nameservers

"""
TLS to Redis, on the real reactor against a real ``redis-server`` with a TLS
port and certificates made here: verified connections come up, and every
way verification fails puts the instance down saying why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cryptography import x509
from twisted.internet.defer import DeferredSemaphore
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from sentinel import tls
from sentinel.config import RedisInstance, load_config
from sentinel.probe import RedisProbe
from sentinel.resolve import Resolver
from sentinel.tls import client_tls
from tests.certs import CertificateFiles, make_certificates
from tests.servers import FakeServer, RedisServer
from tests.test_integration import AgentTestCase, reactor


def with_ca(name: str, port: int, ca_file: str, **kw: Any) -> RedisInstance:
    """An instance verified against `ca_file`, loaded as load_config loads it."""
    certificates = x509.load_pem_x509_certificates(Path(ca_file).read_bytes())
    return RedisInstance(
        name,
        "127.0.0.1",
        port,
        tls=True,
        ca_file=ca_file,
        ca_certificates=tuple(certificates),
        **kw,
    )


class TLSTests(AgentTestCase):
    """The agent against a Redis that only speaks TLS."""

    def setUp(self) -> None:
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        self.certs: CertificateFiles = make_certificates(directory)

    def tls_redis(self, **kw: Any) -> RedisServer:
        return self.redis(tls=self.certs, **kw)

    def tls_instance(self, name: str, port: int, **kw: Any) -> RedisInstance:
        return with_ca(name, port, self.certs.ca_file, **kw)

    def error(self, monitor: Any, name: str) -> str | None:
        error: str | None = monitor.states[name].health.error
        return error

    async def test_verified_connection_is_up(self) -> None:
        """
        With the server's CA, the instance is up whether the certificate is
        checked against the IP address (the host) or a server_name; INFO
        replication is read over TLS.
        """
        server = self.tls_redis()
        monitor = self.start_agent(
            [
                self.tls_instance("by-ip", server.port),
                self.tls_instance("by-name", server.port, server_name="localhost"),
            ]
        )
        await self.wait_status(monitor, "by-ip", "up", 3.0)
        await self.wait_status(monitor, "by-name", "up", 3.0)
        for name in ("by-ip", "by-name"):
            self.assertEqual(monitor.states[name].health.replication.role, "master")
            self.assertIsNone(self.error(monitor, name))

    async def test_wrong_ca_is_down(self) -> None:
        """
        A certificate signed by a CA other than ca_file's is refused: the
        instance is down with a certificate error naming the CA file, not a
        lost connection or an auth failure.
        """
        server = self.tls_redis()
        monitor = self.start_agent(
            [with_ca("r", server.port, self.certs.other_ca_file)]
        )
        await self.wait_status(monitor, "r", "down", 3.0)
        self.assertEqual(
            self.error(monitor, "r"),
            "TLS: certificate verify failed (checked against ca_file "
            f"{self.certs.other_ca_file})",
        )

    async def test_platform_trust_still_verifies(self) -> None:
        """
        Without ca_file the system's CAs are the trust root, and they do not
        trust the test CA: verification is never skipped.
        """
        server = self.tls_redis()
        monitor = self.start_agent(
            [RedisInstance("r", "127.0.0.1", server.port, tls=True)]
        )
        await self.wait_status(monitor, "r", "down", 3.0)
        self.assertEqual(
            self.error(monitor, "r"),
            "TLS: certificate verify failed (checked against the system's trusted CAs)",
        )

    async def test_server_name_mismatch_is_down(self) -> None:
        """
        A certificate from the right CA but for another name is refused:
        down, saying the certificate does not match the server name.
        """
        server = self.tls_redis()
        monitor = self.start_agent(
            [self.tls_instance("r", server.port, server_name="redis.internal")]
        )
        await self.wait_status(monitor, "r", "down", 3.0)
        self.assertEqual(
            self.error(monitor, "r"),
            "TLS: certificate does not match server name 'redis.internal'",
        )

    async def test_password_over_tls(self) -> None:
        """
        AUTH goes over the verified connection: with the password the
        instance is up, with a wrong one down saying auth failed.
        """
        server = self.tls_redis(password="hunter2")
        monitor = self.start_agent(
            [
                self.tls_instance("right", server.port, password="hunter2"),
                self.tls_instance("wrong", server.port, password="nope"),
            ]
        )
        await self.wait_status(monitor, "right", "up", 3.0)
        await self.wait_status(monitor, "wrong", "down", 3.0)
        self.assertEqual(monitor.states["right"].health.replication.role, "master")
        error = self.error(monitor, "wrong") or ""
        self.assertTrue(error.startswith("auth failed:"), error)

    async def test_plain_server_times_out_in_tls(self) -> None:
        """
        tls = true against a port without TLS: Redis waits for the end of a
        command line that never comes, so the check times out in the TLS
        stage, saying so.
        """
        server = self.redis()
        monitor = self.start_agent([self.tls_instance("r", server.port)])
        await self.wait_status(monitor, "r", "down", 3.0)
        self.assertEqual(self.error(monitor, "r"), "timeout (tls)")

    async def test_handshake_timeout(self) -> None:
        """
        A server that accepts the connection but never answers the handshake
        times the check out in the TLS stage, and keeps one connection at most.
        """
        hung = FakeServer(reactor, None)
        self.addCleanup(hung.stop)
        monitor = self.start_agent([self.tls_instance("r", hung.port)])
        await self.wait_status(monitor, "r", "down", 3.0)
        self.assertEqual(self.error(monitor, "r"), "timeout (tls)")
        self.assertLessEqual(hung.open_connections, 1)


class SetupTests(SynchronousTestCase):
    """TLS settings that cannot be used are the instance's error."""

    def check_once(self, instance: RedisInstance) -> str | None:
        """One check of a probe for `instance`; its error, with no connection."""
        clock = MemoryReactorClock()
        probe = RedisProbe(instance, clock, DeferredSemaphore(1), 1.0, Resolver(clock))
        observation = self.successResultOf(probe.check(want_info=False))
        assert observation is not None
        self.assertFalse(observation.ok)
        self.assertEqual(clock.tcpClients, [])
        return observation.error

    def test_ca_file_not_loaded(self) -> None:
        """
        An instance naming a ca_file whose certificates were not loaded
        with the configuration fails every check, saying so: making a probe
        (on the reactor thread) never reads the file.
        """
        instance = RedisInstance(
            "r", "127.0.0.1", 1, tls=True, ca_file="/nonexistent/ca.pem"
        )
        self.assertEqual(
            self.check_once(instance),
            "TLS: ca_file /nonexistent/ca.pem was not loaded with the configuration",
        )

    def test_probe_reads_no_file(self) -> None:
        """
        The certificates come from the configuration: with the CA file gone
        after loading, probes are still made, and instances sharing a bundle
        share one trust root.
        """
        directory = Path(self.mktemp()).absolute()
        directory.mkdir(parents=True)
        certs = make_certificates(directory)
        path = directory / "sentinel.toml"
        path.write_text(
            "".join(
                f'[[redis]]\nhost = "127.0.0.1"\nport = {port}\ntls = true\n'
                f'ca_file = "{certs.ca_file}"\n'
                for port in (1, 2)
            )
        )
        first, second = load_config(str(path), {}, "agent").instances
        Path(certs.ca_file).unlink()
        tls._trust_root.cache_clear()
        client_tls(first)
        client_tls(second)
        self.assertEqual(tls._trust_root.cache_info().misses, 1)

    def test_invalid_server_name(self) -> None:
        """A server_name that is not a host name fails every check, saying so."""
        instance = RedisInstance("r", "127.0.0.1", 1, tls=True, server_name="a b")
        self.assertEqual(
            self.check_once(instance),
            "TLS: server name 'a b' is not a valid host name",
        )

"""
TLS to Redis, on the real reactor against a real ``redis-server`` with a TLS
port and certificates made here: verified connections come up, and every
way verification fails puts the instance down saying why.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import attr
from cryptography import x509
from OpenSSL import SSL
from OpenSSL.crypto import X509
from twisted.internet.defer import DeferredSemaphore
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from sentinel import certificates, tls
from sentinel.config import RedisInstance, load_config
from sentinel.probe import NOT_REDIS_CLOSE, RedisProbe
from sentinel.resolve import Resolver
from sentinel.tls import client_tls
from tests.certs import CertificateFiles, client_certificate_pem, make_certificates
from tests.polling import wait_for
from tests.servers import FakeServer, RedisServer
from tests.test_integration import AgentTestCase, reactor

# For the checks that wait on a TLS handshake that never completes. The
# attempt runs its own bound (`sentinel.probe.MIN_CONNECT_TIMEOUT`, 1 s)
# and counts only if the agent itself ran late by less than a quarter of
# the check timeout meanwhile, summed over that second; otherwise its
# checks end with no verdict, by design. At the suite's 0.1 s timeout that
# is 25 ms of lateness in that second: at load 11-16 on two cores,
# attempts went without a verdict for more than 3 s (one or both of these
# tests failed their 3 s wait in 3 of 13 runs, lateness sums of 0.03-0.25
# s). A 0.5 s timeout allows 125 ms, and the wait ends when the instance
# is down, bounded for a starved machine: no test measures how soon.
HANDSHAKE_TIMEOUT = 0.5
JUDGED_BOUND = 30.0


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
            "TLS: certificate verify failed: self-signed certificate in "
            "certificate chain: certificate 1 of the server's chain "
            f"CN=sentinel test CA (checked against ca_file {self.certs.other_ca_file})",
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
        monitor = self.start_agent(
            [self.tls_instance("r", server.port)],
            interval=HANDSHAKE_TIMEOUT,
            timeout=HANDSHAKE_TIMEOUT,
        )
        await self.wait_status(monitor, "r", "down", JUDGED_BOUND)
        self.assertEqual(self.error(monitor, "r"), "timeout (tls)")

    async def test_handshake_timeout(self) -> None:
        """
        A server that accepts the connection but never answers the handshake
        times the check out in the TLS stage, and keeps one connection at most.
        """
        hung = FakeServer(reactor, None)
        self.addCleanup(hung.stop)
        monitor = self.start_agent(
            [self.tls_instance("r", hung.port)],
            interval=HANDSHAKE_TIMEOUT,
            timeout=HANDSHAKE_TIMEOUT,
        )
        await self.wait_status(monitor, "r", "down", JUDGED_BOUND)
        self.assertEqual(self.error(monitor, "r"), "timeout (tls)")
        self.assertLessEqual(hung.open_connections, 1)

    async def test_closed_in_handshake(self) -> None:
        """
        A server that closes each connection before the handshake is done,
        without a TLS alert (a TCP proxy whose backend is gone): the stage
        is said, as for a timeout there. Before, "connection lost", as for
        a server closing an established connection.
        """
        closing = reactor.listenTCP(
            0, Factory.forProtocol(_ClosingAtOnce), interface="127.0.0.1"
        )
        self.addCleanup(closing.stopListening)
        monitor = self.start_agent(
            [self.tls_instance("r", closing.getHost().port)],
            interval=HANDSHAKE_TIMEOUT,
            timeout=HANDSHAKE_TIMEOUT,
        )
        await self.wait_status(monitor, "r", "down", JUDGED_BOUND)
        self.assertEqual(self.error(monitor, "r"), "connection lost (tls)")

    async def test_tls_port_without_tls(self) -> None:
        """
        A TLS-only redis-server checked without tls = true resets the
        connection at the first command, without a byte: the error says
        that it may be a TLS port. Before, "connection reset" alone.
        """
        server = self.tls_redis()
        monitor = self.start_agent([RedisInstance("r", "127.0.0.1", server.port)])
        await self.wait_status(monitor, "r", "down", JUDGED_BOUND)
        error = self.error(monitor, "r") or ""
        self.assertTrue(error.startswith("connection "), error)
        self.assertTrue(error.endswith(NOT_REDIS_CLOSE), error)

    async def test_plain_answer_in_tls(self) -> None:
        """
        tls = true against a server that answers without TLS (memcached's
        ``ERROR``, an SSH banner, Redis's error) says the server answered
        without TLS, not OpenSSL's "wrong version number" alone.
        """
        plain = FakeServer(reactor, b"ERROR\r\n")
        self.addCleanup(plain.stop)
        monitor = self.start_agent(
            [self.tls_instance("r", plain.port)],
            interval=HANDSHAKE_TIMEOUT,
            timeout=HANDSHAKE_TIMEOUT,
        )
        await self.wait_status(monitor, "r", "down", JUDGED_BOUND)
        self.assertEqual(
            self.error(monitor, "r"),
            f"TLS: wrong version number ({tls.NOT_TLS_HINT})",
        )


class _ClosingAtOnce(Protocol):
    """Closes the connection as soon as it is made."""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.loseConnection()


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


def with_client_certificate(
    certs: CertificateFiles,
    name: str,
    port: int,
    files: tuple[str, str] | None,
    ca_file: str | None = None,
    **kw: str,
) -> RedisInstance:
    """
    An instance verified against `ca_file` (the test CA's by default) that
    shows the client certificate and key of `files`, loaded by load_config.
    """
    directory = Path(certs.ca_file).parent
    toml = (
        f'[[redis]]\nname = "{name}"\nhost = "127.0.0.1"\nport = {port}\n'
        f'tls = true\nca_file = "{ca_file or certs.ca_file}"\n'
        + "".join(f'{key} = "{value}"\n' for key, value in kw.items())
    )
    if files is not None:
        toml += f'cert_file = "{files[0]}"\nkey_file = "{files[1]}"\n'
    path = directory / f"{name}.toml"
    path.write_text(toml)
    [instance] = load_config(str(path), {}, "agent").instances
    return instance


class ClientCertificateTests(AgentTestCase):
    """
    The agent against a Redis that asks every client for a certificate
    signed by the test CA (``tls-auth-clients yes``, Redis's default).
    """

    def setUp(self) -> None:
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        self.certs: CertificateFiles = make_certificates(directory)

    def instance(
        self, name: str, port: int, files: tuple[str, str] | None, **kw: Any
    ) -> RedisInstance:
        return with_client_certificate(self.certs, name, port, files, **kw)

    def error(self, monitor: Any, name: str) -> str | None:
        error: str | None = monitor.states[name].health.error
        return error

    async def wait_refused(self, monitor: Any, name: str, error: str) -> None:
        """
        Wait until `name` is down with `error`. Not at once: a check whose
        handshake the loaded server did not finish in time ends as a
        timeout, as it should (``timeout (tls)``: at load 20-60 the
        server's alert came after the 0.1 s deadline of the first checks
        of "none", which went down so); the next attempt, a second later,
        reads the refusal. A refusal described wrongly never matches.
        """
        await wait_for(
            reactor,
            lambda: (
                self.status(monitor, name) == "down"
                and self.error(monitor, name) == error
            ),
            JUDGED_BOUND,
            f"{name} down, refused",
            state=lambda: (
                f"is {self.status(monitor, name)}, error {self.error(monitor, name)}"
            ),
        )

    async def check_all(self, protocols: str) -> Any:
        """
        Against a server speaking `protocols`: the right certificate (alone
        or with its chain) is up; none, one from another CA, or an expired
        one is down, saying what the server refused.
        """
        certs = self.certs
        server = self.redis(
            tls=certs,
            tls_auth_clients="yes",
            extra_args=["--tls-protocols", protocols],
        )
        port = server.port
        monitor = self.start_agent(
            [
                self.instance(
                    "right", port, (certs.client_cert_file, certs.client_key_file)
                ),
                self.instance(
                    "chain", port, (certs.chain_cert_file, certs.chain_key_file)
                ),
                self.instance("none", port, None),
                self.instance(
                    "stranger",
                    port,
                    (certs.other_client_cert_file, certs.other_client_key_file),
                ),
                self.instance(
                    "expired", port, (certs.expired_cert_file, certs.client_key_file)
                ),
            ]
        )
        for name in ("right", "chain"):
            await self.wait_status(monitor, name, "up", 3.0)
            self.assertEqual(monitor.states[name].health.replication.role, "master")
        refused = "TLS: the server refused the client certificate: "
        await self.wait_refused(
            monitor,
            "stranger",
            refused + "unknown ca (not signed by a CA the server trusts)",
        )
        await self.wait_refused(
            monitor, "expired", refused + "certificate expired (or not yet valid)"
        )
        return monitor

    async def test_tls13(self) -> None:
        """
        With TLS 1.3 the server judges the certificate after the client's
        handshake is done: its alert is still the check's error, and no
        certificate at all is named as such.
        """
        monitor = await self.check_all("TLSv1.3")
        await self.wait_refused(
            monitor,
            "none",
            "TLS: the server requires a client certificate (cert_file, key_file)",
        )

    async def test_tls12(self) -> None:
        """
        With TLS 1.2 the server refuses during the handshake: the same
        errors, except that a TLS 1.2 server says only "handshake failure"
        to a client without a certificate.
        """
        monitor = await self.check_all("TLSv1.2")
        await self.wait_refused(
            monitor,
            "none",
            "TLS: tls alert handshake failure (no client certificate was "
            "offered: does it need one?)",
        )

    async def test_with_password(self) -> None:
        """
        With a password, AUTH is the first command: the server's refusal
        of the certificate is still the error, not an auth failure.
        """
        certs = self.certs
        server = self.redis(tls=certs, tls_auth_clients="yes", password="hunter2")
        files = (certs.client_cert_file, certs.client_key_file)
        instances = [
            self.instance("right", server.port, files),
            self.instance("none", server.port, None),
        ]
        monitor = self.start_agent(
            [attr.evolve(i, password="hunter2") for i in instances]
        )
        await self.wait_status(monitor, "right", "up", 3.0)
        await self.wait_refused(
            monitor,
            "none",
            "TLS: the server requires a client certificate (cert_file, key_file)",
        )

    async def test_server_still_verified(self) -> None:
        """
        Showing a client certificate changes nothing on our side: a server
        certificate from a CA other than ca_file's is refused.
        """
        certs = self.certs
        server = self.redis(tls=certs, tls_auth_clients="yes")
        files = (certs.client_cert_file, certs.client_key_file)
        monitor = self.start_agent(
            [self.instance("r", server.port, files, ca_file=certs.other_ca_file)]
        )
        await self.wait_status(monitor, "r", "down", 3.0)
        self.assertEqual(
            self.error(monitor, "r"),
            "TLS: certificate verify failed: self-signed certificate in "
            "certificate chain: certificate 1 of the server's chain "
            f"CN=sentinel test CA (checked against ca_file {certs.other_ca_file})",
        )

    async def test_optional_client_certificate(self) -> None:
        """
        A server that takes a certificate but needs none (``optional``)
        takes ours, and one without.
        """
        certs = self.certs
        server = self.redis(tls=certs, tls_auth_clients="optional")
        files = (certs.client_cert_file, certs.client_key_file)
        monitor = self.start_agent(
            [
                self.instance("with", server.port, files),
                self.instance("without", server.port, None),
            ]
        )
        await self.wait_status(monitor, "with", "up", 3.0)
        await self.wait_status(monitor, "without", "up", 3.0)


class DescribeTests(SynchronousTestCase):
    """OpenSSL's errors into the check's short error texts."""

    def ssl_failure(self, reason: str) -> Failure:
        return Failure(SSL.Error([("SSL routines", "", reason)]))

    def test_alert_after_handshake(self) -> None:
        """
        A connection lost to an alert names what the server refused; any
        other TLS error is shown as OpenSSL says it, and a failure that is
        no TLS error is left to the caller.
        """
        cases = {
            "tlsv13 alert certificate required": "TLS: the server requires a "
            "client certificate (cert_file, key_file)",
            "tlsv1 alert unknown ca": "TLS: the server refused the client "
            "certificate: unknown ca (not signed by a CA the server trusts)",
            "tls alert certificate expired": "TLS: the server refused the client "
            "certificate: certificate expired (or not yet valid)",
            "sslv3 alert bad certificate": "TLS: the server refused the client "
            "certificate: bad certificate",
            "tlsv1 alert protocol version": "TLS: tlsv1 alert protocol version",
            "decryption failed or bad record mac": "TLS: decryption failed or "
            "bad record mac",
        }
        for reason, expected in cases.items():
            self.assertEqual(tls.describe_tls_loss(self.ssl_failure(reason)), expected)
        self.assertIsNone(tls.describe_tls_loss(Failure(ConnectionDone())))

    def test_plain_answer_hint(self) -> None:
        """
        OpenSSL's words for a first answer that is no TLS record say that
        the server answered without TLS, and what tls = true needs.
        """
        instance = RedisInstance("r", "127.0.0.1", 1, tls=True)
        for reason in ("wrong version number", "packet length too long"):
            self.assertEqual(
                tls.describe_tls_failure(self.ssl_failure(reason), instance),
                f"TLS: {reason} (the server answered without TLS: tls = true"
                " needs its TLS port)",
            )

    def test_chain_too_long_hint(self) -> None:
        """
        OpenSSL's "excessive message size" (a server's chain over its 100
        KiB) says what is most likely too large.
        """
        failure = self.ssl_failure("excessive message size")
        instance = RedisInstance("r", "127.0.0.1", 1, tls=True)
        self.assertEqual(
            tls.describe_tls_failure(failure, instance),
            "TLS: excessive message size (a handshake message over OpenSSL's "
            "bound: the server's certificate chain over 100 KiB?)",
        )

    def test_protocol_version_hint(self) -> None:
        """
        A server that speaks only TLS versions the agent refuses (its alert,
        or OpenSSL's refusal of the version it chose) says what is likely.
        """
        instance = RedisInstance("r", "127.0.0.1", 1, tls=True)
        for reason in ("tlsv1 alert protocol version", "unsupported protocol"):
            self.assertEqual(
                tls.describe_tls_failure(self.ssl_failure(reason), instance),
                f"TLS: {reason} (no TLS version both sides accept: a server "
                "that speaks only TLS 1.0 or 1.1?)",
            )

    def test_handshake_failure_hint(self) -> None:
        """
        A TLS 1.2 server's bare "handshake failure" to a client that offered
        no certificate says so; with a certificate offered, it is as it is.
        """
        failure = self.ssl_failure("tls alert handshake failure")
        without = RedisInstance("r", "127.0.0.1", 1, tls=True)
        self.assertEqual(
            tls.describe_tls_failure(failure, without),
            "TLS: tls alert handshake failure (no client certificate was "
            "offered: does it need one?)",
        )
        pem, key = client_certificate_pem()
        loaded = certificates.client_certificate(
            certificates.parse_certificates(pem.encode()),
            certificates.parse_private_key(key.encode()),
            "client.pem",
        )
        offered = attr.evolve(
            without,
            cert_file="client.pem",
            key_file="client.key",
            client_certificate=loaded,
        )
        self.assertEqual(
            tls.describe_tls_failure(failure, offered),
            "TLS: tls alert handshake failure",
        )

    def test_client_certificate_not_loaded(self) -> None:
        """
        An instance naming a cert_file that was not loaded with the
        configuration cannot make TLS options, saying so.
        """
        instance = RedisInstance(
            "r", "127.0.0.1", 1, tls=True, cert_file="/c.pem", key_file="/c.key"
        )
        error = self.assertRaises(tls.TLSSetupError, client_tls, instance)
        self.assertEqual(
            str(error), "TLS: cert_file /c.pem was not loaded with the configuration"
        )

    def test_client_certificate_converted_once(self) -> None:
        """
        Instances sharing a client certificate share its conversion for
        OpenSSL: thousands of probes parse the key once.
        """
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        certs = make_certificates(directory)
        files = (certs.client_cert_file, certs.client_key_file)
        first = with_client_certificate(certs, "a", 1, files)
        second = with_client_certificate(certs, "b", 2, files)
        self.assertIsNot(first.client_certificate, second.client_certificate)
        tls._client_certificate_options.cache_clear()
        client_tls(first)
        client_tls(second)
        self.assertEqual(tls._client_certificate_options.cache_info().misses, 1)


def _pump(client: SSL.Connection, server: SSL.Connection) -> list[str]:
    # Hands each side's bytes to the other, in memory, until neither has
    # any to send; each reads what it got (a handshake moves on then).
    # Returns the reasons of the errors either side met reading.
    errors = []
    moved = True
    while moved:
        moved = False
        for source, sink in ((client, server), (server, client)):
            try:
                data = source.bio_read(65536)
            except SSL.WantReadError:
                continue
            sink.bio_write(data)
            moved = True
            try:
                sink.recv(65536)
            except SSL.WantReadError:
                pass
            except SSL.Error as e:
                errors.append(e.args[0][-1][-1])
    return errors


def _handshake(
    instance: RedisInstance,
    cert_file: str,
    key_file: str,
    max_version: int | None = None,
) -> tuple[SSL.Connection, SSL.Connection]:
    # The agent's client connection to `instance`, and a server's showing
    # `cert_file`, in memory; the client's first flight is written (`_pump`
    # moves the handshake on).
    creator = client_tls(instance)
    factory = TLSMemoryBIOFactory(creator, True, Factory.forProtocol(Protocol))
    client = creator.clientConnectionForTLS(factory.buildProtocol(None))
    client.set_connect_state()
    context = SSL.Context(SSL.TLS_METHOD)
    if max_version is not None:
        context.set_max_proto_version(max_version)
    context.use_certificate_chain_file(cert_file)
    context.use_privatekey_file(key_file)
    server = SSL.Connection(context, None)
    server.set_accept_state()
    try:
        client.do_handshake()
    except SSL.WantReadError:
        pass
    return client, server


class RenegotiationTests(SynchronousTestCase):
    """A server asking to renegotiate, in memory."""

    def test_refused(self) -> None:
        """
        A TLS 1.2 server's request to renegotiate is refused: no second
        handshake is ever done (a server that asks without pause would
        otherwise take the agent's CPU, out of sight of the Redis
        protocol's checks).
        """
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        certs = make_certificates(directory)
        client, server = _handshake(
            with_ca("r", 1, certs.ca_file),
            certs.server_cert_file,
            certs.server_key_file,
            SSL.TLS1_2_VERSION,
        )
        self.assertEqual(_pump(client, server), [])
        self.assertEqual(server.get_protocol_version_name(), "TLSv1.2")
        self.assertTrue(server.renegotiate())
        try:
            server.do_handshake()
        except SSL.WantReadError:
            pass
        # The server hears the refusal (and OpenSSL's ends the connection).
        self.assertIn("no renegotiation", _pump(client, server))
        self.assertEqual(client.total_renegotiations(), 0)


class VerifyRefusalTests(SynchronousTestCase):
    """A server's certificate that does not verify, in memory: which, and why."""

    def handshake_error(self, ca_file: str | None, server_cert_file: str) -> str | None:
        """
        The error a check says after a handshake with a server showing
        `server_cert_file`, verified against `ca_file` (the system's CAs
        if None).
        """
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        certs = make_certificates(directory)
        if ca_file is None:
            instance = RedisInstance("r", "127.0.0.1", 1, tls=True)
        else:
            instance = with_ca("r", 1, getattr(certs, ca_file))
        client, server = _handshake(
            instance, getattr(certs, server_cert_file), certs.server_key_file
        )
        self.assertIn("certificate verify failed", _pump(client, server))
        failure = Failure(
            SSL.Error([("SSL routines", "", "certificate verify failed")])
        )
        return tls.describe_tls_failure(failure, instance, client)

    def test_expired(self) -> None:
        """
        An expired server certificate is said to be expired, and since
        when, naming the certificate: not a bare "verify failed", which
        reads the same as a certificate from another CA.
        """
        error = self.handshake_error("ca_file", "expired_server_cert_file")
        assert error is not None
        self.assertRegex(
            error,
            r"^TLS: certificate verify failed: certificate has expired "
            r"\(on \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\): the server's "
            r"certificate CN=localhost \(checked against ca_file .*/ca.pem\)$",
        )

    def test_expired_system_trust(self) -> None:
        """
        Checked against the system's CAs (not read again), an expired
        certificate is still said to be expired.
        """
        error = self.handshake_error(None, "expired_server_cert_file")
        assert error is not None
        self.assertRegex(
            error,
            r"^TLS: certificate verify failed: certificate has expired "
            r"\(on [-\d]+ [:\d]+ UTC\): the server's certificate CN=localhost "
            r"\(checked against the system's trusted CAs\)$",
        )

    def test_unknown_ca(self) -> None:
        """A certificate from a CA not trusted is said to be so."""
        error = self.handshake_error("other_ca_file", "server_cert_file")
        assert error is not None
        self.assertRegex(
            error,
            r"^TLS: certificate verify failed: unable to get local issuer "
            r"certificate: the server's certificate CN=localhost \(checked "
            r"against ca_file .*/other-ca.pem\)$",
        )

    def test_common_name_escaped(self) -> None:
        """
        The common name is the server's text: controls are escaped and a
        long one cut, as any text from a peer is.
        """
        certificate = X509.from_cryptography(
            x509.load_pem_x509_certificate(client_certificate_pem()[0].encode("ascii"))
        )
        self.assertEqual(tls._named(certificate), " CN=sentinel client")
        subject = certificate.get_subject()
        subject.CN = "\x1b[2J" + "x" * 60
        certificate.set_subject(subject)
        self.assertEqual(tls._named(certificate), " CN=\\x1b[2J" + "x" * 54 + "...")


class SharedOptionsTests(SynchronousTestCase):
    """The TLS options of instances alike are made once."""

    def setUp(self) -> None:
        directory = Path(self.mktemp())
        directory.mkdir(parents=True)
        self.certs = make_certificates(directory)

    def test_shared(self) -> None:
        """
        Instances with the same trust, client certificate and server name
        share their TLS options, and so one OpenSSL context (one that trusts
        the system's CAs holds its own copy of them: 0.84 MB each); any of
        the three different gets options of its own.
        """
        first = with_ca("a", 1, self.certs.ca_file)
        self.assertIs(
            client_tls(first), client_tls(with_ca("b", 2, self.certs.ca_file))
        )
        platform = RedisInstance("p", "127.0.0.1", 3, tls=True)
        self.assertIs(
            client_tls(platform),
            client_tls(RedisInstance("q", "127.0.0.1", 4, tls=True)),
        )
        files = (self.certs.client_cert_file, self.certs.client_key_file)
        others = [
            with_ca("c", 1, self.certs.other_ca_file),
            attr.evolve(first, server_name="redis.internal"),
            with_client_certificate(self.certs, "d", 1, files),
            platform,
        ]
        # Held while compared: options nobody holds go (`test_released`).
        made = [client_tls(instance) for instance in [first, *others]]
        self.assertEqual(len({id(creator) for creator in made}), 5)

    def test_released(self) -> None:
        """Options no probe holds any more are not kept."""
        creator = client_tls(with_ca("a", 1, self.certs.ca_file))
        released = weakref.ref(creator)
        del creator
        self.assertIsNone(released())

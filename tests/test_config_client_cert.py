"""
Tests for a TLS client certificate in the configuration: ``cert_file`` and
``key_file`` read and checked at load time, each problem one line naming the
field and the file, never what the key file holds.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa, x25519

from sentinel.config import Config, load_config
from sentinel.files import FileReader, read_regular_file
from tests.certs import (
    CertificateFiles,
    client_certificate_pem,
    key_pem,
    make_certificates,
)
from tests.test_config import SECRET, ConfigTestCase


class ClientCertificateTests(ConfigTestCase):
    """cert_file and key_file, every way they can be wrong."""

    def setUp(self) -> None:
        super().setUp()
        self.certs: CertificateFiles = make_certificates(Path(self.directory))

    def redis(
        self, cert_file: str | None, key_file: str | None, tls: str = "true"
    ) -> str:
        toml = f'[[redis]]\nhost = "h"\nport = 1\ntls = {tls}\n'
        if cert_file is not None:
            toml += f'cert_file = "{cert_file}"\n'
        if key_file is not None:
            toml += f'key_file = "{key_file}"\n'
        return toml

    def load_client(self, cert_file: str, key_file: str) -> Config:
        return self.load(self.redis(cert_file, key_file))

    def test_loaded(self) -> None:
        """
        The certificate and key are read at load time, relative to the
        config file; neither the key nor the certificate is in the repr.
        """
        config = self.load_client("client.pem", "client.key")
        [instance] = config.instances
        self.assertEqual(instance.cert_file, self.certs.client_cert_file)
        self.assertEqual(instance.key_file, self.certs.client_key_file)
        loaded = instance.client_certificate
        assert loaded is not None
        self.assertEqual(len(loaded.chain), 1)
        self.assertEqual(
            loaded.certificate.public_bytes(serialization.Encoding.PEM),
            Path(self.certs.client_cert_file).read_bytes(),
        )
        key = Path(self.certs.client_key_file).read_bytes()
        body = b"".join(key.splitlines()[1:-1]).decode()
        for text in (repr(config), repr(instance), repr(loaded)):
            self.assertNotIn(body[:16], text)
            self.assertNotIn(repr(loaded.key)[:24], text)
            self.assertNotIn("BEGIN", text)

    def test_equality_follows_the_files(self) -> None:
        """
        Loading the same files twice gives equal instances (a reload keeps
        the connection); a new key and certificate under the same names
        give a different one (a reload reconnects).
        """
        first = self.load_client("client.pem", "client.key")
        self.assertEqual(self.load_client("client.pem", "client.key"), first)
        Path(self.certs.client_cert_file).write_bytes(
            Path(self.certs.other_client_cert_file).read_bytes()
        )
        Path(self.certs.client_key_file).write_bytes(
            Path(self.certs.other_client_key_file).read_bytes()
        )
        self.assertNotEqual(self.load_client("client.pem", "client.key"), first)

    def test_one_file_for_both(self) -> None:
        """The certificate and its key may be kept in one PEM file, in any order."""
        cert = Path(self.certs.client_cert_file).read_text()
        key = Path(self.certs.client_key_file).read_text()
        for content in (cert + key, key + cert):
            self.write("both.pem", content)
            [instance] = self.load_client("both.pem", "both.pem").instances
            assert instance.client_certificate is not None
            self.assertEqual(len(instance.client_certificate.chain), 1)

    def test_chain(self) -> None:
        """
        A cert_file holding the certificate then the CA that signed it loads
        both, in order; the other order is refused, saying which comes first.
        """
        [instance] = self.load_client("chain.pem", "chain.key").instances
        assert instance.client_certificate is not None
        self.assertEqual(len(instance.client_certificate.chain), 2)
        leaf, intermediate = (
            Path(self.certs.chain_cert_file)
            .read_text()
            .split("-----END CERTIFICATE-----\n")[:2]
        )
        end = "-----END CERTIFICATE-----\n"
        path = self.write("reversed.pem", intermediate + end + leaf + end)
        self.assertConfigError(
            f"redis[0].key_file: {self.certs.chain_key_file} does not match the "
            f"first certificate in {path} (the client's own certificate comes "
            "first, then the CAs that signed it)",
            self.redis("reversed.pem", "chain.key"),
        )

    def test_key_does_not_match(self) -> None:
        """A key that is not the certificate's is refused, naming both files."""
        self.assertConfigError(
            f"redis[0].key_file: {self.certs.other_client_key_file} does not match "
            f"the certificate in {self.certs.client_cert_file}",
            self.redis("client.pem", "other-client.key"),
        )

    def test_encrypted_key(self) -> None:
        """
        An encrypted key (PKCS#8 or OpenSSL's traditional form) is refused:
        the agent runs unattended and cannot ask for a passphrase.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        traditional = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
        for content in (key_pem(key, b"passphrase"), traditional):
            path = self.write("encrypted.key", content.decode())
            self.assertConfigError(
                f"redis[0].key_file: {path} holds an encrypted private key; "
                "sentinel needs it unencrypted (openssl pkey -in FILE -out "
                "NEWFILE), readable by sentinel alone",
                self.redis("client.pem", "encrypted.key"),
            )

    def test_not_a_key(self) -> None:
        """
        A key_file without a private key (a certificate, garbage, a
        truncated key) is refused without showing what it holds.
        """
        truncated = Path(self.certs.client_key_file).read_text()[:60]
        for content in (
            Path(self.certs.client_cert_file).read_text(),
            f"{SECRET}\n",
            "",
            truncated + SECRET,
        ):
            path = self.write("bad.key", content)
            self.assertConfigError(
                f"redis[0].key_file: {path} holds no valid PEM private key",
                self.redis("client.pem", "bad.key"),
            )

    def test_key_that_cannot_sign(self) -> None:
        """A key of a kind that cannot sign a handshake (X25519) is refused."""
        key = x25519.X25519PrivateKey.generate()
        path = self.write("x25519.key", key_pem(key).decode())  # type: ignore[arg-type]
        self.assertConfigError(
            f"redis[0].key_file: {path} holds a key of type X25519, which cannot "
            "sign a TLS handshake",
            self.redis("client.pem", "x25519.key"),
        )

    def test_key_too_weak_for_openssl(self) -> None:
        """
        A certificate whose key OpenSSL refuses at its security level (RSA
        under 2048 bits) is refused at load, naming both files and saying
        what the level asks, rather than failing every connection later.
        """
        cert, key = client_certificate_pem(rsa.generate_private_key(65537, 1024))
        cert_path = self.write("rsa1024.pem", cert)
        key_path = self.write("rsa1024.key", key)
        self.assertConfigError(
            f"redis[0].key_file: {key_path} and the certificate in {cert_path} "
            "are refused by OpenSSL: ee key too small (at its security level, "
            "RSA and DSA keys need 2048 bits or more, EC keys 224)",
            self.redis("rsa1024.pem", "rsa1024.key"),
        )

    def test_rsa_key_loaded_without_validation(self) -> None:
        """
        An RSA key loads, without the validation of its private half that
        holds the GIL for seconds at 8192 bits (the reactor would wait): a
        key whose private exponent is off still loads, its public half
        matching the certificate.
        """
        numbers = rsa.generate_private_key(65537, 2048).private_numbers()
        off = rsa.RSAPrivateNumbers(
            numbers.p,
            numbers.q,
            numbers.d + 2,
            numbers.dmp1,
            numbers.dmq1,
            numbers.iqmp,
            numbers.public_numbers,
        ).private_key(unsafe_skip_rsa_key_validation=True)
        cert, key = client_certificate_pem(off)
        self.write("rsa.pem", cert)
        self.write("rsa.key", key)
        [instance] = self.load_client("rsa.pem", "rsa.key").instances
        assert instance.client_certificate is not None
        self.assertIsInstance(
            instance.client_certificate.private_key(), rsa.RSAPrivateKey
        )

    def test_not_a_certificate(self) -> None:
        """A cert_file without a certificate (a key, say) is refused."""
        self.assertConfigError(
            f"redis[0].cert_file: {self.certs.client_key_file} holds no valid PEM "
            "certificate",
            self.redis("client.key", "client.key"),
        )

    def test_one_without_the_other(self) -> None:
        """A certificate without its key, or a key without its certificate."""
        self.assertConfigError(
            "redis[0].cert_file: 'client.pem' is given without key_file",
            self.redis("client.pem", None),
        )
        self.assertConfigError(
            "redis[0].key_file: 'client.key' is given without cert_file",
            self.redis(None, "client.key"),
        )

    def test_needs_tls(self) -> None:
        """A client certificate on an instance without TLS is a mistake."""
        toml = self.redis("client.pem", "client.key", tls="false")
        for text in (toml, toml.replace("tls = false\n", "")):
            self.assertConfigError(
                "redis[0].cert_file: 'client.pem' is given but tls is not true", text
            )

    def test_missing_files(self) -> None:
        """A file that cannot be read names the field, the path and why."""
        missing = os.path.join(self.directory, "missing.pem")
        self.assertConfigError(
            f"redis[0].cert_file: cannot read {missing}: No such file or directory",
            self.redis("missing.pem", "client.key"),
        )
        self.assertConfigError(
            f"redis[0].key_file: cannot read {missing}: No such file or directory",
            self.redis("client.pem", "missing.pem"),
        )

    def test_expired_certificate_loads(self) -> None:
        """
        An expired certificate is not refused at load: the server judges it,
        at each connection, and says so in the check's error (a restart the
        day it expires must not stop the checks of every other instance).
        """
        [instance] = self.load_client("expired.pem", "client.key").instances
        self.assertIsNotNone(instance.client_certificate)

    def test_shared_files_read_once(self) -> None:
        """Thousands of instances sharing a client certificate read it once."""
        reads: list[str] = []

        def counting(path: str, limit: int) -> bytes:
            reads.append(os.path.basename(path))
            return read_regular_file(path, limit)

        tables = "".join(
            self.redis("client.pem", "client.key").replace("port = 1", f"port = {p}")
            for p in range(1, 2001)
        )
        path = self.write("sentinel.toml", tables)
        config = load_config(path, {}, "h", FileReader(read_file=counting))
        self.assertEqual(sorted(reads), ["client.key", "client.pem", "sentinel.toml"])
        first, last = config.instances[0], config.instances[-1]
        self.assertIs(first.client_certificate, last.client_certificate)

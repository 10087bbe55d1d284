"""
Certificates made by the tests: a CA, a server certificate it signs for
``localhost`` and 127.0.0.1, client certificates (one the CA signs, one
signed through an intermediate CA, one expired, one an unrelated CA
signs), and that unrelated CA, which trusts nothing of ours.
Keys are P-256, so making them takes milliseconds.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import attr
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = datetime.timedelta(days=1)
# A little in the past, so clocks a few minutes apart still agree.
_SKEW = datetime.timedelta(minutes=5)

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@attr.frozen
class CertificateFiles:
    """Paths of the PEM files `make_certificates` wrote."""

    ca_file: str
    server_cert_file: str
    server_key_file: str
    # The server's key, for localhost, valid until a day ago.
    expired_server_cert_file: str
    other_ca_file: str
    # Signed by ca_file's CA.
    client_cert_file: str
    client_key_file: str
    # The client certificate, then the intermediate CA that signed it (which
    # ca_file's CA signed): only the whole chain verifies.
    chain_cert_file: str
    chain_key_file: str
    # Signed by ca_file's CA, valid until a day ago; client_key_file's key.
    expired_cert_file: str
    # Signed by other_ca_file's CA.
    other_client_cert_file: str
    other_client_key_file: str


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: str,
    issuer: x509.Name,
    key: Key,
    not_before: datetime.datetime | None = None,
) -> x509.CertificateBuilder:
    if not_before is None:
        not_before = datetime.datetime.now(datetime.UTC) - _SKEW
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + _VALIDITY)
    )


def _ca_builder(
    common_name: str, issuer: x509.Name | None, key: Key
) -> x509.CertificateBuilder:
    return (
        _builder(common_name, issuer or _name(common_name), key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )


def _make_ca(common_name: str) -> tuple[Key, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, _ca_builder(common_name, None, key).sign(key, hashes.SHA256())


def _client(
    common_name: str,
    issuer: tuple[Key, x509.Certificate],
    key: Key,
    not_before: datetime.datetime | None = None,
) -> x509.Certificate:
    issuer_key, issuer_cert = issuer
    return (
        _builder(common_name, issuer_cert.subject, key, not_before)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .sign(issuer_key, hashes.SHA256())
    )


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_pem(key: Key, passphrase: bytes | None = None) -> bytes:
    """`key` as PKCS#8 PEM, encrypted with `passphrase` if one is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if passphrase is None
        else serialization.BestAvailableEncryption(passphrase)
    )
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )


def ca_certificate_pem() -> str:
    """A fresh self-signed CA certificate, as PEM text (for a ca_file)."""
    return _pem(_make_ca("sentinel test CA")[1]).decode("ascii")


def client_certificate_pem(key: Key | None = None) -> tuple[str, str]:
    """
    A client certificate for `key` (a fresh one if None), signed by a fresh
    CA, and the key, as PEM text.
    """
    if key is None:
        key = ec.generate_private_key(ec.SECP256R1())
    cert = _client("sentinel client", _make_ca("sentinel test CA"), key)
    return _pem(cert).decode("ascii"), key_pem(key).decode("ascii")


def make_certificates(directory: Path) -> CertificateFiles:
    """Make the CAs and the certificates, as PEM files in `directory`."""
    # Absolute: redis-server runs in a directory of its own.
    directory = directory.resolve()
    ca = _make_ca("sentinel test CA")
    other_ca = _make_ca("sentinel unrelated CA")
    server_key = ec.generate_private_key(ec.SECP256R1())
    long_ago = datetime.datetime.now(datetime.UTC) - 2 * _VALIDITY
    server_certs = [
        _builder("localhost", ca[1].subject, server_key, not_before)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .sign(ca[0], hashes.SHA256())
        for not_before in (None, long_ago)
    ]
    intermediate_key = ec.generate_private_key(ec.SECP256R1())
    intermediate = (
        intermediate_key,
        _ca_builder("sentinel intermediate CA", ca[1].subject, intermediate_key).sign(
            ca[0], hashes.SHA256()
        ),
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    chain_key = ec.generate_private_key(ec.SECP256R1())
    other_key = ec.generate_private_key(ec.SECP256R1())
    files = CertificateFiles(
        ca_file=str(directory / "ca.pem"),
        server_cert_file=str(directory / "server.pem"),
        server_key_file=str(directory / "server.key"),
        expired_server_cert_file=str(directory / "expired-server.pem"),
        other_ca_file=str(directory / "other-ca.pem"),
        client_cert_file=str(directory / "client.pem"),
        client_key_file=str(directory / "client.key"),
        chain_cert_file=str(directory / "chain.pem"),
        chain_key_file=str(directory / "chain.key"),
        expired_cert_file=str(directory / "expired.pem"),
        other_client_cert_file=str(directory / "other-client.pem"),
        other_client_key_file=str(directory / "other-client.key"),
    )
    written = {
        files.ca_file: _pem(ca[1]),
        files.server_cert_file: _pem(server_certs[0]),
        files.server_key_file: key_pem(server_key),
        files.expired_server_cert_file: _pem(server_certs[1]),
        files.other_ca_file: _pem(other_ca[1]),
        files.client_cert_file: _pem(_client("sentinel client", ca, client_key)),
        files.client_key_file: key_pem(client_key),
        files.chain_cert_file: _pem(
            _client("sentinel chained client", intermediate, chain_key),
            intermediate[1],
        ),
        files.chain_key_file: key_pem(chain_key),
        files.expired_cert_file: _pem(
            _client("sentinel expired client", ca, client_key, long_ago)
        ),
        files.other_client_cert_file: _pem(
            _client("sentinel stranger", other_ca, other_key)
        ),
        files.other_client_key_file: key_pem(other_key),
    }
    for path, content in written.items():
        Path(path).write_bytes(content)
    return files

"""
Certificates made by the tests: a CA, a server certificate it signs for
``localhost`` and 127.0.0.1, and an unrelated CA that trusts nothing of ours.
Keys are P-256, so making them takes milliseconds.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import attr
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_VALIDITY = datetime.timedelta(days=1)


@attr.frozen
class CertificateFiles:
    """Paths of the PEM files `make_certificates` wrote."""

    ca_file: str
    server_cert_file: str
    server_key_file: str
    other_ca_file: str


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: str, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    # A little in the past, so clocks a few minutes apart still agree.
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALIDITY)
    )


def _make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(common_name, _name(common_name), key)
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
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def ca_certificate_pem() -> str:
    """A fresh self-signed CA certificate, as PEM text (for a ca_file)."""
    return _pem(_make_ca("sentinel test CA")[1]).decode("ascii")


def make_certificates(directory: Path) -> CertificateFiles:
    """Make the CAs and the server certificate, as PEM files in `directory`."""
    # Absolute: redis-server runs in a directory of its own.
    directory = directory.resolve()
    ca_key, ca_cert = _make_ca("sentinel test CA")
    _, other_ca_cert = _make_ca("sentinel unrelated CA")
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        _builder("localhost", ca_cert.subject, server_key)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = CertificateFiles(
        ca_file=str(directory / "ca.pem"),
        server_cert_file=str(directory / "server.pem"),
        server_key_file=str(directory / "server.key"),
        other_ca_file=str(directory / "other-ca.pem"),
    )
    Path(files.ca_file).write_bytes(_pem(ca_cert))
    Path(files.server_cert_file).write_bytes(_pem(server_cert))
    Path(files.server_key_file).write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    Path(files.other_ca_file).write_bytes(_pem(other_ca_cert))
    return files

"""
PEM certificates and private keys, parsed and checked when the
configuration is loaded, so that making a probe (on the reactor thread)
reads and parses nothing, and a file that cannot work is one line at load
rather than a failed check later.

A client certificate is checked as far as the agent alone can judge: the
file holds certificates, the key is a key, unencrypted, belongs to the
first certificate, and OpenSSL takes them at its security level (Debian's
refuses RSA and DSA keys under 2048 bits: taken at load, such a
certificate failed every connection later with three tracebacks and
``timeout (connect)``). Whether the server accepts it (signed by a CA it
trusts, not expired) is for the server to say, at each connection: an
expired certificate is not refused here, so that a restart on the day it
expires does not stop the checks of every other instance.

An RSA key is loaded without cryptography's validation of its private
half (the primality of its factors): it holds the GIL for 0.4 s of CPU at
4096 bits and 5.6 s at 8192 (measured here), which the reactor thread would
wait out at every load and reload. The key is the operator's own, its
public half is checked against the certificate, and a private half that
does not fit it makes signatures the server refuses, which the check's
error then says.

Messages name the problem, never what a file holds.
"""

from __future__ import annotations

import attr
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from OpenSSL import SSL
from OpenSSL.crypto import X509, PKey

# The kinds of private key OpenSSL can sign a TLS handshake with (as
# pyOpenSSL takes them).
TLSKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
    | dsa.DSAPrivateKey
)
_TLS_KEY_TYPES = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,
)


class CertificateProblem(Exception):
    """A PEM file that cannot be used; the message says why, after its path."""


@attr.frozen
class ClientCertificate:
    """
    A TLS client certificate: the certificate, then the CA certificates
    that complete its chain, and its private key. Two are equal when their
    certificates and keys are, so a reload that changes either file makes
    the instance a changed one.
    """

    chain: tuple[x509.Certificate, ...]
    # PKCS#8 DER, unencrypted; never shown.
    key: bytes = attr.field(repr=False)

    @property
    def certificate(self) -> x509.Certificate:
        """The client's own certificate (the first of the chain)."""
        return self.chain[0]

    def private_key(self) -> TLSKey:
        """The private key, parsed."""
        key = serialization.load_der_private_key(
            self.key, password=None, unsafe_skip_rsa_key_validation=True
        )
        assert isinstance(key, _TLS_KEY_TYPES)  # Checked by parse_private_key.
        return key


def parse_certificates(data: bytes) -> tuple[x509.Certificate, ...]:
    """
    Every certificate in the PEM text `data`, in order (other PEM blocks,
    such as a private key kept in the same file, are skipped).

    @raise CertificateProblem: if it holds no valid PEM certificate.
    """
    try:
        return tuple(x509.load_pem_x509_certificates(data))
    except ValueError:
        raise CertificateProblem("holds no valid PEM certificate") from None


def parse_private_key(data: bytes) -> TLSKey:
    """
    The private key in the PEM text `data` (the first, if several).

    @raise CertificateProblem: if it holds none, an encrypted one (the
        agent runs unattended and cannot ask for a passphrase), or one TLS
        cannot sign with.
    """
    try:
        key = serialization.load_pem_private_key(
            data, password=None, unsafe_skip_rsa_key_validation=True
        )
    except TypeError:
        # cryptography's way of saying a passphrase is needed.
        raise CertificateProblem(
            "holds an encrypted private key; sentinel needs it unencrypted "
            "(openssl pkey -in FILE -out NEWFILE), readable by sentinel alone"
        ) from None
    except Exception:
        # Not a key, or one of a kind cryptography does not know; its
        # message might quote the file.
        raise CertificateProblem("holds no valid PEM private key") from None
    if not isinstance(key, _TLS_KEY_TYPES):
        kind = type(key).__name__.removesuffix("PrivateKey") or "unknown"
        raise CertificateProblem(
            f"holds a key of type {kind}, which cannot sign a TLS handshake"
        )
    return key


def _public(key: TLSKey | x509.Certificate) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def client_certificate(
    chain: tuple[x509.Certificate, ...], key: TLSKey, cert_file: str
) -> ClientCertificate:
    """
    The certificate `chain` (from `cert_file`) with its private `key`.

    @raise CertificateProblem: (about the key) if `key` does not belong to
        the first certificate of `chain`, or OpenSSL refuses them.
    """
    public = _public(key)
    if _public(chain[0]) != public:
        if any(_public(cert) == public for cert in chain[1:]):
            raise CertificateProblem(
                f"does not match the first certificate in {cert_file} (the "
                "client's own certificate comes first, then the CAs that signed it)"
            )
        raise CertificateProblem(f"does not match the certificate in {cert_file}")
    refusal = _openssl_refusal(chain[0], key)
    if refusal is not None:
        raise CertificateProblem(
            f"and the certificate in {cert_file} are refused by OpenSSL: {refusal}"
        )
    der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return ClientCertificate(chain=chain, key=der)


# OpenSSL's reason for a key too weak for its security level, and what
# that level asks (level 2, Debian's default).
_KEY_TOO_SMALL = "ee key too small"
_LEVEL_WANTS = "RSA and DSA keys need 2048 bits or more, EC keys 224"


def _openssl_refusal(certificate: x509.Certificate, key: TLSKey) -> str | None:
    # What a connection's context does with them, done once here.
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    try:
        context.use_certificate(X509.from_cryptography(certificate))
        context.use_privatekey(PKey.from_cryptography_key(key))
    except SSL.Error as e:
        errors = e.args[0] if e.args else None
        reason = (
            str(errors[-1][-1])
            if isinstance(errors, list) and errors and isinstance(errors[-1], tuple)
            else str(e)
        )
        if reason == _KEY_TOO_SMALL:
            return f"{reason} (at its security level, {_LEVEL_WANTS})"
        return reason or "unusable"
    return None

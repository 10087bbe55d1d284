"""
TLS to Redis: the verifying client options of one instance, built once per
probe, with its client certificate if it has one, and short error texts for
handshakes that fail.

The certificate is always verified, against the instance's ``ca_file`` or
else the platform's trusted CAs, and must name ``server_name`` (by default
the instance's host). ``optionsForClientTLS`` is what verifies: passing
``True`` for TLS, as txredisapi allows, does not (DESIGN.md section 4).

Probes are made on the reactor thread, so nothing here reads a file: the
``ca_file``, ``cert_file`` and ``key_file`` were read and parsed when the
configuration was loaded (`sentinel.certificates`), and a trust root or a
client certificate is converted once per bundle or certificate, not once
per instance (thousands of instances commonly share them).

Redis never renegotiates (TLS 1.3 cannot), and a server that asks to over
TLS 1.2 makes the client do a whole handshake each time, out of sight of
the Redis protocol's checks: one hostile server renegotiating without
pause took 23-51 % of the agent's core (2 % without it, 200 other
instances) while its instance showed up. The client refuses
renegotiation (OpenSSL answers with an alert, 2.5 % then), so a server
asking for it costs what any bytes cost.

OpenSSL says only "certificate verify failed" when the server's chain
does not verify: an expired certificate, one not valid yet, a self-signed
one and one from another CA all read alike in ``/instances``. So after
such a failure the chain the server showed is verified again against the
same trust, which says which certificate failed and why (OpenSSL's own
words). That costs a failed handshake a little more, and nothing else.

Whether the server accepts the client certificate is the server's verdict.
With TLS 1.3 the client has finished its handshake before the server has
judged its certificate, so a refusal arrives as an alert on the first read
after the handshake: `describe_tls_failure` reads that alert as well as a
failed handshake, and says which side refused what.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from weakref import WeakValueDictionary

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL
from OpenSSL.crypto import (
    X509,
    PKey,
    X509Store,
    X509StoreContext,
    X509StoreContextError,
)
from service_identity import VerificationError
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from sentinel.certificates import ClientCertificate
from sentinel.checks import printable
from sentinel.config import RedisInstance

if TYPE_CHECKING:
    # Public as twisted.internet.ssl's trust roots, declared in a private module.
    from twisted.internet._sslverify import IOpenSSLTrustRoot


class TLSSetupError(Exception):
    """The instance's TLS settings cannot be used; the message says why."""


def server_name(instance: RedisInstance) -> str:
    """The name the server's certificate must carry."""
    return instance.server_name or instance.host


@lru_cache(maxsize=32)
def _trust_root(certificates: tuple[x509.Certificate, ...]) -> IOpenSSLTrustRoot:
    trust: IOpenSSLTrustRoot = trustRootFromCertificates(
        [Certificate.loadPEM(c.public_bytes(Encoding.PEM)) for c in certificates]
    )
    return trust


@lru_cache(maxsize=32)
def _client_certificate_options(certificate: ClientCertificate) -> dict[str, Any]:
    leaf, *chain = certificate.chain
    return {
        "certificate": X509.from_cryptography(leaf),
        "privateKey": PKey.from_cryptography_key(certificate.private_key()),
        "extraCertChain": [X509.from_cryptography(c) for c in chain],
    }


# The TLS options of the instances that share a trust, a client certificate
# and a server name, shared while a probe holds them: each has its OpenSSL
# context, made at its first connection, and a context that trusts the
# system's CAs holds its own copy of them (measured: 0.84 MB and 4.7 ms of
# the reactor's time each; 1,000 instances without ca_file took 1,029 MB,
# against 194 MB with the same bundle as ca_file).
_creators: WeakValueDictionary[tuple[Any, ...], _NoRenegotiation] = (
    WeakValueDictionary()
)


@implementer(IOpenSSLClientConnectionCreator)
class _NoRenegotiation:
    """Twisted's verifying client connections, with renegotiation refused."""

    def __init__(self, creator: IOpenSSLClientConnectionCreator) -> None:
        self._creator = creator

    def clientConnectionForTLS(
        self, tlsProtocol: TLSMemoryBIOProtocol
    ) -> SSL.Connection:
        """A connection of the verifying creator that will not renegotiate."""
        connection = self._creator.clientConnectionForTLS(tlsProtocol)
        connection.set_options(SSL.OP_NO_RENEGOTIATION)
        return connection


def client_tls(instance: RedisInstance) -> IOpenSSLClientConnectionCreator:
    """
    The TLS options for connecting to C{instance}: verify its certificate
    against the certificates loaded from its C{ca_file}, or the platform's
    trusted CAs, and show the server its client certificate, if it has one;
    refuse renegotiation (the module docstring). Instances with the same
    trust, client certificate and server name get the same options, and
    so share one OpenSSL context.

    @raise TLSSetupError: if the CA file's certificates or the client
        certificate were not loaded (an instance not made by
        L{sentinel.config.load_config}) or the server name is not a valid
        host name.
    """
    if instance.ca_file is not None and not instance.ca_certificates:
        raise TLSSetupError(
            f"TLS: ca_file {instance.ca_file} was not loaded with the configuration"
        )
    if instance.cert_file is not None and instance.client_certificate is None:
        raise TLSSetupError(
            f"TLS: cert_file {instance.cert_file} was not loaded with the configuration"
        )
    name = server_name(instance)
    key = (
        instance.ca_certificates if instance.ca_file is not None else None,
        instance.client_certificate,
        name,
    )
    shared = _creators.get(key)
    if shared is None:
        shared = _creators[key] = _make_client_tls(instance, name)
    return shared


def _make_client_tls(instance: RedisInstance, name: str) -> _NoRenegotiation:
    trust = (
        _trust_root(instance.ca_certificates)
        if instance.ca_file is not None
        else platformTrust()
    )
    # A fresh dict: optionsForClientTLS may add to it.
    options: dict[str, Any] = {}
    if instance.client_certificate is not None:
        options.update(_client_certificate_options(instance.client_certificate))
    try:
        verifying = optionsForClientTLS(
            name, trustRoot=trust, extraCertificateOptions=options
        )
    except ValueError:
        # idna's errors are ValueErrors too.
        raise TLSSetupError(
            f"TLS: server name {name!r} is not a valid host name"
        ) from None
    return _NoRenegotiation(verifying)


# OpenSSL names an alert from the peer "<version> alert <description>".
_ALERT = re.compile(r"(?:sslv3|tls|tlsv1|tlsv1[0-9]) alert (.+)")

# Alerts by which a server refuses the client's certificate (RFC 8446
# section 6.2), with a word for the two most common causes.
_CERTIFICATE_ALERTS = {
    "unknown ca": "unknown ca (not signed by a CA the server trusts)",
    "certificate expired": "certificate expired (or not yet valid)",
    "bad certificate": "bad certificate",
    "unsupported certificate": "unsupported certificate",
    "certificate revoked": "certificate revoked",
    "certificate unknown": "certificate unknown",
    "access denied": "access denied",
}


# What OpenSSL says when the server's first bytes are not a TLS record
# (1.1 and 3.x): a plain port, a server that answered in its own words.
_NOT_TLS = frozenset(
    {"wrong version number", "packet length too long", "unknown protocol"}
)
NOT_TLS_HINT = "the server answered without TLS: tls = true needs its TLS port"


def _openssl_reason(failure: Failure) -> str:
    # OpenSSL's error queue: (library, function, reason) triples, most
    # relevant last; the reason alone reads best.
    args = failure.value.args if failure.value is not None else ()
    errors = args[0] if args else None
    reason = ""
    if isinstance(errors, list) and errors and isinstance(errors[-1], tuple):
        reason = str(errors[-1][-1])
    return reason or failure.getErrorMessage()


def _describe_alert(reason: str) -> str | None:
    match = _ALERT.fullmatch(reason)
    if match is None:
        return None
    alert = match.group(1)
    if alert == "certificate required":
        return "TLS: the server requires a client certificate (cert_file, key_file)"
    refusal = _CERTIFICATE_ALERTS.get(alert)
    if refusal is None:
        return None
    return f"TLS: the server refused the client certificate: {refusal}"


def describe_tls_loss(failure: Failure) -> str | None:
    """
    A short text for a TLS connection lost to an alert from the server
    once the handshake is done (a refused client certificate, with TLS
    1.3), or L{None} if C{failure} is not a TLS error. Cheap for any other
    failure: every lost connection is asked.
    """
    if not failure.check(SSL.Error):
        return None
    reason = _openssl_reason(failure)
    return _describe_alert(reason) or f"TLS: {reason or 'connection failed'}"


@lru_cache(maxsize=32)
def _verifying_store(certificates: tuple[x509.Certificate, ...]) -> X509Store:
    # A ca_file's trust, for verifying a chain again.
    store = X509Store()
    for certificate in certificates:
        store.add_cert(X509.from_cryptography(certificate))
    return store


def _why_unverified(connection: object, instance: RedisInstance) -> str | None:
    """
    Which certificate of the chain the server showed on `connection` (an
    SSL.Connection whose handshake failed to verify it) does not verify,
    and why, in OpenSSL's words; None if that cannot be told.

    The chain is verified again against the ca_file's certificates. The
    system's CAs would have to be read from their files, which nothing on
    the reactor thread does: without a ca_file, only the dates of the
    chain are looked at (an expired certificate is the common case).
    """
    if not isinstance(connection, SSL.Connection):
        return None
    chain = connection.get_peer_cert_chain()
    if not chain:
        return None
    if instance.ca_file is None:
        return _out_of_date(chain)
    store = _verifying_store(instance.ca_certificates)
    try:
        X509StoreContext(store, chain[0], chain[1:]).verify_certificate()
    except X509StoreContextError as e:
        code, depth, reason = e.errors
        return _which(f"{reason}{_when(code, e.certificate)}", depth, e.certificate)
    return None


def _out_of_date(chain: list[X509]) -> str | None:
    now = datetime.now(UTC)
    for depth, certificate in enumerate(chain):
        cert = certificate.to_cryptography()
        if now > cert.not_valid_after_utc:
            code, reason = _EXPIRED, "certificate has expired"
        elif now < cert.not_valid_before_utc:
            code, reason = _NOT_YET_VALID, "certificate is not yet valid"
        else:
            continue
        return _which(f"{reason}{_when(code, certificate)}", depth, certificate)
    return None


def _which(why: str, depth: int, certificate: X509 | None) -> str:
    if depth == 0:
        which = "the server's certificate"
    else:
        which = f"certificate {depth} of the server's chain"
    return f"{why}: {which}{_named(certificate)}"


# X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED.
_NOT_YET_VALID = 9
_EXPIRED = 10


def _when(code: int, certificate: X509 | None) -> str:
    if certificate is None or code not in (_NOT_YET_VALID, _EXPIRED):
        return ""
    cert = certificate.to_cryptography()
    if code == _EXPIRED:
        return f" (on {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC)"
    return f" (until {cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC)"


def _named(certificate: X509 | None) -> str:
    if certificate is None:
        return ""
    subject = certificate.to_cryptography().subject
    names = subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    name = names[0].value if names else None
    if not isinstance(name, str):
        return ""
    # The server's own words: escaped and cut, as any peer's text is.
    return f" CN={printable(name, 64)}"


def describe_tls_failure(
    failure: Failure, instance: RedisInstance, connection: object = None
) -> str | None:
    """
    A short text for a failed TLS handshake with C{instance}, or L{None} if
    C{failure} is not a TLS error. C{connection}, the handshake's
    SSL.Connection, tells which certificate did not verify and why.
    """
    if failure.check(VerificationError):
        return f"TLS: certificate does not match server name {server_name(instance)!r}"
    if not failure.check(SSL.Error):
        return None
    reason = _openssl_reason(failure) or "handshake failed"
    if reason == "certificate verify failed":
        trusted = (
            f"ca_file {instance.ca_file}"
            if instance.ca_file is not None
            else "the system's trusted CAs"
        )
        why = _why_unverified(connection, instance)
        if why is None:
            return f"TLS: certificate verify failed (checked against {trusted})"
        return f"TLS: certificate verify failed: {why} (checked against {trusted})"
    described = _describe_alert(reason)
    if described is not None:
        return described
    if reason.endswith("alert handshake failure") and instance.cert_file is None:
        # What a TLS 1.2 server that requires a client certificate sends
        # when it gets none; also what it sends when no cipher is shared.
        return f"TLS: {reason} (no client certificate was offered: does it need one?)"
    if reason.endswith("alert protocol version") or reason == "unsupported protocol":
        # The server's alert, or OpenSSL's refusal of the server's choice:
        # no version both accept. The agent's OpenSSL takes TLS 1.2 and
        # later at its default security level, which every Redis with TLS
        # (6.0 and later) offers unless told otherwise.
        return (
            f"TLS: {reason} (no TLS version both sides accept: a server "
            f"that speaks only TLS 1.0 or 1.1?)"
        )
    if reason in _NOT_TLS:
        # The first bytes back were no TLS record: a plain server's words
        # (Redis's ``-ERR``, an SSH banner, an HTTP error) read as one.
        return f"TLS: {reason} ({NOT_TLS_HINT})"
    if reason == "excessive message size":
        # OpenSSL reads a server's certificates up to 100 KiB in all
        # (SSL_CTX_set_max_cert_list): a longer chain ends the handshake
        # there, after 16 KB read, measured with a 527 KB chain.
        return (
            f"TLS: {reason} (a handshake message over OpenSSL's bound: the "
            f"server's certificate chain over 100 KiB?)"
        )
    return f"TLS: {reason}"

"""
TLS to Redis: the verifying client options of one instance, built once per
probe, and short error texts for handshakes that fail.

The certificate is always verified, against the instance's ``ca_file`` or
else the platform's trusted CAs, and must name ``server_name`` (by default
the instance's host). ``optionsForClientTLS`` is what verifies: passing
``True`` for TLS, as txredisapi allows, does not (DESIGN.md section 4).

Probes are made on the reactor thread, so nothing here reads a file: the
``ca_file`` was read and parsed when the configuration was loaded, and its
trust root is built once per bundle, not once per instance (thousands of
instances commonly share one bundle).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import (
    Certificate,
    optionsForClientTLS,
    platformTrust,
    trustRootFromCertificates,
)
from twisted.python.failure import Failure

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


def client_tls(instance: RedisInstance) -> IOpenSSLClientConnectionCreator:
    """
    The TLS options for connecting to C{instance}: verify its certificate
    against the certificates loaded from its C{ca_file}, or the platform's
    trusted CAs.

    @raise TLSSetupError: if the CA file's certificates were not loaded
        (an instance not made by L{sentinel.config.load_config}) or the
        server name is not a valid host name.
    """
    if instance.ca_file is not None:
        if not instance.ca_certificates:
            raise TLSSetupError(
                f"TLS: ca_file {instance.ca_file} was not loaded with the configuration"
            )
        trust = _trust_root(instance.ca_certificates)
    else:
        trust = platformTrust()
    name = server_name(instance)
    try:
        return optionsForClientTLS(name, trustRoot=trust)
    except ValueError:
        # idna's errors are ValueErrors too.
        raise TLSSetupError(
            f"TLS: server name {name!r} is not a valid host name"
        ) from None


def describe_tls_failure(failure: Failure, instance: RedisInstance) -> str | None:
    """
    A short text for a failed TLS handshake with C{instance}, or L{None} if
    C{failure} is not a TLS error.
    """
    if failure.check(VerificationError):
        return f"TLS: certificate does not match server name {server_name(instance)!r}"
    if not failure.check(SSL.Error):
        return None
    # OpenSSL's error queue: (library, function, reason) triples, most
    # relevant last; the reason alone reads best.
    args = failure.value.args if failure.value is not None else ()
    errors = args[0] if args else None
    reason = ""
    if isinstance(errors, list) and errors and isinstance(errors[-1], tuple):
        reason = str(errors[-1][-1])
    reason = reason or failure.getErrorMessage() or "handshake failed"
    if reason == "certificate verify failed":
        trusted = (
            f"ca_file {instance.ca_file}"
            if instance.ca_file is not None
            else "the system's trusted CAs"
        )
        return f"TLS: certificate verify failed (checked against {trusted})"
    return f"TLS: {reason}"

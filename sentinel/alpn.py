"""
What the HTTP server's TLS answers a client that offers protocols (ALPN)
none of which it speaks.

Twisted's selection (``setupForALPN``) picks the first of the server's
protocols the client offers; with none in common it answers an empty
name, which OpenSSL takes for a fault of its own: the handshake ends with
an ``internal_error`` alert (curl: ``tlsv1 alert internal error``), as if
the agent were broken. RFC 7301 (section 3.2) says a server that speaks
none of the client's protocols "SHALL respond with a fatal
``no_application_protocol`` alert", as nginx does. Answering without
ALPN instead would only move the failure: a client that offers ``h2``
alone (a gRPC client, say) would then speak HTTP/2 to an HTTP/1.1
channel and be answered 400.

OpenSSL sends that alert when the selection callback fails
(``SSL_TLSEXT_ERR_ALERT_FATAL``), which pyOpenSSL makes it do when the
callback raises; it raises the same exception again from the handshake,
where Twisted's TLS layer, catching `OpenSSL.SSL.Error`, sends the alert
and closes the connection. The callback belongs to the context, which
pyOpenSSL refuses to change once a connection has been made with it: so
it is set as the context is first asked for, under the endpoint's own
options (`ProtocolsOnly`), which the listening reactor is handed
(`TLSListening`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from OpenSSL import SSL
from twisted.internet.interfaces import IOpenSSLServerConnectionCreator
from zope.interface import implementer

# What a handshake refused so ends with, as the server's reason.
NO_PROTOCOL = "no application protocol offered is spoken here"


class NoApplicationProtocol(SSL.Error):
    """The client offered no protocol the server speaks."""


@implementer(IOpenSSLServerConnectionCreator)
class ProtocolsOnly:
    """
    A TLS endpoint's server options (`options`, Twisted's
    ``CertificateOptions``), whose context's ALPN selection picks the first
    of `protocols` the client offers and refuses a client that offers only
    others with the ``no_application_protocol`` alert.
    """

    def __init__(self, options: Any, protocols: Sequence[bytes]) -> None:
        self._options = options
        self._protocols = tuple(protocols)
        self._selecting: SSL.Context | None = None

    def serverConnectionForTLS(self, protocol: object) -> SSL.Connection:
        """The options' connection, its context's selection ours."""
        context = self._options.getContext()
        if context is not self._selecting:
            # Before the options make a connection with it: pyOpenSSL
            # refuses to change a context afterwards.
            context.set_alpn_select_callback(self._select)
            self._selecting = context
        connection: SSL.Connection = self._options.serverConnectionForTLS(protocol)
        return connection

    def getContext(self) -> SSL.Context:
        """The options' context (what older callers ask for)."""
        context: SSL.Context = self._options.getContext()
        return context

    def _select(self, connection: SSL.Connection, offered: list[bytes]) -> bytes:
        for protocol in self._protocols:
            if protocol in offered:
                return protocol
        # As OpenSSL's errors are: a queue of (library, function, reason),
        # which Twisted reads.
        raise NoApplicationProtocol([("sentinel", "ALPN", NO_PROTOCOL)])


class TLSListening:
    """
    `reactor`, but for what it listens on with TLS: the endpoint's options
    wrapped (`ProtocolsOnly`, `protocols`). Any endpoint string, however
    wrapped (``haproxy:ssl:...``), comes to ``listenSSL``.
    """

    def __init__(self, reactor: Any, protocols: Sequence[bytes]) -> None:
        self._reactor = reactor
        self._protocols = protocols

    def listenSSL(
        self, port: int, factory: Any, contextFactory: Any, *args: Any, **kw: Any
    ) -> Any:
        """The reactor's listenSSL, with the options wrapped."""
        options = ProtocolsOnly(contextFactory, self._protocols)
        return self._reactor.listenSSL(port, factory, options, *args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)

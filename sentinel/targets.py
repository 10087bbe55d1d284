"""
What an HTTP request names: its host and its path, as RFC 9112 has a
server read them from the request target and the Host header.

- Section 3.2: a server must answer 400 to any request with more than
  one Host header field or one that is no ``host[:port]``. Twisted
  answered every such request, taking the agent's own address for a
  host. `host_problem` says why a request's are refused, as Go's net/http
  does (the same bytes allowed). A request without one is answered, of
  HTTP/1.1 too, where the section (and Go, and nginx) refuse it: this
  server has one site, so a missing Host names nothing wrong, and the
  clients that leave it out are a health checker's or an operator's
  bare ``printf 'GET /healthz HTTP/1.1\r\n\r\n' | nc``, to which a
  400 would read as an agent unhealthy.
- Section 3.2.2: a server must accept a target in absolute form
  (``GET http://127.0.0.1:6060/healthz HTTP/1.1``, as a client sends it
  to a proxy), and take its host from it rather than from the Host
  header. Twisted passed it on whole as the path, and every route was a
  404. `origin_form` reads it as the path and query it names, and the
  host; a target that is neither that, a path, nor ``*`` is refused, as
  Go refuses it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# The bytes a Host header may hold (Go's httpguts.ValidHostHeader): those
# of a registered name, an IP address (v6 in brackets, with a zone's
# ``%``) and a port.
HOST_BYTES = frozenset(
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!$%&'()*+,-.:;=[]_~"
)
# An absolute-form target of the schemes this server answers; what
# follows the host (a path, a query, or nothing) is kept as it is.
ABSOLUTE_FORM = re.compile(rb"(?i:https?)://(?P<host>[^/?]*)(?P<rest>[/?].*)?", re.S)
NOT_A_TARGET = "the request target is neither a path nor an absolute http URL"


def host_problem(hosts: Sequence[bytes] | None) -> str | None:
    """
    Why a request whose Host header fields are `hosts` (None if it has
    none, which is no reason: see the module's docstring) is refused, or
    None if it is not.
    """
    if not hosts:
        return None
    if len(hosts) > 1:
        return f"{len(hosts)} Host header fields, where there must be one"
    if not _is_host(hosts[0], empty=True):
        return "the Host header is not a host name"
    return None


def origin_form(target: bytes) -> tuple[bytes, bytes | None] | str:
    """
    The path (and query) `target` names and the host it names, if it is
    in absolute form (else None); or why it is refused.
    """
    if target.startswith(b"/") or target == b"*":
        return target, None
    absolute = ABSOLUTE_FORM.fullmatch(target)
    if absolute is None:
        return NOT_A_TARGET
    host = absolute.group("host")
    if not _is_host(host, empty=False):
        return "the request target's host is not a host name"
    rest = absolute.group("rest") or b""
    # An empty path is the root's (RFC 9112 section 3.2.1).
    return (rest if rest.startswith(b"/") else b"/" + rest), host


def _is_host(value: bytes, empty: bool) -> bool:
    # A Host header may be empty (RFC 9112 section 3.2), a URL's host not.
    return (empty or value != b"") and HOST_BYTES.issuperset(value)

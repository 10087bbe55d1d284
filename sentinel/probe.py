"""
One Redis check at a time per instance, over one kept connection.

The connection is `sentinel.protocol`'s, connected by us rather than through
``txredisapi.Connection`` (which reconnects forever with no handle to stop it,
DESIGN.md section 4). A connection attempt resolves the host first, then
waits for the agent's `sentinel.pacing.ConnectPacer` to let it start (so a
name whose server never answers holds no place), connects, and does TLS and
AUTH. The attempt is owned by the probe, not by the check that started it: a
connection that completes after its check's deadline is kept for the next
check. Any timeout, lost connection or error that leaves the connection out
of step drops it; a later check connects again when `sentinel.reconnects`
allows (once a second, as Redis Sentinel does), and checks in between fail
at once with the last error. What a check sends and who takes each reply
is `sentinel.pipelines`'.

A kept connection the server closes as a check goes out on it, before any
reply to it (an idle ``timeout`` of Redis's or a proxy's firing as the
check arrives: the close and the check cross), is no failure by itself,
as Redis Sentinel counts none: the check is sent again at once on a new
connection, if the once-a-second rule allows one for the check's due time
(`sentinel.reconnects`), the connection had answered a check before and
nothing older is owed; that connection's answer, or failure, is the
check's, judged as any check that connects. Once per check: a server that
closes the new connection too before answering fails it. The PING the
close crossed is not owed (the bound below): the server owes the one
sent again, from when the agent gets to send it; a new connection waiting
in line for the pacer is the agent's shortage, not the server's silence.
Before, 300 TLS servers closing 0.3 s after their last reply (the close
late under load, and crossing the next check) had 1,324 of 3,543 checks
fail, ``connection lost`` and then ``timeout (no reply for over 3.5 s)``,
69 of them published down at some point (load 26); now 53 of 4,640, none
down (``benchmarks/hangups.py``).

A kept connection is not kept for good: a server that turns every new
client away (its port or bind address moved, or full) still answers on
it. After at most `reconnect_every` seconds (less a random share, up to
`RENEW_JITTER`), or once its name's answers no longer hold the address
connected to (`Resolver.watch`: a DNS failover), the next check due then
that finds the pacer with room starts a new connection, as a check that
connects does (within the pacer's bounds; the once a second rule, which
is about failures, always allows it). That check, and those while the
new connection is on its way, go over the kept one: renewing is the
agent's own choice, and the connection that serves tells what the
instance is (a check that waited for the new one would say nothing of
a server that stopped just then).
The new connection takes the old one's place once no check is in flight
on the old one, and the old one is closed once the new one has answered
PING. A refused, turned-away or timed-out new connection (the agent on
time: as for any attempt) fails the next check at once, and so do the
checks after it, which connect again as after any failure, while the
old connection is held, unused (dropped, it would give a full server's
slot back to the agent's next attempt, and hide that it is full; and a
server whose new connections time out while old ones answer, its new
SYNs dropped, is found). An attempt the agent itself was too late for (inconclusive, a
starved agent timed its renewals out and published healthy instances
down) changes nothing: the old connection serves on, and the renewal is
tried again after `RENEW_RETRY` of `reconnect_every` to twice that.
A step of the wall clock (`sentinel.clocksteps`) moves no renewal time:
one back of more than `reconnect_every` renews at once, a shorter one
delays renewals by as much; one forward makes them all due at once, and
the pacer spreads them as it does the connects at start-up.

A check that waits for a connection fails on a timeout only when Redis
had a fair chance: its attempt started at least `FAIR_SHARE` of the
timeout before the deadline, the agent itself ran
late by less than `LATE_SHARE` of it since the check or the attempt
began (`ConnectPacer.lateness_since`), and the server completed none of
the agent's other handshakes (TLS, AUTH) since the attempt began: one
that did was answering, the attempt queued behind the agent's own
(`sentinel.handshakes`). Otherwise the agent did not get to
look: the check ends with None, nothing is recorded, and the attempt goes
on.
The PING of a check is judged so too: sent on a connection that completed
for the check with less than `FAIR_SHARE` of the timeout left, or timed
out while the agent stalled for `LATE_SHARE` of it in one turn since it was
sent (`ConnectPacer.longest_stall_since`: a PING waits for one turn at most,
and a busy reactor's few ms a beat summed made every PING timeout
inconclusive for the 10-15 s a view change connects; a stopped server's
instances went down that much later), or
the first on a connection just made while its server went on completing
the agent's other handshakes (`sentinel.handshakes`), or, over TLS, timed
out while its server was still answering the agent's older PINGs and none
as new (`sentinel.answers`; not twice in a row without an answer between),
its check ends with None, and the connection is kept, the late replies read
and dropped when they come: a connection made is a TLS handshake on both
sides, and dropping it for the agent's own lateness made one instance in
six connect twice at a start-up of 3,000 TLS instances, and kept the agent
late. A check that then times out before those replies are in drops it
(the connection falls one check behind at most), as a timeout on time
always does. The agent's lateness is measured only while it connects: in
steady state a timeout is judged as ever (`sentinel.deadlines`).
An attempt that then fails on its own (refused, or its own timeout while
the agent kept up, or whose SYN the kernel still waited on after
`sentinel.protocol.UNANSWERED_SHARE` of its bound however late the agent
ran: `sentinel.protocol.Unanswered`, unless the server completed another
of the agent's handshakes meanwhile, `sentinel.handshakes`) is reported
by the next check at once, so a dead server is still found within an
interval of the agent getting to it. (Before, an agent at load 20-47
took every such timeout for its own lateness, and a name whose addresses
were all down stayed unjudged for as long as it was starved.) A refused
connection fails at once, always. And a check that cannot look
(its attempt still in line for the pacer, or started too late) of an
instance whose last check failed, none answered since, fails again with
that error while the agent keeps up, as checks between two reconnects
do (a plain TCP connection made since is no answer to a PING that timed
out: a stopped server's listen backlog completes connects too): a
server that stops answering with thousands of instances fills the
pacer's places with attempts to it (its listen backlog full, new
connections are dropped, and each runs its whole bound), and its
instances must go down within the fall bound, not at the pace those
places free up. Once one of those attempts timed out, one attempt to the
address is in flight at a time (`sentinel.stalls`): the other instances
on it start none, their checks are those of an attempt in line, and the
places go to the other instances. One of them with no failure to repeat
(never judged: a hung host at start-up, or an instance added; or
answered since) fails with the address's last timeout if that came
while the agent kept up, as a kept connection due for renewal meanwhile
does, and says nothing if not: the instances on one address (and TLS
server name) are one server's, and meet what its connects meet. Before,
each waited for a turn of its own, one connect timeout per instance
before it: 20 names added on a hung host were published down after
10.0 s (p50), 20.5 s at most, one not within 45 s; now 1.6 s, 2.0 s
at most (bound 3.5 s; ``benchmarks/sharedstall.py``).

Those excuses have a bound, as Redis Sentinel's ``act_ping_time`` has:
the probe keeps when the oldest command its server has not answered was
sent (PING, its pipeline, INFO, AUTH; on any connection, one dropped
since too), and any reply clears it, a late one read and dropped for a
check already ended included (the server's process answered; a
connection made, by the kernel, is no answer), and so do bytes still in
the socket, unread, when the agent drops a connection
(`RedisClientProtocol.unread`): after a stall the reactor runs its
overdue deadlines before it reads, and a connection two checks behind
is dropped for the agent's own lateness with the server's replies in
it. Lost with them, the debt outlived the drop, and a loaded agent (15
HTTP clients looping, load 11-20) published whole slices of healthy
instances down with the timeout below. The server owes only what it
was sent: once the agent dropped the connection holding a command
unanswered, with no other kept, the time counts until the next check is
due (the agent would have sent nothing sooner), and then stands still
until a command is sent again. Those checks are the ones that cannot
look for the agent's own reasons (the once a second reconnect rule after
an attempt inconclusive, an attempt in line for the pacer or timed out
across a stall), and a server with nothing on the wire cannot answer
them; before, they failed with the timeout below once the bound passed
since the PING lost with the connection (a healthy server's, whose reply
came just after the drop, or never got a connection to come on). A
frozen server's time still adds up over every connection it leaves
unanswered, and is found as soon as before where the agent reconnects at
its next check. And before any check fails for a reply owed past the
bound, the sockets of the connection kept and of the check ending are
looked at the same way: a reply there, unread, is an answer. The agent's
own turn can stall for longer than the bound (an agent short of CPU with
HTTP clients looping, load 15-16): the deadline then fired with the
reply in the socket, its check failed with the timeout below, and the
histories gone stale in the same stall, that one check decided a slice
of healthy instances down at once (17 to 225 in runs of
``tests/test_http_load.py``). Once the server has owed
a reply for over `owed_after` seconds (the detection bound, ``interval``
x ``fall`` + ``timeout``, of the settings a reload left), a check that
would say nothing for the agent's own lateness (a PING timed out across
a stall or behind the agent's own handshakes, an attempt inconclusive,
one still in line or held back) fails instead, with `OWED_TIMEOUT`: the
server has had more than enough of the agent's time to answer anything.
Before, an agent whose every turn stalled, while it was connecting at
every moment (a hung host among its instances), left a frozen server's
names up for as long as it stayed so, ``/healthz`` 503 but nothing
published down (``benchmarks/starvedfrozen.py --hung``). A healthy
server answers what it is sent whenever the agent reads it, and its late
replies clear the debt: the agent's own CPU still never fails it.

A server that breaks the protocol (a reply nobody asked for, one too long:
see `sentinel.protocol`) is answered harder (`sentinel.reconnects`): each
violation backs off reconnecting, checks in between fail at once with the
violation's error, and checks on a new connection keep failing with it
until that connection has stayed clean for a while. So a flooding or
double-answering server fails every check from its first violation (down
within the usual fall bound, and it stays down), costs a connection at most
every `sentinel.reconnects.MAX_BACKOFF` seconds, and once it behaves is
counted up again within that plus `sentinel.reconnects.PROBATION` seconds
and `rise` checks.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from random import random
from typing import Any, NamedTuple

from twisted.internet import error as neterror
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    TimeoutError,
    maybeDeferred,
    succeed,
)
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    wrapClientTLS,
)
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IStreamClientEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from sentinel.addresses import AddressesFailed, after, all_failed, in_turn, moves_on
from sentinel.config import RedisInstance
from sentinel.echoes import without_password
from sentinel.moves import MoveLog
from sentinel.observation import Observation, Replication
from sentinel.pacing import ConnectPacer
from sentinel.pipelines import CheckReplies, InfoReply, Pipelines
from sentinel.protocol import (
    CLOSED,
    INFO_REPLICATION,
    RESET,
    BadInfo,
    ConnectAttempt,
    ConnectionFactory,
    ConnectionLost,
    NotADataServer,
    ProtocolError,
    RedisClientProtocol,
    ResponseError,
    Unanswered,
    auth_command,
    describe_reply,
    exists_command,
    parse_hello_role,
    parse_replication,
    turned_away,
)
from sentinel.reconnects import PROBATION, Reconnects
from sentinel.resolve import Resolver
from sentinel.stalls import Address
from sentinel.tls import (
    TLSSetupError,
    client_tls,
    describe_tls_failure,
    server_name,
)

log = Logger()

_new_tuple = tuple.__new__


# A check that waited for a connection is a fair test of Redis only if the
# attempt had this share of the timeout before the deadline (an attempt a
# check starts starts at its launch: the whole timeout), and the agent ran
# late by less than LATE_SHARE of it meanwhile (module docstring).
FAIR_SHARE = 0.9
LATE_SHARE = 0.25
# Failures a connection made since does not answer (`_connected`): a
# stopped server's listen backlog completes connects all the same.
REPLY_TIMEOUTS = frozenset({"timeout (ping)", "timeout (info)"})
# An attempt's own bound: at least this, however short the check timeout
# (a connection that completes after its check's deadline is kept).
MIN_CONNECT_TIMEOUT = 1.0
# A kept connection is renewed after `reconnect_every` seconds less up to
# this share of it, drawn for each connection: thousands connected in the
# same few seconds at start-up do not all renew in one tick, and drift
# further apart with each renewal.
RENEW_JITTER = 0.25
# A renewal whose connect timed out is tried again after this share of
# `reconnect_every` at least, twice it at most, drawn each time: the
# renewals a stall of the agent timed out together do not retry together.
RENEW_RETRY = 0.125
# The first connect after a kept connection went uses an answer fetched
# within this many seconds, not one cached for up to its TTL.
FRESH_ANSWER = 1.0

# What a check fails with once its server has owed a reply for longer than
# `owed_after` (`owed_error`): a timeout no lateness of the agent excuses,
# so the monitor does not put it off either (`sentinel.runqueue`).
OWED_TIMEOUT = "timeout (no reply for over"


def owed_after(interval: float, fall: int, timeout: float) -> float:
    """
    Seconds a server may owe a reply before a check that would say nothing
    (the agent's own lateness) fails instead: the detection bound, `fall`
    checks an interval apart and the last one's timeout. A server that
    answered nothing in that much of the agent's time, however starved,
    had more than a fair chance to answer the oldest command.
    """
    return interval * fall + timeout


def _no_bound() -> float:
    return math.inf


def owed_error(after: float) -> str:
    """The error of a check failed by a reply owed over `after` seconds."""
    return f"{OWED_TIMEOUT} {after:g} s)"


# The role of an instance whose INFO replication names none (a Redis
# Sentinel's is empty).
_NO_ROLE = Replication(role=None, error="INFO replication: no role in the reply")
# The role of an instance that answered PING but not INFO by the deadline.
_INFO_UNANSWERED = Replication(
    role=None, error="INFO replication: no reply within the timeout"
)
# A server checked with PING alone (RedisProbe's docstring) is asked HELLO
# and INFO again after PLAIN_RETRY seconds, then after twice as long each
# time it closes on them again, up to PLAIN_MAX_RETRY: a proxy that does
# costs a connection that often, a Redis taken for one (a close on each of
# two new connections, by chance) has its role back that soon.
PLAIN_RETRY = 60.0
PLAIN_MAX_RETRY = 300.0
# HELLO unanswered on this many connections in a row (any answer breaks
# the row) is switched off, and tried again as PING alone's HELLO and INFO
# are (`_Retry`): one slow reply on a link that slowed down for a while
# is no reason to lose HELLO's role on every check.
HELLO_MISSES = 2
# Its role, said where INFO would have been read.
_PING_ALONE = Replication(
    role=None,
    error="role unknown: checked with PING alone (connections were closed on"
    " HELLO or INFO before PING's reply)",
)

# HELLO's reply in its place when the deadline came first (`_cancel_check`).
_HELLO_LATE = object()
# A check cancelled while its attempt still waited for the pacer, as
# `_judged` sees it: a timeout Redis had no chance to cause.
_NOT_STARTED = Observation(ok=False, error="timeout (connect)")

# Replies to PING that Redis Sentinel counts as "alive" without being ready.
_ALIVE_NOT_READY = ("LOADING", "MASTERDOWN")
# Said after a refused AUTH: a rotated password is a common cause, and the
# agent reads the new one only when told to.
REREAD_HINT = " (password_file is read at start and on SIGHUP)"
# Replies to AUTH from a server that needs no password (Redis 6 and later;
# 5 and earlier): Redis Sentinel ignores AUTH's reply, and PING says the rest.
_NO_PASSWORD_NEEDED = (
    "ERR AUTH <password> called without any password configured",
    "ERR Client sent AUTH, but no password is set",
)


def _ping_ready(reply: object) -> bool | None:
    """
    What a reply to PING says: ready (True), alive but not ready (False),
    or neither (None: it is not a reply PING can have).
    """
    if reply == "PONG":
        return True
    if isinstance(reply, ResponseError) and str(reply).startswith(_ALIVE_NOT_READY):
        return False
    return None


class _Retry(NamedTuple):
    """
    When something switched off (PING alone's HELLO and INFO, or HELLO) is
    tried again: `at`, `PLAIN_RETRY` seconds after it was switched off
    (`hold`), twice as long after each failed try (`longer`), up to
    `PLAIN_MAX_RETRY`; a try that succeeds starts again from `PLAIN_RETRY`
    (`succeeded`). A value, so that every probe shares `_NEVER_OFF` until
    something is switched off.
    """

    at: float
    wait: float

    def hold(self, now: float) -> _Retry:
        """Switched off now: tried again after the current wait."""
        return _Retry(now + self.wait, self.wait)

    def longer(self, now: float) -> _Retry:
        """A try failed now: the next waits twice as long, up to the most."""
        wait = min(2 * self.wait, PLAIN_MAX_RETRY)
        return _Retry(now + wait, wait)

    def succeeded(self) -> _Retry:
        """A try succeeded: the next switch-off waits the least again."""
        return self if self.wait == PLAIN_RETRY else _Retry(self.at, PLAIN_RETRY)


_NEVER_OFF = _Retry(-math.inf, PLAIN_RETRY)


class HelloOff:
    """How many of the agent's probes check without HELLO now (/debug/stats)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def stats(self) -> dict[str, int]:
        """For ``/debug/stats``."""
        return {"instances": self.count}


class _Answered(NamedTuple):
    """What a check's first replies said, kept while INFO is on its way."""

    ready: bool
    latency_ms: float
    error: str | None = None
    draining: bool = False
    # HELLO's role, if it was asked.
    role: str | None = None


def _role_unknown(observation: Observation | None) -> Observation | None:
    # The observation of a check with PING alone where INFO was due.
    if observation is None or not observation.ok:
        return observation
    return observation._replace(replication=_PING_ALONE)


# What a plain connection closed before any reply adds to its error: a
# Redis answers or refuses in words (``-DENIED``, ``-ERR max number of
# clients``), where a TLS-only port (redis-server's ``tls-port``, which
# resets, ``openssl s_server``) or ZooKeeper closes without a byte.
NOT_REDIS_CLOSE = (
    "before any reply on a new connection (not Redis? a TLS port without tls = true?)"
)


def _closed(reply: object) -> bool:
    # The connection closed, the server saying nothing (a TLS alert says
    # why: that is an answer).
    return isinstance(reply, ConnectionLost) and str(reply) in (CLOSED, RESET)


class _ConnectFailed(Exception):
    """A connection attempt failed; the message is the observation's error."""


class _Inconclusive(Exception):
    """An attempt timed out while the agent itself ran late: not Redis's fault."""


class _HeldBack(Exception):
    """
    An attempt left the pacer's line unstarted: another instance's to its
    stalled address is in flight (`sentinel.stalls`).
    """


def describe_failure(failure: Failure) -> str:
    """A short, stable error text for a failed connection or command."""
    if failure.check(neterror.ConnectionRefusedError):
        return "connection refused"
    if failure.check(TimeoutError, neterror.TimeoutError):
        return "timeout (connect)"
    if failure.check(neterror.DNSLookupError):
        # Its str() wraps the resolver's message ("DNS lookup failed: ...").
        args = failure.value.args if failure.value is not None else ()
        return str(args[0]) if args and args[0] else failure.getErrorMessage()
    if failure.check(_ConnectFailed, AddressesFailed):
        return str(failure.value)
    if failure.check(neterror.ConnectionLost, neterror.ConnectionDone):
        return "connection lost"
    if failure.check(neterror.NoRouteError):
        return "no route to host"
    if failure.check(neterror.ConnectError):
        # Twisted's text repeats the errno ("An error occurred while
        # connecting: 104: Connection reset by peer."): the system's alone.
        code = getattr(failure.value, "osError", None)
        if isinstance(code, int) and code > 0:
            return f"connect: {os.strerror(code).lower()}"
    reason = failure.getErrorMessage()
    name = failure.type.__name__ if failure.type is not None else "error"
    return f"{name}: {reason}" if reason else name


def drain_key_of(instance: RedisInstance) -> str:
    """
    The key that drains `instance`: its ``drain_key`` with ``{name}``,
    ``{host}`` and ``{port}`` replaced by its own. A replica refuses writes,
    and a key set on its master reaches every replica: a key that names the
    instance drains that one alone.
    """
    key = instance.drain_key
    assert key is not None
    return (
        key.replace("{name}", instance.name)
        .replace("{host}", instance.host)
        .replace("{port}", str(instance.port))
    )


class RedisProbe:
    """
    Checks one Redis instance: PING, pipelined with EXISTS of its drain key
    (if it has one) and HELLO for its role (with `role_signal`), and INFO
    replication when asked or when HELLO's role is not the one of the last
    INFO read.

    `check` returns a Deferred that fires with an `Observation`, or with
    None when the check says nothing of the server: the agent never got to
    look (its connection attempt had not had a fair chance when the check
    was cancelled: module docstring), or HELLO and INFO, tried again, were
    closed on as before (below). It never fails. The caller owns the
    deadline: it cancels the Deferred when the check is overdue, and the
    probe turns that into a timeout observation (or None) and drops the
    connection.

    Two state machines share it: the connection attempt (resolve, wait for
    the pacer, connect, TLS, AUTH; at most one at a time, timed by
    `Reconnects`) and the check in flight on the kept connection (the
    pipeline, then INFO when wanted).

    A PING answered ``-LOADING`` or ``-MASTERDOWN`` makes the instance
    alive but not ready, the server's text its error; so does a drain key
    that exists, with the error ``draining``. A server that answers HELLO
    with an error (older than Redis 6.2, or a proxy) is not asked again on
    that connection: its role is then read by INFO alone. One that answers
    PING but not HELLO (no reply by the deadline, or the connection closed
    first: a proxy that drops or closes on what it does not know, or a
    link that slowed down) is alive, its role not read by that check, and
    its connection goes; unanswered so on `HELLO_MISSES` connections in a
    row (an answer breaks the row), HELLO is switched off: INFO reads the
    role on every check instead, and HELLO is tried again with the first
    check `PLAIN_RETRY` seconds later, then twice as long after each try
    it leaves unanswered, up to `PLAIN_MAX_RETRY`, as PING alone's HELLO
    and INFO are (below). One that answers PING but not INFO by the
    deadline is alive, its role unknown, as when INFO is refused; its
    connection goes.

    One that closes the connection on a new connection's first check
    before answering PING, twice in a row, when it had HELLO or INFO
    (twemproxy closes on both), is checked with PING alone, its role
    unknown (said where INFO would have been read). Any reply, an error,
    garbage or a TLS alert included, a timeout, or a failed connection
    attempt breaks the row: a Redis that is full or restarting answers,
    or refuses. PING alone is never for good: the first check
    `PLAIN_RETRY` seconds later asks HELLO and INFO again, on the
    connection it finds, and its PING answered ends it. One closed again
    before PING's reply says nothing of the server's health (it ends with
    None, nothing recorded, and the next check connects again at once)
    and the next try waits twice as long, up to `PLAIN_MAX_RETRY`. PING
    alone closed so too, on a new connection's first check, ends it at
    once (the closes are not about what was sent), and it is not taken up
    again for as long as the next try would have waited: a server that
    closes every connection is logged about at most twice in that time.
    """

    # One per instance, its attributes read on every check: slots, where
    # 30 attributes or more would give each probe a dictionary of its own
    # (CPython 3.11 shares attribute names among instances only up to 29),
    # about 1 KiB more per instance and a dictionary lookup per access.
    __slots__ = (
        "instance",
        "stage",
        "address",
        "_reactor",
        "_pacer",
        "_fair_time",
        "_late_limit",
        "_connect_timeout",
        "_resolver",
        "_tls",
        "_tls_error",
        "_server_name",
        "_answers",
        "_excused",
        "_auth",
        "_protocol",
        "_reconnects",
        "_last_error",
        "_closed",
        "_attempt",
        "_resolving",
        "_queued",
        "_waiters",
        "_connect_started_at",
        "_unreported",
        "_last_inconclusive",
        "_failing",
        "_connected_once",
        "_check",
        "_check_protocol",
        "_want_info",
        "_sent_at",
        "_awaiting_info",
        "_drain",
        "_role_signal",
        "_hello",
        "_pipelines",
        "_hello_role",
        "_role_at_info",
        "_last_answer",
        "_plain",
        "_plain_retry",
        "_hello_off",
        "_hello_misses",
        "_hello_retry",
        "_hello_count",
        "_closed_unanswered",
        "_checks_on_connection",
        "_told_no_password",
        "_lifetime",
        "_renew_at",
        "_kept_from",
        "_retiring",
        "_renewed",
        "_connect_stage",
        "_syn_unanswered",
        "_moves",
        "_owed_since",
        "_owed_before",
        "_owed_paused_at",
        "_owed_bound",
        "_due",
        "_info_asked",
        "_again",
        "_spoke_redis",
        "_candidates",
        "_worked",
        "_tried",
        "_searches",
        "_look_again",
    )

    def __init__(
        self,
        instance: RedisInstance,
        reactor: Any,
        pacer: ConnectPacer,
        timeout: float,
        resolver: Resolver,
        role_signal: bool = True,
        hello_off: HelloOff | None = None,
        reconnect_every: float = 60.0,
        owed_bound: Callable[[], float] = _no_bound,
    ) -> None:
        """
        @param timeout: the check timeout; an attempt's own bound is at
            least `MIN_CONNECT_TIMEOUT`.
        @param hello_off: counts the probes that check without HELLO now,
            shared by the agent's probes.
        @param reconnect_every: seconds a connection is kept at most (the
            module docstring).
        @param owed_bound: the seconds a reply may be owed now before no
            lateness of the agent excuses it (`owed_after` of the settings
            in force, which a reload may change; none given: no bound).
        """
        self.instance = instance
        self._reactor = reactor
        self._pacer = pacer
        self.retime(timeout)
        self._resolver = resolver
        # The CA file is read once, here; a problem with it fails every
        # check of this instance at once, saying why.
        self._tls: IOpenSSLClientConnectionCreator | None = None
        self._tls_error: str | None = None
        if instance.tls:
            try:
                self._tls = client_tls(instance)
            except TLSSetupError as e:
                self._tls_error = str(e)
        # The name a TLS handshake asks for: part of where attempts go.
        self._server_name = (
            server_name(instance).lower() if self._tls is not None else None
        )
        # Where a TLS instance's answers go, and whether its last PING
        # unanswered was excused by them (`_behind_own_pings`).
        self._answers = pacer.answers if self._tls is not None else None
        self._excused = False
        self._auth = (
            auth_command(instance.password, instance.username)
            if instance.password is not None
            else None
        )
        self.stage = "connect"
        self.address: str | None = None
        self._protocol: RedisClientProtocol | None = None
        self._reconnects = Reconnects()
        self._last_error = "not connected"
        self._closed = False
        # The connection attempt, if any, and the checks waiting for it.
        self._attempt: Deferred[RedisClientProtocol] | None = None
        self._resolving = False
        self._queued = False
        self._waiters: list[Deferred[RedisClientProtocol]] = []
        # When the attempt in progress started connecting (None before),
        # and how far it got.
        self._connect_stage = "connect"
        # Whether the attempt that ended last failed on time by
        # `Unanswered` (reset as one starts): the checks that waited for
        # it fail with it, however late the agent ran (`_judged`).
        self._syn_unanswered = False
        # What the log said of the name's moves; made at the first.
        self._moves: MoveLog | None = None
        self._connect_started_at: float | None = None
        # The error of a failed attempt no check has reported yet, and
        # whether the last failure was the agent's own (not to be reported).
        self._unreported: str | None = None
        self._last_inconclusive = False
        # The error of the last check that failed, until a check is answered
        # or a connection made: what a check the agent could not serve
        # repeats (`_not_looked_at`).
        self._failing: str | None = None
        self._connected_once = False
        # The check in flight on the connection (PING or INFO), if any.
        self._check: Deferred[Observation | None] | None = None
        self._check_protocol: RedisClientProtocol | None = None
        self._want_info = False
        self._sent_at = 0.0
        # What the first replies of the check in flight said, while INFO's
        # is on its way.
        self._awaiting_info: _Answered | None = None
        # What a check sends on the kept connection, and where the replies
        # go; HELLO until the server refuses it on that connection.
        self._drain = (
            exists_command(drain_key_of(instance))
            if instance.drain_key is not None
            else None
        )
        self._role_signal = role_signal
        self._hello = role_signal
        # Whether HELLO is switched off (unanswered on HELLO_MISSES
        # connections in a row: class docstring), and when it is tried
        # again; the misses in the row so far; the agent's count of probes
        # with HELLO off.
        self._hello_off = False
        self._hello_retry = _NEVER_OFF
        self._hello_misses = 0
        self._hello_count = hello_off
        self._pipelines: Pipelines | None = None
        # The role HELLO said last, and the one it said when INFO was last
        # read: a different one now means the role changed.
        self._hello_role: str | None = None
        self._role_at_info: str | None = None
        # What the last pipeline replies parsed said (ready, error,
        # draining): the answer again when the same bytes come back.
        self._last_answer: tuple[bool, str | None, bool] = (True, None, False)
        # Whether checks are PING alone (with EXISTS of the drain key), no
        # HELLO and no INFO: a server that closes the connection on them
        # before answering PING (class docstring). While they are, when
        # HELLO and INFO are tried again; while not, the time before which
        # PING alone is not taken up again. The wait before the next try.
        # How many checks in a row, each the first on its connection and
        # sent with HELLO or INFO, it closed so; and the checks made on
        # this connection.
        self._plain = False
        self._plain_retry = _NEVER_OFF
        self._closed_unanswered = 0
        self._checks_on_connection = 0
        # Whether the log said that the server needs no password.
        self._told_no_password = False
        # How long a connection is kept at most, and when the kept one's
        # time is up.
        self._lifetime = reconnect_every
        self._renew_at = math.inf
        self._kept_from = -math.inf
        # A renewed connection, held unused until a new one answers PING.
        self._retiring: RedisClientProtocol | None = None
        # A new connection made while a check was in flight on the kept
        # one, which it replaces at the next check.
        self._renewed: RedisClientProtocol | None = None
        # When the oldest command the server has not answered was sent (None:
        # it owes nothing on a connection open now), the answer of a check
        # already ended included, less the seconds the clock stood still
        # while no connection held one; `_owed_before`, the seconds owed
        # while it stands, and `_owed_paused_at`, when the connection that
        # held it was dropped, until the next check is due; after how long
        # no lateness of the agent excuses it (module docstring).
        self._owed_since: float | None = None
        self._owed_before = 0.0
        self._owed_paused_at: float | None = None
        self._owed_bound = owed_bound
        # When the check in flight was due, and whether the caller asked
        # INFO: what sending it again on a new connection needs. The check
        # sent again so, and the wait for that connection (`_check_again`).
        self._due = 0.0
        self._info_asked = False
        self._again: tuple[Deferred[Observation | None], Deferred[Any]] | None = None
        # The resolved address that last answered PING as Redis does (the
        # port and server name are the probe's own): a new connection to it
        # closed unanswered is that Redis going, not another service
        # (`NOT_REDIS_CLOSE`). The address alone: a load and a store on
        # every answered check, where `_endpoint` builds a tuple.
        self._spoke_redis: str | None = None
        # The addresses the attempt in progress tries in turn, and the one
        # the next attempt starts at while the name's answer holds it: the
        # one that connected last, or the one after the last that timed
        # out (`sentinel.addresses`).
        self._candidates: tuple[str, ...] = ()
        self._worked: str | None = None
        # The addresses the attempt in progress moved on from, and why.
        self._tried: list[tuple[str, str]] = []
        # The name's addresses tried by attempts that timed out before any
        # connected, excused while the agent looked for the one that
        # answers (`_searching`).
        self._searches = 0
        # Whether the next connect, the first since the kept connection
        # went, wants an answer fetched within `FRESH_ANSWER` seconds: the
        # name may have moved along with it (a failover).
        self._look_again = False

    def retime(self, timeout: float) -> None:
        """
        Take the check timeout `timeout` (at start, and from a reload that
        changes it): what a fair attempt is given, the lateness that
        excuses a check, and an attempt's own bound are its shares.
        """
        self._fair_time = FAIR_SHARE * timeout
        self._late_limit = LATE_SHARE * timeout
        self._connect_timeout = max(timeout, MIN_CONNECT_TIMEOUT)

    @property
    def connected(self) -> bool:
        """Whether a usable connection is kept."""
        return self._protocol is not None

    @property
    def owed_bound(self) -> float:
        """
        Seconds the server may owe a reply now before the agent's own
        lateness excuses none of its checks (the module docstring).
        """
        return self._owed_bound()

    @property
    def why_unjudged(self) -> str:
        """
        Why this instance's checks say nothing now, as far as its state
        tells (read for an operator, never on a check): its connect in
        line for the pacer or on its way, never connected while the pacer
        is full, held back behind another instance's connect to its
        stalled address, or the agent's own lateness on its last check.
        """
        if self._queued:
            return "its connect waits in line for the connection pacer"
        if self._attempt is not None:
            return f"its connect is on its way ({self._connect_stage})"
        if (
            self._protocol is None
            and not self._connected_once
            and not self._pacer.has_room()
        ):
            return "never connected, and the connection pacer is full"
        address = self.address
        if address is not None and self._pacer.stalls.holds_back(
            self._endpoint(address), self
        ):
            return (
                f"held back: another instance's connect to its stalled address"
                f" {address}:{self.instance.port} is in flight (one held back"
                " fails only with a timeout there that came while the agent"
                " kept up)"
            )
        if self._last_inconclusive:
            return "the agent ran late: its last check could not be judged fairly"
        return "not checked yet"

    def check(
        self, want_info: bool, scheduled: float | None = None
    ) -> Deferred[Observation | None]:
        """
        Check the instance once; see the class docstring. `scheduled` is
        when the check was due (its tick's time, not after now; now if not
        given): the spacing of connection attempts is judged by it
        (`Reconnects`), and so is whether the kept connection's time is up.
        """
        # The caller's schedule spares a read of the clock on the hot path.
        if scheduled is None:
            scheduled = self._reactor.seconds()
        if self._owed_paused_at is not None:
            self._owed_due(scheduled)
        self._due = scheduled
        self._info_asked = want_info
        if self._renewed is not None:
            self._keep(self._renewed)
        protocol = self._protocol
        if protocol is not None:
            # Due before `_kept_from`, a lifetime before the connection was
            # made: only a step back of the clock makes it so (a step does
            # not move these times, `sentinel.clocksteps`), and the
            # connection's time is taken as up. While the agent is
            # connecting as fast as it can, or a new connection is on its
            # way, the kept one serves.
            if (
                self._kept_from <= scheduled < self._renew_at
                or self._attempt is not None
                or not self._pacer.has_room()
            ):
                return self._ping(protocol, want_info)
            if self._held_back():
                return self._renewal_held_back(protocol, want_info)
            if not self._pacer.descriptors.take():
                # No descriptor to spare for a second connection
                # (`sentinel.descriptors`): the kept one serves on, and
                # the turn `_held_back` gave to its stalled address goes.
                if self.address is not None:
                    self._pacer.stalls.ended(self._endpoint(), self)
                return self._ping(protocol, want_info)
            # Its time is up: a new connection is made meanwhile.
            self._start_attempt(min(scheduled, self._reactor.seconds()))
            if self._protocol is not None:
                return self._ping(protocol, want_info)
            # The attempt failed at once (no socket to open, say).
            self._unreported = None
            self._failing = self._last_error
            return succeed(Observation(ok=False, error=self._last_error))
        if self._tls_error is not None:
            self.stage = "connect"
            return succeed(Observation(ok=False, error=self._tls_error))
        now = self._reactor.seconds()
        if self._attempt is None:
            unreported, self._unreported = self._unreported, None
            # Judged on when the check was due, not when the agent got to
            # it: a check due a second after the last attempt is never
            # refused because the agent ran that attempt later than this.
            due = min(scheduled, now)
            if not self._reconnects.may_attempt(due, now):
                self.stage = "connect"
                if self._last_inconclusive and unreported is None:
                    # The agent's own lateness, again.
                    return succeed(self._owed_failure())
                return succeed(Observation(ok=False, error=self._last_error))
            if not self._connected_once and not self._pacer.has_room():
                # The agent is connecting as fast as it can: not this time.
                # (An instance connected before waits in line instead, so
                # that its status is checked again within a bounded time.)
                self.stage = "connect"
                if unreported is not None:
                    self._failing = unreported
                    return succeed(Observation(ok=False, error=unreported))
                return succeed(self._owed_failure())
            if self._held_back():
                # Another instance's attempt to its stalled address is in
                # flight: as if this one's waited in line.
                self.stage = "connect"
                if unreported is not None:
                    self._failing = unreported
                    return succeed(Observation(ok=False, error=unreported))
                return succeed(self._not_looked_at(due))
            self._start_attempt(due)
            if unreported is not None:
                # A failure no check saw (the agent had not got to look):
                # report it now; the new attempt serves the next check.
                self._failing = unreported
                return succeed(Observation(ok=False, error=unreported))
            if self._attempt is None:
                # The attempt ended at once (it failed before any I/O: a
                # lookup that could not even open its socket, or its
                # address newly found stalled, say; or, its failure the
                # agent's own, the old connection serves).
                if self._protocol is not None:
                    return self._ping(self._protocol, want_info)
                if self._last_inconclusive:
                    return succeed(self._owed_failure())  # The agent's own shortage.
                return succeed(Observation(ok=False, error=self._last_error))
        elif self._queued:
            # Still waiting for the pacer: the agent will not get to look
            # this time. Nothing waits (thousands would, at start-up).
            return succeed(self._not_looked_at(min(scheduled, now)))
        self.stage = self._connect_stage
        waiter: Deferred[Any] = Deferred(self._waiters.remove)
        self._waiters.append(waiter)
        waiter.addCallbacks(self._ping, self._connect_failed, callbackArgs=(want_info,))
        waiter.addCallback(self._judged, now, self._failing)
        return waiter

    def close(self) -> None:
        """Stop for good: cancel any attempt and check, drop the connection."""
        self._closed = True
        if self._hello_off:
            self._hello_switched(False)
        if self._attempt is not None:
            self._attempt.cancel()
        for address in {self.address, *self._candidates} - {None}:
            self._pacer.stalls.left(self._endpoint(address), self)
        if self._check is not None:
            self._check.cancel()
        self._resolver.unwatch(self.instance.host, self._answered_by_name)
        self._drop()
        self._retired()
        if self._renewed is not None:
            self._renewed.drop()
            self._renewed = None

    # Connecting

    def _held_back(self) -> bool:
        # Whether an attempt may not start now, another instance's to the
        # same stalled address in flight (`sentinel.stalls`); if it may,
        # it is that address's one attempt until it ends. The address is
        # the one the attempt would start at.
        address = self._worked if self._worked is not None else self.address
        return address is not None and not self._pacer.stalls.admit(
            self._endpoint(address), self
        )

    def _searching(self) -> bool:
        # Whether a timeout at the address connected to now says nothing
        # yet (`sentinel.addresses`): the probe never connected, and the
        # addresses the attempts that timed out so tried (this one's
        # included, each started after the last one's) are not all the
        # name's.
        tried = self._searches + len(self._tried) + 1
        return (
            not self._connected_once
            and self.address is not None
            and tried < len(self._candidates)
        )

    def _endpoint(self, address: str | None = None) -> Address:
        # Where this instance's attempts go, as `sentinel.stalls`,
        # `sentinel.handshakes` and `sentinel.answers` key them: its
        # resolved address (or `address`), its port, and over TLS the
        # server name its handshake asks for.
        resolved = self.address if address is None else address
        assert resolved is not None  # Only asked once resolved.
        return (resolved, self.instance.port, self._server_name)

    def _renewal_held_back(
        self, protocol: RedisClientProtocol, want_info: bool
    ) -> Deferred[Observation | None]:
        # Due for renewal while another instance's attempt to the stalled
        # address is in flight. If the address's connects timed out while
        # the agent kept up, this renewal would have too: it fails with
        # that error, the kept connection held unused, as a renewal that
        # failed (new clients meet the instance's state now, not the old
        # connection's). If the agent ran late, the kept one serves on.
        assert self.address is not None  # It was held back.
        error = self._pacer.stalls.failing(self._endpoint())
        if error is None:
            return self._ping(protocol, want_info)
        self._last_error = self._failing = error
        self._retire()
        self.stage = "connect"
        return succeed(Observation(ok=False, error=error))

    def _start_attempt(self, due: float) -> None:
        self._reconnects.attempted(due)
        self._attempt_stage("connect")
        self._resolving = True
        self._connect_started_at = None
        self._syn_unanswered = False
        # Resolved before a connect slot is taken. The resolver bounds every
        # lookup, shared by the instances on that name; a check that cannot
        # wait that long fails at its own deadline, and the attempt goes on,
        # so that the answer serves the next one. Cancelling the attempt
        # (close) drops only this wait.
        fresh_since = None
        if self._protocol is None and self._look_again:
            # The first connect since the kept connection went (not a
            # renewal): the name may have moved along with it.
            self._look_again = False
            fresh_since = self._reactor.seconds() - FRESH_ANSWER
        attempt: Deferred[Any] = self._resolver.addresses(
            self.instance.host, fresh_since
        )
        self._attempt = attempt
        attempt.addCallbacks(self._resolved, self._unresolved)
        attempt.addBoth(self._attempt_done)

    def _attempt_stage(self, stage: str) -> None:
        # A renewal's stage is not the check's, which is on the kept
        # connection.
        self._connect_stage = stage
        if self._protocol is None:
            self.stage = stage

    def _resolved(self, addresses: tuple[str, ...]) -> Deferred[RedisClientProtocol]:
        self._resolving = False
        before = {self.address, *self._candidates} - {None}
        self._candidates = in_turn(addresses, self._worked)
        address = self._candidates[0]
        previous = self.address
        # An address the answer still holds is one this probe meets again
        # (the next attempt's, or the one after a timeout): it stays one
        # of its stalled address's users.
        for gone in before - set(self._candidates):
            self._pacer.stalls.left(self._endpoint(gone), self)
        # A move is an answer without the address tried last: one that
        # holds it still, in another order or with others tried first, is
        # none (a rotating name server, a connect that moved on).
        moved = previous is not None and previous not in addresses
        if moved and self._moves is None:
            self._moves = MoveLog()
        if previous is not None and self._moves is not None:
            # A move (its name's answer changed) is said, for an error now
            # ("connection refused") is the new address's, and the checks
            # until this connect were the old one's.
            self._moves.resolved(
                self.instance.name,
                self.instance.host,
                address,
                previous if moved else address,
                self._reactor.seconds(),
            )
        self.address = address
        self._queued = True
        start: Deferred[Any] = self._pacer.acquire()
        return start.addCallback(self._open, address)

    def _unresolved(self, failure: Failure) -> Failure:
        self._resolving = False
        return failure

    def _open(self, started_at: float, address: str) -> Deferred[RedisClientProtocol]:
        self._queued = False
        if not self._pacer.stalls.admit(self._endpoint(address), self):
            # In line since before the address stalled: the next of the
            # name's addresses that is not held starts the attempt; if
            # none, the place goes to the next in line, and this attempt
            # ends unstarted.
            # The first admitted only: admitting one makes this probe its
            # one attempt.
            start = self._candidates.index(address)
            others = self._candidates[start + 1 :] + self._candidates[:start]
            free = next(
                (
                    a
                    for a in others
                    if self._pacer.stalls.admit(self._endpoint(a), self)
                ),
                None,
            )
            if free is None:
                self._pacer.unused()
                raise _HeldBack()
            address = self.address = free
        self._connect_started_at = started_at
        d: Deferred[Any] = maybeDeferred(self._connect, address)
        if self._auth is not None:
            d.addCallback(self._authenticate)
        d.addBoth(self._release_slot)
        return d.addTimeout(self._connect_timeout, self._reactor)

    def _release_slot(self, result: object) -> object:
        self._pacer.release()
        return result

    def _connect(self, address: str) -> Deferred[RedisClientProtocol]:
        d = self._connect_tcp(address)
        self._tried = []
        if len(self._candidates) > 1:
            d.addErrback(self._next_address, address, self._tried)
        if self._tls is not None:
            d.addCallback(self._handshake)
        return d

    def _next_address(
        self, failure: Failure, address: str, tried: list[tuple[str, str]]
    ) -> object:
        # A connect to one of the name's addresses failed: the next is
        # tried if it failed fast, within the attempt's one timeout (its
        # bound cancels the connect in flight, whichever it is).
        if not moves_on(failure) or self._closed:
            return failure
        tried.append((address, describe_failure(failure)))
        # It answered, at once: not stalled (`sentinel.stalls`).
        self._pacer.stalls.answered(self._endpoint(address))
        rest = self._candidates[self._candidates.index(address) + 1 :]
        for following in rest:
            if self._pacer.stalls.admit(self._endpoint(following), self):
                self.address = following
                d = self._connect_tcp(following)
                return d.addErrback(self._next_address, following, tried)
        if len(tried) == 1:
            return failure  # The only address tried: its own error, as ever.
        raise all_failed(tried)

    def _moved_on(self) -> str:
        # What a timeout adds when the name has several addresses: the one
        # it timed out at (the next attempt starts after it), and those
        # that failed before it in the attempt, and how.
        if len(self._candidates) < 2 or self.address is None:
            return ""
        if not self._tried:
            return f" at {self.address}"
        return f" at {self.address}, after {all_failed(self._tried)}"

    def _connect_tcp(self, address: str) -> Deferred[Any]:
        endpoint_type = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
        attempt = ConnectAttempt(self._reactor)
        endpoint: IStreamClientEndpoint = endpoint_type(
            attempt, address, self.instance.port, timeout=self._connect_timeout
        )
        if self._tls is not None:
            endpoint = wrapClientTLS(self._tls, endpoint, self._reactor)
        factory = ConnectionFactory(self._lost, self._violated)
        d: Deferred[Any] = endpoint.connect(factory)
        # Before the handshake's callbacks: a failure of the connect itself.
        return d.addErrback(attempt.failed)

    def _handshake(self, protocol: RedisClientProtocol) -> Deferred[Any]:
        # The endpoint fires once TCP is connected; wait for the handshake so
        # that a certificate that does not verify fails the attempt, saying so.
        self._attempt_stage("tls")
        # The SSL.Connection, which knows what its verification refused.
        handle = protocol.transport.getHandle() if protocol.transport else None

        def failed(failure: Failure) -> Failure:
            error = describe_tls_failure(failure, self.instance, handle)
            if error is None and failure.check(
                neterror.ConnectionLost, neterror.ConnectionDone
            ):
                # Closed before the handshake was done, without an alert
                # (a TCP proxy whose backend is gone, a server dropping
                # what it will not speak): said as the stage's, as a
                # timeout there is; plain "connection lost" read as a
                # server closing an established connection.
                error = f"{describe_failure(failure)} (tls)"
            if error is None:
                return failure
            raise _ConnectFailed(error)

        return protocol.when_secure().addErrback(failed)

    def _authenticate(self, protocol: RedisClientProtocol) -> Deferred[Any]:
        self._attempt_stage("auth")
        assert self._auth is not None
        self._owing()
        d = protocol.send(self._auth)

        def authenticated(reply: object) -> RedisClientProtocol:
            if type(reply) is not ConnectionLost:
                self._heard()
            if reply == "OK":
                return protocol
            if isinstance(reply, ResponseError) and str(reply).startswith(
                _NO_PASSWORD_NEEDED
            ):
                # A password removed (CONFIG SET requirepass ""), or a Redis
                # restarted without it: no verdict on the server.
                self._no_password_needed()
                return protocol
            if isinstance(reply, ProtocolError):
                raise _ConnectFailed(str(reply))  # Already dropped.
            if not isinstance(reply, Exception):
                # A reply of the wrong kind (a status other than OK, a bulk):
                # no Redis answers AUTH so. Described, not quoted: its text
                # would go on, controls and all, to the log, ZooKeeper and
                # the page.
                error = f"unexpected reply to AUTH: {describe_reply(reply)}"
                protocol.reject(error)
                raise _ConnectFailed(error)
            protocol.drop()
            if not isinstance(reply, ResponseError):
                # Lost while AUTH waited (a refused client certificate, with
                # TLS 1.3, says so then): not a verdict on the password.
                raise _ConnectFailed(str(reply))
            # The server's words on a command holding the password: it may
            # quote it (`sentinel.echoes`).
            assert self.instance.password is not None
            said = without_password(str(reply), self.instance.password)
            if turned_away(reply):
                # Turned away at accept (a full server): no verdict either.
                raise _ConnectFailed(said)
            raise _ConnectFailed(f"auth failed: {said}{REREAD_HINT}")

        def abandoned(failure: Failure) -> Failure:
            self._let_go(protocol)
            return failure

        return d.addCallbacks(authenticated, abandoned)

    def _no_password_needed(self) -> None:
        # Said once per probe: the same server answers so on every
        # connection, and nothing about the checks changes.
        if self._told_no_password:
            return
        self._told_no_password = True
        log.warn(
            "{instance} needs no password, though password_file is given:"
            " AUTH's refusal ignored, and PING checks it (as Redis Sentinel"
            " does)",
            instance=self.instance.name,
        )

    def _attempt_done(self, result: RedisClientProtocol | Failure) -> None:
        self._attempt = None
        self._resolving = self._queued = False
        waiters, self._waiters = self._waiters, []
        if isinstance(result, Failure) and result.check(_HeldBack):
            # Never started: it says nothing of the server, and a kept
            # connection serves on.
            self._last_inconclusive = True
            for waiter in waiters:
                waiter.errback(result)
            return
        if isinstance(result, Failure):
            # Not a close before PING's reply: the row of those is broken.
            self._closed_unanswered = 0
            # The connector's own timer (neterror's) fires before the
            # attempt's bound, set in the same call, whenever both are due.
            timed_out = result.check(
                TimeoutError, neterror.TimeoutError, neterror.ConnectingCancelledError
            )
            self._last_error = (
                f"timeout ({self._connect_stage}){self._moved_on()}"
                if timed_out
                else describe_failure(result)
            )
            started = self._connect_started_at
            # No socket to connect with (out of file descriptors), or timed
            # out while the agent ran late: the agent's failure. Not a SYN
            # the kernel waited on for the attempt's bound (`Unanswered`):
            # before, a starved agent (load 20-47) timed out every attempt
            # late, and a name whose addresses were all down stayed
            # unjudged, never down, for as long as it was starved. But a
            # SYN the server's backlog dropped while it completed another
            # of the agent's handshakes is still its queue of the agent's
            # own connections (`sentinel.handshakes`): the agent on time,
            # every connect timeout is `Unanswered`.
            inconclusive = self._pacer.sockets.ended(result) or (
                bool(timed_out)
                and (
                    (
                        not result.check(Unanswered)
                        and (
                            started is None
                            or self._pacer.lateness_since(started) > self._late_limit
                        )
                    )
                    or (started is not None and self._queued_behind_own(started))
                )
            )
            if timed_out and self._searching():
                # Another of the name's addresses is still to be tried
                # before the probe ever connected: nothing said yet. The
                # agent late or not, these addresses count as tried (the
                # next attempt starts after them): the search ends.
                self._searches += 1 + len(self._tried)
                inconclusive = True
            self._syn_unanswered = not inconclusive and bool(result.check(Unanswered))
            if inconclusive and self._protocol is not None:
                # The kept connection serves on, renewed later (the module
                # docstring).
                retry = self._lifetime * RENEW_RETRY * (1.0 + random())
                self._renew_at = self._reactor.seconds() + retry
            self._last_inconclusive = inconclusive
            self._addressed(bool(timed_out))
            error: Exception = (
                _Inconclusive() if inconclusive else _ConnectFailed(self._last_error)
            )
            if timed_out and self.address is not None:
                # The next attempt starts at the name's next address, as
                # a client's connect would have gone on to it.
                self._worked = after(self._candidates, self.address)
            elif not inconclusive:
                self._worked = None  # Tried again in the answer's order.
            if not waiters and not inconclusive and not self._closed:
                self._unreported = self._last_error
            if self._protocol is not None and not inconclusive:
                # A renewal that failed: what new clients meet is the
                # instance's state now, not the old connection's, which is
                # held unused (the module docstring).
                self._retire()
            for waiter in waiters:
                waiter.errback(error)
            return
        self._last_inconclusive = False
        self._worked = self.address
        self._connected()
        self._pacer.sockets.ended(result)
        self._addressed(False)
        if self.address is not None and (
            self._tls is not None or self._auth is not None
        ):
            # The server process itself answered (`sentinel.handshakes`).
            self._pacer.handshakes.completed(self._endpoint())
        if self._closed:
            result.drop()
            return
        if self._protocol is not None and self._check is not None:
            # A renewal, a check in flight on the kept connection: its
            # replies are read there, the new one serves the next check.
            self._renewed = result
            return
        self._keep(result)
        for waiter in waiters:
            waiter.callback(result)

    def _connected(self) -> None:
        # A connection made answers a failure to connect (refused, timed
        # out, lost), not a reply that never came: over plain TCP the
        # server's kernel completes it, into the listen backlog of a
        # stopped process too (a hung host: seen with 600 instances on
        # three stopped servers, their PINGs on those connections then
        # judged while the agent ran late, and the checks in line after
        # them saying nothing for 30 s). A TLS or AUTH handshake is the
        # server process itself answering.
        if (
            (
                self._failing not in REPLY_TIMEOUTS
                and not (self._failing or "").startswith(OWED_TIMEOUT)
            )
            or self._tls is not None
            or self._auth is not None
        ):
            self._failing = None

    def _addressed(self, timed_out: bool) -> None:
        # What the attempt that ended says of its address, if it got to
        # connect to it (`sentinel.stalls`): it timed out (the agent late
        # or not: it ran its whole bound), or it answers (connected,
        # refused); else nothing, and another may start.
        if self.address is None:
            return
        stalls = self._pacer.stalls
        address = self._endpoint()
        if self._connect_started_at is None or self._closed:
            stalls.ended(address, self)
        elif timed_out:
            fair = None if self._last_inconclusive else self._last_error
            stalls.timed_out(address, self, fair)
        elif self._last_inconclusive:
            stalls.ended(address, self)  # No socket: the agent's shortage.
        else:
            stalls.answered(address)

    def _keep(self, result: RedisClientProtocol) -> None:
        # A new connection serves the checks from now on.
        self._renewed = None
        if self._protocol is not None:
            # A renewal: the old connection is held until the new answers.
            self._retire()
        self._protocol = result
        now = self._reactor.seconds()
        self._renew_at = now + self._lifetime * (1.0 - RENEW_JITTER * random())
        self._kept_from = now - self._lifetime
        self._connected_once = True
        self._hello = self._role_signal and not self._plain and not self._hello_off
        self._checks_on_connection = 0
        self._pipelines = Pipelines(self, result, self._drain, self._hello)
        self._reconnects.connected(now)
        self._look_again = True
        self._resolver.watch(self.instance.host, self._answered_by_name)

    def _answered_by_name(self, addresses: tuple[str, ...]) -> None:
        # The name's last answers (`Resolver.watch`): once they no longer
        # hold the address connected to, the connection is renewed at the
        # next check, through the renewal path (a new connection made to
        # the name's address now, the old one serving meanwhile), not
        # `reconnect_every` later.
        if (
            self._protocol is not None
            and self._attempt is None
            and self.address not in addresses
        ):
            self._renew_at = min(self._renew_at, self._reactor.seconds())

    def _lost(self, protocol: RedisClientProtocol) -> None:
        if self._retiring is protocol:
            self._retiring = None
        if self._renewed is protocol:
            self._renewed = None  # Renewed again at the next check.
        if self._protocol is protocol:
            self._forget()
            self._last_error = "connection lost"

    def _violated(self, protocol: RedisClientProtocol, error: str) -> None:
        # The server broke the protocol; the connection is already dropped.
        if self._reconnects.violation is None:
            log.warn(
                "{instance} broke the Redis protocol ({error}): reconnecting"
                " with back-off, its answers failing until a connection"
                " stays clean for {probation} s",
                instance=self.instance.name,
                error=error,
                probation=PROBATION,
            )
        self._reconnects.violated(self._reactor.seconds(), error)
        self._last_error = self._failing = error
        self._closed_unanswered = 0  # It sent something: no close unanswered.
        if self._protocol is protocol:
            self._forget()
        if self._check_protocol is protocol:
            self._end_check(Observation(ok=False, error=error))

    def _retire(self) -> None:
        # The kept connection is held unused (the module docstring); one
        # held before goes.
        if self._retiring is not None:
            self._retiring.drop()
        self._retiring = self._protocol
        self._forget()

    def _retired(self) -> None:
        # A new connection answered PING: the one held goes.
        retiring, self._retiring = self._retiring, None
        if retiring is not None:
            retiring.drop()

    def _forget(self) -> None:
        self._protocol = None
        self._pipelines = None  # Nothing of a dead connection is kept.
        self._excused = False

    def _drop(self) -> None:
        protocol = self._protocol
        self._forget()
        if protocol is not None:
            self._let_go(protocol)

    def _drop_if(self, protocol: RedisClientProtocol) -> None:
        if self._protocol is protocol:
            self._drop()
        else:
            self._let_go(protocol)

    def _let_go(self, protocol: RedisClientProtocol) -> None:
        # A reply in the socket, not yet read, is an answer too (the module
        # docstring): heard before the connection and its bytes go. Else,
        # with no connection kept, nothing the server could answer is on
        # the wire: what it owes stops growing until a command is sent.
        owed_since = self._owed_since
        if owed_since is not None:
            if protocol.unread():
                self._heard()
            elif self._protocol is None:
                now = self._reactor.seconds()
                self._owed_before = now - owed_since
                self._owed_paused_at = now
                self._owed_since = None
        protocol.drop()

    # Checking

    def _ping(
        self, protocol: RedisClientProtocol, want_info: bool
    ) -> Deferred[Observation | None]:
        # The hot path, thousands a second: one Deferred (the check's own,
        # which the caller cancels at its deadline), and the replies handed
        # straight to `pinged` or `answered` by the connection's ReplyTo.
        # INFO, when wanted, goes in the same write: no second round trip.
        self.stage = "ping"
        self._awaiting_info = None
        self._checks_on_connection += 1
        self._sent_at = sent_at = self._reactor.seconds()
        if self._owed_since is None:
            self._owed_since = sent_at - self._owed_before
            self._owed_before = 0.0
        check: Deferred[Observation | None] = Deferred(self._cancel_check)
        self._check = check
        self._check_protocol = protocol
        if self._plain:
            want_info = self._ping_alone(protocol, check, want_info)
        elif self._hello_off:
            want_info = self._without_hello(protocol)
        self._want_info = want_info
        pipelines = self._pipelines
        assert pipelines is not None  # Set with the kept connection.
        if want_info:
            protocol.send_pipeline(pipelines.info_commands, pipelines.info_waiters)
        else:
            protocol.send_pipeline(pipelines.commands, pipelines.waiters)
        return check

    def _ping_alone(
        self,
        protocol: RedisClientProtocol,
        check: Deferred[Observation | None],
        want_info: bool,
    ) -> bool:
        # Whether the check, on a server checked with PING alone, asks INFO:
        # with HELLO too, once HELLO and INFO are to be tried again (class
        # docstring); else never, and the role is said unknown where INFO
        # would have read it.
        if self._sent_at >= self._plain_retry.at:
            if self._role_signal and not self._hello and not self._hello_off:
                self._hello = True
                self._pipelines = Pipelines(self, protocol, self._drain, True)
            return True
        if want_info:
            check.addCallback(_role_unknown)
        return False

    def _without_hello(self, protocol: RedisClientProtocol) -> bool:
        # With HELLO switched off, INFO reads the role on every check, in
        # HELLO's place (the role of a master that steps down is known an
        # interval later, not `info_every` intervals); HELLO is tried
        # again, with it, once its retry is due (class docstring).
        if not self._hello and self._sent_at >= self._hello_retry.at:
            self._hello = True
            self._pipelines = Pipelines(self, protocol, self._drain, True)
        return True

    def pinged(self, protocol: RedisClientProtocol, reply: object) -> None:
        # PING alone: its reply is the check's, INFO's may follow.
        if type(reply) is not ConnectionLost:
            self._heard()
        check = self._check
        if check is None or protocol is not self._check_protocol:
            return  # The check it answers has ended (it timed out).
        now = self._reactor.seconds()
        latency_ms = (now - self._sent_at) * 1000.0
        ready = _ping_ready(reply)
        if ready is None:
            self._ping_unanswered(reply, protocol, self._want_info)
            return
        if self._answers is not None:
            self._answers.answered(self._endpoint(), self._sent_at, now)
            self._excused = False
        self._closed_unanswered = 0
        self._spoke_redis = self.address
        if self._retiring is not None and self._retiring is not protocol:
            self._retired()
        # Alive but not ready: the server's reason is the error.
        error = None if ready else str(reply)
        if self._want_info:
            self._await_info(_Answered(ready, latency_ms, error))
        else:
            self._finish(check, Observation(True, ready, latency_ms, error), now)

    def answered(
        self,
        protocol: RedisClientProtocol,
        sent: CheckReplies,
        replies: list[object],
    ) -> None:
        # The pipeline's replies, in order: PING's, then EXISTS's and
        # HELLO's for those sent (each an exception if the connection was
        # lost first).
        if type(replies[0]) is not ConnectionLost:
            self._heard()
        check = self._check
        if check is None or protocol is not self._check_protocol:
            return  # The check they answer has ended (it timed out).
        now = self._reactor.seconds()
        latency_ms = (now - self._sent_at) * 1000.0
        ready = _ping_ready(replies[0])
        if ready is None:
            extras = sent.hello or self._want_info
            self._ping_unanswered(replies[0], protocol, extras)
            return
        if self._answers is not None:
            self._answers.answered(self._endpoint(), self._sent_at, now)
            self._excused = False
        self._closed_unanswered = 0
        self._spoke_redis = self.address
        if self._retiring is not None and self._retiring is not protocol:
            self._retired()
        # Alive but not ready: the server's reason is the error.
        error = None if ready else str(replies[0])
        draining = False
        if sent.drain:
            reply = replies[1]
            if type(reply) is int:
                draining = reply > 0
            elif not isinstance(reply, ResponseError):
                self._bad_reply(reply, protocol, "EXISTS")
                return
            elif ready:
                # LOADING and MASTERDOWN refuse EXISTS too; PING said so.
                error = f"drain_key: {reply}"
        if draining:
            ready = False
            error = "draining" if error is None else f"draining; {error}"
        role = None
        if sent.hello:
            reply = replies[-1]
            if isinstance(reply, list):
                try:
                    role = self._hello_role = parse_hello_role(reply)
                except NotADataServer as e:
                    # In step, and alive; but no Redis to publish.
                    self._last_error = str(e)
                    self._end_check(Observation(ok=False, error=self._last_error))
                    return
            elif isinstance(reply, ResponseError):
                # Not Redis 6.2 or later, or a proxy: INFO alone, from the
                # next check on.
                self._hello = False
                if self._protocol is protocol:
                    self._pipelines = Pipelines(self, protocol, self._drain, False)
            elif reply is _HELLO_LATE or isinstance(reply, ConnectionLost):
                observation = Observation(
                    True, ready, latency_ms, error, None, draining
                )
                self._hello_missed(protocol, check, observation, reply)
                return
            else:
                self._bad_reply(reply, protocol, "HELLO")
                return
            if self._hello_misses or self._hello_off:
                self._hello_answered()
        # The replies of an unchanged instance repeat: next time, the same
        # bytes skip the parser and this (sentinel.protocol, `repeated`).
        self._last_answer = (ready, error, draining)
        protocol.remember(replies, sent)
        self._answer(protocol, check, now, latency_ms, ready, error, draining, role)

    def repeated(self, protocol: RedisClientProtocol) -> None:
        # The pipeline's replies are those of the last parsed: so is what
        # they say. Heard (as `_heard`, inline: this runs for every check).
        self._owed_since = None
        self._owed_before = 0.0
        self._owed_paused_at = None
        check = self._check
        if check is None or protocol is not self._check_protocol:
            return  # The check they answer has ended (it timed out).
        now = self._reactor.seconds()
        latency_ms = (now - self._sent_at) * 1000.0
        if self._answers is not None:
            self._answers.answered(self._endpoint(), self._sent_at, now)
            self._excused = False
        ready, error, draining = self._last_answer
        role = self._hello_role if self._hello else None
        if (
            self._want_info
            or error is not None
            or draining
            or role != self._role_at_info
        ):
            self._answer(protocol, check, now, latency_ms, ready, error, draining, role)
        else:
            # The common case, thousands a second: as _answer and _finish
            # would end, one call less, and the Observation made as
            # NamedTuple's own _make makes it (its __new__ is a Python
            # function).
            self._check = self._check_protocol = None
            observation = _new_tuple(
                Observation, (True, ready, latency_ms, None, None, False)
            )
            if self._reconnects.violation is not None:
                observation = self._on_probation(observation, now)
            check.callback(observation)

    def _answer(
        self,
        protocol: RedisClientProtocol,
        check: Deferred[Observation | None],
        now: float,
        latency_ms: float,
        ready: bool,
        error: str | None,
        draining: bool,
        role: str | None,
    ) -> None:
        # INFO's reply follows when it was sent with the pipeline; INFO is
        # asked now when HELLO names another role than the last INFO did;
        # else the check ends here.
        if self._want_info:
            self._await_info(_Answered(ready, latency_ms, error, draining, role))
        elif role is not None and role != self._role_at_info:
            self._await_info(_Answered(ready, latency_ms, error, draining, role))
            self._owing()
            protocol.send_to(INFO_REPLICATION, InfoReply(self, protocol))
        elif error is None and not draining:
            self._finish(check, Observation(True, ready, latency_ms), now)
        else:
            observation = Observation(True, ready, latency_ms, error, None, draining)
            self._finish(check, observation, now)

    def _finish(
        self, check: Deferred[Observation | None], observation: Observation, now: float
    ) -> None:
        # The check in flight ends with `observation`, unless a protocol
        # violation still discredits the connection's answers. Answered,
        # the instance has no failure for a check that cannot look to repeat.
        self._check = self._check_protocol = None
        self._failing = None
        if self._reconnects.violation is not None:
            observation = self._on_probation(observation, now)
        check.callback(observation)

    def _await_info(self, answered: _Answered) -> None:
        # The first replies are in; INFO's is on its way (a timeout now is
        # INFO's).
        self.stage = "info"
        self._awaiting_info = answered
        # PING was answered with INFO sent: not a server that closes on it.
        self._plain_retry = self._plain_retry.succeeded()
        if self._plain:
            self._plain = False
            log.info(
                "{instance} answered PING with HELLO or INFO sent: its role is"
                " read again",
                instance=self.instance.name,
            )

    def info_replied(self, protocol: RedisClientProtocol, reply: object) -> None:
        if type(reply) is not ConnectionLost:
            self._heard()
        answered = self._awaiting_info
        check = self._check
        if answered is None or check is None or protocol is not self._check_protocol:
            # Its check ended (timed out, or its PING's reply failed it); a
            # later check on the same connection waits for nothing yet.
            return
        self._awaiting_info = None
        self._informed(reply, protocol, check, answered)

    def _informed(
        self,
        reply: object,
        protocol: RedisClientProtocol,
        check: Deferred[Observation | None],
        answered: _Answered,
    ) -> None:
        if self._check is not check:
            return  # It ended (timed out) while INFO was on its way.
        if isinstance(reply, bytes):
            try:
                replication = parse_replication(reply)
            except BadInfo as e:
                # Well-formed, so the connection is in step; but what it
                # says no Redis says: the check fails, as for garbage.
                self._last_error = f"bad INFO replication reply: {e}"
                self._end_check(Observation(ok=False, error=self._last_error))
                return
            if replication.role is None:
                # No role line at all: an error of the role read, shown.
                replication = _NO_ROLE
        elif isinstance(reply, ResponseError):
            # PING was answered, so the instance is alive; say why the role
            # is unknown (an ACL user without INFO, say) instead of failing it.
            replication = Replication(role=None, error=f"INFO replication: {reply}")
        else:
            # Not a bulk: a stale reply (a second PONG), or the connection
            # was lost.
            self._bad_reply(reply, protocol, "INFO")
            return
        self._role_at_info = answered.role
        observation = Observation(
            True,
            answered.ready,
            answered.latency_ms,
            answered.error,
            replication,
            answered.draining,
        )
        self._end_check(
            self._on_probation(observation, self._reactor.seconds())
            if self._reconnects.violation is not None
            else observation
        )

    def _on_probation(self, observation: Observation, now: float) -> Observation:
        # After a protocol violation a clean answer does not count until the
        # connection has stayed clean for a while (module docstring).
        violation = self._reconnects.distrust(now)
        if violation is None:
            return observation
        return Observation(ok=False, error=violation)

    def _cancel_check(self, check: Deferred[Observation | None]) -> None:
        # The caller's deadline passed: a timeout, and the connection goes
        # (a late reply would be read as the next check's).
        again = self._again
        if again is not None and again[0] is check:
            # Sent again (`_check_again`): the wait for the new connection,
            # or the check on it, ends now and ends this one.
            again[1].cancel()
            return
        stage = self.stage
        if self._check is check:
            # Not closed before PING's reply: the row of those is broken.
            self._closed_unanswered = 0
            protocol = self._check_protocol
            pipelines = self._pipelines
            if (
                stage == "ping"
                and pipelines is not None
                and protocol is self._protocol
                and pipelines.replies.awaiting_hello_only()
            ):
                # PING was answered, HELLO was not: its replies go on with
                # the deadline in HELLO's place (`answered` ends the check).
                pipelines.replies.callback(_HELLO_LATE)
                return
            self._check = self._check_protocol = None
            answered, self._awaiting_info = self._awaiting_info, None
            if answered is not None and protocol is not None:
                # PING was answered, INFO was not (a proxy that drops what
                # it does not know): alive, as when INFO is refused, its
                # role unknown; INFO is asked again at its usual times.
                self._drop_if(protocol)
                self._reconnects.dropped_alive()
                self._role_at_info = answered.role
                observation = Observation(
                    True,
                    answered.ready,
                    answered.latency_ms,
                    answered.error,
                    _INFO_UNANSWERED,
                    answered.draining,
                )
                self._finish(check, observation, self._reactor.seconds())
                return
            error = f"timeout ({stage})"
            if stage == "ping" and protocol is not None and self._ping_unfair():
                if self._owed_over(protocol):
                    # Owed too long for any lateness to excuse: a timeout.
                    error = owed_error(self._owed_bound())
                else:
                    self._ping_excused(check, protocol, pipelines)
                    return
            self._last_error = self._failing = error
            if protocol is not None:
                self._drop_if(protocol)
            check.callback(Observation(ok=False, error=error))
            return
        check.callback(Observation(ok=False, error=f"timeout ({stage})"))

    def _ping_excused(
        self,
        check: Deferred[Observation | None],
        protocol: RedisClientProtocol,
        pipelines: Pipelines | None,
    ) -> None:
        # The agent gave PING no fair chance: the check says nothing,
        # and a connection made (a TLS handshake on both sides) is
        # not thrown away for it, its late replies read and dropped
        # (each still an answer: `_heard`).
        self._last_inconclusive = True
        if (
            protocol is self._protocol
            and pipelines is not None
            and pipelines.replies.unanswered()
            and protocol.forget_replies(self._heard)
        ):
            # New waiters: nothing of the forgotten check is kept.
            self._pipelines = Pipelines(self, protocol, self._drain, pipelines.hello)
        else:
            # Some replies came, or those of the check before were
            # forgotten and are still out: a connection that falls
            # behind by more than one check goes.
            self._drop_if(protocol)
        check.callback(None)

    # What the server owes

    def _owing(self) -> None:
        # A command is sent now: owed since now, unless an older one is
        # (on a connection dropped since: its time counts on).
        if self._owed_since is None:
            self._owed_since = self._reactor.seconds() - self._owed_before
            self._owed_before = 0.0

    def _heard(self) -> None:
        # The server sent a reply, to a check already ended too.
        self._owed_since = None
        self._owed_before = 0.0
        self._owed_paused_at = None

    def _owed_due(self, scheduled: float) -> None:
        # The first check due since a connection holding a command was
        # dropped: until then the agent would have sent nothing anyway, and
        # that time counts; from then until a command is sent, the clock
        # stands still (the module docstring).
        paused_at = self._owed_paused_at
        assert paused_at is not None
        self._owed_paused_at = None
        due = min(scheduled, self._reactor.seconds())
        self._owed_before += max(0.0, due - paused_at)

    def _owed_over(self, checked: RedisClientProtocol | None = None) -> bool:
        # Whether the server has owed a reply for over the bound, none in
        # the socket of the kept connection, or of `checked` (the one of a
        # check ending), unread either (the module docstring).
        owed = self._owed_since
        bound: float = self._owed_bound()
        if owed is None:
            return self._owed_before > bound
        now: float = self._reactor.seconds()
        return now - owed > bound and not self._answered_unread(checked)

    def _answered_unread(self, checked: RedisClientProtocol | None) -> bool:
        # Whether a reply waits in a socket, not yet read: the server
        # answered, and the agent, its own turn stalled past the bound, has
        # not read it yet; heard, as a reply read is.
        for protocol in (checked, self._protocol):
            if protocol is not None and protocol.unread():
                self._heard()
                return True
        return False

    def _owed_failure(self) -> Observation | None:
        """
        What a check that would say nothing for the agent's own sake says:
        nothing (None) while its server owes no reply, or one for at most
        `owed_bound` seconds; after that it fails (the module docstring),
        and so do the checks that cannot look until the server answers.
        """
        if not self._owed_over():
            return None
        error = owed_error(self._owed_bound())
        self._last_error = self._failing = error
        return Observation(ok=False, error=error)

    def _ping_unfair(self) -> bool:
        # Whether the PING of the check timing out now had less than a fair
        # share of the timeout (sent on a connection that completed late in
        # its check's time), or the agent itself stalled since it was sent,
        # or it was the first on a connection just made and the server went
        # on completing the agent's other handshakes meanwhile, or the
        # server was still working through the agent's PINGs queued ahead
        # of it (module docstring).
        sent_at = self._sent_at
        return (
            self._reactor.seconds() - sent_at < self._fair_time
            or self._pacer.longest_stall_since(sent_at) > self._late_limit
            or (self._checks_on_connection == 1 and self._queued_behind_own(sent_at))
            or self._behind_own_pings(sent_at)
        )

    def _behind_own_pings(self, sent_at: float) -> bool:
        # Whether the server answered, since `sent_at`, a PING the agent
        # sent before and none sent at or after (`sentinel.answers`). Not
        # twice in a row without an answer between: a server that stays
        # that far behind, or stopped just after such an answer, fails at
        # the next check.
        answers = self._answers
        if (
            answers is None
            or self._excused
            or not answers.behind_own(self._endpoint(), sent_at, self._late_limit)
        ):
            return False
        self._excused = True
        return True

    def _queued_behind_own(self, since: float) -> bool:
        # Whether the server completed another of the agent's handshakes
        # after `since`: it was answering, and a wait on it since then was
        # its queue of the agent's own connections (`sentinel.handshakes`).
        return self.address is not None and self._pacer.handshakes.since(
            self._endpoint(), since
        )

    def _ping_unanswered(
        self, reply: object, protocol: RedisClientProtocol, extras: bool
    ) -> None:
        # PING's reply is no answer, or none came: the check fails, unless
        # it was a try of HELLO and INFO closed again (class docstring).
        if not _closed(reply):
            # The server answered (an error, say): no close before PING.
            self._closed_unanswered = 0
            if isinstance(reply, ResponseError):
                self._spoke_redis = self.address
        elif self._closed_before_ping(extras):
            self._end_check(None)
            return
        elif self._check_again():
            return
        elif self._checks_on_connection == 1 and self._tls is None and not self._again:
            # Closed before a byte came (PING's reply is the connection's
            # first), and not as a check sent again after a kept connection
            # closed (a restart): no Redis that is up does that, and a
            # TLS-only port or another service does (`NOT_REDIS_CLOSE`). A
            # Redis that answered here before and is going does too, once
            # (frozen, then killed: its listen backlog reset; the next
            # connection is refused or answered), and says the loss alone;
            # a second such close without an answer between is the port
            # changed (restarted TLS-only, say), and says why it may be.
            if self._spoke_redis == self.address:
                self._spoke_redis = None
            else:
                reply = ConnectionLost(f"{reply} {NOT_REDIS_CLOSE}")
        self._bad_reply(reply, protocol, "PING")

    def _check_again(self) -> bool:
        # A kept connection the server closed as the check went out on it
        # (the module docstring): the check is sent again on a new one,
        # when the once-a-second rule allows a connection for its due time.
        # True if it was, the check's result then the new connection's.
        check = self._check
        if check is None or not self._may_check_again():
            return False
        self._check = self._check_protocol = None
        # The close crossed the PING: the server owes the one sent again,
        # from when it is sent (if the agent gets to send it: `_ping`).
        self._owed_since = None
        failing = self._failing
        self._start_attempt(self._due)
        if self._attempt is None:
            # It ended at once (no socket to open, say): as for any check
            # that connects.
            self._unreported = None
            check.callback(
                self._owed_failure()
                if self._last_inconclusive
                else Observation(ok=False, error=self._last_error)
            )
            return True
        self.stage = self._connect_stage
        waiter: Deferred[Any] = Deferred(self._waiters.remove)
        self._waiters.append(waiter)
        waiter.addCallbacks(
            self._ping, self._connect_failed, callbackArgs=(self._info_asked,)
        )
        waiter.addCallback(self._judged, self._reactor.seconds(), failing)
        self._again = (check, waiter)
        waiter.addBoth(self._checked_again, check)
        return True

    def _may_check_again(self) -> bool:
        # The connection had answered a check before this one, nothing
        # older is owed, this check was not sent again already, no other
        # connection is on its way, and its due time allows a connection.
        return (
            self._checks_on_connection >= 2
            and self._again is None
            and (self._owed_since is None or self._owed_since >= self._sent_at)
            and self._attempt is None
            and self._renewed is None
            and self._reconnects.may_attempt(self._due, self._reactor.seconds())
            and not self._held_back()
        )

    def _checked_again(
        self, result: Observation | None | Failure, check: Deferred[Observation | None]
    ) -> None:
        # The check sent again ended: its caller's Deferred says so.
        if self._again is not None and self._again[0] is check:
            self._again = None
        if check.called:
            return  # Ended already (its canceller's wait did not end at once).
        if isinstance(result, Failure):
            check.errback(result)
        else:
            check.callback(result)

    def _closed_before_ping(self, extras: bool) -> bool:
        # The server closed the connection before answering PING. Twice in a
        # row on the first check of a new connection, sent with HELLO or
        # INFO (`extras`): a proxy that closes on commands it does not know
        # (twemproxy closes on either, unanswered), not a restart, which
        # would refuse the next connection, or meet a check at most once.
        # True when the check says nothing: a try of HELLO and INFO again.
        now = self._sent_at
        if self._plain:
            if extras:
                # Closed on them again: PING alone, tried later.
                self._plain_retry = self._plain_retry.longer(now)
                self._reconnects.dropped_alive()
                return True
            if self._checks_on_connection == 1:
                # PING alone is closed too: not what the server refuses.
                self._plain = False
                self._plain_retry = self._plain_retry.longer(now)
                log.info(
                    "{instance} closed the connection on PING alone too:"
                    " checking it with HELLO and INFO again, and not with PING"
                    " alone for {hold:.0f} s",
                    instance=self.instance.name,
                    hold=self._plain_retry.wait,
                )
            return False
        if self._checks_on_connection != 1 or not extras:
            self._closed_unanswered = 0
            return False
        self._closed_unanswered += 1
        if self._closed_unanswered >= 2 and now >= self._plain_retry.at:
            self._plain = True
            self._closed_unanswered = 0
            self._plain_retry = self._plain_retry.hold(now)
            log.warn(
                "{instance} closed the connection on a check with HELLO or"
                " INFO before answering PING, twice on a new connection (a"
                " proxy that closes on commands it does not know?): checking"
                " it with PING alone, its role unknown, and with HELLO and"
                " INFO again in {retry:.0f} s",
                instance=self.instance.name,
                retry=self._plain_retry.wait,
            )
        return False

    def _hello_unanswered(self, how: str) -> None:
        # PING was answered and HELLO was not (a proxy that drops what it
        # does not know, or closes on it; or a link that slowed down). On
        # HELLO_MISSES connections in a row, the connections to come check
        # without HELLO until its retry (class docstring).
        now = self._reactor.seconds()
        self._hello = False
        if self._hello_off:
            # A try of HELLO again, unanswered again.
            self._hello_retry = self._hello_retry.longer(now)
            return
        self._hello_misses += 1
        if self._hello_misses < HELLO_MISSES:
            return
        self._hello_misses = 0
        self._hello_switched(True)
        self._hello_retry = self._hello_retry.hold(now)
        log.warn(
            "{instance} answered PING but not HELLO ({how}) on {misses}"
            " connections in a row: checking it without HELLO, its role read"
            " by INFO on every check, and with HELLO again in {retry:.0f} s",
            instance=self.instance.name,
            how=how,
            misses=HELLO_MISSES,
            retry=self._hello_retry.wait,
        )

    def _hello_answered(self) -> None:
        # HELLO was answered: the row of misses is broken, and HELLO, if
        # it was off, is back.
        self._hello_misses = 0
        if self._hello_off:
            self._hello_switched(False)
            self._hello_retry = self._hello_retry.succeeded()
            log.info(
                "{instance} answered HELLO again: its role read by HELLO on"
                " every check again",
                instance=self.instance.name,
            )

    def _hello_switched(self, off: bool) -> None:
        # HELLO switched off, or on again: the agent's count follows.
        self._hello_off = off
        if self._hello_count is not None:
            self._hello_count.count += 1 if off else -1

    @property
    def hello_off_until(self) -> float | None:
        """
        While HELLO is switched off (class docstring), when it is tried
        again (reactor seconds); else None.
        """
        return self._hello_retry.at if self._hello_off else None

    def reply_failed(self, failure: Failure) -> None:
        """
        Handling a reply raised (a bug of ours): the failure goes to the
        check in flight, whose errback (the monitor's) logs it and records
        an internal error, or is logged here if none is.
        """
        check = self._check
        if check is not None:
            self._check = self._check_protocol = None
            check.errback(failure)
        else:
            log.failure(
                "handling a reply from {instance} failed",
                failure,
                instance=self.instance.name,
            )

    def _end_check(self, observation: Observation | None) -> None:
        check, self._check = self._check, None
        self._check_protocol = None
        if check is not None:
            check.callback(observation)

    def _bad_reply(
        self, reply: object, protocol: RedisClientProtocol, command: str
    ) -> None:
        if not isinstance(reply, Exception):
            # A reply of the wrong kind: the connection is out of step (a
            # second reply to an earlier command, say).
            error = f"unexpected reply to {command}: {describe_reply(reply)}"
            protocol.reject(error)
        else:
            # An error reply says which error it is, or the check's error
            # says that it did not (``-`` alone; or ``-ERR``, whose code
            # txredisapi drops): an error left empty says nothing.
            error = str(reply) or f"an error reply to {command} without text"
            if not isinstance(reply, ResponseError) or turned_away(reply):
                # The connection was lost or broke the protocol, or the
                # server turned it away and closes it: its reason stays the
                # last error, not the loss that follows. A well-formed error
                # reply otherwise keeps it in step.
                self._drop_if(protocol)
        self._last_error = self._failing = error
        self._end_check(Observation(ok=False, error=error))

    def _hello_missed(
        self,
        protocol: RedisClientProtocol,
        check: Deferred[Observation | None],
        observation: Observation,
        reply: object,
    ) -> None:
        # PING was answered and HELLO was not (`reply` is the deadline or
        # the loss): alive, as when INFO is late (DESIGN.md section 5), its
        # role not read this time; the connection goes (a late reply would
        # be read as the next check's).
        late = reply is _HELLO_LATE
        how = "no reply within the timeout" if late else "the connection closed first"
        # Unread because the agent itself ran late: not Redis's miss, and
        # not one to switch HELLO off for (INFO on every check adds load).
        if not late or self._pacer.lateness_since(self._sent_at) <= self._late_limit:
            self._hello_unanswered(how)
        self._drop_if(protocol)
        self._reconnects.dropped_alive()
        if self._want_info:
            # INFO, sent after HELLO, went unanswered with it.
            observation = observation._replace(
                replication=Replication(
                    role=None, error=f"INFO replication: no reply (HELLO: {how})"
                )
            )
        self._finish(check, observation, self._reactor.seconds())

    def _connect_failed(self, failure: Failure) -> Observation | None:
        if failure.check(_Inconclusive):
            return self._owed_failure()
        if failure.check(_HeldBack):
            return _NOT_STARTED  # As if still in line.
        if failure.check(CancelledError):
            if self._queued:
                # Not started yet: never looked (`_judged` says what follows).
                return _NOT_STARTED
            if self._resolving:
                error = "timeout (resolve)"
            else:
                error = f"timeout ({self._connect_stage}){self._moved_on()}"
        else:
            error = describe_failure(failure)
        self._last_error = error
        return Observation(ok=False, error=error)

    def _judged(
        self,
        observation: Observation | None,
        launched_at: float,
        failing: str | None,
    ) -> Observation | None:
        # A timeout of a check that waited for a connection counts only if
        # Redis had a fair chance (module docstring). `failing`: what the
        # checks before this one had failed with, if they had.
        if observation is None or observation.ok:
            return observation
        if not (observation.error or "").startswith("timeout"):
            self._failing = observation.error
            return observation
        now = self._reactor.seconds()
        started = None if observation is _NOT_STARTED else self._connect_started_at
        # Since the attempt started, if earlier: a check launched late in a
        # starved tick may be judged moments later, its attempt's own
        # bound not yet run, on an attempt that waited through it all.
        since = launched_at if started is None else min(launched_at, started)
        late = self._pacer.lateness_since(since) > self._late_limit
        if observation.error == "timeout (resolve)":
            inconclusive = late  # The name servers had the whole timeout.
        elif self._syn_unanswered:
            # The attempt's own bound with its SYN unanswered: judged so
            # already (`_attempt_done`). Before, a starved agent's check
            # waiting on it took it for its own lateness, every time.
            inconclusive = False
        else:
            inconclusive = (
                late
                or started is None
                or now - started < self._fair_time
                or self._queued_behind_own(started)
                or self._searching()
            )
        if not inconclusive:
            self._failing = observation.error
            return observation
        self._last_inconclusive = True
        # A failure this check's own timeout recorded is none: what the
        # checks before it failed with stands.
        self._failing = failing
        return self._not_looked_at(since)

    def _not_looked_at(self, since: float) -> Observation | None:
        """
        What a check that the agent did not get to look with (its attempt
        still in line for the pacer, or started too late to give Redis a
        fair chance) says now: nothing (None), unless the instance's last
        check failed, none answered since (a connection made answers a
        failure to connect, not a reply timeout: `_connected`) and none is
        kept, and the agent has kept up since `since`; then it fails again
        with that error (the module docstring). An instance with no such
        failure (never judged, or answered since) whose address is stalled,
        its last timeout there while the agent kept up, fails with that
        timeout: its instances share their server's fate (`sentinel.stalls`).
        Nothing is said only while the server owes no reply for over the
        bound (`_owed_failure`).
        """
        failing = self._failing
        if failing is None and self.address is not None:
            failing = self._pacer.stalls.failing(self._endpoint())
        if (
            failing is None
            or self._protocol is not None
            or self._pacer.lateness_since(since) > self._late_limit
        ):
            return self._owed_failure()
        return Observation(ok=False, error=failing)

"""
kazoo bridged into Deferreds on the reactor thread.

kazoo's ``*_async`` calls return an ``IAsyncResult`` whose ``rawlink``
callbacks run on kazoo's worker thread; they only hand the result over with
``reactor.callFromThread``. State listeners run on kazoo's connection thread
and watch callbacks on its callback thread; they likewise only hand over,
and what an old client (see below) still hands over is dropped: each client
has a generation, and only the current one's are heard. A watch's event and
the answer to a call made about the same time come through two different
kazoo threads, in either order. Every call has a timeout, judged after
the answers kazoo has handed over meanwhile (`sentinel.calltimeouts`: an
agent that stalled wakes with both due), and one made
while kazoo is not connected fails at once with ``ConnectionLoss``: kazoo
would queue it and wake its connection thread through a socket pair, a
byte a call, which nothing reads between reconnection attempts, so that
after about 280 such calls the next one blocked the reactor thread until
ZooKeeper came back (a SIGTERM with ZooKeeper down never ended). For the
same reason at most `CALLS_IN_FLIGHT` calls are in kazoo's hands at once,
the others waiting here in order: a burst of thousands (a stop deleting
every node) held the reactor thread 18 s at 10,000 instances. Writes wait
ahead of reads: at a change of a group's membership a new primary asks
for thousands of opinions and watches at once, and the creates of the
nodes missing since a member crashed waited behind them; writes are few
(batched, below, and bounded by the publisher's own queue), so reads still
flow. A read asked as ``ahead`` (a takeover's, the first call of the
write that makes a node readers will miss otherwise) waits with the
writes, ahead of the other reads: at a leave, each new primary's reads
of the nodes it took over queued behind 75--106 other reads (a look at
the discovery service's members, 64 at a time), 0.1--0.3 s each at a
load of 6. So are a group membership's listing and the reads it waits
for (`sentinel.membership`: a few a member, at most `HOLDERS_IN_FLIGHT`
at once), on which every view waits: behind a new session's thousands
of calls, a listing took 7--16 s after a wipe at 1,000 instances, and
the members of the last view were waited for on listings that old. A
delete asked as ``urgent`` (a stop's leave of its group, which
the others wait for to take its nodes over) goes to kazoo at once, past
every call waiting and the bound (a few more than `CALLS_IN_FLIGHT` fit
in kazoo's socket pair): at 3,000 instances, a leave behind a start-up's
or a view change's calls was answered after the 0.5 s a stop waits for
it, and the session was closed with every node. Reads asked as
``background`` (a group's opinions and the watches of contested nodes:
thousands at once when a member crashes, each of its opinions deleted
firing a watch) wait behind the other reads, so that the
membership, read after the same crash, is not held up behind them: at
3,000 instances the survivors applied the new view 7 to 11 s after the
dead member's nodes vanished, and wrote them again only then. A read
asked as ``changed`` (an opinion its observer wrote again: it changed its
mind, and the verdict may change with it) waits behind the writes and
ahead of every other read, at most `CHANGED_IN_FLIGHT` of them in kazoo's
hands: behind a view change's background reads, a verdict followed its
observer's ``down`` 2.3--2.6 s late. A read asked as ``awaited`` (the
first read of an opinion a verdict waits for: a new primary's, or a new
observer's, at a view change) waits behind those and ahead of the
ordinary reads, at most `AWAITED_IN_FLIGHT` of them in kazoo's hands
(three quarters of them), so that the ordinary reads (the membership's)
take the rest of the room: behind a view change's thousands of
background reads, such a first read held its verdict back for up to the
5 s the verdict waits for it, and with a quarter of the room, it still
waited seconds for it.

A call's timeout counts from when it is handed to kazoo, not from when
it was asked: at a view change (1,000 instances, a member leaving), 471
of a survivor's 593 calls timed out while still waiting here, ZooKeeper
never asked, and were asked again at the back of their queue, work done
twice while what was answered waited. A call waiting for room fails,
never sent, after `WAIT_LIMIT` call timeouts (``calls_timed_out_unsent``
counts those): a queue that does not move for that long has a ZooKeeper
behind it that answers nothing, whose connection is dropped sooner, and
its calls failed, by the silence rule below. Blocking calls
(``stop``/``close``) run on a thread of their own, never on the reactor's
thread nor its pool, which a stuck ZooKeeper would exhaust.

Sets and creates of ephemeral nodes made in one turn of the reactor go to
ZooKeeper together, in transactions of at most `WRITE_BATCH` operations
(`WRITE_BATCH_BYTES` of data): through kazoo, one set cost about 300 µs of
CPU here (its connection thread, its worker thread, the hand-overs between
them and the reactor's), and one of 64 in a transaction about 25 µs, and
kazoo's threads, busy with one call at a time, took the interpreter from
the reactor's thread at each of its system calls (at 10,000 instances, a
start-up with ZooKeeper did not finish). ZooKeeper logs a transaction as
one. Each write still ends on its own: with its stat or path, or with its
own refusal (`BadVersionError`, `NoNodeError`, `NodeExistsError`). A
transaction is all or nothing, so the writes refused only because another
was are sent again, in the next turn's transaction (those never looked at,
after the refused one, alone the second time: a transaction per refusal
would send 64 writes refused one by one 2,080 times); a create refused for
want of its parent is sent alone, which makes the parents.

A write (a set, create, delete or transaction) is made for the session the
reactor thread last heard of, and sent only in it: kazoo connects (a new
session, after an expiry or with a new client) on its own thread, before
the publisher hears of it and forgets which nodes it owned. A set at the
version our old session's node had, sent meanwhile in the new session,
overwrote the node another agent had just created there with the same
version (small numbers, after ZooKeeper came back empty): the agent then
took the node for its own predecessor's and waited for good. A write that
would go to another session fails with ``ConnectionLoss``, as one made
while disconnected does, and is made again once the new session is heard.

A client that stays disconnected for longer than the session timeout is
replaced by a new one: only the server can declare a session expired, and a
ZooKeeper that came back empty refuses a client that has seen a newer
transaction id, so the old client could stay SUSPENDED for good. The new
client asks for the old session (its id and password) unless kazoo said it
was lost: having seen no transaction yet, it is refused by no server; an
ensemble that kept the session (its quorum back after a longer outage)
gives it back with every node, where a new session waited a session
timeout for the old one's nodes, and a server that does not know it (empty,
or after the session expired) declares it expired, and kazoo opens a new
one. Were the old client to connect in the moment it is replaced, its
close would end the session, and the new client would open a new one.
A server that closes the handshake in an outage is asked why
(`sentinel.srvr`): one that serves at a transaction id below the one
the client has seen lost those transactions and refuses that client
for good, so the client is replaced at once rather than after the
session timeout (a ZooKeeper wiped and started again within a few
seconds left every agent refused for the rest of its 10-12 s); one
without a quorum, silent, or not allowing ``srvr`` leaves it to the
timeout.
The old client's connection is shut before it is closed: its connection
thread, held in a read by a server that sends a byte at a time (a
handshake's reply never whole, each wait for a byte bounded, not the
whole), never saw the close, and outlived it with its socket, one more
of each at every replacement while the server dripped.
The new client starts once the old one is closed (its threads ended), or
after `REPLACED_CLOSE_WAIT` if its close hangs: glibc gives a thread that
ends its malloc arena back, and the next thread that allocates takes it,
so that kazoo's new threads take the old ones' arenas and cached stacks.
Started first, as they were, they ran beside the old ones, and glibc made
each its own arena (64 MiB reserved, its touched pages in RSS) and stack,
kept for good: four more at the first replacement (the closing thread's
one, which still runs beside the old ones, is all that is left of them).
Once closed, the old client is garbage, and `replaced_closed` is told
when it was made: a client made before a freeze of the collector is out
of its reach (`sentinel.process`) until collected on purpose. The
closing thread lets go of the client before it says so.

The session timeout is the one ZooKeeper granted, not the one asked for:
the server bounds it (by default to 2 to 20 of its ticks). Asked 2 s and
granted 20, the agent replaced a client after 2 s whose session was alive,
then waited 20 s for its own old session's nodes; asked 30 s and granted 4,
a handoff was promised for 30 s and the session had expired after 4.
kazoo reads the granted value at each connection and keeps it nowhere we
can read: it logs it, on the client's own logger (`_ClientLog`), before it
says CONNECTED. That logger also hands over why each connection attempt
failed (kazoo's warnings: ``Connection dropped: ...``): ``/healthz`` names
the last cause while not connected, and the log the first of each outage
(attempts repeat every few seconds). In an outage, an attempt that
failed in the handshake is named by the server that accepted it, and
what that means (`_HANDSHAKE_CAUSES`), each server kept until connected
again (`handshakes_failed`): an ensemble without a quorum closes every
handshake at the server it has left and leaves them unanswered at the
frozen ones, and "socket connection broken", alone, read as a network
fault. A connection that failed after its
quickest answer took a third of the session timeout or more says so with
the cause: kazoo waits that long for a ping's answer, so that over such a
round trip no connection lasts, and only a longer session timeout helps.
The client replaced every session timeout while unreachable (below) is
logged once an outage too, and summed up once connected again.

The replacement waits the session timeout and a random share of it, up to
`REPLACE_SPREAD`: every agent of a fleet was cut off by the same outage
and, after a wipe, is refused until replaced, so with no spread all of
them replaced their clients in the same moment, a session timeout after
ZooKeeper went away, and came back on the ensemble together (the three
agents of a group replaced theirs in the same second after a wipe,
300 instances, load 5). The spread is never
shorter than the session timeout: a client replaced sooner could give up
a session that lives.

kazoo judges a connection dead only by a ping left unanswered, and sends
a ping only after a third of the session timeout with nothing sent: every
request counts as one. An agent writing more often than that never had a
server that stopped answering (frozen, or its host gone without a reset)
left: ``/healthz`` said ok while the session expired on the ensemble with
every node. So the bridge judges by what comes back, as ZooKeeper's Java
client does. It hears every answer, watch event and answered ping (kazoo
logs those on the client's logger, `_ClientLog`), and while connected
with calls in kazoo's hands: once the oldest of them has waited a third
of the granted session timeout with nothing heard since it was handed
over, ``/healthz`` names the server (`not_answering`); once nothing at
all has been heard for two thirds (kazoo's own limit for a ping), the
connection is dropped: its socket, made by our handler
(`_ConnectHandler`), is shut down, which kazoo's I/O loop reads as a
broken connection, and kazoo connects again on the same session, passing
that server over once if another is listed, while a third of the session
timeout is left to reach one. A call waiting alone never drops a
connection that answered pings a moment before.

A state listener or a watcher that raises is a bug of ours: counted in
`internal_errors` (``/healthz`` then fails, `sentinel.bugs`), and the other
listeners are still told.

So is a kazoo thread that stops working, the failure this agent is built
against (DESIGN.md section 2): an exception in kazoo's connection loop
ended its connection thread, and kazoo said LOST; the session was alive,
and the client, replaced a session timeout later on a new session, left
every node missing until that one's expiry (7.5 s at a 6 s timeout). A
worker thread that ended or blocked left the connection up and every
answer and watch event undelivered: the nodes were never written again,
and the client never replaced. So a LOST that kazoo says because its loop
ended is not a lost session, and every third of the session timeout (a
second at the least) the bridge looks at the threads kazoo spawned (our
handler keeps them) and puts a probe on each worker's queue; a thread
ended, or a probe not back by the next look, replaces the client at once
on the same session, its connection shut first so that its close cannot
end that session.

A session can be handed from one process to the next (`sentinel.handoff`):
the first client may reattach to a session (`start(client_id=...)`), and
`leave_open` stops using the session without closing it (`close_session`
closes one nobody should keep, with a client of its own). A client left so
never reconnects: between reconnection attempts kazoo asks our `interrupt`
every 0.1 s, which ends them once the session is left, so that an older
process whose session a newer one took does not take it back.
"""

from __future__ import annotations

import errno
import logging
import math
import random
import socket
import threading
import weakref
from collections import deque
from collections.abc import Callable, Collection
from functools import partial
from typing import Any

import attr
from kazoo.client import KazooClient, KazooState
from kazoo.exceptions import (
    ConnectionClosedError,
    ConnectionLoss,
    KazooException,
    NoNodeError,
    RolledBackError,
    RuntimeInconsistency,
)
from kazoo.handlers.threading import SequentialThreadingHandler
from kazoo.hosts import collect_hosts
from kazoo.loggingsupport import BLATHER
from kazoo.protocol.states import KeeperState, WatchedEvent
from kazoo.retry import KazooRetry
from kazoo.security import READ_ACL_UNSAFE, make_digest_acl
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from sentinel.bugs import InternalErrors
from sentinel.calltimeouts import JUDGED_LATE, CallTimeout, time_out
from sentinel.ensemble import (
    ACCEPT_AFTER,
    CONFIG_PATH,
    REREAD_EVERY,
    foreign,
    members,
)
from sentinel.sessionclose import close_sent, deletes_sent
from sentinel.spent import TimeSpent
from sentinel.srvr import ServerSays, ask_srvr
from sentinel.unrooted import Unrooted
from sentinel.zkframes import fence_reads
from sentinel.zknames import ListedNames

log = Logger()

# Errors chained to a ZooKeeper error whose tracebacks are dropped, at
# most (`_without_traceback`): kazoo chains one or two.
_CHAINED_ERRORS = 8

# Calls handed to kazoo at once; more wait here. kazoo wakes its connection
# thread with a byte per call on a socket pair that holds about 280, and a
# call finding it full blocks the reactor thread until the thread reads.
CALLS_IN_FLIGHT = 128

# Background reads in kazoo's hands at most: fewer than the calls in
# flight, so that a write or a read asked after thousands of them waits
# behind this many at most in kazoo's queue (and ZooKeeper's, which answers
# a session's requests in order), not behind `CALLS_IN_FLIGHT`.
BACKGROUND_IN_FLIGHT = 32

# Reads of a changed node in kazoo's hands at most: such a read waits ahead
# of the other reads, and a client rewriting nodes in a loop (each read at
# most once per spacing, `sentinel.opinions`) must not hold them back: past
# this many, the other reads take the rest of the room.
CHANGED_IN_FLIGHT = 32

# Reads a verdict waits for in kazoo's hands at most (module docstring):
# thousands at a view change, ahead of the ordinary reads, which take the
# rest of the room. A share of the calls in flight, not a window on the
# link: those are `CALLS_IN_FLIGHT` whatever the kinds. At 32, a view
# change's awaited reads waited 3.3--3.7 s here for room, and ZooKeeper
# answered each in 0.23--0.26 s (1,000 instances, load 31: BENCHMARKS.rst).
AWAITED_IN_FLIGHT = 96

# Call timeouts a call may wait here for room before it fails unsent
# (module docstring): its own timeout counts from when it is sent.
WAIT_LIMIT = 3

# Why a write made for one session is not sent in another (module docstring).
_SESSION_CHANGED = "the ZooKeeper session changed"

# The calls that write: they wait for room ahead of every read.
_WRITE_CALLS = frozenset({"commit_async", "create_async", "set_async", "delete_async"})

# At most this many writes in one transaction, and this many bytes of data:
# ZooKeeper refuses a request over 1 MB (jute.maxbuffer).
WRITE_BATCH = 64
WRITE_BATCH_BYTES = 256 * 1024

# Shares of the session timeout: a call waiting this long with nothing
# heard since makes /healthz name the server, and with nothing heard at all
# for the second, its connection is dropped (module docstring).
NOT_ANSWERING_AFTER = 1 / 3
# Seconds a write may be out (handed to kazoo and unanswered, or waiting
# here for room) before it is slow: this agent's own path to ZooKeeper is
# then, and the other members may find it so and leave it out of their
# verdicts (`sentinel.behind`). Well above a healthy write's round trip
# (milliseconds; a few hundred at a load of 30), well below the bound a
# primary is judged by (10 s).
SLOW_WRITE = 2.0
DROP_AFTER = 2 / 3
# Share of the session timeout that kazoo waits for a ping's answer: a
# connection that failed after its quickest answer took as long names it
# (module docstring).
SLOW_ANSWER = 1 / 3
# Seconds late the judgement of a silence may run before it is made again
# rather than acted on: a stalled agent (SIGSTOP, a CPU quota, a paused
# virtual machine) judges on waking, before kazoo's thread has handed over
# the answers that came meanwhile, and would drop a server that answered.
# Made again once only: the next judgement is acted on however late. A
# call's timeout waits as long, for the same reason (`time_out`).
SILENCE_JUDGED_LATE = JUDGED_LATE

# Share of the session timeout between two looks at kazoo's threads: a
# worker that does not run a probe by the next look is taken as blocked
# (module docstring). Ours only hand over, in microseconds.
THREADS_EVERY = 1 / 3
# Seconds between two looks at the least, whatever the session timeout: a
# probe must wait for its thread to get a CPU and the interpreter, which a
# loaded machine does not give within a few tens of ms. A session timeout
# asked below ZooKeeper's minimum (0.2 s) counted until the grant, looks
# came every 67 ms, and at load 6 a worker that had its probe still queued
# replaced a healthy client and counted an internal error (/healthz 503).
# A blocked worker is still found within two of these.
THREADS_EVERY_AT_LEAST = 1.0

# Seconds a close of a session left unchecked (`close_session`) may take:
# one request; unanswered, the session expires on its own.
CLOSE_TIMEOUT = 1.0

# Seconds kazoo's connection retry waits between attempts, at most
# (before its jitter of 40 % either way). kazoo's own default grows
# towards a minute; at 5 s, a client replaced while ZooKeeper was away
# (after a wipe, every agent's) tried again 0.1, 0.2, ... then 5 s apart:
# ZooKeeper served for up to 6 s before it tried (three agents, 1,000
# instances, load 12). ZooKeeper's Java client waits up to 1 s between
# two attempts; a refused connect costs a server nothing.
RECONNECT_MAX_DELAY = 1.0

# Share of the session timeout that a replacement waits on top of it, at
# most, drawn anew each time (module docstring): spreads a fleet's
# replacements after one outage over 2 s at a 10 s session timeout.
REPLACE_SPREAD = 0.2

# Seconds a replacement client waits for the one it replaces to be closed
# before it starts anyway (module docstring). A close took 6 to 88 ms
# (13 replacements, ZooKeeper stopped, load 8): kazoo's retry looks at our
# gate every 0.1 s between connection attempts. It takes longer only while
# a connect is under way, a connected client's close is unanswered, or a
# thread of kazoo's is blocked.
REPLACED_CLOSE_WAIT = 0.5

CONNECTING = "connecting"
CONNECTED = "connected"
SUSPENDED = "suspended"
LOST = "lost"
STOPPED = "stopped"

_STATES = {
    KazooState.CONNECTED: CONNECTED,
    KazooState.SUSPENDED: SUSPENDED,
    KazooState.LOST: LOST,
}

StateListener = Callable[[str], None]
# A call waiting for room: its Deferred, the call to make, for a write the
# session it is made for, when it began to wait, and its timer (the bound on
# waiting, then its call timeout once sent).
_Waiting = tuple[Deferred[Any], Callable[[], Any], "int | None", float, CallTimeout]
# The queues of calls waiting for room, in the order they are served, and
# their names in /debug/stats; the kinds with a bound of their own on the
# calls in kazoo's hands.
_WRITE, _CHANGED, _AWAITED, _READ, _BACKGROUND = range(5)
_QUEUE_KINDS = ("writes", "changed", "awaited", "reads", "background")
_RANK_IN_FLIGHT = {
    _CHANGED: CHANGED_IN_FLIGHT,
    _AWAITED: AWAITED_IN_FLIGHT,
    _BACKGROUND: BACKGROUND_IN_FLIGHT,
}
Watcher = Callable[[WatchedEvent], None]


class _KazooLogHandler(logging.Handler):
    """
    kazoo's errors into our log (it uses the standard library's logging,
    which twistd does not collect). Its warnings repeat every reconnect
    attempt: a client's are read by `_ClientLog`, which logs the first.
    """

    def emit(self, record: logging.LogRecord) -> None:
        log.error("kazoo: {message}", message=record.getMessage())


_kazoo_log = logging.getLogger("kazoo")
_kazoo_log.setLevel(logging.ERROR)
_kazoo_log.propagate = False
_kazoo_log.addHandler(_KazooLogHandler())

# kazoo's record of each connection's session, at BLATHER: its third
# argument is the session timeout ZooKeeper granted, in milliseconds.
_SESSION_CREATED = "Session created"
_GRANTED_ARG = 2
# kazoo's record of a ping answered, at BLATHER.
_PING_ANSWERED = "Received Ping"
# kazoo's warnings that name no cause (this one follows an outage's first).
_NO_CAUSE = frozenset({"Transition to CONNECTING"})

# What kazoo's causes mean when a connection attempt fails after its TCP
# connect, in the handshake: said of the server that accepted it. A
# ZooKeeper server that runs but may not serve (no quorum: its ensemble
# cannot commit a write, nor expire a session) closes every connection
# there; "connection broken" alone read as a network fault, and the
# session as lost, while the ensemble merely had no quorum.
_CLOSED_AT_HANDSHAKE = (
    "accepted the connection and closed it at the handshake: it runs "
    "but will not serve this client (its ensemble without a quorum, "
    "its maxClientCnxns reached, or behind this session's last "
    "transaction)"
)
_HANDSHAKE_CAUSES = {
    "Connection dropped: socket connection broken": _CLOSED_AT_HANDSHAKE,
    "Connection time-out: socket time-out during read": (
        "accepted the connection and never answered the handshake (frozen, "
        "or overloaded)"
    ),
}


class _ClientLog(logging.Logger):
    """
    One client's log, given to kazoo as its `logger`: on kazoo's connection
    thread, it hands the session timeout ZooKeeper granted (seconds) to
    `granted`, each warning naming why a connection failed to `failed`, and
    tells `pinged` of each ping answered; kazoo's errors go to our log.
    Made directly, not by ``logging.getLogger``, which would keep one
    logger per client for good.
    """

    def __init__(
        self,
        granted: Callable[[float], None],
        failed: Callable[[str], None],
        pinged: Callable[[], None],
    ) -> None:
        super().__init__("kazoo.client", logging.WARNING)
        self.propagate = False
        self._granted = granted
        self._pinged = pinged
        self.addHandler(_FailureHandler(failed))
        self.addHandler(_KazooLogHandler(logging.ERROR))

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        """kazoo's records, the granted timeout's and pings' caught below our level."""
        # Below WARNING: kazoo logs every request and answer at BLATHER or
        # DEBUG, and these are read before any record is made of them.
        if level == BLATHER and msg == _PING_ANSWERED:
            self._pinged()
        elif (
            level == BLATHER
            and isinstance(msg, str)
            and msg.startswith(_SESSION_CREATED)
            and len(args) > _GRANTED_ARG
            and isinstance(granted := args[_GRANTED_ARG], int)
        ):
            self._granted(granted / 1000.0)
        super().log(level, msg, *args, **kwargs)


class _FailureHandler(logging.Handler):
    """kazoo's warnings, each the cause of a failed connection attempt."""

    def __init__(self, failed: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self._failed = failed

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.ERROR and record.msg not in _NO_CAUSE:
            self._failed(record.getMessage())


# kazoo ships no types: its handler is Any to mypy.
class _ConnectHandler(SequentialThreadingHandler):  # type: ignore[misc]
    """
    kazoo's threading handler, each TCP connect bounded by the session
    timeout divided by the number of hosts, as ZooKeeper's own Java client
    does (``ClientCnxn``): kazoo gives each connect the whole session
    timeout, so one listed address that drops SYNs (a firewalled or
    decommissioned server) outlived the session on the first reconnect that
    tried it, with two live servers of three in the list. A connect that
    times out says to which address, not kazoo's ``None``. The last
    connect made says which server the client is on (`connected_to`), the
    one under way where it goes (`connecting`), and its connection can be
    dropped (`drop`). The threads kazoo spawns (its workers and its
    connection thread) are kept in `threads`.
    """

    def __init__(self, hosts: int) -> None:
        super().__init__()
        # How many hosts are listed (at least one).
        self.listed = max(hosts, 1)
        # (host as listed, port) of the last connect made, and its socket,
        # set on kazoo's connection thread before it says CONNECTED.
        self.connected_to: tuple[str, int] | None = None
        self._connection: socket.socket | None = None
        # (address, port) of the connect under way on kazoo's connection
        # thread, if one is.
        self.connecting: tuple[str, int] | None = None
        # The server the next connect passes over (`drop`).
        self._pass_over: tuple[str, int] | None = None
        self.threads: list[threading.Thread] = []

    def spawn(self, func: Any, *args: Any, **kwargs: Any) -> threading.Thread:
        """kazoo's threads, kept to be looked at (`ZooKeeper`)."""
        thread: threading.Thread = super().spawn(func, *args, **kwargs)
        self.threads.append(thread)
        return thread

    def create_connection(self, *args: Any, **kwargs: Any) -> socket.socket:
        """kazoo's connect, within the share of the timeout (class docstring)."""
        address = kwargs.get("address") or args[0]
        server = (kwargs.get("hostname") or address[0], address[1])
        pass_over, self._pass_over = self._pass_over, None
        if server == pass_over:
            # kazoo logs the strerror and tries its next host at once.
            raise ConnectionAbortedError(
                errno.ECONNABORTED,
                f"{server[0]}:{server[1]} passed over once: it stopped answering",
            )
        timeout = kwargs.get("timeout")
        if timeout is not None:
            kwargs["timeout"] = timeout = timeout / self.listed
        self.connecting = address
        try:
            connection: socket.socket = super().create_connection(*args, **kwargs)
        except TimeoutError as e:
            # kazoo logs the error's strerror, which a timeout leaves None.
            host, port = address
            raise TimeoutError(
                e.errno, f"connect to {host}:{port} timed out after {timeout:g} s"
            ) from e
        finally:
            self.connecting = None
        self.connected_to, self._connection = server, connection
        return connection

    def drop(self) -> None:
        """
        Shut the last connection made down (from any thread): kazoo's I/O
        loop, woken, reads it as broken and connects again on the same
        session, and its next connect passes that server over if another
        is listed (kazoo goes on down its list, or shuffles it again and
        may start with the same server, which would then take a connect's
        share of the session timeout to fail again).
        """
        connection = self._connection
        if self.listed > 1:
            self._pass_over = self.connected_to
        if connection is not None:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # Closed already: kazoo dropped it itself.


def node_acl(auth: str | None) -> list[Any] | None:
    """world:read plus our digest identity:all, when authenticating."""
    if auth is None:
        return None
    user, _, password = auth.partition(":")
    return [*READ_ACL_UNSAFE, make_digest_acl(user, password, all=True)]


class ZooKeeper:
    """
    One ZooKeeper session at a time, as Deferreds.

    State listeners are called on the reactor thread with `CONNECTED`,
    `SUSPENDED` or `LOST`; after `CONNECTED` the session may be a new one
    (`session_id` says), and every ephemeral node may be gone.
    """

    def __init__(
        self,
        reactor: Any,
        hosts: str,
        session_timeout: float,
        auth: str | None = None,
        call_timeout: float = 5.0,
        client_factory: Callable[..., Any] = KazooClient,
        internal_errors: InternalErrors | None = None,
        check_ensemble: bool = False,
        spread: Callable[[], float] = random.random,
        ask_server: Callable[[str, int], Deferred[ServerSays]] | None = None,
    ) -> None:
        """
        @param ask_server: asks a server (its address and port) what it
            says of itself (`sentinel.srvr`): asked of a server that
            closed the handshake in an outage (module docstring).
        @param internal_errors: where a listener's or a watcher's bug is
            counted (the agent's, so that ``/healthz`` shows it).
        @param spread: a number in [0, 1) for each replacement's share of
            `REPLACE_SPREAD` (module docstring).
        @param check_ensemble: whether each new session is checked to be on
            the ensemble's members, as followed, and left if not, within
            bounds (`sentinel.ensemble`).
        """
        self._reactor = reactor
        self.internal_errors = internal_errors or InternalErrors(reactor)
        self.hosts = hosts
        # The session timeout asked for, and the one ZooKeeper granted last
        # (None until a first connection): `session_timeout`.
        self.requested_timeout = session_timeout
        self.granted_timeout: float | None = None
        self._auth = auth
        self.acl = node_acl(auth)
        self.call_timeout = call_timeout
        self._client_factory = client_factory
        self._spread = spread
        self._ask_server = ask_server or partial(ask_srvr, reactor)
        # The client generation whose refusal is being asked about.
        self._asking: int | None = None
        self.replaced_behind = 0
        # The listed names' addresses, shared by every client of this
        # bridge, looked up off kazoo's connection thread.
        self._names = ListedNames()
        self._client: Any = None
        # Every client this bridge made and still in memory, and those
        # whose close has not ended yet (/debug/stats: a client per outage
        # kept, or a close that never ends, would grow these).
        self._clients: weakref.WeakSet[Any] = weakref.WeakSet()
        self.clients_closing = 0
        # When the current client was made (the reactor's seconds), and who
        # is told, with that time, once a replaced client's close has ended:
        # it is garbage then, which a freeze of the collector since may keep
        # out of reach (`sentinel.process.ProcessPolicy.dropped`).
        self._made_at = reactor.seconds()
        self.replaced_closed: Callable[[float], object] | None = None
        self._gate: _ReconnectGate | None = None
        self._handler: _ConnectHandler | None = None
        # Clients whose session was left open: kept until the process ends.
        self._left_open: list[Any] = []
        self._generation = 0
        # Calls handed to the current client and not answered yet, in all
        # and of each kind, and those waiting for room: writes, reads of a
        # changed node, other reads, background reads (module docstring),
        # each handed over in that order.
        self._in_flight = 0
        self._rank_in_flight = [0] * len(_QUEUE_KINDS)
        self._queues: tuple[deque[_Waiting], ...] = tuple(deque() for _ in _QUEUE_KINDS)
        # Writes made this turn, sent together at its end (module docstring).
        self._writes: list[_Write] = []
        self._writes_call: IDelayedCall | None = None
        self._listeners: list[StateListener] = []
        self._replace_call: IDelayedCall | None = None
        # The session last connected, until kazoo says it is lost: what a
        # replacement asks for (module docstring). kazoo's own `client_id`
        # says nothing while suspended.
        self._resumable: tuple[int, bytes] | None = None
        # The ensemble's members, as last heard on it, the last session
        # found on it, and why the current one is not (`sentinel.ensemble`),
        # and the servers that are not, left out until a session is on the
        # ensemble again: a client that asked one for the ensemble's session
        # was told it had expired, and opened a new one on the next server.
        # Since when they are judged, when one was last left, and the next
        # leaving, taking, or reading of the members.
        self._members: frozenset[tuple[str, str]] = frozenset()
        self._ensemble_session: tuple[int, bytes] | None = None
        self.foreign: str | None = None
        self._avoided: set[tuple[str, int]] = set()
        self._judging_since: float | None = None
        self._left_at: float | None = None
        self._judge_call: IDelayedCall | None = None
        self._reread_call: IDelayedCall | None = None
        self._check = check_ensemble
        self.state = STOPPED
        self.state_since = reactor.seconds()
        # The session last heard connected on the reactor thread (module
        # docstring): writes go to it alone.
        self._session: int | None = None
        self.last_error: str | None = None
        # Why the last connection attempt failed, while not connected, and
        # whether that was logged since the last connection (module
        # docstring).
        self.connect_error: str | None = None
        # Since the connection was lost: each server that failed a
        # handshake, and how (`_HANDSHAKE_CAUSES`).
        self.handshakes_failed: dict[str, str] = {}
        self._connect_error_logged = False
        self.replacements = 0
        # Replacements since the last connection, and when the first was:
        # the first is logged, the others summed up once connected again.
        self._outage_replacements = 0
        self._first_replaced_at = 0.0
        # When each call in kazoo's hands was handed over, oldest first, and
        # when the server last answered anything: a call, a watch, a ping
        # (module docstring); when that is judged next, and the connections
        # dropped so. The first cause kazoo gives after a drop is the drop
        # itself, not kept.
        self._unanswered: dict[Deferred[Any], float] = {}
        self.last_heard = self.state_since
        # Of those, the writes (and reads sent with them), oldest first;
        # and when a write was last found slow (`writes_slow_at`).
        self._writes_out: dict[Deferred[Any], float] = {}
        self._writes_slow_at = -math.inf
        # The quickest answer to a call since the last connection (seconds
        # from its hand-over): named with the connection's failure if it
        # took `SLOW_ANSWER` of the session timeout or more.
        self._fastest: float | None = None
        self._silence_call: IDelayedCall | None = None
        self.drops = 0
        # Calls failed by the call timeout, and those of them handed to
        # kazoo whose answer came all the same (ZooKeeper answered after
        # the timeout, or before it, with the agent too late to read it);
        # those still waiting for theirs.
        self.calls_timed_out = 0
        self.calls_answered_after_timeout = 0
        self._timed_out_unanswered: set[Deferred[Any]] = set()
        # Of those, the calls that timed out waiting here for room, never
        # sent to ZooKeeper.
        self.calls_timed_out_unsent = 0
        # Writes' calls never sent, every one of their callers gone.
        self.calls_unsent_given_up = 0
        # While an answer's callbacks run: how long ZooKeeper took to give
        # it, from the call's hand-over to kazoo until kazoo's thread heard
        # it, without the time the reactor thread took to get to it (its
        # own CPU busy: `sentinel.window`); None otherwise.
        self.round_trip: float | None = None
        # Where each kind's calls spend their time (`sentinel.spent`).
        self.time_spent = TimeSpent(_QUEUE_KINDS)
        self._dropping = False
        # The next look at kazoo's threads, and when each probe still out
        # was put on its worker's queue (module docstring).
        self._threads_call: IDelayedCall | None = None
        self._probes: dict[str, float] = {}

    @property
    def session_timeout(self) -> float:
        """
        The session's timeout: the one ZooKeeper granted last, or the one
        asked for until it has granted one.
        """
        if self.granted_timeout is not None:
            return self.granted_timeout
        return self.requested_timeout

    @property
    def _threads_every(self) -> float:
        # Seconds to the next look at kazoo's threads (`THREADS_EVERY`).
        return max(self.session_timeout * THREADS_EVERY, THREADS_EVERY_AT_LEAST)

    # Lifecycle

    def add_listener(self, listener: StateListener) -> None:
        """Call `listener(state)` on the reactor thread at each change."""
        self._listeners.append(listener)

    def start(self, client_id: tuple[int, bytes] | None = None) -> None:
        """
        Start connecting, to the session `client_id` (session id, password)
        if given and still alive, else to a new one; listeners hear
        `CONNECTED` when it is done (`client_id` then says which).
        """
        self._set_state(CONNECTING)
        self._new_client(client_id)

    def close_session(
        self, client_id: tuple[int, bytes], timeout: float
    ) -> Deferred[None]:
        """
        Close the session `client_id` (its ephemeral nodes go at once) with
        a client of its own, which reattaches to it and closes it; fires
        when done, or after `timeout` to connect (the session then expires
        on its own). A session that expired already is no matter: the new
        one the client may open instead is closed.
        """
        other = ZooKeeper(
            self._reactor,
            self.hosts,
            self.requested_timeout,
            auth=self._auth,
            call_timeout=self.call_timeout,
            client_factory=self._client_factory,
            internal_errors=self.internal_errors,
        )
        connected: Deferred[None] = Deferred()

        def heard(state: str) -> None:
            if state == CONNECTED and not connected.called:
                connected.callback(None)

        other.add_listener(heard)
        other.start(client_id)
        connected.addTimeout(timeout, self._reactor)
        connected.addErrback(lambda _: None)
        return connected.addCallback(lambda _: other.stop(CLOSE_TIMEOUT))

    def leave_open(self) -> None:
        """
        Stop using the session without closing it: its ephemeral nodes stay
        until another process reattaches to it or it expires. The client
        keeps its connection until this process ends, never reconnects, and
        is no longer heard.
        """
        self._cancel_replace()
        self._cancel_checks()
        session = self._session
        # Not "stopped": read as closed, that line once came before the
        # stop's own saying the session was left open.
        self._set_state(
            STOPPED,
            said=f"{_session_subject(session)} left open, not closed",
        )
        if self._gate is not None:
            self._gate.close()
        if self._client is not None:
            self._left_open.append(self._client)
        self._client = self._gate = None
        self._new_generation()
        self._end_writes()

    def stop(self, timeout: float) -> Deferred[None]:
        """
        Close the session (its ephemeral nodes go with it) on a thread of
        its own; fires when closed or after `timeout`, whichever first.
        """
        self._cancel_replace()
        self._cancel_checks()
        session = self._session
        subject = _session_subject(session)
        client, self._client = self._client, None
        self._set_state(
            STOPPED,
            said=(
                "ZooKeeper stopped: no client to close"
                if client is None
                else f"{subject} closing"
            ),
        )
        self._new_generation()
        self._end_writes()
        if client is None:
            return succeed(None)
        done: Deferred[bool] = Deferred()
        self._close_in_thread(client, done)
        began = self._reactor.seconds()

        def closed(without_error: bool) -> None:
            # Said only once ZooKeeper answered: every ephemeral node of the
            # session is gone then (`sentinel.sessionclose`); an error was
            # logged as it came.
            if without_error:
                log.info(
                    "{subject} closed after {seconds} s",
                    subject=subject,
                    seconds=round(self._reactor.seconds() - began, 3),
                )

        return done.addTimeout(timeout, self._reactor).addCallbacks(
            closed, lambda _: self._not_closed_in_time(client, timeout, session)
        )

    def _not_closed_in_time(
        self, client: Any, timeout: float, session: int | None
    ) -> None:
        if session is None:
            # Never connected (a ZooKeeper that accepts and never answers,
            # say): no session to close, and nothing of ours in ZooKeeper,
            # as no write is sent before the session is known here. Said
            # before as a session "left to expire" whose nodes stayed.
            log.info(
                "ZooKeeper client (no session yet) not stopped within "
                "{timeout} s: it never had a session, so it wrote no node "
                "and leaves none behind",
                timeout=round(timeout, 2),
            )
            return
        # Unanswered is not unsent: ZooKeeper answers a close once it has
        # deleted every node of the session (`sentinel.sessionclose`).
        sent = close_sent(client)
        if sent:
            log.info(
                "ZooKeeper session close sent, not answered within {timeout} s: "
                "its nodes go as ZooKeeper applies it (thousands take it a "
                "while), or with the session's expiry ({expiry} s) if the "
                "close never reaches it",
                timeout=round(timeout, 2),
                expiry=self.session_timeout,
            )
            return
        log.warn(
            "ZooKeeper session not closed in time ({why}); left to expire: "
            "its nodes stay for the session timeout ({expiry} s)",
            why="the close not sent" if sent is not None else "not known if sent",
            expiry=self.session_timeout,
        )

    def deletes_sent(self, paths: Collection[str]) -> bool | None:
        """
        Whether every delete of `paths` asked of the current client has
        left this process (`sentinel.sessionclose`); None if that cannot
        be told, or there is no client.
        """
        client = self._client
        return None if client is None else deletes_sent(client, paths)

    def close_from_thread(self, timeout: float) -> None:
        """
        Close the session now from a thread other than the reactor's, which
        cannot get to it (`sentinel.backstop`); blocks `timeout` s at most.
        A session already closed or left open (`stop`, `leave_open`) is no
        longer this bridge's client: nothing to do.
        """
        client = self._client
        if client is not None:
            self._close_in_thread(client).join(timeout)

    @property
    def session_id(self) -> int | None:
        """The current session's id, if connected."""
        if self.state != CONNECTED:
            return None
        client_id = self.client_id
        return None if client_id is None else client_id[0]

    @property
    def client_id(self) -> tuple[int, bytes] | None:
        """(session id, password) of the current session (for tests)."""
        # kazoo resets client_id to None on its own thread when the session
        # ends, before our state hears of it: read it once.
        client_id = None if self._client is None else self._client.client_id
        if client_id is None:
            return None
        session, password = client_id
        return int(session), bytes(password)

    def _new_client(
        self,
        client_id: tuple[int, bytes] | None = None,
        hosts: str | None = None,
        start: bool = True,
    ) -> None:
        generation = self._new_generation()
        gate = _ReconnectGate()
        hosts = self.hosts if hosts is None else hosts
        handler = _ConnectHandler(len(collect_hosts(hosts)[0]))

        def granted(seconds: float) -> None:
            # kazoo's connection thread, before it says CONNECTED.
            self._reactor.callFromThread(self._granted, generation, seconds)

        def failed(why: str) -> None:
            # kazoo's connection thread: the server its last connect reached.
            server = handler.connected_to
            self._reactor.callFromThread(self._connect_failed, generation, why, server)

        def pinged() -> None:
            # kazoo's connection thread.
            self._reactor.callFromThread(self._heard, generation)

        client = self._client_factory(
            hosts=hosts,
            timeout=self.requested_timeout,
            client_id=client_id,
            connection_retry=KazooRetry(
                max_tries=-1, max_delay=RECONNECT_MAX_DELAY, interrupt=gate.closed
            ),
            auth_data=[("digest", self._auth)] if self._auth else None,
            logger=_ClientLog(granted, failed, pinged),
            handler=handler,
        )
        self._client, self._gate, self._handler = client, gate, handler
        self._made_at = self._reactor.seconds()
        self._clients.add(client)
        connection = getattr(client, "_connection", None)
        if connection is not None:
            # kazoo's own lookup blocks its connection thread
            # (`sentinel.zknames`).
            connection._expand_client_hosts = partial(self._names.expand, client)
            # kazoo trusts the bytes it reads (`sentinel.zkframes`).
            fence_reads(connection)

        def listener(state: Any) -> None:
            # kazoo's connection thread: hand over, nothing else. Its own
            # state says why a LOST is (module docstring).
            self._reactor.callFromThread(
                self._state_changed, generation, state, client.client_state
            )

        client.add_listener(listener)
        if start:
            self._start(generation)

    def _start(self, generation: int) -> None:
        # The current client starts its threads, unless replaced, stopped
        # or left open meanwhile.
        if generation != self._generation or self._client is None:
            return
        self._client.start_async()
        self._threads_call = self._reactor.callLater(
            self._threads_every, self._look_at_threads, generation
        )

    def _watch_fired(
        self, generation: int, watcher: Watcher, event: WatchedEvent
    ) -> None:
        if generation != self._generation:
            return
        self.last_heard = self._reactor.seconds()
        try:
            watcher(event)
        except Exception:
            self.internal_errors.record("a ZooKeeper watcher", event.path, Failure())

    def _close_in_thread(
        self,
        client: Any,
        done: Deferred[bool] | None = None,
        replaced_at: float | None = None,
    ) -> threading.Thread:
        """
        Close `client` on a thread of its own; `done`, if given, fires
        with whether it closed without an error. `replaced_at`: when a
        replaced client was made (`replaced_closed` is told once closed).
        """
        # The thread lets go of the client before it hands over: told it is
        # closed, the reactor thread may collect it.
        held = [client]
        del client

        def close() -> None:
            closing = held.pop()
            closed = True
            try:
                closing.stop()
                closing.close()
            except Exception as e:
                closed = False
                error = repr(e)
                self._reactor.callFromThread(
                    log.warn, "closing a ZooKeeper client: {error}", error=error
                )
            del closing
            self._reactor.callFromThread(self._closed, closed, done, replaced_at)

        self.clients_closing += 1
        closing = threading.Thread(target=close, name="zookeeper-close", daemon=True)
        closing.start()
        return closing

    def _closed(
        self,
        without_error: bool,
        done: Deferred[bool] | None,
        replaced_at: float | None,
    ) -> None:
        # A close ended (`_close_in_thread`).
        self.clients_closing -= 1
        if done is not None:
            _settle(without_error, done)
        if replaced_at is not None and self.replaced_closed is not None:
            self.replaced_closed(replaced_at)

    @property
    def clients_alive(self) -> int:
        """
        The clients this bridge made that are still in memory: the current
        one, those left open, and those closed but not yet freed.
        """
        return len(self._clients)

    @property
    def calls_unanswered(self) -> int:
        """The current client's calls handed to kazoo and not answered."""
        return len(self._unanswered)

    def _granted(self, generation: int, seconds: float) -> None:
        if generation != self._generation:
            return
        if seconds != self.requested_timeout and seconds != self.granted_timeout:
            longer = seconds > self.requested_timeout
            log.warn(
                "ZooKeeper granted a session timeout of {granted} s, {than} the "
                "{requested} s asked (zookeeper.session_timeout; its {bound} "
                "bounds it): the agent counts with {granted} s",
                granted=seconds,
                than="longer than" if longer else "shorter than",
                requested=self.requested_timeout,
                bound="minSessionTimeout" if longer else "maxSessionTimeout",
            )
        self.granted_timeout = seconds

    def _connect_failed(
        self, generation: int, why: str, server: tuple[str, int] | None = None
    ) -> None:
        # Kept even while still connected: kazoo warns of an outage's cause
        # before it tells the listeners.
        if generation != self._generation:
            return
        meaning = _HANDSHAKE_CAUSES.get(why)
        if meaning is not None and server is not None and self.state != CONNECTED:
            # An attempt of an outage, not the connection's first drop:
            # `server` is the one whose handshake failed.
            why = f"{server[0]}:{server[1]} {meaning}"
            self.handshakes_failed[f"{server[0]}:{server[1]}"] = meaning
            if meaning is _CLOSED_AT_HANDSHAKE:
                self._ask_why_closed(generation, server)
        if self._dropping:
            # Our own drop (`_drop`), whose cause is kept already.
            self._dropping = False
            return
        fastest, self._fastest = self._fastest, None
        timeout = self.session_timeout
        if fastest is not None and fastest >= timeout * SLOW_ANSWER:
            # Not a fault of the agent's nor of the server's: the round trip
            # is longer than ZooKeeper's clients wait for a ping's answer.
            why += (
                f" (the quickest answer on that connection took {fastest:.1f} s, "
                f"a third of the {timeout:g} s session timeout or more: "
                "ZooKeeper's clients drop a connection whose ping takes that "
                "long; zookeeper.session_timeout must be longer)"
            )
        self.connect_error = why
        if not self._connect_error_logged:
            self._connect_error_logged = True
            # The servers named: "Connection refused" alone did not say to
            # which, and a wrong port in a config file is a first day's slip.
            log.warn(
                "ZooKeeper connection failed: {why} (zookeeper.hosts {hosts}; "
                "retrying; the next failures before it connects are not logged)",
                why=why,
                hosts=self.hosts,
            )

    def _ask_why_closed(self, generation: int, server: tuple[str, int]) -> None:
        """
        A server closed the current client's handshake in an outage: if
        it serves with a transaction id below the client's last, it lost
        them, and the client is replaced at once (module docstring).
        """
        if self._asking == generation:
            return  # One question at a time: kazoo retries every few seconds.
        self._asking = generation
        client = self._client
        d = maybeDeferred(self._ask_server, *server)
        # Unreachable, silent, or no srvr allowed: the timeout replaces it.
        # A bug in judging an answer is shown as one.
        d.addCallbacks(
            self._server_said,
            lambda _: None,
            callbackArgs=(generation, client, server),
        )
        d.addErrback(
            lambda failure: self.internal_errors.record(
                "judging a ZooKeeper server's srvr answer", None, failure
            )
        )
        d.addBoth(lambda _: self._asked(generation))

    def _asked(self, generation: int) -> None:
        if self._asking == generation:
            self._asking = None

    def _server_said(
        self,
        says: ServerSays,
        generation: int,
        client: Any,
        server: tuple[str, int],
    ) -> None:
        if generation != self._generation or self.state == CONNECTED:
            return
        seen = getattr(client, "last_zxid", 0) or 0
        if not says.serving or says.zxid is None or says.zxid >= seen:
            return
        self.replaced_behind += 1
        log.warn(
            "ZooKeeper at {server} serves ({mode}) at transaction {zxid:#x},"
            " below the {seen:#x} this client has seen: it lost them"
            " (wiped and started again, or restored from an older snapshot)"
            " and refuses this client for good; replacing the client now"
            " rather than after the session timeout",
            server=f"{server[0]}:{server[1]}",
            mode=says.mode,
            zxid=says.zxid,
            seen=seen,
        )
        self.replacements += 1
        self._outage_replacements += 1
        if self._outage_replacements == 1:
            self._first_replaced_at = self._reactor.seconds()
        self._replace_client(self._resumable)

    def _heard(self, generation: int) -> None:
        # A ping answered (module docstring).
        if generation == self._generation:
            self.last_heard = self._reactor.seconds()

    def _state_changed(
        self, generation: int, kazoo_state: Any, client_state: Any = None
    ) -> None:
        if generation != self._generation:
            return
        state = _STATES.get(kazoo_state)
        if state is None:
            return
        if state == LOST and client_state == KeeperState.CLOSED:
            # Only a client we stopped ends its loop; not this one.
            self._threads_failed("kazoo's connection loop ended on its own")
            return
        self._set_state(state)
        if state == CONNECTED:
            self.connect_error = self._fastest = None
            self.handshakes_failed = {}
            self._connect_error_logged = self._dropping = False
            if self._outage_replacements:
                log.info(
                    "ZooKeeper connected again: the client was replaced "
                    "{count} time(s), the first {seconds:.0f} s ago",
                    count=self._outage_replacements,
                    seconds=self._reactor.seconds() - self._first_replaced_at,
                )
                self._outage_replacements = 0
            self._resumable = client_id = self.client_id
            self._cancel_replace()
            if client_id is not None and client_id == self._ensemble_session:
                # Only the ensemble knows its own session.
                self._end_judging()
                self._reread(generation)
            elif self._check:
                self._check_ensemble(generation)
        elif state == LOST and client_state != KeeperState.AUTH_FAILED:
            self._resumable = None
        if state != CONNECTED and self._replace_call is None:
            self._replace_later()

    def _check_ensemble(self, generation: int) -> None:
        # Whether the new session is on the ensemble (`sentinel.ensemble`).
        server = None if self._handler is None else self._handler.connected_to
        d = self.get(CONFIG_PATH)
        d.addCallback(self._heard_config, generation, server, self._resumable)
        # Unread (a chroot, a timeout): unknown, judged at the next session.
        d.addErrback(lambda _: None)

    def _heard_config(
        self,
        answer: tuple[bytes, Any],
        generation: int,
        server: tuple[str, int] | None,
        client_id: tuple[int, bytes] | None,
    ) -> None:
        if generation != self._generation:
            return
        heard = members(answer[0])
        if not foreign(self._members, heard):
            self._members = heard or self._members
            self._ensemble_session = client_id
            self._end_judging()
            self._reread_later(generation)
            return
        now = self._reactor.seconds()
        named = "?" if server is None else f"{server[0]}:{server[1]}"
        first = self._judging_since is None
        if self._judging_since is None:
            self._judging_since = now
        if server is not None:
            self._avoided.add(server)
        if self._judge_call is not None and self._judge_call.active():
            self._judge_call.cancel()
        self._judge_call = None
        pause = self.session_timeout
        listed = collect_hosts(self.hosts)[0]
        if all(tuple(each) in self._avoided for each in listed):
            # Nowhere else to go: staying, until taking it (module docstring).
            at = self._judging_since + ACCEPT_AFTER * pause
            doing = (
                "no other listed server to try: staying, and taking its "
                "ensemble for this agent's once all have looked so for "
                f"{ACCEPT_AFTER * pause:g} s"
            )
            self._judge_call = self._reactor.callLater(
                max(at - now, 0.0), self._accept, generation, heard, client_id, named
            )
        else:
            # At most once a session timeout: each leaving makes a client,
            # its threads and a session on the stray.
            at = now if self._left_at is None else max(now, self._left_at + pause)
            doing = (
                "moving to another listed server (at most once a "
                f"{pause:g} s session timeout)"
            )
            if at > now:
                self._judge_call = self._reactor.callLater(
                    at - now, self._leave, generation
                )
        self.foreign = (
            f"ZooKeeper at {named} is another ensemble: its {CONFIG_PATH} lists "
            f"{len(heard)} member(s), none of the {len(self._members)} this "
            f"agent published to; {doing}"
        )
        if first:
            # One warning a judgement: attempts are in /healthz.
            log.warn("{reason}", reason=self.foreign)
        if self._judge_call is None:
            self._leave(generation)

    def _leave(self, generation: int) -> None:
        self._judge_call = None
        if generation != self._generation:
            return
        self._left_at = self._reactor.seconds()
        self._replace_client(self._ensemble_session)

    def _accept(
        self,
        generation: int,
        heard: frozenset[tuple[str, str]],
        client_id: tuple[int, bytes] | None,
        named: str,
    ) -> None:
        # Every listed server has looked like another ensemble for long:
        # the whole ensemble was replaced, and publishing goes on there.
        self._judge_call = None
        if generation != self._generation or self._judging_since is None:
            return
        log.warn(
            "ZooKeeper: every listed server has looked like another ensemble "
            "for {seconds:.0f} s; taking the one at {named} ({count} member(s)) "
            "for this agent's ensemble and publishing there",
            seconds=self._reactor.seconds() - self._judging_since,
            named=named,
            count=len(heard),
        )
        self._members = heard
        self._ensemble_session = client_id
        self._end_judging()
        self._reread_later(generation)

    def _end_judging(self) -> None:
        # On the ensemble: nothing avoided, nothing pending.
        self.foreign = self._judging_since = None
        self._avoided = set()
        if self._judge_call is not None and self._judge_call.active():
            self._judge_call.cancel()
        self._judge_call = None

    def _cancel_checks(self) -> None:
        # Stopped: no leaving, taking or reading pending.
        for call in (self._judge_call, self._reread_call):
            if call is not None and call.active():
                call.cancel()
        self._judge_call = self._reread_call = None

    def _reread(self, generation: int) -> None:
        # The members again, on the ensemble's session: a reconfiguration
        # (a server replaced at a time) is followed, not judged later.
        client_id = self._resumable
        d = self.get(CONFIG_PATH, background=True)

        def heard(answer: tuple[bytes, Any]) -> None:
            if generation != self._generation or client_id != self._ensemble_session:
                return
            self._members = members(answer[0]) or self._members

        d.addCallback(heard)
        # Unread (a timeout, a lost connection): read again later.
        d.addErrback(lambda _: None)
        self._reread_later(generation)

    def _reread_later(self, generation: int) -> None:
        if self._reread_call is not None and self._reread_call.active():
            self._reread_call.cancel()
        self._reread_call = self._reactor.callLater(
            REREAD_EVERY, self._reread_due, generation
        )

    def _reread_due(self, generation: int) -> None:
        self._reread_call = None
        if generation != self._generation:
            return
        if self.state == CONNECTED and self._resumable == self._ensemble_session:
            self._reread(generation)
        else:
            self._reread_later(generation)

    def _replace(self) -> None:
        self._replace_call = None
        if self.state == CONNECTED or self._client is None:
            return
        connecting = None if self._handler is None else self._handler.connecting
        if connecting is not None:
            # With one server listed, its connect is given the whole session
            # timeout, and a server whose packets are dropped leaves it
            # unanswered until now: kazoo never gets to say why it failed,
            # and the outage's first cause (a connection dropped) would
            # stand for every attempt after it.
            host, port = connecting
            self.connect_error = f"connect to {host}:{port} not answered"
        self.replacements += 1
        self._outage_replacements += 1
        if self._outage_replacements == 1:
            # Once an outage, as its cause is: a replacement follows every
            # session timeout (360 lines an hour at 10 s).
            self._first_replaced_at = self._reactor.seconds()
            log.warn(
                "ZooKeeper unreachable for the {seconds} s session timeout "
                "or more: replacing the client, again every {seconds} to "
                "{most:.1f} s until it connects (not logged again)",
                seconds=self.session_timeout,
                most=self.session_timeout * (1 + REPLACE_SPREAD),
            )
        self._replace_client(self._resumable)

    # kazoo's threads (module docstring)

    def _look_at_threads(self, generation: int) -> None:
        self._threads_call = None
        handler = self._handler
        if generation != self._generation or handler is None:
            return
        if not handler.running:
            # Not started (a client of tests), or stopped already.
            return
        now = self._reactor.seconds()
        ended = sum(not thread.is_alive() for thread in handler.threads)
        if ended:
            self._threads_failed(f"{ended} of kazoo's threads ended")
            return
        for name, queue in (
            ("completion", handler.completion_queue),
            ("callback", handler.callback_queue),
        ):
            sent = self._probes.get(name)
            if sent is not None:
                self._threads_failed(
                    f"kazoo's {name} worker ran nothing for {now - sent:.1f} s"
                )
                return
            self._probes[name] = now
            queue.put(
                partial(self._reactor.callFromThread, self._probed, generation, name)
            )
        self._threads_call = self._reactor.callLater(
            self._threads_every, self._look_at_threads, generation
        )

    def _probed(self, generation: int, name: str) -> None:
        if generation == self._generation:
            self._probes.pop(name, None)

    def _threads_failed(self, why: str) -> None:
        # Counted and shown as a bug (kazoo's); the client replaced at once,
        # on the same session.
        self.internal_errors.record(
            "a ZooKeeper client",
            None,
            Failure(RuntimeError(f"{why}: replaced on the same session")),
        )
        self.replacements += 1
        if self._gate is not None:
            self._gate.close()
        self._replace_client(self._resumable)

    def _replace_client(self, client_id: tuple[int, bytes] | None) -> None:
        # A new client, asking for `client_id`'s session, on the servers
        # listed but the one avoided; the old one is closed first, and the
        # new one started once it is, or after `REPLACED_CLOSE_WAIT`
        # (module docstring).
        old, gate, made_at = self._client, self._gate, self._made_at
        if self._handler is not None:
            # Shut before its close, which would end the session otherwise,
            # and which a connection thread held in a read never sees: a
            # server dripping a byte a second (a handshake's reply never
            # whole) kept each replaced client's thread and socket, 16
            # threads instead of 6 after 40 s.
            self._handler.drop()
        self._cancel_replace()
        self._resumable = client_id
        if gate is not None:
            gate.close()
        self._new_client(client_id, _without(self.hosts, self._avoided), start=False)
        closed: Deferred[bool] = Deferred()
        self._close_in_thread(old, closed, made_at)
        closed.addTimeout(REPLACED_CLOSE_WAIT, self._reactor)
        generation = self._generation
        closed.addBoth(lambda _: self._start(generation))
        self._set_state(LOST)
        self._replace_later()

    def _replace_later(self) -> None:
        """Replace the client a session timeout and a spread from now."""
        share = min(max(self._spread(), 0.0), 1.0) * REPLACE_SPREAD
        self._replace_call = self._reactor.callLater(
            self.session_timeout * (1 + share), self._replace
        )

    def resuming(self) -> int | None:
        """
        The session a client not connected asks for again (its own, or
        a replacement's: module docstring), or None when connected or once
        kazoo said it was lost. Only the ensemble expires a session: this
        one is not known lost, whatever the replaced client's state says.
        """
        if self.state == CONNECTED or self._resumable is None:
            return None
        return self._resumable[0]

    def _cancel_replace(self) -> None:
        if self._replace_call is not None and self._replace_call.active():
            self._replace_call.cancel()
        self._replace_call = None

    def _set_state(self, state: str, said: str | None = None) -> None:
        """
        Move to `state`, told to the listeners; logged as `said` if given
        (what really happened to the session), else as the state's name.
        """
        if state == self.state:
            return
        if said is None:
            log.info("ZooKeeper {state}", state=state)
        else:
            log.info("{said}", said=said)
        client_id = self.client_id if state == CONNECTED else None
        if state == CONNECTED or state in (LOST, STOPPED):
            self._session = None if client_id is None else client_id[0]
        self.state = state
        self.state_since = self._reactor.seconds()
        for listener in list(self._listeners):
            try:
                listener(state)
            except Exception:
                self.internal_errors.record(
                    f"a ZooKeeper state listener, told {state}", None, Failure()
                )

    # A server that stopped answering (module docstring)

    def not_answering(self) -> str | None:
        """
        Why the server this client is connected to looks gone, or None: a
        call has waited a third of the session timeout or more with nothing
        heard from it since; its connection is dropped once nothing has
        been heard for two thirds.
        """
        silence = self._silence()
        timeout = self.session_timeout
        if silence is None or silence[0] < timeout * NOT_ANSWERING_AFTER:
            return None
        then = (
            "for another listed server"
            if self._handler is not None and self._handler.listed > 1
            else "and made again (no other server listed)"
        )
        return (
            f"ZooKeeper at {self._server()} has answered nothing for "
            f"{silence[1]:.1f} s, {len(self._unanswered)} request(s) waiting: "
            f"its connection is dropped at {timeout * DROP_AFTER:.1f} s (2/3 "
            f"of the {timeout:g} s session timeout) {then}, on the same session"
        )

    def _silence(self) -> tuple[float, float] | None:
        # How long the oldest call waiting has waited with nothing heard
        # since it was handed over, and how long nothing at all has been
        # heard on this connection; None if no call waits or not connected.
        if self.state != CONNECTED or not self._unanswered:
            return None
        now = self._reactor.seconds()
        heard = max(self.last_heard, self.state_since)
        oldest = next(iter(self._unanswered.values()))
        if heard > now or oldest > now:
            # The wall clock stepped back (`sentinel.clocksteps` moves
            # calls, not these times): counted from now, not from a time
            # that may be hours ahead.
            self.last_heard = min(self.last_heard, now)
            self.state_since = min(self.state_since, now)
            heard = min(heard, now)
            for d, sent in self._unanswered.items():
                self._unanswered[d] = min(sent, now)
            oldest = min(oldest, now)
        return float(now - max(oldest, heard)), float(now - heard)

    def _silence_due(self, generation: int, put_off: bool = False) -> None:
        # Judged when the limits would be reached if nothing were heard;
        # not again, once no call waits, until one is handed over. A
        # judgement that ran late is put off once (`SILENCE_JUDGED_LATE`),
        # not at every turn: an agent late at every timer (a starved CPU)
        # would otherwise never drop a server that answers nothing, as a
        # call's timeout is judged (`sentinel.calltimeouts`).
        call, self._silence_call = self._silence_call, None
        if generation != self._generation:
            return
        silence = self._silence()
        if silence is None:
            return
        waited, quiet = silence
        timeout = self.session_timeout
        waiting_left = timeout * NOT_ANSWERING_AFTER - waited
        quiet_left = timeout * DROP_AFTER - quiet
        late = (
            call is not None
            and self._reactor.seconds() - call.getTime() > SILENCE_JUDGED_LATE
        )
        if waiting_left > 0 or quiet_left > 0 or (late and not put_off):
            self._silence_call = self._reactor.callLater(
                max(waiting_left, quiet_left, SILENCE_JUDGED_LATE if late else 0.0),
                self._silence_due,
                generation,
                late,
            )
        elif self._handler is not None:
            self._drop(quiet)

    def _drop(self, silent: float) -> None:
        assert self._handler is not None
        server = self._server()
        self.drops += 1
        log.warn(
            "ZooKeeper at {server} has answered nothing for {seconds:.1f} s, "
            "{count} request(s) waiting: dropping the connection to connect "
            "again on the same session",
            server=server,
            seconds=silent,
            count=len(self._unanswered),
        )
        # kazoo's next warning is the broken connection, and the outage's
        # first is logged here already.
        self.connect_error = f"{server} answered nothing for {silent:.1f} s"
        self._connect_error_logged = self._dropping = True
        self._handler.drop()

    def _server(self) -> str:
        server = None if self._handler is None else self._handler.connected_to
        return "?" if server is None else f"{server[0]}:{server[1]}"

    # Calls

    def _call(
        self,
        method: str,
        *args: Any,
        background: bool = False,
        urgent: bool = False,
        ahead: bool = False,
        changed: bool = False,
        awaited: bool = False,
        **kwargs: Any,
    ) -> Deferred[Any]:
        client = self._client
        if client is None:
            return fail(ConnectionClosedError("not started"))
        return self._call_on(
            client,
            method,
            *args,
            background=background,
            urgent=urgent,
            ahead=ahead,
            changed=changed,
            awaited=awaited,
            **kwargs,
        )

    def _call_on(
        self,
        target: Any,
        method: str,
        *args: Any,
        background: bool = False,
        urgent: bool = False,
        ahead: bool = False,
        changed: bool = False,
        awaited: bool = False,
        **kwargs: Any,
    ) -> Deferred[Any]:
        if not self._client.connected:
            # Not queued in kazoo (module docstring): the caller tries again.
            return fail(ConnectionLoss("not connected to ZooKeeper"))
        write = method in _WRITE_CALLS
        session = self._session if write else None
        if write and not self._in_session(session):
            return fail(ConnectionLoss(_SESSION_CHANGED))
        d: Deferred[Any] = Deferred()
        call = partial(getattr(target, method), *args, **kwargs)
        # A read `ahead` waits with the writes, but is sent in any session
        # (it has none to check: `session` is None).
        rank = (
            _WRITE
            if write or ahead
            else _CHANGED
            if changed
            else _AWAITED
            if awaited
            else _BACKGROUND
            if background
            else _READ
        )
        if urgent or self._may_go_now(rank):
            self._hand_over(d, call, rank)
            return time_out(
                d,
                self.call_timeout,
                self._reactor,
                partial(self._timed_out, d, rank == _WRITE),
            )
        # Its call timeout starts once it is sent; until then, the bound on
        # waiting (module docstring).
        timer = CallTimeout(
            d,
            self.call_timeout * WAIT_LIMIT,
            self._reactor,
            partial(self._timed_out, d, rank == _WRITE),
        )
        self._queues[rank].append((d, call, session, self._reactor.seconds(), timer))
        return d

    def _timed_out(self, d: Deferred[Any], write: bool = False) -> None:
        # Counted, and its answer, if one comes, counted too (`_answered`).
        self.calls_timed_out += 1
        if write:
            self._writes_slow_at = self._reactor.seconds()
        if d in self._unanswered:
            self._timed_out_unanswered.add(d)
        else:
            self.calls_timed_out_unsent += 1

    def calls_waiting(self) -> dict[str, int]:
        """
        The calls in kazoo's hands and those waiting here for room, by
        kind (/debug/stats: what a view change's takeovers wait behind).
        """
        waiting = {
            kind: len(queue)
            for kind, queue in zip(_QUEUE_KINDS, self._queues, strict=True)
        }
        return {"in_flight": self._in_flight, **waiting}

    def writes_slow_at(self) -> float:
        """
        When a write of this client was last found slow (`SLOW_WRITE`):
        now while one is out that long, -inf if none ever was. A write
        slow, timed out or lost with its connection says this agent's
        path to ZooKeeper is slow (`sentinel.behind`).
        """
        now = self._reactor.seconds()
        oldest = next(iter(self._writes_out.values()), None)
        waiting = next((w[3] for w in self._queues[_WRITE] if not w[0].called), None)
        if any(t is not None and now - t >= SLOW_WRITE for t in (oldest, waiting)):
            self._writes_slow_at = now
        return self._writes_slow_at

    def calls_waiting_oldest(self) -> dict[str, float]:
        """
        How long the oldest call of each kind still waiting here for room
        has waited, in seconds (/debug/stats: what a read waits behind).
        """
        now = self._reactor.seconds()
        oldest = {}
        for kind, waiting in zip(_QUEUE_KINDS, self._queues, strict=True):
            # Those timed out stay until their turn comes: passed over.
            since = next((w[3] for w in waiting if not w[0].called), None)
            if since is not None:
                oldest[kind] = now - since
        return oldest

    def _in_session(self, session: int | None) -> bool:
        """
        Whether a write made for `session` may go now: it is the session
        heard last, and still kazoo's (module docstring).
        """
        if session is None or session != self._session or self.state != CONNECTED:
            return False
        # kazoo's own, read once (it may change on its thread at any time).
        client_id = None if self._client is None else self._client.client_id
        return client_id is not None and int(client_id[0]) == session

    def _may_go_now(self, rank: int) -> bool:
        """
        Whether a call of `rank` may be handed over now: there is room for
        it, and none of its kind or a kind served before it waits for room
        (a kind at its own bound does not hold the next back).
        """
        return self._has_room(rank) and not any(
            waiting and self._has_room(ahead)
            for ahead, waiting in enumerate(self._queues[: rank + 1])
        )

    def _has_room(self, rank: int) -> bool:
        return self._in_flight < CALLS_IN_FLIGHT and self._rank_in_flight[
            rank
        ] < _RANK_IN_FLIGHT.get(rank, CALLS_IN_FLIGHT)

    def _hand_over(
        self, d: Deferred[Any], call: Callable[[], Any], rank: int, waited: float = 0.0
    ) -> None:
        try:
            result = call()
        except Exception as e:
            d.errback(e)
            return
        self.time_spent.sent(rank, waited)
        self._in_flight += 1
        self._rank_in_flight[rank] += 1
        generation = self._generation
        now = self._unanswered[d] = self._reactor.seconds()
        if rank == _WRITE:
            self._writes_out[d] = now
            if waited >= SLOW_WRITE:
                self._writes_slow_at = now
        if self._silence_call is None:
            self._silence_call = self._reactor.callLater(
                self.session_timeout * NOT_ANSWERING_AFTER,
                self._silence_due,
                generation,
            )

        def linked(result: Any) -> None:
            # kazoo's worker thread: hand over, with the time the answer
            # came (`round_trip`), nothing else.
            heard = self._reactor.seconds()
            self._reactor.callFromThread(
                self._answered, generation, d, result, rank, heard
            )

        result.rawlink(linked)

    def _answered(
        self,
        generation: int,
        d: Deferred[Any],
        result: Any,
        rank: int,
        heard: float | None = None,
    ) -> None:
        round_trip = None
        if generation == self._generation:
            self._in_flight -= 1
            self._rank_in_flight[rank] -= 1
            sent = self._unanswered.pop(d, None)
            write_sent = self._writes_out.pop(d, None)
            if d in self._timed_out_unanswered:
                self._timed_out_unanswered.discard(d)
                self.calls_answered_after_timeout += 1
            now = self.last_heard = self._reactor.seconds()
            if write_sent is not None and now - write_sent >= SLOW_WRITE:
                self._writes_slow_at = now
            if sent is not None and result.successful():
                took = now - sent
                if self._fastest is None or took < self._fastest:
                    self._fastest = took
            if sent is not None and heard is not None:
                round_trip = max(0.0, min(heard, now) - sent)
                self.time_spent.answered(
                    rank, round_trip, max(0.0, now - max(heard, sent))
                )
        # The oldest waiting first: a call its callbacks make queues behind.
        self._hand_over_waiting()
        self.round_trip = round_trip
        try:
            _deliver(d, result)
        finally:
            self.round_trip = None

    def _hand_over_waiting(self) -> None:
        # The calls that waited for room, writes first, then reads of a
        # changed node, reads a verdict waits for, other reads, background
        # reads, each kind in order;
        # those timed out are gone. A kind at its own bound leaves the room
        # to the next.
        for rank, waiting in enumerate(self._queues):
            while waiting and self._has_room(rank):
                d, call, session, since, timer = waiting.popleft()
                if d.called:
                    continue
                if self._client is None or not self._client.connected:
                    d.errback(ConnectionLoss("not connected to ZooKeeper"))
                elif session is not None and not self._in_session(session):
                    d.errback(ConnectionLoss(_SESSION_CHANGED))
                else:
                    # Its call timeout counts from now (module docstring).
                    timer.restart(self.call_timeout)
                    waited = self._reactor.seconds() - since
                    self._hand_over(d, call, rank, waited)

    def _new_generation(self) -> int:
        # Another client, or none: the old one's calls no longer take room,
        # nor wait for an answer.
        self._generation += 1
        self._in_flight = 0
        self._rank_in_flight = [0] * len(_QUEUE_KINDS)
        self._unanswered = {}
        if self._writes_out:
            # Writes lost with the connection: the path failed them.
            self._writes_slow_at = self._reactor.seconds()
        self._writes_out = {}
        self._timed_out_unanswered = set()
        for call in (self._silence_call, self._threads_call):
            if call is not None and call.active():
                call.cancel()
        self._silence_call = self._threads_call = None
        self._probes = {}
        self._hand_over_waiting()
        return self._generation

    def create(
        self, path: str, data: bytes, ephemeral: bool = True, sequence: bool = False
    ) -> Deferred[str]:
        """
        Create a node and its missing parents; fires with its path (with
        `sequence`, ZooKeeper appends its counter to it: ten digits, or a
        minus sign and up to ten once the counter has wrapped, read by
        `sentinel.sequential`). The parents get the node's ACL too:
        ZooKeeper checks a delete against the parent's ACL, so that is what
        keeps other identities from deleting our nodes (and agents sharing
        a root must share credentials).
        """
        if ephemeral and not sequence:
            # Sent at the end of the turn, with the other writes made in it
            # (module docstring).
            write = _Write(Deferred(), path, data, create=True, session=self._session)
            return self._write(write)
        return self._create_now(path, data, ephemeral, sequence)

    def _create_now(
        self, path: str, data: bytes, ephemeral: bool, sequence: bool = False
    ) -> Deferred[str]:
        # One create, alone: kazoo makes the missing parents.
        return self._call(
            "create_async",
            path,
            data,
            acl=self.acl,
            ephemeral=ephemeral,
            sequence=sequence,
            makepath=True,
        )

    def set(self, path: str, data: bytes, version: int = -1) -> Deferred[Any]:
        """
        Set a node's data; fires with its new ZnodeStat. Sent at the end of
        the reactor's turn, with the other writes made in it (module
        docstring).
        """
        return self._write(
            _Write(Deferred(), path, data, version, session=self._session)
        )

    def _write(self, write: _Write) -> Deferred[Any]:
        client = self._client
        if client is None:
            return fail(ConnectionClosedError("not started"))
        if not client.connected:
            return fail(ConnectionLoss("not connected to ZooKeeper"))
        if not self._in_session(write.session):
            return fail(ConnectionLoss(_SESSION_CHANGED))
        self._queue_write(write)
        return time_out(write.d, self.call_timeout, self._reactor)

    def _queue_write(self, write: _Write) -> None:
        self._writes.append(write)
        if self._writes_call is None:
            self._writes_call = self._reactor.callLater(0, self._send_writes)

    def _end_writes(self) -> None:
        # Stopped: the writes still waiting for the end of the turn fail now.
        if self._writes_call is not None:
            self._writes_call.cancel()
            self._send_writes()

    def _send_writes(self) -> None:
        self._writes_call = None
        # The session writes may go to now, asked once for all of them.
        session = self._session if self._in_session(self._session) else None
        pending = []
        for write in self._writes:
            if write.d.called:
                continue  # Timed out.
            if self._client is not None and write.session != session:
                _settle(Failure(ConnectionLoss(_SESSION_CHANGED)), write.d)
                continue
            pending.append(write)
        self._writes = []
        start = 0
        while start < len(pending):
            end, size = start + 1, len(pending[start].data)
            while (
                end < len(pending)
                and end - start < WRITE_BATCH
                and size + len(pending[end].data) <= WRITE_BATCH_BYTES
            ):
                size += len(pending[end].data)
                end += 1
            self._send_batch(pending[start:end])
            start = end

    def _send_batch(self, batch: list[_Write]) -> None:
        if len(batch) == 1:
            self._send_alone(batch[0])
            return
        client = self._client
        if client is None:
            d = fail(ConnectionClosedError("not started"))
        else:
            try:
                transaction = client.transaction()
                for write in batch:
                    if write.create:
                        transaction.create(
                            write.path, write.data, acl=self.acl, ephemeral=True
                        )
                    else:
                        transaction.set_data(write.path, write.data, write.version)
            except Exception as e:
                d = fail(e)
            else:
                d = self._call_on(transaction, "commit_async")
        self._unsent_once_given_up(d, batch)
        d.addCallbacks(
            self._batch_answered,
            self._batch_failed,
            callbackArgs=(batch,),
            errbackArgs=(batch,),
        )

    def _send_alone(self, write: _Write) -> None:
        if write.create:
            d = self._create_now(write.path, write.data, ephemeral=True)
        else:
            d = self._call("set_async", write.path, write.data, write.version)
        self._unsent_once_given_up(d, [write])
        d.addBoth(_settle, write.d)

    def _unsent_once_given_up(self, d: Deferred[Any], batch: list[_Write]) -> None:
        # The call `d` sends `batch`; it may wait for room longer than its
        # writes' callers wait for them (a write sent again runs on its
        # first timeout): once all of them have given up, it is cancelled
        # if kazoo does not hold it yet, and never sent
        # (`_hand_over_waiting` passes over a call that has ended). One in
        # kazoo's hands is left to end as it will.
        def ended(result: Any) -> Any:
            if (
                not d.called
                and d not in self._unanswered
                and all(write.d.called for write in batch)
            ):
                self.calls_unsent_given_up += 1
                d.cancel()
            return result

        for write in batch:
            write.d.addBoth(ended)

    def _batch_answered(self, results: list[Any], batch: list[_Write]) -> None:
        if len(results) != len(batch):
            error = ValueError(f"{len(results)} results for {len(batch)} writes")
            self._batch_failed(Failure(error), batch)
            return
        for write, result in zip(batch, results, strict=True):
            if write.d.called:
                continue  # Timed out meanwhile.
            if isinstance(result, RolledBackError):
                # Accepted, and undone because a later write was refused:
                # again, with the next turn's writes.
                self._queue_write(write)
            elif isinstance(result, RuntimeInconsistency):
                # Not looked at, after the refused write: again with the
                # next turn's writes, and alone if it is left untried once
                # more, so that writes refused one by one (creates of nodes
                # another session holds) cost at most three sends each, not
                # one transaction per refusal.
                if write.untried:
                    self._send_alone(write)
                else:
                    self._queue_write(attr.evolve(write, untried=True))
            elif write.create and isinstance(result, NoNodeError):
                # Its parent is missing: alone, which makes it.
                self._send_alone(write)
            elif isinstance(result, Exception):
                _settle(Failure(result), write.d)
            else:
                _settle(result, write.d)

    def _batch_failed(self, failure: Failure, batch: list[_Write]) -> None:
        for write in batch:
            _settle(failure, write.d)

    def get(
        self,
        path: str,
        watch: Watcher | None = None,
        background: bool = False,
        ahead: bool = False,
        changed: bool = False,
        awaited: bool = False,
    ) -> Deferred[tuple[bytes, Any]]:
        """
        A node's (data, ZnodeStat). With `watch`, as `exists`'s, at the
        node's next change or deletion (the call fails if there is no node,
        and then nothing is watched). A `background` read waits behind the
        others, one `ahead` with the writes, one of a `changed` node (its
        watch fired with a change) ahead of the other reads, one `awaited`
        (a verdict waits for it) behind those and ahead of the ordinary
        reads (module docstring).
        """
        kinds = {"ahead": ahead, "changed": changed, "awaited": awaited}
        if watch is None:
            return self._call("get_async", path, background=background, **kinds)
        handover = _WatchHandOver(self, self._generation, watch)
        return self._call(
            "get_async", path, background=background, watch=handover, **kinds
        )

    def exists(
        self,
        path: str,
        watch: Watcher | None = None,
        background: bool = False,
        awaited: bool = False,
        ahead: bool = False,
    ) -> Deferred[Any]:
        """
        A node's ZnodeStat, or None. With `watch`, `watch(event)` is called
        once, on the reactor thread, at the node's next creation, change or
        deletion (or with an event of type NONE when kazoo drops its
        watches, on a lost connection); never after the client is replaced.
        Watching a path again with the same `watch` before it fires
        registers it once. A `background` read waits behind the others, one
        `awaited` ahead of the ordinary reads, one `ahead` with the writes
        (module docstring).
        """
        kinds = {"awaited": awaited, "ahead": ahead}
        if watch is None:
            return self._call("exists_async", path, background=background, **kinds)
        handover = _WatchHandOver(self, self._generation, watch)
        return self._call(
            "exists_async", path, background=background, watch=handover, **kinds
        )

    def get_acls(self, path: str) -> Deferred[tuple[list[Any], Any]]:
        """A node's (ACL entries, ZnodeStat), read in the background."""
        return self._call("get_acls_async", path, background=True)

    def delete(
        self, path: str, version: int = -1, urgent: bool = False
    ) -> Deferred[None]:
        """
        Delete a node; if `urgent`, past every call waiting (module
        docstring).
        """
        return self._call("delete_async", path, version, urgent=urgent)

    def ensure_path(self, path: str) -> Deferred[None]:
        """Create a persistent path and its parents if missing."""
        return self._call("ensure_path_async", path)

    def create_past_chroot(self, path: str) -> Deferred[str]:
        """
        Create the persistent node `path` as ZooKeeper names it, past the
        chroot in `hosts`, with the nodes' ACL, its parents not made: a
        write like the others, in this session (`sentinel.chroot`).
        """
        client = self._client
        if client is None:
            return fail(ConnectionClosedError("not started"))
        return self._call_on(Unrooted(client), "create_async", path, self.acl)

    def get_children(
        self,
        path: str,
        watch: Watcher | None = None,
        background: bool = False,
        awaited: bool = False,
    ) -> Deferred[list[str]]:
        """
        A node's children's names. With `watch`, as `exists`'s, at the next
        creation or deletion of a child (or of the node itself). A
        `background` read waits behind the others, one `awaited` ahead of
        the ordinary reads (module docstring).
        """
        if watch is None:
            return self._call(
                "get_children_async", path, background=background, awaited=awaited
            )
        handover = _WatchHandOver(self, self._generation, watch)
        return self._call(
            "get_children_async",
            path,
            background=background,
            awaited=awaited,
            watch=handover,
        )

    def children_and_stat(
        self, path: str, watch: Watcher, ahead: bool = False
    ) -> Deferred[tuple[list[str], Any]]:
        """
        A node's children's names and its ZnodeStat, read together (its
        ``cversion`` counts every creation and deletion of a child up to
        this listing); `watch` as `get_children`'s; `ahead` with the writes.
        """
        handover = _WatchHandOver(self, self._generation, watch)
        return self._call(
            "get_children_async", path, watch=handover, include_data=True, ahead=ahead
        ).addCallback(tuple)

    def replace(
        self, path: str, version: int, data: bytes, sequential: str | None = None
    ) -> Deferred[str]:
        """
        Take a node over in one transaction: delete it at `version`, then
        create it again as an ephemeral node of our session holding `data`,
        so that a reader never finds it missing. With `sequential` (a
        discovery member's prefix), the node created is a sequential one
        there instead: the endpoint is never missing nor listed twice. Fires
        with the path created; fails with the first refusal
        (`BadVersionError` when it was written meanwhile, `NoNodeError`
        when it is gone) and then changes nothing.
        """
        return self._take_over(path, version, data, sequential, None)

    def replace_with_member(
        self, path: str, version: int, data: bytes, member: MemberMove
    ) -> Deferred[str]:
        """
        `replace`, and in the same transaction the discovery member that
        lists the node's instance (`sentinel.takeover`): the previous
        holder's member deleted at the version read, ours created under
        the prefix, so that readers find the endpoint listed once
        throughout, as they find the node. Fires with our member's path;
        fails as `replace` does, with `MemberRefused` when only the
        member's delete was refused (the node's part is then to be tried
        alone).
        """
        return self._take_over(path, version, data, None, member)

    def _take_over(
        self,
        path: str,
        version: int,
        data: bytes,
        sequential: str | None,
        member: MemberMove | None,
    ) -> Deferred[str]:
        """`replace` (`sequential`), or `replace_with_member` (`member`)."""
        client = self._client
        if client is None:
            return fail(ConnectionClosedError("not started"))
        try:
            transaction = client.transaction()
            transaction.delete(path, version)
            transaction.create(
                path if sequential is None else sequential,
                data,
                acl=self.acl,
                ephemeral=True,
                sequence=sequential is not None,
            )
            if member is not None:
                transaction.delete(member.replaced, member.version)
                transaction.create(
                    member.prefix,
                    member.data,
                    acl=self.acl,
                    ephemeral=True,
                    sequence=True,
                )
        except Exception as e:
            return fail(e)
        committed = _committed if member is None else _committed_pair
        return self._call_on(transaction, "commit_async").addCallback(committed)


@attr.frozen
class MemberMove:
    """A discovery member replaced in a node's takeover (`replace_with_member`)."""

    replaced: str
    version: int
    prefix: str
    data: bytes


class MemberRefused(Exception):
    """The member's part of `replace_with_member` was refused: `refusal`."""

    def __init__(self, refusal: Exception) -> None:
        super().__init__(f"the member's delete was refused: {refusal!r}")
        self.refusal = refusal


def _committed_pair(results: list[Any]) -> str:
    """
    `_committed` of a node and its member's transaction: a refusal of the
    node's two operations raised as it is, of the member's as
    `MemberRefused`.
    """
    for index, refusal in enumerate(results):
        if isinstance(refusal, Exception) and not isinstance(refusal, RolledBackError):
            raise refusal if index < 2 else MemberRefused(refusal)
    return _committed(results)


class _ReconnectGate:
    """
    Whether a client may still reconnect: kazoo's connection retry asks
    `closed` (on its connection thread) every 0.1 s between attempts, and
    gives up once it says so.
    """

    def __init__(self) -> None:
        self._closed = threading.Event()

    def close(self) -> None:
        """No reconnection from now on (any thread)."""
        self._closed.set()

    def closed(self) -> bool:
        """Whether the client was left or replaced."""
        return self._closed.is_set()


@attr.frozen
class _Write:
    """
    A set (at `version`) or a create of an ephemeral node, waiting for the
    end of the turn, and who waits for its answer.
    """

    d: Deferred[Any]
    path: str
    data: bytes
    version: int = -1
    create: bool = False
    # Sent in a transaction that a write before it made fail.
    untried: bool = False
    # The session it is made for (module docstring).
    session: int | None = None


def _without(hosts: str, servers: set[tuple[str, int]]) -> str | None:
    """
    `hosts` (kazoo's form) without `servers`, or None if that leaves none
    or none of them is listed.
    """
    listed, chroot = collect_hosts(hosts)
    kept = [(host, port) for host, port in listed if (host, port) not in servers]
    if not kept or len(kept) == len(listed):
        return None
    spelled = ",".join(
        f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in kept
    )
    return spelled + (chroot or "")


def _session_subject(session: int | None) -> str:
    """
    What a close or a leave is of: the session by its id, as ZooKeeper's
    own log writes it, or the client that never had one (an agent stopped
    before ZooKeeper answered said "ZooKeeper session none closing").
    """
    if session is None:
        return "ZooKeeper client (no session yet)"
    return f"ZooKeeper session {session:#x}"


def _settle(result: Any, d: Deferred[Any]) -> None:
    # Unless it has fired already (a write that timed out meanwhile).
    if not d.called:
        if isinstance(result, Failure):
            d.errback(result)
        else:
            d.callback(result)


@attr.frozen
class _WatchHandOver:
    """
    A watch callback for kazoo. Equal for the same client generation and
    watcher: kazoo keeps a set of callbacks per path until the watch fires,
    so watching a path again and again adds nothing to it.
    """

    zk: ZooKeeper
    generation: int
    watcher: Watcher

    def __call__(self, event: WatchedEvent) -> None:
        # kazoo's callback thread: hand over, nothing else.
        zk = self.zk
        generation, watcher = self.generation, self.watcher
        zk._reactor.callFromThread(zk._watch_fired, generation, watcher, event)


def _committed(results: list[Any]) -> str:
    """A transaction's path, or its first refusal raised (not the rollbacks)."""
    refusals = [r for r in results if isinstance(r, Exception)]
    for refusal in refusals:
        if not isinstance(refusal, RolledBackError):
            raise refusal
    if refusals:
        raise refusals[0]
    return str(results[-1])


def _deliver(d: Deferred[Any], result: Any) -> None:
    """
    Fire `d` with kazoo's answer `result`, unless it has fired already;
    an error of ZooKeeper's is delivered without its traceback, whether
    `d` takes it or not (`_without_traceback`).
    """
    if not result.successful():
        _without_traceback(result.exception)
    if d.called:
        return
    if result.successful():
        d.callback(result.value)
    else:
        d.errback(result.exception)


def _without_traceback(error: BaseException | None) -> None:
    """
    Drop the traceback of ZooKeeper's answer `error` (a `KazooException`)
    and of those it was raised from. kazoo's ``create_async`` raises a
    refusal inside the completion that holds its result and stores it
    there with its traceback: the result, the error and kazoo's frames
    form a cycle that reference counting never frees. The agent freezes
    its collector while a group's takeovers go on (`sentinel.process`),
    so a few hundred such answers per ZooKeeper outage, with the
    Deferreds and calls they hold, waited for a forced full collection
    and set the allocator's high-water mark (BENCHMARKS.rst). The frames
    are kazoo's own thread's, of no use to a reader of the error; any
    other exception (a bug) keeps its traceback.
    """
    seen = 0
    while isinstance(error, KazooException) and seen < _CHAINED_ERRORS:
        error.__traceback__ = None
        error = error.__cause__ or error.__context__
        seen += 1

"""
Whether the ZooKeeper session this process holds is its alone (DESIGN.md
section 8, "Restarts"), with a state_dir.

Two live processes hold one session when one's state file is a copy of the
other's: a cloned VM or container image, a restored backup. ZooKeeper
gives a session one connection, so each one's reconnection drops the
other's, and they took it from each other for good (measured: about 370
reconnections per process in 40 s, 38 writes/s to four nodes, ``/healthz``
flipping); a clone that knew fewer instances deleted the other's nodes in
its sweep. They share one session, so the twin rule (`sentinel.holders`:
another live session holds our agent node) never fires.

So each process names itself in its agent node (``token``: the token its
state file names it by), and after every connection reads that node
before its own writes (the read is sent first, and ZooKeeper answers a
session's requests in order). The node in our session naming another
token, once a write of ours to it was acknowledged in this session, means
another process wrote it since, in our session. The state file says first
whether that is a newer process on the same state_dir (`sentinel.handoff`:
superseded). If not, and it is not the process whose session this one took
at start (which is on its way out: it reads the file and stops), it holds
a copy of the state file: this process refuses it, naming its token in the
agent node (``refused``), and keeps the session. A process that finds its
own token refused stops as a twin does (`on_refused`: one line, exit
status 78), touching neither the session nor the nodes, which are the
older process's. The older process keeps the session because it wrote the
node first: the copy reads the node before it writes, so it cannot refuse
the process it copied.

The agent node is anyone's to write without ``auth_file``: a client that
wrote our token into its ``refused`` (the token is in the node, for
anyone to read) stopped the agent at its next connection (a blip of
ZooKeeper), for good (status 78). So a refusal counts only if another
process holds our session: a catalog part in our agent's name, not
ours, in our session (an ephemeral node, which no client of another
session can make: `another_process`; the older process wrote its
catalog before the copy started, and the copy reads before it writes).
Without one the refusal is another client's write of our agent node:
reported as one (`on_forged`: logged, named in /healthz, the node written
again), and the agent goes on. A process that has published no catalog
of its own (not a group's member, or a copy before its first write,
whose token nobody has read yet) has nothing to tell them apart by, and
takes a refusal as before, unless the refusing token has a form no
process's has (`session.is_process_token`).

Another token in the node, naming no refusal, is the same question from
the other side: the older process reads it at its reconnection, most
often before the copy (whose connection took ours a moment before) has
published a catalog. So the line says what is known: with another
process's catalog in the session, a copy (an error: the conflict);
without one, another client's write or a copy that has published nothing
yet (a warning that says both); the token is refused either way, which
stops a copy and costs nothing if it names no one. Before, every such
token was logged as a copy of the state file, also one another client
wrote, and /healthz said nothing. Readers read another process in our
agent node meanwhile, so /healthz names it as written by another client
(`on_forged`) in both cases. A token of a form no process's has is
another client's for sure: said so, and never refused (it would be
written into our agent node, and two tokens of half a megabyte each make
it larger than ZooKeeper's default limit on a node, 1 MB).

Between connections, another write of our agent node is found at our
next set of it (each heartbeat), which fails at the version we wrote:
the writer reads the node and hands it here (`written_over`). Our own
token there is another client's write for sure (no other process has
it): named. Another process's token is judged as at a connection; a
predecessor on its way out writes its own, and is let be. Before, such a
write was written over at the heartbeat and named nowhere: what another
client wrote between two connections went unsaid. The lines that say
another client (or perhaps a copy) wrote the node come once a minute at
most while it goes on, with the count since (a client writing a new
token before every heartbeat would make one every 10 s); /healthz names
every one.

The sweep after a reattach deletes nodes, so it waits until the session
is ours alone (`alone`): our agent node written in it, then the connection
kept for `ALONE_AFTER` seconds. Another process on the session reconnects
within a fraction of a second of losing its connection, which takes ours.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kazoo.exceptions import NoNodeError
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from sentinel.catalog import parse_catalog_node_name
from sentinel.documents import session_holder, session_holder_fields
from sentinel.guard import LOOP_LOG_EVERY, Meddling
from sentinel.handoff import SessionHandoff
from sentinel.nodes import LOG_NAMESPACE
from sentinel.session import is_process_token
from sentinel.zk import CONNECTED, ZooKeeper

log = Logger(namespace=LOG_NAMESPACE)

# Seconds connected, after our agent node was written, before the session
# is taken to be ours alone: another process on it reconnects, and so
# takes our connection, within 0.08-0.15 s of losing its own (measured:
# kazoo, a local ZooKeeper). Members of a reattached process wait for it.
ALONE_AFTER = 1.0
# Tokens refused, newest last: a bound whatever copies come and go.
REFUSED_KEPT = 8
# Catalog parts in our agent's name, not ours, asked about when a refusal
# or another token is read: a bound on the reads, whatever a client
# creates there.
CATALOGS_ASKED = 16


class SessionSharing:
    """Finds another process on our session (module docstring)."""

    def __init__(
        self,
        reactor: Any,
        zk: ZooKeeper,
        agent_path: str,
        handoff: SessionHandoff,
        on_refused: Callable[[str], None],
        rewrite_agent_node: Callable[[], None],
        on_alone: Callable[[], None],
        own_catalogs: Callable[[], set[str]],
        on_forged: Callable[[], None],
    ) -> None:
        """
        @param on_refused: told, once, why this process must stop (another
            process refused it).
        @param rewrite_agent_node: marks the agent node to be written (it
            names a newly refused token).
        @param on_alone: told when the session is found to be ours alone.
        @param own_catalogs: the names of this process's catalog parts
            (none before it publishes one).
        @param on_forged: told when the agent node says this process was
            refused, and no other process holds the session, or names
            another process: another client (or a copy of this process)
            wrote it.
        """
        self._reactor = reactor
        self._zk = zk
        self._agent_path = agent_path
        self._handoff = handoff
        self._on_refused = on_refused
        self._rewrite_agent_node = rewrite_agent_node
        self._on_alone = on_alone
        self._own_catalogs = own_catalogs
        self._on_forged = on_forged
        root, _, self._agent_id = agent_path.rsplit("/", 2)
        self._catalogs = f"{root}/catalogs"
        self.token = handoff.owner.token
        self.refused: list[str] = []
        self.refused_by: str | None = None
        # The session in which a write of our agent node was acknowledged,
        # and the one found to be ours alone.
        self._written_in: int | None = None
        self._alone_in: int | None = None
        self._alone_call: IDelayedCall | None = None
        # The last write of our agent node judged (`_read_node`): its
        # session and mzxid.
        self._judged: tuple[int, int] | None = None
        # Writes of our agent node by another client (or perhaps a copy)
        # found, for their lines' pace (`_written_by_another`).
        self._written = Meddling(reactor, LOOP_LOG_EVERY, 1)

    def fields(self) -> dict[str, Any]:
        """What the agent node says of this process (`session_holder_fields`)."""
        return session_holder_fields(self.token, self.refused)

    @property
    def alone(self) -> bool:
        """Whether the session we are connected to is known to be ours alone."""
        session = self._zk.session_id
        return session is not None and session == self._alone_in

    def state_changed(self, state: str) -> None:
        """A `ZooKeeper` state listener, added before the resync's."""
        self._cancel_alone()
        session = self._zk.session_id
        if state != CONNECTED or session is None or self.refused_by is not None:
            return
        d = self._zk.get(self._agent_path)
        d.addCallbacks(self._read, self._unread, callbackArgs=(session,))
        d.addErrback(lambda f: log.failure("reading our agent node", f))

    def agent_node_written(self) -> None:
        """A write of our agent node was acknowledged."""
        session = self._zk.session_id
        if session is None:
            return
        self._written_in = session
        if session != self._alone_in and self._alone_call is None:
            self._alone_call = self._reactor.callLater(
                ALONE_AFTER, self._now_alone, session
            )

    # What the node says

    def _read(self, result: tuple[bytes, Any], session: int) -> None:
        data, stat = result
        if self._zk.session_id != session or stat.ephemeralOwner != session:
            # Reconnected since (the next read decides), or not our node:
            # another session's hold is `sentinel.holders`' to judge.
            return
        self._read_node(data, stat, session)

    def _read_node(self, data: bytes, stat: Any, session: int) -> None:
        """
        What our agent node in `session` says (module docstring), once
        per write of it (at a connection, then at our resync's set).
        """
        if self._judged == (session, stat.mzxid):
            return
        self._judged = (session, stat.mzxid)
        token, refused, pid = session_holder(data)
        if token is None or token == self.token:
            return
        if self.token in refused and not is_process_token(token):
            # No process's token refused us: another client's write.
            self._refusal(False, session, pid)
        elif self.token in refused and not self._own_catalogs():
            self._refusal(True, session, pid)
        elif self.token in refused:
            d = Deferred.fromCoroutine(self.another_process(session))
            d.addCallbacks(self._refusal, self._unread, callbackArgs=(session, pid))
            d.addErrback(lambda f: log.failure("checking a refusal", f))
        elif (
            session == self._written_in
            and token not in self.refused
            and token != self._handoff.predecessor
        ):
            self._handoff.superseded_now().addCallback(
                self._another, session, token, pid
            ).addErrback(lambda f: log.failure("reading the state file", f))
        elif token in self.refused:
            # Still writing before it reads our refusal: say it again.
            self._rewrite_agent_node()

    def written_over(self, data: bytes, stat: Any) -> None:
        """
        A set of our agent node found it written since, not by a set of
        ours (`sentinel.writer`), holding `data` at `stat`, in our
        session: our own
        token there is another client's write (no other process has it),
        named (`on_forged`, whose line says so); another process's is
        judged as at a connection (`_read`); none, an older version's
        predecessor's, perhaps: not judged.
        """
        session = self._zk.session_id
        if session is None or self.refused_by is not None:
            return
        token = session_holder(data)[0]
        if token == self.token:
            self._on_forged()
        elif token is not None:
            self._read_node(data, stat, session)

    async def another_process(self, session: int) -> bool:
        """
        Whether another process holds `session`: a catalog part in our
        agent's name that is not this process's, held by `session`.
        """
        zk = self._zk
        try:
            children = await zk.get_children(self._catalogs, background=True)
        except NoNodeError:
            return False
        mine = self._own_catalogs()
        asked = 0
        for child in children:
            part = parse_catalog_node_name(child)
            if part is None or part.agent_id != self._agent_id or child in mine:
                continue
            if asked == CATALOGS_ASKED:
                break
            asked += 1
            stat = await zk.exists(f"{self._catalogs}/{child}")
            if stat is not None and stat.ephemeralOwner == session:
                return True
        return False

    def _refusal(self, shared: bool, session: int, pid: int | None) -> None:
        if self._zk.session_id != session or self.refused_by is not None:
            return  # Reconnected since: the next read decides.
        if shared:
            self._handoff.superseded_now().addCallback(
                self._refused, session, pid
            ).addErrback(lambda f: log.failure("reading the state file", f))
            return
        self._written_by_another(
            "{path} says another process (pid {pid}) refused this one, but no"
            " other process holds session {session}: another ZooKeeper"
            " client wrote it, not a copy of this process; going on",
            pid=pid,
            session=f"{session:#x}",
        )

    def _written_by_another(self, text: str, **fields: Any) -> None:
        """
        Our agent node written by another client, or perhaps a copy, as
        `text` (a log format, with `fields` and ``path``) says: named
        (`on_forged`), and logged once per `LOOP_LOG_EVERY` while it goes
        on, with the count since (a client writing a new token before
        each heartbeat: a line every 10 s).
        """
        unlogged = self._written.seen(1, self._agent_path)
        if unlogged is not None:
            log.warn(
                text + "{since}",
                path=self._agent_path,
                since=f" ({unlogged} more since the last such line)"
                if unlogged
                else "",
                **fields,
            )
        self._on_forged()

    def _unread(self, failure: Failure) -> None:
        # No agent node (nothing to tell), or the connection went again
        # (the next connection reads again).
        return None

    def _another(
        self, superseded: bool | None, session: int, token: str, pid: int | None
    ) -> None:
        if superseded is not False or token in self.refused:
            # A newer process on our state_dir (handoff stops us), or the
            # file unreadable: not knowing is no reason to refuse.
            return
        if not is_process_token(token):
            # No process of this agent names itself so: another client's
            # write, and never written back into ours (`refused`).
            self._written_by_another(
                "{path} names another process (pid {pid}) in session"
                " {session} by a token no process of this agent makes:"
                " another ZooKeeper client wrote it, not a copy of this"
                " process; written again, going on",
                pid=pid,
                session=f"{session:#x}",
            )
            return
        d = Deferred.fromCoroutine(self.another_process(session))
        d.addCallbacks(self._refuse, self._unread, callbackArgs=(session, token, pid))
        d.addErrback(lambda f: log.failure("checking another token", f))

    def _refuse(self, shared: bool, session: int, token: str, pid: int | None) -> None:
        """
        Refuse `token`, found in our agent node in `session` (module
        docstring), `shared` if another process's catalog is in it too.
        """
        if self._zk.session_id != session or token in self.refused:
            return
        self.refused = [*self.refused, token][-REFUSED_KEPT:]
        self._cancel_alone()
        if shared:
            log.error(
                "ZooKeeper conflict: session {session} is also used by another "
                "process (pid {pid}), whose state file is a copy of {path} (a "
                "cloned image, a restored backup?): refusing it; it stops and "
                "this process keeps the session",
                session=f"{session:#x}",
                pid=pid,
                path=self._handoff.state_file.path,
            )
            # Readers read another process's pid in our agent node meanwhile.
            self._on_forged()
        else:
            self._written_by_another(
                "{path} names another process (pid {pid}) in session {session}"
                " since this process wrote it, and no other process's catalog"
                " is in the session: another ZooKeeper client wrote it, or a"
                " copy of {state} (a cloned image, a restored backup?) holds"
                " the session and has published nothing yet; refusing it (a"
                " copy stops at its next connection), going on",
                pid=pid,
                session=f"{session:#x}",
                state=self._handoff.state_file.path,
            )

    def _refused(self, superseded: bool | None, session: int, pid: int | None) -> None:
        if superseded or self.refused_by is not None:
            return
        self.refused_by = (
            f"session {session:#x} is in use by another live process "
            f"(pid {pid}) of agent id {self._handoff.purpose.agent_id!r}, which "
            f"refused this one: {self._handoff.state_file.path} is a copy of its "
            f"state file (a cloned image, a restored backup?)"
        )
        self._cancel_alone()
        self._on_refused(self.refused_by)

    # Alone

    def _now_alone(self, session: int) -> None:
        self._alone_call = None
        if self._zk.session_id == session and self.refused_by is None:
            self._alone_in = session
            self._on_alone()

    def _cancel_alone(self) -> None:
        call, self._alone_call = self._alone_call, None
        if call is not None and call.active():
            call.cancel()

"""
The ZooKeeper session handed from one process to the next (DESIGN.md
section 8, "Restarts"), through `sentinel.session`'s state file.

At start, when the state file holds a session for this agent, the process
first rewrites the file naming itself as the session's holder, so that an
older process still running learns it was superseded, then reattaches
(`client_id`). If that write fails it does not reattach: an older process
would take the session back, and the two would take it from each other
for good. A session that expired meanwhile gives way to a new one; either
way the log and ``/debug/stats`` say whether the session was reattached,
and why not.

A session is kept alive by reattaching only while checks back its nodes:
the file says until when a process holding it checked its instances
(``checked_at``: the session's start, then the checks, written again at
most every quarter of the session timeout, and only over this process's
own file; a write that failed is not tried again at every check), and
only as far as ZooKeeper has what they found (`checked_through`: while a
node's newer state is not acknowledged, up to when it was marked, or,
before this process wrote it, what the file said; the file is written
again once every node is, `caught_up`), and no later than the last
check that bore out the status of an instance whose checks since all
contradict it (`sentinel.unbacked`: a restart goes on from the status a
node says, and failures fewer than ``fall`` in each process of a crash
loop otherwise renewed the file while a killed Redis stayed up, or
successes fewer than ``rise`` while a live one stayed down). On a session
inherited, the checks count once each instance it observes was checked
since the file's ``checked_at`` (`_round_done`), by this process or by
the previous ones, which the file names until then (``covered``,
`sentinel.coverage`): until then, the ones not checked yet are as the
previous process left them. A clean stop that hands the session on
writes the file with its last checks (`save_checks`, from
`sentinel.stopping`), and says so (``checked_at_exact``): the next
process counts no lag off it when it judges how long the nodes it has
not checked yet went unchecked (`unchecked_for`). Before, any check
renewed the file, written or not, of one instance or all: in a crash
loop whose processes each died before their writes went out (a slow
link to ZooKeeper lets 8 writes go at first), or before the checks
spread over the interval reached a dead Redis, it stayed published up
for as long as it went on. One
unchecked for longer than 1.5 times the session timeout (each process of
a crash loop killed before its first check, say; a restart within the
session's life always finds less, the file's lag included) is not
claimed but closed (`stale`: the publisher closes it, so that its nodes
go at once), and a new session opened: else a dead Redis stayed
published up for as long as the loop went on. The session timeout here
is the one ZooKeeper granted the process that held the session, which
the file says (``session_timeout``; a file without it, an older
version's, is judged by the one asked for): ZooKeeper bounds the one
asked (by default to 2 to 20 of its ticks), and judged by the one asked,
a session asked 2 s and granted 8 was closed while it lived (its nodes
missing for about 2 s at a restart 5 s after a ``kill -9``), one asked
30 s and granted 4 kept 45 s unchecked.

A state file this version cannot wholly read, though it names a session
for this agent (another version's: a format version this one does not
know, a field it writes otherwise; a downgrade, say), is not reattached
by: what this version cannot read may be what its writer relied on. Its
session is closed as a predecessor's is (below), once the process that
left it is gone; left to expire, its nodes stayed, unchecked, for the
session timeout, while this process waited for them.

A session left in the state_dir under another agent id (``agent_id``
changed between two processes), or for another root or chroot
(``zookeeper.root`` or the chroot in ``zookeeper.hosts`` changed), is
closed the same way once the process that left it is gone (its pid no
longer runs, or is this process's own: a container's first process): its
agent node and catalog would otherwise make a dead agent a live group
member, holding instances nobody checks, until the session expired; at
the old root, its nodes would stay there, unchecked, as long. It is not
reattached to, for a process that still runs under another pid namespace
would lose its session for good; closed, such a process opens a new one.
While that process runs (two agents on one state_dir, which they must not
share), the session is left alone.

Whenever the session changes, and before a discovery member is first
created under a parent (`record_parent`), the file is rewritten: one write
at a time, the newest state queued behind it. When the connection drops,
the file is read again: if it names this session with another holder, a
newer process reattached to it, and `on_superseded` is told, once; the
publisher then stops without touching the nodes, and never takes the
session back. A session other than the one this process last wrote (its
own lost, expired while it was paused, and a new one opened) is written
only if the file names no other process that runs: one that does took
this state_dir over meanwhile, reattached to this one's session or on a
session of its own, and this one is superseded as above. Before, a process
back from a SIGSTOP past the session timeout wrote its new session over
the newer one's, which lost its handoff ("no longer holds this process's
ZooKeeper session": its stop deleted every node) while this one went on
until it found the agent node held and stopped as a twin. A file naming a
process that no longer runs is written over, as `verify` does, and so
is one naming a process that runs but whose session does not hold this
agent's node (one read, `holds_agent_node`): it publishes nothing, the
loser of a double start on its way out as a twin, or hung, and is no
newer process. Before, the winner of a double start whose session
expired while the loser still ran took the loser for a newer process and
stopped too: nobody published. A process that took the nodes over (the
loser, once the winner's session expired) holds the agent node, and
this one is superseded as before; so it is when that read fails. The
session this process holds when it learns it was superseded, unless it
is the one the newer process holds (its own, opened after the first was
lost), is `own_session`: the publisher closes it at once. Nothing of the
newer process's is in it; left open, it lived for the session timeout
after the exit, with whatever this process made in it meanwhile.

A stop leaves the session open only if the file holds it (`blocked` says
why not otherwise: its write failed, a disk full say, or the session
changed since): a handoff the next process cannot take would leave the
nodes stale until the session expires, so the stop deregisters instead.
So does a stop on a session this process opened before it made any
check (a crash loop's process that closed a stale session, say): it holds no
instance node, only the agent node and catalog that keep this agent a
group member, primary of instances nobody would check or write until
the session expired (measured: 15 of 60 nodes missing for 4.7--4.9 s,
session timeout 4 s); closed, the others take them over at once.
A write that failed is tried again at each heartbeat (`retry`): once the
disk has room or the process has descriptors again, the handoff is back.
The file is read again at each heartbeat and before a stop (`verify`):
removed, not JSON (truncated or corrupt: it names nobody), over the
size read (a 1 GB file put in its place: no agent writes one), or naming
another session of this agent id whose process no longer runs (after a
double start, the process that lost and exited as a twin may have
written it last), it is written again; a read that fails
(out of file descriptors, no answer in time) says nothing of what it
holds: it is logged once until a read works again, and what was last
read stands (it was taken for another agent's overwrite, and the next
stop deregistered).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Container
from datetime import UTC, datetime
from typing import Any

import attr
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from sentinel.coverage import FirstRound
from sentinel.files import TooLarge
from sentinel.privatefiles import NoStateFile, NotRead, StateFileRefused
from sentinel.session import (
    Corrupt,
    HeldByAnother,
    NotHeld,
    Owner,
    SessionPurpose,
    StateFile,
    StoredSession,
)

log = Logger()

# Why a session was not reattached, besides what the state file said.
EXPIRED = "the session had expired"
UNREACHABLE = "ZooKeeper was unreachable at start for longer than the session timeout"
NOT_CLAIMED = "the state file could not be written"
# A session is closed rather than reattached once unchecked for this many
# session timeouts: the file says when checks ran with a lag of up to a
# quarter of the session timeout (`REFRESH_SHARE`), so a process started
# while the session lives (within the session timeout of the last
# process's end) always finds less.
UNCHECKED_SHARE = 1.5
# The file's ``checked_at`` is written again once this share of the
# session timeout went by since the last attempt, whether it worked or not
# (a write that failed is retried by `retry`, at the heartbeat).
REFRESH_SHARE = 0.25
UNCHECKED = (
    "no process checked its instances for {seconds:.1f} s, over "
    f"{UNCHECKED_SHARE:g} times the session timeout"
)


class SessionHandoff:
    """
    The state file's side of the ZooKeeper session: what to reattach to at
    start, what to record as the session changes, and whether a newer
    process took the session over.
    """

    def __init__(
        self,
        reactor: Any,
        state_file: StateFile,
        purpose: SessionPurpose,
        left: StoredSession | str,
        owner: Owner | None = None,
        session_timeout: float = 10.0,
        running: Callable[[int], bool] | None = None,
    ) -> None:
        """
        @param left: the session the state file held at start, or why none
            is usable (``no state file``...).
        @param owner: this process (a fresh `Owner` if None).
        @param session_timeout: the session timeout asked for: what a
            session is judged by until ZooKeeper grants one, and a session
            left by a version that did not say what it was granted.
        @param running: whether a pid is a process that runs (`_running`).
        """
        self._reactor = reactor
        self.state_file = state_file
        self.purpose = purpose
        self.owner = owner if owner is not None else Owner.this_process()
        # The pid the handoff was made in: an owner naming it follows the
        # process that runs the agent (`started`).
        self._made_in = os.getpid()
        self.left = left if isinstance(left, StoredSession) else None
        # Whether the first session was the one left by the previous
        # process (None until connected), and why not.
        self.reattached: bool | None = None
        self.why_not: str | None = None if self.left else str(left)
        self.on_superseded: Callable[[str], None] | None = None
        # Told, at the first connection, of the session the previous
        # process left when it is not the one connected and its nodes went
        # with it (it expired, or was closed as stale), and why.
        self.on_left_gone: Callable[[int, str], None] = lambda session, why: None
        self.superseded: str | None = None
        # Superseded while on a session the newer process does not hold
        # (this one's own, opened after its first was lost): closed at
        # once by the publisher, for nobody else will use it.
        self.own_session: tuple[int, bytes] | None = None
        self._session_timeout = session_timeout
        # The session timeout ZooKeeper granted the session we hold (the
        # file says it), None while unknown.
        self._granted: float | None = None
        self._running = running if running is not None else _running
        # The session left, if no process checked its instances for longer
        # than the session timeout, or if it is a predecessor's under
        # another agent id: closed at start, never reattached.
        self.stale: StoredSession | None = None
        # Until when checks back the session's nodes (epoch seconds), and
        # what the state file says of it, as last written.
        self._checked_at: float | None = None
        # Up to when nodes this process has not written yet are backed by
        # checks: the session's start, or what the previous process's file
        # said, and whether that is exact (a stop wrote it, `save_checks`)
        # or may lag the checks it says by a refresh's interval.
        self._since: float | None = None
        self._since_exact = False
        # Whether a stop has written the file with its last checks: from
        # then on no check follows, and ``checked_at`` does not lag them.
        self._stopped = False
        # Up to when the session's nodes say what checks found, given the
        # last check and `_since` (`WriteQueue.checked_through`); None:
        # up to the last check.
        self.checked_through: Callable[[float, float], float] | None = None
        # The oldest last check that bore out the status of an instance
        # whose checks since contradict it (`sentinel.unbacked`), None if
        # there is none: the file says no later.
        self.unbacked_since: Callable[[], float | None] | None = None
        # Whether the file's last ``checked_at`` was held back: written
        # again once ZooKeeper has every node (`caught_up`), or once the
        # first round is done.
        self._behind = False
        # The instances this process observes (the monitor's), and, on a
        # session inherited, those checked since the file's ``checked_at``
        # (the previous processes' carried, `sentinel.coverage`), until each
        # was checked once (`_round_done`).
        self.observed: Callable[[], Collection[str]] | None = None
        self._first_round: FirstRound | None = None
        # Whether this process's check of an instance backs its nodes
        # (ZooKeeper holds what it found, and it does not contradict the
        # published status): only such checks are carried.
        self.backs: Callable[[str], bool] | None = None
        # Waiting for the file to say this process's checks
        # (`first_round_written`).
        self._round_waiters: list[Deferred[None]] = []
        # When ``checked_at`` was last written, or a refresh of it tried:
        # one that fails (a disk full, another process's file) is not tried
        # again at every check.
        self._refresh_tried: float | None = None
        # Whether a write queued is more than a refresh of `_checked_at`.
        self._rewrite = False
        # The session we hold now, and the discovery parents recorded for it.
        self._session: tuple[int, bytes] | None = None
        self._parents: tuple[str, ...] = ()
        # The parents recorded since the last write, and what says which of
        # the others the session still uses: asked once per write, not once
        # per parent (2,000 services each asked it over 2,000 members,
        # about a second of the reactor's time at start).
        self._new_parents: set[str] = set()
        self._in_use: Callable[[], Container[str]] | None = None
        # Whether this process checked an instance yet; and a session it
        # opened (not inherited) before it did: one that holds no instance
        # node to keep.
        self._checked_once = False
        self._unchecked: tuple[int, bytes] | None = None
        self._connected_once = False
        self._claimed = False
        # One write at a time: its waiters, and those of the next one.
        self._writing = False
        # Whether the write in flight only refreshes this process's own file.
        self._refreshing = False
        self._dirty = False
        self._waiting: list[Deferred[bool]] = []
        # Whether the next write is the last one again, its waiters with
        # it; and the session written over a file naming a process that
        # runs but publishes nothing (`_named_publishing`).
        self._again = False
        self._outlived: tuple[int, bytes] | None = None
        # Whether a session holds this agent's node (the publisher's read).
        self.holds_agent_node: Callable[[int], Deferred[bool]] | None = None
        self._checking = False
        self.writes = 0
        self.last_error: str | None = None
        # The session the file holds, as far as this process wrote it; why
        # it does not, found when it was read again (`verify`).
        self._recorded: tuple[int, bytes] | None = None
        self.overwritten: str | None = None
        self._verifying = False
        # Why the last read failed (the file unknown, not overwritten),
        # until one works.
        self.unread: str | None = None

    @property
    def inherited_parents(self) -> tuple[str, ...]:
        """Where the previous process may have left discovery members."""
        return () if self.left is None else self.left.discovery_parents

    # Start

    def started(self) -> None:
        """
        The agent starts in this process: the state file names its pid.
        Under twistd without ``-n`` the handoff is made before twistd's
        fork, by a parent that exits once the daemon runs: the file named
        that pid, and the checks of whether its holder runs (a newer
        process's, the older one's at a deploy) took a running daemon for
        one gone.
        """
        pid = os.getpid()
        if self.owner.pid == self._made_in != pid:
            self.owner = attr.evolve(self.owner, pid=pid)

    def claim(self) -> Deferred[bool]:
        """
        Name this process as the holder of the session left by the previous
        one, before reattaching to it; fires with whether that worked (if
        not, the agent starts a new session).
        """
        left = self.left
        if left is None:
            return succeed(False)
        if left.unusable is not None:
            return self._unusable_left(left, left.unusable)
        if left.purpose.agent_id != self.purpose.agent_id:
            return self._predecessor_left(left)
        now = float(self._reactor.seconds())
        # A file that does not say (an older version's) counts from now.
        checked_at = now if left.checked_at is None else left.checked_at
        if checked_at > now:
            # The clock went back since (a step at boot, or a clock fixed):
            # judged by it, the session was checked for as long as it took
            # to catch up (an hour back kept a crash loop's dead Redis
            # published up for as long as it went on). Counted from now.
            log.warn(
                "{path} says its instances were checked {ahead:.1f} s in the "
                "future: the clock went back since; counting from now",
                path=self.state_file.path,
                ahead=checked_at - now,
            )
            checked_at = now
        # The session lives for the timeout its last holder was granted.
        timeout = left.session_timeout or self._session_timeout
        if now - checked_at > UNCHECKED_SHARE * timeout:
            self.stale = left
            self.why_not = UNCHECKED.format(seconds=now - checked_at)
            log.warn(
                "not reattaching to ZooKeeper session {session}: {why} ({timeout} "
                "s), so its nodes may be stale; closing it (its nodes go now) "
                "and opening a new one",
                session=f"{left.session_id:#x}",
                why=self.why_not,
                timeout=timeout,
            )
            return succeed(False)
        self._session = left.client_id
        self._granted = left.session_timeout
        self._parents = left.discovery_parents
        # Not checked by this process yet: the previous one's checks stand,
        # and those it made since (none if its time was not the file's own).
        self._checked_at = self._since = checked_at
        self._first_round = FirstRound(
            left.covered if checked_at == left.checked_at else ()
        )
        self._since_exact = left.checked_at_exact and checked_at == left.checked_at

        def claimed(written: bool) -> bool:
            self._claimed = written
            if not written:
                self.why_not = f"{NOT_CLAIMED}: {self.last_error}"
                self._session = None
                gone = not self._running(left.owner.pid)
                if gone:
                    # Nobody checks its nodes now, nor will: closed, they go
                    # at once, rather than stay, stale, until it expires
                    # (503 meanwhile, this process waiting for them).
                    self.stale = left
                log.error(
                    "not reattaching to ZooKeeper session {session}: cannot write "
                    "{path} ({error}), so an older process would not learn that "
                    "it was superseded{closing}",
                    session=f"{left.session_id:#x}",
                    path=self.state_file.path,
                    error=self.last_error,
                    closing=(
                        f"; closing it (pid {left.owner.pid}, which left it, is "
                        f"gone): its nodes go now, and a new session writes them"
                        if gone
                        else ""
                    ),
                )
            return written

        return self._written_soon().addCallback(claimed)

    def _predecessor_left(self, left: StoredSession) -> Deferred[bool]:
        """
        The session left under another agent id: closed if the process that
        left it is gone, else left alone (module docstring); never claimed.
        """
        agent_id, pid = left.purpose.agent_id, left.owner.pid
        if self._running(pid):
            return self._left_alone(
                f"{self.state_file.path}: for another agent id ({agent_id!r}), "
                f"whose process (pid {pid}) still runs: another agent on this "
                f"state_dir?"
            )
        self.why_not = (
            f"the state file was left by agent id {agent_id!r} (pid {pid}, gone): "
            f"its session is closed"
        )
        log.warn(
            "not reattaching to ZooKeeper session {session}, left by agent id "
            "{agent_id} (pid {pid}, gone), the name this agent had before: "
            "closing it, so that its nodes go now rather than make a dead "
            "agent a live member of the group until the session expires, and "
            "opening a new one",
            session=f"{left.session_id:#x}",
            agent_id=agent_id,
            pid=pid,
        )
        return self._closed(left)

    def _unusable_left(self, left: StoredSession, why: str) -> Deferred[bool]:
        """
        The session named by a state file this version cannot wholly read
        (another version's format, `why`): never reattached by it, for what
        this version cannot read may be what the file's writer relied on;
        closed if the process that left it is gone, as a predecessor's is,
        else left alone. Left to expire, its nodes stayed, unchecked, for
        the session timeout, and this process waited for them.
        """
        pid = left.owner.pid
        if self._running(pid):
            return self._left_alone(f"{why} (pid {pid}, which left it, still runs)")
        self.why_not = f"{why}: its session is closed"
        log.warn(
            "not reattaching to ZooKeeper session {session}: {why}; pid {pid}, "
            "which left it, is gone: closing it, so that its nodes go now "
            "rather than stay, unchecked, until it expires, and opening a new one",
            session=f"{left.session_id:#x}",
            why=why,
            pid=pid,
        )
        return self._closed(left)

    def _left_alone(self, why: str) -> Deferred[bool]:
        self.left = None
        self.why_not = why
        return succeed(False)

    def _closed(self, left: StoredSession) -> Deferred[bool]:
        self.stale = left
        return succeed(False)

    def connected(
        self,
        client_id: tuple[int, bytes],
        replaced: bool,
        granted: float | None = None,
    ) -> bool:
        """
        The bridge is connected with session `client_id` (`replaced`: on a
        client that replaced the first one), `granted` the session timeout
        ZooKeeper granted it (None if unknown): the file says it from now
        on. Return True the first time the session is the one the previous
        process left: its nodes are this process's now.
        """
        first = not self._connected_once
        self._connected_once = True
        inherited = False
        session = f"{client_id[0]:#x}"
        if first:
            left = self.left
            inherited = (
                left is not None and self._claimed and client_id == left.client_id
            )
            self.reattached = inherited
            if inherited:
                assert left is not None
                self.why_not = None
                carried = len(self.carried)
                log.info(
                    "reattached to ZooKeeper session {session} left by pid {pid} "
                    "at {at}: its nodes stay, and each is rewritten at its first "
                    "check{carried}",
                    session=session,
                    pid=left.owner.pid,
                    at=_utc(left.written_at),
                    carried=(
                        f"; the state file names {carried} instance(s) checked "
                        f"since {_utc(left.checked_at)} by the previous "
                        f"processes: those watched count in this one's first round"
                        if carried and left.checked_at is not None
                        else ""
                    ),
                )
            else:
                if self._claimed:
                    self.why_not = UNREACHABLE if replaced else EXPIRED
                    if not replaced and left is not None:
                        self.why_not += _elsewhere(left, self.purpose)
                log.info(
                    "new ZooKeeper session {session}; not reattached: {why}",
                    session=session,
                    why=self.why_not,
                )
                if left is not None and (self._claimed or self.stale is not None):
                    # Expired, or closed at start: its nodes went with it.
                    self.on_left_gone(left.session_id, str(self.why_not))
        if client_id != self._session:
            self._session = client_id
            self._granted = granted
            # A new session holds no member anywhere yet, and nothing
            # checked: its unchecked time counts from its start.
            self._parents = ()
            self._checked_at = self._since = float(self._reactor.seconds())
            # Its nodes are all written by this process's checks.
            self._first_round = None
            self._round_ended_soon()
            if not self._checked_once:
                self._unchecked = client_id
            self._written_soon()
        elif granted is not None and granted != self._granted:
            # Reattached (at start, or reconnected), the session lives for
            # what was granted this time.
            self._granted = granted
            self._written_soon(refresh=True)
        return inherited

    def checked(self, name: str) -> None:
        """
        This process checked instance `name` (the publisher hears each
        check): the state file says so again once a quarter of the session
        timeout went by since it last did, or last tried to, or, on a
        session inherited, once every instance was checked once.
        """
        now = float(self._reactor.seconds())
        self._checked_at = now
        self._checked_once = True
        self._unchecked = None
        if self._since is not None and now < self._since:
            # The clock went back: the file says checks since then.
            self._since = now
        if self._session is None or self.superseded is not None:
            return
        if self._first_round is not None and self._round_done(name):
            # The first round done: the file says so now, not a refresh
            # later (whatever the last write said: one during the round
            # said the previous process's checks, or, before any check,
            # the same and was not behind).
            self._written_soon(refresh=True)
            return
        tried = self._refresh_tried
        # A refresh tried later than now by this clock: it went back.
        if self.writing or (
            tried is not None
            and 0 <= now - tried < REFRESH_SHARE * self.session_timeout
        ):
            return
        self._refresh_tried = now
        self._written_soon(refresh=True)

    def caught_up(self) -> None:
        """
        ZooKeeper has every node as checks found it: if the file's last
        ``checked_at`` was held back, it is written again to say so (a
        process killed soon after its first check would otherwise leave
        the file as far back as its predecessor's).
        """
        # Not before the first round is done: the file would say no more,
        # and this comes after every write of a tick's changes.
        if (
            self._behind
            and self._first_round is None
            and self._session is not None
            and self.superseded is None
        ):
            self._written_soon(refresh=True)

    def _round_done(self, name: str | None = None) -> bool:
        """
        Whether this process, on a session inherited, has checked every
        instance it observes once (`name` now); from then on, and on a
        session of its own, every check counts.
        """
        first = self._first_round
        if first is None:
            return True
        if name is not None:
            first.add(name)
        # Nothing observed yet (a group's first view): nothing checked.
        observed = first.names if self.observed is None else self.observed()
        if not first.done(observed):
            return False
        self._first_round = None
        return True

    @property
    def carried(self) -> Collection[str]:
        """
        The instances the previous processes checked since the file's
        ``checked_at``, while this process's first round is not done: its
        checks go to the others first (`Monitor.launch_last`).
        """
        first = self._first_round
        return () if first is None else first.carried

    def _covered(self) -> frozenset[str]:
        """What the file says was checked since its ``checked_at``."""
        first = self._first_round
        if first is None:
            # Every instance was: ``checked_at`` says so.
            return frozenset()
        observed = () if self.observed is None else self.observed()
        return first.held(observed, self.backs)

    def save_checks(self) -> Deferred[bool]:
        """
        At a stop that hands the session on: the file says this process's
        last checks (its ``checked_at`` lags them by up to a quarter of the
        session timeout, which the next start's crash-loop rule counted
        against the session), and before the first round is done, what
        was checked since its last write, so that the next process need
        not check it again. Fires once written.
        """
        if not self._checked_once or self._session is None or self.superseded:
            return self.wait_written()
        before, session = self.last_error, self._session
        self._stopped = True

        def ended(written: bool) -> bool:
            if not written and before is None and self._recorded == session:
                # Out of file descriptors, a disk full: writes are atomic,
                # and the file as last written still holds the session.
                # Taken for a blocked handoff, the stop deregistered.
                self.last_error = None
            return written

        return self._written_soon(refresh=True).addCallback(ended)

    @property
    def claiming(self) -> bool:
        """Whether this process's claim of the session left is being written."""
        return (
            self.left is not None
            and self.reattached is None
            and not self._claimed
            and self._session == self.left.client_id
            and self.writing
        )

    def first_round_written(self) -> Deferred[None]:
        """
        On a session reattached to (or claimed, and being reattached to),
        fires once the state file says this process's checks: its first
        round done, and ZooKeeper holding what they found (a discovery
        member, say, is written only once the session is known to be this
        process's alone, `sentinel.sharing`); at once on a session of its
        own (also one opened when the reattach failed), or if the file
        already says so.
        The caller bounds the wait (cancelling the Deferred stops it).
        """
        attaching = self.claiming or (
            self.reattached is None and self._claimed and self._session is not None
        )
        if not (self.reattached or attaching) or (
            self.reattached
            and self._first_round is None
            and not self._behind
            and not self.writing
        ):
            return succeed(None)
        waiter: Deferred[None] = Deferred(self._round_waiters.remove)
        self._round_waiters.append(waiter)
        return waiter

    def _round_ended_soon(self) -> None:
        # In the next turn: from within a write's callbacks, a stop waiting
        # for it would find the write still in flight.
        if self._round_waiters:
            self._reactor.callLater(0, self._round_ended)

    def _round_ended(self) -> None:
        waiters, self._round_waiters = self._round_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def unchecked_for(self, now: float) -> float | None:
        """
        On a session this process reattached to, until it has checked each
        instance once: how long at least the nodes it has not written yet
        have gone unchecked (since what the previous process's file said,
        less the file's lag, a quarter of the session timeout, or none if
        a stop wrote it with its last checks). None on a
        session of its own, or once its first round is done.
        """
        since = self._since
        if not self.reattached or self._first_round is None or since is None:
            return None
        lag = 0.0 if self._since_exact else REFRESH_SHARE * self.session_timeout
        return now - since - lag

    def _checked_through(self) -> float | None:
        """Up to when the session's nodes say what checks found."""
        checked_at, since = self._checked_at, self._since
        if checked_at is None or since is None:
            through = checked_at
        else:
            through = self._nodes_through(checked_at, since)
        # Not in `_behind`: ZooKeeper having every node changes nothing here.
        unbacked = None if self.unbacked_since is None else self.unbacked_since()
        if through is None or unbacked is None:
            return through
        return min(through, unbacked)

    def _nodes_through(self, checked_at: float, since: float) -> float:
        """Up to when the nodes hold what checks found (`_checked_through`)."""
        if not self._round_done():
            # Its instances checked later in the first round are as the
            # previous process left them (a check of one renewed them all:
            # checks are spread over the interval, and a process killed
            # 0.3 s after its first kept those checked later published as
            # they were, a dead Redis up, for as long as the loop went on).
            through = since
        elif self.checked_through is None:
            through = checked_at
        else:
            through = self.checked_through(checked_at, since)
        self._behind = through < checked_at
        return through

    # While running

    def record_parent(
        self, parent: str, in_use: Callable[[], Container[str]] | None = None
    ) -> Deferred[None]:
        """
        Fires once the state file lists `parent` among the places where the
        session holds discovery members (at once if it does): a member is
        created only where the next process will look for it. A failed
        write is logged and fires it all the same.

        @param in_use: the parents the session may still hold a member
            under; the others leave the file at the same write, so that it
            lists what the config uses, not every service used since the
            session began.
        """
        if parent in self._parents or self._session is None:
            return succeed(None)
        self._parents = (*self._parents, parent)
        self._new_parents.add(parent)
        if in_use is not None:
            self._in_use = in_use
        return self._written_soon().addCallback(lambda _: None)

    def disconnected(self) -> None:
        """
        The connection dropped: read the state file to learn whether a
        newer process took the session (`on_superseded` then hears it).
        """
        if self.superseded is not None or self._session is None or self._checking:
            return
        self._checking = True
        self.superseded_now().addBoth(self._checked)

    def superseded_now(self) -> Deferred[bool | None]:
        """
        Read the state file now: fires with whether a newer process took
        the session (`on_superseded` then heard it, once), None if the
        file could not be read (not knowing is not being superseded).
        """
        if self.superseded is not None:
            return succeed(True)
        if self._session is None:
            return succeed(False)
        session = self._session[0]
        d: Deferred[Any] = self.state_file.read(self.purpose)
        d.addCallback(self._check, session)
        d.addCallbacks(lambda _: self.superseded is not None, self._check_failed)
        return d

    @property
    def predecessor(self) -> str | None:
        """
        The token of the process whose session this one took at start, if
        any: on the way out (it reads the state file and stops), not a
        process sharing the session.
        """
        left = self.left
        return left.owner.token if left is not None and self._claimed else None

    def forget(self) -> Deferred[None]:
        """
        Remove the state file: the session was closed on purpose. A write
        in flight ends first (it would put the file back).
        """
        self._session = self._recorded = None
        d: Deferred[Any] = self.wait_written()
        d.addCallback(lambda _: self.state_file.remove())
        d.addErrback(self._failed, "removing")
        return d

    @property
    def session_timeout(self) -> float:
        """
        The timeout of the session we hold: the one ZooKeeper granted, or
        the one asked for while that is unknown.
        """
        return self._session_timeout if self._granted is None else self._granted

    @property
    def session_id(self) -> int | None:
        """The session this process holds, or claimed: None before either."""
        return None if self._session is None else self._session[0]

    @property
    def writing(self) -> bool:
        """Whether a write of the state file is in flight or queued."""
        return self._writing or self._dirty

    @property
    def blocked(self) -> str | None:
        """
        Why the next process could not reattach to the session we hold,
        were this one to stop now, or None if it could: the state file
        holds the session, and its last write worked.
        """
        session = self._session
        if session is None:
            return "no ZooKeeper session yet"
        if self._unchecked == session:
            return (
                f"this process opened session {session[0]:#x} and checked no "
                "instance yet: it holds no instance node to hand over"
            )
        if self.last_error is not None:
            return f"the state file's last write failed ({self.last_error})"
        if self.overwritten is not None:
            return f"the state file no longer holds it ({self.overwritten})"
        if self._recorded != session:
            return f"the state file does not hold session {session[0]:#x} yet"
        return None

    @property
    def only_refreshing(self) -> bool:
        """
        Whether the writes of the state file in flight or queued only
        refresh this process's own file (its ``checked_at`` and
        ``covered``): landed or not, the file holds the session (writes
        are atomic, and a refresh replaces only this process's file), so
        a stop that hands the session on need not wait for them.
        """
        return self._writing and self._refreshing and not self._rewrite

    def wait_written(self) -> Deferred[bool]:
        """
        Fires once no write of the state file is in flight or queued, with
        whether the last one worked.
        """
        if not self._writing and not self._dirty:
            return succeed(self.last_error is None)
        waiter: Deferred[bool] = Deferred()
        self._waiting.append(waiter)
        return waiter

    def stats(self) -> dict[str, Any]:
        """The state file's part of /debug/stats (``zookeeper.handoff``)."""
        left = self.left
        return {
            "state_file": self.state_file.path,
            "reattached": self.reattached,
            "not_reattached_because": self.why_not,
            "left_by_pid": None if left is None else left.owner.pid,
            "superseded": self.superseded,
            "state_file_writes": self.writes,
            "state_file_error": self.last_error,
            "state_file_overwritten": self.overwritten,
            "state_file_read_error": self.unread,
            "handoff_possible": self.blocked is None,
            "handoff_blocked_because": self.blocked,
        }

    def health_detail(self) -> str | None:
        """
        What ``/healthz`` says while the state file cannot be written: the
        agent works, but its next stop deregisters instead of handing over.
        """
        if self.last_error is None and self.overwritten is None:
            return None
        return (
            f"no handoff to the next process: {self.blocked}; a stop deletes "
            f"this agent's nodes and closes its session"
        )

    def session_detail(self) -> dict[str, Any] | None:
        """
        ``session`` in ``/healthz``: whether this process reattached to the
        session its predecessor left, and why not when it did not (issue
        10 asked it of ``/healthz`` as of the log and ``/debug/stats``, so
        that a rolling restart can be watched on the route it waits on);
        None until the first session is known.
        """
        if self.reattached is None:
            return None
        return {
            "reattached": self.reattached,
            "not_reattached_because": self.why_not,
        }

    # Writing

    def _written_soon(self, refresh: bool = False) -> Deferred[bool]:
        """
        Fires with whether the write that starts next (or soon) worked;
        `refresh`: a write of ``checked_at`` alone.
        """
        waiter: Deferred[bool] = Deferred()
        self._waiting.append(waiter)
        self._dirty = True
        self._rewrite = self._rewrite or not refresh
        if not self._writing:
            self._write()
        return waiter

    def _write(self) -> None:
        session = self._session
        self._dirty = False
        # A refresh replaces only this process's own file: a newer process
        # that claimed the session meanwhile must not lose its claim.
        holder = None if self._rewrite or self._recorded != session else self.owner
        self._refreshing = holder is not None
        self._rewrite = False
        waiters, self._waiting = self._waiting, []
        if session is None:
            _fire_all(waiters, False)
            return
        in_use, self._in_use = self._in_use, None
        if in_use is not None:
            used, new = in_use(), self._new_parents
            self._parents = tuple(p for p in self._parents if p in used or p in new)
        self._new_parents = set()
        self._writing = True
        stored = StoredSession(
            self.purpose,
            session[0],
            session[1],
            self.owner,
            float(self._reactor.seconds()),
            self._parents,
            self._checked_through(),
            self._granted,
            # After `_checked_through`: it may find the first round done.
            covered=self._covered(),
            checked_at_exact=self._exact(),
        )
        # A session other than the one this process wrote (that one lost,
        # expired say, and a new one opened): a file naming another
        # process that runs is a newer process's, which is not robbed of
        # its handoff (module docstring).
        lost = self._recorded
        running = (
            None
            if lost is None or lost == session or self._outlived == session
            else self._running
        )
        d = self.state_file.write(stored, holder, running)
        d.addCallbacks(
            self._wrote, self._not_written, callbackArgs=(stored,), errbackArgs=(lost,)
        )
        d.addBoth(self._write_ended, waiters)

    def _exact(self) -> bool:
        """
        Whether the ``checked_at`` written now is exact: at a stop, with
        this process's first round done (its own last check), or before
        it, the previous process's, if that was exact.
        """
        return self._stopped and (self._first_round is None or self._since_exact)

    def _wrote(self, _: None, stored: StoredSession) -> None:
        self.writes += 1
        self.last_error = None
        self._recorded = stored.client_id
        if self._refresh_tried is None or (
            stored.checked_at is not None and stored.checked_at > self._refresh_tried
        ):
            self._refresh_tried = stored.checked_at
        self.overwritten = None
        if (
            self._first_round is None
            and stored.checked_at is not None
            and self._since is not None
            and stored.checked_at > self._since
        ):
            # The file says this process's checks.
            self._round_ended_soon()

    def _not_written(
        self, failure: Failure, lost: tuple[int, bytes] | None
    ) -> Deferred[None] | None:
        refusal = failure.value
        if isinstance(refusal, HeldByAnother) and lost is not None:
            held = refusal.held
            publishing = self.holds_agent_node
            if held.session_id == lost[0] or publishing is None:
                # It reattached to the session this one lost: a newer
                # process for sure.
                self._newer_took_over(held, lost[0])
                return None
            d: Deferred[Any] = publishing(held.session_id)
            return d.addCallbacks(
                self._named_publishing,
                self._named_unknown,
                callbackArgs=(held, lost[0]),
                errbackArgs=(held, lost[0]),
            )
        if failure.check(NotHeld):
            # Another process's file now: `verify` or `disconnected` learns
            # whose, and what follows.
            log.debug(
                "{path} not refreshed: {why}",
                path=self.state_file.path,
                why=failure.getErrorMessage(),
            )
            return None
        self._failed(failure, "writing")
        return None

    def _named_publishing(self, holds: bool, held: StoredSession, lost: int) -> None:
        """
        Whether the session the state file names (`held`'s, not the one
        this process lost) holds this agent's node: if it does, a newer
        process publishes there, and this one is superseded; if not, the
        process the file names publishes nothing (a double start's loser,
        on its way out as a twin or hung), and this one writes its own
        session over it and goes on (module docstring).
        """
        if holds:
            self._newer_took_over(held, lost)
            return
        session = self._session
        if session is None or self.superseded is not None:
            return
        log.warn(
            "{path} names pid {pid} (session {named:#x}), which runs but does "
            "not hold this agent's node: no newer process took over (a double "
            "start's loser on its way out?); writing this process's session "
            "{session:#x} over it",
            path=self.state_file.path,
            pid=held.owner.pid,
            named=held.session_id,
            session=session[0],
        )
        self._outlived = session
        self._again = True
        self._dirty = True
        self._rewrite = True

    def _named_unknown(self, failure: Failure, held: StoredSession, lost: int) -> None:
        # Unknown (the read failed): taken, as before, for a newer
        # process's, which must not be robbed of its handoff.
        log.warn(
            "could not learn whether session {named:#x} holds this agent's "
            "node ({error}): taking pid {pid} for a newer process",
            named=held.session_id,
            error=failure.getErrorMessage(),
            pid=held.owner.pid,
        )
        self._newer_took_over(held, lost)

    def retry(self) -> None:
        """
        Write the file again if its last write failed (at each heartbeat):
        without it, one failed write (a disk full, out of file descriptors
        for a moment) left every later stop deregistering, and ``/healthz``
        failing, for as long as the session lasted.
        """
        if (
            self.last_error is not None
            and self._session is not None
            and self.superseded is None
            and not self._writing
        ):
            self._written_soon()

    # Still ours?

    def verify(self) -> Deferred[None]:
        """
        Read the state file again (at each heartbeat, and before a stop
        leaves the session open): if something else overwrote it since
        this process wrote it, another agent sharing the state_dir say, the
        next process could not reattach, and `blocked` says why. A file
        removed, or naming another session of this agent id whose process
        no longer runs, is written again (`_reclaim`), and this fires once
        that write ended.
        """
        session = self._recorded
        if session is None or self.writing or self._verifying:
            return succeed(None)
        if self.superseded is not None:
            return succeed(None)
        self._verifying = True
        d: Deferred[Any] = self.state_file.read(self.purpose)
        d.addCallbacks(self._verified, self._unverified, callbackArgs=(session,))
        d.addErrback(lambda f: log.failure("reading the state file", f))

        def ended(_: object) -> None:
            self._verifying = False

        return d.addBoth(ended)

    def _verified(
        self, stored: StoredSession, session: tuple[int, bytes]
    ) -> Deferred[None] | None:
        if self.unread is not None:
            log.info("{path} read again", path=self.state_file.path)
            self.unread = None
        if self._recorded != session or self.writing:
            return None  # Written again meanwhile: that write decides.
        if stored.client_id == session and stored.owner == self.owner:
            if self.overwritten is not None:
                log.info(
                    "{path} holds this process's session again",
                    path=self.state_file.path,
                )
            self.overwritten = None
        elif stored.client_id != session:
            held = f"it holds session {stored.session_id:#x} of pid {stored.owner.pid}"
            if not self._running(stored.owner.pid):
                return self._reclaim(f"{held}, which no longer runs")
            self._overwritten(held)
        # The same session named by another process: a newer process took
        # it (`disconnected` finds it, and this one stops).
        return None

    def _reclaim(self, why: str) -> Deferred[None]:
        """
        The file holds no live process's session of this agent id (the
        loser of a double start exited as a twin, having written it last;
        or it was removed): write this one's in it again, and fire once
        written. Before, the handoff was lost for as long as the process
        ran, every stop deregistering.
        """
        log.warn(
            "{path} no longer holds this process's ZooKeeper session ({why}): "
            "writing it again",
            path=self.state_file.path,
            why=why,
        )
        return self._written_soon().addCallback(lambda _: None)

    def _unverified(self, failure: Failure) -> Deferred[None] | None:
        if self.writing:
            return None
        if failure.check(NoStateFile):
            return self._reclaim("it was removed")
        if failure.check(Corrupt, TooLarge):
            # No other process's claim is lost: none can be read in it (a
            # file over the size read is no agent's either: their writes
            # over it fail). Taken for another agent's, it cost the next
            # stop a handoff.
            return self._reclaim(f"it is {failure.getErrorMessage()}")
        if failure.check(NotRead, TimeoutError, CancelledError):
            # Not read (out of file descriptors, a hung mount): nothing is
            # known of what the file holds, so the last verdict stands.
            why = (
                failure.getErrorMessage()
                if failure.check(NotRead)
                else "no answer in time"
            )
            if self.unread is None:
                log.warn(
                    "{path} could not be read to check that it still holds "
                    "this process's ZooKeeper session: {why}; until it is "
                    "read again, what was last read of it stands",
                    path=self.state_file.path,
                    why=why,
                )
            self.unread = why
        elif failure.check(StateFileRefused):
            # The state_dir replaced by a file, or made another user's: no
            # other agent is to blame, and the next process could not
            # reattach through it either.
            self._overwritten(
                failure.getErrorMessage(), "Mend it, or set another state_dir"
            )
        else:
            self._overwritten(failure.getErrorMessage())
        return None

    def _overwritten(
        self,
        why: str,
        hint: str = "Another agent sharing this state_dir? Use one state_dir per agent",
    ) -> None:
        """
        The state file no longer holds this process's session, `why`; the
        log line says what to do, `hint`.
        """
        if why != self.overwritten:
            log.error(
                "{path} no longer holds this process's ZooKeeper session: "
                "{why}. {hint}. The next process could not reattach: "
                "a stop now deletes this agent's nodes and closes its "
                "session, as without state_dir",
                path=self.state_file.path,
                why=why,
                hint=hint,
            )
        self.overwritten = why

    def _failed(self, failure: Failure, doing: str) -> None:
        error = f"{doing} {self.state_file.path}: {failure.getErrorMessage()}"
        if error != self.last_error:
            log.error("ZooKeeper session state file: {error}", error=error)
        self.last_error = error

    def _write_ended(self, _: object, waiters: list[Deferred[bool]]) -> None:
        self._writing = False
        written = self.last_error is None
        if self._dirty:
            if self._again:
                # The same write again (`_named_publishing`): its waiters
                # hear of that one.
                self._again = False
                self._waiting[:0] = waiters
                waiters = []
            self._write()
        elif self._waiting:
            # wait_written's waiters: nothing more is queued.
            waiters += self._waiting
            self._waiting = []
        _fire_all(waiters, written)

    # Superseded?

    def _check(self, stored: StoredSession, session: int) -> None:
        if stored.session_id != session or stored.owner == self.owner:
            return
        self._newer_took_over(stored, session)

    def _newer_took_over(self, held: StoredSession, lost: int) -> None:
        """
        The state file names a newer process (`held`) that took over from
        this one, whose session `lost` it holds, or which opened its own:
        this one is superseded (`on_superseded` is told, once), and never
        writes the file again. The session this process holds now, if the
        newer one does not hold it, is `own_session`: its own, to close.
        """
        if self.superseded is not None or self._session is None:
            return
        if self._session[0] != held.session_id:
            self.own_session = self._session
        newer = f"a newer process (pid {held.owner.pid})"
        where = f"using the same state_dir ({self.state_file.directory})"
        if held.session_id == lost:
            self.superseded = (
                f"ZooKeeper session {lost:#x} was taken over by {newer} {where}"
            )
        else:
            self.superseded = (
                f"ZooKeeper session {lost:#x} was lost, and {newer} {where} "
                f"holds session {held.session_id:#x} now"
            )
        self._session = None
        if self.on_superseded is not None:
            self.on_superseded(self.superseded)

    def _check_failed(self, failure: Failure) -> None:
        # Not knowing is not being superseded: the client reconnects.
        log.warn(
            "reading {path} after a disconnection: {error}",
            path=self.state_file.path,
            error=failure.getErrorMessage(),
        )

    def _checked(self, _: object) -> None:
        self._checking = False


def _running(pid: int) -> bool:
    """
    Whether `pid` is a process that runs, other than this one (in a
    container, the process before this one had its pid too).
    """
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        # Another user's, or unknown: taken to run.
        return True
    return True


def _elsewhere(left: StoredSession, purpose: SessionPurpose) -> str:
    """
    What to add to "the session had expired" when the state file's session
    was for ZooKeeper servers listed otherwise: they may be another
    ensemble (``zookeeper.hosts`` moved to a new one), which refuses a
    session it does not know as expired, while the session lives on where
    it was, with its nodes. The servers are not compared otherwise (one
    ensemble is listed in many ways, `sentinel.session`): said, not judged.
    """
    if left.purpose.hosts == purpose.hosts:
        return ""
    return (
        f", or ZooKeeper at {purpose.hosts!r} does not know it: the state file's "
        f"was for {left.purpose.hosts!r} (another ensemble? there, its nodes "
        f"stay until it expires)"
    )


def _fire_all(waiters: list[Deferred[bool]], written: bool) -> None:
    for waiter in waiters:
        waiter.callback(written)


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

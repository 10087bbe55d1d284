"""
A chroot in ``zookeeper.hosts`` that does not exist is made, every level
of it, as the libraries of nerve (Ruby ``zk``: ``:chroot => :create`` by
default) and Curator (its namespace, on demand) make theirs.

ZooKeeper does not create a chroot, and kazoo makes one of one level
(``/app``) only: under a deeper one (``/a/b``) every create failed with
``NoNodeError``. The agent ran, published nothing, and ``/healthz`` named
the chroot missing, for fear that a typo would publish where no reader
looks; a typo in ``zookeeper.root``, which the agent creates, does as
much, and an operator who names ``h1:2181/redis/prod`` on an empty
ensemble expects the nodes under ``/redis/prod/sentinel``, as nerve's
users get them.

So at the first connection of each session, the chroot is looked at
(``exists("/")`` through it: the chroot itself); missing, each level is
created from the top, persistent and empty, with the ACL of the agent's
other persistent nodes (world:read and the ``zookeeper.auth_file``
identity:all; open without it), a level that exists passed over. That
is logged once, at info. The writes refused meanwhile are retried
(`writes.RETRY_DELAY`) and go through. A new session looks again: a
ZooKeeper that came back empty (a wipe) lost the chroot with the rest;
a reconnection to the same session does not. The creates go past the
chroot on the agent's own session (`sentinel.unrooted`), each a call of
the bridge, timed out.

A chroot deleted while the agent runs (an operator's ``deleteall /app``,
a cleanup script) is made again as soon as a refused write's look finds
it missing (`found_missing`, from `sentinel.refusals`), as kazoo's
``makepath`` makes the root again when ``/sentinel`` alone is deleted.
It once waited for the next session instead, "not fought over": but the
agent fights for its root and its nodes alike, and kazoo's ``makepath``
already made a one-level chroot again, under an existing parent; only a
deeper one whose top went (``deleteall /a`` under ``/a/b``) was left
missing, the fleet's view gone (``/healthz`` 503) until every agent was
restarted. Made again, it is made as at the start (every level, the
nodes' ACL, refusals named), one make at a time, each started by a
look, and looks by refused writes (`refusals.LOOK_SPACING`): a client
deleting it in a loop costs a make per deletion at most. It is logged
at info once per `REMADE_LOG_SPACING` seconds, with the number of
makes since the last line.

A create that ZooKeeper refuses for want of rights (``NoAuthError``: a
parent made by another identity) is what `sentinel.refusals` names on
``/healthz``, at once, with what to do; it is tried again at most every
`REFUSED_RETRY` seconds while writes are refused, so that a parent's ACL
fixed by hand is taken with no restart; so is a create that fails for
another cause than ZooKeeper's answer (logged, and named alike). A look
cut short (the connection went, a call timed out) is made again at the
next connection, or at the next refused write's look. One look at a
time.
"""

from __future__ import annotations

from typing import Any

from kazoo.exceptions import KazooException, NoAuthError, NodeExistsError
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.logger import Logger

from sentinel.checks import chroot_of
from sentinel.nodes import LOG_NAMESPACE
from sentinel.zk import CONNECTED, ZooKeeper

log = Logger(namespace=LOG_NAMESPACE)

# Seconds between two tries at a chroot whose creation was refused.
REFUSED_RETRY = 30.0
# Seconds between two lines saying the chroot was made again.
REMADE_LOG_SPACING = 60.0


class Chroot:
    """Makes the chroot in ``zookeeper.hosts`` if missing (module docstring)."""

    def __init__(self, reactor: Any, zk: ZooKeeper) -> None:
        self._reactor = reactor
        self._zk = zk
        # The node whose ACL refused the last try, or what else failed it
        # (a bug, kazoo changed: `sentinel.unrooted`), and when; the
        # session in which the chroot was found or made.
        self.refused_under: str | None = None
        self.failed: str | None = None
        self._refused_at: float | None = None
        self._done_in: int | None = None
        # The session in which it was found or made before a look found
        # it missing (deleted since).
        self._found_in: int | None = None
        self.making = False
        self.made = 0
        # Makes after a deletion since the last line saying so, and when
        # that line was logged.
        self._remade_unlogged = 0
        self._remade_logged_at: float | None = None

    @property
    def path(self) -> str:
        """The chroot, "" for none."""
        return chroot_of(self._zk.hosts)

    def state_changed(self, state: str) -> None:
        """A `ZooKeeper` state listener: look at each connection."""
        if state == CONNECTED:
            self.ensure()

    def ensure(self) -> None:
        """
        Look at the chroot, and make it if missing, unless that was done
        in this session, is under way, or was refused less than
        `REFUSED_RETRY` seconds ago.
        """
        session = self._zk.session_id
        if not self.path or session is None or self.making:
            return
        if session == self._done_in:
            return
        refused_at = self._refused_at
        if (
            refused_at is not None
            and self._reactor.seconds() - refused_at < REFUSED_RETRY
        ):
            return
        self.making = True
        d = Deferred.fromCoroutine(self._ensure(session))
        d.addBoth(self._ended)

    def found_missing(self) -> None:
        """
        The chroot was found missing through this session: look again and
        make it, even if it was made or found in this session (deleted
        since).
        """
        if self._done_in is not None:
            self._found_in, self._done_in = self._done_in, None
        self.ensure()

    def _ended(self, _: object) -> None:
        self.making = False

    async def _ensure(self, session: int) -> None:
        try:
            if await self._zk.exists("/") is None:
                await self._make(deleted_since=self._found_in == session)
        except _Refused as refused:
            self.refused_under = refused.parent
            self._refused_at = self._reactor.seconds()
            return
        except (KazooException, TimeoutError, CancelledError):
            return  # Looked at again at the next connection or refusal.
        except Exception as e:
            # Not ZooKeeper's answer: tried again as a refusal is.
            if self.failed is None:
                log.failure("making the chroot {chroot}", chroot=self.path)
            self.failed = repr(e)
            self._refused_at = self._reactor.seconds()
            return
        self._done_in = session
        self.refused_under = self.failed = self._refused_at = None

    async def _make(self, deleted_since: bool) -> None:
        parent = "/"
        for level in self.path.strip("/").split("/"):
            path = parent.rstrip("/") + "/" + level
            try:
                await self._zk.create_past_chroot(path)
            except NodeExistsError:
                # A level above the missing, or the last one made meanwhile
                # by kazoo (it makes a chroot of one level, under an
                # existing parent, for the writes that found it missing).
                pass
            except NoAuthError:
                raise _Refused(parent) from None
            parent = path
        self.made += 1
        if not deleted_since:
            log.info("created the chroot {chroot} in zookeeper.hosts", chroot=self.path)
            return
        self._remade_unlogged += 1
        now = self._reactor.seconds()
        logged_at = self._remade_logged_at
        if logged_at is not None and now - logged_at < REMADE_LOG_SPACING:
            return
        log.info(
            "created the chroot {chroot} in zookeeper.hosts again: deleted while"
            " the agent ran ({count} time(s) since the last such line)",
            chroot=self.path,
            count=self._remade_unlogged,
        )
        self._remade_logged_at = now
        self._remade_unlogged = 0


class _Refused(Exception):
    """A level of the chroot refused: `parent` lets this agent not create."""

    def __init__(self, parent: str) -> None:
        super().__init__(parent)
        self.parent = parent

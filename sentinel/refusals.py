"""
Why ZooKeeper refuses this agent's writes, when an operator's mistake is
the cause: said at once, in words, rather than as an exception's name.

Two mistakes make every create fail for as long as the agent runs: a
chroot in ``zookeeper.hosts`` that does not exist and that the agent may
not create (`sentinel.chroot` makes it, but a parent of another identity
refuses: ``NoNodeError`` or ``NoAuthError`` for each write under it),
and a root, or a directory under it, whose ACL does not let this
agent's identity create there (made by another agent's
``zookeeper.auth_file`` identity, by hand, by another tool:
``NoAuthError``). Before, the writes were retried, the log said ``write
failed, will retry: /sentinel/agents/a0: NoAuthError`` once, and
``/healthz`` stayed 200 for `writes.FAILING_AFTER` (5 s), then said
``... not written for 5 s (NoAuthError)``: true, but naming neither the
node at fault nor what to do.

Another client can do as much without any ACL: a root (or a directory
under it) created as an ephemeral node before the agents made it, which
ZooKeeper lets have no children (``NoChildrenForEphemeralsError``), so
that nothing is written for as long as that client's session lives.
Before, ``/healthz`` said ``/sentinel/agents/a0 not written for 5 s
(NoChildrenForEphemeralsError)`` after 5 s, naming neither the node nor
that it goes with its session.

So a write that fails so is looked into: its path is walked up to the
deepest node that exists (a background ``exists`` each), and that node's
ACL is read, unless it is ephemeral. The chroot missing and refused (the
parent that refused it named), or failing to be made, an ephemeral
node (named with its session), or an ACL that grants create to neither
``world:anyone`` nor the agent's own digest identity, is the reason
``/healthz`` fails at once (one round trip after the failure), logged
once until it changes. The reason lasts while writes fail with those
errors, and goes with the last of them: an ACL fixed by hand, a chroot
created, is taken as it is, with no restart. An ACL that grants create to
an identity this agent cannot judge (``ip``, ``sasl``, ``x509``) is not
blamed: the writes' own failure still fails ``/healthz`` after
`FAILING_AFTER`. A chroot found missing is made (again, if it was
deleted since the agent made or found it: `Chroot.found_missing`), and
is no reason while it is made: the next refused write looks again,
without waiting for `LOOK_SPACING`, and finds it made or refused.

ZooKeeper's own limit refuses writes too: with ``enforceQuota`` on, a
hard quota (``setquota -N`` or ``-B``) on the root or a node above or
under it makes each create past its count, or write past its bytes, fail
with ``QuotaExceededError``. Before, ``/healthz`` stayed 200 for
`writes.FAILING_AFTER` while the instances past the count were published
nowhere, then said ``... not written for 6 s (QuotaExceededError)``,
naming neither the quota nor what to do. The error itself says it all,
so it is the reason at once, without a look (the quota's own node,
``/zookeeper/quota/...``, lies outside any chroot), logged once, and it
goes with the last write refused so.

At most one look runs at a time, and looks start at most every
`LOOK_SPACING` seconds, however many writes fail: a thousand instance
nodes refused cost one look, not a thousand. Each call of a look ends
with the bridge's own timeout; a look cut short by a lost connection
says nothing, and the next failure looks again.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from kazoo.exceptions import (
    KazooException,
    NoAuthError,
    NoChildrenForEphemeralsError,
    NoNodeError,
    QuotaExceededError,
)
from kazoo.security import Permissions
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.logger import Logger
from twisted.python.failure import Failure

from sentinel.checks import chroot_of
from sentinel.chroot import Chroot
from sentinel.nodes import LOG_NAMESPACE, Node
from sentinel.openacls import permission_letters
from sentinel.zk import ZooKeeper

log = Logger(namespace=LOG_NAMESPACE)

# Seconds between the starts of two looks.
LOOK_SPACING = 5.0
# The errors of a write that an operator's mistake may cause.
_REFUSALS = (
    NoAuthError,
    NoNodeError,
    NoChildrenForEphemeralsError,
    QuotaExceededError,
)
# Identity schemes whose members this agent can tell itself from.
_JUDGED = ("world", "digest")


class Refusals:
    """Why ZooKeeper refuses this agent's creates (module docstring)."""

    def __init__(self, reactor: Any, zk: ZooKeeper, chroot: Chroot) -> None:
        self._reactor = reactor
        self._zk = zk
        self._chroot_maker = chroot
        # Who this agent is to ZooKeeper: anyone, and its digest identity
        # (`zk.acl` gives it all on the nodes it creates).
        self._digests = frozenset(
            acl.id.id for acl in zk.acl or () if acl.id.scheme == "digest"
        )
        self.reason: str | None = None
        self.looks = 0
        self._looking = False
        self._last_look: float | None = None

    def write_failed(self, failure: Failure, node: Node) -> None:
        """A write failed (`WriteQueue.on_failed`): look into it if refused."""
        if failure.check(QuotaExceededError):
            self._found(self._over_quota(node.path))
            return
        if not failure.check(*_REFUSALS) or self._looking:
            return
        now = self._reactor.seconds()
        if self._last_look is not None and now - self._last_look < LOOK_SPACING:
            return
        self._looking = True
        self._last_look = now
        self.looks += 1
        d = Deferred.fromCoroutine(self._look(node.path))
        d.addErrback(lambda f: log.failure("looking into a refused write", f))
        d.addBoth(self._looked)

    def _looked(self, _: object) -> None:
        self._looking = False

    def unhealthy_reason(self, failing: Mapping[Node, tuple[float, str]]) -> str | None:
        """
        The reason found, while some write still fails with a refusal
        (`failing`: `WriteQueue.still_failing`); else None, and the next
        reason found is logged again.
        """
        if self.reason is None:
            return None
        kinds = tuple(kind.__name__ for kind in _REFUSALS)
        if not any(error.startswith(kinds) for _, error in failing.values()):
            self.reason = None
            return None
        return self.reason

    async def _look(self, path: str) -> None:
        try:
            reason = await self._find(path)
        except (KazooException, TimeoutError, CancelledError):
            return  # The connection went: the next failure looks again.
        self._found(reason)

    def _found(self, reason: str | None) -> None:
        if reason is not None and reason != self.reason:
            log.error("ZooKeeper refuses this agent's writes: {reason}", reason=reason)
        self.reason = reason

    def _over_quota(self, path: str) -> str:
        """Why ZooKeeper's quota refuses a write of `path` (module docstring)."""
        where = self._where(path.rsplit("/", 1)[0] or "/")
        return (
            f"a ZooKeeper quota on {where} or a node above it is exceeded"
            " (QuotaExceededError, enforceQuota on): what is not written there"
            f" is not published; raise or remove it (zkCli.sh listquota {where},"
            " setquota -N, delquota)"
        )

    async def _find(self, path: str) -> str | None:
        """What refuses a create of `path`, or None (nothing this agent can tell)."""
        while True:
            path = path.rsplit("/", 1)[0] or "/"
            stat = await self._zk.exists(path, background=True)
            if stat is not None:
                break
            if path == "/":
                # Through the chroot: the chroot itself.
                return self._chroot_missing()
        if stat.ephemeralOwner:
            where = self._where(path)
            return (
                f"{where} is an ephemeral node (session {stat.ephemeralOwner:#x}),"
                " which ZooKeeper lets have no children: nothing under it is"
                " written; another client made it so; it goes when that session"
                f" ends, or delete it (zkCli.sh delete {where})"
            )
        acls, _ = await self._zk.get_acls(path)
        return self._refusing(path, acls)

    def _chroot_missing(self) -> str | None:
        """Why the chroot is missing (`sentinel.chroot`), or None."""
        chroot = self._chroot()
        maker = self._chroot_maker
        if not chroot:
            return None
        maker.found_missing()
        if maker.refused_under is not None:
            # Said while it is tried again: the refusal stands till then.
            parent = maker.refused_under
            return (
                f"the chroot {chroot} in zookeeper.hosts does not exist, and"
                f" {parent} refuses this agent's creates (this agent is"
                f" {self._identity()}): nothing is written; create it"
                f" (zkCli.sh create {chroot}), give the agents' identity create"
                f" in {parent}, or correct zookeeper.hosts"
            )
        if maker.failed is not None:
            return (
                f"the chroot {chroot} in zookeeper.hosts does not exist, and"
                f" creating it failed ({maker.failed}): nothing is written;"
                f" create it (zkCli.sh create {chroot}) or correct zookeeper.hosts"
            )
        # Being made (again, if deleted since it was made or found), or
        # made already: the next refused write looks again at once, and
        # finds it made, refused, or deleted again.
        self._last_look = None
        return None

    def _refusing(self, path: str, acls: Collection[Any]) -> str | None:
        """Why `acls` of `path` refuse this agent's creates, or None."""
        for acl in acls:
            if not acl.perms & Permissions.CREATE:
                continue
            scheme, who = acl.id.scheme, acl.id.id
            if scheme not in _JUDGED:
                return None  # It may be this agent: not blamed.
            if scheme == "world" and who == "anyone":
                return None
            if scheme == "digest" and who in self._digests:
                return None
        entries = ", ".join(
            f"{acl.id.scheme}:{_user(acl.id.scheme, acl.id.id)}:"
            f"{permission_letters(acl.perms) or '-'}"
            for acl in acls
        )
        return (
            f"{self._where(path)} refuses this agent's creates (ACL {entries};"
            f" this agent is {self._identity()}): nothing under it is written;"
            " give the agents' identity create and delete there, or set"
            " zookeeper.auth_file to an identity it admits"
        )

    def _where(self, path: str) -> str:
        """`path` as ZooKeeper's own tools name it: under the chroot."""
        chroot = self._chroot()
        return chroot + path if path != "/" else chroot or path

    def _chroot(self) -> str:
        return chroot_of(self._zk.hosts)

    def _identity(self) -> str:
        if not self._digests:
            return "world:anyone, without zookeeper.auth_file"
        users = sorted(_user("digest", who) for who in self._digests)
        return f"digest:{', '.join(users)} (zookeeper.auth_file)"


def _user(scheme: str, who: str) -> str:
    # A digest id is user:hash; the hash says nothing to a reader.
    return who.split(":", 1)[0] if scheme == "digest" else who

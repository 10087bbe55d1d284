"""
Whether the protection ``zookeeper.auth_file`` promises holds: the nodes
the agent creates get the ACL world:read plus its identity, but a root or
a directory under it (``agents``, ``instances``, ``opinions``,
``catalogs``) created earlier with an open ACL (by hand, by another tool,
by anyone who got there first) lets anyone create and delete nodes in it:
a persistent opinion ``down`` in an observer's name, a catalog, an
instance node before the agent's first check.

So, with auth_file, after every connection the agent reads those ACLs
(five background reads) and reports each one that lets anyone (``world``)
create, write, delete or change the ACL: logged once, and ``/healthz``
fails naming the first, until the ACL is fixed and a connection reads it
again. The directories themselves are not changed: who may create there
is the operator's decision, and other tools may rely on it.

With discovery, so are ``discovery_root`` (at each connection) and each
service folder the agent makes a member in (`used`: once a connection,
before its first member there). Readers take every child of a service
folder for an endpoint: a folder made before the agent's first member
(by hand, by another tool) with an open ACL let any client add an
endpoint of its own choosing beside the agent's, which proxies then
sent clients to, while every ``/healthz`` said 200
(``benchmarks/strangers.py --kind member``).
"""

from __future__ import annotations

from typing import Any

from kazoo.exceptions import KazooException, NoNodeError
from kazoo.security import Permissions
from twisted.internet.defer import CancelledError, Deferred, TimeoutError
from twisted.logger import Logger

from sentinel.checks import GROUP_CHILDREN
from sentinel.nodes import LOG_NAMESPACE
from sentinel.sample import others
from sentinel.zk import CONNECTED, ZooKeeper

log = Logger(namespace=LOG_NAMESPACE)

# The root's children the agent uses; deeper nodes can only be created by
# whoever may create in these.
USED = GROUP_CHILDREN
# Permissions in the letters ZooKeeper's CLI shows, in its order.
_LETTERS = (
    (Permissions.CREATE, "c"),
    (Permissions.DELETE, "d"),
    (Permissions.READ, "r"),
    (Permissions.WRITE, "w"),
    (Permissions.ADMIN, "a"),
)


def permission_letters(perms: int) -> str:
    """`perms` in ZooKeeper's letters (``cdrwa``), "" for none."""
    return "".join(letter for bit, letter in _LETTERS if perms & bit)


def open_to_anyone(acls: list[Any]) -> str | None:
    """
    The permissions beyond read that `acls` give anyone (``world``), in
    ZooKeeper's letters (``cdwa``), or None if there are none.
    """
    perms = 0
    for acl in acls:
        if acl.id.scheme == "world":
            perms |= acl.perms
    return permission_letters(perms & ~Permissions.READ) or None


class OpenAcls:
    """The root's and its used children's ACLs, read at each connection."""

    def __init__(
        self, zk: ZooKeeper, root: str, discovery_root: str | None = None
    ) -> None:
        self._zk = zk
        self.paths = (root, *(f"{root}/{child}" for child in USED))
        if discovery_root is not None:
            self.paths += (discovery_root,)
        # Each path open to anyone, and what anyone may do there.
        self.open: dict[str, str] = {}
        # The service folders read (or being read) since the connection.
        self._folders_read: set[str] = set()

    def state_changed(self, state: str) -> None:
        """A `ZooKeeper` state listener: read the ACLs once connected."""
        if state != CONNECTED:
            return
        self._folders_read.clear()
        d = Deferred.fromCoroutine(self._read(self.paths))
        d.addErrback(lambda f: log.failure("reading the root's ACLs", f))

    def used(self, folder: str) -> None:
        """
        A discovery member is about to be made in `folder`: its ACL is
        read, in the background, once a connection.
        """
        if folder in self._folders_read:
            return
        self._folders_read.add(folder)
        d = Deferred.fromCoroutine(self._read((folder,)))
        d.addErrback(lambda f: log.failure("reading {folder}'s ACL", f, folder=folder))

    def unhealthy_reason(self) -> str | None:
        """What /healthz says while a path is open to anyone, or None."""
        if not self.open:
            return None
        path, *rest = sorted(self.open)
        return (
            f"zookeeper: {path} lets anyone create or change nodes (ACL "
            f"world:anyone {self.open[path]})"
            + others(rest, len(rest))
            + ": auth_file does not protect what this agent publishes"
        )

    async def _read(self, paths: tuple[str, ...]) -> None:
        for path in paths:
            try:
                acls, _ = await self._zk.get_acls(path)
            except NoNodeError:
                self.open.pop(path, None)
                continue
            except (KazooException, TimeoutError, CancelledError):
                return  # The connection went: the next one reads again.
            letters = open_to_anyone(acls)
            if letters is None:
                self.open.pop(path, None)
                continue
            if self.open.get(path) != letters:
                log.error(
                    "{path} lets anyone create or change nodes (ACL world:anyone "
                    "{letters}): auth_file does not protect what this agent "
                    "publishes there; set its ACL to world:anyone:r plus the "
                    "agents' digest identity",
                    path=path,
                    letters=letters,
                )
            self.open[path] = letters

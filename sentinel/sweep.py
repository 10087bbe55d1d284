"""
What the previous process left on a session this one reattached to
(`sentinel.handoff`): its nodes are this process's now.

The nodes of instances still configured are kept, and each is rewritten
at its instance's first check; until then the writer asks before it
creates (`inherited`). The sweep deletes at once the nodes of instances no
longer configured (removed from the config meanwhile) and, in a group,
the catalog the previous process published (the other members would go on
reading it rather than ours), and finds the discovery members it left, for
each instance to keep its own (`found`, `discovery.Discovery.sweep`), or
deletes them all if discovery was turned off since
(`discovery.delete_members`).
Members are written only once the sweep has found them (`wait`): a member
created before would list an endpoint twice. The members are looked for
first, and wait for nothing else: the nodes of instances no longer
configured are found by an ``exists`` of every child of
``{root}/instances`` that no instance here has, and anyone may add
children there (50,000 of them held a restart's members 24 s, a Redis
stopped meanwhile still listed in discovery). Those ``exists`` are sent
`SWEEP_READS` at a time, not one round trip each: 100,000 such children
keep the node of an instance removed from the config published, and
the previous process's catalog (swept last), for as long as the calls'
CPU takes (15--20 s of it here, about 0.2 ms a call through the bridge:
1--2 minutes on a loaded machine, `benchmarks/sweepsquat.py`); one at a
time, a network's round trip more each. A failed sweep is retried
with the writes, without looking for the members again once they were
found.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from itertools import islice
from typing import Any

from kazoo.exceptions import NoNodeError
from twisted.internet.defer import Deferred, FirstError, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure

from sentinel.catalog import parse_catalog_node_name
from sentinel.config import RedisInstance
from sentinel.discovery import LOOK_READS, Discovery, Member, delete_members
from sentinel.handoff import SessionHandoff
from sentinel.nodes import LOG_NAMESPACE, Nodes
from sentinel.ownership import ours
from sentinel.roles import GroupRoles
from sentinel.takeover import MEMBER_HANDOFF_LIMIT
from sentinel.writes import Lifecycle, WriteQueue
from sentinel.zk import CONNECTED, ZooKeeper

log = Logger(namespace=LOG_NAMESPACE)

# The children of {root}/instances asked about at once by a sweep (module
# docstring): as many as `discovery.LOOK_READS` asks of a service's.
SWEEP_READS = LOOK_READS

# The instances the agent is configured to watch, by name.
Watched = Callable[[], Mapping[str, RedisInstance]]


class NotSwept(Exception):
    """A member waits for the sweep of a reattached session, which failed."""

    def __init__(self) -> None:
        super().__init__("the previous process's members are not found yet")


class Sweep:
    """
    The sweep of an inherited session (module docstring); `watched()` says
    which instances are configured.
    """

    def __init__(
        self,
        zk: ZooKeeper,
        root: str,
        agent_id: str,
        nodes: Nodes,
        queue: WriteQueue,
        life: Lifecycle,
        watched: Watched,
        roles: GroupRoles,
        discovery: Discovery | None,
        handoff: SessionHandoff | None,
    ) -> None:
        self._zk = zk
        self._root = root
        self._agent_id = agent_id
        self._nodes = nodes
        self._queue = queue
        self._life = life
        self._watched = watched
        self._roles = roles
        self._discovery = discovery
        self._handoff = handoff
        # On a session inherited from the previous process, whose nodes are
        # ours: whether a sweep is due, the sweep in progress, and what
        # waits for it.
        self.inherited = False
        self.needed = False
        self.sweeping = False
        # Whether the members were found on this session (`wait` is over).
        self.members_found = False
        self._after_sweep: list[Deferred[bool]] = []
        self.swept = 0
        # Whether the session is ours alone: until it is, another process
        # may use it (a copy of our state file) and its nodes are not ours
        # to delete (`sentinel.sharing`, which starts the sweep then).
        self.alone: Callable[[], bool] = lambda: True
        # Members a sweep found for instances not checked yet, by name, and
        # the wait for each to be replaced by another agent's, if it may be
        # one's (`_unless_taken`).
        self.found: dict[str, list[str]] = {}
        self._replaced: dict[str, Deferred[bool]] = {}

    def new_session(self, inherited: bool) -> None:
        """A new session: `inherited` from the previous process, or not."""
        # What a sweep would look for died with the previous session.
        self.inherited = self.needed = inherited
        self.members_found = False
        self.found.clear()
        for wait in list(self._replaced.values()):
            wait.cancel()
        if not self.sweeping:
            # Members waiting for the old session's sweep: theirs is gone.
            self._release(False)

    def abandon(self) -> None:
        """The session is another process's: nothing is to be swept."""
        self.needed = False
        self._release(False)

    def start(self) -> None:
        """Sweep, if a sweep is due and none is running."""
        if not self.needed or self.sweeping:
            return
        if not self._life.running or self._zk.state != CONNECTED:
            return
        if not self.alone():
            return
        self.sweeping = True
        d: Deferred[bool] = Deferred.fromCoroutine(self._sweep()).addCallbacks(
            lambda _: True, self._failed
        )
        d.addCallback(self._swept)

    async def wait(self) -> None:
        """
        Return once no sweep is due, or it found the members (a member may
        be written).

        @raise NotSwept: if the sweep failed, or none is running nor
            waiting for the session to be ours alone, or the session
            changed meanwhile.
        """
        if not self.needed or self.members_found:
            return
        if not self.sweeping and (self.alone() or self._zk.state != CONNECTED):
            raise NotSwept()
        waiter: Deferred[bool] = Deferred()
        self._after_sweep.append(waiter)
        if not await waiter:
            raise NotSwept()

    async def _sweep(self) -> None:
        if not self.members_found:
            session = self._zk.session_id
            await self._sweep_members()
            if self._zk.session_id == session:
                self.members_found = True
                self._release(True)
        zk = self._zk
        instances = f"{self._root}/instances"
        try:
            children = await zk.get_children(instances)
        except NoNodeError:
            children = []
        # Judged a batch at a time: a reload may have added one meanwhile.
        not_watched = (
            name
            for name in children
            if name not in self._watched() and name not in self._nodes.instances
        )
        while unwatched := list(islice(not_watched, SWEEP_READS)):
            paths = [f"{instances}/{name}" for name in unwatched]
            stats = await _all_of([zk.exists(path) for path in paths])
            for name, path, stat in zip(unwatched, paths, stats, strict=True):
                if ours(stat, zk.session_id) and name not in self._nodes.instances:
                    await self._queue.counted("delete", zk.delete(path, stat.version))
                    self.swept += 1
                    log.info(
                        "{path}: deleted, its instance is no longer watched",
                        path=path,
                    )
        if self._roles.joined:
            await self._sweep_catalogs()

    async def _sweep_members(self) -> None:
        """
        Find the members the previous process left (`found`); with
        discovery turned off since, delete them.
        """
        discovery = self._discovery
        assert self._handoff is not None
        if discovery is None:
            inherited = self._handoff.inherited_parents
            await delete_members(self._zk, inherited, self._queue.counted)
            return
        watched = dict(self._watched())
        parents = {discovery.parent_of(i) for i in watched.values()}
        parents.update(self._handoff.inherited_parents)
        kept = await discovery.sweep(parents, watched)
        for name, paths in kept.items():
            node = self._nodes.members.get(name)
            if node is None:
                # Its first check will find them (`members.Members.update`).
                self.found[name] = paths
                self._unless_taken(discovery, watched[name], paths)
            else:
                member = node.member
                assert member is not None
                member.found.extend(paths)
                self._queue.mark(node)

    def take(self, name: str) -> list[str] | None:
        """The members found for `name`, now the caller's to keep or delete."""
        wait = self._replaced.get(name)
        if wait is not None:
            wait.cancel()
        return self.found.pop(name, None)

    def _unless_taken(
        self, discovery: Discovery, instance: RedisInstance, paths: list[str]
    ) -> None:
        """
        Members found for an instance this process may not publish (in a
        group, another agent's now): the previous process held them for
        its new primary to replace (`sentinel.takeover`), and forgot them
        when it stopped. They go once nothing can replace them
        (`Discovery.outlived`: the node gone, or saying the instance out
        of discovery, or its holder holding its own), unless this process
        took them (its first write of the instance's member) meanwhile.
        Before, nobody deleted them: an endpoint listed twice until the
        session ended (189 s, measured).
        """
        member = discovery.member_for(instance)
        node_path = f"{self._root}/instances/{instance.name}"
        outlived = discovery.outlived(
            member, node_path, MEMBER_HANDOFF_LIMIT, down_counts=True
        )
        self._replaced[instance.name] = outlived

        def done(gone: bool) -> None:
            if self._replaced.get(instance.name) is outlived:
                del self._replaced[instance.name]
            # At the limit they stay: this process may publish the
            # instance, its first check not made yet.
            if gone and self.found.get(instance.name) is paths:
                del self.found[instance.name]
                leftover = self._nodes.new(member.parent, lambda: None)
                leftover.member = Member.leftover(paths)
                self._queue.retire(leftover)

        outlived.addCallback(done)

    async def _sweep_catalogs(self) -> None:
        zk = self._zk
        catalogs = f"{self._root}/catalogs"
        try:
            children = await zk.get_children(catalogs)
        except NoNodeError:
            return
        mine = {node.name for node in self._nodes.catalog}
        for child in children:
            part = parse_catalog_node_name(child)
            if part is None or part.agent_id != self._agent_id or child in mine:
                continue
            path = f"{catalogs}/{child}"
            stat = await zk.exists(path)
            if ours(stat, zk.session_id):
                await self._queue.counted("delete", zk.delete(path, stat.version))

    def _failed(self, failure: Failure) -> bool:
        # Retried with the writes; members wait until it is done.
        self._queue.failed(failure, self._nodes.agent)
        return False

    def _swept(self, done: bool) -> None:
        self.sweeping = False
        if done:
            self.needed = False
        self._release(done)

    def _release(self, done: bool) -> None:
        waiters, self._after_sweep = self._after_sweep, []
        for waiter in waiters:
            waiter.callback(done)


async def _all_of(calls: list[Deferred[Any]]) -> list[Any]:
    """
    The answers of `calls`, in order; the first failure as it is (a
    ``ConnectionLoss``, not wrapped), the others' consumed.
    """
    try:
        return await gatherResults(calls, consumeErrors=True)
    except FirstError as e:
        e.subFailure.raiseException()
        raise  # Not reached: raiseException raises.

"""
The publisher's part in a group (DESIGN.md section 8, "Groups"): this
agent's catalog published, and what it writes for each instance as its
role says (`sentinel.group` decides the roles and hands them over through
`assign`).

An observer of an instance writes its opinion (`sentinel.opinions`, with
``replicas`` above 1); its primary writes the instance node: with one
replica its own view, as section 5 has it, otherwise the verdict of the
observers' opinions, and until it has either, the previous primary's
verdict taken over with the node (`sentinel.takeover`). An instance that
moves away is handed to its next primary, and until that one takes the
node over, this agent keeps it: it goes on checking the instance and
writing the node as its primary did (its own view, or the verdict of its
opinion and those of the instance's observers now). A replica discovered
from a master (`sentinel.topology`) is in no catalog: it follows its
master's roles, and moves with it.

The catalog is compressed and cut into parts (`documents.catalog_parts`),
one node each, named after this agent, the catalog's digest and a token of
this process's own, so that a catalog that did not change is not written
again and another process of the same agent writes nodes of its own.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Collection
from functools import partial
from typing import Any

from twisted.logger import Logger

from sentinel.behind import BehindVerdicts
from sentinel.catalog import Catalog, catalog_node_name, catalog_parts
from sentinel.checks import printable
from sentinel.config import RedisInstance
from sentinel.documents import (
    INLINE_INSTANCES_BYTES,
    MEMBER,
    carried_verdict,
    catalog_reference,
    decided_by_of,
    instance_document,
    said_checked_at,
)
from sentinel.health import Transition
from sentinel.holders import Holders
from sentinel.instance import InstanceState
from sentinel.nodes import Node, Nodes
from sentinel.oldest import oldest_named
from sentinel.opinions import ABSENT_AFTER, Opinions
from sentinel.takeover import Takeovers
from sentinel.verdict import Verdict
from sentinel.writes import WriteQueue

log = Logger()

# Starts and stops following the group's membership (`sentinel.group`).
Following = tuple[Callable[[], None], Callable[[], None]]

# Opinions of a member asked about when it leaves with its agent node,
# beside that node (`probes_of`): all gone, its session ended with them.
# More than one, so that an opinion deleted by its member (it stopped
# observing that instance) is not taken for a session's end.
SESSION_PROBES = 2

# Seconds a primary may write the verdict it took over with a node, not
# having one of its own, before /healthz names it (`carried_long`): the
# verdict waits for the observers' opinions `ABSENT_AFTER` at most, and
# its own first check comes within an interval or two of its role.
CARRIED_LIMIT = 2 * ABSENT_AFTER
# Such verdicts named in /healthz, the oldest first.
CARRIED_NAMED = 5


class GroupRoles:
    """
    What this agent publishes for each instance in its group, by role; its
    instance nodes come from `instance_node(name)`.
    """

    def __init__(
        self,
        reactor: Any,
        root: str,
        agent_id: str,
        nodes: Nodes,
        queue: WriteQueue,
        holders: Holders,
        opinions: Opinions,
        takeovers: Takeovers,
        instance_node: Callable[[str], Node],
    ) -> None:
        self._reactor = reactor
        self._root = root
        self._agent_id = agent_id
        self._nodes = nodes
        self._queue = queue
        self._holders = holders
        self._opinions = opinions
        self._takeovers = takeovers
        self._instance_node = instance_node
        # Whether this agent publishes as a member of a group (`join`), and
        # with how many replicas: above 1, an instance node says the
        # verdict, not this agent's own view.
        self.joined = False
        self.replicas = 1
        self.quorum = 1
        self.successor: Callable[[str], bool] = lambda name: False
        # Whether another member may take an instance's node over now (the
        # group sets it): the nodes its primary watches.
        self.contested: Callable[[str], bool] = lambda name: False
        # Whether another member publishes opinions (the group sets it).
        self.voting: Callable[[str], bool] = lambda agent: True
        # Whether the group's view is from before this agent's new session,
        # or holds members not listed again since, by their catalogs from
        # before (the group sets it): a node kept for an instance a reload
        # removed waits for a current one before it is made again
        # (`Takeovers.keep`).
        self.view_stale: Callable[[], bool] = lambda: False
        # Whether a view of the group was applied (the group sets it): the
        # instances this agent publishes have their node in `nodes` since.
        self.view_known: Callable[[], bool] = lambda: False
        # Told of an instance this agent kept for its next primary once that
        # one has its node: the group checks it no more.
        self.on_handed_over: Callable[[str], None] = lambda name: None
        # Told of the verdict a node said when this agent takes it over
        # from another agent, or reattaches to it from its own previous
        # process, before it writes its own (the group sets it).
        self.on_previous_verdict: Callable[[str, dict[str, Any]], None] = (
            lambda name, previous: None
        )
        self.following: Following | None = None
        # Told of a new ZooKeeper session after one of this process's own,
        # before anything is written in it (the group sets it).
        self.on_new_session: Callable[[], None] = lambda: None
        # How many nodes of slow primaries this agent began to cover
        # (`sentinel.covers`; the group sets it).
        self.covered: Callable[[], int] = lambda: 0
        # The slow primary this agent covers an instance's node for now, if
        # any (`sentinel.covers`; the group sets it).
        self.covering: Callable[[str], str | None] = lambda name: None
        # The instances whose node this agent publishes for their primary,
        # a listed member that could not write it (covered, then kept until
        # that primary takes it over), and that primary; and how many each
        # such member has: its opinions are not counted in the verdicts
        # this agent writes (`verdict_of`).
        self.slow_primaries: dict[str, str] = {}
        self._slow_members: Counter[str] = Counter()
        self._token = os.urandom(4).hex()
        # This agent's catalog as published: its digest and size.
        self.catalog: tuple[str, int] | None = None
        self._catalog: Catalog | None = None
        # The observers of each instance this agent observes (primary
        # first), and the instance. An instance whose node this agent keeps
        # for its next primary has this agent first, then its observers as
        # assigned, which `_keeping` holds.
        self._roles: dict[str, tuple[str, ...]] = {}
        self._instances: dict[str, RedisInstance] = {}
        self._keeping: dict[str, tuple[str, ...]] = {}
        # The instances this agent is the primary of in place of an absent
        # member (`sentinel.standins`).
        self._standing_in: set[str] = set()
        # The discovered replicas of each master, which follow its roles,
        # and the master of each.
        self._followers: dict[str, set[str]] = {}
        self._masters: dict[str, str] = {}
        # The members gone in the view being applied whose sessions are
        # known to have ended (`sessions_ended`).
        self._sessions_gone: frozenset[str] = frozenset()
        # The nodes whose verdict this agent carries over from their
        # previous primary (`document`), and since when.
        self._carried: dict[str, tuple[Node, float]] = {}

    def join(
        self,
        catalog: Catalog,
        replicas: int,
        successor: Callable[[str], bool],
        following: Following,
    ) -> None:
        """
        Publish as a member of a group (`ZooKeeperPublisher.join_group`):
        `catalog` as this agent's, with `replicas` observers an instance;
        `successor(name)` says whether another member will take an
        instance's node over when it moves away; `following` starts and
        stops following the membership.
        """
        self.joined = True
        self.following = following
        self.replicas = replicas
        self.successor = successor
        self.set_catalog(catalog)

    # The catalog

    def set_catalog(self, catalog: Catalog) -> None:
        """Publish `catalog` as this agent's, in place of the previous one."""
        digest, parts = catalog_parts(catalog)
        self.quorum = catalog.quorum
        if self.catalog is not None and self.catalog[0] == digest:
            return
        self._catalog = catalog
        self._publish_catalog(catalog, digest, parts)

    def catalog_overwritten(self) -> None:
        """
        Another client wrote over a part of this agent's catalog: it is
        published again under a new token, so that its nodes' names are
        new and every member reads it again (members read a catalog they
        know by its name only once, `sentinel.membership`).
        """
        catalog = self._catalog
        if catalog is None:
            return
        log.warn(
            "this agent's catalog in {path} was written by another client:"
            " writing it again under a new name",
            path=f"{self._root}/catalogs",
        )
        self._token = os.urandom(4).hex()
        self._publish_catalog(catalog, *catalog_parts(catalog))

    def _publish_catalog(
        self, catalog: Catalog, digest: str, parts: list[bytes]
    ) -> None:
        # The new catalog first, then the old one's delete: the other way
        # round, a listing between them found none, and the others saw
        # this agent leave the group at each reload of a storm. Known as
        # this agent's before any of it is written.
        self.catalog = (digest, len(catalog.names))
        retiring, self._nodes.catalog = self._nodes.catalog, []
        for index, part in enumerate(parts):
            name = catalog_node_name(
                self._agent_id, digest, self._token, index, len(parts)
            )
            node = self._nodes.new(
                f"{self._root}/catalogs/{name}", partial(_constant, part)
            )
            self._nodes.take_back(node)
            self._nodes.catalog.append(node)
            self._queue.mark(node)
        for old in retiring:
            self._queue.retire(old)
        self._queue.mark(self._nodes.agent)

    def member_restarted(self, agent: str, created: int) -> None:
        """A new process of member `agent` holds its session (`Membership`)."""
        self._opinions.restarted(agent, created)

    def members_gone(self, agents: Collection[str]) -> None:
        """Members with no catalog listed any more (`Membership`)."""
        self._opinions.members_gone(agents)

    def probes_of(self, agent: str) -> list[str]:
        """
        Nodes of member `agent`'s session that go only with it: a few of
        its opinions this agent last read (`Opinions.probes_of`).
        """
        return self._opinions.probes_of(agent, SESSION_PROBES)

    def sessions_ended(self, agents: Collection[str]) -> None:
        """
        Of the members the view about to be applied leaves out, `agents`
        are known to have lost their sessions with every node of them
        (`Membership.sessions_gone`): the nodes this agent is made the
        primary of in their place are made anew (`Node.holder_gone`).
        """
        self._sessions_gone = frozenset(agents)

    def hold_off(
        self, holding: Callable[[], bool], unshared: Callable[[str], bool]
    ) -> None:
        """
        Write nothing while `holding()` says so: this agent waits before
        it joins the group again (`sentinel.holdoff`); `write_all` at the
        wait's end writes what is due. Nothing but the nodes of the
        instances `unshared` names (their instance node, discovery member
        and opinion: the replicas discovered from them too), which no
        other member would publish meanwhile (`sentinel.unshared`).
        """
        self._queue.holding_off = holding

        def written(node: Node) -> bool:
            state = node.state
            if state is None:
                return False  # The agent node, a catalog part.
            return unshared(state.instance.discovered_by or state.name)

        self._queue.unshared = written

    def write_all(self) -> None:
        """Write every node that is due (a wait to join again is over)."""
        self._queue.flush()

    def own_catalog_listed(self, found: Collection[tuple[str, str]]) -> None:
        """
        The membership listed this agent's complete catalogs, as (digest,
        token): if the one published is not among them once every part was
        written, it was deleted behind our back (with ``{root}``, say) and
        is written again, or the others would leave this agent out for good.
        """
        catalog = self.catalog
        nodes = self._nodes.catalog
        if catalog is None or not nodes or (catalog[0], self._token) in found:
            return
        if not all(node.owned and not node.dirty for node in nodes):
            return  # Not written yet, or being written: not missing.
        log.warn(
            "this agent's catalog is missing from {path}: writing it again",
            path=f"{self._root}/catalogs",
        )
        for node in nodes:
            node.owned = False
            self._queue.mark(node)

    def listed_instances(self, names: Collection[str]) -> list[str] | dict[str, Any]:
        """
        The agent node's ``instances``: the names this agent can check, or,
        when they are too many for a node rewritten every heartbeat, where
        its catalog lists them (`documents.catalog_reference`).
        """
        listed = sorted(names)
        if self.catalog is None or _fits_inline(listed):
            return listed
        digest, count = self.catalog
        prefix = f"{self._root}/catalogs/{self._agent_id}.{digest}.{self._token}"
        return catalog_reference(prefix, digest, count)

    # Roles

    @property
    def primaries(self) -> int:
        """The instances this agent is the primary of."""
        return sum(1 for node in self._nodes.instances.values() if node.takeover)

    def primary_of(self, state: InstanceState, transition: Transition | None) -> bool:
        """
        A check of an instance this agent observes: its opinion written if
        it changed, and whether this agent writes the instance's node.
        """
        observers = self._roles.get(state.name)
        if observers is None:
            observers = self._follow_master(state)
        me = self._agent_id
        if self.replicas > 1 and me in observers:
            self._opinions.publish(state, transition)
        # observers[0], not observers[:1] == (me,): this runs after every
        # check, and builds nothing.
        return bool(observers) and observers[0] == me

    def _follow_master(self, state: InstanceState) -> tuple[str, ...]:
        """A replica discovered from a master follows its roles, if any."""
        master = state.instance.discovered_by
        if master is None:
            return ()
        observers = self._roles.get(master, ())
        if observers:
            self._followers.setdefault(master, set()).add(state.name)
            self._masters[state.name] = master
            self.assign(
                state.name, observers, state.instance, master in self._standing_in
            )
        return observers

    def assign(
        self,
        name: str,
        observers: tuple[str, ...],
        instance: RedisInstance | None,
        standing_in: bool = False,
    ) -> None:
        """
        The observers of `name` (primary first) are now `observers`: write
        its opinion if this agent is one of them, its verdict (or, with
        one replica, its node as section 5 has it) if it is the primary,
        and if it no longer is, keep its node for the next primary until
        that one takes it over, or delete it if no other member knows it.
        `standing_in`: first in place of an absent primary, it makes the
        node where it is missing and takes none over (`sentinel.standins`).
        """
        me = self._agent_id
        before = self._roles.get(name, ())
        primary = observers[:1] == (me,)
        if primary and standing_in:
            self._standing_in.add(name)
        else:
            self._standing_in.discard(name)
        if instance is not None:
            self._instances[name] = instance
        node = self._nodes.instances.get(name)
        # Everything decided and recorded before the node is handed over:
        # an answer that comes at once (it is not ours) ends the keeping
        # from within (`handed_over`).
        keeping = (
            not primary
            and before[:1] == (me,)
            and node is not None
            and not node.removed
            and self._takeovers.keeping
            and self.successor(self._masters.get(name, name))
        )
        if keeping:
            self._keeping[name] = observers
            self._roles[name] = (me, *(a for a in observers if a != me))
        else:
            self._keeping.pop(name, None)
            if me in observers:
                self._roles[name] = observers
            else:
                self._roles.pop(name, None)
                self._instances.pop(name, None)
        self._note_slow_primary(name, observers, primary, keeping)
        if self.replicas > 1:
            self._opinions.observe(name, me in observers)
        if primary:
            if node is None or node.removed:
                node = self._instance_node(name)
                self._nodes.instances[name] = node
                opinion = self._nodes.opinions.get(name)
                if opinion is not None:
                    # An observer becoming primary (its primary's session
                    # expired): its own checks so far are a verdict now,
                    # rather than after its next check, up to an interval
                    # later, while the node is missing.
                    node.state = opinion.state
            if node.released:
                node.released = False
                self._holders.release(node, "it moved back to this agent")
            node.takeover = True
            if node.standing_in and not standing_in and node.parked:
                # Made only where missing until now (back on a new session,
                # or for an absent member), and another session's there: its
                # primary now, it takes it over at once, not at the recheck.
                self._holders.release(node, "its primary now")
            node.standing_in = standing_in
            if before[:1] not in ((), (me,)) and not standing_in:
                # Before the opinions are heard: an answer may mark the
                # node for writing at once.
                node.held_before = not node.owned
                node.held_by = before[0]
                node.holder_gone = node.held_before and (
                    before[0] in self._sessions_gone
                )
            if self.replicas > 1:
                self._opinions.listen(name, observers)
            if before[:1] not in ((), (me,)) and instance is not None:
                self._takeovers.coming(instance)
            self._queue.mark(node)
        elif keeping:
            assert node is not None
            # No instance given: a reload removed it (a discovered replica
            # has none given either, and follows a master still known).
            node.unconfigured = instance is None and name not in self._masters
            if self.replicas > 1:
                self._opinions.listen(name, self._roles[name])
            self._takeovers.hand_off(node, observers[0] if observers else None)
        elif before[:1] == (me,):
            self._hand_off(name)
        for follower in list(self._followers.get(name, ())):
            # Its discovered replicas move with it.
            self.assign(follower, observers, None, standing_in)
        if name not in self._roles:
            self._followers.pop(name, None)

    def _note_slow_primary(
        self, name: str, observers: tuple[str, ...], primary: bool, keeping: bool
    ) -> None:
        """
        Keep the slow primary `name`'s node is published for, for as long
        as this agent covers it or keeps the node for that primary; forget
        it at any other role. The one the cover is for, not whoever comes
        after this agent in `observers`: a cover outlives a change of the
        view by up to a look (`covers.COVER_LOOK`), and this agent, the
        primary now in that view, left out its healthy secondary meanwhile.
        """
        slow = self.slow_primaries.get(name)
        covered_for = self.covering(self._masters.get(name, name))
        if primary and covered_for is not None and covered_for in observers[1:]:
            now: str | None = covered_for
        elif slow is not None and keeping and self._keeping[name][:1] == (slow,):
            now = slow
        else:
            now = None
        if now == slow:
            return
        self._forget_slow_primary(name)
        if now is not None:
            self.slow_primaries[name] = now
            self._slow_members[now] += 1

    @property
    def slow_members(self) -> dict[str, int]:
        """
        The members whose opinions no verdict this agent writes counts
        (`verdict_of`), each with how many nodes this agent covers or
        keeps for it.
        """
        return dict(sorted(self._slow_members.items()))

    def _forget_slow_primary(self, name: str) -> None:
        """`name`'s node is published for no slow primary (any more)."""
        slow = self.slow_primaries.pop(name, None)
        if slow is None:
            return
        self._slow_members[slow] -= 1
        if not self._slow_members[slow]:
            del self._slow_members[slow]

    def watch_missing(
        self, missing: Callable[[str], None], present: Callable[[str], None]
    ) -> None:
        """
        Be told of each reading, as a secondary, that finds an instance's
        node missing, or there (`sentinel.covers`).
        """
        self._opinions.verdict_missing = missing
        self._opinions.verdict_present = present

    def watch_behind(
        self,
        behind: Callable[[str, Any], None],
        after: Callable[[], float],
        writes_slow_at: Callable[[], float],
        listed: Callable[[str], bool] = lambda agent: True,
    ) -> None:
        """
        Be told of each reading, as a secondary, that finds an instance's
        verdict not saying this agent's opinion for `after()` seconds, with
        the node's stat, counted from the last write of this agent's found
        slow (`writes_slow_at`; `sentinel.behind`, `sentinel.covers`); only
        `listed` members are named late.
        """
        self._opinions.verdict_behind = behind
        self._opinions.behind = BehindVerdicts(after, writes_slow_at, listed)

    def verdict_made(self, name: str) -> None:
        """
        An instance's node, found missing as a secondary, was made since:
        its verdict is read again at the next check (`sentinel.covers`).
        """
        self._opinions.verdict_written(name)

    def made_or_held(self, name: str) -> bool:
        """
        Whether the node of `name` this agent publishes is made (ours) or
        found held by another session: a cover of it is over.
        """
        node = self._nodes.instances.get(name)
        return node is None or node.removed or node.owned or node.holding is not None

    def taking_over(self, name: str) -> bool:
        """
        Whether this agent, the primary of `name` in place of another
        member, has not taken its node over yet.
        """
        node = self._nodes.instances.get(name)
        return (
            node is not None
            and node.takeover
            and node.held_by is not None
            and not (node.owned or node.removed)
        )

    def keeping(self, name: str) -> bool:
        """Whether this agent keeps `name`'s node for its next primary."""
        return name in self._keeping

    @property
    def kept(self) -> set[str]:
        """
        The instances whose node this agent keeps for their next primary,
        but the discovered replicas (which move with their master).
        """
        return {name for name in self._keeping if name not in self._masters}

    def handed_over(self, name: str) -> None:
        """
        The node of `name`, kept for its next primary, is another's now:
        this agent's roles are as assigned again, and the group checks it
        no more if it does not observe it.
        """
        observers = self._keeping.pop(name, None)
        if observers is None:
            return
        self.assign(name, observers, None)
        self.on_handed_over(name)

    def unfollow(self, name: str) -> None:
        """
        A discovered replica is no longer watched (its master stopped
        listing it): its roles, its opinion and what was heard of it go.
        The group never assigns it, so nothing else would drop them, and a
        master whose list keeps changing left them behind by the thousand.
        """
        self._keeping.pop(name, None)
        self._forget_slow_primary(name)
        master = self._masters.pop(name, None)
        if master is None:
            return
        followers = self._followers.get(master)
        if followers is not None:
            followers.discard(name)
            if not followers:
                del self._followers[master]
        self._roles.pop(name, None)
        self._instances.pop(name, None)
        if self.replicas > 1:
            self._opinions.observe(name, False)
            self._opinions.forget(name)

    def watch_contested(self) -> None:
        """The membership may change: watch the nodes another may take over."""
        self._takeovers.watch_contested()

    def view_changed(self) -> None:
        """
        The group's view changed: a node we let another primary have is
        asked about again (we may be its primary in this view).
        """
        self._takeovers.view_changed()

    def _hand_off(self, name: str) -> None:
        """
        `name` moved away, and its node is not kept: taken over already,
        or no other member knows the instance (then it goes).
        """
        self._opinions.forget(name)
        node = self._nodes.instances.get(name)
        if node is not None and not node.removed:
            self._masters.pop(name, None)
            self._takeovers.drop(name, node)

    # What the primary writes

    def publishes(self, name: str) -> bool:
        """
        Whether this agent is the primary of `name`, a replica discovered
        from a master included: it writes the instance's node.
        """
        return self._roles.get(name, ())[:1] == (self._agent_id,)

    def others_agent_nodes(self, name: str) -> list[str]:
        """
        The agent nodes of the other observers of `name` (its primary
        first), whose sessions hold the members a cover or a stand-in of
        this agent's may replace (`Members`).
        """
        return [
            f"{self._root}/agents/{agent}"
            for agent in self._roles.get(name, ())
            if agent != self._agent_id
        ]

    def verdict_of(self, name: str) -> Verdict | None:
        """The verdict of an instance this agent is the primary of, if any."""
        observers = self._roles.get(name, ())
        if observers[:1] != (self._agent_id,):
            return None
        # Capped at the observers that publish an opinion (this agent, and
        # members with replicas above 1): a quorum counting a member that
        # never writes one (replicas = 1) is never reached, and a dead
        # instance would stay up for as long as the members disagree. Nor
        # is such a member's opinion node counted: it is a previous
        # process's, left on the session it reattached to, and as old.
        # Nor are the opinions of a slow primary this agent covers for, or
        # keeps a node of after a cover (`slow_primaries`), of any
        # instance: the cover exists because that member cannot write, so
        # its opinions say what it found before, whatever it finds now
        # (its live session keeps them; or gone with its session, they
        # are missing), and counted they held the quorum out of reach:
        # with two replicas and quorum 2, an instance that died during a
        # cover stayed published up and listed until the primary wrote
        # again, whether it was that member's or this agent's, the member
        # its secondary (`benchmarks/quorumcover.py`). It counts again
        # once it has taken back every node this agent covered for it,
        # which it does at its first writes that go through. The other
        # observers, which can write, count as ever: one of them alone,
        # with three replicas and quorum 2, still publishes no down.
        # Likewise a primary found late here (`sentinel.behind`), covered
        # by another member or not: its opinions are as frozen.
        slow = self._slow_members
        late = self._opinions.behind.late
        voters = {
            a
            for a in observers
            if a == self._agent_id
            or (a not in slow and a not in late and self.voting(a))
        }
        node = self._nodes.instances.get(name)
        state = None if node is None else node.state
        # The instance as checked (a reload may have changed it), or
        # before this agent's first check, as assigned.
        instance = self._instances.get(name) if state is None else state.instance
        # Held back while opinions are unanswered only if the node still
        # says its previous primary's verdict (`Opinions.verdict`).
        hold = node is not None and node.previous is not None
        return self._opinions.verdict(
            name, observers, min(self.quorum, len(voters)), voters, instance, hold
        )

    def verdict_changed(self, node: Node) -> bool:
        """Whether the verdict at `node` changed since last marked (and mark it)."""
        verdict = self.verdict_of(node.name)
        decided = None if verdict is None else verdict.decisive()
        if decided is None or decided == node.decided:
            return False
        node.decided = decided
        return True

    def verdict_error_cleared(self, node: Node) -> bool:
        """
        Whether the verdict at `node`, unchanged (`verdict_changed`), no
        longer says an error its last write took from an opinion (an
        observer's, written during its blip and again once it was over:
        `Node.blip_over`).
        """
        verdict = self.verdict_of(node.name)
        return verdict is not None and self._opinions.error_cleared(node.name, verdict)

    def document(self, node: Node) -> dict[str, Any] | None:
        """
        What the primary writes at an instance node, or None if nothing
        yet: its own document, or until it has one, what the node said
        when this agent took it over.
        """
        document = self._own_document(node)
        if document is not None:
            if node.previous is not None:
                self._readdressed(node, node.previous, document)
            # The node says ours from now on: what it said before is no
            # longer true, and written again later (the same node object
            # moving back to us, say) it would date the node back.
            node.previous = None
            self._carried.pop(node.name, None)
            return self._naming_member(node, document)
        if node.previous is not None:
            # Until our own verdict: the previous one, now ours to refresh,
            # saying whose it is (the member it names still lists the
            # instance until ours replaces it).
            carried = self._carried.get(node.name)
            if carried is None or carried[0] is not node:
                self._carried[node.name] = (node, self._reactor.seconds())
            previous = carried_verdict(node.previous, self._agent_id)
            return self._naming_member(node, previous)
        return None

    def carried_long(self) -> str | None:
        """
        The verdicts this agent has carried over from their previous
        primary (`document`) for `CARRIED_LIMIT` or more, not having one
        of its own, for /healthz: how many, the oldest `CARRIED_NAMED`
        with whose they are and for how long; None if there are none.
        Readers take such a node for this agent's decision of now, its
        ``checked_at`` aside: the new primary cannot decide (its checks
        stalled, or no opinion read).
        """
        now = self._reactor.seconds()
        long = []
        for name, (node, since) in list(self._carried.items()):
            if (
                self._nodes.instances.get(name) is not node
                or node.previous is None
                or node.removed
            ):
                del self._carried[name]  # Decided, or no longer ours.
            elif node.owned and now - since >= CARRIED_LIMIT:
                long.append((since, name, decided_by_of(node.previous)))
        if not long:
            return None

        def said(found: tuple[float, str, str]) -> str:
            since, name, agent = found
            return f"{name} (from {printable(agent, 64)}, for {now - since:.0f} s)"

        return (
            f"{len(long)} verdict(s) carried over from their previous primary "
            f"for {CARRIED_LIMIT:g} s or more, this agent having none of its "
            "own: " + oldest_named(long, CARRIED_NAMED, said)
        )

    def _naming_member(self, node: Node, document: dict[str, Any]) -> dict[str, Any]:
        """
        A verdict names the discovery member this agent holds for the
        instance, if it holds one (`documents.said_member`): the next
        primary replaces it as it takes the node over, with no look at the
        service first (a ``get`` of each of its members). It rides on the
        node's next write, at the latest its refresh, not a write of its
        own; an observer's reading older than the member names none, and
        its next primary looks. Schema 1 (one replica) stays as section 5
        has it.
        """
        if self.replicas == 1:
            return document
        held = self._nodes.members.get(node.name)
        member = None if held is None or held.released else held.member
        path = None if member is None else member.path
        if path is None:
            # None of ours yet: the one that lists the instance, named by
            # the verdict this agent took over, which the next primary
            # replaces if this agent stops first.
            path = node.taken_member
        if path is not None:
            document[MEMBER] = path
        return document

    def _readdressed(
        self, node: Node, previous: dict[str, Any], document: dict[str, Any]
    ) -> None:
        """
        Log it when this agent's first document of a node taken over from
        another member gives another address than that member's did: their
        configs disagree, and readers see the instance move as its primary
        does (with one replica, no opinion tells the members otherwise).
        """
        said = (previous.get("host"), previous.get("port"))
        if previous["agent"] == self._agent_id or said == (
            document["host"],
            document["port"],
        ):
            return
        log.warn(
            "{path}: its previous primary {agent} published it at {said}, "
            "this agent's config gives {host}:{port}: the members' configs "
            "disagree on its address, and each primary publishes its own",
            path=node.path,
            agent=printable(previous["agent"], 64),  # Node data: anyone's.
            said=printable(f"{said[0]}:{said[1]}", 300),
            host=document["host"],
            port=document["port"],
        )

    def _own_document(self, node: Node) -> dict[str, Any] | None:
        """
        The primary's own document of an instance node, if it has one and
        it rests on a check newer than the previous verdict's (`_newer`).
        """
        name = node.name
        state = node.state
        now = self._reactor.seconds()
        own = None
        if state is not None and state.health.current(now):
            own = state.health.checked_at
        if self.replicas == 1:
            if own is not None and self._newer(node, own, now):
                node.keep_since()
                assert state is not None
                health = state.health
                node.built_contrary = health.unbacked_since is not None
                return instance_document(state.instance, health, self._agent_id)
        else:
            verdict = self.verdict_of(name)
            # The instance as checked (a reload may have changed it), or
            # before this agent's first check, as assigned.
            instance = self._instances.get(name) if state is None else state.instance
            if verdict is None or instance is None:
                return None
            checks = [c for c in (own, verdict.source.checked_at) if c is not None]
            if self._newer(node, max(checks, default=None), now):
                return self._opinions.verdict_document(node, instance, verdict)
        return None

    @staticmethod
    def _newer(node: Node, checked_at: float | None, now: float) -> bool:
        """
        Whether a document resting on a check at `checked_at` is newer than
        the previous verdict the node said when taken over, if any. A
        member back from a freeze, holding the opinions it heard before,
        otherwise wrote them over the verdict the others had published
        meanwhile (a dead instance up again).
        """
        if node.previous is None:
            return True
        said = said_checked_at(node.previous)
        # Another agent's clock: taken when it is not ahead of ours.
        if said is None or said > now:
            return True
        return checked_at is not None and checked_at > said


def _fits_inline(names: list[str]) -> bool:
    # JSON adds quotes and a comma to each name.
    size = sum(len(name) + 3 for name in names)
    return size <= INLINE_INSTANCES_BYTES


def _constant(data: bytes) -> bytes:
    return data

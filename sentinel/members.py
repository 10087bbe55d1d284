"""
Each instance's discovery member, as its state says (DESIGN.md section 5,
"Discovery nodes"): present while the instance is up and ready, rewritten
when what it says changes (its role, in the nerve form), deleted when the
instance goes down or not ready or is removed, and moved when a reload
gives the instance another service or endpoint.

A member is one more node of the write machinery (coalesced, retried,
rewritten after a reconnection); what a write of it does is
`sentinel.discovery`'s, which creates a sequential node once. On a session
inherited from the previous process, members are written only once the
sweep found the members it left (`sentinel.sweep`). In a group with
``replicas`` above 1, the verdict, not this agent's own view, says whether
an instance's member exists (until a new primary's first verdict, the
previous one it took over). In a group, a member is created only once the
instance's node is ours, or in the transaction that makes it ours
(`along`): a new primary's replaces the previous primary's in one
transaction (`Discovery.take_named`, `Discovery.take_from`), and the
previous primary, once it knows the node is not its own, forgets a
member of its own that is gone (replaced) rather than make it again
beside the new one. Each refresh of the instance's node asks about its
member too (`refresh`). Like the instance's node, a member is neither
made nor deleted from a stale history (the agent frozen): it waits for
the next check.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import attr
from kazoo.exceptions import KazooException
from twisted.internet.defer import CancelledError, TimeoutError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from sentinel.discovery import Discovery, Member
from sentinel.documents import discoverable, member_document_of, previous_presence
from sentinel.guard import LOOP_LOG_EVERY
from sentinel.instance import InstanceState
from sentinel.nodes import LOG_NAMESPACE, Node, Nodes, encode
from sentinel.ownership import ours
from sentinel.roles import GroupRoles
from sentinel.sweep import Sweep
from sentinel.takeover import MEMBER_HANDOFF_LIMIT
from sentinel.writes import WriteQueue
from sentinel.zk import MemberMove

log = Logger(namespace=LOG_NAMESPACE)


class Members:
    """The discovery members of the instances this agent publishes."""

    def __init__(
        self,
        discovery: Discovery | None,
        nodes: Nodes,
        queue: WriteQueue,
        sweep: Sweep,
        roles: GroupRoles,
        clock: IReactorTime,
        arm: Callable[[Node], None] = lambda node: None,
    ) -> None:
        """
        @param arm: watch a member's node for its deletion by another
            client (`Guard.arm`), for one made outside its own write.
        """
        self.discovery = discovery
        self._nodes = nodes
        self._queue = queue
        self._sweep = sweep
        self._roles = roles
        self._clock = clock
        self._arm = arm
        # Members another client deleted or overwrote, made again; the
        # last line that said so, and the repairs since, unlogged.
        self.repaired = 0
        self._repair_logged_at = float("-inf")
        self._repairs_unlogged = 0
        # Member nodes moving in their instance's takeover (`along`): not
        # written meanwhile, the transaction decides.
        self._moving_along: set[Node] = set()

    @property
    def held(self) -> list[str]:
        """The discovery members this agent holds now."""
        return sorted(
            m.path
            for node in self._nodes.members.values()
            if (m := _member(node)).path is not None
        )

    def parents(self) -> set[str]:
        """
        The parents this session may hold a member under: each instance's
        member's (the instances published), those of members on their way
        out until deleted, and those of the members a sweep found and that
        are not yet taken or deleted.
        """
        parents = set()
        nodes = self._nodes
        for node in (*nodes.members.values(), *nodes.retired):
            member = node.member
            if member is None:
                continue
            if member.parent:
                parents.add(member.parent)
            for path in (member.path, member.replaces, *member.found):
                if path is not None:
                    parents.add(path.rsplit("/", 1)[0])
        for paths in self._sweep.found.values():
            parents.update(path.rsplit("/", 1)[0] for path in paths)
        return parents

    def stats(self) -> dict[str, Any] | None:
        """``zookeeper.discovery`` in /debug/stats (None without discovery)."""
        if self.discovery is None:
            return None
        return {
            "form": self.discovery.form,
            "members": len(self.held),
            "repaired": self.repaired,
            "own_sets_applied_unanswered": self.discovery.own_sets_applied,
        }

    def unlisted(self) -> dict[Node, str]:
        """
        The members this agent should hold and holds none of: the
        instance is up and ready, this agent publishes its node (its
        primary), and no member of ours lists it. Each member's node, and
        which instance's member it is, and where. Not while another
        session holds the instance node this agent would make only in
        place of an absent member (`Node.standing_in`): its holder lists
        the member.
        """
        found: dict[Node, str] = {}
        if self.discovery is None:
            return found
        nodes = self._nodes
        for name, node in nodes.members.items():
            member = node.member
            if member is None or member.path is not None or node.released:
                continue
            instance = nodes.instances.get(name)
            if (
                instance is None
                or instance.released
                or instance.removed
                or node.removed
                or node.state is None
                or (instance.standing_in and instance.holding is not None)
            ):
                continue
            presence = self._present(node)
            if presence is not None and presence[0]:
                found[node] = f"{name} under {member.parent}"
        return found

    def update(self, state: InstanceState) -> None:
        """Rewrite, create or delete the instance's member as its state says."""
        discovery = self.discovery
        if discovery is None:
            return
        node = self._nodes.members.get(state.name)
        if node is not None and discovery.moves(_member(node), state.instance):
            self._queue.retire(node)
            node = None
        if node is None:
            node = self._new_member(discovery, state)
        elif node.released:
            # Handed over with the instance's node, which came back to us
            # before its new primary took it: ours to write again.
            node.released = False
            node.cancel_recheck()
            _member(node).written = None
        node.state = state
        self._note_moving(node)
        self._queue.mark(node)

    def _new_member(self, discovery: Discovery, state: InstanceState) -> Node:
        """The instance's member's node, new, not yet written."""
        member = discovery.member_for(state.instance)
        member.found = self._sweep.take(state.name) or []
        node = self._member_node(member, discovery.form)
        node.state = state
        self._nodes.members[state.name] = node
        return node

    def instance_owned(self, instance: Node) -> None:
        """
        The instance's node was written, ours: a member that waited for it
        (`write`) is written now, and a new primary's member is made from
        the verdict it took over, until its own (`_present`).
        """
        node = self._nodes.members.get(instance.name)
        if node is None:
            if _taken(instance) and instance.state is not None:
                self.update(instance.state)
        elif _member(node).path is None:
            self._note_moving(node)
            self._queue.mark(node)

    async def along(
        self, instance: Node, session: int, listed: bool
    ) -> MemberAlong | None:
        """
        The instance's member, to be made in the transaction that takes
        the instance's node over from the agent of `session`, in place of
        the member the verdict taken over names (`Discovery.take_named`),
        if that one is there and the verdict has the instance in
        discovery: readers then find the endpoint listed once throughout,
        as they find the node. Made after the node, in a write of its own,
        the member followed it by about a second (at a leave at 1,000
        instances, three agents, ``replicas = 2``: nodes taken p50 0.88 s
        after the signal, members p50 2.34 s), past the leaver's wait for
        some, whose session was then left open for them. A group's
        verdict (``replicas`` above 1) that has the instance in discovery
        (`listed`) but names no member is that agent's, which made its
        member after the node and left before its rewrite naming it: that
        member is found by its prefix (`Discovery.take_unnamed`). None:
        the member is written after the node, as before (no member listed,
        or it is gone or not that agent's, a sweep still to find ours).
        """
        discovery = self.discovery
        named = instance.taken_member
        if discovery is None or instance.state is None:
            return None
        if named is None and not (listed and self._roles.replicas > 1):
            # With one replica a verdict never names its member (schema 1):
            # the member follows its node after a look, as it always did,
            # rather than a listing of the service in every takeover.
            return None
        node = self._nodes.members.get(instance.name)
        if node is None:
            # An observer until now holds no member of it: made for this.
            node = self._new_member(discovery, instance.state)
        member = _member(node)
        if (
            member.path is not None
            or member.replaces is not None
            or member.found
            or node.writing
            or node.released
            or node.removed
            or node.state is None
            or (self._sweep.needed and not self._sweep.members_found)
        ):
            return None
        presence = self._present(node)
        if presence is None or not presence[0]:
            return None
        data = node.data()
        if data is None:
            return None
        try:
            if named is None:
                taken = await discovery.take_unnamed(member, session)
            else:
                taken = await discovery.take_named(member, named, session)
            if not taken:
                return None
        except Exception:
            # Not read (a timeout): the node goes alone, its member after.
            self._not_read("taking the member a node named", node.name)
            return None
        move = discovery.move(member, data)
        if move is None:
            discovery.not_moved(member)
            return None
        self._moving_along.add(node)
        return MemberAlong(node, member, move)

    def moved_along(self, instance: Node, along: MemberAlong, path: str) -> None:
        """
        `along` was made at `path` with the instance's node, which names
        it at its next write (`_named`).
        """
        assert self.discovery is not None
        self._moving_along.discard(along.node)
        self.discovery.moved(along.member, path, along.move.data)
        # Watched for its deletion from now, as a member our own write
        # made is once written (`NodeWriter.write`): its write queued
        # meanwhile left it to the transaction and watched nothing, and
        # nothing writes it again before the refresh. Replaced by a
        # cover's while this agent could not write (`sentinel.covers`),
        # it went unheard for 30 s: this agent took the node back and
        # listed the instance by the cover's member, then, at the
        # refresh, made its own beside it until the cover's agent let its
        # own go (63 of 90 members moved along unwatched with three real
        # agents; 31 endpoints for 30 instances).
        self._arm(along.node)
        instance.taken_member = None
        instance.taken_from = None
        along.node.moving = False
        self._named(instance)
        # Written as `along` found the verdict: one changed since (its
        # write meanwhile was left to the transaction, `write`) is written
        # now. Before, nothing marked the member again, and it listed a
        # dead endpoint (or none for a live one) until the refresh: 11 of
        # 11 for 29 s in the fakes, the instances down while it moved.
        self._follow(along.node)

    def not_moved_along(self, along: MemberAlong, unanswered: bool = False) -> None:
        """
        The transaction with `along` was refused, or (`unanswered`) it
        failed with no answer (a timeout, a lost connection): written
        after the node. Unanswered, it may have made the member all the
        same: looked for before one is made, as a create with no answer
        is (`Member.search`). Before, a second member was made beside the
        one the transaction had made, both this session's, and the
        endpoint was listed twice for as long as the session lived (11 of
        11 in the group fakes, the answers lost).
        """
        assert self.discovery is not None
        self._moving_along.discard(along.node)
        self.discovery.not_moved(along.member)
        if unanswered:
            along.member.search = True
        self._queue.mark(along.node)

    def _note_moving(self, node: Node) -> None:
        """
        A member not made yet whose instance's node this agent took over
        from another agent replaces that agent's: it is written with the
        nodes readers miss (`Node.moving`), until it is made. Behind the
        members' refreshes, at a leave at 3,000 instances (three agents,
        ``replicas = 2``), the moves began p50 2.4-3.0 s after their
        node's takeover (their own two calls took 0.3 s), the last ones
        5-15 s after the signal; past the leaver's session, 10 s after its
        exit, the endpoints they list went missing.
        """
        if node.moving or _member(node).path is not None or node.state is None:
            return
        instance = self._nodes.instances.get(node.state.name)
        if instance is not None and _taken(instance):
            node.moving = True
            # Queued among the members before the node was taken over.
            self._queue.hurry(node)

    def held_elsewhere(self, instance: Node) -> None:
        """
        The instance's node, which this agent publishes as its primary, is
        held by another agent's session: it took the node while our views
        of the group differed (it is back in a second or two, if this
        agent's view holds), or landed its replacement of our member
        after this agent took the node back. While the node is not ours,
        the member is not ours to keep beside the holder's: once a look at
        the parent finds the holder holding one like it
        (`Discovery.outlived`, every `discovery.HANDED_OVER_CHECK`), ours
        goes (`write`), and it is made again, in the place of the
        holder's, once the node is ours again (`instance_owned`). Both
        agents keep to the same rule, the holder's member stays, so one
        of the two goes and never both. Kept, it listed the endpoint
        twice for as long as the views differed: 249 of 3,000 endpoints
        for p50 97 s as a group formed under load, the first agent's
        member beside a joiner's.
        """
        discovery = self.discovery
        node = self._nodes.members.get(instance.name)
        if discovery is None or node is None or node.released:
            return
        member = _member(node)
        if member.path is None or member.beside_holder:
            return
        beside = discovery.outlived(
            member, instance.path, MEMBER_HANDOFF_LIMIT, gone_counts=False
        )

        def answered(listed: bool) -> None:
            if (
                listed
                and self._nodes.members.get(instance.name) is node
                and not node.released
            ):
                member.beside_holder = True
                self._queue.mark(node)

        beside.addCallback(answered)

    def refresh(self, name: str) -> None:
        """
        The instance's node is refreshed: its member is asked about too, and
        made again if another client deleted or overwrote it.
        """
        node = self._nodes.members.get(name)
        if node is not None:
            self._queue.mark(node)

    def own_verdict(self, name: str) -> None:
        """
        The instance's node says this agent's own verdict from now on,
        where it said the one it was taken over with (`GroupRoles.document`):
        its member, which said that one's presence too (`_present`), is
        written again if it now says otherwise. Its own verdict had been
        decided before (`GroupRoles.verdict_changed`, which marks the
        member) but held back while the observers' opinions were read: a
        node taken from a primary that could not write (`sentinel.behind`)
        moved its member along, listed as the verdict taken over said
        (``up``), then said ``down``, and the member listed the dead
        endpoint for as long as this agent kept the node: 26 of 26 with
        real agents (`benchmarks/quorumcover.py --victim held`).
        """
        node = self._nodes.members.get(name)
        if node is not None:
            self._follow(node)

    def _follow(self, node: Node) -> None:
        """
        Write the member again if what it should say (`_present`) is not
        what it was last written with; no write when it is, nor from a
        stale history (the next check's write decides). A member retired
        meanwhile (its instance removed, or moved to another service or
        endpoint) is deleted: its delete was left to the transaction too.
        """
        if node.removed:
            self._queue.mark(node)
            return
        if node.released or node.state is None:
            return
        if self._present(node) is not None and node.data() != _member(node).written:
            self._queue.mark(node)

    def verdict_changed(self, name: str, state: InstanceState | None) -> None:
        """The verdict on `name` changed: its member follows."""
        member = self._nodes.members.get(name)
        if member is not None:
            self._queue.mark(member)
        elif state is not None:
            self.update(state)

    def remove(self, name: str) -> None:
        """
        The instance is no longer published here: its member goes, unless
        it waits for the instance's new primary (`sentinel.takeover`).
        """
        member = self._nodes.members.get(name)
        if member is not None and not member.released:
            del self._nodes.members[name]
            self._queue.retire(member)
        found = self._sweep.take(name)
        if found:
            # Members the previous process left for it: deleted now.
            leftover = self._nodes.new(found[0].rsplit("/", 1)[0], lambda: None)
            leftover.member = Member.leftover(found)
            self._queue.retire(leftover)

    async def write(self, node: Node, member: Member) -> None:
        """One write of a member's node (`writer.NodeWriter` calls it)."""
        discovery = self.discovery
        assert discovery is not None
        if node.released and not node.removed:
            # Handed to the instance's next primary (`sentinel.takeover`).
            return
        if node in self._moving_along:
            # In its instance's takeover (`along`), which decides.
            return
        # A reattached session's members are found first, never created
        # twice.
        await self._sweep.wait()
        data = None
        instance = None
        if not node.removed:
            assert node.state is not None
            instance = self._nodes.instances.get(node.state.name)
            if instance is not None and member.path is None:
                if (instance.takeover or instance.released) and not instance.owned:
                    # In a group, while another agent's session holds the
                    # instance's node, its member stands: ours waits for
                    # the node (`instance_owned`), not to list it twice;
                    # so does the member of a node kept for its next
                    # primary (back on a new session: that primary may
                    # hold it already, unheard of yet). Only our previous
                    # session's member, if it is still there, is replaced
                    # at once (one gone with its session is no reason to
                    # create ours).
                    await discovery.settle_replaced(member)
                    if member.replaces is None:
                        return
                named, session = instance.taken_member, instance.taken_from
                if (
                    named is not None
                    and member.replaces is None
                    and await discovery.take_named(member, named, session)
                ):
                    # The member the verdict we took over named: ours
                    # replaces it, with no look.
                    instance.taken_from = None
                elif session is not None:
                    # The previous primary's member: ours replaces the one
                    # a look outside the write slots finds.
                    discovery.take_from(
                        member,
                        session,
                        instance.taken_at,
                        lambda: self._queue.enqueue(node),
                    )
                    instance.taken_from = None
                    if member.replaces is None:
                        self._listed_elsewhere(node.state.name, member, instance)
                elif instance.standing_in and member.replaces is None:
                    await self._in_place_of_live(node.state.name, member)
            if self._present(node) is None:
                # A stale history (the agent frozen): the member is neither
                # made nor deleted from it, as the instance node is not
                # written from it; the next check's write decides.
                return
            data = node.data()
            beside, member.beside_holder = member.beside_holder, False
            if (
                instance is not None
                and instance.takeover
                and not instance.owned
                and data is not None
                and member.path is not None
            ):
                if await discovery.lost(member):
                    # Taken over with the instance's node, or deleted, while
                    # the node is not known to be ours: not made again until
                    # it is (`instance_owned`), then in the place of the new
                    # holder's.
                    if _owned(instance):
                        # Ours again while we asked (both deleted by a
                        # ``deleteall`` of the chroot, the node made again
                        # first): `instance_owned` found the member still
                        # held then and left it; made now, not at the
                        # refresh 30 s later.
                        self._note_moving(node)
                        self._queue.mark(node)
                    return
                if beside and await self._held_by_another(instance):
                    # The holder of the node holds a member like ours
                    # (`held_elsewhere`): ours goes.
                    log.info(
                        "discovery member {path} of {name} let go: another"
                        " agent holds the instance's node and a member like it",
                        path=member.path,
                        name=instance.name,
                    )
                    data = None
        held = member.path
        if data is None:
            # Our own delete: ZooKeeper fires the deletion's watch before
            # the delete's reply, while the member still looks held; the
            # guard must not take it for one deleted behind our back.
            node.guarded = None
        replaced = (
            None if instance is None else partial(self._replaced, instance, member)
        )
        damage = await discovery.write(member, data, replaced)
        node.moving = False
        if instance is not None and member.path is not None:
            # Ours lists it now, and the node names ours.
            instance.taken_member = None
            if member.path != held:
                self._named(instance)
        if damage is not None:
            self.repaired += 1
            self._log_repair(held, damage, member.path)

    def _log_repair(self, held: str | None, damage: str, path: str | None) -> None:
        """
        Say that a member another client deleted or overwrote is made
        again: at most one line per `LOOP_LOG_EVERY`, the next saying how
        many went unlogged (``repaired`` in /debug/stats counts each).
        Before, each was a warning of its own: a ``deleteall`` of the
        discovery root logged one per member, and a client deleting
        members in a loop one per member twice a second (guard's
        `REWRITE_AFTER`). The deletions themselves are the guard's lines.
        """
        now = self._clock.seconds()
        if now - self._repair_logged_at < LOOP_LOG_EVERY:
            self._repairs_unlogged += 1
            return
        unlogged, self._repairs_unlogged = self._repairs_unlogged, 0
        self._repair_logged_at = now
        log.warn(
            "discovery member {held} was {damage} by another ZooKeeper"
            " client: written again, at {path}{since}",
            held=held,
            damage=damage,
            path=path,
            since=f" ({unlogged} more member(s) made again since the last such line)"
            if unlogged
            else "",
        )

    def _listed_elsewhere(self, name: str, member: Member, instance: Node) -> None:
        """
        Log it when a node taken over from an agent whose verdict had the
        instance in discovery brings no member of that agent's to replace
        under this agent's service: that agent lists it elsewhere (another
        service, form or root, or other nerve labels), for their configs
        disagree, and readers find it there too until that agent lets its
        member go (`takeover.MEMBER_HANDOFF_LIMIT`); or, less likely, that
        agent deleted its member before the look (a stop that gave up
        waiting for this takeover). With one replica no opinion tells the
        members of a disagreement, and before, nothing said it.
        """
        agent = instance.taken_listed_by
        instance.taken_listed_by = None
        if agent is None:
            return
        log.warn(
            "discovery: {name} taken over from {agent}, which listed it up and"
            " ready, but no member of its is under {parent} to replace: the"
            " members' configs disagree on its discovery (service, labels,"
            " form or discovery_root), or that agent deleted its member first"
            " (a stop); a member of its elsewhere stays up to {limit:g} s"
            " beside this agent's",
            name=name,
            agent=agent,
            parent=member.parent,
            limit=MEMBER_HANDOFF_LIMIT,
        )

    def _named(self, instance: Node) -> None:
        """
        A member of ours was made: the verdict written at the instance's
        node names it at once (`GroupRoles`), not at the node's refresh,
        up to 30 s on. A leave within that time (seconds after a
        takeover, a start-up) had the next primary find an older name, or
        none, and look at the whole service: 163 of 210 endpoints missing
        for the 8.35 s watched at 1,000 instances, load 18--22. An
        observer's reading of the node older than this write is refused by
        the takeover's transaction (its version), and the node read anew.
        """
        if (
            self._roles.replicas > 1
            and instance.takeover
            and instance.owned
            and not (instance.removed or instance.released)
        ):
            self._queue.mark(instance)

    async def _held_by_another(self, instance: Node) -> bool:
        """Whether another session holds the instance's node now."""
        assert self.discovery is not None
        zk = self.discovery.zk
        stat = await zk.exists(instance.path)
        return stat is not None and not ours(stat, zk.session_id)

    async def _replaced(self, instance: Node, member: Member) -> bool:
        """
        Whether the member of ours found deleted was replaced by the
        instance's next primary: another session holds the instance's
        node. Its member is then that primary's to keep, and ours is not
        made again, whatever this agent still takes itself for; the node
        is written, to learn who holds it (`sentinel.writer`). The
        guard's watch can tell of the member's replacement before this
        agent knows the node is not its own (it handed the node over to
        the joining member and had not heard back), and the member made
        again was listed beside the new primary's: 1 to 3 endpoints of
        20 twice for 0.05--0.11 s at a member's return from a frozen
        session, three agents, ``replicas = 2``.
        """
        assert self.discovery is not None
        zk = self.discovery.zk
        stat = await zk.exists(instance.path)
        if stat is None:
            return False
        if ours(stat, zk.session_id):
            await self._in_place_of_named(instance, member)
            return False
        if instance.takeover:
            # Not ours, as its write will find: until it is ours again, the
            # member waits for it (`write`). Taken for ours meanwhile, the
            # member's next write (its guard's watch) made it again beside
            # the holder's, whose look then found them both.
            instance.owned = False
            instance.lost = True
        self._queue.mark(instance)
        return True

    async def _in_place_of_named(self, instance: Node, member: Member) -> None:
        """
        Ours, gone, is made again while the node we hold names another
        agent's member (the verdict we took the node back with: a cover's,
        `Takeovers.stood_in`, which replaced ours while we could not
        write): ours replaces that one in one transaction
        (`Discovery.take_named`), not listed beside it until its agent's
        next look (`Discovery.outlived`, 3 s). Our member's deletion was
        heard after the node was ours again, or the member was written
        again after a reconnection, which knows nothing of what it held:
        11 of 11 endpoints listed twice for 3 s in the fakes, 16 of 17
        with real agents, as the primary's path healed.
        """
        assert self.discovery is not None
        named = instance.taken_member
        if named is None or member.replaces is not None:
            return
        try:
            await self.discovery.take_named(member, named, instance.taken_from)
        except Exception:
            # Not read (a timeout): made as before, its holder's look ends
            # the other.
            self._not_read("taking the member a node named", instance.name)
            return

    async def _in_place_of_live(self, name: str, member: Member) -> None:
        """
        Ours is made where the instance's node was missing (a cover, a
        stand-in) and no member the node named was taken: this agent had
        not read the node since its primary's member was made, in a group
        younger than a refresh (`Opinions.named_before_missing` None, or
        an older member, gone). The member like ours that another live
        session holds (the primary's, alive) is replaced by ours in one
        transaction (`Discovery.take_live`), not listed beside it until
        the primary takes its node back: 10 to 17 endpoints of 17 with
        real agents (`benchmarks/coverdup.py --settle 0`). Only a member
        held by the session of another observer's agent node: one of the
        endpoint another client holds (a tool that registers it too, an
        agent of another group) is not ours to delete.
        """
        assert self.discovery is not None
        try:
            await self.discovery.take_live(member, self._roles.others_agent_nodes(name))
        except Exception:
            # Not read (a timeout): made as before, its holder's look ends
            # the other once the primary takes its node back.
            self._not_read("taking the live member a cover replaces", name)
            return

    def _not_read(self, what: str, name: str) -> None:
        """
        In an ``except`` of a take-over of another session's member: a
        read that failed (a timeout, a lost connection) only leaves ours
        made beside it for a while, but anything else is a bug of ours,
        counted and shown (`sentinel.bugs`), not passed over in silence.
        """
        failure = Failure()
        if not failure.check(KazooException, TimeoutError, CancelledError):
            assert self.discovery is not None
            self.discovery.zk.internal_errors.record(what, name, failure)

    async def delete(self, member: Member) -> None:
        """Delete the member at once, if it is ours (a deregistering stop)."""
        assert self.discovery is not None
        await self.discovery.write(member, None)

    def _member_node(self, member: Member, form: str) -> Node:
        node = self._nodes.new(f"{member.parent}/{member.prefix}", lambda: None)
        node.member = member

        def data() -> bytes | None:
            state = node.state
            assert state is not None
            presence = self._present(node)
            # Asked by `write` only, once it knows the history is current.
            assert presence is not None
            present, role = presence
            document = member_document_of(form, state.instance, present, role)
            return None if document is None else encode(document)

        node.data = data
        return node

    def _present(self, node: Node) -> tuple[bool, str | None] | None:
        """
        Whether an instance's member should exist, and its role; None while
        this agent's own history of it is stale (`InstanceHealth.current`,
        the rule its instance node is held back by, DESIGN.md section 8).
        """
        state = node.state
        assert state is not None
        if self._roles.replicas > 1:
            verdict = self._roles.verdict_of(state.name)
            if verdict is None:
                # Until its first verdict, a new primary says the previous
                # one, as its instance node does (`GroupRoles.document`).
                instance = self._nodes.instances.get(state.name)
                previous = None if instance is None else instance.previous
                return previous_presence(previous)
            source = verdict.source
            up = verdict.status == "up" and source.ready
            return up, source.role
        health = state.health
        if not health.current(self._clock.seconds()):
            return None
        return discoverable(health), health.replication.role


@attr.frozen
class MemberAlong:
    """An instance's member moving in its node's takeover (`Members.along`)."""

    node: Node
    member: Member
    move: MemberMove


def _member(node: Node) -> Member:
    member = node.member
    assert member is not None
    return member


def _taken(instance: Node) -> bool:
    """Whether `instance`'s node was taken over and its member not yet ours."""
    return instance.taken_from is not None or instance.taken_member is not None


def _owned(node: Node) -> bool:
    """
    Whether `node` is ours now: read again after an ``await``, where a
    check made before it (``not node.owned``) may no longer hold.
    """
    return node.owned

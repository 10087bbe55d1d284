"""
The nodes this agent writes to ZooKeeper: one record per node, and the set
of them by kind.

A `Node` says what the write machinery (`sentinel.writes`) needs of one
path: what to write there (`data`, built when a write starts, from current
state), whether it must be written, whether it is ours, whether another
session holds it (`sentinel.holders`) and, in a group, where it stands
between two primaries (`sentinel.takeover`). `Nodes` holds every node: the
agent's, its catalog's parts, each instance's node, opinion and discovery
member, and the nodes on their way out (retired: deleted, then forgotten).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from kazoo.protocol.states import WatchedEvent
from twisted.internet.interfaces import IDelayedCall

from sentinel.discovery import Member
from sentinel.health import InstanceHealth
from sentinel.instance import InstanceState
from sentinel.ownership import Holding

# The log namespace of every module of the publisher: operators' filters
# (and the JSON logs' "namespace") know the ZooKeeper side by this name.
LOG_NAMESPACE = "sentinel.publisher"

# Told of a watch that fired on a node (on the reactor thread).
NodeWatcher = Callable[["Node", WatchedEvent], None]


class Node:
    """
    One node we own (or want to): its path and what to write. `data` builds
    the bytes when a write starts (None: no node, for a member); an instance
    node and its member read their `state`, which each publish replaces (a
    reload may give a name a new state). `member` is set for a discovery
    member, whose `path` only names it in logs.

    The write queue keeps `dirty`, `queued`, `writing` and `marked_at`; a
    write sets `owned`, `version` and `written_at`. While another session holds the
    node, `holding` says which, and the node is `parked` between re-checks
    (`recheck`, `backoff`, `asked_at`); `event` keeps what a watch said
    while a call about the node was in flight, for its answer to take into
    account. The fields after `version` are a group's (`sentinel.takeover`,
    `sentinel.roles`).
    """

    __slots__ = (
        "path",
        "data",
        "state",
        "member",
        "dirty",
        "queued",
        "writing",
        "owned",
        "removed",
        "written_at",
        "marked_at",
        "holding",
        "parked",
        "event",
        "recheck",
        "backoff",
        "asked_at",
        "watcher",
        "version",
        "unanswered",
        "held",
        "takeover",
        "held_before",
        "held_by",
        "read_at",
        "changed_since_read_at",
        "holder_gone",
        "standing_in",
        "watching",
        "released",
        "unconfigured",
        "handed_to",
        "handed_at",
        "lost",
        "yielded",
        "decided",
        "previous",
        "kept",
        "said_checked_at",
        "taken_from",
        "taken_at",
        "taken_from_agent",
        "taken_from_session",
        "taken_listed_by",
        "taken_member",
        "guard",
        "guarded",
        "write_watch",
        "write_watched",
        "prune_parent",
        "due_since",
        "published_at",
        "built_checked_at",
        "built_contrary",
        "moving",
        "taken_back",
    )

    def __init__(self, path: str, data: Callable[[], bytes | None]) -> None:
        self.path = path
        self.data = data
        self.state: InstanceState | None = None
        self.member: Member | None = None
        self.dirty = False
        self.queued = False
        self.writing = False
        self.owned = False
        self.removed = False
        self.written_at: float | None = None
        # While ZooKeeper lacks what checks found (`WriteQueue.unwritten`):
        # when the node was first marked since it last had it.
        self.marked_at: float | None = None
        self.holding: Holding | None = None
        self.parked = False
        self.event: str | None = None
        self.recheck: IDelayedCall | None = None
        self.backoff = 0.0
        self.asked_at = 0.0
        # One callable per node: the bridge registers a watch once per
        # watcher, however often the node is asked about.
        self.watcher: Callable[[WatchedEvent], None] | None = None
        # The node's version as we last wrote it: a set at another version
        # fails, so that a node another agent took over is never overwritten.
        self.version = -1
        # Our sets of it that ended with no answer, which ZooKeeper may
        # have applied: the version each was sent at, and a digest of its
        # data (`sentinel.lostanswers`).
        self.unanswered: tuple[tuple[int, bytes], ...] = ()
        # The version our last acknowledged write made of it, and a digest
        # of that write's data: a rewrite of the same bytes at that
        # version changes nothing (`sentinel.unchanged`).
        self.held: tuple[int, bytes] | None = None
        # In a group, for an instance node: this agent is its primary and
        # takes it over from another agent (`takeover`); it moved away and
        # this agent keeps it for its new primary until that takes it over
        # (`released`: to whom, if known, and since when); it was taken
        # from us while we were its primary (`lost`), and until when we let
        # it be (`yielded`, our clock); the verdict last marked for writing
        # (`decided`) and, before our own, the previous agent's (`previous`).
        self.takeover = False
        # Made primary in place of another member, which holds the node as
        # far as this agent knows: its first write reads it and takes it
        # over, without a create or a question first (`sentinel.writer`).
        self.held_before = False
        # And which member that is, in this agent's view: a node this
        # agent read as an observer is taken over from that reading only
        # if that member wrote it (`Takeovers.read`).
        self.held_by: str | None = None
        # When the reading its takeover goes by was answered (our clock),
        # or None for one this agent kept as an observer (`Takeovers.read`):
        # an old one may be older than a third member's takeover of the
        # node (`Takeovers.take_over`).
        self.read_at: float | None = None
        # When a takeover of it last found it changed since the reading it
        # went by (our clock): a second time within `RECHECK_MIN`, it is
        # left to `Holders` rather than read again at once.
        self.changed_since_read_at = -math.inf
        # And that member's session is known to have ended (its agent node
        # and the opinions of its that were probed went with it: a crash's
        # expiry), so that the node went too: it is made anew at once,
        # with no transaction that could only be refused (`Takeovers.make_anew`).
        self.holder_gone = False
        # Made primary in place of a member waited for and not back
        # (`sentinel.standins`): made where missing, never taken over.
        self.standing_in = False
        # A watch on it, as its primary, is armed and has not fired since
        # (`sentinel.takeover.Takeovers.check_still_ours`).
        self.watching = False
        self.released = False
        # Kept for its new primary, and its instance no longer in this
        # agent's config (a reload removed it while the group's view still
        # says another member knows it): once gone, made again only from a
        # current view (`Takeovers.keep`).
        self.unconfigured = False
        self.handed_to: str | None = None
        self.handed_at = 0.0
        self.lost = False
        self.yielded = 0.0
        self.decided: object = None
        self.previous: dict[str, Any] | None = None
        # For an instance node inherited from the previous process (its
        # session) or taken over from another agent: the status and its
        # ``since`` the node said, until the first document of our own
        # that can keep it (`keep_since`, `Opinions.verdict_document`).
        self.kept: tuple[str, float] | None = None
        # Likewise, the ``checked_at`` the node said: no document of ours
        # says an older one (`Opinions.verdict_document`).
        self.said_checked_at: float | None = None
        # For an instance node taken over from another agent: that agent's
        # session, whose discovery member of the instance ours replaces
        # (`sentinel.members`), until ours is written.
        self.taken_from: int | None = None
        # When it was taken over (our clock; never: -inf): a look at the
        # service for that agent's members made before then may miss one
        # it made since, and a write over it soon after is that agent's
        # late set (`sentinel.guard`).
        self.taken_at = -math.inf
        # The agent it was taken over from, as its node said: within the
        # grace after `taken_at`, a write over it naming that agent is its
        # late set, any other a meddler's (`sentinel.guard`).
        self.taken_from_agent: str | None = None
        # And the session that held it then (`taken_from` is forgotten once
        # our member is written): a write over it naming the member whose
        # agent node that session holds is its late set too, whatever agent
        # the node said (another member's late set may have landed on it).
        self.taken_from_session: int | None = None
        # That agent, if its verdict had the instance in discovery (up and
        # ready): a member of its to replace is expected (`sentinel.members`).
        self.taken_listed_by: str | None = None
        # The discovery member that agent's verdict named (`said_member`),
        # which ours replaces with no look if it is that agent's.
        self.taken_member: str | None = None
        # The watch for its deletion (`sentinel.guard`), one callable per
        # node as `watcher`, and the path it is armed on, until it fires.
        self.guard: Callable[[WatchedEvent], None] | None = None
        self.guarded: str | None = None
        # Likewise the watch for another client's writes of an instance
        # node (`sentinel.writewatch`), and the path it is armed on.
        self.write_watch: Callable[[WatchedEvent], None] | None = None
        self.write_watched: str | None = None
        # For a removed opinion: its persistent parent is deleted too if it
        # is then empty (`sentinel.writer`).
        self.prune_parent = False
        # Since when its newest state has waited to be written (the first
        # change since its last write started, kept while writes fail),
        # and when the data of its last write that succeeded was built:
        # how far behind ZooKeeper's copy is (`sentinel.lateness`).
        self.due_since: float | None = None
        self.published_at: float | None = None
        # For an instance node: the ``checked_at`` its data last built
        # said, from which its refresh counts when that is older than the
        # write's acknowledgement (`ZooKeeperPublisher._publish`).
        self.built_checked_at: float | None = None
        # For an instance node or an opinion: its data last built took its
        # ``error`` and ``latency_ms`` from a check that contradicted its
        # status (a failure of an ``up`` instance short of ``fall``, a
        # success of a ``down`` one short of ``rise``: a blip), and is
        # written again at the next check that bears the status out
        # (`blip_over`).
        self.built_contrary = False
        # For a discovery member: it is to replace the member another
        # agent's session holds for the instance, whose node this agent
        # took over, and is written with the nodes readers miss
        # (`sentinel.writes`), until it is made.
        self.moving = False
        # Retired, and a new node at its path took over before its delete
        # was made (`Nodes.take_back`): that delete is not made.
        self.taken_back = False

    def keep_since(self) -> None:
        """
        Hand what the node said before (`kept`) to the instance's state,
        once it has a status: a restart or a new primary is not a change
        of status (`InstanceHealth.keep_since`).
        """
        state = self.state
        if (
            self.kept is not None
            and state is not None
            and state.health.status is not None
        ):
            state.health.keep_since(*self.kept)
            self.kept = None

    def blip_over(self, health: InstanceHealth) -> bool:
        """
        Whether the node's data, built during a blip (`built_contrary`),
        is now wrong on the instance's account: its last check bears the
        status out again, and the blip's error is no longer what the
        agent knows. Unless rewritten, the node said an ``up`` with the
        blip's error (``timeout (ping)``, no latency) until its next
        refresh, up to 30 s of checks that all succeed. Only a write that
        caught a blip costs this one more; a blip no write caught, none.
        """
        return self.built_contrary and health.unbacked_since is None

    @property
    def name(self) -> str:
        """The last part of the path: an instance node's instance name."""
        return name_of(self.path)

    def made_here(self) -> None:
        """
        Made by a create of ours, not taken over: no previous primary's
        late set can land on it, whatever an earlier takeover left here
        (`sentinel.guard`'s grace goes by the node's own stamps too).
        """
        self.taken_at = -math.inf
        self.taken_from_agent = None
        self.taken_from_session = None

    def cancel_recheck(self) -> None:
        """Cancel the node's timer (a re-check, or the wait for a takeover)."""
        if self.recheck is not None and self.recheck.active():
            self.recheck.cancel()
        self.recheck = None


class Nodes:
    """
    Every node this agent writes, by kind; each node's watches go to
    `watch(node, event)`.
    """

    def __init__(
        self,
        watch: NodeWatcher,
        agent_path: str,
        agent_data: Callable[[], bytes | None],
    ) -> None:
        self._watch = watch
        self.agent = self.new(agent_path, agent_data)
        # This agent's catalog, one node per part (in a group).
        self.catalog: list[Node] = []
        # By instance name: its node, its opinion (a group's observer), its
        # discovery member.
        self.instances: dict[str, Node] = {}
        self.opinions: dict[str, Node] = {}
        self.members: dict[str, Node] = {}
        # Nodes being deleted, forgotten once they are; and by path, those
        # whose path names them alone (every node but members).
        self.retired: set[Node] = set()
        self._retiring: dict[str, Node] = {}

    def new(self, path: str, data: Callable[[], bytes | None]) -> Node:
        """A node at `path` whose bytes `data` builds, not yet written."""
        node = Node(path, data)
        node.watcher = partial(self._watch, node)
        return node

    def __iter__(self) -> Iterator[Node]:
        yield self.agent
        yield from self.catalog
        yield from self.instances.values()
        yield from self.opinions.values()
        yield from self.members.values()
        yield from self.retired

    def retire(self, node: Node) -> None:
        """`node` is on its way out: deleted, then forgotten."""
        self.retired.add(node)
        if node.member is None:
            self._retiring[node.path] = node

    def take_back(self, node: Node, old: Node | None = None) -> None:
        """
        `node`, new, is at the path of a node retired and not yet deleted
        (a reload back to the config before it): that delete is dropped,
        and `node`, which decides what the path holds now, takes over the
        node it would have deleted. Made later, it deleted the node just
        written there: in a storm of reloads between two configs, the
        agent's own catalog, and the others saw it leave the group; and
        the instance nodes of the last config stayed missing 46 s.

        `old` is that node when the caller holds it: an instance's node
        stays in `instances`, removed, until its delete is made, rather
        than among the retired.
        """
        if old is None:
            old = self._retiring.pop(node.path, None)
            if old is None:
                return
            self.retired.discard(old)
        old.dirty = False
        # A delete already asking whether the node is ours (its `exists`
        # waiting seconds behind a new session's writes) found the node
        # the new one wrote meanwhile, ours, and deleted it: 80--240
        # opinions of an agent whose view went down to itself and back
        # on a new session, each "deleted behind the agent's back".
        old.taken_back = True
        if not old.writing:
            node.owned, node.version = old.owned, old.version
            node.unanswered = old.unanswered

    def forget(self, node: Node) -> None:
        """A removed node is deleted: nothing more to write there."""
        self.retired.discard(node)
        if self._retiring.get(node.path) is node:
            del self._retiring[node.path]
        if node.member is not None:
            return
        name = node.name
        if self.instances.get(name) is node:
            del self.instances[name]

    def let_go(self, node: Node) -> bool:
        """
        Whether `node` is an instance node handed to another primary and
        let go since (`sentinel.takeover`): no longer this agent's, though
        a write of it still in flight, or failed since, leaves it dirty.
        """
        return node.released and self.instances.get(node.name) is not node

    def cancel_rechecks(self) -> None:
        """Cancel every node's timer (stopping, or halted)."""
        for node in self:
            node.cancel_recheck()


def name_of(path: str) -> str:
    """The last part of a path."""
    return path.rsplit("/", 1)[-1]


def encode(document: dict[str, Any]) -> bytes:
    """A document as a node holds it: compact UTF-8 JSON."""
    return json.dumps(document, separators=(",", ":")).encode("utf-8")

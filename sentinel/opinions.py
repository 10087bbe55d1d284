"""
Opinions in a group with ``zookeeper.replicas`` above 1 (DESIGN.md section
8, "Groups"), and the verdict they make (`sentinel.verdict` has the rules).

Each observer of an instance publishes its opinion at
``{root}/opinions/{name}/{agent_id}``, written when its status, ``ready``
or role changes (`observe`, `publish`), or a blip a write of it caught
ends (`Node.blip_over`: its error is no longer what the agent knows, and
nothing else would write it again), and every `refresh` seconds read
back (its stat alone, a cheap read) and written again if it is not as
written: another client overwrote it (with garbage, or another status),
or deleted it. Nothing else would ever write it again, and the verdict
would say that observer's opinion wrong for good.

The primary hears the other observers' opinions: it reads each and
watches it (a missing one through its instance's opinions, whatever the
observers that never write theirs: `Opinions._written_since`), reads it
again at each change (or a second after a failed read), and is told
(`on_change(name)`) when one changed, to write the verdict if the
verdict changed too; until each opinion of an observer new to it is
answered, it has no verdict (`verdict`). Each fired watch of an opinion
is read at once, unless that opinion was read for a fired watch less
than `OPINION_READ_SPACING` ago: then once when that spacing ends, with
whatever fired meanwhile. Its observer writes it on change alone (a
status at most once every `rise` or `fall` checks, `sentinel.flapping`
bounds the rest), so no honest change waits; but any client may write
it, and each write fired the watch and a read again at once: a client
rewriting one opinion 650 times a second made its primary read it 296
times a second, 15 % of a core (`benchmarks/meddle.py --kind
opinion-forge`), and more opinions so rewritten, more. Now it costs at
most one read of each per spacing; the observer finds the write over
its node and names it (`sentinel.guard`). After a reconnection the watches are
gone: every opinion is read again (`ask_all`). An opinion of a live
observer missing or unreadable for `ABSENT_AFTER` is named (`absent`,
for /healthz): that observer stays wrong in the verdict's ``observers``
until its refresh writes it again, and counts in the quorum no more
than its opinion does (`verdict`). So does one that a new process of
its observer, holding the session it reattached to, has not written
again for `ABSENT_AFTER` (`restarted`): what a dead process found.
One not read at all for as long since its observer became one (this
primary's reads timing out, behind a view change's or its own CPU) is
named too, but keeps its place in the quorum with no vote: what this
primary failed to read is its own trouble, and no news of the instance
(`_silent`).

An observer that is not the primary reads the verdict too (in the
background), at a check of its own once it is due: a second past the
time by which its primary should have written it again (its
``checked_at``, `refresh`, and the staleness bound of this agent's own
history of the instance, `InstanceHealth.stale_after`), a refresh after
the first check or a reading that could not date it. That is one
``get`` per instance about every refresh, never one per check, and a
verdict that goes stale is found within a check of its due time, not
a refresh later (a primary that writes a few seconds late each time,
starved, left each verdict past the bound for only that long: read once
a refresh at a fixed phase, 2 of 31 were seen). A verdict older than
that, while this agent's own history is current, is `late`, unless its
primary's opinion of the instance says a longer refresh (members at
different ones: a rolling change of config), read then, once: judged
by that, up to a day, if the verdict's session holds that opinion. Its
primary writes it every `refresh`, from its own checks: it has not, or
from checks that late, and it may not be able to tell (its CPU starved,
its /healthz not answering). Readers would see the
node stale; the primary keeps its role, which moves on session loss
alone. So the observer says it: in /healthz (`late_verdicts`), and in
the log once when some start to be late and once when none is any
more.

Each reading also watches the verdict (the watch rides on the ``get``):
when its primary writes it again, the node kept as read for a takeover
(`verdict_node`) is forgotten at once, and the verdict read again at the
next check (a late one at once: cleared then if it is fresh). That
reading moves the next one past the primary's next write, so while the
primary writes on time there is still one ``get`` an instance a
refresh. Read at due times alone, the reading kept was older than the
node for the ``stale_after`` plus a second after each refresh write
(5 s of 30 here), and for all of them in the first refresh after a
start-up, whose readings came before the primary's first rewrite: at a
leave at 3,000 instances, up to 93 % of a survivor's takeovers were
refused at the stale version, read and sent again, two round trips
more each while the bridge's calls in flight were full.

The verdict's ``since`` is when the observers that say its status found
it (the last of them: `_changed_at`), or, if the node said the same
status when this primary got it (taken over from the previous primary,
or inherited from this agent's previous process: `Node.kept`), the
``since`` the node said, or for a
node it makes anew, the ``since`` of its own checks if they say the
verdict's status: readers see no change of status where there was none.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Set
from functools import partial
from itertools import islice
from typing import Any

import attr
from kazoo.exceptions import NoAuthError, NoNodeError
from kazoo.protocol.states import EventType, WatchedEvent
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from sentinel.behind import BehindVerdicts, said_of
from sentinel.checks import printable, znode_name_problem
from sentinel.config import RedisInstance
from sentinel.documents import (
    discovery_digest,
    opinion_document,
    opinion_of,
    said_checked_at,
    said_member,
    said_refresh,
    status_since,
    stored_document,
    verdict_document,
)
from sentinel.health import DOWN, UP, Transition
from sentinel.instance import InstanceState
from sentinel.nodes import LOG_NAMESPACE, Node, Nodes, encode
from sentinel.oldest import oldest_named
from sentinel.ownership import ours
from sentinel.verdict import Opinion, Verdict, decide, opinion_in, parse_opinion
from sentinel.writes import RETRY_DELAY, Lifecycle, WriteQueue
from sentinel.zk import ZooKeeper

log = Logger(namespace=LOG_NAMESPACE)

# Seconds between two reads of one opinion for its fired watch: a client
# rewriting it in a loop costs at most one read per spacing.
OPINION_READ_SPACING = 0.25
# Seconds before an opinion held by a session other than its observer's is
# read again: the observer may have just restarted, its agent node not
# written yet.
SQUATTER_RECHECK = 5.0
PERSISTENT = "is a persistent node"
# Seconds an opinion of a live observer may be missing or unreadable
# before /healthz names it: an observer that just joined writes its own
# after its first check, within a second or two.
ABSENT_AFTER = 5.0
# Late verdicts named in /healthz, the oldest first; and the most
# characters of a primary's id taken from a node (anyone's data).
LATE_NAMED = 5
PRIMARY_CHARS = 64
# Seconds from an observer's first check of an instance it observes as
# another's to its first reading of the verdict.
FIRST_VERDICT_READ = 2.0
# The largest verdict node kept as read for a takeover (`verdict_node`):
# ours are under 1 KB with a few observers; any client may write up to
# ZooKeeper's 1 MB in one, which every observer would keep per instance
# until its next read. A larger one is read again at the takeover.
KEPT_VERDICT_BYTES = 16 * 1024


class Opinions:
    """This agent's opinions, the others' it hears, and their verdicts."""

    def __init__(
        self,
        reactor: Any,
        zk: ZooKeeper,
        root: str,
        agent_id: str,
        nodes: Nodes,
        queue: WriteQueue,
        life: Lifecycle,
        on_change: Callable[[str], None],
        refresh: float,
        discovery: tuple[str, str] | None = None,
        unchecked_for: Callable[[float], float | None] = lambda now: None,
    ) -> None:
        """
        @param on_change: told of an instance one of whose other observers'
            opinions changed.
        @param unchecked_for: how long at least the nodes this process
            has not written yet, on a session it reattached to, have gone
            unchecked at a given time (`SessionHandoff.unchecked_for`), or
            None.
        @param refresh: seconds between two readings back of an opinion of
            this agent's.
        @param discovery: (form, discovery root) when this agent publishes
            discovery members.
        """
        self._reactor = reactor
        self._zk = zk
        self._refresh = refresh
        self._root = root
        self._agent_id = agent_id
        self._nodes = nodes
        self._queue = queue
        self._life = life
        self._on_change = on_change
        self._unchecked_for = unchecked_for
        # What the other observers said of the instances this agent is the
        # primary of, and each verdict's status and since.
        self._heard: dict[str, dict[str, Opinion | None]] = {}
        self._since: dict[str, tuple[str, float | None]] = {}
        # The opinion each verdict last written took its fields from: what
        # a standing verdict says again (`verdict.decide`).
        self._sources: dict[str, Opinion] = {}
        # Since which check of this agent's own (its time and count) the
        # standing up verdict of an instance is all that holds it up: no
        # opinion up, and a down one left out (`_holds`).
        self._held: dict[str, tuple[float, int]] = {}
        # The observers whose opinion was not answered yet since they became
        # one, by instance, and since when (`verdict`).
        self._unanswered: dict[str, dict[str, float]] = {}
        self._checked: dict[str, float] = {}
        # The session holding each observer's agent node, as last read, and
        # the opinion nodes that no such session holds, and why.
        self._sessions: dict[str, int] = {}
        self.squatters: dict[str, str] = {}
        # The opinions heard of another address than this agent checks
        # under the same name, and which.
        self.elsewhere: dict[str, str] = {}
        # Likewise, those that say another discovery than this agent
        # publishes (`documents.discovery_digest`), and which; and this
        # agent's own, by instance, worked out again when it changes.
        self.unlike: dict[str, str] = {}
        self._discovery = discovery
        self._digests: dict[str, tuple[RedisInstance, str]] = {}
        # The squatters' paths with a reading again due: one each, however
        # often a squatter rewrites its node (each rewrite fires the watch,
        # and each read of it would otherwise start another round).
        self._rechecks: set[str] = set()
        # The opinions read for a fired watch less than OPINION_READ_SPACING
        # ago, and whether it fired again since (None if not; if it did, read
        # when the spacing ends, ahead of other reads if it changed).
        self._spaced: dict[tuple[str, str], bool | None] = {}
        # The other observers' opinions found missing or unreadable: since
        # when, and which.
        self._absent: dict[str, tuple[float, str, str]] = {}
        # The other observers' opinions as last read: whose, of what, the
        # zxid that wrote them, and since when they are a previous
        # process's word only (`restarted`), if they are; and the zxid
        # from which each member's process is its newest.
        self._written: dict[str, tuple[str, str, int, float | None]] = {}
        self._restarted: dict[str, int] = {}
        # The verdicts of instances this agent observes, not as primary,
        # found late at their last reading: who wrote each (its primary),
        # its checked_at, and the refresh it was judged by.
        self.late: dict[str, tuple[str, float, float]] = {}
        # When the verdict of each instance this agent observes, not as
        # primary, is read next; and the status and since it said at its
        # last reading, and when that was asked (`verdict_document`).
        self._verdicts_due: dict[str, float] = {}
        self._verdicts_read: dict[str, tuple[str, float, float]] = {}
        # And the node itself as last read (data and stat): should this
        # agent become its primary in place of the member that wrote it,
        # the takeover starts from there, with no read of its own
        # (`verdict_node`). About 0.5 KB an instance.
        self._verdict_nodes: dict[str, tuple[bytes, Any]] = {}
        # The discovery member the node named as last read, from when that
        # reading is forgotten (the node written or gone since) until a
        # reading finds the node again: should it stay missing, a cover
        # (`sentinel.covers`) replaces that member with its own
        # (`named_before_missing`). Kept only for such nodes, as the bytes
        # read: parsed only if a cover asks, not at every write heard of.
        self._named_before: dict[str, bytes] = {}
        # Told of each reading, as a secondary, that finds the verdict
        # node missing, or there (the group sets them: `sentinel.covers`).
        self.verdict_missing: Callable[[str], None] = lambda name: None
        self.verdict_present: Callable[[str], None] = lambda name: None
        # Told of each reading, as a secondary, that finds the verdict not
        # saying this agent's opinion for the bound `behind` keeps (the
        # group sets both: `sentinel.behind`, `sentinel.covers`), with
        # the node's stat as read.
        self.verdict_behind: Callable[[str, Any], None] = lambda name, stat: None
        self.behind = BehindVerdicts(lambda: math.inf)
        # The instances whose opinion was last built unsettled here
        # (`InstanceHealth.settled`): written again once it settles, which
        # changes no status and so brings no transition to write it.
        self._unsettled: set[str] = set()

    # This agent's

    def observe(self, name: str, observing: bool) -> None:
        """This agent observes `name` (its opinion is published), or not."""
        node = self._nodes.opinions.get(name)
        if observing and node is None:
            node = self._nodes.new(
                f"{self._root}/opinions/{name}/{self._agent_id}", lambda: None
            )
            node.data = partial(self._opinion_data, node)
            self._nodes.take_back(node)
            self._nodes.opinions[name] = node
        elif not observing and node is not None:
            del self._nodes.opinions[name]
            self._digests.pop(name, None)
            self._unsettled.discard(name)
            # ZooKeeper would otherwise keep a parent for every instance
            # ever observed; the last observer to leave deletes it.
            node.prune_parent = True
            self._queue.retire(node)
            self._verdicts_due.pop(name, None)
            self._verdicts_read.pop(name, None)
            self._verdict_nodes.pop(name, None)
            self._named_before.pop(name, None)
            self.behind.forget(name)
            self._verdict_fresh(name)

    def relabelled(self, state: InstanceState) -> None:
        """
        The instance's discovery service or labels changed (its state kept):
        its opinion, if this agent observes it, says the new discovery.
        """
        node = self._nodes.opinions.get(state.name)
        if node is not None:
            node.state = state
            self._queue.mark(node)

    def publish(self, state: InstanceState, transition: Transition | None) -> None:
        """
        A check of an instance observed here: write the opinion if it
        changed, or read it back if it is due (module docstring).
        """
        node = self._nodes.opinions.get(state.name)
        if node is None:
            return
        now = self._reactor.seconds()
        if (
            node.state is not state
            or transition is not None
            or (state.name in self._unsettled and state.health.settled)
            # Written during a blip, over now (`Node.blip_over`).
            or (node.built_contrary and not node.dirty and node.blip_over(state.health))
        ):
            node.state = state
            self._unsettled.discard(state.name)
            self._queue.mark(node)
        elif (
            node.owned
            and not (node.dirty or node.writing)
            and node.written_at is not None
            and now - node.written_at >= self._refresh
        ):
            self._read_back(state.name, node)
        if state.name not in self._heard:
            # Another member is its primary (this one hears the others'
            # opinions of what it is the primary of, or keeps).
            due = self._verdicts_due.get(state.name)
            if due is None:
                # Read first soon (`FIRST_VERDICT_READ`), not a refresh on:
                # as a new observer it watches the node from then on, and
                # finds it missing if the primary is slow to make it
                # (`sentinel.covers`). One read more an instance a move.
                self._verdicts_due[state.name] = now + FIRST_VERDICT_READ
            elif now >= due:
                self._read_verdict(state.name, node)
            elif transition is not None and transition.status_changed:
                # Read soon after this agent's opinion says another status:
                # its primary writes it into the verdict within about a
                # second, and one that does not is found `behind` from then.
                self._verdicts_due[state.name] = min(due, now + FIRST_VERDICT_READ)

    def _read_back(self, name: str, node: Node) -> None:
        """Write our opinion of `name` again if it is not as we last wrote it."""
        # Known as written now, if it is: the next reading is a refresh away.
        node.written_at = self._reactor.seconds()
        version = node.version
        zk = self._zk

        def answered(stat: Any) -> None:
            if (
                node.dirty
                or node.writing
                or not node.owned
                or node.version != version
                or self._nodes.opinions.get(name) is not node
            ):
                return  # Written, or let go, meanwhile: that decides.
            if ours(stat, zk.session_id) and stat.version == version:
                return
            log.warn(
                "opinion {path} is not as this agent wrote it (overwritten or "
                "deleted by another client): writing it again",
                path=node.path,
            )
            node.owned = False
            self._queue.mark(node)

        # In the background (`sentinel.zk`): a refresh's worth of them.
        d = zk.exists(node.path, background=True)
        # A failed reading (the connection dropped, say) is tried again at
        # the next refresh; a reconnection writes every node anyway.
        d.addCallbacks(answered, lambda _: None)
        d.addErrback(
            lambda f: log.failure("reading back {path} failed", f, path=node.path)
        )

    def verdict_node(self, name: str) -> tuple[bytes, Any] | None:
        """
        The node of `name`, data and stat, as this agent last read it as
        one of its observers, not its primary (`_read_verdict`), if it
        did; forgotten once asked. A takeover at that version fails
        unless nobody wrote the node since: a member that stops writes
        it no more, and its primary rewrites it only every refresh, a
        second before this agent reads it.
        """
        return self._verdict_nodes.pop(name, None)

    def verdict_node_seen(self, name: str) -> tuple[bytes, Any] | None:
        """`verdict_node`, not forgotten: a look ahead of the takeover."""
        return self._verdict_nodes.get(name)

    def named_before_missing(self, name: str) -> str | None:
        """
        The discovery member `name`'s node named when this agent, one of
        its observers, last found it, if the node changed or went since
        and no reading found it again; forgotten once asked. A cover
        makes the node where it stays missing: the primary, alive, holds
        that member still, and the cover's replaces it rather than list
        the endpoint beside it (`sentinel.members`).
        """
        stored = self._named_before.pop(name, None)
        document = None if stored is None else stored_document(stored)
        return None if document is None else said_member(document)

    def _forget_verdict_node(self, name: str) -> None:
        """
        The node as last read is stale (written or gone since): forgotten,
        but for the member it named (`named_before_missing`).
        """
        known = self._verdict_nodes.pop(name, None)
        if known is not None:
            self._named_before[name] = known[0]

    def _read_verdict(self, name: str, node: Node) -> None:
        """
        Read the verdict of `name`, say whether it is `late`, and when to
        read it next: when it is due again, or a refresh later if it is
        late (or cannot be dated), whose writes its watch reads meanwhile.
        """
        path = f"{self._root}/instances/{name}"
        # Ages are taken at the asking: the node answered is at least as
        # new as it was then, and an agent slow to take the answer (its
        # own CPU starved) does not count its own delay as the primary's.
        asked = self._reactor.seconds()
        # Not read again while this reading is out (bounded by the call's
        # timeout): a refresh from now, unless the answer says otherwise.
        self._verdicts_due[name] = asked + self._refresh
        # This agent's opinion as ZooKeeper holds it at the asking.
        mine = self._written_status(node, asked)

        def answered(result: tuple[bytes, Any] | None) -> None:
            if self._nodes.opinions.get(name) is not node or name in self._heard:
                return  # Moved meanwhile: its role decides.
            if result is None:
                self.verdict_missing(name)
            else:
                self.verdict_present(name)
            # A node missing says nothing of the status: the last reading
            # of one stays, for the node a cover (`sentinel.covers`) or a
            # crash's new primary makes from this reading on.
            said = None if result is None else status_since(result[0])
            if said is not None:
                self._verdicts_read[name] = (*said, asked)
            elif result is not None:
                self._verdicts_read.pop(name, None)
            if result is None:
                self._forget_verdict_node(name)
            else:
                self._named_before.pop(name, None)
                if len(result[0]) > KEPT_VERDICT_BYTES:
                    self._verdict_nodes.pop(name, None)
                else:
                    self._verdict_nodes[name] = result
            fresh = judged_fresh(result, self._refresh)
            if result is not None:
                self._judge_behind(name, mine, result, asked)
            if fresh:
                return
            assert result is not None
            document = stored_document(result[0]) or {}
            asking = self._said_refresh(name, document.get("agent"), result[1])
            if asking is None:
                judged_late(result, self._refresh)
                return
            asking.addCallback(reconsidered, result)
            asking.addErrback(
                lambda f: log.failure("judging {path} failed", f, path=path)
            )

        def reconsidered(said: float | None, result: tuple[bytes, Any]) -> None:
            # Its primary writes it again within its own refresh, which
            # may be longer than ours (a rolling change of config): an
            # observer at 8 s named every verdict of a primary at 30 s
            # late. A shorter one says nothing more: late by ours already.
            if self._nodes.opinions.get(name) is not node or name in self._heard:
                return
            refresh = self._refresh if said is None else max(said, self._refresh)
            if not judged_fresh(result, refresh):
                judged_late(result, refresh)

        def judged_fresh(result: tuple[bytes, Any] | None, refresh: float) -> bool:
            # Whether the verdict answered is not late by `refresh` (or not
            # this reading's to judge); if so, when to read it next.
            document = None if result is None else stored_document(result[0])
            checked_at = None if document is None else said_checked_at(document)
            state = node.state
            now = self._reactor.seconds()
            limit = refresh + (math.inf if state is None else state.health.stale_after)
            # A node missing or unreadable is not this reading's to judge
            # (readers find no date on it): only a dated one can be late.
            if (
                document is None
                or checked_at is None
                or state is None
                or not state.health.current(now)
                or asked - checked_at <= limit
            ):
                if (
                    checked_at is not None
                    and math.isfinite(limit)
                    and name in self._verdicts_due
                ):
                    # Read next a second past the time by which its primary
                    # should have written it again (for a date ahead of
                    # our clock, as if it were written now): late then,
                    # or written again, a refresh later.
                    self._verdicts_due[name] = max(
                        min(checked_at, now) + limit + 1.0, now + 1.0
                    )
                self._verdict_fresh(name)
                return True
            return False

        def judged_late(result: tuple[bytes, Any], refresh: float) -> None:
            document = stored_document(result[0]) or {}
            checked_at = said_checked_at(document)
            assert checked_at is not None
            agent = document.get("agent")
            primary = printable(agent, PRIMARY_CHARS) if isinstance(agent, str) else "?"
            if not self.late:
                log.warn(
                    "verdict {path} written by {primary} is {age:.0f} s old, "
                    "past refresh ({refresh:g} s), while this agent's own "
                    "checks are fresh: its primary cannot keep it fresh; "
                    "/healthz fails while any verdict observed here is late",
                    path=path,
                    primary=primary,
                    age=asked - checked_at,
                    refresh=refresh,
                )
            self.late[name] = (primary, checked_at, refresh)

        def missing(failure: Failure) -> None:
            # A failed reading (the connection dropped, say) is tried again
            # at the next refresh.
            if failure.check(NoNodeError):
                answered(None)

        d = self._zk.get(path, watch=_VerdictWatch(self, name), background=True)
        d.addCallbacks(answered, missing)
        d.addErrback(lambda f: log.failure("reading {path} failed", f, path=path))

    def _written_status(self, node: Node, now: float) -> str | None:
        """
        The status this agent's opinion `node` says in ZooKeeper, if it
        is written as it stands (None while a write of it is due or out).
        """
        state = node.state
        if state is None or not node.owned or node.dirty or node.writing:
            return None
        opinion = opinion_of(state.health, now)
        return None if opinion is None else opinion.status

    def _judge_behind(
        self, name: str, mine: str | None, result: tuple[bytes, Any], asked: float
    ) -> None:
        """
        Whether the verdict of `name` as read says this agent's opinion
        `mine` (`sentinel.behind`): if it has not for the bound, the group
        is told (`verdict_behind`); if it has not yet, it is read again
        when the bound ends.
        """
        data, stat = result
        document = stored_document(data)
        said = said_of(document, self._agent_id)
        writer = None if document is None else document.get("agent")
        late_at = self.behind.seen(name, mine, said, stat.ephemeralOwner, writer, asked)
        if late_at is None or name not in self._verdicts_due:
            return
        if late_at <= asked:
            self.verdict_behind(name, stat)
            # Read again a bound later, should the node stay as it is.
            late_at = asked + self.behind.bound()
        self._verdicts_due[name] = min(self._verdicts_due[name], late_at)

    def _said_refresh(
        self, name: str, primary: object, stat: Any
    ) -> Deferred[float | None] | None:
        """
        Read the refresh `primary`, the writer of the verdict of `name`
        as read at `stat`, says in its own opinion of `name`
        (`said_refresh`): None from the Deferred when it says none (an
        agent from before it said one), or when its opinion is missing,
        unreadable or not held by the verdict's session; None instead
        of a Deferred when there is nothing to read (no such node can be
        the primary's). One ``get``, only for a verdict about to be named
        late, never on the check path.
        """
        owner = stat.ephemeralOwner
        if (
            not owner
            or not isinstance(primary, str)
            or znode_name_problem(primary) is not None
        ):
            return None

        def answered(result: tuple[bytes, Any]) -> float | None:
            data, opinion = result
            # Only the verdict's writer may excuse it: anyone who may
            # create under the root could otherwise silence the rule.
            if opinion.ephemeralOwner != owner:
                return None
            document = stored_document(data)
            return None if document is None else said_refresh(document)

        d = self._zk.get(f"{self._root}/opinions/{name}/{primary}", background=True)
        # Missing, or not read (a failure is not the primary's word): the
        # verdict is judged by this agent's refresh, as ever.
        return d.addCallbacks(answered, lambda _: None)

    def verdict_written(self, name: str) -> None:
        """
        A verdict this agent watches was written or deleted since it read
        it: the node kept as read for a takeover is stale (a takeover at
        its version would be refused), so it goes, and the verdict is
        read again, at the next check (a late one at once, to clear it).
        """
        self._forget_verdict_node(name)
        node = self._nodes.opinions.get(name)
        if not self._life.running or node is None or name in self._heard:
            return  # Stopping, or no longer observed as another's.
        if name in self.late:
            self._read_verdict(name, node)
        elif name in self._verdicts_due:
            self._verdicts_due[name] = self._reactor.seconds()

    def _verdict_fresh(self, name: str) -> None:
        """The verdict of `name` is not late (any more), or not ours to judge."""
        if self.late.pop(name, None) is not None and not self.late:
            log.info(
                "verdicts observed here are fresh again (or no longer "
                "observed here as another's)"
            )

    def late_verdicts(self) -> str | None:
        """
        The late verdicts of instances this agent's own checks still keep
        current, for /healthz: how many, and the oldest `LATE_NAMED` with
        their primaries and ages; None if there are none.
        """
        now = self._reactor.seconds()
        late = []
        for name, (primary, checked_at, refresh) in self.late.items():
            node = self._nodes.opinions.get(name)
            state = None if node is None else node.state
            if state is not None and state.health.current(now):
                late.append((checked_at, name, primary, refresh))
        if not late:
            return None

        def said(found: tuple[float, str, str, float]) -> str:
            checked_at, name, primary, refresh = found
            return (
                f"{name} (primary {primary}, "
                + ("" if refresh == self._refresh else f"its refresh {refresh:g} s, ")
                + f"checked {now - checked_at:.0f} s ago)"
            )

        return (
            f"{len(late)} verdict(s) of instances this agent observes older "
            f"than refresh ({self._refresh:g} s) and more, while its own "
            "checks of them are fresh: "
            + oldest_named(late, LATE_NAMED, said)
            + ": their primary cannot keep them fresh"
        )

    def _opinion_data(self, node: Node) -> bytes | None:
        state = node.state
        now = self._reactor.seconds()
        opinion = None if state is None else opinion_of(state.health, now)
        if opinion is None:
            return None
        assert state is not None
        node.built_contrary = state.health.unbacked_since is not None
        if opinion.settled:
            self._unsettled.discard(state.name)
        else:
            self._unsettled.add(state.name)
        instance = state.instance
        return encode(
            opinion_document(
                opinion,
                self._agent_id,
                instance,
                self._refresh,
                self._digest(instance),
            )
        )

    def _digest(self, instance: RedisInstance) -> str:
        """What this agent publishes in discovery of `instance`, as opinions say."""
        known = self._digests.get(instance.name)
        if known is not None and known[0] is instance:
            return known[1]
        digest = discovery_digest(self._discovery, instance)
        self._digests[instance.name] = (instance, digest)
        return digest

    # The others'

    def listen(self, name: str, observers: tuple[str, ...]) -> None:
        """Hear the other observers' opinions of `name` (the primary does)."""
        heard = self._heard.setdefault(name, {})
        self._verdicts_due.pop(name, None)
        self.behind.forget(name)
        self._verdict_fresh(name)
        others = observers[1:]
        for agent in list(heard):
            if agent not in others:
                del heard[agent]
                self._unheard(f"{self._root}/opinions/{name}/{agent}")
                self._answered(name, agent)
        now = self._reactor.seconds()
        asked = False
        for agent in others:
            if agent not in heard:
                heard[agent] = None
                self._unanswered.setdefault(name, {})[agent] = now
                self._ask(name, agent)
                asked = True
        if asked:
            # Still unread then, a verdict held back for them is given
            # (`verdict`, `hold`): decided again.
            self._reactor.callLater(ABSENT_AFTER, self._unread_long, name, now)

    def forget(self, name: str) -> None:
        """`name` moved away: its opinions are no longer heard here."""
        for agent in self._heard.pop(name, {}):
            self._unheard(f"{self._root}/opinions/{name}/{agent}")
        self._unanswered.pop(name, None)
        self._since.pop(name, None)
        self._sources.pop(name, None)
        self._held.pop(name, None)
        self._checked.pop(name, None)
        # A reading from before its verdicts were ours says nothing of
        # them, should this agent make its node anew later.
        self._verdicts_read.pop(name, None)
        self._verdict_nodes.pop(name, None)
        self._named_before.pop(name, None)

    def _unheard(self, path: str) -> None:
        self._written.pop(path, None)
        self.squatters.pop(path, None)
        self.elsewhere.pop(path, None)
        self.unlike.pop(path, None)
        self._absent.pop(path, None)

    def absent(self, voting: Callable[[str], bool]) -> dict[str, str]:
        """
        The opinions of observers that publish one (`voting`) missing,
        unreadable or not read yet since their observer became one for
        `ABSENT_AFTER` or more, and for how long.
        """
        now = self._reactor.seconds()
        absent = {
            path: f"{why} for {now - since:.0f} s"
            for path, (since, agent, why) in self._absent.items()
            if now - since >= ABSENT_AFTER and voting(agent)
        }
        for name, unread in self._unanswered.items():
            for agent, asked in unread.items():
                if now - asked >= ABSENT_AFTER and voting(agent):
                    path = f"{self._root}/opinions/{name}/{agent}"
                    absent[path] = (
                        "is not read yet since its observer became one, for "
                        f"{now - asked:.0f} s"
                    )
        for path, (agent, _, _, since) in self._written.items():
            if since is not None and now - since >= ABSENT_AFTER and voting(agent):
                absent[path] = (
                    "is not written again by the process now holding its "
                    f"observer's session, for {now - since:.0f} s"
                )
        return absent

    def ask_all(self) -> None:
        """Read every opinion heard again (the watches went with a connection)."""
        for name, said in self._heard.items():
            for agent in said:
                self._ask(name, agent)

    def _ask(self, name: str, agent: str, changed: bool = False) -> None:
        d = Deferred.fromCoroutine(self._read(name, agent, changed))
        d.addErrback(self._unread, name, agent)

    async def _read(self, name: str, agent: str, changed: bool = False) -> None:
        path = f"{self._root}/opinions/{name}/{agent}"
        watch = _OpinionWatch(self, name, agent)
        # In the background (`sentinel.zk`): a member's crash fires
        # thousands of these at once, and the membership read it also
        # fires, which brings its nodes back, must not wait behind them.
        # But an opinion `changed` (its observer wrote it again: it changed
        # its mind, written on change alone) is read ahead of every other
        # read: behind a view change's thousands, a verdict followed its
        # observer's down 2.3--2.6 s late. And until an observer's opinion
        # is first answered since it became one, the verdict waits for it
        # (`verdict`), and until one is heard, it says none (``null``): those
        # reads (`awaited`, the view change's own: a new observer's opinion
        # is often missing at the first, and read again once written) go
        # ahead of the routine ones. In the background, at a leave of
        # 1,000 instances, a new observer's opinion was first named by its
        # verdict 18 s after the signal (p50), load 9--16.
        awaited = not changed and (
            agent in self._unanswered.get(name, ())
            or self._heard.get(name, {}).get(agent) is None
        )
        absent = None
        written = None
        try:
            data, stat = await self._zk.get(
                path,
                watch=watch,
                background=not (changed or awaited),
                changed=changed,
                awaited=awaited,
            )
            written = stat.mzxid
            squatter = await self._squatter(agent, stat.ephemeralOwner, awaited)
            opinion = None if squatter else parse_opinion(data)
            if squatter is None and opinion is None:
                absent = "is unreadable"
        except NoNodeError:
            # Not written yet: its creation fires the parent's watch.
            if await self._written_since(name, agent, awaited):
                self._ask_again(name, agent)
                return
            opinion = squatter = None
            absent = "is missing"
        except NoAuthError:
            # Another client's node, with an ACL that denies us: no opinion
            # (the last one heard was kept for good, read again every
            # second). Its change fires the watch: an exists asks for no
            # permission.
            if await self._zk.exists(path, watch=watch, background=True) is None:
                self._ask_again(name, agent)
                return
            opinion = squatter = None
            absent = "is unreadable"
        # Still one of the observers heard? Its view may have changed while
        # the read was out: a former observer's opinion is named nowhere.
        said = self._heard.get(name)
        heard = said is not None and agent in said
        self._note_written(name, agent, written if heard else None)
        if absent is None or not heard:
            self._absent.pop(path, None)
        else:
            now = self._reactor.seconds()
            since = self._absent.get(path, (now,))[0]
            if since == now:
                # Once absent that long, the observer no longer counts in
                # the quorum (`verdict`): the verdict is decided again then.
                self._reactor.callLater(
                    ABSENT_AFTER, self._absent_long, name, path, since
                )
            self._absent[path] = (since, agent, absent)
        if squatter is None or not heard:
            self.squatters.pop(path, None)
        else:
            if self.squatters.get(path) != squatter:
                log.error(
                    "opinion {path} {why}: left out of the verdict, and "
                    "/healthz fails until it goes",
                    path=path,
                    why=squatter,
                )
            self.squatters[path] = squatter
            if not squatter.startswith(PERSISTENT) and path not in self._rechecks:
                # Maybe the observer's new session, its agent node not
                # written yet: asked again (a persistent node's watch says
                # when it goes).
                self._rechecks.add(path)
                self._reactor.callLater(SQUATTER_RECHECK, self._recheck, name, agent)
        if said is not None and heard and said[agent] != opinion:
            said[agent] = opinion
            self._on_change(name)
        if heard and self._answered(name, agent):
            # Every opinion answered: the verdict held back meanwhile.
            self._on_change(name)

    def restarted(self, agent: str, created: int) -> None:
        """
        A new process of `agent` holds its session from zxid `created` on
        (`Membership`: its catalog, each process's own, was made then).
        The opinions its predecessors wrote stay on the session it
        reattached to, saying what they found, until it checks each
        instance and writes its own, within its first round. One not
        written again within `ABSENT_AFTER` is no living process's word:
        it counts no more than a missing one (`verdict`). A member in a
        crash loop, each process killed before it checked every instance,
        held a dead Redis published up with two replicas by the opinion
        its first process wrote (18 s, until the state file's rule closed
        the session), the primary alone seeing it down.
        """
        self._restarted[agent] = created
        now = self._reactor.seconds()
        for path, (whose, name, written, since) in list(self._written.items()):
            if whose == agent and since is None and written < created:
                self._written[path] = (whose, name, written, now)
        self._reactor.callLater(ABSENT_AFTER, self._restart_long, agent, now)

    def probes_of(self, agent: str, limit: int) -> list[str]:
        """
        The paths of up to `limit` of `agent`'s opinions this agent read
        last (it is their instances' primary), written by its newest
        process: ephemeral nodes that go with that member's session, or
        when it stops observing their instances.
        """
        newest = (
            path
            for path, (whose, _, _, unbacked) in self._written.items()
            if whose == agent and unbacked is None
        )
        return list(islice(newest, limit))

    def members_gone(self, agents: Collection[str]) -> None:
        """
        Forget from which zxid on each of `agents` (members with no
        catalog listed any more) had its newest process, and which session
        held its agent node: their opinions went with their session, and a
        member coming back under that id is a member first seen
        (`Membership`). Kept for good, every member id a squatter ever
        invented (an agent node and catalogs of its session in a new name,
        then gone) stayed in memory.
        """
        self.behind.members_gone(agents)
        for agent in agents:
            self._restarted.pop(agent, None)
            self._sessions.pop(agent, None)

    def _note_written(self, name: str, agent: str, written: int | None) -> None:
        """
        Keep the zxid that wrote `agent`'s opinion of `name` as just read
        (None: none read, or no longer heard), and since when it is a
        previous process's (`restarted`).
        """
        path = f"{self._root}/opinions/{name}/{agent}"
        if written is None:
            self._written.pop(path, None)
            return
        since = None
        if written < self._restarted.get(agent, 0):
            known = self._written.get(path)
            since = known[3] if known is not None else None
            if since is None:
                since = self._reactor.seconds()
                self._reactor.callLater(ABSENT_AFTER, self._restart_long, agent, since)
        self._written[path] = (agent, name, written, since)

    def _restart_long(self, agent: str, since: float) -> None:
        """Decide again what `agent`'s opinions unwritten since `since` are of."""
        if not self._life.running:
            return
        for whose, name, _, unbacked in list(self._written.values()):
            if whose == agent and unbacked == since:
                self._on_change(name)

    def _unbacked(self, path: str, now: float) -> bool:
        """Whether the opinion at `path` is a previous process's for long."""
        known = self._written.get(path)
        return (
            known is not None
            and known[3] is not None
            and (now - known[3] >= ABSENT_AFTER)
        )

    def _absent_long(self, name: str, path: str, since: float) -> None:
        """An opinion absent since `since` still is: `name` is decided again."""
        absent = self._absent.get(path)
        if self._life.running and absent is not None and absent[0] == since:
            self._on_change(name)

    def _unread_long(self, name: str, asked: float) -> None:
        """
        Observers of `name` asked at `asked` still unread: decided again (a
        verdict held back for them no longer is).
        """
        unread = self._unanswered.get(name)
        if self._life.running and unread and asked in unread.values():
            self._on_change(name)

    def _silent(self, name: str, observers: tuple[str, ...], now: float) -> set[str]:
        """
        The other observers of `name` whose opinions have been missing or
        unreadable, or a previous process's only (`restarted`), for
        `ABSENT_AFTER` or more: left out of the quorum.

        Not one whose opinion this primary has not read at all since it
        became one, however long: that observer is live, and what it
        says unknown here (this primary's reads wait behind a view
        change's thousands, or its CPU is starved), so it keeps its
        place in the quorum with no vote, and a down verdict needs the
        quorum of downs actually read; `absent` names it meanwhile.
        Left out after `ABSENT_AFTER` unread, as it was for a while, a
        cut-off primary (its checks all failing, its reads of the
        others' opinions late) published healthy instances down on its
        own opinion alone, which DESIGN.md section 8 forbids; a true down
        waits for those reads instead (retried a second after each
        failure, the view change's ahead of the routine ones).
        """
        silent = set()
        for agent in observers[1:]:
            path = f"{self._root}/opinions/{name}/{agent}"
            absent = self._absent.get(path)
            if (
                absent is not None and now - absent[0] >= ABSENT_AFTER
            ) or self._unbacked(path, now):
                silent.add(agent)
        return silent

    def _answered(self, name: str, agent: str) -> bool:
        """
        `agent`'s opinion of `name` is answered (or no longer heard):
        whether it was the last one the verdict waited for.
        """
        unread = self._unanswered.get(name)
        if unread is None or unread.pop(agent, None) is None or unread:
            return False
        del self._unanswered[name]
        return True

    async def _written_since(self, name: str, agent: str, awaited: bool) -> bool:
        """
        Whether `agent`'s opinion of `name`, just found missing, is there
        now; until one of `name`'s opinions comes or goes, watched.

        The watch is on the opinions' parent, not on the missing opinion:
        ZooKeeper keeps a watch on a node until it fires, and kazoo cannot
        remove one (`awaited`: read as the opinion was, `_read`). An
        observer that never writes its opinion (it crashed,
        and its id never comes back: a new host name at each deploy) would
        leave one on each of its instances' opinions for the session's
        life, one more set for every such observer; the parent's is one
        per instance, whoever comes and goes.
        """
        parent = f"{self._root}/opinions/{name}"
        watch = _OpinionsWatch(self, name)
        try:
            children = await self._zk.get_children(
                parent, watch=watch, background=not awaited, awaited=awaited
            )
        except NoNodeError:
            # No opinion of it at all yet: the parent's creation fires it.
            stat = await self._zk.exists(
                parent, watch=watch, background=not awaited, awaited=awaited
            )
            return stat is not None
        return agent in children

    def _opinions_changed(self, name: str) -> None:
        # An opinion of `name` came or went: a missing one may be there.
        # All are read again: the watch may fire before the listing that
        # set it has said which one is missing (kazoo hands them over on
        # different threads), and observers come and go seldom.
        for agent in list(self._heard.get(name, ())):
            self._ask_again(name, agent)

    async def _squatter(self, agent: str, owner: int, awaited: bool) -> str | None:
        """
        Why an opinion node held by `owner` is not `agent`'s, or None: an
        opinion counts only in an ephemeral node of the session that holds
        the observer's agent node. Anyone who may create under the root
        could otherwise vote in its name (a persistent ``down`` counted
        for good). The observer's node is read as the opinion was
        (`awaited`, `_read`): a new member's, behind the background
        reads, would hold every first read of its opinions back.
        """
        if not owner:
            return f"{PERSISTENT}, not its observer's"
        if self._sessions.get(agent) != owner:
            # Not known yet, or the observer's session changed: ask.
            stat = await self._zk.exists(
                f"{self._root}/agents/{agent}",
                background=not awaited,
                awaited=awaited,
            )
            if stat is None or not stat.ephemeralOwner:
                self._sessions.pop(agent, None)
            else:
                self._sessions[agent] = stat.ephemeralOwner
        session = self._sessions.get(agent)
        if session == owner:
            return None
        holder = "no live agent node" if session is None else f"session {session:#x}"
        return f"is held by session {owner:#x}, not by {agent}'s ({holder})"

    def _watch_fired(self, name: str, agent: str, event: WatchedEvent) -> None:
        if event.type == EventType.NONE:
            return
        key = (name, agent)
        changed = event.type == EventType.CHANGED
        if key in self._spaced:
            self._spaced[key] = bool(self._spaced[key]) or changed
        else:
            self._spaced_read(key, changed)

    def _spaced_read(self, key: tuple[str, str], changed: bool) -> None:
        """
        Read an opinion whose watch fired (ahead of the other reads if it
        was `changed`, `_read`), and space the next such read.
        """
        self._spaced[key] = None
        self._reactor.callLater(OPINION_READ_SPACING, self._spacing_over, key)
        self._ask_again(*key, changed=changed)

    def _spacing_over(self, key: tuple[str, str]) -> None:
        changed = self._spaced.pop(key, None)
        if changed is not None:
            self._spaced_read(key, changed)

    def _unread(self, failure: Failure, name: str, agent: str) -> None:
        # Asked again soon; the verdict keeps what was heard meanwhile.
        if self._life.running and name in self._heard:
            self._reactor.callLater(RETRY_DELAY, self._ask_again, name, agent)

    def _recheck(self, name: str, agent: str) -> None:
        self._rechecks.discard(f"{self._root}/opinions/{name}/{agent}")
        self._ask_again(name, agent)

    def _ask_again(self, name: str, agent: str, changed: bool = False) -> None:
        said = self._heard.get(name)
        if self._life.running and said is not None and agent in said:
            self._ask(name, agent, changed)

    # The verdict

    def verdict(
        self,
        name: str,
        observers: tuple[str, ...],
        quorum: int,
        voters: Set[str],
        instance: RedisInstance | None,
        hold: bool,
    ) -> Verdict | None:
        """
        The verdict of `observers` (this agent first) on `name`, if any,
        from the opinions of `voters` alone (the others' count as none).
        With `hold` (the node still says the verdict of the primary it was
        taken over from, which stands meanwhile), none while an
        observer's opinion is not answered yet since it became one, for
        `ABSENT_AFTER` at most: a member that joined took nodes over
        before its reads of the others' opinions came back (its writes go
        first), and wrote its own opinion as the verdict; with three
        replicas, an instance down by the quorum went up for a second or
        more wherever the new primary saw it up. Without (a node its
        crashed primary's session took with it), the verdict is given from
        the opinions answered so far: readers take a missing node for a
        gone instance, and holding back kept a crashed member's nodes
        missing 3.17 s (p50) after its session expired, against 1.74 s
        (`benchmarks/group.py writes`, 3,000 instances). An opinion of
        another address than `instance`'s, as this agent checks it, is of
        another server: it still counts (an agent reaching the instance
        some other way is one view of it too), and `elsewhere` names it;
        so does `unlike` one that says another discovery than this agent's.
        An observer whose opinion has been missing or unreadable for
        `ABSENT_AFTER` counts in the quorum no more than in the opinions
        (one not read at all since it became one still counts, with no
        vote: `_silent`):
        a member in a crash loop, whose new sessions each wrote its agent
        node and never its opinions, held a dead Redis published up with
        two replicas for as long as the loop went on (42 s in a loop of
        31 s), the primary alone seeing it down. Nor does one left by a
        previous process of its observer and not written again by the
        new one for as long (`restarted`).
        """
        now = self._reactor.seconds()
        unread = self._unanswered.get(name)
        if hold and unread and now - min(unread.values()) < ABSENT_AFTER:
            return None
        opinions: dict[str, Opinion | None] = {}
        for agent, opinion in self._heard.get(name, {}).items():
            if agent in voters:
                self._note_config(name, agent, opinion, instance)
                unbacked = self._unbacked(f"{self._root}/opinions/{name}/{agent}", now)
                opinions[agent] = None if unbacked else opinion
        node = self._nodes.instances.get(name)
        state = None if node is None else node.state
        own = None if state is None else opinion_of(state.health, now)
        opinions[self._agent_id] = own
        silent = self._silent(name, observers, now)
        unchecked = self._unchecked_for(now)
        if own is None and unchecked is not None and unchecked >= ABSENT_AFTER:
            # Not checked by this process yet, on a session whose previous
            # processes have not checked it for as long: what the node
            # says is no living process's view, and this agent counts in
            # the quorum no more than a silent observer (a member in a
            # crash loop held the dead Redis it was the primary of
            # published up until the state file's rule closed its session).
            silent.add(self._agent_id)
        standing = self._standing(name, node, now)
        if standing is None:
            self._held.pop(name, None)
        elif not self._holds(name, standing, opinions, now):
            standing = None
        return decide(observers, opinions, quorum, silent, standing)

    def _holds(
        self,
        name: str,
        standing: Opinion,
        opinions: dict[str, Opinion | None],
        now: float,
    ) -> bool:
        """
        Whether the fresh `standing` verdict of `name` still leaves the
        unsettled down `opinions` out of the count: always, unless it is
        up with no opinion up and has stood so for `fall` checks of this
        agent's own, or `fall` intervals (its settings), since its check
        at which it first found it so. A failure every observer finds is
        then published down at this agent's `fall`-th check since (as its
        own checks would, had it been checking all along), settled or
        not: checks that keep every opinion from settling (a Redis
        failing every other check; agents too starved to check in a row,
        each check deciding anew) would otherwise hold it up for good,
        the verdict that stands being written again at each refresh. Its
        own opinion is what starts the count: while it has none (no check
        since its history went stale) the verdict stands, and a blip of
        up to `fall` - `rise` + 1 failed checks, its own as every
        observer's, is up again by then (two at the defaults).
        """
        node = self._nodes.instances.get(name)
        health = None if node is None or node.state is None else node.state.health
        if (
            standing.status != UP
            or health is None
            or health.interval is None
            or health.checked_at is None
            or any(o is not None and o.status == UP for o in opinions.values())
            or not any(
                o is not None and o.status == DOWN and not o.settled
                for o in opinions.values()
            )
        ):
            self._held.pop(name, None)
            return True
        if opinions.get(self._agent_id) is None:
            return True
        since, checks = self._held.setdefault(name, (health.checked_at, health.checks))
        return (
            health.checks - checks < health.fall
            and now - since < health.fall * health.interval
        )

    def _standing(self, name: str, node: Node | None, now: float) -> Opinion | None:
        """
        The verdict the node of `name` says, as the opinion it took its
        fields from, if fresh: the previous
        primary's verdict while the node still says it, else the one this
        primary last wrote, while it holds the node (a member back from a
        freeze, its session gone and its nodes another's meanwhile, would
        otherwise go on from what it wrote before, up where the others
        had since published a dead instance down). Fresh as a takeover
        judges it
        (`Group._previous_verdict`): checked within `refresh` plus the
        staleness bound of this agent's history of the instance
        (`InstanceHealth.stale_after`) of now. A primary rewrites an
        unchanged verdict every refresh; one older was not, and says
        nothing of now. Unsettled down opinions make no down verdict
        against a fresh up one (`sentinel.verdict`).
        """
        state = None if node is None else node.state
        if node is None or state is None:
            return None
        if node.previous is not None:
            said = opinion_in(node.previous)
            checked_at = said_checked_at(node.previous)
        elif node.owned and not node.lost:
            said = self._sources.get(name)
            checked_at = self._checked.get(name)
        else:
            return None
        if checked_at is None or abs(now - checked_at) > (
            self._refresh + state.health.stale_after
        ):
            return None
        return said

    def _note_config(
        self,
        name: str,
        agent: str,
        opinion: Opinion | None,
        instance: RedisInstance | None,
    ) -> None:
        """
        Keep `opinion`'s path in `elsewhere` if it says another address
        than `instance`'s, and in `unlike` if it says another discovery
        than this agent publishes of it (`documents.discovery_digest`), or
        drop it; each logged when the first comes and when the last goes
        (a rolling change of config makes one per instance).
        """
        address = discovery = None
        if opinion is not None and instance is not None:
            if opinion.host is not None and (opinion.host, opinion.port) != (
                instance.host,
                instance.port,
            ):
                address = (
                    f"is of {opinion.host}:{opinion.port}, where this agent "
                    f"checks {instance.host}:{instance.port}"
                )
            own = self._digest(instance)
            if opinion.discovery is not None and opinion.discovery != own:
                discovery = (
                    f"says discovery {opinion.discovery}, where this agent "
                    f"publishes {own}"
                )
        path = f"{self._root}/opinions/{name}/{agent}"
        _note(
            self.elsewhere,
            path,
            address,
            "the members' configs give the instance different addresses",
            "every opinion heard is of the address checked here again",
        )
        _note(
            self.unlike,
            path,
            discovery,
            "the members' configs give the instance different discovery (form, "
            "discovery_root, service or labels)",
            "every opinion heard says the discovery published here again",
        )

    def verdict_document(
        self, node: Node, instance: RedisInstance, verdict: Verdict
    ) -> dict[str, Any]:
        """The instance node's document for `verdict`, dated."""
        name = node.name
        now = self._reactor.seconds()
        status, since = self._since.get(name, (None, None))
        said, node.kept = node.kept, None
        own = None if node.state is None else node.state.health
        if (
            said is not None
            and said[0] == verdict.status
            and status in (None, verdict.status)
            and 0 < said[1] <= now
        ):
            since = said[1]
        elif (
            said is None
            and status is None
            and own is not None
            and own.status == verdict.status
            and own.since is not None
            and 0 < own.since <= now
        ):
            # Nothing said before, by us or by the node (made anew, its
            # primary's session over): the status our own checks found,
            # from when they found it, or the verdict's as last read here.
            # It is no change of status now.
            since = self._since_read(name, verdict.status, own.since, now)
        elif status != verdict.status:
            # A change from what this primary, or else the node, said.
            before = since if status is not None or said is None else said[1]
            since = self._changed_at(name, verdict, before, now)
        self._since[name] = (verdict.status, since)
        self._sources[name] = verdict.source
        # Its error is a blip's if it is our own opinion's (ours is first
        # among the observers that say its status) and our last check
        # contradicts it: written again once a check bears it out.
        node.built_contrary = (
            own is not None
            and own.current(now)
            and own.status == verdict.status
            and own.unbacked_since is not None
        )
        checked_at = self._checked_at(node, verdict, now)
        return verdict_document(instance, verdict, self._agent_id, since, checked_at)

    def error_cleared(self, name: str, verdict: Verdict) -> bool:
        """
        Whether the verdict last written of `name` said an error that
        `verdict` (the same status) no longer says: an opinion heard
        cleared it. Asked when an opinion changes (written on change
        alone, and once more after a blip that a write of it caught), never
        at every check: the verdict is written again then, not a refresh
        later.
        """
        written = self._sources.get(name)
        return (
            written is not None
            and written.error is not None
            and verdict.source.error is None
        )

    def _since_read(self, name: str, status: str, found: float, now: float) -> float:
        """
        The ``since`` of a node made anew (its primary's session over)
        whose status this agent's checks found at `found`: the ``since``
        its previous verdict said at this agent's last reading of it
        (`_read_verdict`), if that said the same status and was asked
        after `found` (no check of ours found another since), and is no
        time ahead of our clock; else `found`. From its own checks alone,
        a node was dated from this agent's first check of the instance:
        3 s after the time published, with real agents started 3 s apart.
        (A change of the verdict that the other observers alone made
        after that reading is not seen, as it was not before.)
        """
        read = self._verdicts_read.get(name)
        if read is None:
            return found
        said, since, asked = read
        if said == status and found <= asked and 0 < since <= now:
            return since
        return found

    def _changed_at(
        self, name: str, verdict: Verdict, since: float | None, now: float
    ) -> float:
        """
        When `verdict`'s status changed from the one said `since`: when
        the last of the observers that say it found it (this agent's own
        ``since``, another's opinion's ``checked_at``: opinions are
        written on change), unless that is ahead of this agent's clock or
        not after the previous change; else now. Dated at the write, a
        down verdict said a ``since`` after its own ``checked_at`` (by
        0.4 to 0.7 s with real agents: the time the last observer's
        opinion took to reach the primary).
        """
        node = self._nodes.instances.get(name)
        own = None if node is None or node.state is None else node.state.health
        heard = self._heard.get(name, {})
        found = []
        for agent, status in verdict.observers:
            if status != verdict.status:
                continue
            if agent == self._agent_id:
                found.append(None if own is None else own.since)
            else:
                opinion = heard.get(agent)
                found.append(None if opinion is None else opinion.checked_at)
        if not found or None in found:
            return now
        changed = max(t for t in found if t is not None)
        if changed > now or (since is not None and changed <= since):
            return now
        return changed

    def _checked_at(self, node: Node, verdict: Verdict, now: float) -> float | None:
        """
        The verdict's ``checked_at``: the newest check behind it, never
        older than what this primary said, or the node when it got it
        (from the previous primary, or this agent's previous process). An
        opinion's own ``checked_at`` is as old as its last change
        (opinions are written on change only): a new primary's first
        verdict copied it, days old in a steady group, and readers took
        the node for stale. The primary's own checks count as far as they
        bear its status out (`InstanceHealth.published_checked_at`): a
        refresh after failures short of ``fall`` said an ``up`` checked
        at the last failure.
        """
        state = node.state
        said, node.said_checked_at = node.said_checked_at, None
        behind = verdict.checked_at
        candidates = (
            None if state is None else state.health.published_checked_at,
            verdict.source.checked_at,
            self._checked.get(node.name),
            # Other agents' clocks: taken when they are not ahead of ours.
            behind if behind is not None and behind <= now else None,
            said if said is not None and said <= now else None,
        )
        known = [c for c in candidates if c is not None]
        if not known:
            return None
        checked_at = self._checked[node.name] = max(known)
        return checked_at


@attr.frozen
class _VerdictWatch:
    """
    The watch of a verdict observed here as another's: equal for the same
    instance, so that watching it again before it fires adds nothing
    (`sentinel.zk`).
    """

    opinions: Opinions
    name: str

    def __call__(self, event: WatchedEvent) -> None:
        if event.type != EventType.NONE:
            self.opinions.verdict_written(self.name)


@attr.frozen
class _OpinionsWatch:
    """
    The watch of the opinions of one instance, while one is missing
    (`Opinions._written_since`): equal for the same instance, so that a
    second missing opinion adds nothing (`sentinel.zk`).
    """

    opinions: Opinions
    name: str

    def __call__(self, event: WatchedEvent) -> None:
        if event.type != EventType.NONE:
            self.opinions._opinions_changed(self.name)


@attr.frozen
class _OpinionWatch:
    """
    The watch of one observer's opinion of one instance: equal for the same
    one, so that reading it again before it fires (a squatter read every
    `SQUATTER_RECHECK` seconds, a retry) adds nothing to the watches the
    client keeps for the path (`sentinel.zk`).
    """

    opinions: Opinions
    name: str
    agent: str

    def __call__(self, event: WatchedEvent) -> None:
        self.opinions._watch_fired(self.name, self.agent, event)


def _note(
    kept: dict[str, str], path: str, why: str | None, differ: str, agree: str
) -> None:
    """
    Keep `path` in `kept` with `why` it disagrees, or drop it if `why` is
    None; logged when the first comes (the configs `differ`) and when the
    last goes (they `agree`).
    """
    if why is None:
        if kept.pop(path, None) is not None and not kept:
            log.info("{agree}", agree=agree)
        return
    if not kept:
        log.error(
            "opinion {path} {why}: {differ}, and each primary publishes its "
            "own; /healthz fails until they agree",
            path=path,
            why=why,
            differ=differ,
        )
    kept[path] = why

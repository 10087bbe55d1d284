"""
Many agents, one fleet (DESIGN.md section 8, "Groups"): which instances
this agent observes, and in which role, as the group's membership changes.

The agents sharing ``zookeeper.root`` are a group. Each knows the instances
of its own config (its catalog, published for the others); `Membership`
says who is in the group and what each knows, `Assignment` which
`zookeeper.replicas` members observe each instance and which of them is
its primary. This service applies the answer: the monitor checks exactly
the instances this agent observes (an instance moving in gets a probe and
a fresh health, one moving out loses both, so no stale health stays), and
the publisher writes opinions, verdicts and discovery members as each
instance's role says. A replica discovered from a master
(`sentinel.topology`) is no instance of the catalog: only the master's
observers see it (in the master's INFO), and it follows the master's
roles. With one agent and ``replicas = 1`` it observes
everything it knows, as primary: section 5 exactly.

At start, a member waits for the group's first view before it checks
anything, for a view of itself alone would take every instance it knows
for a moment and hand most of them back as the view comes (in a group of
central agents with thousands each, a burst of connections and checks of
instances others observe). It waits while that view can come: while
ZooKeeper is connected, up to `first_view_wait` (then it observes
everything it knows, alone, as before). But checking never waits on
publishing (DESIGN.md section 2): a ZooKeeper not connected
`CONNECT_WAIT` after start (refused, not answering, a name that does not
resolve), or lost before the first view, makes the member check every
instance it knows, `provisionally`: it publishes none of them, for it
does not know which are its own to publish (another member may be their
primary), and /healthz says so. The first view then applies as any
does: the instances it does not observe are let go (their connections
closed), those it observes keep their health, and each is published
from its next check as its role says.

A reload goes through here too (`add_instance`, `remove_instance`,
`replace_instance`, `update_settings`, as the monitor's): the catalog
changes, the other members hear of it, and the instances move accordingly.
Members that disagree on ``replicas`` or ``quorum`` are reported, in the
log and in /healthz, never resolved silently: each agent keeps its own.
"""

from __future__ import annotations

import heapq
import json
from bisect import bisect_right
from collections import Counter
from collections.abc import Collection, Iterator, Mapping, Sequence, Set
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from sentinel.assignment import Assignment
from sentinel.behind import late_after
from sentinel.catalog import Catalog
from sentinel.config import RedisInstance, ZooKeeperConfig
from sentinel.covers import Covers, covering
from sentinel.crowding import Expected, InstancesCrowding
from sentinel.heartbeats import MemberHeartbeats
from sentinel.holdoff import HoldOff
from sentinel.listing import DOCUMENTS_PER_SLICE, NameIndex, PageQuery
from sentinel.membership import SETTLE, Membership, View
from sentinel.monitor import Monitor, Settings
from sentinel.observation import Replication
from sentinel.publisher import ZooKeeperPublisher
from sentinel.readers import utf8_length
from sentinel.sample import NAMED as SAMPLED
from sentinel.sample import others, sample
from sentinel.standins import moved_by, stand_in_order
from sentinel.streaming import Slices
from sentinel.unpublished import Unpublished
from sentinel.unshared import NAMED, Unshared, unshared_names
from sentinel.verdict import opinion_in
from sentinel.zk import CONNECTED, REPLACE_SPREAD

log = Logger()

PRIMARY = "primary"
OBSERVER = "observer"
# The role ``GET /instances`` shows while the agent checks every instance
# it knows before the group's first view, publishing none (module
# docstring): null would say it does not check them.
PROVISIONAL = "provisional"

# Seconds after a change of the membership (seen or applied) during which
# a primary watches the nodes another member could take over: past the
# settle time and the yield of `sentinel.takeover`, by which every member
# has applied the same view.
TAKEOVER_WATCH = 10.0
# Instances whose observers ``GET /group`` counts in a slice (about 2 ms).
COUNTED_PER_SLICE = 5000
# Unobserved instances ``GET /group`` names, the first by name: the rest
# are counted.
UNOBSERVED_NAMED = 10
# Seconds at most that the instances a change of the view gives this agent
# to observe, not as their primary, wait for the takeovers the same change
# requires (`Group._move`), and seconds between looks at those takeovers.
TAKEOVERS_FIRST = 2.0
TAKEOVERS_LOOK = 0.1
# Seconds after start a member waits for ZooKeeper to connect before it
# checks every instance it knows, publishing none (module docstring): a
# reachable ZooKeeper connects within milliseconds, and an unreachable
# one (refused, a name that does not resolve, a server that accepts and
# never answers) would otherwise hold every check for the whole
# `first_view_wait`.
CONNECT_WAIT = 1.0


class Group:
    """
    This agent's part of its group (see the module docstring). It follows
    the membership while the publisher runs: started with it, stopped
    before the publisher stops (no view is applied while it leaves).
    """

    def __init__(
        self,
        reactor: Any,
        publisher: ZooKeeperPublisher,
        monitor: Monitor,
        zookeeper: ZooKeeperConfig,
        agent_id: str,
        instances: tuple[RedisInstance, ...],
        *,
        settle: float = SETTLE,
        first_view_wait: float | None = None,
    ) -> None:
        """
        @param first_view_wait: seconds to wait, ZooKeeper connected, for
            the first view before observing everything known, alone
            (default: the session timeout).
        """
        self._reactor = reactor
        self.publisher = publisher
        self.monitor = monitor
        self.agent_id = agent_id
        self.replicas = zookeeper.replicas
        self.quorum = zookeeper.quorum
        self.known: dict[str, RedisInstance] = {i.name: i for i in instances}
        self.assignment = Assignment(self.replicas)
        self.assignment.set_known(self.known)
        self.generation = 0
        # The members of the view applied last (for the log line of a change).
        self._members: frozenset[str] = frozenset()
        # The members of the view applied last waited for and not back,
        # whose instances a present observer publishes (`sentinel.standins`).
        self._absent: frozenset[str] = frozenset()
        # Whether the view applied last was one back on a new session, not
        # listed again yet (`Membership.returning`).
        self._returning = False
        self.moved = 0
        self._first_view_wait = (
            zookeeper.session_timeout if first_view_wait is None else first_view_wait
        )
        self._alone_call: IDelayedCall | None = None
        self._connect_call: IDelayedCall | None = None
        # Whether this agent checks every instance it knows, publishing
        # none, until the first view (module docstring).
        self.provisional = False
        self._provisional_since = 0.0
        # The instances checked provisionally, while the first view applies.
        self._unpublished: set[str] = set()
        # Until when (our clock) another member may take a node over that
        # this agent still holds as primary: a while after each change of
        # the membership, seen or applied (`_contested`).
        self._unsettled_until = 0.0
        # The members whose replicas or quorum differ from ours, the line
        # that says so (count and a few names) and the distinct pairs they
        # have, which a new log line waits for (members joining with a pair
        # already reported are no news).
        self._disagreement: dict[str, tuple[int, int]] = {}
        self._disagreement_text = ""
        self._disagreeing_pairs: frozenset[tuple[int, int]] = frozenset()
        self.membership = Membership(
            reactor,
            publisher.zk,
            zookeeper.root,
            agent_id,
            self._catalog(),
            self._view,
            settle=settle,
            on_stir=self._stirred,
            on_own_listed=lambda found: self.publishing.own_catalog_listed(found),
            on_restart=lambda agent, created: self.publishing.member_restarted(
                agent, created
            ),
            on_gone=self._members_gone,
            probes=lambda agent: self.publishing.probes_of(agent),
        )
        # The members primary of an instance this agent knows, by count:
        # computed again after a change of the view or of the config.
        self._relied_on: Counter[str] | None = None
        self.heartbeats = MemberHeartbeats(
            reactor,
            publisher.zk,
            zookeeper.root,
            zookeeper.heartbeat,
            self._primaries_elsewhere,
        )
        self.crowding = InstancesCrowding(
            reactor, publisher.zk, zookeeper.root, self._published
        )
        # The group's instances by the generation and config they were
        # counted at: (generation, names known here, count, names' bytes).
        self._published_counted: tuple[int, int, int, int] | None = None
        publisher.compare_clocks_with(lambda: self.membership.view)
        # The publisher's part in the group: what it writes, by role.
        self.publishing = publisher.join_group(
            self._catalog(), self.replicas, self._successor, (self.start, self.stop)
        )
        self.publishing.contested = self._contested
        self.publishing.view_stale = lambda: bool(
            self.membership.returning or self.membership.absent
        )
        self.publishing.view_known = lambda: self.generation > 0
        self.publishing.voting = self._voting
        self.publishing.on_handed_over = self._handed_over
        self.publishing.on_previous_verdict = self._previous_verdict
        # Back on a new session: the last view went with the old one, and
        # one of a row of ends waits before it joins again, or until its
        # connection has proven itself (`_zk_state`).
        self.holdoff = HoldOff(
            reactor, self._hold_off_over, lambda: publisher.zk.session_timeout
        )
        self.publishing.on_new_session = self._new_session
        # What it publishes while it waits: the instances nobody else would.
        self.unshared = Unshared(agent_id)
        self.publishing.hold_off(
            lambda: self.holdoff.holding, self.unshared.__contains__
        )
        self.membership.on_rejoin_listed = self._listed_holding_off
        # Whether what it leaves to a member not back yet has a node. In
        # the background: a check asks for thousands at once, which the
        # agent's other reads would wait behind (0.5--0.8 s at 3,000).
        self.unpublished = Unpublished(
            reactor,
            lambda path: publisher.zk.exists(path, background=True),
            lambda name: f"{zookeeper.root}/instances/{name}",
            lambda: publisher.zk.session_timeout * (1 + REPLACE_SPREAD),
            lambda names: self._release_for(
                names,
                "no node, and the member the view it keeps while it waits"
                " gives them to is not listed again",
            ),
        )
        # While a reload's changes are applied (`_known_changed`): the views
        # applied meanwhile, logged once its own moves are done.
        self._reloading: list[tuple[View, frozenset[str], set[str]]] | None = None
        # Instances this agent kept for their next primary, which has their
        # node now: they move at the end of the turn, all at once.
        self._handed: set[str] = set()
        self._handed_call: IDelayedCall | None = None
        # Instances new to this agent, to observe, held back until the
        # takeovers of their view are done (`_move`): those takeovers, and
        # since when (our clock) the first of the instances waits.
        self._held_back: set[str] = set()
        self._taking: set[str] = set()
        self._held_back_since = 0.0
        self._held_back_call: IDelayedCall | None = None
        # The members' ids in order, for /group's pages.
        self._member_names = NameIndex()
        # The nodes of slow primaries this agent makes where missing.
        self.covers = Covers(
            reactor,
            publisher.zk.exists,
            self._cover_rank,
            self._move,
            self.publishing.made_or_held,
            lambda name: f"{zookeeper.root}/instances/{name}",
            made=self.publishing.verdict_made,
            after=self._late_after,
        )
        self.publishing.watch_missing(self.covers.missing, self.covers.present)
        self.publishing.watch_behind(
            self.covers.behind,
            self._late_after,
            publisher.zk.writes_slow_at,
            lambda agent: agent in self.membership.view,
        )
        self.publishing.covered = lambda: self.covers.covered
        self.publishing.covering = self._covered_for
        publisher.zk.add_listener(self._zk_state)

    def start(self) -> None:
        """Follow the membership (the publisher starts)."""
        self.membership.start()
        self.heartbeats.start()
        self.crowding.start()
        self._connect_call = self._reactor.callLater(CONNECT_WAIT, self._connect_waited)
        if self.publisher.zk.state == CONNECTED:
            self._wait_for_first_view()

    def stop(self) -> None:
        """Stop following it (the publisher stops)."""
        self.membership.stop()
        self.holdoff.stop()
        self.unpublished.stop()
        self.covers.stop()
        self.heartbeats.stop()
        self.crowding.stop()
        calls = (
            self._alone_call,
            self._connect_call,
            self._handed_call,
            self._held_back_call,
        )
        for call in calls:
            if call is not None and call.active():
                call.cancel()

    # Back on a new session

    def _new_session(self) -> None:
        """
        This agent's session ended and a new one began, before anything is
        written in it: counted (`sentinel.holdoff`), unless no other member
        of the last view knows an instance of this agent's (nobody else
        would publish them while it waited), and rejoined.
        """
        membership = self.membership
        self.unpublished.new_session()
        if (
            membership.viewed
            and membership.running
            and membership.shares_instances(membership.view)
        ):
            # Decided first: rejoining applies a view, whose writes start.
            if self.holdoff.session_ended():
                self._find_unshared(membership.listed)
        membership.rejoin()

    def _listed_holding_off(self, listed: View) -> None:
        """
        A listing while rejoining: a wait goes on only while another live
        member knows this agent's instances (every member cut off at
        once leaves nobody to publish them), and while each instance it
        knows has somebody to publish it (`_unshared_changed`).
        """
        self.unpublished.listed(listed)
        if self.holdoff.holding and not self.membership.shares_instances(listed):
            self.holdoff.release("no other member that knows its instances is listed")
        self._unshared_changed(listed)

    def _unshared_changed(self, listed: View) -> None:
        """
        While it waits, `listed` or the instances it knows changed: the
        wait ends at once if an instance it knows has nobody to publish it
        (`_nobody_publishes`), else what it publishes meanwhile is found again.
        """
        if not self.holdoff.holding:
            self.unpublished.stop()
            return
        unpublished, not_back = self._nobody_publishes(listed)
        if unpublished:
            self._release_for(
                unpublished,
                "nobody to publish them: no other listed member knows them,"
                " and the view it keeps while it waits gives them to another"
                " member",
            )
            return
        # Left to a member that may be waiting too: judged by their nodes.
        self.unpublished.watch(not_back)
        if self._find_unshared(listed):
            self.publishing.write_all()

    def _release_for(self, names: list[str], why: str) -> None:
        """The wait ends: the instances it knows `names` have `why`."""
        more = len(names) - NAMED
        others = f" and {more} more" if more > 0 else ""
        self.holdoff.release(
            f"{len(names)} instance(s) it knows have {why}"
            f" ({', '.join(names[:NAMED])}{others})"
        )

    def _nobody_publishes(self, listed: View) -> tuple[list[str], list[str]]:
        """
        The instances no other of the `listed` members knows whose primary
        in the view kept while it waits is another member: those of a
        member listed again since this agent's new session, which left
        during the wait or no longer knows them (a reload), so that nobody
        publishes them until this agent joins again (up to
        `holdoff.LONGEST_WAIT`), and readers take them for dead; and those
        of a member not listed again, which may be waiting too, behind the
        same path, and publish them (`sentinel.unpublished`).
        """
        alone = unshared_names(self.known, self.agent_id, listed)
        nobody, not_back = [], []
        for name in sorted(alone):
            primary = self.observers(name)[:1]
            if primary == (self.agent_id,):
                continue
            if primary and primary[0] not in self.unpublished.back:
                not_back.append(name)
            else:
                nobody.append(name)
        return nobody, not_back

    def _find_unshared(self, listed: View) -> bool:
        """
        While it waits, the instances no other listed member knows are
        published here (`sentinel.unshared`), those it is the primary of
        in the view it keeps (it has no node of the others): whether they
        changed.
        """
        mine = [name for name in self.known if self.role(name) == PRIMARY]
        if not self.unshared.found(mine, listed):
            return False
        log.info(
            "group: while it waits, this agent publishes the {count}"
            " instance(s) no other listed member knows ({names})",
            count=len(self.unshared.names),
            names=", ".join(self.unshared.named()) or "none",
        )
        return True

    def _hold_off_over(self) -> None:
        """The wait is over: the catalog and nodes due are written now."""
        if not self.membership.running:
            return
        log.info("group: this agent's wait is over; it joins the group again")
        self.unshared.clear()
        self.unpublished.stop()
        self.membership.resume()
        self.publishing.write_all()

    # Before the first view

    def _zk_state(self, state: str) -> None:
        self.holdoff.connection(state == CONNECTED)
        if state == CONNECTED and self.membership.running:
            self._wait_for_first_view()

    def _wait_for_first_view(self) -> None:
        """
        ZooKeeper is connected: its first view may come now, and is
        waited for `first_view_wait` from here at most (module docstring).
        """
        if self.membership.viewed:
            return
        if self._alone_call is None or not self._alone_call.active():
            self._alone_call = self._reactor.callLater(
                self._first_view_wait, self._no_first_view
            )

    def _connect_waited(self) -> None:
        self._connect_call = None
        if self.publisher.zk.state != CONNECTED:
            self._check_provisionally()

    def _no_first_view(self) -> None:
        """
        No first view `first_view_wait` after ZooKeeper connected: alone
        if it is connected still; else, provisionally, until it is again.
        """
        self._alone_call = None
        if self.publisher.zk.state == CONNECTED:
            self.membership.alone()
        else:
            self._check_provisionally()

    def _check_provisionally(self) -> None:
        """Check every instance known, publishing none (module docstring)."""
        membership = self.membership
        if self.provisional or membership.viewed or not membership.running:
            return
        self.provisional = True
        self._provisional_since = self._reactor.seconds()
        log.warn(
            "group membership: ZooKeeper not connected ({why}); checking every"
            " instance this agent knows ({count}) and publishing none of them"
            " until the group's membership is known",
            why=self.publisher.zk.connect_error or "not connected yet",
            count=len(self.known),
        )
        self._move(set(self.known))

    def _move_provisionally(self) -> None:
        """Check every instance known, and nothing else (a reload's change)."""
        monitor = self.monitor
        for name, instance in self.known.items():
            if name not in monitor.states:
                monitor.add_instance(instance)
        gone = [
            state.name
            for state in monitor.states.values()
            if (state.instance.discovered_by or state.name) not in self.known
        ]
        for name in gone:
            monitor.remove_instance(name)

    # Roles

    def role(self, name: str) -> str | None:
        """PRIMARY, OBSERVER, or None if this agent does not observe `name`."""
        observers = self.observers(name)
        if observers[:1] == (self.agent_id,):
            return PRIMARY
        return OBSERVER if self.agent_id in observers else None

    def observers(self, name: str) -> tuple[str, ...]:
        """
        The observers of a known instance, primary first: its publisher
        first, standing in for an absent primary (`sentinel.standins`),
        or covering for a slow one (`sentinel.covers`).
        """
        order = stand_in_order(self.assignment.observers(name), self._absent)
        if self.covers.covering(name):
            return covering(order, self.agent_id)
        return order

    def _late_after(self) -> float:
        """How long a verdict may not say this agent's opinion (`behind`)."""
        return late_after(self.publisher.zk.session_timeout)

    def _covered_for(self, name: str) -> str | None:
        """
        The listed primary this agent covers `name`'s node for now
        (`sentinel.covers`), if any: none once this agent is the primary
        itself in the view (the cover ends at its next look).
        """
        if not self.covers.covering(name):
            return None
        order = stand_in_order(self.assignment.observers(name), self._absent)
        return order[0] if order[:1] not in ((), (self.agent_id,)) else None

    def standing_in(self, name: str) -> bool:
        """
        Whether this agent publishes `name` only where its node is missing:
        for its absent primary, as its primary back on a new session and
        not listed again yet (`Membership.returning`), or covering for a
        slow primary (`sentinel.covers`).
        """
        observers = self.assignment.observers(name)
        if observers[:1] == (self.agent_id,):
            return self._returning
        # A cover of a node its slow primary holds (`Covers.behind`) takes
        # it over, in one transaction, as any new primary does.
        return self._standing_in_for_absent(name) or (
            self.covers.covering(name) and not self.covers.taking(name)
        )

    def _standing_in_for_absent(self, name: str) -> bool:
        """Whether this agent publishes `name` for its absent primary."""
        observers = self.assignment.observers(name)
        return (
            bool(observers)
            and observers[0] != self.agent_id
            and stand_in_order(observers, self._absent)[:1] == (self.agent_id,)
        )

    def _cover_rank(self, name: str) -> int | None:
        """
        This agent's place among the observers of `name` (1: its first
        secondary) while it may cover its node for a slow primary, a
        listed member (`sentinel.covers`); None otherwise: it publishes
        the node already, or keeps it, or is no member now (waiting to
        join again, or back on a new session and not listed yet).
        """
        if self.holdoff.holding or self._returning or self.provisional:
            return None
        order = stand_in_order(self.assignment.observers(name), self._absent)
        if self.agent_id not in order[1:] or self.publishing.keeping(name):
            return None
        return order.index(self.agent_id)

    def _stirred(self) -> None:
        """The membership may be changing: watch our contested nodes a while."""
        now = self._reactor.seconds()
        settled = now >= self._unsettled_until
        self._unsettled_until = now + TAKEOVER_WATCH
        if settled:
            # Within the window the nodes are watched already, each armed
            # again after its writes: a member rewriting its catalog in a
            # loop does not make every stir walk every node.
            self.publishing.watch_contested()

    def _voting(self, agent: str) -> bool:
        """
        Whether the member `agent` publishes opinions: its catalog says
        replicas above 1 (unknown yet: taken to).
        """
        catalog = self.membership.view.get(agent)
        return catalog is None or catalog.replicas > 1

    def _contested(self, name: str) -> bool:
        """
        Whether another member may take `name`'s node over now: it knows
        the instance, and the membership changed lately. A member takes a
        node over only after a change of the membership, which every member
        is told of at about the same time; outside that window the node is
        not watched, for a watch fired by each of our own writes costs a
        request to set again (`sentinel.takeover`).
        """
        return self._reactor.seconds() < self._unsettled_until and self._successor(name)

    def _members_gone(self, agents: Collection[str]) -> None:
        """Members with no catalog listed any more: nothing kept by their ids."""
        self.heartbeats.forget(agents)
        self.publishing.members_gone(agents)

    def _own_share(self) -> set[str]:
        """The names this agent is the primary of in the assignment."""
        me = self.agent_id
        return {
            name for name, top in self.assignment.items() if top[:1] and top[0][1] == me
        }

    def _primaries_elsewhere(self) -> Counter[str]:
        """
        Each other member that is the primary of instances this agent
        knows, and of how many: the members it relies on to publish them.
        """
        if self._relied_on is None:
            absent = self._absent
            primaries = (
                stand_in_order(tuple(a for _, a in top), absent)[0]
                for _, top in self.assignment.items()
                if top
            )
            self._relied_on = Counter(a for a in primaries if a != self.agent_id)
        return self._relied_on

    def _view(self, view: View) -> None:
        self._unsettled_until = self._reactor.seconds() + TAKEOVER_WATCH
        self._relied_on = None
        before = self._members
        changed = self.assignment.update(
            {agent: catalog.names for agent, catalog in view.items()}
        )
        if self.provisional:
            # Every instance checked provisionally moves as its role says;
            # those let go were never published here (`_stop_watching`).
            self.provisional = False
            self._unpublished = set(self.monitor.states)
            changed |= set(self.known)
            log.info(
                "group membership: known after {seconds:.1f} s of checking"
                " provisionally; the instances this agent does not observe"
                " are let go",
                seconds=self._reactor.seconds() - self._provisional_since,
            )
        absent, absent_before = self.membership.absent, self._absent
        changed |= moved_by(self.assignment.items(), absent ^ absent_before)
        self._absent = absent
        if self.membership.returning != self._returning:
            # Its own share goes to or from making its nodes only where
            # missing (`standing_in`).
            self._returning = self.membership.returning
            changed |= self._own_share()
        self._log_stand_ins(absent_before)
        self.generation += 1
        self.publishing.sessions_ended(
            self.membership.sessions_gone.intersection(before).difference(view)
        )
        self.publishing.view_changed()
        self._report_disagreement()
        # A node kept for its next primary goes once no other member knows
        # its instance (each had it removed from its config, say).
        self._move(changed | self.publishing.kept)
        self._unpublished = set()
        self._members = frozenset(view)
        if self._reloading is None:
            self._log_view(view, before, changed)
        else:
            self._reloading.append((view, before, changed))

    def _log_stand_ins(self, before: frozenset[str]) -> None:
        """Log the members this agent starts or stops standing in for."""
        absent = self._absent
        if absent == before:
            return
        if absent:
            count = sum(
                1
                for name, _ in self.assignment.items()
                if self._standing_in_for_absent(name)
            )
            log.info(
                "group: {members} not listed again since this agent's new"
                " session; it publishes {count} of their instance(s) where"
                " their nodes are missing until they are back or the wait"
                " for them ends",
                members=", ".join(sorted(absent)[:10]),
                count=count,
            )
        back = before - absent
        if back:
            log.info(
                "group: {members} back or no longer waited for; their"
                " instances go to their primaries",
                members=", ".join(sorted(back)[:10]),
            )

    def _log_view(
        self,
        view: View,
        before: frozenset[str],
        changed: set[str],
        reloaded: Set[str] = frozenset(),
    ) -> None:
        """
        Log a view applied: the members, who joined and who left, how many
        instances changed observers (the view's, and a reload's that
        applied it: `reloaded`), and how many this agent observes now.
        """
        # A member joining or leaving is news an operator looks for when
        # nodes move: which, and how much moved here.
        log.info(
            "group: {members} member(s){joined}{left}; {moved} instance(s) "
            "changed observers, this agent observes {observing}",
            members=len(view),
            joined=_named(" joined", set(view) - before),
            left=_named(" left", before - set(view)),
            moved=len(changed | reloaded),
            observing=len(self.monitor.states),
        )

    def _move(self, names: set[str]) -> None:
        """
        Check, publish and stop checking as the roles of `names` now say;
        replicas discovered from a master move with it (they are found
        again by its new observers, from its INFO). An instance whose node
        this agent keeps for its next primary is still checked here
        (`GroupRoles.keeping`), until that one takes the node over.

        The instances this agent becomes the primary of go first: their
        nodes are another's, or missing since a member crashed, and their
        writes take the first free write slots, before the rewrites of
        the nodes it holds already (the write queue puts first what
        readers miss only among the writes that wait for a slot).

        Those it starts observing, not as primary, wait while those
        takeovers are not done, `TAKEOVERS_FIRST` at most: at a member's
        leave at 3,000 instances (three agents, ``replicas = 2``) each
        survivor takes over about 500 nodes and starts observing 1,000
        instances, whose probes and opinion nodes, made in the same turn
        (0.8 s of it), then their connects and first checks, held the
        reactor while the takeovers' answers waited for it, and the
        bridge sends a waiting call only as another is answered; most
        went with the leaver's session, missing for seconds. Their
        previous observer stopped checking them at the leave, their
        primary checks them still, and nothing this agent checked
        already waits.
        """
        if self.provisional:
            self._move_provisionally()
            return
        monitor = self.monitor
        discovered: dict[str, list[str]] = {}
        for state in monitor.states.values():
            master = state.instance.discovered_by
            if master is not None and master in names:
                discovered.setdefault(master, []).append(state.name)
        roles = {name: self.observers(name) for name in names}
        me = (self.agent_id,)
        publishes = self.publishing.publishes

        def later(name: str) -> tuple[bool, str]:
            return roles[name][:1] != me or publishes(name), name

        # Whether takeovers are pending: asked once, after the instances
        # this agent becomes the primary of (sorted first) are assigned.
        taking: bool | None = None
        for name in sorted(names, key=later):
            observers = roles[name]
            watched = name in monitor.states
            new = self.agent_id in observers and not watched
            if new and observers[0] != self.agent_id:
                if taking is None:
                    taking = self._takeovers_pending()
                if taking:
                    self._hold_back(name)
                    continue
            self._held_back.discard(name)
            if new:
                monitor.add_instance(self.known[name])
            self.publishing.assign(
                name, observers, self.known.get(name), self.standing_in(name)
            )
            if self.publishing.taking_over(name):
                self._taking.add(name)
            observed = self.agent_id in observers or self.publishing.keeping(name)
            if watched and not observed:
                self._stop_watching(name)
                for replica in discovered.get(name, ()):
                    self._stop_watching(replica)
            if observed != watched:
                self.moved += 1

    def _stop_watching(self, name: str) -> None:
        """
        Check `name` no more. One checked only provisionally was never
        published by this process: its node, if its previous process left
        one on the session inherited, waits for its primary's takeover, as
        on a start that never checked it (`ZooKeeperPublisher.let_go`).
        """
        if name in self._unpublished:
            self.monitor.let_go(name)
            self.publisher.let_go(name)
        else:
            self.monitor.remove_instance(name)

    def _takeovers_pending(self) -> bool:
        """Whether a takeover a change of the view started is not done."""
        taking_over = self.publishing.taking_over
        self._taking = {name for name in self._taking if taking_over(name)}
        return bool(self._taking)

    def _hold_back(self, name: str) -> None:
        """`name` is moved once the takeovers pending are done (`_move`)."""
        if not self._held_back:
            self._held_back_since = self._reactor.seconds()
        self._held_back.add(name)
        if self._held_back_call is None or not self._held_back_call.active():
            self._held_back_call = self._reactor.callLater(
                TAKEOVERS_LOOK, self._move_held_back
            )

    def _move_held_back(self) -> None:
        """Move the instances held back, once the takeovers are done."""
        self._held_back_call = None
        waited = self._reactor.seconds() - self._held_back_since
        if self._takeovers_pending() and waited < TAKEOVERS_FIRST:
            self._held_back_call = self._reactor.callLater(
                TAKEOVERS_LOOK, self._move_held_back
            )
            return
        names, self._held_back = self._held_back, set()
        # Not waited for again: a takeover still pending is refused, or
        # waits for its node's holder (`sentinel.holders`).
        self._taking.clear()
        self._move(names)

    def _handed_over(self, name: str) -> None:
        """
        The node of `name`, kept for its next primary, is that one's now:
        moved at the end of the turn, with the others taken over meanwhile
        (one pass over the instances checked for them all: a member that
        joins takes hundreds over at once).
        """
        self._handed.add(name)
        if self._handed_call is None or not self._handed_call.active():
            self._handed_call = self._reactor.callLater(0, self._move_handed)

    def _previous_verdict(self, name: str, previous: Mapping[str, Any]) -> None:
        """
        This agent takes `name`'s node over from another agent, or
        reattaches to it on the session its own previous process left
        (`sentinel.handoff`), and the node says `previous` (its previous
        primary's verdict). With one replica, a fresh one is the status
        this agent's checks go on from (`InstanceHealth.inherit`): a
        takeover or a restart is no news of the instance, and the first
        check of a new primary busy taking hundreds over (a connect timed
        out on its own CPU), or of a new process starting thousands of
        connections, published healthy instances down until `rise` checks
        later. A dead one goes down within `fall` checks, as it would have
        under its previous primary. With more replicas the verdict comes
        from the observers' opinions, and one observer's first check is
        one opinion of the quorum.

        Fresh: checked within `refresh` plus the health's `stale_after`
        (one interval more than the longer of `rise` and `fall` take) of
        now, on the previous primary's clock. A live primary rewrites an
        unchanged node at least every `refresh`, with the check it made
        last; one older than that was not, and its writer had stopped
        checking (frozen, gone, or its writes failing for longer than its
        own hysteresis would take to notice anything): no evidence of now.
        The first check then decides, as it does for a node made anew.
        """
        state = self.monitor.states.get(name)
        said = opinion_in(previous)
        if self.replicas > 1 or state is None or said is None:
            return
        fresh_for = self.publisher.refresh + state.health.stale_after
        now = self._reactor.seconds()
        if said.checked_at is None or abs(now - said.checked_at) > fresh_for:
            return
        replication = Replication(
            role=said.role,
            master_host=said.master_host,
            master_port=said.master_port,
            master_link_status=said.master_link_status,
        )
        self.monitor.inherit(
            name, said.status, said.ready, replication, said.checked_at
        )

    def _move_handed(self) -> None:
        names, self._handed = self._handed, set()
        self._move(names)

    def _successor(self, name: str) -> bool:
        """Whether another member knows `name` (and will take its node over)."""
        return any(
            agent != self.agent_id and name in catalog.names
            for agent, catalog in self.membership.view.items()
        )

    def _catalog(self) -> Catalog:
        return Catalog(frozenset(self.known), self.replicas, self.quorum)

    def _published(self) -> Expected:
        """
        The instances the group publishes (`sentinel.crowding`): its
        members' catalogs together, counted again when the view or the
        config changes, and the replicas this agent discovered.
        """
        key = (self.generation, len(self.known))
        counted = self._published_counted
        if counted is None or counted[:2] != key:
            names = set(self.known).union(
                *(catalog.names for catalog in self.membership.view.values())
            )
            counted = (*key, len(names), sum(map(utf8_length, names)))
            self._published_counted = counted
        discovered = [
            state.name
            for state in self.monitor.states.values()
            if state.instance.discovered_by is not None
        ]
        return Expected(
            counted[2] + len(discovered),
            counted[3] + sum(map(utf8_length, discovered)),
        )

    def _report_disagreement(self) -> None:
        """
        Keep the members that disagree on replicas or quorum, for /healthz
        and /group, and log when a disagreement starts, changes (a pair
        of replicas and quorum appears or goes) or ends: in a fleet moving
        to new replicas host by host, every view has a new disagreeing
        member, and a line per view naming them all took megabytes.
        """
        disagreeing = self.membership.disagreeing
        if disagreeing == self._disagreement:
            return
        self._disagreement = disagreeing
        self._disagreement_text = _disagreement_text(disagreeing)
        pairs = frozenset(disagreeing.values())
        if pairs == self._disagreeing_pairs:
            return
        self._disagreeing_pairs = pairs
        if disagreeing:
            log.error(
                "group: members disagree on replicas and quorum: {members}; this "
                "agent keeps its own (replicas {replicas}, quorum {quorum})",
                members=self._disagreement_text,
                replicas=self.replicas,
                quorum=self.quorum,
            )
        else:
            log.info("group: every member agrees on replicas and quorum again")

    # The reloader's side (as the monitor's)

    def add_instance(self, instance: RedisInstance) -> None:
        """Know one more instance; observe it if it is this agent's."""
        self.known[instance.name] = instance
        self._known_changed()

    def remove_instance(self, name: str) -> None:
        """Know it no more: its node goes to the next agent that knows it."""
        del self.known[name]
        self._known_changed()

    def replace_instance(self, instance: RedisInstance) -> None:
        """A changed instance: checked from scratch if observed here."""
        self.known[instance.name] = instance
        if instance.name in self.monitor.states:
            self.monitor.replace_instance(instance)

    def relabel_instance(self, instance: RedisInstance) -> None:
        """New discovery service or labels: taken in place if observed here."""
        self.known[instance.name] = instance
        if instance.name in self.monitor.states:
            self.monitor.relabel_instance(instance)

    def update_settings(self, settings: Settings) -> None:
        """New global settings for the monitor."""
        self.monitor.update_settings(settings)

    def change_instances(
        self,
        removed: Sequence[str],
        changed: Sequence[RedisInstance],
        added: Sequence[RedisInstance],
    ) -> None:
        """
        A reload's changes, with the assignment, the catalog and the moves
        worked out once for all of them: once per instance, a reload adding
        2,000 held the reactor 19 s (each a pass over every instance known,
        and a catalog written to ZooKeeper).
        """
        for instance in changed:
            self.replace_instance(instance)
        for name in removed:
            del self.known[name]
        for instance in added:
            self.known[instance.name] = instance
        if removed or added:
            self._known_changed()

    def configured(self) -> Mapping[str, RedisInstance]:
        """Every instance it knows, observed here or not."""
        return dict(self.known)

    def _known_changed(self) -> None:
        changed = self.assignment.set_known(self.known)
        self._relied_on = None
        catalog = self._catalog()
        self.publishing.set_catalog(catalog)
        # The view this applies is logged after the moves below: logged
        # before them, it counted the instances removed as still observed.
        views: list[tuple[View, frozenset[str], set[str]]] = []
        self._reloading = views
        try:
            self.membership.set_own(catalog)
        finally:
            self._reloading = None
        self._move(changed)
        for view, before, moved in views:
            self._log_view(view, before, moved, changed)
        # Waiting to join again: what it alone knows now is published now.
        self._unshared_changed(self.membership.listed)

    # Seeing it

    def verdict_status(self, name: str) -> str | None:
        """
        The status this agent publishes for `name` (a replica discovered
        from a master included): on its primary, the verdict (its own
        status with ``replicas = 1``); None where another agent publishes
        it, or while there is no verdict.
        """
        if not self.publishing.publishes(name):
            return None
        if self.replicas > 1:
            verdict = self.publishing.verdict_of(name)
            return None if verdict is None else verdict.status
        state = self.monitor.states.get(name)
        return None if state is None else state.health.status

    def instance_view(self, name: str) -> dict[str, Any]:
        """
        ``GET /instances``: in which role this agent observes `name`
        (``observing_as``: primary or observer, or provisional while it
        checks every instance before the first view), and the group's verdict as
        this agent knows it (its primary's alone: an observer has only its
        own opinion, and says so with null).
        """
        observers = self.observers(name)
        verdict = self.publishing.verdict_of(name) if self.replicas > 1 else None
        document: dict[str, Any] | None = None
        if verdict is not None:
            document = {
                "status": verdict.status,
                "observers": dict(verdict.observers),
                "quorum": verdict.quorum,
            }
            if verdict.uncounted:
                document["uncounted"] = list(verdict.uncounted)
        elif self.replicas == 1 and self.role(name) == PRIMARY:
            state = self.monitor.states.get(name)
            status = None if state is None else state.health.status
            document = {
                "status": status,
                "observers": {self.agent_id: status},
                "quorum": 1,
            }
        return {
            "observing_as": PROVISIONAL if self.provisional else self.role(name),
            "observers": list(observers),
            "verdict": document,
        }

    def unhealthy_reason(self) -> str | None:
        """Why /healthz fails on the group's account, or None."""
        reasons = []
        if self._disagreement:
            reasons.append(
                f"group: members disagree on replicas and quorum: "
                f"{self._disagreement_text}; this agent uses "
                f"replicas {self.replicas}, quorum {self.quorum}"
            )
        unreadable = self.membership.unreadable
        if unreadable:
            agent, *rest = heapq.nsmallest(SAMPLED + 1, unreadable)
            reasons.append(
                f"group: the catalog of agent {agent} cannot be read "
                f"({unreadable[agent]}); it is left out"
                + others(rest, len(unreadable) - 1)
            )
        unwritten = self.heartbeats.reason()
        if unwritten is not None:
            reasons.append(unwritten)
        crowded = self.crowding.unhealthy_reason()
        if crowded is not None:
            reasons.append(f"group: {crowded}")
        failing = self.membership.failing()
        if failing is not None:
            seconds, error = failing
            reasons.append(
                f"group: the membership cannot be listed ({error}) for "
                f"{seconds:.0f} s; members that joined or left since are not seen"
            )
        slow = self.membership.slow()
        if slow is not None:
            seconds, reads = slow
            reasons.append(
                f"group: listing the membership has taken {seconds:.0f} s so far"
                f" (it asked which session holds {reads} agent node(s) and"
                " catalog(s));"
                " members that joined or left since are not seen"
            )
        behind = self.membership.behind()
        # Waiting to join again, the view is the last one, kept on purpose.
        if behind is not None and not self.holdoff.holding:
            seconds, seen, viewed = behind
            reasons.append(
                f"group: this agent's view of the membership has been behind"
                f" ZooKeeper for {seconds:.0f} s ({self.membership.path} at child"
                f" version {seen}, the view at {viewed}): members that joined or"
                " left since are not seen, and this agent may assign instances"
                " unlike the other members"
            )
        if self.provisional:
            waited = self._reactor.seconds() - self._provisional_since
            reasons.append(
                f"group: membership not known yet ({self._provisional_why()}):"
                f" checking every instance this agent knows ({len(self.known)})"
                f" for {waited:.0f} s and publishing none of them until it is"
            )
        elif not self.membership.viewed:
            reasons.append("group: membership not known yet; observing nothing")
        holding = self.holdoff.reason(self.unshared.said())
        if holding is not None:
            reasons.append(holding)
        unlisted = self.membership.unlisted()
        if unlisted is not None and holding is None:
            reasons.append(
                f"group: back on a new ZooKeeper session for {unlisted:.0f} s and"
                " not listed in the group again; its own instances' nodes made"
                " only where missing, none taken over"
            )
        awaiting = self.membership.awaiting()
        if awaiting is not None:
            waited, missing = awaiting
            reasons.append(
                f"group: back on a new ZooKeeper session for {waited:.0f} s and"
                f" {len(missing)} member(s) of the view before it not listed"
                f" again ({sample(missing, len(missing))}): the instances they"
                " were primary of are checked by one observer fewer, and"
                " published by their next observer only where their nodes were"
                " missing, until they are back or the wait for them ends"
            )
        return "; ".join(reasons) or None

    def _provisional_why(self) -> str:
        """What the agent waits for while it checks provisionally."""
        if self.publisher.zk.state == CONNECTED:
            return "its first view to come"
        return "ZooKeeper not connected"

    def summary(self) -> dict[str, int]:
        """The status page's line: members, and this agent's share."""
        return {
            "members": len(self.membership.view),
            "known": len(self.known),
            "observing": len(self.monitor.states),
            "primary": self.publishing.primaries,
            "provisional": self.provisional,
        }

    def _provisional_report(self) -> dict[str, Any]:
        """
        ``GET /group``'s say of a provisional start: whether this agent
        checks every instance it knows, publishing none, since when
        (epoch seconds) and why; the two nulls otherwise.
        """
        if not self.provisional:
            return {
                "provisional": False,
                "provisional_since": None,
                "provisional_why": None,
            }
        return {
            "provisional": True,
            "provisional_since": self._provisional_since,
            "provisional_why": self._provisional_why(),
        }

    def report_slices(self, query: PageQuery) -> Slices:
        """
        ``GET /group``, as slices (`sentinel.streaming`): the group, and a
        page of its members by id (``query``; ``next``: the id to ask for
        after, or null on the last page), each with its share. Every
        ``observing`` and ``primary`` count is over the instances this
        agent knows (``counted_over``): the assignment of the others' is
        not computed here (a rendezvous hash per instance and member, on
        the reactor thread), so members whose lists differ count apart.
        ``disagreeing`` holds the members of the page whose replicas or
        quorum differ from ours (``disagreeing_count``: all of them).
        ``provisional`` says a start that checks every instance known
        before the first view (``observing``, the head's and this agent's
        own member row's, counting them all). ``hold_off_seconds`` is
        what is left of a wait before this agent joins again, after its
        sessions ended ``session_ends`` times in a row (`sentinel.holdoff`),
        ``hold_off_unshared`` how many instances it publishes meanwhile (no
        other listed member knows them: `sentinel.unshared`), and
        ``hold_off_unshared_names`` the first of them by name.
        ``unobserved`` counts the instances this agent knows that no
        live member observes, ``unobserved_names`` names the first
        `UNOBSERVED_NAMED` of them (no ``/instances`` lists them).
        ``slow_members``: the members this agent covers or keeps nodes
        for (slow to write, `sentinel.covers`), each with how many, whose
        opinions no verdict it writes counts meanwhile.
        Built in one turn, 10,000 members took 67-126 ms, 1.9 MB at once.
        """
        view = self.membership.view
        listed = self.membership.listed
        disagreement = self._disagreement
        observing: Counter[str] = Counter()
        primary: Counter[str] = Counter()
        unobserved: list[str] = []
        ranked = list(self.assignment.items())
        for start in range(0, len(ranked), COUNTED_PER_SLICE):
            for name, top in ranked[start : start + COUNTED_PER_SLICE]:
                if not top:
                    unobserved.append(name)
                for index, (_, agent) in enumerate(top):
                    observing[agent] += 1
                    if index == 0:
                        primary[agent] += 1
            yield b""
        known = len(self.known)
        mine = observing[self.agent_id]
        if self.provisional:
            # Before the first view no member observes anything, but this
            # agent checks every instance it knows (module docstring); its
            # own member row says so too.
            mine, unobserved = known, []
            observing[self.agent_id] = mine
        behind = self.membership.behind_seconds()
        holding = self.holdoff.remaining()
        head = {
            "agent": self.agent_id,
            "replicas": self.replicas,
            "quorum": self.quorum,
            "settle_seconds": self.membership.settle,
            "size": len(view),
            "known": known,
            "counted_over": "known",
            "observing": mine,
            "primary": primary[self.agent_id],
            "share": mine / known if known else 0.0,
            "unobserved": len(unobserved),
            # Which, not only how many: /instances lists none of them.
            "unobserved_names": heapq.nsmallest(UNOBSERVED_NAMED, unobserved),
            "view_changes": self.generation,
            "view_behind_seconds": None if behind is None else round(behind, 1),
            "membership_audits": self.membership.audits,
            "missed_changes": self.membership.missed,
            "moved": self.moved,
            "disagreeing_count": len(disagreement),
            "hold_off_seconds": None if holding is None else round(holding, 1),
            "hold_off_unshared": None if holding is None else len(self.unshared.names),
            "hold_off_unshared_names": self.unshared.named(),
            "session_ends": self.holdoff.ends(),
            "slow_members": self.publishing.slow_members,
            **self._provisional_report(),
        }
        yield json.dumps(head)[:-1].encode("utf-8") + b', "members": [\n'
        names = self._member_names.sorted(view)
        first = 0 if query.after is None else bisect_right(names, query.after)
        shown = names[first : first + query.limit]
        for start in range(0, len(shown), DOCUMENTS_PER_SLICE):
            members = [
                json.dumps(
                    {
                        "agent": agent,
                        "live": agent == self.agent_id or agent in listed,
                        "instances": len(view[agent].names),
                        "replicas": view[agent].replicas,
                        "quorum": view[agent].quorum,
                        "observing": observing[agent],
                        "primary": primary[agent],
                    }
                )
                for agent in shown[start : start + DOCUMENTS_PER_SLICE]
            ]
            yield (b",\n" if start else b"") + ",\n".join(members).encode("utf-8")
        more = first + query.limit < len(names)
        tail = {
            "next": shown[-1] if more and shown else None,
            "disagreeing": {
                agent: {
                    "replicas": disagreement[agent][0],
                    "quorum": disagreement[agent][1],
                }
                for agent in shown
                if agent in disagreement
            },
        }
        yield b"\n], " + json.dumps(tail)[1:].encode("utf-8") + b"\n"


class GroupMetrics(Collector):
    """
    The group in /metrics: its size as this agent sees it, and this agent's
    share (counted from what it checks, never by walking every instance).
    """

    def __init__(self, group: Group) -> None:
        self._group = group

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        """The group's gauges, read now."""
        group = self._group
        known = len(group.known)
        observing = len(group.monitor.states)
        yield GaugeMetricFamily(
            "sentinel_group_members",
            "Agents in this agent's view of its group (itself included).",
            value=len(group.membership.view),
        )
        yield GaugeMetricFamily(
            "sentinel_group_known_instances",
            "Instances this agent can check (its catalog).",
            value=known,
        )
        yield GaugeMetricFamily(
            "sentinel_group_observed_instances",
            "Instances this agent observes (checks).",
            value=observing,
        )
        yield GaugeMetricFamily(
            "sentinel_group_primary_instances",
            "Instances this agent is the primary of (writes the node of).",
            value=group.publishing.primaries,
        )
        behind = group.membership.behind_seconds()
        yield GaugeMetricFamily(
            "sentinel_group_view_behind_seconds",
            "Since how long this agent's view of the membership is known"
            " behind ZooKeeper's (0 while it is not).",
            value=0.0 if behind is None else behind,
        )
        yield CounterMetricFamily(
            "sentinel_group_missed_changes",
            "Changes of the membership no watch told of, found by the audit.",
            value=group.membership.missed,
        )
        holding = group.holdoff.remaining()
        yield GaugeMetricFamily(
            "sentinel_group_hold_off_seconds",
            "Seconds left, at most, before this agent joins its group again"
            " after its sessions ended in a row (0 while it does not wait):"
            " a connection that stays up long enough ends the wait sooner.",
            value=0.0 if holding is None else holding,
        )
        yield GaugeMetricFamily(
            "sentinel_group_session_ends",
            "This agent's own ZooKeeper sessions ended in a row, each within"
            " the hold-off window of the one before.",
            value=group.holdoff.ends(),
        )
        yield GaugeMetricFamily(
            "sentinel_group_hold_off_unshared_instances",
            "Instances this agent publishes while it waits to join its group"
            " again: those no other listed member knows.",
            value=len(group.unshared.names),
        )
        yield CounterMetricFamily(
            "sentinel_group_hold_offs",
            "Waits before joining the group again after sessions ended in a row.",
            value=group.holdoff.waits,
        )
        yield GaugeMetricFamily(
            "sentinel_group_share",
            "Observed instances over known ones.",
            value=observing / known if known else 0.0,
        )


def _named(what: str, agents: Set[str]) -> str:
    """`what` and the agents, sorted (at most 5 named), or nothing."""
    if not agents:
        return ""
    names = sorted(agents)
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return f"{what}: {', '.join(names[:5])}{more}"


def _disagreement_text(disagreeing: Mapping[str, tuple[int, int]]) -> str:
    """
    How many members disagree, and what the first 5 by name have (the
    whole list is in /group): bounded, whatever the group's size.
    """
    named = heapq.nsmallest(5, disagreeing)
    text = ", ".join(
        f"{agent} has replicas {disagreeing[agent][0]}, quorum {disagreeing[agent][1]}"
        for agent in named
    )
    more = len(disagreeing) - len(named)
    return f"{len(disagreeing)} member(s), {text}" + (
        f" and {more} more" if more else ""
    )

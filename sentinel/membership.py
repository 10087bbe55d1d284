"""
Who is in the group, and what each member can check (DESIGN.md section 8,
"Groups"), as seen from one agent.

Each member's catalog (`documents.Catalog`: the names it can check, its
replicas and quorum) is published by its own publisher under
``{root}/catalogs``, one ephemeral node per part, named
``{agent_id}.{digest}.{token}.{index}.{count}`` (`token` is the process's
own). The members are the agents with a complete catalog there, and that
directory is what is watched (and, in a large group, the catalogs of
members sharing instances with this agent, below): one children watch, which fires on a
join, a leave or a catalog change (a reload), never on a heartbeat, so a
member's agent node (rewritten every heartbeat) is never read, only asked
which session holds it (below). Changes
cost each member at most one listing (about 50 bytes a member) per
`settle` time, however many there are, or in a large group changing all
the time (a rolling deploy of thousands) per as long as that listing's
bytes take at `LISTING_BYTES_PER_SECOND`, at most `LISTING_PACE_LIMIT`
(`_pace`): the catalogs of members that know an instance this agent
knows are watched meanwhile, and a change of theirs is listed after the
settle time all the same (`_watch_neighbours`). And the reading of new
catalogs only: catalogs are kept by digest, so agents sharing one list (a central
group) are read once, and a catalog seen before is not read again; nor
is one that could not be decoded, until its member writes another (its
parts are decompressed as they arrive, and the read stops at the first
bad one). Catalogs are inflated and decoded one at a time, a slice per
reactor turn (`CatalogDecoder`), so that a member with a huge one never
holds the checks, and parsed no further than the names there is room
to keep (`MAX_NAMES_KEPT`).

A catalog counts only while a session holds it: one in a persistent node
(written by hand, or left by some other tool: no agent's session ends it)
is left out, its member reported as unreadable (`unreadable`, and
``/healthz`` through `sentinel.group`), and a new member's catalog is
asked about once even when its digest was read before. And only the
agent's own session's: anyone may create a catalog in a live agent's name
(a squatter's, its digest sorting first, was the choice of every member
that joined after it, which then saw that agent knowing other names, and
the group had two primaries for its instances). Of several catalogs in
one name, the one held by the session of ``{root}/agents/{agent_id}`` is
chosen whenever the candidates change, and a catalog read is left out
(named likewise, and asked about again at each listing) while another
live session holds that node, or while no session holds it (a catalog
alone is no agent's: asked about again after `RETRY_DELAY`). So is a member
whose catalog ZooKeeper would not give (no access to it, a timeout, a
lost connection): the view is partial meanwhile, and the read is tried
again after `RETRY_DELAY`, twice as long after each failure in a row.
All catalogs kept hold at most `MAX_NAMES_KEPT` names together; one that
would take them over is left out the same way, so that members with huge
catalogs cannot make the agent grow without bound. This agent's own
catalog, once written, is expected in every listing: missing (deleted
behind its back, with ``{root}`` itself, say), it is written again
(`on_own_listed`), as the agent node is at each heartbeat; else the
group would split for good. Another member's catalog missing so, while
the session that held it holds its agent node, keeps that member in the
view as it was (`sentinel.uncatalogued`): a client deleting it in a loop
does not move its instances away and back.

A change of membership is applied `settle` seconds after it is first seen
(`SETTLE`), with whatever happened meanwhile (listed again then, if the
watch fired since): a member whose catalog goes and comes back within it
(deleted behind its back, written again) moves nothing, and a rack of
members joining together moves its instances once. A change that is
only members leaving whose agent nodes went too is applied at once
(`_sessions_ended`): their sessions ended (expired after a crash, or
closed by a stop that left the group), their instance nodes are missing
or about to be, and readers miss them until the new primaries make them
again. Among them, a member whose opinions asked about beside its agent
node (`probes`: a few this agent read) are gone too has lost its session
(`sessions_gone`), which took every node of it at once: the new
primaries make its instance nodes with a create alone, where a leave's
are taken over from its live session. But not the members that went
with this agent's own catalog (`_wiped`: a ``deleteall`` of the root,
every session alive): they are waited for as after a rejoin (below),
for they write theirs again as this agent does. The first view waits
the settle time too: agents started together then begin with the same
view, rather than each take everything, alone, for a moment. This
agent is always a member of its own view, whatever ZooKeeper lists (it
may not have written its catalog yet, or ZooKeeper may have come back
empty): an agent alone observes everything it knows.

While ZooKeeper is unreachable the last view stays: the instances keep
their observers rather than move on a guess. Not past the end of this
agent's session, though (`rejoin`): ZooKeeper then deleted its catalog
and every node of it, the others saw it leave and took its instances
over, and its last view is what they no longer see. Acting on it, the
agent, back on a new session, took its instances back at once, while
the others had not seen it return and still wrote them as their
primary: two primaries of one node for a settle time (a verdict, a
discovery member, deleted and made again). So until a listing made in
its new session lists its own catalog held by that session, and the
settle time after it, it is `returning`: it keeps its last view, goes on
checking what it observes there, and makes the nodes of its own share
only where they are missing, a create, never a takeover, as a stand-in
does (`sentinel.standins`). After an expiry of its own the others made
those nodes within a second, and it takes nothing from them; after a
wipe nobody did, every member is back on a new session, and its share
is published at once instead of after its listing, the settle time and
a first check of each instance (it observed none of them in a view
without itself: 2-7 s at 1,000 instances). Once listed, it takes over as
their primary, in one transaction, those another member made meanwhile.
A reconnection to the same session keeps the last view, as before:
nothing of it went. Nor does an agent whose last view held no other
member: nobody took its instances over, and the single agent of section
5 writes its nodes again at once. One whose sessions keep ending waits
before it writes anything in the new one (`sentinel.holdoff`): it stays
`rejoining` meanwhile, its catalog unwritten, and `on_rejoin_listed`
tells the group whom each listing finds.

Back on a new session, the members of its last view that are not listed
yet are waited for (`awaited`), up to a session timeout and the spread of
the client replacements (`zk.REPLACE_SPREAD`) from the new session, and
kept in the view meanwhile: each one leaves it when listed again (a later
leave of its is a leave as any), the rest at the end of that wait. After
a wipe, every member comes back on a new session to a group with no
catalog at all: the first one listed settled a view of itself alone and
took every instance, then handed two thirds back as the others were
listed 1-4 s later, each takeover looking for the previous primary's
discovery member (a group of three over 1,000 instances settled 11-80 s
after ZooKeeper served, at times not in 120 s). Their absence is the same
outage: each agent's client is replaced a session timeout and at most
that spread after it began, so the others are listed within that time of
this agent. One that is not (it died meanwhile) is dropped once the wait
is over, by a listing begun after its end: a listing waits behind the
new session's writes, and one begun before could not list the members
that came meanwhile (at load 16, a listing of 28 s dropped both others,
listed for 10 s by then, and the first member took every instance after
all). Until then its share is observed by one fewer, and where it was
primary, published by its next observer, where the node is missing
(`absent`, `sentinel.standins`: the wipe took every node, and a member
that died in the outage left its share missing for the whole wait, 16-26 s
at the median at 1,000 instances); past `LISTING_FAILING_AFTER`,
/healthz names it (`awaiting`). A first start waits for nobody: there is
no last view.

Every `AUDIT_EVERY` seconds one ``exists`` compares the child version of
{root}/catalogs with the listing the view came from (`_audit`): a change
nothing is due to list is listed and counted (`missed`), and a view known
behind ZooKeeper for `BEHIND_AFTER` is named in /healthz (`behind`). A
view waits at most `LISTING_PACE_LIMIT` for a listing (`_apply`).

A catalog of a token new to the listing in a member's name, held by its
session, is a new process holding that session (`on_restart`, asked in
the background: `sentinel.restarts`); a member with no catalog listed
any more is told to `on_gone`, so that nothing is kept by its id.

A listing's reads (the listing, new catalogs, who holds agent nodes and
catalogs) are asked ahead, with the writes (`sentinel.zk`): every view
waits for them, and behind a new session's thousands of opinion reads a
listing took 7-16 s after a wipe at 1,000 instances, at load 12-25.

Which session holds an agent node or a catalog is one ``exists`` each,
asked once per listing, `HOLDERS_IN_FLIGHT` at a time (`restarts.ask`):
anyone may create catalogs by the thousand in a live member's name. A
listing still under way after `LISTING_FAILING_AFTER` is named in
/healthz (`slow`), as one failing that long is: the view waits for it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Generator, Mapping
from functools import partial
from typing import Any

from kazoo.exceptions import NoNodeError
from kazoo.protocol.states import EventType, WatchedEvent
from twisted.internet.defer import Deferred, DeferredList, DeferredLock, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from sentinel.catalog import (
    BadCatalog,
    Catalog,
    CatalogDecoder,
    CatalogPart,
    TooManyNames,
    catalog_node_name,
    decode_slice,
    parse_catalog_node_name,
)
from sentinel.restarts import (
    HOLDERS_IN_FLIGHT,
    MemberRestarts,
    Stats,
    ask,
    first_part,
    owner,
)
from sentinel.uncatalogued import RECHECK, Uncatalogued
from sentinel.zk import CONNECTED, REPLACE_SPREAD, ZooKeeper

log = Logger()

# Seconds a membership change waits before it moves anything (module
# docstring): over the time a member takes to write its catalog again
# when it went behind its back, and well under a second. Members whose
# sessions ended (a crash) do not wait it: their nodes are missing.
SETTLE = 0.5
# Seconds before a failed listing or catalog read is tried again; after
# catalog reads failing in a row, twice as long each time, up to
# MAX_RETRY_DELAY.
RETRY_DELAY = 1.0
MAX_RETRY_DELAY = 30.0
# Seconds a listing may keep failing before /healthz says so: the view
# is then as old as the last listing that succeeded, and members that
# joined or left since are not in it.
LISTING_FAILING_AFTER = 5.0
# Catalogs read at once.
READS_IN_FLIGHT = 16
# Bytes a second one member's listings may cost while members keep
# changing (`Membership._list_soon`): a listing waits `settle` after the
# one before, or longer, as long as that one's bytes take at this rate.
# 2,000 members listed every settle time in a rolling deploy cost each
# member about 0.2-0.5 MB/s, and ZooKeeper that times 2,000; at this
# rate, 40 MB/s for the ensemble. A group of up to about 200 members
# (listings of 10 KB) lists as before.
LISTING_BYTES_PER_SECOND = 20_000
# The longest a listing waits for the one before: anyone may create
# nodes under {root}/catalogs, and 100,000 of them (a listing of 5 MB)
# would have held every member's view minutes. Within it and the settle
# time, every member has the new view while a primary still watches the
# nodes another may take over after a change (`group.TAKEOVER_WATCH`).
LISTING_PACE_LIMIT = 5.0
# Seconds between two looks at {root}/catalogs' child version (its
# ``cversion``, which counts every creation and deletion of a child: one
# ``exists`` of about 100 bytes), against that of the listing the view
# came from (`Membership._audit`). A change that neither a watch nor a
# listing under way accounts for is listed then, and counted (`missed`).
AUDIT_EVERY = 5.0
# Seconds the view may be known behind ZooKeeper (an audit saw a child
# version no view applied since covers) before /healthz says so: past
# the longest pace, a listing and the settle time, which a change the
# watch told of waits anyway.
BEHIND_AFTER = 15.0
# Seconds the members that went with this agent's own catalog (`_wiped`)
# are waited for before their share is published by a stand-in where its
# node is missing: their sessions live, and each makes its own nodes
# again within a second (the publisher's guard, 0.5 s after it hears of
# the deletion). A stand-in at once won the create for most of them, and
# every one of those nodes went to the stand-in and back to its primary.
WIPED_STAND_IN_AFTER = 3.0
# Members (this agent included) up to which a listing asks beside it
# which agent nodes are gone (`Membership._ask_agents_early`): an
# ``exists`` each per listing, which in a group of thousands would be
# thousands at each of its many changes.
ASKED_EARLY = 16
# The names all members' catalogs kept may hold together: ten times the
# largest fleet DESIGN.md reckons with (100,000 instances), about 100 MB.
MAX_NAMES_KEPT = 1_000_000

View = Mapping[str, Catalog]


class Membership:
    """
    The group's members and their catalogs (see the module docstring);
    `on_view(view)` is called with each settled view, this agent included.
    """

    def __init__(
        self,
        reactor: Any,
        zk: ZooKeeper,
        root: str,
        agent_id: str,
        own: Catalog,
        on_view: Callable[[View], None],
        settle: float = SETTLE,
        on_stir: Callable[[], None] | None = None,
        on_own_listed: Callable[[Collection[tuple[str, str]]], None] | None = None,
        on_restart: Callable[[str, int], None] | None = None,
        on_gone: Callable[[Collection[str]], None] | None = None,
        probes: Callable[[str], Collection[str]] | None = None,
    ) -> None:
        """
        @param on_stir: called as soon as ZooKeeper says the membership may
            have changed (before it is read, and `settle` before the view).
        @param on_own_listed: called with the (digest, token) of each of
            this agent's own complete catalogs at every listing, for the
            publisher to write its own again if it is not among them.
        @param on_restart: called with a member's id and the zxid that
            created its new catalog when a catalog of another process than
            before comes in its name, held by its session (`sentinel.restarts`).
        @param on_gone: called with the members that had a complete
            catalog at the last listing and have none now, for what is
            kept by member id elsewhere to be let go.
        @param probes: a few paths of ephemeral nodes a member's session
            holds as far as this agent knows (its opinions), asked about
            when it leaves with its agent node (`sessions_gone`).
        """
        self._reactor = reactor
        self.zk = zk
        self.root = root
        self.path = f"{root}/catalogs"
        self.agent_id = agent_id
        self.own = own
        self._on_view = on_view
        self._on_stir = on_stir
        self._on_own_listed = on_own_listed
        self._on_gone = on_gone
        self._probes = probes
        # Members gone with their agent nodes, and with every node of
        # theirs asked about (`probes`), since the last view applied:
        # their sessions ended (a crash's expiry; a leave's close), not a
        # leave, whose session keeps its instance nodes for the new
        # primaries to take over. Read by `on_view`, cleared after it.
        self.sessions_gone: set[str] = set()
        self._restarts = MemberRestarts(zk, root, agent_id, on_restart)
        # Members kept in the view while their catalog is gone.
        self._uncatalogued = Uncatalogued()
        self.settle = settle
        self.running = False
        # The settled view, and what ZooKeeper lists now (other members).
        self.view: dict[str, Catalog] = {agent_id: own}
        self.listed: dict[str, Catalog] = {}
        self.viewed = False
        # Which catalog each member's listing chose (its digest and token).
        self._chosen: dict[str, tuple[str, str]] = {}
        self._catalogs: dict[str, Catalog] = {}
        # Each member's catalog (digest, token) found held by a session,
        # those left out for want of room (not read again until room is
        # made), and those that could not be decoded (not read again until
        # the member writes another: each listing would fetch it anew).
        self._held: dict[str, tuple[str, str]] = {}
        self._no_room: dict[str, tuple[str, str]] = {}
        self._undecodable: dict[str, tuple[str, str]] = {}
        self._bad: dict[str, str] = {}
        # The complete catalogs each member's name had at the last listing.
        self._candidates: dict[str, frozenset[tuple[str, str]]] = {}
        self._listing = False
        self._list_again = False
        # When the last listing began, the one waiting to begin `settle`
        # after it (`_list_soon`), and since when a change has waited for
        # a listing (the watch fired).
        self._listed_at = float("-inf")
        # About what the last listing cost (the children's names, each
        # with its length), which paces the next (`_pace`).
        self.listing_bytes = 0
        # Whether a neighbour's catalog changed since the last listing
        # began (it is listed after `settle`, whatever the pace), the
        # neighbours' catalogs watched, and whether each digest's catalog
        # shares a name with ours (`_watch_neighbours`).
        self._urgent = False
        self._watched: set[str] = set()
        self._neighbouring: dict[str, bool] = {}
        self._list_call: IDelayedCall | None = None
        self._unlisted_since: float | None = None
        # Whether the view is due when the listing under way ends, and
        # since when it has waited for a listing (`_apply`).
        self._apply_listed = False
        self._deferred_since: float | None = None
        self._settle_call: IDelayedCall | None = None
        self._retry_call: IDelayedCall | None = None
        # Members whose catalog read failed in the listing under way, and
        # the listings in a row that had such failures (for the back-off).
        self._unread: set[str] = set()
        self._read_failures = 0
        # Held while a catalog is decoded (`_decode`).
        self._decoding = DeferredLock()
        self.changes = 0
        self.listings = 0
        self.catalog_reads = 0
        self.last_error: str | None = None
        # The reads the listing under way has asked for (`slow`).
        self._asked = 0
        # Since when listings have failed in a row (`failing`).
        self._failing_since: float | None = None
        # The child version of {root}/catalogs in the last listing, and in
        # the listing the view came from; since when, and up to which
        # version, an audit found the view behind ZooKeeper; the listings
        # done when an audit found a change nothing was due to list
        # (confirmed missed at the next audit, if none was done since).
        self._listed_version: int | None = None
        self._viewed_version: int | None = None
        self._behind: tuple[float, int | None] | None = None
        self._unannounced: int | None = None  # `listings` then
        self._audit_call: IDelayedCall | None = None
        self._auditing = False
        # Whether this agent is back on a new session and not yet listed
        # in it (`rejoin`), and how many times it was.
        self.rejoining = False
        self.rejoins = 0
        self._rejoining_since = 0.0
        # Told of each listing while rejoining, with the other members it
        # lists (`sentinel.holdoff`: whether anyone else publishes).
        self.on_rejoin_listed: Callable[[View], None] = lambda listed: None
        # From then until its view is applied again (`returning`).
        self._returning = False
        # The members of the last view, back on a new session, not listed
        # again yet and kept in the view until then (module docstring),
        # and the end of that wait.
        self.awaited: dict[str, Catalog] = {}
        # Those of them in the view applied last (`absent`).
        self._absent: frozenset[str] = frozenset()
        self._awaited_call: IDelayedCall | None = None
        self._awaited_until = float("inf")
        # Since when they have been waited for, and why (the log's words).
        self._awaited_since = 0.0
        self._awaited_why = "before this agent's new session"
        # Whether a listing ever listed this agent's own catalog: one that
        # lists it no more, this agent's session alive, is a deletion
        # behind its back (`_wiped`).
        self._own_seen = False
        # When stand-ins may publish the share of each member waited for
        # since such a deletion (`WIPED_STAND_IN_AFTER`), and the call
        # that applies the view then.
        self._stand_in_from: dict[str, float] = {}
        self._stand_in_call: IDelayedCall | None = None
        # When the last listing that ended began.
        self._fresh_since = float("-inf")
        self.audits = 0
        self.missed = 0
        zk.add_listener(self._zk_state)

    # Lifecycle

    def start(self) -> None:
        """Start following the group (at once if ZooKeeper is connected)."""
        self.running = self._restarts.running = True
        if self.zk.state == CONNECTED:
            self._list()
        self._audit_call = self._reactor.callLater(AUDIT_EVERY, self._audit)

    def stop(self) -> None:
        """Stop following: nothing more is listed, read or applied."""
        self.running = self._restarts.running = False
        calls = (
            self._settle_call,
            self._retry_call,
            self._list_call,
            self._audit_call,
            self._awaited_call,
            self._stand_in_call,
        )
        for call in calls:
            if call is not None and call.active():
                call.cancel()
        self._settle_call = self._retry_call = self._list_call = None
        self._audit_call = self._awaited_call = self._stand_in_call = None

    def set_own(self, own: Catalog) -> None:
        """This agent's catalog changed (a reload): applied at once."""
        self.own = own
        self._neighbouring.clear()
        if self.viewed and self.rejoining:
            # Not listed again yet, the view kept (`rejoin`) takes it at
            # once: applied only once listed, a reload's new instances had
            # no node for as long as a hold-off's wait (up to 5 minutes),
            # and one renamed by it was missing all along.
            self.view = {**self.view, self.agent_id: own}
            try:
                self._on_view(self.view)
            except Exception:
                log.failure("applying the group's membership failed")
        if self.viewed:
            self._apply()
        else:
            self.view = {**self.listed, self.agent_id: own}

    def rejoin(self) -> None:
        """
        This agent's ZooKeeper session is a new one, its last one ended
        (module docstring): until it is listed again in the new one and
        that view settled, it is `returning`, with its last view. To be
        called before the new session's writes begin.
        """
        others = {a: c for a, c in self.view.items() if a != self.agent_id}
        if not self.viewed or not self.running or not others:
            return
        self.rejoining = True
        self.rejoins += 1
        self._rejoining_since = self._reactor.seconds()
        for call in (self._settle_call, self._awaited_call):
            if call is not None and call.active():
                call.cancel()
        self._settle_call = None
        self.awaited = dict(others)
        self._stand_in_from = {}
        self._absent = frozenset()
        wait = self.zk.session_timeout * (1 + REPLACE_SPREAD)
        self._awaited_since = self._rejoining_since
        self._awaited_why = "before this agent's new session"
        self._awaited_until = self._rejoining_since + wait
        self._awaited_call = self._reactor.callLater(wait, self._awaited_over)
        self._apply_listed = False
        self._returning = True
        log.warn(
            "group membership: this agent's ZooKeeper session ended and a new"
            " one began; until the group lists it again it keeps its last"
            " view of {count} other member(s) and makes its own instances'"
            " nodes only where they are missing",
            count=len(others),
        )
        self.view = {**others, self.agent_id: self.own}
        try:
            self._on_view(self.view)
        except Exception:
            log.failure("applying the group's membership failed")

    def resume(self) -> None:
        """
        This agent, back on a new session, waited before it joined again
        (`sentinel.holdoff`) and writes its catalog now: `unlisted`
        counts from now, and so does `behind`. The view was kept on
        purpose while it waited; counted from the wait's first audit, the
        listing that ends it, under way, was told as a view behind for the
        whole wait (/healthz 503 "behind ZooKeeper for 58 s").
        """
        now = self._reactor.seconds()
        self._rejoining_since = now
        if self._behind is not None:
            self._behind = (now, self._behind[1])

    def shares_instances(self, members: View) -> bool:
        """Whether one of `members` other than this agent knows an instance it knows."""
        for agent, catalog in members.items():
            if agent == self.agent_id:
                continue
            chosen = self._chosen.get(agent)
            if chosen is not None and self._catalogs.get(chosen[0]) is catalog:
                if self._near(chosen[0], catalog):
                    return True
            elif not catalog.names.isdisjoint(self.own.names):
                return True
        return False

    def _awaited_over(self) -> None:
        """
        The wait for the last view's members (`rejoin`) is over: listed
        anew, after which those not listed leave the view (`_apply_now`).
        """
        self._awaited_call = None
        if self.awaited and self.running and self.viewed and not self.rejoining:
            self._apply_listed = True
            self._list()

    def _drop_awaited(self, listed: View) -> None:
        """
        The members waited for (`rejoin`) that are listed leave the wait;
        the rest too, and the view, if a listing begun after the wait's
        end found them missing.
        """
        self.awaited = {a: c for a, c in self.awaited.items() if a not in listed}
        if not self.awaited or self._fresh_since < self._awaited_until:
            return
        log.warn(
            "group membership: {count} member(s) of the view {why} not"
            " listed again within {seconds:.1f} s ({members}); the view goes"
            " on without them",
            count=len(self.awaited),
            why=self._awaited_why,
            seconds=self._awaited_until - self._awaited_since,
            members=", ".join(sorted(self.awaited)[:10]),
        )
        self.awaited = {}

    @property
    def returning(self) -> bool:
        """
        Whether this agent is back on a new session and its view not
        applied again since (`rejoin`): it is the primary of its share of
        the last view only where the nodes are missing, a create, never a
        takeover (`Node.standing_in`, as a stand-in is).
        """
        return self._returning

    @property
    def absent(self) -> frozenset[str]:
        """
        The members of the view applied last that are in it only as
        members of the last view waited for (`rejoin`), not listed again:
        their instances' primaries, if any of them, publish nothing, and
        a stand-in does (`sentinel.standins`).
        """
        return self._absent

    def awaiting(self) -> tuple[float, list[str]] | None:
        """
        For how long this agent, back on a new session and listed again,
        has waited for members of its last view that are not listed again
        (`rejoin`), and which, once that is `LISTING_FAILING_AFTER` or
        more; else None. Their share is observed by one fewer meanwhile,
        and published by a stand-in (`absent`).
        """
        if self.rejoining:
            return None
        missing = sorted(self.awaited.keys() - self.listed.keys())
        waited = float(self._reactor.seconds()) - self._awaited_since
        if not missing or waited < LISTING_FAILING_AFTER:
            return None
        return waited, missing

    def unlisted(self) -> float | None:
        """
        For how long this agent, back on a new session (`rejoin`), has not
        been listed again, once that is `LISTING_FAILING_AFTER` or more;
        else None. It makes its own share's nodes only where missing
        meanwhile (`returning`).
        """
        if not self.rejoining:
            return None
        waited = float(self._reactor.seconds()) - self._rejoining_since
        return waited if waited >= LISTING_FAILING_AFTER else None

    def alone(self) -> None:
        """
        Apply a first view of this agent alone if none came yet (ZooKeeper
        unreachable at start): it observes everything it knows until
        ZooKeeper says otherwise.
        """
        if not self.viewed and self.running:
            log.warn(
                "group membership: ZooKeeper has not answered; observing every "
                "instance this agent knows until it does"
            )
            self._apply()

    @property
    def disagreeing(self) -> dict[str, tuple[int, int]]:
        """The members whose replicas or quorum differ from ours."""
        own = self.own
        return {
            agent: (catalog.replicas, catalog.quorum)
            for agent, catalog in self.view.items()
            if (catalog.replicas, catalog.quorum) != (own.replicas, own.quorum)
        }

    @property
    def unreadable(self) -> Mapping[str, str]:
        """Members whose catalog could not be read, and why."""
        return self._bad

    # Listing

    def _zk_state(self, state: str) -> None:
        if state == CONNECTED and self.running:
            # Watches do not outlive a connection: list (and watch) again.
            self._watched.clear()
            self._list()

    def _watch_fired(self, event: WatchedEvent) -> None:
        if event.type != EventType.NONE and self.running:
            # Listed before `on_stir`, which may ask about every node this
            # agent holds: at a leave at 3,000 instances, the stir's 1,000
            # watches took 0.22 s of the reactor, and their calls went
            # first, before the listing the survivors' view waited for.
            self._list_soon()
            if self._on_stir is not None:
                self._on_stir()

    def _list_soon(self) -> None:
        """
        List at once, or `_pace` seconds after the last listing began:
        each listing is one of every member, and in a group of thousands
        changing many times a second (a rolling deploy), a listing per
        change cost every member megabytes a second, and ZooKeeper that
        times the members. A change waits `settle` before it moves
        anything anyway.
        """
        if self._unlisted_since is None:
            self._unlisted_since = self._reactor.seconds()
        if self._list_call is not None and self._list_call.active():
            return
        wait = self._listed_at + self._pace() - self._reactor.seconds()
        if wait > 0:
            self._list_call = self._reactor.callLater(wait, self._list)
        else:
            self._list()

    def _pace(self) -> float:
        """
        Seconds from one listing's start to the next: `settle`, or as
        long as the last listing's bytes take at `LISTING_BYTES_PER_SECOND`
        (5 s at 2,000 members of 40-character ids). Listing every settle
        time in a group of 2,000 changing members made the reads grow
        with the square of the members: 0.07-0.47 MB/s for each, as far
        as its CPU let it list, 0.14-0.94 GB/s out of the ensemble. A
        first change after a quiet time is listed at once all the same:
        only changes that follow each other closer than that wait, and
        each listing takes in all of them.
        """
        if self._urgent:
            return self.settle
        paced = min(self.listing_bytes / LISTING_BYTES_PER_SECOND, LISTING_PACE_LIMIT)
        return max(self.settle, paced)

    def _neighbour_changed(self, event: WatchedEvent) -> None:
        """A neighbour's catalog watched (`_watch_neighbours`) changed."""
        self._watched.discard(event.path)
        if event.type != EventType.NONE:
            self._list_urgently()

    def _list_urgently(self) -> None:
        """
        List `settle` after the last listing began, as every change was
        listed before the pace, whatever listing waits longer.
        """
        if not self.running:
            return
        self._urgent = True
        call = self._list_call
        if call is None or not call.active():
            self._list_soon()
        else:
            call.reset(
                max(0.0, self._listed_at + self.settle - self._reactor.seconds())
            )

    def _list(self) -> None:
        if self._listing:
            self._list_again = True
            return
        if self._list_call is not None and self._list_call.active():
            self._list_call.cancel()
        self._list_call = None
        self._listing = True
        self._list_again = False
        self._urgent = False
        self._asked = 0
        self._listed_at = self._reactor.seconds()
        # The changes seen before now are in this listing: they wait their
        # settle time from when they were seen, not from now.
        since, self._unlisted_since = self._unlisted_since, None
        d = Deferred.fromCoroutine(self._read_listing(since))
        d.addCallbacks(self._succeeded, self._failed)
        d.addBoth(self._listed)

    def _listed(self, _: object) -> None:
        self._listing = False
        taken = self._reactor.seconds() - self._listed_at
        if taken >= LISTING_FAILING_AFTER:
            log.warn(
                "group membership: listing {path} took {seconds:.1f} s "
                "({reads} reads of who holds agent nodes and catalogs)",
                path=self.path,
                seconds=taken,
                reads=self._asked,
            )
        if self._list_again and self.running:
            self._list_soon()

    def _succeeded(self, _: object) -> None:
        if self._failing_since is not None:
            log.info(
                "group membership: {path} listed again after {seconds:.1f} s",
                path=self.path,
                seconds=self._reactor.seconds() - self._failing_since,
            )
        self._failing_since = self.last_error = None

    def _failed(self, failure: Failure) -> None:
        error = f"{self.path}: {failure.type.__name__ if failure.type else 'error'}"
        if error != self.last_error:
            log.warn("group membership: cannot read {error}; retrying", error=error)
        self.last_error = error
        if self._failing_since is None:
            self._failing_since = self._reactor.seconds()
        self._retry(RETRY_DELAY)

    def failing(self) -> tuple[float, str] | None:
        """
        For how long listings have failed in a row, and the last error,
        once that is `LISTING_FAILING_AFTER` or more; else None. Only the
        log said so before: a node under {root}/catalogs whose name a
        listing could not take failed every member's listings for as long
        as it stayed, and their /healthz stayed at 200 with a view that
        no longer changed.
        """
        if self._failing_since is None or self.last_error is None:
            return None
        failing = self._reactor.seconds() - self._failing_since
        return (failing, self.last_error) if failing >= LISTING_FAILING_AFTER else None

    def slow(self) -> tuple[float, int] | None:
        """
        For how long the listing under way has run, and the reads it has
        asked for, once that is `LISTING_FAILING_AFTER` or more; else
        None. Members that joined or left since it began are not seen
        until it ends: thousands of catalogs a squatter created in a live
        member's name cost a read each, and the view waited seconds with
        /healthz at 200.
        """
        if not self._listing:
            return None
        taken = self._reactor.seconds() - self._listed_at
        return (taken, self._asked) if taken >= LISTING_FAILING_AFTER else None

    # Auditing the view against ZooKeeper

    def behind(self) -> tuple[float, int | None, int | None] | None:
        """
        For how long the view has been known behind ZooKeeper (an audit
        saw a child version of {root}/catalogs that no view applied since
        covers), and the two versions, once that is `BEHIND_AFTER` or
        more; else None. A view missing a member is an assignment the
        other members do not compute: instances written twice or by
        nobody, opinions miscounted.
        """
        seconds = self.behind_seconds()
        if seconds is None or seconds < BEHIND_AFTER:
            return None
        assert self._behind is not None
        return seconds, self._behind[1], self._viewed_version

    def behind_seconds(self) -> float | None:
        """Since how long the view is known behind ZooKeeper, or None."""
        if self._behind is None:
            return None
        return float(self._reactor.seconds()) - self._behind[0]

    def _audit(self) -> None:
        """
        Every `AUDIT_EVERY` seconds: is the view that of ZooKeeper's
        {root}/catalogs now? One ``exists``, its child version against the
        listing's. A difference is normal for as long as a change takes
        to be listed and settle; one that no watch told of (lost, or its
        listing never scheduled) would have stayed for good, the view
        short of a member with /healthz at 200 (twice in eleven starts of
        `benchmarks/perhost.py` at load 80-100): once two audits in a row
        find nothing under way to list it, it is listed, and counted.
        """
        self._audit_call = self._reactor.callLater(AUDIT_EVERY, self._audit)
        if self._auditing or not self.viewed or self.zk.state != CONNECTED:
            return
        self._auditing = True
        d = self.zk.exists(self.path)
        # A failed look says nothing of the view (listings say when they
        # fail); a bug of ours in judging it is logged.
        d.addCallbacks(self._audited, lambda _: None)
        d.addBoth(self._audit_ended)
        d.addErrback(lambda f: log.failure("auditing the group's membership failed", f))

    def _audit_ended(self, result: object) -> object:
        self._auditing = False
        return result

    def _audited(self, stat: Any) -> None:
        if not self.running:
            return  # Stopped while it was asked: nothing more is listed.
        self.audits += 1
        version = None if stat is None else stat.cversion
        if version == self._viewed_version:
            self._behind = self._unannounced = None
            return
        if self._behind is None:
            self._behind = (self._reactor.seconds(), version)
        else:
            self._behind = (self._behind[0], version)
        if version == self._listed_version or self._listing_due():
            self._unannounced = None
            if version == self._listed_version and not self._apply_due():
                # Listed, and nothing due to apply it: applied now.
                self._apply()
            return
        if self._unannounced != self.listings:
            # Its watch may be on its way: judged at the next audit.
            self._unannounced = self.listings
            return
        self._unannounced = None
        self.missed += 1
        log.warn(
            "group membership: {path} changed (child version {version}, the"
            " last listing's {listed}) and no watch said so: listing it again",
            path=self.path,
            version=version,
            listed=self._listed_version,
        )
        self._apply_listed = True
        self._list()

    def _listing_due(self) -> bool:
        """Whether a listing is under way or due (after a watch, or a failure)."""
        return self._listing or any(
            call is not None and call.active()
            for call in (self._list_call, self._retry_call)
        )

    def _apply_due(self) -> bool:
        """Whether a view is due to be applied (settling, or after a listing)."""
        call = self._settle_call
        return self._apply_listed or (call is not None and call.active())

    def _caught_up(self) -> None:
        """The view was applied: no longer behind, if it covers what was seen."""
        if self._behind is None:
            return
        seen, viewed = self._behind[1], self._viewed_version
        if viewed == seen or (
            viewed is not None and seen is not None and viewed >= seen
        ):
            self._behind = None

    def _retry(self, delay: float) -> None:
        """List (and read what is missing) again in `delay` seconds."""
        if self.running and (self._retry_call is None or not self._retry_call.active()):
            self._retry_call = self._reactor.callLater(delay, self._list)

    async def _read_listing(self, since: float | None) -> None:
        zk = self.zk
        began = self._reactor.seconds()
        version: int | None = None
        # Beside the listing, in a small group: which members' agent nodes
        # are gone (`_ask_agents_early`).
        early: Stats = {}
        asked_early = self._ask_agents_early(early)
        try:
            children, stat = await zk.children_and_stat(
                self.path, watch=self._watch_fired, ahead=True
            )
            version = stat.cversion
        except NoNodeError:
            # Nobody wrote a catalog yet: watch for the directory instead
            # (created meanwhile: its children are listed, and watched).
            if await zk.exists(self.path, watch=self._watch_fired) is not None:
                self._list_again = True
                return
            children = []
        self.listings += 1
        self.listing_bytes = sum(4 + len(child) for child in children)
        complete = _complete_catalogs(children)
        gone = self._restarts.listed(complete, self._concerns)
        # The stats asked about in this listing, by path: each is asked once.
        stats: Stats = {}
        if self._on_own_listed is not None:
            self._on_own_listed(complete.get(self.agent_id, {}).keys())
        chosen: dict[str, tuple[str, str]] = {}
        candidates: dict[str, frozenset[tuple[str, str]]] = {}
        contested = {}
        for agent, found in complete.items():
            if agent == self.agent_id:
                continue
            previous = self._chosen.get(agent)
            candidates[agent] = frozenset(found)
            if len(found) > 1 and self._candidates.get(agent) != candidates[agent]:
                # Another catalog in its name came (or went): anyone may
                # create one there, so the one its agent node's session
                # holds is the member's, whichever was chosen before.
                contested[agent] = found
            else:
                chosen[agent] = previous if previous in found else min(found)
        chosen.update(await self._held_by_agents(contested, stats))
        self._candidates = candidates
        missing = {
            (agent, digest, token)
            for agent, (digest, token) in chosen.items()
            if (
                digest not in self._catalogs or self._held.get(agent) != (digest, token)
            )
            and self._no_room.get(agent) != (digest, token)
            and self._undecodable.get(agent) != (digest, token)
        }
        self._unread = set()
        await self._read_catalogs(missing, complete)
        if self._unread:
            # Left out meanwhile, the view is partial (/healthz says so):
            # read again soon, less often while the reads keep failing.
            self._read_failures += 1
            self._retry(
                min(RETRY_DELAY * 2 ** (self._read_failures - 1), MAX_RETRY_DELAY)
            )
        else:
            self._read_failures = 0
        self._chosen = chosen
        self._held = {a: c for a, c in self._held.items() if chosen.get(a) == c}
        listed = {}
        for agent, (digest, token) in chosen.items():
            catalog = self._catalogs.get(digest)
            if catalog is not None and self._held.get(agent) == (digest, token):
                listed[agent] = catalog
        self._bad = {a: why for a, why in self._bad.items() if a in chosen}
        # Digests nobody lists any more are forgotten: room for those left
        # out for want of it, read again at the next listing.
        used = {digest for digest, _ in self._held.values()}
        if self._no_room and any(d not in used for d in self._catalogs):
            self._no_room.clear()
            self._list_again = True
        self._catalogs = {d: c for d, c in self._catalogs.items() if d in used}
        self._neighbouring = {
            d: near for d, near in self._neighbouring.items() if d in used
        }
        self._no_room = {a: c for a, c in self._no_room.items() if chosen.get(a) == c}
        self._undecodable = {
            a: c for a, c in self._undecodable.items() if chosen.get(a) == c
        }
        self.last_error = None
        self._fresh_since = began
        self._watch_neighbours(listed, complete)
        kept = await self._kept_uncatalogued(listed, stats, asked_early, early)
        listed.update(kept)
        gone -= kept.keys()
        if gone and self._on_gone is not None:
            self._on_gone(gone)
        if self.rejoining:
            await self._rejoined(listed, complete.get(self.agent_id, {}), version)
            return
        wiped = False
        if complete.get(self.agent_id):
            self._own_seen = True
        elif self._own_seen:
            wiped = self._wiped(listed)
        changed = listed != self.listed or not self.viewed
        if changed:
            await asked_early
            ended = self.viewed and await self._sessions_ended(listed, stats, early)
            self.listed = listed
            self._changed(since, at_once=ended or wiped)
        self._listed_version = version
        if not changed and not self._apply_due():
            # The view is this listing's already.
            self._viewed_version = version
            self._caught_up()
        if self._apply_listed and not self._list_again:
            self._apply_listed = False
            self._apply()

    async def _kept_uncatalogued(
        self,
        listed: View,
        stats: Stats,
        asked_early: Deferred[None],
        early: Stats,
    ) -> dict[str, Catalog]:
        """
        The members of the last listing whose catalog is gone while the
        session that held it still holds their agent node, with the
        catalog each had (`sentinel.uncatalogued`). Their agent nodes
        found gone beside the listing (`_ask_agents_early`, a leave) are
        not asked about again.
        """
        candidates = self._uncatalogued.candidates(self.listed, listed, self._bad)
        sessions = {}
        if candidates:
            await asked_early
            for agent in candidates:
                path = f"{self.root}/agents/{agent}"
                if path in early:
                    stats.setdefault(path, early[path])
            sessions = await self._agent_sessions(candidates, stats)
        kept = self._uncatalogued.keep(sessions, listed)
        if kept:
            # Its session's end fires no catalog watch: listed again soon.
            self._retry(RECHECK)
        return {agent: self.listed[agent] for agent in kept}

    def _wiped(self, listed: View) -> bool:
        """
        This agent's own catalog is listed no more, or its own agent node
        is gone beside the others' (`_sessions_ended`), its session alive:
        deleted behind its back (``deleteall`` of the root, say), and the
        publisher writes it again (`on_own_listed`, the heartbeat). The
        members of the view also not listed went with it, their sessions alive as ours
        is, and write theirs again as they hear of it: they stay in the
        view meanwhile, waited for as after a rejoin (`awaited`: up to a
        session timeout and `zk.REPLACE_SPREAD`, their share published
        by a stand-in where its node is missing). Taken for gone (their
        agent nodes went too: `_sessions_ended`), each member took every
        instance alone at once and handed two thirds back as the others
        were listed again, each at its own time: at three agents,
        ``replicas = 2``, 60 instances, nerve members, the instance
        nodes went back and forth between them 13--148 times a run of
        three ``deleteall``s, and 14--51 services listed twice. Whether
        a member is waited for anew.
        """
        gone = {
            agent: catalog
            for agent, catalog in self.view.items()
            if agent != self.agent_id
            and agent not in listed
            and agent not in self.awaited
        }
        if not gone or not self.viewed or not self.running:
            return False
        now = self._reactor.seconds()
        wait = self.zk.session_timeout * (1 + REPLACE_SPREAD)
        if not self.awaited:
            self._awaited_since = now
            self._awaited_why = "whose catalogs were deleted with this agent's"
        self.awaited.update(gone)
        self._stand_in_from.update(dict.fromkeys(gone, now + WIPED_STAND_IN_AFTER))
        self._awaited_until = now + wait
        if self._awaited_call is not None and self._awaited_call.active():
            self._awaited_call.cancel()
        self._awaited_call = self._reactor.callLater(wait, self._awaited_over)
        log.warn(
            "group membership: this agent's catalog was deleted behind its"
            " back, with those of {count} other member(s) ({members}); they"
            " stay in its view for up to {wait:.1f} s while they write theirs"
            " again",
            count=len(gone),
            members=", ".join(sorted(gone)[:10]),
            wait=wait,
        )
        return True

    async def _rejoined(
        self,
        listed: dict[str, Catalog],
        own: Mapping[tuple[str, str], int],
        version: int | None,
    ) -> None:
        """
        A listing while rejoining (`rejoin`): the view is due `settle`
        after the first one that lists a catalog of this agent's held by
        its session now, as a joiner's first view is; before, nothing is
        (the creation of that catalog fires the watch).
        """
        self.listed = listed
        self._listed_version = version
        self.on_rejoin_listed(listed)
        session = self.zk.session_id
        for (digest, token), count in sorted(own.items()):
            path = first_part(self.path, self.agent_id, digest, token, count)
            stat = await self.zk.exists(path, ahead=True)
            if session is not None and owner(stat) == session and self.rejoining:
                self.rejoining = False
                log.info(
                    "group membership: this agent is listed again in its new"
                    " session; its view settles in {settle} s",
                    settle=self.settle,
                )
                self._changed(None)
                return

    def _watch_neighbours(
        self,
        listed: View,
        complete: Mapping[str, Mapping[tuple[str, str], int]],
    ) -> None:
        """
        While listings are paced past `settle` (`_pace`), watch the
        catalogs of the members that know an instance this agent knows:
        their leave (a stop, a crash's expiry) or a new process moves
        this agent's instances, and is listed `settle` after the listing
        before, as before. The rest wait the pace: in the per-host shape
        with one replica, every other member, whose comings and goings
        move nothing here. A neighbour that joins is seen at the pace.
        """
        if self._pace() <= self.settle:
            return
        for agent, catalog in listed.items():
            digest, token = self._chosen[agent]
            near = self._near(digest, catalog)
            path = first_part(
                self.path, agent, digest, token, complete[agent][digest, token]
            )
            if near and path not in self._watched:
                self._watched.add(path)
                d = self.zk.exists(path, watch=self._neighbour_changed)
                d.addCallbacks(
                    partial(self._neighbour_watched, path),
                    self._watch_failed,
                    errbackArgs=(path,),
                )

    def _near(self, digest: str, catalog: Catalog) -> bool:
        """Whether a catalog (of this `digest`) knows an instance this agent knows."""
        near = self._neighbouring.get(digest)
        if near is None:
            near = not catalog.names.isdisjoint(self.own.names)
            self._neighbouring[digest] = near
        return near

    def _concerns(self, agent: str) -> bool:
        """
        Whether `agent` may know an instance this agent knows: its catalog
        in the view does, or none of its is (not read yet, or left out).
        """
        catalog, chosen = self.listed.get(agent), self._chosen.get(agent)
        return catalog is None or chosen is None or self._near(chosen[0], catalog)

    def _neighbour_watched(self, path: str, stat: object) -> None:
        if stat is None:
            # Gone before the watch was set: a change to list as one.
            self._watched.discard(path)
            self._list_urgently()

    def _watch_failed(self, failure: Failure, path: str) -> None:
        # Set again at the next listing; meanwhile the pace lists it.
        self._watched.discard(path)

    async def _read_catalogs(
        self,
        missing: set[tuple[str, str, str]],
        complete: Mapping[str, Mapping[tuple[str, str], int]],
    ) -> None:
        pending = sorted(missing)
        while pending:
            batch, pending = pending[:READS_IN_FLIGHT], pending[READS_IN_FLIGHT:]
            reads = [
                Deferred.fromCoroutine(
                    self._read_catalog(
                        agent, digest, token, complete[agent][digest, token]
                    )
                ).addErrback(self._unreadable, agent)
                for agent, digest, token in batch
            ]
            await DeferredList(reads)

    def _unreadable(self, failure: Failure, agent: str) -> None:
        """
        A read of `agent`'s catalog failed (not for want of its nodes: no
        access to them, a timeout, a lost connection): it is left out
        until a read succeeds, named meanwhile, and read again.
        """
        self._unread.add(agent)
        name = failure.type.__name__ if failure.type else "error"
        self._left_out(agent, f"{name} while reading it; read again later")

    async def _read_catalog(
        self, agent: str, digest: str, token: str, count: int
    ) -> None:
        first = f"{self.path}/{catalog_node_name(agent, digest, token, 0, count)}"
        # Whose session holds it? Only the agent's own counts.
        stat = await self.zk.exists(first, ahead=True)
        if stat is None:
            return  # Gone meanwhile: the watch says what replaced it.
        if not stat.ephemeralOwner:
            self._left_out(agent, _PERSISTENT)
            return
        session = stat.ephemeralOwner
        foreign = await self._foreign(agent, session)
        if foreign is not None:
            self._left_out(agent, foreign)
            return
        self._uncatalogued.held(agent, session)
        if digest in self._catalogs:
            # Read for another member already.
            self._bad.pop(agent, None)
            self._held[agent] = (digest, token)
            return
        self.catalog_reads += 1
        kept = sum(len(c.names) for c in self._catalogs.values())
        decoder = CatalogDecoder(digest, max_names=MAX_NAMES_KEPT - kept)
        try:
            data, stat = await self.zk.get(first, ahead=True)
            if not stat.ephemeralOwner:
                self._left_out(agent, _PERSISTENT)
                return
            # One catalog at a time from its first byte inflated to its
            # last name parsed (its first part, at most 512 KB, fetched
            # before): else as many slices a turn as catalogs read at
            # once, and each one's inflated bytes (up to 64 MB) held
            # while it waits for its turn to be decoded.
            async with self._decoding:
                for index in range(count):
                    if index:
                        name = catalog_node_name(agent, digest, token, index, count)
                        data, stat = await self.zk.get(
                            f"{self.path}/{name}", ahead=True
                        )
                        if not stat.ephemeralOwner:
                            self._left_out(agent, _PERSISTENT)
                            return
                    await self._in_slices(decoder.inflate(data))
                catalog = await self._decode(decoder)
        except NoNodeError:
            # Gone meanwhile: the watch says what replaced it.
            return
        except TooManyNames as e:
            self._no_room[agent] = (digest, token)
            self._left_out(agent, _no_room(str(e)))
            return
        except BadCatalog as e:
            self._undecodable[agent] = (digest, token)
            self._left_out(agent, str(e))
            return
        kept = sum(len(c.names) for c in self._catalogs.values())
        if kept + len(catalog.names) > MAX_NAMES_KEPT:
            self._no_room[agent] = (digest, token)
            self._left_out(agent, _no_room(f"its {len(catalog.names)} names"))
            return
        self._bad.pop(agent, None)
        self._catalogs[digest] = catalog
        self._held[agent] = (digest, token)

    async def _agent_sessions(
        self, agents: Collection[str], stats: Stats
    ) -> dict[str, int | None]:
        """The session holding each agent's agent node, or None, asked together."""
        paths = {agent: f"{self.root}/agents/{agent}" for agent in agents}
        self._asked += await ask(self.zk, paths.values(), stats, ahead=True)
        return {agent: owner(stats[path]) for agent, path in paths.items()}

    async def _agent_session(self, agent: str) -> int | None:
        """The session holding `agent`'s agent node, or None if none does."""
        return owner(await self.zk.exists(f"{self.root}/agents/{agent}", ahead=True))

    async def _foreign(self, agent: str, owner: int) -> str | None:
        """
        Why a catalog in `agent`'s name held by the session `owner` is not
        that agent's, or None: another live session holds its agent node,
        or none does. An agent writes its agent node before its catalog,
        and both go with its session, so a catalog with none beside it is
        no agent's: any client may write one, and taken at its word it
        made a member that never checks, its share of the instances
        unchecked and unpublished, every /healthz 200. Such a catalog is
        asked about again soon (`_retry`: no listing says when an agent
        node comes), less often while it stays alone.
        """
        session = await self._agent_session(agent)
        if session == owner:
            return None
        if session is None:
            self._unread.add(agent)
            return (
                f"held by session {owner:#x}, while no session holds its "
                f"agent node {self.root}/agents/{agent}: no agent's"
            )
        return (
            f"held by session {owner:#x}, not by the session of its agent "
            f"node ({session:#x})"
        )

    async def _held_by_agents(
        self,
        contested: Mapping[str, Mapping[tuple[str, str], int]],
        stats: Stats,
    ) -> dict[str, tuple[str, str]]:
        """
        Of several complete catalogs in each `contested` agent's name, the
        one the session of its agent node holds (the previous choice
        first, then by name); failing that, the previous choice or the
        first. The members' reads go together (`ask`): first each one's
        likeliest, then `HOLDERS_IN_FLIGHT` more of each at a time, until
        each is found. One at a time, a squatter's 10,000 catalogs in a
        live member's name held a joining member's first view 6.5-8 s.
        """
        sessions = await self._agent_sessions(contested, stats)
        queues = {
            agent: sorted(found, key=partial(_previous_first, self._chosen.get(agent)))
            for agent, found in contested.items()
            if sessions[agent] is not None
        }
        chosen: dict[str, tuple[str, str]] = {}
        take = 1
        while queues:
            asked = {agent: ordered[:take] for agent, ordered in queues.items()}
            paths = {
                (agent, catalog): first_part(
                    self.path, agent, *catalog, contested[agent][catalog]
                )
                for agent, catalogs in asked.items()
                for catalog in catalogs
            }
            self._asked += await ask(self.zk, paths.values(), stats, ahead=True)
            for agent, catalogs in asked.items():
                for catalog in catalogs:
                    if owner(stats[paths[agent, catalog]]) == sessions[agent]:
                        chosen[agent] = catalog
                        break
                if agent in chosen or len(queues[agent]) <= take:
                    del queues[agent]
                else:
                    queues[agent] = queues[agent][take:]
            take = HOLDERS_IN_FLIGHT
        for agent, found in contested.items():
            if agent not in chosen:
                previous = self._chosen.get(agent)
                chosen[agent] = (
                    previous
                    if previous is not None and previous in found
                    else min(found)
                )
        return chosen

    async def _decode(self, decoder: CatalogDecoder) -> Catalog:
        """
        The catalog, decoded a slice per reactor turn (the checks run in
        between); the caller holds `_decoding`.
        """
        steps = decoder.decode()
        while (catalog := decode_slice(steps)) is None:
            await deferLater(self._reactor, 0, lambda: None)
        return catalog

    async def _in_slices(self, steps: Generator[None, None, None]) -> None:
        """
        Run `steps` a slice per reactor turn, as `_decode` does (a part is
        inflated so: `CatalogDecoder.inflate`); the caller holds `_decoding`.
        """
        for _ in steps:
            await deferLater(self._reactor, 0, lambda: None)

    def _left_out(self, agent: str, why: str) -> None:
        if self._bad.get(agent) != why:
            log.error(
                "group membership: the catalog of agent {agent} cannot be "
                "read ({why}); it is left out of the group",
                agent=agent,
                why=why,
            )
        self._bad[agent] = why

    # Settling

    def _ask_agents_early(self, early: Stats) -> Deferred[None]:
        """
        In a group of fewer than `ASKED_EARLY` members, ask beside the
        listing, not after it, which of the others' agent nodes are gone,
        and about their `probes` beside them: at a leave, whether the
        member's agent node went too decides that the view is applied at
        once (`_sessions_ended`), and asked after the listing it was one
        more round trip before every takeover (0.58 s in a trace at 3,000
        instances, load 14, after a listing of 1.8 s). Only the answers
        about a member whose agent node was found gone are put in
        `early`: one found there may be deleted before the listing is
        answered (a leave deletes its catalog, then its agent node), and
        is asked about after it.
        """
        others = [agent for agent in self.view if agent != self.agent_id]
        if not self.viewed or not others or len(others) >= ASKED_EARLY:
            return succeed(None)
        paths = {
            agent: [
                f"{self.root}/agents/{agent}",
                *(self._probes(agent) if self._probes is not None else ()),
            ]
            for agent in others
        }
        asked: Stats = {}

        def answered(count: int) -> None:
            self._asked += count
            for agent_node, *probes in paths.values():
                if asked[agent_node] is None:
                    early.update((p, asked[p]) for p in (agent_node, *probes))

        flat = [path for each in paths.values() for path in each]
        d = Deferred.fromCoroutine(ask(self.zk, flat, asked, ahead=True))
        # A read that failed says nothing: asked again after the listing.
        return d.addCallbacks(answered, lambda _: None)

    async def _sessions_ended(
        self, listed: View, stats: Stats, early: Stats | None = None
    ) -> bool:
        """
        Whether the change from the view to `listed` is members leaving
        and nothing else, each without its agent node too: their sessions
        ended (a crash's expiry; a stop that left the group, which deletes
        both). Their instance nodes are gone or going, and readers miss
        them until the new primaries make them again: the settle time
        only made them wait (the view followed a crash's expiry by 0.5 s
        or more; now by 0.2-0.3 s, at 3,000 instances, where writing the
        nodes takes a second more). A member that comes back starts
        anew: a join, which waits its settle time.
        """
        view = self.view
        if any(view.get(agent) is not catalog for agent, catalog in listed.items()):
            return False
        gone = [
            agent
            for agent in view
            if agent not in listed
            and agent != self.agent_id
            and agent not in self.awaited
        ]
        if not gone:
            return False
        probes = {
            agent: list(self._probes(agent)) if self._probes is not None else []
            for agent in gone
        }
        # Asked beside the agent nodes, in the same round trip
        # (`_agent_sessions` then finds their answers in `stats`), with
        # this agent's own: gone too, while its session lives, it was
        # deleted behind its back with theirs (`_wiped`).
        own = f"{self.root}/agents/{self.agent_id}"
        asked = [own, *(f"{self.root}/agents/{agent}" for agent in gone)]
        asked += [path for paths in probes.values() for path in paths]
        for path in asked:
            # Asked beside the listing (its agent node gone): not again.
            if early and path in early:
                stats.setdefault(path, early[path])
        self._asked += await ask(self.zk, asked, stats, ahead=True)
        sessions = await self._agent_sessions(gone, stats)
        ended = all(session is None for session in sessions.values())
        if ended and stats.get(own, True) is None and self._wiped(listed):
            # Not ended: they went with this agent's own agent node, a
            # deletion behind all their backs (its catalog may have gone
            # after the listing, or be written again already).
            return True
        if ended:
            # A leave deletes its agent node, and keeps its instance nodes
            # and opinions (its session lives) until they are taken over;
            # a session's end takes every node of it at once, before the
            # watch that told us fired.
            self.sessions_gone.update(
                agent
                for agent, paths in probes.items()
                if paths and all(stats[path] is None for path in paths)
            )
        return ended

    def _changed(self, since: float | None, at_once: bool = False) -> None:
        """
        A listing found a change: applied `settle` seconds after it was
        first seen (`since`, when a watch said so; else now), or `at_once`.
        """
        self.changes += 1
        now = self._reactor.seconds()
        delay = self.settle if since is None else max(0.0, since + self.settle - now)
        if at_once:
            delay = 0.0
        call = self._settle_call
        if call is None or not call.active():
            self._settle_call = self._reactor.callLater(delay, self._apply)
        elif call.getTime() > now + delay:
            call.reset(delay)

    def _apply(self) -> None:
        call, self._settle_call = self._settle_call, None
        if call is not None and call.active():
            call.cancel()  # Called before its time: what it would apply is now.
        if not self.running:
            return
        now = self._reactor.seconds()
        if self._list_call is not None and self._list_call.active():
            if self._deferred_since is None:
                self._deferred_since = now
            if now - self._deferred_since >= LISTING_PACE_LIMIT:
                # Deferred that long, it waits no more: with a change during
                # each listing (a rolling deploy in a large group), every
                # listing ended with another due, and the view stayed as it
                # was for as long as the changes went on (median 14.5 s old
                # over a 30 s deploy, 20 agents, 2,000 members). The last
                # listing is applied; the changes since settle after it.
                self._apply_now()
                return
            # A change seen since the last listing, due to be listed now:
            # listed first, so that a change reversing within the settle
            # time moves nothing; applied as soon as that listing ends,
            # which is not begun before its pace allows (`_pace`).
            self._apply_listed = True
            pace = self._pace()
            if pace <= self.settle or now >= self._listed_at + pace:
                self._list()
            return
        self._apply_now()

    def _apply_now(self) -> None:
        """Apply the last listing's members, this agent included."""
        self._deferred_since = None
        if self.rejoining:
            return  # Not listed again yet: the others' view stays (`rejoin`).
        listed = self.listed
        self._drop_awaited(listed)
        view = {**self.awaited, **listed, self.agent_id: self.own}
        first = not self.viewed
        self.viewed = True
        self._viewed_version = self._listed_version
        self._caught_up()
        absent = self._standing_in_for()
        returned, self._returning = self._returning, False
        if view == self.view and absent == self._absent and not first and not returned:
            self.sessions_gone.clear()
            return
        self.view, self._absent = view, absent
        try:
            self._on_view(view)
        except Exception:
            log.failure("applying the group's membership failed")
        self.sessions_gone.clear()

    def _standing_in_for(self) -> frozenset[str]:
        """
        The members waited for whose share a stand-in publishes now (`absent`):
        each, once past its `WIPED_STAND_IN_AFTER` if it went with this
        agent's catalog; the view is applied again at the first such time.
        """
        now = self._reactor.seconds()
        self._stand_in_from = {
            a: t for a, t in self._stand_in_from.items() if a in self.awaited
        }
        later = [t for t in self._stand_in_from.values() if t > now]
        call = self._stand_in_call
        if call is not None and call.active():
            call.cancel()
        self._stand_in_call = None
        if later and self.running:
            self._stand_in_call = self._reactor.callLater(min(later) - now, self._apply)
        return frozenset(
            a for a in self.awaited if self._stand_in_from.get(a, now) <= now
        )


_PERSISTENT = "a persistent node, which no agent's session holds"


def _no_room(names: str) -> str:
    """Why a catalog of so many `names` is left out: no room to keep them."""
    return f"{names} would take the catalogs kept over {MAX_NAMES_KEPT} names"


def _previous_first(
    previous: tuple[str, str] | None, catalog: tuple[str, str]
) -> tuple[bool, tuple[str, str]]:
    """Sort key: the catalog chosen before first, then by name."""
    return catalog != previous, catalog


def _complete_catalogs(
    children: list[str],
) -> dict[str, dict[tuple[str, str], int]]:
    """Per agent, its catalogs whose every part is listed: (digest, token) → count."""
    parts: dict[tuple[str, str, str, int], set[int]] = {}
    for child in children:
        part: CatalogPart | None = parse_catalog_node_name(child)
        if part is None:
            continue
        key = (part.agent_id, part.digest, part.token, part.count)
        parts.setdefault(key, set()).add(part.index)
    complete: dict[str, dict[tuple[str, str], int]] = {}
    for (agent, digest, token, count), indexes in parts.items():
        if len(indexes) == count:
            complete.setdefault(agent, {})[digest, token] = count
    return complete

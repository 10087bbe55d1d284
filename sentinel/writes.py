"""
Writes to ZooKeeper scheduled: each node written when it changes, however
often it changes, at most `WRITES_IN_FLIGHT` at once (fewer while the link
answers slowly: `sentinel.window`; `RESYNC_IN_FLIGHT` while a resync
back on the same session writes every node), and retried until it is
written.

Each node has a dirty flag rather than a queue of writes: its data is
built from current state when the write starts, so however many changes
come in, at most one write per node is queued, and it carries the newest
state. A node that changed while being written queues again behind the
nodes already waiting for a slot, so that nodes that keep changing
cannot starve the others. Nodes readers miss go first: the agent's and
the instances' nodes (readers drop an instance whose node is missing, a
group an agent whose node is), and the members that replace those of an
instance's previous primary (`Node.moving`: its session, left open by a
leave, ends a session timeout after its exit, and its members with it),
then rewrites of nodes we hold, then the other discovery members
(looked for, made or asked about). While they wait,
the rewrites and the members each have one free slot in `SHARE_EVERY`,
whatever waits before them: a rewrite may be a status change (an
instance we hold going down), which must not wait behind the thousands
of missing nodes and members of a takeover, and nodes that keep
changing would starve the members. Slots are handed out by
one loop, never by a write's end calling the next: the bridge fails a
call at once while not connected, and a call per waiting node nested in
the one before ran out of stack at thousands of nodes. A failed write
leaves the node dirty; failed nodes are tried again `RETRY_DELAY` after
a failure (one timer for all, so that a failing ZooKeeper is not
hammered), never forgotten. A node whose writes keep failing while
ZooKeeper is connected (its ACL changed behind our back, a parent nobody
may create in) is `failing` until one succeeds: the publisher's /healthz
reason names it after `FAILING_AFTER`, since its published status is
stale, and the log says when failures start, when their error changes
and when they end, not once per retry of each node (thousands of nodes
denied alike would flood it). A removed node is forgotten only once its
delete is done. Nothing is written while the publisher is stopped or
halted, or ZooKeeper not connected: the nodes stay dirty until the
reconnection writes them all (`flush`).

The queue also knows which nodes ZooKeeper lacks what checks found
(`unwritten`: marked, and not yet acknowledged since; every node but the
agent's and its catalog's, which say nothing of an instance): the state
file may only say that checks back the session's nodes up to the oldest
of them (`checked_through`, `sentinel.handoff`), and hears when none is
left (`on_caught_up`).

A write that found the node holding its bytes already, and made no set
(`UNCHANGED`, `sentinel.unchanged`), is counted (`unchanged`) and leaves
the node's last write time as it was: its refresh counts from the write
made.

What one write does is `write(node)`'s (`sentinel.writer`); what follows
it is told back: `held(node, stat)` when another session holds the node
(`HeldElsewhere`: it is parked, `sentinel.holders`), `owned(node)` when a
write succeeded on a node of ours, `retrying()` before each retry.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from sentinel.discovery import Looking
from sentinel.lookwaits import LookWaits
from sentinel.nodes import LOG_NAMESPACE, Node, Nodes
from sentinel.sample import NAMED, sample
from sentinel.window import WriteWindow
from sentinel.zk import CONNECTED, ZooKeeper

log = Logger(namespace=LOG_NAMESPACE)

# Writes in flight at once, at most: fewer while the link to ZooKeeper
# answers slowly (`sentinel.window`). The bridge sends a turn's writes
# together, 64 to a transaction (`sentinel.zk`), so that this many are 8
# requests: at 64, a new primary's writes after a member's crash went 64 a
# round trip, and a round trip took up to a second behind the reads made
# at the same time.
WRITES_IN_FLIGHT = 512
# Writes in flight at most while a resync back on the same session
# (`resync`: its nodes still in ZooKeeper, readers miss none) has nodes
# left to write. With the whole window, every node's write at once
# (its coroutine, its calls, kazoo's requests and answers, all alive
# together) took Python's allocator past the free memory it held into a
# new 1 MiB arena (19,500 blocks more at the peak, 300 nodes, 169 writes
# in flight), which the objects made beside them (the new client's
# watches, renewed Redis connections) then kept for good: RSS stepped up
# about 1 MiB at ZooKeeper's first return. At 32: 7,100 blocks at the
# peak, no new arena. A new session's resync (every node missing), a
# takeover's writes and a burst of changes keep the whole window.
RESYNC_IN_FLIGHT = 32
RETRY_DELAY = 1.0
# Of each this many free slots, while they wait, one goes to the rewrites
# of nodes we hold and one to the members; the nodes readers miss take the
# rest (3 in 5 while all wait), and any slot whose queue is empty.
SHARE_EVERY = 5
# Seconds a node's writes may keep failing before /healthz says so: a few
# retries, enough for an error that clears (a call timed out while
# ZooKeeper paused, a race with another agent's takeover) to pass unseen.
FAILING_AFTER = 5.0
# The ZooKeeper calls counted in `write_calls` (for /metrics); a group's
# takeover (a delete and a create in one transaction) counts as a create.
WRITE_OPS = ("create", "set", "delete")
# The kinds of write `WriteQueue.by_kind` counts.
WRITE_KINDS = ("takeovers", "missing", "opinions", "rewrites", "members")

_T = TypeVar("_T")


class Lifecycle(Protocol):
    """Whether the publisher runs, and why it stopped writing if it did."""

    @property
    def running(self) -> int:
        """True (1) between startService and stopService."""

    @property
    def halted(self) -> str | None:
        """Why this agent stopped writing for good (a twin, a newer process)."""

    @property
    def superseded(self) -> bool:
        """Whether a newer process took the session over (it then halted)."""


def acting(life: Lifecycle) -> bool:
    """
    Whether what ZooKeeper tells is acted on now: running (not stopping)
    and not halted. A timer set when it is not would outlive the stop's
    cancel, and nothing would act on what it found.
    """
    return bool(life.running) and not life.halted


class Unchanged:
    """What a write that found nothing to change returns (`UNCHANGED`)."""


# A write not made: the node holds those bytes already, and is not due its
# refresh (`sentinel.unchanged`). Its last write time stays, so that the
# refresh comes when it would have.
UNCHANGED = Unchanged()


class HeldElsewhere(Exception):
    """The node exists and another session holds it (`stat` says which)."""

    def __init__(self, stat: Any) -> None:
        super().__init__(stat)
        self.stat = stat


class WriteQueue:
    """The writes of every node of `nodes` (see the module docstring)."""

    def __init__(
        self,
        reactor: Any,
        zk: ZooKeeper,
        nodes: Nodes,
        life: Lifecycle,
        *,
        write: Callable[[Node], Coroutine[Any, Any, Unchanged | None]],
        held: Callable[[Node, Any], None],
        owned: Callable[[Node], None],
        retrying: Callable[[], None],
    ) -> None:
        self._reactor = reactor
        self._zk = zk
        self._nodes = nodes
        self._life = life
        self._write = write
        self._held = held
        self._owned = owned
        self._retrying = retrying
        # Nodes waiting for a slot, first queue first: those readers miss
        # (not written by us yet, or lost: a member's crash or a new
        # session leaves thousands), then our nodes' rewrites, then members.
        self._waiting_missing: deque[Node] = deque()
        self._waiting: deque[Node] = deque()
        self._waiting_members: deque[Node] = deque()
        self._queues = (self._waiting_missing, self._waiting, self._waiting_members)
        # Slots handed out, modulo `SHARE_EVERY`: which queue the next
        # one is kept for (`_next_queue`).
        self._turn = 0
        # Whether slots are being handed out (`_drain`): a write that ends
        # meanwhile leaves it to that loop.
        self._draining = False
        # Whether a resync's writes are not all done (`RESYNC_IN_FLIGHT`).
        self.resyncing = False
        self.in_flight = 0
        # The nodes being written (`by_kind`: never a walk of every node).
        self._writing: set[Node] = set()
        self.window = WriteWindow(
            reactor,
            lambda: zk.session_timeout,
            WRITES_IN_FLIGHT,
            lambda: zk.round_trip,
        )
        self._idle: list[Deferred[None]] = []
        self._retry_call: IDelayedCall | None = None
        self.writes = {"ok": 0, "error": 0}
        # Writes not made, the node holding those bytes already (module
        # docstring of `sentinel.unchanged`).
        self.unchanged = 0
        # Each create/set/delete call by (op, "ok" or "error").
        self.write_calls: Counter[tuple[str, str]] = Counter()
        self.last_error: str | None = None
        # Each node whose last write failed: since when (the first failure
        # after its last success) and the last error, oldest first.
        self.failing: dict[Node, tuple[float, str]] = {}
        # The error last logged, while writes fail (None once they all work).
        self._logged_error: str | None = None
        # The nodes whose state, as checks found it, ZooKeeper has not
        # acknowledged yet, in the order they were first marked; told once
        # none is left (module docstring).
        self.unwritten: dict[Node, None] = {}
        self.on_caught_up: Callable[[], None] | None = None
        # Told of every failed write (`sentinel.refusals` looks into those
        # ZooKeeper refused).
        self.on_failed: Callable[[Failure, Node], None] | None = None
        # Members waiting for a look at their service, logged a burst a line.
        self.look_waits = LookWaits(reactor)
        # Whether this agent writes nothing now: a group member waiting
        # before it joins again (`sentinel.holdoff`). Its nodes stay
        # dirty, for the `flush` at the wait's end; but not those that
        # `unshared` says nobody else would write meanwhile (the nodes of
        # the instances no other member knows: `sentinel.unshared`).
        self.holding_off: Callable[[], bool] = lambda: False
        self.unshared: Callable[[Node], bool] = lambda node: False

    @property
    def queued(self) -> int:
        """Nodes whose newest state is not yet written."""
        return sum(1 for n in self._nodes if n.dirty or n.writing)

    def queued_said(self) -> str:
        """
        The writes queued, for /healthz: ``N writes queued: a, b ...``,
        the first nodes named (`sample.sample`), and whose when they are
        all the agent's own nodes (its node and catalog), as for a group's
        member that publishes no instance yet: read as instances' writes,
        they were not.
        """
        own = others = 0
        named: list[str] = []
        for node in self._nodes:
            if node.dirty or node.writing:
                if self._about_agent(node):
                    own += 1
                else:
                    others += 1
                if len(named) < NAMED:
                    named.append(node.path)
        if not own + others:
            return "0 writes queued"
        if others:
            return f"{own + others} writes queued: {sample(named, own + others)}"
        return f"{own} writes queued, all of the agent's own nodes: none of an instance"

    def mark(self, node: Node) -> None:
        """`node` changed: write it (again) as soon as a slot is free."""
        node.dirty = True
        if node not in self.unwritten and not self._about_agent(node):
            node.marked_at = self._reactor.seconds()
            self.unwritten[node] = None
        self.enqueue(node)

    def _about_agent(self, node: Node) -> bool:
        nodes = self._nodes
        return node is nodes.agent or node in nodes.catalog

    def checked_through(self, checked_at: float, since: float) -> float:
        """
        Up to when the session's nodes say what checks found: `checked_at`
        (the last check), unless ZooKeeper lacks a node's newer state, then
        up to when that node was first marked, or, for one this process has
        not written yet, `since` (the session's start, or what the previous
        process's file said). A node another session holds is not this
        session's to say anything; one dropped no longer counts, nor one
        let go to its new primary: a write of it failed after it was let
        go (its connection lost) left it dirty and never retried, and the
        state file's ``checked_at`` stopped there for good, so that the
        next process on the state_dir did not reattach (seen at each
        re-forming of a group of three, ZooKeeper wiped and back). Walks
        the nodes not yet written, never the others.
        """
        through = checked_at
        unwritten = self.unwritten
        nodes = self._nodes
        for node in list(unwritten):
            if (
                node.holding is not None
                or not (node.dirty or node.writing)
                or nodes.let_go(node)
            ):
                del unwritten[node]
                continue
            marked = node.marked_at
            if node.written_at is None or marked is None:
                marked = since
            through = min(through, marked)
        return max(through, since)

    def enqueue(self, node: Node) -> None:
        """Start writing `node` if it is dirty and may be written now."""
        if node.dirty and node.due_since is None:
            node.due_since = self._reactor.seconds()
        if node.writing or node.queued or not node.dirty or node.parked:
            return
        if not self._may_write() or self.held_off(node):
            return
        node.queued = True
        if node.moving:
            self._waiting_missing.append(node)
        elif node.member is not None:
            self._waiting_members.append(node)
        elif node.owned:
            self._waiting.append(node)
        else:
            self._waiting_missing.append(node)
        self._drain()

    def by_kind(self) -> dict[str, dict[str, int]]:
        """
        The nodes waiting for a slot and those being written, by what the
        write is (/debug/stats): a group's takeovers, the other nodes
        readers miss, opinions, rewrites of the nodes we hold, members.
        """
        counts: dict[str, dict[str, int]] = {
            state: dict.fromkeys(WRITE_KINDS, 0) for state in ("waiting", "writing")
        }
        if not self._writing and not any(self._queues):
            return counts
        opinions = set(self._nodes.opinions.values())
        waiting = counts["waiting"]
        for queue in self._queues:
            for node in queue:
                waiting[_kind(node, opinions)] += 1
        for node in self._writing:
            counts["writing"][_kind(node, opinions)] += 1
        return counts

    def hurry(self, node: Node) -> None:
        """
        `node`, a member now `moving`, waits with the nodes readers miss:
        taken out of the members' queue if it waits there (queued before
        its instance's node was taken over), and queued again.
        """
        if node.queued and node.moving:
            try:
                self._waiting_members.remove(node)
            except ValueError:
                return  # Waiting with the nodes readers miss already.
            node.queued = False
        self.enqueue(node)

    def retire(self, node: Node) -> None:
        """Delete `node`, then forget it."""
        node.removed = True
        self._nodes.retire(node)
        self.mark(node)

    def flush(self) -> None:
        """Start every write that is due (after a reconnection, a retry)."""
        for node in list(self._nodes):
            self.enqueue(node)

    def resync(self) -> None:
        """
        Write every node that is due, at most `RESYNC_IN_FLIGHT` at once
        until none waits and none is in flight (a reconnection's resync).
        """
        self.resyncing = True
        self.flush()
        self._resync_done()

    def _resync_done(self) -> None:
        if self.resyncing and self.in_flight == 0 and not any(self._queues):
            self.resyncing = False

    async def counted(self, op: str, call: Deferred[_T]) -> _T:
        """`call`'s result, counted in `write_calls` under `op`."""
        try:
            result = await call
        except Exception:
            self.write_calls[op, "error"] += 1
            raise
        self.write_calls[op, "ok"] += 1
        return result

    def failed(self, failure: Failure, node: Node) -> None:
        """
        A write of `node` failed: it is failing, the log says so if the
        error is new, and it is retried soon.
        """
        # Retried whatever happens here: a node left dirty with no retry
        # coming would wait for an unrelated reconnection.
        try:
            self.writes["error"] += 1
            kind = failure.type.__name__ if failure.type is not None else "error"
            reason = failure.getErrorMessage()
            error = kind + (f": {reason}" if reason else "")
            self.last_error = f"{node.path}: {error}"
            failing = self.failing
            started = failing.get(node)
            failing[node] = (
                self._reactor.seconds() if started is None else started[0],
                error,
            )
            if isinstance(failure.value, Looking):
                # A wait, not an error: one line a burst (`sentinel.lookwaits`).
                self.look_waits.waiting(failure.value.parent, failure.value.sought)
            elif error != self._logged_error:
                self._logged_error = error
                log.warn(
                    "ZooKeeper write failed, will retry: {path}: {error}",
                    path=node.path,
                    error=error,
                )
            if self.on_failed is not None:
                self.on_failed(failure, node)
        finally:
            self._schedule_retry()

    def still_failing(self) -> dict[Node, tuple[float, str]]:
        """
        `failing`, less the nodes that are not any more: written since by
        another way, parked (held by another session: `sentinel.holders`
        reports those), dropped with nothing left to write, or no longer
        ours to write (replaced, forgotten). Walks every node while some
        fail, never otherwise.
        """
        failing = self.failing
        if not failing:
            return failing
        live = set(self._nodes)
        gone = [
            n
            for n in failing
            if n.parked or not (n.dirty or n.writing) or n not in live
        ]
        for node in gone:
            del failing[node]
        if not failing:
            self._logged_error = None
        return failing

    def ended(self) -> Deferred[None]:
        """Fires once no write is in flight."""
        if self.in_flight == 0:
            return succeed(None)
        idle: Deferred[None] = Deferred()
        self._idle.append(idle)
        return idle

    def write_last(self, nodes: Iterable[Node]) -> int:
        """
        On a leave, though stopping: start the write of each of `nodes`
        whose newest state ZooKeeper lacks (dirty, not being written), if
        connected and not halted; how many started. `ended` fires once
        they have ended, and nothing more is written after them.
        """
        if self._life.halted or self._zk.state != CONNECTED:
            return 0
        started = 0
        for node in nodes:
            if node.dirty and not (node.writing or node.parked or node.removed):
                self._start_write(node)
                started += 1
        return started

    def waiting(self) -> Iterator[Node]:
        """The nodes waiting for a write slot, each queue first come first."""
        for queue in self._queues:
            yield from queue

    def cancel_retry(self) -> None:
        """No retry from now on (stopping)."""
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.cancel()
        self.look_waits.stop()

    def _may_write(self) -> bool:
        # Once stopping, a write that completes starts no other: stopService
        # is deleting our nodes and would race with it.
        return acting(self._life) and self._zk.state == CONNECTED

    def held_off(self, node: Node) -> bool:
        """Whether `node` waits for the end of a hold-off (`holding_off`)."""
        return self.holding_off() and not self.unshared(node)

    def _drain(self) -> None:
        """
        Start the waiting writes while slots are free, first queue first,
        in one loop: a write that ends at once (the bridge fails a call
        synchronously while not connected) only queues what follows it.
        """
        if self._draining:
            return
        self._draining = True
        most = RESYNC_IN_FLIGHT if self.resyncing else WRITES_IN_FLIGHT
        try:
            while self.in_flight < most and self.window.room(self.in_flight):
                queue = self._next_queue()
                if queue is None:
                    break
                if not self._may_write():
                    self._drop_waiting()
                    break
                node = queue.popleft()
                node.queued = False
                if self.held_off(node):
                    continue  # Left dirty, for the flush at the wait's end.
                if not (node.writing or not node.dirty or node.parked):
                    self._start_write(node)
        finally:
            self._draining = False
        self._resync_done()
        if self.in_flight == 0:
            idle, self._idle = self._idle, []
            for waiter in idle:
                waiter.callback(None)

    def _next_queue(self) -> deque[Node] | None:
        """
        The queue the next free slot goes to, if any waits: of each
        `SHARE_EVERY` slots, one is kept for the rewrites and one for
        the members while they wait; any other, or one whose queue is
        empty, goes to the first queue in which a node waits.
        """
        missing, owned, members = self._queues
        turn = self._turn
        kept = members if turn == 0 else owned if turn == 1 else None
        queue = kept or missing or owned or members or None
        if queue is not None:
            self._turn = (turn + 1) % SHARE_EVERY
        return queue

    def _drop_waiting(self) -> None:
        # Left dirty: the reconnection's flush writes them.
        for queue in self._queues:
            for node in queue:
                node.queued = False
            queue.clear()

    def _start_write(self, node: Node) -> None:
        node.dirty = False
        node.writing = True
        # Due from a change made during the write on, if one is.
        due, node.due_since = node.due_since, None
        timed = self.window.start(self.in_flight)
        self.in_flight += 1
        self._writing.add(node)
        d = Deferred.fromCoroutine(self._write(node))
        d.addBoth(self._written, node, timed, due)
        d.addErrback(self._bug, node)

    def _written(
        self,
        result: Unchanged | None | Failure,
        node: Node,
        timed: tuple[float, int, bool],
        due: float | None,
    ) -> None:
        self.in_flight -= 1
        node.writing = False
        self._writing.discard(node)
        failed = True
        # Whatever the bookkeeping raises (a bug, or a log observer's), the
        # slot goes to the next node and the node is retried.
        try:
            answered = not isinstance(result, Failure) or isinstance(
                result.value, HeldElsewhere
            )
            self.window.ended(timed, answered, any(self._queues))
            failed = self._account(result, node, timed[0])
            _still_due(node, due, timed[0], failed)
        finally:
            # A node that changed while being written queues behind the
            # nodes already waiting: otherwise nodes that keep changing
            # would keep every slot and starve the others.
            if not failed:
                self.enqueue(node)
            self._drain()

    def _account(
        self, result: Unchanged | None | Failure, node: Node, started: float
    ) -> bool:
        """
        Note how a write of `node`, `started` then, ended; whether it
        failed.
        """
        if isinstance(result, Failure) and isinstance(result.value, HeldElsewhere):
            node.dirty = True
            self.failing.pop(node, None)  # Not failing: held (holders say so).
            # A node removed meanwhile is not ours to wait for: its delete
            # (which leaves another session's node alone) comes next.
            if node.removed:
                return False
            self._held(node, result.value.stat)
            return True
        if isinstance(result, Failure):
            # Left dirty, and retried by the retry timer rather than at once.
            node.dirty = True
            self.failed(result, node)
            return True
        if result is UNCHANGED:
            # Its refresh still counts from its last write made.
            self.unchanged += 1
        else:
            self.writes["ok"] += 1
            node.written_at = self._reactor.seconds()
        self._acknowledged(node, started)
        if self.failing.pop(node, None) is not None:
            self._recovered(node)
        if node.owned:
            self._owned(node)
        # Forgotten only once the delete itself is done: a write that was
        # in flight when the instance was removed leaves the node dirty,
        # and the node must stay known until its delete succeeds, or a
        # failed delete would never be retried.
        if node.removed and not node.dirty:
            self._nodes.forget(node)
        return False

    def _acknowledged(self, node: Node, started: float) -> None:
        """
        ZooKeeper has `node` as checks found it when its write started; if
        it changed since, it lacks it from then on.
        """
        unwritten = self.unwritten
        if node not in unwritten:
            return
        if node.dirty:
            node.marked_at = started
            return
        del unwritten[node]
        node.marked_at = None
        if not unwritten and self.on_caught_up is not None:
            self.on_caught_up()

    def _bug(self, failure: Failure, node: Node) -> None:
        # The write's end raised (`_written`): counted, /healthz says so.
        self._zk.internal_errors.record("ending a write", node.path, failure)

    def _recovered(self, node: Node) -> None:
        # Each success is O(1), even when thousands recover at once.
        if not self.failing and self._logged_error is not None:
            log.info("ZooKeeper writes succeed again ({path} written)", path=node.path)
            self._logged_error = None

    def _schedule_retry(self) -> None:
        if not self._life.running:
            return
        if self._retry_call is None or not self._retry_call.active():
            self._retry_call = self._reactor.callLater(RETRY_DELAY, self._retry)

    def _retry(self) -> None:
        self._retry_call = None
        if not self._life.running:
            return
        self._retrying()
        self.flush()


def _still_due(node: Node, due: float | None, started_at: float, failed: bool) -> None:
    """
    After a write of `node` started at `started_at` that was `due` since
    then: what it published, and since when its newest state waits. A
    failed write leaves it due since before; so does one that must be
    made again at once (the writer left the node dirty: nothing was
    written), else a change made during the write is due from then.
    """
    if failed or (node.dirty and node.due_since is None):
        if due is not None and (node.due_since is None or due < node.due_since):
            node.due_since = due
        return
    node.published_at = started_at


def _kind(node: Node, opinions: set[Node]) -> str:
    """Which of `WRITE_KINDS` a write of `node` is."""
    if node.member is not None:
        return "members"
    if node.takeover and not node.owned:
        return "takeovers"
    if node in opinions:
        return "opinions"
    return "rewrites" if node.owned else "missing"

"""
One member of a group stopped, as a reader of ZooKeeper sees it (DESIGN.md
section 8: "readers never see it missing").

``--agents`` agents (``twistd -n sentinel``, no state_dir) share
``--instances`` instances over real redis-servers, all up, with
``--replicas``, each instance's nerve member in one service. Once every
instance node is there and the service lists every endpoint (endpoints
counted by name: one listed twice never makes up for one missing; the
counts of endpoints listed once, twice and not at all are printed then
and at the end), a reader polls every instance node and the
service's members every 50 ms (each new member asked once whose session
holds it), and the first agent is stopped: SIGTERM (it leaves the group),
or ``--kill`` (``kill -9``: its nodes stay until its session expires).
``--zk-pause`` freezes ZooKeeper (SIGSTOP) first: how long the stop takes
when ZooKeeper never answers; ``--early S`` stops the first agent
(SIGTERM), starts it again once the others hold everything, and stops the
new process ``S`` s after its start, while its first writes are queued
(the figures then count from that start); ``--down N`` kills N redis-servers 8 s
before the stop (their instances down, without members, as in
``upgrade.py rolling``), and the instances with no member counted are
those of the others. Printed, for each of ``--runs`` runs:

- the time from the signal to the exit;
- for the stopped agent's instance nodes and members: when (after the
  signal) another agent held each, p50 and max;
- each instance node missing, each instance with no member, and each
  listed twice: how many times, how long, p50 and max; those listed
  twice also by whose members they were: the stopped agent's beside
  another's, or two of the others' (the agents named by the sessions
  of their agent nodes, read before the stop).

``--stagger S`` starts the last agent alone and the others S s later
(they join a group formed and take their nodes over from it), and
``--freeze F`` then stops the first one (SIGSTOP) for F s as soon as the
group lists it (give a ``--session-timeout`` above F): the others observe
its nodes meanwhile and read them as their previous primary still holds
them, as under a loaded start-up; it takes them over once it runs again.
``--from-start`` starts the reader before the first agent and also
prints the endpoints listed twice while the group forms (each agent
joins the others as it starts, and nodes and members move to it), up to
the stop.

At thousands of instances, ``--light`` reads which nodes exist from one
listing of ``{root}/instances`` a poll, and who holds each from an
``exists`` at its return and on a slice of them a poll (each once a
second): an ``exists`` of every node every 50 ms, 60,000 reads a second at
3,000 instances, was the busiest client ZooKeeper had.

    .venv/bin/python benchmarks/leave.py [--checkout this=.] [--replicas 2]
        [--kill] [--early S] [--light] [--runs 2] [--keep-logs DIR]
        [--crowd N] [--at-refresh S] [--freeze-server S] [--zk-stall S]
        [--members-out PREFIX]

``--at-refresh S`` stops the first agent ``S`` s after one of its
instance nodes is written again at its refresh (after the warmup): the
other agents read the nodes they observe once a refresh, so their
readings of the nodes rewritten in that round are older than the nodes
(a leave at any other time finds fewer or none so; run to run at a
fixed warmup, none to 93 % of the takeovers started from such a one).

``--zk-stall S`` freezes ZooKeeper (SIGSTOP) for S s,
``--zk-stall-after`` s (1) after the joiners started (after ``--freeze``):
the agents' calls in flight time out on their side and are applied once it
runs again, the lost answers behind an orphan member. ``--members-out
PREFIX`` writes each pair of members seen listing one endpoint at once, by
name, holder and when each was seen, to ``PREFIX-RUN.json``: the names to
look for in the agents' logs (``--keep-logs``).

``--freeze-server S`` freezes the last redis-server (SIGSTOP) ``S`` s
after the signal (before it if negative: ``-1.5`` makes its downs due
about 2 s after the signal), while the survivors take the leaver's nodes
over (``-20``: long before the leave, a control): a data watch on each
of its instances' nodes (``rack.py``'s) gives ZooKeeper's time of the
write that says ``down``, and the ``since`` it says (the check that
found it down), from the freeze, against the detection bound
``interval * fall + timeout`` + 50 ms (3.55 s, as ``rack.py``), for the
instances whose node moved (the leaver's) and the others apart. Each
survivor's ``/debug/stats`` is read every 0.25 s for 8 s from the
signal: its writes waiting and being written by kind (takeovers, other
nodes readers miss, opinions, rewrites of its nodes, members) and the
bridge's calls in flight and waiting, and how long the oldest call of
each kind had waited for room (``ms waited by``), at most; and from the
signal to the end its writes done and its calls timed out, with how
many of them timed out never sent to ZooKeeper, its writes skipped as
unchanged (``writes_skipped_unchanged``), and for each kind of call the
bridge sent meanwhile, how many, and the mean milliseconds each waited
in the bridge for room, took ZooKeeper to answer, and waited for the
reactor thread (``calls_time_spent``). The takeovers are also given from the
survivors' first one (p50, p99, max).

``--crowd N`` pins the first agent and N busy loops of the script's to one
CPU ``--crowd-for`` s before its stop, until the run ends; ``--crowd-peers
N`` does the same to the other agents (slow survivors, as on a machine
loaded by others). ``--usr2`` stops it with ``SIGUSR2`` (a leave) rather
than ``SIGTERM``; without a state_dir both leave the group.

Each instance node the stopped agent held at the signal is also read
once the run ends: its ``ctime`` is ZooKeeper's time of the transaction
that took it over (a takeover deletes and creates it), or of its create
after the stopped agent's session ended. Printed from the signal, per
node (p50, p99, max), and how many were taken after the exit (the
session left open for them) and after the session's end (left to
expire: a reader saw the leaver's verdict until then).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    Agent,
    Instance,
    add_checkout_option,
    checkouts_of,
    commit_of,
    crowd,
    load_average,
    start_redis_servers,
    start_zookeeper,
    stop_on_sigterm,
    table,
    wait_until,
)
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError
from kazoo.recipe.watchers import ChildrenWatch, DataWatch
from rack import Downs
from upgrade import config

# upgrade.py's layout: a group on ROOT, every member in one nerve service.
ROOT = "/upgrade"
SERVICE = "/members/cache"
POLL = 0.05
# The single-fault detection bound at the defaults (interval 1 s, fall 3,
# timeout 0.5 s) plus 50 ms for publishing (``rack.py``).
BOUND = 1.0 * 3 + 0.5 + 0.05
# How long, and how often, the survivors' queues are read from the signal.
QUEUES_FOR = 8.0
QUEUES_EVERY = 0.25

# What a poll saw of one instance, when it changed: the session holding its
# node (None: missing), or those holding its members.
History = list[tuple[float, Any]]


class Trace:
    """
    Every write to a few instances' verdict and opinion nodes, as ZooKeeper
    says it (mtime, data), by data and children watches: what each observer
    said of them, and when, to follow one instance through a view change.
    """

    def __init__(
        self, client: KazooClient, names: list[str], verdicts: Sequence[str] = ()
    ) -> None:
        self._lock = threading.Lock()
        self._client = client
        self._watched: set[str] = set()
        self.events: list[dict[str, Any]] = []
        for name in names:
            self._data(f"{ROOT}/instances/{name}")
            ChildrenWatch(client, f"{ROOT}/opinions/{name}", self._children(name))
        # With --trace-all, every other instance's verdict node too (not its
        # opinions): when each moved instance's first verdict of the new
        # view was written (`leavetrace.py`).
        for name in verdicts:
            self._data(f"{ROOT}/instances/{name}")

    def _children(self, name: str) -> Callable[[list[str]], None]:
        def changed(children: list[str]) -> None:
            for child in children:
                self._data(f"{ROOT}/opinions/{name}/{child}")

        return changed

    def _data(self, path: str) -> None:
        with self._lock:
            if path in self._watched:
                return
            self._watched.add(path)

        def changed(data: bytes | None, stat: Any) -> bool | None:
            event = {"at": time.time(), "path": path}
            if data is not None:
                event["mtime"] = stat.mtime / 1000
                event["version"] = stat.version
                event["owner"] = stat.ephemeralOwner
                try:
                    event["data"] = json.loads(data)
                except ValueError:
                    event["data"] = repr(data)
            with self._lock:
                self.events.append(event)
            return None

        DataWatch(self._client, path, changed)


class Reader:
    """Polls every instance node and the service's members on a thread."""

    def __init__(self, hosts: str, names: list[str], light: bool = False) -> None:
        self.names = names
        self.light = light
        # In `light` polls: the last holder read of each node, and where
        # the next slice of them to read again begins.
        self.holders: dict[str, int] = {}
        self.next_slice = 0
        self.client = KazooClient(hosts=hosts, timeout=10.0)
        self.client.start(timeout=10.0)
        self.owners: dict[str, int] = {}
        self.seen: dict[str, list[float]] = {}
        self.nodes: dict[str, History] = {n: [] for n in names}
        self.members: dict[str, History] = {n: [] for n in names}
        self.began = time.monotonic()
        self.polls = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def now(self) -> float:
        return time.monotonic() - self.began

    def run(self) -> None:
        while not self.stopping.wait(POLL):
            try:
                self.poll()
            except Exception:
                pass  # ZooKeeper frozen: nothing seen, nothing counted.

    def poll(self) -> None:
        client = self.client
        if self.light:
            reads = self.light_reads()
        else:
            reads = [
                (n, client.exists_async(f"{ROOT}/instances/{n}")) for n in self.names
            ]
        try:
            children = client.get_children_async(SERVICE).get(timeout=2.0)
        except NoNodeError:
            children = []
        asks = [
            (m, client.exists_async(f"{SERVICE}/{m}"))
            for m in children
            if m not in self.owners
        ]
        now = self.now()
        for member, ask in asks:
            stat = ask.get(timeout=2.0)
            self.owners[member] = stat.ephemeralOwner if stat else 0
        held: dict[str, list[int]] = {}
        for member in children:
            span = self.seen.setdefault(member, [now, now])
            span[1] = now
            held.setdefault(member.rsplit("_", 1)[0], []).append(self.owners[member])
        for name, read in reads:
            if isinstance(read, int) or read is None:
                holder = read
            else:
                stat = read.get(timeout=2.0)
                holder = stat.ephemeralOwner if stat else None
                if self.light and holder is not None:
                    self.holders[name] = holder
            _changed(self.nodes[name], now, holder)
            _changed(self.members[name], now, tuple(sorted(held.get(name, []))))
        self.polls += 1

    def light_reads(self) -> list[tuple[str, Any]]:
        """
        Each node missing (None), held as last read (its session), or an
        ``exists`` sent: at its return, and for this poll's slice.
        """
        client = self.client
        try:
            listed = set(client.get_children(f"{ROOT}/instances"))
        except NoNodeError:
            listed = set()  # Before the first agent (`--from-start`).
        count = len(self.names)
        size = max(1, round(count * POLL))
        start = self.next_slice
        self.next_slice = (start + size) % count
        again = {self.names[(start + i) % count] for i in range(size)}
        reads: list[tuple[str, Any]] = []
        for name in self.names:
            if name not in listed:
                self.holders.pop(name, None)
                reads.append((name, None))
            elif name in again or name not in self.holders:
                reads.append((name, client.exists_async(f"{ROOT}/instances/{name}")))
            else:
                reads.append((name, self.holders[name]))
        return reads

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10.0)
        self.client.stop()
        self.client.close()


class Queues:
    """The most each survivor's queues held (module docstring), on a thread."""

    def __init__(self, agents: list[Agent]) -> None:
        self.agents = agents
        self.most: dict[str, dict[str, int]] = {a.log.stem: {} for a in agents}
        self.writes: dict[str, list[int]] = {a.log.stem: [] for a in agents}
        self.timed_out: dict[str, int] = {}
        self.unsent: dict[str, int] = {}
        self.skipped: dict[str, int] = {}
        self.spent: dict[str, dict[str, Any]] = {}
        self.thread = threading.Thread(target=self.run, daemon=True)

    def time_spent(self, agent: Agent) -> dict[str, Any] | None:
        """The bridge's ``calls_time_spent`` (None: a build without it)."""
        try:
            spent = agent.get("/debug/stats", 5.0)["zookeeper"]["calls_time_spent"]
        except (OSError, ValueError, KeyError):
            return None
        return dict(spent)

    def writes_ok(self, agent: Agent, field: str = "writes_ok") -> int | None:
        """A counter of the agent's ZooKeeper stats (``writes_ok`` unless said)."""
        try:
            return int(agent.get("/debug/stats", 5.0)["zookeeper"][field])
        except (OSError, ValueError, KeyError):
            return None

    def start(self) -> None:
        for agent in self.agents:
            self.writes[agent.log.stem].append(self.writes_ok(agent) or 0)
            self.timed_out[agent.log.stem] = (
                self.writes_ok(agent, "calls_timed_out") or 0
            )
            self.unsent[agent.log.stem] = (
                self.writes_ok(agent, "calls_timed_out_unsent") or 0
            )
            self.skipped[agent.log.stem] = (
                self.writes_ok(agent, "writes_skipped_unchanged") or 0
            )
            self.spent[agent.log.stem] = self.time_spent(agent) or {}
        self.thread.start()

    def run(self) -> None:
        ends = time.monotonic() + QUEUES_FOR
        while time.monotonic() < ends:
            for agent in self.agents:
                try:
                    stats = agent.get("/debug/stats", 2.0)["zookeeper"]
                except (OSError, ValueError, KeyError):
                    continue
                most = self.most[agent.log.stem]
                counts = {
                    f"{state} {kind}": count
                    for state, kinds in stats.get("writes_by_kind", {}).items()
                    for kind, count in kinds.items()
                }
                counts.update(
                    {f"calls {k}": v for k, v in stats.get("calls", {}).items()}
                )
                for key, count in counts.items():
                    most[key] = max(most.get(key, 0), int(count))
                # Seconds the oldest call of each kind had waited, in ms.
                for kind, waited in stats.get("calls_waiting_oldest", {}).items():
                    key = f"ms waited by {kind}"
                    most[key] = max(most.get(key, 0), int(waited * 1000))
            time.sleep(QUEUES_EVERY)

    def rows(self, number: int) -> list[tuple[str, str]]:
        self.thread.join(QUEUES_FOR + 10.0)
        rows = []
        for agent in self.agents:
            name = agent.log.stem
            done = self.writes_ok(agent)
            if done is not None and self.writes[name]:
                rows.append(
                    (
                        f"run {number}: {name} writes done",
                        str(done - self.writes[name][0]),
                    )
                )
            timed_out = self.writes_ok(agent, "calls_timed_out")
            if timed_out is not None:
                rows.append(
                    (
                        f"run {number}: {name} calls timed out",
                        str(timed_out - self.timed_out.get(name, 0)),
                    )
                )
            unsent = self.writes_ok(agent, "calls_timed_out_unsent")
            if unsent is not None:
                rows.append(
                    (
                        f"run {number}: {name} of them never sent",
                        str(unsent - self.unsent.get(name, 0)),
                    )
                )
            skipped = self.writes_ok(agent, "writes_skipped_unchanged")
            if skipped is not None:
                rows.append(
                    (
                        f"run {number}: {name} writes skipped, unchanged",
                        str(skipped - self.skipped.get(name, 0)),
                    )
                )
            spent = self.time_spent(agent)
            if spent is not None:
                rows.append(
                    (
                        f"run {number}: {name} ms a call (waited/zk/reactor)",
                        spent_since(self.spent.get(name, {}), spent),
                    )
                )
            most = ", ".join(f"{k} {v}" for k, v in self.most[name].items() if v)
            rows.append((f"run {number}: {name} queues at most", most or "not shown"))
        return rows


def spent_since(before: dict[str, Any], after: dict[str, Any]) -> str:
    """
    For each kind of the bridge's calls, from two ``calls_time_spent``:
    how many were sent between them, and the mean milliseconds each
    waited in the bridge for room, then took ZooKeeper to answer, then
    waited for the reactor thread.
    """
    parts = []
    for kind, sums in after.items():
        old = before.get(kind, {})
        delta = {f: float(sums.get(f, 0)) - float(old.get(f, 0)) for f in sums}
        sent, answered = delta["sent"], max(1.0, delta["answered"])
        if sent <= 0:
            continue
        waited = 1000 * delta["waited_seconds"] / sent
        zookeeper = 1000 * delta["zookeeper_seconds"] / answered
        reactor = 1000 * delta["reactor_seconds"] / answered
        parts.append(f"{kind} {sent:.0f}: {waited:.0f}/{zookeeper:.0f}/{reactor:.0f}")
    return ", ".join(parts) or "none"


def _changed(history: History, now: float, value: Any) -> None:
    if not history or history[-1][1] != value:
        history.append((now, value))


def spans(
    history: History, wrong: Callable[[Any], bool], since: float, until: float
) -> list[float]:
    """How long each stretch after `since` lasted while `wrong(value)`."""
    found = []
    start = None
    for at, value in history:
        if wrong(value) and start is None:
            start = at
        elif not wrong(value) and start is not None:
            if at >= since:
                found.append(at - max(start, since))
            start = None
    if start is not None:
        found.append(until - max(start, since))
    return found


def first(history: History, moved: Callable[[Any], bool], since: float) -> float | None:
    """Seconds after `since` until `moved(value)`, if it ever was."""
    return next(
        (at - since for at, value in history if at >= since and moved(value)), None
    )


def summary(values: Sequence[float]) -> str:
    if not values:
        return "none"
    ordered = sorted(values)
    p50, most = ordered[len(ordered) // 2], ordered[-1]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"{len(ordered)}, p50 {p50:.2f} s, p99 {p99:.2f} s, max {most:.2f} s"


def run(args: argparse.Namespace, version: Path, number: int) -> list[tuple[str, str]]:
    """One group, one member stopped; a row per figure."""
    with ExitStack() as started, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        servers = start_redis_servers(args.servers, started)
        zookeeper, client = start_zookeeper(started)
        instances = [
            Instance(f"r{i}", servers[i % len(servers)].port)
            for i in range(args.instances)
        ]
        names = [i.name for i in instances]
        reader: Reader | None = None
        if args.from_start:
            reader = Reader(zookeeper.hosts, names, args.light)
            started.callback(reader.stop)
        agents = []
        order = list(range(args.agents))
        if args.stagger:
            # The last one first, alone: the others join a group formed.
            order = order[-1:] + order[:-1]
        for n in order:
            text = config(args, zookeeper.hosts, instances, f"agent-{n}", None)
            agent = Agent(workdir, text, f"agent-{n}", version)
            started.callback(agent.stop)
            agents.append(agent)
            if args.stagger and n == order[0]:
                agent.wait_ready()
                time.sleep(args.stagger)
        agents.sort(key=lambda a: int(a.log.stem.rsplit("-", 1)[1]))
        if args.freeze:
            wait_until(
                lambda: any(
                    c.startswith("agent-0.") for c in children_of(client, "catalogs")
                ),
                60.0,
                "agent-0 listed",
            )
            agents[0].child.process.send_signal(signal.SIGSTOP)
            time.sleep(args.freeze)
            agents[0].child.process.send_signal(signal.SIGCONT)
        if args.zk_stall:
            # ZooKeeper frozen as the group forms: calls time out on the
            # agents' side and are answered (applied) after it.
            time.sleep(args.zk_stall_after)
            zookeeper.pause()
            time.sleep(args.zk_stall)
            zookeeper.resume()
        for agent in agents:
            agent.wait_ready()

        def published() -> bool:
            # Every endpoint listed, counted apart: an endpoint listed
            # twice never makes up for one unlisted.
            if endpoints(client, names)[2]:
                return False
            asked = [client.exists_async(f"{ROOT}/instances/{n}") for n in names]
            return all(a.get() for a in asked)

        # At 3,000 instances on a loaded machine, over a minute.
        try:
            wait_until(published, 240.0, "every node and endpoint listed")
        except RuntimeError:
            listed = client.get_children(f"{ROOT}/instances")
            print(f"published: {len(listed)} nodes; endpoints {counted(client, names)}")
            if reader is not None:
                # What formed so far is still worth having.
                now = reader.now()
                forming = [
                    span
                    for name in names
                    for span in spans(
                        reader.members[name], lambda v: len(v) > 1, 0, now
                    )
                ]
                print(f"listed twice as it formed, up to now: {summary(forming)}")
                if args.members_out:
                    write_doubles(args.members_out, number, reader, {}, now)
            keep_logs(args, agents, number)
            raise
        at_start = counted(client, names)
        time.sleep(args.warmup)
        for server in servers[: args.down]:
            server.kill()
        down = {i.name for n, i in enumerate(instances) if n % len(servers) < args.down}
        if args.down:
            time.sleep(8.0)
        session = client.exists(f"{ROOT}/agents/agent-0").ephemeralOwner
        sessions = {
            client.exists(f"{ROOT}/agents/agent-{n}").ephemeralOwner: f"agent-{n}"
            for n in range(args.agents)
        }
        if reader is None:
            reader = Reader(zookeeper.hosts, names, args.light)
            started.callback(reader.stop)
        time.sleep(1.0)
        if args.crowd:
            crowd(started, agents[0].pid, args.crowd)
        for agent in agents[1:] if args.crowd_peers else []:
            crowd(started, agent.pid, args.crowd_peers)
        if args.crowd or args.crowd_peers:
            time.sleep(args.crowd_for)
        load = load_average()
        victim = agents[0].child.process
        if args.early is not None:
            # Stopped, started again once the others hold everything, and
            # stopped while its first writes are queued: counted from then.
            victim.send_signal(signal.SIGTERM)
            victim.wait(10.0)
            wait_until(
                lambda: held_by_others(client, names, session) and published(),
                120.0,
                "every node held by the others, every member there",
            )
            time.sleep(args.warmup)
            text = config(args, zookeeper.hosts, instances, "agent-0", None)
            again = Agent(workdir, text, f"agent-0-{number}", version)
            started.callback(again.stop)
            signalled = reader.now()
            victim = again.child.process
            time.sleep(args.early)
            session = agent_session(client) or -1
        if args.at_refresh is not None and args.early is None:
            rewritten(client, names, session)
            time.sleep(args.at_refresh)
            load = load_average()
        # Read before ZooKeeper is frozen (--zk-pause).
        handed = holding(client, names, session)
        handed_members = members_holding(client, session)
        ending = SessionEnd(zookeeper.hosts, witness(client, names, session), session)
        ending.start()
        time.sleep(0.5)
        if args.zk_pause:
            zookeeper.pause()
        if args.early is None:
            signalled = reader.now()
        last = len(servers) - 1
        frozen = [i.name for n, i in enumerate(instances) if n % len(servers) == last]
        downs = None if args.freeze_server is None else Downs(client, frozen, ROOT)
        traced = frozen[:: max(1, len(frozen) // 12)]
        trace = (
            Trace(
                client,
                traced,
                [n for n in names if n not in traced] if args.trace_all else [],
            )
            if args.trace_out
            else None
        )
        queues = Queues(agents[1:]) if args.freeze_server is not None else None
        if queues is not None:
            queues.start()
        freezing = None
        cut: list[float] = []
        if args.freeze_server is not None:
            assert downs is not None

            def freeze() -> None:
                cut.append(time.time())
                downs.watch_from(cut[0])
                servers[-1].pause()

            if args.freeze_server < 0:
                # Before the signal: its downs are due while the view changes.
                freeze()
                time.sleep(-args.freeze_server)
                if args.early is None:
                    signalled = reader.now()
            else:
                freezing = threading.Timer(args.freeze_server, freeze)
        stopped = reader.now()
        signal_at = stopped_at = time.time()
        victim.send_signal(
            signal.SIGKILL
            if args.kill
            else signal.SIGUSR2
            if args.usr2
            else signal.SIGTERM
        )
        if freezing is not None:
            freezing.start()
        status = victim.wait(10.0)
        ended = reader.now() - stopped
        ended_at = stopped_at + ended
        if args.zk_pause:
            zookeeper.resume()
        time.sleep(args.after)
        until = reader.now()
        reader.stop()
        taken = taken_at(client, handed, session)
        members_taken = members_taken_at(client, handed_members, session)
        ending.join(0.0)
        gone = ending.at
        at_end = counted(client, names)
        if args.members_out:
            write_doubles(args.members_out, number, reader, sessions, signalled)
        keep_logs(args, agents + ([again] if args.early is not None else []), number)

        def other(value: Any) -> bool:
            return value is not None and value != session

        def replaced(value: Any) -> bool:
            return bool(value) and session not in value

        held = [n for n in names if any(v == session for _, v in reader.nodes[n])]
        members = [n for n in names if any(session in v for _, v in reader.members[n])]
        nodes_moved = [
            t
            for n in held
            if (t := first(reader.nodes[n], other, signalled)) is not None
        ]
        members_moved = [
            t
            for n in members
            if (t := first(reader.members[n], replaced, signalled)) is not None
        ]
        missing, unlisted, twice = [], [], []
        # Which sessions held an endpoint listed twice: a stopped agent's
        # member beside its new primary's (a takeover that did not replace
        # it) or two survivors' (a member made twice, or not let go).
        pairs: dict[str, list[float]] = {}
        # The same, up to the stop, for the endpoints listed twice as the
        # group formed: which agents' members, and for how long.
        formed: dict[str, list[float]] = {}
        forming: list[float] = []
        for name in names:
            missing += spans(reader.nodes[name], lambda v: v is None, signalled, until)
            if name not in down and not (downs is not None and name in frozen):
                unlisted += spans(
                    reader.members[name], lambda v: not v, signalled, until
                )
            twice += spans(reader.members[name], lambda v: len(v) > 1, signalled, until)
            if args.from_start:
                # Up to the stop only: what began after it is counted above.
                before = [(at, v) for at, v in reader.members[name] if at < signalled]
                forming += spans(before, lambda v: len(v) > 1, 0.0, signalled)
                for pair in {v for _, v in before if len(v) > 1}:
                    whose = " + ".join(sessions.get(s, f"{s:#x}") for s in pair)
                    formed.setdefault(whose, []).extend(
                        spans(before, pair.__eq__, 0.0, signalled)
                    )
            for pair in {v for _, v in reader.members[name] if len(v) > 1}:
                whose = " + ".join(sessions.get(s, f"{s:#x}") for s in pair)
                pairs.setdefault(whose, []).extend(
                    spans(reader.members[name], pair.__eq__, signalled, until)
                )
        extra: list[tuple[str, str]] = []
        if downs is not None and queues is not None and cut:
            taken = sorted(nodes_moved)
            if taken:
                extra.append(
                    (f"run {number}: takeovers from the first",
                     summary([t - taken[0] for t in taken]))
                )  # fmt: skip
            _, seen = downs.seen()
            for part, group in (
                ("moved", [n for n in frozen if n in held]),
                ("stayed", [n for n in frozen if n not in held]),
            ):
                late = [seen[n][0] - cut[0] for n in group if n in seen]
                within = sum(1 for t in late if t <= BOUND)
                extra.append(
                    (f"run {number}: frozen {args.freeze_server:g} s on, {part}",
                     f"{len(late)} of {len(group)} down, {within} within "
                     f"{BOUND:.2f} s; {summary(late)}")
                )  # fmt: skip
                since = [seen[n][1] - cut[0] for n in group if n in seen]
                extra.append(
                    (f"run {number}: {part}: found (since)", summary(since))
                )  # fmt: skip
            said: dict[str, int] = {}
            for name in frozen:
                try:
                    data, _ = client.get(f"{ROOT}/instances/{name}")
                    status = str(json.loads(data).get("status"))
                except NoNodeError:
                    status = "missing"
                said[status] = said.get(status, 0) + 1
            extra.append(
                (f"run {number}: frozen, at the end",
                 ", ".join(f"{v} {k}" for k, v in sorted(said.items())))
            )  # fmt: skip
            servers[-1].resume()
            extra += queues.rows(number)
        if trace is not None:
            Path(f"{args.trace_out}-{number}.json").write_text(
                json.dumps(
                    {
                        "cut": cut,
                        "signal": signal_at,
                        "sessions": {str(k): v for k, v in sessions.items()},
                        "events": trace.events,
                    }
                )
            )
        extra += taken_rows(
            number, "nodes", taken, len(handed), stopped_at, ended_at, gone
        )
        extra += taken_rows(
            number,
            "members",
            members_taken,
            len(handed_members),
            stopped_at,
            ended_at,
            gone,
        )
        extra.append((f"run {number}: its session ended", end_of(stopped_at, gone)))
        kind = "kill -9" if args.kill else "SIGUSR2" if args.usr2 else "SIGTERM"
        if args.early is not None:
            kind += f" {args.early:g} s after its start"
        return [
            (f"run {number}: load average", f"{load} -> {load_average()}"),
            (f"run {number}: {kind} to exit",
             f"{ended:.2f} s, status {status}"
             + (", ZooKeeper frozen" if args.zk_pause else "")),
            (f"run {number}: its nodes held by another",
             f"{summary(nodes_moved)} of {len(held)}"),
            (f"run {number}: its members replaced",
             f"{summary(members_moved)} of {len(members)}"),
            (f"run {number}: instance node missing", summary(missing)),
            (f"run {number}: endpoints when all listed", at_start),
            (f"run {number}: endpoints at the end", at_end),
            (f"run {number}: instance with no member", summary(unlisted)),
            *(
                [(f"run {number}: listed twice as it formed", summary(forming))]
                if args.from_start else []
            ),
            *((f"run {number}: twice as it formed, {whose}", summary(found))
              for whose, found in sorted(formed.items()) if found),
            (f"run {number}: instance listed twice", summary(twice)),
            *((f"run {number}: twice, {whose}", summary(found))
              for whose, found in sorted(pairs.items()) if found),
            *extra,
            (f"run {number}: polls a second",
             f"{reader.polls / max(until, 1e-9):.1f}"),
        ]  # fmt: skip


def write_doubles(
    prefix: str, number: int, reader: Reader, sessions: dict[int, str], at: float
) -> None:
    """
    Each pair of members seen listing one endpoint at once, to trace them
    to their agents' logs: the members' names, whose sessions held them
    (an agent's name, or the session's id for one that was no agent's at
    the stop) and when each was first and last seen (s from the reader's
    start; the signal at `at`), as JSON in ``{prefix}-{number}.json``.
    """
    by_endpoint: dict[str, list[tuple[float, float, str]]] = {}
    for member, (began, ended) in reader.seen.items():
        by_endpoint.setdefault(member.rsplit("_", 1)[0], []).append(
            (began, ended, member)
        )
    doubles = []
    for endpoint, members in sorted(by_endpoint.items()):
        members.sort()
        for i, (a0, a1, a) in enumerate(members):
            for b0, b1, b in members[i + 1 :]:
                if min(a1, b1) - max(a0, b0) > POLL:
                    doubles.append(
                        {
                            "endpoint": endpoint,
                            "together": round(min(a1, b1) - max(a0, b0), 2),
                            "members": [
                                {
                                    "name": name,
                                    "held_by": sessions.get(
                                        reader.owners[name],
                                        f"{reader.owners[name]:#x}",
                                    ),
                                    "seen": [round(t0, 2), round(t1, 2)],
                                }
                                for t0, t1, name in ((a0, a1, a), (b0, b1, b))
                            ],
                        }
                    )
    path = Path(f"{prefix}-{number}.json")
    path.write_text(json.dumps({"signal": round(at, 2), "doubles": doubles}, indent=1))


def endpoints(client: KazooClient, names: list[str]) -> tuple[int, int, int]:
    """
    How many of the instances' endpoints the service lists once, more than
    once, and not at all: a nerve member is named after its instance, so
    distinct endpoints are told apart by name, not by the members' count.
    """
    try:
        children = client.get_children(SERVICE)
    except NoNodeError:
        children = []
    members: dict[str, int] = {}
    for child in children:
        name = child.rsplit("_", 1)[0]
        members[name] = members.get(name, 0) + 1
    counts = [members.get(name, 0) for name in names]
    return (
        sum(1 for c in counts if c == 1),
        sum(1 for c in counts if c > 1),
        sum(1 for c in counts if c == 0),
    )


def counted(client: KazooClient, names: list[str]) -> str:
    """`endpoints` in words, for a row."""
    once, twice, missing = endpoints(client, names)
    return f"{once} once, {twice} twice, {missing} missing"


def keep_logs(args: argparse.Namespace, agents: list[Agent], number: int) -> None:
    """Copy the agents' logs to ``--keep-logs``, if given."""
    if args.keep_logs:
        Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
        for agent in agents:
            target = Path(args.keep_logs) / f"leave-{number}-{agent.log.name}"
            target.write_bytes(agent.log.read_bytes())


def children_of(client: KazooClient, under: str) -> list[str]:
    """The children of ``{ROOT}/{under}``; none before the first agent made it."""
    try:
        children: list[str] = client.get_children(f"{ROOT}/{under}")
    except NoNodeError:
        return []
    return children


def holding(client: KazooClient, names: list[str], session: int) -> list[str]:
    """The instances whose node `session` holds now."""
    stats = [(n, client.exists_async(f"{ROOT}/instances/{n}")) for n in names]
    return [
        n
        for n, a in stats
        if (s := a.get()) is not None and s.ephemeralOwner == session
    ]


def witness(client: KazooClient, names: list[str], session: int) -> str | None:
    """
    One of agent-0's opinion nodes that `session` holds, whose end is the
    session's (a leave keeps its opinions while the session lives); None
    if it holds none yet. Not one of the instance nodes it holds: with
    ``--early`` its new process may hold none yet (it crashed on that).
    """
    stats = [(n, client.exists_async(f"{ROOT}/opinions/{n}/agent-0")) for n in names]
    for name, answer in stats:
        stat = answer.get()
        if stat is not None and stat.ephemeralOwner == session:
            return f"{ROOT}/opinions/{name}/agent-0"
    return None


def members_holding(client: KazooClient, session: int) -> list[str]:
    """The instances whose nerve member (named after it) `session` holds."""
    children = client.get_children(SERVICE)
    stats = [(c, client.exists_async(f"{SERVICE}/{c}")) for c in children]
    return [
        c.rsplit("_", 1)[0]
        for c, a in stats
        if (s := a.get()) is not None and s.ephemeralOwner == session
    ]


def taken_at(client: KazooClient, names: list[str], session: int) -> list[float | None]:
    """
    For each instance in `names`, ZooKeeper's time (epoch seconds) of its
    node's create, the takeover's transaction, if another session holds
    it now; None if `session` still holds it or it is missing.
    """
    stats = [client.exists_async(f"{ROOT}/instances/{n}") for n in names]
    return [
        s.ctime / 1000.0
        if (s := a.get()) is not None and s.ephemeralOwner != session
        else None
        for a in stats
    ]


def members_taken_at(
    client: KazooClient, names: list[str], session: int
) -> list[float | None]:
    """
    For each instance in `names`, the ``ctime`` of the member listing it
    that another session holds (its replacement), if there is one and
    `session` holds none for it any more; None otherwise.
    """
    children = client.get_children(SERVICE)
    stats = [(c, client.exists_async(f"{SERVICE}/{c}")) for c in children]
    made: dict[str, float] = {}
    kept: set[str] = set()
    for child, result in stats:
        stat = result.get()
        if stat is None:
            continue
        name = child.rsplit("_", 1)[0]
        if stat.ephemeralOwner == session:
            kept.add(name)
        else:
            made[name] = max(made.get(name, 0.0), stat.ctime / 1000.0)
    return [None if n in kept else made.get(n) for n in names]


class SessionEnd(threading.Thread):
    """
    When the stopped agent's session ended (its close, or its expiry when
    left open): one of its opinion nodes, which a leave keeps while the
    session lives, polled every 50 ms for up to 30 s.
    """

    def __init__(self, hosts: str, path: str | None, session: int) -> None:
        super().__init__(daemon=True)
        self.hosts, self.path, self.session = hosts, path, session
        self.at: float | None = None

    def run(self) -> None:
        if self.path is None:
            # The session held no opinion yet: its end is not seen.
            return
        client = KazooClient(hosts=self.hosts)
        client.start()
        try:
            began = time.time()
            while time.time() - began < 30.0:
                try:
                    stat = client.exists(self.path)
                except KazooException:
                    # ZooKeeper frozen (--zk-pause): asked again.
                    time.sleep(POLL)
                    continue
                if stat is None or stat.ephemeralOwner != self.session:
                    self.at = time.time()
                    return
                time.sleep(POLL)
        finally:
            client.stop()
            client.close()


def end_of(signalled: float, gone: float | None) -> str:
    """When the stopped agent's session ended, from the signal."""
    return "not seen" if gone is None else f"{gone - signalled:.2f} s"


def taken_rows(
    number: int,
    kind: str,
    taken: list[float | None],
    handed: int,
    signalled: float,
    exited: float,
    gone: float | None,
) -> list[tuple[str, str]]:
    """The rows for the stopped agent's nodes, by ZooKeeper's times."""
    times = [t - signalled for t in taken if t is not None]
    after_exit = [t for t in times if t > exited - signalled]
    expired = [t for t in times if gone is not None and t >= gone - signalled]
    return [
        (f"run {number}: {kind} handed, taken (ctime)",
         f"{summary(times)} of {handed}"),
        (f"run {number}: {kind} taken after the exit", summary(after_exit)),
        (f"run {number}: {kind} made after its session", summary(expired)),
        (f"run {number}: {kind} not taken at the end", str(taken.count(None))),
    ]  # fmt: skip


def held_by_others(client: KazooClient, names: list[str], session: int) -> bool:
    """Whether every instance node is there, none of them `session`'s."""
    stats = [client.exists_async(f"{ROOT}/instances/{n}") for n in names]
    held = [a.get() for a in stats]
    return all(s is not None and s.ephemeralOwner != session for s in held)


def rewritten(client: KazooClient, names: list[str], session: int) -> None:
    """
    Wait until an instance node `session` holds is written again (its
    refresh, up to a minute): the other agents' readings of the nodes
    of its refresh round are older than the nodes then.
    """
    for name in names:
        stat = client.exists(f"{ROOT}/instances/{name}")
        if stat is not None and stat.ephemeralOwner == session:
            break
    else:
        raise RuntimeError("no instance node held by the first agent")
    path, written = f"{ROOT}/instances/{name}", stat.mzxid
    wait_until(
        lambda: getattr(client.exists(path), "mzxid", written) != written,
        60.0,
        f"{path} written again",
    )


def agent_session(client: KazooClient) -> int | None:
    """The session holding agent-0's node, if there is one yet."""
    try:
        return int(client.exists(f"{ROOT}/agents/agent-0").ephemeralOwner)
    except AttributeError:
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add_checkout_option(parser)
    add("--agents", type=int, default=3)
    add("--replicas", type=int, default=2)
    add("--quorum", type=int, help="zookeeper.quorum (default: the agent's)")
    add("--instances", type=int, default=300)
    add("--servers", type=int, default=10)
    add("--session-timeout", type=float, default=10.0)
    add("--kill", action="store_true", help="kill -9 rather than SIGTERM")
    add("--zk-pause", action="store_true", help="ZooKeeper frozen first")
    add(
        "--early",
        type=float,
        metavar="S",
        help="stop it, start it again, and stop it S s after that start",
    )
    add(
        "--light",
        action="store_true",
        help="read the nodes from their listing, holders a slice a poll",
    )
    add("--down", type=int, default=0, help="redis-servers killed first (0)")
    add("--warmup", type=float, default=4.0)
    add(
        "--at-refresh",
        type=float,
        metavar="S",
        help="stop it S s after it rewrites a node at its refresh",
    )
    add("--after", type=float, default=8.0, help="s watched after the exit (8)")
    add("--runs", type=int, default=2)
    add(
        "--stagger",
        type=float,
        default=0.0,
        metavar="S",
        help="start the last agent S s before the others",
    )
    add(
        "--freeze",
        type=float,
        default=0.0,
        metavar="F",
        help="with --stagger: agent-0 frozen F s once listed",
    )
    add(
        "--from-start",
        action="store_true",
        help="read from before the first agent starts: twice as it forms too",
    )
    add(
        "--zk-stall",
        type=float,
        default=0.0,
        metavar="S",
        help="ZooKeeper frozen S s as the group forms (after --freeze)",
    )
    add("--zk-stall-after", type=float, default=1.0, metavar="S")
    add(
        "--members-out",
        metavar="PREFIX",
        help="each pair of members listed at once, by name and holder, as JSON",
    )
    add("--keep-logs", metavar="DIR", help="copy the agents' logs there")
    add(
        "--freeze-server",
        type=float,
        metavar="S",
        help="SIGSTOP a redis-server S s after the signal (<0: before)",
    )
    add("--trace-out", metavar="PREFIX", help="a few frozen instances' writes, as JSON")
    add(
        "--trace-all",
        action="store_true",
        help="with --trace-out: every instance's verdict writes too",
    )
    add("--crowd", type=int, default=0, help="busy loops beside the first (0)")
    add("--crowd-for", type=float, default=5.0, help="s crowded before the stop")
    add("--crowd-peers", type=int, default=0, help="busy loops beside the others")
    add("--usr2", action="store_true", help="SIGUSR2 (a leave) rather than SIGTERM")
    args = parser.parse_args()
    checkouts = checkouts_of(parser, args.checkout)
    if len(checkouts) != 1:
        parser.error("one --checkout at most")
    [(label, version)] = checkouts
    stop_on_sigterm()
    rows = [("version", f"{label} = {commit_of(version)}")]
    for number in range(args.runs):
        rows += run(args, version, number)
    title = (
        f"leave: {args.agents} agents, R = {args.replicas}, {args.instances} instances"
    )
    print(table(rows, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())

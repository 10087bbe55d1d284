"""
A group with one member's path to ZooKeeper slow, flapping or throttled.

Three ``twistd -n sentinel`` agents share ``--instances`` names on a few
real redis-servers (every one healthy throughout), ``zookeeper.replicas``
2 (``--replicas 3`` gives quorum 2), ``zookeeper.session_timeout``
``--session-timeout`` s. Agents a and b reach ZooKeeper directly; agent c
through a TCP path of this script's own on loopback (`SlowPath`), which
each scene spoils for a while, then heals:

- ``delay200`` / ``delay1000`` / ``delay3000``: every byte held that many
  ms in each direction, for ``--fault`` s;
- ``bursts``: 3 s each way, 5 s out of every 15 s, for ``--fault`` s;
- ``flap``: the path black-holed (bytes stop, both connections stay open;
  what was held is sent at the heal, as TCP would retransmit it) for 2--8
  s every 10--20 s (seeded), for ``--fault`` s;
- ``throttle``: each direction at ``--rate`` bytes a second while agent b
  leaves (``SIGUSR2``) and joins again ``--fault`` / 2 s later;
- ``flapheal``: the flap for ``--fault`` s, and on (at most 300 s more)
  until c is in a hold-off wait with ``--left`` s or more left, then
  healed at once, between two cuts: how long c stays out after the heal
  ("c member and writing": c's ``/healthz`` 200 and a node it wrote).
- ``flapleave``: as ``flapheal``, and at the heal a fourth agent d, which
  alone with c knows ``--joint`` instances (``j0000``...), is killed
  (``SIGKILL``): how long the joint nodes are missing, c still waiting.
- ``flapreload``: as ``flapheal``, and at the heal a reload of c's
  (``SIGHUP``) renames its private ``p0000`` to ``q0000``: how long
  until ``q0000``'s node is there (``--private`` 1 or more).
- ``flaptwo``: as ``flapheal``, but d (``--joint`` 1 or more), which
  knows every instance too, reaches ZooKeeper through c's path, so both
  flap together (two agents of one rack): how often each ended its wait
  early, the moves (takeovers) meanwhile, and how long the joint nodes
  were missing. ("settled" counts d out: read "quiet".)

With ``--checkout LABEL=PATH`` (repeatable) each scene runs once per
checkout, in turns, that checkout's agents on ``PYTHONPATH``. With
``--private N``, c also knows N instances of its own (``p0000``...) that
neither a nor b knows: nobody else can publish them, and the table says
how long their nodes were missing (a hold-off of c's made them missing
for its whole wait before ``sentinel.holdoff`` published them).

A reader (its own client, straight to ZooKeeper) lists
``{root}/instances`` every 50 ms and watches each node's data: every
``down`` published, every time a node was missing (and for how long), and
every change of a node's session (a takeover: the primary moved, one
ZooKeeper write). c's ``/healthz`` and ``/debug/stats`` (plus its threads)
are sampled every 0.5 s. After the heal, "settled" is the time until every
node is present, up, held by the session of its primary (the first of its
rendezvous order among a, b and c: DESIGN.md section 8) and written in
its name, and c's ``/healthz`` is 200; "quiet", until every node is
present and up, no takeover came for 5 s (counted in) and c's
``/healthz`` is 200. The writers read before the fault are not the
reference: a node the previous primary set late, just after its
takeover, named that one for up to a refresh.

    .venv/bin/python benchmarks/slowpath.py [--instances 600] [--fault 60] \\
        [--scene flap --scene delay1000 ...] [--replicas 2] \\
        [--checkout before=../old --checkout after=.]
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import random
import re
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    LOOPBACK,
    Agent,
    Instance,
    add_checkout_option,
    agent_config,
    checkouts_of,
    commit_of,
    load_average,
    machine,
    start_redis_servers,
    start_zookeeper,
    stop_on_sigterm,
    table,
)
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from kazoo.recipe.watchers import DataWatch

from sentinel.assignment import Assignment

ROOT = "/slowpath"
POLL = 0.05
SAMPLE = 0.5
SCENES = (
    "delay200",
    "delay1000",
    "delay3000",
    "bursts",
    "flap",
    "throttle",
    "flapheal",
    "flapleave",
    "flapreload",
    "flaptwo",
)
# The scenes that flap until c waits with ``--left`` s left, then heal.
UNTIL_WAITING = ("flapheal", "flapleave", "flapreload", "flaptwo")
# flapheal: the most the flap goes on past ``--fault`` for c's long wait.
FLAPHEAL_LONGEST = 300.0


class Spoil:
    """What the path does to bytes now: held ``delay`` s, cut, or paced."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.cut = False
        self.rate: float | None = None
        self.changed = threading.Condition()

    def set(
        self, delay: float = 0.0, cut: bool = False, rate: float | None = None
    ) -> None:
        """Spoil the path so from now on (all three off: healed)."""
        with self.changed:
            self.delay, self.cut, self.rate = delay, cut, rate
            self.changed.notify_all()


class SlowPath:
    """
    A TCP path from c to ZooKeeper: one thread per direction reads (so the
    sender's own buffers never fill, as on a long link), and one sends each
    chunk when `Spoil` lets it go.
    """

    def __init__(self, target: tuple[str, int], spoil: Spoil) -> None:
        self.target = target
        self.spoil = spoil
        self.accepts = 0
        self.listener = socket.create_server((LOOPBACK, 0))
        self.port = self.listener.getsockname()[1]
        self.closing = False
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closing:
            try:
                agent, _ = self.listener.accept()
            except OSError:
                return
            self.accepts += 1
            try:
                upstream = socket.create_connection(self.target, timeout=5.0)
            except OSError:
                agent.close()
                continue
            upstream.settimeout(None)
            self._sockets += [agent, upstream]
            for source, sink in ((agent, upstream), (upstream, agent)):
                queue: deque[tuple[float, bytes | None]] = deque()
                threading.Thread(
                    target=self._read, args=(source, queue), daemon=True
                ).start()
                threading.Thread(
                    target=self._send, args=(queue, sink), daemon=True
                ).start()

    def _read(
        self, source: socket.socket, queue: deque[tuple[float, bytes | None]]
    ) -> None:
        while True:
            try:
                chunk = source.recv(65536)
            except OSError:
                chunk = b""
            with self.spoil.changed:
                queue.append((time.monotonic(), chunk or None))
                self.spoil.changed.notify_all()
            if not chunk:
                return

    def _send(
        self, queue: deque[tuple[float, bytes | None]], sink: socket.socket
    ) -> None:
        spoil = self.spoil
        while True:
            with spoil.changed:
                while True:
                    now = time.monotonic()
                    if queue and not spoil.cut and queue[0][0] + spoil.delay <= now:
                        stamp, chunk = queue.popleft()
                        rate = spoil.rate
                        break
                    wait = None
                    if queue and not spoil.cut:
                        wait = queue[0][0] + spoil.delay - now
                    spoil.changed.wait(wait if wait is None else max(wait, 0.001))
            if chunk is None:
                try:
                    sink.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            try:
                if rate is None:
                    sink.sendall(chunk)
                else:
                    # Paced a tenth of a second's worth at a time.
                    step = max(1, int(rate / 10))
                    for at in range(0, len(chunk), step):
                        sink.sendall(chunk[at : at + step])
                        time.sleep(len(chunk[at : at + step]) / rate)
            except OSError:
                return

    def close(self) -> None:
        """Stop accepting and drop every connection."""
        self.closing = True
        self.listener.close()
        for sock in self._sockets:
            try:
                sock.close()
            except OSError:
                pass


class Reader:
    """
    The published view as a reader sees it, straight from ZooKeeper: a
    listing every `POLL` s (missing nodes) and a data watch per node (each
    ``down`` and each change of the session holding the node).
    """

    def __init__(
        self,
        hosts: str,
        names: list[str],
        private: set[str],
        joint: set[str] | None = None,
    ) -> None:
        self.names = names
        # c's own instances (``--private``), and those c and d alone know
        # (``--joint``): their gaps apart, by name.
        self.private = private
        self.private_missing: list[tuple[str, str, float]] = []
        self.joint = joint or set()
        self.joint_missing: list[tuple[str, str, float]] = []
        self.client = KazooClient(hosts=hosts, timeout=30.0)
        self.client.start(timeout=10.0)
        self.lock = threading.Lock()
        self.phase = "start"
        self.downs: Counter[str] = Counter()
        self.down_since: dict[str, float] = {}
        self.down_spans: list[tuple[str, float]] = []
        self.status: dict[str, str | None] = {}
        self.owner: dict[str, int] = {}
        self.agent: dict[str, str | None] = {}
        self.takeovers: list[tuple[float, str, str]] = []
        self.gone: dict[str, float] = {}
        self.missing: list[tuple[str, float]] = []
        self.listed: set[str] = set()
        # Names listed once: one not yet made (a reload's) is not missing.
        self.seen: set[str] = set()
        self.polls = 0
        self.began = time.monotonic()
        for name in names:
            DataWatch(
                self.client,
                f"{ROOT}/instances/{name}",
                functools.partial(self._changed, name),
            )
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _changed(self, name: str, data: bytes | None, stat: Any, event: Any) -> None:
        now = time.monotonic()
        with self.lock:
            if data is None:
                self.status[name] = None
                return
            try:
                document = json.loads(data)
                status, self.agent[name] = document.get("status"), document.get("agent")
            except (ValueError, AttributeError):
                status = "unreadable"
            self.status[name] = status
            if status != "up":
                self.downs[self.phase] += 1
                self.down_since.setdefault(name, now)
            elif name in self.down_since:
                self.down_spans.append((self.phase, now - self.down_since.pop(name)))
            before = self.owner.get(name)
            self.owner[name] = stat.ephemeralOwner
            if before is not None and before != stat.ephemeralOwner:
                self.takeovers.append((now, self.phase, name))

    def _run(self) -> None:
        while not self.stopping.wait(POLL):
            try:
                listed = set(self.client.get_children(f"{ROOT}/instances"))
            except NoNodeError:
                listed = set()
            except Exception:
                continue
            now = time.monotonic()
            with self.lock:
                self.listed = listed
                self.polls += 1
                for name in self.names:
                    if name not in listed:
                        if name in self.seen:
                            self.gone.setdefault(name, now)
                        continue
                    self.seen.add(name)
                    if name in self.gone:
                        gap = now - self.gone.pop(name)
                        self.missing.append((self.phase, gap))
                        if name in self.private:
                            self.private_missing.append((self.phase, name, gap))
                        if name in self.joint:
                            self.joint_missing.append((self.phase, name, gap))

    def holders(self) -> tuple[dict[str, str | None], dict[str, str | None]]:
        """
        Each node's holder now (the agent whose agent node its session
        holds) and the writer its data names, read together.
        """
        sessions = {}
        for agent in self.client.get_children(f"{ROOT}/agents"):
            stat = self.client.exists(f"{ROOT}/agents/{agent}")
            if stat is not None:
                sessions[stat.ephemeralOwner] = agent
        with self.lock:
            holder = {n: sessions.get(s) for n, s in self.owner.items()}
            return holder, dict(self.agent)

    def snapshot(self) -> tuple[set[str], dict[str, str | None], dict[str, str | None]]:
        """The names listed, each node's status and primary (agent id), now."""
        with self.lock:
            return set(self.listed), dict(self.status), dict(self.agent)

    def close(self) -> None:
        """Stop polling and the client."""
        self.stopping.set()
        self.thread.join(10.0)
        self.client.stop()
        self.client.close()


class Sampler:
    """c's ``/healthz`` and ``/debug/stats`` every `SAMPLE` s, by phase."""

    def __init__(self, agent: Agent, reader: Reader) -> None:
        self.agent = agent
        self.reader = reader
        self.rows: list[dict[str, Any]] = []
        self.reasons: Counter[tuple[str, str]] = Counter()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.wait(SAMPLE):
            try:
                code, body = self.agent.healthz()
                stats = self.agent.get("/debug/stats")
                threads = self.agent.process.num_threads()
            except Exception:
                continue
            phase = self.reader.phase
            for reason in body.get("reasons", []) if code != 200 else []:
                self.reasons[(phase, _shape(reason))] += 1
            self.rows.append(
                {"phase": phase, "code": code, "os_threads": threads, **stats}
            )

    def close(self) -> None:
        """Stop sampling."""
        self.stopping.set()
        self.thread.join(10.0)


def _shape(reason: str) -> str:
    """A reason with its figures blanked, so that one cause counts once."""
    out, digits = [], False
    for ch in reason:
        if ch.isdigit() or (digits and ch in ".,"):
            if not digits:
                out.append("N")
            digits = True
        else:
            digits = False
            out.append(ch)
    return "".join(out)[:160]


def run_fault(
    scene: str,
    spoil: Spoil,
    seconds: float,
    rate: float,
    b: Agent,
    restart_b: Callable[[], Agent],
    rng: random.Random,
) -> Agent:
    """Spoil the path as `scene` says for `seconds`; b as it is after."""
    end = time.monotonic() + seconds
    if scene.startswith("delay"):
        spoil.set(delay=int(scene[5:]) / 1000)
        time.sleep(seconds)
    elif scene == "bursts":
        while time.monotonic() < end:
            spoil.set(delay=3.0)
            time.sleep(5.0)
            spoil.set()
            time.sleep(max(0.0, min(10.0, end - time.monotonic())))
    elif scene == "flap":
        while time.monotonic() < end:
            length = rng.uniform(2.0, 8.0)
            spoil.set(cut=True)
            time.sleep(length)
            spoil.set()
            time.sleep(
                max(0.0, min(rng.uniform(10.0, 20.0) - length, end - time.monotonic()))
            )
    elif scene == "throttle":
        spoil.set(rate=rate)
        time.sleep(2.0)
        b.child.process.send_signal(signal.SIGUSR2)
        b.child.process.wait(20)
        time.sleep(seconds / 2)
        b = restart_b()
        time.sleep(max(0.0, end - time.monotonic()))
    spoil.set()
    return b


def flap_until_waiting(
    spoil: Spoil,
    seconds: float,
    left: float,
    c: Agent,
    rng: random.Random,
) -> tuple[float | None, float]:
    """
    The flap for `seconds`, and on until c's hold-off wait has `left` s
    or more left (`FLAPHEAL_LONGEST` s more at most), healed then, between
    two cuts: c's wait left at the heal (None: not waiting), and how long
    the path had been up then.
    """
    end = time.monotonic() + seconds
    longest = end + FLAPHEAL_LONGEST
    while True:
        length = rng.uniform(2.0, 8.0)
        spoil.set(cut=True)
        time.sleep(length)
        spoil.set()
        up = time.monotonic()
        next_cut = up + rng.uniform(10.0, 20.0) - length
        while time.monotonic() < next_cut:
            time.sleep(SAMPLE)
            now = time.monotonic()
            if now < end:
                continue
            waiting = c.get("/group?limit=1").get("hold_off_seconds")
            if (waiting is not None and waiting >= left) or now >= longest:
                return waiting, now - up


def until_back(
    reader: Reader,
    c: Agent,
    names: list[str],
    args: argparse.Namespace,
    what: str,
    first: float | None = None,
) -> list[tuple[str, str]]:
    """
    After `what` (made just now), how long until each of `names` is listed
    (looked for after `first` s: by default a session timeout and a
    second, for the nodes a kill takes to go), and c's wait left then:
    rows of the table.
    """
    started = time.monotonic()
    time.sleep(args.session_timeout + 1.0 if first is None else first)
    back = wait_for(lambda: set(names) <= reader.snapshot()[0], args.settle)
    left = c.get("/group?limit=1").get("hold_off_seconds")
    return [
        (f"  {what}: its {len(names)} node(s) all there after",
         "not within limit" if back is None
         else f"{time.monotonic() - started:.1f} s"),
        (f"  {what}: c's wait left then", f"{left} s"),
    ]  # fmt: skip


def c_back(reader: Reader, c: Agent) -> bool:
    """c is a member and writing: a node it wrote is listed, its /healthz 200."""
    listed, _, agent = reader.snapshot()
    return any(who == "c" for n, who in agent.items() if n in listed) and (
        c.healthz()[0] == 200
    )


def primaries(
    names: list[str], replicas: int, private: frozenset[str] = frozenset()
) -> dict[str, str]:
    """
    Each name's primary among a, b and c, which all know every name but
    the `private` ones, c's alone.
    """
    assignment = Assignment(replicas)
    assignment.set_known(names)
    shared = frozenset(names) - private
    assignment.update({"a": shared, "b": shared, "c": frozenset(names)})
    return {n: str(assignment.primary(n)) for n in names}


def settled(
    reader: Reader, c: Agent, names: list[str], primary: dict[str, str]
) -> bool:
    """Every node listed, up, held and written by its primary; c 200."""
    listed, status, writer = reader.snapshot()
    if any(n not in listed or status.get(n) != "up" for n in names):
        return False
    if any(writer.get(n) != primary[n] for n in names):
        return False
    holder = reader.holders()[0]
    if any(holder.get(n) != primary[n] for n in names):
        return False
    return c.healthz()[0] == 200


def unsettled(
    reader: Reader, c: Agent, names: list[str], primary: dict[str, str]
) -> str:
    """
    Why the view is not settled: nodes missing, not up, written in another's
    name or held by another's session (primary->other); c's code.
    """
    listed, status, writer = reader.snapshot()
    holder = reader.holders()[0]
    missing = sum(1 for n in names if n not in listed)
    down = sum(1 for n in names if n in listed and status.get(n) != "up")
    named = Counter(
        f"{primary[n]}->{writer.get(n)}" for n in names if writer.get(n) != primary[n]
    )
    held = Counter(
        f"{primary[n]}->{holder.get(n)}" for n in names if holder.get(n) != primary[n]
    )
    code, body = c.healthz()
    why = "; ".join(body.get("reasons", []))[:200]
    return (
        f"{missing} missing, {down} not up, written as {dict(named)}, held by"
        f" {dict(held)}, c {code} {why}"
    )


class Misnamed:
    """
    Nodes held by one member's session whose data names another as their
    writer (a previous primary's set landed after the takeover), and for
    how long each did, from the samples taken.
    """

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self.since: dict[str, float] = {}
        self.spans: dict[str, float] = {}

    def sample(self) -> bool:
        """Sample now; whether no node is misnamed."""
        now = time.monotonic()
        holder, writer = self.reader.holders()
        wrong = {n for n, who in holder.items() if who and writer.get(n) != who}
        for name in wrong:
            self.since.setdefault(name, now)
            self.spans[name] = now - self.since[name]
        for name in set(self.since) - wrong:
            del self.since[name]
        return not wrong


def wait_for(condition: Callable[[], bool], limit: float) -> float | None:
    """Seconds until `condition` holds, None past `limit`."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if condition():
            return time.monotonic() - started
        time.sleep(0.1)
    return None


def scene_rows(
    scene: str,
    args: argparse.Namespace,
    fault: float,
    reader: Reader,
    sampler: Sampler,
    settle: float | None,
    quiet: float | None,
    loads: tuple[str, str],
    extra: list[tuple[str, str]],
) -> list[tuple[str, str]]:
    """What one scene did, as rows of the printed table (`extra` last)."""
    rows = sampler.rows
    during = [r for r in rows if r["phase"] == "fault"]
    before = [r for r in rows if r["phase"] == "steady"] or rows[:1]
    after = [r for r in rows if r["phase"] == "healed"] or rows[-1:]
    takeovers = [t for t in reader.takeovers if t[1] in ("fault", "healed")]
    private = [
        (name, gap)
        for phase, name, gap in reader.private_missing
        if phase in ("fault", "healed")
    ]
    # Gaps still open now count up to now.
    open_gaps = [
        (name, time.monotonic() - since)
        for name, since in reader.gone.items()
        if name in reader.private
    ]
    joint = [
        (name, gap)
        for phase, name, gap in reader.joint_missing
        if phase in ("fault", "healed")
    ] + [
        (name, time.monotonic() - since)
        for name, since in reader.gone.items()
        if name in reader.joint
    ]
    minutes = fault / 60
    missing = [s for p, s in reader.missing if p in ("fault", "healed")]
    downs = sum(reader.downs[p] for p in ("fault", "healed"))
    down_spans = [s for p, s in reader.down_spans if p in ("fault", "healed")]

    def span(key: str) -> str:
        first = before[-1].get(key)
        most = max((r.get(key, 0) for r in during + after), default=first)
        last = after[-1].get(key)
        return f"{first} / {most} / {last}"

    out = [
        (f"{scene}: load (start, end)", f"{loads[0]} / {loads[1]}"),
        ("  downs published (instances healthy)", f"{downs}"
         + (f", longest {max(down_spans):.1f} s" if down_spans else "")),
        ("  nodes missing (count, longest)",
         f"{len(missing)}" + (f", {max(missing):.2f} s" if missing else "")),
        ("  takeovers during fault / after heal",
         f"{sum(1 for t in takeovers if t[1] == 'fault')} "
         f"({sum(1 for t in takeovers if t[1] == 'fault') / minutes:.1f}/min) / "
         f"{sum(1 for t in takeovers if t[1] == 'healed')}"),
        *([("  c's private nodes missing (gaps, names, longest, total)",
            f"{len(private + open_gaps)}, {len({n for n, _ in private + open_gaps})}"
            f", {max((g for _, g in private + open_gaps), default=0.0):.2f} s"
            f", {sum(g for _, g in private + open_gaps):.1f} s")]
          if reader.private else []),
        *([("  joint nodes missing (gaps, names, longest, total)",
            f"{len(joint)}, {len({n for n, _ in joint})}"
            f", {max((g for _, g in joint), default=0.0):.2f} s"
            f", {sum(g for _, g in joint):.1f} s")]
          if reader.joint else []),
        ("  c /healthz 503 samples (fault)",
         f"{sum(1 for r in during if r['code'] != 200)} of {len(during)}"),
        ("  c /healthz 503 samples (healed)",
         f"{sum(1 for r in after if r['code'] != 200)} of {len(after)}"),
        ("  c threads before / most / after", span("os_threads")),
        ("  c open_fds before / most / after", span("open_fds")),
        ("  c rss MiB before / most / after",
         " / ".join(f"{v / 2**20:.0f}" for v in (
             before[-1]["rss_bytes"],
             max(r["rss_bytes"] for r in during + after),
             after[-1]["rss_bytes"]))),
        ("  c pending_checks before / most / after", span("pending_checks")),
        ("  c delayed_calls before / most / after", span("delayed_calls")),
        ("  settled after heal",
         "not within limit" if settle is None else f"{settle:.1f} s"),
        ("  quiet after heal (5 s without takeover included)",
         "not within limit" if quiet is None else f"{quiet:.1f} s"),
        ("  reader polls", f"{reader.polls}"),
        *extra,
    ]  # fmt: skip
    for (phase, reason), count in sampler.reasons.most_common(4):
        out.append((f"  c /healthz {phase} x{count}", reason))
    return out


def one_scene(
    scene: str, args: argparse.Namespace, checkout: Path
) -> list[tuple[str, str]]:
    """Servers, `checkout`'s agents, reader; steady, fault, heal; the rows."""
    rng = random.Random(args.seed)
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as started:
        workdir = Path(tmp)
        servers = start_redis_servers(args.servers, started)
        zookeeper, _ = start_zookeeper(started)
        instances = [
            Instance(f"r{i:04d}", servers[i % len(servers)].port)
            for i in range(args.instances)
        ]
        mine = [
            Instance(f"p{i:04d}", servers[i % len(servers)].port)
            for i in range(args.private)
        ]
        joint = [
            Instance(f"j{i:04d}", servers[i % len(servers)].port)
            for i in range(args.joint)
        ]
        names = [i.name for i in instances + mine]
        # Renamed by c's reload in ``flapreload``.
        renamed = [Instance(f"q{i.name[1:]}", i.port) for i in mine[:1]]
        spoil = Spoil()
        host, port = zookeeper.hosts.split(":")
        path = SlowPath((host, int(port)), spoil)
        started.callback(path.close)
        settings: dict[str, float | int | str] = {
            "replicas": args.replicas, "session_timeout": args.session_timeout,
        }  # fmt: skip
        if args.replicas == 3:
            settings["quorum"] = 2

        def config(agent_id: str, hosts: str, mine: list[Instance]) -> str:
            # flaptwo: d a full member too, as two agents of one rack.
            d_knows = instances + joint if scene == "flaptwo" else joint
            known = {
                "c": instances + mine + joint, "d": d_knows
            }.get(agent_id, instances)  # fmt: skip
            return agent_config(
                known, zookeeper=hosts, zk_root=ROOT, agent_id=agent_id,
                zk_settings=settings,
            )  # fmt: skip

        def start(agent_id: str, hosts: str, label: str) -> Agent:
            text = config(agent_id, hosts, mine)
            agent = Agent(workdir, text, label, pythonpath=checkout)
            started.callback(agent.stop)
            agent.wait_ready()
            return agent

        a = start("a", zookeeper.hosts, "a")
        b = start("b", zookeeper.hosts, "b")
        c = start("c", f"{LOOPBACK}:{path.port}", "c")
        # flaptwo: d behind the same path as c, flapping with it.
        d_hosts = f"{LOOPBACK}:{path.port}" if scene == "flaptwo" else zookeeper.hosts
        d = start("d", d_hosts, "d") if joint else None
        watched = names + [i.name for i in joint + renamed]
        reader = Reader(
            zookeeper.hosts, watched, {i.name for i in mine}, {i.name for i in joint}
        )
        started.callback(reader.close)
        # Steady: every node there and up, nothing moved for 5 s, and each
        # named after its holder (after c's join: `Misnamed`).
        misnamed = Misnamed(reader)
        steady = lambda: misnamed.sample() and settled_quiet(reader, c, names)  # noqa: E731
        if wait_for(steady, 120.0) is None:
            raise RuntimeError("the group never settled before the fault")
        primary = primaries(names, args.replicas, frozenset(i.name for i in mine))
        sampler = Sampler(c, reader)
        started.callback(sampler.close)
        time.sleep(5.0)
        load_start = load_average()
        load_start_at = time.monotonic()
        reader.phase = "fault"
        restarts = [0]

        def restart_b() -> Agent:
            restarts[0] += 1
            return start("b", zookeeper.hosts, f"b-{restarts[0]}")

        longest = max(misnamed.spans.values(), default=0.0)
        extra: list[tuple[str, str]] = [
            ("  after c joined: nodes held by one, named after another (longest)",
             f"{len(misnamed.spans)} ({longest:.1f} s)"),
        ]  # fmt: skip
        if scene in UNTIL_WAITING:
            waiting, up = flap_until_waiting(spoil, args.fault, args.left, c, rng)
        else:
            b = run_fault(scene, spoil, args.fault, args.rate, b, restart_b, rng)
        reader.phase = "healed"
        healed = time.monotonic()
        if scene == "flapleave" and d is not None:
            d.child.process.send_signal(signal.SIGKILL)
            extra += until_back(reader, c, [i.name for i in joint], args, "d's kill")
        if scene == "flapreload" and renamed:
            c.config_path.write_text(config("c", f"{LOOPBACK}:{path.port}", [
                *renamed, *mine[1:]]))  # fmt: skip
            with reader.lock:
                # p0000 goes for good: no gap of c's.
                reader.names = [n for n in reader.names if n != mine[0].name]
            c.child.process.send_signal(signal.SIGHUP)
            extra += until_back(reader, c, [renamed[0].name], args, "c's reload", 0.0)
            names = [renamed[0].name if n == mine[0].name else n for n in names]
            now_mine = frozenset(i.name for i in [*renamed, *mine[1:]])
            primary = primaries(names, args.replicas, now_mine)
        if scene == "flaptwo" and d is not None:
            extra += [("  flap lasted", f"{healed - load_start_at:.0f} s")]
            for agent in (c, d):
                said = agent.log.read_text()
                extra += [(
                    f"  {agent.log.name}: waits begun / ended early, of them"
                    " for instances nobody publishes",
                    f"{said.count('before it joins the group again')} / "
                    f"{said.count('s before the end of its wait')}, "
                    f"{said.count('have nobody to publish')}",
                )]  # fmt: skip
        if scene == "flapheal":
            back = wait_for(lambda: c_back(reader, c), args.settle)
            extra += [
                ("  flap lasted", f"{healed - load_start_at:.0f} s"),
                ("  c wait left at heal (path up for)",
                 f"{waiting} s ({up:.1f} s)"),
                ("  c member and writing after heal",
                 "not within limit" if back is None else f"{back:.1f} s"),
            ]  # fmt: skip
        # Every node there and up, no takeover for 5 s (included), c 200.
        left = max(0.0, healed + args.settle - time.monotonic())
        quiet = wait_for(lambda: settled_quiet(reader, c, names), left)
        if quiet is not None:
            quiet = time.monotonic() - healed
        if scene == "throttle":
            # b's new session holds its nodes now: settled is quiet.
            settle = quiet
        else:
            left = max(0.0, healed + args.settle - time.monotonic())
            found = wait_for(lambda: settled(reader, c, names, primary), left)
            settle = None if found is None else time.monotonic() - healed
        if settle is None:
            print(f"{scene}: not settled: {unsettled(reader, c, names, primary)}")
            for agent in (a, b, c):
                group = agent.get("/group")
                print(
                    agent.log.name, {k: v for k, v in group.items() if k != "members"}
                )
                print("   ", group.get("members"))
        time.sleep(5.0)
        load_end = load_average()
        sampler.close()
        if scene == "flapheal":
            # c's own words for its waits: the last of its hold-off lines.
            said = [
                line.split("] ", 1)[-1][:150]
                for line in c.log.read_text().splitlines()
                if "sentinel.holdoff" in line
            ]
            extra += [(f"  c log (last of {len(said)} hold-off lines)", said[-1])]
        # Nodes each agent took over from a listed primary whose verdicts
        # did not say its opinion (`sentinel.covers`): a's and b's, of c's
        # nodes, are what the slow path may cost; c's, of theirs, are
        # wrong (c's path is the slow one, theirs healthy).
        extra += [
            ("  nodes taken from a late primary by a / b / c (logged)",
             " / ".join(str(behind_taken(agent.log)) for agent in (a, b, c))),
        ]  # fmt: skip
        rows = scene_rows(scene, args, args.fault, reader, sampler, settle,
                          quiet, (load_start, load_end), extra)  # fmt: skip
        for agent in (a, b, c):
            agent.stop()
        return rows


def behind_taken(log: Path) -> int:
    """The nodes an agent's log says it took from a late primary."""
    said = re.finditer(
        r"group: (\d+) verdict\(s\) held by their listed", log.read_text()
    )
    return sum(int(m.group(1)) for m in said)


def settled_quiet(reader: Reader, c: Agent, names: list[str]) -> bool:
    """Every node listed and up, no takeover in the last 5 s, c 200."""
    listed, status, _ = reader.snapshot()
    if any(n not in listed or status.get(n) != "up" for n in names):
        return False
    # Counted from the reader's start too: c's join takes its share over
    # from a and b a settle time after c started, maybe after the reader.
    last = max(reader.takeovers[-1][0] if reader.takeovers else 0.0, reader.began)
    return time.monotonic() - last > 5.0 and c.healthz()[0] == 200


def parse_args() -> tuple[argparse.Namespace, list[tuple[str, Path]]]:
    """The command line (module docstring), and the checkouts to run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_checkout_option(parser)
    parser.add_argument("--instances", type=int, default=600)
    parser.add_argument("--servers", type=int, default=4)
    parser.add_argument("--replicas", type=int, choices=(2, 3), default=2)
    parser.add_argument("--session-timeout", type=float, default=4.0)
    parser.add_argument("--fault", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=4096.0)
    parser.add_argument("--seed", type=int, default=28)
    parser.add_argument("--left", type=float, default=120.0)
    parser.add_argument("--private", type=int, default=0)
    parser.add_argument("--joint", type=int, default=0)
    parser.add_argument("--scene", action="append", choices=SCENES)
    args = parser.parse_args()
    return args, checkouts_of(parser, args.checkout)


def main() -> int:
    """Run each scene with fresh servers and agents; print the table."""
    args, checkouts = parse_args()
    stop_on_sigterm()
    rows = [(f"version {label}", commit_of(path)) for label, path in checkouts]
    for scene in args.scene or SCENES:
        for label, path in checkouts:
            found = one_scene(scene, args, path)
            if len(checkouts) > 1:
                found = [(f"[{label}] {key}", value) for key, value in found]
            rows += found
            print(table(found, f"slowpath.py (scene {scene})"), flush=True)
    print()
    print(machine())
    title = (
        f"one member's slow path to ZooKeeper, {args.instances} instances, "
        f"R={args.replicas}, session {args.session_timeout:g} s"
    )
    print(table(rows, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())

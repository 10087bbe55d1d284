"""
ZooKeeper stopped, wiped and started again under a central agent and
under a group, as an operator rebuilding an ensemble does it.

Two shapes, each with a ZooKeeper of its own and real agents
(``twistd -n sentinel``, a ``state_dir`` each, every other setting at its
default, session timeout 10 s) over a few real redis-servers, all up:

- ``central``: one agent with N instances (10,000);
- ``group``: three agents, ``replicas = 2``, serverset discovery, over N
  instances (3,000) that each of them knows.

Once everything is published, ZooKeeper goes through one of these cases:

- ``wipe``: stopped, its data directory deleted, started again after
  ``--wipe-down`` seconds (15): it comes back empty, with transaction ids
  lower than the agents have seen;
- ``stop``: stopped and started again after ``--stop-down`` seconds
  (60), its data kept: the sessions it restores expire unless their
  clients come back within their timeout;
- ``wipe-kill`` (group only): as ``wipe``, and one member (``g2``) is
  killed (SIGKILL) while ZooKeeper is away: it never comes back, and
  the others wait for it as a member of their last view. The table
  then splits the instance nodes and discovery members by whose they
  were (their primary in the view of three), each from ZooKeeper's
  return to the first sweep that saw it, and gives, from the survivors'
  logs, their longest membership listing and how long each view went
  without its own agent (its new session until listed again).

From the moment ZooKeeper serves again, a reader of its own (a new kazoo
client: the old one would be refused by a wiped server too) sweeps the
tree as fast as it can: the children of ``{root}/instances``,
``{root}/agents``, each instance's opinions and each discovery service's
members, and a third of the instance nodes' data each sweep. The table
gives, for each kind of node, how long after ZooKeeper served again it
was there (p50 / max, from each node's ``ctime`` at the end: a node kept
through the outage counts 0), the nodes missing or members listed twice
at a sweep once they had been back, the healthy instances ever said
``down``, ZooKeeper's transactions per second (its ``srvr`` zxid, sampled
every second: a multi counts once) and the agents' ``writes_by_kind`` at
the end, each agent's ``/healthz`` every second from the stop (503 while
ZooKeeper is away and naming it, 200 once back), when each agent's node
came back (a herd if all at once), the agents' client replacements and
RSS before and after. Last, one agent is restarted (SIGTERM, then a new
process on the same ``state_dir``): the session its state file names
against the one its nodes belong to, and the instance nodes the reader
saw missing during that handover.

    .venv/bin/python benchmarks/rebuild.py [--shape central,group]
        [--cases wipe,stop] [--central-instances 10000]
        [--group-instances 3000] [--checkout before=PATH --checkout after=PATH]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

from common import (
    Agent,
    Instance,
    RedisServer,
    ZooKeeperServer,
    add_checkout_option,
    agent_config,
    check_choices,
    load_average,
    machine,
    open_files_for,
    percentile,
    rows_in_turns,
    start_redis_servers,
    table,
    wait_until,
)
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from restartfleet import _healthz

from sentinel.assignment import Assignment

SESSION_TIMEOUT = 10.0
SHAPES = ("central", "group")
CASES = ("wipe", "stop", "wipe-kill")
KILLED = "g2"
GROUP = ("g0", "g1", "g2")
READ_TIMEOUT = 10.0
BACK_TIMEOUT = 240.0
SETTLE = 10.0
SETTLE_POLL = 1.0


def parse_args() -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--shape", default=",".join(SHAPES), help="central, group or both")
    add("--cases", default="wipe,stop", help="wipe, stop, wipe-kill (group)")
    add("--central-instances", type=int, default=10000, help="(10000)")
    add("--group-instances", type=int, default=3000, help="(3000)")
    add("--servers", type=int, default=6, help="redis-servers they share (6)")
    add("--wipe-down", type=float, default=15.0, help="seconds away (15)")
    add("--stop-down", type=float, default=60.0, help="seconds away (60)")
    add(
        "--settle-limit",
        type=float,
        default=120.0,
        help="seconds to wait for the group to settle, at start and after (120)",
    )
    add("--runs", type=int, default=1, help="runs of each (1)")
    add("--keep-logs", action="store_true", help="keep the agents' logs")
    add_checkout_option(parser)
    args = parser.parse_args()
    check_choices(parser, "--shape", args.shape, SHAPES)
    check_choices(parser, "--cases", args.cases, CASES)
    if "wipe-kill" in args.cases.split(",") and args.shape != "group":
        parser.error("--cases wipe-kill: only with --shape group")
    return parser, args


class Sweeper:
    """
    The reader from ZooKeeper's return on: sweeps the tree on a thread of
    its own and keeps, per node, whether it went missing once seen, and
    the most members any service listed at once.
    """

    def __init__(self, hosts: str, root: str, names: Sequence[str], group: bool):
        self.root, self.names, self.group = root, list(names), group
        self.discovery = f"{root}-discovery"
        self.seen: set[str] = set()
        # Seconds from the reader's start (ZooKeeper serving) to the first
        # sweep that saw each node.
        self.first_seen: dict[str, float] = {}
        self._began = time.monotonic()
        self.lost: set[str] = set()
        self.downs: set[str] = set()
        self.most_members = 0
        self.twice: set[str] = set()
        self.sweeps = self.errors = 0
        self._slice = 0
        self._stopping = threading.Event()
        self._client = KazooClient(hosts=hosts, timeout=30.0)
        self._client.start(timeout=30.0)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sweeping and close the reader's session."""
        self._stopping.set()
        self._thread.join(30.0)
        self._client.stop()
        self._client.close()

    def _run(self) -> None:
        while not self._stopping.wait(0.2):
            try:
                self._sweep()
                self.sweeps += 1
            except Exception:
                self.errors += 1

    def _children(self, path: str) -> list[str]:
        try:
            return list(self._client.get_children(path))
        except NoNodeError:
            return []

    def _many(self, paths: Sequence[str]) -> dict[str, list[str]]:
        asked = [(p, self._client.get_children_async(p)) for p in paths]
        out: dict[str, list[str]] = {}
        for path, answer in asked:
            try:
                out[path] = list(answer.get(timeout=READ_TIMEOUT))
            except NoNodeError:
                out[path] = []
        return out

    def _sweep(self) -> None:
        present = {f"i/{n}" for n in self._children(f"{self.root}/instances")}
        present |= {f"a/{n}" for n in self._children(f"{self.root}/agents")}
        if self.group:
            opinions = self._many([f"{self.root}/opinions/{n}" for n in self.names])
            for path, agents in opinions.items():
                name = path.rsplit("/", 1)[1]
                present |= {f"o/{name}/{a}" for a in agents}
            services = self._many([f"{self.discovery}/{n}" for n in self.names])
            for path, members in services.items():
                name = path.rsplit("/", 1)[1]
                if members:
                    present.add(f"m/{name}")
                self.most_members = max(self.most_members, len(members))
                if len(members) > 1:
                    self.twice.add(name)
        part = self.names[self._slice :: 3]
        self._slice = (self._slice + 1) % 3
        reads = [
            (n, self._client.get_async(f"{self.root}/instances/{n}")) for n in part
        ]
        for name, read in reads:
            try:
                data, _ = read.get(timeout=READ_TIMEOUT)
            except NoNodeError:
                continue
            if json.loads(data).get("status") == "down":
                self.downs.add(name)
        self.lost |= self.seen - present
        now = time.monotonic() - self._began
        for node in present - self.seen:
            self.first_seen[node] = now
        self.seen |= present

    def ctimes(self, served_ms: float) -> dict[str, list[float]]:
        """Seconds from `served_ms` (epoch ms) to each node's creation, by kind."""
        client, root = self._client, self.root

        def since(paths: Sequence[str]) -> list[float]:
            asked = [client.exists_async(p) for p in paths]
            out = []
            for answer in asked:
                stat = answer.get(timeout=READ_TIMEOUT)
                out.append(
                    float("inf")
                    if stat is None
                    else max(0.0, (stat.ctime - served_ms) / 1000)
                )
            return out

        kinds = {
            "instance nodes": since([f"{root}/instances/{n}" for n in self.names]),
            "agent nodes": since(
                [f"{root}/agents/{a}" for a in self._children(f"{root}/agents")]
            ),
        }
        if self.group:
            opinions = self._many([f"{root}/opinions/{n}" for n in self.names])
            kinds["opinions"] = since(
                [f"{p}/{a}" for p, agents in opinions.items() for a in agents]
            )
            services = self._many([f"{self.discovery}/{n}" for n in self.names])
            kinds["discovery members"] = since(
                [f"{p}/{m}" for p, members in services.items() for m in members]
            )
        return kinds


class Sampler:
    """Every second: each agent's /healthz, ZooKeeper's zxid."""

    def __init__(self, agents: Sequence[Agent], zookeeper: ZooKeeperServer) -> None:
        self.agents, self.zookeeper = agents, zookeeper
        self.health: list[tuple[float, list[str]]] = []
        self.zxids: list[tuple[float, int]] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling."""
        self._stopping.set()
        self._thread.join(30.0)

    def _run(self) -> None:
        while not self._stopping.wait(1.0):
            now = time.monotonic()
            self.health.append((now, [_healthz(a) for a in self.agents]))
            try:
                answer = self.zookeeper.four_letter_word("srvr").decode()
            except OSError:
                continue
            found = re.search(r"Zxid: 0x([0-9a-f]+)", answer)
            if found:
                self.zxids.append((now, int(found.group(1), 16) & 0xFFFFFFFF))


def _unsettled(
    client: KazooClient, agents: Sequence[Agent], services: Sequence[str]
) -> str | None:
    """
    Why the agents have not settled, or None: every service (`services`,
    discovery parents) lists exactly one member, no write waits or is in
    flight in any agent's ``writes_by_kind``, and every ``/healthz`` is 200.
    """
    asked = [(p, client.get_children_async(p)) for p in services]
    off = 0
    for _, answer in asked:
        try:
            off += len(answer.get(timeout=READ_TIMEOUT)) != 1
        except NoNodeError:
            off += 1
    if off:
        return f"{off} services not listing exactly one member"
    for agent in agents:
        kinds = _find(agent.get("/debug/stats"), "writes_by_kind")
        left = sum(sum(k.values()) for k in kinds.values())
        if left:
            return f"{agent.log.stem}: {left} writes waiting or in flight"
        health = _healthz(agent)
        if health != "200":
            return f"{agent.log.stem}: /healthz {health[:120]}"
    return None


def _settle_time(
    client: KazooClient,
    agents: Sequence[Agent],
    services: Sequence[str],
    since: float,
    limit: float,
) -> str:
    """Seconds from `since` until the agents settled (`_unsettled`)."""
    why: str | None = "not asked"
    while time.monotonic() - since < limit:
        try:
            why = _unsettled(client, agents, services)
        except Exception as error:
            why = f"asking failed: {error!r}"
        if why is None:
            return f"{time.monotonic() - since:.1f} s"
        time.sleep(SETTLE_POLL)
    return f"not in {limit:g} s: {why}"


def _find(stats: Any, key: str) -> Any:
    """The first value under `key` anywhere in /debug/stats."""
    if isinstance(stats, dict):
        if key in stats:
            return stats[key]
        for value in stats.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None


def _summary(values: Sequence[float]) -> str:
    if not values:
        return "none"
    never = sum(v == float("inf") for v in values)
    back = [v for v in values if v != float("inf")]
    text = (
        f"{len(values)}: {percentile(back, 50):.1f} / {max(back):.1f} s"
        if back
        else f"{len(values)}"
    )
    return text + (f", {never} never" if never else "")


def _health_rows(
    sampler: Sampler, stopped: float, served: float, names: Sequence[str]
) -> list[tuple[str, str]]:
    rows = []
    for index, name in enumerate(names):
        away = [h[index] for t, h in sampler.health if stopped + 2 < t < served]
        lies = [a for a in away if a == "200"]
        after = [(t, h[index]) for t, h in sampler.health if t >= served]
        ok_at = next((t - served for t, a in after if a == "200"), None)
        flips = sum(
            1
            for (_, a), (_, b) in zip(after, after[1:], strict=False)
            if a == "200" and b != "200"
        )
        first = next((a for a in away if a != "200"), "none")
        rows.append(
            (
                f"{name} /healthz away: 200 / other; first other",
                f"{len(lies)} / {len(away) - len(lies)}; {first[:140]}",
            )
        )
        reasons = _reasons_after(after)
        rows.append((f"{name} /healthz reasons after served (samples)", reasons))
        last = next((a for _, a in reversed(after) if a != "200"), "none")
        rows.append(
            (
                f"{name} /healthz: first 200 after served; 200 then not; last other",
                f"{'never' if ok_at is None else f'{ok_at:.1f} s'}; {flips};"
                f" {last[:140]}",
            )
        )
    return rows


def _reasons_after(after: Sequence[tuple[float, str]]) -> str:
    """
    Every reason one agent's /healthz gave in `after` (its samples from
    ZooKeeper's return on), its figures made ``#`` so that one reason
    counts once, with how many samples gave it.
    """
    counts: dict[str, int] = {}
    for _, answer in after:
        if answer == "200":
            continue
        code, _, text = answer.partition(" ")
        for reason in text.split("; ") if text else [code]:
            key = re.sub(r"\d+(\.\d+)?", "#", reason)[:100]
            counts[key] = counts.get(key, 0) + 1
    return " | ".join(f"{k} ({n})" for k, n in counts.items()) or "none"


def _write_rate(sampler: Sampler, served: float) -> str:
    samples = [(t, z) for t, z in sampler.zxids if t >= served]
    rates = [
        (z2 - z1) / (t2 - t1)
        for (t1, z1), (t2, z2) in zip(samples, samples[1:], strict=False)
        if z2 >= z1
    ]
    if not rates:
        return "no samples"
    first = samples[0][1] if samples else 0
    return (
        f"peak {max(rates):.0f}/s, mean over the first 30 s "
        f"{sum(rates[:30]) / len(rates[:30]):.0f}/s, {first} at the first sample"
    )


def scene(
    args: argparse.Namespace, path: Path, label: str, shape: str, case: str
) -> list[tuple[str, str]]:
    """One shape through one case; its rows."""
    group = shape == "group"
    count = args.group_instances if group else args.central_instances
    names = [f"r{i}" for i in range(count)]
    ids = GROUP if group else ("central",)
    workdir = Path(tempfile.mkdtemp(prefix=f"sentinel-rebuild-{label}-"))
    root = "/rebuild"
    rows: list[tuple[str, str]] = []
    try:
        with ExitStack() as running:
            servers: list[RedisServer] = start_redis_servers(args.servers, running)
            zookeeper = ZooKeeperServer()
            running.callback(zookeeper.close)
            zookeeper.start()
            ports = [s.port for s in servers]
            instances = [
                Instance(n, ports[i % len(ports)]) for i, n in enumerate(names)
            ]
            settings: dict[str, Any] = {"session_timeout": SESSION_TIMEOUT}
            if group:
                settings |= {"replicas": 2, "discovery": "serverset"}
            texts = {}
            for agent_id in ids:
                text = agent_config(
                    instances,
                    zookeeper=zookeeper.hosts,
                    zk_root=root,
                    agent_id=agent_id,
                    zk_settings=settings,
                )
                text = text.replace(
                    "[zookeeper]\n",
                    f'state_dir = "{workdir / ("state-" + agent_id)}"\n\n'
                    "[zookeeper]\n"
                    + (f'discovery_root = "{root}-discovery"\n' if group else ""),
                    1,
                )
                texts[agent_id] = text
            files = open_files_for(count)
            agents = []
            for agent_id in ids:
                agent = Agent(
                    workdir, texts[agent_id], agent_id, path, open_files=files
                )
                running.callback(agent.stop)
                agent.wait_ready()
                agents.append(agent)
            reader = KazooClient(hosts=zookeeper.hosts, timeout=30.0)
            reader.start(timeout=10.0)

            def published() -> bool:
                try:
                    got = reader.get_children(f"{root}/instances")
                    members = reader.get_children(f"{root}-discovery") if group else []
                except NoNodeError:
                    return False
                return len(got) >= count and (not group or len(members) >= count)

            began = time.monotonic()
            wait_until(published, 300.0, "every node published", poll=1.0)
            rows.append(("published at start", f"{time.monotonic() - began:.0f} s"))
            services = [f"{root}-discovery/{n}" for n in names] if group else []
            rows.append(
                (
                    "settled at start (after the last agent answered)",
                    _settle_time(reader, agents, services, began, args.settle_limit),
                )
            )
            time.sleep(5.0)
            reader.stop()
            reader.close()
            rss_before = [a.rss_bytes() for a in agents]
            sampler = Sampler(agents, zookeeper)
            running.callback(sampler.stop)
            time.sleep(2.0)
            stopped = time.monotonic()
            zookeeper.stop()
            down = args.stop_down if case == "stop" else args.wipe_down
            if case != "stop":
                zookeeper.wipe()
            live, alive_ids = agents, ids
            if case == "wipe-kill":
                agents[-1].child.process.send_signal(signal.SIGKILL)
                agents[-1].child.process.wait(30.0)
                live, alive_ids = agents[:-1], ids[:-1]
            time.sleep(down)
            offsets = [a.log.stat().st_size for a in live]
            zookeeper.start()
            served = time.monotonic()
            served_ms = time.time() * 1000
            sweeper = Sweeper(zookeeper.hosts, root, names, group)
            running.callback(sweeper.stop)
            expected = count * (4 if group else 1) + len(live)

            def back() -> bool:
                return len(sweeper.seen) >= expected

            try:
                wait_until(back, BACK_TIMEOUT, "everything back", poll=0.5)
                everything = f"{time.monotonic() - served:.1f} s"
            except RuntimeError:
                everything = (
                    f"not in {BACK_TIMEOUT:g} s: {len(sweeper.seen)} of {expected}"
                )
            settled = _settle_time(
                sweeper._client, live, services, served, args.settle_limit
            )
            time.sleep(SETTLE)
            kinds = sweeper.ctimes(served_ms)
            lost, twice, downs = (
                set(sweeper.lost),
                set(sweeper.twice),
                set(sweeper.downs),
            )
            stats = [a.get("/debug/stats") for a in live]
            rss_after = [a.rss_bytes() for a in live]
            rows.append(("ZooKeeper away", f"{served - stopped:.1f} s"))
            rows.append(("everything back (sweeps), after served", everything))
            rows.append(("settled, after served", settled))
            rows += [
                (f"{k} back: count: p50 / max", _summary(v)) for k, v in kinds.items()
            ]
            if case == "wipe-kill":
                rows += _killed_rows(sweeper, names, live, offsets, served_ms / 1000)
            rows.append(
                (
                    "once back, then missing at a sweep (kind: count)",
                    ", ".join(
                        f"{k}: {sum(x.startswith(k) for x in lost)}"
                        for k in ("i/", "a/", "o/", "m/")
                    ),
                )
            )
            if group:
                rows.append(
                    (
                        "services listed twice at a sweep; most members at once",
                        f"{len(twice)}; {sweeper.most_members}",
                    )
                )
            rows.append(("healthy instances read down", str(len(downs))))
            rows.append(
                ("ZooKeeper transactions, after served", _write_rate(sampler, served))
            )
            rows.append(("sweeps (failed)", f"{sweeper.sweeps} ({sweeper.errors})"))
            rows += _health_rows(sampler, stopped, served, ids)
            for agent_id, stat, before, after in zip(
                alive_ids, stats, rss_before, rss_after, strict=False
            ):
                rows.append(
                    (
                        f"{agent_id}: replacements; writes_by_kind; RSS",
                        f"{_find(stat, 'client_replacements')}; "
                        f"{json.dumps(_find(stat, 'writes_by_kind'))}; "
                        f"{before / 2**20:.0f} -> {after / 2**20:.0f} MB",
                    )
                )
            sampler.stop()
            rows += _handover(
                running, sweeper, agents, workdir, texts, path, ids, files
            )
            sweeper.stop()
    finally:
        if args.keep_logs:
            print(f"logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return [(f"{label}: {name}", value) for name, value in rows]


def _killed_rows(
    sweeper: Sweeper,
    names: Sequence[str],
    live: Sequence[Agent],
    offsets: Sequence[int],
    served: float,
) -> list[tuple[str, str]]:
    """
    ``wipe-kill``: the instance nodes and discovery members back (first
    sweep that saw each), split by their primary in the view of three;
    each survivor's longest listing and its view without itself, from
    its log from ZooKeeper's return on (`served`, epoch seconds).
    """
    assignment = Assignment(2)
    assignment.set_known(names)
    assignment.update({a: frozenset(names) for a in GROUP})
    killed = [n for n in names if assignment.primary(n) == KILLED]
    others = [n for n in names if assignment.primary(n) != KILLED]
    seen = sweeper.first_seen
    rows = []
    for kind, prefix in (("instance nodes", "i/"), ("discovery members", "m/")):
        for whose, chosen in ((KILLED, killed), ("g0, g1", others)):
            times = [seen.get(prefix + n, float("inf")) for n in chosen]
            rows.append(
                (f"{kind} of {whose}'s first seen: count: p50 / max", _summary(times))
            )
    for agent, offset in zip(live, offsets, strict=True):
        lines = _log_lines(agent.log, offset, served)
        listings = [
            float(m.group(1))
            for _, text in lines
            if (m := re.search(r"listing \S+ took ([\d.]+) s", text))
        ]
        began = [t for t, text in lines if "until the group lists it again" in text]
        listed = [t for t, text in lines if "is listed again in its new" in text]
        gave_up = [t for t, text in lines if "not listed again within" in text]
        without = f"{listed[0] - began[0]:.0f} s" if began and listed else "none logged"
        longest = f"{max(listings):.1f} s" if listings else "none over 5 s"
        given_up = f"{gave_up[0]:.0f} s" if gave_up else "never"
        rows.append(
            (
                f"{agent.log.stem}: longest listing; view without itself;"
                " last view's members given up, after served",
                f"{longest}; {without}; {given_up}",
            )
        )
    return rows


def _log_lines(log: Path, offset: int, served: float) -> list[tuple[float, str]]:
    """An agent's log lines from `offset` on: seconds after `served`, text."""
    out = []
    with log.open("rb") as file:
        file.seek(offset)
        for raw in file:
            line = raw.decode("utf-8", "replace")
            try:
                at = datetime.strptime(line[:24], "%Y-%m-%dT%H:%M:%S%z").timestamp()
            except ValueError:
                continue
            out.append((at - served, line[24:]))
    return out


def _handover(
    running: ExitStack,
    sweeper: Sweeper,
    agents: list[Agent],
    workdir: Path,
    texts: dict[str, str],
    path: Path,
    ids: Sequence[str],
    files: int | None,
) -> list[tuple[str, str]]:
    """Restart the first agent on its state_dir: does it hand over?"""
    agent_id = ids[0]
    client = sweeper._client
    node = f"{sweeper.root}/agents/{agent_id}"
    owner = client.exists(node)
    state = json.loads(
        (workdir / f"state-{agent_id}" / "zookeeper-session.json").read_text()
    )
    file_session = _find(state, "session_id")
    owner_text = "none" if owner is None else f"{owner.ephemeralOwner:#x}"
    sweeper.lost.clear()
    agents[0].child.process.send_signal(signal.SIGTERM)
    agents[0].child.process.wait(30.0)
    second = Agent(
        workdir, texts[agent_id], f"{agent_id}-again", path, open_files=files
    )
    running.callback(second.stop)
    second.wait_ready()
    time.sleep(15.0)
    said = second.get("/debug/stats")
    lost = {x for x in sweeper.lost if x.startswith("i/")}
    return [
        (
            f"{agent_id} state file session / its agent node's owner",
            f"{file_session} / {owner_text}",
        ),
        (
            f"{agent_id} restarted: reattached; instance nodes missing",
            f"{_find(said, 'reattached')}; {len(lost)}",
        ),
    ]


def main() -> int:
    """Each shape through each case, each checkout in turn."""
    parser, args = parse_args()
    rows = [("machine", machine()), ("load average at start", load_average())]

    def run(
        args: argparse.Namespace, label: str, path: Path, number: int
    ) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for shape in args.shape.split(","):
            for case in args.cases.split(","):
                name = f"{label}-{shape}-{case}"
                out += scene(args, path, name, shape, case)
                out.append((f"{name}: load average", load_average()))
                print(f"{name} done", file=sys.stderr, flush=True)
        return out

    rows += rows_in_turns(parser, args, run)
    rows.append(("load average at the end", load_average()))
    print(table(rows, "ZooKeeper stopped (wiped or not) and started again"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

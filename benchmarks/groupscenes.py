"""
Group scenes with real agents (docs/groups.rst): a ZooKeeper pause, a
double fault, a primary's hang with discovery on.

``--agents`` real ``twistd -n sentinel`` agents (agent-0, agent-1, ...)
share ``--instances`` names on ``--servers`` redis-servers with
``--replicas`` and ``--quorum`` (0: the default), session timeout
``--session-timeout``, ``--discovery`` (serverset or none). Once every
node is written and ``--settle`` s have passed, a reader of its own takes
each node's holder (the agent whose session holds it) as its home, lists
``{root}/instances`` every ``--poll`` s (a node missing from a listing is
missing at that poll) and reads every node's status and holder every
``--read`` s. Scenes:

- ``zkpause``: ZooKeeper SIGSTOPped for ``--pause`` s, then SIGCONT;
  each agent's /healthz is asked every 0.5 s throughout;
- ``double``: agent-0 ``kill -9`` and, at the same moment, the first
  redis-server SIGSTOPped (``--redis-fault stop``) or killed
  (``kill``); after ``--pause`` s it is resumed (started again), and
  ``--back`` s later agent-0 is started again;
- ``hang``: agent-0 SIGSTOPped for ``--pause`` s, then SIGCONT.

Every instance is healthy but for the scene's faults: a node of a
healthy instance ever ``down`` is a false down, one held away from its
home a takeover.

    .venv/bin/python benchmarks/groupscenes.py --scene zkpause --pause 5 \\
        [--agents 3] [--instances 300] [--replicas 2] [--quorum 2] \\
        [--session-timeout 10] [--discovery none|serverset] [--watch 30] \\
        [--checkout LABEL=PATH]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
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
    wait_until,
)
from kazoo.client import KazooClient

ROOT = "/bench-groupscenes"
DISCOVERY = "/bench-groupscenes-discovery"


class Reader:
    """
    What readers of ZooKeeper see, on a thread of its own: which nodes a
    listing misses, and each node's status and holder over time.
    """

    def __init__(
        self, client: KazooClient, names: list[str], poll: float, read: float
    ) -> None:
        self.client = client
        self.names = names
        self.poll = poll
        self.read = read
        self.t0 = time.monotonic()
        # (seconds, names missing) of each listing that answered.
        self.listings: list[tuple[float, frozenset[str]]] = []
        # (seconds, {name: (status, holder)}) of each full reading.
        self.readings: list[tuple[float, dict[str, tuple[str | None, str | None]]]] = []
        # (seconds, {name: [holder of each member]}), with discovery.
        self.member_readings: list[tuple[float, dict[str, list[str]]]] = []
        self.discovery = False
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._list, daemon=True),
            threading.Thread(target=self._read, daemon=True),
        ]

    def now(self) -> float:
        return time.monotonic() - self.t0

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _list(self) -> None:
        expected = set(self.names)
        while not self._stop.is_set():
            try:
                present = self.client.get_children(f"{ROOT}/instances")
            except Exception:
                self._stop.wait(self.poll)
                continue
            self.listings.append((self.now(), frozenset(expected - set(present))))
            self._stop.wait(self.poll)

    def agents(self) -> dict[int, str]:
        """The agent id of each session holding an agent node."""
        agents = {}
        for agent in self.client.get_children(f"{ROOT}/agents"):
            stat = self.client.exists(f"{ROOT}/agents/{agent}")
            if stat is not None:
                agents[stat.ephemeralOwner] = agent
        return agents

    def state(self) -> dict[str, tuple[str | None, str | None]]:
        """Each node's status and holder's agent id now (None: missing)."""
        agents = self.agents()
        asked = [
            (n, self.client.get_async(f"{ROOT}/instances/{n}")) for n in self.names
        ]
        state: dict[str, tuple[str | None, str | None]] = {}
        for name, result in asked:
            try:
                data, stat = result.get(timeout=10)
            except Exception:
                state[name] = (None, None)
                continue
            status = json.loads(data).get("status")
            state[name] = (status, agents.get(stat.ephemeralOwner, "?"))
        return state

    def members(self) -> dict[str, list[str]]:
        """Each endpoint's discovery members, by the agent holding each."""
        agents = self.agents()
        listed = [
            (n, self.client.get_children_async(f"{DISCOVERY}/{n}")) for n in self.names
        ]
        asked = []
        for name, result in listed:
            try:
                children = result.get(timeout=10)
            except Exception:
                children = []
            for child in children:
                path = f"{DISCOVERY}/{name}/{child}"
                asked.append((name, self.client.exists_async(path)))
        held: dict[str, list[str]] = {n: [] for n in self.names}
        for name, result in asked:
            try:
                stat = result.get(timeout=10)
            except Exception:
                stat = None
            if stat is not None:
                held[name].append(agents.get(stat.ephemeralOwner, "?"))
        return held

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.readings.append((self.now(), self.state()))
                if self.discovery:
                    self.member_readings.append((self.now(), self.members()))
            except Exception:
                pass
            self._stop.wait(self.read)


class HealthSampler:
    """Each agent's /healthz every 0.5 s: (seconds, agent, code, reasons)."""

    def __init__(self, agents: dict[str, Agent], t0: float) -> None:
        self.agents = agents
        self.t0 = t0
        self.samples: list[tuple[float, str, int | None, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for agent_id, agent in list(self.agents.items()):
                t = time.monotonic() - self.t0
                try:
                    code, body = agent.healthz(timeout=2.0)
                    reasons = "; ".join(body.get("reasons", []))
                except Exception as e:
                    code, reasons = None, type(e).__name__
                self.samples.append((t, agent_id, code, reasons))
            self._stop.wait(0.5)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def summary(self, start: float, end: float) -> str:
        """Codes seen between `start` and `end`, and the first reason of each."""
        codes: dict[str, int] = {}
        reasons: list[str] = []
        for t, _, code, why in self.samples:
            if start <= t < end:
                codes[str(code)] = codes.get(str(code), 0) + 1
                if why and why[:60] not in reasons:
                    reasons.append(why[:60])
        shown = ", ".join(f"{c}: {n}" for c, n in sorted(codes.items()))
        return f"{shown or 'none'} | " + " / ".join(reasons[:3])

    def all_200_after(self, start: float) -> str:
        """
        Seconds after `start` from which every agent answered 200, and
        which agents did not meanwhile, with the first reason each gave.
        """
        last_bad = None
        why: dict[str, str] = {}
        for t, agent_id, code, reasons in self.samples:
            if t >= start and code != 200:
                last_bad = t
                why.setdefault(agent_id, f"{code} {reasons[:50]}")
        if last_bad is None:
            return "always"
        named = "; ".join(f"{a}: {w}" for a, w in sorted(why.items()))
        return f"{last_bad - start:.1f} s ({named})"


def run(args: argparse.Namespace, label: str, checkout: Path) -> list[tuple[str, str]]:
    """Servers, agents and the scene; what the reader saw."""
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)
    with ExitStack() as started, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        zookeeper, client = start_zookeeper(started)
        servers = start_redis_servers(args.servers, started)
        instances = [
            Instance(f"r{i:04d}", servers[i % len(servers)].port)
            for i in range(args.instances)
        ]
        names = [i.name for i in instances]
        load_at_start = load_average()
        settings: dict[str, float | int | str] = {
            "replicas": args.replicas,
            "session_timeout": args.session_timeout,
        }
        if args.quorum:
            settings["quorum"] = args.quorum
        if args.discovery != "none":
            settings["discovery"] = args.discovery
            settings["discovery_root"] = DISCOVERY
        configs = {
            f"agent-{a}": agent_config(
                instances,
                zookeeper=zookeeper.hosts,
                zk_root=ROOT,
                agent_id=f"agent-{a}",
                zk_settings=settings,
            )
            for a in range(args.agents)
        }

        def launch(agent_id: str, suffix: str = "") -> Agent:
            agent = Agent(
                workdir, configs[agent_id], f"{agent_id}{suffix}", pythonpath=checkout
            )
            started.callback(agent.stop)
            return agent

        agents = {agent_id: launch(agent_id) for agent_id in configs}
        for agent in agents.values():
            agent.wait_ready()
        reader = Reader(client, names, args.poll, args.read)
        reader.discovery = args.discovery != "none"

        def settled() -> bool:
            try:
                state = reader.state()
            except Exception:
                return False
            return all(s == "up" and h in agents for s, h in state.values())

        written = wait_until(settled, 300, "every node up", poll=0.5)
        time.sleep(args.settle)
        home = {n: h for n, (_, h) in reader.state().items()}
        victim = agents["agent-0"]
        observed = victim.instances()
        reader.start()
        health = HealthSampler(agents, reader.t0)
        time.sleep(2.0)
        rows: list[tuple[str, str]] = [
            (f"{label}: code", commit_of(checkout)),
            (
                f"{label}: scene",
                f"{args.scene}, pause {args.pause:g} s, R {args.replicas},"
                f" Q {args.quorum or 'default'}, session {args.session_timeout:g} s,"
                f" discovery {args.discovery}",
            ),
            (f"{label}: every node up after", f"{written:.1f} s"),
        ]
        dead: set[str] = set()
        event = reader.now()
        if args.scene == "zkpause":
            zookeeper.pause()
            time.sleep(args.pause)
            zookeeper.resume()
            healed = reader.now()
            time.sleep(args.watch)
            rows.append(
                (
                    f"{label}: /healthz during the pause",
                    health.summary(event, healed),
                )
            )
        elif args.scene == "hang":
            victim.child.pause()
            if args.hang_redis:
                dead = {i.name for i in instances if i.port == servers[0].port}
                servers[0].pause()
            time.sleep(args.pause)
            victim.child.resume()
            healed = reader.now()
            time.sleep(args.watch)
            if dead:
                rows += double_rows(label, reader, dead, observed, event, healed)
        else:
            faulty = servers[0]
            dead = {i.name for i in instances if i.port == faulty.port}
            victim.child.kill()
            if args.redis_fault == "stop":
                faulty.pause()
            else:
                faulty.kill()
            del health.agents["agent-0"]
            time.sleep(args.pause)
            if args.redis_fault == "stop":
                faulty.resume()
            else:
                faulty.start()
            healed = reader.now()
            time.sleep(args.back)
            back = reader.now()
            agents["agent-0"] = launch("agent-0", "-back")
            agents["agent-0"].wait_ready()
            health.agents["agent-0"] = agents["agent-0"]
            time.sleep(args.watch)
            rows += double_rows(label, reader, dead, observed, event, healed, back)
        reader.stop()
        health.stop()
        rows += common_rows(label, reader, home, dead, event, healed)
        if args.logs:
            Path(args.logs).mkdir(parents=True, exist_ok=True)
            for log in workdir.glob("*.log"):
                shutil.copy(log, Path(args.logs, f"{label}-{log.name}"))
            Path(args.logs, f"{label}-dead.txt").write_text("\n".join(sorted(dead)))
        rows.append(
            (f"{label}: /healthz all 200 after the heal", health.all_200_after(healed))
        )
        if args.discovery != "none":
            rows += member_rows(label, reader, home, dead, event, healed)
        rows.append(
            (f"{label}: load start / end", f"{load_at_start} / {load_average()}")
        )
        return rows


def common_rows(
    label: str,
    reader: Reader,
    home: dict[str, str | None],
    dead: set[str],
    event: float,
    healed: float,
) -> list[tuple[str, str]]:
    """Missing nodes, false downs and nodes away from home, after the event."""
    missing_polls = [(t, m) for t, m in reader.listings if t >= event and m]
    longest: dict[str, float] = {}
    since: dict[str, float] = {}
    for t, m in reader.listings:
        for name in m:
            since.setdefault(name, t)
        for name in list(since):
            if name not in m:
                longest[name] = max(longest.get(name, 0.0), t - since.pop(name))
    false_downs = {
        n
        for t, state in reader.readings
        if t >= event
        for n, (status, _) in state.items()
        if status == "down" and n not in dead
    }
    away = {
        n
        for t, state in reader.readings
        if t >= event
        for n, (_, holder) in state.items()
        if holder is not None and holder != home.get(n)
    }
    last_wrong = event
    for t, state in reader.readings:
        wrong = any(
            status != "up" or holder != home.get(n)
            for n, (status, holder) in state.items()
            if n not in dead
        )
        if wrong:
            last_wrong = t
    polls_after = sum(1 for t, _ in reader.listings if t >= event)
    healthy = {n: s for n, s in longest.items() if n not in dead}
    downed = {n: s for n, s in longest.items() if n in dead}
    return [
        (
            f"{label}: polls missing a node (of {polls_after})",
            f"{len(missing_polls)}; healthy {len(healthy)} node(s), longest "
            f"{max(healthy.values(), default=0.0):.2f} s; dead {len(downed)},"
            f" longest {max(downed.values(), default=0.0):.2f} s",
        ),
        (f"{label}: healthy nodes ever down", str(len(false_downs))),
        (f"{label}: healthy nodes ever held away from home", str(len(away))),
        (
            f"{label}: every healthy node up and home, after the heal",
            f"{max(0.0, last_wrong - healed):.1f} s",
        ),
    ]


def double_rows(
    label: str,
    reader: Reader,
    dead: set[str],
    observed: dict[str, dict[str, Any]],
    event: float,
    healed: float,
    back: float | None = None,
) -> list[tuple[str, str]]:
    """When the dead server's instances went down, and came back up."""
    rows = []
    for role in ("primary", "observer", None):
        group = {n for n in dead if (observed.get(n) or {}).get("observing_as") == role}
        if not group:
            continue
        down_at: dict[str, float] = {}
        up_after_down = set()
        up_at: dict[str, float] = {}
        for t, state in reader.readings:
            for n in group:
                status = state[n][0]
                if event <= t < healed:
                    if status == "down":
                        down_at.setdefault(n, t - event)
                    elif n in down_at and status == "up":
                        up_after_down.add(n)
                elif t >= healed and status == "up":
                    up_at.setdefault(n, t - healed)
        what = f"agent-0 {role}" if role else "agent-0 not an observer"
        downs = sorted(down_at.values())
        rows.append(
            (
                f"{label}: {len(group)} dead, {what}: down after the fault",
                f"{len(downs)} of {len(group)}, "
                + (f"{downs[0]:.1f}--{downs[-1]:.1f} s" if downs else "--")
                + f"; up again before the heal {len(up_after_down)}",
            )
        )
        ups = sorted(up_at.values())
        rows.append(
            (
                f"{label}: {what}: up after the heal",
                f"{len(ups)}, " + (f"{ups[0]:.1f}--{ups[-1]:.1f} s" if ups else "--"),
            )
        )
    if back is not None:
        rows.append(
            (
                f"{label}: agent-0 started again at",
                f"{back - healed:.1f} s after the heal",
            )
        )
    return rows


def member_rows(
    label: str,
    reader: Reader,
    home: dict[str, str | None],
    dead: set[str],
    event: float,
    healed: float,
) -> list[tuple[str, str]]:
    """
    Healthy endpoints listed by no member or by several after the event,
    and when each was last listed by another member than its node's home's.
    """
    unlisted: set[str] = set()
    unlisted_at: list[float] = []
    twice: set[str] = set()
    last_away: dict[str, float] = {}
    for t, held in reader.member_readings:
        if t < event:
            continue
        for name, holders in held.items():
            if name in dead:
                continue
            if not holders:
                unlisted.add(name)
                unlisted_at.append(t - event)
            elif len(holders) > 1:
                twice.add(name)
            if holders != [home.get(name)]:
                last_away[name] = t
    after = sorted(t - healed for t in last_away.values() if t >= healed)
    end = reader.member_readings[-1][1] if reader.member_readings else {}
    still = sum(1 for n, h in end.items() if n not in dead and h != [home.get(n)])
    return [
        (
            f"{label}: healthy endpoints ever unlisted / listed twice",
            f"{len(unlisted)} / {len(twice)} ({len(reader.member_readings)} readings)"
            + (
                f"; unlisted {min(unlisted_at):.1f}--{max(unlisted_at):.1f} s"
                f" after the event (the heal at {healed - event:.1f} s)"
                if unlisted_at
                else ""
            ),
        ),
        (
            f"{label}: members not the home agent's after the heal",
            f"{len(after)}, the last "
            + (f"{after[-1]:.1f} s after the heal" if after else "--")
            + f"; at the end {still}",
        ),
    ]


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--scene", choices=("zkpause", "double", "hang"), required=True)
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--servers", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--quorum", type=int, default=0)
    parser.add_argument("--session-timeout", type=float, default=10.0)
    parser.add_argument("--discovery", choices=("none", "serverset"), default="none")
    parser.add_argument("--redis-fault", choices=("stop", "kill"), default="stop")
    parser.add_argument(
        "--hang-redis",
        action="store_true",
        help="hang: the first redis-server SIGSTOPped with agent-0, for good",
    )
    parser.add_argument("--pause", type=float, default=5.0)
    parser.add_argument("--back", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--watch", type=float, default=30.0)
    parser.add_argument("--logs", help="copy the agents' logs to this directory")
    parser.add_argument("--poll", type=float, default=0.03)
    parser.add_argument("--read", type=float, default=0.25)
    add_checkout_option(parser)
    args = parser.parse_args()
    rows: list[tuple[str, str]] = []
    for label, checkout in checkouts_of(parser, args.checkout):
        rows += run(args, label, checkout)
    print(table(rows, f"group scenes ({machine()})"))


if __name__ == "__main__":
    main()

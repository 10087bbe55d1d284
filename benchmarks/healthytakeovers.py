"""
Takeovers of healthy primaries' nodes (docs/groups.rst, "Primaries slow
to write"): does load, scale or a ZooKeeper slow for everyone make a
secondary take over nodes whose primary is healthy?

``--agents`` real ``twistd -n sentinel`` agents, each with a state_dir,
share ``--instances`` names on 4 healthy redis-servers with
``zookeeper.replicas`` ``--replicas``, started at once. A reader of its
own reads every instance node's holding session every ``--poll`` s and
maps it to the agent whose session it is (``{root}/agents``). Scenes,
each after the group settled and a baseline of which agent holds which
node was taken:

- ``start``: nothing more, for ``--watch`` s;
- ``rolling``: each agent in turn is stopped (SIGTERM) and started again
  on its state_dir, the next once the restarted one answers;
- ``zkstop``: ZooKeeper is stopped (SIGSTOP) for ``--pause`` s, then
  resumed.

Figures: the nodes ever held by another agent than at the baseline (and
the most at once, and when the last came home), the takeovers the
agents logged (``sentinel.covers``: "... have not said this agent's
opinion ..."), and the /healthz answers naming late primary members.
Every instance is healthy throughout: any takeover is the wrong one.

    .venv/bin/python benchmarks/healthytakeovers.py [--agents 3] \\
        [--instances 3000] [--replicas 2] [--scene start|rolling|zkstop] \\
        [--pause 12] [--watch 60] [--checkout LABEL=PATH] \\
        [--agent agent-0=PATH]

``--agent agent-N=PATH`` runs that agent from another checkout (an older
version: a mixed group).
"""

from __future__ import annotations

import argparse
import re
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from common import (
    Agent,
    Instance,
    add_agent_checkout_option,
    add_checkout_option,
    agent_checkout,
    agent_config,
    checkouts_of,
    commit_of,
    load_average,
    machine,
    open_files_for,
    start_redis_servers,
    start_zookeeper,
    stop_on_sigterm,
    table,
    wait_until,
)
from kazoo.client import KazooClient

ROOT = "/bench-healthytakeovers"
TAKEN = re.compile(r"group: (\d+) verdict\(s\) held by their listed primary")
LATE = "primary member(s) whose verdicts have not said"


class Holders:
    """Which agent holds each instance node, polled on a thread of its own."""

    def __init__(self, client: KazooClient, names: list[str], poll: float) -> None:
        self.client = client
        self.names = names
        self.poll = poll
        self.home: dict[str, str] = {}
        self.away_ever: set[str] = set()
        self.most_away = 0
        self.last_away_at: float | None = None
        self.polls = 0
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def holders(self) -> dict[str, str | None]:
        """Each node's holder, by agent id (None: missing or unknown)."""
        agents = {}
        for agent in self.client.get_children(f"{ROOT}/agents"):
            stat = self.client.exists(f"{ROOT}/agents/{agent}")
            if stat is not None:
                agents[stat.ephemeralOwner] = agent
        asked = [
            (n, self.client.exists_async(f"{ROOT}/instances/{n}")) for n in self.names
        ]
        held: dict[str, str | None] = {}
        for name, result in asked:
            try:
                stat = result.get(timeout=30)
            except Exception:
                stat = None
            held[name] = None if stat is None else agents.get(stat.ephemeralOwner)
        return held

    def baseline(self) -> None:
        """The holders now are each node's home."""
        self.home = {n: a for n, a in self.holders().items() if a is not None}

    def start(self) -> None:
        self.t0 = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                held = self.holders()
            except Exception:
                time.sleep(self.poll)
                continue
            self.polls += 1
            away = {
                n
                for n, a in held.items()
                if a is not None and n in self.home and a != self.home[n]
            }
            self.away_ever |= away
            self.most_away = max(self.most_away, len(away))
            if away:
                self.last_away_at = time.monotonic() - self.t0
            self._stop.wait(self.poll)


def run(args: argparse.Namespace, label: str, checkout: Path) -> list[tuple[str, str]]:
    with ExitStack() as started, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        zookeeper, client = start_zookeeper(started)
        servers = start_redis_servers(4, started)
        instances = [
            Instance(f"r{i:05d}", servers[i % len(servers)].port)
            for i in range(args.instances)
        ]
        load_at_start = load_average()
        agents: list[Agent] = []
        configs: list[str] = []
        for a in range(args.agents):
            state = workdir / f"state-{a}"
            state.mkdir()
            config = f'state_dir = "{state}"\n' + agent_config(
                instances,
                zookeeper=zookeeper.hosts,
                zk_root=ROOT,
                agent_id=f"agent-{a}",
                zk_settings={"replicas": args.replicas},
            )
            configs.append(config)
        start = time.monotonic()

        def launch(a: int, suffix: str = "") -> Agent:
            agent = Agent(
                workdir,
                configs[a],
                label=f"agent-{a}{suffix}",
                pythonpath=agent_checkout(args, f"agent-{a}", checkout),
                open_files=open_files_for(args.instances),
            )
            started.callback(agent.stop)
            return agent

        agents = [launch(a) for a in range(args.agents)]
        names = [i.name for i in instances]

        def all_there() -> bool:
            stat = client.exists(f"{ROOT}/instances")
            return stat is not None and stat.numChildren >= args.instances

        written = wait_until(all_there, 600, "every instance node")
        time.sleep(args.settle)
        holders = Holders(client, names, args.poll)
        holders.baseline()
        # The start scene counts the takeovers of the start too.
        logged_before = [
            0 if args.scene == "start" else taken_logged(agent.log) for agent in agents
        ]
        late_answers = 0
        answers = 0
        holders.start()
        if args.scene == "rolling":
            for a in range(args.agents):
                agents[a].stop()
                agents[a] = launch(a, f"-r{a}")
                agents[a].wait_ready(timeout=120)
                time.sleep(args.between)
        elif args.scene == "zkstop":
            zookeeper.pause()
            time.sleep(args.pause)
            zookeeper.resume()
        deadline = time.monotonic() + args.watch
        while time.monotonic() < deadline:
            for agent in agents:
                try:
                    code, body = agent.healthz()
                except OSError:
                    continue
                answers += 1
                late_answers += LATE in str(body)
            time.sleep(1.0)
        holders.stop()
        logs = sorted(workdir.glob("agent-*.log"))
        logged = sum(taken_logged(p) for p in logs) - sum(logged_before)
        came_home = (
            "never away"
            if holders.last_away_at is None
            else f"{holders.last_away_at:.1f} s"
        )
        return [
            (f"{label}: code", commit_of(checkout)),
            (f"{label}: load start / end", f"{load_at_start} / {load_average()}"),
            (f"{label}: every node written after", f"{written:.1f} s"),
            (f"{label}: scene, watch", f"{args.scene}, {args.watch:g} s"),
            (
                f"{label}: nodes held away from home (ever / most at once)",
                f"{len(holders.away_ever)} / {holders.most_away} of "
                f"{len(holders.home)} ({holders.polls} polls)",
            ),
            (f"{label}: last poll with a node away", came_home),
            (f"{label}: takeovers logged (all agents)", str(logged)),
            (
                f"{label}: /healthz naming late primaries",
                f"{late_answers} of {answers}",
            ),
            (f"{label}: seconds since start", f"{time.monotonic() - start:.0f}"),
        ]


def taken_logged(log: Path) -> int:
    """The takeovers an agent's log says it began (`sentinel.covers`)."""
    return sum(int(m.group(1)) for m in TAKEN.finditer(log.read_text()))


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--instances", type=int, default=3000)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--scene", choices=("start", "rolling", "zkstop"))
    parser.add_argument("--pause", type=float, default=12.0)
    parser.add_argument("--settle", type=float, default=20.0)
    parser.add_argument("--between", type=float, default=5.0)
    parser.add_argument("--watch", type=float, default=60.0)
    parser.add_argument("--poll", type=float, default=1.0)
    add_checkout_option(parser)
    add_agent_checkout_option(parser)
    args = parser.parse_args()
    args.scene = args.scene or "start"
    rows: list[tuple[str, str]] = []
    for label, checkout in checkouts_of(parser, args.checkout):
        rows += run(args, label, checkout)
    print(table(rows, f"healthy takeovers ({machine()})"))


if __name__ == "__main__":
    main()

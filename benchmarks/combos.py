"""
Two faults at once, against real agents: what readers of ZooKeeper see.

Real ``twistd -n sentinel`` agents, real redis-servers and a real
ZooKeeper of the script's own, all on 127.0.0.1. Each case stacks two
faults an unlucky operator meets together; from the first fault on, a
reader polls ZooKeeper every ``--poll`` seconds (0.2) and every agent's
``/healthz`` with it, and prints each change it sees (instance nodes:
status and writer; agent nodes: the instances they list; discovery
members per service), then a verdict against the contract: the nodes
and members exactly the last config's, all up, and every sample where
ZooKeeper served a view that was wrong while each agent's ``/healthz``
said 200.

Cases (``--cases``, all by default):

- ``reload-down-wiped``: one agent, serverset discovery; ZooKeeper
  stopped, a ``SIGHUP`` reload that removes two instances and adds two,
  ZooKeeper started again with its data directory removed.
- ``reload-down-kept``: the same, ZooKeeper started again with its data
  (the agent's session, and the removed instances' nodes, come back).
- ``handover-frozen``: one agent with a ``state_dir``; ZooKeeper
  SIGSTOPped, the agent restarted (SIGTERM, start), ZooKeeper resumed
  ``--frozen`` seconds (15) later, past the session timeout (10).
- ``handover-hung``: the same restart with ZooKeeper answering and one
  Redis SIGSTOPped (hung) across it.
- ``failover-restart``: a primary and its replica (nerve discovery, the
  role among a member's labels); while the agent is restarting
  (``state_dir``), the replica is promoted and the old primary made its
  replica.
- ``group-reload``: three agents, ``replicas = 2``; one SIGSTOPped, another
  reloads a config that drops half the instances.
- ``group-reload-wiped``: three agents, ``replicas = 2``, one knowing half
  the instances; ZooKeeper stopped, the other two reload a config without
  the other half (no agent knows it any more), ZooKeeper started wiped.

Bounded: every wait has a deadline, every case ends within about a
minute; every process started is stopped by PID at the end::

    PYTHONPATH=. .venv/bin/python benchmarks/combos.py [--cases a,b] \
        [--checkout before=PATH --checkout after=.] [--keep]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    LOOPBACK,
    Agent,
    Instance,
    ZooKeeperServer,
    add_checkout_option,
    agent_config,
    checkouts_of,
    load_average,
    start_redis_servers,
    stop_on_sigterm,
    wait_until,
)
from kazoo.client import KazooClient

ROOT = "/sentinel"
DISCOVERY = "/discovery"
SESSION_TIMEOUT = 10.0
CASES = (
    "reload-down-wiped",
    "reload-down-kept",
    "handover-frozen",
    "handover-hung",
    "failover-restart",
    "group-reload",
    "group-reload-wiped",
)

Sample = dict[str, Any]


class Reader:
    """A kazoo client of its own reading the tree; a new one per ZooKeeper start."""

    def __init__(self, hosts: str) -> None:
        self.hosts = hosts
        self.client: KazooClient | None = None

    def renew(self) -> None:
        """Drop the client (a wiped ZooKeeper refuses it); the next read makes one."""
        self.close()

    def close(self) -> None:
        """Stop and close the client, if any."""
        if self.client is not None:
            self.client.stop()
            self.client.close()
            self.client = None

    def _children(self, path: str) -> list[str]:
        assert self.client is not None
        if self.client.exists_async(path).get(timeout=1.0) is None:
            return []
        return list(self.client.get_children_async(path).get(timeout=1.0))

    def _data(self, path: str) -> Any:
        assert self.client is not None
        try:
            return json.loads(self.client.get_async(path).get(timeout=1.0)[0])
        except Exception:  # deleted between the listing and the read
            return None

    def sample(self) -> Sample | None:
        """The tree now, or None when ZooKeeper does not answer."""
        try:
            if self.client is None:
                self.client = KazooClient(hosts=self.hosts, timeout=5.0)
                self.client.start(timeout=1.0)
            nodes = {}
            for name in self._children(f"{ROOT}/instances"):
                data = self._data(f"{ROOT}/instances/{name}")
                if data is not None:
                    nodes[name] = f"{data['status']}/{data['role']}@{data['agent']}"
            agents = {}
            for agent in self._children(f"{ROOT}/agents"):
                data = self._data(f"{ROOT}/agents/{agent}")
                if data is not None:
                    agents[agent] = sorted(data["instances"])
            members: dict[str, Any] = {}
            for service in self._children(DISCOVERY):
                children = self._children(f"{DISCOVERY}/{service}")
                members[service] = len(children)
                for child in children:
                    data = self._data(f"{DISCOVERY}/{service}/{child}")
                    role = (data or {}).get("labels", {}).get("role")
                    if role is not None:
                        members[f"{service}.role"] = role
            return {"nodes": nodes, "agents": agents, "members": members}
        except Exception:
            self.close()
            return None


class Watch:
    """
    Polls the reader and the agents' /healthz, prints each change with its
    time since the first fault, and judges each sample against `expected`.
    """

    def __init__(self, reader: Reader, agents: dict[str, Agent], poll: float):
        self.reader = reader
        self.agents = agents
        self.poll = poll
        self.started = time.monotonic()
        self.last: dict[str, Any] = {}
        self.samples = 0
        self.silent_wrong = 0  # ZooKeeper served a wrong view, every /healthz 200
        self.first_silent: str | None = None
        self.right_since: float | None = None

    def health(self) -> dict[str, str]:
        """Each agent's /healthz, as a code and its first reasons."""
        out = {}
        for label, agent in self.agents.items():
            if not agent.child.running:
                out[label] = "exited"
                continue
            try:
                # A paused agent must not stall the poll.
                code, body = agent.healthz(timeout=1.0)
            except Exception as e:  # a paused agent does not answer
                out[label] = f"no answer ({type(e).__name__})"
                continue
            reasons = "; ".join(str(r)[:70] for r in body.get("reasons", []))
            out[label] = f"{code} {reasons}".strip()
        return out

    def run(self, seconds: float, expected: Callable[[Sample], list[str]]) -> None:
        """Sample every `poll` s for `seconds`; print changes and wrong views."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            began = time.monotonic()
            tree = self.reader.sample()
            health = self.health()
            now = began - self.started
            self.samples += 1
            current = {"tree": tree, "health": health}
            for key in ("tree", "health"):
                if current[key] != self.last.get(key):
                    print(f"  {now:6.1f}s {key}: {json.dumps(current[key])}")
            self.last = current
            wrong = ["zookeeper unreadable"] if tree is None else expected(tree)
            if wrong:
                self.right_since = None
                if tree is not None and all(
                    h.startswith("200") for h in health.values()
                ):
                    self.silent_wrong += 1
                    if self.first_silent is None:
                        self.first_silent = f"{now:.1f}s: {'; '.join(wrong)}"
            elif self.right_since is None:
                self.right_since = now
            time.sleep(max(0.0, self.poll - (time.monotonic() - began)))

    def mark(self, what: str) -> None:
        """Print an event of the case at its time."""
        print(f"  {time.monotonic() - self.started:6.1f}s == {what}")

    def verdict(self, case: str) -> str:
        """One line: right at the end since when, and the silent wrong samples."""
        right = "never" if self.right_since is None else f"{self.right_since:.1f}s"
        return (
            f"{case}: right (and kept) from {right}; {self.samples} samples, "
            f"{self.silent_wrong} wrong with every /healthz 200"
            + ("" if self.first_silent is None else f" (first {self.first_silent})")
            + f"; load {load_average()}"
        )


def expect(
    names: Sequence[str],
    agents: Sequence[str],
    *,
    members: bool = True,
    roles: dict[str, str] | None = None,
    writers: dict[str, str] | None = None,
    extra: Sequence[str] = (),
) -> Callable[[Sample], list[str]]:
    """
    What the contract promises once settled: these nodes, up, and no others;
    `extra` nodes must be there too, whatever they say.
    """
    wanted = set(names)

    def wrong(tree: Sample) -> list[str]:
        out = []
        nodes = {n: v for n, v in tree["nodes"].items() if n not in extra}
        if set(extra) - set(tree["nodes"]):
            out.append(f"missing {sorted(set(extra) - set(tree['nodes']))}")
        if set(nodes) != wanted:
            stale, missing = set(nodes) - wanted, wanted - set(nodes)
            out.append(f"nodes stale {sorted(stale)} missing {sorted(missing)}")
        out += [f"{n} {v}" for n, v in sorted(nodes.items()) if not v.startswith("up")]
        for name, role in (roles or {}).items():
            if name in nodes and f"/{role}@" not in nodes[name]:
                out.append(f"{name} role {nodes[name]}")
            said = tree["members"].get(f"{name}.role")
            if said is not None and said != role:
                out.append(f"{name}'s member says {said}")
        for name, writer in (writers or {}).items():
            if name in nodes and not nodes[name].endswith(f"@{writer}"):
                out.append(f"{name} written by {nodes[name]}")
        if set(tree["agents"]) != set(agents):
            out.append(f"agents {sorted(tree['agents'])}")
        listed = {n for v in tree["agents"].values() for n in v}
        if listed != wanted | set(extra) and len(agents) == 1:
            out.append(f"agent node lists {sorted(listed)}")
        # A service left with no member (its instance removed) is empty, not stale.
        served = {
            s for s, count in tree["members"].items() if count and ".role" not in s
        }
        if members and (
            served - wanted or any(tree["members"].get(n, 0) != 1 for n in wanted)
        ):
            out.append(f"members {tree['members']}")
        return out

    return wrong


def config(
    names: Sequence[str],
    ports: dict[str, int],
    hosts: str,
    agent_id: str,
    state_dir: Path | None = None,
    **zookeeper: Any,
) -> str:
    """An agent's TOML: each instance its own discovery service."""
    settings = {
        "session_timeout": SESSION_TIMEOUT,
        "discovery": "serverset",
        "discovery_root": DISCOVERY,
        **zookeeper,
    }
    text = agent_config(
        [Instance(n, ports[n]) for n in names],
        zookeeper=hosts,
        zk_root=ROOT,
        agent_id=agent_id,
        zk_settings=settings,
    )
    if state_dir is not None:
        text = f'state_dir = "{state_dir}"\n' + text
    return text


def settle(
    reader: Reader, wrong: Callable[[Sample], list[str]], timeout: float
) -> None:
    """Wait until the tree is what the case starts from."""

    def right() -> bool:
        tree = reader.sample()
        return tree is not None and not wrong(tree)

    wait_until(right, timeout, "the starting view", poll=0.2)


def redis_cli(port: int, *command: str) -> str:
    """One command through redis-cli (bounded)."""
    return subprocess.run(
        ["redis-cli", "-h", LOOPBACK, "-p", str(port), *command],
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    ).stdout.strip()


def run_case(case: str, args: argparse.Namespace, workdir: Path, checkout: Path) -> str:
    """One case on servers of its own; every process stopped by PID after."""
    with ExitStack() as started:
        zookeeper = ZooKeeperServer()
        started.callback(zookeeper.close)
        zookeeper.start()
        reader = Reader(zookeeper.hosts)
        started.callback(reader.close)
        servers = start_redis_servers(6, started)
        names = [f"i{k}" for k in range(6)]
        ports = {n: s.port for n, s in zip(names, servers, strict=True)}
        state = workdir / f"{case}-state"
        state.mkdir()
        agents: dict[str, Agent] = {}

        def start(label: str, members: Sequence[str], **more: Any) -> Agent:
            old = agents.get(label)
            if old is not None:
                old.child.stop()
            agent = Agent(
                workdir,
                config(members, ports, zookeeper.hosts, label, **more),
                label=label,
                pythonpath=checkout,
            )
            started.callback(agent.stop)
            agents[label] = agent
            agent.wait_ready()
            return agent

        print(f"{case} (load {load_average()}):")
        if case.startswith("reload-down"):
            old, new = names[:4], names[2:]
            agent = start("a", old)
            settle(reader, expect(old, ["a"]), 60)
            watch = Watch(reader, agents, args.poll)
            zookeeper.stop()
            watch.mark("ZooKeeper stopped")
            agent.config_path.write_text(config(new, ports, zookeeper.hosts, "a"))
            os.kill(agent.pid, signal.SIGHUP)
            watch.mark("SIGHUP: i0, i1 removed; i4, i5 added")
            watch.run(3.0, expect(new, ["a"]))
            if case.endswith("wiped"):
                zookeeper.wipe()
            zookeeper.start()
            reader.renew()
            watch.mark(f"ZooKeeper started ({case.rsplit('-', 1)[1]})")
            watch.run(args.after, expect(new, ["a"]))
        elif case.startswith("handover"):
            agent = start("a", names, state_dir=state)
            settle(reader, expect(names, ["a"]), 60)
            watch = Watch(reader, agents, args.poll)
            right = expect(names, ["a"])
            if case == "handover-frozen":
                zookeeper._child.pause()  # type: ignore[union-attr]
                watch.mark("ZooKeeper SIGSTOPped")
            else:
                servers[0]._child.pause()  # type: ignore[union-attr]
                watch.mark("i0's redis SIGSTOPped (hung)")
                # i0 is down once judged (fall checks), its member gone: that is right.
                right = expect(names[1:], ["a"], members=False, extra=["i0"])
            watch.run(2.0, right)
            status = agent.child.stop()
            watch.mark(f"agent SIGTERMed, exit {status}")
            start("a", names, state_dir=state)
            watch.mark("agent started again on its state_dir")
            if case == "handover-frozen":
                frozen_for = time.monotonic() - watch.started
                watch.run(max(0.0, args.frozen - frozen_for), right)
                zookeeper._child.resume()  # type: ignore[union-attr]
                watch.mark("ZooKeeper SIGCONTed")
                watch.run(args.after, right)
            else:
                watch.run(8.0, right)
                servers[0]._child.resume()  # type: ignore[union-attr]
                watch.mark("i0's redis SIGCONTed")
                watch.run(args.after, expect(names, ["a"]))
        elif case == "failover-restart":
            primary, replica = servers[0], servers[1]
            redis_cli(replica.port, "REPLICAOF", LOOPBACK, str(primary.port))
            pair = ["i0", "i1"]
            wait_until(
                lambda: "link_status:up" in redis_cli(replica.port, "INFO"),
                20,
                "the replica in sync",
            )
            agent = start("a", pair, state_dir=state, discovery="nerve")
            before = expect(pair, ["a"], roles={"i0": "master", "i1": "slave"})
            settle(reader, before, 60)
            watch = Watch(reader, agents, args.poll)
            status = agent.child.stop()
            watch.mark(f"agent SIGTERMed, exit {status}")
            redis_cli(replica.port, "REPLICAOF", "NO", "ONE")
            redis_cli(primary.port, "REPLICAOF", LOOPBACK, str(replica.port))
            watch.mark("i1 promoted, i0 made its replica")
            after = expect(pair, ["a"], roles={"i0": "slave", "i1": "master"})
            watch.run(1.0, after)
            start("a", pair, state_dir=state, discovery="nerve")
            watch.mark("agent started again on its state_dir")
            watch.run(args.after, after)
        elif case == "group-reload":
            labels = ["g0", "g1", "g2"]
            for label in labels:
                start(label, names, replicas=2)
            settle(reader, expect(names, labels), 90)
            watch = Watch(reader, agents, args.poll)
            agents["g2"].child.pause()
            watch.mark("g2 SIGSTOPped")
            agents["g0"].config_path.write_text(
                config(names[:3], ports, zookeeper.hosts, "g0", replicas=2)
            )
            os.kill(agents["g0"].pid, signal.SIGHUP)
            watch.mark("g0 reloaded with i0..i2 only")
            watch.run(args.after, expect(names, ["g0", "g1"]))
            agents["g2"].child.resume()
            watch.mark("g2 SIGCONTed")
            watch.run(15.0, expect(names, labels))
        elif case == "group-reload-wiped":
            labels = ["g0", "g1", "g2"]
            for label in labels:
                start(label, names[:3] if label == "g2" else names, replicas=2)
            settle(reader, expect(names, labels), 90)
            watch = Watch(reader, agents, args.poll)
            zookeeper.stop()
            watch.mark("ZooKeeper stopped")
            for label in ("g0", "g1"):
                agents[label].config_path.write_text(
                    config(names[:3], ports, zookeeper.hosts, label, replicas=2)
                )
                os.kill(agents[label].pid, signal.SIGHUP)
            watch.mark("g0, g1 reloaded with i0..i2 only: i3..i5 removed")
            watch.run(3.0, expect(names[:3], labels))
            zookeeper.wipe()
            zookeeper.start()
            reader.renew()
            watch.mark("ZooKeeper started (wiped)")
            watch.run(args.after, expect(names[:3], labels))
        else:
            raise ValueError(case)
        for label, agent in agents.items():
            if not agent.child.running:
                continue
            stats = agent.get("/debug/stats")
            print(
                f"  {label}: pending {stats['pending_checks']}, delayed "
                f"{stats['delayed_calls']}, fds {stats['open_fds']}, rss "
                f"{stats['rss_bytes'] / 2**20:.0f} MiB"
            )
        return watch.verdict(case)


def main() -> None:
    """Parse options and run each case in turn."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--poll", type=float, default=0.2, help="seconds (0.2)")
    parser.add_argument("--after", type=float, default=25.0, help="watched (25 s)")
    parser.add_argument("--frozen", type=float, default=15.0, help="SIGSTOP (15 s)")
    parser.add_argument("--keep", action="store_true", help="keep the logs")
    add_checkout_option(parser)
    args = parser.parse_args()
    cases = args.cases.split(",")
    checkouts = checkouts_of(parser, args.checkout)
    # A case named again runs again (``--cases a,a,a``).
    unknown = set(cases) - set(CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; known: {', '.join(CASES)}")
    stop_on_sigterm()
    # kazoo logs every refused connection of the reader's while ZooKeeper is away.
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)
    verdicts = []
    workdir = Path(tempfile.mkdtemp(prefix="combos-"))
    try:
        for label, checkout in checkouts:
            for index, case in enumerate(cases):
                run_dir = workdir / label / f"{index}-{case}"
                run_dir.mkdir(parents=True)
                print(f"[{label}] ", end="")
                verdict = run_case(case, args, run_dir, checkout)
                verdicts.append(f"[{label}] {verdict}")
    finally:
        if args.keep:
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print()
    for line in verdicts:
        print(line)


if __name__ == "__main__":
    main()

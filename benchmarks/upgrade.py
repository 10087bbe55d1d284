"""
Old and new agents together (docs/operations.rst, "Upgrades and downgrades").

Each ``--checkout LABEL=PATH`` is a version of the agent (a checkout of an
older commit: ``git worktree add --detach ../old <commit>``); ``this`` is
this checkout. Everything runs on real servers: a ZooKeeper, redis-servers
on 127.0.0.1, ``twistd -n sentinel`` agents.

``handoff FROM TO``: an agent of version FROM (state_dir, serverset
members, ``--replicas`` with a helper member of version TO beside it, so
that it writes opinions and a catalog) is stopped with SIGTERM (or
``--signal kill``) and one of version TO started at once on the same
state_dir. A reader polls ZooKeeper every 20 ms: the longest time an
instance node, the agent node or a member was missing, the most members
at once, whether the new process reattached (its log), and what is left
``--linger`` s later of a session no live agent holds (opinions,
catalogs, members, instance nodes), and any traceback in either log.

``rolling FROM TO``: ``--agents`` agents of version FROM share
``--instances`` instances with ``--replicas``; one at a time each is
stopped (SIGTERM) and started again as version TO on its state_dir, while
a redis-server (its share of the instances) is down; midway one agent is
killed (``kill -9``) and started again. A reader polls every instance
node: missing polls, false downs (a node saying down while its server has
been up for ``--grace`` s) and false ups (the reverse), and every agent's
``/healthz`` is read once a second (503 answers and their reasons).

``takeover OLD NEW``: an agent of version NEW started while one of
version OLD still runs on the same state_dir (a deploy that starts the
new before stopping the old): whether the older learns that it was
superseded and exits, how often each connected to the session (they take
it from each other otherwise), how often an instance node was written,
and the newer's ``/healthz`` ``--linger`` s later.

    .venv/bin/python benchmarks/upgrade.py handoff old this \\
        --checkout old=../old --checkout this=.
    .venv/bin/python benchmarks/upgrade.py rolling old this \\
        --checkout old=../old --checkout this=. [--instances 300] [--replicas 2]
"""

from __future__ import annotations

import argparse
import functools
import json
import signal
import sys
import tempfile
import threading
import time
import urllib.error
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from common import (
    Agent,
    Instance,
    RedisServer,
    ZooKeeperServer,
    add_checkout_option,
    agent_config,
    checkouts_of,
    commit_of,
    load_average,
    start_redis_servers,
    start_zookeeper,
    stop_on_sigterm,
    table,
    wait_until,
)
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from tests.gaps import NodeWatch

SERVICE = "cache"


def config(
    args: argparse.Namespace,
    hosts: str,
    instances: list[Instance],
    agent_id: str,
    state_dir: Path | None,
) -> str:
    """An agent's TOML: a group on /upgrade, members in one serverset."""
    text = agent_config(
        instances,
        zookeeper=hosts,
        zk_root="/upgrade",
        agent_id=agent_id,
        zk_settings={
            "session_timeout": args.session_timeout,
            "replicas": args.replicas,
            "discovery": "nerve",
            "discovery_root": "/members",
            **({} if args.quorum is None else {"quorum": args.quorum}),
        },
    )
    text = text.replace("[[redis]]\n", f'[[redis]]\nservice = "{SERVICE}"\n')
    if state_dir is not None:
        text = f'state_dir = "{state_dir}"\n' + text
    return text


def tracebacks(*agents: Agent) -> int:
    """How many tracebacks the agents' logs hold."""
    return sum(a.log.read_text(errors="replace").count("Traceback") for a in agents)


def log_lines(agent: Agent, *words: str) -> list[str]:
    """The lines of the agent's log holding any of `words`."""
    text = agent.log.read_text(errors="replace")
    return [line for line in text.splitlines() if any(w in line for w in words)]


def leftovers(client: KazooClient) -> Counter[str]:
    """
    Ephemeral nodes under the group's paths and the service whose session
    holds no agent node: what nobody live will ever clean up.
    """
    live = set()
    for child in client.get_children("/upgrade/agents"):
        stat = client.exists(f"/upgrade/agents/{child}")
        if stat is not None:
            live.add(stat.ephemeralOwner)
    found: Counter[str] = Counter()

    def look(path: str, kind: str) -> None:
        try:
            stat = client.exists(path)
        except NoNodeError:
            return
        if stat is not None and stat.ephemeralOwner and stat.ephemeralOwner not in live:
            found[kind] += 1

    for kind in ("instances", "catalogs"):
        for child in client.get_children(f"/upgrade/{kind}"):
            look(f"/upgrade/{kind}/{child}", kind)
    if client.exists("/upgrade/opinions"):
        for name in client.get_children("/upgrade/opinions"):
            for agent in client.get_children(f"/upgrade/opinions/{name}"):
                look(f"/upgrade/opinions/{name}/{agent}", "opinions")
    if client.exists(f"/members/{SERVICE}"):
        for member in client.get_children(f"/members/{SERVICE}"):
            look(f"/members/{SERVICE}/{member}", "members")
    return found


Rows = list[tuple[str, str]]


def published(client: KazooClient, parent: str, nodes: list[str], count: int) -> bool:
    """Whether every node is there, and `count` members under `parent`."""
    if client.exists(parent) is None or len(client.get_children(parent)) < count:
        return False
    return all(client.exists(n) for n in nodes)


def rewritten_all(watch: NodeWatch, nodes: list[str]) -> bool:
    """Whether the watch saw every node rewritten since its mark."""
    return all(watch.rewritten_at(n) is not None for n in nodes)


def servers_for(
    args: argparse.Namespace, started: ExitStack
) -> tuple[list[RedisServer], ZooKeeperServer, KazooClient, list[Instance]]:
    """The redis-servers, a ZooKeeper and its reader, the instances over them."""
    servers = start_redis_servers(args.servers, started)
    zookeeper, client = start_zookeeper(started)
    instances = [
        Instance(f"r{i}", servers[i % len(servers)].port) for i in range(args.instances)
    ]
    return servers, zookeeper, client, instances


def moving_agent(
    args: argparse.Namespace,
    started: ExitStack,
    workdir: Path,
    label: str,
    version: Path,
) -> tuple[Agent, str, ZooKeeperServer, KazooClient, list[Instance]]:
    """
    The servers, and the agent ``moving`` on a state_dir, of `version`:
    the agent, its config, the ZooKeeper and its reader, the instances.
    """
    _, zookeeper, client, instances = servers_for(args, started)
    text = config(args, zookeeper.hosts, instances, "moving", workdir / "state")
    agent = Agent(workdir, text, label, version)
    started.callback(agent.stop)
    return agent, text, zookeeper, client, instances


def handoff(args: argparse.Namespace, versions: dict[str, Path]) -> Rows:
    """One handoff per run from args.old to args.new; a row per figure."""
    rows = []
    for run in range(args.runs):
        with ExitStack() as started, tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            state = workdir / "state"
            first, text, zookeeper, client, instances = moving_agent(
                args, started, workdir, "first", versions[args.old]
            )
            helpers = []
            if args.replicas > 1:
                helper_text = config(args, zookeeper.hosts, instances, "helper", None)
                helper = Agent(workdir, helper_text, "helper", versions[args.new])
                started.callback(helper.stop)
                helpers.append(helper)
            first.wait_ready()
            parent = f"/members/{SERVICE}"
            nodes = ["/upgrade/agents/moving"] + [
                f"/upgrade/instances/{i.name}" for i in instances
            ]
            wait_until(
                functools.partial(published, client, parent, nodes, args.instances),
                60.0,
                "the first agent's nodes",
            )
            time.sleep(args.warmup)
            members_before = len(client.get_children(parent))
            watch = NodeWatch(zookeeper.hosts, nodes, {parent: args.instances}).start()
            started.callback(watch.stop)
            signalled = time.monotonic()
            first.child.process.send_signal(
                signal.SIGKILL if args.signal == "kill" else signal.SIGTERM
            )
            first.child.process.wait(10.0)
            if args.file_version is not None:
                # As a later version's file would be: another format.
                path = state / "zookeeper-session.json"
                document = json.loads(path.read_text())
                document["version"] = args.file_version
                path.write_text(json.dumps(document))
            watch.mark()
            second = Agent(workdir, text, "second", versions[args.new])
            started.callback(second.stop)
            health = HealthReader()
            health.agents["second"] = second
            health.thread.start()
            started.callback(health.stopping.set)
            second.wait_ready()
            try:
                wait_until(
                    functools.partial(rewritten_all, watch, nodes),
                    args.session_timeout + 30.0,
                    "every node rewritten",
                )
                rewritten = f"{time.monotonic() - signalled:.2f} s"
            except RuntimeError:
                stale = [n for n in nodes if watch.rewritten_at(n) is None]
                rewritten = f"never: {len(stale)} nodes not, such as {stale[:2]}"
            time.sleep(args.linger)
            health.stopping.set()
            gaps = watch.gaps()
            left = leftovers(client)
            members_now = len(client.get_children(parent))
            session = log_lines(second, "reattach", "ZooKeeper session 0x")[:2]
            rows += [
                (f"run {run}: longest gap, instance node",
                 f"{max([gaps.get(n, 0.0) for n in nodes[1:]]):.2f} s "
                 f"({sum(1 for n in nodes[1:] if n in gaps)} nodes missed)"),
                (f"run {run}: longest gap, agent node",
                 f"{gaps.get(nodes[0], 0.0):.2f} s"),
                (f"run {run}: longest gap, members", f"{gaps.get(parent, 0.0):.2f} s"),
                (f"run {run}: members before, most, at the end",
                 f"{members_before}, {watch.most_members(parent)}, {members_now}"),
                (f"run {run}: every node rewritten after", rewritten),
                (f"run {run}: left behind {args.linger:g} s later", repr(dict(left))),
                (f"run {run}: /healthz of the new process", repr(dict(health.answers))),
                *[(f"run {run}: 503 reason x{n}", r[:120])
                  for r, n in health.reasons.most_common(3)],
                (f"run {run}: tracebacks", str(tracebacks(first, second, *helpers))),
                (f"run {run}: new process said", " | ".join(s[-160:] for s in session)),
            ]  # fmt: skip
            for agent in (second, *helpers):
                agent.child.process.send_signal(signal.SIGUSR2)
                agent.child.process.wait(10.0)
            if args.keep_logs:
                for agent in (first, second, *helpers):
                    target = Path(args.keep_logs) / f"handoff-{run}-{agent.log.name}"
                    target.write_bytes(agent.log.read_bytes())
    return rows


class Truth:
    """When each redis-server went down and up (monotonic seconds)."""

    def __init__(self, servers: list[RedisServer]) -> None:
        self.servers = servers
        self.changed = [0.0] * len(servers)
        self.down = [False] * len(servers)
        self.lock = threading.Lock()

    def set(self, index: int, down: bool) -> None:
        server = self.servers[index]
        if down:
            server.kill()
        else:
            server.start()
        with self.lock:
            self.down[index], self.changed[index] = down, time.monotonic()

    def state(self, index: int) -> tuple[bool, float]:
        with self.lock:
            return self.down[index], self.changed[index]


class VerdictReader:
    """Polls every instance node; counts missing, false downs and false ups."""

    def __init__(
        self, hosts: str, instances: list[Instance], server_of: dict[str, int],
        truth: Truth, grace: float, poll: float = 0.1,
    ) -> None:  # fmt: skip
        self.instances = instances
        self.every = poll
        self.server_of = server_of
        self.truth = truth
        self.grace = grace
        self.missing: Counter[str] = Counter()
        self.false_down: Counter[str] = Counter()
        self.false_up: Counter[str] = Counter()
        self.bad_documents: Counter[str] = Counter()
        self.examples: list[str] = []
        self.twice: Counter[str] = Counter()
        # Per second of the mix: the most nodes missing, members listed
        # twice and up instances unlisted at one poll.
        self.timeline: dict[int, list[int]] = {}
        self.unlisted: Counter[str] = Counter()
        self.began = time.monotonic()
        self.polls = 0
        self.client = KazooClient(hosts=hosts, timeout=10.0)
        self.client.start(timeout=10.0)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self) -> VerdictReader:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10.0)
        self.client.stop()
        self.client.close()

    def run(self) -> None:
        while not self.stopping.wait(self.every):
            try:
                self.poll()
            except Exception:
                pass

    def poll(self) -> None:
        reads = [
            (i.name, self.client.get_async(f"/upgrade/instances/{i.name}"))
            for i in self.instances
        ]
        listing = self.client.get_children_async(f"/members/{SERVICE}")
        now = time.monotonic()
        try:
            members = Counter(m.rsplit("_", 1)[0] for m in listing.get(timeout=2.0))
        except NoNodeError:
            members = Counter()
        row = [0, 0, 0]
        for instance in self.instances:
            name = instance.name
            down, since = self.truth.state(self.server_of[name])
            if members[name] > 1:
                self.twice[name] += 1
                row[1] += 1
            elif members[name] == 0 and not down and now - since > self.grace:
                self.unlisted[name] += 1
                row[2] += 1
        for name, read in reads:
            try:
                data, _ = read.get(timeout=2.0)
            except NoNodeError:
                self.missing[name] += 1
                row[0] += 1
                continue
            try:
                document = json.loads(data)
                status = document["status"]
            except (ValueError, KeyError, TypeError):
                self.bad_documents[name] += 1
                continue
            down, since = self.truth.state(self.server_of[name])
            settled = now - since > self.grace
            wrong = None
            if status == "down" and not down and settled:
                self.false_down[name] += 1
                wrong = self.false_down
            elif status == "up" and down and settled:
                self.false_up[name] += 1
                wrong = self.false_up
            if wrong is not None and wrong[name] == 1 and len(self.examples) < 20:
                fields = ("agent", "observers", "quorum", "error", "checked_at")
                server = self.server_of[name]
                self.examples.append(
                    f"{name} at {now - self.began:.1f} s (server {server} "
                    f"changed {now - since:.1f} s before): "
                    + json.dumps({k: document.get(k) for k in fields})
                )
        if any(row):
            second = int(now - self.began)
            most = self.timeline.setdefault(second, [0, 0, 0])
            most[:] = [max(a, b) for a, b in zip(most, row, strict=True)]
        self.polls += 1


class HealthReader:
    """Reads each agent's /healthz once a second; counts 503s and reasons."""

    def __init__(self) -> None:
        self.agents: dict[str, Agent] = {}
        self.lock = threading.Lock()
        self.answers: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stopping.wait(1.0):
            with self.lock:
                agents = list(self.agents.items())
            for label, agent in agents:
                if not agent.child.running:
                    continue
                try:
                    agent.get("/healthz", timeout=2.0)
                    self.answers[f"{label} 200"] += 1
                except urllib.error.HTTPError as e:
                    self.answers[f"{label} {e.code}"] += 1
                    try:
                        for reason in json.loads(e.read()).get("reasons", []):
                            self.reasons[f"{label}: {str(reason)[:150]}"] += 1
                    except ValueError:
                        pass
                except (OSError, ValueError):
                    self.answers[f"{label} no answer"] += 1


def rolling(args: argparse.Namespace, versions: dict[str, Path]) -> Rows:
    """A rolling upgrade of every agent, one at a time; a row per figure."""
    with ExitStack() as started, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        servers, zookeeper, client, instances = servers_for(args, started)
        server_of = {i.name: n % len(servers) for n, i in enumerate(instances)}
        truth = Truth(servers)
        ids = [f"agent-{n}" for n in range(args.agents)]
        texts = {
            a: config(
                args,
                zookeeper.hosts,
                instances,
                a,
                None if args.no_state_dir else workdir / f"state-{a}",
            )
            for a in ids
        }
        health = HealthReader()
        running: dict[str, Agent] = {}

        def start(agent_id: str, version: str, label: str) -> Agent:
            agent = Agent(workdir, texts[agent_id], label, versions[version])
            started.callback(agent.stop)
            running[agent_id] = agent
            with health.lock:
                health.agents[agent_id] = agent
            return agent

        for agent_id in ids:
            start(agent_id, args.old, f"{agent_id}-{args.old}")
        for agent in running.values():
            agent.wait_ready()
        wait_until(
            lambda: (
                client.exists("/upgrade/instances") is not None
                and len(client.get_children("/upgrade/instances")) >= args.instances
            ),
            90.0,
            "every instance node",
        )
        time.sleep(args.warmup)
        reader = VerdictReader(
            zookeeper.hosts, instances, server_of, truth, args.grace, args.poll
        ).start()
        started.callback(reader.stop)
        health.thread.start()
        started.callback(health.stopping.set)
        began = time.monotonic()
        events: list[str] = []

        def event(what: str) -> None:
            events.append(f"{time.monotonic() - reader.began:.1f} s: {what}")

        all_agents: list[Agent] = list(running.values())
        for step, agent_id in enumerate(ids):
            victim = step % len(servers)
            truth.set(victim, down=True)
            event(f"server {victim} down")
            time.sleep(args.pause / 2)
            old = running[agent_id]
            old.child.process.send_signal(signal.SIGTERM)
            old.child.process.wait(10.0)
            event(f"{agent_id} stopped")
            agent = start(agent_id, args.new, f"{agent_id}-{args.new}")
            all_agents.append(agent)
            agent.wait_ready()
            time.sleep(args.pause / 2)
            truth.set(victim, down=False)
            event(f"server {victim} up; {agent_id} is {args.new}")
            if step == 0 and len(ids) > 1:
                # A crash of a member still on the old version, mid-mix.
                crashed = running[ids[-1]]
                crashed.child.kill()
                event(f"{ids[-1]} killed")
                time.sleep(args.crash_down)
                again = start(ids[-1], args.old, f"{ids[-1]}-{args.old}-again")
                all_agents.append(again)
                again.wait_ready()
            time.sleep(args.pause)
        time.sleep(args.linger)
        health.stopping.set()
        elapsed = time.monotonic() - began
        reader.stop()
        left = leftovers(client)
        published = Counter(
            json.loads(client.get(f"/upgrade/instances/{i.name}")[0])["status"]
            for i in instances
            if client.exists(f"/upgrade/instances/{i.name}")
        )
        rows = [
            ("mix lasted", f"{elapsed:.0f} s, {reader.polls} polls of every node"),
            ("polls finding a node missing", f"{sum(reader.missing.values())} "
             f"({len(reader.missing)} nodes)"),
            ("false downs (node-polls)", f"{sum(reader.false_down.values())} "
             f"({len(reader.false_down)} nodes)"),
            ("false ups (node-polls)", f"{sum(reader.false_up.values())} "
             f"({len(reader.false_up)} nodes)"),
            ("undecodable documents", str(sum(reader.bad_documents.values()))),
            ("members listed twice (node-polls)", f"{sum(reader.twice.values())} "
             f"({len(reader.twice)} instances)"),
            ("up, no member (node-polls)", f"{sum(reader.unlisted.values())} "
             f"({len(reader.unlisted)} instances)"),
            ("published at the end", repr(dict(published))),
            ("left behind at the end", repr(dict(left))),
            ("/healthz answers", repr(dict(health.answers))),
            ("tracebacks in the logs", str(tracebacks(*all_agents))),
        ]  # fmt: skip
        rows += [(f"503 reason x{n}", r) for r, n in health.reasons.most_common(12)]
        rows += [("wrong", example) for example in reader.examples]
        rows += [("event", event) for event in events]
        rows += [
            (f"{second} s", "missing {}, twice {}, unlisted {}".format(*most))
            for second, most in sorted(reader.timeline.items())
        ]
        if args.keep_logs:
            for agent in all_agents:
                target = Path(args.keep_logs) / agent.log.name
                target.write_bytes(agent.log.read_bytes())
        for agent in running.values():
            if agent.child.running:
                agent.child.process.send_signal(signal.SIGUSR2)
                agent.child.process.wait(10.0)
    return rows


def takeover(args: argparse.Namespace, versions: dict[str, Path]) -> Rows:
    """
    A process of args.new started while one of args.old still runs on the
    same state_dir (a deploy that starts the new before stopping the old):
    whether the older learns it was superseded, and how often the two
    took the session from each other.
    """
    rows = []
    for run in range(args.runs):
        with ExitStack() as started, tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            older, text, zookeeper, client, instances = moving_agent(
                args, started, workdir, "older", versions[args.old]
            )
            older.wait_ready()
            nodes = [f"/upgrade/instances/{i.name}" for i in instances]
            wait_until(
                functools.partial(published, client, f"/members/{SERVICE}", nodes, 0),
                60.0,
                "the older agent's nodes",
            )
            time.sleep(args.warmup)
            newer = Agent(workdir, text, "newer", versions[args.new])
            started.callback(newer.stop)
            began = time.monotonic()
            exited = "still running"
            while time.monotonic() - began < args.linger:
                if exited == "still running" and not older.child.running:
                    status = older.child.process.wait()
                    exited = f"status {status} after {time.monotonic() - began:.1f} s"
                time.sleep(0.1)
            stat = client.exists(nodes[0])
            try:
                healthz = str(newer.get("/healthz"))
            except urllib.error.HTTPError as e:
                healthz = f"{e.code}"
            rows += [
                (f"run {run}: the older process", exited),
                (f"run {run}: connections, older / newer",
                 f"{log_count(older, 'ZooKeeper connected')} / "
                 f"{log_count(newer, 'ZooKeeper connected')}"),
                (f"run {run}: writes of one instance node",
                 str(None if stat is None else stat.version)),
                (f"run {run}: /healthz of the newer at the end", healthz[:80]),
                (f"run {run}: tracebacks", str(tracebacks(older, newer))),
            ]  # fmt: skip
            newer.child.process.send_signal(signal.SIGUSR2)
            newer.child.process.wait(10.0)
    return rows


def log_count(agent: Agent, words: str) -> int:
    """How many times the agent's log says `words`."""
    return agent.log.read_text(errors="replace").count(words)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("case", choices=["handoff", "rolling", "takeover"])
    add("old", help="the label of the version running first")
    add("new", help="the label of the version it is replaced with")
    add_checkout_option(parser)
    add("--instances", type=int, default=50)
    add("--servers", type=int, default=5)
    add("--agents", type=int, default=3)
    add("--replicas", type=int, default=1)
    add("--poll", type=float, default=0.1, help="rolling: the reader's pause (0.1 s)")
    add("--quorum", type=int, help="zookeeper.quorum (default: the agent's)")
    add("--session-timeout", type=float, default=10.0)
    add("--signal", choices=["term", "kill"], default="term")
    add("--runs", type=int, default=1)
    add("--warmup", type=float, default=3.0)
    add("--pause", type=float, default=8.0, help="seconds between steps (8)")
    add("--grace", type=float, default=8.0, help="detection allowance (8 s)")
    add("--linger", type=float, default=5.0)
    add("--crash-down", type=float, default=4.0, help="s a killed agent stays down")
    add("--file-version", type=int, help="handoff: the state file made this version")
    add("--no-state-dir", action="store_true", help="restarts without handoff")
    add("--keep-logs", metavar="DIR", help="copy the agents' logs there")
    args = parser.parse_args()
    versions = dict(checkouts_of(parser, args.checkout))
    for label in (args.old, args.new):
        if label not in versions:
            parser.error(f"no --checkout {label}=PATH")
    stop_on_sigterm()
    head = [
        ("versions", f"{args.old} = {commit_of(versions[args.old])}, "
         f"{args.new} = {commit_of(versions[args.new])}"),
        ("load average at start", load_average()),
    ]  # fmt: skip
    if args.case == "handoff":
        rows = handoff(args, versions)
    elif args.case == "takeover":
        rows = takeover(args, versions)
    else:
        rows = rolling(args, versions)
    rows.append(("load average at the end", load_average()))
    title = f"{args.case} {args.old} -> {args.new}, R = {args.replicas}, " + (
        f"{args.instances} instances"
    )
    print(table(head + rows, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())

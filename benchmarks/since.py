"""
What readers of ZooKeeper see of ``since`` and ``checked_at`` across a
restart, a crash, a reload, a session expiry, a wiped ZooKeeper and a
group's takeovers.

Agents (``twistd -n sentinel``) watch a few instances of real
redis-servers that stay up the whole time, so that no instance's status
ever changes: every instance node's ``since`` must stay what it first
said. A reader polls the instance nodes every 50 ms and records every
document it sees. Per case and run, over every instance:

- ``since moved``: documents whose ``since`` differs from the one before
  while the status is the same, and by how much at most (``after a gap``:
  on a node that was missing in between, a gone instance to readers);
- ``since ahead``: documents whose ``since`` is after their own
  ``checked_at``, or after the answer that read them;
- ``checked_at back``: a ``checked_at`` older than an earlier document's
  of the same node, and ``checked_at ahead``: after the poll's time;
- the longest time a node was missing.

    .venv/bin/python benchmarks/since.py [--runs 2] [--cases kill,term,...]
"""

from __future__ import annotations

import argparse
import json
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    Agent,
    Instance,
    ZooKeeperServer,
    agent_config,
    load_average,
    machine,
    start_redis_servers,
    start_zookeeper,
    stop_on_sigterm,
    table,
    wait_until,
)
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

POLL = 0.05
SESSION_TIMEOUT = 4.0
# Short, so that a group's observers have read the verdicts (once a
# refresh) before the event.
REFRESH = 3.0
# Allowed between two readings of this one machine's clock.
SLACK = 0.05
CASES = (
    "kill-none",
    "kill-state",
    "term-state",
    "hup",
    "expiry",
    "wipe",
    "join",
    "leave",
    "primary-kill",
    "primary-restart",
    "group-kill",
    "down",
    "down-group",
)


def parse_args() -> argparse.Namespace:
    """The options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--instances", type=int, default=8, help="instances (8)")
    add("--runs", type=int, default=2, help="runs of each case (2)")
    add("--cases", default=",".join(CASES), help="comma-separated cases")
    add("--keep-logs", action="store_true", help="print the work directory")
    add("--tree", type=Path, help="a tree of the code to run (this checkout's)")
    return parser.parse_args()


@dataclass
class Watch:
    """What the polls saw of one node."""

    # What each answer said, and when: None when the node went missing.
    documents: list[tuple[float, dict[str, Any] | None]] = field(default_factory=list)
    missing_since: float | None = None
    longest_gap: float = 0.0


class SinceWatch:
    """Polls instance nodes on a thread of its own, every `POLL` seconds."""

    def __init__(self, hosts: str, paths: Sequence[str]) -> None:
        self.paths = list(paths)
        self.hosts = hosts
        self.seen = {path: Watch() for path in self.paths}
        self._stopping = threading.Event()
        self._client = KazooClient(hosts=hosts, timeout=10.0)
        self._client.start(timeout=10.0)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> SinceWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(10.0)
        self._client.stop()
        self._client.close()

    def _run(self) -> None:
        failing_since: float | None = None
        while not self._stopping.wait(POLL):
            now = time.time()
            if failing_since is not None and now - failing_since > 2.0:
                # A ZooKeeper that came back empty refuses a client that saw
                # newer transactions: a new client, as the agent makes.
                self._client.stop()
                self._client.close()
                self._client = KazooClient(hosts=self.hosts, timeout=10.0)
                try:
                    self._client.start(timeout=2.0)
                except Exception:  # noqa: BLE001 - not serving yet
                    pass
                failing_since = None
            asked = [(p, self._client.get_async(p)) for p in self.paths]
            answered = False
            for path, result in asked:
                seen = self.seen[path]
                try:
                    data, _ = result.get(timeout=2.0)
                except NoNodeError:
                    answered = True
                    if seen.missing_since is None:
                        seen.missing_since = now
                        seen.documents.append((now, None))
                    continue
                except Exception:  # noqa: BLE001 - a lost connection: try again
                    continue
                answered = True
                if seen.missing_since is not None:
                    seen.longest_gap = max(seen.longest_gap, now - seen.missing_since)
                    seen.missing_since = None
                document = json.loads(data)
                if not seen.documents or seen.documents[-1][1] != document:
                    # Dated by its answer: it was written before then.
                    seen.documents.append((time.time(), document))
            if answered:
                failing_since = None
            elif failing_since is None:
                failing_since = now


@dataclass
class Outcome:
    """One run of one case, over every instance node."""

    moved: int = 0
    moved_most: float = 0.0
    # Likewise, but on a node that was missing in between: a gone
    # instance to readers (a session that expired before the next
    # process reattached, a group's crashed primary).
    moved_gone: int = 0
    moved_gone_most: float = 0.0
    ahead: int = 0
    ahead_most: float = 0.0
    checked_back: int = 0
    checked_back_most: float = 0.0
    checked_ahead: int = 0
    gap: float = 0.0
    documents: int = 0

    def take(self, seen: Watch) -> None:
        self.gap = max(self.gap, seen.longest_gap)
        said = None
        last_checked = None
        gone = False
        for polled, document in seen.documents:
            if document is None:
                gone = True
                continue
            self.documents += 1
            status = document.get("status")
            since, checked = document.get("since"), document.get("checked_at")
            if said is not None and said[0] == status and said[1] != since:
                # The same status since another time: no change readers saw.
                by = abs(since - said[1])
                if gone:
                    self.moved_gone += 1
                    self.moved_gone_most = max(self.moved_gone_most, by)
                else:
                    self.moved += 1
                    self.moved_most = max(self.moved_most, by)
            said = (status, since)
            gone = False
            if since > checked + SLACK or since > polled + SLACK:
                self.ahead += 1
                self.ahead_most = max(self.ahead_most, since - min(checked, polled))
            if last_checked is not None and checked < last_checked:
                self.checked_back += 1
                self.checked_back_most = max(
                    self.checked_back_most, last_checked - checked
                )
            last_checked = max(checked, last_checked or checked)
            if checked > polled + SLACK:
                self.checked_ahead += 1

    def row(self) -> str:
        return (
            f"since moved {self.moved} (by up to {self.moved_most:.2f} s), "
            f"after a gap {self.moved_gone} "
            f"(by up to {self.moved_gone_most:.2f} s), "
            f"ahead {self.ahead} (by up to {self.ahead_most:.2f} s); "
            f"checked_at back {self.checked_back} "
            f"(by up to {self.checked_back_most:.2f} s), "
            f"ahead {self.checked_ahead}; "
            f"missing up to {self.gap:.2f} s; {self.documents} documents"
        )


class Case:
    """One case's servers, config and agents, in `workdir`."""

    def __init__(
        self,
        args: argparse.Namespace,
        zookeeper: ZooKeeperServer,
        ports: list[int],
        workdir: Path,
        label: str,
        running: ExitStack,
    ) -> None:
        self.args = args
        self.zookeeper = zookeeper
        self.workdir = workdir
        self.label = label
        self.running = running
        self.root = f"/since-{label}"
        self.instances = [
            Instance(f"r{i}", ports[i % len(ports)]) for i in range(args.instances)
        ]
        self.paths = [f"{self.root}/instances/{i.name}" for i in self.instances]

    def config(
        self,
        agent_id: str,
        state: bool,
        replicas: int = 1,
        instances: Sequence[Instance] | None = None,
    ) -> str:
        settings: dict[str, float | int] = {
            "session_timeout": SESSION_TIMEOUT,
            "refresh": REFRESH,
        }
        if replicas > 1:
            settings["replicas"] = replicas
        text = agent_config(
            self.instances if instances is None else instances,
            zookeeper=self.zookeeper.hosts,
            zk_root=self.root,
            agent_id=agent_id,
            zk_settings=settings,
        )
        if state:
            state_dir = self.workdir / f"state-{self.label}-{agent_id}"
            text = f'state_dir = "{state_dir}"\n' + text
        return text

    def agent(self, text: str, name: str) -> Agent:
        agent = Agent(
            self.workdir, text, f"{self.label}-{name}", pythonpath=self.args.tree
        )
        self.running.callback(agent.stop)
        agent.wait_ready()
        return agent

    def published(self, client: KazooClient, agents: int = 1) -> None:
        def done() -> bool:
            for path in self.paths:
                if client.exists(path) is None:
                    return False
            return True

        wait_until(done, 60.0, "every instance node")
        if agents > 1:
            # Every member has joined, the verdicts settled, and the
            # observers read them.
            time.sleep(3.0 + 2 * REFRESH)


def run_case(
    case: str,
    args: argparse.Namespace,
    zookeeper: ZooKeeperServer,
    client: KazooClient,
    ports: list[int],
    workdir: Path,
    run: int,
) -> Outcome:
    """One run of `case`: agents up, the reader on, the event, 8 s of watching."""
    with ExitStack() as running:
        c = Case(args, zookeeper, ports, workdir, f"{case}-{run}", running)
        event = EVENTS[case]
        after = event(c, client)
        watch = after.watch
        time.sleep(after.watch_for)
        watch.stop()
        outcome = Outcome()
        for path in c.paths:
            outcome.take(watch.seen[path])
        seen = {path: watch.seen[path].documents for path in c.paths}
        (workdir / f"{c.label}.json").write_text(json.dumps(seen, indent=1))
        for agent in after.agents:
            agent.child.process.send_signal(signal.SIGUSR2)
            try:
                agent.child.process.wait(10.0)
            except Exception:  # noqa: BLE001
                agent.stop()
    return outcome


@dataclass
class After:
    """What an event leaves running: the reader, the agents, how long to watch."""

    watch: SinceWatch
    agents: list[Agent]
    watch_for: float = 8.0


def _watch(c: Case, client: KazooClient, agents: int = 1) -> SinceWatch:
    c.published(client, agents)
    watch = SinceWatch(c.zookeeper.hosts, c.paths).start()
    time.sleep(1.5)
    return watch


def _restart(sig: int, state: bool) -> Callable[[Case, KazooClient], After]:
    def event(c: Case, client: KazooClient) -> After:
        text = c.config("a", state)
        first = c.agent(text, "first")
        watch = _watch(c, client)
        first.child.process.send_signal(sig)
        first.child.process.wait(10.0)
        second = c.agent(text, "second")
        return After(watch, [second], SESSION_TIMEOUT + 6.0)

    return event


def _hup(c: Case, client: KazooClient) -> After:
    agent = c.agent(c.config("a", False), "first")
    watch = _watch(c, client)
    # A reload with one more instance: the others are unchanged.
    more = [*c.instances, Instance("extra", c.instances[0].port)]
    agent.config_path.write_text(c.config("a", False, instances=more))
    agent.child.process.send_signal(signal.SIGHUP)
    time.sleep(3.0)
    agent.config_path.write_text(c.config("a", False))
    agent.child.process.send_signal(signal.SIGHUP)
    return After(watch, [agent])


def _expiry(c: Case, client: KazooClient) -> After:
    agent = c.agent(c.config("a", False), "first")
    watch = _watch(c, client)
    agent.child.pause()
    time.sleep(SESSION_TIMEOUT + 2.0)
    agent.child.resume()
    return After(watch, [agent])


def _wipe(c: Case, client: KazooClient) -> After:
    # A ZooKeeper of its own: stopped, wiped and started again.
    own, reader = start_zookeeper(c.running)
    c.zookeeper = own
    agent = c.agent(c.config("a", False), "first")
    watch = _watch(c, reader)
    time.sleep(0.5)
    own.stop()
    own.wipe()
    time.sleep(1.0)
    own.start()
    return After(watch, [agent], 15.0)


def _group(c: Case, client: KazooClient, count: int, state: bool) -> list[Agent]:
    agents = [
        c.agent(c.config(f"g{i}", state, replicas=2), f"g{i}") for i in range(count)
    ]
    return agents


def _join(c: Case, client: KazooClient) -> After:
    agents = _group(c, client, 2, False)
    watch = _watch(c, client, 2)
    agents.append(c.agent(c.config("g2", False, replicas=2), "g2"))
    return After(watch, agents)


def _leave(c: Case, client: KazooClient) -> After:
    agents = _group(c, client, 3, False)
    watch = _watch(c, client, 3)
    leaving = agents.pop()
    leaving.child.stop()
    return After(watch, agents)


def _primary_kill(c: Case, client: KazooClient) -> After:
    agents = _group(c, client, 3, False)
    watch = _watch(c, client, 3)
    agents.pop(0).child.kill()
    return After(watch, agents, SESSION_TIMEOUT + 6.0)


def _primary_restart(c: Case, client: KazooClient) -> After:
    agents = _group(c, client, 3, True)
    watch = _watch(c, client, 3)
    first = agents.pop(0)
    first.child.process.send_signal(signal.SIGTERM)
    first.child.process.wait(10.0)
    agents.append(c.agent(c.config("g0", True, replicas=2), "g0-again"))
    return After(watch, agents, SESSION_TIMEOUT + 6.0)


def _group_kill(c: Case, client: KazooClient) -> After:
    agents = _group(c, client, 3, False)
    watch = _watch(c, client, 3)
    agents.pop(0).child.kill()
    agents.append(c.agent(c.config("g0", False, replicas=2), "g0-again"))
    return After(watch, agents, SESSION_TIMEOUT + 6.0)


def _down(replicas: int) -> Callable[[Case, KazooClient], After]:
    def event(c: Case, client: KazooClient) -> After:
        # A redis-server of the case's own, killed: its instances go down.
        server = start_redis_servers(1, c.running)[0]
        c.instances[1::2] = [Instance(i.name, server.port) for i in c.instances[1::2]]
        count = 3 if replicas > 1 else 1
        agents = [
            c.agent(c.config(f"g{i}", False, replicas=replicas), f"g{i}")
            for i in range(count)
        ]
        watch = _watch(c, client, count)
        server.kill()
        return After(watch, agents)

    return event


EVENTS: dict[str, Callable[[Case, KazooClient], After]] = {
    "kill-none": _restart(signal.SIGKILL, False),
    "kill-state": _restart(signal.SIGKILL, True),
    "term-state": _restart(signal.SIGTERM, True),
    "hup": _hup,
    "expiry": _expiry,
    "wipe": _wipe,
    "join": _join,
    "leave": _leave,
    "primary-kill": _primary_kill,
    "primary-restart": _primary_restart,
    "group-kill": _group_kill,
    "down": _down(1),
    "down-group": _down(2),
}


def main() -> int:
    """Run every case and run, print the table, stop everything started."""
    args = parse_args()
    stop_on_sigterm()
    cases = [c for c in args.cases.split(",") if c]
    for case in cases:
        if case not in EVENTS:
            raise SystemExit(f"--cases: unknown case {case!r}")
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-since-"))
    rows = [
        ("machine", machine()),
        ("load average at start", load_average()),
        ("code", str(args.tree or "this checkout")),
        (
            "settings",
            f"{args.instances} instances on 2 redis-servers, session timeout "
            f"{SESSION_TIMEOUT:g} s, reader every {POLL * 1000:.0f} ms, "
            f"{args.runs} runs",
        ),
    ]
    with ExitStack() as started:
        ports = [s.port for s in start_redis_servers(2, started)]
        zookeeper, client = start_zookeeper(started)
        for case in cases:
            for run in range(args.runs):
                outcome = run_case(case, args, zookeeper, client, ports, workdir, run)
                rows.append((f"{case} #{run + 1}", outcome.row()))
                print(rows[-1][0], rows[-1][1], f"(load {load_average()})", flush=True)
    rows.append(("load average at end", load_average()))
    print(table(rows, "since across restarts"))
    if args.keep_logs:
        print(f"logs in {workdir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""
An agent back from a pause past its session timeout, after a newer process
took its state_dir over, and the restart of that newer process after it
(DESIGN.md section 8, "Restarts").

One real redis-server, one ZooKeeper (``--session-timeout`` asked), and
agents (``twistd -n sentinel``, one agent id, one ``state_dir``, no group)
over ``--instances`` instances, each with a serverset member. For each of
``--runs`` runs of each ``--checkout`` (in turns):

1. A starts and publishes every node; it is stopped (SIGSTOP);
2. once its session has expired (the session timeout and 2 s), B starts
   on the same config and state_dir: it finds A's session expired, opens
   its own and writes the state file naming itself;
3. once B's agent node names B, A is resumed (SIGCONT), ``--pause`` s
   after its SIGSTOP;
4. ``--settle`` s after the SIGCONT (a deploy of B while A is on its way
   out), B is stopped (SIGTERM) and C started at once, while a reader
   polls every node every 20 ms (`tests.gaps`).

Printed: whether A still ran at B's SIGTERM and whose pid the state file
named then, B's log lines saying the file no longer holds its session,
whether C reattached, the longest time an instance node, the agent node
or a member was missing at the B to C restart, and A's exit status and
how long it ran after the SIGCONT.

``--mode removed``: the same pause, B started on a config without one of
A's instances (``gone``: a deploy that removed it); printed for the
``--settle`` s after A's SIGCONT, when A exited, from when to when
``gone``'s instance node and a member more than B's were listed, and the
sessions ZooKeeper's log says it expired meanwhile (A's first expired
during the pause; one now is A's new one, left open).

``--mode double``: A and B started at once on one config and state_dir
(a double start, each on a new session); the one whose session holds
the agent node is the winner W, the other the loser L; a run counts only
if the state file names L (L wrote it last; else it is started again).
L is stopped (SIGSTOP: a loser that runs but publishes nothing, as one
on its way out as a twin), then W for the session timeout and 2 s, then
W is resumed; ``--settle`` s later L is resumed. Printed: W's and L's
exit status and when, and from W's SIGCONT to the end (``--settle`` s
after L's), how long no agent node was listed, and how long each
instance node was missing at most.

    .venv/bin/python benchmarks/superseded.py --checkout before=PATH
        --checkout after=. [--mode paused|removed|double] [--instances 20]
        [--session-timeout 4] [--pause 10] [--runs 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NamedTuple

import restart
from common import (
    Agent,
    ZooKeeperServer,
    add_checkout_option,
    load_average,
    machine,
    rows_in_turns,
    start_redis_servers,
    start_zookeeper,
    table,
    wait_until,
)
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from tests.gaps import NodeWatch

OVERWRITTEN = "no longer holds this process's ZooKeeper session"
REATTACHED = "reattached to ZooKeeper session "
NEW_SESSION = "new ZooKeeper session "
# ZooKeeper's log line for a session it ends because nobody used it.
EXPIRING = "Expiring session "


def parse_args() -> argparse.Namespace:
    """The options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--instances", type=int, default=20, help="instances (20)")
    add("--session-timeout", type=float, default=4.0, help="seconds asked (4)")
    add("--pause", type=float, default=10.0, help="A's SIGSTOP, seconds (10)")
    add("--settle", type=float, default=3.0, help="SIGCONT to B's SIGTERM (3)")
    add("--runs", type=int, default=2, help="runs of each checkout (2)")
    add("--keep-logs", action="store_true", help="keep the agents' logs")
    add("--mode", choices=("paused", "removed", "double"), default="paused")
    add_checkout_option(parser)
    args = parser.parse_args()
    args.parser = parser
    return args


def file_pid(state_dir: Path) -> int | None:
    """The pid the state file names, if any."""
    try:
        document = json.loads((state_dir / "zookeeper-session.json").read_bytes())
    except (OSError, ValueError):
        return None
    return int(document["owner"]["pid"])


def lines_with(log: Path, text: str) -> list[str]:
    """The lines of `log` that contain `text`."""
    return [line for line in log.read_text().splitlines() if text in line]


def new_sessions(log: Path) -> set[str]:
    """The sessions a process's log says it opened at start."""
    return {
        line.split(NEW_SESSION, 1)[1].split(";")[0]
        for line in lines_with(log, NEW_SESSION)
    }


class Scene(NamedTuple):
    """The servers and the reader every run shares, and where files go."""

    zookeeper: ZooKeeperServer
    client: KazooClient
    port: int
    workdir: Path


def one_run(
    args: argparse.Namespace, scene: Scene, label: str, checkout: Path
) -> list[tuple[str, str]]:
    """A paused, B started, A resumed; then B restarted as C."""
    zookeeper, client, port, workdir = scene
    root, service = f"/superseded-{label}", f"/members-{label}"
    parent = f"{service}/cache"
    state_dir = workdir / f"state-{label}"
    text = restart.config(args, zookeeper.hosts, [port], root, service, state_dir)
    nodes = [f"{root}/agents/{restart.AGENT_ID}"] + [
        f"{root}/instances/r{i}" for i in range(args.instances)
    ]

    def published(pid: int) -> bool:
        every = restart.published(client, root, parent, args.instances)
        return every and restart.agent_pid(client, root) == pid

    with ExitStack() as running:
        a = Agent(workdir, text, f"{label}-a", pythonpath=checkout)
        running.callback(a.stop)
        a.wait_ready()
        wait_until(lambda: published(a.pid), 60.0, "A's nodes")
        a.child.process.send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        running.callback(lambda: a.child.process.send_signal(signal.SIGCONT))
        time.sleep(args.session_timeout + 2.0)
        b = Agent(workdir, text, f"{label}-b", pythonpath=checkout)
        running.callback(b.stop)
        b.wait_ready()
        wait_until(lambda: published(b.pid), 60.0, "B's nodes")
        time.sleep(max(0.0, args.pause - (time.monotonic() - stopped)))
        a.child.process.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        a_ended: list[float] = []
        threading.Thread(
            target=lambda: (a.child.process.wait(), a_ended.append(time.monotonic())),
            daemon=True,
        ).start()
        time.sleep(args.settle)
        holder = file_pid(state_dir)
        holder_name = {a.pid: "A", b.pid: "B"}.get(holder or 0, str(holder))
        a_running = "running" if a.child.running else "gone"
        watch = NodeWatch(zookeeper.hosts, nodes, {parent: args.instances}).start()
        running.callback(watch.stop)
        time.sleep(1.0)
        watch.mark()
        b.child.process.send_signal(signal.SIGTERM)
        b.child.process.wait(20.0)
        c = Agent(workdir, text, f"{label}-c", pythonpath=checkout)
        running.callback(c.stop)
        c.wait_ready()
        try:
            wait_until(lambda: published(c.pid), 60.0, "C's nodes")
        except RuntimeError:
            pass
        time.sleep(1.0)
        overwritten = lines_with(b.log, OVERWRITTEN)
        reattached = "no"
        for line in lines_with(c.log, REATTACHED):
            session = line.split(REATTACHED, 1)[1].split()[0]
            whose = "B's" if session in new_sessions(b.log) else "not B's"
            reattached = f"yes, to {whose} session {session}"
        instance_gap = max(watch.longest_gap(n) for n in nodes[1:])
        missing = sum(1 for n in nodes[1:] if watch.longest_gap(n) > 0)
        agent_gap, member_gap = watch.longest_gap(nodes[0]), watch.longest_gap(parent)
        try:
            a_status: int | str = a.child.process.wait(60.0)
        except Exception:
            a_status = "still running after 60 s"
        a_ran = (a_ended[0] if a_ended else time.monotonic()) - resumed
        c.child.process.send_signal(signal.SIGUSR2)
        c.child.process.wait(20.0)
    return [
        (f"{label}: load average", load_average()),
        (f"{label}: A after SIGCONT", f"exit {a_status} after {a_ran:.1f} s"),
        (
            f"{label}: at B's SIGTERM, A / the file names",
            f"{a_running} / {holder_name}",
        ),
        (f"{label}: B's 'no longer holds' lines", str(len(overwritten))),
        (f"{label}: C reattached", reattached),
        (
            f"{label}: B to C, instance nodes missing",
            f"{missing} of {args.instances}, longest {instance_gap:.2f} s",
        ),
        (
            f"{label}: B to C, agent node / a member missing",
            f"{agent_gap:.2f} s / {member_gap:.2f} s",
        ),
    ]


class Listing:
    """
    What a reader finds every 20 ms, from `start` to `stop`: each node's
    holder session (None: missing) and each parent's member count.
    """

    def __init__(self, client: KazooClient, nodes: list[str], parents: list[str]):
        self.client, self.nodes, self.parents = client, nodes, parents
        self.samples: list[tuple[float, dict[str, int | None], dict[str, int]]] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Listing:
        """Start polling."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling."""
        self._stopping.set()
        self._thread.join(5.0)

    def _run(self) -> None:
        client = self.client
        while not self._stopping.wait(0.02):
            try:
                stats = [(n, client.exists_async(n)) for n in self.nodes]
                lists = [(p, client.get_children_async(p)) for p in self.parents]
                owners = {}
                for node, stat_of in stats:
                    stat = stat_of.get(timeout=5.0)
                    owners[node] = None if stat is None else stat.ephemeralOwner
                counts = {}
                for parent, listing in lists:
                    try:
                        counts[parent] = len(listing.get(timeout=5.0))
                    except NoNodeError:
                        counts[parent] = 0
            except Exception:
                continue
            self.samples.append((time.monotonic(), owners, counts))

    def present(self, node: str, since: float) -> tuple[float, float] | None:
        """When `node` was first and last seen after `since`, if ever."""
        seen = [t for t, owners, _ in self.samples if t >= since and owners[node]]
        return (seen[0] - since, seen[-1] - since) if seen else None

    def longest_missing(self, node: str, since: float) -> float:
        """The longest time `node` was missing after `since`."""
        longest, missing_from = 0.0, None
        for t, owners, _ in self.samples:
            if t < since:
                continue
            if owners[node] is None:
                missing_from = t if missing_from is None else missing_from
                longest = max(longest, t - missing_from)
            else:
                missing_from = None
        return longest

    def over(self, parent: str, count: int, since: float) -> tuple[float, float] | None:
        """When `parent` was first and last seen with over `count` members."""
        seen = [t for t, _, c in self.samples if t >= since and c[parent] > count]
        return (seen[0] - since, seen[-1] - since) if seen else None


def ended(process: Any, timeout: float) -> int | str:
    """The exit status of `process` within `timeout`, or that it still runs."""
    try:
        return int(process.wait(timeout))
    except Exception:
        return "running"


def resume(agent: Agent, settle: float) -> tuple[float, int | str, float]:
    """
    SIGCONT `agent`, then wait `settle` s: when it was resumed, its exit
    status (or that it runs) and how long it ran after.
    """
    agent.child.process.send_signal(signal.SIGCONT)
    resumed = time.monotonic()
    status = ended(agent.child.process, settle)
    ran = time.monotonic() - resumed
    time.sleep(max(0.0, settle - ran))
    return resumed, status, ran


def span(seen: tuple[float, float] | None) -> str:
    """A first--last span, or never."""
    return "never" if seen is None else f"{seen[0]:.1f}--{seen[1]:.1f} s"


def removed_run(
    args: argparse.Namespace, scene: Scene, label: str, checkout: Path
) -> list[tuple[str, str]]:
    """A paused; B started without A's instance ``gone``; A resumed."""
    zookeeper, client, port, workdir = scene
    root, service = f"/removed-{label}", f"/members-{label}"
    parent, state_dir = f"{service}/cache", workdir / f"state-{label}"
    count = args.instances
    more = argparse.Namespace(**{**vars(args), "instances": count + 1})
    a_text = restart.config(more, zookeeper.hosts, [port], root, service, state_dir)
    b_text = restart.config(args, zookeeper.hosts, [port], root, service, state_dir)
    gone = f"{root}/instances/r{count}"
    with ExitStack() as running:
        a = Agent(workdir, a_text, f"{label}-a", pythonpath=checkout)
        running.callback(a.stop)
        a.wait_ready()
        wait_until(
            lambda: (
                restart.published(client, root, parent, count + 1)
                and restart.agent_pid(client, root) == a.pid
            ),
            60.0,
            "A's nodes",
        )
        a.child.process.send_signal(signal.SIGSTOP)
        running.callback(lambda: a.child.process.send_signal(signal.SIGCONT))
        time.sleep(args.session_timeout + 2.0)
        b = Agent(workdir, b_text, f"{label}-b", pythonpath=checkout)
        running.callback(b.stop)
        b.wait_ready()
        wait_until(
            lambda: (
                restart.published(client, root, parent, count)
                and restart.agent_pid(client, root) == b.pid
            ),
            60.0,
            "B's nodes",
        )
        time.sleep(max(0.0, args.pause - args.session_timeout - 2.0))
        listing = Listing(client, [gone], [parent]).start()
        running.callback(listing.stop)
        server_log = zookeeper.directory / "zookeeper.log"
        logged = server_log.stat().st_size
        resumed, a_status, a_ran = resume(a, args.settle)
        listing.stop()
        with server_log.open("rb") as log:
            log.seek(logged)
            expired = [
                line.split(EXPIRING, 1)[1].split(",")[0]
                for line in log.read().decode(errors="replace").splitlines()
                if EXPIRING in line
            ]
        b.child.process.send_signal(signal.SIGUSR2)
        b.child.process.wait(20.0)
    return [
        (f"{label}: load average", load_average()),
        (f"{label}: A after SIGCONT", f"exit {a_status} after {a_ran:.1f} s"),
        (f"{label}: 'gone' listed after SIGCONT", span(listing.present(gone, resumed))),
        (
            f"{label}: over {count} members after SIGCONT",
            span(listing.over(parent, count, resumed)),
        ),
        (
            f"{label}: sessions expired after SIGCONT",
            ", ".join(expired) or "none",
        ),
    ]


def double_run(
    args: argparse.Namespace, scene: Scene, label: str, checkout: Path
) -> list[tuple[str, str]]:
    """A double start; the loser hung, the winner paused past its session."""
    zookeeper, client, port, workdir = scene
    for attempt in range(5):
        tried = f"{label}-{attempt}"
        root, service = f"/double-{tried}", f"/members-{tried}"
        parent, state_dir = f"{service}/cache", workdir / f"state-{tried}"
        text = restart.config(args, zookeeper.hosts, [port], root, service, state_dir)
        nodes = [f"{root}/agents/{restart.AGENT_ID}"] + [
            f"{root}/instances/r{i}" for i in range(args.instances)
        ]
        with ExitStack() as running:
            pair = [
                Agent(workdir, text, f"{tried}-{name}", pythonpath=checkout)
                for name in "ab"
            ]
            for agent in pair:
                running.callback(agent.stop)
                running.callback(
                    lambda a=agent: a.child.process.send_signal(signal.SIGCONT)
                )
            wait_until(
                lambda r=root, p=parent: restart.published(
                    client, r, p, args.instances
                ),
                60.0,
                "the winner's nodes",
            )
            holder = restart.agent_pid(client, root)
            winner, loser = pair if holder == pair[0].pid else pair[::-1]
            time.sleep(1.0)
            if file_pid(state_dir) != loser.pid:
                continue
            loser.child.process.send_signal(signal.SIGSTOP)
            winner.child.process.send_signal(signal.SIGSTOP)
            time.sleep(args.session_timeout + 2.0)
            listing = Listing(client, nodes, [parent]).start()
            running.callback(listing.stop)
            resumed, w_status, w_ran = resume(winner, args.settle)
            _, l_status, l_ran = resume(loser, args.settle)
            listing.stop()
            no_agent = listing.longest_missing(nodes[0], resumed)
            instance = max(listing.longest_missing(n, resumed) for n in nodes[1:])
            for agent in pair:
                if agent.child.running:
                    agent.child.process.send_signal(signal.SIGUSR2)
                    ended(agent.child.process, 20.0)
        return [
            (f"{label}: load average", load_average()),
            (f"{label}: starts until the file named the loser", str(attempt + 1)),
            (f"{label}: W after SIGCONT", f"exit {w_status} after {w_ran:.1f} s"),
            (f"{label}: L after SIGCONT", f"exit {l_status} after {l_ran:.1f} s"),
            (
                f"{label}: from W's SIGCONT, no agent node / an instance missing",
                f"{no_agent:.2f} s / {instance:.2f} s",
            ),
        ]
    return [(f"{label}: the file named the winner in 5 starts", "no run")]


MODES = {"paused": one_run, "removed": removed_run, "double": double_run}


def main() -> int:
    """Run each checkout in turns, print the table, stop everything started."""
    args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-superseded-"))
    rows = [("machine", machine()), ("load average at start", load_average())]
    try:
        with ExitStack() as started:
            [server] = start_redis_servers(1, started)
            zookeeper, client = start_zookeeper(started)

            scene = Scene(zookeeper, client, server.port, workdir)

            def run(
                args: argparse.Namespace, label: str, checkout: Path, number: int
            ) -> list[tuple[str, str]]:
                return MODES[args.mode](args, scene, f"{label}-{number}", checkout)

            rows += rows_in_turns(args.parser, args, run)
            rows.append(("load average at the end", load_average()))
    finally:
        if args.keep_logs:
            print(f"logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table(rows, "A paused process back after a newer one took over"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

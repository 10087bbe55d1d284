"""
Another client meddling with a live group's nodes in a loop, as readers
and the agents see it (DESIGN.md section 2.5).

``--agents`` agents ``a``, ``b``, ... (two by default; ``twistd -n
sentinel``, ``--replicas``,
default refresh 30 s and heartbeat 10 s) share ``--instances`` instances
over two real redis-servers, one of them SIGSTOPped once every node is
written, until its instances are published down. Then a client of the
same ZooKeeper (kazoo, its own session, no ACLs) does ``--kind`` every
``--every`` seconds for ``--for`` seconds:

- ``delete``: deletes every ``{root}/instances`` node;
- ``forge``: writes every instance node over with a document saying
  ``up``, its agent ``a``;
- ``squat``: deletes every instance node and makes its own there
  (ephemeral, the same document saying ``up``, its agent ``a``), each in
  one transaction: a squatter that is no member, rewriting them in a loop;
- ``catalogs``: creates and deletes a node under ``{root}/catalogs``
  (the children watch every member keeps), ``--burst`` times a round;
- ``opinions``: the same under ``{root}/opinions/{first instance}``
  (its primary's children watch, with replicas 2);
- ``opinion-forge``: writes every opinion of the stopped server's
  instances over with the same document saying ``up`` and ready (with
  replicas 2 and its quorum of 2, one opinion ``up`` is a verdict
  ``up``): what an observer wrote, as any client may rewrite it;
- ``agent-forge``: writes ``a``'s agent node over with another pid and
  no instances (what a member's agent node says is not what the others
  go by: printed, how many instance nodes each agent held before and
  after, and how long after the meddler stopped ``a``'s agent node
  named its own pid again);
- ``takeover-forge``: as ``forge``, and ``b`` is stopped (SIGTERM: it
  leaves the group, and ``a`` takes its nodes over) 1 s after the
  meddler begins: ``a`` finds the forged data within the 15 s after a
  takeover in which a write over a node may be the previous primary's
  late set;
- ``own-catalog``: deletes ``a``'s catalog (every part listed), which
  ``a`` writes again once it finds it missing: whether the others then
  take ``a``'s instances over and hand them back in a loop;
- ``catalog-forge``: writes ``garbage`` over every part of ``a``'s
  catalog (which ``a`` finds at its next heartbeat and writes again
  under new names).

A reader polls every instance node meanwhile (every 0.1 s) and for
``--after`` seconds once it stops. Printed: the agents' ZooKeeper writes
a second (``/metrics`` ``sentinel_zk_writes_total``), the requests a
second its session sent ZooKeeper (reads, writes, pings: ZooKeeper's
``cons``), and CPU, before and during; the meddler's operations; what
the reader saw (node reads that found none, or ``up`` for an instance of
the stopped server); how long after the meddler stopped every node was
back and right; each agent's log lines (and those about nodes deleted
behind its back) and ``/healthz`` answers meanwhile (each reason once,
its figures as N, and the first other than 200 as it was); how many
instance nodes each held as the meddler began, how many of them at
version 0, and how many writes over its nodes it named in all
(``sentinel_zk_nodes_written_over_total``).

    .venv/bin/python benchmarks/meddle.py --kind delete [--every 0.01]
        [--for 15] [--replicas 1] [--checkout this=.]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import tempfile
import threading
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    LOOPBACK,
    Agent,
    Instance,
    add_checkout_option,
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
from kazoo.exceptions import KazooException, NoNodeError
from squat import healthz, members, start_agent

ROOT = "/meddle"
# The pid written into ``a``'s agent node by ``--kind agent-forge``.
FORGED_PID = 1


def main() -> None:
    """Parse the options, run each checkout `--runs` times, print tables."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--kind",
        choices=(
            "delete",
            "forge",
            "squat",
            "catalogs",
            "opinions",
            "opinion-forge",
            "agent-forge",
            "takeover-forge",
            "own-catalog",
            "catalog-forge",
        ),
        required=True,
    )
    parser.add_argument("--instances", type=int, default=30)
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--every", type=float, default=0.01)
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--for", dest="duration", type=float, default=15.0)
    parser.add_argument("--after", type=float, default=40.0)
    parser.add_argument("--runs", type=int, default=1)
    add_checkout_option(parser)
    options = parser.parse_args()
    stop_on_sigterm()
    for label, checkout in checkouts_of(parser, options.checkout):
        for run in range(options.runs):
            rows = one_run(options, checkout)
            title = (
                f"{label} ({commit_of(checkout)}), run {run + 1}: --kind"
                f" {options.kind} every {options.every} s, replicas"
                f" {options.replicas}, load {load_average()}"
            )
            print(table(rows, title), flush=True)


def writes(agent: Agent, metric: str = "sentinel_zk_writes_total") -> float:
    """
    The agent's ZooKeeper writes so far (every op and outcome), or its
    `metric`'s samples summed.
    """
    url = f"http://{LOOPBACK}:{agent.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=10.0) as response:
        text = response.read().decode()
    found = re.findall(rf"^{metric}(?:\{{[^}}]*\}})? (\S+)$", text, re.M)
    return sum(float(value) for value in found)


class Reader:
    """Polls every instance node: missing reads, wrong ``up`` reads."""

    def __init__(self, client: KazooClient, names: list[str], down: set[str]):
        self.client = client
        self.names = names
        self.down = down
        self.reads = self.missing = self.wrong = 0
        self.last_bad = time.monotonic()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopping.is_set():
            bad = False
            for name in self.names:
                self.reads += 1
                try:
                    data, _ = self.client.get(f"{ROOT}/instances/{name}")
                    said = json.loads(data)
                except (NoNodeError, ValueError):
                    self.missing += 1
                    bad = True
                    continue
                if name in self.down and said.get("status") == "up":
                    self.wrong += 1
                    bad = True
            if bad:
                self.last_bad = time.monotonic()
            time.sleep(0.1)


def requests_sent(
    zookeeper: Any, client: KazooClient, agent_ids: tuple[str, ...]
) -> dict[str, int]:
    """
    The requests each agent's session (its agent node's owner) has sent
    ZooKeeper on its connection so far (``cons``: ``recved``).
    """
    sessions = {}
    for agent_id in agent_ids:
        stat = client.exists(f"{ROOT}/agents/{agent_id}")
        if stat is not None:
            sessions[stat.ephemeralOwner] = agent_id
    sent = {}
    for line in zookeeper.four_letter_word("cons").decode().splitlines():
        found = re.search(r"recved=(\d+),.*?sid=0x([0-9a-f]+)", line)
        if found and int(found[2], 16) in sessions:
            sent[sessions[int(found[2], 16)]] = int(found[1])
    return sent


def forged_document(name: str) -> bytes:
    """What ``forge`` writes over `name`'s node: ``up``, its agent ``a``."""
    return json.dumps(
        {"name": name, "status": "up", "ready": True, "agent": "a", "schema": 1}
    ).encode()


def meddle(client: KazooClient, options: argparse.Namespace, names: list[str]) -> int:
    """Meddle as `--kind` says for `--for` seconds; how many operations."""
    done = 0
    deadline = time.monotonic() + options.duration
    forged = {name: forged_document(name) for name in names}
    parent = {
        "catalogs": f"{ROOT}/catalogs",
        "opinions": f"{ROOT}/opinions/{names[0]}",
    }.get(options.kind)
    forged_paths = (
        forged_opinions(client, names) if options.kind == "opinion-forge" else {}
    )
    if options.kind == "agent-forge":
        said = json.loads(client.get(f"{ROOT}/agents/a")[0])
        forged_agent = {**said, "pid": FORGED_PID, "instances": []}
        forged_paths = {f"{ROOT}/agents/a": json.dumps(forged_agent).encode()}
    while time.monotonic() < deadline:
        if options.kind in ("opinion-forge", "agent-forge"):
            results = [client.set_async(p, data) for p, data in forged_paths.items()]
        elif options.kind == "catalog-forge":
            results = [
                client.set_async(f"{ROOT}/catalogs/{part}", b"garbage")
                for part in client.get_children(f"{ROOT}/catalogs")
                if part.startswith("a.")
            ]
        elif options.kind == "own-catalog":
            results = [
                client.delete_async(f"{ROOT}/catalogs/{part}")
                for part in client.get_children(f"{ROOT}/catalogs")
                if part.startswith("a.")
            ]
        elif options.kind == "delete":
            results = [client.delete_async(f"{ROOT}/instances/{n}") for n in names]
        elif options.kind == "squat":
            results = [
                squatted(client, f"{ROOT}/instances/{n}", forged[n]) for n in names
            ]
        elif options.kind in ("forge", "takeover-forge"):
            results = [
                client.set_async(f"{ROOT}/instances/{n}", forged[n]) for n in names
            ]
        else:
            results = []
            for i in range(options.burst):
                path = f"{parent}/meddler-{i}"
                results.append(client.create_async(path, b"{}", ephemeral=True))
                results.append(client.delete_async(path))
        for result in results:
            try:
                result.get(timeout=10.0)
                done += 1
            except KazooException:
                pass
        time.sleep(options.every)
    return done


def squatted(client: KazooClient, path: str, data: bytes) -> Any:
    """Delete `path` and make it the client's own, in one transaction."""
    transaction = client.transaction()
    transaction.delete(path)
    transaction.create(path, data, ephemeral=True)
    return transaction.commit_async()


def forged_opinions(client: KazooClient, names: list[str]) -> dict[str, bytes]:
    """Every opinion of `names` now there, said ``up`` and ready, by path."""
    forged = {}
    for name in names:
        parent = f"{ROOT}/opinions/{name}"
        try:
            observers = client.get_children(parent)
        except NoNodeError:
            continue
        for observer in observers:
            try:
                data, _ = client.get(f"{parent}/{observer}")
            except NoNodeError:
                continue
            said = {**json.loads(data), "status": "up", "ready": True, "error": None}
            forged[f"{parent}/{observer}"] = json.dumps(said).encode()
    return forged


def holdings(
    client: KazooClient, names: list[str], labels: tuple[str, ...]
) -> dict[str, list[int]]:
    """
    The version of each instance node as the meddler begins, by the agent
    whose session holds it: a write over a node at version 0 (made, or
    taken over, and not written since) was once never named, so an agent
    holding only such nodes answered /healthz 200 all through a forgery.
    """
    agents = {}
    for label in labels:
        try:
            _, stat = client.get(f"{ROOT}/agents/{label}")
        except NoNodeError:
            continue  # Stopped (``takeover-forge``).
        agents[stat.ephemeralOwner] = label
    held: dict[str, list[int]] = {}
    for name in names:
        try:
            _, stat = client.get(f"{ROOT}/instances/{name}")
        except NoNodeError:
            held.setdefault("none", []).append(-1)
            continue
        holder = agents.get(stat.ephemeralOwner, "another")
        held.setdefault(holder, []).append(stat.version)
    return held


def one_run(options: argparse.Namespace, checkout: Path) -> list[tuple[str, str]]:
    """One group, one meddler: the figures of the module docstring."""
    labels = tuple("abcdefghij"[: options.agents])
    with ExitStack() as started, tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        zookeeper, reader_client = start_zookeeper(started)
        servers = start_redis_servers(2, started)
        instances = [
            Instance(f"cache-{i}", servers[i % 2].port)
            for i in range(options.instances)
        ]
        names = [i.name for i in instances]
        agents = [
            start_agent(
                started,
                workdir,
                zookeeper.hosts,
                instances,
                agent_id,
                checkout,
                settings={"replicas": options.replicas},
                root=ROOT,
            )  # fmt: skip
            for agent_id in labels
        ]
        wait_until(lambda: min(map(members, agents)) == len(agents), 30.0, "the group")
        stopped = servers[1]
        down = {i.name for i in instances if i.port == stopped.port}
        os.kill(stopped.pid, signal.SIGSTOP)
        started.callback(os.kill, stopped.pid, signal.SIGCONT)

        def published_wrong() -> list[str]:
            """Each instance node missing or wrong now: its name, data, stat."""
            wrong = []
            for name in names:
                try:
                    data, stat = reader_client.get(f"{ROOT}/instances/{name}")
                except NoNodeError:
                    wrong.append(f"{name}: missing")
                    continue
                if (json.loads(data)["status"] == "down") != (name in down):
                    # The forger's bytes, or a document an agent wrote
                    # (then what it says of the instance tells a verdict
                    # from a write that did not land: `agents_say`).
                    whose = "forged" if data == forged_document(name) else "agent's"
                    wrong.append(
                        f"{name}: {whose} {data[:80]!r} version {stat.version}"
                        f" owner {stat.ephemeralOwner:#x}"
                    )
            return wrong

        def published_right() -> bool:
            return not published_wrong()

        wait_until(published_right, 60.0, "every node written, and right")
        time.sleep(2.0)
        before = [(writes(x), x.cpu_seconds()) for x in agents]
        sent_before = requests_sent(zookeeper, reader_client, labels)
        time.sleep(5.0)
        quiet = [(writes(x), x.cpu_seconds()) for x in agents]
        sent_quiet = requests_sent(zookeeper, reader_client, labels)
        reader = Reader(reader_client, names, down)
        reader.thread.start()
        answers: dict[str, dict[str, int]] = {label: {} for label in labels}
        # The agents running while the meddler meddles, with their labels.
        live = list(zip(agents, labels, strict=True))
        # The first answer other than 200 of each, as it was, and how many
        # named a write by another client (among any other reasons).
        first: dict[str, str] = {}
        named_in: dict[str, int] = {}
        polling = threading.Event()

        def poll() -> None:
            while not polling.is_set():
                for agent, label in live:
                    code, body = healthz(agent)
                    if code != 200 and label not in first:
                        first[label] = body[:400]
                    said = re.sub(r"[0-9.]+", "N", body[:300])
                    key = "200" if code == 200 else f"{code} {said}"
                    answers[label][key] = answers[label].get(key, 0) + 1
                    if "written by another client" in body:
                        named_in[label] = named_in.get(label, 0) + 1
                time.sleep(0.5)

        meddler = KazooClient(hosts=zookeeper.hosts, timeout=30.0)
        meddler.start(timeout=10.0)
        started.callback(meddler.close)
        started.callback(meddler.stop)
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        held = holdings(reader_client, names, labels)
        if options.kind == "takeover-forge":
            # b leaves 1 s into the forgery: a takes its nodes over, and
            # finds the forged data at its first writes of them.
            live = live[:1]
            leave = threading.Timer(1.0, agents[1].stop)
            leave.start()
            started.callback(leave.join)
        began = time.monotonic()
        meddled = sorted(down) if options.kind == "opinion-forge" else names
        done = meddle(meddler, options, meddled)
        took = time.monotonic() - began
        during = [(writes(x), x.cpu_seconds()) for x, _ in live]
        sent_during = requests_sent(zookeeper, reader_client, labels)
        meddler.stop()
        ended = time.monotonic()
        agent_node_right = None
        while (
            options.kind == "agent-forge" and time.monotonic() < ended + options.after
        ):
            said = json.loads(reader_client.get(f"{ROOT}/agents/a")[0])
            if said.get("pid") != FORGED_PID:
                agent_node_right = time.monotonic() - ended
                break
            time.sleep(0.02)
        time.sleep(max(0.0, ended + options.after - time.monotonic()))
        reader.stopping.set()
        reader.thread.join(5.0)
        polling.set()
        poller.join(5.0)
        wrong = published_wrong()
        right = not wrong
        rows = [("meddler's operations", f"{done:,} in {took:.1f} s")]
        if options.kind == "agent-forge":
            after = holdings(reader_client, names, labels)
            rows.append(
                (
                    "instance nodes held before, after (by agent)",
                    ", ".join(
                        f"{x} {len(held.get(x, []))} {len(after.get(x, []))}"
                        for x in labels
                    ),
                )
            )
            rows.append(
                (
                    "a's agent node right again",
                    "never"
                    if agent_node_right is None
                    else f"{agent_node_right:.2f} s after the meddler stopped",
                )
            )
        for i, (agent, label) in enumerate(live):
            (w0, c0), (w1, c1), (w2, c2) = before[i], quiet[i], during[i]
            rows.append(
                (
                    f"{label}: writes/s, CPU quiet",
                    f"{(w1 - w0) / 5.0:.1f}/s, {(c1 - c0) / 5.0 * 100:.0f} %",
                )
            )
            rows.append(
                (
                    f"{label}: writes/s, CPU meddled",
                    f"{(w2 - w1) / took:.1f}/s, {(c2 - c1) / took * 100:.0f} %",
                )
            )
            if label in sent_before and label in sent_quiet and label in sent_during:
                quiet_rate = (sent_quiet[label] - sent_before[label]) / 5.0
                meddled_rate = (sent_during[label] - sent_quiet[label]) / took
                rows.append(
                    (
                        f"{label}: ZooKeeper requests/s quiet, meddled",
                        f"{quiet_rate:.1f}, {meddled_rate:.1f}",
                    )
                )
            versions = held.get(label, [])
            named = writes(agent, "sentinel_zk_nodes_written_over_total")
            late = writes(agent, "sentinel_zk_late_sets_after_takeover_total")
            rows.append(
                (
                    f"{label}: nodes held, at version 0, written-over named",
                    f"{len(versions)}, {versions.count(0)}, {named:.0f}",
                )
            )
            rows.append((f"{label}: late sets after a takeover", f"{late:.0f}"))
        rows += [
            ("reader's node reads", f"{reader.reads:,}"),
            ("  found no node", f"{reader.missing:,}"),
            ("  up, server stopped", f"{reader.wrong:,}"),
            (
                "all back and right",
                f"{max(0.0, reader.last_bad - ended):.1f} s after the meddler"
                f" stopped (right at the end: {right})",
            ),
        ]
        if wrong:
            forged_left = sum(": forged " in w for w in wrong)
            rows.append(
                (
                    f"wrong at the end ({len(wrong)}: {forged_left} forged,"
                    f" {len(wrong) - forged_left} an agent's document)",
                    "; ".join(wrong[:3]),
                )
            )
            first_wrong = wrong[0].split(":")[0]
            for agent, label in live:
                rows.append(
                    (
                        f"{label} says of {first_wrong}",
                        agent_says(agent.http_port, first_wrong),
                    )
                )
                url = f"http://{LOOPBACK}:{agent.http_port}/debug/stats"
                with urllib.request.urlopen(url, timeout=10.0) as response:
                    stats = json.loads(response.read()).get("zookeeper", {})
                rows.append((f"{label}'s ZooKeeper stats", json.dumps(stats)[:1500]))
                for line in agent.log.read_text(errors="replace").splitlines():
                    if any(w.split(":")[0] + " " in line + " " for w in wrong[:3]):
                        rows.append((f"{label}'s log on them", line[:300]))
        for agent, label in live:
            log = agent.log.read_text(errors="replace")
            rows.append(
                (
                    f"{label}'s log: lines, of them deletions",
                    f"{log.count(chr(10)):,}, {log.count('behind the agent'):,}",
                )
            )
            polled = sum(answers[label].values())
            rows.append(
                (
                    f"{label}'s /healthz naming another client's writes",
                    f"{named_in.get(label, 0)} of {polled}",
                )
            )
            for key, count in answers[label].items():
                rows.append((f"{label}'s /healthz x{count}", key))
            if label in first:
                rows.append((f"{label}'s first not 200", first[label]))
        return rows


def agent_says(port: int, name: str) -> str:
    """An agent's status and verdict of instance `name` (``/instances``)."""
    url = f"http://{LOOPBACK}:{port}/instances/{name}"
    try:
        with urllib.request.urlopen(url, timeout=10.0) as response:
            said = json.loads(response.read())
    except OSError as e:
        return f"no answer ({e})"
    return json.dumps(
        {key: said.get(key) for key in ("status", "since", "error", "verdict")}
    )


if __name__ == "__main__":
    main()

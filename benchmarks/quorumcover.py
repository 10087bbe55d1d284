"""
How long an instance that dies during a cover stays published ``up``.

Three ``twistd -n sentinel`` agents share ``--instances`` names on
``--servers`` real redis-servers, ``zookeeper.replicas`` ``--replicas``,
``zookeeper.quorum`` ``--quorum``, serverset discovery. Agents a and b
reach ZooKeeper directly, agent c through `slowpath.SlowPath`. Once the
group is steady, the scene begins, then the redis-server holding the most
instances c is the primary of is SIGKILLed (``--signal stop``: SIGSTOPped)
``--kill-after`` s later; a reader polls every instance node and
discovery listing every ``--poll`` s and times, for each of that server's
instances, how long its node still said ``up`` and how long discovery
still listed it, from the signal on.

Scenes (``--scene``):

- ``cut``: c's path is cut for ``--cut`` s; once c's session has ended
  on the server's side (its agent node gone), the path heals but holds
  every byte ``--delay`` s each way and passes ``--rate`` bytes a second.
  In the runs recorded in BENCHMARKS.rst c was listed gone and its
  nodes made by their new primaries: no cover, the session-end case.
- ``delete``: c's path is cut for ``--cut`` s (less than the session
  timeout: c stays listed, its session and opinions live) and another
  client deletes c's instance nodes, as ``coverdup.py`` does.
- ``throttle``: c's path passes ``--rate`` bytes a second, and b leaves
  (``SIGUSR2``, as ``slowpath.py``'s scene of that name): c is the new
  primary of part of b's share and cannot take it over, b's close takes
  those nodes, and a covers them. The server killed is then the one with
  the most instances a covers; the rows "(c the primary)" are those.
  It is run as soon as the group is steady: later, c takes b's nodes
  over before b goes, and nothing is covered. With ``--victim held``
  the server killed is the one with the most instances whose node c
  holds (its own share, which it holds but cannot write over its
  throttled path), covers or not: the rows "(c the primary)" are those.
- ``crash``: no cut; c is SIGKILLed with the server (its session expires;
  the bound is interval x fall + timeout + the session timeout).

    .venv/bin/python benchmarks/quorumcover.py [--scene throttle] \\
        [--replicas 2] [--quorum 2] [--signal kill] [--victim held] \\
        [--checkout before=../main-tree --checkout after=.]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    LOOPBACK,
    Agent,
    Instance,
    add_agent_checkout_option,
    add_checkout_option,
    agent_checkout,
    agent_config,
    load_average,
    rows_in_turns,
    start_redis_servers,
    start_zookeeper,
    table,
)
from coverdup import DISCOVERY, ROOT, covered, endpoints
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from slowpath import SlowPath, Spoil

INTERVAL, TIMEOUT, FALL = 1.0, 0.5, 3


def node_of(client: KazooClient, name: str) -> dict[str, Any] | None:
    """The instance node's document, or None if missing."""
    try:
        data, _ = client.get(f"{ROOT}/instances/{name}")
    except NoNodeError:
        return None
    document: dict[str, Any] = json.loads(data)
    return document


def one_run(
    args: argparse.Namespace, label: str, checkout: Path, number: int
) -> list[tuple[str, str]]:
    """Servers, agents, the scene and the signal; the reader's figures."""
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as started:
        workdir = Path(tmp)
        servers = start_redis_servers(args.servers, started)
        zookeeper, client = start_zookeeper(started)
        instances = [
            Instance(f"r{i:04d}", servers[i % len(servers)].port)
            for i in range(args.instances)
        ]
        names = [i.name for i in instances]
        spoil = Spoil()
        host, port = zookeeper.hosts.split(":")
        path = SlowPath((host, int(port)), spoil)
        started.callback(path.close)
        settings: dict[str, float | int | str] = {
            "replicas": args.replicas,
            "quorum": args.quorum,
            "session_timeout": args.session_timeout,
            "discovery": "serverset",
            "discovery_root": DISCOVERY,
        }

        def start(agent_id: str, hosts: str) -> Agent:
            text = agent_config(
                instances, zookeeper=hosts, zk_root=ROOT, agent_id=agent_id,
                zk_settings=settings, interval=INTERVAL, timeout=TIMEOUT,
                fall=FALL,
            )  # fmt: skip
            agent = Agent(
                workdir,
                text,
                f"{agent_id}-{number}",
                pythonpath=agent_checkout(args, agent_id, checkout),
            )
            started.callback(agent.stop)
            agent.wait_ready()
            return agent

        agents = [
            start("a", zookeeper.hosts),
            start("b", zookeeper.hosts),
            start("c", f"{LOOPBACK}:{path.port}"),
        ]
        expected = {
            n: f"{LOOPBACK}:{i.port}" for n, i in zip(names, instances, strict=True)
        }

        def steady() -> bool:
            listed = endpoints(client, names)
            return all(listed[n] == [expected[n]] for n in names) and all(
                (d := node_of(client, n)) is not None and d.get("status") == "up"
                for n in names
            )

        deadline = time.monotonic() + 120.0
        while not steady():
            if time.monotonic() > deadline:
                raise RuntimeError("the group never listed each endpoint up")
            time.sleep(0.5)
        if args.scene != "throttle":
            # Past every observer's first reading of each verdict; but a
            # throttled c covered only within the group's first refresh
            # (BENCHMARKS.rst, "A slow primary's missing nodes made by a
            # secondary"): later, c takes b's nodes over before b goes.
            time.sleep(10.0)
        load_start = load_average()
        covers_before = sum(covered(a) for a in agents[:2])
        c_session = client.exists(f"{ROOT}/agents/c").ephemeralOwner
        scene_at = time.monotonic()
        if args.scene == "throttle":
            spoil.set(rate=args.rate)
            time.sleep(2.0)
            agents[1].child.process.send_signal(signal.SIGUSR2)
            agents[1].child.process.wait(20)
            deadline = time.monotonic() + 60.0
            while covered(agents[0]) == covers_before and args.victim == "covered":
                if time.monotonic() > deadline:
                    raise RuntimeError("a covered nothing within 60 s")
                time.sleep(0.2)
            time.sleep(1.0)
            if args.victim == "held":
                primary = {
                    n: "c"
                    for n in names
                    if (stat := client.exists(f"{ROOT}/instances/{n}")) is not None
                    and stat.ephemeralOwner == c_session
                }
            else:
                roles = agents[0].instances()
                primary = {
                    n: "c" if roles[n]["observing_as"] == "observer" else "-"
                    for n in names
                    if (node_of(client, n) or {}).get("agent") == "a"
                }
        else:
            primary = {n: (node_of(client, n) or {}).get("agent") for n in names}
        by_port = Counter(
            i.port for i in instances if primary.get(i.name) == "c"
        ).most_common(1)
        if not by_port:
            raise RuntimeError("c is the primary of no instance")
        victim_port = by_port[0][0]
        victim = next(s for s in servers if s.port == victim_port)
        dying = [i.name for i in instances if i.port == victim_port]
        c_owned = [n for n in dying if primary.get(n) == "c"]
        if args.scene in ("cut", "delete"):
            spoil.set(cut=True)
        if args.scene == "delete":
            for name in c_owned:
                try:
                    client.delete(f"{ROOT}/instances/{name}")
                except NoNodeError:
                    pass
        healed = args.scene not in ("cut", "delete")
        if args.scene == "throttle":
            scene_at = time.monotonic() - args.kill_after
        slowed = False
        signalled: float | None = None
        up_until: dict[str, float] = {}
        listed_until: dict[str, float] = {}
        missing_spans = 0.0
        documents: dict[str, Any] = {}
        while True:
            now = time.monotonic()
            if args.scene == "cut" and not slowed:
                if client.exists(f"{ROOT}/agents/c") is None:
                    # c's session ended: heal into a slow path, c back
                    # listed on a new session that writes too late.
                    spoil.set(delay=args.delay, rate=args.rate or None)
                    slowed = True
            if not healed and now - scene_at >= args.cut:
                if args.scene == "delete":
                    spoil.set()
                elif not slowed:
                    spoil.set(delay=args.delay, rate=args.rate or None)
                    slowed = True
                healed = True
            if signalled is None and now - scene_at >= args.kill_after:
                os.kill(victim.child.pid, getattr(signal, f"SIG{args.signal.upper()}"))
                if args.scene == "crash":
                    os.kill(agents[2].pid, signal.SIGKILL)
                signalled = now
            if signalled is not None:
                listed = endpoints(client, dying)
                for name in dying:
                    document = node_of(client, name)
                    if document is None:
                        missing_spans += args.poll
                    elif document.get("status") == "up":
                        up_until[name] = now - signalled
                        documents[name] = document
                    if listed[name]:
                        listed_until[name] = now - signalled
                if now - signalled >= args.watch:
                    break
            time.sleep(args.poll)
        at_end = {n: (node_of(client, n) or {}).get("status") for n in c_owned}
        owners: dict[str, list[int]] = {}
        listed_at_end = endpoints(client, c_owned, owners)
        sessions = {c_session: "c"}
        for agent_id in ("a", "b"):
            if (stat := client.exists(f"{ROOT}/agents/{agent_id}")) is not None:
                sessions[stat.ephemeralOwner] = agent_id
        # Whose session holds each member still listed at the end.
        holders = Counter(
            sessions.get(owner, "another")
            for n in c_owned
            for owner in owners.get(n, [])
        )
        if args.signal == "stop":
            os.kill(victim.child.pid, signal.SIGCONT)
        covers = sum(covered(a) for a in agents[:2] if a.child.running) - covers_before
        still = client.exists(f"{ROOT}/agents/c")
        same_session = still is not None and still.ephemeralOwner == c_session
        load_end = load_average()
        for agent in agents:
            agent.stop()

    def spread(until: dict[str, float], among: list[str]) -> str:
        found = {n: until[n] for n in among if n in until}
        never = [n for n in among if n not in found]
        values = sorted(found.values())
        said = f"{len(found)} of {len(among)}"
        if values:
            said += f", {values[0]:.1f}--{values[-1]:.1f} s"
        if never:
            said += f" ({len(never)} never)"
        return said

    stuck = sorted(n for n, t in up_until.items() if t >= args.watch - 1.0)
    longest = max(up_until, key=up_until.__getitem__, default=None)
    example = None if longest is None else documents[longest]
    rows = [
        (f"{label} run {number + 1}: scene", f"{args.scene}, SIG{args.signal.upper()}"),
        (
            "  the server's instances (c primary of, covered if throttle)",
            f"{len(dying)} ({len(c_owned)})",
        ),
        ("  node said up after the signal", spread(up_until, dying)),
        ("  (c the primary)", spread(up_until, c_owned)),
        ("  discovery listed it after the signal", spread(listed_until, dying)),
        ("  (c the primary)", spread(listed_until, c_owned)),
        (
            f"  still up at {args.watch:g} s (by the node's agent)",
            f"{len(stuck)} "
            + str(dict(Counter(documents[n].get("agent") for n in stuck))),
        ),
        (
            "  at the end (c the primary): node says / listed",
            ", ".join(
                f"{at_end[n]} / {len(listed_at_end[n])}" for n in sorted(c_owned)
            ),
        ),
        (
            "  at the end (c the primary): members held by",
            str(dict(sorted(holders.items()))) if holders else "none",
        ),
        ("  node missing (instance-seconds)", f"{missing_spans:.1f}"),
        ("  covers begun (a + b)", str(covers)),
        ("  c's session lived", str(same_session)),
        ("  load (start / end)", f"{load_start} / {load_end}"),
    ]
    if example is not None:
        rows.append(
            (
                "  the longest up node said last",
                json.dumps(
                    {k: example.get(k) for k in ("agent", "observers", "quorum")}
                ),
            )
        )
    return rows


def main() -> None:
    """Parse the options, run each checkout ``--runs`` times, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--scene", choices=("cut", "delete", "throttle", "crash"), default="throttle"
    )
    parser.add_argument("--signal", choices=("kill", "stop"), default="kill")
    parser.add_argument("--victim", choices=("covered", "held"), default="covered")
    parser.add_argument("--instances", type=int, default=30)
    parser.add_argument("--servers", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--quorum", type=int, default=2)
    parser.add_argument("--session-timeout", type=float, default=4.0)
    parser.add_argument("--cut", type=float, default=12.0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--rate", type=float, default=4096.0)
    parser.add_argument("--kill-after", type=float, default=8.0)
    parser.add_argument("--watch", type=float, default=30.0)
    parser.add_argument("--poll", type=float, default=0.2)
    parser.add_argument("--runs", type=int, default=1)
    add_checkout_option(parser)
    add_agent_checkout_option(parser)
    args = parser.parse_args()
    rows = rows_in_turns(parser, args, one_run)
    print(table(rows, "an instance dying during a cover, with a quorum"))


if __name__ == "__main__":
    main()

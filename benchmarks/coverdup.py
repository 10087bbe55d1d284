"""
Discovery endpoints listed twice while a secondary covers a live primary.

Three ``twistd -n sentinel`` agents share ``--instances`` names on a few
real redis-servers (healthy throughout), ``zookeeper.replicas`` 2,
``zookeeper.discovery = "serverset"`` (or ``--form nerve``; each
instance its own service).
Agents a and b reach ZooKeeper directly, agent c through
`slowpath.SlowPath`. Once the group is steady, c's path is cut for
``--cut`` s (less than the session timeout: c stays a listed member, its
session and its discovery members live), and another client deletes
every instance node c's session holds at once: the other observers
cover them (`sentinel.covers`) while c cannot write. A reader lists
each service every ``--poll`` s and reads each member, as Prometheus'
``serverset_sd_configs`` would, from the cut to ``--after`` s after the
heal, and counts the services that list one endpoint twice or none, and
for how long.

With ``--meddle``, c's path is never cut: for ``--cut`` s another client
deletes ``--burst`` instance nodes, whoever holds them, every 0.5 s
(as ``meddle.py --kind delete``, with discovery on): primaries that
write and secondaries that cover race for each.

With ``--settle 0`` (and a ``--refresh`` longer than the run), the cut
comes as soon as every endpoint is listed once: a group younger than a
refresh, whose secondaries' last readings of a node may predate its
member.

With ``--stranger``, just before the cut a client of its own (no agent)
makes a member of each endpoint whose node c holds, in its service, as
a tool that registers the endpoint too would: the reader leaves those
out of its counts, and says how many were still there at the end (no
agent's to delete).

    .venv/bin/python benchmarks/coverdup.py [--instances 60] [--cut 8] \\
        [--runs 2] [--settle 10] [--refresh 300] \\
        [--checkout before=../main-tree --checkout after=.]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import tempfile
import time
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
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from slowpath import SlowPath, Spoil

ROOT = "/sentinel"
DISCOVERY = "/discovery"


def endpoints(
    client: KazooClient,
    services: list[str],
    owners: dict[str, list[int]] | None = None,
    ignored: int | None = None,
) -> dict[str, list[str]]:
    """
    Each service's members' endpoints (``host:port``), as a reader reads
    them: a listing, then a ``get`` of each child. A child gone between
    the two (a member replaced in one transaction since the listing) has
    the service read again, as a reader's child watch would, up to three
    times: else each such replacement counts as the endpoint unlisted.
    Members the session `ignored` holds (``--stranger``'s) are left out.
    """
    found: dict[str, list[str]] = {}
    for _ in range(3):
        torn = _read_services(client, services, found, owners, ignored)
        if not torn:
            break
        services = torn
    return found


def _read_services(
    client: KazooClient,
    services: list[str],
    found: dict[str, list[str]],
    owners: dict[str, list[int]] | None = None,
    ignored: int | None = None,
) -> list[str]:
    """
    Read `services` into `found` (and each member's session into
    `owners`), but the members of session `ignored`; return those with a
    child gone meanwhile.
    """
    listings = {s: client.get_children_async(f"{DISCOVERY}/{s}") for s in services}
    reads: dict[str, list[Any]] = {}
    for service, listing in listings.items():
        try:
            children = listing.get(timeout=10.0)
        except NoNodeError:
            children = []
        reads[service] = [
            client.get_async(f"{DISCOVERY}/{service}/{child}") for child in children
        ]
    torn = []
    for service, answers in reads.items():
        found[service] = []
        if owners is not None:
            owners[service] = []
        for answer in answers:
            try:
                data, stat = answer.get(timeout=10.0)
            except NoNodeError:
                torn.append(service)
                continue
            if ignored is not None and stat.ephemeralOwner == ignored:
                continue
            document = json.loads(data)
            # Serverset nests the endpoint; nerve says it at the top.
            endpoint = document.get("serviceEndpoint", document)
            found[service].append(f"{endpoint['host']}:{endpoint['port']}")
            if owners is not None:
                owners[service].append(stat.ephemeralOwner)
    return torn


def agents_sessions(client: KazooClient) -> dict[int, str]:
    """Each agent's session, by the agent node it holds: its name."""
    found = {}
    for agent in client.get_children(f"{ROOT}/agents"):
        stat = client.exists(f"{ROOT}/agents/{agent}")
        if stat is not None:
            found[stat.ephemeralOwner] = agent
    return found


class Trace:
    """
    With ``--trace``: what each node c held named at the cut, and each
    change after it of which agents' sessions hold its service's members
    and its node, printed as it is seen (the sequence behind a count).
    """

    def __init__(
        self, client: KazooClient, sessions: dict[int, str], held: list[str]
    ) -> None:
        self._client = client
        self._sessions = sessions
        self._held = held
        self._seen: dict[str, str] = {}
        for name in held:
            data, stat = client.get(f"{ROOT}/instances/{name}")
            members = client.get_children(f"{DISCOVERY}/{name}")
            print(
                f"cut: {name} node names {json.loads(data).get('member')},"
                f" version {stat.version}; members {sorted(members)}",
                flush=True,
            )

    def _who(self, session: int) -> str:
        return self._sessions.get(session, f"{session:#x}")

    def sample(self, at: float, owners: dict[str, list[int]]) -> None:
        """Print each held service whose members' or node's holders changed."""
        for name in self._held:
            stat = self._client.exists(f"{ROOT}/instances/{name}")
            node = "-" if stat is None else self._who(stat.ephemeralOwner)
            members = ",".join(self._who(o) for o in sorted(owners.get(name, [])))
            seen = f"members [{members}] node {node}"
            if self._seen.get(name) != seen:
                self._seen[name] = seen
                print(f"{at:7.2f} s {name}: {seen}", flush=True)


def covered(agent: Agent) -> int:
    """The covers `agent` began (``/debug/stats``)."""
    stats = agent.get("/debug/stats")
    return int(stats.get("zookeeper", {}).get("group", {}).get("covered", 0))


def register_strangers(
    args: argparse.Namespace, started: ExitStack, hosts: str, held: list[str]
) -> list[Any]:
    """
    With ``--stranger``: a client of its own makes a member of each of
    `held`'s endpoints (a copy of the one listed) in its service; its
    session, then the members' paths. Else nothing.
    """
    if not args.stranger:
        return []
    stranger = KazooClient(hosts=hosts, timeout=10.0)
    stranger.start(timeout=10.0)
    started.callback(stranger.close)
    started.callback(stranger.stop)
    made: list[Any] = [stranger.client_id[0]]
    for name in held:
        parent = f"{DISCOVERY}/{name}"
        [child, *_] = stranger.get_children(parent)
        data, _ = stranger.get(f"{parent}/{child}")
        prefix = "member_" if args.form == "serverset" else f"{name}_"
        made.append(
            stranger.create(f"{parent}/{prefix}", data, ephemeral=True, sequence=True)
        )
    return made


def one_run(
    args: argparse.Namespace, label: str, checkout: Path, number: int
) -> list[tuple[str, str]]:
    """Servers, agents, the cut and the deletes; the reader's counts."""
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as started:
        workdir = Path(tmp)
        servers = start_redis_servers(4, started)
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
            "replicas": 2,
            "session_timeout": args.session_timeout,
            "discovery": args.form,
            "discovery_root": DISCOVERY,
        }
        if args.refresh is not None:
            settings["refresh"] = args.refresh

        def start(agent_id: str, hosts: str) -> Agent:
            text = agent_config(
                instances, zookeeper=hosts, zk_root=ROOT, agent_id=agent_id,
                zk_settings=settings,
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

        def held_by_c() -> list[str]:
            agent = client.exists(f"{ROOT}/agents/c")
            return [
                n
                for n in names
                if agent is not None
                and (stat := client.exists(f"{ROOT}/instances/{n}")) is not None
                and stat.ephemeralOwner == agent.ephemeralOwner
            ]

        def steady() -> bool:
            # c holding its share too: with --settle 0 the cut would
            # otherwise come before c's takeovers, and cover nothing.
            listed = endpoints(client, names)
            return all(listed[n] == [expected[n]] for n in names) and bool(held_by_c())

        deadline = time.monotonic() + 120.0
        while not steady():
            if time.monotonic() > deadline:
                raise RuntimeError("the group never listed each endpoint once")
            time.sleep(0.5)
        # Past every observer's first reading of each verdict, and quiet
        # (a group younger than a refresh with a short --settle).
        time.sleep(args.settle)
        load_start = load_average()
        c_session = client.exists(f"{ROOT}/agents/c").ephemeralOwner
        held = held_by_c()
        covers_before = sum(covered(a) for a in agents[:2])
        trace = Trace(client, agents_sessions(client), held) if args.trace else None
        strangers = register_strangers(args, started, zookeeper.hosts, held)
        ignored = strangers[0] if strangers else None
        if not args.meddle:
            spoil.set(cut=True)
        cut_at = time.monotonic()
        rng = random.Random(number)
        deleted = 0
        meddled_at = cut_at - 1.0
        for name in [] if args.meddle else held:
            try:
                client.delete(f"{ROOT}/instances/{name}")
            except NoNodeError:
                pass
        twice: dict[str, float] = {}
        unlisted: dict[str, float] = {}
        spans: dict[str, list[float]] = {"twice": [], "unlisted": []}
        # When each span began, from the cut.
        began: dict[str, list[float]] = {"twice": [], "unlisted": []}
        most_twice = 0
        samples = 0
        healed = False
        end = cut_at + args.cut + args.after
        while (now := time.monotonic()) < end:
            if not healed and now - cut_at >= args.cut:
                spoil.set()
                healed = True
            if args.meddle and not healed and now - meddled_at >= 0.5:
                meddled_at = now
                for name in rng.sample(names, args.burst):
                    try:
                        client.delete(f"{ROOT}/instances/{name}")
                        deleted += 1
                    except NoNodeError:
                        pass
            owners: dict[str, list[int]] = {}
            listed = endpoints(client, names, owners, ignored)
            samples += 1
            now = time.monotonic()
            if trace is not None:
                trace.sample(now - cut_at, owners)
            doubled = {n for n in names if len(listed[n]) > len(set(listed[n]))}
            missing = {n for n in names if not listed[n]}
            most_twice = max(most_twice, len(doubled))
            for kind, wrong, since in (
                ("twice", doubled, twice),
                ("unlisted", missing, unlisted),
            ):
                for name in wrong:
                    if name not in since:
                        since[name] = now
                        began[kind].append(now - cut_at)
                for name in set(since) - wrong:
                    spans[kind].append(now - since.pop(name))
            time.sleep(args.poll)
        now = time.monotonic()
        for kind, since in (("twice", twice), ("unlisted", unlisted)):
            spans[kind] += [now - t for t in since.values()]
        still = client.exists(f"{ROOT}/agents/c")
        same_session = still is not None and still.ephemeralOwner == c_session
        covers = sum(covered(a) for a in agents[:2]) - covers_before
        at_end = endpoints(client, names, None, ignored)
        wrong_at_end = [n for n in names if at_end[n] != [expected[n]]]
        strangers_left = sum(client.exists(p) is not None for p in strangers[1:])
        load_end = load_average()
        for agent in agents:
            agent.stop()
            if args.logs is not None:
                args.logs.mkdir(parents=True, exist_ok=True)
                shutil.copy(agent.log, args.logs / agent.log.name)

    def summary(kind: str) -> str:
        found = spans[kind]
        if not found:
            return "0"
        return (
            f"{len(found)} spans, longest {max(found):.2f} s, sum"
            f" {sum(found):.1f} s, begun {min(began[kind]):.1f}--"
            f"{max(began[kind]):.1f} s after the cut"
        )

    return [
        (
            f"{label} run {number + 1}: nodes deleted",
            str(deleted if args.meddle else len(held)),
        ),
        ("  covers begun (a + b)", str(covers)),
        ("  c's session lived through the cut", str(same_session)),
        ("  services listing an endpoint twice", summary("twice")),
        ("  most at one sample", str(most_twice)),
        ("  services listing none", summary("unlisted")),
        (f"  wrong {args.after:g} s after the heal", str(len(wrong_at_end))),
        *(
            [("  stranger's members left", f"{strangers_left} of {len(held)}")]
            if args.stranger
            else []
        ),
        ("  samples", str(samples)),
        ("  load (start / end)", f"{load_start} / {load_end}"),
    ]


def main() -> None:
    """Parse the options, run each checkout ``--runs`` times, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=60)
    parser.add_argument("--cut", type=float, default=8.0)
    parser.add_argument("--after", type=float, default=30.0)
    parser.add_argument("--poll", type=float, default=0.1)
    parser.add_argument("--form", choices=("serverset", "nerve"), default="serverset")
    parser.add_argument("--session-timeout", type=float, default=12.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--meddle", action="store_true")
    parser.add_argument("--burst", type=int, default=5)
    parser.add_argument(
        "--stranger",
        action="store_true",
        help="a client of its own lists each of c's endpoints too",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=10.0,
        help="seconds from every endpoint listed once to the cut",
    )
    parser.add_argument(
        "--trace",
        action="store_true",
        help="print each change of the covered services' holders",
    )
    parser.add_argument(
        "--logs", type=Path, help="a directory to copy the agents' logs to"
    )
    parser.add_argument(
        "--refresh", type=float, help="zookeeper.refresh (default: the agent's)"
    )
    add_checkout_option(parser)
    add_agent_checkout_option(parser)
    args = parser.parse_args()
    rows = rows_in_turns(parser, args, one_run)
    print(table(rows, "endpoints listed twice while a live primary is covered"))


if __name__ == "__main__":
    main()

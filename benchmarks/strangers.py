"""
Strangers' nodes in a live group's ZooKeeper (DESIGN.md section 2.5):
what earlier rounds' scripts did not write.

Two agents ``a`` and ``b`` (``twistd -n sentinel``, replicas 2, quorum
``--quorum``, refresh 30 s) share ``--instances`` healthy instances on
two real redis-servers. Once every instance node is written, a client of
the same ZooKeeper (kazoo, its own session, no ACLs) does ``--kind``:

- ``voters``: under every ``{root}/opinions/X`` ``--fakes`` opinions of
  observers that are no member (ephemeral, each saying ``down``, settled,
  checked now), and one in the name of each agent's id in upper case:
  with quorum 1, one counted would publish every instance down;
- ``future``: every instance node written over with its own document
  dated a day ahead (``since`` and ``checked_at``), ``up``: a squatter's
  "newer" data;
- ``ghost``: a persistent instance node and an opinion for an instance no
  agent knows, dated a day ahead, saying ``down``;
- ``member``: the agents have ``auth_file`` and serverset discovery; the
  discovery root is made beforehand with their ACL (world:read, their
  identity all), and the service folder of ``cache-0`` with an open ACL
  (by hand, by another tool); the stranger adds a member of its own
  there, an endpoint at 192.0.2.66:6379 that readers send clients to.

Then, for ``--for`` seconds, every 0.5 s: instance nodes that say
``down`` or are dated ahead of now (the published view made wrong), each
agent's /healthz (its reasons once each), RSS and CPU. Printed as a table.

    .venv/bin/python benchmarks/strangers.py [--kind voters] [--quorum 1]
        [--fakes 1000] [--for 20] [--checkout this=.]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
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
from kazoo.security import OPEN_ACL_UNSAFE, READ_ACL_UNSAFE, make_digest_acl
from squat import healthz, members, start_agent

ROOT = "/strangers"
DISCOVERY = "/strangers-discovery"
DAY = 86400.0
AUTH = ("stranger-bench", "s3cret")


def opinion(status: str, checked_at: float) -> bytes:
    """An opinion document as an observer writes it (the fields that vote)."""
    return json.dumps(
        {"status": status, "ready": False, "checked_at": checked_at, "settled": True}
    ).encode()


def attack(kind: str, client: KazooClient, names: list[str], fakes: int) -> int:
    """Write the stranger's nodes of `kind`; how many were written."""
    now, written = time.time(), 0
    if kind == "voters":
        for name in names:
            transaction = client.transaction()
            for voter in [f"stranger-{i}" for i in range(fakes)] + ["A", "B"]:
                path = f"{ROOT}/opinions/{name}/{voter}"
                transaction.create(path, opinion("down", now), ephemeral=True)
                written += 1
            transaction.commit()
    elif kind == "future":
        for name in names:
            path = f"{ROOT}/instances/{name}"
            document = json.loads(client.get(path)[0])
            document.update(since=now + DAY, checked_at=now + DAY, status="up")
            client.set(path, json.dumps(document).encode())
            written += 1
    elif kind == "member":
        endpoint = {"host": "192.0.2.66", "port": 6379}
        member = {"serviceEndpoint": endpoint, "additionalEndpoints": {}}
        member["status"] = "ALIVE"
        client.create(
            f"{DISCOVERY}/cache-0/member_",
            json.dumps(member).encode(),
            ephemeral=True,
            sequence=True,
        )
        written = 1
    else:
        ghost = {"status": "down", "since": now + DAY, "checked_at": now + DAY}
        client.create(f"{ROOT}/instances/ghost", json.dumps(ghost).encode())
        client.create(
            f"{ROOT}/opinions/ghost/a", opinion("down", now + DAY), makepath=True
        )
        written = 2
    return written


def discovery_setup(workdir: Path, reader: KazooClient) -> dict[str, str]:
    """
    The agents' auth_file, the discovery root with their ACL and cache-0's
    service folder open to anyone, made by `reader`; their settings.
    """
    secret = workdir / "zk-auth"
    secret.write_text(":".join(AUTH) + "\n")
    secret.chmod(0o600)
    reader.add_auth("digest", ":".join(AUTH))
    theirs = [make_digest_acl(*AUTH, all=True), READ_ACL_UNSAFE[0]]
    reader.create(DISCOVERY, b"", acl=theirs)
    reader.create(f"{DISCOVERY}/cache-0", b"", acl=OPEN_ACL_UNSAFE)
    return {
        "auth_file": str(secret),
        "discovery": "serverset",
        "discovery_root": DISCOVERY,
    }


def wrong_nodes(client: KazooClient, names: list[str]) -> tuple[int, int, int]:
    """Instance nodes of `names` saying down, dated ahead of now, and read."""
    down = ahead = read = 0
    now = time.time()
    for name in names:
        try:
            document = json.loads(client.get(f"{ROOT}/instances/{name}")[0])
        except Exception:
            continue  # Missing (not made yet) or not JSON.
        read += 1
        down += document.get("status") == "down"
        ahead += any(
            isinstance(document.get(key), float) and document[key] > now + 5
            for key in ("since", "checked_at")
        )
    return down, ahead, read


def one_run(options: argparse.Namespace, checkout: Path) -> list[tuple[str, str]]:
    """Two agents, one stranger, `--for` seconds watched: the table's rows."""
    with ExitStack() as started, tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        zookeeper, reader = start_zookeeper(started)
        servers = start_redis_servers(2, started)
        instances = [
            Instance(f"cache-{i}", servers[i % 2].port)
            for i in range(options.instances)
        ]
        names = [instance.name for instance in instances]
        settings: dict[str, Any] = {"replicas": 2, "quorum": options.quorum}
        if options.kind == "member":
            settings.update(discovery_setup(workdir, reader))
        agents = {
            agent_id: start_agent(
                started,
                workdir,
                zookeeper.hosts,
                instances,
                agent_id,
                checkout,
                settings=settings,
                root=ROOT,
            )  # fmt: skip
            for agent_id in ("a", "b")
        }
        a, b = agents["a"], agents["b"]
        wait_until(lambda: members(a) == members(b) == 2, 60.0, "a group of two")
        wait_until(
            lambda: wrong_nodes(reader, names)[2] == len(names),
            60.0,
            "every instance node",
        )
        time.sleep(3.0)
        cpu = {agent_id: agent.cpu_seconds() for agent_id, agent in agents.items()}
        stranger = KazooClient(hosts=zookeeper.hosts, timeout=10.0)
        stranger.start(timeout=10.0)
        started.callback(stranger.close)
        started.callback(stranger.stop)
        began = time.monotonic()
        written = attack(options.kind, stranger, names, options.fakes)
        wrote = time.monotonic() - began
        most_down = most_ahead = 0
        last_wrong = None
        reasons: dict[str, set[str]] = {agent_id: set() for agent_id in agents}
        codes: dict[str, dict[int, int]] = {agent_id: {} for agent_id in agents}
        rss = {agent_id: 0 for agent_id in agents}
        endpoints = 0
        while time.monotonic() - began < options.duration:
            if options.kind == "member":
                folder = f"{DISCOVERY}/cache-0"
                endpoints = max(endpoints, len(reader.get_children(folder)))
            down, ahead, _ = wrong_nodes(reader, names)
            most_down, most_ahead = max(most_down, down), max(most_ahead, ahead)
            if down or ahead:
                last_wrong = time.monotonic() - began
            for agent_id, agent in agents.items():
                code, body = healthz(agent)
                codes[agent_id][code] = codes[agent_id].get(code, 0) + 1
                if code != 200:
                    reasons[agent_id].update(_reasons(body))
                rss[agent_id] = max(rss[agent_id], agent.rss_bytes())
            time.sleep(0.5)
        rows = [
            ("stranger", f"{options.kind}: {written} nodes written in {wrote:.2f} s"),
            ("most nodes down (all healthy)", str(most_down)),
            ("most nodes dated ahead", str(most_ahead)),
            ("most endpoints listed for cache-0", str(endpoints)),
            (
                "last seen wrong",
                "never" if last_wrong is None else f"{last_wrong:.1f} s after",
            ),
        ]
        for agent_id, agent in agents.items():
            used = agent.cpu_seconds() - cpu[agent_id]
            peak = rss[agent_id] >> 20
            rows += [
                (f"{agent_id}: /healthz codes", json.dumps(codes[agent_id])),
                (f"{agent_id}: 503 reasons", "; ".join(sorted(reasons[agent_id]))),
                (f"{agent_id}: CPU s, max RSS MiB", f"{used:.2f}, {peak}"),
            ]
        return rows


def _reasons(body: str) -> list[str]:
    try:
        said: Any = json.loads(body)
    except ValueError:
        return [body[:120]]
    return [str(reason)[:160] for reason in said.get("reasons", [])]


def main() -> None:
    """Parse the options, run each checkout once, print a table each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    kinds = ("voters", "future", "ghost", "member")
    parser.add_argument("--kind", choices=kinds, default="voters")
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--quorum", type=int, default=1)
    parser.add_argument("--fakes", type=int, default=1000)
    parser.add_argument("--for", dest="duration", type=float, default=20.0)
    add_checkout_option(parser)
    options = parser.parse_args()
    stop_on_sigterm()
    for label, checkout in checkouts_of(parser, options.checkout):
        rows = one_run(options, checkout)
        title = (
            f"{label} ({commit_of(checkout)}): {options.kind}, quorum"
            f" {options.quorum}, load {load_average()}"
        )
        print(table(rows, title), flush=True)


if __name__ == "__main__":
    main()

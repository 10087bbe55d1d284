"""
An unlucky operator's mistakes around ZooKeeper, as a user meets them:
what ``twistd -n sentinel`` says, and how soon.

Each scene runs one agent (a real ZooKeeper, one redis-server,
``--instances`` on it, session timeout 4 s) for at most ``--wait``
seconds:

- ``chroot``: ``zookeeper.hosts`` ends with a chroot that does not exist
  (since the agent creates it, nothing is named: ``/healthz`` stays 200);
- ``acl``: the root was made by another identity (digest ``other``,
  world read only), and the agent has no ``auth_file``;
- ``acl-auth``: the same, the agent with an ``auth_file`` of its own;
- ``ephemeral``: another client (a session of its own) made the root an
  ephemeral node, which can have no children, before the agent started;
  ``--squat`` seconds after ``/healthz`` named the refused writes (or
  after ``--wait``), that client closes its session;
- ``ephemeral-service``: the same for the discovery service of the first
  instance (``discovery = "serverset"``), the root left alone;
- ``opinions``: ``discovery = "nerve"``, ``discovery_root`` under the
  group's ``opinions``;
- ``sighup``: ``zookeeper.root``, ``replicas`` and ``discovery_root``
  changed in the file, then SIGHUP.

Printed for each: the process's exit status and first line if it ended,
else the first ``/healthz`` that names the refused writes (a reason with
``refuses``, ``chroot``, ``NoAuthError`` or ``NoNodeError``) and when
(seconds after the agent answered), the log lines at warning level and
above (counted alike), for ``sighup`` the ``sentinel_config_*``
metrics and ZooKeeper's top-level nodes, and for ``ephemeral`` how long
after the squatter's session closed every instance node was written and
``/healthz`` answered 200, with the agent's RSS and open files then.

    .venv/bin/python benchmarks/mistakes.py [--checkout before=PATH]
        [--checkout after=.] [--scenes chroot,acl] [--runs 1] [--wait 15]
        [--instances 1] [--squat 0]
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from common import (
    Agent,
    Instance,
    add_checkout_option,
    agent_config,
    check_choices,
    load_average,
    open_files_for,
    rows_in_turns,
    start_redis_servers,
    start_zookeeper,
    table,
)
from kazoo.client import KazooClient
from kazoo.security import make_acl, make_digest_acl

SCENES = (
    "chroot",
    "acl",
    "acl-auth",
    "ephemeral",
    "ephemeral-service",
    "opinions",
    "sighup",
)
# What a /healthz naming the refused writes says, before and after.
NAMING = ("refuses", "chroot", "ephemeral", "NoAuthError", "NoNodeError", "Ephemerals")


def healthz(agent: Agent) -> tuple[int, str]:
    """/healthz's code and body, on one line."""
    url = f"http://127.0.0.1:{agent.http_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode().replace("\n", " ")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace").replace("\n", " ")


def scene_config(
    scene: str, hosts: str, port: int, workdir: Path, instances: int
) -> str:
    """The agent's config for `scene`, watching `instances` on `port`."""
    settings: dict[str, float | int] = {"session_timeout": 4}
    if scene == "chroot":
        hosts += "/missing/app"
    watched = [Instance(f"cache{i}", port) for i in range(instances)]
    text = agent_config(watched, zookeeper=hosts, agent_id="a0",
                        zk_settings=settings)  # fmt: skip
    extra = ""
    if scene == "acl-auth":
        auth = workdir / "auth"
        auth.write_text("me:pw\n")
        auth.chmod(0o600)
        extra = f'auth_file = "{auth}"\n'
    if scene == "opinions":
        extra = 'discovery = "nerve"\ndiscovery_root = "/sentinel/opinions/sd"\n'
    if scene == "ephemeral-service":
        extra = 'discovery = "serverset"\ndiscovery_root = "/sd"\n'
    return text.replace("[zookeeper]\n", "[zookeeper]\n" + extra)


def squatter_gone(
    agent: Agent,
    squatter: KazooClient,
    client: KazooClient,
    args: argparse.Namespace,
    service: bool,
) -> str:
    """
    The squatter's session closed: how long until every instance node was
    written (the first instance's member, for its `service`), and until
    ``/healthz`` answered 200 (at most ``--wait`` each).
    """
    time.sleep(args.squat)
    squatter.stop()
    gone = time.monotonic()
    deadline = gone + args.wait
    written = healthy = None
    parent, wanted = "/sentinel/instances", args.instances
    if service:
        parent, wanted = "/sd/cache0", 1
    while time.monotonic() < deadline and (written is None or healthy is None):
        now = time.monotonic() - gone
        if written is None and client.exists(parent):
            if len(client.get_children(parent)) >= wanted:
                written = now
        if healthy is None and healthz(agent)[0] == 200:
            healthy = now
        time.sleep(0.1)
    never = f"not within {args.wait:.0f} s"
    fds = agent.process.num_fds()
    return (
        ("its member" if service else f"{args.instances} instance nodes")
        + " written after "
        + (never if written is None else f"{written:.1f} s")
        + ", /healthz 200 after "
        + (never if healthy is None else f"{healthy:.1f} s")
        + f"; RSS {agent.rss_bytes() / 2**20:.0f} MiB, {fds} open files"
    )


def warnings(agent: Agent) -> list[str]:
    """The log's lines at warning level and above, each counted."""
    lines = agent.log.read_text().splitlines()
    counted = Counter(
        line.split("] ", 1)[-1][:160]
        for line in lines
        if any(f"#{level}]" in line for level in ("warn", "error", "critical"))
    )
    return [f"{count}x {text}" for text, count in counted.items()]


def one_run(
    args: argparse.Namespace, label: str, checkout: Path, number: int
) -> list[tuple[str, str]]:
    """Each scene once with `checkout`'s agent."""
    rows = []
    for scene in args.scenes.split(","):
        with ExitStack() as started, tempfile.TemporaryDirectory() as scratch:
            workdir = Path(scratch)
            [server] = start_redis_servers(1, started)
            zookeeper, client = start_zookeeper(started)
            if scene.startswith("acl"):
                client.add_auth("digest", "other:secret")
                client.create("/sentinel", acl=[
                    make_digest_acl("other", "secret", all=True),
                    make_acl("world", "anyone", read=True),
                ])  # fmt: skip
            squatter = None
            if scene.startswith("ephemeral"):
                squatter = KazooClient(hosts=zookeeper.hosts, timeout=10.0)
                squatter.start(timeout=10.0)
                started.callback(squatter.close)
                started.callback(squatter.stop)
                if scene == "ephemeral":
                    squatter.create("/sentinel", ephemeral=True)
                else:
                    squatter.create("/sd/cache0", ephemeral=True, makepath=True)
            config = scene_config(
                scene, zookeeper.hosts, server.port, workdir, args.instances
            )
            agent = Agent(workdir, config, label="a0", pythonpath=checkout,
                          open_files=open_files_for(args.instances))  # fmt: skip
            started.callback(agent.stop)
            name = f"{label} run {number + 1} {scene}"
            try:
                agent.wait_ready(timeout=30)
            except Exception:
                status = agent.child.stop()
                tail = agent.log.read_text().strip().splitlines()[-1:]
                rows.append((name, f"exited {status}: {' '.join(tail)[:300]}"))
                continue
            answered = time.monotonic()
            first = None
            if scene == "sighup":
                time.sleep(2)
                agent.config_path.write_text(
                    agent_config([Instance("cache0", server.port)],
                                 zookeeper=zookeeper.hosts, agent_id="a0",
                                 zk_root="/other",
                                 zk_settings={"session_timeout": 4, "replicas": 2,
                                              "discovery_root": "/sd"})
                )  # fmt: skip
                os.kill(agent.pid, signal.SIGHUP)
            deadline = answered + args.wait
            while time.monotonic() < deadline and first is None:
                code, body = healthz(agent)
                if code != 200 and any(word in body for word in NAMING):
                    first = f"{time.monotonic() - answered:.1f} s: {code} {body[:400]}"
                time.sleep(0.25)
            rows.append((name, first or f"not named for {args.wait:.0f} s"))
            if squatter is not None:
                gone = squatter_gone(agent, squatter, client, args,
                                     service=scene == "ephemeral-service")  # fmt: skip
                rows.append((f"{name} squatter gone", gone))
            if scene == "sighup":
                url = f"http://127.0.0.1:{agent.http_port}/metrics"
                with urllib.request.urlopen(url, timeout=5) as response:
                    metrics = response.read().decode().splitlines()
                config = [m for m in metrics if m.startswith("sentinel_config_")]
                rows.append((f"{name} metrics", "; ".join(config)))
                rows.append((f"{name} ZooKeeper /", str(client.get_children("/"))))
            agent.stop()
            for line in warnings(agent):
                rows.append((f"{name} log", line))
            rows.append((f"{name} load", load_average()))
    return rows


def main() -> None:
    """Parse the options, run each scene per checkout in turns, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenes", default=",".join(SCENES))
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--wait", type=float, default=15.0)
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--squat", type=float, default=0.0)
    add_checkout_option(parser)
    args = parser.parse_args()
    check_choices(parser, "--scenes", args.scenes, SCENES)
    print(table(rows_in_turns(parser, args, one_run), "An operator's mistakes"))


if __name__ == "__main__":
    main()

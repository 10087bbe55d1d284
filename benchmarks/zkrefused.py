"""
An unlucky operator, round 2: ZooKeeper's own refusals, as a user meets
them with ``twistd -n sentinel`` (one redis-server, ``--instances`` on
it, a ZooKeeper of the script's own).

- ``maxcnxns``: ZooKeeper with ``maxClientCnxns=2``, both slots held by
  other clients before the agent starts; after ``--hold`` seconds one
  of them closes;
- ``quota``: ZooKeeper with ``enforceQuota=true`` and a count hard quota
  on ``{root}/instances`` (``setquota -N``) that admits fewer nodes than
  there are instances; after ``--hold`` seconds the quota is removed;
- ``acl``: mid-run, ``setAcl`` on ``{root}/instances`` (digest
  ``admin``, world read: the agent without ``auth_file`` may no longer
  create or delete there), then a SIGHUP that adds an instance and
  removes one; after ``--hold`` seconds the ACL is opened again.

Printed for each, every second: ``/healthz`` (status and first reason),
the checks of each instance (all must move on time), and the instance
nodes in ZooKeeper; then how long after the cause went every instance
was published, and the agent's warning-or-worse log lines.

    .venv/bin/python benchmarks/zkrefused.py [--scenes maxcnxns,quota,acl]
        [--instances 8] [--hold 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from common import (
    Agent,
    Instance,
    ZooKeeperServer,
    agent_config,
    load_average,
    start_redis_servers,
    start_zookeeper,
)
from kazoo.client import KazooClient
from kazoo.security import OPEN_ACL_UNSAFE, make_acl, make_digest_acl

SCENES = ("maxcnxns", "quota", "acl")
ROOT = "/sentinel"
ZKCLI = "/usr/share/zookeeper/bin/zkCli.sh"


class _Configured(ZooKeeperServer):
    """A ZooKeeper with more lines in its zoo.cfg."""

    def __init__(self, more: str) -> None:
        super().__init__()
        self._more = more

    def _more_config(self) -> str:
        return self._more


def zkcli(hosts: str, *args: str) -> None:
    """One zkCli.sh command against `hosts` (the quota commands kazoo lacks)."""
    cli = shutil.which("zkCli.sh") or ZKCLI
    subprocess.run(
        [cli, "-server", hosts, *args], capture_output=True, timeout=60, check=True
    )


def log_lines(agent: Agent) -> list[str]:
    """The agent's log lines at warning level and above."""
    text = agent.log.read_text(errors="replace")
    levels = ("#warn]", "#error]", "#critical]")
    return [line for line in text.splitlines() if any(lv in line for lv in levels)]


def published(reader: KazooClient) -> set[str]:
    """The instance nodes in ZooKeeper now."""
    path = f"{ROOT}/instances"
    return set(reader.get_children(path)) if reader.exists(path) else set()


def sample(agent: Agent, reader: KazooClient | None, started: float) -> str:
    """One line: time, /healthz, checks per instance, nodes published."""
    code, health = agent.healthz()
    reasons = health.get("reasons") or []
    reason = (reasons[0][:150] + "...") if reasons else ""
    checks = sorted(i["checks"] for i in agent.instances().values())
    nodes = "-"
    if reader is not None and reader.connected:
        nodes = str(len(published(reader)))
    return (
        f"  {time.monotonic() - started:5.1f} s  {code}  checks"
        f" {checks[0]}-{checks[-1]}  nodes {nodes}  {reason}"
    )


def run_scene(scene: str, args: argparse.Namespace, workdir: Path) -> None:
    with ExitStack() as started:
        redis = start_redis_servers(1, started)[0]
        more = {"maxcnxns": "maxClientCnxns=2\n", "quota": "enforceQuota=true\n"}
        zookeeper, reader = start_zookeeper(started, _Configured(more.get(scene, "")))
        instances = [Instance(f"r{i}", redis.port) for i in range(args.instances)]
        holders: list[KazooClient] = []
        if scene == "maxcnxns":
            # The reader holds one slot; another client the other.
            holder = KazooClient(hosts=zookeeper.hosts)
            holder.start(timeout=10)
            started.callback(holder.close)
            started.callback(holder.stop)
            holders.append(holder)
        if scene == "quota":
            reader.ensure_path(f"{ROOT}/instances")
            # The directory counts itself: room for instances - 2 nodes.
            zkcli(zookeeper.hosts, "setquota", "-N", str(args.instances - 1),
                  f"{ROOT}/instances")  # fmt: skip
        config = agent_config(instances, zookeeper=zookeeper.hosts, zk_root=ROOT)
        agent = Agent(workdir, config, label=scene)
        started.callback(agent.stop)
        agent.wait_ready()
        t0 = time.monotonic()
        print(f"{scene}: {args.instances} instances, load {load_average()}")
        if scene == "acl":
            agent.wait_ticks(3, 10)
            reader.add_auth("digest", "admin:secret")
            reader.set_acls(
                f"{ROOT}/instances",
                [make_digest_acl("admin", "secret", all=True),
                 make_acl("world", "anyone", read=True)],
            )  # fmt: skip
            changed = instances[1:] + [Instance("added", redis.port)]
            agent.config_path.write_text(
                agent_config(changed, zookeeper=zookeeper.hosts, zk_root=ROOT)
            )
            os.kill(agent.pid, signal.SIGHUP)
            instances = changed
        for _ in range(int(args.hold)):
            time.sleep(1.0)
            print(sample(agent, reader, t0))
        t1 = time.monotonic()
        if scene == "maxcnxns":
            holders[0].stop()
        elif scene == "quota":
            zkcli(zookeeper.hosts, "delquota", f"{ROOT}/instances")
        else:
            reader.set_acls(f"{ROOT}/instances", OPEN_ACL_UNSAFE)
        names = {i.name for i in instances}
        caught_up = None
        for _ in range(int(args.hold) * 4):
            time.sleep(0.25)
            if published(reader) == names and agent.healthz()[0] == 200:
                caught_up = time.monotonic() - t1
                break
        print(sample(agent, reader, t0))
        print(
            f"  cause removed: every node published and /healthz 200 after"
            f" {'never' if caught_up is None else f'{caught_up:.1f} s'}"
        )
        lines = log_lines(agent)
        print(f"  {len(lines)} log line(s) at warning or above:")
        for line in lines[:12]:
            print(f"    {line[:300]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", default=",".join(SCENES))
    parser.add_argument("--instances", type=int, default=8)
    parser.add_argument("--hold", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        for scene in args.scenes.split(","):
            run_scene(scene, args, Path(work))


if __name__ == "__main__":
    main()

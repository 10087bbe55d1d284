"""
What readers and the agents' /healthz say while a three-server ZooKeeper
ensemble is attacked.

A real ensemble on loopback ports (`tests.servers.ZooKeeperEnsemble`), a
few redis-servers holding N instances, and one agent or a group of three
(``zookeeper.replicas = 2``), each listing the three servers. Readers, one
on each server (`tests.gaps.NodeWatch`, every 20 ms), see which instance
nodes and agent nodes go missing and which say down; a thread asks every
agent's /healthz every 100 ms. For each attack:

- ``leader-kill``: the leader is killed (SIGKILL) and started again;
- ``leader-stop``: the leader is frozen (SIGSTOP) for `--freeze` seconds,
  longer than the session timeout, then let go;
- ``agent-server-stop``: the server the (first) agent is connected to is
  frozen for `--freeze` seconds;
- ``quorum``: the two followers are frozen for `--freeze` seconds: the
  leader has no quorum;
- ``rolling``: each server restarted in turn, each serving again before
  the next;
- ``skew``: the leader's clock runs `--skew` seconds ahead (libfaketime),
  nothing else happens for `--freeze` seconds;
- ``bad-name``: ``zookeeper.hosts`` lists first a name whose DNS server
  never answers (the agents run in a mount namespace of their own, where
  /etc/resolv.conf names a server of this script that reads and drops
  every query: root and ``unshare`` needed), and the server each agent
  is connected to is killed, then started again, `--kills` times;
- ``bad-port``: likewise, with a port that accepts and never answers;
- ``agent-skew``: the first agent's clock runs `--skew` seconds behind
  (libfaketime), the ensemble's is right, for `--freeze` seconds.

Reported: the longest time any node was missing (on any reader that could
read), nodes that said down (every Redis is up), the /healthz transitions
of each agent with their reasons, the sessions kept or replaced, and the
tracebacks in the agents' logs.

    .venv/bin/python benchmarks/ensemble.py leader-kill [--group] [--instances 300]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import socket
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from common import (
    LOOPBACK,
    Agent,
    Instance,
    agent_config,
    libfaketime,
    load_average,
    start_redis_servers,
    stop_on_sigterm,
    wait_until,
)
from kazoo.client import KazooClient

from tests.gaps import NodeWatch
from tests.servers import EnsembleMember, ZooKeeperEnsemble

ROOT = "/sentinel"
ATTACKS = (
    "leader-kill", "leader-stop", "agent-server-stop", "quorum", "rolling",
    "skew", "bad-name", "bad-port", "agent-skew",
)  # fmt: skip
# Where the bad-name attack's DNS server listens, and the name it drops.
DNS_ADDRESS = "127.0.0.93"
NEVER_RESOLVED = "zk-never.example.com"


def parse_args() -> argparse.Namespace:
    """The options; the defaults are the ensemble round's measurement."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("attack", choices=ATTACKS)
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--redis", type=int, default=3, help="redis-servers")
    parser.add_argument("--group", action="store_true", help="3 agents, replicas 2")
    parser.add_argument("--freeze", type=float, default=15.0, help="seconds")
    parser.add_argument("--skew", type=float, default=30.0, help="seconds")
    parser.add_argument("--session-timeout", type=float, default=10.0)
    parser.add_argument("--heartbeat", type=float, default=3.0)
    parser.add_argument("--settle", type=float, default=10.0, help="after the attack")
    parser.add_argument("--kills", type=int, default=4, help="bad-name, bad-port")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    return parser.parse_args()


class HealthWatch:
    """Every agent's /healthz every 100 ms, on a thread: its transitions."""

    def __init__(self, agents: dict[str, Agent]) -> None:
        self.agents = agents
        self.transitions: list[tuple[float, str, int, str]] = []
        self._last: dict[str, tuple[int, str]] = {}
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started = time.monotonic()

    def start(self) -> HealthWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(10.0)

    def _run(self) -> None:
        while not self._stopping.wait(0.1):
            for label, agent in self.agents.items():
                code, reason = healthz(agent)
                # Figures change every poll: compare the words only.
                words = "".join(c for c in reason if not c.isdigit())
                if self._last.get(label, (0, ""))[1] != words or (
                    self._last.get(label, (0, ""))[0] != code
                ):
                    self._last[label] = (code, words)
                    now = time.monotonic() - self.started
                    self.transitions.append((now, label, code, reason))


def healthz(agent: Agent) -> tuple[int, str]:
    """/healthz's status code and its reasons, joined."""
    url = f"http://{LOOPBACK}:{agent.http_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return response.status, ""
    except urllib.error.HTTPError as e:
        body = json.loads(e.read() or b"{}")
        return e.code, "; ".join(body.get("reasons", []))
    except OSError as e:
        return 0, f"no answer: {e}"


def session_of(agent: Agent) -> tuple[str | None, int]:
    """The agent's session id and how many clients it replaced."""
    stats = agent.get("/debug/stats")["zookeeper"]
    return stats["session_id"], stats["client_replacements"]


def server_of(
    ensemble: ZooKeeperEnsemble, session: str | None
) -> EnsembleMember | None:
    """The member whose ``cons`` lists `session`."""
    if session is None:
        return None
    for member in ensemble.members:
        try:
            if f"sid={session}" in member.four_letter_word("cons").decode():
                return member
        except OSError:
            continue
    return None


def published(client: KazooClient, count: int, agents: int) -> bool:
    """Every instance node and every agent node is there."""
    try:
        return (
            len(client.get_children(f"{ROOT}/instances")) == count
            and len(client.get_children(f"{ROOT}/agents")) == agents
        )
    except Exception:
        return False


def attack(args: argparse.Namespace, ensemble: ZooKeeperEnsemble, first: Agent) -> None:
    """Do `args.attack` to the ensemble; return once it is over."""
    leader = ensemble.leader()
    assert leader is not None
    print(f"leader: member {leader.myid}", flush=True)
    if args.attack == "leader-kill":
        leader.kill()
        time.sleep(args.freeze)
        leader.start()
    elif args.attack == "leader-stop":
        leader.pause()
        time.sleep(args.freeze)
        leader.resume()
    elif args.attack == "agent-server-stop":
        server = server_of(ensemble, session_of(first)[0])
        assert server is not None
        print(f"agent on member {server.myid}", flush=True)
        server.pause()
        time.sleep(args.freeze)
        server.resume()
    elif args.attack == "quorum":
        stopped = [m for m in ensemble.members if m is not leader]
        for member in stopped:
            member.pause()
        time.sleep(args.freeze)
        for member in stopped:
            member.resume()
    elif args.attack == "rolling":
        for member in ensemble.members:
            started = time.monotonic()
            member.stop()
            member.start(30.0)
            print(f"member {member.myid} back in {time.monotonic() - started:.1f} s")
    elif args.attack in ("skew", "agent-skew"):
        time.sleep(args.freeze)
    elif args.attack in ("bad-name", "bad-port"):
        for _ in range(args.kills):
            server = server_of(ensemble, session_of(first)[0])
            if server is None:
                print("the agent is on no server: nothing killed", flush=True)
                time.sleep(args.settle)
                continue
            started = time.monotonic()
            server.kill()
            try:
                wait_until(
                    lambda: server_of(ensemble, session_of(first)[0]) is not None,
                    60.0,
                    "the agent on another server",
                )
            except RuntimeError as e:
                print(f"member {server.myid} killed: {e}", flush=True)
            else:
                took = time.monotonic() - started
                print(f"member {server.myid} killed: the agent on another"
                      f" server after {took:.1f} s", flush=True)  # fmt: skip
            server.start(30.0)
            time.sleep(3.0)


def drop_forever(sock: socket.socket, stopping: threading.Event) -> None:
    """Read and drop every datagram, or accept and never answer, until told."""
    sock.settimeout(0.5)
    held = []
    while not stopping.is_set():
        try:
            if sock.type == socket.SOCK_DGRAM:
                sock.recvfrom(4096)
            else:
                held.append(sock.accept()[0])
        except TimeoutError:
            pass
    for connection in held:
        connection.close()
    sock.close()


def bad_server(
    args: argparse.Namespace, workdir: Path, started: ExitStack
) -> tuple[str, list[str]]:
    """
    For bad-name and bad-port: what to list before the ensemble, and the
    agents' wrapper (bad-name: a mount namespace with its own resolv.conf).
    """
    stopping = threading.Event()
    started.callback(stopping.set)
    if args.attack == "bad-name":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((DNS_ADDRESS, 53))
        resolv = workdir / "resolv.conf"
        resolv.write_text(f"nameserver {DNS_ADDRESS}\n")
        listed = f"{NEVER_RESOLVED}:2181"
        wrapper = [
            "unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" /etc/resolv.conf && exec "$@"', str(resolv),
        ]  # fmt: skip
    else:
        sock = socket.socket()
        sock.bind((LOOPBACK, 0))
        sock.listen(64)
        listed = f"{LOOPBACK}:{sock.getsockname()[1]}"
        wrapper = []
    threading.Thread(target=drop_forever, args=(sock, stopping), daemon=True).start()
    return listed, wrapper


def main() -> int:
    args = parse_args()
    stop_on_sigterm()
    # The readers' own reconnections are not what is measured.
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-ensemble-"))
    # Checked before anything starts: a missing library is a one-line exit.
    faketime = libfaketime(threaded=True) if "skew" in args.attack else ""
    clocks = {}
    if args.attack == "skew":
        clocks[3] = {
            "LD_PRELOAD": faketime,
            "FAKETIME": f"{args.skew:+g}s",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }
    with ExitStack() as started:
        if not args.keep:
            started.callback(shutil.rmtree, workdir, ignore_errors=True)
        ensemble = ZooKeeperEnsemble(clocks=clocks)
        started.callback(ensemble.close)
        skewed = ensemble.members[2] if args.attack == "skew" else None
        ensemble.start(leading=skewed)
        servers = start_redis_servers(args.redis, started)
        instances = [
            Instance(f"r{i:04d}", servers[i % len(servers)].port)
            for i in range(args.instances)
        ]
        settings: dict[str, float | int] = {
            "session_timeout": args.session_timeout,
            "heartbeat": args.heartbeat,
        }
        if args.group:
            settings["replicas"] = 2
        labels = ["a", "b", "c"] if args.group else ["a"]
        hosts, wrapper = ensemble.hosts, []
        if args.attack in ("bad-name", "bad-port"):
            listed, wrapper = bad_server(args, workdir, started)
            hosts = f"{listed},{hosts}"
        agents = {}
        launched = time.monotonic()
        for label in labels:
            config = agent_config(
                instances,
                zookeeper=hosts,
                zk_root=ROOT,
                agent_id=label,
                zk_settings=settings,
            )
            own = wrapper
            if args.attack == "agent-skew" and label == labels[0]:
                own = [
                    "env", f"LD_PRELOAD={faketime}", f"FAKETIME=-{args.skew:g}s",
                    "FAKETIME_DONT_FAKE_MONOTONIC=1",
                ]  # fmt: skip
            agent = Agent(workdir, config, label, wrapper=own)
            started.callback(agent.stop)
            agents[label] = agent
        for agent in agents.values():
            agent.wait_ready()
        client = KazooClient(hosts=ensemble.hosts, timeout=10.0)
        client.start(timeout=10.0)
        started.callback(client.close)
        started.callback(client.stop)
        wait_until(
            lambda: published(client, len(instances), len(agents)), 120.0, "published"
        )
        took = time.monotonic() - launched
        print(f"all published {took:.1f} s after launch; load {load_average()}")
        time.sleep(args.heartbeat * 2)
        nodes = [f"{ROOT}/instances/{i.name}" for i in instances]
        nodes += [f"{ROOT}/agents/{label}" for label in labels]
        readers = {}
        for member in ensemble.members:
            reader = NodeWatch(member.hosts, nodes).start()
            started.callback(reader.stop)
            readers[member.myid] = reader
        sessions = {label: session_of(agent) for label, agent in agents.items()}
        health = HealthWatch(agents).start()
        started.callback(health.stop)
        load = load_average()
        attack(args, ensemble, agents[labels[0]])
        ended = time.monotonic() - health.started
        time.sleep(args.settle)
        health.stop()
        print(f"attack {args.attack}: over at {ended:.1f} s; load {load}")
        for myid, reader in readers.items():
            gaps = reader.gaps()
            longest = max(gaps.values(), default=0.0)
            down = reader.seen_down()
            print(
                f"reader on member {myid}: {len(gaps)} node(s) missing, longest"
                f" {longest:.2f} s; {len(down)} said down; {reader.errors} failed"
                f" polls of {reader.polls}"
            )
        for label, agent in agents.items():
            before, after = sessions[label], session_of(agent)
            kept = (
                "kept" if before[0] == after[0] else f"replaced {before[0]}->{after[0]}"
            )
            log = agent.log.read_text(errors="replace")
            print(
                f"agent {label}: session {kept}, clients replaced"
                f" {after[1] - before[1]}, tracebacks {log.count('Traceback')}"
            )
        for when, label, code, reason in health.transitions:
            print(f"  {when:6.1f} s  {label} {code} {reason[:300]}")
    if args.keep:
        print(f"work dir kept: {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

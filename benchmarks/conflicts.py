"""
What a ZooKeeper conflict costs, and how soon the agent says so.

Two scenarios against one real ZooKeeper, each agent a ``twistd -n
sentinel`` child watching N instances on closed ports (published down):

- twin: agent A runs; once it has published, agent B starts with the same
  ``agent_id`` and root. It measures B's ZooKeeper requests per second,
  its warning and error lines per minute, the time until its ``/healthz``
  says 503 naming a node held elsewhere and until it exits (and how),
  and checks that A kept its agent node and its ``/healthz`` 200;
- squatter: a persistent node at ``{root}/instances/r0`` before the agent
  starts. It measures the same figures, then deletes the squatter and
  times how long until the agent's own session holds ``r0``.

Requests are counted on the server: ZooKeeper's ``cons`` shows each
connection's last client xid (``lcxid``), which kazoo increments for every
request but not for pings, sampled every second for the agent's session
(its id from ``/debug/stats``). Rates are taken from ``--settle`` seconds
after the agent started to the end of the window (or the agent's exit).

    .venv/bin/python benchmarks/conflicts.py [--instances 20] [--window 60]
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    LOOPBACK,
    Agent,
    Instance,
    ZooKeeperServer,
    agent_config,
    free_port,
    load_average,
    machine,
    stop_on_sigterm,
    table,
)
from kazoo.client import KazooClient

POLL = 0.1
SAMPLE = 1.0
CONS_LINE = re.compile(r"sid=0x([0-9a-f]+).*?lcxid=0x([0-9a-f]+)")


def parse_args() -> argparse.Namespace:
    """The options; the defaults are the agent's own settings."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--instances", type=int, default=20, help="instances per agent (20)")
    add("--window", type=float, default=60.0, help="seconds observed (60)")
    add("--settle", type=float, default=5.0, help="start-up left out of rates (5)")
    add("--session-timeout", type=float, default=10.0, help="seconds (10)")
    add("--heartbeat", type=float, default=10.0, help="seconds (10)")
    add("--scenarios", default="twin,squatter", help="twin and/or squatter")
    add("--keep-logs", action="store_true", help="keep the agents' logs")
    return parser.parse_args()


def config(args: argparse.Namespace, hosts: str, root: str) -> str:
    """An agent watching r0..rN-1 on closed ports, publishing under `root`."""
    instances = [Instance(f"r{i}", free_port()) for i in range(args.instances)]
    text = agent_config(instances, zookeeper=hosts, zk_root=root)
    return text.replace(
        f'root = "{root}"\n',
        f'root = "{root}"\nsession_timeout = {args.session_timeout!r}\n'
        f"heartbeat = {args.heartbeat!r}\n",
    )


def healthz(agent: Agent) -> tuple[int | None, str]:
    """GET /healthz: its status code (None when it does not answer) and body."""
    url = f"http://{LOOPBACK}:{agent.http_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode()
    except OSError:
        return None, ""


def says_held(agent: Agent) -> bool:
    """
    Whether /healthz is 503 naming a node held by another session (in
    conflict, or waiting to be taken over).
    """
    status, body = healthz(agent)
    return status == 503 and "held by" in body


def session_of(agent: Agent) -> int | None:
    """The agent's ZooKeeper session id, from /debug/stats."""
    try:
        session = agent.get("/debug/stats", timeout=2.0)["zookeeper"]["session_id"]
    except (OSError, ValueError, KeyError):
        return None
    return None if session is None else int(session, 16)


def client_xids(zookeeper: ZooKeeperServer) -> dict[int, int]:
    """Each session's last client xid, from ``cons``."""
    text = zookeeper.four_letter_word("cons").decode(errors="replace")
    return {int(s, 16): int(x, 16) for s, x in CONS_LINE.findall(text)}


@dataclass
class Observation:
    """What one agent did during the window."""

    started: float
    unhealthy_after: float | None = None
    exited_after: float | None = None
    exit_status: int | None = None
    # (seconds since start, requests so far) of the agent's session.
    requests: list[tuple[float, int]] = field(default_factory=list)
    other_unhealthy: int = 0

    def request_rate(self, settle: float) -> float | None:
        """Requests per second from `settle` s after the start on."""
        after = [(t, n) for t, n in self.requests if t >= settle]
        if len(after) < 2:
            return None
        (t0, n0), (t1, n1) = after[0], after[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else None


def observe(
    agent: Agent,
    zookeeper: ZooKeeperServer,
    window: float,
    other: Agent | None = None,
    until: Callable[[], bool] = lambda: False,
) -> Observation:
    """Watch `agent` for `window` seconds, or until it exits."""
    seen = Observation(time.monotonic())
    session: int | None = None
    next_sample = 0.0
    while (elapsed := time.monotonic() - seen.started) < window:
        if not agent.child.running:
            seen.exited_after = elapsed
            seen.exit_status = agent.child.process.wait()
            break
        if seen.unhealthy_after is None and says_held(agent):
            seen.unhealthy_after = elapsed
        if other is not None and healthz(other)[0] != 200:
            seen.other_unhealthy += 1
        if elapsed >= next_sample:
            next_sample = elapsed + SAMPLE
            session = session_of(agent) or session
            xid = client_xids(zookeeper).get(session or -1)
            if xid is not None:
                seen.requests.append((elapsed, xid))
        if until():
            break
        time.sleep(POLL)
    return seen


def log_rates(agent: Agent, seconds: float) -> tuple[float, float, int]:
    """Warning and error lines per minute in the agent's log, and errors."""
    text = agent.log.read_text(errors="replace").splitlines()
    warnings = sum(1 for line in text if "#warn]" in line)
    errors = sum(1 for line in text if "#error]" in line or "#critical]" in line)
    minutes = max(seconds, 1.0) / 60.0
    return warnings / minutes, errors / minutes, errors


def run_twin(
    args: argparse.Namespace,
    zookeeper: ZooKeeperServer,
    workdir: Path,
    started: ExitStack,
) -> list[tuple[str, str]]:
    """Agent A, then its twin B with the same agent_id."""
    root = "/bench-twin"
    text = config(args, zookeeper.hosts, root)
    first = Agent(workdir, text, "first")
    started.callback(first.stop)
    first.wait_ready()
    client = connect(zookeeper, started)
    deadline = time.monotonic() + 30.0
    while not client.exists(f"{root}/agents/bench") and time.monotonic() < deadline:
        time.sleep(POLL)
    twin = Agent(workdir, text, "twin")
    started.callback(twin.stop)
    seen = observe(twin, zookeeper, args.window, other=first)
    elapsed = seen.exited_after or args.window
    warnings, errors, error_lines = log_rates(twin, elapsed)
    owner = client.exists(f"{root}/agents/bench")
    first_session = session_of(first)
    last_lines = twin.log.read_text(errors="replace").splitlines()
    conflict_lines = [line for line in last_lines if "#error]" in line]
    return [
        ("twin: requests/s", _figure(seen.request_rate(args.settle))),
        ("twin: warning lines/min", f"{warnings:.0f}"),
        ("twin: error lines", f"{error_lines} ({errors:.1f}/min)"),
        ("twin: /healthz 503 naming the node after", _seconds(seen.unhealthy_after)),
        ("twin: exited after", _seconds(seen.exited_after)),
        ("twin: exit status", str(seen.exit_status)),
        ("twin: first error line", conflict_lines[0][:160] if conflict_lines else "-"),
        (
            "first agent kept its agent node",
            str(owner is not None and owner.ephemeralOwner == first_session),
        ),
        ("first agent /healthz not 200 (polls)", str(seen.other_unhealthy)),
    ]


def run_squatter(
    args: argparse.Namespace,
    zookeeper: ZooKeeperServer,
    workdir: Path,
    started: ExitStack,
) -> list[tuple[str, str]]:
    """A persistent node where the agent's r0 goes, then its deletion."""
    root = "/bench-squatter"
    path = f"{root}/instances/r0"
    client = connect(zookeeper, started)
    client.create(path, b'{"status": "up"}', makepath=True)
    agent = Agent(workdir, config(args, zookeeper.hosts, root), "squatted")
    started.callback(agent.stop)
    seen = observe(agent, zookeeper, args.window)
    warnings, errors, error_lines = log_rates(agent, args.window)
    client.delete(path)
    deleted = time.monotonic()
    session = session_of(agent)
    took: float | None = None
    while time.monotonic() - deleted < 10.0:
        stat = client.exists(path)
        if stat is not None and stat.ephemeralOwner == session:
            took = time.monotonic() - deleted
            break
        time.sleep(0.01)
    return [
        ("squatter: requests/s", _figure(seen.request_rate(args.settle))),
        ("squatter: warning lines/min", f"{warnings:.0f}"),
        ("squatter: error lines", f"{error_lines} ({errors:.1f}/min)"),
        (
            "squatter: /healthz 503 naming the node after",
            _seconds(seen.unhealthy_after),
        ),
        ("squatter: taken over after deletion", _seconds(took)),
    ]


def connect(zookeeper: ZooKeeperServer, started: ExitStack) -> KazooClient:
    """The script's own ZooKeeper client, closed at the end."""
    client = KazooClient(hosts=zookeeper.hosts, timeout=10.0)
    client.start(timeout=10.0)
    started.callback(client.close)
    started.callback(client.stop)
    return client


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


def main() -> int:
    """Run the scenarios, print the table, stop everything started."""
    args = parse_args()
    stop_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-conflicts-"))
    rows = [
        ("machine", machine()),
        ("load average at start", load_average()),
        (
            "settings",
            f"{args.instances} instances, session timeout {args.session_timeout:g} s, "
            f"heartbeat {args.heartbeat:g} s, window {args.window:g} s",
        ),
    ]
    scenarios = {"twin": run_twin, "squatter": run_squatter}
    try:
        with ExitStack() as started:
            zookeeper = ZooKeeperServer()
            started.callback(zookeeper.close)
            zookeeper.start()
            for name in args.scenarios.split(","):
                rows += scenarios[name](args, zookeeper, workdir, started)
                print(f"{name} done", file=sys.stderr, flush=True)
    finally:
        if args.keep_logs:
            print(f"logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(table(rows, "ZooKeeper conflicts"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""
What a reader of ZooKeeper sees while a central agent restarts.

One agent (``twistd -n sentinel``) with a ``state_dir`` watches N instances
(3,000) over a few real redis-servers, all up, interval 1 s and every other
setting at its default; a separate kazoo reader (`fleetwatch.FleetWatch`)
lists ``{root}/instances`` every 0.1 s and reads every node's data every
0.3 s. Once every node says up, the agent goes through one of these, and a
new process is started on the same config:

- ``sigterm``: SIGTERM, the new process started once the old one exited
  (a deploy);
- ``kill``: SIGKILL, started at once (a crash within the session timeout);
- ``late-kill``: SIGKILL, started the session timeout plus 3 s later (the
  session, and every node, has expired);
- ``redis-stop``: one redis-server frozen (SIGSTOP) just before the
  SIGTERM, until the end of the run: its instances must be published down
  by the new process's own checks, within ``fall`` checks of its start;
- ``zk-stop``: ZooKeeper frozen just before the SIGTERM, for 3 s.

For each: the nodes missing (how many, the longest), the nodes whose
``checked_at`` was older than ``refresh + (max(rise, fall) + 1) * interval``
(how many, the longest stretch) and the oldest ``checked_at`` read, the
healthy instances published down or whose status changed at all, the time
from the signal until every node carries the new process's data, the frozen
server's instances' time from the new process's start until all said down,
and the new process's CPU until then and its RSS at the end.

    .venv/bin/python benchmarks/restartfleet.py [--instances 3000] [--runs 1]
        [--cases sigterm,kill,late-kill,redis-stop,zk-stop]
        [--checkout before=PATH --checkout after=PATH]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import signal
import sys
import tempfile
import time
import urllib.error
from contextlib import ExitStack
from pathlib import Path

from common import (
    Agent,
    Instance,
    RedisServer,
    ZooKeeperServer,
    add_checkout_option,
    agent_config,
    load_average,
    machine,
    open_files_for,
    rows_in_turns,
    start_redis_servers,
    start_zookeeper,
    table,
    wait_until,
)
from fleetwatch import FleetWatch, NodeSeen
from kazoo.client import KazooClient

AGENT_ID = "bench"
REFRESH, RISE, FALL, INTERVAL = 30.0, 2, 3, 1.0
STALE_AFTER = REFRESH + (max(RISE, FALL) + 1) * INTERVAL
ZK_FREEZE = 3.0
SETTLE = 5.0
CASES = ("sigterm", "kill", "late-kill", "redis-stop", "zk-stop")


def parse_args() -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """The options; the defaults are a central agent's shape."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--instances", type=int, default=3000, help="instances (3000)")
    add("--servers", type=int, default=6, help="redis-servers they share (6)")
    add("--runs", type=int, default=1, help="runs of each case (1)")
    add("--session-timeout", type=float, default=10.0, help="seconds (10)")
    add(
        "--cases",
        default=",".join(CASES),
        help="comma-separated, of " + ", ".join(CASES),
    )
    add("--keep-logs", action="store_true", help="keep the agents' logs")
    add_checkout_option(parser)
    args = parser.parse_args()
    unknown = set(args.cases.split(",")) - set(CASES)
    if unknown:
        parser.error(f"--cases: unknown {', '.join(sorted(unknown))}")
    return parser, args


class Scene:
    """The servers, shared by every run, and a directory for the agents."""

    def __init__(
        self,
        args: argparse.Namespace,
        servers: list[RedisServer],
        zookeeper: ZooKeeperServer,
        client: KazooClient,
        workdir: Path,
    ) -> None:
        self.args, self.servers, self.zookeeper = args, servers, zookeeper
        self.client, self.workdir = client, workdir

    def config(self, root: str, state_dir: Path) -> str:
        """The agent's TOML: instances spread over the servers."""
        ports = [s.port for s in self.servers]
        instances = [
            Instance(f"r{i}", ports[i % len(ports)]) for i in range(self.args.instances)
        ]
        text = agent_config(
            instances,
            zookeeper=self.zookeeper.hosts,
            zk_root=root,
            agent_id=AGENT_ID,
            zk_settings={"session_timeout": self.args.session_timeout},
        )
        return f'state_dir = "{state_dir}"\n' + text


def _all_up(watch: FleetWatch) -> bool:
    return all(
        seen.missing_since is None and seen.status == "up"
        for path, seen in watch.snapshot().items()
        if path != watch.agent_node
    )


def _published(client: KazooClient, root: str, count: int) -> bool:
    if client.exists(f"{root}/agents/{AGENT_ID}") is None:
        return False
    if client.exists(f"{root}/instances") is None:
        return False
    return len(client.get_children(f"{root}/instances")) >= count


def _healthz(agent: Agent) -> str:
    """/healthz's status code, and its reasons if it has any."""
    try:
        answer = agent.get("/healthz")
        code = 200
    except urllib.error.HTTPError as error:
        answer, code = json.loads(error.read()), error.code
    except OSError as error:
        return f"no answer: {error}"
    reasons = answer.get("reasons") if isinstance(answer, dict) else None
    return f"{code} {'; '.join(map(str, reasons))}" if reasons else str(code)


def _answers(answers: list[str]) -> str:
    """How many of the answers were 200, how many not, and the first that was not."""
    other = [a for a in answers if a != "200"]
    first = f" (first: {other[0][:120]})" if other else ""
    return f"{len(answers) - len(other)} / {len(other)}{first}"


def restart(scene: Scene, path: Path, label: str, case: str) -> list[tuple[str, str]]:
    """One restart: start, publish, disturb, start again, watch."""
    args, client = scene.args, scene.client
    root = f"/fleet-{label}"
    text = scene.config(root, scene.workdir / f"state-{label}")
    names = [f"r{i}" for i in range(args.instances)]
    frozen = scene.servers[0]
    on_frozen = names[:: len(scene.servers)] if case == "redis-stop" else []
    expect_down = {f"{root}/instances/{name}" for name in on_frozen}
    files = open_files_for(args.instances)
    agent_node = f"{root}/agents/{AGENT_ID}"
    with ExitStack() as running:
        first = Agent(scene.workdir, text, f"{label}-first", path, open_files=files)
        running.callback(first.stop)
        first.wait_ready()
        wait_until(lambda: _published(client, root, args.instances), 120.0, "nodes")
        watch = FleetWatch(scene.zookeeper.hosts, root, names, agent_node, STALE_AFTER)
        running.callback(watch.stop)
        watch.start()
        wait_until(lambda: _all_up(watch), 120.0, "every instance up", poll=0.5)
        time.sleep(2.0)
        watch.mark()
        signalled = time.monotonic()
        if case == "redis-stop":
            frozen.pause()
            running.callback(frozen.resume)
        if case == "zk-stop":
            scene.zookeeper.pause()
            running.callback(scene.zookeeper.resume)
        kill = case in ("kill", "late-kill")
        first.child.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        first.child.process.wait(30.0)
        if case == "late-kill":
            time.sleep(args.session_timeout + 3.0)
        started = time.monotonic()
        second = Agent(scene.workdir, text, f"{label}-second", path, open_files=files)
        running.callback(second.stop)
        if case == "zk-stop":
            time.sleep(max(0.0, signalled + ZK_FREEZE - time.monotonic()))
            scene.zookeeper.resume()

        answers: list[str] = []
        asked_at = [0.0]

        def done() -> bool:
            if time.monotonic() - asked_at[0] >= 1.0 and second.child.running:
                answers.append(_healthz(second))
                asked_at[0] = time.monotonic()
            seen = watch.snapshot()
            rewritten = all(s.rewritten_at is not None for s in seen.values())
            return rewritten and all(seen[p].down_at is not None for p in expect_down)

        finished: float | None = None
        try:
            wait_until(done, 90.0, "the new process's data", poll=0.1)
            finished = time.monotonic()
        except RuntimeError:
            pass
        cpu = second.cpu_seconds()
        health = _healthz(second)
        startup = second.get("/debug/stats")["startup"]
        time.sleep(SETTLE)
        rss = second.rss_bytes()
        seen = watch.snapshot()
        said = (
            json.loads(client.get(agent_node)[0]) if client.exists(agent_node) else {}
        )
        second.child.process.send_signal(signal.SIGUSR2)
        second.child.process.wait(30.0)
    rows = _rows(seen, agent_node, expect_down, signalled, finished)
    rows += [
        ("agent node names the new pid", str(said.get("pid") == second.pid)),
        ("new process: CPU until done", f"{cpu:.1f} s"),
        ("new process: RSS after", f"{rss / 2**20:.0f} MB"),
        ("reader: failed steps / steps", f"{watch.errors} / {watch.steps}"),
        ("/healthz at the end of the wait", health),
        ("/healthz during the wait, 200 / other", _answers(answers)),
        (
            "new process: inconclusive checks, decided anew after a gap",
            f"{startup['inconclusive_checks']}, {decided_anew(second.log.read_text())}",
        ),
    ]
    if expect_down:
        downs = [seen[p].down_at for p in expect_down]
        late = [d - started for d in downs if d is not None]
        never = len(downs) - len(late)
        rows.append(
            (
                f"{len(downs)} frozen: all down after the new start",
                f"{never} never" if never else f"{max(late):.2f} s",
            )
        )
    return [(f"{label}: {name}", value) for name, value in rows]


def _count_longest(values: list[float]) -> str:
    return f"{len(values)}, {max(values, default=0.0):.2f} s"


def _rows(
    seen: dict[str, NodeSeen],
    agent_node: str,
    expect_down: set[str],
    signalled: float,
    finished: float | None,
) -> list[tuple[str, str]]:
    """What the reader saw of the nodes, from the signal on."""
    healthy = [s for p, s in seen.items() if p != agent_node and p not in expect_down]
    rewritten = "never"
    if finished is not None:
        last = max(s.rewritten_at or finished for s in seen.values())
        rewritten = f"{last - signalled:.2f} s"
    return [
        (
            "nodes missing (count, longest)",
            _count_longest([s.longest_gap for s in seen.values() if s.longest_gap]),
        ),
        (
            "nodes stale (count, longest)",
            _count_longest([s.longest_stale for s in seen.values() if s.longest_stale]),
        ),
        ("oldest checked_at read", f"{max(s.oldest_age for s in seen.values()):.1f} s"),
        (
            "healthy published down / status changed",
            f"{sum(s.down_at is not None for s in healthy)}"
            f" / {sum(bool(s.flips) for s in healthy)}",
        ),
        ("every node rewritten, after the signal", rewritten),
    ]


def decided_anew(log: str) -> int:
    """
    How many instances a log says were decided anew after a gap: one line
    each before their summary (`sentinel.firstchecks`), a count a line since.
    """
    summed = re.findall(r"(\d+) instance\(s\) decided anew", log)
    return sum(map(int, summed)) if summed else log.count("after a gap")


def main() -> int:
    """Every case, each checkout in turn; the table; everything started stopped."""
    parser, args = parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-restartfleet-"))
    rows = [
        ("machine", machine()),
        ("load average at start", load_average()),
        (
            "settings",
            f"{args.instances} instances over {args.servers} redis-servers, "
            f"state_dir, session timeout {args.session_timeout:g} s, stale after "
            f"{STALE_AFTER:g} s, reader: children every 0.1 s, data every 0.3 s",
        ),
    ]
    try:
        with ExitStack() as started:
            servers = start_redis_servers(args.servers, started)
            zookeeper, client = start_zookeeper(started)
            scene = Scene(args, servers, zookeeper, client, workdir)

            def run(
                args: argparse.Namespace, label: str, path: Path, number: int
            ) -> list[tuple[str, str]]:
                out: list[tuple[str, str]] = []
                for case in args.cases.split(","):
                    name = f"{label}-{case}-{number}"
                    out += restart(scene, path, name, case)
                    out.append((f"{name}: load average", load_average()))
                    print(f"{name} done", file=sys.stderr, flush=True)
                return out

            rows += rows_in_turns(parser, args, run)
            rows.append(("load average at the end", load_average()))
    finally:
        if args.keep_logs:
            print(f"logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        table(rows, "Restarts of a central agent, as a reader of ZooKeeper sees them")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

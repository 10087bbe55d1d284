"""
A group's start, many times: does a member name its own group's writes
as another client's (``/healthz`` 503 for ``OVERWRITES_WINDOW``)?

Three real ``twistd -n sentinel`` agents (``g0``, ``g1``, ``g2``; a
``state_dir`` each, ``replicas = 2``, serverset discovery, session
timeout 10 s, as ``benchmarks/rebuild.py``'s group) that all know the
same ``--instances`` instances on ``--servers`` real redis-servers, all
up, started ``--starts`` times against one real ZooKeeper, each start
under a root of its own (nothing else writes there). ``--stagger``:
``ready`` starts each once the one before answers (as ``rebuild.py``),
``together`` all at once, ``random`` 0.2--1 s apart. Each agent's
``/healthz`` is read every ``--every`` s for ``--duration`` s; the
table gives, for each start, each agent's seconds not 200 after its
first 200 and why, its writes over its nodes named and late sets
counted (``/debug/stats``), and the lines its log wrote saying a node "was
written by another ZooKeeper client", with the takeovers of that node
logged by any member (who took it from whom, when).

With ``--keep-logs``, ZooKeeper's transaction log is read at the end
(its ``TxnLogToolkit``), and each takeover's transaction (a delete and a
create of an instance node) is set beside the line its taker logged
("took P over from agent A (session S)"): one that deleted a node of
another session than ``S`` went by a reading older than another
member's takeover of the node (versions start again at 0 on each new
node), and is counted and named, a few at most; so are the lines saying
a taker found no discovery member of the agent it took a node from.

    .venv/bin/python benchmarks/groupoverwrites.py [--starts 10]
        [--instances 1000] [--servers 6] [--stagger ready,together,random]
        [--duration 40] [--keep-logs]
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (  # noqa: E402
    Agent,
    Instance,
    agent_config,
    load_average,
    machine,
    open_files_for,
    start_redis_servers,
    start_zookeeper,
    stop_on_sigterm,
    table,
)
from restartfleet import _healthz  # noqa: E402

from tests.servers import SLF4J_BINDING, ZOOKEEPER_JARS  # noqa: E402

GROUP = ("g0", "g1", "g2")
STAGGERS = ("ready", "together", "random")
OVERWRITTEN = re.compile(r"(\S+) was written by another ZooKeeper client")


def start_group(
    workdir: Path,
    texts: dict[str, str],
    stagger: str,
    instances: int,
    started: ExitStack,
) -> list[Agent]:
    """The three agents, started as `stagger` says."""
    agents = []
    for agent_id in GROUP:
        if agents and stagger == "random":
            time.sleep(random.uniform(0.2, 1.0))
        agent = Agent(
            workdir,
            texts[agent_id],
            agent_id,
            open_files=open_files_for(instances),
        )
        started.callback(agent.stop)
        if stagger == "ready":
            agent.wait_ready()
        agents.append(agent)
    return agents


TOOLKIT = "org.apache.zookeeper.server.persistence.TxnLogToolkit"
TXN = re.compile(r"session (0x[0-9a-f]+) cxid \S+ zxid (0x[0-9a-f]+) (\w+) (.*)")
TOOK = re.compile(
    r"took (\S+/instances/\S+) over from agent \S+ \(session (0x[0-9a-f]+)\)"
)
OP = re.compile(r"(delete|create|setData|check):.{4}(/[^\x00;]*)", re.S)
AGENT = re.compile(r'"agent":\s*"([^"]+)"')


def transactions(data: Path) -> list[tuple[int, str, str, str]]:
    """
    ZooKeeper's transaction log under `data` (zxid, session, kind, rest),
    in order, as its ``TxnLogToolkit`` prints it (a record may span lines).
    """
    java = shutil.which("java")
    assert java is not None
    classpath = ":".join(
        p for p in (*ZOOKEEPER_JARS, SLF4J_BINDING) if Path(p).exists()
    )
    records: list[tuple[int, str, str, str]] = []
    for log in sorted((data / "version-2").glob("log.*")):
        out = subprocess.run(
            [java, "-cp", classpath, TOOLKIT, "-d", str(log)],
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
        for line in out.splitlines():
            found = TXN.search(line)
            if found is not None:
                session, zxid, kind, rest = found.groups()
                records.append((int(zxid, 16), f"{int(session, 16):#x}", kind, rest))
            elif records:
                zxid_, session_, kind_, rest_ = records[-1]
                records[-1] = (zxid_, session_, kind_, rest_ + " " + line)
    return sorted(records)


def takeover_deletes(data: Path, logs: list[Path]) -> tuple[int, int, list[str]]:
    """
    Takeovers in ZooKeeper's log (a transaction deleting and creating
    one instance node), how many deleted a node of another session than
    the one their taker logged it took the node from, and a few of those.
    """
    # Each agent's takeovers as it logged them, by node, in order.
    said: dict[tuple[str, str], list[str]] = {}
    for log in logs:
        for line in lines_about(log, "over from agent"):
            found = TOOK.search(line)
            if found is not None:
                key = (log.stem, found.group(1))
                said.setdefault(key, []).append(f"{int(found.group(2), 16):#x}")
    holder: dict[str, tuple[str, str]] = {}  # path: (session, agent named)
    taken = wrong = 0
    samples: list[str] = []
    for zxid, session, kind, rest in transactions(data):
        if kind == "create":
            path = rest.split(",", 1)[0]
            if "/instances/" in path:
                agent = AGENT.search(rest)
                holder[path] = (session, agent.group(1) if agent else "?")
            continue
        if kind != "multi":
            continue
        # Each operation: its kind, its path (after a length in 4 bytes)
        # and, up to the next one, its data (a create's names its agent).
        ops = list(OP.finditer(rest))
        deleted = {op.group(2) for op in ops if op.group(1) == "delete"}
        for i, op in enumerate(ops):
            path = op.group(2)
            if op.group(1) != "create" or "/instances/" not in path:
                continue
            end = ops[i + 1].start() if i + 1 < len(ops) else len(rest)
            agent_found = AGENT.search(rest, op.end(), end)
            agent = agent_found.group(1) if agent_found else "?"
            if path in deleted:
                taken += 1
                before = holder.get(path, ("?", "?"))
                meant = said.get((agent, path), [])
                from_session = meant.pop(0) if meant else None
                if from_session is not None and from_session != before[0]:
                    wrong += 1
                    if len(samples) < 3:
                        samples.append(
                            f"{agent} deleted {path} of {before[1]} (zxid"
                            f" {zxid:#x}), meaning the node of session {from_session}"
                        )
            holder[path] = (session, agent)
    return taken, wrong, samples


def lines_about(log: Path, needle: str) -> list[str]:
    """The lines of `log` that contain `needle`."""
    return [line for line in log.read_text().splitlines() if needle in line]


def one_start(
    args: argparse.Namespace, n: int, stagger: str, hosts: str, ports: list[int]
) -> tuple[list[tuple[str, str]], Path]:
    """One start of the group under a root of its own: its rows, its logs."""
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-groupoverwrites-"))
    root = f"/overwrites{n}"
    instances = [
        Instance(f"r{i}", ports[i % len(ports)]) for i in range(args.instances)
    ]
    texts = {}
    for agent_id in GROUP:
        text = agent_config(
            instances,
            zookeeper=hosts,
            zk_root=root,
            agent_id=agent_id,
            zk_settings={
                "session_timeout": 10.0,
                "replicas": 2,
                "discovery": "serverset",
            },
        )
        texts[agent_id] = text.replace(
            "[zookeeper]\n",
            f'state_dir = "{workdir / ("state-" + agent_id)}"\n\n'
            f'[zookeeper]\ndiscovery_root = "{root}-discovery"\n',
            1,
        )
    load = load_average()
    rows: list[tuple[str, str]] = []
    with ExitStack() as started:
        agents = start_group(workdir, texts, stagger, args.instances, started)
        t0 = time.monotonic()
        first_ok: list[float | None] = [None] * len(agents)
        not_ok: list[float] = [0.0] * len(agents)
        why: list[str] = [""] * len(agents)
        while time.monotonic() - t0 < args.duration:
            for i, agent in enumerate(agents):
                answer = _healthz(agent)
                if answer == "200":
                    if first_ok[i] is None:
                        first_ok[i] = time.monotonic() - t0
                elif first_ok[i] is not None:
                    not_ok[i] += args.every
                    why[i] = answer[:200]
            time.sleep(args.every)
        counts = []
        for agent in agents:
            stats = agent.get("/debug/stats")["zookeeper"]
            counts.append(
                f"written over {stats['nodes_written_over']}, late sets"
                f" {stats['late_sets_after_takeover']}"
            )
    for i, agent in enumerate(agents):
        first = "never" if first_ok[i] is None else f"{first_ok[i]:.1f} s"
        said = f"; {why[i]}" if why[i] else ""
        rows.append(
            (
                f"start {n} ({stagger}, load {load}): {agent.log.stem}",
                f"first 200 at {first}, then not 200 {not_ok[i]:.1f} s;"
                f" {counts[i]}{said}",
            )
        )
        for line in lines_about(agent.log, "was written by another ZooKeeper"):
            found = OVERWRITTEN.search(line)
            rows.append((f"  {agent.log.stem} logged", line[-160:]))
            if found is None:
                continue
            name = found.group(1).rsplit("/", 1)[-1]
            for other in agents:
                for took in lines_about(other.log, f"instances/{name} over"):
                    rows.append((f"    {other.log.stem}", took[:140]))
    return rows, workdir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--servers", type=int, default=6)
    parser.add_argument("--stagger", default=",".join(STAGGERS))
    parser.add_argument("--duration", type=float, default=40.0)
    parser.add_argument("--every", type=float, default=0.5)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    staggers = args.stagger.split(",")
    if not set(staggers) <= set(STAGGERS):
        parser.error(f"--stagger: of {', '.join(STAGGERS)}")
    stop_on_sigterm()
    rows: list[tuple[str, str]] = []
    kept: list[Path] = []
    with ExitStack() as started:
        zookeeper, _ = start_zookeeper(started)
        servers = start_redis_servers(args.servers, started)
        ports = [server.port for server in servers]
        for n in range(args.starts):
            stagger = staggers[n % len(staggers)]
            got, logs = one_start(args, n, stagger, zookeeper.hosts, ports)
            print(table(got, f"start {n}"), flush=True)
            if args.keep_logs:
                print(f"logs kept in {logs}", flush=True)
                kept += sorted(logs.glob("g*.log"))
            else:
                shutil.rmtree(logs, ignore_errors=True)
            rows += got
        if args.keep_logs:
            txnlog = Path(tempfile.mkdtemp(prefix="sentinel-groupoverwrites-zk-"))
            shutil.copytree(zookeeper.data / "version-2", txnlog / "version-2")
            print(f"ZooKeeper's transaction log kept in {txnlog}", flush=True)
            taken, wrong, samples = takeover_deletes(txnlog, kept)
            rows.append(
                (
                    "takeovers in ZooKeeper's log",
                    f"{taken}, of which {wrong} deleted a node of another"
                    " session than the one their taker read",
                )
            )
            rows += [("  such as", sample) for sample in samples]
            unreplaced = sum(
                len(lines_about(log, "but no member of its is under")) for log in kept
            )
            rows.append(("lines 'no member of its ... to replace'", str(unreplaced)))
    title = (
        f"groupoverwrites: 3 agents, {args.instances:,} instances,"
        f" {args.starts} starts ({machine()})"
    )
    print(table(rows, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())

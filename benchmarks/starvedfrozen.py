"""
A frozen server on a starved agent: is it published down, and until then
does ``/healthz`` say why not?

One agent (``twistd -n sentinel``, 1 s interval, 0.5 s timeout, rise 2,
fall 3) publishes ``--instances`` names over ``--servers`` redis-servers
to a ZooKeeper of the script's own. Once every instance node says up,
the last server is stopped (SIGSTOP, its names frozen) and the agent is
starved for ``--watch`` s:

- ``--starve stop``: the agent itself is SIGSTOPped ``--stopped`` s out
  of every ``--period`` s (a stand-in for a machine that runs it in
  bursts);
- ``--starve pinned``: the agent and ``--busy`` busy loops share one CPU
  (it gets 1/(busy + 1) of it), as beside other work.

With ``--from-start`` the server is stopped before the agent starts, and
the agent is starved from its start: first checks of a frozen server,
and the healthy names' first checks on a short CPU.

With ``--hung N``, N more names (not counted below) point at a port that
listens and never accepts (its backlog full, new connections time out):
the agent is connecting at every moment, so its own lateness is measured
and excuses checks at every moment too (a fleet with a hung host in it).

Every second the script reads every instance node (its ``status``),
``/healthz`` and ``/instances?status=down`` (each with a 2.5 s bound: a
starved agent answers late or not at all). Printed, for each of
``--runs`` runs of each ``--checkout`` (in turns):

- the frozen names published down, and when (seconds from the freeze,
  p50 and max), and how many never were;
- the seconds after the stale bound (``2 * (interval * fall + timeout)``,
  7 s, from the last check recorded, so 9 s from the freeze with an
  interval and freshness's scan; 12 s from the start with
  ``--from-start``, the unjudged bound and a scan) in which a frozen
  name was not published down while
  ``/healthz`` answered 200 (silently stale: it must be 0), and how
  many ``/healthz`` answers were 503 or missing meanwhile;
- the healthy names ever published down (must be 0: the agent's own CPU
  is not Redis's failure), and the agent's ``/debug/stats`` counters of
  checks that said nothing;
- the load average before and after.

    .venv/bin/python benchmarks/starvedfrozen.py --checkout before=PATH
        --checkout after=. [--starve stop|pinned] [--busy 13] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    Agent,
    Instance,
    add_checkout_option,
    agent_config,
    crowd,
    load_average,
    open_files_for,
    rows_in_turns,
    start_redis_servers,
    start_zookeeper,
    table,
)

ROOT = "/sentinel"
# Seconds the instances may take to be all up before the freeze.
WARMUP_LIMIT = 90.0
# Seconds from the freeze after which a frozen name still up must be named
# by /healthz: the stale bound at the defaults used here (2 * (1 s * 3 +
# 0.5 s)) counts from the last check recorded, up to an interval before the
# freeze, and freshness scans once a second.
STALE_BOUND = 9.0
# The same from the agent's start (``--from-start``): the unjudged bound,
# 10 s from when an instance is watched, and a scan.
UNJUDGED_BOUND = 12.0
HTTP_TIMEOUT = 2.5


def _statuses(client: Any, names: list[str]) -> dict[str, str | None]:
    # Each node's status now (None: missing or unreadable).
    asked = [(n, client.get_async(f"{ROOT}/instances/{n}")) for n in names]
    statuses: dict[str, str | None] = {}
    for name, result in asked:
        try:
            data, _ = result.get(timeout=10.0)
            statuses[name] = json.loads(data)["status"]
        except Exception:
            statuses[name] = None
    return statuses


def _http(agent: Agent, path: str) -> tuple[int | None, Any]:
    # The status code and JSON of a GET, or (None, why) if none came.
    url = f"http://127.0.0.1:{agent.http_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except Exception as error:
        return None, str(error)


def _starve_by_stops(
    agent: Agent, args: argparse.Namespace, done: threading.Event
) -> None:
    # SIGSTOP the agent `stopped` s of every `period` s until `done`.
    while not done.is_set():
        os.kill(agent.pid, signal.SIGSTOP)
        done.wait(args.stopped)
        os.kill(agent.pid, signal.SIGCONT)
        done.wait(args.period - args.stopped)


def _hung_port(started: ExitStack) -> int:
    # A loopback port that listens and never accepts, its backlog filled:
    # the kernel drops further SYNs, and connects to it time out.
    listener = socket.socket()
    started.callback(listener.close)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port: int = listener.getsockname()[1]
    for _ in range(2):
        filler = socket.socket()
        started.callback(filler.close)
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
    return port


def _wait_all_up(client: Any, names: list[str], run_label: str) -> None:
    # Until every instance node says up (at most WARMUP_LIMIT s).
    deadline = time.monotonic() + WARMUP_LIMIT
    while True:
        statuses = _statuses(client, names)
        up = sum(s == "up" for s in statuses.values())
        if up == len(names):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{run_label}: {up} of {len(names)} up in time")
        time.sleep(1.0)


def _starve(
    agent: Agent, args: argparse.Namespace, started: ExitStack, done: threading.Event
) -> None:
    # Starve the agent as ``--starve`` says until `done` is set (or `started` ends).
    if args.starve == "stop":
        stopper = threading.Thread(
            target=_starve_by_stops, args=(agent, args, done), daemon=True
        )
        stopper.start()
        started.callback(stopper.join)
    else:
        crowd(started, agent.pid, args.busy)
    started.callback(done.set)


def run(
    args: argparse.Namespace, label: str, tree: Path, number: int
) -> list[tuple[str, str]]:
    """One run of the agent of `tree`; its rows."""
    run_label = f"{label} run {number}"
    workdir = Path(tempfile.mkdtemp(prefix="starvedfrozen-"))
    with ExitStack() as started:
        zookeeper, client = start_zookeeper(started)
        servers = start_redis_servers(args.servers, started)
        instances = [
            Instance(f"r{i}", servers[i % args.servers].port)
            for i in range(args.instances)
        ]
        frozen_server = servers[-1]
        names = [i.name for i in instances]
        if args.hung:
            hung = _hung_port(started)
            instances += [Instance(f"h{i}", hung) for i in range(args.hung)]
        frozen = {i.name for i in instances if i.port == frozen_server.port}
        if args.from_start:
            os.kill(frozen_server.pid, signal.SIGSTOP)
            started.callback(lambda: os.kill(frozen_server.pid, signal.SIGCONT))
        agent = Agent(
            workdir,
            agent_config(instances, zookeeper=zookeeper.hosts),
            label=label,
            pythonpath=tree,
            open_files=open_files_for(args.instances + args.hung),
        )
        started.callback(agent.stop)
        started.callback(lambda: os.kill(agent.pid, signal.SIGCONT))
        load_before = load_average()
        done = threading.Event()
        if args.from_start:
            _starve(agent, args, started, done)
        agent.wait_ready()
        if not args.from_start:
            _wait_all_up(client, names, run_label)
            load_before = load_average()
            os.kill(frozen_server.pid, signal.SIGSTOP)
            started.callback(lambda: os.kill(frozen_server.pid, signal.SIGCONT))
            _starve(agent, args, started, done)
        frozen_at = time.monotonic()
        bound = UNJUDGED_BOUND if args.from_start else STALE_BOUND

        down_at: dict[str, float] = {}
        healthy_down: set[str] = set()
        silent = unhealthy = unanswered = 0
        reasons: list[str] = []
        while (now := time.monotonic() - frozen_at) < args.watch:
            statuses = _statuses(client, names)
            code, health = _http(agent, "/healthz")
            _http(agent, f"/instances?status=down&limit={args.instances}")
            for name, status in statuses.items():
                if status == "down":
                    if name in frozen:
                        down_at.setdefault(name, now)
                    else:
                        healthy_down.add(name)
            if now > bound and any(statuses.get(n) != "down" for n in frozen):
                if code == 200:
                    silent += 1
                elif code is None:
                    unanswered += 1
                else:
                    unhealthy += 1
                    reasons.append("; ".join(health.get("reasons", [])))
            time.sleep(max(0.0, 1.0 - (time.monotonic() - frozen_at - now)))
        done.set()
        healthy_up = sum(statuses.get(n) == "up" for n in names if n not in frozen)
        stats = _http(agent, "/debug/stats")[1]
        load_after = load_average()
    times = sorted(down_at.values())
    startup = stats.get("startup", {}) if isinstance(stats, dict) else {}
    rows = [
        (
            f"{run_label}: frozen down (p50 / max s)",
            f"{len(times)} of {len(frozen)}"
            + (f", {times[len(times) // 2]:.1f} / {times[-1]:.1f}" if times else ""),
        ),
        (
            f"{run_label}: frozen not down past {bound:g} s, /healthz 200 / 503 / none",
            f"{silent} / {unhealthy} / {unanswered} s",
        ),
        (
            f"{run_label}: healthy ever published down / up at the end",
            f"{len(healthy_down)} / {healthy_up} of {len(names) - len(frozen)}",
        ),
        (
            f"{run_label}: checks put off (starved first) / inconclusive",
            f"{startup.get('first_checks_starved', '?')} / "
            f"{startup.get('inconclusive_checks', '?')}",
        ),
        (f"{run_label}: load before / after", f"{load_before} / {load_after}"),
    ]
    if reasons:
        rows.append((f"{run_label}: last 503 reason", reasons[-1][:300]))
    if args.keep_logs:
        rows.append((f"{run_label}: log", str(agent.log)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_checkout_option(parser)
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--servers", type=int, default=10)
    parser.add_argument("--starve", choices=("stop", "pinned"), default="stop")
    parser.add_argument("--stopped", type=float, default=1.0)
    parser.add_argument("--period", type=float, default=3.0)
    parser.add_argument("--busy", type=int, default=13)
    parser.add_argument("--watch", type=float, default=45.0)
    parser.add_argument("--from-start", action="store_true")
    parser.add_argument("--hung", type=int, default=0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    if not 0 < args.stopped < args.period:
        parser.error("--stopped must be above 0 and below --period")
    rows = rows_in_turns(parser, args, run)
    print(table(rows, f"starved agent, frozen server ({args.starve})"))


if __name__ == "__main__":
    main()

"""
Instances the agent does not judge, as an operator sees them: how long
each stays without a status, and whether ``/healthz``, ``/instances`` and
``/metrics`` say so meanwhile.

Four redis-servers hold ``--healthy`` names; a fifth, its listen backlog
one connection long (``tcp-backlog 1``), is stopped (SIGSTOP) before the
agent starts: a hung host holding ``--hung`` names. One agent (``twistd
-n sentinel``, 1 s interval, 0.5 s timeout, fall 3, rise 2) with a
ZooKeeper of its own watches them all, shares one core with ``--busy``
busy loops (pinned with it), and is left alone (no ``/healthz`` asked)
for ``--settle`` s; then ``--added`` healthy names and ``--added-hung``
more on the hung host are added to the config and SIGHUP sent, and
``/healthz``, ``/instances`` and ``/metrics`` are read every 2 s for
``--duration`` s. Printed, for each of ``--runs`` runs of each
``--checkout`` (interleaved):

- ``/healthz`` at its first answer (``--settle`` s after the start), and
  how many instances had no status then;
- the longest an instance went without a status (since the start or the
  SIGHUP) while ``/healthz`` answered 200, counting only past 10 s;
- of the samples that found instances without a status, how many had
  each of them explained in ``/instances`` (``unjudged_since`` and
  ``unjudged_reason``) and in ``/metrics``;
- the seconds from the SIGHUP to each added name's first status (p50 /
  max) and how many had none by the end; the load average.

    .venv/bin/python benchmarks/unjudged.py --checkout before=PATH
        --checkout after=. [--busy 4 --healthy 2000] [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

from common import (
    LOOPBACK,
    Agent,
    Instance,
    RedisServer,
    add_checkout_option,
    agent_config,
    crowd,
    load_average,
    rows_in_turns,
    start_zookeeper,
    table,
)

ZK_ROOT = "/unjudged"
# Seconds without a status past which an instance counts as unjudged here.
UNJUDGED_AFTER = 10.0
UNJUDGED_FAMILY = "sentinel_instance_unjudged_since_timestamp_seconds"


def healthz(agent: Agent) -> tuple[int, list[str]]:
    """``/healthz``'s status code and reasons."""
    url = f"http://{LOOPBACK}:{agent.http_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, []
    except urllib.error.HTTPError as e:
        return e.code, list(json.loads(e.read()).get("reasons", []))


def metrics_text(agent: Agent) -> str:
    """``/metrics`` as text."""
    url = f"http://{LOOPBACK}:{agent.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=30) as answer:
        return str(answer.read().decode("utf-8"))


def run(args: argparse.Namespace, label: str, checkout: Path, number: int) -> Any:
    """One agent of `checkout`; its rows."""
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-unjudged-"))
    with ExitStack() as started:
        servers = []
        for _ in range(4):
            server = RedisServer(extra_args=["--maxclients", "10000"]).start()
            started.callback(server.stop)
            servers.append(server)
        hung_server = RedisServer(extra_args=["--tcp-backlog", "1"]).start()
        started.callback(hung_server.stop)
        hung_server.pause()
        zookeeper, _ = start_zookeeper(started)
        healthy = [Instance(f"h{i}", servers[i % 3].port) for i in range(args.healthy)]
        hung = [Instance(f"hung{i}", hung_server.port) for i in range(args.hung)]
        added = [Instance(f"add{i}", servers[3].port) for i in range(args.added)]
        added += [
            Instance(f"addhung{i}", hung_server.port) for i in range(args.added_hung)
        ]
        config = partial(
            agent_config, interval=1.0, timeout=0.5, fall=3, rise=2,
            zookeeper=zookeeper.hosts, zk_root=ZK_ROOT,
        )  # fmt: skip
        agent = Agent(
            workdir,
            config(healthy + hung),
            label=f"{label}{number}",
            pythonpath=checkout,
            open_files=len(healthy) + len(hung) + len(added) + 1024,
        )
        started.callback(agent.stop)
        agent.wait_ready()
        began = time.time()
        if args.busy:
            crowd(started, agent.pid, args.busy)
        time.sleep(args.settle)
        first_code, _ = healthz(agent)
        first_unknown = sum(1 for i in agent.instances().values() if not i["status"])
        watched_at = dict.fromkeys((i.name for i in healthy + hung), began)
        agent.config_path.write_text(config(healthy + hung + added))
        hup = time.time()
        os.kill(agent.pid, signal.SIGHUP)
        watched_at.update(dict.fromkeys((i.name for i in added), hup))
        judged: dict[str, float] = {}
        silent = 0.0
        samples = explained = in_metrics = 0
        while time.time() - hup < args.duration:
            time.sleep(2.0)
            code, _ = healthz(agent)
            now = time.time()
            # Read first: an instance without a status after it had none then.
            # The names the agent watched by then: the reload adds the
            # others once the config has kept still 2 s (sentinel.settling),
            # which may fall between the two reads; they are not in this
            # /metrics, and not missing from it.
            watched = set(agent.instances())
            text = metrics_text(agent)
            instances = agent.instances()
            unknown = [i for i in instances.values() if i["status"] is None]
            for name in (i.name for i in added):
                if name not in judged and (instances.get(name) or {}).get("status"):
                    judged[name] = now - hup
            if not unknown:
                continue
            if code == 200:
                ages = [now - watched_at[i["name"]] for i in unknown]
                silent = max([silent, *(a for a in ages if a > UNJUDGED_AFTER)])
            samples += 1
            explained += all(
                i.get("unjudged_since") and i.get("unjudged_reason") for i in unknown
            )
            in_metrics += all(
                f'{UNJUDGED_FAMILY}{{name="{i["name"]}"' in text
                for i in unknown
                if i["name"] in watched
            )
        times = sorted(judged.values())
        shown = (
            f"p50 {times[len(times) // 2]:.1f} s, max {times[-1]:.1f} s"
            if times
            else "none"
        )
        run_label = f"{label} run {number + 1}"
        rows = [
            (
                f"{run_label}: first /healthz ({args.settle:g} s after start)",
                f"{first_code}, {first_unknown} instance(s) without a status",
            ),
            (
                f"{run_label}: longest without a status past "
                f"{UNJUDGED_AFTER:g} s under /healthz 200",
                f"{silent:.1f} s",
            ),
            (
                f"{run_label}: samples with instances without a status",
                f"{samples}; all explained in /instances: {explained}, "
                f"in /metrics: {in_metrics}",
            ),
            (
                f"{run_label}: added names' first status",
                f"{len(times)} of {len(added)} ({shown})",
            ),
            (f"{run_label}: load", load_average()),
        ]
    shutil.rmtree(workdir, ignore_errors=True)
    return rows


def main() -> int:
    """Run in turns, print the table, stop everything started."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--healthy", type=int, default=2000, help="healthy names (2000)")
    add("--hung", type=int, default=20, help="names on the hung server (20)")
    add("--added", type=int, default=80, help="healthy names added (80)")
    add("--added-hung", type=int, default=20, help="hung names added (20)")
    add("--busy", type=int, default=4, help="busy loops on the agent's core (4)")
    add("--settle", type=float, default=20.0, help="seconds before SIGHUP (20)")
    add("--duration", type=float, default=40.0, help="seconds watched (40)")
    add("--runs", type=int, default=1, help="runs of each checkout (1)")
    add_checkout_option(parser)
    args = parser.parse_args()
    rows = rows_in_turns(parser, args, run)
    print(table(rows, "unjudged instances"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

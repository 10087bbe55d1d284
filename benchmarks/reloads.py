"""
A storm of SIGHUPs: what hundreds of reloads a second cost the agent.

One agent (``twistd -n sentinel``, 1 s interval, 0.5 s timeout) watches N
instances over a few real redis-servers and publishes to a ZooKeeper of
its own. Once every instance is up, it gets ``--rate`` SIGHUPs a second for
``--duration`` seconds, its config file (a symbolic link) either left as
it is (``same``), pointed in turn at two configs a tenth of whose
instances differ (``alternate``), or pointed at a file that is no TOML
(``invalid``). Then it is watched ``--after`` seconds more. Printed for
each mode: RSS before, at most and at the end, gc objects, checks failed
and the fewest instances up during the storm and after it, the slowest
tick, the ``/healthz`` answers seen, and the reloads applied and refused;
with ``--series``, RSS and gc objects every 10 s (at a low ``--rate``, a
churn of instances cycle after cycle). With ``--zookeeper-down``,
ZooKeeper is stopped (SIGSTOP) for the storm and resumed (SIGCONT) at its
end, and printed too: how long after that ZooKeeper's instance nodes
were exactly the last config's, all up.

    .venv/bin/python benchmarks/reloads.py [--instances 2000] [--rate 200]
        [--duration 30] [--after 20] [--modes same,alternate,invalid] [--series]
        [--zookeeper-down]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    LOOPBACK,
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
    wait_until,
)
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException

from tests.servers import ZooKeeperServer

MODES = ("same", "alternate", "invalid")
MIB = 2**20


def pointed_at(cycle: list[str], flips: int) -> str:
    """The config a link pointed in turn at `cycle` `flips` times names."""
    return cycle[(flips - 1) % len(cycle)] if flips else "a.toml"


def parse_args() -> argparse.Namespace:
    """The options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--instances", type=int, default=2000, help="N (2000)")
    add("--servers", type=int, default=4, help="redis-servers (4)")
    add("--rate", type=float, default=200.0, help="SIGHUPs a second (200)")
    add("--duration", type=float, default=30.0, help="s of storm (30)")
    add("--after", type=float, default=20.0, help="s watched after it (20)")
    add("--modes", default=",".join(MODES), help="comma-separated (all)")
    add("--series", action="store_true", help="print RSS and gc objects each 10 s")
    add("--zookeeper-down", action="store_true", help="ZooKeeper stopped for the storm")
    args = parser.parse_args()
    args.modes = args.modes.split(",")
    if not set(args.modes) <= set(MODES):
        parser.error(f"--modes takes {', '.join(MODES)}")
    if args.instances < 10 or args.rate <= 0 or args.duration <= 0:
        parser.error("--instances must be 10 or more, --rate and --duration > 0")
    return args


def healthz(port: int, reasons: set[str]) -> int:
    """
    The status code of ``/healthz`` (0: no answer within 5 s); the reasons
    of a 503 are added to `reasons`.
    """
    try:
        with urllib.request.urlopen(
            f"http://{LOOPBACK}:{port}/healthz", timeout=5
        ) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as e:
        try:
            reasons.update(json.loads(e.read()).get("reasons", []))
        except (OSError, ValueError):
            pass
        return int(e.code)
    except OSError:
        return 0


def hangups(pid: int, rate: float, duration: float, flip: Any, sent: list[int]) -> None:
    """Send SIGHUP to `pid` `rate` times a second for `duration` s."""
    end = time.monotonic() + duration
    period = 1.0 / rate
    at = time.monotonic()
    while at < end:
        flip()
        os.kill(pid, signal.SIGHUP)
        sent[0] += 1
        at += period
        time.sleep(max(0.0, at - time.monotonic()))


def published_after(
    client: KazooClient, root: str, names: set[str], since: float, limit: float
) -> str:
    """
    How long after `since` the instance nodes under `root` were exactly
    `names`, each saying up (polled every 0.1 s, at most `limit` s).
    """
    while time.monotonic() - since < limit:
        try:
            children = set(client.get_children(f"{root}/instances"))
            if children == names and all(
                json.loads(client.get(f"{root}/instances/{name}")[0])["status"] == "up"
                for name in names
            ):
                return f"{time.monotonic() - since:.1f} s"
        except (KazooException, ValueError, KeyError):
            pass
        time.sleep(0.1)
    return f"not within {limit:g} s"


def run_mode(
    mode: str,
    args: argparse.Namespace,
    ports: list[int],
    zookeeper: ZooKeeperServer,
    client: KazooClient,
) -> dict[str, str]:
    """One agent through one storm; its figures as table rows."""
    n = args.instances
    base = [Instance(f"r{i}", ports[i % len(ports)]) for i in range(n)]
    other = base[: n - n // 10] + [
        Instance(f"s{i}", ports[i % len(ports)]) for i in range(n // 10)
    ]
    with ExitStack() as started:
        workdir = Path(tempfile.mkdtemp(prefix=f"sentinel-reloads-{mode}-"))
        started.callback(shutil.rmtree, workdir, ignore_errors=True)
        hosts = zookeeper.hosts
        text_a = agent_config(base, zookeeper=hosts, zk_root=f"/{mode}")
        text_b = agent_config(other, zookeeper=hosts, zk_root=f"/{mode}")
        (workdir / "a.toml").write_text(text_a)
        (workdir / "b.toml").write_text(text_b)
        (workdir / "bad.toml").write_text("interval = [\n")
        agent = Agent(workdir, text_a, open_files=open_files_for(n + n // 10))
        started.callback(agent.stop)
        link = agent.config_path
        link.unlink()
        link.symlink_to("a.toml")
        agent.wait_ready()
        wait_until(lambda: agent.get("/debug/stats")["instances_up"] >= n, 60, "up")
        time.sleep(3)
        before = agent.get("/debug/stats")
        targets = {"same": ["a.toml"], "alternate": ["b.toml", "a.toml"]}
        cycle = targets.get(mode, ["bad.toml"])
        turn = [0]

        def flip() -> None:
            target = cycle[turn[0] % len(cycle)]
            turn[0] += 1
            temporary = workdir / "next.toml"
            temporary.unlink(missing_ok=True)
            temporary.symlink_to(target)
            temporary.replace(link)

        sent = [0]
        storm = threading.Thread(
            target=hangups, args=(agent.pid, args.rate, args.duration, flip, sent)
        )
        if args.zookeeper_down:
            zookeeper.pause()
            started.callback(zookeeper.resume)
        storm.start()
        samples: list[tuple[float, dict[str, Any], int]] = []
        reasons: set[str] = set()
        start = time.monotonic()
        resumed = None
        published: list[str] = []
        while time.monotonic() - start < args.duration + args.after:
            if args.zookeeper_down and resumed is None and not storm.is_alive():
                zookeeper.resume()
                resumed = time.monotonic()
                last = pointed_at(cycle, turn[0])
                wanted_names = {i.name for i in (other if last == "b.toml" else base)}
                # Polled beside the samples, which go on meanwhile.
                watcher = threading.Thread(
                    target=lambda *a: published.append(published_after(*a)),
                    args=(client, f"/{mode}", wanted_names, resumed, args.after),
                )
                watcher.start()
            try:
                stats = agent.get("/debug/stats", timeout=5)
            except OSError:
                stats = {}
            code = healthz(agent.http_port, reasons)
            samples.append((time.monotonic() - start, stats, code))
            time.sleep(1.0)
        storm.join()
        if args.series:
            for at, stats, code in samples[::10]:
                if stats:
                    print(
                        f"{mode} {at:5.0f} s  RSS {stats['rss_bytes'] / MIB:6.1f} MiB"
                        f"  gc objects {stats['gc_objects']:9,}"
                        f"  instances {stats['instances']:,}  /healthz {code}",
                        file=sys.stderr,
                    )
        end = samples[-1][1]
        log = agent.log.read_text(errors="replace")
        during = [s for t, s, _ in samples if t <= args.duration and s]
        later = [s for t, s, _ in samples if t > args.duration and s]
        codes: dict[int, int] = {}
        for _, _, code in samples:
            codes[code] = codes.get(code, 0) + 1
        answers = ", ".join(f"{c}: {k}" for c, k in sorted(codes.items()))
        tick = max(
            (s["tick_completion_seconds"]["max"] for _, s, _ in samples if s),
            default=0.0,
        )
        rss = [s["rss_bytes"] for _, s, _ in samples if s]
        # The last config the link was pointed at is the one the agent
        # applies (bad.toml refused: a.toml kept); each has n instances, and
        # after an odd count of flips b.toml's n // 10 new ones rise.
        last = pointed_at(cycle, turn[0]).replace(
            "bad.toml", "a.toml, bad.toml refused"
        )
        wanted = f"{n:,} in {last}" + (
            f", {n - n // 10:,} in both" * (mode == "alternate")
        )
        figures = {}
        if resumed is not None:
            watcher.join()
            figures["ZooKeeper nodes right after its return"] = published[0]
        return figures | {
            "SIGHUP sent": f"{sent[0]:,} in {args.duration:g} s",
            "reloads applied / refused": (
                f"{log.count('reloaded: '):,} / {log.count('reload refused'):,}"
            ),
            "RSS before, max, end": (
                f"{before['rss_bytes'] / MIB:.0f}, {max(rss) / MIB:.0f}, "
                f"{end['rss_bytes'] / MIB:.0f} MiB"
            ),
            "gc objects before, max, end": (
                f"{before['gc_objects']:,}, "
                f"{max(s['gc_objects'] for _, s, _ in samples if s):,}, "
                f"{end['gc_objects']:,}"
            ),
            "checks failed during, after": (
                f"{during[-1]['failures'] - before['failures']:,}, "
                f"{end['failures'] - later[0]['failures'] if later else 0:,}"
            ),
            "fewest up during, after (of)": (
                f"{min(s['instances_up'] for s in during):,}, "
                f"{min((s['instances_up'] for s in later), default=0):,} "
                f"({wanted}; {end.get('instances', 0):,} watched at the end)"
            ),
            "slowest tick": f"{tick * 1000:.0f} ms",
            "/healthz answers": answers,
            "/healthz reasons": "; ".join(sorted({r[:100] for r in reasons})) or "-",
            "load average": load_average(),
        }


def main() -> int:
    args = parse_args()
    stop_on_sigterm()
    rows = [("machine", machine())]
    with ExitStack() as started:
        ports = [s.port for s in start_redis_servers(args.servers, started)]
        zookeeper, client = start_zookeeper(started)
        for mode in args.modes:
            figures = run_mode(mode, args, ports, zookeeper, client)
            rows += [(f"{mode}: {key}", value) for key, value in figures.items()]
            print(f"{mode} done", file=sys.stderr, flush=True)
    title = (
        f"A storm of SIGHUPs (benchmarks/reloads.py, {args.instances:,} instances, "
        f"{args.rate:g}/s for {args.duration:g} s)"
    )
    print(table(rows, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""
What one check costs the agent, against two references, on healthy servers.

N instances (names r0..rN-1, spread over a few real redis-servers: many
instances share a server, each instance is its own connection), a 1 s tick
and a 0.5 s timeout. After a warm-up, over a fixed window, it prints:

- checks per CPU-second of the agent process (the ``checks`` counter of
  /debug/stats, its delta over the window, divided by the agent's user+sys
  CPU delta from psutil; the window holds no request but those two, so it
  does not pay for rendering /instances);
- tick completion p50/p99/max, from /debug/stats (the agent keeps its last
  600 ticks, so the warm-up's ticks are in them too);
- overruns during the window, and false downs: checks that failed during
  the window, and instances not up at its end (every server is healthy, so
  every one is false);
- RSS per instance: the agent's RSS with N instances minus the RSS of the
  same agent started with none, divided by N; taken at the window's end,
  and again after the one /instances the script asks for (the renders of
  large answers raise the allocator's high-water mark, which stays).

Then, on the same machine and in the same run, the references:

- ``redis-benchmark -t ping -c 50 -P 1`` against one of the same servers,
  with its own CPU time (getrusage of the reaped child): the C client's
  PINGs per CPU-second;
- Redis Sentinel (``redis-server <conf> --sentinel``) monitoring M masters
  on M redis-servers of their own: its CPU per monitored instance-second.
  Sentinel takes duplicate addresses, but each master has a hello channel
  that every link subscribed on the same server receives, so thousands of
  masters on four servers would measure that fan-out, not monitoring: each
  master gets a distinct server.

Our figures are printed as ratios to both. Everything runs on 127.0.0.1; the
agent, the Redis servers and the references share the machine's cores.

    .venv/bin/python benchmarks/capacity.py [--instances 3000] [--duration 60]
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    LOOPBACK,
    Agent,
    ChildProcess,
    Instance,
    agent_config,
    free_port,
    load_average,
    machine,
    process_cpu_seconds,
    start_redis_servers,
    stop_on_sigterm,
    table,
)


def parse_args() -> argparse.Namespace:
    """The options, with issue 5's defaults."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--instances", type=int, default=3000, help="instances (default 3000)")
    add("--servers", type=int, default=4, help="redis-servers they share (4)")
    add("--interval", type=float, default=1.0, help="tick, seconds (1.0)")
    add("--timeout", type=float, default=0.5, help="check timeout, seconds (0.5)")
    add("--warmup", type=float, default=10.0, help="seconds before the window (10)")
    add("--duration", type=float, default=60.0, help="measured window, s (60)")
    add("--startup-timeout", type=float, default=120.0, help="agent start, s")
    add("--bench-requests", type=int, default=200_000, help="redis-benchmark -n")
    add("--bench-clients", type=int, default=50, help="redis-benchmark -c (50)")
    add("--sentinel-masters", type=int, default=200, help="Sentinel masters (200)")
    add("--sentinel-duration", type=float, default=None, help="default: --duration")
    add("--skip-references", action="store_true", help="only the agent")
    args = parser.parse_args()
    if args.instances < 1 or args.servers < 1 or args.duration <= 0:
        parser.error("--instances, --servers and --duration must be positive")
    return args


def baseline_rss(workdir: Path, args: argparse.Namespace) -> int:
    """The RSS of the same agent watching nothing, once it has settled."""
    agent = Agent(workdir, agent_config([], interval=args.interval), "empty")
    try:
        agent.wait_ready(args.startup_timeout)
        # The agent freezes its start-up objects out of gc after 3 ticks.
        agent.wait_ticks(5, timeout=10 * args.interval)
        return agent.rss_bytes()
    finally:
        agent.stop()


def measure_agent(
    workdir: Path, ports: list[int], server_pids: list[int], args: argparse.Namespace
) -> dict[str, Any]:
    """Run the agent on every instance; measure it over the window."""
    instances = [
        Instance(f"r{i}", ports[i % len(ports)]) for i in range(args.instances)
    ]
    config = agent_config(instances, interval=args.interval, timeout=args.timeout)
    agent = Agent(workdir, config, "agent")
    try:
        agent.wait_ready(args.startup_timeout)
        all_up = wait_all_up(agent, args.warmup)
        # No request of the script renders every instance before the RSS is
        # read: /debug/stats counts what it needs. CPU is read after each
        # /debug/stats, whose cost is one small answer: the window pays for
        # one of them, and for nothing else of ours.
        before_stats = agent.get("/debug/stats")
        (user0, sys0), servers0, t0 = (
            agent.cpu_times(),
            process_cpu_seconds(server_pids),
            time.monotonic(),
        )
        time.sleep(args.duration)
        after_stats = agent.get("/debug/stats")
        (user1, sys1), servers1, t1 = (
            agent.cpu_times(),
            process_cpu_seconds(server_pids),
            time.monotonic(),
        )
        # Rendering 3,000 instances raises the allocator's high-water mark by
        # a few MiB, which it keeps: RSS before and after one /instances.
        rss = agent.rss_bytes()
        after = agent.instances()
        rss_after_render = agent.rss_bytes()
    finally:
        agent.stop()
    checks = after_stats["checks"] - before_stats["checks"]
    return {
        "all_up": all_up,
        "checks": checks,
        "cpu": (user1 - user0) + (sys1 - sys0),
        "cpu_system": sys1 - sys0,
        "servers_cpu": servers1 - servers0,
        "wall": t1 - t0,
        "up_at_start": before_stats["instances_up"],
        "up_at_end": after_stats["instances_up"],
        "failed_checks": after_stats["failures"] - before_stats["failures"],
        "not_up": sorted(n for n, i in after.items() if i["status"] != "up"),
        "overruns": after_stats["overruns"] - before_stats["overruns"],
        "ticks": after_stats["ticks"],
        "tick_completion": after_stats["tick_completion_seconds"],
        "tick_completion_before": before_stats["tick_completion_seconds"],
        "rss": rss,
        "rss_after_render": rss_after_render,
    }


def wait_all_up(agent: Agent, warmup: float) -> float | None:
    """
    Spend the warm-up, asking /debug/stats every 0.5 s whether every
    instance is up yet; return how long after the HTTP app answered they
    all were (None: never).
    """
    started = time.monotonic()
    all_up = None
    while (elapsed := time.monotonic() - started) < warmup:
        if all_up is None:
            stats = agent.get("/debug/stats")
            if stats["instances_up"] == stats["instances"]:
                all_up = elapsed
        time.sleep(max(0.0, min(0.5, warmup - (time.monotonic() - started))))
    return all_up


def measure_redis_benchmark(port: int, args: argparse.Namespace) -> dict[str, Any]:
    """redis-benchmark's PINGs and its own CPU time (it is our only child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    argv = [
        "redis-benchmark", "-h", LOOPBACK, "-p", str(port),
        "-t", "ping", "-n", str(args.bench_requests),
        "-c", str(args.bench_clients), "-P", "1", "-q",
    ]  # fmt: skip
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=max(120.0, args.bench_requests / 1000),
        check=True,
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    # -q prints "PING_INLINE: 91743.12 requests per second, p50=..." per test,
    # after progress lines separated by carriage returns.
    rates = {
        test: float(rate)
        for test, rate in re.findall(
            r"(PING_\w+): ([\d.]+) requests per second", done.stdout
        )
    }
    pings = args.bench_requests * len(rates)
    return {"pings": pings, "cpu": cpu, "wall": wall, "rates": rates}


def measure_sentinel(
    workdir: Path, started: ExitStack, args: argparse.Namespace
) -> dict[str, Any]:
    """Sentinel's CPU per monitored instance-second, each master its own server."""
    servers = start_redis_servers(args.sentinel_masters, started)
    port = free_port()
    conf = workdir / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind {LOOPBACK}\ndaemonize no\ndir {workdir}\n"
        + "".join(
            f"sentinel monitor m{i} {LOOPBACK} {server.port} 2\n"
            for i, server in enumerate(servers)
        )
    )
    sentinel = ChildProcess(
        ["redis-server", str(conf), "--sentinel"], log=workdir / "sentinel.log"
    )
    started.callback(sentinel.stop)
    duration = args.sentinel_duration or args.duration
    time.sleep(args.warmup)
    if not sentinel.running:
        raise RuntimeError(f"Sentinel exited{sentinel.log_tail()}")
    cpu0 = process_cpu_seconds([sentinel.pid])
    t0 = time.monotonic()
    time.sleep(duration)
    cpu1 = process_cpu_seconds([sentinel.pid])
    wall = time.monotonic() - t0
    masters = sentinel_masters(port)
    sentinel.stop()
    for server in servers:
        server.stop()
    return {
        "masters": len(masters),
        "down": sum(1 for flags in masters if "down" in flags),
        "cpu": cpu1 - cpu0,
        "wall": wall,
    }


def sentinel_masters(port: int) -> list[str]:
    """Each master's flags, from ``SENTINEL MASTERS`` (redis-cli's raw output)."""
    out = subprocess.run(
        ["redis-cli", "-h", LOOPBACK, "-p", str(port), "sentinel", "masters"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.splitlines()
    return [out[i + 1] for i, line in enumerate(out[:-1]) if line == "flags"]


def report(
    args: argparse.Namespace,
    agent: dict[str, Any],
    rss0: int,
    bench: dict[str, Any] | None,
    sentinel: dict[str, Any] | None,
) -> str:
    """The printed table."""
    per_cpu = agent["checks"] / agent["cpu"] if agent["cpu"] else float("nan")
    tc = agent["tick_completion"]
    tc0 = agent["tick_completion_before"]
    rows = [
        ("machine", machine()),
        ("load average at the end", load_average()),
        (
            "setup",
            f"{args.instances} instances on {args.servers} redis-servers, "
            f"interval {args.interval:g} s, timeout {args.timeout:g} s",
        ),
        ("window", f"{agent['wall']:.1f} s after {args.warmup:g} s of warm-up"),
        (
            "all up after start",
            "not within the warm-up"
            if agent["all_up"] is None
            else f"{agent['all_up']:.1f} s after the HTTP app answered "
            "(asked every 0.5 s)",
        ),
        (
            "up at window start / end",
            f"{agent['up_at_start']} / {agent['up_at_end']}",
        ),
        ("checks in window", f"{agent['checks']}"),
        (
            "agent CPU in window",
            f"{agent['cpu']:.2f} s ({100 * agent['cpu'] / agent['wall']:.0f} % "
            f"of one core; system {agent['cpu_system']:.2f} s)",
        ),
        ("checks per CPU-second", f"{per_cpu:,.0f}"),
        (
            "tick completion p50 / p99 / max",
            f"{_ms(tc['p50'])} / {_ms(tc['p99'])} / {_ms(tc['max'])} "
            f"(last {tc['samples']} ticks; max before the window "
            f"{_ms(tc0['max'])})",
        ),
        ("overruns in window", f"{agent['overruns']}"),
        (
            "false downs",
            f"{agent['failed_checks']} failed checks in window, "
            f"{len(agent['not_up'])} instances not up at its end"
            + (f" (e.g. {', '.join(agent['not_up'][:5])})" if agent["not_up"]
               else ""),
        ),
        (
            "RSS with N / with 0 instances",
            f"{agent['rss'] / 2**20:.1f} MiB / {rss0 / 2**20:.1f} MiB",
        ),
        (
            "RSS per instance",
            f"{(agent['rss'] - rss0) / args.instances / 1024:.1f} KiB "
            f"({(agent['rss_after_render'] - rss0) / args.instances / 1024:.1f} "
            "KiB once /instances has been rendered)",
        ),
        (
            "redis-servers' CPU per check",
            f"{1e6 * agent['servers_cpu'] / max(agent['checks'], 1):.1f} µs",
        ),
    ]  # fmt: skip
    if bench is not None:
        bench_rate = bench["pings"] / bench["cpu"]
        rates = ", ".join(f"{k} {v:,.0f}/s" for k, v in bench["rates"].items())
        rows += [
            (
                "redis-benchmark PINGs per CPU-s",
                f"{bench_rate:,.0f} ({bench['pings']} PINGs, {bench['cpu']:.2f} "
                f"CPU-s; -c {args.bench_clients} -P 1; {rates})",
            ),
            ("ours / redis-benchmark", f"{per_cpu / bench_rate:.3f}"),
        ]
    if sentinel is not None:
        instance_seconds = sentinel["masters"] * sentinel["wall"]
        cpu_per = sentinel["cpu"] / instance_seconds if instance_seconds else 0.0
        ours_per = agent["cpu"] / (args.instances * agent["wall"])
        rows += [
            (
                "Sentinel CPU per instance-second",
                f"{1e6 * cpu_per:.1f} µs ({sentinel['masters']} masters, "
                f"{sentinel['down']} down, {sentinel['cpu']:.2f} CPU-s over "
                f"{sentinel['wall']:.1f} s)",
            ),
            ("ours CPU per instance-second", f"{1e6 * ours_per:.1f} µs"),
            (
                "ours / Sentinel (instance-seconds per CPU-s)",
                f"{cpu_per / ours_per:.3f}" if ours_per else "n/a",
            ),
        ]
    return table(rows, "capacity")


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{1000 * seconds:.0f} ms"


def main() -> int:
    """Run everything once, print the table, stop everything started."""
    args = parse_args()
    stop_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-capacity-"))
    try:
        with ExitStack() as started:
            servers = start_redis_servers(args.servers, started)
            ports = [s.port for s in servers]
            pids = [s.pid for s in servers]
            rss0 = baseline_rss(workdir, args)
            agent = measure_agent(workdir, ports, pids, args)
            bench = sentinel = None
            if not args.skip_references:
                bench = measure_redis_benchmark(ports[0], args)
                sentinel = measure_sentinel(workdir, started, args)
    except BaseException:
        print(f"logs kept in {workdir}", file=sys.stderr)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    print(report(args, agent, rss0, bench, sentinel))
    return 0


if __name__ == "__main__":
    sys.exit(main())

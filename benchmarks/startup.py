"""
The agent's own start-up at scale: from a cold start against N healthy
instances until every one is up, how long it took, how many checks failed
on the way (the servers are healthy, so every failure is false), the CPU it
took, and how late the loop ran.

N instances (names r0..rN-1, spread over a few real redis-servers, each
instance its own connection), a 1 s interval and a 0.5 s timeout, as in
``capacity.py``. The agent is a real ``twistd -n sentinel`` started with
its open-file limit raised for it alone (``prlimit``). ``/debug/stats`` is
asked every ``--poll`` seconds until ``instances_up`` reaches N, and then
for ``--settle`` seconds more; each run prints:

- time to all up, from the agent's spawn and from the check loop's start
  (``uptime_seconds``), to within one poll;
- failed checks until all up (``failures``), and during the settle time;
- instances published ``down`` at least once, with why (the agent logs
  every change of status; those decided by one check, the first one
  included, are counted from their summary lines), and instances that
  ever failed a check (``/instances``, read once at the end, when all were
  up); and how many lines the agent logged;
- the agent's CPU time (user + system) until all up;
- the loop's lateness: the largest tick lag the agent reports under
  ``startup`` in ``/debug/stats`` (versions before that have no such
  field), the slowest tick completion, and the slowest answer to the poll
  itself (the reactor answers it between other work);
- the machine's 1-minute load average before and after the run (other
  work shares the cores).

To compare versions in one run, name each checkout with ``--checkout
LABEL=PATH`` (a git worktree, say): each size is run once per checkout, in
turns, with that checkout first on the agent's ``PYTHONPATH``::

    .venv/bin/python benchmarks/startup.py --instances 3000,10000,19000 \\
        --checkout before=../before --checkout after=.
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    Agent,
    Instance,
    agent_config,
    load_average,
    machine,
    start_redis_servers,
    stop_on_sigterm,
    table,
)

# Descriptors the agent needs beyond one per instance, with room to spare.
OPEN_FILES_MARGIN = 256

_DOWN_LINE = re.compile(r" is down \(was (\w+)\): (.*)$")
# Statuses decided by one check, summed up (`sentinel.firstchecks`): the
# down ones are counted from these, their own lines being at debug.
_SUMMARY_LINE = re.compile(r"instance\(s\) decided (by their first|anew).* (\d+) down")


def parse_args() -> argparse.Namespace:
    """The options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--instances", default="3000", help="comma-separated sizes (3000)")
    add("--servers", type=int, default=4, help="redis-servers they share (4)")
    add("--interval", type=float, default=1.0, help="tick, seconds (1.0)")
    add("--timeout", type=float, default=0.5, help="check timeout, seconds (0.5)")
    add("--limit", type=float, default=120.0, help="give up after, s (120)")
    add("--settle", type=float, default=5.0, help="watched after all up, s (5)")
    add("--poll", type=float, default=0.25, help="between /debug/stats, s")
    add(
        "--checkout",
        action="append",
        default=[],
        metavar="LABEL=PATH",
        help="a checkout to run (repeatable; default: this one, as 'this')",
    )
    args = parser.parse_args()
    try:
        args.sizes = [int(n) for n in args.instances.split(",")]
    except ValueError:
        parser.error(f"--instances: not a list of numbers: {args.instances!r}")
    checkouts = []
    for spec in args.checkout or [f"this={Path(__file__).resolve().parent.parent}"]:
        label, sep, path = spec.partition("=")
        if not sep or not Path(path, "sentinel").is_dir():
            parser.error(f"--checkout: not LABEL=PATH of a checkout: {spec!r}")
        checkouts.append((label, str(Path(path).resolve())))
    args.checkouts = checkouts
    if min(args.sizes) < 1 or args.servers < 1:
        parser.error("--instances and --servers must be positive")
    return args


def run(
    workdir: Path, label: str, checkout: str, size: int, ports: list[int],
    args: argparse.Namespace,
) -> dict[str, Any]:  # fmt: skip
    """One cold start of the agent of `checkout` against `size` instances."""
    instances = [Instance(f"r{i}", ports[i % len(ports)]) for i in range(size)]
    config = agent_config(instances, interval=args.interval, timeout=args.timeout)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    # Raised for the agent alone, and only when needed.
    open_files = None if size + OPEN_FILES_MARGIN <= hard else size + OPEN_FILES_MARGIN
    load_before = load_average()
    spawned = time.monotonic()
    agent = Agent(
        workdir, config, f"{label}-{size}", Path(checkout), open_files=open_files
    )
    result: dict[str, Any] = {
        "label": label, "size": size, "load_before": load_before,
        "all_up": None, "tick_lag_max": None, "answer_max": 0.0,
    }  # fmt: skip
    try:
        agent.wait_ready(args.limit)
        deadline = spawned + args.limit
        settle_until = None
        while True:
            asked = time.monotonic()
            stats = agent.get("/debug/stats", timeout=30.0)
            now = time.monotonic()
            result["answer_max"] = max(result["answer_max"], now - asked)
            startup = stats.get("startup")
            if isinstance(startup, dict):
                lag = startup.get("tick_lag_max_seconds")
                if lag is not None:
                    result["tick_lag_max"] = lag
            if result["all_up"] is None and stats["instances_up"] == size:
                result.update(
                    all_up=now - spawned,
                    all_up_loop=stats["uptime_seconds"],
                    failures=stats["failures"],
                    checks=stats["checks"],
                    cpu=agent.cpu_seconds(),
                    tick_completion_max=stats["tick_completion_seconds"]["max"],
                )
                settle_until = now + args.settle
            if settle_until is not None and now >= settle_until:
                result["settle_failures"] = stats["failures"] - result["failures"]
                result["up_at_end"] = stats["instances_up"]
                break
            if now >= deadline:
                result.update(
                    up_at_limit=stats["instances_up"],
                    failures=stats["failures"],
                    checks=stats["checks"],
                    cpu=agent.cpu_seconds(),
                )
                break
            time.sleep(max(0.0, args.poll - (time.monotonic() - now)))
        result["load_after"] = load_average()
        if result["all_up"] is not None:
            # An agent past its capacity streams 19,000 instances for minutes.
            reports = agent.instances()
            result["ever_failed"] = sum(1 for r in reports.values() if r["failures"])
    finally:
        agent.stop()
    downs: Counter[str] = Counter()
    lines = agent.log.read_text(errors="replace").splitlines()
    for line in lines:
        match = _DOWN_LINE.search(line)
        if match:
            downs[f"{match.group(2)} (was {match.group(1)})"] += 1
        summed = _SUMMARY_LINE.search(line)
        if summed and int(summed.group(2)):
            how = "first check" if summed.group(1) == "by their first" else "anew"
            downs[f"decided down by one check ({how})"] += int(summed.group(2))
    result["downs"] = downs
    result["log_lines"] = len(lines)
    return result


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    """One table per run."""
    parts = [
        f"machine: {machine()}",
        f"setup: {args.servers} redis-servers, interval {args.interval:g} s, "
        f"timeout {args.timeout:g} s, polled every {args.poll:g} s",
    ]
    for r in results:
        if r["all_up"] is None:
            up = f"not within {args.limit:g} s ({r['up_at_limit']} up)"
        else:
            up = (
                f"{r['all_up']:.1f} s after spawn, {r['all_up_loop']:.1f} s "
                "after the loop started"
            )
        downs = r["downs"]
        reasons = ", ".join(f"{n} {why}" for why, n in downs.most_common(4))
        lag = r["tick_lag_max"]
        rows = [
            ("load average before / after", f"{r['load_before']} / {r['load_after']}"),
            ("all up", up),
            ("failed checks until all up", f"{r['failures']} of {r['checks']}"),
            ("failed checks in the next "
             f"{args.settle:g} s", f"{r.get('settle_failures', 'n/a')}"),
            ("instances published down", f"{sum(downs.values())}"
             + (f" ({reasons})" if reasons else "")),
            ("instances that ever failed", f"{r.get('ever_failed', 'n/a')}"),
            ("lines in the agent's log", f"{r['log_lines']:,}"),
            ("agent CPU until all up", f"{r['cpu']:.1f} s"),
            ("max tick lag", "n/a" if lag is None else f"{1000 * lag:.0f} ms"),
            ("max tick completion", _ms(r.get("tick_completion_max"))),
            ("slowest /debug/stats answer", _ms(r["answer_max"])),
        ]  # fmt: skip
        parts.append(table(rows, f"{r['size']:,} instances, {r['label']}"))
    return "\n\n".join(parts)


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{1000 * seconds:.0f} ms"


def main() -> int:
    """Run every size with every checkout, print the tables, stop everything."""
    args = parse_args()
    stop_on_sigterm()
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-startup-"))
    results = []
    try:
        with ExitStack() as started:
            servers = start_redis_servers(args.servers, started)
            ports = [s.port for s in servers]
            for size in args.sizes:
                for label, checkout in args.checkouts:
                    result = run(workdir, label, checkout, size, ports, args)
                    results.append(result)
                    print(report([result], args).split("\n\n")[-1], flush=True)
                    print(flush=True)
    except BaseException:
        print(f"logs kept in {workdir}", file=sys.stderr)
        raise
    shutil.rmtree(workdir, ignore_errors=True)
    print(report(results, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())

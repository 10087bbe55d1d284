"""
The agent's own collection once its connections settle: how many checks of
healthy instances fail around it.

N healthy instances (spread over a few real redis-servers, one connection
each), checked every 0.5 s with a 0.4 s timeout as in
``tests/test_http_load.py``; ``--busy`` busy loops of this script's own
load the machine meanwhile. ``/debug/stats`` is asked every ``--poll``
seconds from the start until ``--after`` seconds past the collection that
follows the connections settling (``sentinel.process``: the second
"objects frozen out of the garbage collector" line of the log, 15-35 s
after the start), and each run prints:

- failed checks before the collection (from the start until 1 s before
  it), and from then until ``--after`` seconds after it, with the worst
  second, and those from the collection on by kind (``timeout`` or
  ``error``, from ``/metrics``' ``sentinel_checks_total``);
- how long the collection held the agent, as it logs it where it does
  (versions before that log none), and the longest gap between two
  answers to the poll within 5 s of it;
- instances decided anew after a gap (the agent's summary lines), and
  changes of status to down (the agent's log);
- the 1-minute load average before and after.

On a machine loaded by others (load 17-20 on two cores), that collection
held the agent for 1.5 s or more (its instances went unchecked for 2 s),
and only 0.1-0.2 s on one loaded less. ``--stretch S`` makes the agent's
full collections hold it S seconds more (a ``sitecustomize`` of the
agent's sleeps in ``gc.collect()``): the pause of a loaded machine, on
demand, whatever the load of the moment.

To compare versions, name each checkout with ``--checkout LABEL=PATH``;
each is run ``--runs`` times, in turns::

    .venv/bin/python benchmarks/settlegc.py --busy 3 --stretch 1.5 \\
        --runs 3 --checkout before=../before --checkout after=.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil
from common import (
    Agent,
    Instance,
    add_checkout_option,
    agent_config,
    load_average,
    machine,
    open_files_for,
    rows_in_turns,
    start_redis_servers,
    table,
)

# What the agent logs at each collection and freeze (`sentinel.process`).
SETTLED = "objects frozen out of the garbage collector"
_PAUSE = re.compile(r"in (\d+\.\d+) s")
_ANEW = re.compile(r"(\d+) instance\(s\) decided anew")
_DOWN = re.compile(r" is down \(was up\)")
_RESULTS = re.compile(r'^sentinel_checks_total\{result="([^"]*)"\} (\S+)$')


def parse_args() -> argparse.Namespace:
    """The options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--instances", type=int, default=1500, help="instances (1500)")
    add("--servers", type=int, default=4, help="redis-servers they share (4)")
    add("--interval", type=float, default=0.5, help="tick, seconds (0.5)")
    add("--timeout", type=float, default=0.4, help="check timeout, seconds (0.4)")
    add("--busy", type=int, default=0, help="busy loops of our own (0)")
    add("--poll", type=float, default=0.2, help="seconds between polls (0.2)")
    add("--after", type=float, default=8.0, help="seconds watched after (8)")
    add("--limit", type=float, default=90.0, help="give up after, s (90)")
    add("--runs", type=int, default=1, help="runs of each checkout (1)")
    add("--stretch", type=float, default=0.0, help="s added to a collection (0)")
    add("--timeline", action="store_true", help="print failures per poll")
    add("--keep-log", metavar="DIR", help="copy each agent's log into DIR")
    add_checkout_option(parser)
    args = parser.parse_args()
    args.parser = parser
    return args


# The agent's ``sitecustomize`` with ``--stretch``: a full collection
# (``gc.collect()`` with no generation, as `sentinel.process` makes it)
# sleeps that long more, its reactor held as the collection holds it.
STRETCH = """
import gc, time
_collect = gc.collect
def collect(generation=2):
    if generation == 2:
        time.sleep({0!r})
    return _collect(generation)
gc.collect = collect
"""


def failures_by_error(agent: Agent) -> Counter[str]:
    """The failed checks so far by kind of result (``sentinel_checks_total``)."""
    url = f"http://127.0.0.1:{agent.http_port}/metrics"
    with urllib.request.urlopen(url, timeout=30.0) as response:
        text = response.read().decode()
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        match = _RESULTS.match(line)
        if match and match.group(1) != "ok":
            counts[match.group(1)] += int(float(match.group(2)))
    return counts


def run(args: argparse.Namespace, label: str, checkout: Path, number: int) -> list:
    """One run of one checkout: its rows."""
    size = args.instances
    with ExitStack() as started, tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.busy):
            busy = psutil.Popen([sys.executable, "-c", "while True: pass"])
            started.callback(busy.wait)
            started.callback(busy.kill)
        servers = start_redis_servers(args.servers, started)
        instances = [
            Instance(f"r{i:04d}", servers[i % len(servers)].port) for i in range(size)
        ]
        config = agent_config(instances, interval=args.interval, timeout=args.timeout)
        load_before = load_average()
        wrapper: list[str] = []
        if args.stretch:
            # The agent's full collections hold the reactor that much
            # longer, as a loaded machine's scheduler makes them.
            Path(tmp, "sitecustomize.py").write_text(STRETCH.format(args.stretch))
            wrapper = ["env", f"PYTHONPATH={checkout}:{tmp}"]
        agent = Agent(
            Path(tmp), config, f"{label}-{number}", checkout,
            open_files=open_files_for(size), wrapper=wrapper,
        )  # fmt: skip
        started.callback(agent.stop)
        agent.wait_ready()
        began = time.monotonic()
        series: list[tuple[float, int, int]] = []
        errors_at: Counter[str] | None = None
        settled_at: float | None = None
        while time.monotonic() - began < args.limit:
            try:
                stats: dict[str, Any] = agent.get("/debug/stats", timeout=10.0)
            except OSError:
                time.sleep(args.poll)
                continue
            now = time.monotonic()
            series.append((now, stats["failures"], stats["checks"]))
            if settled_at is None and agent.log.read_text().count(SETTLED) >= 2:
                settled_at = now
                errors_at = failures_by_error(agent)
            if settled_at is not None and now - settled_at >= args.after:
                break
            time.sleep(args.poll)
        errors_after = failures_by_error(agent)
        agent.stop()
        log = agent.log.read_text()
        if args.keep_log:
            Path(args.keep_log, agent.log.name).write_text(log)
        load_after = load_average()
    if settled_at is None:
        return [(f"{label} #{number}", f"no collection within {args.limit:g} s")]
    window_start = settled_at - 1.0 - args.poll
    before = max((f for t, f, _ in series if t <= window_start), default=0)
    total = series[-1][1]
    worst = 0
    gap = 0.0
    for (t0, f0, _), (t1, f1, _) in zip(series, series[1:], strict=False):
        if t1 >= window_start and t0 <= settled_at + args.after:
            worst = max(worst, int((f1 - f0) / max(t1 - t0, 1.0)))
            if abs(t1 - settled_at) < 5.0:
                gap = max(gap, t1 - t0)
    if args.timeline:
        for (_, f0, c0), (t1, f1, c1) in zip(series, series[1:], strict=False):
            if -3.0 <= t1 - settled_at <= args.after:
                print(
                    f"{t1 - settled_at:+6.2f} s  checks {c1 - c0:5d}"
                    f"  failed {f1 - f0:4d}"
                )
    lines = [line for line in log.splitlines() if SETTLED in line]
    paused = _PAUSE.search(lines[1]) if len(lines) > 1 else None
    anew = sum(int(m.group(1)) for m in _ANEW.finditer(log))
    assert errors_at is not None
    kinds = errors_after - errors_at
    return [
        (
            f"{label} #{number}",
            f"failed before {before}, around the collection {total - before} "
            f"(worst {worst}/s; from it on: {dict(kinds.most_common(3)) or '-'}); "
            f"collection "
            f"{paused.group(1) + ' s' if paused else '(not logged)'}, poll gap "
            f"{gap:.2f} s; decided anew {anew}; down {len(_DOWN.findall(log))}; "
            f"load {load_before} -> {load_after}",
        )
    ]


def main() -> None:
    """Run every checkout in turns and print the table."""
    args = parse_args()
    rows = rows_in_turns(args.parser, args, run)
    title = (
        f"{args.instances} instances, interval {args.interval:g} s, timeout "
        f"{args.timeout:g} s, {args.busy} busy loops, collections held "
        f"{args.stretch:g} s more; {machine()}"
    )
    print(table(rows, title))


if __name__ == "__main__":
    main()

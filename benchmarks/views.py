"""
Whether every agent's view of its group's membership is ZooKeeper's,
and what /healthz says while it is not (DESIGN.md section 8, "Groups").

Real ``twistd -n sentinel`` agents (``--agents``, ``--instances`` each,
distinct names, one replica) started all at once, as a fleet's hosts
boot, beside ``--members`` simulated members (an agent node and a
one-part catalog each, made by one kazoo session of this script, as in
``benchmarks/perhost.py``). ``--starve`` takes the CPU from the agents
the way a machine at load 100 does, without loading it: each agent is
stopped (SIGSTOP) for a random time up to ``--starve`` seconds, then
let go (SIGCONT) as long, over and over, each on its own rhythm, for
``--starve-for`` seconds after the start.

Every ``--every`` s for ``--duration`` s, the truth is read from
ZooKeeper (the members with a complete catalog under
``{root}/catalogs``) and each agent's view from ``GET /group``; a view
that differs from the truth is counted, with how long it has, and
what the agent's /healthz said meanwhile (200 while its view lacks a
member is the lie this counts). With ``--deploy`` s, ``--quiet`` s after
that, a rolling deploy replaces simulated members by new ones (new
names), ``--rate`` a second: each view's lag is the age of the oldest
change it has not taken in. ``--joins`` simulated members join
(and leave again) at random during the starved time, so that joins
race each agent's own start.

    .venv/bin/python benchmarks/views.py [--agents 20] [--instances 10]
        [--members 500] [--starve 2.0] [--starve-for 40] [--duration 120]
        [--joins 20] [--deploy 0] [--rate 15] [--checkout LABEL=PATH]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (  # noqa: E402
    Agent,
    add_checkout_option,
    checkouts_of,
    commit_of,
    load_average,
    machine,
    stop_on_sigterm,
    table,
)
from perhost import ROOT, health, start_fleet  # noqa: E402

from sentinel.catalog import parse_catalog_node_name  # noqa: E402


def truth(client: Any) -> set[str]:
    """The members ZooKeeper lists: agents with every part of a catalog."""
    parts: dict[tuple[str, str, str, int], set[int]] = {}
    for child in client.get_children(f"{ROOT}/catalogs"):
        part = parse_catalog_node_name(child)
        if part is not None:
            key = (part.agent_id, part.digest, part.token, part.count)
            parts.setdefault(key, set()).add(part.index)
    return {key[0] for key, indexes in parts.items() if len(indexes) == key[3]}


def view(agent: Agent, limit: int) -> set[str] | None:
    """The members of the agent's view (None if it does not answer)."""
    try:
        group = agent.get(f"/group?limit={limit}", timeout=10.0)
    except (OSError, ValueError):
        return None
    return {member["agent"] for member in group["members"]}


class Deploy:
    """
    A rolling deploy as the views see it: every 1/`rate` s one simulated
    member leaves and a new one (a new name) joins, from `at` s for
    `seconds` s; when each name joined or left, for the views' lag.
    """

    def __init__(
        self, simulated: Any, names: list[str], rate: float, at: float, seconds: float
    ) -> None:
        self.simulated = simulated
        self.names = list(names)
        self.rate = rate
        self.at = at
        self.seconds = seconds
        self.changed_at: dict[str, float] = {}
        self.replaced = 0
        self.thread = threading.Thread(target=self._deploy, daemon=True)

    def _deploy(self) -> None:
        next_at = self.at
        end = self.at + self.seconds
        while self.names and time.monotonic() < end:
            time.sleep(max(0.0, next_at - time.monotonic()))
            old = self.names.pop(0)
            new = f"sim-new-{self.replaced:05d}"
            self.simulated.leave([old])
            self.changed_at[old] = time.monotonic()
            self.simulated.join([new])
            self.changed_at[new] = time.monotonic()
            self.replaced += 1
            next_at += 1.0 / self.rate

    def lag(self, seen: set[str], real: set[str], now: float) -> float:
        """How old the oldest change the view has not taken in is (0: none)."""
        changes = [self.changed_at.get(m) for m in seen ^ real]
        return max((now - at for at in changes if at is not None), default=0.0)


class Starver:
    """Stops and lets go each agent in turn, on its own random rhythm."""

    def __init__(self, pids: list[int], most: float, until: float) -> None:
        self.pids = pids
        self.most = most
        self.until = until
        self.threads = [
            threading.Thread(target=self._starve, args=(pid,), daemon=True)
            for pid in pids
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def _starve(self, pid: int) -> None:
        rng = random.Random(pid)
        try:
            while time.monotonic() < self.until:
                os.kill(pid, signal.SIGSTOP)
                time.sleep(rng.uniform(0, self.most))
                os.kill(pid, signal.SIGCONT)
                time.sleep(rng.uniform(0, self.most))
        except ProcessLookupError:
            return
        finally:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=self.most * 2 + 5)


def run(args: argparse.Namespace, label: str, checkout: Path) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    with ExitStack() as started, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        zookeeper, client, simulated, names, agents = start_fleet(
            args, started, workdir, pythonpath=checkout
        )
        load_at_start = load_average()
        t0 = time.monotonic()
        starver = Starver(
            [agent.pid for agent in agents], args.starve, t0 + args.starve_for
        )
        if args.starve > 0:
            starver.start()
        deploy = Deploy(
            simulated,
            names,
            args.rate,
            t0 + args.starve_for + args.grace + args.quiet,
            args.deploy,
        )
        deploy_window = (deploy.at - t0, deploy.at - t0 + args.deploy)
        lags: list[float] = []
        deploy_503 = 0
        if args.deploy > 0:
            deploy.thread.start()
        rng = random.Random(args.seed)
        joining = [f"sim-joining-{i:03d}" for i in range(args.joins)]
        join_at = sorted(rng.uniform(0, args.starve_for) for _ in joining)
        joined: list[str] = []
        limit = args.members + args.agents + args.joins + 10
        # Per agent: since when its view has differed, the longest it did,
        # the samples it did, and those of them with /healthz 200.
        since: dict[int, float | None] = {a: None for a in range(len(agents))}
        longest = [0.0] * len(agents)
        differing = [0] * len(agents)
        lying = [0] * len(agents)
        missing_most = [0] * len(agents)
        samples = 0
        last_lie = ""
        deadline = t0 + args.duration
        while time.monotonic() < deadline:
            now = time.monotonic() - t0
            while join_at and join_at[0] <= now:
                join_at.pop(0)
                if joined and rng.random() < 0.5:
                    simulated.leave([joined.pop(rng.randrange(len(joined)))])
                else:
                    name = joining[len(joined) % len(joining)]
                    if name not in simulated.tokens:
                        simulated.join([name])
                        joined.append(name)
            real = truth(client)
            samples += 1
            for a, agent in enumerate(agents):
                seen = view(agent, limit)
                at = time.monotonic() - t0
                if seen is None:
                    continue
                if args.deploy > 0 and deploy_window[0] <= at < deploy_window[1] + 5:
                    lags.append(deploy.lag(seen, real, time.monotonic()))
                    if '"status": "ok"' not in health(agent):
                        deploy_503 += 1
                    continue
                if seen == real:
                    if since[a] is not None:
                        longest[a] = max(longest[a], at - since[a])  # type: ignore[operator]
                    since[a] = None
                    continue
                differing[a] += 1
                missing = real - seen
                missing_most[a] = max(missing_most[a], len(missing))
                if since[a] is None:
                    since[a] = at
                longest[a] = max(longest[a], at - since[a])  # type: ignore[operator]
                # Past the starved time and a settle/pace margin, a view
                # that still differs is stale: what does /healthz say?
                if args.starve_for + args.grace < at < deploy_window[0]:
                    if '"status": "ok"' in health(agent):
                        lying[a] += 1
                        last_lie = (
                            f"{agent.log.stem} at {at:.0f} s: missing"
                            f" {sorted(missing)[:3]}, extra"
                            f" {sorted(seen - real)[:3]}"
                        )
            time.sleep(args.every)
        if args.deploy > 0:
            deploy.thread.join(timeout=30)
        missed = 0
        for agent in agents:
            try:
                missed += agent.get("/group?limit=1").get("missed_changes", 0)
            except (OSError, ValueError):
                pass
        stale = [a for a in range(len(agents)) if since[a] is not None]
        lags.sort()
        if lags:
            rows.append(
                (
                    f"{label}: deploy, {deploy.replaced} replaced in {args.deploy:g} s",
                    f"view lag median {lags[len(lags) // 2]:.1f} s, p90"
                    f" {lags[len(lags) * 9 // 10]:.1f} s, max {lags[-1]:.1f} s;"
                    f" /healthz not 200 in {deploy_503} of {len(lags)} samples",
                )
            )
        rows += [
            (f"{label}: code", commit_of(checkout)),
            (
                f"{label}: load average at start / end",
                f"{load_at_start} / {load_average()}",
            ),
            (
                f"{label}: agents whose view ever differed",
                f"{sum(1 for d in differing if d)} of {len(agents)}",
            ),
            (
                f"{label}: agents differing at the end",
                f"{len(stale)} ({', '.join(agents[a].log.stem for a in stale[:5])})",
            ),
            (
                f"{label}: longest difference",
                f"{max(longest):.1f} s (members missing at most {max(missing_most)})",
            ),
            (
                f"{label}: changes no watch told of (missed_changes, all agents)",
                str(missed),
            ),
            (
                f"{label}: samples differing past the starved time with /healthz 200",
                f"{sum(lying)} (rounds {samples}) {last_lie}",
            ),
        ]
        if args.starve > 0:
            starver.join()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--instances", type=int, default=10)
    parser.add_argument("--members", type=int, default=500)
    parser.add_argument("--servers", type=int, default=2)
    parser.add_argument("--starve", type=float, default=2.0)
    parser.add_argument("--starve-for", type=float, default=40.0)
    parser.add_argument("--grace", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--every", type=float, default=1.0)
    parser.add_argument("--joins", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quiet", type=float, default=10.0)
    parser.add_argument("--deploy", type=float, default=0.0)
    parser.add_argument("--rate", type=float, default=15.0)
    add_checkout_option(parser)
    args = parser.parse_args()
    checkouts = checkouts_of(parser, args.checkout)
    stop_on_sigterm()
    rows: list[tuple[str, str]] = []
    for label, checkout in checkouts:
        rows += run(args, label, checkout)
        print(table(rows[-9:], label), flush=True)
    title = (
        f"views: {args.agents} agents x {args.instances} instances,"
        f" {args.members} simulated members, starved up to {args.starve:g} s"
        f" for {args.starve_for:g} s ({machine()})"
    )
    print(table(rows, title))
    return 0


if __name__ == "__main__":
    sys.exit(main())

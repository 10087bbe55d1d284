"""
Whether a real agent's ``/healthz`` names the instance nodes it has not
confirmed after a new ZooKeeper session (`sentinel.unconfirmed`).

One agent (``twistd -n sentinel``, interval 1 s, session timeout 2 s)
watches ``--instances`` instances over two real redis-servers and
publishes to a real ZooKeeper. Once every node is written, ZooKeeper is
stopped, its data wiped (a ZooKeeper restored empty: the agent needs a
new session, and until its writes are answered an earlier session's
nodes could be there), and started again. From the stop, a thread asks
``/healthz`` every 20 ms for ``--watch`` s. Printed: how many answers
gave the unconfirmed reason, the first such reason and ``unconfirmed``
field, and the agent's log lines about it. ``--keep-data`` restarts
ZooKeeper on its data, stopped for ``--down`` s.

    .venv/bin/python benchmarks/unconfirmednames.py --instances 300 \
        [--keep-data --down 5] [--checkout before=PATH --checkout after=.]
"""

from __future__ import annotations

import argparse
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from common import (
    Agent,
    Instance,
    add_checkout_option,
    agent_config,
    checkouts_of,
    load_average,
    start_redis_servers,
    start_zookeeper,
    wait_until,
)

REASON = "not written again since connecting"


def _ask(agent: Agent, until: float, answers: list[tuple[float, int, Any]]) -> None:
    """``/healthz`` every 20 ms until `until` (monotonic)."""
    while time.monotonic() < until:
        try:
            code, body = agent.healthz()
        except OSError:
            code, body = 0, None
        answers.append((time.monotonic(), code, body))
        time.sleep(0.02)


def run(
    checkout: Path, instances: int, watch: float, workdir: Path, down: float | None
) -> None:
    """One agent of `checkout` through a ZooKeeper wiped and started again."""
    with ExitStack() as started:
        redis = start_redis_servers(2, started)
        zookeeper, client = start_zookeeper(started)
        config = agent_config(
            [Instance(f"r{i:04d}", redis[i % 2].port) for i in range(instances)],
            zookeeper=zookeeper.hosts,
            zk_settings={"session_timeout": 2.0},
        )
        agent = Agent(workdir, config, pythonpath=checkout.resolve())
        started.callback(agent.stop)
        agent.wait_ready()

        def all_written() -> bool:
            try:
                return len(client.get_children("/sentinel/instances")) == instances
            except Exception:
                return False

        wait_until(all_written, 60.0, "every instance node written")
        wait_until(lambda: agent.healthz()[0] == 200, 30.0, "/healthz 200")
        answers: list[tuple[float, int, Any]] = []
        began = time.monotonic()
        asker = threading.Thread(target=_ask, args=(agent, began + watch, answers))
        asker.start()
        zookeeper.stop()
        if down is None:
            zookeeper.wipe()
        else:
            time.sleep(down)
        zookeeper.start()
        asker.join()
        named = [
            (at - began, body)
            for at, code, body in answers
            if code == 503 and any(REASON in r for r in body["reasons"])
        ]
        print(f"{checkout.name}: {instances} instances, load {load_average()}")
        failed = sum(code == 503 for _, code, _ in answers)
        print(
            f"  /healthz answers {len(answers)}, 503 {failed}, "
            f"with the unconfirmed reason {len(named)}"
        )
        if named:
            at, body = named[0]
            [reason] = [r for r in body["reasons"] if REASON in r]
            print(f"  first at {at:.2f} s after the stop: {reason}")
            print(f"  unconfirmed: {body.get('unconfirmed')}")
            print(f"  last at {named[-1][0]:.2f} s")
        last = answers[-1] if answers else None
        print(f"  last answer: {last[1] if last else None}")
        for line in agent.log.read_text().splitlines():
            if "unconfirmed" in line or "not confirmed" in line:
                print(f"  log: {line[:400]}")


def main() -> None:
    """Each checkout in turn."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=300)
    parser.add_argument("--watch", type=float, default=15.0)
    parser.add_argument("--keep-data", action="store_true")
    parser.add_argument("--down", type=float, default=5.0)
    add_checkout_option(parser)
    args = parser.parse_args()
    for label, checkout in checkouts_of(parser, args.checkout):
        with TemporaryDirectory() as workdir:
            print(f"== {label}")
            down = args.down if args.keep_data else None
            run(checkout, args.instances, args.watch, Path(workdir), down)


if __name__ == "__main__":
    main()

"""
What one ``/healthz`` answer costs while many instance nodes are
unconfirmed after a new ZooKeeper session (`sentinel.zkreport`).

The agent's own publisher on a Clock against the tests' in-memory
ZooKeeper: N instances published, the session expired, a new one
connected with every write held, so every node is unconfirmed. Then the
publisher's reason and the ``unconfirmed`` detail (where there is one)
are asked for in a loop, as a load balancer asks ``/healthz``, and the
CPU time per answer is printed; the same with no node unconfirmed, and
the CPU time of the connection's own handling (the resync it starts,
and the sort of the unconfirmed nodes by name).

    .venv/bin/python benchmarks/unconfirmedcost.py --instances 19000
"""

from __future__ import annotations

import argparse
import time

from tests.test_publisher import UP, PublisherHarness


class _Bench(PublisherHarness):
    def runTest(self) -> None:  # noqa: N802 (unittest's name)
        """Unused: the harness is driven by `main`."""


def _per_answer(ask: object, answers: int) -> float:
    started = time.process_time()
    for _ in range(answers):
        ask()  # type: ignore[operator]
    return (time.process_time() - started) / answers


def main() -> None:
    """Print the CPU time per answer with every node unconfirmed, and none."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=19_000)
    parser.add_argument("--answers", type=int, default=200)
    args = parser.parse_args()
    bench = _Bench()
    bench.setUp()
    bench.start()
    for i in range(args.instances):
        bench.check(bench.instance(f"redis-{i:05d}"), UP)
    while bench.zk.release():
        pass
    detail = getattr(bench.publisher, "unconfirmed_detail", None)

    def answer() -> None:
        bench.publisher.unhealthy_reason()
        if detail is not None:
            detail()

    healthy = _per_answer(answer, args.answers)
    bench.clock.advance(1.0)
    bench.zk.expire()
    bench.zk.hold_answers("create", "exists", "get", "set")
    started = time.process_time()
    bench.zk.connect()
    connect = time.process_time() - started
    reason = bench.publisher.unhealthy_reason() or ""
    unconfirmed = _per_answer(answer, args.answers)
    said = [r for r in reason.split("; ") if "unconfirmed" in r or "again" in r]
    print(f"instances {args.instances}, {args.answers} answers each")
    print(f"  the new session's connection: {connect * 1e3:.1f} ms CPU")
    print(f"  none unconfirmed: {healthy * 1e3:.3f} ms CPU per answer")
    print(f"  all unconfirmed:  {unconfirmed * 1e3:.3f} ms CPU per answer")
    print(f"  reason: {said[0][:300] if said else reason[:300]}")
    if detail is not None:
        shown = detail()
        print(f"  detail: {str(shown)[:300]}")


if __name__ == "__main__":
    main()

"""
What a ZooKeeper that applies our sets and answers none makes the agent
keep: every set of a node that ends with no answer is remembered
(`sentinel.lostanswers`), `KEPT` of them per node at most.

In this process, with no ZooKeeper: ``--nodes`` instance nodes whose
documents are ``--document-bytes`` long (an instance node's is about 500)
and one catalog part of ``--catalog-bytes`` (512 KiB, the most a part
holds) each get `KEPT` sets that ended unanswered, each with new data
(a refresh's, a change's), as the write queue would send them while
ZooKeeper answers nothing; the memory they hold is measured with
tracemalloc. Run it once with each tree on PYTHONPATH to compare.

    PYTHONPATH=. .venv/bin/python benchmarks/lostsets.py [--nodes 3000]
"""

from __future__ import annotations

import argparse
import tracemalloc

from common import load_average, machine, table

from sentinel.lostanswers import KEPT, unanswered
from sentinel.nodes import Node


def held(nodes: int, size: int) -> int:
    """Bytes held by `nodes` nodes' `KEPT` lost sets of `size` bytes each."""
    made = [Node(f"/sentinel/instances/r{n:06d}", lambda: b"") for n in range(nodes)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for n, node in enumerate(made):
        for version in range(KEPT):
            # New data for each set, as the write queue builds it: what
            # is not kept is freed at once.
            data = b"%08d" % (n * KEPT + version) * (size // 8)
            unanswered(node, version // 2, data)
    del data
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=3000)
    parser.add_argument("--document-bytes", type=int, default=500)
    parser.add_argument("--catalog-bytes", type=int, default=512 * 1024)
    args = parser.parse_args()
    instances = held(args.nodes, args.document_bytes)
    catalog = held(1, args.catalog_bytes)
    print(machine())
    n = args.nodes
    rows = [
        (f"{n} instance nodes", f"{instances:,} bytes ({instances // n:,} a node)"),
        ("1 catalog part", f"{catalog:,} bytes"),
    ]
    print(table(rows, f"lost sets held, {KEPT} a node"))
    print(f"load average: {load_average()}")


if __name__ == "__main__":
    main()

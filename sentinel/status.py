"""
A reader for humans: what ZooKeeper says about every instance.

    python -m sentinel.status --zookeeper HOSTS [--zk-root PATH] [--json]

One row per instance node, flagging rows whose ``checked_at`` is older than
three refresh periods: an agent that stopped refreshing is visible here
before anyone trusts its data. This is a command-line tool, not part of the
agent: it uses kazoo's blocking API.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError

from sentinel.settings import setting

COLUMNS = ("name", "status", "ready", "role", "latency", "since", "agent", "age")


def read_instances(client: Any, root: str) -> list[dict[str, Any]]:
    """Every instance document under `root`, sorted by name."""
    path = f"{root}/instances"
    try:
        names = client.get_children(path)
    except NoNodeError:
        return []
    documents = []
    for name in sorted(names):
        try:
            data, _ = client.get(f"{path}/{name}")
        except NoNodeError:
            continue
        try:
            document = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            document = {"name": name, "error": "unreadable node data"}
        if not isinstance(document, dict):
            document = {"name": name, "error": "unreadable node data"}
        documents.append(document)
    return documents


def annotate(
    documents: list[dict[str, Any]], now: float, refresh: float
) -> list[dict[str, Any]]:
    """Add ``age_seconds`` and ``stale`` to each document."""
    rows = []
    for document in documents:
        checked_at = document.get("checked_at")
        age = now - checked_at if isinstance(checked_at, int | float) else None
        stale = age is None or age > 3 * refresh
        rows.append({**document, "age_seconds": age, "stale": stale})
    return rows


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def format_table(rows: list[dict[str, Any]], now: float) -> str:
    """The rows as an aligned text table."""
    lines = [COLUMNS]
    for row in rows:
        latency = row.get("latency_ms")
        since = row.get("since")
        lines.append(
            (
                str(row.get("name", "?")),
                str(row.get("status") or "unknown"),
                "yes" if row.get("ready") else "no",
                str(row.get("role") or "-"),
                "-" if latency is None else f"{latency:.2f}ms",
                _ago(now - since if isinstance(since, int | float) else None),
                str(row.get("agent") or "-"),
                _ago(row.get("age_seconds")) + (" STALE" if row["stale"] else ""),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) for cell, width in zip(line, widths, strict=True)
        ).rstrip()
        for line in lines
    )


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments; defaults are the agent's (`sentinel.config`)."""
    parser = argparse.ArgumentParser(
        prog="python -m sentinel.status",
        description="Show what ZooKeeper says about every Redis instance.",
    )
    parser.add_argument("--zookeeper", required=True, metavar="HOSTS")
    parser.add_argument(
        "--zk-root",
        default=setting("zookeeper.root").default,
        metavar="PATH",
        help="the agents' zookeeper.root (default: %(default)s)",
    )
    parser.add_argument(
        "--refresh",
        type=float,
        default=setting("zookeeper.refresh").default,
        metavar="S",
        help="the agents' zookeeper.refresh; rows older than 3x are stale "
        "(default: %(default)s)",
    )
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S")
    parser.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    args = build_parser().parse_args(argv)
    # kazoo logs every failed connection attempt; one line of ours says it.
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)

    client = KazooClient(hosts=args.zookeeper, timeout=args.timeout)
    try:
        client.start(timeout=args.timeout)
    except (KazooTimeoutError, KazooException, ValueError) as e:
        reason = str(e) or type(e).__name__
        print(
            f"sentinel.status: cannot reach {args.zookeeper}: {reason}", file=sys.stderr
        )
        client.close()
        return 1
    try:
        documents = read_instances(client, args.zk_root.rstrip("/"))
    finally:
        client.stop()
        client.close()
    now = time.time()
    rows = annotate(documents, now, args.refresh)
    if args.json:
        print(json.dumps({"instances": rows}, indent=1))
    elif rows:
        print(format_table(rows, now))
    else:
        print(f"no instances under {args.zk_root}/instances")
    return 0


if __name__ == "__main__":
    sys.exit(main())

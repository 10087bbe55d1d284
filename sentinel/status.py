"""
A reader for humans and for monitoring checks: what ZooKeeper says about
every instance, and an exit status that sums it up.

    sentinel-status [--config PATH] [--zookeeper HOSTS] [--zk-root PATH]
                    [--refresh S] [--timeout S] [--json] [NAME ...]

One row per instance node (or per NAME given), flagging rows whose
``checked_at`` is older than three refresh periods: an agent that stopped
refreshing is visible here before anyone trusts its data. A ``checked_at``
as far ahead of this host's clock, or not a finite number, is stale too:
it cannot show that an agent still refreshes.

Node data is anyone's who may write under the root. It is shown, never
trusted: a row is named by its node, not by the ``name`` in its data, and
one whose data names another instance is flagged `MISNAMED` (a squatter,
or a node copied: its data says nothing of the instance it is under);
data that does not parse (undecodable, nested too deep, a number too long)
makes its row unreadable; and in the table each value, numbers included,
is cut to `MAX_CELL` characters, its control and other unprintable
characters escaped, so that a node can neither widen every row nor write
to the terminal. A group's verdict (schema 2) shows each observer's
opinion, those its quorum left out marked ``(uncounted)``, and the quorum;
``--json`` adds the observers whose ``down`` it counted (``counted_down``).
The exit status is what a Nagios or cron check needs:

- 0 (`OK`): every row shown is up;
- 1 (`DOWN`): some row is not up (down, or not decided yet);
- 2 (`UNKNOWN`): ZooKeeper cannot be read within ``--timeout``, a row is
  stale, unreadable or misnamed, a NAME has no node, there is no instance node at
  all (a wrong root, or no agent publishing), or the arguments or the
  config are invalid (one line on standard error, as the agent says it).

With ``--config`` (the agent's own file) the ZooKeeper hosts, root, refresh
and auth come from its ``[zookeeper]`` table; options given override it.

This is a command-line tool, not part of the agent: it uses kazoo's
blocking API, every wait bounded by the one ``--timeout`` deadline, and
closing the client is given at most `CLOSE_TIMEOUT` more.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, NoReturn

import attr
from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError

from sentinel.checks import ConfigError, finite, printable
from sentinel.config import ZooKeeperConfig, load_zookeeper_config
from sentinel.output import flush_or_drop, print_or_drop
from sentinel.settings import PERIODS, TIMEOUTS, setting

PROG = "sentinel-status"
COLUMNS = ("name", "status", "ready", "role", "latency", "since", "agent", "age")
# With a group's verdicts: each observer's opinion, and the quorum applied.
GROUP_COLUMNS = ("observers", "quorum")
# After an observer whose down the verdict's quorum left out (``uncounted``):
# without it, "up" beside a quorum of down opinions reads as a contradiction.
UNCOUNTED_MARK = "(uncounted)"
# Observers shown in one row at most; a group's replicas are a few.
SHOWN_OBSERVERS = 7

OK = 0
DOWN = 1
UNKNOWN = 2

# The most characters of one value shown in the table (after escaping).
MAX_CELL = 64
# After the name of a row whose data names another instance.
MISNAMED = "MISNAMED"
YEAR = 365 * 86400.0

DEFAULT_TIMEOUT = 5.0
# Seconds closing the client may add: kazoo's stop() waits up to the
# session timeout (at least 10 s) for a server that does not answer.
CLOSE_TIMEOUT = 1.0
# Node reads outstanding at once: enough to keep ZooKeeper busy, few
# enough that the deadline is looked at between them.
READS_IN_FLIGHT = 500
# Names listed in the one-line summary before "and N more".
SUMMARY_NAMES = 5


class Unreadable(Exception):
    """ZooKeeper could not be read; the message says why, on one line."""


def _wait(result: Any, deadline: float) -> Any:
    """The value of kazoo's async `result`, waiting until `deadline` at most."""
    return result.get(timeout=max(0.0, deadline - time.monotonic()))


def read_instances(
    client: Any,
    root: str,
    deadline: float,
    names: Sequence[str] = (),
    timeout: float | None = None,
) -> list[dict[str, Any]]:
    """
    Every instance document under `root` (or those of `names`), sorted by
    name; a name without a node gets a row saying so (``missing``). At most
    `READS_IN_FLIGHT` reads are outstanding at once, each new one sent only
    before `deadline` (monotonic), so that a long listing cannot overrun it.

    @param timeout: the seconds `deadline` allowed, as the user gave them
        (``--timeout``), named when the reads do not all end in time.
    @raise Unreadable: if ZooKeeper does not answer by `deadline` (saying
        how many of the nodes were read) or fails.
    """
    path = f"{root}/instances"
    try:
        if names:
            wanted = sorted(set(names))
        else:
            try:
                wanted = sorted(_wait(client.get_children_async(path), deadline))
            except NoNodeError:
                return []
    except KazooTimeoutError:
        raise Unreadable("no answer from ZooKeeper in time") from None
    except KazooException as e:
        raise Unreadable(f"reading {path}: {_reason(e)}") from None
    documents: list[dict[str, Any]] = []
    reads: deque[tuple[str, Any]] = deque()
    unsent = iter(wanted)
    done = 0
    try:
        while True:
            # Sent in a window, never all at once: sending 20,000 reads took
            # kazoo 4-5 s, and the deadline was only looked at afterwards.
            while len(reads) < READS_IN_FLIGHT and time.monotonic() < deadline:
                name = next(unsent, None)
                if name is None:
                    break
                reads.append((name, client.get_async(f"{path}/{name}")))
            if not reads:
                break
            name, result = reads.popleft()
            try:
                data, _ = _wait(result, deadline)
            except NoNodeError:
                if names:
                    documents.append({"name": name, "missing": True})
            else:
                documents.append(_document(name, data))
            done += 1
    except KazooTimeoutError:
        pass
    except KazooException as e:
        raise Unreadable(f"reading {path}: {_reason(e)}") from None
    if done < len(wanted):
        within = "in time" if timeout is None else f"within {timeout:g} s"
        raise Unreadable(
            f"read {done} of {len(wanted)} nodes under {path} {within}: "
            "ZooKeeper answers, but more time (--timeout) is needed"
        )
    return documents


def _document(name: str, data: bytes) -> dict[str, Any]:
    """
    The row of node `name` holding `data`: named by the node, with the
    name its data gives as ``name_in_data`` when that is another.
    """
    try:
        document = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError included.
        document = None
    if not isinstance(document, dict):
        return {"name": name, "error": "unreadable node data"}
    row = {**document, "name": name}
    if "name" in document and document["name"] != name:
        row["name_in_data"] = document["name"]
    return row


def annotate(
    documents: list[dict[str, Any]], now: float, refresh: float
) -> list[dict[str, Any]]:
    """
    Add ``age_seconds`` and ``stale`` to each document, and to a group's
    verdict (schema 2) ``counted_down`` (`counted_down`).
    """
    rows = []
    for document in documents:
        checked_at = finite(document.get("checked_at"))
        age = None if checked_at is None else now - checked_at
        # A name without a node has no age: it is missing, not stale.
        stale = not document.get("missing") and (age is None or abs(age) > 3 * refresh)
        row = {**document, "age_seconds": age, "stale": stale}
        down = counted_down(document)
        if down is not None:
            row["counted_down"] = down
        rows.append(row)
    return rows


def _cell(value: object) -> str:
    """`value` as one cell of the table (`checks.printable`)."""
    return printable(str(value), MAX_CELL)


def _names(rows: list[dict[str, Any]]) -> str:
    names = [_cell(row.get("name", "?")) for row in rows]
    shown = ", ".join(names[:SUMMARY_NAMES])
    more = len(names) - SUMMARY_NAMES
    return shown + (f" and {more} more" if more > 0 else "")


def verdict(rows: list[dict[str, Any]], root: str) -> tuple[int, str | None]:
    """
    The exit status for `rows` (see the module docstring), and why it is
    not `OK`, in one line.
    """
    if not rows:
        return UNKNOWN, f"no instances under {root}/instances"
    missing = [row for row in rows if row.get("missing")]
    if missing:
        return UNKNOWN, f"no node for {_names(missing)}"
    stale = [row for row in rows if row["stale"]]
    if stale:
        return UNKNOWN, f"stale or unreadable: {_names(stale)}"
    misnamed = [row for row in rows if "name_in_data" in row]
    if misnamed:
        return UNKNOWN, f"data naming another instance: {_names(misnamed)}"
    down = [row for row in rows if row.get("status") != "up"]
    if down:
        return DOWN, f"not up: {_names(down)}"
    return OK, None


def _ago(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0:
        return "-" + _ago(-seconds)  # Ahead of this host's clock.
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < YEAR:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / YEAR:.3g}y"


def _uncounted(row: dict[str, Any]) -> set[str]:
    """The observers a schema-2 row says its count left out (node data)."""
    uncounted = row.get("uncounted")
    if not isinstance(uncounted, list):
        return set()
    return {agent for agent in uncounted if isinstance(agent, str)}


def counted_down(row: dict[str, Any]) -> list[str] | None:
    """
    The observers of a schema-2 row whose ``down`` its quorum counted: those
    ``down`` and not ``uncounted``. Its ``status`` is ``down`` exactly when
    they are ``quorum`` or more. None for a row without observers.
    """
    observers = row.get("observers")
    if not isinstance(observers, dict):
        return None
    uncounted = _uncounted(row)
    return [
        agent
        for agent, status in observers.items()
        if status == "down" and agent not in uncounted
    ]


def _observers(row: dict[str, Any]) -> str:
    """
    Each observer's opinion, an uncounted one marked: cut observer by
    observer, and `SHOWN_OBSERVERS` at most, so that a long agent id cannot
    hide the marks of the others and a node listing thousands cannot widen
    every row without bound.
    """
    observers = row.get("observers")
    if not isinstance(observers, dict):
        return "-"
    uncounted = _uncounted(row)
    shown = [
        _cell(agent)
        + ":"
        + _cell(status or "?")
        + (UNCOUNTED_MARK if agent in uncounted else "")
        for agent, status in list(observers.items())[:SHOWN_OBSERVERS]
    ]
    more = len(observers) - SHOWN_OBSERVERS
    return " ".join(shown) + (f" +{more}" if more > 0 else "")


def format_table(rows: list[dict[str, Any]], now: float) -> str:
    """
    The rows as an aligned text table; with a group's verdicts (schema 2),
    each observer's opinion and the quorum applied too.
    """
    grouped = any("observers" in row for row in rows)
    columns = (*COLUMNS, *GROUP_COLUMNS) if grouped else COLUMNS
    lines: list[tuple[str, ...]] = [columns]
    for row in rows:
        latency = finite(row.get("latency_ms"))
        since = finite(row.get("since"))
        status = "missing" if row.get("missing") else row.get("status") or "unknown"
        lines.append(
            (
                _cell(row.get("name", "?"))
                + (f" {MISNAMED}" if "name_in_data" in row else ""),
                _cell(status),
                # Only JSON true is ready: "no", 1 or [0] from a node are not.
                "yes" if row.get("ready") is True else "no",
                _cell(row.get("role") or "-"),
                _cell("-" if latency is None else f"{latency:.2f}ms"),
                _cell(_ago(None if since is None else now - since)),
                _cell(row.get("agent") or "-"),
                _cell(_ago(row.get("age_seconds")))
                + (" STALE" if row["stale"] else ""),
            )
        )
        if grouped:
            lines[-1] += (_observers(row), _cell(row.get("quorum", "-")))
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) for cell, width in zip(line, widths, strict=True)
        ).rstrip()
        for line in lines
    )


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit status 2 (`UNKNOWN`)."""

    def error(self, message: str) -> NoReturn:
        raise SystemExit(_fail(message))


def _fail(message: str) -> int:
    print(f"{PROG}: {' '.join(message.splitlines())}", file=sys.stderr)
    return UNKNOWN


def build_parser() -> argparse.ArgumentParser:
    """The command's arguments; defaults are the agent's (`sentinel.settings`)."""
    parser = _Parser(
        prog=PROG,
        # A script's options are spelled out: --zk must not mean --zk-root.
        allow_abbrev=False,
        description="Show what ZooKeeper says about every Redis instance. "
        "Exit status: 0 all shown up, 1 some down, 2 ZooKeeper unreadable, "
        "data stale or missing, or invalid arguments.",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="the agent's TOML file: ZooKeeper hosts, root, refresh and auth "
        "from its [zookeeper] table; options given here override it",
    )
    parser.add_argument(
        "--zookeeper", metavar="HOSTS", help="ZooKeeper hosts h1:2181,h2:2181[/chroot]"
    )
    parser.add_argument(
        "--zk-root",
        metavar="PATH",
        help=f"the agents' zookeeper.root "
        f"(default: {setting('zookeeper.root').default})",
    )
    parser.add_argument(
        "--refresh",
        type=float,
        metavar="S",
        help="the agents' zookeeper.refresh; rows older than 3x are stale "
        f"(default: {setting('zookeeper.refresh').default})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="S",
        help="seconds to connect and read, in all; a large root needs more "
        "(about 4,000 nodes a second) (default: %(default)s)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help="show only these instances"
    )
    return parser


def zookeeper_settings(args: argparse.Namespace) -> ZooKeeperConfig:
    """
    Where and how to read: the ``--config`` file's ``[zookeeper]`` table,
    with the options given over it.

    @raise ConfigError: one line naming the bad field and value.
    """
    overrides: dict[str, object] = {}
    if args.zookeeper is not None:
        overrides["zookeeper.hosts"] = args.zookeeper
    if args.zk_root is not None:
        overrides["zookeeper.root"] = args.zk_root
    zookeeper = load_zookeeper_config(args.config, overrides)
    if zookeeper is None:
        where = (
            # Both ways: the agent's config file is what an operator has.
            "give --zookeeper HOSTS, or --config with the agent's config file"
            if args.config is None
            else f"config file {args.config} has no zookeeper.hosts; give --zookeeper"
        )
        raise ConfigError(f"no ZooKeeper hosts: {where}")
    if args.refresh is not None:
        # Bounded as the agents' own (settings.PERIODS): 1e-320 made every
        # row stale, inf none.
        refresh = PERIODS("--refresh", args.refresh)
        zookeeper = attr.evolve(zookeeper, refresh=refresh)
    return zookeeper


def _reason(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _close(client: KazooClient) -> None:
    """Stop and close `client`, waiting `CLOSE_TIMEOUT` at most."""

    def close() -> None:
        try:
            client.stop()
            client.close()
        except Exception:
            pass  # Closing is best effort: the process ends anyway.

    closing = threading.Thread(target=close, name="sentinel-status-close", daemon=True)
    closing.start()
    closing.join(CLOSE_TIMEOUT)


def fetch(
    zookeeper: ZooKeeperConfig, timeout: float, names: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """
    The instance documents (see `read_instances`), connecting and reading
    within `timeout` seconds in all.

    @raise Unreadable: if ZooKeeper cannot be reached or read in time.
    """
    deadline = time.monotonic() + timeout
    auth = [] if zookeeper.auth is None else [("digest", zookeeper.auth)]
    client = KazooClient(hosts=zookeeper.hosts, timeout=timeout, auth_data=auth)
    try:
        # Not client.start(): on a timeout it stops the client itself, which
        # waits for a server that does not answer for 10 s or more.
        client.start_async().wait(timeout)
        if not client.connected:
            raise Unreadable(f"cannot reach {zookeeper.hosts} within {timeout:g} s")
        return read_instances(
            client, zookeeper.root.rstrip("/"), deadline, names, timeout
        )
    finally:
        _close(client)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status (see the module docstring)."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        flush_or_drop()  # --help's text, to a reader that may have left.
        return e.code if isinstance(e.code, int) else UNKNOWN
    # kazoo logs every failed connection attempt; one line of ours says it.
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)
    try:
        timeout = TIMEOUTS("--timeout", args.timeout)
        zookeeper = zookeeper_settings(args)
        documents = fetch(zookeeper, timeout, args.names)
    except (ConfigError, Unreadable) as e:
        return _fail(str(e))
    now = time.time()
    rows = annotate(documents, now, zookeeper.refresh)
    status, why = verdict(rows, zookeeper.root)
    if args.json:
        print_or_drop(json.dumps({"instances": rows, "status": status}, indent=1))
    elif rows:
        print_or_drop(format_table(rows, now))
    if why is not None:
        _fail(why)
    return status


if __name__ == "__main__":
    sys.exit(main())

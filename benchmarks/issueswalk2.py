"""
The resolved issues 10 to 14 walked again, from their texts, at today's
code: real ``twistd -n sentinel`` agents, real redis-servers, a real
ZooKeeper and a small hostile fake on free loopback ports, checked only
through the interfaces (command line, exit statuses and their one line,
signals, ZooKeeper nodes, HTTP routes, metrics, logs). One line per
check, as ``benchmarks/contract.py`` prints them (whose helpers it uses,
and whose checks it does not repeat)::

    PASS|FAIL  section: statement -- evidence

- restarts (issue 10): ``kill -9`` then a start on one ``state_dir``
  (nodes never missing, rewritten by the new process, ``since`` kept, an
  instance removed meanwhile gone at once, one down meanwhile published
  down), what ``/healthz``, ``/debug/stats`` and the log say of the
  session, two processes at once, a stop with no successor, a state file
  others can read, one for another root, and no false down at start-up;
- structure (issue 11): the dropin and its help's defaults, the status
  page escaping what a hostile server says;
- groups (issue 12): three agents with R = 1 sharing a fleet, a crash and
  a leave taken over, the group in ``/metrics`` and on the page,
  ``sentinel-status`` and its exit statuses, members that disagree;
- ecosystem (issue 13): the metrics asked for, gzip, a refused reload,
  ``--version``, log levels, the shipped unit, rules and example;
- topology (issue 14): replicas discovered, kept by SIGHUP and let go after
  the grace, a promotion and a demotion within 2 s, the drain switch.

It ends with how many passed, and exits 1 if any failed. Bounded: every
wait has a deadline; about 3 minutes on two cores, and every process it
started is stopped by PID at the end::

    .venv/bin/python benchmarks/issueswalk2.py
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    LOOPBACK,
    REPOSITORY,
    RedisServer,
    free_port,
    load_average,
    machine,
    start_redis_servers,
    start_zookeeper,
    stop_on_sigterm,
)
from contract import (
    AGENTS,
    TWISTD,
    Twistd,
    by_signal,
    check,
    children,
    node,
    poll,
    redis_table,
    run_once,
    tracebacks_and_sum_up,
)
from kazoo.client import KazooClient

from sentinel import __version__

BIN = Path(sys.executable).parent
INTERVAL, TIMEOUT, FALL = 0.5, 0.3, 3
# What a check of a down instance may take past interval x fall + timeout.
SLACK = 1.5


def redis_cli(port: int, *args: str) -> str:
    """One command to a real redis-server; its reply."""
    done = subprocess.run(
        ["redis-cli", "-h", LOOPBACK, "-p", str(port), *args],
        capture_output=True,
        timeout=10,
        text=True,
    )
    return done.stdout.strip()


class Reader:
    """
    A reader polling ZooKeeper every 20 ms, as a proxy would: for each
    path, how often and how long it was missing.
    """

    def __init__(self, zk: KazooClient, paths: Sequence[str]) -> None:
        self.zk = zk
        self.paths = list(paths)
        self.missing: dict[str, int] = {p: 0 for p in self.paths}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for path in self.paths:
                try:
                    there = self.zk.exists(path) is not None
                except Exception:  # the walk's own client: count it as seen
                    there = True
                if not there:
                    self.missing[path] += 1
            time.sleep(0.02)

    def stop(self) -> dict[str, int]:
        """Stop polling; the paths seen missing, with how many polls."""
        self._stop.set()
        self._thread.join(5)
        return {p: n for p, n in self.missing.items() if n}


def log_lines(agent: Twistd, pattern: str) -> list[str]:
    """The agent's log lines matching `pattern`."""
    text = agent.log.read_text(errors="replace") if agent.log.exists() else ""
    return [ln for ln in text.splitlines() if re.search(pattern, ln)]


def mzxid(zk: KazooClient, path: str) -> int | None:
    """The zxid of a node's last write, or None."""
    got = node(zk, path)
    return got[1].mzxid if got else None


def exited(agent: Twistd, bound: float) -> int | None:
    """The agent's exit status within `bound` s, else None."""
    try:
        return agent.child.process.wait(bound)
    except subprocess.TimeoutExpired:
        return None


# -- issue 10: restarts and crashes -----------------------------------------


def handoff_when_known(agent: Twistd) -> dict[str, Any]:
    """``/debug/stats``' handoff once the session is known (reattached or not)."""

    def known() -> dict[str, Any] | None:
        stats = agent.json("/debug/stats").get("zookeeper") or {}
        handoff = stats.get("handoff") or {}
        return handoff if handoff.get("reattached") is not None else None

    return poll(known, 15, 0.1) or {}


def restarts(
    workdir: Path, zk: KazooClient, hosts: str, redis: list[RedisServer]
) -> None:
    """One state_dir through a crash, a deploy, a stop and bad state files."""
    doomed = RedisServer().start()
    try:
        _restarts(workdir, zk, hosts, redis, doomed)
    finally:
        doomed.stop()


def _restarts(
    workdir: Path,
    zk: KazooClient,
    hosts: str,
    redis: list[RedisServer],
    doomed: RedisServer,
) -> None:
    root, state = "/iw-restart", workdir / "state"
    kept = [f"k{i}" for i in range(6)]
    config = workdir / "restart.toml"

    def write(names: Sequence[str], with_doomed: bool, with_gone: bool) -> None:
        tables = [redis_table(n, redis[i % 2].port) for i, n in enumerate(names)]
        if with_doomed:
            tables.append(redis_table("doomed", doomed.port))
        if with_gone:
            tables.append(redis_table("gone", redis[0].port))
        config.write_text(
            f"interval = {INTERVAL}\ntimeout = {TIMEOUT}\nfall = {FALL}\n"
            f'state_dir = "{state}"\nagent_id = "rs"\n'
            f'[zookeeper]\nhosts = "{hosts}"\nroot = "{root}"\n'
            "session_timeout = 3.0\n" + "".join(tables)
        )

    def start(label: str) -> Twistd:
        return Twistd(workdir, label, ["--config", str(config)])

    write(kept, True, True)
    first = start("restart-1")
    paths = [f"{root}/instances/{n}" for n in kept] + [f"{root}/agents/rs"]
    check("restart", "first agent starts", first.wait_answering())
    poll(lambda: all(node(zk, p) for p in paths), 20)
    handoff = handoff_when_known(first)
    check(
        "restart",
        "first start: /debug/stats says not reattached, and why",
        handoff.get("reattached") is False
        and bool(handoff.get("not_reattached_because")),
        handoff,
    )
    said = log_lines(first, r"not reattach")
    check(
        "restart",
        "first start: the log says not reattached, and why",
        bool(said),
        said[-1][-140:] if said else "no line",
    )
    session = first.json("/healthz").get("session") or {}
    check(
        "restart",
        "first start: /healthz says not reattached, and why",
        session.get("reattached") is False
        and bool(session.get("not_reattached_because")),
        session or first.json("/healthz"),
    )
    before = {p: node(zk, p) for p in paths}
    # A crash; meanwhile one instance leaves the config and one goes down.
    reader = Reader(zk, paths)
    os.kill(first.pid, signal.SIGKILL)
    first.child.process.wait(10)
    doomed.stop()
    write(kept, True, False)
    second = start("restart-2")
    check(
        "restart",
        "kill -9, then a start on the same state_dir",
        second.wait_answering(),
    )
    started = time.monotonic()
    said = poll(lambda: log_lines(second, r"reattached to ZooKeeper session"), 15, 0.1)
    check(
        "restart",
        "kill -9 + start: the log says reattached",
        bool(said),
        said[-1][-140:] if said else "no line",  # type: ignore[index]
    )
    handoff = handoff_when_known(second)
    check(
        "restart",
        "kill -9 + start: /debug/stats says reattached",
        handoff.get("reattached") is True,
        handoff,
    )
    session = second.json("/healthz").get("session") or {}
    check(
        "restart",
        "kill -9 + start: /healthz says reattached",
        session.get("reattached") is True,
        session or second.json("/healthz"),
    )
    gone = poll(lambda: node(zk, f"{root}/instances/gone") is None, 10, 0.02)
    check(
        "restart",
        "an instance removed from the config meanwhile loses its node at once",
        bool(gone),
        f"{time.monotonic() - started:.2f} s after the new process answered",
    )
    bound = INTERVAL * FALL + TIMEOUT + SLACK
    down = poll(
        lambda: (
            (node(zk, f"{root}/instances/doomed") or [{}])[0].get("status") == "down"
        ),
        bound + 10,
        0.02,
    )
    took = time.monotonic() - started
    check(
        "restart",
        f"an instance down meanwhile is published down within {bound:g} s",
        bool(down) and took <= bound,
        f"{took:.2f} s after the new process answered",
    )

    def rewritten() -> bool:
        return all(
            (mzxid(zk, p) or 0) > before[p][1].mzxid  # type: ignore[index]
            for p in paths
        )

    poll(rewritten, 10)
    missing = reader.stop()
    check(
        "restart",
        "kill -9 + start: no node ever missing (read every 20 ms)",
        not missing,
        missing or f"{len(paths)} nodes",
    )
    owner = (node(zk, f"{root}/agents/rs") or [{}])[0].get("pid")
    check(
        "restart",
        "kill -9 + start: every node rewritten, the agent node by the new pid",
        rewritten() and owner == second.pid,
        f"pid {owner} (new {second.pid})",
    )
    changed = {
        n: (before[p][0]["since"], (node(zk, p) or [{}])[0].get("since"))  # type: ignore[index]
        for n, p in zip(kept, paths, strict=False)
        if (node(zk, p) or [{}])[0].get("since") != before[p][0]["since"]  # type: ignore[index]
    }
    check(
        "restart",
        "kill -9 + start: each up instance keeps its since",
        not changed,
        changed or "all kept",
    )
    # Two processes at once on one state_dir: the newer wins.
    reader = Reader(zk, paths)
    third = start("restart-3")
    check(
        "restart",
        "a second process on the same state_dir starts",
        third.wait_answering(),
    )
    status = exited(second, 30)
    check(
        "restart",
        "overlap: the older process exits 0",
        status == 0,
        f"status {status}",
    )
    poll(lambda: (node(zk, f"{root}/agents/rs") or [{}])[0].get("pid") == third.pid, 10)
    missing = reader.stop()
    owner = (node(zk, f"{root}/agents/rs") or [{}])[0].get("pid")
    check(
        "restart",
        "overlap: the newer owns the agent node, no node ever missing",
        owner == third.pid and not missing,
        f"pid {owner} (newer {third.pid}); missing {missing}",
    )
    # A stop with no successor: the nodes expire with the session.
    status, took = third.signal_and_wait(signal.SIGTERM)
    stopped = time.monotonic()
    still = [p for p in paths if node(zk, p)]
    expired = poll(lambda: not any(node(zk, p) for p in paths), 15, 0.05)
    after = time.monotonic() - stopped
    check(
        "restart",
        "SIGTERM, no successor: nodes kept, then gone within session_timeout + 1 s",
        by_signal(status, signal.SIGTERM)
        and len(still) == len(paths)
        and bool(expired)
        and after <= 3.0 + 1.0,
        f"status {status}; {len(still)} of {len(paths)} there at exit; "
        f"gone {after:.2f} s after",
    )
    files = [f for f in state.iterdir() if f.is_file()]
    if not files:
        check("restart", "a state file left to test its mode", False, "none")
        return
    files[0].chmod(0o644)
    status, output = run_once(["--config", str(config)], 30)
    lines = [ln for ln in output.splitlines() if ln.strip()]
    check(
        "restart",
        "a state file others can read: refused, one line, status != 0",
        status not in (0, None) and len(lines) == 1 and files[0].name in lines[0],
        f"status {status}: {' | '.join(lines)[:200]}",
    )
    files[0].chmod(0o600)
    config.write_text(config.read_text().replace(root, "/iw-elsewhere"))
    other = Twistd(workdir, "restart-4", ["--config", str(config)])
    check(
        "restart",
        "a state file for another root: the agent starts",
        other.wait_answering(),
    )
    handoff = handoff_when_known(other)
    said = poll(lambda: log_lines(other, r"not reattach"), 10, 0.1) or []
    check(
        "restart",
        "a state file for another root: not reattached, says why (stats, log)",
        handoff.get("reattached") is False
        and "root" in str(handoff.get("not_reattached_because"))
        and bool(said),
        f"{handoff.get('reattached')}: {handoff.get('not_reattached_because')}; "
        f"log: {said[-1][-80:] if said else 'none'}",
    )
    other.stop()


def startup(workdir: Path, redis: list[RedisServer], count: int) -> None:
    """No false down from the agent's own start-up: `count` instances at once."""
    config = workdir / "startup.toml"
    config.write_text(
        "interval = 1.0\ntimeout = 0.5\n"
        + "".join(
            redis_table(f"s{i}", redis[i % len(redis)].port) for i in range(count)
        )
    )
    agent = Twistd(workdir, "startup", ["--config", str(config)])
    began = time.monotonic()
    downs: set[str] = set()
    failures = 0
    try:
        check("startup", f"agent with {count} instances starts", agent.wait_answering())
        deadline = began + 60
        up = 0
        while time.monotonic() < deadline:
            seen = agent.json("/instances")["instances"]
            downs |= {i["name"] for i in seen if i["status"] == "down"}
            failures = sum(i["failures"] for i in seen)
            up = sum(1 for i in seen if i["status"] == "up")
            if up == count:
                break
            time.sleep(0.3)
        took = time.monotonic() - began
        check(
            "startup",
            f"{count} instances: all up, none ever down, 0 failed checks",
            up == count and not downs and failures == 0,
            f"{up} up after {took:.1f} s (from the spawn), {len(downs)} down seen, "
            f"{failures} failed checks, load {load_average()}",
        )
    finally:
        agent.stop()


# -- issue 11: structure ----------------------------------------------------


HOSTILE_ERROR = b"-ERR <script>alert('iw')</script> & <b>bold</b>\r\n"


def serve_hostile(stop: threading.Event) -> int:
    """A fake Redis answering every command with an error full of markup."""
    listener = socket.socket()
    listener.bind((LOOPBACK, 0))
    listener.listen(16)
    listener.settimeout(0.1)

    def client(conn: socket.socket) -> None:
        conn.settimeout(0.2)
        with conn:
            while not stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                # One error per command (each starts with '*').
                conn.sendall(HOSTILE_ERROR * max(1, data.count(b"*")))

    def loop() -> None:
        with listener:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                threading.Thread(target=client, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return listener.getsockname()[1]


def structure(workdir: Path, port: int) -> None:
    """The dropin, its help's defaults, and the page escaping what it shows."""
    done = subprocess.run(
        [TWISTD, "--help"], capture_output=True, text=True, timeout=60
    )
    check(
        "structure",
        "twistd --help lists the sentinel plugin",
        re.search(r"^\s+sentinel\s", done.stdout, re.M) is not None,
        [ln.strip() for ln in done.stdout.splitlines() if "sentinel" in ln][:1],
    )
    done = subprocess.run(
        [TWISTD, "sentinel", "--help"], capture_output=True, text=True, timeout=60
    )
    text = " ".join(done.stdout.split())
    wanted = {
        "--interval": "1.0",
        "--timeout": "0.5",
        "--rise": "2",
        "--fall": "3",
        "--zk-root": "/sentinel",
        "--zk-session-timeout": "10",
    }
    wrong = {}
    for option, default in wanted.items():
        match = re.search(re.escape(option) + r"\b.*?\[default: ([^\]]*)\]", text)
        shown = match.group(1) if match else None
        if shown is None or not shown.startswith(default):
            wrong[option] = shown
    check(
        "structure",
        "twistd sentinel --help: the defaults of DESIGN.md section 5",
        done.returncode == 0 and not wrong,
        wrong or wanted,
    )
    agent = Twistd(
        workdir,
        "escape",
        ["--redis", f"hostile={LOOPBACK}:{port}", "--interval", "0.5"],
    )
    try:
        check("structure", "agent on a hostile server starts", agent.wait_answering())
        poll(lambda: agent.instances()["hostile"]["error"], 10)
        error = agent.instances()["hostile"]["error"] or ""
        page = agent.http("/")[2].decode(errors="replace")
        check(
            "structure",
            "status page: the server's markup escaped, never raw",
            "<script>alert" not in page
            and "<b>bold" not in page
            and "&lt;script&gt;" in page,
            f"error {error[:60]!r}; raw in page: {'<script>alert' in page}",
        )
    finally:
        agent.stop()


# -- issue 12: groups -------------------------------------------------------


def status_command(args: Sequence[str]) -> tuple[int | None, str]:
    """``sentinel-status ARGS``: its exit status and output."""
    done = subprocess.run(
        [str(BIN / "sentinel-status"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stdout + done.stderr


def groups(workdir: Path, zk: KazooClient, hosts: str, port: int) -> None:
    """Three agents share 30 instances with R = 1; a crash, a leave, a misfit."""
    root, names = "/iw-group", [f"g{i:02d}" for i in range(30)]
    config = workdir / "group.toml"
    config.write_text(
        f"interval = {INTERVAL}\ntimeout = {TIMEOUT}\n"
        f'[zookeeper]\nhosts = "{hosts}"\nroot = "{root}"\nsession_timeout = 2.0\n'
        + "".join(redis_table(n, port) for n in names)
    )
    agents = [
        Twistd(workdir, f"group-{a}", ["--config", str(config), "--agent-id", a])
        for a in ("ga", "gb", "gc")
    ]
    paths = [f"{root}/instances/{n}" for n in names]
    try:
        check("group", "3 agents start", all(a.wait_answering() for a in agents))

        def shares() -> list[set[str]]:
            return [set(a.instances()) for a in agents]

        def split() -> list[set[str]] | None:
            # Each agent observes all it knows until it hears of the others.
            got = shares()
            total = sum(len(s) for s in got)
            return got if total == 30 and all(got) else None

        got = poll(split, 20, 0.2) or shares()
        counts = [len(s) for s in got]
        check(
            "group",
            "R = 1: every instance observed exactly once, about a third each",
            sum(counts) == 30
            and set().union(*got) == set(names)
            and all(4 <= c <= 18 for c in counts),
            counts,
        )
        poll(lambda: all(node(zk, p) for p in paths), 15)
        metrics = agents[0].http("/metrics")[2].decode()
        size = re.search(r"^sentinel_group_members\S* (\S+)", metrics, re.M)
        share = re.search(r"^sentinel_group_share\S* (\S+)", metrics, re.M)
        check(
            "group",
            "/metrics: the group size and this agent's share",
            bool(size) and float(size.group(1)) == 3 and share is not None,  # type: ignore[union-attr]
            f"members {size and size.group(1)}, share {share and share.group(1)}",
        )
        page = agents[0].http("/")[2].decode(errors="replace")
        check(
            "group",
            "the status page shows the group (how many members)",
            re.search(r"group</a>: 3 agents", page) is not None,
            (re.findall(r"group</a>: [^<]*", page) or [f"{len(page)} bytes"])[0],
        )
        status, output = status_command(["--config", str(config)])
        check(
            "group",
            "sentinel-status --config (the agent's file): exit 0 all up",
            status == 0 and "g00" in output,
            f"status {status}",
        )
        status, output = status_command(
            ["--zookeeper", f"{LOOPBACK}:{free_port()}", "--timeout", "2"]
        )
        check(
            "group",
            "sentinel-status: ZooKeeper unreadable: exit 2",
            status == 2,
            f"status {status}: {(output.strip().splitlines() or [''])[-1][:120]}",
        )
        # A crash: the other two take its share within session_timeout + 2 s.
        victim = agents[2]
        share_of = set(victim.instances())
        os.kill(victim.pid, signal.SIGKILL)
        victim.child.process.wait(10)
        killed = time.monotonic()

        def taken() -> bool:
            owners = {(node(zk, p) or [{}])[0].get("agent") for p in paths}
            return owners <= {"ga", "gb"} and len(split_of(agents[:2])) == 30

        def split_of(alive: list[Twistd]) -> set[str]:
            return set().union(*(set(a.instances()) for a in alive))

        back = poll(taken, 15, 0.1)
        took = time.monotonic() - killed
        check(
            "group",
            "kill -9 of one: its share taken, every node back within 2 + 2 s",
            bool(back) and took <= 4.0,
            f"{len(share_of)} instances, {took:.2f} s",
        )
        # A leave for good (SIGTERM, no state_dir): taken over, never missing.
        reader = Reader(zk, paths)
        leaver = agents[1]
        status, took = leaver.signal_and_wait(signal.SIGTERM)
        poll(
            lambda: all((node(zk, p) or [{}])[0].get("agent") == "ga" for p in paths),
            10,
        )
        time.sleep(0.5)
        missing = reader.stop()
        owners = {(node(zk, p) or [{}])[0].get("agent") for p in paths}
        check(
            "group",
            "SIGTERM of one: exit within 5 s, its nodes taken over, never missing",
            by_signal(status, signal.SIGTERM)
            and took <= 5.0
            and not missing
            and owners == {"ga"},
            f"status {status} in {took:.2f} s; missing {missing}; owners {owners}",
        )
        # A member that disagrees on replicas and quorum.
        other = workdir / "group-r2.toml"
        other.write_text(
            config.read_text().replace(
                "session_timeout = 2.0\n", "session_timeout = 2.0\nreplicas = 2\n"
            )
        )
        misfit = Twistd(
            workdir, "group-gd", ["--config", str(other), "--agent-id", "gd"]
        )
        check("group", "a member with replicas = 2 starts", misfit.wait_answering())
        said = poll(lambda: log_lines(agents[0], r"disagree"), 15, 0.2) or []
        healthz = " ".join(agents[0].http("/healthz")[2].decode().split())
        check(
            "group",
            "members disagreeing on R/Q: reported in /healthz and the log",
            bool(said) and "disagree" in healthz,
            f"{healthz[:160]}; log: {said[-1][-100:] if said else 'none'}",
        )
        misfit.stop()
    finally:
        for agent in agents:
            agent.stop()


def verdicts_shown(workdir: Path, zk: KazooClient, hosts: str, port: int) -> None:
    """R = 2: ``sentinel-status`` shows observers and quorum; 1 if any down."""
    root, names = "/iw-group2", ["v0", "v1", "v2"]
    config = workdir / "group2.toml"
    config.write_text(
        f"interval = {INTERVAL}\ntimeout = {TIMEOUT}\n"
        f'[zookeeper]\nhosts = "{hosts}"\nroot = "{root}"\nreplicas = 2\n'
        + "".join(redis_table(n, port) for n in names)
        + redis_table("dead", free_port())
    )
    agents = [
        Twistd(workdir, f"group2-{a}", ["--config", str(config), "--agent-id", a])
        for a in ("gx", "gy")
    ]
    try:
        check(
            "group",
            "2 agents with R = 2 start",
            all(a.wait_answering() for a in agents),
        )

        def verdicts() -> bool:
            docs = [node(zk, f"{root}/instances/{n}") for n in [*names, "dead"]]
            return all(d and len(d[0].get("observers") or {}) == 2 for d in docs)

        poll(verdicts, 20, 0.2)
        status, output = status_command(["--config", str(config)])
        head = output.splitlines()[0] if output else ""
        check(
            "group",
            "sentinel-status: observers and quorum shown; exit 1 with one down",
            status == 1 and "observers" in head and "quorum" in head,
            f"status {status}: {head[:120]}",
        )
        status, output = status_command(["--config", str(config), *names])
        check(
            "group",
            "sentinel-status NAME...: exit 0 when all those shown are up",
            status == 0,
            f"status {status}",
        )
    finally:
        for agent in agents:
            agent.stop()


# -- issue 13: ecosystem ----------------------------------------------------


def ecosystem(workdir: Path, redis: list[RedisServer]) -> None:
    """Metrics, gzip, a refused reload, --version, log levels, contrib/."""
    config = workdir / "eco.toml"
    good = (
        f"interval = {INTERVAL}\ntimeout = {TIMEOUT}\n"
        + redis_table("up", redis[0].port)
        + redis_table("dies", redis[2].port)
    )
    config.write_text(good)
    agent = Twistd(workdir, "eco", ["--config", str(config)])
    try:
        check("ecosystem", "agent starts", agent.wait_answering())
        poll(lambda: all(i["status"] == "up" for i in agent.instances().values()), 10)
        metrics = agent.http("/metrics")[2].decode()
        wanted = [
            r'^sentinel_build_info\{[^}]*version="[^"]+"',
            r"^sentinel_config_last_reload_successful(\{[^}]*\})? 1",
            r"^sentinel_config_last_reload_success_timestamp_seconds\S* \d",
            # A replica's link: its series is there, a value in topology.
            r"^# TYPE sentinel_instance_master_link_up ",
            r'^sentinel_instance_last_change_timestamp_seconds\{[^}]*name="up"',
        ]
        absent = [w for w in wanted if not re.search(w, metrics, re.M)]
        check(
            "ecosystem",
            "/metrics: build_info{version}, reload status and time, "
            "master_link_up, last_change",
            not absent,
            absent or "all there",
        )
        status, headers, body = agent.http("/metrics", {"Accept-Encoding": "gzip"})
        try:
            unzipped = gzip.decompress(body).decode()
        except (OSError, EOFError):
            unzipped = ""
        check(
            "ecosystem",
            "/metrics gzip when asked (Accept-Encoding: gzip)",
            headers.get("Content-Encoding") == "gzip" and "sentinel_" in unzipped,
            f"Content-Encoding {headers.get('Content-Encoding')}, {len(body)} bytes",
        )
        # An instance going down is a warning.
        os.kill(redis[2].pid, signal.SIGSTOP)
        try:
            poll(lambda: agent.instances()["dies"]["status"] == "down", 10)
        finally:
            os.kill(redis[2].pid, signal.SIGCONT)
        down = log_lines(agent, r"\bdies is down")
        check(
            "ecosystem",
            "going down is logged at warning",
            bool(down) and re.search(r"\bwarn", down[-1], re.I) is not None,
            down[-1][-140:] if down else "no line",
        )
        # A refused reload: logged as an error, the metric 0.
        config.write_text("interval = = 1\n")
        os.kill(agent.pid, signal.SIGHUP)
        zero = poll(
            lambda: re.search(
                r"^sentinel_config_last_reload_successful(\{[^}]*\})? 0",
                agent.http("/metrics")[2].decode(),
                re.M,
            ),
            15,
            0.2,
        )
        refused = log_lines(agent, r"eco\.toml")
        check(
            "ecosystem",
            "a refused reload: sentinel_config_last_reload_successful 0, an error line",
            bool(zero)
            and bool(refused)
            and re.search(r"\b(error|critical|warn)", refused[-1], re.I) is not None,
            refused[-1][-160:] if refused else "no line",
        )
        config.write_text(good)
        frozen = log_lines(agent, r"objects frozen")
        check(
            "ecosystem",
            "the gc's freezes are logged at debug",
            all("#debug]" in ln for ln in frozen),
            frozen[-1][-100:] if frozen else "none yet",
        )
    finally:
        agent.stop()
    version = subprocess.run(
        [TWISTD, "sentinel", "--version"], capture_output=True, text=True, timeout=60
    )
    first = (version.stdout.strip().splitlines() or [""])[0]
    check(
        "ecosystem",
        "twistd sentinel --version prints sentinel's version first",
        version.returncode == 0 and "sentinel" in first and __version__ in first,
        first,
    )
    levels(workdir, redis[0].port)
    shipped()


def levels(workdir: Path, port: int) -> None:
    """``sentinel-agent --log-format json --log-level warn``: warnings only."""
    log = workdir / "levels.log"
    refused = f"refused={LOOPBACK}:{free_port()}"
    argv = [
        str(BIN / "sentinel-agent"), "--log-format", "json", "--log-level", "warn",
        "--http", "none", "--interval", "0.3", "--timeout", "0.2",
        "--redis", f"up={LOOPBACK}:{port}", "--redis", refused,
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            # The first checks' line at warn, however loaded the machine is
            # (4 s were too few at load 14).
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not log.read_text().strip():
                time.sleep(0.2)
            time.sleep(1)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    parsed, bad = [], []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            bad.append(line)
    below = [p for p in parsed if p.get("level") in ("debug", "info")]
    check(
        "ecosystem",
        "sentinel-agent --log-format json --log-level warn: JSON, nothing below warn",
        bool(parsed) and not bad and not below,
        f"{len(parsed)} lines, {len(bad)} not JSON, {len(below)} below warn; "
        f"levels {sorted({p.get('level') for p in parsed})}",
    )


def shipped() -> None:
    """What contrib/ ships: the unit's score, the rules, the example, LICENSE."""
    unit = REPOSITORY / "contrib" / "sentinel.service"
    text = unit.read_text() if unit.exists() else ""
    check(
        "ecosystem",
        "contrib/sentinel.service: StateDirectory= and a state dir",
        "StateDirectory=" in text and "state" in text.lower(),
        [ln for ln in text.splitlines() if "State" in ln][:2],
    )
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    score = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)
    check(
        "ecosystem",
        "systemd-analyze security --offline=yes: exposure <= 3.5",
        bool(score) and float(score.group(1)) <= 3.5,  # type: ignore[union-attr]
        score.group(0) if score else (done.stdout + done.stderr)[-160:],
    )
    rules = sorted((REPOSITORY / "contrib" / "prometheus").glob("*.rules.yml"))
    done = subprocess.run(
        ["promtool", "check", "rules", *map(str, rules)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    check(
        "ecosystem",
        "contrib/prometheus rules pass promtool check rules",
        bool(rules) and done.returncode == 0,
        (done.stdout + done.stderr).strip().splitlines()[-1:],
    )
    example = REPOSITORY / "contrib" / "sentinel.toml"
    # make demo runs tools/demo.py.
    demo = (REPOSITORY / "tools" / "demo.py").read_text()
    check(
        "ecosystem",
        "contrib/sentinel.toml, LICENSE, make demo with a state dir",
        example.exists()
        and (REPOSITORY / "LICENSE").exists()
        and re.search(r'state_dir = "', demo) is not None,
        f"example {example.exists()}, LICENSE {(REPOSITORY / 'LICENSE').exists()}",
    )


# -- issue 14: topology -----------------------------------------------------


def topology(workdir: Path, zk: KazooClient, hosts: str, started: ExitStack) -> None:
    """Replicas discovered and let go, promotions and demotions, the drain key."""
    master = RedisServer()
    started.callback(master.stop)
    master.start()
    replicas = []
    for _ in range(3):
        replica = RedisServer(extra_args=["--replicaof", LOOPBACK, str(master.port)])
        started.callback(replica.stop)
        replicas.append(replica.start())
    lone = RedisServer()
    started.callback(lone.stop)
    lone.start()
    root, grace = "/iw-topology", 12.0
    config = workdir / "topology.toml"
    config.write_text(
        f'replica_grace = {grace}\ndrain_key = "iw:drain"\n'
        f'[zookeeper]\nhosts = "{hosts}"\nroot = "{root}"\n'
        'discovery = "serverset"\ndiscovery_root = "/iw-disc"\n'
        + redis_table("m", master.port, "discover_replicas = true\n")
        + redis_table("r3", replicas[2].port)
        + redis_table("lone", lone.port)
    )
    agent = Twistd(workdir, "topology", ["--config", str(config)])
    found = [f"m@{LOOPBACK}:{r.port}" for r in replicas[:2]]
    try:
        check("topology", "agent starts", agent.wait_answering())
        seen = (
            poll(
                lambda: (
                    lambda i: (
                        i
                        if all(n in i and i[n]["status"] == "up" for n in found)
                        else None
                    )
                )(agent.instances()),
                20,
                0.2,
            )
            or agent.instances()
        )
        published = [n for n in found if node(zk, f"{root}/instances/{n}")]
        twice = f"m@{LOOPBACK}:{replicas[2].port}" in seen
        check(
            "topology",
            "discover_replicas: both replicas watched as {master}@{host}:{port}, "
            "published; a configured one not twice",
            all(n in seen for n in found) and published == found and not twice,
            f"{sorted(seen)}; published {published}",
        )
        marks = {
            n: {k: v for k, v in seen[n].items() if "discover" in k}
            for n in found
            if n in seen
        }
        metrics = agent.http("/metrics")[2].decode()
        page = agent.http("/")[2].decode(errors="replace")
        check(
            "topology",
            "discovered ones marked in /instances, /metrics and the page",
            all(any(v for v in m.values()) for m in marks.values())
            and bool(marks)
            and re.search(r"^sentinel_instance_discovered\{", metrics, re.M) is not None
            # The page says "via {master}" beside each.
            and "via m<" in page.replace("</small>", "<"),
            marks,
        )
        # A replica's link is down until its first sync is done.
        poll(
            lambda: all(
                (node(zk, f"{root}/instances/{n}") or [{}])[0].get("master_link_status")
                == "up"
                for n in [*found, "r3"]
            ),
            20,
            0.2,
        )
        metrics = agent.http("/metrics")[2].decode()
        links = re.findall(
            r'^sentinel_instance_master_link_up\{[^}]*name="([^"]+)"[^}]*\} (\S+)',
            metrics,
            re.M,
        )
        check(
            "topology",
            "sentinel_instance_master_link_up 1 for each linked replica",
            {n for n, v in links if float(v) == 1} >= {*found, "r3"},
            links,
        )
        since = {
            n: (node(zk, f"{root}/instances/{n}") or [{}])[0].get("since")
            for n in found
        }
        os.kill(agent.pid, signal.SIGHUP)
        time.sleep(3)
        after = agent.instances()
        check(
            "topology",
            "SIGHUP keeps the discovered replicas (since kept)",
            all(n in after for n in found)
            and since
            == {
                n: (node(zk, f"{root}/instances/{n}") or [{}])[0].get("since")
                for n in found
            },
            sorted(n for n in after if "@" in n),
        )
        # A promotion and a demotion, each published within 2 s.
        path = f"{root}/instances/{found[0]}"
        promoted_at = time.monotonic()
        role_change(zk, path, replicas[0].port, ["NO", "ONE"], "master")
        lone_path = f"{root}/instances/lone"
        poll(lambda: node(zk, lone_path), 10)
        role_change(zk, lone_path, lone.port, [LOOPBACK, str(master.port)], "slave")
        redis_cli(lone.port, "REPLICAOF", "NO", "ONE")
        # The promoted replica left the master's list. The grace counts
        # from the master's last INFO that listed it, and INFO comes every
        # info_every (10) checks of interval 1 s: so the replica goes
        # between grace - 10 s and grace + 10 s after it left.
        removed = poll(
            lambda: node(zk, path) is None and found[0] not in agent.instances(),
            grace + 10 + 15,
            0.1,
        )
        took = time.monotonic() - promoted_at
        check(
            "topology",
            f"a replica gone from the list: removed after the grace ({grace:g} s, "
            "give or take info_every x interval)",
            bool(removed) and grace - 10 <= took <= grace + 10 + 2,
            f"removed {took:.1f} s after it left",
        )
        drain(zk, agent, root, lone)
    finally:
        agent.stop()


def role_change(
    zk: KazooClient, path: str, port: int, to: Sequence[str], role: str
) -> None:
    """``REPLICAOF *to*``: `role` published at `path` within 2 s."""
    began = time.monotonic()
    redis_cli(port, "REPLICAOF", *to)
    changed = poll(lambda: (node(zk, path) or [{}])[0].get("role") == role, 10, 0.02)
    took = time.monotonic() - began
    check(
        "topology",
        f"REPLICAOF {' '.join(to)}: role {role} published within 2 s",
        bool(changed) and took <= 2.0,
        f"{took:.2f} s",
    )


def drain(zk: KazooClient, agent: Twistd, root: str, lone: RedisServer) -> None:
    """SET the drain key: up, not ready, out of discovery; DEL: back."""
    path = f"{root}/instances/lone"
    members = "/iw-disc/lone"
    poll(lambda: (node(zk, path) or [{}])[0].get("role") == "master", 10)
    poll(lambda: children(zk, members), 10)
    redis_cli(lone.port, "SET", "iw:drain", "1")
    drained = poll(
        lambda: (lambda d: d if d and d[0]["ready"] is False else None)(node(zk, path)),
        10,
        0.05,
    )
    gone = poll(lambda: not children(zk, members), 10, 0.05)
    data = (drained or [{}])[0]
    check(
        "topology",
        "drain key set: up, ready false, error draining, out of discovery",
        data.get("status") == "up" and data.get("error") == "draining" and bool(gone),
        {k: data.get(k) for k in ("status", "ready", "error")}
        | {"members": children(zk, members)},
    )
    redis_cli(lone.port, "DEL", "iw:drain")
    back = poll(
        lambda: (
            (node(zk, path) or [{}])[0].get("ready") is True and children(zk, members)
        ),
        10,
        0.05,
    )
    check(
        "topology",
        "drain key removed: ready again, back in discovery",
        bool(back),
        {k: (node(zk, path) or [{}])[0].get(k) for k in ("ready", "error")},
    )


def main() -> None:
    """Start the servers, walk the issues, stop everything, sum up."""
    stop_on_sigterm()
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)
    began = time.monotonic()
    print(f"# {machine()}\n# load {load_average()}", flush=True)
    halt = threading.Event()
    with ExitStack() as started, tempfile.TemporaryDirectory(prefix="iw2-") as tmp:
        workdir = Path(tmp)
        started.callback(lambda: [agent.stop() for agent in AGENTS])
        started.callback(halt.set)
        redis = start_redis_servers(3, started)
        zookeeper, zk = start_zookeeper(started)
        sections: list[tuple[str, Callable[[], None]]] = [
            ("restart", lambda: restarts(workdir, zk, zookeeper.hosts, redis)),
            ("startup", lambda: startup(workdir, redis, 2000)),
            ("structure", lambda: structure(workdir, serve_hostile(halt))),
            ("group", lambda: groups(workdir, zk, zookeeper.hosts, redis[1].port)),
            (
                "group",
                lambda: verdicts_shown(workdir, zk, zookeeper.hosts, redis[1].port),
            ),
            ("ecosystem", lambda: ecosystem(workdir, redis)),
            ("topology", lambda: topology(workdir, zk, zookeeper.hosts, started)),
        ]
        wanted = set(sys.argv[1:])
        for name, run in sections:
            if wanted and name not in wanted:
                continue
            try:
                run()
            except Exception as e:  # one section's surprise: the walk goes on
                check(name, "section ran to its end", False, repr(e)[:200])
        tracebacks_and_sum_up(workdir, began)


if __name__ == "__main__":
    main()

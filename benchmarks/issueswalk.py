"""
The resolved issues walked again: each explicit ask of an issue's text
that a user can check through the interfaces (command line, exit status
and its one line, signals, ZooKeeper nodes, HTTP routes, metrics, logs)
or a bound, checked against real ``twistd -n sentinel`` agents, real
redis-servers, a real ZooKeeper and small hostile fakes on loopback. What
``benchmarks/contract.py`` already checks is left to it, unless the issue
asks more. One line per check, as contract.py prints them::

    PASS|FAIL  issue N: statement -- evidence

It ends with how many passed and exits 1 if any failed. Bounded: every
wait has a deadline, and every process it started is stopped by PID.

    .venv/bin/python benchmarks/issueswalk.py [--part 1]

Part 1 walks issues 2 (the agent core), 3 (ZooKeeper publishing), 4
(operations), 5 (its bounds a user can see without a benchmark run) and
9 (hostile peers), in about 2 minutes.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    LOOPBACK,
    RedisServer,
    free_port,
    load_average,
    machine,
    start_never_answering,
    start_redis_servers,
    start_zookeeper,
    stop_on_sigterm,
)
from contract import (
    AGENTS,
    Twistd,
    by_signal,
    check,
    check_logs,
    node,
    poll,
    redis_cli,
    run_once,
    sum_up,
)
from kazoo.client import KazooClient
from prometheus_client.parser import text_string_to_metric_families
from twisted.names import dns

from tests.servers import HostileServers

# Detection: interval 0.5 s, fall 2, timeout 0.3 s.
INTERVAL, TIMEOUT, RISE, FALL = 0.5, 0.3, 2, 2
BOUND = INTERVAL * FALL + TIMEOUT
# What a loaded two-core machine may add to a bound (scheduling, polling).
SLACK = 0.5
NEVER_ANSWERING = 20
ROOT = "/walk1"
AGENT_ID = "walk1"


def one_line(status: int | None, output: str, names: Sequence[str]) -> bool:
    """A refusal as the issues ask: non-zero, one line naming `names`."""
    lines = [line for line in output.splitlines() if line.strip()]
    return (
        status not in (0, None)
        and len(lines) == 1
        and "Traceback" not in output
        and all(n.lower() in lines[0].lower() for n in names)
    )


def shown(output: str) -> str:
    """At most three lines of `output`, shortened."""
    lines = [line for line in output.splitlines() if line.strip()]
    return " | ".join(lines[:3])[:200] + (" ..." if len(lines) > 3 else "")


# -- issue 2 (and 9): refusals at start -------------------------------------


def refusals(workdir: Path, good: str) -> None:
    """Bad inputs contract.py does not try, and secrets that are no file."""
    fifo = workdir / "secret.fifo"
    os.mkfifo(fifo)
    table = f'[[redis]]\nname = "x"\nhost = "127.0.0.1"\nport = {good.split(":")[1]}\n'

    def toml(label: str, text: str) -> str:
        path = workdir / f"{label}.toml"
        path.write_text(text)
        return str(path)

    cases: list[tuple[str, str, list[str], list[str]]] = [
        # issue, what, arguments, what the line must name
        ("2", "--fall 0", ["--fall", "0"], ["fall", "0"]),
        ("2", "--rise 0", ["--rise", "0"], ["rise", "0"]),
        ("2", "--interval -1", ["--interval", "-1"], ["interval", "-1"]),
        ("2", "--timeout abc", ["--timeout", "abc"], ["timeout", "abc"]),
        ("2", "--redis port 0", ["--redis", "127.0.0.1:0"], ["redis", "0"]),
        ("2", "--http garbage", ["--redis", good, "--http", "bogus:x"], ["http"]),
        (
            "2",
            "TOML timeout > interval",
            ["--config", toml("tgti", "interval = 1.0\ntimeout = 2.0\n")],
            ["timeout", "2"],
        ),
        (
            "2",
            "TOML fall = 0",
            ["--config", toml("fall0", "fall = 0\n")],
            ["fall", "0"],
        ),
        (
            "9",
            "password_file a FIFO",
            ["--config", toml("fifo", table + f'password_file = "{fifo}"\n')],
            [fifo.name],
        ),
        (
            "9",
            "password_file /dev/zero",
            ["--config", toml("zero", table + 'password_file = "/dev/zero"\n')],
            ["/dev/zero"],
        ),
    ]
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda case: run_once(case[2]), cases))
    for (issue, what, _, names), (status, output) in zip(cases, outcomes, strict=True):
        check(
            f"issue {issue}",
            f"{what}: status != 0, one line naming {names}",
            one_line(status, output, names),
            f"status {status}: {shown(output)}",
        )


def fd_limit(good: str) -> None:
    """Instances that cannot fit the hard open-file limit are refused."""
    argv = [f"--redis=n{i}={good}" for i in range(100)]
    began = time.monotonic()
    outcome = run_limited(["--interval", "1", *argv], "--nofile=150:150")
    check(
        "issue 2",
        "100 instances under a hard limit of 150 files: refused, one line",
        one_line(*outcome, ["open files", "100"]),
        f"status {outcome[0]} after {time.monotonic() - began:.1f} s: "
        f"{shown(outcome[1])}",
    )


def run_limited(args: Sequence[str], nofile: str) -> tuple[int | None, str]:
    """`run_once` under ``prlimit`` (which execs the agent)."""
    argv = ["prlimit", nofile, *twistd_argv(args)]
    process = subprocess.run(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )
    return process.returncode, process.stdout.decode(errors="replace")


def twistd_argv(args: Sequence[str]) -> list[str]:
    """What `contract.run_once` runs for `args`."""
    twistd = str(Path(sys.executable).with_name("twistd"))
    return [twistd, "-n", "--pidfile=", "sentinel", "--http", "none", *args]


# -- a server that hangs up at once, counting connections -------------------


class HangUp:
    """Accepts and closes at once, on a thread; counts the connections."""

    def __init__(self, stop: threading.Event) -> None:
        self.listener = socket.socket()
        self.listener.bind((LOOPBACK, 0))
        self.listener.listen(64)
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.accepted: list[float] = []
        self.stop = stop
        threading.Thread(target=self.loop, name="hangup", daemon=True).start()

    def loop(self) -> None:
        """Accept, note when, close."""
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            self.accepted.append(time.monotonic())
            conn.close()
        self.listener.close()

    def within(self, start: float, end: float) -> int:
        """Connections accepted between two monotonic times."""
        return sum(1 for at in self.accepted if start <= at < end)


# -- the main agent -----------------------------------------------------------


def config_text(hosts: str, ports: dict[str, int], silent: int, extra: str = "") -> str:
    """The main agent's file: interval 2.0 (the command line says 0.5)."""
    lines = [
        f"interval = 2.0\ntimeout = {TIMEOUT}\nrise = {RISE}\nfall = {FALL}",
        f'agent_id = "{AGENT_ID}"',
        f'[zookeeper]\nhosts = "{hosts}"\nroot = "{ROOT}"',
        "refresh = 1\nheartbeat = 1\nsession_timeout = 6",
    ]
    for name, port in ports.items():
        lines.append(f'[[redis]]\nname = "{name}"\nhost = "{LOOPBACK}"\nport = {port}')
    for i in range(NEVER_ANSWERING):
        lines.append(
            f'[[redis]]\nname = "silent{i}"\nhost = "{LOOPBACK}"\nport = {silent}'
        )
    return "\n".join(lines) + "\n" + extra


def records(agent: Twistd) -> list[dict[str, Any]]:
    """The JSON log's records (lines that are no JSON as {"raw": line})."""
    found = []
    for line in agent.log.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            found.append(json.loads(line))
        except ValueError:
            found.append({"raw": line})
    return found


def stats(agent: Twistd) -> dict[str, Any]:
    """/debug/stats."""
    return dict(agent.json("/debug/stats"))


def connections_from(server: RedisServer, pid: int) -> list[str]:
    """Client ids on `server` whose peer socket belongs to `pid`."""
    ports = peer_ports(pid)
    ids = []
    for line in redis_cli(server, "CLIENT", "LIST").splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if int(fields.get("addr", ":0").rsplit(":", 1)[1]) in ports:
            ids.append(fields["id"])
    return ids


def socket_inodes(pid: int) -> set[str]:
    """The inodes of `pid`'s sockets."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def sockets_on(pid: int, port: int) -> list[str]:
    """`pid`'s established TCP sockets whose local port is `port`."""
    inodes = socket_inodes(pid)
    found = []
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        local = int(parts[1].rsplit(":", 1)[1], 16)
        if parts[3] == "01" and local == port and parts[9] in inodes:
            found.append(parts[2])
    return found


def peer_ports(pid: int) -> set[int]:
    """The local ports of `pid`'s TCP sockets."""
    inodes = socket_inodes(pid)
    ports = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[9] in inodes:
            ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


def nofile_limits(pid: int) -> tuple[str, str]:
    """Soft and hard open-file limits of `pid`."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return soft, hard
    return "?", "?"


def main_agent(
    workdir: Path,
    started: ExitStack,
    zk: KazooClient,
    hosts: str,
    redis: list[RedisServer],
) -> None:
    """One agent, a fleet with hostile members: issues 2, 3, 4, 9."""
    stop = threading.Event()
    started.callback(stop.set)
    hangup = HangUp(stop)
    modes = ["flood", "hugebulk", "duplicate", "unsolicited"]
    hostile = HostileServers([(mode, False) for mode in modes])
    started.callback(hostile.stop)
    silent = free_port()
    never = start_never_answering([silent], 600, workdir / "never.log")
    started.callback(never.stop)
    ports = {
        "a": redis[0].port,
        "b": redis[1].port,
        **dict(zip(modes, hostile.ports, strict=True)),
        "hangup": hangup.port,
    }
    path = workdir / "main.toml"
    path.write_text(config_text(hosts, ports, silent))
    agent = Twistd(
        workdir,
        "main",
        ["--config", str(path), "--interval", str(INTERVAL)],
        prefix=["prlimit", "--nofile=1024:4096"],
        twistd_options=["--logger=sentinel.logs.json_observer"],
    )
    started.callback(agent.stop)
    if not check("issue 2", "agent starts", agent.wait_answering(), agent.label):
        return
    everyone = {*ports, *(f"silent{i}" for i in range(NEVER_ANSWERING))}
    seen = poll(lambda: set(agent.instances()) == everyone, 15)
    check("issue 2", "every configured instance listed", bool(seen), len(everyone))
    soft, hard = nofile_limits(agent.pid)
    check(
        "issue 2",
        "open-file soft limit raised to the hard limit (1024:4096 given)",
        soft == hard == "4096",
        f"soft {soft}, hard {hard}",
    )
    poll(lambda: agent.instances()["a"]["status"] == "up", 10)
    steps: list[tuple[Callable[..., object], tuple[Any, ...]]] = [
        (connections, (agent, redis[1], hangup)),
        (bounded_pending, (agent,)),
        (hostile_replies, (agent,)),
        (detection, (agent, zk, redis[0])),
        (metrics, (agent, everyone)),
        (page, (agent, everyone)),
        (zookeeper_state, (agent,)),
        (status_reader, (agent, hosts)),
        (reloads, (agent, zk, path, hosts, ports, silent, redis)),
        (http_crowd, (agent,)),
        (killed, (agent, redis[1])),
        (json_log, (agent,)),
        (twin, (workdir, started, agent, hosts, redis[2])),
    ]
    for step, args in steps:
        # An agent that hangs (an HTTP answer that never comes) fails the
        # step it hung in; the walk goes on to the next.
        try:
            step(*args)
        except Exception as e:
            check("walk", f"{step.__name__} ran to its end", False, repr(e)[:200])
    status, took = agent.signal_and_wait(signal.SIGTERM, 10)
    check(
        "issue 2",
        f"SIGTERM with {NEVER_ANSWERING} checks hanging: exit 143 within 5 s",
        by_signal(status, signal.SIGTERM) and took <= 5,
        f"status {status} in {took:.2f} s",
    )


def connections(agent: Twistd, server: RedisServer, hangup: HangUp) -> None:
    """At most one connection per instance, kept; reconnects once a second."""
    samples = []
    for _ in range(6):
        samples.append(connections_from(server, agent.pid))
        time.sleep(0.5)
    kept = all(len(s) == 1 for s in samples) and len({s[0] for s in samples}) == 1
    check(
        "issue 2",
        "one connection per instance, kept between checks (6 looks over 3 s)",
        kept,
        f"client ids {samples}",
    )
    end = time.monotonic()
    many = hangup.within(end - 6.0, end)
    check(
        "issue 2",
        "a server that hangs up: at most one connect a second (6 s window)",
        0 < many <= 7,
        f"{many} connections, {len(hangup.accepted)} in all",
    )
    error = agent.instances()["hangup"].get("error")
    check("issue 2", "hang-up instance down with an error", bool(error), error)


def bounded_pending(agent: Twistd) -> None:
    """Never-answering instances: pending, delayed calls and fds bounded."""
    n = len(agent.instances())
    worst = {"pending_checks": 0, "delayed_calls": 0, "open_fds": 0}
    pendings = 0
    for _ in range(10):
        now = stats(agent)
        for key in worst:
            worst[key] = max(worst[key], int(now[key]))
        pendings = max(pendings, int(agent.json("/pending")["count"]))
        time.sleep(0.3)
    check(
        "issue 2",
        f"{n} instances, {NEVER_ANSWERING} never answering: pending <= instances",
        worst["pending_checks"] <= n and pendings <= n,
        f"/debug/stats at most {worst['pending_checks']}, /pending {pendings}",
    )
    check(
        "issue 2",
        "delayed calls <= 3N+10, open fds <= 2N+10+HTTP",
        worst["delayed_calls"] <= 3 * n + 10 and worst["open_fds"] <= 2 * n + 20,
        f"delayed {worst['delayed_calls']}, fds {worst['open_fds']} (N {n})",
    )
    silent = agent.instances()["silent0"]
    check(
        "issue 2",
        "never answering: down with a timeout error",
        silent["status"] == "down" and "timeout" in str(silent["error"]),
        silent["error"],
    )


def hostile_replies(agent: Twistd) -> None:
    """A flood of PONGs and an announced gigabyte: down, memory flat."""
    before = rss_of(agent.pid)
    time.sleep(4)
    after = rss_of(agent.pid)
    check(
        "issue 9",
        "flood, $1000000000 and others: RSS grows < 20 MiB over 4 s",
        after - before < 20 * 2**20,
        f"{before / 2**20:.1f} -> {after / 2**20:.1f} MiB",
    )
    table = agent.instances()
    for name, words in (
        ("flood", "unexpected reply"),
        ("hugebulk", "reply too long"),
        ("duplicate", "unexpected reply"),
        ("unsolicited", "unexpected reply"),
    ):
        row = table[name]
        check(
            "issue 9",
            f"{name}: down, error says '{words}'",
            row["status"] == "down" and words in str(row["error"]),
            f"{row['status']}: {row['error']}",
        )


def rss_of(pid: int) -> int:
    """Resident bytes of `pid`."""
    pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return pages * resource.getpagesize()


def detection(agent: Twistd, zk: KazooClient, server: RedisServer) -> None:
    """SIGSTOP: down within the bound, in ZooKeeper within 100 ms more."""
    server.pause()
    stopped = time.monotonic()
    seen: dict[str, float] = {}

    def looks() -> bool:
        now = time.monotonic() - stopped
        if "http" not in seen and agent.json("/instances/a")["status"] == "down":
            seen["http"] = now
        found = node(zk, f"{ROOT}/instances/a")
        if "zk" not in seen and found and found[0]["status"] == "down":
            seen["zk"] = time.monotonic() - stopped
            # ZooKeeper's own time of the write, against the check's
            seen["publish"] = found[1].mtime / 1000 - found[0]["checked_at"]
        return len(seen) == 2

    poll(looks, BOUND + 10, 0.01)
    http, zkdown = seen.get("http"), seen.get("zk")
    check(
        "issue 2",
        f"SIGSTOP: down in /instances within interval*fall+timeout "
        f"({BOUND:g} s) + {SLACK:g} s",
        http is not None and http <= BOUND + SLACK,
        f"{http if http is None else round(http, 2)} s",
    )
    check(
        "issue 3",
        "SIGSTOP: down in ZooKeeper within the detection bound + 100 ms",
        zkdown is not None and zkdown <= BOUND + SLACK + 0.1,
        f"{zkdown if zkdown is None else round(zkdown, 2)} s",
    )
    publish = seen.get("publish")
    check(
        "issue 5",
        f"detection within the bound + 50 ms ({BOUND + 0.05:g} s), one sample",
        http is not None and http <= BOUND + 0.05,
        f"{http if http is None else round(http, 3)} s",
    )
    check(
        "issue 5",
        "ZooKeeper written within 50 ms of the check (znode mtime - checked_at)",
        publish is not None and publish <= 0.05,
        f"{publish if publish is None else round(publish * 1000)} ms",
    )
    server.resume()
    resumed = time.monotonic()
    up = poll(lambda: agent.json("/instances/a")["status"] == "up", 10, 0.02)
    check(
        "issue 2",
        "SIGCONT: up again (within 5 s)",
        bool(up),
        f"{time.monotonic() - resumed:.2f} s",
    )
    downs = [
        r for r in records(agent) if r.get("instance") == "a" and r.get("to") == "down"
    ]
    check(
        "issue 2",
        "the transition to down logged once, with instance, from, to, error",
        len(downs) == 1
        and all(k in downs[0] for k in ("instance", "to", "previous", "error")),
        downs,
    )


METRICS = {
    "sentinel_instance_up": ("gauge", {"name"}),
    "sentinel_instance_ready": ("gauge", {"name"}),
    "sentinel_instance_role": ("gauge", {"name", "role"}),
    "sentinel_instance_latency_seconds": ("gauge", {"name"}),
    "sentinel_check_duration_seconds": ("histogram", set()),
    "sentinel_checks": ("counter", {"result"}),
    "sentinel_transitions": ("counter", {"to"}),
    "sentinel_pending_checks": ("gauge", set()),
    "sentinel_tick_overruns": ("counter", set()),
    "sentinel_tick_lag_seconds": ("gauge", set()),
    "sentinel_zk_connected": ("gauge", set()),
    "sentinel_zk_writes": ("counter", {"op", "result"}),
    "process_resident_memory_bytes": ("gauge", set()),
}


def scrape(agent: Twistd) -> dict[str, Any]:
    """/metrics parsed by prometheus_client: families by name."""
    text = agent.http("/metrics")[2].decode()
    return {f.name: f for f in text_string_to_metric_families(text)}


def metrics(agent: Twistd, names: set[str]) -> None:
    """Issue 4's families, labelled as issue 13 renamed them; cardinality."""
    first = scrape(agent)
    for family, (kind, labels) in METRICS.items():
        got = first.get(family)
        have = set().union(*(s.labels for s in got.samples)) if got else set()
        check(
            "issue 4",
            f"/metrics: {family} ({kind}, labels {sorted(labels)})",
            got is not None and got.type == kind and labels <= have,
            f"{got.type if got else None}, labels {sorted(have)}",
        )
    up = {
        s.labels["name"]: s.value
        for s in first["sentinel_instance_up"].samples
        if "name" in s.labels
    }
    table = agent.instances()
    agree = all(up.get(n) == (table[n]["status"] == "up") for n in names)
    check("issue 4", "sentinel_instance_up agrees with /instances", agree, up)
    time.sleep(2)
    second = scrape(agent)

    def count(families: dict[str, Any]) -> int:
        return sum(len(f.samples) for f in families.values())

    check(
        "issue 4",
        "series count the same after more checks (O(instances))",
        count(first) == count(second),
        f"{count(first)} -> {count(second)}",
    )


def page(agent: Twistd, names: set[str]) -> None:
    """GET /: rows, sparklines, no external assets, refreshes, top line."""
    status, headers, body = agent.http("/")
    html = body.decode(errors="replace")
    check(
        "issue 4",
        f"/ is HTML with every instance ({len(names)}: one page)",
        status == 200
        and "html" in headers.get("Content-Type", "")
        and all(f">{n}<" in html or f'"{n}"' in html for n in names),
        f"{status}, {len(html)} bytes, missing "
        f"{[n for n in names if n not in html][:3]}",
    )
    external = [
        w for w in ('src="http', "src='http", 'href="http', "url(http") if w in html
    ]
    check(
        "issue 4",
        "/ has inline SVG sparklines, no external assets, refreshes itself",
        "<svg" in html and not external and 'http-equiv="refresh"' in html,
        f"svg {html.count('<svg')}, external {external}",
    )
    lower = html.lower()
    check(
        "issue 4",
        "/ shows the pending count and the ZooKeeper state",
        "pending" in lower and "zookeeper" in lower,
        "",
    )
    first_down = min(html.find(">flood<"), html.find(">silent0<"))
    first_up = html.find(">b<")
    check(
        "issue 9",
        "/ shows problems first (a down row before an up one)",
        0 <= first_down < first_up,
        f"down at {first_down}, up at {first_up}",
    )


def zookeeper_state(agent: Twistd) -> None:
    """Issue 3: /healthz and /debug/stats carry the ZooKeeper state."""
    now = stats(agent)
    zk = now.get("zookeeper")
    text = json.dumps(zk)
    check(
        "issue 3",
        "/debug/stats: ZooKeeper state, writes queued, last error",
        isinstance(zk, dict)
        and "connected" in text.lower()
        and any("queue" in k for k in zk)
        and any("error" in k for k in zk),
        text[:200],
    )


def status_reader(agent: Twistd, hosts: str) -> None:
    """`python -m sentinel.status`: rows, --json, stale rows flagged."""
    base = [
        sys.executable,
        "-m",
        "sentinel.status",
        "--zookeeper",
        hosts,
        "--zk-root",
        ROOT,
        "--refresh",
        "1",
    ]

    def run(*more: str, stdout_only: bool = False) -> tuple[int, str]:
        process = subprocess.run(
            [*base, *more], capture_output=True, text=True, timeout=30, check=False
        )
        if stdout_only:
            return process.returncode, process.stdout
        return process.returncode, process.stdout + process.stderr

    status, out = run()
    rows = {line.split()[0]: line for line in out.splitlines() if line.split()}
    check(
        "issue 3",
        "sentinel.status: a row per instance with status, exit 1 (some down)",
        status == 1 and "up" in rows.get("a", "") and "down" in rows.get("flood", ""),
        f"status {status}, {len(rows)} rows: {rows.get('a')!r}",
    )
    status, out = run("--json", stdout_only=True)
    try:
        parsed = json.loads(out)
        names = {row["name"]: row["status"] for row in parsed["instances"]}
        ok = names.get("a") == "up" and names.get("flood") == "down"
    except (ValueError, KeyError, TypeError):
        names, ok = {"output": out[:160]}, False
    check(
        "issue 3",
        "sentinel.status --json: the same rows as JSON",
        ok,
        f"status {status}, {len(names)} rows",
    )
    # Frozen 4 s (> 3 x refresh), less than the 6 s session: rows go stale.
    os.kill(agent.pid, signal.SIGSTOP)
    try:
        time.sleep(4)
        status, out = run("a")
    finally:
        os.kill(agent.pid, signal.SIGCONT)
    check(
        "issue 3",
        "checked_at older than 3 x refresh: the row flagged stale",
        "stale" in out.lower(),
        f"status {status}: {shown(out)}",
    )
    poll(lambda: agent.http("/healthz")[0] == 200, 15)


def reloads(
    agent: Twistd,
    zk: KazooClient,
    path: Path,
    hosts: str,
    ports: dict[str, int],
    silent: int,
    redis: list[RedisServer],
) -> None:
    """SIGHUP: what stays, what goes; the command line still wins; a FIFO."""
    extra = redis[2]
    kept = connections_from(redis[1], agent.pid)
    added = f'[[redis]]\nname = "added"\nhost = "{LOOPBACK}"\nport = {extra.port}\n'
    path.write_text(
        config_text(hosts, ports, silent, added).replace(
            "interval = 2.0", "interval = 3.0"
        )
    )
    os.kill(agent.pid, signal.SIGHUP)
    up = poll(lambda: agent.instances().get("added", {}).get("status") == "up", 15)
    check("issue 4", "SIGHUP: an added instance up", bool(up), "")
    after = connections_from(redis[1], agent.pid)
    check(
        "issue 4",
        "SIGHUP: an unchanged instance keeps its connection",
        len(kept) == 1 and after == kept,
        f"client ids {kept} -> {after}",
    )
    time.sleep(1.5)
    ticks = stats(agent)["ticks"]
    time.sleep(2)
    rate = (stats(agent)["ticks"] - ticks) / 2
    check(
        "issue 4",
        "after a reload, --interval 0.5 still over the file's 3.0",
        rate >= 1.4,
        f"{rate:.1f} ticks/s",
    )
    fifo = path.with_name("reload.fifo")
    os.mkfifo(fifo)
    lines_before = len(records(agent))
    bad = added.replace("added", "secret") + f'password_file = "{fifo}"\n'
    path.write_text(config_text(hosts, ports, silent, added + bad))
    os.kill(agent.pid, signal.SIGHUP)
    began = time.monotonic()
    checks_before = agent.instances()["b"]["checks"]
    said = poll(
        lambda: [
            r
            for r in records(agent)[lines_before:]
            if "reload refused" in str(r.get("message", r))
        ],
        15,
    )
    later = agent.instances()
    check(
        "issue 9",
        "SIGHUP with a FIFO password_file: 'reload refused', checks go on",
        bool(said) and "secret" not in later and later["b"]["checks"] > checks_before,
        f"{time.monotonic() - began:.1f} s: "
        f"{str(said[0].get('message') if said else None)[:120]}",
    )
    path.write_text(config_text(hosts, ports, silent))
    os.kill(agent.pid, signal.SIGHUP)
    gone = poll(
        lambda: (
            "added" not in agent.instances()
            and node(zk, f"{ROOT}/instances/added") is None
            and not connections_from(extra, agent.pid)
        ),
        15,
    )
    check(
        "issue 4",
        "SIGHUP: a removed instance stops, its connection closes, its node goes",
        bool(gone),
        f"connections {connections_from(extra, agent.pid)}",
    )


def http_crowd(agent: Twistd) -> None:
    """Issue 9: idle HTTP connections are capped; checks go on meanwhile."""
    before = stats(agent)
    held = []
    try:
        for _ in range(100):
            try:
                held.append(socket.create_connection((LOOPBACK, agent.http_port), 2))
            except OSError:
                break
        time.sleep(2)
        # The agent's sockets on its HTTP port, not all its fds: those of
        # the never-answering instances come and go with their timeouts.
        accepted = len(sockets_on(agent.pid, agent.http_port))
        after = agent.instances()["b"]
    finally:
        for sock in held:
            sock.close()
    check(
        "issue 9",
        "100 idle HTTP connections: the agent holds at most 64 of them",
        accepted <= 64,
        f"{accepted} held by the agent, {len(held)} connected",
    )
    check(
        "issue 9",
        "... and checks went on (b up, no new failure)",
        after["status"] == "up"
        and after["failures"] == agent.instances()["b"]["failures"]
        and stats(agent)["ticks"] > before["ticks"],
        f"b {after['status']}, failures {after['failures']}",
    )
    answered = poll(lambda: agent.http("/healthz")[0] == 200, 10)
    check("issue 9", "... and HTTP answers once they go", bool(answered), "")


def killed(agent: Twistd, server: RedisServer) -> None:
    """Issue 2: SIGKILL of a redis-server: down within the bound."""
    server.kill()
    began = time.monotonic()
    down = poll(lambda: agent.json("/instances/b")["status"] == "down", 10, 0.02)
    took = time.monotonic() - began
    check(
        "issue 2",
        f"SIGKILL: down within {BOUND:g} s + {SLACK:g} s",
        bool(down) and took <= BOUND + SLACK,
        f"{took:.2f} s: {agent.json('/instances/b')['error']}",
    )


def idle_timeout(idle: socket.socket, since: float) -> None:
    """
    Issue 9: an idle HTTP connection is closed after about a minute. The
    walk looks only once the steps before are done: a connection closed
    by then is closed within that time, not at it (the 66-70 s once
    reported here were when the walk looked; measured alone, 60.0 s).
    """
    looked = time.monotonic() - since
    idle.settimeout(max(1.0, since + 80 - time.monotonic()))
    try:
        closed: bool | str = idle.recv(1) == b""
    except OSError as e:  # TimeoutError if never closed
        closed = repr(e)
    took = time.monotonic() - since
    idle.close()
    when = f"before {took:.0f} s" if took - looked < 0.05 else f"after {took:.1f} s"
    check(
        "issue 9",
        "an idle HTTP connection closed by the agent after about a minute",
        closed is True and 30 <= took <= 80,
        f"closed {closed} {when}",
    )


def json_log(agent: Twistd) -> None:
    """Issue 4: a JSON log output for shippers: every line one object."""
    found = records(agent)
    raw = [r["raw"] for r in found if "raw" in r]
    check(
        "issue 4",
        "--logger=sentinel.logs.json_observer: every line a JSON object",
        found
        and not raw
        and all({"time", "level", "message"} <= set(r) for r in found),
        f"{len(found)} lines, {len(raw)} not JSON: {raw[:2]}",
    )


def twin(
    workdir: Path, started: ExitStack, agent: Twistd, hosts: str, server: RedisServer
) -> None:
    """Issue 9: a second agent with the same agent_id is loud, then exits."""
    other = Twistd(
        workdir,
        "twin",
        [
            "--zookeeper", hosts, "--zk-root", ROOT, "--agent-id", AGENT_ID,
            "--zk-session-timeout", "2", "--redis", f"twin={LOOPBACK}:{server.port}",
        ],
    )  # fmt: skip
    started.callback(other.stop)
    began = time.monotonic()
    other.wait_answering()

    def loud() -> str | None:
        if not other.child.running:
            return None
        status, _, body = other.http("/healthz")
        text = body.decode(errors="replace")
        return text if status == 503 and f"/agents/{AGENT_ID}" in text else None

    said = poll(loud, 30, 0.2)
    check(
        "issue 9",
        "twin agent_id: /healthz 503 naming the agent node",
        bool(said),
        (said or "")[:160],
    )
    try:
        status = other.child.process.wait(60)
    except subprocess.TimeoutExpired:
        status = None
    took = time.monotonic() - began
    text = other.log.read_text(errors="replace")
    errors = [
        line
        for line in text.splitlines()
        if "conflict" in line.lower() or "another" in line.lower()
    ]
    check(
        "issue 9",
        "twin agent_id: exits non-zero (78) with one line saying why",
        status not in (0, None) and errors and "Traceback" not in text,
        f"status {status} after {took:.1f} s: {errors[-1][:160] if errors else ''}",
    )
    check(
        "issue 9",
        "the first agent keeps its node and /healthz 200",
        agent.http("/healthz")[0] == 200,
        agent.http("/healthz")[2][:120],
    )


# -- issue 9: name lookups; issue 3: a forced session expiry ------------------


class NameServer:
    """
    A UDP name server on a thread: ``good*.test`` answered 127.0.0.1,
    ``bh*.test`` never (the query dropped), any other name NXDOMAIN.
    Counts the queries per name.
    """

    def __init__(self, stop: threading.Event) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.asked: list[tuple[float, str]] = []
        self.stop = stop
        threading.Thread(target=self.loop, name="names", daemon=True).start()

    def loop(self) -> None:
        """Answer (or not) each query."""
        while not self.stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            query = dns.Message()
            try:
                query.fromStr(data)
                question = query.queries[0]
            except Exception:  # not DNS: nobody asks that here
                continue
            name = question.name.name.decode().lower()
            self.asked.append((time.monotonic(), name))
            if name.startswith("bh"):
                continue
            answer = dns.Message(id=query.id, answer=1, recDes=query.recDes, recAv=1)
            answer.queries = [question]
            if not name.startswith("good"):
                answer.rCode = dns.ENAME
            elif question.type == dns.A:
                answer.answers = [
                    dns.RRHeader(
                        name=name, type=dns.A, ttl=60, payload=dns.Record_A(LOOPBACK)
                    )
                ]
            self.sock.sendto(answer.toStr(), peer)
        self.sock.close()

    def since(self, start: float, prefix: str) -> int:
        """Queries for names starting with `prefix` since `start`."""
        return sum(
            1 for at, name in self.asked if at >= start and name.startswith(prefix)
        )


BLACK_HOLED = 12


def names_text(
    hosts: str, names: int, port: int, state: Path, hosts_file: Path, more: str = ""
) -> str:
    """The looking-up agent's file: good.test, nx.test, the black-holed."""
    lines = [
        f"interval = {INTERVAL}\ntimeout = {TIMEOUT}\nrise = {RISE}\nfall = {FALL}",
        f'agent_id = "walk1dns"\nstate_dir = "{state}"',
        f'[zookeeper]\nhosts = "{hosts}"\nroot = "{ROOT}dns"\nsession_timeout = 6',
        f'[dns]\nnameservers = ["{LOOPBACK}:{names}"]\nhosts_file = "{hosts_file}"',
        f'[[redis]]\nname = "good"\nhost = "good.test"\nport = {port}',
        f'[[redis]]\nname = "nx"\nhost = "nx.test"\nport = {port}',
    ]
    lines += [
        f'[[redis]]\nname = "bh{i}"\nhost = "bh{i}.test"\nport = {port}'
        for i in range(BLACK_HOLED)
        if not more
    ]
    return "\n".join(lines) + "\n" + more


def lookups(
    workdir: Path,
    started: ExitStack,
    zk: KazooClient,
    hosts: str,
    server: RedisServer,
) -> tuple[socket.socket, float] | None:
    """
    Black-holed names starve no other; NXDOMAIN says so; expiry resyncs.
    Returns an idle HTTP connection to it and when it was opened.
    """
    stop = threading.Event()
    started.callback(stop.set)
    names = NameServer(stop)
    state = workdir / "state"
    state.mkdir(mode=0o700)
    hosts_file = workdir / "hosts"
    hosts_file.write_text("")
    path = workdir / "names.toml"
    text = names_text(hosts, names.port, server.port, state, hosts_file)
    path.write_text(text)
    agent = Twistd(workdir, "names", ["--config", str(path)])
    started.callback(agent.stop)
    began = time.monotonic()
    if not check("issue 9", "looking-up agent starts", agent.wait_answering()):
        return None
    # Held idle until the end of the part (the main agent's crowd of 100
    # connections would close it first: over the cap, idle ones give way).
    idle = socket.create_connection((LOOPBACK, agent.http_port), 5)
    idle_since = time.monotonic()
    up = poll(lambda: agent.instances()["good"]["status"] == "up", 20, 0.02)
    check(
        "issue 9",
        f"{BLACK_HOLED} black-holed names: good.test up within 5 s of the start",
        bool(up) and time.monotonic() - began <= 5,
        f"{time.monotonic() - began:.2f} s after the start",
    )
    error = poll(lambda: agent.instances()["nx"]["error"], 10)
    check(
        "issue 9",
        "NXDOMAIN: 'cannot resolve nx.test'",
        "cannot resolve nx.test" in str(error),
        error,
    )
    most = 0
    for _ in range(10):
        most = max(most, int(stats(agent)["dns"]["lookups_in_flight"]))
        time.sleep(0.3)
    check("issue 9", "lookups in flight <= 16 (3 s)", most <= 16, most)
    # A reload reads the file once it has been left alone for 2 s
    # (sentinel/settling.py, since 1259f27): the SIGHUP comes after that.
    path.write_text(
        names_text(
            hosts,
            names.port,
            server.port,
            state,
            hosts_file,
            f'[[redis]]\nname = "good2"\nhost = "good2.test"\nport = {server.port}\n',
        )
    )
    time.sleep(2.2)
    os.kill(agent.pid, signal.SIGHUP)
    reloaded = time.monotonic()
    up = poll(lambda: agent.instances().get("good2", {}).get("status") == "up", 15)
    took = time.monotonic() - reloaded
    check(
        "issue 9",
        "SIGHUP (file still 2 s) removing them, adding good2.test: up within 2 s",
        bool(up) and took <= 2,
        f"{took:.2f} s",
    )
    time.sleep(3)
    quiet = time.monotonic()
    time.sleep(3)
    asked = names.since(quiet, "bh")
    check(
        "issue 9",
        "no lookups for removed names (3 s, from 3 s after the reload)",
        asked == 0,
        f"{asked} queries",
    )
    expiry(agent, zk, state)
    return idle, idle_since


def expiry(agent: Twistd, zk: KazooClient, state: Path) -> None:
    """Issue 3: a forced expiry (its id and password opened, then closed)."""
    document = json.loads((state / "zookeeper-session.json").read_text())
    session = int(document["session_id"], 16)
    intruder = KazooClient(
        hosts=document["hosts"],
        client_id=(session, base64.b64decode(document["password"])),
        timeout=10.0,
    )
    intruder.start(timeout=10.0)
    intruder.stop()
    intruder.close()
    ended = time.monotonic()
    paths = [f"{ROOT}dns/instances/good", f"{ROOT}dns/agents/walk1dns"]

    def anew() -> bool:
        owners = [node(zk, p) for p in paths]
        return all(o and o[1].ephemeralOwner not in (0, session) for o in owners)

    back = poll(anew, 15, 0.02)
    check(
        "issue 3",
        "forced session expiry: nodes re-created on a new session (within 5 s)",
        bool(back) and time.monotonic() - ended <= 5,
        f"{time.monotonic() - ended:.2f} s",
    )


def default_http(workdir: Path, good: str) -> None:
    """Issue 2: HTTP listens on loopback by default (port 6060)."""
    try:
        with socket.socket() as probe:
            probe.bind(("0.0.0.0", 6060))
    except OSError:
        print("SKIP  issue 2: HTTP on loopback by default -- 6060 in use here")
        return
    agent = Twistd(workdir, "default", ["--redis", good], http=False)
    agent.http_port = 6060
    answering = agent.wait_answering()
    listening = listening_addresses(agent.pid) if answering else []
    agent.stop()
    check(
        "issue 2",
        "no --http: listens on 127.0.0.1:6060 only",
        listening == ["127.0.0.1:6060"],
        listening,
    )


def listening_addresses(pid: int) -> list[str]:
    """The address:port of each TCP socket `pid` listens on."""
    inodes = socket_inodes(pid)
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and parts[9] in inodes:
                address, port = parts[1].split(":")
                if table == "tcp":
                    host = socket.inet_ntoa(bytes.fromhex(address)[::-1])
                else:
                    host = address
                found.append(f"{host}:{int(port, 16)}")
    return sorted(found)


def part_one(workdir: Path, started: ExitStack) -> None:
    """Issues 2, 3, 4, 5 and 9."""
    redis = start_redis_servers(3, started)
    good = f"{LOOPBACK}:{redis[0].port}"
    refusals(workdir, good)
    fd_limit(good)
    default_http(workdir, good)
    zookeeper, zk = start_zookeeper(started)
    idle = lookups(workdir, started, zk, zookeeper.hosts, redis[2])
    main_agent(workdir, started, zk, zookeeper.hosts, redis)
    if idle:
        idle_timeout(*idle)


PARTS: dict[str, Callable[[Path, ExitStack], None]] = {"1": part_one}


def main() -> None:
    """Start what each part needs, walk it, stop everything, sum up."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all")
    part = parser.parse_args().part
    stop_on_sigterm()
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)
    began = time.monotonic()
    print(f"# {machine()}\n# load {load_average()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="issueswalk-") as tmp:
        for name, walk in PARTS.items():
            if part not in (name, "all"):
                continue
            with ExitStack() as started:
                started.callback(lambda: [agent.stop() for agent in AGENTS])
                workdir = Path(tmp) / f"part{name}"
                workdir.mkdir()
                walk(workdir, started)
            check_logs(workdir)
    sum_up(began)


if __name__ == "__main__":
    main()

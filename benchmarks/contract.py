"""
An acceptance walk from the contract alone: real ``twistd -n sentinel``
agents, real redis-servers, a real ZooKeeper and small fake Redis servers,
all on free loopback ports and stopped by PID, checked only through the
interfaces of the design (command line, TOML, exit statuses and their one
line, signals, ZooKeeper nodes, HTTP routes). One line per check::

    PASS|FAIL  section: statement -- evidence

Where the design is silent, README.rst is the reference, and the check
says so. It ends with how many passed, and exits 1 if any failed.
Bounded: every wait has a deadline; the walk takes about 3 minutes at
load 3--7 on two cores (part 1 45--75 s at load 2--4, part 2 about 85 s),
and every process it started is stopped by PID at the end.

    .venv/bin/python benchmarks/contract.py [--part 1|2|all]

Part 1 walks the options, the reply table, the ZooKeeper layout, HTTP,
signals and groups; part 2 what part 1 left out: TLS to Redis, ACL users
and where a password may show, ``info_every``, ``/healthz`` after a stall
and without ZooKeeper, the ``[zookeeper]`` keys timed, reloads of a port,
the timeout and a file gone, and a ZooKeeper wiped.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import re
import selectors
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NoReturn

from common import (
    LOOPBACK,
    ChildProcess,
    RedisServer,
    ZooKeeperServer,
    free_port,
    load_average,
    machine,
    start_redis_servers,
    start_zookeeper,
    stop_on_sigterm,
)
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from tests.certs import make_certificates
from tests.servers import listening_tcp_ports

TWISTD = str(Path(sys.executable).with_name("twistd"))
# A start, as long as a loaded machine may need.
START_BOUND = 60.0
RESULTS: list[tuple[bool, str]] = []
# Every agent started, stopped by PID at the end whatever happened.
AGENTS: list[Twistd] = []


def check(section: str, statement: str, ok: bool, evidence: object = "") -> bool:
    """Record and print one check of the contract."""
    RESULTS.append((ok, f"{section}: {statement}"))
    word = "PASS" if ok else "FAIL"
    print(f"{word}  {section}: {statement} -- {evidence}", flush=True)
    return ok


def poll(condition: Callable[[], Any], timeout: float, every: float = 0.05) -> Any:
    """`condition`'s first true value within `timeout` s, else its last."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except Exception as e:  # a node or a page not there yet
            value = None
            error = e
        else:
            error = None
        if value or time.monotonic() > deadline:
            return value if value or error is None else None
        time.sleep(every)


# -- the agent as a child process ------------------------------------------


class Twistd:
    """One ``twistd -n sentinel ARGS`` child, its log in the workdir."""

    def __init__(
        self,
        workdir: Path,
        label: str,
        args: Sequence[str],
        http: bool = True,
        prefix: Sequence[str] = (),
        twistd_options: Sequence[str] = (),
    ) -> None:
        """
        Start it; `prefix` runs before twistd (``prlimit ...``, which
        execs it), `twistd_options` go before ``sentinel`` (``--logger``).
        """
        self.label = label
        self.http_port = free_port()
        self.log = workdir / f"{label}.log"
        argv = [*prefix, TWISTD, "-n", "--pidfile=", *twistd_options, "sentinel", *args]
        if http:
            argv += ["--http", f"tcp:{self.http_port}:interface={LOOPBACK}"]
        self.child = ChildProcess(argv, log=self.log, cwd=workdir, own_session=True)
        AGENTS.append(self)

    @property
    def pid(self) -> int:
        """The agent's process id."""
        return self.child.pid

    def http(
        self, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """Status, headers and body of GET `path`, errors included."""
        url = f"http://{LOOPBACK}:{self.http_port}{path}"
        request = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def json(self, path: str) -> Any:
        """The JSON of GET `path` (any status)."""
        return json.loads(self.http(path)[2])

    def wait_answering(self) -> bool:
        """Whether /debug/stats answered within START_BOUND."""

        def answers() -> bool:
            if not self.child.running:
                return True
            return self.http("/debug/stats")[0] == 200

        poll(answers, START_BOUND, 0.1)
        return self.child.running

    def instances(self, query: str = "") -> dict[str, dict[str, Any]]:
        """/instances keyed by name."""
        return {i["name"]: i for i in self.json("/instances" + query)["instances"]}

    def signal_and_wait(
        self, signum: int, bound: float = 10.0
    ) -> tuple[int | None, float]:
        """Send `signum`; the exit status (None if still running) and seconds."""
        started = time.monotonic()
        os.kill(self.pid, signum)
        try:
            status = self.child.process.wait(bound)
        except subprocess.TimeoutExpired:
            return None, bound
        return status, time.monotonic() - started

    def stop(self) -> None:
        """SIGTERM, bounded wait, SIGKILL; safe to repeat."""
        self.child.stop()


def by_signal(status: int | None, signum: int) -> bool:
    """Whether `status` is death by `signum` (Popen's -N, a shell's 128 + N)."""
    return status in (-signum, 128 + signum)


def run_once(args: Sequence[str], timeout: float = 60.0) -> tuple[int | None, str]:
    """``twistd -n sentinel ARGS`` expected to end: its status and output."""
    argv = [TWISTD, "-n", "--pidfile=", "sentinel", "--http", "none", *args]
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        return None, out.decode(errors="replace")
    return process.returncode, out.decode(errors="replace")


# -- fake Redis servers ------------------------------------------------------


INFO_MASTER = b"# Replication\r\nrole:master\r\nconnected_slaves:0\r\n"
INFO_SLAVE = (
    b"# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:1\r\n"
    b"master_link_status:down\r\n"
)


def bulk(data: bytes) -> bytes:
    """A RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(data), data)


FAKE_REPLIES: dict[str, tuple[bytes | None, bytes]] = {
    # name: (reply to PING, reply to INFO); None never answers anything.
    "loading": (
        b"-LOADING Redis is loading the dataset in memory\r\n",
        bulk(INFO_MASTER),
    ),
    "masterdown": (
        b"-MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set"
        b" to 'no'.\r\n",
        bulk(INFO_SLAVE),
    ),
    "noauth": (
        b"-NOAUTH Authentication required.\r\n",
        b"-NOAUTH Authentication required.\r\n",
    ),
    "wrongpass": (
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n",
    ),
    "busy": (
        b"-BUSY Redis is busy running a script. You can only call SCRIPT KILL.\r\n",
        b"-BUSY Redis is busy running a script. You can only call SCRIPT KILL.\r\n",
    ),
    "garbage": (b"?this is no RESP\r\n", b"?this is no RESP\r\n"),
    "silent": (None, b""),
}


def commands(buffer: bytearray) -> list[bytes]:
    """Take whole RESP commands (arrays of bulk strings) out of `buffer`."""
    found = []
    while True:
        text = bytes(buffer)
        match = re.match(rb"\*(\d+)\r\n", text)
        if not match:
            return found
        position, args = match.end(), []
        for _ in range(int(match.group(1))):
            head = re.match(rb"\$(\d+)\r\n", text[position:])
            if not head:
                return found
            start = position + head.end()
            end = start + int(head.group(1))
            if len(text) < end + 2:
                return found
            args.append(text[start:end])
            position = end + 2
        del buffer[:position]
        found.append(args[0].upper() if args else b"")


def serve_fakes(stop: threading.Event) -> dict[str, int]:
    """Listen for each FAKE_REPLIES on a free port, on a thread; their ports."""
    selector = selectors.DefaultSelector()
    ports = {}
    for name, replies in FAKE_REPLIES.items():
        listener = socket.socket()
        listener.bind((LOOPBACK, 0))
        listener.listen(64)
        listener.setblocking(False)
        ports[name] = listener.getsockname()[1]
        selector.register(listener, selectors.EVENT_READ, ("listen", replies))

    def loop() -> None:
        while not stop.is_set():
            for key, _ in selector.select(0.1):
                kind, data = key.data
                if kind == "listen":
                    conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                    conn.setblocking(False)
                    selector.register(
                        conn, selectors.EVENT_READ, ("conn", (data, bytearray()))
                    )
                    continue
                (ping, info), buffer = data
                conn = key.fileobj
                try:
                    chunk = conn.recv(65536)  # type: ignore[union-attr]
                except OSError:
                    chunk = b""
                if not chunk:
                    selector.unregister(conn)
                    conn.close()  # type: ignore[union-attr]
                    continue
                buffer += chunk
                for command in commands(buffer):
                    if ping is None:
                        continue
                    if command == b"PING":
                        reply = ping
                    elif command == b"INFO":
                        reply = info
                    else:
                        reply = (
                            b"-ERR unknown command '%s'\r\n" % command.decode().encode()
                        )
                    try:
                        conn.sendall(reply)  # type: ignore[union-attr]
                    except OSError:
                        pass
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]

    threading.Thread(target=loop, name="fakes", daemon=True).start()
    return ports


# -- ZooKeeper reads ---------------------------------------------------------


def node(zk: KazooClient, path: str) -> tuple[Any, Any] | None:
    """A node's JSON and stat, or None if it is not there."""
    try:
        data, znode = zk.get(path)
    except NoNodeError:
        return None
    return json.loads(data), znode


def children(zk: KazooClient, path: str) -> list[str]:
    """A node's children, or [] if it is not there."""
    try:
        return sorted(zk.get_children(path))
    except NoNodeError:
        return []


INSTANCE_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "host": (str,),
    "port": (int,),
    "status": (str,),
    "ready": (bool,),
    "role": (str, type(None)),
    "master_host": (str, type(None)),
    "master_port": (int, type(None)),
    "master_link_status": (str, type(None)),
    "latency_ms": (float, type(None)),
    "since": (int, float),
    "checked_at": (int, float),
    "error": (str, type(None)),
    "agent": (str,),
    "schema": (int,),
}
AGENT_TYPES: dict[str, tuple[type, ...]] = {
    "agent": (str,),
    "pid": (int,),
    "version": (str,),
    "started_at": (int, float),
    "heartbeat_at": (int, float),
    "interval": (int, float),
    "instances": (list,),
}
HTTP_EXTRA = ("consecutive_successes", "consecutive_failures", "checks", "failures")


def type_errors(
    document: dict[str, Any], types: dict[str, tuple[type, ...]]
) -> list[str]:
    """Keys missing from `document` or of a type other than `types` says."""
    wrong = []
    for key, allowed in types.items():
        if key not in document:
            wrong.append(f"{key} missing")
        elif isinstance(document[key], bool) and bool not in allowed:
            wrong.append(f"{key}={document[key]!r}")
        elif not isinstance(document[key], allowed):
            wrong.append(f"{key}={document[key]!r}")
    return wrong


# -- the walk -----------------------------------------------------------------


def invalid_inputs(workdir: Path, good: str) -> None:
    """Each invalid input: non-zero status, one line naming field and value."""
    unreadable = workdir / "unreadable.toml"
    unreadable.write_text("interval = 1.0\n")
    unreadable.chmod(0)
    if os.access(unreadable, os.R_OK):  # root reads anything: a directory then
        unreadable = workdir / "a-directory.toml"
        unreadable.mkdir()
    syntax = workdir / "syntax.toml"
    syntax.write_text("interval = = 1\n")
    unknown = workdir / "unknown.toml"
    unknown.write_text("contractwalk_bogus = 1\n")
    badtype = workdir / "badtype.toml"
    badtype.write_text('interval = "abc"\n')
    duplicate = workdir / "duplicate.toml"
    duplicate.write_text(
        '[[redis]]\nname = "twin"\nhost = "127.0.0.1"\nport = 1\n'
        '[[redis]]\nname = "twin"\nhost = "127.0.0.1"\nport = 2\n'
    )

    def toml_file(label: str, text: str) -> str:
        path = workdir / f"{label}.toml"
        path.write_text(text)
        return str(path)

    redis_table = '[[redis]]\nname = "x"\nhost = "127.0.0.1"\nport = 1\n'
    cases: list[tuple[str, list[str], list[str]]] = [
        # what, arguments, what the line must name
        ("unknown option", ["--contractwalk-bogus"], ["contractwalk-bogus"]),
        ("--interval abc", ["--interval", "abc"], ["interval", "abc"]),
        ("--timeout 0", ["--timeout", "0"], ["timeout", "0"]),
        ("--timeout -1", ["--timeout", "-1"], ["timeout", "-1"]),
        ("timeout > interval", ["--interval", "1", "--timeout", "2"], ["timeout", "2"]),
        ("--rise -1", ["--rise", "-1"], ["rise", "-1"]),
        ("--fall x", ["--fall", "x"], ["fall", "x"]),
        (
            "--zk-session-timeout abc",
            ["--zk-session-timeout", "abc"],
            ["session", "abc"],
        ),
        ("--redis without port", ["--redis", "127.0.0.1"], ["redis", "127.0.0.1"]),
        ("--redis port 99999", ["--redis", "127.0.0.1:99999"], ["redis", "99999"]),
        (
            "duplicate --redis name",
            ["--redis", f"contractwalk={good}", "--redis", f"contractwalk={good}"],
            ["contractwalk"],
        ),
        ("duplicate [[redis]] name", ["--config", str(duplicate)], ["twin"]),
        ("missing file", ["--config", str(workdir / "nope.toml")], ["nope.toml"]),
        ("unreadable file", ["--config", str(unreadable)], [unreadable.name]),
        ("TOML syntax error", ["--config", str(syntax)], ["syntax.toml"]),
        ("unknown TOML key", ["--config", str(unknown)], ["contractwalk_bogus"]),
        ('TOML interval "abc"', ["--config", str(badtype)], ["interval", "abc"]),
        ("--interval inf", ["--interval", "inf"], ["interval", "inf"]),
        ("--interval nan", ["--interval", "nan"], ["interval", "nan"]),
        ("--timeout nan", ["--timeout", "nan"], ["timeout", "nan"]),
        ("--interval 0", ["--interval", "0"], ["interval", "0"]),
        ("--rise 1.5", ["--rise", "1.5"], ["rise", "1.5"]),
        (
            "--http tcp:notaport",
            ["--redis", good, "--http", "tcp:notaport"],
            ["http", "notaport"],
        ),
        ("--redis empty name", ["--redis", f"={good}"], ["redis"]),
        ("--redis name with /", ["--redis", f"a/b={good}"], ["redis", "a/b"]),
        ("--agent-id with /", ["--agent-id", "a/b"], ["agent", "a/b"]),
        (
            "--zk-root relative",
            ["--zookeeper", "127.0.0.1:2181", "--zk-root", "relative"],
            ["root", "relative"],
        ),
        ("--redis host:abc", ["--redis", "127.0.0.1:abc"], ["redis", "abc"]),
        (
            "TOML rise = true",
            ["--config", toml_file("risebool", "rise = true\n")],
            ["rise", "true"],
        ),
        (
            "TOML interval = true",
            ["--config", toml_file("intbool", "interval = true\n")],
            ["interval", "true"],
        ),
        (
            "TOML port as string",
            [
                "--config",
                toml_file("portstr", redis_table.replace("port = 1", 'port = "6379"')),
            ],
            ["port", "6379"],
        ),
        (
            "TOML [[redis]] without port",
            ["--config", toml_file("noport", redis_table.replace("port = 1\n", ""))],
            ["port"],
        ),
        (
            "TOML unknown key in [[redis]]",
            ["--config", toml_file("redisbogus", redis_table + "cwbogus = 1\n")],
            ["cwbogus"],
        ),
        (
            "TOML unknown key in [zookeeper]",
            [
                "--config",
                toml_file(
                    "zkbogus", '[zookeeper]\nhosts = "127.0.0.1:2181"\ncwbogus = 1\n'
                ),
            ],
            ["cwbogus"],
        ),
        (
            'TOML discovery = "bogus"',
            [
                "--config",
                toml_file(
                    "discbogus",
                    '[zookeeper]\nhosts = "127.0.0.1:2181"\ndiscovery = "bogus"\n',
                ),
            ],
            ["discovery", "bogus"],
        ),
        (
            "TOML replicas = 0",
            [
                "--config",
                toml_file(
                    "replicas0", '[zookeeper]\nhosts = "127.0.0.1:2181"\nreplicas = 0\n'
                ),
            ],
            ["replicas", "0"],
        ),
        (
            "TOML quorum > replicas",
            [
                "--config",
                toml_file(
                    "quorum3",
                    '[zookeeper]\nhosts = "127.0.0.1:2181"\nreplicas = 2\nquorum = 3\n',
                ),
            ],
            ["quorum", "3"],
        ),
        (
            "TOML deep nesting",
            ["--config", toml_file("deep", "x = " + "[" * 5000 + "]" * 5000 + "\n")],
            ["deep.toml"],
        ),
    ]
    with ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(lambda case: run_once(case[1]), cases))
    for (what, _, names), (status, output) in zip(cases, outcomes, strict=True):
        lines = [line for line in output.splitlines() if line.strip()]
        ok = (
            status not in (0, None)
            and len(lines) == 1
            and "Traceback" not in output
            and all(n.lower() in lines[0].lower() for n in names)
        )
        shown = " | ".join(lines[:3])[:200] + (" ..." if len(lines) > 3 else "")
        check(
            "invalid",
            f"{what}: status != 0, one line naming {names}",
            ok,
            f"status {status}, {len(lines)} line(s): {shown}",
        )


def options(
    workdir: Path, zk: KazooClient, zookeeper: ZooKeeperServer, redis: list[RedisServer]
) -> None:
    """Every option on the command line, as its TOML key, and both."""
    hosts = zookeeper.hosts
    p1, p2 = redis[0].port, redis[1].port
    state_cli = workdir / "state-cli"
    state_cli.mkdir()
    cli = Twistd(workdir, "cli", [
        "--redis", f"one={LOOPBACK}:{p1}", "--redis", f"{LOOPBACK}:{p2}",
        "--zookeeper", hosts + "/chroot-cli", "--zk-root", "/cw-cli",
        "--interval", "0.5", "--timeout", "0.3", "--rise", "3", "--fall", "2",
        "--agent-id", "cli-agent", "--zk-session-timeout", "7",
        "--state-dir", str(state_cli),
    ])  # fmt: skip
    toml_http = free_port()
    state_toml = workdir / "state-toml"
    state_toml.mkdir()
    (workdir / "password").write_text("sesame\n")
    config = workdir / "toml.toml"
    config.write_text(f"""\
interval = 0.6
timeout = 0.4
rise = 3
fall = 2
http = "tcp:{toml_http}:interface=127.0.0.1"
agent_id = "toml-agent"
state_dir = "{state_toml}"
info_every = 5

[zookeeper]
hosts = "{hosts}/chroot-toml"
root = "/cw-toml"
session_timeout = 8.0
refresh = 2
heartbeat = 1
discovery = "serverset"
discovery_root = "/disco"

[[redis]]
name = "one"
host = "127.0.0.1"
port = {p1}
service = "cache"
labels = {{ zone = "b" }}

[[redis]]
name = "locked"
host = "127.0.0.1"
port = {redis[2].port}
password_file = "{workdir / "password"}"

[[redis]]
name = "gone"
host = "127.0.0.1"
port = {free_port()}
""")
    toml = Twistd(workdir, "toml", ["--config", str(config)], http=False)
    toml.http_port = toml_http
    override_config = workdir / "override.toml"
    override_config.write_text(f"""\
interval = 2.0
agent_id = "toml-id"
[zookeeper]
hosts = "{hosts}"
root = "/cw-tomlroot"
[[redis]]
name = "one"
host = "127.0.0.1"
port = {p1}
""")
    override = Twistd(workdir, "override", [
        "--config", str(override_config), "--interval", "0.7",
        "--agent-id", "cli-over", "--zk-root", "/cw-cliroot",
    ])  # fmt: skip
    for agent in (cli, toml, override):
        check(
            "options",
            f"{agent.label} agent starts and answers HTTP",
            agent.wait_answering(),
            agent.child.why_ended() or f"port {agent.http_port}",
        )

    # Command line.
    found = agent_node_there(
        zk, "options", "/chroot-cli/cw-cli/agents/cli-agent", "--interval", 0.5
    )
    if found:
        names = sorted(found[0].get("instances", []))
        check(
            "options",
            "--redis NAME=HOST:PORT and HOST:PORT (name defaults to HOST:PORT)",
            names == sorted(["one", f"{LOOPBACK}:{p2}"]),
            names,
        )
    default_name = f"{LOOPBACK}:{p2}"
    inst = poll(lambda: node(zk, f"/chroot-cli/cw-cli/instances/{default_name}"), 20)
    check(
        "options",
        "instance node named HOST:PORT by default",
        inst is not None,
        default_name,
    )
    status, _, body = cli.http(f"/instances/{default_name}")
    check(
        "http",
        "/instances/HOST:PORT (a default name) answers it",
        status == 200 and json.loads(body).get("name") == default_name,
        (status, body[:100]),
    )
    session_timeout_asked(
        zookeeper,
        "options",
        "--zk-session-timeout 7 requested (ZooKeeper 'cons' to=7000)",
        7,
    )
    files = [p for p in state_cli.iterdir()]
    modes = [oct(stat.S_IMODE(p.stat().st_mode)) for p in files]
    check(
        "options",
        "--state-dir: the session kept there, owner-only",
        bool(files) and all(not (p.stat().st_mode & 0o077) for p in files),
        list(zip([p.name for p in files], modes, strict=True)),
    )
    timeouts_seen = []

    def silent_ages() -> None:
        pending = cli.json("/pending")
        timeouts_seen.extend(c["age_seconds"] for c in pending["checks"])

    # rise 3 / fall 2, read off the counters when the status flips.
    def flip(to: str) -> dict[str, Any] | None:
        got = cli.json("/instances/one")
        return got if got.get("status") == to else None

    poll(lambda: flip("up"), 10)
    redis[0].pause()
    try:
        down = poll(lambda: (silent_ages(), flip("down"))[1], 15, 0.02)
    finally:
        redis[0].resume()
    check(
        "options",
        "--fall 2: down after 2 failures in a row",
        bool(down) and down["consecutive_failures"] == 2,
        down and {k: down[k] for k in ("consecutive_failures", "error")},
    )
    ages = [a for a in timeouts_seen if a is not None]
    check(
        "options",
        "--timeout 0.3: no check pending much longer than 0.3 s",
        bool(ages) and max(ages) < 0.3 + 0.25,
        f"max age {max(ages or [0]):.3f} s",
    )
    up = poll(lambda: flip("up"), 15, 0.02)
    check(
        "options",
        "--rise 3: up after 3 successes in a row",
        bool(up) and up["consecutive_successes"] == 3,
        up and up["consecutive_successes"],
    )

    # TOML.
    agent_node_there(
        zk, "toml", "/chroot-toml/cw-toml/agents/toml-agent", "interval =", 0.6
    )
    check(
        "toml", "http = ... serves", toml.http("/healthz")[0] in (200, 503), toml_http
    )
    session_timeout_asked(
        zookeeper, "toml", "zookeeper.session_timeout = 8.0 (cons to=8000)", 8
    )
    check(
        "toml",
        "state_dir holds the session",
        any(state_toml.iterdir()),
        [p.name for p in state_toml.iterdir()],
    )
    locked = poll(
        lambda: (lambda d: d if d and d[0]["status"] == "up" else None)(
            node(zk, "/chroot-toml/cw-toml/instances/locked")
        ),
        15,
    )
    check(
        "toml",
        "password_file: a requirepass server is up",
        bool(locked),
        locked and locked[0]["error"],
    )

    # Both: the command line wins.
    opath = "/cw-cliroot/agents/cli-over"
    found = poll(lambda: node(zk, opath), 20)
    check(
        "override",
        "--agent-id and --zk-root over TOML",
        found is not None and node(zk, "/cw-tomlroot/agents/toml-id") is None,
        opath,
    )
    if found:
        check(
            "override",
            "--interval 0.7 over interval = 2.0",
            found[0].get("interval") == 0.7,
            found[0].get("interval"),
        )

    layout(zk, toml, "/chroot-toml/cw-toml", "/chroot-toml/disco", redis)
    stop_and_restart(workdir, zk, cli, override)


def session_timeout_asked(
    zookeeper: ZooKeeperServer, section: str, statement: str, seconds: int
) -> None:
    """Check that some session asked for `seconds` (ZooKeeper's ``cons``)."""
    cons = zookeeper.four_letter_word("cons", 5).decode(errors="replace")
    check(
        section, statement, f"to={seconds * 1000}" in cons, re.findall(r"to=\d+", cons)
    )


def agent_node_there(
    zk: KazooClient, section: str, path: str, option: str, interval: float
) -> tuple[Any, Any] | None:
    """
    The agent node at `path` (agent id, root and chroot taken) and its
    ``interval`` as `option` set it; the node, or None.
    """
    found = poll(lambda: node(zk, path), 20)
    check(
        section, "agent id, root and hosts' chroot: agent node there", bool(found), path
    )
    if found:
        check(
            section,
            f"{option} {interval} read back as the agent node's interval",
            found[0].get("interval") == interval,
            found[0].get("interval"),
        )
    return found


def layout(
    zk: KazooClient, agent: Twistd, root: str, disco: str, redis: list[RedisServer]
) -> None:
    """Fields and types of the nodes, owners, refresh, serverset members."""
    path = f"{root}/instances/one"
    first = poll(
        lambda: (lambda d: d if d and d[0]["status"] == "up" else None)(node(zk, path)),
        20,
    )
    agent_node = node(zk, f"{root}/agents/toml-agent")
    if first is None or agent_node is None:
        check("layout", "instance and agent nodes there", False, path)
        return
    data, znode = first
    check(
        "layout",
        "instance node: every field, its type",
        not type_errors(data, INSTANCE_TYPES),
        type_errors(data, INSTANCE_TYPES) or sorted(data),
    )
    check(
        "layout",
        "instance node: schema 1, status up, ready, role master, agent id",
        (data["schema"], data["status"], data["ready"], data["role"], data["agent"])
        == (1, "up", True, "master", "toml-agent"),
        {k: data[k] for k in ("schema", "status", "ready", "role", "agent")},
    )
    check(
        "layout",
        "since <= checked_at, both epoch seconds near now",
        data["since"] <= data["checked_at"]
        and abs(data["checked_at"] - time.time()) < 30,
        (data["since"], data["checked_at"]),
    )
    adata, astat = agent_node
    check(
        "layout",
        "agent node: every field, its type",
        not type_errors(adata, AGENT_TYPES),
        type_errors(adata, AGENT_TYPES) or sorted(adata),
    )
    check(
        "layout",
        "agent node pid is the process's",
        adata["pid"] == agent.pid,
        (adata["pid"], agent.pid),
    )
    check(
        "layout",
        "both ephemeral, one owner (the agent's session)",
        znode.ephemeralOwner != 0 and znode.ephemeralOwner == astat.ephemeralOwner,
        (hex(znode.ephemeralOwner), hex(astat.ephemeralOwner)),
    )
    time.sleep(2.6)  # refresh = 2, heartbeat = 1
    later = node(zk, path)
    check(
        "layout",
        "refresh = 2: unchanged node rewritten, checked_at moved",
        later is not None
        and later[1].mzxid != znode.mzxid
        and later[0]["checked_at"] > data["checked_at"]
        and later[0]["since"] == data["since"],
        later
        and (
            later[0]["checked_at"] - data["checked_at"],
            later[0]["since"] == data["since"],
        ),
    )
    down_node = node(zk, f"{root}/instances/gone")
    time.sleep(2.6)
    down_later = node(zk, f"{root}/instances/gone")
    check(
        "layout",
        "refresh = 2: a down node's checked_at moves too (latency null)",
        down_node is not None
        and down_later is not None
        and down_later[0]["checked_at"] > down_node[0]["checked_at"]
        and down_later[0]["status"] == "down",
        down_later
        and (
            down_later[0]["checked_at"] - down_node[0]["checked_at"],
            down_later[0]["latency_ms"],
            down_later[0]["error"],
        ),
    )
    alater = node(zk, f"{root}/agents/toml-agent")
    check(
        "layout",
        "heartbeat = 1: heartbeat_at moved",
        alater is not None and alater[0]["heartbeat_at"] > adata["heartbeat_at"],
        alater and alater[0]["heartbeat_at"] - adata["heartbeat_at"],
    )
    members = children(zk, f"{disco}/cache")
    member_data = [node(zk, f"{disco}/cache/{m}") for m in members]
    check(
        "discovery",
        "serverset: one member_NNNNNNNNNN under {discovery_root}/{service}",
        len(members) == 1 and re.fullmatch(r"member_\d{10}", members[0]) is not None,
        members,
    )
    if member_data and member_data[0]:
        got, mstat = member_data[0]
        want = {
            "serviceEndpoint": {"host": LOOPBACK, "port": redis[0].port},
            "additionalEndpoints": {},
            "status": "ALIVE",
        }
        check("discovery", "serverset JSON exactly as written", got == want, got)
        check(
            "discovery",
            "serverset member ephemeral",
            mstat.ephemeralOwner != 0,
            hex(mstat.ephemeralOwner),
        )

    def flip(to: str) -> dict[str, Any] | None:
        got = agent.json("/instances/one")
        return got if got.get("status") == to else None

    redis[0].pause()
    try:
        down = poll(lambda: flip("down"), 15, 0.02)
        check(
            "toml",
            "fall = 2: down after 2 failures in a row",
            bool(down) and down["consecutive_failures"] == 2,
            down and down["consecutive_failures"],
        )
        gone = poll(lambda: not children(zk, f"{disco}/cache"), 10)
        check(
            "discovery",
            "serverset member gone while the instance is down",
            bool(gone),
            children(zk, f"{disco}/cache"),
        )
    finally:
        redis[0].resume()
    up = poll(lambda: flip("up"), 15, 0.02)
    check(
        "toml",
        "rise = 3: up after 3 successes in a row",
        bool(up) and up["consecutive_successes"] == 3,
        up and up["consecutive_successes"],
    )
    back = poll(lambda: children(zk, f"{disco}/cache"), 15)
    check("discovery", "serverset member back once up again", bool(back), back)
    again = node(zk, path)
    check(
        "layout",
        "since moved with the status changes",
        again is not None
        and again[0]["status"] == "up"
        and again[0]["since"] > data["since"],
        again and (again[0]["since"] - data["since"]),
    )
    default_service = children(zk, f"{disco}/locked")
    check(
        "discovery",
        "service defaults to the instance name",
        len(default_service) == 1,
        f"{disco}/locked: {default_service}",
    )


def stop_and_restart(
    workdir: Path, zk: KazooClient, cli: Twistd, override: Twistd
) -> None:
    """SIGTERM without and with state_dir; the restart that keeps nodes."""
    root = "/cw-cliroot"
    status, seconds = override.signal_and_wait(signal.SIGTERM)
    check(
        "signals",
        "SIGTERM: exit status 143 (killed by SIGTERM) within 5 s",
        by_signal(status, signal.SIGTERM) and seconds < 5,
        f"status {status} after {seconds:.2f} s",
    )
    left = children(zk, f"{root}/agents") + children(zk, f"{root}/instances")
    check(
        "signals",
        "SIGTERM without state_dir: agent and instance nodes gone",
        not left,
        left,
    )

    base = "/chroot-cli/cw-cli"
    paths = [f"{base}/agents/cli-agent"] + [
        f"{base}/instances/{n}" for n in children(zk, f"{base}/instances")
    ]
    before = {p: node(zk, p) for p in paths}
    missing = 0
    polls = 0
    stopped = threading.Event()
    status_box: list[tuple[int | None, float]] = []

    def stop_it() -> None:
        status_box.append(cli.signal_and_wait(signal.SIGTERM))
        stopped.set()

    threading.Thread(target=stop_it, daemon=True).start()
    stopped.wait(12)
    status, seconds = status_box[0] if status_box else (None, 0.0)
    check(
        "signals",
        "SIGTERM with state_dir: exit 143 within 5 s",
        by_signal(status, signal.SIGTERM) and seconds < 5,
        f"status {status} after {seconds:.2f} s",
    )
    args = cli.child.argv[cli.child.argv.index("sentinel") + 1 :]
    args = args[: args.index("--http")]
    again = Twistd(workdir, "cli-again", args)
    rewritten = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(rewritten) < len(paths):
        for p in paths:
            now = node(zk, p)
            polls += 1
            if now is None:
                missing += 1
            elif before[p] and now[1].mzxid != before[p][1].mzxid:
                rewritten.add(p)
        time.sleep(0.02)
    check(
        "state_dir",
        "restart: nodes never missing (polled every 20 ms)",
        missing == 0 and len(rewritten) == len(paths),
        f"{missing} missing of {polls} reads; {len(rewritten)}/{len(paths)} rewritten",
    )
    agent_now = node(zk, f"{base}/agents/cli-agent")
    check(
        "state_dir",
        "the new process owns the agent node (its pid)",
        agent_now is not None and agent_now[0]["pid"] == again.pid,
        agent_now and (agent_now[0]["pid"], again.pid),
    )
    status, seconds = again.signal_and_wait(signal.SIGUSR2)
    check(
        "state_dir",
        "SIGUSR2 (README: deregister now): exit 0, nodes gone",
        status == 0 and not children(zk, f"{base}/instances"),
        f"status {status} after {seconds:.2f} s, "
        f"left {children(zk, f'{base}/instances')}",
    )


def replies(workdir: Path, zk: KazooClient, hosts: str, good: int) -> Twistd:
    """The reply table against fake servers, the HTTP routes, nerve discovery."""
    stop = threading.Event()
    ports = serve_fakes(stop)
    refused = free_port()
    args = [
        "--zookeeper",
        hosts,
        "--zk-root",
        "/cw-replies",
        "--agent-id",
        "replies",
        "--interval",
        "0.5",
        "--timeout",
        "0.3",
    ]
    config = workdir / "replies.toml"
    lines = ["[zookeeper]", 'discovery = "nerve"', 'discovery_root = "/cw-nerve"', ""]
    for name, port in [*ports.items(), ("refused", refused), ("real", good)]:
        lines += [
            "[[redis]]",
            f'name = "{name}"',
            'host = "127.0.0.1"',
            f"port = {port}",
            'service = "svc"',
            'labels = { zone = "a" }',
            "",
        ]
    config.write_text("\n".join(lines))
    agent = Twistd(workdir, "replies", ["--config", str(config), *args])
    check(
        "replies", "agent starts", agent.wait_answering(), agent.child.why_ended() or ""
    )
    firsts: dict[str, dict[str, Any]] = {}

    def all_seen() -> bool:
        for name, got in agent.instances().items():
            if got["checks"] >= 1 and name not in firsts:
                firsts[name] = got
        return len(firsts) == len(ports) + 2

    poll(all_seen, 20, 0.02)
    table = {  # name: status, ready, error must mention
        "real": ("up", True, None),
        "loading": ("up", False, None),
        "masterdown": ("up", False, None),
        "noauth": ("down", None, "noauth"),
        "wrongpass": ("down", None, "wrongpass"),
        "busy": ("down", None, "busy"),
        "garbage": ("down", None, ""),
        "silent": ("down", None, "timeout"),
        "refused": ("down", None, "refused"),
    }
    for name, (status, ready, error) in table.items():
        got = firsts.get(name)
        if got is None:
            check("replies", f"{name}: observed", False, "no check within 20 s")
            continue
        ok = got["status"] == status
        if ready is not None:
            ok = ok and got["ready"] is ready
        if error is None:
            ok = ok and (got["error"] is None or not ready)
        else:
            ok = ok and isinstance(got["error"], str) and error in got["error"].lower()
        check(
            "replies",
            f"{name}: first observation {status}"
            + (f", ready {ready}" if ready is not None else f", error ~{error!r}"),
            ok,
            {k: got[k] for k in ("checks", "status", "ready", "error")},
        )
    time.sleep(1.2)
    steady = agent.instances()
    unchanged = {
        n: steady[n]["status"] for n in table if steady[n]["status"] != table[n][0]
    }
    check("replies", "statuses hold over further checks", not unchanged, unchanged)
    masterdown = node(zk, "/cw-replies/instances/masterdown")
    check(
        "replies",
        "MASTERDOWN published up, not ready",
        masterdown is not None
        and (masterdown[0]["status"], masterdown[0]["ready"]) == ("up", False),
        masterdown and masterdown[0],
    )

    # Nerve: only the up-and-ready instance.
    members = children(zk, "/cw-nerve/svc")
    check(
        "discovery",
        "nerve: only the up and ready instance, named {name}_NNNNNNNNNN",
        len(members) == 1 and re.fullmatch(r"real_\d{10}", members[0]) is not None,
        members,
    )
    if members:
        got = node(zk, f"/cw-nerve/svc/{members[0]}")
        data = got[0] if got else {}
        check(
            "discovery",
            "nerve JSON: host, port, name, labels (role among them)",
            set(data) == {"host", "port", "name", "labels"}
            and data["host"] == LOOPBACK
            and data["port"] == good
            and data["name"] == "real"
            and "master" in json.dumps(data["labels"]),
            data,
        )
    http_routes(agent, table)
    stop.set()
    return agent


def http_routes(agent: Twistd, table: dict[str, tuple[str, Any, Any]]) -> None:
    """Every route, its keys, its parameters."""
    pending = agent.json("/pending")
    check(
        "http",
        "/pending keys",
        set(pending) >= {"count", "oldest_seconds", "checks"},
        sorted(pending),
    )
    stages = set()

    def saw_pending() -> bool:
        got = agent.json("/pending")
        for c in got["checks"]:
            stages.add(c.get("stage"))
            if set(c) >= {"instance", "stage", "age_seconds"} and got["count"] >= 1:
                return True
        return False

    shown = poll(saw_pending, 5, 0.01)
    doubled = []
    for _ in range(40):
        listed = [c["instance"] for c in agent.json("/pending")["checks"]]
        doubled += [n for n in set(listed) if listed.count(n) > 1]
        time.sleep(0.025)
    check(
        "http",
        "at most one check per instance in flight (/pending, 40 looks)",
        not doubled,
        doubled,
    )
    check(
        "http",
        "/pending check entries: instance, stage, age_seconds",
        bool(shown),
        stages,
    )
    check(
        "http",
        "/pending stages among connect/auth/ping/info",
        stages <= {"connect", "auth", "ping", "info"},
        stages,
    )
    everything = agent.json("/instances")["instances"]
    expected_keys = set(INSTANCE_TYPES) | set(HTTP_EXTRA)
    lacking = [
        sorted(expected_keys - set(i)) for i in everything if expected_keys - set(i)
    ]
    check(
        "http",
        "/instances: ZooKeeper fields plus the four counters",
        not lacking and len(everything) == len(table),
        lacking or len(everything),
    )
    up = sorted(i["name"] for i in agent.json("/instances?status=up")["instances"])
    check(
        "http",
        "/instances?status=up",
        up == sorted(n for n, v in table.items() if v[0] == "up"),
        up,
    )
    for query in ("?status=bogus", "?limit=abc", "?limit=-1"):
        status, _, body = agent.http("/instances" + query)
        check(
            "http",
            f"/instances{query}: 400 with a JSON error (README)",
            status == 400 and "error" in json.loads(body or b"{}"),
            (status, body[:100]),
        )
    down = agent.json("/instances?status=down")["instances"]
    want_down = sorted(n for n, v in table.items() if v[0] == "down")
    check(
        "http",
        "/instances?status=down",
        sorted(i["name"] for i in down) == want_down,
        sorted(i["name"] for i in down),
    )
    names = sorted(i["name"] for i in everything)
    page = agent.json(f"/instances?limit=2&after={names[0]}")["instances"]
    check(
        "http",
        "/instances?limit=2&after=NAME",
        [i["name"] for i in page] == names[1:3],
        [i["name"] for i in page],
    )
    status, headers, body = agent.http("/instances/contractwalk-unknown")
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    check(
        "http",
        "/instances/<unknown>: 404 JSON",
        status == 404
        and isinstance(parsed, dict)
        and "json" in headers.get("Content-Type", ""),
        (status, headers.get("Content-Type"), body[:80]),
    )
    one = agent.json("/instances/real")
    check(
        "http",
        "/instances/<name>: one of those",
        one.get("name") == "real" and expected_keys <= set(one),
        sorted(expected_keys - set(one)),
    )
    status, _, body = agent.http("/healthz")
    check(
        "http",
        "/healthz 200 {status: ok}",
        status == 200 and json.loads(body).get("status") == "ok",
        (status, body[:120]),
    )
    stats = agent.json("/debug/stats")
    want = {
        "pending_checks",
        "delayed_calls",
        "open_fds",
        "rss_bytes",
        "gc_objects",
        "ticks",
        "overruns",
        "uptime_seconds",
    }
    check("http", "/debug/stats keys", want <= set(stats), sorted(want - set(stats)))
    status, headers, body = agent.http("/metrics")
    text = body.decode()
    labelled = re.findall(r'[{,]instance="', text)
    check(
        "http",
        "/metrics: Prometheus text, 'name' labels, never 'instance'",
        status == 200
        and re.search(r'name="real",addr="|addr="[^"]*",name="real"', text) is not None
        and not labelled
        and "text/plain" in headers.get("Content-Type", ""),
        (status, headers.get("Content-Type"), len(labelled)),
    )
    status, headers, body = agent.http(
        "/metrics",
        {"Accept": "application/openmetrics-text; version=1.0.0,text/plain;q=0.5"},
    )
    check(
        "http",
        "/metrics: OpenMetrics when asked (Accept)",
        status == 200
        and "openmetrics" in headers.get("Content-Type", "")
        and body.rstrip().endswith(b"# EOF"),
        (status, headers.get("Content-Type"), body[-8:]),
    )
    status, headers, body = agent.http("/group")
    check(
        "http",
        "/group answers JSON",
        status == 200 and body[:1] == b"{",
        (status, sorted(json.loads(body)) if body[:1] == b"{" else body[:60]),
    )
    status, headers, body = agent.http("/")
    check(
        "http",
        "/ an HTML page",
        status == 200 and "html" in headers.get("Content-Type", ""),
        (status, headers.get("Content-Type")),
    )


def reload(
    workdir: Path, zk: KazooClient, hosts: str, redis: list[RedisServer]
) -> None:
    """SIGHUP: added start, removed stop and go, unchanged keep state; bad file."""
    config = workdir / "reload.toml"

    def write(names: Sequence[str], extra: str = "") -> None:
        text = f'interval = 0.5\n[zookeeper]\nhosts = "{hosts}"\nroot = "/cw-reload"\n'
        for i, name in enumerate(names):
            text += f'[[redis]]\nname = "{name}"\nhost = "127.0.0.1"\n'
            text += f"port = {redis[i].port}\n"
        config.write_text(text + extra)

    write(["keep", "drop"])
    agent = Twistd(workdir, "reload", ["--config", str(config), "--agent-id", "reload"])
    check(
        "sighup", "agent starts", agent.wait_answering(), agent.child.why_ended() or ""
    )
    poll(lambda: children(zk, "/cw-reload/instances") == ["drop", "keep"], 20)
    keep_before = agent.json("/instances/keep")
    config.write_text(config.read_text().replace('"drop"', '"added"'))
    os.kill(agent.pid, signal.SIGHUP)
    got = poll(lambda: children(zk, "/cw-reload/instances") == ["added", "keep"], 15)
    check(
        "sighup",
        "added starts, removed stops and its node goes",
        bool(got),
        children(zk, "/cw-reload/instances"),
    )
    keep_after = agent.json("/instances/keep")
    check(
        "sighup",
        "unchanged keeps its state (checks go on, since kept)",
        keep_after["checks"] > keep_before["checks"]
        and keep_after["since"] == keep_before["since"],
        (keep_before["checks"], keep_after["checks"]),
    )
    config.write_text("interval = = broken\n")
    os.kill(agent.pid, signal.SIGHUP)
    time.sleep(1.5)
    check(
        "sighup",
        "invalid file: process runs, old config stays",
        agent.child.running and sorted(agent.instances()) == ["added", "keep"],
        agent.child.running and sorted(agent.instances()),
    )
    # A changed address under the same name, and a new interval.
    config.write_text(
        f'interval = 0.8\n[zookeeper]\nhosts = "{hosts}"\nroot = "/cw-reload"\n'
        f'[[redis]]\nname = "keep"\nhost = "127.0.0.1"\nport = {redis[0].port}\n'
        f'[[redis]]\nname = "added"\nhost = "127.0.0.1"\nport = {redis[2].port}\n'
    )
    os.kill(agent.pid, signal.SIGHUP)
    moved = poll(
        lambda: (
            lambda d: (
                d
                if d and d[0]["port"] == redis[2].port and d[0]["status"] == "up"
                else None
            )
        )(node(zk, "/cw-reload/instances/added")),
        15,
    )
    check(
        "sighup",
        "an instance whose port changed is checked at the new one",
        bool(moved),
        moved and moved[0]["port"],
    )
    interval = poll(
        lambda: (
            (node(zk, "/cw-reload/agents/reload") or [{}])[0].get("interval") == 0.8
        ),
        15,
    )
    check(
        "sighup",
        "a new interval takes effect (agent node interval 0.8)",
        bool(interval),
        (node(zk, "/cw-reload/agents/reload") or [{}])[0].get("interval"),
    )
    status, seconds = agent.signal_and_wait(signal.SIGINT)
    check(
        "signals",
        "SIGINT: stops within 5 s, status 130 (killed by SIGINT, README)",
        by_signal(status, signal.SIGINT) and seconds < 5,
        f"status {status} after {seconds:.2f} s",
    )
    check(
        "signals",
        "SIGINT: nodes gone",
        not children(zk, "/cw-reload/instances"),
        children(zk, "/cw-reload/instances"),
    )


def group(workdir: Path, zk: KazooClient, hosts: str, redis: list[RedisServer]) -> None:
    """
    Three agents, R = 2: primaries, opinions, verdicts schema 2, /group; a
    quorum of downs, a leave and a crash.
    """
    root = "/cw-group"
    text = (
        f'interval = 0.5\n[zookeeper]\nhosts = "{hosts}"\nroot = "{root}"\n'
        "replicas = 2\nsession_timeout = 2.0\n"
    )
    names = [f"g{i}" for i in range(len(redis))]
    for name, server in zip(names, redis, strict=True):
        text += (
            f'[[redis]]\nname = "{name}"\nhost = "127.0.0.1"\nport = {server.port}\n'
        )
    # Catalogs differ: "pair" is known to m0 and m1 only, "solo" to m2 only.
    extra = {
        0: ("pair", redis[2].port),
        1: ("pair", redis[2].port),
        2: ("solo", redis[1].port),
    }
    agents = []
    for i in range(3):
        name, port = extra[i]
        member_config = workdir / f"group{i}.toml"
        member_config.write_text(
            text + f'[[redis]]\nname = "{name}"\nhost = "127.0.0.1"\nport = {port}\n'
        )
        agents.append(
            Twistd(
                workdir,
                f"member{i}",
                ["--config", str(member_config), "--agent-id", f"m{i}"],
            )
        )
    try:
        for agent in agents:
            check(
                "group",
                f"{agent.label} starts",
                agent.wait_answering(),
                agent.child.why_ended() or "",
            )

        def verdicts() -> dict[str, Any] | None:
            found = {}
            for name in names:
                got = node(zk, f"{root}/instances/{name}")
                if got is None or got[0].get("schema") != 2:
                    return None
                # Both observers' first opinions in (null: none yet).
                observers = got[0].get("observers", {})
                if len(observers) != 2 or None in observers.values():
                    return None
                found[name] = got
            return found

        found = poll(verdicts, 30, 0.1)
        check(
            "group",
            "every instance: a schema 2 verdict, 2 observers with opinions",
            bool(found),
            children(zk, f"{root}/instances"),
        )
        if not found:
            return
        owners = {}
        for i in range(3):
            agent_node = node(zk, f"{root}/agents/m{i}")
            owners[f"m{i}"] = agent_node[1].ephemeralOwner if agent_node else None
        for name, (data, znode) in found.items():
            observers = data["observers"]
            opinions = children(zk, f"{root}/opinions/{name}")
            problems = type_errors(data, INSTANCE_TYPES)
            ok = (
                not problems
                and data["quorum"] == 2
                and data["agent"] in observers
                and owners.get(data["agent"]) == znode.ephemeralOwner
                and sorted(observers) == opinions
                and all(v in ("up", "down", None) for v in observers.values())
                and data["status"] == "up"
            )
            check(
                "group",
                f"{name}: verdict by its primary (owner), quorum 2, "
                "opinions of both observers",
                ok,
                {
                    "agent": data["agent"],
                    "observers": observers,
                    "quorum": data["quorum"],
                    "opinions": opinions,
                    "problems": problems,
                },
            )
            opinion = (
                node(zk, f"{root}/opinions/{name}/{opinions[0]}") if opinions else None
            )
            want = {"status", "ready", "role", "error", "latency_ms", "checked_at"}
            check(
                "group",
                f"{name}: opinion node ephemeral with status/ready/role/error/...",
                opinion is not None
                and opinion[1].ephemeralOwner != 0
                and all(any(w.split("_")[0] in k for k in opinion[0]) for w in want),
                opinion and sorted(opinion[0]),
            )
        for name, want in (("pair", ["m0", "m1"]), ("solo", ["m2"])):
            got = poll(
                lambda: (
                    lambda d: (
                        d if d and None not in d[0]["observers"].values() else None
                    )
                )(node(zk, f"{root}/instances/{name}")),  # noqa: B023 (called at once)
                15,
            )
            check(
                "group",
                f"{name}: observed only by the agents that know it {want}",
                bool(got) and sorted(got[0]["observers"]) == want,
                got
                and {k: got[0][k] for k in ("observers", "quorum", "agent", "status")},
            )
        listed = agents[0].json("/instances")["instances"]
        roles = {
            i["name"]: {
                k: v
                for k, v in i.items()
                if k not in INSTANCE_TYPES
                and k not in HTTP_EXTRA
                and isinstance(v, str)
            }
            for i in listed
        }
        check(
            "group",
            "/instances says in which role it observes each",
            all(
                any(v in ("primary", "observer") for v in r.values())
                for r in roles.values()
            ),
            roles,
        )
        observed = sum(len(a.instances()) for a in agents) - 3
        check(
            "group",
            "each agent's /instances lists what it observes (instances x R = 2 in all)",
            observed == 2 * len(names),
            observed,
        )
        status, _, body = agents[0].http("/group")
        check(
            "group",
            "/group answers with the members",
            status == 200 and all(f"m{i}" in body.decode() for i in range(3)),
            (status, body[:300]),
        )
        quorum_down(zk, root, redis[0])
        by_id = {f"m{i}": agent for i, agent in enumerate(agents)}
        for how, signum in (
            ("leave (SIGTERM)", signal.SIGTERM),
            ("crash (SIGKILL)", signal.SIGKILL),
        ):
            primary = node(zk, f"{root}/instances/g1")
            if primary is None:
                check("group", f"{how}: g1 has a verdict", False, "none")
                continue
            victim = by_id.pop(primary[0]["agent"])
            gaps = watch_gaps(
                zk,
                [f"{root}/instances/{n}" for n in names],
                victim,
                signum,
                lambda: all(
                    (node(zk, f"{root}/instances/{n}") or [{}])[0].get("agent") in by_id
                    for n in names
                ),
            )
            if signum == signal.SIGTERM:
                check(
                    "group",
                    f"{how} of g1's primary: every verdict taken over, never missing",
                    gaps["done"] and gaps["missing"] == 0,
                    gaps,
                )
            else:
                check(
                    "group",
                    f"{how} of g1's primary: verdicts back within 1 s of expiry",
                    gaps["done"] and gaps["longest"] <= 1.0,
                    gaps,
                )
    finally:
        for agent in agents:
            agent.stop()


def quorum_down(zk: KazooClient, root: str, server: RedisServer) -> None:
    """g0's server frozen: both observers down, so the verdict is down."""
    path = f"{root}/instances/g0"
    server.pause()
    try:
        got = poll(
            lambda: (lambda d: d if d and d[0]["status"] == "down" else None)(
                node(zk, path)
            ),
            15,
            0.05,
        )
    finally:
        server.resume()
    check(
        "group",
        "quorum 2: both observers down -> verdict down",
        bool(got) and sorted(got[0]["observers"].values()) == ["down", "down"],
        got and {k: got[0][k] for k in ("status", "observers", "quorum", "agent")},
    )
    back = poll(
        lambda: (lambda d: d if d and d[0]["status"] == "up" else None)(node(zk, path)),
        15,
        0.05,
    )
    check(
        "group",
        "verdict up again when an observer is up",
        bool(back),
        back and back[0]["observers"],
    )


def watch_gaps(
    zk: KazooClient,
    paths: list[str],
    victim: Twistd,
    signum: int,
    settled: Callable[[], bool],
    bound: float = 20.0,
) -> dict[str, Any]:
    """Signal `victim`, read `paths` every 20 ms until `settled`: the gaps."""
    os.kill(victim.pid, signum)
    missing, reads, longest = 0, 0, 0.0
    gone_since: dict[str, float] = {}
    deadline = time.monotonic() + bound
    done = False
    while time.monotonic() < deadline:
        for path in paths:
            reads += 1
            now = time.monotonic()
            if zk.exists(path) is None:
                missing += 1
                gone_since.setdefault(path, now)
            elif path in gone_since:
                longest = max(longest, now - gone_since.pop(path))
        if not gone_since and settled():
            done = True
            break
        time.sleep(0.02)
    victim.child.kill()
    return {
        "done": done,
        "missing": missing,
        "reads": reads,
        "longest": round(longest, 2),
    }


def defaults(workdir: Path, zk: KazooClient, hosts: str, port: int) -> None:
    """Defaults: root /sentinel, agent id the host name, interval 1.0; --http none."""
    agent = Twistd(
        workdir, "defaults", ["--redis", f"{LOOPBACK}:{port}", "--zookeeper", hosts]
    )
    check(
        "defaults",
        "agent starts",
        agent.wait_answering(),
        agent.child.why_ended() or "",
    )
    path = f"/sentinel/agents/{socket.gethostname()}"
    instance = poll(lambda: node(zk, f"/sentinel/instances/{LOOPBACK}:{port}"), 20)
    found = node(zk, path)
    check(
        "defaults",
        "root /sentinel, agent id = host name, interval 1.0, schema 1",
        found is not None
        and found[0]["interval"] == 1.0
        and instance is not None
        and instance[0]["schema"] == 1,
        (path, found and found[0]["interval"], instance and instance[0]["schema"]),
    )
    status, seconds = agent.signal_and_wait(signal.SIGTERM)
    check(
        "defaults",
        "SIGTERM: gone within 5 s",
        by_signal(status, signal.SIGTERM)
        and seconds < 5
        and not children(zk, "/sentinel/instances"),
        (status, seconds),
    )
    quiet = Twistd(
        workdir,
        "no-http",
        ["--redis", f"{LOOPBACK}:{port}", "--http", "none"],
        http=False,
    )
    time.sleep(3)
    ports = listening_tcp_ports(quiet.pid) if quiet.child.running else None
    check(
        "defaults",
        "--http none: runs, listens on no port",
        ports == set(),
        quiet.child.why_ended() or ports,
    )
    quiet.stop()


def roles(
    workdir: Path, zk: KazooClient, hosts: str, master: RedisServer, started: ExitStack
) -> None:
    """A replica: role slave with its master; REPLICAOF NO ONE: master, rewritten."""
    replica = RedisServer(extra_args=["--replicaof", LOOPBACK, str(master.port)])
    started.callback(replica.stop)
    replica.start()
    config = workdir / "roles.toml"
    config.write_text(
        "interval = 0.3\ntimeout = 0.2\ninfo_every = 2\n"
        f'[zookeeper]\nhosts = "{hosts}"\n'
        f'root = "/cw-roles"\n[[redis]]\nname = "replica"\nhost = "127.0.0.1"\n'
        f"port = {replica.port}\n"
    )
    agent = Twistd(workdir, "roles", ["--config", str(config), "--agent-id", "roles"])
    check(
        "roles", "agent starts", agent.wait_answering(), agent.child.why_ended() or ""
    )
    path = "/cw-roles/instances/replica"
    slave = poll(
        lambda: (
            lambda d: (
                d
                if d and d[0]["role"] == "slave" and d[0]["master_link_status"] == "up"
                else None
            )
        )(node(zk, path)),
        20,
    )
    check(
        "roles",
        "a replica: role slave, master_host/port, master_link_status up",
        bool(slave)
        and (slave[0]["master_host"], slave[0]["master_port"])
        == (LOOPBACK, master.port),
        slave
        and {
            k: slave[0][k]
            for k in ("role", "master_host", "master_port", "master_link_status")
        },
    )
    subprocess.run(
        [
            "redis-cli",
            "-h",
            LOOPBACK,
            "-p",
            str(replica.port),
            "replicaof",
            "no",
            "one",
        ],
        capture_output=True,
        timeout=10,
    )
    promoted = poll(
        lambda: (lambda d: d if d and d[0]["role"] == "master" else None)(
            node(zk, path)
        ),
        15,
    )
    check(
        "roles",
        "promoted (REPLICAOF NO ONE): node rewritten with role master (info_every 2)",
        bool(promoted) and promoted[0]["master_host"] is None,
        promoted
        and {k: promoted[0][k] for k in ("role", "master_host", "master_port")},
    )
    agent.stop()
    replica.stop()


def auth_acl(workdir: Path, zk: KazooClient, hosts: str, port: int) -> None:
    """zookeeper.auth_file: nodes get world:read and that identity:all."""
    secret = workdir / "zk-auth"
    secret.write_text("walker:s3cret\n")
    secret.chmod(0o600)
    config = workdir / "acl.toml"
    config.write_text(
        f'[zookeeper]\nhosts = "127.0.0.1:{free_port()},{hosts}"\nroot = "/cw-acl"\n'
        f'auth_file = "{secret}"\n'
        f'[[redis]]\nname = "acl"\nhost = "127.0.0.1"\nport = {port}\n'
    )
    agent = Twistd(workdir, "acl", ["--config", str(config), "--agent-id", "acl"])
    check("acl", "agent starts", agent.wait_answering(), agent.child.why_ended() or "")
    found = poll(lambda: node(zk, "/cw-acl/instances/acl"), 20)
    acls = []
    if found:
        acls = sorted(
            f"{a.id.scheme}:{a.id.id.split(':')[0]}:{a.perms}"
            for a in zk.get_acls("/cw-acl/instances/acl")[0]
        )
    check(
        "acl",
        "instance node ACL: world:anyone read, digest walker all",
        acls == ["digest:walker:31", "world:anyone:1"],
        acls,
    )
    agent.stop()


def zookeeper_back(agent: Twistd, zookeeper: ZooKeeperServer, zk: KazooClient) -> None:
    """ZooKeeper started again: /healthz 200, the nodes there (caught up)."""
    zookeeper.start()
    healthy = poll(lambda: agent.http("/healthz")[0] == 200, 30, 0.2)
    check(
        "http",
        "/healthz 200 again once ZooKeeper is back",
        bool(healthy),
        agent.http("/healthz")[2][:200],
    )
    zk_now = KazooClient(hosts=zookeeper.hosts, timeout=10.0)
    zk_now.start(timeout=15.0)
    try:
        there = poll(lambda: len(children(zk_now, "/cw-replies/instances")) == 9, 20)
        check(
            "zookeeper",
            "publication caught up after the outage (all 9 nodes)",
            bool(there),
            children(zk_now, "/cw-replies/instances"),
        )
        nerve = poll(lambda: len(children(zk_now, "/cw-nerve/svc")) == 1, 20)
        check(
            "zookeeper",
            "nerve member there after the outage",
            bool(nerve),
            children(zk_now, "/cw-nerve/svc"),
        )
    finally:
        zk_now.stop()
        zk_now.close()


def frozen_zookeeper(agent: Twistd, zookeeper: ZooKeeperServer) -> None:
    """ZooKeeper frozen (SIGSTOP): checking goes on, on time."""
    before = agent.instances()["real"]["checks"]
    zookeeper.child.pause()
    try:
        time.sleep(3)
        after = agent.instances()["real"]["checks"]
        stats = agent.json("/debug/stats")
    finally:
        zookeeper.child.resume()
    check(
        "zookeeper",
        "frozen ZooKeeper: checks go on (interval 0.5, 3 s: >= 4 more)",
        after - before >= 4,
        f"{after - before} checks; overruns {stats['overruns']}",
    )


def squatter(workdir: Path, zookeeper: ZooKeeperServer, port: int) -> None:
    """Another live session holds an instance node: wait, 503, then take over."""
    other = KazooClient(hosts=zookeeper.hosts, timeout=10.0)
    other.start(timeout=15.0)
    path = "/cw-squat/instances/held1"
    other.create(path, b'{"squatter": true}', ephemeral=True, makepath=True)
    config = workdir / "squat.toml"
    config.write_text(
        f'[zookeeper]\nhosts = "{zookeeper.hosts}"\nroot = "/cw-squat"\n'
        f'[[redis]]\nname = "held1"\nhost = "127.0.0.1"\nport = {port}\n'
    )
    agent = Twistd(workdir, "squat", ["--config", str(config), "--agent-id", "squat"])
    try:
        check(
            "squat",
            "agent starts",
            agent.wait_answering(),
            agent.child.why_ended() or "",
        )
        got = poll(
            lambda: (lambda r: r if r[0] == 503 and b"held1" in r[2] else None)(
                agent.http("/healthz")
            ),
            15,
        )
        check(
            "squat",
            "/healthz 503 naming the node another session holds",
            bool(got),
            got and got[2][:300],
        )
        data, _ = other.get(path)
        check(
            "squat",
            "the other session's node is left alone meanwhile",
            json.loads(data) == {"squatter": True},
            data[:80],
        )
        other.stop()
        other.close()
        took = time.monotonic()
        mine = poll(
            lambda: (lambda d: d if d and d[0].get("agent") == "squat" else None)(
                node_of(zookeeper, path)
            ),
            20,
        )
        check(
            "squat",
            "taken over once the other session goes",
            bool(mine),
            f"after {time.monotonic() - took:.2f} s",
        )
        healthy = poll(lambda: agent.http("/healthz")[0] == 200, 15)
        check(
            "squat",
            "/healthz 200 again",
            bool(healthy),
            agent.http("/healthz")[2][:200],
        )
    finally:
        agent.stop()
        other.stop()
        other.close()


def node_of(zookeeper: ZooKeeperServer, path: str) -> tuple[Any, Any] | None:
    """`node` through a client of its own (the walk's may be busy)."""
    client = KazooClient(hosts=zookeeper.hosts, timeout=10.0)
    client.start(timeout=15.0)
    try:
        return node(client, path)
    finally:
        client.stop()
        client.close()


def stop_without_zookeeper(agent: Twistd, zookeeper: ZooKeeperServer) -> None:
    """SIGTERM with ZooKeeper stopped still ends within 5 s."""
    zookeeper.stop()
    time.sleep(0.5)
    status, seconds = agent.signal_and_wait(signal.SIGTERM)
    check(
        "signals",
        "SIGTERM with ZooKeeper stopped: exit 143 within 5 s",
        by_signal(status, signal.SIGTERM) and seconds < 5,
        f"status {status} after {seconds:.2f} s",
    )


def healthz_without_zookeeper(agent: Twistd, zookeeper: ZooKeeperServer) -> None:
    """/healthz turns 503 with reasons once ZooKeeper stops."""
    zookeeper.stop()
    started = time.monotonic()
    got = poll(
        lambda: (lambda r: r if r[0] == 503 else None)(agent.http("/healthz")), 30, 0.1
    )
    if got:
        body = json.loads(got[2])
        check(
            "http",
            "/healthz 503 with reasons when ZooKeeper stops",
            isinstance(body.get("reasons"), list) and bool(body["reasons"]),
            f"after {time.monotonic() - started:.1f} s: {body}",
        )
    else:
        check(
            "http", "/healthz 503 with reasons when ZooKeeper stops", False, "still 200"
        )


# -- part 2: TLS, ACL users, info_every, a late loop, ZooKeeper wiped ---------


def walk_ages(agent: Twistd, seconds: float) -> list[float]:
    """Every /pending age seen over `seconds` (read every 50 ms)."""
    ages: list[float] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ages += [c["age_seconds"] for c in agent.json("/pending")["checks"]]
        time.sleep(0.05)
    return [a for a in ages if a is not None]


def redis_table(name: str, port: int, extra: str = "") -> str:
    """One ``[[redis]]`` table on the loopback address."""
    return f'[[redis]]\nname = "{name}"\nhost = "127.0.0.1"\nport = {port}\n{extra}'


def tls(workdir: Path, zk: KazooClient, hosts: str, plain: RedisServer) -> None:
    """TLS to Redis: verified, refused for each reason, and mismatched ends."""
    (workdir / "certs").mkdir()
    certs = make_certificates(workdir / "certs")
    open_tls = RedisServer(tls=certs, tls_auth_clients="no")
    asking = RedisServer(tls=certs, tls_auth_clients="yes")
    servers = [open_tls.start(), asking.start()]
    verified = f'tls = true\nca_file = "{certs.ca_file}"\nserver_name = "localhost"\n'
    client = f'cert_file = "{certs.client_cert_file}"\n'
    client += f'key_file = "{certs.client_key_file}"\n'
    tables = {
        "tls-ok": (open_tls.port, verified),
        "tls-other-ca": (
            open_tls.port,
            f'tls = true\nca_file = "{certs.other_ca_file}"\n'
            'server_name = "localhost"\n',
        ),
        "tls-wrong-name": (
            open_tls.port,
            verified.replace('"localhost"', '"wrong.example"'),
        ),
        "tls-no-client-cert": (asking.port, verified),
        "tls-client-cert": (asking.port, verified + client),
        "plain-to-tls-port": (open_tls.port, ""),
        "tls-to-plain-port": (plain.port, verified),
    }
    config = workdir / "tls.toml"
    config.write_text(
        f'interval = 1.0\ntimeout = 0.5\n[zookeeper]\nhosts = "{hosts}"\n'
        'root = "/cw-tls"\n'
        + "".join(redis_table(n, p, extra) for n, (p, extra) in tables.items())
    )
    agent = Twistd(workdir, "tls", ["--config", str(config), "--agent-id", "tls"])
    try:
        check("tls", "agent starts", agent.wait_answering(), agent.child.why_ended())
        seen = poll(
            lambda: (
                lambda i: (
                    i
                    if len(i) == len(tables)
                    and all(d["checks"] >= 2 for d in i.values())
                    else None
                )
            )(agent.instances()),
            20,
        )
        seen = seen or agent.instances()
        ages = walk_ages(agent, 3.0)
        nodes = {n: node(zk, f"/cw-tls/instances/{n}") for n in tables}
        for name in ("tls-ok", "tls-client-cert"):
            data = nodes[name]
            check(
                "tls",
                f"{name}: up when the certificate verifies",
                bool(data) and data[0]["status"] == "up" and data[0]["error"] is None,
                data and {k: data[0][k] for k in ("status", "error")},
            )
        for name in tables:
            if name in ("tls-ok", "tls-client-cert"):
                continue
            data = nodes[name]
            error = data[0]["error"] if data else None
            check(
                "tls",
                f"{name}: down, one-line error",
                bool(data)
                and data[0]["status"] == "down"
                and isinstance(error, str)
                and bool(error)
                and "\n" not in error,
                error,
            )
        check(
            "tls",
            "every check, TLS or mismatched, ends within the timeout (0.5 s)",
            bool(ages) and max(ages) < 0.5 + 0.25,
            f"{len(ages)} pending ages read, max {max(ages or [0]):.3f} s",
        )
    finally:
        agent.stop()
        for server in servers:
            server.stop()


ACL_PASSWORDS = {"alice": "al1ce-s3cret", "bob": "b0b-s3cret", "wrong": "n0t-alices"}


def acl_users(workdir: Path, zk: KazooClient, hosts: str) -> None:
    """username + password_file: right, wrong, disabled; no password shown."""
    server = RedisServer(
        extra_args=[
            "--user", "alice", "on", ">" + ACL_PASSWORDS["alice"], "+@all", "~*",
            "--user", "bob", "off", ">" + ACL_PASSWORDS["bob"], "+@all", "~*",
        ]
    )  # fmt: skip
    server.start()
    files = {}
    for who, password in ACL_PASSWORDS.items():
        files[who] = workdir / f"acl-{who}.pw"
        files[who].write_text(password + "\n")
    config = workdir / "acl.toml"
    config.write_text(
        f'interval = 0.5\n[zookeeper]\nhosts = "{hosts}"\nroot = "/cw-acl"\n'
        + redis_table(
            "acl-right",
            server.port,
            f'username = "alice"\npassword_file = "{files["alice"]}"\n',
        )
        + redis_table(
            "acl-wrong",
            server.port,
            f'username = "alice"\npassword_file = "{files["wrong"]}"\n',
        )
        + redis_table(
            "acl-disabled",
            server.port,
            f'username = "bob"\npassword_file = "{files["bob"]}"\n',
        )
    )
    agent = Twistd(workdir, "acl", ["--config", str(config), "--agent-id", "acl"])
    try:
        check("acl", "agent starts", agent.wait_answering(), agent.child.why_ended())
        poll(lambda: len(children(zk, "/cw-acl/instances")) == 3, 20)
        time.sleep(1.5)
        want = {
            "acl-right": ("up", None),
            "acl-wrong": ("down", "WRONGPASS"),
            "acl-disabled": ("down", "WRONGPASS"),
        }
        for name, (status, error) in want.items():
            data = node(zk, f"/cw-acl/instances/{name}")
            got = data and (data[0]["status"], data[0]["error"])
            check(
                "acl",
                f"{name}: {status}" + (f", error names {error}" if error else ""),
                bool(got)
                and got[0] == status
                and (got[1] is None if error is None else error in (got[1] or "")),
                got,
            )
        # The wrong file now holds alice's password: read again on SIGHUP
        # (README). Everything the agent shows, then its log, after it.
        files["wrong"].write_text(ACL_PASSWORDS["alice"] + "\n")
        os.kill(agent.pid, signal.SIGHUP)
        fixed = poll(
            lambda: (
                (node(zk, "/cw-acl/instances/acl-wrong") or [{}])[0].get("status")
                == "up"
            ),
            15,
        )
        check(
            "acl",
            "password_file corrected, SIGHUP: that instance up",
            bool(fixed),
            (node(zk, "/cw-acl/instances/acl-wrong") or [{}])[0].get("error"),
        )
        shown = [agent.http(path)[2] for path in (
            "/instances", "/instances/acl-right", "/instances/acl-wrong",
            "/pending", "/healthz", "/debug/stats", "/metrics", "/group", "/",
        )]  # fmt: skip
        shown.append(
            agent.http("/metrics", {"Accept": "application/openmetrics-text"})[2]
        )
        for path in ["/cw-acl/agents/acl"] + [f"/cw-acl/instances/{n}" for n in want]:
            try:
                shown.append(zk.get(path)[0])
            except NoNodeError:
                pass
        text = b"\n".join(shown).decode(errors="replace")
        log = agent.log.read_text(errors="replace")
        leaked = [w for w, p in ACL_PASSWORDS.items() if p in text]
        check(
            "acl",
            "no password in any node, HTTP answer or metric",
            not leaked,
            f"{len(text)} characters read; found: {leaked}",
        )
        leaked = [w for w, p in ACL_PASSWORDS.items() if p in log]
        check(
            "acl",
            "no password in the agent's log",
            not leaked,
            f"{log.count(chr(10))} lines; found: {leaked}",
        )
    finally:
        agent.stop()
        server.stop()


def redis_cli(server: RedisServer, *args: str) -> str:
    """A redis-cli command's output against `server`."""
    return subprocess.run(
        ["redis-cli", "-h", LOOPBACK, "-p", str(server.port), *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout


def monitor_commands(
    server: RedisServer, lines: list[str], stop: threading.Event, password: str = ""
) -> None:
    """Append what MONITOR shows of `server` to `lines` until `stop`."""
    with socket.create_connection((LOOPBACK, server.port), timeout=0.2) as conn:
        if password:
            conn.sendall(b"AUTH %s\r\n" % password.encode())
        conn.sendall(b"MONITOR\r\n")
        buffer = b""
        while not stop.is_set():
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            *whole, buffer = buffer.split(b"\r\n")
            lines += [w.decode(errors="replace") for w in whole]


def by_check(lines: list[str]) -> list[set[str]]:
    """MONITOR lines grouped into checks (a gap of 0.1 s parts two), commands."""
    groups: list[set[str]] = []
    last = None
    for line in lines:
        match = re.match(r'\+?([0-9.]+) \[[^]]*\] "(\w+)"', line)
        if not match:
            continue
        at = float(match.group(1))
        if last is None or at - last > 0.1:
            groups.append(set())
        groups[-1].add(match.group(2).upper())
        last = at
    return groups


def info_every(workdir: Path) -> None:
    """INFO replication every N checks, and on a change to up (MONITOR)."""
    server = RedisServer().start()
    config_every = 5
    # info_every has no command line option: a TOML file with only it.
    config = workdir / "info.toml"
    config.write_text(f"info_every = {config_every}\n")
    agent = Twistd(workdir, "info", [
        "--config", str(config), "--redis", f"i={LOOPBACK}:{server.port}",
        "--interval", "0.25", "--timeout", "0.2", "--rise", "2",
    ])  # fmt: skip
    lines: list[str] = []
    stop = threading.Event()
    watcher = threading.Thread(
        target=monitor_commands, args=(server, lines, stop), daemon=True
    )
    try:
        check("info_every", "agent starts", agent.wait_answering(),
              agent.child.why_ended())  # fmt: skip
        poll(lambda: agent.json("/instances/i").get("status") == "up", 15)
        watcher.start()
        time.sleep(6.0)
        steady = [c for c in by_check(lines) if "PING" in c]
        pings = len(steady)
        infos = sum("INFO" in c for c in steady)
        check(
            "info_every",
            f"info_every = {config_every}: INFO replication every "
            f"{config_every} checks when up",
            pings >= 10 and abs(infos - pings / config_every) <= 1.5,
            f"{pings} checks, {infos} with INFO in 6 s",
        )
        # Down by NOAUTH (its connection killed), then up again: MONITOR
        # sees no backlog of a paused server. The kill takes the walk's
        # MONITOR too (a normal client to Redis): a new one watches.
        redis_cli(server, "CONFIG", "SET", "requirepass", "walk-pw")
        redis_cli(server, "-a", "walk-pw", "--no-auth-warning", "CLIENT", "KILL",
                  "TYPE", "normal")  # fmt: skip
        stop.set()
        watcher.join(5)
        poll(lambda: agent.json("/instances/i").get("status") == "down", 10)
        lines.clear()
        stop = threading.Event()
        watcher = threading.Thread(
            target=monitor_commands,
            args=(server, lines, stop, "walk-pw"),
            daemon=True,
        )
        watcher.start()
        time.sleep(0.3)
        lines.clear()  # +OK of AUTH and MONITOR
        redis_cli(server, "-a", "walk-pw", "--no-auth-warning", "CONFIG", "SET",
                  "requirepass", "")  # fmt: skip
        up = poll(lambda: agent.json("/instances/i").get("status") == "up", 10, 0.02)
        time.sleep(0.5)
        checks_info = [("INFO" in c) for c in by_check(lines) if "PING" in c]
        check(
            "info_every",
            "INFO on the change to up (every check until up sends INFO)",
            bool(up) and len(checks_info) >= 2 and all(checks_info[:2]),
            f"checks once the password went, INFO with each: {checks_info[:8]}",
        )
    finally:
        stop.set()
        agent.stop()
        server.stop()


def healthz_late(workdir: Path, port: int) -> None:
    """/healthz read at once after the agent stalled over 2 x interval."""
    agent = Twistd(workdir, "late", [
        "--redis", f"{LOOPBACK}:{port}", "--interval", "0.5", "--timeout", "0.3",
    ])  # fmt: skip
    try:
        check("healthz", "agent starts", agent.wait_answering(),
              agent.child.why_ended())  # fmt: skip
        poll(lambda: agent.http("/healthz")[0] == 200, 10)
        # A connection kept open from before, as a load balancer's: the
        # request sent while the agent is stopped waits to be read.
        ticks = agent.json("/debug/stats")["ticks"]
        kept = http.client.HTTPConnection(LOOPBACK, agent.http_port, timeout=15)
        kept.request("GET", "/healthz")
        kept.getresponse().read()
        os.kill(agent.pid, signal.SIGSTOP)
        time.sleep(2.5)
        kept.request("GET", "/debug/stats")
        os.kill(agent.pid, signal.SIGCONT)
        response = kept.getresponse()
        first = json.loads(response.read())["ticks"]
        kept.request("GET", "/healthz")
        response = kept.getresponse()
        answer = (response.status, response.read()[:120])
        kept.close()
        # On SIGCONT epoll_wait returns EINTR (man 7 signal), and Twisted
        # runs the overdue tick before it reads any socket: the first read
        # finds the loop ticked just now, which the contract calls healthy.
        check(
            "healthz",
            "after SIGSTOP 2.5 s (interval 0.5): the loop ticks at once on "
            "SIGCONT, before any request is read; /healthz 200",
            first > ticks and answer[0] == 200,
            f"ticks {ticks} before, {first} at the first read; {answer}",
        )
    finally:
        agent.stop()


def zookeeper_never(workdir: Path, port: int) -> None:
    """
    ZooKeeper configured but not reachable at start: /healthz 503, checks go
    on; once a ZooKeeper listens there, every node is published.
    """
    later = ZooKeeperServer()
    agent = Twistd(workdir, "nozk", [
        "--redis", f"{LOOPBACK}:{port}", "--zookeeper", later.hosts,
        "--agent-id", "nozk",
    ])  # fmt: skip
    try:
        check("healthz", "agent with an unreachable ZooKeeper starts",
              agent.wait_answering(), agent.child.why_ended())  # fmt: skip
        status, _, body = agent.http("/healthz")
        reasons = json.loads(body).get("reasons") or []
        check(
            "healthz",
            "ZooKeeper never reachable: 503 naming ZooKeeper",
            status == 503 and any("zookeeper" in r.lower() for r in reasons),
            (status, reasons),
        )
        up = poll(
            lambda: [i for i in agent.json("/instances")["instances"] if i["checks"]],
            10,
        )
        check(
            "healthz",
            "and checks go on meanwhile",
            bool(up) and up[0]["checks"] >= 1,
            up and {k: up[0][k] for k in ("status", "checks")},
        )
        later.start()
        started = time.monotonic()
        paths = [f"/sentinel/instances/{LOOPBACK}:{port}", "/sentinel/agents/nozk"]
        there = poll(lambda: all(node_of(later, p) for p in paths), 30, 0.2)
        healthy = poll(lambda: agent.http("/healthz")[0] == 200, 30, 0.2)
        check(
            "healthz",
            "ZooKeeper there at last: every node published, /healthz 200",
            bool(there) and bool(healthy),
            f"after {time.monotonic() - started:.1f} s: "
            f"{agent.http('/healthz')[2][:160]!r}",
        )
    finally:
        agent.stop()
        later.close()


def rewrite_gaps(
    zookeeper: ZooKeeperServer, path: str, field: str, seconds: float
) -> list[float]:
    """Gaps between the values of `field` in `path`'s rewrites over `seconds`."""
    client = KazooClient(hosts=zookeeper.hosts, timeout=10.0)
    client.start(timeout=15.0)
    seen: list[float] = []
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            got = node(client, path)
            if got and (not seen or got[0][field] != seen[-1]):
                seen.append(got[0][field])
            time.sleep(0.1)
    finally:
        client.stop()
        client.close()
    return [b - a for a, b in zip(seen, seen[1:], strict=False)]


def zookeeper_keys(workdir: Path, zookeeper: ZooKeeperServer, port: int) -> None:
    """refresh, heartbeat, session_timeout, a chroot root, agent_id: timed."""
    config = workdir / "zkkeys.toml"
    config.write_text(
        f'interval = 0.5\nagent_id = "keys"\n[zookeeper]\n'
        f'hosts = "{zookeeper.hosts}/app"\nroot = "/keys"\nrefresh = 3\n'
        "heartbeat = 1.5\nsession_timeout = 6.0\n" + redis_table("k", port)
    )
    agent = Twistd(workdir, "zkkeys", ["--config", str(config)])
    try:
        check("zookeeper", "agent starts", agent.wait_answering(),
              agent.child.why_ended())  # fmt: skip
        there = poll(lambda: node_of(zookeeper, "/app/keys/instances/k"), 20)
        check(
            "zookeeper",
            "hosts with /app: nodes under /app/keys, agent_id names its node",
            bool(there) and node_of(zookeeper, "/app/keys/agents/keys") is not None,
            "/app/keys/instances/k, /app/keys/agents/keys",
        )
        for key, every, path, field in (
            ("refresh", 3.0, "/app/keys/instances/k", "checked_at"),
            ("heartbeat", 1.5, "/app/keys/agents/keys", "heartbeat_at"),
        ):
            gaps = rewrite_gaps(zookeeper, path, field, 3.5 * every)
            check(
                "zookeeper",
                f"{key} = {every:g}: {path} rewritten every {every:g} s",
                len(gaps) >= 2 and all(0.8 * every <= g <= every + 0.6 for g in gaps),
                [round(g, 2) for g in gaps],
            )
        session_timeout_asked(
            zookeeper, "zookeeper", "session_timeout = 6.0 requested (cons to=6000)", 6
        )
    finally:
        agent.stop()


def reload_more(
    workdir: Path, zk: KazooClient, hosts: str, redis: list[RedisServer]
) -> None:
    """SIGHUP: a table's port in place, the timeout, a file gone unreadable."""
    config = workdir / "reload2.toml"

    def write(port: int, timeout: float) -> None:
        config.write_text(
            f'interval = 1.0\ntimeout = {timeout}\n[zookeeper]\nhosts = "{hosts}"\n'
            'root = "/cw-reload2"\n' + redis_table("r", port)
        )

    write(redis[0].port, 0.9)
    agent = Twistd(workdir, "reload2", ["--config", str(config)])
    path = "/cw-reload2/instances/r"
    try:
        check("sighup", "agent starts", agent.wait_answering(), agent.child.why_ended())
        poll(lambda: (node(zk, path) or [{}])[0].get("status") == "up", 15)
        write(redis[1].port, 0.9)
        os.kill(agent.pid, signal.SIGHUP)

        def moved_up() -> bool:
            data = node(zk, path)
            return (
                bool(data)
                and data[0]["port"] == redis[1].port
                and (data[0]["status"] == "up")
            )

        moved = poll(moved_up, 15)
        check(
            "sighup",
            "same name, new port in place: its node's port follows, up",
            bool(moved),
            (node(zk, path) or [{}])[0].get("port"),
        )
        # The timeout, read off the age of checks on a paused server.
        redis[1].pause()
        try:
            before = max(walk_ages(agent, 3.0) or [0])
            write(redis[1].port, 0.2)
            os.kill(agent.pid, signal.SIGHUP)
            # A reload reads the file once it has kept still (README).
            poll(lambda: "timeout 0.9 -> 0.2" in agent.log.read_text(), 15, 0.1)
            # A check started before the reload keeps its deadline.
            time.sleep(1.5)
            after = max(walk_ages(agent, 3.0) or [0])
        finally:
            redis[1].resume()
        check(
            "sighup",
            "timeout 0.9 -> 0.2: checks pending no longer than 0.2 s",
            before > 0.5 and after < 0.2 + 0.25,
            f"max pending age {before:.2f} s before, {after:.2f} s after",
        )
        poll(lambda: (node(zk, path) or [{}])[0].get("status") == "up", 15)
        for how in ("deleted", "a directory"):
            config.unlink(missing_ok=True)
            if how == "a directory":
                config.mkdir()
            lines = agent.log.read_text(errors="replace").count("\n")
            os.kill(agent.pid, signal.SIGHUP)

            def said_so(skip: int = lines) -> list[str]:
                new = agent.log.read_text(errors="replace").splitlines()[skip:]
                return [ln for ln in new if "reload2.toml" in ln]

            said = poll(said_so, 15, 0.1) or []
            check(
                "sighup",
                f"config file {how}: runs on with the old config, one log line",
                agent.child.running
                and sorted(agent.instances()) == ["r"]
                and (node(zk, path) or [{}])[0].get("port") == redis[1].port
                and len(said) >= 1,
                said[-1][-160:] if said else "no log line",
            )
            if how == "a directory":
                config.rmdir()
    finally:
        agent.stop()


def zookeeper_wiped(workdir: Path, zookeeper: ZooKeeperServer, port: int) -> None:
    """
    ZooKeeper stopped, wiped, started again on its port: every node back,
    after an outage shorter than the session timeout (4 s) and a longer one.
    """
    agent = Twistd(workdir, "wiped", [
        "--redis", f"a={LOOPBACK}:{port}", "--redis", f"b={LOOPBACK}:{port}",
        "--zookeeper", zookeeper.hosts, "--zk-root", "/wiped", "--agent-id", "w",
        "--zk-session-timeout", "4",
    ])  # fmt: skip
    paths = ["/wiped/instances/a", "/wiped/instances/b", "/wiped/agents/w"]
    try:
        check("wiped", "agent starts", agent.wait_answering(), agent.child.why_ended())
        poll(lambda: all(node_of(zookeeper, p) for p in paths), 20, 0.2)
        for away in (2.0, 6.0):
            zookeeper.stop()
            zookeeper.wipe()
            time.sleep(away)
            zookeeper.start()
            started = time.monotonic()
            back = poll(lambda: all(node_of(zookeeper, p) for p in paths), 60, 0.2)
            check(
                "wiped",
                f"away {away:g} s, back empty: every node back",
                bool(back),
                f"after {time.monotonic() - started:.1f} s: "
                f"{[p for p in paths if node_of(zookeeper, p)]}",
            )
            healthy = poll(lambda: agent.http("/healthz")[0] == 200, 30, 0.2)
            check(
                "wiped",
                f"away {away:g} s, back empty: /healthz 200 again",
                bool(healthy),
                f"after {time.monotonic() - started:.1f} s: "
                f"{agent.http('/healthz')[2][:160]!r}",
            )
    finally:
        agent.stop()


def part_two(
    workdir: Path, zookeeper: ZooKeeperServer, zk: KazooClient, redis: list[RedisServer]
) -> None:
    """What the first walk left out."""
    tls(workdir, zk, zookeeper.hosts, redis[0])
    acl_users(workdir, zk, zookeeper.hosts)
    info_every(workdir)
    healthz_late(workdir, redis[2].port)
    zookeeper_never(workdir, redis[2].port)
    zookeeper_keys(workdir, zookeeper, redis[2].port)
    reload_more(workdir, zk, zookeeper.hosts, redis)
    zookeeper_wiped(workdir, zookeeper, redis[2].port)


def part_one(workdir: Path, started: ExitStack, redis: list[RedisServer]) -> None:
    """The first walk: options, replies, layout, HTTP, signals, groups."""
    locked = RedisServer(password="sesame")
    started.callback(locked.stop)
    locked.start()
    zookeeper, zk = start_zookeeper(started)
    good = f"{LOOPBACK}:{redis[0].port}"
    invalid_inputs(workdir, good)
    options(workdir, zk, zookeeper, [redis[0], redis[1], locked])
    replies_agent = replies(workdir, zk, zookeeper.hosts, redis[1].port)
    started.callback(replies_agent.stop)
    reload(workdir, zk, zookeeper.hosts, redis)
    group(workdir, zk, zookeeper.hosts, redis)
    defaults(workdir, zk, zookeeper.hosts, redis[2].port)
    auth_acl(workdir, zk, zookeeper.hosts, redis[2].port)
    roles(workdir, zk, zookeeper.hosts, redis[2], started)
    squatter(workdir, zookeeper, redis[2].port)
    frozen_zookeeper(replies_agent, zookeeper)
    healthz_without_zookeeper(replies_agent, zookeeper)
    zookeeper_back(replies_agent, zookeeper, zk)
    stop_without_zookeeper(replies_agent, zookeeper)


def tracebacks_and_sum_up(workdir: Path, began: float) -> NoReturn:
    """A check per agent log with a traceback; how many passed; the exit."""
    check_logs(workdir)
    sum_up(began)


def main() -> None:
    """Start the servers, walk the contract, stop everything, sum up."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--part",
        choices=["1", "2", "all"],
        default="all",
        help="1: the first walk; 2: TLS, ACL users, info_every, a late loop, "
        "ZooKeeper keys, reloads, a wiped ZooKeeper (default: all)",
    )
    part = parser.parse_args().part
    stop_on_sigterm()
    # The walk's own clients lose ZooKeeper on purpose: no chatter.
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)
    began = time.monotonic()
    print(f"# {machine()}\n# load {load_average()}", flush=True)
    with ExitStack() as started, tempfile.TemporaryDirectory(prefix="contract-") as tmp:
        workdir = Path(tmp)
        started.callback(lambda: [agent.stop() for agent in AGENTS])
        redis = start_redis_servers(3, started)
        if part in ("2", "all"):
            zookeeper, zk = start_zookeeper(started)
            part_two(workdir, zookeeper, zk, redis)
        if part in ("1", "all"):
            part_one(workdir, started, redis)
        check_logs(workdir)
    sum_up(began)


def check_logs(workdir: Path) -> None:
    """A failed check for each agent log in `workdir` with a traceback."""
    for log in sorted(workdir.glob("*.log")):
        tracebacks = log.read_text(errors="replace").count("Traceback")
        if tracebacks:
            check(
                "logs", f"{log.name}: no traceback", False, f"{tracebacks} tracebacks"
            )


def sum_up(began: float) -> NoReturn:
    """Print how many checks passed since `began`; exit 1 if any failed."""
    failed = [what for ok, what in RESULTS if not ok]
    print(
        f"# {len(RESULTS) - len(failed)} of {len(RESULTS)} checks passed in "
        f"{time.monotonic() - began:.0f} s, load {load_average()}",
        flush=True,
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

"""
The ``state_dir``'s session file replaced between two processes
(DESIGN.md section 2.5): what the next start does with it.

One agent (``twistd -n sentinel``, a real ZooKeeper, one redis-server)
with a ``state_dir`` runs until its instance is up, and is stopped with
SIGTERM (its session kept for the next process). Then, for each of
``--kinds``, the session file is replaced by it and the agent started
again, for at most ``--wait`` seconds:

- ``fifo``: a FIFO, which an ``open()`` for reading waits on for good;
- ``zero``: a symbolic link to ``/dev/zero``, which a ``read()`` never ends;
- ``huge``: a sparse file of 1 GB;
- ``random``: 4 KB of random bytes.

Printed for each: whether the process exited (its status) or answered
``/debug/stats`` and how soon, its RSS, ``/healthz``, its instance's
status, and the log lines that name the state file.

With ``--while-running``, the file is replaced while the agent runs
instead: for each kind, an agent on a ``state_dir`` of its own is let
come up, the file replaced, ``/healthz`` read each second for
``--settle`` seconds (past a heartbeat, at which the agent reads the
file again), then the agent stopped with SIGTERM and started again.
Printed: ``/healthz`` at the end, what stands at the file's path then,
how soon the stop ended, the log lines about the state file and the
session, and whether the next start reattached to the session (its
first ``new ZooKeeper session`` line, or none) or exited.

    .venv/bin/python benchmarks/statefile.py [--kinds fifo,zero,huge] [--wait 20]
        [--while-running] [--settle 12]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import urllib.error
from contextlib import ExitStack
from pathlib import Path

from common import (
    Agent,
    Instance,
    agent_config,
    load_average,
    start_redis_servers,
    start_zookeeper,
    stop_on_sigterm,
    table,
    wait_until,
)

KINDS = ("fifo", "zero", "huge", "random")
STATE_FILE = "zookeeper-session.json"


def replace(path: Path, kind: str) -> None:
    """Put `kind` where the session file was."""
    if path.exists() or path.is_symlink():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path, 0o600)
    elif kind == "zero":
        path.symlink_to("/dev/zero")
    elif kind == "huge":
        with open(path, "wb") as f:
            f.truncate(1 << 30)
        path.chmod(0o600)
    else:
        path.write_bytes(os.urandom(4096))
        path.chmod(0o600)


def healthz(agent: Agent) -> str:
    """/healthz's code and body, on one line."""
    try:
        return f"200 {agent.get('/healthz')}"
    except urllib.error.HTTPError as e:
        return f"{e.code} {e.read().decode('utf-8', 'replace')}".replace("\n", " ")


def is_up(agent: Agent) -> bool:
    """Whether the agent shows its instance up (404 until the group gives it)."""
    try:
        return bool(agent.get("/instances/cache")["status"] == "up")
    except (OSError, ValueError):
        return False


def one_start(
    workdir: Path, config: str, kind: str, wait: float
) -> list[tuple[str, str]]:
    """The agent started on a state file of `kind`: what it did."""
    replace(workdir / "state" / STATE_FILE, kind)
    label = f"after-{kind}"
    agent = Agent(workdir, config, label=label)
    began = time.monotonic()
    rows = [("load", load_average())]
    try:
        while time.monotonic() - began < wait:
            if not agent.child.running:
                status = agent.child.process.wait()
                rows.append(
                    (
                        "exited",
                        f"status {status} after {time.monotonic() - began:.1f} s",
                    )
                )  # noqa: E501
                break
            try:
                agent.get("/debug/stats", timeout=1.0)
            except (OSError, ValueError):
                time.sleep(0.1)
                continue
            rows.append(("answered after", f"{time.monotonic() - began:.1f} s"))
            wait_until(lambda: is_up(agent), wait, "up")
            rows += [
                ("up after", f"{time.monotonic() - began:.1f} s"),
                ("RSS", f"{agent.rss_bytes() / 2**20:.0f} MB"),
                ("/healthz", healthz(agent)[:300]),
            ]
            break
        else:
            rows += [
                ("neither exited nor answered within", f"{wait:g} s"),
                ("RSS", f"{agent.rss_bytes() / 2**20:.0f} MB"),
            ]
    finally:
        agent.stop()
    return rows + session_lines(agent)


def what_stands(path: Path) -> str:
    """What is at `path`: a link, a FIFO, a file and its size, or nothing."""
    if path.is_symlink():
        return "a symbolic link"
    if not path.exists():
        return "nothing"
    if not path.is_file():
        return "not a regular file"
    return f"a file of {path.stat().st_size} bytes"


def session_lines(agent: Agent) -> list[tuple[str, str]]:
    """The log lines of `agent` about the state file or the session."""
    rows = []
    for line in agent.log.read_text(errors="replace").splitlines():
        if "state" in line.lower() or "session" in line.lower():
            # A refused start's one line has no log prefix.
            rows.append(("log", (line.partition("] ")[2] or line)[:240]))
    return rows


def replaced_while_running(
    workdir: Path, body: str, kind: str, options: argparse.Namespace
) -> list[tuple[str, str]]:
    """`kind` put in place of the file of a running agent, a stop, a start."""
    state = workdir / f"state-{kind}"
    state.mkdir(mode=0o700)
    config = f'state_dir = "{state}"\n{body}'
    agent = Agent(workdir, config, label=f"running-{kind}")
    rows = [("load", load_average())]
    try:
        agent.wait_ready()
        wait_until(lambda: is_up(agent), 30, "up")
        replace(state / STATE_FILE, kind)
        time.sleep(options.settle)
        rows += [
            ("/healthz then", healthz(agent)[:300]),
            ("at the path then", what_stands(state / STATE_FILE)),
        ]
        began = time.monotonic()
        agent.child.process.terminate()
        status = agent.child.process.wait(timeout=15)
        rows.append(
            ("SIGTERM", f"status {status} after {time.monotonic() - began:.2f} s")
        )
    finally:
        agent.stop()
    rows += session_lines(agent)
    again = Agent(workdir, config, label=f"again-{kind}")
    try:
        wait_until(lambda: not again.child.running or is_up(again), options.wait, "up")
    finally:
        again.stop()
    opened = [
        text
        for _, text in session_lines(again)
        if "new ZooKeeper session" in text or "state_dir" in text
    ]
    rows.append(("next start", opened[0] if opened else "reattached (no new session)"))
    return rows


def main() -> None:
    """Start, stop, replace, start again; one table per kind."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--wait", type=float, default=20.0)
    parser.add_argument("--while-running", action="store_true")
    parser.add_argument("--settle", type=float, default=12.0)
    options = parser.parse_args()
    stop_on_sigterm()
    with ExitStack() as started, tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        zookeeper, _ = start_zookeeper(started)
        server = start_redis_servers(1, started)[0]
        body = agent_config([Instance("cache", server.port)], zookeeper=zookeeper.hosts)
        if options.while_running:
            for kind in options.kinds.split(","):
                rows = replaced_while_running(workdir, body, kind, options)
                print(table(rows, f"state file, while running: {kind}"), flush=True)
            return
        (workdir / "state").mkdir(mode=0o700)
        config = f'state_dir = "{workdir / "state"}"\n{body}'
        first = Agent(workdir, config, label="first")
        try:
            first.wait_ready()
            wait_until(lambda: is_up(first), 30, "up")
        finally:
            first.stop()
        for kind in options.kinds.split(","):
            rows = one_start(workdir, config, kind, options.wait)
            print(table(rows, f"state file: {kind}"), flush=True)


if __name__ == "__main__":
    main()

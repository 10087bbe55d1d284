"""
Hostile peers, round 23: a server that quotes the password, a bulk length
of 4,000 digits, a squatter's instance node the agent may not read.

For each ``--checkout`` (in turns, ``--runs`` times), one ``twistd -n
sentinel`` agent with a real ZooKeeper (a root per run) watches three
instances:

- ``ok``: a healthy redis-server;
- ``echo``: a redis-server started with ``--rename-command AUTH ""``,
  configured with ``username`` and ``password_file``: it answers AUTH as
  an unknown command, quoting its arguments (Redis 7's words);
- ``biglength``: a server answering every command ``$`` and 4,000 nines.

Printed for each run: where the password shows (the ``echo`` error on
``/instances``, its ZooKeeper node, the status page, the agent's log), how
long the ``biglength`` error is in its node, then the squatter: a kazoo
client with a digest identity of its own deletes ``ok``'s node and makes
its own there, ephemeral, readable only by that identity (without
``zookeeper.auth_file`` any client may). ``/healthz`` is read every
0.1 s: how long until it first says 503, and why; then the squatter's
session ends, and how long until ``/healthz`` is 200 again with the node
the agent's. Last, the agent's RSS, open files, threads, overruns and the
healthy instance's checks and failures.

    .venv/bin/python benchmarks/hostile23.py --checkout before=<main> \\
        --checkout after=. [--runs 1]
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path

from common import (
    LOOPBACK,
    Agent,
    add_checkout_option,
    load_average,
    rows_in_turns,
    start_redis_servers,
    start_zookeeper,
    table,
    wait_until,
)
from kazoo.client import KazooClient
from kazoo.security import make_digest_acl

PASSWORD = "hunter2-s3cret-h23"
USERNAME = "watcher"
BIG_LENGTH = b"$" + b"9" * 4000 + b"\r\n"
# How long /healthz is watched after the squatter's create.
SQUAT_WATCH = 10.0


def serve_big_length(started: ExitStack) -> int:
    """A server answering every read with `BIG_LENGTH`; its port."""
    listener = socket.create_server((LOOPBACK, 0))
    started.callback(listener.close)

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                while conn.recv(65536):
                    conn.sendall(BIG_LENGTH)
            except OSError:
                pass

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    port: int = listener.getsockname()[1]
    return port


def config_text(root: str, hosts: str, ports: dict[str, int], secret: Path) -> str:
    """The agent's TOML: the three instances, ZooKeeper at `root`."""
    return "\n".join(
        [
            'agent_id = "h23"',
            "interval = 1.0",
            "timeout = 0.5",
            "[zookeeper]",
            f'hosts = "{hosts}"',
            f'root = "{root}"',
            "[[redis]]",
            'name = "ok"',
            f'host = "{LOOPBACK}"',
            f"port = {ports['ok']}",
            "[[redis]]",
            'name = "echo"',
            f'host = "{LOOPBACK}"',
            f"port = {ports['echo']}",
            f'username = "{USERNAME}"',
            f'password_file = "{secret}"',
            "[[redis]]",
            'name = "biglength"',
            f'host = "{LOOPBACK}"',
            f"port = {ports['biglength']}",
            "",
        ]
    )


def page(agent: Agent) -> str:
    """The status page's HTML."""
    url = f"http://{LOOPBACK}:{agent.http_port}/"
    with urllib.request.urlopen(url, timeout=10.0) as response:
        return str(response.read().decode())


def squat(agent: Agent, hosts: str, path: str) -> tuple[str, str]:
    """The squatter's scene: (until 503 and why, until 200 again)."""
    squatter = KazooClient(hosts=hosts, auth_data=[("digest", "squatter:pw")])
    squatter.start(timeout=10.0)
    try:
        acl = [make_digest_acl("squatter", "pw", all=True)]
        squatter.delete(path)
        squatter.create(path, b'{"status": "down"}', acl=acl, ephemeral=True)
        made = time.monotonic()
        first = "200 throughout"
        while time.monotonic() - made < SQUAT_WATCH:
            status, answer = agent.healthz()
            if status == 503:
                why = "; ".join(answer.get("reasons", []))
                first = f"503 after {time.monotonic() - made:.1f} s: {why}"
                break
            time.sleep(0.1)
    finally:
        squatter.stop()
        squatter.close()
    gone = time.monotonic()
    try:
        wait_until(lambda: agent.healthz()[0] == 200, 20.0, "/healthz 200")
        back = f"200 again {time.monotonic() - gone:.1f} s after the squatter left"
    except Exception:
        back = f"still {agent.healthz()} 20 s after the squatter left"
    return first, back


def one_run(
    args: argparse.Namespace, label: str, checkout: Path, number: int
) -> list[tuple[str, str]]:
    """One agent of `checkout` through the three scenes; its rows."""
    rows = []
    with ExitStack() as started, tempfile.TemporaryDirectory() as scratch:
        ok, echo = start_redis_servers(1, started) + start_redis_servers(
            1, started, ["--rename-command", "AUTH", ""]
        )
        ports = {"ok": ok.port, "echo": echo.port}
        ports["biglength"] = serve_big_length(started)
        zookeeper, client = start_zookeeper(started)
        workdir = Path(scratch)
        secret = workdir / "password"
        secret.write_text(PASSWORD + "\n")
        secret.chmod(0o600)
        root = "/h23"
        agent = Agent(
            workdir,
            config_text(root, zookeeper.hosts, ports, secret),
            label=label,
            pythonpath=checkout,
        )
        started.callback(agent.stop)
        agent.wait_ready()
        wait_until(
            lambda: (
                {name: i["status"] for name, i in agent.instances().items()}
                == {"ok": "up", "echo": "down", "biglength": "down"}
            ),
            20.0,
            "ok up, the others down",
        )
        time.sleep(2.0)
        echo_error = agent.instances()["echo"]["error"]
        node = client.get(f"{root}/instances/echo")[0].decode()
        shown = {
            "/instances": PASSWORD in echo_error,
            "its node": PASSWORD in node,
            "the page": PASSWORD in page(agent),
            "the log": PASSWORD in agent.log.read_text(errors="replace"),
        }
        where = [place for place, found in shown.items() if found]
        rows.append((f"{label} echo error", echo_error))
        rows.append((f"{label} password in", ", ".join(where) or "nowhere"))
        big = json.loads(client.get(f"{root}/instances/biglength")[0])["error"]
        rows.append((f"{label} biglength error", f"{len(big)} characters: {big[:60]}"))
        first, back = squat(agent, zookeeper.hosts, f"{root}/instances/ok")
        rows.append((f"{label} squatter", first))
        rows.append((f"{label} squatter gone", back))
        stats = agent.get("/debug/stats")
        healthy = agent.instances()["ok"]
        rows.append(
            (
                f"{label} agent",
                f"RSS {agent.rss_bytes() / 2**20:.1f} MiB, {stats['open_fds']} fds,"
                f" {len(agent.process.threads())} threads, {stats['overruns']}"
                f" overruns; ok: {healthy['status']}, {healthy['checks']} checks,"
                f" {healthy['failures']} failed; load {load_average()}",
            )
        )
    return rows


def main() -> None:
    """Run the scenes for each checkout; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_checkout_option(parser)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    rows = rows_in_turns(parser, args, one_run)
    print(table(rows, "Hostile peers, round 23"))


if __name__ == "__main__":
    main()

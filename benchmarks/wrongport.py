"""
An unlucky operator, round 2: ``--redis`` pointed at the wrong service.

One ``twistd -n sentinel`` watches, as instances, ports that are not a
plain Redis it may PING: a ZooKeeper client port, the agent's own HTTP
port and another agent's, a TLS-only redis-server without ``tls = true``
and a plain one with it, ``openssl s_server``, an SSH-like server (a
banner at accept, then waits), a memcached-like one (``ERROR`` to
everything), a redis-server with ``requirepass`` and no password
configured, one with ``rename-command PING ""``, a Redis Sentinel
(``redis-server --sentinel``), and one plain Redis for
comparison. Printed for each: the ``error`` in ``/instances`` after
``--wait`` seconds, the status, the checks and failures, and how many
warning-or-worse log lines name it.

    .venv/bin/python benchmarks/wrongport.py [--wait 8] [--timeout 0.5]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import common
from common import (
    LOOPBACK,
    Agent,
    RedisServer,
    free_port,
    load_average,
    start_zookeeper,
)

from tests.certs import make_certificates

SECRET = "hunter2-wrongport"
# What a redis-server in protected mode writes to a client from another
# host, then closes (redis-server 7.0, cut).
PROTECTED = (
    b"-DENIED Redis is running in protected mode because protected mode is"
    b" enabled and no password is set for the default user.\r\n"
)


def serve(
    banner: bytes | None,
    answer: bytes | None,
    stop: threading.Event,
    hang_up: bool = False,
) -> int:
    """
    A loopback TCP server in a thread: `banner` at accept (then, with
    `hang_up`, it closes), `answer` to each read.
    """
    listener = socket.socket()
    listener.bind((LOOPBACK, 0))
    listener.listen(64)
    listener.settimeout(0.2)

    def run() -> None:
        held = []
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                conn = None
            if conn is not None:
                conn.setblocking(False)
                held.append(conn)
                if banner:
                    conn.send(banner)
                if hang_up:
                    conn.close()
                    held.remove(conn)
            for c in list(held):
                try:
                    data = c.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    c.close()
                    held.remove(c)
                elif answer:
                    try:
                        c.send(answer)
                    except OSError:
                        pass
        for c in held:
            c.close()
        listener.close()

    threading.Thread(target=run, daemon=True).start()
    return int(listener.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--wait", type=float, default=8.0)
    parser.add_argument("--timeout", type=float, default=0.5)
    parser.add_argument("--log", action="store_true", help="print the agent's log")
    args = parser.parse_args()
    stop = threading.Event()
    with ExitStack() as started, tempfile.TemporaryDirectory() as work:
        workdir = Path(work)
        started.callback(stop.set)
        certs = make_certificates(workdir)
        zookeeper, _ = start_zookeeper(started)

        def redis(**kwargs: object) -> int:
            server = RedisServer(**kwargs)  # type: ignore[arg-type]
            started.callback(server.stop)
            return server.start().port

        plain = redis()
        tls_only = redis(tls=certs)
        secured = redis(password=SECRET)
        renamed = redis(extra_args=["--rename-command", "PING", '""'])
        openssl_port = free_port()
        openssl = subprocess.Popen(
            ["openssl", "s_server", "-quiet", "-accept", f"{LOOPBACK}:{openssl_port}",
             "-cert", certs.server_cert_file, "-key", certs.server_key_file],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        started.callback(openssl.wait)
        started.callback(openssl.terminate)
        # A Redis Sentinel: PING answers PONG, HELLO names no role and
        # INFO replication is empty (redis-server 7.0).
        sentinel_port = free_port()
        sentinel_conf = workdir / "sentinel.conf"
        sentinel_conf.write_text(
            f"port {sentinel_port}\nbind {LOOPBACK}\ndir {work}\n"
            f"sentinel monitor mymaster {LOOPBACK} {plain} 2\n"
        )
        sentinel = subprocess.Popen(
            ["redis-server", str(sentinel_conf), "--sentinel"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        started.callback(sentinel.wait)
        started.callback(sentinel.terminate)
        ssh = serve(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", None, stop)
        memcached = serve(None, b"ERROR\r\n", stop)
        denied = serve(PROTECTED, None, stop, hang_up=True)
        other = Agent(workdir, common.agent_config([]), label="other")
        started.callback(other.stop)
        other.wait_ready()
        own_http = free_port()
        targets = [
            ("redis", plain, False),
            ("zookeeper", zookeeper.port, False),
            ("own-http", own_http, False),
            ("other-agent-http", other.http_port, False),
            ("redis-tls-only", tls_only, False),
            ("openssl-s_server", openssl_port, False),
            ("redis-plain-with-tls", plain, True),
            ("ssh-banner", ssh, False),
            ("memcached", memcached, False),
            ("requirepass", secured, False),
            ("ping-renamed", renamed, False),
            ("protected-mode", denied, False),
            ("redis-sentinel", sentinel_port, False),
            ("ssh-banner-with-tls", ssh, True),
            ("memcached-with-tls", memcached, True),
            ("http-with-tls", other.http_port, True),
        ]
        lines = [
            f'agent_id = "wrongport"\ninterval = 1.0\ntimeout = {args.timeout!r}\n'
        ]
        for name, port, tls in targets:
            lines.append(
                f'[[redis]]\nname = "{name}"\nhost = "{LOOPBACK}"\nport = {port}\n'
                + (f'tls = true\nca_file = "{certs.ca_file}"\n' if tls else "")
            )
        # The agent's own HTTP port is chosen before it starts.
        common.free_port = lambda: own_http  # type: ignore[assignment]
        agent = Agent(workdir, "\n".join(lines), label="agent")
        started.callback(agent.stop)
        agent.wait_ready()
        time.sleep(args.wait)
        instances = agent.instances()
        log = agent.log.read_text(errors="replace")
        print(f"load average {load_average()}, wait {args.wait:g} s, "
              f"timeout {args.timeout:g} s")  # fmt: skip
        for name, _, _ in targets:
            data = instances[name]
            logged = sum(
                1 for line in log.splitlines()
                if f" {name} " in line and ("#warn]" in line or "#error]" in line
                                          or "#critical]" in line)
            )  # fmt: skip
            print(
                f"{name:22} {data['status']:5} checks {data['checks']:3}"
                f" failures {data['failures']:3} log {logged:3}  {data['error']!r}"
            )
        if args.log:
            print(log)
        if SECRET in log or any(SECRET in str(d) for d in instances.values()):
            print("THE PASSWORD WAS ECHOED")


if __name__ == "__main__":
    main()

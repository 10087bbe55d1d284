"""
An unlucky operator, round 9: how much an agent logs while things stay
wrong.

Each scene runs one ``twistd -n sentinel`` (interval 1 s, timeout 0.5 s,
rise 2, fall 3; twistd's own observer, as an init script's ``twistd
sentinel --logfile ...`` has, and ``--logger
sentinel.logs.text_observer`` with ``--quiet-logger``), lets it settle
for ``--warmup`` seconds, then counts the log lines and bytes written in
the next ``--window`` seconds, and prints them per hour and per day
(twistd's ``--logfile`` rotates at 1 MB and keeps every rotated file:
the files a day makes), with the most repeated messages (digits and
names folded) so that whatever is logged per check shows up:

- ``flap``: one redis-server stopped (SIGSTOP) for 4 s and resumed for
  4 s, over and over;
- ``down``: ``--instances`` instances (3,000) on a port nothing listens
  on, down from the start;
- ``garbage``: one instance whose server answers every command with
  garbage;
- ``zkaway``: ZooKeeper killed after the warm-up (its session lost, the
  agent reconnecting);
- ``noname``: one instance whose host name never resolves (a name
  server that never answers);
- ``badhttp``: an HTTP client asking for ``/instances?limit=x`` (a 400)
  in a loop.

    .venv/bin/python benchmarks/logvolume.py [--scenes flap,down,...] \
        [--window 60] [--warmup 15] [--instances 3000] [--checkout L=PATH]
"""

from __future__ import annotations

import argparse
import re
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import common
from common import (
    LOOPBACK,
    Agent,
    Instance,
    RedisServer,
    free_port,
    load_average,
    open_files_for,
    start_zookeeper,
)
from wrongport import serve

ROTATE_BYTES = 1_000_000  # twistd's --logfile rotates at 1 MB
SCENES = ("flap", "down", "garbage", "zkaway", "noname", "badhttp")


def silent_name_server(stop: threading.Event) -> int:
    """A UDP port that reads queries and never answers them."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOOPBACK, 0))
    sock.settimeout(0.2)

    def run() -> None:
        while not stop.is_set():
            try:
                sock.recv(4096)
            except TimeoutError:
                pass
        sock.close()

    threading.Thread(target=run, daemon=True).start()
    return int(sock.getsockname()[1])


def folded(line: str) -> str:
    """A log line without its time, numbers and instance names: its kind."""
    text = line.split(" ", 2)[-1] if line[:4].isdigit() else line
    text = re.sub(r"\b(d|r|x)\d+\b", "NAME", text)
    text = re.sub(r"0x[0-9a-f]+|\d+(\.\d+)?", "N", text)
    return text[:150]


def run_scene(
    scene: str, args: argparse.Namespace, label: str, pythonpath: Path | None
) -> None:
    """One scene, one agent: its log's lines and bytes in the window."""
    stop = threading.Event()
    with ExitStack() as started, tempfile.TemporaryDirectory() as work:
        workdir = Path(work)
        started.callback(stop.set)
        zookeeper, _ = start_zookeeper(started)
        during: Callable[[], None] = lambda: None  # noqa: E731
        extra = ""
        instances: list[Instance] = []
        if scene == "flap":
            server = RedisServer()
            started.callback(server.stop)
            server.start()
            # Stopped once the flapping has (callbacks run last first).
            started.callback(stop.set)
            instances = [Instance(f"r{i}", server.port) for i in range(args.flappers)]

            def flap() -> None:
                while not stop.wait(4.0):
                    server.pause()
                    stop.wait(4.0)
                    server.resume()

            threading.Thread(target=flap, daemon=True).start()
        elif scene == "down":
            port = free_port()
            instances = [Instance(f"d{i}", port) for i in range(args.instances)]
        elif scene == "garbage":
            instances = [Instance("r0", serve(None, b"\x00\xffgarbage\x07\r\n", stop))]
        elif scene == "zkaway":
            server = RedisServer()
            started.callback(server.stop)
            server.start()
            instances = [Instance(f"r{i}", server.port) for i in range(10)]
            during = zookeeper.kill
        elif scene == "noname":
            dns = silent_name_server(stop)
            extra = (
                f'\n[dns]\nnameservers = ["{LOOPBACK}:{dns}"]\n\n'
                '[[redis]]\nname = "r0"\nhost = "never.example"\nport = 6379\n'
            )
        config = common.agent_config(instances, zookeeper=zookeeper.hosts) + extra
        agent = Agent(
            workdir,
            config,
            label=label,
            pythonpath=pythonpath,
            open_files=open_files_for(len(instances)),
            twistd_options=[f"--logger={args.logger}"] if args.logger else [],
        )
        started.callback(agent.stop)
        agent.wait_ready()
        if scene == "badhttp":
            url = f"http://{LOOPBACK}:{agent.http_port}/instances?limit=x"

            def loop() -> None:
                while not stop.is_set():
                    try:
                        urllib.request.urlopen(url, timeout=5).read()
                    except (OSError, urllib.error.URLError):
                        pass

            threading.Thread(target=loop, daemon=True).start()
        time.sleep(args.warmup)
        during()
        before = agent.log.stat().st_size
        time.sleep(args.window)
        with agent.log.open("rb") as log:
            log.seek(before)
            written = log.read()
        lines = written.decode(errors="replace").splitlines()
        per_hour = 3600 / args.window
        day_bytes = len(written) * per_hour * 24
        observer = args.logger or "twistd's observer"
        print(
            f"{label} {scene} ({observer}): {len(lines)} lines, {len(written)} bytes in"
            f" {args.window:g} s (load {load_average()}): {len(lines) * per_hour:,.0f}"
            f" lines/h, {len(written) * per_hour / 1e6:,.1f} MB/h,"
            f" {day_bytes / ROTATE_BYTES:,.0f} rotated files a day;"
            f" RSS {agent.rss_bytes() / 2**20:.0f} MiB"
        )
        for kind, count in Counter(map(folded, lines)).most_common(args.top):
            print(f"    {count:6} {kind}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenes", default=",".join(SCENES))
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--instances", type=int, default=3000)
    parser.add_argument("--flappers", type=int, default=1)
    parser.add_argument(
        "--logger", help="twistd's --logger (default: twistd's own observer)"
    )
    parser.add_argument("--top", type=int, default=5)
    common.add_checkout_option(parser)
    args = parser.parse_args()
    common.stop_on_sigterm()
    for label, tree in common.checkouts_of(parser, args.checkout):
        for scene in args.scenes.split(","):
            run_scene(scene, args, label, tree)


if __name__ == "__main__":
    main()

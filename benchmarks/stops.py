"""
Every shape of a stop, timed from the signal to the exit (DESIGN.md
section 5: "end the process within 5 s"), with ZooKeeper answering or
not.

For each shape a fresh agent (``twistd -n sentinel``) watches
``--instances`` instances over real redis-servers and publishes through a
relay of this script's to a real ZooKeeper, under a root of its own:
alone, or in a group beside a second agent (``replicas = 2``, that one
connected directly), with or without a ``state_dir``. Once its nodes are
published, ZooKeeper is made to stop answering it, and it is sent
``SIGTERM`` or ``SIGUSR2`` (``leave``):

- ``answering``: nothing is done;
- ``frozen``: the ZooKeeper process stopped with ``SIGSTOP`` (for every
  client), resumed after the exit;
- ``stopped``: the relay closes its connections and its port, as a
  ZooKeeper stopped would (refused from then on);
- ``blackholed``: the relay stops carrying bytes either way, and new
  connections are never answered, as a port whose packets are dropped.

Printed: each shape's time from the signal to the exit, and the exit
status, for each of ``--runs`` runs, with the load average; and, read
from ZooKeeper's ``dump`` (its ephemeral nodes by session), how many
nodes of the stopped agent's session were still there at its exit and
for how long after it (``left``: a stop that was to delete them at once
and did not; a ``state_dir``'s handoff leaves them on purpose).
``--busy N`` runs N busy loops throughout, as other work on the machine
would; ``--direct`` connects the stopped agent to ZooKeeper without the
relay (whose thread, at thousands of instances, is itself a load);
``--discovery nerve`` also publishes a discovery member per instance.

    .venv/bin/python benchmarks/stops.py [--runs 2] [--shapes group]
"""

from __future__ import annotations

import argparse
import itertools
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path

from common import (
    LOOPBACK,
    Agent,
    Instance,
    add_checkout_option,
    agent_config,
    checkouts_of,
    commit_of,
    load_average,
    open_files_for,
    start_redis_servers,
    start_zookeeper,
    stop_on_sigterm,
    table,
    wait_until,
)
from kazoo.client import KazooClient

ZOOKEEPER_STATES = ("answering", "frozen", "stopped", "blackholed")


class Relay:
    """A TCP relay to ZooKeeper on a thread, which can go silent or away."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server((LOOPBACK, 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.sockets: list[socket.socket] = [self.listener]
        self.silent = threading.Event()
        self.ending = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.ending.is_set():
            if self.silent.is_set():
                time.sleep(0.05)  # Nothing read, nothing carried, nothing accepted.
                continue
            for key, _ in self.selector.select(0.05):
                if key.fileobj is self.listener:
                    self.accept()
                else:
                    self.carry(key.fileobj, key.data)  # type: ignore[arg-type]
        for sock in self.sockets:
            sock.close()

    def accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except BlockingIOError:
            return
        server = socket.create_connection(self.upstream)
        for one, other in ((client, server), (server, client)):
            one.setblocking(True)
            self.selector.register(one, selectors.EVENT_READ, other)
            self.sockets.append(one)

    def carry(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            data = source.recv(65536)
            if data:
                sink.sendall(data)
                return
        except OSError:
            pass
        for sock in (source, sink):
            try:
                self.selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()

    def blackhole(self) -> None:
        """Carry nothing from now on, and answer no new connection."""
        self.silent.set()

    def close(self) -> None:
        """Close every connection and the port (refused from now on)."""
        self.ending.set()
        self.silent.clear()
        self.thread.join(5.0)


def one_stop(
    args: argparse.Namespace,
    version: Path,
    zookeeper: object,
    client: KazooClient,
    ports: list[int],
    shape: tuple[str, bool, str, str],
    number: int,
) -> str:
    """One shape, once: the time from the signal to the exit, and the status."""
    layout, state_dir, sig, zk_state = shape
    root = f"/stops/{layout}-{int(state_dir)}-{sig}-{zk_state}-{number}"
    instances = [
        Instance(f"r{i}", ports[i % len(ports)]) for i in range(args.instances)
    ]
    settings: dict[str, float | int | str] = {"session_timeout": 10.0}
    if args.discovery != "none":
        settings["discovery"] = args.discovery
    if layout == "group":
        settings["replicas"] = 2
    with ExitStack() as started, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        relay = Relay((LOOPBACK, zookeeper.port))  # type: ignore[attr-defined]
        started.callback(relay.close)
        port = zookeeper.port if args.direct else relay.port  # type: ignore[attr-defined]
        victim_config = agent_config(
            instances,
            zookeeper=f"{LOOPBACK}:{port}",
            zk_root=root,
            agent_id="victim",
            zk_settings=settings,
        )
        if state_dir:
            (workdir / "state").mkdir(mode=0o700)
            victim_config = f'state_dir = "{workdir / "state"}"\n' + victim_config
        open_files = open_files_for(args.instances)
        victim = Agent(workdir, victim_config, "victim", version, open_files=open_files)
        started.callback(victim.stop)
        peers = 0
        if layout == "group":
            peer_config = agent_config(
                instances,
                zookeeper=zookeeper.hosts,  # type: ignore[attr-defined]
                zk_root=root,
                agent_id="peer",
                zk_settings=settings,
            )
            peer = Agent(workdir, peer_config, "peer", version, open_files=open_files)
            started.callback(peer.stop)
            peers = 1
        victim.wait_ready()

        def published() -> bool:
            if client.exists(f"{root}/instances") is None:
                return False
            if client.exists(f"{root}/agents/victim") is None:
                return False
            if len(client.get_children(f"{root}/agents")) != 1 + peers:
                return False
            if len(client.get_children(f"{root}/instances")) != args.instances:
                return False
            return not state_dir or any((workdir / "state").iterdir())

        wait_until(published, 300.0, f"{root} published")
        time.sleep(args.settle)
        _, stat = client.get(f"{root}/agents/victim")
        session = stat.ephemeralOwner
        load = load_average()
        if zk_state == "frozen":
            zookeeper.pause()  # type: ignore[attr-defined]
        elif zk_state == "stopped":
            relay.close()
        elif zk_state == "blackholed":
            relay.blackhole()
        process = victim.child.process
        began = time.monotonic()
        lingering = Lingering(zookeeper, session)
        process.send_signal(signal.SIGTERM if sig == "term" else signal.SIGUSR2)
        try:
            status = process.wait(15.0)
        finally:
            if zk_state == "frozen":
                zookeeper.resume()  # type: ignore[attr-defined]
        took = time.monotonic() - began
        # Popen's -N is "ended by signal N": a shell's 128 + N.
        status = 128 - status if status < 0 else status
        left = lingering.at_exit()
        if args.keep_logs is not None:
            shutil.copy(victim.log, args.keep_logs / f"{root.replace('/', '_')}.log")
        return f"{took:.2f} s, status {status}, {left} (load {load})"


def ephemerals_of(zookeeper: object, session: int) -> int | None:
    """How many ephemeral nodes `session` holds (``dump``), if ZooKeeper answers."""
    try:
        dump = zookeeper.four_letter_word("dump").decode()  # type: ignore[attr-defined]
    except OSError:
        return None
    count, counting = 0, False
    for line in dump.splitlines():
        if line.startswith("0x"):
            counting = int(line.rstrip(":"), 16) == session
        elif counting and line.startswith("\t/"):
            count += 1
    return count


class Lingering:
    """
    The session's nodes as ZooKeeper's ``dump`` lists them, polled every
    50 ms on a thread from the signal on: when the last went (from the
    signal), and how many were left at the exit.
    """

    def __init__(self, zookeeper: object, session: int) -> None:
        self.zookeeper = zookeeper
        self.session = session
        self.began = time.monotonic()
        self.gone: float | None = None
        self.latest: int | None = None
        self.ending = threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)
        self.thread.start()

    def poll(self) -> None:
        # A session timeout and more.
        while not self.ending.is_set() and time.monotonic() - self.began < 20.0:
            count = ephemerals_of(self.zookeeper, self.session)
            if count is not None:
                self.latest = count
                if count == 0:
                    self.gone = time.monotonic() - self.began
                    return
            time.sleep(0.05)

    def at_exit(self) -> str:
        """Wait for the nodes to go (20 s from the signal at most), and say when."""
        at_exit = self.latest
        self.thread.join(25.0)
        if self.gone is None:
            return f"{self.latest} node(s) still there 20 s after the signal"
        left = "" if not at_exit else f", {at_exit} left at the exit"
        return f"nodes gone {self.gone:.2f} s after the signal{left}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add_checkout_option(parser)
    add("--instances", type=int, default=20)
    add("--servers", type=int, default=2)
    add("--settle", type=float, default=2.0, help="s after publishing (2)")
    add("--layouts", default="alone,group")
    add("--state-dirs", default="no,yes")
    add("--signals", default="term,usr2")
    add("--zookeeper", default=",".join(ZOOKEEPER_STATES))
    add("--runs", type=int, default=2)
    add("--busy", type=int, default=0, help="busy loops throughout (0)")
    add("--direct", action="store_true", help="no relay (ZooKeeper answering)")
    add("--discovery", default="none", choices=("none", "nerve", "serverset"))
    add("--keep-logs", type=Path, help="a folder to copy each stopped agent's log to")
    args = parser.parse_args()
    checkouts = checkouts_of(parser, args.checkout)
    if len(checkouts) != 1:
        parser.error("one --checkout at most")
    [(label, version)] = checkouts
    stop_on_sigterm()
    shapes = list(
        itertools.product(
            args.layouts.split(","),
            [s == "yes" for s in args.state_dirs.split(",")],
            args.signals.split(","),
            args.zookeeper.split(","),
        )
    )
    rows = [("version", f"{label} = {commit_of(version)}")]
    with ExitStack() as started:
        for _ in range(args.busy):
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            started.callback(busy.wait)
            started.callback(busy.kill)
        servers = start_redis_servers(args.servers, started)
        zookeeper, client = start_zookeeper(started)
        ports = [s.port for s in servers]
        for shape in shapes:
            layout, state_dir, sig, zk_state = shape
            name = (
                f"{layout}, {'state_dir' if state_dir else 'no state_dir'}, "
                f"{'SIGTERM' if sig == 'term' else 'SIGUSR2'}, ZooKeeper {zk_state}"
            )
            times = [
                one_stop(args, version, zookeeper, client, ports, shape, n)
                for n in range(args.runs)
            ]
            rows.append((name, "; ".join(times)))
            print(f"{name}: {'; '.join(times)}", flush=True)
    print(table(rows, f"stops: {args.instances} instances"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

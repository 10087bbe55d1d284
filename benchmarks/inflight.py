"""
Instances that go down while the transactions moving their discovery
members are in flight.

Two ``twistd -n sentinel`` agents share ``--instances`` names, each on a
redis-server of its own, ``zookeeper.replicas`` 2, ``discovery =
"serverset"`` (each instance its own service), ``fall = 1``. Agent a
reaches ZooKeeper directly, agent b through a TCP path of this script's
own (`AnswersHeld`) that passes b's requests at once but can hold
ZooKeeper's answers (and watch events) to b: a transaction b sends then
is applied, its answer not yet heard, as in the group fakes'
``hold_answers``. Once every endpoint is listed once, a leaves
(``SIGUSR2``); from b's first transaction after it that names one of a's
nodes (a takeover's ``multi``: b's other transactions pass; none within
``--wait`` s and the run says it was not measured), the answers to b are
held for ``--hold`` s and the
redis-servers of a's instances are stopped (by PID): b's checks find
them down while its takeovers are unanswered. For the instances whose
node b held when the answers were let go (their transaction applied
meanwhile), the reader then says, every ``--poll`` s for ``--after`` s,
whether each service still lists the dead endpoint: how many did 2 s
after the heal and at the end, and when the last went. Printed too: the
takeover transactions b sent in the hold: how many of a's nodes were in
flight at once (all of them in some runs, one in others, the rest
waiting behind an answer held; not traced further).

    .venv/bin/python benchmarks/inflight.py [--instances 20] [--hold 4] \\
        [--after 40] [--runs 2] \\
        [--checkout before=../main-tree --checkout after=.]
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
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
    load_average,
    rows_in_turns,
    start_redis_servers,
    start_zookeeper,
    table,
)
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

ROOT = "/sentinel"
DISCOVERY = "/discovery"
# ZooKeeper's request type of a transaction.
MULTI = 14


class AnswersHeld:
    """
    A TCP path from an agent to ZooKeeper: requests pass at once, answers
    are held while `holding` (read and kept in the kernel's buffers, then
    sent at the heal, as TCP would deliver them late).
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.holding = False
        # Hold the answers from the next transaction (a ``multi``) naming
        # one of these nodes (each as the protocol writes it: its length,
        # then its bytes) on, once `armed`; and the transactions naming one
        # sent while the answers are held.
        self.wanted: tuple[bytes, ...] = ()
        self.armed = False
        self.sent_held = 0
        self.changed = threading.Condition()
        self.listener = socket.create_server((LOOPBACK, 0))
        self.port = self.listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, paths: list[str]) -> None:
        """Hold the answers from the first transaction naming one of `paths`."""
        self.wanted = tuple(
            len(p.encode()).to_bytes(4, "big") + p.encode() for p in paths
        )
        self.armed = True

    def hold(self, holding: bool) -> None:
        """Hold ZooKeeper's answers from now on, or let them go."""
        with self.changed:
            self.holding = holding
            self.changed.notify_all()

    def _accept(self) -> None:
        while True:
            try:
                agent, _ = self.listener.accept()
                upstream = socket.create_connection(self.target, timeout=5.0)
            except OSError:
                return
            upstream.settimeout(None)
            self._sockets += [agent, upstream]
            for source, sink, held in (
                (agent, upstream, False),
                (upstream, agent, True),
            ):
                threading.Thread(
                    target=self._pump, args=(source, sink, held), daemon=True
                ).start()

    def _pump(self, source: socket.socket, sink: socket.socket, held: bool) -> None:
        frames = b""
        while True:
            try:
                chunk = source.recv(65536)
            except OSError:
                chunk = b""
            if not held:
                # Every request parsed, armed or not, so that a frame is
                # never read from its middle.
                frames = self._look_for_multi(frames + chunk)
            if held:
                with self.changed:
                    while self.holding:
                        self.changed.wait()
            try:
                if not chunk:
                    sink.shutdown(socket.SHUT_WR)
                    return
                sink.sendall(chunk)
            except OSError:
                return

    def _look_for_multi(self, frames: bytes) -> bytes:
        """
        Hold the answers once armed and a request is a ``multi`` (length,
        xid, then type 14) naming a wanted node: a takeover of one of
        them; what is left unparsed.
        """
        while len(frames) >= 4:
            length = int.from_bytes(frames[:4], "big")
            if len(frames) < 4 + length:
                break
            frame, frames = frames[4 : 4 + length], frames[4 + length :]
            if (
                len(frame) >= 8
                and int.from_bytes(frame[4:8], "big") == MULTI
                and any(path in frame for path in self.wanted)
            ):
                if self.armed:
                    self.armed = False
                    self.hold(True)
                if self.holding:
                    self.sent_held += 1
        return frames

    def close(self) -> None:
        """Stop accepting and drop every connection."""
        self.hold(False)
        self.listener.close()
        for sock in self._sockets:
            try:
                sock.close()
            except OSError:
                pass


def members(client: KazooClient, name: str) -> int:
    """How many members the instance's service lists."""
    try:
        return len(client.get_children(f"{DISCOVERY}/{name}"))
    except NoNodeError:
        return 0


def listed(client: KazooClient, name: str) -> bool:
    """Whether the instance's service lists any member."""
    return members(client, name) > 0


def owner(client: KazooClient, name: str) -> int | None:
    """The session holding the instance's node, if it is there."""
    stat = client.exists(f"{ROOT}/instances/{name}")
    return None if stat is None else stat.ephemeralOwner


def one_run(
    args: argparse.Namespace, label: str, checkout: Path, number: int
) -> list[tuple[str, str]]:
    """Servers, agents, the leave, the answers held; the reader's counts."""
    logging.getLogger("kazoo").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as started:
        workdir = Path(tmp)
        servers = start_redis_servers(args.instances, started)
        zookeeper, client = start_zookeeper(started)
        instances = [Instance(f"r{i:04d}", s.port) for i, s in enumerate(servers)]
        names = [i.name for i in instances]
        host, port = zookeeper.hosts.split(":")
        path = AnswersHeld((host, int(port)))
        started.callback(path.close)
        settings: dict[str, float | int | str] = {
            "replicas": 2,
            "session_timeout": args.session_timeout,
            "discovery": "serverset",
            "discovery_root": DISCOVERY,
        }

        def start(agent_id: str, hosts: str) -> Agent:
            text = agent_config(
                instances, zookeeper=hosts, zk_root=ROOT, agent_id=agent_id,
                zk_settings=settings, rise=1, fall=1,
            )  # fmt: skip
            agent = Agent(workdir, text, f"{agent_id}-{number}", pythonpath=checkout)
            started.callback(agent.stop)
            agent.wait_ready()
            return agent

        a = start("a", zookeeper.hosts)
        start("b", f"{LOOPBACK}:{path.port}")
        deadline = time.monotonic() + 120.0
        while not all(members(client, n) == 1 for n in names):
            if time.monotonic() > deadline:
                raise RuntimeError("the group never listed each endpoint once")
            time.sleep(0.5)
        time.sleep(args.settle)
        load_start = load_average()
        a_session = client.exists(f"{ROOT}/agents/a").ephemeralOwner
        b_session = client.exists(f"{ROOT}/agents/b").ephemeralOwner
        share = [n for n in names if owner(client, n) == a_session]
        path.arm([f"{ROOT}/instances/{n}" for n in share])
        a.child.process.send_signal(signal.SIGUSR2)
        signalled = time.monotonic()
        while not path.holding:
            if time.monotonic() - signalled > args.wait:
                load_end = load_average()
                return [
                    (f"{label} run {number + 1}: a's nodes", str(len(share))),
                    (
                        "  NOT MEASURED",
                        f"b sent no takeover of them within {args.wait:g} s",
                    ),
                    ("  load (start / end)", f"{load_start} / {load_end}"),
                ]
            time.sleep(0.002)
        held_at = time.monotonic()
        for i, server in enumerate(servers):
            if names[i] in share:
                server.stop()
        time.sleep(max(0.0, args.hold - (time.monotonic() - held_at)))
        taken = [n for n in share if owner(client, n) == b_session]
        sent_held = path.sent_held
        path.hold(False)
        healed = time.monotonic()
        at_two: int | None = None
        gone_at: dict[str, float] = {}
        while (now := time.monotonic()) < healed + args.after:
            for name in taken:
                if name not in gone_at and not listed(client, name):
                    gone_at[name] = now - healed
            if at_two is None and now - healed >= 2.0:
                at_two = len(taken) - len(gone_at)
            time.sleep(args.poll)
        at_end = [n for n in taken if listed(client, n)]
        load_end = load_average()
    last = f"{max(gone_at.values()):.2f} s" if gone_at else "--"
    return [
        (f"{label} run {number + 1}: a's nodes", str(len(share))),
        (
            "  taken by b in the hold (answers held)",
            f"{len(taken)}" + ("" if taken else " (the scene did not happen)"),
        ),
        ("  b's takeover transactions sent in the hold", str(sent_held)),
        ("  dead endpoints listed 2 s after the heal", str(at_two)),
        (f"  listed {args.after:g} s after the heal", str(len(at_end))),
        ("  last one unlisted, after the heal", last),
        ("  load (start / end)", f"{load_start} / {load_end}"),
    ]


def main() -> None:
    """Parse the options, run each checkout ``--runs`` times, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=20)
    parser.add_argument("--hold", type=float, default=4.0)
    parser.add_argument("--after", type=float, default=40.0)
    parser.add_argument("--poll", type=float, default=0.2)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--wait", type=float, default=30.0)
    parser.add_argument("--session-timeout", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=1)
    add_checkout_option(parser)
    args = parser.parse_args()
    rows = rows_in_turns(parser, args, one_run)
    print(table(rows, "dead endpoints whose members moved in flight"))


if __name__ == "__main__":
    main()

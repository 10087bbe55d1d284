"""
The floor of a checker written in CPython: what the agent's checks would
cost if it did nothing but send them and read their replies.

A bare loop on ``select.epoll``, without Twisted: one connection per
instance (``--ports``, one port per instance, repeated for instances that
share a server), and every ``--interval`` seconds, spread over the agent's
own slices, the agent's common check on each (``PING`` and ``HELLO`` in one
write, the agent's bytes). A reply is read and compared with the first one
the connection got, which is all the agent does with an unchanged
instance's reply before it records it. With ``--deferred`` each check also
gets a Twisted ``Deferred`` with a callback and an errback, fired by its
reply, as each of the agent's checks does. Nothing else: no deadline, no
health, no history, no reconnection, no HTTP.

``benchmarks/capacity.py`` runs it on the equal layout's servers, beside
the agent and Redis Sentinel, and measures its CPU the same way. Each
second it writes how many replies it has read, and how many differed from
the first, to ``--count-file`` (``replies differed``), so that a window can
check that every instance was checked. It runs until SIGTERM or SIGINT.

    .venv/bin/python benchmarks/floor.py --ports 6379,6380 --count-file F
        [--interval 1] [--deferred]
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import socket
import sys
import time
from pathlib import Path
from types import FrameType

from common import LOOPBACK
from twisted.internet.defer import Deferred

from sentinel.protocol import HELLO, PING
from sentinel.slices import slices_for

COMMANDS = PING + HELLO
READ_SIZE = 4096
# How long the servers must be quiet for the first replies to be complete.
FIRST_REPLIES_QUIET = 0.5
CONNECT_TIMEOUT = 5.0


class Connection:
    """One instance: its socket, its first reply, what has been read since."""

    __slots__ = ("sock", "expected", "buffer", "check")

    def __init__(self, port: int) -> None:
        sock = socket.create_connection((LOOPBACK, port), timeout=CONNECT_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        self.sock = sock
        self.expected = b""
        self.buffer = b""
        self.check: Deferred[bytes] | None = None


def first_replies(connections: list[Connection], poller: select.epoll) -> None:
    """
    Send every connection the check's commands once and read until the
    servers have been quiet a while: each connection's reply, whose bytes
    every later reply of an unchanged instance repeats.
    """
    by_fd = {c.sock.fileno(): c for c in connections}
    for connection in connections:
        connection.sock.send(COMMANDS)
    while events := poller.poll(FIRST_REPLIES_QUIET):
        for fd, _ in events:
            connection = by_fd[fd]
            data = connection.sock.recv(READ_SIZE)
            if not data:
                raise ConnectionError("a server closed its connection")
            connection.expected += data
    if not all(c.expected for c in connections):
        raise ConnectionError("a server did not answer the first check")


class Floor:
    """The loop: send each slice's checks on time, read replies meanwhile."""

    def __init__(self, ports: list[int], interval: float, deferred: bool) -> None:
        self.connections = [Connection(port) for port in ports]
        self.by_fd = {c.sock.fileno(): c for c in self.connections}
        self.poller = select.epoll()
        for fd in self.by_fd:
            self.poller.register(fd, select.EPOLLIN)
        first_replies(self.connections, self.poller)
        count = slices_for(interval)
        self.slices = [self.connections[i::count] for i in range(count)]
        self.step = interval / count
        self.deferred = deferred
        self.replies = 0
        self.differed = 0
        self.stopped = False

    def _observed(self, reply: bytes, connection: Connection) -> None:
        connection.check = None

    def _failed(self, failure: object, connection: Connection) -> None:
        connection.check = None

    def _send(self, members: list[Connection]) -> None:
        for connection in members:
            connection.sock.send(COMMANDS)
            if self.deferred:
                check: Deferred[bytes] = Deferred()
                check.addCallbacks(
                    self._observed,
                    self._failed,
                    callbackArgs=(connection,),
                    errbackArgs=(connection,),
                )
                connection.check = check

    def _read(self, connection: Connection) -> None:
        data = connection.sock.recv(READ_SIZE)
        if not data:
            raise ConnectionError("a server closed its connection")
        if connection.buffer:
            data = connection.buffer + data
        if len(data) < len(connection.expected):
            connection.buffer = data
            return
        connection.buffer = b""
        self.replies += 1
        if data != connection.expected:
            self.differed += 1
        check = connection.check
        if check is not None:
            check.callback(data)

    def run(self, count_file: Path) -> None:
        """Until `stopped`: one slice per step, and the count every second."""
        by_fd = self.by_fd
        poll = self.poller.poll
        most = len(by_fd)
        next_slice = 0
        due = time.monotonic()
        next_count = due
        while not self.stopped:
            now = time.monotonic()
            if now >= due:
                self._send(self.slices[next_slice])
                next_slice = (next_slice + 1) % len(self.slices)
                due += self.step
            if now >= next_count:
                temporary = count_file.with_suffix(".new")
                temporary.write_text(f"{self.replies} {self.differed}\n")
                os.replace(temporary, count_file)
                next_count += 1.0
            try:
                events = poll(max(0.0, due - time.monotonic()), most)
            except InterruptedError:
                continue
            for fd, _ in events:
                self._read(by_fd[fd])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--ports", required=True, help="comma-separated, one per instance")
    add("--count-file", type=Path, required=True, help="replies so far")
    add("--interval", type=float, default=1.0, help="seconds (1.0)")
    add("--deferred", action="store_true", help="a Deferred per check")
    args = parser.parse_args()
    try:
        ports = [int(p) for p in args.ports.split(",")]
    except ValueError:
        parser.error(f"--ports: not a list of numbers: {args.ports[:60]!r}")
    if args.interval <= 0:
        parser.error("--interval must be positive")
    floor = Floor(ports, args.interval, args.deferred)

    def stop(signum: int, frame: FrameType | None) -> None:
        floor.stopped = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    floor.run(args.count_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())

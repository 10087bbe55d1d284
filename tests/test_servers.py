"""
The integration-test servers do what the tests that use them rely on: real
Redis and ZooKeeper processes that answer, pause, stop and come back, and fake
servers that never answer or answer garbage.
"""

from __future__ import annotations

import gc
import os
import socket
import sys
import threading
import time
from collections.abc import Generator
from typing import Any

from kazoo.client import KazooClient
from twisted.internet import error
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.interfaces import IReactorTCP, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

import tests.servers
from tests.hung import HungMount
from tests.polling import START_BOUND
from tests.servers import (
    LOOPBACK,
    ChildProcess,
    RedisServer,
    ZooKeeperEnsemble,
    ZooKeeperServer,
    free_port,
    listen_garbage,
    listen_never_answering,
    listening_tcp_ports,
    refusing_port,
    shared_zookeeper,
)

# Integration tests run on the real reactor; this is the one place it is named.
reactor: IReactorTCP = _reactor
clock: IReactorTime = _reactor

SILENCE = 0.3


def ask(port: int, request: bytes, timeout: float) -> bytes:
    """Send ``request`` on a new connection and return the first reply."""
    with socket.create_connection((LOOPBACK, port), timeout) as sock:
        sock.sendall(request)
        return sock.recv(4096)


class FreePortTests(TestCase):
    def test_free_port_is_bindable(self) -> None:
        """free_port returns a loopback port that can be listened on."""
        port = free_port()
        with socket.socket() as sock:
            sock.bind((LOOPBACK, port))
            sock.listen()
        self.assertGreater(port, 0)

    def test_listening_tcp_ports(self) -> None:
        """listening_tcp_ports names a port a process listens on, not one it
        only bound."""
        with socket.socket() as listening, socket.socket() as bound:
            listening.bind((LOOPBACK, 0))
            listening.listen()
            bound.bind((LOOPBACK, 0))
            ports = listening_tcp_ports(os.getpid())
            self.assertIn(listening.getsockname()[1], ports)
            self.assertNotIn(bound.getsockname()[1], ports)


class RefusingPortTests(TestCase):
    def test_refuses_and_is_held(self) -> None:
        """
        refusing_port refuses connections, and no server can bind it
        (redis-server's SO_REUSEADDR included) until the test's cleanup.
        """
        port = refusing_port(self.addCleanup)
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection((LOOPBACK, port), 5.0).close()
        with socket.socket() as server:
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with self.assertRaises(OSError):
                server.bind((LOOPBACK, port))


class PortTakenTests(TestCase):
    """
    A server's port, found free, taken by someone else before the server
    binds it (patched here to be so at once; under load, seconds apart).
    """

    def taken_first(self) -> int:
        """`free_port` hands out a port that listens, then free ones."""
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port: int = taken.getsockname()[1]
        ports = iter([port])
        self.patch(tests.servers, "free_port", lambda: next(ports, free_port()))
        return port

    def test_redis_tries_another_port(self) -> None:
        """redis-server, its port taken, starts on another."""
        taken = self.taken_first()
        server = RedisServer()
        self.addCleanup(server.stop)
        self.assertEqual(server.port, taken)
        server.start()
        self.assertNotEqual(server.port, taken)
        self.assertEqual(ask(server.port, b"PING\r\n", 5.0), b"+PONG\r\n")

    def test_zookeeper_tries_another_port(self) -> None:
        """ZooKeeper, its port taken, starts on another."""
        taken = self.taken_first()
        server = ZooKeeperServer()
        self.addCleanup(server.close)
        server.start()
        self.assertNotEqual(server.port, taken)
        self.assertEqual(server.four_letter_word("ruok"), b"imok")

    def test_ensemble_tries_other_ports(self) -> None:
        """
        A ZooKeeper ensemble one of whose election ports, found free, is
        taken before its member binds it (that member exits): the whole
        ensemble starts again on other ports, and every member serves.
        """
        ensemble = ZooKeeperEnsemble()
        self.addCleanup(ensemble.close)
        taken = ensemble.members[0].peer_ports[1]
        with socket.socket() as squatter:
            squatter.bind((LOOPBACK, taken))
            squatter.listen()
            ensemble.start()
        self.assertNotIn(f":{taken}\n", ensemble.members[0].servers)
        for member in ensemble.members:
            self.assertIn(member.mode, ("leader", "follower"), member.myid)


# A process one of whose threads waits in a file system call (argv[1] is a
# hung mount), which it leaves only when the mount goes.
BLOCKED_THREAD = """
import os, sys, threading
def look():
    try:
        os.stat(os.path.join(sys.argv[1], "x"))
    except OSError:
        pass
    threading.Event().wait()
threading.Thread(target=look).start()
threading.Event().wait()
"""
# Seconds the mount is held once the process is asked to stop.
HELD = 0.5


def thread_states(pid: int) -> list[str]:
    """The state letter of each thread of process `pid` (``T``: stopped)."""
    states = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as f:
                states.append(f.read().rpartition(")")[2].split()[0])
        except FileNotFoundError:  # The thread ended meanwhile.
            pass
    return states


class ChildProcessTests(TestCase):
    def test_pause_waits_for_the_last_thread_without_polling(self) -> None:
        """
        pause returns once every thread of the process is stopped, also
        one that stops late (in a file system call on a hung mount until
        the mount goes), and spends no CPU while it waits: it waits for
        the kernel's word, where it read each thread's state every
        millisecond.
        """
        mount = HungMount().start()
        self.addCleanup(mount.release)
        child = ChildProcess([sys.executable, "-c", BLOCKED_THREAD, mount.path])
        self.addCleanup(child.stop)
        # The child's interpreter starts first: at load 73-89 that alone
        # took 12-21 s (`START_BOUND`); the wait ends once the thread waits.
        deadline = time.monotonic() + START_BOUND
        while "D" not in thread_states(child.pid):
            self.assertLess(time.monotonic(), deadline, "no thread waits on the mount")
            child.wait_readable(None, 0.01)
        release = threading.Timer(HELD, mount.release)
        self.addCleanup(release.cancel)
        # A collection of this process's garbage is no part of pause's CPU:
        # late in a run of the whole suite a full one takes tens of ms, and
        # any allocation (the waiting thread's) may start it.
        if gc.isenabled():
            gc.disable()
            self.addCleanup(gc.enable)
        # Read before the timer starts, so that the wait measured is never
        # shorter than the one the timer keeps.
        started, cpu = time.monotonic(), time.thread_time()
        release.start()
        child.pause()
        waited, spent = time.monotonic() - started, time.thread_time() - cpu
        self.assertEqual(set(thread_states(child.pid)), {"T"})
        self.assertGreaterEqual(waited, HELD)
        self.assertLess(spent, 0.01)
        child.resume()


class RedisServerTests(TestCase):
    def setUp(self) -> None:
        self.redis = RedisServer()
        self.addCleanup(self.redis.stop)
        self.redis.start()

    def test_answers_ping(self) -> None:
        """A started server answers PING on its port."""
        self.assertEqual(ask(self.redis.port, b"PING\r\n", 5), b"+PONG\r\n")

    def test_pause_and_resume(self) -> None:
        """A paused server accepts but does not answer; resumed, it answers."""
        self.redis.pause()
        with socket.create_connection((LOOPBACK, self.redis.port), 5) as sock:
            sock.sendall(b"PING\r\n")
            sock.settimeout(SILENCE)
            self.assertRaises(TimeoutError, sock.recv, 4096)
            self.redis.resume()
            sock.settimeout(5)
            self.assertEqual(sock.recv(4096), b"+PONG\r\n")

    def test_kill_refuses(self) -> None:
        """After kill the port refuses connections."""
        self.redis.kill()
        self.assertFalse(self.redis.running)
        self.assertRaises(ConnectionRefusedError, ask, self.redis.port, b"PING\r\n", 5)

    def test_stop_is_idempotent_and_cleans(self) -> None:
        """stop ends the process, removes the directory, and may be repeated."""
        pid = self.redis.pid
        self.redis.stop()
        self.redis.stop()
        self.assertFalse(self.redis.running)
        self.assertFalse(self.redis.directory.exists())
        self.assertRaises(ProcessLookupError, os.kill, pid, 0)

    def test_stop_paused(self) -> None:
        """A paused server still stops on SIGTERM, without the SIGKILL fallback."""
        self.redis.pause()
        self.redis.stop()
        self.assertEqual(self.redis.child.process.returncode, 0)

    def test_restart_same_port(self) -> None:
        """After stop, start serves again on the same port."""
        port = self.redis.port
        self.redis.stop()
        self.redis.start()
        self.assertEqual(self.redis.port, port)
        self.assertEqual(ask(port, b"PING\r\n", 5), b"+PONG\r\n")

    def test_password(self) -> None:
        """With a password, PING needs AUTH first."""
        secured = RedisServer(password="s3cret")
        self.addCleanup(secured.stop)
        secured.start()
        self.assertTrue(ask(secured.port, b"PING\r\n", 5).startswith(b"-NOAUTH"))
        reply = ask(secured.port, b"AUTH s3cret\r\nPING\r\n", 5)
        self.assertTrue(reply.startswith(b"+OK\r\n"))

    def test_acl_user(self) -> None:
        """Extra arguments reach the server, such as an ACL user."""
        server = RedisServer(extra_args=["--user", "probe", "on", ">pw", "+ping"])
        self.addCleanup(server.stop)
        server.start()
        reply = ask(server.port, b"AUTH probe pw\r\nPING\r\n", 5)
        self.assertTrue(reply.startswith(b"+OK\r\n"))

    def test_failed_start_reports_log(self) -> None:
        """A server that cannot start fails at once with its log, and cleans up."""
        broken = RedisServer(extra_args=["--no-such-directive", "1"])
        error = self.assertRaises(RuntimeError, broken.start)
        self.assertIn("no-such-directive", str(error))
        self.assertFalse(broken.directory.exists())


class ZooKeeperServerTests(TestCase):
    def setUp(self) -> None:
        self.zookeeper = shared_zookeeper()
        # Whatever a test did, the next one finds the server answering.
        self.addCleanup(self.zookeeper.restore)

    def _client(self) -> KazooClient:
        client = KazooClient(hosts=self.zookeeper.hosts, timeout=5)
        client.start(timeout=5)
        self.addCleanup(client.close)
        self.addCleanup(client.stop)
        return client

    def test_ruok(self) -> None:
        """A started server answers ruok with imok."""
        self.assertEqual(self.zookeeper.four_letter_word("ruok"), b"imok")

    def test_restart_keeps_data(self) -> None:
        """A node created before stop is there after start on the same port."""
        client = self._client()
        client.create(f"/{self.id()}/kept", makepath=True)
        client.stop()
        self.zookeeper.stop()
        self.assertFalse(self.zookeeper.running)
        self.zookeeper.start()
        self.assertIsNotNone(self._client().exists(f"/{self.id()}/kept"))

    def test_wipe(self) -> None:
        """Stopped, wiped and started again, the server comes back empty."""
        client = self._client()
        client.create(f"/{self.id()}/wiped", makepath=True)
        client.stop()
        self.zookeeper.stop()
        self.zookeeper.wipe()
        self.zookeeper.start()
        self.assertIsNone(self._client().exists(f"/{self.id()}"))

    def test_wipe_running_refused(self) -> None:
        """Wiping a running server is an error, not a corrupted server."""
        self.assertRaises(RuntimeError, self.zookeeper.wipe)

    def test_pause_and_resume(self) -> None:
        """A paused server does not answer; resumed, it answers again."""
        self.zookeeper.pause()
        try:
            self.assertRaises(
                TimeoutError, self.zookeeper.four_letter_word, "ruok", SILENCE
            )
        finally:
            self.zookeeper.resume()
        self.assertEqual(self.zookeeper.four_letter_word("ruok", 5), b"imok")


class _Client(Protocol):
    """Collects what a fake server sends; fires ``received`` on the first byte."""

    def __init__(self) -> None:
        self.data = b""
        self.received: Deferred[bytes] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if not self.received.called:
            self.received.callback(self.data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)


class FakeServerTests(TestCase):
    def _connect(self, port: int) -> Deferred[_Client]:
        endpoint = TCP4ClientEndpoint(reactor, LOOPBACK, port)
        connecting: Deferred[_Client] = connectProtocol(endpoint, _Client())
        return connecting

    @inlineCallbacks
    def test_never_answering(self) -> Generator[Deferred[Any], Any, None]:
        """The silent server keeps connections open, counts them, never answers."""
        server = listen_never_answering(reactor)
        self.addCleanup(server.stop)
        client = yield self._connect(server.port)
        yield server.when_open_connections(1).addTimeout(5, clock)
        client.transport.write(b"PING\r\n")
        yield deferLater(clock, SILENCE)
        self.assertEqual(client.data, b"")
        self.assertEqual(server.open_connections, 1)
        client.transport.loseConnection()
        yield server.when_open_connections(0).addTimeout(5, clock)
        self.assertEqual(server.accepted, 1)

    @inlineCallbacks
    def test_garbage(self) -> Generator[Deferred[Any], Any, None]:
        """The garbage server answers a RESP command with something not RESP."""
        server = listen_garbage(reactor)
        self.addCleanup(server.stop)
        client = yield self._connect(server.port)
        client.transport.write(b"PING\r\n")
        reply = yield client.received.addTimeout(5, clock)
        self.assertTrue(reply.startswith(b"HTTP/1.1 400"))
        client.transport.loseConnection()
        yield client.lost

    @inlineCallbacks
    def test_stop_drops_connections(self) -> Generator[Deferred[Any], Any, None]:
        """stop closes open connections and the port, and fires when done."""
        server = listen_never_answering(reactor)
        client = yield self._connect(server.port)
        yield server.when_open_connections(1).addTimeout(5, clock)
        yield server.stop()
        yield client.lost.addTimeout(5, clock)
        self.assertEqual(server.open_connections, 0)
        endpoint = TCP4ClientEndpoint(reactor, LOOPBACK, server.port)
        yield self.assertFailure(
            connectProtocol(endpoint, _Client()), error.ConnectionRefusedError
        )

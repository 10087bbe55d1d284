"""
kazoo's reads fenced (`sentinel.zkframes`), on real bytes: through a
socket pair into kazoo's own reading code, and a real client against a
"ZooKeeper" on loopback that sends a frame length of 2**31-1 and then
bytes as fast as it can; and the kazoo installed still read as the fence
expects, so that an upgrade renaming what it wraps is caught.
"""

from __future__ import annotations

import inspect
import logging
import socket
import struct
import threading
from typing import Any

from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionDropped
from kazoo.protocol.connection import ConnectionHandler
from kazoo.protocol.serialization import Connect, Exists
from kazoo.retry import KazooRetry
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sentinel.zk import ZooKeeper
from sentinel.zkframes import FRAME_LIMIT, HANDSHAKE_FRAME_LIMIT, fence_reads
from tests.servers import LOOPBACK

# How long a read on the socket pair waits for bytes that never come.
READ_TIMEOUT = 0.2
# Bounds every wait on a thread of the test.
THREAD_WAIT = 10.0
NO_NODE = -101


def reply(xid: int, err: int = 0, body: bytes = b"") -> bytes:
    """One reply frame as ZooKeeper sends it: length, header, body."""
    frame = struct.pack("!iqi", xid, 1, err) + body
    return struct.pack("!i", len(frame)) + frame


class FencedConnection:
    """A real, unstarted kazoo client's connection, fenced, reading a socket pair."""

    def __init__(self, case: SynchronousTestCase) -> None:
        self.client = KazooClient(hosts=f"{LOOPBACK}:1")
        self.connection: Any = self.client._connection
        fence_reads(self.connection)
        ours, self.peer = socket.socketpair()
        ours.setblocking(False)
        self.connection._socket = ours
        case.addCleanup(ours.close)
        case.addCleanup(self.peer.close)

    def send(self, data: bytes) -> None:
        """What the "server" sends, from a thread (it may exceed the buffers)."""
        sender = threading.Thread(target=self._send, args=(data,), daemon=True)
        sender.start()

    def _send(self, data: bytes) -> None:
        try:
            self.peer.sendall(data)
        except OSError:
            pass  # The reader dropped it.

    def awaiting(self, xid: int) -> Any:
        """A call kazoo awaits the reply `xid` of (an exists)."""
        answer = self.client.handler.async_result()
        self.client._pending.append((Exists("/a", None), answer, xid))
        return answer


class FrameTests(SynchronousTestCase):
    """Frame lengths and replies that make no sense drop the connection."""

    def test_length_above_the_limit_drops_the_connection(self) -> None:
        """
        A frame length of 2**31-1 followed by bytes is refused before a
        byte of it is gathered: kazoo's ``ConnectionDropped``, naming it
        (unfenced, kazoo read on until the bytes stopped).
        """
        wire = FencedConnection(self)
        wire.send(struct.pack("!i", 2**31 - 1) + b"\xa5" * 65536)
        with self.assertRaises(ConnectionDropped) as raised:
            wire.connection._read_header(READ_TIMEOUT)
        self.assertIn("frame length of 2,147,483,647 bytes", str(raised.exception))

    def test_negative_length_drops_the_connection(self) -> None:
        """A negative length drops the connection (unfenced: ``struct.error``)."""
        wire = FencedConnection(self)
        wire.send(struct.pack("!i", -5))
        with self.assertRaises(ConnectionDropped) as raised:
            wire.connection._read_header(READ_TIMEOUT)
        self.assertIn("frame length of -5 bytes", str(raised.exception))

    def test_large_listing_read(self) -> None:
        """
        A reply of 20 MiB once the session is established is read whole:
        a listing of 20,000 names of 1,000 bytes, which a squatter may add
        under ``{root}/instances`` and ZooKeeper sends (capped at 16 MiB,
        it dropped the connection at each listing, in a loop).
        """
        wire = FencedConnection(self)
        body = b"\x00" * (20 * 2**20 - 16)
        wire.send(reply(1, body=body))
        header, frame, offset = wire.connection._read_header(THREAD_WAIT)
        self.assertEqual((header.xid, len(frame), offset), (1, 20 * 2**20, 16))

    def test_length_just_above_the_limit_drops_the_connection(self) -> None:
        """One byte more than `FRAME_LIMIT` is refused at its length."""
        wire = FencedConnection(self)
        wire.send(struct.pack("!i", FRAME_LIMIT + 1))
        with self.assertRaises(ConnectionDropped) as raised:
            wire.connection._read_header(READ_TIMEOUT)
        self.assertIn(
            f"frame length of {FRAME_LIMIT + 1:,} bytes", str(raised.exception)
        )

    def test_handshake_frame_above_its_limit_drops_the_connection(self) -> None:
        """
        Before the session is established (kazoo's ``_invoke``: the reply
        to its connect request), a frame over `HANDSHAKE_FRAME_LIMIT` is
        refused at its length: a peer not yet shown to be ZooKeeper (a
        wrong port) costs at most that, whatever the limit after.
        """
        wire = FencedConnection(self)
        wire.send(struct.pack("!i", HANDSHAKE_FRAME_LIMIT + 1) + b"\xa5" * 4096)
        connect = Connect(0, 0, 4000, 0, b"\x00" * 16, False)
        with self.assertRaises(ConnectionDropped) as raised:
            wire.connection._invoke(READ_TIMEOUT, connect)
        self.assertIn(
            f"frame length of {HANDSHAKE_FRAME_LIMIT + 1:,} bytes (at most"
            f" {HANDSHAKE_FRAME_LIMIT:,} before a session",
            str(raised.exception),
        )

    def test_limit_after_the_handshake_restored(self) -> None:
        """
        A handshake's reply read (or failed), frames are judged against
        `FRAME_LIMIT` again: a listing after a reconnection is read whole.
        """
        wire = FencedConnection(self)
        wire.send(struct.pack("!i", HANDSHAKE_FRAME_LIMIT + 1))
        connect = Connect(0, 0, 4000, 0, b"\x00" * 16, False)
        with self.assertRaises(ConnectionDropped):
            wire.connection._invoke(READ_TIMEOUT, connect)
        body = b"\x00" * (2 * HANDSHAKE_FRAME_LIMIT)
        wire.send(reply(1, body=body))
        header, frame, _ = wire.connection._read_header(THREAD_WAIT)
        self.assertEqual((header.xid, len(frame)), (1, len(body) + 16))

    def test_reply_sent_twice_drops_the_connection(self) -> None:
        """
        A reply sent twice answers its call once, then drops the
        connection (unfenced: ``IndexError``, which ended kazoo's
        connection thread).
        """
        wire = FencedConnection(self)
        answer = wire.awaiting(1)
        wire.send(reply(1, NO_NODE) * 2)
        wire.connection._read_socket(READ_TIMEOUT)
        self.assertIsNone(answer.get(timeout=0))
        with self.assertRaises(ConnectionDropped) as raised:
            wire.connection._read_socket(READ_TIMEOUT)
        self.assertIn("makes no sense (IndexError", str(raised.exception))

    def test_reply_to_another_call_drops_the_connection(self) -> None:
        """
        A reply whose xid is not the one awaited fails that call, as kazoo
        does, and drops the connection (unfenced: ``RuntimeError``).
        """
        wire = FencedConnection(self)
        answer = wire.awaiting(1)
        wire.send(reply(7, NO_NODE))
        with self.assertRaises(ConnectionDropped) as raised:
            wire.connection._read_socket(READ_TIMEOUT)
        self.assertIn("makes no sense (RuntimeError", str(raised.exception))
        self.assertIsInstance(answer.exception, RuntimeError)

    def test_header_too_short_drops_the_connection(self) -> None:
        """A frame shorter than a reply's header drops the connection."""
        wire = FencedConnection(self)
        wire.send(struct.pack("!i", 3) + b"abc")
        with self.assertRaises(ConnectionDropped) as raised:
            wire.connection._read_socket(READ_TIMEOUT)
        self.assertIn("makes no sense (error", str(raised.exception))

    def test_kazoo_own_drop_passes_as_it_is(self) -> None:
        """A connection the server closed stays kazoo's own drop."""
        wire = FencedConnection(self)
        wire.peer.close()
        with self.assertRaises(ConnectionDropped) as raised:
            wire.connection._read_socket(READ_TIMEOUT)
        self.assertEqual(str(raised.exception), "socket connection broken")


class KazooShapeTests(SynchronousTestCase):
    """The kazoo installed reads as the fence expects."""

    def test_reads_the_fence_wraps(self) -> None:
        """
        kazoo's connection still has the three reads the fence wraps,
        with the parameters it passes on, and reads frames through
        ``_read`` and replies through ``_read_socket``.
        """
        parameters = {
            "_read": ["self", "length", "timeout"],
            "_read_socket": ["self", "read_timeout"],
            "_invoke": ["self", "timeout", "request", "xid"],
        }
        for name, expected in parameters.items():
            method = getattr(ConnectionHandler, name)
            self.assertEqual(list(inspect.signature(method).parameters), expected)
        self.assertIn(
            "self._read(length", inspect.getsource(ConnectionHandler._read_header)
        )
        self.assertIn(
            "self._read_socket(", inspect.getsource(ConnectionHandler._connect_attempt)
        )

    def test_fenced_per_client(self) -> None:
        """The fence is the client's own: kazoo's class stays as it was."""
        wire = FencedConnection(self)
        self.assertIn("_read", vars(wire.connection))
        self.assertEqual(
            ConnectionHandler._read.__qualname__, "ConnectionHandler._read"
        )
        self.assertNotIn("_read", vars(KazooClient(hosts=f"{LOOPBACK}:1")._connection))

    def test_bridge_fences_its_clients(self) -> None:
        """The agent's bridge fences every kazoo client it makes."""
        made: list[KazooClient] = []

        def factory(**settings: Any) -> KazooClient:
            client = KazooClient(**settings)
            client.start_async = lambda: None  # type: ignore[method-assign]
            made.append(client)
            return client

        ZooKeeper(Clock(), f"{LOOPBACK}:1", 4.0, client_factory=factory).start()
        self.assertEqual(len(made), 1)
        self.assertIn("_read", vars(made[0]._connection))


class Streaming:
    """
    A "ZooKeeper" that sends each connection a frame length of 2**31-1,
    then bytes as fast as it can.
    """

    def __init__(self, case: SynchronousTestCase) -> None:
        self.listener = socket.create_server((LOOPBACK, 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = threading.Semaphore(0)
        self.done = threading.Event()
        case.addCleanup(self.close)
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.done.set()
        self.listener.close()

    def _accept(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.release()
            threading.Thread(target=self._stream, args=(conn,), daemon=True).start()

    def _stream(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(4096)
                conn.sendall(struct.pack("!i", 2**31 - 1))
                while not self.done.is_set():
                    conn.sendall(b"\xa5" * 65536)
            except OSError:
                pass


class StreamingServerTests(SynchronousTestCase):
    """A real kazoo client, fenced, against a "ZooKeeper" streaming a huge frame."""

    def test_huge_frame_dropped_and_connected_again(self) -> None:
        """
        The client drops the connection at the frame's length, says why,
        and connects again with its threads alive (unfenced, it gathered
        the stream until it ended: gigabytes, and no second connection).
        """
        server = Streaming(self)
        dropped: list[str] = []
        logger = logging.getLogger("test-zkframes")
        logger.propagate = False
        handler = logging.Handler(logging.WARNING)
        handler.emit = lambda record: dropped.append(record.getMessage())  # type: ignore[method-assign]
        logger.addHandler(handler)
        self.addCleanup(logger.removeHandler, handler)
        client = KazooClient(
            hosts=f"{LOOPBACK}:{server.port}",
            timeout=4.0,
            connection_retry=KazooRetry(max_tries=-1, delay=0.05, max_delay=0.1),
            logger=logger,
        )
        fence_reads(client._connection)
        client.start_async()
        self.addCleanup(client.close)
        self.addCleanup(client.stop)
        for _ in range(2):
            self.assertTrue(server.accepted.acquire(timeout=THREAD_WAIT))
        self.assertIn(
            "Connection dropped: ZooKeeper sent a frame length of 2,147,483,647"
            f" bytes (at most {HANDSHAKE_FRAME_LIMIT:,} before a session)",
            dropped,
        )

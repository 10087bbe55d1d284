"""
Hostile Redis servers, in a process of their own, for measuring what they do
to an agent (its RSS, its other checks) without loading the test process.

    python -m tests.hostile --listen MODE:FD [--listen MODE:FD:tls ...]
        [--cert PEM --key PEM] [--hangup-after SECONDS]

Each listener is a listening socket inherited from the parent (so there is
no race with its readiness), serving one of the modes:

- ``flood``: after the first command, ``+PONG\\r\\n`` as fast as the socket
  takes it;
- ``duplicate``: a working Redis that answers every command twice;
- ``hugebulk``: answers the first command with ``$1000000000\\r\\n``, then
  bytes without end;
- ``endless``: answers the first command with bytes and never an end of line;
- ``unsolicited``: speaks first (``+PONG\\r\\n`` on connect), then works.
- ``trickle``: a working Redis that sends each reply a byte every 50 ms;
- ``nested``: answers PING, and every other command (HELLO, INFO) with
  arrays nested 2,000 deep (8 KB, within the size of the replies the
  agent takes) around ``+OK``;
- ``loading``: a working Redis whose PINGs on a connection are answered
  ``+PONG`` and ``-LOADING`` in turn (``ready`` changes at every check);
- ``roleflip``: a working Redis whose INFOs on a connection say master
  and replica in turn;
- ``wandering``: a replica whose link to its master is down and whose
  INFO names another master at every answer.

- ``jitter``: a working Redis that answers each PING `JITTER` (0.4--0.6 s)
  after it: around the agent's default timeout (0.5 s), ±20 %.

The last four are well-formed: they change what the agent publishes,
as often as they are asked.

- ``hangup``: a working Redis that closes the connection once it has
  answered a check's commands (`HANGUP_AFTER`, or ``--hangup-after``,
  with nothing more asked), as a proxy with a short idle timeout would: a
  connect per check;
- ``slowbyte``: a working Redis that sends each reply a byte every 100 ms
  (``+PONG\r\n`` in 0.6--0.7 s: just over the default timeout).

- ``infoslaves``, ``infocommas``, ``infobytes``, ``inforole``,
  ``infohost``: a working Redis whose INFO replies fit within the agent's
  cap on a reply (64 KiB) and are built to cost it the most to read (see
  `COSTLY_INFOS`).

Every endless stream waits for the socket to drain, so the server's own
memory stays bounded; a stream ends when the client goes. With ``:tls`` a
listener speaks TLS with ``--cert`` and ``--key``. It runs until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import ssl
from collections.abc import Awaitable, Callable

StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

CHUNK = 64 * 1024
INFO = b"# Replication\r\nrole:master\r\nconnected_slaves:0\r\n"


async def read_command(reader: asyncio.StreamReader) -> list[bytes] | None:
    """One RESP command (an array of bulks, or an inline line); None at EOF."""
    line = await reader.readline()
    if not line:
        return None
    if not line.startswith(b"*"):
        return line.split()
    args = []
    for _ in range(int(line[1:])):
        header = await reader.readline()
        data = await reader.readexactly(int(header[1:]) + 2)
        args.append(data[:-2])
    return args


def reply_to(command: list[bytes]) -> bytes:
    """What a healthy Redis master would answer."""
    name = command[0].upper() if command else b""
    if name == b"PING":
        return b"+PONG\r\n"
    if name == b"INFO":
        return b"$%d\r\n%s\r\n" % (len(INFO), INFO)
    if name == b"AUTH":
        return b"+OK\r\n"
    return b"-ERR unknown command\r\n"


async def stream(writer: asyncio.StreamWriter, chunk: bytes) -> None:
    """Write `chunk` again and again, as fast as the client reads."""
    while not writer.is_closing():
        writer.write(chunk)
        await writer.drain()
        # Over TLS, once the socket is gone, drain() returns at once and the
        # loss is only reported from the event loop: yield to it, or this
        # loop spins and starves every other connection.
        await asyncio.sleep(0)


async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    if await read_command(reader) is not None:
        await stream(writer, b"+PONG\r\n" * (CHUNK // 7))


async def duplicate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while (command := await read_command(reader)) is not None:
        writer.write(reply_to(command) * 2)
        await writer.drain()


async def hugebulk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    if await read_command(reader) is not None:
        writer.write(b"$1000000000\r\n")
        await stream(writer, b"x" * CHUNK)


async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    if await read_command(reader) is not None:
        await stream(writer, b"x" * CHUNK)


async def unsolicited(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    writer.write(b"+PONG\r\n")
    while (command := await read_command(reader)) is not None:
        writer.write(reply_to(command))
        await writer.drain()


def trickling(delay: float) -> StreamHandler:
    """A working Redis that sends each reply a byte every `delay` seconds."""

    async def trickle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        while (command := await read_command(reader)) is not None:
            for byte in reply_to(command):
                writer.write(bytes([byte]))
                await writer.drain()
                await asyncio.sleep(delay)

    return trickle


trickle = trickling(0.05)


async def nested(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while (command := await read_command(reader)) is not None:
        if command[:1] == [b"PING"]:
            writer.write(b"+PONG\r\n")
        else:
            writer.write(b"*1\r\n" * 2000 + b"+OK\r\n")
        await writer.drain()


def _bulk(text: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(text), text)


async def loading(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    pings = 0
    while (command := await read_command(reader)) is not None:
        if command[:1] == [b"PING"]:
            pings += 1
        if command[:1] == [b"PING"] and pings % 2 == 0:
            writer.write(b"-LOADING Redis is loading the dataset in memory\r\n")
        else:
            writer.write(reply_to(command))
        await writer.drain()


async def roleflip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    infos = 0
    replica = (
        b"# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\n"
        b"master_port:6379\r\nmaster_link_status:up\r\n"
    )
    while (command := await read_command(reader)) is not None:
        if command[:1] == [b"INFO"]:
            infos += 1
            writer.write(_bulk(replica if infos % 2 == 0 else INFO))
        else:
            writer.write(reply_to(command))
        await writer.drain()


async def wandering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    infos = 0
    while (command := await read_command(reader)) is not None:
        if command[:1] == [b"INFO"]:
            infos += 1
            writer.write(
                _bulk(
                    b"# Replication\r\nrole:slave\r\nmaster_host:10.%d.%d.%d\r\n"
                    b"master_port:6379\r\nmaster_link_status:down\r\n"
                    % (infos >> 16 & 255, infos >> 8 & 255, infos & 255)
                )
            )
        else:
            writer.write(reply_to(command))
        await writer.drain()


# Seconds a ``jitter`` server takes to answer a PING: the agent's default
# timeout (0.5 s), give or take 20 %.
JITTER = (0.4, 0.6)


async def jitter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while (command := await read_command(reader)) is not None:
        if command[:1] and command[0].upper() == b"PING":
            await asyncio.sleep(random.uniform(*JITTER))
        writer.write(reply_to(command))
        await writer.drain()


def _within_cap(head: bytes, line: bytes, count: int = 100_000) -> bytes:
    # `head`, then `line` (formatted with its number) up to `count` times,
    # all within the 64 KiB the agent takes of one reply.
    out = bytearray(head)
    for number in range(count):
        more = line % number if b"%d" in line else line
        if len(out) + len(more) > CHUNK - 16:
            break
        out += more
    return bytes(out)


# Seconds a ``hangup`` server waits for more of a check's commands
# before it closes: a check's commands come in one write.
HANGUP_AFTER = 0.05


async def hangup(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    command = await read_command(reader)
    while command is not None:
        writer.write(reply_to(command))
        await writer.drain()
        if HANGUP_AFTER <= 0:
            if not reader._buffer:  # type: ignore[attr-defined]
                break  # Nothing more asked yet: closed right after the reply.
            command = await read_command(reader)
            continue
        try:
            command = await asyncio.wait_for(read_command(reader), HANGUP_AFTER)
        except TimeoutError:
            break
    # Closed once the replies are out (an abort drops what TLS still holds).
    writer.close()
    await writer.wait_closed()


# INFO replies within the agent's reply cap, built to cost it the most to
# read (measured by hand: 1--6 ms of CPU each, the plain INFO 2 us).
COSTLY_INFOS = {
    # Thousands of replica lines, all one address: each line is parsed, and
    # the cap on replicas kept (256) is never reached.
    "infoslaves": _within_cap(INFO, b"slave%d:ip=a,port=1\r\n"),
    # One replica line of 60,000 fields.
    "infocommas": _within_cap(INFO, b"slave0:" + b"," * 60_000 + b"\r\n", 1),
    # Keys of NULs, values of bytes that are no UTF-8.
    "infobytes": _within_cap(INFO, b"\x00\x00\x00%d:\xff\xfe\r\n"),
    # The role line, again and again.
    "inforole": _within_cap(INFO, b"role:master\r\n"),
    # A replica whose master_host is 60 KB.
    "infohost": b"# Replication\r\nrole:slave\r\nmaster_host:"
    + b"a" * 60_000
    + b"\r\nmaster_port:6379\r\nmaster_link_status:up\r\n",
}


def costly_info(info: bytes) -> StreamHandler:
    """A working Redis whose every INFO reply is `info`."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        while (command := await read_command(reader)) is not None:
            if command[:1] == [b"INFO"]:
                writer.write(_bulk(info))
            else:
                writer.write(reply_to(command))
            await writer.drain()

    return serve


MODES: dict[str, StreamHandler] = {
    "flood": flood,
    "duplicate": duplicate,
    "hugebulk": hugebulk,
    "endless": endless,
    "unsolicited": unsolicited,
    "trickle": trickle,
    "nested": nested,
    "loading": loading,
    "roleflip": roleflip,
    "wandering": wandering,
    "jitter": jitter,
    "hangup": hangup,
    "slowbyte": trickling(0.1),
    **{mode: costly_info(info) for mode, info in COSTLY_INFOS.items()},
}


def serving(mode: StreamHandler) -> StreamHandler:
    """`mode`, ending quietly when the client goes or sends nonsense."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await mode(reader, writer)
        except (OSError, EOFError, ValueError, IndexError):
            pass
        finally:
            writer.transport.abort()

    return serve


async def main(listeners: list[tuple[str, int, bool]], tls: ssl.SSLContext | None):
    servers = []
    for mode, fd, secure in listeners:
        sock = socket.socket(fileno=fd)
        servers.append(
            await asyncio.start_server(
                serving(MODES[mode]), sock=sock, ssl=tls if secure else None
            )
        )
    await asyncio.gather(*(server.serve_forever() for server in servers))


def parse_listener(text: str) -> tuple[str, int, bool]:
    """``MODE:FD`` or ``MODE:FD:tls``."""
    mode, fd, *rest = text.split(":")
    if mode not in MODES or rest not in ([], ["tls"]):
        raise argparse.ArgumentTypeError(f"bad listener {text!r}")
    return mode, int(fd), rest == ["tls"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", type=parse_listener, action="append", default=[])
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--hangup-after", type=float, default=HANGUP_AFTER)
    options = parser.parse_args()
    HANGUP_AFTER = options.hangup_after
    context = None
    if options.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(options.cert, options.key)
    asyncio.run(main(options.listen, context))

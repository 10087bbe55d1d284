"""
One hostile HTTP client against a real agent, as a probe sees it.

An agent (``twistd -n sentinel``, ``--instances`` on two real
redis-servers, a real ZooKeeper) is let settle; then, for each
``--modes``, one attacking client (a process of its own) runs for
``--for`` seconds while this script asks ``/healthz`` every 0.5 s:

- ``slowloris``: 200 connections, each sending a ``GET`` head a byte a
  second, a new one opened whenever one is closed;
- ``bodies``: the same with a ``POST`` head whole and a 60,000-byte body
  a byte a second;
- ``idle``: the same with connections that send nothing;
- ``pipeline``: 64 connections, each sending 100 ``GET /instances`` in
  one write and reading nothing (a 4 KB receive buffer);
- ``flood``: connections opened and closed as fast as two processes can;
- ``keptalive``: 64 connections, each sending one ``GET /healthz`` in its
  first write, reading its answer and then holding its place kept alive,
  a new one opened whenever one is closed, and each renewed before it
  has waited 10 s (the agent's ``STALE_AFTER``);
- ``pages``: 50 clients, each walking ``/instances?limit=100&after=``
  page after page in a loop on a kept-alive connection, as fast as it
  is answered;
- ``scrapes``: 20 clients, each asking ``/metrics`` every 100 ms on a
  kept-alive connection (200 scrapes a second, a scraper's interval of
  15 s taken down to a tenth of a second);
- ``heads``: connections in a loop, one at a time, each sending a head
  of 5,000 header fields, one with a 1 MB header line, or one header
  folded over 5,000 continuation lines (obs-fold), in turn;
- ``smuggling``: connections in a loop, each sending a ``POST`` with
  both ``Content-Length`` and ``Transfer-Encoding: chunked``, or two
  ``Content-Length`` fields, its body the head of a ``GET /pending``
  (that no answer may come to);
- ``chunked``: connections in a loop, each a ``POST`` to each route in
  turn with an endless chunked body sent as fast as the agent takes it;
- ``deep``: one connection sending 1,000 ``GET /instances`` pipelined and
  reading none of the answers, opened again when closed;
- ``odd``: every odd request of `ODD_REQUESTS` (percent-encoded names,
  ``limit=`` and ``after=`` values, ``Accept`` variants on ``/metrics``,
  ``HEAD`` on every route, ``OPTIONS *``, HTTP/1.0 without ``Host``,
  ``Expect: 100-continue``, a ``Host`` header missing or twice, a target
  in absolute form), each on a connection of its own, in a loop: each
  answer's status is checked against the one expected (the row says how
  many were not, and the first few);
- ``none``: no client but the probe, for comparison.

The clients of ``pages`` and ``scrapes`` are threads of one process, so
that on this shared machine they take at most one core from the agent.

Printed for each: the probes answered 200 (and otherwise what they met),
the slowest, the checks that failed and the instances not up meanwhile,
overruns, the agent's CPU, its RSS and open files at most, and the HTTP
connections it refused and evicted.

    .venv/bin/python benchmarks/hostilehttp.py [--instances 1000] [--for 20]
        [--modes slowloris,bodies,idle,pipeline,flood,keptalive,pages,scrapes,
                 heads,smuggling,chunked,deep,odd,none]
        [--checkout before=PATH --checkout after=.]
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    LOOPBACK,
    Agent,
    Instance,
    add_checkout_option,
    agent_config,
    check_choices,
    load_average,
    open_files_for,
    rows_in_turns,
    start_redis_servers,
    start_zookeeper,
    table,
    wait_until,
)

MODES = (
    "slowloris",
    "bodies",
    "idle",
    "pipeline",
    "flood",
    "keptalive",
    "pages",
    "scrapes",
    "heads",
    "smuggling",
    "chunked",
    "deep",
    "odd",
    "none",
)
HEADS = {
    "slowloris": b"GET /instances HTTP/1.1\r\nHost: agent\r\n",
    "bodies": b"POST /instances HTTP/1.1\r\nHost: agent\r\n"
    b"Content-Length: 60000\r\n\r\n",
    "idle": b"",
}
TRICKLED = 200
PIPELINED = 64
KEPT = 64
# Seconds a kept-alive connection is held before the attacker renews it:
# under the agent's STALE_AFTER (10 s), so that none has waited that long.
RENEW_AFTER = 9.0
PAGERS = 50
PAGE = 100
SCRAPERS = 20
SCRAPE_EVERY = 0.1
HOST = b"Host: agent\r\n"
# Heads over the agent's limits: too many fields, too long a line, and
# one field folded over thousands of lines (each within the limits).
HEADS_OVER = (
    b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-F: v\r\n" * 5000 + b"\r\n",
    b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-L: " + b"l" * 2**20 + b"\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\n" + HOST + b"X-O: o\r\n" + b" o\r\n" * 5000 + b"\r\n",
)
SMUGGLED = b"GET /pending HTTP/1.1\r\n" + HOST + b"\r\n"
SMUGGLING = (
    b"POST /healthz HTTP/1.1\r\n" + HOST + b"Content-Length: %d\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % (5 + len(SMUGGLED)) + SMUGGLED,
    b"POST /healthz HTTP/1.1\r\n" + HOST + b"Content-Length: 0\r\n"
    b"Content-Length: %d\r\n\r\n" % len(SMUGGLED) + SMUGGLED,
)
ROUTES = (
    "/",
    "/pending",
    "/instances",
    "/instances/cache1",
    "/healthz",
    "/debug/stats",
    "/metrics",
    "/group",
)
CHUNK = b"%x\r\n%s\r\n" % (2**16, b"c" * 2**16)
DEEP = 1000
OPENMETRICS = "application/openmetrics-text"
# (request line and headers but Host, whether to send Host, status expected)
ODD_REQUESTS: tuple[tuple[str, bool, int], ...] = (
    *(
        (f"GET /instances/{name} HTTP/1.1", True, 404)
        for name in (
            "cache1%2F..%2Fcache2",
            "..",
            "%2E%2E",
            "cache1%00",
            "a%00b",
        )
    ),
    ("GET /instances/%ff%fe HTTP/1.1", True, 400),
    ("GET /instances/../healthz HTTP/1.1", True, 404),
    ("GET /instances?limit=1&after=%ff HTTP/1.1", True, 400),
    ("GET /instances?limit=1&after=cache1%00 HTTP/1.1", True, 200),
    ("GET /instances?limit=1&after=%2F.. HTTP/1.1", True, 200),
    *(
        (f"GET /instances?limit={n} HTTP/1.1", True, 400)
        for n in (
            "0",
            "-1",
            "1e9",
            "1&limit=2",
            "",
            "99999999999999999999",
            "+1",
            " 1",
        )
    ),
    ("GET /instances?status=sideways HTTP/1.1", True, 400),
    ("GET /instances?status=up&status=down HTTP/1.1", True, 400),
    *(
        (f"GET /metrics HTTP/1.1\r\nAccept: {accept}", True, 200)
        for accept in (
            OPENMETRICS,
            f"{OPENMETRICS}; version=1.0.0",
            f"{OPENMETRICS}; version=0.0.1",
            f"{OPENMETRICS}; version=2.0.0; escaping=allow-utf-8",
            f"{OPENMETRICS}; q=0",
            f"{OPENMETRICS}; q=oops",
            "APPLICATION/OPENMETRICS-TEXT",
            ";;;,,,",
            f"{OPENMETRICS};version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1",
        )
    ),
    (f"GET /metrics HTTP/1.1\r\nAccept: text/plain;q=0, {OPENMETRICS};q=0", True, 406),
    *((f"HEAD {route} HTTP/1.1", True, 200) for route in ROUTES),
    ("OPTIONS * HTTP/1.1", True, 405),
    ("GET * HTTP/1.1", True, 400),
    ("GET /healthz HTTP/1.0", False, 200),
    ("POST /healthz HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0", True, 405),
    (
        "POST /instances HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 99999999",
        True,
        413,
    ),
    ("GET /healthz HTTP/1.1", False, 200),
    ("GET /healthz HTTP/1.1\r\nHost: other", True, 400),
    ("GET /healthz HTTP/1.1\r\nHost: a b", False, 400),
    ("GET http://agent/healthz HTTP/1.1", True, 200),
    ("GET http://agent:6060/instances?limit=1 HTTP/1.1", True, 200),
    ("GET ftp://agent/healthz HTTP/1.1", True, 400),
)


def trickle(mode: str, port: int, until: float) -> None:
    """`TRICKLED` connections, each sent a byte a second, reopened when closed."""
    sent: dict[socket.socket, int] = {}
    whole = mode == "bodies"
    while time.time() < until:
        while len(sent) < TRICKLED:
            s = socket.socket()
            try:
                s.connect((LOOPBACK, port))
            except OSError:
                s.close()
                break
            s.setblocking(False)
            sent[s] = 0
            if whole:
                s.send(HEADS[mode])
        for s, count in list(sent.items()):
            head = HEADS[mode]
            data = b"" if mode == "idle" else head[count : count + 1] or b"X"
            try:
                if data:
                    s.send(data)
                if s.recv(65536) == b"":
                    raise ConnectionResetError
            except BlockingIOError:
                sent[s] = count + 1
            except OSError:
                s.close()
                del sent[s]
        time.sleep(1.0)


def connect_and_send(
    port: int, request: bytes, receive_buffer: int | None = None
) -> socket.socket | None:
    """A connection to `port` that has sent `request`; None if refused."""
    s = socket.socket()
    if receive_buffer is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    try:
        s.connect((LOOPBACK, port))
        s.sendall(request)
    except OSError:
        s.close()
        return None
    return s


def pipeline(port: int, until: float) -> None:
    """`PIPELINED` connections, each 100 requests in one write, nothing read."""
    request = b"GET /instances HTTP/1.1\r\nHost: agent\r\n\r\n" * 100
    held: list[socket.socket] = []
    while time.time() < until:
        held = [s for s in held if s.fileno() != -1]
        while len(held) < PIPELINED:
            s = connect_and_send(port, request, receive_buffer=4096)
            if s is None:
                break
            held.append(s)
        time.sleep(0.5)


def kept_alive(port: int, until: float) -> None:
    """
    `KEPT` connections, each one ``GET /healthz`` then held, reopened at
    once when closed and renewed after `RENEW_AFTER`.
    """
    request = b"GET /healthz HTTP/1.1\r\nHost: agent\r\n\r\n"
    opened: dict[socket.socket, float] = {}
    while time.time() < until:
        now = time.monotonic()
        for s, since in list(opened.items()):
            try:
                closed = s.recv(65536) == b""
            except BlockingIOError:
                closed = False
            except OSError:
                closed = True
            if closed or now - since >= RENEW_AFTER:
                s.close()
                del opened[s]
        while len(opened) < KEPT:
            s = connect_and_send(port, request)
            if s is None:
                break
            s.setblocking(False)
            opened[s] = time.monotonic()
        time.sleep(0.02)


def each_connection(port: int, until: float, send: Any) -> None:
    """
    Connections one after the other until `until`, each given to `send`
    (the connection's number, then the connection); reopened when closed.
    """
    number = 0
    while time.time() < until:
        s = socket.socket()
        s.settimeout(5.0)
        try:
            s.connect((LOOPBACK, port))
            send(number, s)
        except OSError:
            pass
        finally:
            s.close()
        number += 1


def read_all(s: socket.socket) -> bytes:
    """What the agent writes to `s` until it closes it (or 5 s pass)."""
    data = []
    try:
        while chunk := s.recv(65536):
            data.append(chunk)
    except OSError:
        pass
    return b"".join(data)


def heads(port: int, until: float) -> None:
    """Heads over the agent's limits, one connection each, in turn."""

    def send(number: int, s: socket.socket) -> None:
        s.sendall(HEADS_OVER[number % len(HEADS_OVER)])
        read_all(s)

    each_connection(port, until, send)


def smuggling(port: int, until: float) -> None:
    """Requests whose length is said twice over, a request hidden behind."""
    answered = 0

    def send(number: int, s: socket.socket) -> None:
        nonlocal answered
        s.sendall(SMUGGLING[number % len(SMUGGLING)])
        answered += read_all(s).count(b'"checks"')

    each_connection(port, until, send)
    if answered:
        print(f"smuggling: the hidden request was answered {answered} times")


def chunked(port: int, until: float) -> None:
    """Endless chunked bodies, to each route in turn, as fast as taken."""

    def send(number: int, s: socket.socket) -> None:
        route = ROUTES[number % len(ROUTES)].encode()
        s.sendall(b"POST %s HTTP/1.1\r\n%sTransfer-Encoding: chunked\r\n\r\n"
                  % (route, HOST))  # fmt: skip
        while time.time() < until:
            s.sendall(CHUNK)

    each_connection(port, until, send)


def deep(port: int, until: float) -> None:
    """One connection, `DEEP` ``GET /instances`` pipelined, none read."""
    request = b"GET /instances HTTP/1.1\r\n" + HOST + b"\r\n"

    def send(number: int, s: socket.socket) -> None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(max(0.1, until - time.time()))
        s.sendall(request * DEEP)
        time.sleep(max(0.0, until - time.time()))

    each_connection(port, until, send)


def odd_request(port: int, line: str, host: bool) -> int | str:
    """The status of the answer to `line` (and Host, if `host`), alone."""
    head = line.replace("6060", str(port)) + ("\r\nHost: agent" if host else "")
    s = socket.socket()
    s.settimeout(10.0)
    try:
        s.connect((LOOPBACK, port))
        s.sendall(head.encode("latin-1") + b"\r\nConnection: close\r\n\r\n")
        answer = read_all(s)
    except OSError as e:
        return type(e).__name__
    finally:
        s.close()
    # A 100 Continue comes before the answer.
    answer = answer.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n")
    try:
        return int(answer.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return f"no answer ({len(answer)} bytes)"


def odd(port: int, until: float) -> None:
    """Each of `ODD_REQUESTS` in a loop; the answers not as expected."""
    rounds, wrong = 0, Counter[str]()
    while time.time() < until:
        for line, host, expected in ODD_REQUESTS:
            status = odd_request(port, line, host)
            if status != expected:
                sent = line + ("\r\nHost: agent" if host else "")
                shown = sent.replace("\r\n", " | ")
                wrong[f"{shown}: {status}, not {expected}"] += 1
        rounds += 1
    print(
        f"odd: {rounds} rounds of {len(ODD_REQUESTS)} requests; answered"
        f" otherwise than expected: {len(wrong)} kinds"
        + "".join(f"\n  {w} ({n} times)" for w, n in wrong.most_common())
    )


def flood(port: int, until: float) -> None:
    """Connections opened and closed as fast as one process can."""
    while time.time() < until:
        s = socket.socket()
        try:
            s.connect((LOOPBACK, port))
        except OSError:
            pass
        s.close()


def _get(
    port: int, connection: http.client.HTTPConnection | None, path: str
) -> tuple[http.client.HTTPConnection | None, bytes | None]:
    """`path` on a kept-alive `connection` (a new one if None or closed)."""
    try:
        if connection is None:
            connection = http.client.HTTPConnection(LOOPBACK, port, timeout=15)
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            return connection, None
        return connection, body
    except (OSError, http.client.HTTPException):
        if connection is not None:
            connection.close()
        return None, None


def walk_pages(port: int, until: float) -> None:
    """One client: ``/instances`` a page at a time, over and over."""
    connection, after = None, None
    while time.time() < until:
        path = f"/instances?limit={PAGE}" + (f"&after={after}" if after else "")
        connection, body = _get(port, connection, path)
        after = None if body is None else json.loads(body)["next"]


def scrape(port: int, until: float) -> None:
    """One client: ``/metrics`` every `SCRAPE_EVERY`, kept alive."""
    connection = None
    while (now := time.time()) < until:
        connection, _ = _get(port, connection, "/metrics")
        time.sleep(max(0.0, SCRAPE_EVERY - (time.time() - now)))


def clients(target: Any, count: int, port: int, until: float) -> None:
    """`count` threads running `target`, in this process."""
    threads = [
        threading.Thread(target=target, args=(port, until)) for _ in range(count)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


OTHERS = {
    "heads": heads,
    "smuggling": smuggling,
    "chunked": chunked,
    "deep": deep,
    "odd": odd,
}


def attack(mode: str, port: int, until: float) -> None:
    """Run `mode` against `port` until the time `until` (a process's target)."""
    if mode == "pipeline":
        pipeline(port, until)
    elif mode == "flood":
        flood(port, until)
    elif mode == "keptalive":
        kept_alive(port, until)
    elif mode == "none":
        time.sleep(max(0.0, until - time.time()))
    elif mode == "pages":
        clients(walk_pages, PAGERS, port, until)
    elif mode == "scrapes":
        clients(scrape, SCRAPERS, port, until)
    elif mode in OTHERS:
        OTHERS[mode](port, until)
    else:
        trickle(mode, port, until)


def probe(port: int) -> tuple[str, float]:
    """One ``/healthz``: what it met (its status, or the error), and how long."""
    started = time.monotonic()
    try:
        url = f"http://{LOOPBACK}:{port}/healthz"
        with urllib.request.urlopen(url, timeout=15) as response:
            met = str(response.status)
    except urllib.error.HTTPError as e:
        met = str(e.code)
        try:
            reasons = json.loads(e.read())["reasons"]
        except (OSError, ValueError, KeyError, TypeError):
            reasons = []
        if reasons:
            # Its first reason, without figures: probes count alike.
            words = reasons[0].split()[:6]
            met += " " + " ".join(w for w in words if not w[:1].isdigit())
    except (OSError, urllib.error.URLError) as e:
        met = type(getattr(e, "reason", e)).__name__
    return met, time.monotonic() - started


def one_mode(agent: Agent, mode: str, duration: float) -> str:
    """`mode` for `duration` seconds, as the probe and the agent saw it."""
    before = agent.get("/debug/stats")
    cpu = agent.cpu_seconds()
    until = time.time() + duration
    attackers = [
        multiprocessing.Process(target=attack, args=(mode, agent.http_port, until))
        for _ in range(2 if mode == "flood" else 1)
    ]
    for attacker in attackers:
        attacker.start()
    met: Counter[str] = Counter()
    slowest = rss = fds = 0.0
    not_up = set()
    while time.time() < until:
        answer, took = probe(agent.http_port)
        met[answer] += 1
        slowest = max(slowest, took)
        rss = max(rss, agent.rss_bytes())
        fds = max(fds, agent.process.num_fds())
        time.sleep(0.5)
    for attacker in attackers:
        attacker.join(30)
        if attacker.is_alive():
            attacker.kill()
    time.sleep(1.0)
    after = agent.get("/debug/stats")
    cpu = agent.cpu_seconds() - cpu
    for name, instance in agent.instances().items():
        if instance.get("status") != "up":
            not_up.add(name)
    http: dict[str, Any] = {
        key: after["http"][key] - before["http"][key]
        for key in ("refused_connections", "evicted_connections")
    }
    probes = sum(met.values())
    return (
        f"/healthz 200 {met['200']} of {probes} ({dict(met)}), slowest"
        f" {slowest * 1000:.0f} ms; failed checks"
        f" {after['failures'] - before['failures']}, not up {len(not_up)},"
        f" overruns {after['overruns'] - before['overruns']}; CPU {cpu:.1f} s,"
        f" RSS {rss / 2**20:.0f} MiB, {fds:.0f} open files at most; refused"
        f" {http['refused_connections']}, evicted {http['evicted_connections']};"
        f" load {load_average()}"
    )


def one_run(
    args: argparse.Namespace, label: str, checkout: Path, number: int
) -> list[tuple[str, str]]:
    """Every mode once, against one agent of `checkout`'s code."""
    rows = []
    with ExitStack() as started, tempfile.TemporaryDirectory() as scratch:
        servers = start_redis_servers(2, started)
        zookeeper, _ = start_zookeeper(started)
        watched = [
            Instance(f"cache{i}", servers[i % 2].port) for i in range(args.instances)
        ]
        config = agent_config(watched, zookeeper=zookeeper.hosts, agent_id="a0")
        agent = Agent(Path(scratch), config, label="a0", pythonpath=checkout,
                      open_files=open_files_for(args.instances))  # fmt: skip
        started.callback(agent.stop)
        agent.wait_ready()
        wait_until(
            lambda: agent.get("/debug/stats")["instances_up"] == args.instances,
            60,
            "every instance up",
            poll=0.5,
        )
        for mode in args.modes.split(","):
            time.sleep(3.0)
            row = one_mode(agent, mode, args.duration)
            rows.append((f"{label} run {number + 1} {mode}", row))
    return rows


def main() -> None:
    """Parse the options, run the modes per checkout in turns, print a table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--for", dest="duration", type=float, default=20.0)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--runs", type=int, default=1)
    add_checkout_option(parser)
    args = parser.parse_args()
    check_choices(parser, "--modes", args.modes, MODES)
    print(table(rows_in_turns(parser, args, one_run), "One hostile HTTP client"))


if __name__ == "__main__":
    main()

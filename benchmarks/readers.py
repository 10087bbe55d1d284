"""
Discovery as its readers see it (DESIGN.md section 5, "Discovery nodes",
and section 8): ``--agents`` ``twistd -n sentinel`` agents share
``--instances`` instances (one redis-server each) with ``--replicas``,
publishing ``--form`` members under ``/disc/{service}`` (services
``cache`` and ``sessions``); a reader polls each service's members every
50 ms (kazoo), and with ``--prometheus`` a real Prometheus (scrape
interval 1 s) reads them through ``serverset_sd_configs`` /
``nerve_sd_configs`` and its ``/api/v1/targets`` is polled every 250 ms.
Then ``--event``, ``--runs`` times:

- ``redis-restart``: the first redis-server killed, started again 6 s later;
- ``agent-kill``: ``kill -9`` the first agent, started again 3 s later;
- ``agent-term``: SIGTERM the first agent, started again at once;
- ``agent-stop``: SIGSTOP the first agent past its session timeout, SIGCONT;
- ``reload-service``: every agent's config moves the first instance to the
  other service, SIGHUP to each 0.5 s apart (then back, next run);
- ``reload-labels``: the same, its nerve labels changed;
- ``redis-loading``: the first redis-server replaced for 6 s by a server
  answering ``-LOADING`` (alive, not ready), then started again;
- ``deploy-service``: a rolling deploy of a config giving every instance
  the other service, each agent stopped and started in turn, 5 s apart;
- ``join-moved``: only the first agent's config does so (a deploy half
  done): it leaves, and joins the group again 8 s later.

Printed per run: for each reader, how long an instance that should be
listed was missing, listed twice, or listed where it should not be (a
stale service after a move, a dead Redis still listed past its ``fall``
detection), the count of such spans, and the longest; and how long an
endpoint was listed in both services at once. ``READERS_TRACE=1`` prints
each change a reader saw, ``READERS_KEEP=DIR`` keeps the agents' logs.

    .venv/bin/python benchmarks/readers.py --event agent-kill --replicas 2
        [--form nerve] [--state-dir] [--prometheus] [--runs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import threading
import time
import urllib.error
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    LOOPBACK,
    Agent,
    load_average,
    start_redis_servers,
    start_zookeeper,
    stop_on_sigterm,
    wait_until,
)
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

from tests.prometheus import PrometheusServer

ROOT = "/readers"
DISCOVERY = "/disc"
SERVICES = ("cache", "sessions")
POLL = 0.05
# Detection of a dead Redis (fall 3 at 1 s), and a second of slack.
DETECTION = 4.5
# How long ``redis-restart`` keeps the Redis dead.
DOWN = 6.0

# (service, endpoint): how many members list it, over time.
Listing = dict[tuple[str, str], int]


class Poller(threading.Thread):
    """Calls `listing` every `every` seconds; keeps each change of it."""

    every = POLL

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.history: list[tuple[float, Listing]] = []
        self.stopping = threading.Event()
        self.start()

    def listing(self) -> Listing:
        raise NotImplementedError

    def run(self) -> None:
        while not self.stopping.wait(self.every):
            try:
                listing = self.listing()
            except Exception:
                continue  # ZooKeeper or Prometheus busy: nothing seen.
            now = time.monotonic()
            if not self.history or self.history[-1][1] != listing:
                self.history.append((now, listing))

    def stop(self) -> None:
        self.stopping.set()
        self.join(10.0)


class Reader(Poller):
    """Every service's members, read from ZooKeeper (each member once)."""

    def __init__(self, hosts: str) -> None:
        self.client = KazooClient(hosts=hosts, timeout=10.0)
        self.client.start(timeout=10.0)
        self.says: dict[str, str] = {}
        super().__init__()

    def listing(self) -> Listing:
        client = self.client
        listing: Counter[tuple[str, str]] = Counter()
        for service in SERVICES:
            parent = f"{DISCOVERY}/{service}"
            try:
                children = client.get_children(parent)
            except NoNodeError:
                continue
            for child in children:
                path = f"{parent}/{child}"
                if path not in self.says:
                    try:
                        data, _ = client.get(path)
                    except NoNodeError:
                        continue
                    self.says[path] = endpoint_of(json.loads(data))
                listing[(service, self.says[path])] += 1
        return dict(listing)

    def stop(self) -> None:
        super().stop()
        self.client.stop()
        self.client.close()


class TargetsReader(Poller):
    """Prometheus' active targets: (job, address) listed."""

    every = 0.25

    def __init__(self, prometheus: PrometheusServer) -> None:
        self.prometheus = prometheus
        super().__init__()

    def listing(self) -> Listing:
        targets = self.prometheus.targets()
        return dict(
            Counter((t["scrapePool"], t["labels"]["instance"]) for t in targets)
        )


def answer_loading(port: int, lifetime: float) -> None:
    """Answer every PING on `port` with ``-LOADING`` for `lifetime` s."""
    import selectors
    import socket

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((LOOPBACK, port))
    listener.listen(64)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    deadline = time.monotonic() + lifetime
    connections = []
    while time.monotonic() < deadline:
        for key, _ in selector.select(0.05):
            if key.fileobj is listener:
                connection, _ = listener.accept()
                connection.setblocking(False)
                connections.append(connection)
                selector.register(connection, selectors.EVENT_READ)
                continue
            connection = key.fileobj
            assert isinstance(connection, socket.socket)
            try:
                data = connection.recv(65536)
            except OSError:
                data = b""
            if not data:
                selector.unregister(connection)
                connection.close()
                continue
            answers = data.upper().count(b"PING") + data.upper().count(b"INFO")
            connection.sendall(
                b"-LOADING Redis is loading the dataset in memory\r\n" * answers
            )
    for connection in connections:
        connection.close()
    listener.close()


def endpoint_of(document: dict[str, Any]) -> str:
    if "serviceEndpoint" in document:
        endpoint = document["serviceEndpoint"]
        return f"{endpoint['host']}:{endpoint['port']}"
    return f"{document['host']}:{document['port']}"


def config(
    args: argparse.Namespace,
    hosts: str,
    ports: list[int],
    agent_id: str,
    state_dir: Path | None,
    moved: bool,
) -> str:
    lines = [
        f'agent_id = "{agent_id}"',
        "interval = 1.0",
        "timeout = 0.5",
    ]
    if state_dir is not None:
        lines.append(f'state_dir = "{state_dir}"')
    lines += [
        "[zookeeper]",
        f'hosts = "{hosts}"',
        f'root = "{ROOT}"',
        f"session_timeout = {args.session_timeout}",
        f"replicas = {args.replicas}",
        f'discovery = "{args.form}"',
        f'discovery_root = "{DISCOVERY}"',
    ]
    for i, port in enumerate(ports):
        swapped = moved and args.event in ("deploy-service", "join-moved")
        service = SERVICES[(i + swapped) % 2]
        zone = "a"
        if i == 0 and moved and args.event != "deploy-service":
            if args.event in ("reload-service", "deploy-service"):
                service = SERVICES[1]
            else:
                zone = "b"
        lines += [
            "[[redis]]",
            f'name = "r{i:02d}"',
            f'host = "{LOOPBACK}"',
            f"port = {port}",
            f'service = "{service}"',
            f'labels = {{ zone = "{zone}" }}',
        ]
    return "\n".join(lines) + "\n"


def expected(ports: list[int], moved: bool, event: str) -> Listing:
    wanted = {}
    for i, port in enumerate(ports):
        service = SERVICES[(i + (moved and event == "deploy-service")) % 2]
        if i == 0 and moved and event == "reload-service":
            service = SERVICES[1]
        wanted[(service, f"{LOOPBACK}:{port}")] = 1
    return wanted


def faults(
    history: list[tuple[float, Listing]],
    wanted: Listing,
    since: float,
    until: float,
    excused: set[str],
    rename: dict[str, str] | None = None,
) -> dict[str, list[float]]:
    """
    Spans after `since` during which an endpoint was missing, listed twice,
    or listed under a service it should not be; `excused` endpoints (a
    Redis down) are judged for staleness only. `rename` maps a service to a
    reader's name for it (Prometheus' job).
    """
    rename = rename or {s: s for s in SERVICES}
    want = {(rename[s], e): n for (s, e), n in wanted.items()}
    spans: dict[str, list[float]] = {"missing": [], "twice": [], "stray": []}
    open_: dict[tuple[str, str, str], float] = {}
    timeline = [(t, listing) for t, listing in history if t < until]
    before = [x for x in timeline if x[0] <= since]
    after = [x for x in timeline if x[0] > since]
    if before:
        after.insert(0, (since, before[-1][1]))
    after.append((until, {}))
    for at, listing in after[:-1]:
        wrong = set()
        for key in want:
            if key[1] in excused:
                continue
            got = listing.get(key, 0)
            if got == 0:
                wrong.add(("missing", *key))
            elif got > 1:
                wrong.add(("twice", *key))
        for key in listing:
            if key not in want:
                wrong.add(("stray", *key))
            elif key[1] in excused and DETECTION <= at - since < DOWN:
                # A dead Redis still listed past its detection.
                wrong.add(("stray", *key))
        for kind, service, endpoint in wrong:
            open_.setdefault((kind, service, endpoint), at)
        for key in list(open_):
            if key not in wrong:
                spans[key[0]].append(at - open_.pop(key))
    for key, start in open_.items():
        spans[key[0]].append(until - start)
    return spans


def both(
    history: list[tuple[float, Listing]], since: float, until: float
) -> dict[str, list[float]]:
    """Spans after `since` while an endpoint was listed in two services."""
    spans: list[float] = []
    began: dict[str, float] = {}
    timeline = [(t, x) for t, x in history if since <= t < until] + [(until, {})]
    for at, listing in timeline:
        services: Counter[str] = Counter(endpoint for _, endpoint in listing)
        twice = {e for e, n in services.items() if n > 1}
        for endpoint in twice:
            began.setdefault(endpoint, at)
        for endpoint in list(began):
            if endpoint not in twice:
                spans.append(at - began.pop(endpoint))
    return {"both": spans}


def report(name: str, spans: dict[str, list[float]]) -> str:
    parts = []
    for kind, values in spans.items():
        if values:
            parts.append(
                f"{kind} {len(values)} spans, total {sum(values):.2f} s,"
                f" max {max(values):.2f} s"
            )
        else:
            parts.append(f"{kind} none")
    return f"  {name}: " + "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--instances", type=int, default=6)
    parser.add_argument("--form", choices=("serverset", "nerve"), default="serverset")
    parser.add_argument("--state-dir", action="store_true")
    parser.add_argument("--prometheus", action="store_true")
    parser.add_argument("--session-timeout", type=float, default=4.0)
    parser.add_argument(
        "--event",
        required=True,
        choices=(
            "redis-restart",
            "agent-kill",
            "agent-term",
            "agent-stop",
            "reload-service",
            "reload-labels",
            "deploy-service",
            "redis-loading",
            "join-moved",
        ),
    )
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--settle", type=float, default=15.0)
    args = parser.parse_args()
    stop_on_sigterm()
    with ExitStack() as started, tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        zookeeper, client = start_zookeeper(started)
        for service in SERVICES:
            client.ensure_path(f"{DISCOVERY}/{service}")
        servers = start_redis_servers(args.instances, started)
        ports = [s.port for s in servers]
        prometheus = None
        if args.prometheus:
            sd = f"{args.form}_sd_configs"
            prometheus = PrometheusServer(
                {
                    "scrape_configs": [
                        {
                            "job_name": service,
                            sd: [
                                {
                                    "servers": [zookeeper.hosts],
                                    "paths": [f"{DISCOVERY}/{service}"],
                                    "timeout": "5s",
                                }
                            ],
                        }
                        for service in SERVICES
                    ]
                }
            ).start()
            started.callback(prometheus.stop)
        moved = False
        agents: list[Agent] = []

        def start_agent(i: int) -> Agent:
            state = workdir / f"state-a{i}" if args.state_dir else None
            text = config(args, zookeeper.hosts, ports, f"a{i}", state, moved)
            agent = Agent(workdir, text, label=f"a{i}")
            started.callback(agent.stop)
            agent.wait_ready()
            return agent

        for i in range(args.agents):
            agents.append(start_agent(i))
        reader = Reader(zookeeper.hosts)
        started.callback(reader.stop)
        targets = None if prometheus is None else TargetsReader(prometheus)
        if targets is not None:
            started.callback(targets.stop)

        def settled() -> bool:
            return bool(
                reader.history
                and reader.history[-1][1] == expected(ports, moved, args.event)
            )

        wait_until(settled, 60.0, "every member listed once")
        if targets is not None:
            wait_until(
                lambda: (
                    bool(targets.history)
                    and set(targets.history[-1][1])
                    == set(expected(ports, moved, args.event))
                ),
                60.0,
                "every target",
            )
        time.sleep(2.0)
        for run in range(args.runs):
            load = load_average()
            since = time.monotonic()
            excused: set[str] = set()
            if args.event == "redis-restart":
                excused.add(f"{LOOPBACK}:{ports[0]}")
                servers[0].kill()
                time.sleep(DOWN)
                servers[0].start()
            elif args.event == "redis-loading":
                # Alive, not ready: a server on its port answering LOADING.
                excused.add(f"{LOOPBACK}:{ports[0]}")
                servers[0].kill()
                loading = threading.Thread(
                    target=answer_loading, args=(ports[0], DOWN), daemon=True
                )
                loading.start()
                loading.join()
                servers[0].start()
            elif args.event == "join-moved":
                # One agent's config gives every instance the other
                # service (a deploy half done): it leaves, and joins again.
                agents[0].stop()
                time.sleep(8.0)
                moved = True
                agents[0] = start_agent(0)
                moved = False
                since = time.monotonic()
            elif args.event == "agent-kill":
                os.kill(agents[0].pid, signal.SIGKILL)
                agents[0].child.process.wait()
                time.sleep(3.0)
                agents[0] = start_agent(0)
            elif args.event == "agent-term":
                agents[0].stop()
                agents[0] = start_agent(0)
            elif args.event == "agent-stop":
                os.kill(agents[0].pid, signal.SIGSTOP)
                time.sleep(args.session_timeout + 3.0)
                os.kill(agents[0].pid, signal.SIGCONT)
            elif args.event == "deploy-service":
                # A rolling deploy of a config that moves the instance to
                # the other service: each agent restarted in turn.
                moved = not moved
                for i in range(len(agents)):
                    agents[i].stop()
                    agents[i] = start_agent(i)
                    time.sleep(5.0)
            else:
                moved = not moved
                for i, agent in enumerate(agents):
                    text = config(
                        args,
                        zookeeper.hosts,
                        ports,
                        f"a{i}",
                        workdir / f"state-a{i}" if args.state_dir else None,
                        moved,
                    )
                    agent.config_path.write_text(text)
                    os.kill(agent.pid, signal.SIGHUP)
                    time.sleep(0.5)
            time.sleep(args.settle)
            until = time.monotonic()
            wanted = expected(ports, moved, args.event)
            if args.event in ("redis-restart", "redis-loading"):
                excused_after = faults(reader.history, wanted, since, until, excused)
                # Once the Redis is back and rise has passed, it must be there.
                back = faults(reader.history, wanted, since + DOWN + 4.0, until, set())
                excused_after["missing"] = back["missing"]
                excused_after["twice"] += back["twice"]
                spans = excused_after
            else:
                spans = faults(reader.history, wanted, since, until, excused)
            print(
                f"run {run + 1}: {args.event}, {args.agents} agents,"
                f" replicas {args.replicas}, {args.form},"
                f" state_dir {'on' if args.state_dir else 'off'}, load {load}"
                f"-{load_average()}"
            )
            print(report("zookeeper (50 ms)", spans))
            print(
                report("zookeeper, in two services", both(reader.history, since, until))
            )
            if targets is not None:
                print(
                    report(
                        "prometheus (250 ms)",
                        faults(
                            targets.history,
                            wanted,
                            since,
                            until,
                            excused,
                        ),
                    )
                )
            for i, agent in enumerate(agents):
                try:
                    health = agent.get("/healthz")
                    print(f"  a{i} /healthz: {health}")
                except urllib.error.HTTPError as e:
                    print(f"  a{i} /healthz: {e.code} {e.read()[:300]!r}")
            if os.environ.get("READERS_TRACE"):
                for at, listing in reader.history:
                    if at >= since:
                        bad = {
                            f"{k[0]}/{k[1].rsplit(':', 1)[1]}": v
                            for k, v in listing.items()
                            if wanted.get(k) != v
                        }
                        missing = [
                            f"{k[0]}/{k[1].rsplit(':', 1)[1]}"
                            for k in wanted
                            if k not in listing
                        ]
                        wall = time.time() - time.monotonic() + at
                        print(
                            f"    {at - since:7.2f} ({wall:.2f})"
                            f" extra {bad} missing {missing}"
                        )
        if os.environ.get("READERS_KEEP"):
            import shutil

            keep = Path(os.environ["READERS_KEEP"])
            keep.mkdir(parents=True, exist_ok=True)
            for log in workdir.glob("*.log"):
                shutil.copy(log, keep / log.name)


if __name__ == "__main__":
    main()

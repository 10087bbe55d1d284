"""
Whether ``/healthz`` tells the truth right after the agent's own pause
(DESIGN.md section 5, ``/healthz``; section 2.5).

One agent (``twistd -n sentinel``, interval 1 s, session timeout asked
``--session-timeout``, ``state_dir`` with ``--state-dir``) watches
``--instances`` instances over two real redis-servers, publishing to a
real ZooKeeper. Once every instance node is written, the agent is
stopped (SIGSTOP) for each ``--pause`` in turn; a ``/healthz`` request
is sent 1 s before its SIGCONT (a load balancer's probe, queued by the
kernel and answered first), and from the SIGCONT a thread asks
``/healthz`` every 20 ms (a new connection each time, as a load balancer
does) while another reads every instance node every 20 ms (a kazoo
client of its own), for ``--watch`` s; with ``--sequential``, one thread
reads every node after each ``/healthz`` answer, so that a node missing
after a 200 was missing once the 200 was received (side by side, a
round of reads begun before the writes landed paired with a later 200).
A node is *wrong* while missing or while its ``checked_at`` is older than
``refresh`` plus 3 s.
Printed per pause: what the probe sent during it was answered, how long
``/healthz`` said 200 while some node was wrong ("200 while wrong", the
lie), how long it said 503 while every node was right ("503 while
right", the false alarm), when each state began and ended, and the first
reasons given. With ``--paused zookeeper`` the ZooKeeper server is
stopped instead of the agent: printed, what ``/healthz`` said during the
pause (when it first said 503, and why), then the same from its SIGCONT.
With ``--agents N`` (and ``--replicas``), N agents share the instances
as a group; the first is the one paused and asked.

    .venv/bin/python benchmarks/pausehealth.py --pause 3 --pause 25 \
        [--state-dir] [--paused zookeeper] [--session-timeout S] \
        [--interval S] [--agents 3] \
        [--checkout before=PATH --checkout after=.]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from common import (
    LOOPBACK,
    Agent,
    Instance,
    add_checkout_option,
    agent_config,
    load_average,
    machine,
    rows_in_turns,
    start_redis_servers,
    start_zookeeper,
    table,
    wait_until,
)
from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError

ROOT = "/sentinel"
REFRESH = 30.0
STEP = 0.02
# Seconds past ``refresh`` a node's ``checked_at`` may be before it is stale.
SLACK = 3.0


def healthz(agent: Agent) -> tuple[int, str]:
    """/healthz's status code and its reasons, joined (`Agent.healthz`)."""
    code, body = agent.healthz()
    return code, "; ".join(body.get("reasons", []))


def probe_sent(port: int) -> socket.socket:
    """A ``/healthz`` request sent now (to a paused agent: the kernel queues it)."""
    probe = socket.create_connection((LOOPBACK, port), timeout=30)
    probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return probe


def probe_answer(probe: socket.socket) -> str:
    """The status code and reasons the probe was answered with."""
    answer = b""
    with probe:
        while chunk := probe.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    code = head.split(b" ", 2)[1].decode()
    if code == "200":
        return code
    reasons = json.loads(body[body.index(b"{") : body.rindex(b"}") + 1])["reasons"]
    return f"{code} ({'; '.join(reasons)[:160]})"


def wrong_nodes(client: KazooClient, names: list[str], limit: float) -> tuple[int, int]:
    """
    How many of `names`' nodes are missing, and checked over `limit` s ago;
    (-1, -1) if ZooKeeper did not answer (paused) within a second.
    """
    results = [client.get_async(f"{ROOT}/instances/{n}") for n in names]
    now = time.time()
    missing = stale = 0
    for result in results:
        try:
            data, _ = result.get(timeout=1)
        except NoNodeError:
            missing += 1
            continue
        except Exception:
            return -1, -1
        if now - json.loads(data)["checked_at"] > limit:
            stale += 1
    return missing, stale


def sampled(until: float, sample: Any) -> list[tuple[float, Any]]:
    """(time, `sample()`) every `STEP` s until `until` (monotonic)."""
    samples = []
    while (now := time.monotonic()) < until:
        samples.append((now, sample()))
        time.sleep(max(0.0, STEP - (time.monotonic() - now)))
    return samples


def watched(
    health: Any, nodes: Any, until: float, sequential: bool = False
) -> tuple[list[tuple[float, Any]], list[tuple[float, Any]]]:
    """
    `health` and `nodes` sampled side by side, each on a thread, until
    `until`; or, `sequential`, on one thread, each /healthz answer
    followed by a read of the nodes, both dated at the /healthz request.
    """
    if sequential:
        both = sampled(until, lambda: (health(), nodes()))
        return [(w, h) for w, (h, _) in both], [(w, n) for w, (_, n) in both]
    out: dict[str, list[tuple[float, Any]]] = {}

    def take(key: str, sample: Any) -> None:
        out[key] = sampled(until, sample)

    threads = [
        threading.Thread(target=take, args=(key, sample))
        for key, sample in (("health", health), ("nodes", nodes))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return out["health"], out["nodes"]


def at(samples: list[tuple[float, Any]], t: float) -> Any:
    """The last sample taken at or before `t` (the first if none)."""
    value = samples[0][1]
    for when, sample in samples:
        if when > t:
            break
        value = sample
    return value


def timeline(
    health: list[tuple[float, tuple[int, str]]],
    nodes: list[tuple[float, int]],
    resumed: float,
) -> dict[str, Any]:
    """Seconds of lie and of false alarm, with when each began and ended."""
    lie = alarm = 0.0
    lies: list[float] = []
    alarms: list[float] = []
    for (when, (code, _)), (after, _) in zip(health, health[1:], strict=False):
        wrong = sum(at(nodes, when))
        if wrong < 0:
            continue  # Not known: ZooKeeper did not answer the reader.
        if code == 200 and wrong:
            lie += after - when
            lies.append(when - resumed)
        elif code == 503 and not wrong:
            alarm += after - when
            alarms.append(when - resumed)
    wrong_times = [when - resumed for when, wrong in nodes if sum(wrong) > 0]
    reasons = [r for _, (code, r) in health if code == 503]
    return {
        "lie": lie,
        "lie_span": (lies[0], lies[-1]) if lies else None,
        "alarm": alarm,
        "alarm_span": (alarms[0], alarms[-1]) if alarms else None,
        "wrong_span": (wrong_times[0], wrong_times[-1]) if wrong_times else None,
        "most_missing": max((w[0] for _, w in nodes), default=0),
        "most_stale": max((w[1] for _, w in nodes), default=0),
        "answers": len(health),
        "first_503": reasons[0][:300] if reasons else None,
        "last_503": reasons[-1][:300] if reasons else None,
    }


def span(pair: tuple[float, float] | None) -> str:
    return "--" if pair is None else f"{pair[0]:.2f}--{pair[1]:.2f} s"


def agent_paused(
    agent: Agent,
    client: KazooClient,
    names: list[str],
    pause: float,
    watch: float,
    sequential: bool = False,
) -> tuple[str, float, list[tuple[float, Any]], list[tuple[float, Any]]]:
    """
    The agent stopped `pause` s: the answer to the probe sent during it,
    the SIGCONT's time, and the samples of `watch` s from it.
    """
    os.kill(agent.pid, signal.SIGSTOP)
    time.sleep(max(0.0, pause - 1.0))
    # A load balancer's probe, sent during the pause.
    probe = probe_sent(agent.http_port)
    time.sleep(min(pause, 1.0))
    os.kill(agent.pid, signal.SIGCONT)
    resumed = time.monotonic()
    health, nodes = watched(
        lambda: healthz(agent),
        lambda: wrong_nodes(client, names, REFRESH + SLACK),
        resumed + watch,
        sequential,
    )
    return f"probe {probe_answer(probe)}", resumed, health, nodes


def zookeeper_paused(
    zookeeper: Any,
    agent: Agent,
    client: KazooClient,
    names: list[str],
    pause: float,
    watch: float,
) -> tuple[str, float, list[tuple[float, Any]], list[tuple[float, Any]]]:
    """
    ZooKeeper stopped `pause` s, /healthz asked meanwhile: what it said
    (when it first said 503, and why), the SIGCONT's time, and the
    samples of `watch` s from it.
    """
    zookeeper.pause()
    stopped = time.monotonic()
    meanwhile = sampled(stopped + pause, lambda: healthz(agent))
    zookeeper.resume()
    resumed = time.monotonic()
    health, nodes = watched(
        lambda: healthz(agent),
        lambda: wrong_nodes(client, names, REFRESH + SLACK),
        resumed + watch,
    )
    first = next(((w, r) for w, (c, r) in meanwhile if c != 200), None)
    said = (
        "200 throughout"
        if first is None
        else f"503 from {first[0] - stopped:.2f} s ({first[1][:120]})"
    )
    return said, resumed, health, nodes


def run(
    args: argparse.Namespace, label: str, path: Path, number: int
) -> list[tuple[str, str]]:
    """
    The agents (the first is the one paused, and asked), every pause in
    turn; rows for the table.
    """
    rows = []
    with ExitStack() as started, tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        zookeeper, client = start_zookeeper(started)
        servers = start_redis_servers(2, started)
        instances = [
            Instance(f"r{i:03d}", servers[i % 2].port) for i in range(args.instances)
        ]
        names = [i.name for i in instances]
        settings: dict[str, float | int | str] = {
            "session_timeout": args.session_timeout,
            "refresh": REFRESH,
        }
        if args.agents > 1:
            settings["replicas"] = args.replicas
        agents = []
        for number_of in range(args.agents):
            config = agent_config(
                instances,
                zookeeper=zookeeper.hosts,
                zk_root=ROOT,
                interval=args.interval,
                agent_id=f"a{number_of}",
                zk_settings=settings,
            )
            if args.state_dir:
                state = workdir / f"state-{number_of}"
                state.mkdir(mode=0o700)
                config = f'state_dir = "{state}"\n' + config
            member = Agent(workdir, config, label=f"a{number_of}", pythonpath=path)
            started.callback(member.stop)
            agents.append(member)
        for member in agents:
            member.wait_ready()
        agent = agents[0]
        limit = REFRESH + SLACK
        for pause in args.pause:
            wait_until(
                lambda: (
                    sum(wrong_nodes(client, names, limit)) == 0
                    and all(member.healthz()[0] == 200 for member in agents)
                ),
                60,
                "every node written and /healthz 200",
                poll=0.5,
            )
            time.sleep(2)
            load = load_average()
            if args.paused == "zookeeper":
                during, resumed, health, nodes = zookeeper_paused(
                    zookeeper, agent, client, names, pause, args.watch
                )
            else:
                during, resumed, health, nodes = agent_paused(
                    agent, client, names, pause, args.watch, args.sequential
                )
            t = timeline(health, nodes, resumed)
            if args.verbose:
                for when, sample in sorted(
                    [(w, ("h", s[0], s[1][:90])) for w, s in health]
                    + [(w, ("z", *s)) for w, s in nodes]
                )[: args.verbose]:
                    print(f"  {when - resumed:7.3f} {sample}")
            name = f"{label} run {number} pause {pause:g} s"
            lie, alarm = span(t["lie_span"]), span(t["alarm_span"])
            rows += [
                (f"{name}: during the pause", during),
                (f"{name}: 200 while wrong", f"{t['lie']:.2f} s ({lie})"),
                (f"{name}: 503 while right", f"{t['alarm']:.2f} s ({alarm})"),
                (
                    f"{name}: nodes wrong",
                    f"{span(t['wrong_span'])}, at most {t['most_missing']} missing and"
                    f" {t['most_stale']} stale of {len(names)}",
                ),
                (f"{name}: answers, load", f"{t['answers']}, {load}/{load_average()}"),
                (f"{name}: first 503", str(t["first_503"])),
                (f"{name}: last 503", str(t["last_503"])),
            ]
            print("\n".join(f"{a}: {b}" for a, b in rows[-7:]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--pause", type=float, action="append", default=[])
    parser.add_argument("--watch", type=float, default=15.0)
    parser.add_argument(
        "--paused",
        choices=("agent", "zookeeper"),
        default="agent",
        help="what is stopped (SIGSTOP) for each --pause",
    )
    parser.add_argument("--session-timeout", type=float, default=10.0)
    parser.add_argument("--state-dir", action="store_true")
    parser.add_argument(
        "--agents", type=int, default=1, help="a group's members (the first paused)"
    )
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--sequential",
        action="store_true",
        help="read the nodes after each /healthz answer, on one thread",
    )
    parser.add_argument("--verbose", type=int, default=0, help="samples printed")
    add_checkout_option(parser)
    args = parser.parse_args()
    args.pause = args.pause or [3.0, 25.0]
    print(machine())
    rows = rows_in_turns(parser, args, run)
    print(table(rows, "/healthz after the agent's own pause"))


if __name__ == "__main__":
    main()

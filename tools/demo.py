"""
Watch the agent at work: ``make demo`` starts two throwaway Redis servers, a
throwaway ZooKeeper, and ``twistd -n sentinel`` checking the servers and
publishing to ZooKeeper (with serverset discovery members, and a state_dir
keeping its session for the next process), and says which pages to open,
which servers to pause and how to read ZooKeeper. An agent ended by SIGTERM
or SIGKILL is started again on the same state_dir, as systemd's
``Restart=`` would: its nodes never go. Ctrl-C (or SIGTERM to the demo)
stops everything it started, by PID, and removes its temporary directory;
if the agent exits otherwise (SIGUSR2: it deregistered), the demo ends with
the agent's status.
"""

from __future__ import annotations

import shutil
import signal
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

# Run as a script from anywhere: the process helpers live with the tests.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers import (  # noqa: E402
    LOOPBACK,
    ChildProcess,
    RedisServer,
    ZooKeeperServer,
)

HTTP_PORT = 6060
REDIS_NAMES = ("demo-a", "demo-b")
# How the agent may end to be started again, as Restart= would.
RESTARTED = (-signal.SIGTERM, -signal.SIGKILL)


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived: stop everything and exit 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def interrupt(signum: int, frame: FrameType | None) -> None:
    """Turn the first stop signal into `Interrupted`; ignore more while stopping."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Interrupted(signum)


def exit_status(returncode: int) -> int:
    """A shell-style exit status for a child's return code."""
    return 128 - returncode if returncode < 0 else returncode


def main() -> int:
    """Run the demo until interrupted or the agent exits; return the status."""
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    twistd = Path(sys.executable).with_name("twistd")
    if not twistd.exists():
        print(f"no twistd beside {sys.executable}: run `make demo`", file=sys.stderr)
        return 1
    try:
        with ExitStack() as started:
            return run(twistd, started)
    except Interrupted as stop:
        print("\nsentinel demo stopped", file=sys.stderr)
        return 128 + stop.signum


def run(twistd: Path, started: ExitStack) -> int:
    """
    Start the servers and the agent, registering each one's stop with
    ``started`` as soon as it exists; wait for the agent to exit.
    """
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-demo-"))
    started.callback(shutil.rmtree, workdir, ignore_errors=True)
    redis: dict[str, RedisServer] = {}
    for name in REDIS_NAMES:
        server = RedisServer()
        started.callback(server.stop)
        redis[name] = server.start()
    zookeeper = ZooKeeperServer()
    started.callback(zookeeper.close)
    zookeeper.start()
    tables = [
        f'[[redis]]\nname = "{name}"\nhost = "{LOOPBACK}"\nport = {server.port}\n'
        for name, server in redis.items()
    ]
    config = workdir / "sentinel.toml"
    config.write_text(
        'agent_id = "demo"\nstate_dir = "state"\n\n'
        f'[zookeeper]\nhosts = "{zookeeper.hosts}"\nrefresh = 10\n'
        'discovery = "serverset"\n\n' + "\n".join(tables)
    )
    while True:
        agent = ChildProcess(
            [
                str(twistd), "-n", "sentinel",
                "--config", str(config),
                "--http", f"tcp:{HTTP_PORT}:interface={LOOPBACK}",
            ],
            cwd=workdir,  # twistd writes its pid file there
            # One stop signal, ours: twistd logs an error for a second one.
            own_session=True,
        )  # fmt: skip
        started.callback(agent.stop)
        print(instructions(agent, redis, zookeeper), flush=True)
        status = agent.process.wait()
        if status not in RESTARTED:
            return exit_status(status)
        print(
            f"sentinel demo: the agent ended ({signal.Signals(-status).name}); "
            "starting it again on the same state_dir: its nodes stayed",
            flush=True,
        )


def instructions(
    agent: ChildProcess, redis: dict[str, RedisServer], zookeeper: ZooKeeperServer
) -> str:
    """What to open and what to try, with the real PIDs."""
    url = f"http://{LOOPBACK}:{HTTP_PORT}"
    # The installed command where there is one (make venv installs it),
    # as the README names it.
    installed = Path(sys.executable).with_name("sentinel-status")
    command = (
        str(installed) if installed.exists() else f"{sys.executable} -m sentinel.status"
    )
    status = f"{command} --zookeeper {zookeeper.hosts}"
    lines = [
        f"sentinel demo: agent pid {agent.pid}",
        f"  open {url}/  {url}/pending  {url}/instances",
        f"  ZooKeeper on {zookeeper.hosts} (pid {zookeeper.pid}); what it says:",
        f"    {status}",
        f"    kill -STOP {zookeeper.pid}; sleep 15; kill -CONT {zookeeper.pid}"
        "   # an outage: /healthz fails, then every node is re-created",
        f"    kill -TERM {agent.pid}   # restart it (so does kill -9): the nodes"
        " stay, each rewritten at its first check",
        f"    kill -USR2 {agent.pid}   # deregister: the nodes go at once, the"
        " demo ends",
    ]
    for name, server in redis.items():
        lines += [
            f"  {name}: redis-server pid {server.pid} on port {server.port}",
            f"    kill -STOP {server.pid}   # hang it: checks time out, it goes down",
            f"    kill -CONT {server.pid}   # it answers again and comes back up",
        ]
    lines.append("Ctrl-C stops everything.")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""
``twistd -n sentinel`` resolving through a fake name server (``[dns]
nameservers``): names whose server never answers delay no good name, at
start or after a SIGHUP, and a name that does not exist is reported so.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import treq
from twisted.internet import reactor as _reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from tests.fakedns import FakeNameServer
from tests.polling import START_BOUND, pause, wait_for, wait_listening
from tests.servers import ChildProcess, RedisServer, black_hole
from tests.test_twistd import TWISTD, environment

reactor: Any = _reactor

DEAD = [f"dead{i}.test" for i in range(12)]
# The lookup bound at timeout 0.1 (sentinel.resolve.lookup_bound).
BOUND = 2.0


async def instances(base: str) -> dict[str, Any]:
    """The agent's /instances by name; empty if it did not answer."""
    pool = HTTPConnectionPool(reactor, persistent=False)
    try:
        response = await treq.get(f"{base}/instances", timeout=2, pool=pool)
        body = json.loads(await response.content())
    except Exception:
        return {}
    return {i["name"]: i for i in body["instances"]}


def name_server_and_redis(
    case: TestCase, addresses: dict[str, list[str]], redis_args: tuple[str, ...] = ()
) -> tuple[FakeNameServer, RedisServer, Path]:
    """
    A fake name server answering `addresses`, a redis-server (given
    `redis_args`), and where the agent's config goes (in a directory of its
    own, with an empty hosts file); each stopped at the test's end.
    """
    names = FakeNameServer(reactor).start()
    case.addCleanup(names.stop)
    names.addresses.update(addresses)
    redis = RedisServer(extra_args=redis_args).start()
    case.addCleanup(redis.stop)
    directory = Path(case.mktemp()).absolute()
    directory.mkdir()
    (directory / "hosts").write_text("")
    return names, redis, directory / "sentinel.toml"


def write_config(
    config: Path, names: FakeNameServer, port: int, hosts: dict[str, str]
) -> None:
    """
    The agent's config at `config`: checks every 0.2 s (timeout 0.1 s) of
    an instance per name of `hosts` (instance name: host name) on `port`,
    looked up from `names`.
    """
    host, dns_port = names.address
    text = (
        "interval = 0.2\ntimeout = 0.1\n"
        f'[dns]\nnameservers = ["{host}:{dns_port}"]\nhosts_file = "hosts"\n'
    )
    for name, host_name in hosts.items():
        text += f'[[redis]]\nname = "{name}"\nhost = "{host_name}"\nport = {port}\n'
    config.write_text(text)


async def start_agent(case: TestCase, config: Path) -> tuple[ChildProcess, str]:
    """``twistd -n sentinel`` on `config`, and the base URL of its HTTP app."""
    directory = config.parent
    child = ChildProcess(
        [TWISTD, "-n", "sentinel", "--config", str(config),
         "--http", "tcp:0:interface=127.0.0.1"],
        log=directory / "twistd.log", env=environment(), cwd=directory,
    )  # fmt: skip
    case.addCleanup(child.stop)
    port = await wait_listening(reactor, child.pid, child.why_ended)
    return child, f"http://127.0.0.1:{port}"


class TwistdNameLookupTests(TestCase):
    async def statuses(self, base: str) -> dict[str, Any]:
        return await instances(base)

    async def test_black_holes_sighup_and_nxdomain(self) -> None:
        """
        Twelve black-holed names and a good one: the good one is up within
        a couple of seconds. A SIGHUP that removes the twelve and adds a
        new good name: the new one is up within a couple of seconds, and
        the name server hears no more of the removed names once their
        lookups in flight end. A name that does not exist is down with
        ``cannot resolve NAME: no such name``.
        """
        names, redis, config = name_server_and_redis(
            self, {"good.test": ["127.0.0.1"], "new.test": ["127.0.0.1"]}
        )
        names.black_hole.update(DEAD)
        directory = config.parent

        def write(*hosts: str) -> None:
            host, port = names.address
            tables = "".join(
                f'[[redis]]\nname = "{h}"\nhost = "{h}"\nport = {redis.port}\n'
                for h in hosts
            )
            config.write_text(
                "interval = 0.2\ntimeout = 0.1\n"
                f'[dns]\nnameservers = ["{host}:{port}"]\nhosts_file = "hosts"\n'
                f"{tables}"
            )

        write(*DEAD, "good.test")
        child, base = await start_agent(self, config)
        state: dict[str, Any] = {}

        async def until(
            name: str, value: str, timeout: float, key: str = "status"
        ) -> float:
            """Seconds until instance `name`'s `key` reads `value`."""
            started = reactor.seconds()
            while True:
                state.update(await self.statuses(base))
                if state.get(name, {}).get(key) == value:
                    return float(reactor.seconds() - started)
                if not child.running:
                    self.fail(f"twistd exited:{child.log_tail()}")
                if reactor.seconds() - started > timeout:
                    self.fail(f"{name} {key} not {value} within {timeout} s: {state}")
                await pause(reactor, 0.05)

        await wait_for(
            reactor, lambda: names.queries["good.test"], START_BOUND, "a lookup"
        )
        took = await until("good.test", "up", 10.0)
        self.assertLess(took, 3.0)
        for name in DEAD:
            await until(name, "down", 5.0)
        # The first checks time out (the probe waits 1 s, the lookup 2 s);
        # the next ones see the lookup's own failure.
        error = "cannot resolve dead0.test: no answer from name servers within 2 s"
        await until("dead0.test", error, BOUND + 2.0, key="error")

        write("good.test", "new.test", "nx.test", "dead0.test")
        hangup = reactor.seconds()
        child.process.send_signal(signal.SIGHUP)
        took = await until("new.test", "up", 10.0)
        self.assertLess(took, 3.0)
        await until("nx.test", "down", 5.0)
        self.assertEqual(
            state["nx.test"]["error"], "cannot resolve nx.test: no such name"
        )
        self.assertEqual(state["good.test"]["status"], "up")
        # Lookups of removed names that were in flight end within their
        # bound; then only the dead name still configured is asked again.
        await pause(reactor, max(0.0, hangup + BOUND - reactor.seconds()))
        removed = DEAD[1:]
        asked = {name: names.queries[name] for name in removed}
        again = names.queries["dead0.test"] + 1
        await wait_for(
            reactor, lambda: names.queries["dead0.test"] >= again, 10.0, "dead0 again"
        )
        self.assertEqual({name: names.queries[name] for name in removed}, asked)
        self.assertEqual(child.stop(), -signal.SIGTERM)
        self.assertNotIn("Traceback", (directory / "twistd.log").read_text())


class TwistdAddressesTests(TestCase):
    async def settled(
        self,
        child: ChildProcess,
        base: str,
        up: tuple[str, ...],
        down: tuple[str, ...] = (),
    ) -> tuple[dict[str, Any], set[str | None]]:
        """
        /instances once every one of `up` is up and every one of `down` is
        down (within 10 s), and every status those of `up` had on the way.
        """
        wanted = {**dict.fromkeys(up, "up"), **dict.fromkeys(down, "down")}
        state: dict[str, Any] = {}
        seen: set[str | None] = set()
        # Why one of `up` was seen down, for the failure that says so.
        self.downs: dict[str, str | None] = {}
        started = reactor.seconds()
        while any(state.get(n, {}).get("status") != s for n, s in wanted.items()):
            if not child.running:
                self.fail(f"twistd exited:{child.log_tail()}")
            if reactor.seconds() - started > 10.0:
                self.fail(f"not settled within 10 s: {state}")
            await pause(reactor, 0.05)
            state = await instances(base)
            seen.update(state.get(n, {}).get("status") for n in up)
            self.downs.update(
                (n, state[n].get("error"))
                for n in up
                if state.get(n, {}).get("status") == "down"
            )
        return state, seen

    async def test_refused_first_address_then_the_next(self) -> None:
        """
        A name whose first address refuses (127.0.0.2: nothing listens
        there) and whose second is a live redis-server (127.0.0.1): the
        agent checks it at the second and publishes it up, /instances
        naming that address; a name whose two addresses both refuse is
        down with an error naming each. Before, the first was down
        (``connection refused``), as no Redis client would see it.
        """
        names, redis, config = name_server_and_redis(
            self,
            {
                "two.test": ["127.0.0.2", "127.0.0.1"],
                "none.test": ["127.0.0.2", "127.0.0.3"],
            },
        )
        directory = config.parent
        write_config(
            config, names, redis.port, {"two": "two.test", "none": "none.test"}
        )
        child, base = await start_agent(self, config)
        state, _ = await self.settled(child, base, up=("two",), down=("none",))
        self.assertEqual(state["two"]["address"], "127.0.0.1")
        self.assertEqual(state["two"]["failures"], 0)
        self.assertEqual(
            state["none"]["error"], "connection refused at 127.0.0.2, 127.0.0.3"
        )
        self.assertIsNone(state["none"]["address"])
        self.assertEqual(child.stop(), -signal.SIGTERM)
        self.assertNotIn("Traceback", (directory / "twistd.log").read_text())

    async def test_first_address_down_then_the_next(self) -> None:
        """
        A name whose first address is a host that is down (127.0.0.2: its
        SYNs unanswered) and whose second is a live redis-server: the
        agent finds the second and publishes the name up, never down, no
        check failed (the first attempt's timeout was a search for the
        address that answers), /instances naming the live address. A name
        whose two addresses are both down is down within a few seconds.
        Before, the first was down for good (``timeout (connect)``).
        """
        names, redis, config = name_server_and_redis(
            self,
            {
                "deadfirst.test": ["127.0.0.2", "127.0.0.1"],
                "alldead.test": ["127.0.0.2", "127.0.0.3"],
            },
        )
        black_hole("127.0.0.2", redis.port, self.addCleanup)
        black_hole("127.0.0.3", redis.port, self.addCleanup)
        directory = config.parent
        write_config(
            config,
            names,
            redis.port,
            {"deadfirst": "deadfirst.test", "alldead": "alldead.test"},
        )
        child, base = await start_agent(self, config)
        state, seen = await self.settled(
            child, base, up=("deadfirst",), down=("alldead",)
        )
        self.assertNotIn("down", seen, self.downs)
        self.assertEqual(state["deadfirst"]["address"], "127.0.0.1")
        self.assertEqual(state["deadfirst"]["failures"], 0)
        self.assertTrue(state["alldead"]["error"].startswith("timeout (connect)"))
        self.assertEqual(child.stop(), -signal.SIGTERM)
        self.assertNotIn("Traceback", (directory / "twistd.log").read_text())

    async def test_ipv4_gone_ipv6_live(self) -> None:
        """
        Dual-stack names whose IPv4 addresses are all gone (refused, or
        hosts that are down) and whose IPv6 address is a live redis-server
        (on ::1): the agent checks them there and publishes them up, never
        down (the timeouts at the dead ones a search for the address that
        answers), as redis-py and Go's dialer reach them. Before, AAAA was
        not asked of a name with an A record, and both were down for good.
        """
        names, redis, config = name_server_and_redis(
            self,
            {
                "refused.test": ["127.0.0.2", "127.0.0.3", "::1"],
                "dead.test": ["127.0.0.4", "127.0.0.5", "::1"],
            },
            redis_args=("--bind", "127.0.0.1", "::1"),
        )
        black_hole("127.0.0.4", redis.port, self.addCleanup)
        black_hole("127.0.0.5", redis.port, self.addCleanup)
        directory = config.parent
        write_config(
            config, names, redis.port, {"refused": "refused.test", "dead": "dead.test"}
        )
        child, base = await start_agent(self, config)
        state, seen = await self.settled(child, base, up=("refused", "dead"))
        self.assertNotIn("down", seen, self.downs)
        self.assertEqual(state["refused"]["address"], "::1")
        self.assertEqual(state["dead"]["address"], "::1")
        self.assertEqual(state["refused"]["failures"], 0)
        self.assertEqual(state["dead"]["failures"], 0)
        self.assertEqual(child.stop(), -signal.SIGTERM)
        self.assertNotIn("Traceback", (directory / "twistd.log").read_text())

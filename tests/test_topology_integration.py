"""
Topology as a user runs it: a real master with two real replicas
(``redis-server --replicaof``), a real ``twistd -n sentinel`` agent that
discovers the replicas, and a real ZooKeeper, read with a client of the
test's own. Promotions, demotions, removal after the grace period and the
drain switch, each injected with ``redis-cli`` as an operator would.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.logger import Logger

from tests.polling import START_BOUND, pause, wait_for
from tests.servers import LOOPBACK, RedisServer, shared_zookeeper
from tests.test_twistd import HTTP_ANY_PORT, TwistdTestCase
from tests.test_zookeeper import Reader

reactor: Any = _reactor
log = Logger()

INTERVAL = 0.2
GRACE = 3.0
# The bound at the defaults is interval + timeout + ZooKeeper's
# latency (2 s); here the agent ticks faster, and the bound stays.
ROLE_BOUND = 2.0


def redis_cli(server: RedisServer, *args: str) -> str:
    """One command to `server`, as an operator sends it."""
    done = subprocess.run(
        ["redis-cli", "-h", LOOPBACK, "-p", str(server.port), *args],
        capture_output=True,
        text=True,
        timeout=5,
        check=True,
    )
    return done.stdout.strip()


class TopologyTests(TwistdTestCase):
    """One agent, one master discovering two replicas, one ZooKeeper."""

    async def start(
        self, named: tuple[int, str] | None = None, announced: tuple[str, ...] = ()
    ) -> None:
        """
        The servers, then the agent; with `named` (which replica, and a
        host), that replica is configured too, as ``named`` on that host;
        `announced`, more directives of the second replica.
        """
        # Replicas sync at once, not after Redis's default 5 s wait for more.
        self.master = RedisServer(extra_args=["--repl-diskless-sync-delay", "0"])
        self.master.start()
        self.addCleanup(self.master.stop)
        replicaof = ["--replicaof", LOOPBACK, str(self.master.port)]
        self.replicas = []
        for more in [(), announced]:
            replica = RedisServer(extra_args=[*replicaof, *more]).start()
            self.addCleanup(replica.stop)
            self.replicas.append(replica)
        zookeeper = shared_zookeeper()
        self.root = f"/t-{self._testMethodName}"
        configured = (
            f'[[redis]]\nname = "named"\nhost = "{named[1]}"\n'
            f"port = {self.replicas[named[0]].port}\n"
            if named is not None
            else ""
        )
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        config = directory / "sentinel.toml"
        config.write_text(
            f"interval = {INTERVAL}\ntimeout = 0.1\ninfo_every = 5\n"
            f'replica_grace = {GRACE}\ndrain_key = "drain:{{port}}"\n'
            f'[zookeeper]\nhosts = "{zookeeper.hosts}"\nroot = "{self.root}"\n'
            f'[[redis]]\nname = "m"\nhost = "{LOOPBACK}"\n'
            f"port = {self.master.port}\ndiscover_replicas = true\n{configured}"
        )
        self.child = self.spawn("--config", str(config), "--http", HTTP_ANY_PORT)
        self.base = await self.http_base(self.child)
        self.reader = Reader(zookeeper.hosts)
        self.addCleanup(self.reader.close)
        self.names = [f"m@{LOOPBACK}:{r.port}" for r in self.replicas]

    def node(self, name: str) -> dict[str, Any] | None:
        found = self.reader.node(f"{self.root}/instances/{name}")
        return None if found is None else found[0]

    async def until_node(self, name: str, timeout: float, **fields: Any) -> float:
        """Wait until the instance's node holds `fields`; how long it took."""

        def holds() -> bool:
            if self.child.poll() is not None:
                self.fail(f"twistd exited: {self.log_path.read_text()}")
            data = self.node(name)
            return data is not None and all(data[k] == v for k, v in fields.items())

        try:
            return await wait_for(reactor, holds, timeout, f"{name} with {fields}")
        except AssertionError as e:
            raise AssertionError(f"{e}; last: {self.node(name)}") from None

    async def test_discover_promote_demote_drain_remove(self) -> None:
        """
        Both replicas are discovered and published (marked discovered in
        /instances); a promotion and a demotion are published within 2 s;
        the drain key set on the master drains only the replica it names,
        in ZooKeeper and /instances, and its removal undrains it; a replica
        promoted away goes after the grace period, the other stays, and a
        SIGHUP keeps it as it is.
        """
        await self.start()
        for name in self.names:
            await self.until_node(
                name, START_BOUND, status="up", role="slave", master_link_status="up"
            )
        instances = await self.get_json(f"{self.base}/instances")
        found = {i["name"]: i["discovered_by"] for i in instances["instances"]}
        self.assertEqual(found, {"m": None, **{n: "m" for n in self.names}})

        first, second = self.replicas
        name = self.names[1]
        redis_cli(second, "REPLICAOF", "NO", "ONE")
        took = await self.until_node(name, ROLE_BOUND, role="master")
        redis_cli(second, "REPLICAOF", LOOPBACK, str(self.master.port))
        took_back = await self.until_node(name, ROLE_BOUND, role="slave")
        log.info(
            "measured: promotion {promotion:.3f} s, demotion {demotion:.3f} s",
            promotion=took,
            demotion=took_back,
        )

        drained = self.names[0]
        redis_cli(self.master, "SET", f"drain:{first.port}", "1")
        await self.until_node(drained, 2.0, status="up", ready=False, error="draining")
        report = await self.get_json(f"{self.base}/instances/{drained}")
        self.assertEqual((report["status"], report["draining"]), ("up", True))
        self.assertEqual(self.node(name)["ready"], True)  # type: ignore[index]
        redis_cli(self.master, "DEL", f"drain:{first.port}")
        await self.until_node(drained, 2.0, ready=True, error=None)

        redis_cli(first, "REPLICAOF", "NO", "ONE")
        await self.until_node(drained, ROLE_BOUND, role="master")
        path = f"{self.root}/instances/{drained}"
        await wait_for(
            reactor,
            lambda: not self.reader.exists(path),
            GRACE + 5 * INTERVAL * 5,
            f"{drained} removed after the grace period",
        )
        instances = await self.get_json(f"{self.base}/instances")
        self.assertEqual(sorted(i["name"] for i in instances["instances"]), ["m", name])
        self.assertEqual(self.node(name)["status"], "up")  # type: ignore[index]

        before = await self.get_json(f"{self.base}/instances/{name}")
        self.child.send_signal(signal.SIGHUP)
        await wait_for(
            reactor, lambda: "reloaded:" in self.log_path.read_text(), 10.0, "reload"
        )
        after = await self.get_json(f"{self.base}/instances/{name}")
        self.assertEqual(
            (after["discovered_by"], after["since"]), ("m", before["since"])
        )
        self.assertGreaterEqual(after["checks"], before["checks"])

    async def test_write_pause_and_failover_to_keep_the_master_up(self) -> None:
        """
        A planned failover as Redis runs it: ``CLIENT PAUSE 2000 WRITE`` on
        the master (what ``FAILOVER`` itself runs) blocks none of PING,
        HELLO or INFO, so the master's node stays up and ready and no check
        of it fails; then ``FAILOVER TO`` the first replica publishes the
        old master a slave and that replica the master within 2 s, every
        node staying up and ready meanwhile.
        """
        await self.start()
        promoted = self.names[0]
        for name in self.names:
            await self.until_node(name, START_BOUND, status="up", role="slave")
        await self.until_node("m", START_BOUND, status="up", ready=True, role="master")
        before = await self.get_json(f"{self.base}/instances/m")

        redis_cli(self.master, "CLIENT", "PAUSE", "2000", "WRITE")
        seen = []
        for _ in range(40):
            await pause(reactor, 0.05)
            seen.append(self.node("m"))
        during = await self.get_json(f"{self.base}/instances/m")
        self.assertGreater(during["checks"], before["checks"])
        self.assertEqual(during["failures"], before["failures"])

        redis_cli(self.master, "FAILOVER", "TO", LOOPBACK, str(self.replicas[0].port))
        await self.until_node("m", ROLE_BOUND, role="slave")
        await self.until_node(promoted, ROLE_BOUND, role="master")
        seen += [self.node("m"), self.node(promoted)]
        self.assertEqual(
            {(n["status"], n["ready"]) for n in seen if n is not None}, {("up", True)}
        )
        self.assertNotIn(None, seen)

    async def test_replica_configured_by_host_name(self) -> None:
        """
        A replica configured by host name (``localhost``) is watched once,
        under its configured name, though the master lists it by IP: the
        other replica is discovered, and no node ever names the first by
        its address, over ten of the master's INFO.
        """
        await self.start(named=(0, "localhost"))
        duplicate = f"{self.root}/instances/{self.names[0]}"
        await self.until_node("named", START_BOUND, status="up", role="slave")
        await self.until_node(self.names[1], 20.0, status="up", role="slave")
        # The master answers INFO every 5 checks: ten of them.
        await pause(reactor, 10 * 5 * INTERVAL)
        self.assertFalse(self.reader.exists(duplicate))
        instances = await self.get_json(f"{self.base}/instances")
        found = {i["name"]: i["discovered_by"] for i in instances["instances"]}
        self.assertEqual(found, {"m": None, "named": None, self.names[1]: "m"})
        self.assertNotIn(f"{self.names[0]}: removed", self.log_path.read_text())

    async def test_replica_announcing_a_host_name(self) -> None:
        """
        A replica configured by address (``named``, 127.0.0.1) whose
        ``replica-announce-ip`` is ``localhost`` is listed so by its master:
        it is judged by what that name resolves to, and watched once, under
        its configured name, over ten of the master's INFO.
        """
        await self.start(
            named=(1, LOOPBACK), announced=("--replica-announce-ip", "localhost")
        )
        await self.until_node("named", START_BOUND, status="up", role="slave")
        await self.until_node(self.names[0], 20.0, status="up", role="slave")
        await pause(reactor, 10 * 5 * INTERVAL)
        instances = await self.get_json(f"{self.base}/instances")
        found = {i["name"]: i["discovered_by"] for i in instances["instances"]}
        self.assertEqual(found, {"m": None, "named": None, self.names[0]: "m"})
        duplicate = f"{self.root}/instances/m@localhost:{self.replicas[1].port}"
        self.assertFalse(self.reader.exists(duplicate))

    async def test_replica_announcing_the_unspecified_address(self) -> None:
        """
        A replica whose ``replica-announce-ip`` is ``0.0.0.0`` is listed
        so by its master; a connect to it would reach this host (and find
        that replica here only because the test runs on one host), so it
        is not watched: the other replica is, and the warning names the
        address and why, over ten of the master's INFO.
        """
        await self.start(announced=("--replica-announce-ip", "0.0.0.0"))
        await self.until_node(self.names[0], START_BOUND, status="up", role="slave")
        unspecified = f"0.0.0.0:{self.replicas[1].port}"

        def warned() -> bool:
            return (
                f"such as {unspecified} (no host's address" in self.log_path.read_text()
            )

        await wait_for(reactor, warned, 20.0, "the warning about 0.0.0.0")
        await pause(reactor, 10 * 5 * INTERVAL)
        instances = await self.get_json(f"{self.base}/instances")
        found = {i["name"]: i["discovered_by"] for i in instances["instances"]}
        self.assertEqual(found, {"m": None, self.names[0]: "m"})
        self.assertFalse(self.reader.exists(f"{self.root}/instances/m@{unspecified}"))

"""
Client certificates as a user runs them: ``twistd -n sentinel --config``
against a real redis-server that asks every client for a certificate
(``tls-auth-clients yes``), read over HTTP, reloaded with SIGHUP.
"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path
from typing import Any

import treq
from twisted.web.client import HTTPConnectionPool

from tests.certs import CertificateFiles, make_certificates
from tests.polling import START_BOUND, pause, wait_for
from tests.servers import RedisServer
from tests.test_twistd import HTTP_ANY_PORT, TwistdTestCase, reactor

REFUSED = "TLS: the server refused the client certificate: "
UNKNOWN_CA = REFUSED + "unknown ca (not signed by a CA the server trusts)"


def redis_table(
    name: str, port: int, ca_file: str, files: tuple[str, str] | None
) -> str:
    table = (
        f'[[redis]]\nname = "{name}"\nhost = "127.0.0.1"\nport = {port}\n'
        f'tls = true\nca_file = "{ca_file}"\n'
    )
    if files is not None:
        table += f'cert_file = "{files[0]}"\nkey_file = "{files[1]}"\n'
    return table


class ClientCertificateAgentTests(TwistdTestCase):
    """One agent, one Redis asking for certificates, three instances."""

    async def get_text(self, url: str) -> str:
        pool = HTTPConnectionPool(reactor, persistent=False)
        response = await treq.get(url, timeout=2, pool=pool)
        return str((await response.content()).decode())

    async def until(self, base: str, wanted: dict[str, str], timeout: float) -> Any:
        """Poll /instances until each named instance has the wanted status."""
        instances: dict[str, Any] = {}
        started = reactor.seconds()
        while True:
            try:
                body = await self.get_json(f"{base}/instances")
                instances = {i["name"]: i for i in body["instances"]}
            except Exception:
                pass
            if all(instances.get(n, {}).get("status") == s for n, s in wanted.items()):
                return instances
            if reactor.seconds() - started > timeout:
                self.fail(f"not {wanted} within {timeout} s: {instances}")
            await pause(reactor, 0.05)

    async def test_client_certificates(self) -> None:
        """
        With the right certificate and key the instance is up; without one,
        or with one from another CA, down saying what the server refused.
        A SIGHUP after new key and certificate files appear under the same
        names reconnects with them (down, refused); one giving a certificate
        to the instance that had none brings it up. No key material is in
        any HTTP answer or in the log.
        """
        directory = Path(self.mktemp()).absolute()
        directory.mkdir()
        certs: CertificateFiles = make_certificates(directory)
        server = RedisServer(tls=certs, tls_auth_clients="yes").start()
        self.addCleanup(server.stop)
        # The files "right" names, so that they can be replaced.
        right = (str(directory / "right.pem"), str(directory / "right.key"))
        shutil.copy(certs.client_cert_file, right[0])
        shutil.copy(certs.client_key_file, right[1])
        stranger = (certs.other_client_cert_file, certs.other_client_key_file)
        config = directory / "sentinel.toml"
        header = 'interval = 0.2\ntimeout = 0.15\nagent_id = "tls-agent"\n'
        config.write_text(
            header
            + redis_table("right", server.port, certs.ca_file, right)
            + redis_table("none", server.port, certs.ca_file, None)
            + redis_table("stranger", server.port, certs.ca_file, stranger)
        )
        agent = self.spawn("--config", str(config), "--http", HTTP_ANY_PORT)
        self.addCleanup(lambda: agent.poll() is None and agent.kill())
        base = await self.http_base(agent)

        instances = await self.until(
            base, {"right": "up", "none": "down", "stranger": "down"}, START_BOUND
        )
        self.assertIsNone(instances["right"]["error"])
        self.assertEqual(
            instances["none"]["error"],
            "TLS: the server requires a client certificate (cert_file, key_file)",
        )
        self.assertEqual(instances["stranger"]["error"], UNKNOWN_CA)

        # New files under right's names; "none" given the chained certificate.
        shutil.copy(stranger[0], right[0])
        shutil.copy(stranger[1], right[1])
        chain = (certs.chain_cert_file, certs.chain_key_file)
        config.write_text(
            header
            + redis_table("right", server.port, certs.ca_file, right)
            + redis_table("none", server.port, certs.ca_file, chain)
            + redis_table("stranger", server.port, certs.ca_file, stranger)
        )
        agent.send_signal(signal.SIGHUP)
        instances = await self.until(
            base, {"right": "down", "none": "up", "stranger": "down"}, 5.0
        )
        self.assertEqual(instances["right"]["error"], UNKNOWN_CA)
        self.assertIn(
            "reloaded: 0 added, 0 removed, 2 changed, 1 unchanged", self.log()
        )

        answers = [
            await self.get_text(f"{base}{path}")
            for path in ("/instances", "/instances/right", "/pending", "/debug/stats",
                         "/metrics", "/")
        ]  # fmt: skip
        agent.send_signal(signal.SIGTERM)
        await wait_for(reactor, lambda: agent.poll() is not None, 5.0, "agent to exit")
        for key_file in (certs.client_key_file, certs.other_client_key_file, chain[1]):
            body = "".join(Path(key_file).read_text().splitlines()[1:-1])
            for chunk in (body[i : i + 16] for i in range(0, len(body) - 16, 16)):
                for text in [*answers, self.log()]:
                    self.assertNotIn(chunk, text)
        self.assertNotIn("PRIVATE KEY", self.log())
        self.assertNotIn("Traceback", self.log())

    def log(self) -> str:
        return self.log_path.read_text()

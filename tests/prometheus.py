"""
A real Prometheus for integration tests: Debian's ``prometheus`` on a free
loopback port, with a scrape configuration written by the test, asked
through its HTTP API, stopped by PID.

It reads nothing of the machine's own ``/etc/prometheus``: configuration and
storage live in a temporary directory. Readiness is asked on ``/-/ready``
between waits on the process itself, so a server that dies while starting
is reported at once, with its log.
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from tests.servers import LOOPBACK, START_TIMEOUT, _RealServer

PROMETHEUS = "prometheus"


class PrometheusServer(_RealServer):
    """
    Prometheus with `config` as its ``prometheus.yml`` (YAML; JSON is YAML
    too, so tests write it with ``json.dumps``). Scrapes and rule evaluation
    run every second unless the configuration says otherwise.
    """

    name = "prometheus"

    def __init__(self, config: dict[str, Any], *, port: int | None = None) -> None:
        super().__init__(port)
        self.config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            **config,
        }

    @property
    def url(self) -> str:
        """The base URL of its HTTP API."""
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, timeout: float = START_TIMEOUT) -> PrometheusServer:
        """Start and return once Prometheus says it is ready."""
        binary = shutil.which(PROMETHEUS)
        if binary is None:
            raise RuntimeError("Prometheus needs Debian's prometheus package")
        self.directory.mkdir(exist_ok=True)
        config_file = self.directory / "prometheus.yml"
        config_file.write_text(json.dumps(self.config, indent=1))
        argv = [
            binary,
            f"--config.file={config_file}",
            f"--web.listen-address={LOOPBACK}:{self.port}",
            f"--storage.tsdb.path={self.directory / 'data'}",
            "--log.level=warn",
        ]
        self._spawn(argv, None)
        self._poll_ready(self._ready, timeout, 0.05)
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as answer:
                return bool(answer.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of an API answer (``/api/v1/...``); raises on error."""
        query = urllib.parse.urlencode(params)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        with urllib.request.urlopen(url, timeout=5) as answer:
            body = json.loads(answer.read())
        if body.get("status") != "success":
            raise RuntimeError(f"{url}: {body}")
        return body["data"]

    def query(self, expression: str) -> list[dict[str, Any]]:
        """The instant vector of a PromQL expression, as the API gives it."""
        result: list[dict[str, Any]] = self.api("query", query=expression)["result"]
        return result

    def targets(self) -> list[dict[str, Any]]:
        """The active targets, with their labels, health and last error."""
        active: list[dict[str, Any]] = self.api("targets", state="active")[
            "activeTargets"
        ]
        return active

    def stop(self) -> None:
        """Stop (SIGTERM, bounded wait, then SIGKILL) and remove its files."""
        if self._child is not None:
            self._child.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

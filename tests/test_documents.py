"""The published documents: their exact fields, and where each value comes from."""

from __future__ import annotations

import json
import os

from twisted.trial.unittest import SynchronousTestCase

from sentinel import __version__
from sentinel.config import RedisInstance
from sentinel.documents import (
    agent_document,
    instance_document,
    instance_report,
    nerve_member,
    serverset_member,
)
from sentinel.health import InstanceHealth
from sentinel.observation import Observation, Replication
from tests.contract import (
    AGENT_FIELDS,
    INSTANCE_COUNTERS,
    INSTANCE_FIELDS,
    NERVE_FIELDS,
    SERVERSET_FIELDS,
)

CACHE = RedisInstance("cache-1", "10.0.0.5", 6379, password="secret")
REPLICA = Observation(
    ok=True,
    ready=True,
    latency_ms=0.4,
    replication=Replication("slave", "10.0.0.1", 6380, "up"),
)


def observed(*observations: Observation) -> InstanceHealth:
    health = InstanceHealth(rise=1, fall=1)
    for at, observation in enumerate(observations, start=100):
        health.observe(observation, float(at))
    return health


class InstanceDocumentTests(SynchronousTestCase):
    """{root}/instances/{name} and GET /instances."""

    def test_fields_and_values(self) -> None:
        """
        Exactly the fields of DESIGN.md section 5, from the instance's
        config, its health and the agent id; the password nowhere.
        """
        document = instance_document(CACHE, observed(REPLICA), "agent-7")
        self.assertEqual(set(document), INSTANCE_FIELDS)
        self.assertEqual(
            document,
            {
                "name": "cache-1",
                "host": "10.0.0.5",
                "port": 6379,
                "status": "up",
                "ready": True,
                "role": "slave",
                "master_host": "10.0.0.1",
                "master_port": 6380,
                "master_link_status": "up",
                "latency_ms": 0.4,
                "since": 100.0,
                "checked_at": 100.0,
                "error": None,
                "agent": "agent-7",
                "schema": 1,
            },
        )
        self.assertNotIn("secret", json.dumps(document))

    def test_before_any_check(self) -> None:
        """An instance not yet checked has no status, role or times."""
        document = instance_document(CACHE, observed(), "agent-7")
        self.assertEqual(
            [document[k] for k in ("status", "ready", "role", "since", "checked_at")],
            [None, False, None, None, None],
        )

    def test_report_adds_counters(self) -> None:
        """GET /instances: the document plus the check counters."""
        failed = Observation(ok=False, error="timeout (ping)")
        report = instance_report(CACHE, observed(REPLICA, failed), "agent-7")
        self.assertEqual(set(report), INSTANCE_FIELDS | INSTANCE_COUNTERS)
        self.assertEqual(
            [report[k] for k in ("status", "error", "checks", "failures")],
            ["down", "timeout (ping)", 2, 1],
        )
        self.assertEqual(report["consecutive_failures"], 1)


class AgentDocumentTests(SynchronousTestCase):
    """{root}/agents/{agent_id}."""

    def test_fields_and_values(self) -> None:
        """Exactly the documented fields, this process's pid and version."""
        document = agent_document("agent-7", 10.0, 25.0, 1.0, ["a", "b"])
        self.assertEqual(set(document), AGENT_FIELDS)
        self.assertEqual(
            document,
            {
                "agent": "agent-7",
                "pid": os.getpid(),
                "version": __version__,
                "started_at": 10.0,
                "heartbeat_at": 25.0,
                "interval": 1.0,
                "instances": ["a", "b"],
            },
        )


class DiscoveryMemberTests(SynchronousTestCase):
    """The forms Finagle, Prometheus, synapse and nerve read as they are."""

    def test_serverset(self) -> None:
        """A serverset member: the endpoint, no others, status ALIVE."""
        member = serverset_member(CACHE)
        self.assertEqual(set(member), SERVERSET_FIELDS)
        self.assertEqual(
            member,
            {
                "serviceEndpoint": {"host": "10.0.0.5", "port": 6379},
                "additionalEndpoints": {},
                "status": "ALIVE",
            },
        )

    def test_nerve(self) -> None:
        """A nerve member: address, name, labels, the role among them once known."""
        member = nerve_member(CACHE, {"zone": "b"}, "master")
        self.assertEqual(set(member), NERVE_FIELDS)
        self.assertEqual(
            member,
            {
                "host": "10.0.0.5",
                "port": 6379,
                "name": "cache-1",
                "labels": {"zone": "b", "role": "master"},
            },
        )
        self.assertEqual(nerve_member(CACHE, {}, None)["labels"], {})

"""The published documents: their exact fields, and where each value comes from."""

from __future__ import annotations

import json
import os

import attr
from twisted.trial.unittest import SynchronousTestCase

from sentinel import __version__
from sentinel.config import RedisInstance
from sentinel.documents import (
    NERVE,
    SERVERSET,
    agent_document,
    carried_verdict,
    discoverable,
    identity_of,
    instance_document,
    instance_report,
    member_document,
    member_identity,
    member_prefix,
    nerve_member,
    opinion_of,
    previous_verdict,
    said_refresh,
    serverset_member,
    status_since,
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

    def test_checked_at_of_an_up_on_failures(self) -> None:
        """
        Up, then a failure short of `fall`: ``checked_at`` says the last
        success, not the failure (no evidence that it is up); the error
        is the failure's.
        """
        health = InstanceHealth(rise=2, fall=3)
        health.observe(REPLICA, 100.0)
        health.observe(Observation(ok=False, error="connection refused"), 101.0)
        document = instance_document(CACHE, health, "agent-7")
        self.assertEqual(
            [document[k] for k in ("status", "checked_at", "error")],
            ["up", 100.0, "connection refused"],
        )

    def test_checked_at_of_a_down_on_successes(self) -> None:
        """
        The mirror: down, then a success short of `rise`: ``checked_at``
        says the last failure, not the success (no evidence that it is
        down).
        """
        health = InstanceHealth(rise=2, fall=3)
        health.observe(Observation(ok=False, error="connection refused"), 100.0)
        health.observe(REPLICA, 101.0)
        document = instance_document(CACHE, health, "agent-7")
        self.assertEqual(
            [document[k] for k in ("status", "checked_at")], ["down", 100.0]
        )

    def test_opinion_checked_at_is_the_nodes(self) -> None:
        """
        An opinion says the ``checked_at`` an instance node would: the last
        check that bore its status out, not a later one that contradicts
        it (an opinion is built when it is written, which may come after
        such checks: a slow ZooKeeper, a resync, a read back that found it
        overwritten).
        """
        failed = Observation(ok=False, error="connection refused")
        for first, then, status in ((REPLICA, failed, "up"), (failed, REPLICA, "down")):
            health = InstanceHealth(rise=2, fall=3, interval=1.0)
            health.observe(first, 100.0)
            health.observe(then, 101.0)
            opinion = opinion_of(health, 101.5)
            assert opinion is not None
            self.assertEqual((opinion.status, opinion.checked_at), (status, 100.0))

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
        self.assertEqual((report["discovered_by"], report["draining"]), (None, False))
        self.assertIsNone(report["hello_off_until"])

    def test_report_says_hello_off(self) -> None:
        """
        While HELLO is switched off for the instance, /instances says when
        it is tried again; ZooKeeper's document does not.
        """
        health = observed(REPLICA)
        report = instance_report(CACHE, health, "agent-7", 1060.0)
        self.assertEqual(report["hello_off_until"], 1060.0)
        self.assertNotIn("hello_off_until", instance_document(CACHE, health, "a"))

    def test_report_marks_discovered_and_draining(self) -> None:
        """
        A discovered replica names its master in /instances, not in
        ZooKeeper; a drained one says so in both (ready false, its error).
        """
        found = attr.evolve(CACHE, discovered_by="cache-master")
        draining = Observation(True, False, 1.0, "draining", None, True)
        health = observed(draining)
        report = instance_report(found, health, "agent-7")
        self.assertEqual(
            (report["discovered_by"], report["draining"]), ("cache-master", True)
        )
        self.assertFalse(discoverable(health))
        document = instance_document(found, health, "agent-7")
        self.assertEqual(set(document), INSTANCE_FIELDS)
        self.assertEqual(
            (document["status"], document["ready"], document["error"]),
            ("up", False, "draining"),
        )


class StatusSinceTests(SynchronousTestCase):
    """The status and ``since`` read back from a stored instance node."""

    def test_instance_document(self) -> None:
        """An instance document gives its status and since."""
        health = observed(Observation(True, True, 1.0))
        document = instance_document(CACHE, health, "agent-7")
        self.assertEqual(
            status_since(json.dumps(document).encode()), ("up", health.since)
        )

    def test_anything_else(self) -> None:
        """Bytes that are not an instance document with a finite since: None."""
        for stored in (
            b"\xff\xfe\x00",
            b"not json",
            b"[]",
            b'{"status": "up"}',
            b'{"status": "sideways", "since": 1.0}',
            b'{"status": "up", "since": "yesterday"}',
            b'{"status": "up", "since": true}',
            b'{"status": "down", "since": NaN}',
            b'{"status": "down", "since": Infinity}',
            b'{"status": "down", "since": ' + b"9" * 4000 + b"}",
            b"[" * 10_000,
        ):
            self.assertIsNone(status_since(stored), stored)


class PreviousVerdictTests(SynchronousTestCase):
    """Another agent's instance node, as a new primary takes it over."""

    def test_taken(self) -> None:
        """A status and the agent that wrote it: taken as they are."""
        stored = b'{"status": "up", "agent": "b", "latency_ms": 0.4, "since": 1.0}'
        self.assertEqual(previous_verdict(stored), json.loads(stored))

    def test_not_json_once_written_again(self) -> None:
        """
        A document with a number that standard JSON has no spelling for
        (NaN, Infinity, one past a float's range) is no verdict: written
        again under the new primary's name, it was published as ours, and
        readers in other languages refuse it.
        """
        for value in (b"NaN", b"Infinity", b"-Infinity", b"1e400"):
            stored = b'{"status": "up", "agent": "b", "latency_ms": ' + value + b"}"
            self.assertIsNone(previous_verdict(stored), value)


class CarriedVerdictTests(SynchronousTestCase):
    """A previous verdict as its new primary writes it until its own."""

    def test_names_who_decided_it(self) -> None:
        """
        Written under the new primary's name, everything else as it was,
        and ``carried_from`` the primary that decided it; carried on again
        (its carrier left too), still that one's.
        """
        previous = {"status": "up", "agent": "a", "observers": {"a": "up"}}
        carried = carried_verdict(previous, "b")
        self.assertEqual(carried, {**previous, "agent": "b", "carried_from": "a"})
        self.assertEqual(carried_verdict(carried, "c")["carried_from"], "a")

    def test_own_previous_process(self) -> None:
        """
        A verdict of this agent's own (its previous process's, on the
        session it reattached to) is no other's: nothing added, and one
        carried back to the agent that decided it says nothing more.
        """
        previous = {"status": "up", "agent": "b", "observers": {"b": "up"}}
        self.assertEqual(carried_verdict(previous, "b"), previous)
        carried = {**previous, "agent": "c", "carried_from": "b"}
        self.assertEqual(carried_verdict(carried, "b"), previous)

    def test_carried_from_not_a_name(self) -> None:
        """A ``carried_from`` that is no string (anyone's data) names the writer."""
        previous = {"status": "up", "agent": "a", "carried_from": ["x"]}
        self.assertEqual(carried_verdict(previous, "b")["carried_from"], "a")


class SaidRefreshTests(SynchronousTestCase):
    """The refresh an opinion says (`said_refresh`)."""

    def test_said(self) -> None:
        """A refresh a config accepts, above 0 and up to a day, is taken."""
        for refresh in (0.1, 30, 30.0, 86400):
            self.assertEqual(said_refresh({"refresh": refresh}), refresh)

    def test_anything_else(self) -> None:
        """
        None for one a config refuses, for none at all (an agent from
        before opinions said it), and for anything else: anyone may write.
        """
        for refresh in (0, -30.0, 86400.5, 1e308, "30", True, None, [30]):
            self.assertIsNone(said_refresh({"refresh": refresh}), refresh)
        document = json.loads('{"refresh": Infinity, "other": NaN}')
        self.assertIsNone(said_refresh(document))
        self.assertIsNone(said_refresh({}))


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


class DiscoverabilityTests(SynchronousTestCase):
    """When an instance has a member, and what identifies it."""

    def test_up_and_ready_only(self) -> None:
        """A member exists only while the instance is up and ready."""
        loading = Observation(ok=True, ready=False, latency_ms=0.3)
        down = Observation(ok=False, error="connection refused")
        self.assertTrue(discoverable(observed(REPLICA)))
        self.assertFalse(discoverable(observed(loading)))
        self.assertFalse(discoverable(observed(down)))
        self.assertFalse(discoverable(InstanceHealth(rise=1, fall=1)))
        for form in (SERVERSET, NERVE):
            self.assertIsNone(member_document(form, CACHE, observed(down)))

    def test_member_document(self) -> None:
        """Each form's document, the nerve one with the labels and the role."""
        tagged = attr.evolve(CACHE, labels=(("zone", "b"),))
        self.assertEqual(
            member_document(SERVERSET, tagged, observed(REPLICA)),
            serverset_member(tagged),
        )
        self.assertEqual(
            member_document(NERVE, tagged, observed(REPLICA)),
            nerve_member(tagged, {"zone": "b"}, "slave"),
        )

    def test_prefix(self) -> None:
        """Finagle reads member_ children; nerve names them after the instance."""
        self.assertEqual(member_prefix(SERVERSET, CACHE), "member_")
        self.assertEqual(member_prefix(NERVE, CACHE), "cache-1_")

    def test_identity(self) -> None:
        """A member's data says which instance it is, in either form."""
        for form in (SERVERSET, NERVE):
            document = member_document(form, CACHE, observed(REPLICA))
            self.assertEqual(
                identity_of(json.dumps(document).encode()),
                member_identity(form, CACHE),
            )
        self.assertEqual(
            member_identity(NERVE, CACHE), (NERVE, "10.0.0.5", 6379, "cache-1")
        )
        self.assertEqual(
            member_identity(SERVERSET, CACHE), (SERVERSET, "10.0.0.5", 6379, None)
        )

    def test_identity_of_anything_else(self) -> None:
        """Data that is no member of ours identifies nothing."""
        for data in (
            b"",
            b"not json",
            b"[1]",
            b'{"host": "h", "port": "1", "name": "n"}',
            b'{"host": "h", "port": 1}',
            b'{"serviceEndpoint": {"host": "h"}}',
            b"[" * 10_000,
        ):
            self.assertIsNone(identity_of(data), data[:40])

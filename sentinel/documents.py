"""
Every JSON document the agent publishes, built here and only here (save a
group's catalog, compressed and cut into parts: `sentinel.catalog`).

The fields and their meaning are the contract with readers (DESIGN.md
section 5): proxies and clients read the instance documents, operators
the agent's, and discovery readers (Finagle, Prometheus'
``serverset_sd_configs`` and ``nerve_sd_configs``, synapse) their own
formats as they are. Each document is built from current values at the
moment it is written, so a document never outlives the state it shows;
the publisher decides when. ``GET /instances`` shows the same documents
plus each instance's check counters.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from sentinel import __version__
from sentinel.checks import finite
from sentinel.config import RedisInstance
from sentinel.health import DOWN, UP, InstanceHealth
from sentinel.settings import DAY
from sentinel.verdict import Opinion, Verdict

# The version of the instance document's fields; readers check it. A
# group's verdicts (zookeeper.replicas above 1) add `observers` and
# `quorum`: schema 2, every schema-1 field kept with its meaning; and,
# with discovery members published, `member` (`said_member`).
INSTANCE_SCHEMA = 1
VERDICT_SCHEMA = 2
# The agent node lists its instances inline up to this size (JSON bytes);
# a longer list is in its catalog (`sentinel.catalog`), which the node
# points to.
INLINE_INSTANCES_BYTES = 64 * 1024

# zookeeper.discovery: the two forms of discovery members.
SERVERSET = "serverset"
NERVE = "nerve"
# The field of a group's verdict that names its primary's discovery member.
MEMBER = "member"
# The field of a group's verdict that a new primary carries over from the
# primary it took the node from, until it has its own: who decided it
# (`carried_verdict`).
CARRIED_FROM = "carried_from"
# What identifies a member: its form, host, port, and (nerve) name.
MemberIdentity = tuple[str, str, int, str | None]


def instance_document(
    instance: RedisInstance, health: InstanceHealth, agent_id: str
) -> dict[str, Any]:
    """``{root}/instances/{name}``: an instance as the agent `agent_id` sees it."""
    replication = health.replication
    return {
        "name": instance.name,
        "host": instance.host,
        "port": instance.port,
        "status": health.status,
        "ready": health.ready,
        "role": replication.role,
        "master_host": replication.master_host,
        "master_port": replication.master_port,
        "master_link_status": replication.master_link_status,
        "latency_ms": health.latency_ms,
        "since": health.since,
        "checked_at": health.published_checked_at,
        "error": health.error,
        "agent": agent_id,
        "schema": INSTANCE_SCHEMA,
    }


def status_since(stored: bytes) -> tuple[str, float] | None:
    """
    The status and ``since`` an instance document says, or None if
    `stored` is not such a document (`instance_document`).
    """
    document = _json_object(stored)
    return None if document is None else said_since(document)


def stored_document(stored: bytes) -> dict[str, Any] | None:
    """The JSON object a node holds, or None if it holds anything else."""
    return _json_object(stored)


def said_checked_at(document: Mapping[str, Any]) -> float | None:
    """The ``checked_at`` a parsed instance document says, or None."""
    return finite(document.get("checked_at"))


def said_refresh(document: Mapping[str, Any]) -> float | None:
    """
    The ``refresh`` a parsed opinion says, or None unless it is one a
    config accepts (above 0, a day at most): anyone may write under the
    root, and a huge one would excuse its primary's verdicts for good.
    """
    refresh = finite(document.get("refresh"))
    return refresh if refresh is not None and 0 < refresh <= DAY else None


def said_member(document: Mapping[str, Any]) -> str | None:
    """
    The discovery member a group's verdict names (``member``: the path of
    the one its primary holds for the instance), or None: the next
    primary replaces that one as it takes the node over, with no look at
    the service (`Discovery.take_named`). Anyone may write under the root:
    the taker checks the member before it replaces it.
    """
    member = document.get(MEMBER)
    return member if isinstance(member, str) and member.startswith("/") else None


def said_since(document: Mapping[str, Any]) -> tuple[str, float] | None:
    """The status and ``since`` a parsed instance document says, or None."""
    status, since = document.get("status"), finite(document.get("since"))
    if status not in (UP, DOWN) or since is None:
        return None
    return str(status), since


def instance_report(
    instance: RedisInstance,
    health: InstanceHealth,
    agent_id: str,
    hello_off_until: float | None = None,
    changes_held_since: float | None = None,
    unjudged_since: float | None = None,
    why_unjudged: str | None = None,
    status_flapping_since: float | None = None,
    address: str | None = None,
) -> dict[str, Any]:
    """
    ``GET /instances``: the instance's document plus its check counters,
    the master whose INFO listed it if replica discovery found it (else
    null), whether its drain key is set, while HELLO is switched off
    for it (`sentinel.probe`), when HELLO is tried again (else null),
    since when a change of its node waits because it changes too often
    (`sentinel.flapping`; else null), and, while the agent has not judged
    it lately (`InstanceState.unjudged_since`), since when and why (else
    null): ``checked_at`` stays the time of its last judgement; since
    when its status flaps (`sentinel.flapping`; else null); and the IP
    address its kept connection goes to (else null: a name's addresses are
    tried in turn, `sentinel.addresses`). Not in the ZooKeeper document,
    whose fields are the contract's.
    """
    return {
        **instance_document(instance, health, agent_id),
        "consecutive_successes": health.consecutive_successes,
        "consecutive_failures": health.consecutive_failures,
        "checks": health.checks,
        "failures": health.failures,
        "discovered_by": instance.discovered_by,
        "draining": health.draining,
        "hello_off_until": hello_off_until,
        "changes_held_since": changes_held_since,
        "unjudged_since": unjudged_since,
        "unjudged_reason": None if unjudged_since is None else why_unjudged,
        "status_flapping_since": status_flapping_since,
        "address": address,
    }


def agent_document(
    agent_id: str,
    started_at: float,
    heartbeat_at: float,
    interval: float,
    instances: Sequence[str] | Mapping[str, Any],
) -> dict[str, Any]:
    """
    ``{root}/agents/{agent_id}``: this process, and the instances it can
    check: their names, or where its catalog lists them (`catalog_reference`).
    """
    return {
        "agent": agent_id,
        "pid": os.getpid(),
        "version": __version__,
        "started_at": started_at,
        "heartbeat_at": heartbeat_at,
        "interval": interval,
        "instances": dict(instances)
        if isinstance(instances, Mapping)
        else list(instances),
    }


def session_holder_fields(token: str, refused: Sequence[str]) -> dict[str, Any]:
    """
    What the agent node adds with a state_dir (`sentinel.sharing`): the
    token this process's state file names it by, and the tokens of other
    processes found using its session (copies of its state file), which it
    refused.
    """
    return {"token": token, "refused": list(refused)}


def session_holder(data: bytes) -> tuple[str | None, list[str], int | None]:
    """
    The token, refused tokens and pid an agent node says, from
    `session_holder_fields` and `agent_document` (None, [], None where a
    field is missing or invalid: anyone may write under the root).
    """
    document = _json_object(data) or {}
    token, refused, pid = (document.get(k) for k in ("token", "refused", "pid"))
    return (
        token if isinstance(token, str) else None,
        [t for t in refused if isinstance(t, str)] if isinstance(refused, list) else [],
        pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
    )


def opinion_of(health: InstanceHealth, now: float) -> Opinion | None:
    """
    What this agent's checks say of an instance, or None before any, or
    when they are stale (`InstanceHealth.current`): not evidence of now.
    Its ``checked_at`` is the node's (`InstanceHealth.published_checked_at`):
    the last check that bore the status out. An opinion is built when it
    is written, which may follow checks that contradict its status (a
    slow ZooKeeper, a resync, a read back finding it overwritten); their
    time said a failure renewed an ``up``.
    """
    status = health.status
    if status is None or not health.current(now):
        return None
    replication = health.replication
    # A drained instance is alive but not to be used: not ready, and the
    # verdict's error says why.
    draining = health.draining and health.status == UP
    return Opinion(
        status=status,
        ready=health.ready and not draining,
        role=replication.role,
        master_host=replication.master_host,
        master_port=replication.master_port,
        master_link_status=replication.master_link_status,
        latency_ms=health.latency_ms,
        checked_at=health.published_checked_at,
        error="draining" if draining and health.error is None else health.error,
        settled=health.settled,
    )


def opinion_document(
    opinion: Opinion,
    agent_id: str,
    instance: RedisInstance,
    refresh: float,
    discovery: str,
) -> dict[str, Any]:
    """
    ``{root}/opinions/{name}/{agent_id}``: one observer's view, the
    address it checks (a primary names an opinion of another address in
    /healthz), its `refresh`, within which it writes its verdicts again when it
    is the primary (a co-observer judges them late by it), and the
    `discovery` it would publish of the instance (`discovery_digest`: a
    primary names an opinion that says another in /healthz), and whether
    its status is `settled` (a primary leaves an unsettled down one out of
    the quorum while the verdict is fresh and up: `verdict.decide`).
    """
    return {
        "host": instance.host,
        "port": instance.port,
        "status": opinion.status,
        "ready": opinion.ready,
        "role": opinion.role,
        "master_host": opinion.master_host,
        "master_port": opinion.master_port,
        "master_link_status": opinion.master_link_status,
        "latency_ms": opinion.latency_ms,
        "checked_at": opinion.checked_at,
        "error": opinion.error,
        "agent": agent_id,
        "schema": INSTANCE_SCHEMA,
        "refresh": refresh,
        "discovery": discovery,
        # Read as true when missing (`verdict.opinion_in`): an agent from
        # before the field.
        "settled": opinion.settled,
    }


def discovery_digest(discovery: tuple[str, str] | None, instance: RedisInstance) -> str:
    """
    What discovery publishes of `instance` under `discovery` (form, root;
    None: no members), said in an opinion so that a primary can tell
    another member's config from its own: the form, and a digest of the
    root, service and labels (``nerve:1f0c3a9b2e47``), or ``none``. A
    digest rather than the values: labels are free-form, and an opinion
    is written at every change of every instance observed; 48 bits tell
    two configs of one name apart but for one chance in 2**48.
    """
    if discovery is None:
        return "none"
    form, root = discovery
    said = json.dumps(
        [root, instance.discovery_service, instance.labels], separators=(",", ":")
    )
    return f"{form}:{hashlib.sha256(said.encode('utf-8')).hexdigest()[:12]}"


def verdict_document(
    instance: RedisInstance,
    verdict: Verdict,
    agent_id: str,
    since: float | None,
    checked_at: float | None,
) -> dict[str, Any]:
    """
    ``{root}/instances/{name}`` written by a group's primary `agent_id`:
    every schema-1 field with its meaning, from the opinion the verdict
    took (`checked_at`: the primary's last check, when it has one), plus
    each observer's status and the quorum applied (schema 2), and the
    observers whose down opinion the count left out (unsettled, against a
    fresh up verdict: `verdict.decide`), added to schema 2 only when there
    are any: a verdict that counted every opinion has exactly the fields
    DESIGN.md section 8 lists, as readers written to it expect.
    """
    source = verdict.source
    up = verdict.status == UP
    document: dict[str, Any] = {
        "name": instance.name,
        "host": instance.host,
        "port": instance.port,
        "status": verdict.status,
        "ready": source.ready if up else False,
        "role": source.role if up else None,
        "master_host": source.master_host if up else None,
        "master_port": source.master_port if up else None,
        "master_link_status": source.master_link_status if up else None,
        "latency_ms": source.latency_ms,
        "since": since,
        "checked_at": source.checked_at if checked_at is None else checked_at,
        "error": source.error,
        "agent": agent_id,
        "schema": VERDICT_SCHEMA,
        "observers": dict(verdict.observers),
        "quorum": verdict.quorum,
    }
    if verdict.uncounted:
        document["uncounted"] = list(verdict.uncounted)
    return document


def previous_verdict(data: bytes) -> dict[str, Any] | None:
    """
    An instance node's document as another agent left it, if it is one
    (a status, and the agent that wrote it): a new primary's first
    verdict until it has its own.
    """
    document = _json_object(data)
    if document is None or not isinstance(document.get("agent"), str):
        return None
    if document.get("status") not in (UP, DOWN):
        return None
    try:
        # It is written again under the new primary's name: JSON that
        # readers in other languages refuse (NaN, Infinity, a number past
        # a float's range) would be published as ours, and a nesting past
        # the encoder's depth would fail the takeover. No agent writes
        # either: such a node is anyone's, as garbage is.
        json.dumps(document, allow_nan=False)
    except (ValueError, RecursionError):
        return None
    return document


def carried_verdict(previous: Mapping[str, Any], agent_id: str) -> dict[str, Any]:
    """
    The verdict `previous`, which an instance node said when `agent_id`
    became its primary, as `agent_id` writes it until it has its own
    (DESIGN.md section 8: "from the previous verdict until its own first
    check"). ``agent`` is the node's writer, as every reader of schema 1
    expects (the takeover rules read it too); ``observers``,
    ``checked_at`` and ``since`` stay as they were decided, and
    ``carried_from`` names who decided them: the previous primary, or
    the one it carried the verdict from. Without it the node read as a
    decision of the new primary, naming the leaver among its observers,
    for up to 6 s after a leave at 1,000 instances. A verdict of this
    agent's own previous process (a restart that reattached to its
    session) says nothing more: it is no other's.
    """
    document = {**previous, "agent": agent_id}
    decided_by = decided_by_of(previous)
    if decided_by == agent_id:
        document.pop(CARRIED_FROM, None)
    else:
        document[CARRIED_FROM] = decided_by
    return document


def decided_by_of(previous: Mapping[str, Any]) -> str:
    """
    Who decided the verdict `previous` (`previous_verdict`): the agent
    it names as ``carried_from``, if it carried it over, else its writer.
    """
    decided_by = previous.get(CARRIED_FROM)
    return decided_by if isinstance(decided_by, str) else str(previous["agent"])


def written_by(raw: bytes) -> object:
    """The agent an instance node says wrote it, if it says one."""
    document = previous_verdict(raw)
    return None if document is None else document.get("agent")


def catalog_reference(path: str, digest: str, count: int) -> dict[str, Any]:
    """The agent node's `instances` when the list is too long to be inline."""
    return {"catalog": path, "digest": digest, "count": count}


def serverset_member(instance: RedisInstance) -> dict[str, Any]:
    """A Finagle serverset member (``member_NNNNNNNNNN``): an instance up and ready."""
    return {
        "serviceEndpoint": {"host": instance.host, "port": instance.port},
        "additionalEndpoints": {},
        "status": "ALIVE",
    }


def nerve_member(
    instance: RedisInstance, labels: Mapping[str, str], role: str | None
) -> dict[str, Any]:
    """
    A nerve member (``{name}_NNNNNNNNNN``) for an instance up and ready: its
    `labels`, and its role among them once known.
    """
    return {
        "host": instance.host,
        "port": instance.port,
        "name": instance.name,
        "labels": {**labels, "role": role} if role is not None else dict(labels),
    }


def discoverable(health: InstanceHealth) -> bool:
    """
    Whether an instance belongs in discovery now: up, ready and not
    draining (a drained instance is not ready either; said twice, so that
    no change to what ready means brings one back). Every member's presence
    follows from this one predicate (groups' primaries will narrow it).
    """
    return health.status == UP and health.ready and not health.draining


def previous_presence(previous: Mapping[str, Any] | None) -> tuple[bool, str | None]:
    """
    Whether a verdict another agent left (`previous_verdict`) has the
    instance in discovery (up and ready), and the role it says.
    """
    if previous is None:
        return False, None
    role = previous.get("role")
    present = previous.get("status") == UP and previous.get("ready") is True
    return present, role if isinstance(role, str) else None


def member_document(
    form: str, instance: RedisInstance, health: InstanceHealth
) -> dict[str, Any] | None:
    """The instance's discovery member in `form`, or None if it has none now."""
    return member_document_of(
        form, instance, discoverable(health), health.replication.role
    )


def member_document_of(
    form: str, instance: RedisInstance, present: bool, role: str | None
) -> dict[str, Any] | None:
    """
    The member in `form` of an instance with `role`, if `present` (up and
    ready: `discoverable`, or a group's verdict saying so), else None.
    """
    if not present:
        return None
    if form == SERVERSET:
        return serverset_member(instance)
    return nerve_member(instance, dict(instance.labels), role)


def member_prefix(form: str, instance: RedisInstance) -> str:
    """The name of the instance's member before ZooKeeper's sequence number."""
    return "member_" if form == SERVERSET else f"{instance.name}_"


def member_identity(form: str, instance: RedisInstance) -> MemberIdentity:
    """What the instance's member says it is, whatever its state."""
    name = instance.name if form == NERVE else None
    return form, instance.host, instance.port, name


def identity_of(data: bytes) -> MemberIdentity | None:
    """
    What the member holding `data` says it is, in either form, or None if
    it is no member (another writer's data, or garbage).
    """
    document = _json_object(data)
    if document is None:
        return None
    endpoint = document.get("serviceEndpoint")
    if isinstance(endpoint, dict):
        form, name, document = SERVERSET, None, endpoint
    else:
        form, name = NERVE, document.get("name")
        if not isinstance(name, str):
            return None
    host, port = document.get("host"), document.get("port")
    if not isinstance(host, str) or not isinstance(port, int):
        return None
    return form, host, port, name


def _json_object(data: bytes) -> dict[str, Any] | None:
    """
    The JSON object `data` holds, or None for anything else a node may hold:
    not UTF-8, not JSON, nested too deep to parse, or not an object.
    """
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError included.
        return None
    return document if isinstance(document, dict) else None

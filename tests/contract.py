"""The published shapes of DESIGN.md section 5, written out once for tests."""

# The JSON of {root}/instances/{name}.
INSTANCE_FIELDS = frozenset(
    {
        "name", "host", "port", "status", "ready", "role", "master_host",
        "master_port", "master_link_status", "latency_ms", "since",
        "checked_at", "error", "agent", "schema",
    }
)  # fmt: skip

# GET /instances adds the check counters, the master that listed a
# discovered replica (else null), whether the drain key is set, when
# HELLO is tried again while it is switched off (else null), and since when
# a change waits because the instance changes too often (else null), and
# since when and why the agent has not judged it lately (else null), and
# since when its status flaps (else null).
INSTANCE_COUNTERS = frozenset(
    {
        "consecutive_successes", "consecutive_failures", "checks", "failures",
        "discovered_by", "draining", "hello_off_until", "changes_held_since",
        "unjudged_since", "unjudged_reason", "status_flapping_since", "address",
    }
)  # fmt: skip

# The JSON of {root}/agents/{agent_id}.
AGENT_FIELDS = frozenset(
    {"agent", "pid", "version", "started_at", "heartbeat_at", "interval", "instances"}
)

# Discovery members (zookeeper.discovery): a Finagle serverset member and a
# nerve member.
SERVERSET_FIELDS = frozenset({"serviceEndpoint", "additionalEndpoints", "status"})
NERVE_FIELDS = frozenset({"host", "port", "name", "labels"})

# GET /debug/stats: the documented counters (more may follow, by name).
DEBUG_STATS_FIELDS = frozenset(
    {
        "pending_checks", "delayed_calls", "open_fds", "rss_bytes",
        "gc_objects", "threads", "ticks", "overruns", "uptime_seconds", "checks",
        "failures", "instances", "instances_up", "tick_completion_seconds",
    }
)  # fmt: skip

"""
Every setting of the agent, in one table: its TOML key, the command-line
option that overrides it (if any), its default, the check of a given value,
and its help text. The value classes' defaults (`sentinel.config`), the
options and help of ``twistd sentinel`` (`sentinel.tap`) and the defaults of
``python -m sentinel.status`` are all read from here; a new setting is one
row (a key of a new ``[table]`` is named ``table.key``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attr

from sentinel import checks


@attr.frozen
class Setting:
    """
    One setting: its TOML key (``table.key`` for a key of a table, such as
    ``zookeeper.root``), what it is for, the check of a given value, its
    default, and the command-line option that overrides it, if any.
    """

    key: str
    help: str
    # None for [[redis]]: the instance list is checked by code of its own.
    check: Callable[[str, object], Any] | None
    default: Any = None
    option: str | None = None
    # The option's text into a value for `check`.
    parse_option: Callable[[str, str], object] = checks.option_text
    # What the help shows as the default where that is not a value.
    default_help: str | None = None
    # Given several times, the option's values make a list.
    repeatable: bool = False

    @property
    def usage(self) -> str:
        """The help text, and the default as twistd shows defaults."""
        default = self.default if self.default_help is None else self.default_help
        return self.help if default is None else f"{self.help} [default: {default}]"


# Every time and count has bounds, checked at start and at each reload
# (`checks.seconds`): below them the agent spins (a check loop, or a
# ZooKeeper write, as fast as the CPU goes), above them it never notices
# anything, or its arithmetic overflows. A day is the longest period.
DAY = 86400.0
# A tick every 10 ms is already 100 rounds of checks a second; a check has
# at least a millisecond (a PING on loopback answers in about 0.1 ms).
INTERVALS = checks.seconds(0.01, DAY)
TIMEOUTS = checks.seconds(0.001, DAY)
# Rewrites of ZooKeeper nodes (refresh, heartbeat) at most ten times a
# second each, and a discovered replica kept at least that long past its
# listing: bounded, and short enough for a test or a demo that wants to
# see a refresh soon.
PERIODS = checks.seconds(0.1, DAY)
RENEWALS = checks.seconds(1.0, DAY)
# ZooKeeper grants 2 to 20 ticks (4 to 40 s by default) whatever is asked,
# but the agent itself waits a session timeout before it replaces a client
# cut off, and bounds each call by it: an hour at most.
SESSION_TIMEOUTS = checks.seconds(1.0, 3600.0)
# A lookup that takes more than an hour is not coming.
LOOKUP_TIMEOUTS = checks.seconds(0.01, 3600.0)
# rise or fall 1,000 at the 1 s default interval is 17 minutes to notice a
# change: more would keep a dead instance up for hours.
STREAKS = checks.count_to(1000)
# Each observer writes its opinion of every instance it observes on each
# change: a hundred are far more points of view than a verdict needs.
MAX_REPLICAS = 100

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "redis",
        "[NAME=]HOST:PORT to watch; repeatable; replaces the file's [[redis]].",
        check=None,
        option="--redis",
        repeatable=True,
    ),
    Setting(
        "interval",
        "Seconds between checks of an instance.",
        INTERVALS,
        default=1.0,
        option="--interval",
        parse_option=checks.option_number,
    ),
    Setting(
        "timeout",
        "Seconds a check may take, connect included; at most the interval.",
        TIMEOUTS,
        default=0.5,
        default_help="0.5, or the interval if shorter",
        option="--timeout",
        parse_option=checks.option_number,
    ),
    Setting(
        "rise",
        "Consecutive successes that make an instance up.",
        STREAKS,
        default=2,
        option="--rise",
        parse_option=checks.option_integer,
    ),
    Setting(
        "fall",
        "Consecutive failures that make an instance down.",
        STREAKS,
        default=3,
        option="--fall",
        parse_option=checks.option_integer,
    ),
    Setting(
        "http",
        "HTTP endpoint string, or none.",
        checks.http,
        default="tcp:6060:interface=127.0.0.1",
        option="--http",
    ),
    Setting(
        "agent_id",
        "Name of this agent's znode.",
        checks.znode_name,
        option="--agent-id",
        default_help="the host name",
    ),
    Setting(
        "info_every",
        "Send INFO replication every N checks.",
        # 10,000: about three hours at the 1 s default interval.
        checks.count_to(10_000),
        10,
    ),
    Setting(
        "state_dir",
        "Directory keeping the ZooKeeper session for the next process "
        "(a restart then keeps every node).",
        checks.file_name,
        option="--state-dir",
    ),
    Setting(
        "role_signal",
        "Ask HELLO with every PING: a role change reads INFO at once.",
        checks.boolean,
        default=True,
    ),
    Setting(
        "drain_key",
        "Key whose existence drains an instance (up, not ready); every [[redis]]'s.",
        checks.redis_key,
    ),
    Setting(
        "replica_grace",
        "Seconds a discovered replica stays after its master stops listing it.",
        PERIODS,
        default=60.0,
    ),
    Setting(
        "reconnect_every",
        "Seconds a connection to an instance is kept at most; then a check "
        "opens a new one (an address that turns new clients away fails it).",
        # At least a second: each renewal is a connect (and a TLS handshake).
        RENEWALS,
        default=60.0,
    ),
    Setting(
        "zookeeper.hosts",
        "ZooKeeper hosts h1:2181,h2:2181[/chroot]; without them nothing is published.",
        checks.zookeeper_hosts,
        option="--zookeeper",
    ),
    Setting(
        "zookeeper.root",
        "Base znode path.",
        checks.znode_path,
        default="/sentinel",
        option="--zk-root",
    ),
    Setting(
        "zookeeper.session_timeout",
        "Requested ZooKeeper session timeout, seconds.",
        SESSION_TIMEOUTS,
        default=10.0,
        option="--zk-session-timeout",
        parse_option=checks.option_number,
    ),
    Setting(
        "zookeeper.refresh",
        "Seconds between rewrites of unchanged instance nodes.",
        PERIODS,
        default=30.0,
    ),
    Setting(
        "zookeeper.heartbeat",
        "Seconds between rewrites of this agent's node.",
        PERIODS,
        default=10.0,
    ),
    Setting(
        "zookeeper.replicas",
        "Agents of the group (sharing zookeeper.root) that observe each instance.",
        checks.count_to(MAX_REPLICAS),
        default=1,
    ),
    Setting(
        "zookeeper.quorum",
        "Observers' opinions that must say down for an instance to be published "
        "down; at most zookeeper.replicas.",
        checks.count_to(MAX_REPLICAS),
        default_help="replicas // 2 + 1",
    ),
    Setting(
        "zookeeper.watch_writes",
        "Watch each instance node for other clients' writes and write ours "
        "over them within a second (one read per write of ours).",
        checks.boolean,
        default_help="true, false with zookeeper.auth_file",
    ),
    Setting(
        "zookeeper.auth_file",
        "File holding user:password for ZooKeeper digest auth.",
        checks.file_name,
    ),
    Setting(
        "zookeeper.discovery",
        "Also publish up-and-ready instances for discovery readers: "
        "serverset, nerve or none.",
        checks.discovery_format,
        default="none",
    ),
    Setting(
        "zookeeper.discovery_root",
        "Base znode path of the discovery members.",
        checks.znode_path,
        default="/discovery",
    ),
    Setting(
        "dns.resolv_conf",
        "resolv.conf(5) file naming the name servers and search list.",
        checks.file_name,
        default="/etc/resolv.conf",
    ),
    Setting(
        "dns.nameservers",
        "Name servers ADDRESS[:PORT] or [IPV6]:PORT, instead of resolv_conf's.",
        checks.nameservers,
        default=(),
    ),
    Setting(
        "dns.hosts_file",
        "hosts(5) file, looked in before the name servers.",
        checks.file_name,
        default="/etc/hosts",
    ),
    Setting(
        "dns.timeout",
        "Seconds one host name lookup may take.",
        LOOKUP_TIMEOUTS,
        default_help="2 x timeout, at least 2",
    ),
)

# The keys of each [[redis]] table.
REDIS_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "name",
        "The instance's node name; unique.",
        checks.znode_name,
        default_help="HOST:PORT",
    ),
    Setting("host", "Host name or IP address; required.", checks.host),
    Setting("port", "TCP port; required.", checks.port),
    Setting("password_file", "File holding the password for AUTH.", checks.file_name),
    Setting("username", "ACL user for AUTH; needs password_file.", checks.string),
    Setting(
        "tls",
        "Connect with TLS, the certificate verified.",
        checks.boolean,
        default=False,
    ),
    Setting(
        "ca_file",
        "PEM file of the CAs to verify against; needs tls.",
        checks.file_name,
        default_help="the system's CAs",
    ),
    Setting(
        "server_name",
        "Name the certificate must carry; needs tls.",
        checks.server_name,
        default_help="host",
    ),
    Setting(
        "cert_file",
        "PEM file of the client certificate (then its CAs) to show the server; "
        "needs tls and key_file.",
        checks.file_name,
    ),
    Setting(
        "key_file",
        "PEM file of cert_file's private key, unencrypted; may be cert_file.",
        checks.file_name,
    ),
    Setting(
        "service",
        "Discovery service (znode name) the instance is a member of.",
        checks.znode_name,
        default_help="name",
    ),
    Setting(
        "labels",
        "Discovery labels, a table of strings (nerve members carry them).",
        checks.labels,
        default=(),
    ),
    Setting(
        "discover_replicas",
        "Also watch the replicas this instance's INFO replication lists.",
        checks.boolean,
        default=False,
    ),
    Setting(
        "drain_key",
        "Key whose existence drains this instance; overrides the global one.",
        checks.redis_key,
        default_help="drain_key",
    ),
)

_BY_KEY = {s.key: s for s in SETTINGS}
_REDIS_BY_KEY = {s.key: s for s in REDIS_SETTINGS}

# Overrides are keyed by the TOML key they replace; the value is what the
# option's own error messages call the field.
OPTION_NAMES: Mapping[str, str] = {
    s.key: s.option for s in SETTINGS if s.option is not None
}


def setting(key: str) -> Setting:
    """The setting with TOML key `key` (``"zookeeper.root"``)."""
    return _BY_KEY[key]


def redis_setting(key: str) -> Setting:
    """The setting with key `key` in each [[redis]] table (``"tls"``)."""
    return _REDIS_BY_KEY[key]

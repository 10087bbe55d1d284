"""
The agent's configuration: the frozen values it runs with, loaded from TOML
and the command line as `sentinel.settings` describes each setting, and
validated into one-line `ConfigError`s.

The files the configuration names are read through a `FileReader`: only
regular files of bounded size, each within a deadline (`sentinel.files`).
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple

import attr
from cryptography import x509
from twisted.logger import Logger

from sentinel import checks
from sentinel.certificates import (
    CertificateProblem,
    ClientCertificate,
    client_certificate,
    parse_certificates,
    parse_private_key,
)
from sentinel.checks import ConfigError, error, invalid, parse_redis_address, show
from sentinel.files import (
    MAX_CA_BYTES,
    MAX_CONFIG_BYTES,
    MAX_HOSTS_BYTES,
    MAX_SECRET_BYTES,
    FileReader,
    Unreadable,
)
from sentinel.settings import (
    OPTION_NAMES,
    REDIS_SETTINGS,
    SETTINGS,
    redis_setting,
    setting,
)

__all__ = [
    "ClientCertificate",
    "Config",
    "ConfigError",
    "DNSConfig",
    "OPTION_NAMES",
    "RedisInstance",
    "ZooKeeperConfig",
    "load_config",
    "load_zookeeper_config",
    "parse_redis_address",
]


_TABLES = frozenset(s.key.partition(".")[0] for s in SETTINGS if "." in s.key)
_TOP_KEYS = frozenset(s.key for s in SETTINGS if "." not in s.key) | _TABLES
_KEYS = frozenset(s.key for s in SETTINGS)
_REDIS_KEYS = frozenset(s.key for s in REDIS_SETTINGS)
# Keys that belong at the top level, and the table of each table's key, for
# the keys TOML puts where they were not meant (_unknown_key).
_TOP_LEVEL = frozenset(s.key for s in SETTINGS if "." not in s.key and s.key != "redis")
_TABLE_OF = {
    **{key: "[[redis]]" for key in _REDIS_KEYS},
    **{
        s.key.partition(".")[2]: f"[{s.key.partition('.')[0]}]"
        for s in SETTINGS
        if "." in s.key
    },
}


def _default(key: str) -> Any:
    return setting(key).default


def _redis_default(key: str) -> Any:
    return redis_setting(key).default


@attr.frozen
class RedisInstance:
    """One Redis server to watch (defaults: `REDIS_SETTINGS`)."""

    name: str
    host: str
    port: int
    username: str | None = _redis_default("username")
    password_file: str | None = _redis_default("password_file")
    # Read from password_file at load time; never logged or shown.
    password: str | None = attr.field(default=None, repr=False)
    tls: bool = _redis_default("tls")
    ca_file: str | None = _redis_default("ca_file")
    server_name: str | None = _redis_default("server_name")
    # Parsed from ca_file at load time, so that making a probe reads no
    # file; a new bundle makes the instance a changed one on reload.
    ca_certificates: tuple[x509.Certificate, ...] = attr.field(default=(), repr=False)
    cert_file: str | None = _redis_default("cert_file")
    key_file: str | None = _redis_default("key_file")
    # Read from cert_file and key_file at load time, likewise; the key is
    # never logged or shown.
    client_certificate: ClientCertificate | None = attr.field(default=None, repr=False)
    # The discovery service the instance belongs to (None: its name), and its
    # labels as sorted (key, value) pairs.
    service: str | None = _redis_default("service")
    labels: tuple[tuple[str, str], ...] = _redis_default("labels")

    @property
    def discovery_service(self) -> str:
        """The discovery service it is a member of: `service`, or its name."""
        return self.name if self.service is None else self.service

    discover_replicas: bool = _redis_default("discover_replicas")
    # Its own, or else the global drain_key.
    drain_key: str | None = None
    # Set on a replica found by discovery (sentinel.topology): the name of
    # the configured master that listed it. Never read from a config file.
    discovered_by: str | None = None


@attr.frozen
class ZooKeeperConfig:
    """Where and how to publish (defaults: `SETTINGS`)."""

    hosts: str
    root: str = _default("zookeeper.root")
    session_timeout: float = _default("zookeeper.session_timeout")
    refresh: float = _default("zookeeper.refresh")
    heartbeat: float = _default("zookeeper.heartbeat")
    # Instance nodes watched for other clients' writes (sentinel.writewatch);
    # None: watched unless auth_file keeps other clients from writing them.
    watch_writes_setting: bool | None = _default("zookeeper.watch_writes")
    auth_file: str | None = _default("zookeeper.auth_file")
    # "user:password" read from auth_file at load time; never logged.
    auth: str | None = attr.field(default=None, repr=False)
    # "serverset", "nerve" or "none", and where the members go.
    discovery: str = _default("zookeeper.discovery")
    discovery_root: str = _default("zookeeper.discovery_root")
    # Agents observing each instance, and down opinions that make it down
    # (sentinel.group); None: a majority of the replicas.
    replicas: int = _default("zookeeper.replicas")
    quorum_setting: int | None = _default("zookeeper.quorum")

    @property
    def quorum(self) -> int:
        """Down opinions needed: `quorum_setting`, or a majority of `replicas`."""
        if self.quorum_setting is None:
            return self.replicas // 2 + 1
        return self.quorum_setting

    @property
    def watch_writes(self) -> bool:
        """
        Whether instance nodes are watched for other clients' writes:
        `watch_writes_setting`, or else only without ``auth_file``. With it,
        the nodes' ACL lets no other client write them, and the watch would
        only cost its read per write (`sentinel.writewatch`).
        """
        if self.watch_writes_setting is None:
            return self.auth_file is None
        return self.watch_writes_setting


@attr.frozen
class DNSConfig:
    """Where host names are looked up (defaults: `SETTINGS`; sentinel.resolve)."""

    resolv_conf: str = _default("dns.resolv_conf")
    # (address, port) of each name server; empty: resolv_conf's.
    nameservers: tuple[tuple[str, int], ...] = _default("dns.nameservers")
    hosts_file: str = _default("dns.hosts_file")
    # Bound on one lookup, seconds; None: derived from the check timeout.
    timeout: float | None = _default("dns.timeout")


@attr.frozen
class Config:
    """Everything the agent runs with (defaults: `SETTINGS`)."""

    instances: tuple[RedisInstance, ...]
    agent_id: str
    interval: float = _default("interval")
    timeout: float = _default("timeout")
    rise: int = _default("rise")
    fall: int = _default("fall")
    http: str = _default("http")
    info_every: int = _default("info_every")
    replica_grace: float = _default("replica_grace")
    reconnect_every: float = _default("reconnect_every")
    role_signal: bool = _default("role_signal")
    zookeeper: ZooKeeperConfig | None = None
    dns: DNSConfig = DNSConfig()
    # An absolute path: where the ZooKeeper session is kept for the next
    # process (sentinel.session).
    state_dir: str | None = _default("state_dir")
    # How many of the config file's [[redis]] instances ``--redis``
    # replaced; None without a file or without ``--redis``.
    replaced_instances: int | None = None


class _Given(NamedTuple):
    """A value as the user gave it, and the name to blame it on."""

    label: str
    value: object


def load_config(
    path: str | None,
    overrides: Mapping[str, object],
    default_agent_id: str,
    reader: FileReader | None = None,
    reloading: bool = False,
) -> Config:
    """
    Read the TOML file at C{path} (if any), lay the command-line C{overrides}
    (keyed like L{OPTION_NAMES}, only the options given) over it, validate,
    and read the secret, CA and client certificate files it names, all
    through C{reader} (a fresh L{FileReader} if L{None}). This blocks for up
    to a read deadline per file: never call it on the reactor thread.

    An empty file is every default at start, but refused when
    C{reloading}: a running agent that read its file before finds it empty
    when it is caught truncated, between a writer's truncation and its
    first write (``cat > sentinel.toml``, an editor saving in place, a
    reload sent by a tool watching the file) or for good (the writer out
    of disk space), and applying it would stop every instance and delete
    its node.

    @raise ConfigError: with one line naming the bad field and value.
    """
    with _loading(path, overrides, reader, reloading) as (settings, base, files):
        config = _config(settings, base, files, default_agent_id)
        replaced = _replaced(path, overrides, settings, base, files)
        if replaced is None:
            return config
        return attr.evolve(config, replaced_instances=replaced)


def load_zookeeper_config(
    path: str | None,
    overrides: Mapping[str, object],
    reader: FileReader | None = None,
) -> ZooKeeperConfig | None:
    """
    What a reader of the agents' ZooKeeper nodes needs (``sentinel-status``):
    the C{[zookeeper]} table of the file at C{path} (if any) with the
    command-line C{overrides} over it, validated and with its C{auth_file}
    read as L{load_config} does; L{None} without ZooKeeper hosts. The rest
    of the file must parse and hold only known keys, but is not checked
    further, and the files it names are not read: a reader may not be
    allowed to read the agent's Redis secrets.

    @raise ConfigError: with one line naming the bad field and value.
    """
    with _loading(path, overrides, reader, False) as (settings, base, files):
        return _zookeeper(settings, base, files)


def tell_replaced(log: Logger, config: Config) -> None:
    """
    Say in one line, at start and at each reload, that ``--redis`` replaced
    the config file's [[redis]] and how many instances that was: without
    it, the file's list was put aside without a word. A file without
    [[redis]] has nothing put aside, and nothing is said.
    """
    if not config.replaced_instances:
        return
    log.info(
        "--redis: the command line's {given} instance(s) replace the config "
        "file's {replaced} [[redis]] instance(s), which are validated but not "
        "watched",
        given=len(config.instances),
        replaced=config.replaced_instances,
    )


def tell_empty(log: Logger, config: Config, reloadable: bool) -> None:
    """
    Warn, at start and at each reload, when `config` has no instance: the
    agent then checks nothing, and said only ``watching 0 instance(s)``.
    It goes on (a config file may get its [[redis]] tables later, loaded
    by a reload, when `reloadable`); the line says what to give.
    """
    if config.instances:
        return
    log.warn(
        "no Redis instance to watch: the agent checks nothing; {what}",
        what=(
            "add [[redis]] tables to the config file and reload it (SIGHUP)"
            if reloadable
            else "pass --redis [NAME=]HOST:PORT (repeatable), or --config with "
            "a file of [[redis]] tables"
        ),
    )


def _replaced(
    path: str | None,
    overrides: Mapping[str, object],
    settings: Mapping[str, _Given],
    base: str,
    files: _Files,
) -> int | None:
    """
    How many of the file's [[redis]] instances ``--redis`` replaces (0 if
    it has none), after checking them as if they were used; None without
    a file or without ``--redis``. A file whose instances are invalid is
    refused even so: the next start without ``--redis`` (or a reload once
    the unit file drops it) would refuse it, and an agent runs on its file.
    """
    if path is None or "redis" not in overrides:
        return None
    given = settings.get(_FILE_REDIS)
    if given is None:
        return 0
    return len(_instances({"redis": given}, base, files, None))


# Where `_loading` keeps the file's [[redis]] that ``--redis`` replaces: a
# key no setting has, so nothing else reads it.
_FILE_REDIS = "redis (the file's)"


@contextmanager
def _loading(
    path: str | None,
    overrides: Mapping[str, object],
    reader: FileReader | None,
    reloading: bool,
) -> Iterator[tuple[dict[str, _Given], str, _Files]]:
    """The file's settings with the overrides over them, its directory, its files."""
    unknown = sorted(set(overrides) - set(OPTION_NAMES))
    if unknown:
        raise ValueError(f"not an override key: {unknown[0]!r}")
    with (reader or FileReader()).batch() as read:
        files = _Files(read)
        settings: dict[str, _Given] = {}
        base = ""
        if path is not None:
            settings = _file_settings(_read_toml(path, files, reloading))
            base = os.path.dirname(os.path.abspath(path))
        if "redis" in overrides and "redis" in settings:
            # Kept apart, to be checked and counted (`_replaced`).
            settings[_FILE_REDIS] = settings["redis"]
        for key, value in overrides.items():
            settings[key] = _Given(OPTION_NAMES[key], value)
        yield settings, base, files


def _config(
    settings: Mapping[str, _Given], base: str, files: _Files, default_agent_id: str
) -> Config:
    interval = _take(settings, "interval")
    timeout = _take(settings, "timeout")
    if "timeout" not in settings:
        # The default must obey its own rule: `--interval 0.1` alone is a
        # valid request for faster checks, each then allowed the interval.
        timeout = min(timeout, interval)
    if timeout > interval:
        raise error(
            f"{_label(settings, 'timeout', 'timeout')}: {timeout!r} is greater than "
            f"{_label(settings, 'interval', 'interval')} {interval!r}"
        )
    agent_id = _take(settings, "agent_id")
    if agent_id is None:
        agent_id = checks.znode_name("agent_id (the host name)", default_agent_id)
    instances = _instances(settings, base, files, _take(settings, "drain_key"))
    zookeeper = _zookeeper(settings, base, files)
    _discovery_beside_the_group(settings, zookeeper, instances)
    return Config(
        instances=instances,
        agent_id=agent_id,
        interval=interval,
        timeout=timeout,
        rise=_take(settings, "rise"),
        fall=_take(settings, "fall"),
        http=_take(settings, "http"),
        info_every=_take(settings, "info_every"),
        replica_grace=_take(settings, "replica_grace"),
        reconnect_every=_take(settings, "reconnect_every"),
        role_signal=_take(settings, "role_signal"),
        zookeeper=zookeeper,
        dns=_dns(settings, base, files),
        state_dir=_state_dir(settings, base),
    )


class _Files:
    """
    The files one load reads, each read (and parsed) once: thousands of
    instances may share one password or CA file.
    """

    def __init__(self, read: Callable[[str, int], bytes]) -> None:
        self._read = read
        self._contents: dict[tuple[str, int], bytes] = {}
        self._certificates: dict[str, tuple[x509.Certificate, ...]] = {}
        self._client_certificates: dict[tuple[str, str], ClientCertificate] = {}

    def content(self, path: str, limit: int) -> bytes:
        """
        What `path` holds (at most `limit` bytes).

        @raise Unreadable: see L{sentinel.files.read_regular_file}.
        """
        key = (path, limit)
        if key not in self._contents:
            self._contents[key] = self._read(path, limit)
        return self._contents[key]

    def _labelled(self, label: str, path: str, limit: int) -> bytes:
        try:
            return self.content(path, limit)
        except Unreadable as e:
            raise error(f"{label}: cannot read {path}: {e}") from None

    def secret(self, label: str, path: str) -> str:
        """
        The one-line secret in `path`, without its final line break; errors
        never show it.
        """
        data = self._labelled(label, path, MAX_SECRET_BYTES)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise error(f"{label}: cannot read {path}: not UTF-8 text") from None
        text = text.removesuffix("\n").removesuffix("\r")
        if not text:
            raise error(f"{label}: {path} is empty")
        if "\n" in text or "\r" in text:
            raise error(f"{label}: {path} holds more than one line")
        if any((c < " " and c != "\t") or c == "\x7f" for c in text):
            raise error(f"{label}: {path} holds a control character")
        return text

    def certificates(self, label: str, path: str) -> tuple[x509.Certificate, ...]:
        """Every certificate in the PEM file `path` (a bundle may hold several)."""
        if path not in self._certificates:
            data = self._labelled(label, path, MAX_CA_BYTES)
            try:
                self._certificates[path] = parse_certificates(data)
            except CertificateProblem as e:
                raise error(f"{label}: {path} {e}") from None
        return self._certificates[path]

    def client_certificate(
        self, label: str, cert_file: str, key_file: str
    ) -> ClientCertificate:
        """
        The client certificate of `cert_file` (then its chain) with the
        private key of `key_file` (they may be one file); `label` is the
        instance's. Errors never show the key.
        """
        key = (cert_file, key_file)
        if key not in self._client_certificates:
            chain = self.certificates(f"{label}.cert_file", cert_file)
            key_label = f"{label}.key_file"
            data = self._labelled(key_label, key_file, MAX_SECRET_BYTES)
            try:
                private_key = parse_private_key(data)
                loaded = client_certificate(chain, private_key, cert_file)
            except CertificateProblem as e:
                raise error(f"{key_label}: {key_file} {e}") from None
            self._client_certificates[key] = loaded
        return self._client_certificates[key]


def _read_toml(path: str, files: _Files, reloading: bool) -> Mapping[str, object]:
    try:
        data = files.content(path, MAX_CONFIG_BYTES)
    except Unreadable as e:
        raise error(f"config file {path}: cannot read: {e}") from None
    if reloading and not data.strip():
        raise error(
            f"config file {path}: empty (truncated, or still being written?): "
            "a reload never applies an empty file, which would stop every "
            "instance; to run with every default, write a comment in it"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"config file {path}: invalid TOML: not UTF-8 text") from None
    if text.startswith("\ufeff"):
        # Notepad and PowerShell save UTF-8 so; tomllib says only
        # "Invalid statement (at line 1, column 1)", of nothing visible.
        raise error(
            f"config file {path}: invalid TOML: starts with a byte-order mark"
            " (U+FEFF), which TOML does not allow: save it as UTF-8 without one"
        )
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise error(f"config file {path}: invalid TOML: {e}") from None
    except RecursionError:
        # tomllib recurses once per level of nested arrays and tables.
        raise error(f"config file {path}: invalid TOML: nested too deeply") from None
    except ValueError:
        # Not a TOMLDecodeError: an integer of more digits than Python
        # converts (4,300).
        raise error(f"config file {path}: invalid TOML: a number too long") from None
    except Exception as e:
        # MemoryError, or a parser bug: its message might quote the file.
        reason = type(e).__name__
        raise error(f"config file {path}: invalid TOML: {reason}") from None


def _unknown_key(key: str, where: str, known: Iterable[str]) -> ConfigError:
    """
    The error for `key`, unknown `where` (whose keys are `known`). A
    top-level key written in a table says where it belongs: TOML puts
    every key after a ``[table]`` line in that table, so a key added at
    the end of the file lands in its last table. So does a table's key
    written at the top level (its ``[table]`` line forgotten). Any other
    is named with the known key it is closest to, if one is (a typo).
    """
    message = f"unknown key {show(key)} in {where}"
    if key in _TOP_LEVEL and where != "config file":
        message += (
            f": {key} belongs at the top level, before the first [table] line"
            " (TOML puts every key after such a line in that table)"
        )
    elif key in _TABLE_OF and where == "config file":
        message += f": {key} belongs in {_TABLE_OF[key]}"
    else:
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
        if close:
            message += f" (did you mean {close[0]}?)"
    return error(message)


def _file_settings(document: Mapping[str, object]) -> dict[str, _Given]:
    """Flatten the document to dotted keys, refusing keys we don't know."""
    for key in document:
        if key not in _TOP_KEYS:
            raise _unknown_key(key, "config file", _TOP_KEYS)
    settings = {}
    for key, value in document.items():
        if key not in _TABLES:
            settings[key] = _Given(key, value)
            continue
        if not isinstance(value, dict):
            raise invalid(key, value, f"is not a table ([{key}])")
        for inner, inner_value in value.items():
            dotted = f"{key}.{inner}"
            if dotted not in _KEYS:
                inners = (k.partition(".")[2] for k in _KEYS if k.startswith(f"{key}."))
                raise _unknown_key(inner, f"[{key}]", inners)
            settings[dotted] = _Given(dotted, inner_value)
    return settings


def _take(settings: Mapping[str, _Given], key: str) -> Any:
    """The checked value of setting `key`, or its default."""
    known = setting(key)
    given = settings.get(key)
    if given is None:
        return known.default
    assert known.check is not None
    return known.check(given.label, given.value)


def _label(settings: Mapping[str, _Given], key: str, default: str) -> str:
    given = settings.get(key)
    return default if given is None else given.label


def _default_name(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _instances(
    settings: Mapping[str, _Given], base: str, files: _Files, drain_key: str | None
) -> tuple[RedisInstance, ...]:
    given = settings.get("redis")
    if given is None:
        return ()
    label, value = given
    if label == OPTION_NAMES["redis"]:
        instances = _command_line_instances(label, value)
    else:
        instances = _file_instances(label, value, base, files)
    seen: set[str] = set()
    for instance in instances:
        if instance.name in seen:
            raise error(f"{label}: duplicate instance name {instance.name!r}")
        seen.add(instance.name)
    return tuple(
        attr.evolve(instance, drain_key=drain_key)
        if instance.drain_key is None and drain_key is not None
        else instance
        for instance in instances
    )


def _command_line_instances(label: str, value: object) -> list[RedisInstance]:
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"the {label} override must be a list of strings")
    instances = []
    for text in value:
        name, host, port = parse_redis_address(text)
        if name is None:
            name = _default_name(host, port)
        problem = checks.znode_name_problem(name)
        if problem is not None:
            raise error(
                f"{label}: {show(text)}: name {show(name)} is not a valid "
                f"znode name: {problem}"
            )
        instances.append(RedisInstance(name=name, host=host, port=port))
    return instances


def _file_instances(
    label: str, value: object, base: str, files: _Files
) -> list[RedisInstance]:
    if not isinstance(value, list):
        raise invalid(label, value, "is not an array of tables ([[redis]])")
    return [
        _file_instance(f"{label}[{index}]", table, base, files)
        for index, table in enumerate(value)
    ]


def _port_in_host(host: object) -> str:
    """
    For a ``[[redis]]`` without ``port``: the port its ``host`` holds, as
    ``--redis HOST:PORT`` writes it, said in parentheses; else empty.
    """
    if not isinstance(host, str):
        return ""
    name, colon, port = host.rpartition(":")
    bracketed = name.startswith("[") and name.endswith("]")
    name = name[1:-1] if bracketed else name
    # An IPv6 address without brackets ("::1") holds no port.
    # At most five digits: a port, and a line of one however long `host` is.
    if not (
        colon and name and port.isascii() and port.isdigit() and len(port) <= 5
    ) or (":" in name and not bracketed):
        return ""
    return f" (host {show(host)} holds it: host = {show(name)} and port = {port})"


def _file_instance(
    label: str, table: object, base: str, files: _Files
) -> RedisInstance:
    if not isinstance(table, dict):
        raise invalid(label, table, "is not a table ([[redis]])")
    for key in table:
        if key not in _REDIS_KEYS:
            raise _unknown_key(key, label, _REDIS_KEYS)
    for key in ("host", "port"):
        if key not in table:
            raise error(f"{label}.{key}: missing{_port_in_host(table.get('host'))}")
    given: dict[str, Any] = {}
    for key, value in table.items():
        check = redis_setting(key).check
        assert check is not None
        given[key] = check(f"{label}.{key}", value)
    if "name" not in given:
        given["name"] = checks.znode_name(
            f"{label}.name (HOST:PORT)", _default_name(given["host"], given["port"])
        )
    for key in ("ca_file", "server_name", "cert_file", "key_file"):
        if key in table and not given.get("tls"):
            raise invalid(f"{label}.{key}", table[key], "is given but tls is not true")
    if given.get("tls") and "server_name" not in given:
        # The host is the name the certificate must carry, then.
        checks.server_name(f"{label}.host (the TLS server name)", given["host"])
    for key, other in (("cert_file", "key_file"), ("key_file", "cert_file")):
        if key in table and other not in table:
            raise invalid(f"{label}.{key}", table[key], f"is given without {other}")
    if "username" in table and "password_file" not in table:
        raise invalid(
            f"{label}.username", table["username"], "is given without password_file"
        )
    # Relative to the config file, so a reload finds the same file whatever
    # the working directory is by then.
    for key in ("ca_file", "cert_file", "key_file", "password_file"):
        if key in given:
            given[key] = os.path.join(base, given[key])
    if "ca_file" in given:
        given["ca_certificates"] = files.certificates(
            f"{label}.ca_file", given["ca_file"]
        )
    if "cert_file" in given:
        given["client_certificate"] = files.client_certificate(
            label, given["cert_file"], given["key_file"]
        )
    if "password_file" in given:
        given["password"] = files.secret(
            f"{label}.password_file", given["password_file"]
        )
    return RedisInstance(**given)


def _zookeeper(
    settings: Mapping[str, _Given], base: str, files: _Files
) -> ZooKeeperConfig | None:
    if "zookeeper.hosts" not in settings:
        for known in SETTINGS:
            given = settings.get(known.key)
            if given is not None and known.key.startswith("zookeeper."):
                raise error(
                    f"{given.label}: given but no zookeeper hosts are configured"
                )
        return None
    hosts = _take(settings, "zookeeper.hosts")
    root = _take(settings, "zookeeper.root")
    session_timeout = _take(settings, "zookeeper.session_timeout")
    refresh = _take(settings, "zookeeper.refresh")
    heartbeat = _take(settings, "zookeeper.heartbeat")
    auth_file = _take(settings, "zookeeper.auth_file")
    auth = None
    if auth_file is not None:
        auth_file = os.path.join(base, auth_file)
        auth = files.secret("zookeeper.auth_file", auth_file)
        user, colon, password = auth.partition(":")
        if not (user and colon and password):
            raise error(f"zookeeper.auth_file: {auth_file} does not hold user:password")
    discovery_root = _take(settings, "zookeeper.discovery_root")
    _outside_zookeeper_subtree(settings, hosts, root, discovery_root)
    inside = _group_nodes_holding(root, discovery_root)
    if inside is not None:
        raise invalid(
            _label(settings, "zookeeper.discovery_root", "zookeeper.discovery_root"),
            discovery_root,
            f"is inside {inside}, which holds the agents' own nodes",
        )
    replicas = _take(settings, "zookeeper.replicas")
    quorum = _take(settings, "zookeeper.quorum")
    if quorum is not None and quorum > replicas:
        raise invalid(
            _label(settings, "zookeeper.quorum", "zookeeper.quorum"),
            quorum,
            f"is greater than zookeeper.replicas {replicas}",
        )
    return ZooKeeperConfig(
        hosts=hosts,
        replicas=replicas,
        quorum_setting=quorum,
        root=root,
        session_timeout=session_timeout,
        refresh=refresh,
        heartbeat=heartbeat,
        watch_writes_setting=_take(settings, "zookeeper.watch_writes"),
        auth_file=auth_file,
        auth=auth,
        discovery=_take(settings, "zookeeper.discovery"),
        discovery_root=discovery_root,
    )


def _group_nodes_holding(root: str, path: str) -> str | None:
    """
    The child of the group's `root` (`checks.GROUP_CHILDREN`) that `path`
    is or is inside, or None.
    """
    for child in checks.GROUP_CHILDREN:
        inside = f"{root}/{child}"
        if path == inside or path.startswith(inside + "/"):
            return inside
    return None


def _discovery_beside_the_group(
    settings: Mapping[str, _Given],
    zookeeper: ZooKeeperConfig | None,
    instances: tuple[RedisInstance, ...],
) -> None:
    """
    Refuse a discovery service's folder (``{discovery_root}/{service}``)
    that is one of the group's own directories (``discovery_root`` the
    root itself, a service named ``opinions``), the root, or above it.
    Readers of a service take every child of its folder for a member (a
    nerve reader, any child whose JSON has a host and a port, as an
    opinion's has): they would list the agents' nodes as endpoints, and
    the agents would list the members as theirs.
    """
    if zookeeper is None or zookeeper.discovery == "none":
        return
    root = zookeeper.root
    for instance in instances:
        folder = f"{zookeeper.discovery_root}/{instance.discovery_service}"
        inside = _group_nodes_holding(root, folder)
        if inside is not None:
            clash = f"{folder}, which holds the agents' own nodes"
        elif root == folder or root.startswith(folder + "/"):
            clash = f"{folder}, which holds zookeeper.root {root}"
        else:
            continue
        raise invalid(
            _label(settings, "zookeeper.discovery_root", "zookeeper.discovery_root"),
            zookeeper.discovery_root,
            f"puts the discovery service {instance.discovery_service!r} "
            f"(redis {instance.name!r}) at {clash}",
        )


def _outside_zookeeper_subtree(
    settings: Mapping[str, _Given], hosts: str, root: str, discovery_root: str
) -> None:
    """
    Refuse a chroot, a root or a discovery root that is, as ZooKeeper sees
    it (under the chroot), in its own subtree (`checks.ZOOKEEPER_SUBTREE`).
    """
    chroot = checks.chroot_of(hosts)
    reserved = f"in {checks.ZOOKEEPER_SUBTREE}, which ZooKeeper keeps for itself"
    if checks.in_zookeeper_subtree(chroot):
        label = _label(settings, "zookeeper.hosts", "zookeeper.hosts")
        raise invalid(label, hosts, f"has its chroot {reserved}")
    for key, path in (
        ("zookeeper.root", root),
        ("zookeeper.discovery_root", discovery_root),
    ):
        if checks.in_zookeeper_subtree(chroot + path):
            raise invalid(_label(settings, key, key), path, f"is {reserved}")


def _state_dir(settings: Mapping[str, _Given], base: str) -> str | None:
    given = settings.get("state_dir")
    if given is None:
        return None
    if "zookeeper.hosts" not in settings:
        raise error(f"{given.label}: given but no zookeeper hosts are configured")
    path = _take(settings, "state_dir")
    # A relative path from the file is relative to the file; from the
    # command line, to the working directory (base is empty then).
    base = base if given.label == "state_dir" else ""
    return os.path.abspath(os.path.join(base, path))


def _dns(settings: Mapping[str, _Given], base: str, files: _Files) -> DNSConfig:
    nameservers = _take(settings, "dns.nameservers")
    if nameservers and "dns.resolv_conf" in settings:
        raise error("dns.resolv_conf: given with dns.nameservers, which replace it")
    paths = {}
    for key in ("dns.resolv_conf", "dns.hosts_file"):
        paths[key] = _take(settings, key)
        if key in settings:
            # A file named on purpose must be there and readable: a typo
            # would otherwise go unnoticed (the system's own may be missing).
            # sentinel.lookup reads it again when it changes.
            paths[key] = os.path.join(base, paths[key])
            files._labelled(key, paths[key], MAX_HOSTS_BYTES)
    return DNSConfig(
        resolv_conf=paths["dns.resolv_conf"],
        nameservers=nameservers,
        hosts_file=paths["dns.hosts_file"],
        timeout=_take(settings, "dns.timeout"),
    )

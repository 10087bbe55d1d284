"""
The agent's configuration: frozen values, loaded from TOML and the command
line, validated into one-line `ConfigError`s.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from functools import partial
from typing import NamedTuple, TypeVar

import attr
from cryptography import x509


class ConfigError(Exception):
    """
    An invalid configuration; the message is one line naming the field and
    the bad value (never a secret).
    """


@attr.frozen
class RedisInstance:
    """One Redis server to watch."""

    name: str
    host: str
    port: int
    username: str | None = None
    password_file: str | None = None
    # Read from password_file at load time; never logged or shown.
    password: str | None = attr.field(default=None, repr=False)
    tls: bool = False
    ca_file: str | None = None
    server_name: str | None = None


@attr.frozen
class ZooKeeperConfig:
    """Where and how to publish."""

    hosts: str
    root: str = "/sentinel"
    session_timeout: float = 10.0
    refresh: float = 30.0
    heartbeat: float = 10.0
    auth_file: str | None = None
    # "user:password" read from auth_file at load time; never logged.
    auth: str | None = attr.field(default=None, repr=False)


@attr.frozen
class Config:
    """Everything the agent runs with."""

    instances: tuple[RedisInstance, ...]
    agent_id: str
    interval: float = 1.0
    timeout: float = 0.5
    rise: int = 2
    fall: int = 3
    http: str = "tcp:6060:interface=127.0.0.1"
    info_every: int = 10
    zookeeper: ZooKeeperConfig | None = None


DEFAULT_HTTP = "tcp:6060:interface=127.0.0.1"

# Overrides are keyed by the TOML key they replace; the value is what the
# option's own error messages call the field.
OPTION_NAMES: Mapping[str, str] = {
    "redis": "--redis",
    "zookeeper.hosts": "--zookeeper",
    "zookeeper.root": "--zk-root",
    "zookeeper.session_timeout": "--zk-session-timeout",
    "interval": "--interval",
    "timeout": "--timeout",
    "rise": "--rise",
    "fall": "--fall",
    "http": "--http",
    "agent_id": "--agent-id",
}

_TOP_KEYS = frozenset(
    {
        "agent_id",
        "interval",
        "timeout",
        "rise",
        "fall",
        "http",
        "info_every",
        "zookeeper",
        "redis",
    }
)
_ZOOKEEPER_KEYS = (
    "hosts",
    "root",
    "session_timeout",
    "refresh",
    "heartbeat",
    "auth_file",
)
_REDIS_KEYS = frozenset(
    {
        "name",
        "host",
        "port",
        "password_file",
        "username",
        "tls",
        "ca_file",
        "server_name",
    }
)
_HOSTNAME = re.compile(r"[A-Za-z0-9_.-]+")
_SHOW_LIMIT = 60


class _Given(NamedTuple):
    """A value as the user gave it, and the name to blame it on."""

    label: str
    value: object


def load_config(
    path: str | None, overrides: Mapping[str, object], default_agent_id: str
) -> Config:
    """
    Read the TOML file at C{path} (if any), lay the command-line C{overrides}
    (keyed like L{OPTION_NAMES}, only the options given) over it, validate,
    and read the secret files it names.

    @raise ConfigError: with one line naming the bad field and value.
    """
    unknown = sorted(set(overrides) - set(OPTION_NAMES))
    if unknown:
        raise ValueError(f"not an override key: {unknown[0]!r}")
    settings: dict[str, _Given] = {}
    base = ""
    if path is not None:
        settings = _file_settings(_read_toml(path))
        base = os.path.dirname(os.path.abspath(path))
    for key, value in overrides.items():
        settings[key] = _Given(OPTION_NAMES[key], value)

    interval = _take(settings, "interval", _positive, 1.0)
    timeout = _take(settings, "timeout", _positive, 0.5)
    if timeout > interval:
        timeout_label = _label(settings, "timeout", "timeout (the default)")
        raise _error(
            f"{timeout_label}: {timeout!r} is greater than "
            f"{_label(settings, 'interval', 'interval')} {interval!r}"
        )
    agent_id = _take(settings, "agent_id", _znode_name, None)
    if agent_id is None:
        agent_id = _znode_name("agent_id (the host name)", default_agent_id)
    return Config(
        instances=_instances(settings, base),
        agent_id=agent_id,
        interval=interval,
        timeout=timeout,
        rise=_take(settings, "rise", _count, 2),
        fall=_take(settings, "fall", _count, 3),
        http=_take(settings, "http", _http, DEFAULT_HTTP),
        info_every=_take(settings, "info_every", _count, 10),
        zookeeper=_zookeeper(settings, base),
    )


def parse_redis_address(text: str) -> tuple[str | None, str, int]:
    """
    Split C{--redis}'s C{[NAME=]HOST:PORT} into name (L{None} if not given),
    host (an IPv6 address without its brackets) and port.

    @raise ConfigError: if C{text} has not that form or the port is out of
        range.
    """
    name: str | None
    name, equals, address = text.partition("=")
    if not equals:
        name, address = None, text
    host_port = _host_port(address)
    if host_port is None:
        raise _error(f"--redis: {_show(text)} is not HOST:PORT or NAME=HOST:PORT")
    host, port = host_port
    if not 1 <= port <= 65535:
        raise _error(f"--redis: {_show(text)}: {port} is not a port (1-65535)")
    return name, host, port


def _error(message: str) -> ConfigError:
    # Paths and TOML parser messages are shown as they are: keep one line.
    return ConfigError(" ".join(message.splitlines()))


def _show(value: object) -> str:
    """The user's value for an error message, short and on one line."""
    text = ("true" if value else "false") if isinstance(value, bool) else repr(value)
    if len(text) > _SHOW_LIMIT:
        text = text[: _SHOW_LIMIT - 3] + "..."
    return text


def _invalid(label: str, value: object, why: str) -> ConfigError:
    return _error(f"{label}: {_show(value)} {why}")


def _read_toml(path: str) -> Mapping[str, object]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise _error(f"config file {path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise _error(f"config file {path}: invalid TOML: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as e:
        raise _error(f"config file {path}: invalid TOML: {e}") from None


def _file_settings(document: Mapping[str, object]) -> dict[str, _Given]:
    """Flatten the document to dotted keys, refusing keys we don't know."""
    for key in document:
        if key not in _TOP_KEYS:
            raise _error(f"unknown key {key!r} in config file")
    settings = {
        key: _Given(key, value) for key, value in document.items() if key != "zookeeper"
    }
    if "zookeeper" in document:
        table = document["zookeeper"]
        if not isinstance(table, dict):
            raise _invalid("zookeeper", table, "is not a table ([zookeeper])")
        for key, value in table.items():
            if key not in _ZOOKEEPER_KEYS:
                raise _error(f"unknown key {key!r} in [zookeeper]")
            settings[f"zookeeper.{key}"] = _Given(f"zookeeper.{key}", value)
    return settings


_T = TypeVar("_T")
_D = TypeVar("_D")


def _take(
    settings: Mapping[str, _Given],
    key: str,
    check: Callable[[str, object], _T],
    default: _D,
) -> _T | _D:
    given = settings.get(key)
    return default if given is None else check(given.label, given.value)


def _label(settings: Mapping[str, _Given], key: str, default: str) -> str:
    given = settings.get(key)
    return default if given is None else given.label


# Checks: each takes the field's label and the raw value, returns the clean
# value or raises ConfigError.


def _number(label: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _invalid(label, value, "is not a number")
    if not math.isfinite(value):
        raise _invalid(label, value, "is not a finite number")
    return float(value)


def _positive(label: str, value: object) -> float:
    number = _number(label, value)
    if number <= 0:
        raise _invalid(label, value, "is not greater than 0")
    return number


def _count(label: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(label, value, "is not an integer")
    if value < 1:
        raise _invalid(label, value, "is less than 1")
    return value


def _string(label: str, value: object) -> str:
    if not isinstance(value, str):
        raise _invalid(label, value, "is not a string")
    if not value:
        raise _invalid(label, value, "is empty")
    return value


def _boolean(label: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise _invalid(label, value, "is not a boolean (true or false)")
    return value


def _http(label: str, value: object) -> str:
    # The endpoint syntax needs a reactor to check: tap.py does it.
    text = _string(label, value)
    return "none" if text.lower() == "none" else text


def _znode_name_problem(name: str) -> str | None:
    if not name:
        return "empty"
    if "/" in name:
        return "contains '/'"
    if name in (".", ".."):
        return "'.' and '..' are reserved"
    if any(not c.isprintable() for c in name):
        return "contains a control character"
    return None


def _znode_name(label: str, value: object) -> str:
    if not isinstance(value, str):
        raise _invalid(label, value, "is not a string")
    problem = _znode_name_problem(value)
    if problem is not None:
        raise _invalid(label, value, f"is not a valid znode name: {problem}")
    return value


def _znode_path_problem(path: str) -> str | None:
    if not path.startswith("/"):
        return "does not start with '/'"
    if path.endswith("/"):
        return "ends with '/'"
    for segment in path[1:].split("/"):
        problem = _znode_name_problem(segment)
        if problem is not None:
            return f"segment {segment!r}: {problem}"
    return None


def _znode_path(label: str, value: object) -> str:
    path = _string(label, value)
    problem = _znode_path_problem(path)
    if problem is not None:
        raise _invalid(label, value, f"is not an absolute znode path: {problem}")
    return path


def _host_problem(host: str) -> str | None:
    if not host:
        return "is empty"
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return "is not an IPv6 address"
        return None
    if not _HOSTNAME.fullmatch(host):
        return "is not a host name or IP address"
    return None


def _host_port(text: str) -> tuple[str, int] | None:
    """C{HOST:PORT} or C{[IPV6]:PORT} split, or L{None}; port not range-checked."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":") or ":" not in host:
            return None
        port_text = rest[1:]
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon or ":" in host:
            return None
    if _host_problem(host) is not None:
        return None
    if not (port_text.isascii() and port_text.isdigit()):
        return None
    return host, int(port_text)


def _default_name(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _file_path(base: str, label: str, value: object) -> str:
    # Relative to the config file, so a reload finds the same file whatever
    # the working directory is by then.
    return os.path.join(base, _string(label, value))


def _read_secret(label: str, path: str) -> str:
    """The one-line secret in C{path}; errors never show its content."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        text = data.decode("utf-8")
    except OSError as e:
        raise _error(f"{label}: cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise _error(f"{label}: cannot read {path}: not UTF-8 text") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise _error(f"{label}: {path} is empty")
    return text


def read_ca_certificates(label: str, path: str) -> list[x509.Certificate]:
    """
    Every certificate in the PEM file at C{path} (a bundle may hold several).

    @raise ConfigError: naming C{label} if the file cannot be read or holds
        no valid PEM certificate.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise _error(f"{label}: cannot read {path}: {e.strerror or e}") from None
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        raise _error(f"{label}: {path} holds no valid PEM certificate") from None


def _instances(settings: Mapping[str, _Given], base: str) -> tuple[RedisInstance, ...]:
    given = settings.get("redis")
    if given is None:
        return ()
    label, value = given
    if label == OPTION_NAMES["redis"]:
        instances = _command_line_instances(label, value)
    else:
        instances = _file_instances(label, value, base)
    seen: set[str] = set()
    for instance in instances:
        if instance.name in seen:
            raise _error(f"{label}: duplicate instance name {instance.name!r}")
        seen.add(instance.name)
    return tuple(instances)


def _command_line_instances(label: str, value: object) -> list[RedisInstance]:
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"the {label} override must be a list of strings")
    instances = []
    for text in value:
        name, host, port = parse_redis_address(text)
        if name is None:
            name = _default_name(host, port)
        problem = _znode_name_problem(name)
        if problem is not None:
            raise _error(
                f"{label}: {_show(text)}: name {_show(name)} is not a valid "
                f"znode name: {problem}"
            )
        instances.append(RedisInstance(name=name, host=host, port=port))
    return instances


def _file_instances(label: str, value: object, base: str) -> list[RedisInstance]:
    if not isinstance(value, list):
        raise _invalid(label, value, "is not an array of tables ([[redis]])")
    return [
        _file_instance(f"{label}[{index}]", table, base)
        for index, table in enumerate(value)
    ]


def _file_instance(label: str, table: object, base: str) -> RedisInstance:
    if not isinstance(table, dict):
        raise _invalid(label, table, "is not a table ([[redis]])")
    for key in table:
        if key not in _REDIS_KEYS:
            raise _error(f"unknown key {key!r} in {label}")

    def field(key: str) -> tuple[str, object]:
        if key not in table:
            raise _error(f"{label}.{key}: missing")
        return f"{label}.{key}", table[key]

    host_label, host = field("host")
    host = _string(host_label, host)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    problem = _host_problem(host)
    if problem is not None:
        raise _invalid(host_label, table["host"], problem)
    port_label, port = field("port")
    if isinstance(port, bool) or not isinstance(port, int):
        raise _invalid(port_label, port, "is not an integer")
    if not 1 <= port <= 65535:
        raise _invalid(port_label, port, "is not a port (1-65535)")

    def optional(key: str, check: Callable[[str, object], _T]) -> _T | None:
        return check(*field(key)) if key in table else None

    name = optional("name", _znode_name)
    if name is None:
        name = _znode_name(f"{label}.name (HOST:PORT)", _default_name(host, port))
    tls = optional("tls", _boolean) or False
    ca_file = optional("ca_file", partial(_file_path, base))
    server_name = optional("server_name", _string)
    for key in ("ca_file", "server_name"):
        if key in table and not tls:
            raise _invalid(f"{label}.{key}", table[key], "is given but tls is not true")
    if ca_file is not None:
        read_ca_certificates(f"{label}.ca_file", ca_file)
    password_file = optional("password_file", partial(_file_path, base))
    username = optional("username", _string)
    if username is not None and password_file is None:
        raise _invalid(f"{label}.username", username, "is given without password_file")
    password = None
    if password_file is not None:
        password = _read_secret(f"{label}.password_file", password_file)
    return RedisInstance(
        name=name,
        host=host,
        port=port,
        username=username,
        password_file=password_file,
        password=password,
        tls=tls,
        ca_file=ca_file,
        server_name=server_name,
    )


def _zookeeper_hosts(label: str, value: object) -> str:
    hosts = _string(label, value)
    servers, slash, chroot = hosts.partition("/")
    if slash:
        problem = _znode_path_problem(slash + chroot)
        if problem is not None:
            raise _invalid(label, value, f"has an invalid chroot: {problem}")
    for server in servers.split(","):
        host_port = _host_port(server)
        if host_port is None:
            raise _invalid(
                label, value, f"is not HOST:PORT[,HOST:PORT...][/CHROOT] at {server!r}"
            )
        if not 1 <= host_port[1] <= 65535:
            raise _invalid(label, value, f"has port {host_port[1]}, not in 1-65535")
    return hosts


def _zookeeper(settings: Mapping[str, _Given], base: str) -> ZooKeeperConfig | None:
    if "zookeeper.hosts" not in settings:
        for key in _ZOOKEEPER_KEYS:
            given = settings.get(f"zookeeper.{key}")
            if given is not None:
                raise _error(
                    f"{given.label}: given but no zookeeper hosts are configured"
                )
        return None
    hosts = _take(settings, "zookeeper.hosts", _zookeeper_hosts, "")
    root = _take(settings, "zookeeper.root", _znode_path, "/sentinel")
    session_timeout = _take(settings, "zookeeper.session_timeout", _positive, 10.0)
    refresh = _take(settings, "zookeeper.refresh", _positive, 30.0)
    heartbeat = _take(settings, "zookeeper.heartbeat", _positive, 10.0)
    auth_file = _take(settings, "zookeeper.auth_file", partial(_file_path, base), None)
    auth = None
    if auth_file is not None:
        auth = _read_secret("zookeeper.auth_file", auth_file)
        user, colon, password = auth.partition(":")
        if not (user and colon and password) or "\n" in auth:
            raise _error(
                f"zookeeper.auth_file: {auth_file} does not hold user:password"
            )
    return ZooKeeperConfig(
        hosts=hosts,
        root=root,
        session_timeout=session_timeout,
        refresh=refresh,
        heartbeat=heartbeat,
        auth_file=auth_file,
        auth=auth,
    )

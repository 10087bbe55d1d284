"""
Checks of configuration values: each takes the field's label (the TOML key
or the option the value came from) and the raw value, and returns the
clean value or raises a one-line `ConfigError` naming both.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import unicodedata
from collections.abc import Callable

import idna

_HOSTNAME = re.compile(r"[A-Za-z0-9_.-]+")
# Numbers on the command line, as everywhere else in the config (a port, a
# query's limit): float() and int() alone also take "1_0", "+2", " 2 ",
# "1e3", "nan" and digits of any script ("٣"). A minus sign is read, so
# that a negative value is refused by its range, as in the file ("--rise:
# -1 is less than 1"), not called no number ("'-1' is not an integer").
_OPTION_INTEGER = re.compile(r"-?[0-9]+")
_OPTION_NUMBER = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_SHOW_LIMIT = 60

# zookeeper.discovery: the forms discovery readers know, or none.
DISCOVERY_FORMATS = ("serverset", "nerve", "none")
# An instance's labels, as JSON: a member is written on every role change,
# and ZooKeeper refuses nodes over 1 MB.
MAX_LABELS_BYTES = 8 * 1024
# The label nerve members give the instance's role.
ROLE_LABEL = "role"


class ConfigError(Exception):
    """
    An invalid configuration; the message is one line naming the field and
    the bad value (never a secret).
    """


def error(message: str) -> ConfigError:
    """A `ConfigError` with `message` on one line."""
    # Paths and TOML parser messages are shown as they are: keep one line.
    return ConfigError(" ".join(message.splitlines()))


def show(value: object) -> str:
    """
    The user's value for an error message, short and on one line. A table
    is named by its keys, never its values: a ``[redis]`` written for
    ``[[redis]]`` may hold a password some key was given by mistake.
    """
    try:
        text = _shown(value)
    except RecursionError:
        text = "a value nested too deeply"
    if len(text) > _SHOW_LIMIT:
        text = text[: _SHOW_LIMIT - 3] + "..."
    return text


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table (keys: " + ", ".join(map(repr, value)) + ")"
    if isinstance(value, list):
        return "[" + ", ".join(map(_shown, value)) + "]"
    return repr(value)


def invalid(label: str, value: object, why: str) -> ConfigError:
    """`label: value why`, the usual one-line error."""
    return error(f"{label}: {show(value)} {why}")


# Command-line text into a value for the checks below.


def option_text(label: str, text: str) -> str:
    """An option's text as it is."""
    return text


def option_number(label: str, text: str) -> float:
    """
    An option's text as a number: ASCII digits, with at most one dot and
    perhaps a minus sign (the range is checked after).
    """
    if _OPTION_NUMBER.fullmatch(text) is None:
        raise error(f"{label}: {text!r} is not a number")
    return float(text)


def option_integer(label: str, text: str) -> int:
    """An option's text as an integer: ASCII digits, perhaps a minus sign."""
    if _OPTION_INTEGER.fullmatch(text) is None:
        raise error(f"{label}: {text!r} is not an integer")
    return int(text)


# Checks of values, from the file or from the command line.


def finite(value: object) -> float | None:
    """
    `value` as a float if it is a finite number (an int or a float, not a
    bool), else None. TOML and JSON give integers of up to thousands of
    digits, too large for a float: those are None too.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def short_decimal(text: str, digits: int) -> bool:
    """
    Whether `text` is a number in at most `digits` ASCII digits: what
    ``int()`` may read from anyone's text. ``int()`` alone takes a sign,
    spaces, underscores and other scripts' digits, and refuses some that
    ``str.isdigit`` takes ("²") and more than 4,300 of them.
    """
    return text.isascii() and text.isdigit() and len(text) <= digits


def printable(text: str, limit: int) -> str:
    """
    `text` for a terminal or a log: characters they would act on (controls,
    and format characters such as a right-to-left override) escaped as
    Python writes them (``\\x1b``), then cut to `limit` characters, the
    last three ``...`` when cut.
    """
    if len(text) <= limit and text.isprintable():
        return text
    escaped = "".join(
        c if c.isprintable() else ascii(c)[1:-1] for c in text[: limit + 1]
    )
    return escaped if len(escaped) <= limit else escaped[: limit - 3] + "..."


def number(label: str, value: object) -> float:
    """A finite number (an integer is taken as a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(label, value, "is not a number")
    result = finite(value)
    if result is None:
        raise invalid(label, value, "is not a finite number")
    return result


def positive(label: str, value: object) -> float:
    """A finite number greater than 0."""
    result = number(label, value)
    if result <= 0:
        raise invalid(label, value, "is not greater than 0")
    return result


def seconds(least: float, most: float) -> Callable[[str, object], float]:
    """
    The check of a duration: a number of seconds from `least` to `most`.
    Every time in the config has both: a period of a denormal float
    overflowed Twisted's LoopingCall (the loop restarted 80,000 times in
    3.5 s), a heartbeat of a nanosecond wrote to ZooKeeper as fast as it
    answered, and an interval of 1e308 overflowed the loop's arithmetic.
    """

    def check(label: str, value: object) -> float:
        result = positive(label, value)
        if result < least:
            raise invalid(label, value, f"is less than {least:g} s")
        if result > most:
            raise invalid(label, value, f"is more than {most:g} s")
        return result

    return check


def count(label: str, value: object) -> int:
    """An integer of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(label, value, "is not an integer")
    if value < 1:
        raise invalid(label, value, "is less than 1")
    return value


def count_to(most: int) -> Callable[[str, object], int]:
    """The check of an integer from 1 to `most`."""

    def check(label: str, value: object) -> int:
        result = count(label, value)
        if result > most:
            raise invalid(label, value, f"is more than {most}")
        return result

    return check


def string(label: str, value: object) -> str:
    """A non-empty string."""
    if not isinstance(value, str):
        raise invalid(label, value, "is not a string")
    if not value:
        raise invalid(label, value, "is empty")
    return value


# A Redis key named in the config: sent with every check, so kept short.
MAX_KEY_BYTES = 1024


def redis_key(label: str, value: object) -> str:
    """A Redis key: a non-empty string of at most `MAX_KEY_BYTES` in UTF-8."""
    key = string(label, value)
    if len(key.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise invalid(label, value, f"is longer than {MAX_KEY_BYTES} bytes")
    return key


def boolean(label: str, value: object) -> bool:
    """true or false."""
    if not isinstance(value, bool):
        raise invalid(label, value, "is not a boolean (true or false)")
    return value


def http(label: str, value: object) -> str:
    """An endpoint string, or ``none`` in any case (stored as ``"none"``)."""
    # The endpoint syntax needs a reactor to check: tap.py does it.
    text = string(label, value)
    return "none" if text.lower() == "none" else text


# ZooKeeper answers a request larger than its jute.maxbuffer (1 MB by
# default) by closing the connection: one instance name of a megabyte in a
# config dropped the session again at every write, and no node of any
# instance was published. Names and paths are capped well below that; a
# default name (HOST:PORT, the host at most 253 characters) fits.
MAX_ZNODE_NAME_BYTES = 1024
# ZooKeeper's server refuses a path holding a character from U+FFF0 on
# (PathUtils.validatePath), and Java holds every character past U+FFFF as
# two surrogates, which it refuses too: an emoji in an instance name was
# taken, and its node was then refused at every write, for good.
_ZOOKEEPER_REFUSES = "\ufff0"
MAX_ZNODE_PATH_BYTES = 4096
# The longest host name DNS carries, and its longest label (RFC 1035
# section 2.3.4).
MAX_HOST_NAME = 253
MAX_LABEL = 63


def labels_fit(name: str) -> bool:
    """
    Whether every label of `name` (one trailing dot allowed: a fully
    qualified name) has 1 to `MAX_LABEL` characters, as the DNS carries it.
    """
    labels = (name[:-1] if name.endswith(".") else name).split(".")
    return all(0 < len(label) <= MAX_LABEL for label in labels)


def znode_name_problem(name: str) -> str | None:
    """Why `name` cannot be one segment of a znode path, or None."""
    if not name:
        return "empty"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_ZNODE_NAME_BYTES:
        return f"longer than {MAX_ZNODE_NAME_BYTES} bytes"
    if "/" in name:
        return "contains '/'"
    if name in (".", ".."):
        return "'.' and '..' are reserved"
    if name.isprintable() and max(name) < _ZOOKEEPER_REFUSES:
        return None
    for c in name:
        if unicodedata.category(c) == "Cc":
            return "contains a control character"
        if c >= _ZOOKEEPER_REFUSES:
            return f"contains U+{ord(c):04X}, which ZooKeeper refuses in a path"
        if not c.isprintable():
            return f"contains U+{ord(c):04X}, which is not printable"
    return None


def znode_name(label: str, value: object) -> str:
    """A valid znode name (one path segment)."""
    if not isinstance(value, str):
        raise invalid(label, value, "is not a string")
    problem = znode_name_problem(value)
    if problem is not None:
        raise invalid(label, value, f"is not a valid znode name: {problem}")
    return value


def znode_path_problem(path: str) -> str | None:
    """Why `path` is not an absolute znode path, or None."""
    if not path.startswith("/"):
        return "does not start with '/'"
    if path.endswith("/"):
        return "ends with '/'"
    if len(path.encode("utf-8", "surrogatepass")) > MAX_ZNODE_PATH_BYTES:
        return f"longer than {MAX_ZNODE_PATH_BYTES} bytes"
    for segment in path[1:].split("/"):
        problem = znode_name_problem(segment)
        if problem is not None:
            return f"segment {segment!r}: {problem}"
    return None


# ZooKeeper's own subtree (its documentation reserves the name): quotas
# are nodes under /zookeeper/quota, which it reads as such, and its
# configuration is /zookeeper/config, which only its superuser may write.
# ZooKeeper lets clients write elsewhere under it, where no reader looks.
ZOOKEEPER_SUBTREE = "/zookeeper"


# The children of ``zookeeper.root`` that the group's agents keep their
# nodes in: readers and members list them and take each child for one of
# theirs, so nothing else may be created there.
GROUP_CHILDREN = ("agents", "instances", "opinions", "catalogs")


def in_zookeeper_subtree(path: str) -> bool:
    """Whether the absolute znode `path` is ZooKeeper's own subtree or in it."""
    return path == ZOOKEEPER_SUBTREE or path.startswith(ZOOKEEPER_SUBTREE + "/")


def znode_path(label: str, value: object) -> str:
    """An absolute znode path, not ZooKeeper's top node."""
    path = string(label, value)
    if path == "/":
        # An absolute path, but where other clients and /zookeeper live:
        # say so, and where a chroot goes, not that it "ends with '/'".
        raise invalid(
            label,
            value,
            "is ZooKeeper's top node: name a node under it (a chroot goes"
            " at the end of the ZooKeeper hosts: HOSTS/CHROOT)",
        )
    problem = znode_path_problem(path)
    if problem is not None:
        raise invalid(label, value, f"is not an absolute znode path: {problem}")
    return path


def host_problem(host: str) -> str | None:
    """Why `host` is no host name or IP address (IPv6 unbracketed), or None."""
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
    if len(host) > MAX_HOST_NAME:
        return f"is longer than {MAX_HOST_NAME} characters"
    # Labels as the DNS carries them (RFC 1123): "a..b", "-a" or "." passed
    # the characters' test and failed every lookup at run time instead.
    if not labels_fit(host):
        return "is not a host name or IP address (an empty or too long label)"
    labels = host.split(".")
    if any(label.startswith("-") or label.endswith("-") for label in labels):
        return "is not a host name or IP address (a label begins or ends with '-')"
    return None


def canonical_address(host: str) -> str:
    """
    `host` in the one form its IP address has (IPv6 compressed and in lower
    case; an IPv4 address mapped into IPv6, which a connect reaches over
    IPv4, as that IPv4 address), or as it is if it is no IP address.
    """
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return str(ip if mapped is None else mapped)


def host_port(text: str) -> tuple[str, int] | None:
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
    if host_problem(host) is not None:
        return None
    if not (port_text.isascii() and port_text.isdigit()):
        return None
    return host, int(port_text)


def host(label: str, value: object) -> str:
    """A host name or IP address; an IPv6 address may be bracketed."""
    text = string(label, value)
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    problem = host_problem(text)
    if problem is not None:
        raise invalid(label, value, problem)
    return text


def server_name(label: str, value: object) -> str:
    """
    A name a TLS certificate can be checked against: an IP address, or a
    host name as TLS takes it (IDNA: labels of letters, digits and hyphens,
    none empty, at most 63 characters each and 253 in all).
    """
    name = string(label, value)
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return name
    try:
        # As Twisted's TLS client does (twisted.internet._idna), which
        # refused any other name at every connection, for good.
        idna.encode(name)
    except UnicodeError as e:  # idna's errors are UnicodeErrors
        raise invalid(
            label, value, f"is not a valid host name: {printable(str(e), 80)}"
        ) from None
    return name


def port(label: str, value: object) -> int:
    """A TCP port, 1-65535."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(label, value, "is not an integer")
    if not 1 <= value <= 65535:
        raise invalid(label, value, "is not a port (1-65535)")
    return value


def file_name(label: str, value: object) -> str:
    """A file name (its directory is resolved by the caller)."""
    name = string(label, value)
    if "\0" in name:
        raise invalid(label, value, "is not a file name: it contains a NUL character")
    return name


def discovery_format(label: str, value: object) -> str:
    """One of `DISCOVERY_FORMATS`."""
    text = string(label, value)
    if text not in DISCOVERY_FORMATS:
        raise invalid(label, value, "is not serverset, nerve or none")
    return text


def labels(label: str, value: object) -> tuple[tuple[str, str], ...]:
    """
    A table of strings, as sorted (key, value) pairs; ``role`` is the
    instance's own and cannot be given.
    """
    if not isinstance(value, dict):
        raise invalid(label, value, "is not a table of strings")
    for key, text in value.items():
        if not key:
            raise invalid(label, value, "has an empty key")
        if not isinstance(text, str):
            raise invalid(f"{label}.{key}", text, "is not a string")
        if key == ROLE_LABEL:
            raise invalid(
                f"{label}.{key}", text, "is reserved: it is the instance's role"
            )
    if len(json.dumps(value)) > MAX_LABELS_BYTES:
        raise invalid(label, value, "is larger than 8 KiB")
    return tuple(sorted(value.items()))


def nameserver(label: str, value: object) -> tuple[str, int]:
    """C{ADDRESS}, C{ADDRESS:PORT} or C{[IPV6]:PORT} (port 53 if not given)."""
    text = string(label, value)
    address = host_port(text) or (text, 53)
    try:
        ipaddress.ip_address(address[0])
    except ValueError:
        raise invalid(
            label, value, "is not ADDRESS, ADDRESS:PORT or [IPV6]:PORT"
        ) from None
    if not 1 <= address[1] <= 65535:
        raise invalid(label, value, f"has port {address[1]}, not in 1-65535")
    return address


def nameservers(label: str, value: object) -> tuple[tuple[str, int], ...]:
    """An array of L{nameserver} strings."""
    if not isinstance(value, list):
        raise invalid(label, value, "is not an array of strings")
    return tuple(nameserver(f"{label}[{i}]", v) for i, v in enumerate(value))


# ZooKeeper's client port, taken where a server is named without one, as
# ZooKeeper's own client and kazoo take it (HBase's quorum lists do so).
ZOOKEEPER_PORT = 2181


def zookeeper_hosts(label: str, value: object) -> str:
    """
    C{HOST[:PORT][,HOST[:PORT]...][/CHROOT]}, as kazoo takes it, written
    back as C{HOST:PORT,...}: a server without a port is on
    L{ZOOKEEPER_PORT}, and spaces around a server are dropped.

    A chroot written after each server (C{zk1:2181/app,zk2:2181/app}) is
    refused, with the value as meant: ZooKeeper's client and kazoo take
    everything after the first C{/} for the chroot, so such a value
    connects to the first server alone, under a chroot
    (C{/app,zk2:2181/app}) that no reader of C{/app} looks in, and that
    the agent would create. A comma in a chroot is a znode name's only
    when what follows it names no server.
    """
    hosts = string(label, value)
    servers, slash, chroot = hosts.partition("/")
    written = []
    for server in (text.strip() for text in servers.split(",")):
        address = _server(server)
        if address is None:
            raise invalid(
                label,
                value,
                f"is not HOST[:PORT][,HOST[:PORT]...][/CHROOT] at {server!r}",
            )
        host, port = address
        if not 1 <= port <= 65535:
            raise invalid(label, value, f"has port {port}, not in 1-65535")
        written.append(_server_text(address))
    first, *others = chroot.split(",")
    after = [_server(other.partition("/")[0].strip()) for other in others]
    if after and None not in after:
        meant = ",".join(written + [_server_text(a) for a in after if a])
        raise invalid(
            label,
            value,
            "has a chroot before its last server; the chroot goes once,"
            f" at the end ({meant}/{first})",
        )
    if slash:
        problem = znode_path_problem(slash + chroot)
        if problem is not None:
            raise invalid(label, value, f"has an invalid chroot: {problem}")
    return ",".join(written) + slash + chroot


def _server(text: str) -> tuple[str, int] | None:
    """One server of C{zookeeper.hosts}, port range not checked, or None."""
    return host_port(text) or _host_alone(text)


def _server_text(address: tuple[str, int]) -> str:
    """A server as written back: C{HOST:PORT}, an IPv6 address bracketed."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _host_alone(text: str) -> tuple[str, int] | None:
    """A server named without its port (an IPv6 address bracketed), or None."""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
        if ":" not in text:
            return None
    elif ":" in text:
        return None
    if not text or host_problem(text) is not None:
        return None
    return text, ZOOKEEPER_PORT


def chroot_of(hosts: str) -> str:
    """The chroot of a ``zookeeper.hosts`` value, "" for none."""
    return hosts[hosts.find("/") :].rstrip("/") if "/" in hosts else ""


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
    split = host_port(address)
    if split is None:
        raise error(f"--redis: {show(text)} is not HOST:PORT or NAME=HOST:PORT")
    host, port = split
    if not 1 <= port <= 65535:
        raise error(f"--redis: {show(text)}: {port} is not a port (1-65535)")
    return name, host, port

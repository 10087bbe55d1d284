"""
The listings readers of ZooKeeper take in one answer, against the size
their clients accept.

Readers list ``{root}/instances`` (proxies, clients) and each discovery
service's members (Finagle, Curator, Prometheus, synapse) in one answer
that holds every child's name, each name its UTF-8 bytes and a 4-byte
length. ZooKeeper's Java client refuses an answer of its
``jute.maxbuffer`` or more (`JAVA_READER_LIMIT` by default) and then never
lists the node, however often it tries (``java.io.IOException: Packet len
1212088 is out of range!``). Measured with ZooKeeper 3.8's own client,
3,000 names of 340 bytes (1.03 MB) listed and of 350 bytes (1.06 MB) did
not: about 30,000 instances of 30-byte names reach it, or a discovery
service of about 47,000 serverset members. kazoo has no such limit, nor
has the server for an answer.

A listing readers expect in one place cannot be cut into parts as the
agent's own catalogs are, and kazoo readers still work: a config that
makes one longer than `WARN_ABOVE` is warned of at load and at each
reload, never refused. In a group, an agent knows only its own config;
the estimate counts the instances it names.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

from twisted.logger import Logger

from sentinel.config import RedisInstance, ZooKeeperConfig
from sentinel.documents import member_prefix
from sentinel.sequential import LONGEST_COUNTER

log = Logger()

# The default jute.maxbuffer of ZooKeeper's Java client (0xfffff).
JAVA_READER_LIMIT = 1024 * 1024 - 1
# Near it: the answer's header, and instances added since, take the rest.
WARN_ABOVE = 1_000_000
# Each name's length in the answer. A discovery member's name also has
# the counter ZooKeeper appends to a sequential node's, counted at its
# longest (`sentinel.sequential`: eleven characters once it has wrapped).
_LENGTH_BYTES = 4
_MIB = 1024 * 1024


def listing_sizes(
    zookeeper: ZooKeeperConfig, instances: Iterable[RedisInstance]
) -> Counter[str]:
    """
    The bytes of names a reader gets listing ``{root}/instances`` and, with
    discovery, each service's members (all instances up), by path.
    """
    sizes: Counter[str] = Counter()
    listed = f"{zookeeper.root}/instances"
    members = zookeeper.discovery != "none"
    for instance in instances:
        sizes[listed] += _LENGTH_BYTES + utf8_length(instance.name)
        if members:
            service = f"{zookeeper.discovery_root}/{instance.discovery_service}"
            prefix = member_prefix(zookeeper.discovery, instance)
            sizes[service] += _LENGTH_BYTES + utf8_length(prefix) + LONGEST_COUNTER
    return sizes


def warn_of_long_listings(
    zookeeper: ZooKeeperConfig, instances: Iterable[RedisInstance]
) -> list[str]:
    """
    Log one warning for each listing longer than `WARN_ABOVE`, saying what
    its readers must do; return their paths.
    """
    long = []
    for path, size in listing_sizes(zookeeper, instances).most_common():
        if size <= WARN_ABOVE:
            break
        long.append(path)
        log.warn(
            "{path} lists about {size:,} bytes of names, near or over the "
            "{limit:,} bytes ZooKeeper's Java clients accept by default "
            "(jute.maxbuffer): readers on them cannot list it unless they "
            "raise it, to -Djute.maxbuffer={advised} say (kazoo readers "
            "are not limited)",
            path=path,
            size=size,
            limit=JAVA_READER_LIMIT,
            # Room for the listing to double.
            advised=math.ceil(2 * size / _MIB) * _MIB,
        )
    return long


def utf8_length(name: str) -> int:
    """A node name's bytes as ZooKeeper gets them (as `checks` counts them)."""
    return len(name.encode("utf-8", "surrogatepass"))

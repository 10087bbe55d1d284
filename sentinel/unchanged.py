"""
A rewrite that would change nothing is not made, unless it is the node's
refresh.

ZooKeeper's write budget is the limit that matters (DESIGN.md section 7):
every set is fsynced by a quorum. A node is marked for writing when
something it may say changed, and its data is built when the write
starts; the bytes built are sometimes exactly those the node holds. At a
view change, a new primary carries the verdict it took over with a node
until it has one of its own, each of its checks marks the node, and the
carried document built again is byte for byte what the takeover wrote:
about one set a node taken over at a leave (343 of one agent of three at
1,000 instances, BENCHMARKS.rst), each telling readers nothing.

So a node keeps the version our last acknowledged write made of it and
a digest of that write's data (`Node.held`, set by `wrote`), and a set
of the same bytes at that version is skipped (`unchanged`) where the
write watch runs (`sentinel.writewatch`), which tells any other client's
write: after each write of ours its read sets the watch again, and finds
a write made before it at another version than ours; a write made after
fires it, and its read finds that. Either read marks the node at the
version found, no longer the one we wrote, and the next rewrite is made
(one due when that read comes is made too: `WriteWatch._answered`
forgets what the node held). So another client's write stands no longer
than the write watch lets it (`writewatch.CHECK_AFTER` after it is seen,
the read's wait for room aside); a rewrite of ours that happened to come
first found it sooner. Without the watch (``zookeeper.watch_writes =
false``, the default with ``auth_file``) nothing tells it, and every
rewrite is made, as before. Nor is one skipped:

- that is the node's refresh (DESIGN.md section 5: readers tell a stale
  node by its rewrites, at least every ``zookeeper.refresh`` seconds):
  the caller asks its refresh rule, and a skipped write leaves the
  node's last write time as it was (`sentinel.writes`), so that the
  refresh comes when it would have without the skip, never later;
- of a node with a set of ours unanswered (`sentinel.lostanswers`): it
  may hold what that set made of it;
- of our agent node: its every write is a heartbeat (the group's
  members and the clock's check read it as one, `sentinel.clockskew`);
- of a node not known to be ours (after a reconnection,
  `sentinel.resync` asks ZooKeeper again, and writes every node
  whatever it held).

The digest is 16 bytes of BLAKE2b, as `sentinel.lostanswers` keeps, never
the data: a catalog part may be 512 KiB.
"""

from __future__ import annotations

from sentinel.lostanswers import digest
from sentinel.nodes import Node


def wrote(node: Node, version: int, data: bytes) -> None:
    """ZooKeeper acknowledged our write of `data`, which made `version`."""
    node.held = (version, digest(data))


def unchanged(node: Node, data: bytes) -> bool:
    """
    Whether a set of `data` at the node's version would change nothing:
    the node is ours, at the version our last write made, with no set of
    ours unanswered, and holds exactly `data`.
    """
    held = node.held
    return (
        held is not None
        and node.owned
        and not node.unanswered
        and held[0] == node.version
        and held[1] == digest(data)
    )

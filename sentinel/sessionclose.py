"""
Whether a session's close left this process, when its answer did not come;
and likewise a group's leave (`deletes_sent`).

Closing the session is how a stop deletes this agent's nodes at once
(every ephemeral node goes with it), and the stop waits a bounded time for
ZooKeeper's answer (`sentinel.zk.ZooKeeper.stop`). ZooKeeper answers a
close only once it has applied it, every node of the session deleted: at
3,000 instances with discovery (6,000 nodes), 0.5 s and more at a load of
20 here, past the bound when the stop began late. The agent then logged
``ZooKeeper session not closed in time; left to expire`` and exited, which
read as every node left up for a session timeout; but ZooKeeper had the
close, and the nodes went as it applied it: measured with ZooKeeper's own
list of each session's ephemeral nodes (``benchmarks/stops.py``), none
was left at the exit of any such stop, alone or in a group. The close
itself went out within 0.001-0.03 s of the stop asking for it.

So, when the answer is late, `close_sent` says whether kazoo has written
the close to its connection: a close asked waits in the client's request
queue until kazoo's connection thread sends it (then it waits among the
requests sent, for its answer). Only a close still in that queue is left
to expire, and said so; a close sent is said as what it is, at info.
kazoo keeps that queue private: when it is not there to look at (another
version of kazoo), the answer is None and the stop says it does not know.

A leave unanswered is left open for the takeovers (`sentinel.stopping`),
which only works if ZooKeeper gets it: still in that queue when the
process exits, it is lost, nobody hears of the leave, and every node
goes with the session's expiry (seen at 1,000 instances, load 28: the
stop exited 0.66 s after the signal with its leave unsent, and all 343
nodes handed went missing 11.3 s later). `deletes_sent` says whether
any delete of given paths still waits there.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from kazoo.protocol.serialization import Close, Delete

# Tries at copying kazoo's queue while its connection thread changes it.
_COPY_TRIES = 3


def close_sent(client: Any) -> bool | None:
    """
    Whether `client` (a KazooClient whose `stop` was called) has sent its
    session's close to ZooKeeper; None if that cannot be told.
    """
    stopped = getattr(client, "_stopped", None)
    if stopped is None:
        return None
    if not stopped.is_set():
        # `stop` not called yet (its thread not run): nothing asked.
        return False
    waiting = _unsent(client)
    if waiting is None:
        return None
    return not any(isinstance(request, Close) for request in waiting)


def deletes_sent(client: Any, paths: Collection[str]) -> bool | None:
    """
    Whether `client` (a KazooClient) has written every delete of `paths`
    it was asked for to its connection (none waits in its queue); None if
    that cannot be told. A path in kazoo's request has its chroot before
    it.
    """
    waiting = _unsent(client)
    if waiting is None:
        return None
    return not any(
        isinstance(request, Delete)
        and any(request.path.endswith(path) for path in paths)
        for request in waiting
    )


def _unsent(client: Any) -> list[Any] | None:
    """
    The requests in `client`'s queue, not written to its connection yet;
    None if that queue is not there, or kept changing while copied.
    """
    queue = getattr(client, "_queue", None)
    if queue is None:
        return None
    for _ in range(_COPY_TRIES):
        try:
            return [request for request, _ in tuple(queue)]
        except RuntimeError:
            continue  # Changed while copied, on kazoo's connection thread.
    return None

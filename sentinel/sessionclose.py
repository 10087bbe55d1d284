"""
Whether a session's close left this process, when its answer did not come.

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
"""

from __future__ import annotations

from typing import Any

from kazoo.protocol.serialization import Close

# Tries at copying kazoo's queue while its connection thread changes it.
_COPY_TRIES = 3


def close_sent(client: Any) -> bool | None:
    """
    Whether `client` (a KazooClient whose `stop` was called) has sent its
    session's close to ZooKeeper; None if that cannot be told.
    """
    stopped = getattr(client, "_stopped", None)
    queue = getattr(client, "_queue", None)
    if stopped is None or queue is None:
        return None
    if not stopped.is_set():
        # `stop` not called yet (its thread not run): nothing asked.
        return False
    for _ in range(_COPY_TRIES):
        try:
            waiting = tuple(queue)
        except RuntimeError:
            continue  # Changed while copied, on kazoo's connection thread.
        return not any(isinstance(request, Close) for request, _ in waiting)
    return None

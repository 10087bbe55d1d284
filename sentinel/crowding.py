"""
Children of ``{root}/instances`` that no member of the group publishes
(DESIGN.md section 2.5), counted without listing them.

Readers list ``{root}/instances`` and take each child for an instance.
Any client of the same ZooKeeper may create children there (persistent,
or in a session of its own): readers then list instances that do not
exist, and past about 1 MiB of names (`readers.JAVA_READER_LIMIT`)
ZooKeeper's Java client and ``zkCli.sh`` cannot list the node at all.
30,000 children of 45 bytes did that while every agent's /healthz said
200, and the agents, which never list that node, worked on.

Every `LOOK_EVERY` seconds one ``exists`` of the node gives its number of
children (``numChildren`` of its stat) without reading a name; the
instances the group publishes are the names of its members' catalogs
together, with the replicas this agent discovered (`expected`, counted
again only when the view changes). More children than that by over
`ALLOWED_EXTRA` (or a tenth, if more), at two looks in a row (a node of
an instance just removed from every config may outlive its name in the
catalogs for a moment), is named in /healthz, with the length their
names would need on average for Java readers to fail.

Replicas discovered by other members are not in their catalogs: a group
whose members discover more than `ALLOWED_EXTRA` of them beyond this
agent's sight is told of children it publishes itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attr
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger

from sentinel.readers import JAVA_READER_LIMIT
from sentinel.zk import CONNECTED, ZooKeeper

log = Logger()

# Seconds between two looks: a read per agent per look, at 2,000 agents
# about 70 reads a second for the ensemble, each of about 100 bytes.
LOOK_EVERY = 30.0
# Children beyond the group's instances that are not named (nor a tenth
# of those instances, if more): replicas discovered by other members,
# nodes in the middle of being deleted.
ALLOWED_EXTRA = 1000
# Each child's name in a listing: its bytes and a 4-byte length.
_LENGTH_BYTES = 4


@attr.frozen
class Expected:
    """The instances the group publishes: how many, and their names' bytes."""

    count: int
    name_bytes: int


class InstancesCrowding:
    """
    Looks every `LOOK_EVERY` seconds at how many children
    ``{root}/instances`` has, against `expected()` (module docstring).
    """

    def __init__(
        self,
        reactor: Any,
        zk: ZooKeeper,
        root: str,
        expected: Callable[[], Expected],
    ) -> None:
        self._reactor = reactor
        self.zk = zk
        self.path = f"{root}/instances"
        self._expected = expected
        self._call: IDelayedCall | None = None
        self._looking = False
        self.looks = 0
        # The children and the expected count at the last look that found
        # too many, and whether the look before it did too.
        self._crowded: tuple[int, Expected] | None = None
        self._confirmed = False

    def start(self) -> None:
        """Look every `LOOK_EVERY` seconds from now on."""
        self._call = self._reactor.callLater(LOOK_EVERY, self._look)

    def stop(self) -> None:
        """Look no more; a look under way is ignored when it ends."""
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _look(self) -> None:
        self._call = self._reactor.callLater(LOOK_EVERY, self._look)
        if self._looking or self.zk.state != CONNECTED:
            return
        self._looking = True
        d = self.zk.exists(self.path)
        # A failed look says nothing of the children: the next one asks
        # again. A bug of ours in judging it is logged.
        d.addCallbacks(self._looked, lambda _: None)
        d.addBoth(self._look_ended)
        d.addErrback(
            lambda f: log.failure(
                "counting {path}'s children failed", f, path=self.path
            )
        )

    def _look_ended(self, result: object) -> object:
        self._looking = False
        return result

    def _looked(self, stat: Any) -> None:
        if self._call is None:
            return  # Stopped meanwhile.
        self.looks += 1
        children = 0 if stat is None else stat.numChildren
        expected = self._expected()
        allowed = max(ALLOWED_EXTRA, expected.count // 10)
        if children - expected.count <= allowed:
            if self._confirmed:
                log.info(
                    "{path} has {children} children again, within the group's"
                    " {count} instances",
                    path=self.path,
                    children=children,
                    count=expected.count,
                )
            self._crowded, self._confirmed = None, False
            return
        was_confirmed = self._confirmed
        self._confirmed = self._crowded is not None
        self._crowded = (children, expected)
        if self._confirmed and not was_confirmed:
            log.warn("{reason}", reason=self.unhealthy_reason())

    def unhealthy_reason(self) -> str | None:
        """Why /healthz fails on account of these children, or None."""
        if not self._confirmed or self._crowded is None:
            return None
        children, expected = self._crowded
        extra = children - expected.count
        room = JAVA_READER_LIMIT - expected.name_bytes - _LENGTH_BYTES * children
        if room <= 0:
            java = "its listing is over what ZooKeeper's Java readers accept"
        else:
            java = (
                f"ZooKeeper's Java readers cannot list it if their names"
                f" average over {room // extra} bytes"
            )
        return (
            f"{self.path} has {children} children, {extra} more than the"
            f" {expected.count} instances the group publishes: readers take"
            f" them for instances, and {java} (jute.maxbuffer)"
        )

"""
`sentinel.lostanswers`: our sets whose answer was lost are remembered,
at most `KEPT` per node, forgotten once a version past them is answered
or the node is made anew, and a node found one version past one of them
with its very data is recognised as our own write, nothing else.
"""

from __future__ import annotations

from kazoo.protocol.states import ZnodeStat
from twisted.trial.unittest import SynchronousTestCase

from sentinel.lostanswers import (
    DIGEST_BYTES,
    KEPT,
    answered,
    digest,
    made,
    own_set_applied,
    unanswered,
)
from sentinel.nodes import Node


def stat(version: int) -> ZnodeStat:
    """A ZnodeStat at `version` (the rest does not matter here)."""
    return ZnodeStat(1, 2, 0, 0, version, 0, 0, 0x1234, 10, 0, 2)


class LostAnswersTests(SynchronousTestCase):
    """The record of a node's unanswered sets."""

    def setUp(self) -> None:
        self.node = Node("/sentinel/instances/redis-00", lambda: b"")

    def test_applied_set_recognised(self) -> None:
        """One version past a lost set, with its data: ours."""
        unanswered(self.node, 3, b"up")
        self.assertTrue(own_set_applied(self.node, b"up", stat(4)))

    def test_other_data_or_version_not_ours(self) -> None:
        """Other data at that version, or that data at another: not ours."""
        unanswered(self.node, 3, b"up")
        self.assertFalse(own_set_applied(self.node, b"down", stat(4)))
        self.assertFalse(own_set_applied(self.node, b"up", stat(5)))
        self.assertFalse(own_set_applied(self.node, b"up", stat(3)))

    def test_bounded(self) -> None:
        """A thousand lost sets keep the newest KEPT, the last among them."""
        for i in range(1000):
            unanswered(self.node, 3, b"%d" % i)
        self.assertEqual(len(self.node.unanswered), KEPT)
        self.assertTrue(own_set_applied(self.node, b"999", stat(4)))
        self.assertFalse(own_set_applied(self.node, b"0", stat(4)))

    def test_bounded_whatever_the_data(self) -> None:
        """
        Lost sets of big data (a catalog part, up to 512 KiB) keep no copy
        of it: a version and a digest each, so that a ZooKeeper applying
        sets and answering none holds a few hundred bytes a node, not
        `KEPT` copies of its data. The last set is still recognised.
        """
        for i in range(KEPT):
            unanswered(self.node, 3, bytes([i]) * (512 * 1024))
        self.assertEqual(len(self.node.unanswered), KEPT)
        kept = sum(len(data) for _, data in self.node.unanswered)
        self.assertEqual(kept, KEPT * DIGEST_BYTES)
        last = bytes([KEPT - 1]) * (512 * 1024)
        self.assertTrue(own_set_applied(self.node, last, stat(4)))
        self.assertFalse(own_set_applied(self.node, last[:-1] + b"x", stat(4)))

    def test_forgotten_below_an_answered_version(self) -> None:
        """A version answered past a lost set: it can never apply."""
        unanswered(self.node, 3, b"up")
        unanswered(self.node, 5, b"down")
        answered(self.node, 4)
        self.assertEqual(self.node.unanswered, ((5, digest(b"down")),))

    def test_forgotten_when_made_anew(self) -> None:
        """A node made anew by our session: none of ours can apply to it."""
        unanswered(self.node, 0, b"up")
        made(self.node)
        self.assertFalse(own_set_applied(self.node, b"up", stat(1)))

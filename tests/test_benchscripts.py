"""
The pure pieces of the benchmark scripts that decide what they print: a
script that measures something else than it says, or prints a traceback
or ``nan``, is a defect too (``benchmarks/``, run by users against a
real agent).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from kazoo.exceptions import ConnectionLoss
from twisted.trial.unittest import SynchronousTestCase

# The scripts import their helpers as top-level modules (``from common
# import ...``), as they do when run from the repository's root.
# Only while they are imported: left on sys.path, the directory's 100-odd
# script names would shadow any module of the same name that a later test
# of the same trial worker imports.
BENCHMARKS = str(Path(__file__).resolve().parent.parent / "benchmarks")
sys.path.insert(0, BENCHMARKS)
try:
    import failovers
    import inflight
    import outages
    import reloads
    import topology
finally:
    sys.path.remove(BENCHMARKS)

from sentinel.flapping import LIMIT, WINDOW  # noqa: E402


class OutagesFitTests(SynchronousTestCase):
    """``outages.py``'s slope per outage."""

    def test_two_points_give_a_slope(self) -> None:
        """
        Three outages (two after the first) give a slope, printed without
        an error; never ``nan``.
        """
        self.assertEqual(outages.fit([(2, 10.0), (3, 14.0)]), (4.0, None))
        text = outages.per_outage([(2, 10.0), (3, 14.0)])
        self.assertEqual(text, "then +4/outage, no error from 2 points")
        self.assertNotIn("nan", text)

    def test_one_point_says_so(self) -> None:
        """With one outage after the first, the line says no slope is fitted."""
        self.assertEqual(outages.fit([(2, 10.0)]), (None, None))
        self.assertIn("no slope", outages.per_outage([(2, 10.0)]))

    def test_three_points_give_an_error(self) -> None:
        """From three points on, the slope comes with its standard error."""
        slope, error = outages.fit([(2, 10.0), (3, 12.0), (4, 14.0)])
        self.assertEqual((slope, error), (2.0, 0.0))


class ReloadsConfigTests(SynchronousTestCase):
    """``reloads.py``'s denominator: the config the link names last."""

    def test_even_flips_leave_the_first(self) -> None:
        """
        ``alternate`` flips to b.toml, then a.toml: an even count of flips
        leaves a.toml, an odd one b.toml; none, a.toml.
        """
        cycle = ["b.toml", "a.toml"]
        self.assertEqual(reloads.pointed_at(cycle, 0), "a.toml")
        self.assertEqual(reloads.pointed_at(cycle, 3), "b.toml")
        self.assertEqual(reloads.pointed_at(cycle, 6000), "a.toml")
        self.assertEqual(reloads.pointed_at(["a.toml"], 17), "a.toml")


class TopologyPacingTests(SynchronousTestCase):
    """``topology.py roles`` keeps its changes within ``sentinel.flapping``'s limit."""

    def test_room_after_the_limit(self) -> None:
        """
        Up to LIMIT changes go at once; the next waits until the one LIMIT
        before it is a WINDOW old (and a margin).
        """
        published = [float(i) for i in range(LIMIT - 1)]
        self.assertEqual(topology.wait_for_room(published, 20.0), 0.0)
        published.append(float(LIMIT))
        wait = topology.wait_for_room(published, 20.0)
        self.assertEqual(wait, WINDOW + topology.PACE_MARGIN - 20.0)
        self.assertEqual(topology.wait_for_room(published, 20.0 + wait), 0.0)


def multi(xid: int, *paths: str) -> bytes:
    """A ZooKeeper request frame of type ``multi`` naming `paths`."""
    body = xid.to_bytes(4, "big") + inflight.MULTI.to_bytes(4, "big")
    for path in paths:
        body += (1).to_bytes(4, "big") + len(path).to_bytes(4, "big") + path.encode()
    return len(body).to_bytes(4, "big") + body


class AnswersHeldTriggerTests(SynchronousTestCase):
    """``inflight.py``'s path holds from b's takeover of a's nodes."""

    def path(self) -> Any:
        """An `AnswersHeld` without its socket (its parser alone)."""
        path = inflight.AnswersHeld.__new__(inflight.AnswersHeld)
        path.holding = False
        path.wanted = ()
        path.armed = False
        path.sent_held = 0
        path.changed = inflight.threading.Condition()
        return path

    def test_other_transactions_pass(self) -> None:
        """
        A ``multi`` that names none of a's nodes, after the leave, holds
        nothing: only one that takes a node of a's does.
        """
        path = self.path()
        path.arm(["/sentinel/instances/r0003"])
        rest = path._look_for_multi(multi(7, "/sentinel/opinions/b"))
        self.assertEqual((rest, path.holding), (b"", False))
        path._look_for_multi(multi(8, "/sentinel/instances/r0003"))
        self.assertTrue(path.holding)
        path._look_for_multi(multi(9, "/sentinel/instances/r0003"))
        self.assertEqual(path.sent_held, 2)

    def test_not_armed(self) -> None:
        """Before the leave, a takeover-like ``multi`` holds nothing."""
        path = self.path()
        path._look_for_multi(multi(7, "/sentinel/instances/r0003"))
        self.assertFalse(path.holding)

    def test_frames_across_reads(self) -> None:
        """A frame split across two reads is found whole."""
        path = self.path()
        path.arm(["/sentinel/instances/r0003"])
        frame = multi(9, "/sentinel/instances/r0003")
        rest = path._look_for_multi(frame[:10])
        self.assertFalse(path.holding)
        path._look_for_multi(rest + frame[10:])
        self.assertTrue(path.holding)


class PollerTests(SynchronousTestCase):
    """``failovers.py``'s pollers outlive their client's reconnects."""

    def test_connection_loss_skips_a_sample(self) -> None:
        """
        A look that raises ``ConnectionLoss`` (the reader's client
        reconnecting) is skipped and counted; the poller goes on.
        """
        answers: list[Any] = [ConnectionLoss(), {"n": 1}]

        def look() -> dict[str, Any]:
            answer = answers.pop(0)
            if not answers:
                poller.stopped.set()
            if isinstance(answer, Exception):
                raise answer
            return answer

        poller = failovers.Poller(look, 0.0)
        poller.run()
        self.assertEqual(poller.skipped, 1)
        self.assertEqual([s for _, s in poller.samples], [{"n": 1}])

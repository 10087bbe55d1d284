"""
An instance that changes what its node says at every check (ready, role)
publishes at most `LIMIT` of them a `WINDOW`; a change of status is never
held back (`sentinel.flapping`, through the monitor on a Clock).
"""

from __future__ import annotations

from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from sentinel.flapping import LIMIT, NAMES_LISTED, STATUS_LIMIT, WINDOW
from sentinel.health import DOWN, UP
from sentinel.instance import InstanceState
from sentinel.membership import SETTLE
from sentinel.observation import Observation, Replication
from tests.fakes import FAILED, OK, make_monitor
from tests.groupfakes import INTERVAL, ROOT, Fleet
from tests.groupfakes import UP as GROUP_UP

LOADING = Observation(ok=True, ready=False, latency_ms=0.5, error="LOADING")
GROUP_LOADING = GROUP_UP._replace(ready=False, error="LOADING")


class Flapper:
    """
    A monitor of ``a`` (its replies set per check) and ``b`` (steady),
    reading INFO only while the role may move (the fake probe's INFO
    reply is always ready).
    """

    def __init__(self, info_every: int = 10**6) -> None:
        self.monitor, self.clock, self.probes, self.publisher = make_monitor(
            ["a", "b"], info_every=info_every
        )
        self.monitor.startService()

    def run(self, seconds: int, *replies: Observation) -> None:
        """`seconds` checks, ``a`` answering `replies` in turn."""
        for second in range(seconds):
            self.probes["a"].result = replies[second % len(replies)]
            self.clock.advance(1.0)

    def writes(self, name: str = "a") -> list[float]:
        """When `name`'s changes were handed to the publisher, in order."""
        return [at for at, (n, t) in self.published if n == name and t is not None]

    @property
    def published(self) -> list[tuple[float, tuple[str, object]]]:
        return self._published

    def record(self) -> None:
        """Note the time of each publish from now on."""
        self._published: list[tuple[float, tuple[str, object]]] = []
        publish = self.publisher.publish

        def timed(state: object, transition: object) -> None:
            self._published.append((self.clock.seconds(), (state.name, transition)))  # type: ignore[attr-defined]
            publish(state, transition)  # type: ignore[arg-type]

        self.publisher.publish = timed  # type: ignore[method-assign]


class FlappingTests(SynchronousTestCase):
    """The writes a flapping instance causes, and what waits."""

    def test_ready_changing_every_check_is_bounded(self) -> None:
        """
        ``+PONG`` and ``-LOADING`` in turn for 300 s: at most `LIMIT`
        changes are published in any `WINDOW` seconds (300 without the
        bound), the steady instance beside it publishes nothing more, and
        the held-back change is logged once, not at every check.
        """
        flapper = Flapper()
        flapper.run(5, OK)
        flapper.record()
        with capturedLogs() as events:
            flapper.run(300, LOADING, OK)
        writes = flapper.writes()
        self.assertGreater(len(writes), LIMIT)
        for i, at in enumerate(writes):
            within = [w for w in writes[i:] if w - at < WINDOW]
            self.assertLessEqual(len(within), LIMIT, writes)
        self.assertLessEqual(len(writes), (300 // int(WINDOW) + 1) * LIMIT)
        self.assertEqual(flapper.writes("b"), [])
        lines = [formatEvent(e) for e in events]
        held = [line for line in lines if "its further changes wait" in line]
        self.assertEqual(len(held), 1, lines)
        self.assertLess(len(lines), 3 * LIMIT * 6, lines)

    def flapping(self, flapper: Flapper) -> InstanceState:
        """
        ``a`` up, then answering ``-LOADING`` and ``+PONG`` in turn for 30
        checks: its state, with a change waiting.
        """
        flapper.run(5, OK)
        flapper.run(30, LOADING, OK)
        state = flapper.monitor.states["a"]
        assert state.published_changes is not None
        self.assertIsNotNone(state.published_changes.held_since)
        return state

    def test_newest_state_written_once_there_is_room(self) -> None:
        """
        When the flapping stops, the newest state waits at most `WINDOW`
        seconds, is written once, and nothing waits after it.
        """
        flapper = Flapper()
        state = self.flapping(flapper)
        flapper.record()
        flapper.run(int(WINDOW) + 1, LOADING)
        self.assertEqual(len(flapper.writes()), 1)
        self.assertIsNone(state.published_changes.held_since)
        self.assertFalse(state.health.ready)

    def test_going_down_is_never_held(self) -> None:
        """
        While a's changes wait, a's status going down is handed to the
        publisher at the check that decides it (`fall` failures).
        """
        flapper = Flapper()
        flapper.run(5, OK)
        flapper.run(30, LOADING, OK)
        flapper.record()
        flapper.run(3, FAILED)
        self.assertEqual(flapper.monitor.states["a"].health.status, DOWN)
        (at,) = flapper.writes()
        self.assertEqual(at, flapper.clock.seconds())
        ((_, (_, transition)),) = [
            p for p in flapper.published if p[1] != ("a", None) and p[1][0] == "a"
        ]
        self.assertEqual(transition.new_status, DOWN)  # type: ignore[attr-defined]

    def test_status_changes_are_never_held(self) -> None:
        """
        Status flapping (up for `rise` checks, down for `fall`): rise and
        fall already damp it, so every change of status, up as well as
        down, is written at the check that decides it, however many came
        before; and a ready flag waiting meanwhile is written with it.
        """
        flapper = Flapper()
        state = self.flapping(flapper)
        flapper.record()
        statuses = []
        for second in range(600):
            before = state.health.status
            flapper.run(1, (OK, OK, FAILED, FAILED, FAILED)[second % 5])
            if state.health.status != before:
                statuses.append(flapper.clock.seconds())
        # 120 cycles, each up then down, the first already up: 239
        # changes, each written.
        self.assertEqual(len(statuses), 239)
        self.assertEqual(flapper.writes(), statuses)
        self.assertIsNone(state.published_changes.held_since)

    def status_flapping(self, flapper: Flapper, seconds: int) -> list[str]:
        """
        ``a`` up, then answering as a server whose replies come around
        the timeout does (two on time, three late, in turn) for `seconds`
        checks: the lines logged meanwhile at warning or above.
        """
        flapper.run(5, OK)
        with capturedLogs() as events:
            flapper.run(seconds, OK, OK, FAILED, FAILED, FAILED)
        return [formatEvent(e) for e in events if e["log_level"] >= LogLevel.warn]

    def test_status_flapping_named(self) -> None:
        """
        An instance whose status changes `STATUS_LIMIT` times within
        `WINDOW` seconds (rise and fall let it: every change is still
        written at once) is named: one warning line for the spell, in
        place of a warning at each fall; ``/debug/stats`` (``flapping``'s
        ``status``) and its ``status_flapping_since``; and no longer once
        its status held for `WINDOW` seconds. Before, nothing named it:
        a line at every change, and /debug/stats listed nothing.
        """
        flapper = Flapper()
        lines = self.status_flapping(flapper, 120)
        flapping = flapper.monitor.flapping
        now = flapper.clock.seconds()
        named = [line for line in lines if "flapping" in line]
        self.assertEqual(len(named), 1, lines)
        self.assertIn(f"changed its status {STATUS_LIMIT} times within", named[0])
        # The falls before the spell began, each a warning, and the line.
        self.assertEqual(len(lines), STATUS_LIMIT // 2 + 1, lines)
        stats = flapping.stats(now)["status"]
        self.assertEqual((stats["instances"], stats["names"]), (1, ["a"]))
        state = flapper.monitor.states["a"]
        since = flapping.status_flapping_since(state, now)
        self.assertIsNotNone(since)
        self.assertLess(since, now - WINDOW / 2)
        # Up again (at `rise` checks), then up for WINDOW seconds.
        flapper.run(2, OK)
        flapper.run(int(WINDOW) - 1, OK)
        now = flapper.clock.seconds()
        self.assertEqual(flapping.stats(now)["status"]["names"], ["a"])
        flapper.run(1, OK)
        now = flapper.clock.seconds()
        self.assertEqual(flapping.stats(now)["status"]["names"], [])
        self.assertIsNone(flapping.status_flapping_since(state, now))

    def test_a_restart_is_no_status_flapping(self) -> None:
        """
        Down and up again now and then (a restart, a failover) is named
        nowhere, and an instance that only went down keeps no record.
        """
        flapper = Flapper()
        flapper.run(5, OK)
        flapper.run(5, FAILED)
        self.assertIsNone(flapper.monitor.states["a"].published_changes)
        flapper.run(10, OK)
        flapper.run(5, FAILED)
        flapper.run(10, OK)
        now = flapper.clock.seconds()
        self.assertEqual(flapper.monitor.flapping.stats(now)["status"]["names"], [])
        state = flapper.monitor.states["a"]
        self.assertIsNone(flapper.monitor.flapping.status_flapping_since(state, now))

    def test_role_changing_every_info_is_bounded(self) -> None:
        """
        A server naming master and replica at every INFO (read at every
        check while the role moves) publishes at most `LIMIT` changes
        within `WINDOW` seconds.
        """
        flapper = Flapper(info_every=10)
        flapper.run(5, OK)
        flapper.record()
        probe = flapper.probes["a"]
        replica = Replication(role="slave", master_host="10.0.0.1", master_port=6379,
                              master_link_status="up")  # fmt: skip
        master = Replication(role="master")
        for _ in range(120):
            probe.replication = replica if probe.info_requests % 2 else master
            flapper.clock.advance(1.0)
        self.assertLessEqual(len(flapper.writes()), 3 * LIMIT)
        self.assertGreater(probe.info_requests, 100)

    def test_stats_and_instances_name_the_flapping(self) -> None:
        """
        ``/debug/stats`` (`Flapping.stats`) names the instances with a
        change held back within `WINDOW` seconds, and forgets them
        `WINDOW` seconds after the last.
        """
        flapper = Flapper()
        flapper.run(5, OK)
        flapper.run(30, LOADING, OK)
        now = flapper.clock.seconds()
        stats = flapper.monitor.flapping.stats(now)
        self.assertEqual(stats["instances"], 1)
        self.assertEqual(stats["names"], ["a"])
        self.assertGreater(stats["held_back"], 0)
        flapper.run(int(2 * WINDOW), OK)
        self.assertEqual(
            flapper.monitor.flapping.stats(flapper.clock.seconds())["names"], []
        )
        self.assertEqual(flapper.monitor.states["a"].health.status, UP)

    def test_steady_and_downed_instances_keep_nothing(self) -> None:
        """
        An instance that never changed after its first status, or only
        went down, keeps no record of its changes: one per instance at
        19,000 instances would be memory for nothing.
        """
        flapper = Flapper()
        flapper.run(5, OK)
        flapper.run(5, FAILED)
        states = flapper.monitor.states
        self.assertEqual(states["a"].health.status, DOWN)
        self.assertIsNone(states["a"].published_changes)
        self.assertIsNone(states["b"].published_changes)

    def test_stats_list_the_first_names(self) -> None:
        """
        With more instances flapping than `NAMES_LISTED`, ``/debug/stats``
        counts them all and lists the first names in order.
        """
        names = [f"i{n:02d}" for n in range(NAMES_LISTED + 5)]
        monitor, clock, probes, _ = make_monitor(names, info_every=10**6)
        monitor.startService()
        for second in range(40):
            for probe in probes.values():
                probe.result = LOADING if second % 2 else OK
            clock.advance(1.0)
        stats = monitor.flapping.stats(clock.seconds())
        self.assertEqual(stats["instances"], len(names))
        self.assertEqual(stats["names"], names[:NAMES_LISTED])

    def test_removed_instance_forgotten(self) -> None:
        """An instance no longer watched is no longer named."""
        flapper = Flapper()
        flapper.run(5, OK)
        flapper.run(30, LOADING, OK)
        flapper.monitor.remove_instance("a")
        stats = flapper.monitor.flapping.stats(flapper.clock.seconds())
        self.assertEqual(stats["names"], [])


class GroupFlappingTests(SynchronousTestCase):
    """With replicas above 1, opinions and verdicts are bounded too."""

    def test_verdict_and_opinions_bounded(self) -> None:
        """
        Two members, two replicas, both seeing ``x`` answer ``+PONG`` and
        ``-LOADING`` in turn for 240 s: its verdict node and each opinion
        are written at most `LIMIT` times a `WINDOW` (and a refresh), not
        at every check.
        """
        fleet = Fleet()
        for agent_id in ("a", "b"):
            fleet.add(agent_id, ["x"], replicas=2).start()
        fleet.run(SETTLE + 10 * INTERVAL)
        paths = [f"{ROOT}/instances/x", *(f"{ROOT}/opinions/x/{a}" for a in "ab")]
        before = {path: fleet.server.nodes[path].version for path in paths}
        for second in range(240):
            for member in fleet.members.values():
                member.see("x", GROUP_LOADING if second % 2 else GROUP_UP)
            fleet.run(INTERVAL)
        windows = 240 // int(WINDOW) + 1
        for path in paths:
            written = fleet.server.nodes[path].version - before[path]
            self.assertGreater(written, 0, path)
            self.assertLessEqual(written, windows * (LIMIT + 1), path)

"""
A clean stop on a session reattached to lets the first round end first
(`sentinel.roundstop`): processes are publishers on a shared in-memory
ZooKeeper with a real state file, each beside a monitor that checks ``a``
0.1 s and ``b`` 0.6 s into its round, as the slices would.
"""

from __future__ import annotations

from typing import Any

import attr
from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall

from sentinel.config import RedisInstance
from sentinel.handoff import REFRESH_SHARE
from sentinel.privatefiles import write_private_file
from sentinel.roundstop import (
    FIRST_ROUND_WAIT,
    WaitingServices,
    first_round_before_stop,
)
from sentinel.session import decode_state, encode_state, state_path
from sentinel.stopping import STOP_DELETE_TIMEOUT
from tests.test_handoff import DISCOVERY, PURPOSE, HandoffTestCase, Process
from tests.test_publisher import DOWN, UP, path

# When the round's slices reach each instance.
ROUND = {"a": 0.1, "b": 0.6}


class SlicedMonitor(Service):
    """Checks each instance once, at its slice's time; a stop cancels the rest."""

    def __init__(self, process: Process, slices: dict[str, float]) -> None:
        self.process = process
        self.slices = slices
        self.pending: list[IDelayedCall] = []

    def startService(self) -> None:
        super().startService()
        clock = self.process.case.clock
        for name, at in self.slices.items():
            self.pending.append(clock.callLater(at, self.process.check, name, UP))

    def stopService(self) -> None:
        super().stopService()
        for call in self.pending:
            if call.active():
                call.cancel()


class Agent:
    """A process's services as the agent composes them (`make_agent`)."""

    def __init__(self, case: HandoffTestCase, slices: dict[str, float] = ROUND) -> None:
        self.case = case
        self.process = case.process()
        self.top = WaitingServices()
        self.process.publisher.setServiceParent(self.top)
        SlicedMonitor(self.process, slices).setServiceParent(self.top)
        self.top.before_stop.append(
            lambda: first_round_before_stop(case.clock, self.process.publisher, 1.5)
        )

    def start(self, connect: bool = True) -> None:
        self.top.startService()
        if connect:
            self.process.zk.connect()

    def stop(self) -> float:
        """SIGTERM; the seconds the stop took, then the process exits."""
        clock = self.case.clock
        began = clock.seconds()
        stopped: Deferred[Any] = self.top.stopService()  # type: ignore[assignment]
        ended: list[float] = []
        stopped.addCallback(lambda _: ended.append(clock.seconds()))
        for _ in range(int((FIRST_ROUND_WAIT + STOP_DELETE_TIMEOUT) / 0.05) + 2):
            if ended:
                break
            clock.advance(0.05)
        self.case.assertTrue(ended, "the stop did not end")
        self.case.server.drop(self.process.zk)
        return ended[0] - began


class FirstRoundStopTests(HandoffTestCase):
    def first(self) -> int | None:
        """A process that checked a and b, then stopped with SIGTERM: its session."""
        first = self.running()
        session = first.zk.session_id
        first.stop()
        return session

    def test_quick_restarts_keep_the_session(self) -> None:
        """
        Ten SIGTERM restarts in a row, each 0.3 s into the new process's
        round (before its slices reach ``b``), 2 s apart: each stop lets the
        round end (``b`` checked at 0.6 s), so the file's ``checked_at``
        follows the checks and every process reattaches; the nodes stay.
        Before, the stop came first, ``b`` was never checked, the file kept
        the first process's checks, and a start past 1.5 session timeouts
        closed the session (every node gone).
        """
        session = self.first()
        for _ in range(10):
            self.clock.advance(1.5)
            agent = Agent(self)
            agent.start()
            self.assertTrue(agent.process.handoff.reattached)
            self.assertEqual(agent.process.zk.session_id, session)
            self.assertEqual(agent.process.zk.closed_sessions, [])
            self.clock.advance(0.3)
            took = agent.stop()
            self.assertLessEqual(took, FIRST_ROUND_WAIT + STOP_DELETE_TIMEOUT)
            self.assertGreaterEqual(
                self.stored()["checked_at"], self.clock.seconds() - 1
            )
            self.assertIn(path("a"), self.server.nodes)
            self.assertIn(path("b"), self.server.nodes)

    def test_round_not_ended_in_time(self) -> None:
        """
        A round that does not end within its bound (``b`` never checked)
        holds the stop that long, and no longer: the file keeps the
        previous process's checks, for the crash-loop rule to judge, and
        names ``a``, checked since, for the next process's round.
        """
        self.first()
        checked_at = self.stored()["checked_at"]
        agent = Agent(self, {"a": ROUND["a"]})
        agent.start()
        self.clock.advance(0.3)
        took = agent.stop()
        self.assertGreaterEqual(took, FIRST_ROUND_WAIT)
        self.assertLess(took, FIRST_ROUND_WAIT + 0.1)
        self.assertEqual(self.stored()["checked_at"], checked_at)
        self.assertEqual(self.stored()["covered"], "a")

    def test_stop_before_the_reattach(self) -> None:
        """
        A SIGTERM before the session claimed is reattached to (the HTTP app
        answers first) waits for the reattach and the round: the file then
        says this process's checks. Before, such a process checked nothing,
        and ten of them in a row let the session be closed as stale.
        """
        self.first()
        checked_at = self.stored()["checked_at"]
        agent = Agent(self)
        agent.start(connect=False)
        self.clock.callLater(0.4, agent.process.zk.connect)
        took = agent.stop()
        self.assertTrue(agent.process.handoff.reattached)
        self.assertLess(took, FIRST_ROUND_WAIT)
        self.assertGreater(self.stored()["checked_at"], checked_at)

    def test_stop_while_the_claim_is_written(self) -> None:
        """
        A SIGTERM while the claim of the session left is being written
        (the file does not hold it yet) waits for it, the reattach and the
        round as well.
        """
        self.first()
        checked_at = self.stored()["checked_at"]
        agent = Agent(self)
        agent.process.worker.held = []
        agent.start(connect=False)
        self.assertTrue(agent.process.handoff.claiming)
        self.clock.callLater(0.2, agent.process.worker.release)
        self.clock.callLater(0.4, agent.process.zk.connect)
        agent.stop()
        self.assertTrue(agent.process.handoff.reattached)
        self.assertGreater(self.stored()["checked_at"], checked_at)

    def test_bound_counts_from_the_signal(self) -> None:
        """
        A stop that begins late after its signal (a busy reactor) waits
        that much less: the wait ends `FIRST_ROUND_WAIT` after the signal.
        """
        self.first()
        agent = Agent(self, {"a": ROUND["a"]})
        agent.start()
        self.clock.advance(0.3)
        publisher = agent.process.publisher
        publisher.signalled(self.clock.seconds() - 2.0)
        waited = first_round_before_stop(self.clock, publisher, 1.5)
        self.clock.advance(FIRST_ROUND_WAIT - 2.0 - 0.01)
        self.assertNoResult(waited)
        self.clock.advance(0.01)
        self.successResultOf(waited)

    def test_no_wait_when_the_session_is_not_handed_on(self) -> None:
        """
        A leave (``SIGUSR2``) deregisters at once: no wait for the round.
        """
        self.first()
        agent = Agent(self)
        agent.start()
        self.clock.advance(0.3)
        agent.process.publisher.leave()
        waited = first_round_before_stop(self.clock, agent.process.publisher, 1.5)
        self.successResultOf(waited)
        self.assertNoResult(agent.process.handoff.first_round_written())

    def test_no_wait_on_a_session_of_its_own(self) -> None:
        """A process that opened a new session has no round to finish."""
        agent = Agent(self)
        agent.start()
        self.clock.advance(0.3)
        self.successResultOf(agent.process.handoff.first_round_written())
        waited = first_round_before_stop(self.clock, agent.process.publisher, 1.5)
        self.successResultOf(waited)


class CarriedMonitor(SlicedMonitor):
    """
    Checks the instances at the times of `ROUND_OF_FOUR`, those the previous
    processes checked last (as `Monitor.launch_last` orders each slice),
    as the process starts (its claim read the file).
    """

    def __init__(self, process: Process) -> None:
        super().__init__(process, {})

    def startService(self) -> None:
        carried = self.process.handoff.carried
        names = sorted(self.process.states, key=lambda name: name in carried)
        self.slices = dict(zip(names, ROUND_OF_FOUR, strict=True))
        super().startService()


# Four instances whose round takes longer than a stop waits: a process
# stopped 0.3 s after its start checks the first two only.
ROUND_OF_FOUR = (0.1, 0.6, 3.0, 3.5)


class CarryTests(HandoffTestCase):
    """
    Processes each stopped before their round ends carry what they checked
    to the next (`sentinel.coverage`).
    """

    def setUp(self) -> None:
        super().setUp()
        self.instances = {
            name: RedisInstance(name, "10.0.0.1", 6379 + i)
            for i, name in enumerate("abcd")
        }

    def agent(self) -> Agent:
        """A process whose monitor checks the instances not carried first."""
        agent = Agent.__new__(Agent)
        agent.case = self
        agent.process = self.process()
        agent.top = WaitingServices()
        agent.process.publisher.setServiceParent(agent.top)
        CarriedMonitor(agent.process).setServiceParent(agent.top)
        agent.top.before_stop.append(
            lambda: first_round_before_stop(self.clock, agent.process.publisher, 1.5)
        )
        return agent

    def first(self) -> int | None:
        """A process that checked every instance, then stopped: its session."""
        first = self.process()
        first.start()
        for name in self.instances:
            first.check(name, UP)
        session = first.zk.session_id
        first.stop()
        return session

    def one_short_process(self) -> str:
        """
        After `first`, a process stopped 0.3 s after its start, which
        checked two instances: the file's ``covered``, naming them.
        """
        self.first()
        self.clock.advance(1.5)
        agent = self.agent()
        agent.start()
        self.clock.advance(0.3)
        agent.stop()
        covered: str = self.stored()["covered"]
        self.assertEqual(len(covered.split("/")), 2)
        return covered

    def test_short_processes_in_a_row_complete_a_round(self) -> None:
        """
        Ten SIGTERM restarts in a row, each process stopped 0.3 s after
        its start and so checking two of the four instances: each names
        them in the file, the next checks the other two first and counts
        the first two as checked, so every second process completes a
        round, the file's ``checked_at`` moves, and every process
        reattaches; the nodes stay. Before, no process completed a round,
        and a start 1.5 session timeouts after the first closed the
        session (every node gone).
        """
        session = self.first()
        rounds = []
        for _ in range(10):
            self.clock.advance(1.5)
            agent = self.agent()
            agent.start()
            handoff = agent.process.handoff
            self.assertTrue(handoff.reattached)
            self.assertEqual(agent.process.zk.session_id, session)
            self.assertEqual(agent.process.zk.closed_sessions, [])
            carried = set(handoff.carried)
            self.clock.advance(0.3)
            agent.stop()
            stored = self.stored()
            if stored.get("covered"):
                # Not a round: these two, the next process's last.
                self.assertEqual(len(stored["covered"].split("/")), 2)
                self.assertFalse(carried)
            else:
                self.assertEqual(len(carried), 2)
                self.assertGreaterEqual(stored["checked_at"], self.clock.seconds() - 3)
                rounds.append(self.clock.seconds())
            for name in self.instances:
                self.assertIn(path(name), self.server.nodes)
        self.assertEqual(len(rounds), 5)

    def test_carried_only_since_the_file_checked_at(self) -> None:
        """
        A file whose ``checked_at`` is not what the process counts from (the
        clock went back since, so it counts from its start) carries nothing:
        those checks are not known to be later than that.
        """
        self.one_short_process()
        self.clock.rightNow -= 3600.0
        agent = self.agent()
        agent.start()
        self.assertTrue(agent.process.handoff.reattached)
        self.assertEqual(set(agent.process.handoff.carried), set())

    def test_unbacked_and_unwritten_checks_not_carried(self) -> None:
        """
        A check ZooKeeper does not hold yet (its write unanswered), or a
        failure of an instance published up (fewer than ``fall``), is not
        named in the file: only a check that backs its node is.
        """
        self.first()
        self.clock.advance(1.5)
        process = self.process()
        process.start()
        process.fails_up("a")
        process.check("b", UP)
        process.zk.hold_answers("create", "set")
        process.check("c", DOWN)
        self.assertEqual(process.zk.document(path("a"))["status"], "up")
        self.successResultOf(process.handoff.save_checks())
        self.assertEqual(self.stored()["covered"], "b")

    def test_names_not_observed_count_for_nothing(self) -> None:
        """
        Names the file carries that this process does not observe (a
        hostile file, or a group member's share that changed) neither
        complete its round nor go on in the file.
        """
        session = self.first()
        stored = decode_state(self.stored_bytes(), PURPOSE)
        planted = frozenset({"a", "b", *(f"x{i}" for i in range(50))})
        write_private_file(
            state_path(self.directory),
            encode_state(attr.evolve(stored, covered=planted)),
        )
        self.clock.advance(1.5)
        process = self.process()
        process.start()
        self.assertEqual(process.zk.session_id, session)
        process.check("c", UP)
        self.assertNotIn("d", process.handoff.carried)
        self.assertNoResult(process.handoff.first_round_written())
        self.successResultOf(process.handoff.save_checks())
        self.assertEqual(self.stored()["covered"], "a/b/c")
        process.check("d", UP)
        self.assertNotIn("covered", self.stored())
        self.assertGreater(self.stored()["checked_at"], stored.checked_at)

    def stored_bytes(self) -> bytes:
        with open(state_path(self.directory), "rb") as f:
            return f.read()

    def test_carried_kept_until_anything_is_observed(self) -> None:
        """
        A write before the process observes anything (a group's first view
        not formed yet; here the session timeout granted anew at the
        reattach) keeps the names the file carried: nothing is known yet
        that would drop them. Before, that write emptied ``covered``, and
        the next process checked them all again.
        """
        carried = self.one_short_process()
        self.clock.advance(1.5)
        process = self.process(granted=6.0)
        observed: dict[str, object] = {}
        process.handoff.observed = lambda: observed
        process.start()
        self.assertTrue(process.handoff.reattached)
        self.assertEqual(self.stored()["session_timeout"], 6.0)
        self.assertEqual(self.stored()["covered"], carried)

    def checked_again(self) -> Process:
        """
        A process on a session of its own that checked every instance,
        then ``a`` again a second later, after the file's last write.
        """
        process = self.process()
        process.start()
        for name in self.instances:
            process.check(name, UP)
        self.clock.advance(1.0)
        process.check("a", UP)
        return process

    def test_stop_writes_the_last_checks(self) -> None:
        """
        A stop that hands the session on writes the file with its last
        checks, once their node writes ended: between two refreshes the
        file lagged them by up to a quarter of the session timeout, which
        the next start's crash-loop rule counted against the session.
        """
        process = self.checked_again()
        checked = self.clock.seconds()
        self.assertLess(self.stored()["checked_at"], checked)
        process.stop()
        self.assertEqual(self.stored()["checked_at"], checked)
        self.assertIn(("leave_open", ""), process.zk.history)

    def test_stop_says_its_checked_at_is_exact(self) -> None:
        """
        The stop's write of its last checks says so (``checked_at_exact``;
        a refresh while running does not), and the next process, before
        its own checks, counts the nodes unchecked from that
        ``checked_at`` with no lag off. Before, it took a quarter of the
        session timeout off, and a restarted primary held an old verdict
        that much longer.
        """
        process = self.checked_again()
        self.assertNotIn("checked_at_exact", self.stored())
        process.stop()
        stored = self.stored()
        self.assertIs(stored["checked_at_exact"], True)
        self.clock.advance(1.5)
        again = self.process()
        again.start()
        self.assertTrue(again.handoff.reattached)
        now = self.clock.seconds()
        self.assertEqual(again.handoff.unchecked_for(now), now - stored["checked_at"])

    def test_file_without_exact_lags(self) -> None:
        """
        A file that does not say its ``checked_at`` is exact (an older
        version's, or a process killed between refreshes) is counted as
        before: a quarter of the session timeout off, what it may lag.
        """
        self.checked_again().stop()
        stored = decode_state(self.stored_bytes(), PURPOSE)
        self.assertTrue(stored.checked_at_exact)
        write_private_file(
            state_path(self.directory),
            encode_state(attr.evolve(stored, checked_at_exact=False)),
        )
        self.clock.advance(1.5)
        again = self.process()
        again.start()
        now = self.clock.seconds()
        lag = REFRESH_SHARE * again.handoff.session_timeout
        self.assertEqual(
            again.handoff.unchecked_for(now), now - (stored.checked_at or 0) - lag
        )

    def test_stop_hands_over_while_its_last_write_is_slow(self) -> None:
        """
        A stop whose write of its last checks has not ended by the hand-over's
        bound (a slow disk: the write syncs the file and its directory)
        still leaves the session open, nodes and all: the file as last
        written holds the session, and that write, atomic and of this
        process's own file, can only replace it with a newer one. Before,
        the stop took it for a write the handoff waited on, and deleted
        every node and closed the session instead.
        """
        process = self.checked_again()
        process.worker.held = []
        stopped = process.publisher.stopService()
        self.clock.advance(STOP_DELETE_TIMEOUT)
        self.successResultOf(stopped)
        self.assertIn(("leave_open", ""), process.zk.history)
        for name in self.instances:
            self.assertIn(path(name), self.server.nodes)
        process.worker.release()

    def test_stop_waits_for_a_rewrite_in_flight(self) -> None:
        """
        A write in flight that is more than a refresh (a discovery parent
        recorded) and has not ended by the hand-over's bound still makes
        the stop deregister: the file may not say yet where the session
        holds members.
        """
        process = self.checked_again()
        process.worker.held = []
        process.handoff.record_parent(f"{DISCOVERY}/elsewhere")
        stopped = process.publisher.stopService()
        self.clock.advance(STOP_DELETE_TIMEOUT)
        self.clock.advance(STOP_DELETE_TIMEOUT)
        self.successResultOf(stopped)
        self.assertNotIn(("leave_open", ""), process.zk.history)
        self.assertNotIn(path("a"), self.server.nodes)
        process.worker.release()

    def test_stop_waits_for_the_node_writes(self) -> None:
        """
        A stop that hands the session on leaves it only once the node
        writes in flight have ended (`STOP_DELETE_TIMEOUT` at most), as
        the stop's module says: the last status changes reach ZooKeeper
        first. Since the stop wrote the file with its last checks once
        those writes ended or half that bound passed, it waited no longer
        than that file's write: a write answered 0.7 s into the stop was
        cut off by the session left.
        """
        process = self.checked_again()
        process.zk.hold_answers("set")
        process.check("b", DOWN)
        stopped = process.publisher.stopService()
        self.clock.advance(0.7)
        self.assertNoResult(stopped)
        process.zk.release("set")
        self.clock.advance(0.05)
        self.successResultOf(stopped)
        self.assertIn(("leave_open", ""), process.zk.history)
        self.assertEqual(process.zk.document(path("b"))["status"], "down")

"""
Tests for `sentinel.heartbeats`: the members' agent nodes asked about at
each heartbeat, and a bug of ours in that round never ending the loop.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sentinel.heartbeats import MemberHeartbeats
from sentinel.zk import CONNECTED


class AnsweringZooKeeper:
    """Connected; every ``exists`` answers at once, with no node."""

    state = CONNECTED

    def __init__(self) -> None:
        self.asked: list[str] = []

    def exists(self, path: str, ahead: bool = False) -> Any:
        self.asked.append(path)
        return succeed(None)


class LoopTests(SynchronousTestCase):
    """The heartbeat loop goes on whatever one round meets."""

    def test_bug_in_relied_on_logged_and_loop_goes_on(self) -> None:
        """
        The members relied on cannot be computed (a bug of ours): the
        failure is logged, and the next heartbeat asks as usual: the
        LoopingCall, which a raise would stop for good, keeps running.
        """
        clock = Clock()
        zk = AnsweringZooKeeper()
        calls = []

        def relied_on() -> Counter[str]:
            calls.append(clock.seconds())
            if len(calls) == 1:
                raise KeyError("a bug")
            return Counter({"b": 3})

        heartbeats = MemberHeartbeats(clock, zk, "/sentinel", 10.0, relied_on)  # type: ignore[arg-type]
        heartbeats.start()
        clock.advance(10.0)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertEqual(zk.asked, [])
        clock.advance(10.0)
        self.assertEqual(calls, [10.0, 20.0])
        self.assertEqual(zk.asked, ["/sentinel/agents/b"])
        heartbeats.stop()

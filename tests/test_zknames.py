"""The listed ZooKeeper names, looked up without holding kazoo's thread."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from sentinel.zknames import ListedNames

HUNG = ("zk-hung.example.com", 2181)
GOOD = ("zk-1.example.com", 2181)
ADDRESS = ("127.0.0.1", 2182)


class FakeClient:
    """What `ListedNames.expand` reads of a kazoo client."""

    def __init__(self, *hosts: tuple[str, int]) -> None:
        self.hosts = list(hosts)
        self.randomize_hosts = False
        self.warnings: list[str] = []
        self.logger = logging.getLogger("test-zknames")
        self.logger.propagate = False
        handler = logging.Handler()
        handler.emit = lambda record: self.warnings.append(record.getMessage())  # type: ignore[method-assign]
        self.logger.handlers = [handler]


class Lookups:
    """getaddrinfo's answers by name; the lookups asked, run when the test says."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str] | Exception] = {GOOD[0]: ["10.0.0.1"]}
        self.asked: list[str] = []
        self.waiting: list[Callable[[], None]] = []

    def lookup(self, host: str, port: int, *args: Any) -> list[Any]:
        self.asked.append(host)
        answer = self.answers[host]
        if isinstance(answer, Exception):
            raise answer
        return [(socket.AF_INET, 0, 0, "", (a, port)) for a in answer]

    def run_all(self) -> None:
        waiting = list(self.waiting)
        self.waiting.clear()
        for run in waiting:
            run()


class ListedNamesTests(SynchronousTestCase):
    """Each name looked up on its own, a round waiting for it within bounds."""

    def setUp(self) -> None:
        self.lookups = Lookups()
        # Lookups run only when the test says: a hung DNS server, on demand.
        self.names = ListedNames(
            self.lookups.lookup, wait=0.0, start=self.lookups.waiting.append
        )

    def test_answered_names_and_addresses(self) -> None:
        """
        A name answered within the wait gives its addresses; an address
        is used as it is, never looked up.
        """
        names = ListedNames(self.lookups.lookup, wait=0.0, start=lambda run: run())
        client = FakeClient(GOOD, ADDRESS)
        self.assertEqual(
            names.expand(client),
            [(GOOD[0], "10.0.0.1", 2181), (ADDRESS[0], ADDRESS[0], ADDRESS[1])],
        )
        self.assertEqual(self.lookups.asked, [GOOD[0]])

    def test_a_name_that_never_answers_is_left_out(self) -> None:
        """
        A name whose lookup does not answer within the wait is left out of
        the round, with a warning naming it; the next round starts no
        second lookup of it; once it answers, the round after uses it.
        """
        self.lookups.answers[HUNG[0]] = ["10.0.0.9"]
        client = FakeClient(HUNG, ADDRESS)
        expected_address = [(ADDRESS[0], ADDRESS[0], ADDRESS[1])]
        self.assertEqual(self.names.expand(client), expected_address)
        self.assertEqual(
            client.warnings,
            [f"Cannot resolve {HUNG[0]} within 0 s: left out of this round"],
        )
        self.assertEqual(self.names.expand(client), expected_address)
        self.assertEqual(len(self.lookups.waiting), 1)
        self.lookups.run_all()
        self.assertEqual(
            self.names.expand(client),
            [(HUNG[0], "10.0.0.9", 2181), *expected_address],
        )

    def test_last_answer_used_while_a_lookup_hangs(self) -> None:
        """
        A name answered before is used at its last addresses while its
        new lookup hangs (a DNS outage): reconnects do not wait for it.
        """
        client = FakeClient(GOOD)
        self.names.expand(client)
        self.lookups.run_all()
        self.assertEqual(self.names.expand(client), [(GOOD[0], "10.0.0.1", 2181)])
        self.assertEqual(self.names.expand(client), [(GOOD[0], "10.0.0.1", 2181)])
        self.assertEqual(len(self.lookups.waiting), 1)

    def test_a_name_that_does_not_resolve_is_left_out(self) -> None:
        """A name the resolver refuses is left out, with its error, as kazoo does."""
        self.lookups.answers[HUNG[0]] = socket.gaierror(-2, "Name or service not known")
        client = FakeClient(HUNG, ADDRESS)
        self.names.expand(client)
        self.lookups.run_all()
        self.assertEqual(
            self.names.expand(client), [(ADDRESS[0], ADDRESS[0], ADDRESS[1])]
        )
        self.assertEqual(
            client.warnings[-1],
            f"Cannot resolve {HUNG[0]}: [Errno -2] Name or service not known",
        )

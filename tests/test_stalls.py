"""The addresses whose connection attempts time out, on their own."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from sentinel.stalls import StalledAddresses

ADDRESS = ("10.0.0.1", 6379)


class StalledAddressesTests(SynchronousTestCase):
    """One attempt at a time to a stalled address, forgotten with its users."""

    def stalled(self) -> StalledAddresses:
        stalls = StalledAddresses()
        self.assertTrue(stalls.admit(ADDRESS, "p1"))
        self.assertTrue(stalls.admit(ADDRESS, "p2"))  # Nothing stalled yet.
        stalls.timed_out(ADDRESS, "p1", None)
        return stalls

    def test_one_attempt_at_a_time(self) -> None:
        """
        After a timeout, the first to ask holds the one attempt; the others
        are held back until it ends, saying nothing or timing out again.
        """
        stalls = self.stalled()
        self.assertTrue(stalls.admit(ADDRESS, "p2"))
        self.assertTrue(stalls.admit(ADDRESS, "p2"))  # Asked again: its own.
        self.assertFalse(stalls.admit(ADDRESS, "p1"))
        self.assertFalse(stalls.admit(ADDRESS, "p3"))
        stalls.ended(ADDRESS, "p3")  # Not the one attempt: nothing changes.
        self.assertFalse(stalls.admit(ADDRESS, "p1"))
        stalls.ended(ADDRESS, "p2")
        self.assertTrue(stalls.admit(ADDRESS, "p1"))
        stalls.timed_out(ADDRESS, "p1", None)
        self.assertTrue(stalls.admit(ADDRESS, "p3"))
        self.assertFalse(stalls.admit(ADDRESS, "p1"))
        self.assertEqual(stalls.spared, 4)

    def test_answered(self) -> None:
        """An answer from the address forgets it: every attempt may start."""
        stalls = self.stalled()
        self.assertTrue(stalls.admit(ADDRESS, "p2"))
        stalls.answered(ADDRESS)
        self.assertEqual(len(stalls), 0)
        self.assertTrue(stalls.admit(ADDRESS, "p1"))

    def test_other_addresses(self) -> None:
        """Another address, or another port, is not held back."""
        stalls = self.stalled()
        self.assertTrue(stalls.admit(ADDRESS, "p2"))
        self.assertTrue(stalls.admit(("10.0.0.1", 6380), "p1"))
        self.assertTrue(stalls.admit(("10.0.0.2", 6379), "p1"))
        self.assertEqual(len(stalls), 1)

    def test_forgotten_when_its_users_leave(self) -> None:
        """
        Kept while an instance that met it is left, however many times it
        asked; the one attempt's holder leaving lets another go.
        """
        stalls = self.stalled()
        self.assertTrue(stalls.admit(ADDRESS, "p2"))
        for _ in range(3):
            stalls.admit(ADDRESS, "p3")
        stalls.left(ADDRESS, "p2")
        self.assertTrue(stalls.admit(ADDRESS, "p3"))
        stalls.left(ADDRESS, "p1")
        stalls.left(ADDRESS, "p3")
        self.assertEqual(len(stalls), 0)
        stalls.left(ADDRESS, "p3")  # Gone already: nothing to do.
        self.assertEqual(len(stalls), 0)

    def test_failing_follows_the_last_timeout(self) -> None:
        """
        What a new connection to a stalled address meets is the error of
        its last timeout while the agent kept up; one while it ran late
        says nothing, and an answer forgets the address.
        """
        stalls = StalledAddresses()
        self.assertIsNone(stalls.failing(ADDRESS))
        stalls.timed_out(ADDRESS, "p1", "timeout (connect)")
        self.assertEqual(stalls.failing(ADDRESS), "timeout (connect)")
        stalls.timed_out(ADDRESS, "p2", None)
        self.assertIsNone(stalls.failing(ADDRESS))
        stalls.timed_out(ADDRESS, "p1", "timeout (connect)")
        stalls.answered(ADDRESS)
        self.assertIsNone(stalls.failing(ADDRESS))

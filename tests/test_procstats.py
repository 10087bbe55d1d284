"""Process figures when ``/proc`` cannot be read, and in a forked daemon."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from typing import Any

import psutil
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from sentinel import procstats
from sentinel.descriptors import RECOUNT
from sentinel.process import ProcessPolicy
from sentinel.procstats import ProcessMetrics, open_fds, own_process, rss_bytes


def no_descriptor(*args: object) -> Any:
    """What reading ``/proc`` gives a process out of descriptors."""
    raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))


class OutOfDescriptors:
    """A psutil process whose every read needs a descriptor it cannot open."""

    cpu_times = memory_info = create_time = num_fds = staticmethod(no_descriptor)

    @contextlib.contextmanager
    def oneshot(self) -> Iterator[None]:
        yield


class OutOfDescriptorsTests(SynchronousTestCase):
    def setUp(self) -> None:
        # Before Linux 6.2 the count comes from listing the directory.
        self.patch(procstats.os, "stat", no_descriptor)

    def test_figures_unknown(self) -> None:
        """The descriptor count and RSS are None, not an error."""
        process: Any = OutOfDescriptors()
        self.assertIsNone(open_fds(process))
        self.assertIsNone(rss_bytes(process))

    def test_metrics_leave_out_what_cannot_be_read(self) -> None:
        """/metrics still answers, with the families that need no /proc."""
        process: Any = OutOfDescriptors()
        names = [family.name for family in ProcessMetrics(process).collect()]
        self.assertEqual(names, ["process_max_fds"])


class AfterAForkTests(SynchronousTestCase):
    """
    The agent is made before twistd forks its daemon: the figures must be
    the daemon's, not those of the parent that made it and exited.
    """

    def setUp(self) -> None:
        # Another live process stands for the daemon: os.getpid() says it.
        self.other = psutil.Popen(["sleep", "60"])
        self.addCleanup(self.other.wait)
        self.addCleanup(self.other.kill)

    def test_metrics_are_the_forked_process(self) -> None:
        """/metrics made before the fork reads the process it runs in."""
        metrics = ProcessMetrics()
        self.patch(procstats.os, "getpid", lambda: self.other.pid)
        started = {
            family.name: family.samples[0].value for family in metrics.collect()
        }["process_start_time_seconds"]
        self.assertEqual(started, self.other.create_time())

    def test_own_process_follows_the_pid(self) -> None:
        """own_process is made again once this process's pid changes."""
        before = own_process()
        self.assertEqual(before.pid, os.getpid())
        self.patch(procstats.os, "getpid", lambda: self.other.pid)
        self.assertEqual(own_process().pid, self.other.pid)


class MadeAtStartTests(SynchronousTestCase):
    """The handle is made when the agent starts, after twistd's fork."""

    def test_made_at_start_kept_out_of_descriptors(self) -> None:
        """
        Started, the process policy makes the handle while descriptors are
        to spare: a process out of them later still reads its memory.
        """
        self.patch(procstats, "_own", None)
        clock = Clock()
        policy = ProcessPolicy(clock, 1, monotonic=clock.seconds)
        policy.startService()
        self.addCleanup(policy.stopService)
        self.patch(procstats.psutil, "Process", no_descriptor)
        self.assertIsNotNone(rss_bytes(own_process()))


class HandleOutOfDescriptorsTests(SynchronousTestCase):
    """
    The handle is made at its first use in a process (after twistd's
    fork), which may come when the process is out of descriptors: psutil
    reads ``/proc/PID/stat`` to make it, and that open fails.
    """

    def setUp(self) -> None:
        self.patch(procstats, "_own", None)
        self.patch(procstats.psutil, "Process", no_descriptor)

    def test_renewal_counts_by_stat(self) -> None:
        """
        The spare-descriptor count, asked in a check that renews its
        connection, takes the count from ``/proc/self/fd``'s size, which
        needs no descriptor, and raises nothing into the check; nor does
        it when that cannot be read either (no count: not refused).
        """
        clock = Clock()
        spare = ProcessPolicy(clock, 1).spare_descriptors()
        self.assertTrue(spare.take())
        self.patch(procstats.os, "stat", no_descriptor)
        clock.advance(RECOUNT)
        self.assertTrue(spare.take())

    def test_metrics_leave_out_what_cannot_be_read(self) -> None:
        """/metrics still answers, with the families that need no handle."""
        names = [family.name for family in ProcessMetrics().collect()]
        self.assertIn("process_open_fds", names)
        self.assertIn("process_max_fds", names)

    def test_figures_unknown(self) -> None:
        """Without a handle, what needs one is None, not an error."""
        self.patch(procstats.os, "stat", no_descriptor)
        self.assertIsNone(open_fds(own_process()))
        self.assertIsNone(rss_bytes(own_process()))

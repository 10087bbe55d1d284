"""The listings readers of ZooKeeper take whole, against their clients' limit."""

from __future__ import annotations

from twisted.logger import LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from sentinel.config import RedisInstance, ZooKeeperConfig
from sentinel.readers import (
    JAVA_READER_LIMIT,
    WARN_ABOVE,
    listing_sizes,
    warn_of_long_listings,
)

HOSTS = "127.0.0.1:2181"


def instances(
    count: int, length: int, service: str | None = None
) -> list[RedisInstance]:
    """`count` instances whose names are `length` bytes long."""
    return [
        RedisInstance(f"{i:06d}".ljust(length, "x"), "10.0.0.1", 6379, service=service)
        for i in range(count)
    ]


class ListingSizeTests(SynchronousTestCase):
    def test_instances(self) -> None:
        """
        ``{root}/instances`` costs each name's UTF-8 bytes and 4; without
        discovery, nothing else is listed.
        """
        sizes = listing_sizes(
            ZooKeeperConfig(HOSTS, root="/r"),
            [RedisInstance("abc", "h", 1), RedisInstance("\u00e9t\u00e9", "h", 2)],
        )
        self.assertEqual(sizes, {"/r/instances": (4 + 3) + (4 + 5)})

    def test_members(self) -> None:
        """
        Each discovery service lists a member per instance, named in the
        form's way with ZooKeeper's counter at its longest: eleven
        characters once the counter has wrapped (it was counted as ten).
        """
        cache = [
            RedisInstance("cache-1", "h", 1, service="cache"),
            RedisInstance("cache-2", "h", 2, service="cache"),
            RedisInstance("db", "h", 3),
        ]
        serverset = listing_sizes(
            ZooKeeperConfig(HOSTS, discovery="serverset", discovery_root="/d"), cache
        )
        member = 4 + len("member_-2147483648")
        self.assertEqual(serverset["/d/cache"], 2 * member)
        self.assertEqual(serverset["/d/db"], member)
        nerve = listing_sizes(
            ZooKeeperConfig(HOSTS, discovery="nerve", discovery_root="/d"), cache
        )
        self.assertEqual(nerve["/d/cache"], 2 * (4 + len("cache-1_-2147483648")))


class WarningTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.warnings: list[str] = []

        def observe(event: LogEvent) -> None:
            if event.get("log_level") == LogLevel.warn:
                self.warnings.append(formatEvent(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def test_long_instances_listing_warned(self) -> None:
        """
        30,000 instances of 30-byte names make ``{root}/instances`` longer
        than a Java reader takes by default: one warning names it, its
        size, the limit and what readers must do.
        """
        zookeeper = ZooKeeperConfig(HOSTS)
        long = warn_of_long_listings(zookeeper, instances(30_000, 30))
        self.assertEqual(long, ["/sentinel/instances"])
        [warning] = self.warnings
        self.assertIn("/sentinel/instances lists about 1,020,000 bytes", warning)
        self.assertIn(f"{JAVA_READER_LIMIT:,} bytes", warning)
        self.assertIn("-Djute.maxbuffer=2097152", warning)

    def test_long_service_warned(self) -> None:
        """A discovery service of 48,000 serverset members is warned of."""
        zookeeper = ZooKeeperConfig(HOSTS, discovery="serverset")
        long = warn_of_long_listings(zookeeper, instances(48_000, 8, service="big"))
        self.assertEqual(long, ["/discovery/big"])
        self.assertEqual(len(self.warnings), 1)

    def test_short_listings_not_warned(self) -> None:
        """Listings up to `WARN_ABOVE` bytes log nothing."""
        zookeeper = ZooKeeperConfig(HOSTS, discovery="nerve")
        names = instances(WARN_ABOVE // 100, 96)
        self.assertEqual(
            listing_sizes(zookeeper, names)["/sentinel/instances"], WARN_ABOVE
        )
        self.assertEqual(warn_of_long_listings(zookeeper, names), [])
        self.assertEqual(self.warnings, [])

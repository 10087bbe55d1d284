"""sentinel: a health agent for Redis fleets that publishes to ZooKeeper."""

__version__ = "0.1.0"

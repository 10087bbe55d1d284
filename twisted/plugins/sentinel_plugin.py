"""
The twistd dropin for ``twistd sentinel``; it imports nothing heavy so that
``twistd --reactor=...`` still chooses the reactor.
"""

from twisted.application.service import ServiceMaker

sentinel = ServiceMaker(
    "sentinel",
    "sentinel.tap",
    "Check Redis instances and publish their health to ZooKeeper.",
    "sentinel",
)

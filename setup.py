"""Packaging for sentinel, a Twisted health agent for Redis fleets."""

import re
from pathlib import Path

from setuptools import find_packages, setup


def read_version() -> str:
    """Read ``__version__`` without importing the package (and its deps)."""
    text = Path(__file__).with_name("sentinel").joinpath("__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    if match is None:
        raise RuntimeError("no __version__ in sentinel/__init__.py")
    return match.group(1)


setup(
    # "sentinel" is taken on the package index by an unrelated project; the
    # import package, `twistd sentinel` and the commands keep the name.
    name="txsentinel",
    version=read_version(),
    description="Check Redis instances and publish their health to ZooKeeper.",
    long_description=Path(__file__).with_name("README.rst").read_text(),
    long_description_content_type="text/x-rst",
    license="MIT",
    license_files=["LICENSE"],
    python_requires=">=3.11",
    # twisted.plugins is a namespace shared with Twisted itself: it ships our
    # dropin, and must have no __init__.py of ours.
    packages=find_packages(exclude=["tests", "tests.*"]) + ["twisted.plugins"],
    install_requires=[
        # tls: pyOpenSSL, service_identity and cryptography, for Redis over
        # TLS with verified certificates.
        "twisted[tls]>=24.3",
        # load_pem_x509_certificates (CA bundles) is new in 39, and a
        # certificate's not_valid_after_utc (why a chain did not verify) in 42.
        "cryptography>=42",
        "txredisapi>=1.6.0",
        "klein>=23.5",
        "attrs>=23.1",
        "kazoo>=2.9",
        "prometheus_client>=0.17",
        "psutil>=5.9",
    ],
    entry_points={
        "console_scripts": [
            # The agent without Twisted's plugin cache (see sentinel/cli.py).
            "sentinel-agent = sentinel.cli:agent",
            "sentinel-status = sentinel.status:main",
        ],
    },
    extras_require={
        "test": [
            "treq>=23.11",
            # README.rst, docs/ and BENCHMARKS.rst render as written
            # (tests/test_docs.py).
            "docutils>=0.19",
            "mypy>=2.0",
            # Type-checks zope.interface declarations (reactor interfaces).
            "mypy-zope>=1.0.3",
            "ruff>=0.17",
        ],
    },
)

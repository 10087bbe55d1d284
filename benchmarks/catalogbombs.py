"""
What a hostile catalog costs one reader, in one process: each of the
catalogs ``poison.py --attacks livebomb`` writes in a live fake member's
name, read as a member reads it (parts fed in order, then decoded a
slice at a time, each step timed on the CPU clock), with room for
1,000,000 names where the decoder takes a limit.

Printed per catalog: what it was refused for, the steps (reactor turns
in the agent), their CPU and the longest, and the process's RSS after
it and at its peak so far (the peak reset before the first catalog).

    .venv/bin/python benchmarks/catalogbombs.py [--checkout DIR]

``--checkout`` imports ``sentinel`` from another tree than this
script's (a ``git archive`` of the commit before, say) to measure it the
same way.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import inspect
import re
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOM = 1_000_000
LIMIT = 64 * 1024 * 1024
PART = 512 * 1024
HEAD = b'{"replicas":2,"quorum":2,"instances":['


def catalogs() -> list[tuple[str, str, list[bytes]]]:
    """(what, digest, parts) of each hostile catalog, as poison.py's."""
    packer = zlib.compressobj(9)
    block = bytes(1 << 20)
    over = b"".join(packer.compress(block) for _ in range(1024)) + packer.flush()
    found = [("1 GB of zeros", "0123456789abcdef", [over])]
    repeats = (LIMIT - len(HEAD) - 2) // 4
    for what, encoded in (
        ("64 MB of zeros", bytes(LIMIT - 16)),
        (f'"a" {repeats:,} times', HEAD + b",".join([b'"a"'] * repeats) + b"]}"),
        (
            "2,000,000 names",
            HEAD + b",".join(b'"%08x"' % i for i in range(2_000_000)) + b"]}",
        ),
    ):
        packed = zlib.compress(encoded, 9)
        parts = [packed[i : i + PART] for i in range(0, len(packed), PART)]
        digest = hashlib.blake2b(encoded, digest_size=8).hexdigest()
        found.append((what, digest, parts))
    return found


def memory() -> tuple[int, int]:
    """The process's RSS and peak RSS, in MB."""
    status = Path("/proc/self/status").read_text()
    rss, peak = (
        int(re.search(rf"{k}:\s+(\d+)", status)[1]) for k in ("VmRSS", "VmHWM")
    )  # type: ignore[index]  # noqa: E501
    return rss // 1024, peak // 1024


def read(
    catalog_module: Any, digest: str, parts: list[bytes]
) -> tuple[str, list[float]]:
    """Read one catalog as a member does: why it was refused, each step's CPU."""
    decoder_class = catalog_module.CatalogDecoder
    sliced = hasattr(decoder_class, "inflate")
    limited = "max_names" in inspect.signature(decoder_class).parameters
    decoder = (
        decoder_class(digest, max_names=ROOM) if limited else decoder_class(digest)
    )
    steps: list[float] = []

    def step(work: Callable[[], Any]) -> Any:
        began = time.process_time()
        try:
            return work()
        finally:
            steps.append(time.process_time() - began)

    try:
        for part in parts:
            if sliced:
                inflating = decoder.inflate(part)
                while (
                    step(lambda i=inflating: next(i, StopIteration))
                    is not StopIteration
                ):
                    pass
            else:
                step(lambda p=part: decoder.feed(p))
        names = decoder.decode()
        while (catalog := step(lambda: catalog_module.decode_slice(names))) is None:
            pass
        return f"read: {len(catalog.names):,} names", steps
    except catalog_module.BadCatalog as e:
        return f"refused: {e}", steps


def main() -> None:
    """Read each catalog, print a line each."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkout",
        default=str(Path(__file__).resolve().parent.parent),
        help="import sentinel from this tree (this script's own by default)",
    )
    options = parser.parse_args()
    sys.path.insert(0, str(Path(options.checkout).resolve()))
    from sentinel import catalog as catalog_module

    made = catalogs()
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # Reset the peak RSS.
    print(f"sentinel from {Path(catalog_module.__file__).parent}, RSS {memory()[0]} MB")
    for what, digest, parts in made:
        why, steps = read(catalog_module, digest, parts)
        gc.collect()
        rss, peak = memory()
        print(
            f"{what:22} {why[:40]:40} steps {len(steps):5}  CPU {sum(steps):.2f} s"
            f"  longest {max(steps) * 1000:4.0f} ms  RSS {rss} MB, peak {peak} MB"
        )


if __name__ == "__main__":
    main()

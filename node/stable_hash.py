"""A stable hash of a name into a row: the same on every machine, process and Python version
(Python's own hash() is salted per process)."""

from __future__ import annotations

import hashlib


def stable_row(name: str, rows: int, salt: bytes = b"") -> int:
    """The row of `name` in a table of `rows`; `salt` (at most 16 bytes) separates uses."""
    digest = hashlib.blake2b(name.encode(), digest_size=8, person=salt[:16]).digest()
    return int.from_bytes(digest, "little") % rows

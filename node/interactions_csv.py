"""Interactions as CSV, read in batches: `user,item[,timestamp]` per line.

A header is recognised by its names (user, item, optionally timestamp or time), never guessed
from a field that is not a number: a row like "-1,5" is an error, not a skipped header. Users
and times are plain ASCII digits (not "+5", "31_337" or other scripts' digits); items are the
user's own ids (node/catalogue.py); every error names the file's line. Fields and lines are
bounded, so a file with no line breaks (/dev/zero) is refused at once.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from gossiprec.node.catalogue import MAX_ID_LENGTH, check_item_id
from gossiprec.node.errors import IngestError

INGEST_BATCH = 5_000  # rows per request: well under the control API's 1 MB request limit
MAX_FIELD = MAX_ID_LENGTH  # characters: an item id; 2^62 has 19 digits
MAX_LINE = 512
HEADER = {("user", "item"), ("user", "item", "timestamp"), ("user", "item", "time")}
DIGITS = re.compile(r"[0-9]{1,19}")


def read_csv(path: Path, batch: int) -> Iterator[list[list[int | str]]]:
    """Rows of user,item[,timestamp] in batches of `batch`."""
    rows: list[list[int | str]] = []
    line = 0
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            for line, record in enumerate(_records(handle), 1):
                if not record or (line == 1 and tuple(f.strip().lower() for f in record) in HEADER):
                    continue
                rows.append(_row(path, line, record))
                if len(rows) == batch:
                    yield rows
                    rows = []
    except OSError as exc:
        raise IngestError(f"cannot read {path}: {exc.strerror}") from exc
    except (csv.Error, UnicodeDecodeError) as exc:
        raise IngestError(f"{path}:{line + 1}: not CSV text ({exc}). Fix that line.") from exc
    if rows:
        yield rows


def _records(handle: TextIO) -> Iterator[list[str]]:
    limit = csv.field_size_limit(MAX_FIELD * 4)  # a field past this is no id: stop reading
    try:
        yield from csv.reader(_lines(handle))
    finally:
        csv.field_size_limit(limit)


def _lines(handle: TextIO) -> Iterator[str]:
    """Lines of at most MAX_LINE characters: a file without line breaks is not read whole."""
    while line := handle.readline(MAX_LINE + 1):
        if len(line) > MAX_LINE:
            raise csv.Error(f"a line longer than {MAX_LINE} characters")
        yield line


def _row(path: Path, line: int, record: list[str]) -> list[int | str]:
    fields = [field.strip() for field in record]
    numbers = [fields[0], *fields[2:]]
    if not 2 <= len(fields) <= 3 or not all(DIGITS.fullmatch(f) for f in numbers):
        shown = ",".join(record)[:80]
        raise IngestError(f"{path}:{line}: {shown!r} is not user,item[,timestamp] with the "
                          "user and time as non-negative integers. Fix that line.")  # fmt: skip
    if any(int(value) >= 2**62 for value in numbers):
        raise IngestError(f"{path}:{line}: users and times must be below 2^62. Fix that line.")
    try:
        item = check_item_id(fields[1])
    except IngestError as error:
        raise IngestError(f"{path}:{line}: {error}. Fix that line.") from None
    return [int(fields[0]), item, *(int(f) for f in fields[2:])]

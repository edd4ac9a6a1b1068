"""Interactions as CSV (user,item[,timestamp] per line, header optional), read in batches."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from gossiprec.node.errors import IngestError

INGEST_BATCH = 5_000  # rows per request: well under the control API's 1 MB request limit


def read_csv(path: Path, batch: int) -> Iterator[list[list[int]]]:
    """Rows of user,item[,timestamp] in batches; a header line is skipped."""
    rows: list[list[int]] = []
    try:
        with path.open(newline="") as handle:
            for line, record in enumerate(csv.reader(handle), 1):
                if not record or (line == 1 and not record[0].strip().isdigit()):
                    continue
                try:
                    values = [int(field) for field in record[:3]]
                except ValueError:
                    raise IngestError(f"{path}:{line}: {record!r} is not user,item[,timestamp] "
                                      "as integers. Fix that line.") from None  # fmt: skip
                if len(values) < 2:
                    raise IngestError(f"{path}:{line}: needs at least user,item")
                rows.append(values)
                if len(rows) == batch:
                    yield rows
                    rows = []
    except OSError as exc:
        raise IngestError(f"cannot read {path}: {exc.strerror}") from exc
    if rows:
        yield rows

"""A catalogue file for `gossiprec ingest --items`: CSV with a header, or JSON lines.

CSV: the header names the fields, one of them `id`; a field holding several values separates
them with "|" ("Action|Comedy"); a field named `text` is free text (its words become features).
JSON lines: one object per line, {"id": ..., "genre": ["Action", "Comedy"], "text": ...}.
Entries come in batches of `batch` dicts; every error names the file's line.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gossiprec.node.errors import IngestError

ITEMS_BATCH = 2_000  # entries per control request: well under its 1 MB limit
MAX_ITEM_LINE = 20_000  # characters: an entry with a long description still fits


def read_items(path: Path, batch: int) -> Iterator[list[dict[str, Any]]]:
    entries: list[dict[str, Any]] = []
    line = 0
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = _json_lines(handle) if path.suffix in (".jsonl", ".json") else _csv(handle)
            for line, entry in reader:
                if "id" not in entry or entry["id"] in (None, ""):
                    raise IngestError(f"{path}:{line}: an entry without an id. Fix that line.")
                entries.append(entry)
                if len(entries) == batch:
                    yield entries
                    entries = []
    except OSError as exc:
        raise IngestError(f"cannot read {path}: {exc.strerror}") from exc
    except (csv.Error, UnicodeDecodeError, ValueError) as exc:
        raise IngestError(f"{path}:{line + 1}: not a catalogue entry ({exc}). Fix that "
                          "line.") from exc  # fmt: skip
    if entries:
        yield entries


def _lines(handle: Any) -> Iterator[str]:
    while text := handle.readline(MAX_ITEM_LINE + 1):
        if len(text) > MAX_ITEM_LINE:
            raise ValueError(f"a line longer than {MAX_ITEM_LINE} characters")
        yield text


def _json_lines(handle: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    for line, text in enumerate(_lines(handle), 1):
        if text.strip():
            entry = json.loads(text)
            if not isinstance(entry, dict):
                raise ValueError("each line must be a JSON object")
            yield line, entry


def _csv(handle: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    limit = csv.field_size_limit(MAX_ITEM_LINE)
    try:
        records = csv.reader(_lines(handle))
        header = [name.strip() for name in next(records, [])]
        if "id" not in header:
            raise ValueError(f"the first line must name the fields, one of them id (got {header})")
        for line, record in enumerate(records, 2):
            if record:
                if len(record) != len(header):
                    raise ValueError(f"{len(record)} fields where the header has {len(header)}")
                yield line, {name: value.strip() for name, value in zip(header, record,
                                                                        strict=True)}  # fmt: skip
    finally:
        csv.field_size_limit(limit)

"""`gossiprec ingest --csv`: what a file may hold, and errors that name its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from gossiprec.node.errors import IngestError
from gossiprec.node.interactions_csv import read_csv


def rows(tmp_path: Path, text: str, batch: int = 100) -> list[list[list[int | str]]]:
    path = tmp_path / "clicks.csv"
    path.write_text(text, encoding="utf-8")
    return list(read_csv(path, batch))


def test_a_header_is_known_by_its_names_and_batches_keep_every_row(tmp_path: Path) -> None:
    assert rows(tmp_path, "user,item,timestamp\n1,2,3\n4,sku-5\n\n6,7\n", batch=2) == [
        [[1, "2", 3], [4, "sku-5"]],
        [[6, "7"]],
    ]
    assert rows(tmp_path, "") == []


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("-1,5\n2,3\n", 1),  # was skipped as a "header" and lost
        ("1,2\n+5,3\n", 2),
        ("1,2\n31_337_904,3\n", 2),
        ("\u0664,1\n", 1),  # an Arabic-Indic digit
        ("1, \x07bell\n", 1),  # an item id must be printable
        ("1\n", 1),
        ("1,2,3,4\n", 1),
        ("1,2\n3," + "9" * 300 + "\n", 2),
        ("1,2\n4611686018427387904,1\n", 2),  # 2^62
    ],
)
def test_users_and_times_must_be_plain_integers_and_items_ids_naming_the_line(
    tmp_path: Path, text: str, line: int
) -> None:
    with pytest.raises(IngestError, match=rf"clicks\.csv:{line}: .*Fix that line"):
        rows(tmp_path, text)


def test_a_file_without_line_breaks_is_refused_without_reading_it_whole() -> None:
    with pytest.raises(IngestError, match="longer than 512 characters"):
        next(read_csv(Path("/dev/zero"), 100))

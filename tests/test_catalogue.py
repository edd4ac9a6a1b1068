"""Item ids: the same row on every node without a server, the ids a node can name, what the
store keeps of them, and the authority's signed catalogue."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gossiprec.crypto.authority import Authority
from gossiprec.crypto.catalogue import SignedCatalogue
from gossiprec.crypto.errors import CertificateError
from gossiprec.node.catalogue import ItemCatalogue, check_item_id
from gossiprec.node.errors import IngestError
from gossiprec.node.features import item_feature_names
from gossiprec.node.items_file import read_items
from gossiprec.node.store import Store


def test_a_hashed_id_has_the_same_row_in_every_process() -> None:
    # Python's hash() differs per process; the row must not, or nodes would disagree.
    code = ("from gossiprec.node.catalogue import ItemCatalogue; "
            "c = ItemCatalogue(4096, 'hashed'); print(c.row('sku-1'), c.row('42'))")  # fmt: skip
    rows = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": seed}).stdout
            for seed in ("1", "2")}  # fmt: skip
    assert rows == {"2624 1082\n"}
    catalogue = ItemCatalogue(4096, "hashed")
    assert catalogue.row("sku-1") == 2624 and catalogue.row("sku-2") != 2624


def test_row_ids_must_be_rows_and_the_error_names_the_fix() -> None:
    catalogue = ItemCatalogue(10, "rows")
    assert catalogue.rows(["0", "9"]).tolist() == [0, 9]
    for bad in ("10", "sku-1", "\u0664"):
        with pytest.raises(IngestError, match=r'not a row in \[0, 10\).*item_ids = "hashed"'):
            catalogue.row(bad)


def test_catalogue_rows_are_places_in_the_authoritys_catalogue_and_never_move() -> None:
    catalogue = ItemCatalogue(3)
    with pytest.raises(IngestError, match=r"not in the network.s catalogue\. Fix: the authority"):
        catalogue.row("sku-1")
    catalogue.place(["sku-1", "sku-2"])
    catalogue.place(["sku-1", "sku-2", "sku-3"])  # the next version appends
    assert catalogue.rows(["sku-3", "sku-1"]).tolist() == [2, 0]
    with pytest.raises(IngestError, match="moves item 'sku-2' from row 1 to 0"):
        catalogue.place(["sku-2"])
    with pytest.raises(IngestError, match=r"4 items, more than the 3 rows of model\.n_items"):
        catalogue.place(["a", "b", "c", "d"])
    assert catalogue.rows(["sku-2"]).tolist() == [1]  # a refused version changed nothing


def test_item_ids_are_printable_strings_or_non_negative_integers() -> None:
    assert check_item_id(7) == "7" and check_item_id("SKU 7/blue") == "SKU 7/blue"
    for bad in (-1, True, 1.5, "", " x", "a\nb", "x" * 201, None):
        with pytest.raises(IngestError, match="must be 1 to 200 printable"):
            check_item_id(bad)


def test_the_node_names_only_ids_it_met_and_ids_sharing_a_row_share_it() -> None:
    catalogue = ItemCatalogue(2, "hashed")  # two rows: collisions are certain
    fresh = catalogue.remember(["a", "b", "c", "a"])
    assert sorted(item for item, _ in fresh) == ["a", "b", "c"] and len(catalogue) == 3
    assert catalogue.remember(["a"]) == [] and "a" in catalogue and "z" not in catalogue
    assert sorted(catalogue.ids_at(0) + catalogue.ids_at(1)) == ["a", "b", "c"]
    assert catalogue.shared_rows() >= 2


def test_two_ids_in_one_row_stay_two_stored_interactions(tmp_path: Path) -> None:
    store = Store(tmp_path / "store.sqlite")
    users, rows, times = np.array([1, 1]), np.array([3, 3]), np.array([10, 11])
    ids = ["sku-a", "sku-b"]
    assert store.add_interactions(users, rows, times, ids, [("sku-a", 3), ("sku-b", 3)]) == 2
    assert store.add_interactions(users[:1], rows[:1], times[:1], ["sku-a"]) == 0  # a repeat
    assert store.count_interactions() == 2
    assert [(item, row) for item, row, _ in store.items()] == [("sku-a", 3), ("sku-b", 3)]


def test_a_store_from_before_string_ids_keeps_its_interactions(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    old = sqlite3.connect(path)
    old.executescript("CREATE TABLE interactions (user INTEGER NOT NULL, item INTEGER NOT NULL, "
                      "time INTEGER NOT NULL, PRIMARY KEY (user, item));"
                      "INSERT INTO interactions VALUES (1, 5, 9), (2, 6, 8);")  # fmt: skip
    old.close()
    store = Store(path)
    users, items, times = store.interactions()
    assert users.tolist() == [1, 2] and items.tolist() == [5, 6] and times.tolist() == [9, 8]
    assert store.add_interactions(np.array([1]), np.array([5]), np.array([9]), ["x"]) == 1


def test_entries_become_bounded_feature_names() -> None:
    entry = {"id": "sku-1", "genre": "Action|Comedy", "year": 1995, "tags": ["a", " ", "b"],
             "text": "Toy Story, toy story!"}  # fmt: skip
    names = item_feature_names(entry)
    assert names == ["genre=Action", "genre=Comedy", "year=1995", "tags=a", "tags=b",
                     "word=toy", "word=story"]  # fmt: skip
    assert len(item_feature_names({"text": " ".join(f"w{i}" for i in range(500))})) == 64
    assert len(item_feature_names({"x" * 500: "y" * 500})[0]) == 201


def test_catalogue_files_are_csv_with_a_header_or_json_lines(tmp_path: Path) -> None:
    csv_file, lines = tmp_path / "items.csv", tmp_path / "items.jsonl"
    csv_file.write_text("id,genre,text\nsku-1,Action|Comedy,Fast cars\nsku-2,,\n")
    lines.write_text('{"id": "sku-1", "genre": ["Action"]}\n\n{"id": 2}\n')
    first = {"id": "sku-1", "genre": "Action|Comedy", "text": "Fast cars"}
    second = {"id": "sku-2", "genre": "", "text": ""}
    assert list(read_items(csv_file, 1)) == [[first], [second]]
    assert list(read_items(lines, 10)) == [[{"id": "sku-1", "genre": ["Action"]}, {"id": 2}]]
    for name, text, message in [("a.csv", "genre\nx\n", "name the fields, one of them id"),
                                ("b.csv", "id,genre\nx\n", "1 fields where the header has 2"),
                                ("c.jsonl", "[1]\n", "must be a JSON object"),
                                ("d.jsonl", '{"genre": "x"}\n', "without an id")]:  # fmt: skip
        (tmp_path / name).write_text(text)
        with pytest.raises(IngestError, match=message):
            list(read_items(tmp_path / name, 10))


def test_the_signed_catalogue_only_grows_and_only_its_authority_signs_it(tmp_path: Path) -> None:
    authority = Authority.create(tmp_path / "ca", "shop")
    first = authority.add_to_catalogue([("sku-1", ("genre=A",))], now=100)
    second = authority.add_to_catalogue([("sku-2", ()), ("sku-1", ("genre=B",))], now=200)
    assert (first.version, second.version) == (1, 2)
    assert dict(second.entries) == {"sku-1": ("genre=B",), "sku-2": ()}
    received = SignedCatalogue.decode(second.encode())
    received.verify(authority.public, "shop")
    assert received == second and Authority.load(tmp_path / "ca").catalogue() == second
    with pytest.raises(CertificateError, match="of network 'shop', not 'other'"):
        received.verify(authority.public, "other")
    stranger = Authority.create(tmp_path / "stranger", "shop")
    with pytest.raises(CertificateError, match="does not verify"):
        received.verify(stranger.public, "shop")
    forged = SignedCatalogue("shop", 3, 300, (("sku-9", ()),), second.signature)
    with pytest.raises(CertificateError, match="does not verify"):
        forged.verify(authority.public, "shop")
    for junk in (b"", b"\x92\xc4\x00\xc4\x00", second.encode()[:-5]):
        with pytest.raises(CertificateError, match="malformed catalogue"):
            SignedCatalogue.decode(junk)

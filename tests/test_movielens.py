from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from gossiprec.sim.dataset import Dataset
from gossiprec.sim.errors import DatasetError
from gossiprec.sim.movielens import (
    CONTENT_SHA256,
    GENRES,
    default_ml100k_path,
    fetch_ml100k,
    load_ml100k,
)


def test_ml100k_has_the_published_counts_and_checksum(ml100k: Dataset) -> None:
    assert len(ml100k) == 100_000
    assert (ml100k.n_users, ml100k.n_items) == (943, 1_682)
    assert len(np.unique(ml100k.users)) == 943
    assert ml100k.content_sha256() == CONTENT_SHA256
    assert set(np.unique(ml100k.ratings)) == {1.0, 2.0, 3.0, 4.0, 5.0}


def test_ml100k_side_data_matches_the_readme(ml100k: Dataset) -> None:
    per_genre = dict(zip(GENRES, ml100k.item_genres.sum(axis=0).tolist(), strict=True))
    assert per_genre["Drama"] == 725
    assert per_genre["Comedy"] == 505
    assert per_genre["unknown"] == 2
    assert ml100k.item_titles[0].startswith("Toy Story")
    # u.user line 1: "1|24|M|technician|85711"
    assert (ml100k.user_age[0], ml100k.user_gender[0], ml100k.user_occupation[0]) == (
        24,
        "M",
        "technician",
    )


def _write_official_layout(dataset: Dataset, folder: Path) -> None:
    """The official u.data / u.item / u.user layout, written from the loaded data."""
    folder.mkdir(parents=True)
    rows = zip(
        dataset.users + 1,
        dataset.items + 1,
        dataset.ratings.astype(int),
        dataset.timestamps,
        strict=True,
    )
    (folder / "u.data").write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    items = []
    for index, title in enumerate(dataset.item_titles):
        flags = "|".join("1" if g else "0" for g in dataset.item_genres[index])
        items.append(f"{index + 1}|{title}|01-Jan-1995||http://x|{flags}\n")
    (folder / "u.item").write_text("".join(items), encoding="latin-1")
    users = [
        f"{u + 1}|{dataset.user_age[u]}|{dataset.user_gender[u]}|"
        f"{dataset.user_occupation[u]}|00000\n"
        for u in range(dataset.n_users)
    ]
    (folder / "u.user").write_text("".join(users))


def test_official_folder_and_zip_layouts_load_identically(ml100k: Dataset, tmp_path: Path) -> None:
    folder = tmp_path / "ml-100k"
    _write_official_layout(ml100k, folder)
    from_folder = load_ml100k(folder)
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("u.data", "u.item", "u.user"):
            zf.write(folder / name, f"ml-100k/{name}")
    from_zip = load_ml100k(archive)
    for loaded in (from_folder, from_zip):
        assert loaded.content_sha256() == CONTENT_SHA256
        assert np.array_equal(loaded.item_genres, ml100k.item_genres)
        assert loaded.user_occupation == ml100k.user_occupation


def test_missing_data_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="gossiprec data fetch ml-100k"):
        load_ml100k(tmp_path / "nowhere")


def test_corrupt_data_is_refused_with_the_fix(ml100k: Dataset, tmp_path: Path) -> None:
    folder = tmp_path / "ml-100k"
    _write_official_layout(ml100k, folder)
    lines = (folder / "u.data").read_text().splitlines(keepends=True)
    (folder / "u.data").write_text("".join(lines[:-1]))  # one rating lost
    with pytest.raises(DatasetError, match=r"corrupt.*gossiprec data fetch ml-100k"):
        load_ml100k(folder)
    lines[5] = lines[5].replace("\t3\t", "\t4\t", 1) if "\t3\t" in lines[5] else "1\t1\t1\t1\n"
    (folder / "u.data").write_text("".join(lines))  # same counts, one rating changed
    with pytest.raises(DatasetError, match="checksum"):
        load_ml100k(folder)


def test_fetch_extracts_and_verifies_from_a_recbole_wheel(tmp_path: Path) -> None:
    # A wheel with the same member layout as recbole 1.2.1, built from the cached copy.
    wheel = tmp_path / "recbole-1.2.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name in ("ml-100k.inter", "ml-100k.item", "ml-100k.user"):
            source = default_ml100k_path() / name
            zf.write(source, f"recbole/dataset_example/ml-100k/{name}")
        zf.writestr("recbole/__init__.py", "")
    target = fetch_ml100k(tmp_path / "cache" / "ml-100k", wheel=wheel)
    assert load_ml100k(target).content_sha256() == CONTENT_SHA256


def test_fetch_refuses_a_wheel_with_damaged_data(tmp_path: Path) -> None:
    wheel = tmp_path / "recbole-1.2.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        inter = (default_ml100k_path() / "ml-100k.inter").read_text().splitlines()[:-10]
        zf.writestr("recbole/dataset_example/ml-100k/ml-100k.inter", "\n".join(inter) + "\n")
    target = tmp_path / "cache" / "ml-100k"
    with pytest.raises(DatasetError, match="corrupt"):
        fetch_ml100k(target, wheel=wheel)
    assert not target.exists()  # the cache is untouched by a failed fetch

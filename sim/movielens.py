"""MovieLens-100K: load the official layout (zip or folder) or RecBole's atomic files; verify.

GroupLens' licence forbids redistribution, so the data is never committed. Where only the Python
package index is reachable, `fetch_ml100k` takes RecBole's copy out of the `recbole==1.2.1` wheel.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gossiprec.sim.dataset import Dataset
from gossiprec.sim.errors import DatasetError

log = logging.getLogger(__name__)

N_RATINGS = 100_000
N_USERS = 943
N_ITEMS = 1_682
# sha256 of the sorted (user, item, rating, timestamp) table, see Dataset.content_sha256.
CONTENT_SHA256 = "748d8b7a9488c2bb9767b5539546473528793f457f00ec728f84559017c15a00"

GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)

RECBOLE_WHEEL = "recbole==1.2.1"
RECBOLE_MEMBER_PREFIX = "recbole/dataset_example/ml-100k/"
FETCH_HINT = "gossiprec data fetch ml-100k"


def default_cache_dir() -> Path:
    """`$GOSSIPREC_CACHE_DIR`, else `$XDG_CACHE_HOME/gossiprec`, else `~/.cache/gossiprec`."""
    if env := os.environ.get("GOSSIPREC_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gossiprec"


def default_ml100k_path() -> Path:
    return default_cache_dir() / "ml-100k"


def load_ml100k(path: Path | None = None, *, verify: bool = True) -> Dataset:
    """Load ML-100K from `path` (ml-100k.zip, a folder with u.data, or RecBole's files)."""
    path = path or default_ml100k_path()
    try:
        files = _open_layout(path)
        dataset = _parse(files)
    except (OSError, KeyError, ValueError, UnicodeDecodeError, zipfile.BadZipFile) as exc:
        raise DatasetError(
            f"MovieLens-100K at {path} is missing or unreadable ({exc}). "
            f"Fix: run `{FETCH_HINT}`, or pass the path of the official ml-100k.zip or folder."
        ) from exc
    if verify:
        _verify(dataset, path)
    return dataset


def _verify(dataset: Dataset, path: Path) -> None:
    found = (len(dataset), len(np.unique(dataset.users)), len(np.unique(dataset.items)))
    expected = (N_RATINGS, N_USERS, N_ITEMS)
    problem = ""
    if found != expected:
        problem = f"found {found} (ratings, users, items), expected {expected}"
    elif (digest := dataset.content_sha256()) != CONTENT_SHA256:
        problem = f"content checksum {digest[:16]}… does not match {CONTENT_SHA256[:16]}…"
    if problem:
        raise DatasetError(
            f"MovieLens-100K at {path} is corrupt: {problem}. "
            f"Fix: delete it and run `{FETCH_HINT}`."
        )


# -- layouts -------------------------------------------------------------------------------------

Reader = Callable[[str], str | None]  # member name -> text, or None when absent


def _open_layout(path: Path) -> Reader:
    if path.is_file() and zipfile.is_zipfile(path):
        archive = zipfile.ZipFile(path)
        names = {Path(n).name: n for n in archive.namelist()}

        def read_zip(name: str) -> str | None:
            member = names.get(name)
            return None if member is None else archive.read(member).decode("latin-1")

        return read_zip
    if path.is_dir():

        def read_dir(name: str) -> str | None:
            file = path / name
            return file.read_text(encoding="latin-1") if file.is_file() else None

        return read_dir
    raise FileNotFoundError(f"no such file or folder: {path}")


def _parse(read: Reader) -> Dataset:
    if (data := read("u.data")) is not None:
        return _parse_official(data, read("u.item"), read("u.user"))
    if (inter := read("ml-100k.inter")) is not None:
        return _parse_recbole(inter, read("ml-100k.item"), read("ml-100k.user"))
    raise FileNotFoundError("neither u.data (official layout) nor ml-100k.inter (RecBole) found")


def _interactions(table: np.ndarray) -> tuple[np.ndarray, ...]:
    users, items, ratings, stamps = (table[:, c] for c in range(4))
    return users.astype(np.int64) - 1, items.astype(np.int64) - 1, ratings.astype(float), stamps


def _parse_official(data: str, item_text: str | None, user_text: str | None) -> Dataset:
    table = np.loadtxt(io.StringIO(data), dtype=np.int64, delimiter="\t", ndmin=2)
    users, items, ratings, stamps = _interactions(table)
    titles: list[str] = []
    years: list[int] = []
    genre_rows: list[list[bool]] = []
    for line in (item_text or "").splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        titles.append(fields[1])
        years.append(_year(fields[2][-4:]))  # "01-Jan-1995"
        genre_rows.append([flag == "1" for flag in fields[5 : 5 + len(GENRES)]])
    demographics = [line.split("|") for line in (user_text or "").splitlines() if line.strip()]
    return _build(users, items, ratings, stamps, titles, years, genre_rows, demographics)


def _year(text: str) -> int:
    """A release year, or 0 where the file has none (a few ML-100K items)."""
    return int(text) if text.strip().isdigit() else 0


def _parse_recbole(inter: str, item_text: str | None, user_text: str | None) -> Dataset:
    table = np.loadtxt(io.StringIO(inter), dtype=np.int64, delimiter="\t", skiprows=1, ndmin=2)
    users, items, ratings, stamps = _interactions(table)
    titles: list[str] = []
    years: list[int] = []
    genre_rows: list[list[bool]] = []
    for line in (item_text or "").splitlines()[1:]:
        _, title, year, classes = [*line.split("\t"), "", "", ""][:4]
        titles.append(title)
        years.append(_year(year))
        tokens = set(classes.split())
        genre_rows.append([genre in tokens for genre in GENRES])
    demographics = [
        [f[0], f[1], f[2], f[3], f[4]]
        for f in (line.split("\t") for line in (user_text or "").splitlines()[1:])
        if len(f) >= 5
    ]
    return _build(users, items, ratings, stamps, titles, years, genre_rows, demographics)


def _build(
    users: np.ndarray,
    items: np.ndarray,
    ratings: np.ndarray,
    stamps: np.ndarray,
    titles: list[str],
    years: list[int],
    genre_rows: list[list[bool]],
    demographics: list[list[str]],
) -> Dataset:
    n_users = int(users.max()) + 1
    n_items = int(items.max()) + 1
    item_years = np.zeros(n_items, dtype=np.int64)
    item_years[: len(years)] = np.array(years, dtype=np.int64)[:n_items]
    genres = np.zeros((n_items, len(GENRES)), dtype=bool)
    if genre_rows:
        genres[: len(genre_rows)] = np.array(genre_rows, dtype=bool)[:n_items]
    age = np.zeros(n_users, dtype=np.int64)
    gender = [""] * n_users
    occupation = [""] * n_users
    for fields in demographics:
        index = int(fields[0]) - 1
        if 0 <= index < n_users:
            age[index] = int(fields[1])
            gender[index] = fields[2]
            occupation[index] = fields[3]
    return Dataset(
        name="ml-100k",
        users=users,
        items=items,
        ratings=ratings,
        timestamps=stamps.astype(np.int64),
        n_users=n_users,
        n_items=n_items,
        genre_names=GENRES,
        item_genres=genres,
        item_titles=tuple(titles),
        item_years=item_years,
        user_age=age,
        user_gender=tuple(gender),
        user_occupation=tuple(occupation),
    )


# -- fetching ------------------------------------------------------------------------------------


def fetch_ml100k(target: Path | None = None, *, wheel: Path | None = None) -> Path:
    """Put ML-100K under `target` (the cache by default) from the recbole wheel, then verify it.

    `wheel` lets a caller supply an already downloaded wheel; otherwise pip downloads it.
    """
    target = target or default_ml100k_path()
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            wheel = _download_wheel(Path(tmp))
        staging = Path(tmp) / "ml-100k"
        staging.mkdir()
        with zipfile.ZipFile(wheel) as archive:
            members = [n for n in archive.namelist() if n.startswith(RECBOLE_MEMBER_PREFIX)]
            for member in members:
                name = Path(member).name
                if name in ("ml-100k.inter", "ml-100k.item", "ml-100k.user"):
                    (staging / name).write_bytes(archive.read(member))
        load_ml100k(staging)  # verify before the cache is touched
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(staging), target)
    log.info("MovieLens-100K stored at %s", target)
    return target


def _download_wheel(folder: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--quiet",
        "--dest",
        str(folder),
        RECBOLE_WHEEL,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    wheels = sorted(folder.glob("recbole-*.whl"))
    if result.returncode != 0 or not wheels:
        raise DatasetError(
            f"could not download {RECBOLE_WHEEL} from the package index: "
            f"{result.stderr.strip()[-400:]}. Fix: check that pip can reach the index, or download "
            "the official ml-100k.zip from GroupLens and pass its path with --data."
        )
    return wheels[0]

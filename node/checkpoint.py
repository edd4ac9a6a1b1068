"""Model checkpoints: named arrays plus JSON metadata in one .npz, replaced atomically.

Written with fsync and rename (crypto.files.write_atomic), and read back before it replaces the
last good one, which is kept beside it (`*.prev`): a full disk can fail a checkpoint but never
leave a truncated one in place. Read with allow_pickle=False: a checkpoint is only ever data,
even if someone swapped the file.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gossiprec.crypto.files import write_atomic
from gossiprec.node.errors import CheckpointError

_META = "__meta__"


def save_checkpoint(path: Path, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> None:
    if _META in arrays:
        raise ValueError(f"array name {_META!r} is reserved")
    buffer = io.BytesIO()
    encoded_meta = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    members: dict[str, Any] = {**arrays, _META: encoded_meta}
    np.savez(buffer, **members)

    def verify_then_keep_previous(written: Path) -> None:
        loaded, loaded_meta = load_checkpoint(written)
        shapes = {name: array.shape for name, array in arrays.items()}
        if loaded_meta != meta or {n: a.shape for n, a in loaded.items()} != shapes:
            raise CheckpointError(f"{written} does not read back as written")
        if path.exists():  # the last good one stays as *.prev: a second copy, by a hard link
            previous = previous_path(path)
            with contextlib.suppress(FileNotFoundError):
                previous.unlink()
            os.link(path, previous)

    write_atomic(path, buffer.getvalue(), private=True, before_replace=verify_then_keep_previous)


def previous_path(path: Path) -> Path:
    return path.with_name(path.name + ".prev")


def load_latest(path: Path) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
    """The checkpoint at `path`, or the previous one if that is missing or unreadable."""
    try:
        return load_checkpoint(path)
    except CheckpointError:
        if not previous_path(path).exists():
            raise
        return load_checkpoint(previous_path(path))


def load_checkpoint(path: Path) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
    try:
        # Our own handle: np.load leaks its own when the file is not a zip.
        with path.open("rb") as handle, np.load(handle, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files if name != _META}
            meta = json.loads(archive[_META].tobytes().decode()) if _META in archive.files else {}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({exc}). Fix: move it aside; the "
            "node then starts from its interactions and the network."
        ) from exc
    return arrays, meta

"""Model checkpoints: named arrays plus JSON metadata in one .npz, replaced atomically.

Written with fsync and rename (crypto.files.write_atomic), read with allow_pickle=False: a
checkpoint is only ever data, even if someone swapped the file.
"""

from __future__ import annotations

import io
import json
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
    write_atomic(path, buffer.getvalue(), private=True)


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

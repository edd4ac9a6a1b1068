"""Durable, atomic file writes and private-file permission checks."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable
from pathlib import Path

from gossiprec.crypto.errors import KeyFileError

PRIVATE_MODE = 0o600


def write_atomic(path: Path, data: bytes, *, private: bool = False,
                 before_replace: Callable[[Path], None] | None = None) -> None:  # fmt: skip
    """Write, fsync, rename over `path`, fsync the folder: readers see old or new, never half.

    Every byte is written or the call raises (a full disk gives short writes) and the temporary
    file is removed. `before_replace(tmp)` runs on the written file just before it replaces
    `path`: it may check it (raising aborts the write).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    mode = PRIVATE_MODE if private else 0o644
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)  # umask must not widen or narrow what we asked for
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if before_replace is not None:
            before_replace(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:  # os.write raises ENOSPC itself; a zero write must not loop forever
            raise OSError(f"write returned {written} with {len(view)} bytes left")
        view = view[written:]


def read_private(path: Path) -> bytes:
    """Read a private key file, refusing one that group or others can read."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(f"{path} does not exist. Fix: run `gossiprec keys init`.") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path} is readable by other users (mode {stat.S_IMODE(mode):03o}). "
            f"Fix: chmod 600 {path}"
        )
    return path.read_bytes()

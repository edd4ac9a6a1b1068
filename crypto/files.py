"""Durable, atomic file writes and private-file permission checks."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from gossiprec.crypto.errors import KeyFileError

PRIVATE_MODE = 0o600


def write_atomic(path: Path, data: bytes, *, private: bool = False) -> None:
    """Write, fsync, rename over `path`, fsync the folder: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    mode = PRIVATE_MODE if private else 0o644
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # umask must not widen or narrow what we asked for
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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

"""Keep model-sized buffers on the heap instead of handing their pages back after every message.

Every message makes and frees a few buffers of a model's size (200 KB here): the array copy,
its bytes, the msgpack frame, the ciphertext. By default glibc serves blocks over 128 KB with
mmap and returns freed memory at the top of the heap to the system, so each buffer faults its
pages in anew: encoding one 215 KB update took 234 us, 33 us with the settings below
(`gossiprec bench gossip`, README "Performance"). The cost is up to 16 MB of heap kept per
process. Not glibc (musl, macOS): nothing to do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TOP_PAD = -2  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
HEAP_PAD_BYTES = 16 << 20


def keep_heap_for_large_buffers() -> bool:
    """Tune this process's allocator (glibc only); returns whether it was applied."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    applied = bool(mallopt(M_TOP_PAD, HEAP_PAD_BYTES)) and bool(
        mallopt(M_MMAP_THRESHOLD, HEAP_PAD_BYTES)
    )
    log.debug("allocator tuned for model-sized buffers: %s", applied)
    return applied

"""Keep model-sized buffers on the heap instead of handing their pages back after every message.

Every message makes and frees a few buffers of a model's size (200 KB here): the array copy,
its bytes, the msgpack frame, the ciphertext. By default glibc serves blocks over 128 KB with
mmap and returns freed memory at the top of the heap to the system, so each buffer faults its
pages in anew: encoding one 215 KB update took 234 us, 33 us with the settings below
(`gossiprec bench gossip`, README "Performance"). The cost is up to 16 MB of heap kept per
arena. glibc gives each thread that meets a busy arena one of its own (up to 8 per core), and
with worker threads passing model buffers around each arena keeps its own padding and
fragments: capped at two, 100 one-user nodes in one process peak at 521 MB instead of 1,006 MB.
Not glibc (musl, macOS): nothing to do.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_TOP_PAD = -2  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
ARENAS = 2  # the GIL lets about one thread allocate at a time: more arenas only hold memory
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
    applied = all(
        mallopt(parameter, value)
        for parameter, value in (
            (M_ARENA_MAX, ARENAS),
            (M_TOP_PAD, HEAP_PAD_BYTES),
            (M_MMAP_THRESHOLD, HEAP_PAD_BYTES),
        )
    )
    log.debug("allocator tuned for model-sized buffers: %s", applied)
    return applied

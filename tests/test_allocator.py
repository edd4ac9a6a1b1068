"""The allocator tuning (gossip/allocator.py) on this machine's glibc, in a fresh process."""

from __future__ import annotations

import subprocess
import sys

THREADS_ALLOCATING = """
import ctypes, sys, threading, zlib
from gossiprec.gossip.allocator import keep_heap_for_large_buffers
if sys.argv[1] == "tuned":
    assert keep_heap_for_large_buffers()
def work():
    data = bytes(300_000)
    for _ in range(300):
        zlib.compress(data, 1)  # its buffers are allocated with the GIL released
threads = [threading.Thread(target=work) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
ctypes.CDLL(None).malloc_stats()  # one "Arena N:" block per arena, on stderr
"""


def arenas(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", THREADS_ALLOCATING, mode], capture_output=True,
                          text=True, check=True, timeout=120)  # fmt: skip
    return sum(line.startswith("Arena ") for line in done.stderr.splitlines())


def test_threads_passing_buffers_share_at_most_two_arenas_once_tuned() -> None:
    assert arenas("plain") > 2  # what glibc does by default: an arena per busy thread
    assert arenas("tuned") <= 2

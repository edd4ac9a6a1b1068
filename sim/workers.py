"""Node hosts in child processes, driven through the same calls as an in-process NodeHost.

The child is spawned (not forked: the parent runs threads and torch), builds a NodeHost from a
picklable HostSpec and answers one call at a time over a pipe: (method, args) in, (ok, value)
out. Its nodes talk to the others only through the broker, as they would across machines.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import torch

from gossiprec.crypto.certificate import Certificate, RevocationList
from gossiprec.gossip.allocator import keep_heap_for_large_buffers
from gossiprec.sim.errors import WorkerError
from gossiprec.sim.host import HostSpec, HostStats, NodeHost, Scores


class WorkerHost:
    """A NodeHost in a child process."""

    def __init__(self, spec: HostSpec) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child_end = context.Pipe()
        self._process = context.Process(target=serve, args=(spec, child_end), daemon=True,
                                        name="gossiprec-sim-worker")  # fmt: skip
        self._process.start()
        child_end.close()
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="sim-worker-pipe")
        self._lock = asyncio.Lock()

    @property
    def alive(self) -> bool:
        return self._process.is_alive()

    async def _call(self, method: str, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        async with self._lock:
            self._pipe.send((method, args))
            try:
                ok, value = await loop.run_in_executor(self._reader, self._pipe.recv)
            except EOFError:
                raise WorkerError(f"worker process exited ({self._process.exitcode})") from None
        if not ok:
            raise WorkerError(f"{method} failed in a worker process: {value}")
        return value

    async def public_keys(self) -> dict[int, tuple[bytes, bytes]]:
        result: dict[int, tuple[bytes, bytes]] = await self._call("public_keys")
        return result

    async def certify(self, certificates: dict[int, Certificate], network: str,
                      ca_public: bytes, crl: RevocationList) -> None:  # fmt: skip
        await self._call("certify", certificates, network, ca_public, crl)

    async def prepare(self, indices: list[int]) -> None:
        await self._call("prepare", indices)

    async def start(self, index: int) -> None:
        await self._call("start", index)

    async def stop(self, index: int) -> None:
        await self._call("stop", index)

    async def pace(self, factor: float) -> None:
        await self._call("pace", factor)

    async def add_items(self, entries: list[tuple[str, list[str]]]) -> None:
        await self._call("add_items", entries)

    async def scores(self, indices: list[int]) -> Scores:
        result: Scores = await self._call("scores", indices)
        return result

    async def stats(self, indices: list[int] | None = None) -> HostStats:
        result: HostStats = await self._call("stats", indices)
        return result

    async def inferences(self) -> dict[int, dict[bytes, np.ndarray]]:
        result: dict[int, dict[bytes, np.ndarray]] = await self._call("inferences")
        return result

    async def close(self) -> None:
        try:
            if self._process.is_alive():
                await self._call("close")
        finally:
            self._process.join(10)
            if self._process.is_alive():
                self._process.kill()
            self._pipe.close()
            self._reader.shutdown()


def serve(spec: HostSpec, pipe: Connection) -> None:
    """The child's main: one NodeHost, calls answered in order until `close` (or the parent
    goes away)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it closes us
    torch.set_num_threads(1)
    keep_heap_for_large_buffers()
    asyncio.run(_serve(spec, pipe))


async def _serve(spec: HostSpec, pipe: Connection) -> None:
    host = NodeHost(spec)
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1, thread_name_prefix="sim-worker-pipe") as reader:
        while True:
            try:
                method, args = await loop.run_in_executor(reader, pipe.recv)
            except EOFError:  # the parent is gone: stop the nodes and leave
                await host.close()
                return
            try:
                pipe.send((True, await getattr(host, method)(*args)))
            except Exception as error:  # the parent raises it as a WorkerError
                pipe.send((False, f"{type(error).__name__}: {error}"))
            if method == "close":
                return

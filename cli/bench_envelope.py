"""Benchmark: the sealed envelope against raw ChaCha20-Poly1305 on the same bytes, same run."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from gossiprec.crypto.authority import Authority
from gossiprec.crypto.envelope import Opener, Sealer
from gossiprec.crypto.keys import NodeKeys
from gossiprec.crypto.replay import ReplayGuard, SequenceCounter


def _median_ms(action: Callable[[], object], repeats: int) -> float:
    action()  # warm up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def bench_envelope(rows: int = 1_682, cols: int = 32, repeats: int = 200) -> dict[str, float]:
    """Times seal+open (full checks, durable replay window) and raw AEAD encrypt+decrypt."""
    payload = np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32).tobytes()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        authority = Authority.create(folder / "ca", "bench")
        sender, receiver = NodeKeys.generate(), NodeKeys.generate()
        now = int(time.time())
        certs = {
            keys.node_id: authority.issue(
                keys.signing_public, keys.encryption_public, now - 60, now + 3_600
            )
            for keys in (sender, receiver)
        }
        sealer = Sealer(sender, "bench", SequenceCounter(folder / "seq"))
        guard = ReplayGuard(folder / "replay.sqlite")
        opener = Opener(receiver, authority.trust_store(), certs.get, guard)
        recipient = certs[receiver.node_id]

        def envelope() -> None:
            opener.open(sealer.seal(payload, recipient, 1, time.time()), time.time())

        aead = ChaCha20Poly1305(ChaCha20Poly1305.generate_key())

        def raw() -> None:
            nonce = os.urandom(12)
            aead.decrypt(nonce, aead.encrypt(nonce, payload, None), None)

        raw_ms = _median_ms(raw, repeats)
        envelope_ms = _median_ms(envelope, repeats)
        overhead = len(sealer.seal(payload, recipient, 1, time.time())) - len(payload)
        guard.close()
    return {
        "payload_bytes": len(payload),
        "seal_open_ms": envelope_ms,
        "raw_chacha20poly1305_ms": raw_ms,
        "ratio": envelope_ms / raw_ms,
        "overhead_bytes": overhead,
    }

"""Benchmark: a session's sealed envelope against its raw AEAD on the same bytes, same run, for
AES-256-GCM and ChaCha20-Poly1305; and the cost of opening a session."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gossiprec.crypto import aead as aeads
from gossiprec.crypto.authority import Authority
from gossiprec.crypto.envelope import Opener, Sealer
from gossiprec.crypto.keys import NodeKeys
from gossiprec.crypto.prekey import Prekeys
from gossiprec.crypto.replay import SequenceCounter


def _median_ms(action: Callable[[], object], repeats: int) -> float:
    action()  # warm up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


def bench_envelope(rows: int = 1_682, cols: int = 32, repeats: int = 200) -> dict[str, object]:
    """Times seal+open on an established session (every check the receiver makes) against raw
    encrypt+decrypt of the same bytes with the session's AEAD, for each AEAD a session may use;
    and, apart, what opening a session costs (a sealer that rekeys after every message)."""
    payload = np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32).tobytes()
    chosen = aeads.NAMES[aeads.fastest()]
    result: dict[str, object] = {"payload_bytes": len(payload), "aead": chosen}
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
        prekeys = Prekeys(now)
        prekey = prekeys.current(now)
        opener = Opener(receiver, authority.trust_store(), certs.get, prekeys)
        recipient = certs[receiver.node_id]
        numbers = SequenceCounter(folder / "seq")

        def through(chosen: Sealer, data: bytes) -> Callable[[], object]:
            return lambda: opener.open(chosen.seal(data, recipient, prekey, 1, time.time()),
                                       time.time())  # fmt: skip

        session_ms, raw_ms = {}, {}
        for aead_id, name in aeads.NAMES.items():
            aead = aeads.cipher(aead_id, os.urandom(32))

            def raw(aead: aeads.Aead = aead) -> None:
                nonce = os.urandom(12)
                aead.decrypt(nonce, aead.encrypt(nonce, payload, None), None)

            raw_ms[name] = _median_ms(raw, repeats)
            sealer = Sealer(sender, "bench", numbers, aead=aead_id)
            session_ms[name] = _median_ms(through(sealer, payload), repeats)
            result |= {f"seal_open_ms_{name}": session_ms[name], f"raw_ms_{name}": raw_ms[name],
                       f"ratio_{name}": session_ms[name] / raw_ms[name]}  # fmt: skip
        result["ratio"] = session_ms[chosen] / raw_ms[chosen]
        chacha = aeads.NAMES[aeads.CHACHA20_POLY1305]
        result["ratio_over_raw_chacha20_poly1305"] = session_ms[chosen] / raw_ms[chacha]
        sealer = Sealer(sender, "bench", numbers)
        overhead = len(sealer.seal(payload, recipient, prekey, 1, time.time())) - len(payload)
        # Setup alone: a tiny message, each in a new session, less the same on an established one
        # (measured first: the receiver refuses an established session once two newer exist).
        small_ms = _median_ms(through(sealer, b"x"), repeats)
        rekeying = Sealer(sender, "bench", numbers, rekey_messages=1)
        setup_ms = _median_ms(through(rekeying, b"x"), repeats) - small_ms
    return result | {"session_setup_ms": setup_ms, "overhead_bytes": overhead}

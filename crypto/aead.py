"""The AEADs a session may use, and which one this machine's sender picks.

AES-256-GCM where the CPU has AES instructions (x86 AES-NI, ARMv8's crypto extensions: most
servers, laptops and phones; here it seals 215 KB in 23 us against 60 us for ChaCha20-Poly1305),
ChaCha20-Poly1305 where it has not (there AES-GCM is several times slower): the choice TLS 1.3
stacks and WireGuard's reasoning make. Both take a 32-byte key, a 12-byte nonce and a 16-byte
tag, so a session's key schedule is the same for either. The sender picks; the id travels in the
session's signed opening and enters its key derivation, and every receiver opens both.
"""

from __future__ import annotations

import functools
import time

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

Aead = ChaCha20Poly1305 | AESGCM

CHACHA20_POLY1305 = 1
AES_256_GCM = 2
NAMES = {CHACHA20_POLY1305: "chacha20-poly1305", AES_256_GCM: "aes-256-gcm"}
_CIPHERS: dict[int, type[ChaCha20Poly1305] | type[AESGCM]] = {
    CHACHA20_POLY1305: ChaCha20Poly1305, AES_256_GCM: AESGCM
}  # fmt: skip


def cipher(aead_id: int, key: bytes) -> Aead:
    return _CIPHERS[aead_id](key)


@functools.cache
def fastest() -> int:
    """The AEAD that seals fastest on this machine, timed once per process (a few ms) rather
    than guessed from the CPU's name: nothing portable reports AES instructions."""
    data, nonce = bytes(65_536), bytes(12)

    def seconds(aead_id: int) -> float:
        aead = cipher(aead_id, bytes(32))
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            aead.encrypt(nonce, data, None)
            best = min(best, time.perf_counter() - start)
        return best

    return min(_CIPHERS, key=seconds)

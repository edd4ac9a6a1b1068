"""A node's prekeys: short-lived X25519 keys it announces in its signed beacons.

Senders open sessions to the current prekey (crypto/envelope.py). A prekey lives in memory only
and is replaced every `lifetime` seconds (the previous one is kept one lifetime more, for
messages in flight); a restart starts with a new one. So a session's key is gone for good once
its prekey is: what was sent before cannot be decrypted with anything stolen later (forward
secrecy), and nothing sent to an earlier run of this node can be replayed to this one.
"""

from __future__ import annotations

import threading

from cryptography.hazmat.primitives.asymmetric import x25519

from gossiprec.crypto.keys import raw_public

PREKEY_BYTES = 32
DEFAULT_LIFETIME = 3_600.0


class Prekeys:
    """The current prekey and the previous one; `current` rotates them when due."""

    def __init__(self, now: float, lifetime: float = DEFAULT_LIFETIME) -> None:
        if lifetime <= 0:
            raise ValueError(f"lifetime must be > 0, got {lifetime}")
        self._lifetime = lifetime
        self._lock = threading.Lock()
        self._keys: dict[bytes, x25519.X25519PrivateKey] = {}
        self._current = self._add()
        self._previous: bytes | None = None
        self._born = now

    def _add(self) -> bytes:
        private = x25519.X25519PrivateKey.generate()
        public = raw_public(private.public_key())
        self._keys[public] = private
        return public

    def current(self, now: float) -> bytes:
        """The public prekey to announce now (a new one once the current is `lifetime` old)."""
        with self._lock:
            if now - self._born >= self._lifetime:
                if self._previous is not None:
                    del self._keys[self._previous]  # its sessions can no longer be opened
                self._previous, self._current, self._born = self._current, self._add(), now
            return self._current

    def private(self, public: bytes) -> x25519.X25519PrivateKey | None:
        """The private half of a prekey this node still holds, else None."""
        return self._keys.get(public)

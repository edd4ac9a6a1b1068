"""The error tree of crypto/. Callers see one opaque type per job; operators see counters."""

from __future__ import annotations


class CryptoError(Exception):
    """Base of every error crypto/ raises."""


class EnvelopeError(CryptoError):
    """A message was rejected. Deliberately opaque: the reason goes to a counter, not the caller."""

    def __init__(self) -> None:
        super().__init__("envelope rejected")


class SealError(CryptoError):
    """A message could not be sealed: the recipient announced a key no agreement can use."""


class Rejection(Exception):
    """Internal to crypto/: why a message was refused, before it becomes an opaque error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CertificateError(CryptoError):
    """A certificate or revocation list is invalid, expired, revoked or from another network.

    `reason` is a short counter key, so an operator tells a revoked peer from a stranger."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


class KeyFileError(CryptoError):
    """A key file is missing, unreadable or too permissive; the message says how to fix it."""

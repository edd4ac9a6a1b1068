"""The error tree of node/: one base, every message names the fix."""

from __future__ import annotations


class NodeError(Exception):
    """Base of every error node/ raises on purpose."""


class ConfigError(NodeError):
    """A configuration value is missing or invalid; the message names the key and the fix."""


class StartupError(NodeError):
    """The daemon cannot start as configured (the folder is in use, a port is taken, ...)."""


class IdentityError(NodeError):
    """A node's keys, certificate or trust anchor are missing or do not belong together."""


class CheckpointError(NodeError):
    """A checkpoint file is unreadable; the message says what to do."""


class StoreError(NodeError):
    """The store could not write (a full disk, say); nothing of the failed write was kept."""


class IngestError(NodeError):
    """Interactions were refused (an unusable row or id); nothing of the refused batch is kept."""


class RequestError(NodeError):
    """A control request was malformed or asked for something impossible (the caller's fault)."""


class ControlError(NodeError):
    """The node refused a control request; the message is the node's reason."""


class NodeUnreachable(ControlError):
    """No node answered on the control socket (down, or not started)."""

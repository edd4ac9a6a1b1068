"""The command line's own error: a command was asked for something it cannot do."""

from __future__ import annotations


class UsageError(Exception):
    """The message says what to change in the command."""

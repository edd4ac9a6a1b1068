"""The error tree of sim/: one base, every message names the fix."""

from __future__ import annotations


class SimError(Exception):
    """Base of every error sim/ raises on purpose: a setting, a dataset, a broker, a worker."""


class DatasetError(SimError):
    """A dataset is missing or damaged; the message says how to get a good copy."""


class BrokerError(SimError):
    """mosquitto is missing or did not come up; the message says how to fix it."""


class WorkerError(SimError):
    """A call failed inside a worker process (its message names the error there)."""

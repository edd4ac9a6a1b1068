"""Shared fixtures. Real data: ML-100K through the loader (fetched into the user cache once)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gossiprec.sim.broker import Mosquitto
from gossiprec.sim.dataset import Dataset
from gossiprec.sim.errors import DatasetError
from gossiprec.sim.movielens import fetch_ml100k, load_ml100k
from gossiprec.sim.split import LeaveOneOut, leave_one_out


@pytest.fixture(scope="session")
def ml100k() -> Dataset:
    try:
        return load_ml100k()
    except DatasetError:
        fetch_ml100k()  # the same path as `gossiprec data fetch ml-100k`
        return load_ml100k()


@pytest.fixture(scope="session")
def ml100k_split(ml100k: Dataset) -> LeaveOneOut:
    return leave_one_out(ml100k, seed=0)


@pytest.fixture
def mosquitto() -> Iterator[Mosquitto]:
    """A real mosquitto on a free loopback port, stopped after the test."""
    with Mosquitto() as broker:
        yield broker

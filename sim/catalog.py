"""Datasets by name, as the command line and the simulation ask for them.

Cheap to import: the command line lists the names without loading numpy or a dataset.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gossiprec.sim.dataset import Dataset

DATASETS = ("ml-100k", "synthetic")


def load_dataset(name: str, path: Path | None = None, seed: int = 0) -> Dataset:
    """ML-100K from `path` or the user cache (DatasetError says how to fetch it), or the seeded
    synthetic generator (for scale)."""
    from gossiprec.sim.movielens import load_ml100k
    from gossiprec.sim.synthetic import SyntheticConfig, generate

    if name == "synthetic":
        return generate(SyntheticConfig(seed=seed))
    return load_ml100k(path)

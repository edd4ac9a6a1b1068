"""Item identity without a server, measured: hashing ids into a fixed table against a catalogue
the authority signs (exact rows, like `ca catalogue`).

For each design: the rows of the shared table, the share of items that share a row with
another, the bytes of one dense float16 update, what the catalogue itself costs to send, and the
centralized BPR-MF's HR@10 on ML-100K (leave-one-out, 99 sampled negatives) with items in those
rows, all trained for the epochs the exact model's validation chose.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from gossiprec.crypto.catalogue import SignedCatalogue
from gossiprec.node.catalogue import ItemCatalogue
from gossiprec.node.recommender import BPRMF, BPRConfig
from gossiprec.node.types import IntArray
from gossiprec.sim.baselines import choose_epochs, train_and_valid_pairs
from gossiprec.sim.dataset import Dataset
from gossiprec.sim.metrics import Scorer, evaluate
from gossiprec.sim.progress import Tracker, quiet
from gossiprec.sim.split import leave_one_out

TABLE_SCALES = (1, 2, 4, 8)  # hashed table rows per catalogue item
FLOAT16_BYTES = 2


@dataclass(frozen=True)
class Design:
    name: str
    rows: int
    shared_items: float  # share of items whose row holds another item too
    update_bytes: int  # one dense float16 update of the item table and biases
    catalogue_bytes: int  # what the network must send so every node knows every item
    hr10: float
    ndcg10: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def item_rows(n_items: int, rows: int) -> IntArray:
    """The hashed row of each dataset item, named by its ML-100K id (1-based) as a shop would."""
    return ItemCatalogue(rows, "hashed").rows([str(item + 1) for item in range(n_items)])


def _in_rows(model: BPRMF, row_of: IntArray) -> Scorer:
    """Scores of dataset items by the rows they live in."""
    return lambda users, candidates: model.score(users, row_of[candidates])


def compare(dataset: Dataset, config: BPRConfig, *, track: Tracker = quiet) -> list[Design]:
    split = leave_one_out(dataset)
    with track("identity: choose epochs (exact rows, validation)", 30) as bar:
        epochs = choose_epochs(split, config, 30, 4, bar)
    users, items = train_and_valid_pairs(split)
    entries = tuple((str(item + 1), tuple(names))
                    for item, names in enumerate(dataset.item_features()))  # fmt: skip
    catalogue = len(SignedCatalogue("network", 1, 0, entries, bytes(64)).encode())
    n = dataset.n_items
    designs = [("signed catalogue (exact rows)", n, np.arange(n), catalogue)]
    designs += [(f"hashed, {scale}x rows", scale * n, item_rows(n, scale * n), 0)
                for scale in TABLE_SCALES]  # fmt: skip
    results = []
    with track(f"identity: train {len(designs)} models x {epochs} epochs", len(designs)) as bar:
        for name, rows, row_of, catalogue_bytes in designs:
            model = BPRMF(rows, config)
            # Negatives from rows that hold an item, as a node that knows the catalogue draws
            # them: an empty row is no item, and no lesson.
            model.negative_pool = np.unique(row_of)
            model.add_interactions(users, row_of[items])
            model.train_steps(epochs * model.steps_per_epoch())
            metrics = evaluate(split, _in_rows(model, row_of))
            counts = np.bincount(row_of, minlength=rows)
            results.append(Design(name, rows, float(np.mean(counts[row_of] > 1)),
                                  rows * (config.dim + 1) * FLOAT16_BYTES, catalogue_bytes,
                                  metrics.hr10, metrics.ndcg10))  # fmt: skip
            bar.advance(note=name)
    return results

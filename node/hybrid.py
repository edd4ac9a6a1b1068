"""A hybrid recommender: an item is its id embedding plus the mean of its content features'.

Feature embeddings and biases are shared and gossiped like item embeddings, so an item nobody
has touched yet (a cold item) still has a useful vector: its genres', year's and words' as
every node's users taught them. Id embeddings start at zero, so an untouched item is exactly
its content until interactions move it; `use_ids=False` keeps them at zero for good (the
content-only model the cold-start tables compare against).
"""

from __future__ import annotations

import torch

from gossiprec.node.features import ItemFeatures
from gossiprec.node.recommender import BPRMF, BPRConfig


class HybridMF(BPRMF):
    SHARED = ("item_embedding", "item_bias", "feature_embedding", "feature_bias")

    def __init__(self, n_items: int, features: ItemFeatures, config: BPRConfig | None = None,
                 *, use_ids: bool = True) -> None:  # fmt: skip
        if features.n_items != n_items:
            raise ValueError(f"features cover {features.n_items} items, the model {n_items}")
        config = config or BPRConfig()
        self.features = features
        self.use_ids = use_ids
        self.feature_embedding = torch.nn.Parameter(
            torch.randn((features.rows, config.dim),
                        generator=torch.Generator().manual_seed(config.seed + 1)) * config.init_std
        )  # fmt: skip
        self.feature_bias = torch.nn.Parameter(torch.zeros(features.rows))
        super().__init__(n_items, config)
        with torch.no_grad():
            self.item_embedding.zero_()
        if not use_ids:
            self.item_embedding.requires_grad_(False)
            self.item_bias.requires_grad_(False)

    def item_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        matrix = self.features.matrix()
        content = torch.sparse.mm(matrix, self.feature_embedding)
        content_bias = torch.sparse.mm(matrix, self.feature_bias[:, None])[:, 0]
        return self.item_embedding + content, self.item_bias + content_bias

    def private_round(self, clip: float, noise_multiplier: float, noise: torch.Generator,
                      lr: float) -> float:  # fmt: skip
        raise ValueError("differential privacy is not built for the hybrid model yet: set "
                         "[model] kind = \"bpr\" or turn [privacy] off")  # fmt: skip

"""Local recommenders. Parameters are split into shared (gossiped) and private (never leave).

The default model is BPR matrix factorization: item embeddings and item biases are shared, user
embeddings are private. Users and items are identified by their global integer ids; the model
keeps its own rows for the users it has seen, so a node holds only its own users.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch

from gossiprec.gossip.messages import Arrays
from gossiprec.node.bpr_numpy import adam_update, bpr_gradients, sum_rows
from gossiprec.node.config import OPTIMIZERS
from gossiprec.node.types import IntArray


class Recommender(Protocol):
    """What a node needs from a model: train locally, expose shared state, recommend."""

    n_items: int

    def shared_arrays(self) -> Arrays:
        """Numpy views of the gossiped parameters; writing into them updates the model."""
        ...

    def private_arrays(self) -> Arrays:
        """Parameters that never leave the device."""
        ...

    def add_interactions(self, users: IntArray, items: IntArray) -> int:
        """Record positive interactions; returns how many were new."""
        ...

    def train_steps(self, steps: int) -> float:
        """Run minibatch steps over all local interactions; returns the mean loss."""
        ...

    def learn_online(self, users: IntArray, steps: int) -> float:
        """A few steps on these users' interactions (after new ones arrived), moving only their
        private embeddings."""
        ...

    def score(self, users: IntArray, items: IntArray) -> npt.NDArray[np.float32]:
        """Scores [B, C] for users [B] and candidate items [B, C]."""
        ...

    def recommend(self, user: int, k: int, among: IntArray | None = None) -> IntArray:
        """Top-k items for the user (of `among` only, if given), never an item the user has
        already interacted with."""
        ...


@dataclass(frozen=True)
class BPRConfig:
    # Tuned on ML-100K validation HR@10 (never on test); see sim/baselines.py.
    dim: int = 32
    lr: float = 0.005
    l2: float = 1e-2
    batch_size: int = 1024
    negatives: int = 8
    init_std: float = 0.1
    seed: int = 0
    # Optimizer and learning rate of the shared (item) parameters. Adam for one model on all
    # data. Gossip averages every node's update into a mean over nodes, and Adam's
    # per-coordinate normalisation turns each node's few gradients into full-size noisy steps;
    # plain SGD keeps that mean an SGD step on the global loss.
    optimizer: str = "adam"
    # User embeddings are private: only their own node ever updates them, so they always take
    # Adam steps, at `user_lr` (None: the same as `lr`).
    user_lr: float | None = None
    # Largest norm of the shared parameters' gradient per step (0 = no limit). With SGD at
    # gossip's high learning rate, a node holding a handful of interactions would otherwise take
    # huge steps and diverge.
    clip: float = 0.0

    def __post_init__(self) -> None:
        for name in ("dim", "batch_size", "negatives"):
            if getattr(self, name) < 1:
                raise ValueError(f"BPRConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or not (self.user_lr is None or self.user_lr > 0):
            raise ValueError(f"BPRConfig.lr and user_lr must be > 0, got {self.lr}, {self.user_lr}")
        if self.l2 < 0:
            raise ValueError(f"BPRConfig.l2 must be >= 0, got {self.l2}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"BPRConfig.optimizer must be one of {', '.join(OPTIMIZERS)}")


# Batches up to this size step in numpy (node/bpr_numpy.py), larger ones in torch.
NUMPY_BATCH = 256


class BPRMF:
    """BPR matrix factorization (Rendle et al., 2009) with item biases."""

    SHARED: tuple[str, ...] = ("item_embedding", "item_bias")
    PRIVATE = ("user_embedding",)

    def __init__(self, n_items: int, config: BPRConfig | None = None) -> None:
        if n_items < 2:
            raise ValueError(f"n_items must be >= 2, got {n_items}")
        self.n_items = n_items
        self.config = config = config or BPRConfig()
        self._torch_rng = torch.Generator().manual_seed(config.seed)
        self._rng = np.random.default_rng(config.seed)
        self.item_embedding = torch.nn.Parameter(self._init((n_items, config.dim)))
        self.item_bias = torch.nn.Parameter(torch.zeros(n_items))
        self.user_embedding = torch.nn.Parameter(torch.zeros((0, config.dim)))
        self._user_row: dict[int, int] = {}
        self._row_user: list[int] = []
        # Positive pairs as (row, item), and their keys row * n_items + item, sorted, for lookups.
        self._rows = np.zeros(0, dtype=np.int64)
        self._items = np.zeros(0, dtype=np.int64)
        self._keys = np.zeros(0, dtype=np.int64)
        self._order = np.zeros(0, dtype=np.int64)
        self._cursor = 0
        self.steps_taken = 0  # steps that moved the shared parameters
        # Items negatives are drawn from (None: all). Items not in the catalogue yet belong
        # outside it: pushed down as negatives before anyone could touch them, they would start
        # life below everything.
        self.negative_pool: IntArray | None = None
        self._item_optimizer = self._optimizer(self.shared_parameters())
        self._user_optimizer = self._adam_for_users()

    def shared_parameters(self) -> list[torch.nn.Parameter]:
        """The gossiped parameters, in `SHARED` order."""
        return [getattr(self, name) for name in self.SHARED]

    def item_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every item's vector [n_items, dim] and bias [n_items] as the model scores them
        (differentiable in the shared parameters)."""
        return self.item_embedding, self.item_bias

    # -- state -----------------------------------------------------------------------------------

    def shared_arrays(self) -> Arrays:
        return {name: getattr(self, name).detach().numpy() for name in self.SHARED}

    def private_arrays(self) -> Arrays:
        return {"user_embedding": self.user_embedding.detach().numpy()}

    def state(self) -> dict[str, npt.NDArray[np.generic]]:
        """Everything a checkpoint needs besides the interactions (which live in the store)."""
        return {**self.shared_arrays(), **self.private_arrays(),
                "users": np.array(self._row_user, dtype=np.int64)}  # fmt: skip

    def restore(self, state: dict[str, npt.NDArray[np.generic]]) -> None:
        """Load `state()` output into a fresh model, before any interactions are added.

        Shared arrays are copied in place, so numpy views handed out earlier stay live.
        """
        if self._row_user:
            raise ValueError("restore() needs a model without users")
        users = np.asarray(state["users"], dtype=np.int64)
        user_embedding = np.asarray(state["user_embedding"], dtype=np.float32)
        if user_embedding.shape != (len(users), self.config.dim):
            raise ValueError(f"user_embedding has shape {user_embedding.shape}, "
                             f"expected {(len(users), self.config.dim)}")  # fmt: skip
        for name, target in self.shared_arrays().items():
            if state[name].shape != target.shape:
                raise ValueError(f"{name} has shape {state[name].shape}, expected {target.shape}")
        for name, target in self.shared_arrays().items():
            np.copyto(target, state[name])
        self._row_user = [int(u) for u in users]
        self._user_row = {user: row for row, user in enumerate(self._row_user)}
        self.user_embedding = torch.nn.Parameter(torch.from_numpy(user_embedding.copy()))
        self._user_optimizer = self._adam_for_users()

    @property
    def users(self) -> list[int]:
        return list(self._row_user)

    @property
    def n_interactions(self) -> int:
        return len(self._keys)

    def seen_items(self, user: int) -> IntArray:
        row = self._user_row.get(int(user))
        if row is None:
            return np.zeros(0, dtype=np.int64)
        return np.sort(self._items[self._rows == row])

    # -- data ------------------------------------------------------------------------------------

    def add_interactions(self, users: IntArray, items: IntArray) -> int:
        users = np.asarray(users, dtype=np.int64).ravel()
        items = np.asarray(items, dtype=np.int64).ravel()
        if users.shape != items.shape:
            raise ValueError(f"users has {len(users)} entries, items has {len(items)}")
        if len(items) and (items.min() < 0 or items.max() >= self.n_items):
            raise ValueError(f"item ids must lie in [0, {self.n_items})")
        self._ensure_users(users)
        rows = np.fromiter((self._user_row[int(u)] for u in users), np.int64, len(users))
        keys = np.unique(rows * self.n_items + items)
        fresh = keys[~self._contains(keys)]
        if len(fresh):
            self._keys = np.sort(np.concatenate([self._keys, fresh]))
            self._rows = self._keys // self.n_items
            self._items = self._keys % self.n_items
            self._order = self._rng.permutation(len(self._keys))
            self._cursor = 0
        return len(fresh)

    def _ensure_users(self, users: IntArray) -> None:
        new = [int(u) for u in dict.fromkeys(users.tolist()) if int(u) not in self._user_row]
        if not new:
            return
        for user in new:
            self._user_row[user] = len(self._row_user)
            self._row_user.append(user)
        grown = torch.cat([self.user_embedding.detach(), self._init((len(new), self.config.dim))])
        self.user_embedding = torch.nn.Parameter(grown)
        # A fresh optimizer for the grown table; the item optimizer keeps its moments.
        self._user_optimizer = self._adam_for_users()

    def _contains(self, keys: IntArray) -> npt.NDArray[np.bool_]:
        if not len(self._keys):
            return np.zeros(len(keys), dtype=bool)
        at = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        return np.asarray(self._keys[at] == keys)

    def _optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        if self.config.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.config.lr)
        return torch.optim.Adam(params, lr=self.config.lr)

    @property
    def shared_lr(self) -> float:
        return float(self._item_optimizer.param_groups[0]["lr"])

    def scale_shared_lr(self, factor: float) -> None:
        """Set the shared parameters' learning rate to `factor` x the configured one."""
        for group in self._item_optimizer.param_groups:
            group["lr"] = self.config.lr * factor

    def _adam_for_users(self) -> torch.optim.Optimizer:
        lr = self.config.lr if self.config.user_lr is None else self.config.user_lr
        return torch.optim.Adam([self.user_embedding], lr=lr)

    def _init(self, shape: tuple[int, int]) -> torch.Tensor:
        return torch.randn(shape, generator=self._torch_rng) * self.config.init_std

    # -- training --------------------------------------------------------------------------------

    def train_steps(self, steps: int) -> float:
        if not len(self._keys):
            return 0.0
        losses = []
        for _ in range(steps):
            take = self._next_batch()
            losses.append(self._step(self._rows[take], self._items[take]))
        return float(np.mean(losses))

    def steps_per_epoch(self) -> int:
        return max(1, -(-len(self._keys) // self.config.batch_size))

    def learn_online(self, users: IntArray, steps: int) -> float:
        wanted = [self._user_row[int(u)] for u in np.unique(users) if int(u) in self._user_row]
        pool = np.flatnonzero(np.isin(self._rows, wanted))
        if not len(pool):
            return 0.0
        losses = []
        # One user's burst must not yank the shared model that gossip averages: the shared
        # parameters learn from it in the next regular training round.
        for _ in range(steps):
            take = self._rng.choice(pool, size=min(len(pool), self.config.batch_size))
            losses.append(self._step(self._rows[take], self._items[take], shared=False))
        return float(np.mean(losses))

    def _next_batch(self) -> IntArray:
        if self._cursor >= len(self._order):
            self._order = self._rng.permutation(len(self._keys))
            self._cursor = 0
        take = self._order[self._cursor : self._cursor + self.config.batch_size]
        self._cursor += len(take)
        return take

    def _sample_negatives(self, rows: IntArray) -> IntArray:
        shape = (len(rows), self.config.negatives)
        negatives = self._draw_items(shape)
        for _ in range(3):  # resample the few that hit a positive
            hit = self._contains((rows[:, None] * self.n_items + negatives).ravel()).reshape(shape)
            if not hit.any():
                break
            negatives[hit] = self._draw_items(int(hit.sum()))
        return negatives

    def _draw_items(self, size: int | tuple[int, int]) -> IntArray:
        if self.negative_pool is None:
            return self._rng.integers(0, self.n_items, size=size)
        return self.negative_pool[self._rng.integers(0, len(self.negative_pool), size=size)]

    def _step(self, rows: IntArray, items: IntArray, shared: bool = True) -> float:
        if (len(rows) <= NUMPY_BATCH and (self.config.optimizer == "sgd" or not shared)
                and self.SHARED == BPRMF.SHARED):  # fmt: skip
            return self._step_numpy(rows, items, shared)
        return self._step_torch(rows, items, shared)

    def _step_numpy(self, rows: IntArray, items: IntArray, shared: bool) -> float:
        """`_step_torch` on the rows the batch touches (node/bpr_numpy.py); the user rows'
        Adam state is the torch optimizer's, so either step may follow the other."""
        negatives = self._sample_negatives(rows)
        users = self.user_embedding.detach().numpy()
        table, bias = self.item_embedding.detach().numpy(), self.item_bias.detach().numpy()
        grads = bpr_gradients(users[rows], table[items], table[negatives], bias[items],
                              bias[negatives], self.config.l2)  # fmt: skip
        user_rows, user_grad = sum_rows(rows, grads.user)
        dense = np.zeros_like(users)  # Adam moves every row with momentum, as torch's does
        dense[user_rows] = user_grad
        self._adam_users(dense)
        if shared:
            # Each touched row's embedding gradient with its bias gradient as one more column.
            touched = np.concatenate([items, negatives.ravel()])
            per_row = np.concatenate([
                np.column_stack([grads.positive, grads.positive_bias]),
                np.column_stack([grads.negative.reshape(-1, self.config.dim),
                                 grads.negative_bias.ravel()]),
            ])  # fmt: skip
            item_rows, summed = sum_rows(touched, per_row)
            item_grad, bias_grad = summed[:, :-1], summed[:, -1]
            scale = min(1.0, len(rows) / self.config.batch_size)  # see _step_torch
            norm = scale * math.sqrt(float(np.sum(item_grad**2)) + float(np.sum(bias_grad**2)))
            if self.config.clip and norm > self.config.clip:
                scale *= self.config.clip / (norm + 1e-6)  # as clip_grad_norm_
            lr = np.float32(self.shared_lr * scale)
            table[item_rows] -= lr * item_grad
            bias[item_rows] -= lr * bias_grad
            self.steps_taken += 1
        return grads.loss

    def _adam_users(self, grad: npt.NDArray[np.float32]) -> None:
        optimizer = self._user_optimizer
        group, state = optimizer.param_groups[0], optimizer.state[self.user_embedding]
        if not state:  # as torch.optim.Adam initialises it
            state["step"] = torch.tensor(0.0)
            state["exp_avg"] = torch.zeros_like(self.user_embedding)
            state["exp_avg_sq"] = torch.zeros_like(self.user_embedding)
        state["step"] += 1
        adam_update(self.user_embedding.detach().numpy(), grad, state["exp_avg"].numpy(),
                    state["exp_avg_sq"].numpy(), int(state["step"]), group["lr"],
                    group["betas"], group["eps"])  # fmt: skip

    def _step_torch(self, rows: IntArray, items: IntArray, shared: bool = True) -> float:
        # F.embedding, not tensor indexing: its CPU backward sums in a fixed order, so runs
        # with the same seed are bit-identical (indexing's parallel scatter-add is not).
        embed = torch.nn.functional.embedding
        negatives = torch.from_numpy(self._sample_negatives(rows))
        pos_index = torch.from_numpy(items)
        user = embed(torch.from_numpy(rows), self.user_embedding)
        items_table, bias_table = self.item_tables()
        # A private-only step would discard the item gradient: do not compute it.
        if not shared:
            items_table, bias_table = items_table.detach(), bias_table.detach()
        bias_table = bias_table[:, None]
        pos = embed(pos_index, items_table)
        neg = embed(negatives, items_table)
        pos_bias = embed(pos_index, bias_table)[:, 0]
        neg_bias = embed(negatives, bias_table)[..., 0]
        pos_score = (user * pos).sum(-1) + pos_bias
        neg_score = torch.einsum("bd,bnd->bn", user, neg) + neg_bias
        loss = -torch.nn.functional.logsigmoid(pos_score[:, None] - neg_score).mean()
        l2 = user.pow(2).sum() + pos.pow(2).sum() + neg.pow(2).sum() / self.config.negatives
        loss_total = loss + self.config.l2 * l2 / len(rows)
        self._item_optimizer.zero_grad(set_to_none=True)
        self._user_optimizer.zero_grad(set_to_none=True)
        loss_total.backward()  # type: ignore[no-untyped-call]
        self._user_optimizer.step()
        if shared:
            if self.config.optimizer == "sgd" and len(rows) < self.config.batch_size:
                # SGD's shared step sums over interactions: a node holding 20 moves the shared
                # model 20/1024 as far as a full batch would. Gossip averages every node's step,
                # and with a mean a 20-interaction user would weigh as much there as one with
                # 700. (Adam normalises its steps, so a scale would change nothing there.)
                for parameter in self.shared_parameters():
                    if parameter.grad is not None:
                        parameter.grad.mul_(len(rows) / self.config.batch_size)
            if self.config.clip:
                torch.nn.utils.clip_grad_norm_(self.shared_parameters(), self.config.clip)
            self._item_optimizer.step()
            self.steps_taken += 1
        return float(loss.detach())

    def private_round(self, clip: float, noise_multiplier: float, noise: torch.Generator,
                      lr: float) -> float:  # fmt: skip
        """One step on every local interaction with user-level differential privacy: each
        user's gradient of the shared parameters is clipped to `clip` (L2, both arrays
        together), their sum gets Gaussian noise of std `noise_multiplier x clip` on every
        coordinate, and the shared parameters take one SGD step of `lr` along it (see
        node/privacy.py). The private user embeddings take their usual step. The whole of the
        local data is one batch: a round is one release, whatever its size. Returns the mean
        loss."""
        if not len(self._keys):
            return 0.0
        rows, items = self._rows, self._items
        negatives = torch.from_numpy(self._sample_negatives(rows))
        # Gathered copies of the item rows each interaction uses: their gradients are per
        # interaction, so each user's own gradient can be added up and clipped.
        pos_index = torch.from_numpy(items)
        pos = self.item_embedding.detach()[pos_index].requires_grad_()
        neg = self.item_embedding.detach()[negatives].requires_grad_()
        pos_bias = self.item_bias.detach()[pos_index].requires_grad_()
        neg_bias = self.item_bias.detach()[negatives].requires_grad_()
        user = torch.nn.functional.embedding(torch.from_numpy(rows), self.user_embedding)
        pos_score = (user * pos).sum(-1) + pos_bias
        neg_score = torch.einsum("bd,bnd->bn", user, neg) + neg_bias
        losses = -torch.nn.functional.logsigmoid(pos_score[:, None] - neg_score).mean(-1)
        l2 = user.pow(2).sum() + pos.pow(2).sum() + neg.pow(2).sum() / self.config.negatives
        # A sum over interactions at SGD's scale of one step per `batch_size` of them.
        loss = (losses.sum() + self.config.l2 * l2) / self.config.batch_size
        self._user_optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self._user_optimizer.step()
        assert pos.grad is not None and neg.grad is not None
        assert pos_bias.grad is not None and neg_bias.grad is not None
        dim = self.config.dim
        slot_items = torch.cat([pos_index, negatives.reshape(-1)])
        slot_rows = torch.cat([torch.from_numpy(rows), torch.from_numpy(rows).repeat_interleave(
            self.config.negatives)])  # fmt: skip
        slot_grads = torch.cat([
            torch.cat([pos.grad, pos_bias.grad[:, None]], 1),
            torch.cat([neg.grad.reshape(-1, dim), neg_bias.grad.reshape(-1, 1)], 1),
        ])  # fmt: skip
        clipped = clip_per_user(slot_rows, slot_items, slot_grads, self.n_items, clip)
        clipped += torch.randn(clipped.shape, generator=noise) * (noise_multiplier * clip)
        with torch.no_grad():
            self.item_embedding.sub_(lr * clipped[:, :dim])
            self.item_bias.sub_(lr * clipped[:, dim])
        self.steps_taken += 1
        return float(losses.detach().mean())

    # -- inference -------------------------------------------------------------------------------

    def _user_vectors(self, users: IntArray) -> torch.Tensor:
        """Rows for known users; a zero vector (item bias only) for users never seen."""
        rows = torch.tensor([self._user_row.get(int(u), -1) for u in users], dtype=torch.long)
        vectors = torch.zeros((len(rows), self.config.dim))
        known = rows >= 0
        vectors[known] = self.user_embedding.detach()[rows[known]]
        return vectors

    def score(self, users: IntArray, items: IntArray) -> npt.NDArray[np.float32]:
        with torch.no_grad():
            vectors = self._user_vectors(np.asarray(users))
            index = torch.from_numpy(np.asarray(items, dtype=np.int64))
            table, bias = self.item_tables()
            scores = torch.einsum("bd,bcd->bc", vectors, table[index])
            scores += bias[index]
        return scores.numpy()

    def recommend(self, user: int, k: int, among: IntArray | None = None) -> IntArray:
        """Top-k rows for the user (of `among` only, if given)."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        with torch.no_grad():
            vector = self._user_vectors(np.array([user]))[0]
            table, bias = self.item_tables()
            scores = (table @ vector + bias).numpy().astype(np.float64)
        if among is not None:
            allowed = np.zeros(self.n_items, dtype=bool)
            allowed[among] = True
            scores[~allowed] = -np.inf
        scores[self.seen_items(user)] = -np.inf
        k = min(k, int(np.isfinite(scores).sum()))
        top = np.argpartition(-scores, k - 1)[:k] if k else np.zeros(0, dtype=np.int64)
        # Stable order: by score, then by item id.
        return top[np.lexsort((top, -scores[top]))].astype(np.int64)


def clip_per_user(rows: torch.Tensor, items: torch.Tensor, grads: torch.Tensor, n_items: int,
                  clip: float) -> torch.Tensor:  # fmt: skip
    """The sum over users of each user's gradient clipped to `clip`: [n_items, features].

    `grads[k]` is the gradient of item `items[k]`'s row through user row `rows[k]`; a user's
    gradient is the sum of theirs per item, and its norm is over all of its items' rows."""
    keys = rows * n_items + items
    unique, slot = torch.unique(keys, return_inverse=True)
    per_key = torch.zeros((len(unique), grads.shape[1]), dtype=grads.dtype)
    per_key.index_add_(0, slot, grads)
    key_user = unique // n_items
    users, user_of_key = torch.unique(key_user, return_inverse=True)
    norms = torch.zeros(len(users), dtype=grads.dtype)
    norms.index_add_(0, user_of_key, per_key.pow(2).sum(1))
    scale = torch.clamp(clip / torch.clamp(norms.sqrt(), min=1e-12), max=1.0)
    total = torch.zeros((n_items, grads.shape[1]), dtype=grads.dtype)
    total.index_add_(0, unique % n_items, per_key * scale[user_of_key][:, None])
    return total

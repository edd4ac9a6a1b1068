"""The vectorised one-user study: its merges average like gossip and its nodes learn."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from gossiprec.sim.one_user_study import OneUserNodes, StudyConfig
from gossiprec.sim.split import LeaveOneOut, restrict


def test_merges_conserve_the_mean_and_the_nodes_learn(ml100k_split: LeaveOneOut) -> None:
    split = restrict(ml100k_split, np.arange(200))
    config = StudyConfig(merges=2, lr=5000.0, on="valid")
    nodes = OneUserNodes(split, config)
    untrained = nodes.hr10()
    nodes.step(config.lr)
    mean = nodes.items.mean(0).clone()
    spread = float((nodes.items - mean).norm())
    nodes.merge()
    torch.testing.assert_close(nodes.items.mean(0), mean)  # averaging moves no mass
    assert float((nodes.items - mean).norm()) < spread / 1.5  # and pulls copies together
    for _ in range(15):
        nodes.step(config.lr)
        nodes.merge()
    assert nodes.hr10() > untrained + 0.1

    exact = OneUserNodes(split, replace(config, merges=0))
    exact.step(config.lr)
    exact.merge()
    assert bool((exact.items == exact.items[0]).all())

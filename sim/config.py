"""What a simulation runs: a template every node's configuration is made from, and the run's own
settings (length, faults, processes).

The template is a whole node configuration (gossiprec.node.config), so the nodes of a simulation
take the daemon's defaults except where a simulation needs its own, written here once: a
simulation gossips and trains every second (a daemon every 2 s and 1 s), so a 90-second run sees
enough rounds. Each node's data folder, broker and presence settings are filled in per node.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gossiprec.node.config import NodeConfig, default_of
from gossiprec.sim.errors import SimError

# Where a simulated node differs from a daemon's defaults: seconds between gossip rounds and
# between training rounds; items are the dataset's rows (no signed catalogue).
SIM_DEFAULTS: dict[str, object] = {"gossip.period": 1.0, "train.period": 1.0,
                                   "model.item_ids": "rows"}  # fmt: skip


def node_template(n_items: int) -> NodeConfig:
    """The simulation's defaults for its nodes (the data folder is each node's own)."""
    return NodeConfig.defaults(Path("node"), n_items).changed(SIM_DEFAULTS)


def template_default(key: str) -> Any:
    """A key's value in the template (for help texts: no catalogue size needed)."""
    return SIM_DEFAULTS.get(key, default_of(key))


@dataclass(frozen=True)
class SimConfig:
    node: NodeConfig  # every node's configuration is this, with its own folder and broker
    duration: float = 120.0  # seconds of gossip after every starting node is up
    seed: int = 0
    churn: float = 0.0  # chance per node per minute of leaving for `downtime` seconds
    downtime: float = 10.0
    drop: float = 0.0  # share of model messages lost
    late_joiners: int = 0  # nodes that start only at `late_join_at` x duration
    late_join_at: float = 0.5
    eval_every: float = 5.0
    workers: int = 1  # processes the nodes are dealt over (see `default_workers`)
    attackers: float = 0.0  # share of the nodes that are compromised (sim/attacks.py)
    attack: str | None = None  # what they do: one of sim.attacks.ATTACKS
    targets: int = 5  # promotion: cold items the attackers push
    curious: int = 1  # honest nodes that also infer what their peers' users touched (curious.py)

    def __post_init__(self) -> None:
        if self.duration <= 0 or self.eval_every <= 0:
            raise SimError("--duration and --eval-every must be > 0")
        if not 0 <= self.churn < 60 or not 0 <= self.drop < 1 or self.late_joiners < 0:
            raise SimError("need --churn in [0, 60), --drop in [0, 1) and --late-joiners >= 0")
        if not 0 < self.late_join_at < 1:
            raise SimError("late_join_at must lie in (0, 1)")
        if self.workers < 1 or self.curious < 0:
            raise SimError("--workers must be >= 1 and --curious >= 0")
        if not 0 <= self.attackers < 0.5 or (self.attackers > 0) != (self.attack is not None):
            raise SimError("--attackers F (a share in [0, 0.5)) and --attack KIND go together")

    def as_dict(self) -> dict[str, object]:
        """Plain values for the report (the node template by section)."""
        run = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "node"}
        return {**run, "node": self.node.as_dict()}

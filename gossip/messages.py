"""What the protocol core exchanges: model updates, their kinds, and the sends it asks for.

The wire form of an update is gossip/codec.py's business; these are the in-memory messages the
core reads and returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import numpy.typing as npt

# float32, or float16 for a snapshot kept at the precision the float16 codec sends
FloatArray = npt.NDArray[np.float32] | npt.NDArray[np.float16]
RowIndex = npt.NDArray[np.int32]
Arrays = dict[str, FloatArray]
Rows = dict[str, RowIndex]


class Kind(IntEnum):
    PUSH_SUM = 1  # a share of the sender's mass: merge, never reply
    MERGE_REQUEST = 2  # pairwise: merge and reply with your pre-merge parameters
    MERGE_REPLY = 3  # pairwise: merge


@dataclass(frozen=True)
class ModelUpdate:
    kind: Kind
    params: Arrays
    weight: float = 1.0
    version: int = 0
    sent_at: float = 0.0
    rows: Rows = field(default_factory=dict)  # sparse codecs: the row indices carried
    alpha: float = 0.0  # MERGE_REPLY: the merge weight the replier used
    reply_to: float = 0.0  # MERGE_REPLY: sent_at of the request it answers


@dataclass(frozen=True)
class Send:
    peer: bytes
    update: ModelUpdate

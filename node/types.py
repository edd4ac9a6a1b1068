"""Array aliases shared by node/ and the layers above (the float32 parameter dicts are gossip's)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]

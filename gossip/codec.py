"""Tensor codec for model updates: msgpack, a dtype allowlist, and every size checked first.

An array travels as {"dtype", "shape", "data"} plus, for int8, per-row float32 "scales", and,
for the sparse variant, int32 "rows" (the row indices carried). Codecs:

- float32: exact.
- float16: |error| <= 2^-11 * |x| for |x| in float16's normal range (up to 65504).
- int8: per-row symmetric scale max|row| / 127; |error| <= scale / 2 per element.
- sparse-*: a round-robin window of the rows (never chosen by what changed: that would tell
  which items the sender's users touched), each row encoded with the inner codec; rows not
  carried are simply not merged by the receiver.

Decoding never trusts a length or a shape: the message size is checked before parsing, and each
array's byte length must equal its shape times its dtype size before an array is built.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gossiprec.crypto.wire import pack, unpack
from gossiprec.gossip.errors import DecodeError
from gossiprec.gossip.messages import FloatArray, Kind, ModelUpdate, RowIndex

CODECS = ("float32", "float16", "int8", "sparse-float16", "sparse-int8")
_DTYPES: dict[str, np.dtype[Any]] = {
    "<f4": np.dtype("<f4"), "<f2": np.dtype("<f2"), "|i1": np.dtype("i1"), "<i4": np.dtype("<i4")
}  # fmt: skip
MAX_ARRAYS = 16
MAX_NAME = 64
DEFAULT_MAX_BYTES = 4 * 1024 * 1024


@dataclass
class CodecStats:
    """Bytes and messages through a codec, in each direction."""

    bytes_sent: Counter[str] = field(default_factory=Counter)
    bytes_received: Counter[str] = field(default_factory=Counter)
    messages_sent: Counter[str] = field(default_factory=Counter)
    messages_received: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {name: dict(getattr(self, name)) for name in
                ("bytes_sent", "bytes_received", "messages_sent", "messages_received")}  # fmt: skip


@dataclass(frozen=True)
class Codec:
    name: str = "float32"
    sparse_fraction: float = 0.25  # share of rows a sparse message carries

    def __post_init__(self) -> None:
        if self.name not in CODECS:
            raise ValueError(f"codec {self.name!r} is unknown; choose one of {', '.join(CODECS)}")
        if not 0.0 < self.sparse_fraction <= 1.0:
            raise ValueError(f"sparse_fraction must lie in (0, 1], got {self.sparse_fraction}")

    @property
    def sparse(self) -> bool:
        return self.name.startswith("sparse-")

    @property
    def inner(self) -> str:
        return self.name.removeprefix("sparse-")


def select_rows(n: int, fraction: float, cursor: int) -> tuple[RowIndex, int]:
    """Rows for a sparse message, ascending, and the next cursor: the next `fraction` of the
    rows round-robin, so every row is refreshed within 1 / fraction messages.

    Which rows travel never depends on the model or the data: choosing "the rows that moved
    most" (as this codec once did) tells every receiver which items the sender's users touched.
    """
    count = max(1, math.ceil(fraction * n))
    if count >= n:
        return np.arange(n, dtype=np.int32), cursor
    chosen = np.sort((cursor + np.arange(count)) % n).astype(np.int32)
    return chosen, int((cursor + count) % n)


def encode(update: ModelUpdate, codec: Codec, stats: CodecStats | None = None) -> bytes:
    arrays: dict[str, Any] = {}
    for name, array in update.params.items():
        rows = None
        if codec.sparse:
            rows = update.rows.get(name, np.arange(len(array), dtype=np.int32))
        values = array if rows is None else array[rows]
        arrays[name] = _encode_array(values, codec.inner)
        if rows is not None:
            arrays[name]["rows"] = _raw(np.asarray(rows, dtype="<i4"))
            arrays[name]["total"] = len(array)
    data = pack({"k": int(update.kind), "w": float(update.weight), "v": int(update.version),
                 "t": float(update.sent_at), "c": codec.name, "a": arrays,
                 "m": float(update.alpha), "r": float(update.reply_to)})  # fmt: skip
    if stats is not None:
        stats.bytes_sent[codec.name] += len(data)
        stats.messages_sent[codec.name] += 1
    return data


def _raw(array: np.ndarray) -> dict[str, Any]:
    # A view of the bytes, not a copy: msgpack copies them into the message once.
    data = np.ascontiguousarray(array).data.cast("B")
    return {"dtype": array.dtype.str, "shape": list(array.shape), "data": data}


def _encode_array(array: FloatArray, codec: str) -> dict[str, Any]:
    if codec == "float32":
        return _raw(array.astype("<f4", copy=False))
    if codec == "float16":
        return _raw(array.astype("<f2", copy=False))
    rows = array.reshape(len(array), -1) if array.ndim > 1 else array.reshape(-1, 1)
    scales = (np.abs(rows).max(axis=1) / 127.0).astype("<f4")
    safe = np.where(scales > 0, scales, 1.0)
    quantized = np.clip(np.rint(rows / safe[:, None]), -127, 127).astype("i1").reshape(array.shape)
    return {**_raw(quantized), "scales": _raw(scales)}


def decode(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    expected: dict[str, tuple[int, ...]] | None = None,
    stats: CodecStats | None = None,
) -> ModelUpdate:
    """Parse and validate; `expected` pins each array's name and full shape (all must be there).

    Whatever the bytes, the only error is DecodeError: the checks below are meant to catch
    everything, and anything they miss is still turned into one ("malformed")."""
    try:
        return _decode(data, max_bytes, expected, stats)
    except DecodeError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, OverflowError) as error:
        raise DecodeError("malformed", type(error).__name__) from None


def _decode(data: bytes, max_bytes: int, expected: dict[str, tuple[int, ...]] | None,
            stats: CodecStats | None) -> ModelUpdate:  # fmt: skip
    if len(data) > max_bytes:
        raise DecodeError("oversized", f"{len(data)} > {max_bytes}")
    try:
        message = unpack(data, max_size=max_bytes)
    except ValueError as exc:
        raise DecodeError("malformed", str(exc)) from None
    if not isinstance(message, dict) or set(message) != {"k", "w", "v", "t", "c", "a", "m", "r"}:
        raise DecodeError("malformed", "not a model update")
    if not isinstance(message["k"], int) or message["k"] not in set(Kind):
        raise DecodeError("malformed", "unknown kind")
    kind = Kind(message["k"])
    weight, version, sent_at, codec = message["w"], message["v"], message["t"], message["c"]
    if not (isinstance(weight, float) and math.isfinite(weight) and weight >= 0):
        raise DecodeError("malformed", "weight")
    if not (isinstance(version, int) and version >= 0 and isinstance(sent_at, float)
            and math.isfinite(sent_at)):  # fmt: skip
        raise DecodeError("malformed", "version or time")
    alpha, reply_to = message["m"], message["r"]
    if not (isinstance(alpha, float) and 0.0 <= alpha <= 1.0 and isinstance(reply_to, float)
            and math.isfinite(reply_to)):  # fmt: skip
        raise DecodeError("malformed", "alpha or reply_to")
    if not isinstance(codec, str) or codec not in CODECS:
        raise DecodeError("codec", str(codec)[:32])
    arrays = message["a"]
    if not isinstance(arrays, dict) or not 0 < len(arrays) <= MAX_ARRAYS:
        raise DecodeError("malformed", "arrays")
    params: dict[str, FloatArray] = {}
    rows: dict[str, RowIndex] = {}
    for name, encoded in arrays.items():
        if not isinstance(name, str) or len(name) > MAX_NAME:
            raise DecodeError("malformed", "array name")
        if expected is not None and name not in expected:
            raise DecodeError("shape", f"unexpected array {name!r}")
        values, row_index = _decode_array(encoded, str(codec), max_bytes)
        full_shape = values.shape if row_index is None else (encoded["total"], *values.shape[1:])
        if expected is not None and tuple(full_shape) != expected[name]:
            raise DecodeError("shape", f"{name} has shape {full_shape}, expected {expected[name]}")
        params[name] = values
        if row_index is not None:
            rows[name] = row_index
    if expected is not None and set(params) != set(expected):
        raise DecodeError("shape", f"missing arrays {sorted(set(expected) - set(params))}")
    if stats is not None:
        stats.bytes_received[str(codec)] += len(data)
        stats.messages_received[str(codec)] += 1
    return ModelUpdate(kind, params, weight, version, sent_at, rows, alpha, reply_to)


def _array(encoded: Any, allowed: set[str], max_bytes: int) -> np.ndarray:
    if not isinstance(encoded, dict):
        raise DecodeError("malformed", "array is not a map")
    dtype, shape, data = encoded.get("dtype"), encoded.get("shape"), encoded.get("data")
    if not isinstance(dtype, str) or dtype not in allowed:
        raise DecodeError("dtype", str(dtype)[:16])
    if (not isinstance(shape, list) or not 1 <= len(shape) <= 4
            or not all(type(d) is int and 0 <= d <= max_bytes for d in shape)):  # fmt: skip
        raise DecodeError("shape", "bad shape")
    if not isinstance(data, bytes):
        raise DecodeError("malformed", "data is not bytes")
    kind = _DTYPES[str(dtype)]
    if math.prod(shape) * kind.itemsize != len(data):
        raise DecodeError("size", f"{len(data)} bytes for shape {shape} of {dtype}")
    array: np.ndarray = np.frombuffer(data, dtype=kind).reshape(shape)
    return array


def _decode_array(encoded: Any, codec: str, max_bytes: int) -> tuple[FloatArray, RowIndex | None]:
    inner = codec.removeprefix("sparse-")
    wanted = {"float32": "<f4", "float16": "<f2", "int8": "|i1"}[inner]
    array = _array(encoded, {wanted}, max_bytes)
    if inner == "int8":
        scales = _array(encoded.get("scales"), {"<f4"}, max_bytes)
        if scales.shape != (array.shape[0],):
            raise DecodeError("shape", "one scale per row expected")
        if not np.all(np.isfinite(scales)) or np.any(scales < 0):
            raise DecodeError("nonfinite", "scales")
        rows = array.reshape(array.shape[0], math.prod(array.shape[1:]))
        values = (rows.astype(np.float32) * scales[:, None]).reshape(array.shape)
    else:
        values = array.astype(np.float32)
    if not np.all(np.isfinite(values)):
        raise DecodeError("nonfinite", "values")
    row_index = None
    if codec.startswith("sparse-"):
        row_index = _array(encoded.get("rows"), {"<i4"}, max_bytes)
        total = encoded.get("total")
        if (row_index.shape != (len(values),) or type(total) is not int or total < 1
                or (len(row_index) and (row_index.min() < 0 or row_index.max() >= total))
                or np.any(np.diff(row_index) <= 0)):  # fmt: skip
            raise DecodeError("shape", "sparse rows must be increasing and inside the array")
        row_index = row_index.astype(np.int32)
    return values, row_index

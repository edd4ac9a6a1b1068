"""Tensor codec for model updates: msgpack, a dtype allowlist, and every size checked first.

A message is the arrays' bytes, each starting 8-byte aligned, then a msgpack map that describes
them ({"dtype", "shape"} per array plus, for int8, per-row float32 "scales", and, for the sparse
variant, int32 "rows": the row indices carried), then that map's length (4 bytes, big-endian).
So a sender copies each array once, and a receiver's arrays are aligned read-only views into the
message it decrypted, not copies. Codecs:

- float32: exact.
- float16: |error| <= 2^-11 * |x| for |x| in float16's normal range (up to 65504).
- int8: per-row symmetric scale max|row| / 127; |error| <= scale / 2 per element.
- sparse-*: a round-robin window of the rows (never chosen by what changed: that would tell
  which items the sender's users touched), each row encoded with the inner codec; rows not
  carried are simply not merged by the receiver.

Decoding never trusts a length or a shape: the message size is checked before parsing, each
array's bytes (its shape times its dtype size) must lie inside the message before an array is
built, and together the arrays must account for every byte before the description.
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
MAX_META_BYTES = 16 * 1024  # the description: names, shapes and scalars, never array data
ALIGN = 8
_ARRAY_FIELDS = {"dtype", "shape", "scales", "rows", "total"}
_FIELDS = {"k", "w", "v", "t", "c", "a", "m", "r"}
_KINDS = frozenset(Kind)
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
    segments: list[np.ndarray] = []
    for name, array in update.params.items():
        rows = None
        if codec.sparse:
            rows = update.rows.get(name, np.arange(len(array), dtype=np.int32))
        values = array if rows is None else array[rows]
        arrays[name] = _encode_array(values, codec.inner, segments)
        if rows is not None:
            arrays[name]["rows"] = _segment(np.asarray(rows, dtype="<i4"), segments)
            arrays[name]["total"] = len(array)
    meta = pack({"k": int(update.kind), "w": float(update.weight), "v": int(update.version),
                 "t": float(update.sent_at), "c": codec.name, "a": arrays,
                 "m": float(update.alpha), "r": float(update.reply_to)})  # fmt: skip
    parts: list[Any] = []
    for segment in segments:  # views: the arrays are copied once, here
        parts += [segment.data.cast("B"), bytes(_padding(segment.nbytes))]
    data = b"".join([*parts, meta, len(meta).to_bytes(4, "big")])
    if stats is not None:
        stats.bytes_sent[codec.name] += len(data)
        stats.messages_sent[codec.name] += 1
    return data


def _padding(size: int) -> int:
    return -size % ALIGN


def _segment(array: np.ndarray, segments: list[np.ndarray]) -> dict[str, Any]:
    segments.append(np.ascontiguousarray(array))
    return {"dtype": array.dtype.str, "shape": list(array.shape)}


def _encode_array(array: FloatArray, codec: str, segments: list[np.ndarray]) -> dict[str, Any]:
    if codec == "float32":
        return _segment(array.astype("<f4", copy=False), segments)
    if codec == "float16":
        return _segment(array.astype("<f2", copy=False), segments)
    rows = array.reshape(len(array), -1) if array.ndim > 1 else array.reshape(-1, 1)
    scales = (np.abs(rows).max(axis=1) / 127.0).astype("<f4")
    safe = np.where(scales > 0, scales, 1.0)
    quantized = np.clip(np.rint(rows / safe[:, None]), -127, 127).astype("i1").reshape(array.shape)
    described = _segment(quantized, segments)
    return {**described, "scales": _segment(scales, segments)}


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
    meta_bytes = int.from_bytes(data[-4:], "big")
    if len(data) < 4 or meta_bytes > min(MAX_META_BYTES, len(data) - 4):
        raise DecodeError("malformed", "no description of the arrays")
    body = memoryview(data)[: len(data) - 4 - meta_bytes]
    try:
        message = unpack(data[len(body) : len(data) - 4], max_size=MAX_META_BYTES)
    except ValueError as exc:
        raise DecodeError("malformed", str(exc)) from None
    if not isinstance(message, dict) or message.keys() != _FIELDS:
        raise DecodeError("malformed", "not a model update")
    if not isinstance(message["k"], int) or message["k"] not in _KINDS:
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
    segments = _Segments(body, max_bytes)
    for name, encoded in arrays.items():
        if not isinstance(name, str) or len(name) > MAX_NAME:
            raise DecodeError("malformed", "array name")
        if expected is not None and name not in expected:
            raise DecodeError("shape", f"unexpected array {name!r}")
        values, row_index = _decode_array(encoded, str(codec), segments)
        full_shape = values.shape if row_index is None else (encoded["total"], *values.shape[1:])
        if expected is not None and tuple(full_shape) != expected[name]:
            raise DecodeError("shape", f"{name} has shape {full_shape}, expected {expected[name]}")
        params[name] = values
        if row_index is not None:
            rows[name] = row_index
    if segments.offset != len(body):
        raise DecodeError("size", f"{len(body) - segments.offset} bytes no array describes")
    if expected is not None and set(params) != set(expected):
        raise DecodeError("shape", f"missing arrays {sorted(set(expected) - set(params))}")
    if stats is not None:
        stats.bytes_received[str(codec)] += len(data)
        stats.messages_received[str(codec)] += 1
    return ModelUpdate(kind, params, weight, version, sent_at, rows, alpha, reply_to)


class _Segments:
    """The arrays' bytes, handed out in the order the description lists them."""

    def __init__(self, body: memoryview, max_bytes: int) -> None:
        self.body = body
        self.max_bytes = max_bytes  # bounds each dimension, as no array can be larger
        self.offset = 0

    def take(self, encoded: Any, allowed: set[str]) -> np.ndarray:
        """The next array, a read-only view into the message, once its description is checked."""
        if not isinstance(encoded, dict) or not encoded.keys() <= _ARRAY_FIELDS:
            raise DecodeError("malformed", "array is not a described map")
        dtype, shape = encoded.get("dtype"), encoded.get("shape")
        if not isinstance(dtype, str) or dtype not in allowed:
            raise DecodeError("dtype", str(dtype)[:16])
        if (
            not isinstance(shape, list)
            or not 1 <= len(shape) <= 4
            or not all(type(d) is int and 0 <= d <= self.max_bytes for d in shape)
        ):
            raise DecodeError("shape", "bad shape")
        kind, count = _DTYPES[dtype], math.prod(shape)
        size = count * kind.itemsize
        if self.offset + size > len(self.body):
            raise DecodeError("size", f"{size} bytes for shape {shape} of {dtype}: past the end")
        array = np.frombuffer(self.body, kind, count, self.offset).reshape(shape)
        self.offset += size + _padding(size)
        return array


def _decode_array(encoded: Any, codec: str,
                  segments: _Segments) -> tuple[FloatArray, RowIndex | None]:  # fmt: skip
    inner = codec.removeprefix("sparse-")
    wanted = {"float32": "<f4", "float16": "<f2", "int8": "|i1"}[inner]
    array = segments.take(encoded, {wanted})
    if inner == "int8":
        scales = segments.take(encoded.get("scales"), {"<f4"})
        if scales.shape != (array.shape[0],):
            raise DecodeError("shape", "one scale per row expected")
        if not np.all(np.isfinite(scales)) or np.any(scales < 0):
            raise DecodeError("nonfinite", "scales")
        rows = array.reshape(array.shape[0], math.prod(array.shape[1:]))
        values = (rows.astype(np.float32) * scales[:, None]).reshape(array.shape)
    else:  # float32 stays a read-only view into the message: nothing writes into an update
        values = array.astype(np.float32, copy=False)
    if not np.isfinite(values).all():
        raise DecodeError("nonfinite", "values")
    row_index = None
    if codec.startswith("sparse-"):
        row_index = segments.take(encoded.get("rows"), {"<i4"})
        total = encoded.get("total")
        if (row_index.shape != (len(values),) or type(total) is not int or total < 1
                or (len(row_index) and (row_index.min() < 0 or row_index.max() >= total))
                or np.any(np.diff(row_index) <= 0)):  # fmt: skip
            raise DecodeError("shape", "sparse rows must be increasing and inside the array")
        row_index = row_index.astype(np.int32)
    return values, row_index

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gossiprec.crypto.wire import pack
from gossiprec.gossip.codec import Codec, CodecStats, decode, encode
from gossiprec.gossip.errors import DecodeError
from gossiprec.gossip.messages import Kind, ModelUpdate

finite32 = st.floats(-1e4, 1e4, allow_nan=False, width=32)
matrices = hnp.arrays(
    np.float32, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40), elements=finite32
)


def _round_trip(array: np.ndarray, codec: str) -> np.ndarray:
    update = ModelUpdate(Kind.MERGE_REQUEST, {"item_embedding": array}, 1.0, 3, 12.5)
    decoded = decode(encode(update, Codec(codec)), expected={"item_embedding": array.shape})
    assert (decoded.kind, decoded.version, decoded.sent_at) == (Kind.MERGE_REQUEST, 3, 12.5)
    return decoded.params["item_embedding"]


@settings(max_examples=300, deadline=None)
@given(array=matrices)
def test_float32_is_exact(array: np.ndarray) -> None:
    assert np.array_equal(_round_trip(array, "float32"), array)


@settings(max_examples=300, deadline=None)
@given(array=matrices)
def test_float16_error_is_within_half_an_ulp(array: np.ndarray) -> None:
    out = _round_trip(array, "float16")
    # Relative 2^-11 in the normal range; absolute 2^-25 below it (subnormal spacing / 2).
    bound = np.maximum(np.abs(array) * 2.0**-11, 2.0**-25)
    assert np.all(np.abs(out - array) <= bound)


@settings(max_examples=300, deadline=None)
@given(array=matrices)
def test_int8_error_is_within_half_a_step_of_the_row_scale(array: np.ndarray) -> None:
    out = _round_trip(array, "int8")
    scale = np.abs(array).max(axis=1, keepdims=True) / 127.0
    assert np.all(np.abs(out - array) <= scale / 2 * (1 + 1e-5) + 1e-30)


def test_received_float32_arrays_are_aligned_read_only_views_into_the_message() -> None:
    update = ModelUpdate(Kind.PUSH_SUM, {"b": np.ones(3, np.float32), "e": np.eye(4, 3,
                         dtype=np.float32)})  # fmt: skip
    data = encode(update, Codec("float32"))
    decoded = decode(data)
    for name, array in decoded.params.items():
        assert np.array_equal(array, update.params[name])
        assert array.base is not None and not array.flags.writeable and array.flags.aligned
    # Arrays of 3 and 12 floats: the second starts after 4 bytes of padding.
    assert len(data) == 16 + 48 + int.from_bytes(data[-4:], "big") + 4


def test_sparse_carries_only_the_rows_asked_for() -> None:
    array = np.arange(400, dtype=np.float32).reshape(100, 4)
    rows = np.array([1, 7], dtype=np.int32)
    update = ModelUpdate(Kind.MERGE_REQUEST, {"e": array}, rows={"e": rows})
    sparse = encode(update, Codec("sparse-float16"))
    dense = encode(update, Codec("float32"))
    decoded = decode(sparse, expected={"e": (100, 4)})
    assert decoded.rows["e"].tolist() == [1, 7]
    assert np.array_equal(decoded.params["e"], array[[1, 7]])
    assert len(sparse) < len(dense) / 10
    assert np.array_equal(decode(dense).params["e"], array)  # dense codecs ignore rows


def test_stats_count_bytes_per_codec_in_both_directions() -> None:
    stats = CodecStats()
    update = ModelUpdate(Kind.PUSH_SUM, {"b": np.ones(100, np.float32)})
    data = encode(update, Codec("int8"), stats)
    decode(data, stats=stats)
    assert stats.bytes_sent["int8"] == stats.bytes_received["int8"] == len(data)
    assert stats.messages_sent["int8"] == 1


def frame(message: dict[str, object], segments: list[bytes]) -> bytes:
    """A message as the codec lays it out: the arrays' bytes, each padded to 8, then their
    description and its length."""
    parts = []
    for segment in segments:
        parts += [segment, bytes(-len(segment) % 8)]
    meta = pack(message)
    return b"".join([*parts, meta, len(meta).to_bytes(4, "big")])


def _valid_message(**changes: object) -> bytes:
    array: dict[str, object] = {"dtype": "<f4", "shape": [2, 2]}
    data: object = np.ones(4, "<f4").tobytes()
    message: dict[str, object] = {
        "k": 2,
        "w": 1.0,
        "v": 0,
        "t": 0.0,
        "c": "float32",
        "a": {"e": array},
        "m": 0.0,
        "r": 0.0,
    }
    for key, value in changes.items():
        if key == "data":
            data = value
        elif key in array:
            array[key] = value
        else:
            message[key] = value
    if not isinstance(data, bytes):  # not array bytes: then a field no array may have
        array["data"], data = data, b""
    return frame(message, [data])


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"dtype": "<f8"}, "dtype"),
        ({"dtype": "|O"}, "dtype"),
        ({"shape": [3, 2]}, "size"),
        ({"shape": [2, -2]}, "shape"),
        ({"shape": [10**9, 10**9]}, "shape"),
        ({"data": b"\x00" * 8}, "size"),  # the shape reaches past the arrays' bytes
        ({"data": b"\x00" * 24}, "size"),  # bytes no array describes
        ({"data": [b"\x00" * 16]}, "malformed"),  # data inside the description
        ({"data": np.full(4, np.nan, "<f4").tobytes()}, "nonfinite"),
        ({"data": np.full(4, np.inf, "<f4").tobytes()}, "nonfinite"),
        ({"c": "pickle"}, "codec"),
        ({"k": 99}, "malformed"),
        ({"w": float("nan")}, "malformed"),
        ({"m": 2.0}, "malformed"),
        ({"a": {}}, "malformed"),
        # Found by fuzzing a certified sender's messages: all must be DecodeError, nothing else.
        ({"dtype": ["<f4"]}, "dtype"),
        ({"dtype": {"a": 1}}, "dtype"),
        ({"shape": [True, 4]}, "shape"),
        ({"k": [2]}, "malformed"),
        ({"c": ["float32"]}, "codec"),
    ],
)
def test_hostile_payloads_are_refused_with_a_reason(
    changes: dict[str, object], reason: str
) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(_valid_message(**changes))
    assert caught.value.reason == reason


def test_size_limit_is_checked_before_parsing_and_shapes_are_pinned() -> None:
    with pytest.raises(DecodeError, match="oversized"):
        decode(b"\x00" * 2_000, max_bytes=1_000)
    with pytest.raises(DecodeError) as caught:
        decode(_valid_message(), expected={"e": (4, 1)})
    assert caught.value.reason == "shape"
    with pytest.raises(DecodeError) as caught:
        decode(_valid_message(), expected={"other": (2, 2)})
    assert caught.value.reason == "shape"
    with pytest.raises(DecodeError, match="missing arrays"):  # one array of two is not a model
        decode(_valid_message(), expected={"e": (2, 2), "bias": (2,)})


def test_a_zero_row_int8_array_is_a_decode_error_or_an_empty_array() -> None:
    empty = {"dtype": "|i1", "shape": [0, 4], "scales": {"dtype": "<f4", "shape": [0]}}
    message = {"k": 2, "w": 1.0, "v": 0, "t": 0.0, "c": "int8", "a": {"e": empty}, "m": 0.0,
               "r": 0.0}  # fmt: skip
    update = decode(frame(message, [b"", b""]))
    assert update.params["e"].shape == (0, 4)


@settings(max_examples=3_000, deadline=None)
@given(
    field=st.sampled_from(["k", "w", "v", "t", "c", "m", "r", "dtype", "shape", "data"]),
    value=st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**63), 2**64 - 1)
        | st.floats()
        | st.text(max_size=8)
        | st.binary(max_size=16),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
        ),
        max_leaves=6,
    ),
)
def test_any_value_in_any_field_raises_only_decode_error(field: str, value: object) -> None:
    with contextlib.suppress(DecodeError):  # decoding is fine too: the value may be valid
        decode(_valid_message(**{field: value}), expected={"e": (2, 2)})


@settings(max_examples=2_000, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_bytes_raise_only_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)

"""msgpack with limits. Nothing here ever builds an object type from the wire but plain data."""

from __future__ import annotations

from typing import Any

import msgpack


def pack(value: Any) -> bytes:
    return bytes(msgpack.packb(value, use_bin_type=True))


def pack_with_tail(head: list[Any], tail: bytes) -> bytes:
    """msgpack of `[*head, tail]` with `tail` as bin, built with one copy of `tail`.

    msgpack's packer grows its buffer while copying a large bin; for model-sized payloads that
    costs as much as encrypting them, so the array header and bin header are written directly.
    """
    array = bytes(msgpack.packb(head, use_bin_type=True))
    count = len(head) + 1
    if count > 15 or array[0] != 0x90 | len(head):
        raise ValueError("pack_with_tail supports up to 14 head items")
    return b"".join([bytes([0x90 | count]), array[1:], b"\xc6", len(tail).to_bytes(4, "big"), tail])


def unpack_with_tail(data: bytes, *, head: int, max_size: int,
                     max_head_bytes: int = 1_024) -> tuple[list[Any], memoryview]:  # fmt: skip
    """The inverse of pack_with_tail for heads of small integers (0-127) and byte strings, all a
    frame holds: the `head` items, and the tail as a view into `data` instead of a copy. Read
    by hand, as msgpack would, rather than through a streaming unpacker that costs more than
    the rest of an envelope's parsing. Raises ValueError unless `data` is exactly such a frame."""
    if len(data) > max_size:
        raise ValueError(f"{len(data)} bytes exceeds the limit of {max_size}")
    if not data or data[0] != 0x90 | (head + 1):
        raise ValueError(f"not an array of {head + 1} items")
    items: list[Any] = []
    at = 1
    for _ in range(head):
        marker = data[at : at + 1]
        if marker and marker[0] < 0x80:  # positive fixint
            items.append(marker[0])
            at += 1
            continue
        width = _BIN_WIDTHS.get(bytes(marker))
        if width is None:
            raise ValueError("a head item is neither a small integer nor bytes")
        size = int.from_bytes(data[at + 1 : at + 1 + width], "big")
        start = at + 1 + width
        if start + size > min(len(data), 1 + max_head_bytes):
            raise ValueError("a head item runs past the head")
        items.append(bytes(data[start : start + size]))
        at = start + size
    tail = at + 5
    if data[at : at + 1] != b"\xc6" or int.from_bytes(data[at + 1 : tail]) != len(data) - tail:
        raise ValueError("the tail is not one bin32 to the end")
    return items, memoryview(data)[tail:]


_BIN_WIDTHS = {b"\xc4": 1, b"\xc5": 2, b"\xc6": 4}  # msgpack bin 8, 16, 32: bytes of length


def whole(value: object, low: int = 0, high: int = 2**63 - 1) -> bool:
    """An integer in [low, high] as msgpack carries it: booleans, which Python counts as 0 and
    1, are not (a True where a version 1 belongs must not pass for it)."""
    return type(value) is int and low <= value <= high


def unpack(data: bytes, *, max_size: int) -> Any:
    """Unpack one msgpack value; raises ValueError on anything malformed or over the limits."""
    if len(data) > max_size:
        raise ValueError(f"{len(data)} bytes exceeds the limit of {max_size}")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_bin_len=max_size,
            max_str_len=4096,
            max_array_len=65_536,
            max_map_len=1_024,
            max_ext_len=0,
        )
    except (msgpack.UnpackException, msgpack.ExtraData, ValueError, TypeError) as exc:
        raise ValueError(f"malformed msgpack: {exc}") from exc

"""Deterministic percentage bucketing, byte for byte the same as flagd's ``fractional``.

flagd's accepted decision "Harden hashing consistency and add support for non-string attributes in
fractional evaluation" (implemented by PyPI ``openfeature-flagd-core`` 2.x) hashes the canonical CBOR
encoding of the two-element array ``[salt, value]`` with unsigned murmur3_32 (seed 0) and maps the hash
onto the cumulative integer weights with ``(h * total) >> 32``. Because the bucket of a user never moves
and weights are walked in order, raising the first variant's weight only ever adds users to it.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import cbor2
import mmh3

MAX_TOTAL_WEIGHT = 2_147_483_647  # flagd refuses weight sums above MaxInt32
_CBOR_ARRAY_OF_TWO = b"\x82"
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1
BucketValue = str | int | float | bool


def _cbor_text(text: str) -> bytes:
    """Canonical CBOR of a text string (major type 3, shortest length header): the hot path."""
    data = text.encode("utf-8")
    size = len(data)
    if size < 24:
        return bytes((0x60 | size,)) + data
    if size < 0x100:
        return bytes((0x78, size)) + data
    if size < 0x10000:
        return b"\x79" + struct.pack(">H", size) + data
    return b"\x7a" + struct.pack(">I", size) + data


def normalize_number(value: Any) -> Any:
    """Integral floats hash as integers (1.0 and 1 land in the same bucket), as flagd specifies."""
    if isinstance(value, float) and value.is_integer() and _INT64_MIN <= value <= _UINT64_MAX:
        return int(value)
    return value


def _cbor_value(value: Any) -> bytes:
    if isinstance(value, str):
        return _cbor_text(value)
    return cbor2.dumps(normalize_number(value), canonical=True)


@functools.lru_cache(maxsize=4096)
def _salt_prefix(salt: str) -> bytes:
    # A canonical CBOR array is its header followed by its items, so the salted prefix is reusable.
    return _CBOR_ARRAY_OF_TWO + _cbor_text(salt)


def bucket_hash(salt: str, value: BucketValue) -> int:
    """Unsigned murmur3_32 of canonical CBOR ``[salt, value]``."""
    encoded = _cbor_text(value) if type(value) is str else _cbor_value(value)
    return mmh3.hash(_salt_prefix(salt) + encoded, 0, False)


def pick_variant(salt: str, value: BucketValue, rollout: Sequence[Mapping[str, Any]]) -> str | None:
    """Walk ``[{"variant", "weight"}, ...]`` cumulatively; ``None`` when the weights add up to 0 or more
    than MaxInt32 (flagd refuses those). Negative weights count as 0, as flagd clamps them."""
    total = 0
    for part in rollout:
        weight = part["weight"]
        if weight > 0:
            total += weight
    if total <= 0 or total > MAX_TOTAL_WEIGHT:
        return None
    position = (bucket_hash(salt, value) * total) >> 32
    cumulative = 0
    for part in rollout:
        weight = part["weight"]
        if weight > 0:
            cumulative += weight
            if position < cumulative:
                return str(part["variant"])
    return None  # unreachable: position < total

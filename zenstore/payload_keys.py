"""Byte keys of payload values for payload indexes: byte order is value order.

A payload index is a sorted map from these keys to row sets; LMDB compares keys as
unsigned bytes, so a range of values must be a contiguous range of keys. Pure: no LMDB.

- ``int_key``: a signed int64 as 8 big-endian bytes with the sign bit flipped (the
  two's-complement trick), so -2**63 is ``00..00`` and 2**63 - 1 is ``ff..ff``.
- ``float_key``: an IEEE-754 float64 as 8 big-endian bytes; positive numbers get the
  sign bit set, negative numbers have every bit inverted, which sorts -inf < ... < -0 <
  ... < +inf. ``-0.0`` is keyed as ``0.0`` (they are equal values); NaN has no key.
- ``keyword_key``: tag byte + value. ``b"s"`` + UTF-8 (lone surrogates, which JSON
  allows, are kept via ``surrogatepass``) for strings of at most ``KEYWORD_INLINE_MAX``
  bytes; longer strings are ``b"h"`` + their SHA-256, which keeps every key short enough
  for LMDB (511 bytes); ``b"b\\x00"`` / ``b"b\\x01"`` for false / true. Only equality is
  asked of keyword keys, so their order means nothing.
"""

from __future__ import annotations

import hashlib
import math
import struct

from .errors import InvalidArgument

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1
KEYWORD_INLINE_MAX = 256
KEY_SIZE = 8  # int and float keys

_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")
_SIGN = 1 << 63
_ALL = (1 << 64) - 1
FALSE_KEY = b"b\x00"
TRUE_KEY = b"b\x01"


def int_key(value: int) -> bytes:
    """8 bytes whose unsigned order is the signed order of ``value`` (an int64)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidArgument(f"int_key needs an int, got {type(value).__name__}")
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidArgument(f"int_key needs an int64, got {value}")
    return _U64.pack(value + _SIGN)


def int_from_key(key: bytes) -> int:
    if len(key) != KEY_SIZE:
        raise InvalidArgument(f"an int key has {KEY_SIZE} bytes, got {len(key)}")
    return _U64.unpack(key)[0] - _SIGN


def float_key(value: float) -> bytes:
    """8 bytes whose unsigned order is the numeric order of ``value`` (not NaN)."""
    if not isinstance(value, float):
        raise InvalidArgument(f"float_key needs a float, got {type(value).__name__}")
    if math.isnan(value):
        raise InvalidArgument("float_key: NaN has no place in the order and no key")
    if value == 0.0:
        value = 0.0  # -0.0 == 0.0: one value, one key
    bits = _U64.unpack(_F64.pack(value))[0]
    return _U64.pack(bits ^ _ALL if bits & _SIGN else bits | _SIGN)


def float_from_key(key: bytes) -> float:
    if len(key) != KEY_SIZE:
        raise InvalidArgument(f"a float key has {KEY_SIZE} bytes, got {len(key)}")
    bits = _U64.unpack(key)[0]
    return _F64.unpack(_U64.pack(bits ^ _SIGN if bits & _SIGN else bits ^ _ALL))[0]


def keyword_key(value: str | bool) -> bytes:
    """The key of a str or bool value (equality only; a str never shares a bool's key)."""
    if isinstance(value, bool):
        return TRUE_KEY if value else FALSE_KEY
    if not isinstance(value, str):
        raise InvalidArgument(f"keyword_key needs a str or bool, got {type(value).__name__}")
    raw = value.encode("utf-8", "surrogatepass")
    if len(raw) <= KEYWORD_INLINE_MAX:
        return b"s" + raw
    return b"h" + hashlib.sha256(raw).digest()

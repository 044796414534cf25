"""The keys a payload index holds for a payload's values at a field, by index kind."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InvalidArgument
from ..payload_keys import float_key, int_key, keyword_key
from .evaluate import MISSING
from .parse import field_name
from .values import INDEX_KINDS, INT, KEYWORD, candidates, exact_float, int64_of, is_number, reach, show


@dataclass(frozen=True)
class IndexEntry:
    """What a ``kind`` index on a field holds for one payload: its keys, and whether the row
    also holds a number the kind cannot key exactly (then the row joins the index's unkeyed
    rows, which every scan of that field re-checks with ``scan.as_filter()``)."""

    keys: frozenset
    unkeyed: bool


def key_of(kind: str, v) -> bytes | None:
    """The index key of a value under ``kind``, or None if this kind does not key it."""
    if kind == KEYWORD:
        return keyword_key(v) if isinstance(v, (str, bool)) else None
    if not is_number(v) or (isinstance(v, float) and math.isnan(v)):
        return None
    if kind == INT:
        i = int64_of(v)
        return None if i is None else int_key(i)
    f = exact_float(v)
    return None if f is None else float_key(f)


def index_entry(payload: dict | None, field: str, kind: str) -> IndexEntry:
    """The index keys of one payload's values at ``field`` (same paths and arrays as filters).

    keyword keys str and bool values; int keys numbers that are exactly an int64 (3, 3.0);
    float keys numbers that are exactly a float64. Other types are not held (no condition
    an index answers can match them); a number the kind cannot key (3.5 under int, 2**53 + 1
    under float, 2**70 under either) sets ``unkeyed``; NaN is not held (it matches nothing).
    """
    keys, unkeyed = index_keys([payload], field, kind)
    return IndexEntry(frozenset(k for _, k in keys), bool(unkeyed))


def index_keys(payloads: Sequence, field: str, kind: str) -> tuple[list, list]:
    """``index_entry`` of many payloads, ``field`` and ``kind`` checked once: the
    ``(position, key)`` pairs (each key once per payload) and the positions of the
    payloads that are unkeyed. What a payload index of a batch of rows holds."""
    if kind not in INDEX_KINDS:
        raise InvalidArgument(f"index kind must be one of {INDEX_KINDS}, got {show(kind)}")
    path = tuple(field_name(field, "field").split("."))
    flat = path[0] if len(path) == 1 else None
    pairs, unkeyed = [], []
    for pos, payload in enumerate(payloads):
        if flat is not None and type(payload) is dict:  # the common case: a top-level scalar
            v = payload.get(flat, MISSING)
            if v is MISSING:
                continue
            if type(v) is str or type(v) is bool or type(v) is int:
                key = key_of(kind, v)
                if key is not None:
                    pairs.append((pos, key))
                elif type(v) is int and kind != KEYWORD:  # beyond what the kind keys exactly
                    unkeyed.append(pos)
                continue
        seen = set()
        odd = False
        for v in candidates(reach(payload, path)):
            key = key_of(kind, v)
            if key is not None:
                if key not in seen:
                    seen.add(key)
                    pairs.append((pos, key))
            elif kind != KEYWORD and is_number(v) and not (isinstance(v, float) and math.isnan(v)):
                odd = True
        if odd:
            unkeyed.append(pos)
    return pairs, unkeyed

"""Payload values as filters see them: JSON equality, dotted paths through objects and
arrays, and the float64 / int64 values inside a numeric interval (what index keys hold)."""

from __future__ import annotations

import math
from typing import Union as _TypeUnion

from ..payload_keys import INT64_MAX, INT64_MIN

Scalar = _TypeUnion[str, int, float, bool, None]

LOGICAL_OPS = ("$and", "$or", "$not")
FIELD_OPS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$not")
RANGE_OPS = ("$gt", "$gte", "$lt", "$lte")
MAX_DEPTH = 32  # nesting of $and / $or / $not; deeper filters are refused, not recursed into

KEYWORD, INT, FLOAT = "keyword", "int", "float"
INDEX_KINDS = (KEYWORD, INT, FLOAT)

ARRAYS = (list, tuple)
EXACT_FLOAT_INT = 2**53  # every int of smaller magnitude is exactly a float64


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def same(c, v) -> bool:
    """JSON equality of a payload value ``c`` and a filter scalar ``v``: a bool is never a
    number, numbers compare by value (1 == 1.0), containers equal no scalar."""
    if v is None:
        return c is None
    if isinstance(v, bool):
        return isinstance(c, bool) and c == v
    if isinstance(v, str):
        return isinstance(c, str) and c == v
    return is_number(c) and c == v


def exact_float(v) -> float | None:
    """``v`` as a float64 if that is exactly ``v``, else None (2**53 + 1, 10**400)."""
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if f == v else None


def show(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


# --- where a value is: dotted paths through objects and arrays ----------------------------------


def reach(payload, path: tuple[str, ...]) -> list:
    """Every value at ``path``: each name steps into an object; an array met on the way is
    stepped through (its object elements continue the path, other elements are skipped)."""
    level = [payload] if isinstance(payload, dict) else []
    for name in path:
        nxt = []
        for v in level:
            if isinstance(v, dict):
                if name in v:
                    nxt.append(v[name])
            elif isinstance(v, ARRAYS):
                nxt.extend(e[name] for e in v if isinstance(e, dict) and name in e)
        if not nxt:
            return nxt
        level = nxt
    return level


def candidates(reached: list) -> list:
    """The values a condition is tested on: each reached value, an array by its elements."""
    out = []
    for v in reached:
        if isinstance(v, ARRAYS):
            out.extend(v)
        else:
            out.append(v)
    return out


# --- numeric bounds over the representable values ------------------------------------------


def _to_float(x) -> float:
    try:
        return float(x)
    except OverflowError:
        return math.inf if x > 0 else -math.inf


def _least_float(x, incl: bool) -> float | None:
    """The least float64 ``f`` with ``f >= x`` (``f > x`` if not ``incl``), or None.
    ``float(x)`` is the float nearest ``x``, so the answer is it or a step or two above."""
    f = _to_float(x)
    while not (f >= x if incl else f > x):
        if f == math.inf:
            return None
        f = math.nextafter(f, math.inf)
    return f


def _greatest_float(x, incl: bool) -> float | None:
    """The greatest float64 ``f`` with ``f <= x`` (``f < x`` if not ``incl``), or None."""
    f = _to_float(x)
    while not (f <= x if incl else f < x):
        if f == -math.inf:
            return None
        f = math.nextafter(f, -math.inf)
    return f


def float_bounds(lo, lo_incl, hi, hi_incl) -> tuple[float, float] | None:
    a = -math.inf if lo is None else _least_float(lo, lo_incl)
    b = math.inf if hi is None else _greatest_float(hi, hi_incl)
    if a is None or b is None or a > b:
        return None
    return a, b


def int_bounds(lo, lo_incl, hi, hi_incl) -> tuple[int, int] | None:
    """The interval over int64 values, inclusive, or None if it holds none."""
    a = INT64_MIN if lo is None else (math.ceil(lo) if lo_incl else math.floor(lo) + 1)
    b = INT64_MAX if hi is None else (math.floor(hi) if hi_incl else math.ceil(hi) - 1)
    a, b = max(a, INT64_MIN), min(b, INT64_MAX)
    return (a, b) if a <= b else None


def int64_of(v) -> int | None:
    """``v`` (a number) as an int64 if it is exactly one (3 and 3.0 are; 3.5, 2**63 are not)."""
    if isinstance(v, float):
        if not v.is_integer():
            return None
        v = int(v)
    return v if INT64_MIN <= v <= INT64_MAX else None

"""Batch evaluation: a filter over many payloads one column (field) at a time with numpy,
giving exactly the answers of the row-at-a-time ``_match`` (rows it cannot vectorise,
arrays and huge ints, are handed to it)."""

from __future__ import annotations

import math
import operator
from itertools import compress, repeat

import numpy as np

from ..errors import InvalidArgument
from .nodes import And, Eq, Exists, In, Interval, Not, Or
from .values import ARRAYS, EXACT_FLOAT_INT, exact_float, is_number


class _Missing:
    __slots__ = ()


class _Deep:
    __slots__ = ()


MISSING, _DEEP = _Missing(), _Deep()
K_MISSING, K_NULL, K_FALSE, K_TRUE, K_NUM, K_STR, K_OTHER, K_SLOW, K_BOOL, K_INT = range(10)
# what one payload's value at a path is; K_SLOW rows (arrays, huge ints, unusual types) are
# answered by the row-at-a-time evaluator, so both evaluators agree by construction there.
_KIND_OF_TYPE = {_Missing: K_MISSING, type(None): K_NULL, bool: K_BOOL, int: K_INT, float: K_NUM,
                 str: K_STR, dict: K_OTHER}


_PLAIN_SLOW_TYPES = (list, tuple, int, _Deep)


def direct(payload, path):
    """The value at ``path`` if no array is on the way; ``_DEEP`` if one is."""
    if type(payload) is not dict:
        if payload is None:
            return MISSING
        if not isinstance(payload, dict):
            raise InvalidArgument(f"a payload must be a dict or None, got {type(payload).__name__}")
    v = payload
    for name in path:
        if isinstance(v, dict):
            v = v.get(name, MISSING)
            if v is MISSING:
                return v
        elif isinstance(v, ARRAYS):
            return _DEEP
        else:
            return MISSING
    return v


def _take(values: list, rows: np.ndarray) -> list:
    """The entries of ``values`` where the bool array ``rows`` is true."""
    return list(compress(values, rows.tolist()))


class _Column:
    """One field of a batch: per-row kinds, numeric values as float64, string values."""

    def __init__(self, payloads: list, path: tuple[str, ...]):
        if len(path) == 1:
            name = path[0]
            values = [p.get(name, MISSING) if type(p) is dict else direct(p, path) for p in payloads]
        else:
            values = [direct(p, path) for p in payloads]
        n = len(values)
        kinds = np.fromiter(map(_KIND_OF_TYPE.get, map(type, values), repeat(K_SLOW)), np.int8, n)
        rows = kinds == K_BOOL
        if rows.any():
            kinds[rows] = np.where(np.array(_take(values, rows), dtype=bool), K_TRUE, K_FALSE)
        rows = kinds == K_INT
        if rows.any():
            ints = _take(values, rows)
            try:
                as_float = np.array(ints, dtype=np.float64)
            except OverflowError:
                as_float = np.array([float(v) if abs(v) < EXACT_FLOAT_INT else math.inf for v in ints])
            kinds[rows] = np.where(np.abs(as_float) < EXACT_FLOAT_INT, K_NUM, K_SLOW)
        self.kinds = kinds
        self.values = values
        self.slow = np.flatnonzero(kinds == K_SLOW)
        # values of types JSON does not make (a numpy array in a hand-made dict, say) may
        # not compare with a str quietly; such columns skip the compare-every-row shortcut
        self.plain = all(type(values[i]) in _PLAIN_SLOW_TYPES for i in self.slow.tolist())
        self._nums = self._strs = None

    def nums(self) -> tuple[np.ndarray, np.ndarray]:
        if self._nums is None:
            rows = self.kinds == K_NUM
            self._nums = (np.flatnonzero(rows), np.array(_take(self.values, rows), dtype=np.float64))
        return self._nums

    def strs(self) -> tuple[np.ndarray, list]:
        if self._strs is None:
            rows = self.kinds == K_STR
            self._strs = (np.flatnonzero(rows), _take(self.values, rows))
        return self._strs


NARROW_MIN_ROWS = 256  # below this, evaluating a subset costs more than it saves


def mask(node, payloads: list, columns: dict) -> np.ndarray:
    if isinstance(node, (And, Or)):
        return _mask_connective(node.children, isinstance(node, And), payloads, columns)
    if isinstance(node, Not):
        return ~mask(node.child, payloads, columns)
    col = columns.get(node._path)
    if col is None:
        col = columns[node._path] = _Column(payloads, node._path)
    n = len(payloads)
    if isinstance(node, Exists):
        out = col.kinds != K_MISSING
    elif isinstance(node, Interval):
        out = np.zeros(n, dtype=bool)
        bounds = node.float_bounds()
        if bounds is not None:
            at, nums = col.nums()
            out[at] = (nums >= bounds[0]) & (nums <= bounds[1])
    else:
        out = _mask_values(col, (node.value,) if isinstance(node, Eq) else node.values, n)
    if col.slow.size:
        out[col.slow] = _slow_rows(node, col, payloads)
    return out


def _mask_connective(children: tuple, conjunction: bool, payloads: list, columns: dict) -> np.ndarray:
    """$and / $or; once few rows are still undecided, the rest is evaluated on those only."""
    n = len(payloads)
    out = np.full(n, conjunction, dtype=bool)
    for i, child in enumerate(children):
        if conjunction:
            out &= mask(child, payloads, columns)
        else:
            out |= mask(child, payloads, columns)
        undecided = out if conjunction else ~out
        rest = children[i + 1:]
        if rest and n >= NARROW_MIN_ROWS and 4 * np.count_nonzero(undecided) <= n:
            out[undecided] = _mask_connective(rest, conjunction, _take(payloads, undecided), {})
            break
    return out


def _slow_rows(node, col: _Column, payloads: list) -> list:
    """Rows whose value is an array (or under one, or an unusual number): row at a time,
    with a shortcut for the common case of string values in a flat array (tags)."""
    rows = col.slow.tolist()
    if isinstance(node, (Eq, In)):
        words = (node.value,) if isinstance(node, Eq) else node.values
        if words and all(type(w) is str for w in words):
            words = frozenset(words)
            out = []
            for i in rows:
                v = col.values[i]
                if type(v) is list:
                    try:
                        out.append(not words.isdisjoint(v))  # a str equals only a str: exact
                        continue
                    except TypeError:  # an object or array inside the array
                        pass
                out.append(node._match(payloads[i]))
            return out
    return [node._match(payloads[i]) for i in rows]


def _mask_values(col: _Column, values: tuple, n: int) -> np.ndarray:
    """Rows whose (direct, non-array) value equals one of ``values``."""
    k = col.kinds
    out = np.zeros(n, dtype=bool)
    if any(v is None for v in values):
        out |= (k == K_MISSING) | (k == K_NULL)
    for flag, kind in ((True, K_TRUE), (False, K_FALSE)):
        if any(isinstance(v, bool) and v is flag for v in values):
            out |= k == kind
    words = {v for v in values if isinstance(v, str)}
    if len(words) == 1 and len(values) == 1 and col.plain:  # one string: compare every row, no gather
        out |= np.fromiter(map(operator.eq, col.values, repeat(values[0])), bool, n) & (k == K_STR)
    elif words:
        at, strs = col.strs()
        if at.size:
            out[at[np.fromiter(map(words.__contains__, strs), bool, len(strs))]] = True
    floats = [f for f in map(exact_float, filter(is_number, values)) if f is not None]
    if floats:
        at, nums = col.nums()
        if at.size:
            out[at[np.isin(nums, floats)]] = True
    return out

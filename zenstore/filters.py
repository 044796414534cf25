"""Payload filters: a Mongo-style filter language, compiled once, checked per row or per batch.

``compile_filter(spec)`` validates a JSON-style dict and returns an immutable ``Filter``.
``Filter.matches(payload)`` checks one payload; ``Filter.mask(payloads)`` checks a list of
them a field at a time with numpy (the same answers, 1.2-3.3x faster in
benchmarks/filter_eval.py, where decoding the stored payloads costs 10-37x more); and
``Filter.index_plan(indexed)`` splits a filter into parts that payload indexes answer
exactly and a residual to check on the rows those parts select. docs/api.md ("Filters")
specifies the semantics; the tests hold both evaluators to a third, naive one.

Pure: no LMDB, no store. The byte keys of index entries are in ``payload_keys``.
"""

from __future__ import annotations

import json
import math
import numbers
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import compress, repeat
from typing import Union as _TypeUnion

import numpy as np

from .errors import InvalidArgument, InvalidFilter
from .payload_keys import INT64_MAX, INT64_MIN, float_key, int_key, keyword_key

__all__ = ["compile_filter", "Filter", "Eq", "In", "Interval", "Exists", "Not", "And", "Or",
           "index_entry", "index_keys", "IndexEntry", "IndexPlan", "Terms", "Range", "Union", "Intersection",
           "KEYWORD", "INT", "FLOAT", "INDEX_KINDS", "MAX_DEPTH"]

Scalar = _TypeUnion[str, int, float, bool, None]

LOGICAL_OPS = ("$and", "$or", "$not")
FIELD_OPS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$not")
RANGE_OPS = ("$gt", "$gte", "$lt", "$lte")
MAX_DEPTH = 32  # nesting of $and / $or / $not; deeper filters are refused, not recursed into

KEYWORD, INT, FLOAT = "keyword", "int", "float"
INDEX_KINDS = (KEYWORD, INT, FLOAT)

_ARRAYS = (list, tuple)
_EXACT_FLOAT_INT = 2**53  # every int of smaller magnitude is exactly a float64


# --- values -------------------------------------------------------------------------------------


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _same(c, v) -> bool:
    """JSON equality of a payload value ``c`` and a filter scalar ``v``: a bool is never a
    number, numbers compare by value (1 == 1.0), containers equal no scalar."""
    if v is None:
        return c is None
    if isinstance(v, bool):
        return isinstance(c, bool) and c == v
    if isinstance(v, str):
        return isinstance(c, str) and c == v
    return _is_number(c) and c == v


def _exact_float(v) -> float | None:
    """``v`` as a float64 if that is exactly ``v``, else None (2**53 + 1, 10**400)."""
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if f == v else None


def _show(v) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


# --- where a value is: dotted paths through objects and arrays ----------------------------------


def _reach(payload, path: tuple[str, ...]) -> list:
    """Every value at ``path``: each name steps into an object; an array met on the way is
    stepped through (its object elements continue the path, other elements are skipped)."""
    level = [payload] if isinstance(payload, dict) else []
    for name in path:
        nxt = []
        for v in level:
            if isinstance(v, dict):
                if name in v:
                    nxt.append(v[name])
            elif isinstance(v, _ARRAYS):
                nxt.extend(e[name] for e in v if isinstance(e, dict) and name in e)
        if not nxt:
            return nxt
        level = nxt
    return level


def _candidates(reached: list) -> list:
    """The values a condition is tested on: each reached value, an array by its elements."""
    out = []
    for v in reached:
        if isinstance(v, _ARRAYS):
            out.extend(v)
        else:
            out.append(v)
    return out


# --- the compiled form --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Leaf:
    field: str

    def __post_init__(self):
        object.__setattr__(self, "_path", tuple(self.field.split(".")))


@dataclass(frozen=True)
class Eq(_Leaf):
    """Some value at ``field`` equals ``value``; ``None`` also matches a missing field."""

    value: Scalar

    def _match(self, payload) -> bool:
        reached = _reach(payload, self._path)
        if self.value is None and not reached:
            return True
        return any(_same(c, self.value) for c in _candidates(reached))

    def _spec(self):
        return {self.field: {"$eq": self.value}}


@dataclass(frozen=True)
class In(_Leaf):
    """Some value at ``field`` equals one of ``values``; a ``None`` among them also matches
    a missing field. Empty ``values`` match nothing."""

    values: tuple

    def __post_init__(self):
        super().__post_init__()
        # per JSON type, so that membership is JSON equality: a bool never meets a number
        object.__setattr__(self, "_null", any(v is None for v in self.values))
        object.__setattr__(self, "_bools", frozenset(v for v in self.values if isinstance(v, bool)))
        object.__setattr__(self, "_strs", frozenset(v for v in self.values if isinstance(v, str)))
        object.__setattr__(self, "_numbers", frozenset(v for v in self.values if _is_number(v)))

    def _match(self, payload) -> bool:
        reached = _reach(payload, self._path)
        if not reached:
            return self._null
        for c in _candidates(reached):
            if c is None:
                hit = self._null
            elif isinstance(c, bool):
                hit = c in self._bools
            elif isinstance(c, str):
                hit = c in self._strs
            else:
                hit = _is_number(c) and c in self._numbers  # hashing keeps int/float equality exact
            if hit:
                return True
        return False

    def _spec(self):
        return {self.field: {"$in": list(self.values)}}


@dataclass(frozen=True)
class Interval(_Leaf):
    """Some single numeric value at ``field`` lies in the interval (``None``: unbounded)."""

    lo: int | float | None
    lo_incl: bool
    hi: int | float | None
    hi_incl: bool

    def _holds(self, x) -> bool:
        if self.lo is not None and not (x >= self.lo if self.lo_incl else x > self.lo):
            return False
        return self.hi is None or (x <= self.hi if self.hi_incl else x < self.hi)

    def _match(self, payload) -> bool:
        return any(_is_number(c) and self._holds(c) for c in _candidates(_reach(payload, self._path)))

    def float_bounds(self) -> tuple[float, float] | None:
        """The interval over float64 values, inclusive: (least, greatest) float inside it,
        or None if no float is. Exact even for bounds no float can hold (2**53 + 1)."""
        return _float_bounds(self.lo, self.lo_incl, self.hi, self.hi_incl)

    def _spec(self):
        ops = {}
        if self.lo is not None:
            ops["$gte" if self.lo_incl else "$gt"] = self.lo
        if self.hi is not None:
            ops["$lte" if self.hi_incl else "$lt"] = self.hi
        return {self.field: ops}


@dataclass(frozen=True)
class Exists(_Leaf):
    """At least one value is at ``field`` (null and [] count; an array step may give none)."""

    def _match(self, payload) -> bool:
        return bool(_reach(payload, self._path))

    def _spec(self):
        return {self.field: {"$exists": True}}


@dataclass(frozen=True)
class Not:
    child: Node

    def _match(self, payload) -> bool:
        return not self.child._match(payload)

    def _spec(self):
        return {"$not": self.child._spec()}


@dataclass(frozen=True)
class And:
    children: tuple  # empty: matches everything (the filter ``{}``)

    def _match(self, payload) -> bool:
        return all(c._match(payload) for c in self.children)

    def _spec(self):
        return {"$and": [c._spec() for c in self.children]} if self.children else {}


@dataclass(frozen=True)
class Or:
    children: tuple  # never empty

    def _match(self, payload) -> bool:
        return any(c._match(payload) for c in self.children)

    def _spec(self):
        return {"$or": [c._spec() for c in self.children]}


Node = _TypeUnion[Eq, In, Interval, Exists, Not, And, Or]
_LEAVES = (Eq, In, Interval, Exists)


def _all_of(nodes: list) -> Node:
    return nodes[0] if len(nodes) == 1 else And(tuple(nodes))


# --- parsing and validation ---------------------------------------------------------------------


def _at(where: str, key) -> str:
    return f"{where}[{json.dumps(key, ensure_ascii=False)}]"


def _scalar(v, where: str, what: str) -> Scalar:
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, numbers.Integral):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        if not math.isfinite(f):
            raise InvalidFilter(f"{where}: {what} must be a finite number, got {_show(v)}")
        return f
    raise InvalidFilter(f"{where}: {what} must be str, int, float, bool or null, got {_show(v)}")


def _number(v, where: str, op: str) -> int | float:
    if isinstance(v, (bool, np.bool_)):
        raise InvalidFilter(f"{where}: {op} needs a number, got {_show(v)} (a bool is not a number)")
    if not isinstance(v, (numbers.Integral, float, np.floating)):
        raise InvalidFilter(f"{where}: {op} needs a number, got {_show(v)}")
    return _scalar(v, where, f"{op}'s bound")


def _field_name(key, where: str) -> str:
    if not isinstance(key, str):
        raise InvalidFilter(f"{where}: field names must be str, got {_show(key)}")
    if key == "":
        raise InvalidFilter(f"{where}: empty field name")
    if "" in key.split("."):
        raise InvalidFilter(f"{_at(where, key)}: field {key!r} has an empty path segment "
                            "(a dotted path looks like 'meta.lang')")
    return key


def _parse(spec, where: str, depth: int, top: bool = False) -> Node:
    if not isinstance(spec, Mapping):
        raise InvalidFilter(f"{where}: a filter must be a dict, got {_show(spec)}")
    if not spec and not top:
        raise InvalidFilter(f"{where}: empty filter (only the whole filter may be {{}}, meaning all rows)")
    if depth > MAX_DEPTH:
        raise InvalidFilter(f"{where}: filter nested deeper than {MAX_DEPTH} levels")
    parts = []
    for key, value in spec.items():
        if isinstance(key, str) and key.startswith("$"):
            loc = _at(where, key)
            if key in ("$and", "$or"):
                if not isinstance(value, (list, tuple)) or not value:
                    raise InvalidFilter(f"{loc}: {key} needs a non-empty list of filters, got {_show(value)}")
                kids = [_parse(v, f"{loc}[{i}]", depth + 1) for i, v in enumerate(value)]
                parts.append(_all_of(kids) if key == "$and" else (kids[0] if len(kids) == 1 else Or(tuple(kids))))
            elif key == "$not":
                parts.append(Not(_parse(value, loc, depth + 1)))
            elif key in FIELD_OPS:
                raise InvalidFilter(f'{loc}: {key} applies to a field, as in {{"year": {{"{key}": ...}}}}')
            else:
                raise InvalidFilter(f"{loc}: unknown operator {key!r} (at the top level: "
                                    f"{', '.join(LOGICAL_OPS)}; on a field: {', '.join(FIELD_OPS)})")
        else:
            name = _field_name(key, where)
            parts.append(_condition(name, value, _at(where, name), depth))
    return _all_of(parts) if parts else And(())


def _condition(name: str, value, where: str, depth: int) -> Node:
    """``{name: value}``: equality with a scalar, or a dict of field operators."""
    if not isinstance(value, Mapping):
        if isinstance(value, (list, tuple, set)):
            raise InvalidFilter(f"{where}: a value must be str, int, float, bool or null, got {_show(value)} "
                                f'(to match any of several values use {{"$in": [...]}})')
        return Eq(name, _scalar(value, where, "value"))
    if not value:
        raise InvalidFilter(f"{where}: empty operator dict")
    ops = [k for k in value if isinstance(k, str) and k.startswith("$")]
    plain = [k for k in value if not (isinstance(k, str) and k.startswith("$"))]
    if ops and plain:
        raise InvalidFilter(f"{where}: mixes operators ({', '.join(ops)}) with plain keys "
                            f"({', '.join(_show(k) for k in plain)})")
    if plain:
        first = plain[0]
        hint = f' (to match a nested field use a dotted path, e.g. "{name}.{first}")' if isinstance(first, str) else ""
        raise InvalidFilter(f"{where}: a value must be str, int, float, bool or null, or a dict of "
                            f"operators, got an object{hint}")
    return _operators(name, value, where, depth)


def _operators(name: str, ops: Mapping, where: str, depth: int) -> Node:
    if depth > MAX_DEPTH:
        raise InvalidFilter(f"{where}: filter nested deeper than {MAX_DEPTH} levels")
    conds: list = []
    lo = hi = None  # (bound, inclusive): the range operators of one dict form one interval
    interval_at = None
    for op, arg in ops.items():
        if op in ("$eq", "$ne"):
            node = Eq(name, _scalar(arg, where, f"{op}'s value"))
            conds.append(node if op == "$eq" else Not(node))
        elif op in RANGE_OPS:
            bound = (_number(arg, where, op), op in ("$gte", "$lte"))
            if interval_at is None:
                interval_at = len(conds)
            if op in ("$gt", "$gte"):
                lo = bound if lo is None or _tighter(bound, lo, +1) else lo
            else:
                hi = bound if hi is None or _tighter(bound, hi, -1) else hi
        elif op in ("$in", "$nin"):
            if not isinstance(arg, (list, tuple)):
                raise InvalidFilter(f"{where}: {op} needs a list of values, got {_show(arg)}")
            node = In(name, tuple(_scalar(v, where, f"{op}[{i}]") for i, v in enumerate(arg)))
            conds.append(node if op == "$in" else Not(node))
        elif op == "$exists":
            if not isinstance(arg, (bool, np.bool_)):
                raise InvalidFilter(f"{where}: $exists needs true or false, got {_show(arg)}")
            conds.append(Exists(name) if arg else Not(Exists(name)))
        elif op == "$not":
            if not (isinstance(arg, Mapping) and arg and all(isinstance(k, str) and k.startswith("$") for k in arg)):
                raise InvalidFilter(f'{where}: $not needs a dict of operators, as in {{"$not": {{"$gt": 1}}}}, '
                                    f"got {_show(arg)}")
            conds.append(Not(_operators(name, arg, _at(where, "$not"), depth + 1)))
        elif op in ("$and", "$or"):
            raise InvalidFilter(f'{where}: {op} is a top-level operator: write {{"{op}": [{{"{name}": ...}}, ...]}}')
        else:
            raise InvalidFilter(f"{where}: unknown operator {op!r} (on a field: {', '.join(FIELD_OPS)})")
    if interval_at is not None:
        conds.insert(interval_at, Interval(name, *(lo or (None, False)), *(hi or (None, False))))
    return _all_of(conds)


def _tighter(new: tuple, cur: tuple, direction: int) -> bool:
    """Whether bound ``new`` excludes more than ``cur`` (lower bounds: +1, upper: -1)."""
    if new[0] != cur[0]:
        return (new[0] > cur[0]) == (direction > 0)
    return cur[1] and not new[1]  # same value: exclusive is tighter


# --- the public filter ----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Filter:
    """A compiled filter. Equal (and hashed) by its canonical JSON, which ``to_spec`` gives."""

    root: Node

    def matches(self, payload: dict | None) -> bool:
        """Whether one payload (a dict, or None for a row without one) matches."""
        if payload is not None and not isinstance(payload, dict):
            raise InvalidArgument(f"a payload must be a dict or None, got {type(payload).__name__}")
        return self.root._match(payload)

    def mask(self, payloads: Sequence) -> np.ndarray:
        """``[matches(p) for p in payloads]`` as a bool array, computed a column at a time."""
        payloads = payloads if isinstance(payloads, list) else list(payloads)
        if not self.fields():  # ``{}``: no column pass will look at the payloads
            for p in payloads:
                _direct(p, ())
        return _mask(self.root, payloads, {})  # the first column pass checks every payload

    def fields(self) -> tuple[str, ...]:
        """The dotted field paths the filter reads, sorted."""
        return tuple(sorted({leaf.field for leaf in _leaves(self.root)}))

    def index_plan(self, indexed: Mapping[str, str]) -> IndexPlan:
        """Split into index scans and a residual, given ``indexed``: field -> index kind."""
        for name, kind in indexed.items():
            if not isinstance(name, str) or kind not in INDEX_KINDS:
                raise InvalidArgument(f"indexed must map field names to one of {INDEX_KINDS}, "
                                      f"got {_show(name)}: {_show(kind)}")
        scans, rest = _plan(self.root, indexed)
        if not scans:
            return IndexPlan((), self)
        return IndexPlan(tuple(scans), Filter(_all_of(rest)) if rest else None)

    def to_spec(self) -> dict:
        """A filter dict that compiles back to this filter."""
        return self.root._spec()

    @property
    def canonical(self) -> str:
        return json.dumps(self.to_spec(), sort_keys=True, separators=(",", ":"))

    def __eq__(self, other) -> bool:
        return isinstance(other, Filter) and self.canonical == other.canonical

    def __hash__(self) -> int:
        return hash(self.canonical)

    def __repr__(self) -> str:
        return f"Filter({self.canonical})"


def compile_filter(spec: Mapping | Filter) -> Filter:
    """Validate a filter dict once; raises ``InvalidFilter`` naming the bad part by path.
    ``{}`` matches every row. A ``Filter`` is returned as it is."""
    if isinstance(spec, Filter):
        return spec
    return Filter(_parse(spec, "filter", 0, top=True))


def _leaves(node):
    if isinstance(node, _LEAVES):
        yield node
    elif isinstance(node, Not):
        yield from _leaves(node.child)
    else:
        for c in node.children:
            yield from _leaves(c)


# --- batch evaluation: one column per field, numpy over the rows ------------------------------------


class _Missing:
    __slots__ = ()


class _Deep:
    __slots__ = ()


_MISSING, _DEEP = _Missing(), _Deep()
K_MISSING, K_NULL, K_FALSE, K_TRUE, K_NUM, K_STR, K_OTHER, K_SLOW, K_BOOL, K_INT = range(10)
# what one payload's value at a path is; K_SLOW rows (arrays, huge ints, unusual types) are
# answered by the row-at-a-time evaluator, so both evaluators agree by construction there.
_KIND_OF_TYPE = {_Missing: K_MISSING, type(None): K_NULL, bool: K_BOOL, int: K_INT, float: K_NUM,
                 str: K_STR, dict: K_OTHER}


_PLAIN_SLOW_TYPES = (list, tuple, int, _Deep)


def _direct(payload, path):
    """The value at ``path`` if no array is on the way; ``_DEEP`` if one is."""
    if type(payload) is not dict:
        if payload is None:
            return _MISSING
        if not isinstance(payload, dict):
            raise InvalidArgument(f"a payload must be a dict or None, got {type(payload).__name__}")
    v = payload
    for name in path:
        if isinstance(v, dict):
            v = v.get(name, _MISSING)
            if v is _MISSING:
                return v
        elif isinstance(v, _ARRAYS):
            return _DEEP
        else:
            return _MISSING
    return v


def _take(values: list, rows: np.ndarray) -> list:
    """The entries of ``values`` where the bool array ``rows`` is true."""
    return list(compress(values, rows.tolist()))


class _Column:
    """One field of a batch: per-row kinds, numeric values as float64, string values."""

    def __init__(self, payloads: list, path: tuple[str, ...]):
        if len(path) == 1:
            name = path[0]
            values = [p.get(name, _MISSING) if type(p) is dict else _direct(p, path) for p in payloads]
        else:
            values = [_direct(p, path) for p in payloads]
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
                as_float = np.array([float(v) if abs(v) < _EXACT_FLOAT_INT else math.inf for v in ints])
            kinds[rows] = np.where(np.abs(as_float) < _EXACT_FLOAT_INT, K_NUM, K_SLOW)
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


_NARROW_MIN_ROWS = 256  # below this, evaluating a subset costs more than it saves


def _mask(node, payloads: list, columns: dict) -> np.ndarray:
    if isinstance(node, (And, Or)):
        return _mask_connective(node.children, isinstance(node, And), payloads, columns)
    if isinstance(node, Not):
        return ~_mask(node.child, payloads, columns)
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
            out &= _mask(child, payloads, columns)
        else:
            out |= _mask(child, payloads, columns)
        undecided = out if conjunction else ~out
        rest = children[i + 1:]
        if rest and n >= _NARROW_MIN_ROWS and 4 * np.count_nonzero(undecided) <= n:
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
    floats = [f for f in map(_exact_float, filter(_is_number, values)) if f is not None]
    if floats:
        at, nums = col.nums()
        if at.size:
            out[at[np.isin(nums, floats)]] = True
    return out


# --- numeric bounds over the representable values --------------------------------------------------


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


def _float_bounds(lo, lo_incl, hi, hi_incl) -> tuple[float, float] | None:
    a = -math.inf if lo is None else _least_float(lo, lo_incl)
    b = math.inf if hi is None else _greatest_float(hi, hi_incl)
    if a is None or b is None or a > b:
        return None
    return a, b


def _int_bounds(lo, lo_incl, hi, hi_incl) -> tuple[int, int] | None:
    """The interval over int64 values, inclusive, or None if it holds none."""
    a = INT64_MIN if lo is None else (math.ceil(lo) if lo_incl else math.floor(lo) + 1)
    b = INT64_MAX if hi is None else (math.floor(hi) if hi_incl else math.ceil(hi) - 1)
    a, b = max(a, INT64_MIN), min(b, INT64_MAX)
    return (a, b) if a <= b else None


def _int64_of(v) -> int | None:
    """``v`` (a number) as an int64 if it is exactly one (3 and 3.0 are; 3.5, 2**63 are not)."""
    if isinstance(v, float):
        if not v.is_integer():
            return None
        v = int(v)
    return v if INT64_MIN <= v <= INT64_MAX else None


# --- index plans ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Terms:
    """Rows whose ``kind`` index on ``field`` holds one of ``values`` (point lookups)."""

    field: str
    kind: str
    values: tuple

    def keys(self) -> tuple[bytes, ...]:
        """Sorted keys to look up; values the kind cannot key are left to the unkeyed rows."""
        keys = {_key_of(self.kind, v) for v in self.values}
        keys.discard(None)
        return tuple(sorted(keys))

    def as_filter(self) -> Filter:
        return Filter(In(self.field, self.values) if len(self.values) != 1 else Eq(self.field, self.values[0]))


@dataclass(frozen=True)
class Range:
    """Rows whose ``kind`` (int or float) index on ``field`` holds a value in the interval."""

    field: str
    kind: str
    lo: int | float | None
    lo_incl: bool
    hi: int | float | None
    hi_incl: bool

    def key_bounds(self) -> tuple[bytes, bytes] | None:
        """(first, last) key to scan, both inclusive, or None if no key can be inside."""
        if self.kind == INT:
            ints = _int_bounds(self.lo, self.lo_incl, self.hi, self.hi_incl)
            return None if ints is None else (int_key(ints[0]), int_key(ints[1]))
        floats = _float_bounds(self.lo, self.lo_incl, self.hi, self.hi_incl)
        return None if floats is None else (float_key(floats[0]), float_key(floats[1]))

    def as_filter(self) -> Filter:
        return Filter(Interval(self.field, self.lo, self.lo_incl, self.hi, self.hi_incl))


@dataclass(frozen=True)
class Union:
    """Rows selected by any part (an ``$or`` whose every branch indexes answer)."""

    parts: tuple


@dataclass(frozen=True)
class Intersection:
    """Rows selected by every part (an ``$and`` inside an answerable ``$or`` branch)."""

    parts: tuple


IndexScan = _TypeUnion[Terms, Range, Union, Intersection]


@dataclass(frozen=True)
class IndexPlan:
    """``matches(p)`` holds exactly for the rows every scan selects whose payload the residual
    (if any) matches. No scans: the indexes cannot help; the residual is the whole filter."""

    scans: tuple
    residual: Filter | None


@dataclass(frozen=True)
class IndexEntry:
    """What a ``kind`` index on a field holds for one payload: its keys, and whether the row
    also holds a number the kind cannot key exactly (then the row joins the index's unkeyed
    rows, which every scan of that field re-checks with ``scan.as_filter()``)."""

    keys: frozenset
    unkeyed: bool


def _key_of(kind: str, v) -> bytes | None:
    """The index key of a value under ``kind``, or None if this kind does not key it."""
    if kind == KEYWORD:
        return keyword_key(v) if isinstance(v, (str, bool)) else None
    if not _is_number(v) or (isinstance(v, float) and math.isnan(v)):
        return None
    if kind == INT:
        i = _int64_of(v)
        return None if i is None else int_key(i)
    f = _exact_float(v)
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
        raise InvalidArgument(f"index kind must be one of {INDEX_KINDS}, got {_show(kind)}")
    path = tuple(_field_name(field, "field").split("."))
    flat = path[0] if len(path) == 1 else None
    pairs, unkeyed = [], []
    for pos, payload in enumerate(payloads):
        if flat is not None and type(payload) is dict:  # the common case: a top-level scalar
            v = payload.get(flat, _MISSING)
            if v is _MISSING:
                continue
            if type(v) is str or type(v) is bool or type(v) is int:
                key = _key_of(kind, v)
                if key is not None:
                    pairs.append((pos, key))
                elif type(v) is int and kind != KEYWORD:  # beyond what the kind keys exactly
                    unkeyed.append(pos)
                continue
        seen = set()
        odd = False
        for v in _candidates(_reach(payload, path)):
            key = _key_of(kind, v)
            if key is not None:
                if key not in seen:
                    seen.add(key)
                    pairs.append((pos, key))
            elif kind != KEYWORD and _is_number(v) and not (isinstance(v, float) and math.isnan(v)):
                odd = True
        if odd:
            unkeyed.append(pos)
    return pairs, unkeyed


def _leaf_scan(node, indexed: Mapping[str, str]):
    kind = indexed.get(node.field) if isinstance(node, _LEAVES) else None
    if kind is None:
        return None
    if isinstance(node, Interval):
        return Range(node.field, kind, node.lo, node.lo_incl, node.hi, node.hi_incl) if kind != KEYWORD else None
    if isinstance(node, (Eq, In)):
        values = (node.value,) if isinstance(node, Eq) else node.values
        fits = (lambda v: isinstance(v, (str, bool))) if kind == KEYWORD else _is_number
        return Terms(node.field, kind, values) if all(map(fits, values)) else None
    return None  # Exists: the index holds values of some types only


def _whole_scan(node, indexed):
    """An index expression selecting exactly the rows ``node`` matches, or None."""
    if isinstance(node, (And, Or)):
        parts = [_whole_scan(c, indexed) for c in node.children]
        if not parts or any(p is None for p in parts):
            return None
        if len(parts) == 1:
            return parts[0]
        return Intersection(tuple(parts)) if isinstance(node, And) else Union(tuple(parts))
    return _leaf_scan(node, indexed)


def _plan(node, indexed) -> tuple[list, list]:
    """(scans, residual nodes): the node's conjuncts, each answered by indexes or not."""
    if isinstance(node, And):
        scans, rest = [], []
        for c in node.children:
            s, r = _plan(c, indexed)
            scans += s
            rest += r
        return scans, rest
    scan = _whole_scan(node, indexed)
    return ([scan], []) if scan is not None else ([], [node])

"""The public filter: ``compile_filter(spec)`` -> an immutable ``Filter``, and its index
plans (which parts payload indexes answer exactly, as scans over index keys)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Union as _TypeUnion

import numpy as np

from ..errors import InvalidArgument
from . import evaluate
from ..payload_keys import float_key, int_key
from .keys import key_of
from .nodes import LEAVES, And, Eq, In, Interval, Node, Or, all_of, leaves
from .parse import parse
from .values import INDEX_KINDS, INT, KEYWORD, float_bounds, int_bounds, is_number, show


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
                evaluate.direct(p, ())
        return evaluate.mask(self.root, payloads, {})  # the first column pass checks every payload

    def fields(self) -> tuple[str, ...]:
        """The dotted field paths the filter reads, sorted."""
        return tuple(sorted({leaf.field for leaf in leaves(self.root)}))

    def index_plan(self, indexed: Mapping[str, str]) -> IndexPlan:
        """Split into index scans and a residual, given ``indexed``: field -> index kind."""
        for name, kind in indexed.items():
            if not isinstance(name, str) or kind not in INDEX_KINDS:
                raise InvalidArgument(f"indexed must map field names to one of {INDEX_KINDS}, "
                                      f"got {show(name)}: {show(kind)}")
        scans, rest = split(self.root, indexed)
        if not scans:
            return IndexPlan((), self)
        return IndexPlan(tuple(scans), Filter(all_of(rest)) if rest else None)

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
    return Filter(parse(spec, "filter", 0, top=True))


@dataclass(frozen=True)
class IndexPlan:
    """``matches(p)`` holds exactly for the rows every scan selects whose payload the residual
    (if any) matches. No scans: the indexes cannot help; the residual is the whole filter."""

    scans: tuple
    residual: Filter | None


# --- index plans ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Terms:
    """Rows whose ``kind`` index on ``field`` holds one of ``values`` (point lookups)."""

    field: str
    kind: str
    values: tuple

    def keys(self) -> tuple[bytes, ...]:
        """Sorted keys to look up; values the kind cannot key are left to the unkeyed rows."""
        keys = {key_of(self.kind, v) for v in self.values}
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
            ints = int_bounds(self.lo, self.lo_incl, self.hi, self.hi_incl)
            return None if ints is None else (int_key(ints[0]), int_key(ints[1]))
        floats = float_bounds(self.lo, self.lo_incl, self.hi, self.hi_incl)
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


def _leaf_scan(node, indexed: Mapping[str, str]):
    kind = indexed.get(node.field) if isinstance(node, LEAVES) else None
    if kind is None:
        return None
    if isinstance(node, Interval):
        return Range(node.field, kind, node.lo, node.lo_incl, node.hi, node.hi_incl) if kind != KEYWORD else None
    if isinstance(node, (Eq, In)):
        values = (node.value,) if isinstance(node, Eq) else node.values
        fits = (lambda v: isinstance(v, (str, bool))) if kind == KEYWORD else is_number
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


def split(node, indexed) -> tuple[list, list]:
    """(scans, residual nodes): the node's conjuncts, each answered by indexes or not."""
    if isinstance(node, And):
        scans, rest = [], []
        for c in node.children:
            s, r = split(c, indexed)
            scans += s
            rest += r
        return scans, rest
    scan = _whole_scan(node, indexed)
    return ([scan], []) if scan is not None else ([], [node])

"""The compiled form of a filter: immutable condition nodes, each able to match one payload
(``_match``) and to give back its filter dict (``_spec``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union as _TypeUnion

from .values import Scalar, candidates, float_bounds, is_number, reach, same



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
        reached = reach(payload, self._path)
        if self.value is None and not reached:
            return True
        return any(same(c, self.value) for c in candidates(reached))

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
        object.__setattr__(self, "_numbers", frozenset(v for v in self.values if is_number(v)))

    def _match(self, payload) -> bool:
        reached = reach(payload, self._path)
        if not reached:
            return self._null
        for c in candidates(reached):
            if c is None:
                hit = self._null
            elif isinstance(c, bool):
                hit = c in self._bools
            elif isinstance(c, str):
                hit = c in self._strs
            else:
                hit = is_number(c) and c in self._numbers  # hashing keeps int/float equality exact
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
        return any(is_number(c) and self._holds(c) for c in candidates(reach(payload, self._path)))

    def float_bounds(self) -> tuple[float, float] | None:
        """The interval over float64 values, inclusive: (least, greatest) float inside it,
        or None if no float is. Exact even for bounds no float can hold (2**53 + 1)."""
        return float_bounds(self.lo, self.lo_incl, self.hi, self.hi_incl)

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
        return bool(reach(payload, self._path))

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
LEAVES = (Eq, In, Interval, Exists)


def all_of(nodes: list) -> Node:
    return nodes[0] if len(nodes) == 1 else And(tuple(nodes))


def leaves(node):
    """The leaf conditions under ``node``."""
    if isinstance(node, LEAVES):
        yield node
    elif isinstance(node, Not):
        yield from leaves(node.child)
    else:
        for c in node.children:
            yield from leaves(c)

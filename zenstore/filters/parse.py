"""Filter dicts to nodes: validation with errors that name the bad part by its path."""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping

import numpy as np

from ..errors import InvalidFilter
from .nodes import And, Eq, Exists, In, Interval, Node, Not, Or, all_of
from .values import FIELD_OPS, LOGICAL_OPS, MAX_DEPTH, RANGE_OPS, Scalar, show


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
            raise InvalidFilter(f"{where}: {what} must be a finite number, got {show(v)}")
        return f
    raise InvalidFilter(f"{where}: {what} must be str, int, float, bool or null, got {show(v)}")


def _number(v, where: str, op: str) -> int | float:
    if isinstance(v, (bool, np.bool_)):
        raise InvalidFilter(f"{where}: {op} needs a number, got {show(v)} (a bool is not a number)")
    if not isinstance(v, (numbers.Integral, float, np.floating)):
        raise InvalidFilter(f"{where}: {op} needs a number, got {show(v)}")
    return _scalar(v, where, f"{op}'s bound")


def field_name(key, where: str) -> str:
    if not isinstance(key, str):
        raise InvalidFilter(f"{where}: field names must be str, got {show(key)}")
    if key == "":
        raise InvalidFilter(f"{where}: empty field name")
    if "" in key.split("."):
        raise InvalidFilter(f"{_at(where, key)}: field {key!r} has an empty path segment "
                            "(a dotted path looks like 'meta.lang')")
    return key


def parse(spec, where: str, depth: int, top: bool = False) -> Node:
    if not isinstance(spec, Mapping):
        raise InvalidFilter(f"{where}: a filter must be a dict, got {show(spec)}")
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
                    raise InvalidFilter(f"{loc}: {key} needs a non-empty list of filters, got {show(value)}")
                kids = [parse(v, f"{loc}[{i}]", depth + 1) for i, v in enumerate(value)]
                parts.append(all_of(kids) if key == "$and" else (kids[0] if len(kids) == 1 else Or(tuple(kids))))
            elif key == "$not":
                parts.append(Not(parse(value, loc, depth + 1)))
            elif key in FIELD_OPS:
                raise InvalidFilter(f'{loc}: {key} applies to a field, as in {{"year": {{"{key}": ...}}}}')
            else:
                raise InvalidFilter(f"{loc}: unknown operator {key!r} (at the top level: "
                                    f"{', '.join(LOGICAL_OPS)}; on a field: {', '.join(FIELD_OPS)})")
        else:
            name = field_name(key, where)
            parts.append(_condition(name, value, _at(where, name), depth))
    return all_of(parts) if parts else And(())


def _condition(name: str, value, where: str, depth: int) -> Node:
    """``{name: value}``: equality with a scalar, or a dict of field operators."""
    if not isinstance(value, Mapping):
        if isinstance(value, (list, tuple, set)):
            raise InvalidFilter(f"{where}: a value must be str, int, float, bool or null, got {show(value)} "
                                f'(to match any of several values use {{"$in": [...]}})')
        return Eq(name, _scalar(value, where, "value"))
    if not value:
        raise InvalidFilter(f"{where}: empty operator dict")
    ops = [k for k in value if isinstance(k, str) and k.startswith("$")]
    plain = [k for k in value if not (isinstance(k, str) and k.startswith("$"))]
    if ops and plain:
        raise InvalidFilter(f"{where}: mixes operators ({', '.join(ops)}) with plain keys "
                            f"({', '.join(show(k) for k in plain)})")
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
                raise InvalidFilter(f"{where}: {op} needs a list of values, got {show(arg)}")
            node = In(name, tuple(_scalar(v, where, f"{op}[{i}]") for i, v in enumerate(arg)))
            conds.append(node if op == "$in" else Not(node))
        elif op == "$exists":
            if not isinstance(arg, (bool, np.bool_)):
                raise InvalidFilter(f"{where}: $exists needs true or false, got {show(arg)}")
            conds.append(Exists(name) if arg else Not(Exists(name)))
        elif op == "$not":
            if not (isinstance(arg, Mapping) and arg and all(isinstance(k, str) and k.startswith("$") for k in arg)):
                raise InvalidFilter(f'{where}: $not needs a dict of operators, as in {{"$not": {{"$gt": 1}}}}, '
                                    f"got {show(arg)}")
            conds.append(Not(_operators(name, arg, _at(where, "$not"), depth + 1)))
        elif op in ("$and", "$or"):
            raise InvalidFilter(f'{where}: {op} is a top-level operator: write {{"{op}": [{{"{name}": ...}}, ...]}}')
        else:
            raise InvalidFilter(f"{where}: unknown operator {op!r} (on a field: {', '.join(FIELD_OPS)})")
    if interval_at is not None:
        conds.insert(interval_at, Interval(name, *(lo or (None, False)), *(hi or (None, False))))
    return all_of(conds)


def _tighter(new: tuple, cur: tuple, direction: int) -> bool:
    """Whether bound ``new`` excludes more than ``cur`` (lower bounds: +1, upper: -1)."""
    if new[0] != cur[0]:
        return (new[0] > cur[0]) == (direction > 0)
    return cur[1] and not new[1]  # same value: exclusive is tighter

"""Payload filters for the integrations, evaluated in Python: a stopgap.

The frameworks filter on metadata (LangChain ``filter=``, LlamaIndex ``MetadataFilters``);
both are translated here to one Mongo-style dict -- ``{"field": value}``,
``{"field": {"$gt": 3}}``, ``{"$and": [...]}`` / ``{"$or": [...]}`` / ``{"$not": {...}}`` --
and evaluated over every stored payload to give the ``filter_ids`` the store searches.
That reads every payload (and decodes every vector) per filtered query: fine for small
collections, and **temporary**: the store's own filter language (issue 11) takes the same
dicts and will replace :func:`matching_ids` without changing the integrations' API.
"""

from __future__ import annotations

import numbers

from ..errors import InvalidArgument

_COMPARE = {
    "$eq": lambda a, b: a == b,
    "$ne": lambda a, b: a != b,
    "$gt": lambda a, b: _ordered(a, b) and a > b,
    "$gte": lambda a, b: _ordered(a, b) and a >= b,
    "$lt": lambda a, b: _ordered(a, b) and a < b,
    "$lte": lambda a, b: _ordered(a, b) and a <= b,
    "$in": lambda a, b: a in b,
    "$nin": lambda a, b: a not in b,
    "$contains": lambda a, b: isinstance(a, list) and b in a,
    "$any": lambda a, b: isinstance(a, list) and any(v in a for v in b),
    "$all": lambda a, b: isinstance(a, list) and all(v in a for v in b),
    "$text": lambda a, b: isinstance(a, str) and b in a,
    "$itext": lambda a, b: isinstance(a, str) and b.lower() in a.lower(),
}
_LIST_ARGS = ("$in", "$nin", "$any", "$all")
_MISSING = object()


def _ordered(a, b) -> bool:
    numeric = (isinstance(a, numbers.Real) and isinstance(b, numbers.Real)
               and not isinstance(a, bool) and not isinstance(b, bool))
    return numeric or (isinstance(a, str) and isinstance(b, str))


def check_filter(flt) -> dict:
    """Validate a filter dict up front, so a typo fails before any search."""
    if not isinstance(flt, dict):
        raise InvalidArgument(f"filter must be a dict, got {type(flt).__name__}")
    for key, cond in flt.items():
        if key in ("$and", "$or"):
            if not isinstance(cond, list) or not cond:
                raise InvalidArgument(f"filter {key} takes a non-empty list of filters")
            for sub in cond:
                check_filter(sub)
        elif key == "$not":
            check_filter(cond)
        elif key.startswith("$"):
            raise InvalidArgument(f"unknown filter operator {key!r}")
        elif isinstance(cond, dict):
            for op, arg in cond.items():
                if op == "$exists":
                    continue
                if op not in _COMPARE:
                    raise InvalidArgument(f"unknown filter operator {op!r} on field {key!r}")
                if op in _LIST_ARGS and not isinstance(arg, (list, tuple)):
                    raise InvalidArgument(f"filter {op} on field {key!r} takes a list")
    return flt


def matches(payload: dict | None, flt: dict) -> bool:
    """Whether a payload satisfies a (checked) filter; a missing field matches only
    ``$ne``, ``$nin`` and ``{"$exists": False}``."""
    payload = payload or {}
    for key, cond in flt.items():
        if key == "$and":
            ok = all(matches(payload, sub) for sub in cond)
        elif key == "$or":
            ok = any(matches(payload, sub) for sub in cond)
        elif key == "$not":
            ok = not matches(payload, cond)
        else:
            value = payload.get(key, _MISSING)
            conds = cond.items() if isinstance(cond, dict) else [("$eq", cond)]
            ok = all(_check(value, op, arg) for op, arg in conds)
        if not ok:
            return False
    return True


def _check(value, op, arg) -> bool:
    if op == "$exists":
        return (value is not _MISSING) == bool(arg)
    if value is _MISSING:
        return op in ("$ne", "$nin")
    return bool(_COMPARE[op](value, arg))


def matching_ids(store, flt=None, predicate=None) -> list:
    """Ids of the stored rows whose payload passes ``flt`` (a filter dict) and
    ``predicate`` (a callable on the payload), in storage order."""
    if flt is not None:
        check_filter(flt)
    out = []
    for ids, _vectors, payloads in store.iter_records():
        for ext_id, payload in zip(ids.tolist(), payloads):
            if (flt is None or matches(payload, flt)) and (predicate is None or predicate(payload or {})):
                out.append(ext_id)
    return out

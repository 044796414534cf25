"""Payload filters: a Mongo-style filter language, compiled once, checked per row or per batch.

``compile_filter(spec)`` validates a JSON-style dict and returns an immutable ``Filter``.
``Filter.matches(payload)`` checks one payload; ``Filter.mask(payloads)`` checks a list of
them a field at a time with numpy (the same answers, 1.2-3.3x faster in
benchmarks/filter_eval.py, where decoding the stored payloads costs 10-37x more); and
``Filter.index_plan(indexed)`` splits a filter into parts that payload indexes answer
exactly and a residual to check on the rows those parts select. docs/api.md ("Filters")
specifies the semantics; the tests hold both evaluators to a third, naive one.

Pure: no LMDB, no store. The byte keys of index entries are in ``payload_keys``. The
modules, bottom up: ``values`` (JSON equality, dotted paths, numeric bounds), ``nodes``
(the compiled form), ``parse`` (dicts to nodes), ``evaluate`` (batches, by column),
``keys`` (what a payload index holds), ``filter`` (the public ``Filter`` and its index
plans).
"""

from .filter import Filter, IndexPlan, Intersection, Range, Terms, Union, compile_filter
from .keys import IndexEntry, index_entry, index_keys
from .nodes import And, Eq, Exists, In, Interval, Not, Or
from .values import FLOAT, INDEX_KINDS, INT, KEYWORD, MAX_DEPTH

__all__ = ["compile_filter", "Filter", "Eq", "In", "Interval", "Exists", "Not", "And", "Or",
           "index_entry", "index_keys", "IndexEntry", "IndexPlan", "Terms", "Range", "Union", "Intersection",
           "KEYWORD", "INT", "FLOAT", "INDEX_KINDS", "MAX_DEPTH"]

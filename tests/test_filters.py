"""The payload filter language: both evaluators against a naive reference, index plans
against simulated indexes, key encodings against numeric order, every malformed filter."""

import bisect
import json
import math
import os
import re
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, target
from hypothesis import strategies as st

from zenstore.filters import evaluate as filter_evaluation
from zenstore.errors import InvalidArgument, InvalidFilter, ZenstoreError
from zenstore.filters import (FLOAT, INT, KEYWORD, MAX_DEPTH, Filter, IndexEntry, Intersection, Range, Terms, Union,
                              compile_filter, index_entry)
from zenstore.payload_keys import (FALSE_KEY, TRUE_KEY, float_from_key, float_key, int_from_key, int_key,
                                   keyword_key)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- the reference: the documented semantics, evaluated straight from the filter dict -------------

RANGE_OPS = {"$gt": lambda x, b: x > b, "$gte": lambda x, b: x >= b,
             "$lt": lambda x, b: x < b, "$lte": lambda x, b: x <= b}


def json_type(x):
    if x is None:
        return "null"
    if type(x) is bool:
        return "bool"
    if type(x) in (int, float):
        return "number"
    if type(x) is str:
        return "str"
    return "container"


def walk(node, names):
    """Values at the path: objects by key; arrays on the way through their object elements."""
    if not names:
        yield node
    elif type(node) is dict:
        if names[0] in node:
            yield from walk(node[names[0]], names[1:])
    elif type(node) is list:
        for element in node:
            if type(element) is dict and names[0] in element:
                yield from walk(element[names[0]], names[1:])


def ref_equals(found, v):
    if v is None and not found:
        return True
    elements = [e for x in found for e in (x if type(x) is list else [x])]
    return any(json_type(e) == json_type(v) and e == v for e in elements)


def ref_field(path, cond, doc):
    found = list(walk(doc, path.split(".")))
    if not isinstance(cond, dict):
        cond = {"$eq": cond}
    result = True
    bounds = [(RANGE_OPS[op], b) for op, b in cond.items() if op in RANGE_OPS]
    if bounds:  # one element must satisfy every bound of the dict
        elements = [e for x in found for e in (x if type(x) is list else [x])]
        result &= any(json_type(e) == "number" and all(test(e, b) for test, b in bounds) for e in elements)
    for op, arg in cond.items():
        if op == "$eq":
            result &= ref_equals(found, arg)
        elif op == "$ne":
            result &= not ref_equals(found, arg)
        elif op == "$in":
            result &= any(ref_equals(found, a) for a in arg)
        elif op == "$nin":
            result &= not any(ref_equals(found, a) for a in arg)
        elif op == "$exists":
            result &= bool(found) == arg
        elif op == "$not":
            result &= not ref_field(path, arg, doc)
    return result


def ref_match(spec, doc):
    doc = {} if doc is None else doc
    for key, value in spec.items():
        if key == "$and":
            ok = all(ref_match(s, doc) for s in value)
        elif key == "$or":
            ok = any(ref_match(s, doc) for s in value)
        elif key == "$not":
            ok = not ref_match(value, doc)
        else:
            ok = ref_field(key, value, doc)
        if not ok:
            return False
    return True


# --- strategies ------------------------------------------------------------------------------------

KEYS = ["a", "b", "c"]
PATHS = ["a", "b", "c", "a.b", "a.c", "b.a", "c.a.b"]
EDGE_NUMBERS = [0, 1, -1, 2, 0.0, -0.0, 1.0, 1.5, -2.5, 2**53, 2**53 + 1, float(2**53), 2**63 - 1, 2**63,
                -2**63, -2**63 - 1, 10**30, 1e300, -1e-300, 5e-324]
numbers_ = st.one_of(st.sampled_from(EDGE_NUMBERS), st.integers(-3, 3),
                     st.floats(allow_nan=False, allow_infinity=False), st.integers(-2**70, 2**70))
scalars = st.one_of(st.sampled_from([None, True, False, "x", "y", "", "\ud800"]), numbers_, st.text("xy", max_size=2))
json_docs = st.recursive(st.one_of(scalars, st.just(float("nan"))),
                         lambda kids: (st.lists(kids, max_size=3)
                                       | st.dictionaries(st.sampled_from(KEYS), kids, max_size=3)),
                         max_leaves=10)
payloads = st.one_of(st.none(), st.dictionaries(st.sampled_from(KEYS), json_docs, max_size=3))

OP_ARGS = {"$eq": scalars, "$ne": scalars, "$gt": numbers_, "$gte": numbers_, "$lt": numbers_, "$lte": numbers_,
           "$in": st.lists(scalars, max_size=3), "$nin": st.lists(scalars, max_size=3), "$exists": st.booleans()}
plain_op_dicts = st.lists(st.sampled_from(sorted(OP_ARGS)), min_size=1, max_size=3, unique=True).flatmap(
    lambda ops: st.fixed_dictionaries({op: OP_ARGS[op] for op in ops}))
op_dicts = st.one_of(plain_op_dicts, plain_op_dicts.map(lambda d: {"$not": d}),
                     st.tuples(plain_op_dicts, plain_op_dicts).map(lambda t: {**t[0], "$not": t[1]}))
conditions = st.one_of(scalars, op_dicts)
field_filters = st.dictionaries(st.sampled_from(PATHS), conditions, min_size=1, max_size=2)
filters = st.recursive(field_filters, lambda kids: st.one_of(
    st.lists(kids, min_size=1, max_size=3).map(lambda xs: {"$and": xs}),
    st.lists(kids, min_size=1, max_size=3).map(lambda xs: {"$or": xs}),
    kids.map(lambda x: {"$not": x}),
    st.tuples(kids, field_filters).map(lambda t: {"$and": [t[0]], **t[1]}),
), max_leaves=8)
# payloads and filters drawn from a few values, so that conditions and indexes often hit
SMALL = [None, True, False, 0, 1, 1.0, 1.5, -0.0, 2**53 + 1, float(2**53), 2**70, "x", ""]
small = st.sampled_from(SMALL)
small_leaf = small | st.lists(small, min_size=1, max_size=3)
small_object = st.fixed_dictionaries({}, optional={k: small_leaf for k in KEYS})
aligned_docs = st.one_of(small_leaf, small_object, st.fixed_dictionaries({}, optional={k: small_object for k in KEYS}),
                         st.lists(small_object, min_size=1, max_size=2))
aligned_payloads = st.fixed_dictionaries({}, optional={k: aligned_docs for k in KEYS})
small_numbers = st.sampled_from([v for v in SMALL if type(v) in (int, float)])
present = st.sampled_from([v for v in SMALL if v is not None])
answerable_conditions = st.one_of(
    present, st.lists(present, max_size=3).map(lambda vs: {"$in": vs}),
    st.lists(st.sampled_from(sorted(RANGE_OPS)), min_size=1, max_size=2, unique=True).flatmap(
        lambda ops: st.fixed_dictionaries({op: small_numbers for op in ops})))
answerable_filters = st.recursive(
    st.dictionaries(st.sampled_from(PATHS), answerable_conditions, min_size=1, max_size=2),
    lambda kids: st.one_of(st.lists(kids, min_size=1, max_size=3).map(lambda xs: {"$and": xs}),
                           st.lists(kids, min_size=1, max_size=3).map(lambda xs: {"$or": xs})),
    max_leaves=6)
indexed_fields = st.fixed_dictionaries({p: st.sampled_from([KEYWORD, INT, FLOAT, None]) for p in PATHS}).map(
    lambda kinds: {p: k for p, k in kinds.items() if k is not None})


# --- both evaluators against the reference ---------------------------------------------------------


@PROPERTY
@given(st.one_of(filters, answerable_filters), st.lists(st.one_of(payloads, aligned_payloads), max_size=12))
def test_matches_and_mask_equal_the_reference(spec, docs):
    f = compile_filter(spec)
    expected = [ref_match(spec, d) for d in docs]
    assert [f.matches(d) for d in docs] == expected
    mask = f.mask(docs)
    assert mask.dtype == np.bool_ and mask.shape == (len(docs),)
    assert mask.tolist() == expected


@PROPERTY
@given(st.one_of(filters, answerable_filters), st.lists(st.one_of(payloads, aligned_payloads), max_size=12))
def test_mask_evaluating_subsets_equals_the_reference(spec, docs):
    # big batches evaluate the rest of an $and / $or on the still-undecided rows only;
    # with the threshold at one row, small generated batches take that path too
    f = compile_filter(spec)
    with mock.patch.object(filter_evaluation, "NARROW_MIN_ROWS", 1):
        assert f.mask(docs).tolist() == [ref_match(spec, d) for d in docs]


@settings(PROPERTY, max_examples=75)
@given(filters, st.lists(payloads, max_size=6))
def test_to_spec_compiles_back_to_the_same_filter(spec, docs):
    f = compile_filter(spec)
    again = compile_filter(json.loads(json.dumps(f.to_spec())))
    assert again == f and hash(again) == hash(f) and again.canonical == f.canonical
    assert again.fields() == f.fields()
    assert [again.matches(d) for d in docs] == [f.matches(d) for d in docs]


def test_mask_on_a_column_of_every_kind_of_value():
    docs = [{"a": v} for v in [None, True, False, 0, 1, 1.0, -0.0, 2**53 + 1, float(2**53), 10**400, "1", "x",
                               [], [1, "x"],
                               {"b": 1}, [{"b": 1}], float("nan")]] + [None, {}, {"b": 1}]
    for spec in [{"a": 1}, {"a": None}, {"a": True}, {"a": "x"}, {"a": {"$gte": 0}}, {"a": {"$gt": 2**53}},
                 {"a": {"$in": [0, "x", None]}}, {"a": {"$exists": True}}, {"a.b": 1}, {"a": {"$ne": 1}},
                 {"a": {"$lt": 10**401}}, {"a": {"$nin": []}}, {"a": 2**53 + 1}, {"a": {"$in": [2**53 + 1, "x"]}},
                 {"a": {"$in": [2**53 + 1, 1]}}]:
        f = compile_filter(spec)
        assert f.mask(docs).tolist() == [ref_match(spec, d) for d in docs], spec


def test_mask_on_values_json_does_not_make():
    # hand-made dicts may hold any object; such values match nothing, as in matches
    docs = [{"a": np.arange(3)}, {"a": "x"}, {"a": b"x"}, {"a": np.float64(2.0)}, {"a": np.str_("x")}]
    for spec in [{"a": "x"}, {"a": {"$in": ["x", "y"]}}, {"a": 2}, {"a": {"$gt": 1}}, {"a": {"$exists": True}}]:
        f = compile_filter(spec)
        assert f.mask(docs).tolist() == [f.matches(d) for d in docs], spec
    assert compile_filter({"a": "x"}).mask(docs).tolist() == [False, True, False, False, True]
    assert compile_filter({"a": 2}).mask(docs).tolist() == [False, False, False, True, False]


def test_mask_accepts_any_sequence_and_empty_batches():
    f = compile_filter({"a": 1})
    assert f.mask([]).shape == (0,)
    assert f.mask(({"a": 1}, None)).tolist() == [True, False]
    assert f.mask(iter([{"a": [2, 1]}])).tolist() == [True]


def test_payloads_must_be_dicts_or_none():
    f = compile_filter({"a": 1})
    with pytest.raises(InvalidArgument, match="payload must be a dict or None, got list"):
        f.matches([1])
    with pytest.raises(InvalidArgument, match="got str"):
        f.mask([{"a": 1}, "a"])
    with pytest.raises(InvalidArgument, match="got int"):
        compile_filter({}).mask([None, 3])
    with pytest.raises(InvalidArgument, match="got list"):
        compile_filter({"a.b": 1, "c": 2}).mask([{"a": {"b": 1}}, [1]])


# --- specific semantics ---------------------------------------------------------------------------


def _semantics_table():
    """Rows ``| `filter` | `payload` | yes/no |`` of docs/api.md's Filters semantics table."""
    with open(os.path.join(REPO, "docs", "api.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("<!-- filter-examples -->")[1]
    rows = re.findall(r"^\| `(\{.*?\})` \| `(.*?)` \| (yes|no) \|", section, flags=re.M)
    return [(json.loads(f), json.loads(p), r == "yes") for f, p, r in rows]


def test_docs_semantics_table_is_what_filters_do():
    rows = _semantics_table()
    assert len(rows) >= 30
    for spec, payload, expected in rows:
        f = compile_filter(spec)
        assert f.matches(payload) is expected, (spec, payload)
        assert f.mask([payload]).tolist() == [expected], (spec, payload)
        assert ref_match(spec, payload) is expected, (spec, payload)


def test_docs_first_example_runs_as_shown():
    with open(os.path.join(REPO, "docs", "api.md"), encoding="utf-8") as f:
        section = f.read().split("## Filters")[1]
    code = section.split("```python\n")[1].split("```")[0]
    namespace = {"list_of_payloads": [{"tenant": "acme"}, None]}
    exec(code, namespace)
    claims = [line.split("  # True")[0] for line in code.splitlines() if line.endswith("# True")]
    assert claims and all(eval(claim, namespace) is True for claim in claims)


def test_empty_filter_matches_everything():
    f = compile_filter({})
    assert f.matches(None) and f.matches({"a": 1})
    assert f.mask([None, {}]).tolist() == [True, True]
    assert f.to_spec() == {} and f.fields() == ()


def test_fields_are_the_dotted_paths_read():
    f = compile_filter({"lang": "en", "$or": [{"meta.year": {"$gt": 1}}, {"$not": {"tags": {"$in": ["a"]}}}],
                        "x": {"$not": {"$exists": True}}})
    assert f.fields() == ("lang", "meta.year", "tags", "x")


def test_filters_compare_with_json_types():
    assert compile_filter({"a": 1}) == compile_filter({"a": {"$eq": 1}})
    assert compile_filter({"a": 1}) != compile_filter({"a": True})
    assert compile_filter({"a": 1}) != compile_filter({"a": 1.0})
    assert compile_filter({"a": 1}) != {"a": 1}
    assert len({compile_filter({"a": 1}), compile_filter({"a": True})}) == 2


def test_compile_accepts_a_compiled_filter_and_numpy_scalars():
    f = compile_filter({"a": np.int64(3), "b": {"$gte": np.float32(0.5)}, "c": np.bool_(True)})
    assert compile_filter(f) is f
    assert f.matches({"a": 3, "b": 0.5, "c": True}) and not f.matches({"a": 3, "b": 0.5, "c": 1})
    assert f.to_spec() == {"$and": [{"a": {"$eq": 3}}, {"b": {"$gte": 0.5}}, {"c": {"$eq": True}}]}


def test_range_operators_of_one_dict_merge_into_one_interval():
    f = compile_filter({"a": {"$gt": 1, "$gte": 2, "$lt": 9, "$lte": 9}})
    assert f.to_spec() == {"a": {"$gte": 2, "$lt": 9}}
    assert compile_filter({"a": {"$gte": 2, "$gt": 2}}).to_spec() == {"a": {"$gt": 2}}
    assert compile_filter({"a": {"$gte": 5, "$gt": 1, "$lt": 3, "$lte": 9}}).to_spec() == {"a": {"$gte": 5, "$lt": 3}}
    assert compile_filter({"a": {"$gt": 2, "$gte": 2, "$lte": 3, "$lt": 3}}).to_spec() == {"a": {"$gt": 2, "$lt": 3}}
    assert not compile_filter({"a": {"$gt": 5, "$lt": 3}}).matches({"a": 4})  # empty: well formed


def test_large_ints_compare_exactly():
    big = 2**53 + 1
    assert compile_filter({"a": {"$gt": 2**53}}).matches({"a": big})
    assert not compile_filter({"a": {"$gt": big}}).matches({"a": float(2**53)})
    assert not compile_filter({"a": big}).matches({"a": float(2**53)})
    assert compile_filter({"a": {"$lt": 10**400}}).mask([{"a": 1e308}, {"a": 10**399}]).tolist() == [True, True]


# --- malformed filters: each one raises InvalidFilter naming the part -------------------------------

MALFORMED = {
    "range operator given a string": ({"$and": [{"a": 1}, {"year": {"$gte": "x"}}]},
                                      "filter[\"$and\"][1][\"year\"]: $gte needs a number, got 'x'"),
    "range operator given a bool": ({"year": {"$lt": True}}, '["year"]: $lt needs a number, got True (a bool is not'),
    "range operator given null": ({"year": {"$gt": None}}, "$gt needs a number, got None"),
    "range operator given a list": ({"year": {"$lte": [1]}}, "$lte needs a number, got [1]"),
    "range operator given NaN": ({"year": {"$gt": float("nan")}}, "$gt's bound must be a finite number, got nan"),
    "range operator given infinity": ({"year": {"$lt": float("inf")}}, "must be a finite number, got inf"),
    "NaN value": ({"a": float("nan")}, 'filter["a"]: value must be a finite number, got nan'),
    "NaN in $in": ({"a": {"$in": [1, float("nan")]}}, "$in[1] must be a finite number, got nan"),
    "unknown field operator": ({"a": {"$regex": "x"}}, "filter[\"a\"]: unknown operator '$regex'"),
    "unknown top-level operator": ({"$nor": [{"a": 1}]}, "filter[\"$nor\"]: unknown operator '$nor'"),
    "field operator at the top level": ({"$in": [1]}, 'filter["$in"]: $in applies to a field'),
    "$and given a dict": ({"$and": {"a": 1}}, 'filter["$and"]: $and needs a non-empty list of filters'),
    "$and given an empty list": ({"$and": []}, "$and needs a non-empty list of filters, got []"),
    "$or given a string": ({"$or": "a"}, 'filter["$or"]: $or needs a non-empty list'),
    "$or given an empty list": ({"$or": []}, '$or needs a non-empty list of filters, got []'),
    "$and element not a dict": ({"$and": [{"a": 1}, 5]}, 'filter["$and"][1]: a filter must be a dict, got 5'),
    "$or element empty": ({"$or": [{}]}, 'filter["$or"][0]: empty filter'),
    "$not given a scalar": ({"$not": 1}, 'filter["$not"]: a filter must be a dict, got 1'),
    "$not given an empty filter": ({"$not": {}}, 'filter["$not"]: empty filter'),
    "$in given a scalar": ({"a": {"$in": "en"}}, "filter[\"a\"]: $in needs a list of values, got 'en'"),
    "$nin given a dict": ({"a": {"$nin": {"x": 1}}}, "$nin needs a list of values"),
    "$in element a list": ({"a": {"$in": ["x", [1]]}}, "$in[1] must be str, int, float, bool or null, got [1]"),
    "$eq given a dict": ({"a": {"$eq": {"b": 1}}}, "$eq's value must be str, int, float, bool or null"),
    "$ne given a list": ({"a": {"$ne": [1]}}, "$ne's value must be str, int, float, bool or null"),
    "$exists given an int": ({"a": {"$exists": 1}}, 'filter["a"]: $exists needs true or false, got 1'),
    "operators mixed with plain keys": ({"a": {"$gt": 1, "b": 2}},
                                        'filter["a"]: mixes operators ($gt) with plain keys'),
    "object value": ({"meta": {"lang": "en"}}, 'use a dotted path, e.g. "meta.lang"'),
    "list value": ({"tags": ["a", "b"]}, 'got [\'a\', \'b\'] (to match any of several values use {"$in"'),
    "bytes value": ({"a": b"x"}, "value must be str, int, float, bool or null, got b'x'"),
    "set value": ({"a": {1}}, "got {1}"),
    "empty operator dict": ({"a": {}}, 'filter["a"]: empty operator dict'),
    "non-str field name": ({1: "x"}, "filter: field names must be str, got 1"),
    "non-str field name deep": ({"$or": [{"a": 1}, {None: 1}]}, 'filter["$or"][1]: field names must be str, got None'),
    "empty field name": ({"": 1}, "filter: empty field name"),
    "empty path segment": ({"a..b": 1}, "field 'a..b' has an empty path segment"),
    "leading dot": ({".a": 1}, "field '.a' has an empty path segment"),
    "$and on a field": ({"a": {"$and": [{"$gt": 1}]}}, "$and is a top-level operator"),
    "field $not given a scalar": ({"a": {"$not": 5}}, '$not needs a dict of operators, as in {"$not": {"$gt": 1}}'),
    "field $not given plain keys": ({"a": {"$not": {"b": 1}}}, "$not needs a dict of operators"),
    "field $not given an empty dict": ({"a": {"$not": {}}}, "$not needs a dict of operators"),
    "bad operator inside field $not": ({"a": {"$not": {"$gt": "x"}}}, 'filter["a"]["$not"]: $gt needs a number'),
    "deep location": ({"$or": [{"a": 1}, {"$and": [{"b": {"$in": 5}}]}]},
                      'filter["$or"][1]["$and"][0]["b"]: $in needs a list'),
    "too deeply nested": ({"$not": None}, ""),  # replaced below
}


def _deep(levels):
    spec = {"a": 1}
    for _ in range(levels):
        spec = {"$not": spec}
    return spec


MALFORMED["too deeply nested"] = (_deep(MAX_DEPTH + 1), f"nested deeper than {MAX_DEPTH} levels")


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_filter_is_refused_naming_the_part(case):
    spec, fragment = MALFORMED[case]
    with pytest.raises(InvalidFilter) as info:
        compile_filter(spec)
    assert fragment in str(info.value)
    assert isinstance(info.value, ZenstoreError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("spec", [None, "lang", ["a"], 3])
def test_a_filter_must_be_a_dict(spec):
    with pytest.raises(InvalidFilter, match="^filter: a filter must be a dict"):
        compile_filter(spec)


def test_nesting_up_to_the_limit_is_accepted():
    assert compile_filter(_deep(MAX_DEPTH)).matches({"a": 1}) is (MAX_DEPTH % 2 == 0)


# --- index keys ----------------------------------------------------------------------------------


def _cmp(x, y):
    return (x > y) - (x < y)


@PROPERTY
@given(st.integers(-2**63, 2**63 - 1), st.integers(-2**63, 2**63 - 1))
def test_int_key_order_is_numeric_order(x, y):
    assert _cmp(int_key(x), int_key(y)) == _cmp(x, y)
    assert int_from_key(int_key(x)) == x and len(int_key(x)) == 8


@PROPERTY
@given(st.floats(allow_nan=False), st.floats(allow_nan=False))
def test_float_key_order_is_numeric_order(x, y):
    assert _cmp(float_key(x), float_key(y)) == _cmp(x, y)
    back = float_from_key(float_key(x))
    assert back == x and (math.copysign(1, back) == math.copysign(1, x) or x == 0)


def test_key_edges():
    assert int_key(-2**63) == b"\x00" * 8 and int_key(2**63 - 1) == b"\xff" * 8
    assert float_key(-0.0) == float_key(0.0) and math.copysign(1, float_from_key(float_key(-0.0))) == 1
    assert float_key(-math.inf) < float_key(-1e308) < float_key(-5e-324) < float_key(0.0) < float_key(5e-324)
    for bad in (2**63, -2**63 - 1, True, 1.0):
        with pytest.raises(InvalidArgument):
            int_key(bad)
    for bad in (float("nan"), 1, None):
        with pytest.raises(InvalidArgument):
            float_key(bad)
    with pytest.raises(InvalidArgument):
        keyword_key(1)
    with pytest.raises(InvalidArgument):
        int_from_key(b"\x00")


def test_keyword_keys_are_distinct_by_type_and_short():
    assert keyword_key(True) == TRUE_KEY and keyword_key(False) == FALSE_KEY
    assert len({keyword_key(v) for v in [True, False, "true", "false", "", "b\x01", "\ud800"]}) == 7
    long_a, long_b = "a" * 300, "a" * 299 + "b"
    assert keyword_key(long_a) != keyword_key(long_b) and len(keyword_key(long_a)) == 33
    assert keyword_key("é" * 128) != keyword_key("é" * 129)
    assert all(len(keyword_key(s)) <= 257 for s in ["x" * 256, "x" * 257, "é" * 500])


@PROPERTY
@given(numbers_, st.booleans(), st.floats(allow_nan=False))
def test_interval_float_bounds_are_exact(bound, incl, x):
    lo = compile_filter({"a": {"$gte" if incl else "$gt": bound}}).root.float_bounds()
    hi = compile_filter({"a": {"$lte" if incl else "$lt": bound}}).root.float_bounds()
    assert (lo is not None and lo[0] <= x <= lo[1]) == (x >= bound if incl else x > bound)
    assert (hi is not None and hi[0] <= x <= hi[1]) == (x <= bound if incl else x < bound)
    above = (lambda f: f >= bound) if incl else (lambda f: f > bound)
    below = (lambda f: f <= bound) if incl else (lambda f: f < bound)
    if lo is not None:  # the least float inside, and the greatest: their neighbours are outside
        assert above(lo[0]) and not above(math.nextafter(lo[0], -math.inf)) and lo[1] == math.inf
    if hi is not None:
        assert below(hi[1]) and not below(math.nextafter(hi[1], math.inf)) and hi[0] == -math.inf


@PROPERTY
@given(st.one_of(st.none(), numbers_), st.booleans(), st.one_of(st.none(), numbers_), st.booleans(),
       st.one_of(st.integers(-2**63, 2**63 - 1), st.sampled_from([-2**63, 2**63 - 1, 0, -1])),
       st.floats(allow_nan=False))
def test_range_key_bounds_select_exactly_the_values_inside(lo, lo_incl, hi, hi_incl, i, x):
    for kind, value, key in ((INT, i, int_key(i)), (FLOAT, x, float_key(x))):
        r = Range("a", kind, lo, lo_incl, hi, hi_incl)
        bounds = r.key_bounds()
        inside = bounds is not None and bounds[0] <= key <= bounds[1]
        assert inside == r.as_filter().matches({"a": value})


# --- index plans ---------------------------------------------------------------------------------


class SimulatedIndexes:
    """Payload indexes the way a store keeps them: per field, sorted keys -> row sets, plus
    the rows holding numbers the kind cannot key."""

    def __init__(self, docs, indexed):
        self.docs = docs
        self.maps, self.unkeyed = {}, {}
        for field, kind in indexed.items():
            rows_of, unkeyed = {}, set()
            for row, doc in enumerate(docs):
                entry = index_entry(doc, field, kind)
                for key in entry.keys:
                    rows_of.setdefault(key, set()).add(row)
                if entry.unkeyed:
                    unkeyed.add(row)
            self.maps[field] = (sorted(rows_of), rows_of)
            self.unkeyed[field] = unkeyed

    def rows(self, scan):
        if isinstance(scan, Union):
            return set().union(*(self.rows(p) for p in scan.parts))
        if isinstance(scan, Intersection):
            return set.intersection(*(self.rows(p) for p in scan.parts))
        keys, rows_of = self.maps[scan.field]
        if isinstance(scan, Terms):
            hits = [k for k in scan.keys() if k in rows_of]
        else:
            bounds = scan.key_bounds()
            hits = ([] if bounds is None
                    else keys[bisect.bisect_left(keys, bounds[0]):bisect.bisect_right(keys, bounds[1])])
        check = scan.as_filter()
        rechecked = {r for r in self.unkeyed[scan.field] if check.matches(self.docs[r])}
        return set().union(*(rows_of[k] for k in hits)) | rechecked


@PROPERTY
@given(st.one_of(filters, answerable_filters), st.lists(st.one_of(payloads, aligned_payloads), max_size=12),
       indexed_fields)
def test_index_plan_selects_exactly_the_matching_rows(spec, docs, indexed):
    f = compile_filter(spec)
    plan = f.index_plan(indexed)
    indexes = SimulatedIndexes(docs, indexed)
    rows = set(range(len(docs)))
    for scan in plan.scans:
        assert scan.field in indexed if not isinstance(scan, (Union, Intersection)) else True
        rows &= indexes.rows(scan)
    if plan.residual is not None:
        rows = {r for r in rows if plan.residual.matches(docs[r])}
    expected = {r for r, d in enumerate(docs) if f.matches(d)}
    assert rows == expected
    if not plan.scans:
        assert plan.residual == f
    target(float(len(expected)) if plan.scans else 0.0)  # steer towards plans that select rows


def _realistic_docs(n, seed=5):
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        doc = {"lang": ["en", "de", "fr", True][rng.integers(4)], "year": int(rng.integers(2015, 2026)),
               "price": float(np.round(rng.uniform(0, 100), 1)),
               "tags": list(rng.choice(["a", "b", "c", "d"], rng.integers(0, 3))),
               "meta": {"source": ["web", "pdf"][rng.integers(2)], "rank": int(rng.integers(0, 5))}}
        if i % 17 == 0:
            doc["year"] = [2019, 2024.5]  # a number the int index cannot key
        if i % 23 == 0:
            doc["price"] = 2**53 + 1  # nor the float index
        if i % 29 == 0:
            del doc["lang"]
        docs.append(doc if i % 31 else None)
    return docs


REALISTIC_FILTERS = [
    {"lang": "en"}, {"lang": True}, {"lang": {"$in": ["de", "fr"]}}, {"year": 2020}, {"year": {"$gte": 2024}},
    {"year": {"$gt": 2023.5, "$lte": 2025}}, {"year": {"$gte": 2024.5, "$lt": 2024.6}}, {"price": {"$lt": 10.5}},
    {"price": {"$gt": 2**53}}, {"price": {"$in": [50.5, 2**53 + 1]}}, {"tags": "a", "year": {"$lt": 2018}},
    {"$or": [{"tags": "d"}, {"lang": "fr", "year": 2016}]}, {"meta.source": "pdf", "meta.rank": {"$gte": 3}},
    {"lang": "en", "tags": {"$ne": "b"}}, {"$or": [{"lang": "en"}, {"tags": {"$exists": False}}]},
    {"year": {"$gte": 2020}, "$not": {"price": {"$gt": 50}}}, {"lang": None}, {"year": {"$in": [2019, 2024.5]}},
]


@pytest.mark.parametrize("spec", REALISTIC_FILTERS, ids=json.dumps)
def test_index_plan_on_realistic_payloads(spec):
    docs = _realistic_docs(400)
    indexed = {"lang": KEYWORD, "year": INT, "price": FLOAT, "tags": KEYWORD, "meta.source": KEYWORD, "meta.rank": INT}
    f = compile_filter(spec)
    plan = f.index_plan(indexed)
    indexes = SimulatedIndexes(docs, indexed)
    rows = set(range(len(docs)))
    for scan in plan.scans:
        rows &= indexes.rows(scan)
    selected = len(rows)
    if plan.residual is not None:
        rows = {r for r in rows if plan.residual.matches(docs[r])}
    expected = {r for r, d in enumerate(docs) if f.matches(d)}
    assert rows == expected and f.mask(docs).tolist() == [r in expected for r in range(len(docs))]
    if plan.scans:
        assert selected < len(docs)  # the indexes narrowed the rows down


def test_index_plan_maps_each_operator():
    indexed = {"lang": KEYWORD, "year": INT, "price": FLOAT, "tags": KEYWORD}
    plan = compile_filter({"lang": {"$in": ["en", "de"]}, "year": {"$gte": 2020, "$lt": 2024}, "price": 9.5,
                           "$or": [{"tags": "a"}, {"lang": True, "year": 3}], "x": 1}).index_plan(indexed)
    assert plan.scans == (Terms("lang", KEYWORD, ("en", "de")), Range("year", INT, 2020, True, 2024, False),
                          Terms("price", FLOAT, (9.5,)),
                          Union((Terms("tags", KEYWORD, ("a",)),
                                 Intersection((Terms("lang", KEYWORD, (True,)), Terms("year", INT, (3,)))))))
    assert plan.residual == compile_filter({"x": 1})
    assert plan.scans[0].keys() == (keyword_key("de"), keyword_key("en"))
    assert plan.scans[1].key_bounds() == (int_key(2020), int_key(2023))


@pytest.mark.parametrize("spec", [
    {"lang": {"$ne": "en"}}, {"lang": {"$nin": ["en"]}}, {"lang": {"$exists": True}}, {"lang": None},
    {"lang": {"$in": ["en", None]}}, {"lang": 3}, {"lang": {"$gt": 1}}, {"year": "2020"}, {"year": True},
    {"year": {"$in": [1, "1"]}}, {"$not": {"year": 1}}, {"$or": [{"year": 1}, {"other": 1}]},
])
def test_index_plan_leaves_unanswerable_conditions_to_the_residual(spec):
    f = compile_filter(spec)
    plan = f.index_plan({"lang": KEYWORD, "year": INT})
    assert plan.scans == () and plan.residual == f


def test_index_plan_without_a_residual_and_with_bad_kinds():
    plan = compile_filter({"year": {"$gt": 1.5}}).index_plan({"year": INT})
    assert plan.residual is None and plan.scans[0].key_bounds() == (int_key(2), int_key(2**63 - 1))
    assert compile_filter({"year": {"$gt": 2**64}}).index_plan({"year": INT}).scans[0].key_bounds() is None
    with pytest.raises(InvalidArgument, match="indexed must map field names"):
        compile_filter({"a": 1}).index_plan({"a": "text"})


def test_index_entry_keys_and_unkeyed_numbers():
    doc = {"a": [3, 3.0, 3.5, "x", True, None, 2**70, float("nan")], "m": {"k": "v"}}
    assert index_entry(doc, "a", INT) == IndexEntry(frozenset({int_key(3)}), True)
    assert index_entry(doc, "a", FLOAT).keys == {float_key(3.0), float_key(3.5), float_key(float(2**70))}
    assert not index_entry(doc, "a", FLOAT).unkeyed  # 2**70 is exactly a float
    assert index_entry({"a": 2**53 + 1}, "a", FLOAT).unkeyed
    assert index_entry(doc, "a", KEYWORD).keys == {keyword_key("x"), TRUE_KEY}
    assert index_entry(doc, "m.k", KEYWORD).keys == {keyword_key("v")}
    assert index_entry(None, "a", KEYWORD).keys == frozenset()
    with pytest.raises(InvalidArgument):
        index_entry(doc, "a", "text")
    with pytest.raises(InvalidFilter):
        index_entry(doc, "a..b", INT)


def test_filter_is_immutable():
    f = compile_filter({"a": 1})
    with pytest.raises(AttributeError):
        f.root = None
    assert isinstance(f, Filter)


def test_filter_eval_benchmark_runs_small(tmp_path, capsys):
    import importlib.util

    path = os.path.join(REPO, "benchmarks", "filter_eval.py")
    spec = importlib.util.spec_from_file_location("bench_filter_eval", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--n", "300", "--repeats", "1", "--out", str(tmp_path / "fe.json")])
    assert [r["filter"] for r in result["rows"]] == list(bench.FILTERS)
    assert all(0 <= r["selectivity"] <= 1 and r["mask_rows_per_s"] > 0 for r in result["rows"])
    assert 0 < result["rows"][0]["selectivity"] < 1 and result["decode_rows_per_s"] > 0
    assert "rerun: OMP_WAIT_POLICY=passive python benchmarks/filter_eval.py" in capsys.readouterr().out

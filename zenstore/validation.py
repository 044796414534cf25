"""Turning caller input into validated arrays, with errors that name the problem.

Row-wise decisions (is this vector, id or payload storable?) live here once:
``row_problems``, ``id_problem`` and ``payload_problem`` say *why* an item is refused,
``Store`` raises with those reasons for a whole batch, and the bulk loader uses the same
functions to skip or report single rows -- so ``--on-error skip`` skips exactly the rows
``Store.add`` would refuse, never a whole load.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Sequence

import numpy as np

from .errors import (
    DimensionMismatch,
    DuplicateId,
    EmptyBatch,
    IdTypeMismatch,
    InvalidArgument,
    InvalidVector,
)
from .format import MAX_STR_ID_BYTES, coded_dim, compress

_SHOW = 5  # how many offending items an error message lists


def _preview(items) -> str:
    items = list(items)
    more = f" (and {len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return ", ".join(repr(x) for x in items[:_SHOW]) + more


def normalize_ids(ids, *, allow_duplicates: bool = False) -> tuple[np.ndarray, str]:
    """Return (array, id_type): int64 array for int ids, object array of str for str ids."""
    if isinstance(ids, (str, bytes)) or not isinstance(ids, (Sequence, np.ndarray)):
        raise InvalidArgument(
            f"ids must be a sequence (list, tuple or 1-d array) of int or str, got {type(ids).__name__}"
        )
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1:
            raise InvalidArgument(f"ids must be 1-dimensional, got shape {ids.shape}")
        if ids.dtype.kind in "iu":
            if ids.dtype.kind == "u" and ids.size and ids.max() > np.iinfo(np.int64).max:
                raise InvalidArgument("int ids must fit in int64")
            arr, kind = ids.astype(np.int64), "int"
        elif ids.dtype.kind == "U":
            arr, kind = ids.astype(object), "str"
        elif ids.dtype == object:
            return normalize_ids(list(ids), allow_duplicates=allow_duplicates)
        else:
            raise InvalidArgument(f"ids must be int or str, got array of {ids.dtype}")
    else:
        items = list(ids)
        is_int = [isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in items]
        is_str = [isinstance(x, str) for x in items]
        if items and all(is_int):
            try:
                arr = np.array([int(x) for x in items], dtype=np.int64)
            except OverflowError as exc:
                raise InvalidArgument("int ids must fit in int64") from exc
            kind = "int"
        elif items and all(is_str):
            arr, kind = np.empty(len(items), dtype=object), "str"
            arr[:] = items
        elif items:
            bad = [i for i, (a, b) in enumerate(zip(is_int, is_str)) if not (a or b)]
            if bad:
                raise InvalidArgument(
                    f"ids must be int or str; item {bad[0]} is {type(items[bad[0]]).__name__}"
                )
            raise IdTypeMismatch("ids mix int and str; a store uses one kind of id")
        else:
            arr, kind = np.zeros(0, dtype=np.int64), "int"
    if len(arr) == 0:
        raise EmptyBatch("no ids given")
    if kind == "str":
        for i, s in enumerate(arr):
            problem = id_problem(s)
            if problem is not None:
                raise InvalidArgument(f"id {i}: {problem}")
    if not allow_duplicates:
        uniq, counts = np.unique(arr, return_counts=True)
        if np.any(counts > 1):
            raise DuplicateId(f"ids repeat within the batch: {_preview(uniq[counts > 1])}")
    return arr, kind


def id_problem(ext_id) -> str | None:
    """Why a store refuses this one id whatever else is stored, or None. (The kind a store
    already uses and duplicates are batch and store questions, checked by the caller.)"""
    if type(ext_id) is int:  # the common case first: the ABC check below costs ~5 us a call
        return None if -(2**63) <= ext_id < 2**63 else "int id does not fit in int64"
    if isinstance(ext_id, bool) or not isinstance(ext_id, (numbers.Integral, str)):
        return f"id must be an int or a str, got {type(ext_id).__name__}"
    if isinstance(ext_id, str):
        try:
            size = len(ext_id.encode("utf-8"))
        except UnicodeEncodeError:
            return "str id is not valid Unicode text (a lone surrogate)"
        if not 0 < size <= MAX_STR_ID_BYTES:
            return f"str ids must be 1..{MAX_STR_ID_BYTES} bytes of UTF-8, this one has {size}"
        return None
    if not -(2**63) <= int(ext_id) < 2**63:
        return "int id does not fit in int64"
    return None


def as_matrix(vectors, dim: int, what: str = "vectors", *, metric: str | None = None) -> np.ndarray:
    """A finite float32 C-contiguous array of ``dim`` columns, or a clear error.

    A ``dim`` that is not a multiple of 64 comes back zero-padded to the coded width
    (``format.coded_dim``): the codec, the rotation and the kernels work on whole 64-bit
    words, and zeros change no score. With ``metric`` every row check of that metric runs
    too (see ``row_problems``) and one InvalidVector names every refused row with its
    reason."""
    try:
        arr = np.asarray(vectors)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"{what} cannot be read as a numeric array: {exc}") from exc
    if arr.dtype.kind not in "fiu":
        raise InvalidArgument(f"{what} must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise InvalidArgument(f"{what} must be a 2-d (n, {dim}) array, got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise EmptyBatch(f"{what}: empty batch (0 rows)")
    if arr.shape[1] != dim:
        raise DimensionMismatch(f"{what} have dimension {arr.shape[1]}, the store has {dim}")
    width = coded_dim(dim)
    with np.errstate(over="ignore", invalid="ignore"):
        if width == dim:
            out = np.ascontiguousarray(arr, dtype=np.float32)
        else:
            out = np.zeros((arr.shape[0], width), dtype=np.float32)
            out[:, :dim] = arr
    _refuse(out, what, _checks(metric))
    return out


# --- row checks: what a store refuses, one function per reason ---------------------------

# Row lengths the float32 kernels handle: they normalise (cosine) and score with float32
# sums of squares and products, which overflow beyond ~2^64 and underflow below ~2^-63.
COSINE_SAFE_NORM = (2.0**-40, 2.0**40)
MAX_NORM = 2.0**60  # ip / l2: squared norms and scores stay far inside float32

NONFINITE = "NaN or infinity (or a value beyond float32 range)"
ALL_ZERO = "all zeros: no direction under the cosine metric"
TOO_LONG = "Euclidean norm above 2^60: too long for float32 scores"


def _norms(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))


def _sq32(x: np.ndarray) -> np.ndarray:
    """Per-row sum of squares in float32: one fast pass (~4x cheaper than isfinite plus a
    float64 norm at 7680-d). NaN/inf when the row holds one, or when the sum overflows; each
    check below decides exactly (float64, elementwise) on the few rows this cannot settle."""
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        return np.einsum("ij,ij->i", x, x)


def _exact_on(candidates: np.ndarray, x: np.ndarray, test) -> np.ndarray:
    out = np.zeros(x.shape[0], dtype=bool)
    if candidates.any():
        out[candidates] = test(x[candidates])
    return out


def _nonfinite(x: np.ndarray, sq: np.ndarray) -> np.ndarray:
    # a NaN or inf value makes the float32 sum NaN or inf: only those rows need a look
    return _exact_on(~np.isfinite(sq), x, lambda rows: ~np.isfinite(rows).all(axis=1))


def _all_zero(x: np.ndarray, sq: np.ndarray) -> np.ndarray:
    # an all-zero row sums to 0 (so may a row of tiny values, by underflow: look again)
    return _exact_on(sq == 0, x, lambda rows: ~np.any(rows != 0, axis=1))


def _too_long(x: np.ndarray, sq: np.ndarray) -> np.ndarray:
    # float32 rounding is far below a factor 4, so rows under (2^59)^2 are surely short
    with np.errstate(over="ignore", invalid="ignore"):  # NaN/inf rows: NONFINITE comes first
        return _exact_on(~(sq < (MAX_NORM / 2) ** 2), x, lambda rows: _norms(rows) > MAX_NORM)


def _checks(metric: str | None) -> tuple:
    """(reason, row mask) pairs a store of ``metric`` applies, in order: the first a row
    fails is its reason. ``None``: finiteness only (callers that know no metric)."""
    finite = ((NONFINITE, _nonfinite),)
    if metric == "cosine":
        return finite + ((ALL_ZERO, _all_zero),)
    if metric in ("ip", "l2"):
        return finite + ((TOO_LONG, _too_long),)
    return finite


def _first_failed(x: np.ndarray, checks) -> np.ndarray:
    """Per row: 1 + the index of the first check the row fails, 0 if it passes all."""
    code = np.zeros(x.shape[0], dtype=np.int8)
    if x.shape[0] == 0:
        return code
    sq = _sq32(x)
    for k, (_, bad) in enumerate(checks, 1):
        code[(code == 0) & bad(x, sq)] = k
    return code


def _refuse(x: np.ndarray, what: str, checks) -> None:
    """InvalidVector naming every row that fails ``checks``, grouped by reason."""
    code = _first_failed(x, checks)
    if code.any():
        parts = [f"rows {_preview(np.flatnonzero(code == k).tolist())}: {reason}"
                 for k, (reason, _) in enumerate(checks, 1) if (code == k).any()]
        raise InvalidVector(f"{what}: " + "; ".join(parts))


def row_problems(x: np.ndarray, dim: int, metric: str,
                 lengths: np.ndarray | None = None) -> list[tuple[int, str]]:
    """(row, reason) of every row of ``x`` that a store of ``dim`` and ``metric`` refuses,
    in row order, one reason per row: a wrong length, then NaN/inf (or beyond float32),
    then all zeros under cosine or a norm above 2^60 under ip/l2 -- the checks Store's
    writes make (raising InvalidVector naming these rows). The encoder's own limit (a
    residual scale beyond fp16) depends on the base and is found only by encoding.

    ``lengths``: each row's length in the input when ``x`` holds ragged rows padded to
    one width (the loader's JSON Lines and Parquet batches); default: ``x``'s width.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        x = np.asarray(x, dtype=np.float32)
    n = x.shape[0]
    width = x.shape[1] if x.ndim == 2 else 0
    lengths = np.full(n, width) if lengths is None else np.asarray(lengths)
    wrong = lengths != dim
    problems = {int(i): f"vector has {int(lengths[i])} values, the store has dimension {dim}"
                for i in np.flatnonzero(wrong)}
    if n and width == dim and not wrong.all():
        checks = _checks(metric)
        code = _first_failed(x, checks)
        for i in np.flatnonzero((code > 0) & ~wrong):
            problems[int(i)] = checks[code[i] - 1][0]
    return sorted(problems.items())


FP16_MAX = float(np.finfo(np.float16).max)  # base rows are stored as fp16


def trainable(x: np.ndarray, metric: str) -> np.ndarray:
    """Mask of storable rows a base may be trained on. Under ip/l2 a row must also have a
    norm within the fp16 range: base rows are k-means centroids stored as fp16, and a
    centroid of longer rows overflows to inf (every coordinate of a rotated row is at most
    its norm, so centroids of rows within the range stay within it). Cosine normalises."""
    ok = _first_failed(x, _checks(metric)) == 0
    if metric != "cosine" and len(x):
        with np.errstate(over="ignore", invalid="ignore"):
            ok &= _norms(x) <= FP16_MAX
    return ok


def check_rows(x: np.ndarray, metric: str, what: str) -> None:
    """Refuse (InvalidVector naming each row and its reason) every row of a float32 matrix
    that ``row_problems`` flags for ``metric``: the single check Store's writes and queries
    make (``check_nonzero`` and ``check_magnitude`` are its cosine and ip/l2 halves)."""
    _refuse(x, what, _checks(metric))


def check_nonzero(x: np.ndarray, what: str) -> None:
    """Cosine needs a direction: refuse all-zero rows."""
    _refuse(x, what, ((ALL_ZERO, _all_zero),))


def rescale_for_cosine(x: np.ndarray) -> np.ndarray:
    """Rows whose length is outside COSINE_SAFE_NORM, multiplied by a power of two that
    brings it near 1 (exact in floating point; cosine ignores length). Without this a
    vector of 1e-30s or 1e20s was normalised to garbage or to zero -- stored silently
    wrong, or searched with all scores 0. Rows in range are returned bit for bit."""
    lo, hi = COSINE_SAFE_NORM
    sq = _sq32(x)  # rows surely inside the range (float32 error is far below a factor 2) stay
    unsure = np.flatnonzero(~((sq > 2 * lo * lo) & (sq < hi * hi / 2)))
    if not unsure.size:
        return x
    norms = _norms(x[unsure])
    outside = (norms < lo) | (norms > hi)
    if not outside.any():
        return x
    bad = unsure[outside]
    out = x.copy()
    scale = np.exp2(-np.round(np.log2(norms[outside])))
    out[bad] = (x[bad].astype(np.float64) * scale[:, None]).astype(np.float32)
    return out


def check_magnitude(x: np.ndarray, what: str) -> None:
    """ip / l2: refuse rows so long that float32 scores would overflow (inf/NaN scores)."""
    _refuse(x, what, ((TOO_LONG, _too_long),))


def for_metric(x: np.ndarray, metric: str, what: str) -> np.ndarray:
    """Validated rows made safe for the float32 kernels: cosine refuses zero rows and
    rescales extreme lengths exactly; ip and l2 refuse rows too long to score."""
    check_rows(x, metric, what)
    return rescale_for_cosine(x) if metric == "cosine" else x


def unique_keep_order(arr: np.ndarray) -> np.ndarray:
    """``arr`` without repeats, first occurrences in their original order."""
    _, first = np.unique(arr, return_index=True)
    return arr[np.sort(first)]


def as_query(query, dim: int) -> np.ndarray:
    """One query as a (1, dim) float32 array (zero-padded like :func:`as_matrix`);
    accepts shape (dim,) or (1, dim)."""
    arr = np.asarray(query) if not isinstance(query, np.ndarray) else query
    if arr.ndim == 1:
        arr = arr[None, :]
    elif not (arr.ndim == 2 and arr.shape[0] == 1):
        raise InvalidArgument(f"query must have shape ({dim},), got {arr.shape}; use search_batch for many")
    return as_matrix(arr, dim, "query")


def encode_payloads(payloads, n: int) -> list[bytes | None] | None:
    """Compress each payload (a JSON-able dict, or None) now, before anything is written."""
    if payloads is None:
        return None
    if isinstance(payloads, (str, bytes, dict)) or not isinstance(payloads, Sequence):
        raise InvalidArgument("payloads must be a sequence with one dict (or None) per id")
    if len(payloads) != n:
        raise InvalidArgument(f"got {n} ids but {len(payloads)} payloads")
    out: list[bytes | None] = []
    for i, p in enumerate(payloads):
        data, problem = _payload_json(p)
        if problem is not None:
            raise InvalidArgument(f"payload {i} {problem}")
        out.append(None if data is None else compress(data))
    return out


def payload_problem(payload) -> str | None:
    """Why ``add`` refuses this payload (a dict of JSON values, or None), or None."""
    return _payload_json(payload)[1]


_PAYLOAD_JSON = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False)


def _payload_json(p) -> tuple[bytes | None, str | None]:
    """(UTF-8 JSON of the payload or None, the reason it is refused or None). One encoder
    for all calls: ``json.dumps`` with options builds a new one each time (~2x slower)."""
    if p is None:
        return None, None
    if not isinstance(p, dict):
        return None, f"must be a dict or None, got {type(p).__name__}"
    try:
        data = _PAYLOAD_JSON.encode(p).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError is a ValueError
        return None, f"is not JSON-serializable: {exc}"
    # deeper nesting was accepted here but could not be decoded again deeper in the read
    # path's stack (CorruptStore); bytes.count is cheap, the exact walk rarely needed
    if data.count(b"{") + data.count(b"[") > MAX_PAYLOAD_DEPTH and _depth(p) > MAX_PAYLOAD_DEPTH:
        return None, f"is nested more than {MAX_PAYLOAD_DEPTH} levels deep"
    return data, None


MAX_PAYLOAD_DEPTH = 256


def _depth(value) -> int:
    """Nesting depth of dicts and lists (iterative: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            v = v.values()
        elif not isinstance(v, (list, tuple)):
            continue
        deepest = max(deepest, d)
        stack.extend((child, d + 1) for child in v)
    return deepest


def positive_int(value, name: str, *, allow_none: bool = False, maximum: int | None = None):
    if value is None and allow_none:
        return None
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise InvalidArgument(f"{name} must be a positive int, got {value!r}")
    if maximum is not None and value > maximum:
        raise InvalidArgument(f"{name} must be at most {maximum}, got {value!r}")
    return int(value)

"""Turning caller input into validated arrays, with errors that name the problem."""

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
            try:
                size = len(s.encode("utf-8"))
            except UnicodeEncodeError as exc:
                raise InvalidArgument(f"id {i} is not valid Unicode text") from exc
            if size == 0 or size > MAX_STR_ID_BYTES:
                raise InvalidArgument(
                    f"str ids must be 1..{MAX_STR_ID_BYTES} bytes of UTF-8; id {i} has {size}"
                )
    if not allow_duplicates:
        uniq, counts = np.unique(arr, return_counts=True)
        if np.any(counts > 1):
            raise DuplicateId(f"ids repeat within the batch: {_preview(uniq[counts > 1])}")
    return arr, kind


def as_matrix(vectors, dim: int, what: str = "vectors") -> np.ndarray:
    """A finite float32 C-contiguous array of ``dim`` columns, or a clear error.

    A ``dim`` that is not a multiple of 64 comes back zero-padded to the coded width
    (``format.coded_dim``): the codec, the rotation and the kernels work on whole 64-bit
    words, and zeros change no score."""
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
    finite = np.isfinite(out).all(axis=1)
    if not finite.all():
        raise InvalidVector(
            f"{what}: rows with NaN or infinity (or beyond float32 range): "
            f"{_preview(np.flatnonzero(~finite).tolist())}"
        )
    return out


def check_nonzero(x: np.ndarray, what: str) -> None:
    """Cosine needs a direction: refuse all-zero rows."""
    zero = ~np.any(x != 0, axis=1)
    if zero.any():
        raise InvalidVector(
            f"{what}: all-zero rows have no direction under the cosine metric: "
            f"{_preview(np.flatnonzero(zero).tolist())}"
        )


# Row lengths the float32 kernels handle: they normalise (cosine) and score with float32
# sums of squares and products, which overflow beyond ~2^64 and underflow below ~2^-63.
COSINE_SAFE_NORM = (2.0**-40, 2.0**40)
MAX_NORM = 2.0**60  # ip / l2: squared norms and scores stay far inside float32


def _norms(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))


def rescale_for_cosine(x: np.ndarray) -> np.ndarray:
    """Rows whose length is outside COSINE_SAFE_NORM, multiplied by a power of two that
    brings it near 1 (exact in floating point; cosine ignores length). Without this a
    vector of 1e-30s or 1e20s was normalised to garbage or to zero -- stored silently
    wrong, or searched with all scores 0. Rows in range are returned bit for bit."""
    norms = _norms(x)
    lo, hi = COSINE_SAFE_NORM
    bad = (norms < lo) | (norms > hi)
    if not bad.any():
        return x
    out = x.copy()
    scale = np.exp2(-np.round(np.log2(norms[bad])))
    out[bad] = (x[bad].astype(np.float64) * scale[:, None]).astype(np.float32)
    return out


def check_magnitude(x: np.ndarray, what: str) -> None:
    """ip / l2: refuse rows so long that float32 scores would overflow (inf/NaN scores)."""
    big = _norms(x) > MAX_NORM
    if big.any():
        raise InvalidVector(
            f"{what}: rows too long for float32 scores (Euclidean norm above 2^60): "
            f"{_preview(np.flatnonzero(big).tolist())}"
        )


def for_metric(x: np.ndarray, metric: str, what: str) -> np.ndarray:
    """Validated rows made safe for the float32 kernels: cosine refuses zero rows and
    rescales extreme lengths exactly; ip and l2 refuse rows too long to score."""
    if metric == "cosine":
        check_nonzero(x, what)
        return rescale_for_cosine(x)
    check_magnitude(x, what)
    return x


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
        if p is None:
            out.append(None)
            continue
        if not isinstance(p, dict):
            raise InvalidArgument(f"payload {i} must be a dict or None, got {type(p).__name__}")
        try:
            raw = json.dumps(p, allow_nan=False, separators=(",", ":"), ensure_ascii=False)
            data = raw.encode("utf-8")
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidArgument(f"payload {i} is not JSON-serializable: {exc}") from exc
        out.append(compress(data))
    return out


def positive_int(value, name: str, *, allow_none: bool = False, maximum: int | None = None):
    if value is None and allow_none:
        return None
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise InvalidArgument(f"{name} must be a positive int, got {value!r}")
    if maximum is not None and value > maximum:
        raise InvalidArgument(f"{name} must be at most {maximum}, got {value!r}")
    return int(value)

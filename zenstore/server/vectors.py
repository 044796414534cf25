"""Vectors in requests: JSON lists of numbers, or base64 of little-endian float32 bytes.

base64 is about a quarter of the bytes of a JSON number list at 7680 dimensions and far
cheaper to parse; both are accepted wherever a vector is.
"""

from __future__ import annotations

import base64
import binascii

import numpy as np

from .httperrors import ApiError


def decode_vector(value, dim: int, what: str) -> np.ndarray:
    """One (dim,) float32 vector from a JSON list or a base64 string; ApiError 422 naming
    ``what`` otherwise."""
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(422, "invalid_vector", f"{what}: not valid base64") from None
        if len(raw) != 4 * dim:
            raise ApiError(422, "dimension_mismatch", f"{what}: base64 holds {len(raw)} bytes; a {dim}-d "
                           f"float32 vector is {4 * dim}")
        return np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if not isinstance(value, list):
        raise ApiError(422, "invalid_vector", f"{what}: a vector is a JSON list of numbers or a base64 "
                       f"string of float32 bytes, got {type(value).__name__}")
    try:
        arr = np.asarray(value)
    except ValueError:
        arr = np.asarray(value, dtype=object)
    if arr.ndim != 1 or arr.dtype.kind not in "iuf":
        raise ApiError(422, "invalid_vector", f"{what}: must be a flat list of numbers")
    if arr.shape[0] != dim:
        raise ApiError(422, "dimension_mismatch", f"{what}: has {arr.shape[0]} values; the store's "
                       f"dimension is {dim}")
    with np.errstate(over="ignore"):
        return arr.astype(np.float32)


def decode_matrix(values, dim: int, what: str) -> np.ndarray:
    """(n, dim) float32 from a list of vectors (each a JSON list or base64)."""
    if not isinstance(values, list):
        raise ApiError(422, "invalid_vector", f"{what}: must be a list of vectors")
    out = np.empty((len(values), dim), dtype=np.float32)
    for i, v in enumerate(values):
        out[i] = decode_vector(v, dim, f"{what}[{i}]")
    return out


def encode_vector(vec: np.ndarray, fmt: str):
    """A vector for a JSON response: a list of floats (``float``) or base64 (``base64``)."""
    vec = np.asarray(vec, dtype="<f4")
    if fmt == "base64":
        return base64.b64encode(vec.tobytes()).decode("ascii")
    return vec.tolist()

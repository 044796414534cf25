"""Which shard owns an id: a stable hash of the id's catalog key, modulo the shard count.

The key is the store's own catalog encoding of the id (``zenstore.format.id_key``:
``b"i"`` + the int biased to u64 big-endian, or ``b"s"`` + UTF-8), hashed with 8-byte
BLAKE2b (no key, salt or personalisation) read as a little-endian u64. It never depends
on Python's ``hash()`` (salted per process), the platform or the numpy version, so every
process of every node, today and after an upgrade, routes an id to the same shard.

Doubling the shard count keeps ownership local: with ``h mod 2S`` an id of shard ``i``
goes to ``i`` or ``i + S``, so a shard splits in two without touching the others
(docs/scaling.md, "Adding shards").
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..format import id_key


def key_hash(ext_id) -> int:
    """The u64 routing hash of one id (int or str)."""
    return int.from_bytes(hashlib.blake2b(id_key(ext_id), digest_size=8).digest(), "little")


def shard_of(ids: np.ndarray, shards: int) -> np.ndarray:
    """Shard number of each id of a normalised id array (int64 or object of str)."""
    if shards == 1:
        return np.zeros(len(ids), dtype=np.int64)
    values = ids.tolist()
    return np.fromiter((key_hash(v) % shards for v in values), dtype=np.int64, count=len(values))


def split(owner: np.ndarray, shards: int) -> dict[int, np.ndarray]:
    """``{shard: positions}`` of the shards that own at least one row, positions in the
    caller's order (so each shard's part keeps the batch order)."""
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(shards + 1))
    return {s: order[bounds[s]:bounds[s + 1]] for s in range(shards) if bounds[s + 1] > bounds[s]}

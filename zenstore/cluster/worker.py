"""One shard's store and the calls a sharded store makes on it.

A :class:`ShardWorker` owns one open :class:`zenstore.Store` (writable: the shard's
single writer; or read-only). The same class runs inside a Ray actor (``actor.py``) or
in the driver's process (the ``local`` backend, and in-process reads); it returns plain
values (arrays, lists, dicts, ``Hit``/``Record``) that pickle cheaply.
"""

from __future__ import annotations

import hashlib
import os
import time

import numpy as np

from ..errors import StoreLocked
from ..store import Store
from .routing import shard_of

OUT_OF_ORDER = -1  # ingest_batch: the batch before this one is not committed here
OPEN_TIMEOUT = 30.0  # seconds a restarted writer waits for its dead predecessor's lock


def base_digest(base) -> str | None:
    """BLAKE2b of a base matrix and its rotation: equal digests, the same estimator."""
    if base is None:
        return None
    h = hashlib.blake2b(digest_size=16)
    for arr in (base.matrix, base.rotation.signs, base.rotation.perms):
        a = np.ascontiguousarray(arr)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def open_shard(path: str, readonly: bool, verify: bool = True, timeout: float = OPEN_TIMEOUT) -> Store:
    """Open a shard's store; a writer retries ``StoreLocked`` for ``timeout`` seconds,
    since an actor restarted after a crash can start before the kernel has released the
    dead process's lock."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return Store.open(path, readonly=readonly, verify=verify)
        except StoreLocked:
            if readonly or time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


class ShardWorker:
    """The calls on one shard (see the module docstring)."""

    def __init__(self, path: str, readonly: bool, threads: int | None = None, verify: bool = True) -> None:
        if threads is not None:
            import numba

            numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
        self.path = path
        self.store = open_shard(path, readonly, verify)
        self._digest = None

    # --- introspection ------------------------------------------------------------------

    def info(self) -> dict:
        snap = self.store.snapshot()
        if self._digest is None or snap.codec is None:
            self._digest = base_digest(self.store.base())
        return {"count": snap.count, "id_type": snap.id_type, "base_digest": self._digest,
                "config": self.store.config.to_dict(), "pid": os.getpid()}

    def pid(self) -> int:
        return os.getpid()

    def calibration(self):
        """The shard's calibrated default search setting (``calibration.Calibration``) or None."""
        snap = self.store.snapshot()
        return None if snap.codec is None else snap.codec.calibration

    def length(self) -> int:
        return len(self.store)

    def stats(self) -> dict:
        return self.store.stats()

    def verify(self, shard: int, shards: int) -> list[str]:
        """The store's own checks, plus: every id stored here routes here."""
        problems = self.store.verify()
        ids = self.store.ids()
        if len(ids):
            wrong = ids[shard_of(ids, shards) != shard]
            if len(wrong):
                problems.append(f"{len(wrong)} id(s) belong to other shards: "
                                + ", ".join(repr(v) for v in wrong[:5].tolist()))
        return problems

    def ids(self) -> np.ndarray:
        return self.store.ids()

    def base(self):
        return self.store.base()

    def checkpoint(self, name: str) -> dict | None:
        return self.store.checkpoint(name)

    # --- writes ---------------------------------------------------------------------------

    def train(self, sample) -> str:
        self.store.train(sample)
        self._digest = None
        return self.info()["base_digest"]

    def adopt(self, base) -> str:
        """Use ``base``; idempotent (a retry finds it already adopted)."""
        current = base_digest(self.store.base())
        if current is not None and current == base_digest(base):
            return current
        self.store.train(base=base)
        self._digest = None
        return self.info()["base_digest"]

    def write(self, ids, vectors, payloads, upsert: bool) -> int:
        (self.store.upsert if upsert else self.store.add)(ids, vectors, payloads)
        return len(ids)

    def delete(self, ids) -> int:
        return self.store.delete(ids, missing_ok=True)

    def compact(self) -> dict:
        return self.store.compact()

    def ingest_batch(self, name: str, seq: int, after: int, ids, vectors, payloads, record: dict) -> int:
        """Add one ingest batch's rows for this shard with the checkpoint in the same
        transaction; returns the rows added. Idempotent: a batch already committed here (a
        retry after a crash) adds nothing. A batch that does not follow the last one
        committed here (``after``) is not added and ``OUT_OF_ORDER`` returned: batches
        pipelined to a shard never commit around one that failed (the driver resends
        them in order)."""
        state = self.store.checkpoint(name)
        done = -1 if state is None else int(state.get("batch", -1))
        if done >= seq:
            return 0
        if done != after:
            return OUT_OF_ORDER
        self.store.add(ids, vectors, payloads, checkpoint=(name, {**record, "batch": seq}))
        return len(ids)

    def set_checkpoint(self, name: str, record: dict) -> None:
        self.store.set_checkpoint(name, record)

    # --- reads ------------------------------------------------------------------------------

    def contains(self, ids) -> np.ndarray:
        return self.store.contains(ids)

    def get(self, ext_id):
        return self.store.get(ext_id)

    def search(self, query, k, shortlist, nprobe, filter_ids, with_payload):
        return self.store.search(query, k, shortlist=shortlist, nprobe=nprobe, filter_ids=filter_ids,
                                 with_payload=with_payload)

    def search_batch(self, queries, k, shortlist, nprobe, filter_ids):
        return self.store.search_batch(queries, k, shortlist=shortlist, nprobe=nprobe, filter_ids=filter_ids)

    def rerank(self, query, ids, top_n, with_payload):
        return self.store.rerank(query, ids, top_n, with_payload=with_payload)

    def close(self) -> None:
        self.store.close()

"""Reads of an open store: lookups, iteration, search and rerank, with their arguments.

Each read validates its arguments, takes one snapshot (and, where payloads are read, the
read transaction of that same committed state) from the store's :class:`StoreView`, and
runs the query pipeline (``search.py``) on it.
"""

from __future__ import annotations

import numpy as np

from . import records
from .errors import IdNotFound, IdTypeMismatch, InvalidArgument
from .filters import compile_filter
from .search import MAX_K, rerank_snapshot, search_snapshot
from .selection import select_rows
from .snapshot import Snapshot, make_tags
from .types import Hit, Record, SearchOptions
from .validation import as_matrix, as_query, normalize_ids, positive_int, unique_keep_order
from .view import StoreView


def search_options(k, shortlist, nprobe, refine=True, refine_k=None, *,
                   default: tuple[int | None, int] | None = None) -> SearchOptions:
    """Validated options. ``nprobe="all"`` scans everything; a search that gives neither
    ``nprobe`` nor ``shortlist`` takes ``default``, the store's calibrated (nprobe,
    shortlist) (``calibration.py``; None, as for filtered searches or a store without
    one: a full scan with ``SearchOptions``' default shortlist, as does a search giving
    only one of them)."""
    if not isinstance(refine, (bool, np.bool_)):
        raise InvalidArgument(f"refine must be True or False, got {refine!r}")
    k = positive_int(k, "k", maximum=MAX_K)
    shortlist = positive_int(shortlist, "shortlist", allow_none=True, maximum=MAX_K)
    refine_k = positive_int(refine_k, "refine_k", allow_none=True, maximum=MAX_K)
    if isinstance(nprobe, str) and nprobe == "all":
        nprobe = None
    else:
        nprobe = positive_int(nprobe, "nprobe", allow_none=True)
        if default is not None and nprobe is None and shortlist is None:
            nprobe, shortlist = default[0], max(default[1], 10 * k)
    return SearchOptions(k=k, shortlist=shortlist, nprobe=nprobe, refine=bool(refine), refine_k=refine_k)


def _default_from(snap: Snapshot, filter_ids, flt) -> tuple[int | None, int] | None:
    """The calibrated setting an unconfigured search of ``snap`` uses: none for filtered
    searches (the calibration measured unfiltered probes; they keep the full scan)."""
    cal = None if snap.codec is None else snap.codec.calibration
    if cal is None or filter_ids is not None or flt is not None:
        return None
    return cal.nprobe, cal.shortlist


class Reader:
    """The read operations of one open store."""

    def __init__(self, view: StoreView) -> None:
        self.view = view
        self.dim = view.config.dim
        self.metric = view.config.metric

    # --- membership and lookups -----------------------------------------------------------

    def contains_one(self, ext_id) -> bool:
        snap = self.view.current()
        try:
            arr, kind = normalize_ids([ext_id])
        except InvalidArgument:
            return False
        return snap.accepts(kind) and bool(snap.locate(arr)[1][0] >= 0)

    def contains(self, ids) -> np.ndarray:
        snap = self.view.current()
        arr, kind = normalize_ids(ids, allow_duplicates=True)
        if not snap.accepts(kind):
            return np.zeros(len(arr), dtype=bool)
        return snap.locate(arr)[1] >= 0

    def get(self, ext_id) -> Record:
        arr, kind = normalize_ids([ext_id])
        with self.view.reading() as (snap, txn):
            seg_ord, rows = snap.locate(arr) if snap.accepts(kind) else (None, [-1])
            if rows[0] < 0:
                raise IdNotFound(f"id {ext_id!r} not found")
            r = int(rows[0])
            vec = snap.decode_rows(snap.segments[int(seg_ord[0])], slice(r, r + 1))[0]
            payload = records.read_payloads(txn, [arr[0]])[0]
        return Record(arr[0].item() if kind == "int" else arr[0], vec, payload)

    def payloads(self, ids) -> list:
        arr, kind = normalize_ids(ids, allow_duplicates=True)
        with self.view.reading() as (snap, txn):
            if not snap.accepts(kind):
                return [None] * len(arr)
            return records.read_payloads(txn, arr.tolist())

    def iter_records(self, batch_size: int = 4096, *, with_payload: bool = True):
        batch_size = positive_int(batch_size, "batch_size")
        # the read transaction stays open while the caller iterates: one committed state
        with self.view.reading() as (snap, txn):
            for seg in snap.segments:
                live = np.arange(seg.rows) if seg.dead.size == 0 else np.flatnonzero(seg.dead == 0)
                for start in range(0, len(live), batch_size):
                    rows = live[start : start + batch_size]
                    ids = seg.ids[rows]
                    payloads = records.read_payloads(txn, ids.tolist()) if with_payload else None
                    yield ids, snap.decode_rows(seg, rows), payloads

    def ids(self, filter=None) -> np.ndarray:
        flt = None if filter is None else compile_filter(filter)
        if flt is None or not flt.fields():
            return self.view.current().live_ids()
        self._open_index_table(flt)
        with self.view.reading() as (snap, txn):
            sel = select_rows(snap, txn, flt, root=self.view.root)
            parts = [seg.ids[rows] for seg, rows in zip(snap.segments, sel.rows)]
            if not parts:
                return snap.live_ids()
            return np.concatenate(parts)

    # --- search and rerank -----------------------------------------------------------------

    def _filtered(self, snap: Snapshot, txn, queries, opts, filter_ids, flt, refined_rows=None):
        """search_snapshot, restricted by a payload filter when one is given."""
        if flt is None:
            return search_snapshot(snap, queries, opts, self.metric, filter_ids, refined_out=refined_rows)
        sel = select_rows(snap, txn, flt, filter_ids, root=self.view.root)
        return search_snapshot(snap, queries, opts, self.metric, rows=None if sel is None else sel.rows,
                               refined_out=refined_rows)

    def _open_index_table(self, flt) -> None:
        """Open the catalog's payload index table if the store has indexes and this process
        opened the catalog before they existed (it must be open before the read begins;
        until then, filters are checked on payloads: slower, same rows)."""
        if flt is not None and self.view.snapshot.manifest.payload_indexes \
                and records.PINDEX not in self.view.catalog.dbs:
            self.view.catalog.open_optional(records.PINDEX)

    WARM_BATCH = 16  # queries of the warm-up batch: enough for the batch path's parallel kernels

    def warm(self) -> None:
        """Do a new process's one-time search work now: derive the coarse step's projection
        where the default search uses it (~0.3 s for a 1,024 x 7680 base on a 2-core VM)
        and load (or compile) the kernels of the default single-query and batch paths, by
        running both on synthetic queries. Nothing is written; results are discarded."""
        snap = self.view.current()
        if snap.codec is None or snap.count == 0:
            return
        rng = np.random.default_rng(0)
        q = rng.standard_normal((self.WARM_BATCH, self.dim)).astype(np.float32)
        self.search(q[0], k=1, with_payload=False)
        self.search_batch(q, k=1)

    def search(self, query, k=10, *, shortlist=None, nprobe=None, filter_ids=None, filter=None,
               with_payload=True, refine=True, refine_k=None) -> list[Hit]:
        flt = None if filter is None else compile_filter(filter)  # a bad filter: before any work
        search_options(k, shortlist, nprobe, refine, refine_k)  # bad arguments fail before anything is read
        q = as_query(query, self.dim)
        self._open_index_table(flt)
        with self.view.reading() as (snap, txn):
            opts = search_options(k, shortlist, nprobe, refine, refine_k, default=_default_from(snap, filter_ids, flt))
            tags, scores = self._filtered(snap, txn, q, opts, filter_ids, flt)
            found = tags[0] >= 0
            return self._hits(snap, tags[0][found], scores[0][found], with_payload, txn)

    def search_batch(self, queries, k=10, *, shortlist=None, nprobe=None,
                     filter_ids=None, filter=None, refine=True, refine_k=None,
                     refined_rows=None) -> tuple[np.ndarray, np.ndarray]:
        flt = None if filter is None else compile_filter(filter)
        search_options(k, shortlist, nprobe, refine, refine_k)
        q = as_matrix(queries, self.dim, "queries")
        if refined_rows is not None and (not isinstance(refined_rows, np.ndarray)
                                         or refined_rows.shape != (q.shape[0],)):
            raise InvalidArgument(f"refined_rows must be an array of shape ({q.shape[0]},)")
        if flt is None:
            snap = self.view.current()
            opts = search_options(k, shortlist, nprobe, refine, refine_k, default=_default_from(snap, filter_ids, flt))
            tags, scores = search_snapshot(snap, q, opts, self.metric, filter_ids, refined_out=refined_rows)
        else:
            self._open_index_table(flt)
            with self.view.reading() as (snap, txn):
                opts = search_options(k, shortlist, nprobe, refine, refine_k, default=_default_from(snap, filter_ids, flt))
                tags, scores = self._filtered(snap, txn, q, opts, filter_ids, flt, refined_rows)
        str_ids = snap.id_type == "str"
        out_ids = np.full(tags.shape, None, dtype=object) if str_ids else np.full(tags.shape, -1, np.int64)
        found = tags >= 0
        out_ids[found] = snap.tags_to_ids(tags[found])
        return out_ids, scores

    def rerank(self, query, ids, top_n=10, *, filter=None, with_payload=True, refine=True) -> list[Hit]:
        flt = None if filter is None else compile_filter(filter)
        top_n = positive_int(top_n, "top_n", maximum=MAX_K)
        q = as_query(query, self.dim)
        ids_arr, kind = normalize_ids(ids, allow_duplicates=True)
        ids_arr = unique_keep_order(ids_arr)
        with self.view.reading() as (snap, txn):
            if not snap.accepts(kind):
                raise IdTypeMismatch(f"this store uses {snap.id_type} ids; got {kind} ids")
            seg_ord, rows = snap.locate(ids_arr)
            if (rows < 0).any():
                raise IdNotFound(
                    f"{int((rows < 0).sum())} id(s) not found: "
                    + ", ".join(repr(v) for v in ids_arr[rows < 0][:5].tolist())
                )
            if flt is not None and flt.fields():  # only the given ids whose payload matches
                keep = flt.mask(records.read_payloads(txn, ids_arr.tolist()))
                seg_ord, rows = seg_ord[keep], rows[keep]
            tags = make_tags(seg_ord, rows)
            order, scores = rerank_snapshot(snap, q, tags, top_n, bool(refine))
            return self._hits(snap, tags[order], scores, with_payload, txn)

    def _hits(self, snap: Snapshot, tags, scores, with_payload: bool, txn) -> list[Hit]:
        ids = [v.item() if isinstance(v, np.generic) else v for v in snap.tags_to_ids(tags)]
        payloads = records.read_payloads(txn, ids) if with_payload else [None] * len(ids)
        return [Hit(i, float(s), p) for i, s, p in zip(ids, scores, payloads)]

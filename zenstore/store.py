"""The public façade: a store directory, its lifecycle, and one-line delegations.

``Store`` wires three parts together and owns none of their logic:

- :class:`view.StoreView` -- the catalog handle and the current snapshot (reads pick up
  other processes' commits through it);
- :class:`reader.Reader` -- lookups, iteration, search and rerank over a snapshot;
- :class:`writer.Writer` -- the write lock and every write transaction (absent when the
  store is opened ``readonly``).

docs/design.md ("Layers") draws the whole house.
"""

from __future__ import annotations

import os

import numpy as np

from . import format as fmt
from . import records
from .accounting import store_stats
from .basefile import BaseMatrix
from .errors import InvalidArgument, NotAStore, ReadOnlyStore
from .reader import Reader
from .snapshot import Snapshot
from .types import Hit, Record
from .verify import verify_store
from .version import __version__
from .view import StoreView
from .writer import Writer, create_store, take_writer_lock


class Store:
    """A zenstore directory. Create with :meth:`create`, open with :meth:`open`."""

    def __init__(self, view: StoreView, writer: Writer | None) -> None:
        self._view = view
        self._writer = writer
        self._reader = Reader(view)

    # --- lifecycle ------------------------------------------------------------------------

    @classmethod
    def create(cls, path, dim: int = 7680, metric: str = "cosine", **options) -> Store:
        """Create an empty store at ``path`` (which must not exist, or be an empty directory).

        Options are the fields of :class:`zenstore.format.StoreConfig`: ``n_base``,
        ``scale_blocks``, ``scale_estimator``, ``rotation``, ``train_sample``,
        ``min_rows_per_base``, ``segment_fanout``, ``seed``, and ``refine``: None (no refine
        tier), ``"int8"`` or ``"magnitude<bits>"`` (``"magnitude4"`` is the cheapest that
        kept NDCG@10 on every set measured, docs/refine.md): more bits per vector kept in
        a refine file beside each segment and read only for the rows a search shortlists.
        """
        path = os.fspath(path)
        unknown = set(options) - set(fmt.StoreConfig.__dataclass_fields__) - {"dim", "metric"}
        if unknown:
            raise InvalidArgument(f"unknown store option(s): {sorted(unknown)}")
        create_store(path, fmt.StoreConfig(dim=dim, metric=metric, **options), f"zenstore {__version__}")
        return cls.open(path)

    @classmethod
    def open(cls, path, readonly: bool = False, *, verify: bool = True, warm: bool = False) -> Store:
        """Open an existing store. ``readonly`` stores refuse writes and take no lock.

        ``verify`` checks the crc32 of every data file as it is loaded (reads each file
        once; ~7 GB/s). A second writer, in this process or another, gets StoreLocked.
        ``warm`` runs :meth:`warm` before returning, so the first search pays no one-time
        cost (a service opening a store at start-up; off by default, so a script that opens
        a store to write or to read a few ids does not pay for it).
        """
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise NotAStore(f"{path}: no such store directory")
        catalog = records.open_catalog(path, readonly=True) if readonly else None
        lock_fd = None
        try:
            if not readonly:
                lock_fd = take_writer_lock(path)
                catalog = records.open_catalog(path, readonly=False)
            with catalog.read() as txn:
                config = records.read_config(txn, path)
            view = StoreView(path, catalog, config, readonly, verify)
        except BaseException:
            if catalog is not None:
                catalog.close()
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        writer = None if readonly else Writer(view, lock_fd)
        store = cls(view, writer)
        if writer is not None:
            writer.remove_orphans()
        if warm:
            try:
                store.warm()
            except BaseException:
                store.close()
                raise
        return store

    def warm(self) -> None:
        """Do the one-time work of a process's first search now: derive the projection of
        the coarse step and load (or, with a cold numba cache, compile) the search kernels.
        Measured on a quiet 2-core VM with a warm cache: the first search after ``open``
        took 0.52-0.59 s on 7680-d stores (0.28 s of it the projection), 2-3 ms after
        ``warm()`` (docs/benchmarks.md, "Start-up"). Idempotent; a no-op on an empty store."""
        self._reader.warm()

    def close(self) -> None:
        """Release the catalog, the mapped files and the write lock. Idempotent."""
        with self._view.mutex:
            if self._view.closed:
                return
            self._view.close()
            self._view.catalog.close()
            if self._writer is not None:
                self._writer.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._view.closed else f"{len(self._view.snapshot.manifest.segments)} segments"
        return f"Store({self.path!r}, dim={self.dim}, metric={self.metric!r}, {state})"

    # --- properties -------------------------------------------------------------------------

    @property
    def path(self) -> str:
        return self._view.root

    @property
    def config(self) -> fmt.StoreConfig:
        return self._view.config

    @property
    def dim(self) -> int:
        return self._view.config.dim

    @property
    def metric(self) -> str:
        return self._view.config.metric

    @property
    def readonly(self) -> bool:
        return self._writer is None

    def __len__(self) -> int:
        return self._view.current().count

    def __contains__(self, ext_id) -> bool:
        return self._reader.contains_one(ext_id)

    def contains(self, ids) -> np.ndarray:
        """Vectorized membership: a bool array, True where the id is stored (and live)."""
        return self._reader.contains(ids)

    def snapshot(self) -> Snapshot:
        """The current immutable snapshot (manifest, codec, loaded segments), for the
        pipeline functions of ``zenstore.search`` (benchmarks, diagnostics)."""
        return self._view.current()

    def base(self) -> BaseMatrix | None:
        """The trained base matrix and rotation (None before training); another store of
        the same dim and metric adopts it with ``train(base=...)``."""
        codec = self._view.current().codec
        return None if codec is None else BaseMatrix(codec.base16, codec.rotation)

    # --- writes -----------------------------------------------------------------------------

    def _write(self) -> Writer:
        self._view.check_open()
        if self._writer is None:
            raise ReadOnlyStore(f"{self.path}: store was opened read-only")
        return self._writer

    def train(self, sample=None, *, base: BaseMatrix | None = None) -> None:
        """Learn the base matrix from ``sample`` (n, dim) before the first add, or adopt
        ``base`` (another store's ``base()``).

        Optional: the first ``add`` trains on (a sample of) its own batch when the store
        has no base yet. The base cannot change once vectors are stored.
        """
        self._write().train(sample, base)

    def add(self, ids, vectors, payloads=None, *, checkpoint: tuple[str, dict] | None = None) -> None:
        """Add new vectors. Any id already stored (or repeated) raises DuplicateId and
        nothing is written. All rows become visible together when this returns.

        ``checkpoint=(name, record)`` stores the JSON ``record`` under ``name`` in the
        same transaction as the batch (read it back with :meth:`checkpoint`): a bulk
        loader that records its input offset this way resumes exactly where the last
        committed batch ended, with no row lost or duplicated.
        """
        self._write().write_batch(ids, vectors, payloads, upsert=False, checkpoint=checkpoint)

    def upsert(self, ids, vectors, payloads=None, *, checkpoint: tuple[str, dict] | None = None) -> None:
        """Add or replace: an existing id's vector and payload are replaced (a payload of
        None removes the old payload). Atomic like ``add``."""
        self._write().write_batch(ids, vectors, payloads, upsert=True, checkpoint=checkpoint)

    def calibrate(self, ids, vectors):
        """Learn the default search setting again from stored rows (their ids and original
        vectors; e.g. a sample of the last bulk load) and record it in the catalog; returns
        the :class:`zenstore.calibration.Calibration`. ``add`` does this by itself when the
        store is trained and whenever it has grown 4x (docs/api.md, "Default search")."""
        return self._write().calibrate(ids, vectors)

    def delete(self, ids, *, missing_ok: bool = False) -> int:
        """Delete ids (tombstones; space is reclaimed by merges and ``compact``).

        Unknown ids raise IdNotFound (nothing is deleted) unless ``missing_ok``.
        Returns the number of ids deleted.
        """
        return self._write().delete(ids, missing_ok=missing_ok)

    def compact(self) -> dict:
        """Merge all segments into one, dropping deleted rows. Returns before/after counts."""
        return self._write().compact()

    def checkpoint(self, name: str) -> dict | None:
        """The record last stored with ``checkpoint=(name, record)``, or None."""
        self._view.check_open()
        with self._view.catalog.read() as txn:
            return records.read_checkpoint(txn, name)

    def set_checkpoint(self, name: str, record: dict) -> None:
        """Store a checkpoint record without adding rows (e.g. a batch whose rows were all
        rejected still advances a loader's offset)."""
        self._write().set_checkpoint(name, record)

    # --- reads ------------------------------------------------------------------------------

    def get(self, ext_id) -> Record:
        """The dequantized vector (original space) and payload of one id."""
        return self._reader.get(ext_id)

    def payloads(self, ids) -> list:
        """The payloads of ``ids`` (a list, None where an id has none or is not stored),
        read from one committed state; for callers that found the ids by other means."""
        return self._reader.payloads(ids)

    def iter_records(self, batch_size: int = 4096, *, with_payload: bool = True):
        """Yield ``(ids, vectors, payloads)`` batches covering every live row once:
        ids as an array, dequantized float32 vectors (n, dim), payloads as a list (or
        None). Works on one snapshot, so concurrent writes do not affect the iteration."""
        return self._reader.iter_records(batch_size, with_payload=with_payload)

    def ids(self, *, filter=None) -> np.ndarray:
        """All live ids (int64 array, or object array of str), in storage order; with
        ``filter``, only those whose payload matches it (answered by payload indexes where
        they can, else by decoding the payloads a chunk at a time)."""
        return self._reader.ids(filter)

    def search(self, query, k: int = 10, *, shortlist: int | None = None,
               nprobe: int | None = None, filter_ids=None, filter=None, with_payload: bool = True,
               refine: bool = True, refine_k: int | None = None) -> list[Hit]:
        """The ``k`` best stored vectors for one query, best first.

        ``shortlist``: candidates kept by the Hamming pass for exact rescoring (default
        ``max(200, 10 k)``; larger is slower and more accurate). ``nprobe``: scan only the
        rows of the ``nprobe`` base rows nearest the query (default: all). ``filter_ids``:
        only these ids are candidates (unknown ids are ignored). ``filter``: only rows
        whose payload matches this filter (``zenstore.filters``; InvalidFilter if it is
        malformed), answered by payload indexes where they can. On a store with a refine
        tier, ``refine`` (default True) rescores the best ``refine_k`` candidates (default
        100) with it, as many of them as the hot estimate's error bound leaves in doubt;
        ``refine=False`` returns the hot ranking, as a store without a tier would.
        """
        return self._reader.search(query, k, shortlist=shortlist, nprobe=nprobe,
                                   filter_ids=filter_ids, filter=filter, with_payload=with_payload,
                                   refine=refine, refine_k=refine_k)

    def search_batch(self, queries, k: int = 10, *, shortlist: int | None = None,
                     nprobe: int | None = None, filter_ids=None, filter=None, refine: bool = True,
                     refine_k: int | None = None,
                     refined_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Search many queries at once (one ``filter`` for all); returns (ids, scores),
        each (nq, k).

        Rows with fewer than k results are padded with id -1 (int stores) or None (str
        stores) and score NaN. Options as for :meth:`search`; ``refined_rows``, an (nq,)
        int64 array, receives how many rows each query refined.
        """
        return self._reader.search_batch(queries, k, shortlist=shortlist, nprobe=nprobe,
                                         filter_ids=filter_ids, filter=filter, refine=refine,
                                         refine_k=refine_k, refined_rows=refined_rows)

    def rerank(self, query, ids, top_n: int = 10, *, filter=None, with_payload: bool = True,
               refine: bool = True) -> list[Hit]:
        """Exact dequantized scores of the given stored ids for ``query``, best first;
        with ``filter``, only the given ids whose payload matches; with a refine tier (and
        ``refine``), their refined scores.

        Unknown ids raise IdNotFound; repeated ids are scored once.
        """
        return self._reader.rerank(query, ids, top_n, filter=filter, with_payload=with_payload, refine=refine)

    # --- payload indexes --------------------------------------------------------------------

    def create_payload_index(self, field: str, kind: str) -> bool:
        """Index the payload field ``field`` (a dotted path) as ``kind``: ``"keyword"``
        (str and bool values: equality, ``$in``), ``"int"`` or ``"float"`` (numbers:
        equality, ``$in``, ranges). Built from every stored payload in one transaction and
        kept up to date by every write. Returns False if ``field`` already has an index of
        that kind. A store with indexes has format version 2 (older zenstore refuses it)."""
        return self._write().create_payload_index(field, kind)

    def drop_payload_index(self, field: str) -> None:
        """Remove the index of ``field``; the last one dropped returns the store to format
        version 1. InvalidArgument if ``field`` has no index."""
        self._write().drop_payload_index(field)

    def payload_indexes(self) -> dict[str, str]:
        """``{field: kind}`` of every payload index."""
        return self._view.current().manifest.indexed

    # --- introspection --------------------------------------------------------------------

    def stats(self) -> dict:
        """Counts and bytes. ``bytes_per_vector`` is the hot vector data only (codes + scales
        + aux term); ``refine_bytes_per_vector`` and ``refine_file_bytes`` are the refine
        tier's, apart; ``bytes_on_disk`` splits every byte of the directory by part."""
        return store_stats(self._view)

    def verify(self) -> list[str]:
        """Check every file's checksums and the catalog's consistency; see :func:`verify_store`."""
        self._view.check_open()
        return verify_store(self.path)

"""The public façade: a store directory, its lifecycle, writes and queries.

A write (``add``, ``upsert``, ``delete``, ``compact``) first writes any new immutable
file (base matrix, segment) under a temporary name, fsyncs and renames it, and only then
commits one LMDB transaction that makes it visible. A crash before the commit leaves an
unreferenced file that the next writer removes; a crash after it leaves a complete
batch. Readers work from an immutable snapshot (manifest + loaded segments) that they
refresh when the catalog's generation counter moves.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import threading
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np

from . import __version__
from . import format as fmt
from .catalog import CATALOG_FILE, Catalog
from .codec import Codec
from .errors import (
    CorruptStore,
    DuplicateId,
    FormatVersionError,
    IdNotFound,
    IdTypeMismatch,
    InvalidArgument,
    NotAStore,
    ReadOnlyStore,
    StoreClosed,
    StoreExists,
    StoreLocked,
)
from .faults import fault
from .files import TMP_SUFFIX, fsync_dir
from .rotation import Rotation
from .search import ROW_BITS, ROW_MASK, exact_scores, prepare_queries, rank, search_prepared, to_scores
from .segment import (
    SEGMENT_DIR,
    Segment,
    load_base,
    load_segment,
    merge_segments,
    order_rows,
    write_base,
    write_segment,
)
from .train import effective_n_base, train_base
from .types import Hit, Record, SearchOptions
from .validation import (
    as_matrix,
    as_query,
    check_magnitude,
    check_nonzero,
    encode_payloads,
    normalize_ids,
    positive_int,
    rescale_for_cosine,
)

log = logging.getLogger("zenstore")

LOCK_FILE = "writer.lock"
_GEN_KEY = b"generation"
_MAX_K = 1 << 20


@dataclass(frozen=True)
class _Snapshot:
    """An immutable view of the store at one catalog generation."""

    manifest: fmt.Manifest
    codec: Codec | None
    segments: tuple[Segment, ...]

    @property
    def generation(self) -> int:
        return self.manifest.generation


def _remove_dead_creations(path: str) -> None:
    """Delete ``PATH.creating-PID`` directories left by a ``create`` whose process died.

    Only directories whose PID is no longer alive and that hold nothing but what
    ``create`` writes (the catalog, its lock file, an empty segment directory) are removed;
    anything else is left alone.
    """
    parent, prefix = os.path.dirname(path), os.path.basename(path) + ".creating-"
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        pid = name[len(prefix):]
        if not name.startswith(prefix) or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        tmp = os.path.join(parent, name)
        try:
            entries = set(os.listdir(tmp))
            if not entries <= {CATALOG_FILE, CATALOG_FILE + "-lock", SEGMENT_DIR}:
                continue
            if SEGMENT_DIR in entries and os.listdir(os.path.join(tmp, SEGMENT_DIR)):
                continue
            for f in (CATALOG_FILE, CATALOG_FILE + "-lock"):
                _unlink_quietly(os.path.join(tmp, f))
            if SEGMENT_DIR in entries:
                os.rmdir(os.path.join(tmp, SEGMENT_DIR))
            os.rmdir(tmp)
            log.info("removed %s, left by a create that did not finish", tmp)
        except OSError:
            continue


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class Store:
    """A zenstore directory. Create with :meth:`create`, open with :meth:`open`."""

    def __init__(self, root: str, catalog: Catalog, config: fmt.StoreConfig, readonly: bool,
                 lock_fd: int | None, verify: bool) -> None:
        self._root = root
        self._catalog = catalog
        self._config = config
        self._readonly = readonly
        self._lock_fd = lock_fd
        self._verify = verify
        self._mutex = threading.RLock()
        self._closed = False
        self._snap = _Snapshot(fmt.Manifest(), None, ())
        self._snap = self._load_snapshot(self._snap)

    # --- lifecycle ------------------------------------------------------------------------

    @classmethod
    def create(cls, path, dim: int = 7680, metric: str = "cosine", **options) -> Store:
        """Create an empty store at ``path`` (which must not exist, or be an empty directory).

        Options are the fields of :class:`zenstore.format.StoreConfig`: ``n_base``,
        ``scale_blocks``, ``scale_estimator``, ``rotation``, ``train_sample``,
        ``min_rows_per_base``, ``segment_fanout``, ``seed``.
        """
        path = os.fspath(path)
        unknown = set(options) - set(fmt.StoreConfig.__dataclass_fields__) - {"dim", "metric"}
        if unknown:
            raise InvalidArgument(f"unknown store option(s): {sorted(unknown)}")
        config = fmt.StoreConfig(dim=dim, metric=metric, **options)
        if os.path.exists(path) and not (os.path.isdir(path) and not os.listdir(path)):
            raise StoreExists(f"{path}: already exists and is not an empty directory")
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            raise NotAStore(f"{parent}: parent directory does not exist")
        _remove_dead_creations(os.path.abspath(path))
        tmp = f"{os.path.abspath(path)}.creating-{os.getpid()}"
        os.makedirs(os.path.join(tmp, SEGMENT_DIR))
        try:
            catalog = Catalog(tmp, readonly=False, create=True)
            try:
                with catalog.write() as txn:
                    txn.put("meta", b"format", fmt.dumps_json({
                        "magic": fmt.STORE_MAGIC,
                        "format_version": fmt.FORMAT_VERSION,
                        "created_by": f"zenstore {__version__}",
                    }))
                    txn.put("meta", b"config", fmt.dumps_json(config.to_dict()))
                    _put_manifest(txn, fmt.Manifest())
            finally:
                catalog.close()
            fsync_dir(tmp)
            fault("create.catalog")  # complete store under its temporary name
            os.rename(tmp, path)
            fault("create.renamed")
            fsync_dir(parent)
        except BaseException:
            for name in (CATALOG_FILE, CATALOG_FILE + "-lock"):
                _unlink_quietly(os.path.join(tmp, name))
            for d in (os.path.join(tmp, SEGMENT_DIR), tmp):
                try:
                    os.rmdir(d)
                except OSError:
                    pass
            raise
        return cls.open(path)

    @classmethod
    def open(cls, path, readonly: bool = False, *, verify: bool = True) -> Store:
        """Open an existing store. ``readonly`` stores refuse writes and take no lock.

        ``verify`` checks the crc32 of every data file as it is loaded (reads each file
        once; ~7 GB/s). A second writer, in this process or another, gets StoreLocked.
        """
        path = os.fspath(path)
        if not os.path.isdir(path):
            raise NotAStore(f"{path}: no such store directory")
        catalog = Catalog(path, readonly=True) if readonly else None
        lock_fd = None
        try:
            if not readonly:
                lock_fd = _take_writer_lock(path)
                catalog = Catalog(path, readonly=False)
            config = _read_config(catalog, path)
            store = cls(path, catalog, config, readonly, lock_fd, verify)
        except BaseException:
            if catalog is not None:
                catalog.close()
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        if not readonly:
            store._remove_orphans()
        return store

    def close(self) -> None:
        """Release the catalog, the mapped files and the write lock. Idempotent."""
        with self._mutex:
            if self._closed:
                return
            self._closed = True
            self._snap = _Snapshot(self._snap.manifest, None, ())
            self._catalog.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self._snap.manifest.segments)} segments"
        return f"Store({self._root!r}, dim={self._config.dim}, metric={self._config.metric!r}, {state})"

    # --- properties -------------------------------------------------------------------------

    @property
    def path(self) -> str:
        return self._root

    @property
    def config(self) -> fmt.StoreConfig:
        return self._config

    @property
    def dim(self) -> int:
        return self._config.dim

    @property
    def metric(self) -> str:
        return self._config.metric

    @property
    def readonly(self) -> bool:
        return self._readonly

    def __len__(self) -> int:
        return self._current().manifest.count

    def __contains__(self, ext_id) -> bool:
        snap = self._current()
        try:
            arr, kind = normalize_ids([ext_id])
        except InvalidArgument:
            return False
        if snap.manifest.id_type not in (None, kind):
            return False
        return bool(self._locate(snap, arr)[1][0] >= 0)

    def contains(self, ids) -> np.ndarray:
        """Vectorized membership: a bool array, True where the id is stored (and live)."""
        snap = self._current()
        arr, kind = normalize_ids(ids, allow_duplicates=True)
        if snap.manifest.id_type not in (None, kind):
            return np.zeros(len(arr), dtype=bool)
        return self._locate(snap, arr)[1] >= 0

    # --- snapshots --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(f"{self._root}: store is closed")

    def _current(self) -> _Snapshot:
        """The latest committed snapshot (readers pick up other processes' writes here).

        A writable handle is refreshed too when the catalog moved without it (a write
        interrupted after its commit), but never waits for a write in progress: that
        write installs its own snapshot when it finishes.
        """
        self._check_open()
        if self._catalog_generation() != self._snap.generation:
            if self._mutex.acquire(blocking=self._readonly):
                try:
                    if self._catalog_generation() != self._snap.generation:
                        self._snap = self._load_snapshot(self._snap)
                finally:
                    self._mutex.release()
        return self._snap

    def _catalog_generation(self) -> int:
        with self._catalog.read() as txn:
            return _txn_generation(txn)

    def _committed(self, generation: int) -> bool:
        """Whether the catalog holds ``generation``: asked when an exception escaped a
        commit. Ctrl-C (KeyboardInterrupt) or a SIGTERM handler's SystemExit that arrives
        while the commit is in fsync is raised right after the commit returned; removing
        the new files then would break a committed store. When the answer cannot be
        read, the files stay (an orphan is removed by the next writer; a lost file is
        lost data)."""
        try:
            return self._catalog_generation() >= generation
        except BaseException:  # noqa: BLE001 - e.g. a second interrupt: keep the files
            return True

    def _discard_uncommitted(self, generation: int, files: list[str]) -> None:
        """Remove files written for ``generation`` if, and only if, it was not committed."""
        if files and not self._committed(generation):
            for rel in files:
                _unlink_quietly(os.path.join(self._root, rel))

    def _load_snapshot(self, prev: _Snapshot) -> _Snapshot:
        for _attempt in range(5):
            try:
                with self._catalog.read() as txn:
                    return self._build_snapshot(txn, prev)
            except CorruptStore as exc:
                # A concurrent writer may have merged away a file this manifest listed;
                # retry on the newer manifest, but only if there is one.
                if "is missing" not in str(exc) or not self._generation_moved(prev):
                    raise
        raise CorruptStore(f"{self._root}: store keeps changing underneath the reader")

    @contextmanager
    def _reading(self):
        """``(snapshot, txn)``: the latest snapshot and an open LMDB read transaction of
        the same committed state, for reads that combine segments with catalog records.

        Payloads used to be read in a later transaction than the snapshot's: a hit whose
        id a concurrent writer had just deleted came back with payload None (an upserted
        one with its next payload), and iter_records() mixed states across batches.
        """
        self._check_open()
        for _attempt in range(5):
            snap = self._snap
            with self._catalog.read() as txn:
                gen = _txn_generation(txn)
                if gen != snap.generation:
                    try:
                        snap = self._build_snapshot(txn, snap)
                    except CorruptStore as exc:
                        # a file of this state was merged away since: retry on the newer one
                        if "is missing" in str(exc) and self._generation_moved(gen):
                            continue
                        raise
                    if self._mutex.acquire(blocking=self._readonly):  # see _current
                        try:
                            if snap.generation > self._snap.generation:
                                self._snap = snap
                        finally:
                            self._mutex.release()
                yield snap, txn
                return
        raise CorruptStore(f"{self._root}: store keeps changing underneath the reader")

    def _generation_moved(self, prev: _Snapshot | int) -> bool:
        with self._catalog.read() as txn:
            gen = _txn_generation(txn)
        return gen != (prev if isinstance(prev, int) else prev.generation)

    def _build_snapshot(self, txn, prev: _Snapshot) -> _Snapshot:
        raw = txn.get("meta", b"manifest")
        if raw is None:
            raise CorruptStore(f"{self._root}: catalog has no manifest")
        manifest = fmt.Manifest.from_dict(fmt.loads_json(raw, "manifest"))
        if txn.count("ids") != len(manifest.segments):  # O(1); e.g. a manifest that lost a segment
            raise CorruptStore(f"{self._root}: catalog holds id columns for {txn.count('ids')} "
                               f"segments, the manifest lists {len(manifest.segments)}")
        codec = prev.codec
        if manifest.base is None:
            codec = None
        elif prev.codec is None or prev.manifest.base != manifest.base:
            base, rotation = load_base(self._root, manifest.base, self._config)
            codec = Codec(self._config, base, rotation)
        old = {s.record.id: s for s in prev.segments}
        segments = []
        for rec in manifest.segments:
            if codec is None:
                raise CorruptStore(f"{self._root}: manifest lists segments but no base matrix")
            seg = old.get(rec.id)
            key = fmt.segment_key(rec.id)
            if seg is not None and seg.record == rec:
                segments.append(seg)
                continue
            dead = self._read_tombstones(txn, rec)
            if seg is not None and seg.record.rows == rec.rows:
                segments.append(seg.with_tombstones(dead, rec))
                continue
            ids = _decode_ids(txn.get("ids", key), rec, manifest.id_type, self._root)
            segments.append(load_segment(self._root, rec, self._config, codec, ids, dead,
                                         verify=self._verify))
        return _Snapshot(manifest, codec, tuple(segments))

    def _read_tombstones(self, txn, rec: fmt.SegmentRecord) -> np.ndarray:
        return _decode_tombstones(txn.get("tombstones", fmt.segment_key(rec.id)), rec, self._root)

    def _locate(self, snap: _Snapshot, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(segment ordinal, row) of each live id, -1 where absent."""
        seg_ord = np.full(len(ids), -1, dtype=np.int64)
        rows = np.full(len(ids), -1, dtype=np.int64)
        for ordinal, seg in enumerate(snap.segments):
            r = seg.lookup(ids)
            found = r >= 0
            seg_ord[found] = ordinal
            rows[found] = r[found]
        return seg_ord, rows

    # --- writes -----------------------------------------------------------------------------

    def _writable(self) -> _Snapshot:
        """The snapshot a write builds on (call with the mutex held).

        If the catalog moved without this handle -- a write interrupted after its commit
        (Ctrl-C caught in a notebook, a SIGTERM handler's SystemExit caught by a service)
        -- the snapshot is rebuilt from the catalog first: a manifest built on the stale
        one would silently drop the committed batch. Files the interrupted write left
        unreferenced are removed.
        """
        self._check_open()
        if self._readonly:
            raise ReadOnlyStore(f"{self._root}: store was opened read-only")
        if self._catalog_generation() != self._snap.generation:
            log.warning("%s: the catalog moved since this handle's last write (an interrupted "
                        "call?); reloading it", self._root)
            self._snap = self._load_snapshot(self._snap)
            self._remove_orphans()
        return self._snap

    def train(self, sample) -> None:
        """Learn the base matrix from ``sample`` (n, dim) before the first add.

        Optional: the first ``add`` trains on (a sample of) its own batch when the store
        has no base yet. The base cannot change once vectors are stored.
        """
        with self._mutex:
            snap = self._writable()
            if snap.codec is not None:
                raise InvalidArgument(f"{self._root}: store already has a base matrix")
            x = self._for_metric(as_matrix(sample, self.dim, "training sample"), "training sample")
            codec, base_rec = self._train(x)
            manifest = replace(snap.manifest, generation=snap.generation + 1, base=base_rec)
            try:
                with self._catalog.write() as txn:
                    _put_manifest(txn, manifest)
                    fault("train.commit")
            except BaseException:
                self._discard_uncommitted(manifest.generation, [base_rec.file])
                raise
            self._snap = _Snapshot(manifest, codec, ())

    def _train(self, x: np.ndarray) -> tuple[Codec, fmt.BaseRecord]:
        cfg = self._config
        rotation = Rotation.random(cfg.dim, cfg.seed) if cfg.rotation == "hadamard" else Rotation.identity(cfg.dim)
        if x.shape[0] > cfg.train_sample:
            pick = np.random.default_rng(cfg.seed).choice(x.shape[0], cfg.train_sample, replace=False)
            x = x[np.sort(pick)]
        probe = Codec(cfg, np.zeros((1, cfg.dim), dtype=np.float16), rotation)
        xr = probe.prepare(x)
        n_base = effective_n_base(cfg.n_base, xr.shape[0], cfg.min_rows_per_base)
        log.info("training %d base rows on %d vectors", n_base, xr.shape[0])
        base = train_base(xr, n_base, seed=cfg.seed).astype(np.float16)
        number = 1 + (self._snap.manifest.base is not None)
        rec = write_base(self._root, number, base, rotation)
        fault("base.written")  # base file in place, not yet in any manifest
        return Codec(cfg, base, rotation), rec

    def add(self, ids, vectors, payloads=None, *, checkpoint: tuple[str, dict] | None = None) -> None:
        """Add new vectors. Any id already stored (or repeated) raises DuplicateId and
        nothing is written. All rows become visible together when this returns.

        ``checkpoint=(name, record)`` stores the JSON ``record`` under ``name`` in the
        same transaction as the batch (read it back with :meth:`checkpoint`): a bulk
        loader that records its input offset this way resumes exactly where the last
        committed batch ended, with no row lost or duplicated.
        """
        self._write_batch(ids, vectors, payloads, upsert=False, checkpoint=checkpoint)

    def upsert(self, ids, vectors, payloads=None, *, checkpoint: tuple[str, dict] | None = None) -> None:
        """Add or replace: an existing id's vector and payload are replaced (a payload of
        None removes the old payload). Atomic like ``add``."""
        self._write_batch(ids, vectors, payloads, upsert=True, checkpoint=checkpoint)

    def checkpoint(self, name: str) -> dict | None:
        """The record last stored with ``checkpoint=(name, record)``, or None."""
        self._check_open()
        with self._catalog.read() as txn:
            raw = txn.get("jobs", _checkpoint_key(name))
        return None if raw is None else fmt.loads_json(raw, f"checkpoint {name!r}")

    def set_checkpoint(self, name: str, record: dict) -> None:
        """Store a checkpoint record without adding rows (e.g. a batch whose rows were all
        rejected still advances a loader's offset)."""
        with self._mutex:
            self._writable()
            job = _encode_checkpoint((name, record))
            with self._catalog.write() as txn:
                txn.put("jobs", *job)

    def _write_batch(self, ids, vectors, payloads, *, upsert: bool, checkpoint=None) -> None:
        with self._mutex:
            snap = self._writable()
            ids_arr, id_type = normalize_ids(ids)
            x = as_matrix(vectors, self.dim)
            if x.shape[0] != len(ids_arr):
                raise InvalidArgument(f"got {len(ids_arr)} ids but {x.shape[0]} vectors")
            x = self._for_metric(x, "vectors")
            blobs = encode_payloads(payloads, len(ids_arr))
            job = _encode_checkpoint(checkpoint)
            if snap.manifest.id_type not in (None, id_type):
                raise IdTypeMismatch(
                    f"this store uses {snap.manifest.id_type} ids; got {id_type} ids"
                )
            seg_ord, rows = self._locate(snap, ids_arr)
            existing = rows >= 0
            if existing.any() and not upsert:
                raise DuplicateId(
                    f"{int(existing.sum())} id(s) already stored (use upsert to replace): "
                    + ", ".join(repr(v) for v in ids_arr[existing][:5].tolist())
                )
            created: list[str] = []
            generation = snap.generation + 1
            try:
                codec, base_rec = snap.codec, snap.manifest.base
                if codec is None:
                    codec, base_rec = self._train(x)
                    created.append(base_rec.file)
                batch = codec.encode(x)
                order = order_rows(batch.groups, ids_arr)
                batch = batch.take(order)
                ids_sorted = ids_arr[order]
                seg_id = snap.manifest.next_segment_id
                rec = write_segment(self._root, seg_id, self._config, codec.n_base, batch)
                created.append(rec.file)
                fault("add.segment")  # segment file in place, catalog not yet committed
                records, tombs = _tombstone_records(snap, seg_ord[existing], rows[existing])
                manifest = fmt.Manifest(
                    generation, seg_id + 1, id_type, base_rec, tuple(records) + (rec,)
                )
                with self._catalog.write() as txn:
                    txn.put("ids", fmt.segment_key(seg_id), fmt.encode_column(ids_sorted))
                    _put_tombstones(txn, tombs)
                    for i, ext_id in enumerate(ids_arr.tolist()):
                        key = fmt.id_key(ext_id)
                        if blobs is not None and blobs[i] is not None:
                            txn.put("payloads", key, blobs[i])
                        elif upsert and existing[i]:
                            txn.delete("payloads", key)
                    if job is not None:
                        txn.put("jobs", *job)
                    _put_manifest(txn, manifest)
                    fault("add.commit")  # inside the open LMDB write transaction
            except BaseException:
                self._discard_uncommitted(generation, created)
                raise
            fault("add.committed")  # durable; the caller has not been told yet
            new_seg = load_segment(self._root, rec, self._config, codec, ids_sorted,
                                   np.zeros(0, np.int64), verify=False)
            segments = [s if s.record.id not in tombs else s.with_tombstones(tombs[s.record.id][1], tombs[s.record.id][0])
                        for s in snap.segments]
            self._snap = _Snapshot(manifest, codec, tuple(segments) + (new_seg,))
            try:
                self._maybe_merge()
            except Exception:  # the batch is committed; a failed merge only costs speed
                log.warning("background merge failed; the store stays valid unmerged", exc_info=True)

    def delete(self, ids, *, missing_ok: bool = False) -> int:
        """Delete ids (tombstones; space is reclaimed by merges and ``compact``).

        Unknown ids raise IdNotFound (nothing is deleted) unless ``missing_ok``.
        Returns the number of ids deleted.
        """
        with self._mutex:
            snap = self._writable()
            ids_arr, id_type = normalize_ids(ids, allow_duplicates=True)
            ids_arr = _unique_keep_order(ids_arr)
            if snap.manifest.id_type not in (None, id_type):
                if missing_ok:
                    return 0
                raise IdTypeMismatch(f"this store uses {snap.manifest.id_type} ids; got {id_type} ids")
            seg_ord, rows = self._locate(snap, ids_arr)
            found = rows >= 0
            if not found.all() and not missing_ok:
                raise IdNotFound(
                    f"{int((~found).sum())} id(s) not found: "
                    + ", ".join(repr(v) for v in ids_arr[~found][:5].tolist())
                )
            if not found.any():
                return 0
            records, tombs = _tombstone_records(snap, seg_ord[found], rows[found])
            emptied = {r.id for r in records if r.live == 0}
            keep = tuple(r for r in records if r.id not in emptied)
            manifest = replace(snap.manifest, generation=snap.generation + 1, segments=keep)
            with self._catalog.write() as txn:
                _put_tombstones(txn, {k: v for k, v in tombs.items() if k not in emptied})
                for seg_id in emptied:
                    txn.delete("ids", fmt.segment_key(seg_id))
                    txn.delete("tombstones", fmt.segment_key(seg_id))
                for ext_id in ids_arr[found].tolist():
                    txn.delete("payloads", fmt.id_key(ext_id))
                _put_manifest(txn, manifest)
                fault("delete.commit")
            fault("delete.committed")  # emptied segments' files not yet removed
            segments = []
            for s in snap.segments:
                if s.record.id in emptied:
                    _unlink_quietly(os.path.join(self._root, s.record.file))
                elif s.record.id in tombs:
                    segments.append(s.with_tombstones(tombs[s.record.id][1], tombs[s.record.id][0]))
                else:
                    segments.append(s)
            self._snap = _Snapshot(manifest, snap.codec, tuple(segments))
            return int(found.sum())

    def compact(self) -> dict:
        """Merge all segments into one, dropping deleted rows. Returns before/after counts."""
        with self._mutex:
            snap = self._writable()
            before = {"segments": len(snap.segments), "rows": sum(s.rows for s in snap.segments)}
            if len(snap.segments) > 1 or any(s.record.deleted for s in snap.segments):
                self._merge(list(snap.segments))
            after = self._snap
            return {
                "segments_before": before["segments"],
                "rows_before": before["rows"],
                "segments_after": len(after.segments),
                "rows_after": sum(s.rows for s in after.segments),
            }

    def _maybe_merge(self) -> None:
        """Size-tiered merging: keep at most ``segment_fanout`` segments by merging the
        smallest ``segment_fanout`` whenever there are more (amortised log-many rewrites)."""
        fanout = self._config.segment_fanout
        while len(self._snap.segments) > fanout:
            by_size = sorted(self._snap.segments, key=lambda s: (s.record.live, s.record.id))
            self._merge(by_size[:fanout])

    def _merge(self, victims: list[Segment]) -> None:
        snap = self._snap
        codec = snap.codec
        seg_id = snap.manifest.next_segment_id
        rec, ids = merge_segments(self._root, seg_id, self._config, codec.n_base, victims)
        fault("merge.segment")  # merged file in place, catalog still lists the victims
        gone = {s.record.id for s in victims}
        keep = [s for s in snap.segments if s.record.id not in gone]
        new_records = tuple(s.record for s in keep) + ((rec,) if rec.rows else ())
        manifest = replace(snap.manifest, generation=snap.generation + 1,
                           next_segment_id=seg_id + 1, segments=new_records)
        try:
            with self._catalog.write() as txn:
                if rec.rows:
                    txn.put("ids", fmt.segment_key(seg_id), fmt.encode_column(ids))
                for sid in gone:
                    txn.delete("ids", fmt.segment_key(sid))
                    txn.delete("tombstones", fmt.segment_key(sid))
                _put_manifest(txn, manifest)
                fault("merge.commit")
        except BaseException:
            self._discard_uncommitted(manifest.generation, [rec.file])
            raise
        fault("merge.committed")  # the merged-away files are still on disk
        for s in victims:
            _unlink_quietly(os.path.join(self._root, s.record.file))
            fault("merge.unlinked")
        new = []
        if rec.rows:
            new = [load_segment(self._root, rec, self._config, codec, ids, np.zeros(0, np.int64),
                                verify=False)]
        else:
            _unlink_quietly(os.path.join(self._root, rec.file))
        self._snap = _Snapshot(manifest, codec, tuple(keep) + tuple(new))

    def _remove_orphans(self) -> None:
        """Delete files no committed manifest references (left by a crash mid-write)."""
        snap = self._snap
        wanted = {s.file for s in snap.manifest.segments}
        if snap.manifest.base:
            wanted.add(snap.manifest.base.file)
        seg_dir = os.path.join(self._root, SEGMENT_DIR)
        candidates = [os.path.join(SEGMENT_DIR, n) for n in os.listdir(seg_dir)] if os.path.isdir(seg_dir) else []
        candidates += [n for n in os.listdir(self._root) if n.startswith("base-")]
        for rel in candidates:
            rel = rel.replace(os.sep, "/")
            if rel not in wanted and (rel.endswith((".zseg", ".zbase", TMP_SUFFIX))):
                log.warning("removing orphaned file %s", rel)
                _unlink_quietly(os.path.join(self._root, rel))
                fault("orphan.removed")

    # --- reads ------------------------------------------------------------------------------

    def get(self, ext_id) -> Record:
        """The dequantized vector (original space) and payload of one id."""
        arr, kind = normalize_ids([ext_id])
        with self._reading() as (snap, txn):
            seg_ord, rows = self._locate(snap, arr) if snap.manifest.id_type in (None, kind) else (None, [-1])
            if rows[0] < 0:
                raise IdNotFound(f"id {ext_id!r} not found")
            seg = snap.segments[int(seg_ord[0])]
            r = int(rows[0])
            vec = snap.codec.decode(seg.groups[r : r + 1], seg.codes[r : r + 1], seg.scales16[r : r + 1],
                                    seg.aux16[r : r + 1])[0]
            payload = self._payloads([arr[0]], txn)[0]
        return Record(arr[0].item() if kind == "int" else arr[0], vec, payload)

    def iter_records(self, batch_size: int = 4096, *, with_payload: bool = True):
        """Yield ``(ids, vectors, payloads)`` batches covering every live row once:
        ids as an array, dequantized float32 vectors (n, dim), payloads as a list (or
        None). Works on one snapshot, so concurrent writes do not affect the iteration."""
        batch_size = positive_int(batch_size, "batch_size")
        # the read transaction stays open while the caller iterates: one committed state
        with self._reading() as (snap, txn):
            for seg in snap.segments:
                live = np.arange(seg.rows) if seg.dead.size == 0 else np.flatnonzero(seg.dead == 0)
                for start in range(0, len(live), batch_size):
                    rows = live[start : start + batch_size]
                    vecs = snap.codec.decode(seg.groups[rows], seg.codes[rows], seg.scales16[rows],
                                             seg.aux16[rows])
                    ids = seg.ids[rows]
                    payloads = self._payloads(ids.tolist(), txn) if with_payload else None
                    yield ids, vecs, payloads

    def ids(self) -> np.ndarray:
        """All live ids (int64 array, or object array of str), in storage order."""
        snap = self._current()
        parts = [s.ids if s.dead.size == 0 else s.ids[s.dead == 0] for s in snap.segments]
        if not parts:
            return np.zeros(0, dtype=np.int64 if snap.manifest.id_type != "str" else object)
        return np.concatenate(parts)

    def _payloads(self, ids, txn) -> list[dict | None]:
        """Payloads of ``ids`` read in ``txn`` (the transaction of the caller's snapshot)."""
        out = []
        for ext_id in ids:
            raw = txn.get("payloads", fmt.id_key(ext_id))
            out.append(None if raw is None else fmt.decode_payload(raw, f"payload of {ext_id!r}"))
        return out

    def _search_options(self, k, shortlist, nprobe) -> SearchOptions:
        k = positive_int(k, "k", maximum=_MAX_K)
        shortlist = positive_int(shortlist, "shortlist", allow_none=True, maximum=_MAX_K)
        nprobe = positive_int(nprobe, "nprobe", allow_none=True)
        return SearchOptions(k=k, shortlist=shortlist, nprobe=nprobe)

    def _for_metric(self, x: np.ndarray, what: str) -> np.ndarray:
        """Validated rows made safe for the float32 kernels: cosine refuses zero rows and
        rescales extreme lengths exactly; ip and l2 refuse rows too long to score."""
        if self.metric == "cosine":
            check_nonzero(x, what)
            return rescale_for_cosine(x)
        check_magnitude(x, what)
        return x

    def _prepare(self, snap: _Snapshot, queries: np.ndarray):
        return prepare_queries(snap.codec, self._for_metric(queries, "query"))

    def search(self, query, k: int = 10, *, shortlist: int | None = None,
               nprobe: int | None = None, filter_ids=None, with_payload: bool = True) -> list[Hit]:
        """The ``k`` best stored vectors for one query, best first.

        ``shortlist``: candidates kept by the Hamming pass for exact rescoring (default
        ``max(200, 10 k)``; larger is slower and more accurate). ``nprobe``: scan only the
        rows of the ``nprobe`` base rows nearest the query (default: all). ``filter_ids``:
        only these ids are candidates (unknown ids are ignored).
        """
        opts = self._search_options(k, shortlist, nprobe)
        q = as_query(query, self.dim)
        with self._reading() as (snap, txn):
            if snap.codec is None or snap.manifest.count == 0:
                self._for_metric(q, "query")
                return []
            prep = self._prepare(snap, q)
            tags, scores = search_prepared(self._searchable(snap, filter_ids), snap.codec, prep,
                                           opts.k, opts.effective_shortlist, opts.nprobe)
            found = tags[0] >= 0
            return self._hits(snap, tags[0][found], scores[0][found], with_payload, txn)

    def _searchable(self, snap: _Snapshot, filter_ids) -> list[Segment]:
        if filter_ids is None:
            return list(snap.segments)
        ids, kind = normalize_ids(filter_ids, allow_duplicates=True)
        if snap.manifest.id_type not in (None, kind):
            raise IdTypeMismatch(f"this store uses {snap.manifest.id_type} ids; filter_ids are {kind}")
        return [seg.restricted(ids) for seg in snap.segments]

    def search_batch(self, queries, k: int = 10, *, shortlist: int | None = None,
                     nprobe: int | None = None, filter_ids=None) -> tuple[np.ndarray, np.ndarray]:
        """Search many queries at once; returns (ids, scores), each (nq, k).

        Rows with fewer than k results are padded with id -1 (int stores) or None (str
        stores) and score NaN. Options as for :meth:`search`.
        """
        opts = self._search_options(k, shortlist, nprobe)
        q = as_matrix(queries, self.dim, "queries")
        snap = self._current()
        nq = q.shape[0]
        str_ids = snap.manifest.id_type == "str"
        out_ids = np.full((nq, opts.k), None, dtype=object) if str_ids else np.full((nq, opts.k), -1, np.int64)
        out_scores = np.full((nq, opts.k), np.nan, dtype=np.float32)
        if snap.codec is None or snap.manifest.count == 0:
            self._for_metric(q, "queries")
            return out_ids, out_scores
        prep = self._prepare(snap, q)
        tags, scores = search_prepared(self._searchable(snap, filter_ids), snap.codec, prep,
                                       opts.k, opts.effective_shortlist, opts.nprobe)
        found = tags >= 0
        out_ids[found] = self._tags_to_ids(snap, tags[found])
        return out_ids, scores

    def rerank(self, query, ids, top_n: int = 10, *, with_payload: bool = True) -> list[Hit]:
        """Exact dequantized scores of the given stored ids for ``query``, best first.

        Unknown ids raise IdNotFound; repeated ids are scored once.
        """
        top_n = positive_int(top_n, "top_n", maximum=_MAX_K)
        q = as_query(query, self.dim)
        ids_arr, kind = normalize_ids(ids, allow_duplicates=True)
        ids_arr = _unique_keep_order(ids_arr)
        with self._reading() as (snap, txn):
            if snap.manifest.id_type not in (None, kind):
                raise IdTypeMismatch(f"this store uses {snap.manifest.id_type} ids; got {kind} ids")
            seg_ord, rows = self._locate(snap, ids_arr)
            if (rows < 0).any():
                raise IdNotFound(
                    f"{int((rows < 0).sum())} id(s) not found: "
                    + ", ".join(repr(v) for v in ids_arr[rows < 0][:5].tolist())
                )
            prep = self._prepare(snap, q)
            tags = (seg_ord << ROW_BITS) | rows
            values = exact_scores(list(snap.segments), prep, np.zeros(len(tags), np.int64), tags, self.metric)
            order = rank(values, tags, top_n)
            return self._hits(snap, tags[order], to_scores(values[order], prep.qsq[0], self.metric),
                              with_payload, txn)

    def _tags_to_ids(self, snap: _Snapshot, tags: np.ndarray) -> np.ndarray:
        """External ids of candidate tags (segment ordinal << ROW_BITS | row), as an array."""
        ordinals = tags >> ROW_BITS
        rows = tags & ROW_MASK
        out = np.empty(len(tags), dtype=object if snap.manifest.id_type == "str" else np.int64)
        for ordinal in np.unique(ordinals):
            sel = ordinals == ordinal
            out[sel] = snap.segments[int(ordinal)].ids[rows[sel]]
        return out

    def _hits(self, snap, tags, scores, with_payload: bool, txn) -> list[Hit]:
        ids = [v.item() if isinstance(v, np.generic) else v for v in self._tags_to_ids(snap, tags)]
        payloads = self._payloads(ids, txn) if with_payload else [None] * len(ids)
        return [Hit(i, float(s), p) for i, s, p in zip(ids, scores, payloads)]

    # --- introspection --------------------------------------------------------------------

    def stats(self) -> dict:
        """Counts and bytes. ``bytes_per_vector`` is vector data only (codes + scales + aux
        term); ``bytes_on_disk`` splits every byte of the directory by part."""
        snap = self._current()
        cfg = self._config
        rows = sum(s.record.rows for s in snap.segments)
        seg_bytes = sum(s.record.size for s in snap.segments)
        codes = rows * cfg.words * 8
        scales = rows * cfg.scale_blocks * 2
        aux = rows * 2
        base = snap.manifest.base.size if snap.manifest.base else 0
        catalog_file = os.path.getsize(self._catalog.path)
        parts = {
            "codes": codes,
            "scales": scales,
            "aux": aux,
            "segment_headers": seg_bytes - codes - scales - aux,
            "base": base,
            "ids": self._catalog.db_bytes("ids"),
            "payloads": self._catalog.db_bytes("payloads"),
            "tombstones": self._catalog.db_bytes("tombstones"),
            "catalog_file": catalog_file,
        }
        total = seg_bytes + base + catalog_file
        return {
            "count": snap.manifest.count,
            "dim": cfg.dim,
            "metric": cfg.metric,
            "id_type": snap.manifest.id_type,
            "n_base": snap.codec.n_base if snap.codec else 0,
            "segments": len(snap.segments),
            "stored_rows": rows,
            "deleted_rows": rows - snap.manifest.count,
            "bytes_per_vector": cfg.bytes_per_vector,
            "compression_ratio": cfg.dim * 4 / cfg.bytes_per_vector,
            "bytes_on_disk": {**parts, "total": total},
            "bytes_per_vector_all_in": total / snap.manifest.count if snap.manifest.count else None,
            "format_version": fmt.FORMAT_VERSION,
            "generation": snap.generation,
            "config": cfg.to_dict(),
        }

    def verify(self) -> list[str]:
        """Check every file's checksums and the catalog's consistency; see :func:`verify_store`."""
        self._check_open()
        return verify_store(self._root)


def verify_store(path) -> list[str]:
    """Check a store without trusting it: every file's framing and checksums, and the
    catalog's consistency (id columns, tombstones, counts, payloads). Returns the problems
    found, one line each; an empty list means healthy. Reports, never raises, for
    corruption; works on a store that cannot be opened."""
    path = os.fspath(path)
    try:
        catalog = Catalog(path, readonly=True)
    except (NotAStore, CorruptStore, ReadOnlyStore) as exc:
        return [str(exc)]
    problems: list[str] = []
    try:
        config = _read_config(catalog, path)
        with catalog.read() as txn:
            raw = txn.get("meta", b"manifest")
            manifest = fmt.Manifest.from_dict(fmt.loads_json(raw or b"", "manifest"))
            codec = None
            if manifest.base is not None:
                base, rotation = load_base(path, manifest.base, config)
                codec = Codec(config, base, rotation)
            elif manifest.segments:
                problems.append("manifest lists segments but no base matrix")
            seen: dict = {}
            for rec in manifest.segments:
                key = fmt.segment_key(rec.id)
                try:
                    ids = _decode_ids(txn.get("ids", key), rec, manifest.id_type, path)
                    dead = _decode_tombstones(txn.get("tombstones", key), rec, path)
                    if codec is not None:
                        load_segment(path, rec, config, codec, ids, dead, verify=True)
                except (CorruptStore, FormatVersionError) as exc:
                    problems.append(str(exc))
                    continue
                alive = np.ones(len(ids), bool)
                alive[dead] = False
                for v in ids[alive].tolist():
                    if v in seen:
                        problems.append(f"id {v!r} is live in segments {seen[v]} and {rec.id}")
                    seen[v] = rec.id
            want = {fmt.segment_key(r.id) for r in manifest.segments}
            id_keys = set(txn.keys("ids"))
            if id_keys != want:
                problems.append(f"id columns exist for {len(id_keys)} segments, manifest lists {len(want)}")
            if not set(txn.keys("tombstones")) <= want:
                problems.append("tombstones recorded for segments not in the manifest")
            live_keys = {fmt.id_key(v) for v in seen}
            stray = unreachable = 0
            for k, raw in txn.items("payloads"):
                # LMDB pages carry no checksum: a damaged branch page can leave a record
                # visible to iteration but not to lookup (get() would say "no payload")
                if txn.get("payloads", k) != raw:
                    unreachable += 1
                if k not in live_keys:
                    stray += 1
                    continue
                try:
                    fmt.decode_payload(raw, f"payload under key {k!r}")
                except CorruptStore as exc:
                    problems.append(str(exc))
            if unreachable:
                problems.append(f"catalog file is damaged: {unreachable} payload(s) cannot be looked up")
            if stray and not problems:
                problems.append(f"{stray} payload(s) belong to no live id")
            if not problems:
                if manifest.count != len(seen):
                    problems.append(f"manifest counts {manifest.count} live rows, segments hold {len(seen)}")
    except (CorruptStore, FormatVersionError, NotAStore) as exc:
        problems.append(str(exc))
    finally:
        catalog.close()
    return problems


# --- catalog helpers ------------------------------------------------------------------------


def _decode_ids(raw: bytes | None, rec: fmt.SegmentRecord, id_type: str | None, root: str) -> np.ndarray:
    """A segment's id column, checked against the manifest's id kind."""
    if raw is None:
        raise CorruptStore(f"{root}: catalog has no id column for segment {rec.id}")
    ids = fmt.decode_column(raw, f"id column of segment {rec.id}")
    kind = "str" if ids.dtype == object else "int"
    if kind != id_type or (kind == "int" and ids.dtype != np.int64):
        raise CorruptStore(f"{root}: id column of segment {rec.id} holds {kind} ids, the store has {id_type} ids")
    return ids


def _decode_tombstones(raw: bytes | None, rec: fmt.SegmentRecord, root: str) -> np.ndarray:
    """A segment's deleted rows: exactly ``rec.deleted`` distinct rows, sorted, in range
    (a repeated row would make the live count wrong, one out of range would crash)."""
    dead = np.zeros(0, dtype=np.int64)
    if raw is not None:
        col = fmt.decode_column(raw, f"tombstones of segment {rec.id}")
        if col.dtype != np.uint32:
            raise CorruptStore(f"{root}: tombstones of segment {rec.id} are not a row column")
        dead = col.astype(np.int64)
    if len(dead) != rec.deleted or (len(dead) and (dead[0] < 0 or dead[-1] >= rec.rows
                                                   or np.any(np.diff(dead) <= 0))):
        raise CorruptStore(
            f"{root}: segment {rec.id} tombstones ({len(dead)}) disagree with the "
            f"manifest ({rec.deleted} deleted of {rec.rows}), or are not distinct sorted rows"
        )
    return dead


def _txn_generation(txn) -> int:
    raw = txn.get("meta", _GEN_KEY)
    return struct.unpack("<Q", raw)[0] if raw and len(raw) == 8 else -1


def _put_manifest(txn, manifest: fmt.Manifest) -> None:
    txn.put("meta", b"manifest", fmt.dumps_json(manifest.to_dict()))
    txn.put("meta", _GEN_KEY, struct.pack("<Q", manifest.generation))


def _put_tombstones(txn, tombs: dict) -> None:
    for seg_id, (_rec, dead) in tombs.items():
        txn.put("tombstones", fmt.segment_key(seg_id), fmt.encode_column(dead.astype(np.uint32)))


def _tombstone_records(snap: _Snapshot, seg_ord: np.ndarray, rows: np.ndarray):
    """New segment records and {segment id: (record, all dead rows)} after deleting rows."""
    tombs = {}
    records = []
    for ordinal, seg in enumerate(snap.segments):
        new_rows = rows[seg_ord == ordinal]
        if len(new_rows) == 0:
            records.append(seg.record)
            continue
        old = np.flatnonzero(seg.dead) if seg.dead.size else np.zeros(0, np.int64)
        dead = np.union1d(old, new_rows).astype(np.int64)
        rec = replace(seg.record, deleted=len(dead))
        records.append(rec)
        tombs[seg.record.id] = (rec, dead)
    return records, tombs


def _checkpoint_key(name) -> bytes:
    if not isinstance(name, str) or not 0 < len(name.encode("utf-8")) <= 400:
        raise InvalidArgument("checkpoint name must be a str of 1..400 UTF-8 bytes")
    return name.encode("utf-8")


def _encode_checkpoint(checkpoint) -> tuple[bytes, bytes] | None:
    if checkpoint is None:
        return None
    try:
        name, record = checkpoint
        value = json.dumps(record, allow_nan=False, sort_keys=True).encode()
    except (TypeError, ValueError) as exc:
        raise InvalidArgument(f"checkpoint must be (name, JSON-serializable record): {exc}") from exc
    return _checkpoint_key(name), value


def _unique_keep_order(arr: np.ndarray) -> np.ndarray:
    _, first = np.unique(arr, return_index=True)
    return arr[np.sort(first)]


def _take_writer_lock(path: str) -> int:
    fd = os.open(os.path.join(path, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreLocked(f"{path}: another writer has this store open (open it readonly=True to read)") from None
    return fd


def _read_config(catalog: Catalog, path: str) -> fmt.StoreConfig:
    with catalog.read() as txn:
        raw_format = txn.get("meta", b"format")
        raw_config = txn.get("meta", b"config")
    if raw_format is None:
        raise NotAStore(f"{path}: catalog has no zenstore format record")
    info = fmt.loads_json(raw_format, "format record")
    if not isinstance(info, dict) or info.get("magic") != fmt.STORE_MAGIC:
        raise NotAStore(f"{path}: not a zenstore store (format record has no zenstore magic)")
    version = info.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise CorruptStore(f"{path}: invalid format version {version!r}")
    if version > fmt.FORMAT_VERSION:
        raise FormatVersionError(
            f"{path}: store has format version {version}; this zenstore ({__version__}) "
            f"reads up to version {fmt.FORMAT_VERSION}"
        )
    if raw_config is None:
        raise CorruptStore(f"{path}: catalog has no store config")
    return fmt.StoreConfig.from_dict(fmt.loads_json(raw_config, "store config"))

"""The single writer of a store: its lock, its leftovers, and every write transaction.

Every write follows one order (docs/reliability.md):

1. new immutable files (segment, merged segment, base matrix) are written under a
   temporary name, fsynced and renamed into place;
2. one LMDB transaction records everything else -- id column, tombstones, payloads,
   checkpoint, the new manifest and its generation -- and commits;
3. only then are files the new manifest no longer lists removed.

A crash before (2) leaves unreferenced files, which the next writer removes
(``remove_orphans``); after it, a complete write. When an exception escapes a write,
its new files are removed only if the catalog does not hold its generation: Ctrl-C or a
SIGTERM handler's SystemExit can arrive while the commit is in fsync and be raised just
after it returned. A handle whose snapshot fell behind the catalog that way rebuilds it
before its next write.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
from dataclasses import replace

import numpy as np

from . import format as fmt
from . import calibration, index_writes, records
from .basefile import BaseMatrix, write_base
from .catalog import CATALOG_FILE, WRITER_LOCK
from .codec import FP16_MAX, Codec
from .errors import (CorruptStore, DuplicateId, IdNotFound, IdTypeMismatch, InvalidArgument, InvalidVector,
                     NotAStore, ReadOnlyStore, StoreExists, StoreLocked, from_os_error)
from .faults import fault
from .files import TMP_SUFFIX, fsync_dir
from .merge import merge_segments, plan_merge
from .refine import to_rows
from .rotation import Rotation
from .search import search_snapshot
from .segment import SEGMENT_DIR, Segment, load_segment, order_rows, write_segment
from .snapshot import Snapshot, tombstone_updates
from .train import effective_n_base, train_base
from .filters import INDEX_KINDS
from .types import SearchOptions
from .validation import as_matrix, encode_payloads, for_metric, normalize_ids, unique_keep_order
from .view import StoreView

log = logging.getLogger("zenstore")



# --- creating a store ----------------------------------------------------------------------


def create_store(path: str, config: fmt.StoreConfig, created_by: str) -> None:
    """Build an empty store and move it into place; a crash leaves either no store or a
    complete empty one.

    A new ``path`` is built as ``PATH.creating-PID`` and renamed. An existing empty
    directory (a mount point cannot be renamed over) is built in ``PATH/.creating-PID``
    and its entries moved in, the catalog last: only a directory holding the catalog is a
    store.
    """
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise NotAStore(f"{parent}: parent directory does not exist")
    in_place = os.path.exists(path)
    if in_place:
        if not os.path.isdir(path):
            raise StoreExists(f"{path}: already exists and is not an empty directory")
        remove_dead_creations(os.path.join(path, ""))
        if _unused_entries(path) is None:
            raise StoreExists(f"{path}: already exists and is not an empty directory")
        tmp = os.path.join(path, f".creating-{os.getpid()}")
    else:
        remove_dead_creations(path)
        tmp = f"{path}.creating-{os.getpid()}"
    os.makedirs(os.path.join(tmp, SEGMENT_DIR))
    try:
        catalog = records.open_catalog(tmp, readonly=False, create=True)
        try:
            with catalog.write() as txn:
                records.put_format_and_config(txn, config, created_by)
                records.put_manifest(txn, fmt.Manifest())
        finally:
            catalog.close()
        unlink_quietly(os.path.join(tmp, CATALOG_FILE + "-lock"))  # LMDB makes a new one
        fsync_dir(tmp)
        fault("create.catalog")  # complete store under its temporary name
        if in_place:
            for leftover in _unused_entries(path) or ():
                os.rmdir(os.path.join(path, leftover))  # an empty segments/ of a dead create
            os.rename(os.path.join(tmp, SEGMENT_DIR), os.path.join(path, SEGMENT_DIR))
            os.rename(os.path.join(tmp, CATALOG_FILE), os.path.join(path, CATALOG_FILE))
            os.rmdir(tmp)
            fault("create.renamed")
            fsync_dir(path)
        else:
            os.rename(tmp, path)
            fault("create.renamed")
            fsync_dir(parent)
    except BaseException:
        for name in (CATALOG_FILE, CATALOG_FILE + "-lock"):
            unlink_quietly(os.path.join(tmp, name))
        for d in (os.path.join(tmp, SEGMENT_DIR), tmp):
            try:
                os.rmdir(d)
            except OSError:
                pass
        raise


def _unused_entries(path: str) -> list[str] | None:
    """Entries of an existing directory a store may be created in: nothing, or only the
    empty ``segments/`` an interrupted in-place create moved in. None: not usable."""
    entries = os.listdir(path)
    if not entries:
        return []
    if entries == [SEGMENT_DIR] and os.path.isdir(os.path.join(path, SEGMENT_DIR)) \
            and not os.path.islink(os.path.join(path, SEGMENT_DIR)) \
            and not os.listdir(os.path.join(path, SEGMENT_DIR)):
        return [SEGMENT_DIR]
    return None


def remove_dead_creations(path: str) -> None:
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
                unlink_quietly(os.path.join(tmp, f))
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


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def take_writer_lock(path: str) -> int:
    """Flock ``writer.lock`` exclusively: one writer per store, across processes. Readers
    that may not write the LMDB lock table hold it shared (``catalog.py``)."""
    lock = os.path.join(path, WRITER_LOCK)
    try:
        st = os.lstat(lock)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise from_os_error(exc, lock, "taking the writer lock") from exc
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise CorruptStore(f"{lock}: is not a regular file (the store's writer lock must be one)")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            why = "the file system is read-only" if exc.errno == errno.EROFS else "no write permission"
            raise ReadOnlyStore(f"{path}: cannot write the store ({why}); open it with readonly=True") from exc
        raise from_os_error(exc, lock, "taking the writer lock") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreLocked(f"{path}: another process holds this store's lock: a writer, or a reader "
                          f"that may not write {CATALOG_FILE}-lock (open it readonly=True to read)") from None
    return fd


# --- the writer ------------------------------------------------------------------------------


class Writer:
    """Write transactions of one open store; holds the write lock until closed."""

    def __init__(self, view: StoreView, lock_fd: int) -> None:
        self.view = view
        self.root = view.root
        self.config = view.config
        self.catalog = view.catalog
        self.lock_fd = lock_fd
        self.pending = calibration.PendingSample()  # small adds' rows, until they can calibrate

    def close(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None

    # --- the snapshot a write builds on ----------------------------------------------------

    def _base_snapshot(self) -> Snapshot:
        """The snapshot a write builds on (call with the mutex held).

        If the catalog moved without this handle -- a write interrupted after its commit
        (Ctrl-C caught in a notebook, a SIGTERM handler's SystemExit caught by a service)
        -- it is rebuilt from the catalog first: a manifest built on the stale one would
        silently drop the committed write. Files the interrupted write left are removed.
        """
        self.view.check_open()
        if self.view.generation() != self.view.snapshot.generation:
            log.warning("%s: the catalog moved since this handle's last write (an interrupted "
                        "call?); reloading it", self.root)
            self.view.install(self.view.load())
            self.remove_orphans()
        snap = self.view.snapshot
        if snap.manifest.payload_indexes and not self.catalog.open_optional(records.PINDEX):
            raise CorruptStore(f"{self.root}: the manifest lists payload indexes, the catalog has no index table")
        return snap

    def _discard_uncommitted(self, generation: int, files: list[str]) -> None:
        """Remove files written for ``generation`` if, and only if, it was not committed."""
        if files and not self.view.committed(generation):
            for rel in files:
                unlink_quietly(os.path.join(self.root, rel))

    def _metric_rows(self, x: np.ndarray, what: str) -> np.ndarray:
        return for_metric(x, self.config.metric, what)

    # --- training ----------------------------------------------------------------------------

    def train(self, sample=None, base: BaseMatrix | None = None) -> None:
        with self.view.mutex:
            snap = self._base_snapshot()
            if snap.codec is not None:
                raise InvalidArgument(f"{self.root}: store already has a base matrix")
            if (sample is None) == (base is None):
                raise InvalidArgument("train needs exactly one of a sample or a base matrix")
            if base is None:
                x = self._metric_rows(as_matrix(sample, self.config.dim, "training sample"), "training sample")
                codec, base_rec = self._train(snap, x)
            else:
                codec, base_rec = self._adopt(snap, base)
            manifest = replace(snap.manifest, generation=snap.generation + 1, base=base_rec)
            try:
                with self.catalog.write() as txn:
                    records.put_manifest(txn, manifest)
                    fault("train.commit")
            except BaseException:
                self._discard_uncommitted(manifest.generation, [base_rec.file])
                raise
            self.view.install(Snapshot(manifest, codec, ()))

    def _train(self, snap: Snapshot, x: np.ndarray) -> tuple[Codec, fmt.BaseRecord]:
        cfg = self.config
        width = cfg.coded_dim  # the rotation and the base live in the coded (padded) space
        rotation = Rotation.random(width, cfg.seed) if cfg.rotation == "hadamard" else Rotation.identity(width)
        if x.shape[0] > cfg.train_sample:
            pick = np.random.default_rng(cfg.seed).choice(x.shape[0], cfg.train_sample, replace=False)
            x = x[np.sort(pick)]
        probe = Codec(cfg, np.zeros((1, width), dtype=np.float16), rotation)
        xr = probe.prepare(x)
        n_base = effective_n_base(cfg.n_base, xr.shape[0], cfg.min_rows_per_base)
        log.info("training %d base rows on %d vectors", n_base, xr.shape[0])
        # k-means in all dimensions: the coordinate-subset variant (train_base(coarse=True))
        # measurably lowers recall at small nprobe (benchmarks/assign_quality.py)
        base32 = train_base(xr, n_base, seed=cfg.seed)
        if not np.all(np.abs(base32) <= FP16_MAX):
            raise InvalidVector(f"vector values too large: a base row exceeds the fp16 range ({FP16_MAX:g}) "
                                "the base matrix is stored in")
        return self._write_base(snap, base32.astype(np.float16), rotation)

    def _adopt(self, snap: Snapshot, base: BaseMatrix) -> tuple[Codec, fmt.BaseRecord]:
        """Use another store's base matrix (sharded stores share one estimator)."""
        if not isinstance(base, BaseMatrix):
            raise InvalidArgument(f"base must be a BaseMatrix (from store.base()), got {type(base).__name__}")
        base.validate(self.config.dim)
        return self._write_base(snap, base.matrix, base.rotation)

    def _write_base(self, snap: Snapshot, base16: np.ndarray, rotation: Rotation):
        number = 1 + (snap.manifest.base is not None)
        rec = write_base(self.root, number, base16, rotation)
        fault("base.written")  # base file in place, not yet in any manifest
        return Codec(self.config, base16, rotation), rec

    # --- adding and replacing rows -------------------------------------------------------------

    def write_batch(self, ids, vectors, payloads, *, upsert: bool, checkpoint=None) -> None:
        with self.view.mutex:
            snap = self._base_snapshot()
            ids_arr, id_type = normalize_ids(ids)
            x = as_matrix(vectors, self.config.dim)
            if x.shape[0] != len(ids_arr):
                raise InvalidArgument(f"got {len(ids_arr)} ids but {x.shape[0]} vectors")
            x = self._metric_rows(x, "vectors")
            blobs = encode_payloads(payloads, len(ids_arr))
            job = records.encode_checkpoint(checkpoint)
            if not snap.accepts(id_type):
                raise IdTypeMismatch(f"this store uses {snap.id_type} ids; got {id_type} ids")
            seg_ord, rows = snap.locate(ids_arr)
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
                    codec, base_rec = self._train(snap, x)
                    created.append(base_rec.file)
                tier = self.config.refine_tier
                refine_rows = None
                if tier is None:
                    batch = codec.encode(x)
                else:
                    batch, refined = codec.encode_with_refine(x, tier)
                order = order_rows(batch.groups, ids_arr)
                batch = batch.take(order)
                if tier is not None:  # the refine rows in the segment's row order
                    refine_rows = to_rows(tier, refined.take(order), self.config.coded_dim, self.config.metric)
                ids_sorted = ids_arr[order]
                seg_id = snap.manifest.next_segment_id
                rec = write_segment(self.root, seg_id, self.config, codec.n_base, batch, refine_rows, created)
                fault("add.segment")  # segment file in place, catalog not yet committed
                seg_records, tombs = tombstone_updates(snap, seg_ord[existing], rows[existing])
                manifest = fmt.Manifest(generation, seg_id + 1, id_type, base_rec, tuple(seg_records) + (rec,),
                                        snap.manifest.payload_indexes)
                specs = manifest.payload_indexes
                docs = index_writes.stored_docs(blobs, order) if specs else None
                with self.catalog.write() as txn:
                    indexes = index_writes.index_batch(txn, specs, seg_id, docs) if specs else {}
                    records.put_id_column(txn, seg_id, ids_sorted)
                    for sid, (_rec, dead) in tombs.items():
                        records.put_tombstones(txn, sid, dead)
                    for i, ext_id in enumerate(ids_arr.tolist()):
                        if blobs is not None and blobs[i] is not None:
                            records.put_payload(txn, ext_id, blobs[i])
                        elif upsert and existing[i]:
                            records.delete_payload(txn, ext_id)
                    if job is not None:
                        records.put_checkpoint(txn, job)
                    records.put_manifest(txn, manifest)
                    fault("add.commit")  # inside the open LMDB write transaction
            except BaseException:
                self._discard_uncommitted(generation, created)
                raise
            fault("add.committed")  # durable; the caller has not been told yet
            new_seg = load_segment(self.root, rec, self.config, codec, ids_sorted,
                                   np.zeros(0, np.int64), verify=False)
            new_seg.payload_indexes.update(indexes)
            self.view.install(Snapshot(manifest, codec, _with_tombstones(snap.segments, tombs) + (new_seg,)))
            try:
                self._maybe_merge()
            except Exception:  # the batch is committed; a failed merge only costs speed
                log.warning("background merge failed; the store stays valid unmerged", exc_info=True)
            sample = self.pending.offer(codec.calibration, self.view.current().count, ids_arr, x)
            if sample is not None:
                try:
                    self._calibrate(*sample)
                except Exception:  # the batch is committed; the old default stays
                    log.warning("calibrating the default search failed", exc_info=True)

    def calibrate(self, ids, vectors) -> calibration.Calibration:
        """``Store.calibrate``: validate stored ids and their original vectors, then learn."""
        with self.view.mutex:
            snap = self._base_snapshot()
            if snap.codec is None:
                raise InvalidArgument("calibrate needs a trained store with rows")
            ids_arr, kind = normalize_ids(ids)
            x = self._metric_rows(as_matrix(vectors, self.config.dim), "vectors")
            if x.shape[0] != len(ids_arr):
                raise InvalidArgument(f"got {len(ids_arr)} ids but {x.shape[0]} vectors")
            if len(ids_arr) < 2:
                raise InvalidArgument("calibrate needs at least 2 rows")
            if not snap.accepts(kind) or (snap.locate(ids_arr)[1] < 0).any():
                raise IdNotFound("calibrate needs ids that are stored (with their original vectors)")
            return self._calibrate(ids_arr, x)

    def _calibrate(self, ids_arr: np.ndarray, x: np.ndarray) -> calibration.Calibration:
        """Learn the default search setting from stored rows ``ids_arr`` and their validated
        vectors ``x`` (``calibration.py``) and record it."""
        with self.view.mutex:
            snap = self._base_snapshot()
            rng = np.random.default_rng([self.config.seed, snap.generation])
            n = len(ids_arr)
            corpus = np.sort(rng.choice(n, min(n, calibration.MAX_CORPUS), replace=False))
            qpos = rng.choice(len(corpus), min(len(corpus) - 1, calibration.QUERIES), replace=False)
            truth = calibration.exact_neighbours(x, corpus, qpos, self.config.metric)
            queries = np.ascontiguousarray(x[corpus[qpos]], dtype=np.float32)
            position = {v: i for i, v in enumerate(ids_arr[corpus].tolist())}
            allowed = None if len(corpus) == snap.count else ids_arr[corpus]

            def recall_of(nprobe, shortlist):
                opts = SearchOptions(k=calibration.K + 1, shortlist=shortlist, nprobe=nprobe)
                tags, _ = search_snapshot(snap, queries, opts, self.config.metric, allowed, exact_probe=True)
                found = np.full(tags.shape, -1, dtype=np.int64)
                hit = tags >= 0
                found[hit] = [position.get(v, -1) for v in snap.tags_to_ids(tags[hit]).tolist()]
                found[found == qpos[:, None]] = -1  # the query's own row
                return calibration.recall(found, truth)

            cal = calibration.choose(recall_of, snap.codec.n_base, snap.count, len(queries),
                                     calibration.shortlists_for(self.config.refine is not None))
            with self.catalog.write() as txn:
                records.put_calibration(txn, cal)
            snap.codec.calibration = cal
            log.info("calibrated: nprobe %s, shortlist %d (recall %.3f, full scan %.3f)",
                     cal.nprobe, cal.shortlist, cal.recall, cal.full_recall)
            return cal

    def set_checkpoint(self, name: str, record: dict) -> None:
        with self.view.mutex:
            self._base_snapshot()
            job = records.encode_checkpoint((name, record))
            with self.catalog.write() as txn:
                records.put_checkpoint(txn, job)

    # --- deleting rows --------------------------------------------------------------------------

    def delete(self, ids, *, missing_ok: bool = False) -> int:
        with self.view.mutex:
            snap = self._base_snapshot()
            ids_arr, id_type = normalize_ids(ids, allow_duplicates=True)
            ids_arr = unique_keep_order(ids_arr)
            if not snap.accepts(id_type):
                if missing_ok:
                    return 0
                raise IdTypeMismatch(f"this store uses {snap.id_type} ids; got {id_type} ids")
            seg_ord, rows = snap.locate(ids_arr)
            found = rows >= 0
            if not found.all() and not missing_ok:
                raise IdNotFound(
                    f"{int((~found).sum())} id(s) not found: "
                    + ", ".join(repr(v) for v in ids_arr[~found][:5].tolist())
                )
            if not found.any():
                return 0
            seg_records, tombs = tombstone_updates(snap, seg_ord[found], rows[found])
            emptied = {r.id for r in seg_records if r.live == 0}
            keep = tuple(r for r in seg_records if r.id not in emptied)
            manifest = replace(snap.manifest, generation=snap.generation + 1, segments=keep)
            with self.catalog.write() as txn:
                for sid, (_rec, dead) in tombs.items():
                    if sid not in emptied:
                        records.put_tombstones(txn, sid, dead)
                for sid in emptied:
                    records.delete_segment_columns(txn, sid)
                    index_writes.drop_segment(txn, manifest.payload_indexes, sid)
                for ext_id in ids_arr[found].tolist():
                    records.delete_payload(txn, ext_id)
                records.put_manifest(txn, manifest)
                fault("delete.commit")
            fault("delete.committed")  # emptied segments' files not yet removed
            for s in snap.segments:
                if s.record.id in emptied:
                    for rel in s.record.files:  # the segment, then its refine file
                        unlink_quietly(os.path.join(self.root, rel))
            kept = tuple(s for s in _with_tombstones(snap.segments, tombs) if s.record.id not in emptied)
            self.view.install(Snapshot(manifest, snap.codec, kept))
            self.pending.forget(ids_arr[found])
            return int(found.sum())

    # --- payload indexes ----------------------------------------------------------------------------

    def create_payload_index(self, field: str, kind: str) -> bool:
        """Index ``field`` (built from every live row's payload in one transaction); False
        if it already has an index of that kind."""
        problem = fmt.index_field_problem(field)
        if problem is not None:
            raise InvalidArgument(f"cannot index {field!r}: {problem}")
        if kind not in INDEX_KINDS:
            raise InvalidArgument(f"index kind must be one of {INDEX_KINDS}, got {kind!r}")
        with self.view.mutex:
            snap = self._base_snapshot()
            have = snap.manifest.indexed.get(field)
            if have == kind:
                return False
            if have is not None:
                raise InvalidArgument(f"{self.root}: field {field!r} already has a {have!r} index; "
                                      f"drop it first to index it as {kind!r}")
            specs = tuple(sorted(snap.manifest.payload_indexes + (fmt.PayloadIndexSpec(field, kind),),
                                 key=lambda p: p.field))
            manifest = replace(snap.manifest, generation=snap.generation + 1, payload_indexes=specs)
            with self.catalog.write() as txn:
                records.ensure_payload_index_db(txn)
                built = index_writes.build_index(txn, snap.segments, field, kind)
                records.put_manifest(txn, manifest)
                records.put_format_version(txn, fmt.store_format_version(self.config, manifest), self.root)
                fault("index.commit")
            for seg in snap.segments:
                seg.payload_indexes[(field, kind)] = built[seg.record.id]
            self.view.install(Snapshot(manifest, snap.codec, snap.segments))
            return True

    def drop_payload_index(self, field: str) -> None:
        """Remove the index of ``field`` (InvalidArgument if there is none)."""
        with self.view.mutex:
            snap = self._base_snapshot()
            kind = snap.manifest.indexed.get(field)
            if kind is None:
                raise InvalidArgument(f"{self.root}: no payload index on {field!r} "
                                      f"(indexed: {sorted(snap.manifest.indexed) or 'none'})")
            specs = tuple(p for p in snap.manifest.payload_indexes if p.field != field)
            manifest = replace(snap.manifest, generation=snap.generation + 1, payload_indexes=specs)
            with self.catalog.write() as txn:
                index_writes.drop_index(txn, snap.segments, field)
                records.put_manifest(txn, manifest)
                records.put_format_version(txn, fmt.store_format_version(self.config, manifest), self.root)
                fault("index.commit")
            for seg in snap.segments:
                seg.payload_indexes.pop((field, kind), None)
            self.view.install(Snapshot(manifest, snap.codec, snap.segments))

    # --- merging ----------------------------------------------------------------------------------

    def compact(self) -> dict:
        with self.view.mutex:
            snap = self._base_snapshot()
            before = (len(snap.segments), snap.stored_rows)
            if len(snap.segments) > 1 or any(s.record.deleted for s in snap.segments):
                self._merge(list(snap.segments))
            after = self.view.snapshot
            return {"segments_before": before[0], "rows_before": before[1],
                    "segments_after": len(after.segments), "rows_after": after.stored_rows}

    def _maybe_merge(self) -> None:
        """Merge as the size-tiered policy (``merge.plan_merge``) says, until it is content."""
        while True:
            segments = self.view.snapshot.segments
            pick = plan_merge([s.record.live for s in segments], self.config.segment_fanout)
            if pick is None:
                return
            self._merge([segments[p] for p in pick])

    def _merge(self, victims: list[Segment]) -> None:
        snap = self.view.snapshot
        codec = snap.codec
        seg_id = snap.manifest.next_segment_id
        created: list[str] = []
        rec, ids = merge_segments(self.root, seg_id, self.config, codec.n_base, victims, created)
        fault("merge.segment")  # merged file in place, catalog still lists the victims
        gone = {s.record.id for s in victims}
        keep = [s for s in snap.segments if s.record.id not in gone]
        new_records = tuple(s.record for s in keep) + ((rec,) if rec.rows else ())
        manifest = replace(snap.manifest, generation=snap.generation + 1,
                           next_segment_id=seg_id + 1, segments=new_records)
        try:
            with self.catalog.write() as txn:
                indexes = index_writes.index_merge(txn, manifest.payload_indexes, victims, seg_id, rec.rows,
                                                   codec.n_base, self.root)
                if rec.rows:
                    records.put_id_column(txn, seg_id, ids)
                for sid in gone:
                    records.delete_segment_columns(txn, sid)
                records.put_manifest(txn, manifest)
                fault("merge.commit")
        except BaseException:
            self._discard_uncommitted(manifest.generation, created)
            raise
        fault("merge.committed")  # the merged-away files are still on disk
        for s in victims:
            for rel in s.record.files:  # the segment, then its refine file
                unlink_quietly(os.path.join(self.root, rel))
                fault("merge.unlinked")
        new = []
        if rec.rows:
            new = [load_segment(self.root, rec, self.config, codec, ids, np.zeros(0, np.int64), verify=False)]
            new[0].payload_indexes.update(indexes)
        else:
            for rel in rec.files:
                unlink_quietly(os.path.join(self.root, rel))
        self.view.install(Snapshot(manifest, codec, tuple(keep) + tuple(new)))

    # --- leftovers --------------------------------------------------------------------------------

    def remove_orphans(self) -> None:
        """Delete files no committed manifest references (left by a crash mid-write)."""
        manifest = self.view.snapshot.manifest
        wanted = {f for s in manifest.segments for f in s.files}
        if manifest.base:
            wanted.add(manifest.base.file)
        seg_dir = os.path.join(self.root, SEGMENT_DIR)
        if os.path.islink(seg_dir):
            log.warning("%s: segments/ (or the store) is a symlink; leftovers are not removed through it", self.root)
            return
        candidates = [os.path.join(SEGMENT_DIR, n) for n in os.listdir(seg_dir)] if os.path.isdir(seg_dir) else []
        candidates += [n for n in os.listdir(self.root) if n.startswith("base-")]
        for rel in candidates:
            rel = rel.replace(os.sep, "/")
            if os.path.islink(os.path.join(self.root, rel)):
                continue
            if rel not in wanted and (rel.endswith((".zseg", ".zref", ".zbase", TMP_SUFFIX))):
                log.warning("removing orphaned file %s", rel)
                unlink_quietly(os.path.join(self.root, rel))
                fault("orphan.removed")


def _with_tombstones(segments, tombs: dict) -> tuple[Segment, ...]:
    """``segments`` with the new tombstone sets of ``tombs`` ({id: (record, dead rows)})."""
    return tuple(s if s.record.id not in tombs else s.with_tombstones(tombs[s.record.id][1], tombs[s.record.id][0])
                 for s in segments)

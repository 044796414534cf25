"""Building snapshots from the catalog and keeping an open store's snapshot current.

A :class:`StoreView` belongs to one open ``Store``: it holds the catalog handle and the
latest :class:`Snapshot`, rebuilds it when the catalog's generation moves (another
process committed, or a write of this handle was interrupted after its commit), and
gives reads a snapshot together with a read transaction of the same committed state.

A reader can find that a file its manifest lists has just been merged away by the
writer (files are removed after the commit that stops listing them). It then retries on
the newer manifest -- but only when the generation really moved; otherwise the file is
missing for good and the error says which file.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager

from . import records
from .basefile import load_base
from .catalog import Catalog
from .codec import Codec
from .errors import CorruptStore, FileMissing, StoreClosed
from .files import open_data_file
from .format import StoreConfig
from .segment import load_segment
from .snapshot import EMPTY, Snapshot

RETRIES = 8  # rebuilds on a newer manifest before a vanished file is reported


def build_snapshot(txn, prev: Snapshot, root: str, config: StoreConfig, verify: bool) -> Snapshot:
    """The snapshot of the committed state ``txn`` reads, reusing what ``prev`` loaded.

    Unchanged segments are shared, segments whose tombstones changed get the new ones,
    and only new segment files are mapped (and checksummed when ``verify``).
    """
    manifest = records.read_manifest(txn, root)
    n_columns = records.count_id_columns(txn)  # O(1); e.g. a manifest that lost a segment
    if n_columns != len(manifest.segments):
        raise CorruptStore(f"{root}: catalog holds id columns for {n_columns} "
                           f"segments, the manifest lists {len(manifest.segments)}")
    codec = prev.codec
    if manifest.base is None:
        codec = None
    elif prev.codec is None or prev.manifest.base != manifest.base:
        base, rotation = load_base(root, manifest.base, config)
        codec = Codec(config, base, rotation)
    if codec is not None:
        codec.calibration = records.read_calibration(txn)
    if manifest.segments and codec is None:
        raise CorruptStore(f"{root}: manifest lists segments but no base matrix")
    old = {s.record.id: s for s in prev.segments}
    new_files = [rec for rec in manifest.segments
                 if rec.id not in old or old[rec.id].record.rows != rec.rows]
    fds, refine_fds = {}, {}
    try:
        for rec in new_files:  # all opened before any is read: a merge may unlink the next
            fds[rec.id] = open_data_file(os.path.join(root, rec.file))
            if rec.refine is not None:
                refine_fds[rec.id] = open_data_file(os.path.join(root, rec.refine.file))
        segments = []
        for rec in manifest.segments:
            seg = old.get(rec.id)
            if seg is not None and seg.record == rec:
                segments.append(seg)
                continue
            dead = records.read_tombstones(txn, rec, root)
            if rec.id not in fds:
                segments.append(seg.with_tombstones(dead, rec))
                continue
            ids = records.read_id_column(txn, rec, manifest.id_type, root)
            segments.append(load_segment(root, rec, config, codec, ids, dead, verify=verify, fd=fds[rec.id],
                                         refine_fd=refine_fds.get(rec.id)))
    finally:
        for fd in (*fds.values(), *refine_fds.values()):
            os.close(fd)
    return Snapshot(manifest, codec, tuple(segments))


def retry_on_vanished_files(catalog: Catalog, attempt):
    """Run ``attempt(txn)`` in a read transaction; if a file it needs vanished because
    the writer moved on (the generation changed), run it again on the newer state."""
    error = None
    for _ in range(RETRIES):
        with catalog.read() as txn:
            gen = records.read_generation(txn)
            try:
                return attempt(txn)
            except FileMissing as exc:
                error = exc
        with catalog.read() as txn:
            if records.read_generation(txn) == gen:
                raise error
    raise error


class StoreView:
    """The catalog reads and the current snapshot of one open store.

    ``mutex`` serialises whoever replaces the snapshot; the writer holds it for a whole
    write. A readonly view waits for it; a writable one never waits for a write in
    progress (that write installs its own snapshot when it finishes).
    """

    def __init__(self, root: str, catalog: Catalog, config: StoreConfig, readonly: bool,
                 verify: bool) -> None:
        self.root = root
        self.catalog = catalog
        self.config = config
        self.readonly = readonly
        self.verify = verify
        self.mutex = threading.RLock()
        self.closed = False
        self.snapshot = EMPTY
        self.snapshot = self.load()

    def check_open(self) -> None:
        if self.closed:
            raise StoreClosed(f"{self.root}: store is closed")

    def generation(self) -> int:
        """The committed generation in the catalog now."""
        with self.catalog.read() as txn:
            return records.read_generation(txn)

    def load(self) -> Snapshot:
        """A fresh snapshot of the latest committed state."""
        prev = self.snapshot
        return retry_on_vanished_files(
            self.catalog, lambda txn: build_snapshot(txn, prev, self.root, self.config, self.verify))

    def install(self, snap: Snapshot) -> None:
        self.snapshot = snap

    def _offer(self, snap: Snapshot) -> None:
        """Keep ``snap`` as the current snapshot if it is newer and nobody is writing."""
        if self.mutex.acquire(blocking=self.readonly):
            try:
                if snap.generation > self.snapshot.generation:
                    self.snapshot = snap
            finally:
                self.mutex.release()

    def current(self) -> Snapshot:
        """The latest committed snapshot (picks up other processes' writes)."""
        self.check_open()
        if self.generation() != self.snapshot.generation:
            if self.mutex.acquire(blocking=self.readonly):
                try:
                    if self.generation() != self.snapshot.generation:
                        self.snapshot = self.load()
                finally:
                    self.mutex.release()
        return self.snapshot

    @contextmanager
    def reading(self):
        """``(snapshot, txn)``: the latest snapshot and an open read transaction of the
        same committed state, for reads that combine segments with catalog records.

        Payloads used to be read in a later transaction than the snapshot's: a hit whose
        id a concurrent writer had just deleted came back with payload None (an upserted
        one with its next payload), and iter_records() mixed states across batches.
        """
        self.check_open()
        error = None
        for _ in range(RETRIES):
            snap = self.snapshot
            with self.catalog.read() as txn:
                gen = records.read_generation(txn)
                if gen != snap.generation:
                    try:
                        snap = build_snapshot(txn, snap, self.root, self.config, self.verify)
                    except FileMissing as exc:
                        error = exc  # merged away since: retry on the newer state
                    else:
                        self._offer(snap)
                if error is None:
                    yield snap, txn
                    return
            if self.generation() == gen:
                raise error
            error = None
        raise CorruptStore(f"{self.root}: files kept vanishing while reading {RETRIES} newer states")

    def committed(self, generation: int) -> bool:
        """Whether the catalog holds ``generation``: asked when an exception escaped a
        commit. Ctrl-C (KeyboardInterrupt) or a SIGTERM handler's SystemExit arriving
        while the commit is in fsync is raised right after the commit returned. When the
        answer cannot be read, say yes: the caller then keeps its files (an orphan is
        removed by the next writer; a lost file is lost data)."""
        try:
            return self.generation() >= generation
        except BaseException:  # noqa: BLE001 - e.g. a second interrupt: keep the files
            return True

    def close(self) -> None:
        self.closed = True
        self.snapshot = self.snapshot.without_segments()

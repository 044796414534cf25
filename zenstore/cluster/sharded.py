"""A sharded store: one ordinary zenstore store per shard, one owner per shard, the
``Store`` API on top.

``ShardedStore`` validates every call in the driver with the same checks (and error
classes and messages) as :class:`zenstore.Store`, before any shard is asked, so a bad
batch writes nothing anywhere. Ids are routed by a stable hash (``routing.py``); a write
is split by owner and sent to all its shards in parallel; a read is scattered to every
shard (or only to the shards a ``filter_ids`` needs) and the per-shard top-k merged.

What is atomic: each shard's part of a batch (one store transaction). A batch spread
over several shards is not atomic as a whole: if a shard fails, the call raises
:class:`PartialWrite` naming the shards that committed and those that did not (or whose
outcome is unknown); retrying the same batch with ``upsert`` makes it whole.
docs/scaling.md has the design and the failure behaviour.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time

import numpy as np

from ..basefile import BaseMatrix
from ..calibration import most_demanding
from ..errors import (CorruptStore, DuplicateId, IdNotFound, IdTypeMismatch, InvalidArgument, NotAStore,
                      ReadOnlyStore, StoreClosed, StoreExists, StoreLocked, ZenstoreError)
from ..format import StoreConfig
from ..reader import search_options
from ..search import MAX_K
from ..store import Store
from ..types import Record
from ..validation import (as_matrix, as_query, encode_payloads, for_metric, normalize_ids, positive_int,
                          unique_keep_order)
from ..version import __version__
from .calls import Failure, ShardCalls
from .errors import PartialWrite, ShardError, ShardUnavailable, describe_failures
from .local import LocalShards
from .manifest import (CLUSTER_FORMAT_VERSION, LOCK_FILE, MAX_DIM, MAX_SHARDS, ClusterManifest, fsync_dir,
                       read_manifest, shard_dir, write_manifest)
from .results import BatchResult, Hits, merge_batches, merge_hits
from .routing import shard_of, split

BACKENDS = ("ray", "local")
RESTART_WAIT = 60.0  # seconds a call waits for a restarting shard actor
DEFAULT_TTL = 30.0  # seconds a handle keeps the shards' default search setting (its own writes: none)
# errors that mean "the caller's input", re-raised as they are when a shard raises them
_CALLER_ERRORS = (InvalidArgument, IdNotFound, ReadOnlyStore)


def _preview(values) -> str:
    return ", ".join(repr(v) for v in list(values)[:5])


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def _probe_arg(opts) -> int | str:
    """``nprobe`` as sent to a shard: "all" for a full scan, never None, which would let the
    shard apply its own calibration."""
    return "all" if opts.nprobe is None else opts.nprobe


class ShardedStore:
    """Create with :meth:`create`, open with :meth:`open`; then as a :class:`Store`."""

    def __init__(self, root: str, manifest: ClusterManifest, config: StoreConfig, writes: ShardCalls | None,
                 reads: ShardCalls, lock_fd: int | None, backend: str, ray_started: bool,
                 timeout: float | None, restart_wait: float) -> None:
        self._root = root
        self._manifest = manifest
        self._config = config
        self._writes = writes
        self._reads = reads
        self._lock_fd = lock_fd
        self._backend = backend
        self._ray_started = ray_started
        self._timeout = timeout
        self._restart_wait = restart_wait
        self._closed = False
        self._id_type: str | None = None
        self._digests: dict[int, str | None] = {}
        self._default: tuple[int | None, int] | None = None  # the shards' combined calibration
        self._default_at: float | None = None  # when it was read (None: read it at the next search)

    # --- lifecycle ------------------------------------------------------------------------

    @classmethod
    def create(cls, path, dim: int = 7680, *, shards: int, metric: str = "cosine", backend: str = "ray",
               ray_address: str | None = None, actor_options: dict | None = None, local_reads: bool = True,
               timeout: float | None = None, restart_wait: float = RESTART_WAIT, threads: int | None = None,
               **options) -> ShardedStore:
        """Create an empty sharded store of ``shards`` shards at ``path`` (which must not
        exist, or be an empty directory) and open it for writing.

        ``options`` are the store options of ``Store.create`` (``n_base``, ``seed``, ...),
        the same for every shard. The directory is built under a temporary name and
        renamed into place: a crash leaves no half-created sharded store.
        """
        path = os.path.abspath(os.fspath(path))
        if not isinstance(shards, int) or isinstance(shards, bool) or not 1 <= shards <= MAX_SHARDS:
            raise InvalidArgument(f"shards must be an int in 1..{MAX_SHARDS}, got {shards!r}")
        unknown = set(options) - set(StoreConfig.__dataclass_fields__) - {"dim", "metric"}
        if unknown:
            raise InvalidArgument(f"unknown store option(s): {sorted(unknown)}")
        StoreConfig(dim=dim, metric=metric, **options)  # every option checked before anything is made
        if dim > MAX_DIM:
            raise InvalidArgument(f"a sharded store's dim must be at most {MAX_DIM}, got {dim}")
        _check_backend(backend)
        if os.path.exists(path) and not (os.path.isdir(path) and not os.listdir(path)):
            raise StoreExists(f"{path}: already exists and is not an empty directory")
        if not os.path.isdir(os.path.dirname(path)):
            raise NotAStore(f"{os.path.dirname(path)}: parent directory does not exist")
        manifest = ClusterManifest(shards, dim, metric, f"zenstore {__version__}")
        tmp = f"{path}.creating-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)  # our own pid: a leftover of this process
        os.makedirs(tmp)
        try:
            for i in range(shards):
                Store.create(os.path.join(tmp, shard_dir(i)), dim=dim, metric=metric, **options).close()
            write_manifest(tmp, manifest)
            os.rename(tmp, path)
            fsync_dir(os.path.dirname(path))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls.open(path, backend=backend, ray_address=ray_address, actor_options=actor_options,
                        local_reads=local_reads, timeout=timeout, restart_wait=restart_wait, threads=threads)

    @classmethod
    def open(cls, path, readonly: bool = False, *, backend: str | None = None, ray_address: str | None = None,
             actor_options: dict | None = None, local_reads: bool = True, timeout: float | None = None,
             restart_wait: float = RESTART_WAIT, threads: int | None = None, verify: bool = True,
             reader_actors: int | None = None, compiled_reads: bool = False) -> ShardedStore:
        """Open a sharded store.

        ``backend``: ``"ray"`` (one Ray actor per shard owns it; the default for writable
        opens) or ``"local"`` (the shards are opened in this process; the default for
        ``readonly`` opens, which then need no Ray at all). ``local_reads`` (ray backend):
        (writable opens) reads run in this process on read-only handles of the shards
        beside the writer actors (no inter-process hop; needs the shard files reachable
        from here), else they are sent to the actors. A ``readonly`` open with the ray
        backend starts ``reader_actors`` reader actors (default: one per Ray node), each
        answering for its share of the shards in one call (``readers.py``). ``timeout``:
        seconds a read waits for a shard before calling it down. ``restart_wait``: seconds
        a call waits for a shard actor that Ray is restarting (the call is sent again when
        it is back; writes are resent as ``upsert``, which is idempotent). ``threads``:
        numba threads per shard (or reader) actor. ``compiled_reads`` (readonly ray opens):
        send reads to the reader actors through a Ray Compiled Graph (lower latency per
        call; each reader actor then polls ~0.5 core while idle: ``readers.py``).
        A second writer gets ``StoreLocked``.
        """
        root = os.path.abspath(os.fspath(path))
        manifest = read_manifest(root)
        backend = backend or ("local" if readonly else "ray")
        _check_backend(backend)
        paths = [os.path.join(root, d) for d in manifest.shard_dirs()]
        for i, p in enumerate(paths):
            if not os.path.isdir(p):
                raise CorruptStore(f"{root}: shard {i} ({shard_dir(i)}) is missing")
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise InvalidArgument(f"timeout must be a positive number of seconds, got {timeout!r}")
        if reader_actors is not None and (not isinstance(reader_actors, int) or isinstance(reader_actors, bool)
                                          or not 1 <= reader_actors <= manifest.shards):
            raise InvalidArgument(f"reader_actors must be an int in 1..{manifest.shards} (the shards), "
                                  f"got {reader_actors!r}")
        if not isinstance(compiled_reads, bool):
            raise InvalidArgument(f"compiled_reads must be True or False, got {compiled_reads!r}")
        if not (isinstance(restart_wait, (int, float)) and restart_wait >= 0):
            raise InvalidArgument(f"restart_wait must be a number of seconds >= 0, got {restart_wait!r}")
        lock_fd = None if readonly else _take_lock(root)
        writes = reads = None
        ray_started = False
        try:
            if backend == "local":
                reads = LocalShards(paths, readonly, verify=verify)
                writes = None if readonly else reads
            else:
                from .actor import ActorShards, ensure_ray

                ray_started = ensure_ray(ray_address)
                if readonly:
                    from .readers import ReaderGroups

                    actors = ReaderGroups(paths, groups=reader_actors, threads=threads, verify=verify,
                                          actor_options=actor_options, compiled=compiled_reads)
                else:
                    actors = ActorShards(paths, readonly, threads=threads, verify=verify, actor_options=actor_options)
                writes = None if readonly else actors
                reads = actors
                if local_reads and not readonly:
                    # the actors have opened (and cleaned) their shards before the driver reads them
                    infos, failures = actors.call_all("info", restart_wait=restart_wait)
                    if failures:
                        raise _open_failure(root, failures)
                    reads = LocalShards(paths, True, verify=verify)
            store = cls(root, manifest, None, writes, reads, lock_fd, backend, ray_started, timeout, restart_wait)
            store._load_state()
        except BaseException:
            for calls in {id(c): c for c in (writes, reads) if c is not None}.values():
                try:
                    calls.close()
                except Exception:  # noqa: BLE001 - the first error is the one to report
                    pass
            if lock_fd is not None:
                os.close(lock_fd)
            if ray_started:
                from .actor import release_ray

                release_ray(True)
            raise
        return store

    def _load_state(self) -> None:
        """Check the shards agree (config, base matrix, id kind); finish a base broadcast
        that a crash interrupted."""
        owner = self._writes or self._reads
        infos, failures = owner.call_all("info", restart_wait=self._restart_wait)
        if failures:
            raise _open_failure(self._root, failures)
        configs = {s: i["config"] for s, i in infos.items()}
        first = configs[0]
        if first["dim"] != self._manifest.dim or first["metric"] != self._manifest.metric:
            raise CorruptStore(f"{self._root}: shard 0 has dim {first['dim']} / {first['metric']}, the cluster "
                               f"manifest says {self._manifest.dim} / {self._manifest.metric}")
        differ = sorted(s for s, c in configs.items() if c != first)
        if differ:
            raise CorruptStore(f"{self._root}: shards {differ} have other store options than shard 0")
        self._config = StoreConfig.from_dict(first)
        self._digests = {s: i["base_digest"] for s, i in infos.items()}
        trained = {d for d in self._digests.values() if d is not None}
        if len(trained) > 1:
            raise CorruptStore(f"{self._root}: the shards have {len(trained)} different base matrices; "
                               "scores of different shards would not compare")
        kinds = {i["id_type"] for i in infos.values()} - {None}
        if len(kinds) > 1:
            raise CorruptStore(f"{self._root}: the shards hold both int and str ids")
        self._id_type = kinds.pop() if kinds else None
        if trained and None in self._digests.values() and self._writes is not None:
            self._broadcast_base()

    def close(self) -> None:
        """Close every shard (the actors release their write locks and end), and the
        cluster's write lock. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            for calls in {id(c): c for c in (self._writes, self._reads) if c is not None}.values():
                calls.close()
        finally:
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            if self._ray_started:
                from .actor import release_ray

                release_ray(True)

    def __enter__(self) -> ShardedStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self._backend} backend"
        return f"ShardedStore({self._root!r}, shards={self.shards}, dim={self.dim}, metric={self.metric!r}, {state})"

    # --- properties -------------------------------------------------------------------------

    @property
    def path(self) -> str:
        return self._root

    @property
    def shards(self) -> int:
        return self._manifest.shards

    @property
    def manifest(self) -> ClusterManifest:
        return self._manifest

    @property
    def config(self) -> StoreConfig:
        return self._config

    @property
    def dim(self) -> int:
        return self._manifest.dim

    @property
    def metric(self) -> str:
        return self._manifest.metric

    @property
    def readonly(self) -> bool:
        return self._writes is None

    @property
    def backend(self) -> str:
        return self._backend

    @property
    def actors(self) -> tuple:
        """The Ray actor handle of each shard (empty for the local backend): for
        operations and fault-injection tests."""
        return self._writes.handles if self._writes is not None else self._reads.handles

    def shard_of(self, ids) -> np.ndarray:
        """The shard number that owns each id."""
        arr, _ = normalize_ids(ids, allow_duplicates=True)
        return shard_of(arr, self.shards)

    # --- plumbing -------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(f"{self._root}: store is closed")

    def _writer(self) -> ShardCalls:
        self._check_open()
        if self._writes is None:
            raise ReadOnlyStore(f"{self._root}: store was opened read-only")
        self._default_at = None  # a write may recalibrate a shard
        return self._writes

    def _read(self, what: str, jobs: dict, *, partial: bool = False) -> tuple[dict, dict]:
        """Run a read ``{shard: (method, args)}``; a shard's own caller-error is re-raised,
        any other failure is ShardUnavailable naming the shards (or, with ``partial``,
        returned at once instead of waiting for restarting shards)."""
        results, failures = self._reads.run(jobs, timeout=self._timeout,
                                            restart_wait=0.0 if partial else self._restart_wait)
        for s in sorted(failures):
            if failures[s].raised_by_shard and isinstance(failures[s].error, _CALLER_ERRORS):
                raise failures[s].error
        if failures and not partial:
            raise ShardUnavailable(f"{self._root}: {what}: shard(s) {sorted(failures)} did not answer "
                                   f"({describe_failures(failures)})",
                                   failed={s: f.error for s, f in failures.items()}, answered=sorted(results))
        return results, failures

    def _read_all(self, what: str, method: str, *args) -> dict:
        results, _ = self._read(what, {s: (method, args) for s in range(self.shards)})
        return results

    def _parts(self, ids_arr: np.ndarray) -> dict[int, np.ndarray]:
        return split(shard_of(ids_arr, self.shards), self.shards)

    def _present(self, ids_arr: np.ndarray, parts: dict) -> np.ndarray:
        """Vectorized membership of normalised ids, in their order."""
        results, _ = self._read("contains", {s: ("contains", (ids_arr[pos],)) for s, pos in parts.items()})
        out = np.zeros(len(ids_arr), dtype=bool)
        for s, pos in parts.items():
            out[pos] = results[s]
        return out

    def _unpadded(self, x: np.ndarray) -> np.ndarray:
        """A validated matrix back at the store's dim: validation zero-pads a dim that is
        not a multiple of 64 to the coded width, and the shards take ``dim`` columns."""
        return x if x.shape[1] == self.dim else np.ascontiguousarray(x[:, :self.dim])

    def _check_kind(self, kind: str) -> None:
        if self._id_type is not None and kind != self._id_type:
            raise IdTypeMismatch(f"this store uses {self._id_type} ids; got {kind} ids")

    def _write_failure(self, op: str, n: int, parts: dict, results: dict, failures: dict) -> ZenstoreError:
        committed = sorted(results)
        unknown = sorted(s for s, f in failures.items() if not f.raised_by_shard)
        if not committed and not unknown:
            return failures[min(failures)].error  # every shard refused: nothing written anywhere
        rows = sum(len(parts[s]) for s in committed)
        text = (f"{self._root}: {op} of {n} rows: "
                + (f"shard(s) {committed} committed their {rows} rows; " if committed else "no shard acknowledged; ")
                + f"shard(s) {sorted(failures)} failed ({describe_failures(failures)})"
                + (f"; the outcome on shard(s) {unknown} is unknown (the actor died or did not answer)"
                   if unknown else "")
                + "; retry the same batch with upsert to make it whole")
        return PartialWrite(text, failed={s: f.error for s, f in failures.items()}, committed=committed,
                            unknown=unknown)

    # --- the base matrix --------------------------------------------------------------------

    def base(self) -> BaseMatrix | None:
        """The base matrix every shard shares (None before training)."""
        self._check_open()
        for s, d in sorted(self._digests.items()):
            if d is not None:
                results, _ = self._read("base", {s: ("base", ())})
                return results[s]
        return None

    @property
    def trained(self) -> bool:
        return all(d is not None for d in self._digests.values())

    def train(self, sample=None, *, base: BaseMatrix | None = None) -> None:
        """Learn the base matrix once, from ``sample`` (on shard 0), and give it to every
        shard; or adopt ``base`` (e.g. ``Store.base()`` of another store) on every shard.
        Optional: the first ``add`` trains on its batch, as ``Store.add`` does."""
        calls = self._writer()
        if any(d is not None for d in self._digests.values()):
            raise InvalidArgument(f"{self._root}: store already has a base matrix")
        if (sample is None) == (base is None):
            raise InvalidArgument("train needs exactly one of a sample or a base matrix")
        if base is None:
            x = as_matrix(sample, self.dim, "training sample")
            for_metric(x, self.metric, "training sample")
            x = self._unpadded(x)
            results, failures = calls.run({0: ("train", (x,))})
            if failures:
                self._refresh_digests()
                raise self._write_failure("train", len(x), {0: x}, results, failures)
            self._digests[0] = results[0]
        else:
            if not isinstance(base, BaseMatrix):
                raise InvalidArgument(f"base must be a BaseMatrix (from store.base()), got {type(base).__name__}")
            base.validate(self.dim)
            self._adopt(base)
            return
        self._broadcast_base()

    def _refresh_digests(self) -> None:
        """Ask every shard which base it has (after a training call failed midway)."""
        infos, _ = self._writer().call_all("info", restart_wait=self._restart_wait)
        self._digests.update({s: i["base_digest"] for s, i in infos.items()})

    def _broadcast_base(self) -> None:
        source = next(s for s, d in sorted(self._digests.items()) if d is not None)
        calls = self._writer()
        results, failures = calls.run({source: ("base", ())}, restart_wait=self._restart_wait)
        if failures:
            raise ShardUnavailable(f"{self._root}: shard {source} holds the base matrix and did not answer",
                                   failed={s: f.error for s, f in failures.items()})
        self._adopt(results[source])

    def _adopt(self, base: BaseMatrix) -> None:
        calls = self._writer()
        todo = [s for s, d in sorted(self._digests.items()) if d is None]
        ref = calls.shared(base)
        results, failures = calls.run({s: ("adopt", (ref,)) for s in todo}, restart_wait=self._restart_wait)
        self._digests.update(results)
        if failures:
            raise ShardError(f"{self._root}: the base matrix reached shard(s) {sorted(results)} but not "
                             f"{sorted(failures)} ({describe_failures(failures)}); opening the store again "
                             "finishes it", failed={s: f.error for s, f in failures.items()}, answered=sorted(results))
        if len(set(self._digests.values())) != 1:
            raise CorruptStore(f"{self._root}: shards report different base matrices after training")

    # --- writes ------------------------------------------------------------------------------

    def add(self, ids, vectors, payloads=None) -> None:
        """Add new vectors, routed to their shards. Any id already stored (or repeated)
        raises DuplicateId and nothing is written anywhere. Each shard's part commits
        atomically; see :class:`PartialWrite` for a shard failing mid-batch."""
        self._write_batch(ids, vectors, payloads, upsert=False)

    def upsert(self, ids, vectors, payloads=None) -> None:
        """Add or replace (a payload of None removes the old payload). Idempotent, so the
        way to finish a batch that raised PartialWrite."""
        self._write_batch(ids, vectors, payloads, upsert=True)

    def _write_batch(self, ids, vectors, payloads, *, upsert: bool) -> None:
        calls = self._writer()
        ids_arr, id_type = normalize_ids(ids)
        x = as_matrix(vectors, self.dim)
        if x.shape[0] != len(ids_arr):
            raise InvalidArgument(f"got {len(ids_arr)} ids but {x.shape[0]} vectors")
        for_metric(x, self.metric, "vectors")
        x = self._unpadded(x)  # checked here; each shard pads (and checks) its part again
        encode_payloads(payloads, len(ids_arr))
        self._check_kind(id_type)
        parts = self._parts(ids_arr)
        if not upsert:
            present = self._present(ids_arr, parts)
            if present.any():
                raise DuplicateId(f"{int(present.sum())} id(s) already stored (use upsert to replace): "
                                  + _preview(ids_arr[present].tolist()))
        if not self.trained:
            self._refresh_digests()
            if any(d is not None for d in self._digests.values()):
                self._broadcast_base()
            else:
                self.train(x)  # as Store.add: the first batch trains the base
        payload_list = None if payloads is None else list(payloads)
        jobs = {}
        for s, pos in parts.items():
            part_payloads = None if payload_list is None else [payload_list[i] for i in pos]
            jobs[s] = ("write", (ids_arr[pos], x[pos], part_payloads, upsert))
        # a part whose actor restarted mid-call is sent again as an upsert: the ids were not
        # stored before this batch (checked above, and this handle is the only writer), so
        # rewriting them is the same whether or not the first attempt committed
        retry = {s: ("write", args[:3] + (True,)) for s, (_, args) in jobs.items()}
        results, failures = calls.run(jobs, retry_jobs=retry, restart_wait=self._restart_wait)
        if results:
            self._id_type = id_type
        if failures:
            raise self._write_failure("upsert" if upsert else "add", len(ids_arr), parts, results, failures)

    def delete(self, ids, *, missing_ok: bool = False) -> int:
        """Delete ids from their shards; returns how many were deleted. Unknown ids raise
        IdNotFound (nothing is deleted anywhere) unless ``missing_ok``."""
        calls = self._writer()
        ids_arr, kind = normalize_ids(ids, allow_duplicates=True)
        ids_arr = unique_keep_order(ids_arr)
        if self._id_type is not None and kind != self._id_type:
            if missing_ok:
                return 0
            raise IdTypeMismatch(f"this store uses {self._id_type} ids; got {kind} ids")
        parts = self._parts(ids_arr)
        present = self._present(ids_arr, parts)
        if not present.all() and not missing_ok:
            raise IdNotFound(f"{int((~present).sum())} id(s) not found: " + _preview(ids_arr[~present].tolist()))
        parts = {s: pos[present[pos]] for s, pos in parts.items() if present[pos].any()}
        if not parts:
            return 0
        results, failures = calls.run({s: ("delete", (ids_arr[pos],)) for s, pos in parts.items()},
                                      restart_wait=self._restart_wait)  # missing_ok at the shard: idempotent
        if failures:
            raise self._write_failure("delete", int(present.sum()), parts, results, failures)
        return int(sum(results.values()))

    def compact(self) -> dict:
        """Compact every shard. Returns the summed counts and ``per_shard``."""
        calls = self._writer()
        results, failures = calls.call_all("compact", restart_wait=self._restart_wait)
        if failures:
            raise ShardError(f"{self._root}: compact failed on shard(s) {sorted(failures)} "
                             f"({describe_failures(failures)}); the others are compacted",
                             failed={s: f.error for s, f in failures.items()}, answered=sorted(results))
        per = [results[s] for s in range(self.shards)]
        out = {key: sum(r[key] for r in per) for key in per[0]}
        return {**out, "per_shard": per}

    def ingest(self, dataset, *, batch_size: int = 4096, id_column: str | None = "id",
               vector_column: str | None = None, payload_columns=None, on_error: str = "fail",
               report_path: str | None = None, name: str | None = None, train_sample: int | None = None,
               max_in_flight: int = 2, progress=None):
        """Bulk-load a ``ray.data.Dataset`` (``read_parquet``, ``read_numpy``,
        ``read_json``, ...), streamed in order in batches of ``batch_size`` rows, each
        shard's part committed with a checkpoint: rerunning the same call after the
        driver died resumes it. Returns a ``DatasetIngestSummary``; see
        ``zenstore.cluster.ingest`` for the options."""
        from .ingest import DatasetIngestOptions, ingest_dataset

        self._writer()
        options = DatasetIngestOptions(batch_size, id_column, vector_column,
                                       None if payload_columns is None else tuple(payload_columns), on_error,
                                       report_path, name, train_sample, max_in_flight)
        try:
            return ingest_dataset(self, dataset, options, progress)
        finally:
            self._default_at = None  # the shards calibrated during the load

    # --- reads -----------------------------------------------------------------------------

    def __len__(self) -> int:
        self._check_open()
        return int(sum(self._read_all("len", "length").values()))

    def __contains__(self, ext_id) -> bool:
        self._check_open()
        try:
            arr, kind = normalize_ids([ext_id])
        except InvalidArgument:
            return False
        if self._id_type is not None and kind != self._id_type:
            return False
        return bool(self._present(arr, self._parts(arr))[0])

    def contains(self, ids) -> np.ndarray:
        """Vectorized membership: a bool array, True where the id is stored (and live)."""
        self._check_open()
        arr, kind = normalize_ids(ids, allow_duplicates=True)
        if self._id_type is not None and kind != self._id_type:
            return np.zeros(len(arr), dtype=bool)
        return self._present(arr, self._parts(arr))

    def get(self, ext_id) -> Record:
        """The dequantized vector and payload of one id, from its shard."""
        self._check_open()
        arr, kind = normalize_ids([ext_id])
        if self._id_type is not None and kind != self._id_type:
            raise IdNotFound(f"id {ext_id!r} not found")
        s = int(shard_of(arr, self.shards)[0])
        results, _ = self._read("get", {s: ("get", (_plain(arr[0]),))})
        return results[s]

    def ids(self) -> np.ndarray:
        """All live ids: shard 0's (in its storage order), then shard 1's, ..."""
        self._check_open()
        results = self._read_all("ids", "ids")
        parts = [results[s] for s in range(self.shards)]
        if self._id_type == "str":
            return np.concatenate([p.astype(object) for p in parts])
        return np.concatenate(parts).astype(np.int64)

    def _targets(self, filter_ids) -> tuple[dict, object]:
        """``{shard: its filter ids (or None)}`` for a search: every shard, or only the
        shards that own one of ``filter_ids``."""
        if filter_ids is None:
            return {s: None for s in range(self.shards)}, None
        arr, kind = normalize_ids(filter_ids, allow_duplicates=True)
        if self._id_type is not None and kind != self._id_type:
            raise IdTypeMismatch(f"this store uses {self._id_type} ids; filter_ids are {kind}")
        return {s: arr[pos] for s, pos in self._parts(arr).items()}, arr

    def search(self, query, k: int = 10, *, shortlist: int | None = None, nprobe: int | None = None,
               filter_ids=None, with_payload: bool = True, partial: bool = False) -> Hits:
        """The ``k`` best vectors over all shards, best first (a ``list[Hit]`` with
        ``answered`` / ``failed``). Each shard runs the store's search with the same
        options; their hits are merged by score. A shard that is down raises
        ShardUnavailable naming it, unless ``partial``: then the hits of the shards
        that answered are returned and ``failed`` says which did not."""
        self._check_open()
        search_options(k, shortlist, nprobe)  # bad arguments fail before any shard is asked
        q = as_query(query, self.dim)
        for_metric(q, self.metric, "query")
        q = self._unpadded(q)
        targets, _ = self._targets(filter_ids)
        opts = self._options(k, shortlist, nprobe, filter_ids, partial)
        qref = self._reads.shared(q)
        jobs = {s: ("search", (qref, opts.k, opts.shortlist, _probe_arg(opts), f, with_payload))
                for s, f in targets.items()}
        results, failures = self._read("search", jobs, partial=partial)
        hits = merge_hits([results[s] for s in sorted(results)], opts.k, self.metric)
        return Hits(hits, answered=sorted(results), failed={s: str(f) for s, f in failures.items()})

    def search_batch(self, queries, k: int = 10, *, shortlist: int | None = None, nprobe: int | None = None,
                     filter_ids=None, partial: bool = False) -> BatchResult:
        """Search many queries; ``(ids, scores)`` each ``(nq, k)``, padded like
        ``Store.search_batch`` (id -1 or None, score NaN), with ``answered`` /
        ``failed`` as for :meth:`search`."""
        self._check_open()
        search_options(k, shortlist, nprobe)
        q = as_matrix(queries, self.dim, "queries")
        for_metric(q, self.metric, "query")
        q = self._unpadded(q)
        targets, _ = self._targets(filter_ids)
        opts = self._options(k, shortlist, nprobe, filter_ids, partial)
        qref = self._reads.shared(q)
        jobs = {s: ("search_batch", (qref, opts.k, opts.shortlist, _probe_arg(opts), f)) for s, f in targets.items()}
        results, failures = self._read("search_batch", jobs, partial=partial)
        ids, scores = merge_batches([results[s] for s in sorted(results)], opts.k, self.metric, len(q),
                                    self._id_type)
        return BatchResult(ids, scores, answered=sorted(results), failed={s: str(f) for s, f in failures.items()})

    def _options(self, k, shortlist, nprobe, filter_ids, partial: bool = False):
        """The search's options, one setting for every shard. Each shard calibrates on its
        own rows and so may learn another default than its neighbours; a search that gives
        neither ``nprobe`` nor ``shortlist`` therefore takes the most demanding of the
        shards' calibrations (``calibration.most_demanding``; a full scan if a shard has
        none), read from the shards at most every ``DEFAULT_TTL`` seconds and after this
        handle's writes (with ``partial``, from the shards that answer). The shards all probe the same base rows (they share the base),
        so the merged hits are those of one store searched with that setting, or better."""
        default = None
        if nprobe is None and shortlist is None and filter_ids is None:
            now = time.monotonic()
            if self._default_at is None or now - self._default_at > DEFAULT_TTL:
                # named "search": a shard that is down fails the search as it would have
                found, failures = self._read("search", {s: ("calibration", ()) for s in range(self.shards)},
                                             partial=partial)
                default = most_demanding([found[s] for s in sorted(found)]) if found else None
                if failures:  # partial: the shards that answer; read all of them again next time
                    return search_options(k, shortlist, nprobe, default=default)
                self._default, self._default_at = default, now
            default = self._default
        return search_options(k, shortlist, nprobe, default=default)

    def rerank(self, query, ids, top_n: int = 10, *, with_payload: bool = True) -> Hits:
        """Exact dequantized scores of the given stored ids (each from its shard), best
        first. Unknown ids raise IdNotFound; repeated ids are scored once."""
        self._check_open()
        top_n = positive_int(top_n, "top_n", maximum=MAX_K)
        q = as_query(query, self.dim)
        arr, kind = normalize_ids(ids, allow_duplicates=True)
        arr = unique_keep_order(arr)
        self._check_kind(kind)
        parts = self._parts(arr)
        present = self._present(arr, parts)
        if not present.all():
            raise IdNotFound(f"{int((~present).sum())} id(s) not found: " + _preview(arr[~present].tolist()))
        for_metric(q, self.metric, "query")
        qref = self._reads.shared(self._unpadded(q))
        results, _ = self._read("rerank", {s: ("rerank", (qref, arr[pos], top_n, with_payload))
                                           for s, pos in parts.items()})
        hits = merge_hits([results[s] for s in sorted(results)], top_n, self.metric)
        return Hits(hits, answered=sorted(results))

    # --- introspection ----------------------------------------------------------------------

    def stats(self) -> dict:
        """The shards' ``stats()`` summed (counts, bytes on disk), the shared ones (dim,
        metric, bytes per vector, ...), ``shards`` and ``per_shard`` (each shard's own)."""
        self._check_open()
        results = self._read_all("stats", "stats")
        per = [results[s] for s in range(self.shards)]
        first = per[0]
        summed = {k: sum(p[k] for p in per) for k in ("count", "segments", "stored_rows", "deleted_rows")}
        disk = {part: sum(p["bytes_on_disk"][part] for p in per) for part in first["bytes_on_disk"]}
        manifest_bytes = os.path.getsize(os.path.join(self._root, "cluster.json"))
        disk["cluster_manifest"] = manifest_bytes
        disk["total"] += manifest_bytes
        return {
            **summed,
            "dim": first["dim"],
            "metric": first["metric"],
            "id_type": self._id_type,
            "n_base": max(p["n_base"] for p in per),
            "bytes_per_vector": first["bytes_per_vector"],
            "compression_ratio": first["compression_ratio"],
            "bytes_on_disk": disk,
            "bytes_per_vector_all_in": disk["total"] / summed["count"] if summed["count"] else None,
            "format_version": first["format_version"],
            "cluster_format_version": CLUSTER_FORMAT_VERSION,
            "config": first["config"],
            "shards": self.shards,
            "per_shard": per,
        }

    def verify(self) -> list[str]:
        """Every shard's own checks (lines prefixed with the shard's directory), that every
        id sits in the shard its hash names, and that all shards share one base matrix."""
        self._check_open()
        problems = []
        try:
            read_manifest(self._root)
        except ZenstoreError as exc:
            problems.append(str(exc))
        results, failures = self._reads.run({s: ("verify", (s, self.shards)) for s in range(self.shards)},
                                            timeout=self._timeout, restart_wait=self._restart_wait)
        for s in range(self.shards):
            if s in failures:
                problems.append(f"{shard_dir(s)}: could not be checked ({failures[s]})")
            else:
                problems.extend(f"{shard_dir(s)}: {p}" for p in results[s])
        infos, failures = self._reads.call_all("info", timeout=self._timeout, restart_wait=self._restart_wait)
        digests = {i["base_digest"] for i in infos.values() if i["base_digest"] is not None}
        if len(digests) > 1:
            problems.append(f"the shards have {len(digests)} different base matrices")
        return problems


def _check_backend(backend) -> None:
    if backend not in BACKENDS:
        raise InvalidArgument(f"backend must be one of {BACKENDS}, got {backend!r}")


def _take_lock(root: str) -> int:
    fd = os.open(os.path.join(root, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreLocked(f"{root}: another writer has this sharded store open (open it readonly=True "
                          "to read)") from None
    return fd


def _open_failure(root: str, failures: dict[int, Failure]) -> ZenstoreError:
    """A shard that cannot be opened: its own error (naming the shard) when it raised one."""
    first = failures[min(failures)]
    if first.raised_by_shard and isinstance(first.error, ZenstoreError):
        return first.error  # e.g. CorruptStore: its message names the shard's directory
    return ShardUnavailable(f"{root}: shard(s) {sorted(failures)} could not be opened ({describe_failures(failures)})",
                            failed={s: f.error for s, f in failures.items()})

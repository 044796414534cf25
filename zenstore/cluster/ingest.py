"""Bulk ingest of a Ray Data dataset into a sharded store, resumable after the driver dies.

The driver streams the dataset **in order** (Ray Data's ``preserve_order``) in batches
of exactly ``batch_size`` rows: batch ``b`` is rows ``[b B, (b+1) B)`` of the dataset on
every run. Each batch is validated in the driver (the checks of ``zenstore ingest``),
split by owner, and each shard's part is added to its shard together with a per-shard
checkpoint ``{"batch": b, ...}`` in the same transaction (``Store.add(...,
checkpoint=...)``). A rerun -- after Ctrl-C, an exception, or the driver killed with
SIGKILL -- reads each shard's checkpoint and sends a shard only the batches after the
last one it committed: no row is lost or added twice.

Parts are chained per shard (each names the batch sent to that shard before it): a
shard never commits a batch past one that failed, so up to ``max_in_flight`` batches can
be in flight. A part whose actor died mid-call is sent again once Ray restarted it
(idempotent: a part already committed adds nothing).

Memory stays bounded: Ray Data streams blocks through its object store with
backpressure, the driver holds at most ``max_in_flight`` batches (plus, before the base
matrix exists, the first ``train_sample`` rows it trains on), a shard actor one part.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from ..errors import IngestError, InvalidArgument
from ..format import MAX_STR_ID_BYTES
from ..validation import row_problems
from .errors import describe_failures
from .routing import shard_of, split
from .worker import OUT_OF_ORDER

CHECKPOINT_PREFIX = "ray-ingest:"
TRAIN_ROWS_PER_BASE = 24  # as zenstore ingest: 24 rows per requested base row, at most train_sample
VECTOR_COLUMNS = ("vector", "data")  # "data": the column ray.data.read_numpy makes
_SHOW = 5


@dataclass(frozen=True)
class DatasetIngestOptions:
    """How :func:`ingest_dataset` reads and loads a dataset.

    ``id_column``: the id of each row (int or str); ``None``: ids are the row numbers in
    the dataset's order (as ``zenstore ingest`` does for ``.npy`` files).
    ``vector_column``: ``None`` picks ``"vector"``, else ``"data"`` (``read_numpy``).
    ``payload_columns``: columns stored as each row's JSON payload (``None``: all the
    others, ``()``: none). ``name``: what the checkpoints are kept under (default: from
    the dataset's input files; required when Ray cannot say what they are).
    """

    batch_size: int = 4096
    id_column: str | None = "id"
    vector_column: str | None = None
    payload_columns: tuple[str, ...] | None = None
    on_error: str = "fail"  # "fail": stop at the first bad row; "skip": skip bad rows and report them
    report_path: str | None = None
    name: str | None = None
    train_sample: int | None = None
    max_in_flight: int = 2

    def __post_init__(self) -> None:
        if self.on_error not in ("fail", "skip"):
            raise InvalidArgument(f"on_error must be 'fail' or 'skip', got {self.on_error!r}")
        for key in ("batch_size", "max_in_flight"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgument(f"{key} must be a positive int, got {value!r}")
        if self.train_sample is not None and (not isinstance(self.train_sample, int) or self.train_sample < 1):
            raise InvalidArgument(f"train_sample must be a positive int, got {self.train_sample!r}")


@dataclass(frozen=True)
class DatasetProgress:
    """Reported to the ``progress`` callback after every committed batch."""

    rows_done: int  # rows of the dataset consumed, earlier runs' included
    rows_added: int  # by this run
    rows_skipped: int  # by this run
    batches: int  # batches consumed, earlier runs' included
    elapsed: float


@dataclass(frozen=True)
class DatasetIngestSummary:
    name: str
    rows_added: int
    rows_skipped: int
    rows_resumed: int  # rows committed by earlier, interrupted runs of the same ingest
    batches: int
    seconds: float
    trained: bool
    report_path: str | None = None
    per_shard_added: tuple[int, ...] = field(default=())


# --- the dataset's identity ------------------------------------------------------------------


def default_name(dataset, options: DatasetIngestOptions) -> str:
    """A name that changes when the input files or the batching change."""
    files = sorted(dataset.input_files())
    if not files:
        raise InvalidArgument("this dataset does not tell its input files; pass name=... (the same on every "
                              "run) so that a rerun can resume it")
    parts = []
    for f in files:
        try:
            st = os.stat(f)
            parts.append([os.path.abspath(f), st.st_size, st.st_mtime_ns])
        except OSError:
            parts.append([f, None, None])
    return fingerprint(parts, options)


def fingerprint(inputs, options: DatasetIngestOptions) -> str:
    spec = {"inputs": inputs, "batch_size": options.batch_size, "id": options.id_column,
            "vector": options.vector_column, "payload": options.payload_columns}
    return hashlib.blake2b(json.dumps(spec, sort_keys=True, default=str).encode(), digest_size=12).hexdigest()


@contextmanager
def ordered(ray_data):
    """Ray Data's ``preserve_order`` on for the duration: batches are then the same rows
    on every run, which is what lets checkpoints name them by number."""
    ctx = ray_data.DataContext.get_current()
    before = ctx.execution_options.preserve_order
    ctx.execution_options.preserve_order = True
    try:
        yield
    finally:
        ctx.execution_options.preserve_order = before


# --- one batch, checked row by row -------------------------------------------------------


@dataclass
class Rows:
    """A batch turned into arrays, with the rows that cannot be added."""

    seq: int
    start: int  # dataset row number of the batch's first row
    n: int
    ids: np.ndarray  # int64 or object (str); rows in ``bad`` hold placeholders
    kinds: np.ndarray  # per row "int" / "str" / "" (bad id)
    vectors: np.ndarray  # (n, dim) float32; bad rows hold zeros
    payloads: list | None
    bad: dict  # row in batch -> reason

    def good(self) -> np.ndarray:
        mask = np.ones(self.n, dtype=bool)
        if self.bad:
            mask[list(self.bad)] = False
        return mask


def _pick_vector_column(names: list[str], wanted: str | None) -> str:
    if wanted is not None:
        if wanted not in names:
            raise IngestError(f"the dataset has no column {wanted!r} (columns: {names})")
        return wanted
    for name in VECTOR_COLUMNS:
        if name in names:
            return name
    raise IngestError(f"no vector column: name it with vector_column= (columns: {names})")


def _vectors(col, n: int, dim: int, bad: dict) -> np.ndarray:
    if isinstance(col, np.ndarray) and col.dtype != object:
        if col.ndim != 2 or col.dtype.kind not in "fiu":
            raise IngestError(f"vector column has dtype {col.dtype} and shape {col.shape}; expected (n, {dim}) numbers")
        if col.shape[1] != dim:
            for i in range(n):
                bad.setdefault(i, f"vector has {col.shape[1]} values, the store has dimension {dim}")
            return np.zeros((n, dim), dtype=np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            return np.ascontiguousarray(col, dtype=np.float32)
    out = np.zeros((n, dim), dtype=np.float32)
    for i, v in enumerate(col):
        if v is None:
            bad.setdefault(i, "vector is null")
            continue
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                row = np.asarray(v, dtype=np.float32)
        except (TypeError, ValueError):
            bad.setdefault(i, "vector is not a list of numbers")
            continue
        if row.ndim != 1 or row.shape[0] != dim:
            bad.setdefault(i, f"vector has {row.size} values, the store has dimension {dim}")
            continue
        out[i] = row
    return out


def _ids(col, n: int, start: int, bad: dict) -> tuple[np.ndarray, np.ndarray]:
    if col is None:
        return np.arange(start, start + n, dtype=np.int64), np.full(n, "int", dtype=object)
    if isinstance(col, np.ndarray) and col.dtype.kind in "iu":
        if col.dtype.kind == "u":
            for i in np.flatnonzero(col > np.iinfo(np.int64).max).tolist():
                bad.setdefault(i, "int id does not fit in int64")
        return col.astype(np.int64), np.full(n, "int", dtype=object)
    ids = np.empty(n, dtype=object)
    kinds = np.full(n, "", dtype=object)
    for i, v in enumerate(col):
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, bool) or v is None or not isinstance(v, (int, str)):
            bad.setdefault(i, "id is null" if v is None else f"id must be int or str, got {type(v).__name__}")
            ids[i] = None
        elif isinstance(v, int):
            if not -(2**63) <= v < 2**63:
                bad.setdefault(i, "int id does not fit in int64")
            ids[i], kinds[i] = v, "int"
        else:
            size = len(v.encode("utf-8", "replace"))
            if not 0 < size <= MAX_STR_ID_BYTES:
                bad.setdefault(i, f"str id must be 1..{MAX_STR_ID_BYTES} bytes of UTF-8")
            ids[i], kinds[i] = v, "str"
    return ids, kinds


def _payloads(batch: dict, columns: list[str], n: int, bad: dict) -> list | None:
    if not columns:
        return None
    out: list = []
    for i in range(n):
        p = {}
        for c in columns:
            v = batch[c][i]
            if isinstance(v, np.generic):
                v = v.item()
            elif isinstance(v, np.ndarray):
                v = v.tolist()
            if v is not None:
                p[c] = v
        try:
            json.dumps(p, allow_nan=False)
        except (TypeError, ValueError) as exc:
            bad.setdefault(i, f"payload is not JSON-serializable: {exc}")
            p = {}
        out.append(p or None)
    return out


def rows_of(batch: dict, seq: int, start: int, dim: int, metric: str, id_column: str | None,
            vector_column: str, payload_columns: list[str]) -> Rows:
    """Parse one Ray Data batch (numpy format) and check what depends on the row alone."""
    vec_col = batch[vector_column]
    n = len(vec_col)
    bad: dict = {}
    if id_column is not None and id_column not in batch:
        raise IngestError(f"the dataset has no column {id_column!r} (columns: {sorted(batch)}); "
                          "id_column=None numbers the rows instead")
    ids, kinds = _ids(None if id_column is None else batch[id_column], n, start, bad)
    x = _vectors(vec_col, n, dim, bad)
    for i, reason in row_problems(x, dim, metric):  # the checks (and words) of Store and its loader
        bad.setdefault(i, reason)
    payloads = _payloads(batch, payload_columns, n, bad)
    return Rows(seq, start, n, ids, kinds, x, payloads, bad)


# --- the loader --------------------------------------------------------------------------


@dataclass
class _InFlight:
    rows: Rows
    keep: np.ndarray  # positions (in the batch) of the rows sent
    parts: dict  # shard -> positions into keep
    jobs: dict
    pending: dict
    records: dict  # shard -> checkpoint record sent
    keep_ids: np.ndarray  # the ids sent (checked against later batches' ids while in flight)


class _Loader:
    def __init__(self, store, dataset, options: DatasetIngestOptions, progress) -> None:
        import ray.data

        self.ray_data = ray.data
        self.store = store
        self.dataset = dataset
        self.options = options
        self.progress = progress
        self.calls = store._writer()
        self.fp = options.name or default_name(dataset, options)
        self.name = CHECKPOINT_PREFIX + self.fp
        self.t0 = time.perf_counter()
        self.added = self.skipped = 0
        self.id_type = store._id_type
        self.report = None

    # state of the shards
    def load_checkpoints(self) -> None:
        states, failures = self.calls.call_all("checkpoint", self.name, restart_wait=self.store._restart_wait)
        if failures:
            raise IngestError(f"{self.store.path}: cannot read the ingest checkpoints of shard(s) "
                              f"{sorted(failures)} ({describe_failures(failures)})")
        self.states = {s: states[s] for s in range(self.store.shards)}
        for s, st in self.states.items():
            if st is not None and st.get("batch_size") != self.options.batch_size:
                raise IngestError(f"{self.store.path}: ingest {self.fp!r} was started with batch_size "
                                  f"{st.get('batch_size')}; resume it with the same batch size")
        self.committed = {s: (-1 if st is None else int(st["batch"])) for s, st in self.states.items()}
        self.last_sent = dict(self.committed)
        self.shard_added = {s: (0 if st is None else int(st.get("added", 0))) for s, st in self.states.items()}
        self.resumed = sum(self.shard_added.values())
        self.resumed_through = max(self.committed.values())

    def all_done(self) -> bool:
        return all(st is not None and st.get("done") for st in self.states.values())

    def columns(self, names: list[str]) -> tuple[str, list[str]]:
        """The vector column and the payload columns (from the first batch's columns: asking
        the dataset for its schema would run the pipeline once more)."""
        vec = _pick_vector_column(names, self.options.vector_column)
        if self.options.payload_columns is None:
            pay = [c for c in names if c not in (vec, self.options.id_column)]
        else:
            missing = [c for c in self.options.payload_columns if c not in names]
            if missing:
                raise IngestError(f"the dataset has no column(s) {missing} (columns: {names})")
            pay = list(self.options.payload_columns)
        return vec, pay

    def batches(self) -> Iterator[Rows]:
        b = self.options.batch_size
        vec = pay = None
        for seq, batch in enumerate(self.dataset.iter_batches(batch_size=b, batch_format="numpy",
                                                                 drop_last=False)):
            if vec is None:
                vec, pay = self.columns(list(batch))
            yield rows_of(batch, seq, seq * b, self.store.dim, self.store.metric, self.options.id_column, vec, pay)

    # training
    def train_from(self, stream: Iterator[Rows]) -> list[Rows]:
        cfg = self.store.config
        want = self.options.train_sample or min(cfg.train_sample, cfg.n_base * TRAIN_ROWS_PER_BASE)
        buffered, parts, got = [], [], 0
        for rows in stream:
            buffered.append(rows)
            good = rows.vectors[rows.good()]
            parts.append(good[: want - got])
            got += len(parts[-1])
            if got >= want:
                break
        if got == 0:
            raise IngestError("no valid rows to train the base matrix on")
        self.store.train(np.concatenate(parts))
        return buffered

    # one batch
    def check_against_store(self, rows: Rows, recent_ids: list[np.ndarray]) -> None:
        """Id kind, repeats within the batch and in batches still in flight, ids already
        stored (on shards that have not committed this batch)."""
        good = rows.good()
        want = self.id_type or next((k for k in rows.kinds[good] if k), None)
        for i in np.flatnonzero(good & (rows.kinds != want)).tolist():
            rows.bad[i] = f"id {rows.ids[i]!r} is {rows.kinds[i]}, the store uses {want} ids"
        good = rows.good()
        pos = np.flatnonzero(good)
        if len(pos) == 0:
            return
        ids = rows.ids[pos]
        first: dict = {}
        for p, v in zip(pos.tolist(), ids.tolist()):
            if v in first:
                rows.bad[p] = f"duplicate id {v!r} (first at row {rows.start + first[v]})"
            else:
                first[v] = p
        if recent_ids:
            seen = set(np.concatenate(recent_ids).tolist())
            for p, v in zip(pos.tolist(), ids.tolist()):
                if v in seen and p not in rows.bad:
                    rows.bad[p] = f"duplicate id {v!r} (in an earlier batch)"
        pos = np.flatnonzero(rows.good())
        if len(pos) == 0:
            return
        arr = _normal(rows.ids[pos], want)
        owner = shard_of(arr, self.store.shards)
        check = {s: p for s, p in split(owner, self.store.shards).items() if self.committed[s] < rows.seq}
        if check:
            present = self.store._present(arr, check)
            for p, v in zip(pos[present].tolist(), arr[present].tolist()):
                rows.bad[p] = f"id {v!r} is already stored"
        self.id_type = want

    def fail_or_skip(self, rows: Rows) -> None:
        if not rows.bad:
            return
        if self.options.on_error == "fail":
            i = min(rows.bad)
            more = f" ({len(rows.bad) - 1} more bad rows in this batch)" if len(rows.bad) > 1 else ""
            raise IngestError(f"row {rows.start + i}: {rows.bad[i]}{more}; nothing of batch {rows.seq} (rows "
                              f"{rows.start}..{rows.start + rows.n - 1}) was added, the batches before it are; "
                              "fix the input and rerun to resume")
        if self.options.report_path:
            if self.report is None:
                self.report = open(self.options.report_path, "a", encoding="utf-8")
            for i, reason in sorted(rows.bad.items()):
                self.report.write(json.dumps({"row": rows.start + i, "reason": reason}) + "\n")
            self.report.flush()

    def submit(self, rows: Rows) -> _InFlight:
        keep = np.flatnonzero(rows.good())
        arr = _normal(rows.ids[keep], self.id_type) if len(keep) else rows.ids[keep]
        parts = split(shard_of(arr, self.store.shards), self.store.shards) if len(keep) else {}
        parts = {s: p for s, p in parts.items() if self.committed[s] < rows.seq}
        jobs, records = {}, {}
        for s, p in parts.items():
            rec = {"batch_size": self.options.batch_size, "rows": rows.start + rows.n,
                   "added": self.shard_added[s] + len(p)}
            payloads = None if rows.payloads is None else [rows.payloads[keep[i]] for i in p]
            jobs[s] = ("ingest_batch", (self.name, rows.seq, self.last_sent[s], arr[p],
                                        rows.vectors[keep[p]], payloads, rec))
            records[s] = rec
            self.last_sent[s] = rows.seq
            self.shard_added[s] += len(p)
        pending = {s: self.calls.submit(s, m, *a) for s, (m, a) in jobs.items()}
        return _InFlight(rows, keep, parts, jobs, pending, records, arr)

    def settle(self, entry: _InFlight) -> None:
        wait = self.store._restart_wait
        results, failures = self.calls.settle(entry.pending, entry.jobs, restart_wait=wait)
        late = {s: entry.jobs[s] for s, r in results.items() if r == OUT_OF_ORDER}
        if late:  # its predecessor failed and was resent after it: resend it now, in order
            more, failures2 = self.calls.run(late, restart_wait=wait)
            results.update(more)
            failures.update(failures2)
            if any(r == OUT_OF_ORDER for r in more.values()):
                raise IngestError(f"{self.store.path}: ingest {self.fp!r}: batch {entry.rows.seq} still does not "
                                  "follow the last batch committed on its shard; rerun the ingest to resume")
        if failures:
            raise IngestError(f"{self.store.path}: ingest {self.fp!r}: batch {entry.rows.seq} (rows "
                              f"{entry.rows.start}..{entry.rows.start + entry.rows.n - 1}) failed on shard(s) "
                              f"{sorted(failures)} ({describe_failures(failures)}); committed batches are kept, "
                              "rerun the same ingest to resume") from failures[min(failures)].error
        for s in results:
            self.committed[s] = entry.rows.seq
            self.states[s] = {**entry.records[s], "batch": entry.rows.seq}
        self.added += sum(len(p) for p in entry.parts.values())
        if entry.rows.seq > self.resumed_through:  # batches re-read on a resume were counted by their run
            self.skipped += len(entry.rows.bad)
        if self.progress is not None:
            self.progress(DatasetProgress(entry.rows.start + entry.rows.n, self.added, self.skipped,
                                          entry.rows.seq + 1, time.perf_counter() - self.t0))

    def run(self) -> DatasetIngestSummary:
        self.load_checkpoints()
        trained = False
        batches = 0
        if not self.all_done():
            with ordered(self.ray_data):
                stream = self.batches()
                first: list[Rows] = []
                if not self.store.trained:
                    first = self.train_from(stream)
                    trained = True
                inflight: deque[_InFlight] = deque()
                try:
                    for rows in _chain(first, stream):
                        batches = rows.seq + 1
                        self.check_against_store(rows, [e.keep_ids for e in inflight])
                        self.fail_or_skip(rows)
                        inflight.append(self.submit(rows))
                        while len(inflight) >= self.options.max_in_flight:
                            self.settle(inflight.popleft())
                    while inflight:
                        self.settle(inflight.popleft())
                finally:
                    if self.report is not None:
                        self.report.close()
            self.mark_done()
        else:
            batches = max(int(st["batch"]) for st in self.states.values()) + 1
        return DatasetIngestSummary(self.fp, self.added, self.skipped, self.resumed, batches,
                                    time.perf_counter() - self.t0, trained, self.options.report_path,
                                    tuple(self.shard_added[s] for s in range(self.store.shards)))

    def mark_done(self) -> None:
        jobs = {}
        for s, st in self.states.items():
            base = st if st is not None else {"batch_size": self.options.batch_size, "batch": -1, "added": 0}
            jobs[s] = ("set_checkpoint", (self.name, {**base, "done": True}))
        _, failures = self.calls.run(jobs, restart_wait=self.store._restart_wait)
        if failures:
            raise IngestError(f"{self.store.path}: every row is loaded, but shard(s) {sorted(failures)} could not "
                              f"record it ({describe_failures(failures)}); a rerun finishes at once")


def _chain(first: list, rest: Iterator):
    yield from first
    yield from rest


def _normal(ids: np.ndarray, id_type: str | None) -> np.ndarray:
    """Ids of one kind as ``normalize_ids`` makes them: int64, or object array of str."""
    if id_type == "int" and ids.dtype == object:
        return ids.astype(np.int64)
    return ids


def ingest_dataset(store, dataset, options: DatasetIngestOptions | None = None,
                   progress: Callable[[DatasetProgress], None] | None = None) -> DatasetIngestSummary:
    """Load a ``ray.data.Dataset`` into the sharded ``store``; see the module docstring.

    Raises IngestError naming the dataset row on the first bad row when
    ``options.on_error == "fail"`` (nothing of its batch is added; earlier batches are,
    and a rerun resumes after them).
    """
    return _Loader(store, dataset, options or DatasetIngestOptions(), progress).run()





# --- files, for the command line ----------------------------------------------------------

FILE_FORMATS = {".npy": "npy", ".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl"}


def file_format(path: str) -> str:
    if os.path.isdir(path) and any(n.endswith(".parquet") for n in os.listdir(path)):
        return "parquet"
    for ext, fmt in FILE_FORMATS.items():
        if path.endswith(ext):
            return fmt
    raise IngestError(f"{path}: with Ray, zenstore ingest reads .npy, .parquet (files or directories) and "
                      f".jsonl inputs; this is none of them")


def dataset_for_files(paths: list[str], format: str | None = None):
    """A ``ray.data.Dataset`` over the input files (one format for all), and that format."""
    import ray.data

    for p in paths:
        if not os.path.exists(p):
            raise IngestError(f"{p}: no such input file")
    formats = {format} if format else {file_format(p) for p in paths}
    if len(formats) != 1:
        raise IngestError(f"inputs mix formats {sorted(formats)}; load them in separate runs")
    fmt = formats.pop()
    files = [os.path.abspath(p) for p in paths]
    if fmt == "npy":
        return ray.data.read_numpy(files), fmt
    if fmt == "parquet":
        return ray.data.read_parquet(files), fmt
    if fmt == "jsonl":
        return ray.data.read_json(files, lines=True), fmt
    raise IngestError(f"with Ray, inputs must be npy, parquet or jsonl, got {fmt!r}")


def files_fingerprint(paths: list[str], options: DatasetIngestOptions) -> str:
    """The checkpoint name of an ingest of these files: it changes when a file does."""
    parts = []
    for p in paths:
        st = os.stat(p)
        parts.append([os.path.abspath(p), st.st_size, st.st_mtime_ns])
    return fingerprint(parts, options)


def ingest_files(store, paths: list[str], options: DatasetIngestOptions | None = None,
                 progress: Callable[[DatasetProgress], None] | None = None, format: str | None = None):
    """``zenstore ingest --shards N --ray``: the files as a Ray dataset, ingested under a
    name derived from their paths, sizes and mtimes (so rerunning the same command
    resumes it). ``.npy`` rows are numbered across the files in order."""
    from dataclasses import replace

    options = options or DatasetIngestOptions()
    dataset, fmt = dataset_for_files(paths, format)
    if fmt == "npy":
        options = replace(options, id_column=None, vector_column="data")
    options = replace(options, name=options.name or files_fingerprint(paths, options))
    return ingest_dataset(store, dataset, options, progress)


__all__ = ["DatasetIngestOptions", "DatasetIngestSummary", "DatasetProgress", "ingest_dataset", "ingest_files",
           "dataset_for_files"]

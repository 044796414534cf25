"""Bulk loading: stream files of vectors into a store in bounded memory, resumably.

Readers turn an input file into batches of rows (``RowBatch``) without holding the file:
``.npy`` through a memory map, ``.fvecs`` through a memory map, JSON Lines (plain or
``.zst``) line by line, Parquet by record batches (pyarrow, optional), and a BEIR
collection directory (``corpus.jsonl`` + an embeddings directory with ``corpus.npy`` and
``corpus_ids.json``).

``ingest()`` validates each batch (vector length, NaN/inf, id kind, duplicates within the
batch and against the store), then adds it with a checkpoint recording the input offset
*in the same transaction* (``Store.add(..., checkpoint=...)``). Rerunning the same ingest
after a crash or Ctrl-C therefore continues after the last committed batch: no row is
lost or duplicated.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .errors import InvalidArgument, ZenstoreError
from .store import Store

FORMATS = ("npy", "fvecs", "jsonl", "parquet", "beir")
CHECKPOINT_PREFIX = "ingest:"


class IngestError(ZenstoreError):
    """A bad input row under ``on_error="fail"``, or an unreadable input file."""


@dataclass(frozen=True)
class IngestOptions:
    """How to read and load inputs (CLI flags map one to one)."""

    batch_size: int = 8192
    on_error: str = "fail"  # "fail": stop at the first bad row; "skip": skip and report it
    report_path: str | None = None  # where skipped rows are listed (JSON Lines)
    format: str | None = None  # None: from the file extension
    ids_path: str | None = None  # ids for .npy/.fvecs rows (.npy, .json list or text lines)
    id_field: str = "id"
    vector_field: str = "vector"
    embeddings: str | None = None  # BEIR: embeddings subdirectory name (default: the only one)
    train_sample: int | None = None  # rows sampled to train an untrained store (None: auto)
    restart: bool = False  # ignore checkpoints of an earlier run of the same inputs

    def __post_init__(self) -> None:
        if self.on_error not in ("fail", "skip"):
            raise InvalidArgument(f"on_error must be 'fail' or 'skip', got {self.on_error!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InvalidArgument(f"batch_size must be a positive int, got {self.batch_size!r}")
        if self.format is not None and self.format not in FORMATS:
            raise InvalidArgument(f"format must be one of {FORMATS}, got {self.format!r}")


@dataclass
class Progress:
    """Reported to the ``progress`` callback after every committed batch."""

    path: str
    rows_done: int  # rows of this input consumed (added + skipped), resumed ones included
    rows_total: int | None  # rows in this input, when the format tells
    rows_added: int  # rows added by this run, all inputs
    rows_skipped: int  # rows skipped by this run, all inputs
    elapsed: float


@dataclass
class IngestSummary:
    rows_added: int = 0
    rows_skipped: int = 0
    rows_resumed: int = 0  # rows already committed by an earlier, interrupted run
    files_done: int = 0
    seconds: float = 0.0
    trained: bool = False
    report_path: str | None = None
    per_file: list = field(default_factory=list)


@dataclass
class RowBatch:
    """Rows read from one input: parse-valid rows plus the rows that failed to parse."""

    start: int  # position (row or line index) of the first row of the batch
    stop: int  # position just after the batch (the checkpoint offset once committed)
    positions: list[int]  # position of each parsed row
    ids: list
    vectors: np.ndarray  # (n, d) float32; rows whose length differs from d are NaN
    lengths: np.ndarray  # (n,) the length each row had in the input
    payloads: list | None
    bad: list[tuple[int, str]]  # (position, reason) of unparsable rows
    resume: dict = field(default_factory=dict)  # reader state to store in the checkpoint


# --- readers ---------------------------------------------------------------------------


def detect_format(path: str, explicit: str | None) -> str:
    if explicit:
        return explicit
    if os.path.isdir(path):
        return "beir"
    name = path.lower()
    for suffix, fmt in ((".npy", "npy"), (".fvecs", "fvecs"), (".jsonl", "jsonl"),
                        (".jsonl.zst", "jsonl"), (".ndjson", "jsonl"), (".parquet", "parquet")):
        if name.endswith(suffix):
            return fmt
    raise IngestError(f"{path}: cannot tell the format from the name; pass --format {{{','.join(FORMATS)}}}")


class Reader:
    """One input file. ``batches(offset)`` yields RowBatches from position ``offset``."""

    def __init__(self, path: str, options: IngestOptions, id_base: int) -> None:
        self.path = path
        self.options = options
        self.id_base = id_base  # default ids: id_base + row position

    def describe(self, position: int) -> str:
        """Where a row is, for messages and the skip report."""
        return f"row {position}"

    def total(self) -> int | None:
        return None

    def batches(self, offset: int, resume: dict) -> Iterator[RowBatch]:
        raise NotImplementedError

    def sample(self, n: int) -> np.ndarray:
        """Up to ``n`` valid rows spread over the input, for training (float32)."""
        rows, got = [], 0
        for batch in self.batches(0, {}):
            v = batch.vectors[np.isfinite(batch.vectors).all(axis=1)] if batch.vectors.size else batch.vectors
            rows.append(v[: n - got])
            got += len(rows[-1])
            if got >= n:
                break
        return np.concatenate(rows) if rows else np.zeros((0, 0), np.float32)


def _load_ids(path: str, expected: int) -> np.ndarray:
    if path.endswith(".npy"):
        ids = np.load(path, mmap_mode="r", allow_pickle=False)
        if ids.ndim != 1:
            raise IngestError(f"{path}: ids must be a 1-d array")
        if ids.dtype.kind not in "iuU":
            raise IngestError(f"{path}: ids must be integers or strings, got {ids.dtype}")
    elif path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            ids = np.array(json.load(f), dtype=object)
    else:
        with open(path, encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f]
        ids = np.array([int(x) for x in lines] if all(_is_int(x) for x in lines) else lines, dtype=object)
    if len(ids) != expected:
        raise IngestError(f"{path}: {len(ids)} ids for {expected} vectors")
    return ids


def _is_int(text: str) -> bool:
    try:
        int(text)
        return True
    except ValueError:
        return False


class MatrixReader(Reader):
    """Rows of an (n, d) matrix stored row-major in a file: .npy and .fvecs.

    Rows are read with plain file reads, not a memory map: a map keeps every page it has
    touched resident (and counted in the process's RSS) until it is unmapped, so loading
    a 30 GB file through one would grow the loader to 30 GB.
    """

    def __init__(self, path, options, id_base):
        super().__init__(path, options, id_base)
        self.n, self.d, self.dtype, self.offset, self.row_bytes = self._layout()
        self.ids = _load_ids(options.ids_path, self.n) if options.ids_path else None

    def _layout(self) -> tuple[int, int, np.dtype, int, int]:
        """(rows, dim, value dtype, byte offset of row 0, bytes per row)."""
        raise NotImplementedError

    def _decode(self, raw: np.ndarray) -> np.ndarray:
        """(rows, row_bytes / itemsize) values read from the file -> (rows, d) values."""
        return raw

    def total(self) -> int:
        return self.n

    def _read(self, f, start: int, stop: int) -> np.ndarray:
        f.seek(self.offset + start * self.row_bytes)
        count = (stop - start) * self.row_bytes // self.dtype.itemsize
        raw = np.fromfile(f, dtype=self.dtype, count=count)
        if raw.size != count:
            raise IngestError(f"{self.path}: file ends before row {stop} (truncated?)")
        with np.errstate(over="ignore", invalid="ignore"):
            return np.asarray(self._decode(raw.reshape(stop - start, -1)), dtype=np.float32)

    def _ids(self, start, stop) -> list:
        if self.ids is None:
            return list(range(self.id_base + start, self.id_base + stop))
        return [v.item() if isinstance(v, np.generic) else v for v in self.ids[start:stop]]

    def batches(self, offset, resume):
        size = self.options.batch_size
        with open(self.path, "rb") as f:
            for start in range(offset, self.n, size):
                stop = min(self.n, start + size)
                vecs = self._read(f, start, stop)
                yield RowBatch(start, stop, list(range(start, stop)), self._ids(start, stop), vecs,
                               np.full(stop - start, self.d), None, [])

    def sample(self, n):
        """``n`` rows evenly spaced over the file (inputs are often sorted by topic)."""
        rows = np.unique(np.linspace(0, self.n - 1, num=min(n, self.n)).astype(np.int64)) if self.n else []
        out = np.empty((len(rows), self.d), dtype=np.float32)
        with open(self.path, "rb") as f:
            for i, r in enumerate(rows):
                out[i] = self._read(f, int(r), int(r) + 1)[0]
        return out[np.isfinite(out).all(axis=1)]


def _npy_layout(path: str):
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
        except (ValueError, OSError) as exc:
            raise IngestError(f"{path}: not a readable .npy file ({exc})") from exc
        offset = f.tell()
    if len(shape) != 2 or dtype.kind not in "fiu" or dtype.hasobject:
        raise IngestError(f"{path}: expected a 2-d numeric array, got {dtype} {shape}")
    if fortran:
        raise IngestError(f"{path}: Fortran-ordered arrays are not supported; save it C-ordered")
    n, d = shape
    if os.path.getsize(path) < offset + n * d * dtype.itemsize:
        raise IngestError(f"{path}: file is shorter than its header says (truncated?)")
    return n, d, dtype, offset, d * dtype.itemsize


class NpyReader(MatrixReader):
    def _layout(self):
        return _npy_layout(self.path)


class FvecsReader(MatrixReader):
    """The ANN-benchmark format: each row is an int32 dimension d, then d float32 values."""

    def _layout(self):
        size = os.path.getsize(self.path)
        head = np.fromfile(self.path, dtype="<i4", count=1)
        d = int(head[0]) if len(head) else 0
        if d <= 0 or size % (4 * (d + 1)):
            raise IngestError(f"{self.path}: not an .fvecs file (dimension {d}, {size} bytes)")
        return size // (4 * (d + 1)), d, np.dtype("<i4"), 0, 4 * (d + 1)

    def _decode(self, raw):
        bad = np.flatnonzero(raw[:, 0] != self.d)
        if bad.size:
            raise IngestError(f"{self.path}: a row declares dimension {int(raw[bad[0], 0])}, "
                              f"the first row {self.d}")
        return raw[:, 1:].view("<f4")


class JsonlReader(Reader):
    """One JSON object per line: ``id_field``, ``vector_field``; other fields: payload."""

    def describe(self, position: int) -> str:
        return f"line {position + 1}"

    def _open(self):
        if self.path.endswith(".zst"):
            import zstandard

            raw = open(self.path, "rb")
            return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(raw), encoding="utf-8")
        return open(self.path, encoding="utf-8")

    def batches(self, offset, resume):
        opts = self.options
        with self._open() as f:
            line_no = 0
            if offset and "byte" in resume and not self.path.endswith(".zst"):
                f.seek(resume["byte"])
                line_no = offset
            batch_start = line_no
            positions, ids, vecs, payloads, bad = [], [], [], [], []
            while True:
                line = f.readline()
                if line_no < offset:  # resuming a compressed file: skip committed lines
                    line_no += 1
                    if not line:
                        break
                    batch_start = line_no
                    continue
                if line:
                    self._parse(line, line_no, positions, ids, vecs, payloads, bad)
                    line_no += 1
                if (not line or line_no - batch_start >= opts.batch_size) and line_no > batch_start:
                    resume_state = {} if self.path.endswith(".zst") else {"byte": f.tell()}
                    yield RowBatch(batch_start, line_no, positions, ids, *_stack(vecs), payloads,
                                   bad, resume_state)
                    batch_start = line_no
                    positions, ids, vecs, payloads, bad = [], [], [], [], []
                if not line:
                    break

    def _parse(self, line, line_no, positions, ids, vecs, payloads, bad):
        if not line.strip():
            bad.append((line_no, "empty line"))
            return
        try:
            obj = json.loads(line)
        except ValueError as exc:
            bad.append((line_no, f"invalid JSON ({exc.msg})"))
            return
        if not isinstance(obj, dict):
            bad.append((line_no, "not a JSON object"))
            return
        if self.options.id_field not in obj:
            bad.append((line_no, f"no {self.options.id_field!r} field"))
            return
        if self.options.vector_field not in obj:
            bad.append((line_no, f"no {self.options.vector_field!r} field"))
            return
        ext_id = obj.pop(self.options.id_field)
        vec = obj.pop(self.options.vector_field)
        if not isinstance(ext_id, (int, str)) or isinstance(ext_id, bool):
            bad.append((line_no, f"id must be an int or a string, got {type(ext_id).__name__}"))
            return
        try:
            arr = np.asarray(vec, dtype=np.float32)
        except (ValueError, TypeError, OverflowError):
            bad.append((line_no, "vector is not a list of numbers"))
            return
        if arr.ndim != 1:
            bad.append((line_no, "vector is not a flat list of numbers"))
            return
        positions.append(line_no)
        ids.append(ext_id)
        vecs.append(arr)
        payloads.append(obj or None)


def _stack(vecs: list) -> tuple[np.ndarray, np.ndarray]:
    """Rows of possibly different lengths -> ((n, d) matrix, lengths), d the most common
    length; rows of another length are left NaN (validation reports their length)."""
    if not vecs:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    lengths = np.array([len(v) for v in vecs])
    d = int(np.bincount(lengths).argmax())
    out = np.full((len(vecs), d), np.nan, dtype=np.float32)
    for i, v in enumerate(vecs):
        if len(v) == d:
            out[i] = v
    return out, lengths


class ParquetReader(Reader):
    def __init__(self, path, options, id_base):
        super().__init__(path, options, id_base)
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise IngestError(
                "reading Parquet needs pyarrow: pip install 'zenstore[parquet]' (or pyarrow)"
            ) from exc
        try:
            self.file = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises its own error types
            raise IngestError(f"{path}: not a readable Parquet file ({exc})") from exc
        names = self.file.schema_arrow.names
        for col in (options.id_field, options.vector_field):
            if col not in names:
                raise IngestError(f"{path}: no column {col!r} (columns: {names})")

    def total(self):
        return self.file.metadata.num_rows

    def batches(self, offset, resume):
        pos = 0
        for rb in self.file.iter_batches(batch_size=self.options.batch_size):
            n = rb.num_rows
            if pos + n <= offset:
                pos += n
                continue
            cols = rb.to_pydict()
            skip = max(0, offset - pos)
            ids = cols.pop(self.options.id_field)[skip:]
            raw_vecs = cols.pop(self.options.vector_field)[skip:]
            others = {k: v[skip:] for k, v in cols.items()}
            positions, good_ids, vecs, payloads, bad = [], [], [], [], []
            for i, (ext_id, vec) in enumerate(zip(ids, raw_vecs)):
                row = pos + skip + i
                if vec is None:
                    bad.append((row, "vector is null"))
                    continue
                if ext_id is None:
                    bad.append((row, "id is null"))
                    continue
                positions.append(row)
                good_ids.append(ext_id)
                vecs.append(np.asarray([np.nan if v is None else v for v in vec], dtype=np.float32))
                payload = {k: v[i] for k, v in others.items() if v[i] is not None}
                payloads.append(payload or None)
            yield RowBatch(pos + skip, pos + n, positions, good_ids, *_stack(vecs), payloads, bad)
            pos += n


class BeirReader(MatrixReader):
    """A BEIR collection directory: ids from ``EMB/corpus_ids.json``, vectors from
    ``EMB/corpus.npy``, payload ``{"title", "text"}`` from ``corpus.jsonl``."""

    def _layout(self):
        subdirs = sorted(d for d in os.listdir(self.path)
                         if os.path.isfile(os.path.join(self.path, d, "corpus.npy")))
        name = self.options.embeddings
        if name is None:
            if len(subdirs) != 1:
                raise IngestError(f"{self.path}: choose an embeddings directory with --embeddings "
                                  f"(found {subdirs or 'none'})")
            name = subdirs[0]
        emb = os.path.join(self.path, name)
        if not os.path.isfile(os.path.join(emb, "corpus.npy")):
            raise IngestError(f"{emb}: no corpus.npy")
        with open(os.path.join(emb, "corpus_ids.json"), encoding="utf-8") as f:
            self.beir_ids = [str(x) for x in json.load(f)]
        self.texts = {}
        corpus = os.path.join(self.path, "corpus.jsonl")
        if os.path.isfile(corpus):
            with open(corpus, encoding="utf-8") as f:
                for line in f:
                    doc = json.loads(line)
                    self.texts[str(doc.get("_id"))] = {k: doc[k] for k in ("title", "text") if doc.get(k)}
        self.path_npy = os.path.join(emb, "corpus.npy")
        layout = _npy_layout(self.path_npy)
        if layout[0] != len(self.beir_ids):
            raise IngestError(f"{emb}: {layout[0]} vectors but {len(self.beir_ids)} ids")
        return layout

    def _ids(self, start, stop):
        return self.beir_ids[start:stop]

    def batches(self, offset, resume):
        path, self.path = self.path, self.path_npy
        try:
            for batch in super().batches(offset, resume):
                batch.payloads = [self.texts.get(i) for i in batch.ids]
                yield batch
        finally:
            self.path = path

    def sample(self, n):
        path, self.path = self.path, self.path_npy
        try:
            return super().sample(n)
        finally:
            self.path = path


READERS = {"npy": NpyReader, "fvecs": FvecsReader, "jsonl": JsonlReader,
           "parquet": ParquetReader, "beir": BeirReader}


def open_reader(path: str, options: IngestOptions, id_base: int = 0) -> Reader:
    if not os.path.exists(path):
        raise IngestError(f"{path}: no such file")
    return READERS[detect_format(path, options.format)](path, options, id_base)


# --- validation of a batch against the store ------------------------------------------------


def _reject_rows(store: Store, batch: RowBatch, id_type: str | None) -> list[tuple[int, str]]:
    """(index in batch, reason) of every row that cannot be added, in batch order."""
    n = len(batch.ids)
    reasons: dict[int, str] = {}
    if n:
        finite = np.isfinite(batch.vectors).all(axis=1)
        nonzero = np.any(batch.vectors != 0, axis=1)
    for i in range(n):
        if batch.lengths[i] != store.dim:
            reasons[i] = f"vector has {batch.lengths[i]} values, the store has dimension {store.dim}"
        elif not finite[i]:
            reasons[i] = "vector contains NaN or infinity (or a value beyond float32)"
        elif store.metric == "cosine" and not nonzero[i]:
            reasons[i] = "all-zero vector (no direction under cosine)"
    want = id_type or next(("str" if isinstance(x, str) else "int" for x in batch.ids), None)
    first_at: dict = {}
    for i, ext_id in enumerate(batch.ids):
        kind = "str" if isinstance(ext_id, str) else "int"
        if kind != want:
            reasons.setdefault(i, f"id {ext_id!r} is {kind}, the store uses {want} ids")
        elif kind == "str" and not 0 < len(ext_id.encode("utf-8", "replace")) <= 256:
            reasons.setdefault(i, "str id must be 1..256 bytes of UTF-8")
        elif kind == "int" and not -(2**63) <= ext_id < 2**63:
            reasons.setdefault(i, "int id does not fit in int64")
        elif ext_id in first_at:
            reasons.setdefault(i, f"duplicate id {ext_id!r} (first at "
                                  f"{batch.positions[first_at[ext_id]]})")
        else:
            first_at[ext_id] = i
    candidates = [i for i in range(n) if i not in reasons]
    if candidates:
        stored = store.contains([batch.ids[i] for i in candidates])
        for i, hit in zip(candidates, stored):
            if hit:
                reasons[i] = f"id {batch.ids[i]!r} is already stored"
    return sorted(reasons.items())


# --- the loader ----------------------------------------------------------------------------


def _checkpoint_name(path: str) -> str:
    return CHECKPOINT_PREFIX + os.path.abspath(path)


def _fingerprint(path: str) -> dict:
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def default_train_sample(store: Store) -> int:
    """Rows sampled to train an untrained store: enough for the configured base rows.

    ``n_base * min_rows_per_base`` (24,576 for the defaults): at 7680 dims that is a 0.75
    GB sample, which keeps training under the loader's ~2 GB memory budget.
    """
    cfg = store.config
    return min(cfg.train_sample, cfg.n_base * cfg.min_rows_per_base)


def ingest(store: Store, inputs: list[str], options: IngestOptions | None = None,
           progress: Callable[[Progress], None] | None = None) -> IngestSummary:
    """Load ``inputs`` into ``store`` in batches; see the module docstring.

    Raises IngestError naming the file and row/line on the first bad row when
    ``options.on_error == "fail"`` (the failing batch is not committed; earlier batches
    are, and a rerun resumes after them).
    """
    options = options or IngestOptions()
    t0 = time.perf_counter()
    summary = IngestSummary(report_path=options.report_path)
    readers = []
    id_base = 0
    for path in inputs:
        reader = open_reader(path, options, id_base)
        readers.append(reader)
        id_base += reader.total() or 0
    if store.stats()["n_base"] == 0:
        n = options.train_sample or default_train_sample(store)
        sample = readers[0].sample(n) if readers else None
        if sample is None or len(sample) == 0:
            raise IngestError("no valid rows to train the base matrix on")
        if sample.shape[1] != store.dim:
            raise IngestError(f"{readers[0].path}: vectors have {sample.shape[1]} values, "
                              f"the store has dimension {store.dim}")
        store.train(sample)
        del sample
        summary.trained = True
    report = open(options.report_path, "a", encoding="utf-8") if options.report_path else None
    try:
        for reader in readers:
            _ingest_one(store, reader, options, summary, report, progress, t0)
    finally:
        if report is not None:
            report.close()
    summary.seconds = time.perf_counter() - t0
    return summary


def _ingest_one(store, reader, options, summary, report, progress, t0) -> None:
    name = _checkpoint_name(reader.path)
    fp = _fingerprint(reader.path)
    state = None if options.restart else store.checkpoint(name)
    if state is not None and (state.get("size"), state.get("mtime_ns")) != (fp["size"], fp["mtime_ns"]):
        raise IngestError(f"{reader.path}: changed since an earlier ingest of it was "
                          f"interrupted; rerun with --restart to load it from the start")
    state = state or {"offset": 0, "added": 0, "skipped": 0, "resume": {}}
    resumed = state["added"] + state["skipped"]
    summary.rows_resumed += resumed
    file_stats = {"path": reader.path, "added": 0, "skipped": 0, "resumed": resumed}
    summary.per_file.append(file_stats)
    if state.get("done"):
        summary.files_done += 1
        return
    id_type = store.stats()["id_type"]
    for batch in reader.batches(state["offset"], state.get("resume", {})):
        rejected = _reject_rows(store, batch, id_type)
        problems = sorted(batch.bad + [(batch.positions[i], reason) for i, reason in rejected])
        if problems and options.on_error == "fail":
            pos, reason = problems[0]
            more = f" ({len(problems) - 1} more bad rows in this batch)" if len(problems) > 1 else ""
            raise IngestError(
                f"{reader.path}: {reader.describe(pos)}: {reason}{more}; nothing of this batch "
                f"was added ({state['added']} rows of this file before it were)"
            )
        keep = sorted(set(range(len(batch.ids))) - {i for i, _ in rejected})
        state = {"offset": batch.stop, "added": state["added"] + len(keep),
                 "skipped": state["skipped"] + len(problems), "resume": batch.resume, **fp}
        if keep:
            ids = [batch.ids[i] for i in keep]
            payloads = None if batch.payloads is None else [batch.payloads[i] for i in keep]
            store.add(ids, batch.vectors[keep], payloads, checkpoint=(name, state))
            id_type = id_type or ("str" if isinstance(ids[0], str) else "int")
        else:
            store.set_checkpoint(name, state)
        if report is not None and problems:
            # written after the commit: a crash right here can lose these report lines,
            # never rows (they are counted in the checkpoint's "skipped")
            for pos, reason in problems:
                report.write(json.dumps({"file": reader.path, "at": reader.describe(pos),
                                         "reason": reason}) + "\n")
            report.flush()
        file_stats["added"] += len(keep)
        file_stats["skipped"] += len(problems)
        summary.rows_added += len(keep)
        summary.rows_skipped += len(problems)
        if progress is not None:
            progress(Progress(reader.path, batch.stop, reader.total(), summary.rows_added,
                              summary.rows_skipped, time.perf_counter() - t0))
    store.set_checkpoint(name, {**state, "done": True})
    summary.files_done += 1


__all__ = ["IngestError", "IngestOptions", "IngestSummary", "Progress", "ingest", "open_reader",
           "detect_format", "FORMATS"]


"""Input readers for bulk loading: each turns one file into batches of rows.

``.npy`` and ``.fvecs`` rows are read with plain file reads (not a memory map, whose
touched pages would stay resident: loading 30 GB through one would grow the process to
30 GB); JSON Lines (plain or ``.zst``) line by line; Parquet by record batches (pyarrow,
optional); a BEIR collection directory (``corpus.jsonl`` + an embeddings directory with
``corpus.npy`` and ``corpus_ids.json``). A reader can start at any committed offset, which
is how an interrupted load resumes.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .errors import IngestError

FORMATS = ("npy", "fvecs", "jsonl", "parquet", "beir")


@dataclass(frozen=True)
class ReadOptions:
    """How inputs are read (the reading half of the ingest options)."""

    batch_size: int = 8192
    format: str | None = None  # None: from the file extension
    ids_path: str | None = None  # ids for .npy/.fvecs rows (.npy, .json list or text lines)
    id_field: str = "id"
    vector_field: str = "vector"
    embeddings: str | None = None  # BEIR: embeddings subdirectory name (default: the only one)


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

    def __init__(self, path: str, options: ReadOptions, id_base: int) -> None:
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


def open_reader(path: str, options: ReadOptions, id_base: int = 0) -> Reader:
    if not os.path.exists(path):
        raise IngestError(f"{path}: no such file")
    return READERS[detect_format(path, options.format)](path, options, id_base)



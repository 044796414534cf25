"""Input readers for bulk loading: each turns one file into batches of rows.

``.npy`` and ``.fvecs`` rows are read with plain file reads (not a memory map, whose
touched pages would stay resident: loading 30 GB through one would grow the process to
30 GB); JSON Lines (plain or ``.zst``) line by line; Parquet by record batches (pyarrow,
optional); a BEIR collection directory (``corpus.jsonl`` + an embeddings directory with
``corpus.npy`` and ``corpus_ids.json``). A reader can start at any committed offset, which
is how an interrupted load resumes.

Readers only parse: a row that cannot be parsed goes to ``RowBatch.bad``; whether a parsed
row can be stored is decided by ``validation.py`` (the loader asks it), and a file that
cannot be read at all raises IngestError naming the file (and the line or row).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from .errors import IngestError
from .validation import row_problems

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
    dim: int | None = None  # the store's dimension: rows of any length are laid out at it


@dataclass
class RowBatch:
    """Rows read from one input: parse-valid rows plus the rows that failed to parse."""

    start: int  # position (row or line index) of the first row of the batch
    stop: int  # position just after the batch (the checkpoint offset once committed)
    positions: list[int]  # position of each parsed row
    ids: list
    vectors: np.ndarray  # (n, d) float32, d = ReadOptions.dim if set; rows of another length are NaN
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

    width: int | None = None  # every row's length, for formats that fix it per file
    first_bad: str | None = None  # the first unparsable row sample() met (for messages)

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

    def first_width(self) -> int | None:
        """The vector length of the file, or the most common one in its first batch (None:
        no parsable row): what a new store's dimension is inferred from."""
        if self.width is not None:
            return self.width
        for batch in self.batches(0, {}):
            if len(batch.lengths):
                return int(np.bincount(batch.lengths).argmax())
        return None

    def sample(self, n: int, metric: str) -> np.ndarray:
        """Up to ``n`` rows (float32) spread over the input that a store of ``options.dim``
        and ``metric`` accepts, for training: a row the load will refuse never trains."""
        dim = self.options.dim
        rows, got = [np.zeros((0, dim), np.float32)], 0
        for batch in self.batches(0, {}):
            if batch.bad and self.first_bad is None:
                self.first_bad = self.describe(batch.bad[0][0]) + ": " + batch.bad[0][1]
            refused = {i for i, _ in row_problems(batch.vectors, dim, metric, batch.lengths)}
            good = [i for i in range(len(batch.lengths)) if i not in refused][: n - got]
            rows.append(batch.vectors[good])
            got += len(good)
            if got >= n:
                break
        return np.concatenate(rows)


def _load_ids(path: str, expected: int | None) -> np.ndarray:
    """Ids from a .npy, a .json list or a text file of one per line; ``expected``: how
    many there must be (None: any number)."""
    try:
        if path.endswith(".npy"):
            ids = np.load(path, mmap_mode="r", allow_pickle=False)
            if ids.ndim != 1:
                raise IngestError(f"{path}: ids must be a 1-d array")
            if ids.dtype.kind not in "iuU":
                raise IngestError(f"{path}: ids must be integers or strings, got {ids.dtype}")
        elif path.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                items = json.load(f)
            if not isinstance(items, list):
                raise IngestError(f"{path}: expected a JSON list of ids, got {type(items).__name__}")
            ids = np.empty(len(items), dtype=object)
            ids[:] = items
        else:
            with open(path, encoding="utf-8") as f:
                lines = [line.rstrip("\n") for line in f]
            ids = np.array([int(x) for x in lines] if all(_is_int(x) for x in lines) else lines,
                           dtype=object)
    except (OSError, EOFError, ValueError) as exc:  # JSON and UTF-8 errors are ValueErrors
        raise IngestError(f"{path}: not a readable ids file ({exc or type(exc).__name__})") from exc
    if expected is not None and len(ids) != expected:
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
        self.data_path = path  # the file the rows are in (BEIR: inside the directory)
        self.n, self.d, self.dtype, self.offset, self.row_bytes = self._layout()
        self.width = self.d
        self.ids = _load_ids(options.ids_path, self.n) if options.ids_path else None

    def _layout(self) -> tuple[int, int, np.dtype, int, int]:
        """(rows, dim, value dtype, byte offset of row 0, bytes per row)."""
        raise NotImplementedError

    def _decode(self, raw: np.ndarray, start: int) -> np.ndarray:
        """(rows, row_bytes / itemsize) values read from the file, the first of them row
        ``start`` -> (rows, d) values."""
        return raw

    def total(self) -> int:
        return self.n

    def _read(self, f, start: int, stop: int) -> np.ndarray:
        f.seek(self.offset + start * self.row_bytes)
        count = (stop - start) * self.row_bytes // self.dtype.itemsize
        raw = np.fromfile(f, dtype=self.dtype, count=count)
        if raw.size != count:
            raise IngestError(f"{self.data_path}: file ends before row {stop} (truncated?)")
        with np.errstate(over="ignore", invalid="ignore"):
            return np.asarray(self._decode(raw.reshape(stop - start, -1), start), dtype=np.float32)

    def _ids(self, start, stop) -> list:
        if self.ids is None:
            return list(range(self.id_base + start, self.id_base + stop))
        return [v.item() if isinstance(v, np.generic) else v for v in self.ids[start:stop]]

    def _payloads(self, ids: list) -> list | None:
        return None

    def batches(self, offset, resume):
        size = self.options.batch_size
        with open(self.data_path, "rb") as f:
            for start in range(offset, self.n, size):
                stop = min(self.n, start + size)
                vecs = self._read(f, start, stop)
                ids = self._ids(start, stop)
                yield RowBatch(start, stop, list(range(start, stop)), ids, vecs,
                               np.full(stop - start, self.d), self._payloads(ids), [])

    def sample(self, n, metric):
        """Up to ``n`` rows evenly spaced over the file (inputs are often sorted by topic),
        those a store of ``options.dim`` and ``metric`` accepts."""
        if self.d != self.options.dim:
            return np.zeros((0, self.options.dim or 0), np.float32)
        rows = np.unique(np.linspace(0, self.n - 1, num=min(n, self.n)).astype(np.int64)) if self.n else []
        out = np.empty((len(rows), self.d), dtype=np.float32)
        with open(self.data_path, "rb") as f:
            for i, r in enumerate(rows):
                out[i] = self._read(f, int(r), int(r) + 1)[0]
        bad = [i for i, _ in row_problems(out, self.d, metric)]
        return np.delete(out, bad, axis=0) if bad else out  # np.delete copies even when nothing goes


def _npy_layout(path: str):
    with open(path, "rb") as f:
        try:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
        except (ValueError, OSError, EOFError) as exc:
            raise IngestError(f"{path}: not a readable .npy file ({exc or type(exc).__name__})") from exc
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

    def _decode(self, raw, start):
        bad = np.flatnonzero(raw[:, 0] != self.d)
        if bad.size:
            raise IngestError(f"{self.path}: row {start + int(bad[0])}: declares dimension "
                              f"{int(raw[bad[0], 0])}, the first row {self.d}")
        return raw[:, 1:].view("<f4")


class JsonlReader(Reader):
    """One JSON object per line: ``id_field``, ``vector_field``; other fields: payload.

    Lines are read as bytes and decoded one at a time, so a line that is not UTF-8 is one
    bad row; the resume state is the exact byte offset (``.zst``: lines are counted).
    """

    def describe(self, position: int) -> str:
        return f"line {position + 1}"

    def _lines(self, byte: int) -> Iterator[bytes]:
        with open(self.path, "rb") as f:
            if self.path.endswith(".zst"):
                yield from _split_lines(_zstd_chunks(f, self.path))
            else:
                f.seek(byte)
                yield from f

    def batches(self, offset, resume):
        opts = self.options
        zst = self.path.endswith(".zst")
        seek = bool(offset and "byte" in resume and not zst)
        byte = resume["byte"] if seek else 0
        line_no = offset if seek else 0
        batch_start = line_no
        rows = _Rows()
        lines = self._lines(byte)
        try:
            while True:
                try:
                    line = next(lines, None)
                except (OSError, EOFError, _zstd_error()) as exc:
                    raise IngestError(f"{self.path}: {self.describe(line_no)}: cannot read the "
                                      f"file ({exc or type(exc).__name__})") from exc
                if line is not None and line_no < offset:  # resuming a .zst: skip committed lines
                    line_no += 1
                    batch_start = line_no
                    continue
                if line is not None:
                    byte += len(line)
                    self._parse(line, line_no, rows)
                    line_no += 1
                if (line is None or line_no - batch_start >= opts.batch_size) and line_no > batch_start:
                    yield self._batch(rows, batch_start, line_no, {} if zst else {"byte": byte})
                    batch_start = line_no
                    rows = _Rows()
                if line is None:
                    break
        finally:
            lines.close()

    def _batch(self, rows: _Rows, start: int, stop: int, resume: dict) -> RowBatch:
        """The RowBatch of lines ``start`` to ``stop`` (parsed into ``rows``)."""
        return rows.batch(start, stop, self.options.dim, resume)

    def _object(self, raw: bytes, line_no: int, rows: _Rows) -> dict | None:
        """The JSON object of one line, or None (the reason is in ``rows.bad``)."""
        try:
            line = raw.decode("utf-8-sig" if line_no == 0 else "utf-8")
        except UnicodeDecodeError as exc:
            rows.bad.append((line_no, f"not UTF-8 text ({exc.reason} at byte {exc.start})"))
            return None
        if not line.strip():
            rows.bad.append((line_no, "empty line"))
            return None
        try:
            obj = json.loads(line)
        except ValueError as exc:
            rows.bad.append((line_no, f"invalid JSON ({getattr(exc, 'msg', exc)})"))
            return None
        except RecursionError:
            rows.bad.append((line_no, "invalid JSON (nested too deeply)"))
            return None
        if not isinstance(obj, dict):
            rows.bad.append((line_no, "not a JSON object"))
            return None
        return obj

    def _parse(self, raw: bytes, line_no: int, rows: _Rows) -> None:
        obj = self._object(raw, line_no, rows)
        if obj is None:
            return
        for name in (self.options.id_field, self.options.vector_field):
            if name not in obj:
                rows.bad.append((line_no, f"no {name!r} field"))
                return
        ext_id = obj.pop(self.options.id_field)
        vec = _as_vector(obj.pop(self.options.vector_field))
        if isinstance(vec, str):
            rows.bad.append((line_no, vec))
            return
        rows.add(line_no, ext_id, vec, obj or None)


class _Rows:
    """The parsed rows of one batch, as they are read."""

    def __init__(self) -> None:
        self.positions, self.ids, self.vecs, self.payloads, self.bad = [], [], [], [], []

    def add(self, position, ext_id, vec, payload) -> None:
        self.positions.append(position)
        self.ids.append(ext_id)
        self.vecs.append(vec)
        self.payloads.append(payload)

    def batch(self, start: int, stop: int, dim: int | None, resume: dict | None = None) -> RowBatch:
        vectors, lengths = _stack(self.vecs, dim)
        return RowBatch(start, stop, self.positions, self.ids, vectors, lengths, self.payloads,
                        self.bad, resume or {})


def _as_vector(value) -> np.ndarray | str:
    """A JSON/Parquet vector as a flat float32 array, or the reason it is not one."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError):  # ragged nesting
        return "vector is not a flat list of numbers"
    if arr.ndim != 1:
        return "vector is not a flat list of numbers"
    if arr.dtype.kind not in "fiu":  # strings, booleans, nulls, ints beyond int64
        return "vector is not a list of numbers"
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float32: inf, refused later
        return arr.astype(np.float32)


def _stack(vecs: list, dim: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Rows of possibly different lengths -> ((n, d) matrix, lengths), d the store's
    dimension (unknown: the most common length); rows of another length are left NaN
    (validation reports their length)."""
    lengths = np.array([len(v) for v in vecs], dtype=np.int64)
    if dim is None:
        dim = int(np.bincount(lengths).argmax()) if len(vecs) else 0
    out = np.full((len(vecs), dim), np.nan, dtype=np.float32)
    for i, v in enumerate(vecs):
        if len(v) == dim:
            out[i] = v
    return out, lengths


def _zstd_error():
    import zstandard

    return zstandard.ZstdError


def _zstd_chunks(f, path: str) -> Iterator[bytes]:
    """The decompressed bytes of every frame of a ``.zst`` file. A file cut short raises
    IngestError (zstandard's stream reader just stops there, losing rows silently)."""
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    dobj, fed = dctx.decompressobj(), False
    while raw := f.read(1 << 20):
        while raw:
            out = dobj.decompress(raw)
            fed = True
            if out:
                yield out
            if dobj.eof:  # the end of a frame; what follows starts the next one
                raw, dobj, fed = dobj.unused_data, dctx.decompressobj(), False
            else:
                raw = b""
    if fed:
        raise IngestError(f"{path}: the compressed data ends inside a frame (truncated?)")


def _split_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    pending = b""
    for chunk in chunks:
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            yield line + b"\n"
    if pending:
        yield pending


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

    def _record_batches(self):
        it = self.file.iter_batches(batch_size=self.options.batch_size)
        pos = 0
        while True:
            try:
                rb = next(it, None)
            except Exception as exc:  # pyarrow's errors for a damaged file are its own types
                raise IngestError(f"{self.path}: row {pos}: cannot read the file ({exc})") from exc
            if rb is None:
                return
            yield pos, rb
            pos += rb.num_rows

    def batches(self, offset, resume):
        for pos, rb in self._record_batches():
            n = rb.num_rows
            if pos + n <= offset:
                continue
            cols = rb.to_pydict()
            skip = max(0, offset - pos)
            ids = cols.pop(self.options.id_field)[skip:]
            raw_vecs = cols.pop(self.options.vector_field)[skip:]
            others = {k: v[skip:] for k, v in cols.items()}
            rows = _Rows()
            for i, (ext_id, vec) in enumerate(zip(ids, raw_vecs)):
                row = pos + skip + i
                if vec is None:
                    rows.bad.append((row, "vector is null"))
                    continue
                if ext_id is None:
                    rows.bad.append((row, "id is null"))
                    continue
                if isinstance(vec, (list, tuple)):
                    vec = [np.nan if v is None else v for v in vec]
                vec = _as_vector(vec)
                if isinstance(vec, str):
                    rows.bad.append((row, vec))
                    continue
                payload = {k: v[i] for k, v in others.items() if v[i] is not None}
                rows.add(row, ext_id, vec, payload or None)
            yield rows.batch(pos + skip, pos + n, self.options.dim)


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
        self.beir_ids = [str(x) for x in _load_ids(os.path.join(emb, "corpus_ids.json"), None)]
        self.texts = _beir_texts(os.path.join(self.path, "corpus.jsonl"))
        self.data_path = os.path.join(emb, "corpus.npy")
        layout = _npy_layout(self.data_path)
        if layout[0] != len(self.beir_ids):
            raise IngestError(f"{emb}: {layout[0]} vectors but {len(self.beir_ids)} ids")
        return layout

    def _ids(self, start, stop):
        return self.beir_ids[start:stop]

    def _payloads(self, ids):
        return [self.texts.get(i) for i in ids]


def _beir_texts(corpus: str) -> dict[str, dict]:
    """``{"_id": {"title", "text"}}`` from a BEIR ``corpus.jsonl`` (absent: no payloads)."""
    texts: dict[str, dict] = {}
    if not os.path.isfile(corpus):
        return texts
    with open(corpus, "rb") as f:
        for line_no, raw in enumerate(f, 1):
            try:
                doc = json.loads(raw.decode("utf-8"))
                texts[str(doc.get("_id"))] = {k: doc[k] for k in ("title", "text") if doc.get(k)}
            except (ValueError, AttributeError, RecursionError) as exc:  # not UTF-8, JSON, or an object
                raise IngestError(f"{corpus}: line {line_no}: not a JSON object ({exc})") from exc
    return texts


READERS = {"npy": NpyReader, "fvecs": FvecsReader, "jsonl": JsonlReader,
           "parquet": ParquetReader, "beir": BeirReader}


def open_reader(path: str, options: ReadOptions, id_base: int = 0) -> Reader:
    if not os.path.exists(path):
        raise IngestError(f"{path}: no such file")
    try:
        return READERS[detect_format(path, options.format)](path, options, id_base)
    except OSError as exc:  # a directory given as a file, no permission, ...
        raise IngestError(f"{path}: cannot read it ({exc.strerror or exc})") from exc


# --- reading ahead -----------------------------------------------------------------------


_DONE = object()


def read_ahead(batches: Iterator[RowBatch], depth: int = 1) -> Iterator[RowBatch]:
    """Yield what ``batches`` yields, produced by a helper thread up to ``depth`` items ahead.

    The next batch is read (and parsed) while the caller encodes and commits this one:
    file reads and numpy conversions release the GIL, so reading overlaps the encoder's
    work instead of adding to it -- what keeps a load from a disk that is slower than the
    page cache near the disk's rate. An exception of the reader is raised here, at the
    batch where it happened; closing this generator early (an error, Ctrl-C in the
    caller) stops the thread and closes ``batches`` in it. Memory: ``depth`` batches more.
    """
    import queue
    import threading

    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not put((batch, None)):
                    break
            else:
                put((_DONE, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put((None, exc))
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="zenstore-read-ahead", daemon=True)
    worker.start()
    try:
        while True:
            batch, exc = items.get()
            if exc is not None:
                raise exc
            if batch is _DONE:
                return
            yield batch
    finally:
        stop.set()
        worker.join()

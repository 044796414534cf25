"""Bulk loading: stream input files into a store in bounded memory, resumably.

``ingest()`` reads each input in batches (``readers.py``), checks every row with the same
functions ``Store`` uses (``validation.py``: vector length and values for the store's
metric, id, payload) plus duplicates within the batch and against the store, then adds
the good rows with a checkpoint recording the input offset *in the same transaction*
(``Store.add(..., checkpoint=...)``). Rerunning the same ingest after a crash, Ctrl-C or
kill -9 continues after the last committed batch: no row is lost or duplicated.

Under ``on_error="skip"`` a row the store still refuses (a codec limit such as a residual
scale beyond fp16 cannot be checked before encoding) is found by committing the batch in
halves; a partial commit records ``within`` (positions of the batch at ``offset`` already
handled), so resuming stays exact.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .errors import IngestError, InvalidArgument, InvalidVector
from .readers import FORMATS, ReadOptions, RowBatch, open_reader, read_ahead
from .store import Store
from .validation import id_problem, payload_problem, row_problems, trainable

CHECKPOINT_PREFIX = "ingest:"
CHECKPOINT_NAME_BYTES = 400  # the longest checkpoint name Store accepts (UTF-8 bytes)


@dataclass(frozen=True)
class IngestOptions:
    """How to read and load inputs (the CLI flags map one to one)."""

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
    embedder: str | None = None  # SPEC (embedders.load_embedder): inputs are texts to embed
    text_field: str = "text"  # with an embedder: the JSONL field holding the text

    def __post_init__(self) -> None:
        if self.on_error not in ("fail", "skip"):
            raise InvalidArgument(f"on_error must be 'fail' or 'skip', got {self.on_error!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InvalidArgument(f"batch_size must be a positive int, got {self.batch_size!r}")
        if self.format is not None and self.format not in FORMATS:
            raise InvalidArgument(f"format must be one of {FORMATS}, got {self.format!r}")
        if self.embedder is not None and not isinstance(self.embedder, str):
            raise InvalidArgument(f"embedder must be a SPEC string (it is recorded in the "
                                  f"checkpoint), got {type(self.embedder).__name__}")
        if not isinstance(self.text_field, str) or not self.text_field:
            raise InvalidArgument(f"text_field must be a non-empty str, got {self.text_field!r}")

    def read_options(self, dim: int | None = None) -> ReadOptions:
        return ReadOptions(self.batch_size, self.format, self.ids_path, self.id_field,
                           self.vector_field, self.embeddings, dim)


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


# --- which rows of a batch can be added ------------------------------------------------------


def _refused_rows(store: Store, batch: RowBatch, id_type: str | None) -> dict[int, str]:
    """{index in batch: reason} of every row ``store.add`` would refuse (or that repeats an
    id): the checks are validation.py's, the same ones Store makes."""
    reasons = dict(row_problems(batch.vectors, store.dim, store.metric, batch.lengths))
    for i, payload in enumerate(batch.payloads or ()):
        problem = None if i in reasons else payload_problem(payload)
        if problem is not None:
            reasons[i] = f"payload {problem}"
    want = id_type or next(("str" if isinstance(x, str) else "int" for x in batch.ids
                            if id_problem(x) is None), None)
    first_at: dict = {}
    for i, ext_id in enumerate(batch.ids):
        problem = id_problem(ext_id)
        kind = "str" if isinstance(ext_id, str) else "int"
        if problem is not None:
            reasons.setdefault(i, problem)
        elif kind != want:
            reasons.setdefault(i, f"id {ext_id!r} is {kind}, the store uses {want} ids")
        elif ext_id in first_at:
            reasons.setdefault(i, f"duplicate id {ext_id!r} (first at "
                                  f"{batch.positions[first_at[ext_id]]})")
        elif i not in reasons:  # a refused row does not claim its id
            first_at[ext_id] = i
    candidates = [i for i in range(len(batch.ids)) if i not in reasons]
    if candidates:
        stored = store.contains([batch.ids[i] for i in candidates])
        for i, hit in zip(candidates, stored):
            if hit:
                reasons[i] = f"id {batch.ids[i]!r} is already stored"
    return reasons


# --- checkpoints ---------------------------------------------------------------------------


def checkpoint_name(path: str) -> str:
    """The name an input's progress is stored under: ``ingest:`` + its absolute path (the
    name every earlier version used, so their runs resume), or, when that is not UTF-8 or
    over the store's 400-byte limit, ``ingest:sha256:<hash of the path's bytes>:<file name>``."""
    full = os.path.abspath(path)
    name = CHECKPOINT_PREFIX + full
    try:
        if len(name.encode("utf-8")) <= CHECKPOINT_NAME_BYTES:
            return name
    except UnicodeEncodeError:  # undecodable bytes in the path (surrogate escapes)
        pass
    raw = os.fsencode(full)
    tail = os.path.basename(raw)[-200:].decode("utf-8", "replace")
    return f"{CHECKPOINT_PREFIX}sha256:{hashlib.sha256(raw).hexdigest()}:{tail}"


def _fingerprint(path: str) -> dict:
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


# --- the loader ----------------------------------------------------------------------------


TRAIN_ROWS_PER_BASE = 24


def default_train_sample(store: Store) -> int:
    """Rows sampled to train an untrained store: 24 per requested base row (24,576 for the
    default 1024), at most ``train_sample``. At 7680 dims that is a 0.75 GB sample, which
    keeps training under the loader's ~2 GB memory budget. (A smaller input trains on all
    of it and gets ``n // min_rows_per_base`` base rows.)
    """
    cfg = store.config
    return min(cfg.train_sample, cfg.n_base * TRAIN_ROWS_PER_BASE)


def infer_dim(inputs: list[str], options: IngestOptions | None = None) -> tuple[int, str]:
    """(dimension, path it came from) for a new store: the vector length of the first input
    that has a parsable row (.npy/.fvecs/BEIR: the file's; JSON Lines/Parquet: the most
    common length in its first batch)."""
    options = options or IngestOptions()
    for path in inputs:
        width = open_reader(path, options.read_options()).first_width()
        if width:
            return width, path
    raise IngestError(f"{', '.join(inputs)}: no readable vector to infer the dimension from; "
                      f"pass --dim")


def ingest(store: Store, inputs: list[str], options: IngestOptions | None = None,
           progress: Callable[[Progress], None] | None = None, *,
           commit_guard: Callable[[], contextlib.AbstractContextManager] | None = None,
           embedder=None) -> IngestSummary:
    """Load ``inputs`` into ``store`` in batches; see the module docstring.

    Raises IngestError naming the file and row/line on the first bad row when
    ``options.on_error == "fail"`` (the failing batch is not committed; earlier batches
    are, and a rerun resumes after them). A file the store cannot take at all (an
    unreadable file, a matrix of another dimension) fails before anything is loaded.

    ``commit_guard``: a context-manager factory entered around each commit and its
    bookkeeping; the CLI passes one that holds SIGINT/SIGTERM until the commit returns.

    ``options.embedder`` (a SPEC): the inputs are texts (``text_readers.py``), embedded
    batch by batch; ``embedder`` is that SPEC's embedder when the caller has loaded it
    already (else it is loaded here). Its dimension must be the store's, and each input's
    checkpoint records the SPEC and dimension: resuming with another is refused.
    """
    options = options or IngestOptions()
    guard = commit_guard or contextlib.nullcontext
    t0 = time.perf_counter()
    summary = IngestSummary(report_path=options.report_path)
    if options.embedder is not None:
        embedder = embedder if embedder is not None else load_embedder(options.embedder)
        check_embedder_dim(store, options.embedder, embedder)
    elif embedder is not None:
        raise InvalidArgument("an embedder object needs options.embedder, the SPEC it was loaded "
                              "from (the checkpoint records it)")
    readers = []
    id_base = 0
    for path in inputs:
        reader = _open_input(path, options, store.dim, id_base, embedder)
        if reader.width is not None and reader.width != store.dim:
            empty = (f"; {store.path} holds no vectors: delete it and rerun to create it with "
                     f"the input's dimension" if len(store) == 0 else "")
            raise IngestError(f"{path}: vectors have {reader.width} values, the store has "
                              f"dimension {store.dim}{empty}")
        readers.append(reader)
        id_base += reader.total() or 0
    if store.stats()["n_base"] == 0:
        _train(store, readers, options.train_sample or default_train_sample(store))
        summary.trained = True
    report = open(options.report_path, "a", encoding="utf-8") if options.report_path else None
    try:
        for reader in readers:
            _FileLoad(store, reader, options, summary, report, guard).run(progress, t0)
    finally:
        if report is not None:
            report.close()
    summary.seconds = time.perf_counter() - t0
    return summary


def load_embedder(spec: str):
    """The embedder of ``spec`` (``embedders.load_embedder``), loaded once per run."""
    from .embedders import load_embedder as load

    return load(spec)


def check_embedder_dim(store: Store, spec: str, embedder) -> int:
    """The embedder's dimension, or IngestError when it is not the store's."""
    dim = embedder.dim
    if dim != store.dim:
        empty = (f"; {store.path} holds no vectors: delete it and rerun to create it with the "
                 f"embedder's dimension" if len(store) == 0 else "")
        raise IngestError(f"embedder {spec!r} gives vectors of dimension {dim}, the store has "
                          f"dimension {store.dim}{empty}")
    return dim


def _open_input(path: str, options: IngestOptions, dim: int, id_base: int, embedder):
    """The reader of one input: vectors, or (with an embedder) texts to embed."""
    if options.embedder is None:
        return open_reader(path, options.read_options(dim), id_base)
    from .text_readers import open_text_reader

    return open_text_reader(path, options.read_options(dim), id_base, embedder,
                            options.embedder, options.text_field)


def _train(store: Store, readers: list, n: int) -> None:
    """Train on up to ``n`` rows the store accepts (and a base can be built from: see
    ``validation.trainable``), taken from the inputs in order."""
    parts, got = [], 0
    for reader in readers:
        part = reader.sample(n - got, store.metric)
        ok = trainable(part, store.metric)
        parts.append(part if ok.all() else part[ok])  # no 0.75 GB copy when every row is usable
        got += len(parts[-1])
        if got >= n:
            break
    if got == 0:
        names = ", ".join(r.path for r in readers) or "no input"
        first = next((f"{r.path}: {r.first_bad}" for r in readers if r.first_bad), None)
        raise IngestError(f"{names}: no valid rows to train the base matrix on"
                          + (f" (the first bad row: {first})" if first else ""))
    # one input: its sample as is; several: one array, the parts dropped before training
    # (training rotates a copy of the sample, so a live second copy raised the peak RSS of a
    # 1M x 7680 load to 2.45 GB; docs/benchmarks.md, "Ingest peak memory")
    sample = parts[0] if len(parts) == 1 else np.concatenate(parts)
    parts.clear()
    store.train(sample)


class _FileLoad:
    """One input loaded batch by batch, each batch committed with its checkpoint."""

    def __init__(self, store, reader, options, summary, report, guard) -> None:
        self.store, self.reader, self.options = store, reader, options
        self.summary, self.report, self.guard = summary, report, guard
        self.name = checkpoint_name(reader.path)
        self.fp = _fingerprint(reader.path)
        spec = getattr(reader, "spec", None)  # text inputs: the embedder that made the vectors
        if spec is not None:
            self.fp["embedder"] = {"spec": spec, "dim": int(reader.embedder.dim)}

    def run(self, progress, t0) -> None:
        reader, store = self.reader, self.store
        state = None if self.options.restart else store.checkpoint(self.name)
        if state is not None and (state.get("size"), state.get("mtime_ns")) != (self.fp["size"], self.fp["mtime_ns"]):
            raise IngestError(f"{reader.path}: changed since an earlier ingest of it was "
                              f"interrupted; rerun with --restart to load it from the start")
        if state is not None and state.get("embedder") != self.fp.get("embedder"):
            raise IngestError(f"{reader.path}: an earlier ingest of it {_embedded_by(state.get('embedder'))}; "
                              f"this run {_embedded_by(self.fp.get('embedder'))}. Vectors of two "
                              f"embedders do not mix: rerun with the same --embedder to resume, or "
                              f"load into a new store")
        self.state = state or {"offset": 0, "added": 0, "skipped": 0, "resume": {}}
        resumed = self.state["added"] + self.state["skipped"]
        self.summary.rows_resumed += resumed
        self.file_stats = {"path": reader.path, "added": 0, "skipped": 0, "resumed": resumed}
        self.summary.per_file.append(self.file_stats)
        if self.state.get("done"):
            self.summary.files_done += 1
            return
        self.id_type = store.stats()["id_type"]
        start_resume = self.state.get("resume", {})
        # the next batch is read while this one is encoded and committed
        with contextlib.closing(read_ahead(reader.batches(self.state["offset"], start_resume))) as batches:
            for batch in batches:
                self.start_resume, start_resume = start_resume, batch.resume  # at batch.start, .stop
                within = self.state.get("within", 0)
                if batch.stop <= within:  # all handled by an earlier run's partial commits
                    continue
                self._load_batch(_rows_from(batch, within))
                if progress is not None:
                    progress(Progress(reader.path, batch.stop, reader.total(), self.summary.rows_added,
                                      self.summary.rows_skipped, time.perf_counter() - t0))
        with self.guard():
            store.set_checkpoint(self.name, {**self.state, "done": True})
        self.summary.files_done += 1

    def _load_batch(self, batch: RowBatch) -> None:
        refused = _refused_rows(self.store, batch, self.id_type)
        problems = sorted(batch.bad + [(batch.positions[i], r) for i, r in refused.items()])
        if problems and self.options.on_error == "fail":
            pos, reason = problems[0]
            more = f" ({len(problems) - 1} more bad rows in this batch)" if len(problems) > 1 else ""
            raise IngestError(
                f"{self.reader.path}: {self.reader.describe(pos)}: {reason}{more}; nothing of "
                f"this batch was added ({self.state['added']} rows of this file before it were)"
            )
        keep = [i for i in range(len(batch.ids)) if i not in refused]
        self._commit(batch, keep, problems)

    def _commit(self, batch: RowBatch, keep: list[int], problems: list) -> None:
        """Add rows ``keep`` of ``batch`` and count its ``problems``, checkpointed at its end.
        A row the store still refuses fails the batch (fail mode) or is isolated (skip)."""
        try:
            self._write(batch, keep, problems, batch.stop)
        except InvalidVector as exc:  # a limit only the encoder knows; nothing was written
            if self.options.on_error == "fail":
                where = self.reader.describe
                first, last = batch.positions[keep[0]], batch.positions[keep[-1]]
                raise IngestError(f"{self.reader.path}: {where(first)} to {where(last)}: the "
                                  f"store refused a row of this batch: {exc}; nothing of this "
                                  f"batch was added") from exc
            self._write(batch, [], self._isolate(batch, keep, problems, exc), batch.stop)

    def _isolate(self, batch: RowBatch, keep: list[int], pending: list, exc: Exception) -> list:
        """Commit rows ``keep`` (refused together with ``exc``) in halves, down to the rows
        refused alone; returns the problems not committed yet (for the next commit)."""
        if len(keep) == 1:
            return sorted(pending + [(batch.positions[keep[0]], str(exc))])
        for part in (keep[: len(keep) // 2], keep[len(keep) // 2:]):
            stop = batch.positions[part[-1]] + 1
            now = [p for p in pending if p[0] < stop]
            later = [p for p in pending if p[0] >= stop]
            try:
                self._write(batch, part, now, stop)
                pending = later
            except InvalidVector as part_exc:
                pending = self._isolate(batch, part, now, part_exc) + later
        return pending

    def _write(self, batch: RowBatch, keep: list[int], problems: list, stop: int) -> None:
        """One commit: rows ``keep`` and the count of ``problems``, with the checkpoint that
        says the input is done up to position ``stop``. Short of the batch's end that is
        ``within`` the batch at ``offset``, whose resume state is the batch's start."""
        final = stop == batch.stop
        state = {"offset": batch.stop if final else batch.start,
                 "added": self.state["added"] + len(keep),
                 "skipped": self.state["skipped"] + len(problems),
                 "resume": batch.resume if final else self.start_resume, **self.fp}
        if not final:
            state["within"] = stop
        with self.guard():
            if keep:
                ids = [batch.ids[i] for i in keep]
                payloads = None if batch.payloads is None else [batch.payloads[i] for i in keep]
                self.store.add(ids, batch.vectors[keep], payloads, checkpoint=(self.name, state))
                self.id_type = self.id_type or ("str" if isinstance(ids[0], str) else "int")
            else:
                self.store.set_checkpoint(self.name, state)
            self._account(state, len(keep), problems)

    def _account(self, state: dict, added: int, problems: list) -> None:
        """After a commit: the report lines, the counters, the state the next commit builds on."""
        self.state = state
        if self.report is not None and problems:
            # written after the commit: a crash right here can lose these report lines,
            # never rows (they are counted in the checkpoint's "skipped")
            for pos, reason in problems:
                self.report.write(json.dumps({"file": self.reader.path, "at": self.reader.describe(pos),
                                              "reason": reason}) + "\n")
            self.report.flush()
        self.file_stats["added"] += added
        self.file_stats["skipped"] += len(problems)
        self.summary.rows_added += added
        self.summary.rows_skipped += len(problems)


def _embedded_by(record: dict | None) -> str:
    if record is None:
        return "read vectors (no --embedder)"
    return f"embedded with --embedder {record['spec']!r} (dimension {record['dim']})"


def _rows_from(batch: RowBatch, within: int) -> RowBatch:
    """``batch`` without the rows before position ``within`` (handled by an earlier run's
    partial commit of this batch)."""
    if not within or batch.start >= within:
        return batch
    keep = [i for i, pos in enumerate(batch.positions) if pos >= within]
    return RowBatch(batch.start, batch.stop, [batch.positions[i] for i in keep],
                    [batch.ids[i] for i in keep], batch.vectors[keep], batch.lengths[keep],
                    None if batch.payloads is None else [batch.payloads[i] for i in keep],
                    [b for b in batch.bad if b[0] >= within], batch.resume)


__all__ = ["IngestError", "IngestOptions", "IngestSummary", "Progress", "checkpoint_name",
           "infer_dim", "ingest"]

"""Bulk loading: stream input files into a store in bounded memory, resumably.

``ingest()`` reads each input in batches (``readers.py``), validates every row (vector
length, NaN/inf, id kind, duplicates within the batch and against the store), then adds
the good rows with a checkpoint recording the input offset *in the same transaction*
(``Store.add(..., checkpoint=...)``). Rerunning the same ingest after a crash, Ctrl-C or
kill -9 continues after the last committed batch: no row is lost or duplicated.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .errors import IngestError, InvalidArgument
from .readers import FORMATS, ReadOptions, RowBatch, open_reader
from .store import Store

CHECKPOINT_PREFIX = "ingest:"


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

    def __post_init__(self) -> None:
        if self.on_error not in ("fail", "skip"):
            raise InvalidArgument(f"on_error must be 'fail' or 'skip', got {self.on_error!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InvalidArgument(f"batch_size must be a positive int, got {self.batch_size!r}")
        if self.format is not None and self.format not in FORMATS:
            raise InvalidArgument(f"format must be one of {FORMATS}, got {self.format!r}")

    def read_options(self) -> ReadOptions:
        return ReadOptions(self.batch_size, self.format, self.ids_path, self.id_field,
                           self.vector_field, self.embeddings)


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


TRAIN_ROWS_PER_BASE = 24


def default_train_sample(store: Store) -> int:
    """Rows sampled to train an untrained store: 24 per requested base row (24,576 for the
    default 1024), at most ``train_sample``. At 7680 dims that is a 0.75 GB sample, which
    keeps training under the loader's ~2 GB memory budget. (A smaller input trains on all
    of it and gets ``n // min_rows_per_base`` base rows.)
    """
    cfg = store.config
    return min(cfg.train_sample, cfg.n_base * TRAIN_ROWS_PER_BASE)


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
        reader = open_reader(path, options.read_options(), id_base)
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


__all__ = ["IngestError", "IngestOptions", "IngestSummary", "Progress", "ingest"]


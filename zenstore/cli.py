"""The ``zenstore`` command line: a thin shell over the library.

Each command parses its arguments, makes one library call and formats the result.
Library errors become one-line messages and documented exit codes:

    0  success
    1  the command failed (bad input row under --on-error fail, store error, ...);
       nothing of a failing batch was written
    2  usage error (bad arguments)
    3  ``verify`` found problems
    130 interrupted (Ctrl-C, SIGINT); committed batches stay, rerun the same command to resume
    143 terminated (SIGTERM, e.g. ``kill``): the same clean stop as Ctrl-C

A signal that arrives while an ingest batch is being committed is held until the commit
(and its merge) returns, so the store is closed at a batch boundary.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
import threading
import time

import numpy as np

from . import __version__
from .errors import IngestError, InvalidArgument, InvalidFilter, ZenstoreError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PROBLEMS, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143, what a shell reports for a SIGTERMed process
VECTOR_BATCH_SIZE = 8192  # --batch-size default for vector inputs
TEXT_BATCH_SIZE = 1024  # and for texts (--embedder): an embedder is slower than a file read



def _nprobe(text: str):
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"nprobe must be a positive int or 'all', got {text!r}") from None

def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serializable: {type(value).__name__}")


# --- progress ---------------------------------------------------------------------------


class ProgressBar:
    """A one-line progress display on a terminal: rows, rows/s and ETA."""

    def __init__(self, stream, enabled: bool) -> None:
        self.stream = stream
        self.enabled = enabled
        self.last = 0.0

    def __call__(self, p) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < 0.2 and p.rows_total != p.rows_done:
            return
        self.last = now
        rate = p.rows_added / p.elapsed if p.elapsed > 0 else 0.0
        name = os.path.basename(p.path)
        if p.rows_total:
            frac = min(1.0, p.rows_done / p.rows_total)
            bar = "#" * int(frac * 24)
            eta = (p.rows_total - p.rows_done) / rate if rate > 0 else 0
            text = (f"\r{name} [{bar:<24}] {p.rows_done:,}/{p.rows_total:,} rows "
                    f"{rate:,.0f} rows/s ETA {int(eta) // 60}:{int(eta) % 60:02d}")
        else:
            text = f"\r{name} {p.rows_done:,} rows {rate:,.0f} rows/s"
        if p.rows_skipped:
            text += f" ({p.rows_skipped:,} skipped)"
        self.stream.write(text + " " * 4)
        self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


# --- signals ----------------------------------------------------------------------------


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised in the main thread (a KeyboardInterrupt, so it unwinds
    like Ctrl-C and ``with store:`` closes the store)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    """Turns SIGINT and SIGTERM into ``Interrupted``; ``held()`` defers them while a commit
    runs, so a signal never lands inside an LMDB commit or the cleanup around it. Once one
    has been raised, later ones are ignored: the unwinding (closing the store, the exit
    message) finishes instead of ending in a traceback."""

    def __init__(self) -> None:
        self.pending: int | None = None
        self.depth = 0
        self.fired = False
        self.previous: dict = {}

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # handlers can only be set from the main thread
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) is not signal.SIG_IGN:  # e.g. nohup, background jobs
                self.previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.fired:
            return
        if self.depth:
            self.pending = self.pending or signum
            return
        self.fired = True
        raise Interrupted(signum)

    @contextlib.contextmanager
    def held(self):
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            if not self.depth and self.pending is not None and not self.fired:
                self.fired = True
                raise Interrupted(self.pending)


# --- commands ---------------------------------------------------------------------------


def _cmd_ingest(args) -> int:
    if args.shards is not None or args.ray is not None:
        if args.embedder is not None:
            raise InvalidArgument("--embedder is not supported with --shards/--ray yet: embed the texts "
                                  "into a vector file first, or ingest into one store")
        return _cmd_ingest_sharded(args)
    from .ingest import IngestOptions, infer_dim, ingest

    if args.batch_size is None:  # texts: smaller batches, so progress and commits come often
        args.batch_size = TEXT_BATCH_SIZE if args.embedder else VECTOR_BATCH_SIZE
    options = IngestOptions(
        batch_size=args.batch_size, on_error=args.on_error, report_path=args.report,
        format=args.format, ids_path=args.ids, id_field=args.id_field,
        vector_field=args.vector_field, embeddings=args.embeddings,
        train_sample=args.train_sample, restart=args.restart,
        embedder=args.embedder, text_field=args.text_field,
    )
    if args.on_error == "skip" and options.report_path is None:
        options = dataclasses.replace(options, report_path=args.store.rstrip("/") + ".rejected.jsonl")
    embedder = None
    if args.embedder is not None:  # loaded before the store is made: its dim is the store's
        from .ingest import load_embedder

        embedder = load_embedder(args.embedder)
    created = not os.path.exists(args.store)
    store = _open_or_create(args, options, infer_dim, embedder)
    bar = ProgressBar(sys.stderr, enabled=not args.quiet and sys.stderr.isatty())
    remove = False
    try:
        with store:
            try:
                summary = ingest(store, args.inputs, options, progress=bar, commit_guard=args.hold,
                                 embedder=embedder)
            except BaseException:
                remove = created and _holds_nothing(store)
                raise
            finally:
                bar.finish()
            stats = store.stats()
    except BaseException:
        if remove:  # this run made it and it holds nothing: a rerun starts clean
            with args.hold():
                _remove_store(args.store)
        raise
    line = {
        "rows_added": summary.rows_added,
        "rows_skipped": summary.rows_skipped,
        "rows_resumed": summary.rows_resumed,
        "files": summary.files_done,
        "seconds": round(summary.seconds, 2),
        "rows_per_second": round(summary.rows_added / summary.seconds, 1) if summary.seconds else None,
        "store_count": stats["count"],
        "bytes_per_vector": stats["bytes_per_vector"],
        "compression_ratio": round(stats["compression_ratio"], 2),
    }
    if summary.rows_skipped:
        line["report"] = summary.report_path
    if args.json:
        print(json.dumps(line))
    elif not args.quiet:
        print(f"ingested {summary.rows_added:,} rows ({summary.rows_skipped:,} skipped"
              + (f", {summary.rows_resumed:,} already loaded by an earlier run" if summary.rows_resumed else "")
              + f") in {summary.seconds:.1f} s = {line['rows_per_second'] or 0:,.0f} rows/s; "
              f"store holds {stats['count']:,} vectors at {stats['bytes_per_vector']} bytes each "
              f"({stats['compression_ratio']:.2f}x vs float32)"
              + (f"; rejected rows listed in {summary.report_path}" if summary.rows_skipped else ""))
    return EXIT_OK


def _open_or_create(args, options, infer_dim, embedder=None):
    """The store to ingest into: opened, or created with ``--dim``, the embedder's dimension
    or the dimension of the first input (so a first run without ``--dim`` cannot create a
    store of the wrong one)."""
    from .store import Store

    if embedder is not None and args.dim is not None and args.dim != embedder.dim:
        raise IngestError(f"embedder {args.embedder!r} gives vectors of dimension {embedder.dim}, "
                          f"--dim says {args.dim}")
    if os.path.exists(args.store):
        store = Store.open(args.store)
        if args.dim is not None and args.dim != store.dim:
            store.close()
            raise IngestError(f"{args.store}: the store has dimension {store.dim}, --dim says {args.dim}")
        return store
    if embedder is not None:
        dim, source = embedder.dim, f"embedder {args.embedder!r}"
    else:
        dim, source = (args.dim, None) if args.dim is not None else infer_dim(args.inputs, options)
    create = {k: v for k, v in (("n_base", args.n_base), ("seed", args.seed), ("refine", args.refine))
              if v is not None}
    try:
        return Store.create(args.store, dim=dim, metric=args.metric, **create)
    except InvalidArgument as exc:
        if source is None:
            raise
        raise IngestError(f"{exc} (the dimension of the vectors in {source}; pass --dim)") from exc


def _holds_nothing(store) -> bool:
    try:
        return len(store) == 0
    except ZenstoreError:  # cannot tell: keep it
        return False


def _remove_store(path: str) -> None:
    """Remove a store directory this run created: renamed first (atomic), so an interrupted
    removal never leaves a half-deleted store under the name a rerun would open."""
    doomed = f"{os.path.abspath(path)}.removing-{os.getpid()}"
    try:
        os.rename(path, doomed)
    except OSError:
        return
    shutil.rmtree(doomed, ignore_errors=True)


# --- zenstore ingest --shards N --ray [ADDRESS]: a sharded store on Ray (zenstore.cluster) ----


def _ray_address(value: str) -> bool:
    return value in ("local", "auto") or ":" in value


def _cmd_ingest_sharded(args) -> int:
    from .cluster import ShardedStore
    from .cluster.actor import ensure_ray
    from .cluster.ingest import DatasetIngestOptions, ingest_files

    address = args.ray or "local"
    if not _ray_address(address):  # "--ray STORE INPUT...": argparse took STORE for the address
        args.inputs, args.store, address = [args.store, *args.inputs], address, "local"
    if args.ids is not None or args.format in ("fvecs", "beir"):
        raise InvalidArgument("with --ray, inputs are .npy (ids = row numbers), .parquet or .jsonl")
    ensure_ray(None if address == "local" else address)
    if os.path.exists(args.store):
        store = ShardedStore.open(args.store)
        if args.shards is not None and args.shards != store.shards:
            store.close()
            raise InvalidArgument(f"{args.store} has {store.shards} shards, not {args.shards}")
        if args.dim is not None and args.dim != store.dim:
            store.close()
            raise IngestError(f"{args.store}: the store has dimension {store.dim}, --dim says {args.dim}")
    else:
        if args.shards is None:
            raise InvalidArgument("--shards N is needed to create a sharded store")
        from .ingest import IngestOptions, infer_dim

        dim = args.dim
        if dim is None:  # as for one store: the first input's vector length
            dim, _ = infer_dim(args.inputs, IngestOptions(format=args.format, id_field=args.id_field,
                                                          vector_field=args.vector_field))
        create = {k: v for k, v in (("n_base", args.n_base), ("seed", args.seed)) if v is not None}
        store = ShardedStore.create(args.store, dim=dim, shards=args.shards, metric=args.metric, **create)
    report = args.report or (args.store.rstrip("/") + ".rejected.jsonl" if args.on_error == "skip" else None)
    options = DatasetIngestOptions(batch_size=args.batch_size, id_column=args.id_field,
                                   vector_column=args.vector_field, on_error=args.on_error, report_path=report,
                                   train_sample=args.train_sample)
    show = not args.quiet and sys.stderr.isatty()

    def progress(p):
        if show:
            rate = p.rows_added / p.elapsed if p.elapsed > 0 else 0.0
            sys.stderr.write(f"\r{p.rows_done:,} rows {rate:,.0f} rows/s ({p.rows_skipped:,} skipped)    ")
            sys.stderr.flush()

    with store:
        try:
            summary = ingest_files(store, args.inputs, options, progress, format=args.format)
        finally:
            if show:
                sys.stderr.write("\n")
        count = len(store)
    line = {"rows_added": summary.rows_added, "rows_skipped": summary.rows_skipped,
            "rows_resumed": summary.rows_resumed, "shards": list(summary.per_shard_added),
            "seconds": round(summary.seconds, 2),
            "rows_per_second": round(summary.rows_added / summary.seconds, 1) if summary.seconds else None,
            "store_count": count}
    if args.json:
        print(json.dumps(line))
    elif not args.quiet:
        print(f"ingested {summary.rows_added:,} rows into {len(summary.per_shard_added)} shards "
              f"({summary.rows_skipped:,} skipped, {summary.rows_resumed:,} already loaded by an earlier run) in "
              f"{summary.seconds:.1f} s; store holds {count:,} vectors")
    return EXIT_OK


def _cmd_stats(args) -> int:
    from .store import Store

    with Store.open(args.store, readonly=True) as store:
        stats = store.stats()
    if args.json:
        print(json.dumps(stats, indent=2, default=_jsonable))
        return EXIT_OK
    disk = stats["bytes_on_disk"]
    print(f"store:             {args.store}")
    print(f"vectors:           {stats['count']:,} ({stats['deleted_rows']:,} deleted, not yet compacted)")
    print(f"dim / metric:      {stats['dim']} / {stats['metric']}   ids: {stats['id_type']}")
    print(f"segments:          {stats['segments']}   base rows: {stats['n_base']}")
    print(f"bytes per vector:  {stats['bytes_per_vector']} (vector data), "
          f"{stats['compression_ratio']:.2f}x vs float32")
    if stats["refine"]:
        print(f"refine tier:       {stats['refine']}: {stats['refine_bytes_per_vector']:,} more bytes per "
              f"vector on disk, {stats['refine_file_bytes']:,} bytes of refine files")
    if stats["bytes_per_vector_all_in"]:
        print(f"all in:            {stats['bytes_per_vector_all_in']:.1f} bytes per vector")
    print("bytes on disk:")
    for part, value in disk.items():
        print(f"  {part:<17}{value:>16,}")
    if stats["payload_indexes"]:
        print("payload indexes:")
        for field, info in stats["payload_indexes"].items():
            print(f"  {field:<24} {info['kind']:<8} {info['record_bytes']:>14,} bytes")
    return EXIT_OK


def _cmd_index(args) -> int:
    from .store import Store

    if args.action == "list":
        with Store.open(args.store, readonly=True) as store:
            indexes = store.stats()["payload_indexes"]
        if args.json:
            print(json.dumps(indexes))
        elif not indexes:
            print(f"{args.store}: no payload indexes")
        for field, info in ({} if args.json else indexes).items():
            print(f"{field}\t{info['kind']}\t{info['record_bytes']}")
        return EXIT_OK
    if args.field is None:
        raise InvalidArgument(f"zenstore index {args.action} needs a FIELD")
    with Store.open(args.store) as store:
        if args.action == "create":
            if args.kind is None:
                raise InvalidArgument("zenstore index create needs --kind keyword|int|float")
            t0 = time.perf_counter()
            made = store.create_payload_index(args.field, args.kind)
            took = time.perf_counter() - t0
            print(f"indexed {args.field!r} as {args.kind} over {len(store):,} rows in {took:.1f} s" if made
                  else f"{args.field!r} already has a {args.kind} index")
        else:
            store.drop_payload_index(args.field)
            print(f"dropped the index of {args.field!r}")
    return EXIT_OK


def _load_queries(path: str) -> np.ndarray:
    try:
        q = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:  # empty, truncated, pickled, not .npy
        raise InvalidArgument(f"{path}: not a readable .npy query file ({exc or type(exc).__name__})") from exc
    if not isinstance(q, np.ndarray) or q.ndim not in (1, 2):
        what = "an .npz archive" if not isinstance(q, np.ndarray) else f"shape {q.shape}"
        raise InvalidArgument(f"{path}: queries must be a (dim,) or (nq, dim) array, got {what}")
    return q[None, :] if q.ndim == 1 else q


def _parse_where(text: str | None):
    """``--where``: a filter as JSON (the same dict as ``filter=`` in Python)."""
    if text is None:
        return None
    from .filters import compile_filter

    try:
        spec = json.loads(text)
    except ValueError as exc:
        raise InvalidFilter(f"--where is not valid JSON ({exc}): {text[:80]!r}") from None
    return compile_filter(spec)


def _cmd_search(args) -> int:
    from .store import Store

    where = _parse_where(args.where)
    queries = _load_queries(args.query)
    with Store.open(args.store, readonly=True) as store:
        ids, scores = store.search_batch(queries, k=args.k, shortlist=args.shortlist, nprobe=args.nprobe,
                                         filter=where)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout
    try:
        for qi in range(len(queries)):
            keep = ~np.isnan(scores[qi])
            row_ids = [v.item() if isinstance(v, np.generic) else v for v in ids[qi][keep]]
            row_scores = [round(float(s), 6) for s in scores[qi][keep]]
            if args.json:
                out.write(json.dumps({"query": qi, "ids": row_ids, "scores": row_scores}) + "\n")
            else:
                for rank, (i, s) in enumerate(zip(row_ids, row_scores), 1):
                    out.write(f"{qi}\t{rank}\t{i}\t{s}\n")
    finally:
        if args.output:
            out.close()
    return EXIT_OK


def _cmd_verify(args) -> int:
    from .store import verify_store

    problems = verify_store(args.store)
    for p in problems:
        print(f"problem: {p}")
    if not problems:
        print(f"{args.store}: ok")
    return EXIT_PROBLEMS if problems else EXIT_OK


def _cmd_compact(args) -> int:
    from .store import Store

    with Store.open(args.store) as store:
        result = store.compact()
    print(f"segments {result['segments_before']} -> {result['segments_after']}, "
          f"stored rows {result['rows_before']:,} -> {result['rows_after']:,}")
    return EXIT_OK


def _cmd_export(args) -> int:
    from .store import Store

    with Store.open(args.store, readonly=True) as store:
        n = len(store)
        written = [args.output]
        if args.format == "jsonl":
            with open(args.output, "w", encoding="utf-8") as f:
                for ids, vecs, payloads in store.iter_records():
                    for i, v, p in zip(ids.tolist(), vecs, payloads):
                        f.write(json.dumps({"id": i, "vector": [round(float(x), 7) for x in v],
                                            "payload": p}) + "\n")
        else:
            prefix = args.output[:-4] if args.output.endswith(".npy") else args.output
            vec_out = np.lib.format.open_memmap(prefix + ".npy", mode="w+", dtype=np.float32,
                                                shape=(n, store.dim))
            all_ids, pos = [], 0
            with open(prefix + ".payloads.jsonl", "w", encoding="utf-8") as pf:
                for ids, vecs, payloads in store.iter_records():
                    vec_out[pos : pos + len(vecs)] = vecs
                    pos += len(vecs)
                    all_ids.extend(ids.tolist())
                    for i, p in zip(ids.tolist(), payloads):
                        pf.write(json.dumps({"id": i, "payload": p}) + "\n")
            vec_out.flush()
            del vec_out
            if store.stats()["id_type"] == "str":
                written = [prefix + ".npy", prefix + ".ids.json"]
                with open(written[1], "w", encoding="utf-8") as f:
                    json.dump(all_ids, f)
            else:
                written = [prefix + ".npy", prefix + ".ids.npy"]
                np.save(written[1], np.array(all_ids, dtype=np.int64))
            written.append(prefix + ".payloads.jsonl")
    print(f"exported {n:,} vectors to {', '.join(written)}")
    return EXIT_OK


def _cmd_demo(args) -> int:
    from .demo import format_report, run_demo

    report = run_demo(args.path, dim=args.dim, docs=args.docs, queries=args.queries)
    print(format_report(report))
    return EXIT_OK if report.identical_after_reopen else EXIT_FAILED


# --- serve and keys (zenstore.server) ---------------------------------------------------


def _cmd_serve(args) -> int:
    from .server import Limits, ServerConfig, serve

    limits = Limits(**{k: v for k, v in (("max_body_bytes", args.max_body_bytes), ("max_documents", args.max_documents),
                                         ("max_top_n", args.max_documents), ("max_k", args.max_k),
                                         ("max_batch", args.max_batch)) if v is not None})
    cfg = ServerConfig(store=args.store, host=args.host, port=args.port, embedder=args.embedder,
                       api_key_file=args.api_key_file, workers=args.workers, readonly=args.readonly,
                       text_field=args.text_field, graceful_seconds=args.graceful_seconds, limits=limits)
    return serve(cfg)


def _cmd_keys(args) -> int:
    from .server import add_key, read_keys, revoke_key

    if args.action == "add":
        key, entry = add_key(args.file, args.scope, args.name)
        print(f"added key {entry.id} (scope {entry.scope}) to {args.file}; it is shown only now:", file=sys.stderr)
        print(key)
    elif args.action == "list":
        entries = read_keys(args.file)
        if args.json:
            print(json.dumps([{k: v for k, v in dataclasses.asdict(e).items() if k != "sha256"} for e in entries],
                             indent=2))
        else:
            for e in entries:
                print(f"{e.id}\t{e.scope}\t{e.created}\t{e.name or ''}")
    else:
        entry = revoke_key(args.file, args.key)
        print(f"revoked key {entry.id} (scope {entry.scope})")
    return EXIT_OK


def _add_serve_and_keys(command) -> None:
    p = command("serve", "serve a store over HTTP (Cohere-compatible rerank, search, writes)", _cmd_serve)
    p.add_argument("store", help="store directory")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="default 8080; 0 picks a free port (printed)")
    p.add_argument("--embedder", default=None, metavar="SPEC",
                   help="openai:URL[#MODEL], sentence-transformers:PATH or python:MODULE:ATTR")
    p.add_argument("--api-key-file", default=None, metavar="FILE",
                   help="accept only these keys (zenstore keys add FILE); required unless --host is loopback")
    p.add_argument("--workers", type=int, default=1, help="HTTP worker processes (readers; default 1)")
    p.add_argument("--readonly", action="store_true", help="take no writes (no writer process, no store lock)")
    p.add_argument("--text-field", default="text", help="payload field rerank matches document texts against")
    p.add_argument("--graceful-seconds", type=float, default=30.0,
                   help="on SIGTERM, how long in-flight requests get to finish (default 30)")
    g = p.add_argument_group("limits")
    g.add_argument("--max-body-bytes", type=int, default=None, help="request body (default 64 MiB): 413 beyond")
    g.add_argument("--max-documents", type=int, default=None, help="documents and top_n of a rerank (default 1000)")
    g.add_argument("--max-k", type=int, default=None, help="k of a search (default 1000)")
    g.add_argument("--max-batch", type=int, default=None, help="rows of an upsert / ids of a delete (default 4096)")

    p = command("keys", "create, list and revoke API keys for zenstore serve", _cmd_keys)
    ks = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = ks.add_parser("add", help="create a key; prints it as the last line (only its hash is stored)")
    a.add_argument("file", help="keys file (created if absent)")
    a.add_argument("--scope", required=True, choices=("read", "write", "admin"),
                   help="read: rerank/search/get/stats/embeddings; write: + upsert/delete; admin: + /metrics")
    a.add_argument("--name", default=None, help="a note kept with the key")
    a = ks.add_parser("list", help="key ids, scopes and creation times (never the keys)")
    a.add_argument("file")
    a.add_argument("--json", action="store_true")
    a = ks.add_parser("revoke", help="remove a key (a running server stops accepting it within a second)")
    a.add_argument("file")
    a.add_argument("key", metavar="KEY_ID", help="the id from 'keys list' (or the key itself)")


# --- parser -----------------------------------------------------------------------------

EXAMPLES = {
    "ingest": """examples:
  zenstore ingest docs.zen embeddings.npy --dim 7680             # create + load, ids = row numbers
  zenstore ingest docs.zen part1.npy part2.npy --ids ids.npy      # several files (one --ids file per single input)
  zenstore ingest docs.zen corpus.jsonl.zst --id-field doc_id --vector-field emb --on-error skip
  zenstore ingest docs.zen vectors.fvecs --dim 128 --metric l2
  zenstore ingest docs.zen shared/data/scifact --embeddings emb-minilm-l6-v2 --dim 384
  zenstore ingest docs.zens part-*.parquet --shards 4 --ray      # sharded store, Ray Data, local Ray
  zenstore ingest docs.zen texts.jsonl --embedder openai:http://127.0.0.1:8080#bge-m3 --id-field doc_id
  zenstore ingest docs.zen shared/data/scifact --embedder sentence-transformers:/models/all-MiniLM-L6-v2
Interrupted (Ctrl-C: exit 130, kill: exit 143, kill -9)? Run the same command again: it
resumes after the last committed batch, without duplicating or losing rows. A failed or
interrupted first run that committed nothing removes the store it created.""",
    "stats": "example:\n  zenstore stats docs.zen --json",
    "search": "examples:\n  zenstore search docs.zen --query q.npy -k 10\n  zenstore search docs.zen --query q.npy -k 100 --json --output hits.jsonl\n"
              "  zenstore search docs.zen --query q.npy --where '{\"lang\": \"en\", \"year\": {\"$gte\": 2023}}'",
    "index": "examples:\n  zenstore index create docs.zen lang --kind keyword\n  zenstore index create docs.zen year --kind int\n"
             "  zenstore index list docs.zen\n  zenstore index drop docs.zen lang",
    "verify": "example:\n  zenstore verify docs.zen && echo healthy",
    "compact": "example:\n  zenstore compact docs.zen",
    "export": "examples:\n  zenstore export docs.zen out.npy          # out.npy, out.ids.npy, out.payloads.jsonl\n  zenstore export docs.zen out.jsonl --format jsonl",
    "demo": "example:\n  zenstore demo --docs 20000",
    "serve": """examples:
  zenstore serve docs.zen --embedder openai:http://127.0.0.1:8081#bge-m3
  zenstore keys add keys.json --scope read && zenstore serve docs.zen --api-key-file keys.json --workers 2
  zenstore serve docs.zen --host 0.0.0.0 --api-key-file keys.json --readonly
SIGTERM or Ctrl-C: requests in flight finish, then the store is closed (exit 0).""",
    "keys": """examples:
  zenstore keys add keys.json --scope write --name ingest-job   # the key is the last line printed
  zenstore keys list keys.json
  zenstore keys revoke keys.json 1a2b3c4d""",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zenstore",
        description="zenstore: an embedded store for 1-bit compressed embeddings.",
        epilog="exit codes: 0 ok, 1 failed, 2 usage error, 3 verify found problems, "
               "130 interrupted (Ctrl-C), 143 terminated (SIGTERM)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"zenstore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name, help_text, func):
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=EXAMPLES[name],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    p = command("ingest", "bulk-load vectors from files into a store (created if absent)", _cmd_ingest)
    p.add_argument("store", help="store directory")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=".npy, .fvecs, .jsonl[.zst], .parquet or a BEIR directory")
    g = p.add_argument_group("creating a store")
    g.add_argument("--dim", type=int, default=None,
                   help="vector dimension (default: the first input's; an existing store's must match)")
    g.add_argument("--metric", choices=("cosine", "ip", "l2"), default="cosine")
    g.add_argument("--n-base", type=int, default=None, help="base rows (default 1024)")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--refine", default=None, metavar="TIER",
                   help="refine tier kept on disk beside the segments: int8 or magnitude1..4 (default: none)")
    g.add_argument("--train-sample", type=int, default=None, metavar="N",
                   help="rows sampled to train the base matrix (default n_base x 24)")
    g = p.add_argument_group("reading")
    g.add_argument("--format", choices=("npy", "fvecs", "jsonl", "parquet", "beir"), default=None,
                   help="input format (default: from the extension)")
    g.add_argument("--ids", default=None, metavar="FILE", help="ids for .npy/.fvecs rows: .npy, .json list, or one per line (default: row numbers)")
    g.add_argument("--id-field", default="id", help="JSONL/Parquet id field (default 'id')")
    g.add_argument("--vector-field", default="vector", help="JSONL/Parquet vector field (default 'vector')")
    g.add_argument("--embeddings", default=None, help="BEIR: embeddings subdirectory (e.g. emb-minilm-l6-v2)")
    g.add_argument("--batch-size", type=int, default=None,
                   help=f"rows per committed batch (default {VECTOR_BATCH_SIZE}; with --embedder {TEXT_BATCH_SIZE})")
    g = p.add_argument_group("text inputs (embedded while loading)")
    g.add_argument("--embedder", default=None, metavar="SPEC",
                   help="embed text inputs (JSONL with a text field, or a BEIR corpus) with this embedder: "
                        "openai:URL[#MODEL], sentence-transformers:PATH or python:MODULE:ATTR; "
                        "the store gets its dimension")
    g.add_argument("--text-field", default="text", metavar="NAME",
                   help="JSONL field holding the text to embed (default 'text'); it stays in the payload")
    g = p.add_argument_group("bad rows and resuming")
    g.add_argument("--on-error", choices=("fail", "skip"), default="fail",
                   help="fail: stop at the first bad row (its batch is not committed); skip: skip bad rows and list them")
    g.add_argument("--report", default=None, metavar="FILE", help="where skipped rows are listed (default STORE.rejected.jsonl)")
    g.add_argument("--restart", action="store_true", help="ignore the progress of an earlier interrupted run")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    g = p.add_argument_group("a sharded store on Ray (pip install 'zenstore[ray]')")
    g.add_argument("--shards", type=int, default=None, metavar="N",
                   help="load into a sharded store of N shards (created if absent), with Ray Data")
    g.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="run on Ray: a local cluster, or ADDRESS (auto, HOST:PORT, ray://HOST:PORT); "
                        "write it as --ray=ADDRESS or after the inputs")

    p = command("stats", "counts, bytes per part and compression ratio of a store", _cmd_stats)
    p.add_argument("store")
    p.add_argument("--json", action="store_true")

    p = command("search", "search a store with queries from a .npy file", _cmd_search)
    p.add_argument("store")
    p.add_argument("--query", required=True, metavar="FILE.npy", help="(dim,) or (nq, dim) float array")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--shortlist", type=int, default=None)
    p.add_argument("--nprobe", type=_nprobe, default=None, help="base rows to probe, or 'all' (default: calibrated)")
    p.add_argument("--where", default=None, metavar="JSON",
                   help='only rows whose payload matches this filter, e.g. \'{"lang": "en"}\' (docs/api.md, "Filters")')
    p.add_argument("--json", action="store_true", help="one JSON object per query")
    p.add_argument("--output", default=None, help="write here instead of stdout")

    p = command("index", "create, drop or list payload indexes (they speed up --where filters)", _cmd_index)
    p.add_argument("action", choices=("create", "drop", "list"))
    p.add_argument("store")
    p.add_argument("field", nargs="?", default=None, help="payload field (a dotted path, e.g. meta.lang)")
    p.add_argument("--kind", choices=("keyword", "int", "float"), default=None,
                   help="create: keyword (str/bool equality, $in), int or float (numbers, ranges)")
    p.add_argument("--json", action="store_true", help="list: as JSON")

    p = command("verify", "check every checksum and the catalog's consistency", _cmd_verify)
    p.add_argument("store")

    p = command("compact", "rewrite segments without deleted rows", _cmd_compact)
    p.add_argument("store")

    p = command("export", "write ids, payloads and dequantized vectors", _cmd_export)
    p.add_argument("store")
    p.add_argument("output", help="OUT.npy (+ OUT.ids.npy|.ids.json, OUT.payloads.jsonl) or OUT.jsonl")
    p.add_argument("--format", choices=("npy", "jsonl"), default=None, help="default: from OUTPUT's extension")

    p = command("demo", "build and search a small synthetic store, print a report", _cmd_demo)
    p.add_argument("--path", default=None, help="where to build the store (default: a temp dir)")
    p.add_argument("--dim", type=int, default=7680)
    p.add_argument("--docs", type=int, default=5000)
    p.add_argument("--queries", type=int, default=100)

    _add_serve_and_keys(command)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "export" and args.format is None:
        if args.output.endswith((".jsonl", ".npy")):
            args.format = "jsonl" if args.output.endswith(".jsonl") else "npy"
        else:
            parser.error(f"cannot tell the export format from {args.output!r}: name it OUT.npy "
                         f"or OUT.jsonl, or pass --format")
    signals = StopSignals()
    args.hold = signals.held
    signals.install()
    try:
        return args.func(args)
    except ZenstoreError as exc:
        print(f"zenstore {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, ValueError, EOFError) as exc:
        print(f"zenstore {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Interrupted) and exc.signum == signal.SIGTERM
        print(f"\nzenstore {args.command}: {'terminated (SIGTERM)' if terminated else 'interrupted'}; "
              "committed batches are kept, rerun the same command to resume", file=sys.stderr)
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    finally:
        signals.restore()

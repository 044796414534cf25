#!/usr/bin/env python
"""Two on-disk layouts for payload indexes, measured side by side (the choice behind
``zenstore/payload_index.py``):

  rows   (shipped) one record per (segment, field): the distinct value keys, each with its
         sorted row numbers (delta + byte-shuffle + zstd); loaded once per segment and kept,
         a scan is a slice; maintained by writing the new segment's record (no read back)
  ids    an LMDB dupsort sub-database keyed by (field, value key) whose duplicates are the
         8-byte id keys of the rows holding the value; a scan walks the duplicates and maps
         ids to rows (``searchsorted`` on the sorted id column); maintaining it on an upsert
         reads and decodes each replaced id's old payload to delete its old entries

For ``--n`` rows of generated payloads: build time, bytes, the time to resolve a keyword
equality and an int range at 50 / 10 / 1 / 0.1 % selectivity to a row mask (cold: record
read and decoded; warm: the shipped layout's loaded record reused), and the index work of
one upsert batch of ``--batch`` rows (both layouts, same process, medians of ``--repeats``).

    python benchmarks/payload_index_layout.py --n 100000
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _env  # noqa: E402,F401  first: the thread environment

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import lmdb  # noqa: E402
import numpy as np  # noqa: E402

import _common  # noqa: E402
from zenstore import format as fmt  # noqa: E402
from zenstore import payload_index  # noqa: E402
from zenstore.filters import compile_filter  # noqa: E402
from zenstore.validation import encode_payloads  # noqa: E402

SELECTIVITIES = (0.5, 0.1, 0.01, 0.001)


def make_docs(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    cat = np.full(n, "z", dtype=object)
    perm = rng.permutation(n)
    start = 0
    for value, s in zip("abcd", SELECTIVITIES):
        cat[perm[start:start + int(s * n)]] = value
        start += int(s * n)
    rank = rng.permutation(n)
    return [{"cat": cat[i], "rank": int(rank[i]), "title": f"document {i}"} for i in range(n)]


def filters(n: int) -> dict:
    out = {}
    for value, s in zip("abcd", SELECTIVITIES):
        out[f"keyword {s:.1%}"] = {"cat": value}
        out[f"int range {s:.1%}"] = {"rank": {"$lt": int(s * n)}}
    return out


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --- the shipped layout: per-segment row postings -----------------------------------------------


def rows_layout(env, docs, flts, repeats):
    db = env.open_db(b"rows")
    n = len(docs)
    t0 = time.perf_counter()
    records = {}
    for field, kind in (("cat", "keyword"), ("rank", "int")):
        idx = payload_index.Builder(field, kind, n).add(np.arange(n), docs).finish()
        records[field] = payload_index.encode(idx)
    with env.begin(write=True) as txn:
        for field, blob in records.items():
            txn.put(field.encode(), blob, db=db)
    build = time.perf_counter() - t0
    loaded = {}

    def load(field, kind):
        with env.begin() as txn:
            blob = bytes(txn.get(field.encode(), db=db))
        return payload_index.decode(blob, kind, n, field)

    def resolve(spec, cold):
        plan = compile_filter(spec).index_plan({"cat": "keyword", "rank": "int"})
        (scan,) = plan.scans

        def get(field, kind):
            if cold or (field, kind) not in loaded:
                loaded[(field, kind)] = load(field, kind)
            return loaded[(field, kind)]
        return payload_index.scan_mask(scan, get, n)

    out = {"build_seconds": build, "bytes": sum(len(b) for b in records.values()), "resolve_ms": {}}
    for label, spec in flts.items():
        cold = median_time(lambda: resolve(spec, True), repeats)
        warm = median_time(lambda: resolve(spec, False), repeats)
        out["resolve_ms"][label] = {"cold": cold * 1e3, "warm": warm * 1e3, "rows": int(resolve(spec, False).sum())}
    return out


def rows_upsert(docs_new, repeats):
    """One batch: the new segment's records (its payloads are at hand; nothing is read)."""
    def work():
        for field, kind in (("cat", "keyword"), ("rank", "int")):
            idx = payload_index.Builder(field, kind, len(docs_new)).add(np.arange(len(docs_new)), docs_new).finish()
            payload_index.encode(idx)
    return median_time(work, repeats)


# --- the alternative: LMDB dupsort postings of ids -------------------------------------------------


def _idkey(i: int) -> bytes:
    return fmt.id_key(i)


def ids_layout(env, docs, flts, repeats):
    db = env.open_db(b"ids", dupsort=True)
    n = len(docs)
    t0 = time.perf_counter()
    with env.begin(write=True) as txn:
        for field, kind in (("cat", "keyword"), ("rank", "int")):
            pairs, _ = payload_index.index_keys(docs, field, kind)
            prefix = field.encode() + b"\0"
            for pos, key in pairs:
                txn.put(prefix + key, _idkey(pos), db=db, dupdata=True)
    build = time.perf_counter() - t0
    with env.begin() as txn:
        st = txn.stat(db)
    nbytes = (st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]) * st["psize"]
    sorted_ids = np.arange(n, dtype=np.int64)  # the segment's sorted id column (ids = rows here)

    def ids_to_mask(raw: list[bytes]) -> np.ndarray:
        ids = (np.frombuffer(b"".join(k[1:] for k in raw), dtype=">u8").astype(np.uint64)
               ^ np.uint64(1 << 63)).astype(np.int64)
        rows = np.searchsorted(sorted_ids, ids)
        mask = np.zeros(n, dtype=bool)
        mask[rows] = True
        return mask

    def resolve(spec):
        plan = compile_filter(spec).index_plan({"cat": "keyword", "rank": "int"})
        (scan,) = plan.scans
        prefix = scan.field.encode() + b"\0"
        found = []
        with env.begin() as txn, txn.cursor(db=db) as cur:
            if hasattr(scan, "keys"):
                for key in scan.keys():
                    if cur.set_key(prefix + key):
                        found.extend(cur.iternext_dup())
            else:
                lo, hi = scan.key_bounds()
                if cur.set_range(prefix + lo):
                    for k, v in cur:
                        if k > prefix + hi:
                            break
                        found.append(v)
        return ids_to_mask(found)

    out = {"build_seconds": build, "bytes": nbytes, "resolve_ms": {}}
    for label, spec in flts.items():
        t = median_time(lambda: resolve(spec), repeats)
        out["resolve_ms"][label] = {"cold": t * 1e3, "warm": t * 1e3, "rows": int(resolve(spec).sum())}
    return out, db


def ids_upsert(env, db, payload_db, ids, docs_new, repeats):
    """One batch: each replaced id's old payload read and decoded, its old entries deleted,
    the new ones put (then aborted, so every repeat does the same work)."""
    def work():
        txn = env.begin(write=True)
        try:
            for i, doc in zip(ids, docs_new):
                old = fmt.decode_payload(bytes(txn.get(_idkey(i), db=payload_db)), "old")
                for field, kind in (("cat", "keyword"), ("rank", "int")):
                    prefix = field.encode() + b"\0"
                    for _, key in payload_index.index_keys([old], field, kind)[0]:
                        txn.delete(prefix + key, _idkey(i), db=db)
                    for _, key in payload_index.index_keys([doc], field, kind)[0]:
                        txn.put(prefix + key, _idkey(i), db=db, dupdata=True)
        finally:
            txn.abort()
    return median_time(work, repeats)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=1000, help="rows of the upsert batch")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    docs = [json.loads(json.dumps(d)) for d in make_docs(args.n, args.seed)]
    flts = filters(args.n)
    tmp = tempfile.mkdtemp(prefix="zen-layout-")
    try:
        env = lmdb.open(os.path.join(tmp, "x.mdb"), subdir=False, map_size=8 << 30, max_dbs=4, writemap=False)
        payload_db = env.open_db(b"payloads")
        with env.begin(write=True) as txn:
            for i, blob in enumerate(encode_payloads(docs, len(docs))):
                txn.put(_idkey(i), blob, db=payload_db)
        rows = rows_layout(env, docs, flts, args.repeats)
        ids, db = ids_layout(env, docs, flts, args.repeats)
        upsert_ids = list(range(0, args.n, max(1, args.n // args.batch)))[: args.batch]
        new_docs = [dict(docs[i], cat="b") for i in upsert_ids]
        rows["upsert_batch_ms"] = rows_upsert(new_docs, args.repeats) * 1e3
        ids["upsert_batch_ms"] = ids_upsert(env, db, payload_db, upsert_ids, new_docs, args.repeats) * 1e3
        env.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for label in flts:
        assert rows["resolve_ms"][label]["rows"] == ids["resolve_ms"][label]["rows"], label
    res = {"benchmark": "payload_index_layout", "command": _common.rerun_command("benchmarks/payload_index_layout.py", argv),
           "machine": _common.machine_info(), "params": vars(args), "rows_layout": rows, "ids_layout": ids}
    out = args.out or os.path.join(_common.OUT_DIR, f"payload-index-layout-n{args.n}.json")
    return _common.publish(res, out, report)


def report(res: dict) -> str:
    r, i = res["rows_layout"], res["ids_layout"]
    lines = [f"payload index layouts, {res['params']['n']:,} rows (two fields: keyword 'cat', int 'rank')",
             f"  build: rows {r['build_seconds']:.2f} s, ids {i['build_seconds']:.2f} s; "
             f"bytes: rows {r['bytes']:,}, ids {i['bytes']:,}",
             f"  index work of one upsert batch of {res['params']['batch']} rows: rows {r['upsert_batch_ms']:.1f} ms, "
             f"ids {i['upsert_batch_ms']:.1f} ms",
             "  resolve to a row mask, ms (rows cold / rows warm / ids):"]
    for label, v in r["resolve_ms"].items():
        lines.append(f"    {label:<18} {v['rows']:>7,} rows  {v['cold']:8.2f} / {v['warm']:8.3f} / "
                     f"{i['resolve_ms'][label]['cold']:8.2f}")
    lines.append(f"rerun: {res['command']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()

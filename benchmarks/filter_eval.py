#!/usr/bin/env python
"""Throughput of payload filter evaluation: ``Filter.mask`` vs ``Filter.matches`` per row.

Generates ``--n`` payloads like a RAG corpus's (tenant, language, year, price, tags,
nested metadata; a few rows without some fields, a few with odd values), round-trips them
through JSON (the store decodes payloads from JSON, so these are the objects a filter
sees), then for each filter times ``mask(payloads)`` and ``[matches(p) for p in
payloads]`` (median of ``--repeats`` runs each, in the same process, side by side) and
checks the two agree. Reports rows/s, the speed-up, and for scale the rate at which the
same payloads decode from their stored form (what a filter on an unindexed field costs on
top). Not a test.

    python benchmarks/filter_eval.py --n 100000
"""

from __future__ import annotations

import os

os.environ["OMP_WAIT_POLICY"] = "passive"  # as the other benchmark scripts (see docs/benchmarks.md)

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _common  # noqa: E402
import numpy as np  # noqa: E402

from zenstore.filters import compile_filter  # noqa: E402
from zenstore.format import decode_payload  # noqa: E402
from zenstore.validation import encode_payloads  # noqa: E402

TENANTS = [f"t{i:03d}" for i in range(100)]
LANGS = ["en", "de", "fr", "es", "ja"]
TAGS = [f"tag{i}" for i in range(20)]

FILTERS = {
    "keyword eq": {"lang": "en"},
    "int range": {"year": {"$gte": 2020}},
    "keyword AND int range": {"lang": "en", "year": {"$gte": 2020, "$lt": 2024}},
    "tenant $in (10 of 100)": {"tenant": {"$in": TENANTS[:10]}},
    "nested path": {"meta.source": "pdf"},
    "array field (tags)": {"tags": "tag3"},
    "$or / $not / $exists": {"$or": [{"lang": "de"}, {"$not": {"meta.score": {"$lt": 0.5}}}],
                             "price": {"$exists": True}},
    "tenant AND lang AND year AND tags $nin": {"tenant": "t007", "lang": {"$in": ["en", "de"]},
                                               "year": {"$gt": 2010}, "tags": {"$nin": ["tag1", "tag2"]}},
}


def make_payloads(n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    tenant = rng.integers(0, len(TENANTS), n)
    lang = rng.choice(len(LANGS), n, p=[0.5, 0.2, 0.15, 0.1, 0.05])
    year = rng.integers(2000, 2026, n)
    price = np.round(rng.gamma(2.0, 20.0, n), 2)
    n_tags = rng.integers(0, 4, n)
    source = rng.integers(0, 3, n)
    score = rng.random(n)
    docs = []
    for i in range(n):
        doc = {"tenant": TENANTS[tenant[i]], "lang": LANGS[lang[i]], "year": int(year[i]),
               "price": float(price[i]), "tags": [TAGS[j] for j in rng.choice(len(TAGS), n_tags[i], replace=False)],
               "meta": {"source": ("web", "pdf", "email")[source[i]], "score": float(score[i])},
               "title": f"document {i}"}
        if i % 50 == 0:
            del doc["price"]
        if i % 97 == 0:
            doc["year"] = str(doc["year"])  # a dirty row: the year as a string
        docs.append(doc)
    return [json.loads(s) for s in [json.dumps(d) for d in docs]]


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(args, argv) -> dict:
    payloads = make_payloads(args.n, args.seed)
    # what a filter on an unindexed field also pays: decoding the stored payloads
    blobs = encode_payloads(payloads, len(payloads))
    t_decode = _median_seconds(lambda: [decode_payload(b, "payload") for b in blobs], max(1, args.repeats // 2))
    rows = []
    for name, spec in FILTERS.items():
        t0 = time.perf_counter()
        for _ in range(1000):
            compile_filter(spec)
        compile_us = (time.perf_counter() - t0) * 1e3
        f = compile_filter(spec)
        mask = f.mask(payloads)
        per_row = [f.matches(p) for p in payloads]
        if mask.tolist() != per_row:
            raise SystemExit(f"mask and matches disagree on filter {name!r}")
        t_mask = _median_seconds(lambda: f.mask(payloads), args.repeats)
        t_rows = _median_seconds(lambda: [f.matches(p) for p in payloads], max(1, args.repeats // 2))
        rows.append({"filter": name, "spec": spec, "selectivity": float(mask.mean()), "compile_us": compile_us,
                     "mask_s": t_mask, "matches_s": t_rows, "mask_rows_per_s": args.n / t_mask,
                     "matches_rows_per_s": args.n / t_rows, "speedup": t_rows / t_mask})
    return {"benchmark": "filter_eval", "n": args.n, "seed": args.seed, "repeats": args.repeats,
            "machine": _common.machine_info(), "rows": rows,
            "decode_s": t_decode, "decode_rows_per_s": args.n / t_decode,
            "rerun": _common.rerun_command("benchmarks/filter_eval.py", argv)}


def report(result: dict) -> str:
    cols = [("filter", "filter", ""), ("selectivity", "selectivity", ".3f"),
            ("mask_rows_per_s", "mask rows/s", ",.0f"), ("matches_rows_per_s", "matches rows/s", ",.0f"),
            ("speedup", "mask speed-up", ".1f"), ("compile_us", "compile µs", ".1f")]
    return "\n".join([
        f"filter evaluation on {result['n']:,} JSON-decoded payloads, median of {result['repeats']} runs",
        _common.machine_line(result["machine"]), "", _common.table(result["rows"], cols), "",
        f"for scale: decoding the same payloads as stored (zstd + JSON) runs at "
        f"{result['decode_rows_per_s']:,.0f} rows/s", "",
        f"rerun: {result['rerun']}"])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="payloads (default 100000)")
    p.add_argument("--repeats", type=int, default=7, help="timed runs of mask per filter (matches: half)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="JSON result path (default docs/benchmarks/filter-eval-nN.json)")
    return p


def main(argv=None) -> dict:
    if argv is None:
        argv = sys.argv[1:]
    args = build_parser().parse_args(argv)
    result = run(args, argv)
    out = args.out or os.path.join(_common.OUT_DIR, f"filter-eval-n{args.n}.json")
    _common.write_json(out, result)
    print(report(result))
    print(f"json: {out}")
    return result


if __name__ == "__main__":
    main()

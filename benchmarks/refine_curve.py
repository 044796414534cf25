#!/usr/bin/env python
"""Recall@10 vs bytes per vector of the refine tiers (issue 12), from measured runs: a
benchmarks/search.py JSON with the refine methods (zenstore stores with a refine tier,
faiss IVF-RaBitQ + IndexRefineFlat / Refine(SQ8), IndexHNSWFlat) and benchmarks/
refine_study.py JSONs (every tier on the same store's shortlist). Nothing is measured here:
it reads the JSONs and prints one table per data set, sorted by bytes, with the recall
gained over the hot code per extra KB.

    python benchmarks/refine_curve.py docs/benchmarks/search-refine-n100000-d7680.json \\
        docs/benchmarks/refine-study-n100000.json docs/benchmarks/refine-study.json \\
        --out docs/benchmarks/refine-curve.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402


def from_search(res: dict) -> dict:
    """One data set: zenstore tiers at nprobe all / the largest refine_k (its default
    search), the hot code (refine=False rows or plain zenstore rows), and each faiss
    refined method at the best recall of its sweep."""
    p = res["params"]
    name = f"search.py: generated seed {p['seed']}, {p['n']:,} x {p['dim']}, {p['nq']} queries"
    pts = []
    rows = res["rows"]
    hot = [r for r in rows if r["method"] == "zenstore" and r.get("recall@10") is not None]
    if hot:
        best = max(hot, key=lambda r: r["recall@10"])
        pts.append({"what": "zenstore hot code only", "config": best["config"], "hot": best["bytes_per_vector"],
                    "refine": 0, "recall@10": best["recall@10"], "where": "RAM"})
    for r in rows:  # the full scan: nprobe "all" (None in JSONs from before the calibrated default)
        if r["method"].startswith("zenstore refine=") and r.get("refine") and r["nprobe"] in (None, "all") and \
                r["refine_k"] == max(p.get("refine_ks", [100])) and \
                r.get("shortlist") == (p.get("refine_shortlists") or [None])[0]:
            pts.append({"what": f"zenstore + {r['tier']}", "config": r["config"], "hot": r["hot_bytes_per_vector"],
                        "refine": r["refine_bytes_per_vector"], "recall@10": r["recall@10"],
                        "rows_refined": r.get("rows_refined_mean"), "where": "hot RAM, refine disk (mmap)"})
    for method in ("faiss IVF-RaBitQ + Refine(SQ8)", "faiss IVF-RaBitQ + IndexRefineFlat", "faiss IndexHNSWFlat"):
        ms = [r for r in rows if r["method"] == method and r.get("recall@10") is not None]
        if ms:
            b = max(ms, key=lambda r: r["recall@10"])
            pts.append({"what": method, "config": b["config"] + " (best of the sweep)",
                        "hot": b.get("hot_bytes_per_vector", b["bytes_per_vector"]),
                        "refine": b.get("refine_bytes_per_vector", 0), "recall@10": b["recall@10"], "where": "RAM"})
    return {"dataset": name, "source": res.get("json"), "points": pts}


def from_study(res: dict, refine_k: str = "100") -> list[dict]:
    out = []
    for ds in res["datasets"]:
        pts = []
        for t in ds["tiers"]:
            if t["tier"] == "float32":
                continue
            pts.append({"what": "zenstore hot code only" if t["tier"] == "hot" else f"study: {t['tier']}",
                        "config": f"shortlist {refine_k}", "hot": ds["hot_bytes_per_vector"],
                        "refine": t["bytes_per_vector"], "recall@10": t["recall@10"][refine_k],
                        "where": "study (same shortlist)"})
        out.append({"dataset": f"refine_study.py: {ds['dataset']}, {ds['n']:,} x {ds['dim']}, {ds['queries']} queries",
                    "source": res.get("json"), "points": pts})
    return out


def curve(sets: list[dict]) -> list[dict]:
    for s in sets:
        hot = next((p["recall@10"] for p in s["points"] if p["what"] == "zenstore hot code only"), None)
        for p in s["points"]:
            p["total"] = p["hot"] + p["refine"]
            p["recall_gain_per_kb"] = ((p["recall@10"] - hot) / (p["refine"] / 1000)
                                       if hot is not None and p["refine"] and p["what"].startswith(("zenstore", "study"))
                                       else None)
        s["points"].sort(key=lambda p: (p["total"], p["what"]))
    return sets


def report(res: dict) -> str:
    lines = []
    cols = [("what", "tier / method", ""), ("config", "config", ""), ("hot", "hot B/vec", ",.0f"),
            ("refine", "refine B/vec", ",.0f"), ("total", "total B/vec", ",.0f"), ("recall@10", "recall@10", ".4f"),
            ("recall_gain_per_kb", "recall gain per refine KB", ".4f"), ("where", "where the bytes are", "")]
    for s in res["sets"]:
        lines += [f"**{s['dataset']}** ({s['source']})", "", _common.table(s["points"], cols), ""]
    lines.append(f"rerun: {res['command']}")
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", help="search.py (with refine methods) and refine_study.py JSONs")
    p.add_argument("--refine-k", default="100", help="study shortlist depth to read (default 100)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    sets = []
    for path in args.inputs:
        with open(path) as f:
            res = json.load(f)
        res.setdefault("json", path)
        if res.get("benchmark") == "search":
            sets.append(from_search(res))
        elif res.get("benchmark") == "refine_study":
            sets += from_study(res, args.refine_k)
        else:
            raise SystemExit(f"{path}: not a search.py or refine_study.py JSON")
    out = {"benchmark": "refine_curve", "command": _common.rerun_command("benchmarks/refine_curve.py", argv),
           "sets": curve(sets)}
    text = report(out)
    print(text)
    if args.out:
        _common.write_json(args.out, out)
    return out


if __name__ == "__main__":
    main()

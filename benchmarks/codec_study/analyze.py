"""Aggregate results/*.jsonl into markdown tables (mean over seeds, [min..max] where >1 seed)."""
import json, sys
from collections import defaultdict
import numpy as np


def load(p):
    try:
        return [json.loads(l) for l in open(p)]
    except FileNotFoundError:
        return []


def fmt(v, pct=True, rng=True):
    v = np.asarray(v, float)
    m = v.mean() * (100 if pct else 1)
    if len(v) > 1 and rng:
        return f"{m:.1f} [{v.min() * 100:.1f}-{v.max() * 100:.1f}]" if pct else f"{m:.3f}"
    return f"{m:.1f}" if pct else f"{m:.4f}"


def agg(rows, keyf, valf):
    g = defaultdict(list)
    for r in rows:
        g[keyf(r)].append(valf(r))
    return g


def real_tables(rows):
    out = []
    for ds in ("scifact-minilm", "cranfield-minilm", "cranfield-mpnet"):
        R = [r for r in rows if r["ds"] == ds and r["kind"] == "codec"]
        if not R:
            continue
        labs = list(R[0]["ret"].keys())
        fl = [r for r in rows if r["ds"] == ds and r["kind"] == "float"][0]["ndcg"]
        out.append(f"\n### {ds}: NDCG@10 retention % (codec/float; float = {', '.join(f'{k} {v:.4f}' for k, v in fl.items())}), "
                   f"mean [min-max] over seeds; recall@10 vs float top-10 (all queries)\n")
        nbs = sorted({r["nb"] for r in R})
        for lab in labs + ["recall10"]:
            out.append(f"\n**{lab if lab == 'recall10' else 'retention ' + lab}**\n")
            out.append("| rot | n_base | est | " + " | ".join(f"nb={nb}" for nb in nbs) + " |")
            out.append("|---|---|---|" + "---|" * len(nbs))
            g = agg(R, lambda r: (r["rot"], r["n_base"], r["est"], r["nb"]),
                    lambda r: r["recall10"] if lab == "recall10" else r["ret"][lab])
            for rot in ("none", "hadamard", "dense"):
                for nbase in sorted({r["n_base"] for r in R}):
                    for est in ("l2", "unb", "unbp"):
                        if (rot, nbase, est, 1) not in g:
                            continue
                        out.append(f"| {rot} | {nbase} | {est} | " + " | ".join(fmt(g[(rot, nbase, est, nb)]) for nb in nbs) + " |")
    return "\n".join(out)


def shortlist_tables(rows, dskey, dsval, nb_list=(1,), ests=("unb",)):
    R = [r for r in rows if r.get(dskey) == dsval and r["kind"] == "shortlist"]
    if not R:
        return ""
    C = {(r["rot"], r["n_base"], r["est"], r["nb"], r["seed"]): r["recall10"] for r in rows
         if r.get(dskey) == dsval and r["kind"] == "codec"}
    out = []
    Ls = sorted({r["L"] for r in R})
    g = agg(R, lambda r: (r["rot"], r["n_base"], r["est"], r["nb"], r["proxy"], r["L"]), lambda r: r["recall10"])
    out.append(f"\n| rot | n_base | est/nb | proxy | " + " | ".join(f"L={L}" for L in Ls) + " | all (no shortlist) |")
    out.append("|---|---|---|---|" + "---|" * (len(Ls) + 1))
    for rot in ("none", "hadamard", "dense"):
        for nbase in sorted({r["n_base"] for r in R}):
            for est in ests:
                for nb in nb_list:
                    full = [v for k, v in C.items() if k[:4] == (rot, nbase, est, nb)]
                    for proxy in ("hamming", "q1bit", "q2bit", "q4bit"):
                        if (rot, nbase, est, nb, proxy, Ls[0]) not in g:
                            continue
                        out.append(f"| {rot} | {nbase} | {est}/{nb} | {proxy} | " +
                                   " | ".join(fmt(g[(rot, nbase, est, nb, proxy, L)], rng=False) for L in Ls) +
                                   f" | {fmt(full, rng=False)} |")
    return "\n".join(out)


def synth_tables(rows):
    out = []
    for dim, N in sorted({(r["dim"], r["N"]) for r in rows}):
        R = [r for r in rows if r["dim"] == dim and r["N"] == N and r["kind"] == "codec"]
        nbs = sorted({r["nb"] for r in R})
        out.append(f"\n### synthetic dim={dim} N={N}: recall@10 (%) vs exact float top-10, 500 queries\n")
        out.append("| rot | n_base | est | " + " | ".join(f"nb={nb}" for nb in nbs) + " | bytes/vec (code, nb=1 / nb=2) + base amortised |")
        out.append("|---|---|---|" + "---|" * (len(nbs) + 1))
        g = agg(R, lambda r: (r["rot"], r["n_base"], r["est"], r["nb"]), lambda r: r["recall10"])
        by = {(r["n_base"], r["nb"]): (r["bytes_code"], r["bytes_base_amort"]) for r in R}
        for rot in ("none", "hadamard", "dense"):
            for nbase in sorted({r["n_base"] for r in R}):
                for est in ("l2", "unb", "unbp"):
                    if (rot, nbase, est, 1) not in g:
                        continue
                    b1, b2 = by[(nbase, 1)], by[(nbase, 2)]
                    out.append(f"| {rot} | {nbase} | {est} | " + " | ".join(fmt(g[(rot, nbase, est, nb)]) for nb in nbs)
                               + f" | {b1[0]:.0f} / {b2[0]:.0f} + {b1[1]:.1f} |")
        out.append(f"\n#### shortlist (dim={dim}, N={N}): recall@10 (%) after exact-estimator rescoring of the top-L by proxy\n")
        out.append(shortlist_tables([r for r in rows if r["N"] == N], "dim", dim))
    return "\n".join(out)


if __name__ == "__main__":
    what = sys.argv[1]
    if what == "real":
        rows = load("results/real.jsonl")
        print(real_tables(rows))
        for ds in ("scifact-minilm", "cranfield-minilm", "cranfield-mpnet"):
            print(f"\n### shortlist {ds}: recall@10 (%) vs float top-10\n")
            print(shortlist_tables(rows, "ds", ds))
    elif what == "synth":
        print(synth_tables(load("results/synth.jsonl")))

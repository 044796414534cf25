#!/usr/bin/env python
"""Refine-tier study (issue 12): which extra bits per vector bring recall@10 vs exact float
search to ~0.99, and how few shortlisted rows a query needs to refine.

For every data set a real store is built with the public API (``Store.create`` +
``add``, default options, cosine); its shortlist is ``store.search_batch(Q, k=refine_k)``
(default shortlist), whose scores are the hot estimates. The shortlist is then rescored
with each candidate tier and the best 10 kept:

  codec tiers (zenstore/refine.py; scored through the kernels from the stored row bytes,
  and checked against the numpy reference of the decoded vectors):
    int8          int8 of e = x - x_hat (the hot reconstruction's residual), float32 scale
    magnitude<m>  m = 1, 2, 3, 4, 8 magnitude bits of r = x - c reusing the hot sign bits,
                  + lam along c
  prototypes (numpy, this file), for comparison:
    int8 of the rotated vector / of r = x - c (per-vector scale)
    sign planes 1-4: successive BitDelta of e (plane j = signs of what planes < j left,
                     least-squares fp16 scale; 960 B + 2 B each at 7680-d)
    int4 of r (per-vector scale; per-64-dim fp16 scales), int4 of e (per-64-dim scales)
    int8 of e with per-64-dim fp16 scales; int16 of e (a 2-byte ceiling)
    magnitude3 without lam (ablation)

Data: generated 7680-d docs (zenstore.synth via tools/gendata.py, two profiles with
different generator parameters and seeds: held-out data, not one generator), and the real
collections in ``--real-data`` (SciFact MiniLM 384-d with its test and train queries,
Cranfield MPNet 768-d). Real sets also get NDCG@10 retention vs float32, in full retrieval
and in the rerank use (first stage BM25 top-100 for SciFact, MiniLM float top-100 for
Cranfield; then the tier rescores the 100).

The error-bound part: for a pool of ``--pool`` shortlisted candidates, the hot estimate's
error vs the exact score, its distribution relative to the stored scale ``s`` and the
query's part orthogonal to the base row (zenstore/refine.py ``error_slack``; "oracle":
the exact per-row ||x - x_hat|| instead, which would cost a stored scalar), and the rows
refined / recall kept by ``refine.bounded_refine`` in rounds of 10 rows and sequentially
(step 1), at several multipliers, next to fixed refine_k.

    python benchmarks/refine_study.py                       # ~1 h on a busy 2-core VM
    python benchmarks/refine_study.py --smoke --data-dir /tmp/rs --out /tmp/rs/s.json
    python benchmarks/refine_study.py --summarize docs/benchmarks/refine-study.json   # tables

Writes docs/benchmarks/refine-study.json (or ``--out``) and prints markdown tables.
"""

from __future__ import annotations

import os

os.environ["OMP_WAIT_POLICY"] = "passive"  # before numpy/numba/faiss load OpenMP
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # idle BLAS threads sleep (see zenstore/kernels/_threads.py)

import argparse  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import _common  # noqa: E402
from _common import gendata  # noqa: E402

K = 10
CHUNK = 2048
F16 = np.float16

# Two generator profiles: A is the default generator (seed 1); B has 4x the topics, a
# flatter spectrum, more noise and noisier queries (seed 2).
PROFILES = {
    "A": dict(seed=1),
    "B": dict(seed=2, n_topics=1024, rank=512, spectrum_decay=0.6, mean_weight=0.45, topic_weight=0.5,
              factor_weight=0.65, noise_weight=0.55, query_noise=0.45),
}


def log(msg: str) -> None:
    print(msg, flush=True)


# --- prototype quantizers (numpy) ------------------------------------------------------------


def _f16(v):
    return np.asarray(v, np.float32).astype(F16).astype(np.float32)


def uniform_sym(v: np.ndarray, bits: int, block: int, fp16_scale: bool) -> np.ndarray:
    """Symmetric uniform code (levels -L..L, L = 2^(bits-1) - 1) with one max-scaled scale
    per ``block`` dims, decoded."""
    n, d = v.shape
    vb = v.reshape(n, d // block, block)
    lim = 2 ** (bits - 1) - 1
    step = np.abs(vb).max(-1, keepdims=True) / lim
    step = _f16(step) if fp16_scale else step.astype(np.float32)
    safe = np.where(step > 0, step, 1.0)
    code = np.clip(np.rint(vb / safe), -lim, lim)
    return (code * step).reshape(n, d).astype(np.float32)


def sign_planes(e: np.ndarray, planes: int) -> list[np.ndarray]:
    """Successive BitDelta planes of ``e``: the decoded sum after 1..planes planes."""
    e = e.astype(np.float32).copy()
    out = np.zeros_like(e)
    sums = []
    for _ in range(planes):
        b = np.where(e > 0, 1.0, -1.0).astype(np.float32)
        s = _f16(np.abs(e).mean(axis=1, keepdims=True))  # least-squares scale for these signs
        out += s * b
        e -= s * b
        sums.append(out.copy())
    return sums


def magnitude_no_lam(r, signs, bits):
    from zenstore import refine as R

    v = R.magnitude_levels(r, signs, bits)
    scale = (np.einsum("ij,ij->i", r, v, dtype=np.float64) / np.einsum("ij,ij->i", v, v, dtype=np.float64))
    return scale.astype(np.float32)[:, None] * v


def tier_list(dim: int, metric: str = "cosine") -> list[dict]:
    """Every tier measured: name, refine bytes per vector, how it is computed."""
    from zenstore.refine import RefineTier

    d = dim
    tiers = [{"tier": "float32", "bytes": 4 * d, "kind": "reference", "what": "the original vector"},
             {"tier": "hot", "bytes": 0, "kind": "reference", "what": "no refine tier (964 B at 7680-d)"}]
    for t in [RefineTier("int8")] + [RefineTier("magnitude", b) for b in (1, 2, 3, 4, 8)]:
        tiers.append({"tier": t.name, "bytes": t.row_bytes(d, metric), "kind": "codec", "codec": t,
                      "what": "int8 of e = x - x_hat, f32 scale" if t.kind == "int8"
                      else f"{t.bits} magnitude bits of r reusing the hot signs, f32 scale + fp16 lam"})
    proto = [
        ("int8 vec", d + 4, "int8 of the rotated vector, f32 scale"),
        ("int8 r", d + 4, "int8 of r = x - c, f32 scale"),
        ("planes1", 1 * (d // 8 + 2), "1 sign plane of e, fp16 scale"),
        ("planes2", 2 * (d // 8 + 2), "2 successive sign planes of e"),
        ("planes3", 3 * (d // 8 + 2), "3 successive sign planes of e"),
        ("planes4", 4 * (d // 8 + 2), "4 successive sign planes of e"),
        ("int4 r vec", d // 2 + 4, "int4 of r, per-vector f32 scale"),
        ("int4 r b64", d // 2 + 2 * (d // 64), "int4 of r, fp16 scale per 64 dims"),
        ("int4 e b64", d // 2 + 2 * (d // 64), "int4 of e, fp16 scale per 64 dims"),
        ("int8 e b64", d + 2 * (d // 64), "int8 of e, fp16 scale per 64 dims"),
        ("int16 e", 2 * d + 4, "int16 of e, f32 scale (a 2-byte ceiling)"),
        ("magnitude3 no lam", 3 * d // 8 + 4, "magnitude3 without the lam correction (ablation)"),
    ]
    tiers += [{"tier": n, "bytes": b, "kind": "prototype", "what": w} for n, b, w in proto]
    return tiers


def decode_chunk(tiers: list[dict], xr, c, xh, hot_codes, metric: str) -> dict:
    """Rotated reconstructions of one chunk of docs under every tier."""
    from zenstore import refine as R
    from zenstore.kernels import unpack_signs

    r = xr - c
    e = xr - xh
    signs = unpack_signs(hot_codes)
    out = {"float32": xr, "hot": xh}
    planes = sign_planes(e, 4)
    for t in tiers:
        name = t["tier"]
        if t["kind"] == "codec":
            b = R.encode(t["codec"], xr, c, xh, hot_codes, metric)
            out[name] = R.decode(t["codec"], b, c, xh, hot_codes)
        elif name == "int8 vec":
            out[name] = uniform_sym(xr, 8, xr.shape[1], False)
        elif name == "int8 r":
            out[name] = c + uniform_sym(r, 8, r.shape[1], False)
        elif name.startswith("planes"):
            out[name] = xh + planes[int(name[-1]) - 1]
        elif name == "int4 r vec":
            out[name] = c + uniform_sym(r, 4, r.shape[1], False)
        elif name == "int4 r b64":
            out[name] = c + uniform_sym(r, 4, 64, True)
        elif name == "int4 e b64":
            out[name] = xh + uniform_sym(e, 4, 64, True)
        elif name == "int8 e b64":
            out[name] = xh + uniform_sym(e, 8, 64, True)
        elif name == "int16 e":
            out[name] = xh + uniform_sym(e, 16, e.shape[1], False)
        elif name == "magnitude3 no lam":
            out[name] = c + magnitude_no_lam(r, signs, 3)
    return out


# --- a data set: store, hot encodings, tier scores ------------------------------------------


class Prepared:
    """A built store plus everything the study needs about its rows (rotated space)."""

    def __init__(self, name, docs, queries, seed, workdir, tiers, metric="cosine", log_prefix=""):
        import zenstore

        self.name, self.docs, self.Q = name, docs, np.ascontiguousarray(queries, np.float32)
        n, d = docs.shape
        self.n, self.d = n, d
        self.path = tempfile.mkdtemp(prefix="refine-", dir=workdir)
        t0 = time.perf_counter()
        self.store = zenstore.Store.create(os.path.join(self.path, "s.zen"), dim=d, metric=metric, seed=seed)
        for a in range(0, n, 20000):
            self.store.add(np.arange(a, min(n, a + 20000)), docs[a:a + 20000])
        self.build_s = time.perf_counter() - t0
        self.codec = self.store.snapshot().codec  # the store's own codec (same encoder as add)
        self.Qr = self.codec.prepare(self.Q)
        self.qoff = (self.Qr @ self.codec.base.T).astype(np.float32)
        self.tiers = tiers
        self.metric = metric
        log(f"{log_prefix}{name}: store of {n:,} x {d} built in {self.build_s:.0f} s ({self.codec.n_base} base rows)")

    def close(self):
        self.store.close()
        shutil.rmtree(self.path, ignore_errors=True)

    def encode_rows(self):
        """Hot fields of every doc (deterministic: the store's encoder) and the per-doc
        quantities of the bound study, in doc order."""
        from zenstore import refine as R

        n, d = self.n, self.d
        self.groups = np.empty(n, np.int64)
        self.hot_codes = np.empty((n, d // 64), np.uint64)
        self.hot_scales = np.empty(n, np.float32)
        self.err_norm = np.empty(n, np.float32)  # ||x - x_hat||, the oracle per-row scalar
        self.rows = {t["tier"]: np.empty((n, t["bytes"]), np.uint8) for t in self.tiers if t["kind"] == "codec"}
        self.rel_err = Counter()
        for a in range(0, n, CHUNK):
            x = np.ascontiguousarray(self.docs[a:a + CHUNK], np.float32)
            hot = self.codec.encode(x)
            xr = self.codec.prepare(x)
            c = self.codec.base[hot.groups]
            xh = self.codec.dequantize_rotated(hot.groups, hot.codes, hot.scales, hot.aux)
            sl = slice(a, a + len(x))
            self.groups[sl], self.hot_codes[sl] = hot.groups, hot.codes
            self.hot_scales[sl] = hot.scales.astype(np.float32).mean(axis=1)
            self.err_norm[sl] = np.linalg.norm(xr - xh, axis=1)
            for t in self.tiers:
                if t["kind"] == "codec":
                    b = R.encode(t["codec"], xr, c, xh, hot.codes, self.metric)
                    self.rows[t["tier"]][sl] = R.to_rows(t["codec"], b, d, self.metric)
            yield sl, xr, c, xh, hot

    def score_all(self, needed_docs: np.ndarray | None = None):
        """Dense (nq, n) rotated-space scores of every tier (numpy reference of the decoded
        vectors), and per-doc error stats."""
        self.S = {t["tier"]: np.empty((len(self.Q), self.n), np.float32) for t in self.tiers}
        sse = Counter()
        tot = 0.0
        for sl, xr, c, xh, hot in self.encode_rows():
            rec = decode_chunk(self.tiers, xr, c, xh, hot.codes, self.metric)
            tot += float((xr.astype(np.float64) ** 2).sum())
            for name, xhat in rec.items():
                self.S[name][:, sl] = self.Qr @ xhat.T
                sse[name] += float(((xhat - xr).astype(np.float64) ** 2).sum())
        self.rel_mse = {k: v / tot for k, v in sse.items()}

    def kernel_scores(self, tier_name: str, qidx: np.ndarray, doc: np.ndarray, hot_ip: np.ndarray) -> np.ndarray:
        """Refined ranking values of (query, doc) pairs the way a store would compute them:
        gather the stored row bytes, parse, kernel dot products, refine.refined_ip."""
        import numba

        from zenstore import refine as R
        from zenstore.kernels import refine as K

        t = next(t for t in self.tiers if t["tier"] == tier_name)["codec"]
        batch = R.from_rows(t, self.rows[tier_name][doc], self.d, self.metric)
        out = np.empty(len(doc), np.float32)
        chunks = 4 * numba.get_num_threads()
        hot = self.hot_codes[doc]
        at = np.arange(len(doc), dtype=np.int64)  # the gathered rows, in order
        if t.kind == "int8":
            K.int8_dots(batch.codes.view(np.int8), at, self.Qr, qidx, out, chunks)
        else:
            K.magnitude_dots(batch.codes, hot.view(np.uint8), at, t.bits, self.Qr, qidx, out, chunks)
        base_ip = self.qoff[qidx, self.groups[doc]]
        ip = R.refined_ip(t, batch, self.Qr, qidx, hot_ip=hot_ip, base_ip=base_ip, hot_codes=hot, dots=out)
        return R.ranking_values(ip, batch, self.metric)


def refine_top(S: np.ndarray, ids: np.ndarray, k: int = K, drop=None) -> np.ndarray:
    """Best ``k`` of each query's shortlist ``ids`` (-1 = empty) by the tier scores ``S``."""
    ids = np.asarray(ids, np.int64)
    v = np.where(ids >= 0, np.take_along_axis(S, np.maximum(ids, 0), axis=1), -np.inf)
    order = np.argsort(-v, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ids, order, axis=1)


def recall10(found: np.ndarray, truth: np.ndarray) -> float:
    return _common.recall_at(found, truth, K)


# --- recall of every tier at each refine_k ---------------------------------------------------


def shortlists(p: Prepared, refine_ks: list[int]) -> dict:
    out = {}
    for rk in sorted(set(refine_ks) | {K}):
        ids, scores = p.store.search_batch(p.Q, k=rk)
        out[rk] = (np.asarray(ids, np.int64), np.asarray(scores, np.float32))
    return out


def check_consistency(p: Prepared, sls: dict) -> dict:
    """The study's numpy scores agree with the store (hot) and with the kernel path (codec
    tiers) at the shortlisted pairs: max abs differences."""
    rk = max(sls)
    ids, scores = sls[rk]
    ok = ids >= 0
    qidx = np.nonzero(ok)[0].astype(np.int64)
    doc = ids[ok]
    res = {"hot_vs_store": float(np.abs(p.S["hot"][qidx, doc] - scores[ok]).max())}
    for t in p.tiers:
        if t["kind"] == "codec":
            kv = p.kernel_scores(t["tier"], qidx, doc, scores[ok])
            res[t["tier"] + "_kernel_vs_numpy"] = float(np.abs(kv - p.S[t["tier"]][qidx, doc]).max())
    return res


def tier_rows(p: Prepared, sls: dict, truth: np.ndarray, refine_ks: list[int]) -> list[dict]:
    rows = []
    for t in p.tiers:
        rec = {}
        for rk in refine_ks:
            rec[str(rk)] = recall10(refine_top(p.S[t["tier"]], sls[rk][0]), truth)
        rows.append({"tier": t["tier"], "kind": t["kind"], "what": t["what"], "bytes_per_vector": t["bytes"],
                     "rel_mse": p.rel_mse[t["tier"]], "recall@10": rec})
    return rows


# --- the error bound ---------------------------------------------------------------------------


def _quantiles(v: np.ndarray) -> dict:
    v = np.asarray(v, np.float64)
    qs = (0.5, 0.9, 0.99, 0.999)
    return {**{f"p{int(q * 1000) / 10:g}": float(np.quantile(v, q)) for q in qs}, "max": float(v.max()),
            "mean": float(v.mean())}


def bound_study(p: Prepared, pool: int, truth: np.ndarray, refine_ks: list[int], multipliers: list[float],
                tiers=("int8", "magnitude8", "magnitude3", "magnitude4")) -> dict:
    """Error of the hot estimate over each query's pool and what the bounded rules refine."""
    from zenstore import refine as R

    ids, est = p.store.search_batch(p.Q, k=pool)
    ids, est = np.asarray(ids, np.int64), np.asarray(est, np.float32)
    valid = ids >= 0
    safe = np.maximum(ids, 0)
    nq = len(p.Q)
    exact = np.take_along_axis(p.S["float32"], safe, axis=1)
    err = np.where(valid, est - exact, 0.0)
    s = p.hot_scales[safe]
    g = p.groups[safe]
    base_ip = np.take_along_axis(p.qoff, g, axis=1)
    csq = p.codec.base_sqnorm[g]
    qsq = (p.Qr.astype(np.float64) ** 2).sum(1)[:, None]
    unit = R.error_slack(s[..., None], base_ip, csq, np.broadcast_to(qsq, s.shape), 1.0)
    qperp = np.divide(unit, s, out=np.zeros_like(unit), where=s > 0)
    oracle_unit = p.err_norm[safe] * qperp / math.sqrt(p.d)
    top10 = np.zeros_like(valid)
    for i in range(nq):
        top10[i] = np.isin(ids[i], truth[i, :K])
    sel = valid
    z = np.abs(err[sel]) / np.maximum(unit[sel], 1e-30)
    zo = np.abs(err[sel]) / np.maximum(oracle_unit[sel], 1e-30)
    ratio = p.err_norm / np.maximum(p.hot_scales * math.sqrt(p.d), 1e-30)
    res = {
        "pool": pool, "pairs": int(sel.sum()),
        "abs_err": _quantiles(np.abs(err[sel])),
        "z_scale": _quantiles(z),
        "z_scale_true_top10": _quantiles((np.abs(err) / np.maximum(unit, 1e-30))[top10 & valid]),
        "z_oracle": _quantiles(zo),
        "err_norm_over_s_sqrt_d": _quantiles(ratio),
        "qperp_norm": _quantiles(qperp[sel]),
        "mean_signed_err_true_top10": float(err[top10 & valid].mean()),
        "mean_signed_err_all": float(err[sel].mean()),
        "corr_abs_err_vs_unit": float(np.corrcoef(np.abs(err[sel]), unit[sel])[0, 1]),
        "rules": [],
    }
    for tname in tiers:
        if tname not in p.S:
            continue
        refined = np.take_along_axis(p.S[tname], safe, axis=1)
        fixed = {}
        for rk in refine_ks:
            fixed[str(rk)] = recall10(refine_top(p.S[tname], ids[:, :rk]), truth)

        def score(qi, pi, refined=refined):
            return refined[qi, pi]

        for label, base_unit in (("scale", unit), ("oracle", oracle_unit)):
            for m in multipliers:
                slack = m * base_unit
                pos, _, n_ref = R.bounded_refine(est, slack, valid, K, score)  # rounds of K rows
                seq_pos, _, n_seq = R.bounded_refine(est, slack, valid, K, score, step=1)
                res["rules"].append({
                    "tier": tname, "bound": label, "multiplier": m,
                    "coverage": float((np.abs(err[sel]) <= slack[sel]).mean()),
                    "recall@10": recall10(_found(ids, pos), truth),
                    "rows_refined": _quantiles(n_ref), "rows_refined_sequential": _quantiles(n_seq),
                    "recall@10_sequential": recall10(_found(ids, seq_pos), truth)})
        res["rules"].append({"tier": tname, "bound": "fixed refine_k", "recall@10_by_refine_k": fixed})
    return res


def _found(ids: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return np.where(pos >= 0, np.take_along_axis(ids, np.maximum(pos, 0), axis=1), -1)


# --- real collections: NDCG --------------------------------------------------------------------


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def bm25_top(corpus: list[str], queries: list[str], depth: int, k1: float = 1.2, b: float = 0.75) -> np.ndarray:
    """(nq, depth) doc indices by BM25 (lowercase alphanumeric tokens)."""
    docs = [Counter(_tokens(t)) for t in corpus]
    lens = np.array([sum(d.values()) for d in docs], np.float64)
    avg = lens.mean()
    postings: dict = {}
    for i, d in enumerate(docs):
        for term, tf in d.items():
            postings.setdefault(term, []).append((i, tf))
    n = len(docs)
    out = np.zeros((len(queries), depth), np.int64)
    for qi, q in enumerate(queries):
        sc = np.zeros(n)
        for term in set(_tokens(q)):
            plist = postings.get(term)
            if not plist:
                continue
            idx = np.array([p[0] for p in plist])
            tf = np.array([p[1] for p in plist], np.float64)
            idf = math.log(1 + (n - len(plist) + 0.5) / (len(plist) + 0.5))
            sc[idx] += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * lens[idx] / avg))
        out[qi] = np.argsort(-sc, kind="stable")[:depth]
    return out


def _read_jsonl(path):
    import json

    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def real_sets(root: str) -> list[dict]:
    """The real collections available under ``root`` with their query splits."""
    import beir

    sets = []
    for coll, emb, splits, first, keep in (
            ("scifact", "emb-minilm-l6-v2", ("qrels/test.tsv", "qrels/train.tsv"), "bm25", False),
            ("cranfield", "emb-mpnet-base-v2", ("qrels/test.tsv",), "emb-minilm-l6-v2", True)):
        cdir = os.path.join(root, coll)
        if not os.path.isdir(os.path.join(cdir, emb)):
            continue
        data = beir.load_embeddings(cdir, emb)
        sets.append({"collection": coll, "emb": emb, "dir": cdir, "data": data, "keep_identical": keep,
                     "splits": [(s, beir.load_qrels(os.path.join(cdir, s))) for s in splits], "first": first})
    return sets


def first_stage(rs: dict, depth: int = 100) -> np.ndarray:
    """(n_queries, depth) doc indices of the first stage for every query of the set."""
    import beir

    data = rs["data"]
    if rs["first"] == "bm25":
        corpus = {d["_id"]: (d.get("title", "") + " " + d.get("text", "")).strip()
                  for d in _read_jsonl(os.path.join(rs["dir"], "corpus.jsonl"))}
        queries = {q["_id"]: q["text"] for q in _read_jsonl(os.path.join(rs["dir"], "queries.jsonl"))}
        return bm25_top([corpus[i] for i in data["dids"]], [queries[q] for q in data["qids"]], depth)
    other = beir.load_embeddings(rs["dir"], rs["first"])
    if other["dids"] != data["dids"] or other["qids"] != data["qids"]:
        raise SystemExit(f"{rs['dir']}: {rs['first']} rows are not in the same order as {rs['emb']}")
    S = other["Q"] @ other["D"].T
    return np.argsort(-S, axis=1, kind="stable")[:, :depth]


def ndcg_rows(p: Prepared, rs: dict, sls: dict, fs: np.ndarray, refine_ks: list[int]) -> list[dict]:
    """NDCG@10 per tier: full retrieval (shortlist refine_k -> tier -> top 10) and rerank
    (first stage top-100 -> tier -> top 10); retention vs float32 on the same pipeline."""
    import beir

    data = rs["data"]
    dids = data["dids"]
    out = []
    for split, qrels in rs["splits"]:
        qpos = {q: i for i, q in enumerate(data["qids"])}
        use = [q for q in qrels if q in qpos]
        rows_q = np.array([qpos[q] for q in use])
        extra = 0 if rs["keep_identical"] else 1

        def ev(ranked_idx):
            ranked = [[dids[j] for j in row if j >= 0] for row in ranked_idx[rows_q]]
            return beir.evaluate(ranked, use, qrels, rs["keep_identical"])["ndcg@10"]

        base = {"full": {}, "rerank": ev(refine_top(p.S["float32"], fs, K + extra))}
        for rk in refine_ks:
            base["full"][str(rk)] = ev(refine_top(p.S["float32"], sls[rk + extra][0], K + extra))
        exact_full = ev(np.argsort(-p.S["float32"], axis=1, kind="stable")[:, :K + extra])
        for t in p.tiers:
            full = {str(rk): ev(refine_top(p.S[t["tier"]], sls[rk + extra][0], K + extra)) for rk in refine_ks}
            rer = ev(refine_top(p.S[t["tier"]], fs, K + extra))
            out.append({"split": split, "tier": t["tier"], "bytes_per_vector": t["bytes"],
                        "ndcg@10_full": full, "retention_full": {k: v / exact_full for k, v in full.items()},
                        "ndcg@10_rerank": rer, "retention_rerank": rer / base["rerank"],
                        "float_ndcg@10_exact": exact_full, "float_ndcg@10_rerank": base["rerank"]})
    return out


# --- the runs ---------------------------------------------------------------------------------


def run_dataset(name, docs, Q, truth, args, seed, rs=None) -> dict:
    tiers = tier_list(docs.shape[1])
    if args.tiers:
        unknown = set(args.tiers) - {t["tier"] for t in tiers}
        if unknown:
            raise SystemExit(f"unknown tier(s) {sorted(unknown)}; known: {[t['tier'] for t in tiers]}")
        tiers = [t for t in tiers if t["tier"] in set(args.tiers) | {"float32", "hot"}]
    p = Prepared(name, docs, Q, seed, args.work_dir, tiers)
    try:
        t0 = time.perf_counter()
        p.score_all()
        log(f"  scored {len(tiers)} tiers in {time.perf_counter() - t0:.0f} s")
        skip_self = rs is not None and not rs["keep_identical"]  # one retrieved doc may be the query itself
        ks = sorted(set(args.refine_k) | ({rk + 1 for rk in args.refine_k} if skip_self else set()))
        sls = shortlists(p, ks)
        if truth is None:  # real data: exact top-10 by float search over the corpus
            truth = np.argsort(-p.S["float32"], axis=1, kind="stable")[:, :K]
        res = {"dataset": name, "n": p.n, "dim": p.d, "queries": len(Q), "seed": seed,
               "n_base": p.codec.n_base, "build_s": p.build_s,
               "hot_bytes_per_vector": p.store.stats()["bytes_per_vector"],
               "hot_recall@10": recall10(sls[K][0], truth),
               "consistency": check_consistency(p, sls),
               "tiers": tier_rows(p, sls, truth, args.refine_k)}
        res["bound"] = bound_study(p, min(args.pool, p.n), truth, args.refine_k, args.multipliers)
        if rs is not None:
            fs = first_stage(rs)
            res["ndcg"] = ndcg_rows(p, rs, sls, fs, args.refine_k)
        return res
    finally:
        p.close()


def synth_data(args, profile: str):
    from zenstore.synth import SynthSpec

    spec = SynthSpec(dim=args.dim, **PROFILES[profile])
    paths = gendata.prepare(spec, args.n, args.queries, 100, args.data_dir, log=log)
    docs = np.load(paths["docs"]["npy"], mmap_mode="r")
    Q = np.load(paths["queries"])
    ids, _ = gendata.load_ground_truth(paths["gt"])
    return spec, docs, Q, ids[:, :K]


def main(argv=None) -> dict:
    if argv is None:
        argv = sys.argv[1:]
    args = build_parser().parse_args(argv)
    if args.summarize:
        print(summarize(args.summarize))
        return {}
    if args.smoke:
        args.dim, args.n, args.queries = 128, 1500, 24
        args.refine_k, args.pool, args.multipliers = [20, 50], 60, [1.0, 2.0]
        args.real_seeds = [0]
        if args.real_data == DEFAULT_REAL:
            args.real_data = None
    _common.set_threads(args.threads)
    res = {"benchmark": "refine_study", "command": _common.rerun_command("benchmarks/refine_study.py", argv),
           "machine": _common.machine_info(), "params": {k: v for k, v in vars(args).items() if k != "out"},
           "datasets": []}
    for prof in args.profiles:
        spec, docs, Q, truth = synth_data(args, prof)
        r = run_dataset(f"synth {prof} (seed {spec.seed})", docs, Q, truth, args, seed=0)
        r["spec"] = dict(vars(spec))
        res["datasets"].append(r)
        log(report_dataset(r))
    if args.real_data and os.path.isdir(args.real_data):
        for rs in real_sets(args.real_data):
            for seed in args.real_seeds:
                data = rs["data"]
                r = run_dataset(f"{rs['collection']} {rs['emb'][4:]}", data["D"], data["Q"], None, args, seed, rs)
                res["datasets"].append(r)
                log(report_dataset(r))
    out = args.out or os.path.join(_common.OUT_DIR, "refine-study.json")
    res["json"] = out
    _common.write_json(out, res)
    log(f"json: {out}")
    log(f"rerun: {res['command']}")
    return res


# --- report -----------------------------------------------------------------------------------


def report_dataset(r: dict) -> str:
    ks = list(r["tiers"][0]["recall@10"].keys())
    lines = ["", f"### {r['dataset']}: {r['n']:,} docs x {r['dim']}, {r['queries']} queries, store seed {r['seed']}, "
             f"{r['n_base']} base rows; hot {r['hot_bytes_per_vector']} B/vector, recall@10 {r['hot_recall@10']:.4f}",
             f"consistency (max abs diff): " + ", ".join(f"{k} {v:.2e}" for k, v in r["consistency"].items()), "",
             "| tier | refine B/vec | rel. MSE | " + " | ".join(f"recall@10, refine_k {k}" for k in ks) + " |",
             "|---|---|---|" + "---|" * len(ks)]
    for t in r["tiers"]:
        lines.append(f"| {t['tier']} | {t['bytes_per_vector']:,} | {t['rel_mse']:.2e} | "
                     + " | ".join(f"{t['recall@10'][k]:.4f}" for k in ks) + " |")
    b = r["bound"]
    lines += ["", f"error of the hot estimate over a pool of {b['pool']} ({b['pairs']:,} pairs): |err| p50 "
              f"{b['abs_err']['p50']:.2e}, p99 {b['abs_err']['p99']:.2e}, max {b['abs_err']['max']:.2e}; "
              f"|err| / (s ||q_perp||): p50 {b['z_scale']['p50']:.3f}, p99 {b['z_scale']['p99']:.3f}, "
              f"p99.9 {b['z_scale']['p99.9']:.3f}, max {b['z_scale']['max']:.3f} (true top-10 rows: p99 "
              f"{b['z_scale_true_top10']['p99']:.3f}, max {b['z_scale_true_top10']['max']:.3f}); ||e|| / (s sqrt d): "
              f"p50 {b['err_norm_over_s_sqrt_d']['p50']:.3f} [p99 {b['err_norm_over_s_sqrt_d']['p99']:.3f}]; "
              f"mean signed err: true top-10 {b['mean_signed_err_true_top10']:.2e}, all {b['mean_signed_err_all']:.2e}",
              "", "| tier | bound | multiplier | coverage | recall@10 | rows refined mean / p50 / p99 / max | "
              "sequential (step 1): rows mean / p99 | recall@10 |", "|---|---|---|---|---|---|---|---|"]
    for x in b["rules"]:
        if x["bound"] == "fixed refine_k":
            lines.append(f"| {x['tier']} | fixed refine_k | | | " + ", ".join(
                f"{k}: {v:.4f}" for k, v in x["recall@10_by_refine_k"].items()) + " | | | |")
            continue
        rr, sq = x["rows_refined"], x["rows_refined_sequential"]
        lines.append(f"| {x['tier']} | {x['bound']} | {x['multiplier']:g} | {x['coverage']:.4f} | "
                     f"{x['recall@10']:.4f} | "
                     f"{rr['mean']:.1f} / {rr['p50']:.0f} / {rr['p99']:.0f} / {rr['max']:.0f} | "
                     f"{sq['mean']:.1f} / {sq['p99']:.0f} | {x['recall@10_sequential']:.4f} |")
    if "ndcg" in r:
        lines += ["", "| split | tier | B/vec | NDCG@10 full (refine_k " + ", ".join(ks) + ") | retention full | "
                  "NDCG@10 rerank | retention rerank |", "|---|---|---|---|---|---|---|"]
        for x in r["ndcg"]:
            lines.append(f"| {x['split']} | {x['tier']} | {x['bytes_per_vector']:,} | "
                         + ", ".join(f"{x['ndcg@10_full'][k]:.4f}" for k in ks) + " | "
                         + ", ".join(f"{x['retention_full'][k]:.2%}" for k in ks)
                         + f" | {x['ndcg@10_rerank']:.4f} | {x['retention_rerank']:.2%} |")
    return "\n".join(lines)


# --- summaries over store seeds (the tables of docs/refine.md) ------------------------------


def summarize(paths: list[str]) -> str:
    """Markdown tables from study JSON files: means over the store seeds of each data set."""
    import json

    ds = []
    for path in paths:
        with open(path) as f:
            ds += json.load(f)["datasets"]
    out = []
    for runs in _group(ds).values():
        out += [summary_recall_table(runs), ""]
        if "ndcg" in runs[0]:
            out += [summary_ndcg_table(runs), ""]
        out += [summary_bound_table(runs), ""]
    return "\n".join(out)


def _group(ds):
    g = defaultdict(list)
    for d in ds:
        g[d["dataset"]].append(d)
    return g


def summary_recall_table(runs, ks=("20", "30", "50", "100", "200"), tiers=None):
    d0 = runs[0]
    lines = [f"**{d0['dataset']}** ({d0['n']:,} docs x {d0['dim']}, {d0['queries']} queries, {d0['n_base']} base rows, "
             f"store seed{'s' if len(runs) > 1 else ''} {', '.join(str(r['seed']) for r in runs)}): "
             f"hot recall@10 {np.mean([r['hot_recall@10'] for r in runs]):.4f}", "",
             "| tier | refine B/vec | rel. MSE | " + " | ".join(f"k={k}" for k in ks) + " |",
             "|---|---:|---:|" + "---:|" * len(ks)]
    for i, t in enumerate(d0["tiers"]):
        if tiers and t["tier"] not in tiers:
            continue
        rows = [r["tiers"][i] for r in runs]
        rec = {k: np.mean([x["recall@10"][k] for x in rows]) for k in ks if k in t["recall@10"]}
        mse = np.mean([x["rel_mse"] for x in rows])
        lines.append(f"| {t['tier']} | {t['bytes_per_vector']:,} | {mse:.1e} | " + " | ".join(f"{rec[k]:.4f}" if k in rec else "-" for k in ks) + " |")
    return "\n".join(lines)


def summary_ndcg_table(runs, ks=("30", "50", "100")):
    lines = []
    splits = sorted({x["split"] for x in runs[0]["ndcg"]})
    for sp in splits:
        d0 = runs[0]
        fl = np.mean([[x for x in r["ndcg"] if x["split"] == sp and x["tier"] == "float32"][0]["float_ndcg@10_exact"] for r in runs])
        flr = np.mean([[x for x in r["ndcg"] if x["split"] == sp and x["tier"] == "float32"][0]["float_ndcg@10_rerank"] for r in runs])
        lines += ["", f"**{d0['dataset']}, {sp}** (float32 NDCG@10: exact search {fl:.4f}, rerank of the first stage {flr:.4f}; mean of {len(runs)} store seeds [min-max])", "",
                  "| tier | refine B/vec | " + " | ".join(f"full, refine_k {k}" for k in ks) + " | rerank top-100 |", "|---|---:|" + "---:|" * (len(ks) + 1)]
        for t in [x["tier"] for x in runs[0]["ndcg"] if x["split"] == sp]:
            rows = [[x for x in r["ndcg"] if x["split"] == sp and x["tier"] == t][0] for r in runs]
            cells = []
            for k in ks:
                v = [x["retention_full"][k] for x in rows]
                cells.append(f"{np.mean(v):.2%} [{min(v):.1%}-{max(v):.1%}]")
            v = [x["retention_rerank"] for x in rows]
            cells.append(f"{np.mean(v):.2%} [{min(v):.1%}-{max(v):.1%}]")
            lines.append(f"| {t} | {rows[0]['bytes_per_vector']:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_bound_table(runs):
    r = runs[0]
    b = r["bound"]
    lines = [f"**{r['dataset']}** (pool {b['pool']}, {b['pairs']:,} pairs, store seed {r['seed']}): |err| p50 {b['abs_err']['p50']:.1e} / p99 {b['abs_err']['p99']:.1e} / max {b['abs_err']['max']:.1e}; "
             f"z = |err| / (s ||q_perp||): p50 {b['z_scale']['p50']:.2f}, p99 {b['z_scale']['p99']:.2f}, p99.9 {b['z_scale']['p99.9']:.2f}, max {b['z_scale']['max']:.2f} "
             f"(true top-10 rows: p99 {b['z_scale_true_top10']['p99']:.2f}, max {b['z_scale_true_top10']['max']:.2f}); "
             f"||e|| / (s sqrt d): p50 {b['err_norm_over_s_sqrt_d']['p50']:.3f}, p99 {b['err_norm_over_s_sqrt_d']['p99']:.3f}; ||q_perp|| p50 {b['qperp_norm']['p50']:.2f}", "",
             "| tier | bound | m | coverage | rounds of 10: recall@10 | rows mean / p99 / max | sequential: recall@10 | rows mean / p99 / max |",
             "|---|---|---:|---:|---:|---|---:|---|"]
    for x in b["rules"]:
        if x["bound"] == "fixed refine_k":
            lines.append(f"| {x['tier']} | fixed refine_k | | | " + ", ".join(f"{k}: {v:.4f}" for k, v in x["recall@10_by_refine_k"].items()) + " | | | |")
            continue
        rr, sq = x["rows_refined"], x["rows_refined_sequential"]
        lines.append(f"| {x['tier']} | {x['bound']} | {x['multiplier']:g} | {x['coverage']:.3f} | {x['recall@10']:.4f} | {rr['mean']:.1f} / {rr['p99']:.0f} / {rr['max']:.0f} | "
                     f"{x['recall@10_sequential']:.4f} | {sq['mean']:.1f} / {sq['p99']:.0f} / {sq['max']:.0f} |")
    return "\n".join(lines)


DEFAULT_REAL = "/work/shared/data"


def build_parser() -> argparse.ArgumentParser:
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(description=doc[0], epilog="\n\n".join(doc[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profiles", nargs="*", default=list(PROFILES), choices=list(PROFILES),
                   help="generated data profiles (default: all)")
    p.add_argument("--n", type=int, default=20000, help="generated docs per profile (default 20000)")
    p.add_argument("--dim", type=int, default=7680, help="generated dimension (default 7680)")
    p.add_argument("--queries", type=int, default=300, help="generated queries (default 300)")
    p.add_argument("--refine-k", type=int, nargs="+", default=[20, 30, 50, 100, 200],
                   help="shortlist sizes refined (default 20 30 50 100 200)")
    p.add_argument("--tiers", nargs="+", default=None,
                   help="only these tiers (float32 and hot always; default: all), e.g. int8 magnitude3 planes2")
    p.add_argument("--pool", type=int, default=200, help="candidates the error-bound rules may refine (default 200)")
    p.add_argument("--multipliers", type=float, nargs="+", default=[0.5, 0.75, 1.0, 1.5, 2.0, 3.0],
                   help="slack multipliers of the bound rules (default 0.5 0.75 1 1.5 2 3)")
    p.add_argument("--real-data", default=DEFAULT_REAL, help=f"real collections (default {DEFAULT_REAL}; '' to skip)")
    p.add_argument("--real-seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="store seeds on real data (default 0 1 2)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads (default: all)")
    p.add_argument("--summarize", nargs="+", metavar="JSON", default=None,
                   help="print the mean-over-seeds tables of earlier runs' JSON files and exit")
    p.add_argument("--smoke", action="store_true", help="tiny run (128-d, 1,500 docs, no real data): for the tests")
    p.add_argument("--data-dir", default="data", help="generated data cache (default ./data)")
    p.add_argument("--work-dir", default=None, help="where temporary stores go (default: system temp)")
    p.add_argument("--out", default=None, help="JSON path (default docs/benchmarks/refine-study.json)")
    return p


if __name__ == "__main__":
    main()

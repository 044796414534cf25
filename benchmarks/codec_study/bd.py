"""BitDelta codec emulation (numpy/faiss) for the zenstore research questions.

Everything is computed in the rotated space: x' = R x, base rows learned on R X, query q' = R q.
Code per vector: base id a, sign bits of r = x' - c16[a] (c16 = fp16-rounded base), fp16 scales per block.
Estimator score:  q'.c16[a] + sum_b s_b * (q'_b . sign(r_b)).
"""
from __future__ import annotations

import math
import numpy as np
import faiss

faiss.omp_set_num_threads(2)


# ----------------------------------------------------------------------------- rotations
def _hadamard(n: int) -> np.ndarray:
    H = np.array([[1.0]], dtype=np.float32)
    while H.shape[0] < n:
        H = np.block([[H, H], [H, -H]])
    return (H / np.sqrt(n)).astype(np.float32)


def pow2_block(d: int, cap: int = 4096) -> int:
    b = 1
    while d % (b * 2) == 0 and b * 2 <= cap:
        b *= 2
    return b


class Rotation:
    """kind: 'none' | 'hadamard' (rounds x [sign flip, permutation, block WHT]) | 'dense' (QR)."""

    def __init__(self, d: int, kind: str = "none", seed: int = 0, rounds: int = 2):
        self.d, self.kind = d, kind
        rng = np.random.default_rng([seed, 12345])
        if kind == "hadamard":
            self.bs = pow2_block(d)
            self.H = _hadamard(self.bs)
            self.signs = [rng.choice(np.array([-1.0, 1.0], np.float32), d) for _ in range(rounds)]
            self.perms = [rng.permutation(d) for _ in range(rounds)]
        elif kind == "dense":
            A = rng.standard_normal((d, d))
            Qm, Rm = np.linalg.qr(A)
            Qm *= np.sign(np.diag(Rm))[None, :]
            self.M = Qm.T.astype(np.float32)  # x' = M x  -> rows: X @ M.T
        elif kind != "none":
            raise ValueError(kind)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        if self.kind == "none":
            return X
        if self.kind == "dense":
            return X @ self.M.T
        n, d = X.shape
        Y = X
        for s, p in zip(self.signs, self.perms):
            Y = (Y * s)[:, p]
            Y = (Y.reshape(-1, self.bs) @ self.H).reshape(n, d)
        return np.ascontiguousarray(Y)


# ----------------------------------------------------------------------------- base
def train_base(Xrot_sample: np.ndarray, n_base: int, seed: int = 0, niter: int = 20) -> np.ndarray:
    """Returns the fp16-rounded base as float32 (n_base, d). n_base=0 -> single zero row (no centering)."""
    d = Xrot_sample.shape[1]
    if n_base == 0:
        C = np.zeros((1, d), np.float32)
    elif n_base == 1:
        C = Xrot_sample.mean(0, keepdims=True)
    else:
        km = faiss.Kmeans(d, n_base, niter=niter, seed=seed, verbose=False,
                          max_points_per_centroid=100000)
        km.train(np.ascontiguousarray(Xrot_sample, dtype=np.float32))
        C = km.centroids
    return C.astype(np.float16).astype(np.float32)


def assign(Xrot: np.ndarray, C16: np.ndarray) -> np.ndarray:
    if C16.shape[0] == 1:
        return np.zeros(Xrot.shape[0], np.int64)
    idx = faiss.IndexFlatL2(C16.shape[1])
    idx.add(C16)
    _, a = idx.search(np.ascontiguousarray(Xrot), 1)
    return a[:, 0]


# ----------------------------------------------------------------------------- encode / score
class Enc:
    """Encoded chunk: base ids, +-1 signs (float32 for matmul), per-finest-block L1 and L2^2 of residual."""

    def __init__(self, Xrot, C16, nbmax):
        self.a = assign(Xrot, C16)
        R = Xrot - C16[self.a]
        n, d = R.shape
        self.S = np.where(R >= 0, np.float32(1), np.float32(-1))
        self.t = (R * C16[self.a]).sum(1).astype(np.float16).astype(np.float32)   # c.r, used by 'unbp'
        Rb = np.abs(R).reshape(n, nbmax, d // nbmax)
        self.l1 = Rb.sum(2)                       # (n, nbmax)
        self.l2 = (Rb.astype(np.float64) ** 2).sum(2).astype(np.float32)
        self.nbmax, self.d = nbmax, d


def scales(enc: Enc, est: str, nb: int) -> np.ndarray:
    """(n, nb) fp16-rounded scales. est: 'l2' (mean|r|) or 'unb' (||r||^2/||r||_1)."""
    g = enc.nbmax // nb
    l1 = enc.l1.reshape(-1, nb, g).sum(2)
    if est == "l2":
        s = l1 / (enc.d / nb)
    else:
        l2 = enc.l2.reshape(-1, nb, g).sum(2)
        s = l2 / np.maximum(l1, 1e-30)
    return s.astype(np.float16).astype(np.float32)


def block_dots(Qm: np.ndarray, S: np.ndarray, nbmax: int) -> np.ndarray:
    """(nbmax, nq, n): per finest block dot products Qm_b . S_b."""
    d = S.shape[1]
    w = d // nbmax
    return np.stack([Qm[:, b * w:(b + 1) * w] @ S[:, b * w:(b + 1) * w].T for b in range(nbmax)])


def group(P: np.ndarray, nb: int) -> np.ndarray:
    nbmax = P.shape[0]
    return P.reshape(nb, nbmax // nb, *P.shape[1:]).sum(1)


def quantize_query(Q: np.ndarray, bits: int) -> np.ndarray:
    """RaBitQ-style uniform scalar quantisation of each query (global min/max per query), deterministic rounding."""
    lo = Q.min(1, keepdims=True)
    hi = Q.max(1, keepdims=True)
    delta = (hi - lo) / (2 ** bits - 1)
    u = np.clip(np.rint((Q - lo) / delta), 0, 2 ** bits - 1)
    return (lo + delta * u).astype(np.float32)


def topk(S: np.ndarray, k: int) -> np.ndarray:
    k = min(k, S.shape[1])
    part = np.argpartition(-S, k - 1, axis=1)[:, :k]
    v = np.take_along_axis(S, part, 1)
    o = np.argsort(-v, axis=1, kind="stable")
    return np.take_along_axis(part, o, 1)


def recall_at(ids: np.ndarray, gt: np.ndarray, k: int = 10) -> float:
    return float(np.mean([len(set(a[:k]) & set(b[:k])) / k for a, b in zip(ids, gt)]))


def shortlist_rescore(proxy: np.ndarray, exact: np.ndarray, L: int, k: int = 10) -> np.ndarray:
    sl = topk(proxy, L) if L < proxy.shape[1] else np.tile(np.arange(proxy.shape[1]), (proxy.shape[0], 1))
    ev = np.take_along_axis(exact, sl, 1)
    o = topk(ev, k)
    return np.take_along_axis(sl, o, 1)


# ----------------------------------------------------------------------------- full pipeline
def run_config(chunks, Q, *, rot_kind, n_base, seed, nbmax, ests=("l2", "unb"), nbs=(1, 2),
               proxy_cfgs=(), train_sample=None, qbits=(2, 4), niter=20, rotation=None, ests_extra=()):
    """chunks: callable returning an iterator of raw float32 doc blocks (in order).
    Returns dict: ('est', est, nb) -> score matrix (nq, N);  ('proxy', name, est, nb) -> score matrix.
    plus 'bytes_base' etc."""
    d = Q.shape[1]
    R = rotation if rotation is not None else Rotation(d, rot_kind, seed)
    Qr = R(Q)
    if train_sample is None:
        train_sample = np.concatenate(list(chunks()))
    C16 = train_base(R(train_sample), n_base, seed=seed, niter=niter)
    QC = Qr @ C16.T
    Qs = np.where(Qr >= 0, np.float32(1), np.float32(-1))
    Qq = {b: R_ for b, R_ in ((b, quantize_query(Qr, b)) for b in qbits)}
    # per-block alpha for the 1-bit query proxy, per finest block
    w = d // nbmax
    Qabs = np.abs(Qr).reshape(len(Qr), nbmax, w)
    sq, ab = (Qabs ** 2).sum(2), Qabs.sum(2)  # (nq, nbmax)
    out = {}
    cols = []
    for X in chunks():
        enc = Enc(R(X), C16, nbmax)
        qca = QC[:, enc.a]
        P = block_dots(Qr, enc.S, nbmax)
        part = {}
        for est in ests:
            for nb in nbs:
                s = scales(enc, est, nb)                 # (n, nb)
                Pg = group(P, nb)                        # (nb, nq, n)
                part[("est", est, nb)] = qca + np.einsum("bqn,nb->qn", Pg, s)
        if "unbp" in ests_extra:
            # unb+perp: store t = c.r (fp16); estimate only q_perp.r with the signs (q_perp = q - (q.c^)c^)
            c = C16[enc.a]
            Xr_ = c  # noqa
            cn = np.linalg.norm(C16, axis=1)
            ch = C16 / np.maximum(cn, 1e-12)[:, None]
            qch = (Qr @ ch.T)[:, enc.a]
            t = enc.t
            chs = (ch[enc.a] * enc.S).reshape(len(enc.a), nbmax, -1).sum(2)      # (n, nbmax), from the code
            for nb in nbs:
                s = scales(enc, "unb", nb)
                Pg = group(P, nb)
                chg = chs.reshape(-1, nb, nbmax // nb).sum(2)
                part[("est", "unbp", nb)] = (qca + qch * (t / np.maximum(cn[enc.a], 1e-12))[None, :]
                                             + np.einsum("bqn,nb->qn", Pg, s) - qch * (chg * s).sum(1)[None, :])
        if proxy_cfgs:
            Ps = block_dots(Qs, enc.S, nbmax)            # = D_b - 2 ham_b
            part[("proxy", "hamming")] = Ps.sum(0)
            Pq = {b: block_dots(Qq[b], enc.S, nbmax) for b in qbits}
            for est, nb in proxy_cfgs:
                s = scales(enc, est, nb)
                g = nbmax // nb
                alpha = sq.reshape(-1, nb, g).sum(2) / ab.reshape(-1, nb, g).sum(2)  # (nq, nb)
                Psg = group(Ps, nb)
                part[("proxy", "q1bit", est, nb)] = qca + np.einsum("bqn,nb,qb->qn", Psg, s, alpha)
                for b in qbits:
                    part[("proxy", f"q{b}bit", est, nb)] = qca + np.einsum("bqn,nb->qn", group(Pq[b], nb), s)
        cols.append(part)
        del enc, P
    for key in cols[0]:
        out[key] = np.concatenate([c[key] for c in cols], axis=1)
    return out


def bytes_per_vec(d, nb, n_base, N):
    idb = 0 if n_base <= 1 else (1 if n_base <= 256 else 2)
    base = (max(n_base, 0) * d * 2) / N
    return d / 8 + 2 * nb + idb, base


# ----------------------------------------------------------------------------- real data / NDCG
def load_beir(coll, model):
    import json
    from pathlib import Path
    emb = Path(coll) / f"emb-{model}"
    D = np.load(emb / "corpus.npy")
    Q = np.load(emb / "queries.npy")
    dids = json.load(open(emb / "corpus_ids.json"))
    qids = json.load(open(emb / "query_ids.json"))
    return D, Q, dids, qids


def load_qrels(path, binary=False):
    qrels = {}
    for i, line in enumerate(open(path)):
        t = line.rstrip("\n").split("\t")
        if i == 0 and t[0] == "query-id":
            continue
        s = int(t[2])
        s = (1 if s > 0 else 0) if binary else s
        if s > 0:
            qrels.setdefault(t[0], {})[t[1]] = s
    return qrels


def ndcg_from_scores(S, dids, qids, qrels, k=10, keep_identical_ids=False, per_query=False):
    """Same method as /work/shared/data/scripts/eval_ndcg.py (stable argsort of -score, top 200, ideal from qrels)."""
    qpos = {q: i for i, q in enumerate(qids)}
    use = [q for q in qrels if q in qpos]
    nd = []
    for q in use:
        row = S[qpos[q]]
        order = np.argsort(-row, kind="stable")[:200]
        ranked = [dids[j] for j in order if keep_identical_ids or dids[j] != q]
        rel = qrels[q]
        dcg = sum(rel.get(dd, 0) / np.log2(r + 2) for r, dd in enumerate(ranked[:k]))
        ideal = sorted(rel.values(), reverse=True)[:k]
        idcg = sum(g / np.log2(r + 2) for r, g in enumerate(ideal))
        nd.append(dcg / idcg)
    nd = np.array(nd)
    return nd if per_query else float(nd.mean())


def ndcg_from_ids(ids, dids, qids, qrels, k=10, keep_identical_ids=False, per_query=False):
    """Fast variant: ids (nq_all, >=k+1) ranked doc indices for every query row (e.g. topk(S, 20))."""
    qpos = {q: i for i, q in enumerate(qids)}
    use = [q for q in qrels if q in qpos]
    nd = []
    for q in use:
        ranked = [dids[j] for j in ids[qpos[q]] if keep_identical_ids or dids[j] != q]
        rel = qrels[q]
        dcg = sum(rel.get(dd, 0) / np.log2(r + 2) for r, dd in enumerate(ranked[:k]))
        ideal = sorted(rel.values(), reverse=True)[:k]
        idcg = sum(g / np.log2(r + 2) for r, g in enumerate(ideal))
        nd.append(dcg / idcg)
    nd = np.array(nd)
    return nd if per_query else float(nd.mean())

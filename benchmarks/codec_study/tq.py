"""Does the stored t = c.r survive 8-bit quantisation? (fits the 7680 budget: 1-byte id + fp16 scale + uint8 t = 4 B)
uint8 t: uniform over the corpus [min, max] of t (two global floats).  -> results/tq.jsonl
usage: tq.py real | tq.py synth DIM N NBASE"""
import json, sys
import numpy as np
from bd import *

OUT = open("results/tq.jsonl", "a")


def variants(Xr, Qr, C16):
    enc = Enc(Xr, C16, 1)
    a = enc.a
    s = scales(enc, "unb", 1)[:, 0]
    cn = np.linalg.norm(C16, axis=1); ch = C16 / np.maximum(cn, 1e-12)[:, None]
    qc = (Qr @ C16.T)[:, a]; qch = (Qr @ ch.T)[:, a]
    qs = Qr @ enc.S.T
    chs = (ch[a] * enc.S).sum(1)
    t16 = enc.t
    lo, hi = t16.min(), t16.max()
    t8 = lo + np.rint((t16 - lo) / (hi - lo) * 255) * (hi - lo) / 255
    out = {"unb": qc + s[None, :] * qs}
    for name, t in (("unbp_t16", t16), ("unbp_t8", t8)):
        out[name] = qc + qch * (t / np.maximum(cn[a], 1e-12))[None, :] + s[None, :] * (qs - qch * chs[None, :])
    return out


if sys.argv[1] == "real":
    DS = "/work/shared/data/"
    for name, coll, model, qsets, nbases in [
        ("scifact-minilm", "scifact", "minilm-l6-v2", [("test", "qrels/test.tsv", False), ("train", "qrels/train.tsv", False)], (1, 64, 256)),
        ("cranfield-mpnet", "cranfield", "mpnet-base-v2", [("test", "qrels/test.tsv", True)], (1, 16))]:
        D, Q, dids, qids = load_beir(DS + coll, model)
        qrels = {lab: (load_qrels(DS + coll + "/" + p), keep) for lab, p, keep in qsets}
        Sf = Q @ D.T; gt = topk(Sf, 10)
        fl = {lab: ndcg_from_ids(topk(Sf, 20), dids, qids, qr, keep_identical_ids=keep) for lab, (qr, keep) in qrels.items()}
        for nbase in nbases:
            for seed in range(5):
                R = Rotation(D.shape[1], "hadamard", seed)
                Xr, Qr = R(D), R(Q)
                for k, S in variants(Xr, Qr, train_base(Xr, nbase, seed=seed)).items():
                    ids = topk(S, 20)
                    nd = {lab: ndcg_from_ids(ids, dids, qids, qr, keep_identical_ids=keep) for lab, (qr, keep) in qrels.items()}
                    OUT.write(json.dumps(dict(ds=name, n_base=nbase, seed=seed, est=k, recall10=recall_at(ids, gt),
                                              ret={x: nd[x] / fl[x] for x in nd})) + "\n")
else:
    from zenstore.synth import SyntheticEmbeddings, exact_topk
    dim, N, nbase = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    g = SyntheticEmbeddings(dim=dim)
    X = g.docs(0, N); Q = g.queries(500)
    gt, _ = exact_topk(Q, [(0, X)], 10)
    R = Rotation(dim, "hadamard", 0)
    Xr, Qr = R(X), R(Q)
    del X
    for k, S in variants(Xr, Qr, train_base(Xr, nbase, seed=0)).items():
        OUT.write(json.dumps(dict(ds=f"synth{dim}", N=N, n_base=nbase, seed=0, est=k, recall10=recall_at(topk(S, 10), gt))) + "\n")
OUT.flush()

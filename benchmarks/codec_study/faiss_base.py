"""faiss baselines on the same data: IndexRaBitQ (1-bit, qb sweep; plus multi-bit nb_bits=2,3 for reference),
IndexIVFRaBitQ (nprobe sweep), IndexBinaryFlat on sign bits.  -> results/faiss.jsonl
usage: faiss_base.py real | faiss_base.py synth DIM N"""
import json, os, sys, time
import numpy as np
import faiss
from bd import *

faiss.omp_set_num_threads(2)
OUT = open("results/faiss.jsonl", "a")
IP = faiss.METRIC_INNER_PRODUCT


def pack_signs(X):
    return np.packbits((X >= 0).astype(np.uint8), axis=1)


def run(name, X, Q, gt, evalf, nlists, extra):
    N, d = X.shape
    def emit(method, ids, **kw):
        r = dict(ds=name, method=method, recall10=recall_at(ids, gt), **kw, **extra)
        if evalf:
            r.update(evalf(ids))
        OUT.write(json.dumps(r) + "\n"); OUT.flush()
        print(r, flush=True)
    Rh = Rotation(d, "hadamard", 0)
    for rot in os.environ.get("FROTS", "none,hadamard").split(","):
        Xr, Qr = (X, Q) if rot == "none" else (Rh(X), Rh(Q))
        for nbits in [int(v) for v in os.environ.get("FNBITS", "1,2,3").split(",")]:
            idx = faiss.IndexRaBitQ(d, IP, nbits)
            idx.train(Xr); idx.add(Xr)
            for qb in ([int(v) for v in os.environ.get("FQB", "0,4,8").split(",")] if nbits == 1 else (0,)):
                p = faiss.RaBitQSearchParameters(); p.qb = qb
                _, I = idx.search(Qr, 20, params=p)
                emit("IndexRaBitQ", I, rot=rot, nb_bits=nbits, qb=qb, bytes_code=idx.code_size)
        for nlist in nlists:
            quant = faiss.IndexFlatIP(d)
            idx = faiss.IndexIVFRaBitQ(quant, d, nlist, IP)
            idx.train(Xr); idx.add(Xr)
            for nprobe in sorted({1, 4, 16, 64, nlist} & set(range(1, nlist + 1)) & set(int(v) for v in os.environ.get("FNPROBE", "1,4,16,64,256,1024").split(","))):
                p = faiss.IVFRaBitQSearchParameters(); p.qb = 4; p.nprobe = nprobe
                _, I = idx.search(Qr, 20, params=p)
                emit("IndexIVFRaBitQ", I, rot=rot, nlist=nlist, nprobe=nprobe, qb=4, bytes_code=idx.code_size)
    # binary flat on sign bits
    mu = X.mean(0, keepdims=True)
    for variant, f in (("sign(x)", lambda A: A), ("sign(H(x-mean))", lambda A: Rh(A - mu))):
        idx = faiss.IndexBinaryFlat(d)
        idx.add(pack_signs(f(X)))
        _, I = idx.search(pack_signs(f(Q)), 20)
        emit("IndexBinaryFlat", I, variant=variant, bytes_code=d // 8)


if sys.argv[1] == "real":
    DS = "/work/shared/data/"
    for name, coll, model, qsets, nlists in [
        ("scifact-minilm", "scifact", "minilm-l6-v2", [("test", "qrels/test.tsv", False), ("train", "qrels/train.tsv", False)], (16, 64)),
        ("cranfield-minilm", "cranfield", "minilm-l6-v2", [("test", "qrels/test.tsv", True)], (16,)),
        ("cranfield-mpnet", "cranfield", "mpnet-base-v2", [("test", "qrels/test.tsv", True)], (16,))]:
        D, Q, dids, qids = load_beir(DS + coll, model)
        qrels = {lab: (load_qrels(DS + coll + "/" + p), keep) for lab, p, keep in qsets}
        Sf = Q @ D.T
        gt = topk(Sf, 10)
        fl = {lab: ndcg_from_ids(topk(Sf, 20), dids, qids, qr, keep_identical_ids=keep) for lab, (qr, keep) in qrels.items()}
        def evalf(ids):
            nd = {lab: ndcg_from_ids(ids, dids, qids, qr, keep_identical_ids=keep) for lab, (qr, keep) in qrels.items()}
            return dict(ndcg=nd, ret={k: nd[k] / fl[k] for k in nd})
        run(name, D, Q, gt, evalf, nlists, {})
else:
    from zenstore.synth import SyntheticEmbeddings, exact_topk
    dim, N = int(sys.argv[2]), int(sys.argv[3])
    g = SyntheticEmbeddings(dim=dim)
    X = g.docs(0, N); Q = g.queries(500)
    gt, _ = exact_topk(Q, [(0, X)], 10)
    run(f"synth{dim}", X, Q, gt, None, (256, 1024) if N >= 100000 else (256,), dict(dim=dim, N=N))

"""Real data (SciFact MiniLM-384, Cranfield MiniLM-384 / MPNet-768): BitDelta codec grid.
Writes one JSON line per (dataset, rotation, n_base, seed, est, nb[, proxy, L]) to results/real.jsonl."""
import json, sys, time
import numpy as np
from bd import *

DS = "/work/shared/data/"
OUT = open("results/real.jsonl", "a")
SEEDS = [0, 1, 2, 3, 4]
LS = [50, 100, 200, 500, 1000]

SETS = [
    # name, coll, model, [(qrel label, path, keep_identical)], n_base list
    ("scifact-minilm", "scifact", "minilm-l6-v2",
     [("test", "qrels/test.tsv", False), ("train", "qrels/train.tsv", False)], [0, 1, 16, 64, 256]),
    ("cranfield-minilm", "cranfield", "minilm-l6-v2", [("test", "qrels/test.tsv", True)], [0, 1, 16, 32, 64]),
    ("cranfield-mpnet", "cranfield", "mpnet-base-v2", [("test", "qrels/test.tsv", True)], [0, 1, 16, 32, 64]),
]
only = sys.argv[1:]


def emit(**kw):
    OUT.write(json.dumps(kw) + "\n"); OUT.flush()


for name, coll, model, qsets, nbases in SETS:
    if only and name not in only:
        continue
    D, Q, dids, qids = load_beir(DS + coll, model)
    N, d = D.shape
    nbmax = 24
    nbs = [nb for nb in (1, 2, 3, 4, 6, 8, 12) if nbmax % nb == 0 and d % nb == 0]
    qrels = {lab: (load_qrels(DS + coll + "/" + p), keep) for lab, p, keep in qsets}
    Sf = Q @ D.T
    gt = topk(Sf, 10)
    fl = {lab: ndcg_from_scores(Sf, dids, qids, qr, keep_identical_ids=keep) for lab, (qr, keep) in qrels.items()}
    emit(ds=name, kind="float", ndcg=fl)
    for rot in ("none", "hadamard", "dense"):
        for n_base in nbases:
            for seed in SEEDS:
                if rot == "none" and n_base <= 1 and seed > 0:
                    continue  # deterministic
                t = time.time()
                res = run_config(lambda: [D], Q, rot_kind=rot, n_base=n_base, seed=seed, nbmax=nbmax, nbs=nbs,
                                 proxy_cfgs=[(e, nb) for e in ("l2", "unb") for nb in (1, 2)],
                                 train_sample=D)
                for key, S in res.items():
                    if key[0] != "est":
                        continue
                    _, est, nb = key
                    ids = topk(S, 20)
                    nd = {lab: ndcg_from_ids(ids, dids, qids, qr, keep_identical_ids=keep)
                          for lab, (qr, keep) in qrels.items()}
                    bv, bb = bytes_per_vec(d, nb, n_base, N)
                    emit(ds=name, kind="codec", rot=rot, n_base=n_base, seed=seed, est=est, nb=nb,
                         ndcg=nd, ret={k: nd[k] / fl[k] for k in nd}, recall10=recall_at(ids, gt),
                         bytes_code=bv, bytes_base_amort=bb)
                # coarse proxies + shortlist rescoring (final = exact estimator with the same est/nb)
                for key, P in res.items():
                    if key[0] != "proxy":
                        continue
                    pairs = [(e, nb) for e in ("l2", "unb") for nb in (1, 2)] if key[1] == "hamming" else [key[2:]]
                    for est, nb in pairs:
                        E = res[("est", est, nb)]
                        for L in LS:
                            ids = shortlist_rescore(P, E, L)
                            nd = {lab: ndcg_from_ids(ids, dids, qids, qr, keep_identical_ids=keep)
                                  for lab, (qr, keep) in qrels.items()}
                            emit(ds=name, kind="shortlist", rot=rot, n_base=n_base, seed=seed, est=est, nb=nb,
                                 proxy=key[1], L=L, recall10=recall_at(ids, gt), ndcg=nd,
                                 ret={k: nd[k] / fl[k] for k in nd})
                print(name, rot, n_base, seed, f"{time.time() - t:.1f}s", flush=True)

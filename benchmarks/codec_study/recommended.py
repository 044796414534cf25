"""Candidate defaults on real data, 5 seeds: unbiased scale + stored c.r ('unbp'), nb=1, Hadamard rotation,
n_base in {16, 64, 256}; coarse proxies (unb scales, nb=1) -> top-L -> exact 'unbp' rescoring.
Also a paired bootstrap (over queries) of the NDCG retention for seed 0, to show the sampling noise.
-> results/recommended.jsonl"""
import json
import numpy as np
from bd import *

DS = "/work/shared/data/"
OUT = open("results/recommended.jsonl", "a")
LS = [50, 100, 200, 500, 1000]
rng = np.random.default_rng(0)

for name, coll, model, qsets, nbases in [
    ("scifact-minilm", "scifact", "minilm-l6-v2", [("test", "qrels/test.tsv", False), ("train", "qrels/train.tsv", False)], (1, 16, 64, 256)),
    ("cranfield-minilm", "cranfield", "minilm-l6-v2", [("test", "qrels/test.tsv", True)], (1, 16, 32)),
    ("cranfield-mpnet", "cranfield", "mpnet-base-v2", [("test", "qrels/test.tsv", True)], (1, 16, 32))]:
    D, Q, dids, qids = load_beir(DS + coll, model)
    N, d = D.shape
    qrels = {lab: (load_qrels(DS + coll + "/" + p), keep) for lab, p, keep in qsets}
    Sf = Q @ D.T; gt = topk(Sf, 10)
    flq = {lab: ndcg_from_ids(topk(Sf, 20), dids, qids, qr, keep_identical_ids=keep, per_query=True) for lab, (qr, keep) in qrels.items()}
    fl = {k: v.mean() for k, v in flq.items()}
    for rot in ("hadamard",):
        for nbase in nbases:
            for seed in range(5):
                res = run_config(lambda: [D], Q, rot_kind=rot, n_base=nbase, seed=seed, nbmax=24, nbs=(1,),
                                 ests=("unb",), ests_extra=("unbp",), proxy_cfgs=[("unb", 1)], train_sample=D)
                E = res[("est", "unbp", 1)]
                ids = topk(E, 20)
                ndq = {lab: ndcg_from_ids(ids, dids, qids, qr, keep_identical_ids=keep, per_query=True) for lab, (qr, keep) in qrels.items()}
                row = dict(ds=name, rot=rot, n_base=nbase, seed=seed, est="unbp", nb=1, proxy="none", L=N,
                           recall10=recall_at(ids, gt), ndcg={k: v.mean() for k, v in ndq.items()},
                           ret={k: ndq[k].mean() / fl[k] for k in ndq})
                if seed == 0:  # paired bootstrap over queries of the retention ratio
                    ci = {}
                    for k in ndq:
                        b = rng.integers(0, len(ndq[k]), (2000, len(ndq[k])))
                        r = ndq[k][b].mean(1) / flq[k][b].mean(1)
                        ci[k] = [float(np.percentile(r, 2.5)), float(np.percentile(r, 97.5))]
                    row["ret_ci95"] = ci
                OUT.write(json.dumps(row) + "\n")
                for pname in ("hamming", "q1bit", "q2bit", "q4bit"):
                    P = res[("proxy", pname)] if pname == "hamming" else res[("proxy", pname, "unb", 1)]
                    for L in LS:
                        ids = shortlist_rescore(P, E, L)
                        nd = {lab: ndcg_from_ids(ids, dids, qids, qr, keep_identical_ids=keep) for lab, (qr, keep) in qrels.items()}
                        OUT.write(json.dumps(dict(ds=name, rot=rot, n_base=nbase, seed=seed, est="unbp", nb=1, proxy=pname, L=L,
                                                  recall10=recall_at(ids, gt), ndcg=nd, ret={k: nd[k] / fl[k] for k in nd})) + "\n")
                OUT.flush()
            print(name, rot, nbase, flush=True)

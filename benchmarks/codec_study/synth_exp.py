"""Generated data (zenstore.synth): recall@10 vs exact float top-10 for the BitDelta grid + proxies/shortlists.
usage: synth_exp.py DIM N [seeds] [rots] [nbases]   -> results/synth.jsonl"""
import json, os, sys, time
import numpy as np
from zenstore.synth import SyntheticEmbeddings, exact_topk
from bd import *

dim, N = int(sys.argv[1]), int(sys.argv[2])
seeds = [int(s) for s in sys.argv[3].split(",")] if len(sys.argv) > 3 else [0]
rots = sys.argv[4].split(",") if len(sys.argv) > 4 else (["none", "hadamard", "dense"] if dim <= 1024 else ["none", "hadamard"])
nbases = [int(s) for s in sys.argv[5].split(",")] if len(sys.argv) > 5 else [0, 1, 16, 64, 256]
OUT = open("results/synth.jsonl", "a")
LS = [50, 100, 200, 500, 1000]
nbmax = int(os.environ.get("NBMAX", {384: 24, 768: 24, 1024: 16, 7680: 8}[dim]))
nbs = [nb for nb in (1, 2, 3, 4, 6, 8, 12, 16) if nbmax % nb == 0]
PEST = os.environ.get("PEST", "l2,unb").split(",")

t0 = time.time()
g = SyntheticEmbeddings(dim=dim)
STREAM = os.environ.get("STREAM") == "1"   # regenerate chunks instead of holding X (100k x 7680)
Q = g.queries(500)
if STREAM:
    X = None
    chunks = lambda: (g.docs(i, min(i + 20000, N)) for i in range(0, N, 20000))
    gt, _ = exact_topk(Q, ((i, g.docs(i, min(i + 20000, N))) for i in range(0, N, 20000)), 10)
    train = g.docs(0, int(os.environ.get('TRAIN', 40000)))
else:
    X = g.docs(0, N)
    chunks = lambda: [X[i:i + 20000] for i in range(0, N, 20000)]
    gt, _ = exact_topk(Q, [(0, X)], 10)
    train = X[:int(os.environ.get('TRAIN', N))]
if os.environ.get("NBS"):
    nbs = [int(v) for v in os.environ["NBS"].split(",")]
print(f"data {time.time() - t0:.1f}s", flush=True)
for rot in rots:
    for n_base in nbases:
        for seed in seeds:
            if rot == "none" and n_base <= 1 and seed != seeds[0]:
                continue
            t = time.time()
            res = run_config(chunks, Q, rot_kind=rot, n_base=n_base,
                             seed=seed, nbmax=nbmax, nbs=nbs,
                             proxy_cfgs=[(e, nb) for e in PEST for nb in (1, 2)],
                             train_sample=train, niter=int(os.environ.get('NITER', 20)), ests_extra=("unbp",))
            for key, S in res.items():
                if key[0] == "est":
                    bv, bb = bytes_per_vec(dim, key[2], n_base, N)
                    OUT.write(json.dumps(dict(dim=dim, N=N, kind="codec", rot=rot, n_base=n_base, seed=seed, est=key[1],
                                              nb=key[2], recall10=recall_at(topk(S, 10), gt),
                                              bytes_code=bv, bytes_base_amort=bb)) + "\n")
            for key, P in res.items():
                if key[0] != "proxy":
                    continue
                pairs = [(e, nb) for e in PEST for nb in (1, 2)] if key[1] == "hamming" else [key[2:]]
                for est, nb in pairs:
                    E = res[("est", est, nb)]
                    for L in LS:
                        OUT.write(json.dumps(dict(dim=dim, N=N, kind="shortlist", rot=rot, n_base=n_base, seed=seed,
                                                  est=est, nb=nb, proxy=key[1], L=L,
                                                  recall10=recall_at(shortlist_rescore(P, E, L), gt))) + "\n")
            OUT.flush()
            best = max((recall_at(topk(S, 10), gt), k) for k, S in res.items() if k[0] == "est")
            print(dim, N, rot, n_base, seed, f"{time.time() - t:.1f}s best={best}", flush=True)
            del res

import json, numpy as np
from collections import defaultdict
rows=[json.loads(l) for l in open('results/recommended.jsonl')]
f=lambda a: f"{100*np.mean(a):.1f} [{100*np.min(a):.1f}-{100*np.max(a):.1f}]" if len(a)>1 else f"{100*np.mean(a):.1f}"
print("#### Full scan (no shortlist): hadamard, unb scale + stored c.r ('unbp'), nb=1; 5 seeds; 95% paired-bootstrap CI of retention for seed 0\n")
print("| dataset | n_base | recall@10 % | ret test % | test CI95 (seed 0) | ret train % | train CI95 (seed 0) |")
print("|---|---|---|---|---|---|---|")
g=defaultdict(list)
for r in rows:
    if r['proxy']=='none': g[(r['ds'],r['n_base'])].append(r)
for (ds,nb),v in g.items():
    ci=[x for x in v if 'ret_ci95' in x][0]['ret_ci95']
    tr=[x['ret'].get('train') for x in v]
    print(f"| {ds} | {nb} | {f([x['recall10'] for x in v])} | {f([x['ret']['test'] for x in v])} | {100*ci['test'][0]:.1f}-{100*ci['test'][1]:.1f} | "
          + (f"{f(tr)} | {100*ci['train'][0]:.1f}-{100*ci['train'][1]:.1f} |" if tr[0] is not None else "- | - |"))
print("\n#### Shortlist by coarse proxy, then exact 'unbp' rescoring: recall@10 % / NDCG@10 retention test % (mean of 5 seeds)\n")
Ls=[50,100,200,500,1000]
print("| dataset | n_base | proxy | " + " | ".join(f"L={L}" for L in Ls)+" | full scan |")
print("|---|---|---|"+"---|"*(len(Ls)+1))
g=defaultdict(list)
for r in rows: g[(r['ds'],r['n_base'],r['proxy'],r['L'])].append(r)
full={}
for (ds,nb,p,L),v in g.items():
    if p=='none': full[(ds,nb)]=v
for ds,nb in full:
    for p in ('hamming','q1bit','q2bit','q4bit'):
        cells=[]
        for L in Ls:
            v=g.get((ds,nb,p,L))
            cells.append(f"{100*np.mean([x['recall10'] for x in v]):.1f} / {100*np.mean([x['ret']['test'] for x in v]):.1f}" if v else "-")
        v=full[(ds,nb)]
        print(f"| {ds} | {nb} | {p} | "+" | ".join(cells)+f" | {100*np.mean([x['recall10'] for x in v]):.1f} / {100*np.mean([x['ret']['test'] for x in v]):.1f} |")

import json, numpy as np, sys
from collections import defaultdict
rows=[json.loads(l) for l in open('results/extras2.jsonl')]
g=defaultdict(list)
for r in rows: g[(r['ds'],r['rot'],r['n_base'],r['nb'],r['est'])].append(r)
f=lambda a: f"{100*np.mean(a):.1f} [{100*np.min(a):.1f}-{100*np.max(a):.1f}]" if len(a)>1 else f"{100*np.mean(a):.1f}"
print("| dataset | rot | n_base | nb | estimator | bytes/vec code + base amort. | ret test % | ret train % | recall@10 % |")
print("|---|---|---|---|---|---|---|---|---|")
for k,v in g.items():
    tr=[x['ret'].get('train') for x in v]
    print(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {k[4]} | {v[0]['bytes_code']:.0f} + {v[0]['bytes_base_amort']:.1f} | {f([x['ret']['test'] for x in v])} | {f(tr) if tr[0] is not None else '-'} | {f([x['recall10'] for x in v])} |")

import json, numpy as np
from collections import defaultdict
rows=[json.loads(l) for l in open('results/extras.jsonl')]
g=defaultdict(list)
for r in rows:
    k=(r['ds'],r['rot'],r['n_base'],r.get('bestof',1),r.get('rq',0),r.get('bits',1),r['nb'])
    g[k].append(r)
print("| dataset | rot | n_base | best-of-m | rq 2nd level | bits/dim | nb | bytes/vec code + base amortised | ret test % | ret train % | recall@10 % | seeds |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for k,v in g.items():
    rt=np.array([x['ret']['test'] for x in v]); tr=[x['ret'].get('train') for x in v]
    rc=np.array([x['recall10'] for x in v])
    f=lambda a: f"{100*np.mean(a):.1f} [{100*np.min(a):.1f}-{100*np.max(a):.1f}]" if len(a)>1 else f"{100*np.mean(a):.1f}"
    print(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | {k[4] or '-'} | {k[5]} | {k[6]} | {v[0]['bytes_code']:.0f} + {v[0]['bytes_base_amort']:.1f} | {f(rt)} | {f(tr) if tr[0] is not None else '-'} | {f(rc)} | {len(v)} |")

import json
rows=[json.loads(l) for l in open('results/faiss.jsonl')]
print("| data | method | config | bytes/vec | recall@10 % | NDCG@10 retention % |")
print("|---|---|---|---|---|---|")
for r in rows:
    if r['method']=='IndexRaBitQ': cfg=f"rot={r['rot']} nb_bits={r['nb_bits']} qb={r['qb']}"
    elif r['method']=='IndexIVFRaBitQ': cfg=f"rot={r['rot']} nlist={r['nlist']} nprobe={r['nprobe']} qb={r['qb']}"
    else: cfg=r['variant']
    ret=', '.join(f"{k} {100*v:.1f}" for k,v in r.get('ret',{}).items()) or '-'
    ds=r['ds']+(f" N={r['N']}" if 'N' in r else '')
    print(f"| {ds} | {r['method']} | {cfg} | {r['bytes_code']} | {100*r['recall10']:.1f} | {ret} |")

import numpy as np, time
from bd import *
D=Path=None
for d in (384,768,1024,7680):
    for kind in ("hadamard","dense") if d<=1024 else ("hadamard",):
        R=Rotation(d,kind,0); I=R(np.eye(d,dtype=np.float32))
        print(d,kind,getattr(R,'bs',None),'orth err',np.abs(I@I.T-np.eye(d)).max())
DS='/work/shared/data/'
for coll,model,qr,keep in [('scifact','minilm-l6-v2','qrels/test.tsv',False),('scifact','minilm-l6-v2','qrels/train.tsv',False),
                           ('cranfield','minilm-l6-v2','qrels/test.tsv',True),('cranfield','mpnet-base-v2','qrels/test.tsv',True)]:
    D,Q,dids,qids=load_beir(DS+coll,model)
    print(coll,model,qr,round(ndcg_from_scores(Q@D.T,dids,qids,load_qrels(DS+coll+'/'+qr),keep_identical_ids=keep),5))

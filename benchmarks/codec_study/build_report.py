"""REPORT.md = REPORT_main.md + generated appendices (every measured number)."""
import subprocess, json, numpy as np
from collections import defaultdict
PY = "/work/venv/bin/python"
def run(*a):
    return subprocess.run([PY, *a], capture_output=True, text=True, check=True).stdout
parts = [open("REPORT_main.md").read()]
parts.append("\n\n---\n# Appendix A: real-data grid (`real.py`; 5 seeds; nb = number of scale blocks; est l2 = mean|r|, unb = ‖r‖²/‖r‖₁; n_base 0 = no centring)\n")
parts.append(run("analyze.py", "real"))
parts.append("\n\n# Appendix B: candidate defaults (`recommended.py`: Hadamard, unb + t, nb = 1)\n")
parts.append(run("an_rec.py"))
parts.append("\n\n# Appendix C: extra variants (`extras.py`: best-of-m assignment, two-level base, 2-bit two-stage sign, large n_base; unb estimator)\n")
parts.append(run("an_extras.py"))
parts.append("\n\n# Appendix D: stored t = c·r variants (`extras2.py`; unb+cr = estimate (q−c)·r, unb+perp = estimate q⊥·r; both store t)\n")
parts.append(run("an_extras2.py"))
parts.append("\n\n# Appendix E: t stored as uint8 vs fp16 (`tq.py`, Hadamard, nb = 1)\n\n| data | n_base | variant | rec@10 % | retention % |\n|---|---|---|---|---|\n")
g = defaultdict(list)
for l in open("results/tq.jsonl"):
    r = json.loads(l); g[(r["ds"], r.get("N", ""), r["n_base"], r["est"])].append(r)
for k, v in g.items():
    ret = ", ".join(f"{t} {100*np.mean([x['ret'][t] for x in v]):.1f}" for t in v[0].get("ret", {})) or "-"
    parts.append(f"| {k[0]} {k[1]} | {k[2]} | {k[3]} | {100*np.mean([x['recall10'] for x in v]):.1f} | {ret} |\n")
parts.append("\n\n# Appendix F: generated data (`synth_exp.py`; 1 seed unless a range is shown; proxies use unb scales, nb = 1)\n")
parts.append(run("analyze.py", "synth"))
parts.append("\n\n# Appendix G: faiss baselines (`faiss_base.py`; bytes = faiss code_size)\n\n")
parts.append(run("an_faiss.py"))
open("REPORT.md", "w").write("".join(parts))
print(len("".join(parts)))

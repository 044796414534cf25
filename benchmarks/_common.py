"""Shared helpers of the benchmark scripts: machine info, thread control (threadpoolctl),
measured subprocesses, tables and JSON output. Imports ``_env`` before numpy, so a script
that imports this module first gets the benchmark thread environment too."""

from __future__ import annotations

import _env  # first: the thread environment before numpy loads (see _env.py)

import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(REPO, "tools")
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)

import gendata  # noqa: E402,F401  (re-exported for the scripts)

OUT_DIR = os.path.join("docs", "benchmarks")


# --- machine ---------------------------------------------------------------------------------


def _lscpu() -> dict:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    info = {}
    for line in out.splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            info[key.strip()] = value.strip()
    return info


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", REPO, "status", "--porcelain", "--", "zenstore"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict:
    cpu = _lscpu()
    flags = cpu.get("Flags", "").split()
    mem = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    versions = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("numba", "faiss", "usearch", "threadpoolctl", "zenstore"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional packages
            versions[mod] = None
    return {
        "cpu_model": cpu.get("Model name"),
        "cpus": os.cpu_count(),
        "threads_per_core": cpu.get("Thread(s) per core"),
        "avx2": "avx2" in flags,
        "avx512f": "avx512f" in flags,
        "avx512_vpopcntdq": "avx512_vpopcntdq" in flags,
        "ram_bytes": mem,
        "ram_gib": round(mem / 2**30, 1) if mem else None,
        "kernel": platform.release(),
        "versions": versions,
        "zenstore_commit": _git_commit(),
        "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS",
                                               "OPENBLAS_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT",
                                               "NUMBA_THREADING_LAYER")},
        "loaded_before_env": _env.LOADED_TOO_EARLY,
        "loadavg_at_start": list(os.getloadavg()),
    }


def machine_line(m: dict) -> str:
    return (f"{m['cpu_model']}, {m['cpus']} cpus, {m['ram_gib']} GiB RAM, "
            f"AVX-512 {'yes' if m['avx512f'] else 'no'}; OMP_WAIT_POLICY={m['env']['OMP_WAIT_POLICY']}; "
            f"load at start {m['loadavg_at_start'][0]:.2f}")


# --- threads ---------------------------------------------------------------------------------


def set_threads(n: int) -> dict:
    """Use ``n`` threads in numba (zenstore's kernels; numba keeps its own count) and, through
    threadpoolctl, in every OpenMP and BLAS runtime loaded in this process: numpy's OpenBLAS,
    faiss's OpenBLAS and libgomp (faiss is imported first so that its runtimes are loaded),
    numba's libgomp once a parallel kernel has run. Returns :func:`thread_counts`."""
    import numba
    from threadpoolctl import threadpool_limits

    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    try:
        import faiss  # noqa: F401
    except ImportError:
        pass
    threadpool_limits(limits=n)  # kept in force: never used as a context manager here
    return thread_counts()


def set_blas_threads(n: int) -> dict:
    """Set the thread count of every loaded BLAS (numpy's and faiss's OpenBLAS) only."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=n, user_api="blas")
    return thread_counts()


def thread_counts() -> dict:
    """Threads each runtime will use now: numba's count, then threadpoolctl's report per
    loaded library (``<internal api> <file name>``: threads)."""
    import numba
    from threadpoolctl import threadpool_info

    counts = {"numba": numba.get_num_threads()}
    for lib in threadpool_info():
        counts[f"{lib['internal_api']} {os.path.basename(lib['filepath'])}"] = lib["num_threads"]
    return counts


# --- interference ----------------------------------------------------------------------------


class CpuWatch:
    """CPU used by everything else on the machine while a block runs: (busy + steal time of
    all CPUs from /proc/stat) minus this process's own CPU time, as a fraction of the
    block's wall time x CPUs. Near 0 on a quiet machine."""

    def __enter__(self):
        self.t0, self.busy0, self.self0 = time.perf_counter(), _busy_seconds(), _self_cpu()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self.t0
        busy, own = _busy_seconds() - self.busy0, _self_cpu() - self.self0
        ncpu = os.cpu_count() or 1
        self.others = max(0.0, (busy - own) / (wall * ncpu)) if wall > 0 and busy >= 0 else None


def _busy_seconds() -> float:
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return -1e18
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _self_cpu() -> float:
    t = os.times()
    return t.user + t.system


# --- subprocesses ----------------------------------------------------------------------------


def run_measured(cmd: list[str], env: dict | None = None, cwd: str | None = None) -> dict:
    """Run ``cmd``; return its exit code, wall time, peak RSS (its own, from wait4) and output."""
    full_env = _env.apply(dict(os.environ))
    full_env.update(env or {})
    out_path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"zbench-{os.getpid()}-{time.time_ns()}")
    with open(out_path + ".out", "w+") as out, open(out_path + ".err", "w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=full_env, cwd=cwd)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    for suffix in (".out", ".err"):
        os.unlink(out_path + suffix)
    return {"cmd": cmd, "returncode": proc.returncode, "wall_s": wall,
            "peak_rss_bytes": usage.ru_maxrss * 1024, "user_s": usage.ru_utime, "sys_s": usage.ru_stime,
            "stdout": stdout, "stderr": stderr}


# --- output ----------------------------------------------------------------------------------


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Markdown table; columns are (key, header, format spec)."""
    def cell(row, key, spec):
        v = row.get(key)
        if v is None:
            return "-"
        if isinstance(v, str):
            return v
        try:
            return format(v, spec)
        except (TypeError, ValueError):
            return str(v)

    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(cell(r, k, s) for k, _, s in columns) + " |")
    return "\n".join(lines)


def _jsonable(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON-serializable: {type(v).__name__}")


def write_json(path: str, obj: dict) -> str:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, default=_jsonable)
        f.write("\n")
    os.replace(tmp, path)
    return path


def publish(res: dict, out: str, report) -> dict:
    """Write ``res`` (with its own path under "json") and print its report."""
    res["json"] = out
    write_json(out, res)
    print(report(res))
    print(f"json: {out}")
    return res


def rerun_command(script: str, argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["OMP_WAIT_POLICY=passive", "python", script, *args])


def recall_at(found: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Mean over queries of |found[:k] ∩ truth[:k]| / k."""
    found = np.asarray(found)[:, :k]
    truth = np.asarray(truth)[:, :k]
    hits = [len(np.intersect1d(f[f >= 0], t)) for f, t in zip(found, truth)]
    return float(np.mean(hits) / k)

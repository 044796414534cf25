"""Shared setup for the hostile-environment tests (test_hostile_env.py, test_hostile_store.py):
child processes killed inside read transactions, a user without write permission (root's
permission bypass would hide the bugs, so as root the child drops to ``nobody``), a tiny
file system (tmpfs; root only), and a child process under an address-space limit.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest

DIM = 64

# A child that holds N read transactions of a store's catalog open, says "ready" and
# waits to be killed: what a reader SIGKILLed (or OOM-killed) mid-read leaves behind.
HOLD_READS = r"""
import sys
from zenstore.catalog import Catalog
from zenstore.records import SUB_DATABASES
cat = Catalog(sys.argv[1], SUB_DATABASES, readonly=True)
held = [cat.read() for _ in range(int(sys.argv[2]))]
for h in held:
    h.__enter__()
print("ready", flush=True)
sys.stdin.read()
"""

# A child that opens a read-only Store and stops half way through iter_records (the read
# transaction stays open), says "ready" and waits to be killed.
HOLD_ITERATION = r"""
import sys
from zenstore import Store
store = Store.open(sys.argv[1], readonly=True)
it = store.iter_records(batch_size=1)
next(it)
print("ready", flush=True)
sys.stdin.read()
"""


def vectors(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def make_store(path: str, n: int = 50, **options):
    from zenstore import Store

    store = Store.create(path, dim=DIM, n_base=4, **options)
    store.add(list(range(n)), vectors(n), payloads=[{"i": i} for i in range(n)])
    return store


def start_child(script: str, *args, env: dict | None = None) -> subprocess.Popen:
    """A Python child running ``script``; returns once it printed ``ready``."""
    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    line = proc.stdout.readline()
    if line.strip() != b"ready":
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"child did not start: {line!r} {err.decode()[-2000:]}")
    return proc


def kill_9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    proc.stdin.close()
    proc.stderr.close()


# --- a user who may read, not write ------------------------------------------------------------

# A child that cannot write the store. As root it drops to user ``nobody`` (root's
# permission bypass would hide the bugs); otherwise it stays this user and
# ``readonly_tree`` has removed every write bit. It is a fresh process started as this
# user (``nobody`` may not be able to execute this interpreter, and a fork would inherit
# the parent's LMDB environments and OpenMP state), which imports and warms zenstore up
# first -- everything it loads later must be readable by ``nobody`` -- then drops its
# privileges and runs the body, a function body whose return value it reports as
# ``RESULT ["ok", value]`` (or ``["error", class name, message]``).
UNPRIVILEGED_PRELUDE = r"""
import json, os, shutil, sys, tempfile
import numpy as np
import zenstore
from zenstore import Store, verify_store

def _warm_up():
    d = tempfile.mkdtemp()
    with Store.create(d + "/warm.zen", dim=64, n_base=4) as w:
        x = np.random.default_rng(0).standard_normal((100, 64)).astype(np.float32)
        w.add(list(range(100)), x, payloads=[{"w": 1}] * 100)
        w.search(x[0], k=3)
        w.search_batch(x[:3], k=3)
        w.get(1)
        list(w.iter_records())
    verify_store(d + "/warm.zen")
    shutil.rmtree(d)

def _drop_privileges():
    if os.geteuid() != 0:
        return
    import grp, pwd
    user = pwd.getpwnam("nobody")
    try:
        gid = grp.getgrnam("nogroup").gr_gid
    except KeyError:
        gid = user.pw_gid
    os.setgroups([])
    os.setgid(gid)
    os.setuid(user.pw_uid)

def _report(value):
    print("RESULT " + json.dumps(value), flush=True)

_warm_up()
_drop_privileges()
path = sys.argv[1]
"""


def can_drop_privileges() -> bool:
    if os.geteuid() != 0:
        return True
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        return False
    return True


def start_unprivileged(body: str, *args) -> subprocess.Popen:
    """Start a child that runs ``body`` (the body of a function; ``path`` is argv[1])
    without write access to the store; read its result with ``unprivileged_result``."""
    if not can_drop_privileges():
        pytest.skip("no 'nobody' user to run the reader as")
    script = (UNPRIVILEGED_PRELUDE + "def _body():\n" + textwrap.indent(textwrap.dedent(body), "    ")
              + "\ntry:\n    _report(['ok', _body()])\nexcept Exception as exc:\n"
              "    _report(['error', type(exc).__name__, str(exc)])\n")
    return subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def unprivileged_result(proc: subprocess.Popen, timeout: float = 180.0) -> list:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"the unprivileged child did not finish within {timeout} s") from None
    for line in out.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise AssertionError(f"the unprivileged child reported nothing (exit {proc.returncode}): {err[-3000:]}")


def as_reader_without_write_access(body: str, *args, timeout: float = 180.0) -> list:
    return unprivileged_result(start_unprivileged(body, *args), timeout)


@contextlib.contextmanager
def shared_dir():
    """A directory every user can traverse (pytest's tmp_path is private to its owner)."""
    path = tempfile.mkdtemp(prefix="zenstore-hostile-")
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        for d, dirs, files in os.walk(path):
            for name in dirs + files:
                p = os.path.join(d, name)
                if not os.path.islink(p):
                    os.chmod(p, stat.S_IMODE(os.lstat(p).st_mode) | 0o700)
        shutil.rmtree(path, ignore_errors=True)


def readonly_tree(path: str) -> None:
    """Every user may read ``path`` (a store), nobody (not even its owner) may write it."""
    for d, dirs, files in os.walk(path):
        os.chmod(d, 0o555)
        for name in files:
            os.chmod(os.path.join(d, name), 0o444)


# --- a tiny file system --------------------------------------------------------------------


@contextlib.contextmanager
def tiny_mount(path: str, size: str = "2m", options: str = ""):
    """A tmpfs of ``size`` mounted at ``path`` (root only; the test is skipped otherwise)."""
    os.makedirs(path, exist_ok=True)
    opts = f"size={size}" + (f",{options}" if options else "")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", path], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True)


def remount(path: str, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", path], check=True, capture_output=True)


@contextlib.contextmanager
def read_only_view(src: str, dst: str):
    """``src`` seen read-only at ``dst`` (a read-only bind mount, as a container's ``:ro``
    volume; root only, the test is skipped otherwise)."""
    os.makedirs(dst, exist_ok=True)
    res = subprocess.run(["mount", "--bind", src, dst], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {res.stderr.strip()}")
    try:
        remount(dst, "bind,ro")
        yield dst
    finally:
        subprocess.run(["umount", "-l", dst], capture_output=True)


# --- an address-space limit ---------------------------------------------------------------------


# Prelude of a child that limits its own address space to what it uses now plus
# ``ZT_HEADROOM`` bytes, after importing zenstore and warming its kernels up (so that
# importing and compiling do not count against the limit), then runs the body.
RLIMIT_PRELUDE = r"""
import os, resource, sys
import numpy as np
import zenstore
from zenstore import Store

def vmsize():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024

def limit_address_space(headroom):
    resource.setrlimit(resource.RLIMIT_AS, (vmsize() + headroom, resource.RLIM_INFINITY))

def vectors(n, seed=0, dim=64):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)

path = sys.argv[1]
"""


def run_limited(body: str, *args, timeout: float = 180.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RLIMIT_PRELUDE + body, *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)

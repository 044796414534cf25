"""``import zenstore`` where numba cannot cache beside the package or in $HOME.

A service user on a read-only image: the package directory and $HOME are not writable and
``NUMBA_CACHE_DIR`` is unset. numba raised ``RuntimeError: cannot cache function`` while
zenstore's kernels were being decorated, i.e. at import. Each case runs a child process on a
read-only copy of the package. Root ignores file permissions, so as root the child runs
with CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped (``setpriv``); without ``setpriv``
the test is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest

import zenstore

PACKAGE = os.path.dirname(os.path.abspath(zenstore.__file__))

# import, compile one small kernel, report where numba cached it
CHILD = textwrap.dedent("""
    import json, os
    import numpy as np
    import numba
    import zenstore
    from zenstore.kernels import _cache, pack_signs
    from zenstore.kernels.bits import _pack_rows
    codes = pack_signs(np.ones((1, 64), np.float32))
    print(json.dumps({"code": int(codes[0, 0]), "cache_dir": numba.config.CACHE_DIR,
                      "env": os.environ.get("NUMBA_CACHE_DIR"), "caching": _cache.CACHE,
                      "hits": sum(_pack_rows.stats.cache_hits.values())}))
""")


def _without_write_permission() -> list[str]:
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make file permissions apply")
    caps = "-dac_override,-dac_read_search"
    probe = subprocess.run([setpriv, "--bounding-set", caps, "--inh-caps", caps, "--", "true"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"setpriv cannot drop capabilities here: {probe.stderr.decode()[-200:]}")
    return [setpriv, "--bounding-set", caps, "--inh-caps", caps, "--"]


def _make_read_only(path) -> None:
    for root, dirs, files in os.walk(path):
        for name in files:
            os.chmod(os.path.join(root, name), 0o444)
        os.chmod(root, 0o555)


def _make_writable(path) -> None:
    for root, dirs, files in os.walk(path):
        os.chmod(root, 0o755)


@pytest.fixture
def read_only_env(tmp_path):
    """A read-only copy of the package, a read-only $HOME and a writable temp dir."""
    pkg = tmp_path / "site"
    shutil.copytree(PACKAGE, pkg / "zenstore", ignore=shutil.ignore_patterns("__pycache__"))
    home = tmp_path / "home"
    home.mkdir()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    _make_read_only(pkg)
    _make_read_only(home)
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME", "NUMBA_CACHE_LOCATOR_CLASSES")}
    env.update(HOME=str(home), TMPDIR=str(tmp), PYTHONPATH=str(pkg))
    yield env, tmp
    _make_writable(tmp_path)  # so pytest can remove it when not root


def _run(env, prefix=()) -> dict:
    # cwd: "-c" puts the working directory first on sys.path, which must not hold a zenstore
    proc = subprocess.run([*prefix, sys.executable, "-c", CHILD], env=env, capture_output=True,
                          text=True, timeout=300, cwd=env["HOME"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_caches_in_a_private_temp_dir_when_package_and_home_are_read_only(read_only_env):
    env, tmp = read_only_env
    prefix = _without_write_permission()
    first = _run(env, prefix)
    assert first["code"] == 2**64 - 1 and first["caching"] is True
    cache_dir = first["cache_dir"]
    assert first["env"] == cache_dir and os.path.dirname(cache_dir) == str(tmp)
    st = os.lstat(cache_dir)
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    assert any(name.endswith(".nbi") for _, _, files in os.walk(cache_dir) for name in files)
    again = _run(env, prefix)  # the next process finds the same directory and reuses it
    assert again["cache_dir"] == cache_dir and again["hits"] >= 1


def _with_read_only_temp_dirs(prefix: list[str]) -> list[str]:
    """Run under a private mount namespace in which /tmp and /var/tmp (tempfile's fallbacks
    after $TMPDIR) are read-only bind mounts; skip where that cannot be done."""
    unshare = shutil.which("unshare")
    mounts = " && ".join(f"mount --bind {d} {d} && mount -o remount,bind,ro {d}"
                         for d in ("/tmp", "/var/tmp") if os.path.isdir(d))
    if unshare is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare to make the system temp directories read-only")
    probe = subprocess.run([unshare, "-m", "--propagation", "private", "sh", "-c", mounts],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make /tmp read-only in a mount namespace: {probe.stderr.decode()[-200:]}")
    return [unshare, "-m", "--propagation", "private", "sh", "-c", mounts + ' && exec "$@"', "sh",
            *prefix]


def test_import_compiles_without_a_cache_when_nothing_is_writable(read_only_env):
    env, tmp = read_only_env
    prefix = _with_read_only_temp_dirs(_without_write_permission())
    _make_read_only(tmp)
    got = _run(env, prefix)
    assert got["code"] == 2**64 - 1
    assert got["caching"] is False and got["env"] is None and got["cache_dir"] == ""


def test_a_cache_dir_chosen_by_the_user_is_left_alone(read_only_env, tmp_path):
    env, _ = read_only_env
    mine = tmp_path / "my-cache"
    mine.mkdir()
    got = _run(dict(env, NUMBA_CACHE_DIR=str(mine)), _without_write_permission())
    assert got["cache_dir"] == str(mine) and got["env"] == str(mine) and got["caching"] is True


def test_nothing_is_set_when_the_package_directory_is_writable(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(HOME=str(tmp_path), TMPDIR=str(tmp_path))
    got = _run(env)
    assert got["env"] is None and got["cache_dir"] == "" and got["caching"] is True
    assert not any(name.startswith("zenstore-numba") for name in os.listdir(tmp_path))

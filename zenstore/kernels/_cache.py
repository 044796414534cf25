"""Where numba caches zenstore's compiled kernels when its own defaults cannot.

numba writes a ``cache=True`` kernel to ``__pycache__`` beside its source file, else to the
user's cache directory (``~/.cache/numba``). When neither is writable -- a service user
running a read-only image, ``$HOME`` not writable -- decorating the kernel, which happens at
``import zenstore``, raised ``RuntimeError: cannot cache function``.

In that case only, and only if the user has chosen no cache location
(``NUMBA_CACHE_DIR``, ``NUMBA_CACHE_LOCATOR_CLASSES``), this module points numba's cache at
a private per-user directory under the temp dir, ``<tmp>/zenstore-numba-<uid>`` (mode 0700;
one owned by someone else is never used, since numba's cache files are pickles: a fresh
``mkdtemp`` directory instead). It sets ``NUMBA_CACHE_DIR`` in the environment, which numba
re-reads before every compilation (and child processes inherit), and in numba's config, in
case numba was imported first. If no temp directory is writable either, zenstore's kernels
are compiled without caching (``CACHE`` is False): it works, but every process compiles its
kernels again (about a minute before the first searches return on a 2-core machine).
When numba's defaults work, nothing is changed.
"""

from __future__ import annotations

import logging
import os
import stat
import tempfile

import numba
from numba.core import caching

CACHE_DIR_PREFIX = "zenstore-numba-"


def _probe():  # a function in this package: numba looks for a cache location beside its file
    pass


def _numba_default_works() -> bool:
    """Whether numba's own locations (in-tree ``__pycache__``, user cache dir) are writable for
    this package, checked with numba's own locator classes (underscored before numba 0.6x)."""
    for name in ("InTreeCacheLocator", "UserWideCacheLocator"):
        locator = getattr(caching, name, None) or getattr(caching, "_" + name)
        if locator.from_function(_probe, __file__) is not None:
            return True
    return False


def _private_dir(parent: str) -> str | None:
    """``parent/zenstore-numba-<uid>``, created 0700, if it is a directory of ours that only we
    can write; else a fresh private directory; None if ``parent`` is not writable."""
    path = os.path.join(parent, f"{CACHE_DIR_PREFIX}{os.getuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        st = os.lstat(path)
        ours = (stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()
                and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH))
        if not ours:
            path = tempfile.mkdtemp(prefix=CACHE_DIR_PREFIX, dir=parent)
        tempfile.TemporaryFile(dir=path).close()  # writable (numba checks the same way)
    except OSError:
        return None
    return path


def _choose() -> bool:
    """Set up a cache location if needed; return whether kernels can be cached."""
    config = numba.config
    if os.environ.get("NUMBA_CACHE_DIR") or config.CACHE_DIR or getattr(config, "CACHE_LOCATOR_CLASSES", ""):
        return True  # the user's choice
    if _numba_default_works():
        return True
    try:
        parent = tempfile.gettempdir()
    except OSError:  # no usable temporary directory at all
        parent = None
    path = _private_dir(parent) if parent else None
    log = logging.getLogger("zenstore")
    if path is None:
        log.warning("numba cannot cache zenstore's kernels (package directory, $HOME and the temp "
                    "directory are not writable): compiling them in every process; set "
                    "NUMBA_CACHE_DIR to a writable directory to avoid this")
        return False
    os.environ["NUMBA_CACHE_DIR"] = path
    numba.config.CACHE_DIR = path
    log.info("numba cannot cache beside zenstore's package or in $HOME: caching kernels in %s", path)
    return True


CACHE = _choose()

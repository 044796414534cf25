"""How a kernel called from Python is compiled and which build runs it.

``@kernel(...)`` wraps a numba function (``nogil=True``, cached: see ``_cache.py``) and does two
things plain ``numba.njit`` cannot:

**Declared signatures, compiled on first call.** numba compiles one specialisation per
distinct argument type, and a read-only array (a memory-mapped segment) is a different
type from a writable one, so the same scan was compiled twice. A kernel declared with a
signature whose input arrays are read-only accepts both (numba converts writable to
read-only) and is compiled once. ``njit(signature)`` would compile at decoration, i.e.
at ``import zenstore``; this compiles (or loads from the cache) at the first call and then
disables further compilation, so a call with other types raises ``TypeError`` instead
of compiling silently.

**Fork safety.** numba's ``omp`` threading layer is GNU OpenMP on Linux, which cannot run
in a child forked after the parent started its thread pool: numba terminates the child
("fork() called from a process already using GNU OpenMP"), and a ``multiprocessing``
``Pool`` with the fork start method then waits forever for the lost task. An
``os.register_at_fork`` hook (registered when this module is imported; it only touches
this module's state) marks such a child, and there every ``parallel=True`` kernel runs
a serial twin: the same Python function compiled without ``parallel`` (``prange`` is
then ``range``), lazily and cached on disk like the parallel build. Results are
identical: every parallel kernel's result is independent of how its work is split.
A child forked before any parallel launch, or under a fork-safe layer (``tbb``,
``workqueue``, Intel/LLVM OpenMP), keeps the parallel builds.

**Interrupt safety.** numba imports most of its typing and lowering registries lazily, at
the first compilation or cache load in a process (``BaseContext.refresh``). A
KeyboardInterrupt that lands inside one of those imports leaves a half-imported module
whose registrations stay behind: every later compilation then fails with ``KeyError:
duplicate registration for <class 'numba.core.types.misc.UnicodeType'>`` until the
process restarts (a notebook user pressing Ctrl-C during the first search had to restart
the kernel). So numba's one-time initialisation (:func:`numba_ready`) and the first call
of every kernel -- its compilation or cache load -- run with SIGINT and SIGTERM deferred
(:func:`signals_deferred`): a signal arriving meanwhile is delivered as soon as they
finish. Handlers can only be swapped in the main thread, and Python runs them only
there, so in other threads nothing needs deferring.

The twin is compiled from a copy of the function with its own qualified name: numba's
on-disk cache keys an entry by function name, line and argument types but not by the
``parallel`` flag, so a serial build of the same function loads the parallel build's
cached code (seen with numba 0.68: the "serial" build of a cached parallel function
called the parallel runtime).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import types

import numba as nb

from ._cache import CACHE

SERIAL_SUFFIX = "__serial"

_lock = threading.Lock()  # compiling the declared signatures / building a twin
_serial_only = False  # set in a child forked after GNU OpenMP started
_numba_ready = False  # numba's registries are loaded
DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_deferred():
    """Hold SIGINT and SIGTERM until the block ends, then deliver them (to the handlers
    in place before). In threads other than the main thread: nothing to hold."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {}
    try:
        for sig in DEFERRED_SIGNALS:
            handler = signal.getsignal(sig)
            if handler is signal.SIG_IGN or handler is None:  # ignored, or not set from Python
                continue
            previous[sig] = signal.signal(sig, lambda signum, frame: pending.append(signum))
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)  # the restored handler runs now


def numba_ready() -> None:
    """Load numba's typing and lowering registries once, with signals deferred (see the
    module docstring); numba would otherwise load them inside the first compilation."""
    global _numba_ready
    if _numba_ready:
        return
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.registry import cpu_target

    with signals_deferred(), global_compiler_lock:
        if not _numba_ready:
            cpu_target.target_context.refresh()
            _numba_ready = True


class Kernel:
    """A numba kernel called from Python. Kernels called from other kernels stay plain
    ``numba.njit`` functions: a jitted caller needs a numba dispatcher."""

    def __init__(self, py_func, signatures: tuple, parallel: bool, options: dict) -> None:
        self.py_func = py_func
        self.__name__ = py_func.__name__
        self.__qualname__ = py_func.__qualname__
        self.__module__ = py_func.__module__
        self.__doc__ = py_func.__doc__
        self.parallel = parallel
        self.declared_signatures = signatures
        self._options = {"cache": CACHE, "nogil": True, **options}
        self.dispatcher = nb.njit(parallel=parallel, **self._options)(py_func)
        self._ready = not signatures  # declared signatures compiled
        self._called = False  # the first call (compilation or cache load) has returned
        self._serial = None  # the twin, built in a forked child only

    def __call__(self, *args):
        if not self._called:
            return self._first_call(args)
        if self.parallel and _serial_only:
            return (self._serial or self._build_serial())(*args)
        return self.dispatcher(*args)

    def _first_call(self, args):
        """Compile or load the build, and run it, with signals deferred (module docstring)."""
        numba_ready()
        with signals_deferred():
            if self.parallel and _serial_only:
                result = (self._serial or self._build_serial())(*args)
            else:
                if not self._ready:
                    self._compile_declared()
                result = self.dispatcher(*args)
            self._called = True
        return result

    def load(self) -> None:
        """Compile or load from the cache the declared signatures now (nothing for a
        kernel without them: its builds depend on the arguments of its first call)."""
        numba_ready()
        with signals_deferred():
            if self.parallel and _serial_only:
                self._serial or self._build_serial()
            elif not self._ready:
                self._compile_declared()

    def dispatchers(self) -> list:
        """The builds made so far: the main one, and the serial twin once built."""
        return [self.dispatcher] + ([self._serial] if self._serial is not None else [])

    def _compile_declared(self) -> None:
        with _lock:
            if not self._ready:
                _compile_only(self.dispatcher, self.declared_signatures)
                self._ready = True

    def _build_serial(self):
        with _lock:
            if self._serial is None:
                f = self.py_func
                twin = types.FunctionType(f.__code__, f.__globals__, f.__name__ + SERIAL_SUFFIX,
                                          f.__defaults__, f.__closure__)
                twin.__qualname__ = f.__qualname__ + SERIAL_SUFFIX
                twin.__module__ = f.__module__
                twin.__doc__ = f.__doc__
                serial = nb.njit(**self._options)(twin)
                _compile_only(serial, self.declared_signatures)
                self._serial = serial
        return self._serial


def _compile_only(dispatcher, signatures: tuple) -> None:
    """Compile (or load from the cache) ``signatures`` and allow no others; none: lazy."""
    if signatures:
        for sig in signatures:
            dispatcher.compile(sig)
        dispatcher.disable_compile()


def kernel(*signatures, parallel: bool = False, **options):
    """Decorator: a :class:`Kernel` (``nogil=True``, cached; other numba options pass
    through), compiled for ``signatures`` if given."""

    def wrap(py_func) -> Kernel:
        return Kernel(py_func, signatures, parallel, options)

    return wrap


def serial_only() -> bool:
    """True in a process whose parallel kernels run their serial twins (see module doc)."""
    return _serial_only


def _gnu_openmp_started() -> bool:
    try:
        layer = nb.threading_layer()
    except ValueError:  # no parallel launch yet: the child may start its own pool
        return False
    if layer != "omp":
        return False
    from numba.np.ufunc import omppool

    return getattr(omppool, "openmp_vendor", "GNU") == "GNU"


def _after_fork_in_child() -> None:
    global _serial_only, _lock
    _lock = threading.Lock()  # a parent thread holding it at fork time is gone
    _serial_only = _serial_only or _gnu_openmp_started()


os.register_at_fork(after_in_child=_after_fork_in_child)

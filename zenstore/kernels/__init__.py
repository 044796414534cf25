"""numba kernels (bottom layer): imports only numpy and numba. Each has a numpy twin in
``reference.py`` and a property test against it."""

from . import _threads  # noqa: F401  (must precede the first parallel launch)
from ._kernel import numba_ready, signals_deferred
from .bits import pack_signs, unpack_signs
from .candidates import dot_listed_f16
from .probe import probe_covering
from .rescore import build_nibble_lut, build_nibble_luts, dot_rows_f16, rescore, rescore_by_query, rescore_range
from .signs import rescore_rows, rescore_rows_range
from .scan import (hamming_distances, scan_batch_by_group, scan_batch_by_query_block, scan_listed_by_group,
                   scan_query_parallel, scan_query_serial)
from .topk import heap_push, heap_sorted, topk_largest

__all__ = [
    "numba_ready",
    "signals_deferred",
    "pack_signs",
    "unpack_signs",
    "build_nibble_lut",
    "build_nibble_luts",
    "rescore",
    "rescore_by_query",
    "rescore_range",
    "rescore_rows",
    "rescore_rows_range",
    "scan_batch_by_group",
    "scan_batch_by_query_block",
    "scan_listed_by_group",
    "scan_query_parallel",
    "scan_query_serial",
    "probe_covering",
    "dot_rows_f16",
    "dot_listed_f16",
    "hamming_distances",
    "heap_push",
    "heap_sorted",
    "topk_largest",
]

"""The coarse pass: XOR + popcount over uint64 sign codes, scored as a cheap proxy.

For a stored row ``i`` in base group ``g`` with per-block scales ``s[i, b]``, base
coefficient ``lam[i]`` and additive term ``term[i]``, and a query whose sign code is
``qcode`` and per-block weights ``alpha[b]``, the proxy is

    ip(i)    = qoff[g] * lam[i] + sum_b s[i, b] * alpha[b] * (D_b - 2 * hamming_b(qcode, code_i))
    proxy(i) = ip_w * ip(i) + term[i]

``D_b - 2 * hamming_b`` is exactly ``sign(q_b) . sign(r_b)``, so ``ip`` estimates the
inner product of the query with the dequantized vector ``lam * base[g] + s * sign`` using
a 1-bit query. ``qoff[g]`` is the exact ``q . base[g]``. Cosine and ip use ``ip_w = 1,
term = 0``; l2 uses ``ip_w = 2, lam = 1`` and ``term = 2 c.r_err - ||x||^2`` so that the
proxy is ``||q||^2 - ||q - x||^2`` (see codec.py).

Results go into per-query bounded heaps (see ``topk.py``) which callers carry across
segments; the value kept for each candidate is its proxy and the index is
``row_tag + row``, so candidates of several segments can share one heap.

Rows are grouped by base row: ``group_offsets[g] .. group_offsets[g + 1]`` are the rows
of group ``g``, and only the groups listed in ``groups`` (one query) or flagged in
``probe`` (a batch) are scanned. ``dead[i] != 0`` marks a deleted row; an empty ``dead``
means no row is deleted.

Five scans, named by what they take and how they split the work:

- ``scan_query_serial``: one query, one thread (small scans).
- ``scan_query_parallel``: one query, its probed rows split into equal chunks per thread.
- ``scan_batch_by_query_block``: a batch, blocks of queries in parallel, each block
  walking the union of its queries' groups (queries that probe alike).
- ``scan_batch_by_group``: a batch, runs of groups in parallel, each group read once for
  every query probing it (small ``nprobe``: queries rarely share groups).
- ``scan_listed_by_group``: the same split over listed rows only (a filter's matching
  rows, ``planner.py``): no pass over the other rows, no dead-row mask.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import types

from ._cache import CACHE
from ._intrinsics import popcount64
from ._kernel import kernel
from .topk import heap_push

TILE_BYTES = 32 * 1024  # code rows scored by a query block before moving on


def _array(dtype, ndim: int, readonly: bool = True):
    """C-contiguous array type; read-only ones also accept writable arrays (numba converts)."""
    return types.Array(dtype, ndim, "C", readonly=readonly)


# Declared argument types (see _kernel.py): one compiled specialisation serves segments
# memory-mapped from their files (read-only) and arrays built in memory alike.
_ROWS = (_array(types.uint64, 2), _array(types.float32, 2), _array(types.float32, 1),
         _array(types.float32, 1), _array(types.uint8, 1), _array(types.int64, 1))  # codes .. group_offsets
_QUERIES = (_array(types.uint64, 2), _array(types.float32, 2), _array(types.float32, 2),
            types.float32, types.int64)  # qcodes, alpha, qoff, ip_w, row_tag
_HEAPS = (_array(types.float32, 2, readonly=False), _array(types.int64, 2, readonly=False),
          _array(types.int64, 1, readonly=False))  # heap_vals, heap_idx, heap_size
_GROUPS = _array(types.int64, 1)


@nb.njit(nogil=True, cache=CACHE)
def hamming_distances(codes, qcode, out):
    """out[i] = number of differing bits between codes[i] and qcode (plain Hamming)."""
    n, words = codes.shape
    for i in range(n):
        acc = np.uint64(0)
        for w in range(words):
            acc += popcount64(codes[i, w] ^ qcode[w])
        out[i] = acc


@nb.njit(nogil=True, cache=CACHE)
def _scan_rows(codes, scales, rowlam, rowterm, dead, qcodes, q, alpha, base_ip, ip_w,
               first, stop, row_tag, vals, idxs, size):
    """Proxy of rows first..stop-1 for query q, offered to the heap vals/idxs; returns size.

    A separate (non-parallel) function: compiled on its own it keeps the tight
    XOR + popcount loop that LLVM produces for a plain loop (measured ~8x faster than the
    same code written inside the prange body).
    """
    nblocks = scales.shape[1]
    words_per_block = codes.shape[1] // nblocks
    bits_per_block = words_per_block * 64
    has_dead = dead.shape[0] > 0
    for r in range(first, stop):
        if has_dead and dead[r] != 0:
            continue
        ip = base_ip * rowlam[r]
        for b in range(nblocks):
            h = np.uint64(0)
            w0 = b * words_per_block
            # `range(n)` + offset, not `range(w0, w0 + n)`: only this form vectorizes
            # (measured 35 vs 5 M codes/s at 7680 dims)
            for w in range(words_per_block):
                h += popcount64(codes[r, w0 + w] ^ qcodes[q, w0 + w])
            ip += scales[r, b] * alpha[q, b] * np.float32(bits_per_block - 2 * np.int64(h))
        size = heap_push(vals, idxs, size, ip_w * ip + rowterm[r], row_tag + r)
    return size


@kernel(types.void(*_ROWS, _GROUPS, *_QUERIES, *_HEAPS))
def scan_query_serial(codes, scales, rowlam, rowterm, dead, group_offsets, groups, qcodes, alpha,
                      qoff, ip_w, row_tag, heap_vals, heap_idx, heap_size):
    """``scan_query_parallel`` on one thread: for scans too small to pay for a parallel launch."""
    size = heap_size[0]
    for k in range(groups.shape[0]):
        g = groups[k]
        # np.int64(0), not 0: a literal argument compiles a second _scan_rows
        size = _scan_rows(codes, scales, rowlam, rowterm, dead, qcodes, np.int64(0), alpha,
                          qoff[0, g], ip_w, group_offsets[g], group_offsets[g + 1], row_tag,
                          heap_vals[0], heap_idx[0], size)
    heap_size[0] = size


@kernel(types.void(*_ROWS, _GROUPS, *_QUERIES, types.int64, *_HEAPS), parallel=True)
def scan_query_parallel(codes, scales, rowlam, rowterm, dead, group_offsets, groups, qcodes, alpha,
                        qoff, ip_w, row_tag, n_chunks, heap_vals, heap_idx, heap_size):
    """Proxy-scan the rows of ``groups`` for one query (row 0 of ``qcodes``/``alpha``/``qoff``).

    Work is split into ``n_chunks`` equal pieces of the probed rows, each scanned by its own
    thread into a private heap; the private heaps are then merged into
    ``heap_vals[0] / heap_idx[0]``. Returns nothing; ``heap_size[0]`` is updated.
    """
    n_groups = groups.shape[0]
    starts = np.empty(n_groups + 1, dtype=np.int64)
    starts[0] = 0
    for k in range(n_groups):
        g = groups[k]
        starts[k + 1] = starts[k] + group_offsets[g + 1] - group_offsets[g]
    total = starts[n_groups]
    cap = heap_vals.shape[1]
    if total == 0 or cap == 0:
        return
    n_chunks = max(1, min(n_chunks, total))
    priv_vals = np.empty((n_chunks, cap), dtype=np.float32)
    priv_idx = np.empty((n_chunks, cap), dtype=np.int64)
    priv_size = np.zeros(n_chunks, dtype=np.int64)
    for c in nb.prange(n_chunks):
        lo = total * c // n_chunks
        hi = total * (c + 1) // n_chunks
        # locate the probed group holding virtual row `lo`
        k = np.searchsorted(starts, lo, side="right") - 1
        pos = lo
        size = np.int64(0)
        while pos < hi:
            g = groups[k]
            first = group_offsets[g] + (pos - starts[k])
            take = min(starts[k + 1], hi) - pos
            size = _scan_rows(codes, scales, rowlam, rowterm, dead, qcodes, np.int64(0), alpha,
                              qoff[0, g], ip_w, first, first + take, row_tag, priv_vals[c],
                              priv_idx[c], size)
            pos += take
            k += 1
        priv_size[c] = size
    size = heap_size[0]
    for c in range(n_chunks):
        for t in range(priv_size[c]):
            size = heap_push(heap_vals[0], heap_idx[0], size, priv_vals[c, t], priv_idx[c, t])
    heap_size[0] = size


@kernel(types.void(*_ROWS, _array(types.bool_, 2), *_QUERIES, types.int64, *_HEAPS), parallel=True)
def scan_batch_by_query_block(codes, scales, rowlam, rowterm, dead, group_offsets, probe, qcodes,
                              alpha, qoff, ip_w, row_tag, block, heap_vals, heap_idx, heap_size):
    """Proxy-scan for a batch of queries; ``probe[q, g]`` says whether query q scans group g.

    Queries are processed in blocks of ``block``: each block walks the union of its
    queries' groups once, so every code row is read from memory once per block and scored
    for all of the block's queries while it sits in L1. Blocks run in parallel.
    """
    nq = qcodes.shape[0]
    n_groups = group_offsets.shape[0] - 1
    tile = max(1, TILE_BYTES // (codes.shape[1] * 8))
    n_qblocks = (nq + block - 1) // block
    for qb in nb.prange(n_qblocks):
        q0 = qb * block
        q1 = min(nq, q0 + block)
        for g in range(n_groups):
            wanted = False
            for q in range(q0, q1):
                if probe[q, g]:
                    wanted = True
                    break
            if not wanted:
                continue
            # rows in tiles small enough to stay in L1/L2 while each query of the block
            # scans them
            for t0 in range(group_offsets[g], group_offsets[g + 1], tile):
                t1 = min(t0 + tile, group_offsets[g + 1])
                for q in range(q0, q1):
                    if probe[q, g]:
                        heap_size[q] = _scan_rows(codes, scales, rowlam, rowterm, dead, qcodes, q,
                                                  alpha, qoff[q, g], ip_w, t0, t1, row_tag,
                                                  heap_vals[q], heap_idx[q], heap_size[q])


@kernel(types.void(*_ROWS, _GROUPS, _GROUPS, _GROUPS, *_QUERIES, *_HEAPS), parallel=True)
def scan_batch_by_group(codes, scales, rowlam, rowterm, dead, group_offsets, group_queries,
                        group_start, chunk_groups, qcodes, alpha, qoff, ip_w, row_tag, heap_vals,
                        heap_idx, heap_size):
    """Proxy-scan for a batch, group by group: each probed group is read from memory once
    per batch and scored, tile by tile, for every query that probes it.

    ``group_queries[group_start[g] : group_start[g + 1]]`` are the queries probing group
    ``g``; ``chunk_groups`` (n_chunks + 1) splits the groups into contiguous runs of about
    equal work, one per parallel task. Each task fills private heaps, merged into
    ``heap_vals / heap_idx`` (which may already hold candidates of earlier segments) at the
    end; heaps break ties by index, so the result does not depend on the split.
    """
    nq, cap = heap_vals.shape
    n_chunks = chunk_groups.shape[0] - 1
    tile = max(1, TILE_BYTES // (codes.shape[1] * 8))
    priv_vals = np.empty((n_chunks, nq, cap), dtype=np.float32)
    priv_idx = np.empty((n_chunks, nq, cap), dtype=np.int64)
    priv_size = np.zeros((n_chunks, nq), dtype=np.int64)
    for c in nb.prange(n_chunks):
        for g in range(chunk_groups[c], chunk_groups[c + 1]):
            q0 = group_start[g]
            q1 = group_start[g + 1]
            if q0 == q1:
                continue
            for t0 in range(group_offsets[g], group_offsets[g + 1], tile):
                t1 = min(t0 + tile, group_offsets[g + 1])
                for k in range(q0, q1):
                    q = group_queries[k]
                    priv_size[c, q] = _scan_rows(codes, scales, rowlam, rowterm, dead, qcodes, q,
                                                 alpha, qoff[q, g], ip_w, t0, t1, row_tag,
                                                 priv_vals[c, q], priv_idx[c, q], priv_size[c, q])
    for q in nb.prange(nq):
        size = heap_size[q]
        for c in range(n_chunks):
            for t in range(priv_size[c, q]):
                size = heap_push(heap_vals[q], heap_idx[q], size, priv_vals[c, q, t], priv_idx[c, q, t])
        heap_size[q] = size


# --- restricted passes: only listed rows (a filter's matching rows) --------------------------------


@nb.njit(nogil=True, cache=CACHE)
def _scan_listed(codes, scales, rowlam, rowterm, listed, first, stop, qcodes, q, alpha, base_ip, ip_w,
                 row_tag, vals, idxs, size):
    """``_scan_rows`` over the rows ``listed[first:stop]`` instead of a range of rows (the
    same loop, kept separate for the same reason)."""
    nblocks = scales.shape[1]
    words_per_block = codes.shape[1] // nblocks
    bits_per_block = words_per_block * 64
    for i in range(first, stop):
        r = listed[i]
        ip = base_ip * rowlam[r]
        for b in range(nblocks):
            h = np.uint64(0)
            w0 = b * words_per_block
            for w in range(words_per_block):
                h += popcount64(codes[r, w0 + w] ^ qcodes[q, w0 + w])
            ip += scales[r, b] * alpha[q, b] * np.float32(bits_per_block - 2 * np.int64(h))
        size = heap_push(vals, idxs, size, ip_w * ip + rowterm[r], row_tag + r)
    return size


_LISTED_ROWS = (_array(types.uint64, 2), _array(types.float32, 2), _array(types.float32, 1),
                _array(types.float32, 1), _GROUPS, _GROUPS)  # codes .. rowterm, listed, list_offsets


@kernel(types.void(*_LISTED_ROWS, _GROUPS, _GROUPS, _GROUPS, *_QUERIES, *_HEAPS), parallel=True)
def scan_listed_by_group(codes, scales, rowlam, rowterm, listed, list_offsets, group_queries, group_start,
                         chunk_groups, qcodes, alpha, qoff, ip_w, row_tag, heap_vals, heap_idx, heap_size):
    """``scan_batch_by_group`` over listed rows only: of group ``g`` just the rows
    ``listed[list_offsets[g] : list_offsets[g + 1]]`` are scored (ascending rows of that
    group, e.g. the rows a payload filter selects), so the work is the listed rows of the
    probed groups -- no pass over the others, no dead-row mask. ``chunk_groups`` splits the
    groups into runs of about equal work, one per parallel task (one query or many)."""
    nq, cap = heap_vals.shape
    n_chunks = chunk_groups.shape[0] - 1
    tile = max(1, TILE_BYTES // (codes.shape[1] * 8))
    priv_vals = np.empty((n_chunks, nq, cap), dtype=np.float32)
    priv_idx = np.empty((n_chunks, nq, cap), dtype=np.int64)
    priv_size = np.zeros((n_chunks, nq), dtype=np.int64)
    for c in nb.prange(n_chunks):
        for g in range(chunk_groups[c], chunk_groups[c + 1]):
            q0 = group_start[g]
            q1 = group_start[g + 1]
            if q0 == q1:
                continue
            for t0 in range(list_offsets[g], list_offsets[g + 1], tile):
                t1 = min(t0 + tile, list_offsets[g + 1])
                for k in range(q0, q1):
                    q = group_queries[k]
                    priv_size[c, q] = _scan_listed(codes, scales, rowlam, rowterm, listed, t0, t1, qcodes, q,
                                                   alpha, qoff[q, g], ip_w, row_tag, priv_vals[c, q],
                                                   priv_idx[c, q], priv_size[c, q])
    for q in nb.prange(nq):
        size = heap_size[q]
        for c in range(n_chunks):
            for t in range(priv_size[c, q]):
                size = heap_push(heap_vals[q], heap_idx[q], size, priv_vals[c, q, t], priv_idx[c, q, t])
        heap_size[q] = size

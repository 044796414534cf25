"""Plain-numpy twins of every kernel: slow, obviously correct, used by the tests."""

from __future__ import annotations

import numpy as np


def pack_signs_ref(x: np.ndarray) -> np.ndarray:
    bits = np.packbits(np.asarray(x) > 0, axis=1, bitorder="little")
    return np.ascontiguousarray(bits).view("<u8")


def hamming_ref(codes: np.ndarray, qcode: np.ndarray) -> np.ndarray:
    x = np.bitwise_xor(codes, qcode[None, :])
    return np.unpackbits(x.view(np.uint8), axis=1).sum(axis=1).astype(np.int64)


def signs_ref(codes: np.ndarray) -> np.ndarray:
    bits = np.unpackbits(np.ascontiguousarray(codes).view(np.uint8), axis=1, bitorder="little")
    return bits.astype(np.float64) * 2 - 1


def row_groups_ref(group_offsets: np.ndarray) -> np.ndarray:
    """Group index of every row."""
    return np.repeat(np.arange(len(group_offsets) - 1), np.diff(group_offsets))


def proxy_ref(codes, scales, rowlam, rowterm, group_offsets, qcode, alpha, qoff, ip_w):
    """Proxy of every row (see kernels/scan.py), computed with float64 sign arithmetic."""
    n, words = codes.shape
    nb = scales.shape[1]
    signs = signs_ref(codes).reshape(n, nb, -1)
    qsign = signs_ref(qcode[None, :]).reshape(nb, -1)
    dots = np.einsum("nbd,bd->nb", signs, qsign)
    ip = qoff[row_groups_ref(group_offsets)] * rowlam + (scales * alpha[None, :] * dots).sum(1)
    return ip_w * ip + rowterm


def dequantize_ref(codes, scales, base_rows, rowlam):
    """rowlam[i] * base_rows[i] + s[i, b] * sign(code_i) in block b, as float64 (n, d)."""
    n = codes.shape[0]
    nb = scales.shape[1]
    signs = signs_ref(codes).reshape(n, nb, -1)
    return rowlam[:, None] * base_rows + (signs * scales[:, :, None]).reshape(n, -1)


def rescore_ref(codes, scales, rowlam, rowterm, group_offsets, base, q, ip_w):
    groups = row_groups_ref(group_offsets)
    xhat = dequantize_ref(codes, scales, base[groups].astype(np.float64), rowlam.astype(np.float64))
    return ip_w * (xhat @ q.astype(np.float64)) + rowterm


def topk_ref(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest values, ties broken by smaller index."""
    order = np.lexsort((np.arange(len(values)), -np.asarray(values)))
    return order[:k]


def scan_listed_ref(codes, scales, rowlam, rowterm, group_offsets, listed, probe, qcode, alpha, qoff, ip_w):
    """(rows, proxies) a restricted pass over ``listed`` rows scores for one query: the
    listed rows whose group ``probe`` flags, with their proxies (``scan_listed_by_group``)."""
    groups = row_groups_ref(group_offsets)
    rows = np.asarray(listed, dtype=np.int64)
    rows = rows[probe[groups[rows]]] if len(rows) else rows
    proxies = proxy_ref(codes, scales, rowlam, rowterm, group_offsets, qcode, alpha, qoff, ip_w)
    return rows, proxies[rows]


def probe_covering_ref(closeness, group_rows, matches, nprobe, k):
    """Twin of ``probe.probe_covering``: a full stable sort of each query's base rows."""
    nq, g = closeness.shape
    matches = np.asarray(matches)
    order = np.argsort(-np.asarray(closeness, dtype=np.float64), axis=1, kind="stable")
    goal = np.asarray(group_rows)[order[:, :nprobe]].sum(axis=1)
    goal = np.maximum(np.minimum(np.maximum(goal, k), int(matches.sum())), 1)
    covered = np.cumsum(matches[order], axis=1)
    take = np.maximum((covered < goal[:, None]).sum(axis=1) + 1, min(nprobe, g))
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(g)[None, :], axis=1)
    return (rank < take[:, None]) & (matches > 0)[None, :]


def dot_listed_ref(a: np.ndarray, base: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """a[i] . base[idx[i, j]] in float64 (kernels/candidates.py)."""
    b = np.asarray(base, dtype=np.float64)
    return np.einsum("id,ijd->ij", np.asarray(a, dtype=np.float64), b[idx])


def nearest_of_candidates_ref(x, base, base_sqnorm, cand):
    """For each row, the candidate base row nearest in L2, in float64 (first on ties)."""
    x = np.asarray(x, dtype=np.float64)
    rows = np.asarray(base, dtype=np.float64)[cand]  # (n, c, d)
    dist = np.asarray(base_sqnorm, dtype=np.float64)[cand] - 2 * np.einsum("nd,ncd->nc", x, rows)
    return cand[np.arange(len(cand)), np.argmin(dist, axis=1)]


def sum_rows_by_label_ref(x, labels, k):
    """(sums (k, d) float64, counts (k,)) of the rows of each label."""
    sums = np.zeros((k, x.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, np.asarray(x, dtype=np.float64))
    return sums, np.bincount(labels, minlength=k)


def encode_residuals_ref(xr, base, groups, nblocks):
    """(codes, l1, sq, cb, cr) of ``kernels.bits.encode_residuals``, in float64."""
    c = np.asarray(base, dtype=np.float64)[groups]
    r = np.asarray(xr, dtype=np.float64) - c
    n, d = r.shape
    rb, cbk = r.reshape(n, nblocks, -1), c.reshape(n, nblocks, -1)
    sign = np.where(rb > 0, 1.0, -1.0)
    return (pack_signs_ref(r), np.abs(rb).sum(2), (rb * rb).sum(2), (cbk * sign).sum(2), (c * r).sum(1))


def rescore_rows_ref(codes, scales, rowlam, rowterm, rows, qoff, qslot, queries, ip_w):
    """``kernels.signs.rescore_rows`` in float64: ``codes`` the segment's uint64 words."""
    signs = 2.0 * np.unpackbits(np.ascontiguousarray(codes[rows]).view(np.uint8), axis=1,
                                bitorder="little").astype(np.float64) - 1.0  # (n, d)
    q = np.asarray(queries, dtype=np.float64)[qslot]
    n, d = signs.shape
    blocks = scales.shape[1]
    per_block = (signs * q).reshape(n, blocks, d // blocks).sum(axis=2)
    ip = np.asarray(qoff, np.float64) * rowlam[rows] + (scales[rows].astype(np.float64) * per_block).sum(axis=1)
    return ip_w * ip + rowterm[rows]


def hadamard_ref(n: int) -> np.ndarray:
    """The n x n Sylvester Hadamard matrix (entries +-1; n a power of two)."""
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def rotate_ref(x, signs, perms, block, normalize):
    """``kernels.hadamard.rotate_rows`` in float64: per round ``y[j] = s[p[j]] x[p[j]]``,
    then the block Walsh-Hadamard transform, scaled to stay orthonormal."""
    y = np.asarray(x, dtype=np.float64)
    if normalize:
        norms = np.linalg.norm(y, axis=1, keepdims=True)
        y = np.where(norms > 0, y / np.where(norms > 0, norms, 1), y)
    h = hadamard_ref(block) / np.sqrt(block)
    n, d = y.shape
    for s, p in zip(signs, perms):
        y = (y * s)[:, p]
        y = (y.reshape(n, d // block, block) @ h.T).reshape(n, d)
    return y

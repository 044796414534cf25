"""LLVM operations numba does not expose: hardware popcount, fp16 -> fp32, prefetch, and three
kernels' inner steps written with vector types (a sign-selected sum, a 16-point Hadamard, a
dot product).

``popcount64``: numba has no popcount of its own; LLVM lowers ``llvm.ctpop.i64`` to the
``popcnt`` instruction when the host CPU has it (numba compiles for the host), and to a
short bit-twiddling sequence otherwise, so the result is always correct.

``f16_to_f32``: numba has no float16 type on the CPU; this reinterprets a uint16 as an
IEEE half and widens it (exactly) with ``fpext``, which LLVM turns into ``vcvtph2ps``
where the CPU has F16C. The base matrix is stored fp16, so reading it as uint16 and
widening in the kernel halves the memory a query's ``q . base`` pass streams.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def popcount64(typingctx, x):
    """Number of set bits of a 64-bit integer (returns uint64)."""
    if not isinstance(x, types.Integer) or x.bitwidth != 64:
        return None
    sig = types.uint64(x)

    def codegen(context, builder, signature, args):
        (value,) = args
        i64 = ir.IntType(64)
        fn = builder.module.declare_intrinsic("llvm.ctpop", [i64], ir.FunctionType(i64, [i64]))
        return builder.call(fn, [value])

    return sig, codegen


@intrinsic
def f16_to_f32(typingctx, x):
    """The float32 value of the IEEE half whose bits are the uint16 ``x`` (exact)."""
    if not isinstance(x, types.Integer) or x.bitwidth != 16:
        return None
    sig = types.float32(x)

    def codegen(context, builder, signature, args):
        (bits,) = args
        return builder.fpext(builder.bitcast(bits, ir.HalfType()), ir.FloatType())

    return sig, codegen


@intrinsic
def prefetch(typingctx, arr, i, j):
    """Hint the CPU to load the cache line holding ``arr[i, j]`` (a 2-d array; indices
    in range, unchecked) for reading: ``llvm.prefetch``, a no-op where the CPU has none.
    Kernels that read rows at random (the rescoring reads shortlisted rows where they are
    mapped) ask for the next rows while working on this one."""
    if not isinstance(arr, types.Array) or arr.ndim != 2:
        return None
    sig = types.void(arr, i, j)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1], args[2]], wraparound=False)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p], ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]))
        # read, keep in all cache levels, data cache
        builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


SIGN_UNROLL = 2  # code words per loop step: two independent pairs of accumulator chains


def _lane_sum(builder, v):
    """The sum of a ``<16 x float>``'s lanes as a tree of halves (4 dependent adds, not 15);
    the fixed order is part of the intrinsics' results."""
    i32 = ir.IntType(32)
    width = v.type.count
    while width > 1:
        half = width // 2
        low, high = (ir.Constant(ir.VectorType(i32, half), list(range(lo, lo + half))) for lo in (0, half))
        v = builder.fadd(builder.shuffle_vector(v, v, low), builder.shuffle_vector(v, v, high))
        width = half
    return builder.extract_element(v, ir.Constant(i32, 0))


@intrinsic
def signed_sum32(typingctx, codes, r, w0, w1, queries, qi):
    """``sum_k q[k] * (+1 if bit k is set else -1)`` over the coordinates of code words
    ``w0 .. w1-1`` of row ``r`` (``codes``: (N, W) uint32, bit ``j`` of word ``w`` is
    coordinate ``32 w + j``; ``q`` = ``queries[qi]``, (Q, 32 W) float32; indices unchecked).

    Why IR: each 16 bits of a word become a ``<16 x i1>`` lane mask (a bitcast), so on
    AVX-512 a 16-coordinate step is one ``kmovw`` and one masked ``vaddps`` (plus the plain
    add of the same lanes into the total: the result is ``2 * selected - total``). numba's
    scalar formulation (a select per lane of a 32-wide local array) compiled to shifts,
    compares and blends, ~2.8x slower per 7680-d row on that CPU (docs/benchmarks.md,
    "Rescoring with lane masks"). Two words per step keep four accumulator chains in
    flight (float adds have a 4-cycle latency), and the total is reduced as a tree. Without
    AVX-512, LLVM lowers the same mask select with vector compares: correct, not measured.
    """
    if not (isinstance(codes, types.Array) and codes.ndim == 2 and codes.dtype == types.uint32
            and isinstance(queries, types.Array) and queries.ndim == 2 and queries.dtype == types.float32):
        return None
    sig = types.float32(codes, r, w0, w1, queries, qi)

    def codegen(context, builder, signature, args):
        cty, _, _, _, qty, _ = signature.args
        carr = context.make_array(cty)(context, builder, args[0])
        qarr = context.make_array(qty)(context, builder, args[4])
        row, first, last, qrow = (context.cast(builder, a, t, types.int64)
                                  for a, t in zip((args[1], args[2], args[3], args[5]),
                                                  (signature.args[1], signature.args[2], signature.args[3], signature.args[5])))
        i64, i32, i16, f32 = ir.IntType(64), ir.IntType(32), ir.IntType(16), ir.FloatType()
        v16, m16 = ir.VectorType(f32, 16), ir.VectorType(ir.IntType(1), 16)
        zero = ir.Constant(v16, [0.0] * 16)
        words = cgutils.get_item_pointer(context, builder, cty, carr, [row, first], wraparound=False)
        qstart = builder.mul(first, ir.Constant(i64, 32))
        qvec = builder.bitcast(cgutils.get_item_pointer(context, builder, qty, qarr, [qrow, qstart], wraparound=False),
                               v16.as_pointer())
        n = builder.sub(last, first)
        # per unrolled word k: selected low / high half, total low / high half
        accs = [cgutils.alloca_once_value(builder, zero) for _ in range(4 * SIGN_UNROLL)]

        def add_word(i, k):
            word = builder.load(builder.gep(words, [i]))
            lo = builder.bitcast(builder.trunc(word, i16), m16)
            hi = builder.bitcast(builder.trunc(builder.lshr(word, ir.Constant(i32, 16)), i16), m16)
            i2 = builder.mul(i, ir.Constant(i64, 2))
            qlo = builder.load(builder.gep(qvec, [i2]), align=4)
            qhi = builder.load(builder.gep(qvec, [builder.add(i2, ir.Constant(i64, 1))]), align=4)
            sel_lo, sel_hi, tot_lo, tot_hi = accs[4 * k: 4 * k + 4]
            for acc, value in ((sel_lo, builder.select(lo, qlo, zero)), (sel_hi, builder.select(hi, qhi, zero)),
                               (tot_lo, qlo), (tot_hi, qhi)):
                builder.store(builder.fadd(builder.load(acc), value), acc)

        unroll = ir.Constant(i64, SIGN_UNROLL)
        steps = builder.udiv(n, unroll)
        with cgutils.for_range(builder, steps) as loop:
            start = builder.mul(loop.index, unroll)
            for k in range(SIGN_UNROLL):
                add_word(builder.add(start, ir.Constant(i64, k)), k)
        done = builder.mul(steps, unroll)
        with cgutils.for_range(builder, builder.sub(n, done)) as loop:
            add_word(builder.add(done, loop.index), 0)
        sel, tot = zero, zero
        for k in range(SIGN_UNROLL):
            sel = builder.fadd(sel, builder.fadd(builder.load(accs[4 * k]), builder.load(accs[4 * k + 1])))
            tot = builder.fadd(tot, builder.fadd(builder.load(accs[4 * k + 2]), builder.load(accs[4 * k + 3])))
        return _lane_sum(builder, builder.fsub(builder.fmul(sel, ir.Constant(v16, [2.0] * 16)), tot))

    return sig, codegen


@intrinsic
def hadamard16(typingctx, v, start):
    """In place: the unnormalised 16-point Walsh-Hadamard transform of ``v[start : start + 16]``
    (a C-contiguous float32 1-d array; unchecked), i.e. butterfly stages 1, 2, 4 and 8.

    Why IR: the four stages pair elements inside one 16-float vector, which numba's loops
    cannot express without scalar code (the three-stage 8-point block this replaces ran
    scalar). Stage ``h`` is one lane shuffle, a multiply by +-1 and an add per vector:
    ``new[i] = v[i ^ h] + sign_h[i] * v[i]`` with ``sign_h[i] = -1`` where bit ``h`` of ``i`` is
    set -- the butterflies' sums and differences, bit for bit (the product by +-1 is exact).
    """
    if not (isinstance(v, types.Array) and v.ndim == 1 and v.dtype == types.float32):
        return None
    sig = types.void(v, start)

    def codegen(context, builder, signature, args):
        aty = signature.args[0]
        arr = context.make_array(aty)(context, builder, args[0])
        first = context.cast(builder, args[1], signature.args[1], types.int64)
        f32, i32 = ir.FloatType(), ir.IntType(32)
        v16 = ir.VectorType(f32, 16)
        ptr = builder.bitcast(cgutils.get_item_pointer(context, builder, aty, arr, [first], wraparound=False),
                              v16.as_pointer())
        x = builder.load(ptr, align=4)
        for h in (1, 2, 4, 8):
            partner = builder.shuffle_vector(x, x, ir.Constant(ir.VectorType(i32, 16), [i ^ h for i in range(16)]))
            sign = ir.Constant(v16, [-1.0 if i & h else 1.0 for i in range(16)])
            x = builder.fadd(partner, builder.fmul(x, sign))
        builder.store(x, ptr, align=4)
        return context.get_dummy_value()

    return sig, codegen


DOT_CHAINS = 4  # independent 16-float accumulators of row_dot


@intrinsic
def row_dot(typingctx, a, i, b, g):
    """``a[i] . b[g]`` in float32 (``a``: (n, d) float32; ``b``: (m, d) float32, or an fp16
    matrix as its uint16 bits, widened exactly; d a multiple of 64; unchecked).

    Why IR: a numba loop over a 16-lane local array keeps the accumulator in memory, one
    store-to-load round trip per 16 values (the assignment kernel ran at ~1.7 us per
    7680-d product that way). Here four ``<16 x float>`` accumulators stay in registers;
    the summation order is fixed (chains, then a tree), so every CPU gets the same value.
    """
    if not (isinstance(a, types.Array) and a.ndim == 2 and a.dtype == types.float32
            and isinstance(b, types.Array) and b.ndim == 2 and b.dtype in (types.float32, types.uint16)):
        return None
    sig = types.float32(a, i, b, g)

    def codegen(context, builder, signature, args):
        aty, ity, bty, gty = signature.args
        aarr = context.make_array(aty)(context, builder, args[0])
        barr = context.make_array(bty)(context, builder, args[2])
        row = context.cast(builder, args[1], ity, types.int64)
        grp = context.cast(builder, args[3], gty, types.int64)
        i64, f32 = ir.IntType(64), ir.FloatType()
        v16 = ir.VectorType(f32, 16)
        zero64 = ir.Constant(i64, 0)
        half = bty.dtype == types.uint16
        src = ir.VectorType(ir.HalfType(), 16) if half else v16
        ap = builder.bitcast(cgutils.get_item_pointer(context, builder, aty, aarr, [row, zero64], wraparound=False),
                             v16.as_pointer())
        bp = builder.bitcast(cgutils.get_item_pointer(context, builder, bty, barr, [grp, zero64], wraparound=False),
                             src.as_pointer())
        d = builder.extract_value(aarr.shape, 1)
        steps = builder.udiv(d, ir.Constant(i64, 16 * DOT_CHAINS))
        zero = ir.Constant(v16, [0.0] * 16)
        accs = [cgutils.alloca_once_value(builder, zero) for _ in range(DOT_CHAINS)]
        with cgutils.for_range(builder, steps) as loop:
            base = builder.mul(loop.index, ir.Constant(i64, DOT_CHAINS))
            for k, acc in enumerate(accs):
                at = builder.add(base, ir.Constant(i64, k))
                x = builder.load(builder.gep(ap, [at]), align=4)
                y = builder.load(builder.gep(bp, [at]), align=2 if half else 4)
                if half:
                    y = builder.fpext(y, v16)
                builder.store(builder.fadd(builder.load(acc), builder.fmul(x, y)), acc)
        chains = [builder.load(acc) for acc in accs]
        while len(chains) > 1:  # pairwise: ((a0 + a1) + (a2 + a3)) for four chains
            chains = [builder.fadd(chains[k], chains[k + 1]) for k in range(0, len(chains), 2)]
        return _lane_sum(builder, chains[0])

    return sig, codegen

"""LLVM operations numba does not expose: hardware popcount, fp16 -> fp32, prefetch.

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

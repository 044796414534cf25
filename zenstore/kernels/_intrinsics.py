"""LLVM operations numba does not expose: hardware popcount and fp16 -> fp32.

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

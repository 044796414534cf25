"""Hardware popcount for numba: the ``llvm.ctpop.i64`` intrinsic.

numba has no popcount of its own; LLVM lowers this intrinsic to the ``popcnt``
instruction when the host CPU has it (numba compiles for the host), and to a short
bit-twiddling sequence otherwise, so the result is always correct.
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

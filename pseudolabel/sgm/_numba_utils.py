"""Small Numba helpers shared by the SGM kernels."""

from __future__ import annotations

from llvmlite import ir  # llvmlite ships with numba
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def popcount64(typingctx, value):  # type: ignore[no-untyped-def]
    """Number of set bits of a ``uint64`` (compiles to the ``llvm.ctpop`` intrinsic)."""
    signature = types.uint64(types.uint64)

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return builder.ctpop(args[0])

    return signature, codegen


@intrinsic
def prefetch(typingctx, array, index):  # type: ignore[no-untyped-def]
    """Hint the CPU to load the cache line holding element ``index`` of ``array``'s buffer (flat, C order).

    Compiles to the ``llvm.prefetch`` intrinsic (read, keep in all cache levels): no effect on results,
    and never a fault, even for an address outside the array.
    """
    signature = types.void(array, types.intp)

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        data = context.make_array(sig.args[0])(context, builder, args[0]).data
        byte_pointer = ir.IntType(8).as_pointer()
        int32 = ir.IntType(32)
        function = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, int32, int32, int32]), "llvm.prefetch.p0"
        )
        builder.call(function, [builder.bitcast(builder.gep(data, [args[1]]), byte_pointer), int32(0), int32(3), int32(1)])
        return context.get_dummy_value()

    return signature, codegen

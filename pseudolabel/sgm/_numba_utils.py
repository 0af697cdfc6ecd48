"""Small Numba helpers shared by the SGM kernels."""

from __future__ import annotations

from llvmlite import ir  # noqa: F401  (llvmlite ships with numba)
from numba import types
from numba.extending import intrinsic


@intrinsic
def popcount64(typingctx, value):  # type: ignore[no-untyped-def]
    """Number of set bits of a ``uint64`` (compiles to the ``llvm.ctpop`` intrinsic)."""
    signature = types.uint64(types.uint64)

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        return builder.ctpop(args[0])

    return signature, codegen

"""Small Numba helpers shared by the SGM kernels."""

from __future__ import annotations

from typing import Any

from llvmlite import ir  # llvmlite ships with numba
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

ROW_KERNEL: dict[str, Any] = {"cache": True, "nogil": True, "_nrt": False, "error_model": "numpy"}  # Any: numba's stubs omit _nrt
"""Numba options of the allocation-free kernels that the aggregation calls for every row or chunk of a row.

* ``_nrt=False``: without it every array view such a kernel takes (``cost[y, x]``, ``curves[x, a:b]``:
  several per pixel and direction) increments and decrements its buffer's reference count with a
  locked instruction in a call to ``nrt_atomic_add``: on a Middlebury-sized pair about a fifth of the
  aggregation's time. The kernels allocate nothing and their callers hold the references, so nothing
  needs counting there; a kernel compiled with it may not allocate arrays.
* ``error_model="numpy"``: no test for a zero divisor before each division, a test whose branch keeps
  LLVM from vectorising the loop of adaptive penalties (``P2 / (1 + |dI| / gamma)``, a divisor of at
  least 1; ``gamma > 0`` is checked by :class:`pseudolabel.sgm.params.SGMParams`). Every division in
  these kernels has a divisor that cannot be zero, so results are unchanged.
"""


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

"""Matrix products through SciPy's BLAS, callable from jitted code.

SciPy publishes the Fortran-convention ``sgemm`` and ``dgemm`` of the BLAS it
ships in ``scipy.linalg.cython_blas.__pyx_capi__``, as capsules holding function
pointers. A pointer is only valid in the process that read it, so it must never
be baked into compiled code: Numba's cache would hand the stale address to the
next process. Instead, at import time this module registers each address with
LLVM under a name of its own (``numconv_sgemm``, ``numconv_dgemm``), and the
jitted code calls the function by that name. Whenever a cached kernel is loaded,
LLVM resolves the name against the current process's registration, so this
module must be imported before any kernel that calls ``gemm`` is loaded (the
kernel modules import it at the top).

Threads: every kernel that calls ``gemm`` runs it from inside a Numba parallel
loop, one BLAS call per Numba thread. A multi-threaded BLAS would then start its
own threads under each Numba thread and oversubscribe the cores, so callers hold
the BLAS to one thread with ``single_threaded()`` around the kernel call.
"""

import contextlib
import ctypes
import ctypes.util
import threading

import llvmlite.binding as llvm
import scipy.linalg.cython_blas as _cython_blas
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

SYMBOLS = {"float32": "numconv_sgemm", "float64": "numconv_dgemm"}

# Characters that select op(A) = A or op(A) = A^T, as BLAS reads them.
NO_TRANS = ord("N")
TRANS = ord("T")


def _capsule_address(capsule):
    """The function pointer a capsule holds, as an int."""
    api = ctypes.pythonapi
    api.PyCapsule_GetName.restype = ctypes.c_char_p
    api.PyCapsule_GetName.argtypes = [ctypes.py_object]
    api.PyCapsule_GetPointer.restype = ctypes.c_void_p
    api.PyCapsule_GetPointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return api.PyCapsule_GetPointer(capsule, api.PyCapsule_GetName(capsule))


def _register():
    addresses = {}
    for dtype, name in (("float32", "sgemm"), ("float64", "dgemm")):
        address = _capsule_address(_cython_blas.__pyx_capi__[name])
        llvm.add_symbol(SYMBOLS[dtype], address)
        addresses[dtype] = address
    return addresses


ADDRESSES = _register()


@intrinsic
def gemm(typingctx, transa, transb, m, n, k, alpha, a, a_off, lda, b, b_off, ldb,
         beta, c, c_off, ldc):
    """C := alpha * op(A) @ op(B) + beta * C, in BLAS's column-major convention.

    ``a``, ``b`` and ``c`` are arrays of one dtype (float32 calls sgemm, float64
    dgemm); each matrix starts ``*_off`` elements into its array's buffer and has
    leading dimension ``ld*``. ``transa`` and ``transb`` are ``NO_TRANS`` or
    ``TRANS``. op(A) is (m x k), op(B) is (k x n) and C is (m x n). The integers
    must fit in 32 bits; nothing is checked.
    """
    dtype = c.dtype
    if not all(isinstance(arr, types.Array) for arr in (a, b, c)):
        return None
    if a.dtype != dtype or b.dtype != dtype or str(dtype) not in SYMBOLS:
        return None
    signature = types.void(transa, transb, m, n, k, alpha, a, a_off, lda, b, b_off,
                           ldb, beta, c, c_off, ldc)
    symbol = SYMBOLS[str(dtype)]

    def codegen(context, builder, sig, args):
        argtys = sig.args
        char, int32 = ir.IntType(8), ir.IntType(32)
        real = context.get_value_type(dtype)

        def on_stack(i, to_type, llvm_type):
            # BLAS takes every argument by reference: one stack slot each, in
            # the function's entry block so loops do not grow the stack.
            value = context.cast(builder, args[i], argtys[i], to_type)
            slot = cgutils.alloca_once(builder, llvm_type)
            builder.store(value, slot)
            return slot

        def matrix(i):
            ary = context.make_array(argtys[i])(context, builder, args[i])
            offset = context.cast(builder, args[i + 1], argtys[i + 1], types.intp)
            return builder.gep(ary.data, [offset])

        call_args = [
            on_stack(0, types.int8, char),
            on_stack(1, types.int8, char),
            on_stack(2, types.int32, int32),
            on_stack(3, types.int32, int32),
            on_stack(4, types.int32, int32),
            on_stack(5, dtype, real),
            matrix(6),
            on_stack(8, types.int32, int32),
            matrix(9),
            on_stack(11, types.int32, int32),
            on_stack(12, dtype, real),
            matrix(13),
            on_stack(15, types.int32, int32),
        ]
        fnty = ir.FunctionType(ir.VoidType(), [arg.type for arg in call_args])
        fn = cgutils.get_or_insert_function(builder.module, fnty, symbol)
        builder.call(fn, call_args)
        return context.get_dummy_value()

    return signature, codegen


def _blas_library():
    """The shared library that holds SciPy's sgemm, or None if it cannot be found."""

    class DlInfo(ctypes.Structure):
        _fields_ = [
            ("dli_fname", ctypes.c_char_p),
            ("dli_fbase", ctypes.c_void_p),
            ("dli_sname", ctypes.c_char_p),
            ("dli_saddr", ctypes.c_void_p),
        ]

    try:
        libdl = ctypes.CDLL(ctypes.util.find_library("dl") or "libdl.so.2")
        libdl.dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(DlInfo)]
    except (OSError, AttributeError):
        return None
    info = DlInfo()
    if not libdl.dladdr(ADDRESSES["float32"], ctypes.byref(info)) or not info.dli_fname:
        return None
    try:
        return ctypes.CDLL(info.dli_fname.decode())
    except OSError:
        return None


def _thread_controls():
    """(get, set) for the thread count of the BLAS behind cython_blas, or None.

    ``cython_blas`` is a thin Cython layer; the BLAS itself (OpenBLAS in SciPy's
    wheels) is another library it links to, found here through the libraries the
    process has loaded.
    """
    candidates = [_blas_library()]
    for name in ("scipy_openblas", "openblas"):
        path = ctypes.util.find_library(name)
        if path:
            candidates.append(path)
    pairs = [
        ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
        ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
        ("openblas_get_num_threads", "openblas_set_num_threads"),
        ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ]
    for lib in candidates:
        if lib is None:
            continue
        if isinstance(lib, str):
            try:
                lib = ctypes.CDLL(lib)
            except OSError:
                continue
        for get_name, set_name in pairs:
            get = getattr(lib, get_name, None)
            set_ = getattr(lib, set_name, None)
            if get is not None and set_ is not None:
                get.restype, get.argtypes = ctypes.c_int, []
                set_.restype, set_.argtypes = None, [ctypes.c_int]
                return get, set_
    return None


_CONTROLS = _thread_controls()

# The BLAS thread count is one process-wide setting; these count the callers
# inside ``single_threaded`` so that concurrent callers restore it only once.
_lock = threading.Lock()
_depth = [0]
_saved = [None]


def can_limit_threads():
    """True when numconv found how to set the BLAS's thread count."""
    return _CONTROLS is not None


@contextlib.contextmanager
def single_threaded():
    """Hold the BLAS behind ``gemm`` to one thread; restore the setting after.

    The setting is process-wide, so a BLAS call made by another Python thread
    while this is active also runs on one thread. Where the thread count cannot
    be set (a BLAS without OpenBLAS's interface) this does nothing.
    """
    if _CONTROLS is None:
        yield
        return
    get, set_ = _CONTROLS
    with _lock:
        if _depth[0] == 0:
            _saved[0] = get()
            if _saved[0] != 1:
                set_(1)
        _depth[0] += 1
    try:
        yield
    finally:
        with _lock:
            _depth[0] -= 1
            if _depth[0] == 0 and _saved[0] != 1:
                set_(_saved[0])

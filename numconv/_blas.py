"""Matrix products through SciPy's BLAS, callable from jitted code.

SciPy publishes the Fortran-convention ``sgemm`` and ``dgemm`` of the BLAS it
ships in ``scipy.linalg.cython_blas.__pyx_capi__``, as capsules holding function
pointers. A pointer is only valid in the process that read it, so it must never
be baked into compiled code: Numba's cache would hand the stale address to the
next process. Instead, ``bind()`` registers each address with LLVM under a name
of its own (``numconv_sgemm``, ``numconv_dgemm``), and the jitted code calls the
function by that name. Whenever a compiled or cached kernel is loaded, LLVM
resolves the name against the current process's registration, so ``bind()``
must run before the first call of any kernel that uses ``gemm``;
``single_threaded()`` runs it, and every caller enters that first. (Importing
cython_blas costs nothing extra by then: Numba imports it itself when it sets
up its compiler, at the first call of any jitted function.)

Threads: every kernel that calls ``gemm`` runs it from inside a Numba parallel
loop, one BLAS call per Numba thread. A multi-threaded BLAS would then start its
own threads under each Numba thread and oversubscribe the cores, so callers hold
the BLAS to one thread with ``single_threaded()`` around the kernel call.
"""

import contextlib
import ctypes
import threading

import llvmlite.binding as llvm
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
    """Register SciPy's sgemm and dgemm with LLVM; return {dtype name: address}."""
    import scipy.linalg.cython_blas as cython_blas

    addresses = {}
    for dtype, name in (("float32", "sgemm"), ("float64", "dgemm")):
        address = _capsule_address(cython_blas.__pyx_capi__[name])
        llvm.add_symbol(SYMBOLS[dtype], address)
        addresses[dtype] = address
    return addresses


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


def _blas_library(address):
    """The shared library that holds the function at ``address``, or None."""

    class DlInfo(ctypes.Structure):
        _fields_ = [
            ("dli_fname", ctypes.c_char_p),
            ("dli_fbase", ctypes.c_void_p),
            ("dli_sname", ctypes.c_char_p),
            ("dli_saddr", ctypes.c_void_p),
        ]

    for libname in (None, "libdl.so.2"):
        try:
            dladdr = ctypes.CDLL(libname).dladdr
        except (OSError, AttributeError):
            continue
        dladdr.argtypes = [ctypes.c_void_p, ctypes.POINTER(DlInfo)]
        info = DlInfo()
        if dladdr(address, ctypes.byref(info)) and info.dli_fname:
            try:
                return ctypes.CDLL(info.dli_fname.decode())
            except OSError:
                return None
    return None


def _thread_controls(address):
    """(get, set) for the thread count of the BLAS behind cython_blas, or None.

    ``cython_blas`` is a thin Cython layer over the BLAS (OpenBLAS in SciPy's
    wheels), which it links to; a symbol looked up through cython_blas's own
    handle is searched in the libraries it depends on as well.
    """
    lib = _blas_library(address)
    if lib is None:
        return None
    pairs = [
        ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
        ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
        ("openblas_get_num_threads", "openblas_set_num_threads"),
        ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ]
    for get_name, set_name in pairs:
        get = getattr(lib, get_name, None)
        set_ = getattr(lib, set_name, None)
        if get is not None and set_ is not None:
            get.restype, get.argtypes = ctypes.c_int, []
            set_.restype, set_.argtypes = None, [ctypes.c_int]
            return get, set_
    return None


# Filled by ``bind()``: the registered addresses and the thread-count controls.
ADDRESSES = {}
_CONTROLS = []
_bind_lock = threading.Lock()

# The BLAS thread count is one process-wide setting; these count the callers
# inside ``single_threaded`` so that concurrent callers restore it only once.
_lock = threading.Lock()
_depth = [0]
_saved = [None]


def bind():
    """Make ``gemm`` callable: register SciPy's BLAS with LLVM (once per process).

    Call before the first call of a jitted function that uses ``gemm``; users
    calling numconv's BLAS-backed kernels from their own jitted code call it
    (or enter ``single_threaded()``) first.
    """
    if ADDRESSES:
        return
    with _bind_lock:
        if ADDRESSES:
            return
        addresses = _register()
        _CONTROLS.append(_thread_controls(addresses["float32"]))
        ADDRESSES.update(addresses)


def can_limit_threads():
    """True when numconv found how to set the BLAS's thread count."""
    bind()
    return _CONTROLS[0] is not None


@contextlib.contextmanager
def single_threaded():
    """Bind the BLAS and hold it to one thread; restore the setting after.

    The setting is process-wide, so a BLAS call made by another Python thread
    while this is active also runs on one thread. Where the thread count cannot
    be set (a BLAS without OpenBLAS's interface) this only binds.
    """
    bind()
    controls = _CONTROLS[0]
    if controls is None:
        yield
        return
    get, set_ = controls
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

"""Validation: every public call turns its arguments into one ``ConvSpec``.

This module is the only place that raises for bad arguments. Each message names
the argument, the value received and the rule, so the caller knows the fix.

Vocabulary, used across numconv: ``N`` batch, ``C_in`` input channels, ``C_out``
output channels, ``L`` input length, ``K`` kernel size, ``L_out`` output
length. Arrays are laid out NCL: (N, C, L).
"""

import operator
import os
from dataclasses import dataclass
from functools import cached_property

import numpy as np

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
PADDING_STRINGS = ("valid", "same", "causal")

# Any single index the kernels compute must stay far inside int64, and no array
# numconv allocates may exceed this many elements.
MAX_EXTENT = 2**40

# Hyper-parameters (stride, dilation, padding, groups, kernel size) may not exceed
# this. Larger values have no use, and refusing them keeps every product of them
# far inside int64 and every length handed to a 32-bit BLAS representable.
MAX_PARAM = 2**31 - 1


@dataclass(frozen=True)
class ConvSpec:
    """Everything a kernel needs to know about one 1D convolution.

    The forward map reads the input padded by ``pad_left`` and ``pad_right``
    (total length ``L_padded``) and writes ``L_out`` positions; output position
    ``t`` sees padded positions ``t * stride + k * dilation`` for k < K.
    """

    N: int
    C_in: int
    C_out: int
    L: int
    K: int
    stride: int
    pad_left: int
    pad_right: int
    dilation: int
    groups: int
    padding_mode: str
    dtype: np.dtype
    batched: bool

    # Derived sizes are computed once per spec and then read as plain attributes:
    # specs are remembered across calls (see ``build_spec``) and these are read
    # several times per call.

    @cached_property
    def L_padded(self):
        return self.L + self.pad_left + self.pad_right

    @cached_property
    def L_out(self):
        return output_length(self.L_padded, self.K, self.stride, self.dilation)

    @cached_property
    def C_in_per_group(self):
        return self.C_in // self.groups

    @cached_property
    def C_out_per_group(self):
        return self.C_out // self.groups

    @cached_property
    def input_shape(self):
        return (self.N, self.C_in, self.L) if self.batched else (self.C_in, self.L)

    @cached_property
    def output_shape(self):
        shape = (self.N, self.C_out, self.L_out)
        return shape if self.batched else shape[1:]

    @cached_property
    def weight_shape(self):
        return (self.C_out, self.C_in_per_group, self.K)

    @cached_property
    def choices(self):
        """The dispatcher's algorithm per operation, filled in as it decides
        (see ``numconv._dispatch.choose``)."""
        return {}

    @cached_property
    def interior(self):
        """Output positions [lo, hi) where no tap reads padding (none when hi <= lo).

        Tap k reads input, not padding, at outputs [t0_k, t1_k) (see
        ``numconv._padding.tap_ranges``); lo is the largest t0_k and hi the
        smallest max(t0_k, t1_k). Both ends only move left as k grows, so the
        first tap gives lo and the last tap gives hi.
        """
        s = self.stride
        lo = max(0, -(-self.pad_left // s))
        offset = (self.K - 1) * self.dilation - self.pad_left
        t0 = max(0, -(offset // s))
        t1 = min(self.L_out, (self.L - 1 - offset) // s + 1)
        return lo, max(t0, t1)


def output_length(L_padded, K, stride, dilation):
    """Number of output positions of a convolution over ``L_padded`` positions."""
    span = dilation * (K - 1) + 1
    return (L_padded - span) // stride + 1


def _int_param(name, value, minimum, maximum=MAX_PARAM):
    """Accept an int or a 1-tuple of int (as torch does); enforce the bounds."""
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise ValueError(
                f"{name} must be an int or a 1-tuple for a 1D convolution, got {value!r}"
            )
        value = value[0]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r} of type {type(value).__name__}")
    value = operator.index(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if value > maximum:
        raise ValueError(
            f"{name} must be <= {maximum}, got {value}; larger values would overflow "
            f"index arithmetic, and no real signal needs them"
        )
    return int(value)


def parse_padding(padding, L, K, stride, dilation):
    """Turn every accepted form of ``padding`` into ``(left, right)``.

    Accepted: an int p (p on both sides), a 1-tuple (p,), a pair (left, right),
    or one of the strings ``"valid"`` (no padding), ``"same"`` (total padding
    d*(K-1) at stride 1, the odd extra on the right; at stride > 1 the TF/JAX
    rule, so that L_out = ceil(L / stride)) and ``"causal"`` (d*(K-1) on the
    left only).
    """
    if isinstance(padding, str):
        if padding == "valid":
            return 0, 0
        if padding == "causal":
            return dilation * (K - 1), 0
        if padding == "same":
            if stride == 1:
                total = dilation * (K - 1)
            else:
                L_out = -(-L // stride)
                total = max((L_out - 1) * stride + dilation * (K - 1) + 1 - L, 0)
            return total // 2, total - total // 2
        raise ValueError(
            f"padding must be an int, a (left, right) pair or one of "
            f"{PADDING_STRINGS}, got the string {padding!r}"
        )
    if isinstance(padding, (tuple, list)):
        if len(padding) == 1:
            p = _int_param("padding", padding[0], 0)
            return p, p
        if len(padding) == 2:
            return (
                _int_param("padding[0] (left)", padding[0], 0),
                _int_param("padding[1] (right)", padding[1], 0),
            )
        raise ValueError(
            f"padding as a sequence must be (p,) or (left, right), got {padding!r}"
        )
    p = _int_param("padding", padding, 0)
    return p, p


_FLOAT32 = np.dtype(np.float32)
_FLOAT64 = np.dtype(np.float64)


def result_dtype(*arrays):
    """float32 when every floating input is float32 and none is integer; else float64."""
    out = _FLOAT32
    for name, arr in arrays:
        # Native float32 and float64 arrays share NumPy's dtype singletons; anything
        # else takes the general rule below.
        dt = arr.dtype
        if dt is _FLOAT32:
            continue
        if dt is _FLOAT64:
            out = _FLOAT64
            continue
        # Byte order is only storage: big-endian float32 is float32.
        dt = arr.dtype if arr.dtype.isnative else arr.dtype.newbyteorder("=")
        kind = dt.kind
        if dt == np.float32:
            continue
        if dt == np.float64 or kind in "biu":
            out = np.dtype(np.float64)
            continue
        raise TypeError(
            f"{name} has dtype {arr.dtype}; numconv computes in float32 or float64 "
            f"and accepts float32, float64, integer and bool input. Cast it first, "
            f"for example with .astype(np.float32)"
        )
    return out


def as_array(name, value):
    """Coerce an array-like to an ndarray without copying when it already is one."""
    if type(value) is np.ndarray:
        return value
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    if isinstance(value, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a masked array, whose mask numconv would ignore; fill the "
            f"masked values first, for example with {name}.filled(0)"
        )
    if isinstance(value, np.ndarray):
        return value
    try:
        arr = np.asarray(value)
    except ValueError as err:
        raise ValueError(f"{name} could not be read as a rectangular array: {err}") from None
    except (TypeError, RuntimeError) as err:
        # For example a torch tensor that requires grad refuses conversion.
        raise TypeError(
            f"{name} could not be converted to a NumPy array ({type(value).__name__}: "
            f"{err}); pass a NumPy array, for example tensor.detach().numpy()"
        ) from None
    if arr.dtype == object:
        raise TypeError(
            f"{name} could not be read as a numeric array (got dtype object from "
            f"{type(value).__name__}); nested lists must be rectangular and numeric"
        )
    return arr


def kernel_array(arr, dtype):
    """C-contiguous, aligned, writeable array of dtype; copies only when needed.

    Kernels are compiled for exactly this array type, so read-only or unaligned
    inputs are copied rather than compiled for again.
    """
    if arr.dtype == dtype:
        flags = arr.flags
        if flags.c_contiguous and flags.aligned and flags.writeable:
            return arr
    return np.require(arr, dtype=dtype, requirements=["C", "A", "W"])


def check_ndim(name, arr, allowed, layout):
    if arr.ndim not in allowed:
        raise ValueError(
            f"{name} must have {' or '.join(map(str, allowed))} dimensions ({layout}), "
            f"got shape {arr.shape}"
        )


def check_padding_mode(padding_mode):
    if not isinstance(padding_mode, str) or padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")


def _exact_key(value):
    """A hash key that tells apart values that compare equal across types (1, 1.0,
    True, np.int64(1)), also inside tuples: validation treats them differently."""
    if isinstance(value, tuple):
        return (type(value), tuple(map(_exact_key, value)))
    return (type(value), value)


_spec_cache = {}
_SPEC_CACHE_SIZE = 512


def build_spec(
    *,
    N,
    C_in,
    L,
    weight_shape,
    stride,
    padding,
    dilation,
    groups,
    padding_mode,
    dtype,
    batched,
    input_name="x",
):
    """Check one convolution's hyper-parameters against its shapes; return a ConvSpec.

    Training loops call with the same arguments again and again, so valid specs
    are remembered: validation then costs one dictionary look-up. Only accepted
    arguments are cached; anything unhashable (lists) is validated afresh.
    """
    # Shapes, dtype, flag and name come from numconv's own code (array shapes and
    # ints it has checked), so their values alone identify them. The caller's
    # hyper-parameters go in with their types, in a fixed order; when one is a
    # tuple, every entry is keyed with its type, down to the tuples' elements.
    key = (
        N, C_in, L, weight_shape, dtype, batched, input_name,
        type(stride), stride, type(padding), padding, type(dilation), dilation,
        type(groups), groups, type(padding_mode), padding_mode,
    )
    if (
        isinstance(stride, tuple)
        or isinstance(padding, tuple)
        or isinstance(dilation, tuple)
        or isinstance(groups, tuple)
        or isinstance(padding_mode, tuple)
    ):
        key = _exact_key(key)
    try:
        spec = _spec_cache.get(key)
    except TypeError:
        # Unhashable (a list): validated afresh, and not remembered.
        spec = key = None
    if spec is None:
        spec = _build_spec(
            N=N,
            C_in=C_in,
            L=L,
            weight_shape=weight_shape,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            padding_mode=padding_mode,
            dtype=dtype,
            batched=batched,
            input_name=input_name,
        )
        if key is not None:
            if len(_spec_cache) >= _SPEC_CACHE_SIZE:
                _spec_cache.clear()
            _spec_cache[key] = spec
    return spec


def _build_spec(
    *,
    N,
    C_in,
    L,
    weight_shape,
    stride,
    padding,
    dilation,
    groups,
    padding_mode,
    dtype,
    batched,
    input_name="x",
):
    """Check one convolution's hyper-parameters against its shapes; return a ConvSpec."""
    stride = _int_param("stride", stride, 1)
    dilation = _int_param("dilation", dilation, 1)
    groups = _int_param("groups", groups, 1)
    check_padding_mode(padding_mode)
    C_out, C_in_per_group, K = weight_shape
    if K < 1:
        raise ValueError(f"weight must have kernel size K >= 1, got weight shape {weight_shape}")
    if C_in % groups:
        raise ValueError(
            f"groups={groups} must divide the input channels C_in={C_in} of {input_name}"
        )
    if C_out % groups:
        raise ValueError(
            f"groups={groups} must divide the output channels C_out={C_out} of weight"
        )
    if C_in_per_group * groups != C_in:
        raise ValueError(
            f"weight shape {weight_shape} expects C_in/groups={C_in_per_group} channels per "
            f"group, so {input_name} must have {C_in_per_group * groups} channels "
            f"with groups={groups}, but it has C_in={C_in}"
        )
    pad_left, pad_right = parse_padding(padding, L, K, stride, dilation)
    if padding_mode != "zeros" and (pad_left or pad_right):
        if L < 1:
            raise ValueError(
                f"padding_mode={padding_mode!r} needs an input of length >= 1, got L={L}"
            )
        if padding_mode == "reflect" and max(pad_left, pad_right) >= L:
            raise ValueError(
                f"padding_mode='reflect' needs padding < input length: got padding "
                f"({pad_left}, {pad_right}) for L={L}"
            )
        if padding_mode == "circular" and max(pad_left, pad_right) > L:
            raise ValueError(
                f"padding_mode='circular' needs padding <= input length: got padding "
                f"({pad_left}, {pad_right}) for L={L}"
            )
    span = dilation * (K - 1) + 1
    if span > MAX_EXTENT:
        raise ValueError(
            f"dilation*(K-1)+1 = {span} is too large (dilation={dilation}, K={K})"
        )
    spec = ConvSpec(
        N=int(N),
        C_in=int(C_in),
        C_out=int(C_out),
        L=int(L),
        K=int(K),
        stride=stride,
        pad_left=pad_left,
        pad_right=pad_right,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
        dtype=np.dtype(dtype),
        batched=bool(batched),
    )
    if spec.L_out < 1:
        raise ValueError(
            f"output length would be {spec.L_out} < 1: padded input length "
            f"{spec.L_padded} (L={L}, padding=({pad_left}, {pad_right})) is shorter "
            f"than the kernel's span dilation*(K-1)+1 = {span}"
        )
    check_sizes(spec)
    return spec


def physical_memory():
    """Bytes of RAM on this machine (a large fallback where it cannot be read)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**48


def check_sizes(spec):
    """Refuse shapes whose arrays could not be allocated, before anything is.

    Linux overcommits memory, so allocating more than the machine holds would
    not fail at once but kill the process later; the check is done here.
    """
    detail = (
        f"N={spec.N}, C_in={spec.C_in}, C_out={spec.C_out}, L={spec.L}, K={spec.K}, "
        f"stride={spec.stride}, dilation={spec.dilation}, "
        f"padding=({spec.pad_left}, {spec.pad_right})"
    )
    check_allocation(
        "padded input", (spec.N, spec.C_in, spec.L_padded), spec.dtype, detail
    )
    check_allocation("output", (spec.N, spec.C_out, spec.L_out), spec.dtype, detail)
    if spec.padding_mode != "zeros":
        # The int64 map from padded to input positions, built even for N = 0.
        check_allocation("padding index map", (spec.L_padded,), np.int64, detail)


def check_allocation(what, shape, dtype, detail):
    """Refuse one array of ``shape`` that would not fit in memory; name its cause."""
    count = 1
    for extent in shape:
        count *= int(extent)
    nbytes = count * np.dtype(dtype).itemsize
    limit = physical_memory()
    if nbytes > limit or count > MAX_EXTENT:
        raise MemoryError(
            f"the {what} would have shape {tuple(shape)} ({nbytes} bytes) for "
            f"{detail}, more than this machine's {limit} bytes of memory; reduce them"
        )


def check_grad_output(grad_output, spec, name="grad_output"):
    """grad_output must have exactly the forward output's shape."""
    if grad_output.shape != spec.output_shape:
        raise ValueError(
            f"{name} must have the forward output's shape {spec.output_shape} "
            f"(N, C_out, L_out) for this convolution, got {grad_output.shape}"
        )


def check_length_arg(name, value):
    return _int_param(name, value, 0, MAX_EXTENT)

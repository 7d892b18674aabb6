"""Public functions: coerce, validate, allocate, dispatch.

Layout is NCL throughout: x is (N, C_in, L), or (C_in, L) unbatched; weight is
(C_out, C_in/groups, K); the output is (N, C_out, L_out), or (C_out, L_out).
"""

from collections import namedtuple

import numpy as np

from numconv import _dispatch, _memory
from numconv._padding import (
    forward_without_padding_terms,
    grad_weight_without_padding_terms,
    pad_input,
)
from numconv._spec import (
    MAX_EXTENT,
    _int_param,
    as_array,
    build_spec,
    check_allocation,
    check_grad_output,
    check_ndim,
    kernel_array,
    result_dtype,
)

Conv1dGrads = namedtuple("Conv1dGrads", ["input", "weight", "bias"])
Conv1dGrads.__doc__ = """Gradients of a conv1d with respect to (input, weight, bias).

``bias`` is None when the gradient was not asked for."""

_X_LAYOUT = "(N, C_in, L) or unbatched (C_in, L)"
_W_LAYOUT = "(C_out, C_in/groups, K)"
_G_LAYOUT = "(N, C_out, L_out) or unbatched (C_out, L_out)"


def _batched(arr):
    return arr if arr.ndim == 3 else arr[None]


def _read_bias(bias, C_out):
    if isinstance(bias, (bool, np.bool_)):
        raise TypeError(
            f"bias must be an array of shape (C_out,) or None, got {bias!r}; the "
            f"True/False flag belongs to conv1d_backward"
        )
    bias = as_array("bias", bias)
    # The dtype first: a string is not a bias of the wrong shape.
    result_dtype(("bias", bias))
    if bias.shape != (C_out,):
        raise ValueError(
            f"bias must have shape (C_out,) = ({C_out},) to match weight, got {bias.shape}"
        )
    return bias


def _forward_spec(x, weight, stride, padding, dilation, groups, padding_mode, dtype):
    check_ndim("x", x, (2, 3), _X_LAYOUT)
    check_ndim("weight", weight, (3,), _W_LAYOUT)
    N, C_in, L = x.shape if x.ndim == 3 else (1, *x.shape)
    return build_spec(
        N=N,
        C_in=C_in,
        L=L,
        weight_shape=weight.shape,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=padding_mode,
        dtype=dtype,
        batched=x.ndim == 3,
    )


def _forward(xp, w, b, spec):
    """The dispatcher's forward pass, or the bias alone when C_in is 0."""
    if spec.C_in == 0:
        # An empty sum: every output is its bias. Not left to the kernels, whose
        # loops over taps would then write nothing into the output.
        y = _memory.empty((spec.N, spec.C_out, spec.L_out), spec.dtype)
        y[...] = b[None, :, None]
        return y
    return _dispatch.forward(xp, w, b, spec)


def _grad_padded_input(g, w, spec):
    """The dispatcher's input gradient, or zeros when there is no output channel."""
    if spec.C_out == 0:
        return _memory.zeros((g.shape[0], spec.C_in, spec.L_padded), spec.dtype)
    return _dispatch.grad_padded_input(g, w, spec)


def _grad_input(g, w, spec):
    """The input gradient (N, C_in, L) with the padding folded back onto x."""
    if spec.C_out == 0:
        return _memory.zeros((g.shape[0], spec.C_in, spec.L), spec.dtype)
    return _dispatch.grad_input(g, w, spec)


def _unbatch(arr, spec):
    return arr if spec.batched else arr[0]


def _check_batched_like(name, arr, x_name, batched):
    if (arr.ndim == 3) != batched:
        raise ValueError(
            f"{name} must be {'batched' if batched else 'unbatched'} like {x_name}: "
            f"expected {3 if batched else 2} dimensions, got shape {arr.shape}"
        )


def conv1d(
    x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, padding_mode="zeros"
):
    """1D convolution (cross-correlation), as ``torch.nn.functional.conv1d``.

    Parameters
    ----------
    x : array_like, (N, C_in, L) or (C_in, L)
    weight : array_like, (C_out, C_in/groups, K)
    bias : array_like, (C_out,), optional
    stride, dilation, groups : int (or 1-tuple for stride and dilation), >= 1
    padding : int, (p,), (left, right), "valid", "same" or "causal"
    padding_mode : "zeros", "reflect", "replicate" or "circular"

    Returns
    -------
    ndarray, (N, C_out, L_out) or (C_out, L_out); float32 when every floating
    input is float32, float64 otherwise.
    """
    x = as_array("x", x)
    weight = as_array("weight", weight)
    arrays = [("x", x), ("weight", weight)]
    if bias is not None:
        check_ndim("weight", weight, (3,), _W_LAYOUT)
        bias = _read_bias(bias, weight.shape[0])
        arrays.append(("bias", bias))
    dtype = result_dtype(*arrays)
    spec = _forward_spec(x, weight, stride, padding, dilation, groups, padding_mode, dtype)

    xb = _batched(x)
    xp = pad_input(xb, spec)
    w = kernel_array(weight, dtype)
    b = np.zeros(spec.C_out, dtype) if bias is None else kernel_array(bias, dtype)
    y = _forward(xp, w, b, spec)
    forward_without_padding_terms(xb, w, b, spec, y)

    return _unbatch(y, spec)


def _grad_spec(grad_output, weight_shape, N, C_in, L, opts, dtype, batched):
    spec = build_spec(
        N=N,
        C_in=C_in,
        L=L,
        weight_shape=weight_shape,
        dtype=dtype,
        batched=batched,
        **opts,
    )
    check_grad_output(grad_output, spec)
    return spec


def conv1d_grad_input(
    grad_output,
    weight,
    input_length,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    padding_mode="zeros",
):
    """Gradient of conv1d with respect to its input.

    Parameters
    ----------
    grad_output : array_like, (N, C_out, L_out) or (C_out, L_out)
    weight : array_like, (C_out, C_in/groups, K)
    input_length : int, the forward input's L
    stride, padding, dilation, groups, padding_mode : as for ``conv1d``

    Returns
    -------
    ndarray, (N, C_in, L) or (C_in, L)
    """
    grad_output = as_array("grad_output", grad_output)
    weight = as_array("weight", weight)
    check_ndim("grad_output", grad_output, (2, 3), _G_LAYOUT)
    check_ndim("weight", weight, (3,), _W_LAYOUT)
    L = _int_param("input_length", input_length, 0, MAX_EXTENT)
    g_int = _int_param("groups", groups, 1)
    dtype = result_dtype(("grad_output", grad_output), ("weight", weight))
    gb = _batched(grad_output)
    opts = dict(
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=g_int,
        padding_mode=padding_mode,
    )
    spec = _grad_spec(
        gb, weight.shape, gb.shape[0], weight.shape[1] * g_int, L, opts, dtype, True
    )

    g = kernel_array(gb, dtype)
    w = kernel_array(weight, dtype)
    gx = _grad_input(g, w, spec)

    return gx if grad_output.ndim == 3 else gx[0]


def conv1d_grad_weight(
    x,
    grad_output,
    kernel_size,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    padding_mode="zeros",
):
    """Gradient of conv1d with respect to its weight.

    Parameters
    ----------
    x : array_like, (N, C_in, L) or (C_in, L)
    grad_output : array_like, (N, C_out, L_out) or (C_out, L_out), batched like x
    kernel_size : int, K
    stride, padding, dilation, groups, padding_mode : as for ``conv1d``

    Returns
    -------
    ndarray, (C_out, C_in/groups, K)
    """
    x = as_array("x", x)
    grad_output = as_array("grad_output", grad_output)
    check_ndim("x", x, (2, 3), _X_LAYOUT)
    check_ndim("grad_output", grad_output, (2, 3), _G_LAYOUT)
    _check_batched_like("grad_output", grad_output, "x", x.ndim == 3)
    K = _int_param("kernel_size", kernel_size, 1)
    g_int = _int_param("groups", groups, 1)
    dtype = result_dtype(("x", x), ("grad_output", grad_output))
    xb, gb = _batched(x), _batched(grad_output)
    if xb.shape[1] % g_int:
        raise ValueError(f"groups={g_int} must divide the input channels C_in={xb.shape[1]} of x")
    weight_shape = (gb.shape[1], xb.shape[1] // g_int, K)
    opts = dict(
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=g_int,
        padding_mode=padding_mode,
    )
    spec = _grad_spec(
        gb, weight_shape, xb.shape[0], xb.shape[1], xb.shape[2], opts, dtype, True
    )

    xp = pad_input(xb, spec)
    g = kernel_array(gb, dtype)
    gw = _dispatch.grad_weight(xp, g, spec)
    grad_weight_without_padding_terms(xb, g, spec, gw)

    return gw


def conv1d_grad_bias(grad_output):
    """Gradient of conv1d with respect to its bias: grad_output summed over N and L.

    grad_output : array_like, (N, C_out, L_out) or (C_out, L_out). Returns (C_out,).
    """
    grad_output = as_array("grad_output", grad_output)
    check_ndim("grad_output", grad_output, (2, 3), _G_LAYOUT)
    dtype = result_dtype(("grad_output", grad_output))

    return _dispatch.grad_bias(kernel_array(_batched(grad_output), dtype), dtype)


def conv1d_backward(
    x,
    weight,
    grad_output,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    padding_mode="zeros",
    bias=True,
):
    """All gradients of ``conv1d(x, weight, b, ...)`` in one call.

    Parameters
    ----------
    x : array_like, (N, C_in, L) or (C_in, L)
    weight : array_like, (C_out, C_in/groups, K)
    grad_output : array_like, shaped like the forward output
    stride, padding, dilation, groups, padding_mode : as for ``conv1d``
    bias : bool, whether to return the bias gradient

    Returns
    -------
    Conv1dGrads(input, weight, bias): shaped like x, like weight, and (C_out,)
    (None when ``bias`` is False).
    """
    x = as_array("x", x)
    weight = as_array("weight", weight)
    grad_output = as_array("grad_output", grad_output)
    if not isinstance(bias, (bool, np.bool_)):
        raise TypeError(f"bias must be True or False here, got {bias!r}")
    dtype = result_dtype(("x", x), ("weight", weight), ("grad_output", grad_output))
    spec = _forward_spec(x, weight, stride, padding, dilation, groups, padding_mode, dtype)
    check_ndim("grad_output", grad_output, (2, 3), _G_LAYOUT)
    check_grad_output(grad_output, spec)

    xb = _batched(x)
    xp = pad_input(xb, spec)
    w = kernel_array(weight, dtype)
    g = kernel_array(_batched(grad_output), dtype)
    fused = _dispatch.backward(xp, g, w, spec, bias)
    if fused is not None:
        gx, gw, gb = fused
    else:
        gx = _grad_input(g, w, spec)
        if bias:
            gw, gb = _dispatch.grad_weight_and_bias(xp, g, spec)
        else:
            gw, gb = _dispatch.grad_weight(xp, g, spec), None
    grad_weight_without_padding_terms(xb, g, spec, gw)

    return Conv1dGrads(_unbatch(gx, spec), gw, gb)


def conv_transpose1d(
    x, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1
):
    """Transposed 1D convolution, as ``torch.nn.functional.conv_transpose1d``.

    It is the input gradient of a conv1d whose weight is ``weight``; numconv
    computes both with the same kernel.

    Parameters
    ----------
    x : array_like, (N, C_in, L) or (C_in, L)
    weight : array_like, (C_in, C_out/groups, K)
    bias : array_like, (C_out,), optional
    stride, dilation, groups : int or 1-tuple, >= 1
    padding : int or (p,), >= 0, removed from both ends of the full output
    output_padding : int or (p,), added to the right end; smaller than stride
        or dilation

    Returns
    -------
    ndarray, (N, C_out, L_out) or (C_out, L_out), with
    L_out = (L - 1) * stride - 2 * padding + dilation * (K - 1) + output_padding + 1.
    """
    x = as_array("x", x)
    weight = as_array("weight", weight)
    check_ndim("x", x, (2, 3), "(N, C_in, L) or unbatched (C_in, L)")
    check_ndim("weight", weight, (3,), "(C_in, C_out/groups, K)")
    stride = _int_param("stride", stride, 1)
    dilation = _int_param("dilation", dilation, 1)
    groups = _int_param("groups", groups, 1)
    if isinstance(padding, str):
        raise ValueError(
            f"conv_transpose1d takes padding as an int or (p,), got the string {padding!r}"
        )
    padding = _int_param("padding", padding, 0)
    output_padding = _int_param("output_padding", output_padding, 0)
    if output_padding >= stride and output_padding >= dilation:
        raise ValueError(
            f"output_padding must be smaller than stride or dilation, got "
            f"output_padding={output_padding} with stride={stride}, dilation={dilation}"
        )
    xb = _batched(x)
    N, C_in, L = xb.shape
    C_w, C_out_g, K = weight.shape
    if C_w != C_in:
        raise ValueError(
            f"weight.shape[0] must equal the input channels C_in={C_in} of x "
            f"(weight is C_in, C_out/groups, K), got weight "
            f"shape {weight.shape}"
        )
    if C_in % groups:
        raise ValueError(f"groups={groups} must divide the input channels C_in={C_in} of x")
    if L < 1:
        raise ValueError(f"x must have length L >= 1, got shape {x.shape}")
    C_out = C_out_g * groups
    L_out = (L - 1) * stride - 2 * padding + dilation * (K - 1) + output_padding + 1
    if L_out < 0:
        raise ValueError(
            f"output length would be {L_out} < 0: (L-1)*stride - 2*padding + "
            f"dilation*(K-1) + output_padding + 1 with L={L}, stride={stride}, "
            f"padding={padding}, dilation={dilation}, K={K}, "
            f"output_padding={output_padding}"
        )
    arrays = [("x", x), ("weight", weight)]
    if bias is not None:
        bias = _read_bias(bias, C_out)
        arrays.append(("bias", bias))
    dtype = result_dtype(*arrays)
    check_allocation(
        "output",
        (N, C_out, L_out),
        dtype,
        f"L={L}, stride={stride}, padding={padding}, dilation={dilation}, K={K}, "
        f"output_padding={output_padding}",
    )
    if L_out == 0:
        # The padding removes every position (PyTorch returns the empty result
        # too); there is no conv1d this is the input gradient of.
        y = np.empty((N, C_out, 0), dtype)
        return y if x.ndim == 3 else y[0]
    # The conv1d this is the input gradient of: input (N, C_out, L_out), weight
    # (C_in, C_out/groups, K), output length L (plus output_padding // stride).
    spec = build_spec(
        N=N,
        C_in=C_out,
        L=L_out,
        weight_shape=(C_in, C_out_g, K),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode="zeros",
        dtype=dtype,
        batched=x.ndim == 3,
        input_name="the output",
    )

    g = kernel_array(xb, dtype)
    gxp = _grad_padded_input(g, kernel_array(weight, dtype), spec)
    y = gxp
    if padding:
        y = _memory.empty((N, C_out, L_out), dtype)
        y[...] = gxp[:, :, padding : padding + L_out]
    if bias is not None:
        y += kernel_array(bias, dtype)[None, :, None]

    return _unbatch(y, spec)

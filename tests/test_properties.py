"""The adjoint identities, on random shapes and settings, for every algorithm.

For y = conv1d(x, w, b) and any g shaped like y:

    <conv1d(x, w), g> == <x, grad_input(g, w)>
    <conv1d(x, w), g> == <w, grad_weight(x, g)>
    <conv1d(x, w, b) - conv1d(x, w), g> == <b, grad_bias(g)>

and conv_transpose1d is the input gradient where the two coincide. Each
algorithm family is forced in turn, so every path is checked, not only the one
the dispatcher would pick.
"""

import contextlib

import numpy as np
import pytest
from hypothesis import given, reject

import numconv
from numconv import _dispatch
from strategies import cases
from tolerances import assert_close, inner, tol

FAMILIES = sorted(_dispatch.FAMILIES)


@contextlib.contextmanager
def forced(family):
    """Run with one algorithm family; reject the example if it cannot run it."""
    with _dispatch.force(family):
        try:
            yield
        except NotImplementedError:
            reject()


def abs_forward(case):
    """conv1d(|x|, |w|) in float64: the scale of the terms summed into y."""
    kw = case.kwargs
    return numconv.conv1d(
        np.abs(case.x).astype(np.float64), np.abs(case.weight).astype(np.float64), **kw
    )


def check_identity(lhs, rhs, scale, dtype, what):
    assert abs(lhs - rhs) <= tol(dtype) * scale + 1e-300, (what, lhs, rhs, scale)


@pytest.mark.parametrize("family", FAMILIES)
@given(case=cases())
def test_input_gradient_is_adjoint_of_forward(family, case):
    with forced(family):
        y = numconv.conv1d(case.x, case.weight, **case.kwargs)
        gx = numconv.conv1d_grad_input(case.grad_output, case.weight, case.L, **case.kwargs)

    assert y.dtype == gx.dtype == case.x.dtype
    assert gx.shape == case.x.shape
    scale = inner(abs_forward(case), np.abs(case.grad_output))
    check_identity(inner(y, case.grad_output), inner(case.x, gx), scale, y.dtype, "input")


@pytest.mark.parametrize("family", FAMILIES)
@given(case=cases())
def test_weight_gradient_is_adjoint_of_forward(family, case):
    with forced(family):
        y = numconv.conv1d(case.x, case.weight, **case.kwargs)
        gw = numconv.conv1d_grad_weight(case.x, case.grad_output, case.K, **case.kwargs)

    assert gw.shape == case.weight.shape and gw.dtype == y.dtype
    scale = inner(abs_forward(case), np.abs(case.grad_output))
    check_identity(inner(y, case.grad_output), inner(case.weight, gw), scale, y.dtype, "w")


@pytest.mark.parametrize("family", FAMILIES)
@given(case=cases())
def test_bias_gradient_is_adjoint_of_bias(family, case):
    with forced(family):
        y_b = numconv.conv1d(case.x, case.weight, case.bias, **case.kwargs)
        y = numconv.conv1d(case.x, case.weight, **case.kwargs)
    gb = numconv.conv1d_grad_bias(case.grad_output)

    assert gb.shape == case.bias.shape and gb.dtype == y.dtype
    abs_g = np.abs(case.batch(case.grad_output))
    scale = inner(abs_forward(case), np.abs(case.grad_output)) + inner(
        np.abs(case.bias), abs_g.sum(axis=(0, 2))
    )
    diff = y_b.astype(np.float64) - y
    check_identity(inner(diff, case.grad_output), inner(case.bias, gb), scale, y.dtype, "b")


@pytest.mark.parametrize("family", FAMILIES)
@given(case=cases())
def test_backward_matches_single_gradients(family, case):
    with forced(family):
        grads = numconv.conv1d_backward(case.x, case.weight, case.grad_output, **case.kwargs)
        gx = numconv.conv1d_grad_input(case.grad_output, case.weight, case.L, **case.kwargs)
        gw = numconv.conv1d_grad_weight(case.x, case.grad_output, case.K, **case.kwargs)
    gb = numconv.conv1d_grad_bias(case.grad_output)

    np.testing.assert_array_equal(grads.input, gx)
    np.testing.assert_array_equal(grads.weight, gw)
    np.testing.assert_array_equal(grads.bias, gb)


@pytest.mark.parametrize("family", FAMILIES)
@given(case=cases(modes=["zeros"]))
def test_conv_transpose_is_the_input_gradient(family, case):
    kw = case.kwargs
    if case.left != case.right:
        reject()
    stride, dilation, p = kw["stride"], kw["dilation"], case.left
    span = dilation * (case.K - 1) + 1
    # The length conv_transpose1d must produce to land on x's length L.
    output_padding = (case.L + 2 * p - span) % stride
    common = dict(stride=stride, dilation=dilation, groups=kw["groups"])

    with forced(family):
        gx = numconv.conv1d_grad_input(
            case.grad_output, case.weight, case.L, padding=p, **common
        )
        yt = numconv.conv_transpose1d(
            case.grad_output, case.weight, padding=p, output_padding=output_padding,
            **common,
        )
        C_out_transposed = case.weight.shape[1] * kw["groups"]
        bias = np.linspace(-1.0, 1.0, C_out_transposed).astype(case.x.dtype)
        yt_b = numconv.conv_transpose1d(
            case.grad_output, case.weight, bias, padding=p,
            output_padding=output_padding, **common,
        )

    # The two may take different kernels, so they agree to rounding, not bitwise.
    scale = numconv.conv1d_grad_input(
        np.abs(case.grad_output).astype(np.float64),
        np.abs(case.weight).astype(np.float64),
        case.L,
        padding=p,
        **common,
    )
    assert_close(yt, gx, scale, gx.dtype, "transpose")
    expected = gx.astype(np.float64) + bias[:, None]
    assert_close(yt_b, expected, scale + np.abs(bias)[:, None], gx.dtype, "transpose+bias")

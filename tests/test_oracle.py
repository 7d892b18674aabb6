"""PyTorch as an outside oracle: forward, the three gradients, conv_transpose1d.

Torch computes in float64 here, from the same inputs, so the comparison is to
the rounding of the dtype under test. Padding modes go through nn.Conv1d, the
one place torch defines them; "causal" and "same" at stride > 1 (which torch
does not accept) through an explicit F.pad.
"""

import itertools

import numpy as np
import pytest

import numconv
import reference
from tolerances import assert_close

torch = pytest.importorskip("torch")
F = torch.nn.functional

# (name, N, C_in, C_out, L, K, stride, padding, dilation, groups)
GRID = [
    ("basic", 2, 3, 4, 11, 3, 1, 1, 1, 1),
    ("zero_batch", 0, 3, 4, 11, 3, 1, 1, 1, 1),
    ("length_one_padded", 2, 2, 3, 1, 3, 1, 1, 1, 1),
    ("even_same_dilated", 2, 3, 2, 13, 4, 1, "same", 2, 1),
    ("even_same", 1, 2, 2, 9, 2, 1, "same", 1, 1),
    ("stride_over_kernel", 2, 2, 3, 20, 2, 5, 1, 1, 1),
    ("depthwise", 2, 4, 4, 15, 5, 1, 2, 1, 4),
    ("depthwise_multiplier", 2, 3, 6, 12, 3, 2, 1, 1, 3),
    ("grouped", 3, 4, 6, 10, 3, 1, (2,), 2, 2),
    ("kernel_one", 2, 3, 5, 7, 1, 1, 0, 1, 1),
    ("kernel_one_strided", 2, 3, 5, 7, 1, 3, 0, 1, 1),
    ("valid", 2, 2, 2, 9, 4, 2, "valid", 1, 1),
    ("causal", 2, 2, 3, 10, 3, 1, "causal", 3, 1),
    ("pair", 1, 2, 2, 10, 3, 2, (3, 1), 1, 1),
    ("same_strided", 2, 2, 3, 17, 4, 3, "same", 1, 1),
    ("wide_kernel", 1, 1, 1, 40, 31, 1, 15, 1, 1),
]
MODES = ["zeros", "reflect", "replicate", "circular"]
DTYPES = [np.float32, np.float64]


def torch_conv(x, w, b, stride, padding, dilation, groups, mode, left, right):
    """y = conv1d(x, w, b) as torch defines it, with autograd enabled."""
    torch_padding = padding
    if isinstance(padding, tuple) and len(padding) == 1:
        torch_padding = padding[0]
    native = (
        not isinstance(torch_padding, tuple)
        and torch_padding != "causal"
        and not (torch_padding == "same" and stride > 1)
    )
    if native:
        layer = torch.nn.Conv1d(
            w.shape[1] * groups, w.shape[0], w.shape[2], stride=stride,
            padding=torch_padding, dilation=dilation, groups=groups, bias=True,
            padding_mode=mode, dtype=torch.float64,
        )
        with torch.no_grad():
            layer.weight.copy_(w)
            layer.bias.copy_(b)
        return layer(x), layer.weight, layer.bias
    torch_mode = "constant" if mode == "zeros" else mode
    xp = F.pad(x, (left, right), mode=torch_mode)
    w = w.clone().requires_grad_(True)
    b = b.clone().requires_grad_(True)
    return F.conv1d(xp, w, b, stride=stride, dilation=dilation, groups=groups), w, b


def case_is_valid(L, left, right, mode):
    if mode == "reflect" and max(left, right) >= L:
        return False
    if mode == "circular" and max(left, right) > L:
        return False
    return True


def abs_scales(x, w, b, g, kw):
    """The forward pass and gradients computed on absolute values, in float64.

    Each is the sum of the magnitudes of the terms behind the matching result,
    the scale its rounding error is measured against.
    """
    ax, aw, ag = (np.abs(a).astype(np.float64) for a in (x, w, g))
    ab = np.abs(b).astype(np.float64)
    L, K = x.shape[-1], w.shape[-1]
    return (
        numconv.conv1d(ax, aw, ab, **kw),
        numconv.conv1d_grad_input(ag, aw, L, **kw),
        numconv.conv1d_grad_weight(ax, ag, K, **kw),
        numconv.conv1d_grad_bias(ag),
    )


CASES = [
    pytest.param(row, mode, dtype, id=f"{row[0]}-{mode}-{np.dtype(dtype).name}")
    for row, mode, dtype in itertools.product(GRID, MODES, DTYPES)
]


@pytest.mark.parametrize("row, mode, dtype", CASES)
def test_forward_and_gradients_match_torch(row, mode, dtype):
    name, N, C_in, C_out, L, K, stride, padding, dilation, groups = row
    left, right = reference.padding_pair(padding, L, K, stride, dilation)
    if not case_is_valid(L, left, right, mode):
        pytest.skip("padding too large for this mode; refusal is tested elsewhere")
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    x = rng.standard_normal((N, C_in, L)).astype(dtype)
    w = rng.standard_normal((C_out, C_in // groups, K)).astype(dtype)
    b = rng.standard_normal(C_out).astype(dtype)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
              padding_mode=mode)

    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    yt, wt, bt = torch_conv(
        xt, torch.tensor(w, dtype=torch.float64), torch.tensor(b, dtype=torch.float64),
        stride, padding, dilation, groups, mode, left, right,
    )
    g = rng.standard_normal(tuple(yt.shape)).astype(dtype)
    yt.backward(torch.tensor(g, dtype=torch.float64))

    y = numconv.conv1d(x, w, b, **kw)
    grads = numconv.conv1d_backward(x, w, g, **kw)

    assert y.shape == tuple(yt.shape) and y.dtype == dtype
    y_abs, gx_scale, gw_scale, gb_scale = abs_scales(x, w, b, g, kw)
    assert_close(y, yt.detach().numpy(), y_abs, dtype, "forward")
    assert_close(grads.input, xt.grad.numpy(), gx_scale, dtype, "grad input")
    assert_close(grads.weight, wt.grad.numpy(), gw_scale, dtype, "grad weight")
    assert_close(grads.bias, bt.grad.numpy(), gb_scale, dtype, "grad bias")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
def test_unbatched_matches_torch(dtype, mode):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 12)).astype(dtype)
    w = rng.standard_normal((4, 3, 3)).astype(dtype)
    layer = torch.nn.Conv1d(3, 4, 3, padding=2, padding_mode=mode, bias=False,
                            dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(w, dtype=torch.float64))
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    yt = layer(xt)
    g = rng.standard_normal(tuple(yt.shape)).astype(dtype)
    yt.backward(torch.tensor(g, dtype=torch.float64))

    y = numconv.conv1d(x, w, padding=2, padding_mode=mode)
    grads = numconv.conv1d_backward(x, w, g, padding=2, padding_mode=mode, bias=False)

    assert y.shape == tuple(yt.shape) and grads.input.shape == x.shape
    assert grads.bias is None
    kw = dict(padding=2, padding_mode=mode)
    y_abs, gx_scale, gw_scale, _ = abs_scales(x, w, np.zeros(4), g, kw)
    assert_close(y, yt.detach().numpy(), y_abs, dtype, "forward")
    assert_close(grads.input, xt.grad.numpy(), gx_scale, dtype, "grad input")
    assert_close(grads.weight, layer.weight.grad.numpy(), gw_scale, dtype, "grad weight")


# (N, C_in, C_out, L, K, stride, padding, output_padding, dilation, groups)
TRANSPOSE_GRID = [
    (2, 3, 4, 7, 3, 1, 0, 0, 1, 1),
    (2, 3, 4, 7, 3, 2, 1, 1, 1, 1),
    (0, 2, 2, 5, 2, 2, 0, 0, 1, 1),
    (1, 4, 4, 9, 5, 3, 2, 2, 1, 4),
    (2, 4, 6, 6, 3, 1, 1, 1, 2, 2),
    (2, 2, 3, 1, 4, 5, 0, 4, 1, 1),
    (3, 2, 2, 8, 1, 4, 0, 3, 1, 1),
    (1, 1, 1, 10, 4, 2, 3, 1, 3, 1),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("row", TRANSPOSE_GRID)
@pytest.mark.parametrize("batched", [True, False])
def test_conv_transpose_matches_torch(row, dtype, batched):
    N, C_in, C_out, L, K, stride, padding, output_padding, dilation, groups = row
    if not batched and N != 1:
        pytest.skip("unbatched input has one example")
    rng = np.random.default_rng(sum(row))
    x = rng.standard_normal((N, C_in, L)).astype(dtype)
    w = rng.standard_normal((C_in, C_out // groups, K)).astype(dtype)
    b = rng.standard_normal(C_out).astype(dtype)
    kw = dict(stride=stride, padding=padding, output_padding=output_padding,
              groups=groups, dilation=dilation)
    xt = torch.tensor(x if batched else x[0], dtype=torch.float64)
    expected = F.conv_transpose1d(
        xt, torch.tensor(w, dtype=torch.float64), torch.tensor(b, dtype=torch.float64), **kw
    ).numpy()

    y = numconv.conv_transpose1d(x if batched else x[0], w, b, **kw)

    assert y.shape == expected.shape and y.dtype == dtype
    scale = F.conv_transpose1d(
        torch.tensor(np.abs(x if batched else x[0]), dtype=torch.float64),
        torch.tensor(np.abs(w), dtype=torch.float64),
        torch.tensor(np.abs(b), dtype=torch.float64), **kw,
    ).numpy()
    assert_close(y, expected, scale, dtype, "conv_transpose1d")

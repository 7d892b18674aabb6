"""numconv against the naive reference loops, and against finite differences."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import numconv
import reference
from strategies import cases, ref_args
from tolerances import assert_close

# The reference is plain Python loops: keep its shapes small and its examples fewer.
REF_EXAMPLES = max(10, settings().max_examples // 2)
small_cases = cases(max_channels_per_group=2, max_L=16, max_K=4, max_N=2)


@settings(max_examples=REF_EXAMPLES)
@given(case=small_cases, with_bias=st.booleans())
def test_forward_matches_reference(case, with_bias):
    bias = case.bias if with_bias else None
    y = numconv.conv1d(case.x, case.weight, bias, **case.kwargs)

    x = case.batch(case.x)
    expected = reference.conv1d(x, case.weight, bias, *ref_args(case))
    scale = reference.conv1d(np.abs(x), np.abs(case.weight), None, *ref_args(case))
    if bias is not None:
        scale = scale + np.abs(bias)[:, None]
    assert_close(case.batch(y), expected, scale, y.dtype, "forward")


@settings(max_examples=REF_EXAMPLES)
@given(case=small_cases)
def test_gradients_match_reference(case):
    grads = numconv.conv1d_backward(case.x, case.weight, case.grad_output, **case.kwargs)

    x, g = case.batch(case.x), case.batch(case.grad_output)
    args = ref_args(case)
    abs_w, abs_x, abs_g = np.abs(case.weight), np.abs(x), np.abs(g)
    assert_close(
        case.batch(grads.input),
        reference.grad_input(g, case.weight, case.L, *args),
        reference.grad_input(abs_g, abs_w, case.L, *args),
        grads.input.dtype,
        "grad input",
    )
    assert_close(
        grads.weight,
        reference.grad_weight(x, g, case.K, *args),
        reference.grad_weight(abs_x, abs_g, case.K, *args),
        grads.weight.dtype,
        "grad weight",
    )
    assert_close(
        grads.bias,
        reference.grad_bias(g),
        reference.grad_bias(abs_g),
        grads.bias.dtype,
        "grad bias",
    )


@settings(max_examples=max(10, REF_EXAMPLES // 2))
@given(case=cases(dtypes=(np.float64,), max_N=2), seed=st.integers(0, 2**32 - 1))
def test_gradients_match_central_differences(case, seed):
    """Directional derivatives of a nonlinear loss, in float64.

    loss = sum(g * tanh(conv1d(x, w, b))); its gradient flows through
    conv1d_backward with grad_output = g * (1 - tanh(y)**2).
    """
    rng = np.random.default_rng(seed)
    kw = case.kwargs

    def loss(x, w, b):
        return float(np.sum(case.grad_output * np.tanh(numconv.conv1d(x, w, b, **kw))))

    y = numconv.conv1d(case.x, case.weight, case.bias, **kw)
    upstream = case.grad_output * (1.0 - np.tanh(y) ** 2)
    grads = numconv.conv1d_backward(case.x, case.weight, upstream, **kw)

    h = 1e-6
    for name, grad in (("x", grads.input), ("weight", grads.weight), ("bias", grads.bias)):
        args = {"x": case.x, "weight": case.weight, "bias": case.bias}
        direction = rng.standard_normal(args[name].shape)
        plus = dict(args, **{name: args[name] + h * direction})
        minus = dict(args, **{name: args[name] - h * direction})
        numeric = (loss(plus["x"], plus["weight"], plus["bias"])
                   - loss(minus["x"], minus["weight"], minus["bias"])) / (2 * h)
        analytic = float(np.vdot(grad, direction))
        scale = float(np.vdot(np.abs(grad), np.abs(direction))) + 1.0
        assert abs(numeric - analytic) <= 1e-6 * scale, (name, numeric, analytic)

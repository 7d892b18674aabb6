"""Bad input raises ValueError/TypeError whose message names the argument."""

import numpy as np
import pytest

import numconv

X = np.ones((2, 4, 10))
W = np.ones((6, 4, 3))
W_GROUPED = np.ones((6, 2, 3))
G = np.ones((2, 6, 8))


def conv(**kw):
    args = dict(x=X, weight=W)
    args.update(kw)
    return lambda: numconv.conv1d(**args)


def backward(**kw):
    args = dict(x=X, weight=W, grad_output=G)
    args.update(kw)
    return lambda: numconv.conv1d_backward(**args)


BAD = [
    # (id, call, exception, words the message must contain)
    ("x_ndim_1", conv(x=np.ones(5)), ValueError, ["x", "dimensions"]),
    ("x_ndim_4", conv(x=np.ones((1, 1, 4, 10))), ValueError, ["x", "dimensions"]),
    ("weight_ndim", conv(weight=np.ones((6, 4))), ValueError, ["weight", "dimensions"]),
    ("channel_mismatch", conv(weight=np.ones((6, 3, 3))), ValueError, ["C_in", "4"]),
    ("groups_c_in", conv(weight=np.ones((6, 1, 3)), groups=3), ValueError,
     ["groups=3", "C_in=4"]),
    ("groups_c_out", conv(weight=np.ones((5, 2, 3)), groups=2), ValueError,
     ["groups=2", "C_out=5"]),
    ("stride_zero", conv(stride=0), ValueError, ["stride", ">= 1", "0"]),
    ("dilation_zero", conv(dilation=0), ValueError, ["dilation", ">= 1"]),
    ("groups_zero", conv(groups=0), ValueError, ["groups", ">= 1"]),
    ("stride_float", conv(stride=1.5), TypeError, ["stride", "int"]),
    ("stride_2_tuple", conv(stride=(1, 1)), ValueError, ["stride", "1-tuple"]),
    ("padding_negative", conv(padding=-1), ValueError, ["padding", ">= 0", "-1"]),
    ("padding_pair_negative", conv(padding=(1, -2)), ValueError, ["padding[1]", "-2"]),
    ("padding_triple", conv(padding=(1, 2, 3)), ValueError, ["padding", "(left, right)"]),
    ("padding_string", conv(padding="full"), ValueError, ["padding", "'full'", "same"]),
    ("padding_mode", conv(padding_mode="mirror"), ValueError, ["padding_mode", "mirror"]),
    ("output_too_short", conv(x=np.ones((2, 4, 2))), ValueError, ["output length", "< 1"]),
    ("dilation_too_long", conv(dilation=5), ValueError, ["output length", "dilation"]),
    ("reflect_too_much", conv(x=np.ones((2, 4, 3)), padding=3, padding_mode="reflect"),
     ValueError, ["reflect", "padding", "L=3"]),
    ("circular_too_much", conv(x=np.ones((2, 4, 3)), padding=4, padding_mode="circular"),
     ValueError, ["circular", "padding", "L=3"]),
    ("bias_shape", conv(bias=np.ones(5)), ValueError, ["bias", "(6,)"]),
    ("bias_flag", conv(bias=True), TypeError, ["bias", "True", "None"]),
    ("bias_string", conv(bias="abc"), TypeError, ["bias", "dtype", "float32"]),
    ("complex", conv(x=np.ones((2, 4, 10), complex)), TypeError, ["x", "complex"]),
    ("float16", conv(weight=np.ones((6, 2, 3), np.float16)), TypeError,
     ["weight", "float16"]),
    ("strings", conv(x=np.full((2, 4, 10), "a")), TypeError, ["x", "<U1"]),
    ("object", conv(x=np.array([[[None] * 10] * 4] * 2)), TypeError, ["x", "object"]),
    ("ragged", conv(x=[[1.0, 2.0], [3.0]]), ValueError, ["x", "rectangular"]),
    ("none_weight", conv(weight=None), TypeError, ["weight", "None"]),
    ("grad_output_shape", backward(grad_output=np.ones((2, 6, 9))), ValueError,
     ["grad_output", "(2, 6, 8)"]),
    ("grad_output_ndim", backward(grad_output=np.ones((6, 8))), ValueError,
     ["grad_output", "(2, 6, 8)"]),
    ("backward_bias_flag", backward(bias="yes"), TypeError, ["bias", "True or False"]),
    ("grad_input_length", lambda: numconv.conv1d_grad_input(G, W_GROUPED, -3, groups=2),
     ValueError, ["input_length", ">= 0"]),
    ("grad_input_shape", lambda: numconv.conv1d_grad_input(G, W_GROUPED, 11, groups=2),
     ValueError, ["grad_output", "(2, 6, 9)"]),
    ("grad_weight_kernel_size", lambda: numconv.conv1d_grad_weight(X, G, 0),
     ValueError, ["kernel_size", ">= 1"]),
    ("grad_weight_batched_like",
     lambda: numconv.conv1d_grad_weight(X, np.ones((6, 8)), 3), ValueError,
     ["grad_output", "batched"]),
    ("grad_weight_groups", lambda: numconv.conv1d_grad_weight(X, G, 3, groups=3),
     ValueError, ["groups=3", "C_in=4"]),
    ("grad_bias_ndim", lambda: numconv.conv1d_grad_bias(np.ones(4)), ValueError,
     ["grad_output", "dimensions"]),
    ("transpose_output_padding",
     lambda: numconv.conv_transpose1d(X, np.ones((4, 2, 3)), stride=2, output_padding=2),
     ValueError, ["output_padding", "stride"]),
    ("transpose_channels", lambda: numconv.conv_transpose1d(X, np.ones((3, 2, 3))),
     ValueError, ["weight.shape[0]", "C_in=4", "C_in, C_out/groups, K"]),
    ("transpose_padding_string",
     lambda: numconv.conv_transpose1d(X, np.ones((4, 2, 3)), padding="same"),
     ValueError, ["padding", "'same'"]),
    ("transpose_too_short",
     lambda: numconv.conv_transpose1d(X, np.ones((4, 2, 3)), padding=20),
     ValueError, ["output length", "padding=20"]),
    ("transpose_groups",
     lambda: numconv.conv_transpose1d(X, np.ones((4, 2, 3)), groups=3),
     ValueError, ["groups=3"]),
]


@pytest.mark.parametrize("call, exc, words", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_is_refused_with_a_clear_message(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_zero_batch_gives_empty_results_of_the_right_shape():
    x = np.ones((0, 4, 10), np.float32)
    w = np.ones((6, 2, 3), np.float32)
    y = numconv.conv1d(x, w, groups=2, padding=1)
    grads = numconv.conv1d_backward(x, w, np.ones((0, 6, 10), np.float32), groups=2,
                                    padding=1)

    assert y.shape == (0, 6, 10) and y.dtype == np.float32
    assert grads.input.shape == x.shape
    np.testing.assert_array_equal(grads.weight, np.zeros_like(w))
    np.testing.assert_array_equal(grads.bias, np.zeros(6, np.float32))


@pytest.mark.parametrize(
    "x_dtype, w_dtype, expected",
    [
        (np.float32, np.float32, np.float32),
        (np.float32, np.float64, np.float64),
        (np.int32, np.float32, np.float64),
        (np.bool_, np.float32, np.float64),
        (np.int64, np.int64, np.float64),
    ],
)
def test_result_dtype_rules(x_dtype, w_dtype, expected):
    x = np.ones((1, 2, 5), x_dtype)
    w = np.ones((1, 2, 2), w_dtype)

    y = numconv.conv1d(x, w)

    assert y.dtype == expected
    np.testing.assert_array_equal(y, np.full((1, 1, 4), 4.0))


def test_odd_layouts_give_the_same_result_and_inputs_are_untouched():
    rng = np.random.default_rng(3)
    base = rng.standard_normal((3, 4, 20))
    w = rng.standard_normal((2, 4, 3))
    expected = numconv.conv1d(base, w, padding=1)
    views = {
        "negative stride": np.ascontiguousarray(base[:, :, ::-1])[:, :, ::-1],
        "fortran": np.asfortranarray(base),
        "every other": np.repeat(base, 2, axis=2)[:, :, ::2],
        "list": base.tolist(),
    }
    readonly = base.copy()
    readonly.flags.writeable = False
    views["read-only"] = readonly
    for name, view in views.items():
        before = np.array(view, copy=True)
        y = numconv.conv1d(view, w, padding=1)
        np.testing.assert_array_equal(y, expected, err_msg=name)
        np.testing.assert_array_equal(np.asarray(view), before, err_msg=name)


@pytest.mark.parametrize(
    "accepted, refused",
    [
        (dict(stride=1), dict(stride=True)),
        (dict(stride=1), dict(stride=np.True_)),
        (dict(padding=2), dict(padding=2.0)),
        (dict(padding=(1, 2)), dict(padding=(1, 2.0))),
        (dict(padding=(1, 1)), dict(padding=(1, True))),
        (dict(dilation=(1,)), dict(dilation=(True,))),
        (dict(groups=1), dict(groups=1.0)),
    ],
    ids=lambda kw: "-".join(f"{k}={v!r}" for k, v in kw.items()),
)
def test_remembered_specs_are_not_reused_for_equal_values_of_other_types(
    accepted, refused
):
    # Valid specs are remembered between calls. A value that compares equal to
    # an accepted one (True == 1, 2.0 == 2) but that validation refuses must
    # still be refused, however often the accepted value was used before.
    x, w = np.ones((2, 4, 10)), np.ones((6, 4, 3))
    for _ in range(2):
        numconv.conv1d(x, w, **accepted)
        g = np.ones_like(numconv.conv1d(x, w, **accepted))
        numconv.conv1d_backward(x, w, g, **accepted)
    with pytest.raises(TypeError, match="must be an int"):
        numconv.conv1d(x, w, **refused)
    with pytest.raises(TypeError, match="must be an int"):
        numconv.conv1d_backward(x, w, g, **refused)


def test_remembered_specs_serve_equal_values_that_validation_accepts():
    x, w = np.arange(80.0).reshape(2, 4, 10), np.ones((6, 4, 3))
    expected = numconv.conv1d(x, w, stride=2, padding=(1, 2))

    for stride in (2, np.int64(2), (2,), [2], (np.int32(2),)):
        for padding in ((1, 2), [1, 2], (np.int64(1), 2)):
            y = numconv.conv1d(x, w, stride=stride, padding=padding)
            np.testing.assert_array_equal(y, expected)


@pytest.mark.parametrize("rng", ["seed", 1.5, -1])
def test_conv1d_layer_names_a_bad_rng(rng):
    with pytest.raises(TypeError, match="rng must be a numpy.random.Generator"):
        numconv.Conv1d(4, 6, 3, rng=rng)


@pytest.mark.parametrize(
    "args, kwargs, name, kinds",
    [
        ((4.0, 6, 3), {}, "in_channels", "an int,"),
        (((4,), 6, 3), {}, "in_channels", "an int,"),
        ((4, "6", 3), {}, "out_channels", "an int,"),
        ((4, 6, 3), {"groups": 2.0}, "groups", "an int,"),
        ((4, 6, 3.0), {}, "kernel_size", "an int or a 1-tuple of int"),
        ((4, 6, 3), {"stride": (1, 1)}, "stride", "an int or a 1-tuple of int"),
        ((4, 6, 3), {"dilation": True}, "dilation", "an int or a 1-tuple of int"),
    ],
)
def test_conv1d_layer_names_what_its_sizes_may_be(args, kwargs, name, kinds):
    with pytest.raises(TypeError, match=f"{name} must be {kinds}"):
        numconv.Conv1d(*args, **kwargs)


def test_conv1d_layer_takes_one_tuples_where_torch_does():
    layer = numconv.Conv1d(4, 6, (3,), stride=(2,), dilation=[1])
    assert (layer.kernel_size, layer.stride, layer.dilation) == (3, 2, 1)
    assert layer.weight.shape == (6, 4, 3)

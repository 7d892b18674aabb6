"""A 1D convolution layer for hand-written NumPy networks.

``Conv1d`` holds a weight and a bias, as ``torch.nn.Conv1d`` does, and runs both
passes through numconv's public functions: ``forward`` keeps its input, and
``backward`` turns the gradient of the output into the gradient of the input
while storing the parameter gradients. There is no autograd graph; a network
calls ``backward`` on its layers in reverse order.

Layout is NCL: the input is (N, C_in, L) or unbatched (C_in, L).
"""

import math
import operator

import numpy as np

# Only the public functions: the layer is what a user could write themselves.
from numconv import conv1d, conv1d_backward


def _size(name, value, one_tuple=False):
    """A positive int, or with ``one_tuple`` also a 1-tuple holding one (torch
    takes both for the kernel size, stride and dilation, only ints for the
    channels and groups)."""
    if one_tuple and isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        kinds = "an int or a 1-tuple of int" if one_tuple else "an int"
        raise TypeError(f"{name} must be {kinds}, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return operator.index(value)


_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class Conv1d:
    """1D convolution layer with ``torch.nn.Conv1d``'s arguments and initialisation.

    Parameters
    ----------
    in_channels : int, C_in
    out_channels : int, C_out
    kernel_size : int or (K,), K
    stride, dilation : int or 1-tuple, >= 1
    padding : int, (p,), (left, right), "valid", "same" or "causal"
        As for ``numconv.conv1d``.
    groups : int, divides both C_in and C_out
    bias : bool, whether the layer has a bias
    padding_mode : "zeros", "reflect", "replicate" or "circular"
    device : None or "cpu"; accepted so that torch-style calls work unchanged
    dtype : float32 (the default, as in torch) or float64
    rng : numpy.random.Generator, int or None
        Source of the initial weights; an int seeds a new Generator.

    Attributes
    ----------
    weight : ndarray, (C_out, C_in/groups, K)
    bias : ndarray, (C_out,), or None
    grad_weight, grad_bias : ndarray shaped like weight and bias, set by
        ``backward`` (None before it has run, and grad_bias None without bias)

    Notes
    -----
    ``reset_parameters`` draws weight and bias independently and uniformly from
    (-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = C_in/groups * K. That is
    torch's default: Kaiming-uniform with a = sqrt(5) for the weight, whose bound
    gain * sqrt(3 / fan_in) with gain = sqrt(2 / (1 + a**2)) reduces to the same
    1/sqrt(fan_in). The numbers drawn differ from torch's, since they come from
    NumPy's generator.
    """

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups=1,
        bias=True,
        padding_mode="zeros",
        device=None,
        dtype=None,
        rng=None,
    ):
        self.in_channels = _size("in_channels", in_channels)
        self.out_channels = _size("out_channels", out_channels)
        self.kernel_size = _size("kernel_size", kernel_size, one_tuple=True)
        self.groups = _size("groups", groups)
        for name, channels in (
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
        ):
            if channels % self.groups:
                raise ValueError(
                    f"groups={self.groups} must divide {name}, got {name}={channels}"
                )
        if padding_mode not in _PADDING_MODES:
            raise ValueError(
                f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}"
            )
        if device not in (None, "cpu"):
            raise ValueError(
                f"device must be None or 'cpu' (numconv runs on the CPU), "
                f"got {device!r}"
            )
        dtype = np.dtype(np.float32 if dtype is None else dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"bias must be True or False, got {bias!r}")

        # Padding is passed to numconv unchanged: whether it fits depends on the
        # input's length, so numconv checks it at each forward.
        self.stride = _size("stride", stride, one_tuple=True)
        self.dilation = _size("dilation", dilation, one_tuple=True)
        self.padding = padding
        self.padding_mode = padding_mode

        self.dtype = dtype
        C_in_g = self.in_channels // self.groups
        self.weight = np.empty((self.out_channels, C_in_g, self.kernel_size), dtype)
        self.bias = np.empty(self.out_channels, dtype) if bias else None
        self.grad_weight = None
        self.grad_bias = None
        self._input = None
        self.reset_parameters(rng)

    def _options(self):
        return dict(
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            padding_mode=self.padding_mode,
        )

    def reset_parameters(self, rng=None):
        """Draw weight and bias uniformly from (-1/sqrt(fan_in), 1/sqrt(fan_in))."""
        if not isinstance(rng, np.random.Generator):
            try:
                rng = np.random.default_rng(rng)
            except (TypeError, ValueError) as err:
                raise TypeError(
                    f"rng must be a numpy.random.Generator, a seed (a non-negative "
                    f"int or sequence of them) or None, got {rng!r} ({err})"
                ) from None
        fan_in = self.weight.shape[1] * self.weight.shape[2]
        bound = 1.0 / math.sqrt(fan_in)

        self.weight[...] = rng.uniform(-bound, bound, self.weight.shape)
        if self.bias is not None:
            self.bias[...] = rng.uniform(-bound, bound, self.bias.shape)

    def parameters(self):
        """The parameter arrays, weight first (updated in place by optimisers)."""
        return [self.weight] if self.bias is None else [self.weight, self.bias]

    def gradients(self):
        """The gradients of ``parameters()``, in the same order."""
        if self.bias is None:
            return [self.grad_weight]
        return [self.grad_weight, self.grad_bias]

    def forward(self, x):
        """Convolve x, keeping it for ``backward``.

        x : array, (N, C_in, L) or (C_in, L). Returns (N, C_out, L_out) or
        (C_out, L_out).
        """
        y = conv1d(x, self.weight, self.bias, **self._options())

        self._input = x
        return y

    __call__ = forward

    def backward(self, grad_output):
        """Gradient of the input from the gradient of the last ``forward``'s output.

        grad_output : array shaped like the output, (N, C_out, L_out) or
        (C_out, L_out). Returns the input gradient, shaped like the input, and
        stores ``grad_weight`` (C_out, C_in/groups, K) and ``grad_bias`` (C_out,).
        """
        if self._input is None:
            raise RuntimeError("Conv1d.backward was called before forward")
        grads = conv1d_backward(
            self._input,
            self.weight,
            grad_output,
            bias=self.bias is not None,
            **self._options(),
        )

        # Gradients take the parameters' dtype, as torch's do, so an optimiser
        # updates float32 weights with float32 steps.
        self.grad_weight = grads.weight.astype(self.dtype, copy=False)
        if self.bias is not None:
            self.grad_bias = grads.bias.astype(self.dtype, copy=False)
        return grads.input

    def __repr__(self):
        extra = "" if self.bias is not None else ", bias=False"
        return (
            f"Conv1d({self.in_channels}, {self.out_channels}, "
            f"kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding!r}, dilation={self.dilation}, groups={self.groups}"
            f"{extra}, padding_mode={self.padding_mode!r}, dtype={self.dtype})"
        )

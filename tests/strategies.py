"""Hypothesis strategies that draw valid convolutions, and their random arrays."""

from dataclasses import dataclass, field

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

import reference

MODES = ["zeros", "reflect", "replicate", "circular"]


@dataclass
class Case:
    """One valid conv1d call: hyper-parameters, arrays and derived sizes."""

    x: np.ndarray  # (N, C_in, L) or (C_in, L)
    weight: np.ndarray  # (C_out, C_in/groups, K)
    bias: np.ndarray  # (C_out,)
    grad_output: np.ndarray  # shaped like the output
    kwargs: dict = field(default_factory=dict)  # stride, padding, ... padding_mode
    left: int = 0
    right: int = 0

    @property
    def batched(self):
        return self.x.ndim == 3

    @property
    def L(self):
        return self.x.shape[-1]

    @property
    def K(self):
        return self.weight.shape[-1]

    def batch(self, arr):
        return arr if self.batched else arr[None]


def padding_forms(max_pad=4):
    ints = st.integers(0, max_pad)
    return st.one_of(
        ints,
        st.tuples(ints),
        st.tuples(ints, ints),
        st.sampled_from(["valid", "same", "causal"]),
    )


@st.composite
def cases(
    draw,
    dtypes=(np.float32, np.float64),
    modes=MODES,
    max_channels_per_group=3,
    max_groups=3,
    max_L=24,
    max_K=5,
    max_N=3,
    allow_unbatched=True,
):
    """A valid convolution with random data; depthwise (one channel per group) included."""
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    groups = draw(st.integers(1, max_groups))
    C_in_g = draw(st.integers(1, max_channels_per_group))
    C_out_g = draw(st.integers(1, max_channels_per_group))
    K = draw(st.integers(1, max_K))
    stride = draw(st.integers(1, 4))
    dilation = draw(st.integers(1, 3))
    L = draw(st.integers(1, max_L))
    N = draw(st.integers(0, max_N))
    batched = draw(st.booleans()) if allow_unbatched else True
    if not batched:
        N = 1
    padding = draw(padding_forms())
    mode = draw(st.sampled_from(modes))
    left, right = reference.padding_pair(padding, L, K, stride, dilation)
    if mode == "reflect":
        assume(max(left, right) < L)
    if mode == "circular":
        assume(max(left, right) <= L)
    assume(reference.output_length(L, left, right, K, stride, dilation) >= 1)

    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    C_in, C_out = C_in_g * groups, C_out_g * groups
    L_out = reference.output_length(L, left, right, K, stride, dilation)
    x = rng.standard_normal((N, C_in, L)).astype(dtype)
    weight = rng.standard_normal((C_out, C_in_g, K)).astype(dtype)
    bias = rng.standard_normal(C_out).astype(dtype)
    grad_output = rng.standard_normal((N, C_out, L_out)).astype(dtype)
    if not batched:
        x, grad_output = x[0], grad_output[0]
    kwargs = dict(
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        padding_mode=mode,
    )
    return Case(x, weight, bias, grad_output, kwargs, left, right)


def ref_args(case):
    """Positional hyper-parameters for the functions of ``reference``."""
    k = case.kwargs
    return (k["stride"], case.left, case.right, k["dilation"], k["groups"], k["padding_mode"])

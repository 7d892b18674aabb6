"""numconv: 1D convolution and its gradients on the CPU, compiled with Numba.

Same semantics as ``torch.nn.functional.conv1d``; layout NCL. See the README
for the API table and the gradient derivation.
"""

from numconv import _config  # noqa: F401  (chooses the threading layer first)
from numconv._api import (
    Conv1dGrads,
    conv1d,
    conv1d_backward,
    conv1d_grad_bias,
    conv1d_grad_input,
    conv1d_grad_weight,
    conv_transpose1d,
)
from numconv._memory import buffer_cache_info, set_buffer_cache
from numconv.layers import Conv1d

__version__ = "0.1.0"

__all__ = [
    "Conv1d",
    "Conv1dGrads",
    "buffer_cache_info",
    "conv1d",
    "conv1d_backward",
    "conv1d_grad_bias",
    "conv1d_grad_input",
    "conv1d_grad_weight",
    "conv_transpose1d",
    "set_buffer_cache",
]

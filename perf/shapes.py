"""The benchmark's shape suite: layer shapes taken from real models, as data.

Layout is NCL. ``padding`` is what numconv's ``conv1d`` takes: an int (the same
on both sides), ``"causal"`` (dilation*(K-1) on the left only) or ``"same"``
(dilation*(K-1) in total, the odd extra on the right). ``groups == C_in`` is a
depthwise convolution.
"""

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Shape:
    """One layer: the arguments of a conv1d call, and where the layer comes from.

    ``float64`` marks the shapes that are also timed in double precision; the
    subset is small and cheap so that the default run stays short.
    """

    name: str
    N: int
    C_in: int
    C_out: int
    L: int
    K: int
    stride: int
    padding: object
    dilation: int
    groups: int
    source: str
    float64: bool = False

    def pads(self):
        """(left, right) padding, as numconv resolves ``padding`` at stride 1."""
        if self.padding == "causal":
            return self.dilation * (self.K - 1), 0
        if self.padding == "same":
            total = self.dilation * (self.K - 1)
            return total // 2, total - total // 2
        return self.padding, self.padding

    @property
    def L_out(self):
        left, right = self.pads()
        span = self.dilation * (self.K - 1) + 1
        return (self.L + left + right - span) // self.stride + 1

    @property
    def forward_flops(self):
        """Multiply-adds of the forward pass, counted as two operations each."""
        C_in_g = self.C_in // self.groups
        return 2 * self.N * self.C_out * C_in_g * self.K * self.L_out

    def as_dict(self):
        out = asdict(self)
        out["L_out"] = self.L_out
        out["pads"] = list(self.pads())
        return out


SHAPES = (
    Shape("resnet1d", 32, 64, 64, 1024, 3, 1, 1, 1, 1, "1D ResNet block", True),
    Shape("wide", 16, 256, 256, 512, 3, 1, 1, 1, 1, "wide residual layer"),
    Shape("longkernel", 8, 32, 32, 4096, 31, 1, 15, 1, 1, "long-kernel layer"),
    Shape(
        "conformer_dw", 16, 256, 256, 1024, 31, 1, 15, 1, 256,
        "Conformer depthwise conv", True,
    ),
    Shape(
        "mamba_dw", 8, 1536, 1536, 2048, 4, 1, "causal", 1, 1536,
        "Mamba short causal conv", True,
    ),
    Shape(
        "w2v_first", 8, 1, 512, 16000, 10, 5, 0, 1, 1, "wav2vec 2.0 first layer", True
    ),
    Shape("w2v_strided", 8, 512, 512, 3199, 3, 2, 0, 1, 1, "wav2vec 2.0 later layer"),
    Shape(
        "wavenet_dil", 16, 64, 64, 4096, 2, 1, "causal", 8, 1, "WaveNet dilated layer"
    ),
    Shape("textcnn", 64, 300, 100, 100, 5, 1, 2, 1, 1, "text CNN"),
    Shape(
        "fir_long", 1, 1, 1, 1_000_000, 101, 1, 50, 1, 1,
        "FIR filter on a long signal", True,
    ),
    Shape("tiny", 1, 4, 8, 64, 3, 1, 1, 1, 1, "call overhead", True),
    Shape("grouped", 16, 128, 128, 1024, 5, 1, 2, 1, 8, "grouped conv"),
    Shape(
        "ecg_first", 64, 12, 64, 4096, 16, 1, "same", 1, 1, "12-lead ECG ResNet stem"
    ),
    Shape("tcn", 64, 25, 25, 784, 7, 1, "causal", 4, 1, "TCN level", True),
)

BY_NAME = {shape.name: shape for shape in SHAPES}

"""Choice of algorithm for each ConvSpec, in one place.

An algorithm family provides three kernels with one calling convention:

- ``forward(xp, weight, bias, groups, stride, dilation, out)``
- ``grad_input(grad_output, weight, groups, stride, dilation, out)``
- ``grad_weight(xp, grad_output, groups, stride, dilation, out)``

with the shapes documented in ``numconv._kernels.direct``, and a predicate
``supports(spec, op)`` saying which specs it can run. ``choose`` picks the
family for a spec and an operation; ``force`` overrides the choice, so tests can
run every family on every spec it supports.

Every entry point below takes C-contiguous, writeable, aligned arrays of
``spec.dtype`` (the padded input may instead be a ``numconv._padding.ZeroPadded``)
and allocates its own result. ``numconv._polyphase`` runs the chosen family:
it rewrites stride > 1 as stride 1 for the operations a family lists in its
``POLYPHASE`` (``PADDED_TAPS``, ``PHASEWISE``), hands zero-padded input
unpadded to families that provide the optional stride-1 kernels
``forward_shifted`` and ``grad_weight_shifted``, and runs a batch of short
rows as one row where ``_joins_batch`` says so.
"""

import contextlib
import threading

import numpy as np

from numconv import _memory, _polyphase
from numconv._config import kernel_guard
from numconv._kernels import common, direct, gemm, im2col, tiled
from numconv._padding import fold_padding

FAMILIES = {"direct": direct, "gemm": gemm, "im2col": im2col, "tiled": tiled}


class _Forced(threading.local):
    # A class default, so that reading it in a thread that never forced costs no
    # AttributeError.
    name = None


_forced = _Forced()


@contextlib.contextmanager
def force(name):
    """Use the family ``name`` for every operation in this thread while active."""
    if name not in FAMILIES:
        raise ValueError(f"unknown algorithm {name!r}; known: {sorted(FAMILIES)}")
    previous = getattr(_forced, "name", None)
    _forced.name = name
    try:
        yield
    finally:
        _forced.name = previous


# The rule below, from timings through the public functions (float32, 2
# threads, interleaved runs, medians of 7, ms; direct / gemm / im2col):
#
#   (C_in/g, C_out/g, K, groups)   forward             weight grad        input grad
#   (16, 16, 5, 8)  "grouped"      10.9 / 15.7 / 14.3  11.5 / 15.3 / 15.0  5.9 / 9.2
#   (25, 25, 7, 1)  "tcn"          15.0 / 17.5 / 17.4  15.0 / 18.4 / 16.6  6.5 / 8.8
#   (16, 16, 5, 1)                 10.4 / 16.1 / 14.9   9.6 / 15.2 / 12.9  5.5 / 8.9
#   (16, 64, 5, 1)                 45.9 / 42.9 / 34.1  36.2 / 32.0 / 26.2 20.1 / 25.3
#   (12, 64, 16, 1) "ecg_first"   104.6 / 124.7 / 77.6 181.5 / 200 / 131  158 / 249
#   (3, 64, 16, 1)                 53.7 / 149 / 48.2   52.1 / 149 / 41.6  53.6 / 303
#   (4, 128, 3, 1)                 21.3 / 42.0 / 28.2  12.8 / 26.7 / 15.9 18.0 / 45.6
#   (1, 64, 7, 1)                  18.9 / 81.0 / 26.0  12.1 / 45.3 / 18.7 11.0 / 113
#   (2, 256, 9, 1), stride 4      159 / 26.5 / 17.5   119 / 29.0 / 10.7  135 / 70.2
#   (32, 32, 31, 1) "longkernel"   34.1 / 30.4 / 31.3  39.0 / 33.2 / 33.1 39.7 / 30.9
#   (64, 64, 3, 1) "resnet1d"      28.3 / 17.8 / 17.8  29.7 / 16.7 / 16.9 13.2 / 10.0
#
# The two BLAS forms against each other, timed again once both forward
# passes summed into a scratch block (see
# ``numconv._kernels.gemm.forward_kernel``), gemm / im2col, float32:
#
#   (C_in/g, C_out/g, K)             forward        weight grad
#   (64, 64, 3) "resnet1d"           10.5 / 9.1     11.3 / 10.0
#   (64, 64, 2), dilation 8          19.0 / 16.3    14.9 / 12.9
#   (256, 256, 3) "wide"             23.3 / 26.7    29.5 / 30.9
#   (300, 100, 5) "textcnn"          20.8 / 24.9
#   (32, 32, 31) "longkernel"        30.3 / 32.5
#   (512, 512, 3), stride 2          169 / 207
#
# BLAS pays off once its products have enough output channels (C_out/g for the
# forward pass and the weight gradient, C_in/g for the input gradient) and a
# deep enough inner dimension; the direct kernels win below that. Of the two
# BLAS forms, the block-local im2col wins while its depth C_in/g * K is small
# (the shifted products then have a thin inner dimension C_in/g); past
# IM2COL_MAX_DEPTH its scratch block has to hold fewer positions to stay in
# L2, and the shifted products, which read the input where it lies, win.
BLAS_MIN_CHANNELS = 32
IM2COL_MIN_DEPTH = 16
IM2COL_MAX_DEPTH = 256

# The register-tiled kernels against the direct ones, float32, 2 threads,
# through the public functions, interleaved, medians of 9, ms (direct / tiled):
#
#   (C_in/g, C_out/g, K, groups)  forward         input grad
#   (16, 16, 5, 1)                0.76 / 0.57     0.79 / 0.63
#   (8, 32, 5, 1)                 2.21 / 1.49     2.38 / 2.12
#   (32, 8, 5, 1)                 2.45 / 2.21     2.31 / 1.73
#   (3, 64, 16, 1)                5.29 / 3.52     6.30 / 5.92
#   (24, 24, 3, 1)                1.13 / 0.47     0.82 / 0.49
#   (4, 64, 3, 1)                 1.80 / 2.17     1.64 / 1.58
#   (4, 128, 3, 1)                2.02 / 2.74     3.11 / 3.40
#   (64, 4, 3, 1)                 0.88 / 1.15     0.80 / 1.00
#   (1, 64, 7, 1)                 1.89 / 2.34     2.15 / 9.49
#   (4, 4, 3, 16)                 0.44 / 0.93     0.50 / 1.19
#   (2, 256, 9, 1), stride 4      47.6 / 5.33     51.7 / 33.6 (gemm's)
#
# and against the BLAS families on the suite's layers (forward, kernel only,
# medians of 21; im2col / tiled): resnet1d 7.88 / 6.70, wide 24.2 / 23.3,
# textcnn 23.9 / 20.1, grouped 8.12 / 3.58, ecg_first 58.0 / 39.2, tcn 8.58 /
# 4.82, longkernel 27.6 / 13.0. The input gradient (auto / tiled): resnet1d
# 12.9 / 10.1, longkernel 33.8 / 19.2, ecg_first 103 / 54.7, textcnn 22.3 /
# 19.5. In float64 BLAS keeps the widest layer: wide forward 51.5 (gemm) /
# 63.4 (tiled). A tile has MR rows (output channels of the product, so the
# input channels for the input gradient), and a product with few rows or a
# shallow inner dimension wastes most of each tile: the direct kernels keep
# those.
#
# With AVX-512 the tiled family's larger tiles (see ``numconv._kernels.tiled``)
# also take the widest layers (Zen 4, float32, through the public functions,
# interleaved, medians of 9, ms; gemm / tiled): wide forward 18.1 / 16.9,
# input gradient 18.4 / 17.6; w2v_strided forward 126.5 / 118.1; float64
# wide forward 37.4 / 36.3, input gradient 39.0 / 38.6.
TILED_MIN_ROWS = 8
TILED_MIN_DEPTH = 16

# Shallow float32 products (depth below TILED_MIN_DEPTH) go to the tiled
# family too once their output is large, since a block whose panels fit in L1
# runs one row tile at a time along them (Zen 4, through the public
# functions, medians of 9 in three rounds, ms, direct / tiled; (N, C_in,
# C_out, L, K)): forward (8, 4, 64, 4096, 3) 0.65-0.69 / 0.43-0.46,
# (8, 4, 128, 4096, 3) 1.60-1.68 / 0.92-0.97, (8, 1, 64, 4096, 7) 0.39-0.42 /
# 0.31-0.32, w2v_first (stride 5) 4.9-5.0 / 4.1-4.3; input gradient
# (8, 64, 4, 4096, 3) 0.62-0.66 / 0.43-0.46. In float64 it was mixed
# ((8, 4, 64, 4096, 3) forward 1.22-1.32 / 1.65-1.73), so those stay direct,
# as do small calls (the tiny layer: 9 / 55 us), except for forward passes of
# a single input channel per group, first layers, where the direct family's
# loops have the least to share across taps. AMD Zen 5, float64 forward,
# interleaved, medians of 9, ms, direct / tiled; (N, C_in, C_out, L, K,
# stride): w2v_first 5.60 / 3.64, (8, 1, 256, 16000, 10, 5) 2.71 / 1.53,
# (8, 1, 64, 16000, 7, 1) 2.82 / 1.76, (8, 1, 128, 8000, 4, 2) 0.80 / 0.52,
# (8, 1, 64, 4096, 7, 1) 0.47 / 0.26, (64, 1, 32, 1024, 3, 1) 0.22 / 0.21;
# on Sapphire Rapids w2v_first was level (7.95 / 8.39). With more input
# channels Zen 5 also favoured the tiled family ((8, 4, 64, 4096, 3) 0.70 /
# 0.59, (8, 2, 64, 4096, 3) 0.35 / 0.22), Zen 4 did not (above).
TILED_SHALLOW_MIN_OUTPUT = 2**16
BLAS_WIDE = 2**62 if tiled.AVX512 else 256

# The tiled family's stride-1 weight gradient (dot products along the
# positions, see ``numconv._kernels.tiled.dot_tile``) against the previous
# choice, float32, through the public function, interleaved, medians of 11,
# ms (previous / tiled):
#
#   resnet1d 10.0 / 7.97 (im2col)     wide 33.8 / 30.7 (gemm)
#   grouped 6.46 / 3.93 (direct)      tcn 8.82 / 4.54 (direct)
#   ecg_first 72.8 / 51.9 (im2col)    longkernel 31.0 / 14.5 (gemm)
#   wavenet_dil 14.0 / 13.2 (im2col)  textcnn 21.1 / 26.2 (im2col)
#   (N, C_in, C_out, L, K, groups), direct / tiled:
#   (8, 1, 64, 4096, 7, 1) 0.64 / 0.43      (8, 64, 4, 4096, 3, 1) 1.03 / 0.83
#   (8, 8, 32, 4096, 5, 1) 1.35 / 0.87      (8, 8, 8, 4096, 5, 1) 0.37 / 0.37
#   (8, 64, 64, 4096, 3, 16) 1.81 / 2.15    (8, 64, 64, 4096, 5, 64) 0.92 / 2.14
#   (8, 128, 128, 4096, 5, 32) 4.01 / 4.34
#   (N, C, C, L_out, 3, 1), auto / tiled: (64, 64, 100) 2.07 / 2.27,
#   (64, 64, 200) 3.88 / 3.22, (64, 64, 400) 7.48 / 5.85.
#
# float64 (auto / tiled): resnet1d 16.7 / 14.2, wide 86.2 / 80.2, tcn 16.1 /
# 8.89, grouped 10.7 / 6.68, longkernel 48.4 / 32.6, ecg_first 121 / 98.7.
# Each tile holds DOT_ROWS output channels (4, or 6 with AVX-512), so fewer
# than 8 per group waste most of it. Each block of positions ends in a sum
# across vector lanes; since rows shorter than a block are taken several
# samples at a time (``numconv._kernels.tiled.dots_block``), short rows pay
# for it only when the whole call is small, and there too few units are left
# to keep both threads busy. AMD Zen 5 (AVX-512), through conv1d_grad_weight,
# interleaved, medians of 9, ms, previous choice (im2col or gemm) / tiled;
# (N, C, C, L_out, K):
#
#   float32  textcnn 10.2 / 6.36      (64, 64, 64, 100, 3) 0.98 / 0.60
#   (64, 64, 64, 50, 3) 0.60 / 0.51   (256, 64, 64, 16, 3) 1.14 / 0.67
#   (64, 128, 128, 32, 3) 1.23 / 0.97 (128, 128, 128, 16, 3) 1.34 / 1.24
#   (8, 512, 512, 128, 3) 14.4 / 9.33 (8, 256, 256, 100, 3) 2.93 / 2.37
#   float64  textcnn 19.4 / 13.5      (64, 64, 64, 100, 3) 1.65 / 1.09
#   and, fewer than DOTS_MIN_POSITIONS positions in all and rows shorter than
#   DOTS_MIN_LENGTH, float32 (32, 128, 128, 32, 3) 0.56-0.62 / 0.95-1.06,
#   (32, 64, 64, 32, 3) 0.25 / 0.29, (32, 256, 256, 32, 3) 3.92 / 4.08,
#   (4, 64, 64, 100, 3) 0.115 / 0.126, float64 (32, 128, 128, 32, 3) 1.08 /
#   1.78; one such case went the other way ((16, 128, 128, 32, 3) 0.55 /
#   0.44).
DOTS_MIN_ROWS = 8
DOTS_MIN_LENGTH = 100
DOTS_MIN_POSITIONS = 2048

# A strided layer with a polyphase form runs the dot products on its phases
# (see ``numconv._kernels.tiled.POLYPHASE``) when each phase keeps at least
# this many taps; with one tap per phase the phase products are plain matrix
# products, where BLAS is better. float32, through the public function,
# medians of 9, two interleaved rounds, ms, previous / phases: w2v_first
# 3.95-4.22 / 3.42-3.66; (N, C_in, C_out, L, K, stride) = (16, 64, 128, 2048,
# 4, 2) 7.63-7.69 / 6.93-6.96; (16, 128, 128, 2048, 2, 2) 8.46-8.63 /
# 9.98-10.4.
PHASE_DOTS_MIN_K = 2

# When K is not a multiple of the stride, the phase form pads the taps with
# zeros (``numconv._polyphase``, dropped after the sums); it pays while the
# padded taps are at most 1 / PHASE_PADDED_SHARE of all. AMD Zen 5, through
# conv1d_grad_weight, interleaved, medians of 7, ms, gemm (the previous
# choice) / tiled on the phases; (N, C_in, C_out, L, K, stride):
#
#   float32  w2v_strided 95.1 / 76.1        (16, 64, 64, 2048, 3, 2) 2.73 / 1.79
#   (16, 64, 128, 2048, 5, 2) 7.49 / 4.57   (16, 64, 64, 2048, 5, 3) 3.21 / 2.05
#   (16, 64, 64, 2048, 7, 3) 4.02 / 2.47    (16, 32, 32, 2048, 3, 2) 0.97 / 0.63
#   (16, 128, 128, 2048, 3, 2) 9.79 / 6.78
#   float64  w2v_strided 190 / 167          (16, 64, 64, 2048, 3, 2) 6.63 / 5.12
#   (16, 128, 128, 2048, 3, 2) 20.5 / 16.8
#
# Three padded taps of eight lose in float64 ((16, 64, 64, 2048, 5, 4) 5.63 /
# 6.85; float32 2.48 / 1.90).
PHASE_PADDED_SHARE = 4

# A strided input gradient with a polyphase form and too few channels for
# BLAS: the tiled products on the phases once they have this many rows
# (C_in/g * stride; Zen 4, float32, through the public function, medians of
# 9 in three rounds, ms, direct / tiled; (N, C_in, C_out, L, K, stride)):
# w2v_first (8, 1, 512, 16000, 10, 5) 5.0-5.2 / 3.8-4.1, float64 8.5-9.6 /
# 7.3-7.8; (8, 1, 512, 16000, 8, 4) 4.9-5.0 / 2.9-4.0, float64 10.6 /
# 6.1-7.9; (8, 2, 256, 8000, 10, 5) 2.3-2.4 / 1.25-1.5; two rows were level
# ((8, 1, 256, 16000, 4, 2) 3.1-3.3 / 2.7-3.5). With both channel counts
# past BLAS_MIN_CHANNELS the shifted BLAS products stay ((16, 64, 128, 2048,
# 4, 2) 8.8-9.8 / 9.2-10.6).
PHASE_MIN_ROWS = 4

# A strided input gradient without a polyphase form (K not a multiple of the
# stride, d = 1): the tiled products one phase at a time
# (``numconv._polyphase``, sub-kernels of ceil((K - r) / s) taps), once a
# group has PHASEWISE_MIN_ROWS input channels and each phase product
# TILED_MIN_DEPTH steps (C_out/g * ceil(K / s)). AMD Zen 5, through
# conv1d_grad_input, interleaved, medians of 7, ms, direct / gemm / tiled;
# (N, C_in, C_out, L, K, stride):
#
#   float32  w2v_strided 236 / 89.3 / 51.3
#   (16, 64, 64, 2048, 3, 2) 5.10 / 2.43 / 1.52
#   (16, 64, 128, 2048, 5, 2) 16.1 / 7.32 / 3.56
#   (16, 128, 128, 2048, 3, 2) 20.5 / 8.55 / 4.99
#   (8, 256, 256, 2048, 2, 3) 22.9 / 7.61 / 4.62
#   (16, 12, 64, 4096, 15, 2) 7.56 / 7.46 / 2.19
#   (16, 8, 64, 2048, 3, 2) 0.71 / 0.71 / 0.30
#   (16, 3, 64, 4096, 7, 2) 0.88 / 3.19 / 0.69
#   (16, 4, 64, 2048, 3, 2) 0.34 / 0.60 / 0.26
#   (8, 16, 16, 2048, 3, 2) 0.22 / 0.17 / 0.15
#   float64  w2v_strided 449 / 185 / 109
#   (16, 64, 64, 2048, 3, 2) 8.10 / 4.76 / 2.93
#   (16, 4, 64, 2048, 3, 2) 0.53 / 0.74 / 0.44
#
# Two input channels, shallow phase products, or calls of fewer than
# PHASEWISE_MIN_WORK multiply-adds, whose s + 1 kernel calls cost more than
# they save, stay with the other families: (16, 2, 64, 4096, 5, 2) 0.43 /
# 1.92 / 0.56, (16, 64, 4, 2048, 3, 2) 0.73 / 0.55 / 0.79, (16, 8, 8, 2048,
# 3, 2) 0.16 / 0.19 / 0.17, (8, 16, 16, 1024, 3, 2) 0.13 / 0.09 / 0.09,
# (4, 16, 16, 1024, 3, 2) 0.08 / 0.06 / 0.09, (1, 4, 8, 64, 3, 2) 0.02 /
# 0.02 / 0.05; (4, 64, 64, 512, 3, 2) 0.60 / 0.19 / 0.17 passes. Against
# the polyphase form where that applies, one phase at a time was mixed
# (tiled, float32, ms, phase form / one phase at a time: (16, 64, 64, 2048, 4,
# 2) 3.42 / 1.71, (16, 2, 64, 2048, 4, 2) 0.20 / 0.28, (8, 16, 512, 16000, 10,
# 5) 11.8 / 14.2), so the phase form keeps those.
PHASEWISE_MIN_ROWS = 3

# The forward pass on the joined batch (rows of every sample one after
# another, ``numconv._polyphase``) against the tiled family's own, on the
# tiled family's choices, interleaved, medians of 9, ms, own / joined; AMD Zen
# 5; (N, C_in, C_out, L, K, padding):
#
#   float32 (64, 300, 100, L, 5, 2), textcnn's channels, by L:
#     50 3.93 / 3.43   96 6.17 / 5.59   100 8.11 / 6.61   128 7.72 / 7.41
#     150 8.90 / 8.17   160 9.05 / 8.57   200 18.5 / 18.8   28 1.86 / 1.87
#     64 3.49 / 3.59
#   float64, the same: 50 6.92 / 5.93   64 7.77 / 7.20   100 12.5 / 11.4
#     128 11.1 / 13.3
#   float32 (64, 128, 128, 100, 5, 2) 3.24 / 2.96, (64, 256, 256, 100, 3, 1)
#   7.41 / 7.21, (64, 200, 200, 100, 5, 2) 7.76 / 7.22; shallower or longer:
#   (64, 64, 64, 100, 3, 1) 0.53 / 0.54, (32, 128, 128, 64, 3, 1) 0.55 /
#   0.62, (16, 256, 256, 256, 3, 1) 3.71 / 4.12, (8, 512, 512, 128, 3, 1)
#   4.34 / 4.96, float64 5.93 / 5.74 on (64, 128, 128, 100, 5, 2).
#
# Output rows of JOIN_ROW_BYTES and products of JOIN_MIN_DEPTH (C_in/g * K)
# take it. The input gradient gained less and not reliably ((64, 300, 100, L,
# 5, 2): L = 100 6.01 / 5.83, 96 5.11 / 5.42, 50 3.98 / 3.33), so it stays.
JOIN_ROW_BYTES = (384, 800)
JOIN_MIN_DEPTH = 512
PHASEWISE_MIN_WORK = 1 << 22

# Depthwise layers at stride 1 (one input and one output channel per group):
# the tiled family's row tiles (``numconv._kernels.tiled.depthwise_kernel``,
# also the input gradient) and one-row dot products for the weight gradient,
# against the direct kernels; float32, through the public functions,
# interleaved, medians of 11, ms (direct / tiled):
#
#   (N, C, L, K)            forward        input grad     weight grad
#   (16, 256, 1024, 31)     5.62 / 3.53    6.09 / 3.63    5.37 / 4.45  conformer_dw
#   (8, 1536, 2048, 4)      20.8 / 18.9    15.9 / 15.4    10.1 / 12.3  mamba_dw
#   (8, 64, 4096, 3)        0.64 / 0.57    0.66 / 0.54    0.52 / 0.54
#   (8, 64, 4096, 9)        1.07 / 0.79    0.82 / 0.61    0.67 / 0.80
#   (8, 64, 4096, 15)       1.76 / 1.04    1.19 / 0.77    1.16 / 0.97
#   (8, 64, 4096, 7), (8), (12), (16): weight grad 0.71 / 0.61, 1.00 / 1.08,
#   0.94 / 0.99, 1.11 / 1.03
#   (1, 1, 10**6, 101) forward 2.70 / 3.57: one row is one work item there,
#   where the direct kernels split the row across threads.
#
# The weight gradient's tile holds DW_TAPS = 8 taps, so short kernels waste
# part of it.
#
# On Zen 4 (AVX-512 row tiles) the direct kernels, which sum up to four taps
# in one pass over each output block, took back the shortest kernels
# (float32 forward through the public function, medians of 9 in three rounds,
# ms, direct / tiled; (N, C, L, K, padding)): (8, 1536, 2048, 4, causal)
# mamba_dw 5.5-7.3 / 7.2-7.7, input gradient 5.2-5.6 / 6.6-7.5, float64
# 11.2-11.4 / 12.7-13.0; (8, 512, 1024, 4, causal) 0.60-0.64 / 0.85-1.01;
# (8, 512, 4096, 4, causal) 5.0-5.2 / 5.7; (8, 512, 4096, 4, same) 3.6-3.7 /
# 3.8-5.1; (8, 128, 2048, 4, causal) 0.31-0.38 / 0.42-0.61. Three taps were
# mixed ((8, 512, 1024, 3, causal) 0.71-0.77 / 0.89-0.96, (8, 512, 4096, 3,
# causal) 6.4-6.8 / 5.5-7.1, (8, 64, 4096, 3, same) 0.35 / 0.27), five and
# more taps stay tiled ((8, 512, 4096, 7, causal) 8.1-8.2 / 6.3-6.5,
# (8, 1536, 2048, 15, causal) 10.1 / 8.6-9.1, conformer_dw 3.5 / 2.7).
DW_MIN_ROWS = 4
DW_MIN_K = 5
DW_WEIGHT_MIN_K = 15

# A stride the polyphase rewrite cannot take (K not a multiple of it, or a
# dilation) leaves the direct family its strided loops over phase copies.
# Forward and input gradient there sum whole windows into a row and hold
# their own against the other families, but the weight gradient is a dot
# product per tap and weight, which loads two values per multiply-add; the
# BLAS families beat it by far once a call has some work (float32, through
# the public functions, interleaved, medians of 9, ms; direct / gemm / im2col;
# (N, C_in, C_out, L, K, stride, padding, groups, dilation)):
#
#   (16, 3, 64, 4096, 7, 2, 3, 1, 1)         14.5 / 2.17 / 0.93
#   (8, 16, 16, 2048, 3, 2, 1, 1, 1)         2.48 / 0.23 / 0.24
#   (8, 1, 4, 4096, 5, 2, 2, 1, 1)           0.125 / 0.099 / 0.065
#   (8, 128, 128, 2048, 3, 2, 1, 8, 1)       19.3 / 2.11 / 2.00
#   (8, 64, 64, 2048, 3, 2, 1, 32, 1)        1.28 / 1.00 / 0.83
#   (8, 32, 32, 4096, 3, 2, 2, 1, 2)         18.8 / 1.19 / 1.11
#
# Calls of a few thousand multiply-adds stay direct ((1, 4, 8, 64, 3, 2, 1,
# 1, 1): 0.014 / 0.018 / 0.018), and so do depthwise layers ((8, 256, 256,
# 2048, 5, 2, 2, 256, 1): 5.52 / 11.0 / 7.28). Forward, for comparison, where
# the rule above already picks tiled or direct: (8, 64, 64, 2048, 3, 2, 1, 32,
# 1) direct 0.53 / gemm 0.62 / tiled 0.60; input gradient (16, 3, 64, 4096,
# 7, 2, 3, 1, 1) direct 1.08 / gemm 3.25.
STRIDED_MIN_WORK = 1 << 16


def _tiled_or_direct(spec, rows, depth, inner, thin=False):
    """Family for a product of ``rows`` output rows and ``depth`` steps;
    ``thin`` for a forward pass of one input channel per group."""
    if rows < TILED_MIN_ROWS:
        return "direct"
    if depth < TILED_MIN_DEPTH:
        shallow = ((spec.dtype == np.float32 or thin)
                   and spec.N * rows * spec.L_out >= TILED_SHALLOW_MIN_OUTPUT)
        return "tiled" if shallow else "direct"
    if min(rows, inner) >= BLAS_WIDE:
        return "gemm"
    return "tiled"


def choose(spec, op):
    """Name of the family that runs ``op`` ("forward", "grad_input", "grad_weight")."""
    forced = _forced.name
    if forced is not None:
        if not FAMILIES[forced].supports(spec, op):
            raise NotImplementedError(
                f"algorithm {forced!r} cannot run {op} for {spec}"
            )
        return forced
    # The rule is a function of the spec alone, and specs are remembered
    # across calls (``numconv._spec.build_spec``): small calls then skip it.
    name = spec.choices.get(op)
    if name is None:
        name = spec.choices[op] = _rule(spec, op)
    return name


def _rule(spec, op):
    c_in, c_out, K = spec.C_in_per_group, spec.C_out_per_group, spec.K
    if spec.stride == 1 and c_in == 1 and c_out == 1:
        name = _depthwise_family(spec, op)
    elif op == "forward":
        name = _tiled_or_direct(spec, c_out, c_in * K, c_in, thin=c_in == 1)
    elif op == "grad_input" and spec.stride == 1:
        name = _tiled_or_direct(spec, c_in, c_out * K, c_out)
    elif op == "grad_input":
        name = _strided_grad_input_family(spec, c_in, c_out)
    else:
        name = _grad_weight_family(spec)
    return name if FAMILIES[name].supports(spec, op) else "direct"


def _strided_products(spec):
    """True for a strided weight gradient without a polyphase form whose
    groups have more than one channel on a side and whose work passes
    STRIDED_MIN_WORK multiply-adds: the BLAS families beat the direct
    family's strided dot products there."""
    if spec.stride == 1 or _polyphase.rewrites(spec):
        return False
    if spec.C_in_per_group == 1 and spec.C_out_per_group == 1:
        return False
    work = spec.N * spec.C_out * spec.C_in_per_group * spec.K * spec.L_out
    return work >= STRIDED_MIN_WORK


def _joins_batch(spec, family):
    """True when the tiled family should run the forward pass of ``spec`` on
    the joined batch (``numconv._polyphase``)."""
    if family is not tiled or spec.stride != 1 or spec.N < 2:
        return False
    row_bytes = spec.L_out * spec.dtype.itemsize
    if not JOIN_ROW_BYTES[0] <= row_bytes <= JOIN_ROW_BYTES[1]:
        return False
    c_in, c_out = spec.C_in_per_group, spec.C_out_per_group
    return c_in * spec.K >= JOIN_MIN_DEPTH and min(c_in, c_out) > 1


def _strided_grad_input_family(spec, c_in, c_out):
    if _polyphase.runs_phasewise(spec, tiled, "grad_input"):
        depth = c_out * _polyphase.phase_taps(spec)
        work = spec.N * spec.C_in * c_out * spec.K * spec.L_out
        if (c_in >= PHASEWISE_MIN_ROWS and depth >= TILED_MIN_DEPTH
                and work >= PHASEWISE_MIN_WORK):
            return "gemm" if min(c_in, c_out) >= BLAS_WIDE else "tiled"
    if min(c_in, c_out) >= BLAS_MIN_CHANNELS:
        return "gemm"
    if _phase_product(spec, c_in, c_out):
        return "tiled"
    return "direct"


def _phase_product(spec, c_in, c_out):
    """True for a strided input gradient whose polyphase form is a product of
    PHASE_MIN_ROWS rows or more (C_in/g * stride) and TILED_MIN_DEPTH steps."""
    if not _polyphase.rewrites(spec):
        return False
    return (c_in * spec.stride >= PHASE_MIN_ROWS
            and c_out * (spec.K // spec.stride) >= TILED_MIN_DEPTH)


def _depthwise_family(spec, op):
    if op == "grad_weight":
        wide = spec.C_in >= DW_MIN_ROWS and spec.K >= DW_WEIGHT_MIN_K
    else:
        wide = spec.N * spec.C_in >= DW_MIN_ROWS and spec.K >= DW_MIN_K
    return "tiled" if wide else "direct"


def _grad_weight_family(spec):
    c_in, c_out = spec.C_in_per_group, spec.C_out_per_group
    phase_k = _polyphase.phase_taps(spec)
    padded = phase_k * spec.stride - spec.K
    phases = (_polyphase.applies(spec, tiled, "grad_weight")
              and phase_k >= PHASE_DOTS_MIN_K
              and padded * PHASE_PADDED_SHARE <= phase_k * spec.stride)
    long_enough = (spec.L_out >= DOTS_MIN_LENGTH
                   or spec.N * spec.L_out >= DOTS_MIN_POSITIONS)
    dots = c_out >= DOTS_MIN_ROWS and long_enough
    if dots and (spec.stride == 1 or phases):
        return "tiled"
    depth = c_in * spec.K
    if c_out < BLAS_MIN_CHANNELS or depth < IM2COL_MIN_DEPTH:
        if not _strided_products(spec):
            return "direct"
        return "im2col" if im2col.scratch_fits(spec) else "gemm"
    if (c_in < BLAS_MIN_CHANNELS or depth <= IM2COL_MAX_DEPTH) and im2col.scratch_fits(
        spec
    ):
        return "im2col"
    return "gemm"


def forward(xp, weight, bias, spec):
    """Forward pass on the padded input xp (N, C_in, L_padded) -> (N, C_out, L_out)."""
    out = _memory.empty((spec.N, spec.C_out, spec.L_out), dtype=spec.dtype)
    family = FAMILIES[choose(spec, "forward")]
    with kernel_guard():
        if _joins_batch(spec, family):
            _polyphase.run_forward_joined(family, xp, weight, bias, spec, out)
        else:
            _polyphase.run_forward(family, xp, weight, bias, spec, out)
    return out


def grad_padded_input(grad_output, weight, spec):
    """Gradient w.r.t. the padded input: (N, C_out, L_out) -> (N, C_in, L_padded)."""
    out = _memory.empty(
        (grad_output.shape[0], spec.C_in, spec.L_padded), dtype=spec.dtype
    )
    family = FAMILIES[choose(spec, "grad_input")]
    with kernel_guard():
        _polyphase.run_grad_input(family, grad_output, weight, spec, out)
    return out


def grad_input(grad_output, weight, spec):
    """Gradient w.r.t. the input: (N, C_out, L_out) -> (N, C_in, L), padding folded.

    Same result as ``fold_padding(grad_padded_input(...))``, without the padded
    intermediate when the family can write the cropped gradient itself.
    """
    family = FAMILIES[choose(spec, "grad_input")]
    if not _polyphase.crops_directly(family, spec):
        return fold_padding(grad_padded_input(grad_output, weight, spec), spec)
    out = _memory.empty((grad_output.shape[0], spec.C_in, spec.L), dtype=spec.dtype)
    with kernel_guard():
        _polyphase.run_grad_input_cropped(family, grad_output, weight, spec, out)
    return out


def grad_weight(xp, grad_output, spec):
    """Weight gradient (C_out, C_in/groups, K) from xp and grad_output."""
    out = _memory.empty((spec.C_out, spec.C_in_per_group, spec.K), dtype=spec.dtype)
    family = FAMILIES[choose(spec, "grad_weight")]
    with kernel_guard():
        _polyphase.run_grad_weight(family, xp, grad_output, spec, out)
    return out


def grad_weight_and_bias(xp, grad_output, spec):
    """``grad_weight`` and ``grad_bias`` together, from one pass over
    grad_output where the family's kernel allows it."""
    gw = _memory.empty((spec.C_out, spec.C_in_per_group, spec.K), dtype=spec.dtype)
    gb = _memory.empty(spec.C_out, dtype=spec.dtype)
    family = FAMILIES[choose(spec, "grad_weight")]
    with kernel_guard():
        if not _polyphase.run_grad_weight(family, xp, grad_output, spec, gw, gb):
            common.grad_bias(grad_output, gb)
    return gw, gb


def backward(xp, grad_output, weight, spec, bias):
    """(input gradient with the padding folded, weight gradient, bias gradient
    or None without ``bias``) from one pass over grad_output, or None when the
    families chosen for the two gradients do not compute them together."""
    name = choose(spec, "grad_input")
    family = FAMILIES[name]
    if name != choose(spec, "grad_weight") or not _polyphase.fuses_backward(
        family, spec
    ):
        return None
    gx = _memory.empty((spec.N, spec.C_in, spec.L_padded), dtype=spec.dtype)
    gw = _memory.empty((spec.C_out, spec.C_in_per_group, spec.K), dtype=spec.dtype)
    gb = _memory.empty(spec.C_out, dtype=spec.dtype) if bias else None
    with kernel_guard():
        _polyphase.run_backward(family, xp, grad_output, weight, spec, gx, gw, gb)
    return fold_padding(gx, spec), gw, gb


def grad_bias(grad_output, dtype):
    """Bias gradient (C_out,) from grad_output (N, C_out, L_out)."""
    out = _memory.empty(grad_output.shape[1], dtype=dtype)
    with kernel_guard():
        common.grad_bias(grad_output, out)
    return out

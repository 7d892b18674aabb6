"""Direct loop kernels: forward, input gradient and weight gradient.

The family for shapes where a matrix product has little to work with:
depthwise and grouped layers, few channels, long signals. Index arithmetic
shared by all three kernels: output position t of channel co reads padded
position ``t * stride + k * dilation`` of every input channel in co's group,
for k < K. Channel c of the input belongs to group ``c // C_in_per_group``;
output channel co to group ``co // C_out_per_group``.

How the stride-1 kernels run
----------------------------
Work is cut into items (sample n, group, block of at most ``MAX_TILE`` output
positions, chunk of output channels), so a single long signal (N = 1, C = 1)
still gives every thread work. Each item first copies the input rows of its
group that the block reads into a small scratch buffer, writing zeros where
the rows end; that copy is how the kernels treat zero padding themselves, so
callers need not materialise a padded input (see the ``*_shifted`` kernels).

The arithmetic then runs over the taps m = (ci, k) of a row in blocks of
four: ``out[t] += w0 * x0[t] + w1 * x1[t] + w2 * x2[t] + w3 * x3[t]`` with the
four shifted windows x0..x3 of the scratch, t running over the whole block.
The innermost loop is contiguous, LLVM vectorises it (AVX-512 here), the
output block stays in L1 between tap blocks, and each vector of outputs costs
five loads and one store per four fused multiply-adds. Measured against the
alternatives on conformer_dw-like rows (256 rows of 1024, K = 32): blocks of
four and of eight taps ran alike (about 17-19 GFLOP/s on two loaded cores),
eight-tap blocks were only partly vectorised, and 32 accumulators held as
scalars (hoping for SLP vectorisation) ran at 2 GFLOP/s.

Weight gradient determinism: for each group, the (sample, block) units are
split into a number of chunks that depends on the shape only. Each chunk is
summed by one thread, in order, into its own partial buffer, and the buffers
are added in chunk order, so the result is bitwise the same for any number of
threads.

A stride above 1 is rewritten by ``numconv._polyphase`` into a stride-1
convolution when K is a multiple of it and there is no dilation. Other
strides run the strided loops below. Forward and input gradient work on the
phases of a row (positions r, r + s, r + 2s, ...), so that every tap again
reads or writes a contiguous window; the weight gradient keeps strided dot
products, and ``numconv._dispatch`` sends it here only for depthwise or
small layers.
"""

import numpy as np
from numba import njit, prange

from numconv._config import JIT_OPTIONS, SERIAL_JIT_OPTIONS
from numconv._kernels.common import (
    blocked_sum,
    grad_bias,
    phase_rows,
    strided_dot,
    tap_phases,
)

# The polyphase rewrite pays off here: strided reads defeat vectorisation.
POLYPHASE = ("forward", "grad_input", "grad_weight")

# Output positions per work item. Long enough to amortise the per-item copy
# and loop set-up, short enough that the output block and the scratch rows of
# a depthwise layer stay in L1/L2 and long signals split across threads.
MAX_TILE = 4096

# Input elements one work item reads (its group's rows over one tile): the
# tile shrinks when a group has many input channels, so they stay in the 1 MiB
# L2 cache while every output channel of the item re-reads them.
SCRATCH_ELEMENTS = 128 * 1024

# Output channels handled by one work item (each re-uses the item's scratch).
CO_CHUNK = 64

# Output positions (input-gradient phase positions) per item of the strided
# loops: their scratch phases, P * (STRIDED_TILE + lag) elements for the P <=
# min(K, s) phases the taps read, stay in L1/L2.
STRIDED_TILE = 2048

# An item with 2 to FEW_ROWS output channels takes its taps outermost:
# each block of input rows is read once for all its channels, whose output
# segments (FEW_ROWS_BYTES in all) stay in L1/L2, and the rows are read from
# memory in runs long enough for the prefetcher. With more channels the
# segments would not fit, and the channel-outer order re-reads the rows from
# L2 instead. The input gradient of wav2vec's first layer (5 phase rows over
# 512 channels and 2 taps; float32, kernel only, medians of 9, ms):
# channel-outer 5.3-5.7, taps-outer 3.9-4.4 (float64 11.0-11.1 and 8.2-8.7).
FEW_ROWS = 8
FEW_ROWS_BYTES = 32 * 1024

# An item whose block reads padding is split into its border parts, copied
# with zeros, and its interior, read in place; each part's loops cost a fixed
# 1 to 2 us to start (``_accumulate_rows`` over 8 channels and 12 taps: 1.0 us
# for one position, 1.3 for 62), which small calls do not amortise. A short
# item whose rows take at most WHOLE_COPY elements in all is therefore copied
# whole and run as one part. Forward kernel, float64, one sample, padding
# (K-1)/2, (C_in, C_out, L, K), us, three parts / one: (4, 8, 64, 3) (the
# benchmarks' tiny layer) 3.51 / 1.80, (4, 16, 64, 3) 4.08 / 2.33,
# (16, 16, 120, 5) 26.2 / 18.0, (16, 16, 200, 5) 32.5 / 24.8; with 16 times
# this budget, rows of 1000 to 4000 positions were mixed. Blocks longer than
# WHOLE_POSITIONS keep the split even when their rows are few: the
# Mamba layer (8 x 1536 channels of 2048 positions, K = 4, depthwise, float32,
# through the public functions, ms) took 15.9 / 9.8 for the forward pass,
# 15.5 / 9.4 for the input gradient and 16.3 / 9.5 for the weight gradient
# with one copied part / three.
WHOLE_COPY = 4096
WHOLE_POSITIONS = 256

# Below this many multiply-adds a call runs on the calling thread only:
# starting the thread pool costs more than such a call.
SERIAL_WORK = 1 << 16

# Weight gradient: at most this many work items per call, and at most this
# many elements in all partial buffers together (both fixed, so the split of
# the sum never depends on the thread count).
WG_ITEMS = 64
WG_PARTIAL_ELEMENTS = 1 << 21


def supports(spec, op):
    """The direct kernels handle every valid ConvSpec and every operation."""
    return True


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def _tile_length(L_out, C_in_g, span):
    """Output positions per item for rows of L_out and C_in_g scratch rows."""
    room = SCRATCH_ELEMENTS // max(C_in_g, 1) - span
    tile = min(MAX_TILE, max(room, 64))
    if tile >= L_out:
        return max(L_out, 1)
    # A multiple of 64 leaves the vectorised loops no scalar remainder.
    return max(64, tile - tile % 64)


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def _gather(x, n, c0, rows, start, length, scratch):
    """scratch[r * length + j] = x[n, c0 + r, start + j], or 0 outside [0, L).

    x : (N, C, L); scratch : 1D with at least rows * length elements.
    """
    L = x.shape[2]
    lo = min(max(-start, 0), length)
    hi = max(min(L - start, length), lo)
    for r in range(rows):
        xrow = x[n, c0 + r]
        dst = scratch[r * length : (r + 1) * length]
        for j in range(lo):
            dst[j] = 0
        src = xrow[start + lo : start + hi]
        for j in range(hi - lo):
            dst[lo + j] = src[j]
        for j in range(hi, length):
            dst[j] = 0


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def _tap_offset(m, K, width, dilation):
    """Scratch offset of tap m = ci * K + k: row ci of the given width, shift k*d."""
    ci = m // K
    return ci * width + (m - ci * K) * dilation


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def _accumulate(seg, bv, wrow, src, K, width, dilation):
    """seg[t] = bv + sum_m wrow[m] * src[offset(m) + t] for t < len(seg).

    seg : (T,) output block; bv : bias value; wrow : (C_in_g * K,) taps of one
    output channel; src : rows of the group, ``width`` elements apart. The
    first pass writes the bias with the first taps, so seg is stored once less.
    """
    T = seg.shape[0]
    M = wrow.shape[0]
    if M >= 4:
        w0, w1, w2, w3 = wrow[0], wrow[1], wrow[2], wrow[3]
        x0 = src[_tap_offset(0, K, width, dilation) :]
        x1 = src[_tap_offset(1, K, width, dilation) :]
        x2 = src[_tap_offset(2, K, width, dilation) :]
        x3 = src[_tap_offset(3, K, width, dilation) :]
        for t in range(T):
            seg[t] = bv + (w0 * x0[t] + w1 * x1[t] + w2 * x2[t] + w3 * x3[t])
        _accumulate_from(seg, wrow, src, K, width, dilation, 4)
    elif M >= 2:
        w0, w1 = wrow[0], wrow[1]
        x0 = src[_tap_offset(0, K, width, dilation) :]
        x1 = src[_tap_offset(1, K, width, dilation) :]
        for t in range(T):
            seg[t] = bv + (w0 * x0[t] + w1 * x1[t])
        _accumulate_from(seg, wrow, src, K, width, dilation, 2)
    else:
        w0 = wrow[0]
        x0 = src[_tap_offset(0, K, width, dilation) :]
        for t in range(T):
            seg[t] = bv + w0 * x0[t]


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def _accumulate_from(seg, wrow, src, K, width, dilation, first):
    """seg[t] += sum over taps m >= first, in blocks of four (see ``_accumulate``)."""
    T = seg.shape[0]
    M = wrow.shape[0]
    m = first
    while m + 4 <= M:
        w0, w1, w2, w3 = wrow[m], wrow[m + 1], wrow[m + 2], wrow[m + 3]
        x0 = src[_tap_offset(m, K, width, dilation) :]
        x1 = src[_tap_offset(m + 1, K, width, dilation) :]
        x2 = src[_tap_offset(m + 2, K, width, dilation) :]
        x3 = src[_tap_offset(m + 3, K, width, dilation) :]
        for t in range(T):
            seg[t] += w0 * x0[t] + w1 * x1[t] + w2 * x2[t] + w3 * x3[t]
        m += 4
    if m + 2 <= M:
        w0, w1 = wrow[m], wrow[m + 1]
        x0 = src[_tap_offset(m, K, width, dilation) :]
        x1 = src[_tap_offset(m + 1, K, width, dilation) :]
        for t in range(T):
            seg[t] += w0 * x0[t] + w1 * x1[t]
        m += 2
    if m < M:
        w0 = wrow[m]
        x0 = src[_tap_offset(m, K, width, dilation) :]
        for t in range(T):
            seg[t] += w0 * x0[t]


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def _few_rows_tile(L_out, rows, itemsize):
    """Output positions per item when ``rows`` output segments share
    FEW_ROWS_BYTES."""
    tile = min(MAX_TILE, FEW_ROWS_BYTES // (rows * itemsize))
    if tile >= L_out:
        return max(L_out, 1)
    return max(64, tile - tile % 64)


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def _accumulate_rows(outf, sample_base, L_out, lo, hi, bias, wflat, co_start,
                     co_stop, src, K, width, dilation):
    """``_accumulate`` for the channels [co_start, co_stop), taps outermost.

    Each channel's segment outf[sample_base + co * L_out + lo : ... + hi] gets
    the same sums, in the same order, as ``_accumulate`` gives it: blocks of
    four taps, then two, then one, the first block adding the bias.
    """
    M = wflat.shape[1]
    m = 0
    while m < M:
        step = 4 if m + 4 <= M else (2 if m + 2 <= M else 1)
        first = m == 0
        x0 = src[_tap_offset(m, K, width, dilation) :]
        x1 = src[_tap_offset(min(m + 1, M - 1), K, width, dilation) :]
        x2 = src[_tap_offset(min(m + 2, M - 1), K, width, dilation) :]
        x3 = src[_tap_offset(min(m + 3, M - 1), K, width, dilation) :]
        for co in range(co_start, co_stop):
            base = sample_base + co * L_out
            seg = outf[base + lo : base + hi]
            T = seg.shape[0]
            wrow = wflat[co]
            bv = bias[co] if first else seg.dtype.type(0)
            if step == 4:
                w0, w1, w2, w3 = wrow[m], wrow[m + 1], wrow[m + 2], wrow[m + 3]
                if first:
                    for t in range(T):
                        seg[t] = bv + (w0 * x0[t] + w1 * x1[t]
                                       + w2 * x2[t] + w3 * x3[t])
                else:
                    for t in range(T):
                        seg[t] += w0 * x0[t] + w1 * x1[t] + w2 * x2[t] + w3 * x3[t]
            elif step == 2:
                w0, w1 = wrow[m], wrow[m + 1]
                if first:
                    for t in range(T):
                        seg[t] = bv + (w0 * x0[t] + w1 * x1[t])
                else:
                    for t in range(T):
                        seg[t] += w0 * x0[t] + w1 * x1[t]
            else:
                w0 = wrow[m]
                if first:
                    for t in range(T):
                        seg[t] = bv + w0 * x0[t]
                else:
                    for t in range(T):
                        seg[t] += w0 * x0[t]
        m += step


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def _interior(t0, t1, shift, span, L):
    """Split [t0, t1) at tl <= tr: outputs in [tl, tr) read only inside x.

    Output t reads x positions t - shift .. t - shift + span of each row.
    """
    tl = min(max(shift, t0), t1)
    tr = min(max(L - span + shift, tl), t1)
    return tl, tr


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def _parts(t0, t1, shift, span, L, rows):
    """``_interior``'s split of [t0, t1), or (t1, t1), the whole block one
    copied border part, when it has a border, at most WHOLE_POSITIONS
    positions and ``rows`` input rows of at most WHOLE_COPY elements in all
    (see there)."""
    tl, tr = _interior(t0, t1, shift, span, L)
    small = t1 - t0 <= WHOLE_POSITIONS and rows * (t1 - t0 + span) <= WHOLE_COPY
    if small and (tl > t0 or tr < t1):
        return t1, t1
    return tl, tr


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def _source(x, xflat, n, g, C_in_g, lo, hi, shift, span, interior, scratch):
    """Rows of group g read by outputs [lo, hi), and the distance between rows.

    Interior ranges are read in place; border ranges are copied into scratch
    with zeros where the rows end.
    """
    C_in, L = x.shape[1], x.shape[2]
    if interior:
        start = (n * C_in + g * C_in_g) * L + lo - shift
        return xflat[start:], L
    width = hi - lo + span
    _gather(x, n, g * C_in_g, C_in_g, lo - shift, width, scratch)
    return scratch, width


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def _forward_item(item, x, shift, wflat, bias, groups, dilation, outf,
                  L_out, C_in_g, K, C_out_g, T, nblocks, nco, chunk):
    """One work item of ``forward_shifted``: sample, group, block, channel chunk."""
    C_out = C_out_g * groups
    L = x.shape[2]
    span = (K - 1) * dilation
    ic = item % nco
    rest = item // nco
    b = rest % nblocks
    rest = rest // nblocks
    g = rest % groups
    n = rest // groups
    t0 = b * T
    t1 = min(t0 + T, L_out)
    tl, tr = _parts(t0, t1, shift, span, L, C_in_g)
    xflat = x.reshape(x.size)
    # Only the border parts [t0, tl) and [tr, t1) are copied.
    border = max(tl - t0, t1 - tr)
    scratch = np.empty(C_in_g * (border + span) if border > 0 else 0, dtype=outf.dtype)

    co_start = g * C_out_g + ic * chunk
    co_stop = min(co_start + chunk, (g + 1) * C_out_g)
    for part in range(3):
        lo = t0 if part == 0 else (tl if part == 1 else tr)
        hi = tl if part == 0 else (tr if part == 1 else t1)
        if hi <= lo:
            continue
        src, width = _source(x, xflat, n, g, C_in_g, lo, hi, shift, span, part == 1,
                             scratch)
        if 2 <= co_stop - co_start <= FEW_ROWS:
            _accumulate_rows(outf, n * C_out * L_out, L_out, lo, hi, bias, wflat,
                             co_start, co_stop, src, K, width, dilation)
            continue
        for co in range(co_start, co_stop):
            base = (n * C_out + co) * L_out
            seg = outf[base + lo : base + hi]
            _accumulate(seg, bias[co], wflat[co], src, K, width, dilation)


@njit(**JIT_OPTIONS)
def forward_shifted(x, shift, weight, bias, groups, dilation, out):
    """Stride-1 convolution of x zero-padded by ``shift`` on the left.

    out[n, co, t] = bias[co] + sum_{ci, k} weight[co, ci, k] * xz[n, c(ci), t + k*d - shift]

    where xz is x extended by zeros on both sides (so ``shift`` may exceed L or
    be negative, and positions past the end of x read 0).

    x : (N, C_in, L); weight : (C_out, C_in/groups, K); bias : (C_out,) (zeros
    for no bias); out : (N, C_out, L_out), fully overwritten; shift, groups,
    dilation : int, groups >= 1, dilation >= 1.
    """
    N, C_out, L_out = out.shape
    C_in_g = weight.shape[1]
    K = weight.shape[2]
    C_out_g = C_out // groups
    span = (K - 1) * dilation
    M = C_in_g * K
    wflat = weight.reshape(C_out, M)
    outf = out.reshape(N * C_out * L_out)
    if 2 <= C_out_g <= FEW_ROWS:
        T = _few_rows_tile(L_out, C_out_g, out.itemsize)
    else:
        T = _tile_length(L_out, C_in_g, span)
    nblocks = (L_out + T - 1) // T
    chunk = min(max(C_out_g, 1), CO_CHUNK)
    nco = (C_out_g + chunk - 1) // chunk
    items = N * groups * nblocks * nco
    if N * C_out * L_out * max(M, 1) < SERIAL_WORK:
        for item in range(items):
            _forward_item(item, x, shift, wflat, bias, groups, dilation, outf,
                          L_out, C_in_g, K, C_out_g, T, nblocks, nco, chunk)
    else:
        for item in prange(items):
            _forward_item(item, x, shift, wflat, bias, groups, dilation, outf,
                          L_out, C_in_g, K, C_out_g, T, nblocks, nco, chunk)


@njit(**JIT_OPTIONS)
def _forward_strided(xp, weight, bias, groups, stride, dilation, out):
    """Loops for stride > 1 (see ``forward``) over the phases of each input row.

    Items are (sample, output channel, block of STRIDED_TILE positions). For
    each input channel the item copies the phases its taps read of the
    positions its block reads (``common.phase_rows``); tap k then reads phase
    (k*d) % s from position (k*d) // s on, contiguously, so the loop over
    positions vectorises. The taps of each output are summed in the order ci,
    k.
    """
    N, C_out, L_out = out.shape
    C_in_g = weight.shape[1]
    K = weight.shape[2]
    C_out_g = C_out // groups
    lag = ((K - 1) * dilation) // stride
    blocks = (L_out + STRIDED_TILE - 1) // STRIDED_TILE
    phases, slot = tap_phases(K, stride, dilation)
    for item in prange(N * C_out * blocks):
        r = item // blocks
        t0 = (item - r * blocks) * STRIDED_TILE
        m = min(STRIDED_TILE, L_out - t0)
        n = r // C_out
        co = r - n * C_out
        c0 = (co // C_out_g) * C_in_g
        length = m + lag
        ph = np.empty(phases.shape[0] * length, dtype=out.dtype)
        row = out[n, co, t0 : t0 + m]
        b = bias[co]
        for t in range(m):
            row[t] = b
        for ci in range(C_in_g):
            phase_rows(xp[n, c0 + ci], t0 * stride, stride, length, phases, ph, length)
            for k in range(K):
                wv = weight[co, ci, k]
                src = ph[slot[k] * length + (k * dilation) // stride :]
                for t in range(m):
                    row[t] += wv * src[t]


@njit(**SERIAL_JIT_OPTIONS)
def forward(xp, weight, bias, groups, stride, dilation, out):
    """out[n, co, t] = bias[co] + sum_{ci, k} weight[co, ci, k] * xp[n, c(ci), t*s + k*d].

    xp : (N, C_in, L_padded); weight : (C_out, C_in/groups, K); bias : (C_out,)
    (zeros for no bias); out : (N, C_out, L_out), fully overwritten.
    Requires (L_out - 1) * stride + (K - 1) * dilation < L_padded.
    """
    if stride == 1:
        forward_shifted(xp, 0, weight, bias, groups, dilation, out)
    else:
        _forward_strided(xp, weight, bias, groups, stride, dilation, out)


@njit(**SERIAL_JIT_OPTIONS)
def _flipped_transpose(weight, groups):
    """The weight of the input gradient as a forward correlation.

    weight : (C_out, C_in/groups, K) -> (C_in, C_out/groups, K) with
    result[g*C_in_g + ci, j, K-1-k] = weight[g*C_out_g + j, ci, k].
    """
    C_out, C_in_g, K = weight.shape
    C_out_g = C_out // groups
    result = np.empty((C_in_g * groups, C_out_g, K), dtype=weight.dtype)
    for g in range(groups):
        for j in range(C_out_g):
            for ci in range(C_in_g):
                for k in range(K):
                    result[g * C_in_g + ci, j, K - 1 - k] = weight[g * C_out_g + j, ci, k]
    return result


@njit(**SERIAL_JIT_OPTIONS)
def grad_input_shifted(grad_output, weight, groups, dilation, crop_left, out):
    """Stride-1 input gradient, written for padded positions crop_left onwards.

    out[n, c, i] = gradient w.r.t. padded position p = i + crop_left
                 = sum_{co in c's group, k} weight[co, ci, k] * g[n, co, p - k*d],

    with g read as zero outside [0, L_out). It is a forward correlation of the
    output gradient, shifted by (K-1)*d - crop_left, with the flipped,
    transposed weight, so it runs on ``forward_shifted``.

    grad_output : (N, C_out, L_out); weight : (C_out, C_in/groups, K);
    out : (N, C_in, length), fully overwritten (any length >= 0).
    """
    C_out, C_in_g, K = weight.shape
    wf = _flipped_transpose(weight, groups)
    zero = np.zeros(C_in_g * groups, dtype=out.dtype)
    forward_shifted(grad_output, (K - 1) * dilation - crop_left, wf, zero, groups,
                    dilation, out)


@njit(**JIT_OPTIONS)
def _grad_input_strided(grad_output, weight, groups, stride, dilation, out):
    """Loops for stride > 1 (see ``grad_input``), one phase of a row at a time.

    Items are (sample, input channel, block of STRIDED_TILE phase positions).
    Padded position j*s + r gets the taps k with (k*d) % s == r, from output
    position j - (k*d) // s: for each phase r that taps reach the item sums
    those windows of the output-gradient rows, contiguously, into a scratch
    row, then writes it out with stride s; the other positions of its block
    get 0. Each position sums its terms in the order co, k.
    """
    N, C_in, L_padded = out.shape
    C_out = grad_output.shape[1]
    L_out = grad_output.shape[2]
    C_in_g = weight.shape[1]
    K = weight.shape[2]
    C_out_g = C_out // groups
    L_phase = (L_padded + stride - 1) // stride
    blocks = (L_phase + STRIDED_TILE - 1) // STRIDED_TILE
    phases, slot = tap_phases(K, stride, dilation)
    for item in prange(N * C_in * blocks):
        row_index = item // blocks
        j0 = (item - row_index * blocks) * STRIDED_TILE
        m = min(STRIDED_TILE, L_phase - j0)
        n = row_index // C_in
        c = row_index - n * C_in
        group = c // C_in_g
        ci = c - group * C_in_g
        row = out[n, c]
        if phases.shape[0] < stride:
            for p in range(j0 * stride, min((j0 + m) * stride, L_padded)):
                row[p] = 0
        acc = np.empty(m, dtype=out.dtype)
        for i in range(phases.shape[0]):
            r = phases[i]
            for j in range(m):
                acc[j] = 0
            for jj in range(C_out_g):
                co = group * C_out_g + jj
                grow = grad_output[n, co]
                for k in range(K):
                    if slot[k] != i:
                        continue
                    q = (k * dilation) // stride
                    # Output positions t = j - q within [0, L_out).
                    lo = min(max(q - j0, 0), m)
                    hi = max(min(L_out + q - j0, m), lo)
                    wv = weight[co, ci, k]
                    src = grow[j0 + lo - q : j0 + hi - q]
                    dst = acc[lo:hi]
                    for t in range(hi - lo):
                        dst[t] += wv * src[t]
            for j in range(min(m, (L_padded - r - j0 * stride + stride - 1) // stride)):
                row[(j0 + j) * stride + r] = acc[j]


@njit(**SERIAL_JIT_OPTIONS)
def grad_input(grad_output, weight, groups, stride, dilation, out):
    """Transposed convolution: the adjoint of ``forward`` with respect to xp.

    out[n, c, t*s + k*d] += weight[co, ci, k] * grad_output[n, co, t], summed over
    the output channels co of c's group.

    grad_output : (N, C_out, L_out); weight : (C_out, C_in/groups, K);
    out : (N, C_in, L_padded), fully overwritten; positions no output reads get 0.
    Requires (L_out - 1) * stride + (K - 1) * dilation < L_padded.
    """
    if stride == 1:
        grad_input_shifted(grad_output, weight, groups, dilation, 0, out)
    else:
        _grad_input_strided(grad_output, weight, groups, stride, dilation, out)


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def _dot_taps(grow, src, K, width, dilation, part):
    """part[m] += sum_t grow[t] * src[offset(m) + t] for every tap m.

    grow : (T,) output-gradient block; src : scratch rows, ``width`` each;
    part : (C_in_g * K,) running sums of one output channel.
    """
    T = grow.shape[0]
    M = part.shape[0]
    zero = part.dtype.type(0)
    m = 0
    while m + 4 <= M:
        x0 = src[_tap_offset(m, K, width, dilation) :]
        x1 = src[_tap_offset(m + 1, K, width, dilation) :]
        x2 = src[_tap_offset(m + 2, K, width, dilation) :]
        x3 = src[_tap_offset(m + 3, K, width, dilation) :]
        a0 = zero
        a1 = zero
        a2 = zero
        a3 = zero
        for t in range(T):
            gv = grow[t]
            a0 += gv * x0[t]
            a1 += gv * x1[t]
            a2 += gv * x2[t]
            a3 += gv * x3[t]
        part[m] += a0
        part[m + 1] += a1
        part[m + 2] += a2
        part[m + 3] += a3
        m += 4
    while m < M:
        x0 = src[_tap_offset(m, K, width, dilation) :]
        a0 = zero
        for t in range(T):
            a0 += grow[t] * x0[t]
        part[m] += a0
        m += 1


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def _weight_item(item, x, xflat, shift, gflat, dilation, partials, bias_parts, C_out,
                 C_in_g, K, C_out_g, L_out, T, nblocks, units, chunks):
    """One chunk of ``_weight_and_bias``: its (sample, block) units, in order.
    Sums each unit's output-gradient rows into bias_parts[item] too, unless
    bias_parts has no rows."""
    M = C_in_g * K
    span = (K - 1) * dilation
    L = x.shape[2]
    g = item // chunks
    ch = item - g * chunks
    part = partials[item]
    scratch = np.empty(C_in_g * (T + span), dtype=partials.dtype)
    for u in range(ch * units // chunks, (ch + 1) * units // chunks):
        n = u // nblocks
        t0 = (u - n * nblocks) * T
        t1 = min(t0 + T, L_out)
        tl, tr = _parts(t0, t1, shift, span, L, C_in_g)
        for piece in range(3):
            lo = t0 if piece == 0 else (tl if piece == 1 else tr)
            hi = tl if piece == 0 else (tr if piece == 1 else t1)
            if hi <= lo:
                continue
            src, width = _source(x, xflat, n, g, C_in_g, lo, hi, shift, span,
                                 piece == 1, scratch)
            for j in range(C_out_g):
                base = (n * C_out + g * C_out_g + j) * L_out
                _dot_taps(gflat[base + lo : base + hi], src, K, width, dilation,
                          part[j * M : (j + 1) * M])
        if bias_parts.shape[0] > 0:
            # The unit's rows are in cache now, after the dot products.
            for j in range(C_out_g):
                base = (n * C_out + g * C_out_g + j) * L_out
                bias_parts[item, j] += blocked_sum(gflat[base + t0 : base + t1])


@njit(**SERIAL_JIT_OPTIONS)
def grad_weight_shifted(x, shift, grad_output, groups, dilation, out):
    """Stride-1 weight gradient of x zero-padded by ``shift`` on the left.

    out[co, ci, k] = sum_{n, t} grad_output[n, co, t] * xz[n, c(ci), t + k*d - shift]

    with xz as in ``forward_shifted``. Deterministic: see the module docstring.

    x : (N, C_in, L); grad_output : (N, C_out, L_out);
    out : (C_out, C_in/groups, K), fully overwritten.
    """
    no_bias = np.empty(0, dtype=out.dtype)
    _weight_and_bias(x, shift, grad_output, groups, dilation, out, no_bias)


@njit(**SERIAL_JIT_OPTIONS)
def grad_weight_bias_shifted(x, shift, grad_output, groups, dilation, out, bias_out):
    """``grad_weight_shifted``, and the bias gradient (C_out,) into bias_out.

    The bias gradient is bitwise ``numconv._kernels.common.grad_bias``'s. It
    comes from the weight gradient's own reads of grad_output when one work
    item per group holds whole rows, so that its sums run in that order;
    otherwise it takes a pass of its own.
    """
    if not _weight_and_bias(x, shift, grad_output, groups, dilation, out, bias_out):
        grad_bias(grad_output, bias_out)


@njit(**JIT_OPTIONS)
def _weight_and_bias(x, shift, grad_output, groups, dilation, out, bias_out):
    """The weight gradient into out, and the bias gradient into bias_out
    (unless empty) where it can be fused; returns whether it was."""
    C_out, C_in_g, K = out.shape
    N = grad_output.shape[0]
    L_out = grad_output.shape[2]
    C_out_g = C_out // groups
    M = C_in_g * K
    span = (K - 1) * dilation
    T = _tile_length(L_out, C_in_g, span)
    nblocks = (L_out + T - 1) // T
    units = N * nblocks
    per_group = C_out_g * M
    chunks = min(units, max(1, WG_ITEMS // groups),
                 max(1, WG_PARTIAL_ELEMENTS // max(per_group * groups, 1)))
    chunks = max(chunks, 1)
    items = groups * chunks
    # Zeroed by a plain loop: in a parallel function np.zeros would be a
    # parallel loop, which starts the thread pool even for a small problem.
    partials = np.empty((items, per_group), dtype=out.dtype)
    pflat = partials.reshape(items * per_group)
    for i in range(items * per_group):
        pflat[i] = 0
    # With one chunk per group and one block per row, each channel's bias sum
    # runs over whole rows, samples in order, as in common.grad_bias.
    fused = bias_out.shape[0] > 0 and chunks == 1 and nblocks == 1
    bias_parts = np.empty((items if fused else 0, C_out_g), dtype=out.dtype)
    for item in range(bias_parts.shape[0]):
        for j in range(C_out_g):
            bias_parts[item, j] = 0
    gflat = grad_output.reshape(N * C_out * L_out)
    xflat = x.reshape(x.size)

    # Small problems stay on the calling thread (see SERIAL_WORK); the split
    # into chunks, and so the result, is the same either way.
    if N * C_out * L_out * max(M, 1) < SERIAL_WORK:
        for item in range(items):
            _weight_item(item, x, xflat, shift, gflat, dilation, partials, bias_parts,
                         C_out, C_in_g, K, C_out_g, L_out, T, nblocks, units, chunks)
    else:
        for item in prange(items):
            _weight_item(item, x, xflat, shift, gflat, dilation, partials, bias_parts,
                         C_out, C_in_g, K, C_out_g, L_out, T, nblocks, units, chunks)

    # Merge the chunks in chunk order, one (group, channel) row per iteration.
    outf = out.reshape(C_out, M)
    for r in range(C_out):
        g = r // C_out_g
        j = r - g * C_out_g
        for m in range(M):
            total = out.dtype.type(0)
            for ch in range(chunks):
                total += partials[g * chunks + ch, j * M + m]
            outf[r, m] = total
        if fused:
            bias_out[r] = bias_parts[g, j]
    return fused


@njit(**JIT_OPTIONS)
def _grad_weight_strided(xp, grad_output, groups, stride, dilation, out):
    """Plain sums for stride > 1 (see ``grad_weight``); one thread per (co, ci)."""
    C_out, C_in_g, K = out.shape
    N = grad_output.shape[0]
    L_out = grad_output.shape[2]
    C_out_g = C_out // groups
    for r in prange(C_out * C_in_g):
        co = r // C_in_g
        ci = r - co * C_in_g
        c = (co // C_out_g) * C_in_g + ci
        for k in range(K):
            total = out.dtype.type(0)
            for n in range(N):
                total += strided_dot(
                    grad_output[n, co], xp[n, c], k * dilation, stride, L_out
                )
            out[co, ci, k] = total


@njit(**SERIAL_JIT_OPTIONS)
def grad_weight(xp, grad_output, groups, stride, dilation, out):
    """out[co, ci, k] = sum_{n, t} grad_output[n, co, t] * xp[n, c(ci), t*s + k*d].

    xp : (N, C_in, L_padded); grad_output : (N, C_out, L_out);
    out : (C_out, C_in/groups, K), fully overwritten. Deterministic for any
    thread count.
    """
    if stride == 1:
        grad_weight_shifted(xp, 0, grad_output, groups, dilation, out)
    else:
        _grad_weight_strided(xp, grad_output, groups, stride, dilation, out)

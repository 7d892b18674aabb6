"""Register-tiled kernels: packed panels and a vector micro-kernel, no BLAS.

The forward pass of a block of output positions is a product of inner
dimension C_in/g * K, as in ``numconv._kernels.im2col``:

    Y_block (C_out/g x m) = W_g (C_out/g x C_in/g*K) @ cols (C_in/g*K x m).

BLAS runs products of this size (64 to 512 rows, a few hundred deep) well
below its peak, because it re-packs both operands for every call. Here the
operands are packed once, in the order the micro-kernel reads them:

- the weight into row panels, ``ap[g, i, p, r] = W_g[i*MR + r, p]`` (zero
  rows past C_out/g), once per call;
- each block's windows into column panels,
  ``bp[j, p, c] = xz[n, c(ci), (t0 + j*NR + c)*s + k*d - shift]`` with
  p = ci*K + k (zero columns past the block), once per block and group.

``tile_product`` then keeps an MR x NR tile of the result in vector registers
while it walks the inner dimension: each step loads NR inputs and MR weights
for MR * NR multiply-adds. Numba cannot express vector registers, so the
micro-kernel is an intrinsic that emits the LLVM vector code itself: fused
multiply-adds of 256-bit vectors (8 float32 or 4 float64 lanes), which LLVM
splits into narrower ones on a machine without AVX. The fused multiply-add
rounds once, as BLAS's kernels do; NaN and Inf propagate as IEEE says.

The inner dimension is walked in chunks of ``DEPTH_CHUNK``, so that a column
panel stays in L1 while every row panel of the chunk passes it; the first
chunk starts from the bias and the others add to the tile. Whole tiles are
written straight into the output; the partial ones at the block's edges go to
a scratch block that is copied out after, so the micro-kernel never writes
past a row or a block. At stride 1 a panel whose windows lie inside the input
needs no packing: step p reads the input row where it lies
(``tile_product_rows``); only the panels at the borders are packed.

The input gradient at stride 1 is a forward correlation of the output
gradient with the flipped, transposed weight (as in
``numconv._kernels.direct``), so it runs on the same forward kernel. At other
strides it is ``numconv._kernels.gemm``'s.

The weight gradient of a block is the transposed product

    gW_g (C_out/g x C_in/g*K) += G_block (C_out/g x m) @ cols (C_in/g*K x m)^T,

with the output gradient packed into row panels and the transposed windows
into column panels, both walked along the block's m positions.
"""

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from numconv._config import JIT_OPTIONS, SERIAL_JIT_OPTIONS
from numconv._kernels import direct, im2col
from numconv._kernels import gemm as shifted

# Rows of a tile, and vectors per tile row: 6 x 2 vectors keeps 12
# accumulators, 2 inputs and 1 broadcast weight in the 16 AVX registers.
# Measured against 4 x 3 and 5 x 2 on the suite's dense and grouped layers
# (float32 forward, kernel only, medians of 21): 6 x 2 was fastest or level on
# each, e.g. resnet1d 6.3 / 10.3 / 9.1 ms, textcnn 15.8 / 18.3 / 20.1 ms.
MR = 6
VECTORS = 2
VECTOR_BYTES = 32

# Inner-dimension steps per pass over a column panel (see the module docstring).
DEPTH_CHUNK = 256


def panel_width(dtype):
    """NR, the columns of a tile, for arrays of ``dtype``."""
    return VECTORS * VECTOR_BYTES // np.dtype(dtype).itemsize


def _emit_tile(context, builder, arg_types, a, a_off, b, b_off, offsets, depth,
               init, init_off, c, c_off, ldc, accumulate):
    """LLVM code of one tile product (see ``tile_product``).

    ``offsets`` is None for a packed column panel (step p reads b at
    b_off + p*NR) or an (array type, array, offset) triple (step p reads b at
    b_off + offsets[offset + p]).
    """
    elem = context.get_data_type(arg_types["a"].dtype)
    single = isinstance(elem, ir.FloatType)
    lanes = VECTOR_BYTES // (4 if single else 8)
    align = 4 if single else 8
    vec = ir.VectorType(elem, lanes)
    vptr = vec.as_pointer()
    i64 = ir.IntType(64)
    nr = VECTORS * lanes

    def const(v):
        return ir.Constant(i64, v)

    def start(name, array, offset):
        data = context.make_array(arg_types[name])(context, builder, array).data
        return builder.gep(data, [offset])

    def vector_at(base, offset):
        return builder.bitcast(builder.gep(base, [offset]), vptr)

    def splat(value):
        one = builder.insert_element(
            ir.Constant(vec, ir.Undefined), value, ir.Constant(ir.IntType(32), 0)
        )
        mask = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
        return builder.shuffle_vector(one, ir.Constant(vec, ir.Undefined), mask)

    name = "llvm.fma.v%d%s" % (lanes, "f32" if single else "f64")
    fma = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vec, [vec, vec, vec]), name
    )
    A = start("a", a, a_off)
    B = start("b", b, b_off)
    C = start("c", c, c_off)
    I = start("init", init, init_off)
    if offsets is not None:
        offsets_type, offsets_array, offsets_off = offsets
        data = context.make_array(offsets_type)(context, builder, offsets_array).data
        O = builder.gep(data, [offsets_off])
    slots = [
        builder.add(builder.mul(ldc, const(r)), const(v * lanes))
        for r in range(MR)
        for v in range(VECTORS)
    ]

    # Start from init[r] in every column of row r, or from zero when the sum
    # is added to the tile in c: that addition comes after the loop, so that
    # the depth steps sum among themselves before they meet a running total
    # (a sum of many chunks or blocks rounds like a pairwise sum, not like one
    # long running sum).
    keep = accumulate
    if keep.type != ir.IntType(1):
        keep = builder.icmp_unsigned("!=", keep, ir.Constant(keep.type, 0))
    zero = ir.Constant(vec, [ir.Constant(elem, 0.0)] * lanes)
    first = []
    for r in range(MR):
        start_r = builder.select(
            keep, zero, splat(builder.load(builder.gep(I, [const(r)])))
        )
        first.extend([start_r] * VECTORS)

    entry = builder.block
    loop = builder.append_basic_block("tile.loop")
    done = builder.append_basic_block("tile.done")
    builder.cbranch(builder.icmp_signed(">", depth, const(0)), loop, done)

    builder.position_at_end(loop)
    p = builder.phi(i64)
    p.add_incoming(const(0), entry)
    accs = []
    for value in first:
        phi = builder.phi(vec)
        phi.add_incoming(value, entry)
        accs.append(phi)
    if offsets is None:
        b_row = builder.gep(B, [builder.mul(p, const(nr))])
    else:
        b_row = builder.gep(B, [builder.load(builder.gep(O, [p]))])
    inputs = [
        builder.load(vector_at(b_row, const(v * lanes)), align=align)
        for v in range(VECTORS)
    ]
    a_row = builder.gep(A, [builder.mul(p, const(MR))])
    updated = []
    for r in range(MR):
        weight = splat(builder.load(builder.gep(a_row, [const(r)])))
        for v in range(VECTORS):
            updated.append(builder.call(fma, [weight, inputs[v], accs[r * VECTORS + v]]))
    following = builder.add(p, const(1))
    p.add_incoming(following, loop)
    for phi, value in zip(accs, updated):
        phi.add_incoming(value, loop)
    builder.cbranch(builder.icmp_signed("<", following, depth), loop, done)

    builder.position_at_end(done)
    final = []
    for i in range(len(slots)):
        phi = builder.phi(vec)
        phi.add_incoming(first[i], entry)
        phi.add_incoming(updated[i], loop)
        final.append(phi)
    before = builder.block
    with builder.if_then(keep):
        summed = [
            builder.fadd(value, builder.load(vector_at(C, s), align=align))
            for value, s in zip(final, slots)
        ]
        then_block = builder.block
    results = []
    for value, total in zip(final, summed):
        phi = builder.phi(vec)
        phi.add_incoming(total, then_block)
        phi.add_incoming(value, before)
        results.append(phi)
    for value, s in zip(results, slots):
        builder.store(value, vector_at(C, s), align=align)


@intrinsic
def tile_product(typingctx, a, a_off, b, b_off, depth, init, init_off, c, c_off, ldc,
                 accumulate):
    """c[r*ldc + j] = s + sum_{p < depth} a[p*MR + r] * b[p*NR + j], r < MR, j < NR.

    s is c[r*ldc + j] itself, added once the sum is formed, when ``accumulate``
    is true, else init[init_off + r].
    Offsets in elements from the start of each C-contiguous array. No bounds
    are checked: the caller sizes every array.
    """
    sig = types.void(a, a_off, b, b_off, depth, init, init_off, c, c_off, ldc,
                     accumulate)

    def codegen(context, builder, signature, args):
        a_, a_off_, b_, b_off_, depth_, i_, i_off_, c_, c_off_, ldc_, acc_ = args
        arg_types = dict(a=signature.args[0], b=signature.args[2],
                         init=signature.args[5], c=signature.args[7])
        _emit_tile(context, builder, arg_types, a_, a_off_, b_, b_off_, None, depth_,
                   i_, i_off_, c_, c_off_, ldc_, acc_)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def tile_product_rows(typingctx, a, a_off, b, b_off, offsets, offsets_off, depth,
                      init, init_off, c, c_off, ldc, accumulate):
    """As ``tile_product``, with step p reading b[b_off + offsets[offsets_off + p] + j].

    The input read where it lies: offsets[ci*K + k] = ci*L + k*d.
    """
    sig = types.void(a, a_off, b, b_off, offsets, offsets_off, depth, init, init_off,
                     c, c_off, ldc, accumulate)

    def codegen(context, builder, signature, args):
        (a_, a_off_, b_, b_off_, o_, o_off_, depth_, i_, i_off_, c_, c_off_, ldc_,
         acc_) = args
        arg_types = dict(a=signature.args[0], b=signature.args[2],
                         init=signature.args[7], c=signature.args[9])
        _emit_tile(context, builder, arg_types, a_, a_off_, b_, b_off_,
                   (signature.args[4], o_, o_off_), depth_, i_, i_off_, c_, c_off_,
                   ldc_, acc_)
        return context.get_dummy_value()

    return sig, codegen


def pack_weight(weight, groups):
    """Row panels ap (groups, row tiles, C_in/g*K, MR) of weight (C_out, C_in/g, K).

    ap[g, i, p, r] = weight[g*C_out_g + i*MR + r].ravel()[p], zero past C_out/g.
    """
    C_out, C_in_g, K = weight.shape
    C_out_g = C_out // groups
    tiles = -(-C_out_g // MR)
    depth = C_in_g * K
    rows = np.zeros((groups, tiles * MR, depth), dtype=weight.dtype)
    rows[:, :C_out_g] = weight.reshape(groups, C_out_g, depth)
    return np.ascontiguousarray(
        rows.reshape(groups, tiles, MR, depth).transpose(0, 1, 3, 2)
    )


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def pack_panel(x, n, c0, C_in_g, K, first, m, stride, dilation, shift, dst):
    """dst[ci*K + k, c] = xz[n, c0 + ci, (first + c)*s + k*d - shift], c < NR.

    Zero where that position lies outside x or first + c >= m (the block's end,
    in the same coordinates as first). x : (N, C_in, L); dst : (C_in_g*K, NR).
    """
    L = x.shape[2]
    nr = dst.shape[1]
    for ci in range(C_in_g):
        xrow = x[n, c0 + ci]
        for k in range(K):
            row = dst[ci * K + k]
            u0 = first * stride + k * dilation - shift
            for c in range(nr):
                u = u0 + c * stride
                row[c] = xrow[u] if c < m - first and 0 <= u < L else 0


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def interior_panels(t0, m, nr, span, shift, L):
    """Panels j of a stride-1 block whose every read lies inside x, as a range.

    Panel j covers outputs t0 + j*NR + c, c < NR, and reads x from
    t0 + j*NR - shift to t0 + j*NR + NR - 1 + span - shift (span = (K-1)*d).
    """
    lo = max(0, -(-(shift - t0) // nr))
    hi = min(m // nr, (L - span + shift - t0 - nr) // nr + 1)
    return lo, max(lo, hi)


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def copy_edges(acc, n, co0, rows, t0, m, out):
    """out[n, co0 + r, t0 + t] = acc[r, t] for the partial tiles of a block.

    Those are the rows past the last whole row tile and the columns past the
    last whole panel; the whole tiles were written to out directly.
    """
    nr = VECTORS * VECTOR_BYTES // out.itemsize
    whole_rows = rows - rows % MR
    whole_cols = m - m % nr
    for r in range(rows):
        first = whole_cols if r < whole_rows else 0
        orow = out[n, co0 + r]
        arow = acc[r]
        for t in range(first, m):
            orow[t0 + t] = arow[t]


@njit(**JIT_OPTIONS)
def forward_kernel(x, shift, ap, bias_rows, groups, K, stride, dilation, block, out):
    """out[n, co, t] = bias[co] + sum_{ci, k} weight[co, ci, k] * xz[n, c(ci), u].

    u = t*s + k*d - shift, xz as in ``pack_panel``; ap = ``pack_weight`` of
    weight and bias_rows = ``pack_bias`` of bias. x : (N, C_in, L);
    out : (N, C_out, L_out), fully overwritten; block : positions per work
    item, a multiple of NR.
    """
    N, C_out, L_out = out.shape
    _, row_tiles, depth, _ = ap.shape
    C_in = x.shape[1]
    L = x.shape[2]
    C_in_g = C_in // groups
    C_out_g = C_out // groups
    nr = VECTORS * VECTOR_BYTES // out.itemsize
    blocks = (L_out + block - 1) // block
    # Where step p of a panel reads, from the panel's first column in row c0.
    rows = np.empty(depth, dtype=np.int64)
    for ci in range(C_in_g):
        for k in range(K):
            rows[ci * K + k] = ci * L + k * dilation
    for item in prange(N * blocks):
        n = item // blocks
        t0 = (item - n * blocks) * block
        m = min(block, L_out - t0)
        panels = (m + nr - 1) // nr
        if stride == 1:
            lo, hi = interior_panels(t0, m, nr, (K - 1) * dilation, shift, L)
        else:
            lo, hi = 0, 0
        bp = np.empty((panels, depth, nr), dtype=out.dtype)
        # Partial tiles go to acc (3D, like out, so either can take a tile);
        # whole ones straight to out.
        ldc = panels * nr
        acc = np.empty((1, row_tiles * MR, ldc), dtype=out.dtype)
        for g in range(groups):
            for j in range(panels):
                if j < lo or j >= hi:
                    pack_panel(x, n, g * C_in_g, C_in_g, K, t0 + j * nr, t0 + m,
                               stride, dilation, shift, bp[j])
            x_off = (n * C_in + g * C_in_g) * L + t0 - shift
            for p0 in range(0, depth, DEPTH_CHUNK):
                steps = min(DEPTH_CHUNK, depth - p0)
                later = p0 > 0
                for j in range(panels):
                    for i in range(row_tiles):
                        a_off = ((g * row_tiles + i) * depth + p0) * MR
                        b_row = g * row_tiles * MR + i * MR
                        if (i + 1) * MR <= C_out_g and (j + 1) * nr <= m:
                            c = out
                            c_off = ((n * C_out + g * C_out_g + i * MR) * L_out
                                     + t0 + j * nr)
                            c_ld = L_out
                        else:
                            c = acc
                            c_off = i * MR * ldc + j * nr
                            c_ld = ldc
                        if lo <= j < hi:
                            tile_product_rows(ap, a_off, x, x_off + j * nr, rows, p0,
                                              steps, bias_rows, b_row, c, c_off, c_ld,
                                              later)
                        else:
                            tile_product(ap, a_off, bp, (j * depth + p0) * nr, steps,
                                         bias_rows, b_row, c, c_off, c_ld, later)
            copy_edges(acc[0], n, g * C_out_g, C_out_g, t0, m, out)


def supports(spec, op):
    """Specs with at least one input and output channel per group.

    The input gradient at stride > 1 is ``gemm``'s, with its limits.
    """
    if spec.C_in_per_group * spec.K == 0 or spec.C_out_per_group == 0:
        return False
    if op == "grad_input" and spec.stride > 1:
        return shifted.supports(spec, op)
    return True


def pack_bias(bias, groups, row_tiles):
    """bias (C_out,) -> (groups * row_tiles * MR,): each group's rows, zero-padded."""
    C_out_g = bias.shape[0] // groups
    rows = np.zeros((groups, row_tiles * MR), dtype=bias.dtype)
    rows[:, :C_out_g] = bias.reshape(groups, C_out_g)
    return rows.reshape(-1)


def forward_block(N, L_out, depth, dtype):
    """Positions per work item: a multiple of NR that fits the column panels
    in ``im2col.SCRATCH_BYTES`` and splits small batches across threads."""
    nr = panel_width(dtype)
    itemsize = np.dtype(dtype).itemsize
    block = im2col.cols_block(N, L_out, depth, itemsize)
    return max(nr, block - block % nr)


def forward_shifted(x, shift, weight, bias, groups, dilation, out):
    """Stride-1 forward pass of x zero-padded by ``shift`` on the left, no copy."""
    _forward(x, shift, weight, bias, groups, 1, dilation, out)


def forward(xp, weight, bias, groups, stride, dilation, out):
    """Forward pass; the family's entry point (see ``numconv._dispatch``).

    xp : (N, C_in, L_padded); weight : (C_out, C_in/groups, K); bias : (C_out,);
    out : (N, C_out, L_out), fully overwritten.
    """
    _forward(xp, 0, weight, bias, groups, stride, dilation, out)


def _forward(x, shift, weight, bias, groups, stride, dilation, out):
    N, C_out, L_out = out.shape
    _, C_in_g, K = weight.shape
    ap = pack_weight(weight, groups)
    bias_rows = pack_bias(bias, groups, ap.shape[1])
    block = forward_block(N, L_out, C_in_g * K, out.dtype)
    forward_kernel(x, shift, ap, bias_rows, groups, K, stride, dilation, block, out)


def grad_input_shifted(grad_output, weight, groups, dilation, crop_left, out):
    """Stride-1 input gradient for padded positions crop_left onwards.

    The forward correlation of ``numconv._kernels.direct.grad_input_shifted``,
    run on this family's forward kernel. out : (N, C_in, length), overwritten.
    """
    _, C_in_g, K = weight.shape
    wf = direct._flipped_transpose(weight, groups)
    zero = np.zeros(C_in_g * groups, dtype=out.dtype)
    forward_shifted(grad_output, (K - 1) * dilation - crop_left, wf, zero, groups,
                    dilation, out)


def grad_input(grad_output, weight, groups, stride, dilation, out):
    """Gradient w.r.t. the padded input, out : (N, C_in, L_padded), overwritten."""
    if stride == 1:
        grad_input_shifted(grad_output, weight, groups, dilation, 0, out)
    else:
        shifted.grad_input(grad_output, weight, groups, stride, dilation, out)


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def pack_outputs(grad_output, n, co0, rows, t0, m, ga):
    """ga[i, t, r] = grad_output[n, co0 + i*MR + r, t0 + t] for t < m; zero rows
    from ``rows`` on. ga : (row tiles, >= m, MR)."""
    for i in range(ga.shape[0]):
        for r in range(MR):
            row = i * MR + r
            if row < rows:
                grow = grad_output[n, co0 + row]
                for t in range(m):
                    ga[i, t, r] = grow[t0 + t]
            else:
                for t in range(m):
                    ga[i, t, r] = 0


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def pack_windows(x, n, c0, C_in_g, K, t0, m, stride, dilation, shift, xb):
    """xb[j, t, c] = xz[n, c0 + ci, (t0 + t)*s + k*d - shift] for t < m, where
    ci*K + k = j*NR + c; zero for columns past C_in_g*K and outside x.
    xb : (panels, >= m, NR)."""
    L = x.shape[2]
    panels, _, nr = xb.shape
    depth = C_in_g * K
    for j in range(panels):
        for c in range(nr):
            p = j * nr + c
            if p >= depth:
                for t in range(m):
                    xb[j, t, c] = 0
                continue
            ci = p // K
            xrow = x[n, c0 + ci]
            u0 = t0 * stride + (p - ci * K) * dilation - shift
            # Positions t in [ta, tb) read inside x.
            ta = min(max(-(-(-u0) // stride), 0), m)
            tb = max(min(-(-(L - u0) // stride), m), ta)
            for t in range(ta):
                xb[j, t, c] = 0
            for t in range(ta, tb):
                xb[j, t, c] = xrow[u0 + t * stride]
            for t in range(tb, m):
                xb[j, t, c] = 0


@njit(**JIT_OPTIONS)
def grad_weight_kernel(x, shift, grad_output, groups, K, stride, dilation, block,
                       partial):
    """partial[j, g*R + co, p] = chunk j's share of gW[g*C_out_g + co].ravel()[p].

    R = row tiles * MR per group. x : (N, C_in, L), read as in ``pack_panel``;
    grad_output : (N, C_out, L_out); partial : (chunks, groups*R, panels*NR),
    fully overwritten. Chunk j sums the j-th of near-equal runs of the
    (n, block) units, in order, as ``numconv._kernels.im2col`` does.
    """
    N, C_out, L_out = grad_output.shape
    chunks, rows_all, ldc = partial.shape
    C_in_g = x.shape[1] // groups
    C_out_g = C_out // groups
    nr = VECTORS * VECTOR_BYTES // x.itemsize
    R = rows_all // groups
    row_tiles = R // MR
    panels = ldc // nr
    blocks = (L_out + block - 1) // block
    units = N * blocks
    for j in prange(chunks):
        partial[j] = 0
        ga = np.empty((row_tiles, block, MR), dtype=x.dtype)
        xb = np.empty((panels, block, nr), dtype=x.dtype)
        for u in range(j * units // chunks, (j + 1) * units // chunks):
            n = u // blocks
            t0 = (u - n * blocks) * block
            m = min(block, L_out - t0)
            for g in range(groups):
                pack_outputs(grad_output, n, g * C_out_g, C_out_g, t0, m, ga)
                pack_windows(x, n, g * C_in_g, C_in_g, K, t0, m, stride, dilation,
                             shift, xb)
                for jp in range(panels):
                    for i in range(row_tiles):
                        tile_product(ga, i * block * MR, xb, jp * block * nr, m,
                                     ga, 0, partial,
                                     (j * rows_all + g * R + i * MR) * ldc + jp * nr,
                                     ldc, True)


@njit(**JIT_OPTIONS)
def merge_rows(partial, groups, out):
    """out[g*C_out_g + co].ravel()[p] = sum_j partial[j, g*R + co, p], in order of j."""
    chunks, rows_all, _ = partial.shape
    C_out, C_in_g, K = out.shape
    C_out_g = C_out // groups
    R = rows_all // groups
    depth = C_in_g * K
    for row in prange(C_out):
        g = row // C_out_g
        source = g * R + row - g * C_out_g
        for p in range(depth):
            total = partial[0, source, p]
            for j in range(1, chunks):
                total += partial[j, source, p]
            ci = p // K
            out[row, ci, p - ci * K] = total


def _grad_weight(x, shift, grad_output, groups, stride, dilation, out):
    C_out, C_in_g, K = out.shape
    N, _, L_out = grad_output.shape
    nr = panel_width(out.dtype)
    depth = C_in_g * K
    panels = -(-depth // nr)
    R = -(-(C_out // groups) // MR) * MR
    block = im2col.cols_block(N, L_out, panels * nr, out.itemsize)
    chunks = shifted.weight_chunks(N, C_out, L_out, out.size, block)
    partial = np.empty((chunks, groups * R, panels * nr), dtype=out.dtype)
    grad_weight_kernel(x, shift, grad_output, groups, K, stride, dilation, block,
                       partial)
    merge_rows(partial, groups, out)


def grad_weight(xp, grad_output, groups, stride, dilation, out):
    """Weight gradient; the family's entry point. Bitwise the same for any
    number of threads.

    xp : (N, C_in, L_padded); grad_output : (N, C_out, L_out);
    out : (C_out, C_in/groups, K), fully overwritten.
    """
    _grad_weight(xp, 0, grad_output, groups, stride, dilation, out)


def grad_weight_shifted(x, shift, grad_output, groups, dilation, out):
    """Stride-1 weight gradient of x zero-padded by ``shift`` on the left."""
    _grad_weight(x, shift, grad_output, groups, 1, dilation, out)

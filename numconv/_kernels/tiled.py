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

The inner dimension is walked in chunks of ``DEPTH_CHUNK`` (shorter for a
single row panel), so that a column panel stays in L1 while every row panel
of the chunk passes it; the first chunk starts from the bias and the others
add to the tile. Whole tiles are written straight into the output; the
partial ones at the block's edges go to a scratch block that is copied out
after, so the micro-kernel never writes past a row or a block. At stride 1
a panel whose windows lie inside the input needs no packing: step p reads
the input row where it lies (``tile_product_rows``), its rows prefetched a
few panels ahead; only the panels at the borders are packed, by masked
vector loads (``load_row``), as are all panels at stride > 1.

The input gradient at stride 1 is a forward correlation of the output
gradient with the flipped, transposed weight (as in
``numconv._kernels.direct``), so it runs on the same forward kernel. A
strided layer with a polyphase form runs it on the phases; at other strides
it is ``numconv._kernels.gemm``'s.

The weight gradient at stride 1 is a set of dot products along the output
positions, gW[co, ci, k] = sum_t g[co, t] * xz[ci, t + k*d - shift], and packing
its operands would move as much data as the products themselves (both have t
as their fast index). ``dot_tile`` instead keeps DOT_ROWS x DOT_TAPS sums, each
a vector of partial sums along t, and reads the output-gradient rows and the
input windows where they lie: interior blocks in place, blocks at the borders
from a zero-padded copy of their rows. Short rows are taken several samples
per tile, so that the sums run long before their lanes are added up. A
strided layer with a polyphase form (see ``numconv._polyphase``) runs it on
the phases; at other strides it is ``numconv._kernels.gemm``'s.

Both gradients of a layer of one group can come from one pass over the
output gradient (``backward_shifted``; ``numconv._polyphase`` uses it on the
phases of a strided layer, whose output gradient is the largest array the
backward pass reads): after the dot products of each weight-gradient unit,
the input gradient of the unit's positions runs on the forward kernel's
block routine while the unit's output-gradient rows are still in cache.

Depthwise layers (one input and one output channel per group) have no
product to tile across channels. Their stride-1 forward pass (and so their
input gradient) keeps DW_VECTORS vectors of one output row in registers while
it walks the taps (``row_tile``), and their weight gradient is one row of
DW_TAPS dot products at a time (``dot_row``).
"""

import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from numconv import _polyphase
from numconv._config import FASTMATH, JIT_OPTIONS, SERIAL_JIT_OPTIONS
from numconv._kernels import common, direct, im2col
from numconv._kernels import gemm as shifted


def _has_avx512():
    """True when the kernels are compiled for a CPU with AVX-512 (as Numba
    targets it: NUMBA_CPU_FEATURES, else the host unless NUMBA_CPU_NAME names
    another CPU)."""
    from numba.core import config

    if config.CPU_FEATURES is not None:
        features = config.CPU_FEATURES
    elif config.CPU_NAME is not None:
        features = ""
    else:
        features = llvm.get_host_cpu_features().flatten()
    return "+avx512f" in features.split(",")


# The micro-kernel's tile: MR rows, VECTORS vectors of VECTOR_BYTES per row.
# With AVX2's 16 vector registers, 6 x 2 vectors of 256 bits keeps 12
# accumulators, 2 inputs and 1 broadcast weight in registers; measured
# against 4 x 3 and 5 x 2 on the suite's dense and grouped layers (float32
# forward, kernel only, medians of 21) it was fastest or level on each, e.g.
# resnet1d 6.3 / 10.3 / 9.1 ms, textcnn 15.8 / 18.3 / 20.1 ms. With AVX-512's
# 32 registers, 8 x 2 vectors of 512 bits, against 6 x 2 x 256 bits (Zen 4,
# float32 forward through conv1d, 2 threads, medians of 11 in three
# interleaved rounds, ms): grouped 3.35 / 4.1, resnet1d 5.3-6.2 / 6.5-6.8,
# longkernel 10.3-10.8 / 13.8-15.2, textcnn 13.5-14.8 / 16.4-17.9,
# ecg_first 33.6-35.7 / 37-48, wavenet_dil 8.1-8.9 / 10.2-11.7; 6 x 2,
# 6 x 3, 10 x 2 and 14 x 1 vectors of 512 bits were level with 8 x 2 or
# slower. A block's last row tile holding at most MR / 2 rows runs as a
# half-height tile, so that 12 rows (ecg_first's input gradient) cost 8 + 4
# rows, not 16.
AVX512 = _has_avx512()
if AVX512:
    MR, VECTORS, VECTOR_BYTES = 8, 2, 64
else:
    MR, VECTORS, VECTOR_BYTES = 6, 2, 32
HALF_MR = MR // 2
# A block's last panel holding at most half its columns runs on the first
# NARROW_VECTORS vectors only (a text CNN's rows of 100 outputs are 3 panels of
# 32 and one of 4 in float32 with AVX-512).
NARROW_VECTORS = VECTORS // 2

# Both gradients run on the phases of a strided layer. wav2vec's first layer
# (5 phase rows over 512 channels and 2 taps), through the public functions,
# medians of 9 in three rounds, ms, the direct family on the phases / this
# one: weight gradient float32 4.29-4.65 / 3.45-4.77, float64 8.64-9.18 /
# 6.16-6.39; input gradient float32 5.0-5.2 / 3.8-4.1, float64 8.5-9.6 /
# 7.3-7.8. The forward pass keeps its strided panels (see ``numconv._dispatch``).
# Where K is not a multiple of the stride (d = 1), the weight gradient runs
# on the phases with padded taps and the input gradient one phase at a time
# (``numconv._polyphase``); the timings that chose them are in
# ``numconv._dispatch`` (PHASE_PADDED_SHARE, PHASEWISE_MIN_ROWS).
POLYPHASE = ("grad_weight", "grad_input")
PADDED_TAPS = ("grad_weight",)
PHASEWISE = ("grad_input",)
# One phase at a time also where the phase form applies, once groups have this
# many input channels (AMD Zen 5, float32, through conv1d_grad_input,
# interleaved, medians of 7, ms, gemm / phase form / one phase at a time;
# (N, C_in, C_out, L, K, stride)): (16, 64, 64, 2048, 4, 2) 3.43 / 3.62 /
# 2.05, (16, 128, 128, 2048, 4, 2) 11.0 / 9.39 / 5.84, (16, 32, 32, 2048, 4,
# 2) 1.12 / 1.59 / 0.82, (8, 32, 64, 4096, 6, 3) 1.97 / 1.85 / 1.05, (8, 256,
# 256, 2048, 2, 2) 10.4 / 9.23 / 6.62, (8, 512, 512, 1024, 4, 4) 22.2 / 20.2
# / 15.2, (8, 64, 512, 4000, 10, 5) 22.7 / 13.3 / 11.2. With fewer the phase
# form's s times more rows pay: (8, 16, 512, 16000, 10, 5) phase form 11.8 /
# one at a time 14.2, (8, 8, 256, 8000, 6, 3) 1.90 / 2.10.
PHASEWISE_MIN_CHANNELS = 32

# Rows of x that lie a multiple of this many bytes apart fall into a few of
# L1's sets, so a panel read in place does not stay in L1 while the row tiles
# pass it; a work item with two or more row tiles then reads a copy of its
# rows of another length (made once per group, shared by every row tile).
# Forward and input gradient at rows of 1024 or 4096 positions (Sapphire
# Rapids, through the public functions, medians of 11, two interleaved
# rounds, ms, in place / copy): float32 resnet1d forward 5.1-7.1 / 4.3-4.5,
# input gradient 7.8-8.5 / 7.4-7.8; wide forward 13.7-14.4 / 13.4, input
# gradient 14.2-14.5 / 13.8; grouped forward 3.0-3.5 / 2.4-2.5; wavenet_dil
# forward 6.4-7.2 / 5.8; ecg_first forward 25.7-27.6 / 24.9-25.6, input
# gradient (12 input channels: two row tiles) 25.6-26.4 / 26.8-27.0; float64
# resnet1d forward 8.6-9.2 / 8.0-8.7, input gradient 9.0-9.2 / 8.2-8.9. With
# rows of 1040 positions instead of 1024 (in place, float32, 2 threads) the
# resnet1d-like forward pass ran at 269-277 GFLOP/s against 251-253. A copy
# for every row length, and for the phases of strided layers, was level with
# reading in place (and lost textcnn's narrow last panels).
GATHER_STRIDE_BYTES = 1024

# Inner-dimension steps per pass over a column panel (see the module docstring).
DEPTH_CHUNK = 256
# A product of one row tile uses each panel once per chunk, so keeping it in
# L1 buys nothing; shorter chunks read fewer input rows at a time, which the
# hardware prefetchers follow. wav2vec's first layer's input gradient (5 phase
# rows over 512 channels and 2 taps; Sapphire Rapids, through the public
# function, medians of 11-15, ms, chunks of 256 / 64): float32 5.9-8.0 /
# 3.6-5.0, float64 10.2 / 7.2; products of 8 rows over 64 or 128 channels were
# level.
SINGLE_TILE_DEPTH_CHUNK = 64
# A block whose panels of one depth chunk take at most this many bytes in all
# is walked one row tile at a time along its panels, so that each output row
# is written in order; other blocks one panel at a time through every row
# tile, so that the panel stays in L1. wav2vec's first layer forward (512
# rows, depth 10, stride 5; float32, 2 threads, medians of 9, ms): panel at a
# time 6.3, row tile at a time 4.1.
ROWS_OUTER_BYTES = 32 * 1024


def panel_width(dtype):
    """NR, the columns of a tile, for arrays of ``dtype``."""
    return VECTORS * VECTOR_BYTES // np.dtype(dtype).itemsize


class _Vectors:
    """LLVM vectors of ``width`` bytes over one float dtype, and what the
    emitters do with them."""

    def __init__(self, context, builder, dtype, width):
        self.builder = builder
        self.elem = context.get_data_type(dtype)
        single = isinstance(self.elem, ir.FloatType)
        self.lanes = width // (4 if single else 8)
        self.align = 4 if single else 8
        self.type = ir.VectorType(self.elem, self.lanes)
        self.zero = ir.Constant(self.type, [ir.Constant(self.elem, 0.0)] * self.lanes)
        suffix = "v%d%s" % (self.lanes, "f32" if single else "f64")
        self._fma = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(self.type, [self.type] * 3), "llvm.fma." + suffix
        )
        self._masked_load = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(self.type, [self.type.as_pointer(), _I32,
                                        ir.VectorType(ir.IntType(1), self.lanes),
                                        self.type]),
            "llvm.masked.load.%s.p0" % suffix,
        )

    def load(self, pointer):
        """The vector at ``pointer`` (to an element, any alignment)."""
        return self.builder.load(self._cast(pointer), align=self.align)

    def store(self, value, pointer):
        self.builder.store(value, self._cast(pointer), align=self.align)

    def load_first(self, pointer, count):
        """The first ``count`` lanes at ``pointer``, zeros after; reads (and
        faults on) nothing past them."""
        return self.load_masked(pointer, self.between(0, _const(0), count))

    def load_masked(self, pointer, mask):
        """The lanes of ``mask`` at ``pointer``, zeros in the others; reads
        (and faults on) nothing outside the mask."""
        return self.builder.call(self._masked_load, [self._cast(pointer),
                                                     _const32(self.align), mask,
                                                     self.zero])

    def between(self, first, low, high):
        """The mask of lanes i with low <= first + i < high (i64 bounds)."""
        b = self.builder
        index = ir.Constant(ir.VectorType(_I64, self.lanes),
                            [first + i for i in range(self.lanes)])
        return b.and_(b.icmp_signed(">=", index, self.splat(low)),
                      b.icmp_signed("<", index, self.splat(high)))

    def splat(self, value):
        """``value`` in every lane: of this vector type for a float, of a
        vector of ints or bools as wide for an integer."""
        b = self.builder
        if isinstance(value.type, ir.IntType):
            vector_type = ir.VectorType(value.type, self.lanes)
        else:
            vector_type = self.type
        one = b.insert_element(ir.Constant(vector_type, ir.Undefined), value,
                               _const32(0))
        return b.shuffle_vector(one, ir.Constant(vector_type, ir.Undefined),
                                ir.Constant(ir.VectorType(_I32, self.lanes),
                                            [0] * self.lanes))

    def fma(self, a, b, c):
        """a * b + c, rounded once."""
        return self.builder.call(self._fma, [a, b, c])

    def lane_sums(self, values):
        """The sum of the lanes of each vector of ``values``, halves added in
        a fixed tree: lane i meets lane i + W/2, then i + W/4, and so on.

        The vectors are reduced together: each level adds the first halves of
        every vector's blocks to their second halves, two vectors into one, so
        a level costs one addition per pair of vectors rather than one per
        vector. The sums are those of reducing each vector alone.
        """
        b = self.builder
        # Each entry: a vector and, per block of ``size`` lanes from lane 0 on,
        # the index in ``values`` whose partial sums the block holds.
        items = [(value, [i]) for i, value in enumerate(values)]
        size = self.lanes
        while size > 1:
            half = size // 2
            reduced = []
            for a in range(0, len(items), 2):
                pair = items[a:a + 2]
                first, second, owners = [], [], []
                for v, (_, blocks) in enumerate(pair):
                    base = v * self.lanes
                    for j, owner in enumerate(blocks):
                        start = base + j * size
                        first.extend(range(start, start + half))
                        second.extend(range(start + half, start + size))
                        owners.append(owner)
                pad = [0] * (self.lanes - len(first))
                other = pair[1][0] if len(pair) == 2 else pair[0][0]
                low = b.shuffle_vector(pair[0][0], other, ir.Constant(
                    ir.VectorType(_I32, self.lanes), first + pad))
                high = b.shuffle_vector(pair[0][0], other, ir.Constant(
                    ir.VectorType(_I32, self.lanes), second + pad))
                reduced.append((b.fadd(low, high), owners))
            items = reduced
            size = half
        sums = [None] * len(values)
        for vector, owners in items:
            for lane, owner in enumerate(owners):
                sums[owner] = b.extract_element(vector, _const32(lane))
        return sums

    def _cast(self, pointer):
        return self.builder.bitcast(pointer, self.type.as_pointer())


_I32 = ir.IntType(32)
_I64 = ir.IntType(64)


def _const(value):
    return ir.Constant(_I64, value)


def _const32(value):
    return ir.Constant(_I32, value)


def _start(context, builder, array_type, array, offset):
    """Pointer to element ``offset`` of a C-contiguous array."""
    data = context.make_array(array_type)(context, builder, array).data
    return builder.gep(data, [offset])


def _counted_loop(builder, count, starts, body, name):
    """The values after ``for i in range(count): values = body(i, values)``.

    ``starts`` are the values before the loop, and what comes back when
    count <= 0. ``body`` may add blocks of its own (inner loops, branches);
    the block it ends in closes the loop.
    """
    entry = builder.block
    loop = builder.append_basic_block(name + ".loop")
    done = builder.append_basic_block(name + ".done")
    builder.cbranch(builder.icmp_signed(">", count, _const(0)), loop, done)

    builder.position_at_end(loop)
    i = builder.phi(_I64)
    i.add_incoming(_const(0), entry)
    values = []
    for start in starts:
        phi = builder.phi(start.type)
        phi.add_incoming(start, entry)
        values.append(phi)
    updated = body(i, values)
    latch = builder.block
    following = builder.add(i, _const(1))
    i.add_incoming(following, latch)
    for phi, value in zip(values, updated):
        phi.add_incoming(value, latch)
    builder.cbranch(builder.icmp_signed("<", following, count), loop, done)

    builder.position_at_end(done)
    return _merge(builder, [(starts, entry), (updated, latch)])


def _merge(builder, incoming):
    """Phis at the top of the current block: one per value, from each
    (values, block) pair of ``incoming``."""
    merged = []
    for i in range(len(incoming[0][0])):
        phi = builder.phi(incoming[0][0][i].type)
        for values, block in incoming:
            phi.add_incoming(values[i], block)
        merged.append(phi)
    return merged


def _emit_tile(context, builder, arg_types, n_rows, n_vectors, a, a_off, b, b_off,
               offsets, depth, init, init_off, c, c_off, ldc, accumulate):
    """LLVM code of one tile product of ``n_rows`` rows and the first
    ``n_vectors`` vectors of a panel's columns (see ``tile_product``).

    ``offsets`` is None for a packed column panel (step p reads b at
    b_off + p*NR) or an (array type, array, offset) triple (step p reads b at
    b_off + offsets[offset + p]).
    """
    V = _Vectors(context, builder, arg_types["a"].dtype, VECTOR_BYTES)
    lanes = V.lanes
    nr = VECTORS * lanes
    A = _start(context, builder, arg_types["a"], a, a_off)
    B = _start(context, builder, arg_types["b"], b, b_off)
    C = _start(context, builder, arg_types["c"], c, c_off)
    I = _start(context, builder, arg_types["init"], init, init_off)
    if offsets is not None:
        O = _start(context, builder, *offsets)
    slots = [
        builder.gep(C, [builder.add(builder.mul(ldc, _const(r)), _const(v * lanes))])
        for r in range(n_rows)
        for v in range(n_vectors)
    ]

    # Start from init[r] in every column of row r, or from zero when the sum
    # is added to the tile in c: that addition comes after the loop, so that
    # the depth steps sum among themselves before they meet a running total
    # (a sum of many chunks or blocks rounds like a pairwise sum, not like one
    # long running sum).
    keep = accumulate
    if keep.type != ir.IntType(1):
        keep = builder.icmp_unsigned("!=", keep, ir.Constant(keep.type, 0))
    first = []
    for r in range(n_rows):
        row_start = builder.select(
            keep, V.zero, V.splat(builder.load(builder.gep(I, [_const(r)])))
        )
        first.extend([row_start] * n_vectors)

    def step(p, accs):
        if offsets is None:
            b_row = builder.gep(B, [builder.mul(p, _const(nr))])
        else:
            b_row = builder.gep(B, [builder.load(builder.gep(O, [p]))])
        inputs = [V.load(builder.gep(b_row, [_const(v * lanes)]))
                  for v in range(n_vectors)]
        a_row = builder.gep(A, [builder.mul(p, _const(MR))])
        updated = []
        for r in range(n_rows):
            weight = V.splat(builder.load(builder.gep(a_row, [_const(r)])))
            for v in range(n_vectors):
                updated.append(V.fma(weight, inputs[v], accs[r * n_vectors + v]))
        return updated

    final = _counted_loop(builder, depth, first, step, "tile")
    before = builder.block
    with builder.if_then(keep):
        summed = [builder.fadd(value, V.load(s)) for value, s in zip(final, slots)]
        then_block = builder.block
    results = _merge(builder, [(summed, then_block), (final, before)])
    for value, s in zip(results, slots):
        V.store(value, s)


def _tile_intrinsic(n_rows, n_vectors, with_offsets, *arg_types):
    sig = types.void(*arg_types)

    def codegen(context, builder, signature, args):
        if with_offsets:
            a_, a_off_, b_, b_off_, o_, o_off_, *rest = args
            offsets = (signature.args[4], o_, o_off_)
            init_type, c_type = signature.args[7], signature.args[9]
        else:
            a_, a_off_, b_, b_off_, *rest = args
            offsets = None
            init_type, c_type = signature.args[5], signature.args[7]
        depth_, i_, i_off_, c_, c_off_, ldc_, acc_ = rest
        arg_types = dict(a=signature.args[0], b=signature.args[2], init=init_type,
                         c=c_type)
        _emit_tile(context, builder, arg_types, n_rows, n_vectors, a_, a_off_, b_,
                   b_off_, offsets, depth_, i_, i_off_, c_, c_off_, ldc_, acc_)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def tile_product(typingctx, a, a_off, b, b_off, depth, init, init_off, c, c_off, ldc,
                 accumulate):
    """c[r*ldc + j] = s + sum_{p < depth} a[p*MR + r] * b[p*NR + j], r < MR, j < NR.

    s is c[r*ldc + j] itself, added once the sum is formed, when ``accumulate``
    is true, else init[init_off + r].
    Offsets in elements from the start of each C-contiguous array. No bounds
    are checked: the caller sizes every array.
    """
    return _tile_intrinsic(MR, VECTORS, False, a, a_off, b, b_off, depth, init,
                           init_off, c, c_off, ldc, accumulate)


@intrinsic
def tile_product_half(typingctx, a, a_off, b, b_off, depth, init, init_off, c, c_off,
                      ldc, accumulate):
    """``tile_product`` for rows r < HALF_MR only (a still has MR per step)."""
    return _tile_intrinsic(HALF_MR, VECTORS, False, a, a_off, b, b_off, depth, init,
                           init_off, c, c_off, ldc, accumulate)


@intrinsic
def tile_product_narrow(typingctx, a, a_off, b, b_off, depth, init, init_off, c, c_off,
                        ldc, accumulate):
    """``tile_product`` for columns j < NARROW_NR only (b still has NR per step)."""
    return _tile_intrinsic(MR, NARROW_VECTORS, False, a, a_off, b, b_off, depth, init,
                           init_off, c, c_off, ldc, accumulate)


@intrinsic
def tile_product_half_narrow(typingctx, a, a_off, b, b_off, depth, init, init_off, c,
                             c_off, ldc, accumulate):
    """``tile_product`` for rows r < HALF_MR and columns j < NARROW_NR only."""
    return _tile_intrinsic(HALF_MR, NARROW_VECTORS, False, a, a_off, b, b_off, depth,
                           init, init_off, c, c_off, ldc, accumulate)


@intrinsic
def tile_product_rows(typingctx, a, a_off, b, b_off, offsets, offsets_off, depth,
                      init, init_off, c, c_off, ldc, accumulate):
    """As ``tile_product``, with step p reading b[b_off + offsets[offsets_off + p] + j].

    The input read where it lies: offsets[ci*K + k] = ci*L + k*d.
    """
    return _tile_intrinsic(MR, VECTORS, True, a, a_off, b, b_off, offsets, offsets_off,
                           depth, init, init_off, c, c_off, ldc, accumulate)


@intrinsic
def tile_product_rows_half(typingctx, a, a_off, b, b_off, offsets, offsets_off, depth,
                           init, init_off, c, c_off, ldc, accumulate):
    """``tile_product_rows`` for rows r < HALF_MR only."""
    return _tile_intrinsic(HALF_MR, VECTORS, True, a, a_off, b, b_off, offsets,
                           offsets_off, depth, init, init_off, c, c_off, ldc,
                           accumulate)


@intrinsic
def prefetch(typingctx, a, offset):
    """Ask for the cache line of element ``offset`` of the C-contiguous array
    ``a`` to be brought into L2. A hint only: it reads nothing the program
    sees and never faults."""
    sig = types.void(a, offset)

    def codegen(context, builder, signature, args):
        pointer = _start(context, builder, signature.args[0], *args)
        i8 = ir.IntType(8).as_pointer()
        hint = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8, _I32, _I32, _I32]),
            "llvm.prefetch.p0")
        # A read (0), kept in the outer caches (locality 2), of data (1).
        builder.call(hint, [builder.bitcast(pointer, i8), _const32(0), _const32(2),
                            _const32(1)])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def load_row(typingctx, x, x_off, stride, lo, hi, dst, dst_off):
    """dst[dst_off + j] = x[x_off + j*stride] for lo <= j < hi, and 0 for the
    other j < NR.

    One row of a packed column panel: masked vector loads at stride 1 and 2
    (two vectors, their even lanes kept), a masked gather at others. Nothing
    outside [lo, hi) is read, so x_off may lie before the start of x. Offsets
    in elements from the start of each C-contiguous array; no bounds are
    checked.
    """
    sig = types.void(x, x_off, stride, lo, hi, dst, dst_off)

    def codegen(context, builder, signature, args):
        x_, x_off_, s_, lo_, hi_, d_, d_off_ = args
        x_type, d_type = signature.args[0], signature.args[5]
        V = _Vectors(context, builder, x_type.dtype, VECTOR_BYTES)
        X = builder.gep(context.make_array(x_type)(context, builder, x_).data, [x_off_])
        D = _start(context, builder, d_type, d_, d_off_)
        pointers = ir.VectorType(V.elem.as_pointer(), V.lanes)
        gather = cgutils.get_or_insert_function(
            builder.module,
            ir.FunctionType(V.type, [pointers, _I32,
                                     ir.VectorType(ir.IntType(1), V.lanes), V.type]),
            "llvm.masked.gather.v%d%s.v%dp0"
            % (V.lanes, "f32" if V.align == 4 else "f64", V.lanes))

        def masked(first, low, high):
            """The vector at element ``first`` of x's row, lanes i with
            low <= i < high only."""
            return V.load_masked(builder.gep(X, [first]), V.between(0, low, high))

        def contiguous(v):
            base = v * V.lanes
            return masked(_const(base), builder.sub(lo_, _const(base)),
                          builder.sub(hi_, _const(base)))

        def pairs(v):
            # Columns c = base + i read elements 2c of the row: two vectors of
            # consecutive elements, the even lanes kept. Element e is read
            # when 2*lo <= e <= 2*(hi - 1).
            base = 2 * v * V.lanes
            low = builder.sub(builder.mul(lo_, _const(2)), _const(base))
            high = builder.sub(builder.mul(hi_, _const(2)), _const(base + 1))
            first = masked(_const(base), low, high)
            second = masked(_const(base + V.lanes),
                            builder.sub(low, _const(V.lanes)),
                            builder.sub(high, _const(V.lanes)))
            evens = ir.Constant(ir.VectorType(_I32, V.lanes),
                                list(range(0, 2 * V.lanes, 2)))
            return builder.shuffle_vector(first, second, evens)

        def gathered(v):
            mask = V.between(v * V.lanes, lo_, hi_)
            where = ir.Constant(pointers, ir.Undefined)
            for i in range(V.lanes):
                lane = builder.gep(X, [builder.mul(s_, _const(v * V.lanes + i))])
                where = builder.insert_element(where, lane, _const32(i))
            return builder.call(gather, [where, _const32(V.align), mask, V.zero])

        def emit(load):
            for v in range(VECTORS):
                V.store(load(v), builder.gep(D, [_const(v * V.lanes)]))

        with builder.if_else(builder.icmp_signed("==", s_, _const(1))) as (one, other):
            with one:
                emit(contiguous)
            with other:
                pair = builder.icmp_signed("==", s_, _const(2))
                with builder.if_else(pair) as (two, more):
                    with two:
                        emit(pairs)
                    with more:
                        emit(gathered)
        return context.get_dummy_value()

    return sig, codegen


# A panel's input rows are prefetched this many panels before their turn: the
# hardware prefetchers do not follow C_in/g rows read a few cache lines at a
# time, and without the hint every panel waits for its rows. resnet1d-like
# layers (32 x 64 -> 64, K=3, L=1024, float32, forward kernel only, medians of
# 15, ms): no hint 5.5-5.6, 1 panel ahead 5.7-5.9, 2 panels 4.3-4.4,
# 4 panels 4.3-4.4; a panel kept packed in L1 for all of them (no input
# traffic at all) 4.2-4.3. Prefetching the output's lines did not help.
PREFETCH_PANELS = 2
LINE_BYTES = 64


@njit(inline="always", **SERIAL_JIT_OPTIONS)
def prefetch_rows(x, row0, rows, first, count):
    """``prefetch`` positions [first, first + count) of rows row0 .. row0 + rows - 1
    of x (N, C, L) viewed as N*C rows, one hint per cache line; positions
    outside a row are skipped."""
    L = x.shape[2]
    step = LINE_BYTES // x.itemsize
    lo = max(first, 0)
    hi = min(first + count, L)
    if lo >= hi:
        return
    for r in range(rows):
        base = (row0 + r) * L
        for t in range(lo, hi + step - 1, step):
            prefetch(x, base + min(t, hi - 1))


# The stride-1 weight gradient's tile: DOT_ROWS output channels x DOT_TAPS taps,
# each a vector of partial sums along t. A step of one vector of positions
# loads DOT_ROWS + DOT_TAPS vectors for DOT_ROWS * DOT_TAPS multiply-adds. With
# AVX2's 16 registers, 4 x 3 vectors of 256 bits: 12 accumulators cover the
# fused multiply-add's latency on two ports (512-bit vectors in that tile
# were no faster on Zen 4). With AVX-512's 32 registers, 6 x 4 vectors of 512
# bits (24 accumulators, 10 loads a step); against 4 x 3 x 256 bits (Sapphire
# Rapids, weight gradient through the public function, float32, medians of 9,
# interleaved, ms): wide 18.6 / 14.2, resnet1d 5.2 / 4.3, ecg_first
# 35.0 / 28.6, textcnn 13.1 / 10.6, wavenet_dil 6.8 / 6.1, w2v_first (phases)
# 3.9 / 3.4, the rest level; float64 resnet1d 9.2 / 7.0, tcn 5.3 / 5.1.
# 4 x 6, 5 x 4, 6 x 3, 6 x 5, 7 x 4, 8 x 3 and 12 x 2 tiles of 512 bits were
# slower than 6 x 4 on wide and textcnn.
if AVX512:
    DOT_ROWS, DOT_TAPS, DOT_VECTOR_BYTES = 6, 4, 64
else:
    DOT_ROWS, DOT_TAPS, DOT_VECTOR_BYTES = 4, 3, 32


def _emit_dots(context, builder, arg_types, shape, width, g, g_rows, g_rows_off, x,
               x_off, taps, taps_off, length, count, g_step, x_step, part, part_off,
               ldp):
    """LLVM code of one weight-gradient tile of ``shape`` = (rows, taps), on
    vectors of ``width`` bytes (see ``dot_tile``)."""
    n_rows, n_taps = shape
    V = _Vectors(context, builder, arg_types["g"].dtype, width)
    G = _start(context, builder, arg_types["g"], g, _const(0))
    X = _start(context, builder, arg_types["x"], x, x_off)
    P = _start(context, builder, arg_types["part"], part, part_off)
    R = _start(context, builder, arg_types["g_rows"], g_rows, g_rows_off)
    T = _start(context, builder, arg_types["taps"], taps, taps_off)
    row_starts = [builder.load(builder.gep(R, [_const(r)])) for r in range(n_rows)]
    tap_starts = [builder.load(builder.gep(T, [_const(q)])) for q in range(n_taps)]
    steps = builder.sdiv(length, _const(V.lanes))
    tail = builder.mul(steps, _const(V.lanes))
    rest = builder.sub(length, tail)

    def sample(s, accs):
        rows = [builder.gep(G, [builder.add(start, builder.mul(s, g_step))])
                for start in row_starts]
        cols = [builder.gep(X, [builder.add(start, builder.mul(s, x_step))])
                for start in tap_starts]

        def tile_step(load, accs):
            xs = [load(c) for c in cols]
            updated = []
            for r in range(n_rows):
                gv = load(rows[r])
                for q in range(n_taps):
                    updated.append(V.fma(gv, xs[q], accs[r * n_taps + q]))
            return updated

        def step(i, accs):
            t = builder.mul(i, _const(V.lanes))
            return tile_step(lambda base: V.load(builder.gep(base, [t])), accs)

        looped = _counted_loop(builder, steps, accs, step, "dots")
        # The last length % V positions: one step of masked loads.
        before = builder.block
        with builder.if_then(builder.icmp_signed(">", rest, _const(0))):
            finished = tile_step(
                lambda base: V.load_first(builder.gep(base, [tail]), rest), looped
            )
            tail_block = builder.block
        return _merge(builder, [(looped, before), (finished, tail_block)])

    totals = _counted_loop(builder, count, [V.zero] * (n_rows * n_taps), sample,
                           "samples")
    for i, total in enumerate(V.lane_sums(totals)):
        r, q = divmod(i, n_taps)
        slot = builder.gep(P, [builder.add(builder.mul(ldp, _const(r)), _const(q))])
        builder.store(builder.fadd(builder.load(slot), total), slot)


@intrinsic
def dot_tile(typingctx, g, g_rows, g_rows_off, x, x_off, taps, taps_off, length, count,
             g_step, x_step, part, part_off, ldp):
    """part[part_off + r*ldp + q] += sum_{s < count} sum_{t < length}
    g[rows[r] + s*g_step + t] * x[x_off + taps[q] + s*x_step + t]

    for r < DOT_ROWS and q < DOT_TAPS, with rows[r] = g_rows[g_rows_off + r] and
    taps[q] = taps[taps_off + q]: ``count`` rows of ``length`` positions, one
    per sample. Each sum runs in the V lanes of a vector of DOT_VECTOR_BYTES
    (the last length % V positions of a row by masked loads) and is
    then added over the lanes in a fixed tree. All arrays 1D and C-contiguous;
    no bounds are checked.
    """
    return _dots_intrinsic((DOT_ROWS, DOT_TAPS), DOT_VECTOR_BYTES, g, g_rows,
                           g_rows_off, x, x_off, taps, taps_off, length, count, g_step,
                           x_step, part, part_off, ldp)


def _dots_intrinsic(shape, width, *arg_types):
    sig = types.void(*arg_types)

    def codegen(context, builder, signature, args):
        names = ("g", "g_rows", None, "x", None, "taps", None, None, None, None, None,
                 "part")
        types_by_name = {n: t for n, t in zip(names, signature.args) if n}
        _emit_dots(context, builder, types_by_name, shape, width, *args)
        return context.get_dummy_value()

    return sig, codegen


# Depthwise layers (one input and one output channel per group): the weight
# gradient of a channel is one row of sums over DW_TAPS taps at a time (8
# accumulators cover the multiply-add latency; 9 loads per 8 multiply-adds),
# and the forward pass keeps DW_VECTORS vectors of one output row in
# registers while it walks the taps, so each input vector loaded feeds one
# multiply-add and the output is stored once.
DW_TAPS = 8
DW_VECTORS = 12
DW_SHARED = 4
# A row's last, partial tile runs as tiles of DW_NARROW vectors (Conformer's
# rows of 1024 float32 outputs end in 64 of a tile's 192), and a work item
# takes DW_ROWS_PER_ITEM rows, so that their scratch is allocated once.
# conformer_dw's forward kernel (Sapphire Rapids, 2 threads, interleaved,
# medians of 21, ms, before / after): narrow tiles only, float32 3.51 / 3.20,
# float64 5.59 / 5.25; both, float32 3.80 / 3.16, float64 4.73 / 4.04; the
# Mamba-like layer (8 x 1536 rows of 2048, K = 4) 12.5 / 12.0. Same results
# bit for bit.
DW_NARROW = 4
DW_ROWS_PER_ITEM = 8
# The depthwise tiles take the widest vectors the machine has: with AVX-512,
# against 256 bits (Zen 4, float32, medians of 11, two interleaved rounds,
# ms): conformer_dw forward 3.11-3.19 / 4.61-4.76, input gradient
# 3.41 / 4.42-4.68, weight gradient 3.76-4.18 / 5.04-6.50; mamba_dw forward
# 9.7-10.5 / 11.7-14.5; fir_long forward 2.23-2.36 / 2.79-3.84.
DW_VECTOR_BYTES = 64 if AVX512 else 32


@intrinsic
def dot_row(typingctx, g, g_rows, g_rows_off, x, x_off, taps, taps_off, length, count,
            g_step, x_step, part, part_off, ldp):
    """``dot_tile`` for one row and DW_TAPS taps."""
    return _dots_intrinsic((1, DW_TAPS), DW_VECTOR_BYTES, g, g_rows, g_rows_off, x,
                           x_off, taps, taps_off, length, count, g_step, x_step, part,
                           part_off, ldp)


# The depthwise weight gradient at dilation 1 with AVX-512 and more than one
# vector of taps: tap q = k + m*V (offset k within a vector, m < DW_SHARED)
# reads x[t + k + m*V] for g[t], the vector that tap k reads for
# g[t + m*V]. A tile of DW_OFFSETS[M] offsets x M groups of taps walks
# DW_SPAN vectors of g per step and loads each vector of x once for all the
# taps it serves.
DW_SPAN = 4
DW_OFFSETS = (0, 0, 8, 5, 4)


def _emit_shared_dots(context, builder, arg_types, groups, g, g_off, x, x_off, length,
                      k0, part, part_off):
    V = _Vectors(context, builder, arg_types["g"].dtype, DW_VECTOR_BYTES)
    G = _start(context, builder, arg_types["g"], g, g_off)
    X = _start(context, builder, arg_types["x"], x, x_off)
    P = _start(context, builder, arg_types["part"], part, part_off)
    offsets = DW_OFFSETS[groups]
    X = builder.gep(X, [k0])
    stride = DW_SPAN * V.lanes

    def step(s, accs):
        t = builder.mul(s, _const(stride))
        gs = [V.load(builder.gep(G, [builder.add(t, _const(j * V.lanes))]))
              for j in range(DW_SPAN)]
        updated = list(accs)
        for i in range(offsets):
            for p in range(DW_SPAN + groups - 1):
                xv = V.load(builder.gep(X, [builder.add(t, _const(p * V.lanes + i))]))
                for j in range(DW_SPAN):
                    m = p - j
                    if 0 <= m < groups:
                        slot = i * groups + m
                        updated[slot] = V.fma(gs[j], xv, updated[slot])
        return updated

    steps = builder.sdiv(length, _const(stride))
    totals = _counted_loop(builder, steps, [V.zero] * (offsets * groups), step, "shared")
    for slot, total in enumerate(V.lane_sums(totals)):
        target = builder.gep(P, [_const(slot)])
        builder.store(builder.fadd(builder.load(target), total), target)


def _shared_dots_intrinsic(groups):
    def shared_dots(typingctx, g, g_off, x, x_off, length, k0, part, part_off):
        sig = types.void(g, g_off, x, x_off, length, k0, part, part_off)

        def codegen(context, builder, signature, args):
            arg_types = dict(g=signature.args[0], x=signature.args[2],
                             part=signature.args[6])
            _emit_shared_dots(context, builder, arg_types, groups, *args)
            return context.get_dummy_value()

        return sig, codegen

    shared_dots.__doc__ = (
        """part[part_off + i*M + m] += sum_{t < length} g[g_off + t] * x[x_off + t + k0 + i + m*V]

        for i < DW_OFFSETS[M] and m < M = %d, V lanes per vector of
        DW_VECTOR_BYTES, length a multiple of DW_SPAN * V. Reads x up to
        x_off + length + k0 + DW_OFFSETS[M] + (M - 1)*V + V - 2. All arrays 1D
        and C-contiguous; no bounds are checked.""" % groups)
    return intrinsic(shared_dots)


shared_dots_2 = _shared_dots_intrinsic(2)
shared_dots_3 = _shared_dots_intrinsic(3)
shared_dots_4 = _shared_dots_intrinsic(4)


@intrinsic
def row_tile(typingctx, w, w_off, K, dilation, x, x_off, c, c_off, init):
    """c[c_off + j] = init + sum_{k < K} w[w_off + k] * x[x_off + k*dilation + j]

    for j < DW_VECTORS * V (V lanes per vector of DW_VECTOR_BYTES), summed
    with fused multiply-adds. At dilation 1 with AVX-512 and K <= DW_SHARED *
    V, the taps are taken by their offset within a vector: taps k, k + V,
    k + 2V, ... read the same vectors of x, each loaded once for all of them
    (each output sums its taps in that order); otherwise tap after tap. Reads
    x[x_off : x_off + DW_VECTORS*V + (K-1)*dilation] only. All arrays 1D and
    C-contiguous; no bounds are checked.
    """
    sig = types.void(w, w_off, K, dilation, x, x_off, c, c_off, init)
    return sig, _row_tile_codegen(DW_VECTORS)


@intrinsic
def row_tile_narrow(typingctx, w, w_off, K, dilation, x, x_off, c, c_off, init):
    """``row_tile`` for DW_NARROW vectors of outputs."""
    sig = types.void(w, w_off, K, dilation, x, x_off, c, c_off, init)
    return sig, _row_tile_codegen(DW_NARROW)


def _row_tile_codegen(n_vectors):
    """The code of ``row_tile`` for ``n_vectors`` vectors of outputs."""

    def codegen(context, builder, signature, args):
        w_, w_off_, K_, d_, x_, x_off_, c_, c_off_, init_ = args
        w_type, x_type, c_type = signature.args[0], signature.args[4], signature.args[6]
        V = _Vectors(context, builder, w_type.dtype, DW_VECTOR_BYTES)
        W = _start(context, builder, w_type, w_, w_off_)
        X = _start(context, builder, x_type, x_, x_off_)
        C = _start(context, builder, c_type, c_, c_off_)
        lanes = _const(V.lanes)
        starts = [V.splat(init_)] * n_vectors

        def tap(k, accs):
            weight = V.splat(builder.load(builder.gep(W, [k])))
            base = builder.gep(X, [builder.mul(k, d_)])
            return [V.fma(weight, V.load(builder.gep(base, [_const(v * V.lanes)])), acc)
                    for v, acc in enumerate(accs)]

        def offset(k, accs):
            # Taps k + m*V for m < reach, each vector of x loaded once.
            reach = builder.sdiv(builder.add(builder.sub(K_, k), _const(V.lanes - 1)),
                                 lanes)
            base = builder.gep(X, [k])
            vectors = []
            for p in range(n_vectors + DW_SHARED - 1):
                where = builder.gep(base, [_const(p * V.lanes)])
                if p < n_vectors:
                    vectors.append(V.load(where))
                    continue
                # Needed by taps m > p - n_vectors only.
                wanted = builder.icmp_signed(">", reach, _const(p - n_vectors + 1))
                vectors.append(V.load_masked(where, V.splat(wanted)))
            for m in range(DW_SHARED):
                def taps_m(accs, m=m):
                    q = builder.add(k, _const(m * V.lanes))
                    weight = V.splat(builder.load(builder.gep(W, [q])))
                    return [V.fma(weight, vectors[j + m], acc)
                            for j, acc in enumerate(accs)]
                if m == 0:
                    accs = taps_m(accs)
                    continue
                before = builder.block
                with builder.if_then(builder.icmp_signed(">", reach, _const(m))):
                    updated = taps_m(accs)
                    then_block = builder.block
                accs = _merge(builder, [(updated, then_block), (accs, before)])
            return accs

        shared = AVX512 and DW_SHARED > 0
        if shared:
            fits = builder.and_(
                builder.icmp_signed("==", d_, _const(1)),
                builder.icmp_signed("<=", K_, _const(DW_SHARED * V.lanes)))
            with builder.if_else(fits) as (by_offset, by_tap):
                with by_offset:
                    count = builder.select(builder.icmp_signed("<", K_, lanes), K_, lanes)
                    first = _counted_loop(builder, count, starts, offset, "offsets")
                    first_block = builder.block
                with by_tap:
                    second = _counted_loop(builder, K_, starts, tap, "row")
                    second_block = builder.block
            results = _merge(builder, [(first, first_block), (second, second_block)])
        else:
            results = _counted_loop(builder, K_, starts, tap, "row")
        for v, value in enumerate(results):
            V.store(value, builder.gep(C, [_const(v * V.lanes)]))
        return context.get_dummy_value()

    return codegen


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
def pack_panel(x, n, c0, C_in_g, K, first, m, stride, dilation, shift, dst, dst_off):
    """dst[dst_off + (ci*K + k)*NR + c] = xz[n, c0 + ci, (first + c)*s + k*d - shift]

    for c < NR: zero where that position lies outside x or first + c >= m
    (the block's end, in the same coordinates as first). x : (N, C_in, L).
    """
    L = x.shape[2]
    nr = VECTORS * VECTOR_BYTES // x.itemsize
    width = min(nr, m - first)
    for ci in range(C_in_g):
        row = (n * x.shape[1] + c0 + ci) * L
        for k in range(K):
            u0 = first * stride + k * dilation - shift
            # Columns [lo, hi) read x: 0 <= u0 + c*s < L.
            lo = max(0, -(u0 // stride))
            hi = max(lo, min(width, (L - u0 + stride - 1) // stride))
            load_row(x, row + u0, stride, lo, hi, dst, dst_off + (ci * K + k) * nr)


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
    if rows % MR == HALF_MR:
        whole_rows = rows
    whole_cols = m - m % nr
    for r in range(rows):
        first = whole_cols if r < whole_rows else 0
        orow = out[n, co0 + r]
        arow = acc[r]
        for t in range(first, m):
            orow[t0 + t] = arow[t]


@njit(**JIT_OPTIONS)
def forward_kernel(x, shift, ap, bias_rows, groups, K, stride, dilation, block, chunk,
                   width, out):
    """out[n, co, t] = bias[co] + sum_{ci, k} weight[co, ci, k] * xz[n, c(ci), u].

    u = t*s + k*d - shift, xz as in ``pack_panel``; ap = ``pack_weight`` of
    weight and bias_rows = ``pack_bias`` of bias. x : (N, C_in, L);
    out : (N, C_out, L_out), fully overwritten; block : positions per work
    item, a multiple of NR; chunk : depth steps per pass over a panel; width :
    0 to read x in place, else (stride 1 only, width >= block + (K-1)*d) the
    length of the rows of a scratch copy that each item reads instead (see
    ``gather_width``).
    """
    N, _, L_out = out.shape
    rows = panel_rows(ap.shape[2], K, dilation, width if width > 0 else x.shape[2])
    blocks = (L_out + block - 1) // block
    for item in prange(N * blocks):
        n = item // blocks
        t0 = (item - n * blocks) * block
        forward_item(x, shift, ap, bias_rows, groups, K, stride, dilation, chunk, width,
                     rows, n, t0, min(block, L_out - t0), out)


@njit(**SERIAL_JIT_OPTIONS)
def panel_rows(depth, K, dilation, row_length):
    """Where step p = ci*K + k of a panel reads, from the panel's first column
    in row c0: ci * row_length + k * dilation."""
    rows = np.empty(depth, dtype=np.int64)
    for p in range(depth):
        ci = p // K
        rows[p] = ci * row_length + (p - ci * K) * dilation
    return rows


@njit(**SERIAL_JIT_OPTIONS)
def forward_item(x, shift, ap, bias_rows, groups, K, stride, dilation, chunk, width,
                 rows, n, t0, m, out):
    """Positions [t0, t0 + m) of sample n of ``forward_kernel``'s out, on one
    thread; rows = ``panel_rows``, width 0 or at least m + (K-1)*d."""
    N, C_out, L_out = out.shape
    _, row_tiles, depth, _ = ap.shape
    C_in = x.shape[1]
    L = x.shape[2]
    C_in_g = C_in // groups
    C_out_g = C_out // groups
    nr = VECTORS * VECTOR_BYTES // out.itemsize
    narrow_cols = NARROW_VECTORS * VECTOR_BYTES // out.itemsize
    xflat = x.reshape(x.size)
    panels = (m + nr - 1) // nr
    if width > 0:
        # Every panel reads the copy, which holds the zeros past x's ends.
        lo, hi = 0, panels
    elif stride == 1:
        lo, hi = interior_panels(t0, m, nr, (K - 1) * dilation, shift, L)
    else:
        lo, hi = 0, 0
    copy = np.empty(C_in_g * width, dtype=out.dtype)
    # Only the panels outside [lo, hi) are packed: panel j is bp[j] below
    # lo and bp[j - (hi - lo)] from hi on.
    bp = np.empty((panels - (hi - lo), depth, nr), dtype=out.dtype)
    # Partial tiles go to acc (3D, like out, so either can take a tile);
    # whole ones straight to out.
    ldc = panels * nr
    acc = np.empty((1, row_tiles * MR, ldc), dtype=out.dtype)
    for g in range(groups):
        for j in range(panels):
            if j < lo or j >= hi:
                pack_panel(x, n, g * C_in_g, C_in_g, K, t0 + j * nr, t0 + m,
                           stride, dilation, shift, bp,
                           (j if j < lo else j - (hi - lo)) * depth * nr)
        if width > 0:
            direct._gather(x, n, g * C_in_g, C_in_g, t0 - shift, width, copy)
            src = copy
            x_off = 0
        else:
            src = xflat
            x_off = (n * C_in + g * C_in_g) * L + t0 - shift
        for p0 in range(0, depth, chunk):
            steps = min(chunk, depth - p0)
            later = p0 > 0
            # See ROWS_OUTER_BYTES.
            rows_outer = panels * steps * nr * out.itemsize <= ROWS_OUTER_BYTES
            for w in range(panels * row_tiles):
                if rows_outer:
                    i = w // panels
                    j = w - i * panels
                else:
                    j = w // row_tiles
                    i = w - j * row_tiles
                if i == 0 and width == 0:
                    # The positions panel j + PREFETCH_PANELS reads first in
                    # the rows of this chunk: those past its last tap's
                    # reach are already asked for.
                    ahead = (t0 + (j + PREFETCH_PANELS) * nr) * stride
                    c_lo = p0 // K
                    c_hi = (p0 + steps + K - 1) // K
                    prefetch_rows(x, n * C_in + g * C_in_g + c_lo, c_hi - c_lo,
                                  ahead + (K - 1) * dilation - shift, nr * stride)
                a_off = ((g * row_tiles + i) * depth + p0) * MR
                b_row = g * row_tiles * MR + i * MR
                # The last tile runs at half height when its real
                # rows fit in half.
                half = C_out_g - i * MR <= HALF_MR
                height = HALF_MR if half else MR
                if i * MR + height <= C_out_g and (j + 1) * nr <= m:
                    c = out
                    c_off = ((n * C_out + g * C_out_g + i * MR) * L_out
                             + t0 + j * nr)
                    c_ld = L_out
                else:
                    c = acc
                    c_off = i * MR * ldc + j * nr
                    c_ld = ldc
                if lo <= j < hi:
                    if half:
                        tile_product_rows_half(
                            ap, a_off, src, x_off + j * nr, rows, p0, steps,
                            bias_rows, b_row, c, c_off, c_ld, later)
                    else:
                        tile_product_rows(
                            ap, a_off, src, x_off + j * nr, rows, p0, steps,
                            bias_rows, b_row, c, c_off, c_ld, later)
                else:
                    b_off = ((j if j < lo else j - (hi - lo)) * depth + p0) * nr
                    # A last panel of at most half its columns, which
                    # is never interior, takes the narrow tiles.
                    narrow = m - j * nr <= narrow_cols
                    if half and narrow:
                        tile_product_half_narrow(ap, a_off, bp, b_off, steps,
                                                 bias_rows, b_row, c, c_off,
                                                 c_ld, later)
                    elif half:
                        tile_product_half(ap, a_off, bp, b_off, steps,
                                          bias_rows, b_row, c, c_off, c_ld,
                                          later)
                    elif narrow:
                        tile_product_narrow(ap, a_off, bp, b_off, steps,
                                            bias_rows, b_row, c, c_off, c_ld,
                                            later)
                    else:
                        tile_product(ap, a_off, bp, b_off, steps, bias_rows,
                                     b_row, c, c_off, c_ld, later)
        copy_edges(acc[0], n, g * C_out_g, C_out_g, t0, m, out)


@njit(**JIT_OPTIONS)
def depthwise_kernel(x, shift, weight, bias, dilation, out):
    """out[n, c, t] = bias[c] + sum_k weight[c, 0, k] * xz[n, c, t + k*d - shift].

    A depthwise stride-1 forward pass on ``row_tile``, DW_VECTORS vectors of
    outputs at a time: tiles whose window lies inside x read it in place, the
    others a zero-padded copy of their window. A row's last, partial tile
    runs as tiles of DW_NARROW vectors, as many as it needs. The rows are
    taken DW_ROWS_PER_ITEM at a time, sharing their scratch. x : (N, C, L);
    weight : (C, 1, K); out : (N, C, L_out), fully overwritten.
    """
    N, C, L_out = out.shape
    L = x.shape[2]
    K = weight.shape[2]
    span = (K - 1) * dilation
    width = DW_VECTORS * DW_VECTOR_BYTES // out.itemsize
    narrow = DW_NARROW * DW_VECTOR_BYTES // out.itemsize
    tiles = -(-L_out // width)
    lo, hi = interior_panels(0, L_out, width, span, shift, L)
    wflat = weight.reshape(weight.size)
    oflat = out.reshape(out.size)
    xflat = x.reshape(x.size)
    rows = N * C
    items = -(-rows // DW_ROWS_PER_ITEM)
    for part in prange(items):
        window = np.empty(width + span, dtype=out.dtype)
        last = np.empty(width, dtype=out.dtype)
        first = part * DW_ROWS_PER_ITEM
        for item in range(first, min(rows, first + DW_ROWS_PER_ITEM)):
            n = item // C
            c = item - n * C
            base = item * L_out
            for i in range(tiles):
                t0 = i * width
                if lo <= i < hi:
                    row_tile(wflat, c * K, K, dilation, xflat, item * L + t0 - shift,
                             oflat, base + t0, bias[c])
                    continue
                if t0 + width <= L_out:
                    direct._gather(x, n, c, 1, t0 - shift, width + span, window)
                    row_tile(wflat, c * K, K, dilation, window, 0, oflat, base + t0,
                             bias[c])
                    continue
                rest = L_out - t0
                reach = -(-rest // narrow) * narrow
                direct._gather(x, n, c, 1, t0 - shift, reach + span, window)
                for j0 in range(0, reach, narrow):
                    row_tile_narrow(wflat, c * K, K, dilation, window, j0, last, j0,
                                    bias[c])
                for j in range(rest):
                    oflat[base + t0 + j] = last[j]


@njit(**JIT_OPTIONS)
def depthwise_weight_kernel(x, shift, grad_output, dilation, out, bias_out):
    """out[c, 0, k] = sum_{n, t} grad_output[n, c, t] * xz[n, c, t + k*d - shift].

    The depthwise stride-1 weight gradient: one thread per channel, samples in
    order, so the result does not depend on the thread count. Kernels of 2 to
    DW_SHARED vectors of taps at dilation 1 (with AVX-512) run the bulk of each
    row on ``shared_dots_*`` and the rest on ``dot_row``; others on ``dot_row``.
    x : (N, C, L); grad_output : (N, C, L_out); out : (C, 1, K). bias_out :
    (C,), the sums of grad_output over n and t (in the order of
    ``numconv._kernels.common.grad_bias``), or empty for none.
    """
    N, C, L_out = grad_output.shape
    K = out.shape[2]
    Kp = -(-K // DW_TAPS) * DW_TAPS
    V = DW_VECTOR_BYTES // out.itemsize
    M = -(-K // V)
    shared = AVX512 and dilation == 1 and 2 <= M <= DW_SHARED
    G = DW_OFFSETS[M] if shared else 1
    span = DW_SPAN * V
    bulk = L_out - L_out % span if shared else 0
    blocks = -(-V // G)
    row_len = L_out + (K - 1) * dilation
    # Zeros past the row for the shared tiles' taps beyond K, whose sums are
    # never read.
    padded = row_len + (M * V + G if shared else 0)
    gflat = grad_output.reshape(grad_output.size)
    for c in prange(C):
        part = np.zeros(Kp, dtype=out.dtype)
        tiles = np.zeros(blocks * G * M if shared else 1, dtype=out.dtype)
        row = np.empty(padded, dtype=out.dtype)
        rows = np.empty(1, dtype=np.int64)
        # Padding taps repeat the last real one; their sums are never read.
        taps = np.empty(Kp, dtype=np.int64)
        for p in range(Kp):
            taps[p] = min(p, K - 1) * dilation
        bias_total = out.dtype.type(0)
        for n in range(N):
            direct._gather(x, n, c, 1, -shift, padded, row)
            start = (n * C + c) * L_out
            if bulk > 0:
                for b in range(blocks):
                    if M == 2:
                        shared_dots_2(gflat, start, row, 0, bulk, b * G, tiles,
                                      b * G * M)
                    elif M == 3:
                        shared_dots_3(gflat, start, row, 0, bulk, b * G, tiles,
                                      b * G * M)
                    else:
                        shared_dots_4(gflat, start, row, 0, bulk, b * G, tiles,
                                      b * G * M)
            if bulk < L_out:
                rows[0] = start + bulk
                for q in range(0, Kp, DW_TAPS):
                    dot_row(gflat, rows, 0, row, bulk, taps, q, L_out - bulk, 1, 0, 0,
                            part, q, Kp)
            if bias_out.shape[0] > 0:
                # The row is in cache now, after the dot products.
                bias_total += common.blocked_sum(gflat[start : start + L_out])
        for k in range(K):
            total = part[k]
            if shared:
                # Tap k is offset k % V of tap group k // V.
                total += tiles[(k % V) * M + k // V]
            out[c, 0, k] = total
        if bias_out.shape[0] > 0:
            bias_out[c] = bias_total


def _depthwise(weight, groups):
    """True for one input and one output channel per group."""
    return weight.shape[0] == groups and weight.shape[1] == 1


def supports(spec, op):
    """Specs with at least one input and output channel per group.

    Both gradients at stride > 1 are ``gemm``'s, with its limits, except
    where a phase form takes them (d = 1, see ``POLYPHASE``, ``PADDED_TAPS``
    and ``PHASEWISE``).
    """
    if spec.C_in_per_group * spec.K == 0 or spec.C_out_per_group == 0:
        return False
    if op != "forward" and spec.stride > 1:
        if op in POLYPHASE and _polyphase.rewrites(spec, op in PADDED_TAPS):
            return True
        if op in PHASEWISE and spec.dilation == 1:
            return True
        return shifted.supports(spec, op)
    return True


def pack_bias(bias, groups, row_tiles):
    """bias (C_out,) -> (groups * row_tiles * MR,): each group's rows, zero-padded."""
    C_out_g = bias.shape[0] // groups
    rows = np.zeros((groups, row_tiles * MR), dtype=bias.dtype)
    rows[:, :C_out_g] = bias.reshape(groups, C_out_g)
    return rows.reshape(-1)


def forward_block(N, L_out, depth, dtype):
    """Positions per work item: a multiple of NR, with ``im2col``'s budget for
    a block's columns (so that the packed border panels and the edge scratch
    stay small even when every panel is packed, at stride > 1), splitting
    small batches across threads."""
    nr = panel_width(dtype)
    itemsize = np.dtype(dtype).itemsize
    block = im2col.cols_block(N, L_out, depth, itemsize)
    return max(nr, block - block % nr)


def forward_shifted(x, shift, weight, bias, groups, dilation, out):
    """Stride-1 forward pass of x zero-padded by ``shift`` on the left, no copy."""
    if _depthwise(weight, groups):
        depthwise_kernel(x, shift, weight, bias, dilation, out)
    else:
        _forward(x, shift, weight, bias, groups, 1, dilation, out)


def forward(xp, weight, bias, groups, stride, dilation, out):
    """Forward pass; the family's entry point (see ``numconv._dispatch``).

    xp : (N, C_in, L_padded); weight : (C_out, C_in/groups, K); bias : (C_out,);
    out : (N, C_out, L_out), fully overwritten.
    """
    if stride == 1:
        forward_shifted(xp, 0, weight, bias, groups, dilation, out)
    else:
        _forward(xp, 0, weight, bias, groups, stride, dilation, out)


def _forward(x, shift, weight, bias, groups, stride, dilation, out):
    N, C_out, L_out = out.shape
    _, C_in_g, K = weight.shape
    ap = pack_weight(weight, groups)
    bias_rows = pack_bias(bias, groups, ap.shape[1])
    block = forward_block(N, L_out, C_in_g * K, out.dtype)
    chunk = DEPTH_CHUNK if ap.shape[1] > 1 else SINGLE_TILE_DEPTH_CHUNK
    width = gather_width(x.shape[2], ap.shape[1], stride, block, (K - 1) * dilation,
                         out.itemsize)
    forward_kernel(x, shift, ap, bias_rows, groups, K, stride, dilation, block, chunk,
                   width, out)


def gather_width(L, row_tiles, stride, block, span, itemsize):
    """0 to read the input rows in place, or the row length of the scratch copy
    that ``forward_kernel`` reads instead, when x's rows lie a multiple of
    GATHER_STRIDE_BYTES apart (see there)."""
    if stride != 1 or row_tiles < 2 or (L * itemsize) % GATHER_STRIDE_BYTES:
        return 0
    width = block + span
    if (width * itemsize) % GATHER_STRIDE_BYTES == 0:
        width += LINE_BYTES // itemsize
    return width


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


@njit(**JIT_OPTIONS)
def dots_kernel(x, shift, grad_output, groups, K, dilation, T, S, chunks, partial,
                block_sums, ap, gi_bias, gi_chunk, gi_width, gi_rows, gi_out):
    """partial[g*chunks + c, r*Mp + p] = chunk c's share of gW[g*C_out_g + r].ravel()[p].

    Stride-1 weight gradient of x zero-padded by ``shift`` on the left, on
    ``dot_tile``. partial : (groups * chunks, Rp * Mp), C_out/g rounded up to
    Rp, a multiple of DOT_ROWS, and C_in/g * K rounded up to Mp, a multiple of
    DOT_TAPS; fully overwritten. A unit is a block of T positions of S
    consecutive samples (S > 1 only when T covers the whole row); the units
    are cut into ``chunks`` runs, each summed in order by one thread.
    block_sums : (N, C_out, ceil(L_out / SUM_BLOCK)), the ``common.block_sum``
    of each block of each output-gradient row, or empty for none; T must then
    be a multiple of SUM_BLOCK or cover the row.

    gi_out : (N, C_in, L_out + (K-1)*d), or empty for none (groups 1 only):
    also the input gradient of every zero-padded position, each unit's
    positions while its output-gradient rows are in cache, on ``forward_item``
    (the last unit of a row takes the row's last (K-1)*d positions too).
    ap, gi_bias, gi_chunk, gi_width and gi_rows are what ``forward_kernel``
    would get for that forward correlation (see ``backward_shifted``).
    """
    N, C_out, L_out = grad_output.shape
    C_in, L = x.shape[1], x.shape[2]
    C_in_g = C_in // groups
    C_out_g = C_out // groups
    M = C_in_g * K
    items, size = partial.shape
    Rp = -(-C_out_g // DOT_ROWS) * DOT_ROWS
    Mp = size // Rp
    span = (K - 1) * dilation
    nblocks = -(-L_out // T)
    units = -(-N // S) * nblocks
    xflat = x.reshape(x.size)
    gflat = grad_output.reshape(grad_output.size)
    for item in prange(items):
        g = item // chunks
        c = item - g * chunks
        part = partial[item]
        part[:] = 0
        scratch = np.empty(S * C_in_g * (T + span), dtype=x.dtype)
        rows = np.empty(Rp, dtype=np.int64)
        taps = np.empty(Mp, dtype=np.int64)
        for u in range(c * units // chunks, (c + 1) * units // chunks):
            n0 = (u // nblocks) * S
            count = min(S, N - n0)
            t0 = (u % nblocks) * T
            t1 = min(t0 + T, L_out)
            tl, tr = direct._interior(t0, t1, shift, span, L)
            # The rows of group g that positions [t0, t1) read: in place when
            # they lie inside x, else copied into scratch with zeros where x
            # ends, sample after sample.
            if tl == t0 and tr == t1:
                src = xflat
                src_off = (n0 * C_in + g * C_in_g) * L + t0 - shift
                width = L
                x_step = C_in * L
            else:
                width = t1 - t0 + span
                x_step = C_in_g * width
                for s in range(count):
                    direct._gather(x, n0 + s, g * C_in_g, C_in_g, t0 - shift, width,
                                   scratch[s * x_step:])
                src = scratch
                src_off = 0
            # Padding rows and taps repeat the last real one; their sums land
            # in slots the merge never reads.
            for r in range(Rp):
                rows[r] = (n0 * C_out + g * C_out_g + min(r, C_out_g - 1)) * L_out + t0
            for p in range(Mp):
                real = min(p, M - 1)
                ci = real // K
                taps[p] = ci * width + (real - ci * K) * dilation
            for i in range(0, Rp, DOT_ROWS):
                for q in range(0, Mp, DOT_TAPS):
                    dot_tile(gflat, rows, i, src, src_off, taps, q, t1 - t0, count,
                             C_out * L_out, x_step, part, i * Mp + q, Mp)
            if gi_out.shape[0] > 0:
                # Each unit writes its own positions of gi_out.
                end = t1 if t1 < L_out else gi_out.shape[2]
                for s in range(count):
                    forward_item(grad_output, span, ap, gi_bias, 1, K, 1, dilation,
                                 gi_chunk, gi_width, gi_rows, n0 + s, t0, end - t0,
                                 gi_out)
            if block_sums.shape[0] > 0:
                # The unit's rows are in cache now, after the dot products.
                for s in range(count):
                    for r in range(C_out_g):
                        co = g * C_out_g + r
                        base = ((n0 + s) * C_out + co) * L_out
                        for b0 in range(t0, t1, common.SUM_BLOCK):
                            b1 = min(b0 + common.SUM_BLOCK, t1)
                            block_sums[n0 + s, co, b0 // common.SUM_BLOCK] = (
                                common.block_sum(gflat[base + b0 : base + b1]))


@njit(**JIT_OPTIONS)
def merge_dots(partial, groups, chunks, out):
    """out[g*C_out_g + r].ravel()[p] = sum_c partial[g*chunks + c, r*Mp + p], in order."""
    C_out, C_in_g, K = out.shape
    C_out_g = C_out // groups
    M = C_in_g * K
    Rp = -(-C_out_g // DOT_ROWS) * DOT_ROWS
    Mp = partial.shape[1] // Rp
    for row in prange(C_out):
        g = row // C_out_g
        r = row - g * C_out_g
        for p in range(M):
            total = partial[g * chunks, r * Mp + p]
            for c in range(1, chunks):
                total += partial[g * chunks + c, r * Mp + p]
            ci = p // K
            out[row, ci, p - ci * K] = total


# Bytes of output-gradient and input rows that one weight-gradient unit keeps
# in L2 while every tile passes over them; a unit takes at least one
# common.SUM_BLOCK of positions, since a tile's output-gradient rows stay in
# L1 while its taps pass. Against a budget of 256 KiB and units of 256 to 4096
# positions in steps of 64 (Zen 4, float32, interleaved, medians of 9-15,
# new / old): resnet1d weight gradient 0.91-0.92; with whole blocks of
# SUM_BLOCK, wide 0.89, ecg_first 0.90, w2v_first (phases) 0.92, the rest
# level.
DOT_BYTES = 512 * 1024


def dots_block(N, C_in_g, C_out_g, L_out, itemsize):
    """(T, S): positions and samples per weight-gradient unit.

    T is a multiple of common.SUM_BLOCK up to 4096, so that the bias gradient
    can take the blocks of ``common.blocked_sum`` from the same pass, or the
    whole row. Rows shorter than the budget are taken several samples at a
    time (S of them), so that each tile's sums run long before their lanes are
    added up.
    """
    fit = DOT_BYTES // ((C_in_g + C_out_g) * itemsize)
    block = min(4096, max(common.SUM_BLOCK, fit - fit % common.SUM_BLOCK))
    if block < L_out:
        return block, 1
    return max(L_out, 1), max(1, min(N, block // max(L_out, 1)))


# Without reassociation, so that LLVM keeps the order of these sums (it
# would vectorise the loop over blocks).
ORDERED_JIT_OPTIONS = dict(JIT_OPTIONS, fastmath=set(FASTMATH - {"reassoc"}))


@njit(**ORDERED_JIT_OPTIONS)
def merge_block_sums(block_sums, out):
    """out[co] = sum over n, in order, of the sum over blocks, in order, of
    block_sums[n, co]: ``common.grad_bias``'s order."""
    N, C_out, blocks = block_sums.shape
    for co in prange(C_out):
        total = out.dtype.type(0)
        for n in range(N):
            row = out.dtype.type(0)
            for b in range(blocks):
                row += block_sums[n, co, b]
            total += row
        out[co] = total


def grad_weight(xp, grad_output, groups, stride, dilation, out):
    """Weight gradient; the family's entry point. Bitwise the same for any
    number of threads. At stride > 1 it is ``numconv._kernels.gemm``'s.

    xp : (N, C_in, L_padded); grad_output : (N, C_out, L_out);
    out : (C_out, C_in/groups, K), fully overwritten.
    """
    if stride == 1:
        grad_weight_shifted(xp, 0, grad_output, groups, dilation, out)
    else:
        shifted.grad_weight(xp, grad_output, groups, stride, dilation, out)


def grad_weight_bias_shifted(x, shift, grad_output, groups, dilation, out, bias_out):
    """``grad_weight_shifted``, and the bias gradient (C_out,) into bias_out,
    from the same reads of grad_output; bitwise ``common.grad_bias``'s."""
    if _depthwise(out, groups):
        depthwise_weight_kernel(x, shift, grad_output, dilation, out, bias_out)
        return
    N, C_out, L_out = grad_output.shape
    blocks = -(-L_out // common.SUM_BLOCK)
    block_sums = np.empty((N, C_out, blocks), dtype=out.dtype)
    _dots(x, shift, grad_output, groups, dilation, out, block_sums)
    merge_block_sums(block_sums, bias_out)


def grad_weight_shifted(x, shift, grad_output, groups, dilation, out):
    """Stride-1 weight gradient of x zero-padded by ``shift`` on the left."""
    if _depthwise(out, groups):
        no_bias = np.empty(0, dtype=out.dtype)
        depthwise_weight_kernel(x, shift, grad_output, dilation, out, no_bias)
        return
    _dots(x, shift, grad_output, groups, dilation, out,
          np.empty((0, 0, 0), dtype=out.dtype))


def fuses_backward(spec):
    """True when ``backward_shifted`` takes the stride-1 ``spec``: one group,
    not a depthwise one (whose weight gradient has a kernel of its own), and
    every size above zero."""
    return (spec.groups == 1 and spec.stride == 1 and not spec.C_in == spec.C_out == 1
            and spec.N * spec.C_in * spec.C_out * spec.L_out > 0)


def backward_shifted(x, shift, grad_output, weight, dilation, out, bias_out, gi):
    """Both gradients of a stride-1 layer of one group (``fuses_backward``)
    from one pass over grad_output, bitwise the separate kernels' results.

    The weight gradient of x zero-padded by ``shift`` on the left into out,
    as ``grad_weight_shifted``, and the bias gradient into bias_out as
    ``grad_weight_bias_shifted`` (None for none); the gradient of every
    padded position into gi (N, C_in, L_out + (K-1)*d), as
    ``grad_input_shifted`` with nothing cropped. Each output position of gi
    sums its terms in the same order whatever block it falls in, so its
    values do not depend on the weight gradient's units.
    """
    N, C_out, L_out = grad_output.shape
    if bias_out is None:
        block_sums = np.empty((0, 0, 0), dtype=out.dtype)
    else:
        block_sums = np.empty((N, C_out, -(-L_out // common.SUM_BLOCK)),
                              dtype=out.dtype)
    _dots(x, shift, grad_output, 1, dilation, out, block_sums, weight, gi)
    if bias_out is not None:
        merge_block_sums(block_sums, bias_out)


def _dots(x, shift, grad_output, groups, dilation, out, block_sums, weight=None,
          gi=None):
    C_out, C_in_g, K = out.shape
    N, _, L_out = grad_output.shape
    C_out_g = C_out // groups
    Rp = -(-C_out_g // DOT_ROWS) * DOT_ROWS
    Mp = -(-(C_in_g * K) // DOT_TAPS) * DOT_TAPS
    T, S = dots_block(N, C_in_g, C_out_g, L_out, out.itemsize)
    chunks = shifted.weight_chunks(N, C_out, L_out, groups * Rp * Mp, T,
                                   units=-(-N // S) * -(-L_out // T))
    partial = np.empty((groups * chunks, Rp * Mp), dtype=out.dtype)
    if gi is None:
        ap = np.empty((0, 0, 0, 0), dtype=out.dtype)
        gi_bias = np.empty(0, dtype=out.dtype)
        gi_rows = np.empty(0, dtype=np.int64)
        gi_chunk = gi_width = 0
        gi = np.empty((0, 0, 0), dtype=out.dtype)
    else:
        wf = direct._flipped_transpose(weight, 1)
        ap = pack_weight(wf, 1)
        gi_bias = pack_bias(np.zeros(C_in_g, dtype=out.dtype), 1, ap.shape[1])
        gi_chunk = DEPTH_CHUNK if ap.shape[1] > 1 else SINGLE_TILE_DEPTH_CHUNK
        span = (K - 1) * dilation
        gi_width = gather_width(L_out, ap.shape[1], 1, T + span, span, out.itemsize)
        gi_rows = panel_rows(ap.shape[2], K, dilation,
                             gi_width if gi_width > 0 else L_out)
    dots_kernel(x, shift, grad_output, groups, K, dilation, T, S, chunks, partial,
                block_sums, ap, gi_bias, gi_chunk, gi_width, gi_rows, gi)
    merge_dots(partial, groups, chunks, out)

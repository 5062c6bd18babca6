"""Triton kernels of the depthwise dilated Conv1d (groups == C_in == C_out): kernels only.

A depthwise conv does K multiply-adds per output, so it is memory-bound: the kernels are elementwise
FMAs on (channel, time) tiles, with no tensor-core dot, reading each input tile once per tap (the
K shifted reads of a tile hit L1) and writing each output once. The tile's contiguous dimension is
time for channel-first tensors and channels for channel-last ones (the host passes the strides;
Triton specialises a stride of 1 and vectorises along it).

  the op   y[b, c, t] = act(bias[c] + sum_k w[c, k] * x[b, c, t - (K-1-k)*D + PAD_RIGHT])
  taps     unrolled (K <= 16) or a loop. Unrolled taps take D and PAD_RIGHT as constexprs
           (CONST_SHIFTS: one binary per dilation; each tap's offset is then an immediate of its
           loads, where a runtime shift costs 64-bit address arithmetic per vector) and read
           their weights one (BLOCK_C,) vector each, or (W_TAPS) all of them as one (BLOCK_C, K)
           tile split into its columns in registers: a per-tap vector of strided weights takes a
           shared-memory layout conversion each, which at 16 taps costs more instructions and
           registers than the tile
  edges    a program whose tile's channels are all inside C and whose taps read only columns
           inside [0, L) (`interior`: most of them) loads without masks; the others mask every
           load (their masked-off registers zeroed: a quarter of a width-16 program's
           instructions). One branch per program; the static profile counts each path alone
           (TILES 1 and 2) and weights them by the programs that take it.
  window   channel-first rows aligned to 16 bytes with dilations below a vector (the shifts are not
           multiples of it, so shifted loads would be one element each): the host passes the shifts
           as constexprs, the kernel loads the few aligned 16-byte blocks the taps span once, splits
           each into its V in-thread lanes (tl.split: register renaming, no data movement) and takes
           every tap's shifted operand from those lanes.
"""
import triton
import triton.language as tl

from .conv_kernels import _activate, _aligned


@triton.jit
def depthwise_conv1d_kernel(
    in_ptr, w_ptr, bias_ptr, out_ptr, pre_ptr, slope_ptr,
    hist_ptr, seq_ptr,             # HISTORY: the columns before in's first; SEQ_IDX: (B, L) int32 sequence ids
    C, L, DILATION, PAD_RIGHT,
    S_HIST,                        # HISTORY: its columns
    s_in_b, s_in_c, s_in_t,
    s_w_c, s_w_k, s_bias, s_slope,
    s_out_b, s_out_c, s_out_t,
    s_pre_b, s_pre_c, s_pre_t,
    s_h_b, s_h_c, s_h_t, s_seq_b, s_seq_t,
    N_C_BLOCKS, N_T_BLOCKS,
    K: tl.constexpr,
    UNROLL: tl.constexpr,          # taps unrolled (K <= 16)
    ANTI_CAUSAL: tl.constexpr,     # the input gradient: taps read ahead, the weight's taps as they are
    HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr, ACT_P0: tl.constexpr, ACT_P1: tl.constexpr,
    STORE_PRE: tl.constexpr,
    ACC_FP64: tl.constexpr,
    ALIGN: tl.constexpr,           # L, D, PAD_RIGHT and the batch and channel strides: multiples of ALIGN
    BLOCK_C: tl.constexpr,
    BLOCK_T: tl.constexpr,
    WINDOW: tl.constexpr = 0,      # the window path's vector (elements): ALIGN then covers L and the strides only
    W_DILATION: tl.constexpr = 1,  # the window path's dilation and right padding, as constexprs
    W_PAD_RIGHT: tl.constexpr = 0,
    HISTORY: tl.constexpr = False,  # forward, unrolled or looped taps only (not the window path)
    SEQ_IDX: tl.constexpr = False,
    CONST_SHIFTS: tl.constexpr = False,  # UNROLL: DILATION and PAD_RIGHT as constexprs (W_DILATION, W_PAD_RIGHT)
    TILES: tl.constexpr = 0,       # 0: a program away from the edges takes unmasked taps; 1 (2): only those (the
                                   # masked ones) compiled, for the static profile
    W_TAPS: tl.constexpr = False,  # UNROLL: every tap's weights loaded as one (BLOCK_C, K) tile, split in registers
):
    """out[b, c, t] = epilogue(sum_k w[c, k] * in[b, c, t -/+ shift_k]), shift_k = (K-1-k)*D - PAD_RIGHT.

    Forward options of causal-conv1d's API, read in place (no copy of x): HISTORY, columns t < 0
    read hist[b, c, S_HIST + t] (its initial states), zero before them; SEQ_IDX, a tap counts only
    where seq[b, src] == seq[b, t] (columns before the start continue the row's first sequence),
    and outputs whose seq[b, t] < 0 are 0, after the activation.

    Forward: causal-direction taps (t - shift). Input gradient (ANTI_CAUSAL): in = the output
    gradient (already through the activation's derivative), taps t + shift: the transposed conv.
    Grid: (channel block, time block, batch row) flattened, channel blocks fastest."""
    pid = tl.program_id(0)
    pid_c = pid % N_C_BLOCKS
    pid_t = (pid // N_C_BLOCKS) % N_T_BLOCKS
    pid_b = pid // (N_C_BLOCKS * N_T_BLOCKS)
    L = _aligned(L, ALIGN)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    t0 = pid_t * BLOCK_T
    offs_t = t0 + tl.arange(0, BLOCK_T)
    mask_c = offs_c < C
    in_tile = (in_ptr + pid_b.to(tl.int64) * _aligned(s_in_b, ALIGN) + offs_c[:, None] * _aligned(s_in_c, ALIGN)
               + offs_t[None, :] * s_in_t)
    w_row = w_ptr + offs_c * s_w_c
    if ACC_FP64:
        acc = tl.zeros([BLOCK_C, BLOCK_T], dtype=tl.float64)
    else:
        acc = tl.zeros([BLOCK_C, BLOCK_T], dtype=tl.float32)
    if WINDOW > 0:  # the blocks at vector offsets FIRST..LAST: input columns [t0 + FIRST*V, t0 + BLOCK_T + LAST*V)
        SIGN: tl.constexpr = -1 if ANTI_CAUSAL else 1
        REACH: tl.constexpr = SIGN * ((K - 1) * W_DILATION - W_PAD_RIGHT)  # the extreme shifts: REACH, -SIGN*PAD
        FIRST: tl.constexpr = -max(REACH, -SIGN * W_PAD_RIGHT) // WINDOW
        LAST: tl.constexpr = (WINDOW - 1 - min(REACH, -SIGN * W_PAD_RIGHT)) // WINDOW
        interior = ((t0 + FIRST * WINDOW >= 0) & (t0 + BLOCK_T + max(LAST, 0) * WINDOW <= L)
                    & (pid_c * BLOCK_C + BLOCK_C <= C))
        if TILES == 0:
            if interior:
                acc = _window_taps(in_tile, w_ptr, offs_c, C, s_w_c, offs_t, mask_c, L, s_w_k, acc.dtype, K,
                                   W_DILATION, W_PAD_RIGHT, ANTI_CAUSAL, WINDOW, FIRST, LAST, BLOCK_C, BLOCK_T, False)
            else:
                acc = _window_taps(in_tile, w_ptr, offs_c, C, s_w_c, offs_t, mask_c, L, s_w_k, acc.dtype, K,
                                   W_DILATION, W_PAD_RIGHT, ANTI_CAUSAL, WINDOW, FIRST, LAST, BLOCK_C, BLOCK_T, True)
        else:
            acc = _window_taps(in_tile, w_ptr, offs_c, C, s_w_c, offs_t, mask_c, L, s_w_k, acc.dtype, K, W_DILATION,
                               W_PAD_RIGHT, ANTI_CAUSAL, WINDOW, FIRST, LAST, BLOCK_C, BLOCK_T, TILES == 2)
    else:
        if CONST_SHIFTS:
            DILATION = W_DILATION
            PAD_RIGHT = W_PAD_RIGHT
        else:
            DILATION = _aligned(DILATION, ALIGN)
            PAD_RIGHT = _aligned(PAD_RIGHT, ALIGN)
        hist_tile = hist_ptr
        if HISTORY:
            hist_tile = hist_ptr + pid_b.to(tl.int64) * s_h_b + offs_c[:, None] * s_h_c
        seq_row = seq_ptr
        seq_t = offs_t
        seq_first = 0
        if SEQ_IDX:
            seq_row = seq_ptr + pid_b.to(tl.int64) * s_seq_b
            seq_t = tl.load(seq_row + offs_t * s_seq_t, mask=offs_t < L, other=-1)
            seq_first = tl.load(seq_row)
        w_taps = w_row
        if UNROLL and W_TAPS:
            w_taps = _tap_weights(w_ptr, offs_c, C, s_w_c, s_w_k, K, BLOCK_C)
        # Taps read input columns [t0 - back, t0 + BLOCK_T + ahead).
        reach = (K - 1) * DILATION - PAD_RIGHT
        back = PAD_RIGHT if ANTI_CAUSAL else reach
        ahead = reach if ANTI_CAUSAL else PAD_RIGHT
        interior = (t0 >= back) & (t0 + BLOCK_T + tl.maximum(ahead, 0) <= L) & (pid_c * BLOCK_C + BLOCK_C <= C)
        if TILES == 0 and not SEQ_IDX:
            if interior:
                acc = _taps(acc, in_tile, w_taps, offs_t, mask_c, L, DILATION, PAD_RIGHT, K, s_in_t, s_w_k,
                            ANTI_CAUSAL, t0, hist_tile, S_HIST, s_h_t, seq_row, seq_t, seq_first, s_seq_t, HISTORY,
                            SEQ_IDX, UNROLL, W_TAPS, False)
            else:
                acc = _taps(acc, in_tile, w_taps, offs_t, mask_c, L, DILATION, PAD_RIGHT, K, s_in_t, s_w_k,
                            ANTI_CAUSAL, t0, hist_tile, S_HIST, s_h_t, seq_row, seq_t, seq_first, s_seq_t, HISTORY,
                            SEQ_IDX, UNROLL, W_TAPS, True)
        else:
            acc = _taps(acc, in_tile, w_taps, offs_t, mask_c, L, DILATION, PAD_RIGHT, K, s_in_t, s_w_k,
                        ANTI_CAUSAL, t0, hist_tile, S_HIST, s_h_t, seq_row, seq_t, seq_first, s_seq_t, HISTORY,
                        SEQ_IDX, UNROLL, W_TAPS, TILES == 2 or SEQ_IDX)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_c * s_bias, mask=mask_c, other=0.0).to(acc.dtype)[:, None]
    mask_out = mask_c[:, None] & (offs_t < L)[None, :]
    if STORE_PRE:
        tl.store(pre_ptr + pid_b.to(tl.int64) * s_pre_b + offs_c[:, None] * s_pre_c + offs_t[None, :] * s_pre_t,
                 acc.to(pre_ptr.dtype.element_ty), mask=mask_out)
    if ACTIVATION == 12:
        acc = _activate(acc, ACTIVATION, ACT_P0, ACT_P1, tl.load(slope_ptr + offs_c * s_slope, mask=mask_c, other=0.0))
    else:
        acc = _activate(acc, ACTIVATION, ACT_P0, ACT_P1, None)
    if SEQ_IDX:  # outside every sequence: 0
        acc = tl.where((seq_t < 0)[None, :], tl.zeros_like(acc), acc)
    out_offs = (pid_b.to(tl.int64) * _aligned(s_out_b, ALIGN) + offs_c[:, None] * _aligned(s_out_c, ALIGN)
                + offs_t[None, :] * s_out_t)
    tl.store(out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=mask_out)


@triton.jit
def _taps(acc, in_tile, w_taps, offs_t, mask_c, L, DILATION, PAD_RIGHT, K: tl.constexpr, s_in_t, s_w_k,
          ANTI_CAUSAL: tl.constexpr, t0, hist_tile, S_HIST, s_h_t, seq_row, seq_t, seq_first, s_seq_t,
          HISTORY: tl.constexpr, SEQ_IDX: tl.constexpr, UNROLL: tl.constexpr, W_TAPS: tl.constexpr,
          MASKED: tl.constexpr):
    """acc + every tap (_tap): unrolled or a loop; w_taps the weights' row pointers, or (unrolled) a
    tuple of every tap's weight columns."""
    if UNROLL and W_TAPS:
        for k in tl.static_range(K):
            acc = _tap(acc, in_tile, w_taps[k], k, offs_t, mask_c, L, DILATION, PAD_RIGHT, K, s_in_t, s_w_k,
                       ANTI_CAUSAL, t0, hist_tile, S_HIST, s_h_t, seq_row, seq_t, seq_first, s_seq_t, HISTORY,
                       SEQ_IDX, MASKED)
    elif UNROLL:
        for k in tl.static_range(K):
                acc = _tap(acc, in_tile, w_taps, k, offs_t, mask_c, L, DILATION, PAD_RIGHT, K, s_in_t, s_w_k,
                           ANTI_CAUSAL, t0, hist_tile, S_HIST, s_h_t, seq_row, seq_t, seq_first, s_seq_t, HISTORY,
                           SEQ_IDX, MASKED)
    else:
        for k in range(K):
            acc = _tap(acc, in_tile, w_taps, k, offs_t, mask_c, L, DILATION, PAD_RIGHT, K, s_in_t, s_w_k,
                       ANTI_CAUSAL, t0, hist_tile, S_HIST, s_h_t, seq_row, seq_t, seq_first, s_seq_t, HISTORY,
                       SEQ_IDX, MASKED)
    return acc


@triton.jit
def _tap(acc, in_tile, w_row, k, offs_t, mask_c, L, DILATION, PAD_RIGHT, K: tl.constexpr, s_in_t, s_w_k,
         ANTI_CAUSAL: tl.constexpr, t0, hist_tile, S_HIST, s_h_t, seq_row, seq_t, seq_first, s_seq_t,
         HISTORY: tl.constexpr, SEQ_IDX: tl.constexpr, MASKED: tl.constexpr = True):
    """acc + w[:, k] * in[:, t -/+ shift_k], zero outside [0, L) (before 0: the history's columns
    with HISTORY); with SEQ_IDX only where the source's sequence is the output's."""
    shift = (K - 1 - k) * DILATION - PAD_RIGHT
    if ANTI_CAUSAL:
        src = offs_t + shift
    else:
        src = offs_t - shift
    inside = (src >= 0) & (src < L)
    if ANTI_CAUSAL:
        tap_tile = in_tile + shift * s_in_t
    else:
        tap_tile = in_tile - shift * s_in_t
    if MASKED:
        tile = tl.load(tap_tile, mask=mask_c[:, None] & inside[None, :], other=0.0)
    else:  # an interior program: every source column and channel inside, so no history either
        tile = tl.load(tap_tile)
    if HISTORY and MASKED:  # the forward's columns before the start (disjoint from x's: one of the two loads is 0)
        if t0 < shift:  # only the time blocks this tap reaches back from into the history
            col = src + S_HIST
            tile += tl.load(hist_tile + col[None, :] * s_h_t,
                            mask=mask_c[:, None] & ((src < 0) & (col >= 0))[None, :], other=0.0)
    if SEQ_IDX:
        src_seq = tl.load(seq_row + src * s_seq_t, mask=inside, other=seq_first)
        tile = tl.where((src_seq == seq_t)[None, :], tile, tl.zeros_like(tile))
    if w_row.dtype.is_ptr() and MASKED:
        w = tl.load(w_row + k * s_w_k, mask=mask_c, other=0.0).to(acc.dtype)[:, None]
    elif w_row.dtype.is_ptr():
        w = tl.load(w_row + k * s_w_k).to(acc.dtype)[:, None]
    else:  # this tap's weights, already loaded: (BLOCK_C, 1)
        w = w_row.to(acc.dtype)
    return acc + tile.to(acc.dtype) * w


@triton.jit
def _tap_weights(w_ptr, offs_c, C, s_w_c, s_w_k, K: tl.constexpr, BLOCK_C: tl.constexpr):
    """Every tap's weights of the channels offs_c, as K (BLOCK_C, 1) columns: one (BLOCK_C, K) tile
    split in registers. Rows past C read the last channel's (their outputs are not stored): no
    channel mask, so no zeroed registers, and whole rows of taps load as 16-byte vectors."""
    K_POW2: tl.constexpr = 1 if K == 1 else 2 if K == 2 else 4 if K <= 4 else 8 if K <= 8 else 16
    offs_k = tl.arange(0, K_POW2)
    tile = w_ptr + tl.minimum(offs_c, C - 1)[:, None] * s_w_c + offs_k[None, :] * s_w_k
    if K == K_POW2:
        w_all = tl.load(tile)
    else:
        w_all = tl.load(tile, mask=(offs_k < K)[None, :], other=0.0)
    return _lanes(w_all, K_POW2, BLOCK_C, 1)


@triton.jit
def _lanes(tile, V: tl.constexpr, BLOCK_C: tl.constexpr, NV: tl.constexpr):
    """A (BLOCK_C, NV * V) tile as V (BLOCK_C, NV) lanes: lane v holds the tile's columns j * V + v."""
    if V == 1:
        return (tl.reshape(tile, [BLOCK_C, NV]),)
    else:
        even, odd = tl.split(tl.reshape(tile, [BLOCK_C, NV * V // 2, 2]))
        lanes_even = _lanes(even, V // 2, BLOCK_C, NV)
        lanes_odd = _lanes(odd, V // 2, BLOCK_C, NV)
        lanes = ()
        for i in tl.static_range(V // 2):
            lanes = lanes + (lanes_even[i], lanes_odd[i])
        return lanes


@triton.jit
def _unlanes(lanes, V: tl.constexpr, BLOCK_C: tl.constexpr, NV: tl.constexpr):
    """The inverse of _lanes."""
    if V == 1:
        return lanes[0]
    else:
        even = ()
        odd = ()
        for i in tl.static_range(V // 2):
            even = even + (lanes[2 * i],)
            odd = odd + (lanes[2 * i + 1],)
        return tl.reshape(tl.join(_unlanes(even, V // 2, BLOCK_C, NV), _unlanes(odd, V // 2, BLOCK_C, NV)),
                          [BLOCK_C, NV * V])


@triton.jit
def _window_blocks(in_tile, offs_t, mask_c, L, acc_dtype: tl.constexpr, FIRST: tl.constexpr, LAST: tl.constexpr,
                   V: tl.constexpr, BLOCK_C: tl.constexpr, NV: tl.constexpr, MASKED: tl.constexpr = True):
    """The lanes of the aligned blocks at vector offsets FIRST..LAST from the tile (zero outside [0, L);
    not MASKED: all inside)."""
    blocks = ()
    for o in tl.static_range(FIRST, LAST + 1):
        src = offs_t + o * V
        if MASKED:
            tile = tl.load(in_tile + o * V, mask=mask_c[:, None] & ((src >= 0) & (src < L))[None, :], other=0.0)
        else:
            tile = tl.load(in_tile + o * V)
        blocks = blocks + (_lanes(tile.to(acc_dtype), V, BLOCK_C, NV),)
    return blocks


@triton.jit
def _shifted(blocks, v: tl.constexpr, S: tl.constexpr, FIRST: tl.constexpr, V: tl.constexpr):
    """Lane v of the tile shifted by S (columns t - S): lane (v - S) % V of the block at (v - S) // V."""
    return blocks[(v - S) // V - FIRST][(v - S) % V]


@triton.jit
def _window_taps(in_tile, w_ptr, offs_c, C, s_w_c, offs_t, mask_c, L, s_w_k, acc_dtype: tl.constexpr, K: tl.constexpr,
                 D: tl.constexpr, PAD_RIGHT: tl.constexpr, ANTI_CAUSAL: tl.constexpr, V: tl.constexpr,
                 FIRST: tl.constexpr, LAST: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr,
                 MASKED: tl.constexpr):
    """sum_k w[:, k] * in[:, t - s_k] with compile-time shifts s_k = SIGN * ((K-1-k)*D - PAD_RIGHT)
    (SIGN -1: the input gradient). Output column t = t0 + j*V + v reads input column
    t0 + j*V + (v - s): lane (v - s) % V of the aligned block at vector offset (v - s) // V; the blocks
    the taps span (FIRST..LAST) are loaded once, unmasked unless MASKED. (Shifts stay inline
    expressions: a name assigned inside a static loop stops being a constexpr, and tuples take
    constexpr indices only.)"""
    NV: tl.constexpr = BLOCK_T // V
    SIGN: tl.constexpr = -1 if ANTI_CAUSAL else 1
    blocks = _window_blocks(in_tile, offs_t, mask_c, L, acc_dtype, FIRST, LAST, V, BLOCK_C, NV, MASKED)
    w_taps = _tap_weights(w_ptr, offs_c, C, s_w_c, s_w_k, K, BLOCK_C)
    acc = ()
    for v in tl.static_range(V):
        acc = acc + (tl.zeros([BLOCK_C, NV], dtype=acc_dtype),)
    for k in tl.static_range(K):
        w = w_taps[k].to(acc_dtype)
        summed = ()
        for v in tl.static_range(V):
            summed = summed + (acc[v] + w * _shifted(blocks, v, SIGN * ((K - 1 - k) * D - PAD_RIGHT), FIRST, V),)
        acc = summed
    return _unlanes(acc, V, BLOCK_C, NV)

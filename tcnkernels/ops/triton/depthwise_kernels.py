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
  strip    channel-first rows aligned to 16 bytes with dilations of whole vectors (STRIP): a program
           computes STRIP output steps D apart, whose taps read overlapping input steps; each of
           the STRIP + K - 1 input steps is loaded and converted once and feeds every accumulator
           it reaches (source-stationary), instead of one load and conversion per tap.
"""
import triton
import triton.language as tl

from .conv_kernels import _activate, _aligned
from .depthwise_window_kernels import _tap_weights, _window_taps


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
    STRIP: tl.constexpr = 0,       # CONST_SHIFTS, W_PAD_RIGHT a multiple of W_DILATION, BLOCK_T dividing it: each
                                   # program's outputs are STRIP steps of W_DILATION columns, BLOCK_T of each step
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
    if STRIP > 0:  # time block pid_t: chunk pid_t % (D // BLOCK_T) of STRIP * D columns
        t0 = pid_t // (W_DILATION // BLOCK_T) * (STRIP * W_DILATION) + pid_t % (W_DILATION // BLOCK_T) * BLOCK_T
    else:
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
    if STRIP > 0:
        _strip(in_tile, w_ptr, offs_c, C, s_w_c, s_w_k, t0, offs_t, mask_c, L, s_in_t, acc.dtype, pid_b, bias_ptr,
               s_bias, slope_ptr, s_slope, out_ptr, s_out_b, s_out_c, s_out_t, pre_ptr, s_pre_b, s_pre_c, s_pre_t,
               ALIGN, K, W_DILATION, W_PAD_RIGHT // W_DILATION, ANTI_CAUSAL, STRIP, pid_c * BLOCK_C + BLOCK_C <= C,
               TILES, HAS_BIAS, ACTIVATION, ACT_P0, ACT_P1, STORE_PRE, BLOCK_C, BLOCK_T)
        return
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
    if SEQ_IDX:  # outside every sequence: 0
        outside = (seq_t < 0)[None, :]
    else:
        outside = None
    bias, slope = _row_params(offs_c, mask_c, bias_ptr, s_bias, slope_ptr, s_slope, acc.dtype, HAS_BIAS, ACTIVATION)
    _epilogue(acc, bias, slope, offs_c, mask_c, offs_t, L, pid_b, out_ptr, s_out_b, s_out_c, s_out_t, pre_ptr,
              s_pre_b, s_pre_c, s_pre_t, outside, ALIGN, HAS_BIAS, ACTIVATION, ACT_P0, ACT_P1, STORE_PRE)


@triton.jit
def _row_params(offs_c, mask_c, bias_ptr, s_bias, slope_ptr, s_slope, acc_dtype: tl.constexpr, HAS_BIAS: tl.constexpr,
                ACTIVATION: tl.constexpr):
    """(bias as a (BLOCK_C, 1) column, PReLU's slope (BLOCK_C,)); zeros where there is none (unused)."""
    bias = tl.zeros_like(offs_c).to(acc_dtype)[:, None]
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_c * s_bias, mask=mask_c, other=0.0).to(acc_dtype)[:, None]
    slope = tl.zeros_like(offs_c).to(acc_dtype)
    if ACTIVATION == 12:
        slope = tl.load(slope_ptr + offs_c * s_slope, mask=mask_c, other=0.0)
    return bias, slope


@triton.jit
def _epilogue(acc, bias, slope, offs_c, mask_c, offs_t, L, pid_b, out_ptr, s_out_b, s_out_c, s_out_t, pre_ptr,
              s_pre_b, s_pre_c, s_pre_t, outside, ALIGN: tl.constexpr, HAS_BIAS: tl.constexpr,
              ACTIVATION: tl.constexpr, ACT_P0: tl.constexpr, ACT_P1: tl.constexpr, STORE_PRE: tl.constexpr):
    """out[:, offs_t] = act(acc + bias) (pre[:, offs_t] = acc + bias with STORE_PRE); 0 where `outside`
    (a (1, BLOCK_T) mask, or None)."""
    if HAS_BIAS:
        acc += bias
    mask_out = mask_c[:, None] & (offs_t < L)[None, :]
    if STORE_PRE:
        tl.store(pre_ptr + pid_b.to(tl.int64) * s_pre_b + offs_c[:, None] * s_pre_c + offs_t[None, :] * s_pre_t,
                 acc.to(pre_ptr.dtype.element_ty), mask=mask_out)
    acc = _activate(acc, ACTIVATION, ACT_P0, ACT_P1, slope)
    if outside is not None:
        acc = tl.where(outside, tl.zeros_like(acc), acc)
    out_offs = (pid_b.to(tl.int64) * _aligned(s_out_b, ALIGN) + offs_c[:, None] * _aligned(s_out_c, ALIGN)
                + offs_t[None, :] * s_out_t)
    tl.store(out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=mask_out)


@triton.jit
def _strip(in_tile, w_ptr, offs_c, C, s_w_c, s_w_k, t0, offs_t, mask_c, L, s_in_t, acc_dtype: tl.constexpr, pid_b,
           bias_ptr, s_bias, slope_ptr, s_slope, out_ptr, s_out_b, s_out_c, s_out_t, pre_ptr, s_pre_b, s_pre_c,
           s_pre_t, ALIGN: tl.constexpr, K: tl.constexpr, D: tl.constexpr, P: tl.constexpr,
           ANTI_CAUSAL: tl.constexpr, J: tl.constexpr, channels_inside, TILES: tl.constexpr,
           HAS_BIAS: tl.constexpr, ACTIVATION: tl.constexpr, ACT_P0: tl.constexpr, ACT_P1: tl.constexpr,
           STORE_PRE: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr):
    """The J output steps t0 + j*D + offs_t (j < J) of a program, with the epilogue. Output step j's
    tap k reads input step j + o_k, o_k = k - (K-1) + P (the input gradient: (K-1-k) - P), so the
    J + K - 1 steps from O_MIN = o_0 (-P) on are each loaded and converted once and feed every
    accumulator they reach, where each tap loaded and converted its own: K loads a step become
    (J + K - 1) / J. Source i feeds step j through tap i - j (K-1 - (i - j)); the per-tap weights
    load in the data's layout (a column broadcast along time: no layout conversion)."""
    O_MIN: tl.constexpr = -P if ANTI_CAUSAL else P - (K - 1)
    interior = (channels_inside & (t0 + O_MIN * D >= 0)
                & (t0 + (J - 1 + max(O_MIN + K - 1, 0)) * D + BLOCK_T <= L))
    if TILES == 0:
        if interior:
            accs = _strip_taps(in_tile, w_ptr, offs_c, C, s_w_c, s_w_k, t0, offs_t, mask_c, L, s_in_t, acc_dtype, K,
                               D, O_MIN, ANTI_CAUSAL, J, False, BLOCK_C, BLOCK_T)
        else:
            accs = _strip_taps(in_tile, w_ptr, offs_c, C, s_w_c, s_w_k, t0, offs_t, mask_c, L, s_in_t, acc_dtype, K,
                               D, O_MIN, ANTI_CAUSAL, J, True, BLOCK_C, BLOCK_T)
    else:
        accs = _strip_taps(in_tile, w_ptr, offs_c, C, s_w_c, s_w_k, t0, offs_t, mask_c, L, s_in_t, acc_dtype, K, D,
                           O_MIN, ANTI_CAUSAL, J, TILES == 2, BLOCK_C, BLOCK_T)
    bias, slope = _row_params(offs_c, mask_c, bias_ptr, s_bias, slope_ptr, s_slope, acc_dtype, HAS_BIAS, ACTIVATION)
    for j in tl.static_range(J):
        _epilogue(accs[j], bias, slope, offs_c, mask_c, offs_t + j * D, L, pid_b, out_ptr, s_out_b, s_out_c, s_out_t,
                  pre_ptr, s_pre_b, s_pre_c, s_pre_t, None, ALIGN, HAS_BIAS, ACTIVATION, ACT_P0, ACT_P1, STORE_PRE)


@triton.jit
def _strip_taps(in_tile, w_ptr, offs_c, C, s_w_c, s_w_k, t0, offs_t, mask_c, L, s_in_t, acc_dtype: tl.constexpr,
                K: tl.constexpr, D: tl.constexpr, O_MIN: tl.constexpr, ANTI_CAUSAL: tl.constexpr, J: tl.constexpr,
                MASKED: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr):
    """The J accumulators of _strip (not MASKED: every channel and source column inside)."""
    w_rows = w_ptr + tl.minimum(offs_c, C - 1)[:, None] * s_w_c + 0 * offs_t[None, :]
    weights = ()
    for k in tl.static_range(K):
        weights = weights + (tl.load(w_rows + k * s_w_k).to(acc_dtype),)
    accs = ()
    for j in tl.static_range(J):
        accs = accs + (tl.zeros([BLOCK_C, BLOCK_T], dtype=acc_dtype),)
    for i in tl.static_range(J + K - 1):
        if MASKED:
            src = offs_t + (O_MIN + i) * D
            x = tl.load(in_tile + (O_MIN + i) * D * s_in_t, mask=mask_c[:, None] & ((src >= 0) & (src < L))[None, :],
                        other=0.0).to(acc_dtype)
        else:
            x = tl.load(in_tile + (O_MIN + i) * D * s_in_t).to(acc_dtype)
        summed = ()
        for j in tl.static_range(J):
            if i - j >= 0 and i - j < K:
                if ANTI_CAUSAL:
                    summed = summed + (accs[j] + weights[K - 1 - (i - j)] * x,)
                else:
                    summed = summed + (accs[j] + weights[i - j] * x,)
            else:
                summed = summed + (accs[j],)
        accs = summed
    return accs


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

"""Triton kernel of the depthwise conv's weight gradient (groups == C_in == C_out): kernels only.

  the sums  dw[c, k] = sum_{b, t} g[b, c, t] * x[b, c, t - shift_k], db[c] = sum g: per program one
            channel block and a chunk of (batch row, time block) items, the products of every tap
            reduced over each item's time in registers into K (BLOCK_C,) sums (a tuple: no select
            into a (BLOCK_C, K) tile per tap and item), and one
            row of partials per chunk, which the host sums in a fixed order (no atomics: bitwise
            reproducible)
  recompute causal-conv1d's backward keeps no pre-activation (RECOMPUTE): this kernel recomputes
            it from the x tiles it loads for the products anyway, applies the activation's
            derivative to dy and writes g for the input gradient: one pass over x and dy where a
            separate recompute and an elementwise derivative took two kernels and several passes
  edges     as in the forward kernel (depthwise_kernels.py): an item whose tile lies inside the
            channels and whose taps read only columns inside [0, L) loads without masks, the
            others mask every load; TILES compiles one path alone for the static profile
"""
import triton
import triton.language as tl

from .conv_kernels import _activation_grad, _aligned
from .depthwise_window_kernels import _lanes, _shifted, _tap_weights, _unlanes, _window_blocks


@triton.jit
def depthwise_weight_grad_kernel(
    x_ptr, g_ptr, partial_ptr,     # partial: (N_CHUNKS, C*K + C), the dense weight gradient's layout
    seq_ptr,                       # SEQ_IDX: (B, L) int32 sequence ids
    dy_ptr, w_ptr, bias_ptr,       # RECOMPUTE: the output gradient, the conv's weight and bias; g_ptr its output
    hist_ptr,                      # HISTORY: the columns before x's first (the forward's initial states)
    B, C, L, DILATION, PAD_RIGHT,
    S_HIST, s_h_b, s_h_c, s_h_t,
    s_x_b, s_x_c, s_x_t,
    s_g_b, s_g_c, s_g_t,
    s_seq_b, s_seq_t,
    s_dy_b, s_dy_c, s_dy_t, s_w_c, s_w_k, s_bias,
    N_C_BLOCKS, N_T_BLOCKS, N_CHUNKS,
    K: tl.constexpr,
    ACC_FP64: tl.constexpr,
    ALIGN: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_T: tl.constexpr,
    WINDOW: tl.constexpr = 0,      # as in the forward kernel (ALIGN then covers L and the strides only)
    W_DILATION: tl.constexpr = 1,
    W_PAD_RIGHT: tl.constexpr = 0,
    SEQ_IDX: tl.constexpr = False,  # (not the window path) products only within a sequence, g outside every one 0
    CONST_SHIFTS: tl.constexpr = False,  # DILATION and PAD_RIGHT as constexprs (W_DILATION, W_PAD_RIGHT)
    RECOMPUTE: tl.constexpr = 0,   # an activation code (K <= 16): g = dy * act'(z), z = bias + the taps' sum
                                   # from the x tiles loaded for the products (with SEQ_IDX, the same masked
                                   # taps as the forward's); g_ptr <- g
    HAS_BIAS: tl.constexpr = False,  # RECOMPUTE: z has a bias
    DY_ALIGN: tl.constexpr = 1,    # RECOMPUTE: dy's batch and channel strides, multiples of DY_ALIGN
    TILES: tl.constexpr = 0,       # 0: items away from the edges load unmasked; 1 (2): only that path (the masked
                                   # one) compiled, for the static profile
    HISTORY: tl.constexpr = False,  # RECOMPUTE (not the window path): z's taps before x's first column read
                                    # hist[b, c, S_HIST + t]; the products' do not (the host adds the states' share)
):
    """Partial sums over one chunk of (batch row, time block) items, for every tap at once:
    partial[chunk, c*K + k] = sum g[b, c, t] * x[b, c, t - shift_k];  partial[chunk, C*K + c] = sum g.
    Grid: (channel block, chunk) flattened, channel blocks fastest."""
    tl.static_assert(not (HISTORY and WINDOW > 0), "the window path reads no history")
    pid = tl.program_id(0)
    pid_c = pid % N_C_BLOCKS
    pid_chunk = pid // N_C_BLOCKS
    L = _aligned(L, ALIGN)
    if CONST_SHIFTS:
        DILATION = W_DILATION
        PAD_RIGHT = W_PAD_RIGHT
    elif WINDOW == 0:
        DILATION = _aligned(DILATION, ALIGN)
        PAD_RIGHT = _aligned(PAD_RIGHT, ALIGN)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < C
    n_items = B * N_T_BLOCKS
    per_chunk = tl.cdiv(n_items, N_CHUNKS)
    start = tl.minimum(pid_chunk * per_chunk, n_items)
    stop = tl.minimum(start + per_chunk, n_items)
    if ACC_FP64:
        acc_bias = tl.zeros([BLOCK_C], dtype=tl.float64)
    else:
        acc_bias = tl.zeros([BLOCK_C], dtype=tl.float32)
    acc = ()  # one (BLOCK_C,) sum per tap
    for k in tl.static_range(K):
        acc = acc + (acc_bias,)
    w_taps = w_ptr
    z_bias = tl.zeros([BLOCK_C, 1], dtype=acc_bias.dtype)
    if RECOMPUTE:  # loop-invariant: every tap's weights, and the bias
        w_taps = _tap_weights(w_ptr, offs_c, C, s_w_c, s_w_k, K, BLOCK_C)
        if HAS_BIAS:
            z_bias = tl.load(bias_ptr + offs_c * s_bias, mask=mask_c, other=0.0).to(acc_bias.dtype)[:, None]
    # An item's taps read columns [t0 - back, t0 + BLOCK_T + ahead): the window path's aligned blocks
    # FIRST..LAST, else the shifts -PAD_RIGHT..reach.
    if WINDOW > 0:
        FIRST: tl.constexpr = -((K - 1) * W_DILATION - W_PAD_RIGHT) // WINDOW
        LAST: tl.constexpr = (WINDOW - 1 + W_PAD_RIGHT) // WINDOW
        back = -FIRST * WINDOW
        ahead = max(LAST, 0) * WINDOW
    else:
        back = (K - 1) * DILATION - PAD_RIGHT
        ahead = tl.maximum(PAD_RIGHT, 0)
    channels_inside = pid_c * BLOCK_C + BLOCK_C <= C
    for item in range(start, stop):
        b = (item // N_T_BLOCKS).to(tl.int64)
        t0 = (item % N_T_BLOCKS) * BLOCK_T
        hist_tile = hist_ptr
        if HISTORY:
            hist_tile = hist_ptr + b * s_h_b + offs_c[:, None] * s_h_c
        interior = channels_inside & (t0 >= back) & (t0 + BLOCK_T + ahead <= L)
        if TILES == 0 and not SEQ_IDX:
            if interior:
                acc, acc_bias = _item(acc, acc_bias, x_ptr, g_ptr, seq_ptr, dy_ptr, w_taps, z_bias, b, t0, offs_c,
                                      mask_c, L, DILATION, PAD_RIGHT, s_x_b, s_x_c, s_x_t, s_g_b, s_g_c, s_g_t,
                                      s_seq_b, s_seq_t, s_dy_b, s_dy_c, s_dy_t, K, ALIGN, DY_ALIGN, BLOCK_C,
                                      BLOCK_T, WINDOW, W_DILATION, W_PAD_RIGHT, SEQ_IDX, RECOMPUTE, False, hist_tile,
                                      S_HIST, s_h_t, HISTORY)
            else:
                acc, acc_bias = _item(acc, acc_bias, x_ptr, g_ptr, seq_ptr, dy_ptr, w_taps, z_bias, b, t0, offs_c,
                                      mask_c, L, DILATION, PAD_RIGHT, s_x_b, s_x_c, s_x_t, s_g_b, s_g_c, s_g_t,
                                      s_seq_b, s_seq_t, s_dy_b, s_dy_c, s_dy_t, K, ALIGN, DY_ALIGN, BLOCK_C,
                                      BLOCK_T, WINDOW, W_DILATION, W_PAD_RIGHT, SEQ_IDX, RECOMPUTE, True, hist_tile,
                                      S_HIST, s_h_t, HISTORY)
        else:
            acc, acc_bias = _item(acc, acc_bias, x_ptr, g_ptr, seq_ptr, dy_ptr, w_taps, z_bias, b, t0, offs_c,
                                  mask_c, L, DILATION, PAD_RIGHT, s_x_b, s_x_c, s_x_t, s_g_b, s_g_c, s_g_t,
                                  s_seq_b, s_seq_t, s_dy_b, s_dy_c, s_dy_t, K, ALIGN, DY_ALIGN, BLOCK_C,
                                  BLOCK_T, WINDOW, W_DILATION, W_PAD_RIGHT, SEQ_IDX, RECOMPUTE, TILES == 2 or SEQ_IDX,
                                  hist_tile, S_HIST, s_h_t, HISTORY)
    row = partial_ptr + pid_chunk.to(tl.int64) * (C * K + C)
    for k in tl.static_range(K):
        tl.store(row + offs_c * K + k, acc[k], mask=mask_c)
    tl.store(row + C * K + offs_c, acc_bias, mask=mask_c)


@triton.jit
def _item(acc, acc_bias, x_ptr, g_ptr, seq_ptr, dy_ptr, w_taps, z_bias, b, t0, offs_c, mask_c, L, DILATION,
          PAD_RIGHT, s_x_b, s_x_c, s_x_t, s_g_b, s_g_c, s_g_t, s_seq_b, s_seq_t, s_dy_b, s_dy_c, s_dy_t,
          K: tl.constexpr, ALIGN: tl.constexpr, DY_ALIGN: tl.constexpr, BLOCK_C: tl.constexpr,
          BLOCK_T: tl.constexpr, WINDOW: tl.constexpr, W_DILATION: tl.constexpr, W_PAD_RIGHT: tl.constexpr,
          SEQ_IDX: tl.constexpr, RECOMPUTE: tl.constexpr, MASKED: tl.constexpr, hist_tile, S_HIST, s_h_t,
          HISTORY: tl.constexpr):
    """(acc, acc_bias) plus one item's products (batch row b, columns t0..t0+BLOCK_T); not MASKED:
    every channel and every column the taps read inside (so no history either)."""
    offs_t = t0 + tl.arange(0, BLOCK_T)
    mask_t = offs_t < L
    mask = mask_c[:, None] & mask_t[None, :]
    g_tile = g_ptr + b * _aligned(s_g_b, ALIGN) + offs_c[:, None] * _aligned(s_g_c, ALIGN) + offs_t[None, :] * s_g_t
    x_tile = x_ptr + b * _aligned(s_x_b, ALIGN) + offs_c[:, None] * _aligned(s_x_c, ALIGN) + offs_t[None, :] * s_x_t
    if RECOMPUTE:
        dy_tile = (dy_ptr + b * _aligned(s_dy_b, DY_ALIGN) + offs_c[:, None] * _aligned(s_dy_c, DY_ALIGN)
                   + offs_t[None, :] * s_dy_t)
        dy = _load(dy_tile, mask, MASKED).to(acc_bias.dtype)
    else:
        g = _load(g_tile, mask, MASKED).to(acc_bias.dtype)
    if SEQ_IDX:  # outputs outside every sequence have no gradient
        seq_row = seq_ptr + b * s_seq_b
        seq_t = tl.load(seq_row + offs_t * s_seq_t, mask=mask_t, other=-1)
        seq_first = tl.load(seq_row)
        if not RECOMPUTE:
            g = tl.where((seq_t >= 0)[None, :], g, tl.zeros_like(g))
    if WINDOW > 0:  # the forward's shifts, from the aligned blocks they span (see _window_taps)
        NV: tl.constexpr = BLOCK_T // WINDOW
        FIRST: tl.constexpr = -((K - 1) * W_DILATION - W_PAD_RIGHT) // WINDOW
        LAST: tl.constexpr = (WINDOW - 1 + W_PAD_RIGHT) // WINDOW
        blocks = _window_blocks(x_tile, offs_t, mask_c, L, acc_bias.dtype, FIRST, LAST, WINDOW, BLOCK_C, NV, MASKED)
        if RECOMPUTE:
            dy_lanes = _lanes(dy, WINDOW, BLOCK_C, NV)
            g_lanes = ()
            for v in tl.static_range(WINDOW):
                z = z_bias + tl.zeros([BLOCK_C, NV], dtype=acc_bias.dtype)
                for k in tl.static_range(K):
                    z += w_taps[k].to(acc_bias.dtype) * _shifted(blocks, v, (K - 1 - k) * W_DILATION - W_PAD_RIGHT,
                                                            FIRST, WINDOW)
                g_lanes = g_lanes + (_activation_grad(dy_lanes[v], z, RECOMPUTE, 0.0, 0.0),)
            g = _unlanes(g_lanes, WINDOW, BLOCK_C, NV)
            _store(g_tile, g.to(g_ptr.dtype.element_ty), mask, MASKED)
        else:
            g_lanes = _lanes(g, WINDOW, BLOCK_C, NV)
        for k in tl.static_range(K):
            products = tl.zeros([BLOCK_C, NV], dtype=acc_bias.dtype)
            for v in tl.static_range(WINDOW):
                products += g_lanes[v] * _shifted(blocks, v, (K - 1 - k) * W_DILATION - W_PAD_RIGHT, FIRST, WINDOW)
            acc = _add_tap(acc, k, tl.sum(products, axis=1), K)
    elif RECOMPUTE:  # every tap's operand held for both of its uses (K <= 16: the host recomputes no wider)
        xs = ()
        z = z_bias + tl.zeros([BLOCK_C, BLOCK_T], dtype=acc_bias.dtype)
        for k in tl.static_range(K):
            shift = (K - 1 - k) * DILATION - PAD_RIGHT
            x = _tap_operand(x_tile, offs_t, mask_c, mask_t, L, shift, s_x_t, MASKED).to(acc_bias.dtype)
            if SEQ_IDX:
                x = _in_sequence(x, seq_row, seq_t, seq_first, offs_t - shift, mask_t, L, s_seq_t)
            z += w_taps[k].to(acc_bias.dtype) * x
            if HISTORY and MASKED:  # z's columns before the start (the products' are the host's)
                if t0 < shift:
                    src = offs_t - shift
                    col = src + S_HIST
                    h = tl.load(hist_tile + col[None, :] * s_h_t,
                                mask=mask_c[:, None] & ((src < 0) & (col >= 0))[None, :], other=0.0).to(acc_bias.dtype)
                    if SEQ_IDX:
                        h = _in_sequence(h, seq_row, seq_t, seq_first, src, mask_t, L, s_seq_t)
                    z += w_taps[k].to(acc_bias.dtype) * h
            xs = xs + (x,)
        g = _activation_grad(dy, z, RECOMPUTE, 0.0, 0.0)
        if SEQ_IDX:
            g = tl.where((seq_t >= 0)[None, :], g, tl.zeros_like(g))
        _store(g_tile, g.to(g_ptr.dtype.element_ty), mask, MASKED)
        for k in tl.static_range(K):
            acc = _add_tap(acc, k, tl.sum(g * xs[k], axis=1), K)
    else:
        for k in tl.static_range(K):
            shift = (K - 1 - k) * DILATION - PAD_RIGHT
            x = _tap_operand(x_tile, offs_t, mask_c, mask_t, L, shift, s_x_t, MASKED).to(acc_bias.dtype)
            if SEQ_IDX:
                x = _in_sequence(x, seq_row, seq_t, seq_first, offs_t - shift, mask_t, L, s_seq_t)
            acc = _add_tap(acc, k, tl.sum(g * x, axis=1), K)
    return acc, acc_bias + tl.sum(g, axis=1)


@triton.jit
def _add_tap(acc, k: tl.constexpr, value, K: tl.constexpr):
    """The tuple acc with value added to its entry k."""
    out = ()
    for i in tl.static_range(K):
        if i == k:
            out = out + (acc[i] + value,)
        else:
            out = out + (acc[i],)
    return out


@triton.jit
def _tap_operand(x_tile, offs_t, mask_c, mask_t, L, shift, s_x_t, MASKED: tl.constexpr):
    """x[:, t - shift] on the item's columns t: zero outside [0, L) and past the channels (not
    MASKED: all inside)."""
    if MASKED:
        src = offs_t - shift
        return tl.load(x_tile - shift * s_x_t, mask=mask_c[:, None] & ((src >= 0) & (src < L) & mask_t)[None, :],
                       other=0.0)
    return tl.load(x_tile - shift * s_x_t)


@triton.jit
def _in_sequence(x, seq_row, seq_t, seq_first, src, mask_t, L, s_seq_t):
    """x where its source column's sequence is the output's (columns before the start continue the
    row's first sequence), else 0."""
    src_seq = tl.load(seq_row + src * s_seq_t, mask=(src >= 0) & (src < L) & mask_t, other=seq_first)
    return tl.where((src_seq == seq_t)[None, :], x, tl.zeros_like(x))


@triton.jit
def _load(ptrs, mask, MASKED: tl.constexpr):
    if MASKED:
        return tl.load(ptrs, mask=mask, other=0.0)
    return tl.load(ptrs)


@triton.jit
def _store(ptrs, value, mask, MASKED: tl.constexpr):
    if MASKED:
        tl.store(ptrs, value, mask=mask)
    else:
        tl.store(ptrs, value)

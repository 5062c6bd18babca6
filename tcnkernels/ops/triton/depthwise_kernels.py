"""Triton kernels of the depthwise dilated Conv1d (groups == C_in == C_out): kernels only.

A depthwise conv does K multiply-adds per output, so it is memory-bound: the kernels are elementwise
FMAs on (channel, time) tiles, with no tensor-core dot, reading each input tile once per tap (the
K shifted reads of a tile hit L1) and writing each output once. The tile's contiguous dimension is
time for channel-first tensors and channels for channel-last ones (the host passes the strides;
Triton specialises a stride of 1 and vectorises along it).

  the op   y[b, c, t] = act(bias[c] + sum_k w[c, k] * x[b, c, t - (K-1-k)*D + PAD_RIGHT])
  taps     unrolled (K <= 8: the shifts are compile-time multiples of D) or a loop
"""
import triton
import triton.language as tl

from .conv_kernels import _activate, _aligned


@triton.jit
def depthwise_conv1d_kernel(
    in_ptr, w_ptr, bias_ptr, out_ptr, pre_ptr, slope_ptr,
    C, L, DILATION, PAD_RIGHT,
    s_in_b, s_in_c, s_in_t,
    s_w_c, s_w_k, s_bias, s_slope,
    s_out_b, s_out_c, s_out_t,
    s_pre_b, s_pre_c, s_pre_t,
    N_C_BLOCKS, N_T_BLOCKS,
    K: tl.constexpr,
    UNROLL: tl.constexpr,          # taps unrolled (K <= 8)
    ANTI_CAUSAL: tl.constexpr,     # the input gradient: taps read ahead, the weight's taps as they are
    HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr, ACT_P0: tl.constexpr, ACT_P1: tl.constexpr,
    STORE_PRE: tl.constexpr,
    ACC_FP64: tl.constexpr,
    ALIGN: tl.constexpr,           # L, D, PAD_RIGHT and the batch and channel strides: multiples of ALIGN
    BLOCK_C: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    """out[b, c, t] = epilogue(sum_k w[c, k] * in[b, c, t -/+ shift_k]), shift_k = (K-1-k)*D - PAD_RIGHT.

    Forward: causal-direction taps (t - shift). Input gradient (ANTI_CAUSAL): in = the output
    gradient (already through the activation's derivative), taps t + shift: the transposed conv.
    Grid: (channel block, time block, batch row) flattened, channel blocks fastest."""
    pid = tl.program_id(0)
    pid_c = pid % N_C_BLOCKS
    pid_t = (pid // N_C_BLOCKS) % N_T_BLOCKS
    pid_b = pid // (N_C_BLOCKS * N_T_BLOCKS)
    L = _aligned(L, ALIGN)
    DILATION = _aligned(DILATION, ALIGN)
    PAD_RIGHT = _aligned(PAD_RIGHT, ALIGN)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    mask_c = offs_c < C
    in_tile = (in_ptr + pid_b.to(tl.int64) * _aligned(s_in_b, ALIGN) + offs_c[:, None] * _aligned(s_in_c, ALIGN)
               + offs_t[None, :] * s_in_t)
    w_row = w_ptr + offs_c * s_w_c
    if ACC_FP64:
        acc = tl.zeros([BLOCK_C, BLOCK_T], dtype=tl.float64)
    else:
        acc = tl.zeros([BLOCK_C, BLOCK_T], dtype=tl.float32)
    if UNROLL:
        for k in tl.static_range(K):
            acc = _tap(acc, in_tile, w_row, k, offs_t, mask_c, L, DILATION, PAD_RIGHT, K, s_in_t, s_w_k, ANTI_CAUSAL)
    else:
        for k in range(K):
            acc = _tap(acc, in_tile, w_row, k, offs_t, mask_c, L, DILATION, PAD_RIGHT, K, s_in_t, s_w_k, ANTI_CAUSAL)
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
    out_offs = (pid_b.to(tl.int64) * _aligned(s_out_b, ALIGN) + offs_c[:, None] * _aligned(s_out_c, ALIGN)
                + offs_t[None, :] * s_out_t)
    tl.store(out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=mask_out)


@triton.jit
def _tap(acc, in_tile, w_row, k, offs_t, mask_c, L, DILATION, PAD_RIGHT, K: tl.constexpr, s_in_t, s_w_k,
         ANTI_CAUSAL: tl.constexpr):
    """acc + w[:, k] * in[:, t -/+ shift_k], zero outside [0, L)."""
    shift = (K - 1 - k) * DILATION - PAD_RIGHT
    if ANTI_CAUSAL:
        src = offs_t + shift
    else:
        src = offs_t - shift
    mask = mask_c[:, None] & ((src >= 0) & (src < L))[None, :]
    if ANTI_CAUSAL:
        tile = tl.load(in_tile + shift * s_in_t, mask=mask, other=0.0)
    else:
        tile = tl.load(in_tile - shift * s_in_t, mask=mask, other=0.0)
    w = tl.load(w_row + k * s_w_k, mask=mask_c, other=0.0)
    return acc + tile.to(acc.dtype) * w.to(acc.dtype)[:, None]


@triton.jit
def depthwise_weight_grad_kernel(
    x_ptr, g_ptr, partial_ptr,     # partial: (N_CHUNKS, C*K + C), the dense weight gradient's layout
    B, C, L, DILATION, PAD_RIGHT,
    s_x_b, s_x_c, s_x_t,
    s_g_b, s_g_c, s_g_t,
    N_C_BLOCKS, N_T_BLOCKS, N_CHUNKS,
    K: tl.constexpr,
    K_POW2: tl.constexpr,
    ACC_FP64: tl.constexpr,
    ALIGN: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    """Partial sums over one chunk of (batch row, time block) items, for every tap at once:
    partial[chunk, c*K + k] = sum g[b, c, t] * x[b, c, t - shift_k];  partial[chunk, C*K + c] = sum g.
    Per item the products are reduced over time in registers and added to a (BLOCK_C, K_POW2)
    accumulator; the host sums the chunks in a fixed order (bitwise reproducible, no atomics).
    Grid: (channel block, chunk) flattened, channel blocks fastest."""
    pid = tl.program_id(0)
    pid_c = pid % N_C_BLOCKS
    pid_chunk = pid // N_C_BLOCKS
    L = _aligned(L, ALIGN)
    DILATION = _aligned(DILATION, ALIGN)
    PAD_RIGHT = _aligned(PAD_RIGHT, ALIGN)
    offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_tt = tl.arange(0, BLOCK_T)
    offs_k = tl.arange(0, K_POW2)
    mask_c = offs_c < C
    n_items = B * N_T_BLOCKS
    per_chunk = tl.cdiv(n_items, N_CHUNKS)
    start = tl.minimum(pid_chunk * per_chunk, n_items)
    stop = tl.minimum(start + per_chunk, n_items)
    if ACC_FP64:
        acc = tl.zeros([BLOCK_C, K_POW2], dtype=tl.float64)
    else:
        acc = tl.zeros([BLOCK_C, K_POW2], dtype=tl.float32)
    acc_bias = tl.zeros([BLOCK_C], dtype=acc.dtype)
    for item in range(start, stop):
        b = (item // N_T_BLOCKS).to(tl.int64)
        offs_t = (item % N_T_BLOCKS) * BLOCK_T + offs_tt
        mask_t = offs_t < L
        g = tl.load(g_ptr + b * _aligned(s_g_b, ALIGN) + offs_c[:, None] * _aligned(s_g_c, ALIGN)
                    + offs_t[None, :] * s_g_t, mask=mask_c[:, None] & mask_t[None, :], other=0.0).to(acc.dtype)
        acc_bias += tl.sum(g, axis=1)
        x_tile = x_ptr + b * _aligned(s_x_b, ALIGN) + offs_c[:, None] * _aligned(s_x_c, ALIGN) + offs_t[None, :] * s_x_t
        for k in tl.static_range(K):
            shift = (K - 1 - k) * DILATION - PAD_RIGHT
            src = offs_t - shift
            x = tl.load(x_tile - shift * s_x_t, mask=mask_c[:, None] & ((src >= 0) & (src < L) & mask_t)[None, :],
                        other=0.0).to(acc.dtype)
            acc += tl.where(offs_k[None, :] == k, tl.sum(g * x, axis=1)[:, None], 0.0)
    row = partial_ptr + pid_chunk.to(tl.int64) * (C * K + C)
    tl.store(row + offs_c[:, None] * K + offs_k[None, :], acc, mask=mask_c[:, None] & (offs_k < K)[None, :])
    tl.store(row + C * K + offs_c, acc_bias, mask=mask_c)

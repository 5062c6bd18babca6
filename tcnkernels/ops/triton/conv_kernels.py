"""Triton kernels of the causal dilated Conv1d: kernels only, no allocation, no torch logic.

Notation shared by every kernel:
  the op      y[b, o, t] = act(bias[o] + sum_{i, k} W[o, i, k] * x[b, i, t - (K-1-k)*D]),  x[t < 0] = 0
  reduction   j = i*K + k runs over C_IN*K (an im2col done on the fly in the loads), so any K and
              any channel count is one loop of BLOCK_J-wide `tl.dot`s, with no padding of each tap
              to 16 channels (TCN widths are often 10-30 channels and K up to 8).
  prefixes    offs_* index vectors, mask_* their masks, *_ptrs pointer tiles, s_<tensor>_<dim> strides.
Every index multiplied by a stride is int64 first: a (64, 512, 65536) tensor has 2^31 elements.
"""
import triton
import triton.language as tl


# Lengths and batch-dependent counts are not specialised (no recompile per L % 16); strides are,
# so the common stride-1 time axis compiles to contiguous, vectorised loads.
@triton.jit(do_not_specialize=["L", "N_T_BLOCKS"])
def causal_conv1d_kernel(
    in_ptr, gate_ptr, w_ptr, bias_ptr, out_ptr,
    C_IN, C_OUT, L, K, DILATION,
    s_in_b, s_in_c, s_in_t,
    s_gate_b, s_gate_c, s_gate_t,
    s_w_out, s_w_in, s_w_k,
    s_bias,
    s_out_b, s_out_c, s_out_t,
    N_CO_BLOCKS, N_T_BLOCKS,
    ANTI_CAUSAL: tl.constexpr,
    GATE_BY_RELU: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    APPLY_RELU: tl.constexpr,
    UPCAST: tl.constexpr,
    ACC_FP64: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_CO: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    """out[b, o, t] = act(bias[o] + sum_{i,k} w[o, i, k] * in'[b, i, t -/+ (K-1-k)*DILATION]).

    Forward: in = x, causal taps (t - shift). Input gradient: in = dy, w read transposed through its
    strides, anti-causal taps (t + shift), and in' = dy * (gate > 0) when the forward fused a ReLU
    (gate = the saved output y), so the mask is applied in the loads and never materialised.
    Grid: one program per (batch row, output-channel block, time block), flattened into axis 0 with
    the channel block fastest so neighbouring programs share the same input tile in L2.
    """
    pid = tl.program_id(0).to(tl.int64)
    pid_co = pid % N_CO_BLOCKS
    pid_t = (pid // N_CO_BLOCKS) % N_T_BLOCKS
    pid_b = pid // (N_CO_BLOCKS * N_T_BLOCKS)

    offs_co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO).to(tl.int64)
    offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T).to(tl.int64)
    mask_co = offs_co < C_OUT
    in_base = in_ptr + pid_b * s_in_b
    gate_base = gate_ptr + pid_b * s_gate_b

    if ACC_FP64:
        acc = tl.zeros([BLOCK_CO, BLOCK_T], dtype=tl.float64)
    else:
        acc = tl.zeros([BLOCK_CO, BLOCK_T], dtype=tl.float32)

    n_j = C_IN * K
    for j0 in range(0, n_j, BLOCK_J):
        offs_j = j0 + tl.arange(0, BLOCK_J)
        mask_j = offs_j < n_j
        offs_i = (offs_j // K).to(tl.int64)
        offs_k = offs_j % K
        shift = ((K - 1 - offs_k) * DILATION).to(tl.int64)
        if ANTI_CAUSAL:
            t_src = offs_t[None, :] + shift[:, None]
        else:
            t_src = offs_t[None, :] - shift[:, None]
        # The bounds test on t_src *is* the causal zero padding: nothing is padded in memory.
        mask_in = mask_j[:, None] & (t_src >= 0) & (t_src < L)
        tile = tl.load(in_base + offs_i[:, None] * s_in_c + t_src * s_in_t, mask=mask_in, other=0.0)
        if UPCAST:
            tile = tile.to(tl.float32)
        if GATE_BY_RELU:
            gate = tl.load(gate_base + offs_i[:, None] * s_gate_c + t_src * s_gate_t, mask=mask_in, other=0.0)
            tile = tl.where(gate > 0, tile, tl.zeros_like(tile))
        w_ptrs = w_ptr + offs_co[:, None] * s_w_out + offs_i[None, :] * s_w_in + offs_k[None, :] * s_w_k
        w_tile = tl.load(w_ptrs, mask=mask_co[:, None] & mask_j[None, :], other=0.0)
        if UPCAST:
            w_tile = w_tile.to(tl.float32)
        acc = tl.dot(w_tile, tile, acc, input_precision=INPUT_PRECISION)

    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_co * s_bias, mask=mask_co, other=0.0)
        acc += bias.to(acc.dtype)[:, None]
    if APPLY_RELU:
        # `where(acc < 0, 0, acc)` rather than maximum: NaN propagates, as with torch.relu.
        acc = tl.where(acc < 0, tl.zeros_like(acc), acc)
    out_ptrs = out_ptr + pid_b * s_out_b + offs_co[:, None] * s_out_c + offs_t[None, :] * s_out_t
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask_co[:, None] & (offs_t < L)[None, :])


@triton.jit(do_not_specialize=["L", "N_T_BLOCKS", "N_ITEMS", "ITEMS_PER_CHUNK"])
def causal_conv1d_weight_grad_kernel(
    x_ptr, dy_ptr, gate_ptr, dw_partial_ptr, db_partial_ptr,
    C_IN, C_OUT, L, K, DILATION,
    s_x_b, s_x_c, s_x_t,
    s_dy_b, s_dy_c, s_dy_t,
    s_gate_b, s_gate_c, s_gate_t,
    N_CO_BLOCKS, N_J_BLOCKS, N_T_BLOCKS, N_ITEMS, ITEMS_PER_CHUNK,
    GATE_BY_RELU: tl.constexpr,
    UPCAST: tl.constexpr,
    ACC_FP64: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_CO: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    """Partial weight and bias gradients of one chunk of (batch row, time block) items.

    dw_partial[c, o, j] = sum_{(b, t) in chunk c} g[b, o, t] * x[b, i, t - (K-1-k)*D],  j = i*K + k
    db_partial[c, o]    = sum_{(b, t) in chunk c} g[b, o, t]       (written by the j-block-0 programs)
    with g = dy, or dy * (y > 0) after a fused ReLU. The host sums the partials over c: a fixed
    reduction order, so two backward passes give bitwise identical gradients (no atomics).
    Grid: (chunk, output-channel block, j block) flattened into axis 0.
    """
    pid = tl.program_id(0).to(tl.int64)
    pid_j = pid % N_J_BLOCKS
    pid_co = (pid // N_J_BLOCKS) % N_CO_BLOCKS
    pid_chunk = pid // (N_J_BLOCKS * N_CO_BLOCKS)

    offs_co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO).to(tl.int64)
    offs_j = pid_j * BLOCK_J + tl.arange(0, BLOCK_J)
    mask_co = offs_co < C_OUT
    n_j = C_IN * K
    mask_j = offs_j < n_j
    offs_i = (offs_j // K).to(tl.int64)
    offs_k = offs_j % K
    shift = ((K - 1 - offs_k) * DILATION).to(tl.int64)

    if ACC_FP64:
        acc = tl.zeros([BLOCK_CO, BLOCK_J], dtype=tl.float64)
        acc_bias = tl.zeros([BLOCK_CO], dtype=tl.float64)
    else:
        acc = tl.zeros([BLOCK_CO, BLOCK_J], dtype=tl.float32)
        acc_bias = tl.zeros([BLOCK_CO], dtype=tl.float32)

    item_start = pid_chunk * ITEMS_PER_CHUNK
    item_end = tl.minimum(item_start + ITEMS_PER_CHUNK, N_ITEMS)
    for item in range(item_start, item_end):
        b = item // N_T_BLOCKS
        offs_t = (item % N_T_BLOCKS) * BLOCK_T + tl.arange(0, BLOCK_T).to(tl.int64)
        mask_g = mask_co[:, None] & (offs_t < L)[None, :]
        g = tl.load(dy_ptr + b * s_dy_b + offs_co[:, None] * s_dy_c + offs_t[None, :] * s_dy_t,
                    mask=mask_g, other=0.0)
        if UPCAST:
            g = g.to(tl.float32)
        if GATE_BY_RELU:
            gate = tl.load(gate_ptr + b * s_gate_b + offs_co[:, None] * s_gate_c + offs_t[None, :] * s_gate_t,
                           mask=mask_g, other=0.0)
            g = tl.where(gate > 0, g, tl.zeros_like(g))
        t_src = offs_t[:, None] - shift[None, :]
        mask_x = (t_src >= 0) & (offs_t < L)[:, None] & mask_j[None, :]
        x_cols = tl.load(x_ptr + b * s_x_b + offs_i[None, :] * s_x_c + t_src * s_x_t, mask=mask_x, other=0.0)
        if UPCAST:
            x_cols = x_cols.to(tl.float32)
        acc = tl.dot(g, x_cols, acc, input_precision=INPUT_PRECISION)
        acc_bias += tl.sum(g.to(acc_bias.dtype), axis=1)

    n_co = C_OUT
    tl.store(dw_partial_ptr + pid_chunk * n_co * n_j + offs_co[:, None] * n_j + offs_j[None, :], acc,
             mask=mask_co[:, None] & mask_j[None, :])
    if pid_j == 0:
        tl.store(db_partial_ptr + pid_chunk * n_co + offs_co, acc_bias, mask=mask_co)

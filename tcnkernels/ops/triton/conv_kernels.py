"""Triton kernels of the causal dilated Conv1d: kernels only, no allocation, no torch logic.

Notation shared by every kernel:
  the op      y[b, o, t] = act(bias[o] + sum_{i, k} W[o, i, k] * x[b, i, t - (K-1-k)*D]),  x[t < 0] = 0
  loop        one iteration per (input-channel block, tap k): the tap and its shift (K-1-k)*D are
              scalars, the tile offsets are hoisted out of the loop, and each iteration adds a
              scalar to them. Masks on the shifted time index *are* the causal padding.
  offsets     int64 only for the batch-row base; in-row offsets are int32 unless ROW_INT64 (the
              host picks it when one row of a tensor spans 2^31 elements or more).
  ALIGN       the host guarantees L, D and the channel and batch strides are multiples of ALIGN
              elements; `_aligned` tells Triton's alignment analysis so, which is what lets masked,
              shifted time tiles load 16 bytes at a time.
  prefixes    offs_* index vectors, mask_* their masks, *_row / *_ptrs pointers, s_<tensor>_<dim> strides.
"""
import triton
import triton.language as tl


@triton.jit
def _aligned(value, ALIGN: tl.constexpr):
    # value // ALIGN * ALIGN == value (the host's claim), but only the product form carries the
    # divisibility to the compiler (tl.multiple_of on a scalar argument does not, measured). A wrong
    # claim would change the value, so the tests run the interpreter with device asserts on.
    if ALIGN > 1:
        tl.device_assert(value % ALIGN == 0, "tcnkernels: an ALIGN claim does not hold")
        value = value // ALIGN * ALIGN
    return value


@triton.jit
def _first_tap(K, DILATION, reach):
    # Taps whose shift (K-1-k)*D exceeds `reach` read only padding for the whole time block.
    return tl.maximum(K - 1 - reach // DILATION, 0)


@triton.jit
def causal_conv1d_kernel(
    in_ptr, w_ptr, bias_ptr, out_ptr,
    C_IN, C_OUT, L, K, DILATION, W_ROWS, W_COLS,
    s_in_b, s_in_c, s_in_t,
    s_w_out, s_w_in, s_w_k,
    s_bias,
    s_out_b, s_out_c, s_out_t,
    N_CO_BLOCKS, N_T_BLOCKS,
    ANTI_CAUSAL: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    APPLY_RELU: tl.constexpr,
    UPCAST: tl.constexpr,
    ACC_FP64: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    ALIGN: tl.constexpr,
    ROW_INT64: tl.constexpr,
    BLOCK_CO: tl.constexpr,
    BLOCK_CI: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    """out[b, o, t] = act(bias[o] + sum_{i,k} w[o, i, k] * in[b, i, t -/+ (K-1-k)*DILATION]).

    Forward: in = x, causal taps (t - shift). Input gradient: in = g (dy, ReLU-gated already), w read
    transposed through its strides, anti-causal taps (t + shift), no bias, no activation.
    W_ROWS x W_COLS bound the weight tile's loads: C_OUT x C_IN, or wider where the host zero-padded
    the weight (a K-major copy with 16-element rows), so that its loads need no per-element mask.
    Grid: one program per (output-channel block, time block, batch row), flattened into axis 0 with
    the channel block fastest so neighbouring programs share the same input tile in L2.
    """
    pid = tl.program_id(0)
    pid_co = pid % N_CO_BLOCKS
    pid_t = (pid // N_CO_BLOCKS) % N_T_BLOCKS
    pid_b = pid // (N_CO_BLOCKS * N_T_BLOCKS)
    L = _aligned(L, ALIGN)
    DILATION = _aligned(DILATION, ALIGN)
    s_in_c = _aligned(s_in_c, ALIGN)
    s_out_c = _aligned(s_out_c, ALIGN)

    t0 = pid_t * BLOCK_T
    offs_co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
    offs_t = t0 + tl.arange(0, BLOCK_T)
    offs_ci = tl.arange(0, BLOCK_CI)
    if ROW_INT64:
        offs_co, offs_t, offs_ci = offs_co.to(tl.int64), offs_t.to(tl.int64), offs_ci.to(tl.int64)
    in_row = in_ptr + pid_b.to(tl.int64) * _aligned(s_in_b, ALIGN)
    # Hoisted tile offsets: an iteration only adds the scalar offset of its channel block and tap.
    x_offs = offs_ci[:, None] * s_in_c + offs_t[None, :] * s_in_t
    w_offs = offs_co[:, None] * s_w_out + offs_ci[None, :] * s_w_in
    mask_co = offs_co < C_OUT
    mask_w_rows = offs_co < W_ROWS

    if ANTI_CAUSAL:
        k_first = _first_tap(K, DILATION, L - 1 - t0)
    else:
        k_first = _first_tap(K, DILATION, t0 + BLOCK_T - 1)
    n_iter = tl.cdiv(C_IN, BLOCK_CI) * (K - k_first)

    if ACC_FP64:
        acc = tl.zeros([BLOCK_CO, BLOCK_T], dtype=tl.float64)
    else:
        acc = tl.zeros([BLOCK_CO, BLOCK_T], dtype=tl.float32)
    k = k_first
    ci0 = 0
    for _ in range(n_iter):
        shift = (K - 1 - k) * DILATION
        if ANTI_CAUSAL:
            x_ptrs = in_row + (ci0 * s_in_c + shift * s_in_t) + x_offs
            mask_t = offs_t < L - shift
        else:
            x_ptrs = in_row + (ci0 * s_in_c - shift * s_in_t) + x_offs
            mask_t = (offs_t >= shift) & (offs_t < L)
        mask_ci = offs_ci < C_IN - ci0
        tile = tl.load(x_ptrs, mask=mask_ci[:, None] & mask_t[None, :], other=0.0)
        w_tile = tl.load(w_ptr + (ci0 * s_w_in + k * s_w_k) + w_offs,
                         mask=mask_w_rows[:, None] & (offs_ci < W_COLS - ci0)[None, :], other=0.0)
        if UPCAST:
            tile = tile.to(tl.float32)
            w_tile = w_tile.to(tl.float32)
        acc = tl.dot(w_tile, tile, acc, input_precision=INPUT_PRECISION)
        # next (channel block, tap): taps run fastest, so the K shifted reads of a tile hit L1/L2
        k += 1
        wrap = k == K
        k = tl.where(wrap, k_first, k)
        ci0 = tl.where(wrap, ci0 + BLOCK_CI, ci0)

    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_co * s_bias, mask=mask_co, other=0.0)
        acc += bias.to(acc.dtype)[:, None]
    if APPLY_RELU:
        # `where(acc < 0, 0, acc)` rather than maximum: NaN propagates, as with torch.relu.
        acc = tl.where(acc < 0, tl.zeros_like(acc), acc)
    out_ptrs = (out_ptr + pid_b.to(tl.int64) * _aligned(s_out_b, ALIGN)
                + offs_co[:, None] * s_out_c + offs_t[None, :] * s_out_t)
    tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mask_co[:, None] & (offs_t < L)[None, :])


@triton.jit
def causal_conv1d_weight_grad_kernel(
    x_ptr, dy_ptr, y_ptr, g_ptr, partial_ptr,
    B, C_IN, C_OUT, L, K, DILATION,
    s_x_b, s_x_c, s_x_t,
    s_dy_b, s_dy_c, s_dy_t,
    s_y_b, s_y_c, s_y_t,
    N_CO_BLOCKS, N_CI_BLOCKS, N_T_BLOCKS, N_CHUNKS,
    GATE_BY_RELU: tl.constexpr,
    WRITE_G: tl.constexpr,
    UPCAST: tl.constexpr,
    ACC_FP64: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    ALIGN: tl.constexpr,
    ROW_INT64: tl.constexpr,
    BLOCK_CO: tl.constexpr,
    BLOCK_CI: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    """Partial weight and bias gradients of one chunk of (batch row, time block) items, for one tap.

    partial[c, o*C_IN*K + i*K + k] = sum_{(b, t) in chunk c} g[b, o, t] * x[b, i, t - (K-1-k)*D]
    partial[c, C_OUT*C_IN*K + o]   = sum_{(b, t) in chunk c} g[b, o, t]   (by the shift-0 tap's programs)
    with g = dy, or dy * (y > 0) after a fused ReLU. With WRITE_G the shift-0 tap's programs of the
    first input-channel block also store g (B, C_OUT, L), so the input gradient reads the gate once
    applied. The host sums the partials over c: a fixed order, bitwise identical on every run.
    Grid: (input-channel block, output-channel block, tap, chunk) flattened into axis 0.
    """
    pid = tl.program_id(0)
    pid_ci = pid % N_CI_BLOCKS
    pid_co = (pid // N_CI_BLOCKS) % N_CO_BLOCKS
    k = (pid // (N_CI_BLOCKS * N_CO_BLOCKS)) % K
    pid_chunk = pid // (N_CI_BLOCKS * N_CO_BLOCKS * K)
    L = _aligned(L, ALIGN)
    DILATION = _aligned(DILATION, ALIGN)
    s_x_c = _aligned(s_x_c, ALIGN)
    s_dy_c = _aligned(s_dy_c, ALIGN)
    s_y_c = _aligned(s_y_c, ALIGN)
    s_x_b = _aligned(s_x_b, ALIGN)
    s_dy_b = _aligned(s_dy_b, ALIGN)
    s_y_b = _aligned(s_y_b, ALIGN)

    shift = (K - 1 - k) * DILATION
    # This tap's time blocks before tb_first read only padding: its items start there.
    tb_first = tl.minimum(shift // BLOCK_T, N_T_BLOCKS)
    n_tb = N_T_BLOCKS - tb_first
    n_items = B * n_tb
    per_chunk = tl.cdiv(n_items, N_CHUNKS)
    start = tl.minimum(pid_chunk * per_chunk, n_items)
    n_iter = tl.minimum(per_chunk, n_items - start)
    b = start // tl.maximum(n_tb, 1)
    tb = tb_first + start % tl.maximum(n_tb, 1)
    is_first = (pid_ci == 0) & (k == K - 1)  # the shift-0 tap of the first input-channel block

    offs_co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
    offs_ci = pid_ci * BLOCK_CI + tl.arange(0, BLOCK_CI)
    offs_tt = tl.arange(0, BLOCK_T)
    if ROW_INT64:
        offs_co, offs_ci, offs_tt = offs_co.to(tl.int64), offs_ci.to(tl.int64), offs_tt.to(tl.int64)
    mask_co = offs_co < C_OUT
    mask_ci = offs_ci < C_IN
    dy_offs = offs_co[:, None] * s_dy_c + offs_tt[None, :] * s_dy_t
    y_offs = offs_co[:, None] * s_y_c + offs_tt[None, :] * s_y_t
    g_offs = offs_co[:, None] * L + offs_tt[None, :]  # g is allocated contiguous (B, C_OUT, L)
    x_offs = offs_tt[:, None] * s_x_t + offs_ci[None, :] * s_x_c  # x read transposed: (t, i)

    if ACC_FP64:
        acc = tl.zeros([BLOCK_CO, BLOCK_CI], dtype=tl.float64)
        acc_bias = tl.zeros([BLOCK_CO], dtype=tl.float64)
    else:
        acc = tl.zeros([BLOCK_CO, BLOCK_CI], dtype=tl.float32)
        acc_bias = tl.zeros([BLOCK_CO], dtype=tl.float32)
    for _ in range(n_iter):
        t0 = tb * BLOCK_T
        b64 = b.to(tl.int64)
        mask_t = offs_tt < L - t0
        mask_g = mask_co[:, None] & mask_t[None, :]
        g = tl.load(dy_ptr + b64 * s_dy_b + t0 * s_dy_t + dy_offs, mask=mask_g, other=0.0)
        if GATE_BY_RELU:
            y = tl.load(y_ptr + b64 * s_y_b + t0 * s_y_t + y_offs, mask=mask_g, other=0.0)
            g = tl.where(y > 0, g, tl.zeros_like(g))
        mask_x = (offs_tt >= shift - t0) & mask_t
        x_cols = tl.load(x_ptr + b64 * s_x_b + (t0 - shift) * s_x_t + x_offs, mask=mask_x[:, None] & mask_ci[None, :],
                         other=0.0)
        if is_first:
            if WRITE_G:
                tl.store(g_ptr + b64 * C_OUT * L + t0 + g_offs, g, mask=mask_g)
            acc_bias += tl.sum(g.to(acc_bias.dtype), axis=1)
        if UPCAST:
            g = g.to(tl.float32)
            x_cols = x_cols.to(tl.float32)
        acc = tl.dot(g, x_cols, acc, input_precision=INPUT_PRECISION)
        # next item: time blocks run fastest within a batch row
        tb += 1
        wrap = tb == N_T_BLOCKS
        tb = tl.where(wrap, tb_first, tb)
        b = tl.where(wrap, b + 1, b)

    n_w = C_OUT * C_IN * K
    chunk_row = partial_ptr + pid_chunk.to(tl.int64) * (n_w + C_OUT)
    tl.store(chunk_row + offs_co[:, None] * (C_IN * K) + offs_ci[None, :] * K + k, acc,
             mask=mask_co[:, None] & mask_ci[None, :])
    if is_first:
        tl.store(chunk_row + n_w + offs_co, acc_bias, mask=mask_co)


@triton.jit
def weight_kmajor_kernel(
    w_ptr, out_ptr,
    C_OUT, C_IN, K, C_IN_PAD,
    s_w_out, s_w_in, s_w_k,
    BLOCK: tl.constexpr,
):
    """out[k, o, i] = w[o, i, k] for i < C_IN, 0 for C_IN <= i < C_IN_PAD: the layout the conv kernels
    read weights in. Rows of 16-element multiples along the reduction channel make a weight tile's
    loads 16 bytes wide and their masks free (the zero padding multiplies masked-out input rows)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    i = offs % C_IN_PAD
    o = (offs // C_IN_PAD) % C_OUT
    k = offs // (C_IN_PAD * C_OUT)
    inside = offs < K * C_OUT * C_IN_PAD
    w = tl.load(w_ptr + o * s_w_out + i * s_w_in + k * s_w_k, mask=inside & (i < C_IN), other=0.0)
    tl.store(out_ptr + offs, w, mask=inside)


@triton.jit
def weight_grad_finalize_kernel(
    partial_ptr, dw_ptr, db_ptr,
    N_CHUNKS, N_W, N_COLS,
    BLOCK: tl.constexpr,
):
    """dw.flat[j] = sum_c partial[c, j] for j < N_W, db[j - N_W] for the rest: the chunks summed in
    order (bitwise reproducible), cast to the parameters' dtype once."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < N_COLS
    acc = tl.zeros([BLOCK], dtype=partial_ptr.dtype.element_ty)
    ptrs = partial_ptr + offs
    for _ in range(N_CHUNKS):
        acc += tl.load(ptrs, mask=mask, other=0.0)
        ptrs += N_COLS  # 64-bit pointer arithmetic: no int32 product to overflow
    tl.store(dw_ptr + offs, acc.to(dw_ptr.dtype.element_ty), mask=offs < N_W)
    tl.store(db_ptr + (offs - N_W), acc.to(db_ptr.dtype.element_ty), mask=mask & (offs >= N_W))

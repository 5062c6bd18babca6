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
              shifted time tiles load 16 bytes at a time. ALIGN_OUT: the same claim for the
              unshifted epilogue accesses (L, out's strides, the residual's), which stay aligned at
              dilation 1 where ALIGN drops to 1.
  prefixes    offs_* index vectors, mask_* their masks, *_row / *_ptrs pointers, s_<tensor>_<dim> strides.
"""
import inspect

import triton
import triton.language as tl

# div.approx.f32 (2 ulp; tl.math.fdiv's `approx`, Triton 3.7 on): two instructions where a plain
# division takes div.full's range checks as well (sm_90 SASS: 5 against 8 per SiLU).
APPROX_DIV = tl.constexpr("approx" in inspect.signature(tl.math.fdiv).parameters)


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
def _in_row(offs, ROW_INT64: tl.constexpr):
    # In-row offsets stay int32 (half the integer work of int64) unless the host found a row that
    # spans 2^31 elements; batch-row bases are always int64.
    if ROW_INT64:
        offs = offs.to(tl.int64)
    return offs


@triton.jit
def _accumulator(M: tl.constexpr, N: tl.constexpr, ACC_FP64: tl.constexpr):
    # fp32 accumulation; fp64 for fp64 inputs, so that gradcheck runs through the kernels.
    if ACC_FP64:
        acc = tl.zeros([M, N], dtype=tl.float64)
    else:
        acc = tl.zeros([M, N], dtype=tl.float32)
    return acc


@triton.jit
def _operand(tile, UPCAST: tl.constexpr):
    # fp32 and fp64 tiles go into tl.dot as they are; 16-bit ones too on a GPU (tensor cores), but
    # the interpreter computes bf16 dots wrong, so the host asks for fp32 there (UPCAST).
    if UPCAST:
        tile = tile.to(tl.float32)
    return tile


@triton.jit
def _first_tap(K, DILATION, reach):
    # Taps whose shift (K-1-k)*D exceeds `reach` read only padding for the whole time block.
    return tl.maximum(K - 1 - reach // DILATION, 0)


@triton.jit
def _sigmoid(v):
    # 1 / (1 + 2^(-v log2 e)): exp2 compiles to one MUFU.EX2 (flushing denormals, which 1 + e cannot
    # tell), where tl.exp and tl.sigmoid add a denormal range check around it; with APPROX_DIV the
    # division is one MUFU.RCP and a multiply. 12 instructions per element became 5 (sm_90). Exact
    # at both ends: e overflowing to inf gives 0, underflowing to 0 gives 1. fp64 keeps tl.sigmoid.
    if v.dtype == tl.float64:
        s = tl.sigmoid(v)
    else:
        e = tl.exp2(v * -1.4426950408889634)
        if APPROX_DIV:
            s = tl.math.fdiv(1.0, 1.0 + e, approx=True)
        else:
            s = 1.0 / (1.0 + e)
    return s


@triton.jit
def _tanh(v):
    # 1 - 2 sigmoid(-2v) = 1 - 2 / (e^2v + 1): exact at both ends (1 and -1).
    return 1.0 - 2.0 * _sigmoid(-2.0 * v)


@triton.jit
def _softplus(v, BETA: tl.constexpr, THRESHOLD: tl.constexpr):
    # torch's: log(1 + e^(beta v)) / beta, and v itself where beta v > threshold.
    return tl.where(v * BETA > THRESHOLD, v, tl.log(1.0 + tl.exp(v * BETA)) / BETA)


@triton.jit
def _mish_tanh(v):
    # tanh(softplus(v)) = n / (n + 2), n = e^v (e^v + 2): one exponential and one division (rather
    # than tanh's and softplus' two exponentials, a log and two divisions); 1 where softplus(v) = v
    # (v > 20, torch's threshold), where n would overflow.
    e = tl.exp(tl.minimum(v, 20.0))
    n = e * (e + 2.0)
    return tl.where(v > 20.0, 1.0, n / (n + 2.0))


@triton.jit
def _activate(acc, ACTIVATION: tl.constexpr, P0: tl.constexpr, P1: tl.constexpr, slope):
    """activations.CODES[name] == ACTIVATION, in the accumulator's dtype, with its parameters P0, P1
    (Activation.kernel_params) and, for PReLU, the slope of each row ((rows,) tensor)."""
    if ACTIVATION == 1:
        # `where(acc < 0, 0, acc)` rather than maximum: NaN propagates, as with torch.relu.
        acc = tl.where(acc < 0, tl.zeros_like(acc), acc)
    elif ACTIVATION == 2:  # leaky ReLU, negative_slope P0
        acc = tl.where(acc > 0, acc, acc * P0)
    elif ACTIVATION == 3:  # ELU, alpha P0
        acc = tl.where(acc > 0, acc, P0 * (tl.exp(acc) - 1.0))
    elif ACTIVATION == 4:  # SELU
        acc = tl.where(acc > 0, acc * 1.0507009873554805, 1.7580993408473766 * (tl.exp(acc) - 1.0))
    elif ACTIVATION == 5:  # GELU (erf)
        acc = 0.5 * acc * (1.0 + tl.erf(acc * 0.7071067811865476))
    elif ACTIVATION == 6:  # GELU (tanh approximation)
        acc = 0.5 * acc * (1.0 + _tanh(0.7978845608028654 * (acc + 0.044715 * acc * acc * acc)))
    elif ACTIVATION == 7:  # SiLU
        acc = acc * _sigmoid(acc)
    elif ACTIVATION == 8:  # Mish: v tanh(softplus(v)), softplus with torch's threshold 20
        acc = acc * _mish_tanh(acc)
    elif ACTIVATION == 9:  # softplus, beta P0, threshold P1
        acc = _softplus(acc, P0, P1)
    elif ACTIVATION == 10:
        acc = _tanh(acc)
    elif ACTIVATION == 11:
        acc = _sigmoid(acc)
    elif ACTIVATION == 12:  # PReLU: a learned slope per row
        acc = tl.where(acc > 0, acc, acc * slope.to(acc.dtype)[:, None])
    return acc


@triton.jit
def _activation_grad(g, v, ACTIVATION: tl.constexpr, P0: tl.constexpr, P1: tl.constexpr):
    """g * act'(z) for the elementwise activations (not ReLU, PReLU or the gated units), from v: the
    output where the derivative is a function of it (leaky ReLU, ELU, SELU, tanh, sigmoid), else the
    pre-activation z (activations.Activation.from_output says which the host keeps)."""
    if ACTIVATION == 1:
        g = tl.where(v > 0, g, tl.zeros_like(g))
    elif ACTIVATION == 2:
        g = tl.where(v > 0, g, g * P0)
    elif ACTIVATION == 3:
        g = tl.where(v > 0, g, g * (v + P0))
    elif ACTIVATION == 4:
        g = tl.where(v > 0, g * 1.0507009873554805, g * (v + 1.7580993408473766))
    elif ACTIVATION == 5:
        g = g * (0.5 * (1.0 + tl.erf(v * 0.7071067811865476)) + v * tl.exp(-0.5 * v * v) * 0.3989422804014327)
    elif ACTIVATION == 6:
        t = _tanh(0.7978845608028654 * (v + 0.044715 * v * v * v))
        g = g * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * 0.7978845608028654 * (1.0 + 0.134145 * v * v))
    elif ACTIVATION == 7:
        s = _sigmoid(v)
        g = g * s * (1.0 + v * (1.0 - s))
    elif ACTIVATION == 8:
        t = _mish_tanh(v)
        g = g * (t + v * (1.0 - t * t) * _sigmoid(v))
    elif ACTIVATION == 9:
        g = tl.where(v * P0 > P1, g, g * _sigmoid(v * P0))
    elif ACTIVATION == 10:
        g = g * (1.0 - v * v)
    elif ACTIVATION == 11:
        g = g * v * (1.0 - v)
    return g


@triton.jit
def _gate_grad(g, a, b, first_half, ACTIVATION: tl.constexpr):
    """dz of a gated unit y = f(a) * sigmoid(b) (f: identity for GLU (13), tanh (14)), for rows of z
    that are a (first_half) or b: g * sigmoid(b) * f'(a), or g * f(a) * sigmoid(b) (1 - sigmoid(b))."""
    sb = _sigmoid(b)
    if ACTIVATION == 14:
        fa = _tanh(a)
        da = g * sb * (1.0 - fa * fa)
    else:
        fa = a
        da = g * sb
    return tl.where(first_half[:, None], da, g * fa * sb * (1.0 - sb))


@triton.jit
def _dropout_keep(seed_ptr, SEED_INDEX: tl.constexpr, row, t0, L, BLOCK_T: tl.constexpr, CHANNEL: tl.constexpr,
                  THRESHOLD: tl.constexpr):
    """Philox keep mask of a (rows, BLOCK_T) tile starting at step t0 (a multiple of 4): kept where the
    draw >= THRESHOLD. Element mode: step t of row r (r = b * C + c) takes draw t % 4 of counter
    r * ceil(L / 4) + t // 4, so one Philox evaluation serves four steps; channel mode: draw 0 of
    counter r for the whole row. The same bits as tcnkernels.ops.reference.dropout_keep_mask."""
    seed = tl.load(seed_ptr + SEED_INDEX)
    if CHANNEL:
        keep_rows = tl.randint(seed, row) >= THRESHOLD
        return keep_rows[:, None] & (tl.arange(0, BLOCK_T) >= 0)[None, :]
    else:
        counters = row[:, None] * ((L + 3) // 4) + (t0 // 4 + tl.arange(0, BLOCK_T // 4))[None, :]
        r0, r1, r2, r3 = tl.randint4x(seed, counters)
        # tl.join adds a minor dimension: join(join(r0, r2), join(r1, r3)) is [.., 4] = r0, r1, r2, r3
        draws = tl.reshape(tl.join(tl.join(r0, r2), tl.join(r1, r3)), (row.shape[0], BLOCK_T))
        return draws >= THRESHOLD


@triton.jit
def causal_conv1d_kernel(
    # Tensors; None where the epilogue does not read or write one
    in_ptr, w_ptr, bias_ptr, out_ptr,
    branch_ptr, gate_ptr, seed_ptr,  # a block's pre-residual store, a backward's gate, dropout seeds
    res_ptr, wr_ptr, res_bias_ptr,   # the residual input, its 1x1 weight and bias
    pre_ptr, slope_ptr,              # the pre-activation store, PReLU's slopes
    out2_ptr,                        # SPLIT: where the rows from SPLIT_ROWS on go
    # Sizes (C_IN, C_OUT, W_ROWS, W_COLS: of one group)
    C_IN, C_OUT, L, K, DILATION,
    PAD_RIGHT,                       # the taps' offset: in[t - (K-1-k)*D + PAD_RIGHT] (forward)
    N_GROUPS, s_w_group,             # groups, and the weight offset from one group's to the next
    GATE_ROWS,                       # a gated unit: its second half's first output channel
    W_ROWS, W_COLS,                  # bounds of the weight loads (the host zero-pads the weight)
    C_RES, WR_COLS,                  # channels of the residual input, bound of its weight's loads
    SPLIT_ROWS,                      # SPLIT: out's rows; the rest are out2's
    # Strides, in elements
    s_in_b, s_in_c, s_in_t,
    s_w_out, s_w_in, s_w_k,
    s_bias,
    s_out_b, s_out_c, s_out_t,
    s_res_b, s_res_c, s_res_t,
    s_wr_out, s_wr_in, s_res_bias,
    s_pre_b, s_pre_c, s_pre_t, s_slope,
    s_out2_b, s_out2_c, s_out2_t,
    # The grid: programs per batch row are N_CO_BLOCKS x N_T_BLOCKS
    N_CO_BLOCKS, N_T_BLOCKS,
    # Direction and epilogue, in the order applied (tcnkernels.ops.specs.Epilogue)
    ANTI_CAUSAL: tl.constexpr,
    SHIFTED: tl.constexpr,           # PAD_RIGHT != 0
    GROUPED: tl.constexpr,           # N_GROUPS > 1
    AUX: tl.constexpr,               # + the 1x1 conv wr of res (a conditioning input), before the bias
    HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr, ACT_P0: tl.constexpr, ACT_P1: tl.constexpr,
    GATED: tl.constexpr,             # ACTIVATION is a gated unit: two accumulators, rows o and o + GATE_ROWS
    STORE_PRE: tl.constexpr,         # pre_ptr <- the pre-activation (both halves of a gated unit)
    DROPOUT: tl.constexpr, DROP_CHANNEL: tl.constexpr, DROP_THRESHOLD: tl.constexpr, DROP_SCALE: tl.constexpr,
    SEED_INDEX: tl.constexpr,
    GATE: tl.constexpr, GATE_SCALE: tl.constexpr,  # 1: ReLU-and-dropout gate; 2: GATE_ACTIVATION's derivative
    GATE_ACTIVATION: tl.constexpr, GATE_FROM_INPUT: tl.constexpr, GATE_DROPOUT: tl.constexpr,
    STORE_BRANCH: tl.constexpr,
    RESIDUAL: tl.constexpr, RES_SCALE: tl.constexpr,
    SPLIT: tl.constexpr,             # rows [0, SPLIT_ROWS) to out, the rest (with the residual) to out2
    FINAL_ACTIVATION: tl.constexpr,
    FINAL_PRE: tl.constexpr,         # pre_ptr <- the value before the final activation (not before the first)
    # Precision and alignment
    UPCAST: tl.constexpr,
    ACC_FP64: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    ALIGN: tl.constexpr,
    ALIGN_OUT: tl.constexpr,
    ROW_INT64: tl.constexpr,
    LAST_ALIGN_IN: tl.constexpr,     # a channel-last input (s_in_c == 1): its time and batch strides' and
    LAST_ALIGN_OUT: tl.constexpr,    # channel count's ALIGN (tiles load, store 16 bytes along channels); 1: none
    # Tiles
    BLOCK_CO: tl.constexpr,
    BLOCK_CI: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    """out[b, o, t] = epilogue(sum_{i,k} w[o, i, k] * in[b, i, t -/+ (K-1-k)*DILATION]).

    Forward: in = x, causal taps (t - shift). Input gradient: in = g (dy, gated already), w read
    transposed through its strides, anti-causal taps (t + shift). The epilogue, in order, each step
    compiled in only when asked for:
      + sum_i wr[o, i] res[b, i, t] (AUX: a 1x1 conditioning input read beside `in`, unshifted, in
        both halves of a gated unit: WaveNet's c);
      + bias; activation (ACTIVATION: 0 none, 1 ReLU);
      dropout (Philox mask of seed_ptr[SEED_INDEX], kept values * DROP_SCALE);
      * (gate > 0) * GATE_SCALE (a backward's ReLU-and-dropout gate, from a saved output);
      branch_ptr <- acc (a block's conv2 keeps its pre-residual output for the backward);
      + residual: RESIDUAL 1 adds RES_SCALE * res[b, o, t]; 2 adds res_bias[o] + sum_i wr[o, i] res[b, i, t]
        (the block's 1x1 downsample, or its transpose in the backward, in the same program);
      final activation (FINAL_ACTIVATION, the same codes); out_ptr <- acc.
    SPLIT (a WaveNet block's skip + residual 1x1s): rows o < SPLIT_ROWS go to out as they are, rows
    from SPLIT_ROWS on to out2[b, o - SPLIT_ROWS, t], RES_SCALE * res[b, o - SPLIT_ROWS, t] added
    (RESIDUAL 1); no final activation.
    branch, gate and out share out's strides. W_ROWS x W_COLS (WR_COLS for wr) bound the weight
    loads: C_OUT x C_IN, or wider where the host zero-padded the weight (K-major, 16-element rows),
    so that those loads need no per-element mask.
    Grid: one program per (output-channel block, time block, batch row), flattened into axis 0 with
    the channel block fastest so neighbouring programs share the same input tile in L2.
    """
    pid = tl.program_id(0)
    pid_co = pid % N_CO_BLOCKS
    pid_t = (pid // N_CO_BLOCKS) % N_T_BLOCKS
    pid_b = pid // (N_CO_BLOCKS * N_T_BLOCKS)
    if GROUPED:
        pid_g = pid_b % N_GROUPS
        pid_b = pid_b // N_GROUPS
    L_out = _aligned(L, ALIGN_OUT)  # the epilogue's bound: out, gate, branch and res are not shifted
    L = _aligned(L, ALIGN)
    DILATION = _aligned(DILATION, ALIGN)
    s_in_c = _aligned(s_in_c, ALIGN)
    s_out_c = _aligned(s_out_c, ALIGN_OUT)
    if LAST_ALIGN_IN > 1:  # (and the channel count, which bounds the masks along channels)
        s_in_t = _aligned(s_in_t, LAST_ALIGN_IN)
        s_in_b = _aligned(s_in_b, LAST_ALIGN_IN)
        C_IN = _aligned(C_IN, LAST_ALIGN_IN)
    if LAST_ALIGN_OUT > 1:
        s_out_t = _aligned(s_out_t, LAST_ALIGN_OUT)
        s_out_b = _aligned(s_out_b, LAST_ALIGN_OUT)
    if SHIFTED:
        PAD_RIGHT = _aligned(PAD_RIGHT, ALIGN)

    t0 = pid_t * BLOCK_T
    offs_co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
    offs_t = t0 + tl.arange(0, BLOCK_T)
    offs_ci = tl.arange(0, BLOCK_CI)
    offs_co, offs_t, offs_ci = _in_row(offs_co, ROW_INT64), _in_row(offs_t, ROW_INT64), _in_row(offs_ci, ROW_INT64)
    in_row = in_ptr + pid_b.to(tl.int64) * _aligned(s_in_b, ALIGN)
    offs_o = offs_co  # the output channel (of all groups)
    if GROUPED:
        in_row += pid_g.to(tl.int64) * C_IN * s_in_c
        w_ptr += pid_g.to(tl.int64) * s_w_group
        offs_o = pid_g * C_OUT + offs_co
    # Hoisted tile offsets: an iteration only adds the scalar offset of its channel block and tap.
    x_offs = offs_ci[:, None] * s_in_c + offs_t[None, :] * s_in_t
    w_offs = offs_co[:, None] * s_w_out + offs_ci[None, :] * s_w_in
    mask_co = offs_co < C_OUT
    mask_w_rows = offs_co < W_ROWS

    if ANTI_CAUSAL:
        reach = L - 1 - t0
    else:
        reach = t0 + BLOCK_T - 1
    if SHIFTED:
        reach += PAD_RIGHT
    k_first = _first_tap(K, DILATION, reach)
    n_iter = tl.cdiv(C_IN, BLOCK_CI) * (K - k_first)

    acc = _accumulator(BLOCK_CO, BLOCK_T, ACC_FP64)
    if GATED:
        acc_b = _accumulator(BLOCK_CO, BLOCK_T, ACC_FP64)
    k = k_first
    ci0 = 0
    for _ in range(n_iter):
        shift = (K - 1 - k) * DILATION
        if SHIFTED:
            shift -= PAD_RIGHT  # may go negative: the tap reads ahead
        if LAST_ALIGN_IN > 1:  # channels are contiguous: their block offset's divisibility, for the compiler
            ci0 = ci0 // BLOCK_CI * BLOCK_CI
        if ANTI_CAUSAL:
            x_ptrs = in_row + (ci0 * s_in_c + shift * s_in_t) + x_offs
            if SHIFTED:
                mask_t = (offs_t >= -shift) & (offs_t < L - tl.maximum(shift, 0))
            else:
                mask_t = offs_t < L - shift
        else:
            x_ptrs = in_row + (ci0 * s_in_c - shift * s_in_t) + x_offs
            if SHIFTED:
                mask_t = (offs_t >= shift) & (offs_t < L + tl.minimum(shift, 0))
            else:
                mask_t = (offs_t >= shift) & (offs_t < L)
        mask_ci = offs_ci < C_IN - ci0
        tile = tl.load(x_ptrs, mask=mask_ci[:, None] & mask_t[None, :], other=0.0)
        w_tile = tl.load(w_ptr + (ci0 * s_w_in + k * s_w_k) + w_offs,
                         mask=mask_w_rows[:, None] & (offs_ci < W_COLS - ci0)[None, :], other=0.0)
        acc = tl.dot(_operand(w_tile, UPCAST), _operand(tile, UPCAST), acc, input_precision=INPUT_PRECISION)
        if GATED:  # the gate's rows read the same input tile
            w_tile = tl.load(w_ptr + (GATE_ROWS * s_w_out + ci0 * s_w_in + k * s_w_k) + w_offs,
                             mask=mask_w_rows[:, None] & (offs_ci < W_COLS - ci0)[None, :], other=0.0)
            acc_b = tl.dot(_operand(w_tile, UPCAST), _operand(tile, UPCAST), acc_b, input_precision=INPUT_PRECISION)
        # next (channel block, tap): taps run fastest, so the K shifted reads of a tile hit L1/L2
        k += 1
        wrap = k == K
        k = tl.where(wrap, k_first, k)
        ci0 = tl.where(wrap, ci0 + BLOCK_CI, ci0)

    if AUX:  # the conditioning: res is c, wr its 1x1 weight (both halves' rows)
        c_row = res_ptr + pid_b.to(tl.int64) * s_res_b
        acc = _residual_gemm(acc, c_row, wr_ptr, None, offs_co, offs_t, mask_co, C_RES, WR_COLS, L_out, s_res_c,
                             s_res_t, s_wr_out, s_wr_in, 0, UPCAST, INPUT_PRECISION, BLOCK_CI)
        if GATED:
            acc_b = _residual_gemm(acc_b, c_row, wr_ptr + GATE_ROWS * s_wr_out, None, offs_co, offs_t, mask_co, C_RES,
                                   WR_COLS, L_out, s_res_c, s_res_t, s_wr_out, s_wr_in, 0, UPCAST, INPUT_PRECISION,
                                   BLOCK_CI)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_o * s_bias, mask=mask_co, other=0.0)
        acc += bias.to(acc.dtype)[:, None]
        if GATED:
            bias = tl.load(bias_ptr + (offs_o + GATE_ROWS) * s_bias, mask=mask_co, other=0.0)
            acc_b += bias.to(acc.dtype)[:, None]
    if STORE_PRE:
        pre_offs = (pid_b.to(tl.int64) * s_pre_b + offs_o[:, None] * s_pre_c + offs_t[None, :] * s_pre_t)
        mask_pre = mask_co[:, None] & (offs_t < L_out)[None, :]
        tl.store(pre_ptr + pre_offs, acc.to(pre_ptr.dtype.element_ty), mask=mask_pre)
        if GATED:
            tl.store(pre_ptr + GATE_ROWS * s_pre_c + pre_offs, acc_b.to(pre_ptr.dtype.element_ty), mask=mask_pre)
    if GATED:  # glu: a * sigmoid(b); gated_tanh (14): tanh(a) * sigmoid(b)
        if ACTIVATION == 14:
            acc = _tanh(acc)
        acc = acc * _sigmoid(acc_b)
    elif ACTIVATION == 12:
        acc = _activate(acc, ACTIVATION, ACT_P0, ACT_P1, tl.load(slope_ptr + offs_o * s_slope, mask=mask_co, other=0.0))
    else:
        acc = _activate(acc, ACTIVATION, ACT_P0, ACT_P1, None)
    if DROPOUT:
        keep = _dropout_keep(seed_ptr, SEED_INDEX, pid_b.to(tl.int64) * C_OUT + offs_co, t0, L, BLOCK_T,
                             DROP_CHANNEL, DROP_THRESHOLD)
        acc = tl.where(keep, acc * DROP_SCALE, tl.zeros_like(acc))
    out_offs = (pid_b.to(tl.int64) * _aligned(s_out_b, ALIGN_OUT) + offs_o[:, None] * s_out_c
                + offs_t[None, :] * s_out_t)
    mask_out = mask_co[:, None] & (offs_t < L_out)[None, :]
    if GATE == 1:
        gate = tl.load(gate_ptr + out_offs, mask=mask_out, other=0.0)
        acc = tl.where(gate > 0, acc * GATE_SCALE, tl.zeros_like(acc))
    elif GATE == 2:  # the previous layer's activation and dropout: out = keep * GATE_SCALE * act(z)
        gate = tl.load(gate_ptr + out_offs, mask=mask_out, other=0.0).to(acc.dtype)
        if not GATE_FROM_INPUT:
            gate = gate * (1.0 / GATE_SCALE)  # act(z) where kept (the mask zeroes the rest)
        acc = _activation_grad(acc, gate, GATE_ACTIVATION, ACT_P0, ACT_P1) * GATE_SCALE
        if GATE_DROPOUT:  # the forward's mask, drawn again from its seed
            keep = _dropout_keep(seed_ptr, SEED_INDEX, pid_b.to(tl.int64) * C_OUT + offs_co, t0, L, BLOCK_T,
                                 DROP_CHANNEL, DROP_THRESHOLD)
            acc = tl.where(keep, acc, tl.zeros_like(acc))
    if STORE_BRANCH:
        tl.store(branch_ptr + out_offs, acc.to(branch_ptr.dtype.element_ty), mask=mask_out)
    if SPLIT:
        _split_store(acc, out_ptr + out_offs, out2_ptr, res_ptr, pid_b, offs_co, offs_t, mask_out, SPLIT_ROWS,
                     s_out2_b, s_out2_c, s_out2_t, _aligned(s_res_b, ALIGN_OUT), _aligned(s_res_c, ALIGN_OUT),
                     s_res_t, RESIDUAL, RES_SCALE)
    else:
        if RESIDUAL == 1:
            res_offs = (pid_b.to(tl.int64) * _aligned(s_res_b, ALIGN_OUT)
                        + offs_co[:, None] * _aligned(s_res_c, ALIGN_OUT) + offs_t[None, :] * s_res_t)
            res = tl.load(res_ptr + res_offs, mask=mask_out, other=0.0).to(acc.dtype)
            if RES_SCALE != 1.0:
                res = res * RES_SCALE
            acc += res
        if RESIDUAL == 2:
            acc = _residual_gemm(acc, res_ptr + pid_b.to(tl.int64) * _aligned(s_res_b, ALIGN_OUT), wr_ptr, res_bias_ptr,
                                 offs_co, offs_t, mask_co, C_RES, WR_COLS, L_out, _aligned(s_res_c, ALIGN_OUT), s_res_t,
                                 s_wr_out, s_wr_in, s_res_bias, UPCAST, INPUT_PRECISION, BLOCK_CI)
        if FINAL_PRE:
            tl.store(pre_ptr + pid_b.to(tl.int64) * s_pre_b + offs_co[:, None] * s_pre_c + offs_t[None, :] * s_pre_t,
                     acc.to(pre_ptr.dtype.element_ty), mask=mask_out)
        acc = _activate(acc, FINAL_ACTIVATION, ACT_P0, ACT_P1, None)
        tl.store(out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=mask_out)


@triton.jit
def _split_store(acc, out_ptrs, out2_ptr, res_ptr, pid_b, offs_co, offs_t, mask_out, SPLIT_ROWS, s_out2_b, s_out2_c,
                 s_out2_t, s_res_b, s_res_c, s_res_t, RESIDUAL: tl.constexpr, RES_SCALE: tl.constexpr):
    """Rows o < SPLIT_ROWS to out as they are; the rest, + RES_SCALE * res[o - SPLIT_ROWS], to
    out2[o - SPLIT_ROWS] (one program may hold rows of both)."""
    tl.store(out_ptrs, acc.to(out_ptrs.dtype.element_ty), mask=mask_out & (offs_co < SPLIT_ROWS)[:, None])
    rows = offs_co - SPLIT_ROWS
    mask2 = mask_out & (rows >= 0)[:, None]
    if RESIDUAL == 1:
        res = tl.load(res_ptr + (pid_b.to(tl.int64) * s_res_b + rows[:, None] * s_res_c + offs_t[None, :] * s_res_t),
                      mask=mask2, other=0.0).to(acc.dtype)
        acc += res * RES_SCALE
    tl.store(out2_ptr + (pid_b.to(tl.int64) * s_out2_b + rows[:, None] * s_out2_c + offs_t[None, :] * s_out2_t),
             acc.to(out2_ptr.dtype.element_ty), mask=mask2)


@triton.jit
def _residual_gemm(acc, res_row, wr_ptr, res_bias_ptr, offs_co, offs_t, mask_co, C_RES, WR_COLS, L, s_res_c,
                   s_res_t, s_wr_out, s_wr_in, s_res_bias, UPCAST: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                   BLOCK_CI: tl.constexpr):
    """acc + res_bias[o] + sum_i wr[o, i] * res[i, t]: a 1x1 conv of another input, no shift."""
    if res_bias_ptr is not None:
        acc += tl.load(res_bias_ptr + offs_co * s_res_bias, mask=mask_co, other=0.0).to(acc.dtype)[:, None]
    offs_ci = tl.arange(0, BLOCK_CI)
    mask_t = (offs_t < L)[None, :]
    for ci0 in range(0, C_RES, BLOCK_CI):
        tile = tl.load(res_row + (ci0 + offs_ci)[:, None] * s_res_c + offs_t[None, :] * s_res_t,
                       mask=(ci0 + offs_ci < C_RES)[:, None] & mask_t, other=0.0)
        w_tile = tl.load(wr_ptr + offs_co[:, None] * s_wr_out + (ci0 + offs_ci)[None, :] * s_wr_in,
                         mask=mask_co[:, None] & (ci0 + offs_ci < WR_COLS)[None, :], other=0.0)
        acc = tl.dot(_operand(w_tile, UPCAST), _operand(tile, UPCAST), acc, input_precision=INPUT_PRECISION)
    return acc


@triton.jit
def causal_conv1d_weight_grad_kernel(
    # Tensors; None where no gate or store asks for one
    x_ptr, dy_ptr, y_ptr, gate2_ptr,  # the conv's input, its output gradient, the gates' saved outputs
    seed_ptr,                         # dropout seeds (GATE2_DROPOUT)
    g_ptr, ds_ptr,                    # stores: the gated gradient, the residual's gradient
    partial_ptr,                      # (N_CHUNKS, C_OUT*C_IN*K + C_OUT) fp32 partial sums
    res_dy_ptr, res_partial_ptr,      # a block's 1x1 downsample: its gradient, its partials (AUX_TAP's too)
    c_ptr,                            # AUX_TAP: the conditioning input
    dy2_ptr,                          # SPLIT_DY: the gradient of the rows from SPLIT_ROWS on
    # Sizes (C_IN: of one group; C_OUT: of all groups, C_OUT_G of one)
    B, C_IN, C_OUT, L, K, DILATION,
    PAD_RIGHT, N_GROUPS, C_OUT_G,    # as in causal_conv1d_kernel
    GATE_ROWS,                       # GATED_GRAD: the gated unit's output channels (C_OUT / 2)
    # Strides, in elements (gate2 has y's)
    s_x_b, s_x_c, s_x_t,
    s_dy_b, s_dy_c, s_dy_t,
    s_y_b, s_y_c, s_y_t,
    # The grid: (input-channel block, output-channel block, tap, chunk); items are (b, time block)
    N_CO_BLOCKS, N_CI_BLOCKS, N_T_BLOCKS, N_CHUNKS,
    # AUX_TAP: c's channels and strides; SPLIT_DY: the rows dy holds, dy2's strides
    C_AUX, s_c_b, s_c_c, s_c_t,
    SPLIT_ROWS, s_dy2_b, s_dy2_c, s_dy2_t,
    SHIFTED: tl.constexpr,           # PAD_RIGHT != 0
    GROUPED: tl.constexpr,           # N_GROUPS > 1
    # Gates and stores
    GATE_BY_RELU: tl.constexpr,
    GATE_ACTIVATION: tl.constexpr, ACT_P0: tl.constexpr, ACT_P1: tl.constexpr,  # g * act'(.) from y_ptr
    GATED_GRAD: tl.constexpr,        # a gated unit's code (13, 14): y_ptr is z = (a, b); dy has GATE_ROWS rows
    GATE2: tl.constexpr, GATE2_SCALE: tl.constexpr,  # 1: (gate2 > 0) * scale; 2: GATE2_ACTIVATION's derivative
    GATE2_ACTIVATION: tl.constexpr, GATE2_FROM_INPUT: tl.constexpr,
    GATE2_DROPOUT: tl.constexpr, DROP_CHANNEL: tl.constexpr, DROP_THRESHOLD: tl.constexpr, SEED_INDEX: tl.constexpr,
    WRITE_G: tl.constexpr,
    WRITE_DS: tl.constexpr,
    RES_TAP: tl.constexpr,
    AUX_TAP: tl.constexpr, AUX_SWITCH_C: tl.constexpr, AUX_SWITCH_T: tl.constexpr,  # c's strides differ from x's
    SPLIT_DY: tl.constexpr,
    # Precision and alignment
    UPCAST: tl.constexpr,
    ACC_FP64: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    ALIGN: tl.constexpr,
    ROW_INT64: tl.constexpr,
    # Tiles
    BLOCK_CO: tl.constexpr,
    BLOCK_CI: tl.constexpr,
    BLOCK_T: tl.constexpr,
):
    """Partial weight and bias gradients of one chunk of (batch row, time block) items, for one tap.

    partial[c, o*C_IN*K + i*K + k] = sum_{(b, t) in chunk c} g[b, o, t] * x[b, i, t - (K-1-k)*D]
    partial[c, C_OUT*C_IN*K + o]   = sum_{(b, t) in chunk c} g[b, o, t]   (by the shift-0 tap's programs)
    with g = dy, or dy * (y > 0) after a fused ReLU (GATE_BY_RELU), times (gate2 > 0) * GATE2_SCALE
    (GATE2: a block's conv2, whose output went through ReLU and dropout before the residual; gate2 is
    that saved output, with y's strides). The shift-0 tap's programs of the first input-channel block
    also store g (WRITE_G) and ds = dy * (y > 0) (WRITE_DS, the residual's gradient), both
    (B, C_OUT, L) contiguous, so the next kernels read gates once applied. The host sums the partials
    over c in a fixed order: bitwise identical on every run.
    RES_TAP: one more tap, k = K, is a block's 1x1 downsample, which reads the same x: its gradient
    is res_dy (dy's strides), unshifted, and its partials go to res_partial (rows of C_OUT*C_IN + C_OUT).
    AUX_TAP: one more tap, k = K, is a WaveNet block's 1x1 conditioning, which reads c (C_AUX
    channels, its own strides) with the same gated gradient, unshifted; its partials go to
    res_partial (rows of C_OUT*C_AUX + C_OUT). Its programs switch x's pointer and batch stride to
    c's by a scalar select; c's channel and time strides are switched only where they differ
    (AUX_SWITCH_*: the host passes neither 1 then), so a unit stride stays a compile-time 1.
    SPLIT_DY: dy's rows from SPLIT_ROWS on are dy2's rows from 0 (a WaveNet block's skip and
    residual 1x1s, whose two gradients come apart): no concatenation of the two is written.
    Grid: (input-channel block, output-channel block, tap, chunk) flattened into axis 0.
    """
    pid = tl.program_id(0)
    n_taps = K
    if RES_TAP or AUX_TAP:
        n_taps = K + 1
    pid_ci = pid % N_CI_BLOCKS
    pid_co = (pid // N_CI_BLOCKS) % N_CO_BLOCKS
    k = (pid // (N_CI_BLOCKS * N_CO_BLOCKS)) % n_taps
    pid_chunk = pid // (N_CI_BLOCKS * N_CO_BLOCKS * n_taps)
    if GROUPED:
        pid_g = pid_chunk % N_GROUPS
        pid_chunk = pid_chunk // N_GROUPS
    if AUX_TAP:
        is_aux = k == K
        if is_aux:
            x_ptr = c_ptr
        s_x_b = tl.where(is_aux, s_c_b, s_x_b)
        if AUX_SWITCH_C:
            s_x_c = tl.where(is_aux, s_c_c, s_x_c)
        if AUX_SWITCH_T:
            s_x_t = tl.where(is_aux, s_c_t, s_x_t)
        C_IN = tl.where(is_aux, C_AUX, C_IN)
    L = _aligned(L, ALIGN)
    DILATION = _aligned(DILATION, ALIGN)
    s_x_c = _aligned(s_x_c, ALIGN)
    s_dy_c = _aligned(s_dy_c, ALIGN)
    s_y_c = _aligned(s_y_c, ALIGN)
    s_x_b = _aligned(s_x_b, ALIGN)
    s_dy_b = _aligned(s_dy_b, ALIGN)
    s_y_b = _aligned(s_y_b, ALIGN)
    if SPLIT_DY:
        s_dy2_c = _aligned(s_dy2_c, ALIGN)
        s_dy2_b = _aligned(s_dy2_b, ALIGN)

    shift = (K - 1 - k) * DILATION
    if SHIFTED:
        shift -= _aligned(PAD_RIGHT, ALIGN)
    grad_ptr, out_ptr, taps, tap = dy_ptr, partial_ptr, K, k  # where g comes from, where partials go
    if RES_TAP:
        if k == K:
            grad_ptr, out_ptr, taps, tap, shift = res_dy_ptr, res_partial_ptr, 1, 0, 0
    if AUX_TAP:
        if is_aux:
            out_ptr = res_partial_ptr
        shift = tl.where(is_aux, 0, shift)
        taps = tl.where(is_aux, 1, taps)
        tap = tl.where(is_aux, 0, tap)
    # This tap's time blocks before tb_first read only padding: its items start there.
    if SHIFTED:
        tb_first = tl.minimum(tl.maximum(shift, 0) // BLOCK_T, N_T_BLOCKS)
    else:
        tb_first = tl.minimum(shift // BLOCK_T, N_T_BLOCKS)
    n_tb = N_T_BLOCKS - tb_first
    n_items = B * n_tb
    per_chunk = tl.cdiv(n_items, N_CHUNKS)
    start = tl.minimum(pid_chunk * per_chunk, n_items)
    n_iter = tl.minimum(per_chunk, n_items - start)
    if AUX_TAP:  # the input-channel blocks cover the wider of x and c: the rest of this tap's have no work
        n_iter = tl.where(pid_ci * BLOCK_CI < C_IN, n_iter, 0)
    b = start // tl.maximum(n_tb, 1)
    tb = tb_first + start % tl.maximum(n_tb, 1)
    is_first = (pid_ci == 0) & (k >= K - 1)  # a shift-0 tap of the first input-channel block
    writes_g = True
    if AUX_TAP:
        writes_g = k < K  # g and ds: the gated conv's programs write them, not the conditioning's

    offs_co = pid_co * BLOCK_CO + tl.arange(0, BLOCK_CO)
    offs_ci = pid_ci * BLOCK_CI + tl.arange(0, BLOCK_CI)
    offs_tt = tl.arange(0, BLOCK_T)
    offs_co, offs_ci, offs_tt = _in_row(offs_co, ROW_INT64), _in_row(offs_ci, ROW_INT64), _in_row(offs_tt, ROW_INT64)
    mask_co = offs_co < C_OUT
    mask_ci = offs_ci < C_IN
    if GROUPED:  # rows of this group's output channels; x's channels of this group
        mask_co = offs_co < C_OUT_G
        offs_co = pid_g * C_OUT_G + offs_co
        x_ptr += pid_g.to(tl.int64) * C_IN * s_x_c
    dy_offs = offs_co[:, None] * s_dy_c + offs_tt[None, :] * s_dy_t
    y_offs = offs_co[:, None] * s_y_c + offs_tt[None, :] * s_y_t
    if GATED_GRAD:  # row o of z is a (o < GATE_ROWS) or b of output channel h; both read dy[h], a[h], b[h]
        first_half = offs_co < GATE_ROWS
        h = tl.where(first_half, offs_co, offs_co - GATE_ROWS)
        dy_offs = h[:, None] * s_dy_c + offs_tt[None, :] * s_dy_t
        a_offs = h[:, None] * s_y_c + offs_tt[None, :] * s_y_t
    if SPLIT_DY:
        lower = (offs_co < SPLIT_ROWS)[:, None]
        dy2_offs = (offs_co - SPLIT_ROWS)[:, None] * s_dy2_c + offs_tt[None, :] * s_dy2_t
    g_offs = offs_co[:, None] * L + offs_tt[None, :]  # g is allocated contiguous (B, C_OUT, L)
    x_offs = offs_tt[:, None] * s_x_t + offs_ci[None, :] * s_x_c  # x read transposed: (t, i)

    acc = _accumulator(BLOCK_CO, BLOCK_CI, ACC_FP64)
    acc_bias = tl.zeros([BLOCK_CO], dtype=acc.dtype)
    for _ in range(n_iter):
        t0 = tb * BLOCK_T
        b64 = b.to(tl.int64)
        mask_t = offs_tt < L - t0
        mask_g = mask_co[:, None] & mask_t[None, :]
        if SPLIT_DY:
            g = tl.load(grad_ptr + b64 * s_dy_b + t0 * s_dy_t + dy_offs, mask=mask_g & lower, other=0.0)
            g2 = tl.load(dy2_ptr + b64 * s_dy2_b + t0 * s_dy2_t + dy2_offs, mask=mask_g & ~lower, other=0.0)
            g = tl.where(lower, g, g2)
        else:
            g = tl.load(grad_ptr + b64 * s_dy_b + t0 * s_dy_t + dy_offs, mask=mask_g, other=0.0)
        if GATE_BY_RELU:
            y = tl.load(y_ptr + b64 * s_y_b + t0 * s_y_t + y_offs, mask=mask_g, other=0.0)
            g = tl.where(y > 0, g, tl.zeros_like(g))
        if GATED_GRAD:
            a = tl.load(y_ptr + b64 * s_y_b + t0 * s_y_t + a_offs, mask=mask_g, other=0.0).to(acc.dtype)
            gb = tl.load(y_ptr + b64 * s_y_b + t0 * s_y_t + GATE_ROWS * s_y_c + a_offs, mask=mask_g,
                         other=0.0).to(acc.dtype)
            g = _gate_grad(g.to(acc.dtype), a, gb, first_half, GATED_GRAD).to(dy_ptr.dtype.element_ty)
        if GATE_ACTIVATION != 0:  # y is what the forward kept: the output or the pre-activation
            v = tl.load(y_ptr + b64 * s_y_b + t0 * s_y_t + y_offs, mask=mask_g, other=0.0)
            g = _activation_grad(g.to(acc.dtype), v.to(acc.dtype), GATE_ACTIVATION, ACT_P0,
                                 ACT_P1).to(dy_ptr.dtype.element_ty)
        g = _operand(g, UPCAST)
        if WRITE_DS:
            ds = g
        if GATE2 == 1:
            gate2 = tl.load(gate2_ptr + b64 * s_y_b + t0 * s_y_t + y_offs, mask=mask_g, other=0.0)
            g = tl.where(gate2 > 0, g * GATE2_SCALE, tl.zeros_like(g))
        elif GATE2 == 2:  # conv2's activation and dropout: out2 = keep * GATE2_SCALE * act(z2)
            g2 = g.to(acc.dtype)
            if GATE2_ACTIVATION != 0:
                gate2 = tl.load(gate2_ptr + b64 * s_y_b + t0 * s_y_t + y_offs, mask=mask_g, other=0.0).to(acc.dtype)
                if not GATE2_FROM_INPUT:
                    gate2 = gate2 * (1.0 / GATE2_SCALE)
                g2 = _activation_grad(g2, gate2, GATE2_ACTIVATION, ACT_P0, ACT_P1)
            g2 = g2 * GATE2_SCALE
            if GATE2_DROPOUT:
                keep = _dropout_keep(seed_ptr, SEED_INDEX, b64 * C_OUT + offs_co, t0, L, BLOCK_T, DROP_CHANNEL,
                                     DROP_THRESHOLD)
                g2 = tl.where(keep, g2, tl.zeros_like(g2))
            g = g2.to(g.dtype)
        mask_x = (offs_tt >= shift - t0) & mask_t
        if SHIFTED:
            mask_x = mask_x & (offs_tt < L + shift - t0)
        x_cols = tl.load(x_ptr + b64 * s_x_b + (t0 - shift) * s_x_t + x_offs, mask=mask_x[:, None] & mask_ci[None, :],
                         other=0.0)
        x_cols = _operand(x_cols, UPCAST)
        if is_first:  # stores cast to the buffers' dtype
            if writes_g:
                if WRITE_G:
                    tl.store(g_ptr + b64 * C_OUT * L + t0 + g_offs, g, mask=mask_g)
                if WRITE_DS:
                    tl.store(ds_ptr + b64 * C_OUT * L + t0 + g_offs, ds, mask=mask_g)
            acc_bias += tl.sum(g.to(acc_bias.dtype), axis=1)
        acc = tl.dot(g, x_cols, acc, input_precision=INPUT_PRECISION)
        # next item: time blocks run fastest within a batch row
        tb += 1
        wrap = tb == N_T_BLOCKS
        tb = tl.where(wrap, tb_first, tb)
        b = tl.where(wrap, b + 1, b)

    n_w = C_OUT * C_IN * taps
    chunk_row = out_ptr + pid_chunk.to(tl.int64) * (n_w + C_OUT)
    tl.store(chunk_row + offs_co[:, None] * (C_IN * taps) + offs_ci[None, :] * taps + tap, acc,
             mask=mask_co[:, None] & mask_ci[None, :])
    if is_first:
        tl.store(chunk_row + n_w + offs_co, acc_bias, mask=mask_co)

"""Triton kernels on weights: kernels only, no allocation, no torch logic.

A TemporalBlock has up to three convs (conv1, conv2, the 1x1 downsample). One launch prepares all of
their weights and, in the backward, one launch finishes all of their gradients, so a block's weight
work costs two launches in all. A plain causal_conv1d uses the same kernels with one segment.

  segment s    programs [s * N_ROW_BLOCKS, (s+1) * N_ROW_BLOCKS): blocks of BLOCK_O output channels
  weight norm  w[o, i, k] = g[o] * v[o, i, k] / ||v[o]||, the norm over (i, k) (HAS_NORM_s)
  layout       the conv kernels read w as (K, C_out, C_in padded to a multiple of 16), zero-padded:
               16-byte loads along the reduction channel and no per-element mask on them
"""
import triton
import triton.language as tl


@triton.jit
def _upcast(x):
    # fp32 math for 16- and 32-bit weights, fp64 for fp64 ones (gradcheck runs through these kernels)
    if x.dtype == tl.float64:
        return x
    else:
        return x.to(tl.float32)


@triton.jit
def _load_rows(v_ptr, s_v_out, s_v_in, s_v_k, offs_o, j, K, mask):
    """v[o, i, k] at flattened columns j = i*K + k, upcast."""
    return _upcast(tl.load(v_ptr + offs_o[:, None] * s_v_out + (j // K)[None, :] * s_v_in + (j % K)[None, :] * s_v_k,
                           mask=mask, other=0.0))


@triton.jit
def _row_inverse_norms(v_ptr, s_v_out, s_v_in, s_v_k, offs_o, mask_o, C_IN, K, BLOCK_J: tl.constexpr):
    """1 / ||v[o]|| over (i, k) for a block of rows."""
    sq = _upcast(tl.zeros([offs_o.shape[0]], dtype=v_ptr.dtype.element_ty))
    offs_j = tl.arange(0, BLOCK_J)
    for j0 in range(0, C_IN * K, BLOCK_J):
        j = j0 + offs_j
        v = _load_rows(v_ptr, s_v_out, s_v_in, s_v_k, offs_o, j, K, mask_o[:, None] & (j < C_IN * K)[None, :])
        sq += tl.sum(v * v, axis=1)
    return 1.0 / tl.sqrt(tl.where(mask_o, sq, 1.0))  # rows past C_OUT are never stored


@triton.jit
def _prepare_segment(v_ptr, g_ptr, out_ptr, row_block, C_OUT, C_IN, K, C_PAD, s_v_out, s_v_in, s_v_k, s_g,
                     HAS_NORM: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr):
    offs_o = row_block * BLOCK_O + tl.arange(0, BLOCK_O)
    mask_o = offs_o < C_OUT
    if HAS_NORM:
        scale = _upcast(tl.load(g_ptr + offs_o * s_g, mask=mask_o, other=0.0)) * _row_inverse_norms(
            v_ptr, s_v_out, s_v_in, s_v_k, offs_o, mask_o, C_IN, K, BLOCK_I)
    offs_i = tl.arange(0, BLOCK_I)
    for k in range(K):
        for i0 in range(0, C_PAD, BLOCK_I):
            i = i0 + offs_i
            w = _upcast(tl.load(v_ptr + offs_o[:, None] * s_v_out + i[None, :] * s_v_in + k * s_v_k,
                                mask=mask_o[:, None] & (i < C_IN)[None, :], other=0.0))
            if HAS_NORM:
                w = w * scale[:, None]
            tl.store(out_ptr + (k * C_OUT + offs_o)[:, None] * C_PAD + i[None, :], w.to(out_ptr.dtype.element_ty),
                     mask=mask_o[:, None] & (i < C_PAD)[None, :])


@triton.jit
def weight_prep_kernel(
    # Per segment s: tensors (v, g or None, out), sizes (C_OUT, C_IN, K, C_PAD: out's padded width),
    # strides (v's, g's); segments 1 and 2 are unused (None, zeros) below N_SEGMENTS
    v0_ptr, g0_ptr, out0_ptr, C_OUT0, C_IN0, K0, C_PAD0, s_v0_out, s_v0_in, s_v0_k, s_g0,
    v1_ptr, g1_ptr, out1_ptr, C_OUT1, C_IN1, K1, C_PAD1, s_v1_out, s_v1_in, s_v1_k, s_g1,
    v2_ptr, g2_ptr, out2_ptr, C_OUT2, C_IN2, K2, C_PAD2, s_v2_out, s_v2_in, s_v2_k, s_g2,
    # The grid: N_ROW_BLOCKS programs per segment
    N_ROW_BLOCKS,
    # Segments and their weight norm
    N_SEGMENTS: tl.constexpr,
    HAS_NORM0: tl.constexpr, HAS_NORM1: tl.constexpr, HAS_NORM2: tl.constexpr,
    # Tiles
    BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr,
):
    """out_s[k, o, i] = (g_s[o] / ||v_s[o]|| if HAS_NORM_s else 1) * v_s[o, i, k], zero for
    C_IN_s <= i < C_PAD_s, for up to three weights (segments) in one launch. v_s: any strides."""
    pid = tl.program_id(0)
    segment = pid // N_ROW_BLOCKS
    row_block = pid % N_ROW_BLOCKS
    if segment == 0:
        _prepare_segment(v0_ptr, g0_ptr, out0_ptr, row_block, C_OUT0, C_IN0, K0, C_PAD0, s_v0_out, s_v0_in, s_v0_k,
                         s_g0, HAS_NORM0, BLOCK_O, BLOCK_I)
    if N_SEGMENTS > 1:
        if segment == 1:
            _prepare_segment(v1_ptr, g1_ptr, out1_ptr, row_block, C_OUT1, C_IN1, K1, C_PAD1, s_v1_out, s_v1_in,
                             s_v1_k, s_g1, HAS_NORM1, BLOCK_O, BLOCK_I)
    if N_SEGMENTS > 2:
        if segment == 2:
            _prepare_segment(v2_ptr, g2_ptr, out2_ptr, row_block, C_OUT2, C_IN2, K2, C_PAD2, s_v2_out, s_v2_in,
                             s_v2_k, s_g2, HAS_NORM2, BLOCK_O, BLOCK_I)


@triton.jit
def _sum_chunks(partial_ptr, N_CHUNKS, N_COLS, cols, mask):
    """sum_c partial[c, cols] over the chunks, in order (bitwise reproducible)."""
    acc = tl.zeros(mask.shape, dtype=partial_ptr.dtype.element_ty)
    ptrs = partial_ptr + cols
    for _ in range(N_CHUNKS):
        acc += tl.load(ptrs, mask=mask, other=0.0)
        ptrs += N_COLS  # 64-bit pointer arithmetic: no int32 product to overflow
    return acc


@triton.jit
def _finalize_segment(partial_ptr, N_CHUNKS, v_ptr, g_ptr, dv_ptr, dg_ptr, db_ptr, row_block,
                      C_OUT, C_IN, K, s_v_out, s_v_in, s_v_k, s_g,
                      HAS_NORM: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_J: tl.constexpr):
    # partial[c] holds C_OUT rows of C_IN*K weight-gradient columns (o*C_IN*K + i*K + k), then C_OUT
    # bias-gradient entries.
    n_row = C_IN * K
    n_cols = C_OUT * n_row + C_OUT
    offs_o = row_block * BLOCK_O + tl.arange(0, BLOCK_O)
    mask_o = offs_o < C_OUT
    offs_j = tl.arange(0, BLOCK_J)
    db = _sum_chunks(partial_ptr, N_CHUNKS, n_cols, C_OUT * n_row + offs_o, mask_o)
    tl.store(db_ptr + offs_o, db.to(db_ptr.dtype.element_ty), mask=mask_o)
    if HAS_NORM:
        # w = g v / ||v||:  dg = <dw, v> / ||v||,  dv = (g / ||v||) (dw - dg v / ||v||)
        inv_norm = _row_inverse_norms(v_ptr, s_v_out, s_v_in, s_v_k, offs_o, mask_o, C_IN, K, BLOCK_J)
        dot = tl.zeros([BLOCK_O], dtype=partial_ptr.dtype.element_ty)
        for j0 in range(0, n_row, BLOCK_J):
            j = j0 + offs_j
            mask = mask_o[:, None] & (j < n_row)[None, :]
            dw = _sum_chunks(partial_ptr, N_CHUNKS, n_cols, offs_o[:, None] * n_row + j[None, :], mask)
            dot += tl.sum(dw * _load_rows(v_ptr, s_v_out, s_v_in, s_v_k, offs_o, j, K, mask), axis=1)
        dg = dot * inv_norm
        tl.store(dg_ptr + offs_o, dg.to(dg_ptr.dtype.element_ty), mask=mask_o)
        g = _upcast(tl.load(g_ptr + offs_o * s_g, mask=mask_o, other=0.0))
        coef_dw = g * inv_norm
        coef_v = coef_dw * dg * inv_norm
    for j0 in range(0, n_row, BLOCK_J):
        j = j0 + offs_j
        mask = mask_o[:, None] & (j < n_row)[None, :]
        dw = _sum_chunks(partial_ptr, N_CHUNKS, n_cols, offs_o[:, None] * n_row + j[None, :], mask)
        if HAS_NORM:
            dw = coef_dw[:, None] * dw - coef_v[:, None] * _load_rows(v_ptr, s_v_out, s_v_in, s_v_k, offs_o, j, K, mask)
        tl.store(dv_ptr + offs_o[:, None] * n_row + j[None, :], dw.to(dv_ptr.dtype.element_ty), mask=mask)


@triton.jit
def weight_grad_finalize_kernel(
    # Per segment s: the partials and their chunk count, the parameters (v, g or None), the outputs
    # (dv, dg or None, db), sizes and v's and g's strides; unused segments get None and zeros
    p0_ptr, N_CHUNKS0, v0_ptr, g0_ptr, dv0_ptr, dg0_ptr, db0_ptr, C_OUT0, C_IN0, K0, s_v0_out, s_v0_in, s_v0_k, s_g0,
    p1_ptr, N_CHUNKS1, v1_ptr, g1_ptr, dv1_ptr, dg1_ptr, db1_ptr, C_OUT1, C_IN1, K1, s_v1_out, s_v1_in, s_v1_k, s_g1,
    p2_ptr, N_CHUNKS2, v2_ptr, g2_ptr, dv2_ptr, dg2_ptr, db2_ptr, C_OUT2, C_IN2, K2, s_v2_out, s_v2_in, s_v2_k, s_g2,
    # The grid: N_ROW_BLOCKS programs per segment
    N_ROW_BLOCKS,
    # Segments and their weight norm
    N_SEGMENTS: tl.constexpr,
    HAS_NORM0: tl.constexpr, HAS_NORM1: tl.constexpr, HAS_NORM2: tl.constexpr,
    # Tiles
    BLOCK_O: tl.constexpr, BLOCK_J: tl.constexpr,
):
    """For up to three convs in one launch: sum the weight-gradient kernel's per-chunk partials in
    order, cast once to the parameters' dtype, and, for a weight-normalised conv, turn dw into (dg, dv).
    Outputs dv_s (C_OUT, C_IN, K) contiguous (dw itself without norm), dg_s (C_OUT,), db_s (C_OUT,)."""
    pid = tl.program_id(0)
    segment = pid // N_ROW_BLOCKS
    row_block = pid % N_ROW_BLOCKS
    if segment == 0:
        _finalize_segment(p0_ptr, N_CHUNKS0, v0_ptr, g0_ptr, dv0_ptr, dg0_ptr, db0_ptr, row_block, C_OUT0, C_IN0, K0,
                          s_v0_out, s_v0_in, s_v0_k, s_g0, HAS_NORM0, BLOCK_O, BLOCK_J)
    if N_SEGMENTS > 1:
        if segment == 1:
            _finalize_segment(p1_ptr, N_CHUNKS1, v1_ptr, g1_ptr, dv1_ptr, dg1_ptr, db1_ptr, row_block, C_OUT1,
                              C_IN1, K1, s_v1_out, s_v1_in, s_v1_k, s_g1, HAS_NORM1, BLOCK_O, BLOCK_J)
    if N_SEGMENTS > 2:
        if segment == 2:
            _finalize_segment(p2_ptr, N_CHUNKS2, v2_ptr, g2_ptr, dv2_ptr, dg2_ptr, db2_ptr, row_block, C_OUT2,
                              C_IN2, K2, s_v2_out, s_v2_in, s_v2_k, s_g2, HAS_NORM2, BLOCK_O, BLOCK_J)

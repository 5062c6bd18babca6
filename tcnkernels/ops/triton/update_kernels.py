"""causal-conv1d's decode update as one kernel: every row of a batch, every channel, every new token,
and the state written back in place (tcnkernels.ops.update_launch launches it).

  the op     out[b, c, t] = act(bias[c] + sum_k w[c, k] * xs[b, c, t + k*D]), t < SEQLEN, where
             xs = (the S = (K-1)*D history columns of the state, then x): the history is the state's
             last S columns (shift mode) or, with CIRCULAR, the columns (seqlen_b - S + j) mod STATE_LEN
  the state  shift mode: the row becomes its last STATE_LEN - SEQLEN columns, then x (all of it
             when SEQLEN >= STATE_LEN: its last STATE_LEN tokens); CIRCULAR: token t is written at
             (seqlen_b + t) mod STATE_LEN, only the last STATE_LEN tokens (they would overwrite the rest)
  the pool   HAS_INDICES: row b's state is entry idx[b] of the pool; idx[b] < 0 is a padding slot,
             whose output is 0 and whose state no lane reads or writes (masked)

Grid (batch row, channel block). A program owns its rows of the state, so the in-place update needs
no atomics, only barriers between a program's reads and its writes of the same columns (other
threads of the program may read a column that one of them is about to overwrite). Tiles are small:
a decode step moves a few columns per channel; the point is one launch for the whole batch.
"""
import triton
import triton.language as tl

from .conv_kernels import _sigmoid


@triton.jit
def causal_conv1d_update_kernel(
    x_ptr, state_ptr, w_ptr, bias_ptr, seqlens_ptr, indices_ptr, out_ptr,
    DIM, SEQLEN, STATE_LEN, DILATION,
    s_x_b, s_x_c, s_x_t,
    s_st_b, s_st_c, s_st_t,
    s_w_c, s_w_k, s_bias,
    s_o_b, s_o_c, s_o_t,
    K: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    SILU: tl.constexpr,
    CIRCULAR: tl.constexpr,      # cache_seqlens given: the state is a circular buffer
    HAS_INDICES: tl.constexpr,   # conv_state_indices given: the state is a pool
    ACC_FP64: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_S: tl.constexpr,       # state columns moved per step of the shift
):
    b = tl.program_id(0)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask_c = offs_c < DIM
    acc_dtype = tl.float64 if ACC_FP64 else tl.float32
    row = b
    if HAS_INDICES:
        row = tl.load(indices_ptr + b)
    live = (row + 0 * offs_c) >= 0  # a vector: the interpreter's scalar & vector gives ints, not a mask
    mask_s = mask_c & live  # the state's lanes: none for a padding slot
    state_row = state_ptr + tl.maximum(row, 0).to(tl.int64) * s_st_b + offs_c * s_st_c
    x_row = x_ptr + b.to(tl.int64) * s_x_b + offs_c * s_x_c
    out_row = out_ptr + b.to(tl.int64) * s_o_b + offs_c * s_o_c
    S = (K - 1) * DILATION
    ring = STATE_LEN + (STATE_LEN == 0)  # the modulus (a width-1 conv may keep no state at all)
    start = 0
    if CIRCULAR:
        start = tl.load(seqlens_ptr + b)

    for t in range(SEQLEN):
        acc = tl.zeros((BLOCK_C,), dtype=acc_dtype)
        if HAS_BIAS:
            acc += tl.load(bias_ptr + offs_c * s_bias, mask=mask_c, other=0.0).to(acc_dtype)
        for k in range(K):
            j = t + k * DILATION  # the tap's column of xs
            if CIRCULAR:
                col = ((start - S + j) % ring + ring) % ring
            else:
                col = STATE_LEN - S + j
            from_state = (j + 0 * offs_c) < S  # a vector (the interpreter's loop indices are Python ints)
            h = tl.load(state_row + col * s_st_t, mask=mask_s & from_state, other=0.0).to(acc_dtype)
            v = tl.load(x_row + (j - S) * s_x_t, mask=mask_c & ~from_state, other=0.0).to(acc_dtype)
            w = tl.load(w_ptr + offs_c * s_w_c + k * s_w_k, mask=mask_c, other=0.0).to(acc_dtype)
            acc += w * tl.where(from_state, h, v)
        if SILU:
            acc = acc * _sigmoid(acc)
        acc = tl.where(live, acc, 0.0)
        tl.store(out_row + t * s_o_t, acc.to(out_ptr.dtype.element_ty), mask=mask_c)

    tl.debug_barrier()  # every history read above happens before the state changes
    if CIRCULAR:
        kept = tl.minimum(SEQLEN, STATE_LEN)
        for t in range(SEQLEN - kept, SEQLEN):
            col = ((start + t) % ring + ring) % ring
            v = tl.load(x_row + t * s_x_t, mask=mask_c, other=0.0)
            tl.store(state_row + col * s_st_t, v.to(state_ptr.dtype.element_ty), mask=mask_s)
    else:
        # new[:, j] = old[:, j + SEQLEN], then x: in ascending chunks, each read before it is written
        # (a chunk reads columns at or after its own, which no earlier chunk wrote)
        offs_j = tl.arange(0, BLOCK_S)
        for j0 in range(0, STATE_LEN, BLOCK_S):
            j = j0 + offs_j
            src = j + SEQLEN
            in_state = src < STATE_LEN
            mask = mask_s[:, None] & (j < STATE_LEN)[None, :]
            old = tl.load(state_row[:, None] + src[None, :] * s_st_t, mask=mask & in_state[None, :], other=0.0)
            new = tl.load(x_row[:, None] + (src - STATE_LEN)[None, :] * s_x_t, mask=mask & ~in_state[None, :],
                          other=0.0)
            value = tl.where(in_state[None, :], old.to(acc_dtype), new.to(acc_dtype))
            tl.debug_barrier()
            tl.store(state_row[:, None] + j[None, :] * s_st_t, value.to(state_ptr.dtype.element_ty), mask=mask)

"""The depthwise kernels' aligned-window helpers (depthwise_kernels.py, depthwise_grad_kernels.py).

Channel-first rows aligned to 16 bytes with dilations below a vector: a tap's shift is not a
multiple of the vector, so a shifted load would be one element each. Instead the kernel loads the
few aligned 16-byte blocks the taps span once (_window_blocks), splits each into its V in-thread
lanes (_lanes: tl.split, register renaming, no data movement) and takes every tap's shifted
operand from those lanes (_shifted). The weights of every tap load as one (BLOCK_C, K) tile, split
into its columns in registers (_tap_weights).
"""
import triton
import triton.language as tl


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

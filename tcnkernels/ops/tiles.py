"""Tiles, warps and stages of every kernel launch, chosen from the shape with the static sm_90 profile
(tools/static_profile, `python benchmarks/sass_profile.py`): each rule names what it was measured to
prevent. The compile-only tier compiles every configuration these functions can return for sm_80
and sm_90.
"""
import dataclasses

import torch
import triton


@dataclasses.dataclass(frozen=True)
class Tiles:
    BLOCK_CO: int  # output channels per program (the GEMM's M)
    BLOCK_CI: int  # reduction channels per iteration (the GEMM's K)
    BLOCK_T: int   # time steps per program (forward / input grad) or per item (weight grad)
    num_warps: int
    num_stages: int


SMALL_CHANNELS = 64  # up to here one program covers every output channel (each x element read once)


def channel_block(n, cap):
    return min(cap, max(16, triton.next_power_of_2(n)))  # tl.dot needs >= 16 on the GPU


def stages_for(iterations):
    """Pipelining depth: a loop of a few iterations spends more in its prologue than it hides."""
    return 2 if iterations <= 4 else 3


def conv_tiles(c_out, c_red, L, K, dtype, residual_gemm=False):
    """Tiles of the forward / input-gradient kernel: out (B, c_out, L), reduction over c_red * K.
    `residual_gemm`: the program also runs a block's 1x1 downsample after its epilogue."""
    if dtype == torch.float64:  # fp64 (gradcheck) stays small: its tiles are 2x fp32's shared memory
        block_co, block_ci, block_t, warps = channel_block(c_out, 32), channel_block(c_red, 32), 32, 4
    elif c_out > SMALL_CHANNELS:
        # Wide layers: 128-row tiles for Hopper's warpgroup MMA, 8 warps; a 128-step tile even at
        # L = 80 (word-PTB) wastes no more than two 64-step tiles would. With the downsample's GEMM
        # after a dropout epilogue, 128 x 128 spills (measured 0.4 to 1.4 KB): 64 steps. 64-row tiles
        # where they pad the channels less (150 -> 192 rather than 256, Nottingham's width).
        block_co = 64 if triton.cdiv(c_out, 64) * 64 < triton.cdiv(c_out, 128) * 128 else 128
        block_ci, block_t, warps = 32, 128 if L > 64 and not residual_gemm else 64, 8
    else:
        # Short sequences waste less of a short tile; long ones amortise each program's setup.
        block_co, block_ci = channel_block(c_out, SMALL_CHANNELS), channel_block(c_red, 32)
        block_t, warps = (32 if L <= 96 else 64 if L <= 2048 else 128), 4
    return Tiles(block_co, block_ci, block_t, warps, stages_for(triton.cdiv(c_red, block_ci) * K))


def dropout_tiles(tiles, residual_gemm):
    """Tiles for a conv with dropout in its epilogue (Philox randint4x: one draw per 4 outputs).
    Wide tiles keep their 128 x 128 (measured: no spill at 64 outputs per thread, 176 registers),
    but 32 steps when the downsample's GEMM follows. Narrow ones keep at most 32 outputs per thread
    (8 warps rather than 4, then shorter time tiles)."""
    if tiles.BLOCK_CO > SMALL_CHANNELS:
        return dataclasses.replace(tiles, BLOCK_T=32) if residual_gemm else tiles
    warps, block_t = tiles.num_warps, tiles.BLOCK_T
    if tiles.BLOCK_CO * block_t > 32 * 32 * warps:
        warps = 8
    while tiles.BLOCK_CO * block_t > 32 * 32 * warps and block_t > 32:
        block_t //= 2
    return dataclasses.replace(tiles, BLOCK_T=block_t, num_warps=warps)


def gated_tiles(tiles):
    """A gated unit's program keeps two accumulators (its two halves): at most 64 rows, so that both
    hold what one 128-row tile does (measured at 128 x 128, 8 warps: 255 registers, 64 to 656 bytes
    on the stack, 312 of them inside the loop for IEEE fp32), and at most 64 accumulator values per
    thread: 8 warps where 4 would hold more, then shorter time tiles (measured at 64 x 128, 4 warps,
    WaveNet's 144 -> 128 gated layer at L = 25,600 on sm_90: 255 registers, 8 to 64 bytes spilled
    in TF32 and bf16; at 8 warps 128 to 190 registers, none, and 10% fewer warp-instructions per
    output than 64 x 64 at 4 warps)."""
    block_co, block_t, warps = min(tiles.BLOCK_CO, SMALL_CHANNELS), tiles.BLOCK_T, tiles.num_warps
    if 2 * block_co * block_t > 64 * 32 * warps:
        warps = 8
    while 2 * block_co * block_t > 64 * 32 * warps and block_t > 32:
        block_t //= 2
    return dataclasses.replace(tiles, BLOCK_CO=block_co, BLOCK_T=block_t, num_warps=warps)


def activation_dropout_tiles(tiles):
    """A wide tile whose epilogue runs a transcendental activation (GELU, Mish, ...) and the Philox
    draw: at most 64 steps (at 128 x 128, 32 to 248 bytes per thread after the loop, sm_90)."""
    if tiles.BLOCK_CO > SMALL_CHANNELS:
        return dataclasses.replace(tiles, BLOCK_T=min(tiles.BLOCK_T, 64))
    return tiles


def rule_gate_tiles(tiles):
    """An input gradient whose epilogue applies another activation's derivative (and draws the
    dropout mask again): wide tiles at most 64 steps (at 128 x 128, sm_90's ptxas parked 24 to 336
    bytes per thread after the loop)."""
    if tiles.BLOCK_CO > SMALL_CHANNELS:
        return dataclasses.replace(tiles, BLOCK_T=min(tiles.BLOCK_T, 64))
    return tiles


def epilogue_tiles(tiles, align):
    """A wide tile with a block's residual epilogue (residual load, branch store), or on sm_80 with a
    gate, at ALIGN 1, where every element needs its own 64-bit address: 64 time steps, else ptxas
    parks 70 to 250 bytes per thread on the stack after the loop (measured at 128 x 128)."""
    if align == 1 and tiles.BLOCK_CO > SMALL_CHANNELS and tiles.BLOCK_T > 64:
        return dataclasses.replace(tiles, BLOCK_T=64)
    return tiles


def weight_grad_tiles(c_out, c_in, dtype, align, capability, gated=False):
    """Tiles of the weight-gradient kernel: an fp32 (BLOCK_CO, BLOCK_CI) accumulator per tap over
    32-step items, two stages. Wider tiles or longer items spill (measured: up to 3.4 KB per thread
    at 128 x 64 x 64). 8 warps share a tile where 4 would spill: at ALIGN 1 or 2 (every element or
    pair needs its own address; 8 to 32 bytes at ALIGN 2), for tiles wider than tall (32 x 64
    spilled inside the loop), and on sm_80, whose
    ptxas spills 64 x 64 tiles at 4 warps, and at 8 warps unless loads are not staged ahead (measured
    4 to 20 bytes), or with a block's second gate (`gated`) at ALIGN 1 unless 32 channels wide (32
    bytes). fp64 (gradcheck) at 8 warps, one stage: at 4 warps and two stages a gated tile spills in
    the loop. `gated`: False, True (the ReLU block's second gate) or "rule" (a GateRule's)."""
    if dtype == torch.float64:
        return Tiles(channel_block(c_out, 32), channel_block(c_in, 32), 32, 8, 1)
    block_co, block_ci = channel_block(c_out, SMALL_CHANNELS), channel_block(c_in, SMALL_CHANNELS)
    if (gated and align == 1 and capability < 90) or gated == "rule":
        # a block's second gate by rule (any activation's derivative, the mask drawn again): 64 x 64
        # parked 8 to 40 bytes, at ALIGN 1 one of them in the loop (sm_90)
        block_ci = min(block_ci, 32)
    warps = 4 if align > 2 and capability >= 90 and block_co >= block_ci else 8
    return Tiles(block_co, block_ci, 32, warps, 1 if capability < 90 and warps == 8 else 2)


def ieee_fp32_tiles(tiles, capability, epilogue=False, align=16, weight_grad=False, residual_gemm=False,
                    shifted=False, gated=False):
    """IEEE fp32 dots run on FMA units with operands in registers: 8 warps share a large tile and loads
    are not staged ahead (one stage), else they spill (measured: up to 4 KB per thread); on sm_80
    also at most 32 time steps and 32 reduction channels per tile (else 8 to 80 bytes), and with a
    block's epilogue (dropout, residual) at most 64 steps (else 16 to 24 bytes after the loop); at
    ALIGN 1 at most 32 input channels (the weight gradient's 64 x 64 tile: 4 bytes).
    `residual_gemm`: a block's conv2 that also runs the 1x1 downsample. `shifted` (taps offset by a
    right padding: one more runtime value and mask bound per iteration): 8 warps and at most 64 steps
    (at 4 warps, or 128 steps with an epilogue, 16 to 24 bytes with one or two stack accesses in the
    loop, sm_90). `gated` (two accumulators): at most 64 steps, 32 at ALIGN 1 or 2 (WaveNet's 144 -> 128 gated
    layer, sm_90, 8 warps: 64 x 128 spilled 1.7 KB, 263 accesses in the loop; 64 x 64 at ALIGN 1
    and 2 200 to 260 bytes)."""
    if gated:  # (and with the conditioning's GEMM 32 at any ALIGN: 64 x 64 spilled 92 bytes at ALIGN 4)
        tiles = dataclasses.replace(tiles, BLOCK_T=min(tiles.BLOCK_T, 32 if align <= 2 or residual_gemm else 64))
    if align == 1:
        tiles = dataclasses.replace(tiles, BLOCK_CI=min(tiles.BLOCK_CI, 32))
    if capability < 90:
        tiles = dataclasses.replace(tiles, BLOCK_T=min(tiles.BLOCK_T, 32), BLOCK_CI=min(tiles.BLOCK_CI, 32))
    elif epilogue:
        tiles = dataclasses.replace(tiles, BLOCK_T=min(tiles.BLOCK_T, 64))
    # a tile of at most 8 outputs per thread at 8 warps keeps 4 where loads are aligned (at 8, ptxas
    # held 48 registers and spilled 4 bytes for a block's 32 x 64 conv2; at ALIGN 1, 4 warps spill)
    # (not the weight gradient: its accumulator is BLOCK_CO x BLOCK_CI, and 4 warps spill kilobytes)
    # (nor two accumulators with the conditioning's GEMM: WaveNet's gated conv, 64 x 32 at ALIGN 2 spilled
    # 972 bytes at 4 warps, sm_90)
    small = tiles.BLOCK_CO * tiles.BLOCK_T <= 32 * 64 and not (gated and residual_gemm)
    warps = 4 if small and align > 1 and not weight_grad and not shifted else 8
    if shifted and not weight_grad:
        tiles = dataclasses.replace(tiles, BLOCK_T=min(tiles.BLOCK_T, 64), BLOCK_CI=16)
    # With the downsample's GEMM after the epilogue, sm_90's ptxas caps 8 warps at 80 registers and
    # parks 8 to 16 bytes (measured at 128 x 32 and 64 x 64, any ALIGN); 4 warps take 110 to 128, none.
    if residual_gemm and not gated and capability >= 90 and tiles.BLOCK_CO * tiles.BLOCK_T <= 64 * 64:
        warps = 4
    return dataclasses.replace(tiles, num_warps=warps, num_stages=1)


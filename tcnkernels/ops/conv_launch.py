"""Launchers of the causal Conv1d kernels: weight layout, tile choice from the shape, alignment, launch.

Inputs are validated by the public function (`tcnkernels.functional`) before they get here. Small
TCNs are host-bound on a GPU, so everything that depends only on shapes, strides, dtype and device
is computed once per distinct key (the `_plan` caches) and a repeated call is a dict lookup, the
output allocation and the launch. Nothing here synchronises with the device (no `.item()`, no host
reads), so a forward and backward can be captured in a CUDA graph.
"""
import dataclasses
import functools
import math

import torch
import triton

from .._backend import INTERPRETER, new_output
from .triton.conv_kernels import (causal_conv1d_kernel, causal_conv1d_weight_grad_kernel, weight_grad_finalize_kernel,
                                  weight_kmajor_kernel)


@dataclasses.dataclass(frozen=True)
class Target:
    """What the launchers need to know of the device they launch on."""
    gpu: bool        # compiled kernels on a CUDA GPU (else Triton's interpreter on the CPU)
    sm_count: int    # streaming multiprocessors: sizes the weight-gradient chunks
    capability: int  # 90 for sm_90 (H100/H200), 80 for sm_80 (A100); 0 on the CPU


@functools.lru_cache(maxsize=None)
def _cuda_target(device_index):
    props = torch.cuda.get_device_properties(device_index)
    return Target(gpu=True, sm_count=props.multi_processor_count, capability=10 * props.major + props.minor)


def target_of(device):
    """The Target of a tensor's device (the static profiler swaps this for an H100's or A100's)."""
    return _cuda_target(device.index or 0) if device.type == "cuda" else Target(gpu=False, sm_count=1, capability=0)


# ------------------------------------------------------------------------------------------------
# Tiles, chosen from the shape with the static sm_90 profile (benchmarks/sass_profile.py). The
# compile-only tier compiles every configuration these functions can return for sm_80 and sm_90.

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


def conv_tiles(c_out, c_red, L, K, dtype):
    """Tiles of the forward / input-gradient kernel: out (B, c_out, L), reduction over c_red * K."""
    if dtype == torch.float64:  # fp64 (gradcheck) stays small: its tiles are 2x fp32's shared memory
        block_co, block_ci, block_t, warps = channel_block(c_out, 32), channel_block(c_red, 32), 32, 4
    elif c_out > SMALL_CHANNELS:
        # Wide layers: 128-row tiles for Hopper's warpgroup MMA, 8 warps; a 128-step tile even at
        # L = 80 (word-PTB) wastes no more than two 64-step tiles would.
        block_co, block_ci, block_t, warps = 128, 32, 128 if L > 64 else 64, 8
    else:
        # Short sequences waste less of a short tile; long ones amortise each program's setup.
        block_co, block_ci = channel_block(c_out, SMALL_CHANNELS), channel_block(c_red, 32)
        block_t, warps = (32 if L <= 96 else 64 if L <= 2048 else 128), 4
    return Tiles(block_co, block_ci, block_t, warps, stages_for(triton.cdiv(c_red, block_ci) * K))


def weight_grad_tiles(c_out, c_in, dtype, align, capability):
    """Tiles of the weight-gradient kernel: an fp32 (BLOCK_CO, BLOCK_CI) accumulator per tap over
    32-step items, two stages. Wider tiles or longer items spill (measured: up to 3.4 KB per thread
    at 128 x 64 x 64). 8 warps share a tile where 4 would spill: at ALIGN 1 (every element needs its
    own address), for tiles wider than tall (32 x 64 spilled inside the loop), and on sm_80, whose
    ptxas spills 64 x 64 tiles at 4 warps, and at 8 warps unless loads are not staged ahead (measured
    4 to 20 bytes)."""
    if dtype == torch.float64:
        return Tiles(channel_block(c_out, 32), channel_block(c_in, 32), 32, 4, 2)
    block_co, block_ci = channel_block(c_out, SMALL_CHANNELS), channel_block(c_in, SMALL_CHANNELS)
    warps = 4 if align > 1 and capability >= 90 and block_co >= block_ci else 8
    return Tiles(block_co, block_ci, 32, warps, 1 if capability < 90 and warps == 8 else 2)


def ieee_fp32_tiles(tiles, capability):
    """IEEE fp32 dots run on FMA units with operands in registers: 8 warps share a tile and loads
    are not staged ahead (one stage), else they spill (measured: up to 4 KB per thread); on sm_80
    also at most 32 time steps and 32 reduction channels per tile (else 8 to 80 bytes)."""
    if capability < 90:
        tiles = dataclasses.replace(tiles, BLOCK_T=min(tiles.BLOCK_T, 32), BLOCK_CI=min(tiles.BLOCK_CI, 32))
    return dataclasses.replace(tiles, num_warps=8, num_stages=1)


def dtype_flags(dtype, target, allow_tf32):
    """Constexprs that depend on the dtype: (UPCAST, ACC_FP64, INPUT_PRECISION).

    16-bit tiles feed the tensor cores as they are (fp32 accumulation), except in the interpreter,
    where bf16 dots are wrong, so they are converted to fp32 first. fp32 follows cuDNN's TF32 switch
    (`allow_tf32`, torch.backends.cudnn.allow_tf32) so comparisons with nn.Conv1d are at equal precision.
    """
    upcast = dtype == torch.float32 or (INTERPRETER and dtype in (torch.float16, torch.bfloat16))
    tf32 = dtype == torch.float32 and target.gpu and allow_tf32
    return upcast, dtype == torch.float64, "tf32" if tf32 else "ieee"


def alignment(element_size, *values):
    """The largest power of two, up to 16 bytes' worth of elements, dividing every value."""
    g = 0
    for v in values:
        g = math.gcd(g, v)
    vector = 16 // element_size
    return math.gcd(g, vector) if g else vector


def needs_int64(*rows):
    """Whether some in-row offset (everything past the batch index) reaches 2^31: rows are
    ((C, L), (stride_c, stride_t)) pairs. Then the kernels use int64 in-row offsets."""
    return any(sum((n - 1) * s for n, s in zip(sizes, strides)) >= 2**31 for sizes, strides in rows)


def _launch(kernel, grid, device_of, args, meta):
    """kernel[grid](*args, **meta), on `device_of`'s CUDA device: Triton launches on the current
    device, so switch to the tensor's only when it differs (cuda:1 while cuda:0 is current)."""
    if device_of.is_cuda and device_of.device.index != torch.cuda.current_device():
        with torch.cuda.device(device_of.device):
            kernel[grid](*args, **meta)
    else:
        kernel[grid](*args, **meta)


# ------------------------------------------------------------------------------------------------
# The weight in the kernels' layout: K-major, reduction channels zero-padded to 16.

WEIGHT_ROW = 16  # elements: 64 bytes of fp32, 32 of bf16, a whole number of 16-byte vectors


def prepare_weight(weight):
    """(w, w_cols): `weight` (C_out, C_in, K) as a view of a (K, C_out, C_in padded to 16) zero-padded
    buffer, and that padded width. Laid out on every call (one small launch): a cache keyed on the
    tensor would miss writes through `.data`, which do not move its version counter."""
    shape = weight.shape
    grid, args, view_stride = _weight_plan(shape, weight.stride())
    buf = new_output(weight, (shape[2], shape[0], args[3]))
    _launch(weight_kmajor_kernel, grid, weight, (weight, buf, *args), _WEIGHT_META)
    return buf.as_strided(shape, view_stride), args[3]


_WEIGHT_META = dict(BLOCK=1024, num_warps=4)


@functools.lru_cache(maxsize=4096)
def _weight_plan(shape, stride):
    c_out, c_in, K = shape
    c_pad = -(-c_in // WEIGHT_ROW) * WEIGHT_ROW
    return (-(-K * c_out * c_pad // 1024),), (c_out, c_in, K, c_pad, *stride), (c_pad, 1, c_out * c_pad)


# ------------------------------------------------------------------------------------------------
# Forward and input gradient: one kernel, causal or anti-causal.

@functools.lru_cache(maxsize=4096)
def _conv_plan(in_shape, in_stride, out_stride, c_out, K, dilation, dtype, device, anti_causal, has_bias, relu,
               tf32):
    B, c_red, L = in_shape
    target = target_of(device)
    tiles = conv_tiles(c_out, c_red, L, K, dtype)
    upcast, acc_fp64, precision = dtype_flags(dtype, target, tf32)
    if precision == "ieee" and dtype == torch.float32 and target.gpu:
        tiles = ieee_fp32_tiles(tiles, target.capability)
    align = alignment(dtype.itemsize, L, shift_unit(K, dilation), *in_stride[:2], *out_stride[:2])
    n_co, n_t = triton.cdiv(c_out, tiles.BLOCK_CO), triton.cdiv(L, tiles.BLOCK_T)
    meta = dict(ANTI_CAUSAL=anti_causal, HAS_BIAS=has_bias, APPLY_RELU=relu, UPCAST=upcast, ACC_FP64=acc_fp64,
                INPUT_PRECISION=precision, ALIGN=align,
                ROW_INT64=needs_int64((in_shape[1:], in_stride[1:]), ((c_out, L), out_stride[1:])),
                BLOCK_CO=tiles.BLOCK_CO, BLOCK_CI=tiles.BLOCK_CI, BLOCK_T=tiles.BLOCK_T,
                num_warps=tiles.num_warps, num_stages=tiles.num_stages)
    return (B * n_co * n_t,), (shift_unit(K, dilation), n_co, n_t), meta


def shift_unit(K, dilation):
    """The dilation as the kernels receive it: a 1-tap conv never shifts, so its dilation is moot and
    passed as 16, a multiple of every ALIGN (the kernels divide by it and claim ALIGN divides it)."""
    return dilation if K > 1 else 16


def conv_forward(x, w, w_cols, bias, dilation, relu):
    """y = act(causal_conv(x, w) + bias): x (B, C_in, L), w (C_out, C_in, K) as `prepare_weight`
    returns it (or any layout with w_cols = C_in), bias (C_out,) or None."""
    B, c_in, L = x.shape
    c_out, _, K = w.shape
    y = new_output(x, (B, c_out, L))
    if B * L == 0:
        return y
    xs, ys = x.stride(), y.stride()
    grid, (d, n_co, n_t), meta = _conv_plan((B, c_in, L), xs, ys, c_out, K, dilation, x.dtype, x.device, False,
                                            bias is not None, relu, torch.backends.cudnn.allow_tf32)
    ws = w.stride()
    _launch(causal_conv1d_kernel, grid, x,
            (x, w, y if bias is None else bias, y, c_in, c_out, L, K, d, c_out, w_cols, *xs, *ws,
             0 if bias is None else bias.stride(0), *ys, n_co, n_t), meta)
    return y


def conv_input_grad(g, w, w_cols, dilation):
    """dx[b, i, t] = sum_{o,k} W[o, i, k] * g[b, o, t + (K-1-k)*d]: the forward kernel with W read
    transposed and anti-causal taps. g is dy, already multiplied by the ReLU gate if there was one."""
    B, c_out, L = g.shape
    c_in, K = w.shape[1], w.shape[2]
    dx = new_output(g, (B, c_in, L))
    if B * L == 0:
        return dx
    gs, dxs = g.stride(), dx.stride()
    grid, (d, n_co, n_t), meta = _conv_plan((B, c_out, L), gs, dxs, c_in, K, dilation, g.dtype, g.device, True,
                                            False, False, torch.backends.cudnn.allow_tf32)
    ws = w.stride()
    _launch(causal_conv1d_kernel, grid, g,
            (g, w, dx, dx, c_out, c_in, L, K, d, w_cols, c_out, *gs, ws[1], ws[0], ws[2], 0, *dxs, n_co, n_t), meta)
    return dx


# ------------------------------------------------------------------------------------------------
# Weight and bias gradients: per-chunk partials, then one finalize launch that sums them in order.

@functools.lru_cache(maxsize=4096)
def _weight_grad_plan(x_shape, x_stride, dy_stride, y_stride, c_out, K, dilation, dtype, device, gate, write_g,
                      tf32):
    B, c_in, L = x_shape
    target = target_of(device)
    upcast, acc_fp64, precision = dtype_flags(dtype, target, tf32)
    align = alignment(dtype.itemsize, L, shift_unit(K, dilation), *x_stride[:2], *dy_stride[:2], *y_stride[:2])
    tiles = weight_grad_tiles(c_out, c_in, dtype, align, target.capability)
    if precision == "ieee" and dtype == torch.float32 and target.gpu:
        tiles = ieee_fp32_tiles(tiles, target.capability)
    n_co, n_ci, n_t = (triton.cdiv(c_out, tiles.BLOCK_CO), triton.cdiv(c_in, tiles.BLOCK_CI),
                       triton.cdiv(L, tiles.BLOCK_T))
    # Chunks of (batch row, time block) items: enough programs for about one resident wave (about
    # four 4-warp or two 8-warp CTAs per SM, from the static profile); a few in the interpreter (more
    # than one, so the chunked sum is exercised). The count depends only on shapes and the device:
    # the partials and their summation order never change, so gradients are bitwise reproducible.
    resident = target.sm_count * (16 // tiles.num_warps) if target.gpu else 4
    n_chunks = max(1, min(B * n_t, resident // (n_co * n_ci * K)))
    n_cols = c_out * (c_in * K + 1)
    meta = dict(GATE_BY_RELU=gate, WRITE_G=write_g, UPCAST=upcast, ACC_FP64=acc_fp64, INPUT_PRECISION=precision,
                ALIGN=align, ROW_INT64=needs_int64(((c_in, L), x_stride[1:]), ((c_out, L), dy_stride[1:]),
                                                   ((c_out, L), y_stride[1:]), ((c_out, L), (L, 1))),
                BLOCK_CO=tiles.BLOCK_CO, BLOCK_CI=tiles.BLOCK_CI, BLOCK_T=tiles.BLOCK_T,
                num_warps=tiles.num_warps, num_stages=tiles.num_stages)
    finalize = ((triton.cdiv(n_cols, 256),), dict(BLOCK=256, num_warps=4))
    return (n_chunks * n_co * n_ci * K,), (shift_unit(K, dilation), n_co, n_ci, n_t, n_chunks), meta, finalize


def conv_weight_grad(dy, x, y, kernel_size, dilation, write_g):
    """(dw, db, g): dw (C_out, C_in, K) and db (C_out,) in x's dtype, from per-chunk fp32 partials
    summed in a fixed order (bitwise reproducible, no atomics); and g = dy * (y > 0), written on the
    way when `write_g` (y given: the forward fused a ReLU), else None."""
    B, c_in, L = x.shape
    c_out = dy.shape[1]
    g = new_output(dy, (B, c_out, L)) if write_g else None
    dw = new_output(x, (c_out, c_in, kernel_size))
    db = new_output(x, (c_out,))
    if B * L == 0:
        return dw.zero_(), db.zero_(), g
    gate = dy if y is None else y
    xs, dys, gs = x.stride(), dy.stride(), gate.stride()
    grid, counts, meta, (fin_grid, fin_meta) = _weight_grad_plan(
        (B, c_in, L), xs, dys, gs, c_out, kernel_size, dilation, x.dtype, x.device, y is not None, bool(write_g),
        torch.backends.cudnn.allow_tf32)
    n_cols = c_out * (c_in * kernel_size + 1)
    n_chunks = counts[-1]
    partial = new_output(x, (n_chunks, n_cols), dtype=torch.float64 if meta["ACC_FP64"] else torch.float32)
    _launch(causal_conv1d_weight_grad_kernel, grid, x,
            (x, dy, gate, dy if g is None else g, partial, B, c_in, c_out, L, kernel_size, counts[0], *xs, *dys, *gs,
             *counts[1:]), meta)
    _launch(weight_grad_finalize_kernel, fin_grid, x, (partial, dw, db, n_chunks, n_cols - c_out, n_cols), fin_meta)
    return dw, db, g

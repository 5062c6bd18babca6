"""Launchers of the depthwise kernels (groups == C_in == C_out): forward, input gradient, weight gradient.

The weight (C, 1, K) is read as it is (no layout kernel: it is C*K numbers). The weight gradient's
partials have the dense kernel's layout, so the same finalize sums them in order. Plans are cached
per (spec, shapes, strides, dtype, device), as in conv_launch.
"""
from typing import Optional

import torch
import triton

from . import launching
from .launching import alignment, needs_int64, new_output, new_output_as, plan_cache, shift_unit
from .specs import ConvSpec, Epilogue
from .triton.depthwise_grad_kernels import depthwise_weight_grad_kernel
from .triton.depthwise_kernels import depthwise_conv1d_kernel
from .weight_launch import finalize_weight_grads

MAX_UNROLLED_TAPS = 16
ELEMENTS = 2048  # per program where vectors line up; SCALAR_ELEMENTS where each element has its own address
SCALAR_ELEMENTS = 512


def _tiles(C, L, channel_last, scalar=False, itemsize=4, reduction=False, large_items=False):
    """(BLOCK_C, BLOCK_T, num_warps): 16 elements a thread at 4 warps, in 16-byte vectors along the
    contiguous dimension (time for channel-first tensors, channels for channel-last): the per-program
    index and mask work is then under a warp-instruction per output (1024 elements: 1.7 to 2.0 with
    8 taps channel-last, sm_90), at 150 to 170 registers with 8 unrolled taps and no spills.
    `scalar` (every element its own address, or fp64): 512 elements; 1024 spilled 56 to 208 bytes
    with 8 unrolled taps, 4096 up to 3 KB. The weight gradient's channel-last tiles (`reduction`)
    hold 1024, as wide along channels as 4 warps' vectors reach: its per-tap sums over time then stay
    within a thread, where 128 channels x 8 steps summed across warps (shared memory) every tap
    (sm_90, dim 1536: 0.7 against 1.2 to 2.2 warp-instructions per output at width 4, 2.0 to 2.4
    against 3.8 to 7.7 at 16). At 2048, 16 taps spill 430 bytes. Its channel-first tiles are one
    32-byte sector along time (8 fp32 or 16 16-bit steps) by 1024 // that channels: the per-tap sums
    over time then span two threads, not 32 (0.5 to 2.6 against 0.6 to 3.1 at widths 4 and 16).
    `large_items` (the recomputing weight gradient up to 4 taps): items twice as large (2048),
    halving the per-item index work: 0.86 against 0.96 at width 4 (fp32, sm_90), at 157 to 168
    registers. Without the recompute, 2048 spilled (fp32 channel-first, dilation 128) or cost more
    (bf16 channel-last, dilation 64: 0.86 against 0.30)."""
    reduction_elements = ELEMENTS if large_items else ELEMENTS // 2
    elements = SCALAR_ELEMENTS if scalar else reduction_elements if reduction and channel_last else ELEMENTS
    if channel_last and reduction and not scalar:
        block_c = min(16 // itemsize * 32 * 4, max(16, triton.next_power_of_2(C)))
        block_t = max(1, min(elements // block_c, triton.next_power_of_2(L)))
    elif reduction and not scalar:
        block_t = min(32 // itemsize, triton.next_power_of_2(L))
        block_c = min(max(reduction_elements // block_t, 1), triton.next_power_of_2(C))
    elif channel_last:
        block_c = min(128, max(16, triton.next_power_of_2(C)))
        block_t = min(max(elements // block_c, 8), triton.next_power_of_2(L))
    else:
        block_t = min(128 * 4 // itemsize, max(16, triton.next_power_of_2(L)))  # 16-byte vectors: 8 16-bit steps
        block_c = min(max(elements // block_t, 1), triton.next_power_of_2(C))
    return block_c, block_t, 4


def _unrolled(K, channel_last):
    """(UNROLL, W_TAPS): whether the taps are unrolled (their shifts then constexprs: CONST_SHIFTS),
    and whether the weights of all taps load as one tile (tcnkernels/ops/triton/depthwise_kernels.py).
    From the static profile (sm_90, width 16, dim 1536): unrolled taps with constexpr shifts take
    1.4 to 2.4 warp-instructions per output against 2.6 to 6.9 in the loop (runtime shifts: at
    dilation 1 its loads are one element each, and every tap's addresses are computed). Channel-
    first taps load their weights as one tile (per-tap weight vectors: a shared-memory layout
    conversion each, 255 registers at dilation 8, fp32); channel-last ones one vector per tap (as
    a tile: up to 255 registers, fp32, and no fewer instructions)."""
    unroll = K <= MAX_UNROLLED_TAPS
    return unroll, unroll and not channel_last


def _channel_last(stride, C):
    """Whether tensors of these (B, C, L) strides are channel-last (channels contiguous, C > 1)."""
    return stride[1] == 1 and C > 1 and stride[2] != 1


MAX_WINDOW_BLOCKS = 5  # aligned blocks the window path's taps may span (registers: one tile each)


def _window(spec, shape, in_stride, out_stride, dtype, dilation):
    """The window path's vector (elements), or 0: channel-first rows aligned to 16 bytes whose shifts
    are not (dilation or right padding not a multiple of the vector), K unrolled, and taps that span
    at most MAX_WINDOW_BLOCKS aligned blocks."""
    vector = 16 // dtype.itemsize
    K, pad = spec.kernel_size, spec.pad_right
    if (dtype == torch.float64 or K > MAX_UNROLLED_TAPS or in_stride[2] != 1 or out_stride[2] != 1
            or alignment(dtype.itemsize, shape[2], *in_stride[:2], *out_stride[:2]) < vector
            or alignment(dtype.itemsize, dilation, pad) == vector):
        return 0
    for sign in (1, -1):  # the forward's shifts, and the input gradient's (their negation)
        shifts = (sign * ((K - 1) * dilation - pad), -sign * pad)
        if (vector - 1 - min(shifts)) // vector - (-max(shifts) // vector) + 1 > MAX_WINDOW_BLOCKS:
            return 0
    return vector


STRIP_STEPS = 8         # the strip path's output steps per program
STRIP_ELEMENTS = 1024   # and elements per step


def _strip(spec, shape, in_stride, out_stride, dtype, dilation):
    """The strip path's constexprs and grid sizes (STRIP, BLOCK_C, BLOCK_T, N_C_BLOCKS, N_T_BLOCKS,
    num_warps), or None: channel-first rows aligned to 16 bytes whose shifts are whole vectors (the
    dilation a multiple of one) and whose right padding is whole steps, K unrolled. Each program
    computes STRIP_STEPS outputs D apart along time, so that tap k of step j reads the input step
    tap 0 of step j + k does: each input vector is loaded and converted once for the K taps that
    use it. A step is BLOCK_T columns (the largest power of two dividing D, at most 128) of
    STRIP_ELEMENTS // BLOCK_T channels. Static profile (sm_90, dim 1536, SiLU, bf16): at dilation
    8, 0.95 warp-instructions per output at width 16 against 1.97 with a load and a conversion per
    tap, 0.48 against 0.88 at width 4; 128 to 146 registers, no spills."""
    vector = 16 // dtype.itemsize
    B, C, L = shape
    K, pad = spec.kernel_size, spec.pad_right
    if (dtype == torch.float64 or not 2 <= K <= MAX_UNROLLED_TAPS or in_stride[2] != 1 or out_stride[2] != 1
            or dilation % vector or pad % dilation
            or alignment(dtype.itemsize, L, *in_stride[:2], *out_stride[:2]) < vector):
        return None
    steps = max(1, min(STRIP_STEPS, triton.cdiv(L, dilation)))
    block_t = min(dilation & -dilation, 128)
    block_c = min(STRIP_ELEMENTS // block_t, triton.next_power_of_2(C))
    return dict(STRIP=steps, BLOCK_C=block_c, BLOCK_T=block_t, N_C_BLOCKS=triton.cdiv(C, block_c),
                N_T_BLOCKS=triton.cdiv(L, steps * dilation) * (dilation // block_t),
                num_warps=max(1, min(4, block_c * block_t // (32 * vector))))


def _geometry(spec, shape, in_stride, out_stride, dtype, reduction=False, no_window=False, large_items=False):
    """(dilation as the kernels take it, ALIGN, window vector or 0, tiles (BLOCK_C, BLOCK_T, warps),
    (channel blocks, time blocks)). `no_window`: the taps read a history or sequence ids beside x."""
    B, C, L = shape
    dilation = shift_unit(spec.kernel_size, spec.dilation)
    window = 0 if no_window else _window(spec, shape, in_stride, out_stride, dtype, dilation)
    if window:  # ALIGN claims the rows' alignment only; the shifts are constexprs
        align = window
    else:
        align = alignment(dtype.itemsize, L, dilation, spec.pad_right, *in_stride[:2], *out_stride[:2])
    channel_last = _channel_last(in_stride, C)
    # One address per element where the contiguous dimension's vectors do not line up: along time
    # (channel-first) ALIGN says so; along channels (channel-last), C and the time strides do.
    scalar = (alignment(dtype.itemsize, C, in_stride[0], in_stride[2], out_stride[0], out_stride[2]) == 1
              if channel_last else align == 1)
    tiles = _tiles(C, L, channel_last, scalar or dtype == torch.float64, dtype.itemsize, reduction, large_items)
    return dilation, align, window, tiles, (triton.cdiv(C, tiles[0]), triton.cdiv(L, tiles[1]))


@plan_cache
def _plan(spec: ConvSpec, epilogue: Epilogue, anti_causal, shape, in_stride, out_stride, w_stride, bias_stride,
          pre_stride, slope_stride, dtype, device, hist_layout=None, seq_stride=None):
    """hist_layout: (columns, strides) of a history read before x's first column, or None;
    seq_stride: the sequence ids' strides, or None."""
    B, C, L = shape
    K = spec.kernel_size
    dilation, align, window, (block_c, block_t, warps), (n_c, n_t) = _geometry(
        spec, shape, in_stride, out_stride, dtype, no_window=hist_layout is not None or seq_stride is not None)
    s_hist, h_stride = hist_layout or (0, (0, 0, 0))
    s_seq = seq_stride or (0, 0)
    pre_stride = pre_stride or (0, 0, 0)
    unroll, w_taps = _unrolled(K, _channel_last(in_stride, C))
    if needs_int64(((C, L), in_stride[1:]), ((C, L), out_stride[1:])):
        raise ValueError("a depthwise conv row of 2^31 elements or more is not supported")
    static = dict(
        C=C, L=L, DILATION=dilation, PAD_RIGHT=spec.pad_right,
        s_in_b=in_stride[0], s_in_c=in_stride[1], s_in_t=in_stride[2],
        s_w_c=w_stride[0], s_w_k=w_stride[2], s_bias=bias_stride or 0, s_slope=slope_stride or 0,
        s_out_b=out_stride[0], s_out_c=out_stride[1], s_out_t=out_stride[2],
        s_pre_b=pre_stride[0], s_pre_c=pre_stride[1], s_pre_t=pre_stride[2],
        S_HIST=s_hist, s_h_b=h_stride[0], s_h_c=h_stride[1], s_h_t=h_stride[2], s_seq_b=s_seq[0],
        s_seq_t=s_seq[1], HISTORY=hist_layout is not None, SEQ_IDX=seq_stride is not None,
        N_C_BLOCKS=n_c, N_T_BLOCKS=n_t, K=K, UNROLL=unroll, W_TAPS=w_taps, ANTI_CAUSAL=anti_causal,
        HAS_BIAS=bias_stride is not None, ACTIVATION=epilogue.activation, ACT_P0=epilogue.act_params[0],
        ACT_P1=epilogue.act_params[1], STORE_PRE=epilogue.store_pre, ACC_FP64=dtype == torch.float64,
        ALIGN=align, BLOCK_C=block_c, BLOCK_T=block_t, num_warps=warps)
    strip = None if hist_layout is not None or seq_stride is not None else _strip(
        spec, shape, in_stride, out_stride, dtype, dilation)
    if window:
        static.update(WINDOW=window, W_DILATION=dilation, W_PAD_RIGHT=spec.pad_right)
    elif unroll:
        static.update(CONST_SHIFTS=True, W_DILATION=dilation, W_PAD_RIGHT=spec.pad_right)
    if strip:
        static.update(strip)
        n_c, n_t = strip["N_C_BLOCKS"], strip["N_T_BLOCKS"]
    return (B * n_c * n_t,), static


def _launch(inp, w, bias, out, pre, slope, spec, epilogue, anti_causal, history=None, seq_idx=None):
    grid, static = _plan(spec, epilogue, anti_causal, inp.shape, inp.stride(), out.stride(), w.stride(),
                         None if bias is None else bias.stride(0), None if pre is None else pre.stride(),
                         None if slope is None else (slope.stride(0) if slope.numel() > 1 else 0), inp.dtype,
                         inp.device, None if history is None else (history.shape[2], history.stride()),
                         None if seq_idx is None else seq_idx.stride())
    launching.launch(depthwise_conv1d_kernel, grid, inp, {
        "in_ptr": inp, "w_ptr": w, "bias_ptr": bias, "out_ptr": out, "pre_ptr": pre, "slope_ptr": slope,
        "hist_ptr": history, "seq_ptr": seq_idx}, static)


def depthwise_forward(x, weight, bias=None, *, spec: ConvSpec, epilogue: Optional[Epilogue] = None, slope=None,
                      out_dtype=None, history=None, seq_idx=None):
    """y = act(depthwise conv(x, weight) + bias), in x's layout and dtype (or out_dtype: the fp32
    accumulator stored as it is); weight (C, 1, K) and bias in any float dtype. Returns y, or
    (y, pre-activation) when the epilogue stores it. A causal spec may also read `history` (B, C,
    S), x's dtype, as the columns before x's first (causal-conv1d's initial states, read where they
    are), and `seq_idx` (B, L) int32 (taps only within a sequence, 0 outside every sequence)."""
    if epilogue is None:
        epilogue = spec.epilogue()
    y = new_output_as(x, x.shape, out_dtype)
    pre = new_output_as(x, x.shape) if epilogue.store_pre else None
    if x.numel():
        _launch(x, weight, bias, y, pre, slope, spec, epilogue, False, history, seq_idx)
    return (y, pre) if pre is not None else y


_PLAIN = Epilogue()


def depthwise_input_grad(g, weight, *, spec: ConvSpec, out_dtype=None, seq_idx=None, like=None):
    """dx[b, c, t] = sum_k w[c, k] g[b, c, t + shift_k]: the forward kernel with taps read ahead; dx
    in g's layout (or like's) and dtype (or out_dtype). With `seq_idx`, the forward's: terms only
    within a sequence, dx 0 outside every sequence."""
    dx = new_output_as(g if like is None else like, g.shape, out_dtype)
    if g.numel():
        _launch(g, weight, None, dx, None, None, spec, _PLAIN, True, None, seq_idx)
    return dx


@plan_cache
def _weight_grad_plan(spec: ConvSpec, shape, x_stride, g_stride, dtype, device, seq_stride=None, recompute=None,
                      hist_layout=None):
    """recompute: (activation code, dy's strides, bias stride or None, weight strides) of the
    recomputing variant, or None; hist_layout: its history's (columns, strides), or None."""
    B, C, L = shape
    K = spec.kernel_size
    dilation, align, window, (block_c, block_t, warps), (n_c, n_t) = _geometry(
        spec, shape, x_stride, g_stride, dtype, reduction=True,
        no_window=seq_stride is not None or hist_layout is not None,
        large_items=recompute is not None and spec.kernel_size <= 4)
    s_seq = seq_stride or (0, 0)
    code, dy_stride, bias_stride, w_stride = recompute or (0, (0, 0, 0), None, (0, 0, 0))
    s_hist, h_stride = hist_layout or (0, (0, 0, 0))
    target = launching.target_of(device)
    resident = target.sm_count * 4 if target.gpu else 4
    n_chunks = max(1, min(B * n_t, resident // n_c))
    static = dict(
        B=B, C=C, L=L, DILATION=dilation, PAD_RIGHT=spec.pad_right,
        s_x_b=x_stride[0], s_x_c=x_stride[1], s_x_t=x_stride[2],
        s_g_b=g_stride[0], s_g_c=g_stride[1], s_g_t=g_stride[2], s_seq_b=s_seq[0], s_seq_t=s_seq[1],
        s_dy_b=dy_stride[0], s_dy_c=dy_stride[1], s_dy_t=dy_stride[2], s_w_c=w_stride[0], s_w_k=w_stride[2],
        s_bias=bias_stride or 0,
        S_HIST=s_hist, s_h_b=h_stride[0], s_h_c=h_stride[1], s_h_t=h_stride[2], HISTORY=hist_layout is not None,
        SEQ_IDX=seq_stride is not None, N_C_BLOCKS=n_c, N_T_BLOCKS=n_t, N_CHUNKS=n_chunks, K=K,
        ACC_FP64=dtype == torch.float64, ALIGN=align, BLOCK_C=block_c, BLOCK_T=block_t, num_warps=warps)
    if _channel_last(x_stride, C) and dtype.itemsize < 4 and K > 8:
        static.update(TILES=2)  # masked items only: both paths in one loop spilled 10 KB (16-bit, 16 taps, sm_90)
    if code:
        static.update(RECOMPUTE=code, HAS_BIAS=bias_stride is not None,
                      DY_ALIGN=alignment(dtype.itemsize, *dy_stride[:2]))
    if window:
        static.update(WINDOW=window, W_DILATION=dilation, W_PAD_RIGHT=spec.pad_right)
    elif x_stride[2] == 1:  # each tap's offset an immediate of its loads (channel-last: a multiple of C)
        static.update(CONST_SHIFTS=True, W_DILATION=dilation, W_PAD_RIGHT=spec.pad_right)
    return (n_chunks * n_c,), static, n_chunks, torch.float64 if dtype == torch.float64 else torch.float32


def _weight_grads(x, g, weight, spec, seq_idx=None, dy=None, bias=None, code=0, history=None):
    """(dw, db) from the per-chunk partials and the finalize; with `code`, the kernel computes g (an
    output) from dy instead of reading it (its pre-activation reading `history` before x)."""
    B, C, L = x.shape
    recompute = (code, dy.stride(), None if bias is None else bias.stride(0), weight.stride()) if code else None
    grid, static, n_chunks, acc_dtype = _weight_grad_plan(
        spec, x.shape, x.stride(), g.stride(), x.dtype, x.device, None if seq_idx is None else seq_idx.stride(),
        recompute, None if history is None else (history.shape[2], history.stride()))
    partial = new_output(x, (n_chunks, C * (spec.kernel_size + 1)), dtype=acc_dtype)
    if x.numel():
        launching.launch(depthwise_weight_grad_kernel, grid, x,
                         {"x_ptr": x, "g_ptr": g, "partial_ptr": partial, "seq_ptr": seq_idx, "dy_ptr": dy,
                          "w_ptr": weight if code else None, "bias_ptr": bias, "hist_ptr": history}, static)
    else:
        partial.zero_()
    dw, _, db = finalize_weight_grads([(partial, n_chunks, weight, None)])[0]
    return dw, db


def depthwise_weight_grad(g, x, weight, *, spec: ConvSpec, seq_idx=None):
    """(dw, db) of the depthwise conv whose input is x, for the output gradient g (already through
    the activation's derivative): per-chunk partials, then the finalize, two launches. With
    `seq_idx` (B, L) int32, a causal spec's products count only within a sequence, and outputs
    outside every sequence (seq_idx < 0) not at all."""
    return _weight_grads(x, g, weight, spec, seq_idx)


MAX_RECOMPUTED_TAPS = 16, 8  # channel-first, channel-last


def recomputes_in_weight_grad(spec: ConvSpec, x):
    """Whether depthwise_weight_grad_recomputed serves this conv: it holds every tap's operand in
    registers (sm_90, dim 1536: no spills up to width 16 channel-first and width 8 channel-last,
    whose tiles are wide along channels; 576 to 1244 bytes spilled at width 16 channel-last)."""
    return spec.kernel_size <= MAX_RECOMPUTED_TAPS[_channel_last(x.stride(), x.shape[1])]


def depthwise_weight_grad_recomputed(dy, x, weight, bias, *, spec: ConvSpec, activation: int, seq_idx=None,
                                     history=None):
    """(g, dw, db) of y = act(bias + depthwise conv(x, weight)) (act: a kernel activation code with
    an elementwise derivative of the pre-activation, such as SiLU) for the output gradient dy, where
    the forward kept no pre-activation: one kernel recomputes it from the x tiles it loads for the
    products anyway, applies the derivative, writes g = dy * act'(z) (fp32, x's layout: what the
    input gradient reads) and sums the products; then the finalize. With `seq_idx`, the forward's
    taps within a sequence, and g 0 outside every sequence; with `history` (B, C, S), x's dtype, the
    pre-activation's taps before x's first column read it (the products' do not: their share of dw
    is the caller's)."""
    g = new_output_as(x, x.shape, torch.float64 if x.dtype == torch.float64 else torch.float32)
    dw, db = _weight_grads(x, g, weight, spec, seq_idx, dy=dy, bias=bias, code=activation, history=history)
    return g, dw, db

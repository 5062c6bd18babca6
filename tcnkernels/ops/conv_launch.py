"""Launchers of the causal Conv1d kernels: forward and input gradient (one kernel with epilogue
options), and the weight gradient's per-chunk partials.

Inputs are validated by the public functions (`tcnkernels.functional`) before they get here. Small
TCNs are host-bound on a GPU, so everything that depends only on shapes, strides, dtype, flags and
device is computed once per distinct key (the `_plan` caches): a repeated call is a dict lookup,
the output allocations and the launch.
"""
import functools
from typing import NamedTuple

import torch
import triton

from .._backend import new_output
from . import launching
from .launching import (alignment, conv_tiles, dropout_tiles, dtype_flags, epilogue_tiles, ieee_fp32_tiles,
                        needs_int64, shift_unit, weight_grad_tiles)
from .reference import dropout_threshold
from .triton.conv_kernels import causal_conv1d_kernel, causal_conv1d_weight_grad_kernel
from .weight_launch import finalize_weight_grads


class Dropout(NamedTuple):
    """Dropout in a conv's epilogue: probability, "element" or "channel", which of the seeds. A tuple:
    it is part of the launch plans' cache key, and a tuple hashes in C (a dataclass in Python)."""
    p: float
    mode: str
    seed_index: int


# ------------------------------------------------------------------------------------------------
# Forward and input gradient: one kernel, causal or anti-causal.

@functools.lru_cache(maxsize=4096)
def _conv_plan(in_shape, in_stride, out_stride, res_layout, c_out, K, dilation, dtype, device, anti_causal, has_bias,
               relu, dropout, gate_scale, store_branch, residual, final_relu, tf32):
    B, c_red, L = in_shape
    target = launching.target_of(device)
    tiles = conv_tiles(c_out, c_red, L, K, dtype, residual_gemm=residual == 2)
    upcast, acc_fp64, precision = dtype_flags(dtype, target, tf32)
    on = dropout is not None and dropout.p > 0
    if on:
        tiles = dropout_tiles(tiles, residual == 2)
    align = alignment(dtype.itemsize, L, shift_unit(K, dilation), *in_stride[:2], *out_stride[:2])
    # A block's epilogue accesses (gate, branch, residual) are not shifted: their alignment does not
    # drop at dilation 1, and claiming it frees the registers per-element addresses would take. Not
    # for bias/ReLU/dropout alone: the store then costs more instructions (seq-MNIST, copy memory).
    heavy_epilogue = residual or store_branch or gate_scale is not None
    align_out = alignment(dtype.itemsize, L, *out_stride[:2], *(res_layout[1:3] if res_layout else ())) \
        if heavy_epilogue else align
    if residual or store_branch or (gate_scale is not None and target.capability < 90):
        tiles = epilogue_tiles(tiles, align_out)
    if precision == "ieee" and dtype == torch.float32 and target.gpu:
        tiles = ieee_fp32_tiles(tiles, target.capability, epilogue=on, align=align, residual_gemm=residual == 2)
    n_co, n_t = triton.cdiv(c_out, tiles.BLOCK_CO), triton.cdiv(L, tiles.BLOCK_T)
    rows = [(in_shape[1:], in_stride[1:]), ((c_out, L), out_stride[1:])]
    if res_layout is not None:  # (channels, stride_b, stride_c, stride_t) of the residual input
        rows.append(((res_layout[0], L), res_layout[2:]))
    meta = dict(ANTI_CAUSAL=anti_causal, HAS_BIAS=has_bias, APPLY_RELU=relu,
                DROPOUT=on, DROP_CHANNEL=on and dropout.mode == "channel",
                DROP_THRESHOLD=dropout_threshold(dropout.p) if on else 0,
                DROP_SCALE=1.0 / (1.0 - dropout.p) if on and dropout.p < 1 else 0.0,
                SEED_INDEX=dropout.seed_index if on else 0,
                GATE=gate_scale is not None, GATE_SCALE=gate_scale or 1.0, STORE_BRANCH=store_branch,
                RESIDUAL=residual, FINAL_RELU=final_relu,
                UPCAST=upcast, ACC_FP64=acc_fp64, INPUT_PRECISION=precision, ALIGN=align, ALIGN_OUT=align_out,
                ROW_INT64=needs_int64(*rows),
                BLOCK_CO=tiles.BLOCK_CO, BLOCK_CI=tiles.BLOCK_CI, BLOCK_T=tiles.BLOCK_T,
                num_warps=tiles.num_warps, num_stages=tiles.num_stages)
    return (B * n_co * n_t,), (shift_unit(K, dilation), n_co, n_t), meta


def _launch_conv(inp, w, w_rows, w_cols, w_strides, bias, out, dilation, anti_causal, relu=False, dropout=None,
                 seeds=None, gate=None, gate_scale=None, branch=None, res=None, res_weight=None, res_bias=None,
                 final_relu=False):
    """One causal_conv1d_kernel launch; `branch` and `gate` have out's strides (all three are ours)."""
    B, c_red, L = inp.shape
    c_out, K = out.shape[1], w.shape[2]
    ins, outs = inp.stride(), out.stride()
    residual = 0 if res is None else 1 if res_weight is None else 2
    grid, (d, n_co, n_t), meta = _conv_plan(
        (B, c_red, L), ins, outs, None if res is None else (res.shape[1], *res.stride()), c_out, K, dilation,
        inp.dtype, inp.device,
        anti_causal, bias is not None, relu, dropout, gate_scale, branch is not None, residual, final_relu,
        torch.backends.cudnn.allow_tf32)
    res_strides = (0, 0, 0) if res is None else res.stride()
    wr, wr_cols, wr_strides = res_weight if res_weight is not None else (None, 0, (0, 0))
    launching.launch(causal_conv1d_kernel, grid, inp, (
        inp, w, bias, out, branch, gate, seeds, res, wr, res_bias,
        c_red, c_out, L, K, d, w_rows, w_cols, 0 if res is None else res.shape[1], wr_cols,
        *ins, *w_strides, 0 if bias is None else bias.stride(0), *outs, *res_strides, *wr_strides,
        0 if res_bias is None else res_bias.stride(0), n_co, n_t), meta)
    return out


def conv_forward(x, w, w_cols, bias, dilation, relu, dropout=None, seeds=None, branch=False, res=None,
                 res_weight=None, res_bias=None, final_relu=False):
    """y = epilogue(causal_conv(x, w)); x (B, C_in, L), w (C_out, C_in, K) as `prepare_weights` returns
    it (or any layout with w_cols = C_in), bias (C_out,) or None. Epilogue: + bias, ReLU, `dropout`
    (a Dropout, with `seeds`), then with `branch` the output so far is also returned, then + res
    (identity) or + the 1x1 conv `res_weight` = (w, cols) of res (and res_bias), then a final ReLU.
    Returns y, or (y, branch output)."""
    B, _, L = x.shape
    c_out = w.shape[0]
    y = new_output(x, (B, c_out, L))
    pre = new_output(x, (B, c_out, L)) if branch else None
    if B * L > 0:
        _launch_conv(x, w, c_out, w_cols, w.stride(), bias, y, dilation, False, relu, dropout, seeds, branch=pre,
                     res=res, res_weight=_transposed(res_weight, False), res_bias=res_bias, final_relu=final_relu)
    return (y, pre) if branch else y


def conv_input_grad(g, w, w_cols, dilation, gate=None, gate_scale=1.0, res=None, res_weight=None):
    """dx[b, i, t] = sum_{o,k} W[o, i, k] * g[b, o, t + (K-1-k)*d]: the forward kernel with W read
    transposed and anti-causal taps; g is already gated. Epilogue: * (gate > 0) * gate_scale (the
    previous layer's ReLU and dropout, from its saved output), + res, or + res_weight^T res (a 1x1
    conv's input gradient, its weight as `prepare_weights` returns it)."""
    B, _, L = g.shape
    c_in = w.shape[1]
    dx = new_output(g, (B, c_in, L))
    if B * L > 0:
        ws = w.stride()
        _launch_conv(g, w, w_cols, w.shape[0], (ws[1], ws[0], ws[2]), None, dx, dilation, True, gate=gate,
                     gate_scale=None if gate is None else gate_scale, res=res,
                     res_weight=_transposed(res_weight, True))
    return dx


def _transposed(res_weight, transpose):
    """(w, row bound..., strides) of a prepared 1x1 weight as the residual GEMM reads it."""
    if res_weight is None:
        return None
    w, cols = res_weight
    if transpose:  # rows are w's input channels (padded), the reduction runs over its outputs
        return w, w.shape[0], (1, w.stride(0))
    return w, cols, (w.stride(0), 1)


# ------------------------------------------------------------------------------------------------
# Weight and bias gradients: per-chunk partials (the finalize kernel sums them in order).

@functools.lru_cache(maxsize=4096)
def _weight_grad_plan(x_shape, x_stride, dy_stride, y_stride, c_out, K, dilation, dtype, device, gate, gate2_scale,
                      write_g, write_ds, res_tap, tf32):
    B, c_in, L = x_shape
    target = launching.target_of(device)
    upcast, acc_fp64, precision = dtype_flags(dtype, target, tf32)
    align = alignment(dtype.itemsize, L, shift_unit(K, dilation), *x_stride[:2], *dy_stride[:2], *y_stride[:2])
    tiles = weight_grad_tiles(c_out, c_in, dtype, align, target.capability, gated=gate2_scale is not None)
    if precision == "ieee" and dtype == torch.float32 and target.gpu:
        tiles = ieee_fp32_tiles(tiles, target.capability, align=align, weight_grad=True)
    n_co, n_ci, n_t = (triton.cdiv(c_out, tiles.BLOCK_CO), triton.cdiv(c_in, tiles.BLOCK_CI),
                       triton.cdiv(L, tiles.BLOCK_T))
    # Chunks of (batch row, time block) items: enough programs for about one resident wave (about
    # four 4-warp or two 8-warp CTAs per SM, from the static profile); a few in the interpreter (more
    # than one, so the chunked sum is exercised). The count depends only on shapes and the device:
    # the partials and their summation order never change, so gradients are bitwise reproducible.
    resident = target.sm_count * (16 // tiles.num_warps) if target.gpu else 4
    taps = K + 1 if res_tap else K
    n_chunks = max(1, min(B * n_t, resident // (n_co * n_ci * taps)))
    meta = dict(GATE_BY_RELU=gate, GATE2=gate2_scale is not None, GATE2_SCALE=gate2_scale or 1.0, WRITE_G=write_g,
                WRITE_DS=write_ds, RES_TAP=res_tap, UPCAST=upcast, ACC_FP64=acc_fp64, INPUT_PRECISION=precision, ALIGN=align,
                ROW_INT64=needs_int64(((c_in, L), x_stride[1:]), ((c_out, L), dy_stride[1:]),
                                      ((c_out, L), y_stride[1:]), ((c_out, L), (L, 1))),
                BLOCK_CO=tiles.BLOCK_CO, BLOCK_CI=tiles.BLOCK_CI, BLOCK_T=tiles.BLOCK_T,
                num_warps=tiles.num_warps, num_stages=tiles.num_stages)
    return (n_chunks * n_co * n_ci * taps,), (shift_unit(K, dilation), n_co, n_ci, n_t, n_chunks), meta


def weight_grad_partials(dy, x, y, kernel_size, dilation, gate2=None, gate2_scale=1.0, write_g=False,
                         write_ds=False, res_dy=None):
    """(partial, n_chunks, g, ds, res_partial): per-chunk fp32 partial sums of dw and db (for
    finalize_weight_grads) of the conv whose input is x, for the gradient g = dy * (y > 0) [y: the
    saved output of a fused ReLU, or None] * (gate2 > 0) * gate2_scale [gate2: a block's saved
    pre-residual output, or None]; with write_g the kernel also stores g, with write_ds dy * (y > 0)
    (else None). With res_dy (a block's residual gradient, dy's shape and strides), the same launch
    also gives the partials of the 1x1 downsample that reads the same x (else res_partial is None)."""
    B, c_in, L = x.shape
    c_out = dy.shape[1]
    res_tap = res_dy is not None
    if res_tap and (res_dy.shape != dy.shape or res_dy.stride() != dy.stride() or y is not None or gate2 is not None
                    or write_g or write_ds):
        raise ValueError("res_dy needs dy's shape and strides and a conv without gates or stores")
    g = new_output(dy, (B, c_out, L)) if write_g else None
    ds = new_output(dy, (B, c_out, L)) if write_ds else None
    gate = dy if y is None else y
    xs, dys, gs = x.stride(), dy.stride(), gate.stride()
    grid, counts, meta = _weight_grad_plan(
        (B, c_in, L), xs, dys, gs, c_out, kernel_size, dilation, x.dtype, x.device, y is not None,
        None if gate2 is None else gate2_scale, bool(write_g), bool(write_ds), res_tap, torch.backends.cudnn.allow_tf32)
    n_chunks = counts[-1]
    acc_dtype = torch.float64 if meta["ACC_FP64"] else torch.float32
    partial = new_output(x, (n_chunks, c_out * (c_in * kernel_size + 1)), dtype=acc_dtype)
    res_partial = new_output(x, (n_chunks, c_out * (c_in + 1)), dtype=acc_dtype) if res_tap else None
    if B * L == 0:
        return partial.zero_(), n_chunks, g, ds, None if res_partial is None else res_partial.zero_()
    launching.launch(causal_conv1d_weight_grad_kernel, grid, x, (
        x, dy, gate, gate2, g, ds, partial, res_dy, res_partial, B, c_in, c_out, L, kernel_size, counts[0], *xs, *dys,
        *gs, *counts[1:]), meta)
    return partial, n_chunks, g, ds, res_partial


def conv_weight_grad(dy, x, y, weight, dilation, write_g):
    """(dw, db, g) of one plain conv (weight: its (C_out, C_in, K) weight, for shape and dtype): the
    partials and their finalize, two launches."""
    partial, n_chunks, g, _, _ = weight_grad_partials(dy, x, y, weight.shape[2], dilation, write_g=write_g)
    dw, _, db = finalize_weight_grads([(partial, n_chunks, weight, None)])[0]
    return dw, db, g

"""Launchers of the causal Conv1d kernels: forward and input gradient (one kernel with epilogue
options), and the weight gradient's per-chunk partials.

Inputs are validated by the public functions (`tcnkernels.functional`) before they get here. Small
TCNs are host-bound on a GPU, so everything that depends only on the spec, shapes, strides, dtype
and device is computed once per distinct key (the plans): a repeated call is a dict lookup, the
output allocations and the launch, whose tensors are the only arguments built per call.
"""
import functools
from typing import NamedTuple, Optional

import torch
import triton

from . import launching
from .activations import CODES, GATES, RELU
from .launching import alignment, dtype_flags, needs_int64, new_output, new_output_as, plan_cache, shift_unit
from .reference import dropout_threshold
from .specs import ConvSpec, Epilogue, GateRule
from .tiles import (
    activation_dropout_tiles,
    conv_tiles,
    dropout_tiles,
    epilogue_tiles,
    gated_tiles,
    ieee_fp32_tiles,
    rule_gate_tiles,
    weight_grad_tiles,
)
from .triton.conv_kernels import causal_conv1d_kernel, causal_conv1d_weight_grad_kernel
from .weight_launch import PreparedWeight, finalize_weight_grads

GATE_CODES = tuple(CODES[name] for name in GATES)


def channel_last(shape, stride):
    """A (B, C, L) tensor whose channels are contiguous (a transposed (B, L, C) one)."""
    return stride[1] == 1 and shape[1] > 1 and stride[2] != 1


class Residual(NamedTuple):
    """What a block's conv adds at the end of its epilogue: `res` itself, or the 1x1 conv `weight`
    of it (as weight_launch.prepare_weights returns it) plus `bias`."""
    res: torch.Tensor
    weight: Optional[PreparedWeight] = None
    bias: Optional[torch.Tensor] = None


# ------------------------------------------------------------------------------------------------
# Forward and input gradient: one kernel, causal or anti-causal.

@plan_cache
def _conv_plan(spec: ConvSpec, epilogue: Optional[Epilogue], anti_causal, in_shape, in_stride, c_out, out_stride,
               w_layout, bias_stride, res_layout, wr_layout, pre_stride, slope_stride, dtype, device, tf32,
               out2_stride=None):
    """One causal_conv1d_kernel launch: in (B, c_red, L) -> out (B, c_out, L), in groups of c_red
    and c_out channels (spec.groups: c_red and c_out are one group's). epilogue: None for the spec's
    own (its activation alone); w_layout: (K, rows, cols, strides, group offset) of the weight as the
    kernel reads it; bias_stride: None without a bias; res_layout: (channels, strides) of the
    residual input, or None; wr_layout: (cols, strides, bias stride or None) of its 1x1 weight, or
    None; pre_stride: the pre-activation store's strides (None without); slope_stride: PReLU's;
    out2_stride: the second output's (epilogue.split_rows: c_out counts both outputs' rows). With
    epilogue.aux, res_layout and wr_layout are the conditioning input's and its 1x1 weight's."""
    if epilogue is None:
        epilogue = spec.epilogue()
    groups = spec.groups
    B, c_red, L = in_shape
    c_red //= groups
    K, w_rows, w_cols, w_strides, w_group = w_layout
    target = launching.target_of(device)
    residual_gemm = epilogue.residual == 2 or epilogue.aux
    dropout = epilogue.dropout
    tiles = conv_tiles(c_out, c_red, L, K, dtype, residual_gemm=residual_gemm)
    upcast, acc_fp64, precision = dtype_flags(dtype, target, tf32)
    if dropout is not None:
        tiles = dropout_tiles(tiles, residual_gemm)
    if dropout is not None and epilogue.activation > 1:
        tiles = activation_dropout_tiles(tiles)
    if epilogue.activation in GATE_CODES:
        tiles = gated_tiles(tiles)
    if epilogue.gate_rule is not None:
        tiles = rule_gate_tiles(tiles)
    dilation = shift_unit(K, spec.dilation)
    align = alignment(dtype.itemsize, L, dilation, spec.pad_right, *in_stride[:2], *out_stride[:2])
    c_res, res_strides = res_layout if res_layout is not None else (0, (0, 0, 0))
    # A block's epilogue accesses (gate, branch, residual) are not shifted: their alignment does not
    # drop at dilation 1, and claiming it frees the registers per-element addresses would take. Not
    # for bias/ReLU/dropout alone: the store then costs more instructions (seq-MNIST, copy memory).
    gate = epilogue.gate_scale is not None or epilogue.gate_rule is not None
    heavy_epilogue = epilogue.residual or epilogue.store_branch or gate or epilogue.aux
    align_out = alignment(dtype.itemsize, L, *out_stride[:2], *(res_strides[:2] if res_layout else ())) \
        if heavy_epilogue else align
    if epilogue.residual or epilogue.store_branch or epilogue.aux or (gate and target.capability < 90):
        tiles = epilogue_tiles(tiles, align_out)
    if precision == "ieee" and dtype == torch.float32 and target.gpu:
        tiles = ieee_fp32_tiles(tiles, target.capability, epilogue=dropout is not None, align=align,
                                residual_gemm=residual_gemm, shifted=spec.pad_right != 0,
                                gated=epilogue.activation in GATE_CODES)
    n_co, n_t = triton.cdiv(c_out, tiles.BLOCK_CO), triton.cdiv(L, tiles.BLOCK_T)
    gated = epilogue.activation in GATE_CODES
    rows = [(in_shape[1:], in_stride[1:]), ((c_out, L), out_stride[1:])]
    if res_layout is not None:
        rows.append(((c_res, L), res_strides[1:]))
    out2_stride = out2_stride or (0, 0, 0)
    if epilogue.split_rows:
        rows.append(((c_out - epilogue.split_rows, L), out2_stride[1:]))
    wr_cols, wr_strides, res_bias_stride = wr_layout if wr_layout is not None else (0, (0, 0), None)
    on = dropout is not None
    rule = epilogue.gate_rule
    mask = dropout if on else rule.dropout if rule is not None else None  # the Philox mask drawn (or drawn again)
    pre_stride = pre_stride or (0, 0, 0)
    static = dict(
        # sizes
        C_IN=c_red, C_OUT=c_out, L=L, K=K, DILATION=dilation, PAD_RIGHT=spec.pad_right, N_GROUPS=groups,
        s_w_group=w_group, GATE_ROWS=c_out if gated else 0, W_ROWS=w_rows, W_COLS=w_cols, C_RES=c_res,
        WR_COLS=wr_cols, N_CO_BLOCKS=n_co, N_T_BLOCKS=n_t,
        # strides
        s_in_b=in_stride[0], s_in_c=in_stride[1], s_in_t=in_stride[2],
        s_w_out=w_strides[0], s_w_in=w_strides[1], s_w_k=w_strides[2], s_bias=bias_stride or 0,
        s_out_b=out_stride[0], s_out_c=out_stride[1], s_out_t=out_stride[2],
        s_res_b=res_strides[0], s_res_c=res_strides[1], s_res_t=res_strides[2],
        s_wr_out=wr_strides[0], s_wr_in=wr_strides[1], s_res_bias=res_bias_stride or 0,
        s_pre_b=pre_stride[0], s_pre_c=pre_stride[1], s_pre_t=pre_stride[2], s_slope=slope_stride or 0,
        SPLIT_ROWS=epilogue.split_rows, s_out2_b=out2_stride[0], s_out2_c=out2_stride[1], s_out2_t=out2_stride[2],
        # epilogue
        ANTI_CAUSAL=anti_causal, SHIFTED=spec.pad_right != 0, GROUPED=groups > 1, AUX=epilogue.aux,
        HAS_BIAS=bias_stride is not None,
        ACTIVATION=epilogue.activation, ACT_P0=epilogue.act_params[0], ACT_P1=epilogue.act_params[1], GATED=gated,
        STORE_PRE=epilogue.store_pre,
        DROPOUT=on, DROP_CHANNEL=mask is not None and mask.mode == "channel",
        DROP_THRESHOLD=dropout_threshold(mask.p) if mask is not None else 0, DROP_SCALE=dropout.scale if on else 0.0,
        SEED_INDEX=mask.seed_index if mask is not None else 0,
        GATE=2 if rule is not None else epilogue.gate_scale is not None,
        GATE_SCALE=rule.scale if rule is not None else epilogue.gate_scale or 1.0,
        GATE_ACTIVATION=rule.activation.code if rule is not None and rule.activation is not None else 0,
        GATE_FROM_INPUT=rule is not None and rule.from_input,
        GATE_DROPOUT=rule is not None and rule.dropout is not None,
        STORE_BRANCH=epilogue.store_branch, RESIDUAL=epilogue.residual, RES_SCALE=epilogue.res_scale,
        SPLIT=epilogue.split_rows > 0, FINAL_ACTIVATION=epilogue.final_activation,
        FINAL_PRE=epilogue.final_pre,
        # precision and alignment
        UPCAST=upcast, ACC_FP64=acc_fp64, INPUT_PRECISION=precision, ALIGN=align, ALIGN_OUT=align_out,
        ROW_INT64=needs_int64(*rows),
        LAST_ALIGN_IN=alignment(dtype.itemsize, in_stride[0], in_stride[2], c_red)
        if channel_last(in_shape, in_stride) else 1,
        LAST_ALIGN_OUT=alignment(dtype.itemsize, out_stride[0], out_stride[2])
        if channel_last((B, c_out, L), out_stride) else 1,
        # tiles
        BLOCK_CO=tiles.BLOCK_CO, BLOCK_CI=tiles.BLOCK_CI, BLOCK_T=tiles.BLOCK_T,
        num_warps=tiles.num_warps, num_stages=tiles.num_stages)
    return (B * groups * n_co * n_t,), static


def _launch_conv(inp, w, w_layout, bias, out, spec, epilogue, anti_causal, seeds, gate, branch, res, res_weight,
                 res_bias, wr_layout, pre=None, slope=None, out2=None):
    """One causal_conv1d_kernel launch; `branch` and `gate` have out's strides (all three are ours).
    Positional: this is the hot path of every conv (keyword calls cost more on the host)."""
    rows = out.shape[1] if out2 is None else out.shape[1] + out2.shape[1]
    grid, static = _conv_plan(spec, epilogue, anti_causal, inp.shape, inp.stride(), rows // spec.groups,
                              out.stride(), w_layout, None if bias is None else bias.stride(0),
                              None if res is None else (res.shape[1], res.stride()), wr_layout,
                              None if pre is None else pre.stride(),
                              None if slope is None else (slope.stride(0) if slope.numel() > 1 else 0), inp.dtype,
                              inp.device, torch.backends.cudnn.allow_tf32, None if out2 is None else out2.stride())
    launching.launch(causal_conv1d_kernel, grid, inp, {
        "in_ptr": inp, "w_ptr": w, "bias_ptr": bias, "out_ptr": out, "branch_ptr": branch, "gate_ptr": gate,
        "seed_ptr": seeds, "res_ptr": res, "wr_ptr": res_weight, "res_bias_ptr": res_bias, "pre_ptr": pre,
        "slope_ptr": slope, "out2_ptr": out2}, static)
    return out


def conv_forward(x, weight: PreparedWeight, bias=None, *, spec: ConvSpec, epilogue: Optional[Epilogue] = None,
                 seeds=None, branch=False, residual: Optional[Residual] = None, slope=None, contiguous=False):
    """y = epilogue(conv(x, w)); x (B, C_in, L), `weight` as `prepare_weights` returns it (or
    any (C_out, C_in // groups, K) tensor w with cols = C_in // groups), bias (C_out,) or None. The
    epilogue (by default the spec's activation; see specs.Epilogue): + bias, activation (`slope`:
    PReLU's, (C_out,) or (1,)), dropout (with `seeds`), then with `branch` the output so far is
    also returned, then + the residual, final activation. A gated unit gives C_out // 2 channels.
    y is allocated in x's layout (channel-last x, channel-last y) unless `contiguous`. Returns y, or (y, branch
    output), or with an epilogue that stores a pre-activation (store_pre: the first; final_pre:
    the final) (y, pre-activation) or (y, branch output, pre-activation)."""
    w, cols = weight
    B, _, L = x.shape
    c_out, c_in, K = w.shape
    if epilogue is None:
        epilogue = spec.epilogue()
    c_y = c_out // 2 if epilogue.activation in GATE_CODES else c_out
    alloc = new_output if contiguous else new_output_as  # `contiguous`: (B, C, L)-contiguous whatever x is
    y = alloc(x, (B, c_y, L))
    pre = alloc(x, (B, c_out, L)) if branch else None
    kept = alloc(x, (B, c_y if epilogue.final_pre else c_out, L)) if epilogue.store_pre or epilogue.final_pre else None
    if B * L > 0:
        res = res_weight = res_bias = wr_layout = None
        if residual is not None:
            res, res_prepared, res_bias = residual
            if res_prepared is not None:
                res_weight = res_prepared.w
                wr_layout = (res_prepared.cols, (res_weight.stride(0), 1),
                             None if res_bias is None else res_bias.stride(0))
        rows = c_y // spec.groups
        _launch_conv(x, w, (K, rows, cols, w.stride(), rows * w.stride(0)), bias, y, spec, epilogue, False, seeds,
                     None, pre, res, res_weight, res_bias, wr_layout, kept, slope)
    if kept is not None:
        return (y, pre, kept) if branch else (y, kept)
    return (y, pre) if branch else y


def conv_forward_split(z, weight: PreparedWeight, bias, res, *, split_rows, res_scale):
    """(out, out2) of a 1x1 conv of z (B, C, L) with `weight`'s rows in two outputs: the first
    `split_rows` in out as they are, the rest in out2 plus res_scale * res (res: out2's shape).
    Both are allocated in res's layout. One launch (a WaveNet block's skip and residual 1x1s)."""
    w, cols = weight
    B, _, L = z.shape
    c_out = w.shape[0]
    out, out2 = new_output_as(res, (B, split_rows, L)), new_output_as(res, (B, c_out - split_rows, L))
    if B * L > 0:
        _launch_conv(z, w, (1, c_out, cols, w.stride(), c_out * w.stride(0)), bias, out, ONE_BY_ONE,
                     _split_epilogue(split_rows, res_scale), False, None, None, None, res, None, None, None, None,
                     None, out2)
    return out, out2


ONE_BY_ONE = ConvSpec(1)  # a 1x1 conv's spec


@functools.lru_cache(maxsize=None)
def _split_epilogue(split_rows, res_scale):
    return Epilogue(residual=1, res_scale=res_scale, split_rows=split_rows)


@functools.lru_cache(maxsize=None)
def _input_grad_epilogue(gate_scale, residual, gate_rule=None, res_scale=1.0):
    if gate_rule is None:
        return Epilogue(gate_scale=gate_scale, residual=residual, res_scale=res_scale)
    act = gate_rule.activation
    return Epilogue(act_params=act.kernel_params() if act is not None else (0.0, 0.0), gate_rule=gate_rule,
                    residual=residual, res_scale=res_scale)


def conv_input_grad(g, weight: PreparedWeight, *, spec: ConvSpec, gate=None, gate_scale=1.0,
                    residual: Optional[Residual] = None, gate_rule: Optional[GateRule] = None, seeds=None,
                    res_scale=1.0):
    """dx[b, i, t] = sum_{o,k} W[o, i, k] * g[b, o, t + (K-1-k)*d - pad_right] (per group): the
    forward kernel with W read transposed and anti-causal taps; g is already gated. Epilogue:
    * (gate > 0) * gate_scale (the previous layer's ReLU and dropout, from its saved output), or
    with `gate_rule` its activation's derivative and its dropout mask (drawn again from `seeds`);
    + res_scale * residual.res, or + the transposed 1x1 conv residual.weight^T res (a downsample's input
    gradient)."""
    w, cols = weight
    B, _, L = g.shape
    c_out, c_in, K = w.shape
    groups = spec.groups
    dx = new_output_as(g if gate is None else gate, (B, c_in * groups, L))  # a gate has dx's strides
    if B * L > 0:
        ws = w.stride()
        res = res_weight = wr_layout = None
        code = 0
        if residual is not None:
            res, res_prepared, _ = residual
            code = 1
            if res_prepared is not None:  # rows are its input channels (padded), the reduction runs over its outputs
                res_weight, code = res_prepared.w, 2
                wr_layout = (res_weight.shape[0], (1, res_weight.stride(0)), None)
        per_group = c_out // groups
        _launch_conv(g, w, (K, cols, per_group, (ws[1], ws[0], ws[2]), per_group * ws[0]), None, dx, spec,
                     _input_grad_epilogue(None if gate is None else gate_scale, code, gate_rule, res_scale), True,
                     seeds, gate,
                     None, res, res_weight, None, wr_layout)
    return dx


# ------------------------------------------------------------------------------------------------
# Weight and bias gradients: per-chunk partials (the finalize kernel sums them in order).

class WeightGradPartials(NamedTuple):
    """What one weight-gradient launch gives: fp32 partials of dw and db (rows: chunks) for
    finalize_weight_grads, their chunk count, the gated gradient g and the residual's gradient ds
    (when asked to write them), and the extra tap's partials: the 1x1 downsample's (res_dy) or the
    conditioning's (aux_x)."""
    partial: torch.Tensor
    n_chunks: int
    g: Optional[torch.Tensor]
    ds: Optional[torch.Tensor]
    res_partial: Optional[torch.Tensor]


@plan_cache
def _weight_grad_plan(spec: ConvSpec, x_shape, x_stride, dy_stride, y_stride, c_out, dtype, device, gate, gate2,
                      write_g, write_ds, res_tap, tf32, aux=None, split=None):
    """gate: the Activation whose derivative y gives (None: no gate); gate2: None, a float (the legacy
    ReLU-and-dropout gate's scale) or a GateRule; aux: (c's channels, c's strides) for the
    conditioning's tap; split: (dy's rows, dy2's strides)."""
    B, c_in, L = x_shape
    K, groups = spec.kernel_size, spec.groups
    c_in //= groups  # one group's
    c_out_g = c_out // groups
    target = launching.target_of(device)
    upcast, acc_fp64, precision = dtype_flags(dtype, target, tf32)
    dilation = shift_unit(K, spec.dilation)
    c_aux, c_stride = aux if aux is not None else (0, (0, 0, 0))
    split_rows, dy2_stride = split if split is not None else (0, (0, 0, 0))
    align = alignment(dtype.itemsize, L, dilation, spec.pad_right, *x_stride[:2], *dy_stride[:2], *y_stride[:2],
                      *c_stride[:2], *dy2_stride[:2])
    tiles = weight_grad_tiles(c_out_g, c_in, dtype, align, target.capability,
                              gated="rule" if isinstance(gate2, GateRule) else gate2 is not None)
    if precision == "ieee" and dtype == torch.float32 and target.gpu:
        tiles = ieee_fp32_tiles(tiles, target.capability, align=align, weight_grad=True)
    n_co, n_ci, n_t = (triton.cdiv(c_out_g, tiles.BLOCK_CO), triton.cdiv(max(c_in, c_aux), tiles.BLOCK_CI),
                       triton.cdiv(L, tiles.BLOCK_T))
    # Chunks of (batch row, time block) items: enough programs for about one resident wave (about
    # four 4-warp or two 8-warp CTAs per SM, from the static profile); a few in the interpreter (more
    # than one, so the chunked sum is exercised). The count depends only on shapes and the device:
    # the partials and their summation order never change, so gradients are bitwise reproducible.
    resident = target.sm_count * (16 // tiles.num_warps) if target.gpu else 4
    taps = K + 1 if res_tap or aux is not None else K
    general = isinstance(gate2, GateRule)  # any activation's gate (else ReLU's, or none)
    rule_act = gate2.activation if general else None
    mask = gate2.dropout if general else None
    with_params = gate if gate is not None else rule_act
    params = with_params.kernel_params() if with_params is not None else (0.0, 0.0)
    n_chunks = max(1, min(B * n_t, resident // (n_co * n_ci * taps * groups)))
    static = dict(
        # sizes
        B=B, C_IN=c_in, C_OUT=c_out, L=L, K=K, DILATION=dilation, PAD_RIGHT=spec.pad_right, N_GROUPS=groups,
        C_OUT_G=c_out_g, SHIFTED=spec.pad_right != 0, GROUPED=groups > 1,
        N_CO_BLOCKS=n_co, N_CI_BLOCKS=n_ci, N_T_BLOCKS=n_t, N_CHUNKS=n_chunks,
        # strides
        s_x_b=x_stride[0], s_x_c=x_stride[1], s_x_t=x_stride[2],
        s_dy_b=dy_stride[0], s_dy_c=dy_stride[1], s_dy_t=dy_stride[2],
        s_y_b=y_stride[0], s_y_c=y_stride[1], s_y_t=y_stride[2],
        # gates and stores
        GATE_BY_RELU=gate == RELU and not general,
        GATE_ACTIVATION=0 if gate is None or (gate == RELU and not general) or gate.gated else gate.code,
        GATED_GRAD=gate.code if gate is not None and gate.gated else 0, GATE_ROWS=c_out // 2,
        ACT_P0=params[0], ACT_P1=params[1],
        GATE2=2 if general else gate2 is not None, GATE2_SCALE=gate2.scale if general else gate2 or 1.0,
        GATE2_ACTIVATION=rule_act.code if rule_act is not None else 0, GATE2_FROM_INPUT=general and gate2.from_input,
        GATE2_DROPOUT=mask is not None, DROP_CHANNEL=mask is not None and mask.mode == "channel",
        DROP_THRESHOLD=dropout_threshold(mask.p) if mask is not None else 0,
        SEED_INDEX=mask.seed_index if mask is not None else 0, WRITE_G=write_g,
        WRITE_DS=write_ds, RES_TAP=res_tap,
        # the conditioning's tap, the split gradient
        C_AUX=c_aux, s_c_b=c_stride[0], s_c_c=c_stride[1], s_c_t=c_stride[2], AUX_TAP=aux is not None,
        AUX_SWITCH_C=aux is not None and c_stride[1] != x_stride[1],
        AUX_SWITCH_T=aux is not None and c_stride[2] != x_stride[2],
        SPLIT_ROWS=split_rows, s_dy2_b=dy2_stride[0], s_dy2_c=dy2_stride[1], s_dy2_t=dy2_stride[2],
        SPLIT_DY=split is not None,
        # precision and alignment
        UPCAST=upcast, ACC_FP64=acc_fp64, INPUT_PRECISION=precision, ALIGN=align,
        ROW_INT64=needs_int64(((x_shape[1], L), x_stride[1:]), ((c_out, L), dy_stride[1:]), ((c_out, L), y_stride[1:]),
                              ((c_out, L), (L, 1)), ((c_aux, L), c_stride[1:]), ((c_out, L), dy2_stride[1:])),
        # tiles
        BLOCK_CO=tiles.BLOCK_CO, BLOCK_CI=tiles.BLOCK_CI, BLOCK_T=tiles.BLOCK_T,
        num_warps=tiles.num_warps, num_stages=tiles.num_stages)
    return (n_chunks * groups * n_co * n_ci * taps,), static, n_chunks, torch.float64 if acc_fp64 else torch.float32


def weight_grad_partials(dy, x, y=None, *, spec: ConvSpec, gate2=None, gate2_scale=1.0, write_g=False,
                         write_ds=False, res_dy=None, activation=RELU, gate2_rule: Optional[GateRule] = None,
                         seeds=None, aux_x=None, dy2=None) -> WeightGradPartials:
    """Per-chunk fp32 partial sums of dw and db of the conv whose input is x, for the gradient
    g = dy * (y > 0) [y: the saved output of a fused ReLU, or None; with another elementwise
    `activation`, g = dy * act'(.) from y, what its forward kept] * (gate2 > 0) * gate2_scale
    [gate2: a block's saved pre-residual output, or None; with `gate2_rule`, gate2 is what that
    rule reads and its dropout mask is drawn again from `seeds`]; with write_g the kernel also stores g,
    with write_ds dy * (y > 0). With res_dy (a block's residual gradient, dy's shape and strides),
    the same launch also gives the partials of the 1x1 downsample that reads the same x. With aux_x
    (a WaveNet block's conditioning c, x's batch and length), those of the 1x1 conv of c by the same
    gradient (in `res_partial`). With dy2, the gradient's rows are dy's then dy2's (two outputs of
    one conv, read where they are)."""
    B, c_in, L = x.shape
    gated = y is not None and activation is not None and activation.gated
    c_out = y.shape[1] if gated else dy.shape[1]  # a gated unit's conv has twice dy's channels
    K = spec.kernel_size
    res_tap = res_dy is not None
    if res_tap and (res_dy.shape != dy.shape or res_dy.stride() != dy.stride() or y is not None or gate2 is not None
                    or write_g or write_ds):
        raise ValueError("res_dy needs dy's shape and strides and a conv without gates or stores")
    if aux_x is not None and (res_tap or spec.groups != 1 or aux_x.shape[0] != B or aux_x.shape[2] != L):
        raise ValueError("aux_x needs x's batch and length, no res_dy and an ungrouped conv")
    if dy2 is not None:
        if y is not None or gate2 is not None or res_tap or write_g or write_ds or spec.groups != 1 \
                or dy2.shape[0] != B or dy2.shape[2] != L:
            raise ValueError("dy2 needs dy's batch and length and a conv without gates, stores or taps")
        c_out += dy2.shape[1]
    g = new_output(dy, (B, c_out, L)) if write_g else None
    ds = new_output(dy, (B, c_out, L)) if write_ds else None
    gate = y if y is not None else gate2 if gate2 is not None else dy  # gate2 is read with these strides
    grid, static, n_chunks, acc_dtype = _weight_grad_plan(
        spec, x.shape, x.stride(), dy.stride(), gate.stride(), c_out, x.dtype, x.device,
        None if y is None else activation,
        gate2_rule if gate2_rule is not None else None if gate2 is None else gate2_scale, write_g, write_ds, res_tap,
        torch.backends.cudnn.allow_tf32, None if aux_x is None else (aux_x.shape[1], aux_x.stride()),
        None if dy2 is None else (dy.shape[1], dy2.stride()))
    partial = new_output(x, (n_chunks, c_out * (c_in // spec.groups * K + 1)), dtype=acc_dtype)
    extra_in = c_in if res_tap else None if aux_x is None else aux_x.shape[1]
    res_partial = None if extra_in is None else new_output(x, (n_chunks, c_out * (extra_in + 1)), dtype=acc_dtype)
    if B * L == 0:
        return WeightGradPartials(partial.zero_(), n_chunks, g, ds,
                                  None if res_partial is None else res_partial.zero_())
    launching.launch(causal_conv1d_weight_grad_kernel, grid, x, {
        "x_ptr": x, "dy_ptr": dy, "y_ptr": gate, "gate2_ptr": gate2, "seed_ptr": seeds, "g_ptr": g, "ds_ptr": ds,
        "partial_ptr": partial,
        "res_dy_ptr": res_dy, "res_partial_ptr": res_partial, "c_ptr": aux_x, "dy2_ptr": dy2}, static)
    return tuple.__new__(WeightGradPartials, (partial, n_chunks, g, ds, res_partial))  # (C-level: a hot path)


def conv_weight_grad(dy, x, kept, weight, *, spec: ConvSpec, write_g=False):
    """(dw, db, g) of one plain conv (weight: its (C_out, C_in, K) weight, for shape and dtype): the
    partials and their finalize, two launches. kept: None (dy is the conv's own gradient), or what
    the forward of spec.activation kept (its output or pre-activation), from which the kernel applies
    the activation's derivative (and with write_g stores the result, for the input gradient)."""
    partials = weight_grad_partials(dy, x, kept, spec=spec, write_g=write_g, activation=spec.activation)
    dw, _, db = finalize_weight_grads([(partials.partial, partials.n_chunks, weight, None)])[0]
    return dw, db, partials.g

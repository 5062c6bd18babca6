"""causal-conv1d's computations: the forward and its backward, the decode update. The public functions
(tcnkernels.short_conv) check the arguments and call these.

  forward    out = act(bias + sum_k w[:, k] * xs[..., t + k*D]), xs = cat(initial states or zeros, x)
             (S = (K-1)*D columns of history); with seq_idx a tap counts where its source's seq_idx
             equals the output's, and outputs whose seq_idx < 0 are 0
  kernels    the depthwise Triton kernels (weight and bias in their own dtypes, loaded into the fp32
             accumulator; initial states in x's), seq_idx read by every kernel beside its tensors.
             The forward and the recompute read x and the initial states where they are (no
             copy of x); the states' gradient and their share of dweight come from the first S
             columns of the gradient and the states (copies of at most 2S columns per row)
  torch      the rest (states in another dtype, fp64 mixed with others, the torch backend),
             accumulated in fp32 (fp64 for fp64)
  backward   recomputes the pre-activation in fp32 (the caller may have modified the output in
             place) and takes dz in fp32: up to width 16 channel-first and 8 channel-last inside
             the weight-gradient kernel, from the tap operands its products load (it writes dz for
             the input gradient); wider, with a forward launch and PyTorch ops first. Then the
             input gradient (torch: per-tap products and sums): no atomics anywhere, so bitwise
             deterministic
  update     one kernel launch (tcnkernels.ops.update_launch), or PyTorch ops on the torch backend

Eager code calls `CausalConv1dFunction` and `update`; under torch.compile the public functions call
the registered ops instead, opaque nodes without graph breaks:
    tcnkernels::causal_conv1d(x, weight, bias?, seq_idx?, initial_states?, dilation, silu) -> out
    tcnkernels::causal_conv1d_backward(dout, x, weight, bias?, seq_idx?, initial_states?, dilation,
                                       silu) -> (dx, dweight, dbias, dinitial_states)
    tcnkernels::causal_conv1d_update(x, conv_state!, weight, bias?, cache_seqlens?,
                                     conv_state_indices?, dilation, silu) -> out
    tcnkernels::causal_conv1d_update_functional(...the same...) -> (out, new conv_state)
        (PyTorch ops: what tcnkernels.export rewrites an exported update into, on its way to ATen)
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .._backend import select_backend
from .activations import CODES, Activation, activation_backward
from .conv import _spec as conv_spec
from .depthwise_launch import (
    depthwise_forward,
    depthwise_input_grad,
    depthwise_weight_grad,
    depthwise_weight_grad_recomputed,
    recomputes_in_weight_grad,
)
from .launching import is_channel_last, new_output_as
from .specs import inference_epilogue
from .update_launch import causal_conv1d_update as update_launch

SILU = Activation("silu")


def acc_dtype(*tensors):
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def _uses_kernels(x, weight, bias, initial_states):
    """Whether the depthwise kernels run it: initial states in x's dtype (read or copied beside x),
    weight and bias in any dtype (the kernels load them into the fp32 accumulator) unless fp64 is
    mixed with another dtype (the kernels accumulate in fp64 only for fp64 x)."""
    fp64 = [t.dtype == torch.float64 for t in (x, weight, bias) if t is not None]
    return (select_backend(x.device) == "triton" and (all(fp64) or not any(fp64))
            and (initial_states is None or initial_states.dtype == x.dtype))


def _spec(width, dilation, silu):
    return conv_spec(width, dilation, 1, 0, CODES["silu"] if silu else 0, 0.0, 0.0, True)


def _with_history(x, history, S):
    """cat(history, x) along time, in x's layout (history None: zeros)."""
    B, C, L = x.shape
    xs = new_output_as(x, (B, C, S + L))
    if history is None:
        xs[..., :S].zero_()
    else:
        xs[..., :S].copy_(history)
    xs[..., S:].copy_(x)
    return xs


def _copy_as(x, t):
    """t copied into a fresh tensor in x's layout (an op's outputs may not be views)."""
    return new_output_as(x, t.shape).copy_(t)


def _in_layout_of(like, t):
    """t, or a copy of it in new_output_as(like)'s layout when its strides differ (an op's outputs
    have the layout its fake implementation promises)."""
    B, C, L = t.shape
    want = (L * C, 1, C) if is_channel_last(like) else (C * L, L, 1)
    same = all(s == w or n == 1 for s, w, n in zip(t.stride(), want, t.shape))
    return t if same else _copy_as(like, t)


# ---------------------------------------------------------------------------------------------
# PyTorch ops: seq_idx, states in another dtype, fp64 mixed with others, the torch backend

def history_seq_idx(seq_idx, S):
    """seq_idx of xs's columns: the history continues each row's first sequence."""
    return torch.cat([seq_idx[:, :1].expand(-1, S), seq_idx], dim=1)


def _masks(seq_idx, S, width, dilation, L):
    """Per tap, where it counts: seq_idx of its source == the output's, (B, 1, L) bools; None without seq_idx."""
    if seq_idx is None:
        return None
    src = history_seq_idx(seq_idx, S)
    return [(src[:, k * dilation:k * dilation + L] == seq_idx).unsqueeze(1) for k in range(width)]


def _torch_pre(xs, w, b, masks, dilation, L):
    """The pre-activation (B, C, L) from xs in the accumulation dtype (masks: _masks', or None)."""
    C, width = w.shape
    if masks is None:
        return F.conv1d(xs, w.unsqueeze(1), b, dilation=dilation, groups=C)
    z = torch.zeros(xs.shape[0], C, L, dtype=xs.dtype, device=xs.device)
    for k in range(width):
        z = z + torch.where(masks[k], xs[..., k * dilation:k * dilation + L], 0) * w[:, k, None]
    return z if b is None else z + b[:, None]


def _torch_inputs(x, weight, bias, seq_idx, initial_states, dilation):
    """(xs, weight, bias, tap masks) in the accumulation dtype, what both torch directions start from."""
    acc = acc_dtype(x, weight, bias, initial_states)
    width = weight.shape[1]
    S = (width - 1) * dilation
    xs = _with_history(x.to(acc), None if initial_states is None else initial_states.to(acc), S)
    return (xs, weight.to(acc), None if bias is None else bias.to(acc),
            _masks(seq_idx, S, width, dilation, x.shape[2]))


def torch_forward(x, weight, bias, seq_idx, initial_states, dilation, silu):
    xs, w, b, masks = _torch_inputs(x, weight, bias, seq_idx, initial_states, dilation)
    z = _torch_pre(xs, w, b, masks, dilation, x.shape[2])
    if silu:
        z = F.silu(z)
    if seq_idx is not None:
        z = torch.where((seq_idx < 0).unsqueeze(1), 0, z)
    return _in_layout_of(x, z.to(x.dtype).contiguous())


def torch_backward(dout, x, weight, bias, seq_idx, initial_states, dilation, silu):
    xs, w, b, masks = _torch_inputs(x, weight, bias, seq_idx, initial_states, dilation)
    C, width = weight.shape
    L = x.shape[2]
    g = dout.to(xs.dtype)
    if silu:
        g = activation_backward(g, _torch_pre(xs, w, b, masks, dilation, L), SILU)[0]
    if seq_idx is not None:
        g = torch.where((seq_idx < 0).unsqueeze(1), 0, g)
    dxs = torch.zeros_like(xs)
    dw = torch.empty(C, width, dtype=xs.dtype, device=x.device)
    for k in range(width):
        gk = g if masks is None else torch.where(masks[k], g, 0)
        dxs[..., k * dilation:k * dilation + L] += gk * w[:, k, None]
        dw[:, k] = (gk * xs[..., k * dilation:k * dilation + L]).sum(dim=(0, 2))
    return dxs, dw, g.sum(dim=(0, 2))


# ---------------------------------------------------------------------------------------------
# Both paths

def forward(x, weight, bias, seq_idx, initial_states, dilation, silu):
    if not _uses_kernels(x, weight, bias, initial_states):
        return torch_forward(x, weight, bias, seq_idx, initial_states, dilation, silu)
    spec = _spec(weight.shape[1], dilation, silu)
    return depthwise_forward(x, weight.unsqueeze(1), bias, spec=spec, epilogue=inference_epilogue(spec),
                             history=initial_states if weight.shape[1] > 1 else None, seq_idx=seq_idx)


def _history_grads(g, history, w3, spec, seq_idx, dtype):
    """(the initial states' gradient (B, C, S), their taps' share of dweight) from g's first
    head = min(S, L) columns: the only ones whose taps reach the states. Both kernels run on (B, C,
    S + head) tensors: g's head behind S zeros, and the states followed by head zero columns, so
    that the weight gradient sums the states' products alone (copies of at most 2S columns a row,
    never of x)."""
    B, C, S = history.shape
    head = min(S, g.shape[2])
    seq = None if seq_idx is None else history_seq_idx(seq_idx[:, :head], S)
    g_head = _with_history(g[..., :head], None, S)
    states = new_output_as(history, (B, C, S + head))
    states[..., :S].copy_(history)
    states[..., S:].zero_()
    dh = depthwise_input_grad(g_head, w3, spec=spec, out_dtype=dtype, seq_idx=seq)[..., :S]
    dw, _ = depthwise_weight_grad(g_head, states, w3, spec=spec, seq_idx=seq)
    return dh, dw


def backward(dout, x, weight, bias, seq_idx, initial_states, dilation, silu):
    """(dx, dweight, dbias, dinitial_states), each in its input's dtype, dx in dout's layout
    (dbias, dinitial_states: empty tensors without a bias, without initial states)."""
    S = (weight.shape[1] - 1) * dilation
    if not _uses_kernels(x, weight, bias, initial_states):
        dxs, dw, db = torch_backward(dout, x, weight, bias, seq_idx, initial_states, dilation, silu)
        dx = _copy_as(dout, dxs[..., S:])
    else:
        plain = _spec(weight.shape[1], dilation, False)
        w3 = weight.unsqueeze(1)
        history = initial_states if S else None  # read beside x where the forward reads it: no copy of x
        # dz in fp32, as a fused backward keeps it (16-bit dz would cost dweight ~2^-9 per term)
        if silu and recomputes_in_weight_grad(plain, x):
            # one kernel: the pre-activation from the x tiles the products load (and the states), dz, the products
            g, dw, db = depthwise_weight_grad_recomputed(dout, x, w3, bias, spec=plain, activation=CODES["silu"],
                                                         seq_idx=seq_idx, history=history)
        else:
            g = dout
            if silu:
                pre = depthwise_forward(x, w3, bias, spec=plain, out_dtype=acc_dtype(x), history=history,
                                        seq_idx=seq_idx)
                g = activation_backward(dout.to(pre.dtype), pre, SILU)[0]
            # with seq_idx the kernels mask each tap to its sequence; outputs outside every sequence
            # (seq_idx < 0) give no gradient (the weight gradient ignores their g, dx there is 0)
            dw, db = depthwise_weight_grad(g, x, w3, spec=plain, seq_idx=seq_idx)
        dx = depthwise_input_grad(g, w3, spec=plain, out_dtype=x.dtype, seq_idx=seq_idx, like=dout)
        if history is not None:  # the states' taps: their gradient, and their products' share of dw
            dxs, dw_history = _history_grads(g, history, w3, plain, seq_idx, x.dtype)
            dw = dw + dw_history
        elif initial_states is not None:  # width 1: no history
            dxs = initial_states.new_zeros(initial_states.shape)
        dw = dw.reshape(weight.shape)
    dh = x.new_empty(0) if initial_states is None else dxs[..., :S].to(initial_states.dtype).contiguous()
    db = x.new_empty(0) if bias is None else db.to(bias.dtype)
    return dx.to(x.dtype), dw.to(weight.dtype), db, dh


class CausalConv1dFunction(torch.autograd.Function):
    """apply(x, weight, bias, seq_idx, initial_states, dilation, silu) -> out. Saves the inputs, not the
    output: the backward recomputes what it needs."""

    @staticmethod
    def forward(ctx, x, weight, bias, seq_idx, initial_states, dilation, silu):
        ctx.save_for_backward(x, weight, bias, seq_idx, initial_states)
        ctx.dilation, ctx.silu = dilation, silu
        return forward(x, weight, bias, seq_idx, initial_states, dilation, silu)

    @staticmethod
    def backward(ctx, dout):
        x, weight, bias, seq_idx, initial_states = ctx.saved_tensors
        dx, dw, db, dh = backward(dout, x, weight, bias, seq_idx, initial_states, ctx.dilation, ctx.silu)
        needs = ctx.needs_input_grad
        return (dx if needs[0] else None, dw if needs[1] else None, db if needs[2] else None, None,
                dh if needs[4] else None, None, None)


def update(x, conv_state, weight, bias, cache_seqlens, conv_state_indices, dilation, silu):
    """The decode update (x (B, dim, seqlen)): out, conv_state modified in place."""
    if select_backend(x.device) == "triton":
        return update_launch(x, conv_state, weight, bias, cache_seqlens, conv_state_indices, dilation, silu)
    return torch_update(x, conv_state, weight, bias, cache_seqlens, conv_state_indices, dilation, silu)


def torch_update(x, conv_state, weight, bias, cache_seqlens, conv_state_indices, dilation, silu):
    rows = None if conv_state_indices is None else conv_state_indices.long()
    state = conv_state if rows is None else conv_state[rows.clamp(min=0)]  # (batch, dim, state_len), a copy
    z, new_state = _update_rows(x, state, weight, bias, cache_seqlens, dilation, silu)
    if rows is None:
        conv_state.copy_(new_state)
    else:
        valid = rows >= 0
        z = torch.where(valid[:, None, None], z, 0)
        conv_state[rows[valid]] = new_state[valid]
    return _in_layout_of(x, z.to(x.dtype).contiguous())


def torch_update_functional(x, conv_state, weight, bias, cache_seqlens, conv_state_indices, dilation, silu):
    """torch_update without writing: (out, the whole new conv_state), in functional ops only (what
    tcnkernels.export decomposes the update into). Rows of a pool with a negative index write into
    a scratch row past the pool's end, dropped after."""
    rows = None if conv_state_indices is None else conv_state_indices.long()
    state = conv_state if rows is None else conv_state[rows.clamp(min=0)]
    z, new_state = _update_rows(x, state, weight, bias, cache_seqlens, dilation, silu)
    if rows is None:
        return _in_layout_of(x, z.to(x.dtype).contiguous()), new_state
    valid = rows >= 0
    z = torch.where(valid[:, None, None], z, 0)
    pool = torch.cat([conv_state, conv_state[:1]])  # the scratch row
    target = torch.where(valid, rows, conv_state.shape[0])
    pool = pool.index_put((target,), new_state)
    return _in_layout_of(x, z.to(x.dtype).contiguous()), pool[:conv_state.shape[0]]


def _update_rows(x, state, weight, bias, cache_seqlens, dilation, silu):
    """(the fp32-or-wider output, the rows' new states) of the update on the rows' states `state`."""
    C, width = weight.shape
    S = (width - 1) * dilation
    seqlen, state_len = x.shape[2], state.shape[2]
    acc = acc_dtype(x, weight, bias, state)
    if cache_seqlens is None or state_len == 0:  # (a width-1 conv may keep no state: nothing to read or write)
        history = state[..., state_len - S:]
        new_state = torch.cat([state, x.to(state.dtype)], dim=-1)[..., seqlen:]
    else:
        start = cache_seqlens.long().unsqueeze(1)
        read = torch.remainder(start + torch.arange(-S, 0, device=x.device), state_len)
        history = state.gather(2, read.unsqueeze(1).expand(-1, C, -1))
        kept = min(seqlen, state_len)  # the last tokens win
        write = torch.remainder(start + torch.arange(seqlen - kept, seqlen, device=x.device), state_len)
        new_state = state.scatter(2, write.unsqueeze(1).expand(-1, C, -1), x[..., seqlen - kept:].to(state.dtype))
    xs = torch.cat([history.to(acc), x.to(acc)], dim=-1)
    z = F.conv1d(xs, weight.to(acc).unsqueeze(1), None if bias is None else bias.to(acc), dilation=dilation, groups=C)
    if silu:
        z = F.silu(z)
    return z, new_state


# ---------------------------------------------------------------------------------------------
# torch.library registration, for torch.compile(fullgraph=True)

@torch.library.custom_op("tcnkernels::causal_conv1d", mutates_args=())
def causal_conv1d_op(x: Tensor, weight: Tensor, bias: Optional[Tensor], seq_idx: Optional[Tensor],
                     initial_states: Optional[Tensor], dilation: int, silu: bool) -> Tensor:
    return forward(x, weight, bias, seq_idx, initial_states, dilation, silu)


@causal_conv1d_op.register_fake
def _(x, weight, bias, seq_idx, initial_states, dilation, silu):
    return new_output_as(x, x.shape)


@torch.library.custom_op("tcnkernels::causal_conv1d_backward", mutates_args=())
def causal_conv1d_backward_op(dout: Tensor, x: Tensor, weight: Tensor, bias: Optional[Tensor],
                              seq_idx: Optional[Tensor], initial_states: Optional[Tensor], dilation: int,
                              silu: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    return backward(dout, x, weight, bias, seq_idx, initial_states, dilation, silu)


@causal_conv1d_backward_op.register_fake
def _(dout, x, weight, bias, seq_idx, initial_states, dilation, silu):
    dh = x.new_empty(0) if initial_states is None else initial_states.new_empty(initial_states.shape)
    db = x.new_empty(0) if bias is None else bias.new_empty(bias.shape)
    return new_output_as(dout, x.shape), weight.new_empty(weight.shape), db, dh


def _setup_context(ctx, inputs, output):
    x, weight, bias, seq_idx, initial_states, dilation, silu = inputs
    ctx.save_for_backward(x, weight, bias, seq_idx, initial_states)
    ctx.dilation, ctx.silu = dilation, silu


def _backward(ctx, dout):
    x, weight, bias, seq_idx, initial_states = ctx.saved_tensors
    dx, dw, db, dh = causal_conv1d_backward_op(dout, x, weight, bias, seq_idx, initial_states, ctx.dilation,
                                               ctx.silu)
    needs = ctx.needs_input_grad
    return (dx if needs[0] else None, dw if needs[1] else None, db if needs[2] else None, None,
            dh if needs[4] else None, None, None)


causal_conv1d_op.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("tcnkernels::causal_conv1d_update", mutates_args=("conv_state",))
def causal_conv1d_update_op(x: Tensor, conv_state: Tensor, weight: Tensor, bias: Optional[Tensor],
                            cache_seqlens: Optional[Tensor], conv_state_indices: Optional[Tensor], dilation: int,
                            silu: bool) -> Tensor:
    return update(x, conv_state, weight, bias, cache_seqlens, conv_state_indices, dilation, silu)


@causal_conv1d_update_op.register_fake
def _(x, conv_state, weight, bias, cache_seqlens, conv_state_indices, dilation, silu):
    return new_output_as(x, x.shape)


@torch.library.custom_op("tcnkernels::causal_conv1d_update_functional", mutates_args=())
def causal_conv1d_update_functional_op(x: Tensor, conv_state: Tensor, weight: Tensor, bias: Optional[Tensor],
                                       cache_seqlens: Optional[Tensor], conv_state_indices: Optional[Tensor],
                                       dilation: int, silu: bool) -> Tuple[Tensor, Tensor]:
    """The decode update as a pure function, (out, the new conv_state): what tcnkernels.export
    rewrites an exported program's in-place update into, so that it decomposes to ATen ops."""
    out, state = torch_update_functional(x, conv_state, weight, bias, cache_seqlens, conv_state_indices, dilation,
                                         silu)
    return out, state.clone(memory_format=torch.contiguous_format)  # a fresh tensor, as its fake one


@causal_conv1d_update_functional_op.register_fake
def _(x, conv_state, weight, bias, cache_seqlens, conv_state_indices, dilation, silu):
    return new_output_as(x, x.shape), torch.empty_like(conv_state)

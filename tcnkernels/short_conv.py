"""causal-conv1d's functions, with the same signatures and semantics, plus `dilation` and any width:
`causal_conv1d_fn`, `causal_conv1d_update`, `causal_conv1d_varlen_states`, and FLA's
`ShortConvolution` module. (causal-conv1d: Dao-AILab/causal-conv1d 1.6, the depthwise causal conv of
Mamba-family models.)

With the history S = (width - 1) * dilation, `causal_conv1d_fn` computes

    out[b, c, t] = act(bias[c] + sum_k weight[c, k] * xs[b, c, S + t - (width - 1 - k) * dilation])

where xs = cat(initial_states or zeros (batch, dim, S), x) along time, accumulated in fp32 (fp64 for
fp64 inputs) and returned in x's dtype. With `seq_idx`, a tap counts only where the seq_idx of its
source equals the output position's, and positions whose seq_idx < 0 give 0.

Where it runs (tcnkernels.ops.short_conv): the depthwise Triton kernels (on a GPU, or on a CPU in
Triton's interpreter), weight and bias in their own dtypes, initial states in x's, seq_idx both
ways: the forward reads x, the states and seq_idx in place; PyTorch ops otherwise and on the torch
backend. The backward recomputes the
pre-activation, so the output may be modified in place before it, and uses no atomics, so it is
bitwise deterministic. The decode update is one kernel launch for the whole batch. Under
torch.compile all of it runs as registered ops (tcnkernels::causal_conv1d, ::causal_conv1d_backward,
::causal_conv1d_update), without graph breaks.

Where it differs from causal-conv1d: states and seq_idx work with either layout (causal-conv1d
takes them with channel-last x only); seq_idx combines with initial and final states (causal-conv1d
refuses it): the initial states continue each row's first sequence, and the final states keep the
columns of its last sequence (zeros where it is shorter than S, as causal_conv1d_varlen_states);
final states come back contiguous (batch, dim, S) unless `final_states_out` is given; the update's
conv_state_indices must name entries of the pool (or -1), which is not checked on the device.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .functional import _check_tensor
from .ops import short_conv as ops

ACTIVATIONS = (None, "silu", "swish")


class DtypeError(TypeError, ValueError):
    """A tensor of the wrong dtype: a TypeError, as tcnkernels raises for dtypes, and a ValueError,
    as callers of causal-conv1d's API check for."""


def _check_float(name, t, ndim, device=None):
    """functional's tensor check (type, float dtype, rank), and x's device."""
    try:
        _check_tensor(name, t, ndim)
    except TypeError as exc:
        if isinstance(t, torch.Tensor):
            raise DtypeError(str(exc)) from None
        raise
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device} but x is on {device}")


def _check_shape(name, t, shape):
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")


def _check_index(name, t, shape, device):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be an int32 tensor, got {type(t).__name__}")
    if t.dtype != torch.int32:
        raise DtypeError(f"{name} must be an int32 tensor, got {t.dtype}")
    _check_shape(name, t, shape)
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but x is on {device}")


def _check_common(x, weight, bias, activation, dilation):
    """(dim, width, history S) after checking the arguments every function shares."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be None, 'silu' or 'swish', got {activation!r}")
    if isinstance(dilation, bool) or not isinstance(dilation, int) or dilation < 1:
        raise ValueError(f"dilation must be an int >= 1, got {dilation!r}")
    _check_float("weight", weight, (2,), x.device)
    dim, width = weight.shape
    if width < 1:
        raise ValueError(f"weight must be (dim, width) with width >= 1, got shape {tuple(weight.shape)}")
    if x.shape[1] != dim:
        raise ValueError(f"x has {x.shape[1]} channels (x.shape={tuple(x.shape)}) but weight has dim={dim}")
    if bias is not None:
        _check_float("bias", bias, (1,), x.device)
        _check_shape("bias", bias, (dim,))
    return dim, width, (width - 1) * dilation


def causal_conv1d_fn(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, seq_idx: Optional[Tensor] = None,
                     initial_states: Optional[Tensor] = None, return_final_states: bool = False,
                     final_states_out: Optional[Tensor] = None, activation: Optional[str] = None, *,
                     dilation: int = 1):
    """Depthwise causal conv, causal-conv1d's `causal_conv1d_fn` with `dilation` (module docstring).

    Args:
        x: (batch, dim, seqlen), any strides (channel-first or channel-last views alike).
        weight: (dim, width), any width >= 1; bias: (dim,) or None; their own float dtypes.
        seq_idx: (batch, seqlen) int32 or None: packed sequences.
        initial_states: (batch, dim, S) or None, S = (width - 1) * dilation.
        return_final_states: also return the last S columns of cat(initial_states or zeros, x).
        final_states_out: (batch, dim, S), written with the final states when given.
        activation: None, "silu" or "swish".
        dilation: int >= 1.
    Returns:
        out (batch, dim, seqlen) in x's dtype, or (out, final_states) with return_final_states.
    """
    _check_float("x", x, (3,))
    dim, width, S = _check_common(x, weight, bias, activation, dilation)
    batch, _, seqlen = x.shape
    if not isinstance(return_final_states, bool):
        raise TypeError(f"return_final_states must be a bool, got {type(return_final_states).__name__}")
    if seq_idx is not None:
        _check_index("seq_idx", seq_idx, (batch, seqlen), x.device)
    if initial_states is not None:
        _check_float("initial_states", initial_states, (3,), x.device)
        _check_shape("initial_states", initial_states, (batch, dim, S))
    if final_states_out is not None:
        if not return_final_states:
            raise ValueError("final_states_out is given but return_final_states is False")
        _check_float("final_states_out", final_states_out, (3,), x.device)
        _check_shape("final_states_out", final_states_out, (batch, dim, S))
    silu = activation is not None
    if torch.compiler.is_compiling():  # the registered op: an opaque node in the compiled graph
        out = ops.causal_conv1d_op(x, weight, bias, seq_idx, initial_states, dilation, silu)
    elif torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias, initial_states)):
        out = ops.CausalConv1dFunction.apply(x, weight, bias, seq_idx, initial_states, dilation, silu)
    else:
        out = ops.forward(x, weight, bias, seq_idx, initial_states, dilation, silu)
    if not return_final_states:
        return out
    # the last S columns of cat(initial_states or zeros, x), differentiable by autograd
    if S <= seqlen:
        final = x[..., seqlen - S:]
    elif initial_states is None:
        final = F.pad(x, (S - seqlen, 0))
    else:
        final = torch.cat([initial_states[..., seqlen:].to(x.dtype), x], dim=-1)
    if seq_idx is not None and seqlen:  # the last sequence's columns only
        seq = ops.history_seq_idx(seq_idx, S)[:, seqlen:]
        final = torch.where(((seq == seq_idx[:, -1:]) & (seq >= 0)).unsqueeze(1), final, 0)
    if final_states_out is not None:
        return out, final_states_out.copy_(final)
    return out, final.contiguous()


def causal_conv1d_update(x: Tensor, conv_state: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                         activation: Optional[str] = None, cache_seqlens: Optional[Tensor] = None,
                         conv_state_indices: Optional[Tensor] = None, *, dilation: int = 1) -> Tensor:
    """Decode step(s), causal-conv1d's `causal_conv1d_update` with `dilation`; conv_state is updated in place.

    Args:
        x: (batch, dim) or (batch, dim, seqlen) new tokens.
        conv_state: (n, dim, state_len), state_len >= S = (width - 1) * dilation; n == batch, or the
            pool's size with conv_state_indices.
        weight (dim, width), bias (dim,) or None, activation None / "silu" / "swish", dilation as
            causal_conv1d_fn's.
        cache_seqlens: (batch,) int32 or None. None: the state shifts left by seqlen and x fills its
            end. Given: the state is a circular buffer, the history read at (cache_seqlens - S + j)
            mod state_len and x written from cache_seqlens mod state_len, token by token (when
            seqlen > state_len the last tokens win).
        conv_state_indices: (batch,) int32 or None: row b uses conv_state[idx[b]]; -1 is a padding
            slot (output 0, no state touched). Two rows naming one entry: unspecified.
    Returns:
        out, the shape of x, in x's dtype.
    """
    _check_float("x", x, (2, 3))
    squeeze = x.dim() == 2
    if squeeze:
        x = x.unsqueeze(-1)
    dim, width, S = _check_common(x, weight, bias, activation, dilation)
    batch, _, seqlen = x.shape
    _check_float("conv_state", conv_state, (3,), x.device)
    state_len = conv_state.shape[2]
    if conv_state.shape[1] != dim or state_len < S:
        raise ValueError(f"conv_state must be (n, dim={dim}, state_len >= (width - 1) * dilation = {S}), got shape "
                         f"{tuple(conv_state.shape)}")
    if conv_state_indices is None:
        if conv_state.shape[0] != batch:
            raise ValueError(f"conv_state has {conv_state.shape[0]} rows but x has batch {batch} (without "
                             "conv_state_indices they must match)")
    else:
        _check_index("conv_state_indices", conv_state_indices, (batch,), x.device)
    if cache_seqlens is not None:
        _check_index("cache_seqlens", cache_seqlens, (batch,), x.device)

    silu = activation is not None
    if torch.compiler.is_compiling():
        out = ops.causal_conv1d_update_op(x, conv_state, weight, bias, cache_seqlens, conv_state_indices, dilation,
                                          silu)
    else:
        out = ops.update(x, conv_state, weight, bias, cache_seqlens, conv_state_indices, dilation, silu)
    return out.squeeze(-1) if squeeze else out


def causal_conv1d_varlen_states(x: Tensor, cu_seqlens: Tensor, state_len: int) -> Tensor:
    """The last state_len tokens of each packed sequence, as causal-conv1d's
    `causal_conv1d_varlen_states`: x (total_tokens, dim), cu_seqlens (batch + 1,) int32 offsets.
    Returns (batch, dim, state_len) with channel-last strides, zero where a sequence is shorter."""
    _check_float("x", x, (2,))
    if not isinstance(cu_seqlens, torch.Tensor):
        raise TypeError(f"cu_seqlens must be a 1-D int32 tensor of batch + 1 offsets, got {type(cu_seqlens).__name__}")
    if cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise DtypeError(f"cu_seqlens must be an int32 (or int64) tensor, got {cu_seqlens.dtype}")
    if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 1:
        raise ValueError(f"cu_seqlens must be 1-D with batch + 1 offsets, got shape {tuple(cu_seqlens.shape)}")
    if cu_seqlens.device != x.device:
        raise ValueError(f"cu_seqlens is on {cu_seqlens.device} but x is on {x.device}")
    if isinstance(state_len, bool) or not isinstance(state_len, int) or state_len < 0:
        raise ValueError(f"state_len must be an int >= 0, got {state_len!r}")
    starts, ends = cu_seqlens[:-1].long(), cu_seqlens[1:].long()
    positions = ends.unsqueeze(1) - state_len + torch.arange(state_len, device=x.device)  # (batch, state_len)
    inside = positions >= starts.unsqueeze(1)
    states = torch.where(inside.unsqueeze(-1), x[positions.clamp(min=0)], 0)  # (batch, state_len, dim)
    return states.transpose(1, 2)


class ShortConvolution(nn.Conv1d):
    """FLA's short convolution: a depthwise causal conv over (batch, seqlen, hidden) inputs, with an
    nn.Conv1d's parameters (weight (hidden, 1, kernel_size), bias) and state_dict, and `dilation`.

    forward(x, cache=None, output_final_state=False) -> (y, final_state or None): x and y
    (batch, seqlen, hidden); cache (batch, hidden, S) the initial state. step(x, cache) -> y: one
    decode step, x (batch, hidden) or (batch, 1, hidden), cache (batch, hidden, S) updated in place."""

    def __init__(self, hidden_size: int, kernel_size: int, dilation: int = 1, bias: bool = False,
                 activation: Optional[str] = "silu", device=None, dtype=None):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be None, 'silu' or 'swish', got {activation!r}")
        super().__init__(hidden_size, hidden_size, kernel_size, dilation=dilation, groups=hidden_size,
                         padding=0, bias=bias, device=device, dtype=dtype)
        self.hidden_size, self.activation = hidden_size, activation

    def forward(self, x: Tensor, cache: Optional[Tensor] = None, output_final_state: bool = False):
        out = causal_conv1d_fn(x.transpose(1, 2), self.weight[:, 0], self.bias, initial_states=cache,
                               return_final_states=output_final_state, activation=self.activation,
                               dilation=self.dilation[0])
        y, final = out if output_final_state else (out, None)
        return y.transpose(1, 2), final

    def step(self, x: Tensor, cache: Tensor) -> Tensor:
        single = x.dim() == 3
        y = causal_conv1d_update(x[:, 0] if single else x, cache, self.weight[:, 0], self.bias, self.activation,
                                 dilation=self.dilation[0])
        return y.unsqueeze(1) if single else y

"""causal-conv1d's functions, with the same signatures and semantics, plus `dilation` and any width:
`causal_conv1d_fn`, `causal_conv1d_update`, `causal_conv1d_varlen_states`, and FLA's
`ShortConvolution` module. (causal-conv1d: Dao-AILab/causal-conv1d 1.6, the depthwise causal conv of
Mamba-family models.)

With the history S = (width - 1) * dilation, `causal_conv1d_fn` computes

    out[b, c, t] = act(bias[c] + sum_k weight[c, k] * xs[b, c, S + t - (width - 1 - k) * dilation])

where xs = cat(initial_states or zeros (batch, dim, S), x) along time, accumulated in fp32 (fp64 for
fp64 inputs) and returned in x's dtype. With `seq_idx`, a tap counts only where the seq_idx of its
source equals the output position's, and positions whose seq_idx < 0 give 0.

Where it runs: without states and seq_idx, with weight and bias in x's dtype, `tcnkernels.conv1d`'s
depthwise path (the Triton kernels on a GPU, its torch path on a CPU). Every other case (initial
states, seq_idx, mixed dtypes, the decode update, varlen states) runs as PyTorch ops: on any device,
differentiable, traced by torch.compile without graph breaks.

Where it differs from causal-conv1d: states and seq_idx work with either layout (causal-conv1d
takes them with channel-last x only); final states come back contiguous (batch, dim, S) unless
`final_states_out` is given; seq_idx together with states is refused, as causal-conv1d does.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .functional import _check_tensor, conv1d

ACTIVATIONS = (None, "silu", "swish")


def _check_float(name, t, ndim, device=None):
    """functional's tensor check (type, float dtype, rank), and x's device."""
    _check_tensor(name, t, ndim)
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device} but x is on {device}")


def _check_shape(name, t, shape):
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")


def _check_index(name, t, shape, device):
    if not isinstance(t, torch.Tensor) or t.dtype != torch.int32:
        raise TypeError(f"{name} must be an int32 tensor, got {getattr(t, 'dtype', type(t).__name__)}")
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


def _acc_dtype(*tensors):
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def _taps(xs, weight, bias, dilation, length, seq_src=None, seq_out=None):
    """sum_k weight[:, k] * xs[..., S + t - (width-1-k)*dilation] for t < length, xs (B, dim, S + length)
    in the accumulation dtype. seq_src (B, S + length) / seq_out (B, length): a tap counts where they match."""
    dim, width = weight.shape
    if seq_src is None:
        return F.conv1d(xs, weight.unsqueeze(1), bias, dilation=dilation, groups=dim)
    S = (width - 1) * dilation
    out = torch.zeros(xs.shape[0], dim, length, dtype=xs.dtype, device=xs.device)
    for k in range(width):
        start = S - (width - 1 - k) * dilation
        same = (seq_src[:, start:start + length] == seq_out).unsqueeze(1)
        out = out + torch.where(same, xs[..., start:start + length], 0) * weight[:, k, None]
    return out if bias is None else out + bias[:, None]


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
        if initial_states is not None or return_final_states:
            raise ValueError("seq_idx cannot be combined with initial_states or return_final_states (as in "
                             "causal-conv1d): a packed batch's states belong to its sequences")
    if initial_states is not None:
        _check_float("initial_states", initial_states, (3,), x.device)
        _check_shape("initial_states", initial_states, (batch, dim, S))
    if final_states_out is not None:
        if not return_final_states:
            raise ValueError("final_states_out is given but return_final_states is False")
        _check_float("final_states_out", final_states_out, (3,), x.device)
        _check_shape("final_states_out", final_states_out, (batch, dim, S))
    act = "silu" if activation in ("silu", "swish") else None

    if (seq_idx is None and initial_states is None and weight.dtype == x.dtype
            and (bias is None or bias.dtype == x.dtype)):
        out = conv1d(x, weight.unsqueeze(1), bias, dilation, dim, "causal", act)
        xs = None
    else:
        acc = _acc_dtype(x, weight, bias, initial_states)
        history = (torch.zeros(batch, dim, S, dtype=acc, device=x.device) if initial_states is None
                   else initial_states.to(acc))
        xs = torch.cat([history, x.to(acc)], dim=-1)
        seq_src = None if seq_idx is None else F.pad(seq_idx, (S, 0), value=-1)
        z = _taps(xs, weight.to(acc), None if bias is None else bias.to(acc), dilation, seqlen, seq_src, seq_idx)
        z = F.silu(z) if act else z
        if seq_idx is not None:
            z = torch.where((seq_idx < 0).unsqueeze(1), 0, z)
        out = z.to(x.dtype)
    if not return_final_states:
        return out
    if xs is None:
        final = F.pad(x, (S, 0))[..., seqlen:]  # the last S columns of cat(zeros, x)
    else:
        final = xs[..., xs.shape[-1] - S:].to(x.dtype)
    final = final.contiguous()
    if final_states_out is not None:
        final_states_out.copy_(final)
        return out, final_states_out
    return out, final


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
        rows = None
    else:
        _check_index("conv_state_indices", conv_state_indices, (batch,), x.device)
        rows = conv_state_indices.long()
    if cache_seqlens is not None:
        _check_index("cache_seqlens", cache_seqlens, (batch,), x.device)

    valid = None if rows is None else rows >= 0
    state = conv_state if rows is None else conv_state[rows.clamp(min=0)]  # (batch, dim, state_len), a copy
    acc = _acc_dtype(x, weight, bias, conv_state)
    if cache_seqlens is None:
        xs = torch.cat([state[..., state_len - S:].to(acc), x.to(acc)], dim=-1)
        new_state = torch.cat([state, x.to(state.dtype)], dim=-1)[..., seqlen:]
    else:
        start = cache_seqlens.long().unsqueeze(1)
        read = torch.remainder(start + torch.arange(-S, 0, device=x.device), state_len)
        history = state.gather(2, read.unsqueeze(1).expand(-1, dim, -1))
        xs = torch.cat([history.to(acc), x.to(acc)], dim=-1)
        kept = min(seqlen, state_len)  # the last tokens win
        write = torch.remainder(start + torch.arange(seqlen - kept, seqlen, device=x.device), state_len)
        new_state = state.scatter(2, write.unsqueeze(1).expand(-1, dim, -1), x[..., seqlen - kept:].to(state.dtype))
    z = _taps(xs, weight.to(acc), None if bias is None else bias.to(acc), dilation, seqlen)
    if activation is not None:
        z = F.silu(z)
    if rows is None:
        conv_state.copy_(new_state)
    else:
        z = torch.where(valid[:, None, None], z, 0)
        conv_state[rows[valid]] = new_state[valid]
    out = z.to(x.dtype)
    return out.squeeze(-1) if squeeze else out


def causal_conv1d_varlen_states(x: Tensor, cu_seqlens: Tensor, state_len: int) -> Tensor:
    """The last state_len tokens of each packed sequence, as causal-conv1d's
    `causal_conv1d_varlen_states`: x (total_tokens, dim), cu_seqlens (batch + 1,) int32 offsets.
    Returns (batch, dim, state_len) with channel-last strides, zero where a sequence is shorter."""
    _check_float("x", x, (2,))
    if not isinstance(cu_seqlens, torch.Tensor) or cu_seqlens.dtype not in (torch.int32, torch.int64) \
            or cu_seqlens.dim() != 1 or cu_seqlens.numel() < 1:
        raise TypeError("cu_seqlens must be a 1-D int32 tensor of batch + 1 offsets")
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

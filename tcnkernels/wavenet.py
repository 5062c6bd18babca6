"""WaveNet's gated residual block, with Parallel WaveGAN's semantics and state_dict keys.

    h = dropout(x)
    a, b = halves of conv(h) + conv1x1_aux(c)      a dilated conv to gate_channels, a 1x1 conditioning
    z = tanh(a) * sigmoid(b)
    return (x + conv1x1_out(z)) * sqrt(0.5), conv1x1_skip(z)

How it runs: eagerly on the Triton backend, as one autograd Function whose forward is two conv
launches (tcnkernels.ops.wavenet): the gated conv reads c beside x (the conditioning's 1x1 as a GEMM in
the same program), and the skip and residual 1x1s are one conv with two outputs, the residual add
and scale in its epilogue. Under torch.compile and torch.export, and on the torch backend, the
same block composed of `conv1d`s: the conditioning is then one more input of the dilated conv, its
weight on the tap that reads the current step (the last tap of a causal conv, the middle one of a
centred conv), so conv, conditioning and gate are one conv of cat(h, c) (`gate_weights`).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from ._backend import select_backend
from .functional import _autocast_all, conv1d, padding_of
from .ops.wavenet import WaveNetFunction, gate_spec, wavenet_inference


def _check_inputs(x, c, residual_channels, aux_channels):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3 or x.shape[1] != residual_channels:
        raise ValueError(f"x must be (B, residual_channels={residual_channels}, T), got shape {tuple(x.shape)}")
    if c is None:
        return
    if not isinstance(c, torch.Tensor):
        raise TypeError(f"c must be a torch.Tensor or None, got {type(c).__name__}")
    if not aux_channels:
        raise ValueError("c was given but the block has no conditioning (aux_channels=0)")
    if c.dim() != 3 or c.shape[0] != x.shape[0] or c.shape[1] != aux_channels or c.shape[2] != x.shape[2]:
        raise ValueError(f"c must be (B={x.shape[0]}, aux_channels={aux_channels}, T={x.shape[2]}), got shape "
                         f"{tuple(c.shape)}")
    if c.dtype != x.dtype or c.device != x.device:
        raise TypeError(f"c must be {x.dtype} on {x.device} like x, got {c.dtype} on {c.device}")


def gate_weights(conv_weight, aux_weight, causal):
    """The dilated conv's weight (G, R, K) and the conditioning's (G, A, 1) as one conv's weight
    (G, R + A, K): the conditioning on the tap that reads the current step."""
    K = conv_weight.shape[2]
    tap = K - 1 if causal else (K - 1) // 2
    return torch.cat([conv_weight, F.pad(aux_weight, (tap, K - 1 - tap))], dim=1)


def wavenet_block(x, c, conv_weight, conv_bias, aux_weight, skip_weight, skip_bias, out_weight, out_bias, dilation,
                  causal=True, dropout=0.0, training=False):
    """The block's (x_out, skip) from its weights; `c` and `aux_weight` None without conditioning.
    Eager on the Triton backend: the fused op (tcnkernels.ops.wavenet). Under torch.compile and
    torch.export, and on the torch backend: the same block composed of `conv1d`s (the registered
    ops, or the PyTorch reference), which export decomposes."""
    tensors = _autocast_all(x, c, conv_weight, conv_bias, aux_weight, skip_weight, skip_bias, out_weight, out_bias)
    x, c, conv_weight, conv_bias, aux_weight, skip_weight, skip_bias, out_weight, out_bias = tensors
    h = F.dropout(x, dropout, training) if dropout > 0 and training else None
    if _fused(tensors):
        K = conv_weight.shape[2]
        spec = gate_spec(K, dilation, padding_of("causal" if causal else "same", K, dilation))
        args = (spec, x, h, c, conv_weight, conv_bias, aux_weight, skip_weight, skip_bias, out_weight, out_bias)
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
            return WaveNetFunction.apply(*args)
        return wavenet_inference(*args)
    return _composed(x, x if h is None else h, c, conv_weight, conv_bias, aux_weight, skip_weight, skip_bias,
                     out_weight, out_bias, dilation, causal)


_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _fused(tensors):
    """Whether the fused op runs: eager, on the Triton backend, every tensor of x's dtype and device
    (otherwise the composed block runs, and its convs check and report what is wrong)."""
    x = tensors[0]
    if torch.compiler.is_compiling() or select_backend(x.device) == "torch" or x.dtype not in _KERNEL_DTYPES:
        return False
    return all(t is None or (t.dtype == x.dtype and t.device == x.device) for t in tensors)


def _composed(x, h, c, conv_weight, conv_bias, aux_weight, skip_weight, skip_bias, out_weight, out_bias, dilation,
              causal):
    weight = conv_weight
    if c is not None:
        h = torch.cat([h, c], dim=1)
        weight = gate_weights(conv_weight, aux_weight, causal)
    z = conv1d(h, weight, conv_bias, dilation, 1, "causal" if causal else "same", "gated_tanh")
    heads_bias = None if skip_bias is None else torch.cat([skip_bias, out_bias])
    heads = conv1d(z, torch.cat([skip_weight, out_weight]), heads_bias, 1, 1, "causal")
    skip, residual = heads.split([skip_weight.shape[0], out_weight.shape[0]], dim=1)
    return (x + residual) * math.sqrt(0.5), skip


class WaveNetBlock(nn.Module):
    """WaveNet's residual block, fused: Parallel WaveGAN's `ResidualBlock` (its
    `parallel_wavegan.layers.WaveNetResidualBlock`) with the same Parameters and state_dict keys
    (`conv`, `conv1x1_aux`, `conv1x1_out`, `conv1x1_skip`), so its checkpoints load both ways.

        block = tcnkernels.WaveNetBlock(64, 128, 64, kernel_size=3, dilation=4, aux_channels=80)
        x, skip = block(x, c)        # x (B, 64, T), c (B, 80, T) -> (B, 64, T), (B, 64, T)

    `causal=True` pads (K-1)*dilation on the left; `causal=False` centres the kernel (odd K), as
    Parallel WaveGAN does by default. Without `c` (None) the block runs unconditioned, as there.
    `dropout` applies to the block's input in training mode. A stack of causal blocks streams
    exactly with `tcnkernels.Streamer`.
    """

    def __init__(self, residual_channels, gate_channels, skip_channels, kernel_size, dilation, aux_channels=0,
                 dropout=0.0, causal=True, bias=True):
        super().__init__()
        for name, value in (("residual_channels", residual_channels), ("gate_channels", gate_channels),
                            ("skip_channels", skip_channels), ("kernel_size", kernel_size), ("dilation", dilation)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if isinstance(aux_channels, bool) or not isinstance(aux_channels, int) or aux_channels < 0:
            raise ValueError(f"aux_channels must be an int >= 0, got {aux_channels!r}")
        if gate_channels % 2:
            raise ValueError(f"gate_channels must be even (the gate splits it in halves), got {gate_channels}")
        if not causal and kernel_size % 2 == 0:
            raise ValueError(f"a non-causal block centres its kernel: kernel_size must be odd, got {kernel_size}")
        if not isinstance(dropout, (int, float)) or isinstance(dropout, bool) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        self.kernel_size, self.dilation, self.causal, self.dropout = kernel_size, dilation, bool(causal), dropout
        self.residual_channels, self.aux_channels = residual_channels, aux_channels
        self.conv = nn.Conv1d(residual_channels, gate_channels, kernel_size, dilation=dilation, bias=bias)
        self.conv1x1_aux = nn.Conv1d(aux_channels, gate_channels, 1, bias=False) if aux_channels else None
        self.conv1x1_out = nn.Conv1d(gate_channels // 2, residual_channels, 1, bias=bias)
        self.conv1x1_skip = nn.Conv1d(gate_channels // 2, skip_channels, 1, bias=bias)

    def forward(self, x, c=None):
        _check_inputs(x, c, self.residual_channels, self.aux_channels)
        return wavenet_block(x, c, self.conv.weight, self.conv.bias,
                             None if c is None else self.conv1x1_aux.weight, self.conv1x1_skip.weight,
                             self.conv1x1_skip.bias, self.conv1x1_out.weight, self.conv1x1_out.bias, self.dilation,
                             self.causal, self.dropout, self.training)

    def extra_repr(self):
        return (f"residual_channels={self.residual_channels}, kernel_size={self.kernel_size}, "
                f"dilation={self.dilation}, aux_channels={self.aux_channels}, causal={self.causal}, "
                f"dropout={self.dropout}")

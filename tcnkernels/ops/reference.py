"""Pure-PyTorch reference: the CPU path, the test oracle and the benchmark baseline, in one place.

`causal_conv1d_reference` is what the fused kernels compute. `ReferenceTemporalBlock` and
`ReferenceTemporalConvNet` transcribe the authors' TCN (Bai, Kolter & Koltun 2018, `TCN/tcn.py`)
as users run it: `nn.Conv1d` padded on both sides, a chomp copy, separate ReLU, dropout and
residual ops, weight norm through `torch.nn.utils.weight_norm`.
"""
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .._native import native_ops
from .activations import activate, activation_of


def conv1d_reference(x, weight, bias=None, dilation=1, groups=1, padding=None, activation=None, slope=None):
    """y = act(conv1d(pad(x, padding), weight, bias, dilation, groups)); x: (B, C_in, L); padding
    (left, right) with left + right = (K-1)*dilation (None: causal, all on the left); activation an
    activations.Activation (or a name), slope PReLU's weight."""
    if padding is None:
        padding = ((weight.shape[-1] - 1) * dilation, 0)
    if isinstance(activation, str):
        activation = activation_of(activation)[0]
    if any(padding):  # (F.pad copies x even when it pads nothing)
        x = F.pad(x, padding)
    y = F.conv1d(x, weight, bias, dilation=dilation, groups=groups)
    return activate(y, activation, slope)


def causal_conv1d_reference(x, weight, bias=None, dilation=1, activation=None):
    """y = act(conv1d(left-pad(x, (K-1)*dilation), weight, bias, dilation)); x: (B, C_in, L)."""
    pad = (weight.shape[-1] - 1) * dilation
    y = F.conv1d(F.pad(x, (pad, 0)), weight, bias, dilation=dilation)
    return torch.relu(y) if activation == "relu" else y


# ------------------------------------------------------------------------------------------------
# Dropout: counter-based Philox, the same bits as the Triton kernels' `tl.randint4x(seed, counter)`
# (Philox4x32, 10 rounds, counter (counter_lo, counter_hi, 0, 0), key (seed_lo, seed_hi), four
# 32-bit draws). In a (B, C, L) activation, step t of row r = b*C + c takes draw t % 4 of counter
# r * ceil(L/4) + t // 4 ("element" mode: one Philox evaluation serves four steps), or draw 0 of
# counter r for the whole row ("channel" mode: spatial dropout). Kept iff the draw >= p * 2^32; kept
# values are scaled by 1/(1-p), as nn.Dropout does.

_M32 = 0xFFFFFFFF
_PHILOX_KEY = (0x9E3779B9, 0xBB67AE85)
_PHILOX_ROUND = (0xD2511F53, 0xCD9E8D57)


def philox4x32(seed, counters):
    """The four Philox draws (uint32 values in int64 tensors) of `counters` (int64) under `seed` (an
    int64 scalar tensor or int). Pure PyTorch: 64-bit products wrap, and only their low 64 bits are used."""
    c0, c1 = counters & _M32, (counters >> 32) & _M32
    c2 = c3 = torch.zeros_like(c0)
    k0, k1 = seed & _M32, (seed >> 32) & _M32
    for _ in range(10):
        product_b, product_a = c2 * _PHILOX_ROUND[1], c0 * _PHILOX_ROUND[0]
        c0, c2 = ((product_b >> 32) & _M32) ^ c1 ^ k0, ((product_a >> 32) & _M32) ^ c3 ^ k1
        c1, c3 = product_b & _M32, product_a & _M32
        k0, k1 = (k0 + _PHILOX_KEY[0]) & _M32, (k1 + _PHILOX_KEY[1]) & _M32
    return c0, c1, c2, c3


def dropout_threshold(p):
    """Draws below this are dropped: p * 2^32, rounded (0 keeps everything, 2^32 nothing)."""
    return min(2**32, max(0, round(p * 2**32)))


def dropout_keep_mask(seed, shape, p, mode="element"):
    """The keep mask of a (B, C, L) activation: bool, (B, C, L), or (B, C, 1) in channel mode.
    On a CPU with the C++ helper built (csrc/philox_dropout.cpp) it makes the same bits faster."""
    B, C, L = shape
    rows, threshold = B * C, dropout_threshold(p)
    # The C++ helper on CPU tensors in eager code; under torch.compile the PyTorch version, which
    # Inductor fuses into one kernel.
    native = native_ops() if seed.device.type == "cpu" and not torch.compiler.is_compiling() else None
    if native is not None:
        keep = native.philox_keep_mask(seed, rows, L, threshold, mode == "channel")
    elif mode == "channel":
        keep = philox4x32(seed.reshape(()), torch.arange(rows, device=seed.device))[0] >= threshold
    else:
        quads = -(-L // 4)
        counters = torch.arange(rows * quads, device=seed.device)
        keep = torch.stack(philox4x32(seed.reshape(()), counters), dim=-1).view(rows, quads * 4)[:, :L] >= threshold
    return keep.reshape(B, C, L if mode == "element" else 1)


def dropout_reference(x, seed, p, mode="element"):
    """x with the Philox keep mask of `seed` applied and kept values scaled by 1/(1-p); x: (B, C, L)."""
    if p == 0:
        return x
    if p >= 1:
        return torch.zeros_like(x)
    keep = dropout_keep_mask(seed, x.shape, p, mode)
    return torch.where(keep, x * (1.0 / (1.0 - p)), torch.zeros((), dtype=x.dtype, device=x.device))


def draw_dropout_seeds(n, device):
    """n dropout seeds from torch's generator, as a device tensor: no host read, so a training step
    can be captured in a CUDA graph, and torch.manual_seed reproduces the masks."""
    return torch.randint(0, 2**62, (n,), device=device, dtype=torch.int64)


def _conv(x, weight, bias, dilation, pad_right, activation):
    """The block's conv in this reference: right padding pad_right, the rest on the left."""
    total = (weight.shape[-1] - 1) * dilation
    return conv1d_reference(x, weight, bias, dilation, 1, (total - pad_right, pad_right), activation)


def temporal_block_reference(x, w1, b1, w2, b2, wd, bd, dilation, p=0.0, mode="element", seeds=None, conv=_conv,
                             activation="relu", final_activation=True, conv2_activation=True, pad_right=0):
    """The reference TemporalBlock's forward on given weights, left padding instead of pad + chomp,
    and Philox dropout (applied when `seeds`, two int64 seeds, are given; p one probability or a pair):
    what the fused block computes. x: (B, C_in, L); w1 (C_out, C_in, K); w2 (C_out, C_out, K);
    wd (C_out, C_in, 1) or None. `conv(x, w, b, dilation, pad_right, activation)`: the conv the
    block is built from (this reference's, or the fused op). The options: `activation` after each
    conv (a name or an activations.Activation), none after the residual add without
    `final_activation` (Darts' block), none after conv2 without `conv2_activation` (Darts' last
    block), `pad_right` steps of each conv's padding on the right (0: causal)."""
    if isinstance(activation, str):
        activation = activation_of(activation)[0]
    p1, p2 = p if isinstance(p, (tuple, list)) else (p, p)
    out = conv(x, w1, b1, dilation, pad_right, activation)
    if seeds is not None:
        out = dropout_reference(out, seeds[0], p1, mode)
    out = conv(out, w2, b2, dilation, pad_right, activation if conv2_activation else None)
    if seeds is not None:
        out = dropout_reference(out, seeds[1], p2, mode)
    res = x if wd is None else conv(x, wd, bd, 1, 0, None)
    return activate(out + res, activation) if final_activation else out + res


class Chomp1d(nn.Module):
    def __init__(self, chomp_size):
        super().__init__()
        self.chomp_size = chomp_size

    def forward(self, x):
        return x[:, :, : -self.chomp_size].contiguous()


def _weight_norm(module, api):
    if api == "legacy":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return nn.utils.weight_norm(module)
    if api == "parametrizations":
        return nn.utils.parametrizations.weight_norm(module)
    raise ValueError(f"weight_norm_api must be 'legacy' or 'parametrizations', got {api!r}")


class TemporalBlockBase(nn.Module):
    """What the reference block and the fused block share: the init and the residual forward.
    Subclasses build conv1, conv2 (weight-normalised), net, downsample (or None) and relu."""

    def init_weights(self):
        # The authors' init. Under weight norm the first two draws land in a tensor recomputed from
        # g and v, so they only advance the RNG; only the 1x1 downsample init takes effect.
        self.conv1.weight.data.normal_(0, 0.01)
        self.conv2.weight.data.normal_(0, 0.01)
        if self.downsample is not None:
            self.downsample.weight.data.normal_(0, 0.01)

    def forward(self, x):
        out = self.net(x)
        res = x if self.downsample is None else self.downsample(x)
        return self.relu(out + res)


def temporal_levels(block, num_inputs, num_channels, kernel_size, dropout, padding=None, **kwargs):
    """The reference TemporalConvNet's stack: level i is a block with dilation 2**i (padding: the
    reference's causal (kernel_size-1)*dilation when None, else passed as it is)."""
    layers = []
    for i, out_channels in enumerate(num_channels):
        dilation = 2**i
        in_channels = num_inputs if i == 0 else num_channels[i - 1]
        layers.append(block(in_channels, out_channels, kernel_size, stride=1, dilation=dilation,
                            padding=(kernel_size - 1) * dilation if padding is None else padding, dropout=dropout,
                            **kwargs))
    return nn.Sequential(*layers)


class ReferenceTemporalBlock(TemporalBlockBase):
    """The authors' TemporalBlock, line for line (padding > 0 as in every TCN level).

    `weight_norm_api` picks the weight-norm API and so the state_dict keys: "legacy" (the authors'
    code: `weight_g`/`weight_v`) or "parametrizations" (`parametrizations.weight.original0/1`).
    """

    def __init__(self, n_inputs, n_outputs, kernel_size, stride, dilation, padding, dropout=0.2,
                 weight_norm_api="legacy"):
        super().__init__()
        self.conv1 = _weight_norm(nn.Conv1d(n_inputs, n_outputs, kernel_size, stride=stride,
                                            padding=padding, dilation=dilation), weight_norm_api)
        self.chomp1 = Chomp1d(padding)
        self.relu1 = nn.ReLU()
        self.dropout1 = nn.Dropout(dropout)
        self.conv2 = _weight_norm(nn.Conv1d(n_outputs, n_outputs, kernel_size, stride=stride,
                                            padding=padding, dilation=dilation), weight_norm_api)
        self.chomp2 = Chomp1d(padding)
        self.relu2 = nn.ReLU()
        self.dropout2 = nn.Dropout(dropout)
        self.net = nn.Sequential(self.conv1, self.chomp1, self.relu1, self.dropout1,
                                 self.conv2, self.chomp2, self.relu2, self.dropout2)
        self.downsample = nn.Conv1d(n_inputs, n_outputs, 1) if n_inputs != n_outputs else None
        self.relu = nn.ReLU()
        self.init_weights()


class ReferenceTemporalConvNet(nn.Module):
    """The authors' TemporalConvNet: level i has dilation 2**i."""

    def __init__(self, num_inputs, num_channels, kernel_size=2, dropout=0.2, weight_norm_api="legacy"):
        super().__init__()
        self.network = temporal_levels(ReferenceTemporalBlock, num_inputs, num_channels, kernel_size, dropout,
                                       weight_norm_api=weight_norm_api)

    def forward(self, x):
        return self.network(x)

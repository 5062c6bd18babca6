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

ACTIVATIONS = {None: 0, "relu": 1}


def causal_conv1d_reference(x, weight, bias=None, dilation=1, activation=None):
    """y = act(conv1d(left-pad(x, (K-1)*dilation), weight, bias, dilation)); x: (B, C_in, L)."""
    pad = (weight.shape[-1] - 1) * dilation
    y = F.conv1d(F.pad(x, (pad, 0)), weight, bias, dilation=dilation)
    return torch.relu(y) if activation == "relu" else y


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


def temporal_levels(block, num_inputs, num_channels, kernel_size, dropout, **kwargs):
    """The reference TemporalConvNet's stack: level i is a block with dilation 2**i."""
    layers = []
    for i, out_channels in enumerate(num_channels):
        dilation = 2**i
        in_channels = num_inputs if i == 0 else num_channels[i - 1]
        layers.append(block(in_channels, out_channels, kernel_size, stride=1, dilation=dilation,
                            padding=(kernel_size - 1) * dilation, dropout=dropout, **kwargs))
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

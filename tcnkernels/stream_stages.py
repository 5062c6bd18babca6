"""A model as the streamer sees it: a flat list of stages (a causal conv, a residual block, a
pointwise layer) and the layout of its inputs, recognised by structure like `convert` does.

  ours            CausalConv1d, TemporalBlock, TemporalConvNet, nn.Sequential of them
  the authors'    TemporalBlock and TemporalConvNet, and their copies
  pytorch-tcn     TCN (NCL or NLC): its TemporalBlocks with any option but embeddings (norms, gate,
                  activations, skip connections), its output projection and activation
  Darts           _TCNModule: its _ResidualBlocks (no ReLU after the residual, none after the last
                  block's conv2), [N, T, C] in, [N, T, target_size, nr_params] out
  NeuralForecast  TemporalConvolutionEncoder: CausalConv1d layers, any pointwise activation, [N, T, C]
  WaveNet         causal WaveNetBlocks (ours, Parallel WaveGAN's) in an nn.ModuleList or nn.Sequential:
                  each step takes the conditioning chunk c and returns (x, the sum of the skips)
Each stage steps on channel-first (B, C, n) chunks; `Layout` says how the model's own inputs and
outputs map onto them.
"""
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .nn import TemporalBlock, TemporalConv1d, TemporalConvNet
from .ops.activations import RELU, activation_of
from .wavenet import WaveNetBlock
from .zoo import (
    chomped_conv_plan,
    conv_weight,
    darts_block_plan,
    is_pytorch_tcn_block,
    is_reference_block,
    nf_encoder_plan,
    self_padding,
    wavenet_block_plan,
    weight_norm_parameters,
)

# Layers that act on each time step alone: they stream as they are.
POINTWISE = (nn.Identity, nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.Dropout, nn.PReLU,
             nn.Softplus, nn.SELU, nn.Mish, nn.Softsign, nn.Hardshrink, nn.Softshrink, nn.Threshold, nn.RReLU,
             nn.CELU, nn.LogSigmoid, nn.Hardtanh, nn.Hardswish)
CPP_POINTWISE = (nn.Identity, nn.ReLU, nn.Dropout)  # those the C++ and Triton steps run (dropout only in eval)

# Stage kinds, as the C++ and Triton steps encode them (csrc/stream_step.cpp)
CONV, BLOCK, RELU_STAGE, LINEAR_BLOCK = 0, 1, 2, 3


class Layout(NamedTuple):
    """How a model's forward takes and gives its tensors: channel-last ([N, T, C]) or not, and the
    trailing shape its output is viewed as (Darts: (target_size, nr_params)), or None."""
    channels_last: bool = False
    out_shape: tuple = None


class _Conv:
    """One causal conv: its module, taps, dilation, folded weight and the parameters it came from.
    `padded`: the conv's owner pads its input causally in its own forward (Darts' F.pad)."""

    def __init__(self, conv, activation=None, padded=False):
        if conv.stride != (1,) or conv.groups != 1 or conv.padding_mode != "zeros":
            raise ValueError(f"cannot stream {conv}: only stride 1, groups 1, zero padding are causal convs here")
        self.module, self.K, self.dilation = conv, conv.kernel_size[0], conv.dilation[0]
        self.history = (self.K - 1) * self.dilation  # input steps the next output still reads
        if isinstance(conv, TemporalConv1d):
            if conv.pad_right:
                raise ValueError(f"cannot stream {conv}: its padding {conv.temporal_padding!r} reads "
                                 f"{conv.pad_right} future steps; the streamer runs causal convs (padding='causal')")
        elif self_padding(conv) is not None:  # pads its own input (pytorch-tcn's TemporalConv1d)
            if self_padding(conv) != (self.history, 0):
                raise ValueError(f"cannot stream {conv}: it pads {self_padding(conv)} (left, right), reading future "
                                 "steps; the streamer runs causal convs")
        elif conv.padding != ((0,) if padded else (self.history,)):
            raise ValueError(f"cannot stream {conv}: a plain Conv1d is causal only with padding (K-1)*dilation "
                             f"= {self.history} and a chomp, got padding {conv.padding}")
        if activation is None:
            act = activation_of(getattr(conv, "activation", None))[0]
            if act not in (None, RELU):
                raise ValueError(f"cannot stream {conv}: the streamer's steps fuse ReLU or no activation, not "
                                 f"{act.name}")
            activation = None if act is None else "relu"
        self.activation = None if activation == "none" else activation
        self.c_in, self.c_out = conv.in_channels, conv.out_channels
        self.fold()

    def fold(self):
        """The effective weight (weight norm applied, legacy or parametrized) and bias, detached."""
        conv = self.module
        norm = weight_norm_parameters(conv)
        with torch.no_grad():
            weight = conv.weight if norm is None else torch._weight_norm(norm[1], norm[0], 0)
            self.weight = weight.detach().clone()
            self.bias = None if conv.bias is None else conv.bias.detach().contiguous()
            self.taps_major = self.weight.permute(0, 2, 1).contiguous()  # (C_out, K, C_in): the C++ step's
        self.sources = _owned_parameters(conv)

    def step(self, x, cache):
        """Outputs for the new steps x (B, C_in, n); `cache` (B, C_in, history) moves forward in place."""
        if self.history:
            window = torch.cat([cache, x], dim=2)
            cache.copy_(window[:, :, window.shape[2] - self.history:])
        else:
            window = x
        y = F.conv1d(window, self.weight, self.bias, dilation=self.dilation)
        return torch.relu(y) if self.activation == "relu" else y


def _owned_parameters(module):
    """(owner module, name, parameter) of every parameter under `module`."""
    return [(owner, name, p) for owner in module.modules() for name, p in owner._parameters.items() if p is not None]


class _Block:
    """A residual block: final(D(act2(conv2(D(relu(conv1(x)))))) + (x or downsample(x))), `final` a
    ReLU (ours, the authors', pytorch-tcn's) or nothing (Darts')."""

    def __init__(self, module, conv1, conv2, downsample, dropouts, final_relu=True):
        self.module, self.conv1, self.conv2, self.downsample = module, conv1, conv2, downsample
        if downsample is not None and downsample.K != 1:
            raise ValueError(f"cannot stream {type(module).__name__}: its downsample is not a 1x1 conv")
        self.kind = BLOCK if final_relu else LINEAR_BLOCK
        self.convs = [c for c in (conv1, conv2, downsample) if c is not None]
        self.c_in, self.c_out = conv1.c_in, conv2.c_out
        self._dropouts = dropouts

    @classmethod
    def temporal(cls, block):
        """Ours, the authors' or pytorch-tcn's TemporalBlock: ReLU after each conv and the residual."""
        if isinstance(block, TemporalBlock) and (
                getattr(block, "block_activation", RELU) != RELU or not getattr(block, "final_activation", True)
                or not getattr(block, "conv2_activation", True)):
            raise ValueError(f"cannot stream {type(block).__name__}: the streamer's steps run the reference block "
                             "(ReLU after each conv and after the residual)")
        activation = None if isinstance(block, TemporalBlock) else "relu"  # ours fuses the ReLUs into its convs
        downsample = None if block.downsample is None else _Conv(block.downsample)
        return cls(block, _Conv(block.conv1, activation), _Conv(block.conv2, activation), downsample,
                   [block.dropout1, block.dropout2])

    @classmethod
    def darts(cls, block, plan):
        """Darts' _ResidualBlock (its convs padded by its forward's F.pad, conv3 the downsample)."""
        _, last, downsample = plan
        conv1 = _Conv(block.conv1, "relu", padded=True)
        conv2 = _Conv(block.conv2, "none" if last else "relu", padded=True)
        return cls(block, conv1, conv2, _Conv(block.conv3, "none") if downsample else None,
                   [block.dropout1, block.dropout2], final_relu=False)

    def dropouts(self):
        return self._dropouts

    def step(self, x, caches):
        out = self.conv2.step(self.conv1.step(x, caches[0]), caches[1])
        res = x if self.downsample is None else self.downsample.step(x, None)
        return torch.relu(out + res) if self.kind == BLOCK else out + res


class _Pointwise:
    def __init__(self, module):
        self.module, self.convs, self.c_in, self.c_out = module, [], None, None

    def dropouts(self):
        return [self.module] if isinstance(self.module, (nn.Dropout, nn.RReLU)) else []

    def step(self, x, caches):
        return self.module(x)


class _ConvStage:
    def __init__(self, conv, activation=None):
        self.conv = _Conv(conv, activation)
        self.convs, self.c_in, self.c_out = [self.conv], self.conv.c_in, self.conv.c_out

    def dropouts(self):
        return []

    def step(self, x, caches):
        return self.conv.step(x, caches[0])


class _WaveNetStage:
    """A causal WaveNet block (ours or Parallel WaveGAN's): its dilated conv steps on a cache, the
    conditioning chunk c goes through its 1x1, and the step returns (x, skip)."""
    gated = True
    torch_only = "WaveNet blocks (gated, conditioned)"

    def __init__(self, block):
        if not is_wavenet_block(block) or not (block.causal if isinstance(block, WaveNetBlock)
                                                else block.use_causal_conv):
            raise ValueError(f"cannot stream {type(block).__name__}: a non-causal WaveNet block reads future steps")
        self.module = block
        self.conv = _Conv(block.conv, "none", padded=isinstance(block, WaveNetBlock))
        self.convs, self.c_in = [self.conv], block.conv.in_channels
        self.c_out, self.aux_channels = self.c_in, 0 if block.conv1x1_aux is None else block.conv1x1_aux.in_channels

    @property
    def training(self):  # the block's own dropout (a float p, applied in training mode): see dropouts()
        return self.module.training

    @property
    def p(self):
        return self.module.dropout

    def dropouts(self):
        return [self]

    def step(self, x, caches, c=None):
        block = self.module
        pre = self.conv.step(x, caches[0])
        if c is not None:
            pre = pre + F.conv1d(c, conv_weight(block.conv1x1_aux))
        a, b = pre.chunk(2, dim=1)
        z = torch.tanh(a) * torch.sigmoid(b)
        skip = F.conv1d(z, conv_weight(block.conv1x1_skip), block.conv1x1_skip.bias)
        return (x + F.conv1d(z, conv_weight(block.conv1x1_out), block.conv1x1_out.bias)) * math.sqrt(0.5), skip


def is_wavenet_block(module):
    return isinstance(module, WaveNetBlock) or wavenet_block_plan(module) is not None


def _pointwise(module):
    if isinstance(module, nn.GLU) or not isinstance(module, POINTWISE):
        raise ValueError(f"cannot stream {module}: not a pointwise layer (GLU halves an axis: it is not one)")
    return _Pointwise(module)


class _PytorchTcnBlock:
    """pytorch-tcn's TemporalBlock with any of its options but embeddings: its norms (batch norm in
    eval mode, layer norm over the channels of each step), gate and activations, called as the
    library calls them; the step returns (x, the block's skip output)."""

    def __init__(self, block):
        if getattr(block, "embedding_shapes", None) is not None:
            raise ValueError(f"cannot stream {type(block).__name__}: its embeddings are arguments of each call")
        self.module = block
        self.conv1, self.conv2 = _Conv(block.conv1, "none"), _Conv(block.conv2, "none")
        self.downsample = None if block.downsample is None else _Conv(block.downsample, "none")
        self.convs = [c for c in (self.conv1, self.conv2, self.downsample) if c is not None]

    def dropouts(self):
        norms = [n for n in (self.module.norm1, self.module.norm2) if isinstance(n, nn.modules.batchnorm._BatchNorm)]
        return [self.module.dropout1, self.module.dropout2, *norms]

    def step(self, x, caches):
        b = self.module
        out = b.dropout1(b.activation1(b.apply_norm(b.norm1, self.conv1.step(x, caches[0]))))
        out = b.dropout2(b.activation2(b.apply_norm(b.norm2, self.conv2.step(out, caches[1]))))
        res = x if self.downsample is None else self.downsample.step(x, None)
        return b.activation_final(out + res), out


class _PytorchTcnBlocks:
    """pytorch-tcn's blocks in general, with its skip connections (each block's skip output through
    its 1x1 downsample, summed with the last block's output, then the skip activation)."""
    torch_only = "pytorch-tcn's skip connections, norms, gates and activations other than ReLU"

    def __init__(self, model):
        self.module, self.blocks = model, [_PytorchTcnBlock(b) for b in model.network]
        self.skips = model.use_skip_connections
        self.downsamples = [None if d is None else _Conv(d, "none")
                            for d in (model.downsample_skip_connection if self.skips else [None] * len(self.blocks))]
        self.convs = [c for b in self.blocks for c in b.convs] + [d for d in self.downsamples if d is not None]
        self.c_in, self.c_out = self.blocks[0].conv1.c_in, self.blocks[-1].conv2.c_out

    def dropouts(self):
        return [d for b in self.blocks for d in b.dropouts()]

    def step(self, x, caches):
        skips, at = [], 0
        for i, block in enumerate(self.blocks):
            x, skip = block.step(x, caches[at:at + len(block.convs)])
            at += len(block.convs)
            if self.downsamples[i] is not None:
                skip = self.downsamples[i].step(skip, None)
            if i < len(self.blocks) - 1:
                skips.append(skip)
        if not self.skips:
            return x
        return self.module.activation_skip_out(torch.stack([*skips, x]).sum(dim=0))


def _pytorch_tcn_network(model):
    """pytorch-tcn's TCN: its blocks (ReLU ones without norms or skip connections as the C++ and
    Triton steps' blocks, any other on the PyTorch step), then its output projection and activation:
    (stages, layout), or None when `model` is not a pytorch-tcn TCN."""
    network = getattr(model, "network", None)
    if not isinstance(network, nn.ModuleList) or not hasattr(model, "use_skip_connections"):
        return None
    if model.use_skip_connections or not all(is_pytorch_tcn_block(b) for b in network):
        stages = [_PytorchTcnBlocks(model)]
    else:
        stages = [_Block.temporal(block) for block in network]
    if getattr(model, "projection_out", None) is not None:
        stages.append(_ConvStage(model.projection_out, "none"))
    if getattr(model, "activation_out", None) is not None:
        stages.append(_pointwise(model.activation_out))
    return stages, Layout(channels_last=model.input_shape == "NLC")


def _darts_module(model):
    """Darts' _TCNModule: its forward runs `res_blocks_list` on [N, T, C] transposed, and views the
    result as (N, T, target_size, nr_params): (stages, layout), or None."""
    blocks = getattr(model, "res_blocks_list", None)
    if not isinstance(blocks, list) or not blocks or not all(hasattr(model, n) for n in ("target_size", "nr_params")):
        return None
    plans = [darts_block_plan(block) for block in blocks]
    if None in plans:
        raise ValueError(f"cannot stream this {type(model).__name__}: a block of its res_blocks_list is not the "
                         "_ResidualBlock structure tcnkernels knows")
    return [_Block.darts(b, p) for b, p in zip(blocks, plans)], Layout(True, (model.target_size, model.nr_params))


def _nf_causal_conv(layer):
    """NeuralForecast's CausalConv1d: its conv (ReLU fused) and its activation as a pointwise stage."""
    if isinstance(layer.activation, nn.ReLU):
        return [_ConvStage(layer.conv, "relu")]
    return [_ConvStage(layer.conv, "none"), _pointwise(layer.activation)]


def model_stages(model):
    """(stages, Layout) of `model`, or a ValueError naming what cannot stream."""
    for recognise in (_pytorch_tcn_network, _darts_module):
        found = recognise(model)
        if found is not None:
            return found
    if nf_encoder_plan(model) is not None:
        return [stage for layer in model.tcn for stage in _nf_causal_conv(layer)], Layout(channels_last=True)
    if hasattr(model, "hist_encoder") and nf_encoder_plan(model.hist_encoder) is not None:
        raise ValueError(f"cannot stream NeuralForecast's {type(model).__name__} as a whole (its decoder reads "
                         "windows): stream its hist_encoder")
    return _stages(model), Layout()


def _stages(model):
    """A channel-first model as a flat list of stages, or a ValueError naming what cannot stream."""
    if is_wavenet_block(model):
        return [_WaveNetStage(model)]
    if isinstance(model, nn.ModuleList) and len(model) and all(is_wavenet_block(b) for b in model):
        return [_WaveNetStage(block) for block in model]  # a WaveNet stack: its forward is the caller's loop
    if isinstance(model, TemporalConv1d):
        return [_ConvStage(model)]
    if isinstance(model, TemporalBlock) or is_reference_block(model) or is_pytorch_tcn_block(model):
        return [_Block.temporal(model)]
    if isinstance(model, nn.Sequential):
        return [stage for child in model for stage in _stages(child)]
    if chomped_conv_plan(model) is not None:
        return _nf_causal_conv(model)
    if isinstance(model, POINTWISE):
        return [_pointwise(model)]
    children = dict(model.named_children())
    if isinstance(model, TemporalConvNet) or (list(children) == ["network"]
                                              and isinstance(children["network"], nn.Sequential)):
        return _stages(model.network)  # the authors' TemporalConvNet: forward(x) = self.network(x)
    if isinstance(model, nn.Conv1d):
        raise ValueError(f"cannot stream {model}: a bare nn.Conv1d is not causal (use tcnkernels.CausalConv1d)")
    raise ValueError(f"cannot stream a {type(model).__name__}: the streamer knows CausalConv1d, TemporalBlock, "
                     "TemporalConvNet (ours, the authors' or pytorch-tcn's), Darts' _TCNModule, NeuralForecast's "
                     "TemporalConvolutionEncoder, WaveNetBlocks (ours or Parallel WaveGAN's, in an nn.ModuleList "
                     "or nn.Sequential), nn.Sequential of them and pointwise activations")

"""The TCN libraries' blocks, recognised by structure (duck typing, never by class name), and the
fused forwards that run them on tcnkernels' kernels.

Each structure is a `plan` function, returning what the fused forward needs (a plain tuple, so that
nothing of tcnkernels ends up inside a library's pickles) or None when a module is not of that
structure, and a `forward(module, x, plan)` computing the module's own output with its own
Parameters and child modules (dropout, norms and activations the kernels do not have stay modules,
called where the library calls them). `convert` installs them on instances, the integrations on the
libraries' classes.

  the authors' TemporalBlock      conv1, chomp1, dropout1, conv2, net, downsample (swapped, not here)
  pytorch-tcn TemporalBlock       conv1, norm1, activation1, dropout1, conv2, ..., activation_final
                                  (no norm, or batch norm: folded into the conv in eval mode)
  pytorch-tcn TemporalConv1d      a Conv1d with a zero `padder` that keeps the length
  a plain 1x1 Conv1d              downsamples, skip and output projections
  Darts _ResidualBlock            F.pad + conv1, ReLU, dropout1, F.pad + conv2, ReLU (not in the last
                                  block), dropout2, + the input or conv3 (a 1x1 downsample)
  NeuralForecast CausalConv1d     conv (padded both sides), chomp, activation, in `causalconv`
  NeuralForecast encoder          CausalConv1d layers in `tcn`, on [N, T, C] inputs
  Parallel WaveGAN residual block conv (dilated), conv1x1_aux, gate, conv1x1_skip, conv1x1_out
"""
from typing import Callable, NamedTuple

import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.weight_norm import WeightNorm  # (the module: torch.nn.utils.weight_norm is the function)

from .functional import conv1d
from .nn import TemporalBlock
from .ops.activations import activation_of
from .wavenet import wavenet_block


def is_reference_block(module):
    """Duck-typed: the authors' TemporalBlock and its copies, whatever the class is called."""
    return (not isinstance(module, TemporalBlock)
            and isinstance(getattr(module, "conv1", None), nn.Conv1d)
            and isinstance(getattr(module, "conv2", None), nn.Conv1d)
            and isinstance(getattr(module, "net", None), nn.Sequential)
            and isinstance(getattr(module, "dropout1", None), nn.Dropout)
            and hasattr(module, "chomp1") and hasattr(module, "downsample"))


def weight_norm_parameters(conv):
    """(g, v): the Parameters of a weight-normalised conv (legacy or parametrizations API), or None."""
    if isinstance(getattr(conv, "weight_g", None), nn.Parameter) and isinstance(getattr(conv, "weight_v", None),
                                                                                nn.Parameter):
        return conv.weight_g, conv.weight_v
    if parametrize.is_parametrized(conv, "weight"):
        originals = conv.parametrizations.weight
        if hasattr(originals, "original0") and hasattr(originals, "original1"):
            return originals.original0, originals.original1
    return None


def conv_weight(conv):
    """conv's effective weight now. The legacy weight norm recomputes `conv.weight` in a pre-hook of
    the module's call; a fused forward that reads the weight without calling the conv computes it."""
    for hook in conv._forward_pre_hooks.values():
        if isinstance(hook, WeightNorm):
            return hook.compute_weight(conv)
    return conv.weight


def fused_conv(conv, x, padding, activation=None):
    """conv's output on x by tcnkernels.conv1d: its own weight (weight norm included), bias,
    dilation and groups, with `padding` (left, right) and a fused activation."""
    return conv1d(x, conv_weight(conv), conv.bias, conv.dilation[0], conv.groups, padding, activation)


def _plain_geometry(conv, padding=(0,)):
    return conv.stride == (1,) and conv.padding == padding and conv.padding_mode == "zeros"


def _conv_class(conv):
    return type(conv).__bases__[0] if parametrize.is_parametrized(conv) else type(conv)


def _keeps_conv1d_forward(conv):
    """An nn.Conv1d whose class keeps nn.Conv1d's forward (a subclass with its own init, such as
    Parallel WaveGAN's, or a parametrized one); one that overrides it computes something else."""
    return (isinstance(conv, nn.Conv1d) and type(conv).forward is nn.Conv1d.forward
            and type(conv)._conv_forward is nn.Conv1d._conv_forward)


def is_pointwise(conv):
    """A plain 1x1 nn.Conv1d (stride 1, no padding; weight norm allowed): a downsample, skip or
    output projection."""
    return _keeps_conv1d_forward(conv) and conv.kernel_size == (1,) and _plain_geometry(conv)


def self_padding(conv):
    """(left, right) of a conv that pads its own input with zeros to keep the length (pytorch-tcn's
    TemporalConv1d: `padder.left_padding` / `right_padding` summing to (K-1)*dilation before an
    unpadded stride-1 conv), or None."""
    padder = getattr(conv, "padder", None)
    pad = getattr(padder, "pad", None)
    if not (isinstance(conv, nn.Conv1d) and isinstance(pad, nn.ConstantPad1d) and pad.value == 0
            and _plain_geometry(conv)):
        return None
    left, right = getattr(padder, "left_padding", None), getattr(padder, "right_padding", None)
    if not isinstance(left, int) or not isinstance(right, int) or tuple(pad.padding) != (left, right) \
            or left + right != (conv.kernel_size[0] - 1) * conv.dilation[0]:
        return None
    return left, right


def is_pytorch_tcn_block(block):
    """pytorch-tcn's TemporalBlock as the reference's: self-padded convs, ReLU after each and after the
    residual, no norm layer, gate or embeddings (duck-typed)."""
    return (all(self_padding(getattr(block, name, None)) is not None for name in ("conv1", "conv2"))
            and all(type(getattr(block, name, None)) is nn.ReLU
                    for name in ("activation1", "activation2", "activation_final"))
            and getattr(block, "norm1", 0) is None and getattr(block, "norm2", 0) is None
            and not getattr(block, "use_gate", True) and getattr(block, "embedding_shapes", 0) is None)


def _batch_norm_of(block, norm):
    """Whether `norm` is a BatchNorm1d that pytorch-tcn applies straight to the conv's output."""
    return isinstance(norm, nn.BatchNorm1d) and getattr(block, "use_norm", None) == "batch_norm"


def pytorch_tcn_block_plan(block):
    """pytorch-tcn's TemporalBlock with no norm layer or a batch norm, its activations ones the
    kernels fuse (the gate's GLU included): (conv1's padding, conv2's padding), or None (its convs
    are then fused alone, its norms and activations kept as modules)."""
    pads = tuple(self_padding(getattr(block, name, None)) for name in ("conv1", "conv2"))
    norms = [getattr(block, n, 0) for n in ("norm1", "norm2")]
    modules = [getattr(block, n, None) for n in ("activation1", "activation2", "activation_final", "dropout1",
                                                 "dropout2")]
    downsample = getattr(block, "downsample", 0)
    if (None in pads or not all(norm is None or _batch_norm_of(block, norm) for norm in norms)
            or not hasattr(block, "apply_embeddings") or not all(isinstance(m, nn.Module) for m in modules)
            or not (downsample is None or is_pointwise(downsample))
            or not (_fusable(block.activation1) and _fusable(block.activation2))):
        return None
    return pads


def _conv_norm_activation(conv, norm, activation, x, padding):
    """activation(norm(conv(x))) with as much as possible in one kernel: a batch norm in eval mode is
    folded into the conv's weight and bias (differentiably: the gradients reach the conv's and the
    norm's parameters), one in training mode (batch statistics, running averages updated) runs as
    its module between the fused conv and the activation module."""
    if norm is None:
        return fused_conv(conv, x, padding, activation)
    if norm.training or norm.running_mean is None:
        return activation(norm(fused_conv(conv, x, padding)))
    scale = torch.rsqrt(norm.running_var + norm.eps)
    shift = -norm.running_mean * scale
    if norm.affine:
        scale, shift = scale * norm.weight, shift * norm.weight + norm.bias
    bias = shift if conv.bias is None else conv.bias * scale + shift
    return conv1d(x, conv_weight(conv) * scale[:, None, None], bias, conv.dilation[0], conv.groups, padding,
                  activation)


def pytorch_tcn_block_forward(block, x, plan):
    """pytorch-tcn's TemporalBlock.forward (no embeddings, not streaming) with each activation fused
    into its conv (and an eval-mode batch norm folded into it); its dropouts, downsample and final
    activation called as the library does. Returns (output, the block's skip output) like the
    library."""
    pad1, pad2 = plan
    out = block.dropout1(_conv_norm_activation(block.conv1, block.norm1, block.activation1, x, pad1))
    out = block.dropout2(_conv_norm_activation(block.conv2, block.norm2, block.activation2, out, pad2))
    res = x if block.downsample is None else block.downsample(x)
    return block.activation_final(out + res), out


def conv_forward(conv, x, padding):
    return fused_conv(conv, x, padding)


def _int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def darts_block_plan(block):
    """Darts' _ResidualBlock: (left padding, whether it is the last block, whether conv3 downsamples),
    or None. Its convs are unpadded, stride 1, groups 1, of dilation dilation_base ** nr_blocks_below;
    it pads both on the left in its forward."""
    conv1, conv2 = getattr(block, "conv1", None), getattr(block, "conv2", None)
    names = ("dilation_base", "nr_blocks_below", "num_layers", "kernel_size")
    if not (all(_int(getattr(block, n, None)) for n in names)
            and all(isinstance(getattr(block, n, None), nn.Dropout) for n in ("dropout1", "dropout2"))
            and all(isinstance(c, nn.Conv1d) and _conv_class(c) is nn.Conv1d and _plain_geometry(c) and c.groups == 1
                    for c in (conv1, conv2))):
        return None
    dilation = block.dilation_base ** block.nr_blocks_below
    if any(c.dilation != (dilation,) or c.kernel_size != (block.kernel_size,) for c in (conv1, conv2)) \
            or conv1.out_channels != conv2.in_channels:
        return None
    downsample = conv1.in_channels != conv2.out_channels
    if downsample and not (is_pointwise(getattr(block, "conv3", None)) and block.conv3.groups == 1):
        return None
    return (block.kernel_size - 1) * dilation, block.nr_blocks_below >= block.num_layers - 1, downsample


def darts_block_forward(block, x, plan):
    """Darts' _ResidualBlock.forward without the two F.pad copies, ReLUs fused into the convs; its
    dropout modules (MonteCarloDropout, active at predict time when Darts asks) called as Darts does."""
    left, last, downsample = plan
    y = block.dropout1(fused_conv(block.conv1, x, (left, 0), "relu"))
    y = block.dropout2(fused_conv(block.conv2, y, (left, 0), None if last else "relu"))
    return y + (fused_conv(block.conv3, x, (0, 0)) if downsample else x)


def _fusable(activation):
    try:
        activation_of(activation)
    except ValueError:
        return False
    return True


def chomped_conv_plan(module):
    """NeuralForecast's CausalConv1d (a Conv1d padded (K-1)*dilation on both sides, a chomp of as many
    steps, an activation, in `causalconv`): (whether its activation is fused), or None."""
    conv, chomp, activation = (getattr(module, n, None) for n in ("conv", "chomp", "activation"))
    sequence = getattr(module, "causalconv", None)
    if not (isinstance(conv, nn.Conv1d) and _conv_class(conv) is nn.Conv1d and isinstance(sequence, nn.Sequential)
            and list(sequence) == [conv, chomp, activation] and isinstance(activation, nn.Module)):
        return None
    history = (conv.kernel_size[0] - 1) * conv.dilation[0]
    if history == 0 or not _plain_geometry(conv, (history,)) or getattr(chomp, "horizon", None) != history:
        return None
    return (_fusable(activation),)


def chomped_conv_forward(module, x, plan):
    """conv + chomp + activation in one kernel (the activation a module after it when the kernels do
    not have it)."""
    (fused,) = plan
    if fused:
        return fused_conv(module.conv, x, "causal", module.activation)
    return module.activation(fused_conv(module.conv, x, "causal"))


def nf_encoder_plan(encoder):
    """NeuralForecast's TemporalConvolutionEncoder: its `tcn` a Sequential of CausalConv1d layers; ()
    or None."""
    layers = getattr(encoder, "tcn", None)
    if not (isinstance(layers, nn.Sequential) and len(layers)
            and all(chomped_conv_plan(layer) is not None for layer in layers)):
        return None
    return ()


def nf_encoder_forward(encoder, x, plan):
    """[N, T, C] in and out with no permute copies: the kernels read the channel-last view as it is and
    write their outputs channel-last."""
    return encoder.tcn(x.transpose(1, 2)).transpose(1, 2)


def _runs_as_conv1d(conv, kernel_size=None):
    """An nn.Conv1d (or a subclass that keeps its forward: Parallel WaveGAN's, with its own init),
    stride 1, groups 1, zero padding mode."""
    return (_keeps_conv1d_forward(conv) and conv.stride == (1,) and conv.groups == 1 and conv.padding_mode == "zeros"
            and (kernel_size is None or conv.kernel_size == (kernel_size,)))


def wavenet_block_plan(block):
    """Parallel WaveGAN's WaveNetResidualBlock: (causal,), or None. Its conv is padded
    (K-1)*dilation on both sides and chomped when causal, (K-1)//2*dilation (odd K) otherwise."""
    conv, causal = getattr(block, "conv", None), getattr(block, "use_causal_conv", None)
    heads = [getattr(block, n, None) for n in ("conv1x1_out", "conv1x1_skip")]
    aux = getattr(block, "conv1x1_aux", 0)
    if not (isinstance(causal, bool) and isinstance(getattr(block, "dropout", None), (int, float))
            and _runs_as_conv1d(conv) and all(_runs_as_conv1d(h, 1) and h.padding == (0,) for h in heads)
            and (aux is None or (_runs_as_conv1d(aux, 1) and aux.padding == (0,) and aux.bias is None))):
        return None
    K, dilation = conv.kernel_size[0], conv.dilation[0]
    if conv.padding != (((K - 1) if causal else (K - 1) // 2) * dilation,) or (not causal and K % 2 == 0):
        return None
    gate = conv.out_channels // 2
    biases = {conv.bias is None, heads[0].bias is None, heads[1].bias is None}
    if conv.out_channels % 2 or any(h.in_channels != gate for h in heads) or heads[0].out_channels != conv.in_channels \
            or (aux is not None and aux.out_channels != conv.out_channels) or len(biases) > 1:
        return None
    return (causal,)


def wavenet_block_forward(block, x, plan, c=None):
    """The block's (x, skip) on tcnkernels' kernels (tcnkernels.wavenet: conditioning, dilated conv
    and gate in one fused conv, the skip and residual 1x1s in one), its own Parameters and dropout."""
    (causal,) = plan
    if c is not None and block.conv1x1_aux is None:
        raise ValueError("c was given but the block has no conditioning (conv1x1_aux is None)")
    return wavenet_block(x, c, conv_weight(block.conv), block.conv.bias,
                         None if c is None else conv_weight(block.conv1x1_aux), conv_weight(block.conv1x1_skip),
                         block.conv1x1_skip.bias, conv_weight(block.conv1x1_out), block.conv1x1_out.bias,
                         block.conv.dilation[0], causal, block.dropout, block.training)


class Structure(NamedTuple):
    """A block structure fused in place: what it is, its plan function and its fused forward."""
    name: str
    plan: Callable
    forward: Callable
    calls_children: bool = False  # its forward calls child modules that convert fuses too (else: their weights)
    x_dims: tuple = (3,)  # the inputs the fused forward takes; others run the module's own forward
    passes_args: bool = False  # its forward takes the module's other arguments (WaveNet's conditioning c)


DARTS_BLOCK = Structure("Darts' _ResidualBlock (conv1, conv2, conv3, dropout1, dropout2, dilation_base)",
                        darts_block_plan, darts_block_forward)
NF_ENCODER = Structure("NeuralForecast's TemporalConvolutionEncoder (CausalConv1d layers in tcn)", nf_encoder_plan,
                       nf_encoder_forward, calls_children=True)
NF_CAUSAL_CONV = Structure("NeuralForecast's CausalConv1d (conv, chomp, activation in causalconv)",
                           chomped_conv_plan, chomped_conv_forward)
PYTORCH_TCN_BLOCK = Structure("pytorch-tcn's TemporalBlock without norm or with batch norm (conv1, conv2 self-padded, "
                              "activation1, activation2, activation_final)", pytorch_tcn_block_plan,
                              pytorch_tcn_block_forward, calls_children=True)
SELF_PADDED_CONV = Structure("a Conv1d that pads itself to keep the length (pytorch-tcn's TemporalConv1d: a zero "
                             "padder)", self_padding, conv_forward, x_dims=(2, 3))
POINTWISE_CONV = Structure("a plain 1x1 Conv1d", lambda conv: (0, 0) if is_pointwise(conv) else None, conv_forward,
                           x_dims=(2, 3))
WAVENET_BLOCK = Structure("Parallel WaveGAN's WaveNetResidualBlock (conv, conv1x1_aux, conv1x1_out, conv1x1_skip)",
                          wavenet_block_plan, wavenet_block_forward, passes_args=True)
# In the order convert tries them; the first whose plan is not None is the module's.
IN_PLACE = (DARTS_BLOCK, NF_ENCODER, NF_CAUSAL_CONV, PYTORCH_TCN_BLOCK, WAVENET_BLOCK, SELF_PADDED_CONV,
            POINTWISE_CONV)


def in_place_structure(module):
    """(Structure, plan) of the first structure `module` has, or None."""
    for structure in IN_PLACE:
        plan = structure.plan(module)
        if plan is not None:
            return structure, plan
    return None

"""`convert`: swap the TCN blocks of any model for fused ones that hold the model's own Parameters.

Blocks are recognised by structure (duck typing), not by class name:
- the authors' TemporalBlock and its copies: swapped for a fused `TemporalBlock`;
- a conv that pads itself to keep the length (pytorch-tcn's `TemporalConv1d`: a `padder` of zeros,
  causal or split p//2 | p - p//2) and a plain 1x1 `nn.Conv1d` (downsamples, skip and output
  projections): fused in place, the module itself kept, so the library's forward, its activations,
  norms and dropout modules around the conv, its state_dict keys (the padder's buffer included)
  and its streaming mode (`inference=True`, which runs the library's own code) stay as they were.
convert says what it did: an INFO log of what it swapped, by type; a UserWarning when it swapped
nothing; with strict=True, a ValueError when a Conv1d of the model stays unconverted.
"""
import collections
import logging
import types
import warnings

import torch
from torch import nn
from torch.nn.utils import parametrize

from .functional import conv1d
from .nn import TemporalBlock, TemporalConv1d, TemporalConvNet
from .short_conv import ShortConvolution

log = logging.getLogger("tcnkernels")

KNOWN_STRUCTURES = ("the authors' TemporalBlock and its copies (conv1, chomp1, dropout1, conv2, net, downsample)",
                    "a Conv1d that pads itself to keep the length (pytorch-tcn's TemporalConv1d: a zero padder)",
                    "a plain 1x1 Conv1d")
FUSED = (TemporalBlock, TemporalConv1d, TemporalConvNet, ShortConvolution)  # what runs tcnkernels' kernels


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


def _convert_block(ref):
    """A fused block holding `ref`'s own Parameter objects (g, v, biases, downsample), so that an
    optimizer built before convert() goes on updating the network."""
    conv1 = ref.conv1
    norms = [weight_norm_parameters(c) for c in (ref.conv1, ref.conv2)]
    if (norms[0] is None) != (norms[1] is None):
        raise ValueError("convert: conv1 and conv2 of a reference block must both use weight norm, or neither")
    # Building the block draws its init from the RNG; fork it so convert() leaves the user's
    # random stream (and so their later dropout masks) untouched. Its fresh parameters are replaced.
    with torch.random.fork_rng(devices=[]):
        block = TemporalBlock(conv1.in_channels, conv1.out_channels, conv1.kernel_size[0], conv1.stride[0],
                              conv1.dilation[0], conv1.padding[0], dropout=ref.dropout1.p,
                              weight_norm=norms[0] is not None)
    for ours, theirs, norm in ((block.conv1, ref.conv1, norms[0]), (block.conv2, ref.conv2, norms[1])):
        if norm is not None:
            ours.weight_g, ours.weight_v = norm
        else:
            ours.weight = theirs.weight
        ours.bias = theirs.bias
    if (ref.downsample is None) != (block.downsample is None):
        raise ValueError("convert: the reference block's downsample does not match its widths")
    if ref.downsample is not None:
        block.downsample.weight, block.downsample.bias = ref.downsample.weight, ref.downsample.bias
    return block.train(ref.training)


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


def _plain_geometry(conv):
    return conv.stride == (1,) and conv.padding == (0,) and conv.padding_mode == "zeros"


def is_pointwise(conv):
    """A plain 1x1 nn.Conv1d (stride 1, no padding; weight norm allowed): a downsample, skip or
    output projection. Subclasses of nn.Conv1d are left alone (their forward may differ)."""
    cls = type(conv).__bases__[0] if parametrize.is_parametrized(conv) else type(conv)
    return cls is nn.Conv1d and conv.kernel_size == (1,) and _plain_geometry(conv)


def fused_conv(conv, x, padding):
    """conv's output on x by tcnkernels.conv1d: its own weight (weight norm included), bias,
    dilation and groups, with `padding` (left, right)."""
    return conv1d(x, conv.weight, conv.bias, conv.dilation[0], conv.groups, padding)


def _fused_conv_forward(self, x, *args, **kwargs):
    """The forward of a conv fused in place: fused_conv with the padding found at conversion; any
    other call (pytorch-tcn's streaming `inference=True`, a BufferIO) runs the module's own forward."""
    if args or any(v not in (None, False) for v in kwargs.values()) or x.dim() not in (2, 3):
        return type(self).forward(self, x, *args, **kwargs)
    return fused_conv(self, x, self._tcnkernels_padding)


def _fuse_in_place(conv, padding):
    conv._tcnkernels_padding = padding
    conv.forward = types.MethodType(_fused_conv_forward, conv)


def is_fused_in_place(module):
    return getattr(module, "_tcnkernels_padding", None) is not None


def convert(model, strict: bool = False):
    """Swap every reference TemporalBlock inside `model` for a fused `TemporalBlock` that holds the
    same Parameter objects (an optimizer built before still updates them), and fuse in place every
    conv that pads itself to keep the length (pytorch-tcn's) and every plain 1x1 Conv1d.

    Works in place on any model (a TemporalConvNet, or one holding blocks anywhere) and returns it;
    if `model` itself is a reference block, returns its replacement. Logs what it swapped (logger
    "tcnkernels", INFO); warns (UserWarning) when it swapped nothing; with `strict=True`, raises a
    ValueError naming every nn.Conv1d of the model that is left unconverted.

    Example:
        >>> model = tcnkernels.convert(model)  # same state_dict, same outputs, fused kernels
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"convert expects an nn.Module, got {type(model).__name__}")
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be a bool, got {type(strict).__name__}")
    swapped = collections.Counter()
    if is_reference_block(model):
        swapped[f"{type(model).__name__} -> TemporalBlock"] += 1
        result = _convert_block(model)
    elif not is_fused_in_place(model) and (self_padding(model) or is_pointwise(model)):
        swapped[f"{type(model).__name__} -> fused in place"] += 1
        _fuse_in_place(model, self_padding(model) or (0, 0))
        result = model
    else:
        _convert_children(model, swapped)
        result = model
    if swapped:
        log.info("convert: swapped %s", ", ".join(f"{n} {name}" for name, n in sorted(swapped.items())))
    else:
        warnings.warn(f"convert swapped nothing in {type(model).__name__}: it knows {'; '.join(KNOWN_STRUCTURES)}",
                      UserWarning, stacklevel=2)
    if strict:
        left = unconverted_convs(result)
        if left:
            raise ValueError(f"convert(strict=True): {len(left)} Conv1d left unconverted in {type(model).__name__}: "
                             + ", ".join(f"{name or '<model>'} ({kind})" for name, kind in left))
    return result


def _convert_children(module, swapped):
    for name, child in module.named_children():
        if isinstance(child, FUSED) or is_fused_in_place(child):
            continue
        if is_reference_block(child):
            swapped[f"{type(child).__name__} -> TemporalBlock"] += 1
            setattr(module, name, _convert_block(child))
            continue
        padding = self_padding(child) or ((0, 0) if is_pointwise(child) else None)
        if padding is not None:
            swapped[f"{type(child).__name__} -> fused in place"] += 1
            _fuse_in_place(child, padding)
        _convert_children(child, swapped)


def unconverted_convs(model):
    """[(qualified name, class name)] of the nn.Conv1d modules of `model` outside tcnkernels' fused modules."""
    left = []

    def walk(module, prefix):
        if isinstance(module, FUSED):
            return
        if isinstance(module, nn.Conv1d) and not is_fused_in_place(module):
            left.append((prefix, type(module).__name__))
        for name, child in module.named_children():
            walk(child, f"{prefix}.{name}" if prefix else name)

    walk(model, "")
    return left

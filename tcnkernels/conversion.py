"""`convert`: swap the TCN blocks of any model for fused ones that hold the model's own Parameters.

Blocks are recognised by structure (duck typing), not by class name: the authors' TemporalBlock and
its copies. convert says what it did: an INFO log of what it swapped, by type; a UserWarning when it
swapped nothing; with strict=True, a ValueError when a Conv1d of the model stays unconverted.
"""
import collections
import logging
import warnings

import torch
from torch import nn
from torch.nn.utils import parametrize

from .nn import TemporalBlock, TemporalConv1d, TemporalConvNet
from .short_conv import ShortConvolution

log = logging.getLogger("tcnkernels")

KNOWN_STRUCTURES = ("the authors' TemporalBlock and its copies (conv1, chomp1, dropout1, conv2, net, downsample)",)
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


def convert(model, strict: bool = False):
    """Swap every reference TemporalBlock inside `model` for a fused `TemporalBlock` that holds the
    same Parameter objects (an optimizer built before still updates them).

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
        swapped[type(model).__name__] += 1
        result = _convert_block(model)
    else:
        _convert_children(model, swapped)
        result = model
    if swapped:
        log.info("convert: swapped %s", ", ".join(f"{n} {name} -> TemporalBlock"
                                                  for name, n in sorted(swapped.items())))
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
        if is_reference_block(child):
            swapped[type(child).__name__] += 1
            setattr(module, name, _convert_block(child))
        else:
            _convert_children(child, swapped)


def unconverted_convs(model):
    """[(qualified name, class name)] of the nn.Conv1d modules of `model` outside tcnkernels' fused modules."""
    left = []

    def walk(module, prefix):
        if isinstance(module, FUSED):
            return
        if isinstance(module, nn.Conv1d):
            left.append((prefix, type(module).__name__))
        for name, child in module.named_children():
            walk(child, f"{prefix}.{name}" if prefix else name)

    walk(model, "")
    return left

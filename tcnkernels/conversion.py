"""`convert`: swap the TCN blocks of any model for fused ones that hold the model's own Parameters.

Blocks are recognised by structure (duck typing), not by class name:
- the authors' TemporalBlock and its copies: swapped for a fused `TemporalBlock`;
- the libraries' blocks and convs of `zoo.IN_PLACE` (Darts' residual block, NeuralForecast's causal
  conv and encoder, pytorch-tcn's self-padding conv, a plain 1x1 Conv1d): fused in place. The module
  itself is kept, its forward replaced on the instance, so the library's forward around it, its
  activations, norms and dropout modules, its Parameters, its state_dict keys (pytorch-tcn's padder
  buffers, NeuralForecast's conv registered twice) and its other modes (pytorch-tcn's
  `inference=True` streaming) stay as they were, and the library's own lists of modules (Darts'
  `res_blocks_list`) hold the fused modules.
convert says what it did: an INFO log of what it swapped, by type; a UserWarning when it swapped
nothing; with strict=True, a ValueError when a Conv1d of the model stays unconverted.
"""
import collections
import logging
import types
import warnings

import torch
from torch import nn

from .nn import TemporalBlock, TemporalConv1d, TemporalConvNet
from .short_conv import ShortConvolution
from .zoo import IN_PLACE, in_place_structure, is_reference_block, weight_norm_parameters

log = logging.getLogger("tcnkernels")

KNOWN_STRUCTURES = ("the authors' TemporalBlock and its copies (conv1, chomp1, dropout1, conv2, net, downsample)",
                    *(structure.name for structure in IN_PLACE))
FUSED = (TemporalBlock, TemporalConv1d, TemporalConvNet, ShortConvolution)  # what runs tcnkernels' kernels


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


def _fused_forward(self, x, *args, **kwargs):
    """The forward of a module fused in place: its structure's fused forward with the plan found at
    conversion; any other call (pytorch-tcn's streaming `inference=True`, a BufferIO, an input of
    another rank) runs the module's own forward."""
    structure, plan = self._tcnkernels_fused
    if not isinstance(x, torch.Tensor) or x.dim() not in structure.x_dims:
        return type(self).forward(self, x, *args, **kwargs)
    if structure.passes_args:
        return structure.forward(self, x, plan, *args, **kwargs)
    if args or any(v not in (None, False) for v in kwargs.values()):
        return type(self).forward(self, x, *args, **kwargs)
    return structure.forward(self, x, plan)


def _fuse_in_place(module, structure, plan, swapped):
    swapped[f"{type(module).__name__} -> fused in place"] += 1
    module._tcnkernels_fused = structure, plan
    module.forward = types.MethodType(_fused_forward, module)


def is_fused_in_place(module):
    return getattr(module, "_tcnkernels_fused", None) is not None


def _runs_its_children(module):
    """Whether the children of a module are called as modules (convert goes on into them)."""
    return not is_fused_in_place(module) or module._tcnkernels_fused[0].calls_children


def convert(model, strict: bool = False):
    """Swap every reference TemporalBlock inside `model` for a fused `TemporalBlock` that holds the
    same Parameter objects (an optimizer built before still updates them), and fuse in place every
    block and conv of a structure in `zoo.IN_PLACE` (Darts, NeuralForecast, pytorch-tcn, 1x1 convs).

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
    else:
        found = None if is_fused_in_place(model) else in_place_structure(model)
        if found is not None:
            _fuse_in_place(model, *found, swapped)
        if _runs_its_children(model):
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
        found = in_place_structure(child)
        if found is not None:
            _fuse_in_place(child, *found, swapped)
        if _runs_its_children(child):
            _convert_children(child, swapped)


def unconverted_convs(model):
    """[(qualified name, class name)] of the nn.Conv1d modules of `model` outside tcnkernels' fused modules."""
    left = []

    def walk(module, prefix):
        if isinstance(module, FUSED):
            return
        if isinstance(module, nn.Conv1d) and not is_fused_in_place(module):
            left.append((prefix, type(module).__name__))
        if not _runs_its_children(module):  # its fused forward reads its convs' weights
            return
        for name, child in module.named_children():
            walk(child, f"{prefix}.{name}" if prefix else name)

    walk(model, "")
    return left

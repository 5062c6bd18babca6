"""Public functions: input checks in words a user understands, then the backend's implementation.

causal_conv1d   one causal dilated conv with fused bias and ReLU
temporal_block  the TCN residual block (weight norm, dropout, residual, ReLUs)
"""
import functools
from typing import Optional, Tuple

import torch
from torch import Tensor

from ._backend import select_backend
from .ops import triton as triton_kernels
from .ops.reference import causal_conv1d_reference, draw_dropout_seeds, temporal_block_reference
from .ops.specs import ACTIVATIONS, DROPOUT_MODES, BlockSpec, ConvSpec

if triton_kernels.IMPORT_ERROR is None:  # without triton only the torch backend exists
    from .ops.block import BlockInputs, TemporalBlockFunction, block_forward
    from .ops.conv import CausalConv1dFunction, causal_conv1d_op
    from .ops.conv_launch import conv_forward
    from .ops.weight_launch import prepare_weight

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# The specs of the calls seen, so that a repeated call finds its spec (and through it its plans) by a
# C-level cache lookup rather than building a NamedTuple in Python.
_conv_spec = functools.lru_cache(maxsize=4096)(ConvSpec)
_block_spec = functools.lru_cache(maxsize=4096)(BlockSpec)
AUTOCAST_DEVICES = ("cuda", "cpu")  # where torch.autocast exists (asking about "meta" raises)


def _check_tensor(name, t, ndim):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")
    if t.dim() not in ndim:
        expected = " or ".join(f"{n}-D" for n in ndim)
        raise ValueError(f"{name} must be {expected}, got shape {tuple(t.shape)}")


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def check_conv_args(x, weight, bias, dilation, activation):
    """Raise ValueError/TypeError for anything the kernels do not support, before any kernel runs."""
    _check_tensor("x", x, (2, 3))
    _check_tensor("weight", weight, (3,))
    c_out, c_in, k = weight.shape
    if c_out < 1 or c_in < 1 or k < 1:
        raise ValueError(f"weight must be (C_out, C_in, K) with every size >= 1, got shape {tuple(weight.shape)}")
    if x.shape[-2] != c_in:
        raise ValueError(f"x has {x.shape[-2]} channels (x.shape={tuple(x.shape)}) but weight expects "
                         f"C_in={c_in} (weight.shape={tuple(weight.shape)})")
    _check_positive_int("dilation", dilation)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be None or 'relu', got {activation!r}")
    tensors = [("weight", weight)]
    if bias is not None:
        _check_tensor("bias", bias, (1,))
        if bias.shape[0] != c_out:
            raise ValueError(f"bias must have shape ({c_out},) to match weight's C_out, got {tuple(bias.shape)}")
        tensors.append(("bias", bias))
    for name, t in tensors:
        if t.dtype != x.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but x has {x.dtype}; they must match")
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device} but x is on {x.device}; they must be on one device")


def _autocast_all(*tensors):
    """Under torch.autocast, every floating tensor in the autocast dtype, like nn.Conv1d (fp32
    parameters and x run in bf16); the tensors as they are otherwise."""
    x = tensors[0]
    if not isinstance(x, torch.Tensor) or x.device.type not in AUTOCAST_DEVICES \
            or not torch.is_autocast_enabled(x.device.type):
        return tensors
    dtype = torch.get_autocast_dtype(x.device.type)
    return tuple(t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in tensors)


def causal_conv1d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, dilation: int = 1,
                  activation: Optional[str] = None) -> Tensor:
    """Causal dilated 1-D convolution with fused bias and activation.

    y[:, o, t] = act(bias[o] + sum_{i,k} weight[o, i, k] * x[:, i, t - (K-1-k)*dilation]), with x
    taken as zero before t = 0, so y[:, :, t] depends only on x[:, :, <= t]. It equals
    `nn.Conv1d(padding=(K-1)*dilation)` followed by a chomp of the last (K-1)*dilation steps,
    without padding anything in memory or computing the chomped steps.

    Args:
        x: (B, C_in, L) or unbatched (C_in, L); float16, bfloat16, float32 or float64, any strides.
        weight: (C_out, C_in, K), same dtype and device as x.
        bias: (C_out,) or None.
        dilation: int >= 1.
        activation: None or "relu".
    Returns:
        (B, C_out, L) (or (C_out, L) for unbatched x), differentiable in x, weight and bias.

    Example:
        >>> x = torch.randn(8, 16, 1000)
        >>> w = torch.randn(32, 16, 3)
        >>> y = tcnkernels.causal_conv1d(x, w, dilation=4, activation="relu")  # (8, 32, 1000)
    """
    x, weight, bias = _autocast_all(x, weight, bias)
    check_conv_args(x, weight, bias, dilation, activation)
    if x.dim() == 2:
        return causal_conv1d(x.unsqueeze(0), weight, bias, dilation, activation).squeeze(0)
    if select_backend(x.device) == "torch":
        return causal_conv1d_reference(x, weight, bias, dilation, activation)
    if torch.compiler.is_compiling():  # the registered op: an opaque node in the compiled graph
        return causal_conv1d_op(x, weight, bias, dilation, ACTIVATIONS[activation])
    spec = _conv_spec(weight.shape[2], dilation, activation)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return CausalConv1dFunction.apply(spec, x, weight, bias)
    return conv_forward(x, prepare_weight(weight), bias, spec=spec)  # inference: no autograd bookkeeping


def check_recompute(recompute):
    if not isinstance(recompute, bool):
        raise TypeError(f"recompute must be a bool, got {type(recompute).__name__}")


def _check_block_args(x, v1, g1, b1, v2, g2, b2, wd, bd, dilation, p1, p2, mode, seeds):
    check_conv_args(x, v1, b1, dilation, "relu")
    c_out, c_in, k = v1.shape
    _check_tensor("conv2's weight", v2, (3,))
    if tuple(v2.shape) != (c_out, c_out, k):
        raise ValueError(f"conv2's weight must have shape {(c_out, c_out, k)}, got {tuple(v2.shape)}")
    for name, t in (("conv2's weight", v2), ("conv2's bias", b2)):
        if t is not None and (t.dtype != x.dtype or t.device != x.device):
            raise TypeError(f"{name} must have x's dtype and device ({x.dtype}, {x.device}), got {t.dtype}, {t.device}")
    if b2 is not None and tuple(b2.shape) != (c_out,):
        raise ValueError(f"conv2's bias must have shape ({c_out},), got {tuple(b2.shape)}")
    for name, g in (("g1", g1), ("g2", g2)):
        if g is not None:
            _check_tensor(name, g, (3,))
            if tuple(g.shape) != (c_out, 1, 1):
                raise ValueError(f"{name} (the weight-norm gain) must have shape {(c_out, 1, 1)}, got {tuple(g.shape)}")
            if g.dtype != v1.dtype or g.device != v1.device:
                raise TypeError(f"{name} must have the weight's dtype and device")
    if wd is None:
        if c_in != c_out:
            raise ValueError(f"the residual needs a 1x1 downsample weight: C_in={c_in} != C_out={c_out}")
    else:
        check_conv_args(x, wd, bd, 1, None)
        if tuple(wd.shape) != (c_out, c_in, 1):
            raise ValueError(f"the downsample weight must have shape {(c_out, c_in, 1)}, got {tuple(wd.shape)}")
    for name, p in (("dropout", p1), ("dropout", p2)):
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
            raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    if mode not in DROPOUT_MODES:
        raise ValueError(f"dropout_mode must be one of {DROPOUT_MODES}, got {mode!r}")
    if seeds is not None and (not isinstance(seeds, torch.Tensor) or seeds.dtype != torch.int64
                              or seeds.shape != (2,) or seeds.device != x.device):
        raise ValueError("seeds must be an int64 tensor of 2 dropout seeds on x's device")


def temporal_block(x: Tensor, v1: Tensor, g1: Optional[Tensor], b1: Optional[Tensor], v2: Tensor,
                   g2: Optional[Tensor], b2: Optional[Tensor], wd: Optional[Tensor] = None, bd: Optional[Tensor] = None,
                   dilation: int = 1, dropout: Tuple[float, float] = (0.0, 0.0), dropout_mode: str = "element",
                   training: bool = False, seeds: Optional[Tensor] = None, recompute: bool = True) -> Tensor:
    """The TCN residual block: relu(D(relu(conv2(D(relu(conv1(x))))))  + res), fused.

    Each conv is causal and dilated, with weight `g * v / ||v||` (norm over (C_in, K) per output
    channel; g=None: v is the weight as it is) and a bias. res is x, or the 1x1 downsample
    `wd @ x + bd` when the widths differ. D is dropout with probabilities `dropout` (p1, p2) when
    `training`: Philox masks from `seeds` (two int64 seeds; drawn from torch's generator when None),
    the same bits on every backend; "element" or "channel" (spatial) `dropout_mode`. `recompute`:
    the fused backward runs conv2's forward again instead of keeping its output, a third less
    activation memory for one more launch (the results are the same either way).

    Args:
        x: (B, C_in, L) or (C_in, L); v1 (C_out, C_in, K), g1 (C_out, 1, 1) or None, b1 (C_out,);
        v2 (C_out, C_out, K), g2, b2 likewise; wd (C_out, C_in, 1) or None, bd (C_out,) or None.
    Returns:
        (B, C_out, L), differentiable in x and every weight.
    """
    check_recompute(recompute)
    p1, p2 = dropout
    cast = _autocast_all(x, v1, g1, b1, v2, g2, b2, wd, bd)  # what the convs run in (autocast or not)
    _check_block_args(*cast, dilation, p1, p2, dropout_mode, seeds)
    if x.dim() == 2:
        return temporal_block(x.unsqueeze(0), v1, g1, b1, v2, g2, b2, wd, bd, dilation, dropout, dropout_mode,
                              training, seeds, recompute).squeeze(0)
    drop = training and (p1 > 0 or p2 > 0)
    if drop and seeds is None:
        seeds = draw_dropout_seeds(2, x.device)
    x = cast[0]
    backend = select_backend(x.device)
    if backend == "triton" and not torch.compiler.is_compiling():
        # The fused block: weight norm and the autocast dtype are handled by its weight kernel; the
        # parameters go in as they are, so their gradients come out in their own dtype.
        inputs = tuple.__new__(BlockInputs, (x, v1, g1, b1, v2, g2, b2, wd, bd, seeds if drop else None))
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
            return TemporalBlockFunction.apply(_block_spec(v1.shape[2], dilation, (p1, p2), dropout_mode, drop,
                                                           recompute), *inputs)
        # no backward: conv2's output is not kept, whatever `recompute` says
        return block_forward(_block_spec(v1.shape[2], dilation, (p1, p2), dropout_mode, drop, True), inputs)[0]
    # Separate ops: the PyTorch path, or the registered conv ops for torch.compile. Weight norm in the
    # parameters' dtype (fp32 under autocast, as nn.utils.weight_norm), the convs in the autocast dtype.
    b1, b2, wd, bd = cast[3], cast[6], cast[7], cast[8]
    w1 = (v1 if g1 is None else torch._weight_norm(v1, g1, 0)).to(x.dtype)
    w2 = (v2 if g2 is None else torch._weight_norm(v2, g2, 0)).to(x.dtype)
    return temporal_block_reference(x, w1, b1, w2, b2, wd, bd, dilation, (p1, p2), dropout_mode,
                                    seeds if drop else None,
                                    conv=causal_conv1d_reference if backend == "torch" else causal_conv1d)

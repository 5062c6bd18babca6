"""Public functions: input checks in words a user understands, then the backend's implementation.

conv1d          one dilated conv (any padding mode, groups) with fused bias and activation
causal_conv1d   conv1d with causal padding
temporal_block  the TCN residual block (weight norm, dropout, residual, ReLUs)
"""
import functools
from typing import Optional, Tuple

import torch
from torch import Tensor

from ._backend import select_backend
from .ops import triton as triton_kernels
from .ops.activations import CODES, RELU, activate, activation_of
from .ops.reference import conv1d_reference, draw_dropout_seeds, temporal_block_reference
from .ops.specs import DROPOUT_MODES, PADDING_MODES, BlockSpec, ConvSpec, inference_epilogue

if triton_kernels.IMPORT_ERROR is None:  # without triton only the torch backend exists
    from .ops.block import BlockInputs, TemporalBlockFunction, block_forward
    from .ops.conv import Conv1dFunction, conv1d_op, forward_launch

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


def padding_of(padding, kernel_size, dilation, name="padding") -> int:
    """The right padding of a padding mode or (left, right) pair; the total is (K-1)*dilation."""
    if padding == "causal":  # (the common case first: a call's host time counts on small TCNs)
        return 0
    total = (kernel_size - 1) * dilation
    if isinstance(padding, str):
        if padding not in PADDING_MODES:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, PADDING_MODES))} or a (left, right) pair, "
                             f"got {padding!r}")
        return {"causal": 0, "same": total - total // 2, "anticausal": total}[padding]
    if (isinstance(padding, (tuple, list)) and len(padding) == 2
            and all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in padding)):
        if padding[0] + padding[1] != total:
            raise ValueError(f"{name} (left, right) = {tuple(padding)} must sum to (kernel_size-1)*dilation = {total}, "
                             "so that the output keeps the input's length")
        return padding[1]
    raise ValueError(f"{name} must be one of {', '.join(map(repr, PADDING_MODES))} or a (left, right) pair of ints "
                     f">= 0, got {padding!r}")


def check_groups(groups, c_in, c_out):
    if isinstance(groups, bool) or not isinstance(groups, int):
        raise TypeError(f"groups must be an int, got {type(groups).__name__}")
    if groups < 1 or c_in % groups or c_out % groups:
        raise ValueError(f"groups must be >= 1 and divide both C_in={c_in} and C_out={c_out}, got {groups}")


def check_conv_args(x, weight, bias, dilation, activation, groups=1):
    """Raise ValueError/TypeError for anything the kernels do not support, before any kernel runs.
    `activation`: an activations.Activation or None (already resolved)."""
    _check_tensor("x", x, (2, 3))
    _check_tensor("weight", weight, (3,))
    c_out, c_in_g, k = weight.shape
    if c_out < 1 or c_in_g < 1 or k < 1:
        raise ValueError(f"weight must be (C_out, C_in // groups, K) with every size >= 1, got shape "
                         f"{tuple(weight.shape)}")
    check_groups(groups, x.shape[-2], c_out)
    if x.shape[-2] != c_in_g * groups:
        raise ValueError(f"x has {x.shape[-2]} channels (x.shape={tuple(x.shape)}) but weight expects "
                         f"C_in={c_in_g * groups} (weight.shape={tuple(weight.shape)}, groups={groups})")
    _check_positive_int("dilation", dilation)
    if activation is not None and activation.gated and c_out % 2:
        raise ValueError(f"activation {activation.name!r} is a gated unit: it halves the channels, so C_out must "
                         f"be even, got {c_out}")
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


def _check_slope(slope, c_out, x):
    _check_tensor("activation (nn.PReLU)'s weight", slope, (1,))
    if slope.numel() not in (1, c_out):
        raise ValueError(f"nn.PReLU needs num_parameters 1 or C_out={c_out}, got {slope.numel()}")
    if slope.device != x.device:
        raise ValueError(f"nn.PReLU's weight is on {slope.device} but x is on {x.device}")


def _autocast_all(*tensors):
    """Under torch.autocast, every floating tensor in the autocast dtype, like nn.Conv1d (fp32
    parameters and x run in bf16); the tensors as they are otherwise."""
    x = tensors[0]
    if not isinstance(x, torch.Tensor) or x.device.type not in AUTOCAST_DEVICES \
            or not torch.is_autocast_enabled(x.device.type):
        return tensors
    dtype = torch.get_autocast_dtype(x.device.type)
    return tuple(t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in tensors)


def conv1d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, dilation: int = 1, groups: int = 1,
           padding="causal", activation=None) -> Tensor:
    """Dilated 1-D convolution that keeps the length, with fused bias and activation.

    y[:, o, t] = act(bias[o] + sum_{i,k} weight[o, i, k] * x[:, g*C_in/groups + i, t - left + k*dilation])
    (g: o's group), with x taken as zero outside [0, L): `F.pad(x, (left, right))` then
    `F.conv1d(..., dilation=dilation, groups=groups)` and the activation, without padding anything in
    memory or computing steps that a chomp would drop.

    Args:
        x: (B, C_in, L) or unbatched (C_in, L); float16, bfloat16, float32 or float64, any strides.
            A channel-last view (`y.transpose(1, 2)` of a (B, L, C) tensor) is read as it is, and the
            output is allocated in the same layout.
        weight: (C_out, C_in // groups, K), same dtype and device as x.
        bias: (C_out,) or None.
        dilation: int >= 1.
        groups: int dividing C_in and C_out; groups == C_in == C_out is a depthwise conv.
        padding: "causal" (left (K-1)*dilation), "same" (left total // 2, right the rest, as
            F.conv1d(padding="same")), "anticausal" (all on the right), or (left, right) summing to
            (K-1)*dilation.
        activation: None; "relu", "leaky_relu", "elu", "selu", "gelu", "gelu_tanh", "silu", "mish",
            "softplus", "tanh", "sigmoid" (torch.nn's default parameters); an instance of one of
            those torch.nn modules or of nn.PReLU (its parameters are used, PReLU's weight gets its
            gradient); or a gated unit, "glu" (a * sigmoid(b)) or "gated_tanh" (tanh(a) * sigmoid(b)),
            a and b the two halves of the conv's channels, which gives C_out // 2 channels.
    Returns:
        (B, C_out, L) ((B, C_out // 2, L) for a gated unit; unbatched for unbatched x),
        differentiable in x, weight, bias and PReLU's weight.

    Example:
        >>> y = tcnkernels.conv1d(torch.randn(8, 16, 1000), torch.randn(32, 16, 3), dilation=4,
        ...                       padding="same", activation="gelu")  # (8, 32, 1000)
    """
    act, slope = activation_of(activation)
    x, weight, bias = _autocast_all(x, weight, bias)
    check_conv_args(x, weight, bias, dilation, act, groups)
    pad_right = padding_of(padding, weight.shape[2], dilation)
    if slope is not None:
        _check_slope(slope, weight.shape[0], x)
    if x.dim() == 2:
        return _conv1d(x.unsqueeze(0), weight, bias, dilation, groups, pad_right, act, slope).squeeze(0)
    return _conv1d(x, weight, bias, dilation, groups, pad_right, act, slope)


def _conv1d(x, weight, bias, dilation, groups, pad_right, act, slope):
    """conv1d on checked (B, C, L) inputs."""
    if select_backend(x.device) == "torch":
        K = weight.shape[2]
        return conv1d_reference(x, weight, bias, dilation, groups, ((K - 1) * dilation - pad_right, pad_right), act,
                                slope)
    if act is not None and act.gated and groups > 1:
        # the gate pairs channels of different groups: the conv fused, the gate one elementwise op
        return activate(_conv1d(x, weight, bias, dilation, groups, pad_right, None, None), act)
    if torch.compiler.is_compiling():  # the registered op: an opaque node in the compiled graph
        p0, p1 = act.kernel_params() if act is not None else (0.0, 0.0)
        return conv1d_op(x, weight, bias, slope, dilation, groups, pad_right, CODES[None if act is None else act.name],
                         p0, p1)[0]
    spec = _conv_spec(weight.shape[2], dilation, act, groups, pad_right,
                      1 < groups == x.shape[1] == weight.shape[0])  # depthwise
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)
                                    or (slope is not None and slope.requires_grad)):
        return Conv1dFunction.apply(spec, x, weight, bias, slope)
    # inference: no autograd bookkeeping, nothing kept for a backward
    return forward_launch(spec, x, weight, bias, slope, inference_epilogue(spec))[0]


def causal_conv1d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, dilation: int = 1,
                  activation=None) -> Tensor:
    """Causal dilated 1-D convolution with fused bias and activation: `conv1d(..., padding="causal")`.

    y[:, o, t] = act(bias[o] + sum_{i,k} weight[o, i, k] * x[:, i, t - (K-1-k)*dilation]), with x
    taken as zero before t = 0, so y[:, :, t] depends only on x[:, :, <= t]. It equals
    `nn.Conv1d(padding=(K-1)*dilation)` followed by a chomp of the last (K-1)*dilation steps,
    without padding anything in memory or computing the chomped steps.

    Args:
        x: (B, C_in, L) or unbatched (C_in, L); float16, bfloat16, float32 or float64, any strides.
        weight: (C_out, C_in, K), same dtype and device as x.
        bias: (C_out,) or None.
        dilation: int >= 1.
        activation: as `conv1d`'s (None, "relu", ...).
    Returns:
        (B, C_out, L) (or (C_out, L) for unbatched x), differentiable in x, weight and bias.

    Example:
        >>> x = torch.randn(8, 16, 1000)
        >>> w = torch.randn(32, 16, 3)
        >>> y = tcnkernels.causal_conv1d(x, w, dilation=4, activation="relu")  # (8, 32, 1000)
    """
    return conv1d(x, weight, bias, dilation, 1, "causal", activation)


def check_recompute(recompute):
    if not isinstance(recompute, bool):
        raise TypeError(f"recompute must be a bool, got {type(recompute).__name__}")


def block_activation_of(activation, name="activation"):
    """The Activation of a block's activation argument: elementwise and without parameters to train."""
    act, slope = activation_of(activation, name)
    if act is None or act.gated or slope is not None:
        raise ValueError(f"a block's {name} must be an elementwise activation without trained parameters (one "
                         f"of the names, or their torch.nn modules; not None, nn.PReLU or a gated unit), "
                         f"got {activation!r}")
    return act


def check_flags(**flags):
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


def _check_block_args(x, v1, g1, b1, v2, g2, b2, wd, bd, dilation, p1, p2, mode, seeds):
    check_conv_args(x, v1, b1, dilation, RELU)
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
                   training: bool = False, seeds: Optional[Tensor] = None, recompute: bool = True,
                   activation="relu", final_activation: bool = True, conv2_activation: bool = True,
                   padding="causal") -> Tensor:
    """The TCN residual block: relu(D(relu(conv2(D(relu(conv1(x))))))  + res), fused.

    Each conv is causal and dilated, with weight `g * v / ||v||` (norm over (C_in, K) per output
    channel; g=None: v is the weight as it is) and a bias. res is x, or the 1x1 downsample
    `wd @ x + bd` when the widths differ. D is dropout with probabilities `dropout` (p1, p2) when
    `training`: Philox masks from `seeds` (two int64 seeds; drawn from torch's generator when None),
    the same bits on every backend; "element" or "channel" (spatial) `dropout_mode`. `recompute`:
    the fused backward runs conv2's forward again instead of keeping its output, a third less
    activation memory for one more launch (the results are the same either way).
    Options beyond the reference's: `activation` in place of ReLU (a name or torch.nn module of
    `conv1d`'s elementwise activations, without PReLU), none after the residual add without
    `final_activation` (Darts' block), none after conv2 without `conv2_activation` (Darts' last
    block), and each conv's `padding` as in `conv1d` ("causal", "same", "anticausal", (left, right)).
    Every option runs in the fused block kernels (the activation, its derivative and the dropout
    masks in their epilogues).

    Args:
        x: (B, C_in, L) or (C_in, L); v1 (C_out, C_in, K), g1 (C_out, 1, 1) or None, b1 (C_out,);
        v2 (C_out, C_out, K), g2, b2 likewise; wd (C_out, C_in, 1) or None, bd (C_out,) or None.
    Returns:
        (B, C_out, L), differentiable in x and every weight.
    """
    check_recompute(recompute)
    check_flags(final_activation=final_activation, conv2_activation=conv2_activation)
    act = block_activation_of(activation)
    p1, p2 = dropout
    cast = _autocast_all(x, v1, g1, b1, v2, g2, b2, wd, bd)  # what the convs run in (autocast or not)
    _check_block_args(*cast, dilation, p1, p2, dropout_mode, seeds)
    pad_right = padding_of(padding, v1.shape[2], dilation)
    if x.dim() == 2:
        return temporal_block(x.unsqueeze(0), v1, g1, b1, v2, g2, b2, wd, bd, dilation, dropout, dropout_mode,
                              training, seeds, recompute, act, final_activation, conv2_activation,
                              padding).squeeze(0)

    drop = training and (p1 > 0 or p2 > 0)
    if drop and seeds is None:
        seeds = draw_dropout_seeds(2, x.device)
    x = cast[0]
    backend = select_backend(x.device)
    # (fp64 GELU: the separate ops, whose backward takes GELU's derivative in a pass of its own; see
    # Activation.derivative_in_kernel)
    if backend == "triton" and not torch.compiler.is_compiling() and act.derivative_in_kernel(x.dtype):
        # The fused block: weight norm and the autocast dtype are handled by its weight kernel; the
        # parameters go in as they are, so their gradients come out in their own dtype.
        inputs = tuple.__new__(BlockInputs, (x, v1, g1, b1, v2, g2, b2, wd, bd, seeds if drop else None))
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in inputs):
            return TemporalBlockFunction.apply(_block_spec(v1.shape[2], dilation, (p1, p2), dropout_mode, drop,
                                                           recompute, act, final_activation, conv2_activation,
                                                           pad_right), *inputs)
        # no backward: conv2's output is not kept, whatever `recompute` says
        return block_forward(_block_spec(v1.shape[2], dilation, (p1, p2), dropout_mode, drop, True, act,
                                         final_activation, conv2_activation, pad_right), inputs)[0]
    # Separate ops: the PyTorch path, or the registered conv ops for torch.compile. Weight norm in the
    # parameters' dtype (fp32 under autocast, as nn.utils.weight_norm), the convs in the autocast dtype.
    b1, b2, wd, bd = cast[3], cast[6], cast[7], cast[8]
    w1 = (v1 if g1 is None else torch._weight_norm(v1, g1, 0)).to(x.dtype)
    w2 = (v2 if g2 is None else torch._weight_norm(v2, g2, 0)).to(x.dtype)
    if backend == "torch":
        return temporal_block_reference(x, w1, b1, w2, b2, wd, bd, dilation, (p1, p2), dropout_mode,
                                        seeds if drop else None, activation=act, final_activation=final_activation,
                                        conv2_activation=conv2_activation, pad_right=pad_right)
    return temporal_block_reference(x, w1, b1, w2, b2, wd, bd, dilation, (p1, p2), dropout_mode,
                                    seeds if drop else None, conv=_block_conv, activation=act,
                                    final_activation=final_activation, conv2_activation=conv2_activation,
                                    pad_right=pad_right)


def _block_conv(x, weight, bias, dilation, pad_right, activation):
    return _conv1d(x, weight, bias, dilation, 1, pad_right, activation, None)

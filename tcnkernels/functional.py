"""Public functions: input checks in words a user understands, then the backend's implementation."""
import torch

from ._backend import TRITON_IMPORT_ERROR, select_backend
from .ops.reference import ACTIVATIONS, causal_conv1d_reference

if TRITON_IMPORT_ERROR is None:  # without triton only the torch backend exists
    from .ops.conv import CausalConv1dFunction, causal_conv1d_op
    from .ops.conv_launch import conv_forward, prepare_weight

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
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


def _autocast(x, weight, bias):
    """Under torch.autocast, run in the autocast dtype like nn.Conv1d (fp32 parameters, bf16 x)."""
    if not isinstance(x, torch.Tensor):
        return x, weight, bias
    device_type = x.device.type
    if device_type not in AUTOCAST_DEVICES or not torch.is_autocast_enabled(device_type):
        return x, weight, bias
    dtype = torch.get_autocast_dtype(x.device.type)
    cast = [t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in (x, weight, bias)]
    return tuple(cast)


def causal_conv1d(x, weight, bias=None, dilation=1, activation=None):
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
    x, weight, bias = _autocast(x, weight, bias)
    check_conv_args(x, weight, bias, dilation, activation)
    if x.dim() == 2:
        return causal_conv1d(x.unsqueeze(0), weight, bias, dilation, activation).squeeze(0)
    if select_backend(x.device) == "torch":
        return causal_conv1d_reference(x, weight, bias, dilation, activation)
    if torch.compiler.is_compiling():  # the registered op: an opaque node in the compiled graph
        return causal_conv1d_op(x, weight, bias, dilation, ACTIVATIONS[activation])
    relu = activation == "relu"
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return CausalConv1dFunction.apply(x, weight, bias, dilation, relu)
    return conv_forward(x, *prepare_weight(weight), bias, dilation, relu)  # inference: no autograd bookkeeping

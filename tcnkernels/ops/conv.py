"""Host side of the fused causal Conv1d: launchers, `torch.library` registration and autograd.

Registered ops (all take an int `activation`: 0 none, 1 relu):
  tcnkernels::causal_conv1d(x, weight, bias?, dilation, activation) -> y
  tcnkernels::causal_conv1d_input_grad(dy, weight, y?, dilation, activation) -> dx
  tcnkernels::causal_conv1d_weight_grad(dy, x, y?, kernel_size, dilation, activation) -> (dw, db)
Inputs are validated by the public function (`tcnkernels.functional`) before they get here.
"""
import contextlib
import functools
from typing import Optional, Tuple

import torch
import triton

from .._backend import INTERPRETER, new_output
from .triton.conv_kernels import causal_conv1d_kernel, causal_conv1d_weight_grad_kernel

RELU = 1

# Tile sizes. `tl.dot` needs every dimension >= 16 on the GPU. The output-channel block covers all
# output channels up to 64, so for TCN widths each input element is read from DRAM once; the
# reduction block covers C_in*K up to 64. These are the only values the launchers can pick, and
# the compile-only tests compile each of them for sm_80 and sm_90.
BLOCK_T = 64
NUM_WARPS = 4


def channel_blocks(dtype):
    # fp64 (there for gradcheck) stops at 32: its 64-wide pipelined tiles need 192 KB of shared
    # memory, over the 163 KB of an A100.
    return (16, 32) if dtype == torch.float64 else (16, 32, 64)


def _channel_block(n, dtype):
    blocks = channel_blocks(dtype)
    return min(blocks[-1], max(blocks[0], triton.next_power_of_2(n)))


def dtype_flags(dtype, device):
    """Constexprs that depend on the dtype: (UPCAST, ACC_FP64, INPUT_PRECISION).

    16-bit tiles feed the tensor cores as they are (fp32 accumulation), except in the interpreter,
    where bf16 dots are wrong, so they are converted to fp32 first. fp32 follows cuDNN's TF32 switch
    so comparisons with nn.Conv1d are at equal precision.
    """
    upcast = dtype == torch.float32 or (INTERPRETER and dtype in (torch.float16, torch.bfloat16))
    tf32 = dtype == torch.float32 and device.type == "cuda" and torch.backends.cudnn.allow_tf32
    return upcast, dtype == torch.float64, "tf32" if tf32 else "ieee"


@functools.lru_cache(maxsize=None)
def _sm_count(device_index):
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def _target_programs(device):
    # Enough programs to fill the GPU a few times over; in the interpreter every program costs
    # ~0.5 ms, so a handful (still more than one, so chunked reductions are exercised).
    return 4 * _sm_count(device.index or 0) if device.type == "cuda" else 4


def _on_device(t):
    # Triton launches on the current CUDA device: make it the tensor's (cuda:1 while cuda:0 is current).
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _launch_conv(inp, gate, weight, w_strides, bias, out, kernel_size, dilation, anti_causal, apply_relu):
    """out = conv(inp (* (gate > 0))) with the tap direction and weight view the caller chose."""
    B, c_in, L = inp.shape
    c_out = out.shape[1]
    block_co, block_j = _channel_block(c_out, inp.dtype), _channel_block(c_in * kernel_size, inp.dtype)
    n_co, n_t = triton.cdiv(c_out, block_co), triton.cdiv(L, BLOCK_T)
    upcast, acc_fp64, precision = dtype_flags(inp.dtype, inp.device)
    gate_arg = inp if gate is None else gate
    with _on_device(inp):
        causal_conv1d_kernel[(B * n_co * n_t,)](
            inp, gate_arg, weight, bias if bias is not None else out, out,
            c_in, c_out, L, kernel_size, dilation,
            *inp.stride(), *gate_arg.stride(), *w_strides, bias.stride(0) if bias is not None else 0,
            *out.stride(),
            n_co, n_t,
            ANTI_CAUSAL=anti_causal, GATE_BY_RELU=gate is not None, HAS_BIAS=bias is not None,
            APPLY_RELU=apply_relu, UPCAST=upcast, ACC_FP64=acc_fp64, INPUT_PRECISION=precision,
            BLOCK_CO=block_co, BLOCK_J=block_j, BLOCK_T=BLOCK_T, num_warps=NUM_WARPS,
        )
    return out


def conv_forward(x, weight, bias, dilation, activation):
    B, _, L = x.shape
    c_out, _, K = weight.shape
    y = new_output(x, (B, c_out, L))
    if y.numel() == 0:
        return y
    return _launch_conv(x, None, weight, weight.stride(), bias, y, K, dilation, anti_causal=False,
                        apply_relu=activation == RELU)


def conv_input_grad(dy, weight, y, dilation, activation):
    """dx[b, i, t] = sum_{o,k} W[o, i, k] * g[b, o, t + (K-1-k)*d]: the forward kernel, W transposed."""
    B, c_out, L = dy.shape
    c_in, K = weight.shape[1], weight.shape[2]
    dx = new_output(dy, (B, c_in, L))
    if dx.numel() == 0:
        return dx
    w_transposed = (weight.stride(1), weight.stride(0), weight.stride(2))
    gate = y if activation == RELU else None
    return _launch_conv(dy, gate, weight, w_transposed, None, dx, K, dilation, anti_causal=True, apply_relu=False)


def conv_weight_grad(dy, x, y, kernel_size, dilation, activation):
    """(dw, db) through per-chunk fp32 partials summed afterwards: deterministic, no atomics."""
    B, c_in, L = x.shape
    c_out = dy.shape[1]
    n_j = c_in * kernel_size
    if B * L == 0:
        return x.new_zeros((c_out, c_in, kernel_size)), x.new_zeros((c_out,))
    block_co, block_j = _channel_block(c_out, x.dtype), _channel_block(n_j, x.dtype)
    n_co, n_jb, n_t = triton.cdiv(c_out, block_co), triton.cdiv(n_j, block_j), triton.cdiv(L, BLOCK_T)
    n_items = B * n_t
    # The chunk count depends only on shapes and the device, never on timing: same partials,
    # same summation order, bitwise identical gradients on every run.
    n_chunks = max(1, min(n_items, _target_programs(x.device) // (n_co * n_jb)))
    items_per_chunk = triton.cdiv(n_items, n_chunks)
    n_chunks = triton.cdiv(n_items, items_per_chunk)
    upcast, acc_fp64, precision = dtype_flags(x.dtype, x.device)
    partial_dtype = torch.float64 if acc_fp64 else torch.float32
    dw_partial = new_output(x, (n_chunks, c_out, n_j), dtype=partial_dtype)
    db_partial = new_output(x, (n_chunks, c_out), dtype=partial_dtype)
    gate = y if activation == RELU else dy
    with _on_device(x):
        causal_conv1d_weight_grad_kernel[(n_chunks * n_co * n_jb,)](
            x, dy, gate, dw_partial, db_partial,
            c_in, c_out, L, kernel_size, dilation,
            *x.stride(), *dy.stride(), *gate.stride(),
            n_co, n_jb, n_t, n_items, items_per_chunk,
            GATE_BY_RELU=activation == RELU, UPCAST=upcast, ACC_FP64=acc_fp64, INPUT_PRECISION=precision,
            BLOCK_CO=block_co, BLOCK_J=block_j, BLOCK_T=BLOCK_T, num_warps=NUM_WARPS,
        )
    dw = dw_partial.sum(0).view(c_out, c_in, kernel_size).to(x.dtype)
    db = db_partial.sum(0).to(x.dtype)
    return dw, db


# ---------------------------------------------------------------------------------------------
# torch.library registration. custom_op + register_fake + register_autograd: opcheck passes and
# torch.compile(fullgraph=True) traces through the op (an opaque node) on CPU and CUDA alike.

@torch.library.custom_op("tcnkernels::causal_conv1d", mutates_args=())
def causal_conv1d_op(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], dilation: int,
                     activation: int) -> torch.Tensor:
    return conv_forward(x, weight, bias, dilation, activation)


@causal_conv1d_op.register_fake
def _(x, weight, bias, dilation, activation):
    return x.new_empty((x.shape[0], weight.shape[0], x.shape[2]))


@torch.library.custom_op("tcnkernels::causal_conv1d_input_grad", mutates_args=())
def causal_conv1d_input_grad_op(dy: torch.Tensor, weight: torch.Tensor, y: Optional[torch.Tensor],
                                dilation: int, activation: int) -> torch.Tensor:
    return conv_input_grad(dy, weight, y, dilation, activation)


@causal_conv1d_input_grad_op.register_fake
def _(dy, weight, y, dilation, activation):
    return dy.new_empty((dy.shape[0], weight.shape[1], dy.shape[2]))


@torch.library.custom_op("tcnkernels::causal_conv1d_weight_grad", mutates_args=())
def causal_conv1d_weight_grad_op(dy: torch.Tensor, x: torch.Tensor, y: Optional[torch.Tensor],
                                 kernel_size: int, dilation: int,
                                 activation: int) -> Tuple[torch.Tensor, torch.Tensor]:
    return conv_weight_grad(dy, x, y, kernel_size, dilation, activation)


@causal_conv1d_weight_grad_op.register_fake
def _(dy, x, y, kernel_size, dilation, activation):
    return x.new_empty((dy.shape[1], x.shape[1], kernel_size)), x.new_empty((dy.shape[1],))


def _setup_context(ctx, inputs, output):
    x, weight, bias, dilation, activation = inputs
    # Only the output is kept for the ReLU mask (y > 0), never the pre-activation.
    ctx.save_for_backward(x, weight, output if activation == RELU else None)
    ctx.has_bias = bias is not None
    ctx.dilation, ctx.activation = dilation, activation


def _backward(ctx, dy):
    x, weight, y = ctx.saved_tensors
    dx = dw = db = None
    if ctx.needs_input_grad[0]:
        dx = causal_conv1d_input_grad_op(dy, weight, y, ctx.dilation, ctx.activation)
    if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
        dw, db = causal_conv1d_weight_grad_op(dy, x, y, weight.shape[2], ctx.dilation, ctx.activation)
    return dx, dw, db if ctx.has_bias else None, None, None


causal_conv1d_op.register_autograd(_backward, setup_context=_setup_context)

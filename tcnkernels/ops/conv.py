"""The fused causal Conv1d as a differentiable op, two ways, one backward.

- Eager: `CausalConv1dFunction`, a plain `torch.autograd.Function` that calls the launchers directly.
  A registered op costs ~17 us of dispatch per call on the CI CPU before Triton's own launcher runs,
  and small TCNs are host-bound on a GPU, so eager code skips it.
- Under torch.compile: the registered ops below (fake implementations and an autograd formula), which
  dynamo traces as opaque nodes without graph breaks:
    tcnkernels::causal_conv1d(x, weight, bias?, dilation, relu) -> y
    tcnkernels::causal_conv1d_input_grad(g, weight, dilation) -> dx
    tcnkernels::causal_conv1d_weight_grad(dy, x, y?, weight, dilation, write_g) -> (dw, db, g)
  Flags are ints (relu, write_g: 0 or 1), as compiled graphs want.
Inputs are validated by the public function (`tcnkernels.functional`) before they get here.
"""
from typing import Optional, Tuple

import torch

from .conv_launch import conv_forward, conv_input_grad, conv_weight_grad
from .weight_launch import prepare_weight


def relu_gate(dy, y):
    return torch.where(y > 0, dy, torch.zeros((), dtype=dy.dtype, device=dy.device))


def conv_backward(dy, x, y, weight, dilation, needs, weight_grad, input_grad):
    """(dx, dw, db, None, None): the gradients of y = act(conv(x, weight) + bias) that `needs` (the
    ctx's needs_input_grad) asks for; y is the saved output when act is ReLU, else None.
    weight_grad(dy, x, y, weight, dilation, write_g) -> (dw, db, g) and input_grad(g) -> dx are the
    launchers (eager) or the registered ops (torch.compile).

    The ReLU gate g = dy * (y > 0) is applied once: the weight-gradient kernel, which reads dy and y
    anyway, writes g for the input gradient to read (saving a pass and keeping y out of its loop)."""
    dx = dw = db = None
    g = dy
    if needs[1] or needs[2]:
        write_g = int(y is not None and needs[0])
        dw, db, written = weight_grad(dy, x, y, weight, dilation, write_g)
        g = written if write_g else dy
    elif y is not None and needs[0]:  # frozen weights: the gate alone, one elementwise op
        g = relu_gate(dy, y)
    if needs[0]:
        dx = input_grad(g)
    return dx, dw if needs[1] else None, db if needs[2] else None, None, None


class CausalConv1dFunction(torch.autograd.Function):
    """Eager autograd of the fused conv: forward(x, weight, bias, dilation, relu) -> y."""

    @staticmethod
    def forward(ctx, x, weight, bias, dilation, relu):
        w, w_cols = prepare_weight(weight)
        y = conv_forward(x, w, w_cols, bias, dilation, relu)
        # Only the output is kept for the ReLU mask (y > 0), never the pre-activation; the weight
        # in the kernels' layout, so the backward does not lay it out again. The weight itself is
        # only needed by a create_graph backward: a plain reference (cheaper than a saved tensor).
        ctx.save_for_backward(x, w, y if relu else None)
        ctx.dilation, ctx.w_cols, ctx.weight = dilation, w_cols, weight
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w, y = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: a differentiable backward, in PyTorch ops
            return _differentiable_backward(ctx, dy, x, ctx.weight, y)
        dilation, w_cols = ctx.dilation, ctx.w_cols
        return conv_backward(dy, x, y, ctx.weight, dilation, ctx.needs_input_grad, conv_weight_grad,
                             lambda g: conv_input_grad(g, w, w_cols, dilation))


def _differentiable_backward(ctx, dy, x, weight, y):
    """The backward of the reference op, recorded by autograd, so that higher derivatives exist."""
    from .reference import causal_conv1d_reference
    needs = ctx.needs_input_grad
    g = dy if y is None else relu_gate(dy, y)
    wanted = [t for t, n in ((x, needs[0]), (weight, needs[1])) if n]
    grads = iter(torch.autograd.grad(causal_conv1d_reference(x, weight, None, ctx.dilation), wanted, g,
                                     create_graph=True) if wanted else ())
    dx = next(grads) if needs[0] else None
    dw = next(grads) if needs[1] else None
    return dx, dw, g.sum((0, 2)) if needs[2] else None, None, None


# ---------------------------------------------------------------------------------------------
# torch.library registration, for torch.compile(fullgraph=True).

@torch.library.custom_op("tcnkernels::causal_conv1d", mutates_args=())
def causal_conv1d_op(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], dilation: int,
                     relu: int) -> torch.Tensor:
    w, w_cols = prepare_weight(weight)
    return conv_forward(x, w, w_cols, bias, dilation, bool(relu))


@causal_conv1d_op.register_fake
def _(x, weight, bias, dilation, relu):
    return x.new_empty((x.shape[0], weight.shape[0], x.shape[2]))


@torch.library.custom_op("tcnkernels::causal_conv1d_input_grad", mutates_args=())
def causal_conv1d_input_grad_op(g: torch.Tensor, weight: torch.Tensor, dilation: int) -> torch.Tensor:
    w, w_cols = prepare_weight(weight)
    return conv_input_grad(g, w, w_cols, dilation)


@causal_conv1d_input_grad_op.register_fake
def _(g, weight, dilation):
    return g.new_empty((g.shape[0], weight.shape[1], g.shape[2]))


@torch.library.custom_op("tcnkernels::causal_conv1d_weight_grad", mutates_args=())
def causal_conv1d_weight_grad_op(dy: torch.Tensor, x: torch.Tensor, y: Optional[torch.Tensor], weight: torch.Tensor,
                                 dilation: int, write_g: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dw, db, g = conv_weight_grad(dy, x, y, weight, dilation, bool(write_g))
    return dw, db, dy.new_empty(0) if g is None else g  # a registered op returns tensors, never None


@causal_conv1d_weight_grad_op.register_fake
def _(dy, x, y, weight, dilation, write_g):
    return weight.new_empty(weight.shape), weight.new_empty((weight.shape[0],)), dy.new_empty(dy.shape if write_g else (0,))


def _setup_context(ctx, inputs, output):
    x, weight, bias, dilation, relu = inputs
    ctx.save_for_backward(x, weight, output if relu else None)
    ctx.dilation = dilation


def _backward(ctx, dy):
    x, weight, y = ctx.saved_tensors
    return conv_backward(dy, x, y, weight, ctx.dilation, ctx.needs_input_grad, causal_conv1d_weight_grad_op,
                         lambda g: causal_conv1d_input_grad_op(g, weight, ctx.dilation))


causal_conv1d_op.register_autograd(_backward, setup_context=_setup_context)

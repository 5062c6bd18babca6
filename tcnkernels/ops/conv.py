"""The fused causal Conv1d as a differentiable op, two ways, one backward.

- Eager: `CausalConv1dFunction.apply(spec, x, weight, bias)`, a plain `torch.autograd.Function` that
  calls the launchers directly. A registered op costs ~17 us of dispatch per call on the CI CPU
  before Triton's own launcher runs, and small TCNs are host-bound on a GPU, so eager code skips it.
- Under torch.compile: the registered ops below (fake implementations and an autograd formula), which
  dynamo traces as opaque nodes without graph breaks. A registered op's schema takes plain ints, so
  the spec travels as its fields (`spec_args` / `spec_from_args`):
    tcnkernels::causal_conv1d(x, weight, bias?, dilation, activation) -> y
    tcnkernels::causal_conv1d_input_grad(g, weight, dilation) -> dx
    tcnkernels::causal_conv1d_weight_grad(dy, x, y?, weight, dilation, write_g) -> (dw, db, g)
  activation is the kernels' code (specs.ACTIVATIONS), write_g 0 or 1, as compiled graphs want.
Inputs are validated by the public function (`tcnkernels.functional`) before they get here.
"""
from typing import Optional, Tuple

import torch

from .conv_launch import conv_forward, conv_input_grad, conv_weight_grad
from .reference import causal_conv1d_reference
from .specs import ACTIVATIONS, ConvSpec
from .weight_launch import prepare_weight

_ACTIVATION_NAMES = {code: name for name, code in ACTIVATIONS.items()}


def spec_args(spec: ConvSpec):
    """The registered op's scalar arguments of a spec: (dilation, activation code)."""
    return spec.dilation, ACTIVATIONS[spec.activation]


def spec_from_args(weight, dilation, activation) -> ConvSpec:
    return ConvSpec(weight.shape[2], dilation, _ACTIVATION_NAMES[activation])


def relu_gate(dy, y):
    return torch.where(y > 0, dy, torch.zeros((), dtype=dy.dtype, device=dy.device))


def conv_backward(dy, x, y, needs, weight_grad, input_grad):
    """(dx, dw, db): the gradients of y = act(conv(x, weight) + bias) that `needs` (x, weight,
    bias: which need a gradient) asks for; y is the saved output when act is ReLU, else None.
    weight_grad(dy, x, y, write_g) -> (dw, db, g) and input_grad(g) -> dx are the launchers (eager)
    or the registered ops (torch.compile).

    The ReLU gate g = dy * (y > 0) is applied once: the weight-gradient kernel, which reads dy and y
    anyway, writes g for the input gradient to read (saving a pass and keeping y out of its loop)."""
    needs_x, needs_w, needs_b = needs
    dx = dw = db = None
    g = dy
    if needs_w or needs_b:
        write_g = y is not None and needs_x
        dw, db, written = weight_grad(dy, x, y, write_g)
        g = written if write_g else dy
    elif y is not None and needs_x:  # frozen weights: the gate alone, one elementwise op
        g = relu_gate(dy, y)
    if needs_x:
        dx = input_grad(g)
    return dx, dw if needs_w else None, db if needs_b else None


class CausalConv1dFunction(torch.autograd.Function):
    """Eager autograd of the fused conv: apply(spec, x, weight, bias) -> y."""

    @staticmethod
    def forward(ctx, spec: ConvSpec, x, weight, bias):
        prepared = prepare_weight(weight)
        y = conv_forward(x, prepared, bias, spec=spec)
        relu = spec.activation == "relu"
        # Only the output is kept for the ReLU mask (y > 0), never the pre-activation; the weight
        # in the kernels' layout, so the backward does not lay it out again. The weight itself is
        # only needed by a create_graph backward: a plain reference (cheaper than a saved tensor).
        ctx.save_for_backward(x, prepared.w, y if relu else None)
        ctx.spec, ctx.cols, ctx.weight = spec, prepared.cols, weight
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w, y = ctx.saved_tensors
        needs = ctx.needs_input_grad[1:]
        if torch.is_grad_enabled():  # create_graph=True: a differentiable backward, in PyTorch ops
            return (None, *_differentiable_backward(ctx.spec, needs, dy, x, ctx.weight, y))
        spec, weight, prepared = ctx.spec, ctx.weight, (w, ctx.cols)
        return (None, *conv_backward(
            dy, x, y, needs, lambda dy, x, y, write_g: conv_weight_grad(dy, x, y, weight, spec=spec, write_g=write_g),
            lambda g: conv_input_grad(g, prepared, spec=spec)))


def _differentiable_backward(spec, needs, dy, x, weight, y):
    """The backward of the reference op, recorded by autograd, so that higher derivatives exist."""
    g = dy if y is None else relu_gate(dy, y)
    wanted = [t for t, n in ((x, needs[0]), (weight, needs[1])) if n]
    grads = iter(torch.autograd.grad(causal_conv1d_reference(x, weight, None, spec.dilation), wanted, g,
                                     create_graph=True) if wanted else ())
    dx = next(grads) if needs[0] else None
    dw = next(grads) if needs[1] else None
    return dx, dw, g.sum((0, 2)) if needs[2] else None


# ---------------------------------------------------------------------------------------------
# torch.library registration, for torch.compile(fullgraph=True).

@torch.library.custom_op("tcnkernels::causal_conv1d", mutates_args=())
def causal_conv1d_op(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], dilation: int,
                     activation: int) -> torch.Tensor:
    return conv_forward(x, prepare_weight(weight), bias, spec=spec_from_args(weight, dilation, activation))


@causal_conv1d_op.register_fake
def _(x, weight, bias, dilation, activation):
    return x.new_empty((x.shape[0], weight.shape[0], x.shape[2]))


@torch.library.custom_op("tcnkernels::causal_conv1d_input_grad", mutates_args=())
def causal_conv1d_input_grad_op(g: torch.Tensor, weight: torch.Tensor, dilation: int) -> torch.Tensor:
    return conv_input_grad(g, prepare_weight(weight), spec=spec_from_args(weight, dilation, 0))


@causal_conv1d_input_grad_op.register_fake
def _(g, weight, dilation):
    return g.new_empty((g.shape[0], weight.shape[1], g.shape[2]))


@torch.library.custom_op("tcnkernels::causal_conv1d_weight_grad", mutates_args=())
def causal_conv1d_weight_grad_op(dy: torch.Tensor, x: torch.Tensor, y: Optional[torch.Tensor], weight: torch.Tensor,
                                 dilation: int, write_g: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dw, db, g = conv_weight_grad(dy, x, y, weight, spec=spec_from_args(weight, dilation, 0), write_g=bool(write_g))
    return dw, db, dy.new_empty(0) if g is None else g  # a registered op returns tensors, never None


@causal_conv1d_weight_grad_op.register_fake
def _(dy, x, y, weight, dilation, write_g):
    g = dy.new_empty(dy.shape if write_g else (0,))
    return weight.new_empty(weight.shape), weight.new_empty((weight.shape[0],)), g


def _setup_context(ctx, inputs, output):
    x, weight, bias, dilation, activation = inputs
    ctx.save_for_backward(x, weight, output if activation == ACTIVATIONS["relu"] else None)
    ctx.dilation = dilation


def _backward(ctx, dy):
    x, weight, y = ctx.saved_tensors
    dilation = ctx.dilation
    grads = conv_backward(dy, x, y, ctx.needs_input_grad[:3],
                          lambda dy, x, y, write_g: causal_conv1d_weight_grad_op(dy, x, y, weight, dilation,
                                                                                 int(write_g)),
                          lambda g: causal_conv1d_input_grad_op(g, weight, dilation))
    return (*grads, None, None)


causal_conv1d_op.register_autograd(_backward, setup_context=_setup_context)

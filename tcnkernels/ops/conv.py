"""The fused Conv1d as a differentiable op, two ways, one backward.

- Eager: `Conv1dFunction.apply(spec, x, weight, bias, slope)`, a plain `torch.autograd.Function`
  that calls the launchers directly. A registered op costs ~17 us of dispatch per call on the CI CPU
  before Triton's own launcher runs, and small TCNs are host-bound on a GPU, so eager code skips it.
- Under torch.compile: the registered ops below (fake implementations and an autograd formula), which
  dynamo traces as opaque nodes without graph breaks. A registered op's schema takes plain scalars,
  so the spec travels as its fields (`spec_args` / `spec_from_args`):
    tcnkernels::conv1d(x, weight, bias?, slope?, dilation, groups, pad_right, activation, p0, p1) -> (y, kept)
    tcnkernels::conv1d_input_grad(g, weight, dilation, groups, pad_right) -> dx
    tcnkernels::conv1d_weight_grad(dy, x, kept?, weight, dilation, groups, pad_right, activation, p0, p1,
                                   write_g) -> (dw, db, g)
  activation is the kernels' code (activations.CODES) with its two parameters; `kept` is what the
  backward needs (the pre-activation, or an empty tensor where the output is enough).

The backward, per activation (tcnkernels.ops.activations): ReLU's gate dy * (y > 0) is applied by
the weight-gradient kernel, which reads dy and y anyway and writes the gated gradient for the input
gradient; every other activation's dz is one elementwise pass (from the kept output or
pre-activation) before the same two kernels. Inputs are validated by the public function
(`tcnkernels.functional`) before they get here.
"""
import functools
from typing import Optional, Tuple

import torch

from .activations import CODES, N_PARAMS, Activation, activation_backward
from .conv_launch import conv_forward, conv_input_grad, conv_weight_grad
from .depthwise_launch import depthwise_forward, depthwise_input_grad, depthwise_weight_grad
from .reference import conv1d_reference
from .specs import ConvSpec
from .weight_launch import PreparedWeight, prepare_weight

_NAMES = {code: name for name, code in CODES.items()}


def spec_args(spec: ConvSpec):
    """The registered op's scalar arguments of a spec: dilation, groups, pad_right, activation code, p0, p1."""
    act = spec.activation
    p0, p1 = act.kernel_params() if act is not None else (0.0, 0.0)
    return spec.dilation, spec.groups, spec.pad_right, CODES[None if act is None else act.name], p0, p1


@functools.lru_cache(maxsize=4096)
def _spec(K, dilation, groups, pad_right, activation, p0, p1, depthwise=False) -> ConvSpec:
    name = _NAMES[activation]
    act = None if name is None else Activation(name, (p0, p1)[:N_PARAMS.get(name, 0)])
    return ConvSpec(K, dilation, act, groups, pad_right, depthwise)


def spec_from_args(weight, dilation, groups=1, pad_right=0, activation=0, p0=0.0, p1=0.0) -> ConvSpec:
    """The spec of a registered op's arguments (depthwise: one input channel per group, as many
    groups as output channels)."""
    depthwise = groups > 1 and weight.shape[1] == 1 and weight.shape[0] == groups
    return _spec(weight.shape[2], dilation, groups, pad_right, activation, p0, p1, depthwise)


def forward_launch(spec, x, weight, bias, slope, epilogue):
    """(kernel output, the weight as the backward's kernels read it): y, or (y, pre-activation)."""
    if spec.depthwise:
        return depthwise_forward(x, weight, bias, spec=spec, epilogue=epilogue, slope=slope), (weight, 1)
    prepared = prepare_weight(weight)
    return conv_forward(x, prepared, bias, spec=spec, epilogue=epilogue, slope=slope), prepared


def input_grad_launch(spec, g, prepared):
    if spec.depthwise:
        return depthwise_input_grad(g, prepared[0], spec=spec)
    return conv_input_grad(g, tuple.__new__(PreparedWeight, prepared), spec=spec)


def weight_grad_launch(spec, weight):
    """weight_grad(dy, x, kept, write_g) -> (dw, db, g) of conv_backward (kept: what the activation's
    derivative reads, or None)."""
    if spec.depthwise:
        def depthwise(dy, x, kept, write_g):
            g = dy if kept is None else activation_backward(dy, kept, spec.activation)[0]
            dw, db = depthwise_weight_grad(g, x, weight, spec=spec)
            return dw, db, g if write_g else None
        return depthwise
    return lambda dy, x, kept, write_g: conv_weight_grad(dy, x, kept, weight, spec=spec, write_g=write_g)


def conv_backward(dy, x, kept, slope, spec, needs, weight_grad, input_grad):
    """(dx, dw, db, dslope): the gradients of y = act(conv(x, weight) + bias) that `needs` (x,
    weight, bias, slope) asks for. kept: what the forward kept (the output for ReLU and the
    activations whose derivative is a function of it, else the pre-activation; None without an
    activation). weight_grad(dy, x, kept, write_g) -> (dw, db, g) and input_grad(g) -> dx are the
    launchers (eager) or the registered ops (torch.compile).

    The activation's derivative g = dy * act'(.) is applied once: the weight-gradient kernel, which
    reads dy anyway, reads `kept` beside it and writes g for the input gradient to read (saving a
    pass). PReLU (whose slope gradient is a reduction) and the gated units (whose derivative pairs
    two channels) take one elementwise pass first (tcnkernels.ops.activations)."""
    needs_x, needs_w, needs_b, needs_slope = needs
    act = spec.activation
    dx = dw = db = dslope = None
    if act is not None and not act.derivative_in_kernel(dy.dtype):
        dy, dslope = activation_backward(dy, kept, act, slope, needs_slope)
        kept = None
    g = dy
    if needs_w or needs_b:
        write_g = kept is not None and needs_x
        dw, db, written = weight_grad(dy, x, kept, write_g)
        g = written if write_g else dy
    elif kept is not None and needs_x:  # frozen weights: the derivative alone, one elementwise pass
        g = activation_backward(dy, kept, act)[0]
    if needs_x:
        dx = input_grad(g)
    return dx, dw if needs_w else None, db if needs_b else None, dslope


def _kept(spec, y, pre):
    act = spec.activation
    if act is None:
        return None
    return y if act.from_output else pre


class Conv1dFunction(torch.autograd.Function):
    """Eager autograd of the fused conv: apply(spec, x, weight, bias, slope) -> y (slope: PReLU's, or None)."""

    @staticmethod
    def forward(ctx, spec: ConvSpec, x, weight, bias, slope):
        epilogue = spec.epilogue()
        out, prepared = forward_launch(spec, x, weight, bias, slope, epilogue)
        y, pre = out if epilogue.store_pre else (out, None)
        # What the activation's derivative needs (the output, which is returned anyway, or the
        # pre-activation), and the weight in the kernels' layout, so that the backward does not lay
        # it out again. The weight itself is only needed by a create_graph backward: a plain
        # reference (cheaper than a saved tensor).
        ctx.save_for_backward(x, prepared[0], _kept(spec, y, pre), slope)
        ctx.spec, ctx.cols, ctx.weight, ctx.bias = spec, prepared[1], weight, bias
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w, kept, slope = ctx.saved_tensors
        needs = ctx.needs_input_grad[1:]
        spec, weight = ctx.spec, ctx.weight
        if torch.is_grad_enabled():  # create_graph=True: a differentiable backward, in PyTorch ops
            return (None, *_differentiable_backward(spec, needs, dy, x, weight, ctx.bias, slope))
        prepared = (w, ctx.cols)
        return (None, *conv_backward(dy, x, kept, slope, spec, needs, weight_grad_launch(spec, weight),
                                     lambda g: input_grad_launch(spec, g, prepared)))


def _differentiable_backward(spec, needs, dy, x, weight, bias, slope):
    """The backward of the reference op, recorded by autograd, so that higher derivatives exist."""
    inputs = [t for t, n in zip((x, weight, bias, slope), needs) if n]
    with torch.enable_grad():
        y = conv1d_reference(x, weight, bias, spec.dilation, spec.groups, (spec.pad_left, spec.pad_right),
                             spec.activation, slope)
        grads = iter(torch.autograd.grad(y, inputs, dy, create_graph=True) if inputs else ())
    return tuple(next(grads) if n else None for n in needs)


# ---------------------------------------------------------------------------------------------
# torch.library registration, for torch.compile(fullgraph=True).

@torch.library.custom_op("tcnkernels::conv1d", mutates_args=())
def conv1d_op(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], slope: Optional[torch.Tensor],
              dilation: int, groups: int, pad_right: int, activation: int, p0: float,
              p1: float) -> Tuple[torch.Tensor, torch.Tensor]:
    spec = spec_from_args(weight, dilation, groups, pad_right, activation, p0, p1)
    epilogue = spec.epilogue()
    out = forward_launch(spec, x, weight, bias, slope, epilogue)[0]
    return out if epilogue.store_pre else (out, x.new_empty(0))


@conv1d_op.register_fake
def _(x, weight, bias, slope, dilation, groups, pad_right, activation, p0, p1):
    spec = _spec(1, dilation, groups, pad_right, activation, p0, p1)  # the kernel size is symbolic here, and moot
    c_out = weight.shape[0]
    gated = spec.activation is not None and spec.activation.gated
    y = x.new_empty((x.shape[0], c_out // 2 if gated else c_out, x.shape[2]))
    return y, (x.new_empty((x.shape[0], c_out, x.shape[2])) if spec.epilogue().store_pre else x.new_empty(0))


@torch.library.custom_op("tcnkernels::conv1d_input_grad", mutates_args=())
def conv1d_input_grad_op(g: torch.Tensor, weight: torch.Tensor, dilation: int, groups: int,
                         pad_right: int) -> torch.Tensor:
    spec = spec_from_args(weight, dilation, groups, pad_right)
    return input_grad_launch(spec, g, (weight, 1) if spec.depthwise else prepare_weight(weight))


@conv1d_input_grad_op.register_fake
def _(g, weight, dilation, groups, pad_right):
    return g.new_empty((g.shape[0], weight.shape[1] * groups, g.shape[2]))


@torch.library.custom_op("tcnkernels::conv1d_weight_grad", mutates_args=())
def conv1d_weight_grad_op(dy: torch.Tensor, x: torch.Tensor, kept: Optional[torch.Tensor], weight: torch.Tensor,
                          dilation: int, groups: int, pad_right: int, activation: int, p0: float, p1: float,
                          write_g: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    spec = spec_from_args(weight, dilation, groups, pad_right, activation, p0, p1)
    dw, db, g = weight_grad_launch(spec, weight)(dy, x, kept, bool(write_g))
    return dw, db, dy.new_empty(0) if g is None else g  # a registered op returns tensors, never None


@conv1d_weight_grad_op.register_fake
def _(dy, x, kept, weight, dilation, groups, pad_right, activation, p0, p1, write_g):
    # g has the conv's C_out channels (a gated unit's dy has half of them)
    g = dy.new_empty((dy.shape[0], weight.shape[0], dy.shape[2]) if write_g else (0,))
    return weight.new_empty(weight.shape), weight.new_empty((weight.shape[0],)), g


def _setup_context(ctx, inputs, output):
    x, weight, bias, slope, *args = inputs
    # the backward reads the spec's activation and scalars (the registered grad ops derive the rest
    # from their tensors); the kernel size may be symbolic here, and is not needed
    spec = _spec(1, *args)
    y, pre = output
    ctx.save_for_backward(x, weight, _kept(spec, y, pre), slope)
    ctx.spec = spec
    ctx.set_materialize_grads(True)


def _backward(ctx, dy, _dkept):
    x, weight, kept, slope = ctx.saved_tensors
    spec = ctx.spec
    dilation, groups, pad_right, *act_args = spec_args(spec)
    grads = conv_backward(dy, x, kept, slope, spec, ctx.needs_input_grad[:4],
                          lambda dy, x, kept, write_g: conv1d_weight_grad_op(dy, x, kept, weight, dilation, groups,
                                                                             pad_right, *act_args, int(write_g)),
                          lambda g: conv1d_input_grad_op(g, weight, dilation, groups, pad_right))
    return (*grads, None, None, None, None, None, None)


conv1d_op.register_autograd(_backward, setup_context=_setup_context)

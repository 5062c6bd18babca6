"""The fused TemporalBlock as one autograd node: `TemporalBlockFunction.apply(spec, *BlockInputs)`.

    y = relu(D2(relu(conv2(out1) + b2)) + res),  out1 = D1(relu(conv1(x) + b1)),  res = x or wd x + bd

Forward, 3 launches: every weight of the block prepared at once (weight norm, K-major layout), conv1
with bias, ReLU and dropout in its epilogue, conv2 with bias, ReLU, dropout, the residual (identity,
or the 1x1 downsample computed in the same program) and the final ReLU in its epilogue. Dropout masks
are Philox draws from two seeds (tcnkernels.ops.reference.dropout_keep_mask has the same bits).

Backward, 5 launches, nothing stored but the conv outputs (out1, out2, y): since out = relu(a) *
keep * s, the gate of a ReLU followed by dropout is (out > 0) * s, so no mask is kept or redrawn.
With `spec.recompute` (the default) out2 is not stored either: the backward first runs conv2's
forward again (bias, ReLU, dropout from the same seed), 6 launches for a third less activation
memory (x and out1 are what the weight gradients read; y is the next block's input, kept anyway).
  0. (recompute) out2 = D2(relu(conv2(out1) + b2));
  1. conv2's weight-gradient partials from dy * (y > 0) * (out2 > 0) * s2, which it also writes
     (da2), with ds = dy * (y > 0) (the residual's gradient);
  2. conv2's input gradient with conv1's gate in its epilogue: da1;
  3. conv1's weight-gradient partials from da1, and the downsample's from ds as one more tap;
  4. conv1's input gradient plus the residual's (ds, or wd^T ds in the same program): dx;
  5. one finalize for every conv: partials summed in order, weight-norm backward.
"""
import functools
from typing import NamedTuple, Optional

import torch

from .activations import CODES, Activation
from .conv_launch import Residual, conv_forward, conv_input_grad, weight_grad_partials
from .reference import temporal_block_reference
from .specs import BlockSpec, ConvSpec, Epilogue, GateRule
from .weight_launch import PreparedWeight, finalize_weight_grads, prepare_weights

RELU = CODES["relu"]


class BlockInputs(NamedTuple):
    """The tensors of a block, in the order `TemporalBlockFunction.apply(spec, *inputs)` takes them.
    g1/g2 None: v1/v2 are the weights themselves; wd/bd None: identity residual; seeds: two int64
    dropout seeds (None without dropout)."""
    x: torch.Tensor
    v1: torch.Tensor
    g1: Optional[torch.Tensor]
    b1: Optional[torch.Tensor]
    v2: torch.Tensor
    g2: Optional[torch.Tensor]
    b2: Optional[torch.Tensor]
    wd: Optional[torch.Tensor] = None
    bd: Optional[torch.Tensor] = None
    seeds: Optional[torch.Tensor] = None


class _Kept(NamedTuple):
    """What the forward keeps for the backward besides the inputs. Everything goes through
    save_for_backward, so that what a training step keeps is what autograd reports (bench --structure)."""
    out1: torch.Tensor
    out2: Optional[torch.Tensor]  # None with spec.recompute
    y: torch.Tensor
    w1: torch.Tensor              # the prepared weights (normalised, K-major), as the kernels read them
    w2: torch.Tensor
    wd: Optional[torch.Tensor]
    pre1: Optional[torch.Tensor] = None       # conv1's pre-activation, for an activation whose derivative needs it
    final_pre: Optional[torch.Tensor] = None  # the value before the final activation, likewise


N_INPUTS = len(BlockInputs._fields)


class _Steps(NamedTuple):
    """What a BlockSpec asks of each launch, derived once per spec (a dict lookup per call)."""
    conv: ConvSpec           # both convs' geometry
    conv1: Epilogue          # bias, activation, dropout 1
    conv2_branch: Epilogue   # bias, activation, dropout 2: conv2's output before the residual
    conv2: Epilogue          # ... then + the residual (identity or the 1x1 downsample) and the final activation
    gate1_scale: float       # the scale of a kept activation after dropout 1 (1 without dropout)
    gate2_scale: float
    keep_branch: bool        # conv2 also stores its pre-residual output (spec.recompute off)
    # The reference's block (ReLU everywhere) gates by the sign of the kept outputs; any other
    # block by these rules (None for the ReLU block):
    gate1: Optional[GateRule] = None     # conv1's activation and dropout, in conv2's input gradient
    gate2: Optional[GateRule] = None     # conv2's, in its weight gradient
    final: Optional[Activation] = None   # the final activation (None: none), in the same launch


@functools.lru_cache(maxsize=1024)
def _steps(spec: BlockSpec, downsample: bool) -> _Steps:
    drop1, drop2 = spec.dropouts()
    conv = ConvSpec(spec.kernel_size, spec.dilation, pad_right=spec.pad_right)
    act = spec.activation
    scale1, scale2 = (1.0 if drop1 is None else drop1.scale), (1.0 if drop2 is None else drop2.scale)
    if spec.fused_relu:
        branch = Epilogue(activation=RELU, dropout=drop2)
        keep_branch = not spec.recompute
        return _Steps(conv, Epilogue(activation=RELU, dropout=drop1), branch,
                      branch._replace(store_branch=keep_branch, residual=2 if downsample else 1,
                                      final_activation=RELU), scale1, scale2, keep_branch)
    act2 = act if spec.conv2_activation else None
    from_input = not act.from_output
    from_input2 = act2 is not None and from_input
    params = act.kernel_params()
    # an activation whose derivative needs its input: conv2 runs again in the backward (storing it)
    keep_branch = not spec.recompute and not from_input2
    branch = Epilogue(activation=act2.code if act2 is not None else 0, act_params=params, dropout=drop2,
                      store_pre=from_input2)
    conv2 = branch._replace(store_pre=False, store_branch=keep_branch, residual=2 if downsample else 1,
                            final_activation=act.code if spec.final_activation else 0,
                            final_pre=spec.final_activation and from_input)
    conv1 = Epilogue(activation=act.code, act_params=params, dropout=drop1, store_pre=from_input)
    return _Steps(conv, conv1, branch, conv2, scale1, scale2, keep_branch, GateRule(act, from_input, drop1, scale1),
                  GateRule(act2, from_input2, drop2, scale2), act if spec.final_activation else None)


def block_forward(spec: BlockSpec, inputs: BlockInputs, steps: Optional[_Steps] = None):
    """(y, out1, out2 or None, prepared weights): the three forward launches. conv2's output is
    returned when the spec keeps it (spec.recompute off)."""
    x = inputs.x
    downsample = inputs.wd is not None
    first, second = (inputs.v1, inputs.g1), (inputs.v2, inputs.g2)
    prepared = prepare_weights((first, second, (inputs.wd, None)) if downsample else (first, second), x.dtype)
    if steps is None:
        steps = _steps(spec, downsample)
    keep_branch = steps.keep_branch
    # the block's activations are (B, C, L)-contiguous whatever x's layout (the backward's gates read them
    # with the gradients' strides)
    out1 = conv_forward(x, prepared[0], inputs.b1, spec=steps.conv, epilogue=steps.conv1, seeds=inputs.seeds,
                        contiguous=True)
    pre1 = final_pre = out2 = None
    if steps.conv1.store_pre:
        out1, pre1 = out1
    y = conv_forward(out1, prepared[1], inputs.b2, spec=steps.conv, epilogue=steps.conv2, seeds=inputs.seeds,
                     branch=keep_branch,
                     residual=tuple.__new__(Residual, (x, prepared[2] if downsample else None, inputs.bd)),
                     contiguous=True)
    if keep_branch and steps.conv2.final_pre:
        y, out2, final_pre = y
    elif keep_branch:
        y, out2 = y
    elif steps.conv2.final_pre:
        y, final_pre = y
    return y, out1, out2, prepared, pre1, final_pre


class TemporalBlockFunction(torch.autograd.Function):
    """apply(spec, *inputs) -> y, with `inputs` a BlockInputs."""

    @staticmethod
    def forward(ctx, spec: BlockSpec, *tensors):
        inputs = tuple.__new__(BlockInputs, tensors)  # (C-level, as for every tuple of this hot path)
        steps = _steps(spec, inputs.wd is not None)
        y, out1, out2, prepared, pre1, final_pre = block_forward(spec, inputs, steps)
        (w1, c1), (w2, c2) = prepared[:2]
        wd, cd = prepared[2] if len(prepared) > 2 else (None, 0)
        ctx.save_for_backward(*inputs, out1, out2, y, w1, w2, wd, pre1, final_pre)
        ctx.spec, ctx.steps, ctx.cols = spec, steps, (c1, c2, cd)
        return y

    @staticmethod
    def backward(ctx, dy):
        saved = ctx.saved_tensors
        inputs, kept = tuple.__new__(BlockInputs, saved[:N_INPUTS]), tuple.__new__(_Kept, saved[N_INPUTS:])
        spec = ctx.spec
        if torch.is_grad_enabled():  # create_graph=True: a differentiable backward, in PyTorch ops
            grads = _differentiable_backward(spec, inputs, ctx.needs_input_grad[1:], dy)
            return (None, *(grads.get(name) for name in BlockInputs._fields))
        return _backward(ctx.steps, inputs, kept, ctx.cols, ctx.needs_input_grad[1], dy)


def _backward(steps: _Steps, t: BlockInputs, kept: _Kept, cols, needs_dx, dy):
    """(None for the spec, then the gradients of the inputs in BlockInputs' order), from the five or
    six backward launches."""
    conv = steps.conv
    # tuple.__new__: NamedTuples built at C level (their Python __new__ costs more, every call)
    w1, w2 = tuple.__new__(PreparedWeight, (kept.w1, cols[0])), tuple.__new__(PreparedWeight, (kept.w2, cols[1]))
    wd = tuple.__new__(PreparedWeight, (kept.wd, cols[2])) if t.wd is not None else None
    out2 = kept.out2
    # recompute: conv2's output as the forward made it (same weights, same seeds), where a gate reads it
    if out2 is None and (steps.gate2 is None or steps.gate2.activation is not None):
        out2 = conv_forward(kept.out1, w2, t.b2, spec=conv, epilogue=steps.conv2_branch, seeds=t.seeds)
        if steps.conv2_branch.store_pre:
            out2 = out2[1]  # the pre-activation, which its derivative reads
    if steps.gate1 is None:  # the reference's block: ReLU gates from the signs of the kept outputs
        second = weight_grad_partials(dy, kept.out1, kept.y, spec=conv, gate2=out2, gate2_scale=steps.gate2_scale,
                                      write_g=True, write_ds=needs_dx or wd is not None)
        da1 = conv_input_grad(second.g, w2, spec=conv, gate=kept.out1, gate_scale=steps.gate1_scale)
    else:
        final = steps.final
        second = weight_grad_partials(dy, kept.out1, None if final is None else
                                      kept.final_pre if kept.final_pre is not None else kept.y, spec=conv,
                                      activation=final, gate2=out2, gate2_rule=steps.gate2, seeds=t.seeds,
                                      write_g=True, write_ds=needs_dx or wd is not None)
        da1 = conv_input_grad(second.g, w2, spec=conv, gate=kept.pre1 if kept.pre1 is not None else kept.out1,
                              gate_rule=steps.gate1, seeds=t.seeds)
    # conv1's weight gradient, and the downsample's in the same launch (both read x)
    first = weight_grad_partials(da1, t.x, spec=conv, res_dy=second.ds if wd is not None else None)
    segments = [(first.partial, first.n_chunks, t.v1, t.g1), (second.partial, second.n_chunks, t.v2, t.g2)]
    if wd is not None:
        segments.append((first.res_partial, first.n_chunks, t.wd, None))
    dx = conv_input_grad(da1, w1, spec=conv, residual=tuple.__new__(Residual, (second.ds, wd, None))) \
        if needs_dx else None
    finalized = finalize_weight_grads(segments)
    (dv1, dg1, db1), (dv2, dg2, db2) = finalized[:2]
    dwd, _, dbd = finalized[2] if wd is not None else (None, None, None)
    return (None, dx, dv1, dg1, db1 if t.b1 is not None else None, dv2, dg2, db2 if t.b2 is not None else None, dwd,
            dbd, None)  # the spec, then BlockInputs' order: x, v1, g1, b1, v2, g2, b2, wd, bd, seeds


def _differentiable_backward(spec: BlockSpec, t: BlockInputs, needs, dy):
    """The block's backward through the PyTorch reference on the same weights and seeds (the same
    masks), recorded by autograd so that higher derivatives exist. {input name: gradient}."""
    x = t.x
    w1 = t.v1 if t.g1 is None else torch._weight_norm(t.v1, t.g1, 0)
    w2 = t.v2 if t.g2 is None else torch._weight_norm(t.v2, t.g2, 0)
    y = temporal_block_reference(x, w1.to(x.dtype), t.b1, w2.to(x.dtype), t.b2,
                                 None if t.wd is None else t.wd.to(x.dtype), t.bd, spec.dilation, spec.dropout,
                                 spec.dropout_mode, t.seeds if spec.training else None, activation=spec.activation,
                                 final_activation=spec.final_activation, conv2_activation=spec.conv2_activation,
                                 pad_right=spec.pad_right)
    wanted = [name for name, tensor, need in zip(BlockInputs._fields, t, needs) if need and tensor is not None]
    grads = torch.autograd.grad(y, [getattr(t, name) for name in wanted], dy, create_graph=True, allow_unused=True)
    return dict(zip(wanted, grads))

"""The fused TemporalBlock as one autograd node.

    y = relu(D2(relu(conv2(out1) + b2)) + res),  out1 = D1(relu(conv1(x) + b1)),  res = x or wd x + bd

Forward, 3 launches: every weight of the block prepared at once (weight norm, K-major layout), conv1
with bias, ReLU and dropout in its epilogue, conv2 with bias, ReLU, dropout, the residual (identity,
or the 1x1 downsample computed in the same program) and the final ReLU in its epilogue. Dropout masks
are Philox draws from two seeds (tcnkernels.ops.reference.dropout_keep_mask has the same bits).

Backward, 5 launches, nothing stored but the conv outputs (out1, out2, y): since out = relu(a) *
keep * s, the gate of a ReLU followed by dropout is (out > 0) * s, so no mask is kept or redrawn.
With `recompute` (the default) out2 is not stored either: the backward first runs conv2's forward
again (bias, ReLU, dropout from the same seed), 6 launches for a third less activation memory (x
and out1 are what the weight gradients read; y is the next block's input, kept anyway).
  0. (recompute) out2 = D2(relu(conv2(out1) + b2));
  1. conv2's weight-gradient partials from dy * (y > 0) * (out2 > 0) * s2, which it also writes
     (da2), with ds = dy * (y > 0) (the residual's gradient);
  2. conv2's input gradient with conv1's gate in its epilogue: da1;
  3. conv1's weight-gradient partials from da1, and the downsample's from ds as one more tap;
  4. conv1's input gradient plus the residual's (ds, or wd^T ds in the same program): dx;
  5. one finalize for every conv: partials summed in order, weight-norm backward.
"""
import torch

from .conv_launch import Dropout, conv_forward, conv_input_grad, weight_grad_partials
from .reference import temporal_block_reference
from .weight_launch import finalize_weight_grads, prepare_weights


def _dropouts(training, p1, p2, mode):
    drop1 = Dropout(p1, mode, 0) if training and p1 > 0 else None
    drop2 = Dropout(p2, mode, 1) if training and p2 > 0 else None
    return drop1, drop2


def _gate_scale(dropout):
    """The scale of a kept activation: 1/(1-p); 1 without dropout (0 when everything is dropped)."""
    if dropout is None:
        return 1.0
    return 0.0 if dropout.p >= 1 else 1.0 / (1.0 - dropout.p)


def block_forward(x, v1, g1, b1, v2, g2, b2, wd, bd, seeds, dilation, p1, p2, mode, training, keep_branch):
    """(y, out1, out2 or None, prepared weights): the three forward launches."""
    weights = [(v1, g1), (v2, g2)] + ([(wd, None)] if wd is not None else [])
    prepared = prepare_weights(weights, x.dtype)
    (w1, c1), (w2, c2) = prepared[:2]
    drop1, drop2 = _dropouts(training, p1, p2, mode)
    out1 = conv_forward(x, w1, c1, b1, dilation, True, drop1, seeds)
    y = conv_forward(out1, w2, c2, b2, dilation, True, drop2, seeds, branch=keep_branch, res=x,
                     res_weight=prepared[2] if wd is not None else None, res_bias=bd, final_relu=True)
    y, out2 = y if keep_branch else (y, None)
    return y, out1, out2, prepared


class TemporalBlockFunction(torch.autograd.Function):
    """forward(x, v1, g1, b1, v2, g2, b2, wd, bd, seeds, dilation, p1, p2, mode, training, recompute) -> y.
    g1/g2 None: v1/v2 are the weights themselves; wd/bd None: identity residual; seeds: two int64
    dropout seeds (None without dropout); recompute: conv2's output recomputed in the backward
    rather than saved."""

    @staticmethod
    def forward(ctx, x, v1, g1, b1, v2, g2, b2, wd, bd, seeds, dilation, p1, p2, mode, training, recompute):
        y, out1, out2, prepared = block_forward(x, v1, g1, b1, v2, g2, b2, wd, bd, seeds, dilation, p1, p2, mode,
                                                training, keep_branch=not recompute)
        (w1, c1), (w2, c2) = prepared[:2]
        wdp, cd = prepared[2] if wd is not None else (None, 0)
        ctx.save_for_backward(out1, out2, y, w1, w2, wdp, x, v1, g1, b1, v2, g2, b2, wd, bd, seeds)
        ctx.meta = (dilation, c1, c2, cd, p1, p2, mode, training)
        return y

    @staticmethod
    def backward(ctx, dy):
        out1, out2, y, w1, w2, wdp, x, v1, g1, b1, v2, g2, b2, wd, bd, seeds = ctx.saved_tensors
        dilation, c1, c2, cd, p1, p2, mode, training = ctx.meta
        if torch.is_grad_enabled():  # create_graph=True: a differentiable backward, in PyTorch ops
            return _differentiable_backward(ctx, dy)
        K = v1.shape[2]
        drop1, drop2 = _dropouts(training, p1, p2, mode)
        if out2 is None:  # recompute: conv2's output as the forward made it (same weights, same seeds)
            out2 = conv_forward(out1, w2, c2, b2, dilation, True, drop2, seeds)
        needs_dx = ctx.needs_input_grad[0]
        partial2, chunks2, da2, ds, _ = weight_grad_partials(dy, out1, y, K, dilation, gate2=out2,
                                                             gate2_scale=_gate_scale(drop2), write_g=True,
                                                             write_ds=needs_dx or wd is not None)
        da1 = conv_input_grad(da2, w2, c2, dilation, gate=out1, gate_scale=_gate_scale(drop1))
        # conv1's weight gradient, and the downsample's in the same launch (both read x)
        partial1, chunks1, _, _, partial_d = weight_grad_partials(da1, x, None, K, dilation,
                                                                  res_dy=ds if wd is not None else None)
        segments = [(partial1, chunks1, v1, g1), (partial2, chunks2, v2, g2)]
        if wd is not None:
            segments.append((partial_d, chunks1, wd, None))
        dx = conv_input_grad(da1, w1, c1, dilation, res=ds, res_weight=(wdp, cd) if wd is not None else None) \
            if needs_dx else None
        grads = finalize_weight_grads(segments)
        (dv1, dg1, db1), (dv2, dg2, db2) = grads[:2]
        dwd, _, dbd = grads[2] if wd is not None else (None, None, None)
        return (dx, dv1, dg1, db1 if b1 is not None else None, dv2, dg2, db2 if b2 is not None else None, dwd, dbd,
                None, None, None, None, None, None, None)


def _differentiable_backward(ctx, dy):
    """The block's backward through the PyTorch reference on the same weights and seeds (the same
    masks), recorded by autograd so that higher derivatives exist."""
    x, v1, g1, b1, v2, g2, b2, wd, bd, seeds = ctx.saved_tensors[6:]
    dilation, _, _, _, p1, p2, mode, training = ctx.meta
    inputs = (x, v1, g1, b1, v2, g2, b2, wd, bd)
    w1 = v1 if g1 is None else torch._weight_norm(v1, g1, 0)
    w2 = v2 if g2 is None else torch._weight_norm(v2, g2, 0)
    y = temporal_block_reference(x, w1.to(x.dtype), b1, w2.to(x.dtype), b2, None if wd is None else wd.to(x.dtype),
                                 bd, dilation, (p1, p2), mode, seeds if training else None)
    wanted = [i for i, t in enumerate(inputs) if ctx.needs_input_grad[i] and t is not None]
    grads = torch.autograd.grad(y, [inputs[i] for i in wanted], dy, create_graph=True, allow_unused=True)
    out = [None] * 16
    for i, g in zip(wanted, grads):
        out[i] = g
    return tuple(out)

"""WaveNet's gated residual block as one differentiable op on the conv kernels (eager, Triton).

With h = x (or dropout(x), computed before the op) and S = sqrt(1/2):

    z, (a, b) = tanh(a) * sigmoid(b), a ‖ b = conv(h, W) + W_aux c + bias
    skip      = W_skip z + b_skip
    x_out     = (x + W_out z + b_out) * S

Forward: one weight preparation (W, W_aux, and [W_skip; S W_out]) and two conv launches. The gated
conv reads c beside h (its AUX epilogue: a 1x1 GEMM of c into both halves before the bias), so no
cat(h, c) is written or kept. The skip and residual 1x1s are one conv whose rows go to two outputs
(its SPLIT epilogue), the residual's plus S x: the add and the scale cost no pass of their own.

Backward, from dx_out and dskip (either may be absent: a stack's last block has no x_out user),
six launches, no PyTorch op on an activation:
    the 1x1s' weight gradient, reading dskip and dx_out where they are (rows of one gradient)
    dz = W_skip^T dskip + (S W_out)^T dx_out  (the second a 1x1 GEMM in the first's epilogue)
    the gated conv's weight gradient, which applies the gate's derivative from (a, b) and writes g;
        one more tap of it reads c: the conditioning's weight gradient, from the same g
    one finalisation of all three weight gradients
    dh = W^T g + S dx_out (the residual, in the epilogue, when h is x); dc = W_aux^T g
W_out and b_out get no gradient (None) when x_out has none, W_skip and b_skip none when skip has none,
as in PyTorch's own block.
"""
import math

import torch

from .activations import CODES, Activation
from .conv_launch import ONE_BY_ONE, Residual, conv_forward, conv_forward_split, conv_input_grad, weight_grad_partials
from .specs import ConvSpec, Epilogue
from .weight_launch import PreparedWeight, finalize_weight_grads, prepare_weights

SQRT_HALF = math.sqrt(0.5)
GATED_TANH = Activation("gated_tanh")


def gate_spec(kernel_size, dilation, pad_right) -> ConvSpec:
    """The gated conv's spec: tanh(a) * sigmoid(b) of its two halves."""
    return ConvSpec(kernel_size, dilation, GATED_TANH, 1, pad_right)


def _gate_epilogue(aux, store_pre):
    return Epilogue(activation=CODES["gated_tanh"], store_pre=store_pre, aux=aux)


def _heads_weights(skip_w, skip_b, out_w, out_b):
    """The 1x1s as one conv, the residual's rows scaled by sqrt(1/2) (so the epilogue adds S x)."""
    weight = torch.cat([skip_w, out_w * SQRT_HALF])
    bias = None if skip_b is None else torch.cat([skip_b, out_b * SQRT_HALF])
    return weight, bias


def _forward(spec, x, h, c, conv_w, conv_b, aux_w, skip_w, skip_b, out_w, out_b, store_pre):
    """(x_out, skip, z, pre, prepared weights); pre is None unless store_pre."""
    heads_w, heads_b = _heads_weights(skip_w, skip_b, out_w, out_b)
    weights = [(conv_w, None), (heads_w, None)] + ([(aux_w, None)] if c is not None else [])
    prepared = prepare_weights(weights, x.dtype)
    p_conv, p_heads = prepared[:2]
    p_aux = prepared[2] if c is not None else None
    conditioning = None if c is None else Residual(c, p_aux)
    out = conv_forward(x if h is None else h, p_conv, conv_b, spec=spec,
                       epilogue=_gate_epilogue(c is not None, store_pre), residual=conditioning)
    z, pre = out if store_pre else (out, None)
    skip, x_out = conv_forward_split(z, p_heads, heads_b, x, split_rows=skip_w.shape[0], res_scale=SQRT_HALF)
    return x_out, skip, z, pre, (p_conv, p_heads, p_aux)


def wavenet_inference(spec, x, h, c, conv_w, conv_b, aux_w, skip_w, skip_b, out_w, out_b):
    """(x_out, skip), nothing kept for a backward."""
    return _forward(spec, x, h, c, conv_w, conv_b, aux_w, skip_w, skip_b, out_w, out_b, False)[:2]


class WaveNetFunction(torch.autograd.Function):
    """apply(spec, x, h, c, W, b, W_aux, W_skip, b_skip, W_out, b_out) -> (x_out, skip); h: the
    dropped-out input, or None when it is x; c and W_aux None without conditioning; the biases
    None without bias."""

    @staticmethod
    def forward(ctx, spec, x, h, c, conv_w, conv_b, aux_w, skip_w, skip_b, out_w, out_b):
        x_out, skip, z, pre, (p_conv, p_heads, p_aux) = _forward(spec, x, h, c, conv_w, conv_b, aux_w, skip_w,
                                                                  skip_b, out_w, out_b, True)
        ctx.save_for_backward(x if h is None else h, c, z, pre, p_conv.w, p_heads.w,
                              None if p_aux is None else p_aux.w)
        ctx.cols = (p_conv.cols, p_heads.cols, None if p_aux is None else p_aux.cols)
        ctx.spec, ctx.h_is_x, ctx.skip_rows = spec, h is None, skip_w.shape[0]
        ctx.params = (conv_w, aux_w, skip_w, out_w)  # shapes and dtypes for the finalisation
        ctx.set_materialize_grads(False)
        return x_out, skip

    @staticmethod
    def backward(ctx, dx_out, dskip):
        inp, c, z, pre, w_conv, w_heads, w_aux = ctx.saved_tensors
        conv_w, aux_w, skip_w, out_w = ctx.params
        cols_conv, cols_heads, cols_aux = ctx.cols
        (_, needs_x, needs_h, needs_c, needs_w, needs_b, needs_aux, needs_skip_w, needs_skip_b, needs_out_w,
         needs_out_b) = ctx.needs_input_grad
        if dx_out is None and dskip is None:
            return (None,) * 11
        S = ctx.skip_rows
        # the 1x1s' rows that carry a gradient: the skip's, the residual's, or both
        rows = slice(0 if dskip is not None else S, S if dx_out is None else None)
        if dskip is not None and dx_out is not None:
            heads = weight_grad_partials(dskip, z, spec=ONE_BY_ONE, dy2=dx_out)
            dz = conv_input_grad(dskip, PreparedWeight(w_heads[:S], cols_heads), spec=ONE_BY_ONE,
                                 residual=Residual(dx_out, PreparedWeight(w_heads[S:], cols_heads)))
        else:
            dheads = dx_out if dskip is None else dskip
            heads = weight_grad_partials(dheads, z, spec=ONE_BY_ONE)
            dz = conv_input_grad(dheads, PreparedWeight(w_heads[rows], cols_heads), spec=ONE_BY_ONE)
        with_aux = c is not None and needs_aux
        gate = weight_grad_partials(dz, inp, pre, spec=ctx.spec, write_g=True, activation=GATED_TANH,
                                    aux_x=c if with_aux else None)
        g = gate.g
        segments = [(heads.partial, heads.n_chunks, w_heads[rows], None),
                    (gate.partial, gate.n_chunks, conv_w, None)]
        if with_aux:
            segments.append((gate.res_partial, gate.n_chunks, aux_w, None))
        grads = finalize_weight_grads(segments)
        (d_heads_w, _, d_heads_b), (dw, _, db) = grads[:2]
        daux = grads[2][0] if len(grads) > 2 else None
        dx = dh = dc = None
        if needs_x or needs_h:
            fuse_residual = ctx.h_is_x and dx_out is not None
            dinp = conv_input_grad(g, PreparedWeight(w_conv, cols_conv), spec=ctx.spec,
                                   residual=Residual(dx_out) if fuse_residual else None, res_scale=SQRT_HALF)
            if ctx.h_is_x:
                dx = dinp
            else:
                dh = dinp
                dx = None if dx_out is None else dx_out * SQRT_HALF
        if c is not None and needs_c:
            dc = conv_input_grad(g, PreparedWeight(w_aux, cols_aux), spec=ONE_BY_ONE)
        d_skip_w = d_skip_b = d_out_w = d_out_b = None
        if dskip is not None:
            d_skip_w, d_skip_b = d_heads_w[:S], d_heads_b[:S]
        if dx_out is not None:  # the rows after the skip's (all of them without it), scaled back
            first = S if dskip is not None else 0
            d_out_w, d_out_b = d_heads_w[first:] * SQRT_HALF, d_heads_b[first:] * SQRT_HALF
        return (None, dx, dh, dc, dw if needs_w else None, db if needs_b else None, daux,
                d_skip_w if needs_skip_w else None, d_skip_b if needs_skip_b else None,
                d_out_w if needs_out_w else None, d_out_b if needs_out_b else None)

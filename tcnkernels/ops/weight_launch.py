"""Launchers of the weight kernels: up to three convs' weights prepared in one launch (weight norm and
the K-major zero-padded layout the conv kernels read), and their gradients finished in one launch
(partial sums added in order, weight-norm backward). A plain causal_conv1d uses one segment of each."""
import functools

import torch

from .._backend import new_output
from . import launching
from .launching import ceil_div
from .triton.weight_kernels import weight_grad_finalize_kernel, weight_prep_kernel

WEIGHT_ROW = 16  # elements: 64 bytes of fp32, 32 of bf16, a whole number of 16-byte vectors
BLOCK_O, BLOCK_I = 32, 64
_NO_SEGMENT_PREP = (None, None, None, 0, 0, 0, 0, 0, 0, 0, 0)
_NO_SEGMENT_FINALIZE = (None, 0, None, None, None, None, None, 0, 0, 0, 0, 0, 0, 0)


@functools.lru_cache(maxsize=4096)
def _prep_plan(shapes, norms):
    n_row_blocks = max(ceil_div(shape[0], BLOCK_O) for shape in shapes)
    pads = tuple(ceil_div(shape[1], WEIGHT_ROW) * WEIGHT_ROW for shape in shapes)
    meta = dict(N_SEGMENTS=len(shapes), HAS_NORM0=norms[0], HAS_NORM1=norms[1] if len(norms) > 1 else False,
                HAS_NORM2=norms[2] if len(norms) > 2 else False, BLOCK_O=BLOCK_O, BLOCK_I=BLOCK_I, num_warps=4)
    return (len(shapes) * n_row_blocks,), n_row_blocks, pads, meta


def prepare_weights(weights, dtype):
    """[(w, w_cols)] for `weights` = [(v, g or None)] (up to three): w = g v / ||v|| (or v), in
    `dtype`, as a (C_out, C_in, K) view of a (K, C_out, C_in padded to 16) zero-padded buffer, and that
    padded width (the bound the conv kernels mask weight loads with). One launch for all of them."""
    shapes = tuple(tuple(v.shape) for v, _ in weights)
    grid, n_row_blocks, pads, meta = _prep_plan(shapes, tuple(g is not None for _, g in weights))
    args, prepared = [], []
    for (v, g), (c_out, c_in, K), c_pad in zip(weights, shapes, pads):
        buf = new_output(v, (K, c_out, c_pad), dtype=dtype)
        args += (v, g, buf, c_out, c_in, K, c_pad, *v.stride(), 0 if g is None else g.stride(0))
        prepared.append((buf.as_strided((c_out, c_in, K), (c_pad, 1, c_out * c_pad)), c_pad))
    args += _NO_SEGMENT_PREP * (3 - len(weights))
    launching.launch(weight_prep_kernel, grid, weights[0][0], (*args, n_row_blocks), meta)
    return prepared


def prepare_weight(weight):
    """(w, w_cols) of one plain conv weight (no norm), in its own dtype."""
    return prepare_weights([(weight, None)], weight.dtype)[0]


@functools.lru_cache(maxsize=4096)
def _finalize_plan(shapes, norms, fp64):
    n_row_blocks = max(ceil_div(shape[0], BLOCK_O) for shape in shapes)
    # fp64 partials (gradcheck) at 8 warps: at 4 the weight-norm backward spills in its loop
    meta = dict(N_SEGMENTS=len(shapes), HAS_NORM0=norms[0], HAS_NORM1=norms[1] if len(norms) > 1 else False,
                HAS_NORM2=norms[2] if len(norms) > 2 else False, BLOCK_O=BLOCK_O, BLOCK_J=BLOCK_I,
                num_warps=8 if fp64 else 4)
    return (len(shapes) * n_row_blocks,), n_row_blocks, meta


def finalize_weight_grads(segments):
    """[(dv, dg, db)] for `segments` = [(partial, n_chunks, v, g or None)] (up to three): the
    per-chunk partials of the weight-gradient kernel summed in order, as dw (C_out, C_in, K) and db,
    and for a weight-normalised conv (g given) dw turned into dv (v's shape) and dg (g's shape);
    in the parameters' dtype. One launch for all of them."""
    shapes = tuple(tuple(v.shape) for _, _, v, _ in segments)
    grid, n_row_blocks, meta = _finalize_plan(shapes, tuple(g is not None for _, _, _, g in segments),
                                              segments[0][0].dtype == torch.float64)
    args, grads = [], []
    for (partial, n_chunks, v, g), (c_out, c_in, K) in zip(segments, shapes):
        dv, db = new_output(v, (c_out, c_in, K)), new_output(v, (c_out,))
        dg = None if g is None else new_output(g, (c_out, 1, 1))
        args += (partial, n_chunks, v, g, dv, dg, db, c_out, c_in, K, *v.stride(), 0 if g is None else g.stride(0))
        grads.append((dv, dg, db))
    args += _NO_SEGMENT_FINALIZE * (3 - len(segments))
    launching.launch(weight_grad_finalize_kernel, grid, segments[0][0], (*args, n_row_blocks), meta)
    return grads

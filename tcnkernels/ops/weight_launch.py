"""Launchers of the weight kernels: up to three convs' weights prepared in one launch (weight norm and
the K-major zero-padded layout the conv kernels read), and their gradients finished in one launch
(partial sums added in order, weight-norm backward). A plain causal_conv1d uses one segment of each."""
from typing import NamedTuple

import torch
import triton

from . import launching
from .launching import new_output, plan_cache
from .triton.weight_kernels import weight_grad_finalize_kernel, weight_prep_kernel

WEIGHT_ROW = 16  # elements: 64 bytes of fp32, 32 of bf16, a whole number of 16-byte vectors
BLOCK_O, BLOCK_I = 32, 64
MAX_SEGMENTS = 3  # a block's conv1, conv2 and 1x1 downsample


class PreparedWeight(NamedTuple):
    """A conv weight as the conv kernels read it: `w` a (C_out, C_in, K) view of a (K, C_out, C_in
    padded to 16) zero-padded buffer, and `cols` that padded width (the bound the kernels mask
    weight loads with)."""
    w: torch.Tensor
    cols: int


# The kernels' tensor arguments of segment s (tcnkernels/ops/triton/weight_kernels.py). A launch
# copies a dict of them all set to None (the absent segments') and fills in its own: cheaper on
# the host than building the whole dict.
_PREP_NAMES = [(f"v{s}_ptr", f"g{s}_ptr", f"out{s}_ptr") for s in range(MAX_SEGMENTS)]
_FINALIZE_NAMES = [(f"p{s}_ptr", f"v{s}_ptr", f"g{s}_ptr", f"dv{s}_ptr", f"dg{s}_ptr", f"db{s}_ptr")
                   for s in range(MAX_SEGMENTS)]
_NO_PREP_TENSORS = dict.fromkeys(name for names in _PREP_NAMES for name in names)
_NO_FINALIZE_TENSORS = dict.fromkeys(name for names in _FINALIZE_NAMES for name in names)


def _segment_static(segments):
    """C_OUT{s}, C_IN{s}, K{s}, s_v{s}_out, s_v{s}_in, s_v{s}_k, s_g{s}, HAS_NORM{s} of every segment
    s, zeros for the absent ones; `segments` = ((shape, strides, g's stride or None), ...)."""
    static = {}
    for s in range(MAX_SEGMENTS):
        (c_out, c_in, K), (s_out, s_in, s_k), s_g = segments[s] if s < len(segments) else ((0, 0, 0), (0, 0, 0), None)
        static.update({f"C_OUT{s}": c_out, f"C_IN{s}": c_in, f"K{s}": K, f"s_v{s}_out": s_out, f"s_v{s}_in": s_in,
                       f"s_v{s}_k": s_k, f"s_g{s}": s_g or 0, f"HAS_NORM{s}": s_g is not None})
    return static


@plan_cache
def _prep_plan(segments):
    """(grid, padded widths, static arguments)."""
    n_row_blocks = max(triton.cdiv(shape[0], BLOCK_O) for shape, _, _ in segments)
    pads = tuple(triton.cdiv(shape[1], WEIGHT_ROW) * WEIGHT_ROW for shape, _, _ in segments)
    static = dict(_segment_static(segments), N_ROW_BLOCKS=n_row_blocks, N_SEGMENTS=len(segments), BLOCK_O=BLOCK_O,
                  BLOCK_I=BLOCK_I, num_warps=4)
    for s in range(MAX_SEGMENTS):
        static[f"C_PAD{s}"] = pads[s] if s < len(segments) else 0
    return (len(segments) * n_row_blocks,), pads, static


def prepare_weights(weights, dtype):
    """[PreparedWeight] for `weights` = [(v, g or None)] (up to three): w = g v / ||v|| (or v), in
    `dtype`, K-major and zero-padded. One launch for all of them."""
    grid, pads, static = _prep_plan(tuple([(v.shape, v.stride(), None if g is None else g.stride(0))
                                           for v, g in weights]))
    tensors, prepared = _NO_PREP_TENSORS.copy(), []
    for (v, g), c_pad, (v_name, g_name, out_name) in zip(weights, pads, _PREP_NAMES):
        c_out, c_in, K = v.shape
        buf = new_output(v, (K, c_out, c_pad), dtype=dtype)
        tensors[v_name], tensors[g_name], tensors[out_name] = v, g, buf
        # tuple.__new__: a NamedTuple built at C level (its Python __new__ costs more, every call)
        prepared.append(tuple.__new__(PreparedWeight, (buf.as_strided((c_out, c_in, K), (c_pad, 1, c_out * c_pad)),
                                                       c_pad)))
    launching.launch(weight_prep_kernel, grid, weights[0][0], tensors, static)
    return prepared


def prepare_weight(weight):
    """The PreparedWeight of one plain conv weight (no norm), in its own dtype."""
    return prepare_weights([(weight, None)], weight.dtype)[0]


@plan_cache
def _finalize_plan(segments, chunks, fp64):
    n_row_blocks = max(triton.cdiv(shape[0], BLOCK_O) for shape, _, _ in segments)
    # fp64 partials (gradcheck) at 8 warps: at 4 the weight-norm backward spills in its loop
    static = dict(_segment_static(segments), N_ROW_BLOCKS=n_row_blocks, N_SEGMENTS=len(segments), BLOCK_O=BLOCK_O,
                  BLOCK_J=BLOCK_I, num_warps=8 if fp64 else 4)
    for s in range(MAX_SEGMENTS):
        static[f"N_CHUNKS{s}"] = chunks[s] if s < len(segments) else 0
    return (len(segments) * n_row_blocks,), static


def finalize_weight_grads(segments):
    """[(dv, dg, db)] for `segments` = [(partial, n_chunks, v, g or None)] (up to three): the
    per-chunk partials of the weight-gradient kernel summed in order, as dw (C_out, C_in, K) and db,
    and for a weight-normalised conv (g given) dw turned into dv (v's shape) and dg (g's shape);
    in the parameters' dtype. One launch for all of them."""
    grid, static = _finalize_plan(
        tuple([(v.shape, v.stride(), None if g is None else g.stride(0)) for _, _, v, g in segments]),
        tuple([n for _, n, _, _ in segments]), segments[0][0].dtype == torch.float64)
    tensors, grads = _NO_FINALIZE_TENSORS.copy(), []
    for (partial, _, v, g), names in zip(segments, _FINALIZE_NAMES):
        c_out, c_in, K = v.shape
        dv, db = new_output(v, (c_out, c_in, K)), new_output(v, (c_out,))
        dg = None if g is None else new_output(g, (c_out, 1, 1))
        tensors.update(zip(names, (partial, v, g, dv, dg, db)))
        grads.append((dv, dg, db))
    launching.launch(weight_grad_finalize_kernel, grid, segments[0][0], tensors, static)
    return grads

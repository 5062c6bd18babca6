"""Launcher of causal-conv1d's decode update (tcnkernels/ops/triton/update_kernels.py): one launch
for every row, channel and new token, the state updated in place. Inputs are checked by
tcnkernels.short_conv before they get here."""
import torch
import triton

from . import launching
from .launching import new_output_as, plan_cache
from .triton.update_kernels import causal_conv1d_update_kernel

TILE = 2048  # state elements a program moves per step of the shift (16 a thread at 4 warps)


@plan_cache
def _plan(shape, state_len, dilation, x_stride, state_stride, w_stride, bias_stride, out_stride, silu, circular,
          pooled, fp64):
    B, C, L = shape
    K = w_stride[2]
    block_c = min(128, max(16, triton.next_power_of_2(C)))
    block_s = max(1, min(triton.next_power_of_2(max(state_len, 1)), TILE // block_c))
    static = dict(
        DIM=C, SEQLEN=L, STATE_LEN=state_len, DILATION=dilation,
        s_x_b=x_stride[0], s_x_c=x_stride[1], s_x_t=x_stride[2],
        s_st_b=state_stride[0], s_st_c=state_stride[1], s_st_t=state_stride[2],
        s_w_c=w_stride[0], s_w_k=w_stride[1], s_bias=bias_stride or 0,
        s_o_b=out_stride[0], s_o_c=out_stride[1], s_o_t=out_stride[2],
        K=K, HAS_BIAS=bias_stride is not None, SILU=silu, CIRCULAR=circular, HAS_INDICES=pooled, ACC_FP64=fp64,
        BLOCK_C=block_c, BLOCK_S=block_s, num_warps=4)
    return (B, triton.cdiv(C, block_c)), static


def causal_conv1d_update(x, conv_state, weight, bias, cache_seqlens, conv_state_indices, dilation, silu):
    """out (x's shape and layout, x (B, dim, seqlen)); conv_state (n, dim, state_len) updated in place."""
    out = new_output_as(x, x.shape)
    if x.numel() == 0:
        return out
    fp64 = any(t is not None and t.dtype == torch.float64 for t in (x, conv_state, weight, bias))
    grid, static = _plan(tuple(x.shape), conv_state.shape[2], dilation, x.stride(), conv_state.stride(),
                         (*weight.stride(), weight.shape[1]), None if bias is None else bias.stride(0), out.stride(),
                         silu, cache_seqlens is not None, conv_state_indices is not None, fp64)
    launching.launch(causal_conv1d_update_kernel, grid, x, {
        "x_ptr": x, "state_ptr": conv_state, "w_ptr": weight, "bias_ptr": bias, "seqlens_ptr": cache_seqlens,
        "indices_ptr": conv_state_indices, "out_ptr": out}, static)
    return out

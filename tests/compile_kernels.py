"""Compile every shipped kernel configuration for one GPU architecture, without a GPU.

Run as `python tests/compile_kernels.py 90` in a process *without* TRITON_INTERPRET (interpreted and
compiled kernels do not mix in one process). Prints one JSON line per configuration:
{"kernel", "config", "shared"} or {"kernel", "config", "error"}. Used by test_compile_only.py.
"""
import inspect
import itertools
import json
import sys

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from tcnkernels.ops import conv
from tcnkernels.ops.triton.conv_kernels import causal_conv1d_kernel, causal_conv1d_weight_grad_kernel

POINTER = {torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.float32: "*fp32", torch.float64: "*fp64"}
# (dtype, cuDNN TF32 switch): fp32 is shipped with TF32 on and off.
DTYPE_VARIANTS = [(torch.float16, False), (torch.bfloat16, False), (torch.float32, True),
                  (torch.float32, False), (torch.float64, False)]


def _signature(kernel, pointers, constexprs):
    params = inspect.signature(kernel.fn).parameters
    sig = {}
    for name in params:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name.endswith("_ptr"):
            sig[name] = pointers[name]
        else:
            sig[name] = "i32"
    return sig


def configurations():
    """Every (kernel, constexprs, pointer types) the launchers in tcnkernels.ops.conv can launch."""
    for dtype, tf32 in DTYPE_VARIANTS:
        yield from _dtype_configurations(dtype, tf32)


def _dtype_configurations(dtype, tf32):
    for block_co, block_j in itertools.product(conv.channel_blocks(dtype), repeat=2):
        torch.backends.cudnn.allow_tf32 = tf32
        upcast, acc_fp64, precision = conv.dtype_flags(dtype, torch.device("cuda"))
        common = dict(UPCAST=upcast, ACC_FP64=acc_fp64, INPUT_PRECISION=precision,
                      BLOCK_CO=block_co, BLOCK_J=block_j, BLOCK_T=conv.BLOCK_T)
        ptr = POINTER[dtype]
        partial = "*fp64" if acc_fp64 else "*fp32"
        conv_ptrs = dict(in_ptr=ptr, gate_ptr=ptr, w_ptr=ptr, bias_ptr=ptr, out_ptr=ptr)
        # forward with bias and ReLU, and the input gradient through a ReLU gate
        yield causal_conv1d_kernel, dict(common, ANTI_CAUSAL=False, GATE_BY_RELU=False, HAS_BIAS=True,
                                         APPLY_RELU=True), conv_ptrs
        yield causal_conv1d_kernel, dict(common, ANTI_CAUSAL=True, GATE_BY_RELU=True, HAS_BIAS=False,
                                         APPLY_RELU=False), conv_ptrs
        yield causal_conv1d_weight_grad_kernel, dict(common, GATE_BY_RELU=True), dict(
            x_ptr=ptr, dy_ptr=ptr, gate_ptr=ptr, dw_partial_ptr=partial, db_partial_ptr=partial)


def main(arch):
    target = GPUTarget("cuda", arch, 32)
    for kernel, constexprs, pointers in configurations():
        config = {k: str(v) for k, v in constexprs.items()}
        config.update({k: v for k, v in pointers.items() if k in ("in_ptr", "x_ptr")})
        try:
            src = ASTSource(kernel, _signature(kernel, pointers, constexprs), constexprs)
            compiled = triton.compile(src, target=target, options={"num_warps": conv.NUM_WARPS})
            print(json.dumps({"kernel": kernel.__name__, "config": config, "shared": compiled.metadata.shared}))
        except Exception as exc:  # reported per configuration, asserted on by the test
            print(json.dumps({"kernel": kernel.__name__, "config": config,
                              "error": f"{type(exc).__name__}: {exc}"[:2000]}))
        sys.stdout.flush()


if __name__ == "__main__":
    main(int(sys.argv[1]))
